//! Requests and results exchanged across the `ObjectStore` seam.

use crate::{ByteStream, CustomerKey};
use ironbucket_meta::ContentHeaders;
use ironbucket_types::{
    Acl, ByteRange, ChecksumAlgorithm, Checksums, Conditions, PublicAccessBlock, RangeSpec, UnixMillis,
};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// A bucket to create ([`crate::ObjectStore::create_bucket_as`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBucket {
    pub name: String,
    /// Object lock (and therefore versioning) enabled from the start.
    pub object_lock: bool,
    /// The bucket's ACL; `None`: none stored (private to its owner).
    pub acl: Option<Acl>,
    /// An access key (not root) that owns the bucket: it gets `owner` permission on it.
    pub owner_key: Option<String>,
}

impl NewBucket {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            object_lock: false,
            acl: None,
            owner_key: None,
        }
    }

    /// The record a new bucket starts with, created at `now`.
    pub fn record(&self, now: UnixMillis) -> ironbucket_meta::BucketRecord {
        ironbucket_meta::BucketRecord {
            name: self.name.clone(),
            created: now,
            // Object lock needs versioning, so a bucket with it starts with versioning enabled.
            versioning: self.object_lock.then(|| "Enabled".into()),
            object_lock: self.object_lock.then(ironbucket_meta::ObjectLockConfig::default),
            acl: self.acl.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub created: UnixMillis,
}

/// Client-supplied metadata stored with an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    pub content: ContentHeaders,
    pub user_meta: BTreeMap<String, String>,
    pub tags: Vec<Tag>,
    /// The object's ACL when the writer set one (`x-amz-acl` / `x-amz-grant-*`).
    pub acl: Option<Acl>,
}

/// A stored object version as the S3 layer sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    /// MD5 hex of the body, or `md5-of-md5s-N` for multipart objects; unquoted.
    pub etag: String,
    pub last_modified: UnixMillis,
    pub content: ContentHeaders,
    pub user_meta: BTreeMap<String, String>,
    pub checksums: Checksums,
    pub tag_count: usize,
    pub parts_count: Option<u32>,
    pub retention: Option<Retention>,
    pub legal_hold: bool,
    /// Encrypted at rest with the node's master key (reported as SSE-S3, `AES256`).
    pub encrypted: bool,
    /// Sealed with a customer-provided key (SSE-C).
    pub sse_c: bool,
    /// When the version was written (hybrid logical clock) and by which cluster coordinator
    /// (`0` on a single node): the order of a key's versions across replicas.
    #[serde(default)]
    pub hlc: ironbucket_types::Hlc,
    #[serde(default)]
    pub origin: u64,
}

/// Values to check once the body has been read: sent as headers, or in an aws-chunked trailer.
pub type TrailerChecksums = Box<dyn FnOnce() -> Checksums + Send>;

/// What to verify while a body streams in.
#[derive(Default)]
pub struct BodyChecks {
    /// Declared `Content-Length`, when known.
    pub content_length: Option<u64>,
    /// `Content-MD5` as sent (base64 of 16 bytes).
    pub content_md5: Option<String>,
    /// `x-amz-checksum-*` values sent as headers.
    pub checksums: Checksums,
    /// Algorithms to compute and store even without an expected value
    /// (`x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm`, or a declared trailer).
    pub compute: Vec<ChecksumAlgorithm>,
    /// Checksums that arrive in the trailer, read after the body ends.
    pub trailer: Option<TrailerChecksums>,
}

impl std::fmt::Debug for BodyChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyChecks")
            .field("content_length", &self.content_length)
            .field("content_md5", &self.content_md5)
            .field("checksums", &self.checksums)
            .field("compute", &self.compute)
            .field("trailer", &self.trailer.is_some())
            .finish()
    }
}

/// Checks what a body's hashers computed against the expected values (headers or trailer):
/// an expected algorithm that was not computed (a trailer that was not declared) is an invalid
/// request, a different value a mismatch.
pub fn verify_checksums(computed: &Checksums, expected: &Checksums) -> crate::Result<()> {
    if let Some(a) = expected.algorithms().find(|a| computed.get(*a).is_none()) {
        return Err(crate::Error::InvalidRequest(format!(
            "checksum {} arrived in the trailer without being declared",
            a.as_str()
        )));
    }
    match computed.first_mismatch(expected) {
        Some(a) => Err(crate::Error::ChecksumMismatch(a)),
        None => Ok(()),
    }
}

/// Object lock settings sent with a write (`x-amz-object-lock-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockRequest {
    pub retention: Option<Retention>,
    pub legal_hold: Option<bool>,
}

pub use ironbucket_meta::{ObjectLockConfig, Quota, Retention};

#[derive(Debug, Default)]
pub struct PutObject {
    pub lock: LockRequest,
    /// SSE-C: the key that seals the body (never stored).
    pub sse_c: Option<CustomerKey>,
    /// `x-amz-server-side-encryption` as requested.
    pub sse: Option<String>,
    pub bucket: String,
    pub key: String,
    pub meta: ObjectMeta,
    pub checks: BodyChecks,
    /// If-Match / If-None-Match on the write.
    pub conditions: Conditions,
}

#[derive(Debug, Clone, Default)]
pub struct GetObject {
    /// SSE-C: the key the object was written with.
    pub sse_c: Option<CustomerKey>,
    pub bucket: String,
    pub key: String,
    /// A specific version; `None` for the current one.
    pub version_id: Option<String>,
    pub range: Option<RangeSpec>,
    pub conditions: Conditions,
}

pub struct GetObjectOutput {
    pub info: ObjectInfo,
    /// The satisfied range, when one was requested.
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeleteResult {
    pub key: String,
    pub version_id: Option<String>,
    /// A delete marker was created, or the version deleted was one.
    pub delete_marker: bool,
}

/// One entry of ListObjectVersions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionEntry {
    pub info: ObjectInfo,
    pub is_latest: bool,
    pub delete_marker: bool,
}

/// One node's page of ListObjectVersions for a cluster coordinator, which merges the nodes'
/// pages: nothing is filtered out, so that the merge can drop what another node's copy
/// supersedes and knows how far each page reached.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RawVersionPage {
    /// Versions and delete markers in S3 order; `true` for a tombstone (a delete marker in a
    /// bucket that never had versioning: not listed, but it supersedes a stale `null` version).
    pub versions: Vec<(VersionEntry, bool)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Versions deleted by id (key, version id, when) among the keys the page covers.
    pub purged: Vec<(String, String, Stamp)>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct VersionListing {
    pub versions: Vec<VersionEntry>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CopyObject {
    /// SSE-C key for the new object, and the one the source was written with.
    pub sse_c: Option<CustomerKey>,
    pub src_sse_c: Option<CustomerKey>,
    pub src_bucket: String,
    pub src_key: String,
    /// A specific source version; `None` for the current one.
    pub src_version_id: Option<String>,
    pub bucket: String,
    pub key: String,
    /// `Some` for `x-amz-metadata-directive: REPLACE`.
    pub replace_meta: Option<ObjectMeta>,
    /// `Some` for `x-amz-tagging-directive: REPLACE`.
    pub replace_tags: Option<Vec<Tag>>,
    /// `x-amz-copy-source-if-*`.
    pub source_conditions: Conditions,
    /// `If-Match` / `If-None-Match` on the destination's current version.
    pub conditions: Conditions,
    /// ACL of the new object (never copied from the source).
    pub acl: Option<Acl>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    pub next_marker: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CreateMultipart {
    /// SSE-C: every part must then be sent with this key.
    pub sse_c: Option<CustomerKey>,
    pub bucket: String,
    pub key: String,
    pub meta: ObjectMeta,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
}

#[derive(Debug, Default)]
pub struct UploadPart {
    pub sse_c: Option<CustomerKey>,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number: u32,
    pub checks: BodyChecks,
}

#[derive(Debug, Clone, Default)]
pub struct UploadPartCopy {
    /// SSE-C key of the upload, and of the source object.
    pub sse_c: Option<CustomerKey>,
    pub src_sse_c: Option<CustomerKey>,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number: u32,
    pub src_bucket: String,
    pub src_key: String,
    pub range: Option<RangeSpec>,
    pub source_conditions: Conditions,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartInfo {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub last_modified: UnixMillis,
    pub checksums: Checksums,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CompleteMultipart {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub parts: Vec<CompletedPart>,
    /// `If-Match` / `If-None-Match` on the key's current version (S3 2024).
    #[serde(default)]
    pub conditions: Conditions,
}

#[derive(Debug, Clone, Default)]
pub struct ListParts {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub part_number_marker: Option<u32>,
    pub max_parts: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ListPartsPage {
    pub parts: Vec<PartInfo>,
    pub truncated: bool,
    pub next_part_number_marker: Option<u32>,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
}

pub use ironbucket_meta::{ListQuery, UploadListPage, UploadListQuery, UploadRecord as UploadInfo, VersionListQuery};

/// How a version was stored on the replica it is copied from (read repair).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAs {
    pub etag: String,
    pub parts_count: Option<u32>,
    pub checksums: Checksums,
}

/// What a read repair keeps from the replica it copies a version from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Repair {
    /// A multipart object's ETag, part count and composite checksums (they cannot be computed
    /// again from the body); `None` for a whole object (verified again on the way in).
    pub stored_as: Option<StoredAs>,
    /// When the version's tags, retention, legal hold and ACL were last changed there.
    pub meta_stamps: MetaStamps,
}

/// Which version of a key a replica holds (for cluster reads): its stamp, id and kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionStamp {
    pub hlc: ironbucket_types::Hlc,
    pub origin: u64,
    pub version_id: String,
    pub delete_marker: bool,
    /// The version `version_id` was deleted by id at this stamp (a version tombstone).
    #[serde(default)]
    pub purged: bool,
    /// Digest of when each changeable field of the version was last set
    /// ([`MetaStamps::digest`] of the resolved stamps): replicas holding the same version with
    /// different digests disagree on its metadata.
    #[serde(default)]
    pub meta: u64,
}

pub use ironbucket_meta::{MetaStamps, Stamp};

/// One field's value and the stamp of the change that set it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lww<T> {
    pub value: T,
    pub at: Stamp,
}

impl<T: PartialEq + Clone + serde::Serialize> Lww<T> {
    /// Keeps the newer of the two (last writer wins; equal stamps with different values, which
    /// no coordinator issues, are settled by the values so that every replica keeps the same);
    /// whether `self` changed.
    fn merge(&mut self, other: &Lww<T>) -> bool {
        let wins = other.at > self.at
            || (other.at == self.at
                && other.value != self.value
                && serde_json::to_string(&other.value).ok() > serde_json::to_string(&self.value).ok());
        if wins {
            *self = other.clone();
            true
        } else {
            false
        }
    }
}

/// A version's changeable metadata, each field with the stamp of its last change: what cluster
/// replicas compare and merge (field by field, newest stamp wins, so they converge whatever
/// order the changes reach them in).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionMeta {
    pub tags: Lww<Vec<(String, String)>>,
    pub retention: Lww<Option<Retention>>,
    pub legal_hold: Lww<bool>,
    pub acl: Lww<Option<Acl>>,
}

impl VersionMeta {
    /// Takes every field `other` changed later; whether anything changed.
    pub fn merge(&mut self, other: &VersionMeta) -> bool {
        let a = self.tags.merge(&other.tags);
        let b = self.retention.merge(&other.retention);
        let c = self.legal_hold.merge(&other.legal_hold);
        let d = self.acl.merge(&other.acl);
        a | b | c | d
    }

    pub fn stamps(&self) -> MetaStamps {
        MetaStamps {
            tags: Some(self.tags.at),
            retention: Some(self.retention.at),
            legal_hold: Some(self.legal_hold.at),
            acl: Some(self.acl.at),
        }
    }

    /// Whether the version may not be deleted now (`now` in ms).
    pub fn locked(&self, now: UnixMillis, bypass_governance: bool) -> bool {
        self.legal_hold.value || retention_blocks(self.retention.value.as_ref(), now, bypass_governance)
    }

    /// Checks a change against these values (object lock rules) before it is sent anywhere.
    pub fn check(&self, change: &MetaChange, now: UnixMillis) -> crate::Result<()> {
        match change {
            MetaChange::Retention { retention, bypass } => {
                check_retention_change(self.retention.value.as_ref(), retention.as_ref(), *bypass, now)
            }
            _ => Ok(()),
        }
    }
}

/// A change to one of a version's changeable fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MetaChange {
    Tags(Vec<(String, String)>),
    Retention { retention: Option<Retention>, bypass: bool },
    LegalHold(bool),
    Acl(Acl),
}

/// Whether retention `r` forbids deleting the version or weakening its retention now.
pub fn retention_blocks(r: Option<&Retention>, now: UnixMillis, bypass_governance: bool) -> bool {
    match r {
        Some(r) if r.until > now => r.mode == "COMPLIANCE" || !bypass_governance,
        _ => false,
    }
}

/// Object lock's rule for changing a version's retention from `old` to `new`: an active
/// retention may be extended; shortening or removing it, or leaving compliance mode, needs
/// governance mode and `bypass`.
pub fn check_retention_change(
    old: Option<&Retention>,
    new: Option<&Retention>,
    bypass: bool,
    now: UnixMillis,
) -> crate::Result<()> {
    if let Some(r) = new
        && r.mode != "GOVERNANCE"
        && r.mode != "COMPLIANCE"
    {
        return Err(crate::Error::InvalidArgument(format!(
            "unknown retention mode {:?}",
            r.mode
        )));
    }
    if let Some(old) = old
        && old.until > now
    {
        let weaker = match new {
            None => true,
            Some(new) => new.until < old.until || (old.mode == "COMPLIANCE" && new.mode != "COMPLIANCE"),
        };
        if weaker && (old.mode == "COMPLIANCE" || !bypass) {
            return Err(crate::Error::AccessDenied(
                "Access Denied because object protected by object lock.".into(),
            ));
        }
    }
    Ok(())
}

/// One version of a key as this node stores it (for `/cluster/locate`): the admin API's type.
pub use ironbucket_api::StoredVersion;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub objects: u64,
    pub bytes: u64,
    pub disk_total: u64,
    pub disk_free: u64,
    pub lifecycle: LifecycleCounts,
}

/// What the lifecycle worker removed since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleCounts {
    pub expired_objects: u64,
    pub noncurrent_versions: u64,
    pub delete_markers: u64,
    pub aborted_uploads: u64,
}

/// What an access key may do with a bucket. Each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Read and list objects.
    Read,
    /// Also write and delete objects.
    Write,
    /// Also the bucket's settings and the bucket itself.
    Owner,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Owner => "owner",
        }
    }
}

/// An access key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub access_key: String,
    pub name: String,
    pub created: UnixMillis,
    pub enabled: bool,
    pub buckets: BTreeMap<String, Permission>,
}

/// One bucket's usage, quota and request counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketUsage {
    pub objects: u64,
    pub bytes: u64,
    pub quota: Option<Quota>,
    /// Requests per month (`YYYY-MM`).
    pub requests: BTreeMap<String, u64>,
}

/// What an access check needs to know about a bucket besides the caller's key.
#[derive(Debug, Clone, Default)]
pub struct BucketAccess {
    /// The bucket policy document, if any.
    pub policy: Option<String>,
    /// Owner and grants; `None` for a bucket without a recorded ACL (private).
    pub acl: Option<Acl>,
    pub public_access_block: Option<PublicAccessBlock>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_types::Hlc;

    fn at(ms: u64, node: u64) -> Stamp {
        (
            Hlc {
                physical: ms,
                logical: 0,
            },
            node,
        )
    }

    fn meta(tags: (&str, Stamp), hold: (bool, Stamp)) -> VersionMeta {
        VersionMeta {
            tags: Lww {
                value: vec![("k".into(), tags.0.into())],
                at: tags.1,
            },
            retention: Lww {
                value: None,
                at: at(0, 1),
            },
            legal_hold: Lww {
                value: hold.0,
                at: hold.1,
            },
            acl: Lww {
                value: None,
                at: at(0, 1),
            },
        }
    }

    #[test]
    fn merge_is_last_writer_wins_per_field_and_order_independent() {
        // Each side changed a different field last: the merge takes the newer of each.
        let a = meta(("new", at(5, 1)), (false, at(1, 1)));
        let b = meta(("old", at(3, 2)), (true, at(4, 2)));
        let mut ab = a.clone();
        assert!(ab.merge(&b));
        let mut ba = b.clone();
        assert!(ba.merge(&a));
        assert_eq!(ab, ba);
        assert_eq!(ab.tags.value[0].1, "new");
        assert!(ab.legal_hold.value);
        // Idempotent: merging again changes nothing.
        assert!(!ab.clone().merge(&ab));
        assert!(!ab.clone().merge(&a));
        // Equal times order by node id.
        let c = meta(("c", at(5, 3)), (false, at(1, 1)));
        let mut x = a.clone();
        assert!(x.merge(&c));
        assert_eq!(x.tags.value[0].1, "c");
        assert_eq!(x.stamps().tags, Some(at(5, 3)));
    }

    #[test]
    fn lock_rules() {
        let now = 1_000;
        let gov = |until| Retention {
            mode: "GOVERNANCE".into(),
            until,
        };
        let comp = |until| Retention {
            mode: "COMPLIANCE".into(),
            until,
        };
        // Extending is always allowed; shortening governance needs bypass; compliance never.
        assert!(check_retention_change(Some(&gov(2_000)), Some(&gov(3_000)), false, now).is_ok());
        assert!(check_retention_change(Some(&gov(2_000)), Some(&gov(1_500)), false, now).is_err());
        assert!(check_retention_change(Some(&gov(2_000)), None, true, now).is_ok());
        assert!(check_retention_change(Some(&comp(2_000)), None, true, now).is_err());
        assert!(check_retention_change(Some(&comp(2_000)), Some(&gov(9_000)), true, now).is_err());
        // An expired retention no longer binds.
        assert!(check_retention_change(Some(&comp(500)), None, false, now).is_ok());
        let bad = Retention {
            mode: "FOREVER".into(),
            until: 2_000,
        };
        assert!(matches!(
            check_retention_change(None, Some(&bad), false, now),
            Err(crate::Error::InvalidArgument(_))
        ));
        let mut m = meta(("x", at(1, 1)), (false, at(1, 1)));
        assert!(!m.locked(now, false));
        m.retention.value = Some(gov(2_000));
        assert!(m.locked(now, false));
        assert!(!m.locked(now, true));
        m.legal_hold.value = true;
        assert!(m.locked(now, true));
        let change = MetaChange::Retention {
            retention: None,
            bypass: false,
        };
        assert!(m.check(&change, now).is_err());
        assert!(m.check(&MetaChange::LegalHold(false), now).is_ok());
    }
}

/// DeleteObject's `If-Match` (S3 2024): the key's current version must have one of `if_match`'s
/// ETags (`*`: any). 412 when it has another, 404 NoSuchKey when there is none (or a delete
/// marker).
pub fn check_delete_if_match(if_match: &[String], current_etag: Option<&str>) -> Result<(), crate::Error> {
    use crate::Error;
    let Some(etag) = current_etag else {
        return Err(Error::NoSuchKey);
    };
    let c = Conditions {
        if_match: Some(if_match.to_vec()),
        ..Default::default()
    };
    c.check_write(Some(etag)).map_err(Error::from)
}

#[cfg(test)]
mod delete_if_match_tests {
    use super::*;
    use crate::Error;

    #[test]
    fn delete_if_match_compares_the_current_etag() {
        assert!(check_delete_if_match(&["abc".into()], Some("abc")).is_ok());
        assert!(check_delete_if_match(&["\"abc\"".into()], Some("abc")).is_ok());
        assert!(check_delete_if_match(&["*".into()], Some("abc")).is_ok());
        assert_eq!(
            check_delete_if_match(&["abd".into()], Some("abc")),
            Err(Error::PreconditionFailed)
        );
        assert_eq!(check_delete_if_match(&["*".into()], None), Err(Error::NoSuchKey));
    }
}
