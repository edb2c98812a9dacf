//! Pod volumes through the embedded node agent, for real (root) with kubectl 1.33: emptyDir
//! (disk and memory), hostPath with type checks, configMap and secret files with items and
//! modes, downwardAPI files, subPath and read-only mounts; a missing ConfigMap keeps the pod
//! in ContainerCreating with a `FailedMount` event; volumes are removed with their pod.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_support::{Cluster, run};

const LONG: Duration = Duration::from_secs(90);

/// Unmounts whatever is still mounted under the test's data directory (a tmpfs emptyDir of a
/// pod the test did not get to delete), before the cluster's directory is removed.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        for target in mounts_under(&self.0).into_iter().rev() {
            let _ = run(std::process::Command::new("umount").arg("-l").arg(&target));
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix) && m.contains("/agent/pods/"))
        .collect()
}

fn apply(c: &Cluster, name: &str, yaml: &str) {
    let file = c.path().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    c.k(&["apply", "-f", file.to_str().unwrap()]);
}

fn describe_has(c: &Cluster, pod: &str, text: &str) -> bool {
    let out = run(c.kubectl().args(["describe", "pod", pod]));
    String::from_utf8_lossy(&out.stdout).contains(text)
}

#[test]
fn volumes_are_mounted_as_the_spec_says_and_removed_with_the_pod() {
    let c = Cluster::start();
    let _mounts = MountGuard(c.path().to_path_buf());
    let host = c.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("greeting"), "hi from host\n").unwrap();
    let created = c.path().join("made-by-agent");
    c.k(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=alpha",
        "--from-literal=b=beta",
    ]);
    c.k(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=pw=s3cret",
    ]);
    let script = r#"until [ -f /scratch/x ]; do sleep 0.1; done
echo "shared=$(cat /scratch/x)"
grep -q ' /mem tmpfs' /proc/mounts && echo mem=tmpfs
echo "memsize=$(df -k /mem | tail -1 | awk '{print $2}')"
echo "host=$(cat /host/greeting)"
touch /host/new 2>/dev/null || echo host=ro
touch /created/made && echo created=ok
echo "cfg=$(cat /etc/cfg/conf/a.txt) mode=$(stat -L -c %a /etc/cfg/conf/a.txt) files=$(ls /etc/cfg | tr '\n' ,)"
echo "sec=$(cat /etc/sec/pw) mode=$(stat -L -c %a /etc/sec/pw)"
touch /etc/cfg/new 2>/dev/null || echo cfg=ro
echo "name=$(cat /etc/info/name) ns=$(cat /etc/info/ns) mem=$(cat /etc/info/mem)"
echo "labels=$(cat /etc/info/labels | tr '\n' ,)"
echo "annotations=$(cat /etc/info/annotations)"
echo "opt=$(ls /opt | wc -l)"
echo sub > /sub/f && echo sub=ok
echo DONE
sleep 3600"#;
    let script = script.replace('\n', "\n          ");
    apply(
        &c,
        "vols",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {{app: vols, tier: web}}
  annotations: {{note: hello}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: reader
    image: {image}
    command: [sh, -c]
    args:
      - |
          {script}
    resources: {{limits: {{memory: 64Mi}}}}
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: scratch, mountPath: /sub, subPath: sub}}
    - {{name: mem, mountPath: /mem}}
    - {{name: host, mountPath: /host, readOnly: true}}
    - {{name: created, mountPath: /created}}
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: sec, mountPath: /etc/sec}}
    - {{name: info, mountPath: /etc/info}}
    - {{name: opt, mountPath: /opt}}
  - name: writer
    image: {image}
    command: [sh, -c, "echo shared > /data/x; sleep 3600"]
    volumeMounts:
    - {{name: scratch, mountPath: /data}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 16Mi}}}}
  - {{name: host, hostPath: {{path: {host}, type: Directory}}}}
  - {{name: created, hostPath: {{path: {created}, type: DirectoryOrCreate}}}}
  - name: cfg
    configMap:
      name: cfg
      defaultMode: 0440
      items: [{{key: a, path: conf/a.txt, mode: 0600}}]
  - {{name: sec, secret: {{secretName: sec, defaultMode: 0400}}}}
  - name: info
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: annotations, fieldRef: {{fieldPath: metadata.annotations}}}}
      - {{path: mem, resourceFieldRef: {{containerName: reader, resource: limits.memory}}}}
  - {{name: opt, configMap: {{name: nope, optional: true}}}}
"#,
            image = c.image,
            host = host.display(),
            created = created.display(),
        ),
    );
    c.wait("the reader's report", LONG, || {
        String::from_utf8_lossy(&run(c.kubectl().args(["logs", "vols", "-c", "reader"])).stdout)
            .contains("DONE")
    });
    let logs = c.k(&["logs", "vols", "-c", "reader"]);
    for want in [
        "shared=shared\n",
        "mem=tmpfs\n",
        "memsize=16384\n",
        "host=hi from host\n",
        "host=ro\n",
        "created=ok\n",
        "cfg=alpha mode=600 files=conf,\n",
        "sec=s3cret mode=400\n",
        "cfg=ro\n",
        "name=vols ns=default mem=67108864\n",
        "labels=app=\"vols\",tier=\"web\"\n",
        "note=\"hello\"\n",
        "opt=0\n",
        "sub=ok\n",
    ] {
        assert!(logs.contains(want), "missing {want:?} in:\n{logs}");
    }
    assert!(created.join("made").is_file());
    let uid = c.field(&["get", "pod", "vols"], "{.metadata.uid}");
    let pod_dir = c.path().join("agent/pods").join(&uid);
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("volumes/scratch/sub/f")).unwrap(),
        "sub\n"
    );
    assert_eq!(mounts_under(c.path()).len(), 1, "the memory emptyDir");
    for reason in ["Pulling", "Pulled", "Created", "Started"] {
        assert!(describe_has(&c, "vols", reason), "no {reason} event");
    }

    c.k(&["delete", "pod", "vols", "--wait=true", "--timeout=60s"]);
    c.wait("the pod's volumes to go", LONG, || !pod_dir.exists());
    assert!(mounts_under(c.path()).is_empty());
    assert!(host.join("greeting").is_file(), "hostPath content stays");
    let events = c.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=vols,reason=Killing",
    ]);
    assert!(events.contains("Stopping container reader"), "{events}");
}

#[test]
fn a_missing_configmap_or_host_path_keeps_the_pod_creating_with_failed_mount() {
    let c = Cluster::start();
    let _mounts = MountGuard(c.path().to_path_buf());
    let missing_file = c.path().join("no-such-file");
    apply(
        &c,
        "waits",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: waits}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: [sh, -c, "cat /cfg/k; echo; sleep 3600"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
  volumes:
  - {{name: cfg, configMap: {{name: later}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nofile}}
spec:
  containers:
  - name: main
    image: {image}
    volumeMounts: [{{name: f, mountPath: /f}}]
  volumes:
  - {{name: f, hostPath: {{path: {missing}, type: File}}}}
"#,
            image = c.image,
            missing = missing_file.display(),
        ),
    );
    c.wait("FailedMount for waits", LONG, || {
        describe_has(&c, "waits", "FailedMount")
            && describe_has(&c, "waits", "configmap \"later\" not found")
    });
    let reason = c.field(
        &["get", "pod", "waits"],
        "{.status.containerStatuses[0].state.waiting.reason}",
    );
    assert_eq!(reason, "ContainerCreating");
    assert_eq!(
        c.field(&["get", "pod", "waits"], "{.status.phase}"),
        "Pending"
    );
    let get = c.k(&["get", "pod", "waits"]);
    assert!(get.contains("ContainerCreating"), "{get}");
    c.wait("FailedMount for nofile", LONG, || {
        describe_has(&c, "nofile", "hostPath type check failed")
    });
    assert!(c.containers().iter().all(|n| !n.contains("_waits_")));

    c.k(&["create", "configmap", "later", "--from-literal=k=arrived"]);
    c.wait("waits to run", LONG, || {
        c.field(&["get", "pod", "waits"], "{.status.phase}") == "Running"
    });
    c.wait("waits' output", LONG, || {
        String::from_utf8_lossy(&run(c.kubectl().args(["logs", "waits"])).stdout)
            .contains("arrived")
    });
    c.k(&[
        "delete",
        "pod",
        "waits",
        "nofile",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        !c.path().join("agent/pods").exists() || {
            std::fs::read_dir(c.path().join("agent/pods"))
                .unwrap()
                .count()
                == 0
        }
    );
}
