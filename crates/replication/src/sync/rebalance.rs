//! The operator's view of data moving between layouts: `GET /cluster/rebalance/status` gathers
//! every member's mover status with the layout versions the control plane records, and
//! `POST /cluster/rebalance` wakes every member's mover.

use super::moves::{MoveAnswer, MoveAsk};
use crate::ClusterStore;
use ironbucket_api::{NodeMove, RebalanceStatus};
use ironbucket_consensus::Leave;

impl ClusterStore {
    /// Every member's part in the move, and the move as a whole.
    pub async fn rebalance_status(&self) -> RebalanceStatus {
        let (version, read_version, moving_from, moves_enabled, leaving) = self.cp.with_state(|s| {
            (
                s.layout_version,
                s.read_version(),
                s.layout_history.iter().map(|l| l.version).collect::<Vec<_>>(),
                s.layout_moves,
                s.leaving
                    .iter()
                    .map(|(n, w)| {
                        let why = match w {
                            Leave::Decommission => "decommission",
                            Leave::Dead => "removed (dead)",
                            Leave::Absent => "absent (down too long: its data re-created on the others)",
                        };
                        (n.clone(), why.to_string())
                    })
                    .collect(),
            )
        });
        let mut out = RebalanceStatus {
            layout_version: version,
            read_version,
            moving_from,
            moves_enabled,
            leaving,
            ..Default::default()
        };
        out.nodes.push(self.move_status());
        for (node, r) in self.ask_others(&MoveAsk::Status, self.timeout()).await {
            match r {
                Ok(MoveAnswer::Status(s)) => out.nodes.push(*s),
                Ok(_) => {
                    out.unreachable.insert(node, "answered something else".into());
                }
                Err(e) => {
                    out.unreachable.insert(node, e);
                }
            }
        }
        // A lost member (absent, or dead and being removed) is asked for nothing by the moves:
        // that it does not answer does not hold the move up.
        self.cp
            .with_state(|s| out.unreachable.retain(|n, _| !s.asked_for_nothing(n)));
        out.nodes.sort_by(|a, b| a.node.cmp(&b.node));
        summarize(&mut out);
        out
    }

    /// `POST /cluster/rebalance`: every member's mover takes its next step now.
    pub async fn start_rebalance(&self) -> ironbucket_api::RepairStarted {
        self.moves.wake.notify_one();
        super::started(
            self.cp.node_name(),
            self.ask_others(&MoveAsk::Start, self.timeout()).await,
        )
    }
}

/// The totals, the move's progress (the data nodes' average while layouts remain to move from)
/// and the time left at the current rate.
fn summarize(out: &mut RebalanceStatus) {
    out.objects_moved = out.nodes.iter().map(|n| n.objects_moved).sum();
    out.bytes_moved = out.nodes.iter().map(|n| n.bytes_moved).sum();
    out.bytes_per_sec = out.nodes.iter().map(|n| n.bytes_per_sec).sum();
    let idle = |n: &NodeMove| n.state.starts_with("idle");
    out.done = out.moving_from.is_empty() && out.unreachable.is_empty() && out.nodes.iter().all(idle);
    if out.moving_from.is_empty() {
        out.progress = 1.0;
        out.eta_secs = None;
        return;
    }
    let movers: Vec<&NodeMove> = out
        .nodes
        .iter()
        .filter(|n| n.target_version == out.layout_version)
        .collect();
    let synced = |n: &NodeMove| n.synced >= out.layout_version;
    out.progress = if movers.is_empty() {
        0.0
    } else {
        movers
            .iter()
            .map(|n| if synced(n) { 1.0 } else { n.progress })
            .sum::<f64>()
            / movers.len() as f64
    };
    // Time left: bytes moved so far scaled by what remains, at the current rate.
    if out.progress > 0.0 && out.bytes_per_sec > 0.0 {
        let left = out.bytes_moved as f64 * (1.0 - out.progress) / out.progress;
        out.eta_secs = Some((left / out.bytes_per_sec).ceil() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_eta_follow_the_movers() {
        let node = |name: &str, synced, progress, bytes| NodeMove {
            node: name.into(),
            synced,
            target_version: 5,
            progress,
            bytes_moved: bytes,
            bytes_per_sec: 100.0,
            state: "taking in".into(),
            ..Default::default()
        };
        let mut s = RebalanceStatus {
            layout_version: 5,
            moving_from: vec![4],
            nodes: vec![node("a", 5, 1.0, 0), node("d", 4, 0.5, 1_000)],
            ..Default::default()
        };
        summarize(&mut s);
        assert!((s.progress - 0.75).abs() < 1e-9, "{}", s.progress);
        assert!(!s.done);
        // 1,000 bytes took 3/4 of the way: about 333 more at 200 B/s.
        assert_eq!(s.eta_secs, Some(2));
        let mut s = RebalanceStatus {
            layout_version: 5,
            nodes: vec![NodeMove {
                state: "idle: nothing to move".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        summarize(&mut s);
        assert!(s.done && s.progress == 1.0);
    }
}
