#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared `ObjectStore` conformance suite against a one-node `ClusterStore`: real node RPC
//! and Raft in this process, buckets and their settings going through the control plane.

use ironbucket_store::{ObjectStore, conformance};
use ironbucket_testkit::inproc::{node, placed};
use std::sync::Arc;

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
