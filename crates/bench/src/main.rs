//! `ironbucket-bench`: an S3 load generator in the spirit of MinIO's warp. It works against any
//! S3 endpoint (IronBucket, MinIO, Garage, AWS), so peers can be measured side by side.

mod client;
mod null_server;
mod report;
mod run;
mod units;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand};
use run::{Mix, Mode, Params};
use std::io::IsTerminal;
use units::{SizeSpec, parse_duration, parse_size};

#[derive(Parser, Debug)]
#[command(
    name = "ironbucket-bench",
    version,
    about = "S3 load generator: put, get, mixed, list, multipart and delete benchmarks"
)]
struct Cli {
    /// Runtime worker threads [default: one per CPU]. Use 1 when pinning the client to one core.
    #[arg(long, global = true, env = "IRONBUCKET_BENCH_THREADS")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload new objects.
    Put(RunArgs),
    /// Download objects (uploaded first, not measured).
    Get(RunArgs),
    /// A GET/PUT/DELETE/STAT mix over prepared objects (--get/--put/--delete/--stat percentages).
    Mixed(RunArgs),
    /// ListObjectsV2 pages (1000 keys each) over --objects prepared keys.
    List(RunArgs),
    /// Multipart uploads of --size objects in --part-size parts.
    Multipart(RunArgs),
    /// Delete prepared objects one by one.
    Delete(RunArgs),
    /// A trivial S3-shaped HTTP responder for measuring the client alone.
    NullServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9900")]
        listen: String,
    },
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// S3 endpoint URL; repeat or comma-separate for several (requests go round-robin).
    #[arg(
        long,
        env = "IRONBUCKET_BENCH_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9000"
    )]
    endpoint: Vec<String>,
    /// Access key id.
    #[arg(long = "access-key", env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    /// Secret access key.
    #[arg(long = "secret-key", env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: String,
    /// Signing region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// Bucket to use (created if missing).
    #[arg(long, default_value = "ironbucket-bench")]
    bucket: String,
    /// Key prefix for this run [default: a random run id].
    #[arg(long)]
    prefix: Option<String>,
    /// Object size: fixed (4KiB) or a range sampled log-uniformly (1KiB..1MiB).
    #[arg(long, default_value = "4KiB")]
    size: String,
    /// Parallel requests in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Hard cap on the measured phase (e.g. 30s, 2m).
    #[arg(long, short = 'd', default_value = "30s")]
    duration: String,
    /// put/multipart: stop after this many operations. get/mixed/list/delete: number of
    /// objects to prepare [default: 1000; list: 10000].
    #[arg(long)]
    objects: Option<u64>,
    /// mixed: percentage of GETs.
    #[arg(long, default_value_t = 70)]
    get: u32,
    /// mixed: percentage of PUTs.
    #[arg(long, default_value_t = 30)]
    put: u32,
    /// mixed: percentage of DELETEs (of objects PUT during the run, never of the prepared ones).
    #[arg(long, default_value_t = 0)]
    delete: u32,
    /// mixed: percentage of STATs (HEAD).
    #[arg(long, default_value_t = 0)]
    stat: u32,
    /// multipart: part size.
    #[arg(long = "part-size", default_value = "16MiB")]
    part_size: String,
    /// Fraction of GET bodies whose MD5 is checked (all are length-checked).
    #[arg(long = "verify-ratio", default_value_t = 0.1)]
    verify_ratio: f64,
    /// Write the results as JSON to this file ("-" for stdout).
    #[arg(long)]
    json: Option<String>,
    /// Draw throughput over time and the latency histogram to this SVG file.
    #[arg(long)]
    plot: Option<String>,
    /// Keep the objects this run created.
    #[arg(long = "no-cleanup")]
    no_cleanup: bool,
    /// Send every PUT with `If-None-Match: *` (a conditional write: in a cluster, a Paxos round
    /// on the key); each PUT writes a new key, so every one succeeds.
    #[arg(long = "if-none-match")]
    if_none_match: bool,
    /// No live progress line.
    #[arg(long = "no-progress")]
    no_progress: bool,
}

fn params(mode: Mode, a: &RunArgs) -> Result<Params> {
    let size = SizeSpec::parse(&a.size)?;
    let part_size = parse_size(&a.part_size)?;
    if mode == Mode::Multipart && part_size < 5 * 1024 * 1024 && size.max > part_size {
        bail!("--part-size must be at least 5MiB (S3's minimum for all but the last part)");
    }
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if mode == Mode::Mixed && a.get + a.put + a.delete + a.stat == 0 {
        bail!("mixed mode needs at least one of --get/--put/--delete/--stat above 0");
    }
    let prepare = match mode {
        Mode::Get | Mode::Mixed | Mode::Delete => a.objects.unwrap_or(1000),
        Mode::List => a.objects.unwrap_or(10_000),
        _ => 0,
    };
    let run_id = format!("{:08x}", rand::random::<u32>());
    Ok(Params {
        mode,
        endpoints: a.endpoint.clone(),
        bucket: a.bucket.clone(),
        prefix: a.prefix.clone().unwrap_or_else(|| format!("bench-{run_id}/")),
        size,
        concurrency: a.concurrency,
        duration_secs: parse_duration(&a.duration)?.as_secs_f64(),
        objects: a.objects,
        prepare,
        mix: Mix {
            get: a.get,
            put: a.put,
            delete: a.delete,
            stat: a.stat,
        },
        part_size,
        verify_ratio: a.verify_ratio,
        cleanup: !a.no_cleanup,
        if_none_match: a.if_none_match,
    })
}

fn main() {
    let cli = Cli::parse();
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = cli.threads.filter(|n| *n > 1) {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ironbucket-bench: cannot start runtime: {e}");
            std::process::exit(2);
        }
    };
    let r = rt.block_on(async {
        match cli.command {
            Command::Put(a) => bench(Mode::Put, a).await,
            Command::Get(a) => bench(Mode::Get, a).await,
            Command::Mixed(a) => bench(Mode::Mixed, a).await,
            Command::List(a) => bench(Mode::List, a).await,
            Command::Multipart(a) => bench(Mode::Multipart, a).await,
            Command::Delete(a) => bench(Mode::Delete, a).await,
            Command::NullServer { listen } => null_server::serve(&listen).await.map(|_| 0),
        }
    });
    match r {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ironbucket-bench: error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Runs one benchmark; exit code 0 when no operation failed, 1 otherwise.
async fn bench(mode: Mode, a: RunArgs) -> Result<i32> {
    let p = params(mode, &a)?;
    let show = !a.no_progress && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new_spinner();
    if !show {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bar2 = bar.clone();
    let progress: run::Progress = Box::new(move |phase, ops, bytes, errors, secs| {
        let rate = if secs > 0.0 { ops as f64 / secs } else { 0.0 };
        bar2.set_message(format!(
            "{phase}: {ops} ops, {} , {errors} errors, {rate:.0} ops/s, {:.0}s",
            units::human_bytes(bytes as f64),
            secs
        ));
        bar2.tick();
    });
    let outcome = run::run(p.clone(), &a.access_key, &a.secret_key, &a.region, progress).await;
    bar.finish_and_clear();
    let report = report::build(p, outcome?);
    print!("{}", report::table(&report));
    if let Some(path) = &a.json {
        report::write_json(&report, path)?;
    }
    if let Some(path) = &a.plot {
        report::plot(&report, path)?;
    }
    Ok(if report.total.errors > 0 { 1 } else { 0 })
}
