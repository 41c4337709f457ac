//! Server settings, resolved in this order (later wins): built-in defaults, the TOML file
//! (`--config` / `IRONBUCKET_CONFIG`), environment variables, command-line flags.
//! Library crates never read the environment; this module composes their configs.

use anyhow::{Context, Result, bail};
use clap::Args;
use ironbucket_store::{EncryptionKey, Keyring, LocalConfig, StorageConfig};
use ironbucket_types::{Consistency, Strategy};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// Bearer token for the admin API's management endpoints (`/keys`) [default: the root
    /// secret key].
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

    /// Log format: text or json [default: text]. Verbosity comes from RUST_LOG (default info).
    #[arg(long = "log-format", env = "LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Cluster flags (all need `--cluster-enabled true`).
#[derive(Args, Debug, Default)]
pub struct ClusterArgs {
    /// Run as a member of a cluster (true|false) [default: false].
    #[arg(long = "cluster-enabled", env = "CLUSTER_ENABLED", value_name = "BOOL")]
    pub cluster_enabled: Option<bool>,

    /// Cluster name; nodes of another cluster are refused [default: ironbucket].
    #[arg(long = "cluster-name", env = "CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// primary or secondary [default: primary].
    #[arg(long = "node-role", env = "NODE_ROLE", value_name = "ROLE")]
    pub node_role: Option<String>,

    /// Zone of this node, for zone-aware placement [default: none].
    #[arg(long = "node-zone", env = "NODE_ZONE", value_name = "ZONE")]
    pub node_zone: Option<String>,

    /// Rack of this node, for rack-aware placement [default: none].
    #[arg(long = "node-rack", env = "NODE_RACK", value_name = "RACK")]
    pub node_rack: Option<String>,

    /// RPC addresses (host:port, comma-separated) of the nodes that form the cluster; host names
    /// are resolved again on every connection attempt.
    #[arg(
        long = "cluster-seeds",
        env = "CLUSTER_SEEDS",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    pub cluster_seeds: Vec<String>,

    /// Host names of the cluster's nodes (comma-separated); their count bounds the replication
    /// factor [default: one per seed].
    #[arg(
        long = "cluster-nodes",
        env = "CLUSTER_NODES",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub cluster_nodes: Vec<String>,

    /// How peers are found: static, env, dns or docker (all use CLUSTER_SEEDS; dns and docker
    /// names are re-resolved on every connection attempt) [default: static].
    #[arg(long = "discovery-method", env = "DISCOVERY_METHOD", value_name = "METHOD")]
    pub discovery_method: Option<String>,

    /// Copies of each object [default: the number of nodes, at most 3].
    #[arg(long = "replication-factor", env = "REPLICATION_FACTOR", value_name = "N")]
    pub replication_factor: Option<u32>,

    /// SimpleStrategy, ConsistentHash, RackAware or ZoneAware [default: SimpleStrategy].
    #[arg(long = "replication-strategy", env = "REPLICATION_STRATEGY", value_name = "STRATEGY")]
    pub replication_strategy: Option<String>,

    /// Virtual nodes per node of weight 100 on the placement ring; fixed when the cluster forms
    /// [default: 256].
    #[arg(long = "vnodes", env = "VNODES", value_name = "N")]
    pub vnodes: Option<u32>,

    /// ONE, QUORUM or ALL [default: QUORUM].
    #[arg(long = "read-consistency", env = "DEFAULT_READ_CONSISTENCY", value_name = "LEVEL")]
    pub read_consistency: Option<String>,

    /// ONE, QUORUM or ALL [default: QUORUM].
    #[arg(long = "write-consistency", env = "DEFAULT_WRITE_CONSISTENCY", value_name = "LEVEL")]
    pub write_consistency: Option<String>,

    /// Node-to-node RPC port [default: 7000].
    #[arg(long = "rpc-port", env = "NODE_RPC_PORT", value_name = "PORT")]
    pub rpc_port: Option<u16>,

    /// This node's RPC address as the other nodes reach it (host:port) [default: the seed
    /// entry that answers as this node].
    #[arg(long = "rpc-address", env = "NODE_RPC_ADDRESS", value_name = "ADDR")]
    pub rpc_address: Option<String>,

    /// Connections kept to each other node [default: 4].
    #[arg(
        long = "max-connections-per-node",
        env = "MAX_CONNECTIONS_PER_NODE",
        value_name = "N"
    )]
    pub max_connections_per_node: Option<usize>,

    /// Timeout for opening a connection to another node, in ms [default: 5000].
    #[arg(long = "connection-timeout-ms", env = "CONNECTION_TIMEOUT_MS", value_name = "MS")]
    pub connection_timeout_ms: Option<u64>,

    /// Deadline of a node-to-node call, and of a metadata change waiting for a quorum, in ms
    /// [default: 30000].
    #[arg(long = "request-timeout-ms", env = "REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Raft heartbeat interval in ms; a leader is replaced after about 4 to 8 heartbeats without
    /// it [default: 250].
    #[arg(long = "sync-interval-ms", env = "SYNC_INTERVAL_MS", value_name = "MS")]
    pub sync_interval_ms: Option<u64>,

    /// Shared secret every node proves on every RPC call (at least 16 characters).
    #[arg(
        long = "cluster-secret",
        env = "CLUSTER_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,

    /// File holding the cluster secret (instead of CLUSTER_SECRET).
    #[arg(long = "cluster-secret-file", env = "CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// Raft log entries between control-plane snapshots [default: 500].
    #[arg(long = "raft-snapshot-every", env = "RAFT_SNAPSHOT_EVERY", value_name = "ENTRIES")]
    pub raft_snapshot_every: Option<u64>,

    /// Hints (writes a replica missed while it was unreachable) this node keeps per replica;
    /// further missed writes are left to anti-entropy [default: 100000].
    #[arg(long = "hint-max-per-node", env = "HINT_MAX_PER_NODE", value_name = "N")]
    pub hint_max_per_node: Option<u64>,

    /// Compare this node's data with its replicas' in the background and take in what it lacks
    /// (Merkle-tree anti-entropy). Off, replicas converge only through read repair and hints,
    /// and tombstones are collected after their grace period even where a replica lacks them
    /// [default: true].
    #[arg(long = "anti-entropy", env = "ANTI_ENTROPY", value_name = "BOOL")]
    pub anti_entropy: Option<bool>,

    /// Anti-entropy's copy bandwidth limit in MB/s (10^6 bytes; 0: none); changeable at runtime
    /// with `PUT /cluster/repair/rate` [default: 50].
    #[arg(long = "repair-rate-mbps", env = "REPAIR_RATE_MBPS", value_name = "MB_PER_SEC")]
    pub repair_rate_mbps: Option<f64>,

    /// A hint older than this is dropped instead of replayed, in seconds [default: 10800].
    #[arg(long = "hint-max-age-secs", env = "HINT_MAX_AGE_SECS", value_name = "SECS")]
    pub hint_max_age_secs: Option<u64>,

    /// TESTING ONLY: state these node protocol versions (`N` or `MIN-MAX`) instead of the
    /// build's own, to test how nodes of other versions are treated.
    #[arg(
        long = "protocol-version",
        env = "IRONBUCKET_PROTOCOL_VERSION",
        value_name = "N|MIN-MAX",
        hide = true
    )]
    pub protocol_version: Option<String>,

    /// Mutual TLS between nodes (true|false): every node presents a certificate signed by the
    /// cluster CA (`ironbucket cert generate`) and accepts only such peers [default: false].
    #[arg(long = "enable-tls", env = "ENABLE_TLS", value_name = "BOOL")]
    pub enable_tls: Option<bool>,

    /// This node's certificate (PEM), for ENABLE_TLS.
    #[arg(long = "tls-cert", env = "TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// This node's private key (PEM), for ENABLE_TLS.
    #[arg(long = "tls-key", env = "TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The cluster CA certificate (PEM) that peers' certificates must chain to, for ENABLE_TLS.
    #[arg(long = "tls-ca", env = "TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// The `[cluster]` table of the TOML file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub enabled: Option<bool>,
    pub name: Option<String>,
    pub role: Option<String>,
    pub zone: Option<String>,
    pub rack: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub nodes: Option<Vec<String>>,
    pub discovery_method: Option<String>,
    pub replication_factor: Option<u32>,
    pub replication_strategy: Option<String>,
    pub vnodes: Option<u32>,
    pub read_consistency: Option<String>,
    pub write_consistency: Option<String>,
    pub rpc_port: Option<u16>,
    pub rpc_address: Option<String>,
    pub max_connections_per_node: Option<usize>,
    pub connection_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub sync_interval_ms: Option<u64>,
    pub secret_file: Option<PathBuf>,
    pub raft_snapshot_every: Option<u64>,
    pub enable_tls: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
}

/// Resolved cluster settings.
pub struct ClusterSettings {
    pub control: ironbucket_consensus::ControlConfig,
    pub rpc: ironbucket_rpc::RpcConfig,
    pub rpc_addr: SocketAddr,
    pub handoff: ironbucket_replication::HandoffConfig,
    pub sync: ironbucket_replication::SyncConfig,
}

fn nonempty(v: Vec<String>) -> Option<Vec<String>> {
    let v: Vec<String> = v
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!v.is_empty()).then_some(v)
}

fn duplicates(list: &[String]) -> Option<&String> {
    list.iter()
        .enumerate()
        .find(|(i, a)| list[..*i].contains(a))
        .map(|(_, a)| a)
}

fn resolve_cluster(
    a: ClusterArgs,
    f: ClusterSection,
    node_id: &str,
    bind: IpAddr,
    data_dir: &Path,
) -> Result<Option<ClusterSettings>> {
    if !a.cluster_enabled.or(f.enabled).unwrap_or(false) {
        return Ok(None);
    }
    let protocol = match &a.protocol_version {
        None => ironbucket_rpc::ProtocolRange::CURRENT,
        Some(v) => {
            let r = ironbucket_rpc::ProtocolRange::parse(v)
                .with_context(|| format!("--protocol-version must be N or MIN-MAX with 1 <= MIN <= MAX, not {v:?}"))?;
            eprintln!(
                "WARNING: this node states node protocol versions {r} (IRONBUCKET_PROTOCOL_VERSION, for tests only)"
            );
            r
        }
    };
    let tls = if a.enable_tls.or(f.enable_tls).unwrap_or(false) {
        let (Some(cert), Some(key), Some(ca)) = (
            a.tls_cert.or(f.tls_cert),
            a.tls_key.or(f.tls_key),
            a.tls_ca.or(f.tls_ca),
        ) else {
            bail!(
                "ENABLE_TLS is true but TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE are not all set (make them with `ironbucket cert generate`)"
            );
        };
        let files = ironbucket_rpc::TlsFiles { cert, key, ca };
        files.check().map_err(|e| anyhow::anyhow!("ENABLE_TLS: {e}"))?;
        Some(files)
    } else {
        None
    };
    let name = a.cluster_name.or(f.name).unwrap_or_else(|| "ironbucket".into());
    let seeds = nonempty(a.cluster_seeds).or(f.seeds).ok_or_else(|| {
        anyhow::anyhow!(
            "CLUSTER_ENABLED is true but CLUSTER_SEEDS is empty: list the RPC address (host:port) of every node"
        )
    })?;
    for s in &seeds {
        if !s.contains(':') {
            bail!("CLUSTER_SEEDS entry {s:?} needs a port (host:port)");
        }
    }
    if let Some(d) = duplicates(&seeds) {
        bail!("CLUSTER_SEEDS lists {d} twice");
    }
    let nodes = nonempty(a.cluster_nodes).or(f.nodes).unwrap_or_default();
    if let Some(d) = duplicates(&nodes) {
        bail!("CLUSTER_NODES lists {d} twice (duplicate node)");
    }
    let node_count = if nodes.is_empty() { seeds.len() } else { nodes.len() };
    let discovery = a
        .discovery_method
        .or(f.discovery_method)
        .unwrap_or_else(|| "static".into())
        .to_ascii_lowercase();
    if !["static", "env", "dns", "docker"].contains(&discovery.as_str()) {
        bail!("DISCOVERY_METHOD must be static, env, dns or docker, not {discovery:?}");
    }
    let rf = a
        .replication_factor
        .or(f.replication_factor)
        .unwrap_or_else(|| node_count.min(3) as u32);
    if rf == 0 || rf as usize > node_count {
        bail!(
            "REPLICATION_FACTOR is {rf} but the cluster has {node_count} node(s): it must be between 1 and {node_count}"
        );
    }
    let strategy = match a.replication_strategy.or(f.replication_strategy) {
        None => Strategy::Simple,
        Some(s) => s
            .parse::<Strategy>()
            .map_err(|e| anyhow::anyhow!("REPLICATION_STRATEGY: {e}"))?,
    };
    let vnodes = a.vnodes.or(f.vnodes).unwrap_or(ironbucket_consensus::DEFAULT_VNODES);
    if vnodes == 0 || vnodes > 65_536 {
        bail!("VNODES must be between 1 and 65536, not {vnodes}");
    }
    let level = |v: Option<String>, var: &str| -> Result<Consistency> {
        match v {
            None => Ok(Consistency::Quorum),
            Some(v) => v.parse::<Consistency>().map_err(|e| anyhow::anyhow!("{var}: {e}")),
        }
    };
    let read = level(a.read_consistency.or(f.read_consistency), "DEFAULT_READ_CONSISTENCY")?;
    let write = level(a.write_consistency.or(f.write_consistency), "DEFAULT_WRITE_CONSISTENCY")?;
    let role = a.node_role.or(f.role).unwrap_or_else(|| "primary".into());
    if role != "primary" && role != "secondary" {
        bail!("NODE_ROLE must be primary or secondary, not {role:?}");
    }
    let secret = match (a.cluster_secret, a.cluster_secret_file.or(f.secret_file)) {
        (Some(s), _) => s,
        (None, Some(p)) => std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read CLUSTER_SECRET_FILE {}", p.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!("CLUSTER_ENABLED is true but neither CLUSTER_SECRET nor CLUSTER_SECRET_FILE is set"),
    };
    if secret.len() < 16 {
        bail!("CLUSTER_SECRET must be at least 16 characters");
    }
    let rpc_port = a.rpc_port.or(f.rpc_port).unwrap_or(7000);
    let ms = |v: Option<u64>, d: u64, var: &str| -> Result<Duration> {
        let v = v.unwrap_or(d);
        if v == 0 {
            bail!("{var} must be at least 1");
        }
        Ok(Duration::from_millis(v))
    };
    let connect = ms(
        a.connection_timeout_ms.or(f.connection_timeout_ms),
        5000,
        "CONNECTION_TIMEOUT_MS",
    )?;
    let request = ms(
        a.request_timeout_ms.or(f.request_timeout_ms),
        30_000,
        "REQUEST_TIMEOUT_MS",
    )?;
    let heartbeat = ms(a.sync_interval_ms.or(f.sync_interval_ms), 250, "SYNC_INTERVAL_MS")?;
    let defaults = ironbucket_replication::HandoffConfig::default();
    let handoff = ironbucket_replication::HandoffConfig {
        max_per_node: a.hint_max_per_node.unwrap_or(defaults.max_per_node),
        max_age: match a.hint_max_age_secs {
            Some(0) => bail!("HINT_MAX_AGE_SECS must be at least 1"),
            Some(s) => Duration::from_secs(s),
            None => defaults.max_age,
        },
    };
    let rate = a.repair_rate_mbps.unwrap_or(50.0);
    if !rate.is_finite() || !(0.0..=1e6).contains(&rate) {
        bail!("REPAIR_RATE_MBPS must be between 0 (no limit) and 1000000 MB/s, not {rate}");
    }
    let sync = ironbucket_replication::SyncConfig {
        enabled: a.anti_entropy.unwrap_or(true),
        interval: heartbeat,
        rate: (rate * 1e6) as u64,
    };
    let max_conn = a.max_connections_per_node.or(f.max_connections_per_node).unwrap_or(4);
    if max_conn == 0 || max_conn > 1024 {
        bail!("MAX_CONNECTIONS_PER_NODE must be between 1 and 1024");
    }
    Ok(Some(ClusterSettings {
        control: ironbucket_consensus::ControlConfig {
            node_name: node_id.to_string(),
            cluster_name: name.clone(),
            seeds,
            advertise: a.rpc_address.or(f.rpc_address),
            role,
            zone: a.node_zone.or(f.zone).unwrap_or_default(),
            rack: a.node_rack.or(f.rack).unwrap_or_default(),
            weight: 100,
            replication: ironbucket_consensus::Replication {
                factor: rf,
                strategy,
                read_consistency: read,
                write_consistency: write,
                vnodes,
            },
            data_dir: data_dir.to_path_buf(),
            heartbeat,
            election_timeout: heartbeat * 4,
            commit_timeout: request.min(Duration::from_secs(10)),
            snapshot_every: a.raft_snapshot_every.or(f.raft_snapshot_every).unwrap_or(500).max(10),
        },
        rpc: ironbucket_rpc::RpcConfig {
            node_id: node_id.to_string(),
            cluster_name: name,
            secret,
            max_connections_per_node: max_conn,
            connect_timeout: connect,
            request_timeout: request,
            tls,
            protocol,
        },
        rpc_addr: SocketAddr::new(bind, rpc_port),
        handoff,
        sync,
    }))
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
    pub log_format: String,
    /// Printed once when credentials were generated.
    pub credentials_note: Option<String>,
    pub cluster: Option<ClusterSettings>,
}

pub fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl Settings {
    pub fn resolve(a: ServerArgs) -> Result<Self> {
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

        let log_format = a.log_format.or(f.server.log_format).unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            bail!("LOG_FORMAT must be text or json, not {log_format:?}");
        }
        let cluster = resolve_cluster(a.cluster, f.cluster, &node_id, bind, &data_dir)?;
        if let Some(c) = &cluster {
            // Every node seals access key secrets with the same key, derived from the cluster
            // secret, so key records agreed through Raft open on every node.
            let auth = ironbucket_rpc::Auth::new(&c.rpc.cluster_name, &c.rpc.secret);
            local.key_sealing_key = Some(EncryptionKey::from_bytes(auth.derive_key("ironbucket-key-sealing")));
            // Lifecycle rules are decided once per key by its primary replica and applied as
            // replicated deletes (the cluster's lifecycle worker), not by every replica.
            local.local_lifecycle = false;
        }
        Ok(Settings {
            cluster,
            local,
            keyring,
            s3: ironbucket_s3::S3Config {
                region,
                domains,
                credentials: vec![(ak, sk.clone())],
                trusted_proxies,
                ..Default::default()
            },
            admin: ironbucket_admin::AdminConfig {
                node_id,
                version: env!("CARGO_PKG_VERSION").to_string(),
                metrics_enabled: a.metrics_enabled.or(f.admin.metrics_enabled).unwrap_or(true),
                token: a.admin_token.clone().unwrap_or_else(|| sk.clone()),
            },
            api_addr: SocketAddr::new(bind, port),
            admin_addr: SocketAddr::new(bind, admin_port),
            shutdown_timeout: Duration::from_secs(a.shutdown_timeout.or(f.server.shutdown_timeout_secs).unwrap_or(30)),
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
