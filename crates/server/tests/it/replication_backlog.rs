//! Asynchronous replication with a bounded lag: writes at ONE are answered once one replica has
//! them and the others are written in the background; a coordinator with more replica requests
//! in flight than `MAX_REPLICATION_BACKLOG` makes its writes wait for their other replicas too.
//! Real processes on 127.0.0.1; one replica slowed down by a fault point. Also a replica that
//! is behind on the cluster's buckets.

use crate::common::cluster::*;
use crate::common::moves::admin_json;
use crate::common::*;
use std::time::Duration;

async fn metrics(srv: &Server) -> serde_json::Value {
    let (st, v, body) = admin_json(srv, "GET", "/cluster/metrics/replication").await;
    assert_eq!(st, 200, "{body}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_at_one_replicate_in_the_background_with_a_bounded_backlog() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let common_args = [
        "--replication-factor",
        "3",
        "--write-consistency",
        "ONE",
        "--anti-entropy",
        "false",
    ];
    let start = |i: usize, extra: &[&str], envs: &[(&str, &str)]| {
        let flags: Vec<&str> = common_args.iter().chain(extra).copied().collect();
        start_node(i, &ports, &seeds, &flags, envs)
    };
    let nodes = [
        // node-1 holds back a write while it has more than 4 replica requests in flight.
        start(0, &["--max-replication-backlog", "4"], &[]),
        // node-2 keeps the default bound (10,000).
        start(1, &[], &[]),
        // node-3 takes 1.5 s over every body it is sent (a slow replica).
        start(2, &[], &[("FAILPOINTS", "replica-delay=return(1500)")]),
    ];
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    let c2 = nodes[1].client();
    c2.create_bucket().bucket("lag").send().await.unwrap();

    // Through node-2: 20 writes at ONE are answered at once; node-3's copies are still on
    // their way afterwards, so node-2's backlog grows with the client.
    for i in 0..20u64 {
        c2.put_object()
            .bucket("lag")
            .key(format!("two/{i:03}"))
            .body(data(4096, i).into())
            .send()
            .await
            .unwrap();
    }
    let m2 = metrics(&nodes[1]).await;
    let lagging = m2["replica_writes_in_flight"]["node-3"].as_u64().unwrap_or(0);
    assert!(lagging > 4, "node-2 answered at ONE without waiting for node-3: {m2:#}");
    assert_eq!(m2["backlog_waits"], 0, "{m2:#}");

    // Through node-1: the same writes, but each waits while node-1 has more than 4 replica
    // requests in flight: its backlog never goes over the bound.
    let c1 = nodes[0].client();
    for i in 0..20u64 {
        c1.put_object()
            .bucket("lag")
            .key(format!("one/{i:03}"))
            .body(data(4096, 100 + i).into())
            .send()
            .await
            .unwrap();
        let m1 = metrics(&nodes[0]).await;
        assert!(
            m1["backlog"].as_u64().unwrap() <= 4,
            "node-1's backlog went over its bound after write {i}: {m1:#}"
        );
    }
    let m1 = metrics(&nodes[0]).await;
    assert_eq!(m1["max_backlog"], 4);
    assert!(m1["backlog_waits"].as_u64().unwrap() > 0, "{m1:#}");
    println!(
        "node-2 (bound 10000): {lagging} requests to node-3 in flight after 20 writes; node-1 (bound 4): {} writes waited",
        m1["backlog_waits"]
    );

    // Everything reaches node-3 in the end, and the backlogs drain.
    poll_until("the backlogs drain", Duration::from_secs(60), || async {
        let (a, b) = (metrics(&nodes[0]).await, metrics(&nodes[1]).await);
        (a["backlog"] == 0 && b["backlog"] == 0).then_some(())
    })
    .await;
    let c3 = nodes[2].client();
    for (prefix, base) in [("two", 0u64), ("one", 100)] {
        for i in 0..20u64 {
            let got = c3
                .get_object()
                .bucket("lag")
                .key(format!("{prefix}/{i:03}"))
                .customize()
                .mutate_request(|r| {
                    r.headers_mut().insert("x-ironbucket-consistency", "ALL");
                })
                .send()
                .await
                .unwrap();
            assert_eq!(body_bytes(got).await, data(4096, base + i));
        }
    }
}

/// A replica sent a write for a bucket it has not written to its own metadata yet (it joined
/// moments ago, or it is slow to apply the control log) waits for the bucket instead of
/// answering NoSuchBucket; at write level ALL that answer failed the client's write (seen when
/// a fourth node joined under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_on_new_buckets_takes_their_writes() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let start = |i: usize, envs: &[(&str, &str)]| {
        let mut args = node_args(&format!("node-{}", i + 1), ports[i], &seeds, SECRET);
        // Longer than usual, so that the wait for the bucket (at most half of it) outlasts the
        // slow node's delay.
        let t = args.iter().position(|a| a == "--request-timeout-ms").unwrap();
        args[t + 1] = "8000".into();
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend_from_slice(&["--replication-factor", "3", "--write-consistency", "ALL"]);
        Server::start_with(&a, envs)
    };
    let nodes = [
        start(0, &[]),
        start(1, &[]),
        // node-3 writes each change of the cluster's buckets to its metadata 3 s late; the
        // coordinator waits 2 s for it to confirm a new bucket, then goes on.
        start(2, &[("FAILPOINTS", "materialize-delay=return(3000)")]),
    ];
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    let c1 = nodes[0].client();
    for b in ["late-1", "late-2"] {
        c1.create_bucket().bucket(b).send().await.unwrap();
        // At ALL, node-3 must take the write although the bucket is not in its metadata yet.
        for (i, c) in [nodes[0].client(), nodes[2].client()].iter().enumerate() {
            c.put_object()
                .bucket(b)
                .key(format!("k{i}"))
                .body(data(1024, i as u64).into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {b}/k{i}: {e:?}"));
        }
        let got = nodes[2].client().get_object().bucket(b).key("k0").send().await.unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            data(1024, 0).as_slice()
        );
    }
    // A bucket that does not exist is still answered NoSuchBucket (by the coordinator).
    let e = nodes[2]
        .client()
        .put_object()
        .bucket("never-made")
        .key("k")
        .body(data(10, 0).into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 404);
}
