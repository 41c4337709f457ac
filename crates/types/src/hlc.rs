//! Hybrid logical clock: physical milliseconds plus a logical counter, so that timestamps
//! issued by one node are strictly increasing even when its wall clock steps backwards, and
//! a node that has seen a remote timestamp never issues a smaller one.
//!
//! A remote timestamp is taken in only if it is at most a bound (default 5 s) ahead of this
//! node's wall clock: without the bound, one node whose clock runs ahead would drag every
//! node's clock with it, and objects written through healthy nodes would carry Last-Modified
//! times in the future (sync tools compare them).

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How far ahead of this node's clock a remote timestamp may be, by default.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 5_000;

/// A remote timestamp further ahead of this node's clock than the bound: refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the write's timestamp is {ahead_ms} ms ahead of this node's clock (at most {bound_ms} ms is accepted): the clocks of the nodes disagree; check NTP on the node that coordinated the write"
)]
pub struct StampAhead {
    pub ahead_ms: u64,
    pub bound_ms: u64,
}

/// A hybrid-logical-clock timestamp. Ordered by physical time, then logical counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub physical: u64,
    /// Tie-breaker within one millisecond.
    pub logical: u32,
}

impl Hlc {
    /// The next timestamp after `prev` given the local wall clock `wall_ms` (pure core).
    pub fn tick(prev: Hlc, wall_ms: u64) -> Hlc {
        if wall_ms > prev.physical {
            Hlc {
                physical: wall_ms,
                logical: 0,
            }
        } else {
            Hlc {
                physical: prev.physical,
                logical: prev.logical.saturating_add(1),
            }
        }
    }

    /// Whether `remote` is acceptable at local wall time `wall_ms`: at most `bound_ms` ahead
    /// (pure core).
    pub fn check_ahead(remote: Hlc, wall_ms: u64, bound_ms: u64) -> Result<(), StampAhead> {
        let ahead_ms = remote.physical.saturating_sub(wall_ms);
        if ahead_ms > bound_ms {
            Err(StampAhead { ahead_ms, bound_ms })
        } else {
            Ok(())
        }
    }

    /// The next local timestamp after receiving `remote` (pure core).
    pub fn merge(prev: Hlc, remote: Hlc, wall_ms: u64) -> Hlc {
        let max_phys = prev.physical.max(remote.physical).max(wall_ms);
        let logical = if max_phys == prev.physical && max_phys == remote.physical {
            prev.logical.max(remote.logical).saturating_add(1)
        } else if max_phys == prev.physical {
            prev.logical.saturating_add(1)
        } else if max_phys == remote.physical {
            remote.logical.saturating_add(1)
        } else {
            0
        };
        Hlc {
            physical: max_phys,
            logical,
        }
    }
}

/// A clock that issues monotonically increasing [`Hlc`] timestamps.
#[derive(Debug)]
pub struct HlcClock {
    last: Mutex<Hlc>,
    max_ahead_ms: u64,
    refused: AtomicU64,
}

impl Default for HlcClock {
    fn default() -> Self {
        Self::with_max_ahead(DEFAULT_MAX_AHEAD_MS)
    }
}

impl HlcClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock that refuses remote timestamps more than `max_ahead_ms` ahead of its wall clock.
    pub fn with_max_ahead(max_ahead_ms: u64) -> Self {
        Self {
            last: Mutex::new(Hlc::default()),
            max_ahead_ms,
            refused: AtomicU64::new(0),
        }
    }

    /// The bound on remote timestamps, in milliseconds.
    pub fn max_ahead_ms(&self) -> u64 {
        self.max_ahead_ms
    }

    /// Remote timestamps refused since start for being too far ahead.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Issues a new timestamp, strictly greater than every one issued or observed before.
    pub fn now(&self) -> Hlc {
        let wall = crate::now_millis();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Hlc::tick(*last, wall);
        *last
    }

    /// Takes a timestamp from another node into account, unless it is further ahead of this
    /// node's wall clock than the bound: then it is refused (and counted), and nothing changes.
    pub fn observe(&self, remote: Hlc) -> Result<(), StampAhead> {
        let wall = crate::now_millis();
        if let Err(e) = Hlc::check_ahead(remote, wall, self.max_ahead_ms) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Hlc::merge(*last, remote, wall);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn clock_steps_back() {
        let a = Hlc::tick(Hlc::default(), 1000);
        let b = Hlc::tick(a, 900); // wall clock went backwards
        assert!(b > a);
        assert_eq!(b.physical, 1000);
        let c = Hlc::tick(b, 1001);
        assert_eq!(
            c,
            Hlc {
                physical: 1001,
                logical: 0
            }
        );
    }

    #[test]
    fn remote_stamps_far_ahead_are_refused_and_counted() {
        let c = HlcClock::with_max_ahead(5_000);
        let now = crate::now_millis();
        let ok = Hlc {
            physical: now + 4_000,
            logical: 0,
        };
        assert_eq!(c.observe(ok), Ok(()));
        assert!(c.now() > ok, "an accepted stamp moves the clock");
        let hour = Hlc {
            physical: now + 3_600_000,
            logical: 0,
        };
        let e = c.observe(hour).unwrap_err();
        assert!(e.ahead_ms >= 3_590_000 && e.bound_ms == 5_000, "{e:?}");
        assert!(
            c.now().physical < hour.physical,
            "a refused stamp does not move the clock"
        );
        assert_eq!(c.refused(), 1);
        assert!(e.to_string().contains("ahead of this node's clock"));
        // Stamps from the past are always fine.
        assert_eq!(c.observe(Hlc::default()), Ok(()));
        assert_eq!(Hlc::check_ahead(hour, hour.physical - 5_000, 5_000), Ok(()));
        assert!(Hlc::check_ahead(hour, hour.physical - 5_001, 5_000).is_err());
    }

    proptest! {
        #[test]
        fn monotonic_under_any_wall_clock(walls in proptest::collection::vec(0u64..10_000, 1..200),
                                          remotes in proptest::collection::vec((0u64..10_000, 0u32..5), 0..50)) {
            let mut t = Hlc::default();
            let mut r = remotes.into_iter();
            for w in walls {
                let next = match r.next() {
                    Some((p, l)) if w % 3 == 0 => {
                        let remote = Hlc { physical: p, logical: l };
                        let n = Hlc::merge(t, remote, w);
                        prop_assert!(n > remote);
                        n
                    }
                    _ => Hlc::tick(t, w),
                };
                prop_assert!(next > t);
                t = next;
            }
        }
    }
}
