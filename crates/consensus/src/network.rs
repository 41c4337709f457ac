//! Raft traffic over the project's RPC (`ironbucket_rpc`): each openraft message is one typed
//! message of the node protocol (`wire::{Append, Vote, Snapshot}`), JSON on the wire; the
//! answer is `Result<reply, RaftError>`.

#![allow(clippy::result_large_err)] // openraft's traits fix the (large) error types.

use crate::wire::{Append, Snapshot, Vote};
use crate::{NodeInfo, TypeConfig};
use ironbucket_rpc::{Message, Peers};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

pub struct Network {
    pub(crate) peers: Peers,
}

pub struct Connection {
    peers: Peers,
    target: u64,
    node: NodeInfo,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Connection {
        Connection {
            peers: self.peers.clone(),
            target,
            node: node.clone(),
        }
    }
}

impl Connection {
    async fn call<M, Resp, E>(
        &self,
        req: M,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, NodeInfo, RaftError<u64, E>>>
    where
        M: Message<Reply = Result<Resp, RaftError<u64, E>>>,
        E: std::error::Error,
    {
        let res = self
            .peers
            .raft_call(
                &self.node.rpc_addr,
                &self.node.incarnation,
                &req,
                Some(option.hard_ttl()),
            )
            .await
            .map_err(|e| {
                if e.is_unavailable() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        self.call(Append(rpc), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64, InstallSnapshotError>>> {
        self.call(Snapshot(rpc), &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, NodeInfo, RaftError<u64>>> {
        self.call(Vote(rpc), &option).await
    }
}
