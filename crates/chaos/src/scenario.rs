//! The scenarios: what is done to which node and when, while the load runs, and the
//! thresholds each must meet.

use crate::target::Target;
use crate::workload::{NodeState, States};
use anyhow::Result;
use ironbucket_testkit::proxy::Link;
use rand::Rng;
use rand::rngs::StdRng;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    None,
    /// A random node SIGKILLed every `every` s, restarted `down` s later.
    KillEvery {
        every: u64,
        down: u64,
    },
    /// One node SIGKILLed at `at` s, restarted `secs` later.
    Down {
        at: u64,
        secs: u64,
    },
    /// One node's RPC and gossip cut from the others (its S3 port reachable) for `secs`.
    Partition {
        at: u64,
        secs: u64,
    },
    /// One node SIGSTOPped for `secs` (stops answering without dying), then SIGCONTed.
    Pause {
        at: u64,
        secs: u64,
    },
    /// One node's links delayed (each way) and lossy from `at` s to the end.
    SlowLink {
        at: u64,
        delay_ms: u64,
        loss: f64,
    },
    /// One node's disk (a tmpfs of its own) filled to the last byte for `secs`.
    DiskFull {
        at: u64,
        secs: u64,
    },
    /// One node's disk refuses every write for `secs`: its metadata commits and new blob files
    /// fail as on a read-only file system (fault points `meta-fsync`, `blob-create`; a tmpfs
    /// cannot be remounted read-only under a running node's open files).
    ReadOnly {
        at: u64,
        secs: u64,
    },
    /// One node's metadata commits fail as after an fsync error, `percent` of them, for the
    /// whole run (the `meta-fsync` fault point).
    FsyncErrors {
        percent: u32,
    },
    /// One node's clock runs `ms` ahead for the whole run.
    ClockAhead {
        ms: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub what: String,
    pub secs: u64,
    pub fault: Fault,
    /// Least share of successful requests among those sent to nodes under no fault.
    pub min_success_up: f64,
}

fn sc(name: &'static str, what: &str, secs: u64, fault: Fault) -> Scenario {
    Scenario {
        name,
        what: what.to_string(),
        secs,
        fault,
        min_success_up: 1.0,
    }
}

/// The long form: the scenarios at full length.
pub fn long() -> Vec<Scenario> {
    let mut slow = sc(
        "slow-link",
        "one node's links delayed 200 ms each way with 5% loss",
        45,
        Fault::SlowLink {
            at: 5,
            delay_ms: 200,
            loss: 0.05,
        },
    );
    slow.min_success_up = 0.99;
    vec![
        sc("none", "no faults", 60, Fault::None),
        sc(
            "kill-random",
            "a random node SIGKILLed every 15 s, down 8 s",
            60,
            Fault::KillEvery { every: 15, down: 8 },
        ),
        sc("down-30s", "one node down 30 s", 60, Fault::Down { at: 10, secs: 30 }),
        sc(
            "partition",
            "one node cut off from the others' RPC and gossip for 30 s, its S3 port reachable",
            60,
            Fault::Partition { at: 10, secs: 30 },
        ),
        sc(
            "pause",
            "one node SIGSTOPped for 15 s",
            45,
            Fault::Pause { at: 10, secs: 15 },
        ),
        slow,
        sc(
            "disk-full",
            "one node's disk full for 30 s",
            60,
            Fault::DiskFull { at: 10, secs: 30 },
        ),
        sc(
            "read-only-disk",
            "one node's disk refuses every write for 30 s (read-only file system)",
            60,
            Fault::ReadOnly { at: 10, secs: 30 },
        ),
        sc(
            "fsync-errors",
            "10% of one node's metadata commits fail as after an fsync error",
            45,
            Fault::FsyncErrors { percent: 10 },
        ),
        sc(
            "clock-ahead",
            "one node's clock 30 s ahead",
            45,
            Fault::ClockAhead { ms: 30_000 },
        ),
    ]
}

/// The short form run by `.ci/run` (under two minutes).
pub fn short() -> Vec<Scenario> {
    vec![
        sc("none", "no faults", 10, Fault::None),
        sc(
            "kill-random",
            "a random node SIGKILLed every 6 s, down 3 s",
            20,
            Fault::KillEvery { every: 6, down: 3 },
        ),
        sc(
            "partition",
            "one node cut off from the others' RPC and gossip for 10 s, its S3 port reachable",
            20,
            Fault::Partition { at: 4, secs: 10 },
        ),
    ]
}

/// What happened when (seconds since the load began).
pub type Timeline = Vec<(f64, String)>;

fn note(t0: Instant, timeline: &mut Timeline, what: String) {
    let at = t0.elapsed().as_secs_f64();
    println!("  {at:6.1}s {what}");
    timeline.push((at, what));
}

async fn until(t0: Instant, secs: u64) {
    tokio::time::sleep_until((t0 + Duration::from_secs(secs)).into()).await;
}

/// Restarts node `i` and routes requests to it again once it is ready.
async fn bring_back<T: Target>(c: &mut T, states: &States, i: usize, t0: Instant, tl: &mut Timeline) -> Result<()> {
    c.restart(i).await?;
    let took = c.wait_ready(i, Duration::from_secs(60)).await?;
    states.set(i, NodeState::Up);
    note(
        t0,
        tl,
        format!("node-{} restarted, ready after {:.1} s", i + 1, took.as_secs_f64()),
    );
    Ok(())
}

/// Runs the scenario's faults until the load ends (`t0 + secs`), then leaves every node
/// running, connected and ready.
pub async fn run_faults<T: Target>(
    s: &Scenario,
    c: &mut T,
    states: &States,
    rng: &mut StdRng,
    t0: Instant,
    tl: &mut Timeline,
) -> Result<()> {
    let n = c.len();
    let victim = rng.gen_range(0..n);
    match s.fault {
        Fault::None => until(t0, s.secs).await,
        Fault::ClockAhead { ms } => {
            note(
                t0,
                tl,
                format!("node-{} runs with its clock {ms} ms ahead", SET_UP_NODE + 1),
            );
            until(t0, s.secs).await;
        }
        Fault::KillEvery { every, down } => {
            let mut next = every;
            while next + down <= s.secs {
                until(t0, next).await;
                let i = rng.gen_range(0..n);
                states.set(i, NodeState::Down);
                c.kill(i).await?;
                note(t0, tl, format!("node-{} SIGKILLed", i + 1));
                until(t0, next + down).await;
                bring_back(c, states, i, t0, tl).await?;
                next = (t0.elapsed().as_secs() + 1).max(next + every);
            }
            until(t0, s.secs).await;
        }
        Fault::Down { at, secs } => {
            until(t0, at).await;
            states.set(victim, NodeState::Down);
            c.kill(victim).await?;
            note(t0, tl, format!("node-{} SIGKILLed for {secs} s", victim + 1));
            until(t0, at + secs).await;
            bring_back(c, states, victim, t0, tl).await?;
            until(t0, s.secs).await;
        }
        Fault::Partition { at, secs } => {
            until(t0, at).await;
            c.links_of(victim, Link::CUT).await?;
            states.set(victim, NodeState::Minority);
            note(
                t0,
                tl,
                format!("node-{} cut off from the others for {secs} s", victim + 1),
            );
            until(t0, at + secs).await;
            c.links_of(victim, Link::CLEAR).await?;
            note(t0, tl, format!("node-{}'s links healed", victim + 1));
            let took = c.wait_ready(victim, Duration::from_secs(60)).await?;
            states.set(victim, NodeState::Up);
            note(
                t0,
                tl,
                format!("node-{} ready again after {:.1} s", victim + 1, took.as_secs_f64()),
            );
            until(t0, s.secs).await;
        }
        Fault::Pause { at, secs } => {
            until(t0, at).await;
            states.set(victim, NodeState::Down);
            c.pause(victim, true).await?;
            note(t0, tl, format!("node-{} SIGSTOPped for {secs} s", victim + 1));
            until(t0, at + secs).await;
            c.pause(victim, false).await?;
            let took = c.wait_ready(victim, Duration::from_secs(60)).await?;
            states.set(victim, NodeState::Up);
            note(
                t0,
                tl,
                format!("node-{} SIGCONTed, ready after {:.1} s", victim + 1, took.as_secs_f64()),
            );
            until(t0, s.secs).await;
        }
        Fault::SlowLink { at, delay_ms, loss } => {
            until(t0, at).await;
            let partly = c
                .links_of(victim, Link::slow(Duration::from_millis(delay_ms), loss))
                .await?;
            states.set(victim, NodeState::Degraded);
            let what = partly.unwrap_or_else(|| format!("{delay_ms} ms delay each way, {:.0}% loss", loss * 100.0));
            note(t0, tl, format!("node-{}'s links: {what}", victim + 1));
            until(t0, s.secs).await;
            c.links_of(victim, Link::CLEAR).await?;
            states.set(victim, NodeState::Up);
            note(t0, tl, format!("node-{}'s links healed", victim + 1));
        }
        Fault::FsyncErrors { percent } => {
            note(
                t0,
                tl,
                format!("{percent}% of node-{}'s metadata commits fail", SET_UP_NODE + 1),
            );
            until(t0, s.secs).await;
        }
        Fault::ReadOnly { at, secs } => {
            let victim = SET_UP_NODE;
            until(t0, at).await;
            c.fault_points(victim, &["meta-fsync=return", "blob-create=return"])
                .await?;
            states.set(victim, NodeState::Degraded);
            note(
                t0,
                tl,
                format!("node-{}'s disk refuses writes for {secs} s", victim + 1),
            );
            until(t0, at + secs).await;
            c.fault_points(victim, &[]).await?;
            note(t0, tl, format!("node-{}'s disk takes writes again", victim + 1));
            // A node may have stopped on it (its metadata store fails for good): start it again.
            if !c.is_ready(victim).await && c.wait_ready(victim, Duration::from_secs(10)).await.is_err() {
                note(t0, tl, format!("node-{} is not ready: restarting it", victim + 1));
                bring_back(c, states, victim, t0, tl).await?;
            }
            states.set(victim, NodeState::Up);
            until(t0, s.secs).await;
        }
        Fault::DiskFull { at, secs } => {
            let victim = SET_UP_NODE;
            until(t0, at).await;
            c.fill_disk(victim, true).await?;
            states.set(victim, NodeState::Degraded);
            note(t0, tl, format!("node-{}'s disk full for {secs} s", victim + 1));
            until(t0, at + secs).await;
            c.fill_disk(victim, false).await?;
            states.set(victim, NodeState::Up);
            note(t0, tl, format!("node-{}'s disk has room again", victim + 1));
            until(t0, s.secs).await;
        }
    }
    Ok(())
}

/// What a scenario's fault needs of node [`SET_UP_NODE`]'s start-up, whichever cluster runs it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StartUp {
    /// Its clock this many ms ahead (`--clock-offset-ms`, `IRONBUCKET_CLOCK_OFFSET_MS`).
    pub clock_offset_ms: Option<i64>,
    /// Fault points armed from its start (`FAILPOINTS`).
    pub failpoints: Option<String>,
    /// Fault points armed while it runs (`FAILPOINTS_FILE`).
    pub fault_file: bool,
    /// Its data directory on a small file system of its own (a tmpfs) that can be filled.
    pub small_disk: bool,
}

impl StartUp {
    /// Whether the node starts as the others do.
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the node serves under a fault for the whole run (its requests are not held to
    /// the healthy nodes' threshold).
    pub fn degraded_throughout(&self) -> bool {
        self.clock_offset_ms.is_some() || self.failpoints.is_some()
    }
}

impl Scenario {
    pub fn start_up(&self) -> StartUp {
        match self.fault {
            Fault::ClockAhead { ms } => StartUp {
                clock_offset_ms: Some(ms),
                ..Default::default()
            },
            Fault::FsyncErrors { percent } => StartUp {
                failpoints: Some(format!("meta-fsync={percent}%return")),
                ..Default::default()
            },
            Fault::ReadOnly { .. } => StartUp {
                fault_file: true,
                ..Default::default()
            },
            Fault::DiskFull { .. } => StartUp {
                small_disk: true,
                ..Default::default()
            },
            _ => StartUp::default(),
        }
    }
}

/// The node a scenario's setup singles out before the cluster starts (clock, tmpfs): node 3.
pub const SET_UP_NODE: usize = 2;
