//! The server side of node RPC: the gRPC service that checks every call's credentials and
//! protocol version and hands it to the node's [`Handler`], served on a listener until shutdown;
//! with certificate files, a changed certificate is served to new connections without a restart.

use super::*;

/// What the interceptor learned of a call: who sent it and the version the two agreed.
#[derive(Clone)]
struct Agreed {
    node: String,
    version: u32,
}

struct Service {
    handler: Arc<dyn Handler>,
    clocks: PeerClocks,
    ours: ProtocolRange,
}

impl Service {
    /// The call's kind, if this node knows it on `method` and the agreed version has it.
    /// Anything else is refused (UNIMPLEMENTED), logged and counted as a protocol refusal.
    #[allow(clippy::result_large_err)] // tonic's handlers answer with a Status.
    fn incoming(&self, method: Method, name: &str, ext: &http::Extensions) -> Result<Incoming, tonic::Status> {
        let agreed = ext.get::<Agreed>().cloned().unwrap_or(Agreed {
            node: String::new(),
            version: MIN_PROTOCOL_VERSION,
        });
        let (name, incarnation) = match method {
            Method::Raft => name.split_once(':').unwrap_or((name, "")),
            _ => (name, ""),
        };
        let why = match Kind::parse(method, name) {
            Some(kind) if kind.since() <= agreed.version => {
                return Ok(Incoming {
                    kind,
                    version: agreed.version,
                    from: agreed.node,
                    incarnation: incarnation.to_string(),
                });
            }
            Some(kind) => format!(
                "message kind {kind} needs node protocol {} but the two nodes agreed on {}",
                kind.since(),
                agreed.version
            ),
            None => format!(
                "unknown message kind {name:?} on {method:?}: this node speaks node protocol {}",
                self.ours
            ),
        };
        let refused = self.clocks.refused_kind(&agreed.node);
        if refused % 100 == 1 {
            tracing::warn!(node = %agreed.node, refused, "refused a node RPC call: {why}");
        }
        Err(tonic::Status::unimplemented(why))
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for Service {
    async fn ping(
        &self,
        req: tonic::Request<pb::PingRequest>,
    ) -> Result<tonic::Response<pb::PingReply>, tonic::Status> {
        Ok(tonic::Response::new(self.handler.ping(&req.into_inner().from).await))
    }

    async fn raft(&self, req: tonic::Request<pb::Envelope>) -> Result<tonic::Response<pb::Envelope>, tonic::Status> {
        let call = self.incoming(Method::Raft, &req.get_ref().kind, req.extensions())?;
        let e = req.into_inner();
        match self.handler.call(call, e.payload).await {
            Ok(payload) => Ok(tonic::Response::new(pb::Envelope { kind: e.kind, payload })),
            Err(why) => Err(tonic::Status::internal(why)),
        }
    }

    async fn push(
        &self,
        req: tonic::Request<tonic::Streaming<pb::Chunk>>,
    ) -> Result<tonic::Response<pb::Envelope>, tonic::Status> {
        let ext = req.extensions().clone();
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::invalid_argument("an empty push"))?;
        let call = self.incoming(Method::Push, &first.kind, &ext)?;
        let kind = first.kind.clone();
        let head_data = bytes::Bytes::from(first.data);
        let rest = stream.map(|r| {
            r.map(|c| bytes::Bytes::from(c.data))
                .map_err(|s| s.message().to_string())
        });
        // The first chunk's data, when it carries any, comes first (a sender may put all of its
        // data after the header; then there is nothing to prepend).
        let data: DataStream = if head_data.is_empty() {
            Box::pin(rest)
        } else {
            Box::pin(futures::stream::once(std::future::ready(Ok(head_data))).chain(rest))
        };
        match self.handler.push(call, first.header, data).await {
            Ok(payload) => Ok(tonic::Response::new(pb::Envelope { kind, payload })),
            Err(why) => Err(tonic::Status::failed_precondition(why)),
        }
    }

    type PullStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, tonic::Status>> + Send>>;

    async fn pull(
        &self,
        req: tonic::Request<pb::Envelope>,
    ) -> Result<tonic::Response<Self::PullStream>, tonic::Status> {
        let call = self.incoming(Method::Pull, &req.get_ref().kind, req.extensions())?;
        let e = req.into_inner();
        let data = self
            .handler
            .pull(call, e.payload)
            .await
            .map_err(tonic::Status::failed_precondition)?;
        // tonic's streaming signature fixes the error type.
        #[allow(clippy::result_large_err)]
        let out = data.map(|r| {
            r.map(|b| pb::Chunk {
                kind: String::new(),
                header: Vec::new(),
                data: b.to_vec(),
            })
            .map_err(tonic::Status::aborted)
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn control(&self, req: tonic::Request<pb::Envelope>) -> Result<tonic::Response<pb::Envelope>, tonic::Status> {
        let call = self.incoming(Method::Control, &req.get_ref().kind, req.extensions())?;
        let e = req.into_inner();
        match self.handler.call(call, e.payload).await {
            Ok(payload) => Ok(tonic::Response::new(pb::Envelope { kind: e.kind, payload })),
            Err(why) => Err(tonic::Status::failed_precondition(why)),
        }
    }
}

/// Serves the node protocol on `listener` until `shutdown` resolves. Every call must carry a
/// valid token for this cluster; others are refused and logged. The callers' clock offsets go
/// to `clocks`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: &RpcConfig,
    handler: Arc<dyn Handler>,
    clocks: PeerClocks,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let auth = Auth::new(&cfg.cluster_name, &cfg.secret).with_accepted(&cfg.accepted_secrets);
    let ours = cfg.protocol;
    let svc_clocks = clocks.clone();
    // tonic's interceptor signature fixes the error type.
    #[allow(clippy::result_large_err)]
    let interceptor = move |mut req: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
        let token = req.metadata().get(auth::HEADER).and_then(|v| v.to_str().ok());
        // A caller that states no version speaks version 1 (before versions were exchanged).
        let theirs = match req.metadata().get(PROTOCOL_HEADER) {
            None => Some(ProtocolRange { min: 1, max: 1 }),
            Some(v) => v.to_str().ok().and_then(ProtocolRange::parse),
        };
        match auth.check(token) {
            Ok(c) => {
                let agreed = theirs
                    .ok_or_else(|| "its protocol version statement is malformed".to_string())
                    .and_then(|t| ours.agree(t));
                if let Err(why) = &agreed {
                    let refused = clocks.record(&c, theirs, Refusal::Protocol);
                    // A refused peer retries; log its first refusal and then every hundredth.
                    if refused % 100 == 1 {
                        tracing::warn!(node = %c.node, %ours, refused, "refused node RPC calls: {why}");
                    }
                    return Err(tonic::Status::failed_precondition(format!(
                        "node {} refused by this node: {why}",
                        c.node
                    )));
                }
                clocks.record(&c, theirs, Refusal::None);
                let version = agreed.unwrap_or(MIN_PROTOCOL_VERSION);
                req.extensions_mut().insert(Agreed { node: c.node, version });
                Ok(req)
            }
            Err(r) => {
                if let Some(c) = &r.skewed {
                    clocks.record(c, theirs, Refusal::Clock);
                }
                let peer = req.remote_addr().map(|a: SocketAddr| a.to_string()).unwrap_or_default();
                tracing::warn!(%peer, reason = %r.why, "refused a node RPC call");
                Err(tonic::Status::unauthenticated(r.why))
            }
        }
    };
    let svc = pb::node_server::NodeServer::with_interceptor(
        Service {
            handler,
            clocks: svc_clocks,
            ours,
        },
        interceptor,
    );
    let tls_auth = Auth::new(&cfg.cluster_name, &cfg.secret).with_accepted(&cfg.accepted_secrets);
    let load = || -> Result<Option<tls::Tls>, String> {
        cfg.tls
            .as_ref()
            .map(|source| source.load(&tls_auth, &cfg.cluster_name, &cfg.node_id))
            .transpose()
    };
    let files = match &cfg.tls {
        Some(TlsSource::Files(f)) => Some(f.clone()),
        _ => None,
    };
    let Some(files) = files else {
        // Plain, or a certificate made at start from the secret: one server for the node's life.
        let (task, stop) = generation(listener, svc, load()?)?;
        tokio::pin!(task);
        tokio::select! {
            r = &mut task => return r.map_err(|e| format!("RPC server failed: {e}"))?,
            () = shutdown => {}
        }
        drop(stop);
        return task.await.map_err(|e| format!("RPC server failed: {e}"))?;
    };
    // Certificate files: checked every RELOAD_EVERY; a changed set that loads is served by a
    // new server on the same listening socket, and the old one stops accepting and finishes its
    // connections (peers reconnect, to the new certificate). A set that does not load is logged
    // and the old one kept.
    let std_listener = listener.into_std().map_err(|e| format!("cannot serve RPC: {e}"))?;
    let clone = || -> Result<tokio::net::TcpListener, String> {
        std_listener
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("cannot serve RPC: {e}"))
    };
    let mut seen = files.stamp();
    let (mut task, mut stop) = generation(clone()?, svc.clone(), load()?)?;
    let mut draining = Vec::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            r = &mut task => return r.map_err(|e| format!("RPC server failed: {e}"))?,
            () = &mut shutdown => break,
            () = tokio::time::sleep(tls::RELOAD_EVERY) => {
                let now = files.stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                match load().and_then(|t| Ok((clone()?, t))).and_then(|(l, t)| generation(l, svc.clone(), t)) {
                    Ok((next, next_stop)) => {
                        drop(std::mem::replace(&mut stop, next_stop));
                        draining.push(std::mem::replace(&mut task, next));
                        tracing::info!(cert = %files.cert.display(), "node RPC certificate reloaded");
                    }
                    Err(e) => tracing::warn!(error = %e, "node RPC certificate files changed but do not load; keeping the old ones"),
                }
            }
        }
    }
    drop(stop);
    for t in draining {
        let _ = t.await;
    }
    task.await.map_err(|e| format!("RPC server failed: {e}"))?
}

/// A running server and what stops it accepting (dropping it).
type Generation = (
    tokio::task::JoinHandle<Result<(), String>>,
    tokio::sync::oneshot::Sender<()>,
);

/// One server on `listener` with `tls` (mutual TLS: a peer without a certificate of the cluster
/// CA cannot even connect); it stops accepting when the returned sender is dropped, then
/// finishes its connections.
fn generation<S>(listener: tokio::net::TcpListener, svc: S, tls: Option<tls::Tls>) -> Result<Generation, String>
where
    S: tower_service::Service<
            http::Request<tonic::body::BoxBody>,
            Response = http::Response<tonic::body::BoxBody>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| format!("cannot serve RPC: {e}"))?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(t.identity)
                    .client_ca_root(t.ca),
            )
            .map_err(|e| format!("TLS setup failed: {e}"))?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| format!("RPC server failed: {e}"))
    });
    Ok((task, tx))
}
