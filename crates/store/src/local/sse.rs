//! Server-side encryption checks: whether this node can honour SSE-S3 (it needs the node's
//! master key), and SSE-C's rule that a request gives exactly the customer key an object or a
//! multipart upload was written with.

use super::LocalStore;
use crate::{CustomerKey, Error, Result};
use ironbucket_meta::{ObjectRecord, UploadRecord};

impl LocalStore {
    /// Server-side encryption can be honoured only with the node's master key, which then
    /// encrypts every object (SSE-S3 semantics).
    /// Whether this node can honour a requested server-side encryption (`AES256` needs the
    /// node's master key).
    pub fn sse_check(&self, requested: Option<&str>) -> Result<()> {
        match requested {
            None => Ok(()),
            Some("AES256") if self.key_id.is_some() => Ok(()),
            Some("AES256") => Err(Error::InvalidArgument(
                "server-side encryption needs the server started with ENABLE_ENCRYPTION=true and an ENCRYPTION_KEY"
                    .into(),
            )),
            Some(other) => Err(Error::InvalidArgument(format!(
                "server-side encryption {other} is not supported (use AES256)"
            ))),
        }
    }
}

/// Marks a record as sealed with a customer key (not with the node key).
pub(super) fn seal_record(rec: &mut ObjectRecord, customer: Option<&CustomerKey>) {
    if let Some(ck) = customer {
        rec.sse_c = Some(ck.fingerprint());
        rec.key_id = None;
    }
}

/// SSE-C: a request must give exactly the key an object was written with, and none for an
/// object written without one.
pub(super) fn check_sse_c(rec: &ObjectRecord, customer: Option<&CustomerKey>) -> Result<()> {
    check_key(rec.sse_c.as_deref(), customer)
}

pub(super) fn check_upload_key(upload: &UploadRecord, customer: Option<&CustomerKey>) -> Result<()> {
    match (upload.sse_c.as_deref(), customer) {
        (None, Some(_)) => Err(Error::InvalidRequest(
            "The multipart upload was not initiated with customer-provided encryption keys, so its parts cannot use them."
                .into(),
        )),
        (Some(_), None) => Err(Error::InvalidRequest(
            "The multipart upload was initiated with a customer-provided encryption key: each part must be sent with the same key."
                .into(),
        )),
        (fp, ck) => check_key(fp, ck),
    }
}

fn check_key(fingerprint: Option<&str>, customer: Option<&CustomerKey>) -> Result<()> {
    match (fingerprint, customer) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Error::InvalidRequest(
            "The encryption parameters are not applicable to this object.".into(),
        )),
        (Some(_), None) => Err(Error::InvalidRequest(
            "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
                .into(),
        )),
        (Some(fp), Some(ck)) if ck.matches(fp) => Ok(()),
        (Some(_), Some(_)) => Err(Error::AccessDenied(
            "Requests specifying Server Side Encryption with Customer provided keys must provide the correct secret key."
                .into(),
        )),
    }
}
