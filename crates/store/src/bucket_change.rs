//! A change to one bucket's settings, as a value: validated and applied to a `BucketRecord` by
//! pure functions, so that a single node (`LocalStore`) and the cluster's control plane (which
//! ships the change through Raft and applies it on every node) share one definition of what
//! each S3 bucket-settings call does.

use crate::{Error, Result, Tag, validate_tags};
use ironbucket_meta::{BucketRecord, ObjectLockConfig, Quota};
use ironbucket_types::{Acl, CorsRule, LifecycleRule, PublicAccessBlock};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketChange {
    Tags(Option<Vec<(String, String)>>),
    /// `Enabled` or `Suspended`.
    Versioning(String),
    ObjectLock(ObjectLockConfig),
    Lifecycle(Option<Vec<LifecycleRule>>),
    Cors(Option<Vec<CorsRule>>),
    /// Default encryption (`AES256`) or none.
    Encryption(Option<String>),
    Policy(Option<String>),
    Acl(Acl),
    PublicAccessBlock(Option<PublicAccessBlock>),
    Quota(Option<Quota>),
}

impl BucketChange {
    pub fn tags(tags: Option<Vec<Tag>>) -> Self {
        BucketChange::Tags(tags.map(|t| t.into_iter().map(|t| (t.key, t.value)).collect()))
    }

    /// Checks what can be checked without the bucket's current settings.
    pub fn validate(&self) -> Result<()> {
        match self {
            BucketChange::Tags(Some(t)) => {
                let tags: Vec<Tag> = t
                    .iter()
                    .map(|(k, v)| Tag {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect();
                validate_tags(&tags, 50)
            }
            BucketChange::Versioning(s) if s != "Enabled" && s != "Suspended" => Err(Error::InvalidArgument(format!(
                "versioning status must be Enabled or Suspended, not {s:?}"
            ))),
            BucketChange::ObjectLock(cfg) => match (&cfg.default_mode, cfg.default_days, cfg.default_years) {
                (None, None, None) => Ok(()),
                (Some(m), Some(d), None) | (Some(m), None, Some(d))
                    if (m == "GOVERNANCE" || m == "COMPLIANCE") && d > 0 =>
                {
                    Ok(())
                }
                _ => Err(Error::InvalidArgument(
                    "a default retention needs Mode GOVERNANCE or COMPLIANCE and either Days or Years (a positive number)"
                        .into(),
                )),
            },
            BucketChange::Lifecycle(Some(rules)) => {
                ironbucket_types::lifecycle::validate(rules).map_err(Error::InvalidRequest)
            }
            BucketChange::Cors(Some(rules)) => ironbucket_types::cors::validate(rules).map_err(Error::InvalidRequest),
            _ => Ok(()),
        }
    }

    /// Validates the change against the bucket's current settings and applies it.
    pub fn apply(self, b: &mut BucketRecord) -> Result<()> {
        self.validate()?;
        match self {
            BucketChange::Tags(t) => b.tags = t,
            BucketChange::Versioning(status) => {
                if b.object_lock.is_some() && status == "Suspended" {
                    return Err(Error::InvalidBucketState(
                        "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed."
                            .into(),
                    ));
                }
                b.versioning = Some(status);
            }
            BucketChange::ObjectLock(cfg) => {
                if b.object_lock.is_none() && b.versioning.as_deref() != Some("Enabled") {
                    return Err(Error::InvalidBucketState(
                        "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration".into(),
                    ));
                }
                b.object_lock = Some(cfg);
                b.versioning = Some("Enabled".into());
            }
            BucketChange::Lifecycle(r) => b.lifecycle = r,
            BucketChange::Cors(r) => b.cors = r,
            BucketChange::Encryption(e) => b.encryption = e,
            BucketChange::Policy(p) => b.policy = p,
            BucketChange::Acl(a) => b.acl = Some(a),
            BucketChange::PublicAccessBlock(p) => b.public_access_block = p,
            BucketChange::Quota(q) => b.quota = q,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_validate_against_the_record() {
        let mut b = BucketRecord::default();
        assert!(BucketChange::Versioning("Maybe".into()).apply(&mut b).is_err());
        let lock = BucketChange::ObjectLock(ObjectLockConfig::default());
        assert!(matches!(lock.clone().apply(&mut b), Err(Error::InvalidBucketState(_))));
        BucketChange::Versioning("Enabled".into()).apply(&mut b).unwrap();
        lock.apply(&mut b).unwrap();
        assert!(matches!(
            BucketChange::Versioning("Suspended".into()).apply(&mut b),
            Err(Error::InvalidBucketState(_))
        ));
        BucketChange::Policy(Some("{}".into())).apply(&mut b).unwrap();
        assert_eq!(b.policy.as_deref(), Some("{}"));
        let bad = BucketChange::ObjectLock(ObjectLockConfig {
            default_mode: Some("SOMETIMES".into()),
            default_days: Some(1),
            default_years: None,
        });
        assert!(bad.validate().is_err());
        let json = serde_json::to_string(&BucketChange::Quota(None)).unwrap();
        assert_eq!(
            serde_json::from_str::<BucketChange>(&json).unwrap(),
            BucketChange::Quota(None)
        );
    }
}
