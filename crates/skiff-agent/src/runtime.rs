//! The agent's use of the container engine: every container of a pod is an engine container
//! labelled with the pod's uid, the container's name, its kind (sandbox, init, app) and its
//! attempt (0, 1, ...: each restart is a new container, as the kubelet does). The engine's
//! records are the truth: an agent that restarts finds its pods' containers from them.
//!
//! Everything here blocks (files, processes); call it through [`crate::error::blocking`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use skiff_engine::{Container, CreateRequest, Engine, Status};

use crate::AgentError;

/// Label: the pod's uid.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// Label: the pod's name.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label: the container's name in the pod spec (`POD` for the sandbox).
pub const LABEL_CONTAINER: &str = "io.kubernetes.container.name";
/// Label: `sandbox`, `init` or `app`.
pub const LABEL_KIND: &str = "io.skiff.container.kind";
/// Label: which start of this container it is (0 first).
pub const LABEL_ATTEMPT: &str = "io.skiff.container.attempt";
/// The container name of a pod's sandbox.
pub const SANDBOX: &str = "POD";

/// What role an engine container plays in its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The infra container holding the pod's namespaces.
    Sandbox,
    /// An init container.
    Init,
    /// An app container.
    App,
}

impl Kind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sandbox => "sandbox",
            Kind::Init => "init",
            Kind::App => "app",
        }
    }
}

/// Who a container belongs to, as its labels say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's uid.
    pub uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The labels and the engine name of a pod's container.
pub fn labels(pod: &PodRef, container: &str, kind: Kind, attempt: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_POD_UID.to_string(), pod.uid.clone()),
        (LABEL_POD_NAME.to_string(), pod.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), pod.namespace.clone()),
        (LABEL_CONTAINER.to_string(), container.to_string()),
        (LABEL_KIND.to_string(), kind.as_str().to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ])
}

/// The engine name: `k8s_CONTAINER_POD_NAMESPACE_UID_ATTEMPT` (dockershim's form).
pub fn engine_name(pod: &PodRef, container: &str, attempt: u32) -> String {
    format!(
        "k8s_{container}_{}_{}_{}_{attempt}",
        pod.name, pod.namespace, pod.uid
    )
}

/// The attempt number of an engine container.
pub fn attempt(c: &Container) -> u32 {
    c.config
        .labels
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// The pod-spec container name of an engine container.
pub fn container_name(c: &Container) -> &str {
    c.config
        .labels
        .get(LABEL_CONTAINER)
        .map(String::as_str)
        .unwrap_or_default()
}

/// The pod uid of an engine container (none for containers the agent did not make).
pub fn pod_uid(c: &Container) -> Option<&str> {
    c.config.labels.get(LABEL_POD_UID).map(String::as_str)
}

/// Every engine container the agent made, grouped by pod uid.
pub fn by_pod(engine: &Engine) -> Result<BTreeMap<String, Vec<Container>>, AgentError> {
    let mut out: BTreeMap<String, Vec<Container>> = BTreeMap::new();
    for c in engine
        .list()
        .map_err(AgentError::engine("list containers"))?
    {
        if let Some(uid) = pod_uid(&c) {
            out.entry(uid.to_string()).or_default().push(c);
        }
    }
    Ok(out)
}

/// Which engine containers belong to which pod, so that a pod's sync reads its own records
/// and not every record on the node (which made syncing N pods cost N x N reads a second).
/// Built from one full listing when the agent starts; the agent adds what it creates and
/// forgets what it removes. A container removed behind its back (`skiff rm`) is forgotten the
/// next time its record cannot be read.
#[derive(Debug, Default)]
pub struct Index {
    by_pod: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Index {
    /// The index of every container the agent made on `engine`.
    pub fn build(engine: &Engine) -> Result<Index, AgentError> {
        let index = Index::default();
        index.learn(&by_pod(engine)?);
        Ok(index)
    }

    /// Adds the containers of a full listing (for instance the orphan sweep's).
    pub fn learn(&self, pods: &BTreeMap<String, Vec<Container>>) {
        let mut map = self.lock();
        for (uid, containers) in pods {
            let ids = map.entry(uid.clone()).or_default();
            ids.extend(containers.iter().map(|c| c.config.id.clone()));
        }
    }

    fn add(&self, uid: &str, id: &str) {
        self.lock()
            .entry(uid.to_string())
            .or_default()
            .insert(id.to_string());
    }

    fn forget(&self, uid: &str, id: &str) {
        let mut map = self.lock();
        if let Some(ids) = map.get_mut(uid) {
            ids.remove(id);
            if ids.is_empty() {
                map.remove(uid);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        // A panic while holding the lock leaves a consistent map (every change is one call).
        self.by_pod.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The containers of pod `uid`, newest first (as [`Engine::list`] orders them).
    pub fn of_pod(&self, engine: &Engine, uid: &str) -> Result<Vec<Container>, AgentError> {
        let ids: Vec<String> = self
            .lock()
            .get(uid)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match engine.load(&id) {
                Ok(c) => out.push(c),
                Err(_) if !engine.dir(&id).config().exists() => self.forget(uid, &id),
                Err(err) => {
                    return Err(AgentError::engine(format!("read container {id}"))(err));
                }
            }
        }
        out.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(out)
    }
}

/// The newest attempt of `name` among `containers`, and the one before it.
pub fn latest<'a>(
    containers: &'a [Container],
    name: &str,
) -> (Option<&'a Container>, Option<&'a Container>) {
    let mut mine: Vec<&Container> = containers
        .iter()
        .filter(|c| container_name(c) == name)
        .collect();
    mine.sort_by_key(|c| attempt(c));
    let last = mine.pop();
    (last, mine.pop())
}

/// Creates and starts a container; the monitor goes on alone (a thread reaps it when it ends,
/// so no zombie stays behind). Returns the container as it runs.
pub fn create_and_start(
    engine: &Engine,
    index: &Index,
    request: &CreateRequest,
    program: &Path,
) -> Result<Container, AgentError> {
    let what = request.name.clone().unwrap_or_default();
    let config = engine
        .create(request)
        .map_err(AgentError::engine(format!("create container {what}")))?;
    if let Some(uid) = request.labels.get(LABEL_POD_UID) {
        index.add(uid, &config.id);
    }
    match engine.start(&config.id, program) {
        Ok(handle) => {
            let _ = std::thread::Builder::new()
                .name("skiff-shim-reaper".into())
                // It only waits: a small stack keeps a node of many pods small.
                .stack_size(REAPER_STACK)
                .spawn(move || handle.finish());
        }
        Err(err) => {
            // The record stays (exited, with the error) so the status can tell why.
            return Err(AgentError::engine(format!("start container {what}"))(err));
        }
    }
    engine
        .load(&config.id)
        .map_err(AgentError::engine(format!("read container {what}")))
}

/// Stops a container: its stop signal, then SIGKILL after `grace`.
pub fn stop(engine: &Engine, c: &Container, grace: Duration) -> Result<(), AgentError> {
    if !matches!(c.status(), Status::Running | Status::Restarting) {
        return Ok(());
    }
    engine.stop(c, grace).map_err(AgentError::engine(format!(
        "stop container {}",
        c.config.name
    )))
}

/// Removes a container (killing it if it still runs).
pub fn remove(engine: &Engine, index: &Index, c: &Container) -> Result<(), AgentError> {
    engine.remove(c, true).map_err(AgentError::engine(format!(
        "remove container {}",
        c.config.name
    )))?;
    if let Some(uid) = pod_uid(c) {
        index.forget(uid, &c.config.id);
    }
    Ok(())
}

/// The stack of a thread that waits for one container's monitor.
const REAPER_STACK: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn pods_known(index: &Index) -> Vec<String> {
        let mut uids: Vec<String> = index.lock().keys().cloned().collect();
        uids.sort();
        uids
    }

    #[test]
    fn the_index_forgets_a_pod_once_its_last_container_is_removed() {
        let index = Index::default();
        index.add("pod-a", "sandbox-a");
        index.add("pod-a", "app-a");
        index.add("pod-b", "sandbox-b");
        index.forget("pod-a", "app-a");
        assert_eq!(pods_known(&index), ["pod-a", "pod-b"]);
        index.forget("pod-a", "sandbox-a");
        index.forget("pod-b", "sandbox-b");
        assert!(pods_known(&index).is_empty());
        // Forgetting what is not there changes nothing.
        index.forget("pod-c", "x");
        assert!(pods_known(&index).is_empty());
    }

    #[test]
    fn the_index_forgets_containers_removed_behind_its_back() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let index = Index::default();
        index.add("pod-a", "removed-by-hand");
        assert!(index.of_pod(&engine, "pod-a").unwrap().is_empty());
        assert!(pods_known(&index).is_empty());
    }
}
