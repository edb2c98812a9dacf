//! kube-apiserver's cap on `Update` entries: after every write other than apply, an object
//! with more than [`MAX_UPDATE_MANAGERS`] `Update` entries has its oldest ones merged, per API
//! version, into one `Update` entry of the manager [`ANCIENT_CHANGES`].
//!
//! The rule, as kube's `capManagersManager` runs it: every `Update` entry counts (any
//! subresource; `Apply` entries never count nor merge). They are taken oldest first (by `time`
//! in whole seconds, a missing time first; equal times in the order of the entries' JSON
//! identities, which is the manager's name first). The first entry seen of an API version
//! is kept aside; the next of that version turns it into the version's bucket (unless an
//! `ancient-changes` entry of that version exists already, which then is the bucket) and is
//! merged into it, each merge giving the bucket the merged entry's time and no subresource,
//! until no more than the cap are left.

use std::collections::HashMap;

use serde_json::Value;

use super::managers::{Entry, ManagedFields, Operation};
use crate::time::parse_rfc3339;

/// How many `Update` entries an object keeps (kube's `DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager the oldest `Update` entries are merged into.
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// Merges the oldest `Update` entries of `managed` until at most `max` are left (see the
/// module's documentation for the rule).
pub fn cap_update_entries(managed: &mut ManagedFields, max: usize) {
    let mut updaters: Vec<usize> = (0..managed.entries.len())
        .filter(|&i| managed.entries[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= max {
        return;
    }
    let order: Vec<(i64, String)> = managed
        .entries
        .iter()
        .map(|e| (seconds(e.time.as_deref()), identity(e)))
        .collect();
    updaters.sort_by(|&a, &b| order[a].cmp(&order[b]));

    let mut slots: Vec<Option<Entry>> = managed.entries.drain(..).map(Some).collect();
    let mut first_of_version: HashMap<String, usize> = HashMap::new();
    let mut left = updaters.len();
    for &at in &updaters {
        if left <= max {
            break;
        }
        let Some(version) = slots[at].as_ref().map(|e| e.api_version.clone()) else {
            continue;
        };
        let Some(&first) = first_of_version.get(&version) else {
            first_of_version.insert(version, at);
            continue;
        };
        let bucket = match slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|e| is_bucket(e, &version)))
        {
            Some(bucket) => bucket,
            None => {
                if let Some(entry) = slots[first].as_mut() {
                    entry.manager = ANCIENT_CHANGES.to_string();
                    entry.subresource.clear();
                }
                first
            }
        };
        if bucket == at {
            // kube would merge the bucket into itself and drop it, with all it owns; the
            // bucket stays instead.
            continue;
        }
        let Some(merged) = slots[at].take() else {
            continue;
        };
        if let Some(entry) = slots[bucket].as_mut() {
            entry.fields = merged.fields.union(&entry.fields);
            entry.time = merged.time;
        }
        left -= 1;
    }
    managed.entries = slots.into_iter().flatten().collect();
}

fn is_bucket(entry: &Entry, version: &str) -> bool {
    entry.manager == ANCIENT_CHANGES
        && entry.operation == Operation::Update
        && entry.api_version == version
        && entry.subresource.is_empty()
}

/// An entry's time in whole seconds since the epoch; 0 when it has none (or none readable).
fn seconds(time: Option<&str>) -> i64 {
    let Some(at) = time.and_then(parse_rfc3339) else {
        return 0;
    };
    match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            // Whole seconds before the epoch, rounded down as Go's `Unix()` does.
            let before = before.duration();
            let whole = before.as_secs() + u64::from(before.subsec_nanos() > 0);
            i64::try_from(whole).map_or(i64::MIN, |s| -s)
        }
    }
}

/// The entry's identity as kube compares equal times: its JSON without fields and time
/// (`{"manager":"m","operation":"Update","apiVersion":"v1","subresource":"status"}`), with
/// Go's escaping of `<`, `>` and `&`.
fn identity(entry: &Entry) -> String {
    let quote = |s: &str| {
        Value::String(s.to_string())
            .to_string()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029")
    };
    let mut parts = Vec::new();
    if !entry.manager.is_empty() {
        parts.push(format!("\"manager\":{}", quote(&entry.manager)));
    }
    parts.push(format!("\"operation\":\"{}\"", entry.operation.as_str()));
    if entry.operation == Operation::Update && !entry.api_version.is_empty() {
        parts.push(format!("\"apiVersion\":{}", quote(&entry.api_version)));
    }
    if !entry.subresource.is_empty() {
        parts.push(format!("\"subresource\":{}", quote(&entry.subresource)));
    }
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
#[path = "cap_tests.rs"]
mod tests;
