//! Mixed protocol versions with real processes: a node speaking a newer node protocol than the
//! cluster is refused cleanly (its calls get a clear error, it never joins, every node reports
//! it with a warning and a metric), while a node speaking an older but supported version joins
//! and serves, and features that need every member's protocol (leader-renewed leases) stay off.

use crate::common::cluster::*;
use crate::common::*;
use std::time::{Duration, Instant};

const CURRENT: u32 = ironbucket_rpc::PROTOCOL_VERSION;

async fn peer_entry(srv: &Server, node: &str) -> Option<serde_json::Value> {
    let (st, _, body) = admin_get(&format!("{}/cluster/health", srv.admin)).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["clock"]["protocol_version"], CURRENT);
    assert_eq!(v["clock"]["min_protocol_version"], 1);
    v["clock"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == node)
        .cloned()
        .map(|mut p| {
            p["warnings"] = v["warnings"].clone();
            p
        })
}

fn node(name: &str, port: u16, seeds: &str, version: Option<&str>) -> Server {
    let mut args = node_args(name, port, seeds, SECRET);
    // A joiner is not among the seeds: it states the address the others reach it at.
    args.extend(["--rpc-address".to_string(), format!("127.0.0.1:{port}")]);
    if let Some(v) = version {
        args.extend(["--protocol-version".to_string(), v.to_string()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&a, &[])
}

#[tokio::test]
async fn a_newer_protocol_is_refused_cleanly_and_an_older_supported_one_joins() {
    let ports = free_ports(5);
    let seeds = seeds_of(&ports[..3]);
    // A rolling upgrade in progress: node-3 still runs a release from before leader-renewed
    // leases (protocol 1-3). (Once every member speaks 4 the cluster turns those leases on and
    // refuses joiners below 4 from then on: see tests/leases.rs.)
    let previous = "1-3".to_string();
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let v = (i == 2).then_some(previous.as_str());
            node(&format!("node-{}", i + 1), ports[i], &seeds, v)
        })
        .collect();
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;

    // A node from a future release that no longer speaks this cluster's versions: every call it
    // makes is refused, and it stays out.
    let newer = node("node-4", ports[3], &seeds, Some(&(CURRENT + 1).to_string()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry = loop {
        if let Some(p) = peer_entry(&nodes[0], "node-4").await
            && p["refused_protocol_calls"].as_u64().unwrap_or(0) > 0
        {
            break p;
        }
        assert!(Instant::now() < deadline, "node-4's calls were never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["protocol_version"], CURRENT + 1, "{entry}");
    let warnings = entry["warnings"].to_string();
    assert!(
        warnings.contains("node-4") && warnings.contains("newer than this node's"),
        "{warnings}"
    );
    let (_, _, m) = admin_get(&format!("{}/metrics", nodes[0].admin)).await;
    assert!(
        m.contains("ironbucket_rpc_refused_protocol_total{node=\"node-4\"}"),
        "{m}"
    );
    let (st, _, body) = raw("GET", &format!("{}/health/ready", newer.admin), &[], vec![]).await;
    assert_eq!(st, 503, "{body}");
    let members = cluster_status(&nodes[0]).await.unwrap()["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 3, "a node of an unsupported version never joins");

    // A node that speaks only the oldest supported version (like one that states no version at
    // all): the others talk to it in that version; it joins and serves like any other.
    let older = node("node-5", ports[4], &seeds, Some("1"));
    let all = [&nodes[0], &nodes[1], &nodes[2], &older];
    converged(&all, 4, Duration::from_secs(60)).await;
    let entry = peer_entry(&nodes[0], "node-5").await.unwrap();
    assert_eq!(entry["protocol_version"], 1, "{entry}");
    assert_eq!(entry["refused_protocol_calls"], 0, "{entry}");
    let c = older.client();
    c.create_bucket().bucket("mixed-versions").send().await.unwrap();
    c.put_object()
        .bucket("mixed-versions")
        .key("k")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"v1 node"))
        .send()
        .await
        .unwrap();
    let got = nodes[1]
        .client()
        .get_object()
        .bucket("mixed-versions")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, b"v1 node");
    // Not every member speaks protocol 4: leases stay renewed through the log, as the older
    // nodes expect.
    let st = cluster_status(&nodes[0]).await.unwrap();
    assert_eq!(st["leader_leases"], false, "{st}");
    let auth = format!("Bearer {SK}");
    let (code, _, text) = raw(
        "POST",
        &format!("{}/cluster/locks/mixed", older.admin),
        &[("authorization", auth.as_str()), ("content-type", "application/json")],
        br#"{"op": "acquire", "holder": "h", "ttl_ms": 5000}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = lock_call(
        &nodes[0],
        "locks/mixed",
        serde_json::json!({"op": "renew", "holder": "h", "token": v["token"]}),
    )
    .await;
    assert_eq!(r["lock"], "renewed", "{r}");
    let lease = lock_table(&nodes[2]).await["locks"]["mixed"]["holders"][0].clone();
    assert!(lease.get("leader_renewed").is_none(), "{lease}");
    // A node of the newest release only (no older version) shares a version with the leader
    // but not with node-3 and node-5: every member is asked, and it stays out.
    let port = free_ports(1)[0];
    let only_newest = node("node-6", port, &seeds, Some(&CURRENT.to_string()));
    let why = poll_until("node-6's refusal", Duration::from_secs(30), || async {
        let (st, _, body) = raw("GET", &format!("{}/health/ready", only_newest.admin), &[], vec![]).await;
        (st == 503 && body.contains("cannot talk to it")).then_some(body)
    })
    .await;
    assert!(why.contains("node-3") || why.contains("node-5"), "{why}");
    let members = cluster_status(&nodes[0]).await.unwrap()["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 4, "{why}");
    drop(newer);
}
