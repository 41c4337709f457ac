//! A bucket's configuration subresources: tagging, lifecycle rules, default encryption and
//! CORS rules.

use super::{Front, s3r};
use crate::convert::*;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

pub(super) async fn put_bucket_tagging(
    front: &Front,
    req: S3Request<PutBucketTaggingInput>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    let tags = tags_from_dto(req.input.tagging.tag_set);
    front
        .store
        .put_bucket_tagging(&req.input.bucket, tags)
        .await
        .map_err(s3_err)?;
    s3r(PutBucketTaggingOutput {})
}

pub(super) async fn get_bucket_tagging(
    front: &Front,
    req: S3Request<GetBucketTaggingInput>,
) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let tags = front
        .store
        .get_bucket_tagging(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    s3r(GetBucketTaggingOutput {
        tag_set: tags_to_dto(tags),
    })
}

pub(super) async fn delete_bucket_tagging(
    front: &Front,
    req: S3Request<DeleteBucketTaggingInput>,
) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
    front
        .store
        .delete_bucket_tagging(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    s3r(DeleteBucketTaggingOutput {})
}

pub(super) async fn put_bucket_lifecycle_configuration(
    front: &Front,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let i = req.input;
    let cfg = i
        .lifecycle_configuration
        .ok_or_else(|| s3_error!(MalformedXML, "missing LifecycleConfiguration"))?;
    let mut rules = Vec::new();
    for r in cfg.rules {
        if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
            || r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
        {
            return Err(s3_error!(
                NotImplemented,
                "lifecycle transitions are not supported (every object is STANDARD)"
            ));
        }
        let f = r.filter.unwrap_or_default();
        let and = f.and.unwrap_or_default();
        let pos = |v: Option<i32>, what: &str| -> S3Result<Option<u32>> {
            v.map(|n| {
                u32::try_from(n).map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        format!("{what} must be a positive integer"),
                    )
                })
            })
            .transpose()
        };
        let size = |v: Option<i64>| v.map(|n| n.max(0) as u64);
        let mut tags: Vec<(String, String)> = and
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect();
        if let Some(t) = f.tag {
            tags.push((t.key.unwrap_or_default(), t.value.unwrap_or_default()));
        }
        let exp = r.expiration.unwrap_or_default();
        let nc = r.noncurrent_version_expiration.unwrap_or_default();
        rules.push(ironbucket_store::LifecycleRule {
            id: r.id,
            enabled: r.status.as_str() == "Enabled",
            prefix: f.prefix.or(and.prefix).or(r.prefix).unwrap_or_default(),
            tags,
            size_greater_than: size(f.object_size_greater_than.or(and.object_size_greater_than)),
            size_less_than: size(f.object_size_less_than.or(and.object_size_less_than)),
            expiration_days: pos(exp.days, "Expiration Days")?,
            expiration_date: exp.date.as_ref().map(millis),
            expired_object_delete_marker: exp.expired_object_delete_marker.unwrap_or(false),
            noncurrent_days: pos(nc.noncurrent_days, "NoncurrentDays")?,
            newer_noncurrent_versions: pos(nc.newer_noncurrent_versions, "NewerNoncurrentVersions")?,
            abort_incomplete_multipart_days: pos(
                r.abort_incomplete_multipart_upload
                    .and_then(|a| a.days_after_initiation),
                "DaysAfterInitiation",
            )?,
        });
    }
    front
        .store
        .put_bucket_lifecycle(&i.bucket, rules)
        .await
        .map_err(s3_err)?;
    s3r(PutBucketLifecycleConfigurationOutput::default())
}

pub(super) async fn get_bucket_lifecycle_configuration(
    front: &Front,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let rules = front
        .store
        .get_bucket_lifecycle(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    let rules = rules
        .into_iter()
        .map(|r| {
            let tags: Vec<s3s::dto::Tag> = r
                .tags
                .iter()
                .map(|(k, v)| s3s::dto::Tag {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect();
            let conditions =
                tags.len() + usize::from(r.size_greater_than.is_some()) + usize::from(r.size_less_than.is_some());
            let filter = if conditions == 0 {
                LifecycleRuleFilter {
                    prefix: Some(r.prefix.clone()),
                    ..Default::default()
                }
            } else {
                LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: Some(r.prefix.clone()),
                        tags: Some(tags),
                        object_size_greater_than: r.size_greater_than.map(|n| n as i64),
                        object_size_less_than: r.size_less_than.map(|n| n as i64),
                    }),
                    ..Default::default()
                }
            };
            let expiration = (r.expiration_days.is_some()
                || r.expiration_date.is_some()
                || r.expired_object_delete_marker)
                .then(|| LifecycleExpiration {
                    days: r.expiration_days.map(|d| d as i32),
                    date: r.expiration_date.map(ts),
                    expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
                });
            LifecycleRule {
                id: r.id,
                status: ExpirationStatus::from_static(if r.enabled {
                    ExpirationStatus::ENABLED
                } else {
                    ExpirationStatus::DISABLED
                }),
                filter: Some(filter),
                expiration,
                noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
                    noncurrent_days: Some(d as i32),
                    newer_noncurrent_versions: r.newer_noncurrent_versions.map(|n| n as i32),
                }),
                abort_incomplete_multipart_upload: r.abort_incomplete_multipart_days.map(|d| {
                    AbortIncompleteMultipartUpload {
                        days_after_initiation: Some(d as i32),
                    }
                }),
                noncurrent_version_transitions: None,
                prefix: None,
                transitions: None,
            }
        })
        .collect();
    s3r(GetBucketLifecycleConfigurationOutput {
        rules: Some(rules),
        ..Default::default()
    })
}

pub(super) async fn delete_bucket_lifecycle(
    front: &Front,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    front
        .store
        .delete_bucket_lifecycle(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    s3r(DeleteBucketLifecycleOutput {})
}

pub(super) async fn put_bucket_encryption(
    front: &Front,
    req: S3Request<PutBucketEncryptionInput>,
) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
    let i = req.input;
    let algo = i
        .server_side_encryption_configuration
        .rules
        .first()
        .and_then(|r| r.apply_server_side_encryption_by_default.as_ref())
        .map(|d| d.sse_algorithm.as_str().to_string())
        .ok_or_else(|| s3_error!(MalformedXML, "ApplyServerSideEncryptionByDefault is required"))?;
    front
        .store
        .put_bucket_encryption(&i.bucket, Some(algo))
        .await
        .map_err(s3_err)?;
    s3r(PutBucketEncryptionOutput::default())
}

pub(super) async fn get_bucket_encryption(
    front: &Front,
    req: S3Request<GetBucketEncryptionInput>,
) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
    let Some(algo) = front
        .store
        .get_bucket_encryption(&req.input.bucket)
        .await
        .map_err(s3_err)?
    else {
        return Err(s3_error!(
            ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found"
        ));
    };
    s3r(GetBucketEncryptionOutput {
        server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
            rules: vec![ServerSideEncryptionRule {
                apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                    sse_algorithm: ServerSideEncryption::from(algo),
                    kms_master_key_id: None,
                }),
                bucket_key_enabled: None,
            }],
        }),
    })
}

pub(super) async fn delete_bucket_encryption(
    front: &Front,
    req: S3Request<DeleteBucketEncryptionInput>,
) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
    front
        .store
        .put_bucket_encryption(&req.input.bucket, None)
        .await
        .map_err(s3_err)?;
    s3r(DeleteBucketEncryptionOutput {})
}

pub(super) async fn put_bucket_cors(
    front: &Front,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let i = req.input;
    let rules = i
        .cors_configuration
        .cors_rules
        .into_iter()
        .map(|r| ironbucket_store::CorsRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: r.allowed_headers.unwrap_or_default(),
            expose_headers: r.expose_headers.unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        })
        .collect();
    front.store.put_bucket_cors(&i.bucket, rules).await.map_err(s3_err)?;
    s3r(PutBucketCorsOutput {})
}

pub(super) async fn get_bucket_cors(
    front: &Front,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let rules = front.store.get_bucket_cors(&req.input.bucket).await.map_err(s3_err)?;
    let rules = rules
        .into_iter()
        .map(|r| CORSRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: (!r.allowed_headers.is_empty()).then_some(r.allowed_headers),
            expose_headers: (!r.expose_headers.is_empty()).then_some(r.expose_headers),
            max_age_seconds: r.max_age_seconds,
        })
        .collect();
    s3r(GetBucketCorsOutput {
        cors_rules: Some(rules),
    })
}

pub(super) async fn delete_bucket_cors(
    front: &Front,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    front
        .store
        .delete_bucket_cors(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    s3r(DeleteBucketCorsOutput {})
}
