//! Hybrid logical clock: physical milliseconds plus a logical counter, so that timestamps
//! issued by one node are strictly increasing even when its wall clock steps backwards, and
//! a node that has seen a remote timestamp never issues a smaller one.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

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
#[derive(Debug, Default)]
pub struct HlcClock {
    last: Mutex<Hlc>,
}

impl HlcClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a new timestamp, strictly greater than every one issued or observed before.
    pub fn now(&self) -> Hlc {
        let wall = crate::now_millis();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Hlc::tick(*last, wall);
        *last
    }

    /// Takes a timestamp seen from elsewhere (another node, or the newest stored record) into account.
    pub fn observe(&self, remote: Hlc) {
        let wall = crate::now_millis();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Hlc::merge(*last, remote, wall);
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
