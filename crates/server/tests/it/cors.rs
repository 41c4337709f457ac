//! Bucket CORS: configuration through the SDK, preflights and actual requests from browsers.

use crate::common::*;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use std::time::Duration;

#[tokio::test]
async fn cors_rules_preflight_and_actual_requests() {
    let srv = Server::start();
    let c = srv.client();
    c.create_bucket().bucket("web").send().await.unwrap();
    c.put_object()
        .bucket("web")
        .key("app.js")
        .body(ByteStream::from_static(b"js"))
        .send()
        .await
        .unwrap();
    let url = format!("{}/web/app.js", srv.s3);
    let pre = |origin: &'static str, method: &'static str, hdrs: &'static str| {
        let url = url.clone();
        async move {
            let mut h = vec![("origin", origin), ("access-control-request-method", method)];
            if !hdrs.is_empty() {
                h.push(("access-control-request-headers", hdrs));
            }
            raw("OPTIONS", &url, &h, vec![]).await
        }
    };
    // No configuration: preflights are refused, GetBucketCors says so.
    assert_eq!(pre("https://app.example.com", "GET", "").await.0, 403);
    let e = c.get_bucket_cors().bucket("web").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchCORSConfiguration");

    let rule = CorsRule::builder()
        .allowed_origins("https://*.example.com")
        .allowed_methods("GET")
        .allowed_methods("PUT")
        .allowed_headers("x-amz-*")
        .allowed_headers("content-type")
        .expose_headers("ETag")
        .max_age_seconds(600)
        .build()
        .unwrap();
    c.put_bucket_cors()
        .bucket("web")
        .cors_configuration(CorsConfiguration::builder().cors_rules(rule).build().unwrap())
        .send()
        .await
        .unwrap();
    let got = c.get_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(got.cors_rules()[0].allowed_methods(), ["GET", "PUT"]);

    let (st, h, body) = pre("https://app.example.com", "PUT", "Content-Type, X-Amz-Date").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "Content-Type, X-Amz-Date");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-expose-headers"], "ETag");
    // Wrong origin, method or header: refused.
    assert_eq!(pre("https://evil.org", "GET", "").await.0, 403);
    assert_eq!(pre("https://app.example.com", "DELETE", "").await.0, 403);
    assert_eq!(pre("https://app.example.com", "GET", "authorization").await.0, 403);
    let (st, _, body) = raw("OPTIONS", &url, &[], vec![]).await;
    assert_eq!(st, 400, "{body}");

    // An actual (signed) request from an allowed origin carries the CORS headers; others do not.
    let p = c
        .get_object()
        .bucket("web")
        .key("app.js")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let (st, h, _) = raw("GET", p.uri(), &[("origin", "https://app.example.com")], vec![]).await;
    assert_eq!(st, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let (_, h, _) = raw("GET", p.uri(), &[("origin", "https://evil.org")], vec![]).await;
    assert!(!h.contains_key("access-control-allow-origin"));
    let (_, h, _) = raw("GET", p.uri(), &[], vec![]).await;
    assert!(!h.contains_key("access-control-allow-origin"));

    // Invalid rules are refused; deleting the configuration turns CORS off again.
    let bad = CorsRule::builder()
        .allowed_origins("*")
        .allowed_methods("PATCH")
        .build()
        .unwrap();
    let e = c
        .put_bucket_cors()
        .bucket("web")
        .cors_configuration(CorsConfiguration::builder().cors_rules(bad).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400);
    c.delete_bucket_cors().bucket("web").send().await.unwrap();
    assert_eq!(pre("https://app.example.com", "GET", "").await.0, 403);
}
