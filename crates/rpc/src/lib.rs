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
                // The next call makes new connections: one that stalled while packets were
                // dropped (a partition) would otherwise wait out TCP's retransmission backoff,
                // seconds after the network healed, before carrying anything again.
                if e.is_unavailable() {
                    self.forget(addr);
                }
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
mod tests;
