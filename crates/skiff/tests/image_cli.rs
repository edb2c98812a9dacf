//! The image commands as users run them: `pull` (against a real registry), `images`,
//! `image inspect`, `save`/`load`, `image export`/`import`, `rmi`, `image prune`, and the
//! one-line errors of a bad pull.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use skiff_testkit::image::ImageSet;
use skiff_testkit::registry::{Registry, RegistryAuth};

struct Skiff {
    data: tempfile::TempDir,
    docker_config: tempfile::TempDir,
}

impl Skiff {
    fn new() -> Skiff {
        let docker_config = tempfile::tempdir().unwrap();
        std::fs::write(docker_config.path().join("config.json"), "{\"auths\":{}}").unwrap();
        Skiff {
            data: tempfile::tempdir().unwrap(),
            docker_config,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .env("SKIFF_DATA_ROOT", self.data.path())
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env_remove("SKIFF_INSECURE_REGISTRIES")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "skiff {args:?}: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    fn images_root(&self) -> PathBuf {
        self.data.path().join("images")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn pull_images_inspect_and_rmi_work_like_docker() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
    let skiff = Skiff::new();
    let reference = registry.image_reference("layered");

    let out = skiff.ok(&["pull", &reference]);
    let short = &images.layered.layers[0].digest[7..19];
    assert!(
        out.starts_with(&format!(
            "latest: Pulling from {}/layered\n",
            registry.addr()
        )),
        "{out}"
    );
    assert!(out.contains(&format!("{short}: Pull complete")), "{out}");
    assert!(
        out.contains(&format!("Digest: {}", images.layered.manifest_digest)),
        "{out}"
    );
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert!(out.ends_with(&format!("{reference}:latest\n")), "{out}");
    let again = skiff.ok(&["pull", &reference]);
    assert!(again.contains("Status: Image is up to date for"), "{again}");
    assert!(
        again.contains(&format!("{short}: Already exists")),
        "{again}"
    );

    let table = skiff.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0]
        .split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(header, ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], reference);
    assert_eq!(row[1], "latest");
    assert_eq!(row[2], &images.layered.config_digest[7..19]);
    assert!(
        lines[1].contains(" years ago") || lines[1].contains(" months ago"),
        "{table}"
    );
    assert!(row.last().unwrap().ends_with("MB"), "{table}");
    assert_eq!(
        skiff.ok(&["image", "ls", "-q"]).trim(),
        &images.layered.config_digest[7..19]
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&skiff.ok(&["image", "inspect", &reference])).unwrap();
    assert_eq!(inspect[0]["Id"], images.layered.config_digest);
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "sh");
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(inspect[0]["RepoTags"][0], format!("{reference}:latest"));

    let err = skiff.fails(&["image", "inspect", "nope"]);
    assert!(err.contains("no such image: nope"), "{err}");
    let out = skiff.ok(&["rmi", &reference]);
    assert!(
        out.contains(&format!("Untagged: {reference}:latest")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Deleted: {}", images.layered.config_digest)),
        "{out}"
    );
    assert_eq!(skiff.ok(&["images", "-q"]), "");
    assert_eq!(count(&skiff.images_root().join("content/blobs/sha256")), 0);
    assert_eq!(count(&skiff.images_root().join("snapshots")), 0);
    let err = skiff.fails(&["rmi", &reference]);
    assert!(err.contains("no such image"), "{err}");
}

#[test]
fn bad_pulls_fail_in_one_line_and_leave_nothing() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Basic, &images).unwrap();
    let skiff = Skiff::new();
    let nope = registry.image_reference("busybox:nope");

    let err = skiff.fails(&["pull", &registry.image_reference("busybox")]);
    assert!(
        err.contains("unauthorized: authentication required"),
        "{err}"
    );
    let (user, password) = registry.credentials().unwrap();
    let auth = base64_of(&format!("{user}:{password}"));
    std::fs::write(
        skiff.docker_config.path().join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            registry.addr()
        ),
    )
    .unwrap();
    let err = skiff.fails(&["pull", &nope]);
    assert_eq!(err, format!("skiff: pull {nope}: manifest unknown\n"));
    let err = skiff.fails(&["pull", "127.0.0.1:1/busybox"]);
    assert!(
        err.starts_with("skiff: pull 127.0.0.1:1/busybox: registry 127.0.0.1:1 unreachable"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(skiff.ok(&["images", "-q"]), "");
    assert_eq!(count(&skiff.images_root().join("snapshots")), 0);
    skiff.ok(&["pull", "-q", &registry.image_reference("busybox")]);
    assert_eq!(
        skiff.ok(&["images", "-q"]).trim(),
        &images.busybox.config_digest[7..19]
    );
}

fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn save_load_import_export_and_prune_round_trip() {
    let images = ImageSet::build().unwrap();
    let skiff = Skiff::new();
    let out = tempfile::tempdir().unwrap();
    let archive = images.busybox.docker_archive.to_str().unwrap();
    let loaded = skiff.ok(&["load", "-i", archive]);
    assert_eq!(loaded, "Loaded image: skiff.test/busybox:latest\n");
    let layout = images.layered.layout.to_str().unwrap();
    let err = skiff.fails(&["image", "import", layout]);
    assert!(err.contains("--name"), "{err}");
    let imported = skiff.ok(&["image", "import", layout, "--name", "layered:v1"]);
    assert_eq!(imported, "Loaded image: layered:v1\n");

    let saved = out.path().join("saved.tar");
    skiff.ok(&[
        "save",
        "-o",
        saved.to_str().unwrap(),
        "layered:v1",
        "skiff.test/busybox",
    ]);
    let exported = out.path().join("oci.tar");
    skiff.ok(&[
        "image",
        "export",
        "layered:v1",
        "-o",
        exported.to_str().unwrap(),
    ]);
    let dir = out.path().join("oci-dir");
    skiff.ok(&[
        "image",
        "export",
        "--format",
        "oci-dir",
        "layered:v1",
        "-o",
        dir.to_str().unwrap(),
    ]);
    let skopeo = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            &format!("oci:{}:v1", dir.display()),
        ])
        .output()
        .unwrap();
    assert!(skopeo.status.success(), "{}", text(&skopeo.stderr));

    let other = Skiff::new();
    let loaded = other.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(
        loaded,
        "Loaded image: layered:v1\nLoaded image: skiff.test/busybox:latest\n"
    );
    let third = Skiff::new();
    assert_eq!(
        third.ok(&["image", "import", exported.to_str().unwrap()]),
        "Loaded image: layered:v1\n"
    );

    // Nothing unreferenced yet; after untagging layered its own content goes.
    let pruned = skiff.ok(&["image", "prune", "-f"]);
    assert!(
        pruned.starts_with("Deleted blobs: 0\nDeleted snapshots: 0\n"),
        "{pruned}"
    );
    skiff.ok(&["image", "rm", "layered:v1"]);
    assert_eq!(
        count(&skiff.images_root().join("snapshots")),
        1,
        "busybox's snapshot stays"
    );
    let table = skiff.ok(&["images"]);
    assert!(table.contains("skiff.test/busybox"), "{table}");
}

/// Runs `skiff ARGS` with `input` on its stdin.
fn run_with_input(skiff: &Skiff, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .env("SKIFF_DATA_ROOT", skiff.data.path())
        .env("DOCKER_CONFIG", skiff.docker_config.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Login with wrong credentials fails in one line and writes nothing; the right ones are
/// stored where docker keeps them (mode 0600, other settings kept), a pull then works, and
/// after logout it fails again.
fn login_then_logout_against(auth: RegistryAuth) {
    use std::os::unix::fs::PermissionsExt;
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(auth, &images).unwrap();
    let skiff = Skiff::new();
    let config_path = skiff.docker_config.path().join("config.json");
    std::fs::write(&config_path, "{\"auths\":{},\"detachKeys\":\"ctrl-x,x\"}").unwrap();
    let (user, password) = registry.credentials().unwrap();
    let server = registry.addr();
    let image = registry.image_reference("busybox");

    let wrong = run_with_input(
        &skiff,
        &["login", "-u", user, "--password-stdin", &server],
        "not-the-password\n",
    );
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    let err = text(&wrong.stderr);
    assert!(err.starts_with("Error response from daemon: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        "{\"auths\":{},\"detachKeys\":\"ctrl-x,x\"}"
    );

    let ok = run_with_input(
        &skiff,
        &["login", "-u", user, "--password-stdin", &server],
        &format!("{password}\n"),
    );
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(text(&ok.stdout), "Login Succeeded\n");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert_eq!(
        config["auths"][&server]["auth"],
        base64_of(&format!("{user}:{password}"))
    );
    assert_eq!(config["detachKeys"], "ctrl-x,x", "other settings kept");
    let mode = std::fs::metadata(&config_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    skiff.ok(&["pull", "-q", &image]);

    let out = skiff.ok(&["logout", &server]);
    assert_eq!(out, format!("Removing login credentials for {server}\n"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert!(config["auths"].get(&server).is_none(), "{config}");
    skiff.ok(&["rmi", &image]);
    if auth == RegistryAuth::Basic {
        let err = skiff.fails(&["pull", &image]);
        assert!(err.contains("unauthorized"), "{err}");
    }
}

#[test]
fn login_checks_basic_credentials_and_logout_forgets_them() {
    login_then_logout_against(RegistryAuth::Basic);
}

#[test]
fn login_checks_credentials_with_the_token_server() {
    login_then_logout_against(RegistryAuth::Token);
}

#[test]
fn login_without_a_terminal_needs_both_credentials() {
    let skiff = Skiff::new();
    let out = skiff.run(&["login", "-u", "someone", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: Cannot perform an interactive login from a non TTY device\n"
    );
    let out = skiff.run(&["login", "--password-stdin", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Must provide --username with --password-stdin\n"
    );
    // Docker Hub's key when no server is named.
    let out = skiff.ok(&["logout"]);
    assert_eq!(
        out,
        "Removing login credentials for https://index.docker.io/v1/\n"
    );
}
