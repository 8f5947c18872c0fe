//! Object URIs: `s3://bucket/key` and `file:///path` (a bare absolute or relative path is a local
//! path too).

use std::fmt;
use std::path::PathBuf;

use crate::BlobError;

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobUri {
    /// An object (or, for listings, a key prefix) in a bucket.
    S3 { bucket: String, key: String },
    /// A local file (or, for listings, a path prefix).
    File(PathBuf),
}

impl BlobUri {
    /// Parses a URI. S3 keys are taken as written (no percent-decoding); `file://` URIs must be
    /// absolute (`file:///data/x`).
    pub fn parse(uri: &str) -> Result<Self, BlobError> {
        let invalid = |reason: &str| BlobError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("the bucket name is missing (s3://bucket/key)"));
            }
            if !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
                || bucket.len() < 3
                || bucket.len() > 63
            {
                return Err(invalid("the bucket name must be 3-63 characters: a-z, 0-9, '.', '-'"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if let Some(rest) = uri.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid("file URIs must be absolute: file:///path"));
            }
            return Ok(Self::File(PathBuf::from(rest)));
        }
        if uri.contains("://") {
            return Err(invalid("only s3:// and file:// URIs are supported"));
        }
        if uri.is_empty() {
            return Err(invalid("the URI is empty"));
        }
        Ok(Self::File(PathBuf::from(uri)))
    }

    /// The URI of `key` in the same bucket (or of a path, for local files).
    pub fn with_key(&self, key: &str) -> Self {
        match self {
            Self::S3 { bucket, .. } => Self::S3 {
                bucket: bucket.clone(),
                key: key.to_string(),
            },
            Self::File(_) => Self::File(PathBuf::from(key)),
        }
    }
}

impl fmt::Display for BlobUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::File(path) => write!(f, "file://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_and_file_uris() {
        assert_eq!(
            BlobUri::parse("s3://my-bucket/a/b c.csv").ok(),
            Some(BlobUri::S3 {
                bucket: "my-bucket".into(),
                key: "a/b c.csv".into()
            })
        );
        assert_eq!(
            BlobUri::parse("s3://my-bucket").ok(),
            Some(BlobUri::S3 {
                bucket: "my-bucket".into(),
                key: "".into()
            })
        );
        assert_eq!(
            BlobUri::parse("file:///data/x").ok(),
            Some(BlobUri::File("/data/x".into()))
        );
        assert_eq!(BlobUri::parse("rel/x").ok(), Some(BlobUri::File("rel/x".into())));
        for bad in [
            "s3:///key",
            "s3://UPPER/x",
            "s3://ab/x",
            "file://relative",
            "gs://b/k",
            "",
        ] {
            assert!(BlobUri::parse(bad).is_err(), "{bad}");
        }
        let uri = BlobUri::parse("s3://bkt/k/").expect("uri");
        assert_eq!(uri.to_string(), "s3://bkt/k/");
        assert_eq!(uri.with_key("k/x").to_string(), "s3://bkt/k/x");
    }
}
