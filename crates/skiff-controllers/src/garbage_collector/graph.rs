//! The garbage collector's view of the cluster: every object with its owner references and
//! the reverse index (owner -> dependents), and the pure decisions over it.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// Finalizer that makes an owner wait until its blocking dependents are gone.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer that makes an owner release its dependents before it goes.
pub const ORPHAN: &str = "orphan";

/// One object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Index of its resource (kind) in the collector's list.
    pub resource: usize,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
    /// Owner references.
    pub owners: Vec<OwnerReference>,
    /// Whether `deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
}

impl Item {
    /// Whether the item is being deleted and waits for its dependents.
    pub fn waits_for_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FOREGROUND)
    }

    /// Whether the item is being deleted and must first orphan its dependents.
    pub fn orphans_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == ORPHAN)
    }
}

/// Every object and who owns whom.
#[derive(Debug, Default)]
pub struct Graph {
    items: HashMap<String, Item>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Adds or replaces an item.
    pub fn upsert(&mut self, item: Item) {
        self.remove(&item.uid.clone());
        for o in &item.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(item.uid.clone());
        }
        self.items.insert(item.uid.clone(), item);
    }

    /// Removes an item; returns it.
    pub fn remove(&mut self, uid: &str) -> Option<Item> {
        let item = self.items.remove(uid)?;
        for o in &item.owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(item)
    }

    /// The item with `uid`.
    pub fn get(&self, uid: &str) -> Option<&Item> {
        self.items.get(uid)
    }

    /// The items owned by `uid`.
    pub fn dependents_of(&self, uid: &str) -> Vec<&Item> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d))
            .collect()
    }

    /// Drops every item of `resource` not in `keep` (after a re-list); returns their uids.
    pub fn retain_resource(&mut self, resource: usize, keep: &HashSet<String>) -> Vec<String> {
        let gone: Vec<String> = self
            .items
            .values()
            .filter(|i| i.resource == resource && !keep.contains(&i.uid))
            .map(|i| i.uid.clone())
            .collect();
        for uid in &gone {
            self.remove(uid);
        }
        gone
    }
}

/// What an owner reference resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner exists, is being deleted in the foreground, and waits for its dependents.
    Waiting,
    /// The owner does not exist (or a different object now has its name).
    Absent,
}

/// What to do with a dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependentAction {
    /// Nothing: it has a live owner.
    Keep,
    /// Delete it in the background: every owner is gone.
    Delete,
    /// Delete it in the foreground: its remaining owners wait for it.
    DeleteForeground,
    /// Drop the references to these absent owners (uids), it keeps the others.
    DropOwners(Vec<String>),
}

/// Decides a dependent's fate from the state of each owner reference.
pub fn decide_dependent(owners: &[(String, OwnerState)]) -> DependentAction {
    if owners.is_empty() {
        return DependentAction::Keep;
    }
    let absent: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s == OwnerState::Absent)
        .map(|(u, _)| u.clone())
        .collect();
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if solid {
        if absent.is_empty() {
            DependentAction::Keep
        } else {
            DependentAction::DropOwners(absent)
        }
    } else if waiting {
        DependentAction::DeleteForeground
    } else {
        DependentAction::Delete
    }
}

/// What to do for an owner being deleted with a finalizer of the collector's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerAction {
    /// Nothing to do.
    None,
    /// Remove the owner's reference from these dependents (uids), then drop `orphan`.
    Orphan(Vec<String>),
    /// Delete these dependents (uids, not yet being deleted); the owner waits while blocking
    /// dependents remain.
    DeleteDependents(Vec<String>),
    /// Remove this finalizer: nothing holds the owner any more.
    RemoveFinalizer(&'static str),
}

/// Decides for an owner whose deletion waits on the collector.
pub fn decide_owner(owner: &Item, dependents: &[&Item]) -> OwnerAction {
    if owner.orphans_dependents() {
        let holding: Vec<String> = dependents.iter().map(|d| d.uid.clone()).collect();
        return if holding.is_empty() {
            OwnerAction::RemoveFinalizer(ORPHAN)
        } else {
            OwnerAction::Orphan(holding)
        };
    }
    if owner.waits_for_dependents() {
        let to_delete: Vec<String> = dependents
            .iter()
            .filter(|d| !d.deleting)
            .map(|d| d.uid.clone())
            .collect();
        if !to_delete.is_empty() {
            return OwnerAction::DeleteDependents(to_delete);
        }
        let blocking = dependents.iter().any(|d| {
            d.owners
                .iter()
                .any(|o| o.uid == owner.uid && o.block_owner_deletion == Some(true))
        });
        return if blocking {
            OwnerAction::None
        } else {
            OwnerAction::RemoveFinalizer(FOREGROUND)
        };
    }
    OwnerAction::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(uid: &str, owners: &[(&str, bool)], deleting: bool, finalizers: &[&str]) -> Item {
        Item {
            resource: 0,
            namespace: Some("default".into()),
            name: uid.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|(u, block)| OwnerReference {
                    uid: (*u).into(),
                    block_owner_deletion: Some(*block),
                    ..OwnerReference::default()
                })
                .collect(),
            deleting,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_dependent_goes_when_every_owner_is_gone_and_stays_while_one_lives() {
        use OwnerState::*;
        assert_eq!(
            decide_dependent(&[("a".into(), Absent)]),
            DependentAction::Delete
        );
        assert_eq!(
            decide_dependent(&[("a".into(), Solid)]),
            DependentAction::Keep
        );
        assert_eq!(
            decide_dependent(&[("a".into(), Absent), ("b".into(), Solid)]),
            DependentAction::DropOwners(vec!["a".into()])
        );
        assert_eq!(
            decide_dependent(&[("a".into(), Waiting)]),
            DependentAction::DeleteForeground
        );
        assert_eq!(decide_dependent(&[]), DependentAction::Keep);
    }

    #[test]
    fn foreground_deletion_deletes_dependents_then_releases_the_owner() {
        let owner = item("o", &[], true, &[FOREGROUND]);
        let live = item("d", &[("o", true)], false, &[]);
        assert_eq!(
            decide_owner(&owner, &[&live]),
            OwnerAction::DeleteDependents(vec!["d".into()])
        );
        let going = item("d", &[("o", true)], true, &[]);
        assert_eq!(decide_owner(&owner, &[&going]), OwnerAction::None);
        let not_blocking = item("d", &[("o", false)], true, &[]);
        assert_eq!(
            decide_owner(&owner, &[&not_blocking]),
            OwnerAction::RemoveFinalizer(FOREGROUND)
        );
        assert_eq!(
            decide_owner(&owner, &[]),
            OwnerAction::RemoveFinalizer(FOREGROUND)
        );
    }

    #[test]
    fn orphan_deletion_releases_dependents_first() {
        let owner = item("o", &[], true, &[ORPHAN]);
        let d = item("d", &[("o", true)], false, &[]);
        assert_eq!(
            decide_owner(&owner, &[&d]),
            OwnerAction::Orphan(vec!["d".into()])
        );
        assert_eq!(
            decide_owner(&owner, &[]),
            OwnerAction::RemoveFinalizer(ORPHAN)
        );
        assert_eq!(
            decide_owner(&item("x", &[], false, &[ORPHAN]), &[]),
            OwnerAction::None
        );
    }

    #[test]
    fn the_graph_indexes_dependents_by_owner() {
        let mut g = Graph::default();
        g.upsert(item("d1", &[("o", true)], false, &[]));
        g.upsert(item("d2", &[("o", true)], false, &[]));
        assert_eq!(g.dependents_of("o").len(), 2);
        g.upsert(item("d2", &[], false, &[]));
        assert_eq!(g.dependents_of("o").len(), 1);
        g.remove("d1");
        assert!(g.dependents_of("o").is_empty());
    }
}
