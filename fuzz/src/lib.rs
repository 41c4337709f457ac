//! A signed-request harness for the fuzz targets that go through the whole S3 front end: one
//! `s3s` service over a LocalStore in a temporary directory, shared by every iteration, and a
//! minimal SigV4 header signer (payload `UNSIGNED-PAYLOAD` or a streaming mode, so the fuzzed
//! body is not part of the signature and reaches the parsers).

use hmac::{KeyInit, Mac};
use ironbucket_store::{LocalConfig, LocalStore, ObjectStore};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

pub const AK: &str = "fuzzaccesskey";
pub const SK: &str = "fuzzsecretkey-0123456789";
pub const BUCKET: &str = "fuzz";

pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    svc: s3s::service::S3Service,
    _dir: tempfile::TempDir,
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn sha_hex(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

/// `YYYYMMDDTHHMMSSZ` for now.
fn amz_date() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` without its separators and milliseconds.
    let t = ironbucket_types::audit::rfc3339_millis(ms);
    format!(
        "{}{}{}T{}{}{}Z",
        &t[0..4],
        &t[5..7],
        &t[8..10],
        &t[11..13],
        &t[14..16],
        &t[17..19]
    )
}

impl Harness {
    pub fn get() -> &'static Harness {
        static H: OnceLock<Harness> = OnceLock::new();
        H.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cfg = LocalConfig::new(dir.path());
            cfg.storage.fsync = false;
            let store: Arc<dyn ObjectStore> = rt.block_on(async { LocalStore::open(cfg, None).expect("store") });
            let _ = rt.block_on(store.create_bucket(BUCKET));
            let s3 = ironbucket_s3::S3Config {
                credentials: vec![(AK.into(), SK.into())],
                ..Default::default()
            };
            let svc = ironbucket_s3::s3s_service(store, &s3).expect("service");
            Harness { rt, svc, _dir: dir }
        })
    }

    /// Sends a request signed with the root key; `content_sha` is the `x-amz-content-sha256`
    /// value (`UNSIGNED-PAYLOAD` or a streaming mode). Returns the status.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, String)],
        content_sha: &str,
        body: Vec<u8>,
    ) -> u16 {
        let dt = amz_date();
        let date = &dt[..8];
        let scope = format!("{date}/us-east-1/s3/aws4_request");
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), "127.0.0.1:9000".into()),
            ("x-amz-content-sha256".into(), content_sha.into()),
            ("x-amz-date".into(), dt.clone()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        headers.sort();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
        // The canonical query: every parameter as `name=value` (`delete` is `delete=`), sorted.
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.contains('=') {
                    p.to_string()
                } else {
                    format!("{p}=")
                }
            })
            .collect();
        params.sort();
        let canonical_query = params.join("&");
        let canonical = format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed}\n{content_sha}");
        let sts = format!("AWS4-HMAC-SHA256\n{dt}\n{scope}\n{}", sha_hex(canonical.as_bytes()));
        let k = hmac(format!("AWS4{SK}").as_bytes(), date.as_bytes());
        let k = hmac(&k, b"us-east-1");
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        let sig = hex::encode(hmac(&k, sts.as_bytes()));
        let uri = if query.is_empty() {
            format!("http://127.0.0.1:9000{path}")
        } else {
            format!("http://127.0.0.1:9000{path}?{query}")
        };
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = req.header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={signed}, Signature={sig}"),
        );
        let Ok(req) = req.body(s3s::Body::from(body)) else {
            return 0;
        };
        match self.rt.block_on(self.svc.call(req)) {
            Ok(resp) => {
                if std::env::var_os("IRONBUCKET_FUZZ_DEBUG").is_some() {
                    eprintln!("{method} {path}?{query} -> {}", resp.status());
                }
                resp.status().as_u16()
            }
            // An S3 error the service could not render: never expected.
            Err(e) => panic!("the S3 service failed instead of answering: {e:?}"),
        }
    }
}
