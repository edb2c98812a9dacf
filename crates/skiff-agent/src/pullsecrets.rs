//! Registry credentials from `imagePullSecrets`: the pod's, then those of its ServiceAccount
//! (the kubelet's keyring order). `kubernetes.io/dockerconfigjson` Secrets hold a docker
//! `config.json` under `.dockerconfigjson` (`{"auths": {REGISTRY: {...}}}`);
//! `kubernetes.io/dockercfg` Secrets hold the older `.dockercfg` (`{REGISTRY: {...}}`). An entry
//! gives `auth` (base64 `user:password`) or `username` and `password`. Missing Secrets are
//! skipped, as the kubelet does (it only logs them).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;
use serde_json::Value;
use skiff_image::registry::auth::Credentials;

use crate::container::pod_ref;

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PullSecretError {
    /// The API refused a read.
    #[error("cannot read {what}: {source}")]
    Api {
        /// What was read.
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// The names of the Secrets that may hold credentials for `pod`'s images: the pod's
/// `imagePullSecrets`, then its ServiceAccount's.
pub async fn secret_names(
    client: &kube::Client,
    pod: &Pod,
) -> Result<Vec<String>, PullSecretError> {
    let ns = pod_ref(pod).namespace;
    let spec = pod.spec.as_ref();
    let mut names: Vec<String> = spec
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    let account = spec
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa = accounts
        .get_opt(&account)
        .await
        .map_err(|source| PullSecretError::Api {
            what: format!("serviceaccount {ns}/{account}"),
            source,
        })?;
    for r in sa.and_then(|sa| sa.image_pull_secrets).unwrap_or_default() {
        if !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    Ok(names)
}

/// Every credential the pull secrets of `pod` hold for the registry of `image` (`registry`
/// as in the reference: `host[:port]` or `docker.io`), in order.
pub async fn credentials(
    client: &kube::Client,
    pod: &Pod,
    registry: &str,
) -> Result<Vec<Credentials>, PullSecretError> {
    let ns = pod_ref(pod).namespace;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut out = Vec::new();
    for name in secret_names(client, pod).await? {
        let secret = secrets
            .get_opt(&name)
            .await
            .map_err(|source| PullSecretError::Api {
                what: format!("secret {ns}/{name}"),
                source,
            })?;
        let Some(secret) = secret else {
            tracing::warn!(namespace = %ns, secret = %name, "image pull secret not found");
            continue;
        };
        out.extend(from_secret(&secret, registry));
    }
    Ok(out)
}

/// The credentials one Secret holds for `registry`.
pub fn from_secret(secret: &Secret, registry: &str) -> Vec<Credentials> {
    let data = secret.data.clone().unwrap_or_default();
    let mut auths: Vec<(String, Value)> = Vec::new();
    if let Some(json) = data.get(".dockerconfigjson")
        && let Ok(config) = serde_json::from_slice::<Value>(&json.0)
        && let Some(map) = config.get("auths").and_then(Value::as_object)
    {
        auths.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(cfg) = data.get(".dockercfg")
        && let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&cfg.0)
    {
        auths.extend(map);
    }
    let wanted = registry_key(registry);
    auths
        .into_iter()
        .filter(|(key, _)| registry_key(key) == wanted)
        .filter_map(|(_, entry)| entry_credentials(&entry))
        .collect()
}

fn entry_credentials(entry: &Value) -> Option<Credentials> {
    if let Some(encoded) = entry.get("auth").and_then(Value::as_str)
        && !encoded.is_empty()
    {
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (username, password) = text.split_once(':')?;
        return Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    Some(Credentials {
        username: entry.get("username")?.as_str()?.to_string(),
        password: entry.get("password")?.as_str()?.to_string(),
    })
}

/// A config key or registry as one comparable host: no scheme, no path, Docker Hub's
/// aliases as `docker.io`.
fn registry_key(key: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn both_secret_types_give_credentials_for_their_registry() {
        let config = serde_json::json!({"auths": {"http://127.0.0.1:5000/v2/": {"auth": STANDARD.encode("u:p")}}});
        let secret = Secret {
            data: Some(
                [
                    (
                        ".dockerconfigjson".to_string(),
                        ByteString(serde_json::to_vec(&config).unwrap()),
                    ),
                    (
                        ".dockercfg".to_string(),
                        ByteString(
                            br#"{"https://index.docker.io/v1/": {"username": "a", "password": "b"}}"#
                                .to_vec(),
                        ),
                    ),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        let found = from_secret(&secret, "127.0.0.1:5000");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].username, "u");
        assert_eq!(found[0].password, "p");
        let hub = from_secret(&secret, "docker.io");
        assert_eq!(hub[0].username, "a");
        assert!(from_secret(&secret, "example.com").is_empty());
    }
}
