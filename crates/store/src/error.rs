//! What can go wrong at the store seam, named after the S3 condition it becomes.

use ironbucket_types::{ChecksumAlgorithm, ConditionFailure, NameError, RangeError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum Error {
    #[error("the specified bucket does not exist")]
    NoSuchBucket,
    #[error("the bucket you tried to create already exists, and you own it")]
    BucketAlreadyOwnedByYou,
    #[error("the bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("invalid bucket name: {0}")]
    InvalidBucketName(String),
    #[error("the specified key does not exist")]
    NoSuchKey,
    #[error("the specified version does not exist")]
    NoSuchVersion,
    #[error("the specified method is not allowed against this resource: the version is a delete marker")]
    DeleteMarker { version_id: String },
    #[error("your key is too long: {0} bytes; the limit is 1024")]
    KeyTooLong(usize),
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    #[error("the requested range is not satisfiable (object size {size})")]
    InvalidRange { size: u64 },
    #[error("not modified")]
    NotModified,
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    /// A conditional write kept colliding with concurrent conditional writes of the same key
    /// (409 ConditionalRequestConflict: nothing was written; the client may retry).
    #[error("{0}")]
    ConditionalRequestConflict(String),
    #[error("the Content-MD5 you specified did not match what we received")]
    BadDigest,
    #[error("the {} you specified did not match the calculated checksum", .0.as_str())]
    ChecksumMismatch(ChecksumAlgorithm),
    #[error("the Content-MD5 you specified is not valid")]
    InvalidDigest,
    #[error("you did not provide the number of bytes specified by the Content-Length header: {0}")]
    IncompleteBody(String),
    #[error("the request body's chunk signatures do not match: check your key and signing method")]
    BodySignatureMismatch,
    #[error("your proposed upload exceeds the maximum allowed size")]
    EntityTooLarge,
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    #[error("one or more of the specified parts could not be found: {0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("your proposed upload is smaller than the minimum allowed object size (part {part}: {size} bytes)")]
    EntityTooSmall { part: u32, size: u64 },
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidBucketState(String),
    #[error("object lock configuration does not exist for this bucket")]
    ObjectLockNotEnabled,
    #[error("the specified object does not have an object lock configuration")]
    NoSuchObjectLockConfiguration,
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the access key {0} does not exist")]
    NoSuchAccessKey(String),
    #[error("the lifecycle configuration does not exist")]
    NoSuchLifecycleConfiguration,
    #[error("the CORS configuration does not exist")]
    NoSuchCorsConfiguration,
    #[error("the TagSet does not exist")]
    NoSuchTagSet,
    #[error("invalid tag: {0}")]
    InvalidTag(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The cluster cannot serve the request now (no quorum, replicas unreachable).
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ironbucket_meta::Error> for Error {
    fn from(e: ironbucket_meta::Error) -> Self {
        match e {
            ironbucket_meta::Error::Corrupt(s) => Error::Corrupt(s),
            // The node can no longer commit: a client should retry elsewhere (503).
            e @ (ironbucket_meta::Error::Failed(_) | ironbucket_meta::Error::Closed) => {
                Error::Unavailable(e.to_string())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<ironbucket_storage::Error> for Error {
    fn from(e: ironbucket_storage::Error) -> Self {
        match e {
            ironbucket_storage::Error::Corrupt { .. } | ironbucket_storage::Error::NotFound(_) => {
                Error::Corrupt(e.to_string())
            }
            ironbucket_storage::Error::CustomerKeyRequired(_) => Error::InvalidRequest(e.to_string()),
            ironbucket_storage::Error::CustomerKeyMismatch(_) => Error::AccessDenied(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        match e {
            NameError::KeyTooLong(n) => Error::KeyTooLong(n),
            NameError::KeyEmpty => Error::InvalidKey(e.to_string()),
            other => Error::InvalidBucketName(other.to_string()),
        }
    }
}

impl From<ConditionFailure> for Error {
    fn from(e: ConditionFailure) -> Self {
        match e {
            ConditionFailure::NotModified => Error::NotModified,
            ConditionFailure::PreconditionFailed => Error::PreconditionFailed,
        }
    }
}

impl Error {
    /// A request body that could not be read: a chunk signature that did not verify
    /// (`PermissionDenied` from the body stream), or a body cut short.
    pub fn from_body(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::BodySignatureMismatch,
            _ => Error::IncompleteBody(e.to_string()),
        }
    }

    pub(crate) fn range(_: RangeError, size: u64) -> Self {
        Error::InvalidRange { size }
    }
}
