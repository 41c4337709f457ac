//! `ironbucket-cli cluster repair`: anti-entropy's state on every node (per peer: partitions
//! out of sync, items and bytes behind, hints pending, last complete sync), with a progress bar
//! while rounds run (`--watch`); starting a round on every node; the copy bandwidth limit.

use crate::{error_of, request};
use anyhow::{Context, Result};
use clap::Subcommand;
use ironbucket_api as api;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(crate) enum RepairCommand {
    /// Every node's sync state with each of its peers (needs --admin-token).
    Status {
        /// Keep watching: a progress bar of the items still behind until every node is in
        /// sync (or Ctrl-C).
        #[arg(long)]
        watch: bool,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a comparison round on every node now (needs --admin-token).
    Start,
    /// Set every node's copy bandwidth limit in MB/s; 0 lifts it (needs --admin-token).
    Rate { mb_per_sec: f64 },
}

fn ago(ms: Option<u64>, now: u64) -> String {
    match ms {
        None => "never".into(),
        Some(t) => format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn print_status(all: &api::RepairStatusAll) {
    let now = now_ms();
    outln!(
        "{:<16} {:<16} {:>10} {:>11} {:>12} {:>12} {:>7} LAST COMPLETE SYNC",
        "NODE",
        "PEER",
        "PARTITIONS",
        "OUT OF SYNC",
        "ITEMS BEHIND",
        "BYTES BEHIND",
        "HINTS"
    );
    for n in &all.nodes {
        for p in &n.peers {
            outln!(
                "{:<16} {:<16} {:>10} {:>11} {:>12} {:>12} {:>7} {}{}",
                n.node,
                p.node,
                p.partitions,
                p.out_of_sync,
                p.items_behind,
                p.bytes_behind,
                p.hints_pending,
                ago(p.last_complete_sync, now),
                p.error.as_ref().map(|e| format!("  ({e})")).unwrap_or_default()
            );
        }
    }
    outln!();
    for n in &all.nodes {
        outln!(
            "{}: {} rounds (last {} ms, {}), {} tree items; copied {} versions ({} bytes), {} tombstones, {} metadata merges, {} failures; limit {}",
            n.node,
            n.rounds,
            n.last_round_ms,
            ago(n.last_round_at, now),
            n.tree_items,
            n.objects_copied,
            n.bytes_copied,
            n.deletes_applied,
            n.metadata_merged,
            n.failures,
            if n.rate_mb_per_sec == 0.0 {
                "none".to_string()
            } else {
                format!("{} MB/s", n.rate_mb_per_sec)
            }
        );
    }
    for (node, e) in &all.unreachable {
        outln!("{node}: could not be asked: {e}");
    }
}

async fn fetch(base: &str, token: &str, timeout: u64) -> Result<std::result::Result<api::RepairStatusAll, String>> {
    let (status, body) = request(base, "GET", "/cluster/repair/status", Some(token), None, timeout).await?;
    if status != 200 {
        return Ok(Err(format!("the node answered HTTP {status}: {}", error_of(&body))));
    }
    Ok(Ok(serde_json::from_str(&body).with_context(|| {
        format!("unexpected /cluster/repair/status answer: {body}")
    })?))
}

fn behind(all: &api::RepairStatusAll) -> u64 {
    all.nodes
        .iter()
        .flat_map(|n| &n.peers)
        .map(|p| p.items_behind + p.hints_pending + p.out_of_sync)
        .sum()
}

pub(crate) async fn run(cmd: RepairCommand, base: &str, token: &str, timeout: u64) -> Result<i32> {
    match cmd {
        RepairCommand::Start => crate::admin_call(base, "POST", "/cluster/repair", token, None, timeout).await,
        RepairCommand::Rate { mb_per_sec } => {
            let body = serde_json::to_value(api::RepairRate { mb_per_sec })?;
            crate::admin_call(base, "PUT", "/cluster/repair/rate", token, Some(body), timeout).await
        }
        RepairCommand::Status { watch: false, json } => {
            let all = match fetch(base, token, timeout).await? {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("ironbucket-cli: {e}");
                    return Ok(1);
                }
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_status(&all);
            }
            Ok(0)
        }
        RepairCommand::Status { watch: true, .. } => {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{bar:40}] {pos}/{len} in sync  {msg}  ({per_sec}, ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            let mut start: Option<u64> = None;
            loop {
                let all = match fetch(base, token, timeout).await? {
                    Ok(a) => a,
                    Err(e) => {
                        bar.abandon();
                        eprintln!("ironbucket-cli: {e}");
                        return Ok(1);
                    }
                };
                let left = behind(&all);
                let first = *start.get_or_insert(left.max(1));
                bar.set_length(first.max(left));
                bar.set_position(first.max(left) - left);
                let running: Vec<String> = all
                    .nodes
                    .iter()
                    .filter_map(|n| n.progress.map(|(d, t)| format!("{} {d}/{t}", n.node)))
                    .collect();
                bar.set_message(if running.is_empty() {
                    format!("{left} behind")
                } else {
                    format!("{left} behind; rounds: {}", running.join(", "))
                });
                let synced = all.unreachable.is_empty()
                    && all
                        .nodes
                        .iter()
                        .flat_map(|n| &n.peers)
                        .all(|p| p.out_of_sync == 0 && p.items_behind == 0 && p.last_complete_sync.is_some());
                if synced {
                    bar.finish_with_message("every node is in sync with every peer");
                    print_status(&all);
                    return Ok(0);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
