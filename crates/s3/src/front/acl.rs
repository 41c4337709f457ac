//! Who may do what: bucket and object ACLs, bucket policies and the public access block.

use super::{Front, s3r};
use crate::authz::{acl_err, grants_from_headers};
use crate::convert::*;
use ironbucket_store::{Acl, AclPermission, PublicAccessBlock};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

pub(super) async fn put_bucket_policy(
    front: &Front,
    req: S3Request<PutBucketPolicyInput>,
) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    let i = req.input;
    let parsed = ironbucket_types::policy::parse(&i.policy, &i.bucket)
        .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e.0))?;
    let access = front.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
    if parsed.is_public() && access.public_access_block.is_some_and(|p| p.block_public_policy) {
        return Err(s3_error!(
            AccessDenied,
            "Access Denied: the bucket's public access block (BlockPublicPolicy) forbids public policies"
        ));
    }
    front
        .store
        .put_bucket_policy(&i.bucket, Some(i.policy))
        .await
        .map_err(s3_err)?;
    s3r(PutBucketPolicyOutput {})
}

pub(super) async fn get_bucket_policy(
    front: &Front,
    req: S3Request<GetBucketPolicyInput>,
) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    let access = front.store.bucket_access(&req.input.bucket).await.map_err(s3_err)?;
    let Some(policy) = access.policy else {
        return Err(s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"));
    };
    s3r(GetBucketPolicyOutput { policy: Some(policy) })
}

pub(super) async fn delete_bucket_policy(
    front: &Front,
    req: S3Request<DeleteBucketPolicyInput>,
) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
    front
        .store
        .put_bucket_policy(&req.input.bucket, None)
        .await
        .map_err(s3_err)?;
    s3r(DeleteBucketPolicyOutput {})
}

pub(super) async fn get_bucket_policy_status(
    front: &Front,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
    let b = &req.input.bucket;
    let access = front.store.bucket_access(b).await.map_err(s3_err)?;
    let Some(text) = access.policy else {
        return Err(s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"));
    };
    let public = ironbucket_types::policy::parse(&text, b).is_ok_and(|p| p.is_public());
    s3r(GetBucketPolicyStatusOutput {
        policy_status: Some(PolicyStatus {
            is_public: Some(public),
        }),
    })
}

pub(super) async fn put_bucket_acl(
    front: &Front,
    req: S3Request<PutBucketAclInput>,
) -> S3Result<S3Response<PutBucketAclOutput>> {
    let i = req.input;
    let access = front.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
    let owner = access
        .acl
        .as_ref()
        .map_or_else(|| front.root_id.clone(), |a| a.owner.clone());
    let acl = new_acl(
        &owner,
        &owner,
        i.acl.as_ref().map(|a| a.as_str()),
        i.access_control_policy,
        &[
            (AclPermission::FullControl, i.grant_full_control.as_deref()),
            (AclPermission::Read, i.grant_read.as_deref()),
            (AclPermission::ReadAcp, i.grant_read_acp.as_deref()),
            (AclPermission::Write, i.grant_write.as_deref()),
            (AclPermission::WriteAcp, i.grant_write_acp.as_deref()),
        ],
    )?;
    front.check_public_acl(access.public_access_block, Some(&acl))?;
    front.store.put_bucket_acl(&i.bucket, acl).await.map_err(s3_err)?;
    s3r(PutBucketAclOutput {})
}

pub(super) async fn get_bucket_acl(
    front: &Front,
    req: S3Request<GetBucketAclInput>,
) -> S3Result<S3Response<GetBucketAclOutput>> {
    let access = front.store.bucket_access(&req.input.bucket).await.map_err(s3_err)?;
    let acl = access.acl.unwrap_or_else(|| Acl::private(&front.root_id));
    let (owner, grants) = acl_to_dto(&acl);
    s3r(GetBucketAclOutput {
        owner: Some(owner),
        grants: Some(grants),
    })
}

pub(super) async fn put_object_acl(
    front: &Front,
    req: S3Request<PutObjectAclInput>,
) -> S3Result<S3Response<PutObjectAclOutput>> {
    let i = req.input;
    let access = front.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
    let bucket_owner = access
        .acl
        .as_ref()
        .map_or_else(|| front.root_id.clone(), |a| a.owner.clone());
    let owner = front
        .store
        .get_object_acl(&i.bucket, &i.key, i.version_id.as_deref())
        .await
        .map_err(s3_err)?
        .map_or_else(|| bucket_owner.clone(), |a| a.owner);
    let acl = new_acl(
        &owner,
        &bucket_owner,
        i.acl.as_ref().map(|a| a.as_str()),
        i.access_control_policy,
        &[
            (AclPermission::FullControl, i.grant_full_control.as_deref()),
            (AclPermission::Read, i.grant_read.as_deref()),
            (AclPermission::ReadAcp, i.grant_read_acp.as_deref()),
            (AclPermission::WriteAcp, i.grant_write_acp.as_deref()),
        ],
    )?;
    front.check_public_acl(access.public_access_block, Some(&acl))?;
    front
        .store
        .put_object_acl(&i.bucket, &i.key, i.version_id.as_deref(), acl)
        .await
        .map_err(s3_err)?;
    s3r(PutObjectAclOutput::default())
}

pub(super) async fn get_object_acl(
    front: &Front,
    req: S3Request<GetObjectAclInput>,
) -> S3Result<S3Response<GetObjectAclOutput>> {
    let i = req.input;
    let acl = match front
        .store
        .get_object_acl(&i.bucket, &i.key, i.version_id.as_deref())
        .await
        .map_err(s3_err)?
    {
        Some(a) => a,
        None => {
            let access = front.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
            Acl::private(access.acl.as_ref().map_or(front.root_id.as_str(), |a| a.owner.as_str()))
        }
    };
    let (owner, grants) = acl_to_dto(&acl);
    s3r(GetObjectAclOutput {
        owner: Some(owner),
        grants: Some(grants),
        ..Default::default()
    })
}

pub(super) async fn put_public_access_block(
    front: &Front,
    req: S3Request<PutPublicAccessBlockInput>,
) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
    let i = req.input;
    let c = i.public_access_block_configuration;
    let block = PublicAccessBlock {
        block_public_acls: c.block_public_acls.unwrap_or(false),
        ignore_public_acls: c.ignore_public_acls.unwrap_or(false),
        block_public_policy: c.block_public_policy.unwrap_or(false),
        restrict_public_buckets: c.restrict_public_buckets.unwrap_or(false),
    };
    front
        .store
        .put_public_access_block(&i.bucket, Some(block))
        .await
        .map_err(s3_err)?;
    s3r(PutPublicAccessBlockOutput {})
}

pub(super) async fn get_public_access_block(
    front: &Front,
    req: S3Request<GetPublicAccessBlockInput>,
) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
    let access = front.store.bucket_access(&req.input.bucket).await.map_err(s3_err)?;
    let Some(b) = access.public_access_block else {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
            "The public access block configuration was not found",
        );
        e.set_status_code(hyper::StatusCode::NOT_FOUND);
        return Err(e);
    };
    s3r(GetPublicAccessBlockOutput {
        public_access_block_configuration: Some(PublicAccessBlockConfiguration {
            block_public_acls: Some(b.block_public_acls),
            ignore_public_acls: Some(b.ignore_public_acls),
            block_public_policy: Some(b.block_public_policy),
            restrict_public_buckets: Some(b.restrict_public_buckets),
        }),
    })
}

pub(super) async fn delete_public_access_block(
    front: &Front,
    req: S3Request<DeletePublicAccessBlockInput>,
) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
    front
        .store
        .put_public_access_block(&req.input.bucket, None)
        .await
        .map_err(s3_err)?;
    s3r(DeletePublicAccessBlockOutput {})
}

/// The ACL a Put*Acl request sets: an `AccessControlPolicy` body, or a canned ACL or grant
/// headers (one of them is required).
fn new_acl(
    owner: &str,
    bucket_owner: &str,
    canned: Option<&str>,
    body: Option<AccessControlPolicy>,
    grants: &[(AclPermission, Option<&str>)],
) -> S3Result<Acl> {
    match body {
        Some(_) if canned.is_some() => Err(s3_error!(
            UnexpectedContent,
            "This request does not support content when a canned ACL is given"
        )),
        Some(p) => acl_from_dto(owner, p),
        None => grants_from_headers(owner, bucket_owner, canned, grants)?.ok_or_else(|| {
            s3_error!(
                MissingSecurityHeader,
                "Your request is missing a canned ACL, grant headers or an AccessControlPolicy body"
            )
        }),
    }
}

fn acl_to_dto(acl: &Acl) -> (Owner, Vec<Grant>) {
    use ironbucket_types::acl::Grantee as G;
    let owner = Owner {
        display_name: Some(acl.owner.clone()),
        id: Some(acl.owner.clone()),
    };
    let grants = acl
        .grants
        .iter()
        .map(|g| Grant {
            grantee: Some(match &g.grantee {
                G::User(id) => Grantee {
                    display_name: Some(id.clone()),
                    email_address: None,
                    id: Some(id.clone()),
                    type_: Type::from_static(Type::CANONICAL_USER),
                    uri: None,
                },
                G::Group(uri) => Grantee {
                    display_name: None,
                    email_address: None,
                    id: None,
                    type_: Type::from_static(Type::GROUP),
                    uri: Some(uri.clone()),
                },
            }),
            permission: Some(Permission::from(g.permission.as_str().to_string())),
        })
        .collect();
    (owner, grants)
}

/// An `AccessControlPolicy` body as an ACL owned by `owner` (the owner cannot be changed).
fn acl_from_dto(owner: &str, p: AccessControlPolicy) -> S3Result<Acl> {
    use ironbucket_types::acl::{AclError, Grant as G, Grantee as E};
    if let Some(id) = p.owner.as_ref().and_then(|o| o.id.as_deref())
        && id != owner
    {
        return Err(s3_error!(AccessDenied, "The ACL's owner must be the current owner"));
    }
    let mut grants = Vec::new();
    for g in p.grants.unwrap_or_default() {
        let perm = g
            .permission
            .as_ref()
            .and_then(|p| AclPermission::parse(p.as_str()))
            .ok_or_else(|| s3_error!(MalformedACLError, "A grant has a missing or unknown Permission"))?;
        let ge = g
            .grantee
            .ok_or_else(|| s3_error!(MalformedACLError, "A grant has no Grantee"))?;
        let grantee = match ge.type_.as_str() {
            Type::CANONICAL_USER => E::User(
                ge.id
                    .ok_or_else(|| s3_error!(MalformedACLError, "A CanonicalUser grantee needs an ID"))?,
            ),
            Type::GROUP => E::group(
                ge.uri
                    .as_deref()
                    .ok_or_else(|| s3_error!(MalformedACLError, "A Group grantee needs a URI"))?,
            )
            .map_err(acl_err)?,
            Type::AMAZON_CUSTOMER_BY_EMAIL => {
                return Err(acl_err(AclError::Email(ge.email_address.unwrap_or_default())));
            }
            other => return Err(acl_err(AclError::Malformed(format!("unknown grantee type {other:?}")))),
        };
        grants.push(G {
            grantee,
            permission: perm,
        });
    }
    let acl = Acl {
        owner: owner.to_string(),
        grants,
    };
    acl.check().map_err(acl_err)?;
    Ok(acl)
}
