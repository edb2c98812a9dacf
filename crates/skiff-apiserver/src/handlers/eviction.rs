//! `POST pods/{name}/eviction`: a delete that respects PodDisruptionBudgets, as
//! kube-apiserver's eviction subresource does (what `kubectl drain` calls).
//!
//! A pod that is already terminating, finished or still pending is deleted at once. Otherwise
//! the budget selecting it (more than one is an error) must allow a disruption: its status,
//! kept by the disruption controller, must be current and allow at least one; the eviction
//! then takes one (`disruptionsAllowed - 1`, the pod listed in `disruptedPods`) in a
//! compare-and-swap write of the budget's status, and deletes the pod. A budget that allows
//! none answers 429 TooManyRequests with a `DisruptionBudget` cause, on which kubectl waits
//! and tries again. A pod that is not ready may go without taking a disruption when the
//! budget is met anyway (`IfHealthyBudget`, the default) or always (`AlwaysAllow`).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use skiff_apimachinery::LabelSelector;

use super::Ctx;
use super::write::{Change, guaranteed_update};
use crate::status::{ApiError, success};
use crate::{object, response, storage, strategy};

/// The message kubectl users know.
pub const VIOLATION: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
/// Evictions a budget may hold unconfirmed before more are refused.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Serves the eviction of `ctx`'s pod.
pub async fn evict(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let eviction = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        super::parse_body(&ctx.headers, body)?
    };
    let delete_options = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let dry_run = ctx.query.dry_run()
        || delete_options
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty());
    let (pod, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await?;
    if !can_ignore_budgets(&pod) {
        let budgets = budgets_of(ctx, &pod).await?;
        match budgets.as_slice() {
            [] => {}
            [budget] => {
                if !may_go_unhealthy(&pod, budget) {
                    take_disruption(ctx, budget, dry_run).await?;
                }
            }
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        }
    }
    let options = serde_json::to_vec(&delete_options).unwrap_or_default();
    super::delete::delete(ctx, &options).await?;
    Ok(response::json(StatusCode::CREATED, &success()))
}

/// Terminating, finished and pending pods never count against a budget.
fn can_ignore_budgets(pod: &Value) -> bool {
    object::is_deleting(pod)
        || matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed" | "Pending")
        )
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a pod that is not ready may go without taking one of the budget's disruptions.
fn may_go_unhealthy(pod: &Value, budget: &Value) -> bool {
    if is_ready(pod) {
        return false;
    }
    if budget.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow")) {
        return true;
    }
    let number = |p: &str| budget.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let desired = number("/status/desiredHealthy");
    desired > 0 && number("/status/currentHealthy") >= desired
}

/// The budgets in the pod's namespace whose selector matches it (a nil selector matches no
/// pod, an empty one every pod).
async fn budgets_of(ctx: &Ctx, pod: &Value) -> Result<Vec<Value>, ApiError> {
    let Some(info) = ctx.state.find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(Vec::new());
    };
    let prefix = storage::prefix(&info, ctx.ns())?;
    let page = ctx
        .state
        .store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::from_store(e, &info, ""))?;
    let labels: std::collections::BTreeMap<String, String> = pod
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for kv in &page.items {
        let budget = storage::decode(&info, kv)?;
        let Some(raw) = budget.pointer("/spec/selector").filter(|s| !s.is_null()) else {
            continue;
        };
        if LabelSelector::from_json(raw).is_some_and(|s| s.matches(&labels)) {
            out.push(budget);
        }
    }
    Ok(out)
}

/// 429 TooManyRequests with the budget's cause.
fn too_many_requests(cause: String) -> ApiError {
    ApiError {
        code: 429,
        reason: "TooManyRequests",
        message: VIOLATION.to_string(),
        details: Some(json!({
            "causes": [{"reason": "DisruptionBudget", "message": cause}],
        })),
    }
}

/// Takes one disruption from `budget` (fresh from the store, compare-and-swap), or refuses.
async fn take_disruption(ctx: &Ctx, budget: &Value, dry_run: bool) -> Result<(), ApiError> {
    let Some(info) = ctx.state.find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    let name = object::name(budget).to_string();
    let pod_name = ctx.name().to_string();
    let now = object::now();
    let pdb_info = info.clone();
    guaranteed_update(&ctx.state, &info, ctx.ns(), &name, dry_run, |current, _| {
        let number = |p: &str| current.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let generation = number("/metadata/generation");
        if number("/status/observedGeneration") < generation {
            return Err(too_many_requests(format!(
                "The disruption budget {name} is still being processed by the server."
            )));
        }
        let allowed = number("/status/disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
        }
        let disrupted = current
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, serde_json::Map::len);
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(ApiError::forbidden(
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Err(too_many_requests(format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                number("/status/desiredHealthy"),
                number("/status/currentHealthy"),
            )));
        }
        let mut new = current.clone();
        let status = &mut new["status"];
        status["disruptionsAllowed"] = json!(allowed - 1);
        if !status.get("disruptedPods").is_some_and(Value::is_object) {
            status["disruptedPods"] = json!({});
        }
        status["disruptedPods"][&pod_name] = json!(now);
        if allowed == 1 {
            for condition in status
                .get_mut("conditions")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if condition["type"] == "DisruptionAllowed" && condition["status"] == "True" {
                    condition["status"] = json!("False");
                    condition["reason"] = json!("InsufficientPods");
                    condition["lastTransitionTime"] = json!(now);
                }
            }
        }
        strategy::prepare_update(&pdb_info, current, new, true).map(Change::Update)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_finished_and_pending_pods_ignore_budgets() {
        assert!(can_ignore_budgets(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_budgets(
            &json!({"status": {"phase": "Succeeded"}})
        ));
        assert!(can_ignore_budgets(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_budgets(
            &json!({"status": {"phase": "Running"}})
        ));
    }

    #[test]
    fn unready_pods_go_free_only_when_the_budget_is_met_or_always_allowed() {
        let unready = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        let ready = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let met = json!({"status": {"desiredHealthy": 2, "currentHealthy": 2}});
        let short = json!({"status": {"desiredHealthy": 2, "currentHealthy": 1}});
        let always = json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}, "status": {"desiredHealthy": 2, "currentHealthy": 1}});
        assert!(may_go_unhealthy(&unready, &met));
        assert!(!may_go_unhealthy(&unready, &short));
        assert!(may_go_unhealthy(&unready, &always));
        assert!(!may_go_unhealthy(&ready, &met));
    }

    #[test]
    fn refusals_are_429_with_a_disruption_budget_cause() {
        let status = too_many_requests(
            "The disruption budget web needs 2 healthy pods and has 2 currently".into(),
        )
        .to_status();
        assert_eq!(status["code"], 429);
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["message"], VIOLATION);
        assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    }
}
