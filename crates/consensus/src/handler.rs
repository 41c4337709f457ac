//! The control plane's side of `ironbucket_rpc`: Raft messages from peers (refused when meant
//! for another incarnation of this node) and the control requests members send to one another
//! (forwarded proposals and membership changes, joins, in-force confirmations).

use crate::plane::IN_FORCE_WAIT;
use crate::wire::{Forwarded, JoinRequest, MembershipOp};
use crate::{Command, ControlPlane, raft_id};
use ironbucket_rpc::{Handler, pb};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

impl ControlPlane {
    /// The RPC handler to serve to peers.
    pub fn handler(self: &Arc<Self>) -> Arc<dyn Handler> {
        Arc::new(RpcHandler(self.clone()))
    }

    /// Only current members (in their current incarnation) may have the leader act for them:
    /// a removed or fenced node acting on a stale view is refused.
    fn check_member(&self, name: &str, incarnation: &str) -> Result<(), String> {
        let known = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&raft_id(name))
            .map(|n| n.incarnation.clone());
        match known {
            Some(i) if i == incarnation || i.is_empty() => Ok(()),
            _ => {
                tracing::warn!(node = %name, "refused a request forwarded by a node that is not a current member");
                Err(format!("node {name} is not a current member of this cluster"))
            }
        }
    }
}

struct RpcHandler(Arc<ControlPlane>);

fn reply<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("bad message: {e}"))
}

#[async_trait::async_trait]
impl Handler for RpcHandler {
    async fn ping(&self, _from: &str) -> pb::PingReply {
        let cp = &self.0;
        let cluster_id = if cp.initialized() {
            let id = cp.with_state(|s| s.cluster_id.clone());
            if id.is_empty() { "initializing".into() } else { id }
        } else {
            String::new()
        };
        pb::PingReply {
            node_id: cp.cfg.node_name.clone(),
            cluster_name: cp.cfg.cluster_name.clone(),
            cluster_id,
            advertise: cp.cfg.advertise.clone().unwrap_or_default(),
            incarnation: cp.incarnation(),
            protocol_version: cp.peers.config().protocol.max,
            protocol_min: cp.peers.config().protocol.min,
        }
    }

    async fn raft(&self, kind: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let raft = self.0.raft();
        let (kind, meant_for) = kind.split_once(':').unwrap_or((kind, ""));
        if !meant_for.is_empty() && meant_for != self.0.incarnation() {
            tracing::warn!(
                expected = %meant_for,
                mine = %self.0.incarnation(),
                "refused a Raft message meant for another incarnation of this node (its data was lost or replaced)"
            );
            return Err("this node's Raft state is not the one the cluster knows; it must be replaced (POST /cluster/nodes/{id}/replace)".into());
        }
        match kind {
            "append" => reply(&raft.append_entries(decode(&payload)?).await),
            "vote" => reply(&raft.vote(decode(&payload)?).await),
            "snapshot" => reply(&raft.install_snapshot(decode(&payload)?).await),
            other => Err(format!("unknown raft message {other:?}")),
        }
    }

    async fn control(&self, kind: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        match kind {
            "propose" => {
                let f: Forwarded<Command> = decode(&payload)?;
                self.0.check_member(&f.from, &f.incarnation)?;
                let r = self.0.propose_inner(f.body, false).await.map_err(|e| e.to_string());
                reply(&r)
            }
            "join" => {
                let req: JoinRequest = decode(&payload)?;
                reply(&self.0.join(req).await)
            }
            "membership" => {
                let f: Forwarded<MembershipOp> = decode(&payload)?;
                self.0.check_member(&f.from, &f.incarnation)?;
                reply(&self.0.membership_op(f.body).await)
            }
            "in_force" => {
                let index: u64 = String::from_utf8_lossy(&payload)
                    .parse()
                    .map_err(|_| "bad index".to_string())?;
                reply(&self.0.wait_in_force(index, IN_FORCE_WAIT).await)
            }
            other => Err(format!("unknown control request {other:?}")),
        }
    }
}
