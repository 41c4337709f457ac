#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared `ObjectStore` conformance suite against a one-node `ClusterStore`: real node RPC
//! and Raft in this process, buckets and their settings going through the control plane.

use ironbucket_consensus::{ControlConfig, ControlPlane, Replication};
use ironbucket_replication::ClusterStore;
use ironbucket_rpc::{Peers, RpcConfig};
use ironbucket_store::{LocalConfig, LocalStore, ObjectStore, conformance};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_one_node_cluster_store() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rpc = RpcConfig {
        node_id: "solo".into(),
        cluster_name: "conformance".into(),
        secret: "conformance-secret-123".into(),
        max_connections_per_node: 2,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        tls: None,
    };
    let cp = ControlPlane::start(
        ControlConfig {
            node_name: "solo".into(),
            cluster_name: "conformance".into(),
            seeds: vec![addr.clone()],
            advertise: Some(addr),
            role: "primary".into(),
            zone: String::new(),
            rack: String::new(),
            weight: 100,
            replication: Replication::default(),
            data_dir: dir.path().to_path_buf(),
            heartbeat: Duration::from_millis(50),
            election_timeout: Duration::from_millis(200),
            commit_timeout: Duration::from_secs(5),
            snapshot_every: 50,
        },
        Peers::new(rpc.clone()).unwrap(),
    )
    .await
    .unwrap();
    let handler = cp.handler();
    tokio::spawn(async move { ironbucket_rpc::serve(listener, &rpc, handler, std::future::pending()).await });
    // Wait for the one-node cluster to form and name itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cp.status().raft_state != "leader" || cp.state().cluster_id.is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", cp.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cfg = LocalConfig::new(dir.path());
    cfg.storage.fsync = false;
    let local = LocalStore::open(cfg, None).unwrap();
    let s: Arc<dyn ObjectStore> = ClusterStore::new(local, cp.clone());
    conformance::run_all(s).await;
    cp.shutdown().await;
}
