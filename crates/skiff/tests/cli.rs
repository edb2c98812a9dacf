//! The `skiff` binary as users and engines run it: version, help, the `skiff-runc` multicall
//! link, runtime errors engines match on, and `skiff info`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

fn run(program: &std::path::Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(&skiff(), &["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("skiff {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_commands() {
    let out = run(&skiff(), &["help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for word in ["runtime", "info", "Usage"] {
        assert!(text.contains(word), "help lacks {word}:\n{text}");
    }
}

#[test]
fn an_unknown_command_fails_with_usage() {
    let out = run(&skiff(), &["frobnicate"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unrecognized subcommand"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_link_named_skiff_runc_is_the_runtime_cli() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("skiff-runc");
    std::os::unix::fs::symlink(skiff(), &link).unwrap();

    let out = run(&link, &["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("skiff-runc version "),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("spec: 1."), "{}", stdout(&out));

    let via_link = run(&link, &["--help"]);
    let via_subcommand = run(&skiff(), &["runtime", "--help"]);
    assert!(stdout(&via_link).contains("state"));
    assert!(stdout(&via_subcommand).contains("state"));
    assert!(
        !stdout(&via_link).contains("info"),
        "the link shows the runtime's commands only"
    );
}

#[test]
fn the_state_of_a_missing_container_does_not_exist() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_str().unwrap();
    let out = run(&skiff(), &["runtime", "--root", root, "state", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("container nope does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn state_prints_a_saved_record_as_runc_does() {
    let root = tempfile::tempdir().unwrap();
    let record = serde_json::json!({
        "ociVersion": "1.2.0", "id": "c1", "pid": 0, "status": "stopped",
        "bundle": "/b", "rootfs": "/b/rootfs", "created": "2026-01-01T00:00:00Z", "owner": ""
    });
    std::fs::create_dir_all(root.path().join("c1")).unwrap();
    let saved = serde_json::json!({"state": record, "initStartTime": 0, "cgroupPath": "/skiff/c1"});
    std::fs::write(root.path().join("c1/state.json"), saved.to_string()).unwrap();
    let out = run(
        &skiff(),
        &[
            "runtime",
            "--root",
            root.path().to_str().unwrap(),
            "state",
            "c1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed, record);
}

#[test]
fn systemd_cgroups_are_refused_with_the_fix() {
    let out = run(&skiff(), &["runtime", "--systemd-cgroup", "state", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("drop the flag"), "{}", stderr(&out));
}

#[test]
fn info_reports_the_cgroup_layout_and_namespaces() {
    let out = run(&skiff(), &["info", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(info["cgroups"]["layout"].as_str().is_some());
    let namespaces: Vec<&str> = info["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for kind in ["mount", "network", "pid", "uts", "ipc"] {
        assert!(namespaces.contains(&kind), "{namespaces:?}");
    }
}
