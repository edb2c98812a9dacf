//! The API server's HTTP behaviour, driven through its router over an in-memory store: what
//! kubectl and client libraries rely on, request by request.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_apiserver::ServerOptions;
use support::{TOKEN, api, api_with};
use tower::ServiceExt;

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "web"}}, "data": {"a": "1"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn requests_without_the_token_are_unauthorized_but_health_is_open() {
    let api = api().await;
    let request = Request::builder()
        .uri("/api/v1/namespaces")
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let request = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn system_namespaces_exist_at_start() {
    let api = api().await;
    let list = api.get("/api/v1/namespaces").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&ns), "{names:?}");
    }
}

#[tokio::test]
async fn create_get_update_conflict_and_delete() {
    let api = api().await;
    let created = api.post(CMS, cm("one")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created.body["metadata"]["namespace"], "default");
    assert_eq!(created.body["metadata"]["uid"].as_str().unwrap().len(), 36);

    let again = api.post(CMS, cm("one")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(again.body["message"], "configmaps \"one\" already exists");

    let mut changed = created.body.clone();
    changed["data"]["a"] = json!("2");
    let updated = api.put(&format!("{CMS}/one"), changed.clone()).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_ne!(updated.body["metadata"]["resourceVersion"], json!(rv));

    let stale = api.put(&format!("{CMS}/one"), changed).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["reason"], "Conflict");
    assert!(stale.body["message"].as_str().unwrap().contains(
        "the object has been modified; please apply your changes to the latest version and try again"
    ));

    let missing = api.get(&format!("{CMS}/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["message"], "configmaps \"nope\" not found");

    let deleted = api.delete(&format!("{CMS}/one")).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        api.get(&format!("{CMS}/one")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn creating_in_a_missing_namespace_is_not_found() {
    let api = api().await;
    let reply = api
        .post("/api/v1/namespaces/ghost/configmaps", cm("x"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["message"], "namespaces \"ghost\" not found");
}

#[tokio::test]
async fn malformed_unknown_and_oversized_requests_get_statuses() {
    let api = api().await;
    let bad = api
        .send(
            Method::POST,
            CMS,
            "application/json",
            b"{\"metadata\": ".to_vec(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body["message"].as_str().unwrap().contains("line 1"),
        "{}",
        bad.body
    );

    let unknown = api.get("/apis/example.com/v1/widgets").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["kind"], "Status");

    let huge = vec![b' '; skiff_apiserver::MAX_BODY + 10];
    let reply = api.send(Method::POST, CMS, "application/json", huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let smp = api
        .patch(
            &format!("{CMS}/x"),
            "application/strategic-merge-patch+json",
            json!({}),
        )
        .await;
    assert!(smp.status.is_client_error());
    let weird = api
        .patch(&format!("{CMS}/x"), "text/plain", json!({}))
        .await;
    assert_eq!(weird.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let invalid = api.post(CMS, cm("Not_Valid")).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        invalid.body["details"]["causes"][0]["field"],
        "metadata.name"
    );
}

#[tokio::test]
async fn lists_filter_and_paginate() {
    let api = api().await;
    for i in 0..5 {
        let mut obj = cm(&format!("cm-{i}"));
        if i % 2 == 0 {
            obj["metadata"]["labels"]["tier"] = json!("even");
        }
        assert_eq!(api.post(CMS, obj).await.status, StatusCode::CREATED);
    }
    let even = api.get(&format!("{CMS}?labelSelector=tier%3Deven")).await;
    assert_eq!(even.body["items"].as_array().unwrap().len(), 3);
    let named = api
        .get(&format!("{CMS}?fieldSelector=metadata.name%3Dcm-1"))
        .await;
    assert_eq!(named.body["items"].as_array().unwrap().len(), 1);

    let first = api.get(&format!("{CMS}?limit=2")).await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let token = first.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    let rv = first.body["metadata"]["resourceVersion"].clone();
    let mut seen = 2;
    let mut next = token;
    loop {
        let page = api.get(&format!("{CMS}?limit=2&continue={next}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.body["metadata"]["resourceVersion"], rv);
        seen += page.body["items"].as_array().unwrap().len();
        match page.body["metadata"]["continue"].as_str() {
            Some(t) => next = t.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 5);
    let all = api.get("/api/v1/configmaps").await;
    assert_eq!(all.body["kind"], "ConfigMapList");
    assert_eq!(all.body["items"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn patches_of_every_kind_and_dry_run() {
    let api = api().await;
    api.post(CMS, cm("p")).await;
    let path = format!("{CMS}/p");
    let merged = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"data": {"b": "2"}}),
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{}", merged.body);
    assert_eq!(merged.body["data"], json!({"a": "1", "b": "2"}));
    let patched = api
        .patch(
            &path,
            "application/json-patch+json",
            json!([{"op": "remove", "path": "/data/a"}]),
        )
        .await;
    assert_eq!(patched.body["data"], json!({"b": "2"}));

    let applied = api
        .patch(
            &format!("{CMS}/applied?fieldManager=test"),
            "application/apply-patch+yaml",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v"}}),
        )
        .await;
    assert_eq!(applied.status, StatusCode::CREATED, "{}", applied.body);
    assert_eq!(
        applied.body["metadata"]["managedFields"][0]["manager"],
        "test"
    );

    let dry = api.post(&format!("{CMS}?dryRun=All"), cm("dry")).await;
    assert_eq!(dry.status, StatusCode::CREATED);
    assert_eq!(
        api.get(&format!("{CMS}/dry")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_removed() {
    let api = api().await;
    let mut obj = cm("held");
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    api.post(CMS, obj).await;
    let path = format!("{CMS}/held");
    let deleting = api.delete(&path).await;
    assert_eq!(deleting.status, StatusCode::OK);
    let still = api.get(&path).await;
    assert_eq!(still.status, StatusCode::OK);
    assert!(still.body["metadata"]["deletionTimestamp"].is_string());
    let released = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
        },
    })
}

#[tokio::test]
async fn scale_and_status_subresources() {
    let api = api().await;
    let deploys = "/apis/apps/v1/namespaces/default/deployments";
    let created = api.post(deploys, deployment("web")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let scale = api.get(&format!("{deploys}/web/scale")).await;
    assert_eq!(scale.body["kind"], "Scale");
    assert_eq!(scale.body["spec"]["replicas"], 1);
    assert_eq!(scale.body["status"]["selector"], "app=web");
    let scaled = api
        .patch(
            &format!("{deploys}/web/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(scaled.status, StatusCode::OK, "{}", scaled.body);
    let after = api.get(&format!("{deploys}/web")).await;
    assert_eq!(after.body["spec"]["replicas"], 3);
    assert_eq!(after.body["metadata"]["generation"], 2);

    let mut with_status = after.body.clone();
    with_status["status"] = json!({"replicas": 3, "observedGeneration": 2});
    with_status["spec"]["replicas"] = json!(9);
    let status = api
        .put(&format!("{deploys}/web/status"), with_status.clone())
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["spec"]["replicas"], 3);
    assert_eq!(status.body["status"]["replicas"], 3);
    // The main resource ignores status.
    let mut main = status.body.clone();
    main["status"] = json!({"replicas": 0});
    let updated = api.put(&format!("{deploys}/web"), main).await;
    assert_eq!(updated.body["status"]["replicas"], 3);
}

#[tokio::test]
async fn discovery_answers_legacy_and_aggregated() {
    let api = api().await;
    let core = api.get("/api/v1").await;
    assert!(
        core.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/status")
    );
    let request = Request::builder()
        .uri("/apis")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let whoami = api
        .post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await;
    assert_eq!(
        whoami.body["status"]["userInfo"]["username"],
        "system:admin"
    );
}

#[tokio::test]
async fn crds_serve_their_custom_resources_until_deleted() {
    let api = api().await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    });
    let created = api
        .post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd,
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body["status"]["conditions"][1]["type"],
        "Established"
    );
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
    let made = api.post(widgets, widget).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(made.body["metadata"]["generation"], 1);
    let group = api.get("/apis/example.com/v1").await;
    assert_eq!(group.body["resources"][0]["name"], "widgets");

    let gone = api
        .delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
        .await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(api.get(widgets).await.status, StatusCode::NOT_FOUND);
}

/// Reads watch lines from a streaming body until `count` arrived.
async fn watch_lines(body: &mut Body, count: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut buffer = Vec::new();
    while lines.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a watch event within 5s")
            .expect("the stream is open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
    }
    lines
}

#[tokio::test]
async fn watches_replay_from_a_revision_then_follow_live_changes() {
    let api = api_with(ServerOptions {
        bookmark_interval: Duration::from_millis(200),
        ..ServerOptions::default()
    })
    .await;
    let first = api.post(CMS, cm("w1")).await;
    let rv = first.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    api.post(CMS, cm("w2")).await;
    let request = Request::builder()
        .uri(format!(
            "{CMS}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
        ))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let events = watch_lines(&mut body, 1).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w2");
    api.patch(
        &format!("{CMS}/w1"),
        "application/merge-patch+json",
        json!({"data": {"z": "1"}}),
    )
    .await;
    api.delete(&format!("{CMS}/w2")).await;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        for event in watch_lines(&mut body, 1).await {
            if event["type"] != "BOOKMARK" {
                kinds.push((
                    event["type"].as_str().unwrap().to_string(),
                    event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ));
            }
        }
    }
    assert_eq!(
        kinds,
        vec![
            ("MODIFIED".into(), "w1".into()),
            ("DELETED".into(), "w2".into())
        ]
    );
    let bookmark = loop {
        let event = watch_lines(&mut body, 1).await.remove(0);
        if event["type"] == "BOOKMARK" {
            break event;
        }
    };
    assert!(bookmark["object"]["metadata"]["resourceVersion"].is_string());
}

#[tokio::test]
async fn a_watch_from_a_revision_older_than_the_cache_is_gone() {
    let api = api_with(ServerOptions {
        watch_cache_capacity: 2,
        ..ServerOptions::default()
    })
    .await;
    let first = api.post(CMS, cm("a")).await;
    let rv = first.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["b", "c", "d", "e"] {
        api.post(CMS, cm(name)).await;
    }
    // The cache keeps the last two events; give its feeder a moment to see them all. As
    // kube-apiserver: the watch starts (200) and its only event is a 410 Expired Status, on
    // which clients list again.
    let mut answer = (StatusCode::OK, serde_json::Value::Null);
    for _ in 0..100 {
        let response = api
            .get(&format!(
                "{CMS}?watch=1&resourceVersion={rv}&timeoutSeconds=1"
            ))
            .await;
        answer = (response.status, response.body);
        if answer.1["type"] == "ERROR" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer.0, StatusCode::OK, "{:?}", answer.1);
    assert_eq!(answer.1["type"], "ERROR", "{:?}", answer.1);
    assert_eq!(answer.1["object"]["code"], 410, "{:?}", answer.1);
    assert_eq!(answer.1["object"]["reason"], "Expired", "{:?}", answer.1);
}

#[tokio::test]
async fn metrics_count_requests() {
    let api = api().await;
    api.get("/api/v1/namespaces").await;
    let metrics = api.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(
            "apiserver_request_total{verb=\"list\",resource=\"namespaces\",code=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn with_a_namespace_controller_deletion_waits_for_finalize() {
    let api = api_with(ServerOptions {
        namespace_controller: true,
        ..ServerOptions::default()
    })
    .await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}});
    assert_eq!(
        api.post("/api/v1/namespaces", ns).await.status,
        StatusCode::CREATED
    );
    api.post("/api/v1/namespaces/doomed/configmaps", cm("inside"))
        .await;
    let deleting = api.delete("/api/v1/namespaces/doomed").await;
    assert_eq!(deleting.status, StatusCode::OK);
    assert_eq!(deleting.body["status"]["phase"], "Terminating");
    assert_eq!(deleting.body["spec"]["finalizers"], json!(["kubernetes"]));
    let refused = api
        .post("/api/v1/namespaces/doomed/configmaps", cm("late"))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The controller empties the namespace, then clears the finalizer.
    api.delete("/api/v1/namespaces/doomed/configmaps/inside")
        .await;
    let mut finalize = api.get("/api/v1/namespaces/doomed").await.body;
    finalize["spec"]["finalizers"] = json!([]);
    let finalized = api
        .put("/api/v1/namespaces/doomed/finalize", finalize)
        .await;
    assert_eq!(finalized.status, StatusCode::OK, "{}", finalized.body);
    assert_eq!(
        api.get("/api/v1/namespaces/doomed").await.status,
        StatusCode::NOT_FOUND
    );
    // The namespace index (kept from the watch cache) never lets a create into a namespace
    // that is gone.
    let gone = api
        .post("/api/v1/namespaces/doomed/configmaps", cm("after"))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
}
