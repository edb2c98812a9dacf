//! `skiff commit` as users run it (root; CI runs as root): a container's added, deleted and
//! replaced files become a new layer that a container of the committed image sees; volumes
//! are left out; `-m`, `-a` and `-c` land in the config and history; the image exports and
//! `skopeo` reads it; a running container is paused for the commit and keeps running. Every
//! test removes its containers (and so their mounts and cgroups) on drop, also when it fails.
#![allow(clippy::unwrap_used)]

mod engine_support;

use std::process::Command;
use std::time::Duration;

use engine_support::{IMAGE, Skiff, text};
use skiff_testkit::wait::wait_for;

impl Skiff {
    /// Commits and checks the output is one `sha256:<64 hex>` line; returns the id.
    fn commit(&self, args: &[&str]) -> String {
        let mut all = vec!["commit"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        let id = out.trim_end().to_string();
        assert!(
            id.len() == 71
                && id.starts_with("sha256:")
                && id[7..].bytes().all(|b| b.is_ascii_hexdigit()),
            "commit printed {out:?}"
        );
        id
    }

    /// The entries of the top layer of `image`, as stored (GNU tar's listing: directories
    /// end in `/`).
    fn top_layer_entries(&self, image: &str) -> Vec<String> {
        let store = skiff_image::ImageStore::open(self.data.path()).unwrap();
        let resolved = store.resolve(image).unwrap();
        let layer = resolved.manifest.layers.last().unwrap();
        let out = Command::new("tar")
            .arg("-tzf")
            .arg(store.content().path(&layer.digest))
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", text(&out.stderr));
        text(&out.stdout).lines().map(str::to_string).collect()
    }
}

#[test]
fn a_committed_image_has_the_containers_changes_but_not_its_volumes() {
    let skiff = Skiff::new();
    // A base with a directory the second container replaces.
    skiff.ok(&[
        "run",
        "--name",
        "base",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /opt/app && echo a > /opt/app/a && echo b > /opt/app/b",
    ]);
    skiff.commit(&["base", "skiff.test/step1:v1"]);

    let volume = tempfile::tempdir().unwrap();
    let bind = format!("{}:/vol", volume.path().display());
    skiff.ok(&[
        "run",
        "--name",
        "changer",
        "-v",
        &bind,
        "skiff.test/step1:v1",
        "sh",
        "-c",
        "echo added > /added.txt && rm /etc/group && rm -rf /opt/app && mkdir /opt/app \
         && echo new > /opt/app/c && echo secret > /vol/secret",
    ]);
    assert_eq!(
        std::fs::read_to_string(volume.path().join("secret")).unwrap(),
        "secret\n"
    );
    let id = skiff.commit(&[
        "-m",
        "replace the app",
        "-a",
        "Jane Doe <jane@example.com>",
        "-c",
        "ENV GREETING=hello",
        "-c",
        r#"CMD ["cat", "/added.txt"]"#,
        "--change=WORKDIR /opt",
        "changer",
        "skiff.test/committed",
    ]);

    // The layer: whiteout, opaque marker first in its directory, no volume.
    let entries = skiff.top_layer_entries("skiff.test/committed");
    assert!(
        entries.contains(&"etc/.wh.group".to_string()),
        "{entries:?}"
    );
    let opq = entries
        .iter()
        .position(|e| e == "opt/app/.wh..wh..opq")
        .unwrap_or_else(|| panic!("no opaque marker in {entries:?}"));
    assert_eq!(entries[opq - 1], "opt/app/", "{entries:?}");
    assert_eq!(entries[opq + 1], "opt/app/c", "{entries:?}");
    assert!(
        !entries
            .iter()
            .any(|e| e.starts_with("vol") || e.starts_with("etc/host") || e.starts_with("proc")),
        "{entries:?}"
    );

    // A container of the committed image.
    assert_eq!(
        skiff.ok(&["run", "--rm", "skiff.test/committed"]),
        "added\n",
        "the CMD change is the default command"
    );
    let seen = skiff.ok(&[
        "run",
        "--rm",
        &id,
        "sh",
        "-c",
        "test ! -e /etc/group && test -e /etc/passwd && ls /opt/app && test ! -e /vol \
         && echo $GREETING && pwd",
    ]);
    assert_eq!(seen, "c\nhello\n/opt\n");

    // inspect: three layers, the history entry, author and comment.
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["image", "inspect", "skiff.test/committed"])).unwrap();
    let image = &inspect[0];
    assert_eq!(image["Id"], id.as_str());
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(image["Author"], "Jane Doe <jane@example.com>");
    assert_eq!(image["Comment"], "replace the app");
    assert_eq!(image["Config"]["WorkingDir"], "/opt");
    assert!(
        image["Config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hello".into())
    );
    let history = image["History"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["comment"], "replace the app");
    assert_eq!(last["author"], "Jane Doe <jane@example.com>");
    assert!(
        last["created_by"]
            .as_str()
            .unwrap()
            .starts_with("sh -c echo added"),
        "{last}"
    );
    assert_eq!(
        image["RepoTags"],
        serde_json::json!(["skiff.test/committed:latest"])
    );

    // Export as an OCI archive and as a docker archive; skopeo reads both.
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("committed.tar");
    let docker = out.path().join("committed-docker.tar");
    skiff.ok(&[
        "image",
        "export",
        "-o",
        oci.to_str().unwrap(),
        "skiff.test/committed",
    ]);
    skiff.ok(&[
        "save",
        "-o",
        docker.to_str().unwrap(),
        "skiff.test/committed",
    ]);
    for source in [
        format!("oci-archive:{}", oci.display()),
        format!("docker-archive:{}", docker.display()),
    ] {
        let out = Command::new("skopeo")
            .args(["inspect", "--config", &source])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {source}: {}",
            text(&out.stderr)
        );
        let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
        assert_eq!(
            config["history"].as_array().unwrap().last().unwrap()["comment"],
            "replace the app"
        );
    }

    // A commit without a name makes a dangling image, found by its id.
    let dangling = skiff.commit(&["base"]);
    let listed = skiff.ok(&["images"]);
    assert!(listed.contains("<none>"), "{listed}");
    skiff.ok(&["image", "inspect", &dangling]);
    skiff.ok(&["rmi", &dangling]);
}

#[test]
fn a_running_container_is_paused_for_the_commit_and_keeps_running() {
    let skiff = Skiff::new();
    let id = skiff.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        IMAGE,
        "sh",
        "-c",
        "echo live > /live.txt && sleep 1000",
    ]);
    let upper = skiff
        .data
        .path()
        .join("containers")
        .join(id.trim())
        .join("upper");
    wait_for("the container to write", Duration::from_secs(10), || {
        upper.join("live.txt").exists().then_some(())
    })
    .unwrap();
    let out = skiff.run(&["commit", "live", "skiff.test/live"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "paused without a warning");
    assert_eq!(
        skiff
            .ok(&["inspect", "--format", "{{.State.Status}}", "live"])
            .trim(),
        "running"
    );
    assert_eq!(
        skiff.ok(&["run", "--rm", "skiff.test/live", "cat", "/live.txt"]),
        "live\n"
    );
    // The commit kept the container's command: the new image's CMD is the container's.
    let inspect: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["image", "inspect", "skiff.test/live"])).unwrap();
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "echo live > /live.txt && sleep 1000"])
    );
}

#[test]
fn commit_errors_name_what_is_wrong() {
    let skiff = Skiff::new();
    let out = skiff.run(&["commit", "nosuch", "skiff.test/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No such container: nosuch"));
    skiff.ok(&["run", "--name", "c", IMAGE, "true"]);
    let out = skiff.run(&["commit", "-c", "RUN echo", "c", "skiff.test/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("RUN is not supported"),
        "{}",
        text(&out.stderr)
    );
}
