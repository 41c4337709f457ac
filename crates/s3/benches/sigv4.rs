#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SigV4 verification plus routing: a signed HeadBucket through the s3s service in-process
//! (no network), against a LocalStore.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use criterion::{Criterion, criterion_group, criterion_main};
use ironbucket_s3::S3Config;
use ironbucket_store::{LocalConfig, LocalStore, ObjectStore};
use std::sync::Arc;
use std::time::SystemTime;

fn signed_head(identity: &Identity, settings: &SigningSettings) -> http::Request<s3s::Body> {
    let url = "http://127.0.0.1:9000/bench-bucket";
    let mut req = http::Request::builder()
        .method("HEAD")
        .uri(url)
        .header("host", "127.0.0.1:9000")
        .body(s3s::Body::empty())
        .unwrap();
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region("us-east-1")
        .name("s3")
        .time(SystemTime::now())
        .settings(settings.clone())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
        .collect();
    let signable = SignableRequest::new("HEAD", url, headers.into_iter(), SignableBody::UnsignedPayload).unwrap();
    let (instr, _) = sign(signable, &params).unwrap().into_parts();
    instr.apply_to_request_http1x(&mut req);
    req
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        rt.block_on(async { LocalStore::open(LocalConfig::new(dir.path()), None).unwrap() });
    rt.block_on(store.create_bucket("bench-bucket")).unwrap();
    let cfg = S3Config {
        credentials: vec![("benchkey".into(), "benchsecret".into())],
        ..Default::default()
    };
    let svc = ironbucket_s3::s3s_service(store, &cfg).unwrap();
    let identity: Identity = Credentials::new("benchkey", "benchsecret", None, None, "bench").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    // Requests are signed outside the timed section; only verification and routing are measured.
    c.bench_function("sigv4 verify + route HeadBucket (in-process)", |b| {
        b.iter_batched(
            || signed_head(&identity, &settings),
            |req| {
                let resp = rt.block_on(svc.call(req)).unwrap();
                assert_eq!(resp.status(), 200);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("sigv4 client signing (aws-sigv4)", |b| {
        b.iter(|| signed_head(&identity, &settings))
    });
}

criterion_group!(g, benches);
criterion_main!(g);
