//! `s3s::S3` implemented over `Arc<dyn ObjectStore>`: request parsing into store requests and
//! store results into S3 responses. No storage logic lives here.
//!
//! This file holds [`Front`], the one `impl S3` block that `s3s` requires (each method hands
//! its request to the module of its operation family) and the request parsing the families
//! share. The families: `bucket` (buckets and listing their contents), `bucket_config` (bucket
//! tagging, lifecycle, default encryption, CORS), `object` (single objects, DeleteObjects,
//! object tagging and attributes), `multipart` (multipart uploads), `acl` (ACLs, bucket
//! policies, public access block) and `lock` (versioning, object lock, retention, legal hold).

use crate::S3Config;
use crate::authz::grants_from_headers;
use crate::convert::*;
use base64::Engine;
use futures::TryStreamExt;
use ironbucket_store::{Acl, AclPermission, PublicAccessBlock};
use ironbucket_store::{BodyChecks, ByteStream, Conditions, ObjectStore};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The SSE-C key of a request's `x-amz-server-side-encryption-customer-*` fields.
macro_rules! sse_c {
    ($i:expr) => {
        customer_key(
            $i.sse_customer_algorithm.as_ref(),
            $i.sse_customer_key.as_ref(),
            $i.sse_customer_key_md5.as_ref(),
        )
    };
}

/// The SSE-C key of a copy source (`x-amz-copy-source-server-side-encryption-customer-*`).
macro_rules! copy_source_sse_c {
    ($i:expr) => {
        customer_key(
            $i.copy_source_sse_customer_algorithm.as_ref(),
            $i.copy_source_sse_customer_key.as_ref(),
            $i.copy_source_sse_customer_key_md5.as_ref(),
        )
    };
}

/// The `x-amz-grant-*` headers an object write may carry.
macro_rules! object_grants {
    ($i:expr) => {
        [
            (AclPermission::FullControl, $i.grant_full_control.as_ref()),
            (AclPermission::Read, $i.grant_read.as_ref()),
            (AclPermission::ReadAcp, $i.grant_read_acp.as_ref()),
            (AclPermission::WriteAcp, $i.grant_write_acp.as_ref()),
        ]
    };
}

// Declared after the macros above: `macro_rules!` scope is textual, and the families use them.
mod acl;
mod bucket;
mod bucket_config;
mod lock;
mod multipart;
mod object;

pub(crate) struct Front {
    store: Arc<dyn ObjectStore>,
    /// Root access keys: every other key sees and may use only the buckets it was granted.
    roots: std::collections::HashSet<String>,
    region: String,
    max_meta: usize,
    /// Canonical id shown for root keys and for buckets without a recorded owner.
    root_id: String,
}

impl Front {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, cfg: &S3Config) -> Self {
        Self {
            store,
            roots: cfg.credentials.iter().map(|(a, _)| a.clone()).collect(),
            region: cfg.region.clone(),
            max_meta: cfg.max_user_metadata_bytes,
            root_id: cfg.credentials.first().map(|(a, _)| a.clone()).unwrap_or_default(),
        }
    }

    /// Canonical id of the caller: its access key id, or `anonymous`.
    fn caller_id(creds: Option<&s3s::auth::Credentials>) -> String {
        creds.map_or_else(|| "anonymous".to_string(), |c| c.access_key.clone())
    }

    /// The ACL an object write asks for with `x-amz-acl` / `x-amz-grant-*`, refused when the
    /// bucket's public access block blocks public ACLs.
    async fn requested_object_acl(
        &self,
        creds: Option<&s3s::auth::Credentials>,
        bucket: &str,
        canned: Option<&ObjectCannedACL>,
        grants: [(AclPermission, Option<&String>); 4],
    ) -> S3Result<Option<Acl>> {
        if canned.is_none() && grants.iter().all(|(_, g)| g.is_none()) {
            return Ok(None);
        }
        let access = self.store.bucket_access(bucket).await.map_err(s3_err)?;
        let bucket_owner = access.acl.as_ref().map_or(self.root_id.as_str(), |a| a.owner.as_str());
        let grants: Vec<(AclPermission, Option<&str>)> =
            grants.iter().map(|(p, g)| (*p, g.map(|s| s.as_str()))).collect();
        let acl = grants_from_headers(
            &Self::caller_id(creds),
            bucket_owner,
            canned.map(|c| c.as_str()),
            &grants,
        )?;
        self.check_public_acl(access.public_access_block, acl.as_ref())?;
        Ok(acl)
    }

    fn check_public_acl(&self, pab: Option<PublicAccessBlock>, acl: Option<&Acl>) -> S3Result<()> {
        if pab.is_some_and(|p| p.block_public_acls) && acl.is_some_and(Acl::is_public) {
            return Err(s3_error!(
                AccessDenied,
                "Access Denied: the bucket's public access block (BlockPublicAcls) forbids public ACLs"
            ));
        }
        Ok(())
    }

    fn user_meta(&self, m: Option<Metadata>) -> S3Result<BTreeMap<String, String>> {
        let m: BTreeMap<String, String> = m
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let size: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > self.max_meta {
            return Err(S3Error::with_message(
                S3ErrorCode::MetadataTooLarge,
                format!(
                    "Your metadata headers exceed the maximum allowed metadata size ({size} > {} bytes)",
                    self.max_meta
                ),
            ));
        }
        Ok(m)
    }
}

#[async_trait::async_trait]
impl S3 for Front {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        bucket::list_objects(self, req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        bucket::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        bucket::list_object_versions(self, req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        bucket_config::put_bucket_tagging(self, req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        bucket_config::get_bucket_tagging(self, req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        bucket_config::delete_bucket_tagging(self, req).await
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        bucket_config::put_bucket_lifecycle_configuration(self, req).await
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        bucket_config::get_bucket_lifecycle_configuration(self, req).await
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        bucket_config::delete_bucket_lifecycle(self, req).await
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        bucket_config::put_bucket_encryption(self, req).await
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        bucket_config::get_bucket_encryption(self, req).await
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        bucket_config::delete_bucket_encryption(self, req).await
    }

    async fn put_bucket_cors(&self, req: S3Request<PutBucketCorsInput>) -> S3Result<S3Response<PutBucketCorsOutput>> {
        bucket_config::put_bucket_cors(self, req).await
    }

    async fn get_bucket_cors(&self, req: S3Request<GetBucketCorsInput>) -> S3Result<S3Response<GetBucketCorsOutput>> {
        bucket_config::get_bucket_cors(self, req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        bucket_config::delete_bucket_cors(self, req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        object::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        object::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        object::head_object(self, req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        object::delete_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        object::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        object::copy_object(self, req).await
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        object::put_object_tagging(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        object::get_object_tagging(self, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        object::delete_object_tagging(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        object::get_object_attributes(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create_multipart_upload(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort_multipart_upload(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_multipart_uploads(self, req).await
    }

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        acl::put_bucket_policy(self, req).await
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        acl::get_bucket_policy(self, req).await
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        acl::delete_bucket_policy(self, req).await
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        acl::get_bucket_policy_status(self, req).await
    }

    async fn put_bucket_acl(&self, req: S3Request<PutBucketAclInput>) -> S3Result<S3Response<PutBucketAclOutput>> {
        acl::put_bucket_acl(self, req).await
    }

    async fn get_bucket_acl(&self, req: S3Request<GetBucketAclInput>) -> S3Result<S3Response<GetBucketAclOutput>> {
        acl::get_bucket_acl(self, req).await
    }

    async fn put_object_acl(&self, req: S3Request<PutObjectAclInput>) -> S3Result<S3Response<PutObjectAclOutput>> {
        acl::put_object_acl(self, req).await
    }

    async fn get_object_acl(&self, req: S3Request<GetObjectAclInput>) -> S3Result<S3Response<GetObjectAclOutput>> {
        acl::get_object_acl(self, req).await
    }

    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        acl::put_public_access_block(self, req).await
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        acl::get_public_access_block(self, req).await
    }

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        acl::delete_public_access_block(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        lock::put_bucket_versioning(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        lock::get_bucket_versioning(self, req).await
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        lock::put_object_lock_configuration(self, req).await
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        lock::get_object_lock_configuration(self, req).await
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        lock::put_object_retention(self, req).await
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        lock::get_object_retention(self, req).await
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        lock::put_object_legal_hold(self, req).await
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        lock::get_object_legal_hold(self, req).await
    }
}

pub(super) fn owner() -> Owner {
    Owner {
        display_name: Some("ironbucket".into()),
        id: Some("ironbucket-root".into()),
    }
}

pub(super) fn into_stream(body: Option<StreamingBlob>) -> ByteStream {
    match body {
        Some(b) => Box::pin(b.map_err(|e| {
            // s3s's aws-chunked error type is private; a chunk signature failure is recognised
            // by its message and passed down as PermissionDenied so it becomes a 403.
            if e.to_string().contains("SignatureMismatch") {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, e)
            } else {
                std::io::Error::other(e)
            }
        })),
        None => Box::pin(futures::stream::empty()),
    }
}

pub(super) fn read_conditions(
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
    ims: Option<Timestamp>,
    ius: Option<Timestamp>,
) -> Conditions {
    Conditions {
        if_match: if_match.as_ref().map(cond_list),
        if_none_match: if_none_match.as_ref().map(cond_list),
        if_modified_since: ims.as_ref().map(millis),
        if_unmodified_since: ius.as_ref().map(millis),
    }
}

/// Every object is stored as STANDARD; the classes that only change cost or placement on AWS
/// are accepted as STANDARD too, so tools that set them keep working.
pub(super) fn check_storage_class(c: &Option<StorageClass>) -> S3Result<()> {
    match c.as_ref().map(|c| c.as_str()) {
        None | Some("STANDARD" | "REDUCED_REDUNDANCY" | "STANDARD_IA" | "ONEZONE_IA" | "INTELLIGENT_TIERING") => Ok(()),
        Some(other) => Err(S3Error::with_message(
            S3ErrorCode::InvalidStorageClass,
            format!("The storage class you specified is not valid: {other} (IronBucket stores everything as STANDARD)"),
        )),
    }
}

pub(super) fn version_id_must_be_null(v: &Option<String>) -> S3Result<()> {
    match v.as_deref() {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(NoSuchVersion, "The specified version does not exist.")),
    }
}

pub(super) fn copy_source(cs: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match cs {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok((
            bucket.to_string(),
            key.to_string(),
            version_id.as_deref().map(str::to_string),
        )),
        _ => Err(s3_error!(NotImplemented, "access point copy sources are not supported")),
    }
}

/// Body checks for PutObject / UploadPart from the request headers and trailer.
pub(super) fn body_checks<T>(
    req: &S3Request<T>,
    content_length: Option<i64>,
    content_md5: Option<String>,
    checksums: ironbucket_store::Checksums,
    alg: Option<&ChecksumAlgorithm>,
) -> S3Result<BodyChecks> {
    let mut compute = declared_trailer(&req.headers);
    if let Some(a) = alg {
        compute.push(algorithm(a)?);
    }
    let trailer = req.trailing_headers.clone().map(|t| {
        Box::new(move || t.take().map(|h| trailer_checksums(&h)).unwrap_or_default())
            as ironbucket_store::TrailerChecksums
    });
    if let Some(md5) = &content_md5
        && base64::engine::general_purpose::STANDARD
            .decode(md5)
            .map(|v| v.len() != 16)
            .unwrap_or(true)
    {
        return Err(s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid."));
    }
    // An aws-chunked body sent with `Transfer-Encoding: chunked` has no Content-Length: the
    // decoded length it declares is what the stored body must measure.
    let decoded = req
        .headers
        .get("x-amz-decoded-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    Ok(BodyChecks {
        content_length: decoded.or_else(|| content_length.and_then(|n| u64::try_from(n).ok())),
        content_md5,
        checksums,
        compute,
        trailer,
    })
}

pub(super) fn s3r<T>(v: T) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(v))
}

/// The SSE-C key of a request from its three headers, checked against its MD5; `None` when
/// the request names no customer key.
pub(super) fn customer_key(
    algorithm: Option<&String>,
    key: Option<&String>,
    key_md5: Option<&String>,
) -> S3Result<Option<ironbucket_store::CustomerKey>> {
    use md5::Digest;
    if algorithm.is_none() && key.is_none() && key_md5.is_none() {
        return Ok(None);
    }
    match algorithm.map(String::as_str) {
        Some("AES256") => {}
        Some(_) => {
            return Err(s3_error!(
                InvalidEncryptionAlgorithmError,
                "The encryption request you specified is not valid. The valid value is AES256."
            ));
        }
        None => {
            return Err(s3_error!(
                InvalidArgument,
                "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm."
            ));
        }
    }
    let key = key.ok_or_else(|| {
        s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key."
        )
    })?;
    let raw: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The secret key was invalid for the specified algorithm."
            )
        })?;
    let md5 = key_md5.ok_or_else(|| {
        s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key."
        )
    })?;
    let want = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(raw));
    if md5.trim() != want {
        return Err(s3_error!(
            InvalidArgument,
            "The calculated MD5 hash of the key did not match the hash that was provided."
        ));
    }
    Ok(Some(ironbucket_store::CustomerKey::from_bytes(raw)))
}
