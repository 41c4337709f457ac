//! `/workers`, `/keys` and `/buckets`: the node's background workers, access keys, and bucket
//! usage and quotas. Every route here needs the admin token (checked by the router).

use crate::{ApiError, ApiResult, JsonBody, Shared, json, ok};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ironbucket_api::{
    BucketUsage, CreateKey, KeyChanged, KeyView, Quota, QuotaSet, SetPermission, SetTranquility, WorkerStatus,
};

/// Store errors as admin answers: 404 for what does not exist, 400 for bad input, 503 when
/// the cluster cannot decide, 500 otherwise.
pub(crate) fn store_error(e: ironbucket_store::Error) -> ApiError {
    use ironbucket_store::Error as E;
    let status = match &e {
        E::NoSuchAccessKey(_) | E::NoSuchBucket => StatusCode::NOT_FOUND,
        E::InvalidArgument(_) | E::InvalidBucketName(_) => StatusCode::BAD_REQUEST,
        E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.to_string())
}

fn key_view(k: &ironbucket_store::KeyInfo) -> KeyView {
    KeyView {
        access_key: k.access_key.clone(),
        name: k.name.clone(),
        created_ms: k.created,
        enabled: k.enabled,
        buckets: k
            .buckets
            .iter()
            .map(|(b, p)| (b.clone(), p.as_str().to_string()))
            .collect(),
        secret_key: None,
    }
}

fn find_worker(s: &Shared, name: &str) -> Result<WorkerStatus, ApiError> {
    s.workers
        .list()
        .into_iter()
        .find(|w| w.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no worker named {name:?} (GET /workers lists them)")))
}

/// `GET /workers`.
pub(crate) async fn workers(State(s): State<Shared>) -> ApiResult {
    ok(&s.workers.list())
}

/// `GET /workers/{name}`.
pub(crate) async fn worker(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    ok(&find_worker(&s, &name)?)
}

/// `PUT /workers/{name}` with `{"tranquility": n}` (0 to 1000).
pub(crate) async fn set_tranquility(
    State(s): State<Shared>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Option<SetTranquility>>,
) -> ApiResult {
    let Some(t) = body.map(|b| b.tranquility).filter(|t| *t <= 1000) else {
        return Err(ApiError::bad_request("give {\"tranquility\": n} with n from 0 to 1000"));
    };
    if !s.workers.set_tranquility(&name, t) {
        return Err(find_worker(&s, &name)
            .err()
            .unwrap_or_else(|| ApiError::not_found(name)));
    }
    ok(&find_worker(&s, &name)?)
}

/// `POST /workers/{name}/wake`: run the next round now.
pub(crate) async fn wake(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    if !s.workers.wake(&name) {
        return Err(find_worker(&s, &name)
            .err()
            .unwrap_or_else(|| ApiError::not_found(name)));
    }
    ok(&find_worker(&s, &name)?)
}

/// `GET /keys`: every key, never a secret.
pub(crate) async fn list_keys(State(s): State<Shared>) -> ApiResult {
    let keys = s.store.list_keys().await.map_err(store_error)?;
    ok(&keys.iter().map(key_view).collect::<Vec<_>>())
}

/// `POST /keys` with `{"name": "..."}`: the new key, with its secret (shown only now).
pub(crate) async fn create_key(State(s): State<Shared>, JsonBody(body): JsonBody<CreateKey>) -> ApiResult {
    let (info, secret) = s.store.create_key(&body.name).await.map_err(store_error)?;
    let mut v = key_view(&info);
    v.secret_key = Some(secret);
    Ok(json(StatusCode::CREATED, &v))
}

/// `DELETE /keys/{ak}`.
pub(crate) async fn delete_key(State(s): State<Shared>, Path(ak): Path<String>) -> ApiResult {
    s.store.delete_key(&ak).await.map_err(store_error)?;
    ok(&KeyChanged {
        deleted: Some(ak),
        ..KeyChanged::default()
    })
}

/// `POST /keys/{ak}/enable` and `/disable`.
pub(crate) async fn enable_key(State(s): State<Shared>, Path((ak, action)): Path<(String, String)>) -> ApiResult {
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        other => {
            return Err(ApiError::not_found(format!(
                "no key action {other:?} (enable or disable)"
            )));
        }
    };
    s.store.set_key_enabled(&ak, enabled).await.map_err(store_error)?;
    ok(&KeyChanged {
        access_key: Some(ak),
        enabled: Some(enabled),
        ..KeyChanged::default()
    })
}

/// `PUT /keys/{ak}/buckets/{bucket}` with `{"permission": "read" | "write" | "owner"}`.
pub(crate) async fn allow_key(
    State(s): State<Shared>,
    Path((ak, bucket)): Path<(String, String)>,
    JsonBody(body): JsonBody<Option<SetPermission>>,
) -> ApiResult {
    let Some(p) = body.and_then(|b| ironbucket_store::Permission::parse(&b.permission)) else {
        return Err(ApiError::bad_request("permission must be read, write or owner"));
    };
    s.store
        .set_key_permission(&ak, &bucket, Some(p))
        .await
        .map_err(store_error)?;
    ok(&KeyChanged {
        access_key: Some(ak),
        bucket: Some(bucket),
        permission: Some(Some(p.as_str().to_string())),
        ..KeyChanged::default()
    })
}

/// `DELETE /keys/{ak}/buckets/{bucket}`.
pub(crate) async fn deny_key(State(s): State<Shared>, Path((ak, bucket)): Path<(String, String)>) -> ApiResult {
    s.store
        .set_key_permission(&ak, &bucket, None)
        .await
        .map_err(store_error)?;
    ok(&KeyChanged {
        access_key: Some(ak),
        bucket: Some(bucket),
        permission: Some(None),
        ..KeyChanged::default()
    })
}

/// `GET /buckets/{bucket}`: usage, quota and requests per month.
pub(crate) async fn bucket_usage(State(s): State<Shared>, Path(bucket): Path<String>) -> ApiResult {
    let u = s.store.bucket_usage(&bucket).await.map_err(store_error)?;
    ok(&BucketUsage {
        bucket,
        objects: u.objects,
        bytes: u.bytes,
        quota: u.quota.map(|q| Quota {
            max_bytes: q.max_bytes,
            max_objects: q.max_objects,
        }),
        requests_by_month: u.requests,
    })
}

/// `PUT /buckets/{bucket}/quota` with `{"max_bytes": n, "max_objects": n}` (either or both).
pub(crate) async fn set_quota(
    State(s): State<Shared>,
    Path(bucket): Path<String>,
    JsonBody(q): JsonBody<Quota>,
) -> ApiResult {
    if q.max_bytes.is_none() && q.max_objects.is_none() {
        return Err(ApiError::bad_request(
            "give max_bytes and/or max_objects (non-negative integers)",
        ));
    }
    let quota = ironbucket_store::Quota {
        max_bytes: q.max_bytes,
        max_objects: q.max_objects,
    };
    s.store
        .set_bucket_quota(&bucket, Some(quota))
        .await
        .map_err(store_error)?;
    ok(&QuotaSet { bucket, quota: Some(q) })
}

/// `DELETE /buckets/{bucket}/quota`.
pub(crate) async fn clear_quota(State(s): State<Shared>, Path(bucket): Path<String>) -> ApiResult {
    s.store.set_bucket_quota(&bucket, None).await.map_err(store_error)?;
    ok(&QuotaSet { bucket, quota: None })
}
