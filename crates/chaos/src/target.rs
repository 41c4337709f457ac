//! What the scenarios need of the cluster under test, whichever it is: the node processes this
//! program starts itself (`cluster.rs`) or the Docker Compose cluster `cluster/start.sh` started
//! (`compose.rs`).

use anyhow::Result;
use ironbucket_testkit::proxy::Link;
use std::time::{Duration, Instant};

/// The S3 side of one node or load balancer: where it answers and how a client reaches it.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    /// The CA (PEM) its HTTPS certificate is checked against; none for plain HTTP.
    pub ca: Option<Vec<u8>>,
}

/// The credentials the load signs its requests with.
#[derive(Clone)]
pub struct Creds {
    pub access_key: String,
    pub secret_key: String,
}

/// A fault a target cannot inject, and why (the scenario is reported as skipped).
pub fn unsupported(what: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!("{what} is not possible here: {why}")
}

/// What a node whose clock runs ahead says about it in its `/health/ready`.
const CLOCK_REFUSAL: &str = "clock runs ahead of";

#[allow(async_fn_in_trait)]
pub trait Target {
    /// How many nodes.
    fn len(&self) -> usize;

    /// Node `i`'s S3 endpoint.
    fn endpoint(&self, i: usize) -> Endpoint;

    /// A load balancer in front of every node, if the target has one.
    fn balancer(&self) -> Option<Endpoint>;

    fn creds(&self) -> Creds;

    /// Where node `i`'s log is, for error messages.
    fn log_hint(&self, i: usize) -> String;

    /// Whether node `i` reports itself ready (it can serve writes), or why not (what it
    /// answered; empty when it did not answer).
    async fn readiness(&self, i: usize) -> std::result::Result<(), String>;

    /// Whether node `i` runs with its clock set ahead of its peers' on purpose: it then never
    /// reports ready (it stamps no writes), and "not ready because of its clock" is as settled
    /// as it gets.
    fn clock_ahead(&self, i: usize) -> bool;

    /// Whether node `i` is as ready as it can be ([`Target::readiness`], [`Target::clock_ahead`]).
    async fn is_ready(&self, i: usize) -> bool {
        match self.readiness(i).await {
            Ok(()) => true,
            Err(why) => self.clock_ahead(i) && why.contains(CLOCK_REFUSAL),
        }
    }

    /// SIGKILL: the node gets no chance to flush anything.
    async fn kill(&mut self, i: usize) -> Result<()>;

    /// Starts node `i` again (killing it first if it runs).
    async fn restart(&mut self, i: usize) -> Result<()>;

    /// Freezes (`true`) or thaws node `i`: it stops answering without dying.
    async fn pause(&mut self, i: usize, stop: bool) -> Result<()>;

    /// Sets every link between node `i` and the other nodes, both ways. Returns what was
    /// applied, when the target could only apply part of it.
    async fn links_of(&mut self, i: usize, link: Link) -> Result<Option<String>>;

    /// Fills node `i`'s disk to the last byte (`true`) or frees it again.
    async fn fill_disk(&mut self, i: usize, full: bool) -> Result<()>;

    /// Arms node `i`'s fault points (`name=actions` items); an empty list disarms them.
    async fn fault_points(&mut self, i: usize, items: &[&str]) -> Result<()>;

    /// Every node running, thawed and connected (after a scenario).
    async fn heal_all(&mut self) -> Result<()>;

    async fn wait_ready(&self, i: usize, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        while !self.is_ready(i).await {
            if start.elapsed() > timeout {
                anyhow::bail!(
                    "node-{} not ready within {timeout:?} (log: {})",
                    i + 1,
                    self.log_hint(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(start.elapsed())
    }
}
