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
}

struct Gauges {
    objects: IntGauge,
    bytes: IntGauge,
    disk_free: IntGauge,
    disk_total: IntGauge,
    uptime: IntGauge,
    lifecycle: prometheus::IntGaugeVec,
}

struct State {
    store: Arc<dyn ObjectStore>,
    registry: Registry,
    cfg: AdminConfig,
    started: Instant,
    gauges: Gauges,
}

/// The admin API as a hyper service.
#[derive(Clone)]
pub struct AdminService {
    state: Arc<State>,
}

impl AdminService {
    /// `registry` holds the other layers' metrics; the storage gauges are added to it here.
    pub fn new(store: Arc<dyn ObjectStore>, registry: Registry, cfg: AdminConfig) -> Result<Self, Error> {
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
        };
        Ok(Self {
            state: Arc::new(State {
                store,
                registry,
                cfg,
                started: Instant::now(),
                gauges,
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
        match self.store.usage().await {
            Ok(u) => json(
                StatusCode::OK,
                serde_json::json!({
                    "status": "ok",
                    "node_id": self.cfg.node_id,
                    "version": self.cfg.version,
                    "uptime_seconds": uptime,
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

impl hyper::service::Service<Request<Incoming>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let path = req.uri().path().trim_end_matches('/');
            let resp = match (req.method(), path) {
                (&Method::GET | &Method::HEAD, "/health") | (&Method::GET | &Method::HEAD, "/cluster/health") => {
                    state.health().await
                }
                (&Method::GET, "/metrics") => state.metrics().await,
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
