//! The control plane's messages of the node protocol (`ironbucket_rpc::Kind`): Raft's own,
//! wrapped, and those members send one another (forwarded proposals and membership changes,
//! joins, in-force confirmations). JSON, so a field added later must have a serde default.
//!
//! A forwarded proposal carries a [`Command`], the Raft log entry it becomes, and Raft's
//! AppendEntries carries log entries: there the wire holds the stored form by design, and a
//! change to `Command` is both a stored-format change (a migration) and a protocol version.

#![allow(clippy::result_large_err)] // openraft fixes its (large) error types.

use crate::{Command, Error, Outcome, TypeConfig};
use ironbucket_rpc::{Kind, Message};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

/// The first protocol version whose control replies carry [`Error`] itself; older peers get
/// (and send) its text.
pub(crate) const TYPED_ERRORS: u32 = 3;

/// openraft's AppendEntries.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Append(pub AppendEntriesRequest<TypeConfig>);

impl Message for Append {
    const KIND: Kind = Kind::RaftAppend;
    type Reply = Result<AppendEntriesResponse<u64>, RaftError<u64>>;
}

/// openraft's Vote.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Vote(pub VoteRequest<u64>);

impl Message for Vote {
    const KIND: Kind = Kind::RaftVote;
    type Reply = Result<VoteResponse<u64>, RaftError<u64>>;
}

/// One chunk of openraft's InstallSnapshot.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Snapshot(pub InstallSnapshotRequest<TypeConfig>);

impl Message for Snapshot {
    const KIND: Kind = Kind::RaftSnapshot;
    type Reply = Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>;
}

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
    /// The operator-issued join token (protocol 10; needed once the cluster turned them on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) join_token: Option<String>,
}

fn version_one() -> ironbucket_rpc::ProtocolRange {
    ironbucket_rpc::ProtocolRange { min: 1, max: 1 }
}

impl Message for JoinRequest {
    const KIND: Kind = Kind::Join;
    /// A refusal, with the reason to show the joiner's operator.
    type Reply = Result<(), String>;
}

/// A change of Raft membership, run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipOp {
    Remove {
        name: String,
    },
    /// Makes a learner a voter (protocol 10).
    Promote {
        name: String,
    },
}

/// A request a member forwards to the leader, with who sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Forwarded<T> {
    pub(crate) from: String,
    pub(crate) incarnation: String,
    pub(crate) body: T,
}

impl Message for Forwarded<Command> {
    const KIND: Kind = Kind::Propose;
    /// What the command did and the index of its log entry.
    type Reply = Result<(Outcome, u64), Failure>;
}

impl Message for Forwarded<MembershipOp> {
    const KIND: Kind = Kind::Membership;
    type Reply = Result<(), Failure>;
}

/// "Answer once the entry at this index is applied here (or after a short wait)": whether it is.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct InForce(pub u64);

impl Message for InForce {
    const KIND: Kind = Kind::InForce;
    type Reply = bool;
}

/// Why the leader did not do what a member forwarded: the control plane's [`Error`] from peers
/// of protocol 3 on, its text from older ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Failure {
    Typed(Error),
    Text(String),
}

impl Failure {
    /// The failure as the reply to a caller that agreed on protocol `version`.
    pub(crate) fn for_version(e: Error, version: u32) -> Failure {
        if version >= TYPED_ERRORS {
            Failure::Typed(e)
        } else {
            Failure::Text(e.to_string())
        }
    }

    /// The error to report; `text` says what an old peer's text means.
    pub(crate) fn into_error(self, text: fn(String) -> Error) -> Error {
        match self {
            Failure::Typed(e) => e,
            Failure::Text(t) => text(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_typed_for_new_peers_and_text_for_old_ones() {
        let e = Error::Invalid("no member named n9".into());
        let new = serde_json::to_vec(&Failure::for_version(e.clone(), TYPED_ERRORS)).unwrap();
        let old = serde_json::to_vec(&Failure::for_version(e.clone(), 2)).unwrap();
        assert_eq!(
            old,
            serde_json::to_vec("no member named n9").unwrap(),
            "what protocol 1 and 2 send"
        );
        let back: Failure = serde_json::from_slice(&new).unwrap();
        assert_eq!(back.into_error(Error::NoQuorum), e, "the kind survives");
        let back: Failure = serde_json::from_slice(&old).unwrap();
        assert_eq!(
            back.into_error(Error::NoQuorum),
            Error::NoQuorum("no member named n9".into()),
            "an old peer's text keeps its old meaning"
        );
    }

    #[test]
    fn in_force_is_the_index_as_protocol_1_sent_it() {
        assert_eq!(serde_json::to_vec(&InForce(42)).unwrap(), b"42");
    }
}
