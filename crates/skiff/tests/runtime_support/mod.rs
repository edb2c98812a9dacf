//! Shared by the runtime tests: OCI bundles made from the test kit's busybox image and the
//! runtime's command line, with cleanup on drop.

#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use skiff_testkit::image::ImageSet;

pub fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// A bundle (busybox rootfs + config.json), a private runtime root, and the ids it created;
/// every container is force-deleted on drop, also when the test panics.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub root: tempfile::TempDir,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Bundle {
    pub fn new(args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        let images = ImageSet::build().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        images
            .busybox
            .unpack_into(&dir.path().join("rootfs"))
            .unwrap_or_else(|e| panic!("{e}"));
        let root = tempfile::tempdir().unwrap();
        let bundle = Bundle {
            dir,
            root,
            ids: Default::default(),
        };
        let out = bundle.runtime(&["spec", "--bundle", bundle.path().to_str().unwrap()]);
        assert!(out.status.success(), "spec: {}", text(&out.stderr));
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
        config["process"]["args"] = json!(args);
        edit(&mut config);
        std::fs::write(bundle.config_path(), config.to_string()).unwrap();
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub fn runtime(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(skiff());
        cmd.arg("runtime")
            .arg("--root")
            .arg(self.root.path())
            .args(args);
        cmd.output().expect("skiff runs")
    }

    /// Runs a runtime command whose container outlives it (`create`, `run --detach`): the
    /// container inherits stdio, so it gets files rather than the test's pipes (which would
    /// keep `output()` waiting until the container exits). Returns success and stderr.
    pub fn runtime_detached(&self, args: &[&str]) -> (bool, String) {
        let stderr_path = self
            .path()
            .join(format!("stderr-{}", self.ids.borrow().len()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let status = Command::new(skiff())
            .arg("runtime")
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .status()
            .expect("skiff runs");
        (
            status.success(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        )
    }

    /// A unique id for this test process, remembered for cleanup.
    pub fn id(&self, name: &str) -> String {
        let id = format!("{name}-{}", std::process::id());
        self.ids.borrow_mut().push(id.clone());
        id
    }

    pub fn run(&self, name: &str) -> Output {
        let id = self.id(name);
        self.runtime(&["run", "--bundle", self.path().to_str().unwrap(), &id])
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.runtime(&["delete", "--force", id]);
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn status_of(bundle: &Bundle, id: &str) -> String {
    let out = bundle.runtime(&["state", id]);
    assert!(out.status.success(), "state: {}", text(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    state["status"].as_str().unwrap().to_string()
}
