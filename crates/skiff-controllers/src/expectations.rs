//! Expectations: what a controller has just created or deleted for a key and not yet seen in
//! its cache. Until the cache catches up (or a timeout passes) the controller does not count
//! children again, so it never creates them twice (client-go's `ControllerExpectations`, but
//! tracking names and uids, checked against the cache rather than counted from events).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After this long, expectations are dropped even if never observed.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct Pending {
    /// Names of children created.
    creates: HashSet<String>,
    /// Uids of children deleted.
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// The pending creations and deletions of every key.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// Records that `key` created children named `created` and deleted the ones with uids
    /// `deleted`.
    pub fn expect(
        &self,
        key: &str,
        created: impl IntoIterator<Item = String>,
        deleted: impl IntoIterator<Item = String>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let pending = inner.entry(key.to_string()).or_default();
        pending.creates.extend(created);
        pending.deletes.extend(deleted);
        pending.since = Some(Instant::now());
    }

    /// Whether the cache has caught up with `key`: every created name is `seen`, and every
    /// deleted uid is `gone`. Satisfied expectations are forgotten.
    pub fn satisfied(
        &self,
        key: &str,
        seen: impl Fn(&str) -> bool,
        gone: impl Fn(&str) -> bool,
    ) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = inner.get_mut(key) else {
            return true;
        };
        pending.creates.retain(|n| !seen(n));
        pending.deletes.retain(|u| !gone(u));
        let expired = pending
            .since
            .is_some_and(|s| s.elapsed() > EXPECTATIONS_TIMEOUT);
        if expired || (pending.creates.is_empty() && pending.deletes.is_empty()) {
            inner.remove(key);
            return true;
        }
        false
    }

    /// Forgets `key` (its object was deleted).
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_hold_until_the_cache_shows_every_change() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs", |_| false, |_| false));
        e.expect(
            "ns/rs",
            ["a".to_string(), "b".to_string()],
            ["uid-x".to_string()],
        );
        assert!(!e.satisfied("ns/rs", |n| n == "a", |_| false));
        assert!(!e.satisfied("ns/rs", |_| true, |_| false));
        assert!(e.satisfied("ns/rs", |_| true, |_| true));
        assert!(
            e.satisfied("ns/rs", |_| false, |_| false),
            "forgotten once met"
        );
    }
}
