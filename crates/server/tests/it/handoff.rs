//! Hinted handoff with real processes: writes, overwrites, deletes and tag changes made while a
//! replica is down are kept as hints by the coordinator and replayed once the replica is back,
//! without any read, until every replica holds the same newest version of every key.

use crate::common::cluster::*;
use crate::common::*;
use std::time::Duration;

async fn replication(srv: &Server) -> serde_json::Value {
    let (st, _, body) = admin_get(&format!("{}/cluster/metrics/replication", srv.admin)).await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// What each node holds of `bucket/key` (its newest version's stamp, and whether it is a
/// delete marker), as `/cluster/locate` shows it, without reading through the data path.
async fn copies(srv: &Server, bucket: &str, key: &str) -> Vec<(String, Option<(String, bool)>)> {
    let v = located(srv, bucket, key).await;
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let newest = n["versions"].as_array().unwrap().first().map(|v| {
                (
                    v["hlc"].as_str().unwrap().to_string(),
                    v["delete_marker"].as_bool().unwrap(),
                )
            });
            (n["node"].as_str().unwrap().to_string(), newest)
        })
        .collect()
}

#[tokio::test]
async fn a_replica_that_was_down_gets_the_writes_it_missed_without_reads() {
    let (mut nodes, seeds, ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("handoff").send().await.unwrap();
    a.create_bucket().bucket("handoff-v").send().await.unwrap();
    enable_versioning(&a, "handoff-v").await;
    let put = |key: String, body: &'static [u8]| {
        let a = a.clone();
        async move {
            a.put_object()
                .bucket("handoff")
                .key(key)
                .body(body.to_vec().into())
                .send()
                .await
                .unwrap();
        }
    };
    put("before".into(), b"old").await;
    put("tagged".into(), b"t").await;

    let mut away = nodes.pop().unwrap();
    let dir = away.take_tmp().unwrap();
    away.kill9();
    // Missed by node-3: 20 new objects, an overwrite, a delete and a tag change, all at QUORUM.
    const N: usize = 20;
    for i in 0..N {
        put(format!("new/{i:02}"), b"fresh").await;
    }
    put("before".into(), b"new").await;
    // In a versioned bucket, a version, a delete marker and a newer version of one key: all
    // three must reach node-3, not only the newest.
    for body in [&b"v1"[..], &b"v2"[..]] {
        a.put_object()
            .bucket("handoff-v")
            .key("doc")
            .body(body.to_vec().into())
            .send()
            .await
            .unwrap();
        if body == b"v1" {
            a.delete_object().bucket("handoff-v").key("doc").send().await.unwrap();
        }
    }
    a.delete_object().bucket("handoff").key("new/00").send().await.unwrap();
    a.put_object_tagging()
        .bucket("handoff")
        .key("tagged")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(aws_sdk_s3::types::Tag::builder().key("k").value("v").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let kept = poll_until("hints kept for node-3", Duration::from_secs(20), || async {
        let m = replication(&nodes[0]).await;
        let pending = m["hints_pending"]["node-3"].as_u64().unwrap_or(0);
        (pending as usize >= N + 6).then_some(pending)
    })
    .await;
    assert!(kept as usize >= N + 6, "{kept}");

    // node-3 comes back; nobody reads anything.
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--replication-factor", "3"]);
    nodes.push(Server::start_in(dir.path(), &args, &[]).unwrap());
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    let m = poll_until("every hint replayed", Duration::from_secs(30), || async {
        let m = replication(&nodes[0]).await;
        let pending: u64 = m["hints_pending"]
            .as_object()
            .map(|p| p.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        (pending == 0).then_some(m)
    })
    .await;
    assert!(m["hints_replayed"].as_u64().unwrap() >= (N + 6) as u64, "{m}");
    assert_eq!(m["hints_dropped"], 0, "{m}");

    // Every replica holds the same newest version of every key, node-3 included.
    let mut keys: Vec<String> = (0..N).map(|i| format!("new/{i:02}")).collect();
    keys.extend(["before".to_string(), "tagged".to_string()]);
    for key in &keys {
        let c = copies(&nodes[0], "handoff", key).await;
        assert_eq!(c.len(), 3, "{key}: {c:?}");
        assert!(c.iter().all(|(_, v)| v.is_some() && *v == c[0].1), "{key}: {c:?}");
    }
    let v = located(&nodes[0], "handoff-v", "doc").await;
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(
            n["versions"].as_array().unwrap().len(),
            3,
            "every version everywhere: {v:#}"
        );
    }
    let gone = copies(&nodes[0], "handoff", "new/00").await;
    assert!(
        gone.iter().all(|(_, v)| v.as_ref().is_some_and(|(_, marker)| *marker)),
        "{gone:?}"
    );

    // Only now through node-3 alone (the others stopped): it answers from its own copies.
    for n in nodes.iter_mut().take(2) {
        n.kill9();
    }
    let c = nodes[2].client();
    let got = c
        .get_object()
        .bucket("handoff")
        .key("before")
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
        })
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, b"new");
    let tags = c
        .get_object_tagging()
        .bucket("handoff")
        .key("tagged")
        .customize()
        .mutate_request(|r| {
            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
        })
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set().len(), 1, "{tags:?}");
}

/// Hints replay while another replica is down: the replay needs the hinted replica and a
/// quorum, not every replica.
#[tokio::test]
async fn hints_replay_while_another_replica_is_down() {
    let (mut nodes, seeds, ports) = cluster_with(3, &["--replication-factor", "3"]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("handoff-2").send().await.unwrap();
    let mut away = nodes.pop().unwrap();
    let dir = away.take_tmp().unwrap();
    away.kill9();
    for i in 0..5 {
        a.put_object()
            .bucket("handoff-2")
            .key(format!("k{i}"))
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    poll_until("hints kept for node-3", Duration::from_secs(20), || async {
        let m = replication(&nodes[0]).await;
        (m["hints_pending"]["node-3"].as_u64().unwrap_or(0) >= 5).then_some(())
    })
    .await;
    // node-2 goes down for good; node-3 comes back.
    nodes[1].kill9();
    let args = node_args("node-3", ports[2], &seeds, SECRET);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(&["--replication-factor", "3"]);
    nodes.push(Server::start_in(dir.path(), &args, &[]).unwrap());
    poll_until(
        "node-3's hints replayed with node-2 down",
        Duration::from_secs(40),
        || async {
            let m = replication(&nodes[0]).await;
            let pending: u64 = m["hints_pending"]
                .as_object()
                .map(|p| {
                    p.iter()
                        .filter(|(n, _)| *n == "node-3")
                        .filter_map(|(_, v)| v.as_u64())
                        .sum()
                })
                .unwrap_or(0);
            (pending == 0 && m["hints_replayed"].as_u64().unwrap_or(0) >= 5).then_some(())
        },
    )
    .await;
    for i in 0..5 {
        let c = copies(&nodes[0], "handoff-2", &format!("k{i}")).await;
        let on3 = c.iter().find(|(n, _)| n == "node-3").unwrap();
        let on1 = c.iter().find(|(n, _)| n == "node-1").unwrap();
        assert!(on3.1.is_some() && on3.1 == on1.1, "k{i}: {c:?}");
    }
}
