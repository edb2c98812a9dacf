//! The binder's matching and decisions, and the provisioner's volumes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;

use super::binder::*;
use super::provisioner;

fn pv(name: &str, size: &str, modes: &[&str], class: &str) -> Arc<PersistentVolume> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tier": name}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": modes,
                "storageClassName": class,
                "hostPath": {"path": format!("/data/{name}")},
                "persistentVolumeReclaimPolicy": "Retain",
            },
            "status": {"phase": "Available"},
        }))
        .unwrap(),
    )
}

fn pvc(name: &str, size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {
            "accessModes": modes,
            "resources": {"requests": {"storage": size}},
            "storageClassName": class,
        },
        "status": {"phase": "Pending"},
    }))
    .unwrap()
}

fn class(name: &str, mode: &str, provisioner: &str) -> Arc<StorageClass> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "provisioner": provisioner,
            "volumeBindingMode": mode,
            "reclaimPolicy": "Delete",
        }))
        .unwrap(),
    )
}

fn name_of(found: Option<&PersistentVolume>) -> Option<&str> {
    found.and_then(|p| p.metadata.name.as_deref())
}

#[test]
fn smallest_fitting_volume_wins() {
    let pvs = vec![
        pv("big", "10Gi", &["ReadWriteOnce"], "manual"),
        pv("small", "1Gi", &["ReadWriteOnce"], "manual"),
        pv("tiny", "100Mi", &["ReadWriteOnce"], "manual"),
    ];
    let claim = pvc("data", "500Mi", &["ReadWriteOnce"], Some("manual"));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("small"));
    let claim = pvc("data", "2Gi", &["ReadWriteOnce"], Some("manual"));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("big"));
    let claim = pvc("data", "20Gi", &["ReadWriteOnce"], Some("manual"));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), None);
}

#[test]
fn class_access_modes_and_selector_must_match() {
    let pvs = vec![
        pv("rwo", "1Gi", &["ReadWriteOnce"], "manual"),
        pv("rwx", "5Gi", &["ReadWriteOnce", "ReadWriteMany"], "manual"),
        pv("other", "1Gi", &["ReadWriteOnce"], "fast"),
    ];
    let claim = pvc("data", "1Gi", &["ReadWriteMany"], Some("manual"));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("rwx"));
    let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("fast"));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("other"));
    // A claim of no class only takes volumes of no class.
    let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), None);
    let mut claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("manual"));
    claim.spec.as_mut().unwrap().selector =
        Some(serde_json::from_value(json!({"matchLabels": {"tier": "rwx"}})).unwrap());
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("rwx"));
}

#[test]
fn bound_and_prebound_volumes() {
    let mut taken = (*pv("taken", "1Gi", &["ReadWriteOnce"], "manual")).clone();
    taken.spec.as_mut().unwrap().claim_ref = Some(
        serde_json::from_value(json!({"namespace": "default", "name": "other", "uid": "x"}))
            .unwrap(),
    );
    let mut mine = (*pv("mine", "9Gi", &["ReadWriteOnce"], "manual")).clone();
    mine.spec.as_mut().unwrap().claim_ref =
        Some(serde_json::from_value(json!({"namespace": "default", "name": "data"})).unwrap());
    let pvs = vec![
        Arc::new(taken),
        pv("free", "1Gi", &["ReadWriteOnce"], "manual"),
        Arc::new(mine),
    ];
    let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("manual"));
    // Pre-bound to this claim beats the smaller free one; bound to another is never taken.
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("mine"));
    let claim = pvc("else", "1Gi", &["ReadWriteOnce"], Some("manual"));
    assert_eq!(name_of(find_volume(&claim, &pvs, None)), Some("free"));
}

#[test]
fn volume_name_prebinding_is_honoured() {
    let pvs = vec![
        pv("a", "1Gi", &["ReadWriteOnce"], "manual"),
        pv("b", "5Gi", &["ReadWriteOnce"], "manual"),
    ];
    let mut claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("manual"));
    claim.spec.as_mut().unwrap().volume_name = Some("b".into());
    assert_eq!(
        decide_claim(&claim, &pvs, &[], None, provisioner::PROVISIONER),
        ClaimAction::Bind { volume: "b".into() }
    );
    claim.spec.as_mut().unwrap().volume_name = Some("missing".into());
    assert_eq!(
        decide_claim(&claim, &pvs, &[], None, provisioner::PROVISIONER),
        ClaimAction::None
    );
}

#[test]
fn node_affinity_is_checked_against_the_selected_node() {
    let mut local = (*pv("local", "1Gi", &["ReadWriteOnce"], "local")).clone();
    local.spec.as_mut().unwrap().node_affinity = Some(
        serde_json::from_value(
            json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}),
        )
        .unwrap(),
    );
    let pvs = vec![Arc::new(local)];
    let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("local"));
    let n1 = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n1".to_string())]);
    let n2 = BTreeMap::from([("kubernetes.io/hostname".to_string(), "n2".to_string())]);
    assert_eq!(name_of(find_volume(&claim, &pvs, Some(&n1))), Some("local"));
    assert_eq!(name_of(find_volume(&claim, &pvs, Some(&n2))), None);
}

#[test]
fn wait_for_first_consumer_then_provision() {
    let classes = vec![class(
        "local-path",
        "WaitForFirstConsumer",
        provisioner::PROVISIONER,
    )];
    let mut claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("local-path"));
    assert!(matches!(
        decide_claim(&claim, &[], &classes, None, provisioner::PROVISIONER),
        ClaimAction::Wait {
            reason: "WaitForFirstConsumer",
            warning: false,
            ..
        }
    ));
    claim.metadata.annotations = Some(BTreeMap::from([(
        ANN_SELECTED_NODE.to_string(),
        "n1".to_string(),
    )]));
    assert_eq!(
        decide_claim(&claim, &[], &classes, None, provisioner::PROVISIONER),
        ClaimAction::Provision {
            node: Some("n1".into())
        }
    );
    // Another provisioner's class: wait for it.
    let classes = vec![class("local-path", "Immediate", "example.com/nfs")];
    assert!(matches!(
        decide_claim(&claim, &[], &classes, None, provisioner::PROVISIONER),
        ClaimAction::Wait {
            reason: "ExternalProvisioning",
            ..
        }
    ));
    let claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some(""));
    assert!(matches!(
        decide_claim(&claim, &[], &[], None, provisioner::PROVISIONER),
        ClaimAction::Wait {
            reason: "FailedBinding",
            ..
        }
    ));
}

#[test]
fn provisioned_volume_is_pinned_and_prebound() {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"},
                     "annotations": {provisioner::ANN_NODE_ROOT: "/var/lib/skiff/storage"}},
    }))
    .unwrap();
    let class = class(
        "local-path",
        "WaitForFirstConsumer",
        provisioner::PROVISIONER,
    );
    let claim = pvc("data", "2Gi", &["ReadWriteOnce"], Some("local-path"));
    let pv = provisioner::build(&claim, &class, Some(&node), Some("n1")).unwrap();
    let v = serde_json::to_value(&pv).unwrap();
    assert_eq!(v["metadata"]["name"], "pvc-uid-data");
    assert_eq!(
        v["spec"]["hostPath"]["path"],
        "/var/lib/skiff/storage/pvc-uid-data_default_data"
    );
    assert_eq!(v["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(v["spec"]["claimRef"]["uid"], "uid-data");
    assert_eq!(
        v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
            [0],
        "n1"
    );
    assert!(provisioner::is_local_path(&pv));
    assert_eq!(
        provisioner::build(&claim, &class, None, None).unwrap_err(),
        provisioner::ProvisionError::NoNode
    );
    // The provisioned volume is what the claim then binds to.
    let pvs = vec![Arc::new(pv)];
    assert_eq!(
        name_of(find_volume(&claim, &pvs, None)),
        Some("pvc-uid-data")
    );
}

#[test]
fn released_volumes_follow_their_reclaim_policy() {
    let mut bound = (*pv("v", "1Gi", &["ReadWriteOnce"], "manual")).clone();
    bound.spec.as_mut().unwrap().claim_ref = Some(
        serde_json::from_value(json!({"namespace": "default", "name": "data", "uid": "uid-data"}))
            .unwrap(),
    );
    bound.status.as_mut().unwrap().phase = Some("Bound".into());
    let mut claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("manual"));
    claim.spec.as_mut().unwrap().volume_name = Some("v".into());
    assert_eq!(decide_volume(&bound, Some(&claim)), VolumeAction::None);
    // The claim is gone (or replaced by another of the same name).
    assert_eq!(decide_volume(&bound, None), VolumeAction::Release);
    let other = pvc("data", "1Gi", &["ReadWriteOnce"], Some("manual"));
    let mut other = other.clone();
    other.metadata.uid = Some("new".into());
    assert_eq!(decide_volume(&bound, Some(&other)), VolumeAction::Release);
    bound.status.as_mut().unwrap().phase = Some("Released".into());
    assert_eq!(decide_volume(&bound, None), VolumeAction::None);
    bound
        .spec
        .as_mut()
        .unwrap()
        .persistent_volume_reclaim_policy = Some("Delete".into());
    assert!(matches!(
        decide_volume(&bound, None),
        VolumeAction::Phase("Failed", m) if m.contains("no deletable volume plugin matched")
    ));
    // A new volume becomes Available.
    let mut fresh = (*pv("n", "1Gi", &["ReadWriteOnce"], "manual")).clone();
    fresh.status = None;
    assert_eq!(
        decide_volume(&fresh, None),
        VolumeAction::Phase("Available", String::new())
    );
}

#[test]
fn completed_binding_needs_nothing() {
    let mut bound = (*pv("v", "1Gi", &["ReadWriteOnce"], "manual")).clone();
    bound.spec.as_mut().unwrap().claim_ref = Some(
        serde_json::from_value(json!({"namespace": "default", "name": "data", "uid": "uid-data"}))
            .unwrap(),
    );
    bound.status.as_mut().unwrap().phase = Some("Bound".into());
    let mut claim = pvc("data", "1Gi", &["ReadWriteOnce"], Some("manual"));
    claim.spec.as_mut().unwrap().volume_name = Some("v".into());
    let pvs = vec![Arc::new(bound)];
    assert_eq!(
        decide_claim(&claim, &pvs, &[], None, provisioner::PROVISIONER),
        ClaimAction::Bind { volume: "v".into() }
    );
    claim.status.as_mut().unwrap().phase = Some("Bound".into());
    claim.metadata.annotations = Some(BTreeMap::from([(
        ANN_BIND_COMPLETED.to_string(),
        "yes".to_string(),
    )]));
    assert_eq!(
        decide_claim(&claim, &pvs, &[], None, provisioner::PROVISIONER),
        ClaimAction::None
    );
    // The volume vanished under a Bound claim.
    assert!(matches!(
        decide_claim(&claim, &[], &[], None, provisioner::PROVISIONER),
        ClaimAction::Lost { .. }
    ));
}
