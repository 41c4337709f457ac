//! `/health`, `/cluster/health`, `/health/ready` and `/metrics`: whether the node is alive, what
//! it sees of its peers' clocks, whether it can take writes now, and its Prometheus metrics.

use crate::{ApiError, ApiResult, Shared, json};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use ironbucket_api::{ClockReport, Health, HealthCluster, PeerClockView, Ready, StorageFigures};
use prometheus::{Encoder, IntGauge, IntGaugeVec, Registry, TextEncoder};

/// The admin layer's own metrics, refreshed at each scrape.
pub(crate) struct Gauges {
    objects: IntGauge,
    bytes: IntGauge,
    disk_free: IntGauge,
    disk_total: IntGauge,
    uptime: IntGauge,
    lifecycle: IntGaugeVec,
    worker_restarts: IntGaugeVec,
    worker_failed: IntGaugeVec,
    node_failed: IntGauge,
    stamps_refused: IntGauge,
    peer_offset: IntGaugeVec,
    peer_refused: IntGaugeVec,
    peer_refused_protocol: IntGaugeVec,
    read_repairs: IntGaugeVec,
    hints_pending: IntGaugeVec,
    hints: IntGaugeVec,
    scrub: IntGaugeVec,
    rewrap: IntGaugeVec,
    sync_total: IntGaugeVec,
    sync_behind_items: IntGaugeVec,
    sync_behind_bytes: IntGaugeVec,
    sync_out_of_sync: IntGaugeVec,
    sync_last_complete: IntGaugeVec,
}

impl Gauges {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let g = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let x = IntGauge::new(name, help)?;
            registry.register(Box::new(x.clone()))?;
            Ok(x)
        };
        let v = |name: &str, help: &str, label: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let x = IntGaugeVec::new(prometheus::Opts::new(name, help), &[label])?;
            registry.register(Box::new(x.clone()))?;
            Ok(x)
        };
        Ok(Self {
            objects: g("ironbucket_objects", "Objects stored")?,
            bytes: g("ironbucket_object_bytes", "Bytes of object data stored (logical size)")?,
            disk_free: g("ironbucket_disk_free_bytes", "Free space on the data volume")?,
            disk_total: g("ironbucket_disk_total_bytes", "Size of the data volume")?,
            uptime: g("ironbucket_uptime_seconds", "Seconds since the server started")?,
            lifecycle: v(
                "ironbucket_lifecycle_removed",
                "What the lifecycle worker removed since start, by kind",
                "kind",
            )?,
            worker_restarts: v(
                "ironbucket_worker_restarts",
                "Times each background worker was restarted after a panic or an error",
                "worker",
            )?,
            worker_failed: v(
                "ironbucket_worker_failed",
                "1 when a background worker has failed and is not running (dead or backing off)",
                "worker",
            )?,
            node_failed: g(
                "ironbucket_node_failed",
                "1 when a fatal worker (the metadata committer) died: the node refuses writes",
            )?,
            stamps_refused: g(
                "ironbucket_clock_stamps_refused_total",
                "Writes refused because their timestamp was further ahead of this node's clock than the bound",
            )?,
            peer_offset: v(
                "ironbucket_peer_clock_offset_ms",
                "Each peer's clock minus this node's, as its last RPC call showed (about 1 s resolution)",
                "node",
            )?,
            peer_refused: v(
                "ironbucket_rpc_refused_clock_total",
                "RPC calls refused because the calling node's clock was more than 300 s off",
                "node",
            )?,
            peer_refused_protocol: v(
                "ironbucket_rpc_refused_protocol_total",
                "RPC calls refused because this node cannot speak the calling node's protocol version",
                "node",
            )?,
            hints_pending: v(
                "ironbucket_hints_pending",
                "Hints this node keeps per replica node: writes it missed, replayed once it is back",
                "node",
            )?,
            hints: v(
                "ironbucket_hints_total",
                "Hints since the node started: kept, replayed, dropped (past their age) and refused (the replica had the maximum)",
                "outcome",
            )?,
            scrub: v(
                "ironbucket_scrub_total",
                "The scrub since the node started: versions checked, bytes read, corrupt bodies found, repaired from a replica, unverifiable (SSE-C), full passes",
                "kind",
            )?,
            rewrap: v(
                "ironbucket_rewrap_total",
                "Re-wrapping of data keys after an encryption key rotation, since the node started: blobs checked, re-wrapped by the current key, failed, full passes, done (1 once nothing is left on an old key)",
                "kind",
            )?,
            sync_total: v(
                "ironbucket_anti_entropy_total",
                "Anti-entropy since the node started: rounds, versions copied here, bytes copied, tombstones and markers applied, metadata merged, failures",
                "kind",
            )?,
            sync_behind_items: v(
                "ironbucket_anti_entropy_items_behind",
                "Settled versions and tombstones a peer holds that this node lacked at the last comparison",
                "node",
            )?,
            sync_behind_bytes: v(
                "ironbucket_anti_entropy_bytes_behind",
                "Bytes of the versions a peer holds that this node lacked at the last comparison",
                "node",
            )?,
            sync_out_of_sync: v(
                "ironbucket_anti_entropy_partitions_out_of_sync",
                "Partitions (replica sets) shared with a peer whose trees differed at the last comparison",
                "node",
            )?,
            sync_last_complete: v(
                "ironbucket_anti_entropy_last_complete_sync_ms",
                "When a round last found this node and the peer identical on every shared partition (ms since the epoch)",
                "node",
            )?,
            read_repairs: v(
                "ironbucket_read_repairs_total",
                "Read repairs this node coordinated: object versions copied to a stale replica, metadata merged into one, and repairs that failed",
                "kind",
            )?,
        })
    }
}

/// The `/health` answer and its status: 503 when a fatal worker died or the store does not
/// answer.
async fn health_of(s: &Shared) -> (StatusCode, Health) {
    let mut h = Health {
        node_id: s.cfg.node_id.clone(),
        version: s.cfg.version.clone(),
        uptime_seconds: s.started.elapsed().as_secs(),
        ..Health::default()
    };
    if let Some(f) = s.workers.fatal() {
        h.status = "failed".into();
        h.error = Some(format!("worker {} failed: {}", f.worker, f.reason));
        h.failed_worker = Some(f.worker);
        h.failed_at_ms = Some(f.at_ms);
        return (StatusCode::SERVICE_UNAVAILABLE, h);
    }
    match s.store.usage().await {
        Ok(u) => {
            h.status = "ok".into();
            h.cluster = s.cluster.get().map(|cp| {
                let st = cp.status();
                HealthCluster {
                    name: st.cluster_name,
                    id: st.cluster_id,
                    raft_state: st.raft_state,
                    leader: st.leader,
                    members: st.members.len(),
                }
            });
            h.storage = Some(StorageFigures {
                objects: u.objects,
                used_bytes: u.bytes,
                disk_total_bytes: u.disk_total,
                disk_free_bytes: u.disk_free,
            });
            (StatusCode::OK, h)
        }
        Err(e) => {
            h.status = "unavailable".into();
            h.error = Some(e.to_string());
            (StatusCode::SERVICE_UNAVAILABLE, h)
        }
    }
}

/// `GET /health`.
pub(crate) async fn health(State(s): State<Shared>) -> Response {
    let (status, h) = health_of(&s).await;
    json(status, &h)
}

/// `GET /cluster/health`: `/health` plus the clocks: this node's bound on remote stamps and
/// how many it refused, each peer's offset as its RPC credentials showed it, and a warning for
/// every peer whose clock is off by more than the bound.
pub(crate) async fn cluster_health(State(s): State<Shared>) -> Response {
    let (status, mut h) = health_of(&s).await;
    let bound = s
        .local
        .get()
        .map_or(ironbucket_types::DEFAULT_MAX_AHEAD_MS, |l| l.clock().max_ahead_ms());
    let now = ironbucket_types::now_millis();
    let ours = s.cluster.get().map_or(ironbucket_rpc::ProtocolRange::CURRENT, |cp| {
        cp.peers().config().protocol
    });
    let mut report = ClockReport {
        protocol_version: ours.max,
        min_protocol_version: ours.min,
        max_ahead_ms: bound,
        stamps_refused: s.local.get().map_or(0, |l| l.clock().refused()),
        ..ClockReport::default()
    };
    for (node, c) in s.peer_clocks.get().map(|p| p.snapshot()).unwrap_or_default() {
        // Its own calls (to itself) say nothing about its clock.
        if node == s.cfg.node_id {
            continue;
        }
        let beyond = c.offset_ms.unsigned_abs() > bound;
        if beyond {
            h.warnings.push(format!(
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
            report.skewed_nodes.push(node.clone());
        }
        if c.refused_protocol_calls > 0 {
            let why = match c.protocol {
                Some(t) => ours
                    .agree(t)
                    .err()
                    .unwrap_or_else(|| "its protocol version changed since".into()),
                None => "its protocol version statement is malformed".into(),
            };
            h.warnings.push(format!(
                "node {node}'s RPC calls are refused ({} so far): {why}",
                c.refused_protocol_calls
            ));
        }
        report.peers.push(PeerClockView {
            node,
            offset_ms: c.offset_ms,
            seen_ms_ago: now.saturating_sub(c.seen_ms),
            refused_calls: c.refused_calls,
            beyond_bound: beyond,
            protocol_version: c.protocol.map_or(0, |p| p.max),
            min_protocol_version: c.protocol.map_or(0, |p| p.min),
            refused_protocol_calls: c.refused_protocol_calls,
        });
    }
    h.clock = Some(report);
    json(status, &h)
}

/// `GET /health/ready`: 200 only when this node can serve a write now: no fatal worker has
/// died, the store answers, and in a cluster the control plane has a leader, a placement layout
/// exists and its clock does not run ahead of its peers'. Load balancers and compose health
/// checks use it. 503 when it cannot; 404 once it is stopping (it still serves the requests
/// sent to it until load balancers have taken it out: HAProxy's `disable-on-404` stops sending
/// new ones without cutting those under way).
pub(crate) async fn ready(State(s): State<Shared>) -> Response {
    let mut reasons = Vec::new();
    if s.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        reasons.push(
            "this node is stopping: it finishes the requests under way and should be sent no new ones".to_string(),
        );
        return json(
            StatusCode::NOT_FOUND,
            &Ready {
                ready: false,
                node_id: s.cfg.node_id.clone(),
                reasons,
            },
        );
    }
    if let Some(f) = s.workers.fatal() {
        reasons.push(format!("worker {} failed: {}", f.worker, f.reason));
    }
    if let Err(e) = s.store.usage().await {
        reasons.push(format!("the store does not answer: {e}"));
    }
    if let Some(cs) = s.cluster_store.get() {
        if let Err(e) = cs.ready() {
            reasons.push(e);
        }
        // It would answer every write 503: a load balancer should send them elsewhere.
        if let Some(why) = cs.stamps_refused() {
            reasons.push(why);
        }
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &Ready {
            ready,
            node_id: s.cfg.node_id.clone(),
            reasons,
        },
    )
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(s): State<Shared>) -> ApiResult {
    if !s.cfg.metrics_enabled {
        return Err(ApiError::not_found("metrics are disabled (METRICS_ENABLED=false)"));
    }
    let g = &s.gauges;
    if let Ok(u) = s.store.usage().await {
        g.objects.set(u.objects as i64);
        g.bytes.set(u.bytes as i64);
        g.disk_free.set(u.disk_free as i64);
        g.disk_total.set(u.disk_total as i64);
        let l = u.lifecycle;
        for (kind, n) in [
            ("expired_objects", l.expired_objects),
            ("noncurrent_versions", l.noncurrent_versions),
            ("delete_markers", l.delete_markers),
            ("aborted_uploads", l.aborted_uploads),
        ] {
            g.lifecycle.with_label_values(&[kind]).set(n as i64);
        }
    }
    g.uptime.set(s.started.elapsed().as_secs() as i64);
    for w in s.workers.list() {
        use ironbucket_runtime::WorkerState as W;
        let failed = matches!(w.state, W::Dead | W::Backoff);
        g.worker_restarts.with_label_values(&[&w.name]).set(w.restarts as i64);
        g.worker_failed.with_label_values(&[&w.name]).set(i64::from(failed));
    }
    g.node_failed.set(i64::from(s.workers.fatal().is_some()));
    if let Some(l) = s.local.get() {
        g.stamps_refused.set(l.clock().refused() as i64);
        use std::sync::atomic::Ordering::Relaxed;
        let sc = l.scrub_stats();
        for (kind, n) in [
            ("checked", &sc.checked),
            ("bytes", &sc.bytes),
            ("corrupt", &sc.corrupt),
            ("repaired", &sc.repaired),
            ("unverifiable", &sc.unverifiable),
            ("passes", &sc.passes),
        ] {
            g.scrub.with_label_values(&[kind]).set(n.load(Relaxed) as i64);
        }
        let rw = l.rewrap_stats();
        for (kind, n) in [
            ("checked", &rw.checked),
            ("rewrapped", &rw.rewrapped),
            ("failed", &rw.failed),
            ("passes", &rw.passes),
        ] {
            g.rewrap.with_label_values(&[kind]).set(n.load(Relaxed) as i64);
        }
        g.rewrap
            .with_label_values(&["done"])
            .set(i64::from(rw.done.load(Relaxed)));
    }
    for (node, c) in s.peer_clocks.get().map(|p| p.snapshot()).unwrap_or_default() {
        g.peer_offset.with_label_values(&[&node]).set(c.offset_ms);
        g.peer_refused.with_label_values(&[&node]).set(c.refused_calls as i64);
        g.peer_refused_protocol
            .with_label_values(&[&node])
            .set(c.refused_protocol_calls as i64);
    }
    if let Some(cs) = s.cluster_store.get() {
        use std::sync::atomic::Ordering::Relaxed;
        let r = cs.repairs();
        for (kind, n) in [("object", &r.objects), ("metadata", &r.metadata), ("failed", &r.failed)] {
            g.read_repairs.with_label_values(&[kind]).set(n.load(Relaxed) as i64);
        }
        let h = cs.handoff();
        g.hints_pending.reset();
        for (node, n) in h.pending.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            g.hints_pending.with_label_values(&[node]).set(*n as i64);
        }
        for (outcome, n) in [
            ("kept", &h.kept),
            ("replayed", &h.replayed),
            ("dropped", &h.dropped),
            ("refused", &h.refused),
        ] {
            g.hints.with_label_values(&[outcome]).set(n.load(Relaxed) as i64);
        }
        let r = cs.repair_status().await;
        for (kind, n) in [
            ("rounds", r.rounds),
            ("copied", r.objects_copied),
            ("bytes", r.bytes_copied),
            ("deletes", r.deletes_applied),
            ("merged", r.metadata_merged),
            ("failed", r.failures),
        ] {
            g.sync_total.with_label_values(&[kind]).set(n as i64);
        }
        for v in [
            &g.sync_behind_items,
            &g.sync_behind_bytes,
            &g.sync_out_of_sync,
            &g.sync_last_complete,
        ] {
            v.reset();
        }
        for p in &r.peers {
            let n = [p.node.as_str()];
            g.sync_behind_items.with_label_values(&n).set(p.items_behind as i64);
            g.sync_behind_bytes.with_label_values(&n).set(p.bytes_behind as i64);
            g.sync_out_of_sync.with_label_values(&n).set(p.out_of_sync as i64);
            g.sync_last_complete
                .with_label_values(&n)
                .set(p.last_complete_sync.unwrap_or(0) as i64);
        }
    }
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    enc.encode(&s.registry.gather(), &mut buf)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut r = Response::new(Body::from(buf));
    if let Ok(v) = HeaderValue::from_str(enc.format_type()) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(r)
}
