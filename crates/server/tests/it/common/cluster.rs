//! The multi-node test kit: N real `ironbucket` processes on 127.0.0.1 with free ports,
//! formed into one cluster, and polling helpers with deadlines (no fixed sleeps).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::time::{Duration, Instant};

pub const SECRET: &str = "cluster-secret-0123456789";

#[allow(unused_imports)] // each test uses some
pub use ironbucket_testkit::{free_ports, holds_for, poll_until, seeds_of};

pub fn node_args(name: &str, port: u16, seeds: &str, secret: &str) -> Vec<String> {
    [
        "--cluster-enabled",
        "true",
        "--cluster-name",
        "test-cluster",
        "--node-id",
        name,
        "--cluster-seeds",
        seeds,
        "--rpc-port",
        &port.to_string(),
        "--cluster-secret",
        secret,
        "--sync-interval-ms",
        "100",
        "--request-timeout-ms",
        "3000",
        // Stopped nodes stop at once (no load balancer to wait for).
        "--shutdown-drain",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn status_of<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> u16 {
    super::status(e)
}

pub async fn cluster_status(srv: &Server) -> Option<serde_json::Value> {
    let (st, _, body) = admin_get(&format!("{}/cluster/status", srv.admin)).await;
    (st == 200).then(|| serde_json::from_str(&body).unwrap())
}

/// Whether `srv` answers `/health/ready` with 200 (it can serve a write).
pub async fn is_ready(srv: &Server) -> bool {
    raw("GET", &format!("{}/health/ready", srv.admin), &[], vec![]).await.0 == 200
}

/// Waits until every node in `nodes` sees the same leader, cluster id and `members` voters, and
/// reports itself ready.
pub async fn converged(nodes: &[&Server], members: usize, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(cluster_status(n).await);
        }
        let ok = all.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                !s["cluster_id"].as_str().unwrap_or("").is_empty()
                    && s["leader"].is_string()
                    && s["members"].as_array().is_some_and(|m| {
                        m.iter().filter(|x| x["raft_role"] == "voter").count() == members
                            && m.iter().all(|x| x["state"] != "joining")
                    })
            })
        });
        if ok {
            let first = all[0].clone().unwrap();
            let agreed = all.iter().all(|s| {
                let s = s.as_ref().unwrap();
                s["leader"] == first["leader"] && s["cluster_id"] == first["cluster_id"]
            });
            let mut ready = agreed;
            for n in nodes.iter().take_while(|_| agreed) {
                ready = ready && is_ready(n).await;
            }
            if ready {
                return first;
            }
        }
        assert!(Instant::now() < deadline, "no agreement within {timeout:?}: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts node `i` (`node-{i+1}`) of a cluster on `ports` with `seeds`, with `extra` flags and
/// `envs` (fault points, say).
pub fn start_node(i: usize, ports: &[u16], seeds: &str, extra: &[&str], envs: &[(&str, &str)]) -> Server {
    let args = node_args(&format!("node-{}", i + 1), ports[i], seeds, SECRET);
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend_from_slice(extra);
    Server::start_with(&a, envs)
}

pub async fn cluster_of(n: usize) -> (Vec<Server>, String, Vec<u16>) {
    cluster_with(n, &[]).await
}

pub async fn cluster_with(n: usize, extra: &[&str]) -> (Vec<Server>, String, Vec<u16>) {
    let ports = free_ports(n);
    let seeds = seeds_of(&ports);
    let nodes: Vec<Server> = (0..n)
        .map(|i| {
            let args = node_args(&format!("node-{}", i + 1), ports[i], &seeds, SECRET);
            let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
            a.extend_from_slice(extra);
            Server::start_with(&a, &[])
        })
        .collect();
    converged(&nodes.iter().collect::<Vec<_>>(), n, Duration::from_secs(30)).await;
    (nodes, seeds, ports)
}

/// `POST /cluster/{path}` (a lock or barrier call) with the admin token; the answer, or the
/// status and body of a refusal.
pub async fn try_lock_call(srv: &Server, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
    let auth = format!("Bearer {SK}");
    let (st, _, text) = raw(
        "POST",
        &format!("{}/cluster/{path}", srv.admin),
        &[("authorization", auth.as_str()), ("content-type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    if st != 200 {
        return Err(format!("{st}: {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap())
}

/// [`try_lock_call`] that must succeed.
pub async fn lock_call(srv: &Server, path: &str, body: serde_json::Value) -> serde_json::Value {
    try_lock_call(srv, path, body).await.unwrap()
}

/// `GET /cluster/locks` with the admin token.
pub async fn lock_table(srv: &Server) -> serde_json::Value {
    let auth = format!("Bearer {SK}");
    let (st, _, text) = raw(
        "GET",
        &format!("{}/cluster/locks", srv.admin),
        &[("authorization", auth.as_str())],
        vec![],
    )
    .await;
    assert_eq!(st, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Polls `srv`'s `/health/ready` until it is 503 for a reason that contains `needle` (a node
/// refused by the cluster says why there); returns the answer.
pub async fn not_ready_because(srv: &Server, needle: &str) -> String {
    poll_until(
        &format!("not ready because {needle:?}"),
        Duration::from_secs(30),
        || async {
            let (st, _, body) = raw("GET", &format!("{}/health/ready", srv.admin), &[], vec![]).await;
            (st == 503 && body.contains(needle)).then_some(body)
        },
    )
    .await
}

/// `GET /cluster/locate/{bucket}/{key}` through `srv`: the replica set and what every node holds.
pub async fn located(srv: &Server, bucket: &str, key: &str) -> serde_json::Value {
    let (st, _, text) = admin_get(&format!("{}/cluster/locate/{bucket}/{key}", srv.admin)).await;
    assert_eq!(st, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Starts `name` again on its data directory `dir` (its RPC `port`, the cluster's `seeds`, and
/// the test's `extra` flags).
pub fn restart_node(dir: &std::path::Path, name: &str, port: u16, seeds: &str, extra: &[&str]) -> Server {
    let args = node_args(name, port, seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start_in(dir, &args, &[]).unwrap()
}

/// Starts `name` on a new, empty data directory (a node whose disk was replaced).
pub fn wiped_node(name: &str, port: u16, seeds: &str, extra: &[&str]) -> Server {
    let args = node_args(name, port, seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start_with(&args, &[])
}

/// A join token made through `member`'s admin API (for one join, an hour), once the cluster has
/// turned join tokens on (its leader does when every member speaks protocol 10).
pub async fn join_token(member: &Server) -> String {
    let url = format!("{}/cluster/join-tokens", member.admin);
    poll_until("a join token", Duration::from_secs(30), || async {
        let (st, _, body) = raw(
            "POST",
            &url,
            &[("authorization", &bearer()), ("content-type", "application/json")],
            b"{}".to_vec(),
        )
        .await;
        (st == 200).then(|| {
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string()
        })
    })
    .await
}

/// `--join-token <a fresh token from member>`.
pub async fn join_args(member: &Server) -> Vec<String> {
    vec!["--join-token".to_string(), join_token(member).await]
}

/// Makes `name` a voter through `member`'s admin API, once it has joined as a learner.
pub async fn promote(member: &Server, name: &str) {
    let url = format!("{}/cluster/nodes/{name}/promote", member.admin);
    poll_until(&format!("{name} promoted"), Duration::from_secs(60), || async {
        let (st, _, _) = raw("POST", &url, &[("authorization", &bearer())], vec![]).await;
        (st == 200).then_some(())
    })
    .await
}
