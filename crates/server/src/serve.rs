//! Accept loop with TCP_NODELAY, connection caps (in total and per client address), a deadline
//! for a request's headers (which also closes idle keep-alive connections) and graceful
//! shutdown: on the signal, stop accepting and give in-flight requests until the deadline to
//! finish. A connection over a cap gets `503` with `Retry-After` and is closed.

use crate::config_security::ConnLimits;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts open connections in total and per client address.
struct Gate {
    limits: ConnLimits,
    total: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; dropping it frees its places.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Gate {
    fn new(limits: ConnLimits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.max_total)),
            limits,
            per_ip: Default::default(),
        }
    }

    /// Admits a connection from `ip`, or says which cap it is over.
    fn admit(&self, ip: IpAddr) -> Result<Admitted, &'static str> {
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "the node's connection limit")?;
        let capped = self.limits.max_per_ip > 0 && !self.limits.exempt.iter().any(|n| n.contains(&ip));
        if !capped {
            return Ok(Admitted {
                _permit: permit,
                ip: None,
                per_ip: self.per_ip.clone(),
            });
        }
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_ip {
            return Err("the connection limit per client address");
        }
        *n += 1;
        Ok(Admitted {
            _permit: permit,
            ip: Some(ip),
            per_ip: self.per_ip.clone(),
        })
    }
}

/// Answers a connection over a cap with 503 and closes it. The request head is read first (for
/// at most a second) so that an HTTP client sees an answer to its request and can retry.
async fn refuse(mut sock: tokio::net::TcpStream, why: &'static str) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Too many connections: over {why}. Please reduce your request rate.</Message></Error>"
    );
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), sock.write_all(resp.as_bytes())).await;
    let _ = sock.shutdown().await;
}

/// `make` builds the service for one connection from the peer's address and whether the
/// connection is TLS; with `tls`, every connection must complete a TLS handshake (within the
/// header deadline) before its requests are read.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    make: F,
    mut stop: broadcast::Receiver<()>,
    deadline: Duration,
    name: &'static str,
    limits: ConnLimits,
    tls: Option<Arc<crate::api_tls::ApiTls>>,
) where
    F: Fn(std::net::SocketAddr, bool) -> S + Send + 'static,
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<B>>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's default read buffer limit (~400 KiB) keeps per-connection memory small.
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let handshake_timeout = limits.header_timeout;
    let gate = Gate::new(limits);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.recv() => break,
        };
        let _ = sock.set_nodelay(true);
        let admitted = match gate.admit(peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(listener = name, %peer, why, "connection refused");
                tokio::spawn(refuse(sock, why));
                continue;
            }
        };
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(sock), make(peer, false));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _admitted = admitted;
                    if let Err(e) = conn.await {
                        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(t) => {
                let acceptor = t.acceptor();
                let svc = make(peer, true);
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(deadline) => {
            tracing::warn!(listener = name, "shutdown deadline reached; dropping remaining connections");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_total() {
        let limits = ConnLimits {
            max_total: 3,
            max_per_ip: 2,
            header_timeout: Duration::from_secs(1),
            exempt: vec!["10.0.0.1/32".parse().unwrap()],
        };
        let g = Gate::new(limits);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let (x, y) = (g.admit(a).unwrap(), g.admit(a).unwrap());
        assert!(g.admit(a).is_err(), "third from one address");
        drop(x);
        let x = g.admit(a).unwrap();
        let lb: IpAddr = "10.0.0.1".parse().unwrap();
        let z = g.admit(lb).unwrap();
        assert_eq!(g.admit(lb).err(), Some("the node's connection limit"));
        drop((x, y, z));
        assert!(g.per_ip.lock().unwrap().is_empty());
    }
}
