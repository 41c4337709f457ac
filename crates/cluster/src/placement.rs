//! The placement ring: a pure function from a layout (the active nodes with their zone, rack and
//! weight, the replication factor and strategy) and a (bucket, key) to the ordered replica set.
//! No IO, no clock: every node that holds the same layout computes the same sets.
//!
//! Positions come from XXH3 (a specified, stable 64-bit hash, so all nodes and versions agree).
//! Each node owns `vnodes * weight / 100` tokens on the ring (at least one; weight 0: none).

use xxhash_rust::xxh3::xxh3_64_with_seed;

pub use ironbucket_types::{Layout, NodeSpec, Strategy};

/// The most tokens a ring may hold (about 64 MiB of memory).
pub const MAX_TOKENS: u64 = 4_000_000;

/// Virtual nodes per node of weight 100 unless configured otherwise.
pub const DEFAULT_VNODES: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the layout has no node that can hold data (no active member with a weight above 0)")]
    NoNodes,
    #[error("replication factor must be at least 1")]
    ZeroFactor,
    #[error("virtual nodes per node must be between 1 and 65536, got {0}")]
    BadVnodes(u32),
    #[error("node {0:?} appears twice in the layout")]
    DuplicateNode(String),
    #[error("the ring would need {0} tokens (more than {MAX_TOKENS}): lower VNODES or the node weights")]
    TooManyTokens(u64),
}

/// A layout made ready for lookups.
#[derive(Debug, Clone)]
pub struct Ring {
    layout: Layout,
    /// Nodes that hold data, sorted by name.
    nodes: Vec<NodeSpec>,
    /// (token, index into `nodes`), sorted by token.
    tokens: Vec<(u64, u32)>,
    /// Failure domain of each node for the topology-aware strategies.
    domains: Vec<u32>,
    domain_count: usize,
}

impl Ring {
    pub fn new(layout: Layout) -> Result<Self, Error> {
        if layout.factor == 0 {
            return Err(Error::ZeroFactor);
        }
        if layout.vnodes == 0 || layout.vnodes > 65_536 {
            return Err(Error::BadVnodes(layout.vnodes));
        }
        let mut nodes: Vec<NodeSpec> = layout.nodes.iter().filter(|n| n.weight > 0).cloned().collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = nodes.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::DuplicateNode(w[0].name.clone()));
        }
        if nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        let per_node = |n: &NodeSpec| (u64::from(layout.vnodes) * u64::from(n.weight) / 100).max(1);
        let total: u64 = nodes.iter().map(per_node).sum();
        if total > MAX_TOKENS {
            return Err(Error::TooManyTokens(total));
        }
        let mut tokens = Vec::with_capacity(total as usize);
        for (i, n) in nodes.iter().enumerate() {
            let count = per_node(n);
            for v in 0..count {
                tokens.push((xxh3_64_with_seed(n.name.as_bytes(), v), i as u32));
            }
        }
        // Equal tokens (astronomically rare) are ordered by node so every node agrees.
        tokens.sort_unstable();
        let mut names: Vec<(String, String)> = Vec::new();
        let domains = nodes
            .iter()
            .map(|n| {
                let d = match layout.strategy {
                    Strategy::ZoneAware => (n.zone.clone(), String::new()),
                    _ => (n.zone.clone(), n.rack.clone()),
                };
                match names.iter().position(|x| *x == d) {
                    Some(p) => p as u32,
                    None => {
                        names.push(d);
                        (names.len() - 1) as u32
                    }
                }
            })
            .collect();
        Ok(Self {
            layout,
            nodes,
            tokens,
            domains,
            domain_count: names.len(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn version(&self) -> u64 {
        self.layout.version
    }

    /// The nodes that hold data, sorted by name (indices of [`Ring::replicas`] point here).
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// Replicas per object: the replication factor, or every node when there are fewer.
    pub fn factor(&self) -> usize {
        self.layout.factor.min(self.nodes.len())
    }

    /// Where (bucket, key) sits on the ring.
    pub fn position(bucket: &str, key: &str) -> u64 {
        ironbucket_types::position(bucket, key)
    }

    /// The replica set of (bucket, key): indices into [`Ring::nodes`], distinct, the first being
    /// the primary.
    pub fn replicas(&self, bucket: &str, key: &str) -> Vec<usize> {
        self.replicas_at(Self::position(bucket, key))
    }

    /// The replica set's node names, primary first.
    pub fn replica_names(&self, bucket: &str, key: &str) -> Vec<&str> {
        self.replicas(bucket, key)
            .into_iter()
            .map(|i| self.nodes[i].name.as_str())
            .collect()
    }

    /// The replica set of a ring position.
    pub fn replicas_at(&self, pos: u64) -> Vec<usize> {
        let rf = self.factor();
        let n = self.nodes.len();
        let mut chosen = Vec::with_capacity(rf);
        match self.layout.strategy {
            Strategy::Simple => {
                let start = (pos % n as u64) as usize;
                chosen.extend((0..rf).map(|k| (start + k) % n));
            }
            Strategy::ConsistentHash => {
                for node in self.walk(pos) {
                    if !chosen.contains(&node) {
                        chosen.push(node);
                        if chosen.len() == rf {
                            break;
                        }
                    }
                }
            }
            Strategy::RackAware | Strategy::ZoneAware => {
                // One replica per failure domain while unused domains remain; nodes passed over
                // (their domain already holds a replica) fill the rest, in ring order.
                let mut used = vec![false; self.domain_count];
                let mut passed = Vec::new();
                let mut seen = 0;
                for node in self.walk(pos) {
                    if chosen.contains(&node) || passed.contains(&node) {
                        continue;
                    }
                    seen += 1;
                    let d = self.domains[node] as usize;
                    if used[d] {
                        passed.push(node);
                    } else {
                        used[d] = true;
                        chosen.push(node);
                    }
                    if chosen.len() == rf || seen == n || chosen.len() == self.domain_count {
                        break;
                    }
                }
                if chosen.len() < rf {
                    // Every domain holds one: continue clockwise for the rest.
                    for node in passed.into_iter().chain(self.walk(pos)) {
                        if !chosen.contains(&node) {
                            chosen.push(node);
                            if chosen.len() == rf {
                                break;
                            }
                        }
                    }
                }
            }
        }
        chosen
    }

    /// The ring's token positions, sorted.
    pub fn token_positions(&self) -> Vec<u64> {
        self.tokens.iter().map(|(t, _)| *t).collect()
    }

    /// Node indices clockwise from `pos`, once around the ring.
    fn walk(&self, pos: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.tokens.partition_point(|(t, _)| *t < pos);
        let len = self.tokens.len();
        (0..len).map(move |k| self.tokens[(start + k) % len].1 as usize)
    }

    /// The share of the ring each node is primary for (exact arc lengths; sums to 1). Only
    /// meaningful for the ring strategies.
    pub fn primary_shares(&self) -> Vec<f64> {
        let mut share = vec![0f64; self.nodes.len()];
        let len = self.tokens.len();
        for k in 0..len {
            // The arc (previous token, this token] belongs to this token's node.
            let (t, node) = self.tokens[k];
            let prev = self.tokens[(k + len - 1) % len].0;
            let arc = if len == 1 { u64::MAX } else { t.wrapping_sub(prev) };
            share[node as usize] += arc as f64 / u64::MAX as f64;
        }
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, ProptestConfig, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use std::collections::BTreeSet;

    fn layout(names: &[&str], strategy: Strategy, factor: usize) -> Layout {
        Layout {
            version: 1,
            nodes: names.iter().map(|n| NodeSpec::new(*n)).collect(),
            strategy,
            factor,
            vnodes: DEFAULT_VNODES,
        }
    }

    fn named(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("node-{i}")).collect()
    }

    fn ring(n: usize, strategy: Strategy, factor: usize) -> Ring {
        let names = named(n);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Ring::new(layout(&refs, strategy, factor)).unwrap()
    }

    fn keys(count: usize) -> impl Iterator<Item = String> {
        (0..count).map(|i| format!("photos/2026/{i:07}.jpg"))
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(
            Ring::new(layout(&["a"], Strategy::ConsistentHash, 0)).unwrap_err(),
            Error::ZeroFactor
        );
        assert_eq!(
            Ring::new(layout(&[], Strategy::ConsistentHash, 1)).unwrap_err(),
            Error::NoNodes
        );
        assert_eq!(
            Ring::new(layout(&["a", "a"], Strategy::ConsistentHash, 1)).unwrap_err(),
            Error::DuplicateNode("a".into())
        );
        let mut l = layout(&["a"], Strategy::ConsistentHash, 1);
        l.vnodes = 0;
        assert_eq!(Ring::new(l).unwrap_err(), Error::BadVnodes(0));
        let mut l = layout(&["a"], Strategy::ConsistentHash, 1);
        l.nodes[0].weight = 0;
        assert_eq!(Ring::new(l).unwrap_err(), Error::NoNodes);
        let mut l = layout(&["a", "b"], Strategy::ConsistentHash, 1);
        l.vnodes = 65_536;
        l.nodes[0].weight = 10_000;
        assert!(matches!(Ring::new(l).unwrap_err(), Error::TooManyTokens(_)));
    }

    #[test]
    fn simple_strategy_with_rf_n_puts_everything_everywhere() {
        let r = ring(2, Strategy::Simple, 2);
        for k in keys(100) {
            let set: BTreeSet<usize> = r.replicas("b", &k).into_iter().collect();
            assert_eq!(set, BTreeSet::from([0, 1]));
        }
    }

    #[test]
    fn factor_above_node_count_gives_every_node() {
        let r = ring(2, Strategy::ConsistentHash, 3);
        assert_eq!(r.factor(), 2);
        assert_eq!(r.replicas("b", "k").len(), 2);
    }

    #[test]
    fn node_order_in_the_layout_does_not_matter() {
        let a = Ring::new(layout(&["n1", "n2", "n3", "n4"], Strategy::ConsistentHash, 3)).unwrap();
        let b = Ring::new(layout(&["n3", "n1", "n4", "n2"], Strategy::ConsistentHash, 3)).unwrap();
        for k in keys(500) {
            assert_eq!(a.replica_names("b", &k), b.replica_names("b", &k));
        }
        // And the bucket is part of the position.
        let differs = keys(200)
            .filter(|k| a.replica_names("one", k) != a.replica_names("two", k))
            .count();
        assert!(differs > 100, "{differs}");
    }

    /// The figures the issue asks for: printed with `--no-capture`.
    #[test]
    fn balance_for_3_5_and_10_nodes() {
        for n in [3, 5, 10] {
            let r = ring(n, Strategy::ConsistentHash, 3.min(n));
            let shares = r.primary_shares();
            let (min, max) = shares
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
            // Replica ownership by sampling: how many of the keys each node holds a copy of.
            let mut held = vec![0u32; n];
            for k in keys(100_000) {
                for i in r.replicas("bucket", &k) {
                    held[i] += 1;
                }
            }
            let (hmin, hmax) = (held.iter().min().unwrap(), held.iter().max().unwrap());
            let replica_ratio = f64::from(*hmax) / f64::from(*hmin);
            println!(
                "{n} nodes, {DEFAULT_VNODES} vnodes: primary share max/min {:.3} ({:.4}..{:.4}); \
                 replica holdings (RF {}) max/min {replica_ratio:.3}",
                max / min,
                min,
                max,
                r.factor()
            );
            assert!(max / min < 1.35, "{n} nodes: primary shares {shares:?}");
            assert!(replica_ratio < 1.35, "{n} nodes: holdings {held:?}");
        }
    }

    #[test]
    fn weight_scales_ownership() {
        let mut l = layout(&["a", "b", "c"], Strategy::ConsistentHash, 1);
        l.nodes[0].weight = 200;
        let r = Ring::new(l).unwrap();
        let s = r.primary_shares();
        let ratio = s[0] / ((s[1] + s[2]) / 2.0);
        assert!((1.6..2.5).contains(&ratio), "{s:?}");
    }

    /// Adding one node to N moves about RF/(N+1) of the replica placements, only onto the new
    /// node; removing a node moves only the keys it held.
    #[test]
    fn minimal_movement_on_join_and_leave() {
        for (n, rf) in [(3, 2), (5, 3), (10, 3)] {
            let before = ring(n, Strategy::ConsistentHash, rf);
            let after = ring(n + 1, Strategy::ConsistentHash, rf);
            let new = format!("node-{}", n + 1);
            let total = 20_000;
            let mut changed = 0;
            for k in keys(total) {
                let a = before.replica_names("b", &k);
                let b = after.replica_names("b", &k);
                if a != b {
                    changed += 1;
                    assert!(b.contains(&new.as_str()), "{k}: {a:?} -> {b:?}");
                    let kept = a.iter().filter(|x| b.contains(x)).count();
                    assert_eq!(kept, rf - 1, "{k}: {a:?} -> {b:?}");
                }
            }
            let moved = changed as f64 / total as f64;
            let expected = rf as f64 / (n + 1) as f64;
            println!(
                "{n} -> {} nodes, RF {rf}: {moved:.3} of keys changed set (RF/(N+1) = {expected:.3})",
                n + 1
            );
            assert!(
                moved < expected * 1.3 && moved > expected * 0.7,
                "{moved} vs {expected}"
            );
            // Leaving: the reverse. Keys without the leaving node keep their set.
            for k in keys(total) {
                let a = after.replica_names("b", &k);
                if !a.contains(&new.as_str()) {
                    assert_eq!(a, before.replica_names("b", &k));
                }
            }
        }
    }

    #[test]
    fn zone_aware_spreads_over_zones() {
        let mut l = layout(&["a1", "a2", "b1", "b2", "c1", "c2"], Strategy::ZoneAware, 3);
        for n in &mut l.nodes {
            n.zone = n.name[..1].to_string();
        }
        let r = Ring::new(l.clone()).unwrap();
        for k in keys(2000) {
            let zones: BTreeSet<&str> = r.replica_names("b", &k).iter().map(|n| &n[..1]).collect();
            assert_eq!(zones.len(), 3, "{k}");
        }
        // Two zones for three replicas: both zones hold one, the third goes clockwise.
        l.nodes.retain(|n| !n.name.starts_with('c'));
        let r = Ring::new(l).unwrap();
        for k in keys(2000) {
            let names = r.replica_names("b", &k);
            let zones: BTreeSet<&str> = names.iter().map(|n| &n[..1]).collect();
            assert_eq!((names.len(), zones.len()), (3, 2), "{k}");
        }
    }

    #[test]
    fn rack_aware_spreads_over_racks_within_a_zone() {
        let mut l = layout(&["r1-a", "r1-b", "r2-a", "r2-b", "r3-a"], Strategy::RackAware, 3);
        for n in &mut l.nodes {
            n.zone = "z".into();
            n.rack = n.name[..2].to_string();
        }
        let r = Ring::new(l).unwrap();
        for k in keys(2000) {
            let racks: BTreeSet<&str> = r.replica_names("b", &k).iter().map(|n| &n[..2]).collect();
            assert_eq!(racks.len(), 3, "{k}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn replica_sets_are_distinct_full_and_stable(
            names in proptest::collection::btree_set("[a-z]{1,8}", 1..12),
            rf in 1usize..5,
            strategy in prop_oneof![
                Just(Strategy::Simple),
                Just(Strategy::ConsistentHash),
                Just(Strategy::RackAware),
                Just(Strategy::ZoneAware)
            ],
            zones in 1usize..4,
            key in ".{0,40}",
        ) {
            let mut l = Layout {
                version: 7,
                nodes: names.iter().map(NodeSpec::new).collect(),
                strategy,
                factor: rf,
                vnodes: 16,
            };
            for (i, n) in l.nodes.iter_mut().enumerate() {
                n.zone = format!("z{}", i % zones);
                n.rack = format!("r{}", i % 2);
            }
            let r = Ring::new(l.clone()).unwrap();
            let set = r.replicas("bucket", &key);
            prop_assert_eq!(set.len(), rf.min(names.len()));
            let distinct: BTreeSet<usize> = set.iter().copied().collect();
            prop_assert_eq!(distinct.len(), set.len());
            // Topology-aware: as many distinct domains as the factor and the topology allow.
            if strategy == Strategy::ZoneAware {
                let got: BTreeSet<&str> = set.iter().map(|i| r.nodes()[*i].zone.as_str()).collect();
                let have: BTreeSet<&str> = r.nodes().iter().map(|n| n.zone.as_str()).collect();
                prop_assert_eq!(got.len(), have.len().min(set.len()));
            }
            l.nodes.reverse();
            let reversed = Ring::new(l).unwrap();
            prop_assert_eq!(reversed.replica_names("bucket", &key), r.replica_names("bucket", &key));
        }

        #[test]
        fn a_join_only_moves_keys_onto_the_new_node(
            n in 2usize..8,
            rf in 1usize..4,
            key in ".{0,40}",
        ) {
            let before = ring(n, Strategy::ConsistentHash, rf);
            let after = ring(n + 1, Strategy::ConsistentHash, rf);
            let a = before.replica_names("b", &key);
            let b = after.replica_names("b", &key);
            let new = format!("node-{}", n + 1);
            if a != b {
                prop_assert!(b.contains(&new.as_str()));
            }
        }
    }
}
