//! Serialized records. Encoded as JSON: self-describing, so fields can be added without a
//! migration; the records are small and never on a byte-copying hot path.

use ironbucket_types::{ChecksumAlgorithm, Checksums, Hlc, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> crate::Result<T> {
    serde_json::from_slice(raw).map_err(|e| crate::Error::Corrupt(e.to_string()))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> crate::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| crate::Error::Corrupt(e.to_string()))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    pub created: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<(String, String)>>,
    /// `Enabled` or `Suspended` once versioning was ever configured; `None` if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Vec<ironbucket_types::CorsRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Vec<ironbucket_types::LifecycleRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Default server-side encryption (`AES256`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Object lock: present once enabled (it cannot be disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockConfig>,
    /// Bucket policy document (JSON, validated when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Owner and grants; `None` for a bucket made before ACLs were recorded (private).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<ironbucket_types::Acl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<ironbucket_types::PublicAccessBlock>,
}

/// Limits on a bucket's stored data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_objects: Option<u64>,
}

/// A bucket's object lock setting and default retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockConfig {
    /// `GOVERNANCE` or `COMPLIANCE`, with `default_days` or `default_years`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_years: Option<u32>,
}

/// A version deleted by id in a cluster: when (the coordinator's stamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRecord {
    pub hlc: ironbucket_types::Hlc,
    pub origin: u64,
}

/// The lock on one object version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    pub until: UnixMillis,
}

/// Standard content headers stored with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentHeaders {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// HTTP date, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A piece of an object's body: one blob (a whole object, or one multipart part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub blob: String,
    pub size: u64,
}

/// One version of an object. Unversioned buckets hold only the `null` version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub version_id: String,
    /// A delete marker: a version that says the key is deleted (no body).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_marker: bool,
    pub hlc: Hlc,
    /// The node that stamped this version (a cluster coordinator's id; 0 on a single node):
    /// breaks ties between equal HLC times so that every replica picks the same winner, and
    /// keeps such versions apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub origin: u64,
    pub size: u64,
    pub etag: String,
    pub last_modified: UnixMillis,
    #[serde(default)]
    pub content: ContentHeaders,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_meta: BTreeMap<String, String>,
    #[serde(default)]
    pub checksums: Checksums,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    pub segments: Vec<Segment>,
    /// Number of parts when the object was assembled by a multipart upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legal_hold: bool,
    /// Id of the encryption key that sealed the blobs, if encrypted at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Owner and grants when set by the writer; `None`: private to the bucket owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<ironbucket_types::Acl>,
    /// SSE-C: salted fingerprint of the customer key that seals the blobs (never the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_c: Option<String>,
    /// When tags, retention, legal hold and ACL were last changed by a cluster coordinator.
    #[serde(default, skip_serializing_if = "MetaStamps::is_empty")]
    pub meta_stamps: MetaStamps,
}

/// A cluster write's order: hybrid-logical-clock time, then the coordinating node's id.
pub type Stamp = (Hlc, u64);

/// The stamps of the last change of each changeable field of a version (cluster replicas keep
/// the newest change per field: last writer wins). `None`: unchanged since the version was
/// written, i.e. the version's own stamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaStamps {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_hold: Option<Stamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Stamp>,
}

impl MetaStamps {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// A 64-bit digest of the stamps, for replicas to compare cheaply (equal stamps give equal
    /// digests everywhere: no per-process hash keys).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut mix = |v: u64| {
            // splitmix64's finaliser over the running value.
            let mut z = (h ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h = z ^ (z >> 31);
        };
        for s in [self.tags, self.retention, self.legal_hold, self.acl] {
            match s {
                Some((hlc, origin)) => {
                    mix(1);
                    mix(hlc.physical);
                    mix(u64::from(hlc.logical));
                    mix(origin);
                }
                None => mix(0),
            }
        }
        h
    }

    /// Every field's stamp, the version's own (`written`) where a field never changed.
    pub fn resolved(self, written: Stamp) -> Self {
        Self {
            tags: Some(self.tags.unwrap_or(written)),
            retention: Some(self.retention.unwrap_or(written)),
            legal_hold: Some(self.legal_hold.unwrap_or(written)),
            acl: Some(self.acl.unwrap_or(written)),
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ObjectRecord {
    /// Whether this version may not be deleted now (`now` in ms); governance retention yields
    /// to `bypass_governance`.
    pub fn locked(&self, now: UnixMillis, bypass_governance: bool) -> bool {
        if self.legal_hold {
            return true;
        }
        match &self.retention {
            Some(r) if r.until > now => r.mode == "COMPLIANCE" || !bypass_governance,
            _ => false,
        }
    }

    /// The key under which this version sorts among the versions of its object: newest first
    /// (inverted HLC), so a range scan lists versions in S3 order.
    pub fn sort_key(&self) -> String {
        stamped_version_id(self.hlc, self.origin)
    }

    /// The order of versions of one key: HLC time, then origin.
    pub fn stamp(&self) -> (Hlc, u64) {
        (self.hlc, self.origin)
    }

    pub fn blob_ids(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|s| s.blob.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub upload_id: String,
    pub key: String,
    pub initiated: UnixMillis,
    #[serde(default)]
    pub content: ContentHeaders,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<ironbucket_types::Acl>,
    /// SSE-C: fingerprint of the key every part must be sent with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_c: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub blob: String,
    pub last_modified: UnixMillis,
    #[serde(default)]
    pub checksums: Checksums,
}

/// An access key other than the root key. The secret is stored sealed (AES-GCM with the node's
/// key-encryption key), never in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub access_key: String,
    pub name: String,
    pub secret_sealed: String,
    pub created: UnixMillis,
    pub enabled: bool,
    /// Bucket name to permission: `read`, `write` (read and write objects) or `owner` (also
    /// the bucket's settings and deletion).
    #[serde(default)]
    pub buckets: BTreeMap<String, String>,
}

/// The version id (and sort key) of a version written with stamp (`hlc`, `origin`) in a bucket
/// with versioning enabled: newest first; single-node versions (`origin` 0) keep the short form,
/// stamped ones add the origin. Every replica computes the same.
pub fn stamped_version_id(hlc: ironbucket_types::Hlc, origin: u64) -> String {
    let time = format!("{:016x}{:08x}", u64::MAX - hlc.physical, u32::MAX - hlc.logical);
    if origin == 0 {
        time
    } else {
        format!("{time}{:016x}", u64::MAX - origin)
    }
}
