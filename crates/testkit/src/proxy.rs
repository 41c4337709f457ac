//! A fault-injecting proxy for the traffic between two nodes, without root: one per ordered
//! pair of nodes, on one port for TCP (node RPC) and UDP (gossip), in front of the receiving
//! node. The sending node is told to use it instead of the peer's address (`--fault-routes`).
//! A [`Link`] says what happens to what passes: delay, loss, or a cut.
//!
//! TCP loss is what TCP makes of it: a lost segment is sent again after the retransmission
//! timeout, so a "lost" chunk arrives [`RTO`] late and holds back what follows it. A cut holds
//! every byte (open connections stall, new ones are accepted and stall, as SYNs and segments
//! into a partition go unanswered until it heals); UDP datagrams are dropped while cut or lost.

use rand::Rng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Linux's minimum retransmission timeout: what a lost TCP segment costs.
pub const RTO: Duration = Duration::from_millis(200);

/// What happens to the traffic through one proxy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Link {
    /// Added to every chunk and datagram, each way.
    pub delay: Duration,
    /// Share of chunks and datagrams lost (0.0 to 1.0).
    pub loss: f64,
    /// Nothing passes.
    pub cut: bool,
}

impl Link {
    pub const CLEAR: Link = Link {
        delay: Duration::ZERO,
        loss: 0.0,
        cut: false,
    };
    pub const CUT: Link = Link {
        delay: Duration::ZERO,
        loss: 0.0,
        cut: true,
    };

    pub fn slow(delay: Duration, loss: f64) -> Self {
        Link {
            delay,
            loss,
            cut: false,
        }
    }
}

/// One proxy: listening on [`FaultProxy::addr`] (TCP and UDP), forwarding to `target`.
pub struct FaultProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FaultProxy {
    /// Starts a proxy to `target` on a free port of 127.0.0.1.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let mut last = None;
        for _ in 0..20 {
            let port = crate::free_ports(1)[0];
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match (TcpListener::bind(addr).await, UdpSocket::bind(addr).await) {
                (Ok(tcp), Ok(udp)) => return Self::serve(tcp, udp, target),
                (Err(e), _) | (_, Err(e)) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    fn serve(tcp: TcpListener, udp: UdpSocket, target: SocketAddr) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (link, rx) = watch::channel(Link::CLEAR);
        let tcp_task = tokio::spawn(accept_loop(tcp, target, rx.clone()));
        let udp_task = tokio::spawn(udp_loop(Arc::new(udp), target, rx));
        Ok(Self {
            addr,
            link,
            tasks: vec![tcp_task, udp_task],
        })
    }

    /// Where the sending node must send its traffic.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what happens to the traffic from now on (open connections included).
    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, link: watch::Receiver<Link>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let link = link.clone();
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            // A connection into a partition waits for it to heal.
            if wait_uncut(&mut link.clone()).await.is_err() {
                return;
            }
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let up = pump(ri, wo, link.clone());
            let down = pump(ro, wi, link);
            let _ = tokio::join!(up, down);
        });
    }
}

/// Waits until the link is not cut; `Err` when the proxy is gone.
async fn wait_uncut(link: &mut watch::Receiver<Link>) -> Result<(), watch::error::RecvError> {
    link.wait_for(|l| !l.cut).await.map(|_| ())
}

/// Copies one direction: a reader stamps each chunk with when it may be delivered (after the
/// delay, or a retransmission timeout later when "lost", never before the chunk ahead of it), a
/// writer delivers in order, holding everything while the link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: watch::Receiver<Link>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader_link = link.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let l = *reader_link.borrow();
            let lost = l.loss > 0.0 && rand::thread_rng().gen_bool(l.loss.min(1.0));
            let at = (Instant::now() + l.delay + if lost { RTO } else { Duration::ZERO }).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        let mut link = link;
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if wait_uncut(&mut link).await.is_err() || to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

async fn udp_loop(socket: Arc<UdpSocket>, target: SocketAddr, link: watch::Receiver<Link>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let l = *link.borrow();
        if l.cut || (l.loss > 0.0 && rand::thread_rng().gen_bool(l.loss.min(1.0))) {
            continue;
        }
        let packet = buf[..n].to_vec();
        if l.delay.is_zero() {
            let _ = socket.send_to(&packet, target).await;
        } else {
            let socket = socket.clone();
            tokio::spawn(async move {
                tokio::time::sleep(l.delay).await;
                let _ = socket.send_to(&packet, target).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream) -> Duration {
        let t = Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        t.elapsed()
    }

    #[tokio::test]
    async fn traffic_passes_is_delayed_and_is_held_while_cut() {
        let p = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        assert!(round_trip(&mut s).await < Duration::from_millis(100));
        p.set(Link::slow(Duration::from_millis(100), 0.0));
        let rtt = round_trip(&mut s).await;
        assert!(rtt >= Duration::from_millis(200), "two ways of 100 ms: {rtt:?}");
        p.set(Link::CUT);
        let held = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut s)).await;
        assert!(held.is_err(), "nothing passes a cut");
        // New connections stall too, and everything flows again when the cut heals.
        let mut fresh = TcpStream::connect(p.addr()).await.unwrap();
        fresh.write_all(b"ping").await.unwrap();
        p.set(Link::CLEAR);
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), fresh.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"ping");
    }

    #[tokio::test]
    async fn datagrams_pass_unless_cut() {
        let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let p = FaultProxy::start(target.local_addr().unwrap()).await.unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sender.send_to(b"one", p.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), target.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"one");
        p.set(Link::CUT);
        sender.send_to(b"two", p.addr()).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), target.recv(&mut buf))
                .await
                .is_err()
        );
        p.set(Link::CLEAR);
        sender.send_to(b"three", p.addr()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), target.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"three");
    }
}
