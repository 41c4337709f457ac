//! `s3s::S3` implemented over `Arc<dyn ObjectStore>`: request parsing into store requests and
//! store results into S3 responses. No storage logic lives here.

use crate::S3Config;
use crate::authz::{DeleteGate, acl_err, grants_from_headers};
use crate::convert::*;
use base64::Engine;
use futures::TryStreamExt;
use ironbucket_store::{Acl, AclPermission, PublicAccessBlock};
use ironbucket_store::{
    BodyChecks, ByteStream, CompleteMultipart, CompletedPart, Conditions, CopyObject, CreateMultipart, GetObject,
    ListParts, ListQuery, ObjectInfo, ObjectMeta, ObjectStore, PutObject, RangeSpec, UploadListQuery, UploadPart,
    UploadPartCopy,
};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Sets the stored object headers on a GetObject or HeadObject output (the two share field
/// names), letting the request's `response-*` parameters override them.
macro_rules! object_headers {
    ($o:ident, $info:expr, $with_checksums:expr, $i:ident) => {{
        let info: &ObjectInfo = $info;
        let c = &info.content;
        $o.e_tag = Some(etag(&info.etag));
        $o.last_modified = Some(ts(info.last_modified));
        $o.content_type = Some(
            $i.response_content_type
                .take()
                .or_else(|| c.content_type.clone())
                .unwrap_or_else(|| "binary/octet-stream".into()),
        );
        $o.content_encoding = $i
            .response_content_encoding
            .take()
            .or_else(|| c.content_encoding.clone());
        $o.content_language = $i
            .response_content_language
            .take()
            .or_else(|| c.content_language.clone());
        $o.content_disposition = $i
            .response_content_disposition
            .take()
            .or_else(|| c.content_disposition.clone());
        $o.cache_control = $i.response_cache_control.take().or_else(|| c.cache_control.clone());
        $o.expires = $i
            .response_expires
            .take()
            .or_else(|| c.expires.as_deref().and_then(parse_http_date));
        $o.metadata =
            (!info.user_meta.is_empty()).then(|| info.user_meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        $o.parts_count = info.parts_count.map(|n| n as i32);
        $o.version_id = Some(info.version_id.clone()).filter(|v| v != "null");
        $o.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
        $o.server_side_encryption = info
            .encrypted
            .then(|| ServerSideEncryption::from_static(ServerSideEncryption::AES256));
        if let Some(r) = &info.retention {
            $o.object_lock_mode = Some(ObjectLockMode::from(r.mode.clone()));
            $o.object_lock_retain_until_date = Some(ts(r.until));
        }
        if info.legal_hold {
            $o.object_lock_legal_hold_status =
                Some(ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON));
        }
        if $with_checksums {
            $o.checksum_crc32 = info.checksums.crc32.clone();
            $o.checksum_crc32c = info.checksums.crc32c.clone();
            $o.checksum_sha1 = info.checksums.sha1.clone();
            $o.checksum_sha256 = info.checksums.sha256.clone();
            if !info.checksums.is_empty() {
                let t = if info.parts_count.is_some() {
                    ChecksumType::COMPOSITE
                } else {
                    ChecksumType::FULL_OBJECT
                };
                $o.checksum_type = Some(ChecksumType::from_static(t));
            }
        }
    }};
}

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

fn owner() -> Owner {
    Owner {
        display_name: Some("ironbucket".into()),
        id: Some("ironbucket-root".into()),
    }
}

fn into_stream(body: Option<StreamingBlob>) -> ByteStream {
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

fn into_blob(s: ByteStream) -> StreamingBlob {
    StreamingBlob::wrap(sync_wrapper::SyncStream::new(s))
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must be a non-negative integer")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn read_conditions(
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

fn range_spec(r: Option<Range>) -> Option<RangeSpec> {
    r.map(|r| match r {
        Range::Int { first, last } => RangeSpec::FromTo { first, last },
        Range::Suffix { length } => RangeSpec::Suffix { length },
    })
}

fn checksum_mode(m: &Option<ChecksumMode>) -> bool {
    m.as_ref().is_some_and(|m| m.as_str().eq_ignore_ascii_case("ENABLED"))
}

/// `x-amz-object-lock-*` headers of a write.
fn lock_request(
    mode: Option<ObjectLockMode>,
    until: Option<Timestamp>,
    hold: Option<ObjectLockLegalHoldStatus>,
) -> S3Result<ironbucket_store::LockRequest> {
    let retention = match (mode, until) {
        (None, None) => None,
        (Some(m), Some(u)) => {
            let until = millis(&u);
            if until <= ironbucket_types::now_millis() {
                return Err(s3_error!(
                    InvalidArgument,
                    "The retain until date must be in the future!"
                ));
            }
            Some(ironbucket_store::Retention {
                mode: m.as_str().to_string(),
                until,
            })
        }
        _ => {
            return Err(s3_error!(
                InvalidArgument,
                "x-amz-object-lock-mode and x-amz-object-lock-retain-until-date must both be supplied"
            ));
        }
    };
    Ok(ironbucket_store::LockRequest {
        retention,
        legal_hold: hold.map(|h| h.as_str() == "ON"),
    })
}

/// Every object is stored as STANDARD; the classes that only change cost or placement on AWS
/// are accepted as STANDARD too, so tools that set them keep working.
fn check_storage_class(c: &Option<StorageClass>) -> S3Result<()> {
    match c.as_ref().map(|c| c.as_str()) {
        None | Some("STANDARD" | "REDUCED_REDUNDANCY" | "STANDARD_IA" | "ONEZONE_IA" | "INTELLIGENT_TIERING") => Ok(()),
        Some(other) => Err(S3Error::with_message(
            S3ErrorCode::InvalidStorageClass,
            format!("The storage class you specified is not valid: {other} (IronBucket stores everything as STANDARD)"),
        )),
    }
}

fn version_id_must_be_null(v: &Option<String>) -> S3Result<()> {
    match v.as_deref() {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(NoSuchVersion, "The specified version does not exist.")),
    }
}

fn copy_source(cs: &CopySource) -> S3Result<(String, String, Option<String>)> {
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
fn body_checks<T>(
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
    Ok(BodyChecks {
        content_length: content_length.and_then(|n| u64::try_from(n).ok()),
        content_md5,
        checksums,
        compute,
        trailer,
    })
}

fn s3r<T>(v: T) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(v))
}

#[async_trait::async_trait]
impl S3 for Front {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let creator = req
            .credentials
            .as_ref()
            .map(|c| c.access_key.clone())
            .filter(|ak| !self.roots.contains(ak));
        let input = req.input;
        if let Some(loc) = input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            && !loc.as_str().is_empty()
            && loc.as_str() != self.region
        {
            return Err(S3Error::with_message(
                S3ErrorCode::Custom("IllegalLocationConstraintException".into()),
                format!(
                    "The {} location constraint is incompatible for the region specific endpoint this request was sent to ({}).",
                    loc.as_str(),
                    self.region
                ),
            ));
        }
        let owner = creator.clone().unwrap_or_else(|| self.root_id.clone());
        let acl = grants_from_headers(
            &owner,
            &owner,
            input.acl.as_ref().map(|a| a.as_str()),
            &[
                (AclPermission::FullControl, input.grant_full_control.as_deref()),
                (AclPermission::Read, input.grant_read.as_deref()),
                (AclPermission::ReadAcp, input.grant_read_acp.as_deref()),
                (AclPermission::Write, input.grant_write.as_deref()),
                (AclPermission::WriteAcp, input.grant_write_acp.as_deref()),
            ],
        )?
        .unwrap_or_else(|| Acl::private(&owner));
        if input.object_lock_enabled_for_bucket == Some(true) {
            self.store
                .create_bucket_with_lock(&input.bucket)
                .await
                .map_err(s3_err)?;
        } else {
            self.store.create_bucket(&input.bucket).await.map_err(s3_err)?;
        }
        self.store.put_bucket_acl(&input.bucket, acl).await.map_err(s3_err)?;
        // A key that is not root owns the buckets it creates.
        if let Some(ak) = creator {
            self.store
                .set_key_permission(&ak, &input.bucket, Some(ironbucket_store::Permission::Owner))
                .await
                .map_err(s3_err)?;
        }
        s3r(CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        })
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.store.head_bucket(&req.input.bucket).await.map_err(s3_err)?;
        s3r(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        })
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.store.delete_bucket(&req.input.bucket).await.map_err(s3_err)?;
        s3r(DeleteBucketOutput {})
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let owner_id = Self::caller_id(req.credentials.as_ref());
        let mut buckets = self.store.list_buckets().await.map_err(s3_err)?;
        if let Some(c) = req.credentials.as_ref().filter(|c| !self.roots.contains(&c.access_key)) {
            // Other keys see only the buckets they have a permission on.
            let granted = match self.store.key_secret(&c.access_key).await.map_err(s3_err)? {
                Some((_, info)) => info.buckets,
                None => Default::default(),
            };
            buckets.retain(|b| granted.contains_key(&b.name));
        }
        let buckets = buckets
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(ts(b.created)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        s3r(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(owner_id.clone()),
                id: Some(owner_id),
            }),
            ..Default::default()
        })
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.store.head_bucket(&req.input.bucket).await.map_err(s3_err)?;
        let location_constraint =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        s3r(GetBucketLocationOutput { location_constraint })
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let tags = tags_from_dto(req.input.tagging.tag_set);
        self.store
            .put_bucket_tagging(&req.input.bucket, tags)
            .await
            .map_err(s3_err)?;
        s3r(PutBucketTaggingOutput {})
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let tags = self.store.get_bucket_tagging(&req.input.bucket).await.map_err(s3_err)?;
        s3r(GetBucketTaggingOutput {
            tag_set: tags_to_dto(tags),
        })
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.store
            .delete_bucket_tagging(&req.input.bucket)
            .await
            .map_err(s3_err)?;
        s3r(DeleteBucketTaggingOutput {})
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        check_storage_class(&req.input.storage_class)?;
        let checks = {
            let i = &req.input;
            let sums = header_checksums(
                i.checksum_crc32.clone(),
                i.checksum_crc32c.clone(),
                i.checksum_sha1.clone(),
                i.checksum_sha256.clone(),
            );
            if i.checksum_crc64nvme.is_some() {
                return Err(s3_error!(NotImplemented, "CRC64NVME checksums are not supported"));
            }
            body_checks(
                &req,
                i.content_length,
                i.content_md5.clone(),
                sums,
                i.checksum_algorithm.as_ref(),
            )?
        };
        let input = req.input;
        let tags = match &input.tagging {
            Some(t) => parse_tagging_header(t)?,
            None => vec![],
        };
        let acl = self
            .requested_object_acl(
                req.credentials.as_ref(),
                &input.bucket,
                input.acl.as_ref(),
                object_grants!(input),
            )
            .await?;
        let meta = ObjectMeta {
            content: content_headers(
                input.content_type,
                input.content_encoding,
                input.content_language,
                input.content_disposition,
                input.cache_control,
                input.expires.as_ref(),
            ),
            user_meta: self.user_meta(input.metadata)?,
            tags,
            acl,
        };
        let conditions = Conditions {
            if_match: input.if_match.as_ref().map(cond_list),
            if_none_match: input.if_none_match.as_ref().map(cond_list),
            ..Default::default()
        };
        let lock = lock_request(
            input.object_lock_mode,
            input.object_lock_retain_until_date,
            input.object_lock_legal_hold_status,
        )?;
        let sse_c = sse_c!(input)?;
        let sse = input.server_side_encryption.as_ref().map(|s| s.as_str().to_string());
        if sse.is_some() && sse_c.is_some() {
            return Err(s3_error!(
                InvalidArgument,
                "Server Side Encryption with Customer provided key is incompatible with the encryption method specified"
            ));
        }
        let put = PutObject {
            bucket: input.bucket,
            key: input.key,
            meta,
            checks,
            conditions,
            lock,
            sse,
            sse_c,
        };
        let info = self
            .store
            .put_object(put, into_stream(input.body))
            .await
            .map_err(s3_err)?;
        s3r(PutObjectOutput {
            server_side_encryption: info
                .encrypted
                .then(|| ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            version_id: Some(info.version_id.clone()).filter(|v| v != "null"),
            e_tag: Some(etag(&info.etag)),
            checksum_crc32: info.checksums.crc32,
            checksum_crc32c: info.checksums.crc32c,
            checksum_sha1: info.checksums.sha1,
            checksum_sha256: info.checksums.sha256,
            size: Some(info.size as i64),
            sse_customer_algorithm: info.sse_c.then(|| "AES256".to_string()),
            sse_customer_key_md5: input.sse_customer_key_md5.filter(|_| info.sse_c),
            ..Default::default()
        })
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let mut i = req.input;
        let sse_c = sse_c!(i)?;
        let g = GetObject {
            sse_c,
            bucket: i.bucket,
            key: i.key,
            version_id: i.version_id.take(),
            range: range_spec(i.range),
            conditions: read_conditions(i.if_match, i.if_none_match, i.if_modified_since, i.if_unmodified_since),
        };
        if let Some(n) = i.part_number
            && n != 1
        {
            return Err(s3_error!(
                NotImplemented,
                "GET by partNumber is supported only for partNumber=1"
            ));
        }
        let out = self.store.get_object(g).await.map_err(s3_err)?;
        let info = out.info;
        let with_checksums = out.range.is_none() && checksum_mode(&i.checksum_mode);
        let len = out.range.map(|r| r.len()).unwrap_or(info.size);
        let mut o = GetObjectOutput {
            body: Some(into_blob(out.body)),
            content_length: Some(len as i64),
            content_range: out.range.map(|r| r.content_range(info.size)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        };
        object_headers!(o, &info, with_checksums, i);
        o.tag_count = (info.tag_count > 0).then_some(info.tag_count as i32);
        if info.sse_c {
            o.sse_customer_algorithm = Some("AES256".into());
            o.sse_customer_key_md5 = i.sse_customer_key_md5;
        }
        s3r(o)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let mut i = req.input;
        let sse_c = sse_c!(i)?;
        let g = GetObject {
            sse_c,
            bucket: i.bucket,
            key: i.key,
            version_id: i.version_id.take(),
            range: range_spec(i.range),
            conditions: read_conditions(i.if_match, i.if_none_match, i.if_modified_since, i.if_unmodified_since),
        };
        let info = self.store.head_object(g.clone()).await.map_err(s3_err)?;
        let range = g.range.and_then(|r| r.resolve(info.size).ok());
        let with_checksums = range.is_none() && checksum_mode(&i.checksum_mode);
        let mut o = HeadObjectOutput {
            content_length: Some(range.map(|r| r.len()).unwrap_or(info.size) as i64),
            content_range: range.map(|r| r.content_range(info.size)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        };
        object_headers!(o, &info, with_checksums, i);
        if info.sse_c {
            o.sse_customer_algorithm = Some("AES256".into());
            o.sse_customer_key_md5 = i.sse_customer_key_md5;
        }
        s3r(o)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        let r = self
            .store
            .delete_object(
                &i.bucket,
                &i.key,
                i.version_id.as_deref(),
                i.bypass_governance_retention.unwrap_or(false),
            )
            .await
            .map_err(s3_err)?;
        s3r(DeleteObjectOutput {
            delete_marker: r.delete_marker.then_some(true),
            version_id: r.version_id.filter(|v| v != "null" || i.version_id.is_some()),
            ..Default::default()
        })
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let gate = req.extensions.get::<DeleteGate>().cloned();
        let i = req.input;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided named more than 1000 keys"
            ));
        }
        if i.delete.objects.is_empty() {
            return Err(s3_error!(MalformedXML, "The XML you provided named no keys"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        // Keys the caller may not delete (by policy or grant) are reported, not deleted.
        let mut refused = Vec::new();
        for o in i.delete.objects {
            match &gate {
                Some(g) if !g.allows(&o.key, o.version_id.as_deref()).await => refused.push((o.key, o.version_id)),
                _ => keys.push((o.key, o.version_id)),
            }
        }
        let results = if keys.is_empty() {
            vec![]
        } else {
            self.store
                .delete_objects(&i.bucket, keys.clone(), i.bypass_governance_retention.unwrap_or(false))
                .await
                .map_err(s3_err)?
        };
        for (key, version_id) in refused {
            errors.push(s3s::dto::Error {
                code: Some("AccessDenied".into()),
                key: Some(key),
                message: Some("Access Denied".into()),
                version_id,
            });
        }
        for ((key, asked), r) in keys.into_iter().zip(results) {
            match r {
                Ok(d) => {
                    if !quiet {
                        let marker_version = if d.delete_marker && asked.is_none() {
                            d.version_id.clone()
                        } else {
                            None
                        };
                        deleted.push(DeletedObject {
                            key: Some(key),
                            version_id: asked.clone(),
                            delete_marker: d.delete_marker.then_some(true),
                            delete_marker_version_id: marker_version,
                        });
                    }
                }
                Err(e) => {
                    let e = s3_err(e);
                    errors.push(s3s::dto::Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(key),
                        message: e.message().map(str::to_string),
                        version_id: asked,
                    });
                }
            }
        }
        s3r(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        })
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let acl = self
            .requested_object_acl(req.credentials.as_ref(), &i.bucket, i.acl.as_ref(), object_grants!(i))
            .await?;
        check_storage_class(&i.storage_class)?;
        let (src_bucket, src_key, src_version_id) = copy_source(&i.copy_source)?;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str().eq_ignore_ascii_case("REPLACE"));
        let replace_meta = if replace {
            Some(ObjectMeta {
                content: content_headers(
                    i.content_type,
                    i.content_encoding,
                    i.content_language,
                    i.content_disposition,
                    i.cache_control,
                    i.expires.as_ref(),
                ),
                user_meta: self.user_meta(i.metadata)?,
                tags: vec![],
                acl: None,
            })
        } else {
            None
        };
        let replace_tags = if i
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str().eq_ignore_ascii_case("REPLACE"))
        {
            Some(match &i.tagging {
                Some(t) => parse_tagging_header(t)?,
                None => vec![],
            })
        } else {
            None
        };
        let sse_c = sse_c!(i)?;
        let src_sse_c = copy_source_sse_c!(i)?;
        let echo = sse_c.is_some().then(|| i.sse_customer_key_md5.clone()).flatten();
        let c = CopyObject {
            sse_c,
            src_sse_c,
            src_bucket,
            src_key,
            src_version_id: src_version_id.clone(),
            bucket: i.bucket,
            key: i.key,
            replace_meta,
            replace_tags,
            source_conditions: read_conditions(
                i.copy_source_if_match,
                i.copy_source_if_none_match,
                i.copy_source_if_modified_since,
                i.copy_source_if_unmodified_since,
            ),
            acl,
        };
        let info = self.store.copy_object(c).await.map_err(s3_err)?;
        s3r(CopyObjectOutput {
            version_id: Some(info.version_id.clone()).filter(|v| v != "null"),
            copy_source_version_id: src_version_id,
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&info.etag)),
                last_modified: Some(ts(info.last_modified)),
                checksum_crc32: info.checksums.crc32,
                checksum_crc32c: info.checksums.crc32c,
                checksum_sha1: info.checksums.sha1,
                checksum_sha256: info.checksums.sha256,
                ..Default::default()
            }),
            server_side_encryption: info
                .encrypted
                .then(|| ServerSideEncryption::from_static(ServerSideEncryption::AES256)),
            sse_customer_algorithm: echo.as_ref().map(|_| "AES256".to_string()),
            sse_customer_key_md5: echo,
            ..Default::default()
        })
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        version_id_must_be_null(&req.input.version_id)?;
        let tags = tags_from_dto(req.input.tagging.tag_set);
        self.store
            .put_object_tagging(&req.input.bucket, &req.input.key, tags)
            .await
            .map_err(s3_err)?;
        s3r(PutObjectTaggingOutput::default())
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        version_id_must_be_null(&req.input.version_id)?;
        let tags = self
            .store
            .get_object_tagging(&req.input.bucket, &req.input.key)
            .await
            .map_err(s3_err)?;
        s3r(GetObjectTaggingOutput {
            tag_set: tags_to_dto(tags),
            version_id: None,
        })
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        version_id_must_be_null(&req.input.version_id)?;
        self.store
            .delete_object_tagging(&req.input.bucket, &req.input.key)
            .await
            .map_err(s3_err)?;
        s3r(DeleteObjectTaggingOutput::default())
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
        let max = max_keys(i.max_keys)?;
        let q = ListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            marker: i.marker.clone().filter(|m| !m.is_empty()),
            max_keys: max,
        };
        let page = self.store.list_objects(&i.bucket, q).await.map_err(s3_err)?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let has_delim = i.delimiter.as_deref().is_some_and(|d| !d.is_empty());
        s3r(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            marker: Some(enc(i.marker.unwrap_or_default())),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_marker: if page.truncated && has_delim {
                page.next_marker.map(enc)
            } else {
                None
            },
            delimiter: i.delimiter.map(enc),
            encoding_type: i.encoding_type,
            contents: Some(page.objects.into_iter().map(|o| object_entry(o, true, url)).collect()),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
        let max = max_keys(i.max_keys)?;
        let marker = match &i.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => i.start_after.clone().filter(|s| !s.is_empty()),
        };
        let q = ListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            marker,
            max_keys: max,
        };
        let page = self.store.list_objects(&i.bucket, q).await.map_err(s3_err)?;
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let fetch_owner = i.fetch_owner.unwrap_or(false);
        let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
        s3r(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: i.continuation_token,
            next_continuation_token: if page.truncated {
                page.next_marker.map(|m| encode_token(&m))
            } else {
                None
            },
            is_truncated: Some(page.truncated),
            start_after: i.start_after.map(enc),
            delimiter: i.delimiter.map(enc),
            encoding_type: i.encoding_type,
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|o| object_entry(o, fetch_owner, url))
                    .collect(),
            ),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let i = req.input;
        let g = GetObject {
            sse_c: sse_c!(i)?,
            bucket: i.bucket,
            key: i.key,
            version_id: i.version_id,
            ..Default::default()
        };
        let info = self.store.head_object(g).await.map_err(s3_err)?;
        let want = |a: &str| i.object_attributes.iter().any(|x| x.as_str().eq_ignore_ascii_case(a));
        let mut o = GetObjectAttributesOutput {
            last_modified: Some(ts(info.last_modified)),
            version_id: Some(info.version_id.clone()).filter(|v| v != "null"),
            ..Default::default()
        };
        if want(ObjectAttributes::ETAG) {
            o.e_tag = Some(etag(&info.etag));
        }
        if want(ObjectAttributes::OBJECT_SIZE) {
            o.object_size = Some(info.size as i64);
        }
        if want(ObjectAttributes::STORAGE_CLASS) {
            o.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
        }
        if want(ObjectAttributes::CHECKSUM) && !info.checksums.is_empty() {
            let t = if info.parts_count.is_some() {
                ChecksumType::COMPOSITE
            } else {
                ChecksumType::FULL_OBJECT
            };
            o.checksum = Some(Checksum {
                checksum_crc32: info.checksums.crc32.clone(),
                checksum_crc32c: info.checksums.crc32c.clone(),
                checksum_sha1: info.checksums.sha1.clone(),
                checksum_sha256: info.checksums.sha256.clone(),
                checksum_type: Some(ChecksumType::from_static(t)),
                ..Default::default()
            });
        }
        if want(ObjectAttributes::OBJECT_PARTS)
            && let Some(n) = info.parts_count
        {
            // Part sizes and checksums are not kept per part after completion: the count is.
            o.object_parts = Some(GetObjectAttributesParts {
                total_parts_count: Some(n as i32),
                ..Default::default()
            });
        }
        s3r(o)
    }

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let i = req.input;
        let cfg = i.object_lock_configuration.unwrap_or_default();
        if cfg.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some("Enabled") {
            return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
        }
        let d = cfg.rule.and_then(|r| r.default_retention);
        let to_u32 = |v: Option<i32>| -> S3Result<Option<u32>> {
            v.map(|n| {
                u32::try_from(n).map_err(|_| {
                    s3_error!(
                        InvalidArgument,
                        "Default retention period must be a positive integer value"
                    )
                })
            })
            .transpose()
        };
        let lock = ironbucket_store::ObjectLockConfig {
            default_mode: d.as_ref().and_then(|d| d.mode.as_ref()).map(|m| m.as_str().to_string()),
            default_days: to_u32(d.as_ref().and_then(|d| d.days))?,
            default_years: to_u32(d.as_ref().and_then(|d| d.years))?,
        };
        self.store
            .put_object_lock_configuration(&i.bucket, lock)
            .await
            .map_err(s3_err)?;
        s3r(PutObjectLockConfigurationOutput::default())
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let c = self
            .store
            .get_object_lock_configuration(&req.input.bucket)
            .await
            .map_err(s3_err)?;
        let rule = c.default_mode.map(|m| ObjectLockRule {
            default_retention: Some(DefaultRetention {
                mode: Some(ObjectLockRetentionMode::from(m)),
                days: c.default_days.map(|d| d as i32),
                years: c.default_years.map(|y| y as i32),
            }),
        });
        s3r(GetObjectLockConfigurationOutput {
            object_lock_configuration: Some(ObjectLockConfiguration {
                object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
                rule,
            }),
        })
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let i = req.input;
        let retention = match i.retention {
            Some(ObjectLockRetention {
                mode: Some(m),
                retain_until_date: Some(u),
            }) => Some(ironbucket_store::Retention {
                mode: m.as_str().to_string(),
                until: millis(&u),
            }),
            Some(ObjectLockRetention {
                mode: None,
                retain_until_date: None,
            })
            | None => None,
            _ => return Err(s3_error!(MalformedXML, "Retention needs both Mode and RetainUntilDate")),
        };
        self.store
            .put_object_retention(
                &i.bucket,
                &i.key,
                i.version_id.as_deref(),
                retention,
                i.bypass_governance_retention.unwrap_or(false),
            )
            .await
            .map_err(s3_err)?;
        s3r(PutObjectRetentionOutput::default())
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let i = req.input;
        let r = self
            .store
            .get_object_retention(&i.bucket, &i.key, i.version_id.as_deref())
            .await
            .map_err(s3_err)?;
        s3r(GetObjectRetentionOutput {
            retention: Some(ObjectLockRetention {
                mode: Some(ObjectLockRetentionMode::from(r.mode)),
                retain_until_date: Some(ts(r.until)),
            }),
        })
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let i = req.input;
        let on = match i.legal_hold.and_then(|h| h.status).as_ref().map(|s| s.as_str()) {
            Some("ON") => true,
            Some("OFF") => false,
            _ => return Err(s3_error!(MalformedXML, "LegalHold Status must be ON or OFF")),
        };
        self.store
            .put_object_legal_hold(&i.bucket, &i.key, i.version_id.as_deref(), on)
            .await
            .map_err(s3_err)?;
        s3r(PutObjectLegalHoldOutput::default())
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let i = req.input;
        let on = self
            .store
            .get_object_legal_hold(&i.bucket, &i.key, i.version_id.as_deref())
            .await
            .map_err(s3_err)?;
        let status = if on {
            ObjectLockLegalHoldStatus::ON
        } else {
            ObjectLockLegalHoldStatus::OFF
        };
        s3r(GetObjectLegalHoldOutput {
            legal_hold: Some(ObjectLockLegalHold {
                status: Some(ObjectLockLegalHoldStatus::from_static(status)),
            }),
        })
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let i = req.input;
        let cfg = i
            .lifecycle_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "missing LifecycleConfiguration"))?;
        let mut rules = Vec::new();
        for r in cfg.rules {
            if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
                || r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
            {
                return Err(s3_error!(
                    NotImplemented,
                    "lifecycle transitions are not supported (every object is STANDARD)"
                ));
            }
            let f = r.filter.unwrap_or_default();
            let and = f.and.unwrap_or_default();
            let pos = |v: Option<i32>, what: &str| -> S3Result<Option<u32>> {
                v.map(|n| {
                    u32::try_from(n).map_err(|_| {
                        S3Error::with_message(
                            S3ErrorCode::InvalidArgument,
                            format!("{what} must be a positive integer"),
                        )
                    })
                })
                .transpose()
            };
            let size = |v: Option<i64>| v.map(|n| n.max(0) as u64);
            let mut tags: Vec<(String, String)> = and
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                .collect();
            if let Some(t) = f.tag {
                tags.push((t.key.unwrap_or_default(), t.value.unwrap_or_default()));
            }
            let exp = r.expiration.unwrap_or_default();
            let nc = r.noncurrent_version_expiration.unwrap_or_default();
            rules.push(ironbucket_store::LifecycleRule {
                id: r.id,
                enabled: r.status.as_str() == "Enabled",
                prefix: f.prefix.or(and.prefix).or(r.prefix).unwrap_or_default(),
                tags,
                size_greater_than: size(f.object_size_greater_than.or(and.object_size_greater_than)),
                size_less_than: size(f.object_size_less_than.or(and.object_size_less_than)),
                expiration_days: pos(exp.days, "Expiration Days")?,
                expiration_date: exp.date.as_ref().map(millis),
                expired_object_delete_marker: exp.expired_object_delete_marker.unwrap_or(false),
                noncurrent_days: pos(nc.noncurrent_days, "NoncurrentDays")?,
                newer_noncurrent_versions: pos(nc.newer_noncurrent_versions, "NewerNoncurrentVersions")?,
                abort_incomplete_multipart_days: pos(
                    r.abort_incomplete_multipart_upload
                        .and_then(|a| a.days_after_initiation),
                    "DaysAfterInitiation",
                )?,
            });
        }
        self.store
            .put_bucket_lifecycle(&i.bucket, rules)
            .await
            .map_err(s3_err)?;
        s3r(PutBucketLifecycleConfigurationOutput::default())
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let rules = self
            .store
            .get_bucket_lifecycle(&req.input.bucket)
            .await
            .map_err(s3_err)?;
        let rules = rules
            .into_iter()
            .map(|r| {
                let tags: Vec<s3s::dto::Tag> = r
                    .tags
                    .iter()
                    .map(|(k, v)| s3s::dto::Tag {
                        key: Some(k.clone()),
                        value: Some(v.clone()),
                    })
                    .collect();
                let conditions =
                    tags.len() + usize::from(r.size_greater_than.is_some()) + usize::from(r.size_less_than.is_some());
                let filter = if conditions == 0 {
                    LifecycleRuleFilter {
                        prefix: Some(r.prefix.clone()),
                        ..Default::default()
                    }
                } else {
                    LifecycleRuleFilter {
                        and: Some(LifecycleRuleAndOperator {
                            prefix: Some(r.prefix.clone()),
                            tags: Some(tags),
                            object_size_greater_than: r.size_greater_than.map(|n| n as i64),
                            object_size_less_than: r.size_less_than.map(|n| n as i64),
                        }),
                        ..Default::default()
                    }
                };
                let expiration =
                    (r.expiration_days.is_some() || r.expiration_date.is_some() || r.expired_object_delete_marker)
                        .then(|| LifecycleExpiration {
                            days: r.expiration_days.map(|d| d as i32),
                            date: r.expiration_date.map(ts),
                            expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
                        });
                LifecycleRule {
                    id: r.id,
                    status: ExpirationStatus::from_static(if r.enabled {
                        ExpirationStatus::ENABLED
                    } else {
                        ExpirationStatus::DISABLED
                    }),
                    filter: Some(filter),
                    expiration,
                    noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
                        noncurrent_days: Some(d as i32),
                        newer_noncurrent_versions: r.newer_noncurrent_versions.map(|n| n as i32),
                    }),
                    abort_incomplete_multipart_upload: r.abort_incomplete_multipart_days.map(|d| {
                        AbortIncompleteMultipartUpload {
                            days_after_initiation: Some(d as i32),
                        }
                    }),
                    noncurrent_version_transitions: None,
                    prefix: None,
                    transitions: None,
                }
            })
            .collect();
        s3r(GetBucketLifecycleConfigurationOutput {
            rules: Some(rules),
            ..Default::default()
        })
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.store
            .delete_bucket_lifecycle(&req.input.bucket)
            .await
            .map_err(s3_err)?;
        s3r(DeleteBucketLifecycleOutput {})
    }

    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let i = req.input;
        let algo = i
            .server_side_encryption_configuration
            .rules
            .first()
            .and_then(|r| r.apply_server_side_encryption_by_default.as_ref())
            .map(|d| d.sse_algorithm.as_str().to_string())
            .ok_or_else(|| s3_error!(MalformedXML, "ApplyServerSideEncryptionByDefault is required"))?;
        self.store
            .put_bucket_encryption(&i.bucket, Some(algo))
            .await
            .map_err(s3_err)?;
        s3r(PutBucketEncryptionOutput::default())
    }

    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let Some(algo) = self
            .store
            .get_bucket_encryption(&req.input.bucket)
            .await
            .map_err(s3_err)?
        else {
            return Err(s3_error!(
                ServerSideEncryptionConfigurationNotFoundError,
                "The server side encryption configuration was not found"
            ));
        };
        s3r(GetBucketEncryptionOutput {
            server_side_encryption_configuration: Some(ServerSideEncryptionConfiguration {
                rules: vec![ServerSideEncryptionRule {
                    apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                        sse_algorithm: ServerSideEncryption::from(algo),
                        kms_master_key_id: None,
                    }),
                    bucket_key_enabled: None,
                }],
            }),
        })
    }

    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        self.store
            .put_bucket_encryption(&req.input.bucket, None)
            .await
            .map_err(s3_err)?;
        s3r(DeleteBucketEncryptionOutput {})
    }

    async fn put_bucket_cors(&self, req: S3Request<PutBucketCorsInput>) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let i = req.input;
        let rules = i
            .cors_configuration
            .cors_rules
            .into_iter()
            .map(|r| ironbucket_store::CorsRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: r.allowed_headers.unwrap_or_default(),
                expose_headers: r.expose_headers.unwrap_or_default(),
                max_age_seconds: r.max_age_seconds,
            })
            .collect();
        self.store.put_bucket_cors(&i.bucket, rules).await.map_err(s3_err)?;
        s3r(PutBucketCorsOutput {})
    }

    async fn get_bucket_cors(&self, req: S3Request<GetBucketCorsInput>) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let rules = self.store.get_bucket_cors(&req.input.bucket).await.map_err(s3_err)?;
        let rules = rules
            .into_iter()
            .map(|r| CORSRule {
                id: r.id,
                allowed_origins: r.allowed_origins,
                allowed_methods: r.allowed_methods,
                allowed_headers: (!r.allowed_headers.is_empty()).then_some(r.allowed_headers),
                expose_headers: (!r.expose_headers.is_empty()).then_some(r.expose_headers),
                max_age_seconds: r.max_age_seconds,
            })
            .collect();
        s3r(GetBucketCorsOutput {
            cors_rules: Some(rules),
        })
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.store.delete_bucket_cors(&req.input.bucket).await.map_err(s3_err)?;
        s3r(DeleteBucketCorsOutput {})
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let i = req.input;
        if i.versioning_configuration
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == "Enabled")
        {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
        }
        let status = match i.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
            Some(s @ ("Enabled" | "Suspended")) => s.to_string(),
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "VersioningConfiguration Status must be Enabled or Suspended"
                ));
            }
        };
        self.store
            .put_bucket_versioning(&i.bucket, &status)
            .await
            .map_err(s3_err)?;
        s3r(PutBucketVersioningOutput {})
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let status = self
            .store
            .get_bucket_versioning(&req.input.bucket)
            .await
            .map_err(s3_err)?;
        s3r(GetBucketVersioningOutput {
            status: status.map(BucketVersioningStatus::from),
            mfa_delete: None,
        })
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let max = max_keys(i.max_keys)?;
        if i.version_id_marker.is_some() && i.key_marker.is_none() {
            return Err(s3_error!(
                InvalidArgument,
                "A version-id marker cannot be specified without a key marker."
            ));
        }
        let q = ironbucket_store::VersionListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            key_marker: i.key_marker.clone().filter(|s| !s.is_empty()),
            version_id_marker: i.version_id_marker.clone().filter(|s| !s.is_empty()),
            max_keys: max,
            lenient_marker: false,
        };
        let page = self.store.list_object_versions(&i.bucket, q).await.map_err(s3_err)?;
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for v in page.versions {
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(v.is_latest),
                    key: Some(enc(v.info.key)),
                    last_modified: Some(ts(v.info.last_modified)),
                    owner: Some(owner()),
                    version_id: Some(v.info.version_id),
                });
            } else {
                versions.push(ObjectVersion {
                    e_tag: Some(etag(&v.info.etag)),
                    is_latest: Some(v.is_latest),
                    key: Some(enc(v.info.key)),
                    last_modified: Some(ts(v.info.last_modified)),
                    owner: Some(owner()),
                    size: Some(v.info.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    version_id: Some(v.info.version_id),
                    ..Default::default()
                });
            }
        }
        s3r(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(i.prefix.unwrap_or_default())),
            key_marker: Some(enc(i.key_marker.unwrap_or_default())),
            version_id_marker: Some(i.version_id_marker.unwrap_or_default()),
            max_keys: Some(max as i32),
            delimiter: i.delimiter.map(enc),
            encoding_type: i.encoding_type,
            is_truncated: Some(page.truncated),
            next_key_marker: if page.truncated {
                page.next_key_marker.map(enc)
            } else {
                None
            },
            next_version_id_marker: if page.truncated {
                page.next_version_id_marker
            } else {
                None
            },
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                    .collect(),
            ),
            ..Default::default()
        })
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        check_storage_class(&i.storage_class)?;
        let tags = match &i.tagging {
            Some(t) => parse_tagging_header(t)?,
            None => vec![],
        };
        let acl = self
            .requested_object_acl(req.credentials.as_ref(), &i.bucket, i.acl.as_ref(), object_grants!(i))
            .await?;
        let checksum_algorithm = i.checksum_algorithm.as_ref().map(algorithm).transpose()?;
        let sse_c = sse_c!(i)?;
        let echo = sse_c.is_some().then(|| i.sse_customer_key_md5.clone()).flatten();
        let c = CreateMultipart {
            sse_c,
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            meta: ObjectMeta {
                content: content_headers(
                    i.content_type,
                    i.content_encoding,
                    i.content_language,
                    i.content_disposition,
                    i.cache_control,
                    i.expires.as_ref(),
                ),
                user_meta: self.user_meta(i.metadata)?,
                tags,
                acl,
            },
            checksum_algorithm,
        };
        let upload_id = self.store.create_multipart_upload(c).await.map_err(s3_err)?;
        s3r(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(upload_id),
            checksum_algorithm: checksum_algorithm.map(algorithm_dto),
            checksum_type: checksum_algorithm.map(|_| ChecksumType::from_static(ChecksumType::COMPOSITE)),
            sse_customer_algorithm: echo.as_ref().map(|_| "AES256".to_string()),
            sse_customer_key_md5: echo,
            ..Default::default()
        })
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let checks = {
            let i = &req.input;
            let sums = header_checksums(
                i.checksum_crc32.clone(),
                i.checksum_crc32c.clone(),
                i.checksum_sha1.clone(),
                i.checksum_sha256.clone(),
            );
            body_checks(
                &req,
                i.content_length,
                i.content_md5.clone(),
                sums,
                i.checksum_algorithm.as_ref(),
            )?
        };
        let i = req.input;
        let part_number = u32::try_from(i.part_number).map_err(|_| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })?;
        let sse_c = sse_c!(i)?;
        let echo = sse_c.is_some().then(|| i.sse_customer_key_md5.clone()).flatten();
        let up = UploadPart {
            sse_c,
            bucket: i.bucket,
            key: i.key,
            upload_id: i.upload_id,
            part_number,
            checks,
        };
        let p = self.store.upload_part(up, into_stream(i.body)).await.map_err(s3_err)?;
        s3r(UploadPartOutput {
            e_tag: Some(etag(&p.etag)),
            checksum_crc32: p.checksums.crc32,
            checksum_crc32c: p.checksums.crc32c,
            checksum_sha1: p.checksums.sha1,
            checksum_sha256: p.checksums.sha256,
            sse_customer_algorithm: echo.as_ref().map(|_| "AES256".to_string()),
            sse_customer_key_md5: echo,
            ..Default::default()
        })
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        let (src_bucket, src_key, src_version) = copy_source(&i.copy_source)?;
        version_id_must_be_null(&src_version)?;
        let part_number = u32::try_from(i.part_number).map_err(|_| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })?;
        let range = match &i.copy_source_range {
            Some(r) => Some(RangeSpec::parse(r).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "The x-amz-copy-source-range value must be of the form bytes=first-last"
                )
            })?),
            None => None,
        };
        let sse_c = sse_c!(i)?;
        let src_sse_c = copy_source_sse_c!(i)?;
        let echo = sse_c.is_some().then(|| i.sse_customer_key_md5.clone()).flatten();
        let c = UploadPartCopy {
            sse_c,
            src_sse_c,
            bucket: i.bucket,
            key: i.key,
            upload_id: i.upload_id,
            part_number,
            src_bucket,
            src_key,
            range,
            source_conditions: read_conditions(
                i.copy_source_if_match,
                i.copy_source_if_none_match,
                i.copy_source_if_modified_since,
                i.copy_source_if_unmodified_since,
            ),
        };
        let p = self.store.upload_part_copy(c).await.map_err(s3_err)?;
        s3r(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts(p.last_modified)),
                checksum_crc32: p.checksums.crc32,
                checksum_crc32c: p.checksums.crc32c,
                checksum_sha1: p.checksums.sha1,
                checksum_sha256: p.checksums.sha256,
                ..Default::default()
            }),
            sse_customer_algorithm: echo.as_ref().map(|_| "AES256".to_string()),
            sse_customer_key_md5: echo,
            ..Default::default()
        })
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let parts = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        let mut wanted = Vec::with_capacity(parts.len());
        for p in parts {
            let n = p
                .part_number
                .ok_or_else(|| s3_error!(MalformedXML, "a Part is missing its PartNumber"))?;
            let e = p
                .e_tag
                .ok_or_else(|| s3_error!(MalformedXML, "a Part is missing its ETag"))?;
            let n = u32::try_from(n).map_err(|_| s3_error!(InvalidPart, "part numbers must be positive"))?;
            wanted.push(CompletedPart {
                part_number: n,
                etag: e.value().to_string(),
            });
        }
        if wanted.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema: no parts"
            ));
        }
        let c = CompleteMultipart {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            upload_id: i.upload_id,
            parts: wanted,
        };
        let info = self.store.complete_multipart_upload(c).await.map_err(s3_err)?;
        let checksum_type = (!info.checksums.is_empty()).then(|| ChecksumType::from_static(ChecksumType::COMPOSITE));
        s3r(CompleteMultipartUploadOutput {
            version_id: Some(info.version_id.clone()).filter(|v| v != "null"),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(etag(&info.etag)),
            checksum_crc32: info.checksums.crc32,
            checksum_crc32c: info.checksums.crc32c,
            checksum_sha1: info.checksums.sha1,
            checksum_sha256: info.checksums.sha256,
            checksum_type,
            ..Default::default()
        })
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.store
            .abort_multipart_upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .map_err(s3_err)?;
        s3r(AbortMultipartUploadOutput::default())
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let max = match i.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-parts must be a non-negative integer"));
            }
            Some(n) => (n as usize).min(1000),
        };
        let q = ListParts {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            upload_id: i.upload_id.clone(),
            part_number_marker: i.part_number_marker.and_then(|m| u32::try_from(m).ok()),
            max_parts: max,
        };
        let page = self.store.list_parts(q).await.map_err(s3_err)?;
        let parts = page
            .parts
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.part_number as i32),
                e_tag: Some(etag(&p.etag)),
                size: Some(p.size as i64),
                last_modified: Some(ts(p.last_modified)),
                checksum_crc32: p.checksums.crc32,
                checksum_crc32c: p.checksums.crc32c,
                checksum_sha1: p.checksums.sha1,
                checksum_sha256: p.checksums.sha256,
                ..Default::default()
            })
            .collect();
        s3r(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: page.next_part_number_marker.map(|n| n as i32),
            is_truncated: Some(page.truncated),
            parts: Some(parts),
            owner: Some(owner()),
            initiator: Some(Initiator {
                display_name: Some("ironbucket".into()),
                id: Some("ironbucket-root".into()),
            }),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: page.checksum_algorithm.map(algorithm_dto),
            ..Default::default()
        })
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let url = i.encoding_type.as_ref().is_some_and(|e| e.as_str() == "url");
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let max = match i.max_uploads {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-uploads must be a non-negative integer"));
            }
            Some(n) => (n as usize).min(1000),
        };
        let q = UploadListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            key_marker: i.key_marker.clone().filter(|s| !s.is_empty()),
            upload_id_marker: i.upload_id_marker.clone().filter(|s| !s.is_empty()),
            max_uploads: max,
        };
        let page = self.store.list_multipart_uploads(&i.bucket, q).await.map_err(s3_err)?;
        let uploads = page
            .uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(enc(u.key)),
                upload_id: Some(u.upload_id),
                initiated: Some(ts(u.initiated)),
                owner: Some(owner()),
                initiator: Some(Initiator {
                    display_name: Some("ironbucket".into()),
                    id: Some("ironbucket-root".into()),
                }),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                checksum_algorithm: u.checksum_algorithm.map(algorithm_dto),
                ..Default::default()
            })
            .collect();
        s3r(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix.map(enc),
            delimiter: i.delimiter.map(enc),
            key_marker: i.key_marker.map(enc),
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: if page.truncated {
                page.next_key_marker.map(enc)
            } else {
                None
            },
            next_upload_id_marker: if page.truncated {
                page.next_upload_id_marker
            } else {
                None
            },
            uploads: Some(uploads),
            common_prefixes: Some(
                page.common_prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(enc(p)) })
                    .collect(),
            ),
            encoding_type: i.encoding_type,
            ..Default::default()
        })
    }
    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        let i = req.input;
        let parsed = ironbucket_types::policy::parse(&i.policy, &i.bucket)
            .map_err(|e| S3Error::with_message(S3ErrorCode::MalformedPolicy, e.0))?;
        let access = self.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
        if parsed.is_public() && access.public_access_block.is_some_and(|p| p.block_public_policy) {
            return Err(s3_error!(
                AccessDenied,
                "Access Denied: the bucket's public access block (BlockPublicPolicy) forbids public policies"
            ));
        }
        self.store
            .put_bucket_policy(&i.bucket, Some(i.policy))
            .await
            .map_err(s3_err)?;
        s3r(PutBucketPolicyOutput {})
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let access = self.store.bucket_access(&req.input.bucket).await.map_err(s3_err)?;
        let Some(policy) = access.policy else {
            return Err(s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"));
        };
        s3r(GetBucketPolicyOutput { policy: Some(policy) })
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        self.store
            .put_bucket_policy(&req.input.bucket, None)
            .await
            .map_err(s3_err)?;
        s3r(DeleteBucketPolicyOutput {})
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        let b = &req.input.bucket;
        let access = self.store.bucket_access(b).await.map_err(s3_err)?;
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

    async fn put_bucket_acl(&self, req: S3Request<PutBucketAclInput>) -> S3Result<S3Response<PutBucketAclOutput>> {
        let i = req.input;
        let access = self.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
        let owner = access
            .acl
            .as_ref()
            .map_or_else(|| self.root_id.clone(), |a| a.owner.clone());
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
        self.check_public_acl(access.public_access_block, Some(&acl))?;
        self.store.put_bucket_acl(&i.bucket, acl).await.map_err(s3_err)?;
        s3r(PutBucketAclOutput {})
    }

    async fn get_bucket_acl(&self, req: S3Request<GetBucketAclInput>) -> S3Result<S3Response<GetBucketAclOutput>> {
        let access = self.store.bucket_access(&req.input.bucket).await.map_err(s3_err)?;
        let acl = access.acl.unwrap_or_else(|| Acl::private(&self.root_id));
        let (owner, grants) = acl_to_dto(&acl);
        s3r(GetBucketAclOutput {
            owner: Some(owner),
            grants: Some(grants),
        })
    }

    async fn put_object_acl(&self, req: S3Request<PutObjectAclInput>) -> S3Result<S3Response<PutObjectAclOutput>> {
        let i = req.input;
        let access = self.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
        let bucket_owner = access
            .acl
            .as_ref()
            .map_or_else(|| self.root_id.clone(), |a| a.owner.clone());
        let owner = self
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
        self.check_public_acl(access.public_access_block, Some(&acl))?;
        self.store
            .put_object_acl(&i.bucket, &i.key, i.version_id.as_deref(), acl)
            .await
            .map_err(s3_err)?;
        s3r(PutObjectAclOutput::default())
    }

    async fn get_object_acl(&self, req: S3Request<GetObjectAclInput>) -> S3Result<S3Response<GetObjectAclOutput>> {
        let i = req.input;
        let acl = match self
            .store
            .get_object_acl(&i.bucket, &i.key, i.version_id.as_deref())
            .await
            .map_err(s3_err)?
        {
            Some(a) => a,
            None => {
                let access = self.store.bucket_access(&i.bucket).await.map_err(s3_err)?;
                Acl::private(access.acl.as_ref().map_or(self.root_id.as_str(), |a| a.owner.as_str()))
            }
        };
        let (owner, grants) = acl_to_dto(&acl);
        s3r(GetObjectAclOutput {
            owner: Some(owner),
            grants: Some(grants),
            ..Default::default()
        })
    }

    async fn put_public_access_block(
        &self,
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
        self.store
            .put_public_access_block(&i.bucket, Some(block))
            .await
            .map_err(s3_err)?;
        s3r(PutPublicAccessBlockOutput {})
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        let access = self.store.bucket_access(&req.input.bucket).await.map_err(s3_err)?;
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

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        self.store
            .put_public_access_block(&req.input.bucket, None)
            .await
            .map_err(s3_err)?;
        s3r(DeletePublicAccessBlockOutput {})
    }
}

/// The SSE-C key of a request from its three headers, checked against its MD5; `None` when
/// the request names no customer key.
fn customer_key(
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

fn object_entry(o: ObjectInfo, with_owner: bool, url: bool) -> Object {
    Object {
        key: Some(if url { url_encode(&o.key) } else { o.key }),
        e_tag: Some(etag(&o.etag)),
        last_modified: Some(ts(o.last_modified)),
        size: Some(o.size as i64),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        owner: with_owner.then(owner),
        checksum_algorithm: {
            let algs: Vec<ChecksumAlgorithm> = o.checksums.algorithms().map(algorithm_dto).collect();
            (!algs.is_empty()).then_some(algs)
        },
        ..Default::default()
    }
}

fn encode_token(marker: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker.as_bytes())
}

fn decode_token(t: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}
