#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs the shared conformance suite against `LocalStore`, plain and encrypted, plus
//! LocalStore-specific durability checks.

use ironbucket_store::{EncryptionKey, Error, Keyring, LocalConfig, LocalStore, ObjectStore, conformance};
use ironbucket_types::now_millis;
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
    // Stamps an hour in the past, so that the later ones stay behind this node's clock.
    let base = ironbucket_types::now_millis() - 3_600_000;
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

    // A stamp from a clock a minute ahead is refused (the bound is 5 s), and changes nothing.
    let e = s
        .put_object_at(put_req("lww", "k"), one_chunk(b"far"), at(now_millis() + 60_000), 7)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("ahead of this node's clock")),
        "{e:?}"
    );
    assert_eq!(s.clock().refused(), 1);
    // One 4 s ahead is taken in: this node's next own write still comes after it.
    s.put_object_at(put_req("lww", "k"), one_chunk(b"ahead"), at(now_millis() + 4_000), 7)
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

/// Stamped metadata changes (cluster replicas): per field the newest stamp wins whatever the
/// arrival order, two replicas that saw the same changes in different orders agree, a merge
/// from another replica brings a lagging one level, and a read repair copy keeps the stamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamped_metadata_changes_converge_whatever_the_order() {
    use ironbucket_store::{MetaChange, Retention};
    let base = ironbucket_types::now_millis();
    let changes = [
        (MetaChange::Tags(vec![("a".into(), "1".into())]), (at(base + 10), 1)),
        (MetaChange::Tags(vec![("a".into(), "2".into())]), (at(base + 20), 2)),
        (MetaChange::LegalHold(true), (at(base + 15), 1)),
        (
            MetaChange::Retention {
                retention: Some(Retention {
                    mode: "GOVERNANCE".into(),
                    until: base + 86_400_000,
                }),
                bypass: false,
            },
            (at(base + 12), 3),
        ),
        (MetaChange::LegalHold(false), (at(base + 14), 2)),
    ];
    let mut dirs = Vec::new();
    let mut stores = Vec::new();
    for order in [vec![0, 1, 2, 3, 4], vec![4, 3, 2, 1, 0]] {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(cfg(dir.path()), None).unwrap();
        s.create_bucket_with_lock("meta").await.unwrap();
        let (info, _) = s
            .put_object_at(put_req("meta", "k"), one_chunk(b"x"), at(base), 1)
            .await
            .unwrap();
        for i in order {
            let (change, stamp) = changes[i].clone();
            s.change_meta_at("meta", "k", &info.version_id, change, stamp)
                .await
                .unwrap();
        }
        dirs.push(dir);
        stores.push((s, info.version_id));
    }
    let m0 = stores[0].0.version_meta("meta", "k", &stores[0].1).unwrap();
    let m1 = stores[1].0.version_meta("meta", "k", &stores[1].1).unwrap();
    assert_eq!(m0, m1);
    assert_eq!(m0.tags.value, vec![("a".to_string(), "2".to_string())]);
    assert!(m0.legal_hold.value, "the hold at +15 is newer than the release at +14");
    assert!(m0.retention.value.is_some());
    // What the store reports to the S3 layer is the same.
    assert!(stores[0].0.get_object_legal_hold("meta", "k", None).await.unwrap());
    // A replayed change is harmless; an older retention change is dropped even though it would
    // be refused (it is stale news, not a request).
    let (s, vid) = &stores[0];
    s.change_meta_at("meta", "k", vid, changes[1].0.clone(), changes[1].1)
        .await
        .unwrap();
    let unretain = || MetaChange::Retention {
        retention: None,
        bypass: false,
    };
    s.change_meta_at("meta", "k", vid, unretain(), (at(base + 11), 1))
        .await
        .unwrap();
    assert_eq!(s.version_meta("meta", "k", vid).unwrap(), m0);
    // A newer change that weakens the retention without bypass is refused.
    let e = s
        .change_meta_at("meta", "k", vid, unretain(), (at(base + 30), 1))
        .await
        .unwrap_err();
    assert!(matches!(e, ironbucket_store::Error::AccessDenied(_)), "{e:?}");

    // A replica that missed everything is brought level by a merge, and stays level.
    let dir = tempfile::tempdir().unwrap();
    let lag = LocalStore::open(cfg(dir.path()), None).unwrap();
    lag.create_bucket_with_lock("meta").await.unwrap();
    let (info, _) = lag
        .put_object_at(put_req("meta", "k"), one_chunk(b"x"), at(base), 1)
        .await
        .unwrap();
    lag.merge_meta("meta", "k", &info.version_id, m0.clone()).await.unwrap();
    assert_eq!(lag.version_meta("meta", "k", &info.version_id).unwrap(), m0);
    let old = lag.version_meta("meta", "k", &info.version_id).unwrap();
    let mut older = old.clone();
    older.tags.value = vec![];
    older.tags.at = (at(base + 1), 1);
    lag.merge_meta("meta", "k", &info.version_id, older).await.unwrap();
    assert_eq!(lag.version_meta("meta", "k", &info.version_id).unwrap(), m0);
    let news = lag.newest_version("meta", "k", None).unwrap().unwrap();
    assert_eq!(news.meta, m0.stamps().digest());

    // Read repair copies the version with its metadata stamps.
    let dir = tempfile::tempdir().unwrap();
    let fresh = LocalStore::open(cfg(dir.path()), None).unwrap();
    fresh.create_bucket_with_lock("meta").await.unwrap();
    let mut req = put_req("meta", "k");
    req.meta.tags = m0
        .tags
        .value
        .iter()
        .map(|(key, value)| ironbucket_store::Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    req.lock.retention = m0.retention.value.clone();
    req.lock.legal_hold = Some(m0.legal_hold.value);
    let repair = ironbucket_store::Repair {
        stored_as: None,
        meta_stamps: m0.stamps(),
    };
    fresh
        .repair_object_at(req, one_chunk(b"x"), at(base), 1, repair)
        .await
        .unwrap();
    assert_eq!(fresh.version_meta("meta", "k", &info.version_id).unwrap(), m0);
}
