//! Changes of who is in the cluster and how it places data: joins (run on the leader), removal,
//! replacement of a wiped node, decommission, forced recovery of a lone survivor, and changes of
//! a member's placement attributes or of the replication settings.

use crate::plane::raft_err;
use crate::store;
use crate::wire::{Forwarded, JoinRequest, MembershipOp};
use crate::{
    Command, ControlPlane, Error, MAX_WEIGHT, MemberPatch, MemberState, NodeInfo, Outcome, Replication, network,
    raft_id, validate_replication,
};
use openraft::{Raft, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How far a learner's log may trail the leader's for it to become a voter.
const PROMOTE_MAX_LAG: u64 = 1_000;

impl ControlPlane {
    /// On the leader: adds a node as a learner, waits for it to catch up, then makes it a voter.
    pub(crate) async fn join(&self, req: JoinRequest) -> Result<(), String> {
        let m = self.raft().metrics().borrow().clone();
        if m.state != ServerState::Leader {
            let leader = m
                .current_leader
                .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
                .ok_or("no leader is elected")?;
            return self
                .peers
                .call(&leader.rpc_addr, &req, Some(Duration::from_secs(60)))
                .await
                .map_err(|e| e.to_string())?;
        }
        // One join at a time, and never while a feature every member must speak is turned on.
        let _guard = self.membership_lock.lock().await;
        // The leader decides for the cluster: a joiner it cannot talk to, or that could not talk
        // to it, stays out (the member that forwarded the request may be of another version).
        let ours = self.peers.config().protocol;
        if self.with_state(|s| s.leader_leases) && req.protocol.max < crate::leases::LEADER_LEASES {
            tracing::warn!(node = %req.name, theirs = %req.protocol, "refused a join: the cluster's log holds leader-renewed leases (protocol 4)");
            return Err(format!(
                "node {} cannot join: it speaks node protocol {} but this cluster's leases are renewed by the leader, which needs protocol {} on every member: upgrade it",
                req.name,
                req.protocol,
                crate::leases::LEADER_LEASES
            ));
        }
        if self.with_state(|s| s.layout_moves) && req.protocol.max < crate::layouts::LAYOUT_MOVES {
            tracing::warn!(node = %req.name, theirs = %req.protocol, "refused a join: the cluster moves data on layout changes (protocol 6)");
            return Err(format!(
                "node {} cannot join: it speaks node protocol {} but this cluster moves data between layout versions, which needs protocol {} on every member: upgrade it",
                req.name,
                req.protocol,
                crate::layouts::LAYOUT_MOVES
            ));
        }
        let absent = self.with_state(|s| s.leaving.values().any(|w| *w == crate::Leave::Absent));
        if absent && req.protocol.max < crate::layouts::ABSENT_MEMBERS {
            return Err(format!(
                "node {} cannot join: it speaks node protocol {} but a member of this cluster is marked absent, which needs protocol {}: upgrade it",
                req.name,
                req.protocol,
                crate::layouts::ABSENT_MEMBERS
            ));
        }
        if let Err(why) = ours.agree(req.protocol) {
            tracing::warn!(node = %req.name, theirs = %req.protocol, %ours, "refused a join: {why}");
            return Err(format!("node {} cannot join: {why}", req.name));
        }
        // Every member must be able to talk to it, not only the leader (a cluster in the middle
        // of an upgrade may hold three releases).
        if let Err(why) = self.every_member_agrees(&req).await {
            tracing::warn!(node = %req.name, theirs = %req.protocol, "refused a join: {why}");
            return Err(format!("node {} cannot join: {why}", req.name));
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
        // A node an operator confirmed as a wiped member's replacement takes its place (as a
        // voter, like before); any other newcomer needs a join token and enters as a learner.
        let gated = self.with_state(|s| s.joins_need_tokens && !s.replacements.contains(&req.name));
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
        if gated {
            self.admit(&req.name, req.join_token.as_deref())
                .await
                .inspect_err(|why| {
                    tracing::warn!(node = %req.name, addr = %req.rpc_addr, "refused a join: {why}");
                })?;
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
        if gated {
            tracing::info!(node = %req.name, "node joined the cluster as a learner; make it a voter with POST /cluster/nodes/{}/promote", req.name);
            return Ok(());
        }
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

    /// Whether every other member that answers a ping shares a protocol version with the
    /// joiner (a member that does not answer cannot be asked; it is checked when it calls).
    async fn every_member_agrees(&self, req: &JoinRequest) -> Result<(), String> {
        let others: Vec<NodeInfo> = self
            .other_members()
            .into_iter()
            .filter(|n| n.name != req.name)
            .collect();
        let pings = others
            .iter()
            .map(|n| self.peers.ping(&n.rpc_addr, Some(Duration::from_secs(2))));
        for (n, r) in others.iter().zip(futures::future::join_all(pings).await) {
            let Ok(p) = r else { continue };
            let theirs = ironbucket_rpc::ProtocolRange {
                min: p.protocol_min.max(1),
                max: p.protocol_version.max(1),
            };
            theirs
                .agree(req.protocol)
                .map_err(|why| format!("member {} (protocol {theirs}) cannot talk to it: {why}", n.name))?;
        }
        Ok(())
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

    /// Drain: the member holds no new data and its data moves to the others; it stays a member
    /// (and readable until the move is done).
    pub async fn drain(&self, name: &str) -> Result<(), Error> {
        self.enough_left_without(name)?;
        checked(
            self.propose(Command::SetMemberState {
                name: name.to_string(),
                state: MemberState::Draining,
            })
            .await?,
        )
    }

    /// Undoes a drain or decommission that has not finished: the member holds data again (its
    /// share moves back to it like any layout change).
    pub async fn activate(&self, name: &str) -> Result<(), Error> {
        match self.with_state(|s| s.members.get(name).map(|m| m.state)) {
            None => return Err(Error::Invalid(format!("no member named {name}"))),
            Some(MemberState::Removed) => {
                return Err(Error::Invalid(format!(
                    "member {name} has left the cluster: wipe its data directory and let it join again"
                )));
            }
            Some(_) => {}
        }
        checked(
            self.propose(Command::SetMemberState {
                name: name.to_string(),
                state: MemberState::Active,
            })
            .await?,
        )
    }

    /// Decommission: drain, then leave the Raft group once the data has moved (without layout
    /// moves, an older cluster: only marked draining).
    pub async fn decommission(&self, name: &str) -> Result<(), Error> {
        self.enough_left_without(name)?;
        if !self.with_state(|s| s.layout_moves) {
            return self.drain(name).await;
        }
        checked(
            self.propose(Command::Leave {
                name: name.to_string(),
                why: crate::Leave::Decommission,
            })
            .await?,
        )
    }

    /// Removes a dead member: its data is re-created on the others from the remaining replicas,
    /// then it leaves the Raft group. Without layout moves (an older cluster) it leaves at once.
    pub async fn remove_dead(&self, name: &str) -> Result<(), Error> {
        if !self.with_state(|s| s.members.contains_key(name)) {
            return Err(Error::Invalid(format!("no member named {name}")));
        }
        if !self.with_state(|s| s.layout_moves) {
            return self.remove_member(name).await;
        }
        self.enough_left_without(name)?;
        checked(
            self.propose(Command::Leave {
                name: name.to_string(),
                why: crate::Leave::Dead,
            })
            .await?,
        )
    }

    /// Marks a data member that has been down too long absent: it leaves the placement and its
    /// share is re-created on the others from the remaining replicas; it stays a member, and
    /// activates itself when it is back (see the replication crate's re-replication worker).
    /// Refused where fewer nodes than the replication factor would hold data, or without
    /// layout moves.
    pub async fn mark_absent(&self, name: &str) -> Result<(), Error> {
        if !self.with_state(|s| s.layout_moves) {
            return Err(Error::Invalid(
                "this cluster does not move data between layouts yet (a member older than protocol 6)".into(),
            ));
        }
        match self.with_state(|s| s.members.get(name).map(|m| m.state)) {
            Some(MemberState::Active) => {}
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "member {name} is {other:?}, not active: nothing to re-replicate"
                )));
            }
            None => return Err(Error::Invalid(format!("no member named {name}"))),
        }
        self.enough_left_without(name)?;
        checked(
            self.propose(Command::Leave {
                name: name.to_string(),
                why: crate::Leave::Absent,
            })
            .await?,
        )
    }

    /// Cancels the data moves in progress: back to the oldest layout data is still placed by.
    pub async fn cancel_move(&self) -> Result<(), Error> {
        checked(self.propose(Command::CancelMove).await?)
    }

    /// Refuses to take `name` out of the placement when fewer nodes than the replication
    /// factor would hold data.
    fn enough_left_without(&self, name: &str) -> Result<(), Error> {
        self.with_state(|s| {
            let Some(m) = s.members.get(name) else {
                return Err(Error::Invalid(format!("no member named {name}")));
            };
            if m.state == MemberState::Removed {
                return Err(Error::Invalid(format!("member {name} was removed already")));
            }
            let left = s
                .members
                .values()
                .filter(|m| m.name != name && m.state == MemberState::Active && m.weight > 0 && m.role != "gateway")
                .count();
            if left < s.replication.factor as usize {
                return Err(Error::Invalid(format!(
                    "taking {name} out would leave {left} node(s) holding data, fewer than the replication factor {}: add a node or lower the factor first",
                    s.replication.factor
                )));
            }
            Ok(())
        })
    }

    /// Applies this node's own placement settings (`NODE_ROLE`, `NODE_ZONE`, `NODE_RACK`,
    /// `NODE_WEIGHT`) to its member record once, when it first finds itself a member; later
    /// changes go through the admin API. `true` once done (a marker in the data directory
    /// remembers it).
    pub async fn apply_own_settings(&self) -> Result<bool, Error> {
        let marker = self.cfg.data_dir.join("member-settings-applied");
        if marker.exists() {
            return Ok(true);
        }
        let me = self.cfg.node_name.clone();
        let Some(m) = self.with_state(|s| s.members.get(&me).cloned()) else {
            return Ok(false);
        };
        let storage = |r: &str| if r == "gateway" { "gateway" } else { "storage" };
        let patch = MemberPatch {
            role: (storage(&m.role) != storage(&self.cfg.role)).then(|| self.cfg.role.clone()),
            zone: (m.zone != self.cfg.zone).then(|| self.cfg.zone.clone()),
            rack: (m.rack != self.cfg.rack).then(|| self.cfg.rack.clone()),
            weight: (m.weight != self.cfg.weight).then_some(self.cfg.weight),
        };
        if patch.role.is_some() || patch.zone.is_some() || patch.rack.is_some() || patch.weight.is_some() {
            self.update_member(&me, patch).await?;
            tracing::info!(zone = %self.cfg.zone, rack = %self.cfg.rack, weight = self.cfg.weight, role = %self.cfg.role, "this node's placement settings applied to its member record");
        }
        std::fs::write(&marker, b"applied\n").map_err(|e| Error::Storage(format!("{}: {e}", marker.display())))?;
        Ok(true)
    }

    /// Leader duty: members asked to leave whose data has moved leave the Raft group.
    pub(crate) async fn layout_duties(&self) {
        if self.leader_term().is_none() {
            return;
        }
        for name in self.with_state(|s| {
            if s.layout_history.is_empty() {
                s.departed()
            } else {
                Vec::new()
            }
        }) {
            match self.remove_member(&name).await {
                Ok(()) => tracing::info!(node = %name, "member left the cluster: its data has moved"),
                Err(e) => tracing::warn!(node = %name, error = %e, "could not remove a member whose data has moved"),
            }
        }
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
        let rows = store::StateMachine::rows_of(&applied).map_err(raft_err)?;
        let db = self.db.clone();
        let fresh2 = fresh.clone();
        tokio::task::spawn_blocking(move || -> Result<(), ironbucket_meta::Error> {
            db.truncate_from(0)?;
            db.reset(&["vote", "committed", "last_purged", "snapshot"])?;
            // The state as rows (a leftover whole-state value would win at the next start).
            db.state_replace(&rows, &["sm"])?;
            db.put(&[("incarnation", fresh2.as_bytes())])
        })
        .await
        .map_err(raft_err)?
        .map_err(|e| Error::Storage(e.to_string()))?;
        *self.sm.shared.write().unwrap_or_else(|p| p.into_inner()) = applied;
        // The log starts over: changes remembered by index no longer line up.
        self.sm.forget_changes(0);
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

    /// Changes a member's role, zone, rack or weight.
    pub async fn update_member(&self, name: &str, patch: MemberPatch) -> Result<(), Error> {
        let Some(mut m) = self.with_state(|s| s.members.get(name).cloned()) else {
            return Err(Error::Invalid(format!("no member named {name}")));
        };
        if let Some(r) = patch.role {
            if !crate::ROLES.contains(&r.as_str()) {
                return Err(Error::Invalid(format!(
                    "role must be storage or gateway (primary and secondary mean storage), not {r:?}"
                )));
            }
            if r == "gateway" && m.role != "gateway" {
                self.enough_left_without(name)?;
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
        checked(self.propose(Command::UpsertMember { member: m }).await?)
    }

    /// Changes the replication factor, strategy or default consistency for new writes; every
    /// node applies it without a restart.
    pub async fn set_replication(&self, r: Replication) -> Result<(), Error> {
        // Members that can hold replicas: Raft members not removed or draining.
        let nodes: Vec<String> = self.raft_nodes().into_iter().map(|(_, n)| n.name).collect();
        let active = self.with_state(|s| {
            nodes
                .iter()
                .filter(|n| {
                    s.members
                        .get(*n)
                        .is_none_or(|m| m.state == MemberState::Active && m.role != "gateway")
                })
                .count()
        });
        validate_replication(&r, active)?;
        checked(self.propose(Command::SetReplication { replication: r }).await?)
    }

    pub(crate) async fn on_leader(&self, op: MembershipOp) -> Result<(), Error> {
        let msg = Forwarded {
            from: self.cfg.node_name.clone(),
            incarnation: self.incarnation(),
            body: op.clone(),
        };
        let m = self.raft().metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return self.membership_op(op).await.map_err(Error::Invalid);
        }
        let leader = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
            .ok_or_else(|| Error::NoQuorum("no leader is elected".into()))?;
        self.peers
            .call(&leader.rpc_addr, &msg, Some(self.cfg.commit_timeout))
            .await
            .map_err(|e| Error::NoQuorum(format!("the leader {} did not answer: {e}", leader.name)))?
            .map_err(|f| f.into_error(Error::Invalid))
    }

    pub(crate) async fn membership_op(&self, op: MembershipOp) -> Result<(), String> {
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
            MembershipOp::Promote { name } => self.promote_on_leader(&name).await,
        }
    }

    /// Makes learner `name` a voter, once it answers and has caught up with the log.
    async fn promote_on_leader(&self, name: &str) -> Result<(), String> {
        let _guard = self.membership_lock.lock().await;
        let id = raft_id(name);
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let Some(node) = membership.get_node(&id).cloned() else {
            return Err(format!("no member named {name}"));
        };
        if membership.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        if let Err(e) = self.peers.ping(&node.rpc_addr, Some(Duration::from_secs(2))).await {
            return Err(format!(
                "{name} does not answer ({e}): only a running learner can become a voter"
            ));
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        if last.saturating_sub(matched) > PROMOTE_MAX_LAG {
            return Err(format!(
                "{name} is {} log entries behind the leader: try again once it has caught up",
                last - matched
            ));
        }
        self.raft()
            .change_membership(openraft::ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(|e| format!("promote {name}: {e}"))?;
        tracing::info!(node = %name, "learner promoted to voter");
        Ok(())
    }
}

/// A change's outcome as a result: refusals become errors naming why.
fn checked(o: Outcome) -> Result<(), Error> {
    match o {
        Outcome::NoSuchMember { name } => Err(Error::Invalid(format!("no member named {name}"))),
        Outcome::Refused { reason } => Err(Error::Invalid(reason)),
        _ => Ok(()),
    }
}
