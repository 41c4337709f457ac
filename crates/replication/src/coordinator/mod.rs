//! The coordinator of the replicated data path: whichever node receives an S3 request finds the
//! key's replicas on the placement ring, sends the request to all of them that are not known
//! down, and answers once its consistency level is met ([`crate::quorum`] decides).
//!
//! - Writes are stamped here (HLC time + this node's id) and streamed to the whole replica set at
//!   once through bounded channels: the body is never held whole, and the slowest live replica
//!   paces the client. A replica that fails drops out; when too few remain, or the level is not
//!   met within `REQUEST_TIMEOUT_MS` after the body ended, the client gets a 503 naming the level.
//! - Reads ask every live replica, decide at R answers, take the newest version (preferring this
//!   node's copy to stream the body), fall back to another holder if a transfer fails, and repair
//!   replicas that answered with something older in the background.
//! - Deletes are stamped tombstones / delete markers written like any version.
//!
//! This file owns what every path shares: a key's replicas ([`Target`]), the request's level,
//! stamps, asking one replica or every member, and how replica failures are told apart from
//! answers. The paths themselves live in [`write`](mod@write) (quorum writes, streamed bodies),
//! [`read`] (GET/HEAD), [`repair`] (read repair), [`meta`] (per-version metadata and object
//! lock), [`delete`], [`multipart`] and [`copy`].

mod backlog;
pub(crate) mod cas;
mod conditional;
mod copy;
mod delete;
mod handoff;
mod meta;
mod multipart;
mod read;
mod repair;
mod write;

pub use backlog::Backlog;
pub use handoff::{HandoffConfig, HandoffStats};
pub(crate) use read::wire_for;

use crate::ClusterStore;
use crate::quorum::{Consistency, Stamp, Unavailable};
use crate::wire::{self, Ask, OpMessage};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use ironbucket_store::*;
use std::sync::Arc;
use std::time::Duration;

/// One replica of a key.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub name: String,
    pub addr: String,
    pub local: bool,
}

/// Rings kept built (the layouts in force and a few before them).
const RINGS_CACHED: usize = 12;

/// A key's replicas: every node that may hold it while data moves between layouts, and the
/// replica set of each layout (oldest first).
#[derive(Debug, Clone)]
pub(crate) struct Replicas {
    all: Vec<Target>,
    sets: Vec<Vec<String>>,
}

impl Replicas {
    /// Replicas outside any layout (the holders a read found): one set.
    pub(crate) fn plain(targets: Vec<Target>) -> Self {
        let sets = vec![targets.iter().map(|t| t.name.clone()).collect()];
        Self { all: targets, sets }
    }

    /// The set reads use: the oldest layout's.
    pub(crate) fn read(&self) -> Vec<Target> {
        let set = &self.sets[0];
        self.all.iter().filter(|t| set.contains(&t.name)).cloned().collect()
    }

    /// Each layout's set, for a write's level (met in each).
    pub(crate) fn sets(&self) -> &[Vec<String>] {
        &self.sets
    }

    pub(crate) fn into_all(self) -> Vec<Target> {
        self.all
    }
}

impl std::ops::Deref for Replicas {
    type Target = [Target];
    fn deref(&self) -> &[Target] {
        &self.all
    }
}

fn unavailable(u: Unavailable) -> Error {
    Error::Unavailable(u.to_string())
}

/// Why replicas failed a write, named in the 503 when the level cannot be met (a refused stamp
/// says which clock is wrong; a full disk says which node).
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn note(&mut self, node: &str, e: &Error) {
        if self.0.len() < 5 {
            self.0.push(format!("{node}: {e}"));
        }
    }

    fn error(&self, u: Unavailable) -> Error {
        if self.0.is_empty() {
            unavailable(u)
        } else {
            Error::Unavailable(format!("{u}. Replica failures: {}", self.0.join("; ")))
        }
    }
}

/// Errors that mean "this replica could not do it" (count against the level) rather than an
/// answer about the request itself.
fn replica_failure(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Internal(_) | Error::Corrupt(_))
}

/// Keeps the refusal the client gets when replicas refuse a write. A replica that missed part of
/// the state the write needs (the upload, a part: written at QUORUM, it may lack what the others
/// hold) refuses for that reason alone; a replica that holds it answers about the request itself
/// (EntityTooSmall, InvalidPartOrder, a failed precondition). The first refusal of the second kind
/// wins over any of the first; otherwise the first refusal stands.
fn keep_refusal(kept: &mut Option<Error>, e: Error) {
    let lacks_state = |e: &Error| matches!(e, Error::NoSuchUpload | Error::InvalidPart(_));
    match kept {
        Some(k) if !lacks_state(k) || lacks_state(&e) => {}
        _ => *kept = Some(e),
    }
}

fn stamp_of(v: &VersionStamp) -> Stamp {
    Stamp {
        hlc: v.hlc,
        node: v.origin,
    }
}

fn validate_key(key: &str) -> Result<()> {
    ironbucket_types::validate_object_key(key).map_err(Error::from)
}

/// An MD5 ETag (hex) as a Content-MD5 value (base64); `None` for multipart ETags.
fn hex_to_b64(etag: &str) -> Option<String> {
    use base64::Engine;
    let raw = hex::decode(etag).ok().filter(|r| r.len() == 16)?;
    Some(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// How long a request that has the answers it needs waits for the members still to answer
/// (see [`ClusterStore::ask_members`]).
pub(crate) const LATE_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

impl ClusterStore {
    /// The replicas of `bucket/key`: while data moves between layouts, the replica sets of
    /// every layout data may still be placed by (the oldest one's nodes first; reads use that
    /// set, writes need their level in each set).
    pub(crate) fn targets(&self, bucket: &str, key: &str) -> Result<Replicas> {
        let (layouts, members) = self.cp.with_state(|s| {
            if !s.buckets.contains_key(bucket) {
                return (Err(Error::NoSuchBucket), Vec::new());
            }
            let members: Vec<(String, String)> = s
                .active_members()
                .map(|m| (m.name.clone(), m.rpc_addr.clone()))
                .collect();
            (Ok(s.layouts()), members)
        });
        let pos = ironbucket_types::position(bucket, key);
        let me = self.cp.node_name();
        let mut all: Vec<Target> = Vec::new();
        let mut sets: Vec<Vec<String>> = Vec::new();
        for layout in layouts? {
            let ring = self.ring_of(layout)?;
            let mut set = Vec::new();
            for i in ring.replicas_at(pos) {
                let n = &ring.nodes()[i].name;
                let Some((name, addr)) = members.iter().find(|(m, _)| m == n) else {
                    continue;
                };
                set.push(name.clone());
                if !all.iter().any(|t| t.name == *name) {
                    all.push(Target {
                        name: name.clone(),
                        addr: addr.clone(),
                        local: name == me,
                    });
                }
            }
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        if sets.iter().any(Vec::is_empty) || all.is_empty() {
            return Err(Error::Unavailable(
                "the placement ring names no replica for this key".into(),
            ));
        }
        Ok(Replicas { all, sets })
    }

    /// The placement ring of `layout` (cached while the layouts stay the same).
    pub(crate) fn ring_of(&self, layout: ironbucket_cluster::Layout) -> Result<Arc<ironbucket_cluster::Ring>> {
        let mut cached = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cached.iter().find(|r| *r.layout() == layout) {
            return Ok(r.clone());
        }
        let r = Arc::new(
            ironbucket_cluster::Ring::new(layout)
                .map_err(|e| Error::Unavailable(format!("no placement layout: {e}")))?,
        );
        if cached.len() >= RINGS_CACHED {
            cached.remove(0);
        }
        cached.push(r.clone());
        Ok(r)
    }

    /// The placement ring of the layout in force.
    pub(crate) fn current_ring(&self) -> Result<Arc<ironbucket_cluster::Ring>> {
        let layout = self
            .cp
            .with_state(ironbucket_cluster::layout_of)
            .map_err(|e| Error::Unavailable(format!("no placement layout: {e}")))?;
        self.ring_of(layout)
    }

    /// Every member (for listings and cluster-wide questions).
    pub(crate) fn all_targets(&self) -> Vec<Target> {
        let me = self.cp.node_name().to_string();
        self.cp.with_state(|s| {
            s.active_members()
                .map(|m| Target {
                    name: m.name.clone(),
                    addr: m.rpc_addr.clone(),
                    local: m.name == me,
                })
                .collect()
        })
    }

    /// Whether the replica's last ping went unanswered, or the failure detector reports it down
    /// and no ping of the last moment was answered (the gossip about a node that just restarted
    /// lags behind its pings).
    pub(crate) fn is_down(&self, t: &Target) -> bool {
        if t.local {
            return false;
        }
        if self.unreachable(t).is_some() {
            return true;
        }
        self.down.get().is_some_and(|f| f(&t.name))
            && !self
                .cp
                .peers()
                .reach()
                .answered_within(&t.addr, crate::reach::ANSWERED_FRESH)
    }

    /// The members the failure detector reports down or that do not answer pings.
    pub(crate) fn down_members(&self) -> Vec<String> {
        self.all_targets()
            .into_iter()
            .filter(|t| self.is_down(t))
            .map(|t| t.name)
            .collect()
    }

    /// The request's level: the `x-ironbucket-consistency` header, else the cluster default.
    pub(crate) fn level(&self, write: bool) -> Consistency {
        if let Some(l) = hints::requested_consistency() {
            return l;
        }
        self.cp.with_state(|s| {
            let r = &s.replication;
            if write { r.write_consistency } else { r.read_consistency }
        })
    }

    /// The cluster's default write level (what listings can rely on).
    pub(crate) fn default_write_level(&self) -> Consistency {
        self.cp.with_state(|s| s.replication.write_consistency)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.cp.peers().config().request_timeout
    }

    /// A body transfer's deadline: the request timeout, plus time for the bytes at a floor of
    /// 1 MB/s (a 5 GiB part must not be cut at 30 s). A replica that stops taking data for a
    /// whole request timeout is dropped sooner (see `replicate_body`).
    fn timeout_for(&self, len: Option<u64>) -> Duration {
        self.timeout() + Duration::from_millis(len.unwrap_or(0) / 1_000)
    }

    /// A new write's stamp, unless this node's clock runs ahead of its peers' (then 503: a
    /// stamp from the future would be refused by the other replicas and, kept here, would win
    /// over later writes).
    async fn stamp(&self) -> Result<(Hlc, u64)> {
        if !self.cp.wait_clock_compared(Duration::from_secs(3)).await {
            return Err(Error::Unavailable(
                "this node has not compared its clock with its peers' yet (it stamps no write before); the request was not sent, retry in a moment".into(),
            ));
        }
        if let Some(why) = self.stamps_refused() {
            return Err(Error::Unavailable(format!("{why}; the request was not sent")));
        }
        Ok((self.local.now_hlc(), self.cp.id()))
    }

    pub(crate) fn strong(&self) -> Result<Arc<ClusterStore>> {
        self.me
            .get()
            .and_then(|w| w.upgrade())
            .ok_or_else(|| Error::Internal("the cluster store is shutting down".into()))
    }

    /// Runs `a` on one replica (this node's store directly, a peer over RPC).
    pub(crate) async fn ask<A: Ask>(&self, t: &Target, a: &A) -> Result<A::Answer> {
        if t.local {
            return wire::decode(&wire::serve(&self.local, a.clone().into_op()).await);
        }
        self.cp
            .peers()
            .call(&t.addr, &OpMessage::new(a.clone()), Some(self.timeout()))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", t.name)))?
    }

    /// Asks every member (in parallel): the answers of those that could answer, and the
    /// failures (members known down included).
    pub(crate) async fn ask_all<A: Ask>(&self, a: &A) -> (Vec<(Target, A::Answer)>, Vec<(String, Error)>) {
        self.ask_members(a, usize::MAX).await
    }

    /// [`Self::ask_all`], but once `enough` members have answered, the others get only
    /// [`LATE_GRACE`] (or as long again as the first `enough` took, if longer) before they
    /// count as failed: a member that is slow to answer (its disk in trouble, frozen but not yet
    /// found unreachable) does not hold up a request that can do without it.
    pub(crate) async fn ask_members<A: Ask>(
        &self,
        a: &A,
        enough: usize,
    ) -> (Vec<(Target, A::Answer)>, Vec<(String, Error)>) {
        // Each member is judged down or not once: the asks and the waiting list agree.
        let (down, live): (Vec<Target>, Vec<Target>) = self.all_targets().into_iter().partition(|t| self.is_down(t));
        let mut failed: Vec<(String, Error)> = down
            .into_iter()
            .map(|t| {
                let why = match self.unreachable(&t) {
                    Some(e) => format!("node {} does not answer pings: {e}", t.name),
                    None => format!("node {} is down", t.name),
                };
                (t.name, Error::Unavailable(why))
            })
            .collect();
        let mut asks: FuturesUnordered<_> = live
            .iter()
            .map(|t| async move {
                let r = self.ask(t, a).await;
                (t.clone(), r)
            })
            .collect();
        let mut waiting: Vec<&str> = live.iter().map(|t| t.name.as_str()).collect();
        let start = std::time::Instant::now();
        let mut ok = Vec::new();
        let mut cutoff: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let next = match cutoff.as_mut() {
                None => asks.next().await,
                Some(c) => tokio::select! {
                    n = asks.next() => n,
                    _ = c => break,
                },
            };
            let Some((t, r)) = next else { break };
            waiting.retain(|n| *n != t.name);
            match r {
                Ok(v) => ok.push((t, v)),
                Err(e) => failed.push((t.name, e)),
            }
            if cutoff.is_none() && ok.len() >= enough && !waiting.is_empty() {
                cutoff = Some(Box::pin(tokio::time::sleep(LATE_GRACE.max(start.elapsed()))));
            }
        }
        let grace = start.elapsed();
        failed.extend(waiting.into_iter().map(|n| {
            let why = format!("node {n} did not answer within {grace:?}, the others did: it was not waited for");
            (n.to_string(), Error::Unavailable(why))
        }));
        (ok, failed)
    }

    /// The replication factor in force (at most the number of members holding data).
    pub(crate) fn factor(&self) -> usize {
        self.cp.with_state(|s| {
            let data = s
                .members
                .values()
                .filter(|m| m.state == ironbucket_consensus::MemberState::Active && m.weight > 0 && m.role != "gateway")
                .count();
            (s.replication.factor as usize).min(data).max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_about_the_request_wins_over_a_lagging_replicas() {
        // The replica that missed part 2 answers first; the one that holds it says part 1 is
        // too small: the client is told that.
        let mut kept = None;
        keep_refusal(&mut kept, Error::InvalidPart("part 2 not found".into()));
        keep_refusal(&mut kept, Error::EntityTooSmall { part: 1, size: 10 });
        assert!(matches!(kept, Some(Error::EntityTooSmall { part: 1, .. })), "{kept:?}");
        // Once an answer about the request is kept, a later lagging refusal does not replace it.
        keep_refusal(&mut kept, Error::NoSuchUpload);
        assert!(matches!(kept, Some(Error::EntityTooSmall { .. })), "{kept:?}");

        // Every replica lacking the state: the first refusal stands.
        let mut kept = None;
        keep_refusal(&mut kept, Error::NoSuchUpload);
        keep_refusal(&mut kept, Error::InvalidPart("x".into()));
        assert!(matches!(kept, Some(Error::NoSuchUpload)), "{kept:?}");

        // Two answers about the request: the first stands.
        let mut kept = None;
        keep_refusal(&mut kept, Error::PreconditionFailed);
        keep_refusal(&mut kept, Error::InvalidPartOrder);
        assert!(matches!(kept, Some(Error::PreconditionFailed)), "{kept:?}");
    }
}
