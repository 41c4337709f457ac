#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Behaviour every [`ObjectStore`] implementation must show, written once and run against each
//! (`LocalStore` here; the cluster store later). Call [`run_all`] with a fresh, empty store.

use crate::*;
use bytes::Bytes;
use futures::TryStreamExt;
use std::sync::Arc;

fn body(data: Vec<u8>) -> ByteStream {
    Box::pin(futures::stream::iter(
        data.chunks(7000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<std::io::Result<Bytes>>>(),
    ))
}

async fn read(out: GetObjectOutput) -> Vec<u8> {
    let parts: Vec<Bytes> = out.body.try_collect().await.unwrap_or_default();
    parts.concat()
}

fn put(bucket: &str, key: &str) -> PutObject {
    PutObject {
        bucket: bucket.into(),
        key: key.into(),
        ..Default::default()
    }
}

fn get(bucket: &str, key: &str) -> GetObject {
    GetObject {
        bucket: bucket.into(),
        key: key.into(),
        ..Default::default()
    }
}

/// Runs every check. Panics (test failure) on the first violation.
pub async fn run_all(s: Arc<dyn ObjectStore>) {
    buckets(&*s).await;
    objects(&*s).await;
    odd_keys(&*s).await;
    listing(&*s).await;
    multipart(&*s).await;
    copy(&*s).await;
    conditional_writes(&*s).await;
}

/// If-None-Match / If-Match on PutObject, CompleteMultipartUpload, CopyObject's destination and
/// DeleteObject (S3 2024).
async fn conditional_writes(s: &dyn ObjectStore) {
    s.create_bucket("conf-cond").await.unwrap();
    let none_match = || Conditions {
        if_none_match: Some(vec!["*".into()]),
        ..Default::default()
    };
    let matching = |etag: &str| Conditions {
        if_match: Some(vec![format!("\"{etag}\"")]),
        ..Default::default()
    };
    let conditional = |conditions: Conditions| {
        let mut p = put("conf-cond", "k");
        p.conditions = conditions;
        p
    };
    let first = s
        .put_object(conditional(none_match()), body(b"one".to_vec()))
        .await
        .unwrap();
    assert!(matches!(
        s.put_object(conditional(none_match()), body(b"two".to_vec())).await,
        Err(Error::PreconditionFailed)
    ));
    assert!(matches!(
        s.put_object(conditional(matching("0123")), body(b"two".to_vec())).await,
        Err(Error::PreconditionFailed)
    ));
    let second = s
        .put_object(conditional(matching(&first.etag)), body(b"two".to_vec()))
        .await
        .unwrap();
    assert!(matches!(
        s.put_object(conditional(matching(&first.etag)), body(b"three".to_vec()))
            .await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(read(s.get_object(get("conf-cond", "k")).await.unwrap()).await, b"two");

    // CopyObject's destination conditions.
    let copy = |conditions: Conditions| CopyObject {
        src_bucket: "conf-cond".into(),
        src_key: "k".into(),
        bucket: "conf-cond".into(),
        key: "copy".into(),
        conditions,
        ..Default::default()
    };
    s.copy_object(copy(none_match())).await.unwrap();
    assert!(matches!(
        s.copy_object(copy(none_match())).await,
        Err(Error::PreconditionFailed)
    ));
    assert!(matches!(
        s.copy_object(copy(matching("0123"))).await,
        Err(Error::PreconditionFailed)
    ));
    s.copy_object(copy(matching(&second.etag))).await.unwrap();

    // CompleteMultipartUpload.
    let id = s
        .create_multipart_upload(CreateMultipart {
            bucket: "conf-cond".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let part = s
        .upload_part(
            UploadPart {
                bucket: "conf-cond".into(),
                key: "k".into(),
                upload_id: id.clone(),
                part_number: 1,
                ..Default::default()
            },
            body(b"multi".to_vec()),
        )
        .await
        .unwrap();
    let complete = |conditions: Conditions| CompleteMultipart {
        bucket: "conf-cond".into(),
        key: "k".into(),
        upload_id: id.clone(),
        parts: vec![CompletedPart {
            part_number: 1,
            etag: part.etag.clone(),
        }],
        conditions,
    };
    assert!(matches!(
        s.complete_multipart_upload(complete(none_match())).await,
        Err(Error::PreconditionFailed)
    ));
    let done = s
        .complete_multipart_upload(complete(matching(&second.etag)))
        .await
        .unwrap();
    assert_eq!(read(s.get_object(get("conf-cond", "k")).await.unwrap()).await, b"multi");

    // DeleteObject with If-Match.
    assert!(matches!(
        s.delete_object_if_match("conf-cond", "k", None, false, &["0123".into()])
            .await,
        Err(Error::PreconditionFailed)
    ));
    assert!(matches!(
        s.delete_object_if_match("conf-cond", "absent", None, false, &["*".into()])
            .await,
        Err(Error::NoSuchKey)
    ));
    s.delete_object_if_match("conf-cond", "k", None, false, &[format!("\"{}\"", done.etag)])
        .await
        .unwrap();
    assert!(matches!(
        s.get_object(get("conf-cond", "k")).await,
        Err(Error::NoSuchKey)
    ));
    s.delete_object_if_match("conf-cond", "copy", None, false, &["*".into()])
        .await
        .unwrap();
    assert!(matches!(
        s.get_object(get("conf-cond", "copy")).await,
        Err(Error::NoSuchKey)
    ));
}

async fn buckets(s: &dyn ObjectStore) {
    assert!(matches!(
        s.create_bucket("Bad_Name").await,
        Err(Error::InvalidBucketName(_))
    ));
    s.create_bucket("conf-b1").await.unwrap();
    assert!(matches!(
        s.create_bucket("conf-b1").await,
        Err(Error::BucketAlreadyOwnedByYou)
    ));
    assert_eq!(s.head_bucket("conf-b1").await.unwrap().name, "conf-b1");
    assert!(matches!(s.head_bucket("conf-nope").await, Err(Error::NoSuchBucket)));
    assert!(s.list_buckets().await.unwrap().iter().any(|b| b.name == "conf-b1"));
    assert!(matches!(
        s.get_bucket_tagging("conf-b1").await,
        Err(Error::NoSuchTagSet)
    ));
    s.put_bucket_tagging(
        "conf-b1",
        vec![Tag {
            key: "k".into(),
            value: "v".into(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(s.get_bucket_tagging("conf-b1").await.unwrap().len(), 1);
    s.delete_bucket_tagging("conf-b1").await.unwrap();
    s.put_object(put("conf-b1", "x"), body(b"x".to_vec())).await.unwrap();
    assert!(matches!(s.delete_bucket("conf-b1").await, Err(Error::BucketNotEmpty)));
    s.delete_object("conf-b1", "x", None, false).await.unwrap();
    s.delete_bucket("conf-b1").await.unwrap();
    assert!(matches!(s.delete_bucket("conf-b1").await, Err(Error::NoSuchBucket)));
}

async fn objects(s: &dyn ObjectStore) {
    s.create_bucket("conf-obj").await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut req = put("conf-obj", "a");
    req.meta.user_meta.insert("color".into(), "blue".into());
    req.meta.content.content_type = Some("text/plain".into());
    let info = s.put_object(req, body(data.clone())).await.unwrap();
    assert_eq!(info.size, 100_000);
    assert_eq!(info.etag.len(), 32);
    let out = s.get_object(get("conf-obj", "a")).await.unwrap();
    assert_eq!(out.info.user_meta.get("color").map(String::as_str), Some("blue"));
    assert_eq!(out.info.content.content_type.as_deref(), Some("text/plain"));
    assert_eq!(read(out).await, data);

    let mut g = get("conf-obj", "a");
    g.range = Some(RangeSpec::FromTo {
        first: 10,
        last: Some(19),
    });
    let out = s.get_object(g.clone()).await.unwrap();
    assert_eq!(out.range, Some(ByteRange { start: 10, end: 20 }));
    assert_eq!(read(out).await, &data[10..20]);
    g.range = Some(RangeSpec::Suffix { length: 5 });
    assert_eq!(read(s.get_object(g.clone()).await.unwrap()).await, &data[99_995..]);
    g.range = Some(RangeSpec::FromTo {
        first: 100_000,
        last: None,
    });
    assert!(matches!(
        s.get_object(g).await,
        Err(Error::InvalidRange { size: 100_000 })
    ));

    let mut g = get("conf-obj", "a");
    g.conditions.if_none_match = Some(vec![info.etag.clone()]);
    assert!(matches!(s.get_object(g.clone()).await, Err(Error::NotModified)));
    g.conditions = Conditions {
        if_match: Some(vec!["nope".into()]),
        ..Default::default()
    };
    assert!(matches!(s.head_object(g).await, Err(Error::PreconditionFailed)));

    // Bad digest: nothing is stored, the old version stays.
    let mut req = put("conf-obj", "a");
    req.checks.content_md5 = Some("AAAAAAAAAAAAAAAAAAAAAA==".into());
    assert!(matches!(
        s.put_object(req, body(b"other".to_vec())).await,
        Err(Error::BadDigest)
    ));
    assert_eq!(s.head_object(get("conf-obj", "a")).await.unwrap().etag, info.etag);

    // Short body.
    let mut req = put("conf-obj", "short");
    req.checks.content_length = Some(10);
    assert!(matches!(
        s.put_object(req, body(b"12345".to_vec())).await,
        Err(Error::IncompleteBody(_))
    ));
    assert!(matches!(
        s.head_object(get("conf-obj", "short")).await,
        Err(Error::NoSuchKey)
    ));

    // Checksums verified and kept.
    let mut req = put("conf-obj", "ck");
    req.checks.checksums.crc32 = Some("DUoRhQ==".into());
    let i = s.put_object(req, body(b"hello world".to_vec())).await.unwrap();
    assert_eq!(i.checksums.crc32.as_deref(), Some("DUoRhQ=="));
    let mut req = put("conf-obj", "ck2");
    req.checks.checksums.sha256 = Some("AAAA".into());
    assert!(matches!(
        s.put_object(req, body(b"hello world".to_vec())).await,
        Err(Error::ChecksumMismatch(ChecksumAlgorithm::Sha256))
    ));

    // Conditional write.
    let mut req = put("conf-obj", "a");
    req.conditions.if_none_match = Some(vec!["*".into()]);
    assert!(matches!(
        s.put_object(req, body(b"z".to_vec())).await,
        Err(Error::PreconditionFailed)
    ));

    // Tagging.
    s.put_object_tagging(
        "conf-obj",
        "a",
        vec![Tag {
            key: "t".into(),
            value: "1".into(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(s.get_object_tagging("conf-obj", "a").await.unwrap().len(), 1);
    s.delete_object_tagging("conf-obj", "a").await.unwrap();
    assert!(s.get_object_tagging("conf-obj", "a").await.unwrap().is_empty());
    assert!(matches!(
        s.get_object_tagging("conf-obj", "missing").await,
        Err(Error::NoSuchKey)
    ));

    // Overwrite and delete.
    s.put_object(put("conf-obj", "a"), body(b"new".to_vec())).await.unwrap();
    assert_eq!(read(s.get_object(get("conf-obj", "a")).await.unwrap()).await, b"new");
    s.delete_object("conf-obj", "a", None, false).await.unwrap();
    s.delete_object("conf-obj", "a", None, false).await.unwrap();
    assert!(matches!(
        s.get_object(get("conf-obj", "a")).await,
        Err(Error::NoSuchKey)
    ));
    assert!(matches!(
        s.get_object(get("conf-nope", "a")).await,
        Err(Error::NoSuchBucket)
    ));
    let r = s
        .delete_objects("conf-obj", vec![("ck".into(), None), ("never".into(), None)], false)
        .await
        .unwrap();
    assert!(r.iter().all(|r| r.is_ok()));
    assert!(matches!(
        s.head_object(get("conf-obj", "ck")).await,
        Err(Error::NoSuchKey)
    ));
}

async fn odd_keys(s: &dyn ObjectStore) {
    s.create_bucket("conf-keys").await.unwrap();
    let long = "k".repeat(1024);
    let keys = [
        "../x",
        "a//b",
        "%2F",
        ".",
        "..",
        "/lead",
        "sp ace",
        "é\u{1F600}",
        long.as_str(),
    ];
    for k in keys {
        s.put_object(put("conf-keys", k), body(k.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    for k in keys {
        assert_eq!(
            read(s.get_object(get("conf-keys", k)).await.unwrap()).await,
            k.as_bytes(),
            "{k}"
        );
    }
    let page = s
        .list_objects(
            "conf-keys",
            ListQuery {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut want: Vec<&str> = keys.to_vec();
    want.sort();
    assert_eq!(page.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), want);
    assert!(matches!(
        s.put_object(put("conf-keys", &"k".repeat(1025)), body(vec![])).await,
        Err(Error::KeyTooLong(1025))
    ));
}

async fn listing(s: &dyn ObjectStore) {
    s.create_bucket("conf-list").await.unwrap();
    for k in ["a/1", "a/2", "b/1", "c", "d"] {
        s.put_object(put("conf-list", k), body(vec![1])).await.unwrap();
    }
    let q = |marker: Option<&str>| ListQuery {
        delimiter: Some("/".into()),
        marker: marker.map(Into::into),
        max_keys: 2,
        ..Default::default()
    };
    let p1 = s.list_objects("conf-list", q(None)).await.unwrap();
    assert_eq!(p1.common_prefixes, ["a/", "b/"]);
    assert!(p1.truncated);
    let p2 = s.list_objects("conf-list", q(p1.next_marker.as_deref())).await.unwrap();
    assert_eq!(
        p2.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        ["c", "d"]
    );
    assert!(!p2.truncated);
    assert!(matches!(
        s.list_objects("conf-nope", q(None)).await,
        Err(Error::NoSuchBucket)
    ));
}

async fn multipart(s: &dyn ObjectStore) {
    s.create_bucket("conf-mp").await.unwrap();
    let id = s
        .create_multipart_upload(CreateMultipart {
            bucket: "conf-mp".into(),
            key: "big".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let p1: Vec<u8> = vec![1; 5 * 1024 * 1024];
    let p2: Vec<u8> = vec![2; 1000];
    let up = |n: u32| UploadPart {
        bucket: "conf-mp".into(),
        key: "big".into(),
        upload_id: id.clone(),
        part_number: n,
        ..Default::default()
    };
    let i1 = s.upload_part(up(1), body(p1.clone())).await.unwrap();
    let i2 = s.upload_part(up(2), body(p2.clone())).await.unwrap();
    assert!(matches!(
        s.upload_part(up(0), body(vec![])).await,
        Err(Error::InvalidArgument(_))
    ));
    let parts = s
        .list_parts(ListParts {
            bucket: "conf-mp".into(),
            key: "big".into(),
            upload_id: id.clone(),
            max_parts: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(parts.parts.len(), 1);
    assert!(parts.truncated);
    let uploads = s
        .list_multipart_uploads(
            "conf-mp",
            UploadListQuery {
                max_uploads: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(uploads.uploads.len(), 1);
    assert!(matches!(s.delete_bucket("conf-mp").await, Err(Error::BucketNotEmpty)));
    let cp = |n: u32, e: &str| CompletedPart {
        part_number: n,
        etag: e.to_string(),
    };
    let complete = |parts: Vec<CompletedPart>| CompleteMultipart {
        bucket: "conf-mp".into(),
        key: "big".into(),
        upload_id: id.clone(),
        parts,
        conditions: Conditions::default(),
    };
    assert!(matches!(
        s.complete_multipart_upload(complete(vec![cp(2, &i2.etag), cp(1, &i1.etag)]))
            .await,
        Err(Error::InvalidPartOrder)
    ));
    assert!(matches!(
        s.complete_multipart_upload(complete(vec![cp(1, &i1.etag), cp(3, &i2.etag)]))
            .await,
        Err(Error::InvalidPart(_))
    ));
    assert!(matches!(
        s.complete_multipart_upload(complete(vec![cp(1, "bad"), cp(2, &i2.etag)]))
            .await,
        Err(Error::InvalidPart(_))
    ));
    assert!(matches!(
        s.complete_multipart_upload(complete(vec![cp(2, &i2.etag), cp(3, &i2.etag)]))
            .await,
        Err(Error::InvalidPart(_))
    ));
    let done = s
        .complete_multipart_upload(complete(vec![cp(1, &i1.etag), cp(2, &i2.etag)]))
        .await
        .unwrap();
    assert!(done.etag.ends_with("-2"));
    assert_eq!(done.size, p1.len() as u64 + 1000);
    let mut g = get("conf-mp", "big");
    g.range = Some(RangeSpec::FromTo {
        first: 5 * 1024 * 1024 - 2,
        last: Some(5 * 1024 * 1024 + 1),
    });
    assert_eq!(read(s.get_object(g).await.unwrap()).await, [1, 1, 2, 2]);
    let all = read(s.get_object(get("conf-mp", "big")).await.unwrap()).await;
    assert_eq!(all.len(), p1.len() + 1000);
    assert!(matches!(
        s.complete_multipart_upload(complete(vec![cp(1, &i1.etag)])).await,
        Err(Error::NoSuchUpload)
    ));

    // Too-small non-final part.
    let id2 = s
        .create_multipart_upload(CreateMultipart {
            bucket: "conf-mp".into(),
            key: "small".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let up2 = |n: u32| UploadPart {
        bucket: "conf-mp".into(),
        key: "small".into(),
        upload_id: id2.clone(),
        part_number: n,
        ..Default::default()
    };
    let a = s.upload_part(up2(1), body(vec![1; 10])).await.unwrap();
    let b = s.upload_part(up2(2), body(vec![1; 10])).await.unwrap();
    let r = s
        .complete_multipart_upload(CompleteMultipart {
            bucket: "conf-mp".into(),
            key: "small".into(),
            upload_id: id2.clone(),
            parts: vec![cp(1, &a.etag), cp(2, &b.etag)],
            conditions: Conditions::default(),
        })
        .await;
    assert!(matches!(r, Err(Error::EntityTooSmall { part: 1, .. })), "{r:?}");
    s.abort_multipart_upload("conf-mp", "small", &id2).await.unwrap();
    assert!(matches!(
        s.abort_multipart_upload("conf-mp", "small", &id2).await,
        Err(Error::NoSuchUpload)
    ));

    // Part copy with a range.
    let id3 = s
        .create_multipart_upload(CreateMultipart {
            bucket: "conf-mp".into(),
            key: "copy".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pc = s
        .upload_part_copy(UploadPartCopy {
            bucket: "conf-mp".into(),
            key: "copy".into(),
            upload_id: id3.clone(),
            part_number: 1,
            src_bucket: "conf-mp".into(),
            src_key: "big".into(),
            range: Some(RangeSpec::FromTo {
                first: 5 * 1024 * 1024,
                last: Some(5 * 1024 * 1024 + 999),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pc.size, 1000);
    assert_eq!(pc.etag, i2.etag);
    s.abort_multipart_upload("conf-mp", "copy", &id3).await.unwrap();
}

async fn copy(s: &dyn ObjectStore) {
    s.create_bucket("conf-cp").await.unwrap();
    let mut req = put("conf-cp", "src");
    req.meta.user_meta.insert("m".into(), "1".into());
    let src = s.put_object(req, body(b"payload".to_vec())).await.unwrap();
    let c = |key: &str| CopyObject {
        src_bucket: "conf-cp".into(),
        src_key: "src".into(),
        bucket: "conf-cp".into(),
        key: key.into(),
        ..Default::default()
    };
    let i = s.copy_object(c("dst")).await.unwrap();
    assert_eq!(i.etag, src.etag);
    assert_eq!(i.user_meta.get("m").map(String::as_str), Some("1"));
    let mut r = c("dst2");
    r.replace_meta = Some(ObjectMeta::default());
    assert!(s.copy_object(r).await.unwrap().user_meta.is_empty());
    assert!(matches!(s.copy_object(c("src")).await, Err(Error::InvalidRequest(_))));
    let mut same = c("src");
    same.replace_meta = Some(ObjectMeta {
        user_meta: [("n".to_string(), "2".to_string())].into(),
        ..Default::default()
    });
    let i = s.copy_object(same).await.unwrap();
    assert_eq!(i.user_meta.get("n").map(String::as_str), Some("2"));
    assert_eq!(
        read(s.get_object(get("conf-cp", "src")).await.unwrap()).await,
        b"payload"
    );
    let mut cond = c("dst3");
    cond.source_conditions.if_match = Some(vec!["nope".into()]);
    assert!(matches!(s.copy_object(cond).await, Err(Error::PreconditionFailed)));
    let mut missing = c("dst4");
    missing.src_key = "nothing".into();
    assert!(matches!(s.copy_object(missing).await, Err(Error::NoSuchKey)));
}
