//! Quorum arithmetic and the per-request state machines of the replicated data path (pure: no
//! IO, no clock). A coordinator feeds them replica answers, failures and its deadline; they say
//! when the request is decided, what to answer, and which replicas a read found stale (read
//! repair). The deterministic simulation in `sim.rs` drives exactly these against a faulty
//! network and checks what clients saw.

use ironbucket_types::Hlc;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use ironbucket_types::{BadConsistency, Consistency};

/// Orders versions of one key: hybrid-logical-clock time, then the coordinating node's id
/// (two coordinators can issue the same HLC value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: Hlc,
    pub node: u64,
}

/// A request that could not reach its level in time: the client gets a 503 naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub level: Consistency,
    pub needed: usize,
    pub got: usize,
    pub replicas: usize,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "consistency level {} needs {} of {} replicas and only {} answered in time; the request was not acknowledged",
            self.level, self.needed, self.replicas, self.got
        )
    }
}

/// Who answered and who failed, shared by reads and writes: decides exactly once. While data
/// moves between layouts a write's replicas form several sets (one per layout), and the level
/// must be met in each.
#[derive(Debug, Clone)]
struct Tally {
    level: Consistency,
    replicas: BTreeSet<String>,
    groups: Vec<BTreeSet<String>>,
    answered: BTreeSet<String>,
    failed: BTreeSet<String>,
    decided: bool,
}

impl Tally {
    fn new(replicas: impl IntoIterator<Item = String>, level: Consistency) -> Self {
        let set: BTreeSet<String> = replicas.into_iter().collect();
        Self::grouped(vec![set], level)
    }

    fn grouped(groups: Vec<BTreeSet<String>>, level: Consistency) -> Self {
        Self {
            level,
            replicas: groups.iter().flatten().cloned().collect(),
            groups,
            answered: BTreeSet::new(),
            failed: BTreeSet::new(),
            decided: false,
        }
    }

    fn needed_in(&self, g: &BTreeSet<String>) -> usize {
        self.level.required(g.len())
    }

    fn met(&self) -> bool {
        self.groups
            .iter()
            .all(|g| g.intersection(&self.answered).count() >= self.needed_in(g))
    }

    fn lost(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.len() - g.intersection(&self.failed).count() < self.needed_in(g))
    }

    /// The shortfall, told for the set that cannot (or did not) meet the level.
    fn unavailable(&self) -> Unavailable {
        let short = self
            .groups
            .iter()
            .find(|g| g.len() - g.intersection(&self.failed).count() < self.needed_in(g))
            .or_else(|| {
                self.groups
                    .iter()
                    .find(|g| g.intersection(&self.answered).count() < self.needed_in(g))
            })
            .or(self.groups.first());
        match short {
            Some(g) => Unavailable {
                level: self.level,
                needed: self.needed_in(g),
                got: g.intersection(&self.answered).count(),
                replicas: g.len(),
            },
            None => Unavailable {
                level: self.level,
                needed: 1,
                got: 0,
                replicas: 0,
            },
        }
    }

    /// Whether an answer from `node` still counts (undecided, a replica, not failed).
    fn accepts(&self, node: &str) -> bool {
        !self.decided && self.replicas.contains(node) && !self.failed.contains(node)
    }

    /// Records an answer; true when it meets the level (once).
    fn answer(&mut self, node: &str) -> bool {
        if !self.accepts(node) {
            return false;
        }
        self.answered.insert(node.to_string());
        self.decided = self.met();
        self.decided
    }

    /// Records a failure; the refusal once the level can no longer be met.
    fn fail(&mut self, node: &str) -> Option<Unavailable> {
        if self.decided || !self.replicas.contains(node) || self.answered.contains(node) {
            return None;
        }
        self.failed.insert(node.to_string());
        self.decided = self.lost();
        self.decided.then(|| self.unavailable())
    }

    /// The deadline passed (`REQUEST_TIMEOUT_MS`): undecided means unavailable.
    fn timeout(&mut self) -> Option<Unavailable> {
        if self.decided {
            return None;
        }
        self.decided = true;
        Some(self.unavailable())
    }
}

/// One write's progress towards its level.
#[derive(Debug, Clone)]
pub struct WriteQuorum(Tally);

impl WriteQuorum {
    pub fn new(replicas: impl IntoIterator<Item = String>, level: Consistency) -> Self {
        Self(Tally::new(replicas, level))
    }

    /// A write whose replicas form several sets (one per layout while data moves): the level
    /// must be met in each.
    pub fn sets(sets: &[Vec<String>], level: Consistency) -> Self {
        // The deliberately broken build (feature `unsafe-ack-before-quorum`): one replica is
        // enough, so the chaos suite can show that its checker catches lost writes.
        #[cfg(feature = "unsafe-ack-before-quorum")]
        let level = Consistency::One;
        Self(Tally::grouped(
            sets.iter().map(|s| s.iter().cloned().collect()).collect(),
            level,
        ))
    }

    /// A replica holds the write durably. `Some(Ok(acks))` the first time the level is met.
    pub fn ack(&mut self, node: &str) -> Option<Result<usize, Unavailable>> {
        let decided = self.0.answer(node);
        decided.then_some(Ok(self.0.answered.len()))
    }

    /// A replica refused or could not be reached (or is known down). `Some(Err)` once the level
    /// can no longer be met.
    pub fn fail(&mut self, node: &str) -> Option<Result<usize, Unavailable>> {
        self.0.fail(node).map(Err)
    }

    pub fn timeout(&mut self) -> Option<Result<usize, Unavailable>> {
        self.0.timeout().map(Err)
    }

    /// Whether replicas `holding` meet `level` in every set of `sets`.
    pub fn met_by<'a>(sets: &[Vec<String>], level: Consistency, holding: impl IntoIterator<Item = &'a str>) -> bool {
        let mut q = Self::sets(sets, level);
        holding.into_iter().any(|n| matches!(q.ack(n), Some(Ok(_))))
    }
}

/// What a read decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult<V> {
    /// The newest version among the answers (`None`: no replica holds the key).
    pub newest: Option<(Stamp, V)>,
    /// Replicas that answered with something older (or nothing): to repair in the background.
    pub stale: Vec<String>,
}

/// One read's progress towards its level.
#[derive(Debug, Clone)]
pub struct ReadQuorum<V> {
    tally: Tally,
    answers: BTreeMap<String, Option<(Stamp, V)>>,
}

impl<V: Clone> ReadQuorum<V> {
    pub fn new(replicas: impl IntoIterator<Item = String>, level: Consistency) -> Self {
        Self {
            tally: Tally::new(replicas, level),
            answers: BTreeMap::new(),
        }
    }

    /// The newest answer, and who answered with something older.
    pub fn resolve(&self) -> ReadResult<V> {
        let newest = self.answers.values().flatten().max_by_key(|(s, _)| *s).cloned();
        let stale = self
            .answers
            .iter()
            .filter(|(_, a)| a.as_ref().map(|(s, _)| *s) < newest.as_ref().map(|(s, _)| *s))
            .map(|(n, _)| n.clone())
            .collect();
        ReadResult { newest, stale }
    }

    /// A replica's answer: its newest version of the key, or `None` when it has none.
    pub fn answer(&mut self, node: &str, version: Option<(Stamp, V)>) -> Option<Result<ReadResult<V>, Unavailable>> {
        if !self.tally.accepts(node) {
            return None;
        }
        self.answers.insert(node.to_string(), version);
        self.tally.answer(node).then(|| Ok(self.resolve()))
    }

    pub fn fail(&mut self, node: &str) -> Option<Result<ReadResult<V>, Unavailable>> {
        self.tally.fail(node).map(Err)
    }

    pub fn timeout(&mut self) -> Option<Result<ReadResult<V>, Unavailable>> {
        self.tally.timeout().map(Err)
    }
}

/// What a replica does with an incoming version of a key it may already hold: last writer (by
/// stamp) wins; an equal stamp is the same write delivered twice.
pub fn newer(incoming: Stamp, held: Option<Stamp>) -> bool {
    held.is_none_or(|h| incoming > h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    fn stamp(ms: u64, node: u64) -> Stamp {
        Stamp {
            hlc: Hlc {
                physical: ms,
                logical: 0,
            },
            node,
        }
    }

    #[test]
    fn levels_parse_and_count() {
        assert_eq!("quorum".parse::<Consistency>().unwrap(), Consistency::Quorum);
        assert_eq!(" ALL ".parse::<Consistency>().unwrap(), Consistency::All);
        let e = "TWO".parse::<Consistency>().unwrap_err().to_string();
        assert!(e.contains("TWO") && e.contains("QUORUM"), "{e}");
        for (rf, one, q, all) in [(1, 1, 1, 1), (2, 1, 2, 2), (3, 1, 2, 3), (4, 1, 3, 4), (5, 1, 3, 5)] {
            assert_eq!(Consistency::One.required(rf), one);
            assert_eq!(Consistency::Quorum.required(rf), q);
            assert_eq!(Consistency::All.required(rf), all);
        }
        assert!(Consistency::Quorum.overlaps(Consistency::Quorum, 3));
        assert!(!Consistency::One.overlaps(Consistency::One, 3));
        assert!(Consistency::One.overlaps(Consistency::All, 3));
        assert!(Consistency::One.overlaps(Consistency::All, 2));
    }

    #[test]
    fn write_quorum_met_by_holders() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let one = vec![set(&["a", "b", "c"])];
        assert!(WriteQuorum::met_by(&one, Consistency::Quorum, ["a", "c"]));
        assert!(!WriteQuorum::met_by(&one, Consistency::Quorum, ["a"]));
        assert!(!WriteQuorum::met_by(&one, Consistency::Quorum, ["a", "x"]));
        assert!(!WriteQuorum::met_by(&one, Consistency::All, ["a", "b"]));
        // While data moves: the level in each layout's set.
        let two = vec![set(&["a", "b", "c"]), set(&["b", "c", "d"])];
        assert!(!WriteQuorum::met_by(&two, Consistency::Quorum, ["a", "b"]));
        assert!(WriteQuorum::met_by(&two, Consistency::Quorum, ["a", "b", "d"]));
    }

    #[test]
    fn write_quorum_decides_once() {
        let mut w = WriteQuorum::new(names(3), Consistency::Quorum);
        assert_eq!(w.ack("n0"), None);
        assert_eq!(w.ack("stranger"), None);
        assert_eq!(w.ack("n0"), None, "a duplicate ack counts once");
        assert_eq!(w.ack("n1"), Some(Ok(2)));
        assert_eq!(w.ack("n2"), None);
        assert_eq!(w.timeout(), None);

        let mut w = WriteQuorum::new(names(3), Consistency::All);
        assert_eq!(w.ack("n0"), None);
        let e = w.fail("n1").unwrap().unwrap_err();
        assert_eq!((e.needed, e.got, e.replicas), (3, 1, 3));
        assert!(e.to_string().contains("consistency level ALL needs 3 of 3"), "{e}");
        assert_eq!(w.ack("n2"), None, "decided");

        let mut w = WriteQuorum::new(names(3), Consistency::One);
        assert_eq!(w.fail("n0"), None);
        assert_eq!(w.fail("n1"), None);
        assert!(w.timeout().unwrap().is_err());
    }

    #[test]
    fn reads_pick_the_newest_and_name_the_stale() {
        let mut r = ReadQuorum::new(names(3), Consistency::All);
        assert_eq!(r.answer("n0", Some((stamp(5, 1), "old"))), None);
        assert_eq!(r.answer("n1", None), None);
        let got = r.answer("n2", Some((stamp(9, 2), "new"))).unwrap().unwrap();
        assert_eq!(got.newest, Some((stamp(9, 2), "new")));
        assert_eq!(got.stale, vec!["n0".to_string(), "n1".to_string()]);
        let mut r: ReadQuorum<&str> = ReadQuorum::new(names(3), Consistency::Quorum);
        assert_eq!(r.fail("n0"), None);
        let e = r.fail("n1").unwrap().unwrap_err();
        assert_eq!((e.level, e.needed, e.got), (Consistency::Quorum, 2, 0));
        // Stamps order by HLC, then by node for equal HLC values.
        assert!(stamp(5, 2) > stamp(5, 1) && stamp(6, 1) > stamp(5, 2));
        assert!(newer(stamp(5, 1), None) && !newer(stamp(5, 1), Some(stamp(5, 1))));
    }

    #[test]
    fn a_write_during_a_move_needs_its_level_in_each_set() {
        let sets = vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["b".to_string(), "c".to_string()],
        ];
        let mut w = WriteQuorum::sets(&sets, Consistency::Quorum);
        assert_eq!(w.ack("a"), None);
        assert_eq!(w.ack("b"), None, "the new set has only b");
        assert_eq!(w.ack("c"), Some(Ok(3)));
        let mut w = WriteQuorum::sets(&sets, Consistency::One);
        assert_eq!(w.ack("a"), None, "the new set has none yet");
        assert_eq!(w.ack("c"), Some(Ok(2)));
        let mut w = WriteQuorum::sets(&sets, Consistency::One);
        assert_eq!(w.ack("b"), Some(Ok(1)), "b is in both sets");
        let mut w = WriteQuorum::sets(&sets, Consistency::Quorum);
        assert_eq!(w.ack("a"), None);
        let e = w.fail("c").unwrap().unwrap_err();
        assert_eq!((e.needed, e.got, e.replicas), (2, 0, 2), "told for the new set");
    }

    proptest! {
        /// Whatever the order of acks and failures, a write is decided exactly once, and it is
        /// acknowledged iff at least `needed` replicas acked before `replicas - needed + 1` failed.
        #[test]
        fn write_decisions_match_the_count(rf in 1usize..6, level in 0u8..3, events in proptest::collection::vec((0usize..6, any::<bool>()), 0..20)) {
            let level = [Consistency::One, Consistency::Quorum, Consistency::All][level as usize];
            let mut w = WriteQuorum::new(names(rf), level);
            let needed = level.required(rf);
            let (mut acked, mut failed) = (BTreeSet::new(), BTreeSet::new());
            let mut decisions = Vec::new();
            for (i, ok) in events {
                let n = format!("n{i}");
                let d = if ok { w.ack(&n) } else { w.fail(&n) };
                if i < rf && decisions.is_empty() && !acked.contains(&n) && !failed.contains(&n) {
                    if ok { acked.insert(n); } else { failed.insert(n); }
                }
                if let Some(d) = d {
                    decisions.push(d);
                }
            }
            prop_assert!(decisions.len() <= 1);
            match decisions.first() {
                Some(Ok(a)) => prop_assert!(*a >= needed && acked.len() >= needed),
                Some(Err(_)) => prop_assert!(rf - failed.len() < needed),
                None => prop_assert!(acked.len() < needed && rf - failed.len() >= needed),
            }
        }
    }
}
