//! Buckets themselves (create, head, delete, list, location) and listing their contents:
//! ListObjects, ListObjectsV2 and ListObjectVersions.

use super::{Front, owner, s3r};
use crate::authz::grants_from_headers;
use crate::convert::*;
use base64::Engine;
use ironbucket_store::{Acl, AclPermission, ListQuery, ObjectInfo};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

pub(super) async fn create_bucket(
    front: &Front,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let creator = req
        .credentials
        .as_ref()
        .map(|c| c.access_key.clone())
        .filter(|ak| !front.roots.contains(ak));
    let input = req.input;
    if let Some(loc) = input
        .create_bucket_configuration
        .as_ref()
        .and_then(|c| c.location_constraint.as_ref())
        && !loc.as_str().is_empty()
        && loc.as_str() != front.region
    {
        return Err(S3Error::with_message(
            S3ErrorCode::Custom("IllegalLocationConstraintException".into()),
            format!(
                "The {} location constraint is incompatible for the region specific endpoint this request was sent to ({}).",
                loc.as_str(),
                front.region
            ),
        ));
    }
    let owner = creator.clone().unwrap_or_else(|| front.root_id.clone());
    let acl = grants_from_headers(
        &owner,
        &owner,
        input.acl.as_ref().map(|a| a.as_str()),
        &[
            (AclPermission::FullControl, input.grant_full_control.as_deref()),
            (AclPermission::Read, input.grant_read.as_deref()),
            (AclPermission::ReadAcp, input.grant_read_acp.as_deref()),
            (AclPermission::Write, input.grant_write.as_deref()),
            (AclPermission::WriteAcp, input.grant_write_acp.as_deref()),
        ],
    )?
    .unwrap_or_else(|| Acl::private(&owner));
    // One step: the bucket, its ACL and (for a key that is not root) its owner, so that a
    // failure never leaves a bucket without its ACL or owner.
    front
        .store
        .create_bucket_as(ironbucket_store::NewBucket {
            name: input.bucket.clone(),
            object_lock: input.object_lock_enabled_for_bucket == Some(true),
            acl: Some(acl),
            owner_key: creator,
        })
        .await
        .map_err(s3_err)?;
    s3r(CreateBucketOutput {
        location: Some(format!("/{}", input.bucket)),
    })
}

pub(super) async fn head_bucket(
    front: &Front,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    front.store.head_bucket(&req.input.bucket).await.map_err(s3_err)?;
    s3r(HeadBucketOutput {
        bucket_region: Some(front.region.clone()),
        ..Default::default()
    })
}

pub(super) async fn delete_bucket(
    front: &Front,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    front.store.delete_bucket(&req.input.bucket).await.map_err(s3_err)?;
    s3r(DeleteBucketOutput {})
}

pub(super) async fn list_buckets(
    front: &Front,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let owner_id = Front::caller_id(req.credentials.as_ref());
    let mut buckets = front.store.list_buckets().await.map_err(s3_err)?;
    if let Some(c) = req
        .credentials
        .as_ref()
        .filter(|c| !front.roots.contains(&c.access_key))
    {
        // Other keys see only the buckets they have a permission on.
        let granted = match front.store.key_secret(&c.access_key).await.map_err(s3_err)? {
            Some((_, info)) => info.buckets,
            None => Default::default(),
        };
        buckets.retain(|b| granted.contains_key(&b.name));
    }
    let buckets = buckets
        .into_iter()
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(ts(b.created)),
            bucket_region: Some(front.region.clone()),
        })
        .collect();
    s3r(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some(owner_id.clone()),
            id: Some(owner_id),
        }),
        ..Default::default()
    })
}

pub(super) async fn get_bucket_location(
    front: &Front,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    front.store.head_bucket(&req.input.bucket).await.map_err(s3_err)?;
    let location_constraint =
        (front.region != "us-east-1").then(|| BucketLocationConstraint::from(front.region.clone()));
    s3r(GetBucketLocationOutput { location_constraint })
}

pub(super) async fn list_objects(
    front: &Front,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let i = req.input;
    let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
    let max = max_keys(i.max_keys)?;
    let q = ListQuery {
        prefix: i.prefix.clone().unwrap_or_default(),
        delimiter: i.delimiter.clone(),
        marker: i.marker.clone().filter(|m| !m.is_empty()),
        max_keys: max,
    };
    let page = front.store.list_objects(&i.bucket, q).await.map_err(s3_err)?;
    let enc = |s: String| if url { url_encode(&s) } else { s };
    let has_delim = i.delimiter.as_deref().is_some_and(|d| !d.is_empty());
    s3r(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: Some(enc(i.prefix.unwrap_or_default())),
        marker: Some(enc(i.marker.unwrap_or_default())),
        max_keys: Some(max as i32),
        is_truncated: Some(page.truncated),
        next_marker: if page.truncated && has_delim {
            page.next_marker.map(enc)
        } else {
            None
        },
        delimiter: i.delimiter.map(enc),
        encoding_type: i.encoding_type,
        contents: Some(page.objects.into_iter().map(|o| object_entry(o, true, url)).collect()),
        common_prefixes: Some(
            page.common_prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                .collect(),
        ),
        ..Default::default()
    })
}

pub(super) async fn list_objects_v2(
    front: &Front,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let i = req.input;
    let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
    let max = max_keys(i.max_keys)?;
    let marker = match &i.continuation_token {
        Some(t) => Some(decode_token(t)?),
        None => i.start_after.clone().filter(|s| !s.is_empty()),
    };
    let q = ListQuery {
        prefix: i.prefix.clone().unwrap_or_default(),
        delimiter: i.delimiter.clone(),
        marker,
        max_keys: max,
    };
    let page = front.store.list_objects(&i.bucket, q).await.map_err(s3_err)?;
    let enc = |s: String| if url { url_encode(&s) } else { s };
    let fetch_owner = i.fetch_owner.unwrap_or(false);
    let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
    s3r(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: Some(enc(i.prefix.unwrap_or_default())),
        max_keys: Some(max as i32),
        key_count: Some(key_count),
        continuation_token: i.continuation_token,
        next_continuation_token: if page.truncated {
            page.next_marker.map(|m| encode_token(&m))
        } else {
            None
        },
        is_truncated: Some(page.truncated),
        start_after: i.start_after.map(enc),
        delimiter: i.delimiter.map(enc),
        encoding_type: i.encoding_type,
        contents: Some(
            page.objects
                .into_iter()
                .map(|o| object_entry(o, fetch_owner, url))
                .collect(),
        ),
        common_prefixes: Some(
            page.common_prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                .collect(),
        ),
        ..Default::default()
    })
}

pub(super) async fn list_object_versions(
    front: &Front,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let i = req.input;
    let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
    let enc = |s: String| if url { url_encode(&s) } else { s };
    let max = max_keys(i.max_keys)?;
    if i.version_id_marker.is_some() && i.key_marker.is_none() {
        return Err(s3_error!(
            InvalidArgument,
            "A version-id marker cannot be specified without a key marker."
        ));
    }
    let q = ironbucket_store::VersionListQuery {
        prefix: i.prefix.clone().unwrap_or_default(),
        delimiter: i.delimiter.clone(),
        key_marker: i.key_marker.clone().filter(|s| !s.is_empty()),
        version_id_marker: i.version_id_marker.clone().filter(|s| !s.is_empty()),
        max_keys: max,
        lenient_marker: false,
    };
    let page = front.store.list_object_versions(&i.bucket, q).await.map_err(s3_err)?;
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    for v in page.versions {
        if v.delete_marker {
            markers.push(DeleteMarkerEntry {
                is_latest: Some(v.is_latest),
                key: Some(enc(v.info.key)),
                last_modified: Some(ts(v.info.last_modified)),
                owner: Some(owner()),
                version_id: Some(v.info.version_id),
            });
        } else {
            versions.push(ObjectVersion {
                e_tag: Some(etag(&v.info.etag)),
                is_latest: Some(v.is_latest),
                key: Some(enc(v.info.key)),
                last_modified: Some(ts(v.info.last_modified)),
                owner: Some(owner()),
                size: Some(v.info.size as i64),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                version_id: Some(v.info.version_id),
                ..Default::default()
            });
        }
    }
    s3r(ListObjectVersionsOutput {
        name: Some(i.bucket),
        prefix: Some(enc(i.prefix.unwrap_or_default())),
        key_marker: Some(enc(i.key_marker.unwrap_or_default())),
        version_id_marker: Some(i.version_id_marker.unwrap_or_default()),
        max_keys: Some(max as i32),
        delimiter: i.delimiter.map(enc),
        encoding_type: i.encoding_type,
        is_truncated: Some(page.truncated),
        next_key_marker: if page.truncated {
            page.next_key_marker.map(enc)
        } else {
            None
        },
        next_version_id_marker: if page.truncated {
            page.next_version_id_marker
        } else {
            None
        },
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(
            page.common_prefixes
                .into_iter()
                .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                .collect(),
        ),
        ..Default::default()
    })
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be a non-negative integer")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn object_entry(o: ObjectInfo, with_owner: bool, url: bool) -> Object {
    Object {
        key: Some(if url { url_encode(&o.key) } else { o.key }),
        e_tag: Some(etag(&o.etag)),
        last_modified: Some(ts(o.last_modified)),
        size: Some(o.size as i64),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        owner: with_owner.then(owner),
        checksum_algorithm: {
            let algs: Vec<ChecksumAlgorithm> = o.checksums.algorithms().map(algorithm_dto).collect();
            (!algs.is_empty()).then_some(algs)
        },
        ..Default::default()
    }
}

fn encode_token(marker: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker.as_bytes())
}

fn decode_token(t: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}
