//! Cluster layout for the data path: which nodes hold which objects. Owns the placement ring (a
//! pure function, [`placement`]) and derives its layout from the control plane's agreed state,
//! and the failure detector ([`liveness`]: SWIM gossip through foca). Depends on `consensus` for
//! the agreed state and on `rpc` for the cluster secret and name resolution; knows nothing of
//! objects or S3.

pub mod liveness;
pub mod placement;
pub mod sets;
pub mod share;

pub use liveness::{Gossip, GossipConfig, GossipId, Liveness, LoadFigures, LoadFn, NodeLoad, NodeView};
pub use placement::{Error, Layout, NodeSpec, Ring, Strategy};
pub use sets::{ReplicaSets, set_id};

use ironbucket_consensus::ControlState;

/// The placement layout the control state describes: its active members (draining and removed
/// members hold no new data), the replication factor, strategy and virtual nodes, versioned by
/// the control state's layout version.
pub fn layout_of(state: &ControlState) -> Result<Layout, Error> {
    Ok(state.placement())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_consensus::{Member, MemberState, Replication};

    fn member(name: &str, state: MemberState) -> Member {
        Member {
            name: name.into(),
            raft_id: 0,
            rpc_addr: format!("{name}:7000"),
            role: "primary".into(),
            zone: "z1".into(),
            rack: String::new(),
            weight: 100,
            state,
        }
    }

    #[test]
    fn layout_takes_active_members_and_the_replication_settings() {
        let mut s = ControlState {
            layout_version: 9,
            replication: Replication {
                factor: 2,
                strategy: Strategy::ConsistentHash,
                vnodes: 64,
                ..Default::default()
            },
            ..Default::default()
        };
        for (n, st) in [
            ("a", MemberState::Active),
            ("b", MemberState::Draining),
            ("c", MemberState::Active),
            ("d", MemberState::Removed),
        ] {
            s.members.insert(n.into(), member(n, st));
        }
        let l = layout_of(&s).unwrap();
        assert_eq!(l.version, 9);
        assert_eq!(l.factor, 2);
        assert_eq!(l.vnodes, 64);
        assert_eq!(l.strategy, Strategy::ConsistentHash);
        let names: Vec<&str> = l.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        let r = Ring::new(l).unwrap();
        assert_eq!(r.replicas("bucket", "key").len(), 2);
        s.replication.factor = 0;
        assert!(Ring::new(layout_of(&s).unwrap()).is_err(), "a ring needs a factor");
    }
}
