#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared `ObjectStore` conformance suite against a one-node `ClusterStore`: real node RPC
//! and Raft in this process, buckets and their settings going through the control plane.

use ironbucket_consensus::{ControlConfig, ControlPlane, Replication};
use ironbucket_replication::ClusterStore;
use ironbucket_rpc::{Peers, RpcConfig};
use ironbucket_store::{LocalConfig, LocalStore, ObjectStore, conformance};
use std::sync::Arc;
use std::time::Duration;

fn rpc_config(name: &str) -> RpcConfig {
    RpcConfig {
        node_id: name.into(),
        cluster_name: "conformance".into(),
        secret: "conformance-secret-123".into(),
        max_connections_per_node: 2,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        tls: None,
    }
}

/// One cluster node in this process: control plane, `ClusterStore` and its RPC server.
async fn node(
    name: &str,
    listener: tokio::net::TcpListener,
    seeds: Vec<String>,
    dir: &std::path::Path,
    factor: u32,
) -> (Arc<ControlPlane>, Arc<ClusterStore>) {
    let addr = listener.local_addr().unwrap().to_string();
    let rpc = rpc_config(name);
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
        },
        Peers::new(rpc.clone()).unwrap(),
    )
    .await
    .unwrap();
    let mut cfg = LocalConfig::new(dir);
    cfg.storage.fsync = false;
    let local = LocalStore::open(cfg, None).unwrap();
    let cs = ClusterStore::new(local, cp.clone());
    let handler = cs.handler();
    tokio::spawn(async move { ironbucket_rpc::serve(listener, &rpc, handler, std::future::pending()).await });
    (cp, cs)
}

/// Waits until every node sees `members` active members that can hold data.
async fn placed(cps: &[Arc<ControlPlane>], members: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = cps.iter().all(|cp| {
            let st = cp.state();
            !st.cluster_id.is_empty()
                && ironbucket_cluster::layout_of(&st)
                    .ok()
                    .and_then(|l| ironbucket_cluster::Ring::new(l).ok())
                    .is_some_and(|r| r.layout().nodes.len() == members)
        });
        if ready {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", cps[0].status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_one_node_cluster_store() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (cp, cs) = node("solo", listener, vec![addr], dir.path(), 1).await;
    placed(std::slice::from_ref(&cp), 1).await;
    let s: Arc<dyn ObjectStore> = cs;
    conformance::run_all(s).await;
    cp.shutdown().await;
}

/// The same suite through one node of three at RF 3: every object operation goes through the
/// coordinator, the replicas and the RPC between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_three_node_cluster_store() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let seeds: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let mut cps = Vec::new();
    let mut stores = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let (cp, cs) = node(&format!("n{}", i + 1), l, seeds.clone(), dirs[i].path(), 3).await;
        cps.push(cp);
        stores.push(cs);
    }
    placed(&cps, 3).await;
    let s: Arc<dyn ObjectStore> = stores[1].clone();
    conformance::run_all(s).await;
    for cp in cps {
        cp.shutdown().await;
    }
}
