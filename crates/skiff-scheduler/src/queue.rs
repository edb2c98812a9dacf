//! The scheduling queue, shaped like kube-scheduler's: fed event by event from the watch of
//! pending pods (`spec.nodeName=`), never rebuilt from a full list per pass.
//!
//! Every pending pod this scheduler owns is in exactly one place:
//! - *active*: ready to be tried, higher `spec.priority` first, then older (creation time),
//!   then by name;
//! - *back-off*: failed, something changed since, waiting out its back-off;
//! - *unschedulable*: failed, waiting for a change that could help (a cluster event, or an
//!   update of the pod itself), or for the flush interval to pass;
//! - *in flight*: decided and being bound (assumed in the cache), until the watch drops it
//!   (bound) or the binding fails or its assumption expires (back to active).
//!
//! Pods deleted, bound elsewhere or handed to another scheduler leave the queue with the
//! watch event that says so.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher;

/// Where an active pod stands in line: higher priority first, then older, then by name,
/// namespace and uid (so that the order is total).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ActiveKey {
    /// `-spec.priority` (so that higher priorities sort first).
    neg_priority: i64,
    /// `None` (no timestamp) sorts first, as the former sort did.
    created: Option<Time>,
    name: String,
    namespace: String,
    uid: String,
}

impl ActiveKey {
    fn of(pod: &Pod, uid: &str) -> ActiveKey {
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        ActiveKey {
            neg_priority: -i64::from(priority),
            created: pod.metadata.creation_timestamp.clone(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: uid.to_string(),
        }
    }
}

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    /// Until this instant.
    Backoff(Instant),
    /// Until a change, or this instant (the flush).
    Unschedulable(Instant),
    InFlight,
}

/// The last failed attempt of a pod.
#[derive(Debug)]
struct Failure {
    /// Not retried before this instant.
    retry_at: Instant,
    /// The back-off that led to `retry_at` (doubled at the next failure).
    backoff: Duration,
    /// The message already written to the pod.
    message: String,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    key: ActiveKey,
    place: Place,
    failure: Option<Failure>,
    /// The node this scheduler nominated the pod to by preemption (the watch may not show
    /// `status.nominatedNodeName` yet).
    nominated: Option<String>,
}

impl Entry {
    /// The node the pod is nominated to: by this scheduler, else in its status.
    fn nominated_node(&self) -> Option<String> {
        self.nominated.clone().or_else(|| {
            self.pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty())
        })
    }
}

/// Back-off bounds and the flush interval.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first back-off after a failure.
    pub initial: Duration,
    /// The longest back-off.
    pub max: Duration,
    /// How long an unschedulable pod waits for a change before it is tried anyway.
    pub flush: Duration,
}

/// The pending pods of one scheduler.
#[derive(Debug)]
pub struct SchedulingQueue {
    scheduler_name: String,
    backoff: Backoff,
    pods: HashMap<String, Entry>,
    active: BTreeSet<ActiveKey>,
    /// `(retry_at, uid)` of pods in back-off.
    backing_off: BTreeSet<(Instant, String)>,
    /// `(flush_at, uid)` of unschedulable pods.
    unschedulable: BTreeSet<(Instant, String)>,
    /// Uids of pods nominated to a node (by this scheduler or in their status).
    nominated: HashSet<String>,
    /// Pods of a (re)list in progress, swapped in at its end.
    listing: Option<Vec<Pod>>,
    synced: bool,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl SchedulingQueue {
    /// An empty queue for the pods whose `spec.schedulerName` is `scheduler_name` (or empty).
    pub fn new(scheduler_name: impl Into<String>, backoff: Backoff) -> SchedulingQueue {
        SchedulingQueue {
            scheduler_name: scheduler_name.into(),
            backoff,
            pods: HashMap::new(),
            active: BTreeSet::new(),
            backing_off: BTreeSet::new(),
            unschedulable: BTreeSet::new(),
            nominated: HashSet::new(),
            listing: None,
            synced: false,
        }
    }

    /// Whether the watch has listed every pending pod once.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// How many pods are queued, in any place.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is queued.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Whether a pod is ready to be tried.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Whether `pod` is this scheduler's to place: not being deleted, not bound, and asking
    /// for this scheduler (or none).
    pub fn is_ours(&self, pod: &Pod) -> bool {
        let spec = pod.spec.as_ref();
        let name = spec.and_then(|s| s.scheduler_name.as_deref());
        pod.metadata.deletion_timestamp.is_none()
            && name.is_none_or(|n| n.is_empty() || n == self.scheduler_name)
            && spec
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty)
    }

    /// Applies one event of the pending-pod watch.
    pub fn apply(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.listing = Some(Vec::new()),
            watcher::Event::InitApply(pod) => self.listing.get_or_insert_with(Vec::new).push(pod),
            watcher::Event::InitDone => {
                let pods = self.listing.take().unwrap_or_default();
                let listed: HashSet<String> = pods.iter().map(uid_of).collect();
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.remove(&uid);
                }
                for pod in pods {
                    self.upsert(pod, now);
                }
                self.synced = true;
            }
            watcher::Event::Apply(pod) => self.upsert(pod, now),
            watcher::Event::Delete(pod) => self.remove(&uid_of(&pod)),
        }
    }

    /// A pod added or changed: new pods are active; an unschedulable pod that changed is
    /// tried again (after its back-off); a pod no longer ours leaves.
    fn upsert(&mut self, pod: Pod, now: Instant) {
        let uid = uid_of(&pod);
        if !self.is_ours(&pod) {
            self.remove(&uid);
            return;
        }
        let key = ActiveKey::of(&pod, &uid);
        let pod = Arc::new(pod);
        let Some(entry) = self.pods.get_mut(&uid) else {
            self.active.insert(key.clone());
            let entry = Entry {
                pod,
                key,
                place: Place::Active,
                failure: None,
                nominated: None,
            };
            if entry.nominated_node().is_some() {
                self.nominated.insert(uid.clone());
            }
            self.pods.insert(uid, entry);
            return;
        };
        let changed = entry.pod.metadata.resource_version != pod.metadata.resource_version;
        entry.pod = pod;
        if entry.key != key {
            if entry.place == Place::Active {
                self.active.remove(&entry.key);
                self.active.insert(key.clone());
            }
            entry.key = key;
        }
        if entry.nominated_node().is_some() {
            self.nominated.insert(uid.clone());
        } else {
            self.nominated.remove(&uid);
        }
        if changed && matches!(entry.place, Place::Unschedulable(_)) {
            self.wake(&uid, now);
        }
    }

    /// Forgets the pod with this uid.
    fn remove(&mut self, uid: &str) {
        if let Some(entry) = self.pods.remove(uid) {
            self.unplace(uid, &entry.key, entry.place);
            self.nominated.remove(uid);
        }
    }

    /// Takes the pod out of the set that holds it for `place`.
    fn unplace(&mut self, uid: &str, key: &ActiveKey, place: Place) {
        match place {
            Place::Active => {
                self.active.remove(key);
            }
            Place::Backoff(at) => {
                self.backing_off.remove(&(at, uid.to_string()));
            }
            Place::Unschedulable(at) => {
                self.unschedulable.remove(&(at, uid.to_string()));
            }
            Place::InFlight => {}
        }
    }

    /// Moves the pod to `place`.
    fn place(&mut self, uid: &str, place: Place) {
        let Some(entry) = self.pods.get_mut(uid) else {
            return;
        };
        let (old, key) = (entry.place, entry.key.clone());
        entry.place = place;
        self.unplace(uid, &key, old);
        match place {
            Place::Active => {
                self.active.insert(key);
            }
            Place::Backoff(at) => {
                self.backing_off.insert((at, uid.to_string()));
            }
            Place::Unschedulable(at) => {
                self.unschedulable.insert((at, uid.to_string()));
            }
            Place::InFlight => {}
        }
    }

    /// A change that could help an unschedulable pod: active once its back-off is over.
    fn wake(&mut self, uid: &str, now: Instant) {
        let retry_at = self
            .pods
            .get(uid)
            .and_then(|e| e.failure.as_ref())
            .map(|f| f.retry_at);
        match retry_at {
            Some(at) if now < at => self.place(uid, Place::Backoff(at)),
            _ => self.place(uid, Place::Active),
        }
    }

    /// Something changed in the cluster (nodes, bound pods, volumes): every unschedulable pod
    /// is tried again once its back-off is over (kube-scheduler's move to the active or
    /// back-off queue).
    pub fn cluster_changed(&mut self, now: Instant) {
        let waiting: Vec<String> = self
            .unschedulable
            .iter()
            .map(|(_, uid)| uid.clone())
            .collect();
        for uid in waiting {
            self.wake(&uid, now);
        }
    }

    /// Moves pods whose back-off is over, and unschedulable pods that waited the flush
    /// interval, to active.
    pub fn flush(&mut self, now: Instant) {
        let due = |set: &BTreeSet<(Instant, String)>| -> Vec<String> {
            set.iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, uid)| uid.clone())
                .collect()
        };
        for uid in due(&self.backing_off)
            .into_iter()
            .chain(due(&self.unschedulable))
        {
            self.place(&uid, Place::Active);
        }
    }

    /// When [`flush`](Self::flush) will next have something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        let first = |set: &BTreeSet<(Instant, String)>| set.first().map(|(at, _)| *at);
        match (first(&self.backing_off), first(&self.unschedulable)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next pod to try (now in flight), the most important first.
    pub fn pop(&mut self) -> Option<Arc<Pod>> {
        let key = self.active.pop_first()?;
        let entry = self.pods.get_mut(&key.uid)?;
        entry.place = Place::InFlight;
        Some(Arc::clone(&entry.pod))
    }

    /// The pod was placed (and is being bound): its failures are forgotten.
    pub fn scheduled(&mut self, uid: &str) {
        if let Some(entry) = self.pods.get_mut(uid) {
            entry.failure = None;
        }
    }

    /// A pod in flight goes back to active: its binding failed, or its assumption expired.
    /// A pod the watch no longer shows pending is not brought back.
    pub fn requeue(&mut self, uid: &str) {
        if self
            .pods
            .get(uid)
            .is_some_and(|e| e.place == Place::InFlight)
        {
            self.place(uid, Place::Active);
        }
    }

    /// The pod fits no node: it waits for a change, at least one back-off (doubled at each
    /// failure in a row, up to the maximum). Whether `message` differs from the one of the
    /// previous failure (and should be reported).
    pub fn unschedulable(&mut self, uid: &str, now: Instant, message: String) -> bool {
        let Backoff {
            initial,
            max,
            flush,
        } = self.backoff;
        let Some(entry) = self.pods.get_mut(uid) else {
            return false;
        };
        let previous = entry.failure.take();
        let backoff = previous
            .as_ref()
            .map_or(initial, |f| (f.backoff * 2).min(max));
        let report = previous.as_ref().is_none_or(|f| f.message != message);
        let retry_at = now + backoff;
        entry.failure = Some(Failure {
            retry_at,
            backoff,
            message,
        });
        self.place(uid, Place::Unschedulable(retry_at + flush));
        report
    }

    /// Records that this scheduler nominated the pod to `node` by preemption.
    pub fn nominate(&mut self, uid: &str, node: &str) {
        if let Some(entry) = self.pods.get_mut(uid) {
            entry.nominated = Some(node.to_string());
            self.nominated.insert(uid.to_string());
        }
    }

    /// The node the pod was nominated to earlier, by this scheduler or in its status.
    pub fn nominated_node(&self, uid: &str) -> Option<String> {
        self.pods.get(uid).and_then(Entry::nominated_node)
    }

    /// The queued pods nominated to a node (and not being bound): their room is kept for them.
    pub fn nominations(&self) -> Vec<(Arc<Pod>, String)> {
        self.nominated
            .iter()
            .filter_map(|uid| self.pods.get(uid))
            .filter(|e| e.place != Place::InFlight)
            .filter_map(|e| Some((Arc::clone(&e.pod), e.nominated_node()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
        flush: Duration::from_secs(60),
    };

    fn pod(name: &str, priority: i32, created: &str, rv: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "resourceVersion": rv, "creationTimestamp": created},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    }

    fn names(queue: &mut SchedulingQueue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop())
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    fn listed(pods: Vec<Pod>, now: Instant) -> SchedulingQueue {
        let mut queue = SchedulingQueue::new("default-scheduler", BACKOFF);
        queue.apply(watcher::Event::Init, now);
        for p in pods {
            queue.apply(watcher::Event::InitApply(p), now);
        }
        assert!(!queue.synced());
        queue.apply(watcher::Event::InitDone, now);
        assert!(queue.synced());
        queue
    }

    #[test]
    fn higher_priority_first_then_older_then_by_name() {
        let now = Instant::now();
        let mut queue = listed(
            vec![
                pod("late", 0, "2026-01-01T00:00:05Z", "1"),
                pod("b", 0, "2026-01-01T00:00:01Z", "1"),
                pod("a", 0, "2026-01-01T00:00:01Z", "1"),
                pod("urgent", 100, "2026-01-01T00:00:09Z", "1"),
            ],
            now,
        );
        assert_eq!(names(&mut queue), ["urgent", "a", "b", "late"]);
        assert_eq!(
            queue.len(),
            4,
            "popped pods stay known until the watch drops them"
        );
    }

    #[test]
    fn pods_bound_deleted_or_not_ours_leave_and_a_relist_drops_the_unlisted() {
        let now = Instant::now();
        let mut queue = listed(
            vec![
                pod("a", 0, "2026-01-01T00:00:01Z", "1"),
                pod("b", 0, "2026-01-01T00:00:02Z", "1"),
                pod("c", 0, "2026-01-01T00:00:03Z", "1"),
            ],
            now,
        );
        queue.apply(
            watcher::Event::Delete(pod("a", 0, "2026-01-01T00:00:01Z", "2")),
            now,
        );
        let mut elsewhere = pod("b", 0, "2026-01-01T00:00:02Z", "2");
        elsewhere.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        queue.apply(watcher::Event::Apply(elsewhere), now);
        let mut terminating = pod("d", 0, "2026-01-01T00:00:04Z", "2");
        terminating.metadata.deletion_timestamp = terminating.metadata.creation_timestamp.clone();
        queue.apply(watcher::Event::Apply(terminating), now);
        assert_eq!(queue.len(), 1);
        queue.apply(watcher::Event::Init, now);
        queue.apply(
            watcher::Event::InitApply(pod("e", 0, "2026-01-01T00:00:05Z", "1")),
            now,
        );
        queue.apply(watcher::Event::InitDone, now);
        assert_eq!(names(&mut queue), ["e"], "c was not listed again");
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn an_unschedulable_pod_waits_for_a_change_and_its_back_off() {
        let start = Instant::now();
        let mut queue = listed(vec![pod("a", 0, "2026-01-01T00:00:01Z", "1")], start);
        assert_eq!(names(&mut queue), ["a"]);
        assert!(queue.unschedulable("uid-a", start, "full".into()));
        // A change during the back-off: tried once the back-off is over.
        queue.cluster_changed(start);
        queue.flush(start + Duration::from_millis(500));
        assert!(!queue.has_active());
        assert_eq!(queue.next_wake(), Some(start + Duration::from_secs(1)));
        queue.flush(start + Duration::from_secs(1));
        assert_eq!(names(&mut queue), ["a"]);
        // The same message again is not reported again; the back-off doubled.
        let t1 = start + Duration::from_secs(1);
        assert!(!queue.unschedulable("uid-a", t1, "full".into()));
        // No change: nothing happens after the back-off, only at the flush.
        queue.flush(t1 + Duration::from_secs(3));
        assert!(!queue.has_active());
        assert_eq!(
            queue.next_wake(),
            Some(t1 + Duration::from_secs(2) + BACKOFF.flush)
        );
        queue.flush(t1 + Duration::from_secs(2) + BACKOFF.flush);
        assert_eq!(names(&mut queue), ["a"]);
        // An update of the pod itself after the back-off: tried at once; a new message is
        // reported; the back-off stops at the maximum.
        let t2 = t1 + Duration::from_secs(100);
        assert!(queue.unschedulable("uid-a", t2, "other".into()));
        assert!(!queue.unschedulable("uid-a", t2, "other".into()));
        let t3 = t2 + Duration::from_secs(4);
        queue.apply(
            watcher::Event::Apply(pod("a", 0, "2026-01-01T00:00:01Z", "1")),
            t3,
        );
        assert!(!queue.has_active(), "same resourceVersion: no change");
        queue.apply(
            watcher::Event::Apply(pod("a", 0, "2026-01-01T00:00:01Z", "2")),
            t3,
        );
        assert_eq!(names(&mut queue), ["a"]);
        // Placed: the failures are forgotten, the next failure backs off from the start.
        queue.scheduled("uid-a");
        queue.requeue("uid-a");
        assert_eq!(names(&mut queue), ["a"]);
        queue.unschedulable("uid-a", t3, "full".into());
        queue.cluster_changed(t3 + Duration::from_secs(1));
        assert_eq!(names(&mut queue), ["a"]);
    }

    #[test]
    fn a_failed_binding_requeues_only_pods_still_pending() {
        let now = Instant::now();
        let mut queue = listed(
            vec![
                pod("a", 0, "2026-01-01T00:00:01Z", "1"),
                pod("b", 0, "2026-01-01T00:00:02Z", "1"),
            ],
            now,
        );
        assert_eq!(names(&mut queue), ["a", "b"]);
        queue.apply(
            watcher::Event::Delete(pod("b", 0, "2026-01-01T00:00:02Z", "2")),
            now,
        );
        queue.requeue("uid-a");
        queue.requeue("uid-b");
        queue.requeue("uid-a");
        assert_eq!(names(&mut queue), ["a"]);
    }

    #[test]
    fn nominations_cover_queued_pods_not_being_bound() {
        let now = Instant::now();
        let mut by_status = pod("b", 0, "2026-01-01T00:00:02Z", "1");
        by_status.status =
            Some(serde_json::from_value(json!({"nominatedNodeName": "n2"})).unwrap());
        let mut queue = listed(
            vec![pod("a", 0, "2026-01-01T00:00:01Z", "1"), by_status],
            now,
        );
        queue.nominate("uid-a", "n1");
        let mut got: Vec<(String, String)> = queue
            .nominations()
            .into_iter()
            .map(|(p, n)| (p.metadata.name.clone().unwrap(), n))
            .collect();
        got.sort();
        assert_eq!(got, [("a".into(), "n1".into()), ("b".into(), "n2".into())]);
        assert_eq!(queue.nominated_node("uid-a").as_deref(), Some("n1"));
        assert_eq!(queue.pop().unwrap().metadata.name.as_deref(), Some("a"));
        assert_eq!(queue.nominations().len(), 1, "a is being bound");
        queue.apply(
            watcher::Event::Delete(pod("b", 0, "2026-01-01T00:00:02Z", "2")),
            now,
        );
        assert!(queue.nominations().is_empty());
    }
}
