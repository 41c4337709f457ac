//! Browser uploads: an HTML-form POST with a SigV4-signed POST policy, posted as a real
//! multipart/form-data body.

use crate::common::*;
use base64::Engine;

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

/// An unsigned browser form (anonymous POST Object) with `fields` and a file part header; the
/// file's bytes follow.
fn anonymous_form(key: &str) -> (String, Vec<u8>) {
    let boundary = "----AnonBoundary4d2";
    let mut body = Vec::new();
    body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n").as_bytes());
    body.extend(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\n")
            .as_bytes(),
    );
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn anonymous_post(srv: &Server, bucket: &str, key: &str, file: &[u8]) -> (u16, String) {
    let (ct, mut body) = anonymous_form(key);
    body.extend(file);
    body.extend(b"\r\n------AnonBoundary4d2--\r\n");
    let (st, _, text) = raw(
        "POST",
        &format!("{}/{bucket}", srv.s3),
        &[("content-type", ct.as_str())],
        body,
    )
    .await;
    (st, text)
}

/// Security review finding (high): an anonymous POST Object was buffered (up to 5 GiB) before it
/// was authorized, and authorized against the bucket, not the key the form names. Now an
/// anonymous form the bucket does not admit is refused as soon as its fields are read, and a
/// policy is evaluated on `bucket/key`.
#[tokio::test]
async fn anonymous_browser_uploads_are_authorized_by_key_before_the_file_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("closed").send().await.unwrap();
    c.create_bucket().bucket("drop").send().await.unwrap();

    // A closed bucket: the refusal comes while the client is still sending a (claimed) 4 GiB file.
    let (ct, head) = anonymous_form("x.bin");
    let declared = head.len() as u64 + (4u64 << 30);
    let mut s = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    let req = format!(
        "POST /closed HTTP/1.1\r\nhost: {}\r\ncontent-type: {ct}\r\ncontent-length: {declared}\r\n\r\n",
        srv.s3_addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(&head).await.unwrap();
    s.write_all(b"the first bytes of a huge file").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer while the file was still coming: the server waited for the body")
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("AccessDenied"), "{resp}");

    // A policy that lets everyone drop files under uploads/ but never under uploads/admin/.
    let policy = r#"{"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::drop/uploads/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::drop/uploads/admin/*"}]}"#;
    c.put_bucket_policy()
        .bucket("drop")
        .policy(policy)
        .send()
        .await
        .unwrap();
    let (st, body) = anonymous_post(&srv, "drop", "uploads/photo.txt", b"a photo").await;
    assert!(st == 204 || st == 200 || st == 201, "{st} {body}");
    let got = c
        .get_object()
        .bucket("drop")
        .key("uploads/photo.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(body_bytes(got).await, b"a photo");
    for key in ["uploads/admin/evil.txt", "elsewhere.txt"] {
        let (st, body) = anonymous_post(&srv, "drop", key, b"nope").await;
        assert_eq!(st, 403, "{key}: {body}");
        let e = c.head_object().bucket("drop").key(key).send().await.unwrap_err();
        assert_eq!(status(&e), 404, "{key} was stored");
    }
    // `${filename}` in the key is resolved before the policy sees it.
    let (st, body) = anonymous_post(&srv, "drop", "uploads/admin/${filename}", b"nope").await;
    assert_eq!(st, 403, "{body}");
}
