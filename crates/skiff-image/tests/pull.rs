//! Pulls from a real registry (Debian's docker-registry on loopback, plain HTTP) in each
//! authentication flavour, the 3-layer image through a real overlay mount (root), and the
//! failures users meet: unknown tag, unreachable registry, wrong credentials, tampered blob.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use skiff_image::registry::Credentials;
use skiff_image::{
    ImageError, ImageStore, PullEvent, PullEvents, PullOptions, Reference, RegistryError,
};
use skiff_testkit::image::{ImageSet, LAYERED_ABSENT, LAYERED_PRESENT};
use skiff_testkit::registry::{Registry, RegistryAuth};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn pull(
    store: &ImageStore,
    reference: &str,
    options: &PullOptions,
) -> (Result<skiff_image::ImageRecord, ImageError>, Vec<PullEvent>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events: PullEvents = {
        let seen = Arc::clone(&seen);
        Arc::new(move |event| seen.lock().unwrap().push(event))
    };
    let reference = Reference::parse(reference).unwrap();
    let result = runtime().block_on(store.pull(&reference, options, &events));
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

fn with_credentials(user: &str, password: &str) -> PullOptions {
    let mut options = PullOptions::default();
    options.registry.credentials = Some(Credentials {
        username: user.to_string(),
        password: password.to_string(),
    });
    options
}

/// Options that never read the host's docker config.
fn anonymous() -> PullOptions {
    let mut options = PullOptions::default();
    options.registry.docker_config = Some("/nonexistent/config.json".into());
    options
}

fn assert_nothing_recorded(store: &ImageStore) {
    assert!(store.list().unwrap().is_empty(), "no image may be recorded");
    assert!(
        store.snapshots().list().unwrap().is_empty(),
        "no snapshot may appear"
    );
    let ingest = std::fs::read_dir(store.content().ingest_dir())
        .unwrap()
        .count();
    assert_eq!(ingest, 0, "no temp file may be left");
}

#[test]
fn an_open_registry_serves_busybox_verified_and_unpacked() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let (record, events) = pull(
        &store,
        &registry.image_reference("busybox:latest"),
        &anonymous(),
    );
    let record = record.unwrap();
    assert_eq!(record.name, format!("{}/busybox:latest", registry.addr()));
    assert_eq!(
        record.manifest.digest.as_str(),
        images.busybox.manifest_digest
    );
    assert_eq!(record.config.as_str(), images.busybox.config_digest);
    let image = store.resolve(&registry.image_reference("busybox")).unwrap();
    assert_eq!(
        image.config.config.as_ref().unwrap().cmd,
        Some(vec!["sh".to_string()])
    );
    let base = store.snapshots().fs_path(&image.chain[0]);
    assert!(base.join("bin/busybox").is_file());
    assert!(
        matches!(events.first(), Some(PullEvent::Resolved { .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PullEvent::LayerDone { .. })),
        "{events:?}"
    );
    // Pulling again finds everything in place.
    let (again, events) = pull(
        &store,
        &registry.image_reference("busybox:latest"),
        &anonymous(),
    );
    assert_eq!(again.unwrap().manifest, record.manifest);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PullEvent::LayerExists { .. })),
        "{events:?}"
    );
}

#[test]
fn the_layered_image_shows_the_right_files_through_a_real_overlay_mount() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let (busybox, _) = pull(
        &store,
        &registry.image_reference("busybox:latest"),
        &anonymous(),
    );
    busybox.unwrap();
    let (layered, events) = pull(
        &store,
        &registry.image_reference("layered:latest"),
        &anonymous(),
    );
    layered.unwrap();
    let shared: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, PullEvent::LayerExists { .. }))
        .collect();
    assert_eq!(shared.len(), 1, "the busybox layer is shared: {events:?}");

    let image = store.resolve(&registry.image_reference("layered")).unwrap();
    assert_eq!(image.chain.len(), 3);
    let diff_ids: Vec<String> = images
        .layered
        .layers
        .iter()
        .map(|l| l.diff_id.clone())
        .collect();
    let ours: Vec<String> = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(ours, diff_ids);
    let container = data.path().join("containers").join("c1");
    let mounts = store.prepare_rootfs(&image, &container).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].kind, "overlay");
    let lowerdir = mounts[0].options[0].trim_start_matches("lowerdir=");
    let top_first: Vec<String> = image
        .chain
        .iter()
        .rev()
        .map(|c| store.snapshots().fs_path(c).display().to_string())
        .collect();
    assert_eq!(lowerdir, top_first.join(":"));

    let rootfs = container.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let options = mounts[0].options.join(",");
    skiff_sys::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        skiff_sys::mount::MountFlags::empty(),
        Some(&options),
    )
    .unwrap();
    let check = std::panic::catch_unwind(|| {
        for (path, content) in LAYERED_PRESENT {
            assert_eq!(
                std::fs::read_to_string(rootfs.join(path)).unwrap(),
                *content,
                "{path}"
            );
        }
        for path in LAYERED_ABSENT {
            assert!(
                rootfs.join(path).symlink_metadata().is_err(),
                "{path} must be hidden"
            );
        }
        assert!(rootfs.join("bin/busybox").is_file());
        std::fs::write(rootfs.join("data/new"), "written by the container").unwrap();
    });
    skiff_sys::mount::unmount_detach(&rootfs).unwrap();
    check.unwrap();
    assert!(
        container.join("upper/data/new").is_file(),
        "writes land in the upper dir"
    );
}

#[test]
fn a_basic_auth_registry_needs_the_right_credentials() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Basic, &images).unwrap();
    let (user, password) = registry.credentials().unwrap();
    let reference = registry.image_reference("busybox:latest");
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();

    let (result, _) = pull(&store, &reference, &anonymous());
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("authentication required"), "{err}");
    let (result, _) = pull(&store, &reference, &with_credentials(user, "wrong"));
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("wrong user name or password"),
        "{err}"
    );
    assert_nothing_recorded(&store);

    // Credentials from a docker-style config.json.
    let config = data.path().join("docker-config.json");
    skiff_image::registry::auth::store_credentials(
        &config,
        &registry.addr(),
        &Credentials {
            username: user.to_string(),
            password: password.to_string(),
        },
    )
    .unwrap();
    let mut options = PullOptions::default();
    options.registry.docker_config = Some(config);
    let (result, _) = pull(&store, &reference, &options);
    assert_eq!(
        result.unwrap().manifest.digest.as_str(),
        images.busybox.manifest_digest
    );
}

#[test]
fn a_token_registry_allows_anonymous_pulls_and_refuses_wrong_credentials() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Token, &images).unwrap();
    let (user, password) = registry.credentials().unwrap();
    let reference = registry.image_reference("layered:latest");
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();

    let (result, _) = pull(&store, &reference, &with_credentials(user, "wrong"));
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("wrong user name or password"),
        "{err}"
    );
    assert_nothing_recorded(&store);

    let (result, _) = pull(&store, &reference, &anonymous());
    assert_eq!(
        result.unwrap().manifest.digest.as_str(),
        images.layered.manifest_digest
    );
    let (result, _) = pull(
        &store,
        &registry.image_reference("busybox"),
        &with_credentials(user, password),
    );
    assert_eq!(
        result.unwrap().manifest.digest.as_str(),
        images.busybox.manifest_digest
    );
}

#[test]
fn unknown_tags_and_unreachable_registries_fail_in_one_line() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let (result, _) = pull(
        &store,
        &registry.image_reference("busybox:nope"),
        &anonymous(),
    );
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::ManifestUnknown { .. })
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "manifest unknown");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (result, _) = pull(&store, &format!("127.0.0.1:{port}/busybox"), &anonymous());
    let err = result.unwrap_err();
    assert!(
        matches!(err, ImageError::Registry(RegistryError::Unreachable { .. })),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
    assert_nothing_recorded(&store);
}

/// The registry's copy of a blob (distribution's filesystem driver layout).
fn registry_blob(registry: &Registry, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry
        .dir()
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn corrupt(path: &Path) {
    let mut data = std::fs::read(path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_tampered_blob_is_refused_and_leaves_nothing_behind() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
    let top = images.layered.layers.last().unwrap();
    let blob = registry_blob(&registry, &top.digest);
    assert!(blob.is_file(), "{} missing", blob.display());
    corrupt(&blob);
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let (result, _) = pull(
        &store,
        &registry.image_reference("layered:latest"),
        &anonymous(),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&top.digest), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert!(
        !store
            .content()
            .contains(&skiff_image::Digest::parse(&top.digest).unwrap())
    );
    assert_eq!(
        std::fs::read_dir(store.content().ingest_dir())
            .unwrap()
            .count(),
        0
    );
    // The layer was unpacked while it downloaded: its half-made snapshot is gone too.
    let unfinished: Vec<_> = std::fs::read_dir(data.path().join("images/snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(unfinished.is_empty(), "{unfinished:?}");
    assert!(
        store.snapshots().list().unwrap().len() < images.layered.layers.len(),
        "the tampered layer's snapshot may not be committed"
    );
}
