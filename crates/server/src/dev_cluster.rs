//! `ironbucket dev-cluster`: a local cluster without Docker. Starts N `ironbucket server`
//! processes on 127.0.0.1 with the plan's port numbering (S3 9001.., admin 8001.., RPC 7001..),
//! one data directory each, shared credentials and cluster secret kept in the cluster directory,
//! waits until they have formed one cluster, prints the endpoints and credentials, and stops them
//! all on Ctrl-C or SIGTERM (or when one of them exits on its own).

use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DevClusterArgs {
    /// Number of nodes (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// Directory for the nodes' data directories, logs and the shared credentials (reused by
    /// the next run).
    #[arg(long = "dir", value_name = "DIR", default_value = "./dev-cluster")]
    pub dir: PathBuf,
    /// S3 port of node 1; node i listens on this + i - 1.
    #[arg(long = "s3-port", value_name = "PORT", default_value_t = 9001)]
    pub s3_port: u16,
    /// Admin port of node 1; node i listens on this + i - 1.
    #[arg(long = "admin-port", value_name = "PORT", default_value_t = 8001)]
    pub admin_port: u16,
    /// RPC port of node 1; node i listens on this + i - 1.
    #[arg(long = "rpc-port", value_name = "PORT", default_value_t = 7001)]
    pub rpc_port: u16,
    /// REPLICATION_FACTOR [default: the number of nodes, at most 3].
    #[arg(long = "replication-factor", value_name = "N")]
    pub replication_factor: Option<u32>,
    /// How long to wait for the cluster to form, in seconds.
    #[arg(long = "wait-secs", value_name = "SECS", default_value_t = 60)]
    pub wait_secs: u64,
    /// Serve S3 and admin over plain HTTP (API_TLS=false) instead of HTTPS with certificates
    /// from one CA kept in DIR/tls.
    #[arg(long = "plain-http")]
    pub plain_http: bool,
}

/// What the nodes share, made on the first run and kept in `<dir>/cluster.env` (mode 600).
struct Shared {
    access_key: String,
    secret_key: String,
    cluster_secret: String,
    /// The nodes' admin API token (not the root secret).
    admin_token: String,
}

fn random_token(len: usize, alphabet: &[u8]) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn shared(dir: &Path) -> Result<Shared> {
    let path = dir.join("cluster.env");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
                .with_context(|| format!("{} has no {k}; delete it to make new credentials", path.display()))
        };
        let admin_token = match get("IRONBUCKET_ADMIN_TOKEN") {
            Ok(t) => t,
            // Made by a release whose admin token was the root secret: add one.
            Err(_) => {
                let t = new_admin_token();
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                writeln!(f, "IRONBUCKET_ADMIN_TOKEN={t}")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                t
            }
        };
        return Ok(Shared {
            access_key: get("IRONBUCKET_ACCESS_KEY")?,
            secret_key: get("IRONBUCKET_SECRET_KEY")?,
            cluster_secret: get("CLUSTER_SECRET")?,
            admin_token,
        });
    }
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let s = Shared {
        access_key: format!("IBDEV{}", random_token(15, UPPER)),
        secret_key: random_token(40, ANY),
        cluster_secret: random_token(48, ANY),
        admin_token: new_admin_token(),
    };
    let text = format!(
        "IRONBUCKET_ACCESS_KEY={}\nIRONBUCKET_SECRET_KEY={}\nCLUSTER_SECRET={}\nIRONBUCKET_ADMIN_TOKEN={}\n",
        s.access_key, s.secret_key, s.cluster_secret, s.admin_token
    );
    write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(s)
}

fn new_admin_token() -> String {
    ironbucket_types::token::admin_token(rand::random())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

/// The CA and one certificate per node in `<dir>/tls`, made when one is missing (the nodes'
/// S3 and admin ports serve them; clients trust `ca.pem`).
fn certificates(dir: &Path, names: &[String]) -> Result<PathBuf> {
    let tls = dir.join("tls");
    let complete = tls.join("ca.pem").is_file()
        && names
            .iter()
            .all(|n| tls.join(format!("{n}.pem")).is_file() && tls.join(format!("{n}.key")).is_file());
    if !complete {
        ironbucket_rpc::generate_certificates(&tls, "dev-cluster", names, &[])
            .map_err(|e| anyhow::anyhow!("cannot make the dev cluster's certificates: {e}"))?;
    }
    Ok(tls)
}

/// A TLS client trusting the CA in `ca` (PEM).
fn tls_client(ca: &Path) -> Result<std::sync::Arc<tokio_rustls::rustls::ClientConfig>> {
    use tokio_rustls::rustls;
    let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c?)?;
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// One GET over HTTP/1.0 to a node's admin API on 127.0.0.1 with `token`, over TLS when
/// `tls` is given: (status, body); `None` when nothing answers.
fn http_get(
    port: u16,
    path: &str,
    token: &str,
    tls: Option<&std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_nodelay(true).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut resp = String::new();
    match tls {
        Some(cfg) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
            let conn = tokio_rustls::rustls::ClientConnection::new(cfg.clone(), name).ok()?;
            let mut t = tokio_rustls::rustls::StreamOwned::new(conn, s);
            t.write_all(req.as_bytes()).ok()?;
            // A node may close without close_notify; what arrived is the answer.
            let _ = t.read_to_string(&mut resp);
        }
        None => {
            let mut s = s;
            s.write_all(req.as_bytes()).ok()?;
            s.read_to_string(&mut resp).ok()?;
        }
    }
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

struct Node {
    name: String,
    child: Child,
    log: PathBuf,
}

fn stop_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        // Only children still running: a reaped child's pid may belong to someone else now.
        if !matches!(n.child.try_wait(), Ok(None)) {
            continue;
        }
        if let Ok(pid) = i32::try_from(n.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("{} did not stop within 15 s; killing it", n.name);
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// The first node whose process has ended.
fn exited(nodes: &mut [Node]) -> Option<usize> {
    nodes.iter_mut().position(|x| matches!(x.child.try_wait(), Ok(Some(_))))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub fn run(a: DevClusterArgs) -> Result<()> {
    if !(1..=9).contains(&a.nodes) {
        bail!("--nodes must be between 1 and 9, not {}", a.nodes);
    }
    let n = a.nodes;
    for (flag, base) in [
        ("--s3-port", a.s3_port),
        ("--admin-port", a.admin_port),
        ("--rpc-port", a.rpc_port),
    ] {
        if base == 0 || base.checked_add(n - 1).is_none() {
            bail!("{flag} {base} leaves no room for {n} consecutive ports");
        }
    }
    if let Some(rf) = a.replication_factor
        && (rf == 0 || rf > u32::from(n))
    {
        bail!("--replication-factor must be between 1 and {n}, not {rf}");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create {}", a.dir.display()))?;
    let shared = shared(&a.dir)?;
    let exe = std::env::current_exe().context("cannot find the ironbucket binary")?;
    let seeds: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", a.rpc_port + i)).collect();
    let seeds = seeds.join(",");
    let rf = a.replication_factor.unwrap_or(u32::from(n.min(3)));

    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<&'static str>();
    {
        let tx = stop_tx.clone();
        let mut signals = signal_hook_like()?;
        std::thread::spawn(move || {
            if let Some(sig) = signals.next() {
                let _ = tx.send(sig);
            }
        });
    }

    let names: Vec<String> = (0..n).map(|i| format!("node{}", i + 1)).collect();
    let (tls_dir, scheme) = if a.plain_http {
        (None, "http")
    } else {
        (Some(certificates(&a.dir, &names)?), "https")
    };
    let client_tls = match &tls_dir {
        Some(d) => Some(tls_client(&d.join("ca.pem"))?),
        None => None,
    };

    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        // A node that cannot be started stops the ones already running.
        let started = (|| -> Result<Node> {
            let name = format!("node{}", i + 1);
            let data = a.dir.join(&name);
            std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
            let log = a.dir.join(format!("{name}.log"));
            let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            let err = out.try_clone()?;
            let mut cmd = Command::new(&exe);
            match &tls_dir {
                Some(d) => {
                    cmd.arg("server")
                        .arg("--api-tls-cert")
                        .arg(d.join(format!("{name}.pem")))
                        .arg("--api-tls-key")
                        .arg(d.join(format!("{name}.key")));
                }
                None => {
                    cmd.args(["server", "--api-tls", "false"]);
                }
            }
            let child = cmd
                .arg("--data-dir")
                .arg(&data)
                .args(["--bind", "127.0.0.1", "--node-id", &name])
                .args(["--port", &(a.s3_port + i).to_string()])
                .args(["--admin-port", &(a.admin_port + i).to_string()])
                .args(["--access-key", &shared.access_key, "--secret-key", &shared.secret_key])
                .args(["--admin-token", &shared.admin_token])
                .args(["--cluster-enabled", "true", "--cluster-name", "dev-cluster"])
                .args(["--cluster-seeds", &seeds, "--cluster-secret", &shared.cluster_secret])
                .args(["--rpc-port", &(a.rpc_port + i).to_string()])
                .args(["--rpc-address", &format!("127.0.0.1:{}", a.rpc_port + i)])
                .args(["--replication-factor", &rf.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .with_context(|| format!("cannot start {name}"))?;
            Ok(Node { name, child, log })
        })();
        match started {
            Ok(node) => nodes.push(node),
            Err(e) => {
                stop_all(&mut nodes);
                return Err(e);
            }
        }
    }

    // Ready when every node answers /health and they agree on one leader.
    let deadline = Instant::now() + Duration::from_secs(a.wait_secs);
    loop {
        if let Ok(sig) = stop_rx.try_recv() {
            eprintln!("{sig}: stopping");
            stop_all(&mut nodes);
            return Ok(());
        }
        if let Some(dead) = exited(&mut nodes) {
            let dead = &nodes[dead];
            let msg = format!(
                "{} exited during start; its log ends:\n{}",
                dead.name,
                log_tail(&dead.log)
            );
            stop_all(&mut nodes);
            bail!(msg);
        }
        let leaders: Vec<Option<String>> = (0..n)
            .map(|i| {
                http_get(
                    a.admin_port + i,
                    "/cluster/status",
                    &shared.admin_token,
                    client_tls.as_ref(),
                )
                .filter(|(st, _)| *st == 200)
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                // Ready for data too: every node is an active member of the placement layout.
                .filter(|v| {
                    v["members"].as_array().is_some_and(|m| {
                        m.iter()
                            .filter(|x| x["state"] == "active" && x["weight"].as_u64() > Some(0))
                            .count()
                            == n as usize
                    })
                })
                .and_then(|v| v["leader"].as_str().map(str::to_string))
            })
            .collect();
        if leaders.iter().all(Option::is_some) && leaders.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        if Instant::now() >= deadline {
            let tails: Vec<String> = nodes
                .iter()
                .map(|x| format!("--- {} ({})\n{}", x.name, x.log.display(), log_tail(&x.log)))
                .collect();
            stop_all(&mut nodes);
            bail!(
                "the nodes did not form a cluster within {} s:\n{}",
                a.wait_secs,
                tails.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    println!("IronBucket dev cluster: {n} node(s) on 127.0.0.1, replication factor {rf}");
    for (i, x) in nodes.iter().enumerate() {
        let i = i as u16;
        println!(
            "  {}: S3 {scheme}://127.0.0.1:{}  admin {scheme}://127.0.0.1:{}  RPC 127.0.0.1:{}  log {}",
            x.name,
            a.s3_port + i,
            a.admin_port + i,
            a.rpc_port + i,
            x.log.display()
        );
    }
    println!("  access key: {}", shared.access_key);
    println!("  secret key: {}", shared.secret_key);
    println!("  admin token: {}", shared.admin_token);
    println!("  (kept in {})", a.dir.join("cluster.env").display());
    let ca_env = match &tls_dir {
        Some(d) => {
            let ca = std::path::absolute(d.join("ca.pem")).unwrap_or_else(|_| d.join("ca.pem"));
            println!("  CA of the nodes' certificates: {}", ca.display());
            format!("AWS_CA_BUNDLE={} ", ca.display())
        }
        None => String::new(),
    };
    println!(
        "  try: {ca_env}AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {scheme}://127.0.0.1:{} s3 ls",
        shared.access_key, shared.secret_key, a.s3_port
    );
    println!("ready; Ctrl-C stops every node");
    std::io::stdout().flush().ok();

    loop {
        match stop_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(sig) => {
                eprintln!("{sig}: stopping {n} node(s)");
                stop_all(&mut nodes);
                return Ok(());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("signal watcher ended"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(dead) = exited(&mut nodes) {
            // Ctrl-C in a terminal reaches the nodes too; then their exit is no failure.
            if let Ok(sig) = stop_rx.recv_timeout(Duration::from_millis(500)) {
                eprintln!("{sig}: stopping {n} node(s)");
                stop_all(&mut nodes);
                return Ok(());
            }
            let dead = &nodes[dead];
            let msg = format!("{} exited; its log ends:\n{}", dead.name, log_tail(&dead.log));
            stop_all(&mut nodes);
            bail!(msg);
        }
    }
}

/// SIGINT and SIGTERM as an iterator of their names, read on a small runtime of their own.
fn signal_hook_like() -> Result<impl Iterator<Item = &'static str>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the signal watcher")?;
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    Ok(std::iter::from_fn(move || {
        Some(rt.block_on(async {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            }
        }))
    }))
}
