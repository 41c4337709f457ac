//! S3 bucket naming rules and object key limits.

/// Why a bucket name or object key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("bucket name must be between 3 and 63 characters long")]
    BucketLength,
    #[error("bucket name may contain only lowercase letters, digits, dots and hyphens")]
    BucketCharacters,
    #[error("bucket name must begin and end with a letter or digit")]
    BucketEdges,
    #[error("bucket name must not contain two adjacent dots or a dot next to a hyphen")]
    BucketDots,
    #[error("bucket name must not be formatted as an IP address")]
    BucketIpAddress,
    #[error("bucket name uses a reserved prefix or suffix")]
    BucketReserved,
    #[error("object key must not be empty")]
    KeyEmpty,
    #[error("object key is {0} bytes long; the limit is 1024")]
    KeyTooLong(usize),
}

/// Maximum length of an object key in bytes (UTF-8).
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a bucket name against the S3 general-purpose bucket naming rules.
pub fn validate_bucket_name(name: &str) -> Result<(), NameError> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Err(NameError::BucketLength);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(NameError::BucketCharacters);
    }
    let bytes = name.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[len - 1]) {
        return Err(NameError::BucketEdges);
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(NameError::BucketDots);
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(NameError::BucketIpAddress);
    }
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 3] = ["-s3alias", "--ol-s3", ".mrap"];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Err(NameError::BucketReserved);
    }
    Ok(())
}

/// Checks an object key: any UTF-8 string of 1 to 1024 bytes.
pub fn validate_object_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::KeyEmpty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(NameError::KeyTooLong(key.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "my.bucket.2", "a1b", &"a".repeat(63)] {
            assert_eq!(validate_bucket_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_bucket_name("ab"), Err(NameError::BucketLength));
        assert_eq!(validate_bucket_name(&"a".repeat(64)), Err(NameError::BucketLength));
        assert_eq!(validate_bucket_name("My-Bucket"), Err(NameError::BucketCharacters));
        assert_eq!(validate_bucket_name("my_bucket"), Err(NameError::BucketCharacters));
        assert_eq!(validate_bucket_name("-abc"), Err(NameError::BucketEdges));
        assert_eq!(validate_bucket_name("abc."), Err(NameError::BucketEdges));
        assert_eq!(validate_bucket_name("a..b"), Err(NameError::BucketDots));
        assert_eq!(validate_bucket_name("a.-b"), Err(NameError::BucketDots));
        assert_eq!(validate_bucket_name("192.168.5.4"), Err(NameError::BucketIpAddress));
        assert_eq!(validate_bucket_name("xn--abc"), Err(NameError::BucketReserved));
        assert_eq!(validate_bucket_name("abc-s3alias"), Err(NameError::BucketReserved));
    }

    #[test]
    fn keys() {
        assert_eq!(validate_object_key(""), Err(NameError::KeyEmpty));
        assert_eq!(validate_object_key(&"k".repeat(1024)), Ok(()));
        assert_eq!(validate_object_key(&"k".repeat(1025)), Err(NameError::KeyTooLong(1025)));
        // Multi-byte characters count in bytes, not chars.
        assert_eq!(validate_object_key(&"é".repeat(513)), Err(NameError::KeyTooLong(1026)));
        for odd in ["../x", "a//b", "%2F", ".", "/", "\u{1F600}"] {
            assert_eq!(validate_object_key(odd), Ok(()));
        }
    }
}
