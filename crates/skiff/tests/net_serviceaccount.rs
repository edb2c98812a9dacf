//! A client inside a pod reaches the API server the in-cluster way: real kubectl, mounted
//! from the host into a busybox pod, runs with no kubeconfig and finds the server through
//! `KUBERNETES_SERVICE_HOST`/`_PORT` (the `kubernetes` Service's cluster IP, through the
//! node's service proxy) and the projected token volume
//! (`/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`). Also the
//! service-link variables, and a ConfigMap volume updated in the running pod. As in real
//! Kubernetes the pod's `default` ServiceAccount may only do what RBAC grants it: the test
//! binds it to the `view` ClusterRole (which cannot read Secrets).
#![allow(clippy::unwrap_used)]

mod net_support;

use std::time::Duration;

use net_support::{IMAGE, NetCluster};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[test]
fn kubectl_in_a_pod_uses_the_in_cluster_config() {
    let c = NetCluster::start(1, "host-gw");
    c.wait("the root CA config map", Duration::from_secs(60), |c| {
        !c.field(&["get", "cm", "kube-root-ca.crt"], "{.data.ca\\.crt}")
            .is_empty()
    });
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web-svc}}
spec:
  ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: hello}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: default-view}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}
subjects: [{{kind: ServiceAccount, name: default, namespace: default}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: incluster}}
spec:
  nodeName: node-0
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    volumeMounts:
    - {{name: kubectl, mountPath: /kubectl, readOnly: true}}
    - {{name: settings, mountPath: /etc/settings}}
  volumes:
  - {{name: kubectl, hostPath: {{path: {KUBECTL}, type: File}}}}
  - {{name: settings, configMap: {{name: settings}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nolinks}}
spec:
  nodeName: node-0
  terminationGracePeriodSeconds: 1
  enableServiceLinks: false
  automountServiceAccountToken: false
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
"#
    ));
    c.wait_running("default", "incluster");
    c.wait_running("default", "nolinks");

    // The credentials, as a pod sees them.
    let ns = c.exec_ok(
        "default",
        "incluster",
        "main",
        &["cat", &format!("{SA_DIR}/namespace")],
    );
    assert_eq!(ns, "default");
    let ca = c.exec_ok(
        "default",
        "incluster",
        "main",
        &["cat", &format!("{SA_DIR}/ca.crt")],
    );
    let server_ca = std::fs::read_to_string(c.nodes[0].dir.path().join("server/ca.crt")).unwrap();
    assert_eq!(ca, server_ca);
    let token = c.exec_ok(
        "default",
        "incluster",
        "main",
        &["cat", &format!("{SA_DIR}/token")],
    );
    assert_eq!(token.split('.').count(), 3, "{token}");
    let listing = c.exec_ok("default", "incluster", "main", &["ls", "-a", SA_DIR]);
    assert!(listing.contains("..data"), "{listing}");
    let ro = c.exec(
        "default",
        "incluster",
        "main",
        &["touch", &format!("{SA_DIR}/x")],
    );
    assert!(!ro.status.success(), "the token volume is read-only");

    // kubectl with no kubeconfig at all: the in-cluster config, through 10.43.0.1:443.
    let pods = c.exec_ok(
        "default",
        "incluster",
        "main",
        &["timeout", "60", "/kubectl", "get", "pods", "-o", "name"],
    );
    assert!(pods.contains("pod/incluster"), "{pods}");
    let svc = c.exec_ok(
        "default",
        "incluster",
        "main",
        &[
            "timeout",
            "60",
            "/kubectl",
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert_eq!(svc, "10.43.0.1");
    let secrets = c.exec(
        "default",
        "incluster",
        "main",
        &["timeout", "60", "/kubectl", "get", "secrets"],
    );
    assert!(!secrets.status.success());
    let err = String::from_utf8_lossy(&secrets.stderr);
    assert!(
        err.contains(
            "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        ),
        "{err}"
    );

    // The kubelet's variables: the master Service always, the namespace's with links.
    let env = c.exec_ok("default", "incluster", "main", &["env"]);
    let cluster_ip = c.field(&["get", "svc", "web-svc"], "{.spec.clusterIP}");
    for want in [
        "KUBERNETES_SERVICE_HOST=10.43.0.1".to_string(),
        "KUBERNETES_SERVICE_PORT=443".to_string(),
        "KUBERNETES_PORT=tcp://10.43.0.1:443".to_string(),
        "KUBERNETES_PORT_443_TCP=tcp://10.43.0.1:443".to_string(),
        "KUBERNETES_PORT_443_TCP_PROTO=tcp".to_string(),
        "KUBERNETES_PORT_443_TCP_PORT=443".to_string(),
        "KUBERNETES_PORT_443_TCP_ADDR=10.43.0.1".to_string(),
        format!("WEB_SVC_SERVICE_HOST={cluster_ip}"),
        "WEB_SVC_SERVICE_PORT=8080".to_string(),
        "WEB_SVC_SERVICE_PORT_HTTP=8080".to_string(),
        format!("WEB_SVC_PORT=tcp://{cluster_ip}:8080"),
        format!("WEB_SVC_PORT_8080_TCP_ADDR={cluster_ip}"),
    ] {
        assert!(env.lines().any(|l| l == want), "no {want} in:\n{env}");
    }
    let env = c.exec_ok("default", "nolinks", "main", &["env"]);
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.43.0.1"), "{env}");
    assert!(!env.contains("WEB_SVC_"), "{env}");
    let none = c.exec("default", "nolinks", "main", &["ls", SA_DIR]);
    assert!(!none.status.success(), "no token volume without automount");

    // A ConfigMap edit reaches the running pod.
    assert_eq!(
        c.exec_ok(
            "default",
            "incluster",
            "main",
            &["cat", "/etc/settings/greeting"]
        ),
        "hello"
    );
    c.k(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"bonjour","extra":"x"}}"#,
    ]);
    c.wait(
        "the ConfigMap change in the pod",
        Duration::from_secs(60),
        |c| {
            let out = c.exec(
                "default",
                "incluster",
                "main",
                &["cat", "/etc/settings/greeting", "/etc/settings/extra"],
            );
            String::from_utf8_lossy(&out.stdout) == "bonjourx"
        },
    );

    c.k(&[
        "delete",
        "pod",
        "incluster",
        "nolinks",
        "--wait=true",
        "--timeout=60s",
    ]);
    c.k(&["delete", "svc", "web-svc"]);
    c.k(&["delete", "cm", "settings"]);
    c.k(&["delete", "rolebinding", "default-view"]);
}
