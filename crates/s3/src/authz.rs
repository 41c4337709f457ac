//! Authorization of every S3 request, in AWS's order: an explicit `Deny` in the bucket policy
//! refuses; then the caller's own key permission, an `Allow` in the bucket policy, or an ACL
//! grant admits; anything else is refused. Root keys are administrators and are not subject to
//! bucket policies (as MinIO's root user). Anonymous requests get only what a policy or an ACL
//! gives to everyone, minus what the bucket's public access block takes away.

use crate::convert::s3_err;
use crate::post_gate::PostKey;
use crate::request::{ClientInfo, OpSlot, static_op_name};
use ironbucket_store::{Acl, AclPermission, BucketAccess, Error as StoreError, KeyInfo, ObjectStore, Permission};
use ironbucket_types::policy::{self, Decision, Identity, Policy};
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Parsed policies by bucket, with the text each was parsed from.
type PolicyCache = Arc<Mutex<HashMap<String, (String, Arc<Policy>)>>>;

#[derive(Clone)]
pub(crate) struct Access {
    store: Arc<dyn ObjectStore>,
    roots: Arc<HashSet<String>>,
    /// Parsed policies by bucket, with the text they were parsed from.
    policies: PolicyCache,
    /// Requests per second per access key, if limited.
    key_limiter: Option<Arc<ironbucket_types::ratelimit::RateLimiter>>,
}

/// The permission an operation needs from the caller's own key on its bucket.
fn required(op: &str) -> Permission {
    const READ: &[&str] = &[
        "GetObject",
        "HeadObject",
        "HeadBucket",
        "ListObjects",
        "ListObjectsV2",
        "ListObjectVersions",
        "GetObjectTagging",
        "GetObjectAttributes",
        "GetBucketLocation",
        "ListMultipartUploads",
        "ListParts",
        "GetObjectRetention",
        "GetObjectLegalHold",
    ];
    const WRITE: &[&str] = &[
        "PutObject",
        "PostObject",
        "CopyObject",
        "DeleteObject",
        "DeleteObjects",
        "PutObjectTagging",
        "DeleteObjectTagging",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "PutObjectRetention",
    ];
    // Everything else, lifting legal holds (`PutObjectLegalHold`) and
    // `BypassGovernanceRetention` included, needs the owner permission.
    if READ.contains(&op) {
        Permission::Read
    } else if WRITE.contains(&op) {
        Permission::Write
    } else {
        Permission::Owner
    }
}

/// The IAM action a policy sees for an S3 operation (`versioned`: the request names a version).
pub(crate) fn iam_action(op: &str, versioned: bool) -> &'static str {
    match (op, versioned) {
        ("GetObject" | "HeadObject", false) => "s3:GetObject",
        ("GetObject" | "HeadObject", true) => "s3:GetObjectVersion",
        ("DeleteObject" | "DeleteObjects", false) => "s3:DeleteObject",
        ("DeleteObject" | "DeleteObjects", true) => "s3:DeleteObjectVersion",
        ("GetObjectAcl", false) => "s3:GetObjectAcl",
        ("GetObjectAcl", true) => "s3:GetObjectVersionAcl",
        ("PutObjectAcl", false) => "s3:PutObjectAcl",
        ("PutObjectAcl", true) => "s3:PutObjectVersionAcl",
        ("GetObjectTagging", false) => "s3:GetObjectTagging",
        ("GetObjectTagging", true) => "s3:GetObjectVersionTagging",
        ("PutObjectTagging", false) => "s3:PutObjectTagging",
        ("PutObjectTagging", true) => "s3:PutObjectVersionTagging",
        ("DeleteObjectTagging", false) => "s3:DeleteObjectTagging",
        ("DeleteObjectTagging", true) => "s3:DeleteObjectVersionTagging",
        ("GetObjectAttributes", false) => "s3:GetObjectAttributes",
        ("GetObjectAttributes", true) => "s3:GetObjectVersionAttributes",
        ("PutObject" | "PostObject" | "CopyObject" | "CreateMultipartUpload" | "UploadPart" | "UploadPartCopy", _)
        | ("CompleteMultipartUpload", _) => "s3:PutObject",
        ("AbortMultipartUpload", _) => "s3:AbortMultipartUpload",
        ("ListParts", _) => "s3:ListMultipartUploadParts",
        ("ListMultipartUploads", _) => "s3:ListBucketMultipartUploads",
        ("ListObjects" | "ListObjectsV2" | "HeadBucket", _) => "s3:ListBucket",
        ("ListObjectVersions", _) => "s3:ListBucketVersions",
        ("ListBuckets", _) => "s3:ListAllMyBuckets",
        ("GetObjectRetention", _) => "s3:GetObjectRetention",
        ("PutObjectRetention", _) => "s3:PutObjectRetention",
        ("GetObjectLegalHold", _) => "s3:GetObjectLegalHold",
        ("PutObjectLegalHold", _) => "s3:PutObjectLegalHold",
        ("BypassGovernanceRetention", _) => "s3:BypassGovernanceRetention",
        ("GetBucketLocation", _) => "s3:GetBucketLocation",
        ("CreateBucket", _) => "s3:CreateBucket",
        ("DeleteBucket", _) => "s3:DeleteBucket",
        ("GetBucketVersioning", _) => "s3:GetBucketVersioning",
        ("PutBucketVersioning", _) => "s3:PutBucketVersioning",
        ("GetBucketTagging", _) => "s3:GetBucketTagging",
        ("PutBucketTagging" | "DeleteBucketTagging", _) => "s3:PutBucketTagging",
        ("GetBucketCors", _) => "s3:GetBucketCORS",
        ("PutBucketCors" | "DeleteBucketCors", _) => "s3:PutBucketCORS",
        ("GetBucketLifecycleConfiguration", _) => "s3:GetLifecycleConfiguration",
        ("PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle", _) => "s3:PutLifecycleConfiguration",
        ("GetBucketEncryption", _) => "s3:GetEncryptionConfiguration",
        ("PutBucketEncryption" | "DeleteBucketEncryption", _) => "s3:PutEncryptionConfiguration",
        ("GetObjectLockConfiguration", _) => "s3:GetBucketObjectLockConfiguration",
        ("PutObjectLockConfiguration", _) => "s3:PutBucketObjectLockConfiguration",
        ("GetBucketPolicy", _) => "s3:GetBucketPolicy",
        ("PutBucketPolicy", _) => "s3:PutBucketPolicy",
        ("DeleteBucketPolicy", _) => "s3:DeleteBucketPolicy",
        ("GetBucketPolicyStatus", _) => "s3:GetBucketPolicyStatus",
        ("GetBucketAcl", _) => "s3:GetBucketAcl",
        ("PutBucketAcl", _) => "s3:PutBucketAcl",
        ("GetPublicAccessBlock", _) => "s3:GetBucketPublicAccessBlock",
        ("PutPublicAccessBlock" | "DeletePublicAccessBlock", _) => "s3:PutBucketPublicAccessBlock",
        _ => "s3:Unknown",
    }
}

/// What a bucket ACL grant must hold for an operation, if a bucket ACL can grant it.
fn bucket_acl_permission(op: &str) -> Option<AclPermission> {
    Some(match op {
        "ListObjects" | "ListObjectsV2" | "ListObjectVersions" | "ListMultipartUploads" | "HeadBucket" => {
            AclPermission::Read
        }
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts" => AclPermission::Write,
        "GetBucketAcl" => AclPermission::ReadAcp,
        "PutBucketAcl" => AclPermission::WriteAcp,
        _ => return None,
    })
}

/// What an object ACL grant must hold for an operation, if an object ACL can grant it.
fn object_acl_permission(op: &str) -> Option<AclPermission> {
    Some(match op {
        "GetObject" | "HeadObject" => AclPermission::Read,
        "GetObjectAcl" => AclPermission::ReadAcp,
        "PutObjectAcl" => AclPermission::WriteAcp,
        _ => return None,
    })
}

fn denied() -> s3s::S3Error {
    s3_error!(AccessDenied, "Access Denied")
}

fn arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// The caller of one request.
#[derive(Clone)]
pub(crate) struct Caller {
    identity: Option<Identity>,
    key: Option<KeyInfo>,
    /// Condition keys of the request (lower-cased) and their values.
    context: Vec<(&'static str, String)>,
}

/// Hands `DeleteObjects` the means to authorize each key of its body.
#[derive(Clone)]
pub(crate) struct DeleteGate {
    access: Access,
    caller: Arc<Caller>,
    bucket: String,
}

impl DeleteGate {
    pub(crate) async fn allows(&self, key: &str, version_id: Option<&str>) -> bool {
        self.access
            .decide(
                &self.caller,
                "DeleteObject",
                version_id.is_some(),
                &self.bucket,
                Some(key),
                version_id,
            )
            .await
            .is_ok()
    }
}

impl Access {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        roots: HashSet<String>,
        key_limiter: Option<Arc<ironbucket_types::ratelimit::RateLimiter>>,
    ) -> Self {
        Self {
            store,
            roots: Arc::new(roots),
            policies: Default::default(),
            key_limiter,
        }
    }

    fn parsed(&self, bucket: &str, text: &str) -> Option<Arc<Policy>> {
        let mut cache = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, p)) = cache.get(bucket)
            && t == text
        {
            return Some(p.clone());
        }
        let p = Arc::new(policy::parse(text, bucket).ok()?);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(bucket.to_string(), (text.to_string(), p.clone()));
        Some(p)
    }

    /// Whether an anonymous browser upload (an unsigned POST Object form) may write `key`,
    /// decided before its file is read.
    pub(crate) async fn check_anonymous_post(
        &self,
        bucket: &str,
        key: Option<&str>,
        client: Option<ClientInfo>,
        headers: &http::HeaderMap,
    ) -> S3Result<()> {
        let caller = Caller {
            identity: None,
            key: None,
            context: context(headers, &[], client, None),
        };
        self.decide(&caller, "PostObject", false, bucket, key, None).await
    }

    /// Decides one (operation, bucket, object) for a caller that is not a root key.
    async fn decide(
        &self,
        caller: &Caller,
        op: &str,
        versioned: bool,
        bucket: &str,
        key: Option<&str>,
        version_id: Option<&str>,
    ) -> S3Result<()> {
        let access: BucketAccess = match self.store.bucket_access(bucket).await {
            Ok(a) => a,
            Err(StoreError::NoSuchBucket) => return Err(s3_err(StoreError::NoSuchBucket)),
            Err(e) => return Err(s3_err(e)),
        };
        let pab = access.public_access_block.unwrap_or_default();
        // A stored policy that no longer parses admits nobody but root.
        let parsed = match &access.policy {
            Some(text) => Some(self.parsed(bucket, text).ok_or_else(denied)?),
            None => None,
        };
        let resource = arn(bucket, key);
        let decision = parsed.as_ref().map_or(Decision::Neither, |p| {
            p.evaluate(&policy::Request {
                principal: caller.identity.as_ref(),
                action: iam_action(op, versioned),
                resource: &resource,
                context: &caller.context,
            })
        });
        if decision == Decision::Deny {
            return Err(denied());
        }
        if let Some(info) = &caller.key
            && info.buckets.get(bucket).is_some_and(|have| *have >= required(op))
        {
            return Ok(());
        }
        if decision == Decision::Allow {
            let restricted = pab.restrict_public_buckets
                && caller.identity.is_none()
                && parsed.as_ref().is_some_and(|p| p.is_public());
            if !restricted {
                return Ok(());
            }
        }
        let who = caller.identity.as_ref().map(|i| i.access_key.as_str());
        if let (Some(want), Some(acl)) = (bucket_acl_permission(op), &access.acl)
            && acl.allows(who, want, pab.ignore_public_acls)
        {
            return Ok(());
        }
        if let (Some(want), Some(key)) = (object_acl_permission(op), key)
            && let Ok(Some(acl)) = self.store.get_object_acl(bucket, key, version_id).await
            && acl.allows(who, want, pab.ignore_public_acls)
        {
            return Ok(());
        }
        Err(denied())
    }
}

/// Query parameters of the request, percent-decoded.
fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    let dec = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// The condition keys a policy can test, from the request.
fn context(
    h: &http::HeaderMap,
    query: &[(String, String)],
    client: Option<ClientInfo>,
    identity: Option<&Identity>,
) -> Vec<(&'static str, String)> {
    let mut c: Vec<(&'static str, String)> = Vec::with_capacity(12);
    if let Some(cl) = client {
        c.push(("aws:sourceip", cl.ip.to_string()));
        c.push(("aws:securetransport", cl.secure.to_string()));
    }
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    for (key, name) in [
        ("aws:referer", "referer"),
        ("aws:useragent", "user-agent"),
        ("s3:x-amz-acl", "x-amz-acl"),
        ("s3:x-amz-server-side-encryption", "x-amz-server-side-encryption"),
        (
            "s3:x-amz-server-side-encryption-customer-algorithm",
            "x-amz-server-side-encryption-customer-algorithm",
        ),
        ("s3:x-amz-copy-source", "x-amz-copy-source"),
        ("s3:x-amz-metadata-directive", "x-amz-metadata-directive"),
        ("s3:x-amz-storage-class", "x-amz-storage-class"),
        ("s3:x-amz-content-sha256", "x-amz-content-sha256"),
        ("s3:x-amz-grant-read", "x-amz-grant-read"),
        ("s3:x-amz-grant-write", "x-amz-grant-write"),
        ("s3:x-amz-grant-full-control", "x-amz-grant-full-control"),
        ("s3:object-lock-mode", "x-amz-object-lock-mode"),
        ("s3:object-lock-legal-hold", "x-amz-object-lock-legal-hold"),
    ] {
        if let Some(v) = header(name) {
            c.push((key, v));
        }
    }
    for (key, name) in [
        ("s3:prefix", "prefix"),
        ("s3:delimiter", "delimiter"),
        ("s3:max-keys", "max-keys"),
        ("s3:versionid", "versionId"),
    ] {
        if let Some((_, v)) = query.iter().find(|(k, _)| k == name) {
            c.push((key, v.clone()));
        }
    }
    match identity {
        Some(id) => {
            c.push(("aws:principaltype", "User".into()));
            c.push(("aws:userid", id.access_key.clone()));
            c.push(("aws:username", id.name.clone()));
            let presigned = query.iter().any(|(k, _)| k == "X-Amz-Signature");
            c.push((
                "s3:authtype",
                if presigned { "REST-QUERY-STRING" } else { "REST-HEADER" }.into(),
            ));
            c.push(("s3:signatureversion", "AWS4-HMAC-SHA256".into()));
        }
        None => c.push(("aws:principaltype", "Anonymous".into())),
    }
    c.push(("aws:epochtime", (ironbucket_types::now_millis() / 1000).to_string()));
    c
}

/// `x-amz-copy-source` as (bucket, key, version id).
fn copy_source(cx: &S3AccessContext<'_>) -> Option<(String, String, Option<String>)> {
    parse_copy_source(cx.headers().get("x-amz-copy-source")?.to_str().ok()?)
}

/// An `x-amz-copy-source` value as (bucket, key, version id).
pub(crate) fn parse_copy_source(raw: &str) -> Option<(String, String, Option<String>)> {
    let (path, version) = match raw.split_once("?versionId=") {
        Some((p, v)) => (p, Some(v.to_string())),
        None => (raw, None),
    };
    let path = percent_encoding::percent_decode_str(path.trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    let (b, k) = path.split_once('/')?;
    Some((b.to_string(), k.to_string(), version))
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = static_op_name(cx.s3_op().name());
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>() {
            let _ = slot.0.set(op);
        }
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        if let (Some(l), Some(ak)) = (&self.key_limiter, &access_key)
            && l.take(ak, std::time::Instant::now()).is_err()
        {
            return Err(s3_error!(
                SlowDown,
                "Please reduce your request rate (this access key's limit)."
            ));
        }
        if access_key.as_ref().is_some_and(|a| self.roots.contains(a)) {
            return Ok(());
        }
        let key = match &access_key {
            Some(ak) => match self.store.key_secret(ak).await {
                Ok(Some((_, info))) if info.enabled => Some(info),
                _ => return Err(denied()),
            },
            None => None,
        };
        let (bucket, object) = match cx.s3_path() {
            // ListBuckets: answered with the key's own buckets only.
            S3Path::Root if key.is_some() => return Ok(()),
            S3Path::Root => {
                return Err(s3_error!(AccessDenied, "Anonymous users cannot list buckets"));
            }
            // POST Object names its key in the form (read before the file by the hyper service).
            S3Path::Bucket { bucket } if op == "PostObject" => (
                bucket.to_string(),
                cx.extensions_mut().get::<PostKey>().map(|k| k.0.clone()),
            ),
            S3Path::Bucket { bucket } => (bucket.to_string(), None),
            S3Path::Object { bucket, key } => (bucket.to_string(), Some(key.to_string())),
        };
        if op == "CreateBucket" {
            return match key {
                Some(_) => Ok(()),
                None => Err(s3_error!(AccessDenied, "Anonymous users cannot create buckets")),
            };
        }
        let identity = key.as_ref().map(|k| Identity {
            access_key: k.access_key.clone(),
            name: k.name.clone(),
        });
        let query = query_pairs(cx.uri());
        let version_id = query.iter().find(|(k, _)| k == "versionId").map(|(_, v)| v.clone());
        let client = cx.extensions_mut().get::<ClientInfo>().copied();
        let caller = Caller {
            context: context(cx.headers(), &query, client, identity.as_ref()),
            identity,
            key,
        };
        self.decide(
            &caller,
            op,
            version_id.is_some(),
            &bucket,
            object.as_deref(),
            version_id.as_deref(),
        )
        .await?;
        if (op == "CopyObject" || op == "UploadPartCopy")
            && let Some((sb, sk, sv)) = copy_source(cx)
        {
            self.decide(&caller, "GetObject", sv.is_some(), &sb, Some(&sk), sv.as_deref())
                .await
                .map_err(|e| {
                    if *e.code() == s3s::S3ErrorCode::NoSuchBucket {
                        e
                    } else {
                        denied()
                    }
                })?;
        }
        // `x-amz-bypass-governance-retention: true` needs its own permission on top of the
        // operation's (AWS: s3:BypassGovernanceRetention).
        let bypass = cx
            .headers()
            .get("x-amz-bypass-governance-retention")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if bypass && matches!(op, "DeleteObject" | "DeleteObjects" | "PutObjectRetention") {
            self.decide(
                &caller,
                "BypassGovernanceRetention",
                false,
                &bucket,
                object.as_deref(),
                None,
            )
            .await?;
        }
        if op == "DeleteObjects" {
            cx.extensions_mut().insert(DeleteGate {
                access: self.clone(),
                caller: Arc::new(caller),
                bucket,
            });
        }
        Ok(())
    }
}

/// ACL helpers shared by the operations that accept `x-amz-acl` / `x-amz-grant-*`.
pub(crate) fn grants_from_headers(
    owner: &str,
    bucket_owner: &str,
    canned: Option<&str>,
    grants: &[(AclPermission, Option<&str>)],
) -> S3Result<Option<Acl>> {
    let explicit: Vec<(AclPermission, &str)> = grants.iter().filter_map(|(p, v)| v.map(|v| (*p, v))).collect();
    match (canned, explicit.is_empty()) {
        (None, true) => Ok(None),
        (Some(_), false) => Err(s3_error!(
            InvalidRequest,
            "Specifying both Canned ACLs and Header Grants is not allowed"
        )),
        (Some(c), true) => Acl::canned(c, owner, bucket_owner)
            .map(Some)
            .map_err(|e| s3s::S3Error::with_message(s3s::S3ErrorCode::InvalidArgument, e.to_string())),
        (None, false) => Acl::from_grant_headers(owner, &explicit).map(Some).map_err(acl_err),
    }
}

pub(crate) fn acl_err(e: ironbucket_types::acl::AclError) -> s3s::S3Error {
    use ironbucket_types::acl::AclError;
    match e {
        AclError::Email(_) => {
            s3s::S3Error::with_message(s3s::S3ErrorCode::UnresolvableGrantByEmailAddress, e.to_string())
        }
        AclError::UnknownCanned(_) => s3s::S3Error::with_message(s3s::S3ErrorCode::InvalidArgument, e.to_string()),
        AclError::Malformed(_) => s3s::S3Error::with_message(s3s::S3ErrorCode::MalformedACLError, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_action_is_a_policy_action() {
        for op in [
            "GetObject",
            "HeadObject",
            "PutObject",
            "ListObjectsV2",
            "ListObjectVersions",
            "DeleteObjects",
            "GetBucketPolicyStatus",
            "PutPublicAccessBlock",
            "GetObjectAcl",
            "CompleteMultipartUpload",
            "BypassGovernanceRetention",
        ] {
            for v in [false, true] {
                let a = iam_action(op, v);
                assert!(policy::ACTIONS.contains(&a), "{op} -> {a}");
            }
        }
        assert_eq!(iam_action("GetObject", true), "s3:GetObjectVersion");
        assert_eq!(iam_action("HeadBucket", false), "s3:ListBucket");
    }

    /// Security review finding: writers bypassed governance retention and lifted legal holds.
    #[test]
    fn legal_holds_and_governance_bypass_need_the_owner_permission() {
        assert_eq!(required("PutObjectRetention"), Permission::Write);
        assert_eq!(required("PutObjectLegalHold"), Permission::Owner);
        assert_eq!(required("BypassGovernanceRetention"), Permission::Owner);
        assert_eq!(bucket_acl_permission("BypassGovernanceRetention"), None);
    }

    #[test]
    fn grant_header_rules() {
        assert!(
            grants_from_headers("o", "o", None, &[(AclPermission::Read, None)])
                .unwrap()
                .is_none()
        );
        let both = grants_from_headers("o", "o", Some("private"), &[(AclPermission::Read, Some("id=x"))]);
        assert!(both.is_err());
        let bad = grants_from_headers("o", "o", Some("everyone"), &[]);
        assert_eq!(*bad.unwrap_err().code(), s3s::S3ErrorCode::InvalidArgument);
        let acl = grants_from_headers("o", "o", Some("public-read"), &[])
            .unwrap()
            .unwrap();
        assert!(acl.is_public());
    }
}
