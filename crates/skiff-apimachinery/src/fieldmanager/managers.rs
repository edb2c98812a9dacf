//! `metadata.managedFields` and the two operations that change it, as kube-apiserver's field
//! manager runs them: [`apply`] (server-side apply: merge, prune what the manager stopped
//! applying, refuse to take fields from other managers unless forced) and [`update`] (any
//! other write: the writer takes the fields it changed from everyone else).

use serde_json::{Value, json};

use super::FieldManagerError;
use super::cap::{MAX_UPDATE_MANAGERS, cap_update_entries};
use super::fieldset::FieldSet;
use super::path::Path;
use super::typeref::TypeRef;
use super::walk::{compare, field_set, merge, remove_items};

/// `Apply` or `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    /// The name kube writes (`Apply`, `Update`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// The manager kube makes own every field of an object first applied without managed fields.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The manager's name (`kubectl`, `kubectl-client-side-apply` ...).
    pub manager: String,
    /// How it wrote.
    pub operation: Operation,
    /// The API version it wrote in.
    pub api_version: String,
    /// The subresource it wrote through (`status`), empty for the main resource.
    pub subresource: String,
    /// When its fields last changed (RFC 3339, seconds).
    pub time: Option<String>,
    /// The fields it owns.
    pub fields: FieldSet,
}

impl Entry {
    /// Whether two entries are the same manager: name, operation and subresource, and, for
    /// updates, the API version.
    fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// How conflict messages name the manager: `"kubectl"`,
    /// `"kube-controller-manager" using apps/v1`, `"x" with subresource "status"`.
    pub fn display(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn to_value(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation.as_str(),
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        if !self.subresource.is_empty() {
            entry["subresource"] = json!(self.subresource);
        }
        entry
    }

    fn from_value(value: &Value) -> Result<Entry, FieldManagerError> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
        let operation = match text("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => {
                return Err(FieldManagerError::BadEntry {
                    why: format!("unknown operation {other:?}"),
                });
            }
        };
        let fields = match value.get("fieldsV1") {
            Some(fields) => FieldSet::from_fields_v1(fields)?,
            None => FieldSet::new(),
        };
        Ok(Entry {
            manager: text("manager").to_string(),
            operation,
            api_version: text("apiVersion").to_string(),
            subresource: text("subresource").to_string(),
            time: value
                .get("time")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields,
        })
    }
}

/// The managed fields of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields {
    /// The entries, one per manager.
    pub entries: Vec<Entry>,
}

impl ManagedFields {
    /// Reads `metadata.managedFields` (none when absent).
    pub fn of_object(obj: &Value) -> Result<ManagedFields, FieldManagerError> {
        match obj.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => Ok(ManagedFields::default()),
            Some(value) => ManagedFields::from_value(value),
        }
    }

    /// Reads a `managedFields` list.
    pub fn from_value(value: &Value) -> Result<ManagedFields, FieldManagerError> {
        let Value::Array(items) = value else {
            return Err(FieldManagerError::BadEntry {
                why: "managedFields must be a list".into(),
            });
        };
        let mut out = ManagedFields::default();
        for item in items {
            let entry = Entry::from_value(item)?;
            // Two entries for one manager merge, as kube decodes them.
            match out.entries.iter_mut().find(|e| e.same_manager(&entry)) {
                Some(existing) => existing.fields = existing.fields.union(&entry.fields),
                None => out.entries.push(entry),
            }
        }
        Ok(out)
    }

    /// The `managedFields` list kube stores: entries with fields only, sorted by operation,
    /// time, manager, API version and subresource.
    pub fn to_value(&self) -> Value {
        let mut entries: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .collect();
        entries.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        Value::Array(entries.into_iter().map(Entry::to_value).collect())
    }

    fn position(&self, probe: &Entry) -> Option<usize> {
        self.entries.iter().position(|e| e.same_manager(probe))
    }
}

/// Which part of the object a write may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `.status` excluded when a status subresource owns it.
    Main {
        /// Whether the resource has a status subresource.
        status_subresource: bool,
    },
    /// The status subresource: `.status` only.
    Status,
    /// The scale subresource: the replica count of the main resource.
    Scale,
}

/// Who writes, how, and where.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The field manager's name.
    pub manager: &'a str,
    /// The API version of the request.
    pub api_version: &'a str,
    /// The part of the object it may own.
    pub scope: Scope,
    /// The time to record (RFC 3339, seconds).
    pub now: &'a str,
}

impl Writer<'_> {
    fn entry(&self, operation: Operation, fields: FieldSet) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.api_version.to_string(),
            subresource: match self.scope {
                Scope::Status => "status".into(),
                Scope::Scale => "scale".into(),
                Scope::Main { .. } => String::new(),
            },
            time: Some(self.now.to_string()),
            fields,
        }
    }

    /// The object as field management sees it: without the type and identity fields kube
    /// never tracks, and within the writer's scope.
    pub(crate) fn view(&self, obj: &Value) -> Value {
        let mut view = obj.clone();
        let Some(map) = view.as_object_mut() else {
            return Value::Object(Default::default());
        };
        map.remove("apiVersion");
        map.remove("kind");
        match self.scope {
            Scope::Status => map.retain(|k, _| k == "status"),
            Scope::Scale => {
                map.remove("status");
            }
            Scope::Main { status_subresource } => {
                if status_subresource {
                    map.remove("status");
                }
            }
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for field in [
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
            ] {
                meta.remove(field);
            }
            if meta.is_empty() {
                map.remove("metadata");
            }
        }
        view
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owner, as conflict messages name it ([`Entry::display`]).
    pub manager: String,
    /// The field (`.spec.replicas`).
    pub path: Path,
}

/// kube's message for apply conflicts: `Apply failed with 1 conflict: conflict with
/// "kubectl-client-side-apply" using apps/v1: .spec.replicas`, or grouped by manager.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.path
        );
    }
    let mut lines = Vec::new();
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort();
    managers.dedup();
    for manager in managers {
        lines.push(format!("conflicts with {manager}:"));
        for conflict in conflicts.iter().filter(|c| c.manager == manager) {
            lines.push(format!("- {}", conflict.path));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// Fields other managers own with other values (409 unless forced).
    Conflicts(Vec<Conflict>),
    /// The configuration or the managed fields could not be read.
    Invalid(FieldManagerError),
}

impl From<FieldManagerError> for ApplyError {
    fn from(err: FieldManagerError) -> ApplyError {
        ApplyError::Invalid(err)
    }
}

/// Server-side apply of `config` to `live` (an empty object for a create) by `writer`:
/// returns the merged object and its managed fields.
///
/// Fields the manager applied last time and leaves out now are removed unless another
/// applier applies them too; fields other managers own and the configuration changes are
/// conflicts unless `force`, which takes them over; equal values are shared.
pub fn apply(
    live: &Value,
    config: &Value,
    managed: &ManagedFields,
    ty: &TypeRef<'_>,
    writer: &Writer<'_>,
    force: bool,
) -> Result<(Value, ManagedFields), ApplyError> {
    let mut managed = managed.clone();
    let live_view = writer.view(live);
    if managed.entries.is_empty() && !live_view.as_object().is_none_or(|m| m.is_empty()) {
        // kube's before-first-apply: an object written without managed fields is owned as a
        // whole by one manager, so the first apply conflicts where it changes something.
        managed.entries.push(Entry {
            manager: BEFORE_FIRST_APPLY.into(),
            operation: Operation::Update,
            api_version: writer.api_version.to_string(),
            subresource: String::new(),
            time: Some(writer.now.to_string()),
            fields: field_set(&live_view, ty)?,
        });
    }
    let config_view = writer.view(config);
    let mut merged = merge(live, &config_view, ty)?;
    let applied = field_set(&config_view, ty)?;
    let probe = writer.entry(Operation::Apply, applied.clone());
    let last = match managed.position(&probe) {
        Some(i) => {
            let previous = managed.entries.remove(i);
            Some(previous)
        }
        None => None,
    };
    // Prune: what this manager stopped applying, unless some applier still applies it. Only
    // fields and items the merged object sets count (a list or map recorded as a whole by an
    // update goes only with its items).
    if let Some(previous) = &last {
        let still_applied = managed
            .entries
            .iter()
            .filter(|e| e.operation == Operation::Apply)
            .fold(applied.clone(), |acc, e| acc.union(&e.fields));
        let dropped = previous
            .fields
            .intersection(&field_set(&writer.view(&merged), ty)?)
            .difference(&still_applied);
        if !dropped.is_empty() {
            merged = remove_items(&merged, &dropped, ty)?;
        }
    }
    let changes = compare(&live_view, &writer.view(&merged), ty)?;
    let touched = changes.modified.union(&changes.added);
    let mut conflicts = Vec::new();
    for entry in &mut managed.entries {
        let taken = entry.fields.intersection(&touched);
        if taken.is_empty() {
            continue;
        }
        if force {
            entry.fields = entry.fields.difference(&taken);
        } else {
            let manager = entry.display();
            conflicts.extend(taken.paths().into_iter().map(|path| Conflict {
                manager: manager.clone(),
                path,
            }));
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
        return Err(ApplyError::Conflicts(conflicts));
    }
    for entry in &mut managed.entries {
        entry.fields = entry.fields.difference(&changes.removed);
    }
    let mut own = probe;
    // An apply that changes nothing keeps the time of the manager's previous apply.
    if changes.is_same()
        && let Some(previous) = &last
    {
        own.time = previous.time.clone();
    }
    managed.entries.push(own);
    managed.entries.retain(|e| !e.fields.is_empty());
    Ok((merged, managed))
}

/// A write other than apply (create, update, JSON/merge/strategic patch) from `old` (an
/// empty object for a create) to `new` by `writer`: the writer takes the fields it added or
/// changed from every other manager, removed fields leave everyone; past ten `Update`
/// entries the oldest merge into `ancient-changes` ([`cap_update_entries`]).
pub fn update(
    old: &Value,
    new: &Value,
    managed: &ManagedFields,
    ty: &TypeRef<'_>,
    writer: &Writer<'_>,
) -> Result<ManagedFields, FieldManagerError> {
    let mut managed = managed.clone();
    let changes = compare(&writer.view(old), &writer.view(new), ty)?;
    let taken = changes.modified.union(&changes.added);
    for entry in &mut managed.entries {
        entry.fields = entry.fields.difference(&taken).difference(&changes.removed);
    }
    if !taken.is_empty() {
        let probe = writer.entry(Operation::Update, taken.clone());
        match managed.position(&probe) {
            Some(i) => {
                let entry = &mut managed.entries[i];
                entry.fields = entry.fields.union(&taken);
                entry.time = probe.time;
            }
            None => managed.entries.push(probe),
        }
    }
    managed.entries.retain(|e| !e.fields.is_empty());
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    Ok(managed)
}

#[cfg(test)]
#[path = "managers_tests.rs"]
mod tests;
