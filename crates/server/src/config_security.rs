//! Settings that protect a node from its clients: where the admin API listens, the audit log,
//! connection caps and timeouts, and request rate limits. Composed into [`crate::config`].

use anyhow::{Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Security flags of `ironbucket server`.
#[derive(Args, Debug, Default)]
pub struct SecurityArgs {
    /// Address the admin API binds to. Every admin route but /health and /health/ready needs a
    /// token; bind it beyond loopback only where the network is trusted [default: 127.0.0.1].
    #[arg(long = "admin-bind", env = "NODE_ADMIN_BIND", value_name = "IP")]
    pub admin_bind: Option<IpAddr>,

    /// Audit log file: one JSON line per mutating admin call and per refused S3 request; rotated
    /// by size; `off` disables it [default: DATA_DIR/audit.log].
    #[arg(long = "audit-log", env = "AUDIT_LOG_FILE", value_name = "FILE")]
    pub audit_log: Option<String>,

    /// Rotate the audit log when it reaches this many MiB (5 rotated files are kept)
    /// [default: 100].
    #[arg(long = "audit-log-max-mb", env = "AUDIT_LOG_MAX_MB", value_name = "MIB")]
    pub audit_log_max_mb: Option<u64>,

    /// Also print audit lines to stdout (true|false) [default: false].
    #[arg(long = "audit-stdout", env = "AUDIT_STDOUT", value_name = "BOOL")]
    pub audit_stdout: Option<bool>,

    /// Most open connections on each of the S3 and admin ports; more are answered 503 and
    /// closed [default: 4096].
    #[arg(long = "max-connections", env = "MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most open connections from one client address (trusted proxies are exempt; 0: no cap)
    /// [default: 512].
    #[arg(long = "max-connections-per-ip", env = "MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// Seconds a client has to send a request's headers, and that an idle keep-alive connection
    /// stays open [default: 15].
    #[arg(long = "header-timeout", env = "HEADER_TIMEOUT_SECS", value_name = "SECS")]
    pub header_timeout: Option<u64>,

    /// Serve the S3 and admin APIs over HTTPS (true) or plain HTTP (false, with a warning). With
    /// HTTPS and no --api-tls-cert, the node makes a CA and a certificate for itself on the first
    /// start in DATA_DIR/tls (clients trust DATA_DIR/tls/ca.pem) [default: true].
    #[arg(long = "api-tls", env = "API_TLS", value_name = "BOOL")]
    pub api_tls: Option<bool>,

    /// Extra host names and IP addresses (comma-separated) the self-made certificate is valid
    /// for, besides localhost, 127.0.0.1, ::1, the host name and the bind addresses.
    #[arg(
        long = "api-tls-hosts",
        env = "API_TLS_HOSTS",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub api_tls_hosts: Vec<String>,

    /// Certificate chain (PEM) to serve the S3 and admin APIs over HTTPS; read again when it
    /// changes [default: a self-made certificate, see --api-tls].
    #[arg(long = "api-tls-cert", env = "API_TLS_CERT_FILE", value_name = "FILE")]
    pub api_tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --api-tls-cert.
    #[arg(long = "api-tls-key", env = "API_TLS_KEY_FILE", value_name = "FILE")]
    pub api_tls_key: Option<PathBuf>,

    /// Requests per second one access key may make on the S3 port (token bucket, burst of twice
    /// the rate); over it: 503 SlowDown with Retry-After. 0: no limit [default: 0].
    #[arg(long = "rate-limit-per-key", env = "RATE_LIMIT_PER_KEY", value_name = "RPS")]
    pub rate_limit_per_key: Option<u32>,

    /// Requests per second one client address may make on the S3 and admin ports (trusted
    /// proxies: the forwarded address counts). 0: no limit [default: 0].
    #[arg(long = "rate-limit-per-ip", env = "RATE_LIMIT_PER_IP", value_name = "RPS")]
    pub rate_limit_per_ip: Option<u32>,
}

/// Files holding secrets (Docker secrets, Kubernetes secret volumes): each is read at start,
/// trailing whitespace trimmed, and stands for the variable it names. Giving a variable and its
/// file together is refused.
#[derive(Args, Debug, Default)]
pub struct SecretFileArgs {
    /// File holding the root access key id (instead of IRONBUCKET_ACCESS_KEY).
    #[arg(long = "access-key-file", env = "IRONBUCKET_ACCESS_KEY_FILE", value_name = "FILE")]
    pub access_key_file: Option<PathBuf>,

    /// File holding the root secret key (instead of IRONBUCKET_SECRET_KEY).
    #[arg(long = "secret-key-file", env = "IRONBUCKET_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// File holding the admin token (instead of IRONBUCKET_ADMIN_TOKEN).
    #[arg(long = "admin-token-file", env = "IRONBUCKET_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// File holding the encryption master key (instead of ENCRYPTION_KEY).
    #[arg(long = "encryption-key-file", env = "ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,

    /// File holding older master keys, one per line or comma-separated (instead of
    /// ENCRYPTION_OLD_KEYS).
    #[arg(
        long = "encryption-old-keys-file",
        env = "ENCRYPTION_OLD_KEYS_FILE",
        value_name = "FILE"
    )]
    pub encryption_old_keys_file: Option<PathBuf>,
}

/// `value`, or the contents of `file`; `name` is the variable, for messages.
pub fn secret_from(value: Option<String>, file: Option<PathBuf>, name: &str) -> Result<Option<String>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("{name} and {name}_FILE are both set: give one"),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| anyhow::anyhow!("cannot read {name}_FILE {}: {e}", p.display()))?;
            let v = text.trim_end().to_string();
            if v.is_empty() {
                bail!("{name}_FILE {} is empty", p.display());
            }
            Ok(Some(v))
        }
    }
}

/// `[security]` in the config file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    pub admin_bind: Option<IpAddr>,
    pub audit_log: Option<String>,
    pub audit_log_max_mb: Option<u64>,
    pub audit_stdout: Option<bool>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub header_timeout_secs: Option<u64>,
    pub rate_limit_per_key: Option<u32>,
    pub rate_limit_per_ip: Option<u32>,
    pub api_tls: Option<bool>,
    pub api_tls_hosts: Option<Vec<String>>,
    pub api_tls_cert: Option<PathBuf>,
    pub api_tls_key: Option<PathBuf>,
}

/// Where the S3 and admin ports get their certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiTlsSource {
    /// Operator-given certificate and key files, read again when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// A CA and certificate the node makes for itself in `dir`, valid for `hosts` too.
    SelfMade { dir: PathBuf, hosts: Vec<String> },
    /// Plain HTTP, asked for with API_TLS=false (even when certificate files are given).
    Off,
}

/// Connection caps and timeouts of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_total: usize,
    /// 0: no cap per address.
    pub max_per_ip: usize,
    pub header_timeout: Duration,
    /// Addresses exempt from the per-address cap (the load balancer).
    pub exempt: Vec<ipnet::IpNet>,
}

/// The resolved security settings.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub admin_bind: IpAddr,
    pub audit_file: Option<PathBuf>,
    pub audit_max_bytes: u64,
    pub audit_stdout: bool,
    pub limits: ConnLimits,
    pub rate_per_key: u32,
    pub rate_per_ip: u32,
    /// HTTPS on the S3 and admin ports.
    pub api_tls: ApiTlsSource,
}

pub fn resolve_security(
    a: SecurityArgs,
    f: SecuritySection,
    data_dir: &Path,
    trusted: &[ipnet::IpNet],
) -> Result<SecuritySettings> {
    let audit_file = match a.audit_log.or(f.audit_log) {
        None => Some(data_dir.join("audit.log")),
        Some(p) if p.eq_ignore_ascii_case("off") => None,
        Some(p) if p.is_empty() => bail!("AUDIT_LOG_FILE is empty: give a file, or `off`"),
        Some(p) => Some(PathBuf::from(p)),
    };
    let mb = a.audit_log_max_mb.or(f.audit_log_max_mb).unwrap_or(100);
    if mb == 0 {
        bail!("AUDIT_LOG_MAX_MB must be at least 1");
    }
    let max_total = a.max_connections.or(f.max_connections).unwrap_or(4096);
    if max_total == 0 {
        bail!("MAX_CONNECTIONS must be at least 1");
    }
    let header = a.header_timeout.or(f.header_timeout_secs).unwrap_or(15);
    if header == 0 {
        bail!("HEADER_TIMEOUT_SECS must be at least 1");
    }
    let files = match (a.api_tls_cert.or(f.api_tls_cert), a.api_tls_key.or(f.api_tls_key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => bail!("API_TLS_CERT_FILE and API_TLS_KEY_FILE must be given together"),
    };
    let hosts = if a.api_tls_hosts.is_empty() {
        f.api_tls_hosts.unwrap_or_default()
    } else {
        a.api_tls_hosts
    };
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    if let Some(bad) = hosts
        .iter()
        .find(|h| h.contains(['/', ' ', ':']) && h.parse::<IpAddr>().is_err())
    {
        bail!("API_TLS_HOSTS: {bad:?} is neither a host name nor an IP address");
    }
    // API_TLS=false wins over certificate files (a compose file can switch TLS off with one
    // variable); the warning at start names the files left unused.
    let api_tls = match (a.api_tls.or(f.api_tls).unwrap_or(true), files) {
        (false, _) => ApiTlsSource::Off,
        (true, Some((cert, key))) => ApiTlsSource::Files { cert, key },
        (true, None) => ApiTlsSource::SelfMade {
            dir: data_dir.join("tls"),
            hosts,
        },
    };
    Ok(SecuritySettings {
        api_tls,
        admin_bind: a.admin_bind.or(f.admin_bind).unwrap_or(IpAddr::from([127, 0, 0, 1])),
        audit_file,
        audit_max_bytes: mb * 1024 * 1024,
        audit_stdout: a.audit_stdout.or(f.audit_stdout).unwrap_or(false),
        limits: ConnLimits {
            max_total,
            max_per_ip: a.max_connections_per_ip.or(f.max_connections_per_ip).unwrap_or(512),
            header_timeout: Duration::from_secs(header),
            exempt: trusted.to_vec(),
        },
        rate_per_key: a.rate_limit_per_key.or(f.rate_limit_per_key).unwrap_or(0),
        rate_per_ip: a.rate_limit_per_ip.or(f.rate_limit_per_ip).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "from-a-file\n").unwrap();
        assert_eq!(
            secret_from(None, Some(p.clone()), "X").unwrap().as_deref(),
            Some("from-a-file")
        );
        assert_eq!(secret_from(Some("v".into()), None, "X").unwrap().as_deref(), Some("v"));
        assert_eq!(secret_from(None, None, "X").unwrap(), None);
        let both = secret_from(Some("v".into()), Some(p), "X").unwrap_err().to_string();
        assert!(both.contains("X and X_FILE"), "{both}");
        let missing = secret_from(None, Some(dir.path().join("nope")), "X")
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read X_FILE"), "{missing}");
        let empty = dir.path().join("e");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            secret_from(None, Some(empty), "X")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn defaults_are_safe_and_bad_values_are_named() {
        let s = resolve_security(
            SecurityArgs::default(),
            SecuritySection::default(),
            Path::new("/d"),
            &[],
        )
        .unwrap();
        assert_eq!(s.admin_bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(s.audit_file.as_deref(), Some(Path::new("/d/audit.log")));
        assert_eq!((s.limits.max_total, s.limits.max_per_ip), (4096, 512));
        let off = SecurityArgs {
            audit_log: Some("off".into()),
            ..Default::default()
        };
        assert!(
            resolve_security(off, SecuritySection::default(), Path::new("/d"), &[])
                .unwrap()
                .audit_file
                .is_none()
        );
        let zero = SecurityArgs {
            max_connections: Some(0),
            ..Default::default()
        };
        let e = resolve_security(zero, SecuritySection::default(), Path::new("/d"), &[]).unwrap_err();
        assert!(e.to_string().contains("MAX_CONNECTIONS"));
    }

    #[test]
    fn https_unless_plain_http_is_asked_for() {
        let resolve = |a: SecurityArgs| resolve_security(a, SecuritySection::default(), Path::new("/d"), &[]);
        assert_eq!(
            resolve(SecurityArgs::default()).unwrap().api_tls,
            ApiTlsSource::SelfMade {
                dir: PathBuf::from("/d/tls"),
                hosts: vec![]
            }
        );
        let hosts = SecurityArgs {
            api_tls_hosts: vec!["s3.example.com".into(), " 10.0.0.7".into(), "".into()],
            ..Default::default()
        };
        assert_eq!(
            resolve(hosts).unwrap().api_tls,
            ApiTlsSource::SelfMade {
                dir: PathBuf::from("/d/tls"),
                hosts: vec!["s3.example.com".into(), "10.0.0.7".into()]
            }
        );
        let off = SecurityArgs {
            api_tls: Some(false),
            ..Default::default()
        };
        assert_eq!(resolve(off).unwrap().api_tls, ApiTlsSource::Off);
        let files = || SecurityArgs {
            api_tls_cert: Some("/c.pem".into()),
            api_tls_key: Some("/c.key".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(files()).unwrap().api_tls,
            ApiTlsSource::Files {
                cert: "/c.pem".into(),
                key: "/c.key".into()
            }
        );
        let both = SecurityArgs {
            api_tls: Some(false),
            ..files()
        };
        assert_eq!(
            resolve(both).unwrap().api_tls,
            ApiTlsSource::Off,
            "plain HTTP asked for wins"
        );
        let half = SecurityArgs {
            api_tls_cert: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(resolve(half).unwrap_err().to_string().contains("given together"));
        let bad = SecurityArgs {
            api_tls_hosts: vec!["a b".into()],
            ..Default::default()
        };
        assert!(resolve(bad).unwrap_err().to_string().contains("API_TLS_HOSTS"));
    }
}
