//! `skiff top`, `skiff stats`, `skiff system prune` and `skiff system df` as users run them
//! (root; CI runs as root; `top` needs the host's `ps`, from procps): Docker's columns, the
//! container's own processes and figures from its cgroup, and prune removing exactly what is
//! unused. Every container (and the streaming `stats` process) is removed or killed on drop,
//! also when the test fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use engine_support::{IMAGE, Skiff, text};
use skiff_testkit::process::ChildGuard;
use skiff_testkit::wait::wait_for;

#[test]
fn top_lists_the_containers_processes_only() {
    skiff_testkit::require::require_program("ps", "procps").unwrap();
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        IMAGE,
        "sh",
        "-c",
        "sleep 1000 & sleep 1001 & wait",
    ]);
    let pids = || {
        skiff
            .ok(&["exec", "busy", "sh", "-c", "ls /proc | grep -c '^[0-9]'"])
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    wait_for("both sleeps", Duration::from_secs(10), || {
        skiff
            .ok(&["top", "busy"])
            .contains("sleep 1001")
            .then_some(())
    })
    .unwrap();
    assert!(pids() >= 3);
    let top = skiff.ok(&["top", "busy"]);
    let lines: Vec<&str> = top.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "{top}"
    );
    assert!(
        lines[0].starts_with(&format!("{:<20}{:<20}", "UID", "PID")),
        "{top:?}"
    );
    assert_eq!(lines.len(), 4, "sh and two sleeps: {top}");
    assert!(lines.iter().any(|l| l.ends_with("sleep 1000")), "{top}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("sh -c sleep 1000 & sleep 1001 & wait")),
        "{top}"
    );
    let own = skiff.format("busy", "{{.State.Pid}}");
    assert!(
        lines[1..]
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some(own.as_str()))
    );

    let custom = skiff.ok(&["top", "busy", "-o", "pid,comm"]);
    let lines: Vec<&str> = custom.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    assert_eq!(lines.len(), 4, "{custom}");
    let no_pid = skiff.run(&["top", "busy", "-o", "comm"]);
    assert_eq!(no_pid.status.code(), Some(1));
    assert!(text(&no_pid.stderr).contains("Couldn't find PID field"));

    skiff.ok(&["run", "--name", "done", IMAGE, "true"]);
    let stopped = skiff.run(&["top", "done"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        text(&stopped.stderr).contains("is not running"),
        "{}",
        text(&stopped.stderr)
    );
    let missing = skiff.run(&["top", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        "Error response from daemon: No such container: nope\n"
    );
}

#[test]
fn stats_reports_the_cgroups_figures_in_dockers_columns() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "-d",
        "--name",
        "hog",
        "-m",
        "64m",
        IMAGE,
        "sh",
        "-c",
        "dd if=/dev/zero of=/tmp/blob bs=1k count=2048 2>/dev/null; while :; do :; done",
    ]);
    skiff.ok(&["run", "--name", "done", IMAGE, "true"]);
    let table = skiff.ok(&["stats", "--no-stream", "hog"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT   MEM %     NET I/O   BLOCK I/O   PIDS",
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    let id = skiff.format("hog", "{{.Id}}");
    assert!(lines[1].starts_with(&id[..12]), "{table}");
    assert!(lines[1].contains(" / 64MiB "), "{table}");
    assert!(lines[1].ends_with(" 1"), "one process: {table}");

    let json = skiff.ok(&["stats", "--no-stream", "--format", "{{json .}}", "hog"]);
    let doc: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
    assert_eq!(doc["Name"], "hog");
    assert_eq!(doc["Container"], "hog", "as the user named it");
    assert_eq!(doc["ID"], &id[..12]);
    assert_eq!(doc["PIDs"], "1");
    assert_eq!(doc["NetIO"], "0B / 0B", "no network but loopback");
    let cpu: f64 = doc["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(cpu > 5.0 && cpu < 205.0, "a busy loop: {cpu}%");
    let mem = doc["MemUsage"].as_str().unwrap();
    assert!(mem.ends_with(" / 64MiB") && mem != "0B / 64MiB", "{mem}");
    let mem_percent: f64 = doc["MemPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(mem_percent > 0.0 && mem_percent < 100.0, "{mem_percent}");
    assert_eq!(
        skiff.ok(&["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}"]),
        "hog 1\n",
        "running containers only"
    );
    let all = skiff.ok(&[
        "stats",
        "--no-stream",
        "-a",
        "--format",
        "{{.Name}} {{.MemUsage}}",
    ]);
    assert!(all.contains("done 0B / 0B\n"), "{all}");
    let missing = skiff.run(&["stats", "--no-stream", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("No such container: nope"));

    // Without --no-stream the table is redrawn until the command is stopped.
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("stats.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let _stats = ChildGuard::spawn(
        "skiff stats",
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["stats", "hog"])
            .env("SKIFF_DATA_ROOT", skiff.data.path())
            .stdout(out_file)
            .stderr(Stdio::null()),
    )
    .unwrap();
    wait_for("two tables", Duration::from_secs(15), || {
        let out = std::fs::read_to_string(&out_path).unwrap_or_default();
        (out.matches("\x1b[2J\x1b[H").count() >= 2 && out.matches(&id[..12]).count() >= 2)
            .then_some(())
    })
    .unwrap();
}

#[test]
fn system_prune_removes_what_nothing_uses_and_df_counts_it() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run", "-d", "--name", "live", "-v", "/live", IMAGE, "sleep", "1000",
    ]);
    skiff.ok(&[
        "run",
        "--name",
        "old",
        "-v",
        "/old",
        IMAGE,
        "sh",
        "-c",
        "echo 1234 > /old/f; echo 123456789 > /file",
    ]);
    let old = skiff.format("old", "{{.Id}}");
    let old_volume = skiff.format("old", "{{range .Mounts}}{{.Name}}{{end}}");
    let dangling = skiff.ok(&["commit", "old"]).trim_end().to_string();
    skiff.ok(&["commit", "old", "skiff.test/kept:v1"]);
    skiff.ok(&["volume", "create", "named"]);

    let df = skiff.ok(&["system", "df"]);
    let lines: Vec<&str> = df.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        "{df}"
    );
    let row = |name: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("Images")[..2], ["3", "1"], "{df}");
    assert_eq!(row("Containers")[..2], ["2", "1"], "{df}");
    assert_eq!(row("Local Volumes")[..2], ["3", "2"], "{df}");
    assert_eq!(row("Build Cache"), ["0", "0", "0B", "0B"], "{df}");

    // Asked without -f, a no (here: no answer) keeps everything.
    let asked = skiff.run(&["system", "prune"]);
    assert!(asked.status.success());
    assert!(
        text(&asked.stdout).starts_with("WARNING! This will remove:\n  - all stopped containers\n")
    );
    assert_eq!(skiff.ok(&["ps", "-aq"]).lines().count(), 2);

    let pruned = skiff.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(
        pruned.starts_with(&format!(
            "Deleted Containers:\n{old}\n\nDeleted Volumes:\n{old_volume}\n\nDeleted Images:\ndeleted: {dangling}\n\nTotal reclaimed space: "
        )),
        "{pruned}"
    );
    assert!(!pruned.ends_with("Total reclaimed space: 0B\n"), "{pruned}");
    assert_eq!(skiff.ok(&["ps", "-aq"]).lines().count(), 1, "live stays");
    let volumes = skiff.ok(&["volume", "ls", "-q"]);
    assert_eq!(
        volumes.lines().count(),
        2,
        "live's and the named one: {volumes}"
    );
    assert!(skiff.run(&["image", "inspect", &dangling]).status.code() != Some(0));
    skiff.ok(&["image", "inspect", "skiff.test/kept:v1"]);

    // -a: every image no container uses; the running container's image stays usable.
    let all = skiff.ok(&["system", "prune", "-f", "-a"]);
    assert!(
        all.contains("Deleted Images:\nuntagged: skiff.test/kept:v1\ndeleted: sha256:"),
        "{all}"
    );
    skiff.ok(&["image", "inspect", IMAGE]);
    assert_eq!(skiff.ok(&["exec", "live", "echo", "still"]), "still\n");
    assert_eq!(
        skiff.ok(&["system", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
}

#[test]
fn stats_and_ps_formats_take_dockers_table_prefix() {
    let skiff = Skiff::new();
    skiff.ok(&["run", "-d", "--name", "idle", IMAGE, "sleep", "1000"]);
    skiff.ok(&["create", "--name", "fresh", IMAGE, "true"]);
    let id = skiff.format("idle", "{{.Id}}");
    let table = skiff.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "table {{.Name}}\\t{{.Container}}\\t{{.PIDs}}",
        "idle",
    ]);
    assert_eq!(
        table,
        "NAME      CONTAINER   PIDS\nidle      idle        1\n"
    );
    let table = skiff.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "table {{.ID}}\t{{.MemPerc}}",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "CONTAINER ID   MEM %", "{table}");
    assert!(
        lines[1].starts_with(&format!("{}   ", &id[..12])),
        "{table}"
    );
    assert!(lines[1].ends_with('%'), "{table}");
    // `table` alone is the default table.
    let default = skiff.ok(&["stats", "--no-stream", "--format", "table", "idle"]);
    assert!(
        default.starts_with("CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT"),
        "{default}"
    );
    let bad = skiff.run(&["stats", "--no-stream", "--format", "{{.Nope}}", "idle"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");

    let ps = skiff.ok(&[
        "ps",
        "-a",
        "--format",
        "table {{.Names}}\\t{{.State}}\\t{{.Command}}",
    ]);
    assert_eq!(
        ps,
        "NAMES     STATE     COMMAND\nfresh     created   \"true\"\nidle      running   \"sleep 1000\"\n"
    );
    assert_eq!(
        skiff.ok(&["ps", "--format", "{{.ID}} {{.Names}} {{.Networks}}"]),
        format!("{} idle none\n", &id[..12])
    );
    let json = skiff.ok(&["ps", "-a", "--format", "json", "--no-trunc"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["Names"], "fresh");
    assert_eq!(first["ID"].as_str().unwrap().len(), 64);
    assert!(
        first["CreatedAt"].as_str().unwrap().ends_with(" +0000 UTC"),
        "{first}"
    );
    let plain = skiff.ok(&["ps"]);
    assert!(
        plain.starts_with("CONTAINER ID   IMAGE ") && plain.lines().count() == 2,
        "{plain}"
    );
}
