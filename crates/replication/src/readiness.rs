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

    /// Waits until `bucket` exists in this node's local metadata, at most half the request
    /// timeout (so that the coordinator still gets an answer in time): the cluster's buckets
    /// reach the local metadata after the control log is applied. A bucket that does not
    /// come is answered as absent by the request itself.
    pub(crate) async fn bucket_in_force(&self, bucket: &str) {
        // Subscribed before the first look, so that no change between the two is missed.
        let mut applied = self.cp.applied_watch();
        let mut materialized = self.cp.materialized_watch();
        let deadline = tokio::time::Instant::now() + self.timeout() / 2;
        while !self.local.has_bucket(bucket) {
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                r = materialized.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(bucket, "a replica request names a bucket this node does not have");
                    return;
                }
            }
        }
    }

    /// Whether this node can serve a write now, or why not: it can change the cluster's state
    /// ([`ClusterStore::control_ready`]) and the cluster's buckets are in its own metadata.
    pub fn ready(&self) -> std::result::Result<(), String> {
        self.control_ready()?;
        // The cluster's buckets and keys reach this node's own metadata after the log is
        // applied: until the first time, requests for any bucket would fail here.
        if self.cp.materialized_watch().borrow().is_none() {
            return Err("this node has not written the cluster's buckets and keys to its own metadata yet".into());
        }
        Ok(())
    }

    /// Whether this node can take part in changes to the cluster's state, or why not: the
    /// cluster is formed, a Raft leader is known (the control plane is reachable), the clocks
    /// were compared, it takes part in conditional writes and a placement layout exists.
    pub(crate) fn control_ready(&self) -> std::result::Result<(), String> {
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
