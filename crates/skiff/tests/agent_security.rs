//! Security contexts through the embedded node agent, for real (root) with kubectl 1.33:
//! runAsUser/runAsGroup/supplementalGroups/fsGroup as `id` shows them, runAsNonRoot refused
//! for a root image (`CreateContainerConfigError` with the kubelet's message), a read-only
//! root, capabilities add/drop in `CapEff`, privileged (host devices, `mount`),
//! allowPrivilegeEscalation=false as `NoNewPrivs`, and seccomp modes (RuntimeDefault and a
//! Localhost profile filter, the default and Unconfined only have the /proc view's
//! allow-everything filter that notifies sysinfo, privileged none; a missing Localhost profile
//! is refused).
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::time::Duration;

use agent_support::{Cluster, run};

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

/// Waits until the pod's log has a line starting with `prefix`; returns that line.
fn log_line(c: &Cluster, pod: &str, prefix: &str) -> String {
    let mut line = String::new();
    c.wait(&format!("{pod} to log {prefix}"), LONG, || {
        match logs(c, pod).lines().find(|l| l.starts_with(prefix)) {
            Some(l) => {
                line = l.to_string();
                true
            }
            None => false,
        }
    });
    line
}

/// A character device of the host's `/dev` that containers do not get by default.
fn host_only_device() -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let defaults = [
        "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
    ];
    std::fs::read_dir("/dev")
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_char_device()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !defaults.contains(&n.as_str()) && !n.starts_with("tty"))
        .min()
}

/// Whether the `CapEff:` mask in `status` has capability `bit`.
fn has_cap(status: &str, bit: u32) -> bool {
    let hex = status
        .split("CapEff: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    u64::from_str_radix(hex, 16).unwrap() & (1 << bit) != 0
}

#[test]
fn security_contexts_reach_the_container() {
    let c = Cluster::start();
    let device = host_only_device().unwrap_or_else(|| "null".into());
    // A Localhost profile: allow everything but filter (seccomp mode 2).
    let profiles = c.path().join("agent/seccomp");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("allow.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let status = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' ' | tr '\\n' ' '; echo";
    apply(
        &c,
        "security",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: ids}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000], fsGroup: 2000}}
  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "echo ID $(id); echo GROUP $(stat -c %g /data); touch /data/f && echo WROTE; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  - name: override
    image: {image}
    securityContext: {{runAsUser: 1001}}
    command: [sh, -c, "echo ID $(id -u); sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: main
    image: {image}
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: readonly}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    securityContext: {{readOnlyRootFilesystem: true}}
    command: [sh, -c, "touch /x 2>&1; echo ROOTFS done; sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: caps}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{add: [NET_ADMIN], drop: [ALL]}}
      seccompProfile: {{type: RuntimeDefault}}
    command: [sh, -c, "echo STATUS $({status}); sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: plain}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "echo STATUS $({status}); sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: local}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    seccompProfile: {{type: Localhost, localhostProfile: allow.json}}
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "echo STATUS $({status}); sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: missing}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    securityContext:
      seccompProfile: {{type: Localhost, localhostProfile: missing.json}}
    command: [sleep, "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: priv}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    securityContext: {{privileged: true}}
    command: [sh, -c, "echo STATUS $({status}); ls /dev/{device} && echo DEVICE present; mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo MOUNT ok; sleep 3600"]
"#,
            image = c.image,
        ),
    );

    // Users and groups: the pod's, the container's uid winning; fsGroup owns the emptyDir.
    let id = log_line(&c, "ids", "ID ");
    assert!(id.contains("uid=1000"), "{id}");
    assert!(id.contains("gid=3000"), "{id}");
    assert!(id.contains("4000") && id.contains("2000"), "{id}");
    assert_eq!(log_line(&c, "ids", "GROUP "), "GROUP 2000");
    log_line(&c, "ids", "WROTE");
    c.wait("override to log its uid", LONG, || {
        let o = run(c.kubectl().args(["logs", "ids", "-c", "override"]));
        String::from_utf8_lossy(&o.stdout).contains("ID 1001")
    });
    let exec = c.k(&["exec", "ids", "-c", "main", "--", "id", "-u"]);
    assert_eq!(exec.trim(), "1000");

    // runAsNonRoot with a root image is refused, with the kubelet's reason and message.
    c.wait("nonroot to be refused", LONG, || {
        c.field(
            &["get", "pod", "nonroot"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CreateContainerConfigError"
    });
    let message = c.field(
        &["get", "pod", "nonroot"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    let uid = c.field(&["get", "pod", "nonroot"], "{.metadata.uid}");
    assert_eq!(
        message,
        format!(
            "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({uid})\", container: main)"
        )
    );
    let describe = c.k(&["describe", "pod", "nonroot"]);
    assert!(
        describe.contains("CreateContainerConfigError"),
        "{describe}"
    );
    assert!(
        describe.contains("Error: container has runAsNonRoot and image will run as root"),
        "{describe}"
    );
    let get = c.k(&["get", "pod", "nonroot"]);
    assert!(get.contains("CreateContainerConfigError"), "{get}");

    // A read-only root refuses writes.
    log_line(&c, "readonly", "ROOTFS done");
    assert!(logs(&c, "readonly").contains("Read-only file system"));

    // Capabilities, no_new_privs and seccomp.
    let caps = log_line(&c, "caps", "STATUS ");
    assert!(caps.contains("CapEff: 0000000000001000"), "{caps}");
    assert!(caps.contains("NoNewPrivs: 1"), "{caps}");
    assert!(caps.contains("Seccomp: 2"), "{caps}");
    let plain = log_line(&c, "plain", "STATUS ");
    assert!(plain.contains("NoNewPrivs: 0"), "{plain}");
    // Unconfined: the only filter is the /proc view's, which allows everything and only
    // hands sysinfo(2) to the /proc server.
    assert!(plain.contains("Seccomp: 2"), "{plain}");
    assert!(!has_cap(&plain, 21), "{plain}");
    let local = log_line(&c, "local", "STATUS ");
    assert!(local.contains("Seccomp: 2"), "{local}");

    // A missing Localhost profile is refused.
    c.wait("missing to be refused", LONG, || {
        c.field(
            &["get", "pod", "missing"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CreateContainerError"
    });
    let message = c.field(
        &["get", "pod", "missing"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        message.contains("cannot load seccomp profile") && message.contains("missing.json"),
        "{message}"
    );

    // Privileged: every capability, the host's devices, mount allowed, no seccomp.
    let status = log_line(&c, "priv", "STATUS ");
    assert!(status.contains("Seccomp: 0"), "{status}");
    assert!(has_cap(&status, 21), "CAP_SYS_ADMIN: {status}");
    log_line(&c, "priv", "MOUNT ok");
    log_line(&c, "priv", "DEVICE present");

    c.k(&[
        "delete",
        "pod",
        "ids",
        "nonroot",
        "readonly",
        "caps",
        "plain",
        "local",
        "missing",
        "priv",
        "--wait=true",
        "--timeout=60s",
    ]);
}
