//! Volumes as users run them (root; CI runs as root): `skiff volume create|ls|inspect|rm|prune`
//! with Docker's output, `run -v NAME:/path` (made on first use, filled from the image when
//! empty), anonymous volumes (`-v /path`) removed by `rm -v` and `--rm`, a volume in use never
//! removed, `--volumes-from`, and `commit` leaving volume content out. Volumes live under the
//! test's private data root, so they go with it; every container is removed on drop, also
//! when the test fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use std::os::unix::fs::MetadataExt;

use engine_support::{IMAGE, Skiff, text};

impl Skiff {
    fn volume_names(&self) -> Vec<String> {
        self.ok(&["volume", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn data_dir(&self, volume: &str) -> std::path::PathBuf {
        self.data.path().join("volumes").join(volume).join("_data")
    }
}

#[test]
fn volume_commands_print_what_docker_prints() {
    let skiff = Skiff::new();
    assert_eq!(skiff.ok(&["volume", "create", "cache"]), "cache\n");
    // Creating it again is no error, as with Docker.
    assert_eq!(skiff.ok(&["volume", "create", "cache"]), "cache\n");
    let random = skiff.ok(&["volume", "create", "--label", "team=web"]);
    let random = random.trim_end();
    assert!(
        random.len() == 64 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{random:?}"
    );
    let mut expected = vec!["cache".to_string(), random.to_string()];
    expected.sort();
    assert_eq!(skiff.volume_names(), expected);
    let ls = skiff.ok(&["volume", "ls"]);
    assert_eq!(
        ls,
        format!(
            "DRIVER    VOLUME NAME\nlocal     {}\nlocal     {}\n",
            expected[0], expected[1]
        )
    );
    assert_eq!(
        skiff.ok(&["volume", "ls", "-q", "--filter", "label=team=web"]),
        format!("{random}\n")
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["volume", "inspect", "cache", random])).unwrap();
    let cache = &inspect[0];
    assert_eq!(cache["Name"], "cache");
    assert_eq!(cache["Driver"], "local");
    assert_eq!(cache["Scope"], "local");
    assert_eq!(cache["Options"], serde_json::Value::Null);
    assert_eq!(cache["Labels"], serde_json::Value::Null);
    assert_eq!(
        cache["Mountpoint"],
        skiff.data_dir("cache").display().to_string()
    );
    assert!(cache["CreatedAt"].as_str().unwrap().starts_with("20"));
    assert_eq!(inspect[1]["Labels"]["team"], "web");
    assert_eq!(
        skiff.ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Driver}} {{.Name}}",
            "cache"
        ]),
        "local cache\n"
    );

    let missing = skiff.run(&["volume", "inspect", "missing"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(text(&missing.stdout), "[]\n");
    assert_eq!(
        text(&missing.stderr),
        "Error response from daemon: get missing: no such volume\n"
    );
    let short = skiff.run(&["volume", "create", "x"]);
    assert_eq!(short.status.code(), Some(1));
    assert_eq!(
        text(&short.stderr),
        "Error response from daemon: create x: volume name is too short, names should be at least two alphanumeric characters\n"
    );
    let bad = skiff.run(&["volume", "create", "a/b"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("includes invalid characters for a local volume name"),
        "{}",
        text(&bad.stderr)
    );
    let driver = skiff.run(&["volume", "create", "-d", "nfs", "other"]);
    assert_eq!(driver.status.code(), Some(1));
    assert!(text(&driver.stderr).contains("plugin \"nfs\" not found"));

    let gone = skiff.run(&["volume", "rm", "missing"]);
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(
        text(&gone.stderr),
        "Error response from daemon: get missing: no such volume\n"
    );
    assert_eq!(skiff.ok(&["volume", "rm", "-f", "missing"]), "missing\n");
    assert_eq!(
        skiff.ok(&["volume", "rm", "cache", random]),
        format!("cache\n{random}\n")
    );
    assert!(skiff.volume_names().is_empty());
    assert!(!skiff.data.path().join("volumes").join("cache").exists());
}

#[test]
fn a_named_volume_keeps_data_between_containers_and_is_not_removed_while_used() {
    let skiff = Skiff::new();
    // Made on first use.
    skiff.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "notes:/notes",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /notes/a",
    ]);
    assert_eq!(skiff.volume_names(), vec!["notes"]);
    assert_eq!(
        std::fs::read_to_string(skiff.data_dir("notes").join("a")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        skiff.ok(&["run", "--rm", "-v", "notes:/n:ro", IMAGE, "cat", "/n/a"]),
        "kept\n"
    );
    let ro = skiff.run(&[
        "run",
        "--rm",
        "-v",
        "notes:/n:ro",
        IMAGE,
        "sh",
        "-c",
        "echo x > /n/b",
    ]);
    assert_ne!(ro.status.code(), Some(0));
    assert!(text(&ro.stderr).contains("Read-only file system"));

    // The exited writer still uses it: no removal, not even forced.
    let id = skiff.format("writer", "{{.Id}}");
    for args in [
        &["volume", "rm", "notes"][..],
        &["volume", "rm", "-f", "notes"][..],
    ] {
        let out = skiff.run(args);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            text(&out.stderr),
            format!("Error response from daemon: remove notes: volume is in use - [{id}]\n")
        );
    }
    // Nor by prune, even with -a.
    let pruned = skiff.ok(&["volume", "prune", "-f", "-a"]);
    assert_eq!(pruned, "Total reclaimed space: 0B\n");
    let mounts: serde_json::Value =
        serde_json::from_str(&skiff.format("writer", "{{json .Mounts}}")).unwrap();
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Name"], "notes");
    assert_eq!(mounts[0]["Destination"], "/notes");
    assert_eq!(
        skiff.format("writer", "{{json .HostConfig.Binds}}"),
        r#"["notes:/notes"]"#
    );

    // `rm -v` leaves a named volume.
    skiff.ok(&["rm", "-v", "writer"]);
    assert_eq!(skiff.volume_names(), vec!["notes"]);
    assert_eq!(skiff.ok(&["volume", "rm", "notes"]), "notes\n");

    let bad = skiff.run(&["run", "--rm", "-v", "./rel:/data", IMAGE, "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(text(&bad.stderr).contains("If you intended to pass a host directory"));
    let twice = skiff.run(&[
        "run", "--rm", "-v", "a1:/data", "-v", "/data", IMAGE, "true",
    ]);
    assert_eq!(twice.status.code(), Some(125));
    assert!(text(&twice.stderr).contains("Duplicate mount point: /data"));
    assert!(
        skiff.volume_names().is_empty(),
        "a refused run made no volume"
    );
}

#[test]
fn an_empty_volume_is_filled_from_the_image_on_first_use() {
    let skiff = Skiff::new();
    let listing = skiff.ok(&[
        "run",
        "--rm",
        "-v",
        "tools:/usr/bin",
        IMAGE,
        "ls",
        "/usr/bin",
    ]);
    assert!(listing.lines().any(|l| l == "wget"), "{listing}");
    let link = std::fs::read_link(skiff.data_dir("tools").join("wget")).unwrap();
    assert_eq!(link, std::path::Path::new("/bin/busybox"));
    // The owner and mode of the image's directory come along (/root is 0700).
    skiff.ok(&["run", "--rm", "-v", "home:/root", IMAGE, "true"]);
    let meta = std::fs::metadata(skiff.data_dir("home")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o700);
    // A volume with content is not filled again; nocopy leaves an empty one empty.
    std::fs::remove_file(skiff.data_dir("tools").join("wget")).unwrap();
    let again = skiff.ok(&[
        "run",
        "--rm",
        "-v",
        "tools:/usr/bin",
        IMAGE,
        "ls",
        "/usr/bin",
    ]);
    assert!(!again.lines().any(|l| l == "wget"), "{again}");
    assert_eq!(
        skiff.ok(&[
            "run",
            "--rm",
            "-v",
            "bare:/usr/bin:nocopy",
            IMAGE,
            "ls",
            "/usr/bin"
        ]),
        ""
    );
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_run_rm_and_prune() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "--name",
        "scratcher",
        "-v",
        "/scratch",
        IMAGE,
        "sh",
        "-c",
        "echo x > /scratch/f",
    ]);
    let names = skiff.volume_names();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].len(), 64);
    let labels = skiff.ok(&[
        "volume",
        "inspect",
        "--format",
        "{{json .Labels}}",
        &names[0],
    ]);
    assert_eq!(labels, "{\"com.docker.volume.anonymous\":\"\"}\n");
    assert_eq!(
        skiff.format("scratcher", "{{json .Config.Volumes}}"),
        r#"{"/scratch":{}}"#
    );
    skiff.ok(&["rm", "-v", "scratcher"]);
    assert!(skiff.volume_names().is_empty());

    skiff.ok(&["run", "--rm", "-v", "/scratch", IMAGE, "true"]);
    assert!(skiff.volume_names().is_empty(), "--rm took it along");

    // Prune: anonymous unused volumes by default, every unused one with -a.
    skiff.ok(&["run", "--name", "keeper", "-v", "/kept", IMAGE, "true"]);
    skiff.ok(&[
        "run",
        "--name",
        "leaver",
        "-v",
        "/left",
        IMAGE,
        "sh",
        "-c",
        "echo 12345 > /left/f",
    ]);
    skiff.ok(&["volume", "create", "named"]);
    let left = skiff.format("leaver", "{{range .Mounts}}{{.Name}}{{end}}");
    skiff.ok(&["rm", "leaver"]);
    assert_eq!(skiff.volume_names().len(), 3);
    assert_eq!(
        skiff.ok(&["volume", "prune", "-f"]),
        format!("Deleted Volumes:\n{left}\n\nTotal reclaimed space: 6B\n")
    );
    assert_eq!(
        skiff.ok(&["volume", "prune", "-f", "-a"]),
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    );
    assert_eq!(skiff.volume_names().len(), 1, "keeper's volume stays");
    // Without -f, only a yes prunes.
    let out = skiff.run(&["volume", "prune"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("WARNING! This will remove anonymous local volumes"));
    assert_eq!(skiff.volume_names().len(), 1);
}

#[test]
fn volumes_from_mounts_the_other_containers_volumes_and_binds() {
    let skiff = Skiff::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "from host\n").unwrap();
    let bind = format!("{}:/hostdir", host.path().display());
    skiff.ok(&[
        "run",
        "--name",
        "source",
        "-v",
        "shared:/shared",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        "echo from volume > /shared/v",
    ]);
    assert_eq!(
        skiff.ok(&[
            "run",
            "--rm",
            "--volumes-from",
            "source",
            IMAGE,
            "sh",
            "-c",
            "cat /shared/v /hostdir/h && echo more > /shared/w",
        ]),
        "from volume\nfrom host\n"
    );
    assert!(skiff.data_dir("shared").join("w").exists());
    let ro = skiff.run(&[
        "run",
        "--rm",
        "--volumes-from",
        "source:ro",
        IMAGE,
        "sh",
        "-c",
        "echo x > /shared/x",
    ]);
    assert_ne!(ro.status.code(), Some(0));
    assert!(text(&ro.stderr).contains("Read-only file system"));
    let missing = skiff.run(&["run", "--rm", "--volumes-from", "nope", IMAGE, "true"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(text(&missing.stderr).contains("No such container: nope"));
    let mode = skiff.run(&["run", "--rm", "--volumes-from", "source:zz", IMAGE, "true"]);
    assert_eq!(mode.status.code(), Some(125));
    assert!(text(&mode.stderr).contains("unknown mode"));
}

#[test]
fn commit_leaves_volume_content_out() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "--name",
        "maker",
        "-v",
        "secrets:/secrets",
        "-v",
        "/anon",
        IMAGE,
        "sh",
        "-c",
        "echo s > /secrets/key && echo a > /anon/f && echo k > /kept",
    ]);
    skiff.ok(&["commit", "maker", "skiff.test/novolumes"]);
    assert_eq!(
        skiff.ok(&[
            "run",
            "--rm",
            "skiff.test/novolumes",
            "sh",
            "-c",
            "test ! -e /secrets/key && test ! -e /anon/f && cat /kept",
        ]),
        "k\n"
    );
}

#[test]
fn an_images_volume_paths_get_anonymous_volumes_filled_from_the_image() {
    let skiff = Skiff::new();
    skiff.ok(&[
        "run",
        "--name",
        "seeder",
        IMAGE,
        "sh",
        "-c",
        "mkdir /cache && echo seed > /cache/s",
    ]);
    skiff.ok(&[
        "commit",
        "-c",
        "VOLUME /cache",
        "seeder",
        "skiff.test/withvolume",
    ]);
    skiff.ok(&["rm", "seeder"]);
    skiff.ok(&[
        "run",
        "--name",
        "user",
        "skiff.test/withvolume",
        "sh",
        "-c",
        "echo more >> /cache/s",
    ]);
    let names = skiff.volume_names();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        std::fs::read_to_string(skiff.data_dir(&names[0]).join("s")).unwrap(),
        "seed\nmore\n"
    );
    skiff.ok(&["rm", "-v", "user"]);
    // A mount of the user's own at the path replaces it; --rm removes an anonymous one.
    assert_eq!(
        skiff.ok(&[
            "run",
            "--rm",
            "-v",
            "mine:/cache",
            "skiff.test/withvolume",
            "cat",
            "/cache/s"
        ]),
        "seed\n"
    );
    skiff.ok(&["run", "--rm", "skiff.test/withvolume", "true"]);
    assert_eq!(skiff.volume_names(), vec!["mine"]);
}

#[test]
fn volume_rm_never_removes_a_volume_a_concurrent_run_is_about_to_use() {
    let skiff = Skiff::new();
    let data = skiff.data.path().to_path_buf();
    for round in 0..6 {
        let name = format!("racer{round}");
        skiff.ok(&["volume", "create", "shared"]);
        // Both at once: the run finds the volume and names it in its record while `volume rm`
        // looks for users; whichever goes first, no container may be left without its volume.
        let run = {
            let data = data.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
                    .args([
                        "create",
                        "--name",
                        &name,
                        "-v",
                        "shared:/data",
                        IMAGE,
                        "true",
                    ])
                    .env("SKIFF_DATA_ROOT", &data)
                    .output()
                    .unwrap()
            })
        };
        let rm = skiff.run(&["volume", "rm", "shared"]);
        let run = run.join().unwrap();
        assert!(run.status.success(), "{run:?}");
        let id = skiff.format(&name, "{{.Id}}");
        assert!(
            skiff.volume_names().contains(&"shared".to_string()),
            "round {round}: the container's volume is gone ({rm:?})"
        );
        if !rm.status.success() {
            assert_eq!(
                text(&rm.stderr),
                format!("Error response from daemon: remove shared: volume is in use - [{id}]\n")
            );
        }
        skiff.ok(&["rm", &name]);
        skiff.ok(&["volume", "rm", "shared"]);
    }
}

#[test]
fn volume_rm_waits_for_a_container_being_made_and_then_refuses() {
    let skiff = Skiff::new();
    skiff.ok(&["volume", "create", "shared"]);
    let volumes = skiff_engine::Volumes::open(skiff.data.path()).unwrap();
    // What `create` holds from finding its volumes until its record names them.
    let making = volumes.lock(false).unwrap();
    let rm = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["volume", "rm", "shared"])
        .env("SKIFF_DATA_ROOT", skiff.data.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut rm = KillOnDrop(Some(rm));
    // The kernel lists a blocked flock waiter with "->" in /proc/locks.
    let pid = rm.0.as_ref().unwrap().id();
    skiff_testkit::wait::wait_for(
        "volume rm to wait for the lock",
        std::time::Duration::from_secs(20),
        || {
            let locks = std::fs::read_to_string("/proc/locks").ok()?;
            locks
                .lines()
                .any(|l| {
                    l.contains("-> FLOCK") && l.split_whitespace().nth(5) == Some(&pid.to_string())
                })
                .then_some(())
        },
    )
    .unwrap();
    let id = skiff.ok(&["create", "-v", "shared:/data", IMAGE, "true"]);
    drop(making);
    let out = rm.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        format!(
            "Error response from daemon: remove shared: volume is in use - [{}]\n",
            id.trim()
        )
    );
}

/// A child killed (and reaped) on drop unless taken.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
