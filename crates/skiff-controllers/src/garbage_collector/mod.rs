//! The garbage collector: deletes objects whose owners are gone (background cascading
//! deletion), deletes the dependents of owners deleted in the foreground and then removes
//! their `foregroundDeletion` finalizer, and releases the dependents of owners deleted with
//! `orphan` before removing that finalizer.
//!
//! It discovers every listable, watchable, deletable resource, watches them all as dynamic
//! objects into one [`graph::Graph`], and works through a queue of uids. An owner missing from
//! the graph is confirmed with a live GET before anything is deleted.

pub mod graph;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::Shutdown;
use crate::util::is_not_found;
use graph::{
    DependentAction, Graph, Item, OwnerAction, OwnerState, decide_dependent, decide_owner,
};

/// Resources not worth watching: they churn and never own anything.
const SKIPPED: &[&str] = &["events", "leases"];

/// One kind the collector watches.
#[derive(Clone)]
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

enum Input {
    Event(usize, Box<watcher::Event<DynamicObject>>),
    Retry(Work),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Work {
    /// Check a dependent's owners.
    Dependent(String),
    /// Act for an owner deleted in the foreground or with orphan.
    Owner(String),
}

fn item_of(resource: usize, obj: &DynamicObject) -> Option<Item> {
    Some(Item {
        resource,
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone()?,
        owners: obj.metadata.owner_references.clone().unwrap_or_default(),
        deleting: obj.metadata.deletion_timestamp.is_some(),
        finalizers: obj.metadata.finalizers.clone().unwrap_or_default(),
    })
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(client: Client, shutdown: Shutdown) {
    tokio::select! {
        () = collect(client) => {}
        () = shutdown => {}
    }
}

async fn discover(client: &Client) -> Vec<Resource> {
    let mut delay = Duration::from_millis(200);
    loop {
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => {
                let mut out = Vec::new();
                for group in discovery.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if usable(&ar, &caps) {
                            out.push(Resource {
                                namespaced: caps.scope == Scope::Namespaced,
                                ar,
                            });
                        }
                    }
                }
                return out;
            }
            Err(error) => {
                tracing::warn!(%error, "garbage collector: discovery failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn usable(ar: &ApiResource, caps: &ApiCapabilities) -> bool {
    !SKIPPED.contains(&ar.plural.as_str())
        && !ar.plural.contains('/')
        && [verbs::LIST, verbs::WATCH, verbs::DELETE, verbs::PATCH]
            .iter()
            .all(|v| caps.supports_operation(v))
}

async fn collect(client: Client) {
    let resources = discover(&client).await;
    tracing::info!(resources = resources.len(), "garbage collector watching");
    let kinds: HashMap<(String, String), usize> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| ((r.ar.api_version.clone(), r.ar.kind.clone()), i))
        .collect();
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    let mut watches = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &r.ar);
        let tx = tx.clone();
        watches.push(tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = stream.next().await {
                match event {
                    Ok(ev) => {
                        if tx.send(Input::Event(i, Box::new(ev))).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "garbage collector watch failed; retrying")
                    }
                }
            }
        }));
    }
    let mut gc = Collector {
        client,
        resources,
        kinds,
        graph: Graph::default(),
        relisting: HashMap::new(),
        synced: HashSet::new(),
        queue: VecDeque::new(),
        queued: HashSet::new(),
        retry: tx,
    };
    while let Some(input) = rx.recv().await {
        gc.input(input);
        while let Ok(more) = rx.try_recv() {
            gc.input(more);
        }
        if gc.synced.len() < gc.resources.len() {
            continue;
        }
        while let Some(work) = gc.queue.pop_front() {
            gc.queued.remove(&work);
            if let Err(error) = gc.process(&work).await {
                tracing::debug!(%error, ?work, "garbage collector: retrying");
                let retry = gc.retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = retry.send(Input::Retry(work)).await;
                });
            }
            // Take in what changed meanwhile before the next item.
            while let Ok(more) = rx.try_recv() {
                gc.input(more);
            }
        }
    }
    for w in watches {
        w.abort();
    }
}

struct Collector {
    client: Client,
    resources: Vec<Resource>,
    kinds: HashMap<(String, String), usize>,
    graph: Graph,
    /// Uids seen during a re-list in progress, per resource.
    relisting: HashMap<usize, HashSet<String>>,
    synced: HashSet<usize>,
    queue: VecDeque<Work>,
    queued: HashSet<Work>,
    retry: mpsc::Sender<Input>,
}

impl Collector {
    fn push(&mut self, work: Work) {
        if self.queued.insert(work.clone()) {
            self.queue.push_back(work);
        }
    }

    fn observe(&mut self, item: Item) {
        let uid = item.uid.clone();
        if !item.owners.is_empty() {
            self.push(Work::Dependent(uid.clone()));
        }
        if item.waits_for_dependents() || item.orphans_dependents() {
            self.push(Work::Owner(uid.clone()));
        }
        // A dependent changing (or dropping its reference) may unblock an owner waiting for
        // it or orphaning it: look at the owners it had and has.
        let mut owners: Vec<String> = item.owners.iter().map(|o| o.uid.clone()).collect();
        if let Some(previous) = self.graph.get(&uid) {
            owners.extend(previous.owners.iter().map(|o| o.uid.clone()));
        }
        for o in owners {
            if self
                .graph
                .get(&o)
                .is_some_and(|x| x.waits_for_dependents() || x.orphans_dependents())
            {
                self.push(Work::Owner(o));
            }
        }
        self.graph.upsert(item);
    }

    fn gone(&mut self, uid: &str) {
        let Some(item) = self.graph.remove(uid) else {
            return;
        };
        let dependents: Vec<String> = self
            .graph
            .dependents_of(uid)
            .iter()
            .map(|d| d.uid.clone())
            .collect();
        for d in dependents {
            self.push(Work::Dependent(d));
        }
        for o in &item.owners {
            if self
                .graph
                .get(&o.uid)
                .is_some_and(|x| x.waits_for_dependents() || x.orphans_dependents())
            {
                self.push(Work::Owner(o.uid.clone()));
            }
        }
    }

    fn input(&mut self, input: Input) {
        let input = match input {
            Input::Retry(work) => {
                self.push(work);
                return;
            }
            Input::Event(r, ev) => (r, *ev),
        };
        match input {
            (r, watcher::Event::Apply(obj)) => {
                if let Some(item) = item_of(r, &obj) {
                    self.observe(item);
                }
            }
            (_, watcher::Event::Delete(obj)) => {
                if let Some(uid) = obj.metadata.uid.as_deref() {
                    self.gone(uid);
                }
            }
            (r, watcher::Event::Init) => {
                self.relisting.insert(r, HashSet::new());
            }
            (r, watcher::Event::InitApply(obj)) => {
                if let Some(item) = item_of(r, &obj) {
                    self.relisting
                        .entry(r)
                        .or_default()
                        .insert(item.uid.clone());
                    self.observe(item);
                }
            }
            (r, watcher::Event::InitDone) => {
                let keep = self.relisting.remove(&r).unwrap_or_default();
                let stale: Vec<String> = self.graph.retain_resource(r, &keep).into_iter().collect();
                // Re-insert nothing; announce the disappearance to dependents.
                for uid in stale {
                    let dependents: Vec<String> = self
                        .graph
                        .dependents_of(&uid)
                        .iter()
                        .map(|d| d.uid.clone())
                        .collect();
                    for d in dependents {
                        self.push(Work::Dependent(d));
                    }
                }
                self.synced.insert(r);
            }
        }
    }

    fn api_for(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let r = &self.resources[resource];
        match namespace {
            Some(ns) if r.namespaced => Api::namespaced_with(self.client.clone(), ns, &r.ar),
            _ => Api::all_with(self.client.clone(), &r.ar),
        }
    }

    /// The state of an owner reference of `dependent`, confirming absences with the API.
    async fn owner_state(
        &self,
        dependent: &Item,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<OwnerState, kube::Error> {
        if let Some(o) = self.graph.get(&owner.uid) {
            return Ok(if o.waits_for_dependents() {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            });
        }
        let Some(&r) = self
            .kinds
            .get(&(owner.api_version.clone(), owner.kind.clone()))
        else {
            // A kind we cannot look up: never delete on a guess.
            return Ok(OwnerState::Solid);
        };
        let api = self.api_for(r, dependent.namespace.as_deref());
        match api.get(&owner.name).await {
            Ok(live) if live.metadata.uid.as_deref() == Some(owner.uid.as_str()) => Ok(
                if live.finalizers().iter().any(|f| f == graph::FOREGROUND)
                    && live.metadata.deletion_timestamp.is_some()
                {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                },
            ),
            Ok(_) => Ok(OwnerState::Absent),
            Err(e) if is_not_found(&e) => Ok(OwnerState::Absent),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, item: &Item, policy: PropagationPolicy) -> Result<(), kube::Error> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(item.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .api_for(item.resource, item.namespace.as_deref())
            .delete(&item.name, &params)
            .await
        {
            Ok(_) => {
                tracing::info!(kind = %self.resources[item.resource].ar.kind, namespace = ?item.namespace, name = %item.name, "garbage collected");
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn drop_owners(&self, item: &Item, uids: &[String]) -> Result<(), kube::Error> {
        let keep: Vec<_> = item
            .owners
            .iter()
            .filter(|o| !uids.contains(&o.uid))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": keep, "uid": item.uid}});
        match self
            .api_for(item.resource, item.namespace.as_deref())
            .patch(&item.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn process(&mut self, work: &Work) -> Result<(), kube::Error> {
        match work {
            Work::Dependent(uid) => {
                let Some(item) = self.graph.get(uid).cloned() else {
                    return Ok(());
                };
                if item.deleting {
                    return Ok(());
                }
                let mut states = Vec::new();
                for o in &item.owners {
                    states.push((o.uid.clone(), self.owner_state(&item, o).await?));
                }
                match decide_dependent(&states) {
                    DependentAction::Keep => Ok(()),
                    DependentAction::Delete => {
                        self.delete(&item, PropagationPolicy::Background).await
                    }
                    DependentAction::DeleteForeground => {
                        self.delete(&item, PropagationPolicy::Foreground).await
                    }
                    DependentAction::DropOwners(uids) => self.drop_owners(&item, &uids).await,
                }
            }
            Work::Owner(uid) => {
                let Some(owner) = self.graph.get(uid).cloned() else {
                    return Ok(());
                };
                let dependents: Vec<Item> =
                    self.graph.dependents_of(uid).into_iter().cloned().collect();
                let refs: Vec<&Item> = dependents.iter().collect();
                match decide_owner(&owner, &refs) {
                    OwnerAction::None => Ok(()),
                    OwnerAction::Orphan(uids) => {
                        for d in dependents.iter().filter(|d| uids.contains(&d.uid)) {
                            self.drop_owners(d, std::slice::from_ref(uid)).await?;
                        }
                        Ok(())
                    }
                    OwnerAction::DeleteDependents(uids) => {
                        for d in dependents.iter().filter(|d| uids.contains(&d.uid)) {
                            self.delete(d, PropagationPolicy::Foreground).await?;
                        }
                        Ok(())
                    }
                    OwnerAction::RemoveFinalizer(finalizer) => {
                        let keep: Vec<&String> = owner
                            .finalizers
                            .iter()
                            .filter(|f| *f != finalizer)
                            .collect();
                        let patch = json!({"metadata": {"finalizers": keep, "uid": owner.uid}});
                        match self
                            .api_for(owner.resource, owner.namespace.as_deref())
                            .patch(&owner.name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                        {
                            Ok(_) => Ok(()),
                            Err(e) if is_not_found(&e) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                }
            }
        }
    }
}
