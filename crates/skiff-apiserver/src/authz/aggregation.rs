//! The ClusterRole aggregation controller: an aggregated ClusterRole (`aggregationRule`) gets
//! as its stored `rules` the rules of the ClusterRoles its selectors pick (so `admin`, `edit`
//! and `view` grow when a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view`
//! appears). Authorization does not wait for it: the index computes the same rules itself.

use std::sync::Arc;

use serde_json::json;

use super::cache::RBAC_GROUP;
use crate::handlers::{Change, guaranteed_update};
use crate::state::AppState;
use crate::status::ApiError;

/// Runs the controller until the server shuts down: after every RBAC change it writes the
/// rules of the aggregated ClusterRoles that changed.
pub fn spawn(state: &Arc<AppState>) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut shutdown = state.shutdown.clone();
        loop {
            if let Err(err) = reconcile(&state).await {
                tracing::warn!(error = %err, "cannot aggregate the cluster roles");
            }
            tokio::select! {
                () = state.rbac.changed.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    });
}

/// Writes the aggregated rules of the ClusterRoles whose stored rules are out of date;
/// returns how many it wrote.
pub async fn reconcile(state: &Arc<AppState>) -> Result<usize, ApiError> {
    let snapshot = state.rbac.snapshot(state).await?;
    if snapshot.stale_aggregations.is_empty() {
        return Ok(0);
    }
    let info = state
        .find(RBAC_GROUP, "v1", "clusterroles")
        .ok_or_else(|| ApiError::internal(format!("clusterroles.{RBAC_GROUP} are not served")))?;
    let mut written = 0;
    for (name, rules) in &snapshot.stale_aggregations {
        let result = guaranteed_update(state, &info, None, name, false, |current, _| {
            let mut wanted = current.clone();
            wanted["rules"] = json!(rules);
            crate::strategy::prepare_update(&info, current, wanted, false).map(Change::Update)
        })
        .await;
        match result {
            Ok(_) => {
                written += 1;
                tracing::info!(clusterrole = %name, "aggregated the rules of the cluster role");
            }
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    state.rbac.invalidate();
    Ok(written)
}
