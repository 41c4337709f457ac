//! A node cut off from its peers fails fast: with one node of three partitioned from the other
//! two (its S3 port still reachable, its RPC and gossip to and from both peers cut by
//! fault-injecting proxies), requests sent to it get a 503 with Retry-After within a second
//! instead of hanging until the client gives up, it reports itself not ready, the majority side
//! serves everything meanwhile, and the cut node serves again by itself when the cut heals. A
//! peer that comes back is written to at once, and a member slow to answer does not hold up
//! listings that can do without it.

use crate::common::cluster::*;
use crate::common::*;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use ironbucket_testkit::proxy::{FaultProxy, Link};
use std::time::{Duration, Instant};

/// Three nodes whose traffic to each other passes one proxy per ordered pair:
/// `proxies[i][j]` carries node i's calls and gossip to node j.
struct Proxied {
    nodes: Vec<Server>,
    proxies: Vec<Vec<Option<FaultProxy>>>,
    _routes: tempfile::TempDir,
}

impl Proxied {
    async fn start(n: usize) -> Self {
        let ports = free_ports(n);
        let seeds = seeds_of(&ports);
        let routes = tempfile::tempdir().unwrap();
        let mut proxies: Vec<Vec<Option<FaultProxy>>> = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for (j, port) in ports.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    Some(FaultProxy::start(([127, 0, 0, 1], *port).into()).await.unwrap())
                });
            }
            proxies.push(row);
        }
        let nodes: Vec<Server> = (0..n)
            .map(|i| {
                let table: String = (0..n)
                    .filter(|j| *j != i)
                    .map(|j| {
                        let p = proxies[i][j].as_ref().unwrap();
                        format!("127.0.0.1:{} {}\n", ports[j], p.addr())
                    })
                    .collect();
                let file = routes.path().join(format!("routes-{i}"));
                std::fs::write(&file, table).unwrap();
                let mut args = node_args(&format!("node-{}", i + 1), ports[i], &seeds, SECRET);
                args.extend([
                    "--replication-factor".to_string(),
                    "3".to_string(),
                    "--fault-routes".to_string(),
                    file.display().to_string(),
                ]);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::start_with(&a, &[])
            })
            .collect();
        converged(&nodes.iter().collect::<Vec<_>>(), n, Duration::from_secs(40)).await;
        Self {
            nodes,
            proxies,
            _routes: routes,
        }
    }

    /// Sets every link between `node` and the others, both ways.
    fn isolate(&self, node: usize, link: Link) {
        for (i, row) in self.proxies.iter().enumerate() {
            for (j, p) in row.iter().enumerate() {
                if let Some(p) = p
                    && (i == node || j == node)
                {
                    p.set(link);
                }
            }
        }
    }
}

fn no_retries(srv: &Server) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        config_for(&srv.s3, AK, SK)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_fails_fast_and_recovers_by_itself() {
    let c = Proxied::start(3).await;
    let (majority, minority) = (c.nodes[0].client(), no_retries(&c.nodes[2]));
    majority.create_bucket().bucket("cut").send().await.unwrap();
    majority
        .put_object()
        .bucket("cut")
        .key("before")
        .body(ByteStream::from_static(b"before the cut"))
        .send()
        .await
        .unwrap();

    c.isolate(2, Link::CUT);
    let why = not_ready_because(&c.nodes[2], "no majority").await;
    assert!(why.contains("node-1") && why.contains("node-2"), "{why}");

    // Every request to the cut node is answered 503 with Retry-After within a second.
    for i in 0..5 {
        let t = Instant::now();
        let e = minority
            .put_object()
            .bucket("cut")
            .key(format!("minority-{i}"))
            .body(ByteStream::from_static(b"not acknowledged"))
            .send()
            .await
            .unwrap_err();
        let took = t.elapsed();
        assert_eq!(status(&e), 503, "{e:?}");
        let raw = e.raw_response().unwrap();
        assert!(raw.headers().get("retry-after").is_some(), "{e:?}");
        assert!(took < Duration::from_secs(1), "a PUT to the cut node took {took:?}");
        let t = Instant::now();
        let e = minority
            .get_object()
            .bucket("cut")
            .key("before")
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&e), 503, "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "a GET took {:?}", t.elapsed());
    }
    // The majority side serves reads and writes meanwhile.
    for i in 0..10 {
        majority
            .put_object()
            .bucket("cut")
            .key(format!("during-{i}"))
            .body(ByteStream::from(format!("written during the cut {i}").into_bytes()))
            .send()
            .await
            .unwrap();
    }
    let got = c.nodes[1]
        .client()
        .get_object()
        .bucket("cut")
        .key("during-9")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, b"written during the cut 9");
    assert!(is_ready(&c.nodes[0]).await && is_ready(&c.nodes[1]).await);

    // The cut heals: the node is ready again by itself, reads what was written without it and
    // takes writes.
    c.isolate(2, Link::CLEAR);
    poll_until("the healed node ready", Duration::from_secs(20), || async {
        is_ready(&c.nodes[2]).await.then_some(())
    })
    .await;
    let got = minority
        .get_object()
        .bucket("cut")
        .key("during-3")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, b"written during the cut 3");
    minority
        .put_object()
        .bucket("cut")
        .key("after")
        .body(ByteStream::from_static(b"after"))
        .send()
        .await
        .unwrap();
    // Nothing the cut node refused was stored anywhere.
    let listed = majority.list_objects_v2().bucket("cut").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(keys.iter().all(|k| !k.starts_with("minority-")), "{keys:?}");
    assert_eq!(keys.len(), 12, "{keys:?}");
}

/// A peer that stopped answering and answers again is written to at once: the node does not
/// refuse a write for want of it on a view of it (its last ping, the gossip) from before it
/// came back. A rolling restart behind a load balancer met that: a PUT refused with 503 a
/// moment after the restarted node reported ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_a_peer_comes_back_is_not_refused_for_it() {
    let (nodes, _seeds, _ports) = cluster_with(2, &["--replication-factor", "2"]).await;
    let c = no_retries(&nodes[0]);
    c.create_bucket().bucket("back").send().await.unwrap();
    let put = |key: String| {
        c.put_object()
            .bucket("back")
            .key(key)
            .body(ByteStream::from_static(b"both replicas"))
            .send()
    };
    // node-2 stops answering; node-1 finds out and refuses writes (QUORUM of 2 needs both).
    nodes[1].pause(true);
    let mut i = 0;
    poll_until("node-1 refuses writes without node-2", Duration::from_secs(20), || {
        i += 1;
        let attempt = put(format!("during-{i}"));
        async move {
            match attempt.await {
                Err(e) if status(&e) == 503 => Some(()),
                _ => None,
            }
        }
    })
    .await;
    // Long enough for the gossip to call node-2 down as well.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        cluster_status(&nodes[0]).await.unwrap()["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "node-2" && m["liveness"] != "alive"),
        "node-1 sees node-2 down"
    );

    // node-2 answers again: the next write through node-1 goes to both at once.
    nodes[1].pause(false);
    let t = Instant::now();
    put("right-after".into()).await.unwrap();
    println!("first write after the peer came back took {:?}", t.elapsed());
    for k in 0..10 {
        put(format!("after-{k}")).await.unwrap();
    }
}

/// A member slow to answer its part of a listing (its disk in trouble, say) does not hold up
/// listings that can do without it: with writes acknowledged by 2 of 3 replicas, any two
/// members' answers hold every acknowledged write, and the third gets a short grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_member_does_not_hold_up_listings() {
    let ports = free_ports(3);
    let seeds = seeds_of(&ports);
    let extra = ["--replication-factor", "3"];
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let slow: &[(&str, &str)] = if i == 2 {
                &[("FAILPOINTS", "list-answer=return(4000)")]
            } else {
                &[]
            };
            start_node(i, &ports, &seeds, &extra, slow)
        })
        .collect();
    converged(&nodes.iter().collect::<Vec<_>>(), 3, Duration::from_secs(30)).await;
    let c = nodes[0].client();
    c.create_bucket().bucket("slow").send().await.unwrap();
    for i in 0..20 {
        c.put_object()
            .bucket("slow")
            .key(format!("k{i:02}"))
            .body(ByteStream::from_static(b"listed"))
            .send()
            .await
            .unwrap();
    }
    // Through a healthy node and through the slow one itself: complete, and not 4 s late.
    for n in [&nodes[1], &nodes[2]] {
        let t = Instant::now();
        let listed = n.client().list_objects_v2().bucket("slow").send().await.unwrap();
        let took = t.elapsed();
        assert_eq!(listed.key_count(), Some(20), "{listed:?}");
        assert!(
            took < Duration::from_secs(2),
            "the listing waited {took:?} for the slow member"
        );
    }
}
