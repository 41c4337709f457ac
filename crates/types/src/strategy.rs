//! Replication strategies: how a key's replicas are chosen on the placement ring. Stored in the
//! control state and carried between nodes under their canonical names (`SimpleStrategy`,
//! `ConsistentHash`, `RackAware`, `ZoneAware`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How replicas are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// Modulo placement over the nodes sorted by name: RF consecutive nodes from
    /// `hash(key) mod N`. Meant for a fixed small cluster with RF = N (every node holds every
    /// object); on a membership change most keys move, and weights are ignored.
    #[default]
    #[serde(rename = "SimpleStrategy")]
    Simple,
    /// The first RF distinct nodes clockwise from the key's position on the ring of virtual nodes.
    ConsistentHash,
    /// Like `ConsistentHash`, but replicas go to distinct racks (zone and rack) while there are
    /// racks not yet used; then to the next nodes clockwise.
    RackAware,
    /// Like `RackAware` with zones instead of racks.
    ZoneAware,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Simple => "SimpleStrategy",
            Strategy::ConsistentHash => "ConsistentHash",
            Strategy::RackAware => "RackAware",
            Strategy::ZoneAware => "ZoneAware",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown strategy, named in the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadStrategy(pub String);

impl fmt::Display for BadStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown replication strategy {:?}: use SimpleStrategy, ConsistentHash, RackAware or ZoneAware",
            self.0
        )
    }
}

impl std::error::Error for BadStrategy {}

impl FromStr for Strategy {
    type Err = BadStrategy;

    /// Case, dashes and underscores are ignored (`consistent-hash`, `zone_aware`).
    fn from_str(s: &str) -> Result<Self, BadStrategy> {
        let norm: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match norm.as_str() {
            "simplestrategy" | "simple" => Strategy::Simple,
            "consistenthash" | "consistenthashing" => Strategy::ConsistentHash,
            "rackaware" => Strategy::RackAware,
            "zoneaware" => Strategy::ZoneAware,
            _ => return Err(BadStrategy(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_serialize_as_stored() {
        assert_eq!("SimpleStrategy".parse::<Strategy>().unwrap(), Strategy::Simple);
        assert_eq!("consistent-hash".parse::<Strategy>().unwrap(), Strategy::ConsistentHash);
        assert_eq!("RackAware".parse::<Strategy>().unwrap(), Strategy::RackAware);
        assert_eq!("zone_aware".parse::<Strategy>().unwrap(), Strategy::ZoneAware);
        let e = "NetworkTopology".parse::<Strategy>().unwrap_err().to_string();
        assert!(e.contains("NetworkTopology"), "{e}");
        for s in [
            Strategy::Simple,
            Strategy::ConsistentHash,
            Strategy::RackAware,
            Strategy::ZoneAware,
        ] {
            // The JSON form is the canonical name: control state written as text reads back.
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<Strategy>(&format!("\"{s}\"")).unwrap(), s);
        }
    }
}
