//! The registry fixture in its three flavours, checked with skopeo and plain HTTP.

use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use skiff_testkit::image::{Image, ImageSet, sha256_digest};
use skiff_testkit::process::run;
use skiff_testkit::registry::{
    BUSYBOX_REPO_TAG, LAYERED_REPO_TAG, Registry, RegistryAuth, TEST_PASSWORD, TEST_USER,
    TOKEN_ISSUER, TOKEN_SERVICE, http_get,
};

/// Which credentials `skopeo inspect` uses.
#[derive(Clone, Copy)]
enum Creds<'a> {
    Anonymous,
    As(&'a str, &'a str),
}

/// `skopeo inspect [--raw]` of `repo_tag` in `registry`; stdout, or the error as text.
fn inspect(
    registry: &Registry,
    repo_tag: &str,
    creds: Creds<'_>,
    raw: bool,
) -> Result<Vec<u8>, String> {
    let mut command = registry.skopeo_command("inspect");
    command.arg("--tls-verify=false");
    match creds {
        Creds::Anonymous => command.arg("--no-creds"),
        Creds::As(user, password) => command.arg(format!("--creds={user}:{password}")),
    };
    if raw {
        command.arg("--raw");
    }
    command.arg(format!("docker://{}", registry.image_reference(repo_tag)));
    run(&mut command)
        .map(|output| output.stdout)
        .map_err(|error| error.to_string())
}

/// Checks that `repo_tag` in `registry` is `image`: its layer count and manifest digest, both
/// from skopeo's summary and from the raw manifest bytes.
fn assert_serves(registry: &Registry, repo_tag: &str, image: &Image, creds: Creds<'_>) {
    let summary =
        inspect(registry, repo_tag, creds, false).unwrap_or_else(|error| panic!("{error}"));
    let summary: Value = serde_json::from_slice(&summary).expect("skopeo inspect prints JSON");
    let layers = summary["Layers"]
        .as_array()
        .expect("the summary lists the layers");
    assert_eq!(layers.len(), image.layers.len(), "{summary}");
    for (served, built) in layers.iter().zip(&image.layers) {
        assert_eq!(served.as_str(), Some(built.digest.as_str()));
    }
    assert_eq!(
        summary["Digest"].as_str(),
        Some(image.manifest_digest.as_str()),
        "{summary}"
    );
    let raw = inspect(registry, repo_tag, creds, true).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(sha256_digest(&raw), image.manifest_digest);
}

/// The `access` claim of a JWT, as (name, actions) pairs.
fn granted_access(jwt: &str) -> Vec<(String, Vec<String>)> {
    let claims = jwt.split('.').nth(1).expect("a JWT has three parts");
    let claims = URL_SAFE_NO_PAD
        .decode(claims)
        .expect("JWT claims are base64url");
    let claims: Value = serde_json::from_slice(&claims).expect("JWT claims are JSON");
    assert_eq!(claims["iss"], TOKEN_ISSUER);
    assert_eq!(claims["aud"], TOKEN_SERVICE);
    claims["access"]
        .as_array()
        .expect("the token has an access claim")
        .iter()
        .map(|entry| {
            let actions = entry["actions"]
                .as_array()
                .expect("access entries list actions");
            (
                entry["name"]
                    .as_str()
                    .expect("access entries have a name")
                    .to_string(),
                actions
                    .iter()
                    .map(|a| a.as_str().expect("actions are strings").to_string())
                    .collect(),
            )
        })
        .collect()
}

fn accepts_connections(addr: &str) -> bool {
    let addr = addr.parse().expect("fixture addresses are IP:PORT");
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn an_open_registry_accepts_pushes_and_serves_the_fixture_images() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
    assert_eq!(registry.credentials(), None);
    assert_eq!(registry.token_url(), None);
    assert!(
        registry.url().starts_with("http://127.0.0.1:"),
        "{}",
        registry.url()
    );

    let response = http_get(&registry.addr(), "/v2/", None).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_serves(
        &registry,
        BUSYBOX_REPO_TAG,
        &images.busybox,
        Creds::Anonymous,
    );
    assert_serves(
        &registry,
        LAYERED_REPO_TAG,
        &images.layered,
        Creds::Anonymous,
    );
    assert_eq!(images.busybox.layers.len(), 1);
    assert_eq!(images.layered.layers.len(), 3);

    // Anyone may push to an open registry.
    registry
        .push_as(&images.busybox.oci_reference(), "anyone/busybox:v1", None)
        .unwrap();
    assert_serves(
        &registry,
        "anyone/busybox:v1",
        &images.busybox,
        Creds::Anonymous,
    );
}

#[test]
fn a_basic_auth_registry_refuses_anonymous_clients_and_serves_the_test_user() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Basic, &images).unwrap();
    assert_eq!(registry.credentials(), Some((TEST_USER, TEST_PASSWORD)));

    let anonymous = http_get(&registry.addr(), "/v2/", None).unwrap();
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let wrong = http_get(&registry.addr(), "/v2/", Some((TEST_USER, "wrong"))).unwrap();
    assert_eq!(wrong.status, 401);
    let user = http_get(&registry.addr(), "/v2/", registry.credentials()).unwrap();
    assert_eq!(user.status, 200, "{}", user.text());

    assert_serves(
        &registry,
        BUSYBOX_REPO_TAG,
        &images.busybox,
        Creds::As(TEST_USER, TEST_PASSWORD),
    );
    assert_serves(
        &registry,
        LAYERED_REPO_TAG,
        &images.layered,
        Creds::As(TEST_USER, TEST_PASSWORD),
    );
    let error = inspect(&registry, BUSYBOX_REPO_TAG, Creds::Anonymous, false).unwrap_err();
    assert!(
        error.contains("unauthorized") || error.contains("authentication required"),
        "{error}"
    );
    let error = inspect(
        &registry,
        BUSYBOX_REPO_TAG,
        Creds::As(TEST_USER, "wrong"),
        false,
    )
    .unwrap_err();
    assert!(
        error.contains("unauthorized") || error.contains("authentication required"),
        "{error}"
    );
    registry
        .push_as(
            &images.busybox.oci_reference(),
            "anonymous/busybox:v1",
            None,
        )
        .unwrap_err();
}

#[test]
fn a_token_registry_challenges_anonymous_clients_with_its_token_server() {
    let registry = Registry::start(RegistryAuth::Token).unwrap();
    let token_url = registry.token_url().unwrap();
    assert!(token_url.starts_with("http://127.0.0.1:"), "{token_url}");
    assert!(token_url.ends_with("/token"), "{token_url}");

    let response = http_get(&registry.addr(), "/v2/", None).unwrap();
    assert_eq!(response.status, 401);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    let expected = format!("Bearer realm=\"{token_url}\",service=\"{TOKEN_SERVICE}\"");
    assert!(challenge.starts_with(&expected), "{challenge}");
    // The registry does not take Basic credentials itself: only tokens.
    let basic = http_get(&registry.addr(), "/v2/", registry.credentials()).unwrap();
    assert_eq!(basic.status, 401);
}

#[test]
fn a_token_registry_lets_the_test_user_push_and_anyone_pull() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Token, &images).unwrap();
    assert_eq!(registry.credentials(), Some((TEST_USER, TEST_PASSWORD)));

    assert_serves(
        &registry,
        BUSYBOX_REPO_TAG,
        &images.busybox,
        Creds::As(TEST_USER, TEST_PASSWORD),
    );
    assert_serves(
        &registry,
        LAYERED_REPO_TAG,
        &images.layered,
        Creds::As(TEST_USER, TEST_PASSWORD),
    );
    assert_serves(
        &registry,
        BUSYBOX_REPO_TAG,
        &images.busybox,
        Creds::Anonymous,
    );

    let error = registry
        .push_as(
            &images.busybox.oci_reference(),
            "anonymous/busybox:v1",
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unauthorized") || error.contains("authentication required"),
        "{error}"
    );
    let missing = inspect(
        &registry,
        "anonymous/busybox:v1",
        Creds::As(TEST_USER, TEST_PASSWORD),
        false,
    );
    assert!(missing.is_err(), "the anonymous push left an image behind");
}

#[test]
fn a_token_registry_refuses_wrong_credentials() {
    let images = ImageSet::build().unwrap();
    let registry = Registry::with_fixtures(RegistryAuth::Token, &images).unwrap();

    let error = inspect(
        &registry,
        BUSYBOX_REPO_TAG,
        Creds::As(TEST_USER, "wrong"),
        false,
    )
    .unwrap_err();
    assert!(
        error.contains("unauthorized") || error.contains("401"),
        "{error}"
    );
    let error = inspect(
        &registry,
        BUSYBOX_REPO_TAG,
        Creds::As("mallory", TEST_PASSWORD),
        false,
    )
    .unwrap_err();
    assert!(
        error.contains("unauthorized") || error.contains("401"),
        "{error}"
    );
    registry
        .push_as(
            &images.busybox.oci_reference(),
            "busybox:wrong",
            Some((TEST_USER, "wrong")),
        )
        .unwrap_err();
}

#[test]
fn the_token_server_grants_push_only_to_the_test_user() {
    let registry = Registry::start(RegistryAuth::Token).unwrap();
    let token_addr = registry.token_addr().unwrap();
    let path = format!(
        "/token?service={TOKEN_SERVICE}&scope=repository%3Aapp%3Apull%2Cpush&scope=repository%3Abase%3Apull"
    );

    let user = http_get(&token_addr, &path, registry.credentials()).unwrap();
    assert_eq!(user.status, 200, "{}", user.text());
    let body: Value = serde_json::from_slice(&user.body).unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 300);
    let issued_at = body["issued_at"].as_str().unwrap();
    assert!(
        issued_at.len() == 20 && issued_at.ends_with('Z'),
        "{issued_at}"
    );
    let pull_push = vec!["pull".to_string(), "push".to_string()];
    let pull = vec!["pull".to_string()];
    assert_eq!(
        granted_access(body["token"].as_str().unwrap()),
        [
            ("app".to_string(), pull_push),
            ("base".to_string(), pull.clone())
        ]
    );

    let anonymous = http_get(&token_addr, &path, None).unwrap();
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    let body: Value = serde_json::from_slice(&anonymous.body).unwrap();
    assert_eq!(
        granted_access(body["token"].as_str().unwrap()),
        [
            ("app".to_string(), pull.clone()),
            ("base".to_string(), pull)
        ]
    );

    let wrong = http_get(&token_addr, &path, Some((TEST_USER, "wrong"))).unwrap();
    assert_eq!(wrong.status, 401);
}

#[test]
fn dropping_a_registry_closes_its_ports_and_deletes_its_temp_dir() {
    let registry = Registry::start(RegistryAuth::Token).unwrap();
    let (addr, token_addr, dir, pid) = (
        registry.addr(),
        registry.token_addr().unwrap(),
        registry.dir().to_path_buf(),
        registry.pid(),
    );
    assert!(accepts_connections(&addr));
    assert!(accepts_connections(&token_addr));
    assert!(dir.join("registry.log").exists());

    drop(registry);
    assert!(
        !accepts_connections(&addr),
        "{addr} still accepts connections"
    );
    assert!(
        !accepts_connections(&token_addr),
        "{token_addr} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "registry {pid} still runs"
    );
}

#[test]
fn a_panicking_test_still_removes_its_registry() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(move || {
        let registry = Registry::start(RegistryAuth::Basic).unwrap();
        sender
            .send((
                registry.addr(),
                registry.dir().to_path_buf(),
                registry.pid(),
            ))
            .unwrap();
        panic!("the test fails while holding the registry");
    });
    assert!(outcome.is_err());
    let (addr, dir, pid) = receiver.recv().unwrap();
    assert!(
        !accepts_connections(&addr),
        "{addr} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "registry {pid} still runs"
    );
}
