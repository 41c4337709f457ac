//! Reads at QUORUM are linearizable: once a read has returned a version, no read begun after it
//! returns an older one, even while a write of the key is under way. Real processes on
//! 127.0.0.1; the timing that exposes a violation is set with fault points.

use crate::common::cluster::*;
use crate::common::*;
use std::time::Duration;

async fn body_of(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = c.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// A GET decides on a version, then fetches its body from a replica that has meanwhile taken a
/// newer write, still under way (on that replica alone). Serving that newer version would let a
/// read just after it, answered by the other replicas, return the older one: the chaos suite
/// found this as "a read returns a write under way, the next read the older value".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_serves_only_a_version_its_quorum_holds() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let extra = [
        "--replication-factor",
        "3",
        "--read-consistency",
        "QUORUM",
        "--write-consistency",
        "QUORUM",
        "--anti-entropy",
        "false",
    ];
    let start = |i: usize, envs: &[(&str, &str)]| start_node(i, &ports, &seeds, &extra, envs);
    // node-1 waits 1 s between a read's decision and the body's fetch; nodes 2 and 3 take 1.5 s
    // over every body they are sent, so a write through node-1 is on node-1 alone for 1.5 s.
    let slow = [("FAILPOINTS", "replica-delay=return(1500)")];
    let nodes = [
        start(0, &[("FAILPOINTS", "read-fetch-delay=return(1000)")]),
        start(1, &slow),
        start(2, &slow),
    ];
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(60)).await;
    let c1 = nodes[0].client();
    c1.create_bucket().bucket("lin").send().await.unwrap();
    let (v1, v2) = (data(4096, 1), data(4096, 2));
    c1.put_object()
        .bucket("lin")
        .key("k")
        .body(v1.clone().into())
        .send()
        .await
        .unwrap();
    // Every replica holds v1 before the reads begin.
    poll_until("v1 on every replica", Duration::from_secs(15), || async {
        let v = located(&nodes[0], "lin", "k").await;
        let held = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["versions"].as_array().is_some_and(|vs| !vs.is_empty()))
            .count();
        (held == 3).then_some(())
    })
    .await;

    // The read through node-1 decides on v1; while it waits, v2 is written through node-1.
    let read = tokio::spawn({
        let c = c1.clone();
        async move { body_of(&c, "lin", "k").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let write = tokio::spawn({
        let c = c1.clone();
        let v2 = v2.clone();
        async move { c.put_object().bucket("lin").key("k").body(v2.into()).send().await }
    });
    let first = read.await.unwrap();
    // Whatever the first read returned, a read begun after it returns that or newer: with
    // node-1 stopped, nodes 2 and 3 answer it.
    nodes[0].pause(true);
    let second = body_of(&nodes[1].client(), "lin", "k").await;
    nodes[0].pause(false);
    write.await.unwrap().unwrap();
    assert!(first == v1 || first == v2, "the first read returned neither version");
    assert!(
        !(first == v2 && second == v1),
        "a read returned v2 (a write under way) and the read after it v1"
    );
    // The first read sees v2 on node-1 when it fetches: it reads again and, finding v2 newest,
    // copies it to a quorum before answering.
    assert_eq!(first, v2, "the read did not return the version its replica holds");
}
