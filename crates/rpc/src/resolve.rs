//! Name resolution for peer addresses. Every new connection resolves the peer's `host:port`
//! afresh, so a peer whose name now points elsewhere (a container restarted with a new address)
//! is found again on the next connection. The system resolver is the default; tests substitute
//! their own table to move a peer without touching the machine's DNS.
//!
//! A resolver may also carry *routes* (testing only, `--fault-routes`): a table that sends this
//! node's traffic for one peer address to another, e.g. a fault-injecting proxy in front of that
//! peer, so a test can delay, drop or cut the traffic between two chosen nodes without root.

use hyper_util::rt::TokioIo;
use std::collections::HashMap;
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
pub struct Resolver {
    custom: Option<Arc<ResolveFn>>,
    routes: Option<Arc<HashMap<SocketAddr, SocketAddr>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.custom.is_some() {
            "Resolver(custom)"
        } else {
            "Resolver(system)"
        })?;
        if let Some(r) = &self.routes {
            write!(f, " with {} route(s)", r.len())?;
        }
        Ok(())
    }
}

impl Resolver {
    /// The operating system's resolver (DNS, /etc/hosts).
    pub fn system() -> Self {
        Self::default()
    }

    /// A resolver of the caller's own (tests).
    pub fn custom(f: impl Fn(String) -> BoxFut<io::Result<Vec<SocketAddr>>> + Send + Sync + 'static) -> Self {
        Self {
            custom: Some(Arc::new(f)),
            routes: None,
        }
    }

    /// Sends traffic for each resolved address of the table to its route instead (testing
    /// only: a fault-injecting proxy per peer).
    pub fn with_routes(mut self, routes: HashMap<SocketAddr, SocketAddr>) -> Self {
        self.routes = (!routes.is_empty()).then(|| Arc::new(routes));
        self
    }

    /// Where traffic for `addr` goes: its route, or `addr` itself.
    pub fn route(&self, addr: SocketAddr) -> SocketAddr {
        self.routes.as_ref().and_then(|r| r.get(&addr).copied()).unwrap_or(addr)
    }

    pub async fn resolve(&self, addr: &str) -> io::Result<Vec<SocketAddr>> {
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Ok(vec![self.route(a)]);
        }
        let found: Vec<SocketAddr> = match &self.custom {
            Some(f) => f(addr.to_string()).await?,
            None => tokio::net::lookup_host(addr).await?.collect(),
        };
        if found.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} resolves to no address"),
            ));
        }
        Ok(found.into_iter().map(|a| self.route(a)).collect())
    }
}

/// Reads a routes file (`--fault-routes`): one `FROM TO` pair of socket addresses per line;
/// blank lines and `#` comments are skipped. Errors name the line.
pub fn parse_routes(text: &str) -> Result<HashMap<SocketAddr, SocketAddr>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(from), Some(to), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: {line:?} is not `FROM TO`", n + 1));
        };
        let parse = |s: &str| {
            s.parse::<SocketAddr>()
                .map_err(|_| format!("line {}: {s:?} is not an address like 127.0.0.1:7000", n + 1))
        };
        out.insert(parse(from)?, parse(to)?);
    }
    Ok(out)
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

    #[tokio::test]
    async fn routes_send_an_address_elsewhere_and_bad_tables_are_named() {
        let routes =
            parse_routes("# proxies\n127.0.0.1:7001 127.0.0.1:9001\n\n10.0.0.2:7001  127.0.0.1:9002 # node 2\n")
                .unwrap();
        let r =
            Resolver::custom(|_| Box::pin(async { Ok(vec!["10.0.0.2:7001".parse().unwrap()]) })).with_routes(routes);
        assert_eq!(
            r.resolve("127.0.0.1:7001").await.unwrap(),
            vec!["127.0.0.1:9001".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("node2.test:7001").await.unwrap(),
            vec!["127.0.0.1:9002".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("127.0.0.1:7003").await.unwrap(),
            vec!["127.0.0.1:7003".parse().unwrap()]
        );
        assert_eq!(
            r.route("127.0.0.1:7001".parse().unwrap()),
            "127.0.0.1:9001".parse().unwrap()
        );
        let e = parse_routes("127.0.0.1:1 127.0.0.1:2\n127.0.0.1:3\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = parse_routes("127.0.0.1:1 nowhere\n").unwrap_err();
        assert!(e.contains("\"nowhere\""), "{e}");
    }
}
