//! CORS for browsers: preflight `OPTIONS` answered from the bucket's rules, and the
//! `Access-Control-*` headers added to actual requests whose Origin a rule allows. Nothing is
//! allowed unless the bucket has a matching rule (no global permissive CORS).

use crate::VirtualHosts;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response};
use ironbucket_store::{CorsRule, ObjectStore, cors::find_rule};
use s3s::Body;
use std::sync::Arc;

/// The bucket a request addresses: from a virtual host, else the first path segment.
pub(crate) fn bucket_of(hosts: Option<&VirtualHosts>, headers: &HeaderMap, path: &str) -> Option<String> {
    if let (Some(h), Some(host)) = (hosts, headers.get(hyper::header::HOST).and_then(|v| v.to_str().ok()))
        && let Some(b) = h.bucket_of(host)
    {
        return Some(b.to_string());
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    (!first.is_empty()).then(|| first.to_string())
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn allow_headers(h: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    if rule.any_origin() {
        set(h, "access-control-allow-origin", "*");
    } else {
        set(h, "access-control-allow-origin", origin);
        set(h, "access-control-allow-credentials", "true");
    }
    if !rule.expose_headers.is_empty() {
        set(h, "access-control-expose-headers", &rule.expose_headers.join(", "));
    }
    set(
        h,
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    );
}

async fn rules(store: &Arc<dyn ObjectStore>, bucket: &Option<String>) -> Vec<CorsRule> {
    match bucket {
        Some(b) => store.get_bucket_cors(b).await.unwrap_or_default(),
        None => vec![],
    }
}

/// Answers a preflight request.
pub(crate) async fn preflight(
    store: &Arc<dyn ObjectStore>,
    bucket: Option<String>,
    headers: &HeaderMap,
    error: impl Fn(u16, &str, &str) -> Response<Body>,
) -> Response<Body> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (Some(origin), Some(method)) = (get("origin"), get("access-control-request-method")) else {
        return error(
            400,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let requested = get("access-control-request-headers").unwrap_or_default();
    let requested: Vec<&str> = requested.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let rules = rules(store, &bucket).await;
    if rules.is_empty() {
        return error(
            403,
            "AccessForbidden",
            "CORSResponse: CORS is not enabled for this bucket.",
        );
    }
    let Some(rule) = find_rule(&rules, &origin, &method, &requested) else {
        return error(
            403,
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        );
    };
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    allow_headers(h, rule, &origin);
    set(h, "access-control-allow-methods", &rule.allowed_methods.join(", "));
    if !requested.is_empty() {
        set(h, "access-control-allow-headers", &requested.join(", "));
    }
    if let Some(age) = rule.max_age_seconds {
        set(h, "access-control-max-age", &age.to_string());
    }
    resp
}

/// Adds the CORS headers to an actual request's response when a rule allows its origin.
pub(crate) async fn decorate(
    store: &Arc<dyn ObjectStore>,
    bucket: Option<String>,
    origin: &str,
    method: &Method,
    resp: &mut Response<Body>,
) {
    let rules = rules(store, &bucket).await;
    if let Some(rule) = find_rule(&rules, origin, method.as_str(), &[]) {
        allow_headers(resp.headers_mut(), rule, origin);
    }
}
