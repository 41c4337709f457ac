//! Multipart uploads: creating an upload, storing parts (uploaded or copied), completing it into
//! an object (also stamped by a cluster coordinator) or aborting it, and listing uploads and parts.

use super::body::Ingested;
use super::sse::{check_sse_c, check_upload_key};
use super::versioning::{write_stamped_version, write_version};
use super::{LocalStore, MAX_PARTS, MAX_PUT_SIZE};
use crate::model::*;
use crate::{ByteStream, CustomerKey, Error, Result, validate_tags};
use ironbucket_meta::{ObjectRecord, PartRecord, Segment, UploadRecord};
use ironbucket_types::{
    Checksums, Conditions, Hlc, NULL_VERSION, RangeSpec, multipart_etag, now_millis, validate_object_key,
};

impl LocalStore {
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

    pub(super) async fn complete_inner(&self, req: CompleteMultipart, at: Option<(Hlc, u64)>) -> Result<ObjectInfo> {
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
            conditions,
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
                        write_version(t, &bucket, &key, &mut rec, &conditions)?;
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

    /// [`ObjectStore::upload_part`](crate::ObjectStore::upload_part) on this node.
    pub(super) async fn put_part(&self, req: UploadPart, body: ByteStream) -> Result<PartInfo> {
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

    /// [`ObjectStore::upload_part_copy`](crate::ObjectStore::upload_part_copy) on this node.
    pub(super) async fn copy_part(&self, req: UploadPartCopy) -> Result<PartInfo> {
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

    pub(super) async fn abort_upload(&self, bucket: String, key: String, upload_id: String) -> Result<()> {
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

    /// [`ObjectStore::list_parts`](crate::ObjectStore::list_parts) on this node.
    pub(super) async fn part_page(&self, req: ListParts) -> Result<ListPartsPage> {
        let upload = self.require_upload(&req.bucket, &req.key, &req.upload_id)?;
        let marker = req.part_number_marker.unwrap_or(0);
        let max = req.max_parts.clamp(1, 1000);
        let upload_id = req.upload_id.clone();
        let all: Vec<PartRecord> = self
            .scan(move |m| m.list_parts(&upload_id))
            .await?
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

    /// [`ObjectStore::list_multipart_uploads`](crate::ObjectStore::list_multipart_uploads) on this node.
    pub(super) async fn upload_page(&self, bucket: &str, mut q: UploadListQuery) -> Result<UploadListPage> {
        self.bucket_must_exist(bucket)?;
        q.max_uploads = q.max_uploads.min(1000);
        let b = bucket.to_string();
        self.scan(move |m| m.list_uploads(&b, &q)).await
    }

    fn check_part_number(n: u32) -> Result<()> {
        if n == 0 || n > MAX_PARTS {
            return Err(Error::InvalidArgument(format!(
                "part number must be an integer between 1 and {MAX_PARTS}, got {n}"
            )));
        }
        Ok(())
    }

    pub(super) fn require_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRecord> {
        match self.meta.get_upload(bucket, key, upload_id)? {
            Some(u) => Ok(u),
            None => {
                self.bucket_must_exist(bucket)?;
                Err(Error::NoSuchUpload)
            }
        }
    }
}
