//! The node's DNS server: UDP and TCP on one address, answers the cluster domain from the
//! current [`DnsSnapshot`], forwards everything else to the upstream resolvers.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use super::records::{DnsRecord, DnsSnapshot, Lookup, RecordData};

/// The cluster domain of the snapshot a server starts with.
const DEFAULT_DOMAIN: &str = "cluster.local";

/// How long each upstream gets to answer before the next one is tried.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The UDP payload size this server advertises in EDNS and accepts.
const EDNS_PAYLOAD: u16 = 1232;

/// The largest datagram read from a client or an upstream.
const MAX_DATAGRAM: usize = 4096;

/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// At most this many queries are in flight; further UDP queries are dropped (clients retry).
const MAX_IN_FLIGHT: usize = 1024;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error("binding DNS {transport} socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// "UDP" or "TCP".
        transport: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("DNS socket on {addr}: {context}: {source}")]
    Socket {
        /// The server's address.
        addr: SocketAddr,
        /// What was being done.
        context: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// A DNS message could not be encoded or a name could not be represented.
    #[error("DNS message for {name}: {source}")]
    Message {
        /// The name concerned.
        name: String,
        /// The cause.
        source: ProtoError,
    },
}

/// Settings and data shared between the serving tasks and [`DnsHandle`]s.
#[derive(Debug)]
struct Shared {
    snapshot: RwLock<Arc<DnsSnapshot>>,
    upstreams: RwLock<Vec<SocketAddr>>,
    timeout: RwLock<Duration>,
}

impl Shared {
    fn snapshot(&self) -> Arc<DnsSnapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        self.upstreams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn timeout(&self) -> Duration {
        *self.timeout.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bound DNS server: [`DnsServer::run`] (on `&self`, so an `Arc<DnsServer>` can be served
/// and updated at once) or [`DnsServer::spawn`] serve it. Dropping it closes the sockets.
#[derive(Debug)]
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
}

/// A cloneable handle that changes a running server's data and upstreams.
#[derive(Debug, Clone)]
pub struct DnsHandle {
    shared: Arc<Shared>,
}

impl DnsHandle {
    /// Replaces the records served, atomically: each query sees the old or the new snapshot.
    pub fn update(&self, snapshot: DnsSnapshot) {
        *self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<DnsSnapshot> {
        self.shared.snapshot()
    }

    /// Replaces the upstream resolvers (tried in order).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self
            .shared
            .upstreams
            .write()
            .unwrap_or_else(PoisonError::into_inner) = upstreams;
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0 picks one port free for both) and starts with an
    /// empty `cluster.local` snapshot. Must run inside a tokio runtime.
    pub async fn bind(addr: SocketAddr, upstreams: Vec<SocketAddr>) -> Result<DnsServer, DnsError> {
        // With port 0 the UDP port picked may be taken for TCP: try a few.
        let attempts = if addr.port() == 0 { 16 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(addr)
                .await
                .map_err(|source| DnsError::Bind {
                    addr,
                    transport: "UDP",
                    source,
                })?;
            let local = udp.local_addr().map_err(|source| DnsError::Socket {
                addr,
                context: "reading the local address",
                source,
            })?;
            match TcpListener::bind(local).await {
                Ok(tcp) => {
                    return Ok(DnsServer {
                        udp: Arc::new(udp),
                        tcp,
                        local,
                        shared: Arc::new(Shared {
                            snapshot: RwLock::new(Arc::new(DnsSnapshot::empty(DEFAULT_DOMAIN))),
                            upstreams: RwLock::new(upstreams),
                            timeout: RwLock::new(DEFAULT_UPSTREAM_TIMEOUT),
                        }),
                    });
                }
                Err(source) => {
                    last = Some(DnsError::Bind {
                        addr: local,
                        transport: "TCP",
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(DnsError::Bind {
            addr,
            transport: "TCP",
            source: io::Error::from(io::ErrorKind::AddrInUse),
        }))
    }

    /// The address bound (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sets how long each upstream gets to answer (default [`DEFAULT_UPSTREAM_TIMEOUT`]).
    pub fn with_upstream_timeout(self, timeout: Duration) -> DnsServer {
        *self
            .shared
            .timeout
            .write()
            .unwrap_or_else(PoisonError::into_inner) = timeout;
        self
    }

    /// A handle to update the server's data while it runs.
    pub fn handle(&self) -> DnsHandle {
        DnsHandle {
            shared: self.shared.clone(),
        }
    }

    /// Replaces the records served (see [`DnsHandle::update`]).
    pub fn update(&self, snapshot: DnsSnapshot) {
        self.handle().update(snapshot);
    }

    /// Serves until the future is dropped (or its task aborted); queries in flight are
    /// cancelled with it. Never returns otherwise.
    pub async fn run(&self) {
        let udp = &self.udp;
        let shared = &self.shared;
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                received = udp.recv_from(&mut buf) => match received {
                    Ok((len, peer)) => {
                        if tasks.len() >= MAX_IN_FLIGHT {
                            tracing::debug!(%peer, "DNS: too many queries in flight, dropping one");
                            continue;
                        }
                        let query = buf[..len].to_vec();
                        let udp = udp.clone();
                        let shared = shared.clone();
                        tasks.spawn(async move {
                            if let Some(reply) = handle(&shared, &query, Transport::Udp).await {
                                if let Err(error) = udp.send_to(&reply, peer).await {
                                    tracing::debug!(%peer, %error, "DNS: sending a UDP reply");
                                }
                            }
                        });
                    }
                    Err(error) => tracing::debug!(%error, "DNS: receiving on UDP"),
                },
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, _)) => {
                        if tasks.len() >= MAX_IN_FLIGHT {
                            continue;
                        }
                        tasks.spawn(serve_tcp(stream, shared.clone()));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "DNS: accepting a TCP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }

    /// Runs the server on a new tokio task (see [`DnsServer::run`]); aborting the task stops it.
    /// Must be called inside a tokio runtime.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }
}

/// The nameservers of a `resolv.conf`, port 53, in order. Loopback nameservers (systemd's
/// 127.0.0.53) are kept: the server runs in the node's network namespace, where they answer.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let word = words.next()?;
            // Drop an IPv6 zone (`fe80::1%eth0`): SocketAddr has no room for its name.
            let addr = word.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

async fn serve_tcp(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return,
        };
        let mut query = vec![0u8; len];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = handle(&shared, &query, Transport::Tcp).await else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// A reply with only a header (and the question, when known).
fn error_reply(request: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = code;
    reply.add_queries(request.queries.iter().cloned());
    reply.to_vec().ok()
}

/// The reply to one query message, `None` when nothing should be sent back.
async fn handle(shared: &Shared, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = match Message::from_vec(bytes) {
        Ok(request) => request,
        Err(_) if bytes.len() >= 12 && bytes[2] & 0x80 == 0 => {
            let id = u16::from_be_bytes([bytes[0], bytes[1]]);
            return error_reply(
                &Message::new(id, MessageType::Query, OpCode::Query),
                ResponseCode::FormErr,
            );
        }
        Err(_) => return None,
    };
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    if request.metadata.op_code != OpCode::Query {
        return error_reply(&request, ResponseCode::NotImp);
    }
    let [query] = request.queries.as_slice() else {
        return error_reply(&request, ResponseCode::FormErr);
    };
    let snapshot = shared.snapshot();
    let lookup = if query.query_class() == DNSClass::IN {
        snapshot.lookup(&query.name().to_ascii(), query.query_type())
    } else {
        Lookup::NotAuthoritative
    };
    match lookup {
        Lookup::NotAuthoritative => {
            match forward(shared, bytes, request.metadata.id, transport).await {
                Some(reply) => Some(reply),
                None => error_reply(&request, ResponseCode::ServFail),
            }
        }
        Lookup::Authoritative(answer) => {
            match authoritative_reply(shared, &request, query, answer, transport).await {
                Ok(reply) => Some(reply),
                Err(error) => {
                    tracing::warn!(%error, "DNS: building an answer");
                    error_reply(&request, ResponseCode::ServFail)
                }
            }
        }
    }
}

fn name(text: &str) -> Result<Name, DnsError> {
    let fqdn = if text.ends_with('.') {
        text.to_string()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&fqdn).map_err(|source| DnsError::Message { name: fqdn, source })
}

/// A wire record; records owned by the question's name keep the question's spelling.
fn wire_record(record: &DnsRecord, query: &Query, qname: &str) -> Result<Record, DnsError> {
    let owner = if record.name == qname {
        query.name().clone()
    } else {
        name(&record.name)?
    };
    let data = match &record.data {
        RecordData::A(ip) => RData::A(A(*ip)),
        RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        RecordData::Cname(target) => RData::CNAME(CNAME(name(target)?)),
        RecordData::Ptr(target) => RData::PTR(PTR(name(target)?)),
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        RecordData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => RData::SOA(SOA::new(
            name(mname)?,
            name(rname)?,
            *serial,
            *refresh,
            *retry,
            *expire,
            *minimum,
        )),
    };
    Ok(Record::from_rdata(owner, record.ttl, data))
}

async fn authoritative_reply(
    shared: &Shared,
    request: &Message,
    query: &Query,
    answer: super::records::Answer,
    transport: Transport,
) -> Result<Vec<u8>, DnsError> {
    let qname = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = if answer.nxdomain {
        ResponseCode::NXDomain
    } else {
        ResponseCode::NoError
    };
    reply.add_query(query.clone());
    for record in &answer.answers {
        reply.add_answer(wire_record(record, query, &qname)?);
    }
    for record in &answer.authority {
        reply.add_authority(wire_record(record, query, &qname)?);
    }
    for record in &answer.additionals {
        reply.add_additional(wire_record(record, query, &qname)?);
    }

    // An ExternalName pointing outside the cluster: resolve the target upstream, as CoreDNS
    // does, because stub resolvers do not chase a CNAME alone.
    if let Some(target) = answer
        .external_target
        .as_deref()
        .filter(|_| query.query_type() != RecordType::CNAME)
    {
        let mut upstream_query = Message::query();
        upstream_query.metadata.recursion_desired = true;
        upstream_query.add_query(Query::query(name(target)?, query.query_type()));
        let id = upstream_query.metadata.id;
        let bytes = upstream_query
            .to_vec()
            .map_err(|source| DnsError::Message {
                name: target.to_string(),
                source,
            })?;
        if let Some(upstream_reply) = forward(shared, &bytes, id, Transport::Udp)
            .await
            .and_then(|b| Message::from_vec(&b).ok())
        {
            reply.metadata.authoritative = false;
            reply.metadata.response_code = upstream_reply.metadata.response_code;
            reply.add_answers(upstream_reply.answers);
        }
    }

    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    let encode = |message: &Message| {
        message.to_vec().map_err(|source| DnsError::Message {
            name: qname.clone(),
            source,
        })
    };
    let bytes = encode(&reply)?;
    let limit = match transport {
        Transport::Udp => usize::from(request.max_payload().min(MAX_DATAGRAM as u16)),
        Transport::Tcp => usize::from(u16::MAX),
    };
    if bytes.len() > limit {
        return encode(&reply.truncate());
    }
    Ok(bytes)
}

/// Sends `bytes` (a query with id `id`) to each upstream in turn; the first reply's bytes.
async fn forward(shared: &Shared, bytes: &[u8], id: u16, transport: Transport) -> Option<Vec<u8>> {
    let timeout = shared.timeout();
    for upstream in shared.upstreams() {
        let exchange = async {
            match transport {
                Transport::Udp => exchange_udp(upstream, bytes, id).await,
                Transport::Tcp => exchange_tcp(upstream, bytes, id).await,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(error)) => tracing::debug!(%upstream, %error, "DNS: upstream failed"),
            Err(_) => tracing::debug!(%upstream, "DNS: upstream timed out"),
        }
    }
    None
}

/// Whether `reply` is an answer to the query with id `id`.
fn answers(reply: &[u8], id: u16) -> bool {
    reply.len() >= 12 && u16::from_be_bytes([reply[0], reply[1]]) == id && reply[2] & 0x80 != 0
}

async fn exchange_udp(upstream: SocketAddr, bytes: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let any: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let len = socket.recv(&mut buf).await?;
        if answers(&buf[..len], id) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, bytes: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut reply = vec![0u8; len];
    stream.read_exact(&mut reply).await?;
    if !answers(&reply, id) {
        return Err(io::Error::other("reply with another id"));
    }
    Ok(reply)
}
