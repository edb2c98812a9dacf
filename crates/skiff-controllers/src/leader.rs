//! Leader election over a `coordination.k8s.io/v1` Lease, with client-go's `leaderelection`
//! semantics, so that of several servers sharing one store only one runs a component (the
//! scheduler: lock `kube-system/kube-scheduler`; the controllers:
//! `kube-system/kube-controller-manager`).
//!
//! A candidate polls the Lease every retry period. It takes the Lease when there is none, when
//! its holder is empty (released), or when the record has not changed for the record's
//! `leaseDurationSeconds` as measured on the candidate's own clock since it last saw the record
//! change (no trust in other hosts' clocks). Every write is a compare-and-swap: a create fails
//! with 409 when the Lease exists, an update carries the `resourceVersion` read and fails with
//! 409 when someone wrote in between, so two candidates never both win. The leader renews every
//! retry period; when it has not renewed for the renew deadline (shorter than the lease
//! duration), or it sees another holder, it stops leading at once, before any other candidate
//! may take over. On shutdown the leader releases the Lease (empty holder) so a successor
//! need not wait for it to expire.
//!
//! The decisions are pure functions ([`decide`], [`renew_deadline_passed`], [`next_spec`]);
//! [`run`] applies them through the API.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// The namespace of the control plane's Leases.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The Lease of the scheduler.
pub const SCHEDULER_LOCK: &str = "kube-scheduler";
/// The Lease of the controllers.
pub const CONTROLLER_MANAGER_LOCK: &str = "kube-controller-manager";
/// How long a Lease is valid after its last renewal (`--leader-elect-lease-duration`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the leader keeps trying to renew before it stops leading
/// (`--leader-elect-renew-deadline`).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates try to acquire and the leader renews (`--leader-elect-retry-period`).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Candidates wait between one and this many retry periods (client-go's jitter factor).
const JITTER_FACTOR: f64 = 1.2;

/// Leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    /// The timing flags do not leave the leader time to renew before the Lease expires.
    #[error(
        "invalid leader election timing for {lock}: {reason} (lease duration {lease_duration:?}, \
         renew deadline {renew_deadline:?}, retry period {retry_period:?})"
    )]
    Timing {
        /// The Lease (`namespace/name`).
        lock: String,
        /// What is wrong.
        reason: &'static str,
        /// The lease duration.
        lease_duration: Duration,
        /// The renew deadline.
        renew_deadline: Duration,
        /// The retry period.
        retry_period: Duration,
    },
    /// An API call on the Lease failed.
    #[error("{lock}: cannot {action} the lease: {source}")]
    Api {
        /// The Lease (`namespace/name`).
        lock: String,
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// One candidate's election: which Lease, who it is, and the timing.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name (the component: `kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// This candidate's `holderIdentity` (see [`identity`]).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long the leader tries to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// An election for `kube-system/<name>` with kube's default timing.
    pub fn new(name: &str, identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig {
            namespace: LEASE_NAMESPACE.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Checks the timing as client-go does: lease duration > renew deadline > 1.2 x retry
    /// period > 0.
    pub fn validate(&self) -> Result<(), LeaderElectionError> {
        let reason = if self.retry_period.is_zero() {
            Some("the retry period must be positive")
        } else if self.lease_duration <= self.renew_deadline {
            Some("the lease duration must be greater than the renew deadline")
        } else if self.renew_deadline.as_secs_f64()
            <= JITTER_FACTOR * self.retry_period.as_secs_f64()
        {
            Some("the renew deadline must be greater than 1.2 times the retry period")
        } else if self.lease_duration.as_secs() == 0 {
            Some("the lease duration must be at least one second")
        } else {
            None
        };
        match reason {
            None => Ok(()),
            Some(reason) => Err(LeaderElectionError::Timing {
                lock: self.lock(),
                reason,
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            }),
        }
    }

    /// `namespace/name` of the Lease.
    pub fn lock(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A `holderIdentity` as kube's components make one: `<host>_<random UUID>`, unique per
/// process even when several servers run on one host.
pub fn identity(host: &str) -> String {
    let high = random_u64();
    let low = random_u64();
    format!(
        "{host}_{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0x0fff,
        ((low >> 48) & 0x3fff) | 0x8000,
        low & 0xffff_ffff_ffff
    )
}

/// A random number from the process's randomly keyed hasher, mixed with the time.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// The parts of a Lease's spec leader election reads; two records are equal when nothing was
/// renewed or taken over in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `holderIdentity` (empty: released).
    pub holder: String,
    /// `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// `acquireTime`.
    pub acquire_time: Option<Timestamp>,
    /// `renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl Record {
    /// The record of a Lease's spec (a missing duration counts as `fallback`).
    pub fn of(spec: Option<&LeaseSpec>, fallback: Duration) -> Record {
        let spec = spec.cloned().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(fallback, Duration::from_secs),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by this candidate.
    Create,
    /// The Lease is free (released) or expired: take it over.
    Acquire,
    /// This candidate holds the Lease: renew it.
    Renew,
    /// Another candidate holds a live Lease: try again later.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// The decision on `record` (`None`: no Lease), last seen changing at `observed_at` on this
/// candidate's clock, at `now`.
pub fn decide(
    record: Option<&Record>,
    observed_at: Instant,
    now: Instant,
    identity: &str,
) -> Decision {
    let Some(record) = record else {
        return Decision::Create;
    };
    if record.holder == identity {
        return Decision::Renew;
    }
    if record.holder.is_empty() || observed_at + record.lease_duration <= now {
        return Decision::Acquire;
    }
    Decision::Wait {
        holder: record.holder.clone(),
    }
}

/// Whether a leader that last renewed (started a successful renewal) at `last_renewed` must
/// stop leading at `now`.
pub fn renew_deadline_passed(
    last_renewed: Instant,
    now: Instant,
    renew_deadline: Duration,
) -> bool {
    now.saturating_duration_since(last_renewed) >= renew_deadline
}

/// The spec to write for `decision` (not [`Decision::Wait`]) over the current spec, at `now`:
/// a new holder gets a fresh `acquireTime` and one more `leaseTransitions`; a renewal keeps
/// both and moves `renewTime`.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    config: &LeaderElectionConfig,
    now: Timestamp,
) -> LeaseSpec {
    let old = Record::of(current, config.lease_duration);
    let took_over = !matches!(decision, Decision::Renew) && old.holder != config.identity;
    let transitions = match decision {
        Decision::Create => 0,
        _ if took_over && !old.holder.is_empty() => old.transitions.saturating_add(1),
        _ => old.transitions,
    };
    let acquire_time = if took_over || old.acquire_time.is_none() {
        now
    } else {
        old.acquire_time.unwrap_or(now)
    };
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: Some(MicroTime(acquire_time)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..current.cloned().unwrap_or_default()
    }
}

/// The spec of a released Lease (client-go's release on cancel): no holder, a one-second
/// duration, the transitions kept.
pub fn released_spec(current: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..current.cloned().unwrap_or_default()
    }
}

/// One candidate's view of the Lease.
struct Elector {
    api: Api<Lease>,
    client: Client,
    config: LeaderElectionConfig,
    /// The last record read and when it was first seen (this candidate's clock).
    observed: Option<(Record, Instant)>,
    /// The Lease as last read or written (its resourceVersion guards the next write).
    last: Option<Lease>,
}

impl Elector {
    fn new(client: Client, config: LeaderElectionConfig) -> Elector {
        Elector {
            api: Api::namespaced(client.clone(), &config.namespace),
            client,
            config,
            observed: None,
            last: None,
        }
    }

    fn error(&self, action: &'static str, source: kube::Error) -> LeaderElectionError {
        LeaderElectionError::Api {
            lock: self.config.lock(),
            action,
            source,
        }
    }

    /// Notes `lease` as read or written at `now`.
    fn observe(&mut self, lease: Lease, now: Instant) {
        let record = Record::of(lease.spec.as_ref(), self.config.lease_duration);
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record)
        {
            self.observed = Some((record, now));
        }
        self.last = Some(lease);
    }

    /// The holder last observed.
    fn holder(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .map(|(record, _)| record.holder.as_str())
    }

    /// One attempt: reads the Lease and creates, takes over or renews it when [`decide`] says
    /// so. `Ok(true)`: this candidate holds the Lease now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderElectionError> {
        let now = Instant::now();
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error("read", e))?;
        let decision = match current {
            None => {
                self.observed = None;
                self.last = None;
                Decision::Create
            }
            Some(lease) => {
                self.observe(lease, now);
                let (record, observed_at) = self
                    .observed
                    .as_ref()
                    .map_or((None, now), |(r, at)| (Some(r), *at));
                decide(record, observed_at, now, &self.config.identity)
            }
        };
        if matches!(decision, Decision::Wait { .. }) {
            return Ok(false);
        }
        let spec = next_spec(
            self.last.as_ref().and_then(|l| l.spec.as_ref()),
            &decision,
            &self.config,
            Timestamp::now(),
        );
        let written = if decision == Decision::Create {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            self.api.create(&PostParams::default(), &lease).await
        } else {
            let mut lease = self.last.clone().unwrap_or_default();
            lease.spec = Some(spec);
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
        };
        match written {
            Ok(lease) => {
                self.observe(lease, now);
                Ok(true)
            }
            // Another candidate wrote first: the next read shows who.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error("write", e)),
        }
    }

    /// Tries every retry period (with jitter) until this candidate holds the Lease.
    async fn acquire(&mut self) {
        let mut waiting_for: Option<String> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {
                    let holder = self.holder().map(str::to_string);
                    if holder != waiting_for {
                        tracing::info!(
                            lock = %self.config.lock(),
                            holder = holder.as_deref().unwrap_or(""),
                            "waiting for the leader lease"
                        );
                        waiting_for = holder;
                    }
                }
                Err(err) => tracing::debug!(error = %err, "cannot acquire the leader lease yet"),
            }
            let jitter = 1.0 + (JITTER_FACTOR - 1.0) * (random_u64() as f64 / u64::MAX as f64);
            tokio::time::sleep(self.config.retry_period.mul_f64(jitter)).await;
        }
    }

    /// Renews every retry period; returns (the Lease is lost) when no renewal succeeded for the
    /// renew deadline or another holder shows up.
    async fn renew_until_lost(&mut self, acquired_at: Instant) {
        let mut last_renewed = acquired_at;
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            loop {
                let started = Instant::now();
                if renew_deadline_passed(last_renewed, started, self.config.renew_deadline) {
                    tracing::warn!(
                        lock = %self.config.lock(),
                        "failed to renew the leader lease within the renew deadline"
                    );
                    return;
                }
                let left = self
                    .config
                    .renew_deadline
                    .saturating_sub(started.saturating_duration_since(last_renewed));
                match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                    Ok(Ok(true)) => {
                        last_renewed = started;
                        break;
                    }
                    Ok(Ok(false)) => {
                        if let Some(holder) = self.holder()
                            && holder != self.config.identity
                        {
                            tracing::warn!(
                                lock = %self.config.lock(),
                                %holder,
                                "the leader lease was taken over"
                            );
                            return;
                        }
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "cannot renew the leader lease; retrying");
                    }
                    Err(_) => continue,
                }
                let left = self
                    .config
                    .renew_deadline
                    .saturating_sub(Instant::now().saturating_duration_since(last_renewed));
                tokio::time::sleep(self.config.retry_period.min(left)).await;
            }
        }
    }

    /// Gives the Lease up when this candidate still holds it (a compare-and-swap on the
    /// resourceVersion it last wrote).
    async fn release(&mut self) {
        let Some(mut lease) = self.last.clone() else {
            return;
        };
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.config.identity.as_str());
        if !held {
            return;
        }
        lease.spec = Some(released_spec(lease.spec.as_ref(), Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lock = %self.config.lock(), "released the leader lease"),
            Err(err) => {
                tracing::debug!(error = %err, lock = %self.config.lock(), "cannot release the leader lease")
            }
        }
        self.last = None;
        self.observed = None;
    }

    /// Records a `LeaderElection` Event on the Lease, as kube's components do, in the
    /// background: a slow API must not hold up leading or renewing.
    fn event(&self, message: String) {
        if let Some(lease) = self.last.clone() {
            let client = self.client.clone();
            let component = self.config.name.clone();
            tokio::spawn(async move {
                crate::util::record_event(
                    &client,
                    &component,
                    &lease,
                    "Normal",
                    "LeaderElection",
                    &message,
                )
                .await;
            });
        }
    }
}

/// How a term of leadership ended.
enum Ended {
    Shutdown,
    Lost,
    Returned,
}

/// Campaigns for the Lease of `config` until `shutdown` completes. While this candidate leads,
/// `lead(stop)` runs; `stop` completes the moment the Lease is lost (or at shutdown), and the
/// candidate campaigns again once `lead` has returned. A `lead` that returns by itself gives
/// the Lease up. At shutdown a held Lease is released.
///
/// ```no_run
/// # async fn demo(client: kube::Client) -> Result<(), skiff_controllers::leader::LeaderElectionError> {
/// use skiff_controllers::leader::{self, LeaderElectionConfig};
/// let config = LeaderElectionConfig::new(leader::CONTROLLER_MANAGER_LOCK, &leader::identity("host"));
/// let controllers = client.clone();
/// leader::run(client, config, std::future::pending(), move |stop| {
///     skiff_controllers::run(controllers.clone(), stop)
/// })
/// .await
/// # }
/// ```
pub async fn run<L, F>(
    client: Client,
    config: LeaderElectionConfig,
    shutdown: impl Future<Output = ()> + Send,
    mut lead: L,
) -> Result<(), LeaderElectionError>
where
    L: FnMut(BoxFuture<'static, ()>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    config.validate()?;
    let lock = config.lock();
    let identity = config.identity.clone();
    let mut elector = Elector::new(client, config);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tracing::info!(%lock, %identity, "attempting to acquire the leader lease");
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = elector.acquire() => {}
        }
        let acquired_at = Instant::now();
        tracing::info!(%lock, %identity, "successfully acquired the lease; became leader");
        elector.event(format!("{identity} became leader"));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stop_future = async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        }
        .boxed();
        let mut leading = tokio::spawn(lead(stop_future));
        let ended = tokio::select! {
            () = &mut shutdown => Ended::Shutdown,
            () = elector.renew_until_lost(acquired_at) => Ended::Lost,
            _ = &mut leading => Ended::Returned,
        };
        let _ = stop.send(true);
        if !matches!(ended, Ended::Returned) {
            // The work stops at its stop future; one that does not within a retry period is
            // cancelled (its requests in flight dropped), as client-go cancels its context.
            let grace = elector.config.retry_period;
            match tokio::time::timeout(grace, &mut leading).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(%lock, error = %err, "the leader's work panicked"),
                Err(_) => {
                    tracing::warn!(%lock, ?grace, "the leader's work did not stop in time; cancelling it");
                    leading.abort();
                    let _ = leading.await;
                }
            }
        }
        match ended {
            Ended::Shutdown => {
                elector.release().await;
                return Ok(());
            }
            Ended::Lost => {
                tracing::warn!(%lock, %identity, "leader election lost; stopped leading");
                elector.event(format!("{identity} stopped leading"));
            }
            Ended::Returned => {
                tracing::warn!(%lock, %identity, "the leader's work ended; giving up the lease");
                elector.release().await;
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(elector.config.retry_period) => {}
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
