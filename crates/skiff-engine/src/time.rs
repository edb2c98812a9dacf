//! Timestamps as Docker shows them: RFC 3339 with nanoseconds in records and logs, and the
//! human durations of `docker ps` ("Up 3 seconds", "2 minutes ago").

use std::time::{Duration, SystemTime};

/// The zero time Docker prints for "never" (`FinishedAt` of a running container).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Now as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn now_rfc3339() -> String {
    format_rfc3339(SystemTime::now())
}

/// Formats a time as RFC 3339 UTC with nanoseconds.
pub fn format_rfc3339(time: SystemTime) -> String {
    skiff_apimachinery::time::format_rfc3339_nanos(time)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    skiff_apimachinery::time::parse_rfc3339(text)
}

/// Docker's (go-units) human duration: "Less than a second", "3 seconds", "About a minute",
/// "5 minutes", "About an hour", "3 hours", "2 days", "3 weeks", "4 months", "2 years".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if seconds < 1 {
        "Less than a second".to_string()
    } else if seconds == 1 {
        "1 second".to_string()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_string()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// How long ago `time` (RFC 3339) was, as a human duration; `None` if it does not parse.
pub fn since(time: &str) -> Option<String> {
    let then = parse_rfc3339(time)?;
    let elapsed = SystemTime::now().duration_since(then).unwrap_or_default();
    Some(human_duration(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps_round_trip_with_nanoseconds() {
        let t = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        let text = format_rfc3339(t);
        assert!(text.ends_with(".123456789Z"), "{text}");
        assert_eq!(parse_rfc3339(&text), Some(t));
        assert_eq!(
            parse_rfc3339("1970-01-02T00:00:01Z"),
            Some(UNIX_EPOCH + Duration::from_secs(86_401))
        );
        assert!(parse_rfc3339("2024-02-29T12:00:00.5Z").is_some());
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn durations_read_like_docker_ps() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(3)), "3 seconds");
        assert_eq!(human_duration(Duration::from_secs(61)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(300)), "5 minutes");
        assert_eq!(human_duration(Duration::from_secs(3700)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 days");
    }
}
