//! Streaming uploads with per-chunk signatures (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`), signed
//! here from first principles so the test does not share code with the server's verifier.

use crate::common::*;

/// Builds a signed aws-chunked PUT; `tamper` flips a byte of the second chunk after signing.
fn signed_chunked_put(
    host: &str,
    path: &str,
    payload: &[u8],
    chunk: usize,
    tamper: bool,
) -> (Vec<(String, String)>, Vec<u8>) {
    signed_chunked_put_declaring(host, path, payload, chunk, tamper, payload.len(), true)
}

/// As [`signed_chunked_put`], declaring `declared` as the decoded length, with or without a
/// Content-Length header (without: the body goes with `Transfer-Encoding: chunked`).
fn signed_chunked_put_declaring(
    host: &str,
    path: &str,
    payload: &[u8],
    chunk: usize,
    tamper: bool,
    declared: usize,
    with_content_length: bool,
) -> (Vec<(String, String)>, Vec<u8>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let dt = time_fmt(now);
    let date = &dt[..8];
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let chunks: Vec<&[u8]> = payload.chunks(chunk).chain(std::iter::once(&[][..])).collect();
    let encoded_len: usize = chunks
        .iter()
        .map(|c| format!("{:x}", c.len()).len() + ";chunk-signature=".len() + 64 + 2 + c.len() + 2)
        .sum();
    let mut headers = vec![
        ("content-encoding".to_string(), "aws-chunked".to_string()),
        ("content-length".to_string(), encoded_len.to_string()),
        ("host".to_string(), host.to_string()),
        (
            "x-amz-content-sha256".to_string(),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".to_string(),
        ),
        ("x-amz-date".to_string(), dt.clone()),
        ("x-amz-decoded-content-length".to_string(), declared.to_string()),
    ];
    if !with_content_length {
        headers.retain(|(k, _)| k != "content-length");
    }
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "PUT\n{path}\n\n{}\n\n{signed}\nSTREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let sts = format!("AWS4-HMAC-SHA256\n{dt}\n{scope}\n{}", sha_hex(canonical.as_bytes()));
    let k = hmac(format!("AWS4{SK}").as_bytes(), date.as_bytes());
    let k = hmac(&k, b"us-east-1");
    let k = hmac(&k, b"s3");
    let key = hmac(&k, b"aws4_request");
    let seed = hex::encode(hmac(&key, sts.as_bytes()));
    headers.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={signed}, Signature={seed}"),
    ));
    let empty = sha_hex(b"");
    let mut prev = seed;
    let mut body = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{dt}\n{scope}\n{prev}\n{empty}\n{}",
            sha_hex(c)
        );
        let sig = hex::encode(hmac(&key, sts.as_bytes()));
        body.extend(format!("{:x};chunk-signature={sig}\r\n", c.len()).as_bytes());
        let mut data = c.to_vec();
        if tamper && i == 1 {
            data[0] ^= 1;
        }
        body.extend(&data);
        body.extend(b"\r\n");
        prev = sig;
    }
    (headers, body)
}

#[tokio::test]
async fn per_chunk_signed_upload() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("chunked").send().await.unwrap();
    let payload = data(200_000, 42);
    let (headers, body) = signed_chunked_put(&srv.s3_addr, "/chunked/obj", &payload, 65536, false);
    let h: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != "host")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (st, _, resp) = raw("PUT", &format!("{}/chunked/obj", srv.s3), &h, body).await;
    assert_eq!(st, 200, "{resp}");
    let got = body_bytes(c.get_object().bucket("chunked").key("obj").send().await.unwrap()).await;
    assert!(got == payload, "decoded body differs");

    // A chunk altered after signing is refused and nothing is stored.
    let (headers, body) = signed_chunked_put(&srv.s3_addr, "/chunked/bad", &payload, 65536, true);
    let h: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != "host")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (st, _, resp) = raw("PUT", &format!("{}/chunked/bad", srv.s3), &h, body).await;
    assert_eq!(st, 403, "{resp}");
    assert!(resp.contains("SignatureDoesNotMatch"), "{resp}");
    let e = c.head_object().bucket("chunked").key("bad").send().await.unwrap_err();
    assert_eq!(status(&e), 404);
}

/// Sends a request with a `Transfer-Encoding: chunked` body over a raw socket; returns the
/// status line and the rest of the response.
async fn send_chunked(addr: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("PUT {path} HTTP/1.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    for part in body.chunks(10_000) {
        s.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await.unwrap();
        s.write_all(part).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Security review finding: the decoded length of an aws-chunked body was not checked against
/// `x-amz-decoded-content-length` when the body came without a Content-Length. A body that
/// is longer or shorter than it declares is refused and nothing is stored.
#[tokio::test]
async fn decoded_length_must_match_what_the_body_declares() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("declared").send().await.unwrap();
    let payload = data(100_000, 7);
    // Honest, without Content-Length: stored.
    let (h, body) = signed_chunked_put_declaring(
        &srv.s3_addr,
        "/declared/ok",
        &payload,
        65536,
        false,
        payload.len(),
        false,
    );
    let resp = send_chunked(&srv.s3_addr, "/declared/ok", &h, &body).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let got = body_bytes(c.get_object().bucket("declared").key("ok").send().await.unwrap()).await;
    assert!(got == payload);
    for (name, declared, with_len) in [
        ("short-te", payload.len() + 1000, false),
        ("long-te", payload.len() - 1000, false),
        ("short-cl", payload.len() + 1000, true),
        ("long-cl", payload.len() - 1000, true),
    ] {
        let path = format!("/declared/{name}");
        let (h, body) = signed_chunked_put_declaring(&srv.s3_addr, &path, &payload, 65536, false, declared, with_len);
        let resp = if with_len {
            let hs: Vec<(&str, &str)> = h
                .iter()
                .filter(|(k, _)| k != "host")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (st, _, body) = raw("PUT", &format!("{}{path}", srv.s3), &hs, body).await;
            format!("HTTP/1.1 {st}\n{body}")
        } else {
            send_chunked(&srv.s3_addr, &path, &h, &body).await
        };
        assert!(resp.starts_with("HTTP/1.1 400"), "{name}: {resp}");
        let e = c.head_object().bucket("declared").key(name).send().await.unwrap_err();
        assert_eq!(status(&e), 404, "{name} was stored");
    }
}

#[test]
fn time_format() {
    assert_eq!(time_fmt(0), "19700101T000000Z");
    assert_eq!(time_fmt(1_700_000_000), "20231114T221320Z");
}
