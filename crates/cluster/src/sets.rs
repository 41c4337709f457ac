//! A ring's replica sets, for anti-entropy: which set of nodes holds each ring position. Two
//! replicas compare only what both hold, so each node keeps its anti-entropy tree per replica
//! set (a *class*). A set's id is a hash of its sorted node names, so it is the same on every
//! node and across layouts that keep the set.

use crate::placement::{Ring, Strategy};
use xxhash_rust::xxh3::Xxh3;

/// Every replica set of a ring, and the set of any position.
#[derive(Debug, Clone)]
pub struct ReplicaSets {
    /// Distinct sets: node names, sorted.
    sets: Vec<Vec<String>>,
    ids: Vec<u64>,
    lookup: Lookup,
    fingerprint: u64,
}

#[derive(Debug, Clone)]
enum Lookup {
    /// `pos % n` picks the set (SimpleStrategy): its index into `sets` per residue.
    Residue(Vec<u32>),
    /// The arc ending at each token (sorted) and its set's index.
    Arcs(Vec<u64>, Vec<u32>),
}

/// The id of a set of node names (any order).
pub fn set_id(names: &[String]) -> u64 {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    let mut h = Xxh3::new();
    for n in sorted {
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
    }
    h.digest()
}

impl ReplicaSets {
    pub fn of(ring: &Ring) -> Self {
        let mut sets: Vec<Vec<String>> = Vec::new();
        let mut index_of = |replicas: Vec<usize>| -> u32 {
            let mut names: Vec<String> = replicas.iter().map(|i| ring.nodes()[*i].name.clone()).collect();
            names.sort();
            match sets.iter().position(|s| *s == names) {
                Some(p) => p as u32,
                None => {
                    sets.push(names);
                    (sets.len() - 1) as u32
                }
            }
        };
        let layout = ring.layout();
        let lookup = match layout.strategy {
            Strategy::Simple => {
                let n = ring.nodes().len() as u64;
                Lookup::Residue((0..n).map(|r| index_of(ring.replicas_at(r))).collect())
            }
            _ => {
                let tokens = ring.token_positions();
                let idx = tokens.iter().map(|t| index_of(ring.replicas_at(*t))).collect();
                Lookup::Arcs(tokens, idx)
            }
        };
        let ids = sets.iter().map(|s| set_id(s)).collect();
        let mut h = Xxh3::new();
        h.update(format!("{}/{}/{}", layout.strategy, ring.factor(), layout.vnodes).as_bytes());
        for n in ring.nodes() {
            h.update(format!("|{}/{}/{}/{}", n.name, n.zone, n.rack, n.weight).as_bytes());
        }
        Self {
            sets,
            ids,
            lookup,
            fingerprint: h.digest(),
        }
    }

    /// The index (into [`ReplicaSets::sets`]) of the set holding `pos`.
    pub fn index_of(&self, pos: u64) -> usize {
        match &self.lookup {
            Lookup::Residue(by) => by[(pos % by.len() as u64) as usize] as usize,
            Lookup::Arcs(tokens, idx) => {
                let k = tokens.partition_point(|t| *t < pos);
                idx[k % tokens.len()] as usize
            }
        }
    }

    /// The id of the set holding `pos`.
    pub fn class_of(&self, pos: u64) -> u64 {
        self.ids[self.index_of(pos)]
    }

    /// Every distinct set (sorted node names) with its id.
    pub fn sets(&self) -> impl Iterator<Item = (u64, &[String])> {
        self.ids.iter().copied().zip(self.sets.iter().map(Vec::as_slice))
    }

    /// The nodes of set `id`, if the ring has it.
    pub fn nodes_of(&self, id: u64) -> Option<&[String]> {
        self.ids.iter().position(|i| *i == id).map(|p| self.sets[p].as_slice())
    }

    /// Equal for two rings exactly when they place every position alike.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{DEFAULT_VNODES, Layout, NodeSpec};

    fn ring(n: usize, strategy: Strategy, factor: usize) -> Ring {
        Ring::new(Layout {
            version: 1,
            nodes: (1..=n).map(|i| NodeSpec::new(format!("node-{i}"))).collect(),
            strategy,
            factor,
            vnodes: DEFAULT_VNODES,
        })
        .unwrap()
    }

    #[test]
    fn every_position_gets_the_set_placement_names() {
        for strategy in [Strategy::Simple, Strategy::ConsistentHash, Strategy::RackAware] {
            for (n, rf) in [(1, 1), (3, 2), (3, 3), (5, 3)] {
                let r = ring(n, strategy, rf);
                let sets = ReplicaSets::of(&r);
                for i in 0..3000u64 {
                    let key = format!("k{i}");
                    let pos = Ring::position("b", &key);
                    let mut want: Vec<String> = r.replica_names("b", &key).into_iter().map(str::to_string).collect();
                    want.sort();
                    assert_eq!(sets.sets[sets.index_of(pos)], want, "{strategy} {n}/{rf} {key}");
                    assert_eq!(sets.class_of(pos), set_id(&want));
                }
                // Positions at and next to tokens.
                if let Lookup::Arcs(tokens, _) = &sets.lookup {
                    for t in tokens.iter().take(50) {
                        for pos in [t.wrapping_sub(1), *t, t.wrapping_add(1)] {
                            let mut want: Vec<String> =
                                r.replicas_at(pos).iter().map(|i| r.nodes()[*i].name.clone()).collect();
                            want.sort();
                            assert_eq!(sets.sets[sets.index_of(pos)], want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn ids_and_fingerprints_are_stable_and_distinguish() {
        let a = ReplicaSets::of(&ring(3, Strategy::Simple, 2));
        let b = ReplicaSets::of(&ring(3, Strategy::Simple, 2));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.sets().count(), 3);
        let c = ReplicaSets::of(&ring(4, Strategy::Simple, 2));
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_ne!(
            a.fingerprint(),
            ReplicaSets::of(&ring(3, Strategy::ConsistentHash, 2)).fingerprint()
        );
        // RF = N: one set, whatever the strategy.
        let all = ReplicaSets::of(&ring(3, Strategy::ConsistentHash, 3));
        assert_eq!(all.sets().count(), 1);
        assert_eq!(set_id(&["b".into(), "a".into()]), set_id(&["a".into(), "b".into()]));
    }
}
