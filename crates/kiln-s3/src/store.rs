//! The object store: buckets that belong to accounts, objects made of immutable blob files and made
//! visible by one index commit. This is the in-process API; `crate::s3` maps the S3 protocol onto it.
//!
//! Nothing about buckets or objects is kept in memory between calls: the index is the truth, so
//! several processes (replicas sharing one PostgreSQL index and one directory) serve the same store.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use kiln_store::db::Db;
use s3s::crypto::{Checksum as _, Md5};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::blobs::{BlobStream, Blobs, LEFTOVER_AGE};
use crate::index::{BucketRow, Index, ObjectRow, PartRow, Segment, UploadRow};
use crate::listing::{ListPage, ListQuery};

/// The smallest part of a multipart upload other than the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The highest part number.
pub const MAX_PART_NUMBER: i32 = 10_000;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    /// The 12-digit account that owns it.
    pub account: String,
    /// The region it was created with (`None`: us-east-1).
    pub region: Option<String>,
    /// Epoch milliseconds.
    pub created: i64,
}

impl From<BucketRow> for Bucket {
    fn from(b: BucketRow) -> Self {
        Bucket {
            name: b.name,
            account: b.account,
            region: b.region,
            created: b.created,
        }
    }
}

/// What is stored with an object besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// `Expires`, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// User metadata (`x-amz-meta-*`), names lower-cased without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
}

/// An object's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// As S3 computes it, without quotes: MD5 hex, or `<md5 of part MD5s>-<parts>` for multipart.
    pub etag: String,
    /// Epoch milliseconds.
    pub last_modified: i64,
    pub meta: ObjectMeta,
}

/// A stored part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: i32,
    pub size: u64,
    pub etag: String,
    pub last_modified: i64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: i64,
}

/// What an upload's body turned out to be, for checks before it becomes visible.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub size: u64,
    pub md5: [u8; 16],
}

/// An object found and ready to be read.
pub struct OpenObject {
    pub info: ObjectInfo,
    segments: Vec<Segment>,
    blobs: Arc<Blobs>,
}

impl OpenObject {
    /// Streams bytes `range` of the object (`start..end`, within its size).
    pub fn read(&self, range: std::ops::Range<u64>) -> BlobStream {
        self.blobs.read(&self.segments, range)
    }
}

struct Inner {
    index: Index,
    blobs: Arc<Blobs>,
}

/// The embedded object store of a data directory.
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn meta_json(meta: &ObjectMeta) -> String {
    serde_json::to_string(meta).unwrap_or_else(|_| "{}".into())
}

fn meta_of(text: &str) -> ObjectMeta {
    serde_json::from_str(text).unwrap_or_default()
}

fn info_of(row: &ObjectRow) -> ObjectInfo {
    ObjectInfo {
        bucket: row.bucket.clone(),
        key: row.key.clone(),
        size: row.size,
        etag: row.etag.clone(),
        last_modified: row.last_modified,
        meta: meta_of(&row.meta),
    }
}

fn upload_info(u: &UploadRow) -> UploadInfo {
    UploadInfo {
        upload_id: u.upload_id.clone(),
        bucket: u.bucket.clone(),
        key: u.key.clone(),
        initiated: u.initiated,
    }
}

fn part_info(p: &PartRow) -> PartInfo {
    PartInfo {
        part_number: p.part_number,
        size: p.size,
        etag: p.md5.clone(),
        last_modified: p.last_modified,
    }
}

/// Checks a key: non-empty, at most 1024 bytes. Any other UTF-8 is allowed (keys are never paths).
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::KeyTooLong(key.len()));
    }
    Ok(())
}

/// Turns the stored parts of an upload and the parts a client asked for into the object's segments:
/// `(segments, size, etag, unused blobs)`. Refuses as S3 does.
pub(crate) fn assemble_parts(
    available: &[PartRow],
    requested: &[(i32, String)],
) -> Result<(Vec<Segment>, u64, String, Vec<String>), Error> {
    if requested.is_empty() {
        return Err(Error::InvalidPart("You must specify at least one part.".into()));
    }
    if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Error::InvalidPartOrder);
    }
    let by_number: HashMap<i32, &PartRow> = available.iter().map(|p| (p.part_number, p)).collect();
    let mut segments = Vec::with_capacity(requested.len());
    let mut md5s = Md5::new();
    let mut size = 0u64;
    for (i, (number, etag)) in requested.iter().enumerate() {
        let part = by_number
            .get(number)
            .filter(|p| p.md5.eq_ignore_ascii_case(etag.trim_matches('"')))
            .ok_or_else(|| {
                Error::InvalidPart(format!(
                    "One or more of the specified parts could not be found: part {number} with ETag {etag}."
                ))
            })?;
        if i + 1 < requested.len() && part.size < MIN_PART_SIZE {
            return Err(Error::EntityTooSmall(*number));
        }
        let raw = hex::decode(&part.md5).map_err(|_| Error::Corrupt(format!("part {number} has a bad MD5")))?;
        md5s.update(&raw);
        size += part.size;
        segments.push(Segment(part.blob.clone(), part.size));
    }
    let used: std::collections::HashSet<i32> = requested.iter().map(|(n, _)| *n).collect();
    let unused = available
        .iter()
        .filter(|p| !used.contains(&p.part_number))
        .map(|p| p.blob.clone())
        .collect();
    let etag = format!("{}-{}", hex::encode(md5s.finalize()), requested.len());
    Ok((segments, size, etag, unused))
}

impl ObjectStore {
    /// Opens the store in `dir` (normally `<data-dir>/s3`) with its index in a SQLite file there,
    /// creating both if needed, and removes what a crash may have left: temporary files and blobs
    /// the index does not refer to.
    pub async fn open(dir: &Path) -> Result<Self, Error> {
        create_dir(dir)?;
        let index = Index::open(&dir.join("index.db")).await?;
        // A SQLite index has one process serving it (the server holds the data directory's lock),
        // so whatever a crash left unreferenced can go at once.
        Self::start(dir, index, Duration::ZERO).await
    }

    /// Opens the store in `dir` with its index in `db`: a PostgreSQL database (the index's tables
    /// are created or migrated there), which every replica sharing `dir` uses, or a SQLite database
    /// opened with [`crate::MIGRATIONS`].
    pub async fn open_on(dir: &Path, db: Db) -> Result<Self, Error> {
        create_dir(dir)?;
        let index = Index::on(db).await?;
        Self::start(dir, index, LEFTOVER_AGE).await
    }

    async fn start(dir: &Path, index: Index, leftover_age: Duration) -> Result<Self, Error> {
        let blobs = Arc::new(Blobs::open(dir, leftover_age)?);
        // The references first, then the files: with replicas, a blob indexed in between is younger
        // than LEFTOVER_AGE, and so is one another replica published and has not indexed yet.
        let keep = index.referenced_blobs().await?;
        let removed = blobs.remove_unreferenced(&keep, leftover_age)?;
        if removed > 0 {
            tracing::info!(target: "kiln::s3", "removed {removed} unreferenced blob files");
        }
        let inner = Arc::new(Inner { index, blobs });
        spawn_sweeper(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// The bucket of this name, if it exists (read from the index: another replica may have
    /// created or deleted it).
    pub async fn bucket(&self, name: &str) -> Result<Option<Bucket>, Error> {
        Ok(self.inner.index.bucket(name).await?.map(Bucket::from))
    }

    /// The buckets of an account, by name.
    pub async fn buckets(&self, account: &str) -> Result<Vec<Bucket>, Error> {
        Ok(self
            .inner
            .index
            .buckets_of(account)
            .await?
            .into_iter()
            .map(Bucket::from)
            .collect())
    }

    async fn require_bucket(&self, name: &str) -> Result<Bucket, Error> {
        self.bucket(name).await?.ok_or_else(|| Error::NoSuchBucket(name.into()))
    }

    /// Creates a bucket for `account`. Names are global: a name another account holds is
    /// `BucketAlreadyExists`, one the account holds is `BucketAlreadyOwnedByYou`.
    pub async fn create_bucket(&self, account: &str, name: &str, region: Option<&str>) -> Result<Bucket, Error> {
        if !s3s::path::check_bucket_name(name) {
            return Err(Error::InvalidBucketName(name.into()));
        }
        let row = BucketRow {
            name: name.into(),
            account: account.into(),
            region: region.filter(|r| !r.is_empty() && *r != "us-east-1").map(Into::into),
            created: now_ms(),
        };
        if !self.inner.index.insert_bucket(&row).await? {
            return Err(match self.inner.index.bucket(name).await? {
                Some(b) if b.account == account => Error::BucketAlreadyOwnedByYou(name.into()),
                // Taken by another account, or deleted again since: the name was not free.
                _ => Error::BucketAlreadyExists(name.into()),
            });
        }
        Ok(row.into())
    }

    /// Creates the bucket if it does not exist; `Ok(true)` if it was created. A bucket of the same
    /// name owned by another account is an error (`BucketAlreadyExists`).
    pub async fn create_bucket_if_missing(&self, account: &str, name: &str) -> Result<bool, Error> {
        match self.create_bucket(account, name, None).await {
            Ok(_) => Ok(true),
            Err(Error::BucketAlreadyOwnedByYou(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an empty bucket (unfinished multipart uploads in it are aborted).
    pub async fn delete_bucket(&self, name: &str) -> Result<(), Error> {
        let blobs = self.inner.index.delete_bucket(name).await?;
        self.inner.blobs.retire(blobs);
        Ok(())
    }

    /// Stores an object from a stream of bytes. `check` sees the received body before the object
    /// becomes visible and may refuse it (digests); until then readers see the previous object.
    pub async fn put_object<S, E, F>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        meta: ObjectMeta,
        check: F,
    ) -> Result<ObjectInfo, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<s3s::StdError>,
        F: FnOnce(&Received) -> Result<(), Error>,
    {
        self.require_bucket(bucket).await?;
        check_key(key)?;
        let written = self.inner.blobs.write(body).await?;
        let received = Received {
            size: written.size,
            md5: written.md5,
        };
        if let Err(e) = check(&received) {
            self.inner.blobs.remove_now(&written.id);
            return Err(e);
        }
        let row = ObjectRow {
            bucket: bucket.into(),
            key: key.into(),
            size: written.size,
            etag: hex::encode(written.md5),
            last_modified: now_ms(),
            meta: meta_json(&meta),
            segments: vec![Segment(written.id.clone(), written.size)],
        };
        match self.inner.index.put_object(&row).await {
            Ok(old) => {
                self.inner.blobs.retire(old);
                Ok(info_of(&row))
            }
            Err(e) => {
                self.inner.blobs.remove_now(&written.id);
                Err(e)
            }
        }
    }

    /// Stores a small object from memory.
    pub async fn put_bytes(&self, bucket: &str, key: &str, data: Bytes, meta: ObjectMeta) -> Result<ObjectInfo, Error> {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(data)]);
        self.put_object(bucket, key, body, meta, |_| Ok(())).await
    }

    async fn find(&self, bucket: &str, key: &str) -> Result<ObjectRow, Error> {
        self.require_bucket(bucket).await?;
        self.inner
            .index
            .get_object(bucket, key)
            .await?
            .ok_or_else(|| Error::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            })
    }

    /// Describes an object.
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<ObjectInfo, Error> {
        Ok(info_of(&self.find(bucket, key).await?))
    }

    /// Finds an object for reading.
    pub async fn open_object(&self, bucket: &str, key: &str) -> Result<OpenObject, Error> {
        let row = self.find(bucket, key).await?;
        Ok(OpenObject {
            info: info_of(&row),
            segments: row.segments,
            blobs: self.inner.blobs.clone(),
        })
    }

    /// Deletes an object; deleting a missing key is not an error (as in S3).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), Error> {
        self.require_bucket(bucket).await?;
        let old = self.inner.index.delete_object(bucket, key).await?;
        self.inner.blobs.retire(old);
        Ok(())
    }

    /// Copies an object (sharing no files with the source); `meta: None` keeps the source's.
    pub async fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        dst_bucket: &str,
        dst_key: &str,
        meta: Option<ObjectMeta>,
    ) -> Result<ObjectInfo, Error> {
        self.require_bucket(dst_bucket).await?;
        check_key(dst_key)?;
        let src = self.find(src_bucket, src_key).await?;
        let ids: Vec<String> = src.segments.iter().map(|Segment(id, _)| id.clone()).collect();
        let _pin = self.inner.blobs.pin(&ids);
        let mut segments = Vec::with_capacity(src.segments.len());
        for Segment(id, size) in &src.segments {
            match self.inner.blobs.duplicate(id).await {
                Ok(new) => segments.push(Segment(new, *size)),
                Err(e) => {
                    for Segment(id, _) in &segments {
                        self.inner.blobs.remove_now(id);
                    }
                    return Err(e);
                }
            }
        }
        let row = ObjectRow {
            bucket: dst_bucket.into(),
            key: dst_key.into(),
            size: src.size,
            etag: src.etag.clone(),
            last_modified: now_ms(),
            meta: meta.map(|m| meta_json(&m)).unwrap_or(src.meta),
            segments,
        };
        match self.inner.index.put_object(&row).await {
            Ok(old) => {
                self.inner.blobs.retire(old);
                Ok(info_of(&row))
            }
            Err(e) => {
                for Segment(id, _) in &row.segments {
                    self.inner.blobs.remove_now(id);
                }
                Err(e)
            }
        }
    }

    /// One page of a bucket's listing.
    pub async fn list_objects(&self, bucket: &str, query: ListQuery) -> Result<ListPage, Error> {
        self.require_bucket(bucket).await?;
        self.inner.index.list(bucket, query).await
    }

    /// Starts a multipart upload; returns its id.
    pub async fn create_upload(&self, bucket: &str, key: &str, meta: ObjectMeta) -> Result<String, Error> {
        self.require_bucket(bucket).await?;
        check_key(key)?;
        let upload_id = crate::blobs::new_id();
        self.inner
            .index
            .insert_upload(&UploadRow {
                upload_id: upload_id.clone(),
                bucket: bucket.into(),
                key: key.into(),
                initiated: now_ms(),
                meta: meta_json(&meta),
            })
            .await?;
        Ok(upload_id)
    }

    async fn require_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<UploadRow, Error> {
        self.require_bucket(bucket).await?;
        self.inner
            .index
            .get_upload(upload_id)
            .await?
            .filter(|u| u.bucket == bucket && u.key == key)
            .ok_or_else(|| Error::NoSuchUpload(upload_id.into()))
    }

    /// Stores one part of a multipart upload (replacing an earlier upload of the same number).
    pub async fn upload_part<S, E, F>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: S,
        check: F,
    ) -> Result<PartInfo, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<s3s::StdError>,
        F: FnOnce(&Received) -> Result<(), Error>,
    {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(Error::InvalidArgument(format!(
                "Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive"
            )));
        }
        self.require_upload(bucket, key, upload_id).await?;
        let written = self.inner.blobs.write(body).await?;
        let received = Received {
            size: written.size,
            md5: written.md5,
        };
        if let Err(e) = check(&received) {
            self.inner.blobs.remove_now(&written.id);
            return Err(e);
        }
        let part = PartRow {
            part_number,
            blob: written.id.clone(),
            size: written.size,
            md5: hex::encode(written.md5),
            last_modified: now_ms(),
        };
        match self.inner.index.put_part(upload_id, &part).await {
            Ok(old) => {
                self.inner.blobs.retire(old.into_iter().collect());
                Ok(part_info(&part))
            }
            Err(e) => {
                self.inner.blobs.remove_now(&written.id);
                Err(e)
            }
        }
    }

    /// Completes a multipart upload from the listed `(part number, ETag)` pairs; the object becomes
    /// visible in one commit, without copying the parts.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> Result<ObjectInfo, Error> {
        // The index checks the bucket in the completing transaction.
        let completed = self
            .inner
            .index
            .complete_upload(bucket, upload_id, |upload, available| {
                if upload.bucket != bucket || upload.key != key {
                    return Err(Error::NoSuchUpload(upload_id.into()));
                }
                let (segments, size, etag, unused) = assemble_parts(&available, parts)?;
                let object = ObjectRow {
                    bucket: bucket.into(),
                    key: key.into(),
                    size,
                    etag,
                    last_modified: now_ms(),
                    meta: upload.meta.clone(),
                    segments,
                };
                Ok((object, unused))
            })
            .await?;
        self.inner.blobs.retire(completed.retired);
        Ok(info_of(&completed.object))
    }

    /// Aborts a multipart upload and deletes its parts.
    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<(), Error> {
        self.require_upload(bucket, key, upload_id).await?;
        let blobs = self.inner.index.abort_upload(upload_id).await?;
        self.inner.blobs.retire(blobs);
        Ok(())
    }

    /// The parts of an upload after `marker`: at most `max`, and whether more follow.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        marker: i32,
        max: usize,
    ) -> Result<(UploadInfo, Vec<PartInfo>, bool), Error> {
        let upload = self.require_upload(bucket, key, upload_id).await?;
        let mut parts = self.inner.index.list_parts(upload_id, marker, max + 1).await?;
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok((upload_info(&upload), parts.iter().map(part_info).collect(), truncated))
    }

    /// Unfinished uploads of a bucket under `prefix`, after the markers: at most `max`, and
    /// whether more follow.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        max: usize,
    ) -> Result<(Vec<UploadInfo>, bool), Error> {
        self.require_bucket(bucket).await?;
        let mut rows = self
            .inner
            .index
            .list_uploads(bucket, prefix, key_marker, upload_id_marker, max + 1)
            .await?;
        let truncated = rows.len() > max;
        rows.truncate(max);
        Ok((rows.iter().map(upload_info).collect(), truncated))
    }
}

#[cfg(test)]
impl ObjectStore {
    /// Every blob this store retired (each must be retired once, by one replica).
    pub(crate) fn retired_log(&self) -> Vec<String> {
        self.inner.blobs.retired_log()
    }

    /// Every blob the index refers to.
    pub(crate) async fn referenced_blobs(&self) -> std::collections::HashSet<String> {
        self.inner.index.referenced_blobs().await.expect("references")
    }
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: format!("cannot create {}", dir.display()),
        source,
    })
}

fn spawn_sweeper(inner: Weak<Inner>) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                match inner.upgrade() {
                    Some(inner) => inner.blobs.sweep(),
                    None => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Place, on_each_database};

    on_each_database!(
        objects_survive_reopening_and_keys_are_not_paths,
        a_refused_upload_leaves_the_previous_object,
        multipart_objects_read_across_parts_and_copies_are_independent,
    );

    fn part(n: i32, size: u64, md5: &str) -> PartRow {
        PartRow {
            part_number: n,
            blob: format!("blob{n}"),
            size,
            md5: md5.into(),
            last_modified: 0,
        }
    }

    #[test]
    fn multipart_etag_is_md5_of_part_md5s() {
        let a = hex::encode(Md5::checksum(b"a"));
        let b = hex::encode(Md5::checksum(b"b"));
        let available = [part(1, MIN_PART_SIZE, &a), part(2, 1, &b), part(3, 1, &b)];
        let (segments, size, etag, unused) =
            assemble_parts(&available, &[(1, format!("\"{a}\"")), (2, b.clone())]).expect("assemble");
        let mut raw = hex::decode(&a).expect("hex");
        raw.extend(hex::decode(&b).expect("hex"));
        assert_eq!(etag, format!("{}-2", hex::encode(Md5::checksum(&raw))));
        assert_eq!(size, MIN_PART_SIZE + 1);
        assert_eq!(
            segments,
            [Segment("blob1".into(), MIN_PART_SIZE), Segment("blob2".into(), 1)]
        );
        assert_eq!(unused, ["blob3"]);
    }

    #[test]
    fn multipart_refusals_match_s3() {
        let m = hex::encode(Md5::checksum(b"x"));
        let available = [part(1, 10, &m), part(2, 10, &m)];
        assert!(matches!(assemble_parts(&available, &[]), Err(Error::InvalidPart(_))));
        assert!(matches!(
            assemble_parts(&available, &[(2, m.clone()), (1, m.clone())]),
            Err(Error::InvalidPartOrder)
        ));
        assert!(matches!(
            assemble_parts(&available, &[(1, m.clone()), (2, m.clone())]),
            Err(Error::EntityTooSmall(1))
        ));
        assert!(matches!(
            assemble_parts(&available, &[(3, m.clone())]),
            Err(Error::InvalidPart(_))
        ));
        assert!(matches!(
            assemble_parts(&available, &[(1, "00".into())]),
            Err(Error::InvalidPart(_))
        ));
        assert!(assemble_parts(&available, &[(2, m)]).is_ok());
    }

    #[test]
    fn keys_are_checked_for_length_only() {
        assert!(check_key("../../etc/passwd").is_ok());
        assert!(check_key(&"é".repeat(512)).is_ok());
        assert!(matches!(check_key(&"é".repeat(513)), Err(Error::KeyTooLong(1026))));
        assert!(check_key("").is_err());
    }

    async fn body_of(o: &OpenObject, range: std::ops::Range<u64>) -> Vec<u8> {
        use futures::StreamExt;
        let parts: Vec<std::io::Result<Bytes>> = o.read(range).collect().await;
        parts.into_iter().flat_map(|p| p.expect("read").to_vec()).collect()
    }

    async fn objects_survive_reopening_and_keys_are_not_paths(place: &Place) {
        let keys = ["a", "a/b", "..", "../x", "/abs", "a//b", &"k".repeat(1024)];
        {
            let store = place.store().await;
            assert!(
                store
                    .create_bucket_if_missing("111111111111", "bkt")
                    .await
                    .expect("create")
            );
            assert!(
                !store
                    .create_bucket_if_missing("111111111111", "bkt")
                    .await
                    .expect("again")
            );
            assert!(matches!(
                store.create_bucket_if_missing("222222222222", "bkt").await,
                Err(Error::BucketAlreadyExists(_))
            ));
            for (i, k) in keys.iter().enumerate() {
                let meta = ObjectMeta {
                    content_type: Some("text/plain".into()),
                    ..Default::default()
                };
                store
                    .put_bytes("bkt", k, Bytes::from(format!("value {i}")), meta)
                    .await
                    .expect("put");
            }
        }
        let store = place.store().await;
        assert_eq!(store.buckets("111111111111").await.expect("buckets").len(), 1);
        assert!(store.buckets("222222222222").await.expect("buckets").is_empty());
        for (i, k) in keys.iter().enumerate() {
            let o = store.open_object("bkt", k).await.expect("open object");
            assert_eq!(o.info.meta.content_type.as_deref(), Some("text/plain"));
            assert_eq!(body_of(&o, 0..o.info.size).await, format!("value {i}").as_bytes());
        }
        assert!(matches!(
            store.delete_bucket("bkt").await,
            Err(Error::BucketNotEmpty(_))
        ));
        // Nothing was written outside the store's directory layout.
        let mut top: Vec<String> = std::fs::read_dir(place.dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("index.db"))
            .collect();
        top.sort();
        assert_eq!(top, ["blobs", "tmp"]);
    }

    async fn a_refused_upload_leaves_the_previous_object(place: &Place) {
        let store = place.store().await;
        store.create_bucket("111111111111", "bkt", None).await.expect("create");
        store
            .put_bytes("bkt", "k", Bytes::from_static(b"old"), ObjectMeta::default())
            .await
            .expect("put");
        let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"new"))]);
        let refused = store
            .put_object("bkt", "k", body, ObjectMeta::default(), |_| {
                Err(Error::BadDigest("no".into()))
            })
            .await;
        assert!(matches!(refused, Err(Error::BadDigest(_))));
        let o = store.open_object("bkt", "k").await.expect("open");
        assert_eq!(body_of(&o, 0..3).await, b"old");
        drop(o);
        // Only the one live blob is on disk.
        let keep = store.inner.index.referenced_blobs().await.expect("refs");
        assert_eq!(keep.len(), 1);
    }

    async fn multipart_objects_read_across_parts_and_copies_are_independent(place: &Place) {
        let store = place.store().await;
        store.create_bucket("111111111111", "bkt", None).await.expect("create");
        let id = store
            .create_upload("bkt", "big", ObjectMeta::default())
            .await
            .expect("create upload");
        let first = vec![7u8; MIN_PART_SIZE as usize];
        let mut etags = Vec::new();
        for (n, data) in [(1, Bytes::from(first.clone())), (2, Bytes::from_static(b"tail"))] {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(data)]);
            let p = store
                .upload_part("bkt", "big", &id, n, body, |_| Ok(()))
                .await
                .expect("part");
            etags.push((n, p.etag));
        }
        let (_, parts, truncated) = store.list_parts("bkt", "big", &id, 0, 1).await.expect("list parts");
        assert_eq!((parts.len(), truncated), (1, true));
        let info = store
            .complete_upload("bkt", "big", &id, &etags)
            .await
            .expect("complete");
        assert!(info.etag.ends_with("-2"));
        assert_eq!(info.size, MIN_PART_SIZE + 4);
        let o = store.open_object("bkt", "big").await.expect("open");
        assert_eq!(body_of(&o, MIN_PART_SIZE - 2..MIN_PART_SIZE + 4).await, b"\x07\x07tail");
        drop(o);
        assert!(matches!(
            store.complete_upload("bkt", "big", &id, &etags).await,
            Err(Error::NoSuchUpload(_))
        ));
        store
            .copy_object("bkt", "big", "bkt", "copy", None)
            .await
            .expect("copy");
        store.delete_object("bkt", "big").await.expect("delete");
        let o = store.open_object("bkt", "copy").await.expect("open copy");
        assert_eq!(o.info.etag, info.etag);
        assert_eq!(body_of(&o, MIN_PART_SIZE..MIN_PART_SIZE + 4).await, b"tail");
    }
}
