//! The control plane: one Raft group (openraft, confined to this crate) that agrees on the
//! cluster's low-volume state (its id and name, members, replication settings, buckets and their
//! settings). Object data and object metadata never go through Raft.
//!
//! [`ControlPlane`] starts the Raft node, forms or joins the cluster from the seed list,
//! forwards proposals to the leader, and serves the Raft messages that peers send over
//! `ironbucket_rpc`. The state machine's apply is the pure [`ControlState::apply`].

// openraft's traits fix the (large) error types.
#![allow(clippy::result_large_err)]

pub mod locks;
mod network;
pub mod runtime;
pub mod state;
mod store;

#[cfg(test)]
mod sim;

pub use locks::{LockCmd, LockOutcome};
pub use state::{Command, ControlState, DEFAULT_VNODES, Member, MemberState, Outcome, Replication};
pub use store::Applied;

use ironbucket_meta::RaftDb;
use ironbucket_rpc::{Handler, Peers, pb};
use ironbucket_runtime::{OnFailure, Registry};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a proposer waits for each other member to confirm a change is in force.
const IN_FORCE_WAIT: Duration = Duration::from_secs(2);
/// The largest capacity weight of a member (100 is the norm): bounds the placement ring's size
/// (virtual nodes x weight / 100 tokens per member).
pub const MAX_WEIGHT: u32 = 10_000;

/// How often host names of seeds and members are resolved again.
const REDISCOVER_EVERY: Duration = Duration::from_secs(10);
/// How long a member that failed to confirm is not waited for.
const UNRESPONSIVE_FOR: Duration = Duration::from_secs(10);

/// A cluster member as Raft knows it: its name (`NODE_ID`) and RPC address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub rpc_addr: String,
    /// The member's Raft-state identity (see `ControlPlane::incarnation`); Raft messages meant
    /// for another incarnation are refused, so a node that lost its data cannot silently take
    /// its old place.
    #[serde(default)]
    pub incarnation: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.rpc_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft's types for the control plane.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
        AsyncRuntime = runtime::Runtime,
);

/// The Raft id of a node name (`NODE_ID`): FNV-1a, never 0.
pub fn raft_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No leader could commit the change in time (no quorum of voters reachable).
    #[error("cluster metadata is read-only: {0}")]
    NoQuorum(String),
    #[error("control-plane storage failed: {0}")]
    Storage(String),
    #[error("control-plane error: {0}")]
    Raft(String),
    #[error("invalid control-plane setting: {0}")]
    Config(String),
    /// A request the cluster refuses as given (unknown member, RF above the member count).
    #[error("{0}")]
    Invalid(String),
}

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub node_name: String,
    pub cluster_name: String,
    /// RPC addresses (`host:port`) of the nodes that form the cluster, this one included.
    pub seeds: Vec<String>,
    /// This node's RPC address as the others reach it; `None`: the seed that answers as us.
    pub advertise: Option<String>,
    pub role: String,
    pub zone: String,
    pub rack: String,
    pub weight: u32,
    pub replication: Replication,
    /// Where `raft.redb` lives.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    /// How long a proposal may wait for a quorum.
    pub commit_timeout: Duration,
    /// Log entries between snapshots; older entries are purged (keeping a few), and a member
    /// that falls further behind catches up by installing a snapshot.
    pub snapshot_every: u64,
}

/// A member in [`Status`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub raft_id: u64,
    pub rpc_addr: String,
    /// `voter` or `learner`.
    pub raft_role: String,
    /// `active`, `draining` or `removed` (from the control state), `joining` before it is recorded.
    pub state: String,
    pub zone: String,
    pub rack: String,
    pub weight: u32,
}

/// What `GET /cluster/status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub cluster_name: String,
    pub cluster_id: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub raft_state: String,
    pub term: u64,
    pub leader: Option<String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Index covered by this node's latest snapshot, and the highest purged log index.
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub layout_version: u64,
    pub replication: Replication,
    pub members: Vec<MemberStatus>,
    /// Cluster-wide jobs and the node that runs each.
    pub job_leaders: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinRequest {
    name: String,
    rpc_addr: String,
    #[serde(default)]
    incarnation: String,
    /// The joiner already holds Raft state (a removed or fenced member): refused, since its
    /// stale log and term must not meet the cluster's.
    #[serde(default)]
    has_state: bool,
}

/// A change of Raft membership, run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum MembershipOp {
    Remove { name: String },
}

/// A request a member forwards to the leader, with who sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Forwarded<T> {
    from: String,
    incarnation: String,
    body: T,
}

/// Changes to one member's placement attributes (`None`: unchanged).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemberPatch {
    pub role: Option<String>,
    pub zone: Option<String>,
    pub rack: Option<String>,
    pub weight: Option<u32>,
}

/// Checks replication settings against the members that can hold replicas.
pub fn validate_replication(r: &Replication, members: usize) -> Result<(), Error> {
    if r.factor == 0 || r.factor as usize > members {
        return Err(Error::Invalid(format!(
            "replication factor {} is not possible with {members} active member(s)",
            r.factor
        )));
    }
    if !["SimpleStrategy", "ConsistentHash", "RackAware", "ZoneAware"].contains(&r.strategy.as_str()) {
        return Err(Error::Invalid(format!(
            "replication strategy must be SimpleStrategy, ConsistentHash, RackAware or ZoneAware, not {:?}",
            r.strategy
        )));
    }
    if r.vnodes == 0 || r.vnodes > 65_536 {
        return Err(Error::Invalid(format!(
            "virtual nodes per node must be between 1 and 65536, not {}",
            r.vnodes
        )));
    }
    for l in [&r.read_consistency, &r.write_consistency] {
        if !["ONE", "QUORUM", "ALL"].contains(&l.as_str()) {
            return Err(Error::Invalid(format!(
                "consistency must be ONE, QUORUM or ALL, not {l:?}"
            )));
        }
    }
    Ok(())
}

/// The running control plane of this node.
pub struct ControlPlane {
    /// Replaced only by a forced recovery.
    raft: std::sync::RwLock<Raft<TypeConfig>>,
    raft_config: Arc<openraft::Config>,
    db: RaftDb,
    sm: store::StateMachine,
    peers: Peers,
    cfg: ControlConfig,
    id: u64,
    /// Made when this node's Raft state was created; a wiped node (or a forced recovery) gets a
    /// new one.
    incarnation: std::sync::RwLock<String>,
    /// Members that recently failed to confirm a change, and when: not waited for again for a
    /// while, so a dead or cut-off member does not slow every change down.
    unresponsive: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Highest applied index whose effects the node has put in force locally (see
    /// [`ControlPlane::set_materialized`]); `None` until something materializes state.
    materialized: tokio::sync::watch::Sender<Option<u64>>,
    /// Where this node's background loops run (and are restarted if they fail).
    workers: Registry,
}

fn job_leaders_of(s: &ControlState) -> BTreeMap<String, String> {
    s.locks
        .locks
        .iter()
        .filter_map(|(k, l)| Some((k.strip_prefix("job:")?.to_string(), l.holders.first()?.holder.clone())))
        .collect()
}

fn raft_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Raft(e.to_string())
}

impl ControlPlane {
    /// [`ControlPlane::start_in`] with a worker registry of its own (tests).
    pub async fn start(cfg: ControlConfig, peers: Peers) -> Result<Arc<Self>, Error> {
        Self::start_in(cfg, peers, &Registry::new()).await
    }

    /// Opens the Raft state in `cfg.data_dir`, starts the Raft node and the background workers
    /// (in `workers`) that form or join the cluster and keep the member list current.
    pub async fn start_in(cfg: ControlConfig, peers: Peers, workers: &Registry) -> Result<Arc<Self>, Error> {
        if cfg.seeds.is_empty() {
            return Err(Error::Config("CLUSTER_SEEDS names no node".into()));
        }
        let db = RaftDb::open(&cfg.data_dir.join("raft.redb")).map_err(|e| Error::Storage(e.to_string()))?;
        let incarnation = match db.get("incarnation").map_err(|e| Error::Storage(e.to_string()))? {
            Some(b) => String::from_utf8_lossy(&b).into_owned(),
            None => {
                let fresh = uuid::Uuid::new_v4().to_string();
                db.put(&[("incarnation", fresh.as_bytes())])
                    .map_err(|e| Error::Storage(e.to_string()))?;
                fresh
            }
        };
        let log = store::LogStore::new(db.clone());
        let sm = store::StateMachine::open(db.clone()).map_err(|e| Error::Storage(e.to_string()))?;
        let hb = cfg.heartbeat.as_millis() as u64;
        let el = cfg.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: cfg.cluster_name.clone(),
            heartbeat_interval: hb.max(50),
            election_timeout_min: el.max(hb * 3),
            election_timeout_max: el.max(hb * 3) * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every.max(2)),
            max_in_snapshot_log_to_keep: cfg.snapshot_every.max(2) / 5,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
        let config = Arc::new(config);
        let id = raft_id(&cfg.node_name);
        let raft = Raft::new(
            id,
            config.clone(),
            network::Network { peers: peers.clone() },
            log,
            sm.clone(),
        )
        .await
        .map_err(raft_err)?;
        let cp = Arc::new(Self {
            raft: std::sync::RwLock::new(raft),
            raft_config: config,
            db,
            sm,
            peers,
            cfg,
            id,
            incarnation: std::sync::RwLock::new(incarnation),
            unresponsive: Default::default(),
            materialized: tokio::sync::watch::channel(None).0,
            workers: workers.clone(),
        });
        cp.run_loop("raft.bootstrap", Self::bootstrap);
        cp.run_loop("raft.leader-duties", Self::leader_duties);
        cp.run_loop("raft.rediscover", Self::rediscover);
        Ok(cp)
    }

    /// Runs `body` as a supervised worker: restarted if it panics, finished when it returns
    /// (the control plane is gone, or its job is done).
    fn run_loop<Fut>(self: &Arc<Self>, name: &str, body: fn(std::sync::Weak<Self>) -> Fut)
    where
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let me = Arc::downgrade(self);
        self.workers.spawn(name, OnFailure::Restart, move |_| {
            let run = body(me.clone());
            async move {
                run.await;
                Ok(())
            }
        });
    }

    /// The pooled connections to the other nodes.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The RPC handler to serve to peers.
    pub fn handler(self: &Arc<Self>) -> Arc<dyn Handler> {
        Arc::new(RpcHandler(self.clone()))
    }

    fn raft(&self) -> Raft<TypeConfig> {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn incarnation(&self) -> String {
        self.incarnation.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes this node the only voter of the cluster, on purpose, when the others are lost (the
    /// lone survivor of a 2-node cluster). Refused while a quorum can still commit. The control
    /// state is kept; the lost members are marked removed, and this node takes a new incarnation
    /// so that they cannot act on their stale view when they return: their Raft messages to it
    /// are refused, and alone they never have a majority. To bring one back, wipe its data
    /// directory and let it join.
    pub async fn force_recover(&self, node: &str) -> Result<(), Error> {
        if node != self.cfg.node_name {
            return Err(Error::Invalid(format!(
                "this is node {}; run force-recover against the admin API of {node}, the node that is to stay",
                self.cfg.node_name
            )));
        }
        let raft = self.raft();
        let probe = Command::SetReplication {
            replication: self.with_state(|s| s.replication.clone()),
        };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), self.propose_inner(probe, true)).await {
            return Err(Error::Invalid(
                "the cluster still has a quorum: remove lost members with `cluster remove` instead of forcing".into(),
            ));
        }
        tracing::warn!(node = %node, "FORCED RECOVERY: this node becomes the only voter; the other members are fenced out");
        let _ = raft.shutdown().await;
        let fresh = uuid::Uuid::new_v4().to_string();
        // Keep the control state; restart the log with this node alone.
        let mut applied = self.sm.shared.read().unwrap_or_else(|p| p.into_inner()).clone();
        for m in applied.state.members.values_mut() {
            if m.name != node {
                m.state = MemberState::Removed;
            }
        }
        applied.state.layout_version += 1;
        applied.last_applied = None;
        applied.membership = Default::default();
        let sm_bytes = serde_json::to_vec(&applied).map_err(raft_err)?;
        let db = self.db.clone();
        let fresh2 = fresh.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ironbucket_meta::Error> {
            db.truncate_from(0)?;
            db.reset(&["vote", "committed", "last_purged", "snapshot"])?;
            db.put(&[("sm", &sm_bytes), ("incarnation", fresh2.as_bytes())])
        })
        .await
        .map_err(raft_err)?
        .map_err(|e| Error::Storage(e.to_string()))?;
        *self.sm.shared.write().unwrap_or_else(|p| p.into_inner()) = applied;
        *self.incarnation.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        let new = Raft::new(
            self.id,
            self.raft_config.clone(),
            network::Network {
                peers: self.peers.clone(),
            },
            store::LogStore::new(self.db.clone()),
            self.sm.clone(),
        )
        .await
        .map_err(raft_err)?;
        let me = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&self.id)
            .cloned()
            .unwrap_or_default();
        let mut members = BTreeMap::new();
        members.insert(
            self.id,
            NodeInfo {
                name: node.to_string(),
                rpc_addr: me.rpc_addr,
                incarnation: fresh,
            },
        );
        new.initialize(members).await.map_err(raft_err)?;
        *self.raft.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
        new.wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "forced recovery")
            .await
            .map_err(raft_err)?;
        Ok(())
    }

    /// Only current members (in their current incarnation) may have the leader act for them:
    /// a removed or fenced node acting on a stale view is refused.
    fn check_member(&self, name: &str, incarnation: &str) -> Result<(), String> {
        let known = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&raft_id(name))
            .map(|n| n.incarnation.clone());
        match known {
            Some(i) if i == incarnation || i.is_empty() => Ok(()),
            _ => {
                tracing::warn!(node = %name, "refused a request forwarded by a node that is not a current member");
                Err(format!("node {name} is not a current member of this cluster"))
            }
        }
    }

    /// This node's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn node_name(&self) -> &str {
        &self.cfg.node_name
    }

    /// The Raft leader this node knows of now (`None` while an election runs, or when this node
    /// is cut off from a majority long enough to have started one).
    pub fn leader(&self) -> Option<String> {
        let m = self.raft().metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config.membership().get_node(&id).map(|n| n.name.clone())
    }

    /// A copy of the applied control state.
    pub fn state(&self) -> ControlState {
        self.sm.shared.read().unwrap_or_else(|p| p.into_inner()).state.clone()
    }

    /// Reads the applied control state without copying it.
    pub fn with_state<R>(&self, f: impl FnOnce(&ControlState) -> R) -> R {
        f(&self.sm.shared.read().unwrap_or_else(|p| p.into_inner()).state)
    }

    fn initialized(&self) -> bool {
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some()
    }

    pub fn status(&self) -> Status {
        let m = self.raft().metrics().borrow().clone();
        // Only the small parts: the state also holds every bucket and lock.
        let (cluster_id, layout_version, replication, members, job_leaders) = {
            let a = self.sm.shared.read().unwrap_or_else(|p| p.into_inner());
            let st = &a.state;
            (
                st.cluster_id.clone(),
                st.layout_version,
                st.replication.clone(),
                st.members.clone(),
                job_leaders_of(st),
            )
        };
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let name_of = |id: u64| membership.get_node(&id).map(|n| n.name.clone());
        let mut list = Vec::new();
        for (id, node) in membership.nodes() {
            let member = members.get(&node.name);
            list.push(MemberStatus {
                name: node.name.clone(),
                raft_id: *id,
                rpc_addr: node.rpc_addr.clone(),
                raft_role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                state: member.map_or("joining".to_string(), |m| {
                    serde_json::to_value(m.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                }),
                zone: member.map(|m| m.zone.clone()).unwrap_or_default(),
                rack: member.map(|m| m.rack.clone()).unwrap_or_default(),
                weight: member.map_or(100, |m| m.weight),
            });
        }
        Status {
            node: self.cfg.node_name.clone(),
            cluster_name: self.cfg.cluster_name.clone(),
            cluster_id,
            raft_state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: m.current_term,
            leader: m.current_leader.and_then(name_of),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            layout_version,
            replication,
            members: list,
            job_leaders,
        }
    }

    /// Commits `cmd` through Raft (forwarding to the leader when this node is not) and returns
    /// once this node and every reachable member have applied it and put it in force, so a
    /// request to any of them sees the change.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, Error> {
        let (outcome, index) = tokio::time::timeout(self.cfg.commit_timeout, self.propose_inner(cmd, true))
            .await
            .map_err(|_| {
                Error::NoQuorum(format!(
                    "the change was not committed within {} ms: no quorum of voters is reachable",
                    self.cfg.commit_timeout.as_millis()
                ))
            })??;
        self.wait_in_force(index, self.cfg.commit_timeout).await;
        self.broadcast_in_force(index).await;
        Ok(outcome)
    }

    /// Index of the last applied entry; changes after every apply.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sm.watch()
    }

    /// Records that everything up to `index` is in force on this node (called by whoever
    /// materializes the control state, such as the local bucket table).
    pub fn set_materialized(&self, index: u64) {
        self.materialized
            .send_modify(|m| *m = Some(m.map_or(index, |x| x.max(index))));
    }

    /// Waits (at most `timeout`) until `index` is applied and, when something materializes
    /// the state, materialized.
    async fn wait_in_force(&self, index: u64, timeout: Duration) -> bool {
        let applied = async {
            let mut w = self.sm.watch();
            let _ = w.wait_for(|a| *a >= index).await;
            let mut m = self.materialized.subscribe();
            if m.borrow().is_some() {
                let _ = m.wait_for(|x| x.is_some_and(|x| x >= index)).await;
            }
        };
        tokio::time::timeout(timeout, applied).await.is_ok()
    }

    /// Asks every other member to confirm that `index` is in force there; members that do not
    /// answer within a short time (down, partitioned) catch up on their own.
    async fn broadcast_in_force(&self, index: u64) {
        let others: Vec<NodeInfo> = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, n)| n.clone())
            .collect();
        let skip: BTreeSet<String> = {
            let mut u = self.unresponsive.lock().unwrap_or_else(|p| p.into_inner());
            u.retain(|_, since| since.elapsed() < UNRESPONSIVE_FOR);
            u.keys().cloned().collect()
        };
        let others: Vec<NodeInfo> = others.into_iter().filter(|n| !skip.contains(&n.name)).collect();
        let calls = others.iter().map(|n| {
            self.peers.control(
                &n.rpc_addr,
                "in_force",
                index.to_string().into_bytes(),
                Some(IN_FORCE_WAIT),
            )
        });
        for (n, r) in others.iter().zip(futures::future::join_all(calls).await) {
            let confirmed = match r {
                Ok(raw) => serde_json::from_slice::<bool>(&raw).unwrap_or(false),
                Err(e) => {
                    tracing::debug!(node = %n.name, error = %e, "member did not confirm a control change");
                    false
                }
            };
            if !confirmed {
                self.unresponsive
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(n.name.clone(), std::time::Instant::now());
            }
        }
    }

    async fn propose_inner(&self, cmd: Command, may_forward: bool) -> Result<(Outcome, u64), Error> {
        // Lease times come from the clock of the node that appends the entry: the leader (a
        // follower's attempt fails below and the leader stamps the forwarded command again).
        let mut stamped = cmd.clone();
        if let Command::Lock { cmd: lock } = &mut stamped {
            lock.set_now(ironbucket_types::now_millis());
        }
        match self.raft().client_write(stamped).await {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if may_forward => {
                let Some(leader) = f.leader_node else {
                    return Err(Error::NoQuorum("no leader is elected".into()));
                };
                let payload = serde_json::to_vec(&Forwarded {
                    from: self.cfg.node_name.clone(),
                    incarnation: self.incarnation(),
                    body: cmd,
                })
                .map_err(raft_err)?;
                let raw = self
                    .peers
                    .control(&leader.rpc_addr, "propose", payload, Some(self.cfg.commit_timeout))
                    .await
                    .map_err(|e| {
                        Error::NoQuorum(format!("the leader {} did not commit the change: {e}", leader.name))
                    })?;
                serde_json::from_slice::<Result<(Outcome, u64), String>>(&raw)
                    .map_err(raft_err)?
                    .map_err(Error::NoQuorum)
            }
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Changes the replication factor, strategy or default consistency for new writes; every
    /// node applies it without a restart.
    pub async fn set_replication(&self, r: Replication) -> Result<(), Error> {
        // Members that can hold replicas: Raft members not removed or draining.
        let nodes: Vec<String> = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.name.clone())
            .collect();
        let active = self.with_state(|s| {
            nodes
                .iter()
                .filter(|n| s.members.get(*n).is_none_or(|m| m.state == MemberState::Active))
                .count()
        });
        validate_replication(&r, active)?;
        self.propose(Command::SetReplication { replication: r })
            .await
            .map(|_| ())
    }

    /// Changes a member's role, zone, rack or weight.
    pub async fn update_member(&self, name: &str, patch: MemberPatch) -> Result<(), Error> {
        let Some(mut m) = self.with_state(|s| s.members.get(name).cloned()) else {
            return Err(Error::Invalid(format!("no member named {name}")));
        };
        if let Some(r) = patch.role {
            if r != "primary" && r != "secondary" {
                return Err(Error::Invalid(format!("role must be primary or secondary, not {r:?}")));
            }
            m.role = r;
        }
        if let Some(z) = patch.zone {
            m.zone = z;
        }
        if let Some(r) = patch.rack {
            m.rack = r;
        }
        if let Some(w) = patch.weight {
            if !(1..=MAX_WEIGHT).contains(&w) {
                return Err(Error::Invalid(format!(
                    "weight must be between 1 and {MAX_WEIGHT}, not {w}"
                )));
            }
            m.weight = w;
        }
        self.propose(Command::UpsertMember { member: m }).await.map(|_| ())
    }

    /// Marks a member as draining (decommission): it stays a voter until it is removed.
    pub async fn decommission(&self, name: &str) -> Result<(), Error> {
        match self
            .propose(Command::SetMemberState {
                name: name.to_string(),
                state: MemberState::Draining,
            })
            .await?
        {
            Outcome::NoSuchMember { name } => Err(Error::Invalid(format!("no member named {name}"))),
            _ => Ok(()),
        }
    }

    /// Removes a member from the Raft group and marks it removed (graceful leave, or the end of
    /// a decommission).
    pub async fn remove_member(&self, name: &str) -> Result<(), Error> {
        if !self.with_state(|s| s.members.contains_key(name)) {
            return Err(Error::Invalid(format!("no member named {name}")));
        }
        self.on_leader(MembershipOp::Remove { name: name.to_string() }).await?;
        self.propose(Command::SetMemberState {
            name: name.to_string(),
            state: MemberState::Removed,
        })
        .await
        .map(|_| ())
    }

    /// Lets a wiped node that reuses `name` take that member's place on its next join.
    pub async fn allow_replace(&self, name: &str) -> Result<(), Error> {
        match self.propose(Command::AllowReplace { name: name.to_string() }).await? {
            Outcome::NoSuchMember { name } => Err(Error::Invalid(format!("no member named {name}"))),
            _ => Ok(()),
        }
    }

    async fn on_leader(&self, op: MembershipOp) -> Result<(), Error> {
        let payload = serde_json::to_vec(&Forwarded {
            from: self.cfg.node_name.clone(),
            incarnation: self.incarnation(),
            body: op.clone(),
        })
        .map_err(raft_err)?;
        let m = self.raft().metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return self.membership_op(op).await.map_err(Error::Invalid);
        }
        let leader = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
            .ok_or_else(|| Error::NoQuorum("no leader is elected".into()))?;
        let raw = self
            .peers
            .control(&leader.rpc_addr, "membership", payload, Some(self.cfg.commit_timeout))
            .await
            .map_err(|e| Error::NoQuorum(format!("the leader {} did not answer: {e}", leader.name)))?;
        serde_json::from_slice::<Result<(), String>>(&raw)
            .map_err(raft_err)?
            .map_err(Error::Invalid)
    }

    async fn membership_op(&self, op: MembershipOp) -> Result<(), String> {
        match op {
            MembershipOp::Remove { name } => {
                let id = raft_id(&name);
                let membership = self.raft().metrics().borrow().membership_config.membership().clone();
                let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
                if voters.remove(&id) {
                    if voters.is_empty() {
                        return Err("the last voter cannot be removed".into());
                    }
                    self.raft()
                        .change_membership(voters, false)
                        .await
                        .map_err(|e| format!("remove {name}: {e}"))?;
                } else if membership.get_node(&id).is_some() {
                    // A learner: drop it from the node list.
                    self.raft()
                        .change_membership(openraft::ChangeMembers::RemoveNodes([id].into()), false)
                        .await
                        .map_err(|e| format!("remove {name}: {e}"))?;
                }
                tracing::info!(node = %name, "member removed from the cluster");
                Ok(())
            }
        }
    }

    /// Runs a lock, semaphore or barrier operation through Raft. `now` in the command is the
    /// caller's clock (milliseconds since the epoch); every node applies the same result.
    pub async fn lock(&self, cmd: LockCmd) -> Result<LockOutcome, Error> {
        match self.propose(Command::Lock { cmd }).await? {
            Outcome::Lock { outcome } => Ok(outcome),
            other => Err(Error::Raft(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Takes part in electing the one node that runs the cluster-wide job `name`: holds (and
    /// renews) the lease `job:<name>` while it can, and reports whether it leads now. When the
    /// holder dies, another node takes the lease after `ttl`.
    pub fn elect_job_leader(self: &Arc<Self>, name: &str, ttl: Duration) -> Arc<std::sync::atomic::AtomicBool> {
        use std::sync::atomic::AtomicBool;
        let leading = Arc::new(AtomicBool::new(false));
        let (me, flag, lock) = (Arc::downgrade(self), leading.clone(), format!("job:{name}"));
        self.workers
            .spawn(format!("job-leader.{name}"), OnFailure::Restart, move |_| {
                Self::hold_job_lease(me.clone(), flag.clone(), lock.clone(), ttl)
            });
        leading
    }

    /// Holds and renews the lease `lock` while it can; `flag` says whether this node holds it.
    async fn hold_job_lease(
        me: std::sync::Weak<Self>,
        flag: Arc<std::sync::atomic::AtomicBool>,
        lock: String,
        ttl: Duration,
    ) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        {
            flag.store(false, Ordering::SeqCst);
            let ttl_ms = ttl.as_millis() as u64;
            let mut token = None;
            loop {
                let Some(cp) = me.upgrade() else { return Ok(()) };
                let holder = cp.cfg.node_name.clone();
                let now = ironbucket_types::now_millis();
                // Someone else holds a live lease: nothing to try this round.
                let taken = cp.with_state(|s| {
                    s.locks
                        .locks
                        .get(&lock)
                        .and_then(|l| l.holders.first())
                        .is_some_and(|h| h.holder != holder && h.expires_at > now)
                });
                if token.is_none() && taken {
                    drop(cp);
                    tokio::time::sleep(ttl / 3).await;
                    continue;
                }
                let cmd = match token {
                    Some(t) => LockCmd::Renew {
                        name: lock.clone(),
                        holder,
                        token: t,
                        ttl_ms,
                        now,
                    },
                    None => LockCmd::Acquire {
                        name: lock.clone(),
                        holder,
                        ttl_ms,
                        permits: 1,
                        wait: false,
                        now,
                    },
                };
                token = match cp.lock(cmd).await {
                    Ok(LockOutcome::Granted { token, .. }) => Some(token),
                    Ok(LockOutcome::Renewed { .. }) => token,
                    // Lost or never had it; or no quorum: stop acting as the leader.
                    _ => None,
                };
                let now_leading = token.is_some();
                if flag.swap(now_leading, Ordering::SeqCst) != now_leading {
                    tracing::info!(job = %lock, leading = now_leading, "job leadership changed");
                }
                drop(cp);
                tokio::time::sleep(ttl / 3).await;
            }
        }
    }

    /// Which node holds each job lease (`job:<name>`), from the applied state.
    pub fn job_leaders(&self) -> BTreeMap<String, String> {
        self.with_state(job_leaders_of)
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        let _ = self.raft().shutdown().await;
    }

    /// Forms the cluster on first start, or joins an existing one. Static bootstrap: when every
    /// seed answers and none belongs to a cluster yet, the node with the smallest name
    /// initializes the cluster with all of them as voters; the others wait for it. Exactly one
    /// cluster forms even when all nodes start at once.
    async fn bootstrap(me: std::sync::Weak<Self>) {
        loop {
            let Some(cp) = me.upgrade() else { return };
            if cp.initialized() || cp.raft().is_initialized().await.unwrap_or(false) {
                return;
            }
            if let Err(e) = cp.bootstrap_round().await {
                tracing::info!(error = %e, "waiting to form or join the cluster");
            }
            drop(cp);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn bootstrap_round(&self) -> Result<(), String> {
        let me = &self.cfg.node_name;
        let mut answered: BTreeMap<String, String> = BTreeMap::new();
        let mut incarnations: BTreeMap<String, String> = BTreeMap::new();
        let mut existing = None;
        for seed in &self.cfg.seeds {
            match self.peers.ping(seed, Some(Duration::from_secs(2))).await {
                Ok(r) => {
                    if !r.cluster_id.is_empty() && &r.node_id != me {
                        existing = Some(seed.clone());
                    }
                    incarnations.insert(r.node_id.clone(), r.incarnation.clone());
                    answered.insert(r.node_id, seed.clone());
                }
                Err(e) => tracing::debug!(%seed, error = %e, "seed did not answer"),
            }
        }
        let my_addr = self.cfg.advertise.clone().or_else(|| answered.get(me).cloned());
        if let Some(addr) = existing {
            let rpc_addr = my_addr.ok_or("this node's RPC address is unknown: set NODE_RPC_ADDRESS")?;
            let req = serde_json::to_vec(&JoinRequest {
                name: me.clone(),
                rpc_addr,
                incarnation: self.incarnation(),
                has_state: self.raft().is_initialized().await.unwrap_or(false),
            })
            .map_err(|e| e.to_string())?;
            let raw = self
                .peers
                .control(&addr, "join", req, Some(Duration::from_secs(60)))
                .await
                .map_err(|e| format!("join through {addr} failed: {e}"))?;
            return serde_json::from_slice::<Result<(), String>>(&raw).map_err(|e| e.to_string())?;
        }
        if !answered.contains_key(me) && self.cfg.advertise.is_some() {
            // This node is not among the seeds: it can only join.
            return Err("no seed belongs to a cluster yet".into());
        }
        let all = self.cfg.seeds.iter().all(|s| answered.values().any(|a| a == s));
        if !all {
            return Err(format!(
                "{} of {} seeds answer; the cluster forms when all do",
                answered.len(),
                self.cfg.seeds.len()
            ));
        }
        if answered.keys().next() != Some(me) {
            return Err("waiting for the first node to initialize the cluster".into());
        }
        let members: BTreeMap<u64, NodeInfo> = answered
            .iter()
            .map(|(name, addr)| {
                (
                    raft_id(name),
                    NodeInfo {
                        name: name.clone(),
                        rpc_addr: if name == me {
                            my_addr.clone().unwrap_or_else(|| addr.clone())
                        } else {
                            addr.clone()
                        },
                        incarnation: incarnations.get(name).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect();
        tracing::info!(members = ?members.values().map(|n| n.name.as_str()).collect::<Vec<_>>(), "initializing the cluster");
        match self.raft().initialize(members).await {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("initialize: {e}")),
        }
    }

    /// Resolves the seeds' and members' host names again every [`REDISCOVER_EVERY`]: when a name
    /// now points elsewhere (a container restarted with a new address), the pooled connections
    /// to it are dropped so the next call connects to the new address at once (a broken
    /// connection also resolves the name again when it reconnects).
    async fn rediscover(me: std::sync::Weak<Self>) {
        let mut known: BTreeMap<String, BTreeSet<std::net::SocketAddr>> = BTreeMap::new();
        loop {
            tokio::time::sleep(REDISCOVER_EVERY).await;
            let Some(cp) = me.upgrade() else { return };
            let mut addrs: BTreeSet<String> = cp.cfg.seeds.iter().cloned().collect();
            addrs.extend(
                cp.raft()
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .nodes()
                    .map(|(_, n)| n.rpc_addr.clone()),
            );
            let peers = cp.peers.clone();
            drop(cp);
            for addr in addrs {
                // Literal IP addresses never move.
                if addr.parse::<std::net::SocketAddr>().is_ok() {
                    continue;
                }
                let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(5), peers.resolve(&addr)).await else {
                    continue;
                };
                let found: BTreeSet<std::net::SocketAddr> = found.into_iter().collect();
                if found.is_empty() {
                    continue;
                }
                if let Some(before) = known.get(&addr)
                    && *before != found
                {
                    tracing::info!(%addr, old = ?before, new = ?found, "peer address changed; reconnecting");
                    peers.forget(&addr);
                }
                known.insert(addr, found);
            }
        }
    }

    /// While leader: names the cluster once and records every Raft member in the control state.
    async fn leader_duties(me: std::sync::Weak<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let Some(cp) = me.upgrade() else { return };
            if cp.raft().metrics().borrow().state != ServerState::Leader {
                continue;
            }
            // Read only what the duties need: cloning the whole state every round would cost in
            // proportion to the number of buckets and locks.
            let now = ironbucket_types::now_millis();
            let (lease_expired, uninitialized, members) = cp.with_state(|s| {
                let expired = s
                    .locks
                    .locks
                    .values()
                    .any(|l| l.holders.iter().any(|h| h.expires_at <= now));
                (expired, s.cluster_id.is_empty(), s.members.clone())
            });
            // Leases expire and waiters move up even when nobody else touches the lock.
            if lease_expired {
                let tick = Command::Lock {
                    cmd: LockCmd::Tick {
                        now: ironbucket_types::now_millis(),
                    },
                };
                if let Err(e) = cp.propose_inner(tick, false).await {
                    tracing::debug!(error = %e, "lock tick not committed");
                }
            }
            if uninitialized {
                let cmd = Command::Init {
                    cluster_id: uuid::Uuid::new_v4().to_string(),
                    name: cp.cfg.cluster_name.clone(),
                    replication: cp.cfg.replication.clone(),
                };
                if let Err(e) = cp.propose_inner(cmd, false).await {
                    tracing::debug!(error = %e, "cluster init not committed yet");
                }
                continue;
            }
            let nodes: Vec<(u64, NodeInfo)> = cp
                .raft()
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            for (id, node) in nodes {
                let known = members.get(&node.name);
                if known.is_some_and(|m| m.rpc_addr == node.rpc_addr && m.raft_id == id) {
                    continue;
                }
                let member = Member {
                    name: node.name.clone(),
                    raft_id: id,
                    rpc_addr: node.rpc_addr.clone(),
                    role: known.map_or_else(|| "primary".into(), |m| m.role.clone()),
                    zone: known.map(|m| m.zone.clone()).unwrap_or_default(),
                    rack: known.map(|m| m.rack.clone()).unwrap_or_default(),
                    weight: known.map_or(100, |m| m.weight),
                    state: known.map_or(MemberState::Active, |m| m.state),
                };
                if let Err(e) = cp.propose_inner(Command::UpsertMember { member }, false).await {
                    tracing::debug!(error = %e, "member update not committed yet");
                }
            }
        }
    }

    /// On the leader: adds a node as a learner, waits for it to catch up, then makes it a voter.
    async fn join(&self, req: JoinRequest) -> Result<(), String> {
        let m = self.raft().metrics().borrow().clone();
        if m.state != ServerState::Leader {
            let leader = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
                .ok_or("no leader is elected")?;
            let raw = self
                .peers
                .control(
                    &leader.rpc_addr,
                    "join",
                    serde_json::to_vec(&req).map_err(|e| e.to_string())?,
                    Some(Duration::from_secs(60)),
                )
                .await
                .map_err(|e| e.to_string())?;
            return serde_json::from_slice::<Result<(), String>>(&raw).map_err(|e| e.to_string())?;
        }
        if req.has_state {
            tracing::warn!(node = %req.name, "refused a join from a node that holds Raft state from an earlier membership");
            return Err(format!(
                "node {} still holds Raft state from an earlier membership (it was removed or fenced out); wipe its data directory to let it join again",
                req.name
            ));
        }
        let id = raft_id(&req.name);
        let mut membership = m.membership_config.membership().clone();
        if membership
            .get_node(&id)
            .is_some_and(|n| n.incarnation != req.incarnation || n.incarnation.is_empty())
        {
            // A member with this name but another Raft state: the node lost its data. It may
            // take the old place only once an operator confirmed the replacement.
            if !self.with_state(|s| s.replacements.contains(&req.name)) {
                tracing::warn!(node = %req.name, addr = %req.rpc_addr, "refused a wiped node reusing a member's id");
                return Err(format!(
                    "node {} is already a member of this cluster; a node that lost its data may take its place only after an operator confirms it with POST /cluster/nodes/{}/replace (ironbucket-cli cluster replace {})",
                    req.name, req.name, req.name
                ));
            }
            tracing::warn!(node = %req.name, "replacing a member by a wiped node, as confirmed");
            self.membership_op(MembershipOp::Remove { name: req.name.clone() })
                .await?;
            membership = self.raft().metrics().borrow().membership_config.membership().clone();
            let _ = self
                .propose_inner(Command::ReplaceDone { name: req.name.clone() }, false)
                .await;
        }
        let node = NodeInfo {
            name: req.name.clone(),
            rpc_addr: req.rpc_addr.clone(),
            incarnation: req.incarnation.clone(),
        };
        self.raft()
            .add_learner(id, node, true)
            .await
            .map_err(|e| format!("add learner {}: {e}", req.name))?;
        let mut voters: BTreeSet<u64> = membership.voter_ids().collect();
        if voters.insert(id) {
            self.raft()
                .change_membership(voters, false)
                .await
                .map_err(|e| format!("promote {}: {e}", req.name))?;
        }
        tracing::info!(node = %req.name, "node joined the cluster as a voter");
        Ok(())
    }
}

struct RpcHandler(Arc<ControlPlane>);

fn reply<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("bad message: {e}"))
}

#[async_trait::async_trait]
impl Handler for RpcHandler {
    async fn ping(&self, _from: &str) -> pb::PingReply {
        let cp = &self.0;
        let cluster_id = if cp.initialized() {
            let id = cp.with_state(|s| s.cluster_id.clone());
            if id.is_empty() { "initializing".into() } else { id }
        } else {
            String::new()
        };
        pb::PingReply {
            node_id: cp.cfg.node_name.clone(),
            cluster_name: cp.cfg.cluster_name.clone(),
            cluster_id,
            advertise: cp.cfg.advertise.clone().unwrap_or_default(),
            incarnation: cp.incarnation(),
        }
    }

    async fn raft(&self, kind: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let raft = self.0.raft();
        let (kind, meant_for) = kind.split_once(':').unwrap_or((kind, ""));
        if !meant_for.is_empty() && meant_for != self.0.incarnation() {
            tracing::warn!(
                expected = %meant_for,
                mine = %self.0.incarnation(),
                "refused a Raft message meant for another incarnation of this node (its data was lost or replaced)"
            );
            return Err("this node's Raft state is not the one the cluster knows; it must be replaced (POST /cluster/nodes/{id}/replace)".into());
        }
        match kind {
            "append" => reply(&raft.append_entries(decode(&payload)?).await),
            "vote" => reply(&raft.vote(decode(&payload)?).await),
            "snapshot" => reply(&raft.install_snapshot(decode(&payload)?).await),
            other => Err(format!("unknown raft message {other:?}")),
        }
    }

    async fn control(&self, kind: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        match kind {
            "propose" => {
                let f: Forwarded<Command> = decode(&payload)?;
                self.0.check_member(&f.from, &f.incarnation)?;
                let r = self.0.propose_inner(f.body, false).await.map_err(|e| e.to_string());
                reply(&r)
            }
            "join" => {
                let req: JoinRequest = decode(&payload)?;
                reply(&self.0.join(req).await)
            }
            "membership" => {
                let f: Forwarded<MembershipOp> = decode(&payload)?;
                self.0.check_member(&f.from, &f.incarnation)?;
                reply(&self.0.membership_op(f.body).await)
            }
            "in_force" => {
                let index: u64 = String::from_utf8_lossy(&payload)
                    .parse()
                    .map_err(|_| "bad index".to_string())?;
                reply(&self.0.wait_in_force(index, IN_FORCE_WAIT).await)
            }
            other => Err(format!("unknown control request {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_are_stable_and_distinct() {
        assert_eq!(raft_id("node-1"), raft_id("node-1"));
        let ids: BTreeSet<u64> = (1..=1000).map(|i| raft_id(&format!("node-{i}"))).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }

    struct Builder(tempfile::TempDir);

    impl openraft::testing::StoreBuilder<TypeConfig, store::LogStore, store::StateMachine, ()> for Builder {
        async fn build(&self) -> Result<((), store::LogStore, store::StateMachine), openraft::StorageError<u64>> {
            let err =
                |e: String| openraft::StorageError::from(openraft::StorageIOError::write(openraft::AnyError::error(e)));
            let dir = tempfile::tempdir_in(self.0.path()).map_err(|e| err(e.to_string()))?;
            let path = dir.keep();
            let db = RaftDb::open(&path.join("raft.redb")).map_err(|e| err(e.to_string()))?;
            Ok(((), store::LogStore::new(db.clone()), store::StateMachine::open(db)?))
        }
    }

    #[test]
    fn openraft_storage_conformance() {
        let dir = tempfile::tempdir().unwrap();
        openraft::testing::Suite::test_all(Builder(dir)).unwrap();
    }
}
