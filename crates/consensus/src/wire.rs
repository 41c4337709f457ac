//! The messages members send to one another's control plane besides Raft's own (see
//! `handler.rs`): JSON, so a field added later must have a serde default.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub(crate) name: String,
    pub(crate) rpc_addr: String,
    #[serde(default)]
    pub(crate) incarnation: String,
    /// The joiner already holds Raft state (a removed or fenced member): refused, since its
    /// stale log and term must not meet the cluster's.
    #[serde(default)]
    pub(crate) has_state: bool,
    /// The node protocol versions the joiner speaks (1 when absent: it predates versions).
    #[serde(default = "version_one")]
    pub(crate) protocol: ironbucket_rpc::ProtocolRange,
}

fn version_one() -> ironbucket_rpc::ProtocolRange {
    ironbucket_rpc::ProtocolRange { min: 1, max: 1 }
}

/// A change of Raft membership, run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipOp {
    Remove { name: String },
}

/// A request a member forwards to the leader, with who sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Forwarded<T> {
    pub(crate) from: String,
    pub(crate) incarnation: String,
    pub(crate) body: T,
}
