//! What the engine may ask of the object store at create time: whether an input prefix holds any
//! object the account can read (SageMaker refuses a job whose input is empty, reference §3.1).

use async_trait::async_trait;

/// Looks into object storage on the engine's behalf.
#[async_trait]
pub trait ObjectCatalog: Send + Sync {
    /// `Some(true)` if `s3://bucket/prefix` holds an object `account` can read, `Some(false)` if
    /// not, `None` if this catalog cannot tell (an external bucket).
    async fn has_objects(&self, account: &str, bucket: &str, prefix: &str) -> Option<bool>;
}

/// A catalog that can never tell (no check is made).
pub struct NoCatalog;

#[async_trait]
impl ObjectCatalog for NoCatalog {
    async fn has_objects(&self, _: &str, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// Splits `s3://bucket/prefix` (or `https://host/bucket/prefix`).
pub fn split_s3_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("s3://")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}
