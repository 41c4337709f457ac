//! Lease renewals held by the Raft leader, off the log (protocol 4).
//!
//! A renewal used to be a Raft write: thousands of leases renewed every few seconds meant
//! thousands of log entries (fsyncs on every voter) per second. Now, once every member speaks
//! protocol 4 (`ControlState::leader_leases`), new leases are *leader-renewed*
//! (`locks::Lease::leader_renewed`): the leader answers a renewal from an in-memory table after
//! confirming its leadership with a heartbeat round (no log entry), and proposes an explicit
//! `LockCmd::Expire` for the leases whose time ran out. Grants, releases and expirations still go
//! through the log, so fencing tokens and hand-over to waiters stay exactly as replicated.
//!
//! A new leader does not know the old one's renewals: it counts every leader-renewed lease as
//! renewed when it took over (each by its own TTL), as etcd's lessor does, so a lease whose holder
//! renewed in time never ends early because the leader changed.

use crate::locks::{Lease, LockCmd, LockOutcome, Locks};
use crate::state::{Command, Outcome};
use crate::{ControlPlane, Error};
use openraft::ServerState;
use std::collections::HashMap;
use std::time::Duration;

/// The first protocol version with leader-renewed leases (`LockCmd::Expire`, the lease flags).
pub(crate) const LEADER_LEASES: u32 = 4;

/// How often a leader that has not yet turned leader-renewed leases on asks its members which
/// protocol they speak.
const VERSION_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The renewals this node answered as leader in one term. Pure.
#[derive(Debug, Default)]
pub(crate) struct Renewals {
    /// The Raft term the table is for; a new term starts an empty table.
    term: u64,
    /// When this node found itself leader in that term (ms).
    since: u64,
    /// Token -> when its lease ends.
    until: HashMap<u64, u64>,
}

impl Renewals {
    /// The table for `term`, reset (as of `now`) when the term changed.
    fn for_term(&mut self, term: u64, now: u64) -> &mut Self {
        if self.term != term {
            *self = Renewals {
                term,
                since: now,
                until: HashMap::new(),
            };
        }
        self
    }

    /// When a leader-renewed lease ends: its time as granted, its last renewal here, or the
    /// moment this leader took over plus its TTL, whichever is latest.
    fn ends(&self, l: &Lease) -> u64 {
        let renewed = self.until.get(&l.token).copied().unwrap_or(0);
        l.expires_at.max(renewed).max(self.since.saturating_add(l.ttl_ms))
    }

    /// Renews `l` until `now + ttl_ms`, unless its time already ran out (its `Expire` is on the
    /// way): `None` then.
    fn renew(&mut self, l: &Lease, ttl_ms: u64, now: u64) -> Option<u64> {
        if self.ends(l) <= now {
            return None;
        }
        let until = now.saturating_add(ttl_ms);
        self.until.insert(l.token, until);
        Some(until)
    }

    /// The leader-renewed leases (lock, token) whose time ran out at `now`; forgets tokens that
    /// are no longer held.
    fn due(&mut self, locks: &Locks, now: u64) -> Vec<(String, u64)> {
        let mut held = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (name, l) in &locks.locks {
            for h in l.holders.iter().filter(|h| h.leader_renewed) {
                held.insert(h.token);
                if self.ends(h) <= now {
                    out.push((name.clone(), h.token));
                }
            }
        }
        self.until.retain(|t, _| held.contains(t));
        out
    }

    /// `locks` with each leader-renewed lease's end as this leader sees it.
    fn overlay(&self, mut locks: Locks) -> Locks {
        for l in locks.locks.values_mut() {
            for h in l.holders.iter_mut().filter(|h| h.leader_renewed) {
                h.expires_at = self.ends(h);
            }
        }
        locks
    }
}

impl ControlPlane {
    pub(crate) fn leader_term(&self) -> Option<u64> {
        let m = self.raft().metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader).then_some(m.current_term)
    }

    fn renewals<R>(&self, term: u64, f: impl FnOnce(&mut Renewals) -> R) -> R {
        let mut r = self.renewals.lock().unwrap_or_else(|p| p.into_inner());
        f(r.for_term(term, ironbucket_types::now_millis()))
    }

    /// On the leader: answers a renewal of a leader-renewed lease without a log entry. `None`
    /// when this node is not the leader or the lease is renewed through the log (granted before
    /// every member spoke protocol 4).
    pub(crate) async fn renew_off_log(&self, cmd: &LockCmd) -> Option<Result<(Outcome, u64), Error>> {
        let LockCmd::Renew {
            name,
            holder,
            token,
            ttl_ms,
            ..
        } = cmd
        else {
            return None;
        };
        let term = self.leader_term()?;
        let lease = self.with_state(|s| {
            s.locks
                .locks
                .get(name)
                .and_then(|l| l.holders.iter().find(|h| h.holder == *holder && h.token == *token))
                .cloned()
        });
        if lease.as_ref().is_some_and(|l| !l.leader_renewed) {
            return None;
        }
        // Only the real leader's table counts: confirm with a quorum (a heartbeat round, no
        // write) that no newer leader exists.
        if self.raft().ensure_linearizable().await.is_err() {
            return None;
        }
        let applied = self.raft().metrics().borrow().last_applied.map_or(0, |l| l.index);
        let now = ironbucket_types::now_millis();
        let outcome = match lease.and_then(|l| self.renewals(term, |r| r.renew(&l, *ttl_ms, now))) {
            Some(expires_at) => LockOutcome::Renewed { expires_at },
            None => LockOutcome::NotHolder,
        };
        Some(Ok((Outcome::Lock { outcome }, applied)))
    }

    /// The lock table as this node knows it; on the leader, with the ends of leader-renewed
    /// leases as renewed (the stored ones are the ends as granted).
    pub fn lock_table(&self) -> Locks {
        let locks = self.with_state(|s| s.locks.clone());
        match self.leader_term() {
            Some(term) => self.renewals(term, |r| r.overlay(locks)),
            None => locks,
        }
    }

    /// Leader duty: ends the leader-renewed leases whose time ran out, and turns leader-renewed
    /// leases on once every member speaks protocol 4.
    pub(crate) async fn lease_duties(&self, last_check: &mut Option<std::time::Instant>) {
        let Some(term) = self.leader_term() else { return };
        let now = ironbucket_types::now_millis();
        let due = self.with_state(|s| self.renewals(term, |r| r.due(&s.locks, now)));
        if !due.is_empty() {
            let cmd = Command::Lock {
                cmd: LockCmd::Expire { leases: due, now },
            };
            if let Err(e) = self.propose_inner(cmd, false).await {
                tracing::debug!(error = %e, "lease expiry not committed");
            }
        }
        let (leases_on, moves_on, joins_on) =
            self.with_state(|s| (s.leader_leases, s.layout_moves, s.joins_need_tokens));
        if (leases_on && moves_on && joins_on) || last_check.is_some_and(|t| t.elapsed() < VERSION_CHECK_EVERY) {
            return;
        }
        *last_check = Some(std::time::Instant::now());
        let _guard = self.membership_lock.lock().await;
        if !leases_on && self.every_member_speaks(LEADER_LEASES).await {
            match self.propose_inner(Command::EnableLeaderLeases, false).await {
                Ok(_) => tracing::info!("every member speaks protocol 4: lease renewals no longer go through the log"),
                Err(e) => tracing::debug!(error = %e, "could not turn leader-renewed leases on yet"),
            }
        }
        // Not while the cluster forms: its members are recorded one by one, and those layouts
        // held no data worth moving.
        let names: Vec<String> = self.raft_nodes().into_iter().map(|(_, n)| n.name).collect();
        let recorded = self.with_state(|s| names.iter().all(|n| s.members.contains_key(n)));
        if !moves_on && recorded && self.every_member_speaks(crate::layouts::LAYOUT_MOVES).await {
            match self.propose_inner(Command::EnableLayoutMoves, false).await {
                Ok(_) => tracing::info!("every member speaks protocol 6: placement changes now move data"),
                Err(e) => tracing::debug!(error = %e, "could not turn layout moves on yet"),
            }
        }
        if !joins_on && self.every_member_speaks(crate::joining::JOIN_TOKENS).await {
            match self.propose_inner(Command::EnableJoinTokens, false).await {
                Ok(_) => tracing::info!(
                    "every member speaks protocol 10: new nodes join only with a join token, as learners"
                ),
                Err(e) => tracing::debug!(error = %e, "could not turn join tokens on yet"),
            }
        }
    }

    /// Whether every Raft member (voters and learners: every node that applies the log) other
    /// than this one answers a ping stating protocol `version` or newer.
    pub(crate) async fn every_member_speaks(&self, version: u32) -> bool {
        if self.peers.config().protocol.max < version {
            return false;
        }
        let others: Vec<String> = self.other_members().into_iter().map(|n| n.rpc_addr).collect();
        let asks = others.iter().map(|a| self.peers.ping(a, Some(Duration::from_secs(2))));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|r| r.is_ok_and(|p| p.protocol_version >= version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::LockState;

    fn lease(token: u64, expires_at: u64, ttl_ms: u64) -> Lease {
        Lease {
            holder: format!("h{token}"),
            token,
            expires_at,
            leader_renewed: true,
            ttl_ms,
        }
    }

    #[test]
    fn a_renewal_moves_the_end_and_a_late_one_is_refused() {
        let mut r = Renewals::default();
        r.for_term(3, 0);
        let l = lease(1, 1_000, 1_000);
        assert_eq!(r.ends(&l), 1_000);
        assert_eq!(r.renew(&l, 1_000, 900), Some(1_900));
        assert_eq!(r.ends(&l), 1_900);
        assert_eq!(r.renew(&l, 1_000, 1_950), None, "its time ran out");
    }

    #[test]
    fn a_new_leader_counts_every_lease_renewed_when_it_took_over() {
        let mut r = Renewals::default();
        r.for_term(3, 0).renew(&lease(1, 1_000, 1_000), 1_000, 900);
        // Term 4 begins at 5 000: the old table is gone, every lease gets its TTL from then.
        let r = r.for_term(4, 5_000);
        let l = lease(1, 1_000, 1_000);
        assert_eq!(r.ends(&l), 6_000);
        let mut locks = Locks::default();
        locks.locks.insert(
            "job".into(),
            LockState {
                permits: 1,
                holders: vec![l.clone()],
                waiters: Default::default(),
            },
        );
        assert!(r.due(&locks, 5_999).is_empty());
        assert_eq!(r.due(&locks, 6_000), [("job".to_string(), 1)]);
        assert_eq!(r.overlay(locks).locks["job"].holders[0].expires_at, 6_000);
    }

    #[test]
    fn leases_renewed_through_the_log_are_not_the_leaders_to_end() {
        let mut r = Renewals::default();
        let mut l = lease(1, 1_000, 0);
        l.leader_renewed = false;
        let mut locks = Locks::default();
        locks.locks.insert(
            "old".into(),
            LockState {
                permits: 1,
                holders: vec![l],
                waiters: Default::default(),
            },
        );
        assert!(r.for_term(1, 0).due(&locks, 10_000).is_empty());
    }
}
