//! Access control lists: S3's canned ACLs and explicit grants on buckets and objects, and the
//! question an access check asks of them. Canonical user ids are access key ids.

use serde::{Deserialize, Serialize};

pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
pub const LOG_DELIVERY: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";

/// At most this many grants per ACL (S3's limit).
pub const MAX_GRANTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclPermission {
    #[serde(rename = "FULL_CONTROL")]
    FullControl,
    #[serde(rename = "READ")]
    Read,
    #[serde(rename = "WRITE")]
    Write,
    #[serde(rename = "READ_ACP")]
    ReadAcp,
    #[serde(rename = "WRITE_ACP")]
    WriteAcp,
}

impl AclPermission {
    pub fn as_str(self) -> &'static str {
        match self {
            AclPermission::FullControl => "FULL_CONTROL",
            AclPermission::Read => "READ",
            AclPermission::Write => "WRITE",
            AclPermission::ReadAcp => "READ_ACP",
            AclPermission::WriteAcp => "WRITE_ACP",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FULL_CONTROL" => AclPermission::FullControl,
            "READ" => AclPermission::Read,
            "WRITE" => AclPermission::Write,
            "READ_ACP" => AclPermission::ReadAcp,
            "WRITE_ACP" => AclPermission::WriteAcp,
            _ => return None,
        })
    }

    /// Whether holding `self` grants `wanted`.
    fn covers(self, wanted: AclPermission) -> bool {
        self == AclPermission::FullControl || self == wanted
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grantee {
    /// A canonical user id (here: an access key id).
    User(String),
    /// A predefined group by URI ([`ALL_USERS`], [`AUTHENTICATED_USERS`], [`LOG_DELIVERY`]).
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: AclPermission,
}

/// An owner and the grants on a bucket or an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// Canonical id (access key id) of the owner.
    pub owner: String,
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("unsupported canned ACL {0:?}")]
    UnknownCanned(String),
    #[error("{0}")]
    Malformed(String),
    #[error("grants by e-mail address are not supported: {0}")]
    Email(String),
}

impl Acl {
    /// The default: the owner has full control, nobody else has anything.
    pub fn private(owner: &str) -> Acl {
        Acl {
            owner: owner.to_string(),
            grants: vec![Grant {
                grantee: Grantee::User(owner.to_string()),
                permission: AclPermission::FullControl,
            }],
        }
    }

    /// A canned ACL (`x-amz-acl`). `bucket_owner` matters for the `bucket-owner-*` ACLs of
    /// objects.
    pub fn canned(name: &str, owner: &str, bucket_owner: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::private(owner);
        let group = |uri: &str, p| Grant {
            grantee: Grantee::Group(uri.to_string()),
            permission: p,
        };
        match name {
            "private" => {}
            "public-read" => acl.grants.push(group(ALL_USERS, AclPermission::Read)),
            "public-read-write" => {
                acl.grants.push(group(ALL_USERS, AclPermission::Read));
                acl.grants.push(group(ALL_USERS, AclPermission::Write));
            }
            "authenticated-read" => acl.grants.push(group(AUTHENTICATED_USERS, AclPermission::Read)),
            "aws-exec-read" => {}
            "log-delivery-write" => {
                acl.grants.push(group(LOG_DELIVERY, AclPermission::Write));
                acl.grants.push(group(LOG_DELIVERY, AclPermission::ReadAcp));
            }
            "bucket-owner-read" if bucket_owner != owner => acl.grants.push(Grant {
                grantee: Grantee::User(bucket_owner.to_string()),
                permission: AclPermission::Read,
            }),
            "bucket-owner-full-control" if bucket_owner != owner => acl.grants.push(Grant {
                grantee: Grantee::User(bucket_owner.to_string()),
                permission: AclPermission::FullControl,
            }),
            "bucket-owner-read" | "bucket-owner-full-control" => {}
            other => return Err(AclError::UnknownCanned(other.to_string())),
        }
        Ok(acl)
    }

    /// Builds an ACL from `x-amz-grant-*` headers: each value is a comma-separated list of
    /// `id="..."`, `uri="..."` or `emailAddress="..."`.
    pub fn from_grant_headers(owner: &str, headers: &[(AclPermission, &str)]) -> Result<Acl, AclError> {
        let mut grants = Vec::new();
        for (perm, value) in headers {
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (kind, v) = part
                    .split_once('=')
                    .ok_or_else(|| AclError::Malformed(format!("grant {part:?} is not type=\"value\"")))?;
                let v = v.trim().trim_matches('"').to_string();
                let grantee = match kind.trim().to_ascii_lowercase().as_str() {
                    "id" => Grantee::User(v),
                    "uri" => Grantee::group(&v)?,
                    "emailaddress" => return Err(AclError::Email(v)),
                    other => return Err(AclError::Malformed(format!("unknown grantee type {other:?}"))),
                };
                grants.push(Grant {
                    grantee,
                    permission: *perm,
                });
            }
        }
        let acl = Acl {
            owner: owner.to_string(),
            grants,
        };
        acl.check()?;
        Ok(acl)
    }

    /// Validates grant count and grantees.
    pub fn check(&self) -> Result<(), AclError> {
        if self.grants.len() > MAX_GRANTS {
            return Err(AclError::Malformed(format!("at most {MAX_GRANTS} grants are allowed")));
        }
        for g in &self.grants {
            match &g.grantee {
                Grantee::User(id) if id.is_empty() => {
                    return Err(AclError::Malformed("a grantee id is empty".into()));
                }
                Grantee::Group(uri) => {
                    Grantee::group(uri)?;
                }
                Grantee::User(_) => {}
            }
        }
        Ok(())
    }

    /// Whether the caller (`None`: anonymous; otherwise its access key id) holds `wanted`.
    /// With `ignore_public`, grants to everyone and to all authenticated users do not count.
    pub fn allows(&self, caller: Option<&str>, wanted: AclPermission, ignore_public: bool) -> bool {
        if caller.is_some_and(|c| c == self.owner) {
            return true;
        }
        self.grants.iter().any(|g| {
            g.permission.covers(wanted)
                && match &g.grantee {
                    Grantee::User(id) => caller == Some(id.as_str()),
                    Grantee::Group(uri) if uri == ALL_USERS => !ignore_public,
                    Grantee::Group(uri) if uri == AUTHENTICATED_USERS => !ignore_public && caller.is_some(),
                    Grantee::Group(_) => false,
                }
        })
    }

    /// Whether any grant reaches everyone or every authenticated user.
    pub fn is_public(&self) -> bool {
        self.grants
            .iter()
            .any(|g| matches!(&g.grantee, Grantee::Group(u) if u == ALL_USERS || u == AUTHENTICATED_USERS))
    }
}

impl Grantee {
    /// A group grantee, if `uri` names one of S3's predefined groups.
    pub fn group(uri: &str) -> Result<Grantee, AclError> {
        if [ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY].contains(&uri) {
            Ok(Grantee::Group(uri.to_string()))
        } else {
            Err(AclError::Malformed(format!("unknown grantee group {uri:?}")))
        }
    }
}

/// A bucket's public access block: overrides that keep ACLs and policies from opening it up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAccessBlock {
    /// Refuse requests that set a public ACL.
    #[serde(default)]
    pub block_public_acls: bool,
    /// Ignore public grants in ACLs when checking access.
    #[serde(default)]
    pub ignore_public_acls: bool,
    /// Refuse bucket policies that grant public access.
    #[serde(default)]
    pub block_public_policy: bool,
    /// When the policy is public, only authenticated keys may use what it grants.
    #[serde(default)]
    pub restrict_public_buckets: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_acls() {
        let a = Acl::canned("public-read", "OWNER", "OWNER").unwrap();
        assert!(a.allows(None, AclPermission::Read, false));
        assert!(!a.allows(None, AclPermission::Write, false));
        assert!(
            !a.allows(None, AclPermission::Read, true),
            "ignored when public ACLs are ignored"
        );
        assert!(a.is_public());
        let rw = Acl::canned("public-read-write", "OWNER", "OWNER").unwrap();
        assert!(rw.allows(Some("OTHER"), AclPermission::Write, false));
        let auth = Acl::canned("authenticated-read", "OWNER", "OWNER").unwrap();
        assert!(!auth.allows(None, AclPermission::Read, false));
        assert!(auth.allows(Some("OTHER"), AclPermission::Read, false));
        let private = Acl::canned("private", "OWNER", "OWNER").unwrap();
        assert!(!private.allows(Some("OTHER"), AclPermission::Read, false));
        assert!(private.allows(Some("OWNER"), AclPermission::WriteAcp, false));
        assert!(!private.is_public());
        let bofc = Acl::canned("bucket-owner-full-control", "WRITER", "BOWNER").unwrap();
        assert!(bofc.allows(Some("BOWNER"), AclPermission::ReadAcp, false));
        assert!(matches!(
            Acl::canned("world-writable", "o", "o"),
            Err(AclError::UnknownCanned(_))
        ));
    }

    #[test]
    fn grant_headers() {
        let a = Acl::from_grant_headers(
            "OWNER",
            &[
                (
                    AclPermission::Read,
                    "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\", id=\"AKIA1\"",
                ),
                (AclPermission::FullControl, "id=AKIA2"),
            ],
        )
        .unwrap();
        assert_eq!(a.grants.len(), 3);
        assert!(a.allows(None, AclPermission::Read, false));
        assert!(a.allows(Some("AKIA2"), AclPermission::WriteAcp, false));
        assert!(!a.allows(Some("AKIA1"), AclPermission::Write, false));
        assert!(matches!(
            Acl::from_grant_headers("o", &[(AclPermission::Read, "emailAddress=\"a@b.c\"")]),
            Err(AclError::Email(_))
        ));
        assert!(Acl::from_grant_headers("o", &[(AclPermission::Read, "uri=\"http://evil/group\"")]).is_err());
        assert!(Acl::from_grant_headers("o", &[(AclPermission::Read, "nonsense")]).is_err());
    }
}
