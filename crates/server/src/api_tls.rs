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

/// Reads the chain and key and builds a server configuration. ALPN offers HTTP/1.1 only, as
/// AWS S3 does (an idle HTTP/2 client connection also held a graceful shutdown to its deadline).
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
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
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

/// The files of a certificate a node made for itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfMade {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Made on this start (not found from an earlier one).
    pub new: bool,
}

/// The CA and certificate in `dir` valid for `names` (from [`self_made_hosts`]): the ones of an
/// earlier start when they were made for the same names, else new ones (a new CA too; its key
/// is not kept, the CA signs this one certificate). Names are recorded last, so a start that
/// died halfway makes them again.
pub fn self_made(dir: &Path, names: &[String]) -> Result<SelfMade> {
    let record = dir.join("hosts");
    let files = SelfMade {
        ca: dir.join("ca.pem"),
        cert: dir.join("api.pem"),
        key: dir.join("api.key"),
        new: false,
    };
    let wanted = names.join("\n");
    let have = std::fs::read_to_string(&record).ok();
    if have.as_deref() == Some(wanted.as_str()) && files.ca.is_file() && files.cert.is_file() && files.key.is_file() {
        return Ok(files);
    }
    let _ = std::fs::remove_file(&record);
    ironbucket_rpc::generate_certificates(dir, "self-made API CA", &["api".to_string()], names)
        .map_err(|e| anyhow::anyhow!("cannot make a TLS certificate in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join("ca.key"));
    std::fs::write(&record, &wanted).with_context(|| format!("cannot write {}", record.display()))?;
    Ok(SelfMade { new: true, ..files })
}

/// The names a self-made certificate is valid for: loopback, this machine's host name, the
/// addresses the APIs bind to (when not a wildcard) and the operator's `extra`.
pub fn self_made_hosts(binds: &[std::net::IpAddr], extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.extend(binds.iter().filter(|ip| !ip.is_unspecified()).map(|ip| ip.to_string()));
    names.extend(extra.iter().cloned());
    let mut out = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_made_certificate_is_kept_until_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let hosts = vec!["localhost".to_string(), "s3.example.com".to_string()];
        let first = self_made(&tls, &hosts).unwrap();
        assert!(first.new);
        assert!(!tls.join("ca.key").exists(), "the CA key is not kept");
        let ca = std::fs::read(&first.ca).unwrap();
        ApiTls::open(first.cert.clone(), first.key.clone()).unwrap();
        let again = self_made(&tls, &hosts).unwrap();
        assert!(!again.new);
        assert_eq!(std::fs::read(&again.ca).unwrap(), ca, "the same CA on a restart");
        let other = self_made(&tls, &["other.example.com".to_string()]).unwrap();
        assert!(other.new);
        assert_ne!(std::fs::read(&other.ca).unwrap(), ca, "new names, a new certificate");
        std::fs::remove_file(&other.key).unwrap();
        assert!(
            self_made(&tls, &["other.example.com".to_string()]).unwrap().new,
            "a lost key is made again"
        );
    }

    #[test]
    fn self_made_names_leave_out_wildcards() {
        let names = self_made_hosts(
            &["0.0.0.0".parse().unwrap(), "10.1.2.3".parse().unwrap()],
            &["s3.example.com".to_string(), "localhost".to_string()],
        );
        assert!(names.contains(&"10.1.2.3".to_string()) && names.contains(&"s3.example.com".to_string()));
        assert!(!names.contains(&"0.0.0.0".to_string()));
        assert_eq!(names.iter().filter(|n| *n == "localhost").count(), 1);
    }
}
