//! The local store's background workers, each a named worker in the node's registry
//! (`GET /workers`): a panic or an error restarts it with backoff instead of ending it silently.
//! Each holds only a weak reference to the store and finishes when the store is dropped.

use super::LocalStore;
use super::bucket::month_of;
use crate::{Error, Result};
use ironbucket_runtime::{OnFailure, Registry, WorkerCtx};
use ironbucket_types::now_millis;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

impl LocalStore {
    pub(super) fn start_workers(self: &Arc<Self>, reg: &Registry) {
        let w = Arc::downgrade(self);
        let g = reg.spawn("store.garbage", OnFailure::Restart, move |ctx| garbage(w.clone(), ctx));
        let _ = self.garbage.set(g);
        let w = Arc::downgrade(self);
        reg.spawn("store.multipart-expiry", OnFailure::Restart, move |ctx| {
            multipart(w.clone(), ctx)
        });
        let w = Arc::downgrade(self);
        reg.spawn("store.tombstones", OnFailure::Restart, move |ctx| {
            tombstones(w.clone(), ctx)
        });
        if self.cfg.local_lifecycle {
            let w = Arc::downgrade(self);
            reg.spawn("store.lifecycle", OnFailure::Restart, move |ctx| {
                lifecycle(w.clone(), ctx)
            });
        }
        let w = Arc::downgrade(self);
        reg.spawn("store.scrub", OnFailure::Restart, move |ctx| {
            super::scrub::scrub(w.clone(), ctx)
        });
        let w = Arc::downgrade(self);
        reg.spawn("store.rewrap", OnFailure::Restart, move |ctx| {
            super::rewrap::rewrap(w.clone(), ctx)
        });
        let w = Arc::downgrade(self);
        reg.spawn("store.request-counts", OnFailure::Restart, move |ctx| {
            request_counts(w.clone(), ctx)
        });
        reg.probe("meta.commit", self.meta.failure_probe());
    }

    /// Wakes the garbage worker (blobs were put on the garbage list).
    pub(super) fn wake_garbage(&self) {
        if let Some(g) = self.garbage.get() {
            g.wake();
        }
    }
}

/// Deletes blobs on the garbage list, then removes them from the list in one commit. Runs at
/// once on start (what a previous run left), then when woken or once per worker interval.
async fn garbage(store: Weak<LocalStore>, ctx: WorkerCtx) -> Result<(), String> {
    loop {
        let Some(s) = store.upgrade() else { return Ok(()) };
        ctx.busy();
        let began = Instant::now();
        let mut removed = 0usize;
        loop {
            let ids = match s.scan(|m| m.garbage(1000)).await {
                Ok(ids) => ids,
                Err(e) => {
                    ctx.note_error(format!("cannot read the garbage list: {e}"));
                    break;
                }
            };
            if ids.is_empty() {
                break;
            }
            let mut done = Vec::with_capacity(ids.len());
            for id in ids {
                match s.blobs.delete(&id).await {
                    Ok(()) => done.push(id),
                    Err(e) => ctx.note_error(format!("cannot delete blob {id}: {e}")),
                }
            }
            let n = done.len();
            if n == 0 {
                break;
            }
            let r = s
                .meta
                .write(move |t| -> Result<()> {
                    for id in &done {
                        t.remove_garbage(id)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = r {
                ctx.note_error(format!("cannot clear the garbage list: {e}"));
                break;
            }
            removed += n;
            tracing::debug!(blobs = n, "garbage collected");
        }
        if removed > 0 {
            ctx.progress(format!("{removed} blobs removed in the last pass"));
        }
        ctx.unit_done();
        let interval = s.cfg.worker_interval;
        drop(s);
        if !ctx.throttle(began.elapsed()).await {
            ctx.sleep(interval).await;
        }
    }
}

/// Aborts multipart uploads older than the configured age.
async fn multipart(store: Weak<LocalStore>, ctx: WorkerCtx) -> Result<(), String> {
    loop {
        let Some(s) = store.upgrade() else { return Ok(()) };
        ctx.busy();
        let interval = s.cfg.worker_interval;
        let cutoff = now_millis().saturating_sub(s.cfg.multipart_max_age.as_millis() as u64);
        match s.scan(move |m| m.uploads_older_than(cutoff, 1000)).await {
            Ok(list) => {
                for (bucket, u) in list {
                    match s.abort_upload(bucket.clone(), u.key.clone(), u.upload_id.clone()).await {
                        Ok(()) | Err(Error::NoSuchUpload) => {
                            tracing::info!(bucket = %bucket, key = %u.key, upload_id = %u.upload_id, "aborted abandoned multipart upload")
                        }
                        Err(e) => ctx.note_error(format!("cannot abort abandoned upload: {e}")),
                    }
                }
            }
            Err(e) => ctx.note_error(format!("cannot list multipart uploads: {e}")),
        }
        ctx.unit_done();
        drop(s);
        ctx.sleep(interval).await;
    }
}

/// Removes tombstones older than the grace period, once per worker interval (the first pass
/// one interval after start).
async fn tombstones(store: Weak<LocalStore>, ctx: WorkerCtx) -> Result<(), String> {
    loop {
        let Some(s) = store.upgrade() else { return Ok(()) };
        let interval = s.cfg.worker_interval;
        drop(s);
        ctx.sleep(interval).await;
        let Some(s) = store.upgrade() else { return Ok(()) };
        ctx.busy();
        match s.collect_tombstones().await {
            Ok(0) => {}
            Ok(n) => {
                ctx.progress(format!("{n} tombstones removed in the last pass"));
                tracing::info!(tombstones = n, "tombstones past their grace period removed")
            }
            Err(e) => ctx.note_error(format!("cannot remove old tombstones: {e}")),
        }
        ctx.unit_done();
    }
}

/// Adds the in-memory request counts to the stored monthly counters every couple of seconds.
async fn request_counts(store: Weak<LocalStore>, ctx: WorkerCtx) -> Result<(), String> {
    loop {
        ctx.sleep(Duration::from_secs(2)).await;
        let Some(s) = store.upgrade() else { return Ok(()) };
        let pending: Vec<(String, u64)> = match s.requests.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => continue,
        };
        // Only buckets that exist are counted: a refused request may name any bucket (an
        // anonymous CreateBucket of a random name), and must leave no stored counter behind.
        let pending: Vec<(String, u64)> = pending
            .into_iter()
            .filter(|(b, _)| matches!(s.meta.get_bucket(b), Ok(Some(_))))
            .collect();
        if pending.is_empty() {
            continue;
        }
        ctx.busy();
        let month = month_of(now_millis());
        let counts: Vec<(String, u64)> = pending
            .into_iter()
            .map(|(b, n)| (format!("r/{b}/{month}"), n))
            .collect();
        if let Err(e) = s
            .meta
            .write(move |t| -> Result<()> { Ok(t.add_counters(&counts)?) })
            .await
        {
            ctx.note_error(format!("cannot store request counts: {e}"));
        }
        ctx.unit_done();
    }
}

/// Applies every bucket's lifecycle rules: expires current versions, removes noncurrent
/// versions and lone delete markers, aborts old multipart uploads. A full scan of each bucket
/// with rules per run; locked versions are skipped.
async fn lifecycle(store: Weak<LocalStore>, ctx: WorkerCtx) -> Result<(), String> {
    loop {
        let Some(s) = store.upgrade() else { return Ok(()) };
        ctx.busy();
        let interval = s.cfg.lifecycle_interval;
        if let Err(e) = s.apply_lifecycle().await {
            ctx.note_error(format!("lifecycle run failed: {e}"));
        }
        ctx.unit_done();
        drop(s);
        ctx.sleep(interval).await;
    }
}
