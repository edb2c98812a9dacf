//! The built-in PriorityClasses `system-cluster-critical` (2000000000) and
//! `system-node-critical` (2000001000), created by the server at start when missing, as
//! kube-apiserver does; a deleted one comes back at the next start.

use std::time::Duration;

use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use skiff_apiserver::priority::{PREEMPT_LOWER_PRIORITY, SYSTEM_CLASSES};

/// Creates the built-in classes that are missing, retrying until the API answers.
pub async fn ensure(client: kube::Client) {
    let api: Api<PriorityClass> = Api::all(client);
    for (name, value, description) in SYSTEM_CLASSES {
        let Ok(value) = i32::try_from(value) else {
            continue;
        };
        let class = PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            value,
            description: Some(description.to_string()),
            global_default: Some(false),
            preemption_policy: Some(PREEMPT_LOWER_PRIORITY.to_string()),
        };
        let mut delay = Duration::from_millis(50);
        loop {
            match api.create(&PostParams::default(), &class).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 409 => break,
                Err(err) => {
                    tracing::debug!(error = %err, name, "creating a PriorityClass; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}
