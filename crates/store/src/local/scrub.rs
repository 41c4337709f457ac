//! Scrub: the worker `store.scrub` re-reads every stored body at a low rate (`SCRUB_RATE_MBPS`),
//! once per `SCRUB_INTERVAL_SECS`, checking what the blob format and the record say of it: every
//! chunk's CRC32C (or, encrypted, its GCM tag), the length, and the MD5 of a single-part body
//! against its ETag. A body that fails is *corrupt*. In a cluster the corruption handler (set by
//! the cluster layer) checks that a healthy replica holds the same version; then the corrupt
//! copy is dropped here and anti-entropy copies the version back from that replica. Alone, the
//! node reports it (log, `/workers`, metrics) and keeps the record. Bodies encrypted with a
//! customer key (SSE-C) cannot be read without the key: counted as unverifiable.

use super::LocalStore;
use crate::{Error, Result};
use futures::StreamExt;
use futures::future::BoxFuture;
use ironbucket_runtime::WorkerCtx;
use ironbucket_types::Hlc;
use md5::Digest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Items read from the index per page.
const PAGE: usize = 200;

/// What the scrub found of one version's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// The body is missing or does not match its checks.
    Corrupt(String),
    /// Encrypted with a customer key this node does not hold.
    Unverifiable,
}

/// A stored version whose body the scrub found corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptVersion {
    pub bucket: String,
    pub key: String,
    pub sort_key: String,
    pub version_id: String,
    pub hlc: Hlc,
    pub origin: u64,
}

/// Asked, in a cluster, whether a corrupt local copy of a version may be dropped because a
/// healthy replica holds it (anti-entropy then copies it back).
pub type CorruptionHandler = Arc<dyn Fn(CorruptVersion) -> BoxFuture<'static, bool> + Send + Sync>;

/// The scrub's figures since the node started.
#[derive(Debug, Default)]
pub struct ScrubStats {
    pub checked: AtomicU64,
    pub bytes: AtomicU64,
    pub corrupt: AtomicU64,
    pub repaired: AtomicU64,
    pub unverifiable: AtomicU64,
    /// Full passes completed.
    pub passes: AtomicU64,
}

impl LocalStore {
    /// Reads the whole body of version `version_id` of `bucket/key` and checks it. `Ok(None)`:
    /// nothing to check (a delete marker, or the version is gone).
    pub async fn verify_version(&self, bucket: &str, key: &str, version_id: &str) -> Result<Option<(Verdict, u64)>> {
        let (rec, inline) = match self.version_and_inline(bucket, key, version_id) {
            Ok(v) => v,
            Err(Error::NoSuchVersion | Error::NoSuchBucket | Error::DeleteMarker { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if rec.sse_c.is_some() {
            return Ok(Some((Verdict::Unverifiable, 0)));
        }
        let mut body = self.body_stream(&rec, inline, 0, rec.size, None);
        let mut md5 = md5::Md5::new();
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    read += c.len() as u64;
                    md5.update(&c);
                }
                Err(e) => return Ok(Some((Verdict::Corrupt(e.to_string()), read))),
            }
        }
        if read != rec.size {
            return Ok(Some((
                Verdict::Corrupt(format!("{read} bytes stored, the record says {}", rec.size)),
                read,
            )));
        }
        // A single-part object's ETag is its MD5 (a multipart ETag is not).
        if rec.parts_count.is_none() && !rec.etag.contains('-') && hex::encode(md5.finalize()) != rec.etag {
            return Ok(Some((
                Verdict::Corrupt("the body's MD5 differs from its ETag".into()),
                read,
            )));
        }
        Ok(Some((Verdict::Healthy, read)))
    }

    /// Drops this node's copy of a version whose body is corrupt, if it is still the one with
    /// this stamp (a newer write replaced nothing here): its record and blobs go, without a
    /// tombstone, so that the version is copied back from a replica. Object lock does not hold
    /// a repair back.
    pub async fn drop_corrupt_version(&self, item: &CorruptVersion) -> Result<bool> {
        let (bucket, key, tag) = (item.bucket.clone(), item.key.clone(), item.sort_key.clone());
        let (hlc, origin) = (item.hlc, item.origin);
        self.commit(vec![], move |t| {
            let Some((sk, old)) = t
                .versions_of(&bucket, &key)?
                .into_iter()
                .find(|(sk, r)| *sk == tag && r.hlc == hlc && r.origin == origin)
            else {
                return Ok(false);
            };
            super::versioning::remove_version_in_tx(t, &bucket, &key, &sk, &old)?;
            Ok(true)
        })
        .await
    }

    /// Lets a cluster repair corrupt copies from healthy replicas (set once).
    pub fn set_corruption_handler(&self, h: CorruptionHandler) {
        let _ = self.corruption.set(h);
    }

    /// The scrub's figures since start.
    pub fn scrub_stats(&self) -> &ScrubStats {
        &self.scrub
    }

    /// One full pass over every stored version, at most `rate` bytes per second.
    async fn scrub_pass(&self, ctx: &WorkerCtx) -> Result<()> {
        let began = Instant::now();
        let mut spent = 0u64;
        let mut cursor: Option<(String, String, String)> = None;
        loop {
            let after = cursor.clone();
            let page = self.scan(move |m| m.versions_after(after.as_ref(), PAGE)).await?;
            let Some(last) = page.last() else { break };
            cursor = Some((last.0.clone(), last.1.clone(), last.2.clone()));
            for (bucket, key, sort_key, rec) in page {
                if rec.delete_marker {
                    continue;
                }
                let verdict = self.verify_version(&bucket, &key, &rec.version_id).await?;
                let Some((verdict, read)) = verdict else { continue };
                self.scrub.checked.fetch_add(1, Ordering::Relaxed);
                self.scrub.bytes.fetch_add(read, Ordering::Relaxed);
                match verdict {
                    Verdict::Healthy => {}
                    Verdict::Unverifiable => {
                        self.scrub.unverifiable.fetch_add(1, Ordering::Relaxed);
                    }
                    Verdict::Corrupt(why) => {
                        let v = CorruptVersion {
                            bucket,
                            key,
                            sort_key,
                            version_id: rec.version_id.clone(),
                            hlc: rec.hlc,
                            origin: rec.origin,
                        };
                        self.corrupt_found(v, why, ctx).await
                    }
                }
                // Pace: the bytes read so far may take this long at the rate.
                spent += read;
                let rate = self.cfg.scrub_rate.max(1);
                let due = Duration::from_secs_f64(spent as f64 / rate as f64);
                if due > began.elapsed() {
                    tokio::time::sleep(due - began.elapsed()).await;
                }
            }
            ctx.progress(format!(
                "pass {}: {} versions checked, {} corrupt, {} repaired, {} unverifiable (SSE-C)",
                self.scrub.passes.load(Ordering::Relaxed) + 1,
                self.scrub.checked.load(Ordering::Relaxed),
                self.scrub.corrupt.load(Ordering::Relaxed),
                self.scrub.repaired.load(Ordering::Relaxed),
                self.scrub.unverifiable.load(Ordering::Relaxed)
            ));
        }
        self.scrub.passes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn corrupt_found(&self, item: CorruptVersion, why: String, ctx: &WorkerCtx) {
        self.scrub.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::error!(bucket = %item.bucket, key = %item.key, version = %item.version_id, error = %why, "scrub found a corrupt body");
        ctx.note_error(format!(
            "corrupt body: {}/{} version {}: {why}",
            item.bucket, item.key, item.version_id
        ));
        let Some(handler) = self.corruption.get().cloned() else {
            return;
        };
        if !handler(item.clone()).await {
            tracing::error!(bucket = %item.bucket, key = %item.key, "no healthy replica holds the version: the corrupt copy is kept");
            return;
        }
        match self.drop_corrupt_version(&item).await {
            Ok(true) => {
                self.scrub.repaired.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(bucket = %item.bucket, key = %item.key, "corrupt copy dropped: anti-entropy copies the version back from a healthy replica");
            }
            Ok(false) => {}
            Err(e) => ctx.note_error(format!("cannot drop a corrupt copy: {e}")),
        }
    }
}

/// The worker `store.scrub`: a pass every `SCRUB_INTERVAL_SECS` (the first one interval after
/// start).
pub(super) async fn scrub(store: Weak<LocalStore>, ctx: WorkerCtx) -> std::result::Result<(), String> {
    loop {
        let Some(s) = store.upgrade() else { return Ok(()) };
        let Some(every) = s.cfg.scrub_interval else {
            ctx.progress("off (SCRUB_INTERVAL_SECS=0)");
            return Ok(());
        };
        drop(s);
        ctx.idle();
        ctx.sleep(every).await;
        let Some(s) = store.upgrade() else { return Ok(()) };
        ctx.busy();
        if let Err(e) = s.scrub_pass(&ctx).await {
            ctx.note_error(format!("scrub pass failed: {e}"));
        }
        ctx.unit_done();
    }
}
