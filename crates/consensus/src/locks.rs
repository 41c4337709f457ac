//! Coordination primitives in the control state: lease locks (mutexes and counting semaphores)
//! with TTL and renewal, strictly increasing fencing tokens, FIFO waiters, deadlock detection
//! over the wait-for graph, and barriers. Pure: time comes in the command (the proposer's clock),
//! so every node applies the same result.
//!
//! Leases granted once every member speaks protocol 4 are *leader-renewed*: a renewal is answered
//! by the Raft leader from memory (`leases.rs`), with no log entry, and such a lease ends only by
//! an explicit [`LockCmd::Expire`] the leader proposes (or its release). Older leases keep being
//! renewed through the log and expire by their stored time.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub holder: String,
    /// Fencing token: larger than every token granted before, on any lock.
    pub token: u64,
    /// When the lease ends; for a leader-renewed lease, when it ended as granted (the leader
    /// holds later renewals).
    pub expires_at: u64,
    /// Renewed by the leader without a log entry; ends by [`LockCmd::Expire`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub leader_renewed: bool,
    /// A leader-renewed lease's time to live: a new leader extends it by that much from the
    /// moment it took over (it does not know the old leader's renewals).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ttl_ms: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub holder: String,
    pub ttl_ms: u64,
    pub since: u64,
    /// The lease it gets will be leader-renewed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub leader_renewed: bool,
}

/// One lock: `permits` = 1 is a mutex, more is a counting semaphore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub permits: u32,
    pub holders: Vec<Lease>,
    pub waiters: VecDeque<Waiter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub count: u32,
    pub arrived: BTreeSet<String>,
    pub released: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locks {
    pub last_token: u64,
    pub locks: BTreeMap<String, LockState>,
    pub barriers: BTreeMap<String, Barrier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LockCmd {
    /// Takes a permit of `name`; with `wait`, joins the FIFO queue when none is free.
    Acquire {
        name: String,
        holder: String,
        ttl_ms: u64,
        permits: u32,
        wait: bool,
        now: u64,
        /// The lease is leader-renewed (set by the leader once every member speaks protocol 4).
        #[serde(default, skip_serializing_if = "is_false")]
        leader_renewed: bool,
    },
    Renew {
        name: String,
        holder: String,
        token: u64,
        ttl_ms: u64,
        now: u64,
        /// Through the log on a cluster with leader-renewed leases: the lease (granted before)
        /// becomes leader-renewed, so that its later renewals stay off the log.
        #[serde(default, skip_serializing_if = "is_false")]
        leader_renewed: bool,
    },
    /// Gives a lease back, or leaves the queue.
    Release { name: String, holder: String, now: u64 },
    /// Arrives at a barrier of `count` participants.
    Arrive {
        barrier: String,
        participant: String,
        count: u32,
    },
    /// Expires leases and hands permits to waiters (the leader proposes it regularly).
    Tick { now: u64 },
    /// Ends the leader-renewed leases (lock name, token) whose time the leader saw run out,
    /// then expires and hands over like [`LockCmd::Tick`]. Protocol 4.
    Expire { leases: Vec<(String, u64)>, now: u64 },
}

impl LockCmd {
    /// Sets the command's time (the leader stamps every lock command with its own clock when it
    /// proposes it, so all lease times of a term come from one clock).
    pub fn set_now(&mut self, t: u64) {
        match self {
            LockCmd::Acquire { now, .. }
            | LockCmd::Renew { now, .. }
            | LockCmd::Release { now, .. }
            | LockCmd::Tick { now }
            | LockCmd::Expire { now, .. } => *now = t,
            LockCmd::Arrive { .. } => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "lock", rename_all = "snake_case")]
pub enum LockOutcome {
    Granted {
        token: u64,
        expires_at: u64,
    },
    Queued {
        position: usize,
    },
    /// No permit free and the caller did not want to wait.
    Busy,
    Renewed {
        expires_at: u64,
    },
    Released,
    /// The caller holds no such lease (expired, or never had it).
    NotHolder,
    /// Waiting would close a cycle in the wait-for graph; the youngest waiter (this caller) is
    /// refused.
    Deadlock {
        cycle: Vec<String>,
    },
    /// The lock exists with another number of permits.
    PermitsMismatch {
        permits: u32,
    },
    BarrierWaiting {
        arrived: u32,
        count: u32,
    },
    BarrierReleased,
    Ticked,
}

impl Locks {
    /// Expires leases at `now` and grants freed permits to waiters, oldest first.
    fn expire(&mut self, now: u64) {
        for l in self.locks.values_mut() {
            l.holders.retain(|h| h.leader_renewed || h.expires_at > now);
            while (l.holders.len() as u32) < l.permits {
                let Some(w) = l.waiters.pop_front() else { break };
                self.last_token += 1;
                l.holders.push(Lease {
                    holder: w.holder,
                    token: self.last_token,
                    expires_at: now + w.ttl_ms,
                    leader_renewed: w.leader_renewed,
                    ttl_ms: if w.leader_renewed { w.ttl_ms } else { 0 },
                });
            }
        }
        self.locks.retain(|_, l| !l.holders.is_empty() || !l.waiters.is_empty());
    }

    /// Whether `from` (transitively) waits for a lock that `target` holds: the holders that
    /// `from` waits for, and whom those wait for, and so on.
    fn waits_for(&self, from: &str, target: &str) -> Option<Vec<String>> {
        let mut path = vec![from.to_string()];
        let mut seen = BTreeSet::new();
        self.dfs(from, target, &mut path, &mut seen).then_some(path)
    }

    fn dfs(&self, at: &str, target: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        if !seen.insert(at.to_string()) {
            return false;
        }
        for l in self.locks.values() {
            if !l.waiters.iter().any(|w| w.holder == at) {
                continue;
            }
            for h in &l.holders {
                path.push(h.holder.clone());
                if h.holder == target || self.dfs(&h.holder, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    /// The locks and barriers `cmd` may change (`l/<lock>`, `r/<barrier>`): the one it names,
    /// and every lock with a lease that has expired at the command's time (applying any lock
    /// command expires them first).
    pub fn touched_by(&self, cmd: &LockCmd) -> Vec<String> {
        let (named, now) = match cmd {
            LockCmd::Acquire { name, now, .. }
            | LockCmd::Renew { name, now, .. }
            | LockCmd::Release { name, now, .. } => (Some(format!("l/{name}")), Some(*now)),
            LockCmd::Arrive { barrier, .. } => (Some(format!("r/{barrier}")), None),
            LockCmd::Tick { now } => (None, Some(*now)),
            LockCmd::Expire { leases, now } => {
                let mut out: Vec<String> = leases.iter().map(|(n, _)| format!("l/{n}")).collect();
                out.extend(self.expired_at(*now).map(|n| format!("l/{n}")));
                return out;
            }
        };
        let mut out: Vec<String> = named.into_iter().collect();
        if let Some(now) = now {
            out.extend(self.expired_at(now).map(|n| format!("l/{n}")));
        }
        out
    }

    /// The locks with a lease that expires by its stored time at `now` (not leader-renewed).
    pub fn expired_at(&self, now: u64) -> impl Iterator<Item = &String> {
        self.locks
            .iter()
            .filter(move |(_, l)| l.holders.iter().any(|h| !h.leader_renewed && h.expires_at <= now))
            .map(|(n, _)| n)
    }

    pub fn apply(&mut self, cmd: LockCmd) -> LockOutcome {
        match cmd {
            LockCmd::Tick { now } => {
                self.expire(now);
                LockOutcome::Ticked
            }
            LockCmd::Expire { leases, now } => {
                for (name, token) in &leases {
                    if let Some(l) = self.locks.get_mut(name) {
                        l.holders.retain(|h| h.token != *token);
                    }
                }
                self.expire(now);
                LockOutcome::Ticked
            }
            LockCmd::Acquire {
                name,
                holder,
                ttl_ms,
                permits,
                wait,
                now,
                leader_renewed,
            } => {
                self.expire(now);
                let permits = permits.max(1);
                if let Some(l) = self.locks.get(&name) {
                    if l.permits != permits {
                        return LockOutcome::PermitsMismatch { permits: l.permits };
                    }
                    if let Some(h) = l.holders.iter().find(|h| h.holder == holder) {
                        // Re-entrant acquire: the same lease.
                        return LockOutcome::Granted {
                            token: h.token,
                            expires_at: h.expires_at,
                        };
                    }
                    if let Some(p) = l.waiters.iter().position(|w| w.holder == holder) {
                        return LockOutcome::Queued { position: p + 1 };
                    }
                }
                let free = self
                    .locks
                    .get(&name)
                    .is_none_or(|l| (l.holders.len() as u32) < permits && l.waiters.is_empty());
                if free {
                    self.last_token += 1;
                    let token = self.last_token;
                    let l = self.locks.entry(name).or_insert_with(|| LockState {
                        permits,
                        holders: vec![],
                        waiters: VecDeque::new(),
                    });
                    l.holders.push(Lease {
                        holder,
                        token,
                        expires_at: now + ttl_ms,
                        leader_renewed,
                        ttl_ms: if leader_renewed { ttl_ms } else { 0 },
                    });
                    return LockOutcome::Granted {
                        token,
                        expires_at: now + ttl_ms,
                    };
                }
                if !wait {
                    return LockOutcome::Busy;
                }
                // Would waiting close a cycle? Some holder of this lock waits for `holder`.
                let holders: Vec<String> = self
                    .locks
                    .get(&name)
                    .map(|l| l.holders.iter().map(|h| h.holder.clone()).collect())
                    .unwrap_or_default();
                for h in holders {
                    if h == holder {
                        continue;
                    }
                    if let Some(mut cycle) = self.waits_for(&h, &holder) {
                        cycle.insert(0, holder.clone());
                        return LockOutcome::Deadlock { cycle };
                    }
                }
                let Some(l) = self.locks.get_mut(&name) else {
                    return LockOutcome::Busy;
                };
                l.waiters.push_back(Waiter {
                    holder,
                    ttl_ms,
                    since: now,
                    leader_renewed,
                });
                LockOutcome::Queued {
                    position: l.waiters.len(),
                }
            }
            LockCmd::Renew {
                name,
                holder,
                token,
                ttl_ms,
                now,
                leader_renewed,
            } => {
                self.expire(now);
                match self
                    .locks
                    .get_mut(&name)
                    .and_then(|l| l.holders.iter_mut().find(|h| h.holder == holder && h.token == token))
                {
                    Some(h) => {
                        h.expires_at = now + ttl_ms;
                        if leader_renewed {
                            h.leader_renewed = true;
                            h.ttl_ms = ttl_ms;
                        }
                        LockOutcome::Renewed {
                            expires_at: h.expires_at,
                        }
                    }
                    None => LockOutcome::NotHolder,
                }
            }
            LockCmd::Release { name, holder, now } => {
                let released = match self.locks.get_mut(&name) {
                    Some(l) => {
                        let before = l.holders.len() + l.waiters.len();
                        l.holders.retain(|h| h.holder != holder);
                        l.waiters.retain(|w| w.holder != holder);
                        before != l.holders.len() + l.waiters.len()
                    }
                    None => false,
                };
                self.expire(now);
                if released {
                    LockOutcome::Released
                } else {
                    LockOutcome::NotHolder
                }
            }
            LockCmd::Arrive {
                barrier,
                participant,
                count,
            } => {
                let b = self.barriers.entry(barrier).or_insert_with(|| Barrier {
                    count: count.max(1),
                    ..Default::default()
                });
                if !b.released {
                    b.arrived.insert(participant);
                    if b.arrived.len() as u32 >= b.count {
                        b.released = true;
                    }
                }
                if b.released {
                    LockOutcome::BarrierReleased
                } else {
                    LockOutcome::BarrierWaiting {
                        arrived: b.arrived.len() as u32,
                        count: b.count,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(name: &str, holder: &str, wait: bool, now: u64) -> LockCmd {
        LockCmd::Acquire {
            name: name.into(),
            holder: holder.into(),
            ttl_ms: 1000,
            permits: 1,
            wait,
            now,
            leader_renewed: false,
        }
    }

    fn token(o: LockOutcome) -> u64 {
        match o {
            LockOutcome::Granted { token, .. } => token,
            other => panic!("not granted: {other:?}"),
        }
    }

    #[test]
    fn the_leader_restamps_every_timed_command() {
        let mut cmds = vec![
            LockCmd::Acquire {
                name: "l".into(),
                holder: "h".into(),
                ttl_ms: 1,
                permits: 1,
                wait: false,
                now: 1,
                leader_renewed: false,
            },
            LockCmd::Renew {
                name: "l".into(),
                holder: "h".into(),
                token: 1,
                ttl_ms: 1,
                now: 1,
                leader_renewed: false,
            },
            LockCmd::Release {
                name: "l".into(),
                holder: "h".into(),
                now: 1,
            },
            LockCmd::Tick { now: 1 },
        ];
        for c in &mut cmds {
            c.set_now(77);
            let json = serde_json::to_value(&*c).unwrap();
            assert_eq!(json["now"], 77, "{json}");
        }
        let mut arrive = LockCmd::Arrive {
            barrier: "b".into(),
            participant: "p".into(),
            count: 2,
        };
        arrive.set_now(77);
        assert!(serde_json::to_value(&arrive).unwrap().get("now").is_none());
    }

    #[test]
    fn leader_renewed_leases_end_only_by_expire_and_hand_over_with_a_larger_token() {
        let mut l = Locks::default();
        let managed = |holder: &str, now| LockCmd::Acquire {
            name: "m".into(),
            holder: holder.into(),
            ttl_ms: 1000,
            permits: 1,
            wait: true,
            now,
            leader_renewed: true,
        };
        let ta = token(l.apply(managed("a", 0)));
        assert_eq!(l.apply(managed("b", 10)), LockOutcome::Queued { position: 1 });
        // Long past its stored end, a tick does not end it: the leader holds its renewals.
        assert!(l.expired_at(50_000).next().is_none());
        l.apply(LockCmd::Tick { now: 50_000 });
        assert_eq!(l.locks["m"].holders[0].holder, "a");
        assert_eq!(l.locks["m"].holders[0].ttl_ms, 1000);
        // An Expire for another token (a lease since replaced) changes nothing.
        l.apply(LockCmd::Expire {
            leases: vec![("m".into(), ta + 100)],
            now: 50_001,
        });
        assert_eq!(l.locks["m"].holders[0].holder, "a");
        let cmd = LockCmd::Expire {
            leases: vec![("m".into(), ta)],
            now: 50_002,
        };
        assert_eq!(l.touched_by(&cmd), ["l/m"]);
        assert_eq!(l.apply(cmd), LockOutcome::Ticked);
        let h = &l.locks["m"].holders[0];
        assert_eq!(h.holder, "b", "the waiter gets the lease");
        assert!(h.token > ta && h.leader_renewed && h.expires_at == 51_002);
        // Stored as older releases stored unmanaged leases: the flags only when set.
        let plain = serde_json::to_value(Lease {
            holder: "x".into(),
            token: 1,
            expires_at: 2,
            leader_renewed: false,
            ttl_ms: 0,
        })
        .unwrap();
        assert_eq!(plain, serde_json::json!({"holder": "x", "token": 1, "expires_at": 2}));
    }

    #[test]
    fn mutex_ttl_renewal_and_fencing() {
        let mut l = Locks::default();
        let t1 = token(l.apply(acquire("m", "a", true, 0)));
        assert_eq!(l.apply(acquire("m", "b", false, 10)), LockOutcome::Busy);
        assert_eq!(
            l.apply(acquire("m", "b", true, 10)),
            LockOutcome::Queued { position: 1 }
        );
        assert_eq!(
            l.apply(acquire("m", "c", true, 20)),
            LockOutcome::Queued { position: 2 }
        );
        // Renewal keeps it past the first TTL.
        assert_eq!(
            l.apply(LockCmd::Renew {
                name: "m".into(),
                holder: "a".into(),
                token: t1,
                ttl_ms: 1000,
                now: 900,
                leader_renewed: false,
            }),
            LockOutcome::Renewed { expires_at: 1900 }
        );
        l.apply(LockCmd::Tick { now: 1500 });
        assert_eq!(l.locks["m"].holders[0].holder, "a");
        // a dies (stops renewing): after the TTL, b (first in line) gets a larger token.
        l.apply(LockCmd::Tick { now: 1901 });
        let h = &l.locks["m"].holders[0];
        assert_eq!(h.holder, "b");
        assert!(h.token > t1);
        let tb = h.token;
        // a's late renewal is refused: its lease is gone.
        assert_eq!(
            l.apply(LockCmd::Renew {
                name: "m".into(),
                holder: "a".into(),
                token: t1,
                ttl_ms: 1000,
                now: 1902,
                leader_renewed: false,
            }),
            LockOutcome::NotHolder
        );
        // b releases: c is next (FIFO), with a larger token still.
        assert_eq!(
            l.apply(LockCmd::Release {
                name: "m".into(),
                holder: "b".into(),
                now: 2000
            }),
            LockOutcome::Released
        );
        let h = &l.locks["m"].holders[0];
        assert_eq!(h.holder, "c");
        assert!(h.token > tb);
    }

    #[test]
    fn semaphore_counts_permits() {
        let mut l = Locks::default();
        let sem = |h: &str| LockCmd::Acquire {
            name: "s".into(),
            holder: h.into(),
            ttl_ms: 100,
            permits: 2,
            wait: false,
            now: 0,
            leader_renewed: false,
        };
        token(l.apply(sem("a")));
        token(l.apply(sem("b")));
        assert_eq!(l.apply(sem("c")), LockOutcome::Busy);
        assert_eq!(
            l.apply(acquire("s", "d", false, 0)),
            LockOutcome::PermitsMismatch { permits: 2 }
        );
    }

    #[test]
    fn deadlock_refuses_the_youngest_waiter() {
        let mut l = Locks::default();
        token(l.apply(acquire("l1", "a", true, 0)));
        token(l.apply(acquire("l2", "b", true, 0)));
        assert!(matches!(
            l.apply(acquire("l2", "a", true, 1)),
            LockOutcome::Queued { .. }
        ));
        // b waiting for l1 (held by a, who waits for b) closes a cycle: b is refused.
        match l.apply(acquire("l1", "b", true, 2)) {
            LockOutcome::Deadlock { cycle } => assert_eq!(cycle, vec!["b", "a", "b"]),
            other => panic!("{other:?}"),
        }
        // Three-party cycle.
        token(l.apply(acquire("l3", "c", true, 3)));
        assert!(matches!(
            l.apply(acquire("l3", "b", true, 4)),
            LockOutcome::Queued { .. }
        ));
        assert!(matches!(
            l.apply(acquire("l1", "c", true, 5)),
            LockOutcome::Deadlock { .. }
        ));
    }

    #[test]
    fn barriers() {
        let mut l = Locks::default();
        let arrive = |p: &str| LockCmd::Arrive {
            barrier: "b".into(),
            participant: p.into(),
            count: 3,
        };
        assert_eq!(
            l.apply(arrive("x")),
            LockOutcome::BarrierWaiting { arrived: 1, count: 3 }
        );
        assert_eq!(
            l.apply(arrive("x")),
            LockOutcome::BarrierWaiting { arrived: 1, count: 3 }
        );
        assert_eq!(
            l.apply(arrive("y")),
            LockOutcome::BarrierWaiting { arrived: 2, count: 3 }
        );
        assert_eq!(l.apply(arrive("z")), LockOutcome::BarrierReleased);
        assert_eq!(l.apply(arrive("late")), LockOutcome::BarrierReleased);
    }

    #[test]
    fn tokens_strictly_increase_across_locks() {
        let mut l = Locks::default();
        let mut last = 0;
        for i in 0..20 {
            let t = token(l.apply(acquire(&format!("k{}", i % 3), &format!("h{i}"), false, i * 2000)));
            assert!(t > last);
            last = t;
        }
    }
}
