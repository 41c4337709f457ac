//! Fail fast when peers cannot be reached: this node pings every other member several times a
//! second, and a replica whose last ping went unanswered is skipped at once, as one the failure
//! detector reports down. So a node cut off from the others (a network partition, its peers
//! killed) answers its clients' requests with 503 within a second instead of holding them until
//! the request timeout, reports itself not ready (`/health/ready`) while it reaches no majority
//! of the members, and serves again as soon as its pings are answered.

use crate::ClusterStore;
use crate::coordinator::Target;
use ironbucket_runtime::WorkerCtx;
use std::sync::Weak;
use std::time::Duration;

/// Pause between rounds of pings.
pub(crate) const PING_EVERY: Duration = Duration::from_millis(150);
/// A ping not answered within this makes the peer unreachable: well above a loaded LAN's round
/// trip, and short enough that a cut is noticed within a second (at most this plus
/// [`PING_EVERY`] after it happens), calls under way to the peer included.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_millis(700);

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
