//! The replica's side of a round's requests over the node RPC (ADR 0015), and the sweep of
//! committed values' records.

use super::{CasOp, CasReply, PullStaged};
use crate::ClusterStore;
use bytes::Bytes;
use futures::StreamExt;
use ironbucket_rpc::DataStream;
use ironbucket_store::*;
use std::time::Duration;

impl ClusterStore {
    /// Drops the records of values committed long ago (see `Acceptor::sweep`), once a minute.
    pub(crate) async fn cas_sweep_loop(
        me: std::sync::Weak<Self>,
        ctx: ironbucket_runtime::WorkerCtx,
    ) -> std::result::Result<(), String> {
        loop {
            let Some(s) = me.upgrade() else { return Ok(()) };
            ctx.busy();
            match s.cas.sweep().await {
                Ok(n) => ctx.progress(format!("{n} committed conditional writes' records dropped")),
                Err(e) => ctx.note_error(e.to_string()),
            }
            ctx.unit_done();
            drop(s);
            ctx.sleep(Duration::from_secs(60)).await;
        }
    }

    /// A replica's side of a round's small requests.
    pub(crate) async fn serve_cas(&self, op: CasOp) -> Result<CasReply> {
        match op {
            CasOp::Prepare {
                bucket,
                key,
                ballot,
                read,
            } => self
                .cas
                .prepare(&self.local, &bucket, &key, ballot, read)
                .await
                .map(|p| CasReply::Promise(Box::new(p))),
            CasOp::AcceptRef {
                bucket,
                key,
                ballot,
                value,
            } => self
                .cas
                .accept_ref(&bucket, &key, ballot, value)
                .await
                .map(CasReply::Accept),
            CasOp::Commit { bucket, key, value } => self
                .cas
                .commit(&self.local, &bucket, &key, value)
                .await
                .map(CasReply::Commit),
            CasOp::Release { bucket, key, ballot } => {
                self.cas.release(&bucket, &key, ballot);
                Ok(CasReply::Released)
            }
        }
    }

    /// A replica's side of `cas.pull`: the answer, then the staged body.
    pub(crate) async fn serve_cas_pull(&self, p: PullStaged) -> DataStream {
        let encode = |r: Result<()>| Bytes::from(serde_json::to_vec(&r).unwrap_or_default());
        match self.cas.pull(&p.bucket, &p.key, p.value).await {
            Ok(body) => Box::pin(
                futures::stream::once(async move { Ok(encode(Ok(()))) })
                    .chain(body.map(|r| r.map_err(|e| e.to_string()))),
            ),
            Err(e) => Box::pin(futures::stream::once(async move { Ok(encode(Err(e))) })),
        }
    }
}
