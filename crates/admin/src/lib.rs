//! The admin HTTP API: `GET /health` (JSON) and `GET /metrics` (Prometheus text). The cluster
//! endpoints (`/cluster/*`) join here later. `ironbucket-cli` talks only to this API.

use bytes::Bytes;
use futures_util_shim::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use ironbucket_store::ObjectStore;
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};
use std::sync::Arc;
use std::time::Instant;

mod futures_util_shim {
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot register admin metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the admin API reports about this node.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub node_id: String,
    pub version: String,
    pub metrics_enabled: bool,
    /// Bearer token that management endpoints (`/keys`) require. `/health` and `/metrics`
    /// need none.
    pub token: String,
}

struct Gauges {
    objects: IntGauge,
    bytes: IntGauge,
    disk_free: IntGauge,
    disk_total: IntGauge,
    uptime: IntGauge,
    lifecycle: prometheus::IntGaugeVec,
    worker_restarts: prometheus::IntGaugeVec,
    worker_failed: prometheus::IntGaugeVec,
    node_failed: IntGauge,
    stamps_refused: IntGauge,
    peer_offset: prometheus::IntGaugeVec,
    peer_refused: prometheus::IntGaugeVec,
}

struct State {
    store: Arc<dyn ObjectStore>,
    /// The node's background workers (`/workers`); a fatal one that died turns `/health` red.
    workers: ironbucket_runtime::Registry,
    registry: Registry,
    cfg: AdminConfig,
    started: Instant,
    gauges: Gauges,
    /// The control plane, when this node runs in a cluster.
    cluster: std::sync::OnceLock<Arc<ironbucket_consensus::ControlPlane>>,
    gossip: std::sync::OnceLock<Arc<ironbucket_cluster::Gossip>>,
    cluster_store: std::sync::OnceLock<Arc<ironbucket_replication::ClusterStore>>,
    /// This node's local store (its clock: the bound on remote stamps and refusals).
    local: std::sync::OnceLock<Arc<ironbucket_store::LocalStore>>,
    /// Peers' clock offsets as their RPC credentials showed them.
    peer_clocks: std::sync::OnceLock<ironbucket_rpc::PeerClocks>,
}

/// The admin API as a hyper service.
#[derive(Clone)]
pub struct AdminService {
    state: Arc<State>,
}

impl AdminService {
    /// `registry` holds the other layers' metrics; the storage gauges are added to it here.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        registry: Registry,
        cfg: AdminConfig,
        workers: ironbucket_runtime::Registry,
    ) -> Result<Self, Error> {
        let g = |name: &str, help: &str| -> Result<IntGauge, Error> {
            let x = IntGauge::new(name, help)?;
            registry.register(Box::new(x.clone()))?;
            Ok(x)
        };
        let gauges = Gauges {
            objects: g("ironbucket_objects", "Objects stored")?,
            bytes: g("ironbucket_object_bytes", "Bytes of object data stored (logical size)")?,
            disk_free: g("ironbucket_disk_free_bytes", "Free space on the data volume")?,
            disk_total: g("ironbucket_disk_total_bytes", "Size of the data volume")?,
            uptime: g("ironbucket_uptime_seconds", "Seconds since the server started")?,
            lifecycle: {
                let v = prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "ironbucket_lifecycle_removed",
                        "What the lifecycle worker removed since start, by kind",
                    ),
                    &["kind"],
                )?;
                registry.register(Box::new(v.clone()))?;
                v
            },
            worker_restarts: {
                let v = prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "ironbucket_worker_restarts",
                        "Times each background worker was restarted after a panic or an error",
                    ),
                    &["worker"],
                )?;
                registry.register(Box::new(v.clone()))?;
                v
            },
            worker_failed: {
                let v = prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "ironbucket_worker_failed",
                        "1 when a background worker has failed and is not running (dead or backing off)",
                    ),
                    &["worker"],
                )?;
                registry.register(Box::new(v.clone()))?;
                v
            },
            node_failed: g(
                "ironbucket_node_failed",
                "1 when a fatal worker (the metadata committer) died: the node refuses writes",
            )?,
            stamps_refused: g(
                "ironbucket_clock_stamps_refused_total",
                "Writes refused because their timestamp was further ahead of this node's clock than the bound",
            )?,
            peer_offset: {
                let v = prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "ironbucket_peer_clock_offset_ms",
                        "Each peer's clock minus this node's, as its last RPC call showed (about 1 s resolution)",
                    ),
                    &["node"],
                )?;
                registry.register(Box::new(v.clone()))?;
                v
            },
            peer_refused: {
                let v = prometheus::IntGaugeVec::new(
                    prometheus::Opts::new(
                        "ironbucket_rpc_refused_clock_total",
                        "RPC calls refused because the calling node's clock was more than 300 s off",
                    ),
                    &["node"],
                )?;
                registry.register(Box::new(v.clone()))?;
                v
            },
        };
        Ok(Self {
            state: Arc::new(State {
                store,
                workers,
                registry,
                cfg,
                started: Instant::now(),
                gauges,
                cluster: std::sync::OnceLock::new(),
                gossip: std::sync::OnceLock::new(),
                cluster_store: std::sync::OnceLock::new(),
                local: std::sync::OnceLock::new(),
                peer_clocks: std::sync::OnceLock::new(),
            }),
        })
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl State {
    async fn health(&self) -> Response<Full<Bytes>> {
        let uptime = self.started.elapsed().as_secs();
        if let Some(f) = self.workers.fatal() {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "status": "failed",
                    "node_id": self.cfg.node_id,
                    "version": self.cfg.version,
                    "uptime_seconds": uptime,
                    "error": format!("worker {} failed: {}", f.worker, f.reason),
                    "failed_worker": f.worker,
                    "failed_at_ms": f.at_ms,
                }),
            );
        }
        match self.store.usage().await {
            Ok(u) => json(
                StatusCode::OK,
                serde_json::json!({
                    "status": "ok",
                    "node_id": self.cfg.node_id,
                    "version": self.cfg.version,
                    "uptime_seconds": uptime,
                    "cluster": self.cluster.get().map(|cp| {
                        let s = cp.status();
                        serde_json::json!({
                            "name": s.cluster_name,
                            "id": s.cluster_id,
                            "raft_state": s.raft_state,
                            "leader": s.leader,
                            "members": s.members.len(),
                        })
                    }),
                    "storage": {
                        "objects": u.objects,
                        "used_bytes": u.bytes,
                        "disk_total_bytes": u.disk_total,
                        "disk_free_bytes": u.disk_free,
                    }
                }),
            ),
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "status": "unavailable",
                    "node_id": self.cfg.node_id,
                    "version": self.cfg.version,
                    "uptime_seconds": uptime,
                    "error": e.to_string(),
                }),
            ),
        }
    }

    async fn metrics(&self) -> Response<Full<Bytes>> {
        if !self.cfg.metrics_enabled {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "metrics are disabled (METRICS_ENABLED=false)"}),
            );
        }
        if let Ok(u) = self.store.usage().await {
            self.gauges.objects.set(u.objects as i64);
            self.gauges.bytes.set(u.bytes as i64);
            self.gauges.disk_free.set(u.disk_free as i64);
            self.gauges.disk_total.set(u.disk_total as i64);
            let l = u.lifecycle;
            for (kind, n) in [
                ("expired_objects", l.expired_objects),
                ("noncurrent_versions", l.noncurrent_versions),
                ("delete_markers", l.delete_markers),
                ("aborted_uploads", l.aborted_uploads),
            ] {
                self.gauges.lifecycle.with_label_values(&[kind]).set(n as i64);
            }
        }
        self.gauges.uptime.set(self.started.elapsed().as_secs() as i64);
        for w in self.workers.list() {
            let failed = matches!(
                w.state,
                ironbucket_runtime::WorkerState::Dead | ironbucket_runtime::WorkerState::Backoff
            );
            self.gauges
                .worker_restarts
                .with_label_values(&[&w.name])
                .set(w.restarts as i64);
            self.gauges
                .worker_failed
                .with_label_values(&[&w.name])
                .set(i64::from(failed));
        }
        self.gauges.node_failed.set(i64::from(self.workers.fatal().is_some()));
        if let Some(l) = self.local.get() {
            self.gauges.stamps_refused.set(l.clock().refused() as i64);
        }
        for (node, c) in self.peer_clocks.get().map(|p| p.snapshot()).unwrap_or_default() {
            self.gauges.peer_offset.with_label_values(&[&node]).set(c.offset_ms);
            self.gauges
                .peer_refused
                .with_label_values(&[&node])
                .set(c.refused_calls as i64);
        }
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": e.to_string()}),
            );
        }
        let mut r = Response::new(Full::new(Bytes::from(buf)));
        if let Ok(v) = hyper::header::HeaderValue::from_str(enc.format_type()) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    }
}

fn key_json(k: &ironbucket_store::KeyInfo) -> serde_json::Value {
    serde_json::json!({
        "access_key": k.access_key,
        "name": k.name,
        "created_ms": k.created,
        "enabled": k.enabled,
        "buckets": k.buckets.iter().map(|(b, p)| (b.clone(), serde_json::Value::from(p.as_str()))).collect::<serde_json::Map<_, _>>(),
    })
}

fn store_error(e: ironbucket_store::Error) -> Response<Full<Bytes>> {
    use ironbucket_store::Error as E;
    let status = match &e {
        E::NoSuchAccessKey(_) | E::NoSuchBucket => StatusCode::NOT_FOUND,
        E::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, serde_json::json!({"error": e.to_string()}))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl State {
    /// `GET /cluster/health`: `/health` plus the clocks: this node's bound on remote stamps and
    /// how many it refused, each peer's offset as its RPC credentials showed it, and a warning
    /// for every peer whose clock is off by more than the bound.
    async fn cluster_health(&self) -> Response<Full<Bytes>> {
        let resp = self.health().await;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let bound = self
            .local
            .get()
            .map_or(ironbucket_types::DEFAULT_MAX_AHEAD_MS, |l| l.clock().max_ahead_ms());
        let now = ironbucket_types::now_millis();
        let peers = self.peer_clocks.get().map(|p| p.snapshot()).unwrap_or_default();
        let mut warnings = Vec::new();
        let mut skewed = Vec::new();
        let list: Vec<serde_json::Value> = peers
            .iter()
            .map(|(node, c)| {
                let off = c.offset_ms.unsigned_abs() > bound;
                if off {
                    skewed.push(node.clone());
                    warnings.push(format!(
                        "node {node}'s clock is {:.1} s {} this node's (bound {:.1} s){}",
                        c.offset_ms.unsigned_abs() as f64 / 1000.0,
                        if c.offset_ms > 0 { "ahead of" } else { "behind" },
                        bound as f64 / 1000.0,
                        if c.refused_calls > 0 {
                            format!(": {} of its RPC calls were refused", c.refused_calls)
                        } else {
                            String::new()
                        }
                    ));
                }
                serde_json::json!({
                    "node": node,
                    "offset_ms": c.offset_ms,
                    "seen_ms_ago": now.saturating_sub(c.seen_ms),
                    "refused_calls": c.refused_calls,
                    "beyond_bound": off,
                })
            })
            .collect();
        v["clock"] = serde_json::json!({
            "max_ahead_ms": bound,
            "stamps_refused": self.local.get().map_or(0, |l| l.clock().refused()),
            "peers": list,
            "skewed_nodes": skewed,
        });
        v["warnings"] = serde_json::json!(warnings);
        json(status, v)
    }

    /// `GET /health/ready`: 200 only when this node can serve a write now: no fatal worker has
    /// died, the store answers, and in a cluster the control plane has a leader and a placement
    /// layout exists. Load balancers and compose health checks use it.
    async fn ready(&self) -> Response<Full<Bytes>> {
        let mut reasons = Vec::new();
        if let Some(f) = self.workers.fatal() {
            reasons.push(format!("worker {} failed: {}", f.worker, f.reason));
        }
        if let Err(e) = self.store.usage().await {
            reasons.push(format!("the store does not answer: {e}"));
        }
        if let Some(cs) = self.cluster_store.get()
            && let Err(e) = cs.ready()
        {
            reasons.push(e);
        }
        let ready = reasons.is_empty();
        json(
            if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            serde_json::json!({"ready": ready, "node_id": self.cfg.node_id, "reasons": reasons}),
        )
    }

    /// `GET /workers`, `PUT /workers/{name}` (`{"tranquility": n}`), `POST /workers/{name}/wake`:
    /// need the admin token.
    fn workers(
        &self,
        method: &Method,
        parts: &[&str],
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        if !self.authorized(headers) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid admin token is required (Authorization: Bearer ...)"}),
            );
        }
        let one = |name: &str| self.workers.list().into_iter().find(|w| w.name == name);
        let missing = |name: &str| {
            json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("no worker named {name:?} (GET /workers lists them)")}),
            )
        };
        match (method, parts) {
            (&Method::GET, []) => json(StatusCode::OK, serde_json::json!(self.workers.list())),
            (&Method::GET, [name]) => match one(name) {
                Some(w) => json(StatusCode::OK, serde_json::json!(w)),
                None => missing(name),
            },
            (&Method::PUT, [name]) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let Some(t) = v["tranquility"]
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .filter(|t| *t <= 1000)
                else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "give {\"tranquility\": n} with n from 0 to 1000"}),
                    );
                };
                if !self.workers.set_tranquility(name, t) {
                    return missing(name);
                }
                json(StatusCode::OK, serde_json::json!(one(name)))
            }
            (&Method::POST, [name, "wake"]) => {
                if !self.workers.wake(name) {
                    return missing(name);
                }
                json(StatusCode::OK, serde_json::json!(one(name)))
            }
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such workers endpoint"}),
            ),
        }
    }

    fn authorized(&self, headers: &hyper::HeaderMap) -> bool {
        let presented = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        presented.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.cfg.token.as_bytes()))
    }

    /// `/buckets/{b}` (usage and quota) and `/buckets/{b}/quota`: need the admin token.
    async fn buckets(
        &self,
        method: &Method,
        parts: &[&str],
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        if !self.authorized(headers) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid admin token is required (Authorization: Bearer ...)"}),
            );
        }
        match (method, parts) {
            (&Method::GET, [bucket]) => match self.store.bucket_usage(bucket).await {
                Ok(u) => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "bucket": bucket,
                        "objects": u.objects,
                        "bytes": u.bytes,
                        "quota": u.quota.map(|q| serde_json::json!({"max_bytes": q.max_bytes, "max_objects": q.max_objects})),
                        "requests_by_month": u.requests,
                    }),
                ),
                Err(e) => store_error(e),
            },
            (&Method::PUT, [bucket, "quota"]) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let q = ironbucket_store::Quota {
                    max_bytes: v["max_bytes"].as_u64(),
                    max_objects: v["max_objects"].as_u64(),
                };
                if q.max_bytes.is_none() && q.max_objects.is_none() {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "give max_bytes and/or max_objects (non-negative integers)"}),
                    );
                }
                match self.store.set_bucket_quota(bucket, Some(q)).await {
                    Ok(()) => json(
                        StatusCode::OK,
                        serde_json::json!({"bucket": bucket, "max_bytes": q.max_bytes, "max_objects": q.max_objects}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            (&Method::DELETE, [bucket, "quota"]) => match self.store.set_bucket_quota(bucket, None).await {
                Ok(()) => json(StatusCode::OK, serde_json::json!({"bucket": bucket, "quota": null})),
                Err(e) => store_error(e),
            },
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such buckets endpoint"}),
            ),
        }
    }

    /// `/keys` management: needs `Authorization: Bearer <token>`.
    async fn keys(
        &self,
        method: &Method,
        parts: &[&str],
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let presented = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), self.cfg.token.as_bytes())) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid admin token is required (Authorization: Bearer ...)"}),
            );
        }
        let body_json = || serde_json::from_slice::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
        let s = &self.store;
        match (method, parts) {
            (&Method::GET, []) => match s.list_keys().await {
                Ok(keys) => json(
                    StatusCode::OK,
                    serde_json::Value::Array(keys.iter().map(key_json).collect()),
                ),
                Err(e) => store_error(e),
            },
            (&Method::POST, []) => {
                let name = body_json()["name"].as_str().unwrap_or_default().to_string();
                match s.create_key(&name).await {
                    Ok((info, secret)) => {
                        let mut v = key_json(&info);
                        v["secret_key"] = serde_json::Value::from(secret);
                        json(StatusCode::CREATED, v)
                    }
                    Err(e) => store_error(e),
                }
            }
            (&Method::DELETE, [ak]) => match s.delete_key(ak).await {
                Ok(()) => json(StatusCode::OK, serde_json::json!({"deleted": ak})),
                Err(e) => store_error(e),
            },
            (&Method::POST, [ak, action @ ("enable" | "disable")]) => {
                match s.set_key_enabled(ak, *action == "enable").await {
                    Ok(()) => json(
                        StatusCode::OK,
                        serde_json::json!({"access_key": ak, "enabled": *action == "enable"}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            (&Method::PUT, [ak, "buckets", bucket]) => {
                let p = body_json()["permission"]
                    .as_str()
                    .and_then(ironbucket_store::Permission::parse);
                let Some(p) = p else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "permission must be read, write or owner"}),
                    );
                };
                match s.set_key_permission(ak, bucket, Some(p)).await {
                    Ok(()) => json(
                        StatusCode::OK,
                        serde_json::json!({"access_key": ak, "bucket": bucket, "permission": p.as_str()}),
                    ),
                    Err(e) => store_error(e),
                }
            }
            (&Method::DELETE, [ak, "buckets", bucket]) => match s.set_key_permission(ak, bucket, None).await {
                Ok(()) => json(
                    StatusCode::OK,
                    serde_json::json!({"access_key": ak, "bucket": bucket, "permission": null}),
                ),
                Err(e) => store_error(e),
            },
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "no such keys endpoint"}),
            ),
        }
    }
}

impl AdminService {
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

    /// Serves `GET /cluster/locate/{bucket}/{key}` from this cluster store.
    pub fn set_cluster_store(&self, s: Arc<ironbucket_replication::ClusterStore>) {
        let _ = self.state.cluster_store.set(s);
    }
}

fn cluster_error(e: ironbucket_consensus::Error) -> Response<Full<Bytes>> {
    use ironbucket_consensus::Error as E;
    let status = match &e {
        E::Invalid(m) if m.starts_with("no member named") => StatusCode::NOT_FOUND,
        E::Invalid(_) | E::Config(_) => StatusCode::BAD_REQUEST,
        E::NoQuorum(_) => StatusCode::SERVICE_UNAVAILABLE,
        E::Storage(_) | E::Raft(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(status, serde_json::json!({"error": e.to_string()}))
}

impl State {
    /// `PUT /cluster/replication`, `PUT /cluster/nodes/{n}`, `POST /cluster/nodes/{n}/decommission`,
    /// `POST /cluster/nodes/{n}/replace`, `DELETE /cluster/nodes/{n}`: need the admin token.
    async fn cluster_change(
        &self,
        method: &Method,
        parts: &[&str],
        headers: &hyper::HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        if !self.authorized(headers) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid admin token is required (Authorization: Bearer ...)"}),
            );
        }
        let Some(cp) = self.cluster.get() else {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "this node is not part of a cluster (CLUSTER_ENABLED=false)"}),
            );
        };
        let body: serde_json::Value = if body.is_empty() {
            serde_json::json!({})
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": format!("the body is not JSON: {e}")}),
                    );
                }
            }
        };
        let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let r = match (method, parts) {
            (&Method::PUT, ["replication"]) => {
                let mut r = cp.state().replication;
                if let Some(f) = body.get("factor") {
                    match f.as_u64() {
                        Some(f) => r.factor = f as u32,
                        None => {
                            return json(
                                StatusCode::BAD_REQUEST,
                                serde_json::json!({"error": "factor must be a positive integer"}),
                            );
                        }
                    }
                }
                if let Some(v) = text("strategy") {
                    r.strategy = v;
                }
                if let Some(v) = text("read_consistency") {
                    r.read_consistency = v.to_ascii_uppercase();
                }
                if let Some(v) = text("write_consistency") {
                    r.write_consistency = v.to_ascii_uppercase();
                }
                cp.set_replication(r).await
            }
            (&Method::PUT, ["nodes", name]) => {
                let patch = ironbucket_consensus::MemberPatch {
                    role: text("role"),
                    zone: text("zone"),
                    rack: text("rack"),
                    // Out-of-range numbers become u32::MAX, which update_member refuses by name.
                    weight: body
                        .get("weight")
                        .and_then(|w| w.as_u64())
                        .map(|w| u32::try_from(w).unwrap_or(u32::MAX)),
                };
                cp.update_member(name, patch).await
            }
            (&Method::GET, ["locks"]) => {
                return json(StatusCode::OK, serde_json::json!(cp.state().locks));
            }
            (&Method::POST, ["locks", name]) => {
                use ironbucket_consensus::LockCmd;
                let now = ironbucket_types::now_millis();
                let holder = text("holder").unwrap_or_default();
                if holder.is_empty() {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"error": "holder is required"}),
                    );
                }
                let ttl_ms = body.get("ttl_ms").and_then(|v| v.as_u64()).unwrap_or(10_000);
                let cmd = match text("op").as_deref() {
                    Some("acquire") => LockCmd::Acquire {
                        name: name.to_string(),
                        holder,
                        ttl_ms,
                        permits: body.get("permits").and_then(|v| v.as_u64()).unwrap_or(1) as u32,
                        wait: body.get("wait").and_then(|v| v.as_bool()).unwrap_or(false),
                        now,
                    },
                    Some("renew") => LockCmd::Renew {
                        name: name.to_string(),
                        holder,
                        token: body.get("token").and_then(|v| v.as_u64()).unwrap_or(0),
                        ttl_ms,
                        now,
                    },
                    Some("release") => LockCmd::Release {
                        name: name.to_string(),
                        holder,
                        now,
                    },
                    _ => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            serde_json::json!({"error": "op must be acquire, renew or release"}),
                        );
                    }
                };
                return match cp.lock(cmd).await {
                    Ok(o) => json(StatusCode::OK, serde_json::json!(o)),
                    Err(e) => cluster_error(e),
                };
            }
            (&Method::POST, ["barriers", name]) => {
                let cmd = ironbucket_consensus::LockCmd::Arrive {
                    barrier: name.to_string(),
                    participant: text("participant").unwrap_or_default(),
                    count: body.get("count").and_then(|v| v.as_u64()).unwrap_or(1) as u32,
                };
                return match cp.lock(cmd).await {
                    Ok(o) => json(StatusCode::OK, serde_json::json!(o)),
                    Err(e) => cluster_error(e),
                };
            }
            (&Method::POST, ["force-recover"]) => cp.force_recover(&text("node").unwrap_or_default()).await,
            (&Method::POST, ["nodes", name, "decommission"]) => cp.decommission(name).await,
            (&Method::POST, ["nodes", name, "replace"]) => cp.allow_replace(name).await,
            (&Method::DELETE, ["nodes", name]) => cp.remove_member(name).await,
            _ => {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no such cluster endpoint"}),
                );
            }
        };
        match r {
            Ok(()) => json(StatusCode::OK, serde_json::json!(cp.status())),
            Err(e) => cluster_error(e),
        }
    }

    fn cluster(&self, what: &str) -> Response<Full<Bytes>> {
        let Some(cp) = self.cluster.get() else {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "this node is not part of a cluster (CLUSTER_ENABLED=false)"}),
            );
        };
        let status = cp.status();
        let mut v = serde_json::json!(status);
        // Each member with what the failure detector says of it ("unknown" before gossip runs).
        let view = self.gossip.get().map(|g| g.view()).unwrap_or_default();
        if let Some(members) = v["members"].as_array_mut() {
            for m in members {
                let name = m["name"].as_str().unwrap_or_default().to_string();
                let seen = view.get(&name);
                m["liveness"] = serde_json::json!(seen.map_or("unknown", |n| n.liveness.as_str()));
                m["load"] = serde_json::json!(seen.and_then(|n| n.load.as_ref()).map(|l| l.figures));
            }
        }
        if what == "nodes" {
            json(StatusCode::OK, v["members"].take())
        } else {
            json(StatusCode::OK, v)
        }
    }
}

impl State {
    /// `rest` is `{bucket}/{key}` as it came in the path (each part percent-decoded here; the
    /// key may hold slashes).
    async fn locate(&self, rest: &str) -> Response<Full<Bytes>> {
        let Some(store) = self.cluster_store.get() else {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "this node is not part of a cluster (CLUSTER_ENABLED=false)"}),
            );
        };
        let (bucket, key) = match rest.split_once('/') {
            Some((b, k)) if !b.is_empty() && !k.is_empty() => (percent_decode(b), percent_decode(k)),
            _ => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "use /cluster/locate/{bucket}/{key}"}),
                );
            }
        };
        match store.locate(&bucket, &key).await {
            Ok(l) => json(StatusCode::OK, serde_json::json!(l)),
            Err(ironbucket_store::Error::NoSuchBucket) => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("no bucket named {bucket:?}")}),
            ),
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": e.to_string()}),
            ),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let path = req.uri().path().trim_end_matches('/').to_string();
            if path.starts_with("/buckets/") {
                let (parts, segs, body) = split(req, "/buckets/").await;
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                return Ok(state.buckets(&parts.method, &segs, &parts.headers, body).await);
            }
            if let Some(rest) = path.strip_prefix("/cluster/locate/")
                && req.method() == Method::GET
            {
                return Ok(state.locate(rest).await);
            }
            if path.starts_with("/cluster/")
                && !matches!(path.as_str(), "/cluster/status" | "/cluster/health")
                && !(req.method() == Method::GET && path == "/cluster/nodes")
            {
                let (parts, segs, body) = split(req, "/cluster/").await;
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                return Ok(state.cluster_change(&parts.method, &segs, &parts.headers, body).await);
            }
            if path == "/workers" || path.starts_with("/workers/") {
                let (parts, segs, body) = split(req, "/workers").await;
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                return Ok(state.workers(&parts.method, &segs, &parts.headers, body));
            }
            if path == "/keys" || path.starts_with("/keys/") {
                let (parts, segs, body) = split(req, "/keys").await;
                let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
                return Ok(state.keys(&parts.method, &segs, &parts.headers, body).await);
            }
            let path = path.as_str();
            let resp = match (req.method(), path) {
                (&Method::GET | &Method::HEAD, "/health") => state.health().await,
                (&Method::GET | &Method::HEAD, "/cluster/health") => state.cluster_health().await,
                (&Method::GET | &Method::HEAD, "/health/ready" | "/ready") => state.ready().await,
                (&Method::GET, "/metrics") => state.metrics().await,
                (&Method::GET, "/cluster/status") => state.cluster("status"),
                (&Method::GET, "/cluster/nodes") => state.cluster("nodes"),
                (_, "/health" | "/metrics") => json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({"error": "method not allowed"}),
                ),
                _ => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": format!("no admin endpoint at {path}")}),
                ),
            };
            Ok(resp)
        })
    }
}

/// The request's parts, its path below `prefix` as decoded segments, and its body.
async fn split(req: Request<Incoming>, prefix: &str) -> (hyper::http::request::Parts, Vec<String>, Bytes) {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let (parts, body) = req.into_parts();
    let body = match http_body_util::BodyExt::collect(body).await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let segs = path
        .trim_start_matches(prefix)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    (parts, segs, body)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
