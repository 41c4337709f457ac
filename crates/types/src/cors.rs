//! CORS rules of a bucket and the matching S3 applies to preflight and actual requests.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// Checks a CORS configuration the way S3 does; the error names what is wrong.
pub fn validate(rules: &[CorsRule]) -> Result<(), String> {
    if rules.is_empty() || rules.len() > 100 {
        return Err("a CORS configuration holds 1 to 100 rules".into());
    }
    for r in rules {
        if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
            return Err("every CORS rule needs at least one AllowedOrigin and one AllowedMethod".into());
        }
        if let Some(m) = r.allowed_methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(format!(
                "Found unsupported HTTP method in CORS config. Unsupported method is {m}"
            ));
        }
        if let Some(o) = r
            .allowed_origins
            .iter()
            .chain(&r.allowed_headers)
            .find(|o| o.matches('*').count() > 1)
        {
            return Err(format!(
                "AllowedOrigin/AllowedHeader {o:?} can not have more than one wildcard."
            ));
        }
    }
    Ok(())
}

/// `pattern` with at most one `*` matching any run of characters.
fn wildcard(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v) = if ignore_case {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_string(), value.to_string())
    };
    match p.split_once('*') {
        None => p == v,
        Some((pre, suf)) => v.len() >= pre.len() + suf.len() && v.starts_with(pre) && v.ends_with(suf),
    }
}

impl CorsRule {
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| wildcard(o, origin, false))
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    pub fn allows_header(&self, header: &str) -> bool {
        self.allowed_headers.iter().any(|h| wildcard(h, header.trim(), true))
    }

    /// Whether the rule allows every origin (`*`), so the response can say `*`.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

/// The first rule that allows this origin, method and (for preflights) request headers.
pub fn find_rule<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<&'a CorsRule> {
    rules.iter().find(|r| {
        r.allows_origin(origin)
            && r.allows_method(method)
            && request_headers
                .iter()
                .all(|h| h.trim().is_empty() || r.allows_header(h))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> CorsRule {
        CorsRule {
            allowed_origins: vec!["https://*.example.com".into(), "http://localhost:3000".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: vec!["x-amz-*".into(), "Content-Type".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
            id: None,
        }
    }

    #[test]
    fn matching() {
        let rules = vec![rule()];
        assert!(find_rule(&rules, "https://app.example.com", "GET", &[]).is_some());
        assert!(find_rule(&rules, "http://localhost:3000", "PUT", &["content-type", "X-Amz-Date"]).is_some());
        assert!(find_rule(&rules, "https://example.org", "GET", &[]).is_none());
        assert!(find_rule(&rules, "https://app.example.com", "DELETE", &[]).is_none());
        assert!(find_rule(&rules, "https://app.example.com", "GET", &["authorization"]).is_none());
        let star = CorsRule {
            allowed_origins: vec!["*".into()],
            allowed_methods: vec!["GET".into()],
            ..Default::default()
        };
        assert!(star.any_origin() && star.allows_origin("https://anything"));
    }

    #[test]
    fn validation() {
        assert!(validate(&[rule()]).is_ok());
        assert!(validate(&[]).is_err());
        let bad = CorsRule {
            allowed_methods: vec!["PATCH".into()],
            ..rule()
        };
        assert!(validate(&[bad]).unwrap_err().contains("PATCH"));
        let bad = CorsRule {
            allowed_origins: vec!["https://*.*.com".into()],
            ..rule()
        };
        assert!(validate(&[bad]).is_err());
    }
}
