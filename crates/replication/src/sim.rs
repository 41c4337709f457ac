//! Deterministic simulation of the quorum coordinator: five nodes, replication factor 3, replica
//! sets from the real placement ring, coordinators and replicas using the real quorum state
//! machines and last-writer-wins rule (`quorum.rs`), clients writing and reading at random
//! levels through random nodes, over a network that delays, drops and cuts off nodes and with
//! nodes crashing and coming back (their storage survives). Everything runs on a virtual clock
//! from one seeded generator, so a seed is a run; the seed is printed and
//! `IRONBUCKET_SIM_SEEDS=<seed>` reruns it.
//!
//! Anti-entropy runs throughout, as the real worker does (`crate::sync`): every node, every
//! `SYNC_MS`, sends each peer of each replica set it belongs to the digest of what it holds of
//! that set; a peer whose digest differs answers with its items, and the node takes in what is
//! newer (it only pulls). The digest here is computed, not kept incrementally (the metadata
//! tree's own tests cover that).
//!
//! The checker: no read returns a value never written; a read that overlaps an acknowledged
//! write's replicas (R + W > RF) and starts after that write was acknowledged returns it or
//! something newer; after healing (no reads at all: anti-entropy alone), every replica of a key
//! holds the same newest version, at least as new as every acknowledged write.

use crate::quorum::{Consistency, ReadQuorum, Stamp, WriteQuorum, newer};
use ironbucket_cluster::{Layout, NodeSpec, Ring, Strategy};
use ironbucket_types::Hlc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

const N: usize = 5;
const RF: usize = 3;
const KEYS: usize = 6;
const CLIENTS: usize = 4;
const TIMEOUT_MS: u64 = 200;
const FAULT_PHASE_MS: u64 = 20_000;
/// Anti-entropy round interval.
const SYNC_MS: u64 = 300;
/// How long the heal phase runs (anti-entropy only, no clients).
const HEAL_MS: u64 = 3_000;

#[derive(Debug, Clone)]
enum Msg {
    Write {
        op: u64,
        key: String,
        stamp: Stamp,
        value: u64,
    },
    WriteAck {
        op: u64,
        from: usize,
    },
    Read {
        op: u64,
        key: String,
    },
    ReadReply {
        op: u64,
        from: usize,
        version: Option<(Stamp, u64)>,
    },
    Repair {
        key: String,
        stamp: Stamp,
        value: u64,
    },
    /// Anti-entropy: "this is the digest of what I hold of replica set `set`".
    SyncAsk {
        set: Vec<usize>,
        digest: u64,
    },
    /// The peer's items of the set (its digest differed).
    SyncItems {
        items: Vec<(String, Stamp, u64)>,
    },
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver { from: usize, to: usize, msg: Msg },
    Timeout { node: usize, op: u64 },
    ClientNext { client: usize },
    Crash { node: usize },
    Recover { node: usize },
    Isolate { node: Option<usize> },
    SyncTick { node: usize },
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Acked(Stamp),
    Failed,
    Read(Option<(Stamp, u64)>),
}

#[derive(Debug, Clone)]
struct Record {
    client: usize,
    key: String,
    level: Consistency,
    write: Option<u64>,
    start: u64,
    end: u64,
    outcome: Outcome,
}

struct Node {
    up: bool,
    skew: i64,
    hlc: Hlc,
    store: BTreeMap<String, (Stamp, u64)>,
    writes: BTreeMap<u64, (WriteQuorum, usize, Record)>,
    reads: BTreeMap<u64, (ReadQuorum<u64>, usize, Record)>,
}

/// A deliberately broken coordinator, to show the checker catches what it should.
#[derive(Clone, Copy, PartialEq)]
enum Bug {
    None,
    /// Acknowledges writes after one replica whatever level the client asked for.
    AckAfterOne,
    /// Never runs anti-entropy.
    NoAntiEntropy,
}

struct Sim {
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    rng: StdRng,
    nodes: Vec<Node>,
    ring: Ring,
    isolated: Option<usize>,
    drop_pct: u32,
    next_op: u64,
    next_value: u64,
    history: Vec<Record>,
    /// Values by the write that issued them.
    written: BTreeMap<u64, (String, Stamp)>,
    clients_stop: bool,
    /// Anti-entropy ticks stop being scheduled after this time.
    sync_until: u64,
    bug: Bug,
    trace: Vec<String>,
}

fn name(i: usize) -> String {
    format!("n{i}")
}

impl Sim {
    fn new(seed: u64, bug: Bug) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = (0..N)
            .map(|_| Node {
                up: true,
                skew: rng.gen_range(-40..=40),
                hlc: Hlc::default(),
                store: BTreeMap::new(),
                writes: BTreeMap::new(),
                reads: BTreeMap::new(),
            })
            .collect();
        let ring = Ring::new(Layout {
            version: 1,
            nodes: (0..N).map(|i| NodeSpec::new(name(i))).collect(),
            strategy: Strategy::ConsistentHash,
            factor: RF,
            vnodes: 64,
        })
        .unwrap();
        Self {
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            rng,
            nodes,
            ring,
            isolated: None,
            drop_pct: 0,
            next_op: 0,
            next_value: 0,
            history: Vec::new(),
            written: BTreeMap::new(),
            clients_stop: false,
            sync_until: FAULT_PHASE_MS,
            bug,
            trace: Vec::new(),
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    fn replicas(&self, key: &str) -> Vec<usize> {
        self.ring.replicas("b", key)
    }

    fn wall(&self, node: usize) -> u64 {
        (1_000_000 + self.now as i64 + self.nodes[node].skew) as u64
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            self.at(self.now, Ev::Deliver { from, to, msg });
            return;
        }
        let cut = self.isolated.is_some_and(|i| i == from || i == to);
        if cut || self.rng.gen_range(0..100) < self.drop_pct {
            return;
        }
        let delay = self.rng.gen_range(1..=30);
        self.at(self.now + delay, Ev::Deliver { from, to, msg });
    }

    fn finish(&mut self, mut r: Record, outcome: Outcome) {
        r.end = self.now;
        r.outcome = outcome;
        self.trace.push(format!("{r:?}"));
        let client = r.client;
        self.history.push(r);
        if !self.clients_stop {
            let think = self.rng.gen_range(0..40);
            self.at(self.now + think, Ev::ClientNext { client });
        }
    }

    fn client_op(&mut self, client: usize) {
        let via = self.rng.gen_range(0..N);
        let key = format!("k{}", self.rng.gen_range(0..KEYS));
        let level = [Consistency::One, Consistency::Quorum, Consistency::All][self.rng.gen_range(0..3)];
        let is_write = self.rng.gen_bool(0.5);
        let op = self.next_op;
        self.next_op += 1;
        let mut rec = Record {
            client,
            key: key.clone(),
            level,
            write: None,
            start: self.now,
            end: self.now,
            outcome: Outcome::Failed,
        };
        if !self.nodes[via].up {
            // Connection refused: the client sees an error at once.
            self.finish(rec, Outcome::Failed);
            return;
        }
        let replicas = self.replicas(&key);
        let names: Vec<String> = replicas.iter().map(|i| name(*i)).collect();
        if is_write {
            let value = self.next_value;
            self.next_value += 1;
            let wall = self.wall(via);
            let n = &mut self.nodes[via];
            n.hlc = Hlc::tick(n.hlc, wall);
            let stamp = Stamp {
                hlc: n.hlc,
                node: via as u64,
            };
            rec.write = Some(value);
            self.written.insert(value, (key.clone(), stamp));
            let level_used = if self.bug == Bug::AckAfterOne {
                Consistency::One
            } else {
                level
            };
            self.nodes[via]
                .writes
                .insert(op, (WriteQuorum::new(names, level_used), client, rec));
            for r in replicas {
                self.send(
                    via,
                    r,
                    Msg::Write {
                        op,
                        key: key.clone(),
                        stamp,
                        value,
                    },
                );
            }
        } else {
            self.nodes[via]
                .reads
                .insert(op, (ReadQuorum::new(names, level), client, rec));
            for r in replicas {
                self.send(via, r, Msg::Read { op, key: key.clone() });
            }
        }
        self.at(self.now + TIMEOUT_MS, Ev::Timeout { node: via, op });
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.nodes[to].up {
            return;
        }
        match msg {
            Msg::Write { op, key, stamp, value } => {
                self.store(to, key, stamp, value);
                // Durable (or superseded by something newer, which is as good): acknowledge.
                self.send(to, from, Msg::WriteAck { op, from: to });
            }
            Msg::Repair { key, stamp, value } => self.store(to, key, stamp, value),
            Msg::SyncAsk { set, digest } => {
                if self.digest(to, &set) != digest {
                    let items = self.items(to, &set);
                    self.send(to, from, Msg::SyncItems { items });
                }
            }
            Msg::SyncItems { items } => {
                for (key, stamp, value) in items {
                    self.store(to, key, stamp, value);
                }
            }
            Msg::WriteAck { op, from: replica } => {
                let decided = match self.nodes[to].writes.get_mut(&op) {
                    Some((q, _, _)) => q.ack(&name(replica)),
                    None => None,
                };
                if let Some(d) = decided
                    && let Some((_, _, rec)) = self.nodes[to].writes.remove(&op)
                {
                    let stamp = self.written[&rec.write.unwrap_or_default()].1;
                    self.finish(
                        rec,
                        if d.is_ok() {
                            Outcome::Acked(stamp)
                        } else {
                            Outcome::Failed
                        },
                    );
                }
            }
            Msg::Read { op, key } => {
                let version = self.nodes[to].store.get(&key).copied();
                self.send(to, from, Msg::ReadReply { op, from: to, version });
            }
            Msg::ReadReply {
                op,
                from: replica,
                version,
            } => {
                if let Some((s, _)) = version {
                    let wall = self.wall(to);
                    let n = &mut self.nodes[to];
                    n.hlc = Hlc::merge(n.hlc, s.hlc, wall);
                }
                let decided = match self.nodes[to].reads.get_mut(&op) {
                    Some((q, _, _)) => q.answer(&name(replica), version),
                    None => None,
                };
                if let Some(d) = decided
                    && let Some((_, _, rec)) = self.nodes[to].reads.remove(&op)
                {
                    match d {
                        Ok(res) => {
                            // Read repair: bring the stale replicas up to the newest version.
                            if let Some((stamp, value)) = res.newest {
                                for s in &res.stale {
                                    let target = s[1..].parse::<usize>().unwrap_or(0);
                                    self.send(
                                        to,
                                        target,
                                        Msg::Repair {
                                            key: rec.key.clone(),
                                            stamp,
                                            value,
                                        },
                                    );
                                }
                            }
                            self.finish(rec, Outcome::Read(res.newest));
                        }
                        Err(_) => self.finish(rec, Outcome::Failed),
                    }
                }
            }
        }
    }

    /// A replica takes a version: last writer (by stamp) wins.
    fn store(&mut self, node: usize, key: String, stamp: Stamp, value: u64) {
        let wall = self.wall(node);
        let n = &mut self.nodes[node];
        n.hlc = Hlc::merge(n.hlc, stamp.hlc, wall);
        if newer(stamp, n.store.get(&key).map(|(s, _)| *s)) {
            n.store.insert(key, (stamp, value));
        }
    }

    /// The replica sets (sorted) of the keys, each once.
    fn sets(&self) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = (0..KEYS)
            .map(|k| {
                let mut r = self.replicas(&format!("k{k}"));
                r.sort_unstable();
                r
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// What `node` holds of the keys placed on `set`.
    fn items(&self, node: usize, set: &[usize]) -> Vec<(String, Stamp, u64)> {
        self.nodes[node]
            .store
            .iter()
            .filter(|(k, _)| {
                let mut r = self.replicas(k);
                r.sort_unstable();
                r == set
            })
            .map(|(k, (s, v))| (k.clone(), *s, *v))
            .collect()
    }

    fn digest(&self, node: usize, set: &[usize]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (k, s, v) in self.items(node, set) {
            (k, s.hlc.physical, s.hlc.logical, s.node, v).hash(&mut h);
        }
        h.finish()
    }

    /// One anti-entropy round of `node`: its digest of each set it belongs to, to each peer.
    fn sync_round(&mut self, node: usize) {
        for set in self.sets().into_iter().filter(|s| s.contains(&node)) {
            let digest = self.digest(node, &set);
            for peer in set.iter().copied().filter(|p| *p != node) {
                self.send(
                    node,
                    peer,
                    Msg::SyncAsk {
                        set: set.clone(),
                        digest,
                    },
                );
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some(((t, _), ev)) = self.queue.pop_first() else {
            return false;
        };
        self.now = t;
        match ev {
            Ev::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Ev::Timeout { node, op } => {
                if let Some((mut q, _, rec)) = self.nodes[node].writes.remove(&op) {
                    if q.timeout().is_some() {
                        self.finish(rec, Outcome::Failed);
                    }
                } else if let Some((mut q, _, rec)) = self.nodes[node].reads.remove(&op)
                    && q.timeout().is_some()
                {
                    self.finish(rec, Outcome::Failed);
                }
            }
            Ev::ClientNext { client } => {
                if !self.clients_stop {
                    self.client_op(client);
                }
            }
            Ev::Crash { node } => {
                self.trace.push(format!("t={} crash n{node}", self.now));
                self.nodes[node].up = false;
                // Its requests in flight die with it: the clients see errors.
                let writes = std::mem::take(&mut self.nodes[node].writes);
                let reads = std::mem::take(&mut self.nodes[node].reads);
                for (_, (_, _, rec)) in writes {
                    self.finish(rec, Outcome::Failed);
                }
                for (_, (_, _, rec)) in reads {
                    self.finish(rec, Outcome::Failed);
                }
            }
            Ev::Recover { node } => {
                self.trace.push(format!("t={} recover n{node}", self.now));
                self.nodes[node].up = true;
            }
            Ev::Isolate { node } => {
                self.trace.push(format!("t={} isolate {node:?}", self.now));
                self.isolated = node;
            }
            Ev::SyncTick { node } => {
                if self.nodes[node].up {
                    self.sync_round(node);
                }
                if self.now + SYNC_MS <= self.sync_until {
                    self.at(self.now + SYNC_MS, Ev::SyncTick { node });
                }
            }
        }
        true
    }

    /// The fault schedule: a pure function of the generator.
    fn schedule_faults(&mut self) {
        let mut t = 500;
        while t < FAULT_PHASE_MS {
            let node = self.rng.gen_range(0..N);
            let len = self.rng.gen_range(300..1500);
            match self.rng.gen_range(0..3) {
                0 => {
                    self.at(t, Ev::Crash { node });
                    self.at(t + len, Ev::Recover { node });
                }
                1 => {
                    self.at(t, Ev::Isolate { node: Some(node) });
                    self.at(t + len, Ev::Isolate { node: None });
                }
                _ => {}
            }
            t += len + self.rng.gen_range(100..800);
        }
    }

    fn run(&mut self) {
        self.drop_pct = 5;
        self.schedule_faults();
        for c in 0..CLIENTS {
            self.at(c as u64, Ev::ClientNext { client: c });
        }
        if self.bug != Bug::NoAntiEntropy {
            for node in 0..N {
                let first = self.rng.gen_range(0..SYNC_MS);
                self.at(first, Ev::SyncTick { node });
            }
        }
        while self.now < FAULT_PHASE_MS && self.step() {}
        // Heal: clients stop, the network becomes perfect, everyone comes back (with what its
        // disk held), and anti-entropy alone runs for a while; nobody reads.
        self.clients_stop = true;
        self.drop_pct = 0;
        self.isolated = None;
        for i in 0..N {
            self.nodes[i].up = true;
        }
        self.sync_until = self.now + HEAL_MS;
        self.queue
            .retain(|_, ev| matches!(ev, Ev::Deliver { .. } | Ev::Timeout { .. }));
        if self.bug != Bug::NoAntiEntropy {
            for node in 0..N {
                let first = self.now + self.rng.gen_range(0..SYNC_MS);
                self.at(first, Ev::SyncTick { node });
            }
        }
        while self.step() {}
    }

    /// Everything the checker finds wrong.
    fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let acked: Vec<&Record> = self
            .history
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Acked(_)))
            .collect();
        for r in &self.history {
            let Outcome::Read(got) = &r.outcome else { continue };
            // No value that was never written.
            if let Some((stamp, value)) = got {
                match self.written.get(value) {
                    Some((k, s)) if *k == r.key && s == stamp => {}
                    _ => out.push(format!(
                        "read of {} returned {value} ({stamp:?}), never written there",
                        r.key
                    )),
                }
            }
            // Overlapping quorums see every write acknowledged before the read began.
            for w in &acked {
                if w.key != r.key || w.end >= r.start || !r.level.overlaps(w.level, RF) {
                    continue;
                }
                let Outcome::Acked(ws) = w.outcome else { continue };
                if got.is_none_or(|(s, _)| s < ws) {
                    out.push(format!(
                        "read of {} at {} (t={}) returned {got:?}, older than write {:?} acked at {} (t={})",
                        r.key, r.level, r.start, w.write, w.level, w.end
                    ));
                }
            }
        }
        // Convergence after healing, by anti-entropy alone.
        for k in 0..KEYS {
            let key = format!("k{k}");
            let held: BTreeSet<Option<(Stamp, u64)>> = self
                .replicas(&key)
                .iter()
                .map(|i| self.nodes[*i].store.get(&key).copied())
                .collect();
            if held.len() != 1 {
                out.push(format!("replicas of {key} differ after healing: {held:?}"));
            }
            let newest = held.iter().flatten().map(|(s, _)| *s).max();
            for w in acked.iter().filter(|w| w.key == key) {
                if let Outcome::Acked(ws) = w.outcome
                    && newest.is_none_or(|n| n < ws)
                {
                    out.push(format!("acknowledged write {:?} of {key} lost", w.write));
                }
            }
        }
        out
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("IRONBUCKET_SIM_SEEDS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => (1..=8).collect(),
    }
}

#[test]
fn quorum_coordinator_keeps_its_promises_under_faults() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, Bug::None);
        sim.run();
        let count = |f: fn(&Outcome) -> bool| sim.history.iter().filter(|r| f(&r.outcome)).count();
        let acked = count(|o| matches!(o, Outcome::Acked(_)));
        let failed = count(|o| matches!(o, Outcome::Failed));
        let reads = count(|o| matches!(o, Outcome::Read(_)));
        println!("seed {seed}: {acked} writes acknowledged, {reads} reads answered, {failed} requests refused (503)");
        let v = sim.violations();
        assert!(
            v.is_empty(),
            "seed {seed}: {} violations, first: {:#?}",
            v.len(),
            &v[..v.len().min(5)]
        );
        assert!(
            acked > 50 && reads > 50 && failed > 0,
            "seed {seed}: the run exercised too little"
        );
    }
}

#[test]
fn a_seed_is_a_run() {
    let trace = |seed| {
        let mut sim = Sim::new(seed, Bug::None);
        sim.run();
        sim.trace.join("\n")
    };
    assert_eq!(trace(11), trace(11));
    assert_ne!(trace(11), trace(12));
}

/// Without anti-entropy (and with no reads after the faults), replicas that missed writes stay
/// behind: the convergence check is not blind.
#[test]
fn without_anti_entropy_replicas_stay_apart() {
    let caught = seeds()
        .into_iter()
        .filter(|seed| {
            let mut sim = Sim::new(*seed, Bug::NoAntiEntropy);
            sim.run();
            sim.violations().iter().any(|v| v.contains("differ after healing"))
        })
        .count();
    assert!(caught > 0, "no seed left replicas apart without anti-entropy");
}

/// The checker is not blind: a coordinator that acknowledges too early is caught.
#[test]
fn the_checker_catches_a_coordinator_that_acks_too_early() {
    let caught = seeds()
        .into_iter()
        .filter(|seed| {
            let mut sim = Sim::new(*seed, Bug::AckAfterOne);
            sim.run();
            sim.violations().iter().any(|v| v.contains("older than write"))
        })
        .count();
    assert!(caught > 0, "no seed exposed the early acknowledgement");
}
