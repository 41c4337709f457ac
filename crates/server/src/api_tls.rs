//! TLS on the S3 and admin ports (rustls): the certificate chain and key come from PEM files and
//! are read again when either file changes, so a renewed certificate is served without a
//! restart (connections already open keep the one they started with).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::rustls;

/// How often the files are checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The serving configuration and the files it came from.
pub struct ApiTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<rustls::ServerConfig>, Option<SystemTime>)>,
}

/// The newest modification time of the two files.
fn stamp(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(cert).max(m(key))
}

/// Reads the chain and key and builds a server configuration (HTTP/1.1 and HTTP/2 by ALPN).
fn load(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("cannot read API_TLS_CERT_FILE {}", cert.display()))?,
    ))
    .collect::<Result<_, _>>()
    .with_context(|| format!("API_TLS_CERT_FILE {} is not PEM", cert.display()))?;
    if certs.is_empty() {
        bail!("API_TLS_CERT_FILE {} holds no certificate", cert.display());
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("cannot read API_TLS_KEY_FILE {}", key.display()))?,
    ))
    .with_context(|| format!("API_TLS_KEY_FILE {} is not PEM", key.display()))?
    .with_context(|| format!("API_TLS_KEY_FILE {} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the API certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl ApiTls {
    /// Loads the files; fails naming the file at fault.
    pub fn open(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>> {
        let cfg = load(&cert, &key)?;
        let at = stamp(&cert, &key);
        Ok(Arc::new(Self {
            cert,
            key,
            current: RwLock::new((Arc::new(cfg), at)),
        }))
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let g = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(g.0.clone())
    }

    /// Reads the files again if they changed; a bad new pair is logged and the old one kept.
    pub fn reload_if_changed(&self) {
        let at = stamp(&self.cert, &self.key);
        let seen = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if at == seen {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(cfg) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(cfg), at);
                tracing::info!(cert = %self.cert.display(), "API certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "API certificate changed but cannot be loaded; keeping the old one")
            }
        }
    }

    /// Checks the files every [`RELOAD_EVERY`] until the process ends.
    pub fn watch(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            loop {
                tick.tick().await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.reload_if_changed()).await;
            }
        });
    }
}
