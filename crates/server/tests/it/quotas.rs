//! Bucket quotas (refused before data is stored) and per-bucket usage through ironbucket-cli.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;

#[tokio::test]
async fn quotas_and_usage() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("quota").send().await.unwrap();
    let (code_, _, err) = cli(
        &srv,
        &["bucket", "quota", "quota", "--max-objects", "2", "--max-bytes", "100"],
    );
    assert_eq!(code_, 0, "{err}");
    c.put_object()
        .bucket("quota")
        .key("a")
        .body(ByteStream::from(vec![1u8; 40]))
        .send()
        .await
        .unwrap();
    c.put_object()
        .bucket("quota")
        .key("b")
        .body(ByteStream::from(vec![1u8; 40]))
        .send()
        .await
        .unwrap();
    // A third object, and a body that does not fit: 403 before anything is stored.
    let e = c
        .put_object()
        .bucket("quota")
        .key("c")
        .body(ByteStream::from(vec![1u8; 1]))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("QuotaExceeded", 403));
    let e = c
        .put_object()
        .bucket("quota")
        .key("a")
        .body(ByteStream::from(vec![1u8; 70]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "QuotaExceeded");
    // Overwriting within the limits is fine; deleting frees room.
    c.put_object()
        .bucket("quota")
        .key("a")
        .body(ByteStream::from(vec![2u8; 50]))
        .send()
        .await
        .unwrap();
    c.delete_object().bucket("quota").key("b").send().await.unwrap();
    c.put_object()
        .bucket("quota")
        .key("c")
        .body(ByteStream::from(vec![3u8; 10]))
        .send()
        .await
        .unwrap();

    // Usage: objects, bytes, quota and this month's requests (counted in the background).
    let info = crate::common::cluster::poll_until("the requests counted", Duration::from_secs(10), || async {
        let (code_, info, err) = cli(&srv, &["bucket", "info", "quota"]);
        assert_eq!(code_, 0, "{err}");
        let counted: u64 = info["requests_by_month"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        (counted >= 6).then_some(info)
    })
    .await;
    assert_eq!(info["objects"], 2);
    assert_eq!(info["bytes"], 60);
    assert_eq!(info["quota"]["max_objects"], 2);
    let requests: u64 = info["requests_by_month"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(requests >= 6, "{info}");
    assert!(
        !srv.dir.join("blobs").exists() || std::fs::read_dir(srv.dir.join("blobs")).unwrap().count() == 0,
        "small bodies are inline; nothing refused was stored"
    );

    // Removing the quota lifts the limit.
    assert_eq!(cli(&srv, &["bucket", "quota", "quota", "--clear"]).0, 0);
    c.put_object()
        .bucket("quota")
        .key("d")
        .body(ByteStream::from(vec![1u8; 500]))
        .send()
        .await
        .unwrap();
    let (c2, _, err) = cli(&srv, &["bucket", "info", "missing-bucket"]);
    assert_eq!(c2, 1);
    assert!(err.contains("404"), "{err}");
}
