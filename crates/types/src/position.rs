//! Where an object sits on the placement ring: one stable 64-bit hash of (bucket, key) that
//! placement, the metadata's anti-entropy tree and every node agree on (XXH3, a specified hash,
//! so releases agree too).

use xxhash_rust::xxh3::Xxh3;

/// The ring position of (bucket, key).
pub fn position(bucket: &str, key: &str) -> u64 {
    let mut h = Xxh3::new();
    h.update(bucket.as_bytes());
    // The separator keeps ("ab", "c") and ("a", "bc") apart; bucket names never hold NUL.
    h.update(&[0]);
    h.update(key.as_bytes());
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: u64 = 2_844_282_694_852_255_252;

    #[test]
    fn pinned_and_separated() {
        // Placement of stored data depends on these values: they must never change.
        assert_eq!(position("b", "k"), position("b", "k"));
        assert_ne!(position("ab", "c"), position("a", "bc"));
        assert_eq!(position("photos", "2026/a.jpg"), PINNED);
    }
}
