//! `/cluster/join-tokens`: the operator-issued tokens a new node presents to join the cluster
//! (see `ironbucket_consensus::joining`). Admin role only; the token text is in the answer to
//! its creation, that once.

use crate::cluster::{cluster_error, control};
use crate::{ApiError, ApiResult, JsonBody, Shared, ok};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ironbucket_api::{CreateJoinToken, JoinTokenCreated, JoinTokenView};
use ironbucket_consensus::Outcome;
use ironbucket_consensus::joining::JoinToken;

/// How long a join token lives unless asked otherwise: an hour.
const DEFAULT_TTL_SECS: u64 = 3600;

fn view(t: &JoinToken) -> JoinTokenView {
    JoinTokenView {
        id: t.id.clone(),
        created: t.created,
        expires: t.expires,
        uses_left: t.uses_left,
        used_by: t.used_by.clone(),
    }
}

/// `GET /cluster/join-tokens`.
pub(crate) async fn list(State(s): State<Shared>) -> ApiResult {
    let cp = control(&s)?;
    let v: Vec<JoinTokenView> = cp.join_tokens().iter().map(view).collect();
    ok(&v)
}

/// `POST /cluster/join-tokens` with `{"ttl_secs": ..., "uses": ...}` (both optional).
pub(crate) async fn create(State(s): State<Shared>, JsonBody(req): JsonBody<Option<CreateJoinToken>>) -> ApiResult {
    let cp = control(&s)?;
    let req = req.unwrap_or_default();
    let (token, rec) = cp
        .create_join_token(req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS), req.uses.unwrap_or(1))
        .await
        .map_err(cluster_error)?;
    ok(&JoinTokenCreated {
        view: view(&rec),
        token,
    })
}

/// `DELETE /cluster/join-tokens/{id}`.
pub(crate) async fn revoke(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let cp = control(&s)?;
    match cp.delete_join_token(&id).await.map_err(cluster_error)? {
        Outcome::Done => ok(&serde_json::json!({ "revoked": id })),
        Outcome::Refused { reason } => Err(ApiError::not_found(reason)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome {other:?}"),
        )),
    }
}
