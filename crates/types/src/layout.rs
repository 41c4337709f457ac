//! The placement layout: the inputs of the placement ring (nodes with their zone, rack and
//! weight, the replication factor, strategy and virtual nodes), versioned. Shared by the control
//! plane, which agrees on layouts and keeps the ones still being moved away from, and the
//! cluster crate, which turns a layout into a ring. Pure data.

use crate::Strategy;
use serde::{Deserialize, Serialize};

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub zone: String,
    pub rack: String,
    /// Relative capacity; 100 is the norm, 0 holds nothing.
    pub weight: u32,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            zone: String::new(),
            rack: String::new(),
            weight: 100,
        }
    }
}

/// Everything placement depends on; a new version whenever any of it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub version: u64,
    pub nodes: Vec<NodeSpec>,
    pub strategy: Strategy,
    pub factor: usize,
    pub vnodes: u32,
}

impl Layout {
    /// Whether two layouts place every object alike (everything but the version is equal).
    pub fn same_placement(&self, other: &Layout) -> bool {
        self.strategy == other.strategy
            && self.factor == other.factor
            && self.vnodes == other.vnodes
            && self.data_nodes() == other.data_nodes()
    }

    /// The nodes that hold data (weight above 0), sorted by name.
    pub fn data_nodes(&self) -> Vec<&NodeSpec> {
        let mut v: Vec<&NodeSpec> = self.nodes.iter().filter(|n| n.weight > 0).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Whether `name` holds data in this layout.
    pub fn holds_data(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name && n.weight > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(nodes: &[(&str, u32)]) -> Layout {
        Layout {
            version: 1,
            nodes: nodes
                .iter()
                .map(|(n, w)| NodeSpec {
                    weight: *w,
                    ..NodeSpec::new(*n)
                })
                .collect(),
            strategy: Strategy::ConsistentHash,
            factor: 2,
            vnodes: 16,
        }
    }

    #[test]
    fn placement_ignores_version_order_and_weightless_nodes() {
        let a = layout(&[("a", 100), ("b", 100)]);
        let mut b = layout(&[("b", 100), ("a", 100), ("c", 0)]);
        b.version = 9;
        assert!(a.same_placement(&b));
        assert!(b.holds_data("a") && !b.holds_data("c") && !b.holds_data("x"));
        let c = layout(&[("a", 100), ("b", 50)]);
        assert!(!a.same_placement(&c));
        let mut d = a.clone();
        d.factor = 1;
        assert!(!a.same_placement(&d));
    }
}
