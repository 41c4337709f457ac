//! Single-object operations: Put, Get, Head, Delete and Copy, DeleteObjects, object tagging
//! and GetObjectAttributes.

use super::lock::lock_request;
use super::{
    Front, body_checks, check_storage_class, copy_source, customer_key, into_stream, read_conditions, s3r,
    version_id_must_be_null,
};
use crate::authz::DeleteGate;
use crate::convert::*;
use ironbucket_store::{
    AclPermission, ByteStream, Conditions, CopyObject, GetObject, ObjectInfo, ObjectMeta, PutObject, RangeSpec,
};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

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

pub(super) async fn put_object(front: &Front, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
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
    let acl = front
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
        user_meta: front.user_meta(input.metadata)?,
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
    let info = front
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

pub(super) async fn get_object(front: &Front, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
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
    let out = front.store.get_object(g).await.map_err(s3_err)?;
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

pub(super) async fn head_object(
    front: &Front,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
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
    let info = front.store.head_object(g.clone()).await.map_err(s3_err)?;
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

/// CopyObject's `If-Match` / `If-None-Match` on the destination (S3 parses only the copy
/// source's conditions): ETag lists as in PutObject.
fn destination_conditions(headers: &hyper::HeaderMap) -> S3Result<Conditions> {
    let list = |name: &str| -> S3Result<Option<Vec<String>>> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => {
                let v = v
                    .to_str()
                    .map_err(|_| s3_error!(InvalidArgument, "the {name} header is not text"))?;
                Ok(Some(
                    v.split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                ))
            }
        }
    };
    Ok(Conditions {
        if_match: list("if-match")?,
        if_none_match: list("if-none-match")?,
        ..Default::default()
    })
}

pub(super) async fn delete_object(
    front: &Front,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let i = req.input;
    if i.if_match_last_modified_time.is_some() || i.if_match_size.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "conditional deletes on x-amz-if-match-last-modified-time or x-amz-if-match-size are not supported; use If-Match"
        ));
    }
    let bypass = i.bypass_governance_retention.unwrap_or(false);
    let r = match &i.if_match {
        Some(m) => {
            let list = cond_list(m);
            front
                .store
                .delete_object_if_match(&i.bucket, &i.key, i.version_id.as_deref(), bypass, &list)
                .await
        }
        None => {
            front
                .store
                .delete_object(&i.bucket, &i.key, i.version_id.as_deref(), bypass)
                .await
        }
    }
    .map_err(s3_err)?;
    s3r(DeleteObjectOutput {
        delete_marker: r.delete_marker.then_some(true),
        version_id: r.version_id.filter(|v| v != "null" || i.version_id.is_some()),
        ..Default::default()
    })
}

pub(super) async fn delete_objects(
    front: &Front,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
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
    // Per-object `ETag` conditions (conditional deletes, S3 2024), by key position.
    let mut etags: Vec<Option<Vec<String>>> = Vec::new();
    for o in i.delete.objects {
        if o.last_modified_time.is_some() || o.size.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "conditional deletes on LastModifiedTime or Size are not supported; use ETag"
            ));
        }
        match &gate {
            Some(g) if !g.allows(&o.key, o.version_id.as_deref()).await => refused.push((o.key, o.version_id)),
            _ => {
                etags.push(o.e_tag.as_ref().map(|e| vec![e.value().to_string()]));
                keys.push((o.key, o.version_id));
            }
        }
    }
    let bypass = i.bypass_governance_retention.unwrap_or(false);
    let plain: Vec<(String, Option<String>)> = keys
        .iter()
        .zip(&etags)
        .filter(|(_, e)| e.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    let mut plain_results = if plain.is_empty() {
        vec![]
    } else {
        front
            .store
            .delete_objects(&i.bucket, plain, bypass)
            .await
            .map_err(s3_err)?
    }
    .into_iter();
    let mut results = Vec::with_capacity(keys.len());
    for ((key, version), etag) in keys.iter().zip(&etags) {
        results.push(match etag {
            Some(list) => {
                front
                    .store
                    .delete_object_if_match(&i.bucket, key, version.as_deref(), bypass, list)
                    .await
            }
            None => plain_results
                .next()
                .unwrap_or_else(|| Err(ironbucket_store::Error::Internal("a delete without a result".into()))),
        });
    }
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

pub(super) async fn copy_object(
    front: &Front,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let i = req.input;
    let acl = front
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
            user_meta: front.user_meta(i.metadata)?,
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
        conditions: destination_conditions(&req.headers)?,
        acl,
    };
    let info = front.store.copy_object(c).await.map_err(s3_err)?;
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

pub(super) async fn put_object_tagging(
    front: &Front,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    version_id_must_be_null(&req.input.version_id)?;
    let tags = tags_from_dto(req.input.tagging.tag_set);
    front
        .store
        .put_object_tagging(&req.input.bucket, &req.input.key, tags)
        .await
        .map_err(s3_err)?;
    s3r(PutObjectTaggingOutput::default())
}

pub(super) async fn get_object_tagging(
    front: &Front,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    version_id_must_be_null(&req.input.version_id)?;
    let tags = front
        .store
        .get_object_tagging(&req.input.bucket, &req.input.key)
        .await
        .map_err(s3_err)?;
    s3r(GetObjectTaggingOutput {
        tag_set: tags_to_dto(tags),
        version_id: None,
    })
}

pub(super) async fn delete_object_tagging(
    front: &Front,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    version_id_must_be_null(&req.input.version_id)?;
    front
        .store
        .delete_object_tagging(&req.input.bucket, &req.input.key)
        .await
        .map_err(s3_err)?;
    s3r(DeleteObjectTaggingOutput::default())
}

pub(super) async fn get_object_attributes(
    front: &Front,
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
    let info = front.store.head_object(g).await.map_err(s3_err)?;
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

fn into_blob(s: ByteStream) -> StreamingBlob {
    StreamingBlob::wrap(sync_wrapper::SyncStream::new(s))
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
