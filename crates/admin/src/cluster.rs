//! `/cluster/*`: the control plane's status and members (with the failure detector's view),
//! where a key lives, and the changes an operator makes: replication settings, members, locks
//! and barriers, forced recovery. Reads of status are public; changes need the admin token.

use crate::{ApiError, ApiResult, JsonBody, Shared, ok};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ironbucket_api::{
    BarrierRequest, ClusterStatus, ForceRecover, LoadView, LockRequest, MemberChange, MemberView, ReplicationChange,
    ReplicationView,
};
use ironbucket_consensus::{ControlPlane, LockCmd};
use std::sync::Arc;

pub(crate) fn cluster_error(e: ironbucket_consensus::Error) -> ApiError {
    use ironbucket_consensus::Error as E;
    let status = match &e {
        E::Invalid(m) if m.starts_with("no member named") => StatusCode::NOT_FOUND,
        E::Invalid(_) | E::Config(_) => StatusCode::BAD_REQUEST,
        E::NoQuorum(_) => StatusCode::SERVICE_UNAVAILABLE,
        E::Storage(_) | E::Raft(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

pub(crate) fn control(s: &Shared) -> Result<Arc<ControlPlane>, ApiError> {
    s.cluster
        .get()
        .cloned()
        .ok_or_else(|| ApiError::not_found("this node is not part of a cluster (CLUSTER_ENABLED=false)"))
}

/// The control plane's status with each member's liveness and load.
fn status_of(s: &Shared, cp: &ControlPlane) -> ClusterStatus {
    let st = cp.status();
    // What the failure detector says of each member ("unknown" before gossip runs).
    let view = s.gossip.get().map(|g| g.view()).unwrap_or_default();
    let members = st
        .members
        .into_iter()
        .map(|m| {
            let seen = view.get(&m.name);
            MemberView {
                liveness: seen.map_or("unknown", |n| n.liveness.as_str()).to_string(),
                load: seen.and_then(|n| n.load.as_ref()).map(|l| LoadView {
                    objects: l.figures.objects,
                    bytes: l.figures.bytes,
                    capacity_bytes: l.figures.capacity_bytes,
                    free_bytes: l.figures.free_bytes,
                }),
                name: m.name,
                raft_id: m.raft_id,
                rpc_addr: m.rpc_addr,
                raft_role: m.raft_role,
                state: m.state,
                zone: m.zone,
                rack: m.rack,
                weight: m.weight,
                role: m.role,
            }
        })
        .collect();
    ClusterStatus {
        node: st.node,
        cluster_name: st.cluster_name,
        cluster_id: st.cluster_id,
        raft_state: st.raft_state,
        term: st.term,
        leader: st.leader,
        last_log_index: st.last_log_index,
        last_applied: st.last_applied,
        snapshot_index: st.snapshot_index,
        purged_index: st.purged_index,
        layout_version: st.layout_version,
        replication: ReplicationView {
            factor: st.replication.factor,
            strategy: st.replication.strategy.to_string(),
            read_consistency: st.replication.read_consistency.to_string(),
            write_consistency: st.replication.write_consistency.to_string(),
            vnodes: st.replication.vnodes,
        },
        members,
        job_leaders: st.job_leaders,
        leader_leases: st.leader_leases,
    }
}

/// The answer to a change: the status after it, or why it failed.
fn changed(s: &Shared, cp: &ControlPlane, r: Result<(), ironbucket_consensus::Error>) -> ApiResult {
    r.map_err(cluster_error)?;
    ok(&status_of(s, cp))
}

/// `GET /cluster/status`.
pub(crate) async fn status(State(s): State<Shared>) -> ApiResult {
    let cp = control(&s)?;
    ok(&status_of(&s, &cp))
}

/// `GET /cluster/nodes`.
pub(crate) async fn nodes(State(s): State<Shared>) -> ApiResult {
    let cp = control(&s)?;
    ok(&status_of(&s, &cp).members)
}

/// `GET /cluster/locate/{bucket}/{key}` (the key may hold slashes).
pub(crate) async fn locate(State(s): State<Shared>, Path((bucket, key)): Path<(String, String)>) -> ApiResult {
    let Some(store) = s.cluster_store.get() else {
        return Err(ApiError::not_found(
            "this node is not part of a cluster (CLUSTER_ENABLED=false)",
        ));
    };
    match store.locate(&bucket, &key).await {
        Ok(l) => ok(&l),
        Err(ironbucket_store::Error::NoSuchBucket) => Err(ApiError::not_found(format!("no bucket named {bucket:?}"))),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// `GET /cluster/locate` without a key: how to ask.
pub(crate) async fn locate_usage() -> ApiError {
    ApiError::bad_request("use /cluster/locate/{bucket}/{key}")
}

/// `PUT /cluster/replication`: factor, strategy, default consistency levels.
pub(crate) async fn set_replication(State(s): State<Shared>, JsonBody(c): JsonBody<ReplicationChange>) -> ApiResult {
    let cp = control(&s)?;
    let mut r = cp.with_state(|st| st.replication.clone());
    if let Some(f) = c.factor {
        r.factor = f;
    }
    if let Some(v) = c.strategy {
        r.strategy = v
            .parse()
            .map_err(|e: ironbucket_types::BadStrategy| ApiError::bad_request(e.to_string()))?;
    }
    let level = |v: String| {
        v.parse()
            .map_err(|e: ironbucket_types::BadConsistency| ApiError::bad_request(e.to_string()))
    };
    if let Some(v) = c.read_consistency {
        r.read_consistency = level(v)?;
    }
    if let Some(v) = c.write_consistency {
        r.write_consistency = level(v)?;
    }
    let res = cp.set_replication(r).await;
    changed(&s, &cp, res)
}

/// `PUT /cluster/nodes/{name}`: role, zone, rack, weight.
pub(crate) async fn update_member(
    State(s): State<Shared>,
    Path(name): Path<String>,
    JsonBody(c): JsonBody<MemberChange>,
) -> ApiResult {
    let cp = control(&s)?;
    let patch = ironbucket_consensus::MemberPatch {
        role: c.role,
        zone: c.zone,
        rack: c.rack,
        weight: c.weight,
    };
    let res = cp.update_member(&name, patch).await;
    changed(&s, &cp, res)
}

/// `DELETE /cluster/nodes/{name}`: removes a dead node (its data is re-created on the others
/// from the remaining replicas first; then it leaves the Raft group).
pub(crate) async fn remove_member(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let cp = control(&s)?;
    // Only a node the failure detector sees down (or has never heard of) is removed as dead.
    let seen = s
        .gossip
        .get()
        .and_then(|g| g.view().get(&name).map(|n| n.liveness.as_str().to_string()));
    if let Some(l) = seen.filter(|l| l == "alive" || l == "suspect")
        && name != cp.node_name()
    {
        return Err(ApiError::bad_request(format!(
            "node {name} is {l} (not down): removing it as dead would leave its copies unused; decommission it instead (POST /cluster/nodes/{name}/decommission)"
        )));
    }
    let res = cp.remove_dead(&name).await;
    changed(&s, &cp, res)
}

/// `POST /cluster/nodes/{name}/drain`, `/activate`, `/decommission` and `/replace`.
pub(crate) async fn member_action(State(s): State<Shared>, Path((name, action)): Path<(String, String)>) -> ApiResult {
    let cp = control(&s)?;
    let res = match action.as_str() {
        "drain" => cp.drain(&name).await,
        "activate" => cp.activate(&name).await,
        "decommission" => cp.decommission(&name).await,
        "replace" => cp.allow_replace(&name).await,
        "promote" => cp.promote(&name).await,
        other => {
            return Err(ApiError::not_found(format!(
                "no node action {other:?} (drain, activate, decommission, replace or promote)"
            )));
        }
    };
    changed(&s, &cp, res)
}

/// `POST /cluster/force-recover` with `{"node": "<this node>"}`.
pub(crate) async fn force_recover(State(s): State<Shared>, JsonBody(b): JsonBody<ForceRecover>) -> ApiResult {
    let cp = control(&s)?;
    let res = cp.force_recover(&b.node).await;
    changed(&s, &cp, res)
}

/// `GET /cluster/locks`: the lock table as the control plane holds it.
pub(crate) async fn locks(State(s): State<Shared>) -> ApiResult {
    let cp = control(&s)?;
    ok(&cp.lock_table())
}

/// `POST /cluster/locks/{name}`: acquire, renew or release a lease.
pub(crate) async fn lock(
    State(s): State<Shared>,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<LockRequest>,
) -> ApiResult {
    let cp = control(&s)?;
    if b.holder.is_empty() {
        return Err(ApiError::bad_request("holder is required"));
    }
    let now = ironbucket_types::now_millis();
    let ttl_ms = b.ttl_ms.unwrap_or(10_000);
    let cmd = match b.op.as_str() {
        "acquire" => LockCmd::Acquire {
            name,
            holder: b.holder,
            ttl_ms,
            permits: b.permits.unwrap_or(1),
            wait: b.wait,
            now,
            leader_renewed: false,
        },
        "renew" => LockCmd::Renew {
            name,
            holder: b.holder,
            token: b.token,
            ttl_ms,
            now,
            leader_renewed: false,
        },
        "release" => LockCmd::Release {
            name,
            holder: b.holder,
            now,
        },
        _ => return Err(ApiError::bad_request("op must be acquire, renew or release")),
    };
    ok(&cp.lock(cmd).await.map_err(cluster_error)?)
}

/// `POST /cluster/barriers/{name}`: arrive at a barrier of `count` participants.
pub(crate) async fn barrier(
    State(s): State<Shared>,
    Path(name): Path<String>,
    JsonBody(b): JsonBody<BarrierRequest>,
) -> ApiResult {
    let cp = control(&s)?;
    let cmd = LockCmd::Arrive {
        barrier: name,
        participant: b.participant,
        count: b.count.unwrap_or(1),
    };
    ok(&cp.lock(cmd).await.map_err(cluster_error)?)
}

/// `GET /cluster/metrics/replication`: hinted handoff per replica node, and read repairs.
pub(crate) async fn replication_metrics(State(s): State<Shared>) -> ApiResult {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(cs) = s.cluster_store.get() else {
        return Err(ApiError::not_found(
            "this node is not part of a cluster (CLUSTER_ENABLED=false)",
        ));
    };
    let h = cs.handoff();
    let r = cs.repairs();
    let pending = h.pending.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ok(&ironbucket_api::ReplicationMetrics {
        hints_pending: pending.into_iter().collect(),
        hints_kept: h.kept.load(Relaxed),
        hints_replayed: h.replayed.load(Relaxed),
        hints_dropped: h.dropped.load(Relaxed),
        hints_refused: h.refused.load(Relaxed),
        read_repairs: ironbucket_api::ReadRepairs {
            objects: r.objects.load(Relaxed),
            metadata: r.metadata.load(Relaxed),
            failed: r.failed.load(Relaxed),
        },
        replica_writes_in_flight: cs.backlog().per_peer().into_iter().collect(),
        backlog: cs.backlog().total(),
        max_backlog: cs.handoff_config().max_backlog,
        backlog_waits: cs.backlog().waits.load(Relaxed),
    })
}

/// `POST /cluster/keys/reseal`: after a cluster secret rotation, seals every access key secret
/// still sealed with an accepted older secret with the current one.
pub(crate) async fn reseal_keys(State(s): State<Shared>) -> ApiResult {
    let Some(cs) = s.cluster_store.get() else {
        return Err(ApiError::not_found(
            "this node is not part of a cluster (CLUSTER_ENABLED=false); a single node's key secrets are sealed with keys.kek, not with a cluster secret",
        ));
    };
    match cs.reseal_keys().await {
        Ok(report) => ok(&report),
        Err(ironbucket_store::Error::InvalidRequest(why)) => Err(ApiError::new(StatusCode::CONFLICT, why)),
        Err(e) => Err(crate::manage::store_error(e)),
    }
}
