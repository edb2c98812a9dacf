//! Shared by the engine's tests: a private data root with the test kit's busybox image
//! imported, the `skiff` binary run against it, and every container removed on drop (also
//! when the test fails).

#![allow(dead_code)] // each test binary uses part of it

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use skiff_testkit::image::ImageSet;
use skiff_testkit::wait::wait_for;

pub const IMAGE: &str = "skiff.test/busybox:latest";

pub struct Skiff {
    pub data: tempfile::TempDir,
    _images: ImageSet,
}

impl Skiff {
    pub fn new() -> Skiff {
        let images = ImageSet::build().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = skiff_image::ImageStore::open(data.path()).unwrap();
        store
            .import_path(&images.busybox.docker_archive, &Default::default())
            .unwrap();
        Skiff {
            data,
            _images: images,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .env("SKIFF_DATA_ROOT", self.data.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed ({:?}): {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn format(&self, container: &str, template: &str) -> String {
        self.ok(&["inspect", "--format", template, container])
            .trim_end()
            .to_string()
    }

    /// Waits until the container's monitor is gone and its status is `exited`.
    pub fn wait_exited(&self, container: &str) {
        let engine = skiff_engine::Engine::open(self.data.path()).unwrap();
        wait_for("the container to exit", Duration::from_secs(30), || {
            let c = engine.find(container).ok()?;
            (c.status() == skiff_engine::Status::Exited && !c.state.shim_alive()).then_some(())
        })
        .unwrap();
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        if let Ok(engine) = skiff_engine::Engine::open(self.data.path()) {
            for container in engine.list().unwrap_or_default() {
                let _ = engine.remove(&container, true);
            }
        }
        // The containers' /proc server of this data root, and its mount.
        let _ = skiff_procfs::stop(self.data.path(), Duration::from_secs(10));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
