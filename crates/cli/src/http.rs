//! The CLI's one HTTP client: a request to a node's admin API over plain HTTP or HTTPS. Over
//! HTTPS the node's certificate must chain to the CA of `--ca-file` (or the CA a node made for
//! itself in its data directory, found through `STORAGE_PATH` or `./data`).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::rustls;

/// The CA file chosen at start (`--ca-file`), if any.
static CA_FILE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Records `--ca-file` for every later request.
pub fn set_ca_file(path: Option<PathBuf>) {
    let _ = CA_FILE.set(path);
}

/// Where a node keeps the CA of the certificate it made for itself.
fn self_made_ca_candidates() -> Vec<PathBuf> {
    let mut c = Vec::new();
    if let Some(d) = std::env::var_os("STORAGE_PATH") {
        c.push(Path::new(&d).join("tls").join("ca.pem"));
    }
    c.push(PathBuf::from("./data/tls/ca.pem"));
    c
}

/// The CA to trust: `--ca-file`, or a node's self-made CA in its data directory.
fn ca_file() -> Result<PathBuf> {
    if let Some(Some(p)) = CA_FILE.get() {
        return Ok(p.clone());
    }
    let candidates = self_made_ca_candidates();
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    bail!(
        "the admin URL is https:// but no CA to trust was given: pass --ca-file (IRONBUCKET_CA_FILE), e.g. the node's <data-dir>/tls/ca.pem (looked in {})",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let path = ca_file()?;
    let pem = std::fs::read(&path).with_context(|| format!("cannot read the CA file {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("the CA file {} is not PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("the CA file {} holds an unusable certificate", path.display()))?;
    }
    if roots.is_empty() {
        bail!("the CA file {} holds no certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// One request; the status and the body as text.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
    timeout: u64,
) -> Result<(u16, String)> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let uri: hyper::Uri = url.parse().with_context(|| format!("invalid admin URL {base:?}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("admin URL must start with https:// or http:// (got {base:?})"),
    };
    let host = uri.host().context("admin URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req.body(Full::new(body)).context("building the request")?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let _ = tcp.set_nodelay(true);
        let resp = if tls {
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
                    .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
            let stream = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS with {url} failed (is --ca-file the CA of the node's certificate?)"))?;
            send(TokioIo::new(stream), req)
                .await
                .with_context(|| format!("cannot reach {url}"))?
        } else {
            send(TokioIo::new(tcp), req)
                .await
                .with_context(|| format!("cannot reach {url} (if the node serves HTTPS, the default, use https://)"))?
        };
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the response")?
            .to_bytes();
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(timeout), exchange)
        .await
        .with_context(|| format!("no answer from {url} within {timeout} s"))?
}

async fn send<S>(io: TokioIo<S>, req: hyper::Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
