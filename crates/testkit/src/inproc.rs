//! In-process cluster nodes: control plane, `ClusterStore` and RPC server per node, on
//! 127.0.0.1 (the replication crate's tests, and any test below the server that needs a cluster).

use ironbucket_consensus::{ControlConfig, ControlPlane, Replication};
use ironbucket_replication::ClusterStore;
use ironbucket_rpc::{Handler, Peers, RpcConfig};
use ironbucket_store::{LocalConfig, LocalStore};
use std::sync::Arc;
use std::time::Duration;

pub fn rpc_config(name: &str, timeout: Duration) -> RpcConfig {
    RpcConfig {
        node_id: name.into(),
        cluster_name: "conformance".into(),
        secret: "conformance-secret-123".into(),
        accepted_secrets: Vec::new(),
        max_connections_per_node: 2,
        connect_timeout: Duration::from_secs(2),
        request_timeout: timeout,
        tls: None,
        protocol: ironbucket_rpc::ProtocolRange::CURRENT,
    }
}

/// One cluster node in this process: control plane, `ClusterStore` and its RPC server.
pub async fn node(
    name: &str,
    listener: tokio::net::TcpListener,
    seeds: Vec<String>,
    dir: &std::path::Path,
    factor: u32,
) -> (Arc<ControlPlane>, Arc<ClusterStore>) {
    node_with(name, listener, seeds, dir, factor, Duration::from_secs(5), |h| h).await
}

/// As [`node`], with the RPC request timeout given and the node's RPC handler wrapped by `wrap`
/// (fault injection).
pub async fn node_with(
    name: &str,
    listener: tokio::net::TcpListener,
    seeds: Vec<String>,
    dir: &std::path::Path,
    factor: u32,
    timeout: Duration,
    wrap: impl FnOnce(Arc<dyn Handler>) -> Arc<dyn Handler>,
) -> (Arc<ControlPlane>, Arc<ClusterStore>) {
    let addr = listener.local_addr().unwrap().to_string();
    let rpc = rpc_config(name, timeout);
    let cp = ControlPlane::start(
        ControlConfig {
            node_name: name.into(),
            cluster_name: "conformance".into(),
            seeds,
            advertise: Some(addr),
            role: "primary".into(),
            zone: String::new(),
            rack: String::new(),
            weight: 100,
            replication: Replication {
                factor,
                ..Replication::default()
            },
            data_dir: dir.to_path_buf(),
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(200),
            commit_timeout: Duration::from_secs(5),
            snapshot_every: 50,
            join_token: None,
        },
        Peers::new(rpc.clone()).unwrap(),
    )
    .await
    .unwrap();
    let mut cfg = LocalConfig::new(dir);
    cfg.storage.fsync = false;
    let local = LocalStore::open(cfg, None).unwrap();
    let cs = ClusterStore::new(local, cp.clone());
    let handler = wrap(cs.handler());
    tokio::spawn(async move {
        ironbucket_rpc::serve(listener, &rpc, handler, Default::default(), std::future::pending()).await
    });
    (cp, cs)
}

/// A control-plane-only node in this process (no object store): its control plane and the task
/// serving its RPC. `advertise` is the address the others reach it at; `resolver`, when given,
/// resolves peer names instead of the system (tests of discovery by name).
pub async fn control_node(
    name: &str,
    listener: tokio::net::TcpListener,
    seeds: Vec<String>,
    advertise: String,
    dir: &std::path::Path,
    resolver: Option<ironbucket_rpc::Resolver>,
) -> (Arc<ControlPlane>, tokio::task::JoinHandle<()>) {
    let rpc = rpc_config(name, Duration::from_secs(2));
    let mut peers = Peers::new(rpc.clone()).unwrap();
    if let Some(r) = resolver {
        peers = peers.with_resolver(r);
    }
    let cp = ControlPlane::start(
        ControlConfig {
            node_name: name.into(),
            cluster_name: "conformance".into(),
            seeds,
            advertise: Some(advertise),
            role: "primary".into(),
            zone: String::new(),
            rack: String::new(),
            weight: 100,
            replication: Replication::default(),
            data_dir: dir.to_path_buf(),
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            commit_timeout: Duration::from_secs(3),
            snapshot_every: 1000,
            join_token: None,
        },
        peers,
    )
    .await
    .unwrap();
    let handler = cp.handler();
    let server = tokio::spawn(async move {
        let _ = ironbucket_rpc::serve(listener, &rpc, handler, Default::default(), std::future::pending()).await;
    });
    (cp, server)
}

/// Waits until every node sees `members` active members that can hold data and has compared
/// its clock with its peers' (it stamps no write before).
pub async fn placed(cps: &[Arc<ControlPlane>], members: usize) {
    crate::poll_until(
        &format!("{members} members placed (status: {:?})", cps[0].status()),
        Duration::from_secs(30),
        || async {
            cps.iter()
                .all(|cp| {
                    let st = cp.state();
                    cp.clock_compared()
                        && !st.cluster_id.is_empty()
                        && ironbucket_cluster::layout_of(&st)
                            .ok()
                            .and_then(|l| ironbucket_cluster::Ring::new(l).ok())
                            .is_some_and(|r| r.layout().nodes.len() == members)
                })
                .then_some(())
        },
    )
    .await
}
