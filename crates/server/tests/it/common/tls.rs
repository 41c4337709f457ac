//! Clients for nodes that serve S3 and admin over HTTPS (the default): the AWS SDK and a raw
//! HTTP/1.1 request, each trusting only the CA they are given.

use aws_sdk_s3::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// An S3 client for an `https://` endpoint that trusts only `ca` (PEM).
pub fn tls_client_for(endpoint: &str, ak: &str, sk: &str, ca: &[u8]) -> Client {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(ca.to_vec());
    let ctx = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("TLS context");
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(ctx)
        .build_https();
    Client::from_conf(super::config_for(endpoint, ak, sk).http_client(http).build())
}

/// One request over TLS to `addr` (host:port) as `server_name`, trusting only `ca` (PEM): the
/// status and body, or the TLS or connection error.
pub async fn https_request(
    addr: &str,
    server_name: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    ca: &[u8],
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {server_name}\r\nconnection: close\r\ncontent-length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`https_request`]: a GET as `localhost` without headers; the status.
pub async fn https_get(addr: &str, path: &str, ca: &[u8]) -> Result<u16, String> {
    https_request(addr, "localhost", "GET", path, &[], ca)
        .await
        .map(|(st, _)| st)
}

/// What a node's TLS port answers a plain-HTTP GET of `path` (read for up to 5 s).
pub async fn plain_http_answer(addr: &str, path: &str) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    answer
}
