//! The conformance suite against [`EtcdStore`] on a throw-away etcd member, and the
//! store's behaviour on a 3-member cluster that loses a member.

// Test code: clippy.toml allows unwrap in #[test] functions, not in the helpers and fixtures
// around them.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skiff_store::{EtcdOptions, EtcdStore, Store};
use skiff_testkit::etcd::{EtcdCluster, EtcdMember};

struct Etcd {
    _member: EtcdMember,
    options: EtcdOptions,
    store: Arc<EtcdStore>,
}

#[async_trait::async_trait]
impl conformance::Backend for Etcd {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reconnect(&self) -> Arc<dyn Store> {
        Arc::new(EtcdStore::connect(self.options.clone()).await.unwrap())
    }
}

async fn etcd() -> Etcd {
    let member = tokio::task::spawn_blocking(EtcdMember::start)
        .await
        .unwrap()
        .unwrap();
    // A prefix, so that the tests also prove keys are mapped in and out of it.
    let options = EtcdOptions::new([member.endpoint()]).with_prefix("/skiff-test");
    let store = Arc::new(EtcdStore::connect(options.clone()).await.unwrap());
    Etcd {
        _member: member,
        options,
        store,
    }
}

conformance_tests!(etcd);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_with_different_prefixes_do_not_see_each_other() {
    conformance::run(async {
        let member = tokio::task::spawn_blocking(EtcdMember::start)
            .await
            .unwrap()
            .unwrap();
        let one = EtcdStore::connect(EtcdOptions::new([member.endpoint()]).with_prefix("/one"))
            .await
            .unwrap();
        let two = EtcdStore::connect(EtcdOptions::new([member.endpoint()]).with_prefix("/two"))
            .await
            .unwrap();
        one.create("/registry/a", "1".into()).await.unwrap();
        two.create("/registry/b", "2".into()).await.unwrap();
        let listed = one.list("/", None, None, None).await.unwrap();
        let keys: Vec<&str> = listed.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/registry/a"]);
        assert_eq!(two.get("/registry/a").await.unwrap(), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_without_a_prefix_reads_its_revision() {
    conformance::run(async {
        let member = tokio::task::spawn_blocking(EtcdMember::start)
            .await
            .unwrap()
            .unwrap();
        let store = EtcdStore::connect(EtcdOptions::new([member.endpoint()]))
            .await
            .unwrap();
        let before = store.current_revision().await.unwrap();
        let created = store.create("/registry/x", "1".into()).await.unwrap();
        assert!(created > before);
        assert_eq!(store.current_revision().await.unwrap(), created);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_member_cluster_keeps_serving_when_the_leader_is_killed() {
    conformance::run(async {
        let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
            .await
            .unwrap()
            .unwrap();
        let mut options = EtcdOptions::new(cluster.endpoints()).with_prefix("/ha");
        options.request_timeout = Duration::from_secs(2);
        let store = Arc::new(EtcdStore::connect(options).await.unwrap());
        let from = store.current_revision().await.unwrap();
        let mut watch = store.watch("/registry/", from).await.unwrap();
        let mut written = Vec::new();
        for i in 0..20 {
            written.push(
                store
                    .create(&format!("/registry/before/{i}"), "v".into())
                    .await
                    .unwrap(),
            );
        }

        let leader = cluster.leader().expect("the cluster has a leader");
        cluster.kill_member(leader);

        // Writes and reads go on (retried through the election), the watch misses nothing.
        for i in 0..20 {
            let key = format!("/registry/after/{i}");
            written.push(store.create(&key, "v".into()).await.unwrap());
            assert!(store.get(&key).await.unwrap().is_some());
        }
        let listed = store.list("/registry/", None, None, None).await.unwrap();
        assert_eq!(listed.items.len(), 40);
        let mut counter = store.create("/registry/counter", "0".into()).await.unwrap();
        written.push(counter);
        for i in 1..=10 {
            counter = store
                .update("/registry/counter", i.to_string().into(), counter)
                .await
                .unwrap();
            written.push(counter);
        }
        for expected in &written {
            let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("a watch event in time")
                .expect("the watch goes on")
                .expect("no watch error");
            assert_eq!(event.revision(), *expected);
        }

        // The member comes back and catches up; then another one (the new leader) goes.
        let mut cluster = tokio::task::spawn_blocking(move || {
            cluster.restart_member(leader).unwrap();
            cluster
        })
        .await
        .unwrap();
        assert_eq!(
            store.get("/registry/counter").await.unwrap().unwrap().value,
            "10".as_bytes()
        );
        let second = cluster.leader().expect("the cluster has a leader again");
        cluster.kill_member(second);
        let mut more = Vec::new();
        for i in 11..=20 {
            counter = store
                .update("/registry/counter", i.to_string().into(), counter)
                .await
                .unwrap();
            more.push(counter);
        }
        for expected in &more {
            let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("a watch event in time")
                .expect("the watch goes on")
                .expect("no watch error");
            assert_eq!(event.revision(), *expected);
        }
        let listed = store
            .list("/registry/", Some(15), None, None)
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 15);
        assert!(listed.continue_from.is_some());
    })
    .await;
}
