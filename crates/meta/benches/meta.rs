#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Metadata hot paths: a committed object write (durable and not), a point read, and one
//! 1000-key listing page in a bucket of 100,000 keys.

use criterion::{Criterion, criterion_group, criterion_main};
use ironbucket_meta::{BucketRecord, ContentHeaders, ListQuery, MetaStore, ObjectRecord, Segment};
use ironbucket_types::Hlc;

fn rec(i: u64) -> ObjectRecord {
    ObjectRecord {
        version_id: "null".into(),
        delete_marker: false,
        hlc: Hlc {
            physical: i,
            logical: 0,
        },
        origin: 0,
        size: 4096,
        etag: "0123456789abcdef0123456789abcdef".into(),
        last_modified: i,
        content: ContentHeaders {
            content_type: Some("application/octet-stream".into()),
            ..Default::default()
        },
        user_meta: Default::default(),
        checksums: Default::default(),
        tags: vec![],
        segments: vec![Segment {
            blob: format!("{i:032x}"),
            size: 4096,
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

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for durable in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("m.redb"), durable).unwrap();
        rt.block_on(m.write(|t| -> ironbucket_meta::Result<()> {
            t.put_bucket(&BucketRecord {
                name: "b".into(),
                created: 0,
                tags: None,
                versioning: None,
                cors: None,
                lifecycle: None,
                quota: None,
                encryption: None,
                object_lock: None,
                ..Default::default()
            })
        }))
        .unwrap();
        let mut i = 0u64;
        c.bench_function(&format!("meta put object (durable={durable})"), |b| {
            b.iter(|| {
                i += 1;
                let r = rec(i);
                rt.block_on(
                    m.write(move |t| -> ironbucket_meta::Result<()> { t.put_object("b", &format!("key-{i:09}"), &r) }),
                )
                .unwrap();
            })
        });
    }

    // A listing page must cost the same whatever the bucket size: 10,000 vs 1,000,000 keys.
    for n in [10_000u64, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("m.redb"), false).unwrap();
        rt.block_on(m.write(|t| -> ironbucket_meta::Result<()> {
            t.put_bucket(&BucketRecord {
                name: "b".into(),
                created: 0,
                tags: None,
                versioning: None,
                cors: None,
                lifecycle: None,
                quota: None,
                encryption: None,
                object_lock: None,
                ..Default::default()
            })
        }))
        .unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
            let chunk = chunk.to_vec();
            rt.block_on(m.write(move |t| -> ironbucket_meta::Result<()> {
                for i in chunk {
                    t.put_object("b", &format!("dir{}/key-{i:09}", i % 100), &rec(i))?;
                }
                Ok(())
            }))
            .unwrap();
        }
        c.bench_function(&format!("meta get object ({n} keys)"), |b| {
            b.iter(|| m.get_object("b", "dir42/key-000000042").unwrap().unwrap())
        });
        c.bench_function(&format!("meta list 1000 keys from mid-bucket ({n} keys)"), |b| {
            b.iter(|| {
                let p = m
                    .blocking_scanner()
                    .unwrap()
                    .list_objects(
                        "b",
                        &ListQuery {
                            prefix: String::new(),
                            delimiter: None,
                            marker: Some("dir50/".into()),
                            max_keys: 1000,
                        },
                    )
                    .unwrap();
                assert_eq!(p.objects.len(), 1000);
            })
        });
        c.bench_function(&format!("meta list with delimiter, 100 prefixes ({n} keys)"), |b| {
            b.iter(|| {
                let p = m
                    .blocking_scanner()
                    .unwrap()
                    .list_objects(
                        "b",
                        &ListQuery {
                            prefix: String::new(),
                            delimiter: Some("/".into()),
                            marker: None,
                            max_keys: 1000,
                        },
                    )
                    .unwrap();
                assert_eq!(p.common_prefixes.len(), 100);
            })
        });
    }
}

criterion_group! { name = g; config = Criterion::default().sample_size(20); targets = benches }
criterion_main!(g);
