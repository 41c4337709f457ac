//! Bucket versioning through the real aws-sdk-s3 client: versions, delete markers, `null`
//! semantics when suspended, ListObjectVersions order and paging.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, Delete, ObjectIdentifier, VersioningConfiguration};

async fn put(c: &aws_sdk_s3::Client, b: &str, k: &str, body: &'static [u8]) -> Option<String> {
    c.put_object()
        .bucket(b)
        .key(k)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .unwrap()
        .version_id()
        .map(String::from)
}

async fn set_versioning(c: &aws_sdk_s3::Client, b: &str, s: BucketVersioningStatus) {
    c.put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(VersioningConfiguration::builder().status(s).build())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn versions_and_delete_markers() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("ver").send().await.unwrap();
    assert!(
        c.get_bucket_versioning()
            .bucket("ver")
            .send()
            .await
            .unwrap()
            .status()
            .is_none()
    );
    // Before versioning: the null version.
    assert_eq!(put(&c, "ver", "k", b"v0").await, None);
    set_versioning(&c, "ver", BucketVersioningStatus::Enabled).await;
    assert_eq!(
        c.get_bucket_versioning().bucket("ver").send().await.unwrap().status(),
        Some(&BucketVersioningStatus::Enabled)
    );
    let v1 = put(&c, "ver", "k", b"v1").await.expect("version id");
    let v2 = put(&c, "ver", "k", b"v2").await.expect("version id");
    assert_ne!(v1, v2);
    // Current is v2; older versions stay readable by id, including the null version.
    assert_eq!(
        body_bytes(c.get_object().bucket("ver").key("k").send().await.unwrap()).await,
        b"v2"
    );
    let g = c
        .get_object()
        .bucket("ver")
        .key("k")
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    assert_eq!(g.version_id(), Some(v1.as_str()));
    assert_eq!(body_bytes(g).await, b"v1");
    assert_eq!(
        body_bytes(
            c.get_object()
                .bucket("ver")
                .key("k")
                .version_id("null")
                .send()
                .await
                .unwrap()
        )
        .await,
        b"v0"
    );
    let e = c
        .get_object()
        .bucket("ver")
        .key("k")
        .version_id("ffffffffffffffffffffffff")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchVersion");

    // Delete without a version id adds a delete marker; the key disappears from listings.
    let d = c.delete_object().bucket("ver").key("k").send().await.unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    let marker = d.version_id().unwrap().to_string();
    let e = c.get_object().bucket("ver").key("k").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
    assert_eq!(
        c.list_objects_v2().bucket("ver").send().await.unwrap().key_count(),
        Some(0)
    );
    let e = c
        .head_object()
        .bucket("ver")
        .key("k")
        .version_id(&marker)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 405, "HEAD of a delete marker version");
    // The bucket is not empty while versions remain.
    assert_eq!(
        code(&c.delete_bucket().bucket("ver").send().await.unwrap_err()),
        "BucketNotEmpty"
    );

    // ListObjectVersions: newest first, one latest.
    let l = c.list_object_versions().bucket("ver").send().await.unwrap();
    let vs: Vec<(&str, bool)> = l
        .versions()
        .iter()
        .map(|v| (v.version_id().unwrap(), v.is_latest().unwrap()))
        .collect();
    assert_eq!(vs, [(v2.as_str(), false), (v1.as_str(), false), ("null", false)]);
    assert_eq!(l.delete_markers().len(), 1);
    assert_eq!(l.delete_markers()[0].is_latest(), Some(true));
    // Paging through versions one at a time yields the same sequence.
    let mut seen = Vec::new();
    let (mut km, mut vm): (Option<String>, Option<String>) = (None, None);
    loop {
        let p = c
            .list_object_versions()
            .bucket("ver")
            .max_keys(1)
            .set_key_marker(km.clone())
            .set_version_id_marker(vm.clone())
            .send()
            .await
            .unwrap();
        for v in p.versions() {
            seen.push(v.version_id().unwrap().to_string());
        }
        for m in p.delete_markers() {
            seen.push(m.version_id().unwrap().to_string());
        }
        if p.is_truncated() != Some(true) {
            break;
        }
        km = p.next_key_marker().map(String::from);
        vm = p.next_version_id_marker().map(String::from);
    }
    assert_eq!(seen, [marker.clone(), v2.clone(), v1.clone(), "null".to_string()]);

    // Deleting the marker restores v2 as current; deleting v2 for good makes v1 current.
    let d = c
        .delete_object()
        .bucket("ver")
        .key("k")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    assert_eq!(
        body_bytes(c.get_object().bucket("ver").key("k").send().await.unwrap()).await,
        b"v2"
    );
    c.delete_object()
        .bucket("ver")
        .key("k")
        .version_id(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_bytes(c.get_object().bucket("ver").key("k").send().await.unwrap()).await,
        b"v1"
    );

    // Copy from a specific source version.
    let cp = c
        .copy_object()
        .bucket("ver")
        .key("copy")
        .copy_source(format!("ver/k?versionId={v1}"))
        .send()
        .await
        .unwrap();
    assert!(cp.version_id().is_some());
    assert_eq!(
        body_bytes(c.get_object().bucket("ver").key("copy").send().await.unwrap()).await,
        b"v1"
    );

    // Batch delete of specific versions.
    let del = Delete::builder()
        .objects(ObjectIdentifier::builder().key("k").version_id(&v1).build().unwrap())
        .objects(ObjectIdentifier::builder().key("k").version_id("null").build().unwrap())
        .build()
        .unwrap();
    let out = c.delete_objects().bucket("ver").delete(del).send().await.unwrap();
    assert_eq!(out.deleted().len(), 2);
    let e = c.get_object().bucket("ver").key("k").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchKey");
}

#[tokio::test]
async fn suspended_versioning_uses_the_null_version() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("susp").send().await.unwrap();
    set_versioning(&c, "susp", BucketVersioningStatus::Enabled).await;
    let v1 = put(&c, "susp", "k", b"kept").await.unwrap();
    set_versioning(&c, "susp", BucketVersioningStatus::Suspended).await;
    // Writes while suspended replace the single null version; the enabled-era version stays.
    assert_eq!(put(&c, "susp", "k", b"n1").await.as_deref(), None);
    put(&c, "susp", "k", b"n2").await;
    let l = c.list_object_versions().bucket("susp").send().await.unwrap();
    let ids: Vec<&str> = l.versions().iter().map(|v| v.version_id().unwrap()).collect();
    assert_eq!(ids, ["null", v1.as_str()]);
    assert_eq!(
        body_bytes(c.get_object().bucket("susp").key("k").send().await.unwrap()).await,
        b"n2"
    );
    // A delete while suspended puts a null delete marker in place of the null version.
    let d = c.delete_object().bucket("susp").key("k").send().await.unwrap();
    assert_eq!(d.delete_marker(), Some(true));
    let l = c.list_object_versions().bucket("susp").send().await.unwrap();
    assert_eq!(l.versions().len(), 1);
    assert_eq!(l.delete_markers()[0].version_id(), Some("null"));
    assert_eq!(
        body_bytes(
            c.get_object()
                .bucket("susp")
                .key("k")
                .version_id(&v1)
                .send()
                .await
                .unwrap()
        )
        .await,
        b"kept"
    );
    let e = c
        .put_bucket_versioning()
        .bucket("susp")
        .versioning_configuration(VersioningConfiguration::builder().build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedXML");
}
