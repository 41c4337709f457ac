//! `ironbucket-cli cluster rebalance`: data moving between layout versions. Starts the move's
//! next step on every node and shows where it stands; `--watch` follows it with a progress bar
//! (rate and time left) until it is done; `cancel` goes back to the layout data moves from.

use crate::{error_of, request};
use anyhow::{Context, Result};
use clap::Subcommand;
use ironbucket_api as api;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(crate) enum RebalanceCommand {
    /// Where the move stands on every node, without starting anything.
    Status {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Cancel the move: back to the oldest layout data is still placed by (members that layout
    /// did not hold are left draining).
    Cancel,
}

fn print_status(s: &api::RebalanceStatus) {
    if s.moving_from.is_empty() {
        outln!("layout version {}: nothing is moving", s.layout_version);
    } else {
        outln!(
            "layout version {}: moving from {:?}, reads use version {}; {:.1}% done, {} objects ({} bytes) moved, {:.2} MB/s{}",
            s.layout_version,
            s.moving_from,
            s.read_version,
            s.progress * 100.0,
            s.objects_moved,
            s.bytes_moved,
            s.bytes_per_sec / 1e6,
            s.eta_secs.map(|e| format!(", about {e} s left")).unwrap_or_default()
        );
    }
    if !s.moves_enabled {
        outln!("placement changes do not move data until every member speaks node protocol 6");
    }
    outln!(
        "{:<16} {:>6} {:>6} {:>7} {:>8} {:>9} {:>12} {:>8} STATE",
        "NODE",
        "ACKED",
        "SYNCED",
        "READING",
        "PROGRESS",
        "OBJECTS",
        "BYTES",
        "DROPPED"
    );
    for n in &s.nodes {
        outln!(
            "{:<16} {:>6} {:>6} {:>7} {:>7.1}% {:>9} {:>12} {:>8} {}",
            n.node,
            n.acked,
            n.synced,
            n.reading,
            n.progress * 100.0,
            n.objects_moved,
            n.bytes_moved,
            n.keys_dropped,
            n.state
        );
    }
    for (n, why) in &s.leaving {
        outln!("{n}: leaving ({why})");
    }
    for (n, e) in &s.unreachable {
        outln!("{n}: could not be asked: {e}");
    }
}

async fn fetch(base: &str, token: &str, timeout: u64) -> Result<std::result::Result<api::RebalanceStatus, String>> {
    let (status, body) = request(base, "GET", "/cluster/rebalance/status", Some(token), None, timeout).await?;
    if status != 200 {
        return Ok(Err(format!("the node answered HTTP {status}: {}", error_of(&body))));
    }
    Ok(Ok(serde_json::from_str(&body).with_context(|| {
        format!("unexpected /cluster/rebalance/status answer: {body}")
    })?))
}

/// `cluster rebalance [--watch]` (start the next step everywhere, then show or follow it) and
/// its subcommands.
pub(crate) async fn run(
    cmd: Option<RebalanceCommand>,
    watch: bool,
    base: &str,
    token: &str,
    timeout: u64,
) -> Result<i32> {
    match cmd {
        Some(RebalanceCommand::Cancel) => {
            crate::admin_call(base, "POST", "/cluster/rebalance/cancel", token, None, timeout).await
        }
        Some(RebalanceCommand::Status { json }) => {
            let s = match fetch(base, token, timeout).await? {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("ironbucket-cli: {e}");
                    return Ok(1);
                }
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(0)
        }
        None => {
            let (status, body) = request(base, "POST", "/cluster/rebalance", Some(token), None, timeout).await?;
            if status != 200 {
                eprintln!("ironbucket-cli: the node answered HTTP {status}: {}", error_of(&body));
                return Ok(1);
            }
            if !watch {
                return match fetch(base, token, timeout).await? {
                    Ok(s) => {
                        print_status(&s);
                        Ok(0)
                    }
                    Err(e) => {
                        eprintln!("ironbucket-cli: {e}");
                        Ok(1)
                    }
                };
            }
            let bar = indicatif::ProgressBar::new(1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {percent}%  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            loop {
                let s = match fetch(base, token, timeout).await? {
                    Ok(s) => s,
                    Err(e) => {
                        bar.abandon();
                        eprintln!("ironbucket-cli: {e}");
                        return Ok(1);
                    }
                };
                bar.set_position((s.progress * 1000.0) as u64);
                bar.set_message(format!(
                    "{} objects, {:.1} MB moved, {:.2} MB/s{}",
                    s.objects_moved,
                    s.bytes_moved as f64 / 1e6,
                    s.bytes_per_sec / 1e6,
                    s.eta_secs.map(|e| format!(", ETA {e} s")).unwrap_or_default()
                ));
                if s.done {
                    bar.finish_with_message(format!(
                        "done: layout version {}, {} objects ({:.1} MB) moved",
                        s.layout_version,
                        s.objects_moved,
                        s.bytes_moved as f64 / 1e6
                    ));
                    print_status(&s);
                    return Ok(0);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
