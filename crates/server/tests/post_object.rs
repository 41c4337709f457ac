#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Browser uploads: an HTML-form POST with a SigV4-signed POST policy, posted as a real
//! multipart/form-data body.

mod common;

use base64::Engine;
use common::*;

struct Form {
    key: &'static str,
    file: Vec<u8>,
    tamper_signature: bool,
    redirect: Option<&'static str>,
}

async fn post(srv: &Server, bucket: &str, f: Form) -> (u16, http::HeaderMap, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dt = time_fmt(now);
    let date = &dt[..8];
    let credential = format!("{AK}/{date}/us-east-1/s3/aws4_request");
    let exp = time_fmt(now + 3600);
    let expiration = format!(
        "{}-{}-{}T{}:{}:{}.000Z",
        &exp[0..4],
        &exp[4..6],
        &exp[6..8],
        &exp[9..11],
        &exp[11..13],
        &exp[13..15]
    );
    let status_or_redirect = match f.redirect {
        Some(r) => format!(r#"{{"success_action_redirect": "{r}"}}"#),
        None => r#"{"success_action_status": "201"}"#.to_string(),
    };
    let policy = format!(
        r#"{{"expiration": "{expiration}", "conditions": [{{"bucket": "{bucket}"}}, ["starts-with", "$key", "uploads/"], ["content-length-range", 1, 1000], {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}}, {{"x-amz-date": "{dt}"}}, {status_or_redirect}, ["starts-with", "$Content-Type", "text/"]]}}"#
    );
    let policy_b64 = base64::engine::general_purpose::STANDARD.encode(policy);
    let mut signature = hex::encode(hmac(&signing_key(date), policy_b64.as_bytes()));
    if f.tamper_signature {
        signature = signature.replace('a', "b").replace('1', "2");
    }
    let boundary = "----IronBucketFormBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    let mut field = |name: &str, value: &str| {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    };
    field("key", f.key);
    field("x-amz-algorithm", "AWS4-HMAC-SHA256");
    field("x-amz-credential", &credential);
    field("x-amz-date", &dt);
    field("policy", &policy_b64);
    field("x-amz-signature", &signature);
    match f.redirect {
        Some(r) => field("success_action_redirect", r),
        None => field("success_action_status", "201"),
    }
    field("Content-Type", "text/plain");
    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hello.txt\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes());
    body.extend(&f.file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    raw(
        "POST",
        &format!("{}/{bucket}", srv.s3),
        &[("content-type", ct.as_str())],
        body,
    )
    .await
}

#[tokio::test]
async fn browser_form_uploads() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("forms").send().await.unwrap();

    let (st, _, body) = post(
        &srv,
        "forms",
        Form {
            key: "uploads/hello.txt",
            file: b"hello from a browser".to_vec(),
            tamper_signature: false,
            redirect: None,
        },
    )
    .await;
    assert_eq!(st, 201, "{body}");
    assert!(
        body.contains("<Key>uploads/hello.txt</Key>") && body.contains("<ETag>"),
        "{body}"
    );
    let g = c
        .get_object()
        .bucket("forms")
        .key("uploads/hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(g.content_type(), Some("text/plain"));
    assert_eq!(body_bytes(g).await, b"hello from a browser");

    // Redirect after success.
    let (st, h, body) = post(
        &srv,
        "forms",
        Form {
            key: "uploads/r.txt",
            file: b"r".to_vec(),
            tamper_signature: false,
            redirect: Some("https://app.example.com/done"),
        },
    )
    .await;
    assert_eq!(st, 303, "{body}");
    assert!(
        h["location"]
            .to_str()
            .unwrap()
            .starts_with("https://app.example.com/done"),
        "{h:?}"
    );

    // Too large for content-length-range: refused, nothing stored.
    let (st, _, body) = post(
        &srv,
        "forms",
        Form {
            key: "uploads/big.txt",
            file: vec![b'x'; 2000],
            tamper_signature: false,
            redirect: None,
        },
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("EntityTooLarge"), "{body}");
    assert!(
        c.head_object()
            .bucket("forms")
            .key("uploads/big.txt")
            .send()
            .await
            .is_err()
    );

    // A key outside the policy's starts-with: refused (s3s answers 400 InvalidPolicyDocument where
    // AWS says 403 AccessDenied).
    let (st, _, body) = post(
        &srv,
        "forms",
        Form {
            key: "elsewhere/x.txt",
            file: b"x".to_vec(),
            tamper_signature: false,
            redirect: None,
        },
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("InvalidPolicyDocument"), "{body}");
    assert!(
        c.head_object()
            .bucket("forms")
            .key("elsewhere/x.txt")
            .send()
            .await
            .is_err()
    );

    // A forged signature: refused.
    let (st, _, body) = post(
        &srv,
        "forms",
        Form {
            key: "uploads/forged.txt",
            file: b"x".to_vec(),
            tamper_signature: true,
            redirect: None,
        },
    )
    .await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
}
