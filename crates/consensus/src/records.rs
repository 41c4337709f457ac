//! The control plane's own records of buckets and access keys: what the Raft log, the control
//! state's rows, its snapshots and forwarded proposals carry. They are separate from the local
//! metadata store's records (`ironbucket_meta::{BucketRecord, KeyRecord}`): a node writes those
//! from these when it puts the agreed state in force, so a change to how a node stores a bucket
//! locally can never change the log or the wire by accident. The JSON form is the one earlier
//! releases logged (pinned in `golden.rs`); a change to it is a log format change (a protocol
//! version, docs/protocol.md).

use ironbucket_meta::{BucketRecord, KeyRecord, ObjectLockConfig, Quota};
use ironbucket_types::{Acl, CorsRule, LifecycleRule, PublicAccessBlock, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A bucket and its settings, as the cluster agrees on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub name: String,
    pub created: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<(String, String)>>,
    /// `Enabled` or `Suspended` once versioning was ever configured; `None` if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Vec<CorsRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Vec<LifecycleRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<BucketQuota>,
    /// Default server-side encryption (`AES256`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Object lock: present once enabled (it cannot be disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<LockDefaults>,
    /// Bucket policy document (JSON, validated when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Owner and grants; `None` for a bucket made before ACLs were recorded (private).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Acl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<PublicAccessBlock>,
}

/// Limits on a bucket's stored data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketQuota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u64>,
}

/// A bucket's object lock setting and default retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockDefaults {
    /// `GOVERNANCE` or `COMPLIANCE`, with `default_days` or `default_years`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_years: Option<u32>,
}

/// An access key as the cluster agrees on it (its secret sealed with the cluster's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key: String,
    pub name: String,
    pub secret_sealed: String,
    pub created: UnixMillis,
    pub enabled: bool,
    /// Bucket name to permission: `read`, `write` or `owner`.
    #[serde(default)]
    pub buckets: BTreeMap<String, String>,
}

impl From<BucketQuota> for Quota {
    fn from(q: BucketQuota) -> Self {
        Quota {
            max_bytes: q.max_bytes,
            max_objects: q.max_objects,
        }
    }
}

impl From<Quota> for BucketQuota {
    fn from(q: Quota) -> Self {
        BucketQuota {
            max_bytes: q.max_bytes,
            max_objects: q.max_objects,
        }
    }
}

impl From<LockDefaults> for ObjectLockConfig {
    fn from(l: LockDefaults) -> Self {
        ObjectLockConfig {
            default_mode: l.default_mode,
            default_days: l.default_days,
            default_years: l.default_years,
        }
    }
}

impl From<ObjectLockConfig> for LockDefaults {
    fn from(l: ObjectLockConfig) -> Self {
        LockDefaults {
            default_mode: l.default_mode,
            default_days: l.default_days,
            default_years: l.default_years,
        }
    }
}

impl From<Bucket> for BucketRecord {
    fn from(b: Bucket) -> Self {
        BucketRecord {
            name: b.name,
            created: b.created,
            tags: b.tags,
            versioning: b.versioning,
            cors: b.cors,
            lifecycle: b.lifecycle,
            quota: b.quota.map(Quota::from),
            encryption: b.encryption,
            object_lock: b.object_lock.map(ObjectLockConfig::from),
            policy: b.policy,
            acl: b.acl,
            public_access_block: b.public_access_block,
        }
    }
}

impl From<BucketRecord> for Bucket {
    fn from(b: BucketRecord) -> Self {
        Bucket {
            name: b.name,
            created: b.created,
            tags: b.tags,
            versioning: b.versioning,
            cors: b.cors,
            lifecycle: b.lifecycle,
            quota: b.quota.map(BucketQuota::from),
            encryption: b.encryption,
            object_lock: b.object_lock.map(LockDefaults::from),
            policy: b.policy,
            acl: b.acl,
            public_access_block: b.public_access_block,
        }
    }
}

impl From<AccessKey> for KeyRecord {
    fn from(k: AccessKey) -> Self {
        KeyRecord {
            access_key: k.access_key,
            name: k.name,
            secret_sealed: k.secret_sealed,
            created: k.created,
            enabled: k.enabled,
            buckets: k.buckets,
        }
    }
}

impl From<KeyRecord> for AccessKey {
    fn from(k: KeyRecord) -> Self {
        AccessKey {
            access_key: k.access_key,
            name: k.name,
            secret_sealed: k.secret_sealed,
            created: k.created,
            enabled: k.enabled,
            buckets: k.buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fully set bucket goes to the local record and back unchanged, and both write the same
    /// JSON today (they may part ways later; then only the golden form binds this one).
    #[test]
    fn records_convert_both_ways() {
        let json = r#"{"name":"b","created":1,"tags":[["k","v"]],"versioning":"Enabled","quota":{"max_bytes":5},"encryption":"AES256","object_lock":{"default_mode":"GOVERNANCE","default_days":3},"policy":"{}","acl":{"owner":"o","grants":[]},"public_access_block":{"block_public_acls":true,"ignore_public_acls":false,"block_public_policy":false,"restrict_public_buckets":false}}"#;
        let b: Bucket = serde_json::from_str(json).unwrap();
        let rec = BucketRecord::from(b.clone());
        assert_eq!(serde_json::to_value(&rec).unwrap(), serde_json::to_value(&b).unwrap());
        assert_eq!(Bucket::from(rec), b);
        let k = AccessKey {
            access_key: "AK".into(),
            name: "n".into(),
            secret_sealed: "s".into(),
            created: 2,
            enabled: true,
            buckets: [("b".to_string(), "owner".to_string())].into(),
        };
        assert_eq!(AccessKey::from(KeyRecord::from(k.clone())), k);
    }
}
