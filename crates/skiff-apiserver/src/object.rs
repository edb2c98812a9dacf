//! Reading and writing the metadata of objects held as JSON values, plus the few generated
//! values objects get on create (uids, random name suffixes, RFC 3339 timestamps).

use std::collections::BTreeMap;
use std::time::SystemTime;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value, json};

/// `metadata`, created empty when missing (and replacing a non-object).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("made an object above");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("made an object above")
}

/// A string field of `metadata`, empty when missing.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

/// `metadata.labels` as a map (non-string values are skipped).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    !meta_str(obj, "deletionTimestamp").is_empty()
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: i64) {
    meta_mut(obj).insert("resourceVersion".into(), json!(revision.to_string()));
}

/// Sets `apiVersion` and `kind`.
pub fn set_type(obj: &mut Value, api_version: &str, kind: &str) {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
        map.insert("kind".into(), json!(kind));
    }
}

/// The object without its volatile `metadata.resourceVersion`, for storing and comparing.
pub fn without_resource_version(obj: &Value) -> Value {
    let mut copy = obj.clone();
    meta_mut(&mut copy).remove("resourceVersion");
    copy
}

/// A random version-4 UUID.
pub fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Fills `buf` with random bytes from the system generator.
pub fn random_bytes(buf: &mut [u8]) {
    // The system generator only fails when the OS has no entropy source at all; a zeroed
    // buffer is then still a valid (if predictable) name suffix, so there is nothing to report.
    let _ = SystemRandom::new().fill(buf);
}

/// The 5-character suffix of `generateName` names, from apimachinery's alphabet (no vowels,
/// no confusable characters).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    random_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// `time` as RFC 3339 in UTC with whole seconds (`2024-05-01T12:00:00Z`), as Kubernetes
/// writes timestamps.
pub fn rfc3339(time: SystemTime) -> String {
    skiff_apimachinery::time::format_rfc3339(time)
}

/// The current time as RFC 3339.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn uids_look_like_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
        assert_eq!(random_suffix().len(), 5);
    }

    #[test]
    fn metadata_accessors() {
        let mut obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}, "finalizers": ["f"]}});
        assert_eq!(name(&obj), "a");
        assert_eq!(labels(&obj)["x"], "1");
        assert_eq!(finalizers(&obj), vec!["f".to_string()]);
        set_resource_version(&mut obj, 7);
        assert_eq!(meta_str(&obj, "resourceVersion"), "7");
        assert_eq!(
            meta_str(&without_resource_version(&obj), "resourceVersion"),
            ""
        );
    }
}
