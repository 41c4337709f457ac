//! HTTP byte ranges (`bytes=a-b`, `a-`, `-n`) resolved against an object size.

/// A requested range, before the object size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RangeSpec {
    /// `bytes=first-last` (inclusive) or `bytes=first-` when `last` is `None`.
    FromTo { first: u64, last: Option<u64> },
    /// `bytes=-length`: the final `length` bytes.
    Suffix { length: u64 },
}

/// A satisfiable range: `start..end` (end exclusive) within an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// `Content-Range` header value for this range of an object of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end.saturating_sub(1), size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the requested range is not satisfiable")]
    NotSatisfiable,
}

impl RangeSpec {
    /// Resolves the range against an object of `size` bytes, following RFC 9110: a last byte
    /// past the end is clamped; a first byte at or past the end is unsatisfiable.
    pub fn resolve(self, size: u64) -> Result<ByteRange, RangeError> {
        match self {
            RangeSpec::FromTo { first, last } => {
                if first >= size {
                    return Err(RangeError::NotSatisfiable);
                }
                let end = match last {
                    Some(l) if l < first => return Err(RangeError::NotSatisfiable),
                    Some(l) => l.saturating_add(1).min(size),
                    None => size,
                };
                Ok(ByteRange { start: first, end })
            }
            RangeSpec::Suffix { length } => {
                if length == 0 || size == 0 {
                    return Err(RangeError::NotSatisfiable);
                }
                Ok(ByteRange {
                    start: size.saturating_sub(length),
                    end: size,
                })
            }
        }
    }

    /// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` (a single range).
    pub fn parse(header: &str) -> Option<RangeSpec> {
        let spec = header.trim().strip_prefix("bytes=")?;
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(RangeSpec::Suffix {
                length: b.parse().ok()?,
            });
        }
        let first = a.parse().ok()?;
        let last = if b.is_empty() { None } else { Some(b.parse().ok()?) };
        Some(RangeSpec::FromTo { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_forms() {
        let r = |s: &str, n| RangeSpec::parse(s).map(|x| x.resolve(n));
        assert_eq!(r("bytes=0-9", 100), Some(Ok(ByteRange { start: 0, end: 10 })));
        assert_eq!(r("bytes=90-200", 100), Some(Ok(ByteRange { start: 90, end: 100 })));
        assert_eq!(r("bytes=10-", 100), Some(Ok(ByteRange { start: 10, end: 100 })));
        assert_eq!(r("bytes=-10", 100), Some(Ok(ByteRange { start: 90, end: 100 })));
        assert_eq!(r("bytes=-500", 100), Some(Ok(ByteRange { start: 0, end: 100 })));
        assert_eq!(r("bytes=100-", 100), Some(Err(RangeError::NotSatisfiable)));
        assert_eq!(r("bytes=5-4", 100), Some(Err(RangeError::NotSatisfiable)));
        assert_eq!(r("bytes=-0", 100), Some(Err(RangeError::NotSatisfiable)));
        assert_eq!(r("bytes=0-0", 0), Some(Err(RangeError::NotSatisfiable)));
        assert_eq!(r("items=0-1", 100), None);
        assert_eq!(r("bytes=a-b", 100), None);
        assert_eq!(ByteRange { start: 0, end: 10 }.content_range(100), "bytes 0-9/100");
    }
}
