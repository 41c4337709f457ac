//! What is left of a request's body when its answer is ready: read and thrown away before the
//! answer goes out, so the connection stays usable.
//!
//! A request refused before its body is read (a signature that does not match, a write whose
//! consistency level cannot be met, a rate limit) leaves the client still sending. hyper then
//! reads what has already arrived and, if the body is not all there, closes the connection after
//! the answer. A client talking to this node directly sees a reset; one behind a proxy that keeps
//! its client-side connection open (HAProxy) can have the rest of that body parsed as its next
//! request, which fails as a malformed request (400, not retried). Seen in the rolling-upgrade
//! test: a PUT refused with 503 before its body was read, the SDK's retry on the same proxied
//! connection answered `<BADREQ>`.
//!
//! So the body is wrapped ([`Tracked`]); when the handler drops it unfinished, the rest comes
//! back through a [`Leftover`], and [`Leftover::settle`] reads it to its end, up to
//! [`DRAIN_MAX_BYTES`] within [`DRAIN_MAX_TIME`], before the answer is sent. A client that sent
//! `Expect: 100-continue` is asked for its body too (`100 Continue`, then the refusal): one
//! that skips the body on an early answer without closing its connection would otherwise leave
//! a proxy waiting for the body, and take its next request for it. A longer rest or a client
//! that stops sending is not waited for: the answer says `Connection: close`.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// The most of an unread body read (and thrown away) before an answer.
pub(crate) const DRAIN_MAX_BYTES: u64 = 8 << 20;
/// The longest an answer waits for the rest of a body.
pub(crate) const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// A request body that hands back what is left of it when dropped unfinished.
pub(crate) struct Tracked {
    inner: Option<Incoming>,
    back: Leftover,
}

/// Where a [`Tracked`] body's unread rest ends up.
#[derive(Clone, Default)]
pub(crate) struct Leftover(Arc<Mutex<Option<Rest>>>);

struct Rest {
    body: Incoming,
}

/// What [`Leftover::settle`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Nothing was left, or the rest was read to its end: the connection can be used again.
    Clean,
    /// The rest was not read: the answer must close the connection.
    Close,
}

impl Tracked {
    pub(crate) fn new(body: Incoming) -> (Self, Leftover) {
        let back = Leftover::default();
        let t = Self {
            inner: Some(body),
            back: back.clone(),
        };
        (t, back)
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(Body::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take()
            && !body.is_end_stream()
        {
            let mut slot = self.back.0.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(Rest { body });
        }
    }
}

impl Leftover {
    /// Reads what is left of the body (if its handler dropped it unfinished) to its end, within
    /// the limits; says whether the connection can carry another request.
    pub(crate) async fn settle(&self) -> Settled {
        let rest = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(Rest { mut body }) = rest else {
            return Settled::Clean;
        };
        if body.size_hint().lower() > DRAIN_MAX_BYTES {
            return Settled::Close;
        }
        let drain = async {
            let mut read: u64 = 0;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return Settled::Close };
                if let Some(d) = frame.data_ref() {
                    read += d.len() as u64;
                    if read > DRAIN_MAX_BYTES {
                        return Settled::Close;
                    }
                }
            }
            Settled::Clean
        };
        tokio::time::timeout(DRAIN_MAX_TIME, drain)
            .await
            .unwrap_or(Settled::Close)
    }
}
