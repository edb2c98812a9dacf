#![allow(clippy::unwrap_used)]

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn next(expr: &str, tz: &str, after: &str) -> String {
    Schedule::parse(expr)
        .unwrap()
        .next_after(&time_zone(Some(tz)).unwrap(), ts(after))
        .unwrap()
        .to_string()
}

#[test]
fn macros_expand_to_their_schedules() {
    let at = "2025-03-15T10:20:00Z";
    assert_eq!(next("@hourly", "UTC", at), "2025-03-15T11:00:00Z");
    assert_eq!(next("@daily", "UTC", at), "2025-03-16T00:00:00Z");
    assert_eq!(next("@midnight", "UTC", at), "2025-03-16T00:00:00Z");
    assert_eq!(
        next("@weekly", "UTC", at),
        "2025-03-16T00:00:00Z",
        "a Sunday"
    );
    assert_eq!(next("@monthly", "UTC", at), "2025-04-01T00:00:00Z");
    assert_eq!(next("@yearly", "UTC", at), "2026-01-01T00:00:00Z");
    assert_eq!(next("@annually", "UTC", at), "2026-01-01T00:00:00Z");
}

#[test]
fn fields_take_ranges_steps_lists_and_names() {
    let at = "2025-03-15T10:20:00Z"; // a Saturday
    assert_eq!(next("*/15 * * * *", "UTC", at), "2025-03-15T10:30:00Z");
    assert_eq!(next("5,45 * * * *", "UTC", at), "2025-03-15T10:45:00Z");
    assert_eq!(next("0 9-17/4 * * *", "UTC", at), "2025-03-15T13:00:00Z");
    assert_eq!(next("30 8 * * MON-FRI", "UTC", at), "2025-03-17T08:30:00Z");
    assert_eq!(next("0 0 1 jun *", "UTC", at), "2025-06-01T00:00:00Z");
    assert_eq!(
        next("0 0 * * 7", "UTC", at),
        "2025-03-16T00:00:00Z",
        "7 is Sunday"
    );
    assert_eq!(next("10/20 * * * *", "UTC", at), "2025-03-15T10:30:00Z");
    assert_eq!(next("0 0 29 2 *", "UTC", at), "2028-02-29T00:00:00Z");
}

#[test]
fn restricted_day_of_month_and_week_match_either() {
    // The 20th or any Monday.
    assert_eq!(
        next("0 0 20 * 1", "UTC", "2025-03-15T00:00:00Z"),
        "2025-03-17T00:00:00Z"
    );
    // `*` day of month: only Mondays.
    assert_eq!(
        next("0 0 * * 1", "UTC", "2025-03-18T00:00:00Z"),
        "2025-03-24T00:00:00Z"
    );
}

#[test]
fn the_next_time_is_strictly_after() {
    assert_eq!(
        next("0 * * * *", "UTC", "2025-03-15T10:00:00Z"),
        "2025-03-15T11:00:00Z"
    );
    assert_eq!(
        next("* * * * *", "UTC", "2025-03-15T10:00:30Z"),
        "2025-03-15T10:01:00Z"
    );
}

#[test]
fn time_zones_shift_the_schedule() {
    assert_eq!(
        next("0 9 * * *", "+05:30", "2025-03-15T00:00:00Z"),
        "2025-03-15T03:30:00Z"
    );
    assert_eq!(
        next("0 9 * * *", "UTC-08:00", "2025-03-15T00:00:00Z"),
        "2025-03-15T17:00:00Z"
    );
    // IANA names, across the US spring-forward (2025-03-09).
    assert_eq!(
        next("0 9 * * *", "America/New_York", "2025-03-08T00:00:00Z"),
        "2025-03-08T14:00:00Z"
    );
    assert_eq!(
        next("0 9 * * *", "America/New_York", "2025-03-09T00:00:00Z"),
        "2025-03-09T13:00:00Z"
    );
    assert!(time_zone(Some("Mars/Olympus")).is_err());
    assert!(time_zone(Some("+25:00")).is_err());
    assert_eq!(time_zone(None).unwrap(), TimeZone::UTC);
}

#[test]
fn bad_schedules_are_refused() {
    for bad in [
        "* * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 8",
        "*/0 * * * *",
        "5-1 * * * *",
        "x * * * *",
        "@every 5m",
    ] {
        assert!(Schedule::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn most_recent_finds_the_latest_missed_time() {
    let s = Schedule::parse("*/10 * * * *").unwrap();
    let (t, n) = s
        .most_recent(
            &TimeZone::UTC,
            ts("2025-01-01T00:00:00Z"),
            ts("2025-01-01T00:35:00Z"),
        )
        .unwrap();
    assert_eq!((t.to_string().as_str(), n), ("2025-01-01T00:30:00Z", 3));
    assert!(
        s.most_recent(
            &TimeZone::UTC,
            ts("2025-01-01T00:30:00Z"),
            ts("2025-01-01T00:35:00Z")
        )
        .is_none()
    );
    let (t, n) = s
        .most_recent(
            &TimeZone::UTC,
            ts("2020-01-01T00:00:00Z"),
            ts("2025-01-01T00:35:00Z"),
        )
        .unwrap();
    assert_eq!(
        t.to_string(),
        "2025-01-01T00:30:00Z",
        "fast even with years missed"
    );
    assert!(n > 100);
}
