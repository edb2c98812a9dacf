//! Real kubectl, every version the machine ships (1.27 to 1.33), against `skiff server`: the
//! everyday commands, each checked for what the user would see.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use server_support::{KUBECTL_DIR, Server, ok, run, run_with_stdin, wait_until};

const APP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
stringData:
  password: s3cret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - name: MODE
          value: one
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str = r#"apiVersion: example.com/v1
kind: Widget
metadata:
  name: sprocket
spec:
  size: 3
"#;

struct Kubectl<'a> {
    server: &'a Server,
    version: &'a str,
}

impl Kubectl<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut command = self.server.kubectl(self.version);
        command.args(args);
        command
    }

    /// Runs kubectl; panics (with the server log) when it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = run(&mut self.cmd(args));
        assert!(
            out.status.success(),
            "kubectl {} {args:?} failed:\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            self.version,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.server.log())
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with `input` on stdin.
    fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let out = run_with_stdin(&mut self.cmd(args), input);
        assert!(
            out.status.success(),
            "kubectl {} {args:?} failed:\n{}",
            self.version,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn minor(version: &str) -> u32 {
    version
        .rsplit('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The whole tour for one kubectl version against one fresh server.
fn tour(version: &str) {
    let path = format!("{KUBECTL_DIR}/kubectl.{version}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: this machine image ships kubectl 1.27-1.33"
    );
    let server = Server::start();
    let k = Kubectl {
        server: &server,
        version,
    };

    // Discovery.
    let out = k.ok(&["version"]);
    assert!(
        out.contains("Server Version") && out.contains("v1.33.0-skiff"),
        "{out}"
    );
    let out = k.ok(&["api-resources"]);
    for needle in [
        "deployments",
        "configmaps",
        "customresourcedefinitions",
        "deploy",
    ] {
        assert!(out.contains(needle), "api-resources lacks {needle}:\n{out}");
    }
    let out = k.ok(&["api-versions"]);
    assert!(out.contains("apps/v1") && out.contains("v1\n"), "{out}");

    // Namespaced objects from the typed `create` commands (protobuf bodies since 1.32).
    k.ok(&["create", "namespace", "tour"]);
    let n = ["-n", "tour"];
    k.ok(&[&n[..], &["create", "configmap", "c1", "--from-literal=a=1"]].concat());
    let cm = k.json(&[&n[..], &["get", "cm", "c1"]].concat());
    assert_eq!(cm["data"]["a"], "1");
    let yaml = k.ok(&[&n[..], &["get", "cm", "c1", "-o", "yaml"]].concat());
    assert!(yaml.contains("a: \"1\""), "{yaml}");
    let name = k.ok(&[&n[..], &["get", "cm", "-o", "name"]].concat());
    // Every namespace also gets the cluster CA (`kube-root-ca.crt`), as in Kubernetes.
    let names: Vec<&str> = name
        .lines()
        .filter(|l| *l != "configmap/kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["configmap/c1"]);
    let wide = k.ok(&[&n[..], &["get", "cm", "-o", "wide"]].concat());
    assert!(
        wide.starts_with("NAME") && wide.contains("DATA") && wide.contains("c1"),
        "{wide}"
    );
    let value = k.ok(&[&n[..], &["get", "cm", "c1", "-o", "jsonpath={.data.a}"]].concat());
    assert_eq!(value, "1");

    // Labels, annotations, selectors.
    k.ok(&[&n[..], &["label", "cm", "c1", "tier=gold"]].concat());
    k.ok(&[&n[..], &["annotate", "cm", "c1", "note=hi"]].concat());
    k.ok(&[&n[..], &["create", "configmap", "c2", "--from-literal=b=2"]].concat());
    let selected = k.ok(&[&n[..], &["get", "cm", "-l", "tier=gold", "-o", "name"]].concat());
    assert_eq!(selected.trim(), "configmap/c1");
    let note = k.ok(&[
        &n[..],
        &[
            "get",
            "cm",
            "c1",
            "-o",
            "jsonpath={.metadata.annotations.note}",
        ],
    ]
    .concat());
    assert_eq!(note, "hi");
    let labels = k.ok(&[&n[..], &["get", "cm", "--show-labels"]].concat());
    assert!(labels.contains("tier=gold"), "{labels}");

    // Patches of the three kinds, then replace.
    k.ok(&[
        &n[..],
        &[
            "patch",
            "cm",
            "c1",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"m":"1"}}"#,
        ],
    ]
    .concat());
    k.ok(&[
        &n[..],
        &[
            "patch",
            "cm",
            "c1",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/data/j","value":"2"}]"#,
        ],
    ]
    .concat());
    k.ok(&[
        &n[..],
        &["patch", "cm", "c1", "-p", r#"{"data":{"s":"3"}}"#],
    ]
    .concat());
    let data = k.json(&[&n[..], &["get", "cm", "c1"]].concat())["data"].clone();
    assert_eq!(
        data,
        serde_json::json!({"a": "1", "m": "1", "j": "2", "s": "3"})
    );
    let mut current = k.json(&[&n[..], &["get", "cm", "c1"]].concat());
    current["data"]["a"] = "replaced".into();
    k.ok_stdin(
        &[&n[..], &["replace", "-f", "-"]].concat(),
        &current.to_string(),
    );
    let value = k.ok(&[&n[..], &["get", "cm", "c1", "-o", "jsonpath={.data.a}"]].concat());
    assert_eq!(value, "replaced");

    // Client-side apply, twice, then diff, then scale.
    let out = k.ok_stdin(&[&n[..], &["apply", "-f", "-"]].concat(), APP);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let changed = APP
        .replace("nginx:1.25", "nginx:1.26")
        .replace("greeting: hello", "greeting: bye");
    let mut child = k
        .cmd(&[&n[..], &["diff", "-f", "-"]].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(changed.as_bytes())
        .unwrap();
    let diff = child.wait_with_output().unwrap();
    let diff_text = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "diff should report changes: {diff_text}\n{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(
        diff_text.contains("+        image: nginx:1.26"),
        "{diff_text}"
    );
    let out = k.ok_stdin(&[&n[..], &["apply", "-f", "-"]].concat(), &changed);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let image = k.ok(&[
        &n[..],
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    ]
    .concat());
    assert_eq!(image, "nginx:1.26");
    k.ok(&[&n[..], &["scale", "deploy", "web", "--replicas=3"]].concat());
    let replicas = k.ok(&[
        &n[..],
        &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
    ]
    .concat());
    assert_eq!(replicas, "3");
    let svc = k.json(&[&n[..], &["get", "svc", "web"]].concat());
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.43."),
        "{svc}"
    );
    let secret = k.json(&[&n[..], &["get", "secret", "web-secret"]].concat());
    assert_eq!(secret["data"]["password"], "czNjcmV0");

    // Watch: an ADDED then a MODIFIED.
    let watch_out = server.dir.path().join(format!("watch-{version}.out"));
    let mut watch = k
        .cmd(
            &[
                &n[..],
                &[
                    "get",
                    "cm",
                    "--field-selector",
                    "metadata.name=w1",
                    "-w",
                    "--output-watch-events",
                    "-o",
                    "json",
                ],
            ]
            .concat(),
        )
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The watch starts empty; give it the chance to be established before the create.
    std::thread::sleep(Duration::from_millis(300));
    k.ok(&[&n[..], &["create", "configmap", "w1", "--from-literal=x=1"]].concat());
    k.ok(&[
        &n[..],
        &[
            "patch",
            "cm",
            "w1",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"x":"2"}}"#,
        ],
    ]
    .concat());
    wait_until(
        "the watch to see ADDED and MODIFIED",
        Duration::from_secs(15),
        || {
            let text = std::fs::read_to_string(&watch_out).unwrap_or_default();
            text.contains("\"ADDED\"") && text.contains("\"MODIFIED\"")
        },
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // wait --for=delete, then delete.
    let waiter = k
        .cmd(&[&n[..], &["wait", "--for=delete", "cm/w1", "--timeout=30s"]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    k.ok(&[&n[..], &["delete", "cm", "w1"]].concat());
    let waited = waiter.wait_with_output().unwrap();
    assert!(
        waited.status.success(),
        "wait --for=delete failed: {}",
        String::from_utf8_lossy(&waited.stderr)
    );

    // Who am I (SelfSubjectReview v1 arrived with kubectl 1.28).
    if minor(version) >= 28 {
        let out = k.ok(&["auth", "whoami"]);
        assert!(out.contains("system:admin"), "{out}");
    }
    let out = k.ok(&["auth", "can-i", "create", "pods"]);
    assert_eq!(out.trim(), "yes");

    // A CRD and an instance, by full and short name; deleting the CRD removes it.
    k.ok_stdin(&["apply", "-f", "-"], CRD);
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ]);
    k.ok_stdin(&[&n[..], &["apply", "-f", "-"]].concat(), WIDGET);
    let widget = k.json(&[&n[..], &["get", "widget", "sprocket"]].concat());
    assert_eq!(widget["spec"]["size"], 3);
    let listed = k.ok(&[&n[..], &["get", "wd", "-o", "name"]].concat());
    assert_eq!(listed.trim(), "widget.example.com/sprocket");
    k.ok(&[
        &n[..],
        &[
            "patch",
            "wd",
            "sprocket",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"size":4}}"#,
        ],
    ]
    .concat());
    k.ok(&["delete", "crd", "widgets.example.com"]);
    let gone = run(&mut k.cmd(&[&n[..], &["get", "widgets"]].concat()));
    assert!(!gone.status.success());

    // Delete what is left, the namespace last.
    k.ok(&[&n[..], &["delete", "deploy", "web"]].concat());
    k.ok(&["delete", "namespace", "tour", "--wait=true"]);
    let namespaces = k.ok(&["get", "ns", "-o", "name"]);
    assert!(!namespaces.contains("namespace/tour"), "{namespaces}");
    let missing = run(&mut k.cmd(&[&n[..], &["get", "cm", "c1"]].concat()));
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn kubectl_1_27_works_against_skiff_server() {
    tour("1.27");
}

#[test]
fn kubectl_1_28_works_against_skiff_server() {
    tour("1.28");
}

#[test]
fn kubectl_1_29_works_against_skiff_server() {
    tour("1.29");
}

#[test]
fn kubectl_1_30_works_against_skiff_server() {
    tour("1.30");
}

#[test]
fn kubectl_1_31_works_against_skiff_server() {
    tour("1.31");
}

#[test]
fn kubectl_1_32_works_against_skiff_server() {
    tour("1.32");
}

#[test]
fn kubectl_1_33_works_against_skiff_server() {
    tour("1.33");
}

#[test]
fn errors_read_like_kube_apiserver() {
    let server = Server::start();
    let k = Kubectl {
        server: &server,
        version: "1.33",
    };
    let out = run(&mut k.cmd(&["get", "pod", "nope"]));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let out = run(&mut k.cmd(&["create", "configmap", "x", "-n", "ghost"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("namespaces \"ghost\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok(&["create", "configmap", "dup"]);
    let out = run(&mut k.cmd(&["create", "configmap", "dup"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("configmaps \"dup\" already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&mut k.cmd(&["get", "kube"]));
    assert!(!out.status.success());
    let _ = ok(&mut k.cmd(&["get", "--raw", "/readyz"]));
}
