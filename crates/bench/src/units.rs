//! Parsing of sizes (`4KiB`, `1MiB`, `1KiB..1MiB`) and durations (`30s`, `2m`, `500ms`).

use anyhow::{Result, bail};
use std::time::Duration;

pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {s:?}: expected e.g. 4KiB, 1MiB, 1048576"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => bail!("invalid size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    Ok((n * mult as f64).round() as u64)
}

/// A fixed size or an inclusive range `a..b`, sampled log-uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SizeSpec {
    pub min: u64,
    pub max: u64,
}

impl SizeSpec {
    pub fn parse(s: &str) -> Result<Self> {
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (parse_size(a)?, parse_size(b)?);
                if min > max {
                    bail!("size range {s:?} is empty: {min} > {max}");
                }
                Ok(Self { min, max })
            }
            None => {
                let n = parse_size(s)?;
                Ok(Self { min: n, max: n })
            }
        }
    }

    pub fn sample(&self, rng: &mut impl rand::Rng) -> u64 {
        if self.min == self.max {
            return self.min;
        }
        let lo = (self.min.max(1) as f64).ln();
        let hi = (self.max as f64).ln();
        (rng.gen_range(lo..=hi).exp().round() as u64).clamp(self.min, self.max)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid duration {s:?}: expected e.g. 30s, 2m, 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => bail!("invalid duration unit {other:?} in {s:?} (use ms, s, m, h)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn human_bytes(n: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("1.5KB").unwrap(), 1500);
        assert_eq!(parse_size("17").unwrap(), 17);
        assert!(parse_size("4XB").is_err());
        assert_eq!(
            SizeSpec::parse("1KiB..1MiB").unwrap(),
            SizeSpec {
                min: 1024,
                max: 1 << 20
            }
        );
        assert!(SizeSpec::parse("2MiB..1MiB").is_err());
        let s = SizeSpec::parse("1KiB..1MiB").unwrap();
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let v = s.sample(&mut rng);
            assert!((1024..=1 << 20).contains(&v));
        }
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("3 weeks").is_err());
    }
}
