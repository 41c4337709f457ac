//! Helpers of the tests whose cluster changes shape (rebalance, re-replication): admin calls,
//! waits for moves, a client that writes and reads throughout, where keys are held.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::cluster::*;
use super::*;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub const EXTRA: [&str; 4] = ["--replication-factor", "2", "--replication-strategy", "ConsistentHash"];
/// The same with anti-entropy off, so that the mover alone moves the data (anti-entropy compares
/// the new partitions too and would copy part of it).
pub const MOVER_ONLY: [&str; 6] = [
    "--replication-factor",
    "2",
    "--replication-strategy",
    "ConsistentHash",
    "--anti-entropy",
    "false",
];

pub async fn admin_json(srv: &Server, method: &str, path: &str) -> (u16, serde_json::Value, String) {
    let auth = format!("Bearer {SK}");
    let (st, _, body) = raw(
        method,
        &format!("{}{path}", srv.admin),
        &[("authorization", auth.as_str())],
        vec![],
    )
    .await;
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (st, v, body)
}

pub async fn rebalance_status(srv: &Server) -> serde_json::Value {
    let (st, v, body) = admin_json(srv, "GET", "/cluster/rebalance/status").await;
    assert_eq!(st, 200, "{body}");
    v
}

/// Waits until placement changes move data (every member speaks protocol 6).
pub async fn moves_enabled(srv: &Server) {
    poll_until("layout moves on", Duration::from_secs(30), || async {
        rebalance_status(srv).await["moves_enabled"]
            .as_bool()
            .unwrap_or(false)
            .then_some(())
    })
    .await;
}

/// Waits until the move to a layout newer than `after` is done everywhere; returns the status.
pub async fn rebalanced(srv: &Server, after: u64, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = rebalance_status(srv).await;
        if s["layout_version"].as_u64().unwrap_or(0) > after && s["done"] == true {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "rebalance not done within {timeout:?}: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs ironbucket-cli against `srv` with the admin token, killed after `deadline`: its exit code
/// and its stdout and stderr.
pub async fn cli_with_deadline(srv: &Server, args: &[&str], deadline: Duration) -> (i32, String) {
    let bin = std::path::Path::new(bin()).with_file_name("ironbucket-cli");
    if !bin.exists() {
        let _ = cli(srv, &["--help"]);
    }
    let child = std::process::Command::new(bin)
        .args(["--admin-url", &srv.admin, "--admin-token", SK])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = match tokio::time::timeout(deadline, waited).await {
        Ok(r) => r.unwrap().unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("ironbucket-cli {args:?} did not finish within {deadline:?}");
        }
    };
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Starts `name` on a fresh data directory and RPC `port`, joining through `seeds` (it states
/// the address the others reach it at) with a join token made on `member`, with the test's
/// `extra` flags; once it has joined as a learner, makes it a voter.
pub async fn joiner(member: &Server, name: &str, port: u16, seeds: &str, extra: &[&str]) -> Server {
    let mut args = node_args(name, port, seeds, SECRET);
    args.extend(["--rpc-address".to_string(), format!("127.0.0.1:{port}")]);
    args.extend(join_args(member).await);
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = Server::start_with(&a, &[]);
    promote(member, name).await;
    srv
}

pub fn layout_version(s: &serde_json::Value) -> u64 {
    s["layout_version"].as_u64().unwrap()
}

/// A client writing new keys and reading known ones through every node it is given, counting
/// failures and wrong bodies, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Arc<RwLock<Vec<aws_sdk_s3::Client>>>,
    ops: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    wrong: Arc<AtomicU64>,
    written: Arc<std::sync::Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `known` keys `o/00000`.. hold `data(size, i)`.
    pub fn start(bucket: &'static str, clients: Vec<aws_sdk_s3::Client>, known: usize, size: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(RwLock::new(clients));
        let (ops, failed, wrong): (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>) = Default::default();
        let written: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (s, c, o, f, w, wr) = (
            stop.clone(),
            clients.clone(),
            Arc::clone(&ops),
            Arc::clone(&failed),
            Arc::clone(&wrong),
            written.clone(),
        );
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut i: u64 = 0;
            // Bounded: it stops when told, or after 10 minutes whatever happens.
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                let list = c.read().unwrap().clone();
                let client = list[(i as usize) % list.len()].clone();
                let ok = if i.is_multiple_of(3) {
                    let key = format!("load/{i:07}");
                    let r = client
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(data(2048, 1_000_000 + i).into())
                        .send()
                        .await;
                    if r.is_ok() {
                        wr.lock().unwrap().push(key);
                    } else {
                        eprintln!("load: put failed: {r:?}");
                    }
                    r.is_ok()
                } else {
                    let k = (i * 7919) as usize % known;
                    match client.get_object().bucket(bucket).key(format!("o/{k:05}")).send().await {
                        Ok(out) => {
                            if body_bytes(out).await != data(size, k as u64) {
                                w.fetch_add(1, Ordering::Relaxed);
                            }
                            true
                        }
                        Err(e) => {
                            eprintln!("load: get o/{k:05} failed: {e:?}");
                            false
                        }
                    }
                };
                if !ok {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                o.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
        Load {
            stop,
            clients,
            ops,
            failed,
            wrong,
            written,
            task: Some(task),
        }
    }

    /// The client goes through `c` too from now on.
    pub fn add_client(&self, c: aws_sdk_s3::Client) {
        self.clients.write().unwrap().push(c);
    }

    pub async fn finish(mut self) -> (u64, u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        let written = self.written.lock().unwrap().clone();
        (
            self.ops.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
            written,
        )
    }
}

pub async fn preload(c: &aws_sdk_s3::Client, bucket: &str, n: usize) {
    preload_sized(c, bucket, n, 4096).await
}

/// Writes `n` objects `o/00000`.. holding `data(size, i)`, 32 at a time.
pub async fn preload_sized(c: &aws_sdk_s3::Client, bucket: &str, n: usize, size: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let c = c.clone();
            async move {
                c.put_object()
                    .bucket(bucket)
                    .key(format!("o/{i:05}"))
                    .body(data(size, i as u64).into())
                    .send()
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Every key reads back at consistency ONE through every node; returns how many reads failed or
/// were wrong.
pub async fn read_all_at_one(nodes: &[&Server], bucket: &str, keys: &[(String, Vec<u8>)]) -> usize {
    let mut bad = 0;
    for n in nodes {
        let c = n.client();
        let results: Vec<bool> = futures::stream::iter(keys.iter())
            .map(|(k, want)| {
                let c = c.clone();
                async move {
                    let r = c
                        .get_object()
                        .bucket(bucket)
                        .key(k)
                        .customize()
                        .mutate_request(|r| {
                            r.headers_mut().insert("x-ironbucket-consistency", "ONE");
                        })
                        .send()
                        .await;
                    match r {
                        Ok(out) => body_bytes(out).await == *want,
                        Err(e) => {
                            eprintln!("read of {k} at ONE failed: {e:?}");
                            false
                        }
                    }
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        bad += results.iter().filter(|ok| !**ok).count();
    }
    bad
}

/// For each key: the nodes holding any version of it, and the replica set the ring names.
pub async fn holders(srv: &Server, bucket: &str, key: &str) -> (Vec<String>, Vec<String>) {
    let v = located(srv, bucket, key).await;
    let mut held: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["versions"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect();
    let mut set: Vec<String> = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    held.sort();
    set.sort();
    (held, set)
}

pub async fn copies_match_the_layout(srv: &Server, bucket: &str, keys: impl Iterator<Item = String>) {
    for k in keys {
        let (held, set) = holders(srv, bucket, &k).await;
        assert_eq!(held, set, "{k}: held by {held:?}, the layout names {set:?}");
    }
}
