//! The control plane: one Raft group (openraft, confined to this crate) that agrees on the
//! cluster's low-volume state (its id and name, members, replication settings, buckets and their
//! settings). Object data and object metadata never go through Raft.
//!
//! [`ControlPlane`] starts the Raft node, forms or joins the cluster from the seed list,
//! forwards proposals to the leader, and serves the Raft messages that peers send over
//! `ironbucket_rpc`. The state machine's apply is the pure [`ControlState::apply`].

// openraft's traits fix the (large) error types.
#![allow(clippy::result_large_err)]

mod bootstrap;
mod duties;
#[cfg(test)]
mod golden;
mod handler;
pub mod joining;
mod layouts;
mod leases;
pub mod locks;
mod membership;
mod network;
mod plane;
pub mod records;
mod rows;
pub mod runtime;
mod secrets;
pub mod snapshot;
pub mod state;
mod store;
mod tokens;
mod wire;

#[cfg(test)]
mod sim;

pub use layouts::{ABSENT_MEMBERS, LayoutProgress, Leave, MAX_HISTORY};
pub use locks::{LockCmd, LockOutcome};
pub use plane::ControlPlane;
pub use state::{
    ADMIN_TOKENS, AdminToken, Command, ControlState, DEFAULT_VNODES, Member, MemberState, Outcome, Replication,
};
pub use store::{Applied, StateMachine};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The largest capacity weight of a member (100 is the norm): bounds the placement ring's size
/// (virtual nodes x weight / 100 tokens per member).
pub const MAX_WEIGHT: u32 = 10_000;

/// Member roles: `storage` holds data and coordinates, `gateway` stores nothing and only
/// coordinates; `primary` and `secondary` (earlier releases) are storage.
pub const ROLES: [&str; 4] = ["storage", "gateway", "primary", "secondary"];

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
        SnapshotData = snapshot::SnapshotFile,
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
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
    /// The operator-issued join token this node presents when it joins an existing cluster
    /// (`JOIN_TOKEN`; see [`joining`]).
    pub join_token: Option<String>,
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
    /// `storage` or `gateway` (earlier releases recorded `primary` or `secondary`: storage).
    #[serde(default)]
    pub role: String,
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
    /// Lease renewals are answered by the leader, off the log.
    pub leader_leases: bool,
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
    if r.vnodes == 0 || r.vnodes > 65_536 {
        return Err(Error::Invalid(format!(
            "virtual nodes per node must be between 1 and 65536, not {}",
            r.vnodes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_meta::RaftDb;
    use std::collections::BTreeSet;

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
            Ok((
                (),
                store::LogStore::new(db.clone()),
                store::StateMachine::open(db, &path.join("snapshots"))?,
            ))
        }
    }

    #[test]
    fn openraft_storage_conformance() {
        let dir = tempfile::tempdir().unwrap();
        openraft::testing::Suite::test_all(Builder(dir)).unwrap();
    }
}
