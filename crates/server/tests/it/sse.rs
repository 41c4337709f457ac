//! SSE-S3 (`x-amz-server-side-encryption: AES256`) and bucket default encryption, served by the
//! node's encryption at rest; SSE-C (customer-provided keys), which works with or without it.

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};

fn config(algo: ServerSideEncryption) -> ServerSideEncryptionConfiguration {
    ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(algo)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn sse_s3_needs_and_uses_the_node_key() {
    // Without a master key, SSE cannot be honoured: refused rather than silently stored in clear.
    let plain = Server::start();
    let c = plain.client();
    c.create_bucket().bucket("sse").send().await.unwrap();
    let e = c
        .put_object()
        .bucket("sse")
        .key("k")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    let e = c
        .put_bucket_encryption()
        .bucket("sse")
        .server_side_encryption_configuration(config(ServerSideEncryption::Aes256))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    let h = c
        .put_object()
        .bucket("sse")
        .key("plain")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert!(h.server_side_encryption().is_none());

    let enc = Server::start_with(
        &[],
        &[("ENABLE_ENCRYPTION", "true"), ("ENCRYPTION_KEY", &"ab".repeat(32))],
    );
    let c = enc.client();
    c.create_bucket().bucket("sse").send().await.unwrap();
    let p = c
        .put_object()
        .bucket("sse")
        .key("k")
        .server_side_encryption(ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(p.server_side_encryption(), Some(&ServerSideEncryption::Aes256));
    let h = c.head_object().bucket("sse").key("k").send().await.unwrap();
    assert_eq!(h.server_side_encryption(), Some(&ServerSideEncryption::Aes256));
    let e = c.get_bucket_encryption().bucket("sse").send().await.unwrap_err();
    assert_eq!(code(&e), "ServerSideEncryptionConfigurationNotFoundError");
    c.put_bucket_encryption()
        .bucket("sse")
        .server_side_encryption_configuration(config(ServerSideEncryption::Aes256))
        .send()
        .await
        .unwrap();
    let got = c.get_bucket_encryption().bucket("sse").send().await.unwrap();
    let algo = got.server_side_encryption_configuration().unwrap().rules()[0]
        .apply_server_side_encryption_by_default()
        .unwrap()
        .sse_algorithm()
        .clone();
    assert_eq!(algo, ServerSideEncryption::Aes256);
    let e = c
        .put_bucket_encryption()
        .bucket("sse")
        .server_side_encryption_configuration(config(ServerSideEncryption::AwsKms))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    c.delete_bucket_encryption().bucket("sse").send().await.unwrap();
    assert!(c.get_bucket_encryption().bucket("sse").send().await.is_err());

    // SSE-C headers on an object written without them: refused.
    let k = ssec(3);
    let e = c
        .get_object()
        .bucket("sse")
        .key("k")
        .set_ssec(&k)
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("InvalidRequest", 400));
}

struct Ssec {
    key: String,
    md5: String,
}

trait SetSsec {
    fn set_ssec(self, k: &Ssec) -> Self;
}

/// Adds the three SSE-C headers to the request builders that take them.
macro_rules! impl_ssec {
    ($($t:ty),*) => {$(
        impl SetSsec for $t {
            fn set_ssec(self, k: &Ssec) -> Self {
                self.sse_customer_algorithm("AES256")
                    .sse_customer_key(&k.key)
                    .sse_customer_key_md5(&k.md5)
            }
        }
    )*};
}

use aws_sdk_s3::operation as op;
impl_ssec!(
    op::put_object::builders::PutObjectFluentBuilder,
    op::get_object::builders::GetObjectFluentBuilder,
    op::head_object::builders::HeadObjectFluentBuilder,
    op::copy_object::builders::CopyObjectFluentBuilder,
    op::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
    op::upload_part::builders::UploadPartFluentBuilder
);

fn ssec(byte: u8) -> Ssec {
    use base64::Engine;
    use md5::Digest;
    let raw = [byte; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    Ssec {
        key: b64.encode(raw),
        md5: b64.encode(md5::Md5::digest(raw)),
    }
}

/// Every file under `dir`, read whole.
fn all_files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            all_files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push(b);
        }
    }
}

#[tokio::test]
async fn sse_c_customer_keys() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("ssec").send().await.unwrap();
    let (k1, k2) = (ssec(1), ssec(2));
    let big = data(300_000, 7);
    for (key, body) in [("big", big.clone()), ("small", b"small secret body".to_vec())] {
        let out = c
            .put_object()
            .bucket("ssec")
            .key(key)
            .set_ssec(&k1)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.sse_customer_algorithm(), Some("AES256"));
        assert_eq!(out.sse_customer_key_md5(), Some(k1.md5.as_str()));
        // As on AWS, the ETag is not the MD5 of the plaintext (it would reveal known files).
        let etag = out.e_tag().unwrap().trim_matches('"').to_string();
        let md5 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(&body))
        };
        assert_ne!(etag, md5, "the SSE-C ETag is the plaintext MD5");
        assert_eq!(etag.len(), 32);

        // Without the key: 400; with another key: 403; with the key: the body.
        let e = c.get_object().bucket("ssec").key(key).send().await.unwrap_err();
        assert_eq!((code(&e).as_str(), status(&e)), ("InvalidRequest", 400));
        let e = c.head_object().bucket("ssec").key(key).send().await.unwrap_err();
        assert_eq!(status(&e), 400);
        let e = c
            .get_object()
            .bucket("ssec")
            .key(key)
            .set_ssec(&k2)
            .send()
            .await
            .unwrap_err();
        assert_eq!((code(&e).as_str(), status(&e)), ("AccessDenied", 403));
        let got = c
            .get_object()
            .bucket("ssec")
            .key(key)
            .set_ssec(&k1)
            .send()
            .await
            .unwrap();
        assert_eq!(got.sse_customer_algorithm(), Some("AES256"));
        assert_eq!(got.sse_customer_key_md5(), Some(k1.md5.as_str()));
        assert_eq!(got.e_tag().map(|e| e.trim_matches('"')), Some(etag.as_str()));
        assert_eq!(body_bytes(got).await, body);
        // The same body under the same key: the same ETag; under another key: another.
        let again = c
            .put_object()
            .bucket("ssec")
            .key(format!("{key}-again"))
            .set_ssec(&k1)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(again.e_tag().map(|e| e.trim_matches('"')), Some(etag.as_str()));
        let other = c
            .put_object()
            .bucket("ssec")
            .key(format!("{key}-other"))
            .set_ssec(&k2)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        assert_ne!(other.e_tag().map(|e| e.trim_matches('"')), Some(etag.as_str()));
        let head = c
            .head_object()
            .bucket("ssec")
            .key(key)
            .set_ssec(&k1)
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_length(), Some(body.len() as i64));
    }
    let ranged = c
        .get_object()
        .bucket("ssec")
        .key("big")
        .range("bytes=100000-200009")
        .set_ssec(&k1)
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(ranged).await, &big[100_000..200_010]);

    // Neither the key nor the plaintext is anywhere in the data directory.
    let mut files = Vec::new();
    all_files(&srv.dir, &mut files);
    for f in &files {
        assert!(!f.windows(32).any(|w| w == [1u8; 32]), "the key is stored");
        assert!(!f.windows(17).any(|w| w == b"small secret body"), "plaintext is stored");
        assert!(!f.windows(64).any(|w| w == &big[5000..5064]), "plaintext is stored");
    }

    // Bad key headers are refused before anything is stored.
    let e = c
        .put_object()
        .bucket("ssec")
        .key("bad")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&k1.key)
        .sse_customer_key_md5(&k2.md5)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("InvalidArgument", 400));
    let e = c
        .put_object()
        .bucket("ssec")
        .key("bad")
        .sse_customer_algorithm("AES128")
        .sse_customer_key(&k1.key)
        .sse_customer_key_md5(&k1.md5)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    assert!(c.head_object().bucket("ssec").key("bad").send().await.is_err());

    // CopyObject: the source key opens the source; the copy gets its own key (or none).
    let e = c
        .copy_object()
        .bucket("ssec")
        .key("copy")
        .copy_source("ssec/big")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    c.copy_object()
        .bucket("ssec")
        .key("copy")
        .copy_source("ssec/big")
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k1.key)
        .copy_source_sse_customer_key_md5(&k1.md5)
        .set_ssec(&k2)
        .send()
        .await
        .unwrap();
    let got = c
        .get_object()
        .bucket("ssec")
        .key("copy")
        .set_ssec(&k2)
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, big);
    c.copy_object()
        .bucket("ssec")
        .key("plain-copy")
        .copy_source("ssec/small")
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&k1.key)
        .copy_source_sse_customer_key_md5(&k1.md5)
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_bytes(c.get_object().bucket("ssec").key("plain-copy").send().await.unwrap()).await,
        b"small secret body"
    );

    // Multipart: every part must carry the upload's key.
    let up = c
        .create_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .set_ssec(&k1)
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_string();
    let part1 = data(5 * 1024 * 1024, 3);
    let e = c
        .upload_part()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(b"small: refused before the body is read"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    let e = c
        .upload_part()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .set_ssec(&k2)
        .body(ByteStream::from_static(b"small"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 403);
    let mut parts = Vec::new();
    for (n, body) in [(1, part1.clone()), (2, b"tail".to_vec())] {
        let p = c
            .upload_part()
            .bucket("ssec")
            .key("mp")
            .upload_id(&id)
            .part_number(n)
            .set_ssec(&k1)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket("ssec")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        status(&c.get_object().bucket("ssec").key("mp").send().await.unwrap_err()),
        400
    );
    let got = c
        .get_object()
        .bucket("ssec")
        .key("mp")
        .set_ssec(&k1)
        .send()
        .await
        .unwrap();
    let mut want = part1;
    want.extend_from_slice(b"tail");
    assert_eq!(body_bytes(got).await, want);
}
