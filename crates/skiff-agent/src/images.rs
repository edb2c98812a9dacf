//! Images for pods: the pull policy (`Always`, `IfNotPresent`, `Never`; the API's default is
//! `Always` for `:latest` or untagged images) applied against the engine's image store.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use skiff_image::{ImageStore, PullOptions, Reference};

use crate::error::blocking;
use crate::{Context, events};

/// The pull policy the API server defaults to for `image`.
pub fn default_policy(image: &str) -> String {
    let tagged_latest_or_none = match Reference::parse(image) {
        Ok(r) => r.digest.is_none() && r.tag.as_deref().is_none_or(|t| t == "latest"),
        Err(_) => true,
    };
    if tagged_latest_or_none {
        "Always".into()
    } else {
        "IfNotPresent".into()
    }
}

/// Makes `image` present as `policy` says, recording `Pulling` and `Pulled` events about
/// `container` of `pod`; the error is the message the container's waiting state shows.
pub async fn ensure(
    ctx: &Arc<Context>,
    pod: &Pod,
    container: &str,
    image: &str,
    policy: &str,
) -> Result<(), String> {
    let event = |type_: &'static str, reason: &'static str, message: String| {
        let (ctx, pod, container) = (Arc::clone(ctx), pod.clone(), container.to_string());
        async move {
            events::record(
                &ctx.client,
                &ctx.config.node_name,
                &pod,
                Some(&container),
                type_,
                reason,
                &message,
            )
            .await;
        }
    };
    let engine = ctx.engine.clone();
    let name = image.to_string();
    let present = blocking("find image", move || {
        let store = engine
            .images()
            .map_err(crate::AgentError::engine("open the image store"))?;
        Ok(store.resolve(&name).is_ok())
    })
    .await
    .map_err(|e| e.to_string())?;
    match policy {
        "Never" | "IfNotPresent" if present => {
            let message = format!("Container image \"{image}\" already present on machine");
            event("Normal", "Pulled", message).await;
            return Ok(());
        }
        "Never" => {
            return Err(format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            ));
        }
        _ => {}
    }
    let reference =
        Reference::parse(image).map_err(|e| format!("invalid image \"{image}\": {e}"))?;
    let store: ImageStore = ctx.engine.images().map_err(|e| e.to_string())?;
    let mut options = PullOptions::default();
    options.registry.insecure_registries = ctx.config.insecure_registries.clone();
    // Each credential of the pull secrets in turn (the kubelet's keyring), else the node's own.
    let credentials = crate::pullsecrets::credentials(&ctx.client, pod, &reference.registry)
        .await
        .map_err(|e| format!("failed to pull image \"{image}\": {e}"))?;
    let mut attempts: Vec<Option<skiff_image::registry::Credentials>> =
        credentials.into_iter().map(Some).collect();
    if attempts.is_empty() {
        attempts.push(None);
    }
    event("Normal", "Pulling", format!("Pulling image \"{image}\"")).await;
    let started = std::time::Instant::now();
    // The pull future is not `Send`: it runs on a blocking thread, driven by this runtime.
    let handle = tokio::runtime::Handle::current();
    let pulled = tokio::task::spawn_blocking(move || {
        let events: skiff_image::PullEvents = Arc::new(|_| {});
        let mut outcome = None;
        for credentials in attempts {
            options.registry.credentials = credentials;
            let pulled = handle.block_on(store.pull(&reference, &options, &events));
            let done = pulled.is_ok();
            outcome = Some(pulled);
            if done {
                break;
            }
        }
        outcome
    })
    .await
    .map_err(|e| format!("failed to pull image \"{image}\": {e}"))?
    .ok_or_else(|| format!("failed to pull image \"{image}\": nothing was tried"))?;
    match pulled {
        Ok(_) => {
            tracing::info!(%image, elapsed = ?started.elapsed(), "pulled image");
            let message = format!(
                "Successfully pulled image \"{image}\" in {:.3}s",
                started.elapsed().as_secs_f64()
            );
            event("Normal", "Pulled", message).await;
            Ok(())
        }
        Err(err) => {
            let message = format!("Failed to pull image \"{image}\": {err}");
            event("Warning", "Failed", message).await;
            Err(format!("failed to pull image \"{image}\": {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_and_untagged_images_are_always_pulled() {
        assert_eq!(default_policy("busybox"), "Always");
        assert_eq!(default_policy("127.0.0.1:5000/busybox:latest"), "Always");
        assert_eq!(default_policy("busybox:1.36"), "IfNotPresent");
    }
}
