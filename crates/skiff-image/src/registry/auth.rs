//! Registry authentication: `WWW-Authenticate` challenges and credentials from a docker-style
//! `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `auths` entries with
//! a base64 `user:password` in `auth`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or identity token).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The value of a `Basic` `Authorization` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic.
    Basic,
    /// A bearer token from `realm`, for `service` (and `scope`, if the registry named one).
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The service the token is for.
        service: Option<String>,
        /// The scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header: `Bearer realm="..",service="..",scope=".."` or
/// `Basic realm=".."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key="value", key=value` pairs (quoted values may hold commas).
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    other => value.push(other),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// The docker-style config file the current user's credentials come from:
/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker").join("config.json"))
}

/// Looks up credentials for `registry` (as in an image reference: `docker.io`, `host:port`)
/// in the docker-style config at `path`. A missing or unreadable file means none.
pub fn credentials_from_docker_config(path: &Path, registry: &str) -> Option<Credentials> {
    let data = std::fs::read(path).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&data).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let wanted = auth_key(registry);
    for (key, entry) in auths {
        if auth_key(key) != wanted {
            continue;
        }
        if let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = STANDARD.decode(encoded.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (username, password) = text.split_once(':')?;
            return Some(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        let username = entry.get("username").and_then(|u| u.as_str());
        let password = entry.get("password").and_then(|p| p.as_str());
        if let (Some(username), Some(password)) = (username, password) {
            return Some(Credentials {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
    }
    if config.get("credsStore").is_some() || config.get("credHelpers").is_some() {
        tracing::warn!(
            config = %path.display(),
            "credential helpers are not supported: put the registry's credentials in `auths`"
        );
    }
    None
}

/// Normalises a config key or registry name: no scheme, no path, Docker Hub's aliases as one.
fn auth_key(key: &str) -> String {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Adds (or replaces) credentials for `registry` in the docker-style config at `path`,
/// keeping every other setting; written atomically, readable by the owner only.
pub fn store_credentials(
    path: &Path,
    registry: &str,
    credentials: &Credentials,
) -> std::io::Result<()> {
    let mut config: serde_json::Value = std::fs::read(path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    let key = config_key(registry);
    let encoded = STANDARD.encode(format!("{}:{}", credentials.username, credentials.password));
    if !config.is_object() {
        config = serde_json::json!({});
    }
    let auths = config
        .as_object_mut()
        .map(|o| o.entry("auths").or_insert_with(|| serde_json::json!({})));
    if let Some(serde_json::Value::Object(auths)) = auths {
        auths.insert(key, serde_json::json!({ "auth": encoded }));
    }
    write_config(path, &config)
}

/// The `auths` key `docker login` stores `registry`'s credentials under: Docker Hub's is
/// `https://index.docker.io/v1/`, any other registry's is its `host[:port]`.
pub fn config_key(registry: &str) -> String {
    match auth_key(registry).as_str() {
        "docker.io" => DOCKER_HUB_KEY.to_string(),
        host => host.to_string(),
    }
}

/// Docker Hub's key in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Removes every `auths` entry for `registry` (with or without scheme or path, Docker Hub's
/// aliases as one) from the docker-style config at `path`, keeping every other setting; true
/// when one was there. A missing file has none.
pub fn remove_credentials(path: &Path, registry: &str) -> std::io::Result<bool> {
    let data = match std::fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut config: serde_json::Value =
        serde_json::from_slice(&data).map_err(std::io::Error::other)?;
    let wanted = auth_key(registry);
    let Some(auths) = config.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|key, _| auth_key(key) != wanted);
    if auths.len() == before {
        return Ok(false);
    }
    write_config(path, &config)?;
    Ok(true)
}

/// Writes the config atomically, readable by the owner only.
fn write_config(path: &Path, config: &serde_json::Value) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let data = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(temp.path(), data)?;
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o600))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quoted_commas() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#;
        assert_eq!(
            parse_challenge(header),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".to_string(),
                service: Some("registry.docker.io".to_string()),
                scope: Some("repository:library/busybox:pull,push".to_string()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn login_keys_are_docker_s() {
        assert_eq!(config_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(config_key("https://index.docker.io/v1/"), DOCKER_HUB_KEY);
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(config_key("https://Quay.io/v2/"), "quay.io");
    }

    #[test]
    fn docker_config_auths_match_with_or_without_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = STANDARD.encode("me:secret");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"http://127.0.0.1:5000":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let creds = credentials_from_docker_config(&path, "docker.io").unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("me", "secret")
        );
        assert!(credentials_from_docker_config(&path, "127.0.0.1:5000").is_some());
        assert!(credentials_from_docker_config(&path, "quay.io").is_none());
        store_credentials(&path, "quay.io", &creds).unwrap();
        assert!(credentials_from_docker_config(&path, "quay.io").is_some());
        assert!(credentials_from_docker_config(&path, "docker.io").is_some());
        assert!(remove_credentials(&path, "127.0.0.1:5000").unwrap());
        assert!(!remove_credentials(&path, "127.0.0.1:5000").unwrap());
        assert!(remove_credentials(&path, "index.docker.io").unwrap());
        assert!(credentials_from_docker_config(&path, "docker.io").is_none());
        assert!(credentials_from_docker_config(&path, "quay.io").is_some());
        assert!(!remove_credentials(&dir.path().join("missing.json"), "quay.io").unwrap());
    }
}
