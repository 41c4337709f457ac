#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs the shared conformance suite against `LocalStore`, plain and encrypted, plus
//! LocalStore-specific durability checks.

use ironbucket_store::{EncryptionKey, Keyring, LocalConfig, LocalStore, ObjectStore, conformance};
use std::sync::Arc;

fn cfg(dir: &std::path::Path) -> LocalConfig {
    let mut c = LocalConfig::new(dir);
    c.storage.fsync = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_plain() {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn ObjectStore> = LocalStore::open(cfg(dir.path()), None).unwrap();
    conformance::run_all(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keyring::new(EncryptionKey::from_bytes([3; 32]), vec![]);
    let s: Arc<dyn ObjectStore> = LocalStore::open(cfg(dir.path()), Some(keys)).unwrap();
    conformance::run_all(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_without_inline_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.inline_max = 0;
    let s: Arc<dyn ObjectStore> = LocalStore::open(c, None).unwrap();
    conformance::run_all(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_are_inline_and_leave_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(cfg(dir.path()), None).unwrap();
    s.create_bucket("inl").await.unwrap();
    let body = || -> ironbucket_store::ByteStream {
        Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from(vec![5u8; 1000]))]))
    };
    let mut req = ironbucket_store::PutObject {
        bucket: "inl".into(),
        key: "k".into(),
        ..Default::default()
    };
    req.checks.content_length = Some(1000);
    s.put_object(req, body()).await.unwrap();
    assert_eq!(
        walk(&dir.path().join("blobs")),
        0,
        "a 1000-byte body with a known length is stored inline"
    );
    let out = s
        .get_object(ironbucket_store::GetObject {
            bucket: "inl".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(out.body).await.unwrap();
    assert_eq!(got.concat(), vec![5u8; 1000]);
    // Without a declared length the body goes to a file.
    let req = ironbucket_store::PutObject {
        bucket: "inl".into(),
        key: "k2".into(),
        ..Default::default()
    };
    s.put_object(req, body()).await.unwrap();
    assert_eq!(walk(&dir.path().join("blobs")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_collected_after_overwrite_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.worker_interval = std::time::Duration::from_millis(50);
    // Force blob files (small bodies would otherwise be stored inline).
    c.inline_max = 0;
    let s = LocalStore::open(c, None).unwrap();
    s.create_bucket("gcb").await.unwrap();
    let put = || ironbucket_store::PutObject {
        bucket: "gcb".into(),
        key: "k".into(),
        ..Default::default()
    };
    let body = || -> ironbucket_store::ByteStream {
        Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from_static(b"data"))]))
    };
    for _ in 0..5 {
        s.put_object(put(), body()).await.unwrap();
    }
    let count_blobs = || walk(&dir.path().join("blobs"));
    for _ in 0..100 {
        if count_blobs() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(count_blobs(), 1);
    s.delete_object("gcb", "k", None, false).await.unwrap();
    for _ in 0..100 {
        if count_blobs() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(count_blobs(), 0);
    let u = s.usage().await.unwrap();
    assert_eq!((u.objects, u.bytes), (0, 0));
}

fn walk(p: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
        .sum()
}

fn one_chunk(data: &[u8]) -> ironbucket_store::ByteStream {
    Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::copy_from_slice(data))]))
}

fn put_req(bucket: &str, key: &str) -> ironbucket_store::PutObject {
    ironbucket_store::PutObject {
        bucket: bucket.into(),
        key: key.into(),
        ..Default::default()
    }
}

async fn current_body(s: &LocalStore, bucket: &str, key: &str) -> Vec<u8> {
    let out = s
        .get_object(ironbucket_store::GetObject {
            bucket: bucket.into(),
            key: key.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(out.body).await.unwrap();
    got.concat()
}

fn at(ms: u64) -> ironbucket_types::Hlc {
    ironbucket_types::Hlc {
        physical: ms,
        logical: 0,
    }
}

/// Writes stamped by a cluster coordinator: the newest stamp wins whatever the arrival order, a
/// retried write is harmless, versioned buckets keep late writes as noncurrent versions, and the
/// node's own clock never issues a stamp below one it has stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamped_writes_last_writer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(cfg(dir.path()), None).unwrap();
    s.create_bucket("lww").await.unwrap();
    let base = ironbucket_types::now_millis();
    let (_, stored) = s
        .put_object_at(put_req("lww", "k"), one_chunk(b"two"), at(base + 2), 7)
        .await
        .unwrap();
    assert!(stored);
    let (_, stored) = s
        .put_object_at(put_req("lww", "k"), one_chunk(b"one"), at(base + 1), 7)
        .await
        .unwrap();
    assert!(!stored, "an older write arriving late must not replace the newer one");
    assert_eq!(current_body(&s, "lww", "k").await, b"two");
    let (_, stored) = s
        .put_object_at(put_req("lww", "k"), one_chunk(b"two"), at(base + 2), 7)
        .await
        .unwrap();
    assert!(stored, "the same write delivered twice");
    let versions = s.stored_versions("lww", "k").unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0].hlc, format!("{}.0@7", base + 2));
    // The superseded write left nothing behind: one object counted.
    assert_eq!(s.usage().await.unwrap().objects, 1);

    // A stamp from a clock a minute ahead: this node's next own write still comes after it.
    s.put_object_at(put_req("lww", "k"), one_chunk(b"ahead"), at(base + 60_000), 7)
        .await
        .unwrap();
    s.put_object(put_req("lww", "k"), one_chunk(b"local")).await.unwrap();
    assert_eq!(current_body(&s, "lww", "k").await, b"local");

    // Versioned: both writes stay, ordered and named by their stamps; the newest is current.
    s.create_bucket("lwwv").await.unwrap();
    s.put_bucket_versioning("lwwv", "Enabled").await.unwrap();
    let (new, _) = s
        .put_object_at(put_req("lwwv", "k"), one_chunk(b"new"), at(base + 200_000), 7)
        .await
        .unwrap();
    let (old, stored) = s
        .put_object_at(put_req("lwwv", "k"), one_chunk(b"old"), at(base + 100_000), 7)
        .await
        .unwrap();
    assert!(stored);
    assert_eq!(current_body(&s, "lwwv", "k").await, b"new");
    let versions = s.stored_versions("lwwv", "k").unwrap();
    let ids: Vec<&str> = versions.iter().map(|v| v.version_id.as_str()).collect();
    assert_eq!(ids, [new.version_id.as_str(), old.version_id.as_str()]);
    // The same stamp gives the same version id on every replica.
    let dir2 = tempfile::tempdir().unwrap();
    let other = LocalStore::open(cfg(dir2.path()), None).unwrap();
    other.create_bucket("lwwv").await.unwrap();
    other.put_bucket_versioning("lwwv", "Enabled").await.unwrap();
    let (again, _) = other
        .put_object_at(put_req("lwwv", "k"), one_chunk(b"new"), at(base + 200_000), 7)
        .await
        .unwrap();
    assert_eq!(again.version_id, new.version_id);

    // A late write after a delete marker stays hidden; a write delivered twice counts once.
    s.put_object_at(put_req("lwwv", "gone"), one_chunk(b"x"), at(base + 400_000), 7)
        .await
        .unwrap();
    s.delete_object("lwwv", "gone", None, false).await.unwrap();
    let before = s.usage().await.unwrap();
    let (_, stored) = s
        .put_object_at(put_req("lwwv", "gone"), one_chunk(b"late"), at(base + 1), 7)
        .await
        .unwrap();
    assert!(stored, "kept as a noncurrent version");
    let e = s
        .get_object(ironbucket_store::GetObject {
            bucket: "lwwv".into(),
            key: "gone".into(),
            ..Default::default()
        })
        .await
        .err()
        .expect("the delete marker is still the newest version");
    assert!(
        matches!(
            e,
            ironbucket_store::Error::NoSuchKey | ironbucket_store::Error::DeleteMarker { .. }
        ),
        "{e:?}"
    );
    let (_, stored) = s
        .put_object_at(put_req("lwwv", "gone"), one_chunk(b"late"), at(base + 1), 7)
        .await
        .unwrap();
    assert!(!stored, "the same write again");
    let after = s.usage().await.unwrap();
    assert_eq!(after.objects, before.objects + 1);
    assert_eq!(after.bytes, before.bytes + 4);

    // Two coordinators stamping the same HLC time: the higher origin wins on every replica,
    // whichever arrives first, and in a versioned bucket both versions are kept apart.
    let t = at(base + 300_000);
    for (first, second) in [(3u64, 9u64), (9, 3)] {
        let d = tempfile::tempdir().unwrap();
        let r = LocalStore::open(cfg(d.path()), None).unwrap();
        r.create_bucket("tie").await.unwrap();
        r.put_object_at(
            put_req("tie", "k"),
            one_chunk(format!("from {first}").as_bytes()),
            t,
            first,
        )
        .await
        .unwrap();
        r.put_object_at(
            put_req("tie", "k"),
            one_chunk(format!("from {second}").as_bytes()),
            t,
            second,
        )
        .await
        .unwrap();
        assert_eq!(current_body(&r, "tie", "k").await, b"from 9");
    }
    s.put_object_at(put_req("lwwv", "t"), one_chunk(b"a"), t, 3)
        .await
        .unwrap();
    s.put_object_at(put_req("lwwv", "t"), one_chunk(b"b"), t, 9)
        .await
        .unwrap();
    assert_eq!(s.stored_versions("lwwv", "t").unwrap().len(), 2);
    assert_eq!(current_body(&s, "lwwv", "t").await, b"b");
}

/// Stamped deletes in a bucket that never had versioning leave a tombstone: a late write older
/// than the delete loses, ListObjectVersions shows nothing, the bucket counts as empty, a newer
/// write replaces the tombstone, and tombstones past the grace period are collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamped_deletes_leave_tombstones_until_their_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.tombstone_grace = std::time::Duration::from_secs(3600);
    let s = LocalStore::open(c, None).unwrap();
    s.create_bucket("tomb").await.unwrap();
    let base = ironbucket_types::now_millis();
    s.put_object_at(put_req("tomb", "k"), one_chunk(b"v1"), at(base + 1), 5)
        .await
        .unwrap();
    let d = s
        .delete_object_at("tomb", "k", None, false, at(base + 2), 5)
        .await
        .unwrap();
    assert!(!d.delete_marker && d.version_id.is_none(), "{d:?}");
    // The same delete again is harmless; a write older than it is dropped.
    s.delete_object_at("tomb", "k", None, false, at(base + 2), 5)
        .await
        .unwrap();
    let (_, stored) = s
        .put_object_at(put_req("tomb", "k"), one_chunk(b"late"), at(base + 1), 9)
        .await
        .unwrap();
    assert!(!stored);
    let held = s.newest_version("tomb", "k", None).unwrap().unwrap();
    assert!(held.delete_marker);
    let err = s
        .head_object(ironbucket_store::GetObject {
            bucket: "tomb".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err, ironbucket_store::Error::NoSuchKey);
    let listed = s.list_object_versions("tomb", Default::default()).await.unwrap();
    assert!(listed.versions.is_empty(), "{listed:?}");
    assert!(!s.bucket_in_use("tomb").await.unwrap());
    // Within the grace period the tombstone stays.
    assert_eq!(s.collect_tombstones().await.unwrap(), 0);
    assert_eq!(s.stored_versions("tomb", "k").unwrap().len(), 1);
    // A newer write replaces it (one version, the object).
    s.put_object_at(put_req("tomb", "k"), one_chunk(b"v3"), at(base + 3), 5)
        .await
        .unwrap();
    assert_eq!(current_body(&s, "tomb", "k").await, b"v3");
    assert_eq!(s.stored_versions("tomb", "k").unwrap().len(), 1);

    // Past the grace period (0 s here) tombstones are removed; objects stay.
    let dir2 = tempfile::tempdir().unwrap();
    let mut c = cfg(dir2.path());
    c.tombstone_grace = std::time::Duration::ZERO;
    let s = LocalStore::open(c, None).unwrap();
    s.create_bucket("tomb").await.unwrap();
    let old = base.saturating_sub(60_000);
    s.put_object_at(put_req("tomb", "k"), one_chunk(b"kept"), at(old), 5)
        .await
        .unwrap();
    s.delete_object_at("tomb", "gone", None, false, at(old), 5)
        .await
        .unwrap();
    assert_eq!(s.stored_versions("tomb", "gone").unwrap().len(), 1);
    assert_eq!(s.collect_tombstones().await.unwrap(), 1);
    assert!(s.stored_versions("tomb", "gone").unwrap().is_empty());
    assert_eq!(current_body(&s, "tomb", "k").await, b"kept");
}

/// Deleting a version by id leaves a version tombstone: a late copy of that version is dropped,
/// the node reports the deletion as its newest news about the key, and the grace period ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_deletes_leave_version_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.tombstone_grace = std::time::Duration::ZERO;
    let s = LocalStore::open(c, None).unwrap();
    s.create_bucket("vtomb").await.unwrap();
    s.put_bucket_versioning("vtomb", "Enabled").await.unwrap();
    let base = ironbucket_types::now_millis().saturating_sub(60_000);
    let (first, _) = s
        .put_object_at(put_req("vtomb", "k"), one_chunk(b"first"), at(base + 1), 4)
        .await
        .unwrap();
    let (second, _) = s
        .put_object_at(put_req("vtomb", "k"), one_chunk(b"second"), at(base + 2), 4)
        .await
        .unwrap();
    s.delete_object_at("vtomb", "k", Some(&second.version_id), false, at(base + 3), 4)
        .await
        .unwrap();
    // A late copy of the deleted version (read repair from a stale replica) is dropped.
    let (_, stored) = s
        .put_object_at(put_req("vtomb", "k"), one_chunk(b"second"), at(base + 2), 4)
        .await
        .unwrap();
    assert!(!stored);
    assert_eq!(current_body(&s, "vtomb", "k").await, b"first");
    let news = s.newest_version("vtomb", "k", None).unwrap().unwrap();
    assert!(news.purged && news.version_id == second.version_id, "{news:?}");
    let news = s
        .newest_version("vtomb", "k", Some(&second.version_id))
        .unwrap()
        .unwrap();
    assert!(news.purged);
    let held = s
        .newest_version("vtomb", "k", Some(&first.version_id))
        .unwrap()
        .unwrap();
    assert!(!held.purged && held.version_id == first.version_id);
    // Past the grace period the version tombstone goes.
    assert_eq!(s.collect_tombstones().await.unwrap(), 1);
    let news = s.newest_version("vtomb", "k", None).unwrap().unwrap();
    assert!(!news.purged && news.version_id == first.version_id);
}
