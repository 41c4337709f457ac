//! The S3 operations that take a conditional-write round (ADR 0015): PutObject and CopyObject
//! with If-None-Match / If-Match, DeleteObject with If-Match (CompleteMultipartUpload's is in
//! [`multipart`](super::multipart)); their bodies are held for the round here.

use super::cas::{Body, Current, Spool};
use crate::ClusterStore;
use crate::cas::{CasRead, Committed, Staged};
use crate::wire::{Checks, PutHeader};
use crate::wire::{MetaAt, MetaOp};
use futures::StreamExt;
use ironbucket_store::*;
use ironbucket_types::now_millis;
use ironbucket_types::{ChecksumSet, Hlc};
use tokio::io::AsyncWriteExt;

/// Bodies up to this size are held in memory for a round; larger ones are spooled to disk.
const HOLD_BYTES: usize = 16 << 20;

impl ClusterStore {
    /// Reads a conditional write's body whole (verifying a trailer's checksums): held in memory,
    /// or spooled to this node's disk beyond [`HOLD_BYTES`].
    pub(crate) async fn hold_body(&self, mut body: ByteStream, trailer: Option<crate::wire::Trailer>) -> Result<Body> {
        let mut hasher = trailer.as_ref().map(|(algs, _)| ChecksumSet::new(algs.iter().copied()));
        let mut chunks = Vec::new();
        let mut held = 0usize;
        let mut spool: Option<(tokio::fs::File, Spool)> = None;
        let io = |e: std::io::Error| Error::Internal(format!("cannot spool a conditional write's body: {e}"));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::from_body)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            if let Some((f, _)) = spool.as_mut() {
                f.write_all(&chunk).await.map_err(io)?;
                continue;
            }
            held += chunk.len();
            chunks.push(chunk);
            if held > HOLD_BYTES {
                let dir = self.local.config().data_dir.join("cas").join("spool");
                tokio::fs::create_dir_all(&dir).await.map_err(io)?;
                let path = dir.join(uuid::Uuid::new_v4().simple().to_string());
                let mut f = tokio::fs::File::create(&path).await.map_err(io)?;
                let s = Spool(path);
                for c in chunks.drain(..) {
                    f.write_all(&c).await.map_err(io)?;
                }
                spool = Some((f, s));
            }
        }
        if let (Some((_, trailer)), Some(h)) = (trailer, hasher) {
            verify_checksums(&h.finish(), &trailer())?;
        }
        Ok(match spool {
            Some((mut f, s)) => {
                f.flush().await.map_err(io)?;
                Body::Spooled(s)
            }
            None => Body::Held(chunks),
        })
    }

    /// PutObject (and CopyObject) with If-None-Match / If-Match: a round on the key.
    pub(crate) async fn cas_put(&self, mut req: PutObject, body: ByteStream) -> Result<ObjectInfo> {
        let (checks, trailer) = Checks::split(&mut req.checks);
        let body = self.hold_body(body, trailer).await?;
        let conditions = std::mem::take(&mut req.conditions);
        let (bucket, key) = (req.bucket.clone(), req.key.clone());
        let sse_c = req.sse_c.clone();
        let mut decide = move |cur: &Current, hlc: Hlc, origin: u64| -> Result<Staged> {
            conditions.check_write(cur.etag()?.as_deref())?;
            Ok(Staged::Put(Box::new(PutHeader::new(&req, checks.clone(), hlc, origin))))
        };
        match self.cas_round(&bucket, &key, CasRead::Head, body, &mut decide).await? {
            Committed::Object(info) => Ok(*info),
            // Applied before (another round finished it): read it back.
            _ => {
                self.head(GetObject {
                    sse_c,
                    bucket,
                    key,
                    version_id: None,
                    range: None,
                    conditions: Conditions::default(),
                })
                .await
            }
        }
    }

    /// DeleteObject with If-Match: a round on the key (a delete marker, a tombstone, or the
    /// version named, after object lock allows it).
    pub(crate) async fn cas_delete(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        bypass: bool,
        if_match: &[String],
    ) -> Result<DeleteResult> {
        super::validate_key(key)?;
        if let Some(v) = version_id {
            self.check_unlocked(bucket, key, v, bypass).await?;
        }
        let if_match = if_match.to_vec();
        let (b, k, v) = (bucket.to_string(), key.to_string(), version_id.map(str::to_string));
        let mut decide = move |cur: &Current, hlc: Hlc, origin: u64| -> Result<Staged> {
            check_delete_if_match(&if_match, cur.etag()?.as_deref())?;
            Ok(Staged::Delete(crate::wire::DeleteAt {
                bucket: b.clone(),
                key: k.clone(),
                version_id: v.clone(),
                bypass,
                hlc,
                origin,
            }))
        };
        match self
            .cas_round(bucket, key, CasRead::Head, Body::Empty, &mut decide)
            .await?
        {
            Committed::Deleted(r) => Ok(r),
            _ => Ok(DeleteResult {
                key: key.to_string(),
                version_id: version_id.map(str::to_string),
                delete_marker: false,
            }),
        }
    }

    /// A retention or legal-hold change: a round on the key decides it against the version's
    /// metadata as the promisers hold it, so it is ordered with every delete of the version
    /// (which takes a round too, [`ClusterStore::cas_delete_version`]).
    pub(crate) async fn cas_lock_change(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        change: MetaChange,
    ) -> Result<()> {
        if let MetaChange::Retention { retention, bypass } = &change {
            // An unknown mode is refused before anything is looked up.
            check_retention_change(None, retention.as_ref(), *bypass, 0)?;
        }
        if let Err(Error::ObjectLockNotEnabled) = self.local.get_object_lock_configuration(bucket).await {
            return Err(Error::InvalidRequest(
                "Bucket is missing Object Lock Configuration".into(),
            ));
        }
        // Finds the version (the current one without an id) and copies it to replicas lacking it.
        let (vid, _) = self.meta_target(bucket, key, version_id, true).await?;
        let (b, k, v) = (bucket.to_string(), key.to_string(), vid.clone());
        let mut decide = move |cur: &Current, hlc: Hlc, origin: u64| -> Result<Staged> {
            match &cur.head.version {
                Some(found) if found.version_id == v && !found.purged && !found.delete_marker => {}
                Some(found) if found.delete_marker => {
                    return Err(Error::DeleteMarker {
                        version_id: found.version_id.clone(),
                    });
                }
                _ => return Err(Error::NoSuchVersion),
            }
            if let Some(m) = &cur.meta {
                m.check(&change, now_millis())?;
            }
            Ok(Staged::Meta(MetaAt {
                bucket: b.clone(),
                key: k.clone(),
                op: MetaOp::Change {
                    version_id: v.clone(),
                    change: change.clone(),
                    at: (hlc, origin),
                },
            }))
        };
        self.cas_round(bucket, key, CasRead::Version(vid), Body::Empty, &mut decide)
            .await
            .map(|_| ())
    }

    /// Deleting a version by id in a bucket with object lock: a round on the key decides it
    /// against the version's metadata as the promisers hold it (a legal hold or retention set
    /// by a concurrent round is seen, or comes after the delete and finds no version).
    pub(crate) async fn cas_delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        bypass: bool,
    ) -> Result<DeleteResult> {
        super::validate_key(key)?;
        let (b, k, v) = (bucket.to_string(), key.to_string(), version_id.to_string());
        let mut decide = move |cur: &Current, hlc: Hlc, origin: u64| -> Result<Staged> {
            if let Some(m) = &cur.meta
                && m.locked(now_millis(), bypass)
            {
                return Err(Error::AccessDenied(
                    "Access Denied because object protected by object lock.".into(),
                ));
            }
            Ok(Staged::Delete(crate::wire::DeleteAt {
                bucket: b.clone(),
                key: k.clone(),
                version_id: Some(v.clone()),
                bypass,
                hlc,
                origin,
            }))
        };
        match self
            .cas_round(
                bucket,
                key,
                CasRead::Version(version_id.to_string()),
                Body::Empty,
                &mut decide,
            )
            .await?
        {
            Committed::Deleted(r) => Ok(r),
            _ => Ok(DeleteResult {
                key: key.to_string(),
                version_id: Some(version_id.to_string()),
                delete_marker: false,
            }),
        }
    }
}
