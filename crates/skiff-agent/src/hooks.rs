//! Container lifecycle hooks, run as the kubelet runs them:
//!
//! - `postStart` right after the container started, before it counts as running (the pod's
//!   sync waits for it); a failure records `FailedPostStartHook` and kills the container,
//!   which then restarts as its policy says;
//! - `preStop` before the stop signal when a container is stopped (pod deletion, a failed
//!   liveness or startup probe), within `terminationGracePeriodSeconds`: what the hook used is
//!   taken from the grace left for the stop signal (at least 2 s stay, the kubelet's minimum);
//!   a failure records `FailedPreStopHook`.
//!
//! Handlers: `exec` (a `skiff exec` child, as exec probes), `httpGet` (from a thread in the
//! pod's network namespace, as HTTP probes), `tcpSocket` (connect only) and `sleep`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container as SpecContainer, LifecycleHandler, Pod, Probe};
use skiff_engine::Container;

use crate::container::pod_ref;
use crate::error::blocking;
use crate::{Context, events, probes, runtime};

/// The kubelet's minimum grace left for the stop signal after a `preStop` hook.
pub const MIN_GRACE: Duration = Duration::from_secs(2);

/// How long a `postStart` hook may run (the kubelet sets no limit; this bounds a hung one).
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(300);

/// A hook that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The handler ran and failed; the message is the kubelet's event message.
    #[error("{0}")]
    Failed(String),
}

/// The kubelet's `format.Pod`: `NAME_NAMESPACE(UID)`.
fn pod_name(pod: &Pod) -> String {
    let p = pod_ref(pod);
    format!("{}_{}({})", p.name, p.namespace, p.uid)
}

/// Runs `handler` for `running` (of `spec`, in `pod`), within `timeout`.
pub async fn run(
    ctx: &Arc<Context>,
    pod: &Pod,
    spec: &SpecContainer,
    running: &Container,
    sandbox_pid: i32,
    handler: &LifecycleHandler,
    timeout: Duration,
) -> Result<(), HookError> {
    if let Some(sleep) = &handler.sleep {
        let wanted = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(wanted.min(timeout)).await;
        return Ok(());
    }
    let probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        ..Probe::default()
    };
    let target = probes::Target {
        program: &ctx.config.program,
        data_dir: &ctx.config.data_dir,
        sandbox_pid,
    };
    let Err(err) = probes::run(&probe, spec, running, target, timeout).await else {
        return Ok(());
    };
    let message = if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        format!(
            "Exec lifecycle hook ([{}]) for Container \"{}\" in Pod \"{}\" failed - error: {err}, message: \"\"",
            command.join(" "),
            spec.name,
            pod_name(pod)
        )
    } else if let Some(h) = &handler.http_get {
        format!(
            "HTTP lifecycle hook ({}) for Container \"{}\" in Pod \"{}\" failed - error: {err}",
            h.path.clone().unwrap_or_default(),
            spec.name,
            pod_name(pod)
        )
    } else {
        format!(
            "lifecycle hook for Container \"{}\" in Pod \"{}\" failed - error: {err}",
            spec.name,
            pod_name(pod)
        )
    };
    Err(HookError::Failed(message))
}

/// Runs the `postStart` hook of a container that just started; on failure records
/// `FailedPostStartHook`, kills the container (its `preStop` hook first) and returns the
/// message.
pub async fn post_start(
    ctx: &Arc<Context>,
    pod: &Pod,
    spec: &SpecContainer,
    started: &Container,
    sandbox_pid: i32,
    grace: Duration,
) -> Result<(), HookError> {
    let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
        return Ok(());
    };
    let result = run(
        ctx,
        pod,
        spec,
        started,
        sandbox_pid,
        handler,
        POST_START_TIMEOUT,
    )
    .await;
    let Err(HookError::Failed(message)) = &result else {
        return Ok(());
    };
    let name = Some(spec.name.as_str());
    let (client, node) = (&ctx.client, ctx.config.node_name.as_str());
    events::record(
        client,
        node,
        pod,
        name,
        "Warning",
        "FailedPostStartHook",
        message,
    )
    .await;
    events::record(
        client,
        node,
        pod,
        name,
        "Normal",
        "Killing",
        "FailedPostStartHook",
    )
    .await;
    // Killed as the kubelet kills: preStop first, within the grace period.
    let grace = pre_stop(ctx, pod, spec, started, sandbox_pid, grace).await;
    let (engine, c) = (ctx.engine.clone(), started.clone());
    if let Err(err) = blocking("stop container", move || runtime::stop(&engine, &c, grace)).await {
        tracing::warn!(error = %err, "stopping a container whose postStart failed");
    }
    result
}

/// Runs the `preStop` hook of `running` if it has one, within `grace`; returns the grace
/// left for the stop signal. A failure records `FailedPreStopHook`.
pub async fn pre_stop(
    ctx: &Arc<Context>,
    pod: &Pod,
    spec: &SpecContainer,
    running: &Container,
    sandbox_pid: i32,
    grace: Duration,
) -> Duration {
    let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return grace;
    };
    let began = Instant::now();
    if let Err(HookError::Failed(message)) =
        run(ctx, pod, spec, running, sandbox_pid, handler, grace).await
    {
        tracing::warn!(container = %spec.name, %message, "preStop hook failed");
        events::record(
            &ctx.client,
            &ctx.config.node_name,
            pod,
            Some(&spec.name),
            "Warning",
            "FailedPreStopHook",
            &message,
        )
        .await;
    }
    grace.saturating_sub(began.elapsed()).max(MIN_GRACE)
}

/// Runs the `preStop` hooks of every running app container of `pod` at once (the pod is
/// being deleted); returns the grace left for the stop signal.
pub async fn pre_stop_all(
    ctx: &Arc<Context>,
    pod: &Pod,
    containers: &[Container],
    grace: Duration,
) -> Duration {
    let sandbox_pid = containers
        .iter()
        .find(|c| runtime::container_name(c) == runtime::SANDBOX && c.is_active())
        .map(|c| c.state.pid)
        .unwrap_or(0);
    let specs = pod.spec.iter().flat_map(|s| s.containers.iter());
    let mut runs = Vec::new();
    for spec in specs {
        if spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .is_none()
        {
            continue;
        }
        let (latest, _) = runtime::latest(containers, &spec.name);
        if let Some(running) = latest.filter(|c| c.status() == skiff_engine::Status::Running) {
            runs.push(pre_stop(ctx, pod, spec, running, sandbox_pid, grace));
        }
    }
    if runs.is_empty() {
        return grace;
    }
    futures::future::join_all(runs)
        .await
        .into_iter()
        .min()
        .unwrap_or(grace)
}
