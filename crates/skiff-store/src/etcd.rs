//! The etcd v3 store, for several API servers sharing one etcd cluster.
//!
//! Keys live under a configurable prefix; etcd's revisions are the store's revisions; creates,
//! updates and deletes are transactions comparing the key's create or mod revision; a watch is
//! an etcd watch from `from_revision + 1` with previous values, re-established from the last
//! delivered revision when its connection breaks. The client knows every member, so the store
//! keeps working while a minority of the cluster is down.
//!
//! Requests that fail because no member could answer (connection refused, no leader, leader
//! changed) are retried for [`EtcdOptions::retry_for`]. A write whose answer was lost can
//! therefore be sent twice; the compare in its transaction makes the second one fail
//! (`AlreadyExists`, `Conflict`, `NotFound`) rather than apply twice.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::time::Instant;

use crate::types::{check_write, key_after, list_start, prefix_end};
use crate::{Deleted, Event, KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

const BACKEND: &str = "etcd";

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every key, so several clusters (or tests) can share one etcd; may be empty.
    pub prefix: String,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How long requests are retried while no member answers (e.g. during a leader election).
    pub retry_for: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints` with no key prefix, 5 s requests, 15 s of retries.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: String::new(),
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(15),
        }
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> EtcdOptions {
        self.prefix = prefix.into();
        self
    }
}

/// The etcd v3 store. Cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    retry_for: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What an etcd error means to the store.
enum Failure {
    Compacted,
    Future,
    TooLarge,
    /// No member could answer now; worth retrying.
    Unavailable(etcd_client::Error),
    Other(etcd_client::Error),
}

fn classify(error: etcd_client::Error) -> Failure {
    match &error {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                Failure::Compacted
            } else if message.contains("required revision is a future revision") {
                Failure::Future
            } else if message.contains("request is too large") {
                Failure::TooLarge
            } else if matches!(
                i32::from(status.code()),
                grpc_code::UNAVAILABLE | grpc_code::DEADLINE_EXCEEDED | grpc_code::CANCELLED
            ) || message.contains("leader")
                || message.contains("timed out")
                || message.contains("transport")
            {
                Failure::Unavailable(error)
            } else {
                Failure::Other(error)
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::Unavailable(error)
        }
        _ => Failure::Other(error),
    }
}

/// gRPC status codes (as numbers, so tonic need not be a dependency of our own).
mod grpc_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const UNAVAILABLE: i32 = 14;
}

fn backend(operation: String, error: etcd_client::Error) -> StoreError {
    StoreError::backend(BACKEND, operation, error)
}

impl EtcdStore {
    /// Connects to the members in `options` (waiting for none of them: requests are retried
    /// until one answers).
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|error| {
                backend(format!("connect to {}", options.endpoints.join(",")), error)
            })?;
        Ok(EtcdStore {
            client,
            prefix: options.prefix,
            retry_for: options.retry_for,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `call` until it succeeds, fails for a reason other than unavailability, or the
    /// retry time is over.
    async fn retry<T, F, Fut>(
        &self,
        operation: impl Fn() -> String,
        mut call: F,
    ) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(50);
        loop {
            match call(self.client.clone()).await.map_err(classify) {
                Err(Failure::Unavailable(error)) if Instant::now() + pause < deadline => {
                    tracing::debug!(operation = operation(), %error, "etcd unavailable, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                result => return result,
            }
        }
    }

    /// The store's key for an etcd key.
    fn strip(&self, key: &[u8]) -> Result<String, StoreError> {
        let key = std::str::from_utf8(key)
            .map_err(|error| StoreError::backend(BACKEND, "decode a key", error))?;
        key.strip_prefix(self.prefix.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::backend(
                    BACKEND,
                    "decode a key",
                    format!("key {key:?} is outside the prefix {:?}", self.prefix),
                )
            })
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.strip(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Maps a failure of a request about `requested` revision to a store error.
    fn fail(&self, failure: Failure, operation: String, requested: Revision) -> StoreError {
        match failure {
            Failure::Compacted => StoreError::Compacted {
                requested,
                compacted: None,
            },
            Failure::Future => StoreError::FutureRevision {
                requested,
                current: 0,
            },
            Failure::TooLarge => StoreError::backend(BACKEND, operation, "request is too large"),
            Failure::Unavailable(error) | Failure::Other(error) => backend(operation, error),
        }
    }

    /// Runs a compare-and-swap transaction; `Ok(Ok(..))` when it succeeded with the response's
    /// revision and op responses, `Ok(Err(..))` with the else branch's responses.
    async fn txn(
        &self,
        key: &str,
        value_size: usize,
        operation: String,
        txn: Txn,
    ) -> Result<Result<(Revision, Vec<TxnOpResponse>), Vec<TxnOpResponse>>, StoreError> {
        let response = self
            .retry(
                || operation.clone(),
                |mut client| {
                    let txn = txn.clone();
                    async move { client.txn(txn).await }
                },
            )
            .await
            .map_err(|failure| match failure {
                Failure::TooLarge => StoreError::TooLarge {
                    key: key.to_string(),
                    size: value_size,
                    limit: crate::MAX_VALUE_SIZE,
                },
                failure => self.fail(failure, operation.clone(), 0),
            })?;
        let revision = response.header().map_or(0, |header| header.revision());
        if response.succeeded() {
            Ok(Ok((revision, response.op_responses())))
        } else {
            Ok(Err(response.op_responses()))
        }
    }

    /// The current version of `key` from an else branch's get.
    fn current_of(&self, responses: Vec<TxnOpResponse>) -> Result<Option<KeyValue>, StoreError> {
        for response in responses {
            if let TxnOpResponse::Get(get) = response {
                return get.kvs().first().map(|kv| self.kv(kv)).transpose();
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let full = self.full_key(key);
        let operation = || format!("get {key:?}");
        let response = self
            .retry(operation, |mut client| {
                let full = full.clone();
                async move { client.get(full, None).await }
            })
            .await
            .map_err(|failure| self.fail(failure, operation(), 0))?;
        response.kvs().first().map(|kv| self.kv(kv)).transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
        continue_from: Option<&str>,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let start = self.full_key(list_start(prefix, continue_from));
        let end = prefix_end(&self.full_key(prefix));
        let limit = limit.filter(|&l| l > 0);
        let mut options = GetOptions::new().with_range(end);
        if let Some(limit) = limit {
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let operation = || format!("list {prefix:?}");
        let response = self
            .retry(operation, |mut client| {
                let start = start.clone();
                let options = options.clone();
                async move { client.get(start, Some(options)).await }
            })
            .await
            .map_err(|failure| self.fail(failure, operation(), revision.unwrap_or(0)))?;
        let items = response
            .kvs()
            .iter()
            .map(|kv| self.kv(kv))
            .collect::<Result<Vec<_>, _>>()?;
        let at = match revision {
            Some(revision) => revision,
            None => response.header().map_or(0, |header| header.revision()),
        };
        let continue_from = if limit.is_some() && response.more() {
            items.last().map(|last| key_after(&last.key))
        } else {
            None
        };
        Ok(ListResult {
            items,
            revision: at,
            continue_from,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        check_write(key, Some(&value))?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.clone(), value.to_vec(), None)])
            .or_else([TxnOp::get(full, None)]);
        let operation = format!("create {key:?}");
        match self.txn(key, value.len(), operation, txn).await? {
            Ok((revision, _)) => Ok(revision),
            Err(responses) => {
                let mod_revision = self.current_of(responses)?.map_or(0, |kv| kv.mod_revision);
                Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                    mod_revision,
                })
            }
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        check_write(key, Some(&value))?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected_mod_revision),
            ])
            .and_then([TxnOp::put(full.clone(), value.to_vec(), None)])
            .or_else([TxnOp::get(full, None)]);
        let operation = format!("update {key:?}");
        match self.txn(key, value.len(), operation, txn).await? {
            Ok((revision, _)) => Ok(revision),
            Err(responses) => match self.current_of(responses)? {
                None => Err(StoreError::NotFound {
                    key: key.to_string(),
                }),
                Some(current) => Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected: expected_mod_revision,
                    current: current.mod_revision,
                }),
            },
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        check_write(key, None)?;
        let full = self.full_key(key);
        let mut compares = vec![Compare::create_revision(
            full.clone(),
            CompareOp::Greater,
            0,
        )];
        if let Some(expected) = expected_mod_revision {
            compares.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        match self.txn(key, 0, format!("delete {key:?}"), txn).await? {
            Ok((revision, responses)) => {
                let prev = responses.into_iter().find_map(|response| match response {
                    TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
                    _ => None,
                });
                match prev {
                    Some(prev) => Ok(Deleted {
                        kv: self.kv(&prev)?,
                        revision,
                    }),
                    None => Err(StoreError::NotFound {
                        key: key.to_string(),
                    }),
                }
            }
            Err(responses) => match self.current_of(responses)? {
                None => Err(StoreError::NotFound {
                    key: key.to_string(),
                }),
                Some(current) => Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected: expected_mod_revision.unwrap_or(0),
                    current: current.mod_revision,
                }),
            },
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let mut watcher = Watcher {
            store: self.clone(),
            prefix: prefix.to_string(),
            last: from_revision,
            stream: None,
            pending: VecDeque::new(),
            broken_since: None,
            done: false,
        };
        watcher.open().await?;
        Ok(Box::pin(futures::stream::unfold(
            watcher,
            |mut watcher| async move {
                let item = watcher.next().await?;
                Some((item, watcher))
            },
        )))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let operation = || format!("compact to revision {revision}");
        let result = self
            .retry(operation, |mut client| async move {
                client
                    .compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            })
            .await;
        match result {
            Ok(_) | Err(Failure::Compacted) => Ok(()),
            Err(failure) => Err(self.fail(failure, operation(), revision)),
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        // etcd refuses an empty key: without a prefix, count from the smallest key instead.
        let key = match self.full_key("") {
            prefix if prefix.is_empty() => "\0".to_string(),
            prefix => prefix,
        };
        let end = prefix_end(&key);
        let operation = || "read the current revision".to_string();
        let response = self
            .retry(operation, |mut client| {
                let key = key.clone();
                let end = end.clone();
                async move {
                    client
                        .get(
                            key,
                            Some(GetOptions::new().with_range(end).with_count_only()),
                        )
                        .await
                }
            })
            .await
            .map_err(|failure| self.fail(failure, operation(), 0))?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }
}

/// State of one etcd watch stream.
struct Watcher {
    store: EtcdStore,
    prefix: String,
    /// Every event up to here has been delivered.
    last: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<Event>,
    /// Since when the stream has been failing, while it is.
    broken_since: Option<Instant>,
    done: bool,
}

impl Watcher {
    /// Checks that `last` has not been compacted, then opens an etcd watch from `last + 1`.
    async fn open(&mut self) -> Result<(), StoreError> {
        let store = &self.store;
        let full = store.full_key(&self.prefix);
        let end = prefix_end(&full);
        let last = self.last;
        let operation = || format!("watch {:?} from revision {last}", self.prefix);
        if last > 0 {
            // A read at the start revision fails exactly when it has been compacted.
            let check = store
                .retry(operation, |mut client| {
                    let full = full.clone();
                    let options = GetOptions::new()
                        .with_range(end.clone())
                        .with_revision(last)
                        .with_count_only();
                    async move { client.get(full, Some(options)).await }
                })
                .await;
            match check {
                Ok(_) | Err(Failure::Future) => {}
                Err(failure) => return Err(store.fail(failure, operation(), last)),
            }
        }
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(last + 1)
            .with_prev_key();
        let stream = store
            .retry(operation, |client| {
                let full = full.clone();
                let options = options.clone();
                async move { client.watch_client().watch(full, Some(options)).await }
            })
            .await
            .map_err(|failure| store.fail(failure, operation(), last))?;
        self.stream = Some(stream);
        Ok(())
    }

    fn event(&self, event: &etcd_client::Event) -> Result<Event, StoreError> {
        let store = &self.store;
        let kv = event.kv().ok_or_else(|| {
            StoreError::backend(BACKEND, "decode a watch event", "an event without a key")
        })?;
        let prev = event.prev_kv().map(|prev| store.kv(prev)).transpose()?;
        Ok(match event.event_type() {
            EventType::Put => Event::Put {
                kv: store.kv(kv)?,
                prev: if kv.version() == 1 { None } else { prev },
            },
            EventType::Delete => {
                let key = store.strip(kv.key())?;
                let prev = prev.ok_or_else(|| {
                    StoreError::backend(
                        BACKEND,
                        "decode a watch event",
                        format!("the delete of {key:?} came without its previous version"),
                    )
                })?;
                Event::Delete {
                    kv: KeyValue {
                        key,
                        value: Bytes::new(),
                        create_revision: prev.create_revision,
                        mod_revision: kv.mod_revision(),
                    },
                    prev,
                }
            }
        })
    }

    /// Re-establishes a broken watch from the last delivered revision, pausing between tries;
    /// fails once it has been broken for longer than the store's retry time.
    async fn reopen(&mut self) -> Result<(), StoreError> {
        self.stream = None;
        let since = *self.broken_since.get_or_insert_with(Instant::now);
        loop {
            let result = self.open().await;
            match result {
                Ok(()) => return Ok(()),
                Err(error @ StoreError::Compacted { .. }) => return Err(error),
                Err(error) if since.elapsed() > self.store.retry_for => return Err(error),
                Err(error) => {
                    tracing::debug!(%error, "etcd watch broken, reopening");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                self.last = event.revision();
                return Some(Ok(event));
            }
            let message = match self.stream.as_mut() {
                Some(stream) => stream.message().await,
                None => Ok(None),
            };
            let response = match message {
                Ok(Some(response)) if response.compact_revision() > 0 => {
                    self.done = true;
                    return Some(Err(StoreError::Compacted {
                        requested: self.last,
                        compacted: Some(response.compact_revision()),
                    }));
                }
                Ok(Some(response)) if !response.canceled() => response,
                // Canceled (no leader), ended or failed: watch again from where we are.
                _ => {
                    if self
                        .broken_since
                        .is_some_and(|since| since.elapsed() > Duration::from_millis(100))
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    if let Err(error) = self.reopen().await {
                        self.done = true;
                        return Some(Err(error));
                    }
                    continue;
                }
            };
            self.broken_since = None;
            for event in response.events() {
                match self.event(event) {
                    Ok(event) if event.revision() > self.last => self.pending.push_back(event),
                    Ok(_) => {}
                    Err(error) => {
                        self.done = true;
                        return Some(Err(error));
                    }
                }
            }
        }
    }
}
