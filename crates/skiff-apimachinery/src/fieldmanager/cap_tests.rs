//! Tests of [`super`]: which entries count, which merge, into what, with what time.

use serde_json::json;

use super::*;
use crate::fieldmanager::FieldSet;
use crate::fieldmanager::path::PathElement;

fn key(name: &str) -> FieldSet {
    let mut set = FieldSet::new();
    set.insert(&[
        PathElement::Field("data".into()),
        PathElement::Field(name.into()),
    ]);
    set
}

fn entry(manager: &str, operation: Operation, version: &str, time: Option<&str>) -> Entry {
    Entry {
        manager: manager.into(),
        operation,
        api_version: version.into(),
        subresource: String::new(),
        time: time.map(str::to_string),
        fields: key(manager),
    }
}

fn at(second: u32) -> String {
    format!("2026-01-01T00:00:{second:02}Z")
}

/// `count` updaters `m01`, `m02` ... one second apart, the oldest first.
fn updaters(count: u32) -> ManagedFields {
    ManagedFields {
        entries: (1..=count)
            .map(|i| entry(&format!("m{i:02}"), Operation::Update, "v1", Some(&at(i))))
            .collect(),
    }
}

fn managers(managed: &ManagedFields) -> Vec<&str> {
    let mut names: Vec<&str> = managed.entries.iter().map(|e| e.manager.as_str()).collect();
    names.sort();
    names
}

fn bucket<'a>(managed: &'a ManagedFields, version: &str) -> &'a Entry {
    managed
        .entries
        .iter()
        .find(|e| e.manager == ANCIENT_CHANGES && e.api_version == version)
        .unwrap()
}

fn owns(entry: &Entry, name: &str) -> bool {
    entry.fields.has(&[
        PathElement::Field("data".into()),
        PathElement::Field(name.into()),
    ])
}

#[test]
fn ten_updaters_are_left_alone() {
    let mut managed = updaters(10);
    let before = managed.clone();
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    assert_eq!(managed, before);
}

#[test]
fn the_oldest_updaters_merge_into_ancient_changes_with_the_newest_merged_time() {
    let mut managed = updaters(12);
    managed.entries[0].subresource = "status".into();
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    assert_eq!(managed.entries.len(), 10);
    let ancient = bucket(&managed, "v1");
    assert_eq!(ancient.operation, Operation::Update);
    assert_eq!(ancient.subresource, "");
    assert_eq!(ancient.time.as_deref(), Some(at(3).as_str()));
    for merged in ["m01", "m02", "m03"] {
        assert!(owns(ancient, merged), "{merged}");
    }
    assert!(!owns(ancient, "m04"));
    assert_eq!(
        managers(&managed),
        [
            "ancient-changes",
            "m04",
            "m05",
            "m06",
            "m07",
            "m08",
            "m09",
            "m10",
            "m11",
            "m12"
        ]
    );
    // As kube writes it: the bucket sorts by its time among the updates.
    let value = managed.to_value();
    assert_eq!(value[0]["manager"], "ancient-changes");
    assert_eq!(value[0]["fieldsV1"]["f:data"]["f:m02"], json!({}));
    assert!(value[0].get("subresource").is_none());
}

#[test]
fn appliers_neither_count_nor_merge() {
    let mut managed = updaters(10);
    managed.entries.insert(
        0,
        entry("old-applier", Operation::Apply, "v1", Some(&at(0))),
    );
    managed
        .entries
        .push(entry("kubectl", Operation::Apply, "v1", None));
    let before = managed.clone();
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    assert_eq!(managed, before);

    managed
        .entries
        .push(entry("m11", Operation::Update, "v1", Some(&at(11))));
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    assert_eq!(managed.entries.len(), 12);
    assert!(managers(&managed).contains(&"old-applier"));
    assert!(owns(bucket(&managed, "v1"), "m02"));
}

#[test]
fn equal_times_go_by_manager_name_and_a_missing_time_is_oldest() {
    let mut managed = ManagedFields {
        entries: (1..=11)
            .map(|i| entry(&format!("m{i:02}"), Operation::Update, "v1", Some(&at(30))))
            .collect(),
    };
    managed.entries[10].time = None;
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    // m11 (no time) is the oldest, then m01 of the equal ones.
    let ancient = bucket(&managed, "v1");
    assert!(owns(ancient, "m11") && owns(ancient, "m01"));
    assert_eq!(ancient.time.as_deref(), Some(at(30).as_str()));
    assert_eq!(managed.entries.len(), 10);
}

#[test]
fn each_api_version_has_its_own_bucket() {
    // Oldest first: a (v1), b (v2), c (v1), d (v2), then ten more of v1.
    let mut managed = ManagedFields {
        entries: vec![
            entry("a", Operation::Update, "v1", Some(&at(1))),
            entry("b", Operation::Update, "v2", Some(&at(2))),
            entry("c", Operation::Update, "v1", Some(&at(3))),
            entry("d", Operation::Update, "v2", Some(&at(4))),
        ],
    };
    for i in 5..=12 {
        managed.entries.push(entry(
            &format!("n{i:02}"),
            Operation::Update,
            "v1",
            Some(&at(i)),
        ));
    }
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    assert_eq!(managed.entries.len(), 10);
    let v1 = bucket(&managed, "v1");
    assert!(owns(v1, "a") && owns(v1, "c"));
    assert_eq!(v1.time.as_deref(), Some(at(3).as_str()));
    let v2 = bucket(&managed, "v2");
    assert!(owns(v2, "b") && owns(v2, "d"));
    assert_eq!(v2.time.as_deref(), Some(at(4).as_str()));
}

#[test]
fn an_existing_bucket_takes_the_next_merges() {
    let mut managed = updaters(10);
    // The bucket of an earlier cap, older than everyone.
    managed.entries.push(Entry {
        fields: key("ancient"),
        ..entry(ANCIENT_CHANGES, Operation::Update, "v1", Some(&at(0)))
    });
    cap_update_entries(&mut managed, MAX_UPDATE_MANAGERS);
    assert_eq!(managed.entries.len(), 10);
    let ancient = bucket(&managed, "v1");
    assert!(owns(ancient, "ancient") && owns(ancient, "m01"));
    assert_eq!(ancient.time.as_deref(), Some(at(1).as_str()));
}

#[test]
fn updates_past_the_cap_merge_the_oldest() {
    let info = crate::registry::Registry::builtin()
        .find("", "v1", "configmaps")
        .unwrap()
        .clone();
    let ty = crate::fieldmanager::TypeRef::of_resource(&info);
    let mut live = json!({"metadata": {"name": "c"}, "data": {}});
    let mut managed = ManagedFields::default();
    for i in 1..=12u32 {
        let mut new = live.clone();
        new["data"][format!("m{i:02}")] = json!("x");
        let now = at(i);
        let writer = crate::fieldmanager::Writer {
            manager: &format!("m{i:02}"),
            api_version: "v1",
            scope: crate::fieldmanager::Scope::Main {
                status_subresource: false,
            },
            now: &now,
        };
        managed = crate::fieldmanager::update(&live, &new, &managed, &ty, &writer).unwrap();
        live = new;
        assert!(managed.entries.len() <= MAX_UPDATE_MANAGERS);
    }
    let ancient = bucket(&managed, "v1");
    assert!(owns(ancient, "m01") && owns(ancient, "m03") && !owns(ancient, "m04"));
}
