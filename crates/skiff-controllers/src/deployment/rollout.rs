//! The Deployment's decision, as a pure function: which ReplicaSets to create, scale, adopt or
//! delete, and the status `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::util::{controller_of, controller_ref, labels, pod_is_finished, selector};

/// The label that tells a Deployment's ReplicaSets (and their pods) apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Replicas plus max surge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// One change to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create this ReplicaSet.
    Create(Box<ReplicaSet>),
    /// Set a ReplicaSet's replicas and annotations.
    Scale {
        /// The ReplicaSet.
        name: String,
        /// Its new replicas.
        replicas: i32,
        /// Annotations to set.
        annotations: BTreeMap<String, String>,
    },
    /// Take an orphan ReplicaSet that matches the selector.
    Adopt(String),
    /// Delete an old, empty ReplicaSet beyond `revisionHistoryLimit`.
    Delete(String),
}

/// What one reconcile of a Deployment should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Changes, in order.
    pub steps: Vec<Step>,
    /// The status to report.
    pub status: DeploymentStatus,
    /// When to look again (the progress deadline).
    pub requeue_after: Option<Duration>,
}

/// `spec.replicas` (1 when unset).
pub fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn resolve(value: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let text = match value {
        Some(IntOrString::Int(i)) => return (*i).max(0),
        Some(IntOrString::String(s)) => s.clone(),
        None => default.to_string(),
    };
    let Some(percent) = text.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return text.parse::<i32>().unwrap_or(0).max(0);
    };
    let scaled = i64::from(total) * percent;
    let v = if round_up {
        (scaled + 99).div_euclid(100)
    } else {
        scaled.div_euclid(100)
    };
    i32::try_from(v.max(0)).unwrap_or(i32::MAX)
}

/// Max surge and max unavailable as numbers (surge rounds up, unavailable down; both zero
/// means one unavailable). A Recreate Deployment has neither.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let replicas = replicas_of(d);
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(
        rolling.and_then(|r| r.max_surge.as_ref()),
        replicas,
        true,
        "25%",
    );
    let unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        "25%",
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// The template without the hash label, for comparing a ReplicaSet's with the Deployment's.
fn without_hash(t: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut t = t.cloned().unwrap_or_default();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// The pod-template hash: FNV-1a over the template and the collision count, encoded like
/// apimachinery's `SafeEncodeString` (no vowels, no look-alike digits).
pub fn template_hash(template: Option<&PodTemplateSpec>, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(without_hash(template).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Annotations a Deployment passes to its ReplicaSets (not its own bookkeeping).
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                REVISION
                    | DESIRED_REPLICAS
                    | MAX_REPLICAS
                    | "kubectl.kubernetes.io/last-applied-configuration"
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The ReplicaSet a Deployment creates for its current template.
pub fn new_replica_set(d: &Deployment, hash: &str, revision: i64, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let (surge, _) = surge_and_unavailable(d);
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), replicas_of(d).to_string());
    annotations.insert(MAX_REPLICAS.into(), (replicas_of(d) + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: meta.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// The working view of one ReplicaSet while deciding.
#[derive(Debug, Clone)]
struct Slot {
    rs: Arc<ReplicaSet>,
    replicas: i32,
    desired_annotation: Option<String>,
    is_new: bool,
    exists: bool,
}

fn ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// Decides for Deployment `d` given the ReplicaSets and pods of its namespace.
pub fn decide(
    d: &Deployment,
    replica_sets: &[Arc<ReplicaSet>],
    pods: &[Arc<Pod>],
    now: SystemTime,
) -> Plan {
    let mut plan = Plan::default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let matcher = selector(Some(&spec.selector)).filter(|m| !m.is_empty());
    let replicas = replicas_of(d);
    let paused = spec.paused == Some(true);
    let deleting = d.metadata.deletion_timestamp.is_some();
    let (surge, max_unavailable) = surge_and_unavailable(d);

    // Ours: controlled by us, or orphans we adopt.
    let mut owned: Vec<Arc<ReplicaSet>> = Vec::new();
    for rs in replica_sets {
        let matches = matcher
            .as_ref()
            .is_some_and(|m| m.matches(&labels(&rs.metadata)));
        match controller_of(&rs.metadata) {
            Some(c) if c.uid == uid => owned.push(Arc::clone(rs)),
            None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                plan.steps.push(Step::Adopt(rs.name_any()));
                owned.push(Arc::clone(rs));
            }
            _ => {}
        }
    }
    let wanted = without_hash(Some(&spec.template));
    let new_index = owned
        .iter()
        .position(|rs| without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == wanted);
    let max_old_revision = owned
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != new_index)
        .map(|(_, rs)| revision_of(rs))
        .max()
        .unwrap_or(0);
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(Some(&spec.template), collision);

    let mut slots: Vec<Slot> = owned
        .iter()
        .enumerate()
        .map(|(i, rs)| Slot {
            rs: Arc::clone(rs),
            replicas: rs_replicas(rs),
            desired_annotation: rs.annotations().get(DESIRED_REPLICAS).cloned(),
            is_new: Some(i) == new_index,
            exists: true,
        })
        .collect();
    let mut revision_bump = None;
    if let Some(i) = new_index {
        if revision_of(&owned[i]) <= max_old_revision {
            revision_bump = Some(max_old_revision + 1);
        }
    } else if !paused && !deleting {
        let rs = new_replica_set(d, &hash, max_old_revision + 1, 0);
        slots.push(Slot {
            rs: Arc::new(rs),
            replicas: 0,
            desired_annotation: Some(replicas.to_string()),
            is_new: true,
            exists: false,
        });
    }
    let before: Vec<i32> = slots.iter().map(|s| s.replicas).collect();

    if !deleting {
        let active: Vec<usize> = (0..slots.len())
            .filter(|&i| slots[i].replicas > 0)
            .collect();
        let scaling_event = active
            .iter()
            .any(|&i| slots[i].desired_annotation.as_deref() != Some(&replicas.to_string()));
        if paused || scaling_event {
            scale(&mut slots, replicas, surge);
        } else if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            recreate(&mut slots, replicas, pods);
        } else {
            rolling(&mut slots, replicas, surge, max_unavailable);
        }
    }

    for (i, slot) in slots.iter().enumerate() {
        let mut annotations = BTreeMap::new();
        if slot.is_new
            && let Some(rev) = revision_bump
        {
            annotations.insert(REVISION.to_string(), rev.to_string());
            annotations.extend(copied_annotations(d));
        }
        if !slot.exists {
            let mut rs = (*slot.rs).clone();
            if let Some(s) = rs.spec.as_mut() {
                s.replicas = Some(slot.replicas);
            }
            plan.steps.push(Step::Create(Box::new(rs)));
            continue;
        }
        let changed = slot.replicas != before[i];
        if changed
            || slot.desired_annotation.as_deref() != Some(&replicas.to_string())
                && slot.replicas > 0
        {
            annotations.insert(DESIRED_REPLICAS.into(), replicas.to_string());
            annotations.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
        }
        if changed || !annotations.is_empty() {
            plan.steps.push(Step::Scale {
                name: slot.rs.name_any(),
                replicas: slot.replicas,
                annotations,
            });
        }
    }

    // Status from the ReplicaSets as they are (their status) and as planned (their spec).
    let existing: Vec<&Slot> = slots.iter().filter(|s| s.exists).collect();
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| existing.iter().map(|s| f(&s.rs)).sum::<i32>();
    let total_spec: i32 = slots.iter().map(|s| s.replicas).sum();
    let new_slot = slots.iter().find(|s| s.is_new);
    let status_replicas = sum(&actual);
    let updated = new_slot.filter(|s| s.exists).map_or(0, |s| actual(&s.rs));
    let available_replicas = sum(&available);
    let previous = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(status_replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(sum(&ready)),
        available_replicas: Some(available_replicas),
        unavailable_replicas: Some((total_spec - available_replicas).max(0)),
        collision_count: previous.collision_count,
        conditions: previous.conditions.clone(),
        terminating_replicas: None,
    };
    let now_time = Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default());
    let available_cond = if available_replicas >= replicas - max_unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    set_condition(
        &mut status,
        "Available",
        available_cond.0,
        available_cond.1,
        available_cond.2.into(),
        &now_time,
        false,
    );
    let new_name = new_slot.map(|s| s.rs.name_any()).unwrap_or_default();
    let complete = updated == replicas
        && status_replicas == replicas
        && available_replicas == replicas
        && new_slot.is_some_and(|s| s.exists);
    let progressed = previous.updated_replicas.unwrap_or(0) < updated
        || previous.replicas.unwrap_or(0) > status_replicas && updated > 0
        || previous.ready_replicas.unwrap_or(0) < status.ready_replicas.unwrap_or(0)
        || previous.available_replicas.unwrap_or(0) < available_replicas;
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let current = condition(&previous, "Progressing");
    if paused {
        set_condition(
            &mut status,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now_time,
            false,
        );
    } else if complete {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            &now_time,
            true,
        );
    } else if new_slot.is_some_and(|s| !s.exists) {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
            &now_time,
            true,
        );
    } else if current.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        && !progressed
    {
        // Stays timed out until something moves.
    } else {
        let last_update = current
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| SystemTime::from(t.0));
        let stalled_for = last_update
            .filter(|_| !progressed)
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default();
        let deadline = Duration::from_secs(u64::try_from(deadline.max(0)).unwrap_or(600));
        if stalled_for > deadline {
            set_condition(
                &mut status,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                &now_time,
                true,
            );
        } else {
            let touch = progressed
                || last_update.is_none()
                || current.is_some_and(|c| c.reason.as_deref() != Some("ReplicaSetUpdated"));
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                &now_time,
                touch,
            );
            plan.requeue_after =
                Some(deadline.saturating_sub(stalled_for) + Duration::from_secs(1));
        }
    }
    plan.status = status;

    // Old, empty ReplicaSets beyond the history limit go, oldest first.
    if complete && !paused {
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10);
        let mut old: Vec<&Slot> = slots.iter().filter(|s| !s.is_new && s.exists).collect();
        if old.len() > limit {
            old.sort_by_key(|s| revision_of(&s.rs));
            let excess = old.len() - limit;
            for s in old
                .into_iter()
                .filter(|s| {
                    s.replicas == 0
                        && actual(&s.rs) == 0
                        && s.rs.metadata.deletion_timestamp.is_none()
                        && s.rs.status.as_ref().and_then(|st| st.observed_generation)
                            >= s.rs.metadata.generation
                })
                .take(excess)
            {
                plan.steps.push(Step::Delete(s.rs.name_any()));
            }
        }
    }
    plan
}

fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == type_)
}

/// Sets a condition; the transition time changes only when the status does, the update time
/// when `touch` (or on a change).
fn set_condition(
    status: &mut DeploymentStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: String,
    now: &Time,
    touch: bool,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let existing = conditions.iter().position(|c| c.type_ == type_);
    let mut c = existing
        .map(|i| conditions[i].clone())
        .unwrap_or_else(|| DeploymentCondition {
            type_: type_.into(),
            ..DeploymentCondition::default()
        });
    let changed = c.status != value || c.reason.as_deref() != Some(reason);
    if c.status != value || c.last_transition_time.is_none() {
        c.last_transition_time = Some(now.clone());
    }
    if changed || touch || c.last_update_time.is_none() {
        c.last_update_time = Some(now.clone());
    }
    c.status = value.into();
    c.reason = Some(reason.into());
    c.message = Some(message);
    match existing {
        Some(i) => conditions[i] = c,
        None => conditions.push(c),
    }
}

/// A change of `spec.replicas` (or a paused Deployment): resize what runs, proportionally
/// when several ReplicaSets are active.
fn scale(slots: &mut [Slot], replicas: i32, surge: i32) {
    let active: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].replicas > 0)
        .collect();
    let new = slots.iter().position(|s| s.is_new);
    if active.is_empty() {
        if let Some(n) = new {
            slots[n].replicas = replicas;
        }
        return;
    }
    if active.len() == 1 {
        slots[active[0]].replicas = replicas;
        return;
    }
    if let Some(n) = new
        && slots[n].replicas >= replicas
    {
        // The new ReplicaSet is saturated: the old ones go.
        slots[n].replicas = replicas;
        for (i, s) in slots.iter_mut().enumerate() {
            if i != n {
                s.replicas = 0;
            }
        }
        return;
    }
    let total: i32 = active.iter().map(|&i| slots[i].replicas).sum();
    let allowed = replicas + surge;
    let to_add = allowed - total;
    if to_add == 0 || total == 0 {
        return;
    }
    let mut added = 0;
    for &i in &active {
        let share = (i64::from(slots[i].replicas) * i64::from(to_add) / i64::from(total)) as i32;
        let share = if to_add > 0 {
            share.min(to_add - added)
        } else {
            share.max(to_add - added)
        };
        slots[i].replicas = (slots[i].replicas + share).max(0);
        added += share;
    }
    // The rest goes to the largest ReplicaSet.
    if let Some(&largest) = active.iter().max_by_key(|&&i| slots[i].replicas) {
        slots[largest].replicas = (slots[largest].replicas + to_add - added).max(0);
    }
}

/// Recreate: old ReplicaSets to zero; once their pods are gone, the new one to `replicas`.
fn recreate(slots: &mut [Slot], replicas: i32, pods: &[Arc<Pod>]) {
    let mut scaled_down = false;
    for s in slots.iter_mut().filter(|s| !s.is_new) {
        if s.replicas > 0 {
            s.replicas = 0;
            scaled_down = true;
        }
    }
    if scaled_down {
        return;
    }
    let old_uids: Vec<&str> = slots
        .iter()
        .filter(|s| !s.is_new)
        .filter_map(|s| s.rs.metadata.uid.as_deref())
        .collect();
    let old_running = pods.iter().any(|p| {
        controller_of(&p.metadata).is_some_and(|c| old_uids.contains(&c.uid.as_str()))
            && !pod_is_finished(p)
    });
    let old_counted = slots
        .iter()
        .filter(|s| !s.is_new)
        .any(|s| actual(&s.rs) > 0);
    if old_running || old_counted {
        return;
    }
    if let Some(new) = slots.iter_mut().find(|s| s.is_new) {
        new.replicas = replicas;
    }
}

/// RollingUpdate: surge the new ReplicaSet, then take down old pods as availability allows.
fn rolling(slots: &mut [Slot], replicas: i32, surge: i32, max_unavailable: i32) {
    let Some(n) = slots.iter().position(|s| s.is_new) else {
        return;
    };
    let total: i32 = slots.iter().map(|s| s.replicas).sum();
    if slots[n].replicas > replicas {
        slots[n].replicas = replicas;
        return;
    }
    if slots[n].replicas < replicas {
        let room = replicas + surge - total;
        if room > 0 {
            slots[n].replicas += room.min(replicas - slots[n].replicas);
            return;
        }
    }
    // Scale down old ReplicaSets.
    let min_available = replicas - max_unavailable;
    let new_unavailable = slots[n].replicas
        - if slots[n].exists {
            available(&slots[n].rs)
        } else {
            0
        };
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    let mut old: Vec<usize> = (0..slots.len())
        .filter(|&i| i != n && slots[i].replicas > 0)
        .collect();
    old.sort_by_key(|&i| {
        (
            revision_of(&slots[i].rs),
            slots[i].rs.metadata.creation_timestamp.clone(),
        )
    });
    // First the unhealthy replicas of old ReplicaSets.
    for &i in &old {
        if budget <= 0 {
            break;
        }
        let unhealthy = (slots[i].replicas - available(&slots[i].rs)).max(0);
        let cut = unhealthy.min(budget);
        slots[i].replicas -= cut;
        budget -= cut;
    }
    // Then available ones, keeping the minimum available.
    let available_total: i32 = slots
        .iter()
        .filter(|s| s.exists)
        .map(|s| available(&s.rs).min(s.replicas))
        .sum();
    let mut can_remove = (available_total - min_available).min(budget);
    for &i in &old {
        if can_remove <= 0 {
            break;
        }
        let cut = slots[i].replicas.min(can_remove);
        slots[i].replicas -= cut;
        can_remove -= cut;
    }
}
