//! Hinted handoff: when a replica cannot take a write (it is known down, unreachable, or timed
//! out) the coordinator keeps a durable hint in its own metadata (bounded per replica) and, once
//! the replica is back, brings it up to date: the newest version of the object is found (a read
//! at ALL, or at QUORUM while a replica is down, never older than the hinted write), the hinted
//! replica is asked what it holds and, where it lags, gets the version copied from a holder with
//! the metadata the holders agree on, as read repair does, with the write's own stamp. Replays
//! go oldest stamp first, are idempotent (a replica that already holds the version, or a newer
//! one, is left alone; replicas resolve by stamp, so order is not needed for correctness) and
//! throttled by the worker's tranquility. A hint that cannot be replayed yet is skipped, not
//! waited on; one the replica refuses is dropped; one older than its maximum age is dropped
//! (anti-entropy's job then).

use super::read::wire_for;
use super::{Target, replica_failure, stamp_of};
use crate::ClusterStore;
use crate::quorum::Consistency;
use crate::wire::{MetaAt, MetaOp, MetaWrite};
use ironbucket_runtime::WorkerCtx;
use ironbucket_store::{Error, Hint, HintRecord, Result};
use ironbucket_types::Hlc;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Hints replayed per replica per round.
const BATCH: usize = 64;
/// How often the worker looks for replicas it holds hints for.
const ROUND: Duration = Duration::from_secs(1);

/// Bounds of the hints a node keeps (`HINT_MAX_PER_NODE`, `HINT_MAX_AGE_SECS`) and of its
/// replica requests in flight (`MAX_REPLICATION_BACKLOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffConfig {
    /// Hints kept per replica; further writes it misses are left to anti-entropy.
    pub max_per_node: u64,
    /// A hint older than this is dropped instead of replayed.
    pub max_age: Duration,
    /// Replica requests this node may have in flight before a write whose level is met waits
    /// for its other replicas too (`MAX_REPLICATION_BACKLOG`; see `backlog.rs`).
    pub max_backlog: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            max_per_node: 100_000,
            max_age: Duration::from_secs(3 * 3600),
            max_backlog: 10_000,
        }
    }
}

/// What the hints of this node amount to (`/cluster/metrics/replication`, `/metrics`).
#[derive(Debug, Default)]
pub struct HandoffStats {
    /// Hints pending per replica, as of the worker's last round.
    pub pending: std::sync::Mutex<Vec<(String, u64)>>,
    pub kept: AtomicU64,
    pub replayed: AtomicU64,
    /// Dropped for their age.
    pub dropped: AtomicU64,
    /// Not kept: the replica already had the maximum.
    pub refused: AtomicU64,
}

/// The write a hint is about.
#[derive(Debug, Clone)]
pub(crate) struct HintOf {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub hlc: Hlc,
    pub origin: u64,
}

impl ClusterStore {
    /// The hint for a new version of `bucket/key` stamped (`hlc`, `origin`): in a bucket with
    /// versioning enabled it names the version (its id follows from the stamp), so that an
    /// older version written while a replica was away reaches it too.
    pub(crate) fn hint_for_new_version(&self, bucket: &str, key: &str, hlc: Hlc, origin: u64) -> HintOf {
        let versioned = self.cp.with_state(|s| {
            s.buckets
                .get(bucket)
                .is_some_and(|b| b.versioning.as_deref() == Some("Enabled"))
        });
        HintOf {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: versioned.then(|| ironbucket_meta::stamped_version_id(hlc, origin)),
            hlc,
            origin,
        }
    }

    /// Keeps a hint that `node` missed the write `h` (logged, never failing the write).
    pub(crate) async fn keep_hint(&self, node: &str, h: &HintOf) {
        let hint = Hint {
            node: node.to_string(),
            hlc: h.hlc,
            origin: h.origin,
            record: HintRecord {
                bucket: h.bucket.clone(),
                key: h.key.clone(),
                version_id: h.version_id.clone(),
                created: ironbucket_types::now_millis(),
            },
        };
        let stats = &self.handoff;
        match self.local.keep_hint(hint, self.handoff_config().max_per_node).await {
            Ok(true) => {
                stats.kept.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node, bucket = %h.bucket, key = %h.key, "kept a hint for a replica that missed a write");
            }
            Ok(false) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    node,
                    "hints for the replica are full: a missed write is left to anti-entropy"
                );
            }
            Err(e) => tracing::warn!(node, error = %e, "could not keep a hint for a replica that missed a write"),
        }
    }

    /// The bounds in force (`HINT_MAX_PER_NODE`, `HINT_MAX_AGE_SECS`, `MAX_REPLICATION_BACKLOG`).
    pub fn handoff_config(&self) -> HandoffConfig {
        self.handoff_cfg.get().copied().unwrap_or_default()
    }

    /// Brings `h.node` up to date with the write `h` names. `Ok(true)`: nothing left to do
    /// (copied, already there, or nothing to copy any more); `Ok(false)`: try again later.
    /// The newest version is found by a read at QUORUM (another replica being down does not
    /// hold the replay up); the hinted replica is asked directly what it holds.
    pub(crate) async fn replay_hint(&self, h: &Hint) -> Result<bool> {
        let r = &h.record;
        let g = wire_for(&r.bucket, &r.key, r.version_id.as_deref());
        let target = match self.targets(&r.bucket, &r.key) {
            Ok(ts) => ts.into_all().into_iter().find(|t| t.name == h.node),
            Err(Error::NoSuchBucket) => return Ok(true),
            Err(e) => return Err(e),
        };
        // No longer a replica of the key (the layout changed): not its to hold.
        let Some(target) = target else { return Ok(true) };
        // Every live replica's answer when all are up; a quorum's while one is down.
        // `complete`: every replica answered, so what none holds was never written.
        let (found, complete) = match self.read_versions(&g, Consistency::All).await {
            Ok(f) => (f, true),
            Err(Error::NoSuchBucket) => return Ok(true),
            Err(Error::Unavailable(_)) => match self.read_versions(&g, Consistency::Quorum).await {
                Ok(f) => (f, false),
                Err(Error::NoSuchBucket) => return Ok(true),
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        // Nobody holds the version (deleted since, or the write never landed), or only older
        // ones than the hinted write: done when every replica said so, else the one that took it
        // did not answer and the hint is tried again later.
        let hinted = crate::quorum::Stamp {
            hlc: h.hlc,
            node: h.origin,
        };
        let Some(v) = found.reply.version.clone() else {
            return Ok(complete);
        };
        if r.version_id.is_none() && stamp_of(&v) < hinted {
            return Ok(complete);
        }
        let theirs = self.ask(&target, &g).await?.version;
        let holders: Vec<Target> = found
            .holders
            .iter()
            .filter(|t| t.name != target.name)
            .cloned()
            .collect();
        let Some(source) = holders.first().cloned() else {
            return Ok(theirs.is_some());
        };
        match theirs.as_ref().map(stamp_of).cmp(&Some(stamp_of(&v))) {
            std::cmp::Ordering::Less => {
                let size = found.reply.result.as_ref().map(|i| i.size).unwrap_or(0);
                let failed = self.repair_all(&g, &v, size, &source, &holders, vec![target]).await;
                Ok(failed.is_empty())
            }
            // It holds the version; its metadata may still lag (a tag, retention or legal hold
            // change it missed): it gets the holders' merge.
            std::cmp::Ordering::Equal if !v.delete_marker && !v.purged => {
                let meta = match self.merged_meta(&r.bucket, &r.key, &v.version_id, &holders).await {
                    Ok(m) => m,
                    // Replaced since it was read (in a bucket without versioning an overwrite or
                    // a delete takes the same version id "null"): the newer write reaches the
                    // replica on its own (or by its own hint); nothing of this one is left to do.
                    Err(Error::DeleteMarker { .. } | Error::NoSuchVersion | Error::NoSuchKey) => return Ok(true),
                    Err(e) => return Err(e),
                };
                let merge = MetaWrite(MetaAt {
                    bucket: r.bucket.clone(),
                    key: r.key.clone(),
                    op: MetaOp::Merge {
                        version_id: v.version_id.clone(),
                        meta,
                    },
                });
                self.ask(&target, &merge).await?;
                Ok(true)
            }
            // The same tombstone, or a newer version than the holders answered.
            _ => Ok(true),
        }
    }

    /// The worker `cluster.handoff`: replays the hints of every replica that is up, in stamp
    /// order, and drops those past their age.
    pub(crate) async fn handoff_loop(me: Weak<Self>, ctx: WorkerCtx) -> std::result::Result<(), String> {
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            ctx.busy();
            let counts = s.local.hint_counts().await.map_err(|e| e.to_string())?;
            *s.handoff.pending.lock().unwrap_or_else(|p| p.into_inner()) = counts.clone();
            for (node, _) in counts {
                if s.node_down(&node) {
                    // Nothing to replay to it, but hints past their age go all the same.
                    s.drop_old_hints(&node, &ctx).await;
                    continue;
                }
                s.replay_batch(&node, &ctx).await;
            }
            let pending: u64 = s
                .local
                .hint_counts()
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .map(|(_, n)| n)
                .sum();
            ctx.progress(format!(
                "{pending} hints pending, {} replayed, {} dropped",
                s.handoff.replayed.load(Ordering::Relaxed),
                s.handoff.dropped.load(Ordering::Relaxed)
            ));
            ctx.unit_done();
            drop(s);
            ctx.sleep(ROUND).await;
        }
    }

    /// Replays up to [`BATCH`] of `node`'s hints; stops at the first that cannot be replayed
    /// yet (the replica is still not ready), so the order of its writes is kept.
    async fn replay_batch(&self, node: &str, ctx: &WorkerCtx) {
        let hints = match self.local.hints_for(node, BATCH).await {
            Ok(h) => h,
            Err(e) => {
                ctx.note_error(format!("cannot read the hints for {node}: {e}"));
                return;
            }
        };
        let max_age = self.handoff_config().max_age.as_millis() as u64;
        for h in hints {
            let began = Instant::now();
            let old = ironbucket_types::now_millis().saturating_sub(h.record.created) > max_age;
            let done = if old {
                self.handoff.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node, bucket = %h.record.bucket, key = %h.record.key, "dropped a hint past its age: the write is left to anti-entropy");
                true
            } else {
                match self.replay_hint(&h).await {
                    Ok(true) => {
                        self.handoff.replayed.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    // Not yet (the write's holder did not answer, or a copy failed): the next
                    // hints go on, this one is tried again next round.
                    Ok(false) => false,
                    // The replica (or another) cannot be reached: the rest waits too.
                    Err(e) if replica_failure(&e) => {
                        ctx.note_error(format!("replaying hints for {node}: {e}"));
                        return;
                    }
                    // Refused for good (an SSE-C body without its key, an object lock): dropped.
                    Err(e) => {
                        self.handoff.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(node, bucket = %h.record.bucket, key = %h.record.key, error = %e, "dropped a hint that cannot be replayed: the write is left to anti-entropy");
                        true
                    }
                }
            };
            if !done {
                continue;
            }
            if let Err(e) = self.local.forget_hint(node, h.hlc, h.origin).await {
                ctx.note_error(format!("cannot forget a replayed hint: {e}"));
                return;
            }
            ctx.throttle(began.elapsed()).await;
        }
    }

    /// Drops `node`'s oldest hints that are past their age.
    async fn drop_old_hints(&self, node: &str, ctx: &WorkerCtx) {
        let max_age = self.handoff_config().max_age.as_millis() as u64;
        let Ok(hints) = self.local.hints_for(node, BATCH).await else {
            return;
        };
        let now = ironbucket_types::now_millis();
        for h in hints.iter().filter(|h| now.saturating_sub(h.record.created) > max_age) {
            if let Err(e) = self.local.forget_hint(node, h.hlc, h.origin).await {
                ctx.note_error(format!("cannot drop an old hint: {e}"));
                return;
            }
            self.handoff.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the failure detector reports `node` down.
    fn node_down(&self, node: &str) -> bool {
        self.down.get().is_some_and(|f| f(node))
    }
}
