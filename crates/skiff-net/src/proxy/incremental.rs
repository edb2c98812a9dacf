//! Incremental updates of the proxy table: [`ProxyState`] remembers what it applied last and
//! turns the next model into one small `nft -f` transaction that touches only what changed.
//!
//! Re-creating the whole table re-creates every service's chains on every change (230-390 ms
//! at 1,000 services × 10 endpoints when spreading still used one anonymous map per service).
//! One endpoint change touches one or two service chains and perhaps an element of a verdict
//! map.
//!
//! The table is seen as
//! - the base (everything that depends only on the node: bridge, addresses, CIDRs, DNS
//!   redirect, hostPorts; base chains and the `nodeport-ips` set). Any change of it, the first
//!   call and any call after a failure re-create the table with [`render`] as before;
//! - the elements of the named sets and maps (`cluster-ips`, `service-ips`,
//!   `no-endpoint-services`, `service-nodeports`, `no-endpoint-nodeports`);
//! - the chains and affinity sets of each service port, as `render` prints them, kept per
//!   service port together with the [`ServicePortRules`] they were printed from: a port whose
//!   rules did not change is neither printed again nor compared, so the work per update
//!   follows the size of the change, not the number of services.
//!
//! A delta is one script, hence one kernel transaction, in an order that keeps every
//! reference valid: new sets and (empty) chains first, then the rules of new and changed
//! chains (`flush chain` + `add rule`), then map elements (deleted, then added: a changed
//! verdict is a delete and an add of the same key), then removed chains (all flushed, then all
//! deleted: they may jump to each other) and removed sets. Affinity sets that stay keep their
//! clients, since they are never re-created.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apply::{Executor, ProxyError};
use super::conntrack::{self, UdpFlow, stale_udp_flows, udp_flows};
use super::conntrack_sweep;
use super::model::{ProxyModel, ServicePortRules};
use super::nft::{TABLE, named_elements, render, render_service_objects};

/// How [`ProxyState::apply`] brought the table up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyKind {
    /// Nothing changed; `nft` did not run.
    Unchanged,
    /// The whole table was re-created (first call, after a failure, or a base change).
    Full,
    /// Only the differences were applied.
    Incremental,
}

/// What one [`ProxyState::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    /// Full, incremental or nothing.
    pub kind: ApplyKind,
    /// The size of the script fed to `nft` (0 when unchanged).
    pub script_bytes: usize,
    /// Chains created (incremental only).
    pub chains_added: usize,
    /// Chains whose rules were replaced (incremental only).
    pub chains_changed: usize,
    /// Chains deleted (incremental only).
    pub chains_removed: usize,
    /// Set and map elements added (incremental only; a changed verdict counts once here and
    /// once in `elements_removed`).
    pub elements_added: usize,
    /// Set and map elements deleted (incremental only).
    pub elements_removed: usize,
    /// UDP flows (destination, removed endpoint) whose conntrack entries were flushed.
    pub conntrack_flows: usize,
    /// Conntrack entries deleted by those flushes.
    pub conntrack_deleted: usize,
    /// Flushes (and listings of the entries, for the sweep) that failed (logged; the rules
    /// are applied all the same).
    pub conntrack_failed: usize,
    /// UDP conntrack entries listed by the sweep after a full replace (0 when none ran).
    pub conntrack_listed: usize,
    /// Time spent in `nft` (zero when unchanged).
    pub nft: Duration,
    /// Time spent in all: comparing, writing the script and running `nft`.
    pub elapsed: Duration,
}

impl ApplyStats {
    fn new(kind: ApplyKind) -> ApplyStats {
        ApplyStats {
            kind,
            script_bytes: 0,
            chains_added: 0,
            chains_changed: 0,
            chains_removed: 0,
            elements_added: 0,
            elements_removed: 0,
            conntrack_flows: 0,
            conntrack_deleted: 0,
            conntrack_failed: 0,
            conntrack_listed: 0,
            nft: Duration::ZERO,
            elapsed: Duration::ZERO,
        }
    }
}

/// The proxy table as last applied, for incremental updates. One per table (per node).
#[derive(Debug, Default)]
pub struct ProxyState {
    applied: Option<Snapshot>,
    /// The UDP flows of the last applied model (kept across a failure or reset, so that
    /// endpoints removed meanwhile are still flushed).
    udp_flows: Option<BTreeSet<UdpFlow>>,
}

impl ProxyState {
    /// A state that knows nothing yet: the first [`apply`](Self::apply) re-creates the table.
    pub fn new() -> ProxyState {
        ProxyState::default()
    }

    /// Forgets what was applied, so that the next [`apply`](Self::apply) re-creates the table
    /// (e.g. when something else may have changed or removed it).
    pub fn reset(&mut self) {
        self.applied = None;
    }

    /// Brings the table in line with `model`: the first time (after [`new`](Self::new),
    /// [`reset`](Self::reset) or a failure) and whenever the base settings changed, a full
    /// atomic replace ([`render`] + [`Executor::apply`]); otherwise one transaction with only
    /// the differences, or nothing at all when the model's rules are the same.
    ///
    /// After a successful update, the UDP conntrack entries of the flows the previous model
    /// had and this one has not (an endpoint removed from a UDP service, the service or its
    /// address gone) are deleted ([`conntrack`](super::conntrack)), as kube-proxy does. After
    /// a full replace (the first apply of an agent among them), the UDP entries are also
    /// listed and those addressed to a UDP service port of `model` but answered by none of
    /// its endpoints are deleted ([`conntrack_sweep`](super::conntrack_sweep)): endpoints
    /// removed while no agent ran, which no previous model knows.
    ///
    /// On error the table is as it was before the call (a script is one transaction) and the
    /// next call re-creates it in full.
    pub fn apply(
        &mut self,
        executor: &Executor,
        model: &ProxyModel,
    ) -> Result<ApplyStats, ProxyError> {
        let start = Instant::now();
        let previous = self.applied.take();
        let next = Snapshot::of(model, previous.as_ref());
        let mut stats = match &previous {
            Some(previous) if previous.base == next.base => {
                let mut stats = ApplyStats::new(ApplyKind::Incremental);
                match delta(previous, &next, &mut stats) {
                    Some(script) if script.is_empty() => ApplyStats::new(ApplyKind::Unchanged),
                    Some(script) => {
                        stats.script_bytes = script.len();
                        let nft = Instant::now();
                        executor.update(&script)?;
                        stats.nft = nft.elapsed();
                        stats
                    }
                    None => full(executor, model)?,
                }
            }
            _ => full(executor, model)?,
        };
        self.applied = Some(next);
        let flows = udp_flows(model);
        if let Some(previous) = self.udp_flows.replace(flows.clone()) {
            for flow in stale_udp_flows(&previous, &flows) {
                stats.conntrack_flows += 1;
                match conntrack::flush(executor.netns(), &flow) {
                    Ok(deleted) => stats.conntrack_deleted += deleted,
                    Err(err) => {
                        stats.conntrack_failed += 1;
                        tracing::warn!(error = %err, "cannot flush the conntrack entries of a removed UDP endpoint");
                    }
                }
            }
        }
        if stats.kind == ApplyKind::Full {
            sweep(executor, model, &mut stats);
        }
        stats.elapsed = start.elapsed();
        Ok(stats)
    }

    /// The script that [`apply`](Self::apply) would feed to `nft` for `model` right now: the
    /// full [`render`] or the delta (empty when nothing changed). For tests and diagnostics.
    pub fn plan(&self, model: &ProxyModel) -> String {
        let next = Snapshot::of(model, self.applied.as_ref());
        match &self.applied {
            Some(previous) if previous.base == next.base => delta(
                previous,
                &next,
                &mut ApplyStats::new(ApplyKind::Incremental),
            )
            .unwrap_or_else(|| render(model)),
            _ => render(model),
        }
    }
}

/// Lists the UDP conntrack entries and deletes those of `model`'s UDP service ports that go
/// to none of their endpoints ([`conntrack_sweep`]), counting into `stats`.
fn sweep(executor: &Executor, model: &ProxyModel, stats: &mut ApplyStats) {
    let frontends = conntrack_sweep::udp_frontends(model);
    if frontends.is_empty() {
        return;
    }
    let entries = match conntrack_sweep::list_udp(executor.netns()) {
        Ok(entries) => entries,
        Err(err) => {
            stats.conntrack_failed += 1;
            tracing::warn!(error = %err, "cannot sweep the conntrack entries of removed UDP endpoints");
            return;
        }
    };
    stats.conntrack_listed = entries.len();
    for flow in conntrack_sweep::stale_entries(&frontends, &entries) {
        stats.conntrack_flows += 1;
        match conntrack::flush(executor.netns(), &flow) {
            Ok(deleted) => stats.conntrack_deleted += deleted,
            Err(err) => {
                stats.conntrack_failed += 1;
                tracing::warn!(error = %err, "cannot flush the conntrack entries of a stale UDP flow");
            }
        }
    }
}

/// The full replace, as the executor always did.
fn full(executor: &Executor, model: &ProxyModel) -> Result<ApplyStats, ProxyError> {
    let script = render(model);
    let nft = Instant::now();
    executor.apply(&script)?;
    let mut stats = ApplyStats::new(ApplyKind::Full);
    stats.nft = nft.elapsed();
    stats.script_bytes = script.len();
    Ok(stats)
}

/// A chain of a service port: its comment and rules, as `render` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chain {
    comment: Option<String>,
    rules: Vec<String>,
}

/// The chains and affinity sets of one service port, with the rules they were printed from:
/// a service port whose [`ServicePortRules`] did not change reuses them as they are.
#[derive(Debug, PartialEq, Eq)]
struct ServiceObjects {
    rules: ServicePortRules,
    /// False when two service ports of the model had the same key and were merged here:
    /// then the rules alone do not say what the objects hold, so they are never reused.
    reusable: bool,
    /// The chains by name.
    chains: BTreeMap<String, Chain>,
    /// The affinity sets by name: their definition (`type ...; flags ...; timeout ...`).
    sets: BTreeMap<String, String>,
}

/// What a model puts into the table, in comparable pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// The model without its services (and warnings): everything else the table depends on.
    base: ProxyModel,
    /// Set or map name -> key -> verdict (empty for plain sets).
    elements: Vec<(&'static str, BTreeMap<String, String>)>,
    /// The chains and sets of each service port, by [`ServicePortRules::key`] (the model has
    /// one entry per key; a duplicate would be merged into the first).
    services: BTreeMap<String, Arc<ServiceObjects>>,
}

impl Snapshot {
    /// The snapshot of `model`. With `previous` (taken with the same base), service ports
    /// whose rules are unchanged share its printed objects instead of printing them again:
    /// one endpoint change then costs one service's rendering, not a thousand.
    fn of(model: &ProxyModel, previous: Option<&Snapshot>) -> Snapshot {
        let base = base_of(model);
        let reusable = previous.filter(|p| p.base == base);
        let mut services: BTreeMap<String, Arc<ServiceObjects>> = BTreeMap::new();
        for rules in &model.services {
            let key = rules.key();
            if let Some(existing) = services.get_mut(&key) {
                // Never happens with `build`'s models (keys are unique); merge to stay exact.
                let mut merged = ServiceObjects {
                    rules: existing.rules.clone(),
                    reusable: false,
                    chains: existing.chains.clone(),
                    sets: existing.sets.clone(),
                };
                parse_objects(
                    &render_service_objects(model, rules),
                    &mut merged.chains,
                    &mut merged.sets,
                );
                *existing = Arc::new(merged);
                continue;
            }
            let kept = reusable
                .and_then(|p| p.services.get(&key))
                .filter(|objects| objects.reusable && objects.rules == *rules);
            let objects = match kept {
                Some(objects) => Arc::clone(objects),
                None => {
                    let mut objects = ServiceObjects {
                        rules: rules.clone(),
                        reusable: true,
                        chains: BTreeMap::new(),
                        sets: BTreeMap::new(),
                    };
                    parse_objects(
                        &render_service_objects(model, rules),
                        &mut objects.chains,
                        &mut objects.sets,
                    );
                    Arc::new(objects)
                }
            };
            services.insert(key, objects);
        }
        Snapshot {
            base,
            elements: named_elements(model),
            services,
        }
    }
}

/// The model without its services and warnings (cloning only what is left).
fn base_of(model: &ProxyModel) -> ProxyModel {
    ProxyModel {
        bridge: model.bridge.clone(),
        node_ips: model.node_ips.clone(),
        pod_cidr: model.pod_cidr,
        cluster_cidr: model.cluster_cidr,
        service_cidr: model.service_cidr,
        dns: model.dns,
        services: Vec::new(),
        host_ports: model.host_ports.clone(),
        warnings: Vec::new(),
    }
}

/// Reads the `\tchain NAME {` / `\tset NAME {` blocks that `render` writes for a service.
fn parse_objects(
    text: &str,
    chains: &mut BTreeMap<String, Chain>,
    sets: &mut BTreeMap<String, String>,
) {
    enum Block {
        Chain(String, Chain),
        Set(String, Vec<String>),
    }
    let mut current: Option<Block> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("\tchain ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            current = Some(Block::Chain(
                name.to_string(),
                Chain {
                    comment: None,
                    rules: Vec::new(),
                },
            ));
        } else if let Some(name) = line
            .strip_prefix("\tset ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            current = Some(Block::Set(name.to_string(), Vec::new()));
        } else if line == "\t}" {
            match current.take() {
                Some(Block::Chain(name, chain)) => {
                    chains.insert(name, chain);
                }
                Some(Block::Set(name, lines)) => {
                    sets.insert(name, lines.join("; "));
                }
                None => {}
            }
        } else {
            let body = line.trim_start_matches('\t');
            match &mut current {
                Some(Block::Chain(_, chain)) => match body.strip_prefix("comment ") {
                    Some(comment) if chain.rules.is_empty() && chain.comment.is_none() => {
                        chain.comment = Some(comment.to_string());
                    }
                    _ => chain.rules.push(body.to_string()),
                },
                Some(Block::Set(_, lines)) => lines.push(body.to_string()),
                None => {}
            }
        }
    }
}

/// The script taking the table from `old` to `new` (same base), empty when they have the same
/// rules; `None` when a delta cannot express the change (an object redefined under the same
/// name), so the caller re-creates the table.
///
/// Only service ports whose objects differ are looked at (shared or equal ones are skipped),
/// so the cost follows the size of the change, not of the table.
fn delta(old: &Snapshot, new: &Snapshot, stats: &mut ApplyStats) -> Option<String> {
    // The chains and sets of the service ports that changed, were added or were removed,
    // before and after; names are unique across service ports (they hash the port's key).
    let mut old_chains: BTreeMap<&str, &Chain> = BTreeMap::new();
    let mut new_chains: BTreeMap<&str, &Chain> = BTreeMap::new();
    let mut old_sets: BTreeMap<&str, &str> = BTreeMap::new();
    let mut new_sets: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, before) in &old.services {
        match new.services.get(key) {
            Some(after) if Arc::ptr_eq(before, after) || **before == **after => {}
            _ => {
                old_chains.extend(before.chains.iter().map(|(n, c)| (n.as_str(), c)));
                old_sets.extend(before.sets.iter().map(|(n, d)| (n.as_str(), d.as_str())));
            }
        }
    }
    for (key, after) in &new.services {
        match old.services.get(key) {
            Some(before) if Arc::ptr_eq(before, after) || **before == **after => {}
            _ => {
                new_chains.extend(after.chains.iter().map(|(n, c)| (n.as_str(), c)));
                new_sets.extend(after.sets.iter().map(|(n, d)| (n.as_str(), d.as_str())));
            }
        }
    }
    let mut s = String::new();
    // 1. New affinity sets; a set cannot be redefined in place.
    for (name, definition) in &new_sets {
        match old_sets.get(name) {
            Some(previous) if previous == definition => {}
            Some(_) => return None,
            None => {
                let _ = writeln!(s, "add set ip {TABLE} {name} {{ {definition}; }}");
            }
        }
    }
    // 2. New chains, empty, so that rules may reference any of them.
    for (name, chain) in &new_chains {
        match old_chains.get(name) {
            Some(previous) if previous.comment != chain.comment => return None,
            Some(_) => {}
            None => {
                stats.chains_added += 1;
                match &chain.comment {
                    Some(comment) => {
                        let _ = writeln!(s, "add chain ip {TABLE} {name} {{ comment {comment}; }}");
                    }
                    None => {
                        let _ = writeln!(s, "add chain ip {TABLE} {name}");
                    }
                }
            }
        }
    }
    // 3. The rules of new and changed chains.
    for (name, chain) in &new_chains {
        match old_chains.get(name) {
            Some(previous) if previous.rules == chain.rules => continue,
            Some(_) => {
                stats.chains_changed += 1;
                let _ = writeln!(s, "flush chain ip {TABLE} {name}");
            }
            None => {}
        }
        for rule in &chain.rules {
            let _ = writeln!(s, "add rule ip {TABLE} {name} {rule}");
        }
    }
    // 4. Elements: removed and changed ones out, then new and changed ones in.
    for ((name, old_elements), (_, new_elements)) in old.elements.iter().zip(&new.elements) {
        if old_elements == new_elements {
            continue;
        }
        let gone: Vec<&str> = old_elements
            .iter()
            .filter(|(key, value)| new_elements.get(*key) != Some(*value))
            .map(|(key, _)| key.as_str())
            .collect();
        if !gone.is_empty() {
            stats.elements_removed += gone.len();
            let _ = writeln!(
                s,
                "delete element ip {TABLE} {name} {{ {} }}",
                gone.join(", ")
            );
        }
        let added: Vec<String> = new_elements
            .iter()
            .filter(|(key, value)| old_elements.get(*key) != Some(*value))
            .map(|(key, value)| {
                if value.is_empty() {
                    key.clone()
                } else {
                    format!("{key} : {value}")
                }
            })
            .collect();
        if !added.is_empty() {
            stats.elements_added += added.len();
            let _ = writeln!(
                s,
                "add element ip {TABLE} {name} {{ {} }}",
                added.join(", ")
            );
        }
    }
    // 5. Removed chains: nothing refers to them any more once all of them are empty.
    let removed: Vec<&&str> = old_chains
        .keys()
        .filter(|name| !new_chains.contains_key(*name))
        .collect();
    stats.chains_removed = removed.len();
    for name in &removed {
        let _ = writeln!(s, "flush chain ip {TABLE} {name}");
    }
    for name in &removed {
        let _ = writeln!(s, "delete chain ip {TABLE} {name}");
    }
    // 6. Removed affinity sets (their chains are gone or flushed).
    for name in old_sets.keys().filter(|name| !new_sets.contains_key(*name)) {
        let _ = writeln!(s, "delete set ip {TABLE} {name}");
    }
    Some(s)
}

#[cfg(test)]
mod tests;
