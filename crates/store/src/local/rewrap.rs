//! The worker `store.rewrap`: after an encryption key rotation (a new `ENCRYPTION_KEY`, the old
//! one moved to `ENCRYPTION_OLD_KEYS`) it re-wraps the data key of every blob wrapped by an old
//! key with the current one, blob files and inline blobs alike, at the pace its tranquility
//! allows. Only the 128-byte headers change. Its progress shows in `GET /workers` and in
//! `ironbucket_rewrap_total`; once a pass finds nothing left on an old key it says so, and the old
//! keys may be removed from the configuration. Blobs sealed with a customer key (SSE-C) are not
//! wrapped by a node key and are left alone.

use super::LocalStore;
use crate::{Error, Result};
use ironbucket_runtime::WorkerCtx;
use ironbucket_storage::Rewrap;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Inline blobs read from the index per page.
const PAGE: usize = 200;
/// How long to wait before trying again when a pass left blobs on an old key.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// The rewrap worker's figures since the node started.
#[derive(Debug, Default)]
pub struct RewrapStats {
    /// Blobs looked at (files and inline).
    pub checked: AtomicU64,
    /// Blobs whose data key was re-wrapped by the current key.
    pub rewrapped: AtomicU64,
    /// Blobs wrapped by a key that is not configured, or that failed to re-wrap.
    pub failed: AtomicU64,
    /// Full passes completed.
    pub passes: AtomicU64,
    /// The last pass left nothing on an old key.
    pub done: AtomicBool,
}

/// What one pass did.
#[derive(Default)]
struct Pass {
    checked: u64,
    rewrapped: u64,
    failed: u64,
}

impl LocalStore {
    /// The rewrap worker's figures since start.
    pub fn rewrap_stats(&self) -> &RewrapStats {
        &self.rewrap
    }

    fn count(&self, pass: &mut Pass, id: &str, r: Result<Rewrap, ironbucket_storage::Error>, ctx: &WorkerCtx) {
        match r {
            Ok(what) => {
                pass.checked += 1;
                self.rewrap.checked.fetch_add(1, Ordering::Relaxed);
                if what == Rewrap::Rewrapped {
                    pass.rewrapped += 1;
                    self.rewrap.rewrapped.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Deleted meanwhile.
            Err(ironbucket_storage::Error::NotFound(_)) => {}
            Err(e) => {
                pass.failed += 1;
                self.rewrap.failed.fetch_add(1, Ordering::Relaxed);
                ctx.note_error(format!("cannot re-wrap blob {id}: {e}"));
            }
        }
    }

    fn report(&self, pass: &Pass, ctx: &WorkerCtx) {
        ctx.progress(format!(
            "pass {}: {} blobs checked, {} re-wrapped to key {}, {} failed",
            self.rewrap.passes.load(Ordering::Relaxed) + 1,
            pass.checked,
            pass.rewrapped,
            self.key_id.as_deref().unwrap_or("-"),
            pass.failed
        ));
    }

    /// One pass over every blob file and inline blob.
    async fn rewrap_pass(&self, ctx: &WorkerCtx) -> Result<Pass> {
        let mut pass = Pass::default();
        let io = |e: std::io::Error| Error::Internal(format!("cannot list the blob directory: {e}"));
        for shard in self.blobs.blob_shards().map_err(io)? {
            let began = Instant::now();
            for id in self.blobs.blob_ids_in(&shard).map_err(io)? {
                let r = self.blobs.rewrap_file(&id).await;
                self.count(&mut pass, &id, r, ctx);
            }
            self.report(&pass, ctx);
            ctx.throttle(began.elapsed()).await;
        }
        let mut cursor: Option<String> = None;
        loop {
            let began = Instant::now();
            let after = cursor.clone();
            let page = self.scan(move |m| m.inline_after(after.as_deref(), PAGE)).await?;
            let Some((last, _)) = page.last() else { break };
            cursor = Some(last.clone());
            let mut changed = Vec::new();
            for (id, bytes) in page {
                match self.blobs.rewrap_inline(&id, &bytes) {
                    Ok((what, new)) => {
                        self.count(&mut pass, &id, Ok(Rewrap::Current), ctx);
                        if let (Rewrap::Rewrapped, Some(new)) = (what, new) {
                            changed.push((id, bytes, new));
                        }
                    }
                    Err(e) => self.count(&mut pass, &id, Err(e), ctx),
                }
            }
            if !changed.is_empty() {
                let replaced = self
                    .meta
                    .write(move |t| -> Result<u64> {
                        let mut n = 0;
                        for (id, old, new) in &changed {
                            n += u64::from(t.replace_inline(id, old, new)?);
                        }
                        Ok(n)
                    })
                    .await?;
                pass.rewrapped += replaced;
                self.rewrap.rewrapped.fetch_add(replaced, Ordering::Relaxed);
            }
            self.report(&pass, ctx);
            ctx.throttle(began.elapsed()).await;
        }
        Ok(pass)
    }
}

pub(super) async fn rewrap(store: Weak<LocalStore>, ctx: WorkerCtx) -> std::result::Result<(), String> {
    loop {
        let Some(s) = store.upgrade() else { return Ok(()) };
        if !s.rotating {
            ctx.progress("nothing to do: no ENCRYPTION_OLD_KEYS configured");
            return Ok(());
        }
        ctx.busy();
        let r = s.rewrap_pass(&ctx).await;
        s.rewrap.passes.fetch_add(1, Ordering::Relaxed);
        ctx.unit_done();
        match r {
            Ok(p) if p.failed == 0 => {
                s.rewrap.done.store(true, Ordering::Relaxed);
                let key = s.key_id.clone().unwrap_or_default();
                ctx.progress(format!(
                    "done: every blob is wrapped by key {key} ({} checked, {} re-wrapped); the old keys may be removed from ENCRYPTION_OLD_KEYS",
                    p.checked, p.rewrapped
                ));
                tracing::info!(key = %key, checked = p.checked, rewrapped = p.rewrapped, "every blob is wrapped by the current encryption key: the old keys may be removed from ENCRYPTION_OLD_KEYS");
                return Ok(());
            }
            Ok(p) => tracing::warn!(
                failed = p.failed,
                "some blobs could not be re-wrapped (see GET /workers); trying again in 10 minutes"
            ),
            Err(e) => ctx.note_error(format!("rewrap pass failed: {e}")),
        }
        drop(s);
        ctx.idle();
        ctx.sleep(RETRY_AFTER).await;
    }
}
