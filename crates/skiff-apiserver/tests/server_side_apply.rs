//! Server-side apply and `metadata.managedFields` over HTTP: conflicts as kube's 409
//! `Status`, `force`, fields removed when an applier stops applying them, `Update` entries
//! for other writes, status applies owning status only, the cap of ten `Update` entries
//! (`ancient-changes`), admission's additions owned by nobody, and appliers in two versions
//! of a custom resource.
#![allow(clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use skiff_apiserver::ServerOptions;
use skiff_apiserver::default_tolerations::DefaultTolerationSeconds;
use support::{api, api_with};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const APPLY: &str = "application/apply-patch+yaml";

fn deployment(replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}
            }
        }
    })
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[tokio::test]
async fn a_second_manager_conflicts_until_it_forces() {
    let api = api().await;
    let path = format!("{DEPLOYS}/web");
    let created = api
        .patch(
            &format!("{path}?fieldManager=alice"),
            APPLY,
            deployment(1, json!({"app": "web"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let alice = entry(&created.body, "alice", "Apply").unwrap();
    assert_eq!(alice["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    assert_eq!(alice["fieldsV1"]["f:spec"]["f:selector"], json!({}));
    let time = alice["time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-01-01T00:00:00Z".len(), "{time}");

    // The same value is shared, without conflict.
    let shared = api
        .patch(
            &format!("{path}?fieldManager=bob"),
            APPLY,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}}),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{}", shared.body);

    let conflict = api
        .patch(
            &format!("{path}?fieldManager=carol"),
            APPLY,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.body["reason"], "Conflict");
    assert_eq!(
        conflict.body["message"],
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\nconflicts with \"bob\":\n- .spec.replicas"
    );
    assert_eq!(
        conflict.body["details"]["causes"],
        json!([
            {"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"},
            {"reason": "FieldManagerConflict", "message": "conflict with \"bob\"", "field": ".spec.replicas"}
        ])
    );

    let forced = api
        .patch(
            &format!("{path}?fieldManager=carol&force=true"),
            APPLY,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    assert_eq!(forced.body["spec"]["replicas"], 3);
    let alice = entry(&forced.body, "alice", "Apply").unwrap();
    assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    // bob owned nothing else: its entry is gone.
    assert!(entry(&forced.body, "bob", "Apply").is_none());
    assert!(entry(&forced.body, "carol", "Apply").is_some());
}

#[tokio::test]
async fn a_field_left_out_of_the_next_apply_is_removed() {
    let api = api().await;
    let path = format!("{DEPLOYS}/web?fieldManager=alice");
    let first = api
        .patch(
            &path,
            APPLY,
            deployment(1, json!({"app": "web", "tier": "front"})),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = api
        .patch(&path, APPLY, deployment(1, json!({"app": "web"})))
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["metadata"]["labels"], json!({"app": "web"}));
}

#[tokio::test]
async fn other_writes_record_update_entries_that_take_fields_over() {
    let api = api().await;
    let path = format!("{DEPLOYS}/web");
    let created = api
        .patch(
            &format!("{path}?fieldManager=alice"),
            APPLY,
            deployment(1, json!({"app": "web"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let scaled = api
        .patch(
            &format!("{path}?fieldManager=editor"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(scaled.status, StatusCode::OK, "{}", scaled.body);
    let editor = entry(&scaled.body, "editor", "Update").unwrap();
    assert_eq!(editor["apiVersion"], "apps/v1");
    assert_eq!(editor["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let alice = entry(&scaled.body, "alice", "Apply").unwrap();
    assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());

    let conflict = api
        .patch(
            &format!("{path}?fieldManager=alice"),
            APPLY,
            deployment(1, json!({"app": "web"})),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(
        conflict.body["message"],
        "Apply failed with 1 conflict: conflict with \"editor\" using apps/v1: .spec.replicas"
    );

    // A create by POST records the creator as an Update manager.
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {"x": "1"}});
    let posted = api
        .post(
            "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create",
            cm.clone(),
        )
        .await;
    assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.body);
    assert_eq!(
        entry(&posted.body, "kubectl-create", "Update").unwrap()["fieldsV1"],
        json!({"f:data": {".": {}, "f:x": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
    // A PUT that changes nothing records nothing new.
    cm = posted.body.clone();
    let same = api
        .put(
            "/api/v1/namespaces/default/configmaps/c?fieldManager=other",
            cm,
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.body);
    assert!(entry(&same.body, "other", "Update").is_none());
    assert_eq!(
        same.body["metadata"]["resourceVersion"],
        posted.body["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn a_status_apply_owns_status_fields_only() {
    let api = api().await;
    let path = format!("{DEPLOYS}/web");
    let created = api
        .patch(
            &format!("{path}?fieldManager=alice"),
            APPLY,
            deployment(1, json!({"app": "web"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let status = api
        .patch(
            &format!("{path}/status?fieldManager=controller"),
            APPLY,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": 7}, "status": {"observedGeneration": 1}}),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["spec"]["replicas"], 1);
    assert_eq!(status.body["status"]["observedGeneration"], 1);
    let controller = entry(&status.body, "controller", "Apply").unwrap();
    assert_eq!(controller["subresource"], "status");
    assert_eq!(
        controller["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}}})
    );
}

#[tokio::test]
async fn an_apply_without_a_list_key_is_a_bad_request() {
    let api = api().await;
    let mut body = deployment(1, json!({"app": "web"}));
    body["spec"]["template"]["spec"]["containers"] = json!([{"image": "nginx"}]);
    let reply = api
        .patch(&format!("{DEPLOYS}/web?fieldManager=alice"), APPLY, body)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("omits key field \"name\""),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn a_creator_owns_what_it_sent_and_its_defaults_but_not_what_admission_added() {
    let api = api_with(ServerOptions {
        default_toleration_seconds: Some(DefaultTolerationSeconds::default()),
        ..ServerOptions::default()
    })
    .await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let created = api
        .post("/api/v1/namespaces/default/pods?fieldManager=creator", pod)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert!(
        created.body["spec"]["tolerations"].is_array(),
        "{}",
        created.body
    );
    let fields = &entry(&created.body, "creator", "Update").unwrap()["fieldsV1"]["f:spec"];
    assert!(fields.get("f:tolerations").is_none(), "{fields}");
    assert_eq!(fields["f:restartPolicy"], json!({}), "{fields}");
    assert_eq!(
        fields["f:containers"]["k:{\"name\":\"c\"}"]["f:image"],
        json!({}),
        "{fields}"
    );
}

#[tokio::test]
async fn past_ten_update_managers_the_oldest_merge_into_ancient_changes() {
    let api = api().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let created = api
        .post(
            &format!("{cms}?fieldManager=m01"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "many"},
                   "data": {"k01": "x"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let mut last = created.body;
    for i in 2..=12 {
        let reply = api
            .patch(
                &format!("{cms}/many?fieldManager=m{i:02}"),
                "application/merge-patch+json",
                json!({"data": {format!("k{i:02}"): "x"}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        last = reply.body;
    }
    let stored = api.get(&format!("{cms}/many")).await;
    assert_eq!(
        stored.body["metadata"]["managedFields"],
        last["metadata"]["managedFields"]
    );
    let entries = last["metadata"]["managedFields"].as_array().unwrap();
    let updates: Vec<&str> = entries
        .iter()
        .filter(|e| e["operation"] == "Update")
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(updates.len(), 10, "{updates:?}");
    for gone in ["m01", "m02", "m03"] {
        assert!(!updates.contains(&gone), "{updates:?}");
    }
    let ancient = entry(&last, "ancient-changes", "Update").unwrap();
    assert_eq!(ancient["apiVersion"], "v1");
    assert_eq!(
        ancient["fieldsV1"],
        json!({"f:data": {".": {}, "f:k01": {}, "f:k02": {}, "f:k03": {}}})
    );
    assert_eq!(
        entry(&last, "m04", "Update").unwrap()["fieldsV1"],
        json!({"f:data": {"f:k04": {}}})
    );
}

/// What kube-apiserver records for a pod, its field manager running before mutating admission
/// (ServiceAccount, Priority, DefaultTolerationSeconds) and the REST strategy: an applier owns
/// what it applied, a creator what it sent and the scheme's defaults, nobody what admission
/// added.
#[tokio::test]
async fn admission_changes_to_a_pod_are_owned_by_nobody() {
    let api = api_with(ServerOptions {
        default_toleration_seconds: Some(DefaultTolerationSeconds::default()),
        service_account_admission: true,
        ..ServerOptions::default()
    })
    .await;
    let pods = "/api/v1/namespaces/default/pods";
    let sa = api
        .post(
            "/api/v1/namespaces/default/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        )
        .await;
    assert_eq!(sa.status, StatusCode::CREATED, "{}", sa.body);
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    };
    let container = "k:{\"name\":\"c\"}";

    let applied = api
        .patch(&format!("{pods}/a?fieldManager=applier"), APPLY, pod("a"))
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.body);
    let spec = &applied.body["spec"];
    assert_eq!(spec["serviceAccountName"], "default", "{spec}");
    assert_eq!(spec["priority"], 0, "{spec}");
    assert!(spec["tolerations"].is_array(), "{spec}");
    assert!(
        spec["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "{spec}"
    );
    assert_eq!(
        applied.body["metadata"]["managedFields"],
        json!([{"manager": "applier", "operation": "Apply", "apiVersion": "v1",
                "time": applied.body["metadata"]["managedFields"][0]["time"],
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {container: {
                    ".": {}, "f:image": {}, "f:name": {}}}}}}])
    );
    // The same apply again conflicts with nobody and removes nothing admission added.
    let again = api
        .patch(&format!("{pods}/a?fieldManager=applier"), APPLY, pod("a"))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["spec"], applied.body["spec"]);
    // Another writer owns only what it changed.
    let labelled = api
        .patch(
            &format!("{pods}/a?fieldManager=labeller"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"tier": "web"}}}),
        )
        .await;
    assert_eq!(labelled.status, StatusCode::OK, "{}", labelled.body);
    assert_eq!(
        entry(&labelled.body, "labeller", "Update").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
    );

    // kube's `kubectl-create` entry for this pod, exactly.
    let created = api
        .post(&format!("{pods}?fieldManager=creator"), pod("b"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["spec"]["serviceAccountName"], "default");
    assert_eq!(
        created.body["spec"]["preemptionPolicy"],
        "PreemptLowerPriority"
    );
    assert_eq!(
        entry(&created.body, "creator", "Update").unwrap()["fieldsV1"],
        json!({"f:spec": {
            "f:containers": {container: {
                ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:resources": {},
                "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
            "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {},
            "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}})
    );
    assert_eq!(
        created.body["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A CRD served in two versions without conversion: the managed fields of one version are the
/// same paths in the other, so appliers in different versions conflict and share as in one,
/// and each entry keeps the version it was written in.
#[tokio::test]
async fn appliers_in_two_versions_of_a_custom_resource_conflict_on_the_same_fields() {
    let api = api().await;
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "size": {"type": "integer"},
            "mode": {"type": "string"},
            "replicas": {"type": "integer", "default": 1}}}}}});
    let version = |name: &str, storage: bool| json!({"name": name, "served": true, "storage": storage, "schema": schema});
    let crd = api
        .post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": {"name": "gadgets.example.com"},
                   "spec": {"group": "example.com", "scope": "Namespaced",
                            "names": {"plural": "gadgets", "kind": "Gadget"},
                            "conversion": {"strategy": "None"},
                            "versions": [version("v1", true), version("v2", false)]}}),
        )
        .await;
    assert_eq!(crd.status, StatusCode::CREATED, "{}", crd.body);
    let path = |v: &str| format!("/apis/example.com/{v}/namespaces/default/gadgets/g");
    let gadget = |v: &str, spec: Value| {
        json!({"apiVersion": format!("example.com/{v}"), "kind": "Gadget",
               "metadata": {"name": "g"}, "spec": spec})
    };

    let first = api
        .patch(
            &format!("{}?fieldManager=alice", path("v1")),
            APPLY,
            gadget("v1", json!({"size": 1, "mode": "slow"})),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let alice = entry(&first.body, "alice", "Apply").unwrap();
    assert_eq!(alice["apiVersion"], "example.com/v1");
    assert_eq!(
        alice["fieldsV1"],
        json!({"f:spec": {"f:mode": {}, "f:size": {}}})
    );

    // The same value in v2 is shared; another one conflicts with the v1 applier.
    let shared = api
        .patch(
            &format!("{}?fieldManager=bob", path("v2")),
            APPLY,
            gadget("v2", json!({"mode": "slow"})),
        )
        .await;
    assert_eq!(shared.status, StatusCode::OK, "{}", shared.body);
    assert_eq!(shared.body["apiVersion"], "example.com/v2");
    let conflict = api
        .patch(
            &format!("{}?fieldManager=bob", path("v2")),
            APPLY,
            gadget("v2", json!({"mode": "slow", "size": 2})),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(
        conflict.body["message"],
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.size"
    );
    let forced = api
        .patch(
            &format!("{}?fieldManager=bob&force=true", path("v2")),
            APPLY,
            gadget("v2", json!({"mode": "slow", "size": 2})),
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    let bob = entry(&forced.body, "bob", "Apply").unwrap();
    assert_eq!(bob["apiVersion"], "example.com/v2");
    assert_eq!(
        bob["fieldsV1"],
        json!({"f:spec": {"f:mode": {}, "f:size": {}}})
    );
    let alice = entry(&forced.body, "alice", "Apply").unwrap();
    assert_eq!(alice["apiVersion"], "example.com/v1");
    assert_eq!(alice["fieldsV1"], json!({"f:spec": {"f:mode": {}}}));

    // An update in v2 is an entry of that version, which v1 appliers conflict with.
    let patched = api
        .patch(
            &format!("{}?fieldManager=carol", path("v2")),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let carol = entry(&patched.body, "carol", "Update").unwrap();
    assert_eq!(carol["apiVersion"], "example.com/v2");
    let back = api
        .patch(
            &format!("{}?fieldManager=alice", path("v1")),
            APPLY,
            gadget("v1", json!({"mode": "slow", "size": 1, "replicas": 1})),
        )
        .await;
    assert_eq!(back.status, StatusCode::CONFLICT, "{}", back.body);
    assert_eq!(
        back.body["message"],
        "Apply failed with 2 conflicts: conflicts with \"bob\":\n- .spec.size\nconflicts with \"carol\" using example.com/v2:\n- .spec.replicas"
    );
    let read = api.get(&path("v1")).await;
    assert_eq!(read.body["apiVersion"], "example.com/v1");
    assert_eq!(
        read.body["spec"],
        json!({"size": 2, "mode": "slow", "replicas": 3})
    );
}
