use super::*;
use ironbucket_types::Hlc;

fn rec(size: u64) -> ObjectRecord {
    ObjectRecord {
        version_id: "null".into(),
        delete_marker: false,
        hlc: Hlc::default(),
        origin: 0,
        size,
        etag: "e".into(),
        last_modified: 0,
        content: ContentHeaders::default(),
        user_meta: Default::default(),
        checksums: Default::default(),
        tags: vec![],
        segments: vec![Segment {
            blob: format!("b{size}"),
            size,
        }],
        parts_count: None,
        retention: None,
        legal_hold: false,
        key_id: None,
        acl: None,
        sse_c: None,
        meta_stamps: Default::default(),
    }
}

async fn store_with(keys: &[&str]) -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let m = MetaStore::open(&dir.path().join("meta.redb"), false).unwrap();
    let keys: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    m.write(move |t| -> Result<()> {
        t.put_bucket(&BucketRecord {
            name: "b".into(),
            created: 1,
            tags: None,
            versioning: None,
            cors: None,
            lifecycle: None,
            quota: None,
            encryption: None,
            object_lock: None,
            ..Default::default()
        })?;
        t.put_bucket(&BucketRecord {
            name: "c".into(),
            created: 1,
            tags: None,
            versioning: None,
            cors: None,
            lifecycle: None,
            quota: None,
            encryption: None,
            object_lock: None,
            ..Default::default()
        })?;
        for k in &keys {
            t.put_object("b", k, &rec(1))?;
        }
        t.put_object("c", "zzz", &rec(1))?;
        Ok(())
    })
    .await
    .unwrap();
    (dir, m)
}

fn q(prefix: &str, delim: Option<&str>, marker: Option<&str>, max: usize) -> ListQuery {
    ListQuery {
        prefix: prefix.into(),
        delimiter: delim.map(Into::into),
        marker: marker.map(Into::into),
        max_keys: max,
    }
}

fn names(p: &ListPage) -> (Vec<&str>, Vec<&str>) {
    (
        p.objects.iter().map(|(k, _)| k.as_str()).collect(),
        p.common_prefixes.iter().map(|s| s.as_str()).collect(),
    )
}

#[tokio::test]
async fn list_with_prefix_delimiter_and_markers() {
    let (_d, m) = store_with(&["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d", "é", "\u{1F600}"]).await;
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", None, None, 1000))
        .unwrap();
    assert_eq!(
        names(&p).0,
        ["a/1", "a/2", "a/b/3", "b", "c/1", "c/2", "d", "é", "\u{1F600}"]
    );
    assert!(!p.truncated);

    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", Some("/"), None, 1000))
        .unwrap();
    assert_eq!(names(&p), (vec!["b", "d", "é", "\u{1F600}"], vec!["a/", "c/"]));

    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("a/", Some("/"), None, 1000))
        .unwrap();
    assert_eq!(names(&p), (vec!["a/1", "a/2"], vec!["a/b/"]));

    // Paging with delimiter: each common prefix counts as one entry.
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", Some("/"), None, 2))
        .unwrap();
    assert_eq!(names(&p), (vec!["b"], vec!["a/"]));
    assert!(p.truncated);
    assert_eq!(p.next_marker.as_deref(), Some("b"));
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", Some("/"), Some("b"), 2))
        .unwrap();
    assert_eq!(names(&p), (vec!["d"], vec!["c/"]));
    assert!(p.truncated);
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", Some("/"), Some("d"), 2))
        .unwrap();
    assert_eq!(names(&p), (vec!["é", "\u{1F600}"], vec![]));
    assert!(!p.truncated, "exactly max keys left: not truncated");

    // A marker equal to a common prefix skips that prefix.
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", Some("/"), Some("a/"), 1))
        .unwrap();
    assert_eq!(names(&p), (vec!["b"], vec![]));

    // Marker before the prefix, and max-keys 0.
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("c/", None, Some("a"), 1000))
        .unwrap();
    assert_eq!(names(&p).0, ["c/1", "c/2"]);
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", None, None, 0))
        .unwrap();
    assert!(p.objects.is_empty() && !p.truncated);

    // Other buckets never leak in.
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", None, Some("\u{1F600}"), 1000))
        .unwrap();
    assert!(p.objects.is_empty());
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_errors_stay_private() {
    let (_d, m) = store_with(&[]).await;
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            m.write(move |t| -> Result<()> {
                if i % 10 == 0 {
                    return Err(Error::Db("refused".into()));
                }
                t.put_object("b", &format!("k{i:03}"), &rec(i))?;
                t.add_stats("b", 1, i as i64)
            })
            .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 180);
    let p = m
        .blocking_scanner()
        .unwrap()
        .list_objects("b", &q("", None, None, 1000))
        .unwrap();
    assert_eq!(p.objects.len(), 180);
    assert_eq!(m.stats().unwrap().objects, 180);
}

#[tokio::test]
async fn uploads_and_parts() {
    let (_d, m) = store_with(&[]).await;
    m.write(|t| -> Result<()> {
        for (key, id) in [("x", "u2"), ("x", "u1"), ("y/z", "u3")] {
            t.put_upload(
                "b",
                &UploadRecord {
                    upload_id: id.into(),
                    key: key.into(),
                    initiated: 5,
                    content: Default::default(),
                    user_meta: Default::default(),
                    tags: vec![],
                    checksum_algorithm: None,
                    acl: None,
                    sse_c: None,
                },
            )?;
        }
        for n in [3, 1, 2] {
            t.put_part(
                "u1",
                &PartRecord {
                    part_number: n,
                    etag: "e".into(),
                    size: 1,
                    blob: "b".into(),
                    last_modified: 0,
                    checksums: Default::default(),
                },
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let parts = m.blocking_scanner().unwrap().list_parts("u1").unwrap();
    assert_eq!(parts.iter().map(|p| p.part_number).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(m.blocking_scanner().unwrap().list_parts("u2").unwrap().is_empty());
    let page = m
        .blocking_scanner()
        .unwrap()
        .list_uploads(
            "b",
            &UploadListQuery {
                max_uploads: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        page.uploads.iter().map(|u| u.upload_id.as_str()).collect::<Vec<_>>(),
        ["u1", "u2", "u3"]
    );
    let page = m
        .blocking_scanner()
        .unwrap()
        .list_uploads(
            "b",
            &UploadListQuery {
                max_uploads: 1,
                key_marker: Some("x".into()),
                upload_id_marker: Some("u1".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.uploads[0].upload_id, "u2");
    assert!(page.truncated);
    let page = m
        .blocking_scanner()
        .unwrap()
        .list_uploads(
            "b",
            &UploadListQuery {
                max_uploads: 10,
                delimiter: Some("/".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.common_prefixes, ["y/"]);
    assert_eq!(
        m.blocking_scanner().unwrap().uploads_older_than(6, 10).unwrap().len(),
        3
    );
    m.write(|t| -> Result<()> { t.delete_parts("u1") }).await.unwrap();
    assert!(m.blocking_scanner().unwrap().list_parts("u1").unwrap().is_empty());
}

#[test]
fn successor() {
    assert_eq!(list::prefix_successor(b"a/"), Some(b"a0".to_vec()));
    assert_eq!(list::prefix_successor(&[b'a', 0xFF]), Some(b"b".to_vec()));
    assert_eq!(list::prefix_successor(&[0xFF, 0xFF]), None);
}

#[test]
fn meta_stamp_digests_tell_stamps_apart() {
    let at = |ms: u64, node: u64| {
        Some((
            Hlc {
                physical: ms,
                logical: 0,
            },
            node,
        ))
    };
    let a = MetaStamps {
        tags: at(5, 1),
        retention: at(1, 1),
        legal_hold: at(1, 1),
        acl: at(1, 1),
    };
    assert_eq!(a.digest(), a.digest());
    let moved = [
        MetaStamps { tags: at(6, 1), ..a },
        MetaStamps { tags: at(5, 2), ..a },
        MetaStamps {
            retention: at(5, 1),
            ..a
        },
        // The same stamps on other fields are other metadata.
        MetaStamps {
            tags: at(1, 1),
            legal_hold: at(5, 1),
            ..a
        },
        MetaStamps { acl: None, ..a },
    ];
    for m in moved {
        assert_ne!(m.digest(), a.digest(), "{m:?}");
    }
}

/// A scan runs on the blocking pool: it works from a single-threaded runtime without holding
/// its only worker, and sees what was committed.
#[tokio::test(flavor = "current_thread")]
async fn scans_run_off_the_async_worker() {
    let (_dir, m) = store_with(&["a/1", "a/2", "b"]).await;
    let worker = std::thread::current().id();
    let (thread, page) = m
        .scan(|s| {
            Ok((
                std::thread::current().id(),
                s.list_objects("b", &q("a/", None, None, 1000))?,
            ))
        })
        .await
        .unwrap();
    assert_ne!(thread, worker, "the scan ran on the async worker");
    assert_eq!(names(&page).0, ["a/1", "a/2"]);
}

/// A database closed after an I/O error refuses writers at once with the reason, reports the
/// store failed meanwhile, and is opened again by the commit thread without a writer asking.
#[tokio::test]
async fn a_store_closed_after_an_io_error_refuses_writes_until_it_reopens_by_itself() {
    let (_dir, m) = store_with(&[]).await;
    m.db.close("I/O error: No space left on device (os error 28)".into());
    let err = m
        .write(|t| -> Result<()> { t.add_stats("b", 1, 1) })
        .await
        .expect_err("refused while closed")
        .to_string();
    assert!(err.contains("No space left"), "{err}");
    assert!(m.failure().is_some_and(|f| f.contains("closed after an I/O error")));
    let probe = m.failure_probe();
    assert!(probe().is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m.failure().is_some() {
        assert!(std::time::Instant::now() < deadline, "still closed: {:?}", m.failure());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(probe().is_none());
    assert_eq!(m.reopened(), 1);
    m.write(|t| -> Result<()> { t.add_stats("b", 1, 1) }).await.unwrap();
}
