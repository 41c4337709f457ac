//! Multipart uploads: create, upload (and copy) parts, complete, abort, and list parts and
//! uploads.

use super::{
    Front, body_checks, check_storage_class, copy_source, customer_key, into_stream, owner, read_conditions, s3r,
    version_id_must_be_null,
};
use crate::convert::*;
use ironbucket_store::{
    AclPermission, CompleteMultipart, CompletedPart, CreateMultipart, ListParts, ObjectMeta, RangeSpec,
    UploadListQuery, UploadPart, UploadPartCopy,
};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

pub(super) async fn create_multipart_upload(
    front: &Front,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let i = req.input;
    check_storage_class(&i.storage_class)?;
    let tags = match &i.tagging {
        Some(t) => parse_tagging_header(t)?,
        None => vec![],
    };
    let acl = front
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
            user_meta: front.user_meta(i.metadata)?,
            tags,
            acl,
        },
        checksum_algorithm,
    };
    let upload_id = front.store.create_multipart_upload(c).await.map_err(s3_err)?;
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

pub(super) async fn upload_part(
    front: &Front,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
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
    let p = front.store.upload_part(up, into_stream(i.body)).await.map_err(s3_err)?;
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

pub(super) async fn upload_part_copy(
    front: &Front,
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
    let p = front.store.upload_part_copy(c).await.map_err(s3_err)?;
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

pub(super) async fn complete_multipart_upload(
    front: &Front,
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
        conditions: ironbucket_store::Conditions {
            if_match: i.if_match.as_ref().map(cond_list),
            if_none_match: i.if_none_match.as_ref().map(cond_list),
            ..Default::default()
        },
    };
    let info = front.store.complete_multipart_upload(c).await.map_err(s3_err)?;
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

pub(super) async fn abort_multipart_upload(
    front: &Front,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let i = req.input;
    front
        .store
        .abort_multipart_upload(&i.bucket, &i.key, &i.upload_id)
        .await
        .map_err(s3_err)?;
    s3r(AbortMultipartUploadOutput::default())
}

pub(super) async fn list_parts(front: &Front, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
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
    let page = front.store.list_parts(q).await.map_err(s3_err)?;
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

pub(super) async fn list_multipart_uploads(
    front: &Front,
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
    let page = front.store.list_multipart_uploads(&i.bucket, q).await.map_err(s3_err)?;
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
