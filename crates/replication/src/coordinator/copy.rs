//! Server-side copies (CopyObject, UploadPartCopy): a cluster read of the source streamed into a
//! cluster write, so that the copy reaches its level like any write.

use super::{hex_to_b64, validate_key};
use crate::ClusterStore;
use ironbucket_store::*;

impl ClusterStore {
    /// CopyObject: a cluster read of the source streamed into a cluster write.
    pub(crate) async fn copy(&self, req: CopyObject) -> Result<ObjectInfo> {
        validate_key(&req.key)?;
        if !self.cp.with_state(|s| s.buckets.contains_key(&req.bucket)) {
            return Err(Error::NoSuchBucket);
        }
        let same = req.src_bucket == req.bucket && req.src_key == req.key && req.src_version_id.is_none();
        if same && req.replace_meta.is_none() && req.replace_tags.is_none() {
            return Err(Error::InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.".into(),
            ));
        }
        let src = self
            .get(GetObject {
                sse_c: req.src_sse_c.clone(),
                bucket: req.src_bucket.clone(),
                key: req.src_key.clone(),
                version_id: req.src_version_id.clone(),
                range: None,
                conditions: req.source_conditions.clone(),
            })
            .await
            .map_err(|e| match e {
                Error::NotModified => Error::PreconditionFailed,
                other => other,
            })?;
        let info = src.info;
        let tags = match req.replace_tags {
            Some(t) => t,
            None if info.tag_count == 0 => Vec::new(),
            None => self
                .meta_read(&req.src_bucket, &req.src_key, Some(&info.version_id))
                .await?
                .tags
                .value
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect(),
        };
        let mut meta = req.replace_meta.unwrap_or_else(|| ObjectMeta {
            content: info.content.clone(),
            user_meta: info.user_meta.clone(),
            tags: Vec::new(),
            acl: None,
        });
        meta.tags = tags;
        meta.acl = req.acl;
        let whole = info.parts_count.is_none();
        let put = PutObject {
            lock: LockRequest::default(),
            sse_c: req.sse_c,
            sse: None,
            bucket: req.bucket,
            key: req.key,
            meta,
            checks: BodyChecks {
                content_length: Some(info.size),
                content_md5: if whole { hex_to_b64(&info.etag) } else { None },
                checksums: if whole {
                    info.checksums.clone()
                } else {
                    Checksums::default()
                },
                compute: info.checksums.algorithms().collect(),
                trailer: None,
            },
            // The destination's conditions: a conditional copy is decided by a round on the
            // destination key like a conditional PUT.
            conditions: req.conditions,
        };
        self.put(put, src.body).await
    }

    /// UploadPartCopy: a cluster read of the source (range) streamed into a replicated part.
    pub(crate) async fn part_copy(&self, req: UploadPartCopy) -> Result<PartInfo> {
        let range = match req.range {
            Some(RangeSpec::FromTo {
                first,
                last: Some(last),
            }) if first <= last => Some(RangeSpec::FromTo {
                first,
                last: Some(last),
            }),
            Some(_) => {
                return Err(Error::InvalidArgument(
                    "the x-amz-copy-source-range value must be of the form bytes=first-last".into(),
                ));
            }
            None => None,
        };
        let src = self
            .get(GetObject {
                sse_c: req.src_sse_c.clone(),
                bucket: req.src_bucket.clone(),
                key: req.src_key.clone(),
                version_id: None,
                range,
                conditions: req.source_conditions.clone(),
            })
            .await
            .map_err(|e| match e {
                Error::NotModified => Error::PreconditionFailed,
                Error::InvalidRange { size } => Error::InvalidArgument(format!(
                    "the x-amz-copy-source-range value must be of the form bytes=first-last where first and last are zero-based offsets within the {size}-byte source object"
                )),
                other => other,
            })?;
        let len = src.range.map(|r| r.end - r.start).unwrap_or(src.info.size);
        let part = UploadPart {
            sse_c: req.sse_c,
            bucket: req.bucket,
            key: req.key,
            upload_id: req.upload_id,
            part_number: req.part_number,
            checks: BodyChecks {
                content_length: Some(len),
                ..Default::default()
            },
        };
        self.part(part, src.body).await
    }
}
