//! Authentication, presigned URLs, virtual-hosted-style addressing and malformed requests.

use crate::common::*;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn signatures_are_enforced() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("auth").send().await.unwrap();

    let (st, h, body) = raw("GET", &format!("{}/auth", srv.s3), &[], vec![]).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert!(h.contains_key("x-amz-request-id"));

    let wrong = client_for(&srv.s3, AK, "not-the-secret-at-all");
    let e = wrong.list_objects_v2().bucket("auth").send().await.unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
    assert_eq!(status(&e), 403);

    let unknown = client_for(&srv.s3, "nobody", SK);
    let e = unknown.list_buckets().send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidAccessKeyId");

    // A client whose clock is 20 minutes behind.
    let skewed = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&srv.s3)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(AK, SK, None, None, "t"))
        .force_path_style(true)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .time_source(aws_smithy_async::time::StaticTimeSource::new(
            SystemTime::now() - Duration::from_secs(20 * 60),
        ))
        // Without retries the SDK cannot correct its clock from our Date header.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    let e = aws_sdk_s3::Client::from_conf(skewed)
        .list_buckets()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "RequestTimeTooSkewed");
}

#[tokio::test]
async fn presigned_urls() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("pre").send().await.unwrap();
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let put = c
        .put_object()
        .bucket("pre")
        .key("up.txt")
        .presigned(cfg.clone())
        .await
        .unwrap();
    let (st, _, body) = raw("PUT", put.uri(), &[], b"presigned body".to_vec()).await;
    assert_eq!(st, 200, "{body}");
    let get = c.get_object().bucket("pre").key("up.txt").presigned(cfg).await.unwrap();
    let (st, _, body) = raw("GET", get.uri(), &[], vec![]).await;
    assert_eq!((st, body.as_str()), (200, "presigned body"));

    // Tampered signature.
    let uri = get.uri().to_string();
    let at = uri.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &uri[at..at + 1] == "0" { "1" } else { "0" };
    let bad = format!("{}{}{}", &uri[..at], flipped, &uri[at + 1..]);
    let (st, _, body) = raw("GET", &bad, &[], vec![]).await;
    assert_eq!(st, 403, "{body}");

    // Expired: signed an hour ago, valid for a minute.
    let old = PresigningConfig::builder()
        .start_time(SystemTime::now() - Duration::from_secs(3600))
        .expires_in(Duration::from_secs(60))
        .build()
        .unwrap();
    let get = c.get_object().bucket("pre").key("up.txt").presigned(old).await.unwrap();
    let (st, _, body) = raw("GET", get.uri(), &[], vec![]).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("AccessDenied") && body.contains("expired"), "{body}");
}

/// Security review finding (high): `x-amz-*` headers outside SignedHeaders were honoured, so a
/// presigned PUT could be replayed with an added `x-amz-acl: public-read` or
/// `x-amz-copy-source`. They are refused as AWS refuses them (403 AccessDenied naming them).
#[tokio::test]
async fn unsigned_amz_headers_are_refused() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("replay").send().await.unwrap();
    c.put_object()
        .bucket("replay")
        .key("secret.txt")
        .body(ByteStream::from_static(b"private data"))
        .send()
        .await
        .unwrap();
    let cfg = PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let put = c
        .put_object()
        .bucket("replay")
        .key("up.txt")
        .presigned(cfg)
        .await
        .unwrap();
    for extra in [
        ("x-amz-acl", "public-read"),
        ("x-amz-copy-source", "/replay/secret.txt"),
    ] {
        let (st, _, body) = raw("PUT", put.uri(), &[extra], b"replayed".to_vec()).await;
        assert_eq!(st, 403, "{extra:?}: {body}");
        assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
        assert!(
            body.contains(&format!("<HeadersNotSigned>{}</HeadersNotSigned>", extra.0)),
            "{body}"
        );
    }
    let e = c.head_object().bucket("replay").key("up.txt").send().await.unwrap_err();
    assert_eq!(status(&e), 404, "a refused replay stored the object");
    // An anonymous read of what a replay would have made public is still refused.
    let (st, _, _) = raw("GET", &format!("{}/replay/up.txt", srv.s3), &[], vec![]).await;
    assert_eq!(st, 403);
    // The presigned request itself, as signed, still works.
    let (st, _, body) = raw("PUT", put.uri(), &[], b"as signed".to_vec()).await;
    assert_eq!(st, 200, "{body}");
}

/// Security review finding (medium): Signature Version 2 was accepted by default and presigned
/// URLs had no maximum lifetime. V2 is refused unless enabled; AWS's 7-day limit applies.
#[tokio::test]
async fn signature_v2_and_week_long_presigned_urls_are_refused() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("legacy").send().await.unwrap();
    let (st, _, body) = raw(
        "GET",
        &format!("{}/legacy", srv.s3),
        &[("authorization", &format!("AWS {AK}:bm90LWNoZWNrZWQ="))],
        vec![],
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body.contains("<Code>InvalidRequest</Code>") && body.contains("AWS4-HMAC-SHA256"),
        "{body}"
    );
    let (st, _, body) = raw(
        "GET",
        &format!("{}/legacy?AWSAccessKeyId={AK}&Expires=9999999999&Signature=x", srv.s3),
        &[],
        vec![],
    )
    .await;
    assert_eq!(st, 400, "{body}");

    let cfg = PresigningConfig::expires_in(Duration::from_secs(600)).unwrap();
    c.put_object()
        .bucket("legacy")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    let get = c.get_object().bucket("legacy").key("k").presigned(cfg).await.unwrap();
    let (st, _, body) = raw("GET", get.uri(), &[], vec![]).await;
    assert_eq!(st, 200, "{body}");
    let long = get.uri().replace("X-Amz-Expires=600", "X-Amz-Expires=604801");
    assert_ne!(long, get.uri());
    let (st, _, body) = raw("GET", &long, &[], vec![]).await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("AuthorizationQueryParametersError"), "{body}");
}

#[tokio::test]
async fn virtual_hosted_style() {
    let srv = Server::start_with(&["--domain", "s3.test"], &[]);
    let c = srv.client();
    c.create_bucket().bucket("vhost").send().await.unwrap();
    c.put_object()
        .bucket("vhost")
        .key("dir/obj")
        .body(ByteStream::from_static(b"vh"))
        .send()
        .await
        .unwrap();
    let port = srv.s3_addr.rsplit(':').next().unwrap().to_string();
    let vh_conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(format!("http://s3.test:{port}"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(AK, SK, None, None, "t"))
        .force_path_style(false)
        .build();
    let vh = aws_sdk_s3::Client::from_conf(vh_conf);
    let p = vh
        .get_object()
        .bucket("vhost")
        .key("dir/obj")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    assert!(
        p.uri().starts_with(&format!("http://vhost.s3.test:{port}/dir/obj")),
        "{}",
        p.uri()
    );
    // Connect to 127.0.0.1 but present the virtual host, as a resolver would.
    let url = p.uri().replace(&format!("vhost.s3.test:{port}"), &srv.s3_addr);
    let host = format!("vhost.s3.test:{port}");
    let (st, _, body) = raw("GET", &url, &[("host", host.as_str())], vec![]).await;
    assert_eq!((st, body.as_str()), (200, "vh"));
}

#[tokio::test]
async fn malformed_requests_get_s3_errors() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("bad").send().await.unwrap();

    // Oversized header section.
    let big = "x".repeat(20_000);
    let (st, _, body) = raw(
        "GET",
        &format!("{}/bad", srv.s3),
        &[("x-amz-meta-big", big.as_str())],
        vec![],
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("RequestHeaderSectionTooLarge"), "{body}");

    // User metadata over 2 KiB.
    let e = c
        .put_object()
        .bucket("bad")
        .key("m")
        .metadata("big", "v".repeat(3000))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MetadataTooLarge");

    // Malformed XML bodies (the request is signed over the broken body).
    let id = c
        .create_multipart_upload()
        .bucket("bad")
        .key("mp")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let cfg = PresigningConfig::expires_in(Duration::from_secs(60)).unwrap();
    for broken in [
        "<CompleteMultipartUpload><Part>",
        "not xml at all",
        "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
    ] {
        let e = c
            .complete_multipart_upload()
            .bucket("bad")
            .key("mp")
            .upload_id(&id)
            .customize()
            .mutate_request(move |req| {
                *req.body_mut() = aws_smithy_types::body::SdkBody::from(broken);
                req.headers_mut().insert("content-length", broken.len().to_string());
            })
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "MalformedXML", "{broken}");
        assert_eq!(status(&e), 400);
    }

    // A body shorter than its Content-Length: nothing is stored, the server keeps serving.
    let p = c.put_object().bucket("bad").key("short").presigned(cfg).await.unwrap();
    let uri: http::Uri = p.uri().parse().unwrap();
    let mut sock = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n",
        uri.path_and_query().unwrap(),
        uri.authority().unwrap()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&[7u8; 1000]).await.unwrap();
    sock.shutdown().await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf)).await;
    let e = c.head_object().bucket("bad").key("short").send().await.unwrap_err();
    assert_eq!(status(&e), 404, "a truncated upload must not be visible");
    c.put_object()
        .bucket("bad")
        .key("after")
        .body(ByteStream::from_static(b"ok"))
        .send()
        .await
        .unwrap();

    // Bad part numbers and unknown upload ids.
    let e = c
        .upload_part()
        .bucket("bad")
        .key("mp")
        .upload_id(&id)
        .part_number(10001)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
    let e = c
        .upload_part()
        .bucket("bad")
        .key("mp")
        .upload_id("nope")
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchUpload");
    let e = c.list_objects_v2().bucket("bad").max_keys(-1).send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");
}

/// Reads from `sock` until it closes (or 10 s pass).
async fn read_all(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).to_lowercase()
}

#[tokio::test]
async fn a_request_refused_before_its_body_is_read_leaves_the_connection_usable() {
    let srv = Server::start();
    srv.client().create_bucket().bucket("early").send().await.unwrap();

    // An unsigned PUT is refused before its body is read; its client is still sending. The
    // answer waits for the rest of the body, and the connection carries the next request (a
    // proxy in front would otherwise take the rest of the body for that request).
    let mut sock = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    sock.write_all(b"PUT /early/k HTTP/1.1\r\nHost: s3\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    sock.write_all(&[7u8; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = sock.write_all(&[7u8; 99_000]).await;
    let _ = sock
        .write_all(b"GET /early HTTP/1.1\r\nHost: s3\r\nConnection: close\r\n\r\n")
        .await;
    let got = read_all(&mut sock).await;
    assert_eq!(got.matches("http/1.1 403").count(), 2, "both requests answered:\n{got}");
    assert_eq!(
        got.matches("connection: close").count(),
        1,
        "only the last one closes:\n{got}"
    );
    assert!(got.contains("<code>accessdenied</code>"), "{got}");

    // A body too long to read through is not waited for: the refusal comes at once and closes.
    let mut sock = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    sock.write_all(b"PUT /early/k HTTP/1.1\r\nHost: s3\r\nContent-Length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    sock.write_all(&[7u8; 1000]).await.unwrap();
    let got = read_all(&mut sock).await;
    assert!(got.starts_with("http/1.1 403"), "{got}");
    assert!(got.contains("connection: close"), "{got}");

    // A client waiting for `100 Continue` is asked for its body all the same, then refused: the
    // connection stays in step whether or not the client would have sent the body.
    let mut sock = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    sock.write_all(b"PUT /early/k HTTP/1.1\r\nHost: s3\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(10), sock.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    sock.write_all(&[7u8; 5000]).await.unwrap();
    sock.write_all(b"GET /early HTTP/1.1\r\nHost: s3\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_all(&mut sock).await;
    assert_eq!(got.matches("http/1.1 403").count(), 2, "both requests answered:\n{got}");
    // Too long a body is not asked for: refused at once, and the connection closes.
    let mut sock = tokio::net::TcpStream::connect(&srv.s3_addr).await.unwrap();
    sock.write_all(b"PUT /early/k HTTP/1.1\r\nHost: s3\r\nContent-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let got = read_all(&mut sock).await;
    assert!(
        got.starts_with("http/1.1 403"),
        "no 100 Continue before the refusal: {got}"
    );
    assert!(got.contains("connection: close"), "{got}");
}
