//! Container lifecycle through the embedded node agent, for real (root) with kubectl 1.33:
//! postStart hooks run before the container counts as running (the main process sees what
//! the hook wrote), a failing postStart (exec or httpGet) kills the container
//! (`FailedPostStartHook`, restarts), preStop hooks run before the stop signal on deletion;
//! termination messages come from `/dev/termination-log` (also for a non-root user) or, with
//! `FallbackToLogsOnError`, from the log; private images are pulled with the credentials of a
//! `kubernetes.io/dockerconfigjson` pull secret (the pod's or its ServiceAccount's) and refused
//! without (`ErrImagePull`/`ImagePullBackOff` with the registry's message).
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::{Cluster, run};
use skiff_testkit::image::ImageSet;
use skiff_testkit::registry::{Registry, RegistryAuth};

const LONG: Duration = Duration::from_secs(90);

fn apply(c: &Cluster, name: &str, yaml: &str) {
    let file = c.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    c.k(&["apply", "-f", file.to_str().unwrap()]);
}

fn logs(c: &Cluster, pod: &str) -> String {
    let out = run(c.kubectl().args(["logs", pod]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events(c: &Cluster, pod: &str) -> String {
    let out = run(c.kubectl().args([
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn restarts(c: &Cluster, pod: &str) -> u32 {
    c.field(
        &["get", "pod", pod],
        "{.status.containerStatuses[0].restartCount}",
    )
    .parse()
    .unwrap_or(0)
}

#[test]
fn hooks_and_termination_messages_follow_the_kubelet() {
    let c = Cluster::start();
    let hooks = tempfile::tempdir().unwrap();
    let order = hooks.path().join("order");
    apply(
        &c,
        "lifecycle",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: poststart}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "while [ ! -f /tmp/started ]; do sleep 0.1; done; echo SAW $(cat /tmp/started); sleep 3600"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "sleep 1; echo hook > /tmp/started"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhook}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "echo nope; exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhttp}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
    lifecycle:
      postStart:
        httpGet: {{path: /started, port: 9999}}
---
apiVersion: v1
kind: Pod
metadata: {{name: prestop}}
spec:
  terminationGracePeriodSeconds: 20
  volumes: [{{name: hooks, hostPath: {{path: "{hooks}"}}}}]
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "trap 'echo term >> /hooks/order; exit 0' TERM; echo READY; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: hooks, mountPath: /hooks}}]
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "sleep 1; echo prestop >> /hooks/order"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: liveprestop}}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{{name: hooks, hostPath: {{path: "{hooks}"}}}}]
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    volumeMounts: [{{name: hooks, mountPath: /hooks}}]
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 1
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "echo liveness >> /hooks/live"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badstop}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        httpGet: {{path: /stop, port: 9999}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sleeper}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "trap 'exit 0' TERM; echo READY; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        sleep: {{seconds: 3}}
---
apiVersion: v1
kind: Pod
metadata: {{name: msgfile}}
spec:
  restartPolicy: Never
  securityContext: {{runAsUser: 1000}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "printf 'all done' > /dev/termination-log; exit 0"]
---
apiVersion: v1
kind: Pod
metadata: {{name: msgpath}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    terminationMessagePath: /tmp/why
    command: [sh, -c, "echo -n custom > /tmp/why; exit 4"]
---
apiVersion: v1
kind: Pod
metadata: {{name: msglogs}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {image}
    terminationMessagePolicy: FallbackToLogsOnError
    command: [sh, -c, "echo first; echo oops it broke; exit 2"]
"#,
            image = c.image,
            hooks = hooks.path().display(),
        ),
    );

    // postStart ran before the main process went on.
    c.wait("poststart to log", LONG, || {
        logs(&c, "poststart").contains("SAW hook")
    });
    assert_eq!(
        c.field(&["get", "pod", "poststart"], "{.status.phase}"),
        "Running"
    );

    // A failing postStart kills the container, which restarts.
    c.wait("badhook to restart", LONG, || restarts(&c, "badhook") >= 1);
    let ev = events(&c, "badhook");
    assert!(ev.contains("FailedPostStartHook"), "{ev}");
    assert!(
        ev.contains("Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container \"main\" in Pod \"badhook_default("),
        "{ev}"
    );
    c.wait("badhttp to restart", LONG, || restarts(&c, "badhttp") >= 1);
    let ev = events(&c, "badhttp");
    assert!(
        ev.contains("HTTP lifecycle hook (/started) for Container \"main\" in Pod"),
        "{ev}"
    );

    // Termination messages.
    let message = |pod: &str| {
        c.field(
            &["get", "pod", pod],
            "{.status.containerStatuses[0].state.terminated.message}",
        )
    };
    c.wait("msgfile to finish", LONG, || !message("msgfile").is_empty());
    assert_eq!(message("msgfile"), "all done");
    c.wait("msgpath to finish", LONG, || !message("msgpath").is_empty());
    assert_eq!(message("msgpath"), "custom");
    c.wait("msglogs to finish", LONG, || !message("msglogs").is_empty());
    assert_eq!(message("msglogs"), "first\noops it broke\n");

    // preStop runs before the stop signal, within the grace period.
    c.wait("prestop to run", LONG, || {
        logs(&c, "prestop").contains("READY")
    });
    let began = Instant::now();
    c.k(&["delete", "pod", "prestop", "--wait=true", "--timeout=60s"]);
    assert!(began.elapsed() >= Duration::from_secs(1));
    let text = std::fs::read_to_string(&order).unwrap_or_default();
    assert_eq!(text, "prestop\nterm\n");

    // preStop before a liveness kill; a failing httpGet preStop; the sleep action.
    let live = hooks.path().join("live");
    c.wait("the liveness kill to run preStop", LONG, || {
        std::fs::read_to_string(&live).is_ok_and(|t| t.contains("liveness"))
    });
    c.wait("liveprestop to restart", LONG, || {
        restarts(&c, "liveprestop") >= 1
    });
    c.k(&["delete", "pod", "badstop", "--wait=true", "--timeout=60s"]);
    let ev = events(&c, "badstop");
    assert!(ev.contains("FailedPreStopHook"), "{ev}");
    assert!(
        ev.contains("HTTP lifecycle hook (/stop) for Container \"main\" in Pod \"badstop_default("),
        "{ev}"
    );
    c.wait("sleeper to run", LONG, || {
        logs(&c, "sleeper").contains("READY")
    });
    let began = Instant::now();
    c.k(&["delete", "pod", "sleeper", "--wait=true", "--timeout=60s"]);
    assert!(
        began.elapsed() >= Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );

    c.k(&[
        "delete",
        "pod",
        "liveprestop",
        "poststart",
        "badhook",
        "badhttp",
        "msgfile",
        "msgpath",
        "msglogs",
        "--wait=true",
        "--timeout=60s",
    ]);
}

#[test]
fn pull_secrets_give_the_registry_credentials() {
    let c = Cluster::start();
    let images = ImageSet::build().unwrap();
    let private = Registry::with_fixtures(RegistryAuth::Basic, &images).unwrap();
    let (user, password) = private.credentials().unwrap();
    let image = format!("127.0.0.1:{}/busybox:latest", private.port());
    let registry = format!("127.0.0.1:{}", private.port());
    let secret = |name: &str, password: &str| {
        c.k(&[
            "create",
            "secret",
            "docker-registry",
            name,
            &format!("--docker-server={registry}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
        ]);
    };
    secret("good", password);
    secret("bad", "wrong-password");
    c.k(&["create", "serviceaccount", "puller"]);
    c.k(&[
        "patch",
        "serviceaccount",
        "puller",
        "-p",
        r#"{"imagePullSecrets": [{"name": "good"}]}"#,
    ]);
    apply(
        &c,
        "pulls",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: withsecret}}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{{name: good}}]
  containers: [{{name: main, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: viaaccount}}
spec:
  terminationGracePeriodSeconds: 1
  serviceAccountName: puller
  containers: [{{name: main, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nosecret}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: main, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: badsecret}}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{{name: bad}}]
  containers: [{{name: main, image: "{image}", command: [sleep, "3600"]}}]
"#
        ),
    );
    for pod in ["withsecret", "viaaccount"] {
        c.wait(&format!("{pod} to run"), LONG, || {
            c.field(&["get", "pod", pod], "{.status.phase}") == "Running"
        });
    }
    let waiting = |pod: &str| {
        c.field(
            &["get", "pod", pod],
            "{.status.containerStatuses[0].state.waiting.reason}/{.status.containerStatuses[0].state.waiting.message}",
        )
    };
    for pod in ["nosecret", "badsecret"] {
        c.wait(&format!("{pod} to fail its pull"), LONG, || {
            let w = waiting(pod);
            w.starts_with("ErrImagePull/") || w.starts_with("ImagePullBackOff/")
        });
        let mut seen = String::new();
        c.wait(
            &format!("{pod} to show the registry's message"),
            LONG,
            || {
                seen = events(&c, pod);
                seen.contains("Failed to pull image")
            },
        );
        let expected = if pod == "nosecret" {
            "unauthorized: authentication required"
        } else {
            "refused the credentials"
        };
        assert!(seen.contains(expected), "{pod}: {seen}");
        c.wait(&format!("{pod} to back off"), LONG, || {
            waiting(pod).starts_with("ImagePullBackOff/")
        });
        let get = c.k(&["get", "pod", pod]);
        assert!(
            get.contains("ImagePullBackOff") || get.contains("ErrImagePull"),
            "{get}"
        );
    }
    c.k(&[
        "delete",
        "pod",
        "withsecret",
        "viaaccount",
        "nosecret",
        "badsecret",
        "--wait=true",
        "--timeout=60s",
    ]);
}
