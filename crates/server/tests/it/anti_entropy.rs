//! Merkle-tree anti-entropy with real processes: a replica that missed writes while it was down
//! converges without any read and without hints (hints are off here: `--hint-max-per-node 0`),
//! until every replica reports the same tree roots and holds the same versions; and a tombstone
//! is not collected while a replica lacks it, so a replica that was away longer than the grace
//! period cannot bring a deleted object back.

use crate::common::cluster::*;
use crate::common::*;
use std::time::{Duration, Instant};

async fn repair_status(srv: &Server) -> serde_json::Value {
    let auth = format!("Bearer {SK}");
    let (st, _, body) = raw(
        "GET",
        &format!("{}/cluster/repair/status", srv.admin),
        &[("authorization", auth.as_str())],
        vec![],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Every node's roots equal for every partition, and every node confirmed in sync with every
/// peer: `Some(status)` then.
fn in_sync(all: &serde_json::Value, nodes: usize) -> bool {
    let list = all["nodes"].as_array().unwrap();
    if list.len() != nodes
        || all
            .get("unreachable")
            .is_some_and(|u| u.as_object().is_some_and(|o| !o.is_empty()))
    {
        return false;
    }
    let mut roots: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for n in list {
        let peers = n["peers"].as_array().unwrap();
        if n["roots"].as_object().unwrap().is_empty() || peers.len() != nodes - 1 {
            return false;
        }
        for (class, root) in n["roots"].as_object().unwrap() {
            roots
                .entry(class.clone())
                .or_default()
                .push(root.as_str().unwrap().to_string());
        }
        for p in n["peers"].as_array().unwrap() {
            if p["out_of_sync"] != 0
                || p["items_behind"] != 0
                || p["last_complete_sync"].is_null()
                || !p["error"].is_null()
            {
                return false;
            }
        }
    }
    !roots.is_empty() && roots.values().all(|r| r.windows(2).all(|w| w[0] == w[1]))
}

/// The newest version each node holds of `bucket/key`: (node, etag or "marker").
async fn holdings(srv: &Server, bucket: &str, key: &str) -> Vec<(String, String)> {
    let v = located(srv, bucket, key).await;
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let newest = match n["versions"].as_array().unwrap().first() {
                None => "-".to_string(),
                Some(v) if v["delete_marker"].as_bool().unwrap() => "marker".to_string(),
                Some(v) => format!(
                    "{}/{}",
                    v["etag"].as_str().unwrap(),
                    n["versions"].as_array().unwrap().len()
                ),
            };
            (n["node"].as_str().unwrap().to_string(), newest)
        })
        .collect()
}

/// `bucket/key`'s body read through `c` at consistency `level`.
async fn body_at_level(c: &aws_sdk_s3::Client, bucket: &str, key: &str, level: &'static str) -> Vec<u8> {
    let got = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .customize()
        .mutate_request(move |r| {
            r.headers_mut().insert("x-ironbucket-consistency", level);
        })
        .send()
        .await
        .unwrap();
    body_bytes(got).await
}

const EXTRA: [&str; 4] = ["--replication-factor", "3", "--hint-max-per-node", "0"];

#[tokio::test]
async fn a_node_killed_during_writes_converges_without_reads_or_hints() {
    let (mut nodes, seeds, ports) = cluster_with(3, &EXTRA).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("aent").send().await.unwrap();
    a.create_bucket().bucket("aent-v").send().await.unwrap();
    enable_versioning(&a, "aent-v").await;
    let put = |bucket: &'static str, key: String, body: Vec<u8>| {
        let a = a.clone();
        async move {
            a.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    // A writer runs throughout; node-3 is killed after its 60th write.
    const N: usize = 240;
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..N {
                a.put_object()
                    .bucket("aent")
                    .key(format!("w/{i:04}"))
                    .body(data(1000 + i * 37, i as u64).into())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("write {i} failed: {e:?}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    poll_until("60 writes", Duration::from_secs(30), || async {
        let l = a.list_objects_v2().bucket("aent").send().await.ok()?;
        (l.key_count().unwrap_or(0) >= 60).then_some(())
    })
    .await;
    let mut away = nodes.pop().unwrap();
    let dir = away.take_tmp().unwrap();
    away.kill9();
    writer.await.unwrap();
    // Also missed by node-3: overwrites, deletes, a version deleted by id, a delete marker, a
    // tag change.
    for i in 0..20 {
        put("aent", format!("w/{i:04}"), b"overwritten".to_vec()).await;
    }
    for i in 20..40 {
        a.delete_object()
            .bucket("aent")
            .key(format!("w/{i:04}"))
            .send()
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    for body in ["v1", "v2", "v3"] {
        let out = a
            .put_object()
            .bucket("aent-v")
            .key("doc")
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
        ids.push(out.version_id().unwrap().to_string());
    }
    a.delete_object()
        .bucket("aent-v")
        .key("doc")
        .version_id(&ids[1])
        .send()
        .await
        .unwrap();
    a.delete_object().bucket("aent-v").key("doc").send().await.unwrap();
    a.put_object_tagging()
        .bucket("aent")
        .key("w/0050")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(aws_sdk_s3::types::Tag::builder().key("k").value("v").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // node-3 comes back; nobody reads anything.
    nodes.push(restart_node(dir.path(), "node-3", ports[2], &seeds, &EXTRA));
    let back = Instant::now();
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    // The bound this test states: every replica identical within 60 s of the restart.
    let st = poll_until(
        "every replica reports the same roots",
        Duration::from_secs(60),
        || async {
            let st = repair_status(&nodes[0]).await;
            in_sync(&st, 3).then_some(st)
        },
    )
    .await;
    println!(
        "node-3 converged {:.1} s after its restart: {}",
        back.elapsed().as_secs_f64(),
        serde_json::to_string(&st["nodes"]).unwrap()
    );
    let n3 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-3")
        .unwrap()
        .clone();
    assert!(n3["objects_copied"].as_u64().unwrap() >= 150, "{n3}");
    assert!(n3["deletes_applied"].as_u64().unwrap() >= 20, "{n3}");
    // A metadata merge is made by whichever node compares first (it updates both copies).
    let merged: u64 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata_merged"].as_u64().unwrap())
        .sum();
    assert!(merged >= 1, "{st}");
    // No hint was kept: anti-entropy alone did it.
    let (_, _, m) = admin_get(&format!("{}/cluster/metrics/replication", nodes[0].admin)).await;
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["hints_kept"], 0, "{m}");

    // Every node holds the same newest version (and number of versions) of every key.
    let mut keys: Vec<(&str, String)> = (0..N).map(|i| ("aent", format!("w/{i:04}"))).collect();
    keys.push(("aent-v", "doc".into()));
    for (bucket, key) in &keys {
        let h = holdings(&nodes[0], bucket, key).await;
        assert_eq!(h.len(), 3, "{bucket}/{key}: {h:?}");
        assert!(h.iter().all(|(_, v)| *v == h[0].1 && v != "-"), "{bucket}/{key}: {h:?}");
    }
    // The operator's view: every node in the CLI's JSON, the table, a round started
    // everywhere, and `--watch` ends at once with everything in sync.
    let (code, v, err) = cli(&nodes[1], &["cluster", "repair", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3, "{v}");
    let (code, _, err) = cli(&nodes[1], &["cluster", "repair", "start"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&nodes[1], &["cluster", "repair", "status", "--watch"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&nodes[1], &["cluster", "repair", "rate", "1e9"]);
    assert_ne!(code, 0, "a rate beyond the bound is refused: {err}");
    // The metrics show it too.
    let (_, _, metrics) = admin_get(&format!("{}/metrics", nodes[2].admin)).await;
    assert!(
        metrics.contains("ironbucket_anti_entropy_total{kind=\"copied\"}"),
        "{metrics}"
    );

    // node-3 alone (the others stopped) answers from its own copies, at ONE.
    for n in nodes.iter_mut().take(2) {
        n.kill9();
    }
    let c = nodes[2].client();
    assert_eq!(body_at_level(&c, "aent", "w/0005", "ONE").await, b"overwritten");
    assert_eq!(
        body_at_level(&c, "aent", "w/0200", "ONE").await,
        data(1000 + 200 * 37, 200)
    );
}

#[tokio::test]
async fn a_tombstone_waits_for_every_replica_so_a_late_replica_cannot_resurrect() {
    let extra = [
        "--replication-factor",
        "3",
        "--hint-max-per-node",
        "0",
        "--tombstone-grace",
        "1",
        "--worker-interval",
        "1",
    ];
    let (mut nodes, seeds, ports) = cluster_with(3, &extra).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("graves").send().await.unwrap();
    a.put_object()
        .bucket("graves")
        .key("doomed")
        .body(b"do not come back".to_vec().into())
        .send()
        .await
        .unwrap();
    a.put_object()
        .bucket("graves")
        .key("kept")
        .body(b"k".to_vec().into())
        .send()
        .await
        .unwrap();
    poll_until("on every node", Duration::from_secs(10), || async {
        let h = holdings(&nodes[0], "graves", "doomed").await;
        h.iter().all(|(_, v)| v != "-").then_some(())
    })
    .await;
    let mut away = nodes.pop().unwrap();
    let dir = away.take_tmp().unwrap();
    away.kill9();
    a.delete_object().bucket("graves").key("doomed").send().await.unwrap();
    // Far past the grace period (1 s, collection every second): node-1 and node-2 keep the
    // tombstone because node-3 has not confirmed it.
    holds_for(
        "the tombstone is kept while node-3 lacks it",
        Duration::from_secs(6),
        || async {
            let h = holdings(&nodes[0], "graves", "doomed").await;
            h.iter().filter(|(n, _)| n != "node-3").all(|(_, v)| v == "marker")
        },
    )
    .await;

    // node-3 returns with the object it never saw deleted.
    nodes.push(restart_node(dir.path(), "node-3", ports[2], &seeds, &extra));
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    // It takes the tombstone in; then, confirmed everywhere, the tombstone is collected on every
    // node and nothing of the key is left anywhere.
    poll_until(
        "the tombstone reached node-3 and was collected everywhere",
        Duration::from_secs(45),
        || async {
            let h = holdings(&nodes[0], "graves", "doomed").await;
            (h.len() == 3 && h.iter().all(|(_, v)| v == "-")).then_some(())
        },
    )
    .await;
    for n in &nodes {
        for level in ["ONE", "ALL"] {
            let e = n
                .client()
                .get_object()
                .bucket("graves")
                .key("doomed")
                .customize()
                .mutate_request(move |r| {
                    r.headers_mut().insert("x-ironbucket-consistency", level);
                })
                .send()
                .await
                .unwrap_err();
            assert_eq!(status_of(&e), 404, "{level}: {e:?}");
        }
        let l = n.client().list_objects_v2().bucket("graves").send().await.unwrap();
        let keys: Vec<&str> = l.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, vec!["kept"]);
    }
}

/// The `kind` series of a metric family on `srv` (0 when absent).
async fn metric(srv: &Server, family: &str, kind: &str) -> u64 {
    let (_, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
    let prefix = format!("{family}{{kind=\"{kind}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn blob_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("blobs"), &mut out);
    out.retain(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().contains("tmp")));
    out
}

fn flip_a_byte(path: &std::path::Path) {
    let mut raw = std::fs::read(path).unwrap();
    let n = raw.len();
    raw[n / 2] ^= 0x40;
    std::fs::write(path, raw).unwrap();
}

#[tokio::test]
async fn scrub_finds_a_corrupt_body_and_repairs_it_from_a_replica() {
    let extra = [
        "--replication-factor",
        "3",
        "--scrub-interval-secs",
        "1",
        "--scrub-rate-mbps",
        "50",
    ];
    let (nodes, _, _) = cluster_with(3, &extra).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("rot").send().await.unwrap();
    let body = data(300_000, 3);
    a.put_object()
        .bucket("rot")
        .key("k")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let files = poll_until("node-3 stored the body", Duration::from_secs(10), || async {
        let f = blob_files(&nodes[2].dir);
        (f.len() == 1).then_some(f)
    })
    .await;
    flip_a_byte(&files[0]);
    // The scrub finds it, a healthy replica holds the version, the copy is dropped and
    // anti-entropy brings it back.
    poll_until("scrub repaired the body", Duration::from_secs(30), || async {
        (metric(&nodes[2], "ironbucket_scrub_total", "repaired").await >= 1).then_some(())
    })
    .await;
    assert!(metric(&nodes[2], "ironbucket_scrub_total", "corrupt").await >= 1);
    poll_until("the version is back on node-3", Duration::from_secs(30), || async {
        let h = holdings(&nodes[0], "rot", "k").await;
        (h.iter().all(|(_, v)| *v == h[0].1 && v != "-")).then_some(())
    })
    .await;
    let got = body_at_level(&nodes[2].client(), "rot", "k", "ONE").await;
    assert!(got == body, "node-3 serves the repaired bytes");
    // The other nodes' scrubs found nothing wrong.
    for n in &nodes[..2] {
        assert_eq!(metric(n, "ironbucket_scrub_total", "corrupt").await, 0);
    }
    let auth = format!("Bearer {SK}");
    let (_, _, w) = raw(
        "GET",
        &format!("{}/workers/store.scrub", nodes[2].admin),
        &[("authorization", auth.as_str())],
        vec![],
    )
    .await;
    assert!(w.contains("corrupt"), "{w}");
}

#[tokio::test]
async fn a_single_node_scrub_reports_corruption_and_keeps_the_record() {
    let srv = Server::start_with(&["--scrub-interval-secs", "1"], &[]);
    let c = srv.client();
    c.create_bucket().bucket("rot1").send().await.unwrap();
    c.put_object()
        .bucket("rot1")
        .key("k")
        .body(data(200_000, 4).into())
        .send()
        .await
        .unwrap();
    flip_a_byte(&blob_files(&srv.dir)[0]);
    poll_until("scrub found the corrupt body", Duration::from_secs(20), || async {
        (metric(&srv, "ironbucket_scrub_total", "corrupt").await >= 1).then_some(())
    })
    .await;
    assert_eq!(metric(&srv, "ironbucket_scrub_total", "repaired").await, 0);
    // Kept (there is no replica to copy from): listed, and a read fails instead of serving
    // wrong bytes.
    let l = c.list_objects_v2().bucket("rot1").send().await.unwrap();
    assert_eq!(l.contents().len(), 1);
}

#[tokio::test]
async fn a_wiped_node_gets_all_its_data_back_at_the_throttled_rate() {
    // Hints off: the last write's copy to node-3 may have been cut by the kill and hinted, and
    // this test measures anti-entropy alone.
    let extra = [
        "--replication-factor",
        "3",
        "--repair-rate-mbps",
        "2",
        "--hint-max-per-node",
        "0",
    ];
    let (mut nodes, seeds, ports) = cluster_with(3, &extra).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("wiped").send().await.unwrap();
    const OBJECTS: usize = 40;
    const SIZE: usize = 256 * 1024;
    for i in 0..OBJECTS {
        a.put_object()
            .bucket("wiped")
            .key(format!("o/{i:02}"))
            .body(data(SIZE, i as u64).into())
            .send()
            .await
            .unwrap();
    }
    let mut n3 = nodes.pop().unwrap();
    n3.kill9();
    let wiped = wiped_node("node-3", ports[2], &seeds, &extra);
    not_ready_because(&wiped, "already a member of this cluster").await;
    let (c, _, err) = cli(&nodes[0], &["cluster", "replace", "node-3"]);
    assert_eq!(c, 0, "{err}");
    nodes.push(wiped);
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    // Sample node-3's copied bytes until every replica is in sync.
    let began = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    loop {
        let st = repair_status(&nodes[0]).await;
        let n3 = st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == "node-3")
            .cloned();
        if let Some(n3) = n3 {
            samples.push((began.elapsed().as_secs_f64(), n3["bytes_copied"].as_u64().unwrap()));
        }
        if in_sync(&st, 3) {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(90), "not in sync: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = samples.last().unwrap().1;
    assert!(total >= (OBJECTS * SIZE) as u64, "{total}");
    // The rate between the first and the last sample that saw bytes move.
    let first = samples.iter().find(|s| s.1 > 0).unwrap();
    let last = samples.iter().find(|s| s.1 == total).unwrap();
    let rate = (last.1 - first.1) as f64 / (last.0 - first.0);
    println!(
        "wiped node refilled: {total} bytes, {rate:.0} B/s against a limit of 2000000 B/s, in sync {:.1} s after it was replaced",
        began.elapsed().as_secs_f64()
    );
    assert!(
        (1_600_000.0..=2_400_000.0).contains(&rate),
        "rate {rate:.0} B/s: {samples:?}"
    );
    for i in 0..OBJECTS {
        let h = holdings(&nodes[0], "wiped", &format!("o/{i:02}")).await;
        assert!(h.iter().all(|(_, v)| *v == h[0].1 && v != "-"), "{h:?}");
    }
}

/// Waits until the 3 nodes are in sync again and prints how long node-3 took since `since`,
/// and what it copied; node-3's status.
async fn report_refill(nodes: &[Server], since: Instant, what: &str) -> serde_json::Value {
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    let st = poll_until("in sync", Duration::from_secs(600), || async {
        let st = repair_status(&nodes[0]).await;
        in_sync(&st, 3).then_some(st)
    })
    .await;
    let secs = since.elapsed().as_secs_f64();
    let n3 = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-3")
        .unwrap()
        .clone();
    println!(
        "{what} in {secs:.1} s: {} versions, {} bytes copied ({:.0} objects/s, {:.2} MB/s)",
        n3["objects_copied"],
        n3["bytes_copied"],
        n3["objects_copied"].as_f64().unwrap() / secs,
        n3["bytes_copied"].as_f64().unwrap() / secs / 1e6
    );
    n3
}

/// At scale: 10,000 objects of 4 KiB that a node missed (hints off) all reach it after its
/// restart, and all of them again after it is wiped and replaced, with no bandwidth limit. It
/// checks completeness, not speed; the times it prints are the figures docs/cluster.md reports
/// (`cargo nextest run -p ironbucket-server --test it anti_entropy::figures --no-capture`).
#[tokio::test]
async fn figures_for_10k_objects() {
    let extra = [
        "--replication-factor",
        "3",
        "--hint-max-per-node",
        "0",
        "--repair-rate-mbps",
        "0",
    ];
    let (mut nodes, seeds, ports) = cluster_with(3, &extra).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("tenk").send().await.unwrap();
    let mut n3 = nodes.pop().unwrap();
    let dir = n3.take_tmp().unwrap();
    n3.kill9();
    const OBJECTS: usize = 10_000;
    let body = data(4096, 1);
    let began = Instant::now();
    futures::future::join_all((0..32).map(|w| {
        let (a, body) = (a.clone(), body.clone());
        async move {
            for i in (w..OBJECTS).step_by(32) {
                a.put_object()
                    .bucket("tenk")
                    .key(format!("o/{i:05}"))
                    .body(body.clone().into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }))
    .await;
    println!(
        "wrote {OBJECTS} x 4 KiB with node-3 down in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let restarted = Instant::now();
    nodes.push(restart_node(dir.path(), "node-3", ports[2], &seeds, &extra));
    report_refill(&nodes, restarted, "restarted node converged").await;
    // Wiped and replaced: everything again.
    let mut n3 = nodes.pop().unwrap();
    n3.kill9();
    let wiped = wiped_node("node-3", ports[2], &seeds, &extra);
    not_ready_because(&wiped, "already a member of this cluster").await;
    let (c, _, err) = cli(&nodes[0], &["cluster", "replace", "node-3"]);
    assert_eq!(c, 0, "{err}");
    let replaced = Instant::now();
    nodes.push(wiped);
    let n3 = report_refill(&nodes, replaced, "wiped node refilled").await;
    assert_eq!(n3["objects_copied"].as_u64().unwrap(), OBJECTS as u64);
}
