//! Restart back-off for crashing containers.

use std::time::Duration;

/// The kubelet's back-off: the first restart waits 10 s, each further one doubles, up to 5 min;
/// a container that ran 10 min before exiting starts again from 10 s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartBackoff {
    restarts_in_a_row: u32,
}

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);
/// A run at least this long resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

impl RestartBackoff {
    /// Records that the container exited after running for `ran_for` and returns how long to
    /// wait before starting it again.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESET_AFTER {
            self.restarts_in_a_row = 0;
        }
        let exponent = self.restarts_in_a_row.min(16);
        self.restarts_in_a_row = self.restarts_in_a_row.saturating_add(1);
        INITIAL
            .checked_mul(1u32 << exponent)
            .map_or(MAX, |d| d.min(MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loops_back_off_like_the_kubelet() {
        let mut b = RestartBackoff::default();
        let delays: Vec<u64> = (0..7)
            .map(|_| b.on_exit(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let mut b = RestartBackoff::default();
        b.on_exit(Duration::from_secs(1));
        b.on_exit(Duration::from_secs(1));
        assert_eq!(b.on_exit(RESET_AFTER), INITIAL);
    }
}
