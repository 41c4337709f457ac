//! Read repair: replicas a read found stale are brought up to the winning version in the
//! background, with the same stamp, as a deletion, a delete marker, or the body copied from a
//! holder with the metadata the holders agree on once merged.

use super::{Target, hex_to_b64};
use crate::ClusterStore;
use crate::wire::{Checks, DeleteAt, GetWire, HeadReply, PutHeader};
use bytes::Bytes;
use futures::StreamExt;
use ironbucket_rpc::DataStream;
use ironbucket_store::*;
use std::sync::Arc;

impl ClusterStore {
    /// Brings replicas that answered with an older version (or none) up to `reply`'s, in the
    /// background. Bodies of SSE-C objects need the customer key, which only a request carries.
    pub(super) fn repair(&self, g: &GetWire, reply: &HeadReply, holders: &[Target], stale: Vec<Target>) {
        let (Some(v), Some(source)) = (reply.version.clone(), holders.first().cloned()) else {
            return;
        };
        let size = reply.result.as_ref().map(|i| i.size).unwrap_or(0);
        if stale.is_empty() {
            return;
        }
        let Ok(me) = self.strong() else {
            return;
        };
        let (g, holders) = (g.clone(), holders.to_vec());
        tokio::spawn(async move {
            me.repair_all(&g, &v, size, &source, &holders, stale).await;
        });
    }

    /// Brings each of `stale` up to version `v`, copied from `source` with the metadata the
    /// holders agree on once merged. Returns how many could not be brought up.
    pub(super) async fn repair_all(
        &self,
        g: &GetWire,
        v: &VersionStamp,
        size: u64,
        source: &Target,
        holders: &[Target],
        stale: Vec<Target>,
    ) -> Vec<String> {
        let meta = if v.delete_marker {
            None
        } else {
            match self.merged_meta(&g.bucket, &g.key, &v.version_id, holders).await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(bucket = %g.bucket, key = %g.key, error = %e, "read repair skipped: no holder sent the version's metadata");
                    return stale.into_iter().map(|t| t.name).collect();
                }
            }
        };
        let mut failed = Vec::new();
        for t in stale {
            let r = self.repair_one(g, v, meta.as_ref(), size, source, &t).await;
            match r {
                Ok(()) => {
                    self.repairs.count(&self.repairs.objects);
                    tracing::info!(bucket = %g.bucket, key = %g.key, node = %t.name, "read repair")
                }
                Err(e) => {
                    self.repairs.count(&self.repairs.failed);
                    tracing::warn!(bucket = %g.bucket, key = %g.key, node = %t.name, error = %e, "read repair failed");
                    failed.push(t.name);
                }
            }
        }
        failed
    }

    pub(crate) async fn repair_one(
        &self,
        g: &GetWire,
        v: &VersionStamp,
        meta: Option<&VersionMeta>,
        size: u64,
        source: &Target,
        to: &Target,
    ) -> Result<()> {
        if v.purged {
            // The version was deleted by id: delete it there too (with the same stamp). Object
            // lock still applies there: a version that replica keeps locked is not deleted by a
            // repair (the repair fails and is logged).
            let op = DeleteAt {
                bucket: g.bucket.clone(),
                key: g.key.clone(),
                version_id: Some(v.version_id.clone()),
                bypass: false,
                hlc: v.hlc,
                origin: v.origin,
            };
            return self.ask(to, &op).await.map(|_| ());
        }
        if v.delete_marker {
            let op = DeleteAt {
                bucket: g.bucket.clone(),
                key: g.key.clone(),
                version_id: None,
                bypass: false,
                hlc: v.hlc,
                origin: v.origin,
            };
            return self.ask(to, &op).await.map(|_| ());
        }
        let want = GetWire {
            version_id: Some(v.version_id.clone()),
            range: None,
            conditions: Conditions::default(),
            ..g.clone()
        };
        let src = self.fetch(source, want, size).await?;
        if src.info.hlc != v.hlc || src.info.origin != v.origin {
            return Err(Error::Internal("the source moved on; repair skipped".into()));
        }
        let meta = meta.ok_or_else(|| Error::Internal("no metadata to repair with".into()))?;
        let info = src.info;
        // A whole object's MD5 and checksums are verified again on the way in; a multipart
        // object keeps the ETag and composite checksums it was stored with.
        let multipart = info.parts_count.is_some();
        let checks = Checks {
            content_length: Some(info.size),
            content_md5: if multipart { None } else { hex_to_b64(&info.etag) },
            checksums: if multipart {
                Checksums::default()
            } else {
                info.checksums.clone()
            },
            compute: if multipart {
                Vec::new()
            } else {
                info.checksums.algorithms().collect()
            },
        };
        let header = PutHeader {
            bucket: g.bucket.clone(),
            key: g.key.clone(),
            meta: ObjectMeta {
                content: info.content.clone(),
                user_meta: info.user_meta.clone(),
                tags: meta
                    .tags
                    .value
                    .iter()
                    .map(|(key, value)| Tag {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                acl: meta.acl.value.clone(),
            },
            lock: LockRequest {
                retention: meta.retention.value.clone(),
                legal_hold: Some(meta.legal_hold.value),
            },
            sse: None,
            sse_c: g.sse_c,
            checks,
            conditions: Conditions::default(),
            hlc: v.hlc,
            origin: v.origin,
            repair: Some(Repair {
                stored_as: multipart.then(|| StoredAs {
                    etag: info.etag.clone(),
                    parts_count: info.parts_count,
                    checksums: info.checksums.clone(),
                }),
                meta_stamps: meta.stamps(),
            }),
        };
        let body: DataStream = Box::pin(
            src.body
                .map(|r| r.map_err(|e| e.to_string()))
                .chain(futures::stream::once(async { Ok(Bytes::new()) })),
        );
        self.push_inner(to.clone(), Arc::new(header), body).await.map(|_| ())
    }
}
