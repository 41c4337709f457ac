//! `ironbucket-cli`: the operator's client. It speaks only to the admin HTTP API of a node.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ironbucket_api as api;

/// `println!` that ends the program quietly when its reader has gone (`ironbucket-cli ... |
/// head`), as other command-line tools do, instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            $crate::stdout_failed(e)
        }
    }};
}

/// `print!` as [`outln!`] is `println!`.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($t)*) {
            $crate::stdout_failed(e)
        }
    }};
}

/// Ends the program after a failed write to stdout: quietly (status 0) when the reader closed
/// it, with the reason otherwise.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("ironbucket-cli: cannot write to stdout: {e}");
    std::process::exit(1);
}

mod http;
mod layout;

use http::request;
mod rebalance;
mod repair;
mod token;

#[derive(Parser, Debug)]
#[command(
    name = "ironbucket-cli",
    version,
    about = "Operate an IronBucket node through its admin API"
)]
struct Cli {
    /// Admin API base URL of the node to talk to.
    #[arg(
        long,
        env = "IRONBUCKET_ADMIN_URL",
        default_value = "https://127.0.0.1:8080",
        global = true
    )]
    admin_url: String,

    /// CA certificate (PEM) to trust for an https:// admin URL [default: the CA a node made
    /// for itself, $STORAGE_PATH/tls/ca.pem or ./data/tls/ca.pem].
    #[arg(long = "ca-file", env = "IRONBUCKET_CA_FILE", global = true, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,

    /// Token for the management endpoints (the root secret key unless the server sets
    /// IRONBUCKET_ADMIN_TOKEN).
    #[arg(
        long = "admin-token",
        env = "IRONBUCKET_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,

    /// File holding the admin token (Docker secrets), instead of --admin-token.
    #[arg(
        long = "admin-token-file",
        env = "IRONBUCKET_ADMIN_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    admin_token_file: Option<std::path::PathBuf>,

    /// Seconds to wait for the node to answer.
    #[arg(long, default_value_t = 10, global = true)]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the node's health (status, node id, version, uptime, storage). Exits 1 unless healthy.
    Health {
        /// Print the raw JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Whether the node can serve writes now (GET /health/ready): no fatal worker died, the store
    /// answers, and in a cluster a Raft leader and a placement layout are known. Exits 0 when
    /// ready, 1 (with the reasons) when not. Compose health checks use it.
    Ready {
        /// Print the raw JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print the node's Prometheus metrics.
    Metrics,
    /// Manage access keys (needs --admin-token).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage admin API tokens with roles viewer, operator or admin (needs an admin token).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Bucket usage and quotas (needs --admin-token).
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// The cluster this node belongs to.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The node's background workers: state, restarts, units of work, tranquility, progress and
    /// last error (needs --admin-token). Exits 1 when one has died for good.
    Workers {
        #[command(subcommand)]
        action: Option<WorkerCommand>,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Where an object lives: the replica nodes the placement ring names for it, and the
    /// versions every node holds.
    Locate {
        /// `<bucket>/<key>`.
        target: String,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Leader, term, Raft state, layout version and members.
    Status {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The members: name, Raft role, state, RPC address, zone, rack.
    Nodes {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change the replication factor, strategy or default consistency for new writes, on every
    /// node without a restart (needs --admin-token).
    SetReplication {
        #[arg(long)]
        factor: Option<u32>,
        /// SimpleStrategy, ConsistentHash, RackAware or ZoneAware.
        #[arg(long)]
        strategy: Option<String>,
        /// ONE, QUORUM or ALL.
        #[arg(long)]
        read: Option<String>,
        /// ONE, QUORUM or ALL.
        #[arg(long)]
        write: Option<String>,
    },
    /// Change a member's zone, rack, weight or role (needs --admin-token).
    SetNode {
        name: String,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        rack: Option<String>,
        #[arg(long)]
        weight: Option<u32>,
        /// storage or gateway (a gateway stores nothing and only coordinates).
        #[arg(long)]
        role: Option<String>,
    },
    /// Drain a member: it holds no new data and its data moves to the others; it stays a member
    /// (needs --admin-token).
    Drain { name: String },
    /// Undo a drain or decommission that has not finished: the member holds data again (needs
    /// --admin-token).
    Activate { name: String },
    /// Decommission a member: drain it, then it leaves the cluster once its data has moved
    /// (needs --admin-token).
    Decommission { name: String },
    /// Remove a dead member: its data is re-created on the others from the remaining replicas,
    /// then it leaves the cluster (needs --admin-token).
    Remove { name: String },
    /// Confirm that a wiped node reusing this member's id may take its place (needs
    /// --admin-token).
    Replace { name: String },
    /// Make a learner (a node that joined with a join token) a Raft voter (needs an admin
    /// token).
    Promote { name: String },
    /// After a cluster secret rotation: seal every access key secret that an accepted older
    /// secret sealed with the current one (needs an admin token).
    ResealKeys,
    /// Join tokens: what a new node presents to join the cluster (needs an admin token).
    #[command(subcommand)]
    JoinToken(token::JoinTokenCommand),
    /// Anti-entropy: every node's sync state, a round started now, the bandwidth limit.
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// The placement layout: each node's share of the replicas (`show`), and what a proposed
    /// change would move before it is made (`plan`) (needs --admin-token).
    #[command(subcommand)]
    Layout(layout::LayoutCommand),
    /// Data moving after a layout change: start the next step on every node now and show where
    /// the move stands; `--watch` follows it with a progress bar (needs --admin-token).
    Rebalance {
        /// Follow the move with a progress bar (rate, time left) until it is done.
        #[arg(long)]
        watch: bool,
        #[command(subcommand)]
        command: Option<rebalance::RebalanceCommand>,
    },
    /// DANGER: make the node at --admin-url the only voter because the others are lost (the
    /// lone survivor of a 2-node cluster). The lost nodes are fenced out; to bring one back,
    /// wipe its data directory and start it (needs --admin-token).
    ForceRecover {
        /// The node that stays: must be the node --admin-url points at.
        #[arg(long)]
        node: String,
    },
}

/// Prints a `/cluster/locate` answer as a table: one line per node, its newest version.
fn print_location(v: &api::Location) {
    outln!(
        "{}/{}: layout version {}, {} with {} replica(s): {}",
        v.bucket,
        v.key,
        v.layout_version,
        v.strategy,
        v.replication_factor,
        v.replicas.join(", ")
    );
    outln!(
        "{:<16} {:<8} {:>8} {:<34} {:<34} {:>12} HLC",
        "NODE",
        "REPLICA",
        "VERSIONS",
        "NEWEST VERSION",
        "ETAG",
        "SIZE"
    );
    for n in &v.nodes {
        let newest = n.versions.first();
        let version = match newest {
            Some(x) if x.delete_marker => format!("{} (delete marker)", x.version_id),
            Some(x) => x.version_id.clone(),
            None => "-".into(),
        };
        outln!(
            "{:<16} {:<8} {:>8} {:<34} {:<34} {:>12} {}{}",
            n.node,
            if n.replica { "yes" } else { "no" },
            n.versions.len(),
            version,
            newest.map_or("-".to_string(), |x| x.etag.clone()),
            newest.map_or("-".to_string(), |x| x.size.to_string()),
            newest.map_or("-".to_string(), |x| x.hlc.clone()),
            n.error
                .as_ref()
                .map(|e| format!("  (could not ask: {e})"))
                .unwrap_or_default()
        );
    }
}

/// Prints the members of a `/cluster/status` or `/cluster/nodes` answer as a table.
fn print_members(members: &[api::MemberView], leader: Option<&str>) {
    let gib = |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / (1u64 << 30) as f64));
    outln!(
        "{:<16} {:<8} {:<9} {:<8} {:<24} {:<10} {:<10} {:>10} {:>9} LEADER",
        "NODE",
        "RAFT",
        "STATE",
        "LIVENESS",
        "RPC ADDRESS",
        "ZONE",
        "RACK",
        "OBJECTS",
        "FREE GiB"
    );
    for m in members {
        outln!(
            "{:<16} {:<8} {:<9} {:<8} {:<24} {:<10} {:<10} {:>10} {:>9} {}",
            m.name,
            m.raft_role,
            m.state,
            m.liveness,
            m.rpc_addr,
            m.zone,
            m.rack,
            m.load.map_or("-".to_string(), |l| l.objects.to_string()),
            gib(m.load.map(|l| l.free_bytes)),
            if leader == Some(m.name.as_str()) { "*" } else { "" }
        );
    }
}

#[derive(Subcommand, Debug)]
enum WorkerCommand {
    /// Set how long a worker rests after each unit of work, as a multiple of the time the unit
    /// took (0: no rest; 10: it works about a tenth of the time).
    Set {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
        tranquility: u32,
    },
    /// Make a worker run its next round now instead of waiting for its interval.
    Wake { name: String },
}

/// Prints workers as a table.
fn print_workers(list: &[api::WorkerStatus]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ago = |ms: Option<u64>| ms.map_or("-".to_string(), |t| format!("{}s ago", now.saturating_sub(t) / 1000));
    outln!(
        "{:<28} {:<9} {:<8} {:>8} {:>8} {:>6} {:<12} NOTE",
        "WORKER",
        "STATE",
        "ON FAIL",
        "RESTARTS",
        "UNITS",
        "TRANQ",
        "LAST ACTIVE"
    );
    for w in list {
        let state = serde_json::to_value(w.state).ok();
        let on_failure = serde_json::to_value(w.on_failure).ok();
        let note = match (&w.last_error, &w.progress) {
            (Some(e), _) => format!("last error {}: {e}", ago(w.last_error_ms)),
            (None, Some(p)) => p.clone(),
            (None, None) => String::new(),
        };
        outln!(
            "{:<28} {:<9} {:<8} {:>8} {:>8} {:>6} {:<12} {}",
            w.name,
            state.as_ref().and_then(|v| v.as_str()).unwrap_or("?"),
            on_failure.as_ref().and_then(|v| v.as_str()).unwrap_or("?"),
            w.restarts,
            w.units,
            w.tranquility,
            ago(w.last_active_ms),
            note
        );
    }
}

#[derive(Subcommand, Debug)]
enum BucketCommand {
    /// Objects, bytes, quota and requests per month of a bucket.
    Info { bucket: String },
    /// Set a bucket's quota (bytes and/or objects), or remove it with --clear.
    Quota {
        bucket: String,
        #[arg(long = "max-bytes")]
        max_bytes: Option<u64>,
        #[arg(long = "max-objects")]
        max_objects: Option<u64>,
        #[arg(long, conflicts_with_all = ["max_bytes", "max_objects"])]
        clear: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a key; prints its access key and secret (shown only this once).
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Let a disabled key sign requests again.
    Enable { access_key: String },
    /// Stop a key from signing requests.
    Disable { access_key: String },
    /// Delete a key.
    Delete { access_key: String },
    /// Grant a key read, write or owner permission on a bucket.
    Allow {
        access_key: String,
        #[arg(long)]
        bucket: String,
        /// read, write or owner.
        #[arg(long)]
        permission: String,
    },
    /// Revoke a key's permission on a bucket.
    Deny {
        access_key: String,
        #[arg(long)]
        bucket: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut cli = Cli::parse();
    http::set_ca_file(cli.ca_file.clone());
    if cli.admin_token.is_none()
        && let Some(p) = &cli.admin_token_file
    {
        match std::fs::read_to_string(p) {
            Ok(t) if !t.trim().is_empty() => cli.admin_token = Some(t.trim().to_string()),
            Ok(_) => {
                eprintln!("ironbucket-cli: the admin token file {} is empty", p.display());
                std::process::exit(2);
            }
            Err(e) => {
                eprintln!("ironbucket-cli: cannot read the admin token file {}: {e}", p.display());
                std::process::exit(2);
            }
        }
    }
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ironbucket-cli: error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// A GET with the admin token when one is configured (every admin route but /health and
/// /health/ready needs one).
async fn get(base: &str, token: Option<&str>, path: &str, timeout: u64) -> Result<(u16, String)> {
    request(base, "GET", path, token, None, timeout).await
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Health { json } => {
            let (status, body) = get(&cli.admin_url, cli.admin_token.as_deref(), "/health", cli.timeout).await?;
            let h: api::Health = serde_json::from_str(&body)
                .with_context(|| format!("unexpected /health answer (HTTP {status}): {body}"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                outln!("status:   {}", h.status);
                outln!("node:     {}", h.node_id);
                outln!("version:  {}", h.version);
                outln!("uptime:   {} s", h.uptime_seconds);
                if let Some(s) = &h.storage {
                    outln!("objects:  {}", s.objects);
                    outln!("used:     {} bytes", s.used_bytes);
                    outln!("disk:     {} free of {} bytes", s.disk_free_bytes, s.disk_total_bytes);
                }
                if let Some(e) = &h.error {
                    outln!("error:    {e}");
                }
            }
            Ok(if status == 200 && h.status == "ok" { 0 } else { 1 })
        }
        Command::Ready { json } => {
            let (status, body) = get(&cli.admin_url, cli.admin_token.as_deref(), "/health/ready", cli.timeout).await?;
            let r: api::Ready = serde_json::from_str(&body)
                .with_context(|| format!("unexpected /health/ready answer (HTTP {status}): {body}"))?;
            let ready = status == 200 && r.ready;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else if ready {
                outln!("ready");
            } else {
                outln!("not ready:");
                for why in &r.reasons {
                    outln!("  - {why}");
                }
            }
            Ok(if ready { 0 } else { 1 })
        }
        Command::Locate { target, json } => {
            let Some((bucket, key)) = target.split_once('/').filter(|(b, k)| !b.is_empty() && !k.is_empty()) else {
                eprintln!("ironbucket-cli: locate takes <bucket>/<key>, not {target:?}");
                return Ok(2);
            };
            let key_path: Vec<String> = key.split('/').map(pct).collect();
            let path = format!("/cluster/locate/{}/{}", pct(bucket), key_path.join("/"));
            let (status, body) = get(&cli.admin_url, cli.admin_token.as_deref(), &path, cli.timeout).await?;
            if status != 200 {
                eprintln!("ironbucket-cli: the node answered HTTP {status}: {}", error_of(&body));
                return Ok(1);
            }
            let v: api::Location = serde_json::from_str(&body)
                .with_context(|| format!("unexpected /cluster/locate answer (HTTP {status}): {body}"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_location(&v);
            }
            Ok(0)
        }
        Command::Cluster(ClusterCommand::Layout(l)) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for layout commands")?;
            layout::run(l, &cli.admin_url, token, cli.timeout).await
        }
        Command::Cluster(ClusterCommand::Rebalance { watch, command }) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for rebalance commands")?;
            rebalance::run(command, watch, &cli.admin_url, token, cli.timeout).await
        }
        Command::Cluster(ClusterCommand::JoinToken(t)) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for join tokens")?;
            token::run_join(&cli.admin_url, token, t, cli.timeout).await
        }
        Command::Cluster(ClusterCommand::Repair(r)) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for repair commands")?;
            repair::run(r, &cli.admin_url, token, cli.timeout).await
        }
        Command::Cluster(c) => {
            let change = match &c {
                ClusterCommand::SetReplication {
                    factor,
                    strategy,
                    read,
                    write,
                } => Some((
                    "PUT",
                    "/cluster/replication".to_string(),
                    serde_json::to_value(api::ReplicationChange {
                        factor: *factor,
                        strategy: strategy.clone(),
                        read_consistency: read.clone(),
                        write_consistency: write.clone(),
                    })?,
                )),
                ClusterCommand::SetNode {
                    name,
                    zone,
                    rack,
                    weight,
                    role,
                } => Some((
                    "PUT",
                    format!("/cluster/nodes/{}", pct(name)),
                    serde_json::to_value(api::MemberChange {
                        role: role.clone(),
                        zone: zone.clone(),
                        rack: rack.clone(),
                        weight: *weight,
                    })?,
                )),
                ClusterCommand::Drain { name } => Some((
                    "POST",
                    format!("/cluster/nodes/{}/drain", pct(name)),
                    serde_json::json!({}),
                )),
                ClusterCommand::Activate { name } => Some((
                    "POST",
                    format!("/cluster/nodes/{}/activate", pct(name)),
                    serde_json::json!({}),
                )),
                ClusterCommand::Decommission { name } => Some((
                    "POST",
                    format!("/cluster/nodes/{}/decommission", pct(name)),
                    serde_json::json!({}),
                )),
                ClusterCommand::Remove { name } => {
                    Some(("DELETE", format!("/cluster/nodes/{}", pct(name)), serde_json::json!({})))
                }
                ClusterCommand::ForceRecover { node } => {
                    eprintln!(
                        "WARNING: forcing {node} to be the only voter. Writes acknowledged only by the lost nodes may be lost, and the lost nodes must be wiped before they rejoin."
                    );
                    Some((
                        "POST",
                        "/cluster/force-recover".to_string(),
                        serde_json::to_value(api::ForceRecover { node: node.clone() })?,
                    ))
                }
                ClusterCommand::Replace { name } => Some((
                    "POST",
                    format!("/cluster/nodes/{}/replace", pct(name)),
                    serde_json::json!({}),
                )),
                ClusterCommand::ResealKeys => Some(("POST", "/cluster/keys/reseal".to_string(), serde_json::json!({}))),
                ClusterCommand::Promote { name } => Some((
                    "POST",
                    format!("/cluster/nodes/{}/promote", pct(name)),
                    serde_json::json!({}),
                )),
                _ => None,
            };
            if let Some((method, path, mut body)) = change {
                let token = cli
                    .admin_token
                    .as_deref()
                    .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required to change the cluster")?;
                if let Some(o) = body.as_object_mut() {
                    o.retain(|_, v| !v.is_null());
                }
                return admin_call(&cli.admin_url, method, &path, token, Some(body), cli.timeout).await;
            }
            let (path, raw) = match c {
                ClusterCommand::Status { json } => ("/cluster/status", json),
                ClusterCommand::Nodes { json } => ("/cluster/nodes", json),
                _ => unreachable!("changes were handled above"),
            };
            let (status, body) = get(&cli.admin_url, cli.admin_token.as_deref(), path, cli.timeout).await?;
            if status != 200 {
                eprintln!("ironbucket-cli: the node answered HTTP {status}: {}", error_of(&body));
                return Ok(1);
            }
            let bad = || format!("unexpected {path} answer (HTTP {status}): {body}");
            if path == "/cluster/nodes" {
                let members: Vec<api::MemberView> = serde_json::from_str(&body).with_context(bad)?;
                if raw {
                    outln!("{}", serde_json::to_string_pretty(&members)?);
                } else {
                    print_members(&members, None);
                }
                return Ok(0);
            }
            let v: api::ClusterStatus = serde_json::from_str(&body).with_context(bad)?;
            if raw {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let opt = |x: Option<u64>| x.map_or("-".to_string(), |x| x.to_string());
                outln!("cluster:        {} ({})", v.cluster_name, v.cluster_id);
                outln!("this node:      {} ({})", v.node, v.raft_state);
                outln!(
                    "leader:         {} (term {})",
                    v.leader.as_deref().unwrap_or("-"),
                    v.term
                );
                outln!(
                    "log:            last index {}, applied {}",
                    opt(v.last_log_index),
                    opt(v.last_applied)
                );
                outln!("layout version: {}", v.layout_version);
                let r = &v.replication;
                outln!(
                    "replication:    RF {} {} read {} write {}",
                    r.factor,
                    r.strategy,
                    r.read_consistency,
                    r.write_consistency
                );
                outln!();
                print_members(&v.members, v.leader.as_deref());
            }
            Ok(0)
        }
        Command::Bucket(b) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for bucket commands")?;
            let (method, path, body) = match &b {
                BucketCommand::Info { bucket } => ("GET", format!("/buckets/{}", pct(bucket)), None),
                BucketCommand::Quota {
                    bucket, clear: true, ..
                } => ("DELETE", format!("/buckets/{}/quota", pct(bucket)), None),
                BucketCommand::Quota {
                    bucket,
                    max_bytes,
                    max_objects,
                    ..
                } => {
                    if max_bytes.is_none() && max_objects.is_none() {
                        anyhow::bail!("give --max-bytes and/or --max-objects, or --clear");
                    }
                    (
                        "PUT",
                        format!("/buckets/{}/quota", pct(bucket)),
                        Some(serde_json::to_value(api::Quota {
                            max_bytes: *max_bytes,
                            max_objects: *max_objects,
                        })?),
                    )
                }
            };
            admin_call(&cli.admin_url, method, &path, token, body, cli.timeout).await
        }
        Command::Key(k) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for key commands")?;
            let (method, path, body) = match &k {
                KeyCommand::Create { name } => (
                    "POST",
                    "/keys".to_string(),
                    Some(serde_json::to_value(api::CreateKey { name: name.clone() })?),
                ),
                KeyCommand::List => ("GET", "/keys".to_string(), None),
                KeyCommand::Enable { access_key } => ("POST", format!("/keys/{}/enable", pct(access_key)), None),
                KeyCommand::Disable { access_key } => ("POST", format!("/keys/{}/disable", pct(access_key)), None),
                KeyCommand::Delete { access_key } => ("DELETE", format!("/keys/{}", pct(access_key)), None),
                KeyCommand::Allow {
                    access_key,
                    bucket,
                    permission,
                } => (
                    "PUT",
                    format!("/keys/{}/buckets/{}", pct(access_key), pct(bucket)),
                    Some(serde_json::to_value(api::SetPermission {
                        permission: permission.clone(),
                    })?),
                ),
                KeyCommand::Deny { access_key, bucket } => (
                    "DELETE",
                    format!("/keys/{}/buckets/{}", pct(access_key), pct(bucket)),
                    None,
                ),
            };
            admin_call(&cli.admin_url, method, &path, token, body, cli.timeout).await
        }
        Command::Workers { action, json } => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for worker commands")?;
            match action {
                Some(WorkerCommand::Set { name, tranquility }) => {
                    let body = serde_json::to_value(api::SetTranquility { tranquility })?;
                    let path = format!("/workers/{}", pct(&name));
                    return admin_call(&cli.admin_url, "PUT", &path, token, Some(body), cli.timeout).await;
                }
                Some(WorkerCommand::Wake { name }) => {
                    let path = format!("/workers/{}/wake", pct(&name));
                    return admin_call(&cli.admin_url, "POST", &path, token, None, cli.timeout).await;
                }
                None => {}
            }
            let (status, body) = request(&cli.admin_url, "GET", "/workers", Some(token), None, cli.timeout).await?;
            if status != 200 {
                eprintln!("ironbucket-cli: the node answered HTTP {status}: {}", error_of(&body));
                return Ok(1);
            }
            let list: Vec<api::WorkerStatus> =
                serde_json::from_str(&body).with_context(|| format!("unexpected /workers answer: {body}"))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_workers(&list);
            }
            let dead = list.iter().any(|w| w.state == api::WorkerState::Dead);
            Ok(if dead { 1 } else { 0 })
        }
        Command::Token(t) => {
            let token = cli
                .admin_token
                .as_deref()
                .context("--admin-token (or IRONBUCKET_ADMIN_TOKEN) is required for token commands")?;
            token::run(&cli.admin_url, token, t, cli.timeout).await
        }
        Command::Metrics => {
            let (status, body) = get(&cli.admin_url, cli.admin_token.as_deref(), "/metrics", cli.timeout).await?;
            out!("{body}");
            Ok(if status == 200 { 0 } else { 1 })
        }
    }
}

pub(crate) fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A management call: prints the JSON answer; exit code 1 (and the error on stderr) otherwise.
pub(crate) async fn admin_call(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
    timeout: u64,
) -> Result<i32> {
    let (status, body) = request(base, method, path, Some(token), body, timeout).await?;
    if (200..300).contains(&status) {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
        outln!("{}", serde_json::to_string_pretty(&v)?);
        Ok(0)
    } else {
        eprintln!("ironbucket-cli: the node answered HTTP {status}: {}", error_of(&body));
        Ok(1)
    }
}

/// The message of an admin API error answer (`{"error": "..."}`), or the raw body.
fn error_of(body: &str) -> String {
    serde_json::from_str::<api::ErrorBody>(body).map_or_else(|_| body.to_string(), |e| e.error)
}
