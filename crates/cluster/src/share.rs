//! What a layout means for the data (pure): each node's share of the replicas, and how much a
//! change of layout would move. Computed over a fixed sample of ring positions (XXH3 of the
//! sample number, so every node and every run gives the same figures; 100,000 positions put the
//! error under half a percent).

use crate::placement::Ring;
use std::collections::BTreeMap;
use xxhash_rust::xxh3::xxh3_64;

/// Positions sampled.
pub const SAMPLES: u64 = 100_000;

fn positions() -> impl Iterator<Item = u64> {
    (0..SAMPLES).map(|i| xxh3_64(&i.to_le_bytes()))
}

fn names(ring: &Ring, pos: u64) -> Vec<&str> {
    let mut v: Vec<&str> = ring
        .replicas_at(pos)
        .into_iter()
        .map(|i| ring.nodes()[i].name.as_str())
        .collect();
    v.sort_unstable();
    v
}

/// The fraction of keys each node holds a replica of (0 to 1; the fractions sum to the
/// replication factor).
pub fn holdings(ring: &Ring) -> BTreeMap<String, f64> {
    let mut count: BTreeMap<String, u64> = ring.nodes().iter().map(|n| (n.name.clone(), 0)).collect();
    for pos in positions() {
        for n in names(ring, pos) {
            if let Some(c) = count.get_mut(n) {
                *c += 1;
            }
        }
    }
    count.into_iter().map(|(n, c)| (n, c as f64 / SAMPLES as f64)).collect()
}

/// What moving from one layout to another does to the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// Fraction of keys whose replica set changes.
    pub keys_changing: f64,
    /// New replicas per key on average (copies to make, as a fraction of the keys).
    pub copies_per_key: f64,
}

/// The change from `from` to `to`.
pub fn change(from: &Ring, to: &Ring) -> Change {
    let (mut changing, mut copies) = (0u64, 0u64);
    for pos in positions() {
        let (a, b) = (names(from, pos), names(to, pos));
        if a != b {
            changing += 1;
            copies += b.iter().filter(|n| !a.contains(n)).count() as u64;
        }
    }
    Change {
        keys_changing: changing as f64 / SAMPLES as f64,
        copies_per_key: copies as f64 / SAMPLES as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{DEFAULT_VNODES, Layout, NodeSpec, Strategy};

    fn ring(nodes: &[(&str, u32)], factor: usize) -> Ring {
        Ring::new(Layout {
            version: 1,
            nodes: nodes
                .iter()
                .map(|(n, w)| NodeSpec {
                    weight: *w,
                    ..NodeSpec::new(*n)
                })
                .collect(),
            strategy: Strategy::ConsistentHash,
            factor,
            vnodes: DEFAULT_VNODES,
        })
        .unwrap()
    }

    #[test]
    fn shares_sum_to_the_factor_and_follow_weights() {
        let r = ring(&[("a", 100), ("b", 100), ("c", 100), ("d", 100)], 2);
        let h = holdings(&r);
        let sum: f64 = h.values().sum();
        assert!((sum - 2.0).abs() < 1e-9, "{sum}");
        for v in h.values() {
            assert!((0.4..0.6).contains(v), "{h:?}");
        }
        let r = ring(&[("a", 300), ("b", 100), ("c", 100), ("d", 100)], 1);
        let h = holdings(&r);
        assert!(h["a"] > 2.0 * h["b"], "{h:?}");
    }

    #[test]
    fn a_join_changes_about_rf_over_n_plus_one_of_the_keys() {
        let three = ring(&[("a", 100), ("b", 100), ("c", 100)], 2);
        let four = ring(&[("a", 100), ("b", 100), ("c", 100), ("d", 100)], 2);
        let c = change(&three, &four);
        assert!((0.4..0.6).contains(&c.keys_changing), "{c:?}");
        // Each changing key gets exactly one new replica (the new node).
        assert!((c.copies_per_key - c.keys_changing).abs() < 1e-9, "{c:?}");
        let same = change(&four, &four);
        assert_eq!(same.keys_changing, 0.0);
    }
}
