//! The built-in PriorityClasses `system-cluster-critical` (2000000000) and
//! `system-node-critical` (2000001000), created by the server at start when missing, as
//! kube-apiserver does; a deleted one comes back at the next start.

use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
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
        crate::builtin::create_if_missing(&api, &class, name).await;
    }
}
