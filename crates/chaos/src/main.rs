//! `ironbucket-chaos`: the chaos suite. Starts a cluster of real `ironbucket` processes on
//! 127.0.0.1 for each scenario, runs a checking S3 load against it while faults are injected
//! (SIGKILL, SIGSTOP, network cuts, delay and loss through per-link proxies, a full disk, a
//! clock running ahead), then reads everything back through every node and checks the history:
//! no acknowledged write lost, no wrong read, every key's history linearizable. Prints its
//! figures per scenario and writes a JSON and a Markdown report; exits non-zero when a
//! threshold is missed (or, with `--expect-violations`, when the checker finds nothing).

mod check;
mod cluster;
mod compose;
mod compose_node;
mod report;
mod scenario;
mod target;
mod workload;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use scenario::{SET_UP_NODE, Scenario};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use target::Target;
use workload::{Kind, Load, NodeState, Shared, States};

#[derive(Parser, Debug)]
#[command(
    name = "ironbucket-chaos",
    version,
    about = "IronBucket's chaos suite: a checking S3 client against a 3-node cluster under faults"
)]
struct Args {
    /// The `ironbucket` binary to test [default: the one next to this program].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,

    /// Run against the Docker Compose cluster of the checkout at DIR (started with
    /// `NODES=3 cluster/start.sh`) instead of starting node processes: faults with docker kill,
    /// docker pause, iptables and tc netem in the nodes' network namespaces (needs root); the
    /// load also goes through the load balancer. For disk-full, read-only-disk, fsync-errors and
    /// clock-ahead, node-3 is recreated for the scenario (its data on a tmpfs mounted on the
    /// host, fault points, a clock offset) and put back after it.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    compose: Option<PathBuf>,

    /// The full-length scenarios (about 8 minutes) instead of the short form (about 1.5).
    #[arg(long)]
    long: bool,

    /// Only these scenarios (comma-separated names: none, kill-random, down-30s, partition,
    /// pause, slow-link, disk-full, read-only-disk, fsync-errors, clock-ahead).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    scenarios: Vec<String>,

    /// Seconds each scenario's load runs, overriding its own length (faults scale with it only
    /// where they are given from the start).
    #[arg(long, value_name = "SECS")]
    secs: Option<u64>,

    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    workers: usize,

    /// Keys the load works on.
    #[arg(long, default_value_t = 16)]
    keys: usize,

    /// Write one key in four with conditional writes only (`If-Match` with the ETag its client
    /// last saw, `If-None-Match: *` when it saw none), checked with the rest (the short form
    /// in CI runs with it; docs/reliability.md, "What `--conditional` found").
    #[arg(long)]
    conditional: bool,

    /// Largest object body in bytes (sizes vary up to it).
    #[arg(long, default_value_t = 16 * 1024)]
    max_size: usize,

    /// Seed of the fault schedule's choices (which node, when) [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,

    /// Where the JSON and Markdown reports go.
    #[arg(long, default_value = "target/chaos", value_name = "DIR")]
    report_dir: PathBuf,

    /// Where the nodes' data directories and logs go [default: a new temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,

    /// States visited per key by the linearizability search before it gives up (undecided).
    #[arg(long, default_value_t = 2_000_000)]
    budget: usize,

    /// Also write every operation of each scenario to `<report-dir>/<scenario>-records.json`.
    #[arg(long)]
    keep_records: bool,

    /// For a deliberately broken build: succeed only if the checker finds a violation.
    #[arg(long)]
    expect_violations: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("ironbucket"))
            .context("cannot find the directory of this program")?,
    };
    if args.compose.is_none() && !bin.is_file() {
        bail!("no ironbucket binary at {} (build it, or give --binary)", bin.display());
    }
    let mut chosen = if args.long { scenario::long() } else { scenario::short() };
    if !args.scenarios.is_empty() {
        let all = scenario::long();
        for name in &args.scenarios {
            if !all.iter().any(|s| s.name == name) {
                bail!(
                    "no scenario {name:?}; there are: {}",
                    all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                );
            }
        }
        let short = scenario::short();
        chosen = args
            .scenarios
            .iter()
            .filter_map(|n| {
                let pool = if args.long { &all } else { &short };
                pool.iter().chain(&all).find(|s| s.name == n).cloned()
            })
            .collect();
    }
    if let Some(secs) = args.secs {
        for s in &mut chosen {
            s.secs = secs;
        }
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let against = match &args.compose {
        Some(dir) => format!("the Docker Compose cluster of {}", dir.display()),
        None => bin.display().to_string(),
    };
    println!(
        "chaos suite: {} scenario(s) against {against} (seed {seed}; rerun with --seed {seed})",
        chosen.len(),
    );
    let tmp;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("ironbucket-chaos-{}", std::process::id()));
            tmp.clone()
        }
    };
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async { cluster::clean_up_on_signal() });
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reports = Vec::new();
    let mut compose = match &args.compose {
        Some(dir) => Some(rt.block_on(compose::Compose::attach(dir))?),
        None => None,
    };
    for s in &chosen {
        let r = match compose.as_mut() {
            Some(c) => rt.block_on(run_on_compose(&args, c, &work, s, &mut rng))?,
            None => rt.block_on(run_scenario(&args, &bin, &work, s, &mut rng))?,
        };
        report::print(&r);
        reports.push(r);
    }
    std::fs::create_dir_all(&args.report_dir)?;
    let json = serde_json::json!({
        "against": against,
        "seed": seed,
        "workers": args.workers,
        "keys": args.keys,
        "conditional": args.conditional,
        "max_size": args.max_size,
        "scenarios": reports,
    });
    let json_path = args.report_dir.join("chaos-report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    let md_path = args.report_dir.join("chaos-report.md");
    let header = format!(
        "Chaos suite, {} form, against {}: 3 nodes (RF 3, QUORUM), {} clients on {} keys{}, bodies up to {} bytes, seed {seed}.",
        if args.long { "long" } else { "short" },
        if args.compose.is_some() {
            "the Docker Compose cluster (requests to the nodes' own ports and through the load balancer)"
        } else {
            "node processes started by the suite"
        },
        args.workers,
        args.keys,
        if args.conditional {
            " (one in four written by conditional writes only)"
        } else {
            ""
        },
        args.max_size
    );
    std::fs::write(&md_path, report::markdown(&reports, &header))?;
    println!("reports: {} and {}", json_path.display(), md_path.display());
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    let violations = reports.iter().any(|r| !r.verdict.clean());
    if args.expect_violations {
        if violations {
            println!("the checker caught the broken build, as expected");
            return Ok(());
        }
        bail!("--expect-violations: the checker found no violation");
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.pass).map(|r| r.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("scenario(s) missed their thresholds: {}", failed.join(", "));
    }
    println!("every scenario met its thresholds");
    Ok(())
}

async fn run_scenario(
    args: &Args,
    bin: &std::path::Path,
    work: &std::path::Path,
    s: &Scenario,
    rng: &mut StdRng,
) -> Result<report::ScenarioReport> {
    println!("-- {}: {} ({} s)", s.name, s.what, s.secs);
    let root = work.join(s.name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let mut setup = cluster::Setup {
        nodes: 3,
        extra: Vec::new(),
        env: Vec::new(),
        tmpfs_mib: Vec::new(),
    };
    let start_up = s.start_up();
    if let Some(ms) = start_up.clock_offset_ms {
        setup
            .extra
            .push((SET_UP_NODE, vec!["--clock-offset-ms".into(), ms.to_string()]));
    }
    if let Some(f) = &start_up.failpoints {
        setup.env.push((SET_UP_NODE, ("FAILPOINTS".into(), f.clone())));
    }
    if start_up.small_disk {
        if !cluster::can_mount_tmpfs(&root) {
            return Ok(report::skipped(s, "cannot mount a tmpfs here (needs root)".into()));
        }
        setup.tmpfs_mib.push((SET_UP_NODE, 256));
    }
    let mut c = cluster::Cluster::start(bin, &root, setup).await?;
    let states = Arc::new(States::new(c.len()));
    if start_up.degraded_throughout() {
        states.set(SET_UP_NODE, NodeState::Degraded);
    }
    exercise(args, &mut c, states, s, rng, "chaos".into()).await
}

/// One scenario against the compose cluster, in a bucket of its own.
async fn run_on_compose(
    args: &Args,
    c: &mut compose::Compose,
    work: &std::path::Path,
    s: &Scenario,
    rng: &mut StdRng,
) -> Result<report::ScenarioReport> {
    println!("-- {}: {} ({} s)", s.name, s.what, s.secs);
    for i in 0..c.len() {
        c.wait_ready(i, Duration::from_secs(120)).await?;
    }
    let start_up = s.start_up();
    if start_up.small_disk && !cluster::can_mount_tmpfs(work) {
        return Ok(report::skipped(s, "cannot mount a tmpfs here (needs root)".into()));
    }
    let states = Arc::new(States::new(c.len() + 1));
    states.set(c.len(), NodeState::Balancer);
    if !start_up.is_plain() {
        let mut env = Vec::new();
        if let Some(ms) = start_up.clock_offset_ms {
            env.push(("IRONBUCKET_CLOCK_OFFSET_MS".to_string(), ms.to_string()));
        }
        if let Some(f) = &start_up.failpoints {
            env.push(("FAILPOINTS".to_string(), f.clone()));
        }
        let setup = compose_node::NodeSetup {
            env,
            // What the data holds, and 192 MiB for the load to fill.
            tmpfs_headroom_mib: start_up.small_disk.then_some(192),
            fault_file: start_up.fault_file,
        };
        println!("   node-{} started again for the scenario: {setup:?}", SET_UP_NODE + 1);
        c.set_up_node(SET_UP_NODE, setup).await?;
        if start_up.degraded_throughout() {
            states.set(SET_UP_NODE, NodeState::Degraded);
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let bucket = format!("chaos-{}-{stamp}", s.name);
    let r = exercise(args, c, states, s, rng, bucket).await;
    if !start_up.is_plain() {
        println!(
            "   node-{} started again as the compose files describe it",
            SET_UP_NODE + 1
        );
        let back = c.put_back().await;
        let r = r?;
        back?;
        return Ok(r);
    }
    r
}

/// Runs the load against `c` while the scenario's faults are done to it, then reads everything
/// back through every node and checks the history.
async fn exercise<T: Target>(
    args: &Args,
    c: &mut T,
    states: Arc<States>,
    s: &Scenario,
    rng: &mut StdRng,
    bucket: String,
) -> Result<report::ScenarioReport> {
    let load = Load {
        keys: args.keys,
        max_size: args.max_size,
        conditional: args.conditional,
    };
    let creds = c.creds();
    let mut clients = Vec::new();
    for i in 0..c.len() {
        clients.push(workload::client(&c.endpoint(i), &creds)?);
    }
    if let Some(lb) = c.balancer() {
        clients.push(workload::client(&lb, &creds)?);
    }
    let shared = Arc::new(Shared {
        clients,
        bucket,
        states: states.clone(),
        records: Default::default(),
        next_value: AtomicU64::new(1),
        start: Instant::now(),
        load,
    });
    create_bucket(&shared).await?;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(s.secs);
    let workers: Vec<_> = (0..args.workers)
        .map(|_| tokio::spawn(workload::worker(shared.clone(), until)))
        .collect();
    let mut timeline = Vec::new();
    let faults = scenario::run_faults(s, c, &states, rng, t0, &mut timeline).await;
    for w in workers {
        w.await?;
    }
    // Every node up, connected and ready; then every key read and the bucket listed through each.
    let healed = c.heal_all().await;
    faults?;
    healed?;
    for i in 0..c.len() {
        c.wait_ready(i, Duration::from_secs(60)).await?;
        states.set(i, NodeState::Up);
    }
    let records: Vec<workload::Record> = std::mem::take(&mut *shared.records.lock().unwrap_or_else(|p| p.into_inner()));
    let mut finals = Vec::new();
    for node in 0..c.len() {
        for key in 0..args.keys {
            finals.push(workload::run_op(&shared, Kind::Get, key, node).await);
        }
        finals.push(workload::run_op(&shared, Kind::List, 0, node).await);
    }
    if !report::any_success(&records) {
        bail!("{}: no write succeeded at all; the cluster did not serve", s.name);
    }
    if args.keep_records {
        std::fs::create_dir_all(&args.report_dir)?;
        let all: Vec<&workload::Record> = records.iter().chain(&finals).collect();
        std::fs::write(
            args.report_dir.join(format!("{}-records.json", s.name)),
            serde_json::to_string(&all)?,
        )?;
    }
    // A node whose clock the scenario keeps ahead to its end refuses to stamp writes by design.
    let skewed: Vec<bool> = (0..c.len()).map(|i| c.clock_ahead(i)).collect();
    let not_recovered = every_node_writes(&shared, &skewed).await;
    if args.compose.is_some() {
        remove_bucket(&shared, args.keys).await;
    }
    let mut verdict = check::check(&records, &finals, args.max_size, args.budget);
    verdict.not_recovered = not_recovered;
    Ok(report::build(s, &records, verdict, timeline))
}

/// Asks for consistency level ALL (every replica must apply the request).
fn at_all(r: &mut aws_sdk_s3::config::http::HttpRequest) {
    r.headers_mut().insert("x-ironbucket-consistency", "ALL");
}

/// After the heal every node must take writes again: a PUT and a DELETE of a key of its own at
/// consistency ALL (every replica must apply them) through each node, tried for up to 30 s. A
/// node whose store stayed broken after its fault (a disk that filled up, say) fails it, although
/// the others' quorum hid it from the load. A node the scenario keeps skewed (its clock ahead to
/// the end) is left out. Returns the nodes that never did, with the error.
async fn every_node_writes(shared: &Shared, skewed: &[bool]) -> Vec<String> {
    let mut stuck = Vec::new();
    for node in (0..skewed.len()).filter(|&n| !skewed[n]) {
        let c = &shared.clients[node];
        let key = format!("after-heal/node-{}", node + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let put = c
                .put_object()
                .bucket(&shared.bucket)
                .key(&key)
                .body(b"probe".to_vec().into())
                .customize()
                .mutate_request(at_all)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("PUT: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
            let done = match put {
                Ok(()) => c
                    .delete_object()
                    .bucket(&shared.bucket)
                    .key(&key)
                    .customize()
                    .mutate_request(at_all)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("DELETE: {}", aws_sdk_s3::error::DisplayErrorContext(&e))),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    stuck.push(format!(
                        "node-{}: a write at ALL through it still failed 30 s after the heal: {e}",
                        node + 1
                    ));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    stuck
}

/// Empties and removes the load's bucket (a cluster the suite did not start is left as found;
/// best effort: a failure only leaves the bucket behind).
async fn remove_bucket(shared: &Shared, keys: usize) {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let c = &shared.clients[0];
    let why = |e: &dyn ProvideErrorMetadata| {
        format!(
            "{}: {}",
            e.code().unwrap_or("no error code"),
            e.message().unwrap_or_default()
        )
    };
    for k in 0..keys {
        let key = workload::key_name(k);
        if let Err(e) = c.delete_object().bucket(&shared.bucket).key(&key).send().await {
            println!("   note: cannot delete {}/{key}: {}", shared.bucket, why(&e));
        }
    }
    if let Err(e) = c.delete_bucket().bucket(&shared.bucket).send().await {
        println!("   note: bucket {} left behind: {}", shared.bucket, why(&e));
    }
}

/// Creates the load's bucket through node-1 (never the one a scenario sets up differently).
async fn create_bucket(shared: &Shared) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match shared.clients[0].create_bucket().bucket(&shared.bucket).send().await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => bail!("cannot create the bucket: {e:?}"),
        }
    }
    // CreateBucket answers once the node that took it has applied it; another node (one just
    // restarted for the scenario, say) may answer NoSuchBucket for a moment after
    // (docs/reliability.md, "Not built yet"). The load starts once every node knows the bucket.
    for (i, c) in shared.clients.iter().enumerate() {
        loop {
            match c.head_bucket().bucket(&shared.bucket).send().await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => bail!(
                    "endpoint {} does not know the new bucket 30 s after its creation: {}",
                    i + 1,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            }
        }
    }
    Ok(())
}
