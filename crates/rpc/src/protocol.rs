//! Node protocol versions: the range a node speaks, how two ranges agree, and the header that
//! states it on every call (docs/protocol.md, ADR 0010). Pure.

/// The newest node protocol version this build speaks. Version 1 is the protocol before
/// versions were exchanged; 2 adds the exchange itself (every call states the caller's range,
/// Ping answers it, a join states it); 3 sends the control plane's errors typed in the replies
/// to forwarded proposals and membership changes; 4 adds leader-renewed leases (renewals answered
/// by the leader without a log entry, `Expire` entries), used once every member speaks it; 5 adds
/// anti-entropy's `tree.op` (replicas compare their hash trees); 6 adds `layout.move` (data moves
/// to its new owners when the layout changes, layout versions tracked through Raft), used once
/// every member speaks it; 7 adds absent members (a node down longer than the re-replication
/// threshold leaves the placement, `Leave::Absent`), marked once every member speaks it; 8 adds
/// conditional writes decided by a Paxos round per key (`cas.op`, `cas.accept`, `cas.pull`); 9
/// adds admin API tokens to the control state (log entries proposed only once every member
/// speaks it); 10 adds join tokens (a newcomer presents an operator-issued token and joins as a
/// learner; `Promote` makes it a voter), turned on once every member speaks it. See
/// docs/protocol.md for what each version changed and the compatibility rule.
pub const PROTOCOL_VERSION: u32 = 10;
/// The oldest node protocol version this build still speaks (a rolling upgrade from it works).
pub const MIN_PROTOCOL_VERSION: u32 = 1;
pub(crate) const PROTOCOL_HEADER: &str = "x-ironbucket-protocol";

/// The node protocol versions a node speaks, oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtocolRange {
    pub min: u32,
    pub max: u32,
}

impl ProtocolRange {
    /// What this build speaks.
    pub const CURRENT: ProtocolRange = ProtocolRange {
        min: MIN_PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// `N` or `MIN-MAX`, as the `x-ironbucket-protocol` header and `--protocol-version` state it.
    pub fn parse(s: &str) -> Option<ProtocolRange> {
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v = s.trim().parse().ok()?;
                (v, v)
            }
        };
        (1 <= min && min <= max).then_some(ProtocolRange { min, max })
    }

    /// The version two nodes use with each other (the newest both speak), or why they cannot
    /// talk at all. Pure.
    pub fn agree(self, theirs: ProtocolRange) -> Result<u32, String> {
        if theirs.min > self.max {
            Err(format!(
                "it speaks node protocol versions {}-{}, all newer than this node's {}-{}: upgrade this node first",
                theirs.min, theirs.max, self.min, self.max
            ))
        } else if theirs.max < self.min {
            Err(format!(
                "it speaks node protocol versions {}-{}, all older than this node's {}-{}: upgrade it",
                theirs.min, theirs.max, self.min, self.max
            ))
        } else {
            Ok(theirs.max.min(self.max))
        }
    }
}

impl std::fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.max)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}
