//! `LocalStore`: the single-node implementation of [`ObjectStore`]. Bodies go to the blob store
//! (streamed, checksummed, fsynced), metadata to redb through group commit. An object becomes
//! visible only when its metadata commits, after its blob is durable, so a crash never exposes
//! a partial object. Blobs an object no longer uses are listed in the metadata garbage table in
//! the same commit and removed afterwards by the garbage worker.

mod workers;

use crate::model::*;
use crate::{
    Acl, BucketChange, ByteStream, CorsRule, CustomerKey, Error, LifecycleRule, ObjectStore, PublicAccessBlock, Result,
    validate_tags,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ironbucket_meta::{
    BucketRecord, MetaStore, ObjectLockConfig, ObjectRecord, PartRecord, Retention, Segment, Tx, UploadRecord,
};
use ironbucket_runtime::{Registry, WorkerCtx};
use ironbucket_storage::{BlobRef, BlobStore, Keyring, StorageConfig};
use ironbucket_types::{
    ChecksumSet, Checksums, Conditions, Hlc, HlcClock, NULL_VERSION, RangeSpec, multipart_etag, now_millis,
    validate_bucket_name, validate_object_key,
};
use md5::Digest;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Largest single PUT (S3's limit).
pub const MAX_PUT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Largest multipart object part count.
pub const MAX_PARTS: u32 = 10_000;

/// Inline blob bytes of one object, by blob id.
type Inline = Arc<std::collections::HashMap<String, Bytes>>;

/// A body that has been received, verified and written (to a file, or in memory if inline).
struct Ingested {
    blob: BlobRef,
    /// Encoded bytes of an inline blob, to be stored with the metadata.
    inline: Option<Bytes>,
    etag: String,
    checksums: Checksums,
}

impl Ingested {
    /// Stores the inline bytes (if any) in the transaction that makes the blob referenced.
    fn store_inline(&self, t: &mut Tx<'_>) -> Result<()> {
        if let Some(b) = &self.inline {
            t.put_inline(&self.blob.id, b)?;
        }
        Ok(())
    }
}

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
    /// Key that seals access key secrets; `None`: `<data dir>/keys.kek` (made on first start).
    /// A cluster gives every node the same one, so key records can be shared.
    pub key_sealing_key: Option<ironbucket_storage::EncryptionKey>,
    /// Stamps from other nodes more than this far ahead of this node's clock are refused
    /// (a node whose clock runs ahead cannot drag the others' clocks into the future).
    pub max_clock_ahead: Duration,
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
            key_sealing_key: None,
            max_clock_ahead: Duration::from_millis(ironbucket_types::DEFAULT_MAX_AHEAD_MS),
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
}

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
        let blobs = BlobStore::open(&cfg.data_dir, cfg.storage.clone(), keys)?;
        let kek = match &cfg.key_sealing_key {
            Some(k) => k.clone(),
            None => load_or_create_kek(&cfg.data_dir.join("keys.kek"))?,
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
        });
        // The garbage worker's first pass removes whatever a previous run left on the list.
        store.start_workers(workers);
        Ok(store)
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

    /// Stores a write that a cluster coordinator stamped with `hlc`: the same checks and effects
    /// as a PutObject, but the version takes the coordinator's time (so every replica orders
    /// it, and names it in a versioned bucket, the same way) and the last writer wins: a write
    /// older than the key's current version does not replace it (it is kept as a noncurrent
    /// version when versioning is enabled). Returns the version's info and whether it was stored.
    /// `origin` is the coordinating node's id (not 0): equal HLC times order by it.
    pub async fn put_object_at(
        &self,
        req: PutObject,
        body: ByteStream,
        hlc: Hlc,
        origin: u64,
    ) -> Result<(ObjectInfo, bool)> {
        self.observe(hlc)?;
        self.put_inner(req, body, Some((hlc, origin.max(1))), None).await
    }

    /// Read repair: stores a copy of a version another replica holds, with its stamp, the
    /// stamps of its metadata changes, and the ETag, part count and checksums it was stored with
    /// there (a multipart object's ETag and composite checksums cannot be recomputed from its
    /// body). Otherwise as
    /// [`LocalStore::put_object_at`].
    pub async fn repair_object_at(
        &self,
        req: PutObject,
        body: ByteStream,
        hlc: Hlc,
        origin: u64,
        repair: Repair,
    ) -> Result<(ObjectInfo, bool)> {
        self.observe(hlc)?;
        self.put_inner(req, body, Some((hlc, origin.max(1))), Some(repair))
            .await
    }

    async fn put_inner(
        &self,
        req: PutObject,
        body: ByteStream,
        at: Option<(Hlc, u64)>,
        repair: Option<Repair>,
    ) -> Result<(ObjectInfo, bool)> {
        validate_object_key(&req.key)?;
        validate_tags(&req.meta.tags, 10)?;
        // One bucket read serves the existence check and the quota precheck.
        let b = self.bucket_must_exist(&req.bucket)?;
        self.quota_precheck(&b, &req.key, req.checks.content_length.unwrap_or(0))?;
        self.sse_check(req.sse.as_deref())?;
        let ing = self.ingest(body, req.checks, MAX_PUT_SIZE, req.sse_c.as_ref()).await?;
        let rec = self.new_record(
            req.meta,
            ing.blob.size,
            ing.etag.clone(),
            ing.checksums.clone(),
            vec![Segment {
                blob: ing.blob.id.clone(),
                size: ing.blob.size,
            }],
        );
        let mut rec = rec;
        if let Some((hlc, origin)) = at {
            rec.hlc = hlc;
            rec.origin = origin;
            rec.last_modified = hlc.physical;
        }
        if let Some(r) = repair {
            if let Some(x) = r.stored_as {
                rec.etag = x.etag;
                rec.parts_count = x.parts_count;
                rec.checksums = x.checksums;
            }
            rec.meta_stamps = r.meta_stamps;
        }
        seal_record(&mut rec, req.sse_c.as_ref());
        rec.retention = req.lock.retention.clone();
        rec.legal_hold = req.lock.legal_hold.unwrap_or(false);
        let mut info = Self::info(&req.key, &rec);
        let (bucket, key, conds) = (req.bucket, req.key, req.conditions);
        let blob = ing.blob.id.clone();
        let stored;
        (info.version_id, info.retention, stored) = self
            .commit(vec![blob.clone()], move |t| {
                let mut rec = rec;
                let stored = match at {
                    Some(_) => write_stamped_version(t, &bucket, &key, &mut rec, &conds)?,
                    None => {
                        write_version(t, &bucket, &key, &mut rec, &conds)?;
                        true
                    }
                };
                if stored {
                    ing.store_inline(t)?;
                }
                Ok((rec.version_id, rec.retention, stored))
            })
            .await?;
        if !stored {
            // Superseded: nothing refers to the body.
            let _ = self.blobs.delete(&blob).await;
        }
        Ok((info, stored))
    }

    /// Every version of `key` this node holds, newest first (delete markers included; no SSE-C
    /// key needed: only metadata is shown).
    pub fn stored_versions(&self, bucket: &str, key: &str) -> Result<Vec<StoredVersion>> {
        self.bucket_must_exist(bucket)?;
        Ok(self
            .meta
            .versions_of(bucket, key)?
            .into_iter()
            .map(|r| StoredVersion {
                version_id: r.version_id,
                etag: r.etag,
                size: r.size,
                last_modified: r.last_modified,
                hlc: match r.origin {
                    0 => format!("{}.{}", r.hlc.physical, r.hlc.logical),
                    o => format!("{}.{}@{o}", r.hlc.physical, r.hlc.logical),
                },
                delete_marker: r.delete_marker,
            })
            .collect())
    }

    /// Completes a multipart upload that a cluster coordinator stamped with `hlc` (see
    /// [`LocalStore::put_object_at`]): every replica names and orders the object the same way.
    pub async fn complete_multipart_upload_at(
        &self,
        req: CompleteMultipart,
        hlc: Hlc,
        origin: u64,
    ) -> Result<ObjectInfo> {
        self.observe(hlc)?;
        self.complete_inner(req, Some((hlc, origin.max(1)))).await
    }

    async fn complete_inner(&self, req: CompleteMultipart, at: Option<(Hlc, u64)>) -> Result<ObjectInfo> {
        if req.parts.is_empty() {
            return Err(Error::InvalidRequest("you must specify at least one part".into()));
        }
        for w in req.parts.windows(2) {
            if w[1].part_number <= w[0].part_number {
                return Err(Error::InvalidPartOrder);
            }
        }
        let min_part = self.cfg.min_part_size;
        let hlc = match at {
            Some((h, _)) => h,
            None => self.clock.now(),
        };
        let key_id = self.key_id.clone();
        let CompleteMultipart {
            bucket,
            key,
            upload_id,
            parts: wanted,
        } = req;
        let key2 = key.clone();
        let rec = self
            .commit(vec![], move |t| {
                if t.get_bucket(&bucket)?.is_none() {
                    return Err(Error::NoSuchBucket);
                }
                let upload = t.get_upload(&bucket, &key, &upload_id)?.ok_or(Error::NoSuchUpload)?;
                let stored = t.parts(&upload_id)?;
                let mut chosen: Vec<&PartRecord> = Vec::with_capacity(wanted.len());
                for w in &wanted {
                    let p = stored
                        .iter()
                        .find(|p| p.part_number == w.part_number)
                        .ok_or_else(|| Error::InvalidPart(format!("part {} was not uploaded", w.part_number)))?;
                    if p.etag != w.etag.trim_matches('"') {
                        return Err(Error::InvalidPart(format!(
                            "part {} has ETag {}, not {}",
                            w.part_number, p.etag, w.etag
                        )));
                    }
                    chosen.push(p);
                }
                for p in &chosen[..chosen.len() - 1] {
                    if p.size < min_part {
                        return Err(Error::EntityTooSmall {
                            part: p.part_number,
                            size: p.size,
                        });
                    }
                }
                let md5s: Vec<String> = chosen.iter().map(|p| p.etag.clone()).collect();
                let etag = multipart_etag(&md5s).ok_or_else(|| Error::Corrupt("part ETag is not an MD5".into()))?;
                let mut checksums = Checksums::default();
                if let Some(a) = upload.checksum_algorithm {
                    let vals: Option<Vec<&str>> = chosen.iter().map(|p| p.checksums.get(a)).collect();
                    if let Some(v) = vals {
                        checksums.set(a, ironbucket_types::checksum::composite(a, &v));
                    }
                }
                let rec = ObjectRecord {
                    version_id: NULL_VERSION.to_string(),
                    delete_marker: false,
                    hlc,
                    origin: at.map(|a| a.1).unwrap_or(0),
                    size: chosen.iter().map(|p| p.size).sum(),
                    etag,
                    last_modified: hlc.physical,
                    content: upload.content.clone(),
                    user_meta: upload.user_meta.clone(),
                    checksums,
                    tags: upload.tags.clone(),
                    segments: chosen
                        .iter()
                        .map(|p| Segment {
                            blob: p.blob.clone(),
                            size: p.size,
                        })
                        .collect(),
                    parts_count: Some(chosen.len() as u32),
                    retention: None,
                    legal_hold: false,
                    key_id: if upload.sse_c.is_some() { None } else { key_id },
                    acl: upload.acl.clone(),
                    sse_c: upload.sse_c.clone(),
                    meta_stamps: Default::default(),
                };
                for p in &stored {
                    if !chosen.iter().any(|c| c.part_number == p.part_number) {
                        t.release_blob(&p.blob)?;
                    }
                }
                let mut rec = rec;
                let stored = match at {
                    Some(_) => write_stamped_version(t, &bucket, &key, &mut rec, &Conditions::default())?,
                    None => {
                        write_version(t, &bucket, &key, &mut rec, &Conditions::default())?;
                        true
                    }
                };
                if !stored {
                    // Superseded by a newer write: the parts' data is not referenced.
                    for c in &chosen {
                        t.release_blob(&c.blob)?;
                    }
                }
                t.delete_parts(&upload_id)?;
                t.delete_upload(&bucket, &key, &upload_id)?;
                Ok(rec)
            })
            .await?;
        Ok(Self::info(&key2, &rec))
    }

    /// Starts a multipart upload under an id the caller chose (a cluster coordinator opens the
    /// same upload on every replica of the key).
    pub async fn create_multipart_upload_with_id(&self, req: CreateMultipart, upload_id: String) -> Result<String> {
        validate_object_key(&req.key)?;
        validate_tags(&req.meta.tags, 10)?;
        if upload_id.is_empty() || upload_id.len() > 128 || !upload_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::InvalidArgument(format!("invalid upload id {upload_id:?}")));
        }
        let rec = UploadRecord {
            upload_id: upload_id.clone(),
            key: req.key,
            initiated: now_millis(),
            content: req.meta.content,
            user_meta: req.meta.user_meta,
            tags: req.meta.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            checksum_algorithm: req.checksum_algorithm,
            acl: req.meta.acl,
            sse_c: req.sse_c.as_ref().map(CustomerKey::fingerprint),
        };
        let bucket = req.bucket;
        self.commit(vec![], move |t| {
            if t.get_bucket(&bucket)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            t.put_upload(&bucket, &rec)?;
            Ok(())
        })
        .await?;
        Ok(upload_id)
    }

    /// A stamped DeleteObject from a cluster coordinator: with a version id, that version goes
    /// for good; without one the key gets a delete marker (a versioned bucket) or a tombstone
    /// (a `null` delete marker, hidden from listings, in a bucket that never had versioning)
    /// carrying the stamp, so a late write older than the delete loses on every replica. A delete
    /// older than the key's newest version hides nothing (in a versioning-enabled bucket its
    /// marker is kept as a noncurrent version).
    pub async fn delete_object_at(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
        hlc: Hlc,
        origin: u64,
    ) -> Result<DeleteResult> {
        validate_object_key(key)?;
        self.observe(hlc)?;
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        let origin = origin.max(1);
        self.commit(vec![], move |t| match &version_id {
            Some(v) => {
                let r = delete_version_in_tx(t, &bucket, &key, v, bypass)?;
                // A version tombstone: a replica that missed this delete (or a late copy of
                // the version) cannot bring it back.
                let newer = t
                    .get_purge(&bucket, &key, v)?
                    .is_none_or(|p| (p.hlc, p.origin) < (hlc, origin));
                if newer {
                    t.put_purge(&bucket, &key, v, &ironbucket_meta::PurgeRecord { hlc, origin })?;
                }
                Ok(r)
            }
            None => delete_stamped_in_tx(t, &bucket, &key, hlc, origin),
        })
        .await
    }

    /// The newest version this node holds of `key` (delete markers and tombstones included), or
    /// the version `version_id`: what a cluster read compares across replicas.
    pub fn newest_version(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<VersionStamp>> {
        self.bucket_must_exist(bucket)?;
        let versions = self.meta.versions_of(bucket, key)?;
        let found = match version_id {
            Some(v) => versions.into_iter().find(|r| r.version_id == v),
            None => versions.into_iter().max_by_key(|r| r.stamp()),
        };
        let found = found.map(|r| VersionStamp {
            hlc: r.hlc,
            origin: r.origin,
            meta: r.meta_stamps.resolved(r.stamp()).digest(),
            version_id: r.version_id,
            delete_marker: r.delete_marker,
            purged: false,
        });
        // A version deleted by id after the newest one this node holds is the news to spread.
        let purge = self
            .meta
            .purges_of(bucket, key)?
            .into_iter()
            .filter(|(vid, _)| version_id.is_none_or(|v| v == vid))
            .max_by_key(|(_, p)| (p.hlc, p.origin));
        Ok(match (found, purge) {
            (f, Some((vid, p))) if f.as_ref().is_none_or(|f| (f.hlc, f.origin) < (p.hlc, p.origin)) => {
                Some(VersionStamp {
                    hlc: p.hlc,
                    origin: p.origin,
                    meta: 0,
                    version_id: vid,
                    delete_marker: true,
                    purged: true,
                })
            }
            (f, _) => f,
        })
    }

    /// One page of ListObjectVersions for a cluster coordinator ([`RawVersionPage`]):
    /// tombstones included and flagged, and the versions deleted by id among the page's keys.
    pub async fn list_versions_raw(&self, bucket: &str, q: VersionListQuery) -> Result<RawVersionPage> {
        let start = match (&q.key_marker, &q.version_id_marker) {
            // A page that starts inside the marker key covers the rest of that key.
            (Some(k), Some(_)) => before_key(k),
            (Some(k), None) => Some(k.clone()),
            _ => None,
        };
        let prefix = q.prefix.clone();
        let (page, never_versioned) = self.version_page(bucket, q).await?;
        let until = if page.truncated {
            let last_version = page.versions.last().map(|(k, _, _)| k.clone());
            let last_prefix = page.common_prefixes.last().map(|p| format!("{p}\u{10FFFF}"));
            last_version.max(last_prefix)
        } else {
            None
        };
        let purged = self
            .meta
            .purges_in(bucket, &prefix, start.as_deref(), until.as_deref())?
            .into_iter()
            .map(|(k, v, p)| (k, v, (p.hlc, p.origin)))
            .collect();
        Ok(RawVersionPage {
            versions: page
                .versions
                .iter()
                .map(|(k, r, latest)| (version_entry(k, r, *latest), never_versioned && r.delete_marker))
                .collect(),
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            purged,
        })
    }

    /// A page of the bucket's versions as stored, and whether the bucket never had versioning.
    async fn version_page(
        &self,
        bucket: &str,
        mut q: VersionListQuery,
    ) -> Result<(ironbucket_meta::VersionListPage, bool)> {
        let never_versioned = self.bucket_must_exist(bucket)?.versioning.is_none();
        q.max_keys = q.max_keys.min(1000);
        let meta = self.meta.clone();
        let b = bucket.to_string();
        let page = tokio::task::spawn_blocking(move || meta.list_versions(&b, &q))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| match e {
                ironbucket_meta::Error::Corrupt(m) if m.starts_with("no version") => {
                    Error::InvalidArgument("the version-id-marker does not name a version of the key-marker".into())
                }
                other => other.into(),
            })?;
        Ok((page, never_versioned))
    }

    /// Version `version_id`'s tags, retention, legal hold and ACL, each with the stamp of its
    /// last change (cluster replicas compare and merge these).
    pub fn version_meta(&self, bucket: &str, key: &str, version_id: &str) -> Result<VersionMeta> {
        self.bucket_must_exist(bucket)?;
        let rec = self
            .meta
            .versions_of(bucket, key)?
            .into_iter()
            .find(|r| r.version_id == version_id)
            .ok_or(Error::NoSuchVersion)?;
        if rec.delete_marker {
            return Err(Error::DeleteMarker {
                version_id: rec.version_id,
            });
        }
        Ok(meta_of(&rec))
    }

    /// A cluster coordinator's stamped change to one field of version `version_id`. The change
    /// takes effect only when `at` is newer than the field's last change (last writer wins per
    /// field), so replicas converge whatever order changes reach them in; an older one is
    /// acknowledged and dropped. Object lock rules are checked as for the unstamped calls.
    pub async fn change_meta_at(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        change: MetaChange,
        at: Stamp,
    ) -> Result<()> {
        if let MetaChange::Tags(t) = &change {
            validate_tags(&tags_of(t), 10)?;
        }
        self.observe(at.0)?;
        let lock = matches!(change, MetaChange::Retention { .. } | MetaChange::LegalHold(_));
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.to_string());
        self.commit(vec![], move |t| {
            let apply = |rec: &mut ObjectRecord| apply_change(rec, change, at, now_millis());
            if lock {
                update_version(t, &bucket, &key, Some(&version_id), apply)
            } else {
                modify_version(t, &bucket, &key, Some(&version_id), apply)
            }
        })
        .await
    }

    /// Read repair of metadata: takes every field `meta` changed later than this replica's copy
    /// of version `version_id` did. No lock rules apply: the coordinators that stamped those
    /// changes checked them.
    pub async fn merge_meta(&self, bucket: &str, key: &str, version_id: &str, meta: VersionMeta) -> Result<()> {
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.to_string());
        self.commit(vec![], move |t| {
            modify_version(t, &bucket, &key, Some(&version_id), |rec| {
                let mut mine = meta_of(rec);
                if mine.merge(&meta) {
                    rec.meta_stamps = mine.stamps();
                    rec.tags = mine.tags.value;
                    rec.retention = mine.retention.value;
                    rec.legal_hold = mine.legal_hold.value;
                    rec.acl = mine.acl.value;
                }
                Ok(())
            })
        })
        .await
    }

    /// Removes the tombstones (`null` delete markers in buckets that never had versioning)
    /// older than the grace period; returns how many. At most 10,000 per call.
    pub async fn collect_tombstones(&self) -> Result<usize> {
        let cutoff = now_millis().saturating_sub(self.cfg.tombstone_grace.as_millis() as u64);
        let mut removed = 0;
        for b in self.meta.list_buckets()? {
            if b.versioning.is_some() {
                continue;
            }
            let mut q = VersionListQuery {
                max_keys: 1000,
                ..Default::default()
            };
            let mut old: Vec<(String, String)> = Vec::new();
            loop {
                let (meta, name, q2) = (self.meta.clone(), b.name.clone(), q.clone());
                let page = tokio::task::spawn_blocking(move || meta.list_versions(&name, &q2))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))??;
                old.extend(
                    page.versions
                        .iter()
                        .filter(|(_, r, _)| r.delete_marker && r.last_modified < cutoff)
                        .map(|(k, r, _)| (k.clone(), r.sort_key())),
                );
                if !page.truncated || old.len() >= 10_000 {
                    break;
                }
                q.key_marker = page.next_key_marker;
                q.version_id_marker = page.next_version_id_marker;
            }
            if old.is_empty() {
                continue;
            }
            removed += old.len();
            let bucket = b.name.clone();
            self.commit(vec![], move |t| {
                for (key, sk) in &old {
                    t.delete_version(&bucket, key, sk)?;
                }
                Ok(())
            })
            .await?;
            if removed >= 10_000 {
                break;
            }
        }
        let purges = self.meta.purges_older_than(cutoff, 10_000)?;
        if !purges.is_empty() {
            removed += purges.len();
            self.commit(vec![], move |t| {
                for (b, k, v) in &purges {
                    t.delete_purge(b, k, v)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(removed)
    }

    /// Cluster listing: this node's newest version of each key after `after` under `prefix`,
    /// tombstones included, in key order, at most `limit` keys; and whether more follow.
    pub async fn list_newest(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(ObjectInfo, bool)>, bool)> {
        let (mut out, truncated) = self.list_newest_versions(bucket, prefix, after.clone(), limit).await?;
        // Versions deleted by id are news too: a key's entry carries the newest of its version
        // and its purge stamps (so a replica still holding a deleted version loses the merge),
        // and a key with nothing left but a purge is a tombstone entry.
        let until = if truncated {
            out.last().map(|(i, _)| i.key.clone())
        } else {
            None
        };
        let purges = self
            .meta
            .purges_in(bucket, prefix, after.as_deref(), until.as_deref())?;
        for (key, _, p) in purges {
            match out.binary_search_by(|(i, _)| i.key.as_str().cmp(key.as_str())) {
                Ok(i) => {
                    let e = &mut out[i].0;
                    if (p.hlc, p.origin) > (e.hlc, e.origin) {
                        e.hlc = p.hlc;
                        e.origin = p.origin;
                    }
                }
                Err(i) => {
                    let rec = ObjectRecord {
                        origin: p.origin,
                        ..marker_record(p.hlc)
                    };
                    out.insert(i, (Self::info(&key, &rec), true));
                }
            }
        }
        Ok((out, truncated))
    }

    async fn list_newest_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<(ObjectInfo, bool)>, bool)> {
        self.bucket_must_exist(bucket)?;
        let limit = limit.clamp(1, 1000);
        let meta = self.meta.clone();
        let b = bucket.to_string();
        let mut q = VersionListQuery {
            prefix: prefix.to_string(),
            delimiter: None,
            key_marker: after,
            version_id_marker: None,
            max_keys: 1000,
            lenient_marker: false,
        };
        let mut out: Vec<(ObjectInfo, bool)> = Vec::new();
        loop {
            let (m, b2, q2) = (meta.clone(), b.clone(), q.clone());
            let page = tokio::task::spawn_blocking(move || m.list_versions(&b2, &q2))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            for (k, r, _) in &page.versions {
                match out.last_mut() {
                    Some((last, dm)) if last.key == *k => {
                        if r.stamp() > (last.hlc, last.origin) {
                            *last = Self::info(k, r);
                            *dm = r.delete_marker;
                        }
                    }
                    _ => {
                        if out.len() == limit {
                            return Ok((out, true));
                        }
                        out.push((Self::info(k, r), r.delete_marker));
                    }
                }
            }
            if !page.truncated {
                return Ok((out, false));
            }
            q.key_marker = page.next_key_marker;
            q.version_id_marker = page.next_version_id_marker;
        }
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

    fn new_record(
        &self,
        meta: ObjectMeta,
        size: u64,
        etag: String,
        checksums: Checksums,
        segments: Vec<Segment>,
    ) -> ObjectRecord {
        let hlc = self.clock.now();
        ObjectRecord {
            version_id: NULL_VERSION.to_string(),
            delete_marker: false,
            hlc,
            origin: 0,
            size,
            etag,
            last_modified: hlc.physical,
            content: meta.content,
            user_meta: meta.user_meta,
            checksums,
            tags: meta.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            segments,
            parts_count: None,
            retention: None,
            legal_hold: false,
            key_id: self.key_id.clone(),
            acl: meta.acl,
            sse_c: None,
            meta_stamps: Default::default(),
        }
    }

    /// Streams a body into a new blob, verifying length, MD5 and checksums.
    async fn ingest(
        &self,
        mut body: ByteStream,
        checks: BodyChecks,
        max: u64,
        customer: Option<&CustomerKey>,
    ) -> Result<Ingested> {
        if let Some(len) = checks.content_length
            && len > max
        {
            return Err(Error::EntityTooLarge);
        }
        let expected_md5 = match &checks.content_md5 {
            Some(s) => {
                use base64_md5::decode16;
                Some(decode16(s).ok_or(Error::InvalidDigest)?)
            }
            None => None,
        };
        let mut algs: Vec<_> = checks.compute.clone();
        algs.extend(checks.checksums.algorithms());
        let mut hasher = ChecksumSet::new(algs.iter().copied());
        let mut md5 = md5::Md5::new();
        let inline = checks.content_length.is_some_and(|l| l <= self.cfg.inline_max);
        let mut writer = if inline {
            self.blobs.create_inline_with(customer)?
        } else {
            self.blobs.create_with(customer).await?
        };
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(Error::from_body)?;
            size += chunk.len() as u64;
            if size > max {
                return Err(Error::EntityTooLarge);
            }
            md5.update(&chunk);
            hasher.update(&chunk);
            writer.write(&chunk).await?;
        }
        if let Some(len) = checks.content_length
            && len != size
        {
            return Err(Error::IncompleteBody(format!("expected {len} bytes, received {size}")));
        }
        let digest: [u8; 16] = md5.finalize().into();
        if let Some(want) = expected_md5
            && want != digest
        {
            return Err(Error::BadDigest);
        }
        let mut expected = checks.checksums.clone();
        if let Some(trailer) = checks.trailer {
            let t = trailer();
            for a in t.algorithms() {
                expected.set(a, t.get(a).map(str::to_string));
            }
        }
        let mut computed = hasher.finish();
        // Trailer algorithms not announced up front cannot be verified afterwards.
        verify_checksums(&computed, &expected)?;
        // Store only what was asked for (computed set == requested algorithms).
        for a in ironbucket_types::ChecksumAlgorithm::ALL {
            if !algs.contains(&a) && expected.get(a).is_none() {
                computed.set(a, None);
            }
        }
        let (blob, inline) = if writer.is_inline() {
            let (b, bytes) = writer.finish_inline()?;
            (b, Some(bytes))
        } else {
            (writer.finish().await?, None)
        };
        Ok(Ingested {
            blob,
            inline,
            etag: hex::encode(digest),
            checksums: computed,
        })
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

    /// A stream of `range` over an object's segments, opening each blob only when reached.
    fn body_stream(
        &self,
        rec: &ObjectRecord,
        inline: Inline,
        start: u64,
        end: u64,
        customer: Option<CustomerKey>,
    ) -> ByteStream {
        let blobs = self.blobs.clone();
        let customer = customer.map(Arc::new);
        let mut pieces = Vec::new();
        let mut off = 0u64;
        for s in &rec.segments {
            let (lo, hi) = (off, off + s.size);
            off = hi;
            if hi <= start || lo >= end {
                continue;
            }
            let from = start.max(lo) - lo;
            let to = end.min(hi) - lo;
            pieces.push((
                BlobRef {
                    id: s.blob.clone(),
                    size: s.size,
                },
                from,
                to,
            ));
        }
        Box::pin(
            futures::stream::iter(pieces)
                .then(move |(b, from, to)| {
                    let blobs = blobs.clone();
                    let inline = inline.clone();
                    let customer = customer.clone();
                    async move {
                        let ck = customer.as_deref();
                        let r = if BlobStore::is_inline(&b.id) {
                            match inline.get(&b.id) {
                                Some(bytes) => blobs.read_inline_with(&b, bytes.clone(), from, to, ck).await,
                                None => Err(ironbucket_storage::Error::NotFound(b.id.clone())),
                            }
                        } else {
                            blobs.read_with(&b, from, to, ck).await
                        };
                        r.map_err(std::io::Error::other)
                    }
                })
                .try_flatten(),
        )
    }

    async fn read_source(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        conds: &Conditions,
    ) -> Result<(ObjectRecord, Inline)> {
        let (rec, inline) = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?,
            None => self.object_and_inline(bucket, key)?,
        };
        conds.check_copy_source(&rec.etag, rec.last_modified)?;
        Ok((rec, inline))
    }

    /// One version's record and its inline blob bytes; a delete marker is an error.
    fn version_and_inline(&self, bucket: &str, key: &str, version_id: &str) -> Result<(ObjectRecord, Inline)> {
        match self.meta.get_version_and_inline(bucket, key, version_id)? {
            Some((rec, _)) if rec.delete_marker => Err(Error::DeleteMarker {
                version_id: rec.version_id,
            }),
            Some((rec, blobs)) => Ok((
                rec,
                Arc::new(blobs.into_iter().map(|(id, b)| (id, Bytes::from(b))).collect()),
            )),
            None => {
                self.bucket_must_exist(bucket)?;
                Err(Error::NoSuchVersion)
            }
        }
    }

    /// An object's record and its inline blob bytes, from one metadata snapshot.
    fn object_and_inline(&self, bucket: &str, key: &str) -> Result<(ObjectRecord, Inline)> {
        match self.meta.get_object_and_inline(bucket, key)? {
            Some((rec, blobs)) => Ok((
                rec,
                Arc::new(blobs.into_iter().map(|(id, b)| (id, Bytes::from(b))).collect()),
            )),
            None => {
                self.bucket_must_exist(bucket)?;
                Err(Error::NoSuchKey)
            }
        }
    }

    async fn abort_upload(&self, bucket: String, key: String, upload_id: String) -> Result<()> {
        self.commit(vec![], move |t| {
            if t.get_upload(&bucket, &key, &upload_id)?.is_none() {
                return Err(Error::NoSuchUpload);
            }
            let parts = t.parts(&upload_id)?;
            for p in &parts {
                t.release_blob(&p.blob)?;
            }
            t.delete_parts(&upload_id)?;
            t.delete_upload(&bucket, &key, &upload_id)?;
            Ok(())
        })
        .await
    }

    async fn store_part(
        &self,
        bucket: String,
        key: String,
        upload_id: String,
        part_number: u32,
        ing: Ingested,
    ) -> Result<PartInfo> {
        let rec = PartRecord {
            part_number,
            etag: ing.etag.clone(),
            size: ing.blob.size,
            blob: ing.blob.id.clone(),
            last_modified: now_millis(),
            checksums: ing.checksums.clone(),
        };
        let out = PartInfo {
            part_number,
            etag: rec.etag.clone(),
            size: rec.size,
            last_modified: rec.last_modified,
            checksums: rec.checksums.clone(),
        };
        self.commit(vec![ing.blob.id.clone()], move |t| {
            if t.get_upload(&bucket, &key, &upload_id)?.is_none() {
                return Err(Error::NoSuchUpload);
            }
            if let Some(old) = t.get_part(&upload_id, part_number)? {
                t.release_blob(&old.blob)?;
            }
            t.put_part(&upload_id, &rec)?;
            ing.store_inline(t)
        })
        .await?;
        Ok(out)
    }

    /// Server-side encryption can be honoured only with the node's master key, which then
    /// encrypts every object (SSE-S3 semantics).
    /// Whether this node can honour a requested server-side encryption (`AES256` needs the
    /// node's master key).
    pub fn sse_check(&self, requested: Option<&str>) -> Result<()> {
        match requested {
            None => Ok(()),
            Some("AES256") if self.key_id.is_some() => Ok(()),
            Some("AES256") => Err(Error::InvalidArgument(
                "server-side encryption needs the server started with ENABLE_ENCRYPTION=true and an ENCRYPTION_KEY"
                    .into(),
            )),
            Some(other) => Err(Error::InvalidArgument(format!(
                "server-side encryption {other} is not supported (use AES256)"
            ))),
        }
    }

    /// Refuses a write that would exceed the bucket's quota before any data is stored
    /// (checked again, exactly, when the write commits).
    fn quota_precheck(&self, b: &BucketRecord, key: &str, bytes: u64) -> Result<()> {
        let bucket = b.name.as_str();
        if let Some(q) = &b.quota {
            // An overwrite in an unversioned bucket frees the old body's bytes.
            let freed = match b.versioning {
                None => self.meta.get_object(bucket, key)?.map(|o| o.size).unwrap_or(0),
                Some(_) => 0,
            };
            quota_check(q, self.meta.bucket_stats(bucket)?, 0, bytes as i64 - freed as i64)?;
        }
        Ok(())
    }

    /// Validates and applies a settings change to a bucket, in one commit.
    pub async fn change_bucket(&self, bucket: &str, change: BucketChange) -> Result<()> {
        change.validate()?;
        self.update_bucket(bucket, move |b| change.apply(b)).await
    }

    /// Makes the local bucket table match `buckets` (the cluster's agreed list): creates and
    /// updates records; removes buckets that are gone unless they still hold data here.
    /// Returns the names that could not be removed.
    pub async fn sync_buckets(&self, buckets: Vec<BucketRecord>) -> Result<Vec<String>> {
        let local = self.meta.list_buckets()?;
        let wanted: std::collections::BTreeMap<String, BucketRecord> =
            buckets.into_iter().map(|b| (b.name.clone(), b)).collect();
        let changed: Vec<BucketRecord> = wanted
            .values()
            .filter(|w| !local.iter().any(|l| l == *w))
            .cloned()
            .collect();
        let gone: Vec<String> = local
            .iter()
            .filter(|l| !wanted.contains_key(&l.name))
            .map(|l| l.name.clone())
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(vec![]);
        }
        self.commit(vec![], move |t| {
            for b in &changed {
                t.put_bucket(b)?;
            }
            let mut kept = Vec::new();
            for name in gone {
                if t.bucket_in_use(&name)? {
                    kept.push(name);
                } else {
                    t.delete_bucket(&name)?;
                }
            }
            Ok(kept)
        })
        .await
    }

    /// A new access key record (random id and secret, the secret sealed) and its secret.
    pub fn new_key_record(&self, name: &str) -> Result<(ironbucket_meta::KeyRecord, String)> {
        use rand::Rng;
        if name.is_empty() || name.len() > 128 {
            return Err(Error::InvalidArgument("a key name is 1 to 128 characters".into()));
        }
        const AK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const SK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let (ak, sk): (String, String) = {
            let mut rng = rand::thread_rng();
            (
                std::iter::once('K')
                    .chain((0..19).map(|_| AK[rng.gen_range(0..AK.len())] as char))
                    .collect(),
                (0..40).map(|_| SK[rng.gen_range(0..SK.len())] as char).collect(),
            )
        };
        let rec = ironbucket_meta::KeyRecord {
            access_key: ak,
            name: name.to_string(),
            secret_sealed: self
                .kek
                .seal_secret(sk.as_bytes())
                .map_err(|e| Error::Internal(e.to_string()))?,
            created: now_millis(),
            enabled: true,
            buckets: Default::default(),
        };
        Ok((rec, sk))
    }

    /// Makes the local access key table match `keys` (the cluster's agreed list).
    pub async fn sync_keys(&self, keys: Vec<ironbucket_meta::KeyRecord>) -> Result<()> {
        let local = self.meta.list_keys()?;
        let changed: Vec<_> = keys.iter().filter(|k| !local.contains(k)).cloned().collect();
        let gone: Vec<String> = local
            .iter()
            .filter(|l| !keys.iter().any(|k| k.access_key == l.access_key))
            .map(|l| l.access_key.clone())
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok(());
        }
        self.commit(vec![], move |t| {
            for k in &changed {
                t.put_key(k)?;
            }
            for ak in &gone {
                t.delete_key(ak)?;
            }
            Ok(())
        })
        .await
    }

    /// Whether a bucket holds any object version, delete marker or multipart upload here.
    pub async fn bucket_in_use(&self, bucket: &str) -> Result<bool> {
        let name = bucket.to_string();
        self.commit(vec![], move |t| Ok(t.bucket_in_use(&name)?)).await
    }

    /// Changes a bucket's record in one commit.
    async fn update_bucket(
        &self,
        bucket: &str,
        change: impl FnOnce(&mut BucketRecord) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let name = bucket.to_string();
        self.commit(vec![], move |t| {
            let mut b = t.get_bucket(&name)?.ok_or(Error::NoSuchBucket)?;
            change(&mut b)?;
            t.put_bucket(&b)?;
            Ok(())
        })
        .await
    }

    fn check_part_number(n: u32) -> Result<()> {
        if n == 0 || n > MAX_PARTS {
            return Err(Error::InvalidArgument(format!(
                "part number must be an integer between 1 and {MAX_PARTS}, got {n}"
            )));
        }
        Ok(())
    }

    fn require_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord> {
        match self.meta.get_upload(bucket, key, upload_id)? {
            Some(u) => Ok(u),
            None => {
                self.bucket_must_exist(bucket)?;
                Err(Error::NoSuchUpload)
            }
        }
    }
}

/// Writes `rec` as the new current version of `bucket/key` inside a transaction: checks the
/// write conditions against the current version, gives the record its version id (`null`
/// unless versioning is enabled), replaces the previous `null` version (releasing the blobs the
/// new record does not reuse) and keeps the counters right.
fn write_version(t: &mut Tx<'_>, bucket: &str, key: &str, rec: &mut ObjectRecord, conds: &Conditions) -> Result<()> {
    write_version_as(t, bucket, key, rec, conds, true)
}

/// A write stamped elsewhere (a cluster coordinator): last writer wins by stamp (HLC time, then
/// origin) against every version the key has, delete markers included. Returns whether it was
/// stored: a write older than the key's newest version is kept only as a noncurrent version in a
/// versioning-enabled bucket and dropped otherwise; a write already stored (the same stamp
/// delivered again) is not stored twice.
fn write_stamped_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    rec: &mut ObjectRecord,
    conds: &Conditions,
) -> Result<bool> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let enabled = b.versioning.as_deref() == Some("Enabled");
    if enabled && t.find_version(bucket, key, &rec.sort_key())?.is_some() {
        return Ok(false);
    }
    // A version deleted by id at or after this write's time stays deleted.
    let vid = if enabled {
        rec.sort_key()
    } else {
        NULL_VERSION.to_string()
    };
    if t.get_purge(bucket, key, &vid)?
        .is_some_and(|p| (p.hlc, p.origin) >= rec.stamp())
    {
        return Ok(false);
    }
    let newest = t.versions_of(bucket, key)?.into_iter().map(|(_, r)| r.stamp()).max();
    if newest.is_none_or(|n| n <= rec.stamp()) {
        write_version_as(t, bucket, key, rec, conds, true)?;
        return Ok(true);
    }
    if !enabled {
        return Ok(false);
    }
    write_version_as(t, bucket, key, rec, conds, false)?;
    Ok(true)
}

/// Stores a new version; `make_current`: it also becomes the key's current version.
fn write_version_as(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    rec: &mut ObjectRecord,
    conds: &Conditions,
    make_current: bool,
) -> Result<()> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let current = t.get_object(bucket, key)?;
    conds.check_write(current.as_ref().map(|o| o.etag.as_str()))?;
    let enabled = b.versioning.as_deref() == Some("Enabled");
    rec.version_id = if enabled {
        rec.sort_key()
    } else {
        NULL_VERSION.to_string()
    };
    match &b.object_lock {
        Some(lock) => {
            // A read repair's copy carries the retention decided for the version (stamped),
            // which may be none: the bucket's default applies to new writes only.
            if rec.retention.is_none()
                && rec.meta_stamps.is_empty()
                && let Some(mode) = &lock.default_mode
            {
                let days = lock.default_days.map(|d| d as u64).unwrap_or(0)
                    + lock.default_years.map(|y| y as u64 * 365).unwrap_or(0);
                rec.retention = Some(Retention {
                    mode: mode.clone(),
                    until: rec.last_modified + days * 86_400_000,
                });
            }
        }
        None if rec.retention.is_some() || rec.legal_hold => {
            return Err(Error::InvalidRequest(
                "Bucket is missing Object Lock Configuration".into(),
            ));
        }
        None => {}
    }
    let (mut d_objects, mut d_bytes) = (1i64, rec.size as i64);
    if !enabled {
        // A stamped write (origin != 0) may replace a tombstone, which only the version index
        // holds: look the null version up there.
        let known = (b.versioning.is_none() && rec.origin == 0).then_some(current.as_ref());
        let (o, by) = drop_null_version(t, bucket, key, &rec.segments, known)?;
        d_objects -= o;
        d_bytes -= by;
    }
    if let Some(q) = &b.quota {
        quota_check(q, t.bucket_stats(bucket)?, d_objects, d_bytes)?;
    }
    t.put_version(bucket, key, rec)?;
    if make_current {
        t.put_object(bucket, key, rec)?;
    }
    t.add_stats(bucket, d_objects, d_bytes)?;
    Ok(())
}

/// Removes the `null` version of a key, if any, releasing blobs not in `keep`. Returns the
/// (objects, bytes) it accounted for.
///
/// `known`: in a bucket that never had versioning the null version is the current object, which
/// the caller has already read (`Some(current)`); `None` means look it up among the versions.
fn drop_null_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    keep: &[Segment],
    known: Option<Option<&ObjectRecord>>,
) -> Result<(i64, i64)> {
    let found = match known {
        Some(cur) => cur.map(|c| (c.sort_key(), c.clone())),
        None => t.find_version(bucket, key, NULL_VERSION)?,
    };
    let Some((sk, old)) = found else {
        return Ok((0, 0));
    };
    for b in old.blob_ids() {
        if !keep.iter().any(|s| s.blob == b) {
            t.release_blob(b)?;
        }
    }
    t.delete_version(bucket, key, &sk)?;
    Ok(if old.delete_marker {
        (0, 0)
    } else {
        (1, old.size as i64)
    })
}

/// Changes one version's lock settings in place (in the version index and, when it is the
/// current version, in the current-object index). The bucket must have object lock.
fn update_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    change: impl FnOnce(&mut ObjectRecord) -> Result<()>,
) -> Result<()> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    if b.object_lock.is_none() {
        return Err(Error::InvalidRequest(
            "Bucket is missing Object Lock Configuration".into(),
        ));
    }
    modify_version(t, bucket, key, version_id, change)
}

/// Changes one version's record in place (in the version index and, when it is the current
/// version, in the current-object index).
fn modify_version(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    change: impl FnOnce(&mut ObjectRecord) -> Result<()>,
) -> Result<()> {
    if t.get_bucket(bucket)?.is_none() {
        return Err(Error::NoSuchBucket);
    }
    let mut rec = match version_id {
        Some(v) => t.find_version(bucket, key, v)?.ok_or(Error::NoSuchVersion)?.1,
        None => t.get_object(bucket, key)?.ok_or(Error::NoSuchKey)?,
    };
    if rec.delete_marker {
        return Err(Error::DeleteMarker {
            version_id: rec.version_id,
        });
    }
    change(&mut rec)?;
    t.put_version(bucket, key, &rec)?;
    if t.get_object(bucket, key)?
        .is_some_and(|cur| cur.version_id == rec.version_id)
    {
        t.put_object(bucket, key, &rec)?;
    }
    Ok(())
}

fn version_entry(key: &str, r: &ObjectRecord, latest: bool) -> VersionEntry {
    VersionEntry {
        info: LocalStore::info(key, r),
        is_latest: latest,
        delete_marker: r.delete_marker,
    }
}

/// A string sorting before `key` (`key` without its last character), for scans that start
/// "after" a key and must include `key` itself (`None` when `key` is empty).
fn before_key(key: &str) -> Option<String> {
    let mut s = key.to_string();
    s.pop()?;
    Some(s)
}

/// A version's changeable metadata with the stamps of its last changes.
fn meta_of(rec: &ObjectRecord) -> VersionMeta {
    let s = rec.meta_stamps;
    let at = |x: Option<Stamp>| x.unwrap_or_else(|| rec.stamp());
    VersionMeta {
        tags: Lww {
            value: rec.tags.clone(),
            at: at(s.tags),
        },
        retention: Lww {
            value: rec.retention.clone(),
            at: at(s.retention),
        },
        legal_hold: Lww {
            value: rec.legal_hold,
            at: at(s.legal_hold),
        },
        acl: Lww {
            value: rec.acl.clone(),
            at: at(s.acl),
        },
    }
}

/// Sets one field of `rec` when `at` is newer than that field's last change (object lock rules
/// checked at `now`, in ms).
fn apply_change(
    rec: &mut ObjectRecord,
    change: MetaChange,
    at: Stamp,
    now: ironbucket_types::UnixMillis,
) -> Result<()> {
    let s = rec.meta_stamps;
    let last = match &change {
        MetaChange::Tags(_) => s.tags,
        MetaChange::Retention { .. } => s.retention,
        MetaChange::LegalHold(_) => s.legal_hold,
        MetaChange::Acl(_) => s.acl,
    }
    .unwrap_or_else(|| rec.stamp());
    if at <= last {
        return Ok(());
    }
    match change {
        MetaChange::Tags(t) => {
            rec.tags = t;
            rec.meta_stamps.tags = Some(at);
        }
        MetaChange::Retention { retention, bypass } => {
            check_retention_change(rec.retention.as_ref(), retention.as_ref(), bypass, now)?;
            rec.retention = retention;
            rec.meta_stamps.retention = Some(at);
        }
        MetaChange::LegalHold(on) => {
            rec.legal_hold = on;
            rec.meta_stamps.legal_hold = Some(at);
        }
        MetaChange::Acl(a) => {
            rec.acl = Some(a);
            rec.meta_stamps.acl = Some(at);
        }
    }
    Ok(())
}

/// Marks a record as sealed with a customer key (not with the node key).
fn seal_record(rec: &mut ObjectRecord, customer: Option<&CustomerKey>) {
    if let Some(ck) = customer {
        rec.sse_c = Some(ck.fingerprint());
        rec.key_id = None;
    }
}

/// SSE-C: a request must give exactly the key an object was written with, and none for an
/// object written without one.
fn check_sse_c(rec: &ObjectRecord, customer: Option<&CustomerKey>) -> Result<()> {
    check_key(rec.sse_c.as_deref(), customer)
}

fn check_upload_key(upload: &UploadRecord, customer: Option<&CustomerKey>) -> Result<()> {
    match (upload.sse_c.as_deref(), customer) {
        (None, Some(_)) => Err(Error::InvalidRequest(
            "The multipart upload was not initiated with customer-provided encryption keys, so its parts cannot use them."
                .into(),
        )),
        (Some(_), None) => Err(Error::InvalidRequest(
            "The multipart upload was initiated with a customer-provided encryption key: each part must be sent with the same key."
                .into(),
        )),
        (fp, ck) => check_key(fp, ck),
    }
}

fn check_key(fingerprint: Option<&str>, customer: Option<&CustomerKey>) -> Result<()> {
    match (fingerprint, customer) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Error::InvalidRequest(
            "The encryption parameters are not applicable to this object.".into(),
        )),
        (Some(_), None) => Err(Error::InvalidRequest(
            "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
                .into(),
        )),
        (Some(fp), Some(ck)) if ck.matches(fp) => Ok(()),
        (Some(_), Some(_)) => Err(Error::AccessDenied(
            "Requests specifying Server Side Encryption with Customer provided keys must provide the correct secret key."
                .into(),
        )),
    }
}

fn marker_record(hlc: ironbucket_types::Hlc) -> ObjectRecord {
    ObjectRecord {
        version_id: NULL_VERSION.to_string(),
        delete_marker: true,
        hlc,
        origin: 0,
        size: 0,
        etag: String::new(),
        last_modified: hlc.physical,
        content: Default::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        tags: vec![],
        segments: vec![],
        parts_count: None,
        retention: None,
        legal_hold: false,
        key_id: None,
        acl: None,
        sse_c: None,
        meta_stamps: Default::default(),
    }
}

/// DeleteObject without a version id: removes the object in an unversioned bucket, adds a
/// delete marker in a versioned one (replacing the `null` version when suspended).
fn delete_in_tx(t: &mut Tx<'_>, bucket: &str, key: &str, hlc: ironbucket_types::Hlc) -> Result<DeleteResult> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let key_s = key.to_string();
    match b.versioning.as_deref() {
        None => {
            let current = t.get_object(bucket, key)?;
            let (o, by) = drop_null_version(t, bucket, key, &[], Some(current.as_ref()))?;
            t.delete_object(bucket, key)?;
            t.add_stats(bucket, -o, -by)?;
            Ok(DeleteResult {
                key: key_s,
                version_id: None,
                delete_marker: false,
            })
        }
        Some(state) => {
            let mut marker = marker_record(hlc);
            if state == "Enabled" {
                marker.version_id = marker.sort_key();
            } else {
                let (o, by) = drop_null_version(t, bucket, key, &[], None)?;
                t.add_stats(bucket, -o, -by)?;
            }
            t.put_version(bucket, key, &marker)?;
            t.delete_object(bucket, key)?;
            Ok(DeleteResult {
                key: key_s,
                version_id: Some(marker.version_id),
                delete_marker: true,
            })
        }
    }
}

/// A stamped DeleteObject without a version id (see [`LocalStore::delete_object_at`]).
fn delete_stamped_in_tx(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    hlc: ironbucket_types::Hlc,
    origin: u64,
) -> Result<DeleteResult> {
    let b = t.get_bucket(bucket)?.ok_or(Error::NoSuchBucket)?;
    let enabled = b.versioning.as_deref() == Some("Enabled");
    let mut marker = marker_record(hlc);
    marker.origin = origin;
    if enabled {
        marker.version_id = marker.sort_key();
    }
    let result = DeleteResult {
        key: key.to_string(),
        version_id: b.versioning.is_some().then(|| marker.version_id.clone()),
        delete_marker: b.versioning.is_some(),
    };
    let versions = t.versions_of(bucket, key)?;
    if versions.iter().any(|(_, r)| r.stamp() == marker.stamp()) {
        // The same delete delivered again.
        return Ok(result);
    }
    if versions.iter().any(|(_, r)| r.stamp() > marker.stamp()) {
        // A newer write already won; a versioned bucket keeps the marker as history.
        if enabled {
            t.put_version(bucket, key, &marker)?;
        }
        return Ok(result);
    }
    if !enabled {
        let (o, by) = drop_null_version(t, bucket, key, &[], None)?;
        t.add_stats(bucket, -o, -by)?;
    }
    t.put_version(bucket, key, &marker)?;
    t.delete_object(bucket, key)?;
    Ok(result)
}

/// DeleteObject with a version id: removes that version for good; the newest remaining version
/// becomes current (none if it is a delete marker).
fn delete_version_in_tx(
    t: &mut Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: &str,
    bypass: bool,
) -> Result<DeleteResult> {
    if t.get_bucket(bucket)?.is_none() {
        return Err(Error::NoSuchBucket);
    }
    let Some((sk, old)) = t.find_version(bucket, key, version_id)? else {
        // Deleting a version that does not exist succeeds, as in S3.
        return Ok(DeleteResult {
            key: key.to_string(),
            version_id: Some(version_id.to_string()),
            delete_marker: false,
        });
    };
    if old.locked(now_millis(), bypass) {
        return Err(Error::AccessDenied(
            "Access Denied because object protected by object lock.".into(),
        ));
    }
    for b in old.blob_ids() {
        t.release_blob(b)?;
    }
    t.delete_version(bucket, key, &sk)?;
    if !old.delete_marker {
        t.add_stats(bucket, -1, -(old.size as i64))?;
    }
    match t.versions_of(bucket, key)?.into_iter().next() {
        Some((_, newest)) if !newest.delete_marker => t.put_object(bucket, key, &newest)?,
        _ => t.delete_object(bucket, key)?,
    }
    Ok(DeleteResult {
        key: key.to_string(),
        version_id: Some(old.version_id),
        delete_marker: old.delete_marker,
    })
}

fn tags_of(v: &[(String, String)]) -> Vec<Tag> {
    v.iter()
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

mod base64_md5 {
    use base64::Engine;
    pub fn decode16(s: &str) -> Option<[u8; 16]> {
        let raw = base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?;
        raw.try_into().ok()
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn create_bucket(&self, bucket: &str) -> Result<()> {
        validate_bucket_name(bucket)?;
        let rec = BucketRecord {
            name: bucket.to_string(),
            created: now_millis(),
            tags: None,
            versioning: None,
            cors: None,
            lifecycle: None,
            quota: None,
            encryption: None,
            object_lock: None,
            ..Default::default()
        };
        self.commit(vec![], move |t| {
            if t.get_bucket(&rec.name)?.is_some() {
                return Err(Error::BucketAlreadyOwnedByYou);
            }
            t.put_bucket(&rec)?;
            Ok(())
        })
        .await
    }

    async fn head_bucket(&self, bucket: &str) -> Result<BucketInfo> {
        let b = self.bucket_must_exist(bucket)?;
        Ok(BucketInfo {
            name: b.name,
            created: b.created,
        })
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let name = bucket.to_string();
        self.commit(vec![], move |t| {
            if t.get_bucket(&name)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            if t.bucket_in_use(&name)? {
                return Err(Error::BucketNotEmpty);
            }
            t.delete_bucket(&name)?;
            Ok(())
        })
        .await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        Ok(self
            .meta
            .list_buckets()?
            .into_iter()
            .map(|b| BucketInfo {
                name: b.name,
                created: b.created,
            })
            .collect())
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
        let (rec, inline) = match &req.version_id {
            Some(v) => self.version_and_inline(&req.bucket, &req.key, v)?,
            None => self.object_and_inline(&req.bucket, &req.key)?,
        };
        check_sse_c(&rec, req.sse_c.as_ref())?;
        req.conditions.check_read(&rec.etag, rec.last_modified)?;
        let range = match req.range {
            Some(r) => Some(r.resolve(rec.size).map_err(|e| Error::range(e, rec.size))?),
            None => None,
        };
        let (start, end) = range.map(|r| (r.start, r.end)).unwrap_or((0, rec.size));
        let body = self.body_stream(&rec, inline, start, end, req.sse_c);
        Ok(GetObjectOutput {
            info: Self::info(&req.key, &rec),
            range,
            body,
        })
    }

    async fn head_object(&self, req: GetObject) -> Result<ObjectInfo> {
        let rec = match &req.version_id {
            Some(v) => self.version_and_inline(&req.bucket, &req.key, v)?.0,
            None => self.object_record(&req.bucket, &req.key)?,
        };
        check_sse_c(&rec, req.sse_c.as_ref())?;
        req.conditions.check_read(&rec.etag, rec.last_modified)?;
        if let Some(r) = req.range {
            r.resolve(rec.size).map_err(|e| Error::range(e, rec.size))?;
        }
        Ok(Self::info(&req.key, &rec))
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
    ) -> Result<DeleteResult> {
        validate_object_key(key)?;
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        let hlc = self.clock.now();
        self.commit(vec![], move |t| match &version_id {
            Some(v) => delete_version_in_tx(t, &bucket, &key, v, bypass),
            None => delete_in_tx(t, &bucket, &key, hlc),
        })
        .await
    }

    async fn delete_objects(
        &self,
        bucket: &str,
        keys: Vec<(String, Option<String>)>,
        bypass: bool,
    ) -> Result<Vec<Result<DeleteResult>>> {
        if keys.len() > 1000 {
            return Err(Error::InvalidRequest(
                "a DeleteObjects request may name at most 1000 keys".into(),
            ));
        }
        let bucket = bucket.to_string();
        let hlcs: Vec<_> = keys.iter().map(|_| self.clock.now()).collect();
        self.commit(vec![], move |t| {
            if t.get_bucket(&bucket)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            let mut out = Vec::with_capacity(keys.len());
            for ((k, v), hlc) in keys.into_iter().zip(hlcs) {
                out.push(match validate_object_key(&k) {
                    Ok(()) => match &v {
                        Some(v) => delete_version_in_tx(t, &bucket, &k, v, bypass),
                        None => delete_in_tx(t, &bucket, &k, hlc),
                    },
                    Err(e) => Err(e.into()),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn create_bucket_with_lock(&self, bucket: &str) -> Result<()> {
        validate_bucket_name(bucket)?;
        let rec = BucketRecord {
            name: bucket.to_string(),
            created: now_millis(),
            tags: None,
            versioning: Some("Enabled".into()),
            cors: None,
            lifecycle: None,
            quota: None,
            encryption: None,
            object_lock: Some(ObjectLockConfig::default()),
            ..Default::default()
        };
        self.commit(vec![], move |t| {
            if t.get_bucket(&rec.name)?.is_some() {
                return Err(Error::BucketAlreadyOwnedByYou);
            }
            t.put_bucket(&rec)?;
            Ok(())
        })
        .await
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
        check_retention_change(None, retention.as_ref(), bypass, 0)?;
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        self.commit(vec![], move |t| {
            update_version(t, &bucket, &key, version_id.as_deref(), |rec| {
                check_retention_change(rec.retention.as_ref(), retention.as_ref(), bypass, now_millis())?;
                rec.retention = retention;
                Ok(())
            })
        })
        .await
    }

    async fn get_object_retention(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Retention> {
        let rec = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?.0,
            None => self.object_record(bucket, key)?,
        };
        rec.retention.ok_or(Error::NoSuchObjectLockConfiguration)
    }

    async fn put_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>, on: bool) -> Result<()> {
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        self.commit(vec![], move |t| {
            update_version(t, &bucket, &key, version_id.as_deref(), |rec| {
                rec.legal_hold = on;
                Ok(())
            })
        })
        .await
    }

    async fn get_object_legal_hold(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<bool> {
        let rec = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?.0,
            None => self.object_record(bucket, key)?,
        };
        Ok(rec.legal_hold)
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
        let (page, never_versioned) = self.version_page(bucket, q).await?;
        Ok(VersionListing {
            versions: page
                .versions
                .iter()
                // A cluster's tombstones of deleted keys (never-versioned buckets) are not versions.
                .filter(|(_, r, _)| !(never_versioned && r.delete_marker))
                .map(|(k, r, latest)| version_entry(k, r, *latest))
                .collect(),
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            next_key_marker: page.next_key_marker,
            next_version_id_marker: page.next_version_id_marker,
        })
    }

    async fn copy_object(&self, req: CopyObject) -> Result<ObjectInfo> {
        validate_object_key(&req.key)?;
        // Blobs are not reference-counted: versions may share them only in a bucket that never
        // had versioning (where the new version replaces the old one).
        let versioned = self.bucket_must_exist(&req.bucket)?.versioning.is_some();
        let (src, src_inline) = self
            .read_source(
                &req.src_bucket,
                &req.src_key,
                req.src_version_id.as_deref(),
                &req.source_conditions,
            )
            .await?;
        check_sse_c(&src, req.src_sse_c.as_ref())?;
        let same = req.src_bucket == req.bucket && req.src_key == req.key && req.src_version_id.is_none();
        if same && req.replace_meta.is_none() && req.replace_tags.is_none() {
            return Err(Error::InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
            ));
        }
        let mut meta = match req.replace_meta {
            Some(m) => m,
            None => ObjectMeta {
                content: src.content.clone(),
                user_meta: src.user_meta.clone(),
                tags: vec![],
                acl: None,
            },
        };
        // The copy gets the ACL of the request (private by default), never the source's.
        meta.acl = req.acl;
        meta.tags = match req.replace_tags {
            Some(t) => t,
            None => tags_of(&src.tags),
        };
        validate_tags(&meta.tags, 10)?;
        // Blobs sealed with a customer key are never shared: the copy may use another key.
        let share = same && !versioned && src.sse_c.is_none() && req.sse_c.is_none();
        let (rec, new_blob) = if share {
            // Metadata-only rewrite: the new version shares the blobs of the old one.
            let mut rec = self.new_record(
                meta,
                src.size,
                src.etag.clone(),
                src.checksums.clone(),
                src.segments.clone(),
            );
            rec.parts_count = src.parts_count;
            (rec, None)
        } else {
            let body = self.body_stream(&src, src_inline, 0, src.size, req.src_sse_c.clone());
            let checks = BodyChecks {
                content_length: Some(src.size),
                compute: src.checksums.algorithms().collect(),
                ..Default::default()
            };
            let ing = self.ingest(body, checks, MAX_PUT_SIZE, req.sse_c.as_ref()).await?;
            let mut rec = self.new_record(
                meta,
                ing.blob.size,
                ing.etag.clone(),
                ing.checksums.clone(),
                vec![Segment {
                    blob: ing.blob.id.clone(),
                    size: ing.blob.size,
                }],
            );
            seal_record(&mut rec, req.sse_c.as_ref());
            (rec, Some(ing))
        };
        let mut info = Self::info(&req.key, &rec);
        let (bucket, key, src_etag, src_hlc) = (req.bucket, req.key, src.etag, src.hlc);
        let new_blobs = new_blob.iter().map(|i| i.blob.id.clone()).collect();
        info.version_id = self
            .commit(new_blobs, move |t| {
                if share {
                    // The blobs being shared must still belong to the current version.
                    match t.get_object(&bucket, &key)? {
                        Some(cur) if cur.hlc == src_hlc && cur.etag == src_etag => {}
                        _ => return Err(Error::PreconditionFailed),
                    }
                }
                let mut rec = rec;
                write_version(t, &bucket, &key, &mut rec, &Conditions::default())?;
                if let Some(ing) = &new_blob {
                    ing.store_inline(t)?;
                }
                Ok(rec.version_id)
            })
            .await?;
        Ok(info)
    }

    async fn put_object_tagging(&self, bucket: &str, key: &str, tags: Vec<Tag>) -> Result<()> {
        validate_tags(&tags, 10)?;
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.commit(vec![], move |t| {
            if t.get_bucket(&bucket)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            let mut rec = t.get_object(&bucket, &key)?.ok_or(Error::NoSuchKey)?;
            rec.tags = tags.into_iter().map(|t| (t.key, t.value)).collect();
            t.put_object(&bucket, &key, &rec)?;
            // The same version is also kept in the version index.
            t.put_version(&bucket, &key, &rec)?;
            Ok(())
        })
        .await
    }

    async fn get_object_tagging(&self, bucket: &str, key: &str) -> Result<Vec<Tag>> {
        Ok(tags_of(&self.object_record(bucket, key)?.tags))
    }

    async fn delete_object_tagging(&self, bucket: &str, key: &str) -> Result<()> {
        self.put_object_tagging(bucket, key, vec![]).await
    }

    async fn list_objects(&self, bucket: &str, q: ListQuery) -> Result<ListPage> {
        self.bucket_must_exist(bucket)?;
        let mq = ListQuery {
            max_keys: q.max_keys.min(1000),
            ..q
        };
        let meta = self.meta.clone();
        let b = bucket.to_string();
        let page = tokio::task::spawn_blocking(move || meta.list_objects(&b, &mq))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(ListPage {
            objects: page.objects.iter().map(|(k, r)| Self::info(k, r)).collect(),
            common_prefixes: page.common_prefixes,
            truncated: page.truncated,
            next_marker: page.next_marker,
        })
    }

    async fn create_multipart_upload(&self, req: CreateMultipart) -> Result<String> {
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        self.create_multipart_upload_with_id(req, upload_id).await
    }

    async fn upload_part(&self, req: UploadPart, body: ByteStream) -> Result<PartInfo> {
        Self::check_part_number(req.part_number)?;
        let upload = self.require_upload(&req.bucket, &req.key, &req.upload_id)?;
        self.quota_precheck(
            &self.bucket_must_exist(&req.bucket)?,
            "",
            req.checks.content_length.unwrap_or(0),
        )?;
        check_upload_key(&upload, req.sse_c.as_ref())?;
        let mut checks = req.checks;
        if let Some(a) = upload.checksum_algorithm {
            checks.compute.push(a);
        }
        let ing = self.ingest(body, checks, MAX_PUT_SIZE, req.sse_c.as_ref()).await?;
        self.store_part(req.bucket, req.key, req.upload_id, req.part_number, ing)
            .await
    }

    async fn upload_part_copy(&self, req: UploadPartCopy) -> Result<PartInfo> {
        Self::check_part_number(req.part_number)?;
        let upload = self.require_upload(&req.bucket, &req.key, &req.upload_id)?;
        let (src, src_inline) = self
            .read_source(&req.src_bucket, &req.src_key, None, &req.source_conditions)
            .await?;
        check_upload_key(&upload, req.sse_c.as_ref())?;
        check_sse_c(&src, req.src_sse_c.as_ref())?;
        let (start, end) = match req.range {
            Some(RangeSpec::FromTo {
                first,
                last: Some(last),
            }) => {
                if first > last || last >= src.size {
                    return Err(Error::InvalidArgument(format!(
                        "the x-amz-copy-source-range value must be of the form bytes=first-last where first and last are zero-based offsets within the {}-byte source object",
                        src.size
                    )));
                }
                (first, last + 1)
            }
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "the x-amz-copy-source-range value must be of the form bytes=first-last".into(),
                ));
            }
            None => (0, src.size),
        };
        let body = self.body_stream(&src, src_inline, start, end, req.src_sse_c.clone());
        let checks = BodyChecks {
            content_length: Some(end - start),
            compute: upload.checksum_algorithm.into_iter().collect(),
            ..Default::default()
        };
        let ing = self.ingest(body, checks, MAX_PUT_SIZE, req.sse_c.as_ref()).await?;
        self.store_part(req.bucket, req.key, req.upload_id, req.part_number, ing)
            .await
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
        let upload = self.require_upload(&req.bucket, &req.key, &req.upload_id)?;
        let marker = req.part_number_marker.unwrap_or(0);
        let max = req.max_parts.clamp(1, 1000);
        let all: Vec<PartRecord> = self
            .meta
            .list_parts(&req.upload_id)?
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = all.len() > max;
        let parts: Vec<PartInfo> = all
            .into_iter()
            .take(max)
            .map(|p| PartInfo {
                part_number: p.part_number,
                etag: p.etag,
                size: p.size,
                last_modified: p.last_modified,
                checksums: p.checksums,
            })
            .collect();
        let next = if truncated {
            parts.last().map(|p| p.part_number)
        } else {
            None
        };
        Ok(ListPartsPage {
            parts,
            truncated,
            next_part_number_marker: next,
            checksum_algorithm: upload.checksum_algorithm,
        })
    }

    async fn list_multipart_uploads(&self, bucket: &str, mut q: UploadListQuery) -> Result<UploadListPage> {
        self.bucket_must_exist(bucket)?;
        q.max_uploads = q.max_uploads.min(1000);
        Ok(self.meta.list_uploads(bucket, &q)?)
    }

    async fn create_key(&self, name: &str) -> Result<(KeyInfo, String)> {
        let (rec, sk) = self.new_key_record(name)?;
        let info = key_info(&rec);
        self.commit(vec![], move |t| {
            if t.get_key(&rec.access_key)?.is_some() {
                return Err(Error::Internal("access key collision".into()));
            }
            t.put_key(&rec)?;
            Ok(())
        })
        .await?;
        Ok((info, sk))
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        Ok(self.meta.list_keys()?.iter().map(key_info).collect())
    }

    async fn set_key_enabled(&self, access_key: &str, enabled: bool) -> Result<()> {
        let ak = access_key.to_string();
        self.commit(vec![], move |t| {
            let mut k = t.get_key(&ak)?.ok_or_else(|| Error::NoSuchAccessKey(ak.clone()))?;
            k.enabled = enabled;
            t.put_key(&k)?;
            Ok(())
        })
        .await
    }

    async fn delete_key(&self, access_key: &str) -> Result<()> {
        let ak = access_key.to_string();
        self.commit(vec![], move |t| {
            if t.get_key(&ak)?.is_none() {
                return Err(Error::NoSuchAccessKey(ak.clone()));
            }
            t.delete_key(&ak)?;
            Ok(())
        })
        .await
    }

    async fn set_key_permission(&self, access_key: &str, bucket: &str, permission: Option<Permission>) -> Result<()> {
        let (ak, bucket) = (access_key.to_string(), bucket.to_string());
        self.commit(vec![], move |t| {
            let mut k = t.get_key(&ak)?.ok_or_else(|| Error::NoSuchAccessKey(ak.clone()))?;
            match permission {
                Some(p) => {
                    if t.get_bucket(&bucket)?.is_none() {
                        return Err(Error::NoSuchBucket);
                    }
                    k.buckets.insert(bucket, p.as_str().to_string());
                }
                None => {
                    k.buckets.remove(&bucket);
                }
            }
            t.put_key(&k)?;
            Ok(())
        })
        .await
    }

    async fn key_secret(&self, access_key: &str) -> Result<Option<(String, KeyInfo)>> {
        let Some(rec) = self.meta.get_key(access_key)? else {
            return Ok(None);
        };
        let secret = self
            .kek
            .open_secret(&rec.secret_sealed)
            .map_err(|_| Error::Corrupt(format!("the secret of key {access_key} cannot be opened")))?;
        let secret = String::from_utf8(secret).map_err(|_| Error::Corrupt("key secret is not UTF-8".into()))?;
        Ok(Some((secret, key_info(&rec))))
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
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        self.commit(vec![], move |t| {
            modify_version(t, &bucket, &key, version_id.as_deref(), |r| {
                r.acl = Some(acl);
                Ok(())
            })
        })
        .await
    }

    async fn get_object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<Option<Acl>> {
        let rec = match version_id {
            Some(v) => self.version_and_inline(bucket, key, v)?.0,
            None => self.object_record(bucket, key)?,
        };
        if rec.delete_marker {
            return Err(Error::DeleteMarker {
                version_id: rec.version_id,
            });
        }
        Ok(rec.acl)
    }

    async fn get_bucket_encryption(&self, bucket: &str) -> Result<Option<String>> {
        Ok(self.bucket_must_exist(bucket)?.encryption)
    }

    async fn set_bucket_quota(&self, bucket: &str, quota: Option<crate::Quota>) -> Result<()> {
        self.change_bucket(bucket, BucketChange::Quota(quota)).await
    }

    async fn bucket_usage(&self, bucket: &str) -> Result<BucketUsage> {
        let b = self.bucket_must_exist(bucket)?;
        let s = self.meta.bucket_stats(bucket)?;
        let mut requests: std::collections::BTreeMap<String, u64> =
            self.meta.counters(&format!("r/{bucket}/"))?.into_iter().collect();
        // Include what has not been flushed yet.
        if let Ok(m) = self.requests.lock()
            && let Some(n) = m.get(bucket)
        {
            *requests.entry(month_of(now_millis())).or_default() += n;
        }
        Ok(BucketUsage {
            objects: s.objects,
            bytes: s.bytes,
            quota: b.quota,
            requests,
        })
    }

    fn record_request(&self, bucket: &str) {
        if let Ok(mut m) = self.requests.lock() {
            match m.get_mut(bucket) {
                Some(n) => *n += 1,
                None => {
                    m.insert(bucket.to_string(), 1);
                }
            }
        }
    }

    async fn usage(&self) -> Result<Usage> {
        let s = self.meta.stats()?;
        let dir = self.cfg.data_dir.clone();
        let (total, free) = tokio::task::spawn_blocking(move || {
            (
                fs4::total_space(&dir).unwrap_or(0),
                fs4::available_space(&dir).unwrap_or(0),
            )
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Usage {
            objects: s.objects,
            bytes: s.bytes,
            disk_total: total,
            disk_free: free,
            lifecycle: crate::LifecycleCounts {
                expired_objects: self.lifecycle_counts[0].load(Ordering::Relaxed),
                noncurrent_versions: self.lifecycle_counts[1].load(Ordering::Relaxed),
                delete_markers: self.lifecycle_counts[2].load(Ordering::Relaxed),
                aborted_uploads: self.lifecycle_counts[3].load(Ordering::Relaxed),
            },
        })
    }
}

/// Refuses growth beyond a bucket's quota.
fn quota_check(q: &crate::Quota, used: ironbucket_meta::Stats, add_objects: i64, add_bytes: i64) -> Result<()> {
    if add_objects > 0
        && let Some(max) = q.max_objects
        && used.objects.saturating_add_signed(add_objects) > max
    {
        return Err(Error::QuotaExceeded(format!(
            "the bucket's quota of {max} objects is reached"
        )));
    }
    if add_bytes > 0
        && let Some(max) = q.max_bytes
        && used.bytes.saturating_add_signed(add_bytes) > max
    {
        return Err(Error::QuotaExceeded(format!(
            "the bucket's quota of {max} bytes would be exceeded"
        )));
    }
    Ok(())
}

/// `YYYY-MM` of a Unix time in milliseconds (UTC).
fn month_of(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}")
}

/// Reads the key-encryption key file, or creates it (32 random bytes, mode 600).
fn load_or_create_kek(path: &std::path::Path) -> Result<ironbucket_storage::EncryptionKey> {
    use std::io::Write;
    if let Ok(raw) = std::fs::read(path) {
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::Corrupt(format!("{} is not a 32-byte key", path.display())))?;
        return Ok(ironbucket_storage::EncryptionKey::from_bytes(bytes));
    }
    let key = ironbucket_storage::EncryptionKey::random();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(&key.to_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(key)
}

fn key_info(r: &ironbucket_meta::KeyRecord) -> KeyInfo {
    KeyInfo {
        access_key: r.access_key.clone(),
        name: r.name.clone(),
        created: r.created,
        enabled: r.enabled,
        buckets: r
            .buckets
            .iter()
            .filter_map(|(b, p)| Permission::parse(p).map(|p| (b.clone(), p)))
            .collect(),
    }
}

/// What the lifecycle worker decided for one version.
enum LifecycleAction {
    /// Expire the current version (delete, or a delete marker in a versioned bucket).
    ExpireCurrent,
    /// Remove this version for good (noncurrent version or expired delete marker).
    Remove { version_id: String, marker: bool },
}

impl LocalStore {
    async fn apply_lifecycle(&self) -> Result<()> {
        let day_ms = (self.cfg.lifecycle_day.as_millis() as u64).max(1);
        for bucket in self.meta.list_buckets()? {
            let Some(rules) = bucket.lifecycle.filter(|r| !r.is_empty()) else {
                continue;
            };
            let name = bucket.name;
            let mut after: Option<String> = None;
            loop {
                let keys = self.meta.version_keys(&name, after.as_deref(), 500)?;
                let Some(last) = keys.last().cloned() else { break };
                for key in keys {
                    let now = now_millis();
                    let versions = self.meta.versions_of(&name, &key)?;
                    for action in lifecycle_actions(&rules, &key, &versions, now, day_ms) {
                        let r = match &action {
                            LifecycleAction::ExpireCurrent => self.delete_object(&name, &key, None, false).await,
                            LifecycleAction::Remove { version_id, .. } => {
                                self.delete_object(&name, &key, Some(version_id), false).await
                            }
                        };
                        match (r, &action) {
                            (Ok(_), LifecycleAction::ExpireCurrent) => {
                                self.lifecycle_counts[0].fetch_add(1, Ordering::Relaxed);
                            }
                            (Ok(_), LifecycleAction::Remove { marker: false, .. }) => {
                                self.lifecycle_counts[1].fetch_add(1, Ordering::Relaxed);
                            }
                            (Ok(_), LifecycleAction::Remove { marker: true, .. }) => {
                                self.lifecycle_counts[2].fetch_add(1, Ordering::Relaxed);
                            }
                            (Err(Error::AccessDenied(_)), _) => {} // under object lock: kept
                            (Err(e), _) => {
                                tracing::warn!(bucket = %name, key = %key, error = %e, "lifecycle action failed")
                            }
                        }
                    }
                }
                after = Some(last);
            }
            // Incomplete multipart uploads.
            for rule in rules.iter().filter(|r| r.enabled) {
                let Some(days) = rule.abort_incomplete_multipart_days else {
                    continue;
                };
                let cutoff = now_millis().saturating_sub(days as u64 * day_ms);
                for (b, u) in self.meta.uploads_older_than(cutoff, 1000)? {
                    if b == name && u.key.starts_with(&rule.prefix) {
                        match self.abort_upload(b, u.key.clone(), u.upload_id.clone()).await {
                            Ok(()) => {
                                self.lifecycle_counts[3].fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::NoSuchUpload) => {}
                            Err(e) => tracing::warn!(error = %e, "lifecycle abort failed"),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The pure decision: which lifecycle actions apply to one key's versions (newest first).
fn lifecycle_actions(
    rules: &[LifecycleRule],
    key: &str,
    versions: &[ObjectRecord],
    now: u64,
    day_ms: u64,
) -> Vec<LifecycleAction> {
    let mut out = Vec::new();
    let Some(newest) = versions.first() else { return out };
    if newest.delete_marker {
        // A delete marker with nothing behind it is an expired object delete marker.
        if versions.len() == 1
            && rules
                .iter()
                .any(|r| r.expired_object_delete_marker && r.matches(key, 0, &[]))
        {
            out.push(LifecycleAction::Remove {
                version_id: newest.version_id.clone(),
                marker: true,
            });
        }
    } else if rules
        .iter()
        .any(|r| r.matches(key, newest.size, &newest.tags) && r.current_expired(newest.last_modified, now, day_ms))
    {
        out.push(LifecycleAction::ExpireCurrent);
    }
    for (noncurrent_seen, w) in versions.windows(2).enumerate() {
        let noncurrent_seen = noncurrent_seen as u32;
        let (successor, v) = (&w[0], &w[1]);
        let expired = rules.iter().any(|r| {
            r.matches(key, v.size, &v.tags)
                && r.noncurrent_expired(successor.last_modified, noncurrent_seen, now, day_ms)
        });
        if expired {
            out.push(LifecycleAction::Remove {
                version_id: v.version_id.clone(),
                marker: v.delete_marker,
            });
        }
    }
    out
}
