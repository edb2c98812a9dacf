//! The fixture images are real: skopeo reads both formats, umoci unpacks the layouts with
//! whiteouts applied, and busybox runs inside the unpacked root filesystem.

use std::path::Path;
use std::process::Command;

use skiff_testkit::image::{ImageSet, LAYERED_ABSENT, LAYERED_PRESENT};
use skiff_testkit::process::run;
use skiff_testkit::require::require_program;

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let skopeo = require_program("skopeo", "skopeo").unwrap_or_else(|e| panic!("{e}"));
    let out =
        run(Command::new(skopeo).args(["inspect", reference])).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&out.stdout).expect("skopeo inspect prints JSON")
}

fn umoci_unpack(layout: &Path, into: &Path) {
    let umoci = require_program("umoci", "umoci").unwrap_or_else(|e| panic!("{e}"));
    let image = format!("{}:latest", layout.display());
    run(Command::new(umoci)
        .args(["unpack", "--image", &image])
        .arg(into))
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_busybox_layout_is_a_valid_oci_image_that_runs_sh() {
    let images = ImageSet::build().unwrap();
    let info = skopeo_inspect(&images.busybox.oci_reference());
    assert_eq!(info["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(info["Layers"][0], images.busybox.layers[0].digest.as_str());
    assert!(
        info["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("PATH="))
    );

    let bundle = tempfile::tempdir().unwrap();
    let bundle = bundle.path().join("bundle");
    umoci_unpack(&images.busybox.layout, &bundle);
    let rootfs = bundle.join("rootfs");
    for path in [
        "bin/busybox",
        "bin/sh",
        "bin/ls",
        "etc/passwd",
        "etc/group",
        "tmp",
        "proc",
        "sys",
        "dev",
    ] {
        assert!(
            rootfs.join(path).symlink_metadata().is_ok(),
            "{path} missing from the unpacked image"
        );
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["args"][0], "sh");

    // chroot needs root, which every test here has (CI runs as root).
    let out = run(Command::new("chroot").arg(&rootfs).args([
        "/bin/sh",
        "-c",
        "echo hello from $(id -un)",
    ]))
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from root"
    );
}

#[test]
fn the_layered_image_applies_whiteouts_and_opaque_directories() {
    let images = ImageSet::build().unwrap();
    assert_eq!(images.layered.layers.len(), 3);
    assert_eq!(
        images.layered.layers[0].diff_id, images.busybox.layers[0].diff_id,
        "the base layer is shared"
    );
    let bundle = tempfile::tempdir().unwrap();
    let bundle = bundle.path().join("bundle");
    umoci_unpack(&images.layered.layout, &bundle);
    let rootfs = bundle.join("rootfs");
    for (path, content) in LAYERED_PRESENT {
        assert_eq!(
            std::fs::read_to_string(rootfs.join(path)).unwrap(),
            *content,
            "{path}"
        );
    }
    for path in LAYERED_ABSENT {
        assert!(
            !rootfs.join(path).exists(),
            "{path} should be deleted by a whiteout"
        );
    }
    assert!(
        !rootfs.join("data/.wh.victim").exists(),
        "whiteout markers are not files of the image"
    );
}

#[test]
fn docker_archives_hold_the_same_image() {
    let images = ImageSet::build().unwrap();
    for image in [&images.busybox, &images.layered] {
        let reference = format!("docker-archive:{}", image.docker_archive.display());
        let info = skopeo_inspect(&reference);
        assert_eq!(
            info["Layers"].as_array().unwrap().len(),
            image.layers.len(),
            "{}",
            image.name
        );
        let tags = {
            let file = std::fs::File::open(&image.docker_archive).unwrap();
            let mut archive = tar::Archive::new(file);
            let mut manifest = String::new();
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                if entry.path().unwrap().to_str() == Some("manifest.json") {
                    std::io::Read::read_to_string(&mut entry, &mut manifest).unwrap();
                }
            }
            let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
            manifest[0]["RepoTags"].clone()
        };
        assert_eq!(tags[0], image.archive_tag().as_str());
    }
}

#[test]
fn builds_are_reproducible_and_removed_on_drop() {
    let first = ImageSet::build().unwrap();
    let second = ImageSet::build().unwrap();
    assert_eq!(
        first.busybox.manifest_digest,
        second.busybox.manifest_digest
    );
    assert_eq!(
        first.layered.manifest_digest,
        second.layered.manifest_digest
    );
    let dir = first.dir().to_path_buf();
    assert!(dir.exists());
    drop(first);
    assert!(!dir.exists(), "the image dir outlived its fixture");
}

#[test]
fn unpacking_applies_the_same_whiteouts_as_umoci() {
    let images = ImageSet::build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    images.layered.unpack_into(dir.path()).unwrap();
    for (path, content) in LAYERED_PRESENT {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(path)).unwrap(),
            *content,
            "{path}"
        );
    }
    for path in LAYERED_ABSENT {
        assert!(
            !dir.path().join(path).exists(),
            "{path} should be deleted by a whiteout"
        );
    }
    assert!(dir.path().join("bin/busybox").is_file());
    assert!(
        dir.path()
            .join("bin/sh")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
