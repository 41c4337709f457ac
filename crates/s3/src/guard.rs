//! Checks on a request's signature envelope made before `s3s` sees it, where AWS is stricter
//! than `s3s`: Signature Version 2 (refused unless enabled), the lifetime of a presigned URL
//! (at most 7 days) and `x-amz-*` headers that the signature does not cover (refused, so a
//! presigned URL cannot be replayed with an added `x-amz-acl` or `x-amz-copy-source`).
//!
//! Pure functions of the request head; the hyper service turns a [`Refusal`] into an S3 error.

use hyper::HeaderMap;

/// The longest lifetime AWS accepts for a SigV4 presigned URL (`X-Amz-Expires`), in seconds.
pub(crate) const MAX_PRESIGNED_SECS: u64 = 7 * 24 * 3600;

/// `x-amz-*` headers a client may send unsigned: the SDKs exclude their user-agent header from
/// the signature.
const UNSIGNED_ALLOWED: &[&str] = &["x-amz-user-agent"];

/// Why a request is refused before authentication.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Extra elements for the error document (name, text).
    pub(crate) extra: Option<(&'static str, String)>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
}

/// The value of query parameter `name` (not decoded: every parameter checked here is plain).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|p| match p.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if p == name => Some(""),
        _ => None,
    })
}

/// Checks the signature envelope of a request: `allow_v2` admits Signature Version 2.
pub(crate) fn check(headers: &HeaderMap, query: Option<&str>, allow_v2: bool) -> Result<(), Refusal> {
    let query = query.unwrap_or("");
    let auth = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let v2 = auth.is_some_and(|a| a.starts_with("AWS ")) || query_param(query, "AWSAccessKeyId").is_some();
    if v2 && !allow_v2 {
        return Err(Refusal::new(
            400,
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        ));
    }
    let signed = match auth {
        Some(a) if a.starts_with("AWS4-HMAC-SHA256") => a
            .split([',', ' '])
            .find_map(|p| p.trim().strip_prefix("SignedHeaders="))
            .unwrap_or(""),
        _ => match query_param(query, "X-Amz-SignedHeaders") {
            Some(s) => {
                if let Some(e) = query_param(query, "X-Amz-Expires") {
                    match e.parse::<u64>() {
                        Ok(n) if n <= MAX_PRESIGNED_SECS => {}
                        Ok(_) => {
                            return Err(Refusal::new(
                                400,
                                "AuthorizationQueryParametersError",
                                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
                            ));
                        }
                        Err(_) => {
                            return Err(Refusal::new(
                                400,
                                "AuthorizationQueryParametersError",
                                "X-Amz-Expires should be a number",
                            ));
                        }
                    }
                }
                s
            }
            None => return Ok(()),
        },
    };
    // SignedHeaders in a query string is percent-encoded (`host%3Bx-amz-acl`); split without
    // decoding (no allocation per request).
    let is_signed = |name: &str| {
        signed
            .split(';')
            .flat_map(|p| p.split("%3B"))
            .flat_map(|p| p.split("%3b"))
            .any(|s| s.eq_ignore_ascii_case(name))
    };
    let mut missing: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-amz-") && !UNSIGNED_ALLOWED.contains(k) && !is_signed(k))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    let mut r = Refusal::new(
        403,
        "AccessDenied",
        "There were headers present in the request which were not signed",
    );
    r.extra = Some(("HeadersNotSigned", missing.join(", ")));
    Err(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, hyper::header::HeaderValue::from_static(v));
        }
        h
    }

    const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00";

    #[test]
    fn signed_headers_pass_and_unsigned_amz_headers_are_refused() {
        let ok = headers(&[
            ("authorization", AUTH),
            ("x-amz-date", "20260101T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-user-agent", "sdk"),
            ("content-type", "text/plain"),
        ]);
        assert_eq!(check(&ok, None, false), Ok(()));
        let mut bad = ok.clone();
        bad.insert("x-amz-acl", hyper::header::HeaderValue::from_static("public-read"));
        bad.insert("x-amz-copy-source", hyper::header::HeaderValue::from_static("/b/k"));
        let r = check(&bad, None, false).unwrap_err();
        assert_eq!((r.status, r.code), (403, "AccessDenied"));
        assert_eq!(r.extra.unwrap().1, "x-amz-acl, x-amz-copy-source");
    }

    #[test]
    fn presigned_urls_sign_their_headers_and_live_at_most_a_week() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=300&X-Amz-SignedHeaders=host%3Bx-amz-acl&X-Amz-Signature=00";
        let h = headers(&[("x-amz-acl", "private")]);
        assert_eq!(check(&h, Some(q), false), Ok(()));
        let h = headers(&[("x-amz-acl", "private"), ("x-amz-grant-read", "uri=x")]);
        assert_eq!(check(&h, Some(q), false).unwrap_err().code, "AccessDenied");
        let week = q.replace("=300", "=604800");
        assert_eq!(check(&HeaderMap::new(), Some(&week), false), Ok(()));
        let long = q.replace("=300", "=604801");
        let r = check(&HeaderMap::new(), Some(&long), false).unwrap_err();
        assert_eq!((r.status, r.code), (400, "AuthorizationQueryParametersError"));
        let junk = q.replace("=300", "=soon");
        assert_eq!(check(&HeaderMap::new(), Some(&junk), false).unwrap_err().status, 400);
    }

    #[test]
    fn signature_v2_only_when_enabled() {
        let h = headers(&[("authorization", "AWS AK:c2ln")]);
        assert_eq!(check(&h, None, false).unwrap_err().code, "InvalidRequest");
        assert_eq!(check(&h, None, true), Ok(()));
        let q = "AWSAccessKeyId=AK&Expires=1&Signature=x";
        assert_eq!(
            check(&HeaderMap::new(), Some(q), false).unwrap_err().code,
            "InvalidRequest"
        );
        // Anonymous requests carry no signature to check.
        assert_eq!(check(&headers(&[("x-amz-acl", "private")]), None, false), Ok(()));
    }
}
