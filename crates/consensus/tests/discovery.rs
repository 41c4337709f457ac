#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Discovery by name: three control-plane nodes know each other only by host names (as Docker
//! service names), resolved through a table this test controls. Node 3 restarts on a new address
//! and the name is pointed there: until then the others cannot reach it; afterwards it catches up
//! without anyone being told its new address.

use ironbucket_consensus::records::Bucket;
use ironbucket_consensus::{Command, ControlPlane};
use ironbucket_rpc::Resolver;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Table = Arc<Mutex<HashMap<String, SocketAddr>>>;

struct Node {
    cp: Arc<ControlPlane>,
    server: tokio::task::JoinHandle<()>,
}

fn name(i: usize) -> String {
    format!("node{i}.cluster.test:700{i}")
}

async fn start(i: usize, dir: &Path, table: &Table) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    table.lock().unwrap().insert(name(i), listener.local_addr().unwrap());
    let t = table.clone();
    let resolver = Resolver::custom(move |addr| {
        let found = t.lock().unwrap().get(&addr).copied();
        Box::pin(async move { Ok(found.into_iter().collect()) })
    });
    let seeds = (1..=3).map(name).collect();
    let (cp, server) =
        ironbucket_testkit::inproc::control_node(&format!("node{i}"), listener, seeds, name(i), dir, Some(resolver))
            .await;
    Node { cp, server }
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(nodes: &[Node], bucket: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for n in nodes {
            let cmd = Command::CreateBucket {
                record: Bucket {
                    name: bucket.into(),
                    ..Default::default()
                },
                owner: None,
            };
            if n.cp.propose(cmd).await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no node could create {bucket}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_found_again_under_its_name() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let table: Table = Default::default();
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(start(i, dirs[i - 1].path(), &table).await);
    }
    wait_for("a three-voter cluster with an id", Duration::from_secs(20), || {
        let s = nodes[0].cp.status();
        !s.cluster_id.is_empty()
            && s.leader.is_some()
            && s.members.iter().filter(|m| m.raft_role == "voter").count() == 3
    })
    .await;
    create(&nodes[..2], "before-move").await;
    wait_for("node3 to see before-move", Duration::from_secs(10), || {
        nodes[2].cp.state().buckets.contains_key("before-move")
    })
    .await;

    // Node 3 goes away and comes back with the same data on another address; the name still
    // points to the old one.
    let Node { cp, server } = nodes.pop().unwrap();
    cp.shutdown().await;
    server.abort();
    let _ = server.await;
    // Its database is free once the last handle to the stopped node is gone.
    wait_for("the stopped node to be released", Duration::from_secs(10), || {
        Arc::strong_count(&cp) == 1
    })
    .await;
    drop(cp);
    let stale = table.lock().unwrap()[&name(3)];
    let moved = start(3, dirs[2].path(), &table).await;
    let fresh = table.lock().unwrap()[&name(3)];
    assert_ne!(stale, fresh);
    table.lock().unwrap().insert(name(3), stale);
    create(&nodes, "while-stale").await;
    ironbucket_testkit::holds_for(
        "node3 not reached while its name points at its old address",
        Duration::from_millis(1500),
        || async { !moved.cp.state().buckets.contains_key("while-stale") },
    )
    .await;

    // The name now points to the new address: node 3 is found and catches up by itself.
    table.lock().unwrap().insert(name(3), fresh);
    let t = Instant::now();
    wait_for("node3 to catch up at its new address", Duration::from_secs(15), || {
        moved.cp.state().buckets.contains_key("while-stale")
    })
    .await;
    println!("node3 caught up {:?} after its name was moved", t.elapsed());
    create(&nodes, "after-move").await;
    wait_for("node3 to see after-move", Duration::from_secs(10), || {
        moved.cp.state().buckets.contains_key("after-move")
    })
    .await;
    moved.cp.shutdown().await;
    for n in nodes {
        n.cp.shutdown().await;
    }
}
