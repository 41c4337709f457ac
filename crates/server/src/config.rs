//! Server settings, resolved in this order (later wins): built-in defaults, the TOML file
//! (`--config` / `IRONBUCKET_CONFIG`), environment variables, command-line flags.
//! Library crates never read the environment; this module composes their configs.

use anyhow::{Context, Result, bail};
use clap::Args;
use ironbucket_store::{EncryptionKey, Keyring, LocalConfig, StorageConfig};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config_cluster::resolve_cluster;
pub use crate::config_cluster::{ClusterArgs, ClusterSection, ClusterSettings};
use crate::config_security::secret_from;
pub use crate::config_security::{SecretFileArgs, SecurityArgs, SecuritySection, SecuritySettings};

/// Flags of `ironbucket server`. Each flag also reads the environment variable shown; a flag
/// given on the command line wins over the variable, which wins over the config file.
#[derive(Args, Debug, Default)]
pub struct ServerArgs {
    /// TOML config file (see etc/ironbucket.toml for every key).
    #[arg(long, env = "IRONBUCKET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding object data and metadata [default: ./data].
    #[arg(long = "data-dir", env = "STORAGE_PATH", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the S3 and admin APIs bind to [default: 0.0.0.0].
    #[arg(long, env = "NODE_BIND_ADDRESS", value_name = "IP")]
    pub bind: Option<IpAddr>,

    /// S3 API port; 0 picks a free port [default: 9000].
    #[arg(long, env = "NODE_API_PORT", value_name = "PORT")]
    pub port: Option<u16>,

    /// Admin API port (/health, /metrics); 0 picks a free port [default: 8080].
    #[arg(long = "admin-port", env = "NODE_ADMIN_PORT", value_name = "PORT")]
    pub admin_port: Option<u16>,

    /// Node id reported by /health [default: node-1].
    #[arg(long = "node-id", env = "NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Writes from other nodes stamped further ahead of this node's clock than this are refused
    /// (503), and peers whose clocks are off by more are reported in /cluster/health
    /// [default: 5000].
    #[arg(long = "max-clock-ahead-ms", env = "MAX_CLOCK_AHEAD_MS", value_name = "MS")]
    pub max_clock_ahead_ms: Option<u64>,

    /// TESTING ONLY: shift this node's clock by this many milliseconds (negative: behind), to
    /// test clock skew without touching the machine's clock.
    #[arg(
        long = "clock-offset-ms",
        env = "IRONBUCKET_CLOCK_OFFSET_MS",
        value_name = "MS",
        hide = true,
        allow_hyphen_values = true
    )]
    pub clock_offset_ms: Option<i64>,

    /// Region reported by GetBucketLocation and accepted by CreateBucket [default: us-east-1].
    #[arg(long, env = "IRONBUCKET_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// Base domain for virtual-hosted-style requests (bucket.DOMAIN); repeat or comma-separate
    /// for several [default: none, path style only].
    #[arg(long, env = "IRONBUCKET_DOMAIN", value_name = "DOMAIN", value_delimiter = ',')]
    pub domain: Vec<String>,

    /// Load balancers and proxies (IPs or CIDR networks, comma-separated) whose
    /// `X-Forwarded-For` / `X-Forwarded-Proto` headers are believed when bucket policies check
    /// the client address (`aws:SourceIp`) or `aws:SecureTransport`. From any other peer these
    /// headers are ignored and the socket address counts [default: none].
    #[arg(
        long = "trusted-proxies",
        env = "TRUSTED_PROXIES",
        value_name = "NETS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Accept requests signed with Signature Version 2, which AWS has deprecated (true|false)
    /// [default: false: such requests get 400 InvalidRequest].
    #[arg(long = "allow-sigv2", env = "ALLOW_SIGV2", value_name = "BOOL")]
    pub allow_sigv2: Option<bool>,

    /// Root access key id. Without it (and the secret) random credentials are generated on the
    /// first start, stored in the data directory and printed once.
    #[arg(long = "access-key", env = "IRONBUCKET_ACCESS_KEY", value_name = "KEY")]
    pub access_key: Option<String>,

    /// Root secret access key.
    #[arg(
        long = "secret-key",
        env = "IRONBUCKET_SECRET_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,

    /// Make data and metadata reach stable storage before a write is acknowledged
    /// (true|false) [default: true].
    #[arg(long, env = "STORAGE_FSYNC", value_name = "BOOL")]
    pub fsync: Option<bool>,

    /// Bodies up to this many bytes are stored inside the metadata database (one shared commit
    /// instead of a file and its fsyncs); 0 disables [default: 65536].
    #[arg(long = "inline-max", env = "STORAGE_INLINE_MAX", value_name = "BYTES")]
    pub inline_max: Option<u64>,

    /// Metadata (redb) page cache in MiB [default: 64].
    #[arg(long = "meta-cache-mib", env = "META_CACHE_MIB", value_name = "MIB")]
    pub meta_cache_mib: Option<usize>,

    /// Encrypt object data at rest with AES-256-GCM (true|false) [default: false].
    #[arg(long = "enable-encryption", env = "ENABLE_ENCRYPTION", value_name = "BOOL")]
    pub enable_encryption: Option<bool>,

    /// The built-in admin-role bearer token of the admin API (every route but /health and
    /// /health/ready needs a token; more come from `ironbucket-cli token create`) [default: a
    /// random token made on the first start and kept in <data-dir>/admin-token].
    #[arg(
        long = "admin-token",
        env = "IRONBUCKET_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Encryption master key: 32 bytes as 64 hex characters or base64. Required when
    /// encryption is enabled.
    #[arg(
        long = "encryption-key",
        env = "ENCRYPTION_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub encryption_key: Option<String>,

    /// Older master keys (comma-separated) still used to read data written before a rotation.
    #[arg(
        long = "encryption-old-keys",
        env = "ENCRYPTION_OLD_KEYS",
        value_name = "KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub encryption_old_keys: Vec<String>,

    /// Serve Prometheus metrics at /metrics on the admin port (true|false) [default: true].
    #[arg(long = "metrics-enabled", env = "METRICS_ENABLED", value_name = "BOOL")]
    pub metrics_enabled: Option<bool>,

    /// Abort multipart uploads left unfinished for this many seconds [default: 604800, 7 days].
    #[arg(long = "multipart-max-age", env = "MULTIPART_MAX_AGE_SECS", value_name = "SECS")]
    pub multipart_max_age: Option<u64>,

    /// Keep a cluster's tombstones of deleted keys (buckets without versioning) and of versions
    /// deleted by id this many seconds, then remove them. A node that missed a delete must be repaired within this
    /// time [default: 864000, 10 days].
    #[arg(long = "tombstone-grace", env = "TOMBSTONE_GRACE_SECS", value_name = "SECS")]
    pub tombstone_grace: Option<u64>,

    /// How often background workers (garbage removal, abandoned uploads) run, in seconds
    /// [default: 60].
    #[arg(long = "worker-interval", env = "WORKER_INTERVAL_SECS", value_name = "SECS")]
    pub worker_interval: Option<u64>,

    /// How often the scrub re-reads every stored body to verify its checksums, in seconds; 0
    /// turns it off [default: 604800, a week].
    #[arg(long = "scrub-interval-secs", env = "SCRUB_INTERVAL_SECS", value_name = "SECS")]
    pub scrub_interval_secs: Option<u64>,

    /// The scrub's read rate in MB/s (10^6 bytes) [default: 8].
    #[arg(long = "scrub-rate-mbps", env = "SCRUB_RATE_MBPS", value_name = "MB_PER_SEC")]
    pub scrub_rate_mbps: Option<f64>,

    /// How often the lifecycle worker applies bucket lifecycle rules, in seconds [default: 3600].
    #[arg(long = "lifecycle-interval", env = "LIFECYCLE_INTERVAL_SECS", value_name = "SECS")]
    pub lifecycle_interval: Option<u64>,

    /// Length of a lifecycle "day" in seconds; lower it to exercise rules quickly in tests
    /// [default: 86400].
    #[arg(long = "lifecycle-day-secs", env = "LIFECYCLE_DAY_SECS", value_name = "SECS")]
    pub lifecycle_day_secs: Option<u64>,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT [default: 30].
    #[arg(long = "shutdown-timeout", env = "SHUTDOWN_TIMEOUT_SECS", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,

    /// Seconds a stopping node keeps serving after SIGTERM/SIGINT while its /health/ready
    /// answers 404, so that load balancers stop sending it requests before it closes its ports
    /// (a second signal skips the wait) [default: 3 in a cluster, 0 for a single node].
    #[arg(long = "shutdown-drain", env = "SHUTDOWN_DRAIN_SECS", value_name = "SECS")]
    pub shutdown_drain: Option<u64>,

    /// Log format: text or json [default: text]. Verbosity comes from RUST_LOG (default info).
    #[arg(long = "log-format", env = "LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub secret_files: SecretFileArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub node: NodeSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub encryption: EncryptionSection,
    #[serde(default)]
    pub credentials: CredentialsSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub security: SecuritySection,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: Option<String>,
    pub max_clock_ahead_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    pub bind: Option<IpAddr>,
    pub port: Option<u16>,
    pub region: Option<String>,
    pub domains: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub allow_sigv2: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub port: Option<u16>,
    pub metrics_enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub path: Option<PathBuf>,
    pub fsync: Option<bool>,
    pub chunk_size: Option<u32>,
    pub inline_max: Option<u64>,
    pub meta_cache_mib: Option<usize>,
    pub multipart_max_age_secs: Option<u64>,
    pub tombstone_grace_secs: Option<u64>,
    pub worker_interval_secs: Option<u64>,
    pub lifecycle_interval_secs: Option<u64>,
    pub lifecycle_day_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    pub enabled: Option<bool>,
    pub key: Option<String>,
    pub old_keys: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub shutdown_timeout_secs: Option<u64>,
    pub shutdown_drain_secs: Option<u64>,
    pub log_format: Option<String>,
}

/// Everything the server needs, resolved and validated.
pub struct Settings {
    pub local: LocalConfig,
    pub keyring: Option<Keyring>,
    pub s3: ironbucket_s3::S3Config,
    pub admin: ironbucket_admin::AdminConfig,
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shutdown_timeout: Duration,
    /// How long a stopping node serves on, not ready, before it closes its ports.
    pub shutdown_drain: Duration,
    pub log_format: String,
    /// Printed once when credentials were generated.
    pub credentials_note: Option<String>,
    pub cluster: Option<ClusterSettings>,
    pub security: SecuritySettings,
}

pub fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl Settings {
    pub fn resolve(mut a: ServerArgs) -> Result<Self> {
        let files = std::mem::take(&mut a.secret_files);
        a.access_key = secret_from(a.access_key.take(), files.access_key_file, "IRONBUCKET_ACCESS_KEY")?;
        a.secret_key = secret_from(a.secret_key.take(), files.secret_key_file, "IRONBUCKET_SECRET_KEY")?;
        a.admin_token = secret_from(a.admin_token.take(), files.admin_token_file, "IRONBUCKET_ADMIN_TOKEN")?;
        a.encryption_key = secret_from(a.encryption_key.take(), files.encryption_key_file, "ENCRYPTION_KEY")?;
        let old = (!a.encryption_old_keys.is_empty()).then(|| a.encryption_old_keys.join(","));
        if let Some(keys) = secret_from(old, files.encryption_old_keys_file, "ENCRYPTION_OLD_KEYS")? {
            a.encryption_old_keys = keys
                .split([',', '\n'])
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .collect();
        }
        let f = match &a.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let data_dir = a.data_dir.or(f.storage.path).unwrap_or_else(|| PathBuf::from("./data"));
        let bind = a.bind.or(f.api.bind).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let port = a.port.or(f.api.port).unwrap_or(9000);
        let admin_port = a.admin_port.or(f.admin.port).unwrap_or(8080);
        if port != 0 && port == admin_port {
            bail!("NODE_API_PORT and NODE_ADMIN_PORT are both {port}; they must differ");
        }
        let node_id = a.node_id.or(f.node.id).unwrap_or_else(|| "node-1".into());
        let region = a.region.or(f.api.region).unwrap_or_else(|| "us-east-1".into());
        let domains = if a.domain.is_empty() {
            f.api.domains.unwrap_or_default()
        } else {
            a.domain
        };
        let domains: Vec<String> = domains
            .into_iter()
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect();

        let proxies = if a.trusted_proxies.is_empty() {
            f.api.trusted_proxies.unwrap_or_default()
        } else {
            a.trusted_proxies
        };
        let mut trusted_proxies = Vec::new();
        for p in proxies.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let net = p
                .parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| anyhow::anyhow!("TRUSTED_PROXIES entry {p:?} is not an IP address or CIDR network"))?;
            trusted_proxies.push(net);
        }

        let mut storage = StorageConfig {
            fsync: a.fsync.or(f.storage.fsync).unwrap_or(true),
            ..StorageConfig::default()
        };
        if let Some(cs) = f.storage.chunk_size {
            storage.chunk_size = cs;
        }
        storage
            .validate()
            .map_err(anyhow::Error::msg)
            .context("invalid [storage] settings")?;
        let mut local = LocalConfig::new(&data_dir);
        local.storage = storage;
        local.inline_max = a.inline_max.or(f.storage.inline_max).unwrap_or(64 * 1024);
        local.meta_cache_bytes = a.meta_cache_mib.or(f.storage.meta_cache_mib).unwrap_or(64).max(1) * 1024 * 1024;
        if local.inline_max > 16 * 1024 * 1024 {
            bail!("STORAGE_INLINE_MAX must be at most 16 MiB (got {})", local.inline_max);
        }
        local.multipart_max_age = Duration::from_secs(
            a.multipart_max_age
                .or(f.storage.multipart_max_age_secs)
                .unwrap_or(7 * 24 * 3600),
        );
        let ahead = a
            .max_clock_ahead_ms
            .or(f.node.max_clock_ahead_ms)
            .unwrap_or(ironbucket_types::DEFAULT_MAX_AHEAD_MS);
        if !(100..=3_600_000).contains(&ahead) {
            bail!("MAX_CLOCK_AHEAD_MS must be between 100 and 3600000 (got {ahead})");
        }
        local.max_clock_ahead = Duration::from_millis(ahead);
        if let Some(off) = a.clock_offset_ms {
            ironbucket_types::set_clock_offset_ms(off);
            eprintln!("WARNING: this node's clock is shifted by {off} ms (IRONBUCKET_CLOCK_OFFSET_MS, for tests only)");
        }
        local.tombstone_grace = Duration::from_secs(
            a.tombstone_grace
                .or(f.storage.tombstone_grace_secs)
                .unwrap_or(10 * 24 * 3600),
        );
        let wi = a.worker_interval.or(f.storage.worker_interval_secs).unwrap_or(60);
        if wi == 0 {
            bail!("WORKER_INTERVAL_SECS must be at least 1");
        }
        local.worker_interval = Duration::from_secs(wi);
        let li = a
            .lifecycle_interval
            .or(f.storage.lifecycle_interval_secs)
            .unwrap_or(3600);
        let ld = a.lifecycle_day_secs.or(f.storage.lifecycle_day_secs).unwrap_or(86_400);
        if li == 0 || ld == 0 {
            bail!("LIFECYCLE_INTERVAL_SECS and LIFECYCLE_DAY_SECS must be at least 1");
        }
        local.lifecycle_interval = Duration::from_secs(li);
        local.lifecycle_day = Duration::from_secs(ld);
        local.scrub_interval = match a.scrub_interval_secs.unwrap_or(7 * 24 * 3600) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let scrub_rate = a.scrub_rate_mbps.unwrap_or(8.0);
        if !scrub_rate.is_finite() || !(0.001..=1e6).contains(&scrub_rate) {
            bail!("SCRUB_RATE_MBPS must be between 0.001 and 1000000 MB/s, not {scrub_rate}");
        }
        local.scrub_rate = (scrub_rate * 1e6) as u64;

        let enc_enabled = a.enable_encryption.or(f.encryption.enabled).unwrap_or(false);
        let enc_key = a.encryption_key.or(f.encryption.key).filter(|k| !k.trim().is_empty());
        let old_keys = if a.encryption_old_keys.is_empty() {
            f.encryption.old_keys.unwrap_or_default()
        } else {
            a.encryption_old_keys
        };
        let keyring = if enc_enabled {
            let Some(k) = enc_key else {
                bail!(
                    "ENABLE_ENCRYPTION is true but ENCRYPTION_KEY is not set: give a 32-byte key as 64 hex characters or base64"
                );
            };
            let current = EncryptionKey::parse(&k).context("ENCRYPTION_KEY is invalid")?;
            let mut old = Vec::new();
            for (i, k) in old_keys.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).enumerate() {
                old.push(
                    EncryptionKey::parse(k)
                        .with_context(|| format!("ENCRYPTION_OLD_KEYS entry {} is invalid", i + 1))?,
                );
            }
            Some(Keyring::new(current, old))
        } else {
            None
        };

        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let ak = a.access_key.or(f.credentials.access_key);
        let sk = a.secret_key.or(f.credentials.secret_key);
        let (ak, sk, credentials_note) = match (ak, sk) {
            (Some(ak), Some(sk)) => {
                if ak.len() < 3 || sk.len() < 8 {
                    bail!("IRONBUCKET_ACCESS_KEY must be at least 3 characters and IRONBUCKET_SECRET_KEY at least 8");
                }
                (ak, sk, None)
            }
            (None, None) => stored_or_generated_credentials(&data_dir)?,
            _ => bail!("IRONBUCKET_ACCESS_KEY and IRONBUCKET_SECRET_KEY must be given together"),
        };
        // The admin token is never the root secret unless set so: a leaked S3 key must not
        // open the admin API too.
        let (admin_token, token_note) = match a.admin_token.clone() {
            Some(t) if t.len() < 8 => bail!("IRONBUCKET_ADMIN_TOKEN must be at least 8 characters"),
            Some(t) => (t, None),
            None => stored_or_generated_admin_token(&data_dir)?,
        };
        let credentials_note = match (credentials_note, token_note) {
            (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
            (a, b) => a.or(b),
        };

        let log_format = a.log_format.or(f.server.log_format).unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            bail!("LOG_FORMAT must be text or json, not {log_format:?}");
        }
        let cluster = resolve_cluster(a.cluster, f.cluster, &node_id, bind, &data_dir)?;
        // A single node has no other node for a load balancer to send its requests to.
        let shutdown_drain = a
            .shutdown_drain
            .or(f.server.shutdown_drain_secs)
            .unwrap_or(if cluster.is_some() { 3 } else { 0 });
        if shutdown_drain > 300 {
            bail!("SHUTDOWN_DRAIN_SECS must be at most 300 (seconds), not {shutdown_drain}");
        }
        let security = crate::config_security::resolve_security(a.security, f.security, &data_dir, &trusted_proxies)?;
        let (admin_bind, rate_per_key, rate_per_ip) =
            (security.admin_bind, security.rate_per_key, security.rate_per_ip);
        if let Some(c) = &cluster {
            // Every node seals access key secrets with the same key, derived from the cluster
            // secret, so key records agreed through Raft open on every node.
            let auth =
                ironbucket_rpc::Auth::new(&c.rpc.cluster_name, &c.rpc.secret).with_accepted(&c.rpc.accepted_secrets);
            local.key_sealing_key = Some(EncryptionKey::from_bytes(auth.derive_key("ironbucket-key-sealing")));
            // While the secret rotates, key secrets sealed with an accepted one still open.
            local.accepted_key_sealing_keys = auth
                .accepted()
                .iter()
                .map(|a| EncryptionKey::from_bytes(a.derive_key("ironbucket-key-sealing")))
                .collect();
            // Lifecycle rules are decided once per key by its primary replica and applied as
            // replicated deletes (the cluster's lifecycle worker), not by every replica.
            local.local_lifecycle = false;
        }
        Ok(Settings {
            cluster,
            security,
            local,
            keyring,
            s3: ironbucket_s3::S3Config {
                region,
                domains,
                credentials: vec![(ak, sk.clone())],
                trusted_proxies,
                allow_sigv2: a.allow_sigv2.or(f.api.allow_sigv2).unwrap_or(false),
                rate_per_key,
                rate_per_ip,
                ..Default::default()
            },
            admin: ironbucket_admin::AdminConfig {
                node_id,
                version: env!("CARGO_PKG_VERSION").to_string(),
                metrics_enabled: a.metrics_enabled.or(f.admin.metrics_enabled).unwrap_or(true),
                token: admin_token,
                token_file: Some(data_dir.join("admin-tokens.json")),
                rate_per_ip,
            },
            api_addr: SocketAddr::new(bind, port),
            admin_addr: SocketAddr::new(admin_bind, admin_port),
            shutdown_timeout: Duration::from_secs(a.shutdown_timeout.or(f.server.shutdown_timeout_secs).unwrap_or(30)),
            shutdown_drain: Duration::from_secs(shutdown_drain),
            log_format,
            credentials_note,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    access_key: String,
    secret_key: String,
}

/// Reads `credentials.json` from the data directory, or creates it (mode 600) with random keys.
fn stored_or_generated_credentials(dir: &Path) -> Result<(String, String, Option<String>)> {
    let path = dir.join("credentials.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let c: StoredCredentials =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
        let note = format!("Using the credentials stored in {}", path.display());
        return Ok((c.access_key, c.secret_key, Some(note)));
    }
    use rand::Rng;
    const AK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const SK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::thread_rng();
    let ak: String = std::iter::once('I')
        .chain((0..19).map(|_| AK[rng.gen_range(0..AK.len())] as char))
        .collect();
    let sk: String = (0..40).map(|_| SK[rng.gen_range(0..SK.len())] as char).collect();
    let body = serde_json::to_string_pretty(&StoredCredentials {
        access_key: ak.clone(),
        secret_key: sk.clone(),
    })?;
    write_private(&path, body.as_bytes())?;
    let note = format!(
        "Generated root credentials (stored in {}; shown only now):\n  AWS_ACCESS_KEY_ID={ak}\n  AWS_SECRET_ACCESS_KEY={sk}",
        path.display()
    );
    Ok((ak, sk, Some(note)))
}

/// Reads `admin-token` from the data directory, or creates it (mode 600) with a random token.
fn stored_or_generated_admin_token(dir: &Path) -> Result<(String, Option<String>)> {
    let path = dir.join("admin-token");
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_string();
        if token.is_empty() {
            bail!("{} is empty: delete it to make a new admin token", path.display());
        }
        let note = format!(
            "Admin API token: in {} (for ironbucket-cli: IRONBUCKET_ADMIN_TOKEN_FILE={})",
            path.display(),
            path.display()
        );
        return Ok((token, Some(note)));
    }
    let token = ironbucket_types::token::admin_token(rand::random());
    write_private(&path, format!("{token}\n").as_bytes())?;
    let note = format!(
        "Generated the admin API token (stored in {}; shown only now):\n  IRONBUCKET_ADMIN_TOKEN={token}",
        path.display()
    );
    Ok((token, Some(note)))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/ironbucket.toml");
        let f = load_file(&p).unwrap();
        assert_eq!(f.api.port, Some(9000));
    }

    #[test]
    fn precedence_flags_over_file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[api]\nport = 7000\nregion = \"eu-west-1\"\n[admin]\nport = 7001\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(cfg.clone()),
            data_dir: Some(dir.path().join("d")),
            port: Some(7100),
            access_key: Some("abc".into()),
            secret_key: Some("secretsecret".into()),
            ..Default::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!(s.api_addr.port(), 7100, "flag beats file");
        assert_eq!(s.admin_addr.port(), 7001, "file beats default");
        assert_eq!(s.s3.region, "eu-west-1");
        assert_eq!(
            s.shutdown_drain,
            Duration::ZERO,
            "a single node does not wait for load balancers"
        );

        let bad = ServerArgs {
            data_dir: Some(dir.path().join("d")),
            shutdown_drain: Some(301),
            ..Default::default()
        };
        let e = Settings::resolve(bad).err().unwrap().to_string();
        assert!(e.contains("SHUTDOWN_DRAIN_SECS must be at most 300"), "{e}");

        let bad = ServerArgs {
            data_dir: Some(dir.path().join("d")),
            enable_encryption: Some(true),
            ..Default::default()
        };
        let e = Settings::resolve(bad).err().unwrap().to_string();
        assert!(e.contains("ENCRYPTION_KEY"), "{e}");
        let bad = ServerArgs {
            data_dir: Some(dir.path().join("d")),
            enable_encryption: Some(true),
            encryption_key: Some("xyz".into()),
            ..Default::default()
        };
        assert!(format!("{:#}", Settings::resolve(bad).err().unwrap()).contains("ENCRYPTION_KEY is invalid"));
        let bad = ServerArgs {
            data_dir: Some(dir.path().join("d")),
            access_key: Some("abc".into()),
            ..Default::default()
        };
        assert!(Settings::resolve(bad).is_err());
        std::fs::write(&cfg, "[api]\nportt = 1\n").unwrap();
        let bad = ServerArgs {
            config: Some(cfg),
            ..Default::default()
        };
        assert!(Settings::resolve(bad).is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_admin_token_is_generated_once_and_is_not_the_root_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, n1) = stored_or_generated_admin_token(dir.path()).unwrap();
        assert!(t1.starts_with("ibt_") && t1.len() == 68, "{t1}");
        assert!(n1.unwrap().contains(&t1));
        let (t2, n2) = stored_or_generated_admin_token(dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert!(!n2.unwrap().contains(&t1), "the token is printed only once");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("admin-token"), "\n").unwrap();
        assert!(stored_or_generated_admin_token(dir.path()).is_err());
    }

    #[test]
    fn generated_credentials_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a1, s1, n1) = stored_or_generated_credentials(dir.path()).unwrap();
        assert!(n1.unwrap().contains(&s1));
        let (a2, s2, n2) = stored_or_generated_credentials(dir.path()).unwrap();
        assert_eq!((a1, s1.clone()), (a2, s2));
        assert!(!n2.unwrap().contains(&s1), "the secret is printed only once");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("credentials.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
