//! Bodies: a request body streamed into a new blob with its length, MD5 and checksums verified
//! (kept in memory, to be stored with the metadata, when it is small enough to be inline), and a
//! byte range of an object streamed back out of its segments.

use super::{Inline, LocalStore};
use crate::model::*;
use crate::{ByteStream, CustomerKey, Error, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ironbucket_meta::{ObjectRecord, Tx};
use ironbucket_storage::{BlobRef, BlobStore};
use ironbucket_types::{ChecksumSet, Checksums};
use md5::Digest;
use std::sync::Arc;

/// A body that has been received, verified and written (to a file, or in memory if inline).
pub(super) struct Ingested {
    pub(super) blob: BlobRef,
    /// Encoded bytes of an inline blob, to be stored with the metadata.
    inline: Option<Bytes>,
    pub(super) etag: String,
    pub(super) checksums: Checksums,
}

impl Ingested {
    /// Stores the inline bytes (if any) in the transaction that makes the blob referenced.
    pub(super) fn store_inline(&self, t: &mut Tx<'_>) -> Result<()> {
        if let Some(b) = &self.inline {
            t.put_inline(&self.blob.id, b)?;
        }
        Ok(())
    }
}

impl LocalStore {
    /// Streams a body into a new blob, verifying length, MD5 and checksums.
    pub(super) async fn ingest(
        &self,
        mut body: ByteStream,
        checks: BodyChecks,
        max: u64,
        customer: Option<&CustomerKey>,
    ) -> Result<Ingested> {
        if let Some(len) = checks.content_length
            && len > max
        {
            return Err(Error::EntityTooLarge);
        }
        let expected_md5 = match &checks.content_md5 {
            Some(s) => {
                use base64_md5::decode16;
                Some(decode16(s).ok_or(Error::InvalidDigest)?)
            }
            None => None,
        };
        let mut algs: Vec<_> = checks.compute.clone();
        algs.extend(checks.checksums.algorithms());
        let mut hasher = ChecksumSet::new(algs.iter().copied());
        let mut md5 = md5::Md5::new();
        let inline = checks.content_length.is_some_and(|l| l <= self.cfg.inline_max);
        let mut writer = if inline {
            self.blobs.create_inline_with(customer)?
        } else {
            self.blobs.create_with(customer).await?
        };
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(Error::from_body)?;
            size += chunk.len() as u64;
            if size > max {
                return Err(Error::EntityTooLarge);
            }
            md5.update(&chunk);
            hasher.update(&chunk);
            writer.write(&chunk).await?;
        }
        if let Some(len) = checks.content_length
            && len != size
        {
            return Err(Error::IncompleteBody(format!("expected {len} bytes, received {size}")));
        }
        let digest: [u8; 16] = md5.finalize().into();
        if let Some(want) = expected_md5
            && want != digest
        {
            return Err(Error::BadDigest);
        }
        let mut expected = checks.checksums.clone();
        if let Some(trailer) = checks.trailer {
            let t = trailer();
            for a in t.algorithms() {
                expected.set(a, t.get(a).map(str::to_string));
            }
        }
        let mut computed = hasher.finish();
        // Trailer algorithms not announced up front cannot be verified afterwards.
        verify_checksums(&computed, &expected)?;
        // Store only what was asked for (computed set == requested algorithms).
        for a in ironbucket_types::ChecksumAlgorithm::ALL {
            if !algs.contains(&a) && expected.get(a).is_none() {
                computed.set(a, None);
            }
        }
        let (blob, inline) = if writer.is_inline() {
            let (b, bytes) = writer.finish_inline()?;
            (b, Some(bytes))
        } else {
            (writer.finish().await?, None)
        };
        // As on AWS, an SSE-C object's ETag is not the MD5 of its plaintext (which would tell
        // anyone who can list the bucket whether it holds a known file): a keyed digest instead,
        // the same on every replica, which all hold the customer key while writing.
        let etag = match customer {
            Some(ck) => hex::encode(ck.etag_of(&digest)),
            None => hex::encode(digest),
        };
        Ok(Ingested {
            blob,
            inline,
            etag,
            checksums: computed,
        })
    }

    /// A stream of `range` over an object's segments, opening each blob only when reached.
    pub(super) fn body_stream(
        &self,
        rec: &ObjectRecord,
        inline: Inline,
        start: u64,
        end: u64,
        customer: Option<CustomerKey>,
    ) -> ByteStream {
        let blobs = self.blobs.clone();
        let customer = customer.map(Arc::new);
        let mut pieces = Vec::new();
        let mut off = 0u64;
        for s in &rec.segments {
            let (lo, hi) = (off, off + s.size);
            off = hi;
            if hi <= start || lo >= end {
                continue;
            }
            let from = start.max(lo) - lo;
            let to = end.min(hi) - lo;
            pieces.push((
                BlobRef {
                    id: s.blob.clone(),
                    size: s.size,
                },
                from,
                to,
            ));
        }
        Box::pin(
            futures::stream::iter(pieces)
                .then(move |(b, from, to)| {
                    let blobs = blobs.clone();
                    let inline = inline.clone();
                    let customer = customer.clone();
                    async move {
                        let ck = customer.as_deref();
                        let r = if BlobStore::is_inline(&b.id) {
                            match inline.get(&b.id) {
                                Some(bytes) => blobs.read_inline_with(&b, bytes.clone(), from, to, ck).await,
                                None => Err(ironbucket_storage::Error::NotFound(b.id.clone())),
                            }
                        } else {
                            blobs.read_with(&b, from, to, ck).await
                        };
                        r.map_err(std::io::Error::other)
                    }
                })
                .try_flatten(),
        )
    }
}

mod base64_md5 {
    use base64::Engine;
    pub fn decode16(s: &str) -> Option<[u8; 16]> {
        let raw = base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?;
        raw.try_into().ok()
    }
}
