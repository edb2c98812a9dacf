//! The values every store speaks in: key/value pairs with revisions, list pages, watch events.

use bytes::Bytes;

use crate::StoreError;

/// A point in the store's history: one global counter per store, increased by every write
/// (create, update, delete). It becomes the Kubernetes `resourceVersion`.
pub type Revision = i64;

/// The largest value a store accepts, in bytes (1.5 MiB, etcd's default request limit).
pub const MAX_VALUE_SIZE: usize = 1536 * 1024;

/// One stored key and its value, with the revisions that created and last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web`.
    pub key: String,
    /// The value (an encoded object).
    pub value: Bytes,
    /// The revision of the create that started this key's current life.
    pub create_revision: Revision,
    /// The revision of the last change: the `resourceVersion` of the object.
    pub mod_revision: Revision,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The pairs in key order.
    pub items: Vec<KeyValue>,
    /// The revision this page is a snapshot of; pass it back with
    /// [`continue_from`](ListResult::continue_from) to read the next page at the same revision.
    pub revision: Revision,
    /// Where the next page starts (inclusive) when there are more items, `None` on the last page.
    pub continue_from: Option<String>,
}

/// What a delete removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The last stored version of the key (its value and revisions before the delete).
    pub kv: KeyValue,
    /// The revision of the delete itself.
    pub revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created (`prev` is `None`) or updated.
    Put {
        /// The key's new version; its `mod_revision` is the event's revision.
        kv: KeyValue,
        /// The version it replaced, `None` for a create.
        prev: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        /// The key with an empty value, its `create_revision`, and the revision of the delete
        /// as `mod_revision`.
        kv: KeyValue,
        /// The version that was deleted.
        prev: KeyValue,
    },
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } | Event::Delete { kv, .. } => kv.mod_revision,
        }
    }

    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } | Event::Delete { kv, .. } => &kv.key,
        }
    }
}

/// The first key after every key that starts with `prefix` (its range end), as bytes: keys are
/// UTF-8, so the byte `0xFF` bounds even the empty prefix.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF]
}

/// Where a list page starts: the prefix, or the continue key when it is past the prefix.
pub(crate) fn list_start<'a>(prefix: &'a str, continue_from: Option<&'a str>) -> &'a str {
    match continue_from {
        Some(from) if from > prefix => from,
        _ => prefix,
    }
}

/// The continue key after `last`: the smallest key greater than it.
pub(crate) fn key_after(last: &str) -> String {
    format!("{last}\0")
}

/// Refuses empty keys and values over [`MAX_VALUE_SIZE`].
pub(crate) fn check_write(key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason: "a key must not be empty",
        });
    }
    if let Some(value) = value
        && value.len() > MAX_VALUE_SIZE
    {
        return Err(StoreError::TooLarge {
            key: key.to_string(),
            size: value.len(),
            limit: MAX_VALUE_SIZE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_exactly_the_prefixed_keys() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(""), vec![0xFF]);
        assert!("/a/zzz".as_bytes() < prefix_end("/a/").as_slice());
        assert!("/a0".as_bytes() >= prefix_end("/a/").as_slice());
    }

    #[test]
    fn the_continue_key_sorts_right_after_the_last_key() {
        let next = key_after("/a/b");
        assert!(next.as_str() > "/a/b" && next.as_str() < "/a/b0" && next.as_str() < "/a/ba");
        assert_eq!(list_start("/a/", Some(&next)), next);
        assert_eq!(list_start("/a/", Some("/")), "/a/");
    }
}
