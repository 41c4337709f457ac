//! `LocalStore`: the single-node implementation of [`ObjectStore`]. Bodies go to the blob store
//! (streamed, checksummed, fsynced), metadata to redb through group commit. An object becomes
//! visible only when its metadata commits, after its blob is durable, so a crash never exposes
//! a partial object. Blobs an object no longer uses are listed in the metadata garbage table in
//! the same commit and removed afterwards by the garbage worker.
//!
//! One file per job: [`object`] (puts, gets, deletes, copies, stamped writes), [`versioning`]
//! (how a version enters or leaves the metadata), [`version_meta`] (tags, retention, legal
//! hold, ACL), [`multipart`], [`bucket`] (buckets, settings, usage, quotas), [`keys`],
//! [`index`] (listings and the version reads of cluster coordinators), [`lifecycle`],
//! [`body`] (streaming bodies in and out), [`sse`] (encryption checks), [`workers`]. This file
//! holds the store itself and the [`ObjectStore`] implementation, which delegates to them.

mod body;
mod bucket;
mod handoff;
mod index;
mod keys;
mod lifecycle;
mod rewrap;
pub use lifecycle::{LifecycleAction, LifecyclePage};
pub use rewrap::RewrapStats;
pub use scrub::{CorruptVersion, CorruptionHandler, ScrubStats, Verdict};
mod multipart;
mod object;
mod scrub;
mod sse;
mod tree;
mod version_meta;
mod versioning;
mod workers;

use crate::model::*;
use crate::{Acl, BucketChange, ByteStream, CorsRule, Error, LifecycleRule, ObjectStore, PublicAccessBlock, Result};
use async_trait::async_trait;
use bytes::Bytes;
use ironbucket_meta::{BucketRecord, MetaStore, ObjectLockConfig, ObjectRecord, Retention, Scanner, Tx};
use ironbucket_runtime::{Registry, WorkerCtx};
use ironbucket_storage::{BlobStore, Keyring, StorageConfig};
use ironbucket_types::{Hlc, HlcClock};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Largest single PUT (S3's limit).
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Largest multipart object part count.
pub const MAX_PARTS: u32 = 10_000;

/// Inline blob bytes of one object, by blob id.
type Inline = Arc<std::collections::HashMap<String, Bytes>>;

/// Settings of the local store.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub data_dir: PathBuf,
    pub storage: StorageConfig,
    /// Smallest size of every part but the last in CompleteMultipartUpload (S3: 5 MiB).
    pub min_part_size: u64,
    /// Multipart uploads older than this are aborted by the background worker.
    pub multipart_max_age: Duration,
    /// How often background workers run.
    pub worker_interval: Duration,
    /// A cluster's tombstones of deleted keys (in buckets that never had versioning) are kept
    /// this long, then removed by a background worker. A replica that missed a delete must be
    /// repaired within this time, or the key may come back when read.
    pub tombstone_grace: Duration,
    /// Bodies up to this size (known from Content-Length) are stored inside the metadata
    /// database instead of a file of their own: one group-committed write instead of two file
    /// fsyncs. 0 disables.
    pub inline_max: u64,
    /// Metadata page cache in bytes.
    pub meta_cache_bytes: usize,
    /// How often the lifecycle worker applies the buckets' rules.
    pub lifecycle_interval: Duration,
    /// The length of a lifecycle "day" (shorten it to test rules quickly).
    pub lifecycle_day: Duration,
    /// Apply lifecycle rules to this node's own data (a single node). A cluster turns this off:
    /// its rules are decided once per key and applied as replicated deletes.
    pub local_lifecycle: bool,
    /// Key that seals access key secrets; `None`: `<data dir>/keys.kek` (made on first start).
    /// A cluster gives every node the same one, so key records can be shared.
    pub key_sealing_key: Option<ironbucket_storage::EncryptionKey>,
    /// Keys that sealed access key secrets before a cluster secret rotation: secrets sealed
    /// with one still open, and [`LocalStore::reseal`] moves them to `key_sealing_key`.
    pub accepted_key_sealing_keys: Vec<ironbucket_storage::EncryptionKey>,
    /// Stamps from other nodes more than this far ahead of this node's clock are refused
    /// (a node whose clock runs ahead cannot drag the others' clocks into the future).
    pub max_clock_ahead: Duration,
    /// How often the scrub re-reads every stored body (`None`: never).
    pub scrub_interval: Option<Duration>,
    /// The scrub's read rate in bytes per second.
    pub scrub_rate: u64,
}

impl LocalConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            storage: StorageConfig::default(),
            min_part_size: 5 * 1024 * 1024,
            multipart_max_age: Duration::from_secs(7 * 24 * 3600),
            worker_interval: Duration::from_secs(60),
            tombstone_grace: Duration::from_secs(10 * 24 * 3600),
            inline_max: 64 * 1024,
            meta_cache_bytes: ironbucket_meta::DEFAULT_CACHE_BYTES,
            lifecycle_interval: Duration::from_secs(3600),
            lifecycle_day: Duration::from_secs(86_400),
            local_lifecycle: true,
            key_sealing_key: None,
            accepted_key_sealing_keys: Vec::new(),
            max_clock_ahead: Duration::from_millis(ironbucket_types::DEFAULT_MAX_AHEAD_MS),
            scrub_interval: Some(Duration::from_secs(7 * 24 * 3600)),
            scrub_rate: 8_000_000,
        }
    }
}

/// The single-node object store.
pub struct LocalStore {
    meta: MetaStore,
    blobs: BlobStore,
    clock: HlcClock,
    cfg: LocalConfig,
    key_id: Option<String>,
    /// The garbage worker, woken when blobs are put on the garbage list.
    garbage: std::sync::OnceLock<WorkerCtx>,
    lifecycle_counts: [AtomicU64; 4],
    /// Seals access key secrets at rest (`<data dir>/keys.kek`, created on first start).
    kek: ironbucket_storage::EncryptionKey,
    /// Requests per bucket not yet added to the stored monthly counts.
    requests: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// In a cluster: whether every replica is known to hold a tombstone (bucket, key, stamp),
    /// so that it may be collected (see [`LocalStore::set_tombstone_guard`]).
    tombstone_guard: std::sync::OnceLock<TombstoneGuard>,
    /// In a cluster: arranges the repair of a corrupt body found by the scrub.
    corruption: std::sync::OnceLock<scrub::CorruptionHandler>,
    scrub: scrub::ScrubStats,
    /// Older encryption keys are configured: the rewrap worker moves blobs to the current one.
    rotating: bool,
    rewrap: rewrap::RewrapStats,
}

/// Says whether a tombstone of (bucket, key) with this stamp is held by every replica.
pub type TombstoneGuard = Arc<dyn Fn(&str, &str, Hlc) -> bool + Send + Sync>;

impl LocalStore {
    /// Opens the store under `cfg.data_dir` and starts its background workers in a registry of
    /// their own. Must be called inside a Tokio runtime.
    pub fn open(cfg: LocalConfig, keys: Option<Keyring>) -> Result<Arc<Self>> {
        Self::open_in(cfg, keys, &Registry::new())
    }

    /// Opens the store under `cfg.data_dir` and starts its background workers (garbage removal,
    /// abandoned uploads, tombstones, lifecycle, request counts) in `workers`, with a probe that
    /// reports the metadata commit thread's death. Must be called inside a Tokio runtime.
    pub fn open_in(cfg: LocalConfig, keys: Option<Keyring>, workers: &Registry) -> Result<Arc<Self>> {
        cfg.storage.validate().map_err(Error::InvalidArgument)?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| Error::Internal(format!("cannot create data dir {}: {e}", cfg.data_dir.display())))?;
        let meta =
            MetaStore::open_with_cache(&cfg.data_dir.join("meta.redb"), cfg.storage.fsync, cfg.meta_cache_bytes)?;
        let key_id = keys.as_ref().map(|k| k.current_id());
        let rotating = keys.as_ref().is_some_and(|k| k.has_old_keys());
        let blobs = BlobStore::open(&cfg.data_dir, cfg.storage.clone(), keys)?;
        let kek = match &cfg.key_sealing_key {
            Some(k) => k.clone(),
            None => keys::load_or_create_kek(&cfg.data_dir.join("keys.kek"))?,
        };
        let store = Arc::new(Self {
            meta,
            blobs,
            clock: HlcClock::with_max_ahead(cfg.max_clock_ahead.as_millis() as u64),
            cfg,
            key_id,
            garbage: std::sync::OnceLock::new(),
            lifecycle_counts: Default::default(),
            kek,
            requests: Default::default(),
            tombstone_guard: std::sync::OnceLock::new(),
            corruption: std::sync::OnceLock::new(),
            scrub: Default::default(),
            rotating,
            rewrap: Default::default(),
        });
        // The garbage worker's first pass removes whatever a previous run left on the list.
        store.start_workers(workers);
        Ok(store)
    }

    /// In a cluster, tombstones past their grace period are collected only where `guard` says
    /// every replica holds them (a replica that missed a delete would otherwise bring the
    /// object back). Set once; without it (one node) the grace period alone decides.
    pub fn set_tombstone_guard(&self, guard: TombstoneGuard) {
        let _ = self.tombstone_guard.set(guard);
    }

    pub fn config(&self) -> &LocalConfig {
        &self.cfg
    }

    /// A new hybrid-logical-clock time from this node's clock (a cluster coordinator stamps
    /// writes with it).
    pub fn now_hlc(&self) -> Hlc {
        self.clock.now()
    }

    /// This node's hybrid logical clock (its bound on remote stamps, and how many it refused).
    pub fn clock(&self) -> &HlcClock {
        &self.clock
    }

    /// Takes a coordinator's stamp into account, or refuses the write when the stamp is further
    /// ahead of this node's clock than the bound (503: the client may retry elsewhere).
    fn observe(&self, hlc: Hlc) -> Result<()> {
        self.clock.observe(hlc).map_err(|e| {
            tracing::warn!(error = %e, "refused a stamped write from a node whose clock runs ahead");
            Error::Unavailable(format!("a replica refused the write: {e}"))
        })
    }

    /// Runs a metadata read that may scan many rows on the blocking pool, so that it never
    /// holds an async worker thread. Point reads (one key: a few B-tree pages, mostly cached)
    /// stay inline, where a thread hop would cost more than the read; writes go through the
    /// commit thread.
    pub(crate) async fn scan<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Scanner) -> ironbucket_meta::Result<R> + Send + 'static,
    {
        Ok(self.meta.scan(f).await?)
    }

    /// Whether `bucket` exists in this node's metadata (an unreadable record counts as
    /// absent: the request that needs it reports the error).
    pub fn has_bucket(&self, bucket: &str) -> bool {
        matches!(self.meta.get_bucket(bucket), Ok(Some(_)))
    }

    fn bucket_must_exist(&self, bucket: &str) -> Result<BucketRecord> {
        self.meta.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)
    }

    fn object_record(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        match self.meta.get_object(bucket, key)? {
            Some(r) => Ok(r),
            None => {
                self.bucket_must_exist(bucket)?;
                Err(Error::NoSuchKey)
            }
        }
    }

    /// Commits a metadata change; on failure the new blobs are removed again.
    async fn commit<R, F>(&self, new_blobs: Vec<String>, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<R> + Send + 'static,
    {
        let r = self.meta.write(f).await;
        match &r {
            Ok(_) => {
                self.wake_garbage();
            }
            Err(_) => {
                for id in new_blobs {
                    let _ = self.blobs.delete(&id).await;
                }
            }
        }
        r
    }

    fn info(key: &str, r: &ObjectRecord) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            version_id: r.version_id.clone(),
            size: r.size,
            etag: r.etag.clone(),
            last_modified: r.last_modified,
            content: r.content.clone(),
            user_meta: r.user_meta.clone(),
            checksums: r.checksums.clone(),
            tag_count: r.tags.len(),
            parts_count: r.parts_count,
            retention: r.retention.clone(),
            legal_hold: r.legal_hold,
            encrypted: r.key_id.is_some(),
            sse_c: r.sse_c.is_some(),
            hlc: r.hlc,
            origin: r.origin,
        }
    }
}

fn tags_of(v: &[(String, String)]) -> Vec<Tag> {
    v.iter()
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn create_bucket_as(&self, spec: crate::NewBucket) -> Result<()> {
        self.add_bucket(spec).await
    }

    async fn head_bucket(&self, bucket: &str) -> Result<BucketInfo> {
        let b = self.bucket_must_exist(bucket)?;
        Ok(BucketInfo {
            name: b.name,
            created: b.created,
        })
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.remove_bucket(bucket).await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        self.bucket_infos().await
    }

    async fn put_bucket_tagging(&self, bucket: &str, tags: Vec<Tag>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::tags(Some(tags))).await
    }

    async fn get_bucket_tagging(&self, bucket: &str) -> Result<Vec<Tag>> {
        let b = self.bucket_must_exist(bucket)?;
        b.tags.map(|t| tags_of(&t)).ok_or(Error::NoSuchTagSet)
    }

    async fn delete_bucket_tagging(&self, bucket: &str) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Tags(None)).await
    }

    async fn put_object(&self, req: PutObject, body: ByteStream) -> Result<ObjectInfo> {
        Ok(self.put_inner(req, body, None, None).await?.0)
    }

    async fn get_object(&self, req: GetObject) -> Result<GetObjectOutput> {
        self.read_object(req).await
    }

    async fn head_object(&self, req: GetObject) -> Result<ObjectInfo> {
        self.stat_object(req).await
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
    ) -> Result<DeleteResult> {
        self.remove_object(bucket, key, version_id, bypass).await
    }

    async fn delete_object_if_match(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
        if_match: &[String],
    ) -> Result<DeleteResult> {
        self.remove_object_if_match(bucket, key, version_id, bypass, if_match)
            .await
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        keys: Vec<(String, Option<String>)>,
        bypass: bool,
    ) -> Result<Vec<Result<DeleteResult>>> {
        self.remove_objects(bucket, keys, bypass).await
    }

    async fn put_object_lock_configuration(&self, bucket: &str, cfg: ObjectLockConfig) -> Result<()> {
        self.change_bucket(bucket, BucketChange::ObjectLock(cfg)).await
    }

    async fn get_object_lock_configuration(&self, bucket: &str) -> Result<ObjectLockConfig> {
        self.bucket_must_exist(bucket)?
            .object_lock
            .ok_or(Error::ObjectLockNotEnabled)
    }

    async fn put_object_retention(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        retention: Option<Retention>,
        bypass: bool,
    ) -> Result<()> {
        self.set_retention(bucket, key, version_id, retention, bypass).await
    }

    async fn get_object_retention(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Retention> {
        self.retention_of(bucket, key, version_id).await
    }

    async fn put_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>, on: bool) -> Result<()> {
        self.set_legal_hold(bucket, key, version_id, on).await
    }

    async fn get_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<bool> {
        self.legal_hold_of(bucket, key, version_id).await
    }

    async fn put_bucket_lifecycle(&self, bucket: &str, rules: Vec<LifecycleRule>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Lifecycle(Some(rules))).await
    }

    async fn get_bucket_lifecycle(&self, bucket: &str) -> Result<Vec<LifecycleRule>> {
        self.bucket_must_exist(bucket)?
            .lifecycle
            .ok_or(Error::NoSuchLifecycleConfiguration)
    }

    async fn delete_bucket_lifecycle(&self, bucket: &str) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Lifecycle(None)).await
    }

    async fn put_bucket_cors(&self, bucket: &str, rules: Vec<CorsRule>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Cors(Some(rules))).await
    }

    async fn get_bucket_cors(&self, bucket: &str) -> Result<Vec<CorsRule>> {
        self.bucket_must_exist(bucket)?
            .cors
            .ok_or(Error::NoSuchCorsConfiguration)
    }

    async fn delete_bucket_cors(&self, bucket: &str) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Cors(None)).await
    }

    async fn put_bucket_versioning(&self, bucket: &str, status: &str) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Versioning(status.to_string()))
            .await
    }

    async fn get_bucket_versioning(&self, bucket: &str) -> Result<Option<String>> {
        Ok(self.bucket_must_exist(bucket)?.versioning)
    }

    async fn list_object_versions(&self, bucket: &str, q: VersionListQuery) -> Result<VersionListing> {
        self.version_listing(bucket, q).await
    }

    async fn copy_object(&self, req: CopyObject) -> Result<ObjectInfo> {
        self.copy_from(req).await
    }

    async fn put_object_tagging(&self, bucket: &str, key: &str, tags: Vec<Tag>) -> Result<()> {
        self.set_object_tags(bucket, key, tags).await
    }

    async fn get_object_tagging(&self, bucket: &str, key: &str) -> Result<Vec<Tag>> {
        Ok(tags_of(&self.object_record(bucket, key)?.tags))
    }

    async fn delete_object_tagging(&self, bucket: &str, key: &str) -> Result<()> {
        self.set_object_tags(bucket, key, vec![]).await
    }

    async fn list_objects(&self, bucket: &str, q: ListQuery) -> Result<ListPage> {
        self.object_page(bucket, q).await
    }

    async fn create_multipart_upload(&self, req: CreateMultipart) -> Result<String> {
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        self.create_multipart_upload_with_id(req, upload_id).await
    }

    async fn upload_part(&self, req: UploadPart, body: ByteStream) -> Result<PartInfo> {
        self.put_part(req, body).await
    }

    async fn upload_part_copy(&self, req: UploadPartCopy) -> Result<PartInfo> {
        self.copy_part(req).await
    }

    async fn complete_multipart_upload(&self, req: CompleteMultipart) -> Result<ObjectInfo> {
        self.complete_inner(req, None).await
    }

    async fn abort_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        self.require_upload(bucket, key, upload_id)?;
        self.abort_upload(bucket.to_string(), key.to_string(), upload_id.to_string())
            .await
    }

    async fn list_parts(&self, req: ListParts) -> Result<ListPartsPage> {
        self.part_page(req).await
    }

    async fn list_multipart_uploads(&self, bucket: &str, q: UploadListQuery) -> Result<UploadListPage> {
        self.upload_page(bucket, q).await
    }

    async fn create_key(&self, name: &str) -> Result<(KeyInfo, String)> {
        self.add_key(name).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        self.key_infos().await
    }

    async fn set_key_enabled(&self, access_key: &str, enabled: bool) -> Result<()> {
        self.enable_key(access_key, enabled).await
    }

    async fn delete_key(&self, access_key: &str) -> Result<()> {
        self.remove_key(access_key).await
    }

    async fn set_key_permission(&self, access_key: &str, bucket: &str, permission: Option<Permission>) -> Result<()> {
        self.set_permission(access_key, bucket, permission).await
    }

    async fn key_secret(&self, access_key: &str) -> Result<Option<(String, KeyInfo)>> {
        self.secret_of(access_key).await
    }

    async fn put_bucket_encryption(&self, bucket: &str, algorithm: Option<String>) -> Result<()> {
        self.sse_check(algorithm.as_deref())?;
        self.change_bucket(bucket, BucketChange::Encryption(algorithm)).await
    }

    async fn put_bucket_policy(&self, bucket: &str, policy: Option<String>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Policy(policy)).await
    }

    async fn put_bucket_acl(&self, bucket: &str, acl: Acl) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Acl(acl)).await
    }

    async fn put_public_access_block(&self, bucket: &str, block: Option<PublicAccessBlock>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::PublicAccessBlock(block)).await
    }

    async fn bucket_access(&self, bucket: &str) -> Result<BucketAccess> {
        let b = self.bucket_must_exist(bucket)?;
        Ok(BucketAccess {
            policy: b.policy,
            acl: b.acl,
            public_access_block: b.public_access_block,
        })
    }

    async fn put_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>, acl: Acl) -> Result<()> {
        self.set_object_acl(bucket, key, version_id, acl).await
    }

    async fn get_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<Acl>> {
        self.object_acl(bucket, key, version_id).await
    }

    async fn get_bucket_encryption(&self, bucket: &str) -> Result<Option<String>> {
        Ok(self.bucket_must_exist(bucket)?.encryption)
    }

    async fn set_bucket_quota(&self, bucket: &str, quota: Option<crate::Quota>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Quota(quota)).await
    }

    async fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage> {
        self.usage_of(bucket).await
    }

    fn record_request(&self, bucket: &str, refused: bool) {
        if refused && !matches!(self.meta.get_bucket(bucket), Ok(Some(_))) {
            return;
        }
        self.count_request(bucket)
    }

    async fn usage(&self) -> Result<Usage> {
        self.node_usage().await
    }
}
