//! Token-bucket rate limits by name (an access key, a client address): `rate` requests per
//! second with bursts of `2 × rate`. The caller passes the time, so the logic is pure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most names tracked; past it, names whose bucket is full again are forgotten.
const MAX_NAMES: usize = 100_000;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: f64::from(rate),
            burst: 2.0 * f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token for `name` at `now`; `Err(wait)`: none left, one is back after `wait`.
    pub fn take(&self, name: &str, now: Instant) -> Result<(), Duration> {
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_NAMES && !m.contains_key(name) {
            let (rate, burst) = (self.rate, self.burst);
            m.retain(|_, (t, at)| *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = m.entry(name.to_string()).or_insert((self.burst, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_rate() {
        assert!(RateLimiter::new(0).is_none());
        let l = RateLimiter::new(10).unwrap();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(l.take("a", t0).is_ok());
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        // Another name has its own bucket.
        assert!(l.take("b", t0).is_ok());
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.take("a", t1).is_ok());
        assert!(l.take("a", t1).is_err());
    }
}
