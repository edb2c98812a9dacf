//! Server-side apply and `metadata.managedFields` over HTTP: conflicts as kube's 409
//! `Status`, `force`, fields removed when an applier stops applying them, `Update` entries
//! for other writes, status applies owning status only.
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
