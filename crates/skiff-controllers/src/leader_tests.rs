#![allow(clippy::unwrap_used)]

use super::*;

const ME: &str = "host-a_1111";
const OTHER: &str = "host-b_2222";

fn record(holder: &str, seconds: u64) -> Record {
    Record {
        holder: holder.to_string(),
        lease_duration: Duration::from_secs(seconds),
        acquire_time: None,
        renew_time: None,
        transitions: 3,
    }
}

fn config() -> LeaderElectionConfig {
    LeaderElectionConfig::new(CONTROLLER_MANAGER_LOCK, ME)
}

fn spec(holder: &str, transitions: i32, acquired: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(15),
        acquire_time: Some(MicroTime(acquired)),
        renew_time: Some(MicroTime(acquired)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

#[test]
fn a_missing_lease_is_created() {
    let now = Instant::now();
    assert_eq!(decide(None, now, now, ME), Decision::Create);
}

#[test]
fn a_released_lease_is_acquired_at_once() {
    let now = Instant::now();
    assert_eq!(
        decide(Some(&record("", 15)), now, now, ME),
        Decision::Acquire
    );
}

#[test]
fn the_holder_renews_its_own_lease() {
    let seen = Instant::now();
    let late = seen + Duration::from_secs(60);
    assert_eq!(
        decide(Some(&record(ME, 15)), seen, late, ME),
        Decision::Renew
    );
}

#[test]
fn a_live_lease_of_another_holder_is_waited_for() {
    let seen = Instant::now();
    let now = seen + Duration::from_secs(14);
    assert_eq!(
        decide(Some(&record(OTHER, 15)), seen, now, ME),
        Decision::Wait {
            holder: OTHER.to_string()
        }
    );
}

#[test]
fn a_lease_unchanged_for_its_duration_is_taken_over() {
    let seen = Instant::now();
    assert_eq!(
        decide(
            Some(&record(OTHER, 15)),
            seen,
            seen + Duration::from_secs(15),
            ME
        ),
        Decision::Acquire
    );
    // The record's own duration counts, not this candidate's.
    assert_eq!(
        decide(
            Some(&record(OTHER, 4)),
            seen,
            seen + Duration::from_secs(5),
            ME
        ),
        Decision::Acquire
    );
}

#[test]
fn the_leader_stops_once_the_renew_deadline_passes() {
    let renewed = Instant::now();
    let deadline = Duration::from_secs(10);
    assert!(!renew_deadline_passed(
        renewed,
        renewed + Duration::from_secs(9),
        deadline
    ));
    assert!(renew_deadline_passed(
        renewed,
        renewed + Duration::from_secs(10),
        deadline
    ));
    // The deadline is shorter than the lease: the leader stops before anyone may take over.
    let c = config();
    assert!(c.renew_deadline < c.lease_duration);
}

#[test]
fn a_takeover_counts_a_transition_and_sets_the_acquire_time() {
    let then = Timestamp::from_second(1_000).unwrap();
    let now = Timestamp::from_second(2_000).unwrap();
    let next = next_spec(
        Some(&spec(OTHER, 3, then)),
        &Decision::Acquire,
        &config(),
        now,
    );
    assert_eq!(next.holder_identity.as_deref(), Some(ME));
    assert_eq!(next.lease_transitions, Some(4));
    assert_eq!(next.acquire_time, Some(MicroTime(now)));
    assert_eq!(next.renew_time, Some(MicroTime(now)));
    assert_eq!(next.lease_duration_seconds, Some(15));
}

#[test]
fn a_renewal_keeps_the_acquire_time_and_transitions() {
    let then = Timestamp::from_second(1_000).unwrap();
    let now = Timestamp::from_second(2_000).unwrap();
    let next = next_spec(Some(&spec(ME, 3, then)), &Decision::Renew, &config(), now);
    assert_eq!(next.lease_transitions, Some(3));
    assert_eq!(next.acquire_time, Some(MicroTime(then)));
    assert_eq!(next.renew_time, Some(MicroTime(now)));
}

#[test]
fn a_new_lease_starts_with_no_transitions_and_a_released_one_keeps_them() {
    let now = Timestamp::from_second(2_000).unwrap();
    let created = next_spec(None, &Decision::Create, &config(), now);
    assert_eq!(created.lease_transitions, Some(0));
    assert_eq!(created.holder_identity.as_deref(), Some(ME));
    // Taking a released lease is no transition from a holder.
    let mut free = spec("", 5, now);
    free.holder_identity = None;
    let taken = next_spec(Some(&free), &Decision::Acquire, &config(), now);
    assert_eq!(taken.lease_transitions, Some(5));
    let released = released_spec(Some(&spec(ME, 5, now)), now);
    assert_eq!(released.holder_identity, None);
    assert_eq!(released.lease_transitions, Some(5));
    assert_eq!(released.lease_duration_seconds, Some(1));
}

#[test]
fn records_differ_only_when_the_lease_was_renewed_or_taken() {
    let t = Timestamp::from_second(1_000).unwrap();
    let a = Record::of(Some(&spec(OTHER, 1, t)), DEFAULT_LEASE_DURATION);
    assert_eq!(
        a,
        Record::of(Some(&spec(OTHER, 1, t)), DEFAULT_LEASE_DURATION)
    );
    let mut renewed = spec(OTHER, 1, t);
    renewed.renew_time = Some(MicroTime(Timestamp::from_second(1_002).unwrap()));
    assert_ne!(a, Record::of(Some(&renewed), DEFAULT_LEASE_DURATION));
    assert_eq!(a.lease_duration, Duration::from_secs(15));
}

#[test]
fn timing_is_checked_as_client_go_does() {
    assert!(config().validate().is_ok());
    let mut c = config();
    c.renew_deadline = c.lease_duration;
    assert!(c.validate().is_err());
    let mut c = config();
    c.retry_period = Duration::from_secs(9);
    assert!(c.validate().is_err());
    let mut c = config();
    c.retry_period = Duration::ZERO;
    assert!(c.validate().is_err());
    let mut c = config();
    (c.lease_duration, c.renew_deadline, c.retry_period) = (
        Duration::from_secs(4),
        Duration::from_secs(3),
        Duration::from_secs(1),
    );
    assert!(c.validate().is_ok());
}

#[test]
fn identities_name_the_host_and_differ_per_call() {
    let a = identity("node-1");
    let b = identity("node-1");
    assert!(a.starts_with("node-1_"), "{a}");
    assert_eq!(a.len(), "node-1_".len() + 36, "{a}");
    assert_ne!(a, b);
}
