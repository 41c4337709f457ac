//! Consistency levels of the replicated data path: how many of a key's replicas must answer a
//! read or a write (the `x-ironbucket-consistency` header and the cluster defaults).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How many replicas must answer (the `x-ironbucket-consistency` header and the cluster's
/// default read and write levels).
///
/// Serialized as its name (`ONE`, `QUORUM`, `ALL`), the form the control state stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Consistency {
    One,
    Quorum,
    All,
}

impl Consistency {
    /// Replicas needed out of `rf`: ONE = 1, QUORUM = floor(rf/2)+1, ALL = rf.
    pub fn required(self, rf: usize) -> usize {
        match self {
            Consistency::One => 1.min(rf),
            Consistency::Quorum => rf / 2 + 1,
            Consistency::All => rf,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::One => "ONE",
            Consistency::Quorum => "QUORUM",
            Consistency::All => "ALL",
        }
    }

    /// Whether a read at `self` after a write acknowledged at `write` must see that write:
    /// the two replica sets overlap.
    pub fn overlaps(self, write: Consistency, rf: usize) -> bool {
        self.required(rf) + write.required(rf) > rf
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown level, named in the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadConsistency(pub String);

impl fmt::Display for BadConsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consistency level must be ONE, QUORUM or ALL, not {:?}", self.0)
    }
}

impl FromStr for Consistency {
    type Err = BadConsistency;

    fn from_str(s: &str) -> Result<Self, BadConsistency> {
        match s.trim().to_ascii_uppercase().as_str() {
            "ONE" => Ok(Consistency::One),
            "QUORUM" => Ok(Consistency::Quorum),
            "ALL" => Ok(Consistency::All),
            _ => Err(BadConsistency(s.to_string())),
        }
    }
}
