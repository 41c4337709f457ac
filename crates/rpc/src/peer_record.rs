//! What a node has seen of the peers that called it: each one's clock offset (from its
//! credentials) and protocol versions, and how many of its calls were refused and why.

use crate::{Checked, ProtocolRange};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What this node has seen of its peers' clocks: the offset each caller's RPC credentials
/// showed (its clock minus ours, to within about a second), and calls refused because the
/// caller's clock was too far off. Cheap to clone; clones share the record.
#[derive(Clone, Default)]
pub struct PeerClocks {
    seen: Arc<Mutex<HashMap<String, PeerClock>>>,
}

/// One peer's clock as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerClock {
    /// The peer's clock minus this node's, in milliseconds.
    pub offset_ms: i64,
    /// When this node last heard from it (this node's clock).
    pub seen_ms: u64,
    /// Calls refused because its clock was more than 300 s off.
    pub refused_calls: u64,
    /// The node protocol versions its last call stated (1: it states none; `None` for a
    /// statement that could not be read).
    #[serde(default)]
    pub protocol: Option<ProtocolRange>,
    /// Calls refused because this node cannot speak its protocol version.
    #[serde(default)]
    pub refused_protocol_calls: u64,
}

impl PeerClocks {
    /// Records a call from `c.node` stating `protocol`; `refused` says why it was refused (if
    /// it was). Returns how many of its calls were refused for their protocol so far.
    pub(crate) fn record(&self, c: &Checked, protocol: Option<ProtocolRange>, refused: Refusal) -> u64 {
        let now = ironbucket_types::now_millis();
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let e = match m.get_mut(&c.node) {
            Some(e) => e,
            None => m.entry(c.node.clone()).or_insert(PeerClock {
                offset_ms: 0,
                seen_ms: 0,
                refused_calls: 0,
                protocol: None,
                refused_protocol_calls: 0,
            }),
        };
        e.offset_ms = c.offset_ms;
        e.seen_ms = now;
        e.protocol = protocol;
        match refused {
            Refusal::None => {}
            Refusal::Clock => e.refused_calls += 1,
            Refusal::Protocol => e.refused_protocol_calls += 1,
        }
        e.refused_protocol_calls
    }

    /// Every peer heard from, by node id.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, PeerClock> {
        let m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Why a call was refused, for the record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    None,
    Clock,
    Protocol,
}
