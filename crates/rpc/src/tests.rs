//! Unit tests of the RPC layer: calls, deadlines, refusals, TLS, reconnection after a stall.

use super::*;

#[test]
fn protocol_ranges_agree_on_the_newest_shared_version() {
    let r = |min, max| ProtocolRange { min, max };
    assert_eq!(ProtocolRange::parse("2"), Some(r(2, 2)));
    assert_eq!(ProtocolRange::parse("1-3"), Some(r(1, 3)));
    for bad in ["", "0", "3-2", "x", "1-", "-1"] {
        assert_eq!(ProtocolRange::parse(bad), None, "{bad:?}");
    }
    assert_eq!(r(1, 2).to_string(), "1-2");
    assert_eq!(r(2, 2).to_string(), "2");
    let ours = r(1, 2);
    assert_eq!(ours.agree(r(1, 1)), Ok(1), "an older node is spoken to in its version");
    assert_eq!(ours.agree(r(2, 3)), Ok(2), "a newer node that still speaks ours");
    assert!(ours.agree(r(3, 4)).unwrap_err().contains("all newer"));
    assert!(r(3, 4).agree(ours).unwrap_err().contains("all older"));
    assert_eq!(
        ProtocolRange::CURRENT.agree(ProtocolRange::CURRENT),
        Ok(PROTOCOL_VERSION)
    );
}

struct Echo;

#[tonic::async_trait]
impl Handler for Echo {
    async fn ping(&self, from: &str) -> pb::PingReply {
        pb::PingReply {
            node_id: "server".into(),
            cluster_name: format!("hello {from}"),
            cluster_id: String::new(),
            advertise: String::new(),
            incarnation: String::new(),
            protocol_version: PROTOCOL_VERSION,
            protocol_min: MIN_PROTOCOL_VERSION,
            now_ms: 0,
        }
    }
    /// Vote: the payload reversed (or a failure, or a slow answer, as asked).
    async fn call(&self, call: Incoming, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        assert_eq!(call.from, "client");
        assert_eq!(call.version, PROTOCOL_VERSION);
        if payload == b"fail" {
            return Err("no".into());
        }
        if payload == b"slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok(format!("{}:{}:", call.kind, call.incarnation)
            .into_bytes()
            .into_iter()
            .chain(payload.into_iter().rev())
            .collect())
    }
    /// Counts the bytes and sums them, so the caller can check what arrived.
    async fn push(&self, call: Incoming, header: Vec<u8>, mut data: DataStream) -> Result<Vec<u8>, String> {
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(b) = data.next().await {
            let b = b?;
            n += b.len() as u64;
            sum = b
                .iter()
                .fold(sum, |s, x| s.wrapping_mul(31).wrapping_add(u64::from(*x)));
        }
        Ok(format!("{}:{}:{n}:{sum}", call.kind, String::from_utf8_lossy(&header)).into_bytes())
    }
    async fn pull(&self, _call: Incoming, payload: Vec<u8>) -> Result<DataStream, String> {
        let chunks: u64 = String::from_utf8_lossy(&payload)
            .parse()
            .map_err(|_| "bad count".to_string())?;
        Ok(Box::pin(futures::stream::iter(
            (0..chunks).map(|i| Ok(bytes::Bytes::from(vec![(i % 251) as u8; 1 << 20]))),
        )))
    }
}

/// A raw Raft call (the typed ones are `raft_call`).
async fn vote(p: &Peers, addr: &str, payload: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>, Error> {
    p.envelope(Route::Raft, addr, "vote:inc-1", payload.to_vec(), timeout)
        .await
}

fn cfg(secret: &str, cluster: &str) -> RpcConfig {
    RpcConfig {
        node_id: "client".into(),
        cluster_name: cluster.into(),
        secret: secret.into(),
        accepted_secrets: Vec::new(),
        max_connections_per_node: 2,
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        tls: None,
        protocol: ProtocolRange::CURRENT,
    }
}

/// A server with `server_cfg` on 127.0.0.1 (echo handler): its address (`host` and the
/// port), what stops it, and its task.
async fn spawn_server(
    server_cfg: RpcConfig,
    host: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("{host}:{}", l.local_addr().unwrap().port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(l, &server_cfg, Arc::new(Echo), PeerClocks::default(), async {
            let _ = rx.await;
        })
        .await
    });
    (addr, tx, task)
}

#[tokio::test]
async fn authenticated_calls_deadlines_and_refusals() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server_cfg = cfg("s3cret-s3cret", "c1");
    let clocks = PeerClocks::default();
    let server_clocks = clocks.clone();
    let task = tokio::spawn(async move {
        serve(l, &server_cfg, Arc::new(Echo), server_clocks, async {
            let _ = rx.await;
        })
        .await
    });
    let good = Peers::new(cfg("s3cret-s3cret", "c1")).unwrap();
    assert_eq!(good.ping(&addr, None).await.unwrap().cluster_name, "hello client");
    for _ in 0..3 {
        assert_eq!(vote(&good, &addr, b"abc", None).await.unwrap(), b"vote:inc-1:cba");
    }
    assert!(matches!(
        vote(&good, &addr, b"fail", None).await,
        Err(Error::Remote { .. })
    ));
    let slow = vote(&good, &addr, b"slow", Some(Duration::from_millis(200))).await;
    assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");

    let wrong_secret = Peers::new(cfg("other-secret", "c1")).unwrap();
    assert!(matches!(
        wrong_secret.ping(&addr, None).await,
        Err(Error::Refused { .. })
    ));
    let other_cluster = Peers::new(cfg("s3cret-s3cret", "c2")).unwrap();
    assert!(matches!(
        other_cluster.ping(&addr, None).await,
        Err(Error::Refused { .. })
    ));

    // Bulk data both ways, 64 MiB in 1 MiB chunks, streamed (never whole in memory).
    let sent: Vec<u64> = (0..64).collect();
    let body: DataStream = Box::pin(futures::stream::iter(
        sent.iter()
            .map(|i| Ok(bytes::Bytes::from(vec![(*i % 251) as u8; 1 << 20])))
            .collect::<Vec<_>>(),
    ));
    let want_sum = sent.iter().fold(0u64, |s, i| {
        (0..1 << 20).fold(s, |s, _| s.wrapping_mul(31).wrapping_add(*i % 251))
    });
    let answer = good
        .push_raw(&addr, "object.put", b"h".to_vec(), body, None)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("object.put:h:{}:{want_sum}", 64u64 << 20)
    );
    let mut pulled = good.pull_raw(&addr, "object.get", b"64".to_vec(), None).await.unwrap();
    let mut n = 0u64;
    let mut idx = 0u64;
    while let Some(chunk) = pulled.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|b| u64::from(*b) == idx % 251));
        n += chunk.len() as u64;
        idx += 1;
    }
    assert_eq!(n, 64 << 20);
    assert!(
        good.pull_raw(&addr, "object.get", b"x".to_vec(), None).await.is_err(),
        "a refusal is an error"
    );
    // A kind this node does not know, or one on the wrong method, is refused as unsupported
    // and counted against the caller.
    let unknown = good.envelope(Route::Control, &addr, "object.scrub", vec![], None).await;
    assert!(matches!(unknown, Err(Error::Unsupported { .. })), "{unknown:?}");
    let misrouted = good.envelope(Route::Raft, &addr, "object.op:x", vec![], None).await;
    assert!(matches!(misrouted, Err(Error::Unsupported { .. })), "{misrouted:?}");
    assert_eq!(clocks.snapshot()["client"].refused_protocol_calls, 2);

    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let gone = good.ping(&addr, Some(Duration::from_millis(500))).await;
    assert!(gone.as_ref().is_err_and(Error::is_unavailable), "{gone:?}");
}

#[tokio::test]
async fn an_unanswered_ping_makes_the_next_call_use_a_new_connection() {
    // A real peer behind a relay that can stop carrying bytes while keeping its connections
    // (a partition dropping packets: the bytes wait, as in TCP's retransmission backoff).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = l.local_addr().unwrap().to_string();
    let server_cfg = cfg("s3cret-s3cret", "c1");
    let server = tokio::spawn(async move {
        serve(
            l,
            &server_cfg,
            Arc::new(Echo),
            PeerClocks::default(),
            std::future::pending(),
        )
        .await
    });
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = relay.local_addr().unwrap().to_string();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (count, cut2) = (accepted.clone(), cut.clone());
    let relay_task = tokio::spawn(async move {
        while let Ok((client, _)) = relay.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let up = tokio::net::TcpStream::connect(&server_addr).await.unwrap();
            let (cr, cw) = client.into_split();
            let (ur, uw) = up.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(ur), Box::new(cw)),
            ] {
                let cut = cut2.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        while cut.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                while cut.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                if w.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    // One connection per peer, so that the stalled one is the one a later call would take.
    let mut one = cfg("s3cret-s3cret", "c1");
    one.max_connections_per_node = 1;
    let peers = Peers::new(one).unwrap();
    let short = Some(Duration::from_millis(300));
    peers.ping(&addr, short).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    cut.store(true, Ordering::SeqCst);
    let r = peers.ping(&addr, short).await;
    assert!(r.as_ref().is_err_and(Error::is_unavailable), "{r:?}");
    cut.store(false, Ordering::SeqCst);
    // Healed: the next ping goes over a connection of its own, not the one that stalled.
    peers.ping(&addr, short).await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the ping after the cut reused the stalled connection"
    );
    relay_task.abort();
    server.abort();
}

#[tokio::test]
async fn mutual_tls_admits_only_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = vec!["server".to_string(), "client".to_string()];
    generate_certificates(&dir.path().join("good"), "c1", &nodes, &[]).unwrap();
    generate_certificates(&dir.path().join("evil"), "c1", &nodes, &[]).unwrap();
    let files = |set: &str, node: &str| {
        TlsSource::Files(TlsFiles {
            cert: dir.path().join(set).join(format!("{node}.pem")),
            key: dir.path().join(set).join(format!("{node}.key")),
            ca: dir.path().join(set).join("ca.pem"),
        })
    };
    let mut server_cfg = cfg("s3cret-s3cret", "c1");
    server_cfg.tls = Some(files("good", "server"));
    let (addr, tx, task) = spawn_server(server_cfg, "127.0.0.1").await;
    let mut c = cfg("s3cret-s3cret", "c1");
    c.tls = Some(files("good", "client"));
    let good = Peers::new(c).unwrap();
    assert_eq!(vote(&good, &addr, b"ab", None).await.unwrap(), b"vote:inc-1:ba");
    // A certificate from another CA (right secret and all) cannot connect.
    let mut c = cfg("s3cret-s3cret", "c1");
    c.tls = Some(files("evil", "client"));
    let stranger = Peers::new(c).unwrap();
    assert!(stranger.ping(&addr, Some(Duration::from_secs(2))).await.is_err());
    // Nor can a plain-text client.
    let plain = Peers::new(cfg("s3cret-s3cret", "c1")).unwrap();
    assert!(plain.ping(&addr, Some(Duration::from_secs(2))).await.is_err());
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let mut bad = cfg("s", "c");
    bad.tls = Some(TlsSource::Files(TlsFiles {
        cert: dir.path().join("missing.pem"),
        key: dir.path().join("missing.key"),
        ca: dir.path().join("missing-ca.pem"),
    }));
    assert!(Peers::new(bad).err().unwrap().contains("cannot read"));
}

/// Renewed certificate files (here: of another CA) are picked up while running, by the
/// server for new connections and by a client for its next connections.
#[tokio::test]
async fn certificate_files_are_reloaded_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = vec!["server".to_string(), "client".to_string()];
    generate_certificates(&dir.path().join("one"), "c1", &nodes, &[]).unwrap();
    generate_certificates(&dir.path().join("two"), "c1", &nodes, &[]).unwrap();
    let install = |set: &str, node: &str| {
        let to = dir.path().join(format!("live-{node}"));
        std::fs::create_dir_all(&to).unwrap();
        for (from, name) in [
            (format!("{node}.pem"), "node.pem"),
            (format!("{node}.key"), "node.key"),
            ("ca.pem".into(), "ca.pem"),
        ] {
            std::fs::copy(dir.path().join(set).join(from), to.join(name)).unwrap();
        }
        TlsSource::Files(TlsFiles {
            cert: to.join("node.pem"),
            key: to.join("node.key"),
            ca: to.join("ca.pem"),
        })
    };
    let fixed = |set: &str| {
        let mut c = cfg("s3cret-s3cret", "c1");
        c.tls = Some(TlsSource::Files(TlsFiles {
            cert: dir.path().join(set).join("client.pem"),
            key: dir.path().join(set).join("client.key"),
            ca: dir.path().join(set).join("ca.pem"),
        }));
        Peers::new(c).unwrap()
    };
    let mut server_cfg = cfg("s3cret-s3cret", "c1");
    server_cfg.tls = Some(install("one", "server"));
    let (addr, tx, task) = spawn_server(server_cfg, "127.0.0.1").await;
    let mut c = cfg("s3cret-s3cret", "c1");
    c.tls = Some(install("one", "client"));
    let client = Peers::new(c).unwrap();
    let short = Some(Duration::from_secs(2));
    assert_eq!(vote(&client, &addr, b"ab", None).await.unwrap(), b"vote:inc-1:ba");
    assert!(fixed("two").ping(&addr, short).await.is_err());

    // The server's files are renewed: within a few checks it serves the new ones.
    install("two", "server");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fixed("two").ping(&addr, short).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never served the renewed files"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        fixed("one").ping(&addr, short).await.is_err(),
        "the old CA is still trusted"
    );
    // The client's files are renewed too: its next connections use them.
    install("two", "client");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client.ping(&addr, short).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never used the renewed files"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Files that do not load leave the server on the ones it has.
    std::fs::write(dir.path().join("live-server").join("node.pem"), "not a certificate").unwrap();
    tokio::time::sleep(tls::RELOAD_EVERY + Duration::from_secs(1)).await;
    assert!(fixed("two").ping(&addr, short).await.is_ok());
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn tls_derived_from_the_secret_admits_only_holders_of_the_secret() {
    let derived = |secret: &str, node: &str| {
        let mut c = cfg(secret, "c1");
        c.node_id = node.into();
        c.tls = Some(TlsSource::FromSecret);
        c
    };
    // Dialled by a name no certificate carries: a derived CA's certificates name the cluster.
    let (addr, tx, task) = spawn_server(derived("s3cret-s3cret", "server"), "localhost").await;
    // Each node derives the same CA and signs its own certificate: they talk.
    let good = Peers::new(derived("s3cret-s3cret", "client")).unwrap();
    assert_eq!(vote(&good, &addr, b"ab", None).await.unwrap(), b"vote:inc-1:ba");
    // Another secret derives another CA: the handshake fails before any call.
    let stranger = Peers::new(derived("other-secret-xx", "client")).unwrap();
    let r = stranger.ping(&addr, Some(Duration::from_secs(2))).await;
    assert!(r.as_ref().is_err_and(Error::is_unavailable), "{r:?}");
    // Nor can a plain-text client connect.
    let plain = Peers::new(cfg("s3cret-s3cret", "c1")).unwrap();
    assert!(plain.ping(&addr, Some(Duration::from_secs(2))).await.is_err());
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
