//! `/cluster/repair`: anti-entropy as the operator sees it and steers it. Every member's sync
//! state (per peer: partitions out of sync, items and bytes behind, hints pending, last
//! complete sync), a round started on every member at once, and the copy bandwidth limit
//! changed on every member at runtime. `/cluster/rebalance`: data moving between layout
//! versions (status, start now, cancel). All need the admin token.

use crate::{ApiError, ApiResult, JsonBody, Shared, ok};
use axum::extract::State;
use ironbucket_api::RepairRate;
use ironbucket_replication::ClusterStore;
use std::sync::Arc;

fn cluster_store(s: &Shared) -> Result<Arc<ClusterStore>, ApiError> {
    s.cluster_store
        .get()
        .cloned()
        .ok_or_else(|| ApiError::not_found("this node is not part of a cluster (CLUSTER_ENABLED=false)"))
}

/// `GET /cluster/repair/status`: every member's anti-entropy state.
pub(crate) async fn status(State(s): State<Shared>) -> ApiResult {
    ok(&cluster_store(&s)?.repair_status_all().await)
}

/// `POST /cluster/repair`: every reachable member starts a full comparison round now.
pub(crate) async fn start(State(s): State<Shared>) -> ApiResult {
    ok(&cluster_store(&s)?.start_repair().await)
}

/// `PUT /cluster/repair/rate`: the copy bandwidth limit of every reachable member.
pub(crate) async fn set_rate(State(s): State<Shared>, JsonBody(r): JsonBody<RepairRate>) -> ApiResult {
    if !r.mb_per_sec.is_finite() || !(0.0..=1e6).contains(&r.mb_per_sec) {
        return Err(ApiError::bad_request(format!(
            "mb_per_sec must be between 0 (no limit) and 1000000, not {}",
            r.mb_per_sec
        )));
    }
    ok(&cluster_store(&s)?.set_repair_rate((r.mb_per_sec * 1e6) as u64).await)
}

/// `GET /cluster/rebalance/status`: the layouts data still moves from and every member's part.
pub(crate) async fn rebalance_status(State(s): State<Shared>) -> ApiResult {
    ok(&cluster_store(&s)?.rebalance_status().await)
}

/// `POST /cluster/rebalance`: every reachable member's mover takes its next step now.
pub(crate) async fn rebalance(State(s): State<Shared>) -> ApiResult {
    ok(&cluster_store(&s)?.start_rebalance().await)
}

/// `POST /cluster/rebalance/cancel`: back to the oldest layout data is still placed by.
pub(crate) async fn cancel_rebalance(State(s): State<Shared>) -> ApiResult {
    let store = cluster_store(&s)?;
    let cp = s
        .cluster
        .get()
        .cloned()
        .ok_or_else(|| ApiError::not_found("this node is not part of a cluster (CLUSTER_ENABLED=false)"))?;
    cp.cancel_move().await.map_err(crate::cluster::cluster_error)?;
    ok(&store.rebalance_status().await)
}
