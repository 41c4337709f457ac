//! Multipart uploads across nodes: the upload is opened on every replica of the key under one id,
//! each part is streamed to the replica set like a body, and each replica assembles the object
//! from the parts it holds under one stamp.

use super::validate_key;
use crate::ClusterStore;
use crate::wire::{Checks, Complete, CreateUpload, PartHeader};
use ironbucket_store::*;
use std::sync::Arc;

impl ClusterStore {
    /// Opens the upload on every replica of the key under one id.
    pub(crate) async fn create_upload(&self, req: CreateMultipart) -> Result<String> {
        validate_key(&req.key)?;
        validate_tags(&req.meta.tags, 10)?;
        let targets = self.targets(&req.bucket, &req.key)?;
        let op = CreateUpload {
            bucket: req.bucket,
            key: req.key,
            meta: req.meta,
            checksum_algorithm: req.checksum_algorithm,
            sse_c: req.sse_c.as_ref().map(|k| *k.as_bytes()),
            upload_id: new_upload_id(),
        };
        self.write_all(&targets, self.level(true), op, None).await
    }

    pub(crate) async fn part(&self, mut req: UploadPart, body: ByteStream) -> Result<PartInfo> {
        let targets = self.targets(&req.bucket, &req.key)?;
        let level = self.level(true);
        let (checks, trailer) = Checks::split(&mut req.checks);
        let header = Arc::new(PartHeader::new(&req, checks));
        let me = self.strong()?;
        self.replicate_body(
            &targets,
            level,
            body,
            trailer,
            move |t, data| me.clone().push(t, header.clone(), data),
            None,
        )
        .await
    }

    /// Each replica assembles the object from the parts it holds, under one stamp. With
    /// If-None-Match / If-Match, a round on the key decides (ADR 0015).
    pub(crate) async fn complete(&self, mut req: CompleteMultipart) -> Result<ObjectInfo> {
        if !req.conditions.is_empty() {
            let conditions = std::mem::take(&mut req.conditions);
            let (bucket, key) = (req.bucket.clone(), req.key.clone());
            let mut decide = move |cur: &super::cas::Current, hlc, origin| -> Result<crate::cas::Staged> {
                conditions.check_write(cur.etag()?.as_deref())?;
                Ok(crate::cas::Staged::Complete(Complete {
                    req: req.clone(),
                    hlc,
                    origin,
                }))
            };
            return match self
                .cas_round(
                    &bucket,
                    &key,
                    crate::cas::CasRead::Head,
                    super::cas::Body::Empty,
                    &mut decide,
                )
                .await?
            {
                crate::cas::Committed::Object(info) => Ok(*info),
                _ => {
                    self.head(GetObject {
                        bucket,
                        key,
                        ..Default::default()
                    })
                    .await
                }
            };
        }
        let targets = self.targets(&req.bucket, &req.key)?;
        let (hlc, origin) = self.stamp().await?;
        let hint = self.hint_for_new_version(&req.bucket, &req.key, hlc, origin);
        let op = Complete { req, hlc, origin };
        self.write_all(&targets, self.level(true), op, Some(hint)).await
    }
}

fn new_upload_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
