#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SSE-S3 (`x-amz-server-side-encryption: AES256`) and bucket default encryption, served by the
//! node's encryption at rest; SSE-C is refused as not implemented.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use common::*;

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

    // SSE-C is not implemented: a clear 501, never a silent success.
    let e = c
        .get_object()
        .bucket("sse")
        .key("k")
        .sse_customer_algorithm("AES256")
        .sse_customer_key("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
        .sse_customer_key_md5("9kyflVQYeTVR8IZrTjfdqQ==")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 501);
}
