//! Who may call the admin API, and with which role.
//!
//! The configured admin token (`IRONBUCKET_ADMIN_TOKEN`) is the built-in `admin`. Other tokens
//! are created and revoked through `/tokens` (`ironbucket-cli token create|list|revoke`); only
//! their SHA-256 is kept: in the control state (agreed through Raft) in a cluster, in
//! `admin-tokens.json` in the data directory on a single node. [`required_role`] maps each route
//! to the least role that may call it; the middleware answers 401 (no or unknown token) or 403
//! (role too low) before any body is read.

use crate::{ApiError, ApiResult, JsonBody, Shared, ok};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use ironbucket_api::{CreateToken, Role, TokenCreated, TokenView};
use ironbucket_consensus::AdminToken;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The least role that may call `method path`; `None`: the route is open (liveness and
/// readiness, for load balancers and orchestrators).
pub(crate) fn required_role(method: &Method, path: &str) -> Option<Role> {
    if matches!(path, "/health" | "/health/ready" | "/ready") {
        return None;
    }
    let p = path.trim_end_matches('/');
    if p == "/tokens"
        || p.starts_with("/tokens/")
        || p == "/cluster/join-tokens"
        || p.starts_with("/cluster/join-tokens/")
    {
        return Some(Role::Admin);
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Role::Viewer);
    }
    if p == "/cluster/layout/plan" {
        // A dry run: computes what a change would move and changes nothing.
        return Some(Role::Viewer);
    }
    let operator = p == "/cluster/repair"
        || p == "/cluster/repair/rate"
        || p == "/cluster/rebalance"
        || p == "/cluster/rebalance/cancel"
        || p.starts_with("/workers/")
        || p.starts_with("/cluster/locks/")
        || p.starts_with("/cluster/barriers/")
        || (p.starts_with("/cluster/nodes/") && ["/drain", "/activate", "/replace"].iter().any(|a| p.ends_with(a)));
    Some(if operator { Role::Operator } else { Role::Admin })
}

/// The hex SHA-256 of a token.
pub(crate) fn hash(token: &str) -> String {
    ironbucket_types::token::token_digest(token)
}

/// Who presented a token: a name for the audit log, and the role.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) name: String,
    pub(crate) role: Role,
}

/// The tokens of a single node, kept in a file in its data directory.
pub(crate) struct FileTokens {
    path: Option<PathBuf>,
    tokens: Mutex<BTreeMap<String, AdminToken>>,
}

impl FileTokens {
    /// Loads `path` (absent: no tokens yet). `None`: tokens are kept in memory only (tests).
    pub(crate) fn open(path: Option<PathBuf>) -> Result<Self, String> {
        let tokens = match &path {
            Some(p) => match std::fs::read(p) {
                Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{} is corrupt: {e}", p.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
                Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
            },
            None => BTreeMap::new(),
        };
        Ok(Self {
            path,
            tokens: Mutex::new(tokens),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AdminToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the tokens (0600, through a temporary file and a rename).
    fn save(&self, tokens: &BTreeMap<String, AdminToken>) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let body = serde_json::to_vec_pretty(tokens).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

impl crate::AdminState {
    /// The principal `presented` authenticates, if any.
    pub(crate) fn authenticate(&self, presented: &str) -> Option<Principal> {
        if crate::constant_time_eq(presented.as_bytes(), self.cfg.token.as_bytes()) {
            return Some(Principal {
                name: "admin-token".into(),
                role: Role::Admin,
            });
        }
        let h = hash(presented);
        let found = |t: &AdminToken| {
            (t.hash == h).then(|| Principal {
                name: format!("token:{}", t.name),
                role: t.role.parse().unwrap_or(Role::Viewer),
            })
        };
        match self.cluster.get() {
            Some(cp) => cp.with_state(|s| s.admin_tokens.values().find_map(found)),
            None => self.file_tokens.lock().values().find_map(found),
        }
    }

    fn token_list(&self) -> Vec<AdminToken> {
        match self.cluster.get() {
            Some(cp) => cp.with_state(|s| s.admin_tokens.values().cloned().collect()),
            None => self.file_tokens.lock().values().cloned().collect(),
        }
    }
}

fn view(t: &AdminToken) -> TokenView {
    TokenView {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.parse().unwrap_or(Role::Viewer),
        created: t.created,
    }
}

fn cluster_err(e: ironbucket_consensus::Error) -> ApiError {
    let status = match e {
        ironbucket_consensus::Error::Invalid(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

fn outcome(o: ironbucket_consensus::Outcome) -> Result<(), ApiError> {
    match o {
        ironbucket_consensus::Outcome::Done => Ok(()),
        ironbucket_consensus::Outcome::Refused { reason } if reason.starts_with("no admin token") => {
            Err(ApiError::not_found(reason))
        }
        ironbucket_consensus::Outcome::Refused { reason } => Err(ApiError::new(StatusCode::CONFLICT, reason)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected outcome {other:?}"),
        )),
    }
}

/// `GET /tokens`.
pub(crate) async fn list(State(s): State<Shared>) -> ApiResult {
    let v: Vec<TokenView> = s.token_list().iter().map(view).collect();
    ok(&v)
}

/// `POST /tokens` with `{"name": ..., "role": ...}`: the token is in the answer, this once.
pub(crate) async fn create(State(s): State<Shared>, JsonBody(req): JsonBody<Option<CreateToken>>) -> ApiResult {
    let req = req.ok_or_else(|| ApiError::bad_request("a body {\"name\": ..., \"role\": ...} is required"))?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ApiError::bad_request(
            "a token name is 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let token = ironbucket_types::token::admin_token(rand::random());
    let id: [u8; 8] = rand::random();
    let rec = AdminToken {
        id: hex::encode(id),
        name,
        role: req.role.as_str().to_string(),
        hash: hash(&token),
        created: ironbucket_types::now_millis(),
    };
    match s.cluster.get() {
        Some(cp) => outcome(cp.put_admin_token(rec.clone()).await.map_err(cluster_err)?)?,
        None => {
            let mut all = s.file_tokens.lock();
            if all.values().any(|t| t.name == rec.name) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("an admin token named {:?} exists already", rec.name),
                ));
            }
            let mut next = all.clone();
            next.insert(rec.id.clone(), rec.clone());
            s.file_tokens
                .save(&next)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            *all = next;
        }
    }
    Ok(crate::json(
        StatusCode::CREATED,
        &TokenCreated {
            view: view(&rec),
            token,
        },
    ))
}

/// `DELETE /tokens/{id}` (the id, or the token's name).
pub(crate) async fn revoke(State(s): State<Shared>, Path(which): Path<String>) -> ApiResult {
    let Some(t) = s.token_list().into_iter().find(|t| t.id == which || t.name == which) else {
        return Err(ApiError::not_found(format!("no admin token with id or name {which:?}")));
    };
    match s.cluster.get() {
        Some(cp) => outcome(cp.delete_admin_token(&t.id).await.map_err(cluster_err)?)?,
        None => {
            let mut all = s.file_tokens.lock();
            let mut next = all.clone();
            next.remove(&t.id);
            s.file_tokens
                .save(&next)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            *all = next;
        }
    }
    ok(&view(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_least_role_that_may_call_them() {
        let r = |m: Method, p: &str| required_role(&m, p);
        assert_eq!(r(Method::GET, "/health"), None);
        assert_eq!(r(Method::GET, "/health/ready"), None);
        assert_eq!(r(Method::GET, "/metrics"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/cluster/status"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/cluster/locate/b/k"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/keys"), Some(Role::Viewer));
        assert_eq!(r(Method::GET, "/tokens"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/cluster/nodes/n1/drain"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/cluster/nodes/n1/activate"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/cluster/nodes/n1/decommission"), Some(Role::Admin));
        assert_eq!(r(Method::DELETE, "/cluster/nodes/n1"), Some(Role::Admin));
        assert_eq!(r(Method::PUT, "/cluster/nodes/n1"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/cluster/repair"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/cluster/rebalance"), Some(Role::Operator));
        assert_eq!(r(Method::POST, "/cluster/layout/plan"), Some(Role::Viewer));
        assert_eq!(r(Method::POST, "/keys"), Some(Role::Admin));
        assert_eq!(r(Method::PUT, "/buckets/b/quota"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/cluster/force-recover"), Some(Role::Admin));
        assert_eq!(r(Method::PUT, "/workers/scrubber"), Some(Role::Operator));
        assert_eq!(r(Method::GET, "/cluster/join-tokens"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/cluster/join-tokens"), Some(Role::Admin));
        assert_eq!(r(Method::DELETE, "/cluster/join-tokens/ab12"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/cluster/nodes/n4/promote"), Some(Role::Admin));
        assert_eq!(r(Method::POST, "/cluster/keys/reseal"), Some(Role::Admin));
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn tokens_are_kept_hashed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-tokens.json");
        let f = FileTokens::open(Some(path.clone())).unwrap();
        let t = AdminToken {
            id: "1".into(),
            name: "ci".into(),
            role: "viewer".into(),
            hash: hash("ibt_secret"),
            created: 0,
        };
        let mut all = f.lock().clone();
        all.insert("1".into(), t.clone());
        f.save(&all).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("ibt_secret") && text.contains(&hash("ibt_secret")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = FileTokens::open(Some(path)).unwrap();
        assert_eq!(again.lock().get("1"), Some(&t));
    }
}
