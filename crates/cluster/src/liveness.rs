//! Failure detection by gossip: SWIM with suspicion (the `foca` library) over UDP on the node's
//! RPC port number. Each node learns which others are alive, suspect or down without waiting for
//! a request to time out, and every node's load (objects and bytes stored) and capacity (disk
//! size and free space) spread with the gossip as custom broadcasts.
//!
//! [`Detector`] is the pure part: foca driven through an accumulating runtime, so a simulation can
//! run many of them on a virtual clock. [`Gossip`] is the IO shell: a UDP socket, timers, and
//! packet authentication with the cluster secret (a stranger's packets are dropped).

use bytes::Bytes;
use foca::{AccumulatingRuntime, BroadcastHandler, Config, Foca, Invalidates, OwnedNotification, PostcardCodec, Timer};
use ironbucket_runtime::{OnFailure, Registry};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node's gossip identity: its name and gossip address, and a bump that makes a restarted
/// node a new identity which wins over its old, possibly down, one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipId {
    pub name: String,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl foca::Identity for GossipId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// What the failure detector says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    Alive,
    /// Someone failed to reach it; it is treated as alive until it refutes or is declared down.
    Suspect,
    Down,
    /// Never heard of (not gossiping yet).
    Unknown,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
            Liveness::Unknown => "unknown",
        }
    }

    /// Whether a coordinator should send it requests.
    pub fn usable(self) -> bool {
        matches!(self, Liveness::Alive | Liveness::Suspect | Liveness::Unknown)
    }
}

/// A node's load and capacity, spread by gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    pub name: String,
    /// Increases with every report of the same node (per process: the identity's bump first).
    pub seq: (u64, u64),
    #[serde(flatten)]
    pub figures: LoadFigures,
}

/// Load and capacity of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFigures {
    pub objects: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadKey {
    name: String,
    seq: (u64, u64),
}

impl Invalidates for LoadKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.seq >= other.seq
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed load broadcast: {0}")]
pub struct BadBroadcast(String);

/// Keeps the newest load report of every node (shared with the [`Detector`], since foca keeps
/// its handler to itself).
#[derive(Default, Clone)]
pub struct Loads(Arc<Mutex<BTreeMap<String, NodeLoad>>>);

impl BroadcastHandler<GossipId> for Loads {
    type Key = LoadKey;
    type Error = BadBroadcast;

    fn receive_item(&mut self, data: &[u8], _sender: Option<&GossipId>) -> Result<Option<LoadKey>, BadBroadcast> {
        let load: NodeLoad = serde_json::from_slice(data).map_err(|e| BadBroadcast(e.to_string()))?;
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&load.name).is_some_and(|old| old.seq >= load.seq) {
            return Ok(None);
        }
        let key = LoadKey {
            name: load.name.clone(),
            seq: load.seq,
        };
        map.insert(load.name.clone(), load);
        Ok(Some(key))
    }
}

/// Timing of the detector.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long a probe waits before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_to_down_after: Duration,
}

impl GossipConfig {
    /// Derived from the Raft heartbeat (`SYNC_INTERVAL_MS`): probes every 4 heartbeats (at
    /// least 200 ms), suspects declared down after 3 probe periods.
    pub fn from_heartbeat(heartbeat: Duration) -> Self {
        let probe = (heartbeat * 4).max(Duration::from_millis(200));
        Self {
            probe_period: probe,
            probe_rtt: probe / 2,
            suspect_to_down_after: probe * 3,
        }
    }

    fn foca(&self, cluster_size: usize) -> Config {
        let n = NonZeroU32::new(cluster_size.max(1) as u32).unwrap_or(NonZeroU32::MIN);
        let mut c = Config::new_lan(n);
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down_after;
        // Forget down identities after a while (a restarted node comes back as a new one).
        c.remove_down_after = Some(Duration::from_secs(120));
        if let Some(p) = c.periodic_announce.as_mut() {
            p.frequency = self.probe_period * 10;
        }
        if let Some(p) = c.periodic_announce_to_down_members.as_mut() {
            p.frequency = self.probe_period * 20;
        }
        c
    }
}

/// Side effects the detector asks for.
#[derive(Debug, Default)]
pub struct Effects {
    pub send: Vec<(SocketAddr, Bytes)>,
    pub timers: Vec<(Duration, Timer<GossipId>)>,
    /// Members that came up or went down since the last drain.
    pub changes: Vec<(String, Liveness)>,
}

/// SWIM for one node, without IO: feed it packets and timers, then [`Detector::drain`].
pub struct Detector {
    foca: Foca<GossipId, PostcardCodec, StdRng, Loads>,
    rt: AccumulatingRuntime<GossipId>,
    load_seq: u64,
    loads: Loads,
}

impl Detector {
    pub fn new(me: GossipId, cfg: &GossipConfig, cluster_size: usize, seed: u64) -> Self {
        let loads = Loads::default();
        let foca = Foca::with_custom_broadcast(
            me,
            cfg.foca(cluster_size),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
            loads.clone(),
        );
        Self {
            foca,
            rt: AccumulatingRuntime::new(),
            load_seq: 0,
            loads,
        }
    }

    pub fn identity(&self) -> &GossipId {
        self.foca.identity()
    }

    /// Asks `addr` to let us in (a seed); harmless when already in.
    pub fn announce(&mut self, addr: SocketAddr) {
        let to = GossipId {
            name: String::new(),
            addr,
            bump: 0,
        };
        if let Err(e) = self.foca.announce(to, &mut self.rt) {
            tracing::debug!(error = %e, %addr, "gossip announce failed");
        }
    }

    pub fn handle_data(&mut self, data: &[u8]) {
        if let Err(e) = self.foca.handle_data(data, &mut self.rt) {
            tracing::debug!(error = %e, "gossip packet refused");
        }
    }

    pub fn handle_timer(&mut self, t: Timer<GossipId>) {
        if let Err(e) = self.foca.handle_timer(t, &mut self.rt) {
            tracing::debug!(error = %e, "gossip timer failed");
        }
    }

    /// Publishes this node's load and capacity.
    pub fn report_load(&mut self, figures: LoadFigures) {
        self.load_seq += 1;
        let load = NodeLoad {
            name: self.foca.identity().name.clone(),
            seq: (self.foca.identity().bump, self.load_seq),
            figures,
        };
        if let Ok(data) = serde_json::to_vec(&load)
            && let Err(e) = self.foca.add_broadcast(&data)
        {
            tracing::debug!(error = %e, "load broadcast refused");
        }
    }

    pub fn drain(&mut self) -> Effects {
        let mut fx = Effects::default();
        while let Some((to, data)) = self.rt.to_send() {
            fx.send.push((to.addr, data));
        }
        while let Some(t) = self.rt.to_schedule() {
            fx.timers.push(t);
        }
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => fx.changes.push((id.name, Liveness::Alive)),
                OwnedNotification::MemberDown(id) => fx.changes.push((id.name, Liveness::Down)),
                _ => {}
            }
        }
        fx
    }

    /// Every known node by name: the state of its newest identity.
    pub fn members(&self) -> BTreeMap<String, Liveness> {
        let mut newest: BTreeMap<String, (u64, Liveness)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            if id.name.is_empty() {
                continue;
            }
            let l = match m.state() {
                foca::State::Alive => Liveness::Alive,
                foca::State::Suspect => Liveness::Suspect,
                foca::State::Down => Liveness::Down,
            };
            if newest.get(&id.name).is_none_or(|(b, _)| id.bump >= *b) {
                newest.insert(id.name.clone(), (id.bump, l));
            }
        }
        newest.into_iter().map(|(k, (_, l))| (k, l)).collect()
    }

    pub fn loads(&self) -> BTreeMap<String, NodeLoad> {
        self.loads.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What [`Gossip::view`] shows for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub liveness: Liveness,
    pub load: Option<NodeLoad>,
}

/// Supplies this node's load and capacity each round.
pub type LoadFn =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = LoadFigures> + Send>> + Send + Sync>;

/// The failure detector of a running node: UDP socket, timers, authenticated packets.
pub struct Gossip {
    detector: Arc<Mutex<Detector>>,
    name: String,
    /// Dropping the `Gossip` drops this, which ends its tasks and frees the socket.
    _stop: tokio::sync::watch::Sender<()>,
}

const PURPOSE: &str = "gossip";

impl Gossip {
    /// [`Gossip::start_in`] with a worker registry of its own (tests).
    pub async fn start(
        me: GossipId,
        bind: SocketAddr,
        seeds: Vec<String>,
        auth: ironbucket_rpc::Auth,
        resolver: ironbucket_rpc::Resolver,
        cfg: GossipConfig,
        load: LoadFn,
    ) -> std::io::Result<Arc<Self>> {
        Self::start_in(me, bind, seeds, auth, resolver, cfg, load, &Registry::new()).await
    }

    /// Binds `bind` (UDP), announces to `seeds` while some are missing, and keeps gossiping for
    /// as long as the returned value lives. Its loops (timers, packets in, announcements) run as
    /// workers in `workers` and hold only weak references.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_in(
        me: GossipId,
        bind: SocketAddr,
        seeds: Vec<String>,
        auth: ironbucket_rpc::Auth,
        resolver: ironbucket_rpc::Resolver,
        cfg: GossipConfig,
        load: LoadFn,
        workers: &Registry,
    ) -> std::io::Result<Arc<Self>> {
        let socket = Arc::new(tokio::net::UdpSocket::bind(bind).await?);
        let name = me.name.clone();
        let seed = rand::random::<u64>();
        let detector = Arc::new(Mutex::new(Detector::new(me, &cfg, seeds.len().max(3), seed)));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let g = Arc::new(Self {
            detector: detector.clone(),
            name,
            _stop: stop_tx,
        });
        let (timer_tx, timer_rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, Timer<GossipId>)>();
        // Shared so that a restarted timer worker takes over the same queue.
        let timer_rx = Arc::new(tokio::sync::Mutex::new(timer_rx));
        let weak = Arc::downgrade(&detector);
        // Applies effects: sends packets and schedules timers.
        let flush = {
            let socket = socket.clone();
            let auth = auth.clone();
            let resolver = resolver.clone();
            let timer_tx = timer_tx.clone();
            move |fx: Effects| {
                for (to, data) in fx.send {
                    let packet = auth.seal(PURPOSE, &data);
                    if let Err(e) = socket.try_send_to(&packet, resolver.route(to)) {
                        tracing::debug!(error = %e, %to, "gossip send failed");
                    }
                }
                for t in fx.timers {
                    let _ = timer_tx.send(t);
                }
                for (node, l) in fx.changes {
                    tracing::info!(node, liveness = l.as_str(), "gossip: node liveness changed");
                }
            }
        };
        // Timers.
        {
            let weak = weak.clone();
            let flush = flush.clone();
            let stop = stop_rx.clone();
            workers.spawn("gossip.timers", OnFailure::Restart, move |_| {
                let (weak, flush, mut stop, timer_rx) = (weak.clone(), flush.clone(), stop.clone(), timer_rx.clone());
                async move {
                    let mut timer_rx = timer_rx.lock().await;
                    loop {
                        let next = tokio::select! {
                            t = timer_rx.recv() => t,
                            _ = stop.changed() => None,
                        };
                        let Some((after, t)) = next else { return Ok(()) };
                        let weak = weak.clone();
                        let flush = flush.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(after).await;
                            let Some(d) = weak.upgrade() else { return };
                            let fx = {
                                let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
                                d.handle_timer(t);
                                d.drain()
                            };
                            flush(fx);
                        });
                    }
                }
            });
        }
        // Packets in.
        {
            let weak = weak.clone();
            let flush = flush.clone();
            let socket = socket.clone();
            let stop = stop_rx.clone();
            workers.spawn("gossip.receive", OnFailure::Restart, move |_| {
                let (weak, flush, socket, mut stop, auth) =
                    (weak.clone(), flush.clone(), socket.clone(), stop.clone(), auth.clone());
                async move {
                    let mut buf = vec![0u8; 65_536];
                    // Strangers are logged at most every 10 s (anyone can send datagrams).
                    let mut last_warn: Option<std::time::Instant> = None;
                    loop {
                        let got = tokio::select! {
                            r = socket.recv_from(&mut buf) => r,
                            _ = stop.changed() => return Ok(()),
                        };
                        let Ok((n, from)) = got else {
                            continue;
                        };
                        let Some(d) = weak.upgrade() else { return Ok(()) };
                        let Some(data) = auth.open(PURPOSE, &buf[..n]) else {
                            if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                                tracing::warn!(%from, "gossip packet without this cluster's credentials dropped");
                                last_warn = Some(std::time::Instant::now());
                            } else {
                                tracing::debug!(%from, "gossip packet without this cluster's credentials dropped");
                            }
                            continue;
                        };
                        let fx = {
                            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
                            d.handle_data(data);
                            d.drain()
                        };
                        flush(fx);
                    }
                }
            });
        }
        // Announce to the seeds (resolved afresh each time) and report the load, every period.
        {
            let period = cfg.probe_period * 5;
            let stop = stop_rx.clone();
            workers.spawn("gossip.announce", OnFailure::Restart, move |_| {
                let (weak, flush, mut stop, seeds, resolver, load) = (
                    weak.clone(),
                    flush.clone(),
                    stop.clone(),
                    seeds.clone(),
                    resolver.clone(),
                    load.clone(),
                );
                async move {
                    loop {
                        let Some(d) = weak.upgrade() else { return Ok(()) };
                        let mut addrs = Vec::new();
                        for s in &seeds {
                            if let Ok(found) = resolver.resolve(s).await {
                                addrs.extend(found);
                            }
                        }
                        let figures = load().await;
                        let fx = {
                            let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
                            let me = d.identity().addr;
                            let known = d.members();
                            // Announce while alone or missing someone; gossip does the rest.
                            if known.values().filter(|l| **l != Liveness::Down).count() + 1 < seeds.len() {
                                for a in addrs.iter().filter(|a| **a != me) {
                                    d.announce(*a);
                                }
                            }
                            d.report_load(figures);
                            d.drain()
                        };
                        flush(fx);
                        drop(d);
                        tokio::select! {
                            _ = tokio::time::sleep(period) => {}
                            _ = stop.changed() => return Ok(()),
                        }
                    }
                }
            });
        }
        Ok(g)
    }

    pub fn liveness(&self, name: &str) -> Liveness {
        if name == self.name {
            return Liveness::Alive;
        }
        self.detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .members()
            .get(name)
            .copied()
            .unwrap_or(Liveness::Unknown)
    }

    /// Every node the detector knows, this one included.
    pub fn view(&self) -> BTreeMap<String, NodeView> {
        let d = self.detector.lock().unwrap_or_else(|p| p.into_inner());
        let mut loads = d.loads();
        let mut out: BTreeMap<String, NodeView> = d
            .members()
            .into_iter()
            .map(|(n, l)| {
                let load = loads.remove(&n);
                (n, NodeView { liveness: l, load })
            })
            .collect();
        out.insert(
            self.name.clone(),
            NodeView {
                liveness: Liveness::Alive,
                load: loads.remove(&self.name),
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BTreeSet, BinaryHeap};

    /// A deterministic simulation: `n` detectors on a virtual clock exchanging packets with a
    /// seeded delay; `crash` stops a node at a time. Returns what every live node sees at the end
    /// and the first time each observer saw the crashed node down.
    struct Sim {
        now: Duration,
        seq: u64,
        events: BinaryHeap<Reverse<(Duration, u64, usize, Ev)>>,
        nodes: Vec<Detector>,
        crashed: BTreeSet<usize>,
        rng: StdRng,
        down_seen: BTreeMap<(usize, String), Duration>,
        wrongly_down: Vec<String>,
    }

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        Packet(Vec<u8>),
        Timer(u64),
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000))
    }

    impl Sim {
        fn new(n: usize, seed: u64) -> Self {
            let cfg = GossipConfig::from_heartbeat(Duration::from_millis(100));
            let nodes = (0..n)
                .map(|i| {
                    let me = GossipId {
                        name: format!("n{i}"),
                        addr: addr(i),
                        bump: 1,
                    };
                    Detector::new(me, &cfg, n, seed ^ i as u64)
                })
                .collect();
            Self {
                now: Duration::ZERO,
                seq: 0,
                events: BinaryHeap::new(),
                nodes,
                crashed: BTreeSet::new(),
                rng: StdRng::seed_from_u64(seed),
                down_seen: BTreeMap::new(),
                wrongly_down: Vec::new(),
            }
        }

        fn push(&mut self, at: Duration, node: usize, ev: Ev) {
            self.seq += 1;
            self.events.push(Reverse((at, self.seq, node, ev)));
        }

        fn apply(&mut self, i: usize, timers: &mut Vec<Timer<GossipId>>) {
            let fx = self.nodes[i].drain();
            for (to, data) in fx.send {
                let j = (0..self.nodes.len()).find(|j| addr(*j) == to);
                if let Some(j) = j {
                    let delay = Duration::from_millis(rand::RngExt::random_range(&mut self.rng, 1..20));
                    self.push(self.now + delay, j, Ev::Packet(data.to_vec()));
                }
            }
            for (after, t) in fx.timers {
                timers.push(t);
                let id = timers.len() as u64 - 1;
                self.push(self.now + after, i, Ev::Timer(id));
            }
            for (name, l) in fx.changes {
                if l == Liveness::Down {
                    let victim = name[1..].parse::<usize>().unwrap();
                    if self.crashed.contains(&victim) {
                        self.down_seen.entry((i, name)).or_insert(self.now);
                    } else {
                        self.wrongly_down
                            .push(format!("n{i} saw {name} down at {:?}", self.now));
                    }
                }
            }
        }

        fn run(&mut self, until: Duration, crash: Option<(usize, Duration)>) -> Vec<Timer<GossipId>> {
            let mut timers = Vec::new();
            for i in 1..self.nodes.len() {
                self.nodes[i].announce(addr(0));
                self.apply(i, &mut timers);
            }
            while let Some(Reverse((at, _, node, ev))) = self.events.pop() {
                if at > until {
                    break;
                }
                self.now = at;
                if let Some((c, when)) = crash
                    && at >= when
                {
                    self.crashed.insert(c);
                }
                if self.crashed.contains(&node) {
                    continue;
                }
                match ev {
                    Ev::Packet(p) => self.nodes[node].handle_data(&p),
                    Ev::Timer(id) => {
                        let t = timers[id as usize].clone();
                        self.nodes[node].handle_timer(t);
                    }
                }
                self.apply(node, &mut timers);
            }
            timers
        }
    }

    #[test]
    fn everyone_finds_everyone_and_a_crash_is_detected_by_all() {
        for seed in [1u64, 2, 3] {
            let mut sim = Sim::new(5, seed);
            sim.run(Duration::from_secs(60), Some((3, Duration::from_secs(20))));
            assert!(sim.wrongly_down.is_empty(), "seed {seed}: {:?}", sim.wrongly_down);
            for i in [0usize, 1, 2, 4] {
                let m = sim.nodes[i].members();
                for j in [0usize, 1, 2, 4] {
                    if i != j {
                        assert_eq!(
                            m.get(&format!("n{j}")),
                            Some(&Liveness::Alive),
                            "seed {seed}: n{i} on n{j}"
                        );
                    }
                }
                let seen = sim.down_seen.get(&(i, "n3".to_string()));
                let after = seen.map(|t| *t - Duration::from_secs(20));
                println!("seed {seed}: n{i} saw the crashed n3 down {after:?} after the crash");
                assert!(after.is_some_and(|a| a < Duration::from_secs(10)), "seed {seed}: n{i}");
            }
        }
    }

    #[tokio::test]
    async fn dropping_gossip_frees_its_socket() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = SocketAddr::from(([127, 0, 0, 1], port));
        let load: LoadFn = Arc::new(|| Box::pin(async { LoadFigures::default() }));
        let start = || {
            Gossip::start(
                GossipId {
                    name: "solo".into(),
                    addr: bind,
                    bump: 1,
                },
                bind,
                vec![bind.to_string()],
                ironbucket_rpc::Auth::new("c", "secret-secret-123"),
                ironbucket_rpc::Resolver::system(),
                GossipConfig::from_heartbeat(Duration::from_millis(50)),
                load.clone(),
            )
        };
        let g = start().await.unwrap();
        assert_eq!(g.liveness("solo"), Liveness::Alive);
        assert!(start().await.is_err(), "the port is taken while it runs");
        drop(g);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match start().await {
                Ok(_) => break,
                Err(e) => assert!(std::time::Instant::now() < deadline, "port still held: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn the_simulation_is_a_function_of_its_seed() {
        let trace = |seed| {
            let mut sim = Sim::new(4, seed);
            sim.run(Duration::from_secs(30), Some((2, Duration::from_secs(10))));
            format!("{:?}", sim.down_seen)
        };
        assert_eq!(trace(9), trace(9));
    }

    #[test]
    fn loads_spread_and_newer_reports_win() {
        let mut sim = Sim::new(3, 5);
        for (i, n) in sim.nodes.iter_mut().enumerate() {
            n.report_load(LoadFigures {
                objects: i as u64 * 10,
                ..Default::default()
            });
        }
        sim.run(Duration::from_secs(10), None);
        let loads = sim.nodes[0].loads();
        assert_eq!(loads.len(), 3, "{loads:?}");
        assert_eq!(loads["n2"].figures.objects, 20);
        let mut l = Loads::default();
        let mk = |seq, in_flight| {
            serde_json::to_vec(&NodeLoad {
                name: "x".into(),
                seq,
                figures: LoadFigures {
                    objects: in_flight,
                    ..Default::default()
                },
            })
            .unwrap()
        };
        assert!(l.receive_item(&mk((1, 2), 5), None).unwrap().is_some());
        assert!(l.receive_item(&mk((1, 1), 9), None).unwrap().is_none());
        assert!(l.receive_item(&mk((2, 0), 7), None).unwrap().is_some());
        assert_eq!(l.0.lock().unwrap()["x"].figures.objects, 7);
        assert!(l.receive_item(b"junk", None).is_err());
    }
}
