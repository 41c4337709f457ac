//! The multi-node test kit: what every multi-node test uses to get free ports and to wait for a
//! condition with a deadline (never a fixed sleep), and in-process cluster nodes (control plane,
//! `ClusterStore` and RPC server per node, on 127.0.0.1) for the layers below the server. The
//! server's tests start real processes with the same primitives
//! (`crates/server/tests/it/common/cluster.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod inproc;
pub mod linearizable;
mod ports;
pub mod proxy;

pub use ports::{RESERVATION_LIFE, free_ports};

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(50);

/// The `--cluster-seeds` value for nodes on `ports` of 127.0.0.1.
pub fn seeds_of(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks `check` until it gives a value, and returns it; fails the test after `timeout`,
/// naming `what`.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Checks that `check` holds, again and again, for all of `window` (something that must not
/// happen: a second decision, a node reached through a stale address); fails the test the
/// moment it does not, naming `what`.
pub async fn holds_for<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + window;
    loop {
        assert!(check().await, "{what}: no longer true");
        if Instant::now() >= end {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn polling_returns_the_value_and_invariants_are_checked_throughout() {
        let mut n = 0;
        let got = poll_until("three tries", Duration::from_secs(5), || {
            n += 1;
            let v = (n >= 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
        let mut seen = 0;
        holds_for("always", Duration::from_millis(120), || {
            seen += 1;
            async { true }
        })
        .await;
        assert!(seen >= 2, "checked more than once: {seen}");
    }

    #[tokio::test]
    #[should_panic(expected = "never: not within")]
    async fn a_condition_that_never_comes_fails_the_test() {
        poll_until::<(), _, _>("never", Duration::from_millis(100), || async { None }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "flips: no longer true")]
    async fn an_invariant_that_breaks_fails_the_test() {
        let mut n = 0;
        holds_for("flips", Duration::from_secs(5), || {
            n += 1;
            let ok = n < 3;
            async move { ok }
        })
        .await;
    }
}
