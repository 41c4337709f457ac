//! The S3 HTTP front end. Parses requests, checks signatures and routes operations with `s3s`,
//! and serves them from an `Arc<dyn ObjectStore>`; it never knows whether that store is one
//! node or a cluster. `s3s` is confined to this crate.
//!
//! [`S3HttpService`] is the hyper service the server binds: it wraps the `s3s` service with a
//! request id on every response, a header-size limit and Prometheus metrics.

mod authz;
mod convert;
mod cors;
mod front;
mod guard;
mod http_service;
mod leftover;
mod metrics;
mod post_gate;
mod request;

pub use http_service::S3HttpService;

/// Entry points for the fuzz targets in `fuzz/`: the parsers this crate runs on a request's
/// head before `s3s` sees it. Each must return (never panic, never allocate without bound) on any
/// input. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// The signature envelope checks (SigV2 refusal, presigned lifetime, unsigned `x-amz-*`).
    pub fn signature_envelope(headers: &http::HeaderMap, query: Option<&str>) -> bool {
        let strict = crate::guard::check(headers, query, false).is_ok();
        let lenient = crate::guard::check(headers, query, true).is_ok();
        // Allowing SigV2 can only admit more.
        assert!(!strict || lenient);
        strict
    }

    /// The fields of a browser form before its file.
    pub fn post_form_head(content_type: &str, body: &[u8]) -> bool {
        match crate::post_gate::boundary(content_type) {
            Some(b) => matches!(crate::post_gate::parse_head(body, &b), Ok(Some(_))),
            None => false,
        }
    }

    /// `x-amz-copy-source` as the access check reads it.
    pub fn copy_source(raw: &str) -> bool {
        crate::authz::parse_copy_source(raw).is_some()
    }
}
pub use metrics::S3Metrics;

use ironbucket_store::ObjectStore;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3ServiceBuilder;
use s3s::{S3Result, s3_error};
use std::collections::HashMap;
use std::sync::Arc;

/// Settings of the S3 front end.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Region reported by GetBucketLocation and accepted in CreateBucket.
    pub region: String,
    /// Base domains for virtual-hosted-style requests (`bucket.domain`); empty: path style only.
    pub domains: Vec<String>,
    /// Access key id to secret key.
    pub credentials: Vec<(String, String)>,
    /// Largest accepted request header section, in bytes.
    pub max_header_bytes: usize,
    /// Largest total size of `x-amz-meta-*` names and values, in bytes (S3: 2 KiB).
    pub max_user_metadata_bytes: usize,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (the load balancer).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Accept Signature Version 2 (deprecated by AWS; refused unless set).
    pub allow_sigv2: bool,
    /// Requests per second per access key (0: no limit); over it: 503 SlowDown.
    pub rate_per_key: u32,
    /// Requests per second per client address (0: no limit); over it: 503 SlowDown.
    pub rate_per_ip: u32,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            domains: vec![],
            credentials: vec![],
            max_header_bytes: 16 * 1024,
            max_user_metadata_bytes: 2048,
            trusted_proxies: vec![],
            allow_sigv2: false,
            rate_per_key: 0,
            rate_per_ip: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::host::S3Host;

    #[test]
    fn virtual_hosts() {
        let v = VirtualHosts {
            domains: vec!["s3.test".into()],
        };
        assert_eq!(v.parse_host_header("bkt.s3.test:9000").unwrap().bucket(), Some("bkt"));
        assert_eq!(v.parse_host_header("a.b.s3.test").unwrap().bucket(), Some("a.b"));
        assert_eq!(v.parse_host_header("s3.test:9000").unwrap().bucket(), None);
        assert_eq!(v.parse_host_header("127.0.0.1:9000").unwrap().bucket(), None);
        assert_eq!(v.parse_host_header("xs3.test").unwrap().bucket(), None);
        assert_eq!(strip_port("[::1]:9000"), "[::1]");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid domain {0:?}: expected a host name such as s3.example.com")]
    BadDomain(String),
    #[error("no access key configured")]
    NoCredentials,
}

/// Access keys accepted for SigV4.
struct KeyAuth {
    /// Root keys from the configuration.
    keys: HashMap<String, SecretKey>,
    /// Other keys, managed through the admin API.
    store: Arc<dyn ObjectStore>,
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if let Some(k) = self.keys.get(access_key) {
            return Ok(k.clone());
        }
        match self.store.key_secret(access_key).await {
            Ok(Some((secret, info))) if info.enabled => Ok(SecretKey::from(secret)),
            _ => Err(s3_error!(InvalidAccessKeyId)),
        }
    }
}

/// Virtual-hosted-style addressing: `bucket.<domain>[:port]` names a bucket; the bare domain,
/// IP addresses and any other host name are path style. (s3s's `MultiDomain` treats unknown
/// hosts as bucket names and does not strip the port, which breaks path-style clients that
/// connect by IP.)
#[derive(Clone)]
pub(crate) struct VirtualHosts {
    domains: Vec<String>,
}

impl VirtualHosts {
    /// The bucket named by a virtual host, if the host is `<bucket>.<domain>[:port]`.
    pub(crate) fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        let name = strip_port(host);
        self.domains.iter().find_map(|d| {
            (name.len() > d.len() + 1
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.')
                .then(|| &name[..name.len() - d.len() - 1])
        })
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let name = strip_port(host);
        for d in &self.domains {
            if name.len() > d.len() + 1
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.'
            {
                let bucket = &name[..name.len() - d.len() - 1];
                return Ok(s3s::host::VirtualHost::new(name).with_bucket(bucket));
            }
        }
        Ok(s3s::host::VirtualHost::new(name))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Builds the hyper service for the S3 API.
pub fn build(store: Arc<dyn ObjectStore>, cfg: &S3Config, metrics: Arc<S3Metrics>) -> Result<S3HttpService, Error> {
    let hosts = (!cfg.domains.is_empty()).then(|| VirtualHosts {
        domains: cfg.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
    });
    let (inner, access) = service_and_access(store.clone(), cfg)?;
    Ok(S3HttpService::new(inner, access, metrics, store, hosts, cfg))
}

/// The bare `s3s` service (auth, routing, the S3 operations) without the request-id, header
/// limit and metrics wrapper; used by benchmarks that call it in-process.
pub fn s3s_service(store: Arc<dyn ObjectStore>, cfg: &S3Config) -> Result<s3s::service::S3Service, Error> {
    Ok(service_and_access(store, cfg)?.0)
}

/// Largest file a browser upload (POST Object) may carry: `s3s` holds it in memory.
pub const MAX_POST_OBJECT_BYTES: u64 = 256 * 1024 * 1024;

fn service_and_access(
    store: Arc<dyn ObjectStore>,
    cfg: &S3Config,
) -> Result<(s3s::service::S3Service, authz::Access), Error> {
    if cfg.credentials.is_empty() {
        return Err(Error::NoCredentials);
    }
    let front = front::Front::new(store.clone(), cfg);
    let mut b = S3ServiceBuilder::new(front);
    b.set_auth(KeyAuth {
        keys: cfg
            .credentials
            .iter()
            .map(|(a, s)| (a.clone(), SecretKey::from(s.as_str())))
            .collect(),
        store: store.clone(),
    });
    let access = authz::Access::new(
        store.clone(),
        cfg.credentials.iter().map(|(a, _)| a.clone()).collect(),
        ironbucket_types::ratelimit::RateLimiter::new(cfg.rate_per_key).map(Arc::new),
    );
    b.set_access(access.clone());
    let mut s3s_cfg = s3s::config::S3Config::default();
    s3s_cfg.post_object_max_file_size = MAX_POST_OBJECT_BYTES;
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(s3s_cfg))));
    if !cfg.domains.is_empty() {
        for d in &cfg.domains {
            if d.contains('/') || d.contains(':') || d.is_empty() {
                return Err(Error::BadDomain(d.clone()));
            }
        }
        b.set_host(VirtualHosts {
            domains: cfg.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        });
    }
    Ok((b.build(), access))
}
