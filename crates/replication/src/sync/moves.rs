//! Moving data between layout versions (rebalancing, drain, decommission, removal of a dead
//! node): the worker `cluster.rebalance` on every node.
//!
//! The control plane keeps the layouts data may still be placed by (`ironbucket_consensus`'s
//! layout history); while it holds more than the current one, writes go to every layout's
//! replica set and reads to the oldest's. Each node, in turn:
//! 1. *acks* the current layout version once it has applied it and the writes it coordinated
//!    under older layouts have settled (the request timeout plus a second);
//! 2. once every member acked, takes in ([`ClusterStore::pull_key`], throttled like
//!    anti-entropy) every item it gains in the current layout from every node that held data in
//!    an older layout: each source scans its position-ordered item index and sends the items at
//!    positions this node is new to. The cursor per source is kept on disk, so a restart of
//!    either side resumes where it stopped. When every source is done, the node reports the
//!    version *synced*; once every data node did, the older layouts leave the history and reads
//!    move to the new replica sets;
//! 3. reports the oldest version it still *reads* from; once every member reads only from the
//!    current layout (and a settle time has passed), it drops the keys it no longer holds a
//!    replica of, each only after every node of the key's new set is found to hold all of this
//!    node's items of it.

use super::pull::plan;
use super::round::{PARALLEL, Pace, by_key};
use crate::ClusterStore;
use crate::coordinator::Target;
use futures::StreamExt;
use ironbucket_api::NodeMove;
use ironbucket_consensus::{Command, ControlState, LayoutProgress};
use ironbucket_rpc::{Kind, Message};
use ironbucket_runtime::WorkerCtx;
use ironbucket_store::{Error, ItemKey, ItemSummary, Result, TreeItem};
use ironbucket_types::{Layout, now_millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Items a source sends per page (a key's items are never split across pages).
const PAGE: usize = 1_000;
/// Items a source looks at per request before it answers (pages of a sparse range stay short).
const SCAN_BUDGET: usize = 20_000;
/// Keys checked and dropped per batch when copies are dropped.
const DROP_BATCH: usize = 256;

/// A request to a peer's mover (kind `layout.move`, protocol 6).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MoveAsk {
    /// The items this node holds at positions `node` gains in layout `version` (it is in the
    /// position's set there and missing from an older layout's), after `after`.
    Items {
        version: u64,
        node: String,
        after: Option<ItemKey>,
    },
    /// This node's items of these keys (to check that a new owner holds a key before a copy
    /// is dropped).
    Keys { keys: Vec<(String, String)> },
    /// This node's mover status.
    Status,
    /// Start now (`POST /cluster/rebalance`).
    Start,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MoveAnswer {
    Items {
        items: Vec<TreeItem>,
        next: Option<ItemKey>,
        done: bool,
    },
    Keys(Vec<TreeItem>),
    Status(Box<NodeMove>),
    Done,
}

impl Message for MoveAsk {
    const KIND: Kind = Kind::LayoutMove;
    type Reply = Result<MoveAnswer>;
}

/// Where a node's move stands, kept on disk (`layout-moves.json` in the data directory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Saved {
    /// The layout version the cursors are for.
    version: u64,
    /// Per source: the last item taken in, and whether the source is done.
    cursors: BTreeMap<String, (Option<ItemKey>, bool)>,
    /// The layout version whose surplus copies were dropped.
    dropped_for: u64,
}

/// The mover's state on this node.
#[derive(Default)]
pub(crate) struct Mover {
    pub(crate) wake: tokio::sync::Notify,
    saved: Mutex<Option<Saved>>,
    /// (layout version, when this node first saw it in force).
    seen: Mutex<Option<(u64, Instant)>>,
    /// When this node first saw every member read from the current layout only.
    all_reading_since: Mutex<Option<(u64, Instant)>>,
    status: Mutex<NodeMove>,
    /// When the current move began, and the bytes moved then.
    began: Mutex<Option<(Instant, u64)>>,
    objects: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// Whether `node` gains position `pos` in the last of `rings`: it is in that ring's set and
/// missing from an older one's.
fn gains(rings: &[Arc<ironbucket_cluster::Ring>], node: &str, pos: u64) -> bool {
    let holds = |r: &ironbucket_cluster::Ring| r.replicas_at(pos).iter().any(|i| r.nodes()[*i].name == node);
    match rings.split_last() {
        Some((cur, older)) => holds(cur) && older.iter().any(|r| !holds(r)),
        None => false,
    }
}

impl ClusterStore {
    fn saved_path(&self) -> std::path::PathBuf {
        self.local.config().data_dir.join("layout-moves.json")
    }

    fn load_saved(&self) -> Saved {
        let mut cached = self.moves.saved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cached.as_ref() {
            return s.clone();
        }
        let s = std::fs::read(self.saved_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        *cached = Some(s);
        cached.clone().unwrap_or_default()
    }

    fn store_saved(&self, s: &Saved) {
        *self.moves.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        let path = self.saved_path();
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec(s)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not record the rebalance's progress (it restarts from the beginning after a restart)");
        }
    }

    fn set_move_state(&self, state: impl Into<String>) {
        self.moves.status.lock().unwrap_or_else(|p| p.into_inner()).state = state.into();
    }

    /// Answers a peer's [`MoveAsk`].
    pub(crate) async fn serve_move(&self, ask: MoveAsk) -> Result<MoveAnswer> {
        match ask {
            MoveAsk::Items { version, node, after } => self.items_gained(version, &node, after).await,
            MoveAsk::Keys { keys } => {
                let mut out = Vec::new();
                for (bucket, key) in keys {
                    out.extend(self.local_items(&bucket, &key).await?);
                }
                Ok(MoveAnswer::Keys(out))
            }
            MoveAsk::Status => Ok(MoveAnswer::Status(Box::new(self.move_status()))),
            MoveAsk::Start => {
                self.moves.wake.notify_one();
                Ok(MoveAnswer::Done)
            }
        }
    }

    /// The rings of every layout data may be placed by, oldest first.
    fn layout_rings(&self, layouts: Vec<Layout>) -> Result<Vec<Arc<ironbucket_cluster::Ring>>> {
        layouts.into_iter().map(|l| self.ring_of(l)).collect()
    }

    /// A page of this node's items at positions `node` gains in layout `version`.
    async fn items_gained(&self, version: u64, node: &str, after: Option<ItemKey>) -> Result<MoveAnswer> {
        let (current, layouts) = self.cp.with_state(|s| (s.layout_version, s.layouts()));
        if current != version {
            return Err(Error::Unavailable(format!(
                "this node holds layout version {current}, not {version}: retry once it has taken the change in"
            )));
        }
        if self.sync.installed().is_none() {
            return Err(Error::Unavailable(
                "this node's item index is not ready yet (it is rebuilt after a start)".into(),
            ));
        }
        let rings = self.layout_rings(layouts)?;
        let scanned = self.local.tree_after(after.clone(), SCAN_BUDGET).await?;
        let done = scanned.len() < SCAN_BUDGET;
        let mut items: Vec<TreeItem> = Vec::new();
        let mut next = after;
        for item in scanned {
            let same_key = items
                .last()
                .is_some_and(|l| l.pos == item.pos && l.bucket == item.bucket && l.key == item.key);
            if items.len() >= PAGE && !same_key {
                // Stop at a key boundary: the rest comes with the next page.
                return Ok(MoveAnswer::Items {
                    items,
                    next,
                    done: false,
                });
            }
            next = Some(item.item_key());
            if gains(&rings, node, item.pos) {
                items.push(item);
            }
        }
        Ok(MoveAnswer::Items { items, next, done })
    }

    /// This node's items of one key.
    async fn local_items(&self, bucket: &str, key: &str) -> Result<Vec<TreeItem>> {
        let pos = ironbucket_types::position(bucket, key);
        let mut items = self.local.tree_range(pos, pos, usize::MAX).await?;
        items.retain(|i| i.bucket == bucket && i.key == key);
        Ok(items)
    }

    /// The worker `cluster.rebalance`: one step every second, or at once when woken.
    pub(crate) async fn rebalance_loop(me: Weak<Self>, ctx: WorkerCtx) -> std::result::Result<(), String> {
        let mut own_settings = false;
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            if !own_settings && s.ready().is_ok() {
                match s.cp.apply_own_settings().await {
                    Ok(done) => own_settings = done,
                    Err(e) => ctx.note_error(format!("could not apply this node's placement settings: {e}")),
                }
            }
            if s.ready().is_ok() && s.cp.with_state(|st| st.layout_moves) {
                ctx.busy();
                match s.move_step(&ctx).await {
                    Ok(summary) => ctx.progress(summary),
                    Err(e) => {
                        s.moves.failed.fetch_add(1, Ordering::Relaxed);
                        ctx.note_error(format!("rebalance step failed: {e}"));
                    }
                }
            } else {
                s.set_move_state("idle: placement changes do not move data until every member speaks protocol 6");
            }
            ctx.idle();
            let wake = s.clone();
            drop(s);
            tokio::select! {
                _ = wake.moves.wake.notified() => {}
                _ = ctx.sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One step of this node's part: ack, take data in, report, drop what moved away.
    async fn move_step(&self, ctx: &WorkerCtx) -> Result<String> {
        let me = self.cp.node_name().to_string();
        let st: ControlState = self.cp.with_state(|s| ControlState {
            layout_version: s.layout_version,
            layout_history: s.layout_history.clone(),
            layout_progress: s.layout_progress.clone(),
            members: s.members.clone(),
            leaving: s.leaving.clone(),
            replication: s.replication.clone(),
            ..Default::default()
        });
        let cur = st.layout_version;
        let mine = st.layout_progress.get(&me).copied().unwrap_or_default();
        let settle = self.timeout() + Duration::from_secs(1);
        // 1. Ack the layout in force once older writes have settled.
        let seen_for = {
            let mut seen = self.moves.seen.lock().unwrap_or_else(|p| p.into_inner());
            match *seen {
                Some((v, t)) if v == cur => t.elapsed(),
                _ => {
                    *seen = Some((cur, Instant::now()));
                    Duration::ZERO
                }
            }
        };
        if mine.acked < cur && seen_for >= settle {
            self.track(LayoutProgress {
                acked: cur,
                ..Default::default()
            })
            .await?;
        }
        // 2. Report the oldest layout read from.
        if mine.reading < st.read_version() {
            self.track(LayoutProgress {
                reading: st.read_version(),
                ..Default::default()
            })
            .await?;
        }
        // 3. Take in what this node gains.
        let holds_now = st.placement().holds_data(&me);
        if !st.layout_history.is_empty() && holds_now && mine.synced < cur {
            if !st.all_acked(cur) {
                let waiting: Vec<String> = st
                    .ack_required()
                    .into_iter()
                    .filter(|n| st.layout_progress.get(n).is_none_or(|p| p.acked < cur))
                    .collect();
                let msg = format!(
                    "waiting for every member to take layout version {cur} in (not yet: {})",
                    waiting.join(", ")
                );
                self.set_move_state(msg.clone());
                return Ok(msg);
            }
            if self.take_in(&st, ctx).await? {
                tracing::debug!(version = cur, "took in every source's data");
                self.track(LayoutProgress {
                    synced: cur,
                    ..Default::default()
                })
                .await?;
                let msg = format!("took in all data for layout version {cur}");
                self.set_move_state(msg.clone());
                return Ok(msg);
            }
            return Ok(self.move_status().state);
        }
        if !st.layout_history.is_empty() {
            let msg = format!(
                "layout version {cur}: waiting for the other nodes to take their data in (moving from {:?})",
                st.layout_history.iter().map(|l| l.version).collect::<Vec<_>>()
            );
            self.set_move_state(msg.clone());
            return Ok(msg);
        }
        // 4. Drop copies that moved away, once every member reads from the current layout only.
        // Back after being absent: drop everything, then hold data again.
        if st.leaving.get(&me) == Some(&ironbucket_consensus::Leave::Absent) {
            return self.return_from_absence(&st, ctx).await;
        }
        let mut saved = self.load_saved();
        if saved.dropped_for >= cur {
            self.set_move_state(format!("idle: layout version {cur}, nothing to move"));
            return Ok(format!("layout version {cur}: nothing to move"));
        }
        if !st.all_reading(cur) || !st.all_acked(cur) {
            self.set_move_state(format!(
                "layout version {cur}: waiting for every member to read from it before dropping moved copies"
            ));
            return Ok("waiting for readers".into());
        }
        let since = {
            let mut r = self.moves.all_reading_since.lock().unwrap_or_else(|p| p.into_inner());
            match *r {
                Some((v, t)) if v == cur => t.elapsed(),
                _ => {
                    *r = Some((cur, Instant::now()));
                    Duration::ZERO
                }
            }
        };
        if since < settle {
            return Ok("letting reads of the older layout finish".into());
        }
        self.set_move_state(format!("dropping copies that moved away (layout version {cur})"));
        let (dropped, kept) = self.drop_moved(&st, ctx).await?;
        if kept == 0 {
            saved.dropped_for = cur;
            self.store_saved(&saved);
        }
        let msg = format!(
            "layout version {cur}: dropped {dropped} moved key(s), {kept} kept until their new owners hold them"
        );
        self.set_move_state(if kept == 0 {
            format!("idle: layout version {cur}, nothing to move")
        } else {
            msg.clone()
        });
        Ok(msg)
    }

    /// This node is back after being marked absent: once its share has been re-created on the
    /// others (no layout left to move from) and every member reads from the current layout
    /// only, it discards every key it holds (all may be stale, see `absent.rs`) and activates
    /// itself.
    async fn return_from_absence(&self, st: &ControlState, ctx: &WorkerCtx) -> Result<String> {
        let cur = st.layout_version;
        if !st.all_reading(cur) || !st.all_acked(cur) {
            let msg = format!(
                "back after being absent: waiting for every member to read from layout version {cur} before discarding this node's copies"
            );
            self.set_move_state(msg.clone());
            return Ok(msg);
        }
        self.set_move_state("back after being absent: discarding this node's copies (they may be stale)");
        let mut after: Option<ItemKey> = None;
        let mut dropped = 0u64;
        loop {
            let scanned = self.local.tree_after(after.clone(), SCAN_BUDGET).await?;
            let last = scanned.len() < SCAN_BUDGET;
            after = scanned.last().map(|i| i.item_key()).or(after);
            let keys = group_keys(&scanned);
            for chunk in keys.chunks(DROP_BATCH) {
                let began = Instant::now();
                let batch: Vec<(String, String)> = chunk.iter().map(|(_, b, k)| (b.clone(), k.clone())).collect();
                dropped += batch.len() as u64;
                self.local.forget_keys(batch).await?;
                ctx.throttle(began.elapsed()).await;
            }
            if last {
                break;
            }
        }
        self.moves.dropped.fetch_add(dropped, Ordering::Relaxed);
        let me = self.cp.node_name().to_string();
        self.cp
            .activate(&me)
            .await
            .map_err(|e| Error::Unavailable(format!("could not activate this node after its absence: {e}")))?;
        tracing::warn!(
            keys = dropped,
            "back after being absent: discarded this node's copies and holds data again; its share moves back to it"
        );
        let msg = format!("back after being absent: discarded {dropped} key(s), active again");
        self.set_move_state(msg.clone());
        Ok(msg)
    }

    async fn track(&self, p: LayoutProgress) -> Result<()> {
        let node = self.cp.node_name().to_string();
        match self.cp.propose(Command::LayoutTrack { node, progress: p }).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Unavailable(format!("could not record layout progress: {e}"))),
        }
    }

    /// Takes in, from every node that held data in an older layout, the items this node gains
    /// in the current one. `true` once every source is done.
    async fn take_in(&self, st: &ControlState, ctx: &WorkerCtx) -> Result<bool> {
        let me = self.cp.node_name().to_string();
        let cur = st.layout_version;
        let mut saved = self.load_saved();
        if saved.version != cur {
            saved = Saved {
                version: cur,
                cursors: BTreeMap::new(),
                dropped_for: saved.dropped_for,
            };
            self.store_saved(&saved);
            *self.moves.began.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), self.moves.bytes.load(Ordering::Relaxed)));
        }
        let mut sources: Vec<String> = st
            .layout_history
            .iter()
            .flat_map(|l| l.data_nodes().into_iter().map(|n| n.name.clone()))
            .filter(|n| *n != me && !st.asked_for_nothing(n))
            .filter(|n| {
                st.members
                    .get(n)
                    .is_some_and(|m| m.state != ironbucket_consensus::MemberState::Removed)
            })
            .collect();
        sources.sort();
        sources.dedup();
        let targets: BTreeMap<String, Target> = self.all_targets().into_iter().map(|t| (t.name.clone(), t)).collect();
        {
            let mut s = self.moves.status.lock().unwrap_or_else(|p| p.into_inner());
            s.target_version = cur;
            s.sources = sources.len() as u64;
        }
        let mut complete = true;
        for src in &sources {
            let (mut after, done) = saved.cursors.get(src).cloned().unwrap_or((None, false));
            if done {
                continue;
            }
            let Some(t) = targets.get(src).cloned() else {
                complete = false;
                continue;
            };
            if self.is_down(&t) {
                self.set_move_state(format!(
                    "waiting for {src} (down) to send its data for layout version {cur}"
                ));
                complete = false;
                continue;
            }
            self.set_move_state(format!("taking in data for layout version {cur} from {src}"));
            tracing::debug!(source = %src, version = cur, cursor = ?after, "taking in data");
            loop {
                let ask = MoveAsk::Items {
                    version: cur,
                    node: me.clone(),
                    after: after.clone(),
                };
                let answer = self
                    .cp
                    .peers()
                    .call(&t.addr, &ask, Some(self.timeout()))
                    .await
                    .map_err(|e| Error::Unavailable(format!("node {src}: {e}")))
                    .and_then(|r| r);
                let (items, next, finished) = match answer {
                    Ok(MoveAnswer::Items { items, next, done }) => (items, next, done),
                    Ok(_) => {
                        return Err(Error::Internal(format!(
                            "node {src} answered a page with something else"
                        )));
                    }
                    Err(e) => {
                        tracing::debug!(source = %src, error = %e, "rebalance page not taken in; retried");
                        self.set_move_state(format!("waiting for {src}: {e}"));
                        complete = false;
                        break;
                    }
                };
                let began = Instant::now();
                tracing::debug!(source = %src, items = items.len(), finished, "rebalance page");
                self.take_page(&t, items).await?;
                after = next;
                saved.cursors.insert(src.clone(), (after.clone(), finished));
                self.store_saved(&saved);
                self.note_progress(&saved, &sources);
                // Fault injection for tests (`FAILPOINTS=rebalance-page=return`, builds
                // with the `failpoints` feature only): the move stops after a page, its cursor
                // saved, as on a node killed between two pages.
                fail::fail_point!("rebalance-page", |_| Err(Error::Unavailable(
                    "stopped by the fault point rebalance-page".into()
                )));
                ctx.throttle(began.elapsed()).await;
                if finished {
                    break;
                }
                // A newer layout came in: the move starts over for it.
                if self.cp.with_state(|s| s.layout_version) != cur {
                    return Ok(false);
                }
            }
        }
        Ok(complete && sources.iter().all(|s| saved.cursors.get(s).is_some_and(|c| c.1)))
    }

    /// Takes in one page of a source's items (keys concurrently, copies under the rate limit).
    async fn take_page(&self, source: &Target, items: Vec<TreeItem>) -> Result<()> {
        let grace = self.local.config().tombstone_grace.as_millis() as u64;
        let collectible_before = now_millis().saturating_sub(grace);
        let collectible = move |t: &ItemSummary| t.hlc.physical < collectible_before;
        let mut mine = Vec::new();
        let mut keys: Vec<(String, String)> = items.iter().map(|i| (i.bucket.clone(), i.key.clone())).collect();
        keys.dedup();
        for (b, k) in &keys {
            mine.extend(self.local_items(b, k).await?);
        }
        let mut work = Vec::new();
        for ((bucket, key), (m, t)) in by_key(&mine, &items) {
            let steps = plan(&m, &t, &collectible);
            if !steps.is_empty() {
                let size: u64 = steps
                    .iter()
                    .map(|s| if let super::pull::Step::Copy(t) = s { t.size } else { 0 })
                    .sum();
                work.push((bucket, key, steps, size));
            }
        }
        let pace = tokio::sync::Mutex::new(Pace::new(self.sync.rate()));
        let pace = &pace;
        let mut done = futures::stream::iter(work)
            .map(|(bucket, key, steps, size)| async move {
                pace.lock().await.admit(size, self.sync.rate()).await;
                self.pull_key(source, &bucket, &key, steps).await
            })
            .buffer_unordered(PARALLEL);
        while let Some(p) = done.next().await {
            self.moves.objects.fetch_add(p.copied, Ordering::Relaxed);
            self.moves.bytes.fetch_add(p.bytes, Ordering::Relaxed);
            self.moves.failed.fetch_add(p.failed, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Updates the status with how far the scan of the sources has come.
    fn note_progress(&self, saved: &Saved, sources: &[String]) {
        if sources.is_empty() {
            return;
        }
        let total: f64 = sources
            .iter()
            .map(|s| match saved.cursors.get(s) {
                Some((_, true)) => 1.0,
                Some((Some(k), false)) => k.0 as f64 / u64::MAX as f64,
                _ => 0.0,
            })
            .sum();
        let mut s = self.moves.status.lock().unwrap_or_else(|p| p.into_inner());
        s.progress = total / sources.len() as f64;
        s.sources_done = sources
            .iter()
            .filter(|x| saved.cursors.get(*x).is_some_and(|c| c.1))
            .count() as u64;
    }

    /// Drops the keys this node holds no replica of in any layout in force, each once every
    /// node of its set holds all of this node's items of it. Returns (dropped, kept).
    async fn drop_moved(&self, st: &ControlState, ctx: &WorkerCtx) -> Result<(u64, u64)> {
        let me = self.cp.node_name().to_string();
        let rings = self.layout_rings(st.layouts())?;
        let targets: BTreeMap<String, Target> = self.all_targets().into_iter().map(|t| (t.name.clone(), t)).collect();
        let grace = self.local.config().tombstone_grace.as_millis() as u64;
        let collectible_before = now_millis().saturating_sub(grace);
        let collectible = move |t: &ItemSummary| t.hlc.physical < collectible_before;
        let (mut dropped, mut kept) = (0u64, 0u64);
        let mut after: Option<ItemKey> = None;
        loop {
            let mut scanned = self.local.tree_after(after.clone(), SCAN_BUDGET).await?;
            let last = scanned.len() < SCAN_BUDGET;
            if !last && let Some(l) = scanned.last().cloned() {
                // The last key is looked at whole by the next scan (unless it alone fills one).
                let cut = scanned
                    .iter()
                    .position(|i| i.pos == l.pos && i.bucket == l.bucket && i.key == l.key)
                    .unwrap_or(0);
                if cut > 0 {
                    scanned.truncate(cut);
                }
            }
            after = scanned.last().map(|i| i.item_key()).or(after);
            let moved: Vec<TreeItem> = scanned
                .into_iter()
                .filter(|i| {
                    !rings
                        .iter()
                        .any(|r| r.replicas_at(i.pos).iter().any(|x| r.nodes()[*x].name == me))
                })
                .collect();
            for chunk in group_keys(&moved).chunks(DROP_BATCH) {
                let began = Instant::now();
                let (d, k) = self.drop_checked(chunk, &moved, &rings, &targets, &collectible).await?;
                dropped += d;
                kept += k;
                ctx.throttle(began.elapsed()).await;
            }
            if last {
                break;
            }
        }
        self.moves.dropped.fetch_add(dropped, Ordering::Relaxed);
        Ok((dropped, kept))
    }

    /// Drops the keys of `chunk` that every node of their current set holds (all of this node's
    /// items of them); the others are kept.
    async fn drop_checked(
        &self,
        chunk: &[(u64, String, String)],
        items: &[TreeItem],
        rings: &[Arc<ironbucket_cluster::Ring>],
        targets: &BTreeMap<String, Target>,
        collectible: &(dyn Fn(&ItemSummary) -> bool + Sync),
    ) -> Result<(u64, u64)> {
        let Some(ring) = rings.last() else { return Ok((0, 0)) };
        // Which owners to ask about which keys.
        let mut per_owner: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (pos, b, k) in chunk {
            for i in ring.replicas_at(*pos) {
                per_owner
                    .entry(ring.nodes()[i].name.clone())
                    .or_default()
                    .push((b.clone(), k.clone()));
            }
        }
        let mut held: BTreeMap<String, Vec<TreeItem>> = BTreeMap::new();
        for (owner, keys) in per_owner {
            let Some(t) = targets.get(&owner) else { continue };
            if self.is_down(t) {
                continue;
            }
            let r = self
                .cp
                .peers()
                .call(&t.addr, &MoveAsk::Keys { keys }, Some(self.timeout()))
                .await;
            if let Ok(Ok(MoveAnswer::Keys(items))) = r {
                held.insert(owner, items);
            }
        }
        let mut drop = Vec::new();
        let mut kept = 0;
        for (pos, b, k) in chunk {
            let mine: Vec<TreeItem> = items
                .iter()
                .filter(|i| i.pos == *pos && i.bucket == *b && i.key == *k)
                .cloned()
                .collect();
            let everywhere = ring.replicas_at(*pos).iter().all(|i| {
                let owner = &ring.nodes()[*i].name;
                let Some(theirs) = held.get(owner) else { return false };
                let theirs: Vec<TreeItem> = theirs
                    .iter()
                    .filter(|i| i.bucket == *b && i.key == *k)
                    .cloned()
                    .collect();
                // What the owner would still take in from this node: nothing.
                by_key(&theirs, &mine)
                    .into_values()
                    .all(|(t, m)| plan(&t, &m, collectible).is_empty())
            });
            if everywhere {
                drop.push((b.clone(), k.clone()));
            } else {
                kept += 1;
            }
        }
        let n = drop.len() as u64;
        if !drop.is_empty() {
            self.local.forget_keys(drop).await?;
        }
        Ok((n, kept))
    }

    /// This node's part in the move (`GET /cluster/rebalance/status`).
    pub(crate) fn move_status(&self) -> NodeMove {
        let me = self.cp.node_name().to_string();
        let mut s = self.moves.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let p = self
            .cp
            .with_state(|st| st.layout_progress.get(&me).copied().unwrap_or_default());
        s.node = me;
        s.acked = p.acked;
        s.synced = p.synced;
        s.reading = p.reading;
        s.objects_moved = self.moves.objects.load(Ordering::Relaxed);
        s.bytes_moved = self.moves.bytes.load(Ordering::Relaxed);
        s.keys_dropped = self.moves.dropped.load(Ordering::Relaxed);
        s.failures = self.moves.failed.load(Ordering::Relaxed);
        if let Some((t, b0)) = *self.moves.began.lock().unwrap_or_else(|p| p.into_inner()) {
            let secs = t.elapsed().as_secs_f64();
            if secs > 0.0 {
                s.bytes_per_sec = s.bytes_moved.saturating_sub(b0) as f64 / secs;
            }
        }
        s
    }
}

/// The distinct keys of position-ordered items, as (position, bucket, key).
fn group_keys(items: &[TreeItem]) -> Vec<(u64, String, String)> {
    let mut out: Vec<(u64, String, String)> = Vec::new();
    for i in items {
        if out
            .last()
            .is_none_or(|l| !(l.0 == i.pos && l.1 == i.bucket && l.2 == i.key))
        {
            out.push((i.pos, i.bucket.clone(), i.key.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_cluster::{NodeSpec, Ring, Strategy};

    fn ring(names: &[&str], version: u64) -> Arc<Ring> {
        Arc::new(
            Ring::new(Layout {
                version,
                nodes: names.iter().map(|n| NodeSpec::new(*n)).collect(),
                strategy: Strategy::ConsistentHash,
                factor: 2,
                vnodes: 64,
            })
            .unwrap(),
        )
    }

    #[test]
    fn a_joining_node_gains_exactly_the_positions_it_is_new_to() {
        let old = ring(&["a", "b", "c"], 1);
        let new = ring(&["a", "b", "c", "d"], 2);
        let rings = vec![old.clone(), new.clone()];
        let mut gained = 0;
        for k in 0..5_000u64 {
            let pos = ironbucket_types::position("b", &format!("k{k}"));
            let in_new = |r: &Ring, n: &str| r.replicas_at(pos).iter().any(|i| r.nodes()[*i].name == n);
            // d was in no old set: it gains every position of its new sets.
            assert_eq!(gains(&rings, "d", pos), in_new(&new, "d"));
            gained += u64::from(gains(&rings, "d", pos));
            // A node that stays in a position's set gains nothing there.
            for n in ["a", "b", "c"] {
                if in_new(&old, n) && in_new(&new, n) {
                    assert!(!gains(&rings, n, pos));
                }
            }
        }
        // About RF/N of the keys: 2/4.
        assert!((2_000..3_000).contains(&gained), "{gained}");
        // One layout alone: nothing moves.
        assert!(!gains(&[new], "d", 7));
    }

    #[test]
    fn keys_of_items_are_grouped_in_order() {
        let item = |pos, key: &str, tag: &str| TreeItem {
            pos,
            bucket: "b".into(),
            key: key.into(),
            tag: tag.into(),
            summary: ItemSummary {
                hash: 1,
                hlc: ironbucket_types::Hlc::default(),
                origin: 1,
                kind: ironbucket_store::ItemKind::Version,
                version_id: "null".into(),
                size: 1,
            },
        };
        let items = vec![
            item(1, "x", "1"),
            item(1, "x", "2"),
            item(2, "y", "1"),
            item(3, "z", "1"),
        ];
        let keys = group_keys(&items);
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0], (1, "b".into(), "x".into()));
    }
}
