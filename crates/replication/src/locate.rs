//! `GET /cluster/locate/{bucket}/{key}`: the replica set the placement ring names for a key,
//! and what every active member actually holds of it (asked over RPC, each node answering from
//! its own metadata). Also the RPC handler of a cluster node: object requests from peers are
//! served here, everything else goes to the control plane's handler.

use crate::{ClusterStore, wire};
use async_trait::async_trait;
use ironbucket_rpc::{DataStream, Handler, Incoming, Kind, Message, pb};
use ironbucket_store::{Error, LocalStore, Result, StoredVersion};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The versions a node holds of one key.
#[derive(Serialize, Deserialize)]
struct VersionsRequest {
    bucket: String,
    key: String,
}

impl Message for VersionsRequest {
    const KIND: Kind = Kind::ObjectVersions;
    type Reply = Vec<StoredVersion>;
}

/// `/cluster/locate`'s answer and its parts: the admin API's types.
pub use ironbucket_api::{Location, NodeCopy};

impl ClusterStore {
    /// Where `bucket/key` should live and where it does.
    pub async fn locate(&self, bucket: &str, key: &str) -> Result<Location> {
        let state = self.cp.state();
        if !state.buckets.contains_key(bucket) {
            return Err(Error::NoSuchBucket);
        }
        let layout = ironbucket_cluster::layout_of(&state)
            .map_err(|e| Error::Unavailable(format!("no placement layout: {e}")))?;
        let ring = ironbucket_cluster::Ring::new(layout)
            .map_err(|e| Error::Unavailable(format!("no placement layout: {e}")))?;
        let replicas: Vec<String> = ring
            .replica_names(bucket, key)
            .into_iter()
            .map(str::to_string)
            .collect();
        let me = self.cp.node_name().to_string();
        let peers = self.cp.peers();
        let asks = state.active_members().map(|m| {
            let (name, addr) = (m.name.clone(), m.rpc_addr.clone());
            let (me, local) = (me.clone(), self.local.clone());
            let req = VersionsRequest {
                bucket: bucket.to_string(),
                key: key.to_string(),
            };
            let replica = replicas.contains(&name);
            async move {
                let got: std::result::Result<Vec<StoredVersion>, String> = if name == me {
                    local.stored_versions(bucket, key).map_err(|e| e.to_string())
                } else {
                    peers
                        .call(&addr, &req, Some(ASK_TIMEOUT))
                        .await
                        .map_err(|e| e.to_string())
                };
                let (versions, error) = match got {
                    Ok(v) => (v, None),
                    Err(e) => (Vec::new(), Some(e)),
                };
                NodeCopy {
                    node: name,
                    replica,
                    versions,
                    error,
                }
            }
        });
        let mut nodes = futures::future::join_all(asks).await;
        let rank = |n: &NodeCopy| replicas.iter().position(|r| *r == n.node).unwrap_or(usize::MAX);
        nodes.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.node.cmp(&b.node)));
        Ok(Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
            layout_version: ring.version(),
            strategy: ring.layout().strategy.to_string(),
            replication_factor: ring.factor(),
            replicas,
            nodes,
        })
    }

    /// What this node serves to its peers: object requests here, the rest to the control plane.
    pub fn handler(&self) -> Arc<dyn Handler> {
        Arc::new(NodeHandler {
            control: self.cp.handler(),
            local: self.local.clone(),
            store: self.me.get().cloned().unwrap_or_default(),
        })
    }
}

struct NodeHandler {
    control: Arc<dyn Handler>,
    local: Arc<LocalStore>,
    store: std::sync::Weak<ClusterStore>,
}

impl NodeHandler {
    /// Returns once `bucket` exists in this node's local metadata, or after a bound: a
    /// coordinator sends a replica requests only for buckets it knows, and this node may not
    /// have applied the bucket yet (it joined moments ago, or its copy of the cluster's buckets
    /// is still being written). Free when the bucket is here.
    async fn bucket_ready(&self, bucket: &str) {
        if self.local.has_bucket(bucket) {
            return;
        }
        if let Some(store) = self.store.upgrade() {
            store.bucket_in_force(bucket).await;
        }
    }
}

#[async_trait]
impl Handler for NodeHandler {
    async fn ping(&self, from: &str) -> pb::PingReply {
        self.control.ping(from).await
    }

    async fn call(&self, call: Incoming, payload: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        match call.kind {
            Kind::ObjectOp => {
                let op: wire::Op = serde_json::from_slice(&payload).map_err(|e| format!("bad object request: {e}"))?;
                if let Some(bucket) = op.bucket() {
                    self.bucket_ready(bucket).await;
                }
                Ok(wire::serve(&self.local, op).await)
            }
            Kind::ObjectVersions => {
                let req: VersionsRequest = call.decode(&payload)?;
                let versions = self
                    .local
                    .stored_versions(&req.bucket, &req.key)
                    .map_err(|e| e.to_string())?;
                ironbucket_rpc::encode(&versions)
            }
            Kind::TreeOp => {
                let ask: crate::sync::TreeAsk = call.decode(&payload)?;
                let Some(store) = self.store.upgrade() else {
                    return Err("this node is shutting down".into());
                };
                ironbucket_rpc::encode(&store.serve_tree(ask).await)
            }
            Kind::LayoutMove => {
                let ask: crate::sync::MoveAsk = call.decode(&payload)?;
                let Some(store) = self.store.upgrade() else {
                    return Err("this node is shutting down".into());
                };
                ironbucket_rpc::encode(&store.serve_move(ask).await)
            }
            Kind::CasOp => {
                let op: crate::cas::CasOp = call.decode(&payload)?;
                let Some(store) = self.store.upgrade() else {
                    return Err("this node is shutting down".into());
                };
                ironbucket_rpc::encode(&store.serve_cas(op).await)
            }
            Kind::RaftAppend
            | Kind::RaftVote
            | Kind::RaftSnapshot
            | Kind::Propose
            | Kind::Join
            | Kind::Membership
            | Kind::InForce => self.control.call(call, payload).await,
            Kind::ObjectPut | Kind::ObjectPart | Kind::ObjectGet | Kind::CasAccept | Kind::CasPull => {
                Err(format!("{} messages carry bulk data (push or pull)", call.kind))
            }
        }
    }

    async fn push(&self, call: Incoming, header: Vec<u8>, data: DataStream) -> std::result::Result<Vec<u8>, String> {
        // Fault injection for tests (`FAILPOINTS=replica-delay=return(MS)`, builds with the
        // `failpoints` feature only): this replica takes MS longer over each body it is sent,
        // as a slow disk or link would.
        #[cfg(feature = "failpoints")]
        if let Some(ms) = fail::eval("replica-delay", |a| a.and_then(|v| v.parse::<u64>().ok())).flatten() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if call.kind == Kind::CasAccept {
            let h: crate::cas::AcceptHeader = call.decode(&header)?;
            let Some(store) = self.store.upgrade() else {
                return Err("this node is shutting down".into());
            };
            return ironbucket_rpc::encode(&store.cas.accept(&store.local, h, wire::terminated(data)).await);
        }
        wire::serve_push(&self.local, call.kind, header, data, async |b: &str| {
            self.bucket_ready(b).await
        })
        .await
    }

    async fn pull(&self, call: Incoming, payload: Vec<u8>) -> std::result::Result<DataStream, String> {
        match call.kind {
            Kind::ObjectGet => wire::serve_get(&self.local, &payload, async |b: &str| self.bucket_ready(b).await).await,
            Kind::CasPull => {
                let p: crate::cas::PullStaged = call.decode(&payload)?;
                let Some(store) = self.store.upgrade() else {
                    return Err("this node is shutting down".into());
                };
                Ok(store.serve_cas_pull(p).await)
            }
            other => Err(format!("this node serves no bulk data of kind {other}")),
        }
    }
}
