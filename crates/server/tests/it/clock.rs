//! Clock safety with real processes: a node whose clock runs ahead cannot drag the others'
//! clocks into the future. It compares its clock with its peers' (their ping replies) before it
//! reports ready or stamps a write, and once it knows it is ahead it stamps no writes (503,
//! stored nowhere, not even locally); objects written through healthy nodes keep a truthful Last-Modified, and every
//! node reports the skewed one in `/cluster/health`. A node an hour ahead is refused outright and
//! reported.

use crate::common::cluster::*;
use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

async fn cluster_health(srv: &Server) -> serde_json::Value {
    let (st, _, body) = admin_get(&format!("{}/cluster/health", srv.admin)).await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `srv`'s `/cluster/health` until it lists `node` as skewed; returns that peer's entry.
async fn reported_skewed(srv: &Server, node: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = cluster_health(srv).await;
        let skewed = v["clock"]["skewed_nodes"].as_array().unwrap().iter().any(|n| n == node);
        if skewed {
            return v["clock"]["peers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["node"] == node)
                .cloned()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "{node} not reported as skewed: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn a_node_whose_clock_runs_ahead_is_refused_and_reported() {
    let ports = free_ports(4);
    let seeds = seeds_of(&ports[..3]);
    // node-3's clock is 200 s ahead: inside the RPC credentials' window, so it joins, but far
    // beyond the 5 s bound on stamps.
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let mut args = node_args(&format!("node-{}", i + 1), ports[i], &seeds, SECRET);
            args.extend(["--replication-factor", "3"].map(String::from));
            if i == 2 {
                args.extend(["--clock-offset-ms", "200000"].map(String::from));
            }
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start_with(&a, &[])
        })
        .collect();
    converged(&[&nodes[0], &nodes[1]], 3, Duration::from_secs(30)).await;
    let (healthy, skewed) = (nodes[0].client(), nodes[2].client());
    healthy.create_bucket().bucket("clocks").send().await.unwrap();

    // node-3 never reports ready (a load balancer sends its writes elsewhere): it compares its
    // clock with its members' (their ping replies carry their clocks) and says why.
    let ready = format!("{}/health/ready", nodes[2].admin);
    let why = poll_until("node-3 not ready for its clock", Duration::from_secs(30), || async {
        let (st, _, body) = admin_get(&ready).await;
        (st == 503 && body.contains("clock runs ahead of")).then_some(body)
    })
    .await;
    assert!(why.contains("stamps no writes"), "{why}");
    // It knows its clock runs ahead before its first write, without waiting for their calls.
    let offsets: Vec<i64> = cluster_health(&nodes[2]).await["clock"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["offset_ms"].as_i64())
        .collect();
    assert!(
        offsets.iter().filter(|o| **o < -150_000).count() >= 2,
        "node-3 does not know its peers' clocks: {offsets:?}"
    );
    // A write sent to the skewed node is refused (503, naming the clock), and stored nowhere:
    // not even on node-3, where a stamp from the future would win over later writes.
    let e = skewed
        .put_object()
        .bucket("clocks")
        .key("from-the-future")
        .body(ByteStream::from_static(b"later"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 503, "{e:?}");
    let msg = format!("{e:?}");
    assert!(msg.contains("clock runs ahead of"), "{msg}");
    let (st, _, body) = admin_get(&format!("{}/cluster/locate/clocks/from-the-future", nodes[0].admin)).await;
    assert_eq!(st, 200, "{body}");
    let located: serde_json::Value = serde_json::from_str(&body).unwrap();
    for n in located["nodes"].as_array().unwrap() {
        assert_eq!(n["versions"].as_array().unwrap().len(), 0, "{located:#}");
    }

    // Writes through a healthy node carry a truthful Last-Modified (before the bound, node-1's
    // clock took node-3's stamps in and moved 200 s ahead).
    healthy
        .put_object()
        .bucket("clocks")
        .key("now")
        .body(ByteStream::from_static(b"now"))
        .send()
        .await
        .unwrap();
    let head = healthy.head_object().bucket("clocks").key("now").send().await.unwrap();
    let lm = head.last_modified().unwrap().secs();
    assert!(
        (lm - now_secs()).abs() <= 5,
        "Last-Modified {lm} is {} s from now",
        lm - now_secs()
    );
    // The skewed node still reads what the healthy ones wrote.
    let got = skewed.get_object().bucket("clocks").key("now").send().await.unwrap();
    assert_eq!(body_bytes(got).await, b"now");

    // Every healthy node names node-3 in /cluster/health, with its offset and a warning.
    for n in &nodes[..2] {
        let peer = reported_skewed(n, "node-3").await;
        let off = peer["offset_ms"].as_i64().unwrap();
        assert!((198_000..=202_000).contains(&off), "{peer}");
        let v = cluster_health(n).await;
        assert_eq!(v["clock"]["max_ahead_ms"], 5000);
        let warnings = v["warnings"].to_string();
        assert!(
            warnings.contains("node-3's clock is") && warnings.contains("ahead of"),
            "{warnings}"
        );
        // node-2 is fine.
        assert!(
            !v["clock"]["skewed_nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "node-2")
        );
    }
    // node-3 refused the write itself, so no future stamp reached a replica (the replicas'
    // own bound is the second line of defence, tested in the store's conformance tests).
    for n in &nodes[..2] {
        let v = cluster_health(n).await;
        assert_eq!(v["clock"]["stamps_refused"], 0);
        let (_, _, m) = admin_get(&format!("{}/metrics", n.admin)).await;
        assert!(m.contains("ironbucket_clock_stamps_refused_total"), "{m}");
        assert!(m.contains("ironbucket_peer_clock_offset_ms{node=\"node-3\"}"), "{m}");
    }

    // A fourth node an hour ahead is refused by every node it calls, never joins, and is
    // reported with its offset.
    let mut args = node_args("node-4", ports[3], &seeds, SECRET);
    args.extend(["--clock-offset-ms", "3600000"].map(String::from));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let late = Server::start_with(&a, &[]);
    let peer = reported_skewed(&nodes[0], "node-4").await;
    assert!(peer["offset_ms"].as_i64().unwrap() > 3_590_000, "{peer}");
    assert!(peer["refused_calls"].as_u64().unwrap() > 0, "{peer}");
    let (st, _, body) = raw("GET", &format!("{}/health/ready", late.admin), &[], vec![]).await;
    assert_eq!(st, 503, "{body}");
    let members = cluster_status(&nodes[0]).await.unwrap()["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 3);
}
