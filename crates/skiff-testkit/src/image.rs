//! Fixture images built from Debian's static busybox, as OCI image layouts and docker archives.
//!
//! * `busybox`: one tar+gzip layer holding `/bin/busybox`, a symlink per applet (from
//!   `busybox --list-full`), `/etc/passwd`, `/etc/group` and the usual empty directories; the
//!   config sets a `PATH` and `CMD ["sh"]`.
//! * `layered`: `busybox` plus two layers for layer tests. The first adds `/data/kept`,
//!   `/data/victim` and `/data/old/{a,b}`; the second adds `/data/added`, deletes `/data/victim`
//!   with a whiteout (`.wh.victim`) and replaces `/data/old` with an opaque directory holding only
//!   `c`. [`LAYERED_PRESENT`] and [`LAYERED_ABSENT`] say what a correct unpack shows.
//!
//! Builds are deterministic (fixed timestamps and owners), so the same busybox binary always
//! gives the same digests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::process::run;
use crate::require::require_program;
use crate::{Result, TestkitError};

/// Where Debian's busybox-static installs the binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// The `PATH` in the fixture images' config.
pub const IMAGE_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The tag each fixture layout's single manifest carries (`org.opencontainers.image.ref.name`).
pub const LAYOUT_TAG: &str = "latest";
/// Paths (inside the rootfs) a correct unpack of `layered` shows, with their contents.
pub const LAYERED_PRESENT: &[(&str, &str)] = &[
    ("data/kept", "kept from the middle layer\n"),
    ("data/added", "added by the top layer\n"),
    ("data/old/c", "c lives in the opaque directory\n"),
];
/// Paths a correct unpack of `layered` does not show (deleted by whiteouts).
pub const LAYERED_ABSENT: &[&str] = &["data/victim", "data/old/a", "data/old/b"];

/// Every layer's timestamps: 2024-01-01T00:00:00Z, so builds are reproducible.
const EPOCH: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One layer of a fixture image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// `sha256:...` of the compressed blob.
    pub digest: String,
    /// `sha256:...` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Size of the compressed blob in bytes.
    pub size: u64,
    /// The uncompressed tar, as a docker archive stores it.
    tar: Vec<u8>,
    /// The tar+gzip blob, as the OCI layout stores it.
    compressed: Vec<u8>,
}

/// One fixture image: an OCI image layout on disk plus what a test needs to check it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image's short name (`busybox`, `layered`).
    pub name: String,
    /// The OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
    pub layout: PathBuf,
    /// A docker-archive tarball (`docker save` format) of the same image, tagged
    /// `skiff.test/NAME:latest`.
    pub docker_archive: PathBuf,
    /// `sha256:...` of the manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the config.
    pub config_digest: String,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
}

impl Image {
    /// The reference skopeo and podman use for the layout: `oci:DIR:latest`.
    pub fn oci_reference(&self) -> String {
        format!("oci:{}:{LAYOUT_TAG}", self.layout.display())
    }

    /// Unpacks the image's layers into `rootfs` (created if missing), bottom first, applying
    /// whiteouts and opaque directories: a plain root filesystem for runtime bundles.
    pub fn unpack_into(&self, rootfs: &Path) -> Result<()> {
        std::fs::create_dir_all(rootfs).map_err(TestkitError::io("create", rootfs))?;
        for layer in &self.layers {
            let mut archive = tar::Archive::new(&layer.tar[..]);
            archive.set_preserve_permissions(true);
            let entries = archive
                .entries()
                .map_err(TestkitError::io("read layer of", &self.layout))?;
            for entry in entries {
                let mut entry = entry.map_err(TestkitError::io("read layer of", &self.layout))?;
                let path = entry
                    .path()
                    .map_err(TestkitError::io("read layer of", &self.layout))?
                    .into_owned();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parent = rootfs.join(path.parent().unwrap_or(Path::new("")));
                if name == ".wh..wh..opq" {
                    if let Ok(children) = std::fs::read_dir(&parent) {
                        for child in children.flatten() {
                            let _ = remove_any(&child.path());
                        }
                    }
                } else if let Some(hidden) = name.strip_prefix(".wh.") {
                    let _ = remove_any(&parent.join(hidden));
                } else {
                    entry
                        .unpack_in(rootfs)
                        .map_err(TestkitError::io("unpack into", rootfs))?;
                }
            }
        }
        Ok(())
    }

    /// The tag inside the docker archive: `skiff.test/NAME:latest`.
    pub fn archive_tag(&self) -> String {
        format!("skiff.test/{}:latest", self.name)
    }
}

/// The fixture images, built into a temp dir that is removed on drop.
#[derive(Debug)]
pub struct ImageSet {
    dir: TempDir,
    /// The plain busybox image.
    pub busybox: Image,
    /// busybox plus the whiteout and opaque-directory layers.
    pub layered: Image,
}

impl ImageSet {
    /// Builds both images from the machine's static busybox.
    pub fn build() -> Result<ImageSet> {
        let busybox_bin = require_static_busybox()?;
        let dir = tempfile::Builder::new()
            .prefix("skiff-images-")
            .tempdir()
            .map_err(TestkitError::io("create temp dir", std::env::temp_dir()))?;
        let base = busybox_layer(&busybox_bin)?;
        let busybox = write_image(dir.path(), "busybox", vec![base.clone()])?;
        let layered = write_image(
            dir.path(),
            "layered",
            vec![base, middle_layer()?, top_layer()?],
        )?;
        Ok(ImageSet {
            dir,
            busybox,
            layered,
        })
    }

    /// The directory holding every layout and archive.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// Finds `/bin/busybox` and checks that it is statically linked (a dynamic one cannot run
/// inside an image that has no libc).
pub fn require_static_busybox() -> Result<PathBuf> {
    let path = require_program(BUSYBOX_PATH, "busybox-static")?;
    let bytes = std::fs::read(&path).map_err(TestkitError::io("read", &path))?;
    if elf_has_interpreter(&bytes) {
        return Err(TestkitError::Invalid {
            fixture: "image",
            detail: format!(
                "{} is dynamically linked: install the Debian package `busybox-static` instead of `busybox`",
                path.display()
            ),
        });
    }
    Ok(path)
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read_u16 = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let read_u64 = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| u64::from_le_bytes(b) as usize)
    };
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            == Some(PT_INTERP)
    })
}

/// `sha256:` plus the lower-case hex digest of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Builds one uncompressed layer tar, deterministically.
struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(EPOCH);
        header.set_size(size);
        header
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.append(
            &mut header,
            &format!("{}/", path.trim_end_matches('/')),
            &[][..],
        )
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.append(&mut header, path, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, path, target)
            .map_err(TestkitError::io("append symlink to layer", path))
    }

    fn append(&mut self, header: &mut tar::Header, path: &str, data: &[u8]) -> Result<()> {
        self.builder
            .append_data(header, path, data)
            .map_err(TestkitError::io("append to layer", path))
    }

    fn finish(self) -> Result<Layer> {
        let tar = self
            .builder
            .into_inner()
            .map_err(TestkitError::io("finish layer", "tar"))?;
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&tar)
            .map_err(TestkitError::io("compress layer", "tar"))?;
        let compressed = gz
            .finish()
            .map_err(TestkitError::io("compress layer", "tar"))?;
        Ok(Layer {
            digest: sha256_digest(&compressed),
            diff_id: sha256_digest(&tar),
            size: compressed.len() as u64,
            tar,
            compressed,
        })
    }
}

fn busybox_layer(busybox: &Path) -> Result<Layer> {
    let binary = std::fs::read(busybox).map_err(TestkitError::io("read", busybox))?;
    let listing = run(Command::new(busybox).arg("--list-full"))?;
    let mut applets: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_string())
        .filter(|line| !line.is_empty() && line != "bin/busybox")
        .collect();
    applets.sort();
    applets.dedup();

    let mut tar = TarBuilder::new();
    for dir in [
        "bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin",
        "var",
    ] {
        tar.dir(dir, if dir == "root" { 0o700 } else { 0o755 })?;
    }
    tar.dir("tmp", 0o1777)?;
    tar.dir("var/tmp", 0o1777)?;
    tar.dir("home/user", 0o755)?;
    tar.file("bin/busybox", 0o755, &binary)?;
    for applet in &applets {
        tar.symlink(applet, "/bin/busybox")?;
    }
    tar.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    tar.file(
        "etc/group",
        0o644,
        b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
    )?;
    tar.finish()
}

fn middle_layer() -> Result<Layer> {
    let mut tar = TarBuilder::new();
    tar.dir("data", 0o755)?;
    tar.file("data/kept", 0o644, b"kept from the middle layer\n")?;
    tar.file("data/victim", 0o644, b"deleted by the top layer\n")?;
    tar.dir("data/old", 0o755)?;
    tar.file("data/old/a", 0o644, b"a\n")?;
    tar.file("data/old/b", 0o644, b"b\n")?;
    tar.finish()
}

fn top_layer() -> Result<Layer> {
    let mut tar = TarBuilder::new();
    tar.dir("data", 0o755)?;
    tar.file("data/added", 0o644, b"added by the top layer\n")?;
    tar.file("data/.wh.victim", 0o644, b"")?;
    tar.dir("data/old", 0o755)?;
    tar.file("data/old/.wh..wh..opq", 0o644, b"")?;
    tar.file("data/old/c", 0o644, b"c lives in the opaque directory\n")?;
    tar.finish()
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(TestkitError::io("create dir", parent))?;
    }
    std::fs::write(path, data).map_err(TestkitError::io("write", path))
}

fn to_json(value: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail: every key is a string.
    serde_json::to_vec(value).unwrap_or_default()
}

fn write_image(root: &Path, name: &str, layers: Vec<Layer>) -> Result<Image> {
    let layout = root.join(format!("{name}-oci"));
    let blobs = layout.join("blobs").join("sha256");
    let history: Vec<Value> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"created": CREATED, "created_by": format!("skiff-testkit {name} layer {i}")}))
        .collect();
    let config = json!({
        "created": CREATED,
        "architecture": oci_arch(),
        "os": "linux",
        "config": {"Env": [IMAGE_PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": history,
    });
    let config_bytes = to_json(&config);
    let config_digest = sha256_digest(&config_bytes);
    write_file(&blobs.join(hex_of(&config_digest)), &config_bytes)?;
    for layer in &layers {
        write_file(&blobs.join(hex_of(&layer.digest)), &layer.compressed)?;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": MEDIA_LAYER_GZIP, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let manifest_bytes = to_json(&manifest);
    let manifest_digest = sha256_digest(&manifest_bytes);
    write_file(&blobs.join(hex_of(&manifest_digest)), &manifest_bytes)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": LAYOUT_TAG},
            "platform": {"architecture": oci_arch(), "os": "linux"},
        }],
    });
    write_file(&layout.join("index.json"), &to_json(&index))?;
    write_file(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;

    let docker_archive = root.join(format!("{name}-docker.tar"));
    write_docker_archive(
        &docker_archive,
        name,
        &config_bytes,
        &config_digest,
        &layers,
    )?;
    Ok(Image {
        name: name.to_string(),
        layout,
        docker_archive,
        manifest_digest,
        config_digest,
        layers,
    })
}

/// Writes the `docker save` format: `manifest.json`, `repositories`, the config as
/// `<hex>.json` and each layer as `<diff hex>/layer.tar` (uncompressed).
fn write_docker_archive(
    path: &Path,
    name: &str,
    config: &[u8],
    config_digest: &str,
    layers: &[Layer],
) -> Result<()> {
    let mut tar = TarBuilder::new();
    let config_name = format!("{}.json", hex_of(config_digest));
    tar.file(&config_name, 0o644, config)?;
    let mut layer_paths = Vec::new();
    for layer in layers {
        let dir = hex_of(&layer.diff_id).to_string();
        tar.dir(&dir, 0o755)?;
        tar.file(&format!("{dir}/VERSION"), 0o644, b"1.0")?;
        tar.file(&format!("{dir}/layer.tar"), 0o644, &layer.tar)?;
        layer_paths.push(format!("{dir}/layer.tar"));
    }
    let repo = format!("skiff.test/{name}");
    let manifest = json!([{"Config": config_name, "RepoTags": [format!("{repo}:latest")], "Layers": layer_paths}]);
    tar.file("manifest.json", 0o644, &to_json(&manifest))?;
    let top = layers
        .last()
        .map(|l| hex_of(&l.diff_id).to_string())
        .unwrap_or_default();
    tar.file(
        "repositories",
        0o644,
        &to_json(&json!({repo: {"latest": top}})),
    )?;
    let bytes = tar
        .builder
        .into_inner()
        .map_err(TestkitError::io("finish archive", path))?;
    write_file(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_in_hex() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn elf_interpreter_detection_reads_program_headers() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(
            elf_has_interpreter(&sh),
            "/bin/sh on Debian is dynamically linked"
        );
        assert!(!elf_has_interpreter(b"not an elf"));
    }
}
