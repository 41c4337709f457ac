//! What the hyper service learns about a request and hands to the `s3s` access hook through
//! request extensions. It lives apart from both so that `http_service` and `authz` each depend
//! on it and not on each other.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// The client as the S3 service saw it: the socket peer, or the address a trusted proxy
/// forwarded; `secure` when the request reached us (or the trusted proxy) over TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientInfo {
    pub(crate) ip: IpAddr,
    pub(crate) secure: bool,
}

/// Where the access hook records the resolved operation name for the metrics.
#[derive(Clone, Default)]
pub(crate) struct OpSlot(pub(crate) Arc<OnceLock<&'static str>>);

/// Interns operation names so metric labels need no allocation per request.
pub(crate) fn static_op_name(name: &str) -> &'static str {
    static NAMES: OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> = OnceLock::new();
    let set = NAMES.get_or_init(Default::default);
    let mut g = set.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = g.get(name) {
        return s;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    g.insert(leaked);
    leaked
}
