//! kiln's embedded object store: the S3 protocol over local files.
//!
//! This crate is for serving S3 from a data directory: buckets that belong to accounts, objects
//! stored as immutable blob files named by random ids (never by their keys) plus an index of
//! buckets, objects and multipart uploads that orders keys by UTF-8 bytes and makes an upload
//! visible in one commit, so a crash mid-upload never shows a partial object. The index is a SQLite
//! file in the directory, or a PostgreSQL database that several `kiln serve` replicas sharing the
//! directory use at once. [`ObjectStore`] is the in-process API (the engine creates buckets through
//! it); [`S3Handler`] serves the S3 wire protocol through `s3s` with SigV4 checked against kiln's
//! access keys ([`Accounts`]). It is not an S3 client (jobs read and write objects through
//! `kiln-blob`), and it knows nothing of jobs or of HTTP routing beyond the S3 requests it is given.

mod auth_limits;
mod blobs;
mod index;
pub mod listing;
mod md5;
#[cfg(test)]
mod replica_tests;
mod s3;
mod store;
#[cfg(test)]
mod testing;

pub use blobs::BlobStream;
pub use index::MIGRATIONS;
pub use listing::{ListEntry, ListPage, ListQuery};
pub use s3::{Accounts, S3Handler};
pub use store::{
    Bucket, MAX_KEY_BYTES, MAX_PART_NUMBER, MIN_PART_SIZE, ObjectInfo, ObjectMeta, ObjectStore, OpenObject, PartInfo,
    Received, UploadInfo,
};

/// Errors of the object store. Each maps to the S3 error a client expects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bucket '{0}' does not exist")]
    NoSuchBucket(String),
    #[error("the key '{key}' does not exist in bucket '{bucket}'")]
    NoSuchKey { bucket: String, key: String },
    #[error("the bucket name '{0}' is taken by another account; choose another name")]
    BucketAlreadyExists(String),
    #[error("the bucket '{0}' already exists and is yours")]
    BucketAlreadyOwnedByYou(String),
    #[error("the bucket '{0}' is not empty; delete its objects first")]
    BucketNotEmpty(String),
    #[error("'{0}' is not a valid bucket name (3-63 characters: lower-case letters, digits, '.', '-')")]
    InvalidBucketName(String),
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("the key is {0} bytes long; keys are at most 1024 bytes")]
    KeyTooLong(usize),
    #[error("the multipart upload '{0}' does not exist (it may have been completed or aborted)")]
    NoSuchUpload(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order; order parts by part number")]
    InvalidPartOrder,
    #[error("part {0} is smaller than 5 MiB and is not the last part")]
    EntityTooSmall(i32),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    BadDigest(String),
    #[error("the request body could not be read: {0}")]
    Body(s3s::StdError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("object index: {0}")]
    Index(String),
    #[error("the object index is inconsistent: {0}")]
    Corrupt(String),
}

impl Error {
    /// Whether the error is the disk being full (a blob write's `ENOSPC`, the index's
    /// "database or disk is full").
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                source.raw_os_error() == Some(libc::ENOSPC) || source.kind() == std::io::ErrorKind::StorageFull
            }
            Error::Index(m) => m.contains("disk is full"),
            _ => false,
        }
    }
}

/// A `Result` of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
