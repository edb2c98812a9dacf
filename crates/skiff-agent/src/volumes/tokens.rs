//! Service account tokens for `projected` volumes, as the kubelet's token manager: requested
//! through the TokenRequest API (`serviceaccounts/<sa>/token`) for the pod's ServiceAccount,
//! bound to the pod, and kept until 80% of their lifetime (or 24 hours) has passed.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::container::pod_ref;

/// The lifetime asked for when the projection names none (the API's default).
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// A token is renewed after this much of its life at the latest.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// (pod uid, volume, audience, expirationSeconds) -> (token, fetched, lifetime).
type Cache = HashMap<(String, String, String, i64), (String, Instant, Duration)>;

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether a token fetched `age` ago with `lifetime` should be renewed now.
pub fn needs_refresh(age: Duration, lifetime: Duration) -> bool {
    age >= lifetime.mul_f64(0.8) || age >= MAX_AGE
}

/// The token of `pod`'s ServiceAccount for `audience` (empty: the API server's), bound to
/// the pod; cached until it is due for renewal.
pub async fn token(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    audience: &str,
    expiration: i64,
) -> Result<String, String> {
    let pref = pod_ref(pod);
    let key = (
        pref.uid.clone(),
        volume.to_string(),
        audience.to_string(),
        expiration,
    );
    if let Ok(cache) = CACHE.lock()
        && let Some((token, fetched, lifetime)) = cache.get(&key)
        && !needs_refresh(fetched.elapsed(), *lifetime)
    {
        return Ok(token.clone());
    }
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let audiences: Vec<&str> = if audience.is_empty() {
        Vec::new()
    } else {
        vec![audience]
    };
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pref.name, "uid": pref.uid},
        },
    });
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &pref.namespace);
    let answer: Value = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
    let token = answer
        .pointer("/status/token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("failed to fetch token: the TokenRequest has no token")?
        .to_string();
    let lifetime = Duration::from_secs(u64::try_from(expiration).unwrap_or(0));
    if let Ok(mut cache) = CACHE.lock() {
        cache.insert(key, (token.clone(), Instant::now(), lifetime));
    }
    Ok(token)
}

/// Forgets the tokens of pod `uid` (it is gone).
pub fn forget(uid: &str) {
    if let Ok(mut cache) = CACHE.lock() {
        cache.retain(|(u, _, _, _), _| u != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_80_percent_or_a_day() {
        let hour = Duration::from_secs(3600);
        assert!(!needs_refresh(Duration::from_secs(2000), hour));
        assert!(needs_refresh(Duration::from_secs(2880), hour));
        assert!(needs_refresh(MAX_AGE, hour * 48));
    }

    #[test]
    fn forget_drops_every_token_of_the_pod_and_only_those() {
        let entry = (String::from("t"), Instant::now(), Duration::from_secs(3600));
        let key =
            |uid: &str, volume: &str| (uid.to_string(), volume.to_string(), String::new(), 3600);
        {
            let mut cache = CACHE.lock().unwrap();
            cache.insert(key("forget-gone", "a"), entry.clone());
            cache.insert(key("forget-gone", "b"), entry.clone());
            cache.insert(key("forget-kept", "a"), entry.clone());
        }
        forget("forget-gone");
        let cache = CACHE.lock().unwrap();
        assert!(!cache.keys().any(|(uid, ..)| uid == "forget-gone"));
        assert!(cache.contains_key(&key("forget-kept", "a")));
    }
}
