//! Which peers this node can reach now, as its own pings find them: a peer whose last ping
//! went unanswered (refused connection, timeout) is unreachable until one is answered again.
//! The coordinator skips unreachable replicas at once instead of waiting for their timeouts, and
//! a node that reaches too few peers says so instead of hanging its clients' requests.

use crate::Error;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The last ping outcome per peer address.
#[derive(Debug)]
pub struct Reach {
    peers: Mutex<HashMap<String, Seen>>,
    /// How many peers are unreachable now: while none is (the usual case), asking takes no lock.
    failing: AtomicUsize,
    /// Bumped each time a peer becomes unreachable: calls under way to it give up then.
    lost: tokio::sync::watch::Sender<u64>,
}

impl Default for Reach {
    fn default() -> Self {
        Self {
            peers: Default::default(),
            failing: AtomicUsize::new(0),
            lost: tokio::sync::watch::channel(0).0,
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    /// Why the last ping failed; `None`: it was answered.
    failed: Option<String>,
}

impl Reach {
    /// Records a ping to `addr`: answered (`None`) or not (`Some(why)`).
    pub fn record(&self, addr: &str, failed: Option<String>) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let seen = Seen {
            at: Instant::now(),
            failed,
        };
        let now_failing = seen.failed.is_some();
        let was_failing = match peers.get_mut(addr) {
            Some(s) => std::mem::replace(s, seen).failed.is_some(),
            None => {
                peers.insert(addr.to_string(), seen);
                false
            }
        };
        match (was_failing, now_failing) {
            (false, true) => {
                self.failing.fetch_add(1, Ordering::Relaxed);
                self.lost.send_modify(|n| *n += 1);
                let why = peers.get(addr).and_then(|s| s.failed.as_deref()).unwrap_or("");
                tracing::warn!(peer = addr, why, "peer unreachable: its ping went unanswered");
            }
            (true, false) => {
                self.failing.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(peer = addr, "peer reachable again");
            }
            _ => {}
        }
    }

    /// Why `addr` is unreachable (its last ping failed), or `None` (answered, or not pinged yet).
    pub fn unreachable(&self, addr: &str) -> Option<String> {
        if self.failing.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .and_then(|s| s.failed.clone())
    }

    /// Runs `call` to `addr`, giving up with [`Error::Unreachable`] as soon as `addr` becomes
    /// unreachable while it is under way (a peer cut off or gone answers nothing until the
    /// call's deadline; the pings notice within about a second).
    pub(crate) async fn or_lost<T>(
        &self,
        addr: &str,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut lost = self.lost.subscribe();
        let gone = async {
            loop {
                if lost.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if let Some(why) = self.unreachable(addr) {
                    return why;
                }
            }
        };
        tokio::select! {
            r = call => r,
            why = gone => Err(Error::Unreachable {
                addr: addr.to_string(),
                why: format!("it stopped answering pings while the call was under way ({why})"),
            }),
        }
    }

    /// Whether `addr`'s last ping was answered, less than `within` ago: first-hand evidence that
    /// it is up now, which wins over gossip that has not caught up (a node just restarted).
    pub fn answered_within(&self, addr: &str, within: std::time::Duration) -> bool {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .is_some_and(|s| s.failed.is_none() && s.at.elapsed() < within)
    }

    /// Milliseconds since `addr` was last pinged (answered or not).
    pub fn last_ping_ms(&self, addr: &str) -> Option<u64> {
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .map(|s| s.at.elapsed().as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_under_way_gives_up_when_its_peer_becomes_unreachable() {
        let r = std::sync::Arc::new(Reach::default());
        let r2 = r.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            r2.record("b:1", Some("timed out".into()));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            r2.record("a:1", Some("timed out".into()));
        });
        let hang = std::future::pending::<Result<(), Error>>();
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), r.or_lost("a:1", hang))
            .await
            .expect("gave up")
            .unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains("stopped answering pings"), "{e}");
        // A call that ends first is untouched.
        assert!(r.or_lost("c:1", async { Ok::<_, Error>(7) }).await.is_ok());
    }

    #[test]
    fn the_last_ping_decides() {
        let r = Reach::default();
        assert_eq!(r.unreachable("a:1"), None, "never pinged: not known unreachable");
        r.record("a:1", Some("timed out".into()));
        assert_eq!(r.unreachable("a:1").as_deref(), Some("timed out"));
        assert_eq!(r.unreachable("b:1"), None);
        r.record("a:1", Some("refused".into()));
        assert_eq!(r.unreachable("a:1").as_deref(), Some("refused"));
        r.record("a:1", None);
        assert_eq!(r.unreachable("a:1"), None);
        assert_eq!(r.failing.load(Ordering::Relaxed), 0);
        assert!(r.last_ping_ms("a:1").is_some_and(|ms| ms < 1000));
        assert!(r.answered_within("a:1", std::time::Duration::from_secs(5)));
        assert!(!r.answered_within("a:1", std::time::Duration::ZERO), "too old");
        assert!(
            !r.answered_within("b:1", std::time::Duration::from_secs(5)),
            "never pinged"
        );
        r.record("a:1", Some("refused".into()));
        assert!(
            !r.answered_within("a:1", std::time::Duration::from_secs(5)),
            "its last ping failed"
        );
    }
}
