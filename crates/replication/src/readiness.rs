//! Whether this node can serve writes now (`/health/ready`), and whether its peers speak a
//! given node protocol version.

use crate::ClusterStore;

impl ClusterStore {
    /// Whether every other active member answers a ping stating node protocol `version` or
    /// newer.
    pub(crate) async fn every_member_speaks(&self, version: u32) -> bool {
        self.members_speak(version, |_| true).await
    }

    /// Whether every other active member the failure detector does not report down answers a
    /// ping stating node protocol `version` or newer.
    pub(crate) async fn every_live_member_speaks(&self, version: u32) -> bool {
        let down = self.down_members();
        self.members_speak(version, |n| !down.iter().any(|d| d == n)).await
    }

    async fn members_speak(&self, version: u32, asked: impl Fn(&str) -> bool) -> bool {
        let me = self.cp.node_name().to_string();
        let addrs: Vec<String> = self.cp.with_state(|s| {
            s.active_members()
                .filter(|m| m.name != me && asked(&m.name))
                .map(|m| m.rpc_addr.clone())
                .collect()
        });
        let peers = self.cp.peers();
        let asks = addrs
            .iter()
            .map(|a| peers.ping(a, Some(std::time::Duration::from_secs(2))));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|r| r.is_ok_and(|p| p.protocol_version >= version))
    }

    /// Whether this node can serve a write now, or why not: the cluster is formed, a Raft
    /// leader is known (the control plane is reachable) and a placement layout exists.
    pub fn ready(&self) -> std::result::Result<(), String> {
        let (formed, layout) = self
            .cp
            .with_state(|s| (!s.cluster_id.is_empty(), ironbucket_cluster::layout_of(s)));
        let layout = layout.and_then(ironbucket_cluster::Ring::new).map(|_| ());
        if !formed {
            return Err(match self.cp.waiting_reason() {
                Some(why) => format!("not in a cluster yet: {why}"),
                None => "the cluster is not formed yet (waiting for the seeds to answer)".into(),
            });
        }
        // Before the leader: it says why there is none.
        self.reaches_majority()?;
        if self.cp.leader().is_none() {
            return Err("no Raft leader is known: a majority of the voting nodes is not reachable".into());
        }
        if !self.cp.clock_compared() {
            return Err("this node has not compared its clock with its peers' yet".into());
        }
        // Until then it refuses every conditional write's ballot: a second node lost meanwhile
        // (the next step of a rolling restart) would leave such writes without a quorum.
        if let Some(ms) = self.cas.joins_in() {
            return Err(format!(
                "this node started moments ago: it takes part in conditional writes in {ms} ms (promises it made before its start are not kept, so it waits out the clock bound)"
            ));
        }
        layout.map_err(|e| format!("no placement layout yet: {e}"))
    }
}
