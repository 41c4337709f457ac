//! Asynchronous replication with a bound: a write at a level below ALL is answered once its
//! level is met, and its requests to the other replicas go on in the background (the plan's
//! asynchronous replication at ONE). This counts those requests per replica while they run, and
//! holds a write's answer back while this node has more of them in flight than
//! `MAX_REPLICATION_BACKLOG`: the write then waits for its other replicas too, so the lag stays
//! bounded by the replicas' own speed instead of growing with the client's. A replica that is
//! down is not written to at all (its writes become hints, bounded by `HINT_MAX_PER_NODE`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Replica requests in flight, per replica and in all.
#[derive(Debug, Default)]
pub struct Backlog {
    peers: RwLock<HashMap<String, Arc<AtomicU64>>>,
    total: Arc<AtomicU64>,
    /// Writes whose answer waited for the backlog to shrink, since the node started.
    pub waits: AtomicU64,
}

/// One replica request in flight: counted until dropped.
pub(crate) struct InFlight {
    peer: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.peer.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backlog {
    /// Counts a request to `peer` until the returned guard is dropped.
    pub(crate) fn enter(&self, peer: &str) -> InFlight {
        let counter = {
            let read = self.peers.read().unwrap_or_else(|p| p.into_inner());
            read.get(peer).cloned()
        };
        let peer = counter.unwrap_or_else(|| {
            self.peers
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(peer.to_string())
                .or_default()
                .clone()
        });
        peer.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        InFlight {
            peer,
            total: self.total.clone(),
        }
    }

    /// Replica requests in flight from this node.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Replica requests in flight, per replica (those with none left out).
    pub fn per_peer(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect();
        v.sort();
        v
    }
}

/// One write's answer: sent once its level is met, unless this node's backlog is over the
/// bound; then the write waits until the backlog is back under it, or until none of its own
/// replica requests is left, or its deadline (its level was met: it succeeds either way).
pub(crate) struct Hold<'a> {
    backlog: &'a Backlog,
    max: u64,
    waiting: bool,
}

impl<'a> Hold<'a> {
    pub(crate) fn new(backlog: &'a Backlog, max: u64) -> Self {
        Self {
            backlog,
            max,
            waiting: false,
        }
    }

    /// The write's level is met: whether its answer may go now.
    pub(crate) fn level_met(&mut self) -> bool {
        if self.backlog.total() <= self.max {
            return true;
        }
        if !self.waiting {
            self.waiting = true;
            self.backlog.waits.fetch_add(1, Ordering::Relaxed);
        }
        false
    }

    /// Whether the level was met and the answer waits for the backlog.
    pub(crate) fn waiting(&self) -> bool {
        self.waiting
    }

    /// Whether a waiting answer may go now.
    pub(crate) fn released(&self) -> bool {
        self.waiting && self.backlog.total() <= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_while_in_flight() {
        let b = Backlog::default();
        let a1 = b.enter("a");
        let a2 = b.enter("a");
        let c = b.enter("c");
        assert_eq!(b.total(), 3);
        assert_eq!(b.per_peer(), vec![("a".to_string(), 2), ("c".to_string(), 1)]);
        drop(a1);
        drop(c);
        assert_eq!(b.total(), 1);
        assert_eq!(b.per_peer(), vec![("a".to_string(), 1)]);
        drop(a2);
        assert_eq!(b.total(), 0);
        assert!(b.per_peer().is_empty());
    }

    #[test]
    fn an_answer_waits_while_the_backlog_is_over_the_bound() {
        let b = Backlog::default();
        let first = b.enter("a");
        let second = b.enter("a");
        let mut h = Hold::new(&b, 1);
        assert!(!h.level_met(), "two in flight, bound 1");
        assert!(h.waiting() && !h.released());
        assert!(!h.level_met());
        assert_eq!(b.waits.load(Ordering::Relaxed), 1, "one write waited once");
        drop(first);
        assert!(h.released());
        drop(second);
        let mut free = Hold::new(&b, 1);
        assert!(free.level_met() && !free.waiting());
    }
}
