//! Conditional request headers (RFC 9110 section 13) evaluated against an object's ETag and
//! modification time, in the precedence S3 uses.

use crate::UnixMillis;

/// If-Match / If-None-Match / If-(Un)Modified-Since as sent by the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conditions {
    /// ETags (unquoted) or `*`.
    pub if_match: Option<Vec<String>>,
    pub if_none_match: Option<Vec<String>>,
    /// Seconds precision, as HTTP dates carry.
    pub if_modified_since: Option<UnixMillis>,
    pub if_unmodified_since: Option<UnixMillis>,
}

/// How a conditional request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConditionFailure {
    /// 304 Not Modified (GET/HEAD only).
    #[error("not modified")]
    NotModified,
    /// 412 Precondition Failed.
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
}

fn etag_matches(list: &[String], etag: &str) -> bool {
    list.iter().any(|e| {
        let e = e.trim().trim_start_matches("W/").trim_matches('"');
        e == "*" || e == etag
    })
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// Evaluates the conditions for a read (GET/HEAD). `last_modified` is compared at one
    /// second precision, like the HTTP dates the client sends.
    pub fn check_read(&self, etag: &str, last_modified: UnixMillis) -> Result<(), ConditionFailure> {
        let lm = last_modified / 1000;
        if let Some(m) = &self.if_match {
            if !etag_matches(m, etag) {
                return Err(ConditionFailure::PreconditionFailed);
            }
        } else if let Some(t) = self.if_unmodified_since
            && lm > t / 1000
        {
            return Err(ConditionFailure::PreconditionFailed);
        }
        if let Some(m) = &self.if_none_match {
            if etag_matches(m, etag) {
                return Err(ConditionFailure::NotModified);
            }
        } else if let Some(t) = self.if_modified_since
            && lm <= t / 1000
        {
            return Err(ConditionFailure::NotModified);
        }
        Ok(())
    }

    /// Evaluates copy-source conditions: like a read, but every failure is a 412.
    pub fn check_copy_source(&self, etag: &str, last_modified: UnixMillis) -> Result<(), ConditionFailure> {
        self.check_read(etag, last_modified)
            .map_err(|_| ConditionFailure::PreconditionFailed)
    }

    /// Evaluates conditions for a write (PUT/Complete with If-Match / If-None-Match) against
    /// the current object, if any.
    pub fn check_write(&self, current_etag: Option<&str>) -> Result<(), ConditionFailure> {
        if let Some(m) = &self.if_match {
            match current_etag {
                Some(e) if etag_matches(m, e) => {}
                _ => return Err(ConditionFailure::PreconditionFailed),
            }
        }
        if let Some(m) = &self.if_none_match
            && let Some(e) = current_etag
            && etag_matches(m, e)
        {
            return Err(ConditionFailure::PreconditionFailed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Conditions {
        Conditions::default()
    }

    #[test]
    fn read_conditions() {
        let lm = 10_000_500; // 10000.5 s
        assert_eq!(c().check_read("e", lm), Ok(()));
        let m = Conditions {
            if_match: Some(vec!["\"e\"".into()]),
            ..c()
        };
        assert_eq!(m.check_read("e", lm), Ok(()));
        assert_eq!(m.check_read("x", lm), Err(ConditionFailure::PreconditionFailed));
        let nm = Conditions {
            if_none_match: Some(vec!["e".into()]),
            ..c()
        };
        assert_eq!(nm.check_read("e", lm), Err(ConditionFailure::NotModified));
        assert_eq!(nm.check_read("x", lm), Ok(()));
        let ims = Conditions {
            if_modified_since: Some(10_000_000),
            ..c()
        };
        assert_eq!(ims.check_read("e", lm), Err(ConditionFailure::NotModified));
        let ims = Conditions {
            if_modified_since: Some(9_999_000),
            ..c()
        };
        assert_eq!(ims.check_read("e", lm), Ok(()));
        let ius = Conditions {
            if_unmodified_since: Some(9_999_000),
            ..c()
        };
        assert_eq!(ius.check_read("e", lm), Err(ConditionFailure::PreconditionFailed));
        // If-Match takes precedence over If-Unmodified-Since.
        let both = Conditions {
            if_match: Some(vec!["e".into()]),
            if_unmodified_since: Some(0),
            ..c()
        };
        assert_eq!(both.check_read("e", lm), Ok(()));
        // If-None-Match takes precedence over If-Modified-Since.
        let both = Conditions {
            if_none_match: Some(vec!["x".into()]),
            if_modified_since: Some(u64::MAX / 2),
            ..c()
        };
        assert_eq!(both.check_read("e", lm), Ok(()));
        assert_eq!(nm.check_copy_source("e", lm), Err(ConditionFailure::PreconditionFailed));
    }

    #[test]
    fn write_conditions() {
        let star = Conditions {
            if_none_match: Some(vec!["*".into()]),
            ..c()
        };
        assert_eq!(star.check_write(None), Ok(()));
        assert_eq!(star.check_write(Some("e")), Err(ConditionFailure::PreconditionFailed));
        let m = Conditions {
            if_match: Some(vec!["e".into()]),
            ..c()
        };
        assert_eq!(m.check_write(Some("e")), Ok(()));
        assert_eq!(m.check_write(None), Err(ConditionFailure::PreconditionFailed));
    }
}
