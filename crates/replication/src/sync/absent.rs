//! Re-replication after a node is lost. The node leading the job `rereplicate` marks a data
//! member the failure detector has reported down for longer than `REREPLICATE_AFTER_SECS`
//! absent ([`Leave::Absent`]): it leaves the placement, and its share is re-created on the
//! others by the layout move any change makes, taking every key from its remaining replicas
//! (the absent node is asked for nothing and waited for by nothing). It stays a member.
//!
//! Back (restarted on its disk, or replaced by a wiped node under its id), it first discards
//! everything it holds, once the re-replication move is done and every member reads from the
//! new layout only: its copies may be stale, and a delete whose tombstone the others collected
//! while it was away would not stop them coming back (as Cassandra requires a node away longer
//! than `gc_grace_seconds` to be wiped). Then it activates itself: its share moves back to it
//! like any layout change, and the others drop their surplus copies only after verifying that
//! it holds them.
//!
//! Down is what the failure detector says; the time is counted by the job's leader since it
//! first saw the member down (a new leader counts afresh: later, never earlier).

use crate::ClusterStore;
use ironbucket_consensus::{ABSENT_MEMBERS, MemberState};
use ironbucket_runtime::WorkerCtx;
use ironbucket_store::Result;
use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

/// The job whose leader marks members absent.
pub const JOB: &str = "rereplicate";

impl ClusterStore {
    /// The worker `cluster.rereplicate`: one look every second.
    pub(crate) async fn absence_loop(me: Weak<Self>, ctx: WorkerCtx) -> std::result::Result<(), String> {
        let mut down_since: HashMap<String, Instant> = HashMap::new();
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            match s.sync.config().rereplicate_after {
                None => {
                    down_since.clear();
                    ctx.progress("off (REREPLICATE_AFTER_SECS=0): lost nodes are removed or replaced by hand");
                }
                Some(after) => match s.absence_step(after, &mut down_since).await {
                    Ok(msg) => ctx.progress(msg),
                    Err(e) => ctx.note_error(format!("re-replication: {e}")),
                },
            }
            drop(s);
            ctx.sleep(Duration::from_secs(1)).await;
        }
    }

    /// Marks the members down for longer than `after` absent, if this node leads the job.
    async fn absence_step(&self, after: Duration, down_since: &mut HashMap<String, Instant>) -> Result<String> {
        let me = self.cp.node_name().to_string();
        let leads = self.cp.job_leaders().get(JOB).is_some_and(|l| *l == me);
        if self.ready().is_err() || !leads || !self.cp.with_state(|s| s.layout_moves) {
            down_since.clear();
            return Ok("another node leads re-replication".into());
        }
        let down = self.down_members();
        let candidates: Vec<String> = self.cp.with_state(|s| {
            s.members
                .values()
                .filter(|m| m.state == MemberState::Active && m.role != "gateway" && m.weight > 0)
                .filter(|m| down.contains(&m.name))
                .map(|m| m.name.clone())
                .collect()
        });
        let now = Instant::now();
        down_since.retain(|n, _| candidates.contains(n));
        let mut due = Vec::new();
        for n in &candidates {
            let since = *down_since.entry(n.clone()).or_insert(now);
            if now.duration_since(since) >= after {
                due.push(n.clone());
            }
        }
        if due.is_empty() {
            return Ok(match candidates.len() {
                0 => "every data node is up".into(),
                n => format!("{n} data node(s) down, not yet for {}s", after.as_secs()),
            });
        }
        // The lost node cannot be asked: one of an older release, back, would have to be
        // upgraded before it can read its own absence (its data is safe on the others).
        if !self.every_live_member_speaks(ABSENT_MEMBERS).await {
            return Ok(format!(
                "{} down for {}s or more, but not every live member speaks node protocol {ABSENT_MEMBERS}: not re-replicated",
                due.join(", "),
                after.as_secs()
            ));
        }
        let mut marked = Vec::new();
        for n in due {
            match self.cp.mark_absent(&n).await {
                Ok(()) => {
                    tracing::warn!(node = %n, secs = after.as_secs(), "node down too long: marked absent, its data is re-created on the others");
                    down_since.remove(&n);
                    marked.push(n);
                }
                Err(e) => {
                    return Err(ironbucket_store::Error::Unavailable(format!(
                        "{n} is down for {}s or more but its data cannot be re-created elsewhere: {e}",
                        after.as_secs()
                    )));
                }
            }
        }
        Ok(format!(
            "marked absent (data re-created on the others): {}",
            marked.join(", ")
        ))
    }
}
