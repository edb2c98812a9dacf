//! Throw-away OCI registry: Debian's `docker-registry` (distribution 2.8) on a free 127.0.0.1
//! port, plain HTTP, in one of three authentication flavours ([`RegistryAuth`]).
//!
//! The registry's config, storage, log (`registry.log`, stdout and stderr) and auth material
//! (htpasswd file, token-signing certificate) live in a temp dir owned by the fixture, as does a
//! private skopeo configuration (empty auth file, permissive policy, empty registries.conf and
//! registries.d) so the host's container configuration cannot interfere with pushes and
//! inspections. Starting waits until `GET /v2/` answers (200 when open, 401 otherwise) and fails
//! early, with the tail of the log, if the registry exits; a start that lost its port to another
//! process is retried on a new one. Dropping the fixture kills the registry, stops the token
//! server and deletes the temp dir, also when the test panics.
//!
//! ```no_run
//! # fn main() -> skiff_testkit::Result<()> {
//! use skiff_testkit::image::ImageSet;
//! use skiff_testkit::registry::{Registry, RegistryAuth};
//!
//! let images = ImageSet::build()?;
//! let registry = Registry::with_fixtures(RegistryAuth::Token, &images)?;
//! let reference = registry.image_reference("busybox:latest"); // 127.0.0.1:PORT/busybox:latest
//! let (user, password) = registry.credentials().expect("token registries have a user");
//! # let _ = (reference, user, password);
//! # Ok(())
//! # }
//! ```

mod http;
mod token;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use self::http::http_get_within;
pub use self::http::{HttpResponse, http_get};
use self::token::TokenServer;
pub use self::token::{TOKEN_ISSUER, TOKEN_SERVICE};
use crate::image::ImageSet;
use crate::ports::free_port;
use crate::process::{ChildGuard, run};
use crate::require::require_program;
use crate::wait::wait_for;
use crate::{Result, TestkitError};

/// The registry program.
const PROGRAM: &str = "docker-registry";
/// The Debian package that provides [`PROGRAM`].
const PACKAGE: &str = "docker-registry";
/// The image copy tool.
const SKOPEO: &str = "skopeo";
/// The Debian package that provides [`SKOPEO`].
const SKOPEO_PACKAGE: &str = "skopeo";
/// How long a start may take until `GET /v2/` answers.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long one readiness probe may stall (a port taken by a silent process must not eat the
/// whole deadline).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How many times a start is tried when the registry fails to bind its port.
const START_ATTEMPTS: usize = 3;
/// How many log lines an error shows.
const LOG_TAIL_LINES: usize = 25;
/// What the registry logs when its port is taken.
const BIND_FAILURE: &str = "address already in use";
/// The realm of the `Basic` flavour's challenge.
const BASIC_REALM: &str = "skiff-test-registry";
/// How long one skopeo command may take.
const SKOPEO_TIMEOUT: &str = "120s";

/// The user of the `Basic` and `Token` flavours.
pub const TEST_USER: &str = "skiff";
/// The password of [`TEST_USER`].
pub const TEST_PASSWORD: &str = "skiff-registry-password";
/// Where [`Registry::with_fixtures`] pushes the `busybox` fixture image.
pub const BUSYBOX_REPO_TAG: &str = "busybox:latest";
/// Where [`Registry::with_fixtures`] pushes the `layered` fixture image.
pub const LAYERED_REPO_TAG: &str = "layered:latest";

/// How the registry authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No authentication: anyone may pull and push.
    Open,
    /// HTTP Basic against an htpasswd file holding a bcrypt hash of [`TEST_PASSWORD`] for
    /// [`TEST_USER`]; anonymous requests get 401.
    Basic,
    /// Bearer tokens from a token server run by the fixture (see [`Registry::token_url`]):
    /// [`TEST_USER`] may pull and push, anonymous clients may only pull, wrong credentials get
    /// 401 from the token server.
    Token,
}

/// A throw-away registry on a free loopback port.
///
/// Killed, its token server stopped and its temp dir (storage, config, log) deleted on drop.
#[derive(Debug)]
pub struct Registry {
    child: ChildGuard,
    token: Option<TokenServer>,
    auth: RegistryAuth,
    port: u16,
    skopeo: PathBuf,
    log_path: PathBuf,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry with the given authentication and waits until it answers.
    ///
    /// Fails with [`TestkitError::MissingProgram`] if `docker-registry` or `skopeo` is not
    /// installed.
    pub fn start(auth: RegistryAuth) -> Result<Registry> {
        let program = require_program(PROGRAM, PACKAGE)?;
        let skopeo = require_program(SKOPEO, SKOPEO_PACKAGE)?;
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            match Registry::try_start(&program, &skopeo, auth, port) {
                Ok(registry) => return Ok(registry),
                Err(failure) if failure.port_taken && attempt < START_ATTEMPTS => attempt += 1,
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// Starts a registry and pushes the fixture images: `images.busybox` as
    /// [`BUSYBOX_REPO_TAG`] and `images.layered` as [`LAYERED_REPO_TAG`].
    pub fn with_fixtures(auth: RegistryAuth, images: &ImageSet) -> Result<Registry> {
        let registry = Registry::start(auth)?;
        registry.push(&images.busybox.oci_reference(), BUSYBOX_REPO_TAG)?;
        registry.push(&images.layered.oci_reference(), LAYERED_REPO_TAG)?;
        Ok(registry)
    }

    /// One start attempt on `port` with a new temp dir.
    fn try_start(
        program: &Path,
        skopeo: &Path,
        auth: RegistryAuth,
        port: u16,
    ) -> std::result::Result<Registry, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-registry-")
            .tempdir()
            .map_err(TestkitError::io("create temp dir in", std::env::temp_dir()))
            .map_err(StartFailure::setup)?;
        let root = dir.path();
        write_skopeo_config(root).map_err(StartFailure::setup)?;
        let mut token = None;
        let auth_section = match auth {
            RegistryAuth::Open => String::new(),
            RegistryAuth::Basic => {
                let htpasswd = root.join("htpasswd");
                write_htpasswd(&htpasswd).map_err(StartFailure::setup)?;
                format!(
                    "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                    yaml_string(BASIC_REALM),
                    yaml_path(&htpasswd)
                )
            }
            RegistryAuth::Token => {
                let cert = root.join("token-signer.pem");
                let server =
                    TokenServer::start(&cert, &root.join("token.log"), TEST_USER, TEST_PASSWORD)
                        .map_err(StartFailure::setup)?;
                let section = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    yaml_string(&server.realm()),
                    yaml_string(TOKEN_SERVICE),
                    yaml_string(TOKEN_ISSUER),
                    yaml_path(&cert)
                );
                token = Some(server);
                section
            }
        };
        let storage = root.join("storage");
        std::fs::create_dir(&storage)
            .map_err(TestkitError::io("create dir", &storage))
            .map_err(StartFailure::setup)?;
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: {secret}\n\
             {auth_section}",
            storage = yaml_path(&storage),
            addr = yaml_string(&format!("127.0.0.1:{port}")),
            secret = yaml_string(&format!("skiff-testkit-{}-{port}", std::process::id())),
        );
        let config_path = root.join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(TestkitError::io("write", &config_path))
            .map_err(StartFailure::setup)?;

        let log_path = root.join("registry.log");
        let child =
            spawn_registry(program, &config_path, &log_path).map_err(StartFailure::setup)?;
        let mut registry = Registry {
            child,
            token,
            auth,
            port,
            skopeo: skopeo.to_path_buf(),
            log_path,
            dir,
        };
        match registry.wait_ready() {
            Ok(()) => Ok(registry),
            Err(error) => {
                let port_taken = registry.log_text().contains(BIND_FAILURE);
                Err(StartFailure { error, port_taken })
            }
        }
    }

    /// Waits until `GET /v2/` answers as the flavour should, failing early (with the log tail)
    /// if the registry exits.
    fn wait_ready(&mut self) -> Result<()> {
        let expected = match self.auth {
            RegistryAuth::Open => 200,
            RegistryAuth::Basic | RegistryAuth::Token => 401,
        };
        let addr = self.addr();
        let what = format!("registry on {addr} to answer GET /v2/ with {expected}");
        let child = &mut self.child;
        let mut last = String::from("no answer yet");
        let outcome = wait_for(&what, READY_DEADLINE, || {
            if !child.is_running() {
                return Some(Err("docker-registry exited before it answered".to_string()));
            }
            match http_get_within(&addr, "/v2/", None, PROBE_TIMEOUT) {
                Ok(response) if response.status == expected => Some(Ok(())),
                Ok(response) => {
                    last = format!(
                        "last answer: {} {}",
                        response.status,
                        response.text().trim()
                    );
                    None
                }
                Err(error) => {
                    last = format!("last error: {error}");
                    None
                }
            }
        });
        let cause = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(exited)) => exited,
            Err(timeout) => format!("{timeout} ({last})"),
        };
        Err(self.error_with_log(cause))
    }

    /// The registry's address, `127.0.0.1:PORT` (what image references start with).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The port the registry listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The authentication flavour.
    pub fn auth(&self) -> RegistryAuth {
        self.auth
    }

    /// The user and password that may push: [`TEST_USER`] and [`TEST_PASSWORD`], or `None` for
    /// an open registry.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        match self.auth {
            RegistryAuth::Open => None,
            RegistryAuth::Basic | RegistryAuth::Token => Some((TEST_USER, TEST_PASSWORD)),
        }
    }

    /// The token server's endpoint, `http://127.0.0.1:TOKENPORT/token` (the `realm` of the
    /// registry's `Bearer` challenge), for [`RegistryAuth::Token`]; `None` otherwise.
    pub fn token_url(&self) -> Option<String> {
        self.token.as_ref().map(TokenServer::realm)
    }

    /// The token server's address, `127.0.0.1:TOKENPORT`, for [`RegistryAuth::Token`].
    pub fn token_addr(&self) -> Option<String> {
        self.token.as_ref().map(|server| server.addr().to_string())
    }

    /// `ADDR/REPO:TAG` for `repo_tag` (e.g. `busybox:latest`): what a client pulls.
    pub fn image_reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr())
    }

    /// The temp dir holding config, storage, log and auth files; deleted on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the registry's stdout and stderr go to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the registry's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the registry process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Copies `image_ref_source` (any skopeo source, e.g. `oci:DIR:latest` from
    /// [`Image::oci_reference`](crate::image::Image::oci_reference)) to `REPO:TAG` in this
    /// registry, with [`credentials`](Self::credentials), keeping the manifest digest.
    pub fn push(&self, image_ref_source: &str, repo_tag: &str) -> Result<()> {
        self.push_as(image_ref_source, repo_tag, self.credentials())
    }

    /// Like [`push`](Self::push) but with the given credentials, or anonymously with `None`
    /// (to check that the registry refuses a push).
    pub fn push_as(
        &self,
        image_ref_source: &str,
        repo_tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<()> {
        let mut command = self.skopeo_command("copy");
        command.args(["--preserve-digests", "--dest-tls-verify=false"]);
        if let Some((user, password)) = credentials {
            command.arg(format!("--dest-creds={user}:{password}"));
        }
        command
            .arg(image_ref_source)
            .arg(format!("docker://{}", self.image_reference(repo_tag)));
        run(&mut command).map(drop)
    }

    /// A `skopeo SUBCOMMAND` command isolated from the host's container configuration: the
    /// fixture's policy, registries.d, registries.conf, temp dir and (empty) auth file. Add
    /// the subcommand's own arguments, e.g. `--tls-verify=false`, `--creds=U:P` and a
    /// `docker://` reference for `inspect`.
    pub fn skopeo_command(&self, subcommand: &str) -> Command {
        let config = self.dir.path().join("skopeo");
        let mut command = Command::new(&self.skopeo);
        command
            .env("CONTAINERS_REGISTRIES_CONF", config.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", config.join("auth.json"))
            .env("DOCKER_CONFIG", config.join("docker"))
            .arg("--policy")
            .arg(config.join("policy.json"))
            .arg("--registries.d")
            .arg(config.join("registries.d"))
            .arg("--tmpdir")
            .arg(config.join("tmp"))
            .arg(format!("--command-timeout={SKOPEO_TIMEOUT}"))
            .arg(subcommand)
            .arg("--authfile")
            .arg(config.join("auth.json"));
        command
    }

    fn log_text(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn error_with_log(&self, cause: String) -> TestkitError {
        TestkitError::Invalid {
            fixture: "registry",
            detail: format!(
                "{cause}\n--- last lines of {}:\n{}",
                self.log_path.display(),
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Kill the registry and stop the token server before the temp dir (a field, dropped
        // after this) is deleted.
        self.child.kill();
        self.token.take();
    }
}

/// Why a start attempt failed, and whether a retry on a new port may help.
struct StartFailure {
    error: TestkitError,
    port_taken: bool,
}

impl StartFailure {
    /// A failure that a retry would not fix.
    fn setup(error: TestkitError) -> Self {
        StartFailure {
            error,
            port_taken: false,
        }
    }
}

/// Runs `docker-registry serve CONFIG` with its output going to `log_path`.
fn spawn_registry(program: &Path, config: &Path, log_path: &Path) -> Result<ChildGuard> {
    let log = File::create(log_path).map_err(TestkitError::io("create", log_path))?;
    let log_err = log
        .try_clone()
        .map_err(TestkitError::io("duplicate handle of", log_path))?;
    let mut command = Command::new(program);
    command.arg("serve").arg(config).stdout(log).stderr(log_err);
    // The registry overrides its config with REGISTRY_* variables; the test's must not leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(key);
        }
    }
    ChildGuard::spawn(PROGRAM, &mut command)
}

/// Writes `TEST_USER:BCRYPT(TEST_PASSWORD)` to `path`.
fn write_htpasswd(path: &Path) -> Result<()> {
    // The lowest cost bcrypt allows: the registry checks it on every request.
    let hash = bcrypt::hash(TEST_PASSWORD, 4).map_err(|error| TestkitError::Invalid {
        fixture: "registry",
        detail: format!("bcrypt hash of the test password: {error}"),
    })?;
    std::fs::write(path, format!("{TEST_USER}:{hash}\n")).map_err(TestkitError::io("write", path))
}

/// skopeo's private configuration under `ROOT/skopeo`: an empty auth file, a policy that
/// accepts anything, an empty registries.conf, an empty registries.d and a temp dir.
fn write_skopeo_config(root: &Path) -> Result<()> {
    let config = root.join("skopeo");
    for dir in ["registries.d", "tmp", "docker"] {
        let path = config.join(dir);
        std::fs::create_dir_all(&path).map_err(TestkitError::io("create dir", &path))?;
    }
    let files: [(&str, &str); 4] = [
        ("auth.json", "{\"auths\":{}}\n"),
        ("docker/config.json", "{\"auths\":{}}\n"),
        (
            "policy.json",
            "{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}\n",
        ),
        ("registries.conf", "unqualified-search-registries = []\n"),
    ];
    for (name, content) in files {
        let path = config.join(name);
        std::fs::write(&path, content).map_err(TestkitError::io("write", &path))?;
    }
    Ok(())
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn yaml_path(path: &Path) -> String {
    yaml_string(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_start_that_loses_its_port_is_retryable() {
        let program = require_program(PROGRAM, PACKAGE).unwrap();
        let skopeo = require_program(SKOPEO, SKOPEO_PACKAGE).unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let Err(failure) = Registry::try_start(&program, &skopeo, RegistryAuth::Open, port) else {
            panic!("the registry started on a taken port");
        };
        assert!(failure.port_taken, "{}", failure.error);
        let message = failure.error.to_string();
        assert!(message.contains("exited"), "{message}");
        assert!(
            message.contains(BIND_FAILURE),
            "the log tail is part of the error: {message}"
        );
    }

    #[test]
    fn yaml_scalars_are_double_quoted_and_escaped() {
        assert_eq!(yaml_string("127.0.0.1:5000"), "\"127.0.0.1:5000\"");
        assert_eq!(yaml_path(Path::new("/tmp/a \"b\"")), "\"/tmp/a \\\"b\\\"\"");
    }
}
