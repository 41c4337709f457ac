//! A lean S3 client: SigV4 (aws-sigv4, `UNSIGNED-PAYLOAD`) over hyper with pooled keep-alive
//! connections and TCP_NODELAY. Responses are returned raw; checking them is the caller's job.

use anyhow::{Context, Result};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

pub struct S3Client {
    http: Client<HttpConnector, Full<Bytes>>,
    endpoints: Vec<String>,
    next: AtomicUsize,
    identity: Identity,
    region: String,
    settings: SigningSettings,
}

/// What came back.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    /// The body, when collected (always for errors).
    pub body: Bytes,
    /// Body length as received.
    pub len: u64,
    /// MD5 (hex) of the body, when asked for with [`Body::Count`].
    pub md5: Option<String>,
}

/// What to do with a successful response body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Keep it (listings, XML answers).
    Collect,
    /// Count its bytes (and hash them if `md5`) as it streams in, keeping nothing: large GETs
    /// then cost the client no buffering.
    Count { md5: bool },
}

impl Reply {
    /// The S3 error code in the body, or `HTTP <status>`.
    pub fn error_code(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match (text.find("<Code>"), text.find("</Code>")) {
            (Some(a), Some(b)) if b > a => text[a + 6..b].to_string(),
            _ => format!("HTTP {}", self.status),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Percent-encodes an object key for a URL path (keeps `/`).
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl S3Client {
    pub fn new(endpoints: Vec<String>, access_key: &str, secret_key: &str, region: &str, pool: usize) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.max(1))
            .build(conn);
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity: Identity = Credentials::new(access_key, secret_key, None, None, "ironbucket-bench").into();
        Self {
            http,
            endpoints: endpoints
                .into_iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            next: AtomicUsize::new(0),
            identity,
            region: region.to_string(),
            settings,
        }
    }

    /// Sends one signed request. `path_and_query` starts with `/`.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply> {
        self.send_with(method, path_and_query, headers, body, Body::Collect)
            .await
    }

    pub async fn send_with(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Bytes,
        sink: Body,
    ) -> Result<Reply> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let url = format!("{}{}", self.endpoints[i], path_and_query);
        let mut req = http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let mut req = req.body(Full::new(body.clone())).context("building request")?;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(self.settings.clone())
            .build()
            .context("signing parameters")?
            .into();
        let signable_headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
            .collect();
        let signable = SignableRequest::new(
            method,
            &url,
            signable_headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .context("signable request")?;
        let (instructions, _) = sign(signable, &params).context("signing")?.into_parts();
        instructions.apply_to_request_http1x(&mut req);
        let resp = self.http.request(req).await.context("connection")?;
        let status = resp.status().as_u16();
        let (parts, mut body) = resp.into_parts();
        match sink {
            Body::Count { md5 } if (200..300).contains(&status) => {
                use md5::Digest;
                let mut hasher = md5.then(md5::Md5::new);
                let mut len = 0u64;
                while let Some(frame) = body.frame().await {
                    let frame = frame.context("reading response body")?;
                    if let Some(data) = frame.data_ref() {
                        len += data.len() as u64;
                        if let Some(h) = hasher.as_mut() {
                            h.update(data);
                        }
                    }
                }
                let md5 = hasher.map(|h| hex::encode(h.finalize()));
                Ok(Reply {
                    status,
                    headers: parts.headers,
                    body: Bytes::new(),
                    len,
                    md5,
                })
            }
            _ => {
                let body = body.collect().await.context("reading response body")?.to_bytes();
                Ok(Reply {
                    status,
                    headers: parts.headers,
                    len: body.len() as u64,
                    body,
                    md5: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encoding() {
        assert_eq!(encode_key("a b/c+é"), "a%20b/c%2B%C3%A9");
    }

    #[test]
    fn error_code_from_body() {
        let r = Reply {
            status: 403,
            headers: Default::default(),
            body: Bytes::from_static(b"<Error><Code>SignatureDoesNotMatch</Code></Error>"),
            len: 0,
            md5: None,
        };
        assert_eq!(r.error_code(), "SignatureDoesNotMatch");
        let r = Reply {
            status: 404,
            headers: Default::default(),
            body: Bytes::new(),
            len: 0,
            md5: None,
        };
        assert_eq!(r.error_code(), "HTTP 404");
    }
}
