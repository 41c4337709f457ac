//! Several access keys: created, listed, disabled and deleted with ironbucket-cli through the
//! admin API; per-key bucket permissions enforced on S3 requests; secrets never stored in clear.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;

#[tokio::test]
async fn keys_and_bucket_permissions() {
    let srv = Server::start();
    let root = srv.client();
    for b in ["team-a", "team-b"] {
        root.create_bucket().bucket(b).send().await.unwrap();
    }
    root.put_object()
        .bucket("team-a")
        .key("doc")
        .body(ByteStream::from_static(b"a"))
        .send()
        .await
        .unwrap();
    root.put_object()
        .bucket("team-b")
        .key("secret")
        .body(ByteStream::from_static(b"b"))
        .send()
        .await
        .unwrap();

    // The admin API refuses management without the token.
    let (st, _, _) = raw("GET", &format!("{}/keys", srv.admin), &[], vec![]).await;
    assert_eq!(st, 401);

    let (code_, key, err) = cli(&srv, &["key", "create", "--name", "alice"]);
    assert_eq!(code_, 0, "{err}");
    let ak = key["access_key"].as_str().unwrap().to_string();
    let sk = key["secret_key"].as_str().unwrap().to_string();
    let alice = client_for(&srv.s3, &ak, &sk);

    // No permission yet: nothing is visible or readable.
    assert!(alice.list_buckets().send().await.unwrap().buckets().is_empty());
    assert_eq!(
        code(&alice.get_object().bucket("team-a").key("doc").send().await.unwrap_err()),
        "AccessDenied"
    );

    // Read on team-a: reads work, writes do not, team-b stays closed.
    assert_eq!(
        cli(
            &srv,
            &["key", "allow", &ak, "--bucket", "team-a", "--permission", "read"]
        )
        .0,
        0
    );
    assert_eq!(
        body_bytes(alice.get_object().bucket("team-a").key("doc").send().await.unwrap()).await,
        b"a"
    );
    assert_eq!(bucket_names(&alice).await, ["team-a"]);
    assert_eq!(
        code(
            &alice
                .put_object()
                .bucket("team-a")
                .key("new")
                .body(ByteStream::from_static(b"n"))
                .send()
                .await
                .unwrap_err()
        ),
        "AccessDenied"
    );
    assert_eq!(
        code(
            &alice
                .get_object()
                .bucket("team-b")
                .key("secret")
                .send()
                .await
                .unwrap_err()
        ),
        "AccessDenied"
    );
    // A copy needs read on the source too.
    assert_eq!(
        cli(
            &srv,
            &["key", "allow", &ak, "--bucket", "team-a", "--permission", "write"]
        )
        .0,
        0
    );
    alice
        .put_object()
        .bucket("team-a")
        .key("new")
        .body(ByteStream::from_static(b"n"))
        .send()
        .await
        .unwrap();
    let e = alice
        .copy_object()
        .bucket("team-a")
        .key("stolen")
        .copy_source("team-b/secret")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // Write is not owner: bucket settings stay out of reach.
    assert_eq!(
        code(&alice.delete_bucket().bucket("team-a").send().await.unwrap_err()),
        "AccessDenied"
    );

    // A key owns the buckets it creates.
    alice.create_bucket().bucket("alice-own").send().await.unwrap();
    alice
        .put_bucket_versioning()
        .bucket("alice-own")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();

    // Listing shows the key without its secret; the secret is not stored in clear.
    let (_, list, _) = cli(&srv, &["key", "list"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["access_key"] == ak.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["name"], "alice");
    assert_eq!(entry["buckets"]["alice-own"], "owner");
    assert!(entry.get("secret_key").is_none());
    let db = std::fs::read(srv.dir.join("meta.redb")).unwrap();
    assert!(
        !db.windows(sk.len()).any(|w| w == sk.as_bytes()),
        "secret stored in clear"
    );

    // Disabled keys cannot sign; deleted keys are unknown.
    assert_eq!(cli(&srv, &["key", "disable", &ak]).0, 0);
    assert_eq!(
        code(&alice.list_buckets().send().await.unwrap_err()),
        "InvalidAccessKeyId"
    );
    assert_eq!(cli(&srv, &["key", "enable", &ak]).0, 0);
    alice.list_buckets().send().await.unwrap();
    assert_eq!(cli(&srv, &["key", "delete", &ak]).0, 0);
    assert_eq!(
        code(&alice.list_buckets().send().await.unwrap_err()),
        "InvalidAccessKeyId"
    );
    let (c, _, err) = cli(&srv, &["key", "delete", &ak]);
    assert_eq!(c, 1);
    assert!(err.contains("404"), "{err}");
}

/// Security review finding (high): a key's bucket permission survived DeleteBucket, so a new
/// bucket of the same name, created by someone else, was open to the old key.
#[tokio::test]
async fn a_deleted_bucket_takes_its_grants_with_it() {
    let srv = Server::start();
    let root = srv.client();
    let new_key = |name: &str| {
        let (rc, key, err) = cli(&srv, &["key", "create", "--name", name]);
        assert_eq!(rc, 0, "{err}");
        (
            key["access_key"].as_str().unwrap().to_string(),
            key["secret_key"].as_str().unwrap().to_string(),
        )
    };
    let (old_ak, old_sk) = new_key("old-tenant");
    let (new_ak, new_sk) = new_key("new-tenant");
    root.create_bucket().bucket("reused").send().await.unwrap();
    let rc = cli(
        &srv,
        &["key", "allow", &old_ak, "--bucket", "reused", "--permission", "write"],
    )
    .0;
    assert_eq!(rc, 0);
    root.delete_bucket().bucket("reused").send().await.unwrap();

    // Someone else creates a bucket of the same name and stores a secret in it.
    let tenant = client_for(&srv.s3, &new_ak, &new_sk);
    tenant.create_bucket().bucket("reused").send().await.unwrap();
    tenant
        .put_object()
        .bucket("reused")
        .key("payroll")
        .body(ByteStream::from_static(b"confidential"))
        .send()
        .await
        .unwrap();

    let old = client_for(&srv.s3, &old_ak, &old_sk);
    let e = old
        .get_object()
        .bucket("reused")
        .key("payroll")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = old
        .put_object()
        .bucket("reused")
        .key("planted")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    assert!(bucket_names(&old).await.is_empty());
    let (_, list, _) = cli(&srv, &["key", "list"]);
    let text = list.to_string();
    assert!(text.contains(&old_ak), "{text}");
    let old_entry = list
        .as_array()
        .or_else(|| list["keys"].as_array())
        .and_then(|a| a.iter().find(|k| k["access_key"] == old_ak.as_str()).cloned())
        .unwrap_or_default();
    assert!(old_entry["buckets"].get("reused").is_none(), "{old_entry}");
}
