//! Air-gapped transfer: the testkit's OCI layouts and docker archives import; exports read
//! back in skopeo and import again with the same digests; garbage collection removes only what
//! no image refers to.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use skiff_image::archive::{ExportFormat, ImportOptions};
use skiff_image::{Digest, ImageError, ImageStore, Reference};
use skiff_testkit::image::{ImageSet, LAYERED_PRESENT};

fn named(name: &str) -> ImportOptions {
    ImportOptions {
        name: Some(Reference::parse(name).unwrap()),
        ..ImportOptions::default()
    }
}

fn skopeo_inspect(transport_ref: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", transport_ref])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {transport_ref}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn oci_layouts_import_with_a_name_and_keep_their_digests() {
    let images = ImageSet::build().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let err = store
        .import_path(&images.layered.layout, &ImportOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("--name"), "{err}");
    let records = store
        .import_path(&images.layered.layout, &named("layered:v1"))
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, "docker.io/library/layered:v1");
    assert_eq!(
        records[0].manifest.digest.as_str(),
        images.layered.manifest_digest
    );
    let image = store.resolve("layered:v1").unwrap();
    let top = store.snapshots().fs_path(&image.chain[2]);
    assert!(top.join("data/added").is_file());
    let middle = store.snapshots().fs_path(&image.chain[1]);
    assert_eq!(
        std::fs::read_to_string(middle.join(LAYERED_PRESENT[0].0)).unwrap(),
        LAYERED_PRESENT[0].1
    );
}

#[test]
fn docker_archives_import_under_their_repo_tags() {
    let images = ImageSet::build().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let records = store
        .import_path(&images.busybox.docker_archive, &ImportOptions::default())
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].name,
        format!(
            "{}",
            Reference::parse(&images.busybox.archive_tag()).unwrap()
        )
    );
    assert_eq!(
        records[0].config.as_str(),
        images.busybox.config_digest,
        "the image id is the config digest"
    );
    let image = store.resolve(&images.busybox.archive_tag()).unwrap();
    assert!(
        store
            .snapshots()
            .fs_path(&image.chain[0])
            .join("bin/busybox")
            .is_file()
    );
    // The same layers from the OCI layout share the snapshot.
    store
        .import_path(&images.busybox.layout, &named("busybox:oci"))
        .unwrap();
    assert_eq!(store.snapshots().list().unwrap().len(), 1);
}

#[test]
fn exports_read_back_in_skopeo_and_round_trip() {
    let images = ImageSet::build().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    store
        .import_path(&images.layered.layout, &named("layered:latest"))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let names = vec!["layered".to_string()];

    let oci_tar = out.path().join("layered-oci.tar");
    store
        .export(&names, ExportFormat::OciArchive, &oci_tar)
        .unwrap();
    let inspected = skopeo_inspect(&format!("oci-archive:{}:latest", oci_tar.display()));
    assert_eq!(inspected["Digest"], images.layered.manifest_digest);
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 3);

    let oci_dir = out.path().join("layered-oci");
    store
        .export(&names, ExportFormat::OciDir, &oci_dir)
        .unwrap();
    let inspected = skopeo_inspect(&format!("oci:{}:latest", oci_dir.display()));
    assert_eq!(inspected["Digest"], images.layered.manifest_digest);

    let docker_tar = out.path().join("layered-docker.tar");
    store
        .export(&names, ExportFormat::DockerArchive, &docker_tar)
        .unwrap();
    let inspected = skopeo_inspect(&format!("docker-archive:{}", docker_tar.display()));
    let diff_ids: Vec<String> = images
        .layered
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    let layers: Vec<String> = inspected["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        layers, diff_ids,
        "docker archives carry uncompressed layers"
    );

    // Each export imports into a fresh store as the same image.
    for (path, options) in [
        (&oci_tar, ImportOptions::default()),
        (&oci_dir, ImportOptions::default()),
        (&docker_tar, ImportOptions::default()),
    ] {
        let other = tempfile::tempdir().unwrap();
        let fresh = ImageStore::open(other.path()).unwrap();
        let records = fresh.import_path(path, &options).unwrap();
        assert_eq!(
            records[0].name,
            "docker.io/library/layered:latest",
            "{}",
            path.display()
        );
        assert_eq!(records[0].config.as_str(), images.layered.config_digest);
        assert_eq!(fresh.snapshots().list().unwrap().len(), 3);
    }
}

#[test]
fn a_corrupted_layout_blob_is_refused() {
    let images = ImageSet::build().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let layout = copy.path().join("layout");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&images.busybox.layout)
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let layer = layout.join("blobs/sha256").join(
        images.busybox.layers[0]
            .digest
            .trim_start_matches("sha256:"),
    );
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let err = store.import_path(&layout, &named("busybox")).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert!(store.snapshots().list().unwrap().is_empty());
}

#[test]
fn prune_removes_only_what_no_image_refers_to() {
    let images = ImageSet::build().unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    store
        .import_path(&images.busybox.layout, &named("busybox"))
        .unwrap();
    store
        .import_path(&images.layered.layout, &named("layered"))
        .unwrap();
    let stray = store.content().write(b"nobody refers to me", None).unwrap();
    assert!(store.prune(&[]).unwrap().blobs == vec![stray.clone()]);
    let before = store.content().list().unwrap().len();

    store.untag("layered").unwrap();
    let report = store.prune(&[]).unwrap();
    // layered's manifest, config and its two own layers go; busybox's layer stays.
    assert_eq!(report.blobs.len(), 4, "{report:?}");
    assert_eq!(report.snapshots.len(), 2, "{report:?}");
    assert_eq!(store.content().list().unwrap().len(), before - 4);
    let busybox = store.resolve("busybox").unwrap();
    assert_eq!(store.snapshots().list().unwrap(), busybox.chain);
    assert!(
        store
            .content()
            .contains(&Digest::parse(&images.busybox.layers[0].digest).unwrap())
    );

    // Snapshots a container still uses survive when passed as kept.
    store.untag("busybox").unwrap();
    let report = store.prune(&busybox.chain).unwrap();
    assert!(report.snapshots.is_empty());
    assert!(store.content().list().unwrap().is_empty());
    store.prune(&[]).unwrap();
    assert!(store.snapshots().list().unwrap().is_empty());
}
