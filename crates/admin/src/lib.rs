//! The admin HTTP API on an axum router: health and readiness, Prometheus metrics, background
//! workers, access keys, bucket usage and quotas, and the cluster endpoints (`/cluster/*`).
//! `ironbucket-cli` talks only to this API; both use the request and response types of
//! `ironbucket-api`.
//!
//! Every route but liveness and readiness needs `Authorization: Bearer <token>` with a role
//! high enough for it (viewer, operator, admin; see [`tokens`]), checked by one middleware
//! before any body is read; every mutating call is audited; bodies are limited to
//! [`MAX_BODY`]; every error is one JSON shape (`{"error": "..."}`).

mod cluster;
mod health;
mod join_tokens;
mod layout;
mod manage;
mod repair;
mod tokens;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use ironbucket_store::ObjectStore;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Largest request body any admin route takes.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot register admin metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("admin tokens: {0}")]
    Tokens(String),
}

/// What the admin API reports about this node.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub node_id: String,
    pub version: String,
    pub metrics_enabled: bool,
    /// The built-in admin token. Other tokens are created through `/tokens`.
    pub token: String,
    /// Where a single node keeps the tokens created through `/tokens` (a cluster keeps them in
    /// its control state); `None`: in memory only.
    pub token_file: Option<std::path::PathBuf>,
    /// Requests per second per client address (0: no limit); over it: 503 with Retry-After.
    pub rate_per_ip: u32,
}

/// Shared by every handler.
struct AdminState {
    store: Arc<dyn ObjectStore>,
    workers: ironbucket_runtime::Registry,
    registry: prometheus::Registry,
    cfg: AdminConfig,
    started: Instant,
    gauges: health::Gauges,
    /// The control plane, when this node runs in a cluster.
    cluster: OnceLock<Arc<ironbucket_consensus::ControlPlane>>,
    gossip: OnceLock<Arc<ironbucket_cluster::Gossip>>,
    cluster_store: OnceLock<Arc<ironbucket_replication::ClusterStore>>,
    /// This node's local store (its clock: the bound on remote stamps and refusals).
    local: OnceLock<Arc<ironbucket_store::LocalStore>>,
    /// Peers' clock offsets as their RPC credentials showed them.
    peer_clocks: OnceLock<ironbucket_rpc::PeerClocks>,
    /// A single node's admin tokens.
    file_tokens: tokens::FileTokens,
    audit: OnceLock<Arc<dyn ironbucket_types::audit::AuditSink>>,
    ip_limiter: Option<ironbucket_types::ratelimit::RateLimiter>,
    /// Set when the node got its stop signal: `/health/ready` answers 404 from then on.
    stopping: std::sync::atomic::AtomicBool,
}

type Shared = Arc<AdminState>;

/// The admin API as a hyper service.
#[derive(Clone)]
pub struct AdminService {
    state: Shared,
    router: Router,
    /// The connection's peer, when the service was made for one connection.
    peer: Option<std::net::SocketAddr>,
}

/// An error answer: a status and a message, always sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.status, &ironbucket_api::ErrorBody { error: self.message })
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// `v` as a JSON response with `status`.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            let mut r = Response::new(Body::from(format!("{{\"error\":\"cannot encode the answer: {e}\"}}")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

pub(crate) fn ok<T: serde::Serialize>(v: &T) -> ApiResult {
    Ok(json(StatusCode::OK, v))
}

/// A JSON request body of type `T`, read up to [`MAX_BODY`] bytes; an empty body is
/// `T::default()`. Refusals are JSON errors (413, 400) like every other.
pub(crate) struct JsonBody<T>(pub T);

#[axum::async_trait]
impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes (or could not be read)"),
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON for this request: {e}")))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's address, put in the request by the service.
#[derive(Clone, Copy)]
struct Peer(Option<std::net::SocketAddr>);

/// Refuses a request without a token whose role may call the route (401, 403), before its body
/// is read; audits every call that is not a read, and every refusal.
async fn require_role(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let (Some(l), Some(Peer(Some(peer)))) = (&s.ip_limiter, req.extensions().get::<Peer>())
        && let Err(wait) = l.take(&peer.ip().to_string(), Instant::now())
    {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests from this address: slow down",
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        return r;
    }
    let Some(need) = tokens::required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let source = req
        .extensions()
        .get::<Peer>()
        .and_then(|p| p.0)
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let action = format!("{} {}", req.method(), req.uri().path());
    let principal = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| s.authenticate(t.trim()));
    let refusal = match &principal {
        None => Some(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid admin token is required (Authorization: Bearer ...)",
        )),
        Some(p) if p.role < need => Some(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this token's role ({}) may not {action}: it needs the {} role",
                p.role.as_str(),
                need.as_str()
            ),
        )),
        Some(_) => None,
    };
    let who = principal
        .as_ref()
        .map_or_else(|| "unauthenticated".to_string(), |p| p.name.clone());
    if let Some(e) = refusal {
        s.audit(&who, &source, &action, e.status.as_u16(), Some(e.message.clone()));
        return e.into_response();
    }
    let mutating = need > ironbucket_api::Role::Viewer || req.method() != axum::http::Method::GET;
    let r = next.run(req).await;
    if mutating {
        let status = r.status().as_u16();
        s.audit(&who, &source, &action, status, None);
    }
    r
}

impl AdminState {
    fn audit(&self, principal: &str, source: &str, action: &str, status: u16, error: Option<String>) {
        let Some(sink) = self.audit.get() else { return };
        let result = match status {
            401 | 403 => "denied",
            s if s >= 400 => "failed",
            _ => "allowed",
        };
        sink.record(ironbucket_types::audit::AuditEvent {
            time: ironbucket_types::audit::rfc3339_millis(ironbucket_types::now_millis()),
            api: "admin",
            principal: principal.to_string(),
            source: source.to_string(),
            resource: action.split_once(' ').map_or(action, |(_, p)| p).to_string(),
            action: action.to_string(),
            result: result.into(),
            status,
            error,
            request_id: None,
        });
    }
}

/// Gives axum's bare 405 answers the API's JSON error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    if r.status() == StatusCode::METHOD_NOT_ALLOWED && !r.headers().contains_key(header::CONTENT_TYPE) {
        return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint").into_response();
    }
    r
}

async fn no_route(req: Request) -> ApiError {
    ApiError::not_found(format!("no admin endpoint at {}", req.uri().path()))
}

fn router(state: Shared) -> Router {
    let routes = Router::new()
        .route("/health", get(health::health))
        .route("/cluster/health", get(health::cluster_health))
        .route("/health/ready", get(health::ready))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/cluster/status", get(cluster::status))
        .route("/cluster/nodes", get(cluster::nodes))
        .route("/cluster/locate/:bucket/*key", get(cluster::locate))
        .route("/cluster/locate/:bucket", get(cluster::locate_usage))
        .route("/cluster/locate", get(cluster::locate_usage))
        .route("/cluster/metrics/replication", get(cluster::replication_metrics))
        .route("/workers", get(manage::workers))
        .route("/workers/:name", get(manage::worker).put(manage::set_tranquility))
        .route("/workers/:name/wake", post(manage::wake))
        .route("/keys", get(manage::list_keys).post(manage::create_key))
        .route("/keys/:ak", axum::routing::delete(manage::delete_key))
        .route("/keys/:ak/:action", post(manage::enable_key))
        .route(
            "/keys/:ak/buckets/:bucket",
            put(manage::allow_key).delete(manage::deny_key),
        )
        .route("/buckets/:bucket", get(manage::bucket_usage))
        .route(
            "/buckets/:bucket/quota",
            put(manage::set_quota).delete(manage::clear_quota),
        )
        .route("/cluster/replication", put(cluster::set_replication))
        .route(
            "/cluster/nodes/:name",
            put(cluster::update_member).delete(cluster::remove_member),
        )
        .route("/cluster/nodes/:name/:action", post(cluster::member_action))
        .route("/cluster/locks", get(cluster::locks))
        .route("/cluster/locks/:name", post(cluster::lock))
        .route("/cluster/barriers/:name", post(cluster::barrier))
        .route("/cluster/force-recover", post(cluster::force_recover))
        .route("/cluster/keys/reseal", post(cluster::reseal_keys))
        .route("/cluster/repair", post(repair::start))
        .route("/cluster/repair/status", get(repair::status))
        .route("/cluster/repair/rate", put(repair::set_rate))
        .route("/cluster/layout", get(layout::show))
        .route("/cluster/layout/plan", post(layout::plan))
        .route("/cluster/rebalance", post(repair::rebalance))
        .route("/cluster/rebalance/status", get(repair::rebalance_status))
        .route("/cluster/rebalance/cancel", post(repair::cancel_rebalance))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/cluster/join-tokens", get(join_tokens::list).post(join_tokens::create))
        .route("/cluster/join-tokens/:id", axum::routing::delete(join_tokens::revoke))
        .route("/tokens/:id", axum::routing::delete(tokens::revoke))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_role));
    routes
        .fallback(no_route)
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

impl AdminService {
    /// `registry` holds the other layers' metrics; the admin gauges are added to it here.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        registry: prometheus::Registry,
        cfg: AdminConfig,
        workers: ironbucket_runtime::Registry,
    ) -> Result<Self, Error> {
        let gauges = health::Gauges::register(&registry)?;
        let file_tokens = tokens::FileTokens::open(cfg.token_file.clone()).map_err(Error::Tokens)?;
        let ip_limiter = ironbucket_types::ratelimit::RateLimiter::new(cfg.rate_per_ip);
        let state = Arc::new(AdminState {
            cfg,
            store,
            workers,
            registry,
            started: Instant::now(),
            gauges,
            cluster: OnceLock::new(),
            gossip: OnceLock::new(),
            cluster_store: OnceLock::new(),
            local: OnceLock::new(),
            peer_clocks: OnceLock::new(),
            file_tokens,
            audit: OnceLock::new(),
            ip_limiter,
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(Self {
            router: router(state.clone()),
            state,
            peer: None,
        })
    }

    /// The service for one connection from `peer` (its address goes into the audit log).
    pub fn with_peer(&self, peer: std::net::SocketAddr) -> Self {
        let mut s = self.clone();
        s.peer = Some(peer);
        s
    }

    /// Sends an audit line for every mutating call and every refusal to `sink`.
    pub fn set_audit(&self, sink: Arc<dyn ironbucket_types::audit::AuditSink>) {
        let _ = self.state.audit.set(sink);
    }

    /// Serves `/cluster/status` and `/cluster/nodes` from this control plane.
    pub fn set_cluster(&self, cp: Arc<ironbucket_consensus::ControlPlane>) {
        let _ = self.state.cluster.set(cp);
    }

    /// Adds the failure detector's view (liveness, load, capacity) to `/cluster/nodes` and
    /// `/cluster/status`.
    pub fn set_gossip(&self, g: Arc<ironbucket_cluster::Gossip>) {
        let _ = self.state.gossip.set(g);
    }

    /// Reports this node's clock (bound, refused stamps) in `/cluster/health` and `/metrics`.
    pub fn set_local(&self, l: Arc<ironbucket_store::LocalStore>) {
        let _ = self.state.local.set(l);
    }

    /// Reports the peers' clock offsets in `/cluster/health` and `/metrics`.
    pub fn set_peer_clocks(&self, c: ironbucket_rpc::PeerClocks) {
        let _ = self.state.peer_clocks.set(c);
    }

    /// Serves `GET /cluster/locate/{bucket}/{key}` and readiness from this cluster store.
    pub fn set_cluster_store(&self, s: Arc<ironbucket_replication::ClusterStore>) {
        let _ = self.state.cluster_store.set(s);
    }

    /// The node is stopping: from now on `/health/ready` answers 404 ("take no new requests to
    /// me, let those under way finish": HAProxy's `http-check disable-on-404`), while the node
    /// still serves what load balancers send it until they have noticed.
    pub fn set_stopping(&self) {
        self.state.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for AdminService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        use tower_service::Service as _;
        let mut router = self.router.clone();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(Peer(self.peer));
        Box::pin(async move { router.call(req).await })
    }
}
