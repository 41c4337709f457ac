//! The checker: from the records of a run (the load's operations, then final reads and
//! listings through every node once the faults are over) it finds
//! - wrong reads: bytes that are no value ever written to the key, or a listing ETag of none;
//! - lost acknowledged writes: a key whose final value is older than an acknowledged write that
//!   nothing later replaced (a deleted key that came back is one);
//! - histories that are not linearizable, per key (a read older than an acknowledged write
//!   that finished before it began, reads going back in time), by the Wing & Gong / Lowe search
//!   of `ironbucket_testkit::linearizable`, with operations of unknown outcome allowed to take
//!   effect at any time after they were sent, or never;
//! - final listings that differ from the final reads;
//! - requests refused with a 4xx, which this load never provokes (a conditional write's 412 or
//!   409 is an answer, not a refusal: the history checks that its condition was indeed false).

use crate::workload::{Kind, Outcome, Record, etag};
use ironbucket_testkit::linearizable::{self, Event, Op, Outcome as LinOutcome};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub acknowledged_writes: usize,
    pub unknown_writes: usize,
    /// Conditional writes (`If-None-Match: *`, `If-Match`) acknowledged, and answered that
    /// their condition did not hold.
    pub conditional_done: usize,
    pub conditional_failed: usize,
    pub reads: usize,
    pub keys_checked: usize,
    pub wrong_reads: Vec<String>,
    pub lost_writes: Vec<String>,
    pub resurrected: Vec<String>,
    pub not_linearizable: Vec<String>,
    /// Keys the search could not decide within its budget (not a pass).
    pub undecided: Vec<String>,
    pub listing_mismatches: Vec<String>,
    pub unexpected_errors: Vec<String>,
    /// Nodes that did not take a write at consistency ALL after the heal (their store stayed
    /// broken after the fault), with the last error.
    pub not_recovered: Vec<String>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.wrong_reads.is_empty()
            && self.lost_writes.is_empty()
            && self.resurrected.is_empty()
            && self.not_linearizable.is_empty()
            && self.undecided.is_empty()
            && self.listing_mismatches.is_empty()
            && self.unexpected_errors.is_empty()
            && self.not_recovered.is_empty()
    }
}

/// The value a write leaves, if it is one (a delete leaves none).
fn written(op: &Op<u64>) -> Option<u64> {
    match op {
        Op::Put(id) | Op::Create(id) | Op::Swap { value: id, .. } => Some(*id),
        _ => None,
    }
}

/// The events that may have changed the key: writes and deletes, but for conditional writes
/// whose condition was answered false.
fn changes(h: &[Event<u64>]) -> Vec<&Event<u64>> {
    h.iter()
        .filter(|e| !matches!(e.op, Op::Read(_)) && e.outcome != LinOutcome::Failed)
        .collect()
}

/// Checks a run: `records` are the load's operations, `finals` the reads and listings made
/// after it (every one later than every operation of the load).
pub fn check(records: &[Record], finals: &[Record], max_size: usize, budget: usize) -> Verdict {
    let mut v = Verdict::default();
    // Each record with whether it is one of the final reads and listings.
    let all: Vec<(&Record, bool)> = records
        .iter()
        .map(|r| (r, false))
        .chain(finals.iter().map(|r| (r, true)))
        .collect();
    let mut by_key: BTreeMap<usize, Vec<(&Record, bool)>> = BTreeMap::new();
    for &(r, is_final) in &all {
        if let Outcome::Rejected(st, m) = &r.outcome {
            v.unexpected_errors
                .push(format!("{:?} k{:03} via node {}: {st} {m}", r.kind, r.key, r.node + 1));
        }
        if !matches!(r.kind, Kind::List) {
            by_key.entry(r.key).or_default().push((r, is_final));
        }
    }
    // The values that may be stored: writes acknowledged or of unknown outcome.
    let mut legit: HashMap<usize, HashSet<u64>> = HashMap::new();
    for (r, _) in &all {
        if let (Kind::Put(id) | Kind::Create(id) | Kind::Swap { value: id, .. }, Outcome::Done | Outcome::Unknown(_)) =
            (&r.kind, &r.outcome)
        {
            legit.entry(r.key).or_default().insert(*id);
        }
    }
    let mut final_value: BTreeMap<usize, Option<u64>> = BTreeMap::new();
    for (key, ops) in &by_key {
        let ids = legit.get(key).cloned().unwrap_or_default();
        let mut history = Vec::new();
        for &(r, is_final) in ops {
            let (op, outcome) = match (&r.kind, &r.outcome) {
                (Kind::Put(id), Outcome::Done) => (Op::Put(*id), LinOutcome::Ok),
                (Kind::Put(id), Outcome::Unknown(_)) => (Op::Put(*id), LinOutcome::Unknown),
                (Kind::Create(id), Outcome::Done) => (Op::Create(*id), LinOutcome::Ok),
                (Kind::Create(id), Outcome::Unknown(_)) => (Op::Create(*id), LinOutcome::Unknown),
                (Kind::Create(id), Outcome::ConditionFailed(_)) => (Op::Create(*id), LinOutcome::Failed),
                (
                    Kind::Swap { expected, value },
                    out @ (Outcome::Done | Outcome::Unknown(_) | Outcome::ConditionFailed(_)),
                ) => (
                    Op::Swap {
                        expected: *expected,
                        value: *value,
                    },
                    match out {
                        Outcome::Done => LinOutcome::Ok,
                        Outcome::Unknown(_) => LinOutcome::Unknown,
                        _ => LinOutcome::Failed,
                    },
                ),
                (Kind::Delete, Outcome::Done) => (Op::Delete, LinOutcome::Ok),
                (Kind::Delete, Outcome::Unknown(_)) => (Op::Delete, LinOutcome::Unknown),
                (Kind::Get, Outcome::Read(got)) => {
                    v.reads += 1;
                    if let Some(id) = got
                        && !ids.contains(id)
                    {
                        v.wrong_reads.push(format!(
                            "k{key:03} via node {}: value {id}, never written to this key (or refused)",
                            r.node + 1
                        ));
                        continue;
                    }
                    if is_final {
                        let prev = final_value.insert(*key, *got);
                        if let Some(p) = prev
                            && p != *got
                        {
                            v.lost_writes.push(format!(
                                "k{key:03}: the nodes disagree after the run ({p:?} and {got:?})"
                            ));
                        }
                    }
                    (Op::Read(*got), LinOutcome::Ok)
                }
                (Kind::Get, Outcome::Corrupt(why)) => {
                    v.wrong_reads.push(format!("k{key:03} via node {}: {why}", r.node + 1));
                    continue;
                }
                _ => continue,
            };
            match (&op, outcome) {
                (Op::Read(_), _) => {}
                (Op::Create(_) | Op::Swap { .. }, LinOutcome::Failed) => v.conditional_failed += 1,
                (_, LinOutcome::Ok) => {
                    v.acknowledged_writes += 1;
                    if matches!(op, Op::Create(_) | Op::Swap { .. }) {
                        v.conditional_done += 1;
                    }
                }
                (_, _) => v.unknown_writes += 1,
            }
            if r.retried_after_maybe && !matches!(op, Op::Read(_)) {
                // The attempt before the retry may have acted too, at its own time: a write of
                // its own whose outcome is unknown.
                history.push(Event {
                    op: op.clone(),
                    outcome: LinOutcome::Unknown,
                    call: u128::from(r.call_us),
                    ret: u128::from(r.ret_us),
                });
            }
            history.push(Event {
                op,
                outcome,
                call: u128::from(r.call_us),
                ret: u128::from(r.ret_us),
            });
        }
        v.keys_checked += 1;
        lost_or_back(*key, &history, final_value.get(key).copied(), &mut v);
        if let Err(e) = linearizable::check(&history, budget) {
            if e.contains("without deciding") {
                v.undecided.push(format!("k{key:03}: {e}"));
            } else {
                let why = stale_read(&history).unwrap_or_default();
                v.not_linearizable.push(format!("k{key:03}: {e}{why}"));
            }
        }
    }
    // Listings: every ETag one of a value written to its key; the final ones as the final reads.
    let max = max_size;
    let mut tags: HashMap<(usize, String), u64> = HashMap::new();
    for (k, ids) in &legit {
        for id in ids {
            tags.insert((*k, etag(*k, *id, max)), *id);
        }
    }
    for &(r, is_final) in &all {
        let Outcome::Listed(entries) = &r.outcome else { continue };
        for (k, t) in entries {
            if !tags.contains_key(&(*k, t.clone())) {
                v.wrong_reads.push(format!(
                    "listing via node {}: k{k:03} with ETag {t}, of no value written to it",
                    r.node + 1
                ));
            }
        }
        if is_final {
            let listed: BTreeMap<usize, String> = entries.iter().cloned().collect();
            let expected: BTreeMap<usize, String> = final_value
                .iter()
                .filter_map(|(k, v)| v.map(|id| (*k, etag(*k, id, max))))
                .collect();
            if listed != expected {
                let missing: Vec<String> = expected
                    .keys()
                    .filter(|k| !listed.contains_key(k))
                    .map(|k| format!("k{k:03}"))
                    .collect();
                let extra: Vec<String> = listed
                    .keys()
                    .filter(|k| !expected.contains_key(k))
                    .map(|k| format!("k{k:03}"))
                    .collect();
                v.listing_mismatches.push(format!(
                    "final listing via node {}: {} keys, reads found {}; missing {missing:?}, extra {extra:?}",
                    r.node + 1,
                    listed.len(),
                    expected.len()
                ));
            }
        }
    }
    v
}

/// The first read that returned a value an acknowledged write had replaced before the read
/// began (the commonest way to lose linearizability), to explain a failed search.
fn stale_read(h: &[Event<u64>]) -> Option<String> {
    let writes = changes(h);
    let value = |e: &Event<u64>| written(&e.op);
    for r in h {
        let Op::Read(seen) = r.op else { continue };
        // The writes that could have left `seen`: begun before the read ended.
        let sources: Vec<&&Event<u64>> = writes.iter().filter(|w| value(w) == seen && w.call < r.ret).collect();
        // A source is replaced when an acknowledged write began after it ended and ended
        // before the read began.
        let replaced_by = |src: &Event<u64>| {
            writes.iter().find(|w| {
                w.outcome == LinOutcome::Ok
                    && src.outcome == LinOutcome::Ok
                    && w.call > src.ret
                    && w.ret < r.call
                    && value(w) != seen
            })
        };
        let first_replacer = writes
            .iter()
            .find(|w| w.outcome == LinOutcome::Ok && w.ret < r.call && value(w) != seen);
        let stale = if sources.is_empty() {
            // The empty key: stale once any acknowledged write ended before the read began.
            seen.is_none().then_some(first_replacer).flatten().copied()
        } else {
            sources
                .iter()
                .map(|s| replaced_by(s))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().next())
                .copied()
        };
        if let Some(w) = stale {
            let what = match written(&w.op) {
                Some(id) => format!("the write of value {id}"),
                None => "a delete".into(),
            };
            return Some(format!(
                "; e.g. a read begun at {:.3} s returned {seen:?}, but {what} was acknowledged at {:.3} s",
                r.call as f64 / 1e6,
                w.ret as f64 / 1e6
            ));
        }
    }
    None
}

/// The final value must be one a write left that no acknowledged write began after (or the
/// empty key when no write was acknowledged); otherwise the acknowledged writes it should show
/// were lost (a deleted key that came back when the newest of them is a delete).
fn lost_or_back(key: usize, h: &[Event<u64>], last: Option<Option<u64>>, v: &mut Verdict) {
    let Some(last) = last else { return };
    let writes = changes(h);
    let end = |e: &Event<u64>| {
        if e.outcome == LinOutcome::Unknown {
            u128::MAX
        } else {
            e.ret
        }
    };
    let superseded = |e: &Event<u64>| writes.iter().any(|w| w.outcome == LinOutcome::Ok && w.call > end(e));
    let value = |e: &Event<u64>| written(&e.op);
    let acked: Vec<&&Event<u64>> = writes.iter().filter(|e| e.outcome == LinOutcome::Ok).collect();
    let possible: Vec<Option<u64>> = writes.iter().filter(|e| !superseded(e)).map(|e| value(e)).collect();
    let ok = if acked.is_empty() {
        last.is_none() || possible.contains(&last)
    } else {
        possible.contains(&last)
    };
    if ok {
        return;
    }
    let newest: Vec<String> = acked
        .iter()
        .filter(|e| !superseded(e))
        .map(|e| match written(&e.op) {
            Some(id) => format!("put of value {id}"),
            None => "delete".to_string(),
        })
        .collect();
    let what = format!("k{key:03}: after the run it holds {last:?}, but the acknowledged {newest:?} came later");
    if last.is_some()
        && acked
            .iter()
            .filter(|e| !superseded(e))
            .all(|e| matches!(e.op, Op::Delete))
    {
        v.resurrected.push(what);
    } else {
        v.lost_writes.push(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::NodeState;

    fn rec(kind: Kind, outcome: Outcome, call: u64, ret: u64) -> Record {
        Record {
            kind,
            key: 1,
            node: 0,
            state: NodeState::Up,
            disturbed: false,
            gateway_errors: 0,
            balancer_checking: false,
            state_age_us: 0,
            call_us: call,
            ret_us: ret,
            attempts: 1,
            retried_after_maybe: false,
            slowest_attempt_us: ret - call,
            outcome,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let load = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 10),
            rec(Kind::Get, Outcome::Read(Some(1)), 11, 12),
            rec(Kind::Put(2), Outcome::Unknown("timeout".into()), 13, 20),
            rec(Kind::Delete, Outcome::Done, 21, 22),
        ];
        let finals = vec![
            rec(Kind::Get, Outcome::Read(None), 30, 31),
            rec(Kind::List, Outcome::Listed(vec![]), 32, 33),
        ];
        let v = check(&load, &finals, 64, 100_000);
        assert!(v.clean(), "{v:#?}");
        assert_eq!((v.acknowledged_writes, v.unknown_writes), (2, 1));
    }

    /// A delete whose first attempt went unanswered (its node froze after deleting) and whose
    /// retry, answered much later, deleted again a value written in between: the same request
    /// acted twice, as a retried request may. Linearizable once the first attempt counts as a
    /// write of its own; the same history without the retry is not.
    #[test]
    fn a_write_retried_after_an_unanswered_attempt_may_act_twice() {
        let mut delete = rec(Kind::Delete, Outcome::Done, 10, 100);
        delete.attempts = 3;
        delete.retried_after_maybe = true;
        let load = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 5),
            delete.clone(),
            rec(Kind::Get, Outcome::Read(None), 20, 21),
            rec(Kind::Put(2), Outcome::Done, 30, 31),
            rec(Kind::Get, Outcome::Read(Some(2)), 40, 41),
            rec(Kind::Get, Outcome::Read(None), 110, 111),
        ];
        let finals = vec![rec(Kind::Get, Outcome::Read(None), 120, 121)];
        let v = check(&load, &finals, 64, 100_000);
        assert!(v.not_linearizable.is_empty(), "{v:#?}");
        delete.retried_after_maybe = false;
        let mut once = load.clone();
        once[1] = delete;
        let v = check(&once, &finals, 64, 100_000);
        assert_eq!(v.not_linearizable.len(), 1, "{v:#?}");
    }

    #[test]
    fn lost_writes_resurrections_wrong_reads_and_stale_listings_are_caught() {
        let lost = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 10),
            rec(Kind::Put(2), Outcome::Done, 11, 12),
        ];
        let v = check(&lost, &[rec(Kind::Get, Outcome::Read(Some(1)), 30, 31)], 64, 100_000);
        assert_eq!(v.lost_writes.len(), 1, "{v:#?}");
        assert_eq!(v.not_linearizable.len(), 1, "{v:#?}");

        let back = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 10),
            rec(Kind::Delete, Outcome::Done, 11, 12),
        ];
        let v = check(&back, &[rec(Kind::Get, Outcome::Read(Some(1)), 30, 31)], 64, 100_000);
        assert_eq!(v.resurrected.len(), 1, "{v:#?}");

        let wrong = vec![
            rec(Kind::Put(1), Outcome::NotSent("refused".into()), 0, 10),
            rec(Kind::Get, Outcome::Read(Some(1)), 11, 12),
            rec(Kind::Get, Outcome::Corrupt("garbage".into()), 13, 14),
        ];
        let v = check(&wrong, &[], 64, 100_000);
        assert_eq!(v.wrong_reads.len(), 2, "{v:#?}");

        let stale = vec![rec(Kind::Put(1), Outcome::Done, 0, 10)];
        let finals = vec![
            rec(Kind::Get, Outcome::Read(Some(1)), 30, 31),
            rec(Kind::List, Outcome::Listed(vec![]), 32, 33),
        ];
        let v = check(&stale, &finals, 64, 100_000);
        assert_eq!(v.listing_mismatches.len(), 1, "{v:#?}");
        assert!(!v.clean());
    }

    #[test]
    fn conditional_writes_are_checked_against_what_the_key_held() {
        let swap = |expected, value| Kind::Swap { expected, value };
        let failed = || Outcome::ConditionFailed("412 PreconditionFailed".into());
        // Created, refused a second creation, swapped from 1 to 2, refused a swap from 1.
        let good = vec![
            rec(Kind::Create(1), Outcome::Done, 0, 10),
            rec(Kind::Create(2), failed(), 11, 12),
            rec(swap(1, 3), Outcome::Done, 13, 14),
            rec(swap(1, 4), failed(), 15, 16),
            rec(Kind::Get, Outcome::Read(Some(3)), 17, 18),
        ];
        let v = check(&good, &[rec(Kind::Get, Outcome::Read(Some(3)), 30, 31)], 64, 100_000);
        assert!(v.clean(), "{v:#?}");
        assert_eq!(
            (v.conditional_done, v.conditional_failed, v.acknowledged_writes),
            (2, 2, 2)
        );

        // Two creations of one key both acknowledged: one of them must have failed.
        let both = vec![
            rec(Kind::Create(1), Outcome::Done, 0, 10),
            rec(Kind::Create(2), Outcome::Done, 11, 12),
        ];
        let v = check(&both, &[rec(Kind::Get, Outcome::Read(Some(2)), 30, 31)], 64, 100_000);
        assert_eq!(v.not_linearizable.len(), 1, "{v:#?}");

        // A swap refused although the key held what it expected.
        let wrongly_refused = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 10),
            rec(swap(1, 2), failed(), 11, 12),
        ];
        let v = check(
            &wrongly_refused,
            &[rec(Kind::Get, Outcome::Read(Some(1)), 30, 31)],
            64,
            100_000,
        );
        assert_eq!(v.not_linearizable.len(), 1, "{v:#?}");
        assert!(
            v.unexpected_errors.is_empty(),
            "a 412 is an answer, not a refusal: {v:#?}"
        );

        // A refused write's value is no write: reading it is a wrong read.
        let ghost = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 10),
            rec(Kind::Create(2), failed(), 11, 12),
            rec(Kind::Get, Outcome::Read(Some(2)), 13, 14),
        ];
        let v = check(&ghost, &[], 64, 100_000);
        assert_eq!(v.wrong_reads.len(), 1, "{v:#?}");
    }

    #[test]
    fn a_stale_read_during_the_run_is_not_linearizable() {
        let h = vec![
            rec(Kind::Put(1), Outcome::Done, 0, 10),
            rec(Kind::Put(2), Outcome::Done, 11, 20),
            // Began after the second write was acknowledged: must see it.
            rec(Kind::Get, Outcome::Read(Some(1)), 21, 22),
        ];
        let v = check(&h, &[rec(Kind::Get, Outcome::Read(Some(2)), 30, 31)], 64, 100_000);
        assert!(v.lost_writes.is_empty(), "{v:#?}");
        assert_eq!(v.not_linearizable.len(), 1, "{v:#?}");
        assert!(
            v.not_linearizable[0].contains("returned Some(1), but the write of value 2 was acknowledged"),
            "{v:#?}"
        );
    }
}
