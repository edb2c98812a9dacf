//! What the agent keeps of the API objects it watches: everything but `managedFields`
//! (server-side apply's record of which manager owns which field, a few KiB per pod once a
//! few status updates went through), which no part of the agent reads; the kubelet's
//! informers drop it too. Annotations stay: the downward API hands them to containers.

use kube::Resource;

/// Drops `object`'s `managedFields` before it is kept (for `WatchStreamExt::modify`).
pub fn strip<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn strip_drops_managed_fields_and_keeps_the_rest() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u1",
                "labels": {"app": "web"},
                "annotations": {"team": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let mut expected = pod.clone();
        expected.metadata.managed_fields = None;
        strip(&mut pod);
        assert_eq!(pod, expected);
        assert_eq!(pod.metadata.annotations.unwrap_or_default()["team"], "a");
    }
}
