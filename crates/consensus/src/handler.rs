//! The control plane's side of `ironbucket_rpc`: Raft messages from peers (refused when meant
//! for another incarnation of this node) and the control requests members send to one another
//! (forwarded proposals and membership changes, joins, in-force confirmations).

use crate::plane::IN_FORCE_WAIT;
use crate::wire::{Append, Failure, Forwarded, InForce, JoinRequest, MembershipOp, Snapshot, Vote};
use crate::{Command, ControlPlane, Error, raft_id};
use ironbucket_rpc::{Handler, Incoming, Kind, Method, encode, pb};
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
            now_ms: ironbucket_types::now_millis(),
        }
    }

    async fn call(&self, call: Incoming, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let cp = &self.0;
        if call.kind.method() == Method::Raft && !call.incarnation.is_empty() && call.incarnation != cp.incarnation() {
            tracing::warn!(
                expected = %call.incarnation,
                mine = %cp.incarnation(),
                "refused a Raft message meant for another incarnation of this node (its data was lost or replaced)"
            );
            return Err("this node's Raft state is not the one the cluster knows; it must be replaced (POST /cluster/nodes/{id}/replace)".into());
        }
        let raft = cp.raft();
        let failure = |e: Error| Failure::for_version(e, call.version);
        match call.kind {
            Kind::RaftAppend => encode(&raft.append_entries(call.decode::<Append>(&payload)?.0).await),
            Kind::RaftVote => encode(&raft.vote(call.decode::<Vote>(&payload)?.0).await),
            Kind::RaftSnapshot => encode(&raft.install_snapshot(call.decode::<Snapshot>(&payload)?.0).await),
            Kind::Propose => {
                let f: Forwarded<Command> = call.decode(&payload)?;
                cp.check_member(&f.from, &f.incarnation)?;
                encode(&cp.propose_inner(f.body, false).await.map_err(failure))
            }
            Kind::Join => {
                let req: JoinRequest = call.decode(&payload)?;
                encode(&cp.join(req).await)
            }
            Kind::Membership => {
                let f: Forwarded<MembershipOp> = call.decode(&payload)?;
                cp.check_member(&f.from, &f.incarnation)?;
                let r = cp.membership_op(f.body).await.map_err(|e| failure(Error::Invalid(e)));
                encode(&r)
            }
            Kind::InForce => {
                let InForce(index) = call.decode(&payload)?;
                encode(&cp.wait_in_force(index, IN_FORCE_WAIT).await)
            }
            Kind::ObjectOp
            | Kind::ObjectVersions
            | Kind::ObjectPut
            | Kind::ObjectPart
            | Kind::ObjectGet
            | Kind::TreeOp
            | Kind::LayoutMove
            | Kind::CasOp
            | Kind::CasAccept
            | Kind::CasPull => Err(format!("the control plane does not serve {} messages", call.kind)),
        }
    }
}
