//! Node-to-node RPC: the gRPC protocol of `proto/ironbucket/node/v1/node.proto` (tonic + prost,
//! compiled with protox), peer authentication with the cluster secret, pooled connections with
//! a deadline on every call, and the server plumbing. tonic and prost are confined to this crate;
//! the layers above see [`Peers`], [`Handler`] and plain bytes.

mod auth;
mod message;
mod peer_record;
mod protocol;
mod reach;
mod resolve;
mod server;
mod tls;

pub use auth::{Auth, Checked, Refused};
pub use message::{Incoming, Kind, Message, Method, decode_reply, encode};
use peer_record::Refusal;
pub use peer_record::{PeerClock, PeerClocks};
use protocol::PROTOCOL_HEADER;
pub use protocol::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, ProtocolRange};
pub use reach::Reach;
pub use resolve::{Resolver, parse_routes};
pub use server::serve;
pub use tls::{TlsFiles, TlsSource, generate as generate_certificates};

use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A stream of bulk data chunks; errors are messages for the other side.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<bytes::Bytes, String>> + Send>>;

#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod pb {
    tonic::include_proto!("ironbucket.node.v1");
}

/// What went wrong with a call to a peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("peer {addr} is unreachable: {why}")]
    Unreachable { addr: String, why: String },
    #[error("peer {addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("peer {addr} refused us: {why}")]
    Refused { addr: String, why: String },
    #[error("peer {addr} failed the request: {why}")]
    Remote { addr: String, why: String },
    #[error("invalid peer address {0:?}")]
    BadAddress(String),
    /// The peer does not know the message (it speaks an older protocol version).
    #[error("peer {addr} does not support the request: {why}")]
    Unsupported { addr: String, why: String },
}

impl Error {
    /// The peer could not be reached or did not answer (as opposed to answering with an error).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Timeout { .. })
    }
}

/// Settings of the RPC layer.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// This node's id, sent with every call.
    pub node_id: String,
    pub cluster_name: String,
    pub secret: String,
    /// Further secrets accepted from peers (and for the derived TLS CA) while the cluster secret
    /// is rotated; calls are made with `secret`.
    pub accepted_secrets: Vec<String>,
    /// Connections kept per peer (calls are spread over them).
    pub max_connections_per_node: usize,
    pub connect_timeout: Duration,
    /// Deadline of every call unless the caller gives another.
    pub request_timeout: Duration,
    /// Mutual TLS: the operator's CA and this node's certificate, or a CA derived from the
    /// secret; `None`: plaintext.
    pub tls: Option<TlsSource>,
    /// The node protocol versions this node speaks ([`ProtocolRange::CURRENT`]; tests set others).
    pub protocol: ProtocolRange,
}

/// Pooled, authenticated connections to the other nodes, by address (`host:port`).
#[derive(Clone)]
pub struct Peers {
    cfg: Arc<RpcConfig>,
    auth: Auth,
    tls: Arc<ClientTls>,
    pools: Arc<Mutex<HashMap<String, Arc<Pool>>>>,
    resolver: Resolver,
    /// The protocol versions each peer (by address) stated in its last ping reply.
    ranges: Arc<Mutex<HashMap<String, ProtocolRange>>>,
    /// Where the clock offsets that ping replies show are recorded.
    clocks: Option<PeerClocks>,
    /// Which peers answered their last ping.
    reach: Arc<Reach>,
}

/// The TLS material new connections use; with certificate files, read again when they change
/// (checked at most every [`tls::RELOAD_EVERY`], when a connection is made).
struct ClientTls {
    current: Mutex<Option<tls::Tls>>,
    seen: Mutex<Option<std::time::SystemTime>>,
    /// When the files are next checked (milliseconds since `started`).
    check_at: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

struct Pool {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Peers {
    /// Fails when the TLS files cannot be read.
    pub fn new(cfg: RpcConfig) -> Result<Self, String> {
        let auth = Auth::new(&cfg.cluster_name, &cfg.secret).with_accepted(&cfg.accepted_secrets);
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| t.load(&auth, &cfg.cluster_name, &cfg.node_id))
            .transpose()?;
        let seen = match &cfg.tls {
            Some(TlsSource::Files(f)) => f.stamp(),
            _ => None,
        };
        Ok(Self {
            cfg: Arc::new(cfg),
            auth,
            tls: Arc::new(ClientTls {
                current: Mutex::new(tls),
                seen: Mutex::new(seen),
                check_at: std::sync::atomic::AtomicU64::new(tls::RELOAD_EVERY.as_millis() as u64),
                started: std::time::Instant::now(),
            }),
            pools: Default::default(),
            resolver: Resolver::system(),
            ranges: Default::default(),
            clocks: None,
            reach: Default::default(),
        })
    }

    /// Records the clock offset every ping reply shows in `clocks` (the record incoming calls
    /// also go to), so a node learns how its clock compares from its own calls too.
    pub fn with_clocks(mut self, clocks: PeerClocks) -> Self {
        self.clocks = Some(clocks);
        self
    }

    /// Resolves peer names with `resolver` instead of the system's (tests).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Which peers answered their last ping ([`Peers::ping`] records every outcome).
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// Resolves a peer address the way new connections do.
    pub async fn resolve(&self, addr: &str) -> std::io::Result<Vec<SocketAddr>> {
        self.resolver.resolve(addr).await
    }

    pub fn config(&self) -> &RpcConfig {
        &self.cfg
    }

    /// With certificate files, reads them again when they changed (at most every
    /// [`tls::RELOAD_EVERY`]); new material drops the pooled connections, so the next calls
    /// connect with it. Files that do not load are logged and the old material kept.
    fn refresh_tls(&self) {
        let Some(TlsSource::Files(files)) = &self.cfg.tls else {
            return;
        };
        let state = &self.tls;
        let now = state.started.elapsed().as_millis() as u64;
        if now < state.check_at.load(Ordering::Relaxed) {
            return;
        }
        state
            .check_at
            .store(now + tls::RELOAD_EVERY.as_millis() as u64, Ordering::Relaxed);
        let stamp = files.stamp();
        let mut seen = state.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == stamp {
            return;
        }
        *seen = stamp;
        match files.load() {
            Ok(t) => {
                *state.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
                self.pools.lock().unwrap_or_else(|p| p.into_inner()).clear();
                tracing::info!(cert = %files.cert.display(), "node RPC client certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "node RPC certificate files changed but do not load; keeping the old ones")
            }
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        self.refresh_tls();
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(addr) {
            let i = p.next.fetch_add(1, Ordering::Relaxed) % p.channels.len();
            return Ok(p.channels[i].clone());
        }
        let tls = self.tls.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut ep =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|_| Error::BadAddress(addr.to_string()))?;
        if let Some(t) = &tls {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
            ep = ep
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(t.ca.clone())
                        .identity(t.identity.clone())
                        .domain_name(t.server_name.as_deref().unwrap_or(host)),
                )
                .map_err(|e| Error::Unreachable {
                    addr: addr.to_string(),
                    why: format!("TLS setup: {e}"),
                })?;
        }
        let ep = ep
            .connect_timeout(self.cfg.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        // Every (re)connection resolves the name again: a peer that moved is found.
        let connector = resolve::Connector {
            resolver: self.resolver.clone(),
            timeout: self.cfg.connect_timeout,
        };
        let n = self.cfg.max_connections_per_node.max(1);
        let pool = Arc::new(Pool {
            channels: (0..n)
                .map(|_| ep.connect_with_connector_lazy(connector.clone()))
                .collect(),
            next: AtomicUsize::new(1),
        });
        let ch = pool.channels[0].clone();
        pools.insert(addr.to_string(), pool);
        Ok(ch)
    }

    /// Forgets the connections to `addr` (after its address changed, say).
    pub fn forget(&self, addr: &str) {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
    }

    fn request<T>(&self, msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout.unwrap_or(self.cfg.request_timeout));
        if let Ok(v) = self.auth.token(&self.cfg.node_id).parse() {
            req.metadata_mut().insert(auth::HEADER, v);
        }
        if let Ok(v) = self.cfg.protocol.to_string().parse() {
            req.metadata_mut().insert(PROTOCOL_HEADER, v);
        }
        req
    }

    fn map_status(&self, addr: &str, s: tonic::Status, timeout: Option<Duration>) -> Error {
        status_error(addr, s, timeout.unwrap_or(self.cfg.request_timeout).as_millis() as u64)
    }

    pub async fn ping(&self, addr: &str, timeout: Option<Duration>) -> Result<pb::PingReply, Error> {
        let mut c = pb::node_client::NodeClient::new(self.channel(addr)?);
        let req = self.request(
            pb::PingRequest {
                from: self.cfg.node_id.clone(),
            },
            timeout,
        );
        let sent = ironbucket_types::now_millis();
        // The deadline covers making the connection too (tonic's applies once it is made).
        let limit = timeout.unwrap_or(self.cfg.request_timeout);
        let reply = match tokio::time::timeout(limit, c.ping(req)).await {
            Ok(r) => r.map(|r| r.into_inner()),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer before the deadline")),
        };
        // Unanswered pings make the peer unreachable; any answer (a refusal too) reaches it.
        let reply = match reply {
            Ok(r) => {
                self.reach.record(addr, None);
                r
            }
            Err(s) => {
                let e = self.map_status(addr, s, timeout);
                self.reach.record(addr, e.is_unavailable().then(|| e.to_string()));
                return Err(e);
            }
        };
        // Nodes before version 2 state nothing: they speak 1.
        let range = ProtocolRange {
            min: reply.protocol_min.max(1),
            max: reply.protocol_version.max(1),
        };
        // Its clock against the middle of the round trip (nodes before version 4 send none).
        if let Some(clocks) = &self.clocks
            && reply.now_ms > 0
        {
            let mid = sent + ironbucket_types::now_millis().saturating_sub(sent) / 2;
            clocks.record_offset(&reply.node_id, reply.now_ms as i64 - mid as i64, range);
        }
        self.ranges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.to_string(), range);
        Ok(reply)
    }

    /// The protocol versions `addr` stated in its last ping reply, if it answered one.
    pub fn known_range(&self, addr: &str) -> Option<ProtocolRange> {
        self.ranges.lock().unwrap_or_else(|p| p.into_inner()).get(addr).copied()
    }

    pub(crate) async fn envelope(
        &self,
        route: Route,
        addr: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, Error> {
        let mut c = pb::node_client::NodeClient::new(self.channel(addr)?);
        let req = self.request(
            pb::Envelope {
                kind: kind.to_string(),
                payload,
            },
            timeout,
        );
        let call = async {
            let r = match route {
                Route::Raft => c.raft(req).await,
                Route::Control => c.control(req).await,
            };
            r.map(|r| r.into_inner().payload)
                .map_err(|s| self.map_status(addr, s, timeout))
        };
        self.reach.or_lost(addr, call).await
    }
}

impl Peers {
    /// Streams `data` to the peer (first chunk: `kind` and `header`); returns its answer. The
    /// deadline covers the whole transfer.
    ///
    /// The future owns everything it needs (it can be spawned).
    pub(crate) fn push_raw(
        &self,
        addr: &str,
        kind: &str,
        header: Vec<u8>,
        data: DataStream,
        timeout: Option<Duration>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, Error>> {
        use futures::FutureExt;
        let channel = match self.channel(addr) {
            Ok(c) => c,
            Err(e) => return futures::future::ready(Err(e)).boxed(),
        };
        let mut c = pb::node_client::NodeClient::new(channel);
        let first = pb::Chunk {
            kind: kind.to_string(),
            header,
            data: Vec::new(),
        };
        // A local read error ends the stream early; the peer sees a short transfer and refuses.
        let rest = PushChunks {
            data: std::sync::Mutex::new(data),
            ended: false,
        };
        let stream = futures::stream::once(std::future::ready(first)).chain(rest);
        let req = self.request(stream, timeout);
        let addr = addr.to_string();
        let ms = timeout.unwrap_or(self.cfg.request_timeout).as_millis() as u64;
        let reach = self.reach.clone();
        async move {
            let call = async {
                match c.push(req).await {
                    Ok(r) => Ok(r.into_inner().payload),
                    Err(s) => Err(status_error(&addr, s, ms)),
                }
            };
            reach.or_lost(&addr, call).await
        }
        .boxed()
    }

    /// Asks the peer for bulk data and returns it as a stream of chunks.
    pub(crate) async fn pull_raw(
        &self,
        addr: &str,
        kind: &str,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<DataStream, Error> {
        let mut c = pb::node_client::NodeClient::new(self.channel(addr)?);
        let req = self.request(
            pb::Envelope {
                kind: kind.to_string(),
                payload,
            },
            timeout,
        );
        let call = async { c.pull(req).await.map_err(|s| self.map_status(addr, s, timeout)) };
        let stream = self.reach.or_lost(addr, call).await?.into_inner();
        Ok(Box::pin(stream.map(|r| {
            r.map(|c| bytes::Bytes::from(c.data))
                .map_err(|s| s.message().to_string())
        })))
    }
}

/// A gRPC status as this crate's error.
fn status_error(addr: &str, s: tonic::Status, ms: u64) -> Error {
    use tonic::Code;

    let why = s.message().to_string();
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => Error::Refused {
            addr: addr.to_string(),
            why,
        },
        Code::Unimplemented => Error::Unsupported {
            addr: addr.to_string(),
            why,
        },
        Code::DeadlineExceeded | Code::Cancelled => Error::Timeout {
            addr: addr.to_string(),
            ms,
        },
        Code::Unavailable | Code::Unknown if why.contains("transport") || why.contains("connect") => {
            Error::Unreachable {
                addr: addr.to_string(),
                why,
            }
        }
        Code::Unavailable => Error::Unreachable {
            addr: addr.to_string(),
            why,
        },
        _ => Error::Remote {
            addr: addr.to_string(),
            why,
        },
    }
}

/// The chunks of a push after the first, ending at the first read error. `Sync` (tonic's
/// client-streaming future holds a reference to its stream across awaits, and must be `Send`
/// to be spawned): the source sits in a mutex that is only ever reached through `&mut`.
struct PushChunks {
    data: std::sync::Mutex<DataStream>,
    ended: bool,
}

impl Stream for PushChunks {
    type Item = pb::Chunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<pb::Chunk>> {
        use std::task::Poll;
        let me = self.get_mut();
        if me.ended {
            return Poll::Ready(None);
        }
        let data = me.data.get_mut().unwrap_or_else(|p| p.into_inner());
        match data.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(pb::Chunk {
                kind: String::new(),
                header: Vec::new(),
                data: b.to_vec(),
            })),
            Poll::Ready(_) => {
                me.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Which envelope method a call goes to.
pub(crate) enum Route {
    Raft,
    Control,
}

/// What a node serves to its peers. The kind of every call is known and allowed by the agreed
/// protocol version before the handler sees it.
#[tonic::async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn ping(&self, from: &str) -> pb::PingReply;
    /// A Raft or control message; the error text goes back to the caller.
    async fn call(&self, call: Incoming, payload: Vec<u8>) -> Result<Vec<u8>, String>;
    /// Bulk data pushed by a peer.
    async fn push(&self, call: Incoming, _header: Vec<u8>, _data: DataStream) -> Result<Vec<u8>, String> {
        Err(format!("this node takes no bulk data of kind {}", call.kind))
    }
    /// Bulk data a peer asks for.
    async fn pull(&self, call: Incoming, _payload: Vec<u8>) -> Result<DataStream, String> {
        Err(format!("this node serves no bulk data of kind {}", call.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_ranges_agree_on_the_newest_shared_version() {
        let r = |min, max| ProtocolRange { min, max };
        assert_eq!(ProtocolRange::parse("2"), Some(r(2, 2)));
        assert_eq!(ProtocolRange::parse("1-3"), Some(r(1, 3)));
        for bad in ["", "0", "3-2", "x", "1-", "-1"] {
            assert_eq!(ProtocolRange::parse(bad), None, "{bad:?}");
        }
        assert_eq!(r(1, 2).to_string(), "1-2");
        assert_eq!(r(2, 2).to_string(), "2");
        let ours = r(1, 2);
        assert_eq!(ours.agree(r(1, 1)), Ok(1), "an older node is spoken to in its version");
        assert_eq!(ours.agree(r(2, 3)), Ok(2), "a newer node that still speaks ours");
        assert!(ours.agree(r(3, 4)).unwrap_err().contains("all newer"));
        assert!(r(3, 4).agree(ours).unwrap_err().contains("all older"));
        assert_eq!(
            ProtocolRange::CURRENT.agree(ProtocolRange::CURRENT),
            Ok(PROTOCOL_VERSION)
        );
    }

    struct Echo;

    #[tonic::async_trait]
    impl Handler for Echo {
        async fn ping(&self, from: &str) -> pb::PingReply {
            pb::PingReply {
                node_id: "server".into(),
                cluster_name: format!("hello {from}"),
                cluster_id: String::new(),
                advertise: String::new(),
                incarnation: String::new(),
                protocol_version: PROTOCOL_VERSION,
                protocol_min: MIN_PROTOCOL_VERSION,
                now_ms: 0,
            }
        }
        /// Vote: the payload reversed (or a failure, or a slow answer, as asked).
        async fn call(&self, call: Incoming, payload: Vec<u8>) -> Result<Vec<u8>, String> {
            assert_eq!(call.from, "client");
            assert_eq!(call.version, PROTOCOL_VERSION);
            if payload == b"fail" {
                return Err("no".into());
            }
            if payload == b"slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(format!("{}:{}:", call.kind, call.incarnation)
                .into_bytes()
                .into_iter()
                .chain(payload.into_iter().rev())
                .collect())
        }
        /// Counts the bytes and sums them, so the caller can check what arrived.
        async fn push(&self, call: Incoming, header: Vec<u8>, mut data: DataStream) -> Result<Vec<u8>, String> {
            let (mut n, mut sum) = (0u64, 0u64);
            while let Some(b) = data.next().await {
                let b = b?;
                n += b.len() as u64;
                sum = b
                    .iter()
                    .fold(sum, |s, x| s.wrapping_mul(31).wrapping_add(u64::from(*x)));
            }
            Ok(format!("{}:{}:{n}:{sum}", call.kind, String::from_utf8_lossy(&header)).into_bytes())
        }
        async fn pull(&self, _call: Incoming, payload: Vec<u8>) -> Result<DataStream, String> {
            let chunks: u64 = String::from_utf8_lossy(&payload)
                .parse()
                .map_err(|_| "bad count".to_string())?;
            Ok(Box::pin(futures::stream::iter(
                (0..chunks).map(|i| Ok(bytes::Bytes::from(vec![(i % 251) as u8; 1 << 20]))),
            )))
        }
    }

    /// A raw Raft call (the typed ones are `raft_call`).
    async fn vote(p: &Peers, addr: &str, payload: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
        p.envelope(Route::Raft, addr, "vote:inc-1", payload.to_vec(), timeout)
            .await
    }

    fn cfg(secret: &str, cluster: &str) -> RpcConfig {
        RpcConfig {
            node_id: "client".into(),
            cluster_name: cluster.into(),
            secret: secret.into(),
            accepted_secrets: Vec::new(),
            max_connections_per_node: 2,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            tls: None,
            protocol: ProtocolRange::CURRENT,
        }
    }

    /// A server with `server_cfg` on 127.0.0.1 (echo handler): its address (`host` and the
    /// port), what stops it, and its task.
    async fn spawn_server(
        server_cfg: RpcConfig,
        host: &str,
    ) -> (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), String>>,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("{host}:{}", l.local_addr().unwrap().port());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(l, &server_cfg, Arc::new(Echo), PeerClocks::default(), async {
                let _ = rx.await;
            })
            .await
        });
        (addr, tx, task)
    }

    #[tokio::test]
    async fn authenticated_calls_deadlines_and_refusals() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server_cfg = cfg("s3cret-s3cret", "c1");
        let clocks = PeerClocks::default();
        let server_clocks = clocks.clone();
        let task = tokio::spawn(async move {
            serve(l, &server_cfg, Arc::new(Echo), server_clocks, async {
                let _ = rx.await;
            })
            .await
        });
        let good = Peers::new(cfg("s3cret-s3cret", "c1")).unwrap();
        assert_eq!(good.ping(&addr, None).await.unwrap().cluster_name, "hello client");
        for _ in 0..3 {
            assert_eq!(vote(&good, &addr, b"abc", None).await.unwrap(), b"vote:inc-1:cba");
        }
        assert!(matches!(
            vote(&good, &addr, b"fail", None).await,
            Err(Error::Remote { .. })
        ));
        let slow = vote(&good, &addr, b"slow", Some(Duration::from_millis(200))).await;
        assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");

        let wrong_secret = Peers::new(cfg("other-secret", "c1")).unwrap();
        assert!(matches!(
            wrong_secret.ping(&addr, None).await,
            Err(Error::Refused { .. })
        ));
        let other_cluster = Peers::new(cfg("s3cret-s3cret", "c2")).unwrap();
        assert!(matches!(
            other_cluster.ping(&addr, None).await,
            Err(Error::Refused { .. })
        ));

        // Bulk data both ways, 64 MiB in 1 MiB chunks, streamed (never whole in memory).
        let sent: Vec<u64> = (0..64).collect();
        let body: DataStream = Box::pin(futures::stream::iter(
            sent.iter()
                .map(|i| Ok(bytes::Bytes::from(vec![(*i % 251) as u8; 1 << 20])))
                .collect::<Vec<_>>(),
        ));
        let want_sum = sent.iter().fold(0u64, |s, i| {
            (0..1 << 20).fold(s, |s, _| s.wrapping_mul(31).wrapping_add(*i % 251))
        });
        let answer = good
            .push_raw(&addr, "object.put", b"h".to_vec(), body, None)
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            format!("object.put:h:{}:{want_sum}", 64u64 << 20)
        );
        let mut pulled = good.pull_raw(&addr, "object.get", b"64".to_vec(), None).await.unwrap();
        let mut n = 0u64;
        let mut idx = 0u64;
        while let Some(chunk) = pulled.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.iter().all(|b| u64::from(*b) == idx % 251));
            n += chunk.len() as u64;
            idx += 1;
        }
        assert_eq!(n, 64 << 20);
        assert!(
            good.pull_raw(&addr, "object.get", b"x".to_vec(), None).await.is_err(),
            "a refusal is an error"
        );
        // A kind this node does not know, or one on the wrong method, is refused as unsupported
        // and counted against the caller.
        let unknown = good.envelope(Route::Control, &addr, "object.scrub", vec![], None).await;
        assert!(matches!(unknown, Err(Error::Unsupported { .. })), "{unknown:?}");
        let misrouted = good.envelope(Route::Raft, &addr, "object.op:x", vec![], None).await;
        assert!(matches!(misrouted, Err(Error::Unsupported { .. })), "{misrouted:?}");
        assert_eq!(clocks.snapshot()["client"].refused_protocol_calls, 2);

        let _ = tx.send(());
        task.await.unwrap().unwrap();
        let gone = good.ping(&addr, Some(Duration::from_millis(500))).await;
        assert!(gone.as_ref().is_err_and(Error::is_unavailable), "{gone:?}");
    }

    #[tokio::test]
    async fn mutual_tls_admits_only_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec!["server".to_string(), "client".to_string()];
        generate_certificates(&dir.path().join("good"), "c1", &nodes, &[]).unwrap();
        generate_certificates(&dir.path().join("evil"), "c1", &nodes, &[]).unwrap();
        let files = |set: &str, node: &str| {
            TlsSource::Files(TlsFiles {
                cert: dir.path().join(set).join(format!("{node}.pem")),
                key: dir.path().join(set).join(format!("{node}.key")),
                ca: dir.path().join(set).join("ca.pem"),
            })
        };
        let mut server_cfg = cfg("s3cret-s3cret", "c1");
        server_cfg.tls = Some(files("good", "server"));
        let (addr, tx, task) = spawn_server(server_cfg, "127.0.0.1").await;
        let mut c = cfg("s3cret-s3cret", "c1");
        c.tls = Some(files("good", "client"));
        let good = Peers::new(c).unwrap();
        assert_eq!(vote(&good, &addr, b"ab", None).await.unwrap(), b"vote:inc-1:ba");
        // A certificate from another CA (right secret and all) cannot connect.
        let mut c = cfg("s3cret-s3cret", "c1");
        c.tls = Some(files("evil", "client"));
        let stranger = Peers::new(c).unwrap();
        assert!(stranger.ping(&addr, Some(Duration::from_secs(2))).await.is_err());
        // Nor can a plain-text client.
        let plain = Peers::new(cfg("s3cret-s3cret", "c1")).unwrap();
        assert!(plain.ping(&addr, Some(Duration::from_secs(2))).await.is_err());
        let _ = tx.send(());
        task.await.unwrap().unwrap();
        let mut bad = cfg("s", "c");
        bad.tls = Some(TlsSource::Files(TlsFiles {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("missing.key"),
            ca: dir.path().join("missing-ca.pem"),
        }));
        assert!(Peers::new(bad).err().unwrap().contains("cannot read"));
    }

    /// Renewed certificate files (here: of another CA) are picked up while running, by the
    /// server for new connections and by a client for its next connections.
    #[tokio::test]
    async fn certificate_files_are_reloaded_on_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec!["server".to_string(), "client".to_string()];
        generate_certificates(&dir.path().join("one"), "c1", &nodes, &[]).unwrap();
        generate_certificates(&dir.path().join("two"), "c1", &nodes, &[]).unwrap();
        let install = |set: &str, node: &str| {
            let to = dir.path().join(format!("live-{node}"));
            std::fs::create_dir_all(&to).unwrap();
            for (from, name) in [
                (format!("{node}.pem"), "node.pem"),
                (format!("{node}.key"), "node.key"),
                ("ca.pem".into(), "ca.pem"),
            ] {
                std::fs::copy(dir.path().join(set).join(from), to.join(name)).unwrap();
            }
            TlsSource::Files(TlsFiles {
                cert: to.join("node.pem"),
                key: to.join("node.key"),
                ca: to.join("ca.pem"),
            })
        };
        let fixed = |set: &str| {
            let mut c = cfg("s3cret-s3cret", "c1");
            c.tls = Some(TlsSource::Files(TlsFiles {
                cert: dir.path().join(set).join("client.pem"),
                key: dir.path().join(set).join("client.key"),
                ca: dir.path().join(set).join("ca.pem"),
            }));
            Peers::new(c).unwrap()
        };
        let mut server_cfg = cfg("s3cret-s3cret", "c1");
        server_cfg.tls = Some(install("one", "server"));
        let (addr, tx, task) = spawn_server(server_cfg, "127.0.0.1").await;
        let mut c = cfg("s3cret-s3cret", "c1");
        c.tls = Some(install("one", "client"));
        let client = Peers::new(c).unwrap();
        let short = Some(Duration::from_secs(2));
        assert_eq!(vote(&client, &addr, b"ab", None).await.unwrap(), b"vote:inc-1:ba");
        assert!(fixed("two").ping(&addr, short).await.is_err());

        // The server's files are renewed: within a few checks it serves the new ones.
        install("two", "server");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while fixed("two").ping(&addr, short).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the server never served the renewed files"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            fixed("one").ping(&addr, short).await.is_err(),
            "the old CA is still trusted"
        );
        // The client's files are renewed too: its next connections use them.
        install("two", "client");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while client.ping(&addr, short).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the client never used the renewed files"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Files that do not load leave the server on the ones it has.
        std::fs::write(dir.path().join("live-server").join("node.pem"), "not a certificate").unwrap();
        tokio::time::sleep(tls::RELOAD_EVERY + Duration::from_secs(1)).await;
        assert!(fixed("two").ping(&addr, short).await.is_ok());
        let _ = tx.send(());
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn tls_derived_from_the_secret_admits_only_holders_of_the_secret() {
        let derived = |secret: &str, node: &str| {
            let mut c = cfg(secret, "c1");
            c.node_id = node.into();
            c.tls = Some(TlsSource::FromSecret);
            c
        };
        // Dialled by a name no certificate carries: a derived CA's certificates name the cluster.
        let (addr, tx, task) = spawn_server(derived("s3cret-s3cret", "server"), "localhost").await;
        // Each node derives the same CA and signs its own certificate: they talk.
        let good = Peers::new(derived("s3cret-s3cret", "client")).unwrap();
        assert_eq!(vote(&good, &addr, b"ab", None).await.unwrap(), b"vote:inc-1:ba");
        // Another secret derives another CA: the handshake fails before any call.
        let stranger = Peers::new(derived("other-secret-xx", "client")).unwrap();
        let r = stranger.ping(&addr, Some(Duration::from_secs(2))).await;
        assert!(r.as_ref().is_err_and(Error::is_unavailable), "{r:?}");
        // Nor can a plain-text client connect.
        let plain = Peers::new(cfg("s3cret-s3cret", "c1")).unwrap();
        assert!(plain.ping(&addr, Some(Duration::from_secs(2))).await.is_err());
        let _ = tx.send(());
        task.await.unwrap().unwrap();
    }
}
