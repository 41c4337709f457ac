//! A cluster of real `ironbucket` processes on 127.0.0.1 for the chaos suite: fixed ports per
//! node (so a restarted node is found where it was), one fault-injecting proxy per ordered pair
//! of nodes in front of the receiving node's RPC and gossip port (`--fault-routes`), and the
//! faults themselves: SIGKILL and restart, SIGSTOP and SIGCONT, delay, loss and cuts between
//! chosen nodes, a full disk (the node's data directory on a small tmpfs of its own), and disk
//! errors through the node's fault points (`FAILPOINTS_FILE`).

use crate::target::{Creds, Endpoint, Target};
use anyhow::{Context, Result, bail};
use ironbucket_testkit::proxy::{FaultProxy, Link};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ACCESS_KEY: &str = "chaosaccesskey";
pub const SECRET_KEY: &str = "chaos-secret-key-0123456789";
const CLUSTER_SECRET: &str = "chaos-cluster-secret-0123456789";

/// One node: its ports, its data directory and, while it runs, its process.
pub struct Node {
    pub name: String,
    pub s3_port: u16,
    pub admin_port: u16,
    pub rpc_port: u16,
    pub dir: PathBuf,
    /// Flags of this node alone (a clock offset, say).
    pub extra: Vec<String>,
    /// Environment of this node alone (`FAILPOINTS`, say).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
    /// A tmpfs mounted on `dir` (the disk-full scenario), unmounted when the cluster ends.
    tmpfs: bool,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// `proxies[i][j]`: node i's traffic to node j.
    proxies: Vec<Vec<Option<FaultProxy>>>,
    bin: PathBuf,
    root: PathBuf,
    seeds: String,
}

/// Options of a cluster.
pub struct Setup {
    pub nodes: usize,
    /// Extra flags per node index.
    pub extra: Vec<(usize, Vec<String>)>,
    /// Extra environment variables per node index.
    pub env: Vec<(usize, (String, String))>,
    /// Node indexes whose data directory is a tmpfs of this many MiB.
    pub tmpfs_mib: Vec<(usize, u64)>,
}

impl Cluster {
    /// Starts `setup.nodes` nodes under `root` and waits until all are ready.
    pub async fn start(bin: &Path, root: &Path, setup: Setup) -> Result<Self> {
        let n = setup.nodes;
        let ports = ironbucket_testkit::free_ports(3 * n);
        let rpc: Vec<u16> = (0..n).map(|i| ports[3 * i + 2]).collect();
        let seeds = rpc
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut proxies = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for (j, port) in rpc.iter().enumerate() {
                row.push(if i == j {
                    None
                } else {
                    Some(FaultProxy::start(([127, 0, 0, 1], *port).into()).await?)
                });
            }
            proxies.push(row);
        }
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = root.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let mut tmpfs = false;
            if let Some((_, mib)) = setup.tmpfs_mib.iter().find(|(k, _)| *k == i) {
                mount_tmpfs(&dir, *mib)?;
                tmpfs = true;
            }
            let routes: String = (0..n)
                .filter(|j| *j != i)
                .map(|j| {
                    let p = proxies[i][j].as_ref().map(|p: &FaultProxy| p.addr().to_string());
                    format!("127.0.0.1:{} {}\n", rpc[j], p.unwrap_or_default())
                })
                .collect();
            std::fs::write(root.join(format!("routes-{}", i + 1)), routes)?;
            let extra = setup
                .extra
                .iter()
                .filter(|(k, _)| *k == i)
                .flat_map(|(_, a)| a.clone())
                .collect();
            let env = setup
                .env
                .iter()
                .filter(|(k, _)| *k == i)
                .map(|(_, kv)| kv.clone())
                .collect();
            nodes.push(Node {
                env,
                name: format!("node-{}", i + 1),
                s3_port: ports[3 * i],
                admin_port: ports[3 * i + 1],
                rpc_port: rpc[i],
                dir,
                extra,
                child: None,
                tmpfs,
            });
        }
        let mut c = Self {
            nodes,
            proxies,
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            seeds,
        };
        for i in 0..n {
            c.spawn(i)?;
        }
        for i in 0..n {
            c.wait_ready(i, Duration::from_secs(60)).await?;
        }
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{}.log", node.name)))?;
        let child = Command::new(&self.bin)
            .arg("server")
            .arg("--data-dir")
            .arg(&node.dir)
            .args(["--bind", "127.0.0.1", "--api-tls", "false"])
            .args(["--port", &node.s3_port.to_string()])
            .args(["--admin-port", &node.admin_port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .args(["--cluster-enabled", "true", "--cluster-name", "chaos"])
            .args(["--node-id", &node.name, "--cluster-seeds", &self.seeds])
            .args(["--rpc-port", &node.rpc_port.to_string()])
            .args(["--cluster-secret", CLUSTER_SECRET, "--replication-factor", "3"])
            .arg("--fault-routes")
            .arg(self.root.join(format!("routes-{}", i + 1)))
            .args(&node.extra)
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .env("FAILPOINTS_FILE", self.failpoints_file(i))
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        LIVE.lock().unwrap_or_else(|p| p.into_inner()).pids.push(child.id());
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILL: the node gets no chance to flush anything.
    fn kill_now(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT: a node that stops answering without dying.
    fn signal_stop(&self, i: usize, stop: bool) -> Result<()> {
        use nix::sys::signal::{Signal, kill};
        let Some(c) = &self.nodes[i].child else {
            bail!("{} is not running", self.nodes[i].name)
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        kill(pid, if stop { Signal::SIGSTOP } else { Signal::SIGCONT })?;
        Ok(())
    }

    /// Sets every link between node `i` and the others, both ways.
    fn set_links(&self, i: usize, link: Link) {
        for (a, row) in self.proxies.iter().enumerate() {
            for (b, p) in row.iter().enumerate() {
                if let Some(p) = p
                    && (a == i || b == i)
                {
                    p.set(link);
                }
            }
        }
    }

    /// Fills node `i`'s tmpfs data directory to the last byte (`true`) or frees it again.
    fn fill_tmpfs(&self, i: usize, full: bool) -> Result<()> {
        let node = &self.nodes[i];
        if !node.tmpfs {
            bail!("{}'s data directory is not a tmpfs of its own", node.name);
        }
        fill_to_the_last_byte(&node.dir.join("chaos-filler"), full)
    }
}

/// Writes `filler` until its file system has no byte left (`full`), or removes it.
pub fn fill_to_the_last_byte(filler: &Path, full: bool) -> Result<()> {
    if !full {
        let _ = std::fs::remove_file(filler);
        return Ok(());
    }
    use std::io::Write;
    let mut f = std::fs::File::create(filler)?;
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    // The last partial block.
    let mut small = vec![0u8; 4096];
    while f.write_all(&small).is_ok() {}
    small.truncate(1);
    while f.write_all(&small).is_ok() {}
    Ok(())
}

impl Cluster {
    /// The file node `i` reads its fault points from while it runs (`FAILPOINTS_FILE`).
    fn failpoints_file(&self, i: usize) -> PathBuf {
        self.root.join(format!("failpoints-{}", i + 1))
    }
}

impl Target for Cluster {
    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint {
            url: format!("http://127.0.0.1:{}", self.nodes[i].s3_port),
            ca: None,
        }
    }

    fn balancer(&self) -> Option<Endpoint> {
        None
    }

    fn creds(&self) -> Creds {
        Creds {
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        }
    }

    fn log_hint(&self, i: usize) -> String {
        self.root
            .join(format!("{}.log", self.nodes[i].name))
            .display()
            .to_string()
    }

    /// Whether node `i` answers `/health/ready` with 200 (it can serve writes).
    async fn readiness(&self, i: usize) -> std::result::Result<(), String> {
        let addr = ("127.0.0.1", self.nodes[i].admin_port);
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: chaos\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.ok()?;
            Some(answer)
        };
        match tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten() {
            Some(a) if a.starts_with(b"HTTP/1.1 200") => Ok(()),
            Some(a) => Err(String::from_utf8_lossy(&a).into_owned()),
            None => Err(String::new()),
        }
    }

    fn clock_ahead(&self, i: usize) -> bool {
        self.nodes[i].extra.iter().any(|a| a == "--clock-offset-ms")
    }

    async fn kill(&mut self, i: usize) -> Result<()> {
        self.kill_now(i);
        Ok(())
    }

    async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill_now(i);
        self.spawn(i)
    }

    async fn pause(&mut self, i: usize, stop: bool) -> Result<()> {
        self.signal_stop(i, stop)
    }

    async fn links_of(&mut self, i: usize, link: Link) -> Result<Option<String>> {
        self.set_links(i, link);
        Ok(None)
    }

    async fn fill_disk(&mut self, i: usize, full: bool) -> Result<()> {
        self.fill_tmpfs(i, full)
    }

    /// Arms fault points of node `i` (`name=actions` items, the `fail` crate's syntax) until
    /// called again; an empty list disarms them. The node applies a change within 200 ms.
    async fn fault_points(&mut self, i: usize, items: &[&str]) -> Result<()> {
        std::fs::write(self.failpoints_file(i), items.join("\n"))?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(())
    }

    async fn heal_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.set_links(i, Link::CLEAR);
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.signal_stop(i, false);
            self.kill_now(i);
            if self.nodes[i].tmpfs {
                let _ = Command::new("umount").arg(&self.nodes[i].dir).status();
            }
        }
    }
}

/// The node processes and tmpfs mounts of this run, for [`clean_up_on_signal`].
#[derive(Default)]
struct Live {
    pids: Vec<u32>,
    mounts: Vec<PathBuf>,
}

static LIVE: std::sync::Mutex<Live> = std::sync::Mutex::new(Live {
    pids: Vec::new(),
    mounts: Vec::new(),
});

/// On SIGINT or SIGTERM: kills every node this run started and unmounts its tmpfs mounts (or
/// thaws, starts and reconnects the compose cluster's containers), then exits (the nodes would otherwise outlive an interrupted run).
pub fn clean_up_on_signal() {
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|p| p.into_inner()));
        for pid in live.pids {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        crate::compose::thaw_all();
        crate::compose_node::restore_on_exit();
        std::thread::sleep(Duration::from_millis(200));
        for m in live.mounts {
            let _ = Command::new("umount").arg(&m).status();
        }
        eprintln!("interrupted: the nodes of this run were killed");
        std::process::exit(130);
    });
}

/// Mounts a tmpfs of `mib` MiB on `dir` (needs root, or CAP_SYS_ADMIN).
fn mount_tmpfs(dir: &Path, mib: u64) -> Result<()> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!("cannot mount a tmpfs on {} (needs root)", dir.display());
    }
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .mounts
        .push(dir.to_path_buf());
    Ok(())
}

/// Whether this process may mount a tmpfs (the disk-full scenario needs it).
pub fn can_mount_tmpfs(scratch: &Path) -> bool {
    let dir = scratch.join("tmpfs-probe");
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let ok = mount_tmpfs(&dir, 1).is_ok();
    if ok {
        let _ = Command::new("umount").arg(&dir).status();
    }
    let _ = std::fs::remove_dir(&dir);
    ok
}
