//! Conversions between `s3s` DTOs and store types, and the one place where store errors
//! become S3 error codes.

use ironbucket_store::{ChecksumAlgorithm, Checksums, ContentHeaders, Error, Tag};
use s3s::dto::{ETag, ETagCondition, Timestamp, TimestampFormat};
use s3s::{S3Error, S3ErrorCode};
use std::time::{Duration, UNIX_EPOCH};

/// Maps a store error to the S3 error code and status clients expect.
pub fn s3_err(e: Error) -> S3Error {
    use S3ErrorCode as C;
    let msg = e.to_string();
    let (code, extra_header) = match &e {
        Error::NoSuchBucket => (C::NoSuchBucket, None),
        Error::BucketAlreadyOwnedByYou => (C::BucketAlreadyOwnedByYou, None),
        Error::BucketNotEmpty => (C::BucketNotEmpty, None),
        Error::InvalidBucketName(_) => (C::InvalidBucketName, None),
        Error::NoSuchKey => (C::NoSuchKey, None),
        Error::NoSuchVersion => (C::NoSuchVersion, None),
        Error::DeleteMarker { .. } => (C::MethodNotAllowed, None),
        Error::KeyTooLong(_) => (C::KeyTooLongError, None),
        Error::InvalidKey(_) => (C::InvalidArgument, None),
        Error::InvalidRange { size } => (C::InvalidRange, Some(format!("bytes */{size}"))),
        Error::NotModified => (C::NotModified, None),
        Error::PreconditionFailed => (C::PreconditionFailed, None),
        Error::ConditionalRequestConflict(_) => (C::Custom("ConditionalRequestConflict".into()), None),
        Error::BadDigest | Error::ChecksumMismatch(_) => (C::BadDigest, None),
        Error::InvalidDigest => (C::InvalidDigest, None),
        Error::IncompleteBody(_) => (C::IncompleteBody, None),
        Error::EntityTooLarge => (C::EntityTooLarge, None),
        Error::BodySignatureMismatch => (C::SignatureDoesNotMatch, None),
        Error::NoSuchUpload => (C::NoSuchUpload, None),
        Error::InvalidPart(_) => (C::InvalidPart, None),
        Error::InvalidPartOrder => (C::InvalidPartOrder, None),
        Error::EntityTooSmall { .. } => (C::EntityTooSmall, None),
        Error::NoSuchTagSet => (C::NoSuchTagSet, None),
        Error::NoSuchCorsConfiguration => (C::NoSuchCORSConfiguration, None),
        Error::NoSuchLifecycleConfiguration => (C::NoSuchLifecycleConfiguration, None),
        Error::AccessDenied(_) => (C::AccessDenied, None),
        Error::QuotaExceeded(_) => (C::Custom("QuotaExceeded".into()), None),
        Error::NoSuchAccessKey(_) => (C::InvalidAccessKeyId, None),
        Error::InvalidBucketState(_) => (C::InvalidBucketState, None),
        Error::ObjectLockNotEnabled => (C::ObjectLockConfigurationNotFoundError, None),
        Error::NoSuchObjectLockConfiguration => (C::NoSuchObjectLockConfiguration, None),
        Error::InvalidTag(_) => (C::InvalidTag, None),
        Error::InvalidArgument(_) => (C::InvalidArgument, None),
        Error::InvalidRequest(_) => (C::InvalidRequest, None),
        Error::Unavailable(_) => (C::ServiceUnavailable, None),
        Error::Corrupt(_) | Error::Internal(_) => {
            tracing::error!(error = %e, "internal error serving S3 request");
            (C::InternalError, None)
        }
    };
    let marker = match &e {
        Error::DeleteMarker { version_id } => Some(version_id.clone()),
        _ => None,
    };
    let quota = matches!(e, Error::QuotaExceeded(_));
    let conflict = matches!(e, Error::ConditionalRequestConflict(_));
    // What went wrong inside (paths, peers, database errors) is logged, never sent.
    let msg = if matches!(e, Error::Corrupt(_) | Error::Internal(_)) {
        "We encountered an internal error. Please try again.".to_string()
    } else {
        msg
    };
    let mut err = S3Error::with_message(code, msg);
    if quota {
        err.set_status_code(hyper::StatusCode::FORBIDDEN);
    }
    if conflict {
        err.set_status_code(hyper::StatusCode::CONFLICT);
    }
    if let Some(v) = marker {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-amz-delete-marker", hyper::header::HeaderValue::from_static("true"));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&v) {
            h.insert("x-amz-version-id", v);
        }
        err.set_headers(h);
    }
    if let Some(cr) = extra_header {
        let mut h = hyper::HeaderMap::new();
        if let Ok(v) = hyper::header::HeaderValue::from_str(&cr) {
            h.insert(hyper::header::CONTENT_RANGE, v);
            err.set_headers(h);
        }
    }
    err
}

pub fn ts(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

pub fn millis(t: &Timestamp) -> u64 {
    let odt: time::OffsetDateTime = t.clone().into();
    (odt.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

pub fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

pub fn cond_list(c: &ETagCondition) -> Vec<String> {
    match c {
        ETagCondition::Any => vec!["*".to_string()],
        ETagCondition::ETag(e) => vec![e.value().to_string()],
    }
}

pub fn http_date(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

pub fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

/// Content headers as sent with a PUT / CreateMultipartUpload / CopyObject(REPLACE).
pub fn content_headers(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    content_disposition: Option<String>,
    cache_control: Option<String>,
    expires: Option<&Timestamp>,
) -> ContentHeaders {
    ContentHeaders {
        content_type,
        content_encoding,
        content_language,
        content_disposition,
        cache_control,
        expires: expires.and_then(http_date),
    }
}

/// Parses the `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded).
pub fn parse_tagging_header(s: &str) -> Result<Vec<Tag>, S3Error> {
    let mut out = Vec::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |x: &str| -> Result<String, S3Error> {
            percent_encoding::percent_decode_str(&x.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        "x-amz-tagging is not valid URL-encoded UTF-8",
                    )
                })
        };
        out.push(Tag {
            key: dec(k)?,
            value: dec(v)?,
        });
    }
    Ok(out)
}

pub fn tags_from_dto(set: Vec<s3s::dto::Tag>) -> Vec<Tag> {
    set.into_iter()
        .map(|t| Tag {
            key: t.key.unwrap_or_default(),
            value: t.value.unwrap_or_default(),
        })
        .collect()
}

pub fn tags_to_dto(tags: Vec<Tag>) -> Vec<s3s::dto::Tag> {
    tags.into_iter()
        .map(|t| s3s::dto::Tag {
            key: Some(t.key),
            value: Some(t.value),
        })
        .collect()
}

pub fn algorithm(a: &s3s::dto::ChecksumAlgorithm) -> Result<ChecksumAlgorithm, S3Error> {
    ChecksumAlgorithm::parse(a.as_str()).ok_or_else(|| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("unsupported checksum algorithm {}", a.as_str()),
        )
    })
}

pub fn algorithm_dto(a: ChecksumAlgorithm) -> s3s::dto::ChecksumAlgorithm {
    s3s::dto::ChecksumAlgorithm::from(a.as_str().to_string())
}

/// `x-amz-checksum-*` values sent as headers.
pub fn header_checksums(
    crc32: Option<String>,
    crc32c: Option<String>,
    sha1: Option<String>,
    sha256: Option<String>,
) -> Checksums {
    Checksums {
        crc32,
        crc32c,
        sha1,
        sha256,
    }
}

/// Checksum values found in a streaming trailer.
pub fn trailer_checksums(h: &hyper::HeaderMap) -> Checksums {
    let mut c = Checksums::default();
    for a in ChecksumAlgorithm::ALL {
        if let Some(v) = h.get(a.header()).and_then(|v| v.to_str().ok()) {
            c.set(a, Some(v.trim().to_string()));
        }
    }
    c
}

/// Algorithms announced in `x-amz-trailer`.
pub fn declared_trailer(h: &hyper::HeaderMap) -> Vec<ChecksumAlgorithm> {
    let mut out = Vec::new();
    for v in h.get_all("x-amz-trailer") {
        if let Ok(s) = v.to_str() {
            for name in s.split(',') {
                let name = name.trim().to_ascii_lowercase();
                if let Some(a) = ChecksumAlgorithm::ALL.into_iter().find(|a| a.header() == name) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// Percent-encodes a key for `encoding-type=url` listings (everything but unreserved and '/').
pub fn url_encode(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_header() {
        let t = parse_tagging_header("a=1&b%20c=d+e&empty=").unwrap();
        assert_eq!(
            t[1],
            Tag {
                key: "b c".into(),
                value: "d e".into()
            }
        );
        assert_eq!(t[2].value, "");
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c+d%é"), "a%20b/c%2Bd%25%C3%A9");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = ts(1_700_000_000_123);
        assert_eq!(millis(&t), 1_700_000_000_123);
        let d = http_date(&ts(1_700_000_000_000)).unwrap();
        assert_eq!(millis(&parse_http_date(&d).unwrap()), 1_700_000_000_000);
    }

    #[test]
    fn errors_map_to_codes() {
        let e = s3_err(Error::InvalidRange { size: 5 });
        assert_eq!(e.code(), &S3ErrorCode::InvalidRange);
        assert_eq!(s3_err(Error::NoSuchKey).code(), &S3ErrorCode::NoSuchKey);
        assert_eq!(
            s3_err(Error::ChecksumMismatch(ChecksumAlgorithm::Crc32)).code(),
            &S3ErrorCode::BadDigest
        );
        assert_eq!(s3_err(Error::KeyTooLong(2000)).code(), &S3ErrorCode::KeyTooLongError);
    }

    /// Security review finding (low): internal error text (paths, database errors) reached
    /// clients. They get InternalError with a fixed message; the detail goes to the log.
    #[test]
    fn internal_errors_do_not_leak_their_detail() {
        for e in [
            Error::Internal("redb: cannot open /var/lib/ironbucket/data/meta.redb".into()),
            Error::Corrupt("blob /var/lib/ironbucket/data/blobs/ab/cd: bad chunk".into()),
        ] {
            let s = s3_err(e);
            assert_eq!(s.code(), &S3ErrorCode::InternalError);
            let msg = s.message().unwrap_or_default();
            assert!(!msg.contains("/var/lib") && !msg.contains("redb"), "{msg}");
        }
    }
}
