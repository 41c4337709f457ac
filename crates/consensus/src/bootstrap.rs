//! Forming or joining the cluster from the seed list, and keeping peer connections pointed at
//! the current addresses of the seeds' and members' host names.

use crate::wire::JoinRequest;
use crate::{ControlPlane, NodeInfo, raft_id};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often host names of seeds and members are resolved again.
const REDISCOVER_EVERY: Duration = Duration::from_secs(10);
const CLOCK_PROBE_EVERY: Duration = Duration::from_secs(5);

impl ControlPlane {
    /// Forms the cluster on first start, or joins an existing one. Static bootstrap: when every
    /// seed answers and none belongs to a cluster yet, the node with the smallest name
    /// initializes the cluster with all of them as voters; the others wait for it. Exactly one
    /// cluster forms even when all nodes start at once.
    pub(crate) async fn bootstrap(me: std::sync::Weak<Self>) {
        loop {
            let Some(cp) = me.upgrade() else { return };
            if cp.initialized() || cp.raft().is_initialized().await.unwrap_or(false) {
                return;
            }
            let r = cp.bootstrap_round().await;
            if let Err(e) = &r {
                tracing::info!(error = %e, "waiting to form or join the cluster");
            }
            *cp.bootstrap_error.lock().unwrap_or_else(|p| p.into_inner()) = r.err();
            drop(cp);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Why this node is not in a cluster yet, when its last attempt to form or join one failed.
    pub fn waiting_reason(&self) -> Option<String> {
        self.bootstrap_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn bootstrap_round(&self) -> Result<(), String> {
        let me = &self.cfg.node_name;
        let mut answered: BTreeMap<String, String> = BTreeMap::new();
        let mut incarnations: BTreeMap<String, String> = BTreeMap::new();
        let mut existing = None;
        for seed in &self.cfg.seeds {
            match self.peers.ping(seed, Some(Duration::from_secs(2))).await {
                Ok(r) => {
                    if !r.cluster_id.is_empty() && &r.node_id != me {
                        existing = Some(seed.clone());
                    }
                    incarnations.insert(r.node_id.clone(), r.incarnation.clone());
                    answered.insert(r.node_id, seed.clone());
                }
                Err(e) => tracing::debug!(%seed, error = %e, "seed did not answer"),
            }
        }
        let my_addr = self.cfg.advertise.clone().or_else(|| answered.get(me).cloned());
        if let Some(addr) = existing {
            let rpc_addr = my_addr.ok_or("this node's RPC address is unknown: set NODE_RPC_ADDRESS")?;
            let req = JoinRequest {
                name: me.clone(),
                rpc_addr,
                incarnation: self.incarnation(),
                has_state: self.raft().is_initialized().await.unwrap_or(false),
                protocol: self.peers.config().protocol,
                join_token: self.cfg.join_token.clone(),
            };
            return self
                .peers
                .call(&addr, &req, Some(Duration::from_secs(60)))
                .await
                .map_err(|e| format!("join through {addr} failed: {e}"))?;
        }
        if !answered.contains_key(me) && self.cfg.advertise.is_some() {
            // This node is not among the seeds: it can only join.
            return Err("no seed belongs to a cluster yet".into());
        }
        let all = self.cfg.seeds.iter().all(|s| answered.values().any(|a| a == s));
        if !all {
            return Err(format!(
                "{} of {} seeds answer; the cluster forms when all do",
                answered.len(),
                self.cfg.seeds.len()
            ));
        }
        if answered.keys().next() != Some(me) {
            return Err("waiting for the first node to initialize the cluster".into());
        }
        let members: BTreeMap<u64, NodeInfo> = answered
            .iter()
            .map(|(name, addr)| {
                (
                    raft_id(name),
                    NodeInfo {
                        name: name.clone(),
                        rpc_addr: if name == me {
                            my_addr.clone().unwrap_or_else(|| addr.clone())
                        } else {
                            addr.clone()
                        },
                        incarnation: incarnations.get(name).cloned().unwrap_or_default(),
                    },
                )
            })
            .collect();
        tracing::info!(members = ?members.values().map(|n| n.name.as_str()).collect::<Vec<_>>(), "initializing the cluster");
        match self.raft().initialize(members).await {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("initialize: {e}")),
        }
    }

    /// Resolves the seeds' and members' host names again every [`REDISCOVER_EVERY`]: when a name
    /// now points elsewhere (a container restarted with a new address), the pooled connections
    /// to it are dropped so the next call connects to the new address at once (a broken
    /// connection also resolves the name again when it reconnects).
    /// Pings every other member now and then (every 100 ms until the first round, then every
    /// five seconds): the replies carry the members' clocks (recorded by `Peers`), so this node
    /// knows whether its clock runs ahead before it stamps its first write, not only once the
    /// others have called it.
    pub(crate) async fn clock_probe(me: std::sync::Weak<Self>) {
        loop {
            let Some(cp) = me.upgrade() else { return };
            let pause = if *cp.clock_compared.borrow() {
                CLOCK_PROBE_EVERY
            } else {
                Duration::from_millis(100)
            };
            let others: Option<Vec<String>> = cp
                .initialized()
                .then(|| cp.other_members().into_iter().map(|n| n.rpc_addr).collect());
            if let Some(others) = others {
                let pings = others.iter().map(|a| cp.peers.ping(a, Some(Duration::from_secs(2))));
                futures::future::join_all(pings).await;
                cp.clock_compared.send_replace(true);
            }
            drop(cp);
            tokio::time::sleep(pause).await;
        }
    }

    /// Whether this node has compared its clock with its members' (see `clock_probe`).
    pub fn clock_compared(&self) -> bool {
        *self.clock_compared.borrow()
    }

    /// Waits (at most `limit`) until this node has compared its clock with its members'; a
    /// write arriving while a restarted node does so waits a moment instead of failing.
    pub async fn wait_clock_compared(&self, limit: Duration) -> bool {
        // Every write asks: once compared (nearly always), no subscription and no timer.
        if self.clock_compared() {
            return true;
        }
        let mut rx = self.clock_compared.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) async fn rediscover(me: std::sync::Weak<Self>) {
        let mut known: BTreeMap<String, BTreeSet<std::net::SocketAddr>> = BTreeMap::new();
        loop {
            tokio::time::sleep(REDISCOVER_EVERY).await;
            let Some(cp) = me.upgrade() else { return };
            let mut addrs: BTreeSet<String> = cp.cfg.seeds.iter().cloned().collect();
            addrs.extend(cp.raft_nodes().into_iter().map(|(_, n)| n.rpc_addr));
            let peers = cp.peers.clone();
            drop(cp);
            for addr in addrs {
                // Literal IP addresses never move.
                if addr.parse::<std::net::SocketAddr>().is_ok() {
                    continue;
                }
                let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(5), peers.resolve(&addr)).await else {
                    continue;
                };
                let found: BTreeSet<std::net::SocketAddr> = found.into_iter().collect();
                if found.is_empty() {
                    continue;
                }
                if let Some(before) = known.get(&addr)
                    && *before != found
                {
                    tracing::info!(%addr, old = ?before, new = ?found, "peer address changed; reconnecting");
                    peers.forget(&addr);
                }
                known.insert(addr, found);
            }
        }
    }
}
