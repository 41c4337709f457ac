//! The Docker Compose cluster as the chaos suite's target: the three node containers that
//! `NODES=3 cluster/start.sh` started (S3 through each node's published port and through the
//! load balancer, HTTPS checked against the cluster's CA, the root credentials of
//! `cluster/.env`), and the faults done to them with Docker and the kernel:
//!
//! - kill: `docker kill` (SIGKILL), back with `docker start`;
//! - pause: `docker pause` (the cgroup freezer: the node stops answering without dying);
//! - partition: iptables rules in the node's network namespace (entered with `nsenter`) dropping
//!   every packet between it and the other nodes; its S3 port stays reachable from the host and
//!   the load balancer;
//! - delay and loss: `tc netem` on the links between the node and the others where the kernel
//!   has it (a `prio` qdisc with one band per delayed peer); where it does not, the loss alone,
//!   with iptables' `statistic` match, and the scenario says the delay was not applied.
//!
//! Full disks, fault points and clock offsets need the node's own start-up: for those scenarios
//! the node is recreated with environment of its own, its data on a tmpfs, and put back
//! afterwards (`compose_node.rs`).

use crate::compose_node::{self, NodeSetup};
use crate::target::{Creds, Endpoint, Target, unsupported};
use anyhow::{Context, Result, bail};
use ironbucket_testkit::proxy::Link;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The iptables chain this program owns in each node's network namespace.
const CHAIN: &str = "IRONBUCKET-CHAOS";

struct Node {
    container: String,
    s3: String,
    ip: String,
}

pub struct Compose {
    root: PathBuf,
    nodes: Vec<Node>,
    balancer: Option<String>,
    ca: Option<Vec<u8>>,
    creds: Creds,
    /// Whether `tc netem` works in the containers' network namespaces (probed on first use).
    netem: Option<bool>,
    /// The node started differently for the scenario under way, and how.
    set_up: Option<(usize, NodeSetup, compose_node::Applied)>,
}

/// Runs `program args`, giving up (and killing it) after `secs`: its standard output, or an
/// error naming the command and what it printed. (Polled: the commands print a line or two.)
async fn run(program: &str, args: &[&str], secs: u64) -> Result<String> {
    use std::io::Read;
    let what = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} took over {secs} s", what());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        bail!("{} failed: {}", what(), format!("{} {}", err.trim(), out.trim()).trim());
    }
    Ok(out.trim().to_string())
}

async fn docker(args: &[&str]) -> Result<String> {
    run("docker", args, 60).await
}

/// `KEY=VALUE` lines of an env file (comments and blank lines skipped).
fn env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (start the cluster with NODES=3 cluster/start.sh)",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// `docker port` output (`0.0.0.0:9001`, `[::]:9001`, `127.0.0.1:9001`, one per line) as an
/// address on this host.
fn host_addr(published: &str) -> Option<String> {
    let first = published.lines().next()?.trim();
    let (host, port) = first.rsplit_once(':')?;
    let host = match host {
        "0.0.0.0" | "[::]" | "::" => "127.0.0.1",
        h => h,
    };
    Some(format!("{host}:{port}"))
}

impl Compose {
    /// Finds the running 3-node compose cluster of the checkout at `root`.
    pub async fn attach(root: &Path) -> Result<Self> {
        docker(&["info", "--format", "{{.ServerVersion}}"])
            .await
            .context("the Docker engine does not answer")?;
        let env = env_file(&root.join("cluster/.env"))?;
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let creds = Creds {
            access_key: get("IRONBUCKET_ACCESS_KEY").context("cluster/.env has no IRONBUCKET_ACCESS_KEY")?,
            secret_key: get("IRONBUCKET_SECRET_KEY").context("cluster/.env has no IRONBUCKET_SECRET_KEY")?,
        };
        let mut nodes = Vec::new();
        let mut https = true;
        for i in 1..=3 {
            let container = format!("ironbucket-node{i}");
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &container])
                .await
                .unwrap_or_default();
            if running != "true" {
                bail!("{container} is not running: start the 3-node cluster first (NODES=3 cluster/start.sh)");
            }
            let envs = docker(&["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", &container]).await?;
            if envs.lines().any(|l| l.trim() == "API_TLS=false") {
                https = false;
            }
            for (var, want) in [
                ("REPLICATION_FACTOR", "3"),
                ("DEFAULT_READ_CONSISTENCY", "QUORUM"),
                ("DEFAULT_WRITE_CONSISTENCY", "QUORUM"),
            ] {
                let got = envs
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(var)?.strip_prefix('='))
                    .unwrap_or("its default");
                if got != want {
                    bail!(
                        "{container} runs with {var}={got}; the suite's thresholds are for RF 3 at QUORUM (NODES=3 cluster/start.sh without IRONBUCKET_REPLICATION_FACTOR)"
                    );
                }
            }
            let published = docker(&["port", &container, "9000/tcp"]).await?;
            let s3 = host_addr(&published).with_context(|| format!("{container} publishes no S3 port"))?;
            let ip = docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &container,
            ])
            .await?
            .split_whitespace()
            .next()
            .map(str::to_string)
            .with_context(|| format!("{container} has no network address"))?;
            nodes.push(Node { container, s3, ip });
        }
        let balancer = match docker(&["port", "ironbucket-lb", "443/tcp"]).await {
            Ok(p) => host_addr(&p),
            Err(_) => None,
        };
        let ca_path = root.join("cluster/tls/ca.pem");
        let ca =
            std::fs::read(&ca_path).with_context(|| format!("cannot read the cluster's CA {}", ca_path.display()))?;
        for n in &nodes {
            register(&n.container);
        }
        Ok(Self {
            root: root.to_path_buf(),
            nodes: nodes
                .into_iter()
                .map(|n| Node {
                    s3: format!("{}://{}", if https { "https" } else { "http" }, n.s3),
                    ..n
                })
                .collect(),
            balancer: balancer.map(|b| format!("https://{b}")),
            ca: Some(ca),
            creds,
            netem: None,
            set_up: None,
        })
    }

    /// What compose needs to recreate node `i`'s container as the cluster was started: its
    /// image, HTTPS or not, the address its ports are published on.
    async fn compose_env(&self, i: usize) -> Result<Vec<(String, String)>> {
        let c = &self.nodes[i].container;
        let image = docker(&["inspect", "-f", "{{.Config.Image}}", c]).await?;
        let bind = docker(&[
            "inspect",
            "-f",
            "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}} {{end}}{{end}}",
            c,
        ])
        .await?;
        let mut env = vec![("IRONBUCKET_IMAGE".to_string(), image)];
        if let Some(ip) = bind.split_whitespace().next().filter(|ip| !ip.is_empty()) {
            env.push(("IRONBUCKET_BIND".into(), ip.to_string()));
        }
        let tls = if self.nodes[i].s3.starts_with("https") {
            "true"
        } else {
            "false"
        };
        env.push(("IRONBUCKET_API_TLS".into(), tls.into()));
        Ok(env)
    }

    /// Stops node `i` and starts it again as `setup` says (its own environment, its data on a
    /// tmpfs); ready again when this returns.
    pub async fn set_up_node(&mut self, i: usize, setup: NodeSetup) -> Result<()> {
        if self.set_up.is_some() {
            self.put_back().await?;
        }
        let env = self.compose_env(i).await?;
        let (root, s) = (self.root.clone(), setup.clone());
        let applied = tokio::task::spawn_blocking(move || compose_node::apply(&root, i + 1, env, &s)).await??;
        self.set_up = Some((i, setup, applied));
        self.wait_ready(i, Duration::from_secs(120)).await.map(drop)
    }

    /// The node [`set_up_node`](Self::set_up_node) changed started again as the compose files
    /// describe it, its data back on its own disk; ready again when this returns.
    pub async fn put_back(&mut self) -> Result<()> {
        let Some((i, _, applied)) = self.set_up.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || compose_node::undo(&applied)).await??;
        self.wait_ready(i, Duration::from_secs(120)).await.map(drop)
    }

    /// How node `i` is set up for the scenario, if it is.
    fn setup_of(&self, i: usize) -> Option<&NodeSetup> {
        self.set_up.as_ref().filter(|(n, ..)| *n == i).map(|(_, s, _)| s)
    }

    async fn pid(&self, i: usize) -> Result<String> {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.nodes[i].container]).await?;
        if pid == "0" || pid.is_empty() {
            bail!("{} is not running", self.nodes[i].container);
        }
        Ok(pid)
    }

    /// Runs `program args` in node `i`'s network namespace.
    async fn in_netns(&self, i: usize, program: &str, args: &[&str]) -> Result<String> {
        let pid = self.pid(i).await?;
        let mut all = vec!["-t", pid.as_str(), "-n", program];
        all.extend_from_slice(args);
        run("nsenter", &all, 20).await
    }

    async fn iptables(&self, i: usize, args: &[&str]) -> Result<String> {
        let mut all = vec!["-w"];
        all.extend_from_slice(args);
        self.in_netns(i, "iptables", &all).await
    }

    /// The chain this program owns in node `i`'s namespace, empty, hooked into INPUT and OUTPUT.
    async fn fresh_chain(&self, i: usize) -> Result<()> {
        if self.iptables(i, &["-F", CHAIN]).await.is_err() {
            self.iptables(i, &["-N", CHAIN]).await.with_context(|| {
                format!(
                    "cannot add iptables rules in {}'s network namespace (needs root, nsenter and iptables)",
                    self.nodes[i].container
                )
            })?;
        }
        for hook in ["INPUT", "OUTPUT"] {
            if self.iptables(i, &["-C", hook, "-j", CHAIN]).await.is_err() {
                self.iptables(i, &["-I", hook, "-j", CHAIN]).await?;
            }
        }
        Ok(())
    }

    /// Drops packets between node `i` and `peer` both ways (all, or a random share of them).
    async fn drop_between(&self, i: usize, peer: &str, share: Option<f64>) -> Result<()> {
        let p = share.map(|s| format!("{s:.4}"));
        for dir in ["-s", "-d"] {
            let mut rule = vec!["-A", CHAIN, dir, peer];
            if let Some(p) = &p {
                rule.extend_from_slice(&["-m", "statistic", "--mode", "random", "--probability", p]);
            }
            rule.extend_from_slice(&["-j", "DROP"]);
            self.iptables(i, &rule).await?;
        }
        Ok(())
    }

    /// Removes this program's rules and qdisc from node `i`'s namespace (if it runs).
    async fn clear(&self, i: usize) -> Result<()> {
        if self.pid(i).await.is_err() {
            return Ok(());
        }
        let _ = self.iptables(i, &["-F", CHAIN]).await;
        let _ = self.in_netns(i, "tc", &["qdisc", "del", "dev", "eth0", "root"]).await;
        Ok(())
    }

    /// Whether `tc netem` can be set up in a node's namespace here.
    async fn probe_netem(&mut self) -> bool {
        if let Some(ok) = self.netem {
            return ok;
        }
        let ok = self
            .in_netns(
                0,
                "tc",
                &[
                    "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio", "bands", "4",
                ],
            )
            .await
            .is_ok();
        let ok = ok
            && self
                .in_netns(
                    0,
                    "tc",
                    &[
                        "qdisc", "add", "dev", "eth0", "parent", "1:4", "handle", "40:", "netem", "delay", "1ms",
                    ],
                )
                .await
                .is_ok();
        let _ = self.in_netns(0, "tc", &["qdisc", "del", "dev", "eth0", "root"]).await;
        self.netem = Some(ok);
        ok
    }

    /// Delays and drops node `from`'s packets to `to_ips` with netem (a 4th `prio` band that
    /// only packets to those addresses are filtered into).
    async fn netem_to(&self, from: usize, to_ips: &[&str], link: Link) -> Result<()> {
        let delay = format!("{}ms", link.delay.as_millis());
        let loss = format!("{:.2}%", link.loss * 100.0);
        self.in_netns(
            from,
            "tc",
            &[
                "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio", "bands", "4",
            ],
        )
        .await?;
        self.in_netns(
            from,
            "tc",
            &[
                "qdisc", "add", "dev", "eth0", "parent", "1:4", "handle", "40:", "netem", "delay", &delay, "loss",
                &loss,
            ],
        )
        .await?;
        for ip in to_ips {
            let dst = format!("{ip}/32");
            self.in_netns(
                from,
                "tc",
                &[
                    "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match",
                    "ip", "dst", &dst, "flowid", "1:4",
                ],
            )
            .await?;
        }
        Ok(())
    }
}

impl Target for Compose {
    fn len(&self) -> usize {
        self.nodes.len()
    }

    fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint {
            url: self.nodes[i].s3.clone(),
            ca: self.ca.clone().filter(|_| self.nodes[i].s3.starts_with("https")),
        }
    }

    fn balancer(&self) -> Option<Endpoint> {
        self.balancer.as_ref().map(|url| Endpoint {
            url: url.clone(),
            ca: self.ca.clone(),
        })
    }

    fn creds(&self) -> Creds {
        self.creds.clone()
    }

    fn log_hint(&self, i: usize) -> String {
        format!(
            "docker logs {} or {}",
            self.nodes[i].container,
            self.root
                .join(format!("cluster/logs/node{}/ironbucket.log", i + 1))
                .display()
        )
    }

    /// What the container's health check asks: `ironbucket-cli ready` inside it.
    async fn readiness(&self, i: usize) -> std::result::Result<(), String> {
        run(
            "docker",
            &["exec", &self.nodes[i].container, "ironbucket-cli", "ready"],
            3,
        )
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    }

    fn clock_ahead(&self, i: usize) -> bool {
        self.setup_of(i)
            .is_some_and(|s| s.env.iter().any(|(k, _)| k == "IRONBUCKET_CLOCK_OFFSET_MS"))
    }

    async fn kill(&mut self, i: usize) -> Result<()> {
        docker(&["kill", &self.nodes[i].container]).await.map(drop)
    }

    async fn restart(&mut self, i: usize) -> Result<()> {
        let c = &self.nodes[i].container;
        if docker(&["inspect", "-f", "{{.State.Running}}", c]).await? == "true" {
            docker(&["kill", c]).await?;
        }
        docker(&["start", c]).await.map(drop)
    }

    async fn pause(&mut self, i: usize, stop: bool) -> Result<()> {
        docker(&[if stop { "pause" } else { "unpause" }, &self.nodes[i].container])
            .await
            .map(drop)
    }

    async fn links_of(&mut self, i: usize, link: Link) -> Result<Option<String>> {
        for j in 0..self.nodes.len() {
            self.clear(j).await?;
        }
        if link == Link::CLEAR {
            return Ok(None);
        }
        let peers: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        if link.cut {
            self.fresh_chain(i).await?;
            for j in &peers {
                self.drop_between(i, &self.nodes[*j].ip, None).await?;
            }
            return Ok(None);
        }
        if self.probe_netem().await {
            let peer_ips: Vec<&str> = peers.iter().map(|j| self.nodes[*j].ip.as_str()).collect();
            self.netem_to(i, &peer_ips, link).await?;
            for j in &peers {
                self.netem_to(*j, &[self.nodes[i].ip.as_str()], link).await?;
            }
            return Ok(None);
        }
        self.fresh_chain(i).await?;
        for j in &peers {
            self.drop_between(i, &self.nodes[*j].ip, Some(link.loss)).await?;
        }
        Ok(Some(format!(
            "{:.0}% loss each way with iptables; the {} ms delay NOT applied (no netem qdisc in this kernel)",
            link.loss * 100.0,
            link.delay.as_millis()
        )))
    }

    async fn fill_disk(&mut self, i: usize, full: bool) -> Result<()> {
        if self.setup_of(i).and_then(|s| s.tmpfs_headroom_mib).is_none() {
            return Err(unsupported(
                "filling a node's disk",
                "its data directory is on the host's disk (not set up on a tmpfs for this scenario)",
            ));
        }
        let filler = compose_node::filler(&self.root, i + 1);
        tokio::task::spawn_blocking(move || crate::cluster::fill_to_the_last_byte(&filler, full)).await?
    }

    async fn fault_points(&mut self, i: usize, items: &[&str]) -> Result<()> {
        if !self.setup_of(i).is_some_and(|s| s.fault_file) {
            return Err(unsupported(
                "arming fault points",
                "the node was not started with a fault point file for this scenario",
            ));
        }
        std::fs::write(compose_node::fault_file_on_host(&self.root, i + 1), items.join("\n"))?;
        // The node reads the file every 200 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(())
    }

    async fn heal_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            let c = self.nodes[i].container.clone();
            let state = docker(&["inspect", "-f", "{{.State.Status}}", &c]).await?;
            match state.as_str() {
                "paused" => drop(docker(&["unpause", &c]).await?),
                "running" => {}
                _ => drop(docker(&["start", &c]).await?),
            }
            self.clear(i).await?;
        }
        Ok(())
    }
}

/// The containers this run may have frozen or killed, for [`thaw_on_signal`].
static CONTAINERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn register(container: &str) {
    CONTAINERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(container.to_string());
}

/// After an interrupted run: every container of the cluster thawed and started again, this
/// program's iptables rules and qdisc removed (best effort, synchronously).
pub fn thaw_all() {
    let containers = std::mem::take(&mut *CONTAINERS.lock().unwrap_or_else(|p| p.into_inner()));
    let quiet = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    for c in containers {
        let _ = quiet(&["unpause", &c]);
        let _ = quiet(&["start", &c]);
        if let Ok(out) = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &c])
            .output()
        {
            let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
            for args in [
                vec!["-t", &pid, "-n", "iptables", "-w", "-F", CHAIN],
                vec!["-t", &pid, "-n", "tc", "qdisc", "del", "dev", "eth0", "root"],
            ] {
                let _ = Command::new("nsenter").args(args).stderr(Stdio::null()).status();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_become_host_addresses() {
        assert_eq!(host_addr("127.0.0.1:9001").as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(host_addr("0.0.0.0:9002\n[::]:9002").as_deref(), Some("127.0.0.1:9002"));
        assert_eq!(host_addr("10.1.2.3:9003").as_deref(), Some("10.1.2.3:9003"));
        assert_eq!(host_addr(""), None);
    }

    #[test]
    fn env_files_are_read_without_comments() {
        let dir = std::env::temp_dir().join(format!("chaos-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(".env");
        std::fs::write(&f, "# made by start.sh\nA=1\n\nIRONBUCKET_SECRET_KEY=x=y\n").unwrap();
        let env = env_file(&f).unwrap();
        assert_eq!(
            env,
            vec![("A".into(), "1".into()), ("IRONBUCKET_SECRET_KEY".into(), "x=y".into())]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(env_file(&dir.join("missing")).is_err());
    }
}
