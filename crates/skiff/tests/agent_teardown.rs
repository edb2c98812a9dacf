//! Pod teardown through the embedded node agent, for real (root): a teardown step that fails
//! (an immutable file in the pod's directory, `chattr +i`) is retried with back-off, the pod
//! stays terminating meanwhile, and once the obstacle goes the pod's containers, directory and
//! API object go too. Needs `chattr` and a data directory on a filesystem with immutable files
//! (ext4, xfs, btrfs).
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agent_support::{Cluster, run};

const LONG: Duration = Duration::from_secs(90);

/// An immutable file; made mutable again on drop, also when the test fails.
struct Pinned(PathBuf);

impl Pinned {
    fn new(path: &Path) -> Pinned {
        std::fs::write(path, b"pinned").unwrap();
        let out = Command::new("chattr").arg("+i").arg(path).output();
        let pinned = Pinned(path.to_path_buf());
        match out {
            Ok(o) if o.status.success() => pinned,
            Ok(o) => panic!(
                "chattr +i {} failed (the test needs a data directory on a filesystem with \
                 immutable files, such as ext4): {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run chattr (install e2fsprogs): {e}"),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_failed_teardown_is_retried_until_the_pod_is_gone() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: stuck}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
"#,
        image = c.image
    ));
    let phase = || c.field(&["get", "pod", "stuck"], "{.status.phase}");
    c.wait("the pod to run", LONG, || phase() == "Running");
    let uid = c.field(&["get", "pod", "stuck"], "{.metadata.uid}");
    let pod_dir = c.path().join("agent/pods").join(&uid);
    assert!(pod_dir.is_dir(), "{} missing", pod_dir.display());
    // Declared after the cluster: dropped first, so the data directory can go.
    let pinned = Pinned::new(&pod_dir.join("pinned"));

    c.k(&["delete", "pod", "stuck", "--wait=false"]);
    c.wait("the teardown to fail", LONG, || {
        c.log().contains("tearing down the pod failed; retrying")
    });
    // The containers went; the directory and the API object wait for the retry.
    c.wait("the pod's containers to go", LONG, || {
        !c.containers().iter().any(|n| n.contains(&uid))
    });
    assert!(pod_dir.is_dir());
    assert_eq!(c.field(&["get", "pod", "stuck"], "{.metadata.uid}"), uid);

    drop(pinned);
    c.wait("the pod's directory to go", LONG, || !pod_dir.exists());
    c.wait("the pod to be deleted", LONG, || {
        !run(c.kubectl().args(["get", "pod", "stuck"]))
            .status
            .success()
    });
    assert!(
        c.log()
            .contains("the pod's teardown succeeded after failing"),
        "{}",
        c.log()
    );
}

/// A container of a pod the API does not have, found while the agent runs (not at its start):
/// the agent's periodic sweep stops and removes it, and leaves the running pod alone.
#[test]
fn a_container_whose_pod_is_gone_is_swept_while_the_agent_runs() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
"#,
        image = c.image
    ));
    c.wait("the pod to run", LONG, || {
        c.field(&["get", "pod", "live"], "{.status.phase}") == "Running"
    });
    let before = c.containers();
    // What a sync racing its pod's deletion could leave: a container labelled with a pod uid
    // the API has never had.
    let out = Command::new(agent_support::skiff())
        .args(["run", "-d", "--name", "stray", "--label"])
        .arg("io.kubernetes.pod.uid=0b6f2a5e-0000-4000-8000-000000000001")
        .arg(&c.image)
        .args(["sleep", "3600"])
        .env("SKIFF_DATA_ROOT", c.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait("the stray container to be swept", LONG, || {
        !c.containers().iter().any(|n| n == "stray")
    });
    assert!(
        c.log()
            .contains("removing what is left of a pod that is gone"),
        "{}",
        c.log()
    );
    assert_eq!(c.containers(), before, "the live pod's containers stay");
    assert_eq!(
        c.field(&["get", "pod", "live"], "{.status.phase}"),
        "Running"
    );
}
