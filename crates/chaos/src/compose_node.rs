//! One node of the Docker Compose cluster started differently for one scenario, and put back
//! after it: the faults that need the node's own start-up.
//!
//! - a clock offset or fault points armed at start: environment of its own
//!   (`IRONBUCKET_CLOCK_OFFSET_MS`, `FAILPOINTS`), and `FAILPOINTS_FILE` in its config directory
//!   (a bind mount this program writes from the host) for fault points armed while it runs. The
//!   node's container is recreated with `cluster/lib.sh`'s compose command and one more compose
//!   file naming them (the image's server is built with the `failpoints` feature);
//! - a disk that can fill up: its data directory (a bind mount of `cluster/data/nodeN`) moved onto
//!   a tmpfs of its own mounted on the host (needs root), its data copied there while it is
//!   stopped, and copied back, the tmpfs unmounted, when the scenario ends.
//!
//! Putting it back is synchronous and best effort after an interrupted run (`restore_on_exit`):
//! the data never stays on the tmpfs, where a reboot would lose it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the node is started for the scenario.
#[derive(Default, Clone, Debug)]
pub struct NodeSetup {
    /// Environment of its own, added to the compose file's.
    pub env: Vec<(String, String)>,
    /// Its data directory on a tmpfs with this many MiB free above what it holds.
    pub tmpfs_headroom_mib: Option<u64>,
    /// Fault points armed while it runs, from a file in its config directory.
    pub fault_file: bool,
}

/// A node set up for a scenario: what to undo.
#[derive(Clone, Debug)]
pub struct Applied {
    root: PathBuf,
    /// 1-based, as in the container's and directories' names.
    n: usize,
    /// What the cluster was started with, for compose to recreate the container the same way.
    compose_env: Vec<(String, String)>,
    tmpfs: bool,
}

/// The file the node reads its fault points from while it runs, as the host sees it.
pub fn fault_file_on_host(root: &Path, n: usize) -> PathBuf {
    root.join(format!("cluster/config/node{n}/chaos-failpoints"))
}
const FAULT_FILE_IN_CONTAINER: &str = "/etc/ironbucket/chaos-failpoints";

fn override_file(root: &Path) -> PathBuf {
    root.join("cluster/.build/chaos-override.yml")
}
fn data_dir(root: &Path, n: usize) -> PathBuf {
    root.join(format!("cluster/data/node{n}"))
}
/// The node's data as it was before the scenario, kept while the tmpfs holds it.
fn saved_dir(root: &Path, n: usize) -> PathBuf {
    root.join(format!("cluster/data/node{n}.chaos-saved"))
}

/// The filler file that takes a tmpfs data directory's last byte.
pub fn filler(root: &Path, n: usize) -> PathBuf {
    data_dir(root, n).join("chaos-filler")
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The compose file that adds `env` (and the fault file's path) to node `n`'s environment.
fn override_yaml(n: usize, env: &[(String, String)]) -> String {
    let mut y = format!(
        "# Written by ironbucket-chaos for one scenario, removed after it.\nservices:\n  ironbucket-node{n}:\n    environment:"
    );
    y.push_str(if env.is_empty() { " {}\n" } else { "\n" });
    for (k, v) in env {
        // JSON strings are YAML strings: quotes and backslashes escaped.
        y.push_str(&format!("      {k}: {}\n", serde_json::Value::String(v.clone())));
    }
    y
}

/// Recreates node `n`'s container with the cluster's compose files (and `extra`, if any): what
/// `cluster/rolling-upgrade.sh` does for one node.
fn recreate(root: &Path, n: usize, compose_env: &[(String, String)], extra: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("bash");
    cmd.current_dir(root)
        .arg("-c")
        .arg(format!(
            ". cluster/lib.sh && compose up -d --no-deps --force-recreate ironbucket-node{n}"
        ))
        .env("NODES", "3")
        .envs(compose_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null());
    match extra {
        Some(f) => cmd.env("COMPOSE_OVERRIDE", f),
        None => cmd.env_remove("COMPOSE_OVERRIDE"),
    };
    let out = cmd.output().context("cannot run bash")?;
    if !out.status.success() {
        bail!(
            "could not recreate ironbucket-node{n}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_mountpoint(dir: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Bytes the files under `dir` hold.
fn used_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Stops node `n` and moves its data onto a tmpfs mounted on its data directory.
fn onto_tmpfs(root: &Path, n: usize, headroom_mib: u64) -> Result<()> {
    let (data, saved) = (data_dir(root, n), saved_dir(root, n));
    if saved.exists() {
        bail!(
            "{} exists (an interrupted chaos run?): check that {} holds the node's data, then remove it",
            saved.display(),
            data.display()
        );
    }
    if is_mountpoint(&data) {
        bail!("{} is a mount point already", data.display());
    }
    sh("docker", &["stop", "-t", "30", &format!("ironbucket-node{n}")])?;
    let mib = used_bytes(&data) / (1 << 20) + headroom_mib;
    let (d, s) = (data.to_string_lossy(), saved.to_string_lossy());
    sh("cp", &["-a", &d, &s])?;
    let opts = format!("size={mib}m,mode=0755");
    if let Err(e) = sh("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", &d]) {
        let _ = std::fs::remove_dir_all(&saved);
        return Err(e.context("cannot mount a tmpfs on the node's data directory (needs root)"));
    }
    sh("cp", &["-a", &format!("{s}/."), &format!("{d}/")])?;
    Ok(())
}

/// Stops node `n` and moves its data (as the scenario left it) from the tmpfs back to the disk.
fn off_tmpfs(root: &Path, n: usize) -> Result<()> {
    let (data, saved) = (data_dir(root, n), saved_dir(root, n));
    if !is_mountpoint(&data) {
        return Ok(());
    }
    sh("docker", &["stop", "-t", "30", &format!("ironbucket-node{n}")])?;
    let _ = std::fs::remove_file(filler(root, n));
    let now = root.join(format!("cluster/data/node{n}.chaos-now"));
    let _ = std::fs::remove_dir_all(&now);
    let (d, w) = (data.to_string_lossy(), now.to_string_lossy());
    sh("cp", &["-a", &d, &w])?;
    sh("umount", &[&d])?;
    // The directory under the mount holds the data as it was before; the copy replaces it.
    std::fs::remove_dir_all(&data)?;
    std::fs::rename(&now, &data)?;
    std::fs::remove_dir_all(&saved)?;
    Ok(())
}

/// Node `n` of the compose cluster at `root`, stopped and started again as `setup` says.
/// `compose_env` is what the cluster runs with (its image, HTTPS or not) for compose to keep.
pub fn apply(root: &Path, n: usize, compose_env: Vec<(String, String)>, setup: &NodeSetup) -> Result<Applied> {
    let mut env = setup.env.clone();
    if setup.fault_file {
        let f = fault_file_on_host(root, n);
        std::fs::write(&f, "").with_context(|| format!("cannot write {}", f.display()))?;
        env.push(("FAILPOINTS_FILE".into(), FAULT_FILE_IN_CONTAINER.into()));
    }
    let applied = Applied {
        root: root.to_path_buf(),
        n,
        compose_env,
        tmpfs: setup.tmpfs_headroom_mib.is_some(),
    };
    register(&applied);
    let done = (|| {
        if let Some(h) = setup.tmpfs_headroom_mib {
            onto_tmpfs(root, n, h)?;
        }
        let file = override_file(root);
        if let Some(d) = file.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&file, override_yaml(n, &env))?;
        recreate(root, n, &applied.compose_env, Some(&file))
    })();
    if let Err(e) = done {
        let _ = undo(&applied);
        return Err(e);
    }
    Ok(applied)
}

/// Puts the node back as the cluster's compose files describe it, its data on its own disk.
pub fn undo(a: &Applied) -> Result<()> {
    let mut first_err = None;
    if a.tmpfs
        && let Err(e) = off_tmpfs(&a.root, a.n)
    {
        first_err = Some(e);
    }
    let _ = std::fs::remove_file(fault_file_on_host(&a.root, a.n));
    let _ = std::fs::remove_file(override_file(&a.root));
    if let Err(e) = recreate(&a.root, a.n, &a.compose_env, None) {
        first_err.get_or_insert(e);
    }
    unregister(a);
    first_err.map_or(Ok(()), Err)
}

/// The node set up now, for [`restore_on_exit`].
static APPLIED: std::sync::Mutex<Option<Applied>> = std::sync::Mutex::new(None);

fn register(a: &Applied) {
    *APPLIED.lock().unwrap_or_else(|p| p.into_inner()) = Some(a.clone());
}

fn unregister(a: &Applied) {
    let mut g = APPLIED.lock().unwrap_or_else(|p| p.into_inner());
    if g.as_ref().is_some_and(|x| x.n == a.n) {
        *g = None;
    }
}

/// After an interrupted run: the node set up for the scenario, if any, put back.
pub fn restore_on_exit() {
    let a = APPLIED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(a) = a
        && let Err(e) = undo(&a)
    {
        eprintln!("could not put ironbucket-node{} back: {e:#}", a.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_adds_the_environment_quoted() {
        let y = override_yaml(
            3,
            &[
                ("IRONBUCKET_CLOCK_OFFSET_MS".into(), "30000".into()),
                ("FAILPOINTS".into(), "meta-fsync=5%return".into()),
                ("X".into(), "a \"b\"".into()),
            ],
        );
        assert!(y.contains("  ironbucket-node3:\n    environment:\n"), "{y}");
        assert!(y.contains("      IRONBUCKET_CLOCK_OFFSET_MS: \"30000\"\n"), "{y}");
        assert!(y.contains("      FAILPOINTS: \"meta-fsync=5%return\"\n"), "{y}");
        assert!(y.contains("      X: \"a \\\"b\\\"\"\n"), "{y}");
        assert!(override_yaml(2, &[]).ends_with("  ironbucket-node2:\n    environment: {}\n"));
    }

    #[test]
    fn used_bytes_adds_up_nested_files() {
        let d = std::env::temp_dir().join(format!("chaos-used-{}", std::process::id()));
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("x"), vec![0; 100]).unwrap();
        std::fs::write(d.join("a/b/y"), vec![0; 23]).unwrap();
        assert_eq!(used_bytes(&d), 123);
        assert_eq!(used_bytes(&d.join("missing")), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
