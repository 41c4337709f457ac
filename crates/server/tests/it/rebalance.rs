//! A cluster that changes shape while a client works: layout versions with the old and new
//! replica sets in force together, data moved to its new owners, old copies dropped after the
//! new owners hold them. Real processes on 127.0.0.1; a client writes and reads throughout and
//! counts failed and wrong answers (the target is zero of each).

use crate::common::cluster::*;
use crate::common::moves::*;
use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_under_load_and_every_object_stays_readable() {
    let (mut nodes, seeds, _ports) = cluster_with(3, &MOVER_ONLY).await;
    moves_enabled(&nodes[0]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("grow").send().await.unwrap();
    const OBJECTS: usize = 3_000;
    let began = Instant::now();
    preload(&a, "grow", OBJECTS).await;
    println!("wrote {OBJECTS} x 4 KiB in {:.1} s", began.elapsed().as_secs_f64());
    let before = layout_version(&rebalance_status(&nodes[0]).await);
    // The plan says what the join will do before it happens: about half the keys (RF/(N+1))
    // change hands, one new copy each, about 1,500 objects to copy.
    let (code, plan, err) = cli(&nodes[0], &["cluster", "layout", "plan", "--add", "node-4", "--json"]);
    assert_eq!(code, 0, "{err}");
    let changing = plan["keys_changing"].as_f64().unwrap();
    assert!((0.4..0.6).contains(&changing), "{plan}");
    let to_copy = plan["objects_to_copy"].as_u64().unwrap();
    println!(
        "layout plan for node-4: {:.1}% of keys change, about {to_copy} objects to copy",
        changing * 100.0
    );
    let load = Load::start("grow", nodes.iter().map(Server::client).collect(), OBJECTS, 4096);

    // node-4 joins while the client works.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p4 = free_ports(1)[0];
    let joined = Instant::now();
    let n4 = joiner(&nodes[0], "node-4", p4, &seeds, &MOVER_ONLY).await;
    nodes.push(n4);
    converged(&nodes.iter().collect::<Vec<_>>(), 4, Duration::from_secs(30)).await;
    load.add_client(nodes[3].client());
    // The CLI follows the move with a progress bar until it is done.
    let (code, out) = cli_with_deadline(
        &nodes[1],
        &["cluster", "rebalance", "--watch"],
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("layout version"), "{out}");
    let status = rebalanced(&nodes[0], before, Duration::from_secs(180)).await;
    let took = joined.elapsed();
    let (ops, failed, wrong, written) = load.finish().await;
    let moved = status["objects_moved"].as_u64().unwrap();
    let bytes = status["bytes_moved"].as_u64().unwrap();
    println!(
        "node-4 joined; rebalance done {:.1} s later: {moved} objects, {:.1} MB moved ({:.2} MB/s over the whole change); client: {ops} requests, {failed} failed, {wrong} wrong",
        took.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / took.as_secs_f64()
    );
    assert_eq!((failed, wrong), (0, 0), "the client saw failures during the move");
    let (code, shown, err) = cli(&nodes[2], &["cluster", "layout", "show", "--json"]);
    assert_eq!(code, 0, "{err}");
    let shares: Vec<f64> = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["share"].as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), 4, "{shown}");
    assert!(shares.iter().all(|s| (0.35..0.65).contains(s)), "{shown}");
    assert!(moved > 0, "nothing moved: {status}");
    let n4 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-4")
        .unwrap()
        .clone();
    assert!(n4["objects_moved"].as_u64().unwrap() > 0, "{n4}");

    // Every object, preloaded or written during the move, reads at ONE through every node.
    let mut keys: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| (format!("o/{i:05}"), data(4096, i as u64)))
        .collect();
    for k in &written {
        let i: u64 = k.trim_start_matches("load/").parse().unwrap();
        keys.push((k.clone(), data(2048, 1_000_000 + i)));
    }
    let bad = read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "grow", &keys).await;
    assert_eq!(bad, 0, "reads at ONE failed after the move");
    // Ownership matches the layout and the extra copies are gone.
    copies_match_the_layout(&nodes[0], "grow", (0..OBJECTS).step_by(10).map(|i| format!("o/{i:05}"))).await;
    copies_match_the_layout(&nodes[0], "grow", written.iter().take(100).cloned()).await;
    // Listing still shows everything once.
    let mut listed = 0;
    let mut token = None;
    loop {
        let page = nodes[3]
            .client()
            .list_objects_v2()
            .bucket("grow")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        listed += page.contents().len();
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed, keys.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_weight_drain_decommission_and_removal_of_a_dead_node_keep_every_object() {
    let (mut nodes, seeds, _ports) = cluster_with(4, &EXTRA).await;
    moves_enabled(&nodes[0]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("shrink").send().await.unwrap();
    const OBJECTS: usize = 600;
    preload(&a, "shrink", OBJECTS).await;
    let keys: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| (format!("o/{i:05}"), data(4096, i as u64)))
        .collect();

    // A gateway joins (NODE_ROLE=gateway): it stores nothing and serves every request.
    let p5 = free_ports(1)[0];
    let mut extra = EXTRA.to_vec();
    extra.extend(["--node-role", "gateway", "--node-weight", "300", "--node-zone", "z9"]);
    let mut gateway = joiner(&nodes[0], "node-5", p5, &seeds, &extra).await;
    let mut five: Vec<&Server> = nodes.iter().collect();
    five.push(&gateway);
    converged(&five, 5, Duration::from_secs(30)).await;
    let member = poll_until("node-5 recorded as a gateway", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        let m = s["members"].as_array()?.iter().find(|m| m["name"] == "node-5")?.clone();
        (m["role"] == "gateway").then_some(m)
    })
    .await;
    assert_eq!(
        (member["weight"].as_u64(), member["zone"].as_str()),
        (Some(300), Some("z9")),
        "{member}"
    );
    let v = layout_version(&rebalance_status(&nodes[0]).await);
    rebalanced(&nodes[0], v - 1, Duration::from_secs(60)).await;
    assert_eq!(read_all_at_one(&[&gateway], "shrink", &keys).await, 0);
    for i in (0..OBJECTS).step_by(25) {
        let (held, set) = holders(&nodes[0], "shrink", &format!("o/{i:05}")).await;
        assert!(!held.contains(&"node-5".to_string()) && !set.contains(&"node-5".to_string()));
    }
    gateway.stop();
    poll_until("node-5 seen down", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        let down = s["members"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "node-5" && m["liveness"] == "down");
        down.then_some(())
    })
    .await;
    let (st, _, body) = admin_json(&nodes[0], "DELETE", "/cluster/nodes/node-5").await;
    assert_eq!(st, 200, "{body}");
    poll_until("node-5 left", Duration::from_secs(60), || async {
        let s = cluster_status(&nodes[0]).await?;
        (!s["members"].as_array()?.iter().any(|m| m["name"] == "node-5")).then_some(())
    })
    .await;

    // A weight change moves data like any layout change.
    let v = layout_version(&rebalance_status(&nodes[0]).await);
    let (code, out) = cli_with_deadline(
        &nodes[0],
        &["cluster", "set-node", "node-1", "--weight", "300"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    rebalanced(&nodes[0], v, Duration::from_secs(120)).await;
    let four: Vec<&Server> = nodes.iter().collect();
    assert_eq!(read_all_at_one(&four, "shrink", &keys).await, 0);
    copies_match_the_layout(
        &nodes[0],
        "shrink",
        (0..OBJECTS).step_by(5).map(|i| format!("o/{i:05}")),
    )
    .await;
    let mut share: std::collections::BTreeMap<String, usize> = Default::default();
    for i in (0..OBJECTS).step_by(3) {
        for n in holders(&nodes[0], "shrink", &format!("o/{i:05}")).await.1 {
            *share.entry(n).or_default() += 1;
        }
    }
    println!("replicas per node after node-1's weight went to 300: {share:?}");
    assert!(
        share["node-1"] > share["node-2"] && share["node-1"] > share["node-3"],
        "{share:?}"
    );

    // Decommission node-4 under load: its data moves off, then it leaves the cluster.
    let v = layout_version(&rebalance_status(&nodes[0]).await);
    let load = Load::start("shrink", nodes[..3].iter().map(Server::client).collect(), OBJECTS, 4096);
    let (code, out) = cli_with_deadline(
        &nodes[0],
        &["cluster", "decommission", "node-4"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    rebalanced(&nodes[0], v, Duration::from_secs(120)).await;
    poll_until("node-4 left", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        let gone = !s["members"].as_array()?.iter().any(|m| m["name"] == "node-4");
        gone.then_some(())
    })
    .await;
    let (ops, failed, wrong, _) = load.finish().await;
    println!("decommission of node-4: client {ops} requests, {failed} failed, {wrong} wrong");
    assert_eq!((failed, wrong), (0, 0));
    let mut n4 = nodes.pop().unwrap();
    n4.stop();
    let three: Vec<&Server> = nodes.iter().collect();
    assert_eq!(read_all_at_one(&three, "shrink", &keys).await, 0);
    copies_match_the_layout(
        &nodes[0],
        "shrink",
        (0..OBJECTS).step_by(5).map(|i| format!("o/{i:05}")),
    )
    .await;

    // A drain that would leave fewer nodes than RF... is fine with 3 nodes at RF 2; with two
    // left it is refused.
    let (st, _, body) = admin_json(&nodes[0], "POST", "/cluster/nodes/node-9/drain").await;
    assert_eq!(st, 404, "{body}");
    // node-3 dies and is removed as dead: its objects are re-created from the other replicas.
    let v = layout_version(&rebalance_status(&nodes[0]).await);
    let mut n3 = nodes.pop().unwrap();
    n3.kill9();
    poll_until("node-3 seen down", Duration::from_secs(30), || async {
        let s = cluster_status(&nodes[0]).await?;
        let down = s["members"]
            .as_array()?
            .iter()
            .any(|m| m["name"] == "node-3" && m["liveness"] == "down");
        down.then_some(())
    })
    .await;
    let (st, _, body) = admin_json(&nodes[0], "DELETE", "/cluster/nodes/node-3").await;
    assert_eq!(st, 200, "{body}");
    let status = rebalanced(&nodes[0], v, Duration::from_secs(120)).await;
    println!("removal of dead node-3: {status}");
    let two: Vec<&Server> = nodes.iter().collect();
    assert_eq!(read_all_at_one(&two, "shrink", &keys).await, 0);
    copies_match_the_layout(
        &nodes[0],
        "shrink",
        (0..OBJECTS).step_by(5).map(|i| format!("o/{i:05}")),
    )
    .await;
    // Two nodes at RF 2: taking one more out is refused, naming why.
    let (st, _, body) = admin_json(&nodes[0], "POST", "/cluster/nodes/node-2/drain").await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("fewer than the replication factor"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_resumes_after_the_receiving_node_restarts() {
    let (mut nodes, seeds, _ports) = cluster_with(3, &MOVER_ONLY).await;
    moves_enabled(&nodes[0]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("resume").send().await.unwrap();
    const OBJECTS: usize = 400;
    preload_sized(&a, "resume", OBJECTS, 65_536).await;
    let before = layout_version(&rebalance_status(&nodes[0]).await);
    // node-4 takes data in from each of the three old nodes in turn; its fault point stops the
    // move after the first page (that source done, its cursor saved), so the kill below always
    // lands in the middle of the move, whatever the machine's speed.
    let p4 = free_ports(1)[0];
    let mut args = node_args("node-4", p4, &seeds, SECRET);
    args.extend(["--rpc-address".to_string(), format!("127.0.0.1:{p4}")]);
    args.extend(MOVER_ONLY.iter().map(|s| s.to_string()));
    args.extend(join_args(&nodes[0]).await);
    let a4: Vec<&str> = args.iter().map(String::as_str).collect();
    nodes.push(Server::start_with(&a4, &[("FAILPOINTS", "rebalance-page=return")]));
    promote(&nodes[0], "node-4").await;
    converged(&nodes.iter().collect::<Vec<_>>(), 4, Duration::from_secs(30)).await;
    let moved_before = poll_until("node-4 stopped after a page", Duration::from_secs(60), || async {
        let s = rebalance_status(&nodes[0]).await;
        let n4 = s["nodes"].as_array()?.iter().find(|n| n["node"] == "node-4")?.clone();
        let moved = n4["objects_moved"].as_u64()?;
        (moved > 0 && n4["failures"].as_u64()? > 0).then_some(moved)
    })
    .await;
    let mut n4 = nodes.pop().unwrap();
    let dir = n4.take_tmp().unwrap();
    n4.kill9();
    let saved = std::fs::read_to_string(dir.path().join("layout-moves.json")).unwrap();
    assert!(saved.contains("cursors"), "{saved}");
    // Restarted on its data directory, without the fault point: the move resumes from its cursor.
    nodes.push(restart_node(
        dir.path(),
        "node-4",
        p4,
        &seeds,
        &[
            "--rpc-address",
            &format!("127.0.0.1:{p4}"),
            "--replication-factor",
            "2",
            "--anti-entropy",
            "false",
        ],
    ));
    rebalanced(&nodes[0], before, Duration::from_secs(180)).await;
    let after = rebalance_status(&nodes[3]).await;
    let n4 = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-4")
        .unwrap()
        .clone();
    let moved_after = n4["objects_moved"].as_u64().unwrap();
    println!("node-4 moved {moved_before} objects before it was killed, {moved_after} after its restart");
    // It went on where it stopped: what it took in before stays and its cursor skips it, so
    // it moved only the rest after its restart.
    let mut gained = 0u64;
    for i in 0..OBJECTS {
        let (held, _) = holders(&nodes[0], "resume", &format!("o/{i:05}")).await;
        gained += u64::from(held.iter().any(|n| n == "node-4"));
    }
    assert!(
        moved_after > 0 && moved_after < gained && moved_before + moved_after >= gained,
        "node-4 holds {gained} keys: {moved_before} moved before the restart, {moved_after} after; its status: {n4:#}; saved at the kill: {saved}"
    );
    let keys: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| (format!("o/{i:05}"), data(65_536, i as u64)))
        .collect();
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "resume", &keys).await,
        0
    );
    copies_match_the_layout(&nodes[0], "resume", (0..OBJECTS).map(|i| format!("o/{i:05}"))).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_data_directory_becomes_a_three_node_cluster() {
    // A single node (no cluster) with a versioned bucket holding 1,000 objects.
    let mut single = Server::start();
    let c = single.client();
    c.create_bucket().bucket("legacy").send().await.unwrap();
    enable_versioning(&c, "legacy").await;
    const OBJECTS: usize = 1_000;
    preload(&c, "legacy", OBJECTS).await;
    // Version ids written by the single node must survive being copied to other nodes.
    let vid = c
        .head_object()
        .bucket("legacy")
        .key("o/00007")
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_string();
    // An access key of the single node's, allowed to read the bucket: it must work in the
    // cluster too, on every node.
    let (code_, key, err) = cli(&single, &["key", "create", "--name", "reader"]);
    assert_eq!(code_, 0, "{err}");
    let (ak, sk) = (
        key["access_key"].as_str().unwrap().to_string(),
        key["secret_key"].as_str().unwrap().to_string(),
    );
    let allow = ["key", "allow", &ak, "--bucket", "legacy", "--permission", "read"];
    assert_eq!(cli(&single, &allow).0, 0);
    let dir = single.take_tmp().unwrap();
    assert_eq!(single.stop(), Some(0));

    // The same data directory starts as the first node of a cluster (its own address as the
    // only seed) with --from-standalone: its bucket joins the cluster with its settings.
    let ports = free_ports(3);
    let seeds1 = seeds_of(&ports[..1]);
    // One node holds one copy; the factor goes to 2 once there are three nodes.
    let single_copy = ["--replication-factor", "1", "--replication-strategy", "ConsistentHash"];
    let mut args = node_args("node-1", ports[0], &seeds1, SECRET);
    args.extend(single_copy.iter().map(|s| s.to_string()));
    args.extend(["--from-standalone".to_string(), "true".to_string()]);
    let a1: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut nodes = vec![Server::start_in(dir.path(), &a1, &[]).unwrap()];
    converged(&[&nodes[0]], 1, Duration::from_secs(30)).await;
    let keys: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| (format!("o/{i:05}"), data(4096, i as u64)))
        .collect();
    poll_until(
        "the standalone bucket in the cluster",
        Duration::from_secs(30),
        || async {
            nodes[0]
                .client()
                .get_object()
                .bucket("legacy")
                .key("o/00000")
                .send()
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(read_all_at_one(&[&nodes[0]], "legacy", &keys).await, 0);
    let v = nodes[0]
        .client()
        .get_bucket_versioning()
        .bucket("legacy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        v.status().map(|s| s.as_str()),
        Some("Enabled"),
        "the bucket's settings came along"
    );
    moves_enabled(&nodes[0]).await;

    // Two more nodes join; the data is rebalanced onto them.
    let before = layout_version(&rebalance_status(&nodes[0]).await);
    let seeds = seeds_of(&ports);
    for (i, p) in ports.iter().enumerate().skip(1) {
        let n = joiner(&nodes[0], &format!("node-{}", i + 1), *p, &seeds, &single_copy).await;
        nodes.push(n);
        converged(&nodes.iter().collect::<Vec<_>>(), i + 1, Duration::from_secs(30)).await;
    }
    let joined = rebalanced(&nodes[0], before, Duration::from_secs(60)).await;
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "legacy", &keys).await,
        0
    );
    copies_match_the_layout(
        &nodes[0],
        "legacy",
        (0..OBJECTS).step_by(4).map(|i| format!("o/{i:05}")),
    )
    .await;
    // Two copies of everything: a factor change moves data like any layout change.
    let v = layout_version(&joined);
    let (exit, out) = cli_with_deadline(
        &nodes[1],
        &["cluster", "set-replication", "--factor", "2"],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(exit, 0, "{out}");
    let status = rebalanced(&nodes[0], v, Duration::from_secs(180)).await;
    for n in &nodes {
        let got = n
            .client()
            .get_object()
            .bucket("legacy")
            .key("o/00007")
            .version_id(&vid)
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-ironbucket-consistency", "ONE");
            })
            .send()
            .await
            .unwrap();
        assert_eq!(got.version_id(), Some(vid.as_str()));
        assert_eq!(body_bytes(got).await, data(4096, 7));
    }
    for n in &nodes {
        let reader = client_for(&n.s3, &ak, &sk);
        let got = reader.get_object().bucket("legacy").key("o/00009").send().await;
        assert_eq!(
            body_bytes(got.expect("the standalone access key reads through every node")).await,
            data(4096, 9)
        );
        let denied = reader
            .put_object()
            .bucket("legacy")
            .key("nope")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&denied), "AccessDenied", "its permission came along: read only");
    }
    println!(
        "standalone -> 3 nodes (1 copy): {} objects moved by the movers; -> 2 copies: {} in all (anti-entropy, on here, copies part of it first)",
        joined["objects_moved"], status["objects_moved"]
    );
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "legacy", &keys).await,
        0
    );
    copies_match_the_layout(
        &nodes[0],
        "legacy",
        (0..OBJECTS).step_by(4).map(|i| format!("o/{i:05}")),
    )
    .await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_cancelled_halfway_goes_back_to_the_old_layout() {
    let (mut nodes, seeds, _ports) = cluster_with(3, &MOVER_ONLY).await;
    moves_enabled(&nodes[0]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("undo").send().await.unwrap();
    const OBJECTS: usize = 300;
    preload_sized(&a, "undo", OBJECTS, 65_536).await;
    let keys: Vec<(String, Vec<u8>)> = (0..OBJECTS)
        .map(|i| (format!("o/{i:05}"), data(65_536, i as u64)))
        .collect();
    // node-4 joins and takes data in slowly (2 MB/s); the move is cancelled halfway.
    let p4 = free_ports(1)[0];
    let mut extra = MOVER_ONLY.to_vec();
    extra.extend(["--repair-rate-mbps", "2"]);
    let n4 = joiner(&nodes[0], "node-4", p4, &seeds, &extra).await;
    nodes.push(n4);
    converged(&nodes.iter().collect::<Vec<_>>(), 4, Duration::from_secs(30)).await;
    poll_until("node-4 moving", Duration::from_secs(60), || async {
        let s = rebalance_status(&nodes[0]).await;
        let n4 = s["nodes"].as_array()?.iter().find(|n| n["node"] == "node-4")?.clone();
        (n4["objects_moved"].as_u64()? >= 10).then_some(())
    })
    .await;
    let v = layout_version(&rebalance_status(&nodes[0]).await);
    let load = Load::start("undo", nodes.iter().map(Server::client).collect(), OBJECTS, 65_536);
    let (code, out) = cli_with_deadline(&nodes[1], &["cluster", "rebalance", "cancel"], Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{out}");
    let status = rebalanced(&nodes[0], v, Duration::from_secs(120)).await;
    let (ops, failed, wrong, written) = load.finish().await;
    println!("cancelled: {status}; client {ops} requests, {failed} failed, {wrong} wrong");
    assert_eq!((failed, wrong), (0, 0));
    // node-4 is left draining and holds nothing; every key is back on its old set.
    let s = cluster_status(&nodes[0]).await.unwrap();
    let n4 = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "node-4")
        .unwrap()
        .clone();
    assert_eq!(n4["state"], "draining", "{n4}");
    let mut all = keys.clone();
    for k in &written {
        let i: u64 = k.trim_start_matches("load/").parse().unwrap();
        all.push((k.clone(), data(2048, 1_000_000 + i)));
    }
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "undo", &all).await,
        0
    );
    let moved_keys = all.iter().map(|(k, _)| k.clone());
    copies_match_the_layout(&nodes[0], "undo", moved_keys).await;

    // Activated again, node-4 takes its share after all.
    let v = layout_version(&rebalance_status(&nodes[0]).await);
    let (code, out) = cli_with_deadline(&nodes[0], &["cluster", "activate", "node-4"], Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{out}");
    rebalanced(&nodes[0], v, Duration::from_secs(180)).await;
    let mut on_4 = 0;
    for (k, _) in all.iter().step_by(3) {
        let (held, set) = holders(&nodes[0], "undo", k).await;
        assert_eq!(held, set, "{k}");
        on_4 += usize::from(set.iter().any(|n| n == "node-4"));
    }
    assert!(on_4 > 0, "node-4 holds nothing after its activation");
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "undo", &all).await,
        0
    );
}
