//! What became of the values a replica's record of a key held before its current one.
//!
//! A replica keeps one record per key: the last value it accepted. When a round's value is
//! accepted by some replicas only and a concurrent round's value then replaces it there, the
//! first round's proposer can no longer tell from the records whether its value took effect
//! (another round may have finished and committed it before going on with its own). So each
//! record also lists, for a while, the values it replaced and what became of each on this
//! replica: applied to its store, not applied, or unknown (its commit failed with an error that
//! may have left it durable). A proposer that hears from every replica of the key, none of them
//! holding its value any more and every one listing what it replaced, knows whether its value
//! took effect, instead of answering "outcome unknown".

use super::{Ballot, Staged};
use crate::quorum::Stamp;
use ironbucket_store::LocalStore;
use serde::{Deserialize, Serialize};

/// At most this many replaced values are remembered per key; beyond, the one replaced under the
/// lowest ballot is forgotten (and the history says up to which ballot it forgot).
const HISTORY_MAX: usize = 16;

/// What became of a replaced value on the replica that held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Fate {
    /// Committed: applied to the replica's store.
    Applied,
    /// Never applied there.
    NotApplied,
    /// Its commit failed with an error that may have left it durable, or the store holds a newer
    /// version of the key that hides whether it was applied.
    Unknown,
}

/// A replaced value and its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Replaced {
    pub value: Stamp,
    pub fate: Fate,
    /// The ballot it was replaced under (a value is replaced under a ballot at least its own
    /// stamp).
    pub at: Ballot,
}

/// The values a record replaced, the latest [`HISTORY_MAX`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct History {
    /// The record listed every value it replaced from its start (except those forgotten, below).
    /// False in a record written by a version that kept no list (the default when reading one).
    #[serde(default)]
    pub complete: bool,
    /// Values replaced under ballots up to this one may have been forgotten.
    #[serde(default)]
    pub forgot_up_to: Option<Ballot>,
    #[serde(default)]
    pub replaced: Vec<Replaced>,
}

impl History {
    /// The history of a record that replaced nothing.
    pub fn fresh() -> Self {
        Self {
            complete: true,
            forgot_up_to: None,
            replaced: Vec::new(),
        }
    }

    /// Notes that `value` was replaced under ballot `at` with `fate`.
    pub fn push(&mut self, value: Stamp, fate: Fate, at: Ballot) {
        self.replaced.push(Replaced { value, fate, at });
        while self.replaced.len() > HISTORY_MAX {
            let Some((i, oldest)) = self.replaced.iter().enumerate().min_by_key(|(_, r)| r.at) else {
                break;
            };
            self.forgot_up_to = self.forgot_up_to.max(Some(oldest.at));
            self.replaced.remove(i);
        }
    }

    /// Whether the list names `value` if the record ever replaced it.
    fn covers(&self, value: Stamp) -> bool {
        self.complete && self.forgot_up_to.is_none_or(|f| f < value)
    }
}

/// The fate of `value`, accepted but not committed by this replica, as its store shows it:
/// applied when the key's newest version is that value's, unknown when a newer one hides it or
/// when a commit of it failed (`commit_failed`) without the store showing it, not applied
/// otherwise. Only writes that make a version of their own are told apart; metadata changes
/// and deletes of one version are unknown.
pub(crate) fn fate_uncommitted(local: &LocalStore, value: &Staged, commit_failed: bool) -> Fate {
    let makes_version = match value {
        Staged::Put(_) | Staged::Complete(_) => true,
        Staged::Delete(d) => d.version_id.is_none(),
        Staged::Meta(_) => false,
    };
    if !makes_version {
        return Fate::Unknown;
    }
    let stamp = value.stamp();
    match local.newest_version(value.bucket(), value.key(), None) {
        Ok(Some(v)) => {
            let newest = Stamp {
                hlc: v.hlc,
                node: v.origin,
            };
            if newest == stamp {
                Fate::Applied
            } else if newest > stamp || commit_failed {
                Fate::Unknown
            } else {
                Fate::NotApplied
            }
        }
        Ok(None) if !commit_failed => Fate::NotApplied,
        _ => Fate::Unknown,
    }
}

/// What the histories of the promisers say of `value` (none of them holding it as its current
/// record any more): applied when any applied it, unknown when any cannot tell, not applied
/// when every one covers it (`None`: an older node's promise, which sends none) and none
/// applied it. `None` when that cannot be concluded.
pub(crate) fn fate_of<'a>(value: Stamp, histories: impl IntoIterator<Item = Option<&'a History>>) -> Option<Fate> {
    let mut all_known = true;
    let mut unknown = false;
    for h in histories {
        let Some(h) = h else {
            all_known = false;
            continue;
        };
        all_known &= h.covers(value);
        for r in h.replaced.iter().filter(|r| r.value == value) {
            match r.fate {
                Fate::Applied => return Some(Fate::Applied),
                Fate::Unknown => unknown = true,
                Fate::NotApplied => {}
            }
        }
    }
    if unknown {
        Some(Fate::Unknown)
    } else if all_known {
        Some(Fate::NotApplied)
    } else {
        None
    }
}

/// What a proposer concludes of its earlier value, which its promisers no longer hold as their
/// last accepted value (a concurrent round replaced it there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It took effect (some replica applied it) and was replaced since: the request succeeded.
    TookEffect,
    /// It never took effect and never will: the request decides afresh.
    Dead,
    /// Cannot be told: the request answers 503, outcome unknown.
    Unknown,
}

/// The verdict on a replaced value from `fate` (what the promisers' histories say of it,
/// [`fate_of`]), whether `everyone` (every replica of the key) promised, whether any promiser
/// still holds it (`anywhere`), and whether a later value was committed since (`commit_since`).
/// - applied by any: it took effect;
/// - every replica promised, none holds it, and nothing was committed since or no replica ever
///   applied it: it was never chosen (or never took effect) and never will be;
/// - or the promisers (a quorum in every set, as any prepare) all replaced it unapplied and a
///   later value was committed since, though a replica did not answer: had it been chosen, the
///   rounds that replaced it on them would have finished it first (Paxos), and a commit of it
///   would have been applied by one of them; the silent replica (a disk refusing writes cannot
///   even promise) may still hold it, under a ballot below theirs, which no round takes up
///   (ADR 0015);
/// - otherwise unknown.
pub(crate) fn verdict(fate: Option<Fate>, everyone: bool, anywhere: bool, commit_since: bool) -> Verdict {
    if fate == Some(Fate::Applied) {
        return Verdict::TookEffect;
    }
    let not_applied = fate == Some(Fate::NotApplied);
    let none_hold = everyone && !anywhere && (!commit_since || not_applied);
    let superseded = !anywhere && commit_since && not_applied;
    if none_hold || superseded {
        Verdict::Dead
    } else {
        Verdict::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironbucket_types::Hlc;

    fn stamp(ms: u64) -> Stamp {
        Stamp {
            hlc: Hlc {
                physical: ms,
                logical: 0,
            },
            node: 1,
        }
    }

    fn history(entries: &[(u64, Fate)]) -> History {
        let mut h = History::fresh();
        for (ms, fate) in entries {
            h.push(stamp(*ms), *fate, stamp(*ms + 1));
        }
        h
    }

    #[test]
    fn a_long_history_forgets_the_lowest_ballots_and_covers_only_what_came_after() {
        let h = history(
            &(1..=HISTORY_MAX as u64 + 2)
                .map(|i| (i * 10, Fate::NotApplied))
                .collect::<Vec<_>>(),
        );
        assert_eq!(h.replaced.len(), HISTORY_MAX);
        // Values 10 and 20 (replaced under 11 and 21) were forgotten.
        assert_eq!(h.forgot_up_to, Some(stamp(21)));
        assert!(!h.covers(stamp(20)));
        assert!(h.covers(stamp(30)));
    }

    #[test]
    fn a_record_from_before_histories_covers_nothing() {
        let old: History = serde_json::from_str("{}").unwrap();
        assert!(!old.covers(stamp(5)));
        assert!(!History::default().covers(stamp(5)));
        assert!(History::fresh().covers(stamp(5)));
    }

    /// A replica's acceptor and store in a temporary directory, with bucket `bkt`.
    async fn replica() -> (
        tempfile::TempDir,
        crate::cas::acceptor::Acceptor,
        std::sync::Arc<LocalStore>,
    ) {
        use ironbucket_store::ObjectStore;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ironbucket_store::LocalConfig::new(dir.path().join("store"));
        cfg.storage.fsync = false;
        let local = LocalStore::open(cfg, None).unwrap();
        local.create_bucket("bkt").await.unwrap();
        let acceptor = crate::cas::acceptor::Acceptor::open(&dir.path().join("node"), 5_000, false);
        (dir, acceptor, local)
    }

    /// A delete marker for `bkt/k` stamped `ms` (a value without a body that makes a version).
    fn marker(ms: u64) -> Staged {
        Staged::Delete(crate::wire::DeleteAt {
            bucket: "bkt".into(),
            key: "k".into(),
            version_id: None,
            bypass: false,
            hlc: Hlc {
                physical: ms,
                logical: 0,
            },
            origin: 1,
        })
    }

    async fn accept(a: &crate::cas::acceptor::Acceptor, local: &LocalStore, v: &Staged) {
        let b = v.stamp();
        let p = a
            .prepare(local, "bkt", "k", b, super::super::CasRead::Head)
            .await
            .unwrap();
        assert!(p.promised);
        let h = super::super::AcceptHeader {
            ballot: b,
            value: v.clone(),
        };
        let r = a.accept(local, h, Box::pin(futures::stream::empty())).await.unwrap();
        assert!(matches!(r, super::super::AcceptReply::Accepted));
        // The round lets the key go (the next one need not wait out its hold).
        a.release("bkt", "k", b);
    }

    #[tokio::test]
    async fn a_replica_remembers_the_values_it_replaced_and_whether_it_applied_them() {
        let (_dir, a, local) = replica().await;
        let now = ironbucket_types::now_millis();
        let (first, second, third) = (marker(now), marker(now + 1), marker(now + 2));
        // `first` is accepted and replaced before any commit; `second` is committed, then
        // replaced by `third`.
        accept(&a, &local, &first).await;
        accept(&a, &local, &second).await;
        a.commit(&local, "bkt", "k", second.stamp()).await.unwrap();
        accept(&a, &local, &third).await;
        let p = a
            .prepare(&local, "bkt", "k", marker(now + 3).stamp(), super::super::CasRead::Head)
            .await
            .unwrap();
        let h = p.replaced.expect("a history");
        assert_eq!(fate_of(first.stamp(), [Some(&h)]), Some(Fate::NotApplied));
        assert_eq!(fate_of(second.stamp(), [Some(&h)]), Some(Fate::Applied));
        // `third` is the record's current value, not a replaced one.
        assert!(h.replaced.iter().all(|r| r.value != third.stamp()));
        // An older node's promise (no history) leaves "not applied" undecided.
        assert_eq!(fate_of(first.stamp(), [Some(&h), None]), None);
    }

    #[tokio::test]
    async fn an_uncommitted_value_is_told_applied_or_not_by_the_store() {
        let (_dir, a, local) = replica().await;
        let now = ironbucket_types::now_millis();
        let (v, newer) = (marker(now), marker(now + 1));
        assert_eq!(fate_uncommitted(&local, &v, false), Fate::NotApplied);
        // A commit that failed may have left it durable.
        assert_eq!(fate_uncommitted(&local, &v, true), Fate::Unknown);
        accept(&a, &local, &v).await;
        a.commit(&local, "bkt", "k", v.stamp()).await.unwrap();
        assert_eq!(fate_uncommitted(&local, &v, false), Fate::Applied);
        accept(&a, &local, &newer).await;
        a.commit(&local, "bkt", "k", newer.stamp()).await.unwrap();
        // A newer version hides whether the older one was applied.
        assert_eq!(fate_uncommitted(&local, &v, false), Fate::Unknown);
    }

    #[test]
    fn applied_anywhere_wins_unknown_next_and_not_applied_needs_every_history() {
        let v = stamp(70);
        let applied = history(&[(70, Fate::Applied)]);
        let unknown = history(&[(70, Fate::Unknown)]);
        let not = history(&[(70, Fate::NotApplied)]);
        let other = history(&[(80, Fate::Applied)]);
        let empty = History::fresh();
        assert_eq!(fate_of(v, [Some(&not), None, Some(&applied)]), Some(Fate::Applied));
        assert_eq!(fate_of(v, [Some(&not), Some(&unknown)]), Some(Fate::Unknown));
        assert_eq!(
            fate_of(v, [Some(&not), Some(&other), Some(&empty)]),
            Some(Fate::NotApplied)
        );
        assert_eq!(fate_of(v, [Some(&not), None]), None);
        assert_eq!(fate_of(v, [Some(&not), Some(&History::default())]), None);
    }

    #[test]
    fn the_verdict_on_a_replaced_value() {
        use Fate::{Applied, NotApplied};
        use Verdict::{Dead, TookEffect};
        // Applied anywhere: it took effect, whoever answered.
        assert_eq!(verdict(Some(Applied), false, false, true), TookEffect);
        assert_eq!(verdict(Some(Applied), true, true, false), TookEffect);
        // Everyone promised and none holds it: dead when nothing was committed since, or when
        // no replica ever applied it.
        assert_eq!(verdict(None, true, false, false), Dead);
        assert_eq!(verdict(Some(NotApplied), true, false, true), Dead);
        assert_eq!(
            verdict(None, true, false, true),
            Verdict::Unknown,
            "a commit since, fate not known"
        );
        assert_eq!(verdict(Some(Fate::Unknown), true, false, true), Verdict::Unknown);
        // A promiser still holds it: it may yet be chosen.
        assert_eq!(verdict(Some(NotApplied), true, true, true), Verdict::Unknown);
        assert_eq!(verdict(None, true, true, false), Verdict::Unknown);
        // A replica did not answer: dead only when the promisers all replaced it unapplied and
        // a later value was committed since (the chaos suite's read-only-disk case).
        assert_eq!(verdict(Some(NotApplied), false, false, true), Dead);
        assert_eq!(
            verdict(Some(NotApplied), false, false, false),
            Verdict::Unknown,
            "nothing committed since"
        );
        assert_eq!(
            verdict(None, false, false, true),
            Verdict::Unknown,
            "a history does not cover it"
        );
        assert_eq!(
            verdict(Some(Fate::Unknown), false, false, true),
            Verdict::Unknown,
            "a commit of it failed"
        );
        assert_eq!(
            verdict(Some(NotApplied), false, true, true),
            Verdict::Unknown,
            "a promiser holds it"
        );
    }
}
