//! Per-key exponential back-off for requeues after failed reconciles.

use std::collections::HashMap;
use std::time::Duration;

/// A back-off could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// The base delay is zero or larger than the cap.
    #[error("invalid back-off: base {base:?} must be non-zero and at most the cap {cap:?}")]
    BadBounds {
        /// The base delay.
        base: Duration,
        /// The cap.
        cap: Duration,
    },
}

/// `base * 2^exponent`, at most `cap` (never overflowing).
pub fn doubled(base: Duration, exponent: u32, cap: Duration) -> Duration {
    base.checked_mul(1u32 << exponent.min(31))
        .map_or(cap, |d| d.min(cap))
}

/// Delay before retrying a key: `base * 2^failures`, capped.
#[derive(Debug, Clone)]
pub struct ItemBackoff {
    base: Duration,
    cap: Duration,
    failures: HashMap<String, u32>,
}

impl Default for ItemBackoff {
    fn default() -> Self {
        ItemBackoff {
            base: Duration::from_millis(5),
            cap: Duration::from_secs(1000),
            failures: HashMap::new(),
        }
    }
}

impl ItemBackoff {
    /// A back-off starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Result<ItemBackoff, BackoffError> {
        if base.is_zero() || base > cap {
            return Err(BackoffError::BadBounds { base, cap });
        }
        Ok(ItemBackoff {
            base,
            cap,
            failures: HashMap::new(),
        })
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn next_delay(&mut self, key: &str) -> Duration {
        let failures = self.failures.entry(key.to_string()).or_insert(0);
        let exponent = *failures;
        *failures = failures.saturating_add(1);
        doubled(self.base, exponent, self.cap)
    }

    /// Forgets `key` after a success, so its next failure starts from the base again.
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// How many times in a row `key` has failed.
    pub fn failures(&self, key: &str) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_key_up_to_the_cap() {
        let mut b = ItemBackoff::new(Duration::from_millis(5), Duration::from_millis(30)).unwrap();
        let delays: Vec<_> = (0..5).map(|_| b.next_delay("ns/a").as_millis()).collect();
        assert_eq!(delays, vec![5, 10, 20, 30, 30]);
        assert_eq!(
            b.next_delay("ns/b"),
            Duration::from_millis(5),
            "keys back off independently"
        );
        assert_eq!(b.failures("ns/a"), 5);
    }

    #[test]
    fn a_success_resets_the_key() {
        let mut b = ItemBackoff::default();
        b.next_delay("k");
        b.next_delay("k");
        b.forget("k");
        assert_eq!(b.next_delay("k"), Duration::from_millis(5));
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut b = ItemBackoff::default();
        for _ in 0..100 {
            assert!(b.next_delay("k") <= Duration::from_secs(1000));
        }
    }

    #[test]
    fn bad_bounds_are_refused() {
        assert!(ItemBackoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(ItemBackoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }
}
