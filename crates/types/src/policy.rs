//! Bucket policies: the AWS access policy language, parsed, validated against the bucket it is
//! attached to, and evaluated against one request. Pure: the S3 layer supplies the request's
//! principal, action, resource and condition keys.
//!
//! Evaluation follows AWS: a statement applies when its principal, action, resource and every
//! condition match; an applying `Deny` wins over any `Allow`; with no applying statement the
//! policy neither allows nor denies (other grants, such as key permissions or ACLs, decide).

use crate::glob;
use serde_json::Value;
use std::net::IpAddr;

/// Largest accepted policy document (AWS: 20 KB).
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

/// A parsed bucket policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// Who a statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principals {
    /// `"*"` or `{"AWS": "*"}`: everyone, anonymous requests included.
    Any,
    /// Access key ids, `arn:aws:iam::<account>:user/<name or access key>`, canonical ids.
    Ids(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principals: Principals,
    /// `NotPrincipal`: the statement applies to everyone except `principals`.
    pub not_principal: bool,
    pub actions: Vec<String>,
    pub not_action: bool,
    pub resources: Vec<String>,
    pub not_resource: bool,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Null,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        use Op::*;
        Some(match name {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "Bool" => Bool,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "ArnEquals" => ArnEquals,
            "ArnLike" => ArnLike,
            "ArnNotEquals" => ArnNotEquals,
            "ArnNotLike" => ArnNotLike,
            "Null" => Null,
            _ => return None,
        })
    }

    /// Negated operators match when the key is absent from the request.
    fn negated(self) -> bool {
        use Op::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

/// Multi-valued key qualifier (`ForAnyValue:` / `ForAllValues:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Single,
    ForAnyValue,
    ForAllValues,
}

/// One operator applied to one condition key.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: Op,
    pub if_exists: bool,
    pub set: SetOp,
    /// Lower-cased (condition keys are case-insensitive).
    pub key: String,
    pub values: Vec<String>,
}

/// What the policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// No statement applies.
    Neither,
}

/// The authenticated caller, or `None` in [`Request::principal`] for anonymous requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub access_key: String,
    pub name: String,
}

/// One request as a policy sees it.
pub struct Request<'a> {
    pub principal: Option<&'a Identity>,
    /// IAM action, e.g. `s3:GetObject`.
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: &'a str,
    /// Condition keys present in the request (lower-cased names) and their values.
    pub context: &'a [(&'a str, String)],
}

impl Request<'_> {
    fn value(&self, key: &str) -> Option<&str> {
        self.context.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }
}

/// Why a policy document was refused (the S3 layer answers `MalformedPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

/// Every S3 action a policy may name (wildcard patterns must match at least one).
pub const ACTIONS: &[&str] = &[
    "s3:AbortMultipartUpload",
    "s3:BypassGovernanceRetention",
    "s3:CreateBucket",
    "s3:DeleteBucket",
    "s3:DeleteBucketPolicy",
    "s3:DeleteObject",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectVersionTagging",
    "s3:GetBucketAcl",
    "s3:GetBucketCORS",
    "s3:GetBucketLocation",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketPolicy",
    "s3:GetBucketPolicyStatus",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:GetObject",
    "s3:GetObjectAcl",
    "s3:GetObjectAttributes",
    "s3:GetObjectLegalHold",
    "s3:GetObjectRetention",
    "s3:GetObjectTagging",
    "s3:GetObjectVersion",
    "s3:GetObjectVersionAcl",
    "s3:GetObjectVersionAttributes",
    "s3:GetObjectVersionTagging",
    "s3:ListAllMyBuckets",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListBucketVersions",
    "s3:ListMultipartUploadParts",
    "s3:PutBucketAcl",
    "s3:PutBucketCORS",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketPolicy",
    "s3:PutBucketPublicAccessBlock",
    "s3:PutBucketTagging",
    "s3:PutBucketVersioning",
    "s3:PutEncryptionConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:PutObject",
    "s3:PutObjectAcl",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionAcl",
    "s3:PutObjectVersionTagging",
];

const ARN_PREFIX: &str = "arn:aws:s3:::";

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => err(format!(
            "Policy has an invalid {what}: expected a string or a list of strings"
        )),
    };
    match v {
        Value::Array(a) if a.is_empty() => err(format!("Policy has an empty {what} list")),
        Value::Array(a) => a.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

fn parse_principal(v: &Value) -> Result<Principals, PolicyError> {
    match v {
        Value::String(s) if s == "*" => Ok(Principals::Any),
        Value::Object(m) if !m.is_empty() => {
            let mut ids = Vec::new();
            for (kind, vals) in m {
                if !matches!(kind.as_str(), "AWS" | "CanonicalUser" | "Service" | "Federated") {
                    return err(format!("Invalid principal in policy: unknown principal type {kind:?}"));
                }
                let vals = strings(vals, "principal")?;
                if kind == "AWS" && vals.iter().any(|s| s == "*") {
                    return Ok(Principals::Any);
                }
                if kind == "AWS" || kind == "CanonicalUser" {
                    ids.extend(vals);
                }
            }
            Ok(Principals::Ids(ids))
        }
        _ => err("Invalid principal in policy: expected \"*\" or an object such as {\"AWS\": [...]}"),
    }
}

fn parse_conditions(v: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return err("Policy has an invalid condition block: expected an object");
    };
    let mut out = Vec::new();
    for (name, keys) in ops {
        let (set, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (SetOp::ForAnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (SetOp::ForAllValues, r)
        } else {
            (SetOp::Single, name.as_str())
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(b) if b != "Null" => (true, b),
            _ => (false, rest),
        };
        let Some(op) = Op::parse(base) else {
            return err(format!("Policy has an invalid condition operator {name:?}"));
        };
        let Value::Object(keys) = keys else {
            return err(format!("Policy condition {name:?} must map condition keys to values"));
        };
        for (key, vals) in keys {
            let values = strings(vals, "condition value")?;
            for val in &values {
                let ok = match op {
                    Op::IpAddress | Op::NotIpAddress => parse_net(val).is_some(),
                    Op::Bool | Op::Null => val == "true" || val == "false",
                    Op::NumericEquals
                    | Op::NumericNotEquals
                    | Op::NumericLessThan
                    | Op::NumericLessThanEquals
                    | Op::NumericGreaterThan
                    | Op::NumericGreaterThanEquals => val.parse::<f64>().is_ok(),
                    _ => true,
                };
                if !ok {
                    return err(format!(
                        "Policy has an invalid value {val:?} for condition {name:?} on {key:?}"
                    ));
                }
            }
            out.push(Condition {
                op,
                if_exists,
                set,
                key: key.to_ascii_lowercase(),
                values,
            });
        }
    }
    Ok(out)
}

/// An IP network in CIDR notation or a single address.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Parses and validates a policy for `bucket`: every resource must lie in the bucket, every
/// action must name an S3 action, every statement needs a principal.
pub fn parse(text: &str, bucket: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return err(format!("Policies must be at most {MAX_POLICY_BYTES} bytes"));
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| PolicyError(format!("This policy contains invalid Json: {e}")))?;
    let Value::Object(doc) = doc else {
        return err("This policy contains invalid Json: expected an object");
    };
    for k in doc.keys() {
        if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
            return err(format!("Unknown field {k}"));
        }
    }
    if let Some(v) = doc.get("Version")
        && !matches!(v.as_str(), Some("2012-10-17" | "2008-10-17"))
    {
        return err("The policy must contain a valid version string (2012-10-17 or 2008-10-17)");
    }
    let stmts: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(a)) if !a.is_empty() => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => return err("Missing required field Statement"),
    };
    let mut statements = Vec::with_capacity(stmts.len());
    for s in stmts {
        let Value::Object(s) = s else {
            return err("Each statement must be an object");
        };
        for k in s.keys() {
            if !matches!(
                k.as_str(),
                "Sid"
                    | "Effect"
                    | "Principal"
                    | "NotPrincipal"
                    | "Action"
                    | "NotAction"
                    | "Resource"
                    | "NotResource"
                    | "Condition"
            ) {
                return err(format!("Unknown field {k}"));
            }
        }
        let effect = match s.get("Effect").and_then(Value::as_str) {
            Some("Allow") => Effect::Allow,
            Some("Deny") => Effect::Deny,
            Some(other) => return err(format!("Invalid effect: {other}")),
            None => return err("Missing required field Effect"),
        };
        let (principals, not_principal) = match (s.get("Principal"), s.get("NotPrincipal")) {
            (Some(p), None) => (parse_principal(p)?, false),
            (None, Some(p)) => (parse_principal(p)?, true),
            (None, None) => return err("Missing required field Principal"),
            (Some(_), Some(_)) => return err("A statement cannot have both Principal and NotPrincipal"),
        };
        let (actions, not_action) = match (s.get("Action"), s.get("NotAction")) {
            (Some(a), None) => (strings(a, "action")?, false),
            (None, Some(a)) => (strings(a, "action")?, true),
            (None, None) => return err("Missing required field Action"),
            (Some(_), Some(_)) => return err("A statement cannot have both Action and NotAction"),
        };
        for a in &actions {
            if a != "*" && !ACTIONS.iter().any(|known| glob::matches(a, known, true)) {
                return err(format!("Policy has invalid action: {a}"));
            }
        }
        let (resources, not_resource) = match (s.get("Resource"), s.get("NotResource")) {
            (Some(r), None) => (strings(r, "resource")?, false),
            (None, Some(r)) => (strings(r, "resource")?, true),
            (None, None) => return err("Missing required field Resource"),
            (Some(_), Some(_)) => return err("A statement cannot have both Resource and NotResource"),
        };
        for r in &resources {
            let in_bucket = r == "*"
                || r.strip_prefix(ARN_PREFIX).is_some_and(|rest| {
                    let b = rest.split('/').next().unwrap_or_default();
                    glob::matches(b, bucket, false)
                });
            if !in_bucket {
                return err(format!("Policy has invalid resource: {r} is not in bucket {bucket}"));
            }
        }
        let conditions = match s.get("Condition") {
            Some(c) => parse_conditions(c)?,
            None => Vec::new(),
        };
        statements.push(Statement {
            sid: s.get("Sid").and_then(Value::as_str).map(str::to_string),
            effect,
            principals,
            not_principal,
            actions,
            not_action,
            resources,
            not_resource,
            conditions,
        });
    }
    Ok(Policy { statements })
}

impl Principals {
    fn matches(&self, who: Option<&Identity>) -> bool {
        match (self, who) {
            (Principals::Any, _) => true,
            (Principals::Ids(_), None) => false,
            (Principals::Ids(ids), Some(id)) => ids.iter().any(|p| {
                p == &id.access_key
                    || (p.starts_with("arn:aws:iam::")
                        && p.rsplit_once(":user/")
                            .is_some_and(|(_, u)| u == id.name || u == id.access_key))
            }),
        }
    }
}

impl Condition {
    fn matches(&self, req: &Request<'_>) -> bool {
        let value = req.value(&self.key);
        if self.op == Op::Null {
            let want_absent = self.values.iter().any(|v| v == "true");
            return value.is_none() == want_absent;
        }
        let Some(v) = value else {
            return match self.set {
                SetOp::ForAllValues => true,
                SetOp::ForAnyValue => false,
                SetOp::Single => self.if_exists || self.op.negated(),
            };
        };
        let one = |want: &str| -> bool {
            use Op::*;
            match self.op {
                StringEquals | StringNotEquals | ArnEquals | ArnNotEquals => v == want,
                StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => v.eq_ignore_ascii_case(want),
                StringLike | StringNotLike | ArnLike | ArnNotLike => glob::matches(want, v, false),
                NumericEquals | NumericNotEquals => num(v).zip(num(want)).is_some_and(|(a, b)| a == b),
                NumericLessThan => num(v).zip(num(want)).is_some_and(|(a, b)| a < b),
                NumericLessThanEquals => num(v).zip(num(want)).is_some_and(|(a, b)| a <= b),
                NumericGreaterThan => num(v).zip(num(want)).is_some_and(|(a, b)| a > b),
                NumericGreaterThanEquals => num(v).zip(num(want)).is_some_and(|(a, b)| a >= b),
                Bool => v.eq_ignore_ascii_case(want),
                IpAddress | NotIpAddress => match (v.parse::<IpAddr>(), parse_net(want)) {
                    (Ok(ip), Some(net)) => net.contains(&ip),
                    _ => false,
                },
                Null => false,
            }
        };
        let any = self.values.iter().any(|w| one(w));
        if self.op.negated() { !any } else { any }
    }
}

fn num(s: &str) -> Option<f64> {
    s.parse().ok()
}

impl Statement {
    fn applies(&self, req: &Request<'_>) -> bool {
        if self.principals.matches(req.principal) == self.not_principal {
            return false;
        }
        let action = self
            .actions
            .iter()
            .any(|a| a == "*" || glob::matches(a, req.action, true));
        if action == self.not_action {
            return false;
        }
        let resource = self
            .resources
            .iter()
            .any(|r| r == "*" || glob::matches(r, req.resource, false));
        if resource == self.not_resource {
            return false;
        }
        self.conditions.iter().all(|c| c.matches(req))
    }

    /// An `Allow` open to everyone that no condition restricts to known sources.
    fn is_public(&self) -> bool {
        if self.effect != Effect::Allow || (self.principals != Principals::Any && !self.not_principal) {
            return false;
        }
        !self.conditions.iter().any(|c| {
            let fixed_source = matches!(
                c.key.as_str(),
                "aws:sourcevpc"
                    | "aws:sourcevpce"
                    | "aws:sourceaccount"
                    | "aws:sourcearn"
                    | "aws:principalaccount"
                    | "aws:principalorgid"
                    | "aws:userid"
                    | "aws:username"
                    | "aws:principalarn"
            );
            match c.op {
                Op::IpAddress => c.key == "aws:sourceip" && c.values.iter().all(|v| !v.ends_with("/0")),
                Op::StringEquals | Op::StringEqualsIgnoreCase | Op::ArnEquals => fixed_source,
                Op::StringLike | Op::ArnLike => fixed_source && c.values.iter().all(|v| !v.contains('*')),
                _ => false,
            }
        })
    }
}

impl Policy {
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.applies(req) {
                match s.effect {
                    Effect::Deny => return Decision::Deny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed { Decision::Allow } else { Decision::Neither }
    }

    /// Whether the policy grants access to anyone at all (AWS's "public" for
    /// GetBucketPolicyStatus and the public access block).
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(Statement::is_public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_READ: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pub","Effect":"Allow",
        "Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::web/*"]}]}"#;

    fn req<'a>(
        who: Option<&'a Identity>,
        action: &'a str,
        resource: &'a str,
        ctx: &'a [(&'a str, String)],
    ) -> Request<'a> {
        Request {
            principal: who,
            action,
            resource,
            context: ctx,
        }
    }

    #[test]
    fn public_read_allows_anonymous_get_only() {
        let p = parse(PUBLIC_READ, "web").unwrap();
        assert_eq!(
            p.evaluate(&req(None, "s3:GetObject", "arn:aws:s3:::web/a/b.html", &[])),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:PutObject", "arn:aws:s3:::web/a", &[])),
            Decision::Neither
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:ListBucket", "arn:aws:s3:::web", &[])),
            Decision::Neither
        );
        assert!(p.is_public());
    }

    #[test]
    fn explicit_deny_wins() {
        let text = r#"{"Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*"},
            {"Effect":"Deny","Principal":{"AWS":"*"},"Action":"s3:DeleteObject","Resource":"arn:aws:s3:::b/keep/*"}]}"#;
        let p = parse(text, "b").unwrap();
        assert_eq!(
            p.evaluate(&req(None, "s3:DeleteObject", "arn:aws:s3:::b/x", &[])),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(&req(None, "s3:DeleteObject", "arn:aws:s3:::b/keep/x", &[])),
            Decision::Deny
        );
    }

    #[test]
    fn principals_by_key_and_arn() {
        let text = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":["AKIAONE","arn:aws:iam::123:user/bob"]},
            "Action":"s3:Get*","Resource":"arn:aws:s3:::b/*"}}"#;
        let p = parse(text, "b").unwrap();
        let one = Identity {
            access_key: "AKIAONE".into(),
            name: "x".into(),
        };
        let bob = Identity {
            access_key: "AKIABOB".into(),
            name: "bob".into(),
        };
        let eve = Identity {
            access_key: "AKIAEVE".into(),
            name: "eve".into(),
        };
        for (who, want) in [
            (Some(&one), Decision::Allow),
            (Some(&bob), Decision::Allow),
            (Some(&eve), Decision::Neither),
            (None, Decision::Neither),
        ] {
            assert_eq!(p.evaluate(&req(who, "s3:GetObject", "arn:aws:s3:::b/k", &[])), want);
        }
        assert!(!p.is_public());
    }

    #[test]
    fn not_action_not_resource_not_principal() {
        let text = r#"{"Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":"AKIAADMIN"},"NotAction":["s3:Get*","s3:List*"],
            "NotResource":"arn:aws:s3:::b/scratch/*"}]}"#;
        let p = parse(text, "b").unwrap();
        let admin = Identity {
            access_key: "AKIAADMIN".into(),
            name: "admin".into(),
        };
        let other = Identity {
            access_key: "AKIAO".into(),
            name: "o".into(),
        };
        assert_eq!(
            p.evaluate(&req(Some(&other), "s3:PutObject", "arn:aws:s3:::b/x", &[])),
            Decision::Deny
        );
        assert_eq!(
            p.evaluate(&req(Some(&admin), "s3:PutObject", "arn:aws:s3:::b/x", &[])),
            Decision::Neither
        );
        assert_eq!(
            p.evaluate(&req(Some(&other), "s3:GetObject", "arn:aws:s3:::b/x", &[])),
            Decision::Neither
        );
        assert_eq!(
            p.evaluate(&req(Some(&other), "s3:PutObject", "arn:aws:s3:::b/scratch/x", &[])),
            Decision::Neither
        );
    }

    #[test]
    fn conditions() {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b",
            "Condition":{"StringLike":{"s3:prefix":["home/*",""]},"IpAddress":{"aws:SourceIp":["10.0.0.0/8","127.0.0.1"]},
            "Bool":{"aws:SecureTransport":false}}}]}"#;
        let p = parse(text, "b").unwrap();
        let ok = [
            ("s3:prefix", "home/me/".to_string()),
            ("aws:sourceip", "10.1.2.3".into()),
            ("aws:securetransport", "false".into()),
        ];
        assert_eq!(
            p.evaluate(&req(None, "s3:ListBucket", "arn:aws:s3:::b", &ok)),
            Decision::Allow
        );
        let bad_ip = [
            ("s3:prefix", "home/".to_string()),
            ("aws:sourceip", "192.168.1.1".into()),
            ("aws:securetransport", "false".into()),
        ];
        assert_eq!(
            p.evaluate(&req(None, "s3:ListBucket", "arn:aws:s3:::b", &bad_ip)),
            Decision::Neither
        );
        let no_prefix = [
            ("aws:sourceip", "127.0.0.1".to_string()),
            ("aws:securetransport", "false".into()),
        ];
        assert_eq!(
            p.evaluate(&req(None, "s3:ListBucket", "arn:aws:s3:::b", &no_prefix)),
            Decision::Neither
        );
        assert!(!p.is_public(), "restricted to known networks");

        let deny = parse(r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b/*",
            "Condition":{"NotIpAddress":{"aws:SourceIp":"10.0.0.0/8"},"StringNotEquals":{"aws:Referer":"https://ok.example/"}}}]}"#, "b").unwrap();
        let outside = [("aws:sourceip", "8.8.8.8".to_string())];
        assert_eq!(
            deny.evaluate(&req(None, "s3:GetObject", "arn:aws:s3:::b/k", &outside)),
            Decision::Deny,
            "absent key matches a negated operator"
        );
        let with_ref = [
            ("aws:sourceip", "8.8.8.8".to_string()),
            ("aws:referer", "https://ok.example/".into()),
        ];
        assert_eq!(
            deny.evaluate(&req(None, "s3:GetObject", "arn:aws:s3:::b/k", &with_ref)),
            Decision::Neither
        );
        let inside = [("aws:sourceip", "10.9.9.9".to_string())];
        assert_eq!(
            deny.evaluate(&req(None, "s3:GetObject", "arn:aws:s3:::b/k", &inside)),
            Decision::Neither
        );

        let acl = parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*",
            "Condition":{"StringEquals":{"s3:x-amz-acl":"bucket-owner-full-control"},"NullIfExists":{"x":"true"},"Null":{"s3:x-amz-acl":"false"}}}]}"#,
            "b",
        );
        assert!(acl.is_err(), "NullIfExists is not an operator");
        let acl = parse(r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*",
            "Condition":{"StringEquals":{"s3:x-amz-acl":"bucket-owner-full-control"},"NumericLessThanIfExists":{"s3:max-keys":"10"}}}]}"#, "b").unwrap();
        let with = [("s3:x-amz-acl", "bucket-owner-full-control".to_string())];
        assert_eq!(
            acl.evaluate(&req(None, "s3:PutObject", "arn:aws:s3:::b/k", &with)),
            Decision::Allow
        );
        assert_eq!(
            acl.evaluate(&req(None, "s3:PutObject", "arn:aws:s3:::b/k", &[])),
            Decision::Neither
        );
    }

    #[test]
    fn malformed_policies_are_refused_with_a_reason() {
        let cases = [
            ("not json", "invalid Json"),
            (r#"{"Statement":[]}"#, "Statement"),
            (
                r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
                "Principal",
            ),
            (
                r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
                "effect",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObjekt","Resource":"arn:aws:s3:::b/*"}]}"#,
                "invalid action",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"ec2:*","Resource":"arn:aws:s3:::b/*"}]}"#,
                "invalid action",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}]}"#,
                "invalid resource",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"StringFoo":{"a":"b"}}}]}"#,
                "operator",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*","Condition":{"IpAddress":{"aws:SourceIp":"nope"}}}]}"#,
                "invalid value",
            ),
            (
                r#"{"Version":"2001-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
                "version",
            ),
            (
                r#"{"Statement":[{"Effect":"Allow","Principal":{"Robot":"x"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}"#,
                "principal",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, "b").unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
        assert!(
            parse(
                &format!("{{\"Statement\":[],\"Id\":\"{}\"}}", "x".repeat(MAX_POLICY_BYTES)),
                "b"
            )
            .is_err()
        );
    }
}
