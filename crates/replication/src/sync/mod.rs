//! Anti-entropy: replicas that converge without anyone reading.
//!
//! Every node keeps a hash tree over what it holds (`ironbucket_meta`'s tree, updated in the
//! same commit as every write), one per replica set (*partition*: the positions the placement
//! ring gives to the same set of nodes). The worker `cluster.anti-entropy` compares, every
//! `SYNC_INTERVAL_MS`, the root of each partition it belongs to with each other member of that
//! partition, descends only into differing groups and leaves, and takes in what the peer holds
//! and it lacks ([`pull`]): missing versions with their bodies, delete markers, version
//! tombstones, newer metadata. Each node only pulls; its peers pull from it in their own rounds.
//! Partitions where this node lacks the most go first; copies are throttled to a bandwidth limit
//! settable at runtime. Writes younger than the settle time (the request timeout plus a second)
//! are left alone: their coordinator is still sending them.
//!
//! Tombstone safety: a round that finds a peer lacking nothing of this node's (settled) items in
//! a partition confirms that the peer holds every tombstone of it up to the round's start. A
//! tombstone is collected only once every other replica of its partition has confirmed it
//! ([`ClusterStore::tombstone_held_everywhere`]); a replica that is down or behind holds
//! collection back, so it can never bring a deleted object back.

pub(crate) mod absent;
mod heal;
mod messages;
mod moves;
mod pull;
mod rebalance;
mod round;

pub(crate) use messages::{TreeAnswer, TreeAsk};
pub(crate) use moves::{MoveAsk, Mover};

use crate::ClusterStore;
use ironbucket_api::{PeerSync, RepairStatus};
use ironbucket_cluster::ReplicaSets;
use ironbucket_runtime::WorkerCtx;
use ironbucket_store::Classify;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Anti-entropy's settings (`SYNC_INTERVAL_MS`, `REPAIR_RATE_MBPS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncConfig {
    /// Whether this node compares with its peers at all (`ANTI_ENTROPY`); without it, replicas
    /// converge only through read repair and hints, and tombstones are collected after their
    /// grace period alone.
    pub enabled: bool,
    /// How often roots are compared.
    pub interval: Duration,
    /// Copy bandwidth limit in bytes per second (0: none); changeable at runtime.
    pub rate: u64,
    /// How long a data member may be down before its share is re-created on the others
    /// (`REREPLICATE_AFTER_SECS`; `None`: never, an operator removes or replaces it).
    pub rereplicate_after: Option<Duration>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_millis(1_000),
            rate: 50_000_000,
            rereplicate_after: Some(Duration::from_secs(600)),
        }
    }
}

/// The placement as the metadata tree sees it.
struct SetsClassifier(Arc<ReplicaSets>);

impl Classify for SetsClassifier {
    fn class(&self, pos: u64) -> u64 {
        self.0.class_of(pos)
    }
    fn fingerprint(&self) -> u64 {
        self.0.fingerprint()
    }
}

/// Anti-entropy's state on this node.
#[derive(Default)]
pub(crate) struct AntiEntropy {
    cfg: std::sync::OnceLock<SyncConfig>,
    rate: AtomicU64,
    rate_set: std::sync::atomic::AtomicBool,
    pub(crate) wake: tokio::sync::Notify,
    /// The next round descends every differing pair at once (`POST /cluster/repair`).
    pub(crate) force: std::sync::atomic::AtomicBool,
    /// (partition, peer) -> when this node last descended into it.
    descended: Mutex<HashMap<(u64, String), std::time::Instant>>,
    /// The replica sets the local tree follows.
    installed: Mutex<Option<Arc<ReplicaSets>>>,
    /// (partition, peer) -> the time up to which the peer is known to hold every item of this
    /// node's in the partition (ms since the epoch).
    confirmed: Mutex<HashMap<(u64, String), u64>>,
    peers: Mutex<BTreeMap<String, PeerSync>>,
    progress: Mutex<Option<(u64, u64)>>,
    rounds: AtomicU64,
    copied: AtomicU64,
    bytes: AtomicU64,
    deletes: AtomicU64,
    merged: AtomicU64,
    failed: AtomicU64,
    last_round_at: AtomicU64,
    last_round_ms: AtomicU64,
}

impl AntiEntropy {
    pub(crate) fn config(&self) -> SyncConfig {
        self.cfg.get().copied().unwrap_or_default()
    }

    /// The copy bandwidth limit in force (bytes per second, 0: none).
    pub(crate) fn rate(&self) -> u64 {
        if self.rate_set.load(Ordering::Relaxed) {
            self.rate.load(Ordering::Relaxed)
        } else {
            self.config().rate
        }
    }

    pub(crate) fn set_rate(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::Relaxed);
        self.rate_set.store(true, Ordering::Relaxed);
        tracing::info!(bytes_per_sec, "anti-entropy bandwidth limit changed");
    }

    pub(crate) fn installed(&self) -> Option<Arc<ReplicaSets>> {
        self.installed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn confirm(&self, class: u64, peer: &str, until: u64) {
        let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry((class, peer.to_string())).or_default();
        *e = (*e).max(until);
    }

    /// Whether the pair may be descended now (not within `every` of the last time); if so, the
    /// time is recorded.
    fn may_descend(&self, class: u64, peer: &str, every: Duration) -> bool {
        let mut d = self.descended.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match d.get(&(class, peer.to_string())) {
            Some(t) if now.duration_since(*t) < every => false,
            _ => {
                d.insert((class, peer.to_string()), now);
                true
            }
        }
    }

    fn confirmed(&self, class: u64, peer: &str) -> u64 {
        let c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(class, peer.to_string())).copied().unwrap_or(0)
    }
}

impl ClusterStore {
    /// Sets anti-entropy's interval and bandwidth limit (once, at start).
    pub fn set_sync(&self, cfg: SyncConfig) {
        let _ = self.sync.cfg.set(cfg);
    }

    /// Installs the tombstone guard in the local store (collection waits for every replica).
    pub(crate) fn guard_tombstones(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.local.set_tombstone_guard(Arc::new(move |bucket, key, hlc| {
            me.upgrade()
                .is_some_and(|s| s.tombstone_held_everywhere(bucket, key, hlc.physical))
        }));
    }

    /// Whether every other replica of `bucket/key` is known to hold a tombstone stamped at
    /// `physical` ms (confirmed by a comparison round that began after it settled).
    pub(crate) fn tombstone_held_everywhere(&self, bucket: &str, key: &str, physical: u64) -> bool {
        // While data moves between layouts no tombstone goes: a new owner may not have it yet.
        if self.cp.with_state(|s| !s.layout_history.is_empty()) {
            return false;
        }
        if !self.sync.config().enabled {
            return true;
        }
        let Some(sets) = self.sync.installed() else {
            return false;
        };
        let class = sets.class_of(ironbucket_types::position(bucket, key));
        let me = self.cp.node_name();
        let Some(nodes) = sets.nodes_of(class) else {
            return false;
        };
        nodes
            .iter()
            .filter(|n| n.as_str() != me)
            .all(|n| self.sync.confirmed(class, n) > physical)
    }

    /// Installs the replica sets of the placement in force as the tree's classifier, if they
    /// changed (the local tree's digests are rebuilt then).
    async fn install_placement(&self) -> ironbucket_store::Result<Arc<ReplicaSets>> {
        let ring = self.current_ring()?;
        let sets = Arc::new(ReplicaSets::of(&ring));
        if let Some(cur) = self.sync.installed()
            && cur.fingerprint() == sets.fingerprint()
            && self.local.tree_fingerprint() == Some(cur.fingerprint())
        {
            return Ok(cur);
        }
        let began = std::time::Instant::now();
        let rebuilt = self
            .local
            .set_classifier(Arc::new(SetsClassifier(sets.clone())))
            .await?;
        *self.sync.installed.lock().unwrap_or_else(|p| p.into_inner()) = Some(sets.clone());
        // What was confirmed was about the old partitions.
        self.sync.confirmed.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if rebuilt {
            tracing::info!(
                ms = began.elapsed().as_millis() as u64,
                partitions = sets.sets().count(),
                "anti-entropy tree rebuilt for the placement layout in force"
            );
        }
        Ok(sets)
    }

    /// The worker `cluster.anti-entropy`: a round every interval, or at once when woken.
    pub(crate) async fn anti_entropy_loop(me: Weak<Self>, ctx: WorkerCtx) -> std::result::Result<(), String> {
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            let interval = s.sync.config().interval;
            if s.ready().is_ok() && !s.sync.config().enabled {
                // Off: the tree still follows the placement (peers may compare with it).
                if let Err(e) = s.install_placement().await {
                    ctx.note_error(format!("cannot install the placement in the tree: {e}"));
                }
                ctx.progress("anti-entropy is off (ANTI_ENTROPY=false)");
            } else if s.ready().is_ok() {
                ctx.busy();
                match s.sync_round(&ctx).await {
                    Ok(summary) => {
                        ctx.progress(summary);
                        ctx.unit_done();
                    }
                    Err(e) => ctx.note_error(format!("anti-entropy round failed: {e}")),
                }
                *s.sync.progress.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            ctx.idle();
            let wake = s.clone();
            drop(s);
            tokio::select! {
                _ = wake.sync.wake.notified() => {}
                _ = ctx.sleep(interval) => {}
            }
        }
    }

    /// This node's anti-entropy figures (`GET /cluster/repair/status`, `/metrics`).
    pub async fn repair_status(&self) -> RepairStatus {
        let a = &self.sync;
        let hints: HashMap<String, u64> = self
            .handoff
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut peers: Vec<PeerSync> = a
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for p in &mut peers {
            p.hints_pending = hints.get(&p.node).copied().unwrap_or(0);
        }
        let last = a.last_round_at.load(Ordering::Relaxed);
        let progress = *a.progress.lock().unwrap_or_else(|p| p.into_inner());
        let tree_items = self.local.tree_len().await.unwrap_or(0);
        let mut roots = std::collections::BTreeMap::new();
        if let Some(sets) = a.installed() {
            let me = self.cp.node_name();
            for (class, nodes) in sets.sets() {
                if nodes.iter().any(|n| n == me) {
                    let root = self
                        .local
                        .tree_cells(class, 0, 0, 0)
                        .await
                        .ok()
                        .and_then(|c| c.first().map(|c| c.1))
                        .unwrap_or_default();
                    roots.insert(format!("{class:016x}"), format!("{}:{:032x}", root.count, root.hash));
                }
            }
        }
        RepairStatus {
            node: self.cp.node_name().to_string(),
            rate_mb_per_sec: a.rate() as f64 / 1e6,
            interval_ms: a.config().interval.as_millis() as u64,
            rounds: a.rounds.load(Ordering::Relaxed),
            progress,
            tree_items,
            objects_copied: a.copied.load(Ordering::Relaxed),
            bytes_copied: a.bytes.load(Ordering::Relaxed),
            deletes_applied: a.deletes.load(Ordering::Relaxed),
            metadata_merged: a.merged.load(Ordering::Relaxed),
            failures: a.failed.load(Ordering::Relaxed),
            last_round_at: (last > 0).then_some(last),
            last_round_ms: a.last_round_ms.load(Ordering::Relaxed),
            peers,
            roots,
            enabled: a.config().enabled,
        }
    }

    /// `POST /cluster/repair`: every member starts a round now.
    pub async fn start_repair(&self) -> ironbucket_api::RepairStarted {
        self.repair_everywhere(TreeAsk::Start).await
    }

    /// `PUT /cluster/repair/rate`: every member's copy bandwidth limit (bytes/s, 0: none).
    pub async fn set_repair_rate(&self, bytes_per_sec: u64) -> ironbucket_api::RepairStarted {
        self.repair_everywhere(TreeAsk::Rate(bytes_per_sec)).await
    }

    /// Sends `ask` to every other active member (and does it here): who took it, who could not.
    async fn repair_everywhere(&self, ask: TreeAsk) -> ironbucket_api::RepairStarted {
        let _ = self.serve_tree(ask.clone()).await;
        started(self.cp.node_name(), self.ask_others(&ask, self.timeout()).await)
    }

    /// Sends `ask` to every other active member at once: each one's answer, or why it gave none.
    pub(crate) async fn ask_others<M, A>(
        &self,
        ask: &M,
        timeout: Duration,
    ) -> Vec<(String, std::result::Result<A, String>)>
    where
        M: ironbucket_rpc::Message<Reply = ironbucket_store::Result<A>>,
    {
        let others: Vec<_> = self.all_targets().into_iter().filter(|t| !t.local).collect();
        let peers = self.cp.peers();
        let answers = futures::future::join_all(others.iter().map(|t| {
            let peers = &peers;
            async move { (t, peers.call(&t.addr, ask, Some(timeout)).await) }
        }))
        .await;
        answers
            .into_iter()
            .map(|(t, r)| {
                let r = match r {
                    Ok(Ok(a)) => Ok(a),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (t.name.clone(), r)
            })
            .collect()
    }

    /// Every member's anti-entropy status.
    pub async fn repair_status_all(&self) -> ironbucket_api::RepairStatusAll {
        let mut out = ironbucket_api::RepairStatusAll {
            nodes: vec![self.repair_status().await],
            ..Default::default()
        };
        for (node, r) in self.ask_others(&TreeAsk::Status, Duration::from_secs(3)).await {
            match r {
                Ok(TreeAnswer::Status(s)) => out.nodes.push(*s),
                Ok(_) => {
                    out.unreachable.insert(node, "unexpected answer".into());
                }
                Err(e) => {
                    out.unreachable.insert(node, e);
                }
            }
        }
        out.nodes.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }
}

/// Who took an operator's request (this node first), and who could not be asked.
pub(crate) fn started<A>(
    me: &str,
    answers: Vec<(String, std::result::Result<A, String>)>,
) -> ironbucket_api::RepairStarted {
    let mut out = ironbucket_api::RepairStarted::default();
    out.nodes.push(me.to_string());
    for (node, r) in answers {
        match r {
            Ok(_) => out.nodes.push(node),
            Err(e) => {
                out.unreachable.insert(node, e);
            }
        }
    }
    out
}
