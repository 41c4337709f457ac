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

    /// Records `node`'s clock offset as a ping reply showed it (this node's own call).
    pub(crate) fn record_offset(&self, node: &str, offset_ms: i64, protocol: ProtocolRange) {
        let now = ironbucket_types::now_millis();
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(node.to_string()).or_insert(PeerClock {
            offset_ms,
            seen_ms: now,
            refused_calls: 0,
            protocol: Some(protocol),
            refused_protocol_calls: 0,
        });
        e.offset_ms = offset_ms;
        e.seen_ms = now;
        e.protocol = Some(protocol);
    }

    /// Counts a call from `node` refused because its kind is unknown here or newer than the
    /// version the two agreed (a protocol refusal); returns the count so far.
    pub(crate) fn refused_kind(&self, node: &str) -> u64 {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(node.to_string()).or_insert(PeerClock {
            offset_ms: 0,
            seen_ms: ironbucket_types::now_millis(),
            refused_calls: 0,
            protocol: None,
            refused_protocol_calls: 0,
        });
        e.refused_protocol_calls += 1;
        e.refused_protocol_calls
    }

    /// Why this node (`me`) has a clock unfit to stamp writes, if it has: most other peers
    /// heard from in the last `window_ms` run more than `bound_ms` behind it (so this node runs
    /// ahead). `None` with no recent peer: nothing is known.
    pub fn ahead_of_peers(&self, me: &str, bound_ms: u64, window_ms: u64) -> Option<String> {
        let now = ironbucket_types::now_millis();
        let m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        verdict(
            m.iter()
                .filter(|(name, c)| {
                    name.as_str() != me && now.saturating_sub(c.seen_ms) <= window_ms && c.refused_protocol_calls == 0
                })
                .map(|(_, c)| c.offset_ms),
            bound_ms,
        )
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

/// The pure part of [`PeerClocks::ahead_of_peers`]: `offsets` are the recent peers' clocks minus
/// this node's.
fn verdict(offsets: impl Iterator<Item = i64>, bound_ms: u64) -> Option<String> {
    let (mut behind, mut all, mut worst) = (0usize, 0usize, 0i64);
    for o in offsets {
        all += 1;
        if o < -(bound_ms as i64) {
            behind += 1;
            worst = worst.min(o);
        }
    }
    (behind * 2 > all).then(|| {
        format!(
            "this node's clock runs ahead of {behind} of its {all} peers by more than {bound_ms} ms (up to {:.1} s): it stamps no writes until its clock is fixed (NTP); send requests to another node",
            worst.unsigned_abs() as f64 / 1000.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn a_node_ahead_of_most_peers_stamps_nothing() {
        assert!(verdict([-200_000, -199_000].into_iter(), 5_000).is_some());
        assert!(
            verdict([-200_000].into_iter(), 5_000).is_some(),
            "two nodes: the one ahead stops"
        );
        assert_eq!(verdict([200_000].into_iter(), 5_000), None, "the peer is the one ahead");
        assert_eq!(
            verdict([-200_000, 0, 100].into_iter(), 5_000),
            None,
            "only one peer of three disagrees"
        );
        assert_eq!(verdict([-4_000, -3_000].into_iter(), 5_000), None, "within the bound");
        assert_eq!(verdict(std::iter::empty(), 5_000), None);
    }
}
