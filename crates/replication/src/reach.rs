//! Fail fast when peers cannot be reached: this node pings every other member several times a
//! second, and a replica whose last ping went unanswered is skipped at once, as one the failure
//! detector reports down. So a node cut off from the others (a network partition, its peers
//! killed) answers its clients' requests with 503 within a second instead of holding them until
//! the request timeout, reports itself not ready (`/health/ready`) while it reaches no majority
//! of the members, and serves again as soon as its pings are answered.

use crate::ClusterStore;
use crate::coordinator::Target;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use ironbucket_runtime::WorkerCtx;
use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// Pause between rounds of pings.
pub(crate) const PING_EVERY: Duration = Duration::from_millis(150);
/// A ping not answered within this makes the peer unreachable: well above a loaded LAN's round
/// trip, and short enough that a cut is noticed within a second (at most this plus
/// [`PING_EVERY`] after it happens), calls under way to the peer included.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_millis(700);
/// A ping answered this recently shows its peer up, whatever the gossip says: more than a
/// round of pings ([`PING_EVERY`] + [`PING_TIMEOUT`]) so that it holds between rounds.
pub(crate) const ANSWERED_FRESH: Duration = Duration::from_millis(1_000);
/// How long a request that cannot be served without a replica known down waits for that
/// replica to answer a ping of its own: a node just restarted answers at once, and a request
/// that fails still fails within a second.
pub(crate) const RECHECK_TIMEOUT: Duration = Duration::from_millis(300);
/// A recheck serves the requests that come within this of it (no ping per request).
const RECHECK_SHARED_FOR: Duration = Duration::from_millis(100);

/// A ping that several requests wait for.
type SharedPing = Shared<BoxFuture<'static, ()>>;

/// The rechecks under way or just done, per peer address: when each began, and its ping.
#[derive(Default)]
pub(crate) struct Rechecks(Mutex<HashMap<String, (Instant, SharedPing)>>);

impl ClusterStore {
    /// The worker `cluster.reachability`: pings every other member each [`PING_EVERY`]; the
    /// outcomes are kept by the RPC layer ([`ironbucket_rpc::Peers::reach`]).
    pub(crate) async fn reach_loop(me: Weak<Self>, ctx: WorkerCtx) -> std::result::Result<(), String> {
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            let peers = s.cp.peers().clone();
            let others: Vec<Target> = s.all_targets().into_iter().filter(|t| !t.local).collect();
            drop(s);
            let pings = others.iter().map(|t| peers.ping(&t.addr, Some(PING_TIMEOUT)));
            futures::future::join_all(pings).await;
            ctx.sleep(PING_EVERY).await;
        }
    }

    /// Before a request fails for want of replicas known down: pings those of `targets` (one
    /// ping per peer shared by the requests that want it) when `short`, given their names, says
    /// the request cannot be served without them. Their view is stale for up to a round of
    /// pings after they come back (and the gossip's for longer): a write sent to a node that
    /// restarted a moment ago must not fail for it. What the pings find, [`Self::is_down`] reads.
    pub(crate) async fn recheck_when_short(&self, targets: &[Target], short: impl FnOnce(&[&str]) -> bool) {
        let down: Vec<&Target> = targets.iter().filter(|t| self.is_down(t)).collect();
        if down.is_empty() {
            return;
        }
        let names: Vec<&str> = down.iter().map(|t| t.name.as_str()).collect();
        if !short(&names) {
            return;
        }
        futures::future::join_all(down.iter().map(|t| self.recheck(&t.addr))).await;
    }

    /// Pings `addr` now, or waits for the ping another request started moments ago.
    fn recheck(&self, addr: &str) -> SharedPing {
        let mut m = self.rechecks.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, ping)) = m.get(addr)
            && (ping.peek().is_none() || at.elapsed() < RECHECK_SHARED_FOR)
        {
            return ping.clone();
        }
        m.retain(|_, (at, ping)| ping.peek().is_none() || at.elapsed() < RECHECK_SHARED_FOR);
        let (peers, a) = (self.cp.peers().clone(), addr.to_string());
        let ping = async move {
            // The outcome is recorded by the RPC layer, where `is_down` reads it.
            let _ = peers.ping(&a, Some(RECHECK_TIMEOUT)).await;
        }
        .boxed()
        .shared();
        m.insert(addr.to_string(), (Instant::now(), ping.clone()));
        ping
    }

    /// Why a replica is unreachable by RPC now (its last ping went unanswered), if it is.
    pub(crate) fn unreachable(&self, t: &Target) -> Option<String> {
        if t.local {
            return None;
        }
        self.cp.peers().reach().unreachable(&t.addr)
    }

    /// `Err` naming the members out of reach when this node reaches (itself included) no
    /// majority of the members: its writes and QUORUM reads cannot be served.
    pub(crate) fn reaches_majority(&self) -> std::result::Result<(), String> {
        let members = self.all_targets();
        let out: Vec<String> = members
            .iter()
            .filter(|t| self.is_down(t))
            .map(|t| t.name.clone())
            .collect();
        let reached = members.len() - out.len();
        if members.len() > 1 && reached * 2 <= members.len() {
            return Err(format!(
                "this node reaches {reached} of the {} members (itself included), no majority: {} {} down or unreachable",
                members.len(),
                out.join(", "),
                if out.len() == 1 { "is" } else { "are" }
            ));
        }
        Ok(())
    }
}
