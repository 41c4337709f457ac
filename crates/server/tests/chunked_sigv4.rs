#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Streaming uploads with per-chunk signatures (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`), signed
//! here from first principles so the test does not share code with the server's verifier.

mod common;

use common::*;

/// Builds a signed aws-chunked PUT; `tamper` flips a byte of the second chunk after signing.
fn signed_chunked_put(
    host: &str,
    path: &str,
    payload: &[u8],
    chunk: usize,
    tamper: bool,
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
        ("x-amz-decoded-content-length".to_string(), payload.len().to_string()),
    ];
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

#[test]
fn time_format() {
    assert_eq!(time_fmt(0), "19700101T000000Z");
    assert_eq!(time_fmt(1_700_000_000), "20231114T221320Z");
}
