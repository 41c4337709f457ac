//! Layout versions while data moves (pure, part of the state machine's apply).
//!
//! The placement layout in force is derived from the members and the replication settings
//! ([`ControlState::placement`]). Once layout moves are on (every member speaks node protocol 6),
//! a change of placement keeps the layout it replaces in `layout_history` until the data has
//! moved, as Garage's layout history does:
//!
//! - writes go to the replica sets of every layout still in the history and of the current one,
//!   and need their level in each; reads go to the oldest layout's set;
//! - each node reports, through [`Command::LayoutTrack`], three numbers: the newest layout version
//!   it writes with and whose older writes have settled (`acked`), the newest version whose data
//!   it has fully taken in from the older layouts' holders (`synced`), and the oldest version it
//!   still reads from (`reading`);
//! - a layout leaves the history once every node that holds data in the current layout has
//!   synced a version at least as new as the one that replaced it;
//! - members that were asked to leave (decommission, or removal of a dead node) stay members
//!   until no layout of the history names them.

use crate::state::{Command, ControlState, MemberState, Outcome};
use ironbucket_types::{Layout, NodeSpec};
use serde::{Deserialize, Serialize};

/// The node protocol version that moves data on placement changes (its messages, and the
/// commands of this module, need every member to speak it).
pub const LAYOUT_MOVES: u32 = 6;

/// The node protocol version from which members may be marked absent ([`Leave::Absent`]):
/// older nodes could not read such a record.
pub const ABSENT_MEMBERS: u32 = 7;

/// The most layouts kept while data moves: a further change of placement is refused until the
/// moves catch up (or are cancelled).
pub const MAX_HISTORY: usize = 8;

/// One node's progress through the layout versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutProgress {
    /// The newest layout version this node writes with, older writes settled.
    pub acked: u64,
    /// The newest layout version whose data this node has taken in.
    pub synced: u64,
    /// The oldest layout version this node still reads from.
    pub reading: u64,
}

/// Why a member is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leave {
    /// Decommission: its data moves off, then it leaves the Raft group.
    Decommission,
    /// Removal of a dead node: its data is re-created from the other replicas (it is asked for
    /// nothing), then it leaves the Raft group.
    Dead,
    /// Down for longer than the re-replication threshold: its data is re-created from the other
    /// replicas (it is asked for nothing) but it stays a member; back, it discards what it holds
    /// and activates itself, and its share moves back to it.
    Absent,
}

impl ControlState {
    /// The placement layout in force: active storage members (draining and removed members, and
    /// gateways, hold no data) with their zone, rack and weight, the replication settings, and the layout version.
    pub fn placement(&self) -> Layout {
        Layout {
            version: self.layout_version,
            nodes: self
                .members
                .values()
                .filter(|m| m.state == MemberState::Active && m.role != "gateway")
                .map(|m| NodeSpec {
                    name: m.name.clone(),
                    zone: m.zone.clone(),
                    rack: m.rack.clone(),
                    weight: m.weight,
                })
                .collect(),
            strategy: self.replication.strategy,
            factor: self.replication.factor as usize,
            vnodes: self.replication.vnodes,
        }
    }

    /// Every layout data may still be placed by, oldest first: the history, then the current
    /// one. Reads use the first; writes use all of them.
    pub fn layouts(&self) -> Vec<Layout> {
        let mut v = self.layout_history.clone();
        v.push(self.placement());
        v
    }

    /// The oldest layout version reads still use.
    pub fn read_version(&self) -> u64 {
        self.layout_history.first().map_or(self.layout_version, |l| l.version)
    }

    /// Members whose acknowledgment of a layout version the moves wait for: every member not
    /// removed, except dead ones being removed and absent ones.
    pub fn ack_required(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.state != MemberState::Removed && !self.asked_for_nothing(&m.name))
            .map(|m| m.name.clone())
            .collect()
    }

    /// Whether `name` is out of the placement because it is lost (dead or absent): moves take
    /// its data from the other replicas and wait for nothing from it.
    pub fn asked_for_nothing(&self, name: &str) -> bool {
        matches!(self.leaving.get(name), Some(Leave::Dead | Leave::Absent))
    }

    /// Whether every member that must acknowledge has acknowledged layout `version`.
    pub fn all_acked(&self, version: u64) -> bool {
        self.ack_required()
            .iter()
            .all(|n| self.layout_progress.get(n).is_some_and(|p| p.acked >= version))
    }

    /// Whether every member that must acknowledge reads only from layouts at `version` or newer.
    pub fn all_reading(&self, version: u64) -> bool {
        self.ack_required()
            .iter()
            .all(|n| self.layout_progress.get(n).is_some_and(|p| p.reading >= version))
    }

    /// Whether `cmd` may change the placement (and so the history).
    pub(crate) fn moves_placement(cmd: &Command) -> bool {
        matches!(
            cmd,
            Command::UpsertMember { .. }
                | Command::SetMemberState { .. }
                | Command::SetReplication { .. }
                | Command::Leave { .. }
                | Command::CancelMove
        )
    }

    /// Applies a placement-changing command with layout moves on: the layout it replaces joins
    /// the history, and the version moves on.
    pub(crate) fn apply_with_history(&mut self, cmd: Command) -> Outcome {
        let before = self.placement();
        if matches!(
            cmd,
            Command::UpsertMember { .. } | Command::SetMemberState { .. } | Command::SetReplication { .. }
        ) && self.layout_history.len() >= MAX_HISTORY
            && !self.same_after(&before, &cmd)
        {
            return Outcome::Refused {
                reason: format!(
                    "{} layouts are already waiting for their data to move: wait for the rebalance to finish (GET /cluster/rebalance/status) or cancel it",
                    self.layout_history.len()
                ),
            };
        }
        let out = self.apply_plain(cmd);
        let after = self.placement();
        if !before.same_placement(&after) {
            if before.version == after.version {
                self.layout_version += 1;
            }
            // A layout with fewer data nodes than the replication factor (the cluster forming)
            // put every key on every node it had, and each of them stays in every key's set
            // while nodes are added: nothing becomes unreachable, so there is nothing to wait for.
            if before.data_nodes().len() >= before.factor.max(1) {
                self.layout_history.push(before);
            }
            // Back to a layout still in the history (a cancelled move): nothing placed since
            // needs to move, so the layouts from it on are dropped.
            let now = self.placement();
            if let Some(i) = self.layout_history.iter().position(|l| l.same_placement(&now)) {
                self.layout_history.truncate(i);
            }
        }
        self.prune();
        out
    }

    /// Whether `cmd` would leave the placement as it is (checked on a copy).
    fn same_after(&self, before: &Layout, cmd: &Command) -> bool {
        let mut copy = self.clone();
        copy.apply_plain(cmd.clone());
        copy.placement().same_placement(before)
    }

    /// A node's progress (each number only moves forward).
    pub(crate) fn track(&mut self, node: String, p: LayoutProgress) -> Outcome {
        if !self.members.get(&node).is_some_and(|m| m.state != MemberState::Removed) {
            return Outcome::NoSuchMember { name: node };
        }
        let e = self.layout_progress.entry(node).or_default();
        e.acked = e.acked.max(p.acked.min(self.layout_version));
        e.synced = e.synced.max(p.synced.min(self.layout_version));
        e.reading = e.reading.max(p.reading.min(self.layout_version));
        self.prune();
        Outcome::Done
    }

    /// A member asked to leave: it holds no new data from now on and leaves the Raft group once
    /// its data has moved.
    pub(crate) fn leave(&mut self, name: String, why: Leave) -> Outcome {
        match self.members.get_mut(&name) {
            Some(m) if m.state != MemberState::Removed => {
                if m.state != MemberState::Draining {
                    m.state = MemberState::Draining;
                    self.layout_version += 1;
                }
                self.leaving.insert(name, why);
                Outcome::Done
            }
            _ => Outcome::NoSuchMember { name },
        }
    }

    /// Cancels the moves in progress: the members and settings go back to what the oldest layout
    /// of the history placed by (members it did not hold are left draining), as a new version.
    pub(crate) fn cancel_move(&mut self) -> Outcome {
        let Some(old) = self.layout_history.first().cloned() else {
            return Outcome::Refused {
                reason: "no data is moving: there is nothing to cancel".into(),
            };
        };
        for m in self.members.values_mut() {
            if m.state == MemberState::Removed {
                continue;
            }
            match old.nodes.iter().find(|n| n.name == m.name) {
                Some(n) => {
                    m.state = MemberState::Active;
                    m.zone = n.zone.clone();
                    m.rack = n.rack.clone();
                    m.weight = n.weight;
                    self.leaving.remove(&m.name);
                }
                None => m.state = MemberState::Draining,
            }
        }
        self.replication.factor = old.factor as u32;
        self.replication.strategy = old.strategy;
        self.replication.vnodes = old.vnodes;
        Outcome::Done
    }

    /// Drops the layouts every data node of the current layout has moved past, and forgets
    /// removed members' progress.
    fn prune(&mut self) {
        let removed: Vec<String> = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Removed)
            .map(|m| m.name.clone())
            .collect();
        for n in &removed {
            self.layout_progress.remove(n);
            self.leaving.remove(n);
        }
        if self.layout_history.is_empty() {
            return;
        }
        let current = self.placement();
        let min_synced = current
            .data_nodes()
            .iter()
            .map(|n| self.layout_progress.get(&n.name).map_or(0, |p| p.synced))
            .min()
            .unwrap_or(self.layout_version);
        // A layout is done with once every data node synced the version that replaced it.
        let successors: Vec<u64> = self
            .layout_history
            .iter()
            .skip(1)
            .map(|l| l.version)
            .chain(std::iter::once(self.layout_version))
            .collect();
        let keep_from = successors
            .iter()
            .position(|s| *s > min_synced)
            .unwrap_or(successors.len());
        self.layout_history.drain(..keep_from);
    }

    /// Members asked to leave that no layout names any more: they may leave the Raft group.
    pub fn departed(&self) -> Vec<String> {
        let layouts = self.layouts();
        self.leaving
            .iter()
            .filter(|(_, why)| **why != Leave::Absent)
            .map(|(n, _)| n)
            .filter(|n| !layouts.iter().any(|l| l.holds_data(n)))
            .filter(|n| self.members.get(*n).is_some_and(|m| m.state != MemberState::Removed))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Member, Replication};
    use ironbucket_types::Strategy;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            raft_id: 1,
            rpc_addr: format!("{name}:1"),
            role: "primary".into(),
            zone: String::new(),
            rack: String::new(),
            weight: 100,
            state: MemberState::Active,
        }
    }

    fn cluster(names: &[&str]) -> ControlState {
        let mut s = ControlState {
            replication: Replication {
                factor: 2,
                strategy: Strategy::ConsistentHash,
                ..Default::default()
            },
            ..Default::default()
        };
        s.apply(Command::EnableLayoutMoves);
        for n in names {
            s.apply(Command::UpsertMember { member: member(n) });
        }
        // Forming the cluster moved nothing worth waiting for: every node synced.
        for n in names {
            s.apply(track(n, s.layout_version, s.layout_version, s.layout_version));
        }
        assert!(s.layout_history.is_empty(), "{:?}", s.layout_history);
        s
    }

    fn track(n: &str, acked: u64, synced: u64, reading: u64) -> Command {
        Command::LayoutTrack {
            node: n.into(),
            progress: LayoutProgress { acked, synced, reading },
        }
    }

    #[test]
    fn a_join_keeps_the_old_layout_until_every_data_node_synced() {
        let mut s = cluster(&["a", "b", "c"]);
        let v = s.layout_version;
        s.apply(Command::UpsertMember { member: member("d") });
        assert_eq!(s.layout_version, v + 1);
        assert_eq!(s.layout_history.len(), 1);
        assert_eq!(s.layout_history[0].version, v);
        assert_eq!(s.read_version(), v);
        assert_eq!(s.layouts().len(), 2);
        assert!(!s.all_acked(v + 1));
        for n in ["a", "b", "c"] {
            s.apply(track(n, v + 1, v + 1, v));
        }
        assert_eq!(s.layout_history.len(), 1, "d has not synced yet");
        assert!(!s.all_acked(v + 1));
        s.apply(track("d", v + 1, v + 1, v));
        assert!(s.layout_history.is_empty());
        assert!(s.all_acked(v + 1));
        assert!(!s.all_reading(v + 1));
        // Progress never goes back, and never past the current version.
        s.apply(track("d", 0, 0, 99));
        assert_eq!(
            s.layout_progress["d"],
            LayoutProgress {
                acked: v + 1,
                synced: v + 1,
                reading: v + 1
            }
        );
    }

    #[test]
    fn changes_that_do_not_move_data_keep_no_history() {
        let mut s = cluster(&["a", "b"]);
        let mut m = s.members["a"].clone();
        m.role = "secondary".into();
        s.apply(Command::UpsertMember { member: m });
        assert!(s.layout_history.is_empty());
        let mut r = s.replication.clone();
        r.read_consistency = ironbucket_types::Consistency::One;
        let v = s.layout_version;
        s.apply(Command::SetReplication { replication: r.clone() });
        assert!(s.layout_history.is_empty());
        assert_eq!(s.layout_version, v);
        r.factor = 1;
        s.apply(Command::SetReplication { replication: r });
        assert_eq!(s.layout_history.len(), 1);
        assert_eq!(s.layout_version, v + 1, "a factor change is a new layout");
    }

    #[test]
    fn leaving_members_depart_once_no_layout_names_them() {
        let mut s = cluster(&["a", "b", "c"]);
        s.apply(Command::Leave {
            name: "c".into(),
            why: Leave::Decommission,
        });
        let v = s.layout_version;
        assert_eq!(s.members["c"].state, MemberState::Draining);
        assert!(s.departed().is_empty(), "the old layout still names c");
        for n in ["a", "b"] {
            s.apply(track(n, v, v, 0));
        }
        assert!(s.layout_history.is_empty());
        assert_eq!(s.departed(), vec!["c".to_string()]);
        // A dead member is not waited for.
        let mut s = cluster(&["a", "b", "c"]);
        s.apply(Command::Leave {
            name: "b".into(),
            why: Leave::Dead,
        });
        let v = s.layout_version;
        for n in ["a", "c"] {
            s.apply(track(n, v, 0, 0));
        }
        assert!(s.all_acked(v));
    }

    #[test]
    fn an_activated_member_holds_data_again_and_stays() {
        let mut s = cluster(&["a", "b", "c"]);
        s.apply(Command::Leave {
            name: "c".into(),
            why: Leave::Decommission,
        });
        assert!(!s.placement().holds_data("c"));
        s.apply(Command::SetMemberState {
            name: "c".into(),
            state: MemberState::Active,
        });
        assert!(s.placement().holds_data("c"));
        assert!(s.leaving.is_empty(), "no longer leaving");
        assert!(s.departed().is_empty());
    }

    #[test]
    fn cancel_goes_back_to_the_oldest_layout() {
        let mut s = cluster(&["a", "b", "c"]);
        assert!(matches!(s.apply(Command::CancelMove), Outcome::Refused { .. }));
        let old = s.placement();
        s.apply(Command::UpsertMember { member: member("d") });
        let mut m = s.members["a"].clone();
        m.weight = 300;
        s.apply(Command::UpsertMember { member: m });
        assert_eq!(s.layout_history.len(), 2);
        assert_eq!(s.apply(Command::CancelMove), Outcome::Done);
        assert!(s.layout_history.is_empty(), "{:?}", s.layout_history);
        assert!(s.placement().same_placement(&old));
        assert_eq!(s.members["d"].state, MemberState::Draining);
        assert_eq!(s.members["a"].weight, 100);
    }

    #[test]
    fn history_is_bounded() {
        let mut s = cluster(&["a", "b", "c"]);
        for w in 0..MAX_HISTORY as u32 {
            let mut m = s.members["a"].clone();
            m.weight = 200 + w;
            assert_eq!(s.apply(Command::UpsertMember { member: m }), Outcome::Done);
        }
        let mut m = s.members["a"].clone();
        m.weight = 50;
        assert!(matches!(
            s.apply(Command::UpsertMember { member: m }),
            Outcome::Refused { .. }
        ));
        assert_eq!(s.layout_history.len(), MAX_HISTORY);
    }

    #[test]
    fn without_layout_moves_nothing_is_kept() {
        let mut s = ControlState::default();
        s.apply(Command::UpsertMember { member: member("a") });
        s.apply(Command::UpsertMember { member: member("b") });
        assert!(s.layout_history.is_empty());
    }
}
