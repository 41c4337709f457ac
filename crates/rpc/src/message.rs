//! The node protocol's messages: [`Kind`] is the one enum of everything a node sends another,
//! with the RPC method each travels on, its name on the wire and the protocol version that
//! introduced it. The crate that owns a message binds its request and reply types to a kind by
//! implementing [`Message`]; this crate encodes, routes, checks versions and decodes, so a call
//! can only ever carry the request type of its kind and get that kind's reply type back.
//!
//! Wire types are their own: the request and reply types are declared for the wire (see
//! docs/protocol.md for which they are); a stored record or a Raft log entry reaches the wire
//! only inside one, never as the message itself. Payloads are JSON (serde), so a field added
//! later needs a serde default; anything else a peer must understand needs a new protocol
//! version (docs/protocol.md, "The compatibility rule").

use crate::{DataStream, Error, Peers, Route};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The RPC method of `node.proto` a kind travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `Raft(Envelope) -> Envelope`; the kind is sent as `<name>:<incarnation the sender expects>`.
    Raft,
    /// `Control(Envelope) -> Envelope`.
    Control,
    /// `Push(stream Chunk) -> Envelope`: the first chunk carries the kind and the request.
    Push,
    /// `Pull(Envelope) -> stream Chunk`: the first chunk carries the reply, the data follows.
    Pull,
}

/// Every message kind of the node protocol (versions 1 to [`crate::PROTOCOL_VERSION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// openraft's AppendEntries.
    RaftAppend,
    /// openraft's Vote.
    RaftVote,
    /// One chunk of openraft's InstallSnapshot.
    RaftSnapshot,
    /// A control-plane change a member forwards to the leader.
    Propose,
    /// A new node asks the leader to be added.
    Join,
    /// A membership change (removing a member) a member forwards to the leader.
    Membership,
    /// "Tell me once the entry at this index is applied here."
    InForce,
    /// One small request to a replica (head, delete, list, multipart bookkeeping, metadata).
    ObjectOp,
    /// What a node holds of one key (`/cluster/locate`).
    ObjectVersions,
    /// A stamped object write with its body.
    ObjectPut,
    /// One multipart part with its body.
    ObjectPart,
    /// An object's body from a replica.
    ObjectGet,
    /// Anti-entropy: a replica's tree digests and leaf items, or "start a sync round now".
    TreeOp,
    /// Data moving between layout versions: the items a new owner takes over, a mover's status.
    LayoutMove,
    /// Conditional writes (Paxos per key): prepare, accept by reference, commit.
    CasOp,
    /// Conditional writes: a proposed write with its body, staged until committed.
    CasAccept,
    /// Conditional writes: a staged write's body, copied to finish an earlier round.
    CasPull,
}

impl Kind {
    /// Every kind, in protocol order.
    pub const ALL: [Kind; 17] = [
        Kind::RaftAppend,
        Kind::RaftVote,
        Kind::RaftSnapshot,
        Kind::Propose,
        Kind::Join,
        Kind::Membership,
        Kind::InForce,
        Kind::ObjectOp,
        Kind::ObjectVersions,
        Kind::ObjectPut,
        Kind::ObjectPart,
        Kind::ObjectGet,
        Kind::TreeOp,
        Kind::LayoutMove,
        Kind::CasOp,
        Kind::CasAccept,
        Kind::CasPull,
    ];

    /// The name on the wire (the envelope's or the first chunk's `kind`).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::RaftAppend => "append",
            Kind::RaftVote => "vote",
            Kind::RaftSnapshot => "snapshot",
            Kind::Propose => "propose",
            Kind::Join => "join",
            Kind::Membership => "membership",
            Kind::InForce => "in_force",
            Kind::ObjectOp => "object.op",
            Kind::ObjectVersions => "object.versions",
            Kind::ObjectPut => "object.put",
            Kind::ObjectPart => "object.part",
            Kind::ObjectGet => "object.get",
            Kind::TreeOp => "tree.op",
            Kind::LayoutMove => "layout.move",
            Kind::CasOp => "cas.op",
            Kind::CasAccept => "cas.accept",
            Kind::CasPull => "cas.pull",
        }
    }

    pub const fn method(self) -> Method {
        match self {
            Kind::RaftAppend | Kind::RaftVote | Kind::RaftSnapshot => Method::Raft,
            Kind::Propose
            | Kind::Join
            | Kind::Membership
            | Kind::InForce
            | Kind::ObjectOp
            | Kind::ObjectVersions
            | Kind::TreeOp
            | Kind::LayoutMove
            | Kind::CasOp => Method::Control,
            Kind::ObjectPut | Kind::ObjectPart | Kind::CasAccept => Method::Push,
            Kind::ObjectGet | Kind::CasPull => Method::Pull,
        }
    }

    /// The protocol version that introduced the kind. A node refuses a kind newer than the
    /// version it agreed with the caller (a sender must not use it with an older peer).
    pub const fn since(self) -> u32 {
        match self {
            Kind::RaftAppend
            | Kind::RaftVote
            | Kind::RaftSnapshot
            | Kind::Propose
            | Kind::Join
            | Kind::Membership
            | Kind::InForce
            | Kind::ObjectOp
            | Kind::ObjectVersions
            | Kind::ObjectPut
            | Kind::ObjectPart
            | Kind::ObjectGet => 1,
            Kind::TreeOp => 5,
            Kind::LayoutMove => 6,
            Kind::CasOp | Kind::CasAccept | Kind::CasPull => 8,
        }
    }

    /// The kind `name` names on `method`, if this build knows one.
    pub fn parse(method: Method, name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.method() == method && k.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A request of the node protocol: its kind and the reply it gets. Implemented by the crate
/// that owns the types (the control plane for Raft and control messages, replication for
/// object messages).
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: Kind;
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// A call as the receiving handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub kind: Kind,
    /// The protocol version agreed with the caller (the newest both speak): what the reply
    /// must be written in.
    pub version: u32,
    /// The caller's node id (from its credentials).
    pub from: String,
    /// Raft messages: the incarnation of this node the sender expects (empty when it did not
    /// say).
    pub incarnation: String,
}

impl Incoming {
    /// The request of message type `M` (whose kind this call must be).
    pub fn decode<M: Message>(&self, payload: &[u8]) -> Result<M, String> {
        if self.kind != M::KIND {
            return Err(format!("a {} message cannot be read as a {}", self.kind, M::KIND));
        }
        serde_json::from_slice(payload).map_err(|e| format!("bad {} message: {e}", self.kind))
    }
}

/// Encodes a reply (or a request) for the wire.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| format!("cannot encode a message: {e}"))
}

/// Decodes the reply of message type `M` from `addr`.
pub fn decode_reply<M: Message>(addr: &str, raw: &[u8]) -> Result<M::Reply, Error> {
    serde_json::from_slice(raw).map_err(|e| Error::Remote {
        addr: addr.to_string(),
        why: format!("undecodable {} answer: {e}", M::KIND),
    })
}

/// Whether a message of `kind` may go from a node speaking `own` to a peer known to speak
/// `known`: not when every version either speaks predates the kind (the agreed version would,
/// and the peer would refuse it). Pure.
fn sendable(
    kind: Kind,
    since: u32,
    own: crate::ProtocolRange,
    known: Option<crate::ProtocolRange>,
) -> Result<(), String> {
    if own.max < since {
        return Err(format!(
            "this node speaks node protocol {own}, and {kind} messages need version {since}"
        ));
    }
    match known {
        Some(r) if r.max < since => Err(format!(
            "it speaks node protocol {r}, and {kind} messages need version {since}: upgrade it"
        )),
        _ => Ok(()),
    }
}

fn bad_request<M: Message>(addr: &str, why: String) -> Error {
    Error::Remote {
        addr: addr.to_string(),
        why: format!("cannot send a {} message: {why}", M::KIND),
    }
}

impl Peers {
    /// Refuses, without sending, a message the peer is known not to speak.
    fn check_sendable<M: Message>(&self, addr: &str) -> Result<(), Error> {
        sendable(M::KIND, M::KIND.since(), self.config().protocol, self.known_range(addr)).map_err(|why| {
            Error::Unsupported {
                addr: addr.to_string(),
                why,
            }
        })
    }

    /// Sends a control message and returns its reply.
    pub async fn call<M: Message>(&self, addr: &str, msg: &M, timeout: Option<Duration>) -> Result<M::Reply, Error> {
        if M::KIND.method() != Method::Control {
            return Err(bad_request::<M>(
                addr,
                "it does not travel on the Control method".into(),
            ));
        }
        self.check_sendable::<M>(addr)?;
        let payload = encode(msg).map_err(|e| bad_request::<M>(addr, e))?;
        let raw = self
            .envelope(Route::Control, addr, M::KIND.name(), payload, timeout)
            .await?;
        decode_reply::<M>(addr, &raw)
    }

    /// Sends a Raft message meant for the peer's Raft state `incarnation` (empty: any).
    pub async fn raft_call<M: Message>(
        &self,
        addr: &str,
        incarnation: &str,
        msg: &M,
        timeout: Option<Duration>,
    ) -> Result<M::Reply, Error> {
        if M::KIND.method() != Method::Raft {
            return Err(bad_request::<M>(addr, "it does not travel on the Raft method".into()));
        }
        self.check_sendable::<M>(addr)?;
        let payload = encode(msg).map_err(|e| bad_request::<M>(addr, e))?;
        let kind = format!("{}:{incarnation}", M::KIND.name());
        let raw = self.envelope(Route::Raft, addr, &kind, payload, timeout).await?;
        decode_reply::<M>(addr, &raw)
    }

    /// Streams `data` to the peer after the request `msg`; returns its reply once the peer
    /// has taken the whole stream. The deadline covers the whole transfer; the future owns
    /// everything it needs (it can be spawned).
    pub fn push_call<M: Message>(
        &self,
        addr: &str,
        msg: &M,
        data: DataStream,
        timeout: Option<Duration>,
    ) -> futures::future::BoxFuture<'static, Result<M::Reply, Error>> {
        use futures::FutureExt;
        if let Err(e) = self.check_sendable::<M>(addr) {
            return futures::future::ready(Err(e)).boxed();
        }
        let header = match encode(msg) {
            Ok(h) if M::KIND.method() == Method::Push => h,
            Ok(_) => {
                let e = bad_request::<M>(addr, "it does not travel on the Push method".into());
                return futures::future::ready(Err(e)).boxed();
            }
            Err(e) => return futures::future::ready(Err(bad_request::<M>(addr, e))).boxed(),
        };
        let sent = self.push_raw(addr, M::KIND.name(), header, data, timeout);
        let addr = addr.to_string();
        async move { decode_reply::<M>(&addr, &sent.await?) }.boxed()
    }

    /// Asks the peer for the data `msg` names: the stream's first chunk is the JSON of
    /// `M::Reply` (see [`decode_reply`]), the data follows.
    pub async fn pull_call<M: Message>(
        &self,
        addr: &str,
        msg: &M,
        timeout: Option<Duration>,
    ) -> Result<DataStream, Error> {
        if M::KIND.method() != Method::Pull {
            return Err(bad_request::<M>(addr, "it does not travel on the Pull method".into()));
        }
        self.check_sendable::<M>(addr)?;
        let payload = encode(msg).map_err(|e| bad_request::<M>(addr, e))?;
        self.pull_raw(addr, M::KIND.name(), payload, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_per_method_and_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            assert!(seen.insert((k.method(), k.name())), "{k} named twice");
            assert_eq!(Kind::parse(k.method(), k.name()), Some(k));
            assert!(k.since() >= 1 && k.since() <= crate::PROTOCOL_VERSION, "{k}");
        }
        assert_eq!(
            Kind::parse(Method::Control, "object.put"),
            None,
            "a kind only on its method"
        );
        assert_eq!(Kind::parse(Method::Control, "object.scrub"), None);
    }

    #[test]
    fn a_kind_newer_than_the_peer_is_not_sent() {
        let r = |min, max| Some(crate::ProtocolRange { min, max });
        let own = crate::ProtocolRange { min: 1, max: 5 };
        assert!(sendable(Kind::ObjectOp, 1, own, r(1, 1)).is_ok());
        assert!(
            sendable(Kind::ObjectOp, 5, own, None).is_ok(),
            "unknown peer: try, it refuses cleanly"
        );
        assert!(sendable(Kind::ObjectOp, 5, own, r(1, 5)).is_ok());
        let e = sendable(Kind::ObjectOp, 5, own, r(1, 4)).unwrap_err();
        assert!(e.contains("1-4") && e.contains("version 5"), "{e}");
        // Nor a kind newer than this node speaks (a node told to speak an older version).
        let old = crate::ProtocolRange { min: 1, max: 4 };
        let e = sendable(Kind::TreeOp, 5, old, r(1, 5)).unwrap_err();
        assert!(e.contains("this node speaks") && e.contains("version 5"), "{e}");
    }
}
