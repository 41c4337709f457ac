//! [`ControlPlane`]: the running Raft node of this member, its start, the reads of the applied
//! state and of Raft's view (status, leader), and proposals: committed here or forwarded to the
//! leader, then waited for until every reachable member has them in force.

use crate::duties::job_leaders_of;
use crate::store;
use crate::wire::{Forwarded, InForce};
use crate::{
    Command, ControlConfig, ControlState, Error, LockCmd, LockOutcome, MemberStatus, NodeInfo, Outcome, Status,
    TypeConfig, network, raft_id,
};
use ironbucket_meta::RaftDb;
use ironbucket_rpc::Peers;
use ironbucket_runtime::{OnFailure, Registry};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a proposer waits for each other member to confirm a change is in force.
pub(crate) const IN_FORCE_WAIT: Duration = Duration::from_secs(2);
/// How long a member that failed to confirm is not waited for.
const UNRESPONSIVE_FOR: Duration = Duration::from_secs(10);

/// The running control plane of this node.
pub struct ControlPlane {
    /// Replaced only by a forced recovery.
    pub(crate) raft: std::sync::RwLock<Raft<TypeConfig>>,
    pub(crate) raft_config: Arc<openraft::Config>,
    pub(crate) db: RaftDb,
    pub(crate) sm: store::StateMachine,
    pub(crate) peers: Peers,
    pub(crate) cfg: ControlConfig,
    pub(crate) id: u64,
    /// Made when this node's Raft state was created; a wiped node (or a forced recovery) gets a
    /// new one.
    pub(crate) incarnation: std::sync::RwLock<String>,
    /// Members that recently failed to confirm a change, and when: not waited for again for a
    /// while, so a dead or cut-off member does not slow every change down.
    unresponsive: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Highest applied index whose effects the node has put in force locally (see
    /// [`ControlPlane::set_materialized`]); `None` until something materializes state.
    materialized: tokio::sync::watch::Sender<Option<u64>>,
    /// Where this node's background loops run (and are restarted if they fail).
    pub(crate) workers: Registry,
    /// The lease renewals this node answered as leader (`leases.rs`).
    pub(crate) renewals: std::sync::Mutex<crate::leases::Renewals>,
    /// Held by the leader while it adds a member or turns on a feature every member must
    /// speak, so that the two never race.
    pub(crate) membership_lock: tokio::sync::Mutex<()>,
    /// Why the last attempt to form or join the cluster failed (cleared once in one).
    pub(crate) bootstrap_error: std::sync::Mutex<Option<String>>,
    /// Set once this node, a member of a formed cluster, has pinged its members (and so knows
    /// how its clock compares with theirs, as far as they answered).
    pub(crate) clock_compared: tokio::sync::watch::Sender<bool>,
}

pub(crate) fn raft_err<E: std::fmt::Display>(e: E) -> Error {
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
        let sm = store::StateMachine::open(db.clone(), &cfg.data_dir.join("raft-snapshots"))
            .map_err(|e| Error::Storage(e.to_string()))?;
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
            renewals: Default::default(),
            membership_lock: Default::default(),
            bootstrap_error: Default::default(),
            clock_compared: tokio::sync::watch::channel(false).0,
        });
        cp.run_loop("raft.bootstrap", Self::bootstrap);
        cp.run_loop("raft.leader-duties", Self::leader_duties);
        cp.run_loop("raft.rediscover", Self::rediscover);
        cp.run_loop("cluster.clock-probe", Self::clock_probe);
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

    pub(crate) fn raft(&self) -> Raft<TypeConfig> {
        self.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn incarnation(&self) -> String {
        self.incarnation.read().unwrap_or_else(|p| p.into_inner()).clone()
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

    pub(crate) fn initialized(&self) -> bool {
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
        let (cluster_id, layout_version, replication, members, job_leaders, leader_leases) = {
            let a = self.sm.shared.read().unwrap_or_else(|p| p.into_inner());
            let st = &a.state;
            (
                st.cluster_id.clone(),
                st.layout_version,
                st.replication.clone(),
                st.members.clone(),
                job_leaders_of(st),
                st.leader_leases,
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
                role: member.map(|m| m.role.clone()).unwrap_or_default(),
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
            leader_leases,
        }
    }

    /// Commits `cmd` through Raft (forwarding to the leader when this node is not) and returns
    /// once this node and every reachable member have applied it and put it in force, so a
    /// request to any of them sees the change.
    pub async fn propose(&self, cmd: Command) -> Result<Outcome, Error> {
        // A renewal changes nothing another member serves (off the log it changes nothing at
        // all): no member needs to confirm it.
        let renewal = matches!(
            &cmd,
            Command::Lock {
                cmd: LockCmd::Renew { .. }
            }
        );
        let (outcome, index) = tokio::time::timeout(self.cfg.commit_timeout, self.propose_inner(cmd, true))
            .await
            .map_err(|_| {
                Error::NoQuorum(format!(
                    "the change was not committed within {} ms: no quorum of voters is reachable",
                    self.cfg.commit_timeout.as_millis()
                ))
            })??;
        self.wait_in_force(index, self.cfg.commit_timeout).await;
        if !renewal {
            self.broadcast_in_force(index).await;
        }
        Ok(outcome)
    }

    /// Index of the last applied entry; changes after every apply.
    pub fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sm.watch()
    }

    /// The state rows changed after log index `index` (`b/<bucket>`, `k/<access key>`, ...),
    /// or `None` when they are no longer known: compare the whole state then.
    pub fn changes_since(&self, index: u64) -> Option<std::collections::BTreeSet<String>> {
        self.sm.changes_since(index)
    }

    /// Records that everything up to `index` is in force on this node (called by whoever
    /// materializes the control state, such as the local bucket table).
    pub fn set_materialized(&self, index: u64) {
        self.materialized
            .send_modify(|m| *m = Some(m.map_or(index, |x| x.max(index))));
    }

    /// The log index up to which the control state is materialized on this node (`None`
    /// before the first time); changes whenever [`ControlPlane::set_materialized`] moves it.
    pub fn materialized_watch(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        self.materialized.subscribe()
    }

    /// Waits (at most `timeout`) until `index` is applied and, when something materializes
    /// the state, materialized.
    pub(crate) async fn wait_in_force(&self, index: u64, timeout: Duration) -> bool {
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

    /// Every Raft member (voters and learners: every node that applies the log) with its Raft
    /// id, this node included.
    pub(crate) fn raft_nodes(&self) -> Vec<(u64, NodeInfo)> {
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Every Raft member but this node.
    pub(crate) fn other_members(&self) -> Vec<NodeInfo> {
        self.raft_nodes()
            .into_iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(_, n)| n)
            .collect()
    }

    /// Asks every other member to confirm that `index` is in force there; members that do not
    /// answer within a short time (down, partitioned) catch up on their own.
    async fn broadcast_in_force(&self, index: u64) {
        let others = self.other_members();
        let skip: BTreeSet<String> = {
            let mut u = self.unresponsive.lock().unwrap_or_else(|p| p.into_inner());
            u.retain(|_, since| since.elapsed() < UNRESPONSIVE_FOR);
            u.keys().cloned().collect()
        };
        let others: Vec<NodeInfo> = others.into_iter().filter(|n| !skip.contains(&n.name)).collect();
        let msg = InForce(index);
        let calls = others
            .iter()
            .map(|n| self.peers.call(&n.rpc_addr, &msg, Some(IN_FORCE_WAIT)));
        for (n, r) in others.iter().zip(futures::future::join_all(calls).await) {
            let confirmed = match r {
                Ok(applied) => applied,
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

    pub(crate) async fn propose_inner(&self, cmd: Command, may_forward: bool) -> Result<(Outcome, u64), Error> {
        // Lease times come from the clock of the node that appends the entry: the leader (a
        // follower's attempt fails below and the leader stamps the forwarded command again).
        if let Command::Lock { cmd: lock } = &cmd
            && let Some(r) = self.renew_off_log(lock).await
        {
            return r;
        }
        let mut stamped = cmd.clone();
        if let Command::Lock { cmd: lock } = &mut stamped {
            lock.set_now(ironbucket_types::now_millis());
            // Whether the lease will be renewed by the leader comes from the proposer's state
            // (the leader's, when it is forwarded).
            if let LockCmd::Acquire { leader_renewed, .. } | LockCmd::Renew { leader_renewed, .. } = lock {
                *leader_renewed = self.with_state(|s| s.leader_leases);
            }
        }
        match self.raft().client_write(stamped).await {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if may_forward => {
                let Some(leader) = f.leader_node else {
                    return Err(Error::NoQuorum("no leader is elected".into()));
                };
                let msg = Forwarded {
                    from: self.cfg.node_name.clone(),
                    incarnation: self.incarnation(),
                    body: cmd,
                };
                self.peers
                    .call(&leader.rpc_addr, &msg, Some(self.cfg.commit_timeout))
                    .await
                    .map_err(|e| Error::NoQuorum(format!("the leader {} did not commit the change: {e}", leader.name)))?
                    .map_err(|f| f.into_error(Error::NoQuorum))
            }
            Err(e) => Err(raft_err(e)),
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

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        let _ = self.raft().shutdown().await;
    }
}
