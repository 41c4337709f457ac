//! What the leader does on its own (names the cluster, records Raft members in the control
//! state, expires leases), and cluster-wide jobs that one node runs at a time under a lease.

use crate::{Command, ControlPlane, ControlState, LockCmd, LockOutcome, Member, MemberState};
use ironbucket_runtime::OnFailure;
use openraft::ServerState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn job_leaders_of(s: &ControlState) -> BTreeMap<String, String> {
    s.locks
        .locks
        .iter()
        .filter_map(|(k, l)| Some((k.strip_prefix("job:")?.to_string(), l.holders.first()?.holder.clone())))
        .collect()
}

impl ControlPlane {
    /// While leader: names the cluster once and records every Raft member in the control state.
    pub(crate) async fn leader_duties(me: std::sync::Weak<Self>) {
        let mut version_check = None;
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
                let expired = s.locks.expired_at(now).next().is_some();
                (expired, s.cluster_id.is_empty(), s.members.clone())
            });
            cp.lease_duties(&mut version_check).await;
            cp.layout_duties().await;
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
            let nodes = cp.raft_nodes();
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
                        .is_some_and(|h| h.holder != holder && (h.leader_renewed || h.expires_at > now))
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
                        leader_renewed: false,
                    },
                    None => LockCmd::Acquire {
                        name: lock.clone(),
                        holder,
                        ttl_ms,
                        permits: 1,
                        wait: false,
                        now,
                        leader_renewed: false,
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
}
