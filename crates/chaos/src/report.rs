//! What a scenario measured and whether it met its thresholds, as JSON and as a Markdown table.

use crate::check::Verdict;
use crate::scenario::{Scenario, Timeline};
use crate::workload::{NodeState, Outcome, Record};
use serde::Serialize;
use std::collections::BTreeMap;

/// Requests sent to nodes in one state.
#[derive(Debug, Default, Serialize)]
pub struct Class {
    pub sent: usize,
    pub succeeded: usize,
    pub share: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Failed requests whose every attempt was answered within a second.
    pub failed_fast: usize,
    pub failed: usize,
    /// Failed requests sent once the node had been in its state for a second or more (it had
    /// had time to notice), and how many of those were answered within a second.
    pub failed_settled: usize,
    pub failed_settled_fast: usize,
}

#[derive(Debug, Serialize)]
pub struct Threshold {
    pub name: String,
    pub want: String,
    pub got: String,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub what: String,
    pub secs: u64,
    pub operations: usize,
    pub ops_per_sec: f64,
    /// By the state of the node a request was sent to; requests whose node changed state while
    /// they were under way are counted under `disturbed`.
    pub classes: BTreeMap<String, Class>,
    pub verdict: Verdict,
    pub timeline: Timeline,
    pub thresholds: Vec<Threshold>,
    pub pass: bool,
    pub skipped: Option<String>,
    /// The first failed requests of the classes held to a success threshold (nodes under no
    /// fault, the load balancer), each on a line: what a missed threshold is about.
    pub failed_requests: Vec<String>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn class_name(r: &Record) -> &'static str {
    if r.disturbed {
        return "disturbed";
    }
    if r.state == NodeState::Balancer && r.gateway_errors > 0 {
        // The load balancer sent it to a node that was gone or frozen (and cut it off when its
        // check found so): not a request to a live node.
        return "balancer-to-gone-node";
    }
    if r.state == NodeState::Balancer && r.balancer_checking {
        // Sent before the balancer's checks could have found a node's change: it may have
        // gone to the node just cut off or frozen, and a conditional write it answered 503 is
        // not resent (its outcome is unknown).
        return "balancer-during-check";
    }
    match r.state {
        NodeState::Up => "up",
        NodeState::Down => "down",
        NodeState::Minority => "minority",
        NodeState::Degraded => "degraded",
        NodeState::Balancer => "balancer",
    }
}

pub fn classes(records: &[Record]) -> BTreeMap<String, Class> {
    let mut lat: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut out: BTreeMap<String, Class> = BTreeMap::new();
    for r in records {
        let name = class_name(r).to_string();
        let c = out.entry(name.clone()).or_default();
        c.sent += 1;
        if r.succeeded() {
            c.succeeded += 1;
        } else {
            c.failed += 1;
            let fast = r.slowest_attempt_us < 1_000_000;
            if fast {
                c.failed_fast += 1;
            }
            if r.state_age_us >= 1_000_000 {
                c.failed_settled += 1;
                c.failed_settled_fast += usize::from(fast);
            }
        }
        lat.entry(name).or_default().push(r.ret_us - r.call_us);
    }
    for (name, c) in out.iter_mut() {
        c.share = if c.sent == 0 {
            1.0
        } else {
            c.succeeded as f64 / c.sent as f64
        };
        let mut l = lat.remove(name).unwrap_or_default();
        l.sort_unstable();
        c.p50_ms = percentile(&l, 0.5);
        c.p99_ms = percentile(&l, 0.99);
    }
    out
}

pub fn build(s: &Scenario, records: &[Record], verdict: Verdict, timeline: Timeline) -> ScenarioReport {
    let classes = classes(records);
    let mut t = Vec::new();
    let mut add = |name: &str, want: String, got: String, pass: bool| {
        t.push(Threshold {
            name: name.into(),
            want,
            got,
            pass,
        })
    };
    let lost = verdict.lost_writes.len() + verdict.resurrected.len();
    add("acknowledged writes lost", "0".into(), lost.to_string(), lost == 0);
    let wrong = verdict.wrong_reads.len() + verdict.listing_mismatches.len();
    add("wrong reads", "0".into(), wrong.to_string(), wrong == 0);
    let nl = verdict.not_linearizable.len() + verdict.undecided.len();
    add(
        "keys not linearizable (or undecided)",
        "0".into(),
        format!("{nl} of {}", verdict.keys_checked),
        nl == 0,
    );
    let unexpected = verdict.unexpected_errors.len();
    add(
        "requests refused with a 4xx",
        "0".into(),
        unexpected.to_string(),
        unexpected == 0,
    );
    let stuck = verdict.not_recovered.len();
    add(
        "nodes refusing a write at ALL after the heal",
        "0".into(),
        stuck.to_string(),
        stuck == 0,
    );
    let up = classes.get("up");
    let share = up.map_or(0.0, |c| c.share);
    add(
        "success among requests to nodes under no fault",
        format!(">= {:.1}%", s.min_success_up * 100.0),
        format!(
            "{:.2}% ({} of {})",
            share * 100.0,
            up.map_or(0, |c| c.succeeded),
            up.map_or(0, |c| c.sent)
        ),
        up.is_some_and(|c| c.sent > 0) && share >= s.min_success_up,
    );
    if let Some(b) = classes.get("balancer") {
        // What a client of the deployment sees: the load balancer must route around a node
        // that is down, frozen or cut off as well as the client does by choosing another node.
        add(
            "success among requests through the load balancer",
            format!(">= {:.1}%", s.min_success_up * 100.0),
            format!("{:.2}% ({} of {})", b.share * 100.0, b.succeeded, b.sent),
            b.sent > 0 && b.share >= s.min_success_up,
        );
    }
    if let Some(m) = classes.get("minority") {
        // A node that cannot reach a quorum answers at once: every request sent once it has
        // been cut off for a second fails within 1 s (those caught by the cut itself are
        // reported: the node needs up to about a second to notice).
        add(
            "minority: failures answered within 1 s (sent 1 s or more into the cut)",
            "100%".into(),
            format!(
                "{} of {} ({} of {} counting requests caught by the cut)",
                m.failed_settled_fast, m.failed_settled, m.failed_fast, m.failed
            ),
            m.failed_settled_fast == m.failed_settled,
        );
    }
    let operations = records.len();
    let pass = t.iter().all(|x| x.pass);
    let failed_requests = records
        .iter()
        .filter(|r| !r.succeeded() && matches!(class_name(r), "up" | "balancer"))
        .take(8)
        .map(|r| {
            format!(
                "{:.3}s-{:.3}s {:?} k{:03} to {} ({}, {:.1} s in that state), {} attempt(s): {:?}",
                r.call_us as f64 / 1e6,
                r.ret_us as f64 / 1e6,
                r.kind,
                r.key,
                if r.state == NodeState::Balancer {
                    "the load balancer".to_string()
                } else {
                    format!("node-{}", r.node + 1)
                },
                class_name(r),
                r.state_age_us as f64 / 1e6,
                r.attempts,
                r.outcome
            )
        })
        .collect();
    ScenarioReport {
        name: s.name.to_string(),
        what: s.what.clone(),
        secs: s.secs,
        operations,
        ops_per_sec: operations as f64 / s.secs.max(1) as f64,
        classes,
        verdict,
        timeline,
        thresholds: t,
        pass,
        skipped: None,
        failed_requests,
    }
}

pub fn skipped(s: &Scenario, why: String) -> ScenarioReport {
    ScenarioReport {
        name: s.name.to_string(),
        what: s.what.clone(),
        secs: s.secs,
        operations: 0,
        ops_per_sec: 0.0,
        classes: BTreeMap::new(),
        verdict: Verdict::default(),
        timeline: Vec::new(),
        thresholds: Vec::new(),
        pass: true,
        skipped: Some(why),
        failed_requests: Vec::new(),
    }
}

/// Lines of the first `n` findings of each kind.
fn findings(v: &Verdict, n: usize) -> Vec<String> {
    let lists: [(&str, &Vec<String>); 8] = [
        ("not recovered", &v.not_recovered),
        ("lost", &v.lost_writes),
        ("came back", &v.resurrected),
        ("wrong read", &v.wrong_reads),
        ("not linearizable", &v.not_linearizable),
        ("undecided", &v.undecided),
        ("listing", &v.listing_mismatches),
        ("4xx", &v.unexpected_errors),
    ];
    lists
        .iter()
        .flat_map(|(what, l)| l.iter().take(n).map(move |x| format!("{what}: {x}")))
        .collect()
}

pub fn print(r: &ScenarioReport) {
    if let Some(why) = &r.skipped {
        println!("== {}: SKIPPED ({why})", r.name);
        return;
    }
    println!(
        "== {}: {} ({} operations, {:.0}/s)",
        r.name,
        if r.pass { "PASS" } else { "FAIL" },
        r.operations,
        r.ops_per_sec
    );
    for (name, c) in &r.classes {
        println!(
            "   {name:<10} sent {:>6}  ok {:>6} ({:>6.2}%)  p50 {:>7.1} ms  p99 {:>8.1} ms  failed {} ({} within 1 s)",
            c.sent,
            c.succeeded,
            c.share * 100.0,
            c.p50_ms,
            c.p99_ms,
            c.failed,
            c.failed_fast
        );
    }
    let v = &r.verdict;
    println!(
        "   checked: {} acknowledged writes ({} conditional; {} more refused by their condition), {} of unknown outcome, {} reads, {} keys",
        v.acknowledged_writes, v.conditional_done, v.conditional_failed, v.unknown_writes, v.reads, v.keys_checked
    );
    for t in &r.thresholds {
        println!(
            "   [{}] {}: want {}, got {}",
            if t.pass { "ok" } else { "FAIL" },
            t.name,
            t.want,
            t.got
        );
    }
    for f in findings(v, 5) {
        println!("   ! {f}");
    }
    for f in &r.failed_requests {
        println!("   failed: {f}");
    }
}

/// The Markdown table of a run.
pub fn markdown(reports: &[ScenarioReport], header: &str) -> String {
    let mut md = format!("{header}\n\n");
    let lb = reports.iter().any(|r| r.classes.contains_key("balancer"));
    md.push_str("| scenario | fault | ops/s | ok to healthy nodes | p99 (healthy) |");
    if lb {
        md.push_str(" ok through the load balancer | p99 (LB) |");
    }
    md.push_str(" faulted node: ok / sent | failed within 1 s | ack. writes | lost | wrong reads | non-linearizable keys | result |\n");
    md.push_str(if lb {
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    } else {
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    });
    for r in reports {
        if let Some(why) = &r.skipped {
            let blanks = if lb {
                "| | | | | | | | | | | |"
            } else {
                "| | | | | | | | | |"
            };
            md.push_str(&format!("| {} | {} {blanks} skipped: {why} |\n", r.name, r.what));
            continue;
        }
        let up = r.classes.get("up");
        let faulted: Vec<&Class> = ["minority", "degraded"]
            .iter()
            .filter_map(|k| r.classes.get(*k))
            .collect();
        let (fs, fo, ff, fall) = faulted.iter().fold((0, 0, 0, 0), |a, c| {
            (a.0 + c.sent, a.1 + c.succeeded, a.2 + c.failed_fast, a.3 + c.failed)
        });
        let v = &r.verdict;
        let share = |c: Option<&Class>| {
            c.map_or("-".into(), |c| {
                format!("{:.2}% ({}/{})", c.share * 100.0, c.succeeded, c.sent)
            })
        };
        let p99 = |c: Option<&Class>| c.map_or("-".into(), |c| format!("{:.0} ms", c.p99_ms));
        let mut cols = format!("{} | {}", share(up), p99(up));
        if lb {
            let b = r.classes.get("balancer");
            cols.push_str(&format!(" | {} | {}", share(b), p99(b)));
        }
        md.push_str(&format!(
            "| {} | {} | {:.0} | {cols} | {} | {} | {} | {} | {} | {} of {} | {} |\n",
            r.name,
            r.what,
            r.ops_per_sec,
            if fs == 0 { "-".into() } else { format!("{fo} / {fs}") },
            if fall == 0 {
                "-".into()
            } else {
                format!("{ff} of {fall}")
            },
            v.acknowledged_writes,
            v.lost_writes.len() + v.resurrected.len(),
            v.wrong_reads.len() + v.listing_mismatches.len(),
            v.not_linearizable.len() + v.undecided.len(),
            v.keys_checked,
            if r.pass { "pass" } else { "FAIL" }
        ));
    }
    let notes: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            findings(&r.verdict, 3)
                .into_iter()
                .map(move |f| format!("- {}: {f}", r.name))
        })
        .collect();
    if !notes.is_empty() {
        md.push_str("\nFindings (first few of each kind):\n\n");
        md.push_str(&notes.join("\n"));
        md.push('\n');
    }
    md
}

/// Whether any record shows the run did something at all (a scenario with no successful
/// request proves nothing).
pub fn any_success(records: &[Record]) -> bool {
    records.iter().any(|r| matches!(r.outcome, Outcome::Done))
}
