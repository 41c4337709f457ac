#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Merkle-tree anti-entropy with real processes: a replica that missed writes while it was down
//! converges without any read and without hints (hints are off here: `--hint-max-per-node 0`),
//! until every replica reports the same tree roots and holds the same versions; and a tombstone
//! is not collected while a replica lacks it, so a replica that was away longer than the grace
//! period cannot bring a deleted object back.

mod common;

use common::cluster::*;
use common::*;
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
    let (st, _, body) = raw(
        "GET",
        &format!("{}/cluster/locate/{bucket}/{key}", srv.admin),
        &[],
        vec![],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
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
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(&EXTRA);
    nodes.push(Server::start_in(dir.path(), &args, &[]).unwrap());
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
    let (_, _, m) = raw(
        "GET",
        &format!("{}/cluster/metrics/replication", nodes[0].admin),
        &[],
        vec![],
    )
    .await;
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
    // The metrics show it too.
    let (_, _, metrics) = raw("GET", &format!("{}/metrics", nodes[2].admin), &[], vec![]).await;
    assert!(
        metrics.contains("ironbucket_anti_entropy_total{kind=\"copied\"}"),
        "{metrics}"
    );

    // node-3 alone (the others stopped) answers from its own copies, at ONE.
    for n in nodes.iter_mut().take(2) {
        n.kill9();
    }
    let c = nodes[2].client();
    let got = c
        .get_object()
        .bucket("aent")
        .key("w/0005")
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
        })
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, b"overwritten");
    let got = c
        .get_object()
        .bucket("aent")
        .key("w/0200")
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
        })
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, data(1000 + 200 * 37, 200));
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
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(&extra);
    nodes.push(Server::start_in(dir.path(), &args, &[]).unwrap());
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
