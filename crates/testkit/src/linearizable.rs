//! A linearizability checker for one register with plain and conditional writes (the Wing & Gong /
//! Lowe search that Knossos and Porcupine use, with memoisation of visited states): given every
//! operation a test's clients sent to one key, with when each was sent and answered, it finds an
//! order of the operations that respects real time and the register's rules, or says there is
//! none.
//!
//! Operations whose outcome the client could not know (a timeout, a 5xx, a dropped connection)
//! may have taken effect at any time after they were sent, or never: the checker tries both.

use std::collections::HashSet;
use std::hash::Hash;

/// What a client did to the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<V> {
    /// A read that saw `Some(value)` or no object.
    Read(Option<V>),
    /// `If-None-Match: *` write of `value`.
    Create(V),
    /// `If-Match: <expected>` write of `value`.
    Swap { expected: V, value: V },
    /// Unconditional write of `value`.
    Put(V),
    /// Unconditional delete.
    Delete,
}

/// How the operation ended for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with success (a read always is).
    Ok,
    /// Answered 412 (or 409): the write did not happen.
    Failed,
    /// No definite answer: it may or may not have happened.
    Unknown,
}

/// One operation of the history: sent at `call`, answered at `ret` (in any one clock, e.g.
/// nanoseconds since the test started; `ret` is ignored for [`Outcome::Unknown`]).
#[derive(Debug, Clone)]
pub struct Event<V> {
    pub op: Op<V>,
    pub outcome: Outcome,
    pub call: u128,
    pub ret: u128,
}

/// The register's rule: the state after `e` is applied to `state`, if `e` may happen there.
fn step<V: Clone + Eq>(state: &Option<V>, e: &Event<V>) -> Option<Option<V>> {
    match (&e.op, e.outcome) {
        (Op::Read(seen), _) => (seen == state).then(|| state.clone()),
        (Op::Create(v), Outcome::Ok | Outcome::Unknown) => state.is_none().then(|| Some(v.clone())),
        (Op::Create(_), Outcome::Failed) => state.is_some().then(|| state.clone()),
        (Op::Swap { expected, value }, Outcome::Ok | Outcome::Unknown) => {
            (state.as_ref() == Some(expected)).then(|| Some(value.clone()))
        }
        (Op::Swap { expected, .. }, Outcome::Failed) => (state.as_ref() != Some(expected)).then(|| state.clone()),
        (Op::Put(v), Outcome::Ok | Outcome::Unknown) => Some(Some(v.clone())),
        (Op::Delete, Outcome::Ok | Outcome::Unknown) => Some(None),
        // An unconditional write that failed did nothing.
        (Op::Put(_) | Op::Delete, Outcome::Failed) => Some(state.clone()),
    }
}

/// Why a history is not linearizable.
#[derive(Debug, Clone)]
pub struct NotLinearizable {
    /// The most operations any order found could place.
    pub longest_prefix: usize,
    pub operations: usize,
}

impl std::fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no order of the {} operations respects real time and the register's rules (the longest placed {} of them)",
            self.operations, self.longest_prefix
        )
    }
}

/// Checks that `history` (every operation on one register that started empty) is
/// linearizable; `Err` says how far the search got. `budget` bounds the states visited (the
/// search is exponential in the worst case); exceeding it is an error too.
pub fn check<V: Clone + Eq + Hash>(history: &[Event<V>], budget: usize) -> Result<(), String> {
    let n = history.len();
    let definite: Vec<bool> = history.iter().map(|e| e.outcome != Outcome::Unknown).collect();
    let ret = |i: usize| if definite[i] { history[i].ret } else { u128::MAX };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| history[i].call);
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let is_done = |d: &[u64], i: usize| d[i / 64] & (1 << (i % 64)) != 0;
    let left_definite = |d: &[u64]| (0..n).filter(|&i| definite[i] && !is_done(d, i)).count();
    let mut seen: HashSet<(Vec<u64>, Option<V>)> = HashSet::new();
    // Each frame: the candidates at that depth, the next to try, the state before.
    struct Frame<V> {
        cands: Vec<usize>,
        next: usize,
        before: Option<V>,
        chosen: Option<usize>,
    }
    let candidates = |d: &[u64]| -> Vec<usize> {
        let min_ret = (0..n).filter(|&i| !is_done(d, i)).map(ret).min().unwrap_or(u128::MAX);
        order
            .iter()
            .copied()
            .filter(|&i| !is_done(d, i) && history[i].call < min_ret)
            .collect()
    };
    let mut state: Option<V> = None;
    let mut stack: Vec<Frame<V>> = vec![Frame {
        cands: candidates(&done),
        next: 0,
        before: None,
        chosen: None,
    }];
    let mut longest = 0;
    loop {
        if left_definite(&done) == 0 {
            return Ok(());
        }
        if seen.len() > budget {
            return Err(format!(
                "the search visited more than {budget} states without deciding ({n} operations)"
            ));
        }
        let Some(top) = stack.last_mut() else {
            return Err(NotLinearizable {
                longest_prefix: longest,
                operations: n,
            }
            .to_string());
        };
        if top.next < top.cands.len() {
            let i = top.cands[top.next];
            top.next += 1;
            if let Some(after) = step(&state, &history[i]) {
                done[i / 64] |= 1 << (i % 64);
                if seen.insert((done.clone(), after.clone())) {
                    let before = std::mem::replace(&mut state, after);
                    longest = longest.max(stack.len());
                    stack.push(Frame {
                        cands: candidates(&done),
                        next: 0,
                        before,
                        chosen: Some(i),
                    });
                } else {
                    done[i / 64] &= !(1 << (i % 64));
                }
            }
            continue;
        }
        // Every candidate failed here: undo the choice that led here.
        let f = stack.pop().expect("a frame");
        if let Some(i) = f.chosen {
            done[i / 64] &= !(1 << (i % 64));
            state = f.before;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op<u32>, outcome: Outcome, call: u128, ret: u128) -> Event<u32> {
        Event { op, outcome, call, ret }
    }

    #[test]
    fn one_winner_among_racing_creates_is_linearizable() {
        let h = vec![
            ev(Op::Create(1), Outcome::Ok, 0, 10),
            ev(Op::Create(2), Outcome::Failed, 1, 9),
            ev(Op::Create(3), Outcome::Failed, 2, 12),
            ev(Op::Read(Some(1)), Outcome::Ok, 13, 14),
        ];
        assert!(check(&h, 10_000).is_ok());
    }

    #[test]
    fn two_winners_are_caught() {
        let h = vec![
            ev(Op::Create(1), Outcome::Ok, 0, 10),
            ev(Op::Create(2), Outcome::Ok, 1, 9),
        ];
        assert!(check(&h, 10_000).is_err());
    }

    #[test]
    fn a_read_of_an_overwritten_value_after_the_overwrite_is_caught() {
        let h = vec![
            ev(Op::Create(1), Outcome::Ok, 0, 1),
            ev(Op::Swap { expected: 1, value: 2 }, Outcome::Ok, 2, 3),
            ev(Op::Read(Some(1)), Outcome::Ok, 4, 5),
        ];
        assert!(check(&h, 10_000).is_err());
    }

    #[test]
    fn a_counter_with_lost_races_and_an_unknown_outcome() {
        let h = vec![
            ev(Op::Create(0), Outcome::Ok, 0, 1),
            ev(Op::Swap { expected: 0, value: 1 }, Outcome::Ok, 2, 6),
            ev(Op::Swap { expected: 0, value: 1 }, Outcome::Failed, 3, 7),
            // Sent, never answered: it happened (the read after sees 2).
            ev(Op::Swap { expected: 1, value: 2 }, Outcome::Unknown, 8, 0),
            ev(Op::Read(Some(2)), Outcome::Ok, 20, 21),
            // Sent, never answered, did not happen.
            ev(Op::Swap { expected: 7, value: 8 }, Outcome::Unknown, 22, 0),
        ];
        assert!(check(&h, 10_000).is_ok());
    }

    #[test]
    fn overwrites_and_deletes_with_concurrent_reads() {
        let h = vec![
            ev(Op::Put(1), Outcome::Ok, 0, 10),
            // Concurrent with the put: may see it or not.
            ev(Op::Read(None), Outcome::Ok, 1, 5),
            ev(Op::Read(Some(1)), Outcome::Ok, 2, 6),
            ev(Op::Put(2), Outcome::Unknown, 11, 0),
            ev(Op::Delete, Outcome::Ok, 12, 20),
            ev(Op::Read(None), Outcome::Ok, 21, 22),
        ];
        assert!(check(&h, 10_000).is_ok());
        // A deleted key that comes back, or an acknowledged write that is lost, is caught.
        let mut back = h.clone();
        back.push(ev(Op::Read(Some(1)), Outcome::Ok, 23, 24));
        assert!(check(&back, 10_000).is_err());
        let lost = vec![
            ev(Op::Put(1), Outcome::Ok, 0, 1),
            ev(Op::Put(2), Outcome::Ok, 2, 3),
            ev(Op::Read(Some(1)), Outcome::Ok, 4, 5),
        ];
        assert!(check(&lost, 10_000).is_err());
    }

    #[test]
    fn a_read_that_goes_back_in_time_is_caught() {
        let h = vec![
            ev(Op::Create(0), Outcome::Ok, 0, 1),
            ev(Op::Swap { expected: 0, value: 1 }, Outcome::Unknown, 2, 0),
            ev(Op::Read(Some(1)), Outcome::Ok, 3, 4),
            ev(Op::Read(Some(0)), Outcome::Ok, 5, 6),
        ];
        assert!(check(&h, 10_000).is_err());
    }
}
