//! The control plane with real processes on 127.0.0.1: three nodes started at once form exactly
//! one cluster, the status endpoints and `ironbucket-cli cluster` agree, a killed leader is
//! replaced, a restarted node rejoins as itself, a node with the wrong secret is refused, and
//! bad cluster settings are refused at start with a message naming the setting. And the
//! replicated data path: objects written through one node are read, listed and deleted through
//! the others, at the consistency level asked, with nodes killed.

use crate::common::cluster::*;
use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn three_nodes_form_one_cluster_and_survive_the_leader() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    // Start all three at once.
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let args = node_args(&format!("node-{}", i + 1), ports[i], &seeds, SECRET);
            std::thread::spawn(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::start_with(&a, &[])
            })
        })
        .collect();
    let mut nodes: Vec<Server> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let started = Instant::now();
    let st = converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    println!("cluster formed {:?} after the processes started", started.elapsed());
    let cluster_id = st["cluster_id"].as_str().unwrap().to_string();
    assert_eq!(st["cluster_name"], "test-cluster");
    assert_eq!(st["replication"]["factor"], 3);
    let mut leaders = 0;
    for n in &nodes {
        let s = cluster_status(n).await.unwrap();
        if s["raft_state"] == "leader" {
            leaders += 1;
        }
        // Every member is recorded in the control state.
        let members = s["members"].as_array().unwrap().clone();
        assert_eq!(members.len(), 3);
    }
    assert_eq!(leaders, 1, "exactly one leader");
    // Health carries the cluster summary; the CLI prints the same.
    let (_, _, health) = raw("GET", &format!("{}/health", nodes[1].admin), &[], vec![]).await;
    assert!(health.contains(&cluster_id), "{health}");
    let bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    if !bin.exists() {
        cli(&nodes[0], &["health"]);
    }
    let out = std::process::Command::new(&bin)
        .args(["--admin-url", &nodes[2].admin, "--admin-token", SK, "cluster", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&cluster_id) && text.contains("node-1") && text.contains("voter"),
        "{text}"
    );
    let out = std::process::Command::new(&bin)
        .args([
            "--admin-url",
            &nodes[2].admin,
            "--admin-token",
            SK,
            "cluster",
            "nodes",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // Buckets go through Raft: created through one node, in force on all when the call returns.
    let clients: Vec<_> = nodes.iter().map(|n| n.client()).collect();
    clients[0].create_bucket().bucket("shared-bucket").send().await.unwrap();
    for c in &clients {
        c.head_bucket().bucket("shared-bucket").send().await.unwrap();
        assert_eq!(bucket_names(c).await, vec!["shared-bucket".to_string()]);
    }
    // Two clients create the same bucket through different nodes at once: exactly one wins.
    for round in 0..3 {
        let name = format!("race-{round}");
        let (a, b) = tokio::join!(
            clients[1].create_bucket().bucket(&name).send(),
            clients[2].create_bucket().bucket(&name).send()
        );
        let wins = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(wins, 1, "{a:?} {b:?}");
        let lost = match (a, b) {
            (Err(e), _) | (_, Err(e)) => e,
            _ => unreachable!(),
        };
        assert_eq!(code(&lost), "BucketAlreadyOwnedByYou");
    }
    // A policy set through node 1 is in force on node 3 as soon as the call returns.
    clients[2]
        .put_object()
        .bucket("shared-bucket")
        .key("page")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"hello"))
        .send()
        .await
        .unwrap();
    let url = format!("{}/shared-bucket/page", nodes[2].s3);
    assert_eq!(raw("GET", &url, &[], vec![]).await.0, 403);
    clients[0]
        .put_bucket_policy()
        .bucket("shared-bucket")
        .policy(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared-bucket/*"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw("GET", &url, &[], vec![]).await.0, 200, "policy in force on node 3");
    let v = clients[1]
        .get_bucket_versioning()
        .bucket("shared-bucket")
        .send()
        .await
        .unwrap();
    assert!(v.status().is_none());
    clients[2]
        .put_bucket_versioning()
        .bucket("shared-bucket")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for c in &clients {
        let v = c.get_bucket_versioning().bucket("shared-bucket").send().await.unwrap();
        assert_eq!(v.status(), Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled));
    }
    // Access keys are agreed through Raft too: made on node 1, granted on node 2, used on node 3.
    let (c, key, err) = cli(&nodes[0], &["key", "create", "--name", "app"]);
    assert_eq!(c, 0, "{err}");
    let (ak, sk) = (key["access_key"].as_str().unwrap(), key["secret_key"].as_str().unwrap());
    let app = client_for(&nodes[2].s3, ak, sk);
    // (The bucket policy already lets anyone read objects; listing is not granted.)
    let e = app.list_objects_v2().bucket("shared-bucket").send().await.unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let (c, _, err) = cli(
        &nodes[1],
        &["key", "allow", ak, "--bucket", "shared-bucket", "--permission", "read"],
    );
    assert_eq!(c, 0, "{err}");
    let listed = app.list_objects_v2().bucket("shared-bucket").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
    let (c, _, err) = cli(&nodes[2], &["key", "disable", ak]);
    assert_eq!(c, 0, "{err}");
    let e = client_for(&nodes[0].s3, ak, sk)
        .list_buckets()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidAccessKeyId");
    clients[1].delete_bucket().bucket("race-0").send().await.unwrap();
    for c in &clients {
        assert!(c.head_bucket().bucket("race-0").send().await.is_err());
    }

    // Kill the leader: the other two elect a new one.
    let old_leader = st["leader"].as_str().unwrap().to_string();
    let idx = nodes
        .iter()
        .position(|n| {
            n.stdout_lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&format!("node {old_leader}")))
        })
        .unwrap();
    let mut dead = nodes.remove(idx);
    let dead_dir = dead.take_tmp();
    dead.kill9();
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        let a = cluster_status(&nodes[0]).await.unwrap();
        let b = cluster_status(&nodes[1]).await.unwrap();
        if a["leader"].is_string() && a["leader"] != old_leader.as_str() && a["leader"] == b["leader"] {
            break a["leader"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no new leader: {a} {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "new leader {new_leader} elected {:?} after killing {old_leader}",
        t.elapsed()
    );
    // Bucket creation works again through a survivor (the SDK retries 503s on its own).
    let mut n = 0;
    loop {
        match nodes[0]
            .client()
            .create_bucket()
            .bucket(format!("after-failover-{n}"))
            .send()
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(status_of(&e), 503, "{e:?}");
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "no bucket creation after the failover"
                );
                n += 1;
            }
        }
    }
    println!("bucket creation works again {:?} after killing the leader", t.elapsed());
    nodes[1]
        .client()
        .head_bucket()
        .bucket(format!("after-failover-{n}"))
        .send()
        .await
        .unwrap();
    // Cluster-wide jobs: exactly one runner each, on a live node, whatever happened to the old one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cluster_status(&nodes[0]).await.unwrap();
        let jobs = s["job_leaders"].as_object().cloned().unwrap_or_default();
        let live: Vec<String> = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] != old_leader.as_str())
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect();
        if ["lifecycle", "rebalance"].iter().all(|j| {
            jobs.get(*j)
                .and_then(|h| h.as_str())
                .is_some_and(|h| live.iter().any(|l| l == h))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "job leaders not on live nodes: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The killed node restarts with its data directory and rejoins as itself.
    let dir = dead_dir.unwrap();
    let args = node_args(&old_leader, ports[idx], &seeds, SECRET);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let back = Server::start_in(dir.path(), &a, &[]).unwrap();
    nodes.push(back);
    let st = converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    assert_eq!(st["cluster_id"].as_str().unwrap(), cluster_id, "the same cluster");

    // A node with the wrong secret is refused: it never joins.
    let p4 = free_ports(1)[0];
    let args = node_args("intruder", p4, &seeds, "not-the-cluster-secret");
    let mut args: Vec<String> = args;
    args.extend(["--rpc-address".to_string(), format!("127.0.0.1:{p4}")]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let intruder = Server::start_with(&a, &[]);
    not_ready_because(&intruder, "not in a cluster yet").await;
    let s = cluster_status(&intruder).await.unwrap();
    assert_eq!(s["cluster_id"], "", "the intruder joined nothing: {s}");
    let s = cluster_status(&nodes[0]).await.unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), 3, "{s}");
    // The restarted node has the buckets created while it was down... and before.
    nodes[2]
        .client()
        .head_bucket()
        .bucket("shared-bucket")
        .send()
        .await
        .unwrap();

    // Two of three gone: the survivor is read-only for metadata, with a clear 503.
    let mut gone = nodes.remove(0);
    gone.kill9();
    let mut gone2 = nodes.remove(0);
    gone2.kill9();
    let lone = &nodes[0];
    let c = lone.client();
    c.head_bucket().bucket("shared-bucket").send().await.unwrap();
    let t = Instant::now();
    let e = c.create_bucket().bucket("needs-quorum").send().await.unwrap_err();
    assert_eq!((code(&e).as_str(), status_of(&e)), ("ServiceUnavailable", 503), "{e:?}");
    println!("metadata write refused after {:?} without a quorum", t.elapsed());
    drop(dir);
}

#[tokio::test]
async fn bad_cluster_settings_are_refused_at_start() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--cluster-enabled", "true", "--cluster-secret", SECRET],
            "CLUSTER_SEEDS",
        ),
        (
            vec![
                "--cluster-enabled",
                "true",
                "--cluster-secret",
                SECRET,
                "--cluster-seeds",
                "a:1,b:1",
                "--replication-factor",
                "3",
            ],
            "REPLICATION_FACTOR",
        ),
        (
            vec![
                "--cluster-enabled",
                "true",
                "--cluster-secret",
                SECRET,
                "--cluster-seeds",
                "a:1",
                "--replication-strategy",
                "Random",
            ],
            "REPLICATION_STRATEGY",
        ),
        (
            vec![
                "--cluster-enabled",
                "true",
                "--cluster-secret",
                SECRET,
                "--cluster-seeds",
                "a:1,b:1",
                "--cluster-nodes",
                "a,a",
            ],
            "CLUSTER_NODES",
        ),
        (
            vec!["--cluster-enabled", "true", "--cluster-seeds", "a:1"],
            "CLUSTER_SECRET",
        ),
        (
            vec![
                "--cluster-enabled",
                "true",
                "--cluster-secret",
                SECRET,
                "--cluster-seeds",
                "a:1",
                "--write-consistency",
                "MOST",
            ],
            "DEFAULT_WRITE_CONSISTENCY",
        ),
        (
            vec![
                "--cluster-enabled",
                "true",
                "--cluster-secret",
                SECRET,
                "--cluster-seeds",
                "a:1",
                "--enable-tls",
                "true",
            ],
            "ENABLE_TLS",
        ),
    ];
    for (args, setting) in cases {
        let dir = tempfile::tempdir().unwrap();
        let err = Server::start_in(dir.path(), &args, &[]).err().expect("refused");
        assert!(err.contains(setting), "{args:?}: {err}");
    }
}

/// Starts `n` nodes that form one cluster; returns them with the seed list and their ports.
#[tokio::test]
async fn join_reconfigure_remove_and_replace() {
    let (mut nodes, seeds, ports) = cluster_of(3).await;
    // Placement changes move data once every member speaks protocol 6 (checked every 5 s).
    poll_until("layout moves on", Duration::from_secs(30), || async {
        let auth = format!("Bearer {SK}");
        let (_, _, body) = raw(
            "GET",
            &format!("{}/cluster/rebalance/status", nodes[0].admin),
            &[("authorization", auth.as_str())],
            vec![],
        )
        .await;
        body.contains("\"moves_enabled\":true").then_some(())
    })
    .await;
    nodes[0]
        .client()
        .create_bucket()
        .bucket("before-join")
        .send()
        .await
        .unwrap();

    // Knowing the cluster secret is not enough to join: a newcomer needs a join token.
    let joiner_args = |name: &str, port: u16, token: Option<&str>| {
        let mut args = node_args(name, port, &seeds, SECRET);
        args.extend(["--rpc-address".to_string(), format!("127.0.0.1:{port}")]);
        args.extend(token.map(|t| format!("--join-token={t}")));
        args
    };
    let px = free_ports(1)[0];
    let a = joiner_args("node-x", px, None);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let tokenless = Server::start_with(&a, &[]);
    let why = not_ready_because(&tokenless, "join token").await;
    assert!(why.contains("cluster join-token create"), "{why}");
    drop(tokenless);

    // An operator makes a token for one join (CLI); node-4 joins with it as a learner.
    let (c, made, err) = cli(&nodes[1], &["cluster", "join-token", "create", "--ttl-secs", "600"]);
    assert_eq!(c, 0, "{err}");
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ibj_") && made["uses_left"] == 1, "{made}");
    let p4 = free_ports(1)[0];
    let a = joiner_args("node-4", p4, Some(&token));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    nodes.push(Server::start_with(&a, &[]));
    poll_until("node-4 a learner", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        s["members"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "node-4" && m["raft_role"] == "learner" && m["state"] == "active")
            .then_some(())
    })
    .await;
    // The token is spent: a second node presenting it is refused, and the list says who used it.
    let p5 = free_ports(1)[0];
    let a = joiner_args("node-5", p5, Some(&token));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let late = Server::start_with(&a, &[]);
    not_ready_because(&late, "as many nodes as it may").await;
    drop(late);
    let (c, listed, err) = cli(&nodes[2], &["cluster", "join-token", "list"]);
    assert_eq!(c, 0, "{err}");
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == made["id"])
        .unwrap()
        .clone();
    assert_eq!(
        (entry["uses_left"].as_u64(), entry["used_by"][0].as_str()),
        (Some(0), Some("node-4")),
        "{entry}"
    );
    assert!(!listed.to_string().contains(&token), "the token itself is never listed");
    // Promotion to voter is an explicit admin call.
    let (c, _, err) = cli(&nodes[0], &["cluster", "promote", "node-4"]);
    assert_eq!(c, 0, "{err}");
    let st = converged(&nodes.iter().collect::<Vec<_>>(), 4, Duration::from_secs(30)).await;
    assert_eq!(st["members"].as_array().unwrap().len(), 4);
    nodes[3]
        .client()
        .head_bucket()
        .bucket("before-join")
        .send()
        .await
        .unwrap();

    // Hot reload: replication settings and a member's zone and weight, applied everywhere.
    let (c, out, err) = cli(
        &nodes[1],
        &["cluster", "set-replication", "--factor", "2", "--write", "one"],
    );
    assert_eq!(c, 0, "{err}");
    assert_eq!(out["replication"]["factor"], 2);
    let (c, _, err) = cli(&nodes[1], &["cluster", "set-replication", "--factor", "9"]);
    assert_ne!(c, 0);
    assert!(err.contains("replication factor 9"), "{err}");
    let (c, _, err) = cli(
        &nodes[2],
        &["cluster", "set-node", "node-2", "--zone", "zone-b", "--weight", "200"],
    );
    assert_eq!(c, 0, "{err}");
    for n in &nodes {
        let s = cluster_status(n).await.unwrap();
        assert_eq!(s["replication"]["factor"], 2, "{s}");
        assert_eq!(s["replication"]["write_consistency"], "ONE");
        let m = s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "node-2")
            .unwrap()
            .clone();
        assert_eq!(
            (m["zone"].as_str(), m["weight"].as_u64()),
            (Some("zone-b"), Some(200)),
            "{s}"
        );
    }
    let (c, _, err) = cli(&nodes[0], &["cluster", "set-node", "node-9", "--zone", "x"]);
    assert_ne!(c, 0);
    assert!(err.contains("no member named node-9"), "{err}");

    // A live node is not removed as dead: it is decommissioned (its data moves off first).
    poll_until("node-4 seen alive", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        s["members"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "node-4" && m["liveness"] == "alive")
            .then_some(())
    })
    .await;
    let (c, _, err) = cli(&nodes[0], &["cluster", "remove", "node-4"]);
    assert_ne!(c, 0);
    assert!(err.contains("not down"), "{err}");
    // Decommission then remove node-4.
    let (c, _, err) = cli(&nodes[0], &["cluster", "decommission", "node-4"]);
    assert_eq!(c, 0, "{err}");
    let s = cluster_status(&nodes[2]).await.unwrap();
    let m = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "node-4")
        .unwrap()
        .clone();
    assert_eq!(m["state"], "draining");
    // Once its data has moved it leaves the Raft group by itself.
    poll_until(
        "node-4 left after its decommission",
        Duration::from_secs(90),
        || async {
            let s = cluster_status(&nodes[0]).await?;
            (!s["members"].as_array()?.iter().any(|m| m["name"] == "node-4")).then_some(())
        },
    )
    .await;
    let mut n4 = nodes.pop().unwrap();
    n4.stop();
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;

    // node-3 loses its disk and comes back empty under the same id: refused until replaced.
    let mut n3 = nodes.pop().unwrap();
    n3.kill9();
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let wiped = Server::start_with(&a, &[]);
    not_ready_because(&wiped, "already a member of this cluster").await;
    let s = cluster_status(&wiped).await.unwrap();
    assert_eq!(s["cluster_id"], "", "a wiped node must not rejoin by itself: {s}");
    let (c, _, err) = cli(&nodes[0], &["cluster", "replace", "node-3"]);
    assert_eq!(c, 0, "{err}");
    nodes.push(wiped);
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    nodes[2]
        .client()
        .head_bucket()
        .bucket("before-join")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn leases_fencing_tokens_and_barriers() {
    let (nodes, _, _) = cluster_of(3).await;
    // Without the admin token: refused.
    let (st, _, _) = raw("GET", &format!("{}/cluster/locks", nodes[0].admin), &[], vec![]).await;
    assert_eq!(st, 401);
    let a = lock_call(
        &nodes[0],
        "locks/job",
        serde_json::json!({"op": "acquire", "holder": "worker-a", "ttl_ms": 1500}),
    )
    .await;
    assert_eq!(a["lock"], "granted", "{a}");
    let token_a = a["token"].as_u64().unwrap();
    let b = lock_call(
        &nodes[1],
        "locks/job",
        serde_json::json!({"op": "acquire", "holder": "worker-b", "ttl_ms": 5000, "wait": true}),
    )
    .await;
    assert_eq!(b["lock"], "queued", "{b}");
    let busy = lock_call(
        &nodes[2],
        "locks/job",
        serde_json::json!({"op": "acquire", "holder": "worker-c", "ttl_ms": 5000}),
    )
    .await;
    assert_eq!(busy["lock"], "busy");
    // worker-a dies (never renews): after its TTL the lease passes to worker-b, with a larger
    // fencing token, as every node sees.
    let deadline = Instant::now() + Duration::from_secs(15);
    let holder = loop {
        let auth = format!("Bearer {SK}");
        let (_, _, text) = raw(
            "GET",
            &format!("{}/cluster/locks", nodes[2].admin),
            &[("authorization", auth.as_str())],
            vec![],
        )
        .await;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let h = v["locks"]["job"]["holders"][0].clone();
        if h["holder"] == "worker-b" {
            break h;
        }
        assert!(Instant::now() < deadline, "lease never passed on: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(holder["token"].as_u64().unwrap() > token_a, "{holder}");
    let late = lock_call(
        &nodes[0],
        "locks/job",
        serde_json::json!({"op": "renew", "holder": "worker-a", "token": token_a}),
    )
    .await;
    assert_eq!(late["lock"], "not_holder", "a dead holder cannot renew");
    // A barrier of three, one participant through each node.
    for (i, n) in nodes.iter().enumerate() {
        let r = lock_call(
            n,
            "barriers/start",
            serde_json::json!({"participant": format!("p{i}"), "count": 3}),
        )
        .await;
        let want = if i == 2 { "barrier_released" } else { "barrier_waiting" };
        assert_eq!(r["lock"], want, "{r}");
    }
}

#[tokio::test]
async fn a_lagging_node_catches_up_from_a_snapshot() {
    let (mut nodes, seeds, ports) = cluster_with(3, &["--raft-snapshot-every", "10"]).await;
    let mut lagging = nodes.pop().unwrap();
    let behind = cluster_status(&lagging).await.unwrap()["last_applied"]
        .as_u64()
        .unwrap();
    let dir = lagging.take_tmp().unwrap();
    lagging.kill9();
    let c = nodes[0].client();
    for i in 0..40 {
        c.create_bucket()
            .bucket(format!("while-away-{i:02}"))
            .send()
            .await
            .unwrap();
    }
    // The leader has purged the entries the lagging node lacks: only a snapshot can help it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut purged = 0;
        for n in &nodes {
            purged = purged.max(cluster_status(n).await.unwrap()["purged_index"].as_u64().unwrap_or(0));
        }
        if purged > behind {
            break;
        }
        assert!(Instant::now() < deadline, "no log purged beyond {behind}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
    a.extend_from_slice(&["--raft-snapshot-every", "10"]);
    nodes.push(Server::start_in(dir.path(), &a, &[]).unwrap());
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = nodes[2].client().list_buckets().send().await.unwrap().buckets().len();
        if n == 40 {
            break;
        }
        assert!(Instant::now() < deadline, "the lagging node has {n} of 40 buckets");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = cluster_status(&nodes[2]).await.unwrap();
    assert!(
        s["snapshot_index"].as_u64().unwrap_or(0) > behind,
        "installed a snapshot: {s}"
    );
    drop(dir);
}

#[tokio::test]
async fn two_nodes_read_only_then_force_recover() {
    let (mut nodes, seeds, ports) = cluster_of(2).await;
    let c = nodes[0].client();
    c.create_bucket().bucket("pair-1").send().await.unwrap();
    // Force-recover is refused while the pair is healthy.
    let (code_, _, err) = cli(&nodes[0], &["cluster", "force-recover", "--node", "node-1"]);
    assert_ne!(code_, 0);
    assert!(err.contains("still has a quorum"), "{err}");

    let mut partner = nodes.pop().unwrap();
    let partner_dir = partner.take_tmp().unwrap();
    partner.kill9();
    // The survivor is read-only for metadata, with a clear 503; reads go on.
    c.head_bucket().bucket("pair-1").send().await.unwrap();
    let e = c.create_bucket().bucket("pair-2").send().await.unwrap_err();
    assert_eq!(status_of(&e), 503);
    let (code_, _, err) = cli(&nodes[0], &["cluster", "force-recover", "--node", "node-2"]);
    assert_ne!(code_, 0, "must be run against the node that stays");
    assert!(err.contains("this is node node-1"), "{err}");
    let (code_, out, err) = cli(&nodes[0], &["cluster", "force-recover", "--node", "node-1"]);
    assert_eq!(code_, 0, "{err}");
    assert!(err.contains("WARNING"), "{err}");
    assert_eq!(out["members"].as_array().unwrap().len(), 1, "{out}");
    converged(&[&nodes[0]], 1, Duration::from_secs(20)).await;
    c.create_bucket().bucket("pair-2").send().await.unwrap();
    c.head_bucket().bucket("pair-1").send().await.unwrap();

    // The old partner returns with its stale view: fenced, it cannot change anything.
    let args = node_args("node-2", ports[1], &seeds, SECRET);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let back = Server::start_in(partner_dir.path(), &a, &[]).unwrap();
    holds_for("the fenced node never leads", Duration::from_secs(3), || async {
        cluster_status(&back).await.is_some_and(|s| s["raft_state"] != "leader")
    })
    .await;
    let e = back.client().create_bucket().bucket("pair-3").send().await.unwrap_err();
    assert_eq!(status_of(&e), 503, "{e:?}");
    let s = cluster_status(&nodes[0]).await.unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), 1, "{s}");
    assert!(nodes[0].client().head_bucket().bucket("pair-3").send().await.is_err());
    drop(partner_dir);
}

#[tokio::test]
async fn mutual_tls_between_nodes() {
    let certs = tempfile::tempdir().unwrap();
    let gen_certs = |dir: &std::path::Path, nodes: &str| {
        let out = std::process::Command::new(bin())
            .args(["cert", "generate", "--out"])
            .arg(dir)
            .args(["--nodes", nodes, "--cluster-name", "test-cluster"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    gen_certs(&certs.path().join("ok"), "node-1,node-2,node-3");
    gen_certs(&certs.path().join("other"), "node-4");
    let tls_args = |set: &str, node: &str| -> Vec<String> {
        let d = certs.path().join(set);
        vec![
            "--enable-tls".into(),
            "true".into(),
            "--tls-cert".into(),
            d.join(format!("{node}.pem")).display().to_string(),
            "--tls-key".into(),
            d.join(format!("{node}.key")).display().to_string(),
            "--tls-ca".into(),
            d.join("ca.pem").display().to_string(),
        ]
    };
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let name = format!("node-{}", i + 1);
            let mut args = node_args(&name, ports[i], &seeds, SECRET);
            args.extend(tls_args("ok", &name));
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start_with(&a, &[])
        })
        .collect();
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    nodes[0]
        .client()
        .create_bucket()
        .bucket("over-tls")
        .send()
        .await
        .unwrap();
    nodes[2].client().head_bucket().bucket("over-tls").send().await.unwrap();

    // The right secret but a certificate from another CA: it cannot even connect.
    let p4 = free_ports(1)[0];
    let mut args = node_args("node-4", p4, &seeds, SECRET);
    args.extend(tls_args("other", "node-4"));
    args.extend(["--rpc-address".to_string(), format!("127.0.0.1:{p4}")]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let stranger = Server::start_with(&a, &[]);
    not_ready_because(&stranger, "not in a cluster yet").await;
    assert_eq!(cluster_status(&stranger).await.unwrap()["cluster_id"], "");
    assert_eq!(
        cluster_status(&nodes[0]).await.unwrap()["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Missing certificate files are refused at start.
    let mut args = node_args("node-5", free_ports(1)[0], &seeds, SECRET);
    args.extend(["--enable-tls".to_string(), "true".to_string()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let err = Server::start_in(dir.path(), &a, &[]).err().expect("refused");
    assert!(err.contains("TLS_CERT_FILE"), "{err}");
}

/// The liveness `/cluster/nodes` reports for `name`, as seen by `srv`.
async fn liveness_of(srv: &Server, name: &str) -> String {
    let (st, _, body) = admin_get(&format!("{}/cluster/nodes", srv.admin)).await;
    assert_eq!(st, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["liveness"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Waits until every node's failure detector has seen every node alive (a node it never saw
/// is "unknown", and a kill then goes unnoticed by it).
async fn all_alive(nodes: &[Server]) {
    let names: Vec<String> = (1..=nodes.len()).map(|i| format!("node-{i}")).collect();
    for n in nodes {
        for name in &names {
            wait_liveness(n, name, "alive", Duration::from_secs(20)).await;
        }
    }
}

async fn wait_liveness(srv: &Server, name: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = liveness_of(srv, name).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name} is {got:?}, not {want:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn gossip_sees_a_killed_node_down_and_back() {
    let (mut nodes, seeds, ports) = cluster_of(3).await;
    all_alive(&nodes).await;
    // Load and capacity travel with the gossip.
    let (_, _, body) = admin_get(&format!("{}/cluster/nodes", nodes[0].admin)).await;
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n3 = view.as_array().unwrap().iter().find(|m| m["name"] == "node-3").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n3 = n3.clone();
    while n3["load"]["capacity_bytes"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no load report for node-3: {n3}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, _, body) = admin_get(&format!("{}/cluster/nodes", nodes[0].admin)).await;
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        n3 = view
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "node-3")
            .unwrap()
            .clone();
    }

    let mut victim = nodes.pop().unwrap();
    let dir = victim.take_tmp().unwrap();
    victim.kill9();
    let took = wait_liveness(&nodes[0], "node-3", "down", Duration::from_secs(20)).await;
    wait_liveness(&nodes[1], "node-3", "down", Duration::from_secs(20)).await;
    println!("node-1 saw the killed node-3 down {took:?} after kill -9 (100 ms heartbeats)");

    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    nodes.push(Server::start_in(dir.path(), &a, &[]).unwrap());
    let took = wait_liveness(&nodes[0], "node-3", "alive", Duration::from_secs(20)).await;
    println!("node-1 saw the restarted node-3 alive {took:?} after it started");
    assert_eq!(liveness_of(&nodes[2], "node-1").await, "alive");
    drop(dir);
}

#[tokio::test]
async fn locate_names_the_replicas_and_what_each_node_holds() {
    let (mut nodes, _, _) = cluster_with(
        3,
        &["--replication-factor", "2", "--replication-strategy", "ConsistentHash"],
    )
    .await;
    let c = nodes[0].client();
    c.create_bucket().bucket("located").send().await.unwrap();
    let body = b"where am I".to_vec();
    c.put_object()
        .bucket("located")
        .key("docs/a b.txt")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let etag = md5_hex(&body);

    // Asked through another node's admin port, with the key percent-encoded.
    let url = format!("{}/cluster/locate/located/docs/a%20b.txt", nodes[1].admin);
    let (st, _, text) = admin_get(&url).await;
    assert_eq!(st, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["key"], "docs/a b.txt");
    assert_eq!(v["strategy"], "ConsistentHash");
    assert_eq!(v["replication_factor"], 2);
    let replicas: Vec<String> = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(replicas.len(), 2);
    assert_ne!(replicas[0], replicas[1]);
    let listed = v["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{v}");
    // Replicas first, in ring order, each flagged.
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(listed[i]["node"], r.as_str());
        assert_eq!(listed[i]["replica"], true);
    }
    assert_eq!(listed[2]["replica"], false);
    // RF 2: exactly the two replicas hold the object (the write waited for both at QUORUM),
    // whichever node took the write; the third holds nothing.
    for n in listed {
        assert!(n.get("error").is_none(), "{n}");
        let versions = n["versions"].as_array().unwrap();
        if n["replica"] == true {
            assert_eq!(versions.len(), 1, "{n}");
            assert_eq!(versions[0]["etag"], etag.as_str());
            assert_eq!(versions[0]["size"], body.len());
        } else {
            assert!(versions.is_empty(), "{n}");
        }
    }
    // The same placement whichever node answers; the CLI shows it too.
    let (code, v3, err) = cli(&nodes[2], &["locate", "located/docs/a b.txt", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v3["replicas"], v["replicas"]);

    // Bad requests and a missing bucket are clear errors.
    let (st, _, text) = admin_get(&format!("{}/cluster/locate/located", nodes[0].admin)).await;
    assert_eq!(st, 400, "{text}");
    let (st, _, text) = admin_get(&format!("{}/cluster/locate/nope/k", nodes[0].admin)).await;
    assert_eq!(st, 404, "{text}");
    let (code, _, err) = cli(&nodes[0], &["locate", "no-key-here"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("<bucket>/<key>"), "{err}");

    // A node that cannot be asked is named with the reason.
    let mut gone = nodes.pop().unwrap();
    gone.kill9();
    let (st, _, text) = admin_get(&url.replace(&nodes[1].admin, &nodes[0].admin)).await;
    assert_eq!(st, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dead = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-3")
        .unwrap();
    assert!(dead["error"].as_str().is_some_and(|e| !e.is_empty()), "{dead}");
}

/// Adds `x-ironbucket-consistency` to a request.
macro_rules! at_level {
    ($req:expr, $level:expr) => {
        $req.customize().mutate_request(move |r| {
            r.headers_mut().insert("x-ironbucket-consistency", $level);
        })
    };
}

async fn keys_via(c: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(7)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_string()));
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    keys
}

/// Polls `locate` through `srv` until `done` holds for what it shows (15 s at most).
async fn until_located(srv: &Server, bucket: &str, key: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = located(srv, bucket, key).await;
        if done(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of `bucket/key` (version `version`, or the current one) read at `level`.
async fn body_at(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    level: &'static str,
) -> Vec<u8> {
    let req = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_string));
    body_bytes(at_level!(req, level).send().await.unwrap()).await
}

async fn put_bytes(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

/// Uploads `whole` as parts of `part` bytes, part i through `clients[i % len]`.
async fn upload_parts(
    clients: &[&aws_sdk_s3::Client],
    bucket: &str,
    key: &str,
    id: &str,
    whole: &[u8],
    part: usize,
) -> Vec<aws_sdk_s3::types::CompletedPart> {
    let mut done = Vec::new();
    for (i, chunk) in whole.chunks(part).enumerate() {
        let n = i as i32 + 1;
        let out = clients[i % clients.len()]
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(chunk.to_vec().into())
            .send()
            .await
            .unwrap();
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    done
}

/// Completes an upload; returns the object's ETag (unquoted).
async fn complete(
    c: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    id: &str,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
) -> String {
    c.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// The first version's ETag on every node (empty when a node holds none).
fn newest_etags(v: &serde_json::Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["versions"][0]["etag"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Nodes holding at least one version of the key.
fn holders(v: &serde_json::Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !n["versions"].as_array().unwrap().is_empty())
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn three_nodes_rf3_any_node_serves_any_object_and_quorum_survives_a_kill() {
    let (mut nodes, _, _) = cluster_with(3, &["--replication-factor", "3"]).await;
    let (a, b, c) = (nodes[0].client(), nodes[1].client(), nodes[2].client());
    a.create_bucket().bucket("rep").send().await.unwrap();
    let mut sums = std::collections::BTreeMap::new();
    for i in 0..20 {
        let body = data(1000 + i * 7919, i as u64);
        let key = format!("k/{i:02}");
        sums.insert(key.clone(), md5_hex(&body));
        // Written through each node in turn.
        let via = [&a, &b, &c][i % 3];
        via.put_object()
            .bucket("rep")
            .key(&key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    // Read through every node: the same bytes.
    for (key, sum) in &sums {
        for via in [&a, &b, &c] {
            let got = body_bytes(via.get_object().bucket("rep").key(key).send().await.unwrap()).await;
            assert_eq!(&md5_hex(&got), sum, "{key}");
        }
    }
    // Every node holds every key (RF 3); listing through each node is the same, page by page.
    let v = located(&nodes[0], "rep", "k/07").await;
    assert_eq!(holders(&v).len(), 3, "{v}");
    let want: Vec<String> = sums.keys().cloned().collect();
    for via in [&a, &b, &c] {
        assert_eq!(keys_via(via, "rep").await, want);
    }
    // A delete through one node hides the key through the others.
    c.delete_object().bucket("rep").key("k/00").send().await.unwrap();
    let e = a.get_object().bucket("rep").key("k/00").send().await.unwrap_err();
    assert_eq!(status_of(&e), 404);
    assert_eq!(keys_via(&b, "rep").await.len(), 19);

    // A bad level is refused clearly.
    let e = at_level!(a.head_object().bucket("rep").key("k/01"), "SOME")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 400);

    // One node killed: QUORUM reads and writes go on, ALL writes are refused with a 503 naming
    // the level, ONE writes succeed. (Once the failure detector has it down, the refusal comes
    // at once and nothing is written anywhere.)
    all_alive(&nodes).await;
    let mut gone = nodes.pop().unwrap();
    gone.kill9();
    wait_liveness(&nodes[0], "node-3", "down", Duration::from_secs(15)).await;
    let body = data(4096, 99);
    a.put_object()
        .bucket("rep")
        .key("after-kill")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let got = body_bytes(b.get_object().bucket("rep").key("after-kill").send().await.unwrap()).await;
    assert_eq!(got, body);
    for (key, sum) in sums.iter().skip(1) {
        let got = body_bytes(b.get_object().bucket("rep").key(key).send().await.unwrap()).await;
        assert_eq!(&md5_hex(&got), sum);
    }
    let e = at_level!(
        a.put_object().bucket("rep").key("all").body(b"x".to_vec().into()),
        "ALL"
    )
    .send()
    .await
    .unwrap_err();
    assert_eq!(status_of(&e), 503, "{e:?}");
    let raw_err = format!("{:?}", e);
    assert!(raw_err.contains("ALL"), "{raw_err}");
    at_level!(
        a.put_object().bucket("rep").key("one").body(b"1".to_vec().into()),
        "ONE"
    )
    .send()
    .await
    .unwrap();
    // Every key still has two live replicas: listings through either survivor agree.
    let listed = keys_via(&a, "rep").await;
    assert_eq!(listed.len(), 21, "{listed:?}");
    assert!(listed.contains(&"one".to_string()) && !listed.contains(&"all".to_string()));
    assert_eq!(keys_via(&b, "rep").await, listed);
}

#[tokio::test]
async fn a_node_that_missed_writes_is_repaired_when_read() {
    let (mut nodes, seeds, ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("heal").send().await.unwrap();
    put_bytes(&a, "heal", "k", b"old").await;
    put_bytes(&a, "heal", "gone-away", b"x").await;
    a.create_bucket().bucket("vheal").send().await.unwrap();
    enable_versioning(&a, "vheal").await;
    let mut ids = Vec::new();
    for body in [&b"first"[..], &b"second"[..]] {
        let out = a
            .put_object()
            .bucket("vheal")
            .key("doc")
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap();
        ids.push(out.version_id().unwrap().to_string());
    }
    let mut away = nodes.pop().unwrap();
    let dir = away.take_tmp().unwrap();
    away.kill9();
    // The newest version deleted by id while node-3 is away.
    a.delete_object()
        .bucket("vheal")
        .key("doc")
        .version_id(&ids[1])
        .send()
        .await
        .unwrap();
    a.delete_object().bucket("heal").key("gone-away").send().await.unwrap();
    // Written (and overwritten, and one deleted) while node-3 was away, at QUORUM.
    put_bytes(&a, "heal", "k", b"new").await;
    put_bytes(&a, "heal", "fresh", b"fresh").await;
    put_bytes(&a, "heal", "gone", b"x").await;
    let big = data(6 * 1024 * 1024, 5);
    let up = a
        .create_multipart_upload()
        .bucket("heal")
        .key("parts")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let done = upload_parts(&[&a], "heal", "parts", id, &big, 5 * 1024 * 1024).await;
    let etag = complete(&a, "heal", "parts", id, done).await;
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--replication-factor", "3"]);
    let back = Server::start_in(dir.path(), &args, &[]).unwrap();
    nodes.push(back);
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    a.delete_object().bucket("heal").key("gone").send().await.unwrap();
    let c = nodes[2].client();
    // Version listings through node-3, which still holds a key deleted meanwhile (tombstones
    // elsewhere) and a version deleted by id, show neither, also one entry per page.
    for max in [1, 1000] {
        let mut seen = Vec::new();
        let (mut km, mut vm) = (None::<String>, None::<String>);
        loop {
            let out = c
                .list_object_versions()
                .bucket("heal")
                .max_keys(max)
                .set_key_marker(km.clone())
                .set_version_id_marker(vm.clone())
                .send()
                .await
                .unwrap();
            seen.extend(out.versions().iter().map(|v| v.key().unwrap().to_string()));
            if !out.is_truncated().unwrap_or(false) {
                break;
            }
            km = out.next_key_marker().map(str::to_string);
            vm = out.next_version_id_marker().map(str::to_string);
        }
        assert_eq!(seen, vec!["fresh", "k", "parts"], "max {max}");
    }
    let listed = c.list_object_versions().bucket("vheal").send().await.unwrap();
    let ids_listed: Vec<&str> = listed.versions().iter().map(|v| v.version_id().unwrap()).collect();
    assert_eq!(ids_listed, vec![ids[0].as_str()], "{listed:?}");
    assert_eq!(listed.versions()[0].is_latest(), Some(true));
    // A conditional write through the node that missed "fresh" is decided once, against the
    // newest version: refused, and nothing is stored anywhere.
    let e = c
        .put_object()
        .bucket("heal")
        .key("fresh")
        .if_none_match("*")
        .body(b"conditional".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 412, "{e:?}");
    let v = located(&nodes[0], "heal", "fresh").await;
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["versions"].as_array().unwrap().len() <= 1
                && n["versions"][0]["etag"] != md5_hex(b"conditional").as_str()),
        "{v}"
    );
    // Read through the node that was away: the newest version wins whatever it holds itself.
    for (key, want) in [("k", &b"new"[..]), ("fresh", &b"fresh"[..])] {
        assert_eq!(body_at(&c, "heal", key, None, "ALL").await, want, "{key}");
    }
    // ... and the read repaired it: node-3 now holds the newest version itself.
    let want = md5_hex(b"new");
    until_located(&nodes[0], "heal", "k", "not repaired", |v| {
        newest_etags(v).iter().all(|e| *e == want)
    })
    .await;
    let e = c.get_object().bucket("heal").key("gone").send().await.unwrap_err();
    assert_eq!(status_of(&e), 404);
    // Listed through node-3, which still holds the deleted version, the key shows the version
    // that is current now.
    let listed = c.list_objects_v2().bucket("vheal").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);
    assert_eq!(
        listed.contents()[0].e_tag().unwrap().trim_matches('"'),
        md5_hex(b"first"),
        "{listed:?}"
    );
    // The version deleted by id stays deleted when read through node-3, which still held it,
    // and the read deletes it there too (a version tombstone, not a resurrection).
    let e = at_level!(c.get_object().bucket("vheal").key("doc").version_id(&ids[1]), "ALL")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 404, "{e:?}");
    assert_eq!(body_at(&c, "vheal", "doc", None, "ALL").await, b"first");
    until_located(&nodes[0], "vheal", "doc", "version not removed everywhere", |v| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["versions"].as_array().unwrap().len() == 1)
    })
    .await;
    // A multipart object is repaired with its multipart ETag.
    let got = body_at(&c, "heal", "parts", None, "ALL").await;
    assert_eq!(md5_hex(&got), md5_hex(&big));
    until_located(&nodes[0], "heal", "parts", "not repaired", |v| {
        newest_etags(v).iter().all(|e| *e == etag)
    })
    .await;
    let again = body_at(&c, "heal", "parts", None, "ONE").await;
    assert_eq!(md5_hex(&again), md5_hex(&big));
}

async fn tags_via(c: &aws_sdk_s3::Client, bucket: &str, key: &str, level: &'static str) -> Vec<(String, String)> {
    let out = at_level!(c.get_object_tagging().bucket(bucket).key(key), level)
        .send()
        .await
        .unwrap();
    let mut t: Vec<(String, String)> = out
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    t.sort();
    t
}

fn tagging(pairs: &[(&str, &str)]) -> aws_sdk_s3::types::Tagging {
    let mut b = aws_sdk_s3::types::Tagging::builder();
    for (k, v) in pairs {
        b = b.tag_set(aws_sdk_s3::types::Tag::builder().key(*k).value(*v).build().unwrap());
    }
    b.build().unwrap()
}

/// Tags, legal hold, retention and ACL changed while a replica was away: reads through that
/// replica see the changes, it is repaired, and it never decides alone against them (a delete or
/// a weaker retention the others refuse does not happen there either).
#[tokio::test]
async fn a_node_that_missed_metadata_changes_is_repaired_and_never_decides_alone() {
    use aws_sdk_s3::types::{
        ObjectCannedAcl, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockRetention, ObjectLockRetentionMode,
    };
    // Anti-entropy and hints off: this test is about read repair (with either on, node-3 would
    // take in the changes before any read: it is ready about 5 s after its restart, in which
    // the others replay their hints to it).
    let off = [
        "--replication-factor",
        "3",
        "--anti-entropy",
        "false",
        "--hint-max-per-node",
        "0",
    ];
    let (mut nodes, seeds, ports) = cluster_with(3, &off).await;
    let a = nodes[0].client();
    a.create_bucket()
        .bucket("vault")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let vid = a
        .put_object()
        .bucket("vault")
        .key("doc")
        .tagging("stage=draft")
        .body(b"evidence".to_vec().into())
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();
    // With the newest version deleted by id, requests without a version id are about the
    // version that is current again.
    for tag in ["gen=1", "gen=2"] {
        a.put_object()
            .bucket("vault")
            .key("two")
            .tagging(tag)
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let newest = a.head_object().bucket("vault").key("two").send().await.unwrap();
    a.delete_object()
        .bucket("vault")
        .key("two")
        .version_id(newest.version_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags_via(&a, "vault", "two", "QUORUM").await,
        vec![("gen".into(), "1".into())]
    );
    let mut away = nodes.pop().unwrap();
    let dir = away.take_tmp().unwrap();
    away.kill9();
    // While node-3 is away: new tags, a legal hold, a day of governance retention, an ACL.
    a.put_object_tagging()
        .bucket("vault")
        .key("doc")
        .tagging(tagging(&[("stage", "final"), ("owner", "legal")]))
        .send()
        .await
        .unwrap();
    let on = ObjectLockLegalHold::builder()
        .status(ObjectLockLegalHoldStatus::On)
        .build();
    a.put_object_legal_hold()
        .bucket("vault")
        .key("doc")
        .version_id(&vid)
        .legal_hold(on)
        .send()
        .await
        .unwrap();
    let day = ObjectLockRetention::builder()
        .mode(ObjectLockRetentionMode::Governance)
        .retain_until_date(in_secs(86_400))
        .build();
    a.put_object_retention()
        .bucket("vault")
        .key("doc")
        .version_id(&vid)
        .retention(day)
        .send()
        .await
        .unwrap();
    a.put_object_acl()
        .bucket("vault")
        .key("doc")
        .acl(ObjectCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(&off);
    nodes.push(Server::start_in(dir.path(), &args, &[]).unwrap());
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    let c = nodes[2].client();

    // Deleting the version through node-3, which has no legal hold on it, is refused, and the
    // version stays readable through node-3 at ALL (no version tombstone was left there).
    let e = c
        .delete_object()
        .bucket("vault")
        .key("doc")
        .version_id(&vid)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 403, "{e:?}");
    // Also when the client asks for ONE: object lock is decided on a quorum of replicas.
    let e = at_level!(c.delete_object().bucket("vault").key("doc").version_id(&vid), "ONE")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 403, "{e:?}");
    // A shorter retention (without bypass) is refused through node-3 too.
    let hour = ObjectLockRetention::builder()
        .mode(ObjectLockRetentionMode::Governance)
        .retain_until_date(in_secs(3_600))
        .build();
    let e = c
        .put_object_retention()
        .bucket("vault")
        .key("doc")
        .version_id(&vid)
        .retention(hour)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 403, "{e:?}");
    assert_eq!(body_at(&c, "vault", "doc", Some(&vid), "ALL").await, b"evidence");

    // Reads through node-3 see what changed while it was away.
    assert_eq!(
        tags_via(&c, "vault", "doc", "ALL").await,
        vec![("owner".into(), "legal".into()), ("stage".into(), "final".into())]
    );
    let h = at_level!(c.head_object().bucket("vault").key("doc"), "ALL")
        .send()
        .await
        .unwrap();
    assert_eq!(h.object_lock_legal_hold_status(), Some(&ObjectLockLegalHoldStatus::On));
    let until = h.object_lock_retain_until_date().unwrap().secs();
    assert!(until > in_secs(80_000).secs(), "retention {until}");
    let acl = at_level!(c.get_object_acl().bucket("vault").key("doc"), "ALL")
        .send()
        .await
        .unwrap();
    assert!(
        acl.grants().iter().any(|g| g
            .grantee()
            .and_then(|g| g.uri())
            .is_some_and(|u| u.ends_with("/AllUsers"))),
        "{acl:?}"
    );

    // Those reads repaired node-3's own copy (node-3 counts the metadata it merged into stale
    // replicas): with the other two gone, node-3 alone (ONE) answers the same.
    poll_until("node-3's metadata read repair", Duration::from_secs(10), || async {
        let (_, _, m) = admin_get(&format!("{}/metrics", nodes[2].admin)).await;
        m.lines()
            .any(|l| {
                l.starts_with("ironbucket_read_repairs_total{kind=\"metadata\"}")
                    && l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) >= 1
            })
            .then_some(())
    })
    .await;
    all_alive(&nodes).await;
    for n in nodes.iter_mut().take(2) {
        n.kill9();
    }
    wait_liveness(&nodes[2], "node-1", "down", Duration::from_secs(15)).await;
    wait_liveness(&nodes[2], "node-2", "down", Duration::from_secs(15)).await;
    assert_eq!(
        tags_via(&c, "vault", "doc", "ONE").await,
        vec![("owner".into(), "legal".into()), ("stage".into(), "final".into())]
    );
    let hold = at_level!(
        c.get_object_legal_hold().bucket("vault").key("doc").version_id(&vid),
        "ONE"
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        hold.legal_hold().and_then(|h| h.status()),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    let r = at_level!(c.get_object_retention().bucket("vault").key("doc"), "ONE")
        .send()
        .await
        .unwrap();
    assert!(r.retention().unwrap().retain_until_date().unwrap().secs() > in_secs(80_000).secs());
}

#[tokio::test]
async fn three_nodes_rf2_each_object_on_exactly_two_nodes_and_multipart_across_nodes() {
    let (nodes, _, _) = cluster_with(
        3,
        &["--replication-factor", "2", "--replication-strategy", "ConsistentHash"],
    )
    .await;
    let clients: Vec<_> = nodes.iter().map(|n| n.client()).collect();
    clients[0].create_bucket().bucket("two").send().await.unwrap();
    for i in 0..12 {
        let key = format!("obj-{i}");
        clients[i % 3]
            .put_object()
            .bucket("two")
            .key(&key)
            .body(data(300, i as u64).into())
            .send()
            .await
            .unwrap();
        let v = located(&nodes[(i + 1) % 3], "two", &key).await;
        let mut h = holders(&v);
        h.sort();
        let mut r: Vec<String> = v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        r.sort();
        assert_eq!(h, r, "{v}");
    }
    let want: Vec<String> = keys_via(&clients[0], "two").await;
    assert_eq!(want.len(), 12);
    for c in &clients[1..] {
        assert_eq!(keys_via(c, "two").await, want);
    }

    // Multipart: create through node 1, each part through a different node, complete through
    // node 3; read back through node 2.
    // 100 MiB in ten parts.
    let part = 10 * 1024 * 1024;
    let parts = 10;
    let whole = data(part * parts, 7);
    let up = clients[0]
        .create_multipart_upload()
        .bucket("two")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let listed = clients[1].list_multipart_uploads().bucket("two").send().await.unwrap();
    assert_eq!(listed.uploads().len(), 1);
    let via: Vec<&aws_sdk_s3::Client> = clients.iter().collect();
    let done = upload_parts(&via, "two", "big", &id, &whole, part).await;
    let lp = clients[2]
        .list_parts()
        .bucket("two")
        .key("big")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(lp.parts().len(), parts);
    complete(&clients[2], "two", "big", &id, done).await;
    for c in &clients {
        let got = body_bytes(c.get_object().bucket("two").key("big").send().await.unwrap()).await;
        assert_eq!(md5_hex(&got), md5_hex(&whole));
    }
    let v = located(&nodes[0], "two", "big").await;
    assert_eq!(holders(&v).len(), 2, "{v}");
    let listed = clients[1].list_multipart_uploads().bucket("two").send().await.unwrap();
    assert!(listed.uploads().is_empty());

    // An aborted upload is gone from every node.
    let up = clients[1]
        .create_multipart_upload()
        .bucket("two")
        .key("dropped")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    clients[2]
        .abort_multipart_upload()
        .bucket("two")
        .key("dropped")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    for c in &clients {
        let l = c.list_multipart_uploads().bucket("two").send().await.unwrap();
        assert!(l.uploads().is_empty());
    }

    // Versioned bucket: versions and delete markers agree through every node.
    clients[0].create_bucket().bucket("hist").send().await.unwrap();
    enable_versioning(&clients[0], "hist").await;
    for (i, c) in clients.iter().enumerate() {
        c.put_object()
            .bucket("hist")
            .key("doc")
            .body(format!("v{i}").into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    clients[1]
        .delete_object()
        .bucket("hist")
        .key("doc")
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    for c in &clients {
        let l = c.list_object_versions().bucket("hist").send().await.unwrap();
        assert_eq!(l.versions().len(), 3);
        assert_eq!(l.delete_markers().len(), 1);
        assert_eq!(l.delete_markers()[0].is_latest(), Some(true));
        let ids: Vec<String> = l
            .versions()
            .iter()
            .map(|v| v.version_id().unwrap().to_string())
            .collect();
        seen.push(ids);
        let e = c.get_object().bucket("hist").key("doc").send().await.unwrap_err();
        assert_eq!(status_of(&e), 404);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    let oldest = seen[0][2].clone();
    let got = body_bytes(
        clients[2]
            .get_object()
            .bucket("hist")
            .key("doc")
            .version_id(&oldest)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, b"v0");
}

#[tokio::test]
async fn two_nodes_rf2_write_all_read_one_and_survivor_reads() {
    let (mut nodes, _, _) = cluster_with(2, &["--replication-factor", "2"]).await;
    let (a, b) = (nodes[0].client(), nodes[1].client());
    a.create_bucket().bucket("pair").send().await.unwrap();
    let body = data(10_000, 3);
    at_level!(a.put_object().bucket("pair").key("x").body(body.clone().into()), "ALL")
        .send()
        .await
        .unwrap();
    let got = body_bytes(
        at_level!(b.get_object().bucket("pair").key("x"), "ONE")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, body);
    let mut gone = nodes.pop().unwrap();
    gone.kill9();
    // The survivor still serves reads at ONE; writes at the default QUORUM (2 of 2) are refused.
    let got = body_bytes(
        at_level!(a.get_object().bucket("pair").key("x"), "ONE")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, body);
    let e = a
        .put_object()
        .bucket("pair")
        .key("y")
        .body(b"nope".to_vec().into())
        .send()
        .await
        .unwrap_err();
    assert_eq!(status_of(&e), 503, "{e:?}");
    let text = format!("{e:?}");
    assert!(text.contains("QUORUM"), "{text}");
}

/// Ready means ready: a node reports `/health/ready` only once it can serve a write, so a
/// write sent the moment it turns ready succeeds (on a fresh cluster `/health` is green well
/// before that).
#[tokio::test]
async fn a_node_reports_ready_only_when_it_can_serve_a_write() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let args = node_args(&format!("node-{}", i + 1), ports[i], &seeds, SECRET);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start_with(&a, &[])
        })
        .collect();
    let mut made_bucket = false;
    for (i, n) in nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (st, _, body) = raw("GET", &format!("{}/health/ready", n.admin), &[], vec![]).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if st == 200 {
                assert_eq!(v["ready"], true);
                break;
            }
            assert_eq!(st, 503);
            assert!(!v["reasons"].as_array().unwrap().is_empty(), "{v}");
            assert!(Instant::now() < deadline, "node-{} never became ready: {v}", i + 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // No SDK retries: the first attempt must succeed.
        let c = aws_sdk_s3::Client::from_conf(
            n.client()
                .config()
                .to_builder()
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
                .build(),
        );
        if !made_bucket {
            c.create_bucket().bucket("ready").send().await.unwrap();
            made_bucket = true;
        }
        c.put_object()
            .bucket("ready")
            .key(format!("first-write-via-{i}"))
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"ok"))
            .send()
            .await
            .unwrap();
    }
}
