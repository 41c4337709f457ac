//! Name resolution for peer addresses. Every new connection resolves the peer's `host:port`
//! afresh, so a peer whose name now points elsewhere (a container restarted with a new address)
//! is found again on the next connection. The system resolver is the default; tests substitute
//! their own table to move a peer without touching the machine's DNS.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ResolveFn = dyn Fn(String) -> BoxFut<io::Result<Vec<SocketAddr>>> + Send + Sync;

/// Turns `host:port` into socket addresses.
#[derive(Clone, Default)]
pub struct Resolver(Option<Arc<ResolveFn>>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Resolver(custom)"
        } else {
            "Resolver(system)"
        })
    }
}

impl Resolver {
    /// The operating system's resolver (DNS, /etc/hosts).
    pub fn system() -> Self {
        Self(None)
    }

    /// A resolver of the caller's own (tests).
    pub fn custom(f: impl Fn(String) -> BoxFut<io::Result<Vec<SocketAddr>>> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    pub async fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Ok(vec![a]);
        }
        let found: Vec<SocketAddr> = match &self.0 {
            Some(f) => f(addr.to_string()).await?,
            None => tokio::net::lookup_host(addr).await?.collect(),
        };
        if found.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} resolves to no address"),
            ));
        }
        Ok(found)
    }
}

/// tonic's connector: resolves with [`Resolver`] on every connection attempt and connects to the
/// first address that answers, with TCP_NODELAY set.
#[derive(Clone)]
pub(crate) struct Connector {
    pub resolver: Resolver,
    pub timeout: Duration,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = io::Error;
    type Future = BoxFut<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (resolver, timeout) = (self.resolver.clone(), self.timeout);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let port = uri.port_u16().unwrap_or(80);
            let addr = format!("{host}:{port}");
            let found = tokio::time::timeout(timeout, resolver.resolve(&addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("resolving {addr} timed out")))??;
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} resolves to no address"));
            // tonic bounds the whole connection by the same timeout: share it among addresses.
            let each = (timeout / found.len().max(1) as u32).max(std::time::Duration::from_millis(50));
            for a in found {
                match tokio::time::timeout(each, tokio::net::TcpStream::connect(a)).await {
                    Ok(Ok(s)) => {
                        s.set_nodelay(true)?;
                        return Ok(TokioIo::new(s));
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {a} timed out")),
                }
            }
            Err(last)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_addresses_skip_the_resolver_and_names_use_it() {
        let r = Resolver::custom(|name| {
            Box::pin(async move {
                match name.as_str() {
                    "node2.test:7001" => Ok(vec!["10.0.0.2:7001".parse().unwrap()]),
                    _ => Ok(vec![]),
                }
            })
        });
        assert_eq!(
            r.resolve("127.0.0.1:9").await.unwrap(),
            vec!["127.0.0.1:9".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("node2.test:7001").await.unwrap(),
            vec!["10.0.0.2:7001".parse().unwrap()]
        );
        let e = r.resolve("nobody.test:1").await.unwrap_err();
        assert!(e.to_string().contains("nobody.test:1"), "{e}");
        let sys = Resolver::system().resolve("localhost:80").await.unwrap();
        assert!(sys.iter().all(|a| a.ip().is_loopback()), "{sys:?}");
    }
}
