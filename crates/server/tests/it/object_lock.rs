//! Object lock: lock-enabled buckets, default retention, governance and compliance retention,
//! legal holds, and that a locked version cannot be deleted before its date.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockLegalHold,
    ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode, ObjectLockRule,
    VersioningConfiguration,
};

#[tokio::test]
async fn locked_versions_cannot_be_deleted() {
    let srv = Server::start();
    let c = srv.client();
    // Lock on a normal bucket: not configured.
    c.create_bucket().bucket("plain").send().await.unwrap();
    let e = c
        .get_object_lock_configuration()
        .bucket("plain")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ObjectLockConfigurationNotFoundError");
    let e = c
        .put_object()
        .bucket("plain")
        .key("k")
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(in_secs(3600))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);

    c.create_bucket()
        .bucket("vault")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.get_bucket_versioning().bucket("vault").send().await.unwrap().status(),
        Some(&BucketVersioningStatus::Enabled)
    );
    let e = c
        .put_bucket_versioning()
        .bucket("vault")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidBucketState");

    // Compliance retention: nobody deletes the version before its date, bypass or not.
    let p = c
        .put_object()
        .bucket("vault")
        .key("contract.pdf")
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(in_secs(3600))
        .body(ByteStream::from_static(b"signed"))
        .send()
        .await
        .unwrap();
    let v = p.version_id().unwrap().to_string();
    let h = c
        .head_object()
        .bucket("vault")
        .key("contract.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(h.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let e = c
        .delete_object()
        .bucket("vault")
        .key("contract.pdf")
        .version_id(&v)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = c
        .delete_object()
        .bucket("vault")
        .key("contract.pdf")
        .version_id(&v)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // Shortening compliance retention is refused; extending is allowed.
    let shorter = ObjectLockRetention::builder()
        .mode(ObjectLockRetentionMode::Compliance)
        .retain_until_date(in_secs(60))
        .build();
    let e = c
        .put_object_retention()
        .bucket("vault")
        .key("contract.pdf")
        .version_id(&v)
        .retention(shorter)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let longer = ObjectLockRetention::builder()
        .mode(ObjectLockRetentionMode::Compliance)
        .retain_until_date(in_secs(7200))
        .build();
    c.put_object_retention()
        .bucket("vault")
        .key("contract.pdf")
        .version_id(&v)
        .retention(longer)
        .send()
        .await
        .unwrap();
    let r = c
        .get_object_retention()
        .bucket("vault")
        .key("contract.pdf")
        .version_id(&v)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.retention().and_then(|r| r.mode()),
        Some(&ObjectLockRetentionMode::Compliance)
    );
    // A delete without a version id only adds a delete marker; the locked version stays.
    let d = c
        .delete_object()
        .bucket("vault")
        .key("contract.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    let g = c
        .get_object()
        .bucket("vault")
        .key("contract.pdf")
        .version_id(&v)
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(g).await, b"signed");

    // Governance retention yields only to the bypass header.
    let p = c
        .put_object()
        .bucket("vault")
        .key("draft")
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(in_secs(3600))
        .body(ByteStream::from_static(b"d"))
        .send()
        .await
        .unwrap();
    let gv = p.version_id().unwrap().to_string();
    let e = c
        .delete_object()
        .bucket("vault")
        .key("draft")
        .version_id(&gv)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    c.delete_object()
        .bucket("vault")
        .key("draft")
        .version_id(&gv)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();

    // Legal hold blocks deletion until it is released.
    let p = c
        .put_object()
        .bucket("vault")
        .key("evidence")
        .body(ByteStream::from_static(b"e"))
        .send()
        .await
        .unwrap();
    let ev = p.version_id().unwrap().to_string();
    let e = c
        .get_object_retention()
        .bucket("vault")
        .key("evidence")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchObjectLockConfiguration");
    let on = ObjectLockLegalHold::builder()
        .status(ObjectLockLegalHoldStatus::On)
        .build();
    c.put_object_legal_hold()
        .bucket("vault")
        .key("evidence")
        .legal_hold(on)
        .send()
        .await
        .unwrap();
    let h = c
        .get_object_legal_hold()
        .bucket("vault")
        .key("evidence")
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.legal_hold().and_then(|h| h.status()),
        Some(&ObjectLockLegalHoldStatus::On)
    );
    let e = c
        .delete_object()
        .bucket("vault")
        .key("evidence")
        .version_id(&ev)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let off = ObjectLockLegalHold::builder()
        .status(ObjectLockLegalHoldStatus::Off)
        .build();
    c.put_object_legal_hold()
        .bucket("vault")
        .key("evidence")
        .version_id(&ev)
        .legal_hold(off)
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("vault")
        .key("evidence")
        .version_id(&ev)
        .send()
        .await
        .unwrap();

    // Default retention applies to new versions.
    let cfg = ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(
            ObjectLockRule::builder()
                .default_retention(
                    DefaultRetention::builder()
                        .mode(ObjectLockRetentionMode::Governance)
                        .days(1)
                        .build(),
                )
                .build(),
        )
        .build();
    c.put_object_lock_configuration()
        .bucket("vault")
        .object_lock_configuration(cfg)
        .send()
        .await
        .unwrap();
    let got = c.get_object_lock_configuration().bucket("vault").send().await.unwrap();
    let d = got
        .object_lock_configuration()
        .and_then(|c| c.rule())
        .and_then(|r| r.default_retention())
        .unwrap();
    assert_eq!(
        (d.mode(), d.days()),
        (Some(&ObjectLockRetentionMode::Governance), Some(1))
    );
    let p = c
        .put_object()
        .bucket("vault")
        .key("auto")
        .body(ByteStream::from_static(b"a"))
        .send()
        .await
        .unwrap();
    let r = c
        .get_object_retention()
        .bucket("vault")
        .key("auto")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.retention().and_then(|r| r.mode()),
        Some(&ObjectLockRetentionMode::Governance)
    );
    let e = c
        .delete_object()
        .bucket("vault")
        .key("auto")
        .version_id(p.version_id().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
}

/// Security review finding (medium): any key with write access bypassed governance retention
/// (`s3:BypassGovernanceRetention` was not checked) and lifted legal holds. Both need the
/// bucket's owner permission (or a policy granting the action); a writer gets AccessDenied.
#[tokio::test]
async fn writers_cannot_bypass_governance_or_lift_legal_holds() {
    let srv = Server::start();
    let root = srv.client();
    root.create_bucket()
        .bucket("guarded")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let (rc, key, err) = cli(&srv, &["key", "create", "--name", "writer"]);
    assert_eq!(rc, 0, "{err}");
    let (ak, sk) = (key["access_key"].as_str().unwrap(), key["secret_key"].as_str().unwrap());
    assert_eq!(
        cli(
            &srv,
            &["key", "allow", ak, "--bucket", "guarded", "--permission", "write"]
        )
        .0,
        0
    );
    let writer = client_for(&srv.s3, ak, sk);

    let p = writer
        .put_object()
        .bucket("guarded")
        .key("ledger")
        .object_lock_mode(ObjectLockMode::Governance)
        .object_lock_retain_until_date(in_secs(3600))
        .body(ByteStream::from_static(b"l"))
        .send()
        .await
        .unwrap();
    let v = p.version_id().unwrap().to_string();
    let e = writer
        .delete_object()
        .bucket("guarded")
        .key("ledger")
        .version_id(&v)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = writer
        .put_object_retention()
        .bucket("guarded")
        .key("ledger")
        .version_id(&v)
        .bypass_governance_retention(true)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(in_secs(10))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    let held = writer
        .put_object()
        .bucket("guarded")
        .key("evidence")
        .object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On)
        .body(ByteStream::from_static(b"e"))
        .send()
        .await
        .unwrap();
    let hv = held.version_id().unwrap().to_string();
    let off = ObjectLockLegalHold::builder()
        .status(ObjectLockLegalHoldStatus::Off)
        .build();
    let e = writer
        .put_object_legal_hold()
        .bucket("guarded")
        .key("evidence")
        .version_id(&hv)
        .legal_hold(off.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    // Both versions are still there; the bucket owner (root) may do both.
    for (k, v) in [("ledger", &v), ("evidence", &hv)] {
        root.head_object()
            .bucket("guarded")
            .key(k)
            .version_id(v.as_str())
            .send()
            .await
            .unwrap();
    }
    root.put_object_legal_hold()
        .bucket("guarded")
        .key("evidence")
        .version_id(&hv)
        .legal_hold(off)
        .send()
        .await
        .unwrap();
    root.delete_object()
        .bucket("guarded")
        .key("ledger")
        .version_id(&v)
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
}
