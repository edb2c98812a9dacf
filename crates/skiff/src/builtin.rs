//! Objects the server puts into the cluster at start when they are missing (the default
//! IngressClass, StorageClass and PriorityClasses): created once, never overwritten, so an
//! administrator's changes stay; a deleted one comes back at the next start.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Api;
use kube::api::PostParams;

/// Creates `object` unless an object of its name exists, retrying with back-off (50 ms up
/// to 2 s) until the API answers; `what` names it in the logs.
pub async fn create_if_missing<K>(api: &Api<K>, object: &K, what: &str)
where
    K: Clone + Debug + Serialize + DeserializeOwned,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(err) => tracing::debug!(error = %err, what, "creating a built-in object; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
