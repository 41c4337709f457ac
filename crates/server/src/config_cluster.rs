//! The cluster part of the server's settings: the cluster flags, the `[cluster]` table of the
//! TOML file, and how they resolve into the control plane's, the node RPC's and replication's
//! configs (composed here; the library crates never read the environment).

use anyhow::{Context, Result, bail};
use clap::Args;
use ironbucket_types::{Consistency, Strategy};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cluster flags (all need `--cluster-enabled true`).
#[derive(Args, Debug, Default)]
pub struct ClusterArgs {
    /// Run as a member of a cluster (true|false) [default: false].
    #[arg(long = "cluster-enabled", env = "CLUSTER_ENABLED", value_name = "BOOL")]
    pub cluster_enabled: Option<bool>,

    /// Cluster name; nodes of another cluster are refused [default: ironbucket].
    #[arg(long = "cluster-name", env = "CLUSTER_NAME", value_name = "NAME")]
    pub cluster_name: Option<String>,

    /// storage (holds data and coordinates) or gateway (stores nothing, only coordinates);
    /// primary and secondary are kept as names of storage [default: storage]. Applied when the
    /// node first becomes a member; later changes go through `cluster set-node`.
    #[arg(long = "node-role", env = "NODE_ROLE", value_name = "ROLE")]
    pub node_role: Option<String>,

    /// This data directory was a single node's (CLUSTER_ENABLED=false): its buckets, with every
    /// setting, are proposed to the cluster when the node first finds itself a member, so that
    /// its objects are served by the cluster and moved to new nodes as they join. Start it as
    /// the first node (its own address as the only seed), then add nodes [default: false].
    #[arg(long = "from-standalone", env = "FROM_STANDALONE", value_name = "BOOL")]
    pub from_standalone: Option<bool>,

    /// Capacity weight of this node on the placement ring (100 is the norm; 1 to 10000).
    /// Applied when the node first becomes a member [default: 100].
    #[arg(long = "node-weight", env = "NODE_WEIGHT", value_name = "WEIGHT")]
    pub node_weight: Option<u32>,

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

    /// TESTING ONLY: a file of `FROM TO` address pairs; this node's RPC and gossip traffic for
    /// FROM goes to TO instead (a fault-injecting proxy in front of that peer, `ironbucket-chaos`).
    #[arg(
        long = "fault-routes",
        env = "IRONBUCKET_FAULT_ROUTES",
        value_name = "FILE",
        hide = true
    )]
    pub fault_routes: Option<std::path::PathBuf>,

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

    /// Further cluster secrets accepted from other nodes while the secret is rotated
    /// (comma-separated): their calls, their derived TLS certificates and access key secrets
    /// sealed with them are accepted; this node speaks CLUSTER_SECRET. See docs/security.md.
    #[arg(
        long = "cluster-secrets-accepted",
        env = "CLUSTER_SECRETS_ACCEPTED",
        value_name = "SECRETS",
        hide_env_values = true
    )]
    pub cluster_secrets_accepted: Option<String>,

    /// File holding the accepted cluster secrets, one per line or comma-separated (instead of
    /// CLUSTER_SECRETS_ACCEPTED).
    #[arg(
        long = "cluster-secrets-accepted-file",
        env = "CLUSTER_SECRETS_ACCEPTED_FILE",
        value_name = "FILE"
    )]
    pub cluster_secrets_accepted_file: Option<PathBuf>,

    /// Join token an operator made with `ironbucket-cli cluster join-token create`: a node that
    /// is not in the cluster yet presents it to join (as a learner). Not needed by the seeds
    /// that form a new cluster, or by a node that is already a member.
    #[arg(
        long = "join-token",
        env = "JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,

    /// File holding the join token (instead of JOIN_TOKEN).
    #[arg(long = "join-token-file", env = "JOIN_TOKEN_FILE", value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,

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

    /// How long a data node may be down before its share of the data is re-created on the
    /// other nodes from the remaining replicas, in seconds (0: never; an operator removes or
    /// replaces it). Back, it discards its copies and its share moves back to it
    /// [default: 600].
    #[arg(long = "rereplicate-after-secs", env = "REREPLICATE_AFTER_SECS", value_name = "SECS")]
    pub rereplicate_after_secs: Option<u64>,

    /// Replica requests a node may have in flight (writes answered at their level whose other
    /// replicas are still being written: asynchronous replication's lag) before a write waits
    /// for its other replicas too; 0 makes every write wait for all its live replicas
    /// [default: 10000].
    #[arg(
        long = "max-replication-backlog",
        env = "MAX_REPLICATION_BACKLOG",
        value_name = "REQUESTS"
    )]
    pub max_replication_backlog: Option<u64>,

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

    /// Mutual TLS between nodes. Unset (the default): on, with the CA and certificate files when
    /// TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE are given, otherwise with a CA every node
    /// derives from CLUSTER_SECRET. true: on, the files required. false: plaintext (a warning
    /// is printed).
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
    pub weight: Option<u32>,
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
    /// The data directory was a single node's: its buckets join the cluster (`--from-standalone`).
    pub from_standalone: bool,
    pub control: ironbucket_consensus::ControlConfig,
    pub rpc: ironbucket_rpc::RpcConfig,
    pub rpc_addr: SocketAddr,
    pub handoff: ironbucket_replication::HandoffConfig,
    pub sync: ironbucket_replication::SyncConfig,
    /// Where this node's traffic for some peer addresses goes instead (`--fault-routes`, tests).
    pub routes: std::collections::HashMap<SocketAddr, SocketAddr>,
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

pub(crate) fn resolve_cluster(
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
    let files = (
        a.tls_cert.or(f.tls_cert),
        a.tls_key.or(f.tls_key),
        a.tls_ca.or(f.tls_ca),
    );
    let tls = match (a.enable_tls.or(f.enable_tls), files) {
        (Some(false), _) => {
            eprintln!(
                "WARNING: node-to-node traffic is plaintext (ENABLE_TLS=false): anyone on the network between the nodes can read object data and replay node credentials; leave ENABLE_TLS unset (TLS with a CA derived from CLUSTER_SECRET) or give TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE (`ironbucket cert generate` makes them)"
            );
            None
        }
        (_, (Some(cert), Some(key), Some(ca))) => {
            let files = ironbucket_rpc::TlsFiles { cert, key, ca };
            files.check().map_err(|e| anyhow::anyhow!("node TLS: {e}"))?;
            Some(ironbucket_rpc::TlsSource::Files(files))
        }
        (Some(true), _) => bail!(
            "ENABLE_TLS is true but TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE are not all set (make them with `ironbucket cert generate`, or leave ENABLE_TLS unset for a CA derived from CLUSTER_SECRET)"
        ),
        (None, (None, None, None)) => Some(ironbucket_rpc::TlsSource::FromSecret),
        (None, _) => bail!(
            "TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE go together: give all three (or none, for a CA derived from CLUSTER_SECRET)"
        ),
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
    let role = a.node_role.or(f.role).unwrap_or_else(|| "storage".into());
    if !ironbucket_consensus::ROLES.contains(&role.as_str()) {
        bail!("NODE_ROLE must be storage or gateway (primary and secondary mean storage), not {role:?}");
    }
    let weight = a.node_weight.or(f.weight).unwrap_or(100);
    if !(1..=ironbucket_consensus::MAX_WEIGHT).contains(&weight) {
        bail!(
            "NODE_WEIGHT must be between 1 and {}, not {weight}",
            ironbucket_consensus::MAX_WEIGHT
        );
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
    let accepted: Vec<String> = crate::config_security::secret_from(
        a.cluster_secrets_accepted,
        a.cluster_secrets_accepted_file,
        "CLUSTER_SECRETS_ACCEPTED",
    )?
    .unwrap_or_default()
    .split([',', '\n'])
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty() && *s != secret)
    .collect();
    if accepted.iter().any(|s| s.len() < 16) {
        bail!("CLUSTER_SECRETS_ACCEPTED: every secret must be at least 16 characters");
    }
    let join_token = crate::config_security::secret_from(a.join_token, a.join_token_file, "JOIN_TOKEN")?;
    if let Some(t) = &join_token
        && ironbucket_consensus::joining::token_id(t).is_none()
    {
        bail!(
            "JOIN_TOKEN is not a join token (they start with ibj_; make one with `ironbucket-cli cluster join-token create`)"
        );
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
        max_backlog: a.max_replication_backlog.unwrap_or(defaults.max_backlog),
    };
    let rate = a.repair_rate_mbps.unwrap_or(50.0);
    if !rate.is_finite() || !(0.0..=1e6).contains(&rate) {
        bail!("REPAIR_RATE_MBPS must be between 0 (no limit) and 1000000 MB/s, not {rate}");
    }
    let sync = ironbucket_replication::SyncConfig {
        enabled: a.anti_entropy.unwrap_or(true),
        interval: heartbeat,
        rate: (rate * 1e6) as u64,
        rereplicate_after: match a.rereplicate_after_secs.unwrap_or(600) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
    };
    let routes = match &a.fault_routes {
        None => Default::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("IRONBUCKET_FAULT_ROUTES: cannot read {}", p.display()))?;
            let routes = ironbucket_rpc::parse_routes(&text)
                .map_err(|e| anyhow::anyhow!("IRONBUCKET_FAULT_ROUTES {}: {e}", p.display()))?;
            eprintln!(
                "WARNING: {} peer address(es) are routed elsewhere (IRONBUCKET_FAULT_ROUTES, for tests only)",
                routes.len()
            );
            routes
        }
    };
    let max_conn = a.max_connections_per_node.or(f.max_connections_per_node).unwrap_or(4);
    if max_conn == 0 || max_conn > 1024 {
        bail!("MAX_CONNECTIONS_PER_NODE must be between 1 and 1024");
    }
    Ok(Some(ClusterSettings {
        from_standalone: a.from_standalone.unwrap_or(false),
        control: ironbucket_consensus::ControlConfig {
            node_name: node_id.to_string(),
            cluster_name: name.clone(),
            seeds,
            advertise: a.rpc_address.or(f.rpc_address),
            role,
            zone: a.node_zone.or(f.zone).unwrap_or_default(),
            rack: a.node_rack.or(f.rack).unwrap_or_default(),
            weight,
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
            join_token,
        },
        rpc: ironbucket_rpc::RpcConfig {
            node_id: node_id.to_string(),
            cluster_name: name,
            secret,
            accepted_secrets: accepted,
            max_connections_per_node: max_conn,
            connect_timeout: connect,
            request_timeout: request,
            tls,
            protocol,
        },
        rpc_addr: SocketAddr::new(bind, rpc_port),
        handoff,
        sync,
        routes,
    }))
}
