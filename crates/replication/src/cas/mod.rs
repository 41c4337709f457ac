//! Conditional writes decided by a Paxos round per key among the key's replicas (ADR 0015): the
//! messages of a round and what a replica answers. The replica's side (promises, staged values)
//! is [`acceptor`]; the coordinator's side is `coordinator::cas`.
//!
//! A round: *prepare* (a ballot; each replica promises to accept nothing older and answers the
//! key's current version and any value it accepted but has not committed), *accept* (the write,
//! staged invisibly), *commit* (once the level accepted: applied through the ordinary stamped
//! write). The ballot is the stamp of the version the round writes.

pub(crate) mod acceptor;
pub(crate) mod history;
mod serve;

use crate::quorum::Stamp;
use crate::wire::{Complete, DeleteAt, HeadReply, MetaAt, MetaOp, PutHeader};
use ironbucket_rpc::{Kind, Message};
use ironbucket_store::*;
use serde::{Deserialize, Serialize};

/// A round's ballot: an HLC stamp and the proposing node's id (unique, ordered).
pub(crate) type Ballot = Stamp;

/// A write proposed in a round. It carries its own stamp (the ballot of the round that first
/// proposed it) and is applied, once chosen, through the replica's ordinary stamped write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Staged {
    /// PutObject / CopyObject: the body is staged beside it.
    Put(Box<PutHeader>),
    /// DeleteObject (a delete marker, or a version deleted by id).
    Delete(DeleteAt),
    /// CompleteMultipartUpload.
    Complete(Complete),
    /// A stamped change to one metadata field of a version (retention, legal hold).
    Meta(MetaAt),
}

impl Staged {
    pub fn bucket(&self) -> &str {
        match self {
            Staged::Put(h) => &h.bucket,
            Staged::Delete(d) => &d.bucket,
            Staged::Complete(c) => &c.req.bucket,
            Staged::Meta(m) => &m.bucket,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Staged::Put(h) => &h.key,
            Staged::Delete(d) => &d.key,
            Staged::Complete(c) => &c.req.key,
            Staged::Meta(m) => &m.key,
        }
    }

    /// The stamp of the version this write makes.
    pub fn stamp(&self) -> Stamp {
        let (hlc, node) = match self {
            Staged::Put(h) => (h.hlc, h.origin),
            Staged::Delete(d) => (d.hlc, d.origin),
            Staged::Complete(c) => (c.hlc, c.origin),
            Staged::Meta(MetaAt {
                op: MetaOp::Change { at, .. },
                ..
            }) => *at,
            // Only changes are staged.
            Staged::Meta(_) => (ironbucket_types::Hlc::default(), 0),
        };
        Stamp { hlc, node }
    }

    pub fn has_body(&self) -> bool {
        matches!(self, Staged::Put(_))
    }
}

/// What a prepare reads under its promise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CasRead {
    /// The key's current version (its stamp, ETag, whether it is a delete marker).
    Head,
    /// Version `0` (its stamp, whether it was deleted) and its metadata: object lock is decided
    /// on it.
    Version(String),
}

/// A replica's answer to a prepare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Promise {
    /// Whether it promised this ballot.
    pub promised: bool,
    /// The highest ballot it has promised (when it refused: the one to go above).
    pub highest: Ballot,
    /// The last value it accepted (and whether it has committed it since).
    pub accepted: Option<AcceptedValue>,
    /// What [`CasRead`] asked for, read under the promise.
    pub head: Option<HeadReply>,
    /// [`CasRead::Version`]: the version's metadata, if this replica holds it.
    #[serde(default)]
    pub meta: Option<VersionMeta>,
    /// Refused because another round on the key is under way (it holds the key for at most
    /// this long): retry after a pause, without going above its ballot.
    #[serde(default)]
    pub busy_ms: u64,
    /// The values its record of the key replaced lately and what became of each
    /// ([`history`]); `None` from an older node.
    #[serde(default)]
    pub replaced: Option<history::History>,
}

/// The last value a replica accepted for a key, the ballot it accepted it under, and whether
/// it committed it since (a committed value is kept, without its body, so that a later round
/// knows an older uncommitted value elsewhere was superseded: Cassandra's "most recent commit").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AcceptedValue {
    pub ballot: Ballot,
    pub value: Staged,
    pub committed: bool,
}

/// A replica's answer to an accept.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum AcceptReply {
    Accepted,
    /// It promised a higher ballot since.
    Refused {
        highest: Ballot,
    },
    /// Accept by reference: it does not hold that value (send it with its body).
    NotHeld,
}

/// A replica's answer to a commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Committed {
    Object(Box<ObjectInfo>),
    Deleted(DeleteResult),
    /// A metadata change was applied.
    Changed,
    /// It held no such value, but a version as new or newer (committed before).
    Already,
    /// It holds neither the value nor anything as new.
    Missing,
}

/// The small requests of a round (kind `cas.op`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CasOp {
    Prepare {
        bucket: String,
        key: String,
        ballot: Ballot,
        read: CasRead,
    },
    /// Accept a value this replica already holds staged, under a new ballot (finishing an
    /// earlier round).
    AcceptRef {
        bucket: String,
        key: String,
        ballot: Ballot,
        value: Stamp,
    },
    Commit {
        bucket: String,
        key: String,
        value: Stamp,
    },
    /// The round under `ballot` ends without a write (its condition failed, or it starts
    /// again): the key is free for other rounds at once.
    Release {
        bucket: String,
        key: String,
        ballot: Ballot,
    },
}

/// The answer to a [`CasOp`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum CasReply {
    Promise(Box<Promise>),
    Accept(AcceptReply),
    Commit(Committed),
    Released,
}

impl Message for CasOp {
    const KIND: Kind = Kind::CasOp;
    type Reply = Result<CasReply>;
}

/// An accept with its body (kind `cas.accept`, pushed; the body is empty but for writes that
/// carry one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AcceptHeader {
    pub ballot: Ballot,
    pub value: Staged,
}

impl Message for AcceptHeader {
    const KIND: Kind = Kind::CasAccept;
    type Reply = Result<AcceptReply>;
}

/// The body of a staged value (kind `cas.pull`): the first chunk is `Result<()>`, the body
/// follows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PullStaged {
    pub bucket: String,
    pub key: String,
    pub value: Stamp,
}

impl Message for PullStaged {
    const KIND: Kind = Kind::CasPull;
    type Reply = Result<()>;
}

impl CasReply {
    pub fn promise(self) -> Result<Promise> {
        match self {
            CasReply::Promise(p) => Ok(*p),
            other => Err(Error::Internal(format!("a replica answered a prepare with {other:?}"))),
        }
    }

    pub fn accept(self) -> Result<AcceptReply> {
        match self {
            CasReply::Accept(a) => Ok(a),
            other => Err(Error::Internal(format!("a replica answered an accept with {other:?}"))),
        }
    }

    pub fn commit(self) -> Result<Committed> {
        match self {
            CasReply::Commit(c) => Ok(c),
            other => Err(Error::Internal(format!("a replica answered a commit with {other:?}"))),
        }
    }
}
