//! Crash safety: `skiff server` killed with SIGKILL in the middle of concurrent creates loses
//! none it answered 201 for; after a restart over the same data dir every one is there.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use server_support::{Server, ok, wait_until};

/// POSTs one ConfigMap with curl; returns the HTTP code (0 when the connection failed).
fn create(dir: &std::path::Path, port: u16, token: &str, name: &str) -> u32 {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v"}}}}"#
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(dir.join("server/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "--data",
            &body,
        ])
        .arg(format!(
            "https://127.0.0.1:{port}/api/v1/namespaces/default/configmaps"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn every_acknowledged_create_survives_a_kill_9() {
    skiff_testkit::require::require_program("curl", "curl").unwrap();
    let server = Server::start();
    let dir = server.dir.path().to_path_buf();
    let token = std::fs::read_to_string(dir.join("server/token")).unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let (dir, token) = (dir.clone(), token.clone());
            let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
            let port = server.port;
            std::thread::spawn(move || {
                for i in 0..10_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let name = format!("cm-{worker}-{i}");
                    match create(&dir, port, &token, &name) {
                        201 => acknowledged.lock().unwrap().push(name),
                        0 => break,
                        _ => {}
                    }
                }
            })
        })
        .collect();
    wait_until("200 acknowledged creates", Duration::from_secs(60), || {
        acknowledged.lock().unwrap().len() >= 200
    });
    let data = server.kill();
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.join().unwrap();
    }
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();

    let server = Server::start_in(data, &[]);
    let listed =
        ok(server
            .kubectl("1.33")
            .args(["get", "configmaps", "-n", "default", "-o", "name"]));
    let present: HashSet<String> = listed
        .lines()
        .map(|l| l.trim_start_matches("configmap/").to_string())
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates were lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
}
