//! `ironbucket`: the server binary. Composes each crate's config from a TOML file, environment
//! variables and flags, wires the store, the S3 front end and the admin API together, and runs
//! them until SIGTERM/SIGINT.

mod api_tls;
mod audit;
mod config;
mod config_cluster;
mod config_security;
mod dev_cluster;
mod serve;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config_security::ApiTlsSource;
use ironbucket_store::{LocalStore, ObjectStore};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "ironbucket",
    version,
    about = "IronBucket: an S3-compatible object store in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the store: the S3 API and the admin API (health, metrics).
    Server(Box<config::ServerArgs>),
    /// Certificates for mutual TLS between the nodes of a cluster.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Start a local cluster without Docker: N nodes on 127.0.0.1 (S3 9001.., admin 8001.., RPC
    /// 7001..), each with its own data directory under --dir; prints the endpoints and
    /// credentials, and stops every node on Ctrl-C.
    DevCluster(dev_cluster::DevClusterArgs),
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Make a cluster CA (ca.pem, ca.key) and a certificate and key per node (<node>.pem,
    /// <node>.key), each valid for the node name, localhost, 127.0.0.1 and --hosts. Keys are
    /// written with mode 600. For a test cluster; use your own PKI in production.
    Generate {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
        /// Node names (comma-separated): the NODE_ID and host name each node is reached by.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Extra host names or IP addresses every certificate is valid for (comma-separated).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Cluster name, shown in the CA's subject.
        #[arg(long, default_value = "ironbucket")]
        cluster_name: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::DevCluster(args) => dev_cluster::run(args),
        Command::Cert(CertCommand::Generate {
            out,
            nodes,
            hosts,
            cluster_name,
        }) => ironbucket_rpc::generate_certificates(&out, &cluster_name, &nodes, &hosts)
            .map(|files| {
                for f in files {
                    println!("{}", f.display());
                }
            })
            .map_err(anyhow::Error::msg),
    };
    if let Err(e) = result {
        eprintln!("ironbucket: error: {e:#}");
        std::process::exit(1);
    }
}

/// What the failure detector starts with.
struct GossipSetup {
    bind: std::net::SocketAddr,
    seeds: Vec<String>,
    rpc: ironbucket_rpc::RpcConfig,
    heartbeat: std::time::Duration,
    resolver: ironbucket_rpc::Resolver,
}

/// Starts the failure detector on the RPC port number (UDP) once the control plane knows the
/// address the other nodes reach this one at.
async fn start_gossip(
    cp: &Arc<ironbucket_consensus::ControlPlane>,
    setup: GossipSetup,
    store: Arc<dyn ObjectStore>,
    workers: &ironbucket_runtime::Registry,
) -> Result<Arc<ironbucket_cluster::Gossip>> {
    let GossipSetup {
        bind,
        seeds,
        rpc,
        heartbeat,
        resolver,
    } = setup;
    let me = cp.node_name().to_string();
    let addr = loop {
        let advertised = cp
            .status()
            .members
            .into_iter()
            .find(|m| m.name == me && !m.rpc_addr.is_empty())
            .map(|m| m.rpc_addr);
        if let Some(a) = advertised
            && let Ok(found) = resolver.resolve(&a).await
            && let Some(first) = found.first()
        {
            break *first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let id = ironbucket_cluster::GossipId {
        name: me,
        addr,
        bump: ironbucket_types::now_millis(),
    };
    let load: ironbucket_cluster::LoadFn = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let u = store.usage().await.unwrap_or_default();
            ironbucket_cluster::LoadFigures {
                objects: u.objects,
                bytes: u.bytes,
                capacity_bytes: u.disk_total,
                free_bytes: u.disk_free,
            }
        })
    });
    let auth = ironbucket_rpc::Auth::new(&rpc.cluster_name, &rpc.secret).with_accepted(&rpc.accepted_secrets);
    let g = ironbucket_cluster::Gossip::start_in(
        id,
        bind,
        seeds,
        auth,
        resolver,
        ironbucket_cluster::GossipConfig::from_heartbeat(heartbeat),
        load,
        workers,
    )
    .await
    .with_context(|| format!("cannot listen for gossip on udp {bind}"))?;
    tracing::info!(udp = %bind, advertised = %addr, "failure detection (gossip) started");
    Ok(g)
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // s3s's debug lines print whole requests (Authorization signatures, SSE-C keys): its
    // output stops at info whatever RUST_LOG says.
    let filter = match "s3s=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    // Colours only on a terminal (not in log files, `docker logs` or journald), and never with
    // NO_COLOR set.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// Fault injection for tests: `FAILPOINTS="name=actions;..."` in the `fail` crate's syntax
/// (e.g. `meta-commit=20*off->panic`), armed at start, and `FAILPOINTS_FILE=<path>`, a file of
/// the same items (`;` or one per line) read again every 200 ms while the node runs, so a test
/// can arm a fault point for a while (the chaos suite's disk faults). Only in builds with the
/// `failpoints` feature (on by default); see docs/operations.md.
#[cfg(feature = "failpoints")]
fn install_failpoints() -> Result<()> {
    if let Ok(spec) = std::env::var("FAILPOINTS") {
        for (name, actions) in parse_failpoints(&spec).context("FAILPOINTS")? {
            fail::cfg(&name, &actions)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("FAILPOINTS: bad actions for {name:?}"))?;
            tracing::warn!(failpoint = name, actions, "fault injection point armed");
        }
    }
    if let Some(path) = std::env::var_os("FAILPOINTS_FILE") {
        let path = std::path::PathBuf::from(path);
        std::thread::Builder::new()
            .name("failpoints-file".into())
            .spawn(move || follow_failpoints_file(&path))
            .context("cannot start the FAILPOINTS_FILE reader")?;
    }
    Ok(())
}

/// `name=actions` items separated by `;` or new lines; blank items and `#` comments skipped.
#[cfg(feature = "failpoints")]
fn parse_failpoints(spec: &str) -> Result<Vec<(String, String)>> {
    spec.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(';'))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, actions) = item
                .split_once('=')
                .with_context(|| format!("{item:?} is not name=actions"))?;
            Ok((name.trim().to_string(), actions.trim().to_string()))
        })
        .collect()
}

/// Arms the fault points `path` names, and disarms those it no longer names, whenever it
/// changes (a missing file names none).
#[cfg(feature = "failpoints")]
fn follow_failpoints_file(path: &std::path::Path) {
    let mut last: Option<String> = None;
    let mut armed: Vec<String> = Vec::new();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if last.as_deref() != Some(text.as_str()) {
            let had = !armed.is_empty();
            for name in armed.drain(..) {
                fail::remove(&name);
            }
            match parse_failpoints(&text) {
                Ok(items) => {
                    for (name, actions) in items {
                        match fail::cfg(&name, &actions) {
                            Ok(()) => {
                                tracing::warn!(
                                    failpoint = name,
                                    actions,
                                    "fault injection point armed (FAILPOINTS_FILE)"
                                );
                                armed.push(name);
                            }
                            Err(e) => tracing::error!(failpoint = name, error = %e, "FAILPOINTS_FILE: bad actions"),
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, file = %path.display(), "FAILPOINTS_FILE does not parse"),
            }
            if had && armed.is_empty() {
                tracing::warn!("fault injection points of FAILPOINTS_FILE disarmed");
            }
            last = Some(text);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(not(feature = "failpoints"))]
fn install_failpoints() -> Result<()> {
    if std::env::var_os("FAILPOINTS").is_some() || std::env::var_os("FAILPOINTS_FILE").is_some() {
        anyhow::bail!(
            "FAILPOINTS or FAILPOINTS_FILE is set, but this build has no fault injection (feature `failpoints`)"
        );
    }
    Ok(())
}

fn run_server(args: config::ServerArgs) -> Result<()> {
    // Data, metadata, keys and logs this process writes are for its own user only (0600 files,
    // 0700 directories), whatever umask it was started with.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cfg = config::Settings::resolve(args)?;
    init_logging(&cfg.log_format);
    #[cfg(feature = "unsafe-ack-before-quorum")]
    eprintln!(
        "WARNING: DELIBERATELY BROKEN BUILD (feature unsafe-ack-before-quorum): writes are acknowledged when one replica holds them; acknowledged data can be lost. For the chaos suite's checker only."
    );
    install_failpoints()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ironbucket")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve_all(cfg))
}

async fn serve_all(cfg: config::Settings) -> Result<()> {
    // Every background job of this node runs supervised in this registry (`GET /workers`).
    let workers = ironbucket_runtime::Registry::new();
    let local = LocalStore::open_in(cfg.local.clone(), cfg.keyring.clone(), &workers)
        .with_context(|| format!("cannot open the data directory {}", cfg.local.data_dir.display()))?;
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    // The control plane, when clustered: RPC server first (peers must reach us to form the
    // cluster), then the Raft node.
    let mut cluster_tasks = Vec::new();
    let mut control = None;
    let mut gossip_cfg = None;
    let mut cluster_store = None;
    // The clock offsets peers' RPC credentials show (`/cluster/health`).
    let peer_clocks = ironbucket_rpc::PeerClocks::default();
    if let Some(c) = cfg.cluster {
        let rpc_listener = tokio::net::TcpListener::bind(c.rpc_addr)
            .await
            .with_context(|| format!("cannot listen for node RPC on {}", c.rpc_addr))?;
        let rpc_local = rpc_listener.local_addr()?;
        let resolver = ironbucket_rpc::Resolver::system().with_routes(c.routes.clone());
        let peers = ironbucket_rpc::Peers::new(c.rpc.clone())
            .map_err(anyhow::Error::msg)?
            .with_clocks(peer_clocks.clone())
            .with_resolver(resolver.clone());
        let cp = ironbucket_consensus::ControlPlane::start_in(c.control.clone(), peers, &workers)
            .await
            .context("cannot start the control plane")?;
        // Buckets and their settings go through the control plane; the node's RPC handler serves
        // object requests from peers and hands the rest to the control plane.
        // A single node's data directory: its buckets join the cluster before the node's bucket
        // table is first made to follow the cluster's.
        let import = if c.from_standalone {
            let buckets = local
                .bucket_records()
                .await
                .context("cannot read the standalone buckets")?;
            let keys = local
                .standalone_keys()
                .await
                .context("cannot read the standalone access keys")?;
            tracing::info!(
                buckets = buckets.len(),
                keys = keys.len(),
                "FROM_STANDALONE: this node's buckets and access keys will join the cluster"
            );
            ironbucket_replication::Standalone { buckets, keys }
        } else {
            ironbucket_replication::Standalone::default()
        };
        let cs = ironbucket_replication::ClusterStore::with_import(local.clone(), cp.clone(), &workers, import);
        cs.set_handoff(c.handoff);
        cs.set_sync(c.sync);
        let handler = cs.handler();
        cluster_store = Some(cs);
        let mut stop = tx.subscribe();
        let rpc_cfg = c.rpc.clone();
        let clocks = peer_clocks.clone();
        cluster_tasks.push(tokio::spawn(async move {
            if let Err(e) = ironbucket_rpc::serve(rpc_listener, &rpc_cfg, handler, clocks, async move {
                let _ = stop.recv().await;
            })
            .await
            {
                tracing::error!(error = %e, "node RPC server stopped");
            }
        }));
        stdout_line(&format!(
            "Node RPC listening on {rpc_local} (cluster {})",
            c.rpc.cluster_name
        ));
        tracing::info!(rpc = %rpc_local, cluster = %c.rpc.cluster_name, seeds = ?c.control.seeds, "cluster mode");
        // One node runs each cluster-wide job. (Until objects are replicated, every node still
        // applies lifecycle rules to the objects it stores; the rebalancer comes with repair.)
        for job in ["lifecycle", "rebalance", ironbucket_replication::REREPLICATE_JOB] {
            let _ = cp.elect_job_leader(job, std::time::Duration::from_secs(10));
        }
        gossip_cfg = Some(GossipSetup {
            bind: rpc_local,
            seeds: c.control.seeds.clone(),
            rpc: c.rpc.clone(),
            heartbeat: c.control.heartbeat,
            resolver,
        });
        control = Some(cp);
    }

    let local_store = local.clone();
    if cluster_store.is_none() {
        // A single node has no replica to compare with: its writes do not keep the anti-entropy
        // tree (a cluster node's follows the placement ring, installed by its anti-entropy
        // worker; the index is rebuilt from the records if this data directory joins one).
        local
            .turn_tree_off()
            .await
            .context("cannot turn the metadata's anti-entropy tree off")?;
    }
    let store: Arc<dyn ObjectStore> = match &cluster_store {
        Some(cs) => cs.clone(),
        None => local,
    };
    let registry = prometheus::Registry::new();
    let s3_metrics = Arc::new(ironbucket_s3::S3Metrics::new(&registry).context("cannot register S3 metrics")?);
    let mut s3 = ironbucket_s3::build(store.clone(), &cfg.s3, s3_metrics).context("invalid S3 settings")?;
    let sec = &cfg.security;
    let audit_log = if sec.audit_file.is_some() || sec.audit_stdout {
        let log = audit::AuditLog::start(sec.audit_file.clone(), sec.audit_max_bytes, sec.audit_stdout)
            .with_context(|| format!("cannot open the audit log {:?}", sec.audit_file))?;
        Some(log as Arc<dyn ironbucket_types::audit::AuditSink>)
    } else {
        None
    };
    if let Some(a) = &audit_log {
        s3 = s3.with_audit(a.clone());
    }
    let admin = ironbucket_admin::AdminService::new(store.clone(), registry, cfg.admin.clone(), workers.clone())
        .context("cannot start the admin API")?;
    admin.set_local(local_store);
    if let Some(a) = &audit_log {
        admin.set_audit(a.clone());
    }
    if let Some(cp) = &control {
        admin.set_cluster(cp.clone());
    }
    if let Some(cs) = &cluster_store {
        admin.set_cluster_store(cs.clone());
        // A node whose clock runs ahead of most peers' (as their RPC credentials show) stamps
        // no writes: its stamps would be refused by them, and its own copy would win later.
        let (clocks, bound) = (peer_clocks.clone(), cfg.local.max_clock_ahead.as_millis() as u64);
        let me = cfg.admin.node_id.clone();
        cs.set_clock_check(Arc::new(move || clocks.ahead_of_peers(&me, bound, 30_000)));
        admin.set_peer_clocks(peer_clocks);
    }
    if let (Some(cp), Some(setup)) = (&control, gossip_cfg) {
        let (cp, admin, store) = (cp.clone(), admin.clone(), store.clone());
        let cs = cluster_store.clone();
        let workers = workers.clone();
        tokio::spawn(async move {
            match start_gossip(&cp, setup, store, &workers).await {
                Ok(g) => {
                    if let Some(cs) = cs {
                        // The coordinator skips replicas the failure detector reports down.
                        let g2 = g.clone();
                        cs.set_down_check(Arc::new(move |name: &str| {
                            g2.liveness(name) == ironbucket_cluster::Liveness::Down
                        }));
                    }
                    admin.set_gossip(g)
                }
                Err(e) => tracing::error!(error = %e, "failure detection (gossip) did not start"),
            }
        });
    }

    let s3_listener = tokio::net::TcpListener::bind(cfg.api_addr)
        .await
        .with_context(|| format!("cannot listen for S3 on {}", cfg.api_addr))?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("cannot listen for admin on {}", cfg.admin_addr))?;
    let s3_local = s3_listener.local_addr()?;
    let admin_local = admin_listener.local_addr()?;
    let mut trust_note = None;
    let api_tls = match &cfg.security.api_tls {
        ApiTlsSource::Files { cert, key } => {
            let t = api_tls::ApiTls::open(cert.clone(), key.clone())?;
            t.watch();
            Some(t)
        }
        ApiTlsSource::SelfMade { dir, hosts } => {
            let names = api_tls::self_made_hosts(&[cfg.api_addr.ip(), cfg.admin_addr.ip()], hosts);
            let made = api_tls::self_made(dir, &names)?;
            let ca = std::path::absolute(&made.ca).unwrap_or_else(|_| made.ca.clone());
            trust_note = Some(format!(
                "TLS: the node's own certificate ({}, valid for {}); clients trust its CA: AWS_CA_BUNDLE={}",
                if made.new { "made now" } else { "made earlier" },
                names.join(", "),
                ca.display()
            ));
            Some(api_tls::ApiTls::open(made.cert, made.key)?)
        }
        ApiTlsSource::Off => {
            eprintln!(
                "WARNING: the S3 and admin APIs speak plain HTTP (API_TLS=false): access keys' signatures, admin tokens and object data cross the network readable; do this only behind a load balancer that ends TLS (TRUSTED_PROXIES) or on a trusted network"
            );
            None
        }
    };
    let scheme = if api_tls.is_some() { "https" } else { "http" };
    // Plain lines on stdout so scripts and tests can find the bound ports.
    stdout_line(&format!(
        "IronBucket {} node {}",
        env!("CARGO_PKG_VERSION"),
        cfg.admin.node_id
    ));
    stdout_line(&format!("S3 API listening on {scheme}://{s3_local}"));
    stdout_line(&format!("Admin API listening on {scheme}://{admin_local}"));
    if let Some(note) = &trust_note {
        stdout_line(note);
    }
    if let Some(note) = &cfg.credentials_note {
        stdout_line(note);
    }
    tracing::info!(s3 = %s3_local, admin = %admin_local, data_dir = %cfg.local.data_dir.display(),
        fsync = cfg.local.storage.fsync, encryption = cfg.keyring.is_some(), "IronBucket started");

    let shutdown = serve::shutdown_signal();
    // The S3 port closes first; the admin port (the load balancers' checks) and the node RPC
    // once its requests are done.
    let (s3_stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopping = admin.clone();
    let s3_task = tokio::spawn(serve::serve(
        s3_listener,
        move |peer, secure| s3.with_peer_tls(peer, secure),
        s3_stop.subscribe(),
        cfg.shutdown_timeout,
        "s3",
        cfg.security.limits.clone(),
        api_tls.clone(),
    ));
    let admin_task = tokio::spawn(serve::serve(
        admin_listener,
        move |peer, _| admin.with_peer(peer),
        tx.subscribe(),
        cfg.shutdown_timeout,
        "admin",
        cfg.security.limits.clone(),
        api_tls,
    ));
    shutdown.await;
    stopping.set_stopping();
    if !cfg.shutdown_drain.is_zero() {
        tracing::info!(
            drain_secs = cfg.shutdown_drain.as_secs(),
            "stopping: /health/ready answers 404 so that load balancers send no new requests; serving until then (a second signal stops at once)"
        );
        tokio::select! {
            () = tokio::time::sleep(cfg.shutdown_drain) => {}
            () = serve::shutdown_signal() => tracing::info!("second signal: not waiting for the load balancers"),
        }
    }
    tracing::info!(
        deadline_secs = cfg.shutdown_timeout.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    let _ = s3_stop.send(());
    let _ = s3_task.await;
    let _ = tx.send(());
    let _ = admin_task.await;
    if let Some(cp) = control {
        cp.shutdown().await;
    }
    for t in cluster_tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A line on stdout. A stdout nobody reads any more (a closed pipe) is no reason to stop
/// serving: the error is ignored (`println!` would panic).
pub(crate) fn stdout_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
