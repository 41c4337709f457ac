//! One anti-entropy round: compare this node's tree with each peer's, partition by partition,
//! descend where they differ, and take in what this node lacks.

use super::pull::{Pulled, Step, plan};
use super::{TreeAnswer, TreeAsk};
use crate::ClusterStore;
use crate::coordinator::Target;
use futures::StreamExt;
use ironbucket_api::PeerSync;
use ironbucket_cluster::ReplicaSets;
use ironbucket_runtime::WorkerCtx;
use ironbucket_store::{Digest, Error, ItemSummary, Result, TreeItem};
use ironbucket_types::now_millis;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const GROUPS: u32 = ironbucket_meta::GROUPS;
const PER_GROUP: u32 = ironbucket_meta::LEAVES_PER_GROUP;
/// Keys taken in at once.
pub(super) const PARALLEL: usize = 16;

/// One (partition, peer) pair to compare.
struct Pair {
    class: u64,
    peer: Target,
    mine: Digest,
    theirs: Digest,
}

/// What comparing one pair found and did.
#[derive(Default)]
struct PairResult {
    /// Settled items the peer holds that this node lacks (before pulling), and their bytes.
    behind: u64,
    behind_bytes: u64,
    /// Settled items of this node's that the peer lacks.
    ahead: u64,
    pulled: Pulled,
}

/// Paces copies to the bandwidth limit.
pub(super) struct Pace {
    began: Instant,
    bytes: u64,
    rate: u64,
}

impl Pace {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            began: Instant::now(),
            bytes: 0,
            rate,
        }
    }

    /// Waits until `bytes` more may be sent without going over `rate` (bytes/s, 0: no limit)
    /// since the pace began: admission before each copy, so there is no burst.
    pub(super) async fn admit(&mut self, bytes: u64, rate: u64) {
        if rate != self.rate {
            *self = Pace::new(rate);
        }
        if rate == 0 || bytes == 0 {
            return;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let spent = self.began.elapsed();
        if due > spent {
            tokio::time::sleep(due - spent).await;
        }
    }
}

fn digest_map(cells: Vec<(u32, Digest)>) -> HashMap<u32, Digest> {
    cells.into_iter().collect()
}

/// Indices whose digests differ between the two maps.
fn differing(a: &HashMap<u32, Digest>, b: &HashMap<u32, Digest>) -> Vec<u32> {
    let mut out: Vec<u32> = a
        .iter()
        .filter(|(i, d)| b.get(i) != Some(d))
        .map(|(i, _)| *i)
        .chain(b.keys().filter(|i| !a.contains_key(i)).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl ClusterStore {
    /// A peer's answer to a tree request.
    async fn ask_tree(&self, peer: &Target, ask: TreeAsk) -> Result<TreeAnswer> {
        self.cp
            .peers()
            .call(&peer.addr, &ask, Some(self.timeout()))
            .await
            .map_err(|e| Error::Unavailable(format!("node {}: {e}", peer.name)))?
    }

    async fn their_cells(
        &self,
        peer: &Target,
        fp: u64,
        class: u64,
        level: u8,
        from: u32,
        to: u32,
    ) -> Result<Vec<(u32, Digest)>> {
        let ask = TreeAsk::Cells {
            fingerprint: fp,
            class,
            level,
            from,
            to,
        };
        match self.ask_tree(peer, ask).await? {
            TreeAnswer::Cells(c) => Ok(c),
            _ => Err(Error::Internal(format!(
                "node {} answered a tree request with something else",
                peer.name
            ))),
        }
    }

    async fn their_leaves(&self, peer: &Target, fp: u64, class: u64, leaves: Vec<u32>) -> Result<Vec<TreeItem>> {
        let ask = TreeAsk::Leaves {
            fingerprint: fp,
            class,
            leaves,
        };
        match self.ask_tree(peer, ask).await? {
            TreeAnswer::Items(i) => Ok(i),
            _ => Err(Error::Internal(format!(
                "node {} answered a tree request with something else",
                peer.name
            ))),
        }
    }

    /// One round over every partition this node belongs to; a one-line summary.
    pub(crate) async fn sync_round(&self, ctx: &WorkerCtx) -> Result<String> {
        let t0 = now_millis();
        let began = Instant::now();
        let sets = self.install_placement().await?;
        let fp = sets.fingerprint();
        let me = self.cp.node_name().to_string();
        let members: HashMap<String, Target> = self.all_targets().into_iter().map(|t| (t.name.clone(), t)).collect();
        // Writes younger than this may still be on their way from their coordinator.
        let settled_before = t0.saturating_sub((self.timeout() + Duration::from_secs(1)).as_millis() as u64);
        let mut status: BTreeMap<String, PeerSync> = BTreeMap::new();
        let mut pairs = Vec::new();
        for (class, nodes) in sets.sets() {
            if !nodes.contains(&me) {
                continue;
            }
            let mine = self
                .local
                .tree_cells(class, 0, 0, 0)
                .await?
                .first()
                .map(|c| c.1)
                .unwrap_or_default();
            for n in nodes.iter().filter(|n| **n != me) {
                let st = status.entry(n.clone()).or_insert_with(|| PeerSync {
                    node: n.clone(),
                    ..Default::default()
                });
                st.partitions += 1;
                let Some(peer) = members.get(n).filter(|t| !self.is_down(t)) else {
                    st.error = Some("down or not an active member".into());
                    continue;
                };
                match self.their_cells(peer, fp, class, 0, 0, 0).await {
                    Ok(c) => {
                        let theirs = c.first().map(|c| c.1).unwrap_or_default();
                        if theirs == mine {
                            self.sync.confirm(class, n, settled_before);
                        } else {
                            pairs.push(Pair {
                                class,
                                peer: peer.clone(),
                                mine,
                                theirs,
                            });
                        }
                    }
                    Err(e) => st.error = Some(e.to_string()),
                }
            }
        }
        // This node lacks the most first.
        pairs.sort_by_key(|p| std::cmp::Reverse(p.theirs.count as i64 - p.mine.count as i64));
        let total = pairs.len() as u64;
        let pace = tokio::sync::Mutex::new(Pace::new(self.sync.rate()));
        // A pair whose roots differ is descended at most once per settle time (writes younger
        // than that are not taken in anyway): under a steady write load the roots always
        // differ, and descending every interval would cost the writes (measured: 12% of a
        // 3-node cluster's PUT rate at 250 ms). `POST /cluster/repair` descends at once.
        let force = self.sync.force.swap(false, Ordering::Relaxed);
        let every = (self.timeout() + Duration::from_secs(1)).max(self.sync.config().interval);
        let prev_status = self.sync.peers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (done, pair) in pairs.into_iter().enumerate() {
            *self.sync.progress.lock().unwrap_or_else(|p| p.into_inner()) = Some((done as u64, total));
            let st = status.entry(pair.peer.name.clone()).or_default();
            st.out_of_sync += 1;
            if !force && !self.sync.may_descend(pair.class, &pair.peer.name, every) {
                // Not yet: what the last descent found stands.
                if let Some(p) = prev_status.get(&pair.peer.name) {
                    st.items_behind = st.items_behind.max(p.items_behind);
                    st.bytes_behind = st.bytes_behind.max(p.bytes_behind);
                }
                continue;
            }
            match self.sync_pair(&sets, &pair, settled_before, &pace, ctx).await {
                Ok(r) => {
                    st.items_behind += r
                        .behind
                        .saturating_sub(r.pulled.copied + r.pulled.deletes + r.pulled.merged);
                    st.bytes_behind += r.behind_bytes.saturating_sub(r.pulled.bytes);
                    if r.ahead == 0 {
                        self.sync.confirm(pair.class, &pair.peer.name, settled_before);
                    }
                }
                Err(e) => st.error = Some(e.to_string()),
            }
        }
        // A peer is fully in sync when every shared partition is confirmed up to this round.
        let mut lagging = 0;
        {
            let mut prev = self.sync.peers.lock().unwrap_or_else(|p| p.into_inner());
            for (name, st) in status.iter_mut() {
                st.node = name.clone();
                let all = sets
                    .sets()
                    .filter(|(_, nodes)| nodes.contains(&me) && nodes.contains(name))
                    .all(|(class, _)| self.sync.confirmed(class, name) >= settled_before);
                st.last_complete_sync = if all {
                    Some(t0)
                } else {
                    lagging += 1;
                    prev.get(name).and_then(|p| p.last_complete_sync)
                };
            }
            *prev = status;
        }
        let a = &self.sync;
        a.rounds.fetch_add(1, Ordering::Relaxed);
        a.last_round_at.store(now_millis(), Ordering::Relaxed);
        a.last_round_ms
            .store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(format!(
            "{total} partition pairs differed; {} versions copied, {} tombstones applied so far; {lagging} peers not confirmed in sync",
            a.copied.load(Ordering::Relaxed),
            a.deletes.load(Ordering::Relaxed)
        ))
    }

    /// Compares one partition with one peer and takes in what this node lacks.
    async fn sync_pair(
        &self,
        sets: &Arc<ReplicaSets>,
        pair: &Pair,
        settled_before: u64,
        pace: &tokio::sync::Mutex<Pace>,
        ctx: &WorkerCtx,
    ) -> Result<PairResult> {
        let fp = sets.fingerprint();
        let (class, peer) = (pair.class, &pair.peer);
        let mine = digest_map(self.local.tree_cells(class, 1, 0, GROUPS - 1).await?);
        let theirs = digest_map(self.their_cells(peer, fp, class, 1, 0, GROUPS - 1).await?);
        let mut out = PairResult::default();
        let grace = self.local.config().tombstone_grace.as_millis() as u64;
        let collectible_before = now_millis().saturating_sub(grace);
        let collectible = move |t: &ItemSummary| t.hlc.physical < collectible_before;
        for g in differing(&mine, &theirs) {
            let (from, to) = (g * PER_GROUP, g * PER_GROUP + PER_GROUP - 1);
            let ml = digest_map(self.local.tree_cells(class, 2, from, to).await?);
            let tl = digest_map(self.their_cells(peer, fp, class, 2, from, to).await?);
            // The differing leaves of the group, a batch at a time: the keys of a whole batch
            // are taken in concurrently.
            for batch in differing(&ml, &tl).chunks(super::messages::MAX_LEAVES) {
                let began = Instant::now();
                let my_items = self.leaf_items(sets, class, batch).await?;
                let their_items = self.their_leaves(peer, fp, class, batch.to_vec()).await?;
                let keys = by_key(&my_items, &their_items);
                let mut work = Vec::new();
                for ((bucket, key), (m, t)) in keys {
                    let settled = |i: &&(String, ItemSummary)| i.1.hlc.physical < settled_before;
                    // What the peer lacks of this node's and would take in (its round does):
                    // the same decision seen from its side. An old tombstone it already
                    // collected, with nothing left there to delete, is not lacking.
                    let m_settled: Vec<(String, ItemSummary)> = m.iter().filter(settled).cloned().collect();
                    out.ahead += plan(&t, &m_settled, &collectible).len() as u64;
                    let t_settled: Vec<(String, ItemSummary)> = t.iter().filter(settled).cloned().collect();
                    let steps = plan(&m, &t_settled, &collectible);
                    if steps.is_empty() {
                        continue;
                    }
                    out.behind += steps.len() as u64;
                    out.behind_bytes += steps
                        .iter()
                        .map(|s| match s {
                            Step::Copy(t) => t.size,
                            _ => 0,
                        })
                        .sum::<u64>();
                    work.push((bucket, key, steps));
                }
                let bytes: Vec<u64> = work
                    .iter()
                    .map(|(_, _, steps)| {
                        steps
                            .iter()
                            .map(|s| if let Step::Copy(t) = s { t.size } else { 0 })
                            .sum()
                    })
                    .collect();
                let mut done = futures::stream::iter(work.into_iter().zip(bytes))
                    .map(|((bucket, key, steps), size)| async move {
                        // The lock is held while waiting: copies are admitted one at a time.
                        pace.lock().await.admit(size, self.sync.rate()).await;
                        self.pull_key(peer, &bucket, &key, steps).await
                    })
                    .buffer_unordered(PARALLEL);
                while let Some(p) = done.next().await {
                    out.pulled.copied += p.copied;
                    out.pulled.bytes += p.bytes;
                    out.pulled.deletes += p.deletes;
                    out.pulled.merged += p.merged;
                    out.pulled.failed += p.failed;
                    // Counted as each key completes, so the status shows a long copy progress.
                    let a = &self.sync;
                    a.copied.fetch_add(p.copied, Ordering::Relaxed);
                    a.bytes.fetch_add(p.bytes, Ordering::Relaxed);
                    a.deletes.fetch_add(p.deletes, Ordering::Relaxed);
                    a.merged.fetch_add(p.merged, Ordering::Relaxed);
                    a.failed.fetch_add(p.failed, Ordering::Relaxed);
                }
                ctx.throttle(began.elapsed()).await;
            }
        }
        Ok(out)
    }
}

pub(super) type KeyItems = (Vec<(String, ItemSummary)>, Vec<(String, ItemSummary)>);

/// The items of both sides grouped by key: (mine, theirs) as (tag, summary).
pub(super) fn by_key(mine: &[TreeItem], theirs: &[TreeItem]) -> BTreeMap<(String, String), KeyItems> {
    let mut out: BTreeMap<(String, String), KeyItems> = BTreeMap::new();
    for i in mine {
        out.entry((i.bucket.clone(), i.key.clone()))
            .or_default()
            .0
            .push((i.tag.clone(), i.summary.clone()));
    }
    for i in theirs {
        out.entry((i.bucket.clone(), i.key.clone()))
            .or_default()
            .1
            .push((i.tag.clone(), i.summary.clone()));
    }
    // Keys whose items agree exactly need nothing.
    out.retain(|_, (m, t)| {
        m.len() != t.len()
            || m.iter()
                .any(|(tag, s)| !t.iter().any(|(tt, ts)| tt == tag && ts.hash == s.hash))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_finds_changed_added_and_removed_cells() {
        let d = |h: u128| Digest { hash: h, count: 1 };
        let a: HashMap<u32, Digest> = [(1, d(1)), (2, d(2)), (3, d(3))].into();
        let b: HashMap<u32, Digest> = [(1, d(1)), (2, d(9)), (4, d(4))].into();
        assert_eq!(differing(&a, &b), vec![2, 3, 4]);
        assert!(differing(&a, &a).is_empty());
    }
}
