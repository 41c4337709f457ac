//! The `ObjectStore` seam: everything the S3 front end needs from storage, in S3's terms but
//! free of HTTP and of any S3 library. [`LocalStore`] implements it on one node (blob files +
//! redb metadata); the cluster implements it again later, and the S3 layer never knows which.
//!
//! [`conformance`] (feature `testing`) is one behaviour suite that every implementation runs.
//!
//! Must not depend on `s3s`, HTTP crates or the cluster layers.

mod bucket_change;
mod error;
pub mod hints;
mod local;
mod model;
mod tags;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use bucket_change::BucketChange;
pub use error::{Error, Result};
pub use ironbucket_meta::{
    Classify, ContentHeaders, Digest, Hint, HintRecord, ItemKey, ItemKind, ItemSummary, TreeItem,
};
pub use ironbucket_storage::{ByteStream, CustomerKey, EncryptionKey, KeyError, Keyring, StorageConfig};
pub use ironbucket_types::{
    Acl, AclPermission, ByteRange, ChecksumAlgorithm, Checksums, Conditions, Consistency, CorsRule, Hlc, LifecycleRule,
    PublicAccessBlock, RangeSpec, cors,
};
pub use local::{
    CorruptVersion, CorruptionHandler, LifecycleAction, LifecyclePage, LocalConfig, LocalStore, RewrapStats,
    ScrubStats, TombstoneGuard, Verdict,
};
pub use model::*;
pub use tags::validate_tags;

use async_trait::async_trait;

/// Object storage as the S3 layer sees it.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates a bucket with its object lock setting, ACL and owning key in one step (one
    /// metadata commit on a node, one Raft proposal in a cluster): a crash never leaves a bucket
    /// without its ACL or owner.
    async fn create_bucket_as(&self, spec: NewBucket) -> Result<()>;
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.create_bucket_as(NewBucket::named(bucket)).await
    }
    /// Creates a bucket with object lock enabled (and therefore versioning enabled).
    async fn create_bucket_with_lock(&self, bucket: &str) -> Result<()> {
        self.create_bucket_as(NewBucket {
            object_lock: true,
            ..NewBucket::named(bucket)
        })
        .await
    }
    async fn put_object_lock_configuration(&self, bucket: &str, cfg: ObjectLockConfig) -> Result<()>;
    /// `ObjectLockNotEnabled` unless the bucket has object lock.
    async fn get_object_lock_configuration(&self, bucket: &str) -> Result<ObjectLockConfig>;
    /// Sets (or with `None`, removes) a version's retention. Shortening or removing governance
    /// retention needs `bypass_governance`; compliance retention can only be extended.
    async fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        retention: Option<Retention>,
        bypass_governance: bool,
    ) -> Result<()>;
    async fn get_object_retention(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Retention>;
    async fn put_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>, on: bool) -> Result<()>;
    async fn get_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<bool>;
    async fn head_bucket(&self, bucket: &str) -> Result<BucketInfo>;
    /// Fails with `BucketNotEmpty` while objects or multipart uploads remain.
    async fn delete_bucket(&self, bucket: &str) -> Result<()>;
    async fn list_buckets(&self) -> Result<Vec<BucketInfo>>;
    async fn put_bucket_tagging(&self, bucket: &str, tags: Vec<Tag>) -> Result<()>;
    /// `NoSuchTagSet` when the bucket has no tags.
    async fn get_bucket_tagging(&self, bucket: &str) -> Result<Vec<Tag>>;
    async fn delete_bucket_tagging(&self, bucket: &str) -> Result<()>;

    /// Streams `body` to durable storage and makes it visible atomically.
    async fn put_object(&self, req: PutObject, body: ByteStream) -> Result<ObjectInfo>;
    async fn get_object(&self, req: GetObject) -> Result<GetObjectOutput>;
    async fn head_object(&self, req: GetObject) -> Result<ObjectInfo>;
    /// Deleting a missing key succeeds, as in S3.
    /// Deletes the current version (or, with `version_id`, that version for good). In a
    /// versioned bucket, deleting without a version id adds a delete marker.
    /// A version under object lock cannot be deleted (governance retention yields to
    /// `bypass_governance`).
    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
    ) -> Result<DeleteResult>;
    /// DeleteObject with `If-Match` (S3 2024): deletes only while the key's current version has
    /// one of `if_match`'s ETags (`*`: any version); 412 PreconditionFailed when it has another,
    /// 404 NoSuchKey when there is none. Otherwise as [`ObjectStore::delete_object`].
    async fn delete_object_if_match(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass_governance: bool,
        if_match: &[String],
    ) -> Result<DeleteResult>;
    /// Deletes up to 1000 keys (each optionally one version); one result per key, in order.
    async fn delete_objects(
        &self,
        bucket: &str,
        keys: Vec<(String, Option<String>)>,
        bypass_governance: bool,
    ) -> Result<Vec<Result<DeleteResult>>>;
    /// `Enabled` or `Suspended`.
    async fn put_bucket_versioning(&self, bucket: &str, status: &str) -> Result<()>;
    /// `None` when versioning was never configured.
    async fn get_bucket_versioning(&self, bucket: &str) -> Result<Option<String>>;
    async fn list_object_versions(&self, bucket: &str, query: VersionListQuery) -> Result<VersionListing>;
    async fn put_bucket_lifecycle(&self, bucket: &str, rules: Vec<LifecycleRule>) -> Result<()>;
    /// `NoSuchLifecycleConfiguration` when the bucket has none.
    async fn get_bucket_lifecycle(&self, bucket: &str) -> Result<Vec<LifecycleRule>>;
    async fn delete_bucket_lifecycle(&self, bucket: &str) -> Result<()>;
    async fn put_bucket_cors(&self, bucket: &str, rules: Vec<CorsRule>) -> Result<()>;
    /// `NoSuchCorsConfiguration` when the bucket has none.
    async fn get_bucket_cors(&self, bucket: &str) -> Result<Vec<CorsRule>>;
    async fn delete_bucket_cors(&self, bucket: &str) -> Result<()>;
    async fn copy_object(&self, req: CopyObject) -> Result<ObjectInfo>;
    async fn put_object_tagging(&self, bucket: &str, key: &str, tags: Vec<Tag>) -> Result<()>;
    async fn get_object_tagging(&self, bucket: &str, key: &str) -> Result<Vec<Tag>>;
    async fn delete_object_tagging(&self, bucket: &str, key: &str) -> Result<()>;
    async fn list_objects(&self, bucket: &str, query: ListQuery) -> Result<ListPage>;

    async fn create_multipart_upload(&self, req: CreateMultipart) -> Result<String>;
    async fn upload_part(&self, req: UploadPart, body: ByteStream) -> Result<PartInfo>;
    async fn upload_part_copy(&self, req: UploadPartCopy) -> Result<PartInfo>;
    async fn complete_multipart_upload(&self, req: CompleteMultipart) -> Result<ObjectInfo>;
    async fn abort_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()>;
    async fn list_parts(&self, req: ListParts) -> Result<ListPartsPage>;
    async fn list_multipart_uploads(&self, bucket: &str, query: UploadListQuery) -> Result<UploadListPage>;

    /// Creates an access key with no bucket permissions; returns it with its secret (the only
    /// time the secret is shown).
    async fn create_key(&self, name: &str) -> Result<(KeyInfo, String)>;
    async fn list_keys(&self) -> Result<Vec<KeyInfo>>;
    async fn set_key_enabled(&self, access_key: &str, enabled: bool) -> Result<()>;
    async fn delete_key(&self, access_key: &str) -> Result<()>;
    /// Grants (`Some`) or revokes (`None`) a key's permission on a bucket.
    async fn set_key_permission(&self, access_key: &str, bucket: &str, permission: Option<Permission>) -> Result<()>;
    /// For request authentication: the key's secret and permissions, if the key exists.
    async fn key_secret(&self, access_key: &str) -> Result<Option<(String, KeyInfo)>>;

    /// Sets (`Some("AES256")`) or removes a bucket's default encryption. Needs the node's
    /// master key (`ENABLE_ENCRYPTION`), which encrypts every object at rest.
    async fn put_bucket_encryption(&self, bucket: &str, algorithm: Option<String>) -> Result<()>;
    /// `None` when the bucket has no default encryption configured.
    async fn get_bucket_encryption(&self, bucket: &str) -> Result<Option<String>>;
    /// Sets (or with `None`, removes) a bucket's quota.
    async fn set_bucket_quota(&self, bucket: &str, quota: Option<Quota>) -> Result<()>;
    async fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage>;
    /// Counts a request against a bucket (for the monthly request counts). Cheap: in memory,
    /// persisted in the background. A `refused` request (an error answer) counts only if the
    /// bucket exists: it may name any bucket.
    fn record_request(&self, bucket: &str, refused: bool);

    /// Sets (or with `None`, removes) the bucket policy; the caller has validated it.
    async fn put_bucket_policy(&self, bucket: &str, policy: Option<String>) -> Result<()>;
    /// Sets the bucket's owner and grants.
    async fn put_bucket_acl(&self, bucket: &str, acl: Acl) -> Result<()>;
    /// Sets (or with `None`, removes) the bucket's public access block.
    async fn put_public_access_block(&self, bucket: &str, block: Option<PublicAccessBlock>) -> Result<()>;
    /// Policy, ACL and public access block of a bucket, in one read.
    async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess>;
    /// Sets the ACL of the current version (or of `version_id`).
    async fn put_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>, acl: Acl) -> Result<()>;
    /// The ACL of the current version (or of `version_id`); `None` when the writer set none
    /// (private to the bucket owner).
    async fn get_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<Acl>>;

    /// Object and byte counts and disk space, for health and metrics.
    async fn usage(&self) -> Result<Usage>;
}
