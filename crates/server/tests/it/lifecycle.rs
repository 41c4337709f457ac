//! Lifecycle rules enforced by the worker in fast mode (a "day" lasts one second).

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration,
};
use std::time::{Duration, Instant};

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn lifecycle_rules_are_enforced() {
    let srv = Server::start_with(&["--lifecycle-interval", "1", "--lifecycle-day-secs", "1"], &[]);
    let c = srv.client();

    // Expiration of current objects, filtered by prefix.
    c.create_bucket().bucket("lcb").send().await.unwrap();
    let e = c
        .get_bucket_lifecycle_configuration()
        .bucket("lcb")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchLifecycleConfiguration");
    let rule = LifecycleRule::builder()
        .id("tmp")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("tmp/").build())
        .expiration(LifecycleExpiration::builder().days(1).build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(1)
                .build(),
        )
        .build()
        .unwrap();
    c.put_bucket_lifecycle_configuration()
        .bucket("lcb")
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build().unwrap())
        .send()
        .await
        .unwrap();
    let got = c
        .get_bucket_lifecycle_configuration()
        .bucket("lcb")
        .send()
        .await
        .unwrap();
    assert_eq!(got.rules()[0].id(), Some("tmp"));
    assert_eq!(got.rules()[0].expiration().and_then(|e| e.days()), Some(1));
    for k in ["tmp/a", "keep/b"] {
        c.put_object()
            .bucket("lcb")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let id = c
        .create_multipart_upload()
        .bucket("lcb")
        .key("tmp/upload")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    eventually("tmp/a expired", || async {
        c.head_object().bucket("lcb").key("tmp/a").send().await.is_err()
    })
    .await;
    assert!(
        c.head_object().bucket("lcb").key("keep/b").send().await.is_ok(),
        "other prefixes are kept"
    );
    eventually("the old upload aborted", || async {
        c.list_parts()
            .bucket("lcb")
            .key("tmp/upload")
            .upload_id(&id)
            .send()
            .await
            .is_err()
    })
    .await;

    // Noncurrent versions and then the lone delete marker go away in a versioned bucket.
    c.create_bucket().bucket("lcvb").send().await.unwrap();
    enable_versioning(&c, "lcvb").await;
    let rule = LifecycleRule::builder()
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(1).build())
        .expiration(
            LifecycleExpiration::builder()
                .expired_object_delete_marker(true)
                .build(),
        )
        .build()
        .unwrap();
    c.put_bucket_lifecycle_configuration()
        .bucket("lcvb")
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build().unwrap())
        .send()
        .await
        .unwrap();
    for body in [&b"v1"[..], &b"v2"[..]] {
        c.put_object()
            .bucket("lcvb")
            .key("k")
            .body(ByteStream::from_static(body))
            .send()
            .await
            .unwrap();
    }
    c.put_object()
        .bucket("lcvb")
        .key("live")
        .body(ByteStream::from_static(b"stay"))
        .send()
        .await
        .unwrap();
    c.delete_object().bucket("lcvb").key("k").send().await.unwrap();
    eventually("every version of k removed", || async {
        let l = c
            .list_object_versions()
            .bucket("lcvb")
            .prefix("k")
            .send()
            .await
            .unwrap();
        l.versions().is_empty() && l.delete_markers().is_empty()
    })
    .await;
    assert_eq!(
        body_bytes(c.get_object().bucket("lcvb").key("live").send().await.unwrap()).await,
        b"stay",
        "current versions stay"
    );

    let (_, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
    assert!(
        m.contains("ironbucket_lifecycle_removed{kind=\"expired_objects\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("ironbucket_lifecycle_removed{kind=\"noncurrent_versions\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("ironbucket_lifecycle_removed{kind=\"delete_markers\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("ironbucket_lifecycle_removed{kind=\"aborted_uploads\"} 1"),
        "{m}"
    );

    c.delete_bucket_lifecycle().bucket("lcb").send().await.unwrap();
    let e = c
        .get_bucket_lifecycle_configuration()
        .bucket("lcb")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchLifecycleConfiguration");
}

/// The `expired_objects` figure of one node's `/metrics`.
async fn expired_on(srv: &Server) -> u64 {
    let (_, _, m) = admin_get(&format!("{}/metrics", srv.admin)).await;
    m.lines()
        .find(|l| l.starts_with("ironbucket_lifecycle_removed{kind=\"expired_objects\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// In a cluster each expiration is decided once (by the key's primary replica) and applied as
/// one replicated delete: a versioned bucket gets exactly one delete marker per expired key,
/// the same on every replica, and the nodes' counts add up to the number of keys.
#[tokio::test]
async fn a_cluster_expires_each_object_exactly_once() {
    use crate::common::cluster::*;
    let (nodes, _, _) = cluster_with(
        3,
        &[
            "--replication-factor",
            "3",
            "--lifecycle-interval",
            "1",
            "--lifecycle-day-secs",
            "1",
        ],
    )
    .await;
    let c = nodes[0].client();
    c.create_bucket().bucket("lc-cluster").send().await.unwrap();
    enable_versioning(&c, "lc-cluster").await;
    const N: usize = 24;
    for i in 0..N {
        nodes[i % 3]
            .client()
            .put_object()
            .bucket("lc-cluster")
            .key(format!("exp/{i:02}"))
            .body(ByteStream::from_static(b"short-lived"))
            .send()
            .await
            .unwrap();
    }
    c.put_object()
        .bucket("lc-cluster")
        .key("keep/me")
        .body(ByteStream::from_static(b"kept"))
        .send()
        .await
        .unwrap();
    let rule = LifecycleRule::builder()
        .id("exp")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("exp/").build())
        .expiration(LifecycleExpiration::builder().days(1).build())
        .build()
        .unwrap();
    c.put_bucket_lifecycle_configuration()
        .bucket("lc-cluster")
        .lifecycle_configuration(BucketLifecycleConfiguration::builder().rules(rule).build().unwrap())
        .send()
        .await
        .unwrap();
    // Delete markers as ListObjectVersions shows them, through each node.
    let markers = |srv: &Server| {
        let c = srv.client();
        async move {
            let v = c.list_object_versions().bucket("lc-cluster").send().await.unwrap();
            v.delete_markers()
                .iter()
                .map(|m| m.key().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    eventually("every exp/ key expired", || async {
        markers(&nodes[0]).await.len() >= N
    })
    .await;
    // Each expiration is counted once across the cluster, and later passes find nothing more to
    // do: through three passes (LIFECYCLE_INTERVAL_SECS=1) a second decider, or a pass that
    // expired a key again, would show up as another marker or a higher count.
    let expired_total = || async {
        let mut total = 0;
        for n in &nodes {
            total += expired_on(n).await;
        }
        total
    };
    crate::common::cluster::poll_until("every expiration counted", Duration::from_secs(20), || async {
        (expired_total().await >= N as u64).then_some(())
    })
    .await;
    let want: Vec<String> = (0..N).map(|i| format!("exp/{i:02}")).collect();
    crate::common::cluster::holds_for(
        "one delete marker per expired key, seen the same through every node, each counted once",
        Duration::from_millis(3600),
        || async {
            let mut same = expired_total().await == N as u64;
            for n in &nodes {
                let mut m = markers(n).await;
                m.sort();
                same = same && m == want;
            }
            same
        },
    )
    .await;
    let kept = c.get_object().bucket("lc-cluster").key("keep/me").send().await.unwrap();
    assert_eq!(body_bytes(kept).await, b"kept");
    let gone = c
        .get_object()
        .bucket("lc-cluster")
        .key("exp/00")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&gone), "NoSuchKey");
}
