//! Custom resources served against their CRD's schema, through the router over an in-memory
//! store: validation with kube-apiserver's causes, pruning (and `fieldValidation`), defaults
//! on write and on read, the status and scale subresources.
#![allow(clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{Api, api};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {
            "size": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "default": 1},
            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }},
        "status": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "selector": {"type": "string"},
            "phase": {"type": "string"},
        }},
    }})
}

fn crd(schema: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas",
                    "labelSelectorPath": ".status.selector"}}}],
        },
    })
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

async fn with_widgets() -> Api {
    let api = api().await;
    let created = api.post(CRDS, crd(schema())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    api
}

fn causes(body: &Value) -> Vec<(String, String)> {
    body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_valid_object_is_defaulted_and_pruned_with_a_warning() {
    let api = with_widgets().await;
    let made = api
        .post(
            WIDGETS,
            widget(
                "a",
                json!({"size": 2, "colour": "red", "extra": {"kept": true}}),
            ),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(
        made.body["spec"],
        json!({"size": 2, "replicas": 1, "mode": "fast", "extra": {"kept": true}})
    );
    let warning = made.headers.get("warning").unwrap().to_str().unwrap();
    assert_eq!(warning, r#"299 - "unknown field \"spec.colour\"""#);
    let read = api.get(&format!("{WIDGETS}/a")).await;
    assert!(read.body["spec"].get("colour").is_none());
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields() {
    let api = with_widgets().await;
    let refused = api
        .post(
            &format!("{WIDGETS}?fieldValidation=Strict"),
            widget("a", json!({"size": 2, "colour": "red"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(
        refused.body["message"],
        "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.colour\""
    );
}

#[tokio::test]
async fn an_invalid_object_is_refused_with_kube_apiservers_causes() {
    let api = with_widgets().await;
    let refused = api
        .post(
            WIDGETS,
            widget("b", json!({"replicas": "three", "mode": "medium"})),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(refused.body["reason"], "Invalid");
    assert_eq!(refused.body["details"]["group"], "example.com");
    assert_eq!(
        causes(&refused.body),
        vec![
            ("spec.size".to_string(), "Required value".to_string()),
            (
                "spec.mode".to_string(),
                "Unsupported value: \"medium\": supported values: \"fast\", \"slow\"".to_string()
            ),
            (
                "spec.replicas".to_string(),
                "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"".to_string()
            ),
        ]
    );
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Widget.example.com \"b\" is invalid: ["),
        "{}",
        refused.body["message"]
    );
    // Updates and patches are validated too.
    api.post(WIDGETS, widget("c", json!({"size": 1}))).await;
    let patched = api
        .patch(
            &format!("{WIDGETS}/c"),
            "application/merge-patch+json",
            json!({"spec": {"size": 0}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        causes(&patched.body),
        vec![(
            "spec.size".to_string(),
            "Invalid value: 0: spec.size in body should be greater than or equal to 1".to_string()
        )]
    );
}

#[tokio::test]
async fn server_side_apply_and_strict_patches_go_through_the_schema() {
    let api = with_widgets().await;
    let path = format!("{WIDGETS}/ssa");
    let apply = "application/apply-patch+yaml";
    let created = api
        .patch(
            &format!("{path}?fieldManager=test"),
            apply,
            widget("ssa", json!({"size": 2, "colour": "red"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body["spec"],
        json!({"size": 2, "replicas": 1, "mode": "fast"})
    );
    let refused = api
        .patch(
            &format!("{path}?fieldManager=test"),
            apply,
            widget("ssa", json!({"size": 2, "mode": "medium"})),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(
        causes(&refused.body),
        vec![(
            "spec.mode".to_string(),
            "Unsupported value: \"medium\": supported values: \"fast\", \"slow\"".to_string()
        )]
    );
    let strict = api
        .patch(
            &format!("{path}?fieldValidation=Strict"),
            "application/merge-patch+json",
            json!({"spec": {"colour": "red"}}),
        )
        .await;
    assert_eq!(strict.status, StatusCode::BAD_REQUEST, "{}", strict.body);
    let lenient = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"spec": {"colour": "red", "size": 4}}),
        )
        .await;
    assert_eq!(lenient.status, StatusCode::OK, "{}", lenient.body);
    assert_eq!(
        lenient.body["spec"],
        json!({"size": 4, "replicas": 1, "mode": "fast"})
    );
}

#[tokio::test]
async fn a_non_structural_crd_is_refused() {
    let api = api().await;
    let refused = api
        .post(
            CRDS,
            crd(json!({"type": "object", "properties": {"spec": {"properties": {}}}})),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(
        causes(&refused.body),
        vec![(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type".to_string(),
            "Required value: must not be empty for specified object fields".to_string()
        )]
    );
}

#[tokio::test]
async fn the_status_subresource_owns_status_and_generation_follows_spec() {
    let api = with_widgets().await;
    let path = format!("{WIDGETS}/s");
    api.post(WIDGETS, widget("s", json!({"size": 1}))).await;

    // The main resource ignores .status.
    let mut obj = api.get(&path).await.body;
    obj["status"] = json!({"phase": "Ready"});
    let put = api.put(&path, obj.clone()).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert!(put.body.get("status").is_none());
    assert_eq!(put.body["metadata"]["generation"], 1);

    // /status changes only .status, without a new generation, and is validated.
    let status = api
        .patch(
            &format!("{path}/status"),
            "application/merge-patch+json",
            json!({"spec": {"size": 9}, "metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ready", "replicas": 1}}),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["status"]["phase"], "Ready");
    assert_eq!(status.body["spec"]["size"], 1);
    assert!(status.body["metadata"].get("labels").is_none());
    assert_eq!(status.body["metadata"]["generation"], 1);
    let bad = api
        .patch(
            &format!("{path}/status"),
            "application/merge-patch+json",
            json!({"status": {"replicas": "one"}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);

    // A spec change bumps the generation.
    let spec = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"spec": {"size": 2}}),
        )
        .await;
    assert_eq!(spec.body["metadata"]["generation"], 2);
    assert_eq!(spec.body["status"]["phase"], "Ready");
}

#[tokio::test]
async fn the_scale_subresource_uses_the_crds_paths() {
    let api = with_widgets().await;
    let path = format!("{WIDGETS}/w");
    api.post(WIDGETS, widget("w", json!({"size": 1, "replicas": 2})))
        .await;
    api.patch(
        &format!("{path}/status"),
        "application/merge-patch+json",
        json!({"status": {"replicas": 2, "selector": "app=w"}}),
    )
    .await;
    let scale = api.get(&format!("{path}/scale")).await;
    assert_eq!(scale.status, StatusCode::OK, "{}", scale.body);
    assert_eq!(scale.body["kind"], "Scale");
    assert_eq!(scale.body["spec"]["replicas"], 2);
    assert_eq!(
        scale.body["status"],
        json!({"replicas": 2, "selector": "app=w"})
    );

    let scaled = api
        .patch(
            &format!("{path}/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 5}}),
        )
        .await;
    assert_eq!(scaled.status, StatusCode::OK, "{}", scaled.body);
    assert_eq!(scaled.body["spec"]["replicas"], 5);
    let obj = api.get(&path).await.body;
    assert_eq!(obj["spec"]["replicas"], 5);
    assert_eq!(obj["metadata"]["generation"], 2);

    let mut put = scaled.body.clone();
    put["spec"]["replicas"] = json!(3);
    let replaced = api.put(&format!("{path}/scale"), put).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(api.get(&path).await.body["spec"]["replicas"], 3);
}

#[tokio::test]
async fn defaults_added_to_the_crd_later_show_on_read() {
    let api = with_widgets().await;
    api.post(WIDGETS, widget("old", json!({"size": 1}))).await;
    let mut newer = schema();
    newer["properties"]["spec"]["properties"]["colour"] =
        json!({"type": "string", "default": "blue"});
    let mut current = api.get(&format!("{CRDS}/widgets.example.com")).await.body;
    current["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = newer;
    let updated = api
        .put(&format!("{CRDS}/widgets.example.com"), current)
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    let read = api.get(&format!("{WIDGETS}/old")).await;
    assert_eq!(read.body["spec"]["colour"], "blue");
    let listed = api.get(WIDGETS).await;
    assert_eq!(listed.body["items"][0]["spec"]["colour"], "blue");
}

/// A schema with CEL rules: one on `spec` with a message and a `fieldPath`, a transition rule
/// on `spec.replicas`, one with a `reason`.
fn schema_with_rules() -> Value {
    let mut schema = schema();
    schema["properties"]["spec"]["x-kubernetes-validations"] = json!([
        {"rule": "self.size <= 10 || self.mode == 'slow'", "message": "fast widgets are at most 10", "fieldPath": ".size"},
        {"rule": "!has(self.extra) || size(self.extra) < 2", "reason": "FieldValueForbidden", "message": "too much extra"},
    ]);
    schema["properties"]["spec"]["properties"]["replicas"]["x-kubernetes-validations"] =
        json!([{"rule": "self >= oldSelf"}]);
    schema
}

#[tokio::test]
async fn cel_rules_refuse_objects_and_transition_rules_compare_with_the_old_object() {
    let api = api().await;
    let created = api.post(CRDS, crd(schema_with_rules())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let refused = api
        .post(
            WIDGETS,
            widget("big", json!({"size": 11, "extra": {"a": 1, "b": 2}})),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert_eq!(
        causes(&refused.body),
        vec![
            (
                "spec.size".to_string(),
                "Invalid value: \"object\": fast widgets are at most 10".to_string()
            ),
            ("spec".to_string(), "Forbidden: too much extra".to_string()),
        ]
    );
    let reasons: Vec<&str> = refused.body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["FieldValueInvalid", "FieldValueForbidden"]);

    // A schema error keeps the rules from running, as kube-apiserver does.
    let wrong = api
        .post(WIDGETS, widget("wrong", json!({"size": "big"})))
        .await;
    assert_eq!(
        causes(&wrong.body).last().unwrap(),
        &(
            "<nil>".to_string(),
            "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".to_string()
        )
    );

    // Transition rules do not run on create, and refuse a decrease on update.
    let made = api
        .post(WIDGETS, widget("w", json!({"size": 2, "replicas": 3})))
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    let path = format!("{WIDGETS}/w");
    let decreased = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"spec": {"replicas": 2}}),
        )
        .await;
    assert_eq!(
        decreased.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        decreased.body
    );
    assert_eq!(
        causes(&decreased.body),
        vec![(
            "spec.replicas".to_string(),
            "Invalid value: \"integer\": failed rule: self >= oldSelf".to_string()
        )]
    );
    let increased = api
        .patch(
            &path,
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(increased.status, StatusCode::OK, "{}", increased.body);
}

#[tokio::test]
async fn a_crd_whose_rule_does_not_compile_is_refused() {
    let api = api().await;
    let mut schema = schema();
    schema["properties"]["spec"]["x-kubernetes-validations"] = json!([{"rule": "self.size <"}]);
    let refused = api.post(CRDS, crd(schema)).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let causes = causes(&refused.body);
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(
        causes[0].0,
        "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    );
    assert!(
        causes[0].1.starts_with("Invalid value: apiextensions.ValidationRule{Rule:\"self.size <\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:"),
        "{}",
        causes[0].1
    );
}
