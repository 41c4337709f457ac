//! `ironbucket-cli`: the operator's client. It speaks only to the admin HTTP API of a node.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

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
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    admin_url: String,

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
    /// Print the node's Prometheus metrics.
    Metrics,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ironbucket-cli: error: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn get(base: &str, path: &str, timeout: u64) -> Result<(u16, String)> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let uri: hyper::Uri = url.parse().with_context(|| format!("invalid admin URL {base:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("admin URL must start with http:// (got {base:?})");
    }
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let fut = client.get(uri);
    let resp = tokio::time::timeout(Duration::from_secs(timeout), fut)
        .await
        .with_context(|| format!("no answer from {url} within {timeout} s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the response")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Health { json } => {
            let (status, body) = get(&cli.admin_url, "/health", cli.timeout).await?;
            let v: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("unexpected /health answer (HTTP {status}): {body}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let s = &v["storage"];
                println!("status:   {}", v["status"].as_str().unwrap_or("?"));
                println!("node:     {}", v["node_id"].as_str().unwrap_or("?"));
                println!("version:  {}", v["version"].as_str().unwrap_or("?"));
                println!("uptime:   {} s", v["uptime_seconds"]);
                if s.is_object() {
                    println!("objects:  {}", s["objects"]);
                    println!("used:     {} bytes", s["used_bytes"]);
                    println!(
                        "disk:     {} free of {} bytes",
                        s["disk_free_bytes"], s["disk_total_bytes"]
                    );
                }
                if let Some(e) = v["error"].as_str() {
                    println!("error:    {e}");
                }
            }
            Ok(if status == 200 && v["status"] == "ok" { 0 } else { 1 })
        }
        Command::Metrics => {
            let (status, body) = get(&cli.admin_url, "/metrics", cli.timeout).await?;
            print!("{body}");
            Ok(if status == 200 { 0 } else { 1 })
        }
    }
}
