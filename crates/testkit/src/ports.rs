//! Ports for test nodes that no other test process, listener or outgoing connection takes.

use std::time::Duration;

/// `n` ports on 127.0.0.1 that were free for TCP and UDP a moment ago and that no other test
/// process holds: taken below the kernel's ephemeral range, so neither a listener on port 0 nor
/// the source port of an outgoing connection can take one while a node is down between a kill
/// and a restart, and reserved across processes with a file in the temp directory (a
/// reservation older than [`RESERVATION_LIFE`] is stale and taken over).
pub fn free_ports(n: usize) -> Vec<u16> {
    let (low, high) = unprivileged_below_ephemeral();
    let span = u64::from(high - low);
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        // xorshift: a different walk in every process.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let p = low + u16::try_from(seed % span).unwrap_or(0);
        if !ports.contains(&p) && reserve(p) && bindable(p) {
            ports.push(p);
        }
    }
    assert_eq!(ports.len(), n, "no {n} free ports in {low}..{high}");
    ports
}

/// How long a port stays reserved for the test process that took it.
pub const RESERVATION_LIFE: Duration = Duration::from_secs(30 * 60);

/// Ports from 10,000 up to the start of the ephemeral range (Linux: `ip_local_port_range`).
fn unprivileged_below_ephemeral() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u16>().ok()))
        .unwrap_or(32768);
    if start > 12_000 {
        (10_000, start)
    } else {
        (start, start.saturating_add(10_000))
    }
}

fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("ironbucket-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let file = dir.join(port.to_string());
    let take = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .is_ok()
    };
    if take() {
        return true;
    }
    let stale = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > RESERVATION_LIFE);
    // Two processes may both find it stale; only one of them wins the new file.
    stale && std::fs::remove_file(&file).is_ok() && take()
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let a = free_ports(4);
        let b = free_ports(4);
        let (low, high) = unprivileged_below_ephemeral();
        for p in a.iter().chain(&b) {
            assert!((low..high).contains(p), "{p} outside {low}..{high}");
            assert!(std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        }
        let mut all: Vec<_> = a.iter().chain(&b).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8, "a port was handed out twice: {a:?} {b:?}");
    }
}
