//! Waiting for a condition with a deadline (never a fixed sleep).

use std::time::{Duration, Instant};

use crate::{Result, TestkitError};

/// Polls `check` until it returns `Some`, backing off from 10 ms to 200 ms between tries,
/// and fails with [`TestkitError::Timeout`] naming `what` once `deadline` has passed.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed() >= deadline {
            return Err(TestkitError::Timeout {
                what: what.to_string(),
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = wait_for("third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .unwrap();
        assert_eq!(value, 3);
    }

    #[test]
    fn times_out_naming_what_it_waited_for() {
        let err = wait_for::<()>("nothing", Duration::from_millis(50), || None).unwrap_err();
        assert!(err.to_string().contains("waiting for nothing"), "{err}");
    }
}
