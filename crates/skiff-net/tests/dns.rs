//! The cluster DNS server on loopback: UDP and TCP with hickory-built messages, busybox's
//! `nslookup` as a real client, forwarding to a second server, SERVFAIL, live updates.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_net::dns::{DnsHandle, DnsServer, DnsSnapshot, upstreams_from_resolv_conf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;

const LOCALHOST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

fn headless_slice(ns: &str, svc: &str, count: usize) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            json!({"addresses": [format!("10.42.1.{}", i + 1)], "hostname": format!("{svc}-{i}"),
                   "conditions": {"ready": true}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-x"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "peer", "port": 7000, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn cluster(web_ip: &str) -> DnsSnapshot {
    let services = vec![
        service(
            "default",
            "web",
            json!({"clusterIP": web_ip, "ports": [{"name": "http", "port": 80}]}),
        ),
        service("default", "big", json!({"clusterIP": "None"})),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "api.upstream.test"}),
        ),
    ];
    let slices = vec![headless_slice("default", "big", 60)];
    let pods: Vec<Pod> = Vec::new();
    DnsSnapshot::build(&services, &slices, &pods, "cluster.local")
}

/// The "internet": a second server, authoritative for `upstream.test`.
fn upstream_zone() -> DnsSnapshot {
    let services = vec![
        service("ns", "api", json!({"clusterIP": "192.0.2.7"})),
        service("x", "api", json!({"clusterIP": "192.0.2.8"})),
    ];
    DnsSnapshot::build(&services, &[], &[], "upstream.test")
}

struct Running {
    addr: SocketAddr,
    handle: DnsHandle,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(snapshot: DnsSnapshot, upstreams: Vec<SocketAddr>, timeout: Duration) -> Running {
    let server = DnsServer::bind(LOCALHOST, upstreams)
        .await
        .unwrap()
        .with_upstream_timeout(timeout);
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let handle = server.handle();
    handle.update(snapshot);
    let task = server.spawn();
    Running { addr, handle, task }
}

fn query_message(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        message.set_edns(e);
    }
    message
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind(LOCALHOST).await.unwrap();
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("UDP reply in time")
        .unwrap();
    assert_eq!(from, server);
    buf.truncate(len);
    buf
}

async fn udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let query = query_message(name, qtype, false);
    let reply = Message::from_vec(&udp_exchange(server, &query.to_vec().unwrap()).await).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

async fn tcp_exchange(stream: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(10), stream.read_u16())
        .await
        .expect("TCP reply in time")
        .unwrap();
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await.unwrap();
    reply
}

async fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let query = query_message(name, qtype, false);
    let reply =
        Message::from_vec(&tcp_exchange(&mut stream, &query.to_vec().unwrap()).await).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    reply
}

fn addresses(reply: &Message) -> Vec<String> {
    let mut out: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn soa_authority(reply: &Message) -> bool {
    reply.authorities.len() == 1 && matches!(reply.authorities[0].data, RData::SOA(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_records_nodata_and_nxdomain() {
    let server = start(cluster("10.43.0.20"), vec![], Duration::from_millis(300)).await;

    let reply = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.metadata.recursion_desired);
    assert_eq!(addresses(&reply), vec!["10.43.0.20"]);
    assert_eq!(reply.answers[0].ttl, 5);

    // The owner keeps the question's spelling (0x20 clients), the answer is the same.
    let reply = udp(server.addr, "WEB.Default.svc.CLUSTER.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.20"]);
    assert_eq!(
        reply.answers[0].name.to_ascii(),
        "WEB.Default.svc.CLUSTER.local."
    );

    let reply = udp(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert!(soa_authority(&reply));

    let reply = udp(
        server.addr,
        "nope.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_authority(&reply));

    let reply = udp(server.addr, "20.0.43.10.in-addr.arpa.", RecordType::PTR).await;
    match &reply.answers[..] {
        [record] => match &record.data {
            RData::PTR(ptr) => assert_eq!(ptr.0.to_ascii(), "web.default.svc.cluster.local."),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    let reply = udp(
        server.addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    match &reply.answers[..] {
        [record] => match &record.data {
            RData::SRV(srv) => {
                assert_eq!(srv.port, 80);
                assert_eq!(srv.target.to_ascii(), "web.default.svc.cluster.local.");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(reply.additionals.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_answers_and_udp_truncates() {
    let server = start(cluster("10.43.0.20"), vec![], Duration::from_millis(300)).await;

    let reply = tcp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.20"]);

    // Two questions on one connection.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for name in [
        "web.default.svc.cluster.local.",
        "big-3.big.default.svc.cluster.local.",
    ] {
        let query = query_message(name, RecordType::A, false);
        let reply =
            Message::from_vec(&tcp_exchange(&mut stream, &query.to_vec().unwrap()).await).unwrap();
        assert_eq!(reply.answers.len(), 1, "{name}");
    }

    // 60 endpoints: more than 512 bytes. UDP without EDNS: TC and no records.
    let reply = udp(server.addr, "big.default.svc.cluster.local.", RecordType::A).await;
    assert!(reply.metadata.truncation);
    assert!(reply.answers.is_empty());
    // With EDNS 4096 it fits.
    let query = query_message("big.default.svc.cluster.local.", RecordType::A, true);
    let reply =
        Message::from_vec(&udp_exchange(server.addr, &query.to_vec().unwrap()).await).unwrap();
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 60);
    assert!(reply.edns.is_some());
    // TCP: all of them.
    let reply = tcp(server.addr, "big.default.svc.cluster.local.", RecordType::A).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 60);
    let srv = tcp(
        server.addr,
        "_peer._tcp.big.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(srv.answers.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_queries() {
    let server = start(cluster("10.43.0.20"), vec![], Duration::from_millis(300)).await;
    // A header claiming one question, then garbage.
    let garbage = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
    ];
    let reply = Message::from_vec(&udp_exchange(server.addr, &garbage).await).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    let mut notify = query_message("web.default.svc.cluster.local.", RecordType::SOA, false);
    notify.metadata.op_code = OpCode::Notify;
    let reply =
        Message::from_vec(&udp_exchange(server.addr, &notify.to_vec().unwrap()).await).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_update_changes_answers() {
    let server = start(cluster("10.43.0.20"), vec![], Duration::from_millis(300)).await;
    let reply = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.20"]);

    server.handle.update(cluster("10.43.0.99"));
    let reply = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.99"]);
    let reply = tcp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.99"]);

    server.handle.update(DnsSnapshot::empty("cluster.local"));
    let reply = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_upstreams_and_servfails_when_silent() {
    let upstream = start(upstream_zone(), vec![], Duration::from_millis(300)).await;
    // A socket that never answers.
    let silent = std::net::UdpSocket::bind(LOCALHOST).unwrap();
    let silent_addr = silent.local_addr().unwrap();

    // Silent first, then the real one: the answer comes from the second.
    let server = start(
        cluster("10.43.0.20"),
        vec![silent_addr, upstream.addr],
        Duration::from_millis(300),
    )
    .await;
    for via_tcp in [false, true] {
        let reply = if via_tcp {
            tcp(server.addr, "api.ns.svc.upstream.test.", RecordType::A).await
        } else {
            udp(server.addr, "api.ns.svc.upstream.test.", RecordType::A).await
        };
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "tcp={via_tcp}"
        );
        assert_eq!(addresses(&reply), vec!["192.0.2.7"]);
        // Relayed as the upstream said it: authoritative there.
        assert!(reply.metadata.authoritative);
    }
    // The upstream's NXDOMAIN is relayed as well.
    let reply = udp(server.addr, "missing.upstream.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    // An ExternalName outside the cluster: the CNAME, then the target resolved upstream.
    let ext = udp(server.addr, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        ext.metadata.response_code,
        ResponseCode::NXDomain,
        "{ext:?}"
    );
    assert!(
        matches!(&ext.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "api.upstream.test.")
    );
    server.handle.update({
        let services = vec![service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "api.x.svc.upstream.test"}),
        )];
        DnsSnapshot::build(&services, &[], &[], "cluster.local")
    });
    let ext = udp(server.addr, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(ext.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ext.answers.len(), 2);
    assert_eq!(addresses(&ext), vec!["192.0.2.8"]);

    // Only the silent upstream: SERVFAIL after the timeout.
    let lonely = start(
        cluster("10.43.0.20"),
        vec![silent_addr],
        Duration::from_millis(300),
    )
    .await;
    let started = std::time::Instant::now();
    let reply = udp(lonely.addr, "api.ns.svc.upstream.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let reply = tcp(lonely.addr, "example.org.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // Cluster names are still answered without upstreams.
    let reply = udp(lonely.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.20"]);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_upstream_timeout_is_about_two_seconds() {
    let silent = std::net::UdpSocket::bind(LOCALHOST).unwrap();
    let server = DnsServer::bind(LOCALHOST, vec![silent.local_addr().unwrap()])
        .await
        .unwrap();
    let addr = server.local_addr();
    let _task = AbortOnDrop(server.spawn());
    let started = std::time::Instant::now();
    let reply = udp(addr, "example.org.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_nslookup_resolves_service() {
    let server = start(cluster("10.43.0.20"), vec![], Duration::from_millis(300)).await;
    let run = |name: &'static str, qtype: Option<&'static str>| {
        let target = format!("127.0.0.1:{}", server.addr.port());
        async move {
            let mut command = tokio::process::Command::new("busybox");
            command.arg("nslookup");
            if let Some(qtype) = qtype {
                command.arg(format!("-type={qtype}"));
            }
            let output = tokio::time::timeout(
                Duration::from_secs(20),
                command.arg(name).arg(&target).output(),
            )
            .await
            .expect("busybox nslookup in time")
            .expect("busybox (Debian package busybox-static) runs");
            eprintln!(
                "busybox nslookup {name}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout)
            );
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            )
        }
    };
    let (ok, out) = run("web.default.svc.cluster.local", None).await;
    assert!(ok, "{out}");
    assert!(out.contains("10.43.0.20"), "{out}");

    let (ok, out) = run("_http._tcp.web.default.svc.cluster.local", Some("srv")).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("0 100 80 web.default.svc.cluster.local"),
        "{out}"
    );

    let (ok, out) = run("10.43.0.20", None).await;
    assert!(ok, "{out}");
    assert!(out.contains("web.default.svc.cluster.local"), "{out}");

    let (ok, out) = run("nope.default.svc.cluster.local", None).await;
    assert!(!ok, "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");
}

#[test]
fn resolv_conf_nameservers() {
    let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver   8.8.8.8 \n\
                ;nameserver 1.1.1.1\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
    let got = upstreams_from_resolv_conf(text);
    let want: Vec<SocketAddr> = vec![
        "127.0.0.53:53".parse().unwrap(),
        "8.8.8.8:53".parse().unwrap(),
        "[fe80::1]:53".parse().unwrap(),
    ];
    assert_eq!(got, want);
}

/// The agent's pattern: one `Arc<DnsServer>` served on a task and updated from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_and_updated_through_an_arc() {
    let dns = std::sync::Arc::new(DnsServer::bind(LOCALHOST, vec![]).await.unwrap());
    let addr = dns.local_addr();
    let serving = AbortOnDrop(tokio::spawn({
        let dns = std::sync::Arc::clone(&dns);
        async move { dns.run().await }
    }));
    let reply = udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    dns.update(skiff_net::dns::build(&[], &[], &[], "cluster.local"));
    dns.update(cluster("10.43.0.21"));
    let reply = udp(addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec!["10.43.0.21"]);
    // Stopping the task stops the answers.
    drop(serving);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let socket = UdpSocket::bind(LOCALHOST).await.unwrap();
    let query = query_message("web.default.svc.cluster.local.", RecordType::A, false);
    socket
        .send_to(&query.to_vec().unwrap(), addr)
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let got = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    assert!(got.is_err(), "no answer after the task was aborted");
}
