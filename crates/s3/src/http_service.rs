//! The hyper service in front of `s3s`: request ids, header-size limit, metrics.

use crate::leftover::{Settled, Tracked};
use crate::request::{ClientInfo, OpSlot};
use crate::{S3Metrics, VirtualHosts};
use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::{Request, Response};
use ironbucket_store::ObjectStore;
use s3s::service::S3Service;
use s3s::{Body, HttpError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The S3 API as a hyper service.
#[derive(Clone)]
pub struct S3HttpService {
    inner: S3Service,
    access: crate::authz::Access,
    metrics: Arc<S3Metrics>,
    max_header_bytes: usize,
    node: Arc<str>,
    store: Arc<dyn ObjectStore>,
    hosts: Option<Arc<VirtualHosts>>,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    allow_sigv2: bool,
    audit: Option<Arc<dyn ironbucket_types::audit::AuditSink>>,
    /// Requests per second per client address, if limited.
    ip_limiter: Option<Arc<ironbucket_types::ratelimit::RateLimiter>>,
    /// The connection's peer, when the service was made for one connection.
    peer: Option<SocketAddr>,
    /// The connection is TLS (this node terminates it).
    secure: bool,
}

static REQ_SEQ: AtomicU64 = AtomicU64::new(0);

fn request_id(node: &str) -> String {
    let seq = REQ_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{node}{seq:012X}")
}

fn error_response(status: u16, code: &str, message: &str, rid: &str) -> Response<Body> {
    error_response_with(status, code, message, None, rid)
}

/// An S3 error document; `extra` adds one element (name, text) as AWS does for some codes.
fn error_response_with(
    status: u16,
    code: &str,
    message: &str,
    extra: Option<(&str, &str)>,
    rid: &str,
) -> Response<Body> {
    let extra = extra
        .map(|(n, t)| format!("<{n}>{}</{n}>", xml_escape(t)))
        .unwrap_or_default();
    let message = xml_escape(message);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra}<RequestId>{rid}</RequestId></Error>"
    );
    let mut r = Response::new(Body::from(xml));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

impl S3HttpService {
    pub(crate) fn new(
        inner: S3Service,
        access: crate::authz::Access,
        metrics: Arc<S3Metrics>,
        store: Arc<dyn ObjectStore>,
        hosts: Option<VirtualHosts>,
        cfg: &crate::S3Config,
    ) -> Self {
        // A per-process prefix keeps request ids unique across restarts.
        let node: String = format!("{:08X}", rand::random::<u32>());
        Self {
            inner,
            access,
            metrics,
            max_header_bytes: cfg.max_header_bytes,
            node: node.into(),
            store,
            hosts: hosts.map(Arc::new),
            trusted_proxies: cfg.trusted_proxies.clone().into(),
            allow_sigv2: cfg.allow_sigv2,
            audit: None,
            ip_limiter: ironbucket_types::ratelimit::RateLimiter::new(cfg.rate_per_ip).map(Arc::new),
            peer: None,
            secure: false,
        }
    }

    /// Sends an audit line for every request refused with 403 to `sink`.
    pub fn with_audit(mut self, sink: Arc<dyn ironbucket_types::audit::AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// The service for one connection from `peer`.
    pub fn with_peer(&self, peer: SocketAddr) -> Self {
        self.with_peer_tls(peer, false)
    }

    /// The service for one connection from `peer`, over TLS when `secure`
    /// (`aws:SecureTransport` is then true).
    pub fn with_peer_tls(&self, peer: SocketAddr, secure: bool) -> Self {
        let mut s = self.clone();
        s.peer = Some(peer);
        s.secure = secure;
        s
    }

    /// The client's address and whether it used TLS: the socket peer, or, when the peer is a
    /// trusted proxy, the nearest untrusted address in `X-Forwarded-For` and the proxy's
    /// `X-Forwarded-Proto`.
    fn client(&self, headers: &hyper::HeaderMap) -> Option<ClientInfo> {
        let peer = self.peer?.ip();
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return Some(ClientInfo {
                ip: peer,
                secure: self.secure,
            });
        }
        let mut ip = peer;
        for v in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(v) = v.to_str() else { break };
            let mut done = false;
            for hop in v.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(h) => {
                        ip = h;
                        if !trusted(&h) {
                            done = true;
                            break;
                        }
                    }
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if done {
                break;
            }
        }
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
            || self.secure;
        Some(ClientInfo { ip, secure })
    }
}

impl hyper::service::Service<Request<Incoming>> for S3HttpService {
    type Response = Response<Body>;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // A request with a body: what its handler leaves unread is read before the answer
        // (see `leftover`); one without (most GETs) goes to `s3s` as it came.
        let (parts, body) = req.into_parts();
        let (req, leftover) = if http_body::Body::is_end_stream(&body) {
            (Request::from_parts(parts, Body::from(body)), None)
        } else {
            let (body, back) = Tracked::new(body);
            (Request::from_parts(parts, Body::http_body(body)), Some(back))
        };
        // The body is dropped (handing back its unread rest) before `settle` looks for it:
        // at once for a request answered early, when its handler is done for the others.
        let answer = self.answer(req);
        match leftover {
            None => answer,
            Some(back) => Box::pin(async move {
                let r = answer.await;
                let settled = back.settle().await;
                r.map(|mut resp| {
                    if settled == Settled::Close {
                        resp.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    resp
                })
            }),
        }
    }
}

impl S3HttpService {
    /// The answer to `req`.
    fn answer(&self, mut req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, HttpError>> {
        let start = Instant::now();
        let rid = request_id(&self.node);
        let metrics = self.metrics.clone();
        let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if header_bytes > self.max_header_bytes {
            let msg = format!(
                "Your request header section exceeds the maximum allowed size of {} bytes.",
                self.max_header_bytes
            );
            let mut resp = error_response(400, "RequestHeaderSectionTooLarge", &msg, &rid);
            add_ids(&mut resp, &rid);
            metrics.requests.with_label_values(&["Unknown", "400"]).inc();
            return Box::pin(async move { Ok(resp) });
        }
        let client = self.client(req.headers());
        if let Err(r) = crate::guard::check(req.headers(), req.uri().query(), self.allow_sigv2) {
            let extra = r.extra.as_ref().map(|(n, t)| (*n, t.as_str()));
            let mut resp = error_response_with(r.status, r.code, &r.message, extra, &rid);
            add_ids(&mut resp, &rid);
            if r.status == 403 {
                let denied = Denied::of(&req, client.map(|c| c.ip));
                denied.record(self.audit.as_deref(), "Unknown", Some(r.code.to_string()), &rid);
            }
            metrics
                .requests
                .with_label_values(&["Unknown", resp.status().as_str()])
                .inc();
            return Box::pin(async move { Ok(resp) });
        }
        if let Some(l) = &self.ip_limiter
            && let Some(c) = client
            && let Err(wait) = l.take(&c.ip.to_string(), Instant::now())
        {
            let mut resp = error_response(503, "SlowDown", "Please reduce your request rate.", &rid);
            add_ids(&mut resp, &rid);
            set_retry_after(&mut resp, wait);
            metrics.requests.with_label_values(&["Unknown", "503"]).inc();
            return Box::pin(async move { Ok(resp) });
        }
        if let Some(n) = content_length(req.headers()) {
            metrics.bytes_in.inc_by(n);
        }
        let origin = req
            .headers()
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bucket = origin
            .as_ref()
            .map(|_| crate::cors::bucket_of(self.hosts.as_deref(), req.headers(), req.uri().path()));
        if req.method() == hyper::Method::OPTIONS {
            // CORS preflight: unauthenticated, answered from the bucket's rules.
            let store = self.store.clone();
            let headers = req.headers().clone();
            let bucket = crate::cors::bucket_of(self.hosts.as_deref(), req.headers(), req.uri().path());
            return Box::pin(async move {
                let mut resp = crate::cors::preflight(&store, bucket, &headers, |st, code, msg| {
                    error_response(st, code, msg, &rid)
                })
                .await;
                add_ids(&mut resp, &rid);
                metrics
                    .requests
                    .with_label_values(&["PreflightCors", resp.status().as_str()])
                    .inc();
                Ok(resp)
            });
        }
        // `x-ironbucket-consistency`: the request's level in a cluster (ignored on one node).
        let level = match req.headers().get("x-ironbucket-consistency").map(|v| v.to_str()) {
            None => None,
            Some(Ok(v)) if v.parse::<ironbucket_store::Consistency>().is_ok() => v.parse().ok(),
            Some(v) => {
                let shown = v.unwrap_or("(not text)");
                let msg = format!("x-ironbucket-consistency must be ONE, QUORUM or ALL, not {:?}", shown);
                let mut resp = error_response(400, "InvalidArgument", &msg, &rid);
                add_ids(&mut resp, &rid);
                metrics.requests.with_label_values(&["Unknown", "400"]).inc();
                return Box::pin(async move { Ok(resp) });
            }
        };
        let method = req.method().clone();
        let store = self.store.clone();
        let audit = self.audit.clone();
        // Cheap handles (no strings built) in case the request is refused and audited.
        let denied = audit.is_some().then(|| Denied::of(&req, client.map(|c| c.ip)));
        let target = crate::cors::bucket_of(self.hosts.as_deref(), req.headers(), req.uri().path());
        let slot = OpSlot::default();
        req.extensions_mut().insert(slot.clone());
        if let Some(c) = client {
            req.extensions_mut().insert(c);
        }
        let post_form = (req.method() == hyper::Method::POST)
            .then(|| req.headers().get(hyper::header::CONTENT_TYPE)?.to_str().ok())
            .flatten()
            .and_then(crate::post_gate::boundary);
        let fut = match (post_form, &target) {
            (Some(boundary), Some(bucket)) => self.post_object(req, boundary, bucket.clone(), rid.clone()),
            _ => {
                let inner = self.inner.clone();
                Box::pin(async move { inner.call(req).await })
            }
        };
        let in_flight = crate::metrics::InFlight::start(&metrics.in_flight);
        Box::pin(async move {
            let _in_flight = in_flight;
            let (resp, upgraded) = ironbucket_store::hints::with_consistency_noted(level, fut).await;
            let mut resp = resp?;
            add_ids(&mut resp, &rid);
            if let Some(l) = upgraded
                && let Ok(v) = hyper::header::HeaderValue::from_str(&l.to_string())
            {
                resp.headers_mut().insert("x-ironbucket-consistency-upgraded", v);
            }
            // Monthly request counts, for requests to buckets that exist.
            if let Some(b) = &target
                && slot.0.get().is_some()
                && resp.status() != hyper::StatusCode::NOT_FOUND
            {
                let st = resp.status();
                store.record_request(b, st.is_client_error() || st.is_server_error());
            }
            if let (Some(origin), Some(bucket)) = (origin, bucket) {
                crate::cors::decorate(&store, bucket, &origin, &method, &mut resp).await;
            }
            if resp.status() == hyper::StatusCode::SERVICE_UNAVAILABLE && !resp.headers().contains_key("retry-after") {
                set_retry_after(&mut resp, std::time::Duration::from_secs(1));
            }
            let op = slot.0.get().copied().unwrap_or("Unknown");
            if resp.status() == hyper::StatusCode::FORBIDDEN
                && let Some(d) = denied
            {
                d.record(audit.as_deref(), op, None, &rid);
            }
            metrics.requests.with_label_values(&[op, resp.status().as_str()]).inc();
            metrics
                .duration
                .with_label_values(&[op])
                .observe(start.elapsed().as_secs_f64());
            if let Some(n) = content_length(resp.headers()) {
                metrics.bytes_out.inc_by(n);
            }
            if resp.status().is_server_error() {
                tracing::warn!(request_id = %rid, operation = op, status = %resp.status(), "S3 request failed");
            }
            Ok(resp)
        })
    }
}

impl S3HttpService {
    /// A browser upload: reads the form fields before the file, refuses a Signature Version 2
    /// form unless enabled and an anonymous form the bucket does not admit for its key, then
    /// hands the whole body to `s3s` with the key for the access hook.
    fn post_object(
        &self,
        req: Request<Body>,
        boundary: String,
        bucket: String,
        rid: String,
    ) -> BoxFuture<'static, Result<Response<Body>, HttpError>> {
        let inner = self.inner.clone();
        let access = self.access.clone();
        let allow_v2 = self.allow_sigv2;
        let client = req.extensions().get::<ClientInfo>().copied();
        Box::pin(async move {
            use crate::post_gate::{PostKey, ReadError, read_head, rejoin};
            let (parts, body) = req.into_parts();
            let refuse = |status: u16, code: &str, msg: &str| Ok(error_response(status, code, msg, &rid));
            let (first, rest, head) = match read_head(body, &boundary).await {
                Ok(r) => r,
                Err(ReadError::TooLarge) => {
                    return refuse(
                        400,
                        "MaxPostPreDataLengthExceeded",
                        "Your POST request fields preceding the upload file were too large.",
                    );
                }
                Err(ReadError::Malformed(why)) => {
                    let msg = format!("The body of your POST request is not well-formed multipart/form-data: {why}");
                    return refuse(400, "MalformedPOSTRequest", &msg);
                }
            };
            if head.v2 && !allow_v2 {
                return refuse(
                    400,
                    "InvalidRequest",
                    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
                );
            }
            if !head.signed
                && let Err(e) = access
                    .check_anonymous_post(&bucket, head.key.as_deref(), client, &parts.headers)
                    .await
            {
                let status = e.status_code().map_or(403, |s| s.as_u16());
                let msg = e.message().unwrap_or("Access Denied").to_string();
                return refuse(status, e.code().as_str(), &msg);
            }
            let mut req = Request::from_parts(parts, rejoin(first, rest));
            if let Some(k) = head.key {
                req.extensions_mut().insert(PostKey(k));
            }
            inner.call(req).await
        })
    }
}

/// What the audit log needs of a request that may be refused: handles that are cheap to keep
/// (the strings are built only when a refusal is recorded).
struct Denied {
    method: hyper::Method,
    uri: hyper::Uri,
    authorization: Option<hyper::header::HeaderValue>,
    source: Option<IpAddr>,
}

impl Denied {
    fn of<B>(req: &Request<B>, source: Option<IpAddr>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            authorization: req.headers().get(hyper::header::AUTHORIZATION).cloned(),
            source,
        }
    }

    /// Records the refusal (403) of operation `action`.
    fn record(
        self,
        sink: Option<&dyn ironbucket_types::audit::AuditSink>,
        action: &str,
        error: Option<String>,
        rid: &str,
    ) {
        let Some(sink) = sink else { return };
        let auth = self.authorization.as_ref().and_then(|v| v.to_str().ok());
        sink.record(ironbucket_types::audit::AuditEvent {
            time: ironbucket_types::audit::rfc3339_millis(ironbucket_types::now_millis()),
            api: "s3",
            principal: claimed_access_key(auth, self.uri.query()).unwrap_or_else(|| "anonymous".into()),
            source: self.source.map(|ip| ip.to_string()).unwrap_or_default(),
            action: action.to_string(),
            resource: format!("{} {}", self.method, self.uri.path()),
            result: "denied".into(),
            status: 403,
            error,
            request_id: Some(rid.to_string()),
        });
    }
}

/// The access key id a request claims (SigV4 header or query, SigV2), not yet verified.
fn claimed_access_key(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    let from_credential = |c: &str| c.split('/').next().map(str::to_string);
    if let Some(a) = authorization {
        if let Some(rest) = a.strip_prefix("AWS4-HMAC-SHA256") {
            return rest
                .split([',', ' '])
                .find_map(|p| p.trim().strip_prefix("Credential="))
                .and_then(from_credential);
        }
        if let Some(rest) = a.strip_prefix("AWS ") {
            return rest.split(':').next().map(str::to_string);
        }
    }
    query?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        match k {
            "X-Amz-Credential" => from_credential(&v.replace("%2F", "/")),
            "AWSAccessKeyId" => Some(v.to_string()),
            _ => None,
        }
    })
}

/// `Retry-After` in whole seconds, at least one.
fn set_retry_after(resp: &mut Response<Body>, wait: std::time::Duration) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut()
        .insert("retry-after", hyper::header::HeaderValue::from(secs.max(1)));
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn content_length(h: &hyper::HeaderMap) -> Option<u64> {
    h.get(hyper::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn add_ids(resp: &mut Response<Body>, rid: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(rid) {
        resp.headers_mut().insert("x-amz-request-id", v.clone());
        resp.headers_mut().insert("x-amz-id-2", v);
    }
}
