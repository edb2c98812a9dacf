//! One pod's sync: make the engine's containers match the pod spec, then post the status.
//! Level-triggered: each call reads the engine's records again, so an agent that restarts
//! picks up where the last one stopped. Order: sandbox, init containers one at a time, app
//! containers; a container that exited restarts as a new attempt when the restart policy
//! says so, immediately the first time and then after the kubelet's back-off
//! (`CrashLoopBackOff` meanwhile). A pod being deleted has its containers stopped (stop
//! signal, grace period, SIGKILL) and removed, then its API object deleted for good.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container as SpecContainer, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use skiff_engine::{Container, Status};

use crate::container::{self, pod_ref};
use crate::error::blocking;
use crate::runtime::{self, Kind};
use crate::status::{self, Waiting};
use crate::{AgentError, Context, RestartBackoff, events, images, probes, volumes};

/// How often a pod with live containers is looked at again.
pub const RESYNC: Duration = Duration::from_secs(1);

/// What a sync asks of the worker loop next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Look again after this long (or sooner when the pod changes).
    After(Duration),
    /// Nothing runs: look again only when the pod changes.
    Idle,
    /// The pod is gone: the worker ends.
    Done,
}

/// A container's restart back-off.
#[derive(Debug, Default)]
struct Restart {
    backoff: RestartBackoff,
    /// The attempt whose exit was counted.
    seen: String,
    not_before: Option<Instant>,
    delay: Duration,
}

/// What a worker remembers between syncs of its pod.
#[derive(Debug, Default)]
pub struct WorkerState {
    waiting: BTreeMap<String, Waiting>,
    restarts: HashMap<String, Restart>,
    pull_backoff: HashMap<String, (Instant, Duration)>,
    /// The pod's volumes once set up.
    volumes: Option<BTreeMap<String, volumes::Prepared>>,
    /// The last `FailedMount` message and when it was recorded.
    mount_event: Option<(String, Instant)>,
    /// When the API-data volumes were last brought up to date.
    volumes_refreshed: Option<Instant>,
    /// Warning events decided in blocking code, recorded at the end of the sync:
    /// (container, reason, message).
    pending: Vec<(String, String, String)>,
    probes: probes::Probes,
    unready: std::collections::BTreeSet<String>,
    /// The pod's address on the node bridge (none for host-network pods and without a pod
    /// network).
    pod_ip: Option<std::net::Ipv4Addr>,
}

/// The grace period of a deletion: the one the API set, else the pod's.
fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Syncs `pod` once.
pub async fn sync(
    ctx: &Arc<Context>,
    pod: &Pod,
    state: &mut WorkerState,
) -> Result<Next, AgentError> {
    let pref = pod_ref(pod);
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = grace_period(pod);
        tracing::info!(namespace = %pref.namespace, pod = %pref.name, ?grace, "killing the pod's containers");
        for c in list(ctx, &pref.uid).await? {
            let name = runtime::container_name(&c);
            if c.is_active() && name != runtime::SANDBOX {
                let message = format!("Stopping container {name}");
                event(ctx, pod, Some(name), "Normal", "Killing", &message);
            }
        }
        let containers = list(ctx, &pref.uid).await?;
        let grace = crate::hooks::pre_stop_all(ctx, pod, &containers, grace).await;
        if let Err(err) = crate::teardown::teardown(ctx, &pref.uid, grace).await {
            // The API object stays (the pod shows as terminating) until everything is gone.
            let delay = ctx.teardowns.failed(&pref.uid, &err.to_string());
            tracing::warn!(namespace = %pref.namespace, pod = %pref.name, error = %err, retry_in = ?delay, "tearing down the pod failed; retrying");
            return Ok(Next::After(delay));
        }
        if let Some(r) = ctx.teardowns.succeeded(&pref.uid) {
            tracing::info!(namespace = %pref.namespace, pod = %pref.name, failures = r.failures, "the pod's teardown succeeded after failing");
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pref.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(pref.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pref.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(AgentError::api(format!("delete pod {}", pref.name))(e)),
        }
        return Ok(Next::Done);
    }
    let containers = list(ctx, &pref.uid).await?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        // Finished for good: only the sandbox may still run.
        if containers.iter().any(Container::is_active) {
            let engine = ctx.engine.clone();
            blocking("stop the finished pod", move || {
                for c in &containers {
                    runtime::stop(&engine, c, Duration::from_secs(2))?;
                }
                Ok(())
            })
            .await?;
        }
        return Ok(Next::Idle);
    }
    if state.volumes.is_none() {
        match volumes::prepare(&ctx.client, &ctx.config.data_dir, pod).await {
            Ok(v) => {
                state.volumes = Some(v);
                state.mount_event = None;
            }
            Err(volumes::MountError(message)) => {
                let again = match &state.mount_event {
                    Some((last, at)) => *last != message || at.elapsed() > Duration::from_secs(60),
                    None => true,
                };
                if again {
                    tracing::warn!(namespace = %pref.namespace, pod = %pref.name, %message, "volume setup failed");
                    event(ctx, pod, None, "Warning", "FailedMount", &message);
                    state.mount_event = Some((message, Instant::now()));
                }
                post_status(ctx, pod, state, &containers, false).await?;
                return Ok(Next::After(Duration::from_secs(2)));
            }
        }
        state.volumes_refreshed = Some(Instant::now());
    } else if state
        .volumes_refreshed
        .is_none_or(|at| at.elapsed() >= volumes::REFRESH_PERIOD)
    {
        volumes::refresh(&ctx.client, &ctx.config.data_dir, pod).await;
        state.volumes_refreshed = Some(Instant::now());
    }
    let sandbox_pid = ensure_sandbox(ctx, pod, &containers, state).await?;
    let containers = list(ctx, &pref.uid).await?;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = status::restart_policy(pod).to_string();
    let (init_done, init_failed) = status::init_progress(pod, &containers);
    if !init_failed && !init_done {
        for ic in spec.init_containers.iter().flatten() {
            let (latest, _) = runtime::latest(&containers, &ic.name);
            match latest {
                Some(c) if c.status() == Status::Exited && c.state.exit_code == 0 => continue,
                Some(c) if c.is_active() => break,
                Some(c) => {
                    // Failed: Never was handled by init_progress.
                    let next = runtime::attempt(c) + 1;
                    if backoff_over(state, pod, ic, c) {
                        start(ctx, pod, ic, Kind::Init, next, sandbox_pid, state).await;
                    }
                    break;
                }
                None => {
                    start(ctx, pod, ic, Kind::Init, 0, sandbox_pid, state).await;
                    break;
                }
            }
        }
    } else if init_done {
        for c in &spec.containers {
            let (latest, _) = runtime::latest(&containers, &c.name);
            match latest {
                None => start(ctx, pod, c, Kind::App, 0, sandbox_pid, state).await,
                Some(l) if l.is_active() => {
                    state.waiting.remove(&c.name);
                }
                Some(l) => {
                    if status::should_restart(&policy, l.state.exit_code)
                        && backoff_over(state, pod, c, l)
                    {
                        start(
                            ctx,
                            pod,
                            c,
                            Kind::App,
                            runtime::attempt(l) + 1,
                            sandbox_pid,
                            state,
                        )
                        .await;
                    }
                }
            }
        }
    }
    if init_done {
        run_probes(ctx, pod, state, &spec.containers, sandbox_pid).await;
    }
    for (name, reason, message) in std::mem::take(&mut state.pending) {
        event(ctx, pod, Some(&name), "Warning", &reason, &message);
    }
    let containers = list(ctx, &pref.uid).await?;
    prune_old_attempts(ctx, &containers).await;
    match post_status(ctx, pod, state, &containers, sandbox_pid > 0).await? {
        Some(_) => Ok(Next::After(RESYNC)),
        None => Ok(Next::Idle),
    }
}

/// Probes the running app containers; kills those whose startup or liveness probe failed.
async fn run_probes(
    ctx: &Arc<Context>,
    pod: &Pod,
    state: &mut WorkerState,
    specs: &[SpecContainer],
    sandbox_pid: i32,
) {
    let Ok(containers) = list(ctx, &pod_ref(pod).uid).await else {
        return;
    };
    let target = probes::Target {
        program: &ctx.config.program,
        data_dir: &ctx.config.data_dir,
        sandbox_pid,
    };
    state.unready.clear();
    for spec in specs {
        let (latest, _) = runtime::latest(&containers, &spec.name);
        let Some(running) = latest.filter(|c| c.status() == Status::Running) else {
            continue;
        };
        let verdict = state.probes.check(spec, running, target).await;
        if !verdict.ready {
            state.unready.insert(spec.name.clone());
        }
        let name = Some(spec.name.as_str());
        for message in &verdict.unhealthy {
            event(ctx, pod, name, "Warning", "Unhealthy", message);
        }
        if let Some(message) = verdict.kill {
            tracing::info!(pod = %pod_ref(pod).name, container = %spec.name, %message, "probe failed");
            event(ctx, pod, name, "Normal", "Killing", &message);
            let grace =
                crate::hooks::pre_stop(ctx, pod, spec, running, sandbox_pid, grace_period(pod))
                    .await;
            let (engine, c) = (ctx.engine.clone(), running.clone());
            if let Err(err) =
                blocking("stop container", move || runtime::stop(&engine, &c, grace)).await
            {
                tracing::warn!(error = %err, "stopping an unhealthy container failed");
            }
        }
    }
}

/// Records an event about `pod` (or one of its containers) without waiting for it.
fn event(
    ctx: &Arc<Context>,
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    events::record_soon(
        &ctx.client,
        &ctx.config.node_name,
        pod,
        container,
        type_,
        reason,
        message,
    );
}

/// Computes the pod's status and posts it when it changed; `None` when the pod is gone.
async fn post_status(
    ctx: &Arc<Context>,
    pod: &Pod,
    state: &WorkerState,
    containers: &[Container],
    has_sandbox: bool,
) -> Result<Option<serde_json::Value>, AgentError> {
    let pref = pod_ref(pod);
    let now = crate::node::now();
    let host_ip = ctx.config.node_ip.to_string();
    let pod_ip = state.pod_ip.map(|ip| ip.to_string());
    let wanted = status::compute(&status::Inputs {
        pod,
        containers,
        waiting: &state.waiting,
        unready: &state.unready,
        host_ip: &host_ip,
        pod_ip: pod_ip.as_deref(),
        has_sandbox,
        now: &now,
    });
    if status::differs(pod, &wanted) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pref.namespace);
        match api
            .patch_status(
                &pref.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": wanted})),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => {
                return Err(AgentError::api(format!(
                    "update status of pod {}",
                    pref.name
                ))(e));
            }
        }
    }
    Ok(Some(wanted))
}

async fn list(ctx: &Arc<Context>, uid: &str) -> Result<Vec<Container>, AgentError> {
    let ctx = Arc::clone(ctx);
    let uid = uid.to_string();
    blocking("list containers", move || {
        ctx.index.of_pod(&ctx.engine, &uid)
    })
    .await
}

/// Makes sure the pod's sandbox runs; returns its init's host pid. A sandbox that died takes
/// the pod's running containers with it (they joined its namespaces).
async fn ensure_sandbox(
    ctx: &Arc<Context>,
    pod: &Pod,
    containers: &[Container],
    state: &mut WorkerState,
) -> Result<i32, AgentError> {
    let (latest, _) = runtime::latest(containers, runtime::SANDBOX);
    let host_network = container::host_network(pod);
    if let Some(s) = latest.filter(|s| s.status() == Status::Running && s.state.pid > 0) {
        if state.pod_ip.is_none() && !host_network {
            // Adopted after an agent restart: the address is on record (or the attach was
            // interrupted, and doing it again is harmless).
            state.pod_ip = attach(ctx, pod, s.state.pid).await?;
        }
        return Ok(s.state.pid);
    }
    let pref = pod_ref(pod);
    let attempt = latest.map(|s| runtime::attempt(s) + 1).unwrap_or(0);
    let stale: Vec<Container> = containers.to_vec();
    let figures = crate::qos::pod_figures(&pod.spec.clone().unwrap_or_default());
    let cgroup_parent = crate::podcgroup::pod_path(figures.qos, &pref.uid);
    let request = skiff_engine::CreateRequest {
        cgroup_parent: Some(cgroup_parent),
        name: Some(runtime::engine_name(&pref, runtime::SANDBOX, attempt)),
        cmd: vec![crate::pause::PAUSE_PATH.to_string(), "pause".to_string()],
        hostname: Some(container::pod_hostname(pod)),
        read_only: true,
        rootfs_dir: Some(ctx.pause_rootfs.clone()),
        labels: runtime::labels(&pref, runtime::SANDBOX, Kind::Sandbox, attempt),
        join_namespaces: container::sandbox_host_namespaces(pod),
        network: if host_network {
            skiff_engine::record::NetworkMode::Host
        } else {
            skiff_engine::record::NetworkMode::None
        },
        ..skiff_engine::CreateRequest::default()
    };
    let ctx2 = Arc::clone(ctx);
    let uid = pref.uid.clone();
    tracing::info!(namespace = %pref.namespace, pod = %pref.name, attempt, "starting the pod sandbox");
    let sandbox = blocking("start the sandbox", move || {
        let (engine, index) = (&ctx2.engine, &ctx2.index);
        for c in &stale {
            // Containers of an earlier sandbox cannot stay: their namespaces are gone.
            if c.is_active() {
                runtime::stop(engine, c, Duration::from_secs(0))?;
            }
            if runtime::container_name(c) == runtime::SANDBOX {
                runtime::remove(engine, index, c)?;
            }
        }
        crate::podcgroup::ensure(&uid, &figures, &ctx2.config.data_dir)?;
        runtime::create_and_start(engine, index, &request, &ctx2.config.program)
    })
    .await?;
    let pid = sandbox.state.pid;
    state.pod_ip = None;
    if !host_network {
        state.pod_ip = attach(ctx, pod, pid).await?;
    }
    Ok(pid)
}

/// Gives the sandbox whose init is `pid` its address on the node bridge (only loopback
/// without a pod network).
async fn attach(
    ctx: &Arc<Context>,
    pod: &Pod,
    pid: i32,
) -> Result<Option<std::net::Ipv4Addr>, AgentError> {
    let Some(net) = ctx.net.get() else {
        loopback_up(pid).await;
        return Ok(None);
    };
    let pref = pod_ref(pod);
    let netns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let address = net
        .node
        .attach(&pref.uid, &netns)
        .await
        .map_err(AgentError::network(format!(
            "attach pod {}/{} to the pod network",
            pref.namespace, pref.name
        )))?;
    Ok(Some(address.ip))
}

/// Brings `lo` up in the network namespace of `pid` (what CNI's loopback plugin does).
async fn loopback_up(pid: i32) {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "link", "set", "lo", "up"])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            tracing::warn!(pid, stderr = %String::from_utf8_lossy(&o.stderr), "cannot bring up the pod's loopback")
        }
        Err(e) => {
            tracing::warn!(pid, error = %e, "cannot run nsenter to bring up the pod's loopback (install util-linux and iproute2)")
        }
    }
}

/// Whether the back-off of a container that exited (attempt `last`) is over; otherwise
/// records the CrashLoopBackOff waiting reason.
fn backoff_over(
    state: &mut WorkerState,
    pod: &Pod,
    spec: &SpecContainer,
    last: &Container,
) -> bool {
    let entry = state.restarts.entry(spec.name.clone()).or_default();
    if entry.seen != last.config.id {
        let first = entry.seen.is_empty() && runtime::attempt(last) == 0;
        entry.seen = last.config.id.clone();
        if first {
            entry.not_before = None;
        } else {
            let ran_for = ran_for(last);
            entry.delay = entry.backoff.on_exit(ran_for);
            entry.not_before = Some(Instant::now() + entry.delay);
            let pref = pod_ref(pod);
            state.pending.push((
                spec.name.clone(),
                "BackOff".into(),
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    spec.name, pref.name, pref.namespace, pref.uid
                ),
            ));
        }
    }
    match entry.not_before {
        Some(t) if Instant::now() < t => {
            let pref = pod_ref(pod);
            state.waiting.insert(
                spec.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        entry.delay.as_secs(),
                        spec.name,
                        pref.name,
                        pref.namespace,
                        pref.uid
                    ),
                },
            );
            false
        }
        _ => true,
    }
}

fn ran_for(c: &Container) -> Duration {
    let start = skiff_engine::time::parse_rfc3339(&c.state.started_at);
    let end = skiff_engine::time::parse_rfc3339(&c.state.finished_at);
    match (start, end) {
        (Some(s), Some(e)) => e.duration_since(s).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// Pulls the image if needed, builds the environment and starts one container; failures
/// become the container's waiting reason.
async fn start(
    ctx: &Arc<Context>,
    pod: &Pod,
    spec: &SpecContainer,
    kind: Kind,
    attempt: u32,
    sandbox_pid: i32,
    state: &mut WorkerState,
) {
    let pref = pod_ref(pod);
    let image = spec.image.clone().unwrap_or_default();
    if let Some((until, _)) = state.pull_backoff.get(&spec.name)
        && Instant::now() < *until
    {
        let message = format!("Back-off pulling image \"{image}\"");
        state.waiting.insert(
            spec.name.clone(),
            Waiting {
                reason: "ImagePullBackOff".into(),
                message,
            },
        );
        return;
    }
    let policy = spec
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| images::default_policy(&image));
    if let Err(message) = images::ensure(ctx, pod, &spec.name, &image, &policy).await {
        tracing::warn!(namespace = %pref.namespace, pod = %pref.name, container = %spec.name, %message, "image pull failed");
        let delay = state
            .pull_backoff
            .get(&spec.name)
            .map(|(_, d)| (*d * 2).min(Duration::from_secs(300)))
            .unwrap_or(Duration::from_secs(10));
        state
            .pull_backoff
            .insert(spec.name.clone(), (Instant::now() + delay, delay));
        let reason = if policy == "Never" {
            "ErrImageNeverPull"
        } else {
            "ErrImagePull"
        };
        state.waiting.insert(
            spec.name.clone(),
            Waiting {
                reason: reason.into(),
                message,
            },
        );
        return;
    }
    state.pull_backoff.remove(&spec.name);
    let host_ip = ctx.config.node_ip.to_string();
    let pod_ip = state
        .pod_ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| host_ip.clone());
    let env = match container::environment(&ctx.client, pod, spec, &host_ip, &pod_ip).await {
        Ok(env) => env,
        Err(container::ConfigError(message)) => {
            state.waiting.insert(
                spec.name.clone(),
                Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message,
                },
            );
            return;
        }
    };
    let mut request = container::request(pod, spec, kind, attempt, sandbox_pid, env);
    let qos = crate::qos::qos_class(&pod.spec.clone().unwrap_or_default());
    request.cgroup_parent = Some(crate::podcgroup::pod_path(qos, &pref.uid));
    if let Some(net) = ctx.net.get() {
        let dns = net.cluster.dns();
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        request.resolv_conf = Some(crate::dnsconfig::resolv_conf(pod, &dns, &host_resolv));
        request.hosts = Some(crate::dnsconfig::hosts_file(
            pod,
            state.pod_ip,
            &dns,
            &host_hosts,
        ));
    }
    let engine = ctx.engine.clone();
    let image_user = blocking("read the image", move || {
        Ok(crate::security::image_user(&engine, &image))
    })
    .await
    .unwrap_or_default();
    let seccomp_root = crate::security::seccomp_root(&ctx.config.data_dir);
    if let Err(err) = crate::security::apply(pod, spec, &image_user, &seccomp_root, &mut request) {
        let message = err.to_string();
        if state
            .waiting
            .get(&spec.name)
            .is_none_or(|w| w.message != message)
        {
            // The kubelet's `Failed` event, once per distinct refusal.
            let event = (
                spec.name.clone(),
                "Failed".into(),
                format!("Error: {message}"),
            );
            state.pending.push(event);
        }
        state.waiting.insert(
            spec.name.clone(),
            Waiting {
                reason: err.reason().into(),
                message: err.to_string(),
            },
        );
        return;
    }
    let prepared = state.volumes.clone().unwrap_or_default();
    crate::security::own_volumes(pod, &prepared);
    match volumes::binds(spec, &prepared) {
        Ok(binds) => request.binds = binds,
        Err(message) => {
            state.waiting.insert(
                spec.name.clone(),
                Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message,
                },
            );
            return;
        }
    }
    match crate::termination::prepare(&ctx.config.data_dir, &pref, spec, attempt) {
        Ok(Some(setup)) => {
            request.binds.push(setup.bind);
            request.labels.extend(setup.labels);
        }
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(container = %spec.name, error = %err, "no termination message file")
        }
    }
    let ctx2 = Arc::clone(ctx);
    tracing::info!(namespace = %pref.namespace, pod = %pref.name, container = %spec.name, attempt, "starting container");
    match blocking("start container", move || {
        runtime::create_and_start(&ctx2.engine, &ctx2.index, &request, &ctx2.config.program)
    })
    .await
    {
        Ok(started_container) => {
            state.waiting.remove(&spec.name);
            let name = Some(spec.name.as_str());
            let created = format!("Created container: {}", spec.name);
            event(ctx, pod, name, "Normal", "Created", &created);
            let started = format!("Started container {}", spec.name);
            event(ctx, pod, name, "Normal", "Started", &started);
            let grace = grace_period(pod);
            let _ =
                crate::hooks::post_start(ctx, pod, spec, &started_container, sandbox_pid, grace)
                    .await;
        }
        Err(err) => {
            tracing::warn!(namespace = %pref.namespace, pod = %pref.name, container = %spec.name, error = %err, "container did not start");
            // The engine's record says why; the status shows it as terminated.
            state.waiting.remove(&spec.name);
        }
    }
}

/// Removes attempts older than the previous one of each container (logs of the last two
/// stay, as `kubectl logs --previous` needs).
async fn prune_old_attempts(ctx: &Arc<Context>, containers: &[Container]) {
    let mut newest: HashMap<&str, u32> = HashMap::new();
    for c in containers {
        let n = newest.entry(runtime::container_name(c)).or_insert(0);
        *n = (*n).max(runtime::attempt(c));
    }
    let old: Vec<Container> = containers
        .iter()
        .filter(|c| {
            !c.is_active()
                && runtime::attempt(c) + 1
                    < newest.get(runtime::container_name(c)).copied().unwrap_or(0)
        })
        .cloned()
        .collect();
    if old.is_empty() {
        return;
    }
    let ctx = Arc::clone(ctx);
    let _ = blocking("remove old attempts", move || {
        for c in &old {
            runtime::remove(&ctx.engine, &ctx.index, c)?;
        }
        Ok(())
    })
    .await;
}
