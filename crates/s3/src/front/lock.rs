//! Versioning and WORM: bucket versioning, object lock configuration, retention and legal
//! hold, and the `x-amz-object-lock-*` headers of a write.

use super::{Front, s3r};
use crate::convert::*;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

pub(super) async fn put_bucket_versioning(
    front: &Front,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let i = req.input;
    if i.versioning_configuration
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == "Enabled")
    {
        return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
    }
    let status = match i.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
        Some(s @ ("Enabled" | "Suspended")) => s.to_string(),
        _ => {
            return Err(s3_error!(
                MalformedXML,
                "VersioningConfiguration Status must be Enabled or Suspended"
            ));
        }
    };
    front
        .store
        .put_bucket_versioning(&i.bucket, &status)
        .await
        .map_err(s3_err)?;
    s3r(PutBucketVersioningOutput {})
}

pub(super) async fn get_bucket_versioning(
    front: &Front,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let status = front
        .store
        .get_bucket_versioning(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    s3r(GetBucketVersioningOutput {
        status: status.map(BucketVersioningStatus::from),
        mfa_delete: None,
    })
}

pub(super) async fn put_object_lock_configuration(
    front: &Front,
    req: S3Request<PutObjectLockConfigurationInput>,
) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
    let i = req.input;
    let cfg = i.object_lock_configuration.unwrap_or_default();
    if cfg.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some("Enabled") {
        return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
    }
    let d = cfg.rule.and_then(|r| r.default_retention);
    let to_u32 = |v: Option<i32>| -> S3Result<Option<u32>> {
        v.map(|n| {
            u32::try_from(n).map_err(|_| {
                s3_error!(
                    InvalidArgument,
                    "Default retention period must be a positive integer value"
                )
            })
        })
        .transpose()
    };
    let lock = ironbucket_store::ObjectLockConfig {
        default_mode: d.as_ref().and_then(|d| d.mode.as_ref()).map(|m| m.as_str().to_string()),
        default_days: to_u32(d.as_ref().and_then(|d| d.days))?,
        default_years: to_u32(d.as_ref().and_then(|d| d.years))?,
    };
    front
        .store
        .put_object_lock_configuration(&i.bucket, lock)
        .await
        .map_err(s3_err)?;
    s3r(PutObjectLockConfigurationOutput::default())
}

pub(super) async fn get_object_lock_configuration(
    front: &Front,
    req: S3Request<GetObjectLockConfigurationInput>,
) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
    let c = front
        .store
        .get_object_lock_configuration(&req.input.bucket)
        .await
        .map_err(s3_err)?;
    let rule = c.default_mode.map(|m| ObjectLockRule {
        default_retention: Some(DefaultRetention {
            mode: Some(ObjectLockRetentionMode::from(m)),
            days: c.default_days.map(|d| d as i32),
            years: c.default_years.map(|y| y as i32),
        }),
    });
    s3r(GetObjectLockConfigurationOutput {
        object_lock_configuration: Some(ObjectLockConfiguration {
            object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
            rule,
        }),
    })
}

pub(super) async fn put_object_retention(
    front: &Front,
    req: S3Request<PutObjectRetentionInput>,
) -> S3Result<S3Response<PutObjectRetentionOutput>> {
    let i = req.input;
    let retention = match i.retention {
        Some(ObjectLockRetention {
            mode: Some(m),
            retain_until_date: Some(u),
        }) => Some(ironbucket_store::Retention {
            mode: m.as_str().to_string(),
            until: millis(&u),
        }),
        Some(ObjectLockRetention {
            mode: None,
            retain_until_date: None,
        })
        | None => None,
        _ => return Err(s3_error!(MalformedXML, "Retention needs both Mode and RetainUntilDate")),
    };
    front
        .store
        .put_object_retention(
            &i.bucket,
            &i.key,
            i.version_id.as_deref(),
            retention,
            i.bypass_governance_retention.unwrap_or(false),
        )
        .await
        .map_err(s3_err)?;
    s3r(PutObjectRetentionOutput::default())
}

pub(super) async fn get_object_retention(
    front: &Front,
    req: S3Request<GetObjectRetentionInput>,
) -> S3Result<S3Response<GetObjectRetentionOutput>> {
    let i = req.input;
    let r = front
        .store
        .get_object_retention(&i.bucket, &i.key, i.version_id.as_deref())
        .await
        .map_err(s3_err)?;
    s3r(GetObjectRetentionOutput {
        retention: Some(ObjectLockRetention {
            mode: Some(ObjectLockRetentionMode::from(r.mode)),
            retain_until_date: Some(ts(r.until)),
        }),
    })
}

pub(super) async fn put_object_legal_hold(
    front: &Front,
    req: S3Request<PutObjectLegalHoldInput>,
) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
    let i = req.input;
    let on = match i.legal_hold.and_then(|h| h.status).as_ref().map(|s| s.as_str()) {
        Some("ON") => true,
        Some("OFF") => false,
        _ => return Err(s3_error!(MalformedXML, "LegalHold Status must be ON or OFF")),
    };
    front
        .store
        .put_object_legal_hold(&i.bucket, &i.key, i.version_id.as_deref(), on)
        .await
        .map_err(s3_err)?;
    s3r(PutObjectLegalHoldOutput::default())
}

pub(super) async fn get_object_legal_hold(
    front: &Front,
    req: S3Request<GetObjectLegalHoldInput>,
) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
    let i = req.input;
    let on = front
        .store
        .get_object_legal_hold(&i.bucket, &i.key, i.version_id.as_deref())
        .await
        .map_err(s3_err)?;
    let status = if on {
        ObjectLockLegalHoldStatus::ON
    } else {
        ObjectLockLegalHoldStatus::OFF
    };
    s3r(GetObjectLegalHoldOutput {
        legal_hold: Some(ObjectLockLegalHold {
            status: Some(ObjectLockLegalHoldStatus::from_static(status)),
        }),
    })
}

/// `x-amz-object-lock-*` headers of a write.
pub(super) fn lock_request(
    mode: Option<ObjectLockMode>,
    until: Option<Timestamp>,
    hold: Option<ObjectLockLegalHoldStatus>,
) -> S3Result<ironbucket_store::LockRequest> {
    let retention = match (mode, until) {
        (None, None) => None,
        (Some(m), Some(u)) => {
            let until = millis(&u);
            if until <= ironbucket_types::now_millis() {
                return Err(s3_error!(
                    InvalidArgument,
                    "The retain until date must be in the future!"
                ));
            }
            Some(ironbucket_store::Retention {
                mode: m.as_str().to_string(),
                until,
            })
        }
        _ => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date must both be supplied"
            ));
        }
    };
    Ok(ironbucket_store::LockRequest {
        retention,
        legal_hold: hold.map(|h| h.as_str() == "ON"),
    })
}
