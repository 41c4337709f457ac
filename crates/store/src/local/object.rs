//! Objects: PutObject, GetObject, HeadObject, DeleteObject(s) and CopyObject, and the same writes
//! stamped by a cluster coordinator (`put_object_at`, `repair_object_at`, `delete_object_at`).
//! How a version enters or leaves the metadata is in [`super::versioning`].

use super::sse::{check_sse_c, seal_record};
use super::versioning::{
    delete_in_tx, delete_stamped_in_tx, delete_version_in_tx, write_stamped_version, write_version,
};
use super::{Inline, LocalStore, MAX_PUT_SIZE, tags_of};
use crate::model::*;
use crate::{ByteStream, Error, Result, validate_tags};
use bytes::Bytes;
use ironbucket_meta::{ObjectRecord, Segment};
use ironbucket_types::{Checksums, Conditions, Hlc, NULL_VERSION, validate_object_key};
use std::sync::Arc;

impl LocalStore {
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
        // Origin 0 is a version written before this data joined a cluster: copied as it is,
        // so that its version id stays the same.
        self.put_inner(req, body, Some((hlc, origin)), Some(repair)).await
    }

    pub(super) async fn put_inner(
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

    /// [`ObjectStore::get_object`](crate::ObjectStore::get_object) on this node.
    pub(super) async fn read_object(&self, req: GetObject) -> Result<GetObjectOutput> {
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

    /// [`ObjectStore::head_object`](crate::ObjectStore::head_object) on this node.
    pub(super) async fn stat_object(&self, req: GetObject) -> Result<ObjectInfo> {
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

    /// [`ObjectStore::delete_object`](crate::ObjectStore::delete_object) on this node.
    pub(super) async fn remove_object(
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

    /// [`ObjectStore::delete_object_if_match`](crate::ObjectStore::delete_object_if_match): the
    /// current version's ETag is compared in the same commit as the delete.
    pub(super) async fn remove_object_if_match(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
        if_match: &[String],
    ) -> Result<DeleteResult> {
        validate_object_key(key)?;
        let (bucket, key, version_id) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        let if_match = if_match.to_vec();
        let hlc = self.clock.now();
        self.commit(vec![], move |t| {
            if t.get_bucket(&bucket)?.is_none() {
                return Err(Error::NoSuchBucket);
            }
            let current = t.get_object(&bucket, &key)?.filter(|o| !o.delete_marker);
            crate::check_delete_if_match(&if_match, current.as_ref().map(|o| o.etag.as_str()))?;
            match &version_id {
                Some(v) => delete_version_in_tx(t, &bucket, &key, v, bypass),
                None => delete_in_tx(t, &bucket, &key, hlc),
            }
        })
        .await
    }

    /// [`ObjectStore::delete_objects`](crate::ObjectStore::delete_objects): one commit for all keys.
    pub(super) async fn remove_objects(
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
        // Origin 0: a delete made before this data joined a cluster, copied as it is (its
        // marker keeps its version id).
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

    /// [`ObjectStore::copy_object`](crate::ObjectStore::copy_object) on this node.
    pub(super) async fn copy_from(&self, req: CopyObject) -> Result<ObjectInfo> {
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
        let (bucket, key, src_etag, src_hlc, conditions) = (req.bucket, req.key, src.etag, src.hlc, req.conditions);
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
                write_version(t, &bucket, &key, &mut rec, &conditions)?;
                if let Some(ing) = &new_blob {
                    ing.store_inline(t)?;
                }
                Ok(rec.version_id)
            })
            .await?;
        Ok(info)
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

    pub(super) async fn read_source(
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
    pub(super) fn version_and_inline(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<(ObjectRecord, Inline)> {
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
}
