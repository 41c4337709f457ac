//! Re-replication after a node is lost: a data node down longer than `REREPLICATE_AFTER_SECS`
//! is marked absent and its share re-created on the others; back on its old disk, it discards
//! its copies (stale: deletes made meanwhile, whose tombstones are collected, must not come back)
//! and its share moves back to it. Real processes on 127.0.0.1, a client working throughout.

use crate::common::cluster::*;
use crate::common::moves::*;
use crate::common::*;
use std::time::Duration;

/// 4 nodes at RF 3 (one node down leaves every key two live replicas: QUORUM reads and writes
/// go on), re-replication after 3 s down, hints dropped after 1 s and tombstones collectable
/// after 1 s (so that a returning node's stale copies are not cancelled by either).
const ARGS: [&str; 14] = [
    "--replication-factor",
    "3",
    "--replication-strategy",
    "ConsistentHash",
    "--read-consistency",
    "QUORUM",
    "--write-consistency",
    "QUORUM",
    "--rereplicate-after-secs",
    "3",
    "--hint-max-age-secs",
    "1",
    "--tombstone-grace",
    "1",
];

fn leaving_of(s: &serde_json::Value, node: &str) -> Option<String> {
    s["leaving"].get(node).and_then(|v| v.as_str()).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_too_long_is_re_replicated_and_its_stale_copies_never_come_back() {
    let (mut nodes, seeds, ports) = cluster_with(4, &ARGS).await;
    moves_enabled(&nodes[0]).await;
    let a = nodes[0].client();
    a.create_bucket().bucket("lost").send().await.unwrap();
    const OBJECTS: usize = 300;
    preload(&a, "lost", OBJECTS).await;
    let before = layout_version(&rebalance_status(&nodes[0]).await);

    // node-4 dies; a client keeps reading and writing through the other three.
    let mut n4 = nodes.pop().unwrap();
    let dir = n4.take_tmp().unwrap();
    n4.kill9();
    // Deleted while it is away: the last 30 objects (the client reads the others).
    const DELETED: usize = 30;
    const KEPT: usize = OBJECTS - DELETED;
    let load = Load::start("lost", nodes.iter().map(|n| n.client()).collect(), KEPT, 4096);
    for i in KEPT..OBJECTS {
        a.delete_object()
            .bucket("lost")
            .key(format!("o/{i:05}"))
            .send()
            .await
            .unwrap();
    }
    // After 3 s it is marked absent and its share is re-created on the other three.
    let absent = poll_until("node-4 marked absent", Duration::from_secs(60), || async {
        let s = rebalance_status(&nodes[0]).await;
        (leaving_of(&s, "node-4").is_some_and(|w| w.starts_with("absent"))).then_some(s)
    })
    .await;
    let v_absent = layout_version(&absent);
    assert!(v_absent > before, "{absent:#}");
    rebalanced(&nodes[0], v_absent - 1, Duration::from_secs(120)).await;
    let (ops1, failed1, wrong1, written1) = load.finish().await;
    assert_eq!(
        (failed1, wrong1),
        (0, 0),
        "the client saw failures or wrong bodies while node-4 was lost"
    );
    let live: Vec<String> = (0..KEPT).map(|i| format!("o/{i:05}")).collect();
    for k in &live {
        let (held, set) = holders(&nodes[0], "lost", k).await;
        assert_eq!(
            set.len(),
            3,
            "{k}: three copies again, on the three nodes left: {set:?}"
        );
        assert_eq!(held, set, "{k}: held by {held:?}, the layout names {set:?}");
    }
    // The deletes' tombstones are collected on the three (every replica of the new layout has
    // them, and the grace period is over): each node's tree holds exactly the live objects.
    let expected = (KEPT + written1.len()) as u64;
    poll_until("the deletes' tombstones collected", Duration::from_secs(60), || async {
        let (_, s, _) = admin_json(&nodes[0], "GET", "/cluster/repair/status").await;
        let items: Vec<u64> = s["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["node"] != "node-4")
            .filter_map(|n| n["tree_items"].as_u64())
            .collect();
        (items.len() == 3 && items.iter().all(|i| *i == expected)).then_some(())
    })
    .await;

    // node-4 comes back on its old disk, which still holds the deleted objects.
    nodes.push(restart_node(dir.path(), "node-4", ports[3], &seeds, &ARGS));
    let load = Load::start("lost", nodes[..3].iter().map(|n| n.client()).collect(), KEPT, 4096);
    let back = poll_until("node-4 active again", Duration::from_secs(60), || async {
        let s = rebalance_status(&nodes[0]).await;
        let v = layout_version(&s);
        (v > v_absent && leaving_of(&s, "node-4").is_none()).then_some(v)
    })
    .await;
    rebalanced(&nodes[0], back - 1, Duration::from_secs(120)).await;
    let n4_status = rebalance_status(&nodes[3]).await;
    let dropped = n4_status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-4")
        .map(|n| n["keys_dropped"].clone());
    // Let anti-entropy run a few rounds: nothing deleted may come back through it either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ops2, failed2, wrong2, written2) = load.finish().await;
    println!(
        "node-4 absent at layout {v_absent}, back at {back}; it discarded {dropped:?} key(s); client: {ops1} requests while it was lost, {ops2} while it came back, 0 failed, 0 wrong"
    );
    assert_eq!(
        (failed2, wrong2),
        (0, 0),
        "the client saw failures or wrong bodies while node-4 came back"
    );
    for n in &nodes {
        for i in KEPT..OBJECTS {
            let err = n
                .client()
                .get_object()
                .bucket("lost")
                .key(format!("o/{i:05}"))
                .customize()
                .mutate_request(|r| {
                    r.headers_mut().insert("x-ironbucket-consistency", "ONE");
                })
                .send()
                .await
                .expect_err("a deleted object came back");
            assert_eq!(code(&err), "NoSuchKey");
        }
    }
    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page = nodes[3]
            .client()
            .list_objects_v2()
            .bucket("lost")
            .prefix("o/")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        listed.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed.len(), KEPT, "every live object listed once");
    assert!(
        !listed.iter().any(|k| k.as_str() >= "o/00270"),
        "a deleted key is listed again"
    );
    let keys: Vec<(String, Vec<u8>)> = (0..KEPT).map(|i| (format!("o/{i:05}"), data(4096, i as u64))).collect();
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "lost", &keys).await,
        0
    );
    // node-4 holds its share again, the surplus copies are gone, and what the client wrote
    // while it was away is where the layout says.
    let written: Vec<String> = written1.into_iter().chain(written2).step_by(5).collect();
    copies_match_the_layout(&nodes[0], "lost", live.iter().cloned().chain(written.iter().cloned())).await;
    drop(dir);

    // Lost again, for good this time: its disk is replaced. Marked absent again, its share is
    // re-created on the others; the wiped node confirmed as its replacement (`cluster replace`)
    // takes its place and its share moves back to it.
    let mut n4 = nodes.pop().unwrap();
    n4.kill9();
    let again = poll_until("node-4 marked absent again", Duration::from_secs(60), || async {
        let s = rebalance_status(&nodes[0]).await;
        let v = layout_version(&s);
        (v > back && leaving_of(&s, "node-4").is_some_and(|w| w.starts_with("absent"))).then_some(v)
    })
    .await;
    rebalanced(&nodes[0], again - 1, Duration::from_secs(120)).await;
    let wiped = wiped_node("node-4", ports[3], &seeds, &ARGS);
    let (c, _, err) = cli(&nodes[0], &["cluster", "replace", "node-4"]);
    assert_eq!(c, 0, "{err}");
    nodes.push(wiped);
    let replaced = poll_until("the replacement active", Duration::from_secs(60), || async {
        let s = rebalance_status(&nodes[0]).await;
        let v = layout_version(&s);
        (v > again && leaving_of(&s, "node-4").is_none()).then_some(v)
    })
    .await;
    rebalanced(&nodes[0], replaced - 1, Duration::from_secs(120)).await;
    assert_eq!(
        read_all_at_one(&nodes.iter().collect::<Vec<_>>(), "lost", &keys).await,
        0
    );
    copies_match_the_layout(&nodes[0], "lost", live.into_iter().chain(written)).await;
    let n4 = rebalance_status(&nodes[3]).await;
    let took = n4["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-4")
        .map(|n| n["objects_moved"].clone());
    println!(
        "node-4 replaced by a wiped node: absent at layout {again}, back at {replaced}, took {took:?} object(s) in"
    );
}
