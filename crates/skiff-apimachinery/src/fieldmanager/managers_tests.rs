//! Tests of [`super`]: apply's merge, pruning, conflicts and force; updates' ownership.

use super::*;
use crate::fieldmanager::path::PathElement;
use crate::registry::{Registry, ResourceInfo};

fn deployments() -> ResourceInfo {
    Registry::builtin()
        .find("apps", "v1", "deployments")
        .unwrap()
        .clone()
}

fn writer<'a>(manager: &'a str, now: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: "apps/v1",
        scope: Scope::Main {
            status_subresource: true,
        },
        now,
    }
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "web", "image": image}
        ]}}}
    })
}

fn fields_of(managed: &ManagedFields, manager: &str) -> Value {
    managed
        .entries
        .iter()
        .find(|e| e.manager == manager)
        .map(|e| e.fields.to_fields_v1())
        .unwrap_or(Value::Null)
}

#[test]
fn a_second_applier_conflicts_on_a_different_value_and_shares_an_equal_one() {
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let empty = json!({});
    let none = ManagedFields::default();
    let (live, managed) = apply(
        &empty,
        &deployment(1, "nginx"),
        &none,
        &ty,
        &writer("a", "t1"),
        false,
    )
    .unwrap();
    assert_eq!(live["spec"]["replicas"], 1);

    // Same values: shared, no conflict.
    let (same, shared) = apply(
        &live,
        &deployment(1, "nginx"),
        &managed,
        &ty,
        &writer("b", "t2"),
        false,
    )
    .unwrap();
    assert_eq!(same, live);
    assert_eq!(fields_of(&shared, "a"), fields_of(&shared, "b"));

    // Different values: conflicts, named as kube names them.
    let err = apply(
        &live,
        &deployment(3, "nginx:2"),
        &shared,
        &ty,
        &writer("c", "t3"),
        false,
    )
    .unwrap_err();
    let ApplyError::Conflicts(conflicts) = err else {
        panic!("expected conflicts");
    };
    assert_eq!(
        conflict_message(&conflicts),
        "Apply failed with 4 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image\nconflicts with \"b\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
    );

    // Forced: c takes the fields over.
    let (forced, after) = apply(
        &live,
        &deployment(3, "nginx:2"),
        &shared,
        &ty,
        &writer("c", "t3"),
        true,
    )
    .unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert!(
        !after
            .entries
            .iter()
            .find(|e| e.manager == "a")
            .unwrap()
            .fields
            .has(&[
                PathElement::Field("spec".into()),
                PathElement::Field("replicas".into())
            ])
    );
    assert!(
        after
            .entries
            .iter()
            .find(|e| e.manager == "c")
            .unwrap()
            .fields
            .has(&[
                PathElement::Field("spec".into()),
                PathElement::Field("replicas".into())
            ])
    );
}

#[test]
fn fields_an_applier_stops_applying_are_removed_unless_another_applies_them() {
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let none = ManagedFields::default();
    let mut first = deployment(1, "nginx");
    first["metadata"]["labels"]["tier"] = json!("front");
    let (live, managed) = apply(&json!({}), &first, &none, &ty, &writer("a", "t1"), false).unwrap();
    let (live, managed) = apply(
        &live,
        &json!({"metadata": {"labels": {"app": "web"}}}),
        &managed,
        &ty,
        &writer("b", "t2"),
        false,
    )
    .unwrap();
    let mut second = deployment(1, "nginx");
    second["metadata"]["labels"] = json!({"tier": "front"});
    let (pruned, managed) =
        apply(&live, &second, &managed, &ty, &writer("a", "t3"), false).unwrap();
    // app stays (b applies it), tier stays (a still applies it).
    assert_eq!(
        pruned["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );
    let (pruned, _) = apply(
        &pruned,
        &json!({"spec": {"replicas": 1}}),
        &managed,
        &ty,
        &writer("a", "t4"),
        false,
    )
    .unwrap();
    assert_eq!(pruned["metadata"]["labels"], json!({"app": "web"}));
    assert!(pruned["spec"].get("template").is_none(), "{pruned}");
}

#[test]
fn a_list_owned_as_a_whole_goes_only_with_its_items() {
    // What kubectl's migration from client-side apply leaves: the applier owns the
    // containers list itself and defaulted fields, as the creating update recorded them.
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let mut live = deployment(1, "nginx");
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
    live["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
    let created = update(
        &json!({}),
        &live,
        &ManagedFields::default(),
        &ty,
        &writer("kubectl", "t1"),
    )
    .unwrap();
    let mut migrated = created.clone();
    migrated.entries[0].operation = Operation::Apply;
    let (merged, _) = apply(
        &live,
        &deployment(1, "nginx"),
        &migrated,
        &ty,
        &writer("kubectl", "t2"),
        false,
    )
    .unwrap();
    let spec = &merged["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"],
        json!([{"name": "web", "image": "nginx"}])
    );
    assert!(spec.get("dnsPolicy").is_none(), "{merged}");
    assert_eq!(merged["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn an_update_takes_what_it_changed_from_the_applier() {
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let (live, managed) = apply(
        &json!({}),
        &deployment(1, "nginx"),
        &ManagedFields::default(),
        &ty,
        &writer("kubectl", "t1"),
        false,
    )
    .unwrap();
    let mut edited = live.clone();
    edited["spec"]["replicas"] = json!(5);
    let after = update(&live, &edited, &managed, &ty, &writer("kubectl-edit", "t2")).unwrap();
    assert_eq!(
        fields_of(&after, "kubectl-edit"),
        json!({"f:spec": {"f:replicas": {}}})
    );
    let value = after.to_value();
    assert_eq!(value[0]["operation"], "Apply");
    assert_eq!(value[1]["operation"], "Update");
    assert_eq!(value[1]["time"], "t2");
    // The applier now conflicts with the editor on replicas, named with its version.
    let err = apply(
        &edited,
        &deployment(1, "nginx"),
        &after,
        &ty,
        &writer("kubectl", "t3"),
        false,
    )
    .unwrap_err();
    let ApplyError::Conflicts(conflicts) = err else {
        panic!("expected conflicts");
    };
    assert_eq!(
        conflict_message(&conflicts),
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
    );
    // A no-op update records nothing.
    let again = update(&edited, &edited, &after, &ty, &writer("x", "t4")).unwrap();
    assert_eq!(again, after);
}

#[test]
fn an_object_without_managed_fields_is_first_owned_by_before_first_apply() {
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let live = deployment(1, "nginx");
    let err = apply(
        &live,
        &deployment(2, "nginx"),
        &ManagedFields::default(),
        &ty,
        &writer("kubectl", "t1"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![Conflict {
            manager: "\"before-first-apply\" using apps/v1".into(),
            path: Path(vec![
                PathElement::Field("spec".into()),
                PathElement::Field("replicas".into())
            ]),
        }])
    );
}

#[test]
fn status_writes_own_status_only() {
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let live = deployment(1, "nginx");
    let mut new = live.clone();
    new["status"] = json!({"replicas": 1});
    new["spec"]["replicas"] = json!(9);
    let status_writer = Writer {
        scope: Scope::Status,
        ..writer("controller", "t1")
    };
    let managed = update(&live, &new, &ManagedFields::default(), &ty, &status_writer).unwrap();
    assert_eq!(
        fields_of(&managed, "controller"),
        json!({"f:status": {"f:replicas": {}}})
    );
    assert_eq!(managed.to_value()[0]["subresource"], "status");
}

#[test]
fn managed_fields_round_trip_and_drop_empty_entries() {
    let value = json!([
        {"manager": "a", "operation": "Update", "apiVersion": "v1", "time": "t1",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:x": {}}}},
        {"manager": "b", "operation": "Apply", "apiVersion": "v1", "time": "t2",
         "fieldsType": "FieldsV1", "fieldsV1": {}}
    ]);
    let managed = ManagedFields::from_value(&value).unwrap();
    assert_eq!(managed.entries.len(), 2);
    assert_eq!(managed.to_value(), json!([value[0].clone()]));
    assert!(ManagedFields::from_value(&json!([{"operation": "Nope"}])).is_err());
}

#[test]
fn a_created_deployment_is_owned_as_kube_records_it() {
    // kube-apiserver's entry for this POST (its typed zero object holds `containers` and the
    // value structs, so they carry no `.`; the pointer `rollingUpdate` does).
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let mut sent = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api-test-json", "labels": {"app": "api-test-json"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api-test-json"}},
            "template": {"metadata": {"labels": {"app": "api-test-json"}},
                "spec": {"containers": [{"name": "nginx-json", "image": "nginx:1.19"}]}}}
    });
    crate::apply_scheme_defaults(&info, &mut sent);
    let managed = update(
        &json!({}),
        &sent,
        &ManagedFields::default(),
        &ty,
        &writer("curl", "t1"),
    )
    .unwrap();
    let expected: Value = serde_json::from_str(
        r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:progressDeadlineSeconds":{},"f:replicas":{},"f:revisionHistoryLimit":{},"f:selector":{},"f:strategy":{"f:rollingUpdate":{".":{},"f:maxSurge":{},"f:maxUnavailable":{}},"f:type":{}},"f:template":{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx-json\"}":{".":{},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{}}}}}"#,
    )
    .unwrap();
    assert_eq!(fields_of(&managed, "curl"), expected);
}

#[test]
fn structs_inside_new_list_items_are_owned_with_their_dot() {
    let info = deployments();
    let ty = TypeRef::of_resource(&info);
    let old = deployment(1, "nginx");
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"memory": "1Gi"}});
    new["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "busybox",
                     "securityContext": {"privileged": true}}));
    let managed = update(
        &old,
        &new,
        &ManagedFields::default(),
        &ty,
        &writer("w", "t1"),
    )
    .unwrap();
    let containers = &fields_of(&managed, "w")["f:spec"]["f:template"]["f:spec"]["f:containers"];
    // `resources` is held by value in the existing container; `securityContext` is new.
    assert_eq!(
        containers["k:{\"name\":\"web\"}"],
        json!({"f:resources": {"f:limits": {".": {}, "f:memory": {}}}})
    );
    assert_eq!(
        containers["k:{\"name\":\"side\"}"]["f:securityContext"],
        json!({".": {}, "f:privileged": {}})
    );
}
