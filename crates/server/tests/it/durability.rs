//! Data survives restarts and kill -9; encryption at rest; corruption is detected.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn seed_of(key: &str) -> u64 {
    key.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    })
}

#[tokio::test]
async fn data_survives_a_clean_restart() {
    let mut srv = Server::start();
    let tmp = srv.take_tmp().unwrap();
    let c = srv.client();
    c.create_bucket().bucket("persist").send().await.unwrap();
    for i in 0..20 {
        let k = format!("obj/{i}");
        c.put_object()
            .bucket("persist")
            .key(&k)
            .metadata("i", i.to_string())
            .body(ByteStream::from(data(10_000 + i * 777, seed_of(&k))))
            .send()
            .await
            .unwrap();
    }
    let id = c
        .create_multipart_upload()
        .bucket("persist")
        .key("pending")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    c.upload_part()
        .bucket("persist")
        .key("pending")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap();
    assert_eq!(srv.stop(), Some(0), "SIGTERM exits cleanly");

    let srv = Server::start_in(tmp.path(), &[], &[]).unwrap();
    let c = srv.client();
    for i in 0..20 {
        let k = format!("obj/{i}");
        let g = c.get_object().bucket("persist").key(&k).send().await.unwrap();
        assert_eq!(g.metadata().and_then(|m| m.get("i")).cloned(), Some(i.to_string()));
        assert!(body_bytes(g).await == data(10_000 + i * 777, seed_of(&k)));
    }
    let parts = c
        .list_parts()
        .bucket("persist")
        .key("pending")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(parts.parts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_uploads_loses_nothing_acknowledged() {
    let mut srv = Server::start();
    let tmp = srv.take_tmp().unwrap();
    let c = srv.client();
    c.create_bucket().bucket("crash").send().await.unwrap();
    let acked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..6 {
        let c = c.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let key = format!("w{w}/obj{i:05}");
                // Sizes from 1 byte to ~1.5 MiB, and overwrites of earlier keys now and then.
                let key = if i % 7 == 6 {
                    format!("w{w}/obj{:05}", i / 2)
                } else {
                    key
                };
                let size = 1 + ((seed_of(&key) as usize + i * 7919) % 1_500_000);
                let seed = seed_of(&key) ^ size as u64;
                match c
                    .put_object()
                    .bucket("crash")
                    .key(&key)
                    .body(ByteStream::from(data(size, seed)))
                    .send()
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().insert(key, size);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the writers get going (at least 30 acknowledged writes, or 20 s), then pull the plug
    // while uploads are in flight.
    let start = std::time::Instant::now();
    while acked.lock().unwrap().len() < 30 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "writers made progress before the crash ({} acknowledged)",
        acked.len()
    );

    let srv = Server::start_in(tmp.path(), &[], &[]).unwrap();
    let c = srv.client();
    // Every acknowledged object is intact (the last acknowledged version of each key).
    for (key, size) in &acked {
        let g = c
            .get_object()
            .bucket("crash")
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} lost: {e:?}"));
        let got = body_bytes(g).await;
        let seed = seed_of(key) ^ *size as u64;
        // An overwrite in flight at the crash may have landed after its ack was lost: then the
        // object is the newer write, which must be complete too (checked through its ETag below).
        if got.len() == *size {
            assert!(got == data(*size, seed), "{key} corrupted");
        }
    }
    // Every visible object is complete: its body matches its ETag (no partial objects).
    let mut token = None;
    let mut listed = 0;
    loop {
        let page = c
            .list_objects_v2()
            .bucket("crash")
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        for o in page.contents() {
            let key = o.key().unwrap();
            let g = c.get_object().bucket("crash").key(key).send().await.unwrap();
            let etag = g.e_tag().unwrap().trim_matches('"').to_string();
            let body = body_bytes(g).await;
            assert_eq!(md5_hex(&body), etag, "{key} is partial or corrupt");
            assert_eq!(body.len() as i64, o.size().unwrap());
            let seed = seed_of(key) ^ body.len() as u64;
            assert!(body == data(body.len(), seed), "{key} holds bytes nobody wrote");
            listed += 1;
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        token = page.next_continuation_token().map(String::from);
    }
    assert!(listed >= acked.len());
}

const KEY1: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const KEY2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const KEY3: &str = "0303030303030303030303030303030303030303030303030303030303030303";

fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
}

#[tokio::test]
async fn encryption_at_rest_and_key_rotation() {
    let enc1 = [("ENABLE_ENCRYPTION", "true"), ("ENCRYPTION_KEY", KEY1)];
    let mut srv = Server::start_with(&[], &enc1);
    let tmp = srv.take_tmp().unwrap();
    let c = srv.client();
    c.create_bucket().bucket("enc").send().await.unwrap();
    let plain: Vec<u8> = b"TOP-SECRET-PAYLOAD ".iter().copied().cycle().take(300_000).collect();
    c.put_object()
        .bucket("enc")
        .key("secret")
        .body(ByteStream::from(plain.clone()))
        .send()
        .await
        .unwrap();
    // A small object: its blob lives in the metadata index, not in a file.
    c.put_object()
        .bucket("enc")
        .key("small")
        .body(ByteStream::from_static(b"small and secret"))
        .send()
        .await
        .unwrap();
    let g = c
        .get_object()
        .bucket("enc")
        .key("secret")
        .range("bytes=70000-70099")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(g).await, &plain[70_000..70_100]);
    let mut files = Vec::new();
    walk(&tmp.path().join("blobs"), &mut files);
    assert_eq!(files.len(), 1);
    let raw_file = std::fs::read(&files[0]).unwrap();
    assert!(
        !raw_file.windows(18).any(|w| w == b"TOP-SECRET-PAYLOAD"),
        "plaintext found on disk"
    );
    srv.stop();

    // Rotation: new key current, old key still readable; the rewrap worker moves every blob's
    // data key to the new key in the background (only the headers change) and says when done.
    let old = KEY1.to_string();
    let rotated = [
        ("ENABLE_ENCRYPTION", "true"),
        ("ENCRYPTION_KEY", KEY2),
        ("ENCRYPTION_OLD_KEYS", old.as_str()),
    ];
    let mut srv = Server::start_in(tmp.path(), &[], &rotated).unwrap();
    let c = srv.client();
    assert!(body_bytes(c.get_object().bucket("enc").key("secret").send().await.unwrap()).await == plain);
    c.put_object()
        .bucket("enc")
        .key("new")
        .body(ByteStream::from_static(b"under key 2"))
        .send()
        .await
        .unwrap();
    let progress = crate::common::cluster::poll_until("the rewrap worker done", Duration::from_secs(30), || async {
        let (st, _, body) = admin_get(&format!("{}/workers/store.rewrap", srv.admin)).await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let p = v["progress"].as_str().unwrap_or_default().to_string();
        p.starts_with("done").then_some(p)
    })
    .await;
    assert!(
        progress.contains("2 re-wrapped"),
        "the file and the inline blob: {progress}"
    );
    let (_, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
    assert!(m.contains("ironbucket_rewrap_total{kind=\"done\"} 1"), "{m}");
    assert!(m.contains("ironbucket_rewrap_total{kind=\"rewrapped\"} 2"), "{m}");
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(after[0][128..], raw_file[128..], "the data itself was not rewritten");
    srv.stop();

    // The old key is no longer needed: every object reads with the new key alone.
    let only2 = [("ENABLE_ENCRYPTION", "true"), ("ENCRYPTION_KEY", KEY2)];
    let mut srv = Server::start_in(tmp.path(), &[], &only2).unwrap();
    let c = srv.client();
    assert_eq!(
        body_bytes(c.get_object().bucket("enc").key("new").send().await.unwrap()).await,
        b"under key 2"
    );
    assert!(body_bytes(c.get_object().bucket("enc").key("secret").send().await.unwrap()).await == plain);
    assert_eq!(
        body_bytes(c.get_object().bucket("enc").key("small").send().await.unwrap()).await,
        b"small and secret"
    );
    let (_, _, body) = admin_get(&format!("{}/workers/store.rewrap", srv.admin)).await;
    assert!(body.contains("no ENCRYPTION_OLD_KEYS"), "{body}");
    srv.stop();

    // Without the key a blob is wrapped by, it cannot be read: an error, never garbage.
    let other = [("ENABLE_ENCRYPTION", "true"), ("ENCRYPTION_KEY", KEY3)];
    let mut srv = Server::start_in(tmp.path(), &[], &other).unwrap();
    let c = srv.client();
    // An answer, not a transport failure, decides (a loaded machine may drop a pooled
    // connection under the client: that attempt says nothing about the server).
    for attempt in 1..=3 {
        match c.get_object().bucket("enc").key("secret").send().await {
            Err(
                e @ (aws_sdk_s3::error::SdkError::DispatchFailure(_) | aws_sdk_s3::error::SdkError::TimeoutError(_)),
            ) if attempt < 3 => {
                eprintln!("attempt {attempt}: no answer, trying again: {e:?}");
            }
            Err(e) => {
                assert_eq!(status(&e), 500, "{e:?}");
                break;
            }
            Ok(g) => {
                assert!(
                    g.body.collect().await.is_err(),
                    "must not return bytes it cannot decrypt"
                );
                break;
            }
        }
    }
    srv.stop();

    // Encryption enabled without a (valid) key is a startup error naming the setting.
    for env in [
        vec![("ENABLE_ENCRYPTION", "true")],
        vec![("ENABLE_ENCRYPTION", "true"), ("ENCRYPTION_KEY", "tooshort")],
    ] {
        let err = Server::start_in(tmp.path(), &[], &env).err().expect("must not start");
        assert!(err.contains("ENCRYPTION_KEY"), "{err}");
    }
}

#[tokio::test]
async fn corrupted_blob_is_an_error_not_wrong_bytes() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("rot").send().await.unwrap();
    let body = data(200_000, 9);
    c.put_object()
        .bucket("rot")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let mut files = Vec::new();
    walk(&srv.dir.join("blobs"), &mut files);
    let mut raw_file = std::fs::read(&files[0]).unwrap();
    let n = raw_file.len();
    raw_file[n / 2] ^= 0x01;
    std::fs::write(&files[0], raw_file).unwrap();
    let r = c.get_object().bucket("rot").key("k").send().await;
    match r {
        Err(_) => {}
        Ok(g) => match g.body.collect().await {
            Err(_) => {}
            Ok(b) => panic!("corrupt object served {} bytes without error", b.into_bytes().len()),
        },
    }
    // A range that avoids the damaged chunk still reads.
    let g = c
        .get_object()
        .bucket("rot")
        .key("k")
        .range("bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(g).await, &body[..100]);
}

#[tokio::test]
async fn sigterm_lets_in_flight_uploads_finish() {
    use aws_sdk_s3::presigning::PresigningConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut srv = Server::start();
    let tmp = srv.take_tmp().unwrap();
    let c = srv.client();
    c.create_bucket().bucket("drain").send().await.unwrap();
    let p = c
        .put_object()
        .bucket("drain")
        .key("slow")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let uri: http::Uri = p.uri().parse().unwrap();
    let mut sock = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 10000\r\n\r\n",
        uri.path_and_query().unwrap(),
        uri.authority().unwrap()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[1u8; 5000]).await.unwrap();
    // The server is serving it (waiting for the rest of the body).
    let metrics = format!("{}/metrics", srv.admin);
    crate::common::cluster::poll_until("the upload in flight", Duration::from_secs(10), || async {
        let (_, _, m) = admin_get(&metrics).await;
        m.lines()
            .any(|l| l.starts_with("ironbucket_s3_requests_in_flight ") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    // SIGTERM while the body is half sent; the stop runs in the background. Once the node stops
    // accepting connections, the stop is under way.
    let s3_addr = srv.s3_addr.clone();
    let stopper = std::thread::spawn(move || srv.stop());
    crate::common::cluster::poll_until("the S3 listener closed", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&s3_addr).await.is_err().then_some(())
    })
    .await;
    sock.write_all(&[2u8; 5000]).await.unwrap();
    let mut resp = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&resp[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(sock);
    assert_eq!(stopper.join().unwrap(), Some(0));
    // After the restart the object is there, whole.
    let srv = Server::start_in(tmp.path(), &[], &[]).unwrap();
    let got = body_bytes(
        srv.client()
            .get_object()
            .bucket("drain")
            .key("slow")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.len(), 10_000);
    assert!(got[..5000].iter().all(|b| *b == 1) && got[5000..].iter().all(|b| *b == 2));
}

/// On SIGTERM a node with a drain period first answers `/health/ready` 404 ("stopping") while
/// it still serves S3 requests (a load balancer's checks take it out meanwhile), and only then
/// closes its ports and exits cleanly.
#[tokio::test]
async fn sigterm_first_reports_stopping_while_still_serving() {
    let mut srv = Server::start_with(&["--shutdown-drain", "3"], &[]);
    let c = srv.client();
    c.create_bucket().bucket("drain").send().await.unwrap();
    let ready = format!("{}/health/ready", srv.admin);
    let (st, _, body) = admin_get(&ready).await;
    assert_eq!(st, 200, "{body}");
    let s3_addr = srv.s3_addr.clone();
    let started = std::time::Instant::now();
    let stopper = std::thread::spawn(move || srv.stop());
    let body = crate::common::cluster::poll_until("/health/ready answering 404", Duration::from_secs(10), || async {
        let (st, _, body) = admin_get(&ready).await;
        (st == 404).then_some(body)
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false, "{v}");
    assert!(v["reasons"][0].as_str().unwrap().contains("stopping"), "{v}");
    // Still serving: a write and a read go through while the load balancers catch up.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the check took too long to tell"
    );
    c.put_object()
        .bucket("drain")
        .key("during")
        .body(ByteStream::from_static(b"still here"))
        .send()
        .await
        .unwrap();
    let got = c.get_object().bucket("drain").key("during").send().await.unwrap();
    assert_eq!(body_bytes(got).await, b"still here");
    assert!(tokio::net::TcpStream::connect(&s3_addr).await.is_ok());
    assert_eq!(stopper.join().unwrap(), Some(0), "a clean exit after the drain");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "stopped before the drain was over: {:?}",
        started.elapsed()
    );
    assert!(tokio::net::TcpStream::connect(&s3_addr).await.is_err());
}

#[tokio::test]
async fn abandoned_multipart_uploads_are_aborted() {
    let srv = Server::start_with(&["--multipart-max-age", "1", "--worker-interval", "1"], &[]);
    let c = srv.client();
    c.create_bucket().bucket("stale").send().await.unwrap();
    let id = c
        .create_multipart_upload()
        .bucket("stale")
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    c.upload_part()
        .bucket("stale")
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c.list_multipart_uploads()
            .bucket("stale")
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "the abandoned upload was not aborted");
    let e = c
        .list_parts()
        .bucket("stale")
        .key("k")
        .upload_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    // Its part blob is removed too.
    let mut files = Vec::new();
    for _ in 0..50 {
        files.clear();
        walk(&srv.dir.join("blobs"), &mut files);
        if files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(files.is_empty(), "{files:?}");
    c.delete_bucket().bucket("stale").send().await.unwrap();
}

/// `FAILPOINTS_FILE`: fault points armed and disarmed while the node runs (the chaos suite's
/// disk faults). With `blob-create` armed a large PUT fails with a 5xx and stores nothing; once
/// the file no longer names it, PUTs succeed again.
#[tokio::test]
async fn fault_points_follow_their_file_while_the_node_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("failpoints");
    let srv = Server::start_with(&[], &[("FAILPOINTS_FILE", file.to_str().unwrap())]);
    let c = srv.client();
    c.create_bucket().bucket("faults").send().await.unwrap();
    let big = data(300_000, 7);
    let put = |key: String| {
        c.put_object()
            .bucket("faults")
            .key(key)
            .body(ByteStream::from(big.clone()))
            .send()
    };
    std::fs::write(&file, "# a read-only disk\nblob-create=return\n").unwrap();
    let mut n = 0;
    let (refused, e) = ironbucket_testkit::poll_until("blob-create armed", Duration::from_secs(5), || {
        n += 1;
        let key = format!("try-{n}");
        let sent = put(key.clone());
        async move { sent.await.err().map(|e| (key, e)) }
    })
    .await;
    assert!(status(&e) >= 500, "{e:?}");
    std::fs::write(&file, "").unwrap();
    ironbucket_testkit::poll_until("blob-create disarmed", Duration::from_secs(5), || {
        let sent = put("stored".to_string());
        async move { sent.await.ok() }
    })
    .await;
    let got = c.get_object().bucket("faults").key("stored").send().await.unwrap();
    assert_eq!(body_bytes(got).await, big);
    // The refused PUT stored nothing.
    let e = c.head_object().bucket("faults").key(&refused).send().await.unwrap_err();
    assert_eq!(status(&e), 404, "{e:?}");
}
