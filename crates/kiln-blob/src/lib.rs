//! kiln's object access for jobs: the one place that reads and writes the objects a job names.
//!
//! `s3://bucket/key` goes to kiln's embedded S3 endpoint over HTTP (agents may run on other hosts),
//! or to an external S3 endpoint when the configuration routes the bucket there; both through
//! `object_store`. `file://` (or a bare path) is a local file. Transfers stream: downloads of large
//! objects fetch ranges in parallel, uploads of large files go multipart, and a download appears
//! at its destination only once complete. [`pack_tar_gz`]/[`unpack_tar_gz`] make and open
//! SageMaker-style `model.tar.gz` archives. This crate knows nothing of jobs, channels or the
//! database; callers decide what to fetch and where to put it.
//!
//! Keys are passed to `object_store` unchanged. It cannot address keys with empty segments
//! (`prefix//train/x`, which the common `f"{prefix}/train"` makes of a prefix ending in `/`), a
//! leading or trailing `/`, `.`/`..` segments or control characters; S3 allows them, so those go
//! through plain signed S3 requests instead (`raw`: list, get, put of up to 5 GiB).

mod archive;
mod raw;
mod uri;

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

pub use archive::{pack_tar_gz, unpack_tar_gz};
pub use uri::BlobUri;

/// An S3 endpoint and the credentials to use there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    /// `http(s)://host:port`; empty for AWS itself (derived from the region).
    pub endpoint_url: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual-hosted (`bucket.endpoint/key`).
    pub path_style: bool,
}

/// Where `s3://` URIs go: buckets matching an external pattern (an exact name, or `*` for every
/// bucket not matched exactly) to that endpoint, every other bucket to the embedded store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobConfig {
    pub embedded: S3Endpoint,
    pub external: Vec<(String, S3Endpoint)>,
}

/// How transfers are split. The defaults suit both the embedded store and AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferConfig {
    /// Objects at least this large are downloaded as parallel ranges.
    pub parallel_download_threshold: u64,
    /// The size of each downloaded range.
    pub range_size: u64,
    /// Files at least this large are uploaded multipart.
    pub multipart_threshold: u64,
    /// The size of each uploaded part (S3 needs at least 5 MiB).
    pub part_size: usize,
    /// Ranges or parts in flight per transfer.
    pub concurrency: usize,
    /// Sign requests with `UNSIGNED-PAYLOAD` instead of the body's SHA-256: saves hashing every byte
    /// on both ends, but over plain HTTP leaves bodies without integrity protection. Off by default.
    pub unsigned_payload: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            parallel_download_threshold: 64 << 20,
            range_size: 16 << 20,
            multipart_threshold: 16 << 20,
            part_size: 16 << 20,
            concurrency: 8,
            unsigned_payload: false,
        }
    }
}

/// An object found by [`Blobs::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's URI (`s3://bucket/key`, or `file:///path`).
    pub uri: String,
    /// The key in its bucket (for local files, the path).
    pub key: String,
    pub size: u64,
}

/// Errors, each naming the URI or path and the problem.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid object URI '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("{uri} does not exist")]
    NotFound { uri: String },
    #[error("no objects under {uri}")]
    NoObjects { uri: String },
    #[error("access denied to {uri}: check the credentials configured for this endpoint ({message})")]
    AccessDenied { uri: String, message: String },
    #[error("{uri} changed while it was being downloaded; retry")]
    Changed { uri: String },
    #[error("{uri}: {message}")]
    Store { uri: String, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Archive { path: PathBuf, message: String },
    #[error("refusing to unpack '{entry}' from {}: it would land outside the target directory", archive.display())]
    UnsafeEntry { archive: PathBuf, entry: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn store_error(uri: &str, e: object_store::Error) -> BlobError {
    let uri = uri.to_string();
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound { uri },
        object_store::Error::PermissionDenied { source, .. } | object_store::Error::Unauthenticated { source, .. } => {
            BlobError::AccessDenied {
                uri,
                message: source.to_string(),
            }
        }
        object_store::Error::Precondition { .. } => BlobError::Changed { uri },
        object_store::Error::InvalidPath { source } => BlobError::InvalidUri {
            uri,
            reason: source.to_string(),
        },
        other => BlobError::Store {
            uri,
            message: other.to_string(),
        },
    }
}

/// Whether `object_store` can address `key` as it is (no empty, `.` or `..` segment, no leading or
/// trailing `/`, no control character).
fn addressable(key: &str) -> bool {
    StorePath::parse(key).is_ok_and(|p| p.as_ref() == key)
}

/// Whether a listing of `prefix` can go through `object_store`, which lists whole path segments:
/// the directory part of the prefix must be addressable.
fn lists_by_segments(prefix: &str) -> bool {
    match prefix.rfind('/') {
        Some(i) => addressable(&prefix[..i]),
        None => true,
    }
}

/// A sibling of `dest` to write into before renaming over it.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.partial", uuid::Uuid::new_v4().simple()))
}

/// Object access for jobs. Cheap to share (`Arc`); clients are created per bucket on first use.
pub struct Blobs {
    config: BlobConfig,
    transfer: TransferConfig,
    clients: Mutex<HashMap<String, Arc<AmazonS3>>>,
    /// Ranges being downloaded, across every download at once: a channel is staged several
    /// objects at a time, and each large one alone would fill `concurrency` requests; beyond
    /// that, more streams only add buffers and threads on both ends.
    ranges_in_flight: Arc<tokio::sync::Semaphore>,
}

impl Blobs {
    /// Object access with this routing.
    pub fn new(config: BlobConfig) -> Self {
        let transfer = TransferConfig::default();
        Self {
            config,
            transfer,
            clients: Mutex::default(),
            ranges_in_flight: Arc::new(tokio::sync::Semaphore::new(transfer.concurrency.max(1))),
        }
    }

    /// Changes how transfers are split.
    pub fn with_transfer(mut self, transfer: TransferConfig) -> Self {
        self.transfer = transfer;
        self.ranges_in_flight = Arc::new(tokio::sync::Semaphore::new(transfer.concurrency.max(1)));
        self
    }

    /// The endpoint a bucket is served from.
    pub fn endpoint_for(&self, bucket: &str) -> &S3Endpoint {
        let exact = self.config.external.iter().find(|(p, _)| p == bucket);
        let any = || self.config.external.iter().find(|(p, _)| p == "*");
        exact.or_else(any).map(|(_, e)| e).unwrap_or(&self.config.embedded)
    }

    fn client(&self, bucket: &str, uri: &str) -> Result<Arc<AmazonS3>, BlobError> {
        if let Ok(clients) = self.clients.lock()
            && let Some(c) = clients.get(bucket)
        {
            return Ok(c.clone());
        }
        let e = self.endpoint_for(bucket);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&e.region)
            .with_access_key_id(&e.access_key_id)
            .with_secret_access_key(&e.secret_access_key)
            .with_virtual_hosted_style_request(!e.path_style)
            .with_unsigned_payload(self.transfer.unsigned_payload)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(600))
                    .with_connect_timeout(Duration::from_secs(10)),
            );
        if !e.endpoint_url.is_empty() {
            let url = e.endpoint_url.trim_end_matches('/');
            let endpoint = if e.path_style {
                url.to_string()
            } else {
                // Virtual-hosted style: object_store wants the bucket in the endpoint's host.
                match url.split_once("://") {
                    Some((scheme, host)) => format!("{scheme}://{bucket}.{host}"),
                    None => format!("{bucket}.{url}"),
                }
            };
            builder = builder.with_endpoint(endpoint);
        }
        let client = Arc::new(builder.build().map_err(|e| store_error(uri, e))?);
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(bucket.to_string(), client.clone());
        }
        Ok(client)
    }

    /// Plain S3 requests to the endpoint of `bucket`, for keys `object_store` cannot address.
    fn raw(&self, bucket: &str, uri: &str) -> Result<raw::RawS3, BlobError> {
        raw::RawS3::new(self.endpoint_for(bucket).clone()).map_err(|message| BlobError::Store {
            uri: uri.to_string(),
            message,
        })
    }

    fn s3(&self, uri: &str, bucket: &str, key: &str) -> Result<(Arc<AmazonS3>, StorePath), BlobError> {
        let path = StorePath::parse(key).map_err(|e| BlobError::InvalidUri {
            uri: uri.to_string(),
            reason: format!("this key cannot be addressed: {e}"),
        })?;
        if path.as_ref() != key {
            return Err(BlobError::InvalidUri {
                uri: uri.to_string(),
                reason: "keys with a leading or trailing '/' cannot be addressed".into(),
            });
        }
        Ok((self.client(bucket, uri)?, path))
    }

    /// Every object whose URI starts with `prefix_uri` (a plain string prefix, as SageMaker's
    /// `S3Prefix`), in key order, across all pages. No match is an empty list.
    pub async fn list(&self, prefix_uri: &str) -> Result<Vec<ObjectInfo>, BlobError> {
        match BlobUri::parse(prefix_uri)? {
            BlobUri::S3 { bucket, key: prefix } if !lists_by_segments(&prefix) => {
                let found = self
                    .raw(&bucket, prefix_uri)?
                    .list(&bucket, &prefix, prefix_uri)
                    .await?;
                Ok(found
                    .into_iter()
                    .map(|(key, size)| ObjectInfo {
                        uri: format!("s3://{bucket}/{key}"),
                        key,
                        size,
                    })
                    .collect())
            }
            BlobUri::S3 { bucket, key: prefix } => {
                let client = self.client(&bucket, prefix_uri)?;
                // object_store lists by whole path segments: list the enclosing "directory" and
                // keep the keys that start with the prefix.
                let dir = match prefix.rfind('/') {
                    Some(i) => &prefix[..i],
                    None => "",
                };
                let dir = StorePath::parse(dir).map_err(|e| BlobError::InvalidUri {
                    uri: prefix_uri.to_string(),
                    reason: e.to_string(),
                })?;
                let dir = (!dir.as_ref().is_empty()).then_some(dir);
                let mut found: Vec<ObjectInfo> = client
                    .list(dir.as_ref())
                    .map_err(|e| store_error(prefix_uri, e))
                    .try_filter_map(|meta| {
                        let key = meta.location.to_string();
                        let keep = key.starts_with(prefix.as_str());
                        let info = ObjectInfo {
                            uri: format!("s3://{bucket}/{key}"),
                            key,
                            size: meta.size,
                        };
                        futures::future::ready(Ok(keep.then_some(info)))
                    })
                    .try_collect()
                    .await?;
                found.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(found)
            }
            BlobUri::File(prefix) => {
                let prefix_text = prefix.to_string_lossy().into_owned();
                tokio::task::spawn_blocking(move || list_local(&prefix_text))
                    .await
                    .map_err(|e| BlobError::Store {
                        uri: prefix_uri.to_string(),
                        message: e.to_string(),
                    })?
            }
        }
    }

    /// Downloads an object to `local` (parent directories are created); returns its size. The file
    /// appears only once complete. Large objects are fetched as parallel ranges.
    pub async fn download(&self, uri: &str, local: &Path) -> Result<u64, BlobError> {
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(io_at(parent))?;
        }
        let partial = partial_path(local);
        let result = match BlobUri::parse(uri)? {
            BlobUri::S3 { bucket, key } => self.download_s3(uri, &bucket, &key, &partial).await,
            BlobUri::File(src) => copy_local(&src, &partial).await,
        };
        match result {
            Ok(size) => {
                tokio::fs::rename(&partial, local).await.map_err(io_at(local))?;
                Ok(size)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn download_s3(&self, uri: &str, bucket: &str, key: &str, dest: &Path) -> Result<u64, BlobError> {
        if !addressable(key) {
            return self.raw(bucket, uri)?.get_to_file(bucket, key, dest, uri).await;
        }
        let (client, path) = self.s3(uri, bucket, key)?;
        let meta = client.head(&path).await.map_err(|e| store_error(uri, e))?;
        let size = meta.size;
        let file = std::fs::File::create(dest).map_err(io_at(dest))?;
        file.set_len(size).map_err(io_at(dest))?;
        let file = Arc::new(WriteTarget {
            file,
            lock: std::sync::Mutex::new(()),
        });
        // A small object is one range: the same path streams it to disk, and the If-Match still
        // catches it changing between the HEAD and the GET.
        let step = if size >= self.transfer.parallel_download_threshold {
            self.transfer.range_size.max(1)
        } else {
            size.max(1)
        };
        let ranges: Vec<Range<u64>> = (0..size)
            .step_by(step as usize)
            .map(|s| s..(s + step).min(size))
            .collect();
        futures::stream::iter(ranges)
            .map(|range| {
                let (client, path, file) = (client.clone(), path.clone(), file.clone());
                let if_match = meta.e_tag.clone();
                let turns = self.ranges_in_flight.clone();
                async move {
                    // The semaphore is never closed, so this waits for a turn and nothing else.
                    let _turn = turns.acquire_owned().await.map_err(|e| BlobError::Store {
                        uri: uri.to_string(),
                        message: e.to_string(),
                    })?;
                    fetch_range(&client, &path, range, if_match, &file, uri, dest).await
                }
            })
            .buffer_unordered(self.transfer.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        sync_file(file, dest).await?;
        Ok(size)
    }

    /// Downloads every object under `prefix_uri` into `dir` the way SageMaker stages an `S3Prefix`
    /// channel in File mode: an object whose key is the prefix itself goes to `dir/<basename>`,
    /// others to `dir/<key minus prefix, leading '/' removed>`. No objects is an error.
    pub async fn download_prefix(&self, prefix_uri: &str, dir: &Path) -> Result<Vec<(ObjectInfo, PathBuf)>, BlobError> {
        let objects = self.list(prefix_uri).await?;
        let prefix = match BlobUri::parse(prefix_uri)? {
            BlobUri::S3 { key, .. } => key,
            BlobUri::File(p) => p.to_string_lossy().into_owned(),
        };
        // Zero-byte "folder" markers (`dir/`, listed as `dir`) are not files.
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut plan = Vec::new();
        for o in &objects {
            if o.size == 0 && keys.iter().any(|k| k.starts_with(&format!("{}/", o.key))) {
                continue;
            }
            let rel = if o.key == prefix {
                o.key.rsplit('/').next().unwrap_or(&o.key).to_string()
            } else {
                o.key[prefix.len()..].trim_start_matches('/').to_string()
            };
            let rel_path = PathBuf::from(&rel);
            if rel.is_empty()
                || rel_path
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(BlobError::InvalidUri {
                    uri: o.uri.clone(),
                    reason: "the key does not map to a path inside the target directory".into(),
                });
            }
            plan.push((o.clone(), dir.join(rel_path)));
        }
        if plan.is_empty() {
            return Err(BlobError::NoObjects {
                uri: prefix_uri.to_string(),
            });
        }
        futures::stream::iter(plan.iter())
            .map(|(o, local)| self.download(&o.uri, local))
            .buffer_unordered(4)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(plan)
    }

    /// Uploads a local file; returns its size. Large files go multipart, parts in parallel.
    pub async fn upload(&self, local: &Path, uri: &str) -> Result<u64, BlobError> {
        self.upload_with_progress(local, uri, &|_| {}).await
    }

    /// [`Blobs::upload`], calling `progress` with each run of bytes handed to the transfer (a
    /// multipart upload's parts as they are queued, at most `concurrency` parts ahead of what
    /// was sent; a small file's size once sent): what a progress bar shows.
    pub async fn upload_with_progress(
        &self,
        local: &Path,
        uri: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, BlobError> {
        let sent = match BlobUri::parse(uri)? {
            BlobUri::S3 { bucket, key } => self.upload_s3(local, uri, &bucket, &key, progress).await?,
            BlobUri::File(dest) => {
                if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent).await.map_err(io_at(parent))?;
                }
                let partial = partial_path(&dest);
                match copy_local(local, &partial).await {
                    Ok(size) => {
                        tokio::fs::rename(&partial, &dest).await.map_err(io_at(&dest))?;
                        progress(size);
                        size
                    }
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&partial).await;
                        return Err(e);
                    }
                }
            }
        };
        Ok(sent)
    }

    async fn upload_s3(
        &self,
        local: &Path,
        uri: &str,
        bucket: &str,
        key: &str,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, BlobError> {
        if !addressable(key) {
            let size = self.raw(bucket, uri)?.put_file(bucket, key, local, uri).await?;
            progress(size);
            return Ok(size);
        }
        let (client, path) = self.s3(uri, bucket, key)?;
        let file = tokio::fs::File::open(local).await.map_err(io_at(local))?;
        let size = file.metadata().await.map_err(io_at(local))?.len();
        if size < self.transfer.multipart_threshold {
            let data = tokio::fs::read(local).await.map_err(io_at(local))?;
            client
                .put(&path, PutPayload::from(data))
                .await
                .map_err(|e| store_error(uri, e))?;
            progress(size);
            return Ok(size);
        }
        let upload = client.put_multipart(&path).await.map_err(|e| store_error(uri, e))?;
        let part_size = self.transfer.part_size.max(5 << 20);
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let mut source = Some(file.into_std().await);
        let result: Result<(), BlobError> = async {
            loop {
                writer
                    .wait_for_capacity(self.transfer.concurrency.max(1))
                    .await
                    .map_err(|e| store_error(uri, e))?;
                let Some(f) = source.take() else { return Ok(()) };
                // Read one part straight into its own buffer (it is uploaded from there).
                let (f, part) = tokio::task::spawn_blocking(move || {
                    use std::io::Read;
                    let mut f = f;
                    let mut part = vec![0u8; part_size];
                    let mut filled = 0;
                    while filled < part.len() {
                        match f.read(&mut part[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return (f, Err(e)),
                        }
                    }
                    part.truncate(filled);
                    (f, Ok(part))
                })
                .await
                .map_err(|e| BlobError::Io {
                    path: local.to_path_buf(),
                    source: io::Error::other(e.to_string()),
                })?;
                let part = part.map_err(io_at(local))?;
                if part.is_empty() {
                    return Ok(());
                }
                progress(part.len() as u64);
                writer.put(Bytes::from(part));
                source = Some(f);
            }
        }
        .await;
        match result {
            Ok(()) => {
                writer.finish().await.map_err(|e| store_error(uri, e))?;
                Ok(size)
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// The whole of a small object.
    pub async fn get_bytes(&self, uri: &str) -> Result<Bytes, BlobError> {
        match BlobUri::parse(uri)? {
            BlobUri::S3 { bucket, key } if !addressable(&key) => {
                self.raw(&bucket, uri)?.get_bytes(&bucket, &key, uri).await
            }
            BlobUri::S3 { bucket, key } => {
                let (client, path) = self.s3(uri, &bucket, &key)?;
                let got = client.get(&path).await.map_err(|e| store_error(uri, e))?;
                got.bytes().await.map_err(|e| store_error(uri, e))
            }
            BlobUri::File(p) => match tokio::fs::read(&p).await {
                Ok(v) => Ok(Bytes::from(v)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound { uri: uri.to_string() }),
                Err(e) => Err(BlobError::Io { path: p, source: e }),
            },
        }
    }

    /// Writes a small object.
    pub async fn put_bytes(&self, uri: &str, data: Bytes) -> Result<(), BlobError> {
        match BlobUri::parse(uri)? {
            BlobUri::S3 { bucket, key } if !addressable(&key) => {
                self.raw(&bucket, uri)?.put_bytes(&bucket, &key, data, uri).await
            }
            BlobUri::S3 { bucket, key } => {
                let (client, path) = self.s3(uri, &bucket, &key)?;
                client
                    .put(&path, PutPayload::from(data))
                    .await
                    .map_err(|e| store_error(uri, e))?;
                Ok(())
            }
            BlobUri::File(p) => {
                if let Some(parent) = p.parent().filter(|x| !x.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent).await.map_err(io_at(parent))?;
                }
                let partial = partial_path(&p);
                tokio::fs::write(&partial, &data).await.map_err(io_at(&partial))?;
                tokio::fs::rename(&partial, &p).await.map_err(io_at(&p))
            }
        }
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, uri: &str) -> Result<(), BlobError> {
        match BlobUri::parse(uri)? {
            BlobUri::S3 { bucket, key } => {
                let (client, path) = self.s3(uri, &bucket, &key)?;
                match client.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(store_error(uri, e)),
                }
            }
            BlobUri::File(p) => match tokio::fs::remove_file(&p).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(BlobError::Io { path: p, source: e }),
            },
        }
    }
}

/// The file parallel ranges are written into. Writes take turns: concurrent buffered writes to
/// one file contend on its inode lock and burn CPU spinning.
struct WriteTarget {
    file: std::fs::File,
    lock: std::sync::Mutex<()>,
}

/// Fetches one range into its place in `file`. The body's chunks are gathered, uncopied, into
/// blocks that a blocking thread writes at their offset with one `pwritev` while the next block
/// arrives.
async fn fetch_range(
    client: &AmazonS3,
    path: &StorePath,
    range: Range<u64>,
    if_match: Option<String>,
    file: &Arc<WriteTarget>,
    uri: &str,
    dest: &Path,
) -> Result<(), BlobError> {
    const BLOCK: usize = 4 << 20;
    let options = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        if_match,
        ..Default::default()
    };
    let mut stream = client
        .get_opts(path, options)
        .await
        .map_err(|e| store_error(uri, e))?
        .into_stream();
    let joined = |r: Result<io::Result<()>, tokio::task::JoinError>| {
        r.map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(io_at(dest))
    };
    let mut offset = range.start;
    let mut block: Vec<Bytes> = Vec::new();
    let mut block_len = 0;
    let mut writing: Option<tokio::task::JoinHandle<io::Result<()>>> = None;
    loop {
        let next = stream.next().await;
        let done = next.is_none();
        if let Some(chunk) = next {
            let chunk = chunk.map_err(|e| store_error(uri, e))?;
            if !chunk.is_empty() {
                block_len += chunk.len();
                block.push(chunk);
            }
        }
        if block_len >= BLOCK || block.len() >= MAX_SLICES || (done && block_len > 0) {
            if let Some(h) = writing.take() {
                joined(h.await)?;
            }
            let data = std::mem::take(&mut block);
            let (file, at, len) = (file.clone(), offset, block_len as u64);
            offset += len;
            block_len = 0;
            writing = Some(tokio::task::spawn_blocking(move || {
                let _turn = file.lock.lock().map_err(|_| io::Error::other("a writer panicked"))?;
                write_all_at_vectored(&file.file, &data, at)?;
                start_writeback(&file.file, at, len);
                Ok(())
            }));
        }
        if done {
            break;
        }
    }
    if let Some(h) = writing {
        joined(h.await)?;
    }
    if offset != range.end {
        return Err(BlobError::Changed { uri: uri.to_string() });
    }
    Ok(())
}

/// The most slices one `pwritev` takes here (Linux allows 1024).
const MAX_SLICES: usize = 512;

/// Writes `chunks` one after another into `file` from offset `at`.
fn write_all_at_vectored(file: &std::fs::File, chunks: &[Bytes], mut at: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = match write_vectored_at(file, rest, at) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "the disk accepted no bytes"));
        }
        at += n as u64;
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// One `pwritev`: as many of `slices` as the kernel takes, from offset `at`.
#[cfg(target_os = "linux")]
fn write_vectored_at(file: &std::fs::File, slices: &[io::IoSlice<'_>], at: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = i64::try_from(at).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let count = slices.len().min(MAX_SLICES) as libc::c_int;
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix, and the first `count`
    // slices borrow buffers that stay alive for the call; the descriptor stays open while `file`
    // is borrowed. The kernel only reads from the buffers.
    let n = unsafe { libc::pwritev(file.as_raw_fd(), slices.as_ptr().cast(), count, offset) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Elsewhere than on Linux: the first non-empty slice, with a positioned write.
#[cfg(not(target_os = "linux"))]
fn write_vectored_at(file: &std::fs::File, slices: &[io::IoSlice<'_>], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    match slices.iter().find(|s| !s.is_empty()) {
        Some(s) => file.write_at(s, at),
        None => Ok(0),
    }
}

/// Starts writing `len` bytes of `file` from `offset` to the disk without waiting for them, so
/// the disk writes while the rest of the object arrives rather than all at the final fsync (which
/// alone makes the file durable). Elsewhere than on Linux this does nothing.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range takes integers only, and the descriptor stays open while `file`
        // is borrowed. A failure only leaves the work to the fsync, so its result is ignored.
        let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

async fn sync_file(target: Arc<WriteTarget>, path: &Path) -> Result<(), BlobError> {
    tokio::task::spawn_blocking(move || target.file.sync_all())
        .await
        .map_err(|e| BlobError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })?
        .map_err(io_at(path))
}

async fn copy_local(src: &Path, dest: &Path) -> Result<u64, BlobError> {
    let size = tokio::fs::copy(src, dest).await.map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            BlobError::NotFound {
                uri: format!("file://{}", src.display()),
            }
        } else {
            BlobError::Io {
                path: src.to_path_buf(),
                source: e,
            }
        }
    })?;
    let f = tokio::fs::File::open(dest).await.map_err(io_at(dest))?;
    f.sync_all().await.map_err(io_at(dest))?;
    Ok(size)
}

/// Local files whose path starts with `prefix` (a string prefix, like S3's).
fn list_local(prefix: &str) -> Result<Vec<ObjectInfo>, BlobError> {
    let dir = match prefix.rfind('/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => PathBuf::from(&prefix[..i]),
        None => PathBuf::from("."),
    };
    let mut found = Vec::new();
    if !dir.is_dir() {
        return Ok(found);
    }
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_at(&d))? {
            let entry = entry.map_err(io_at(&d))?;
            let path = entry.path();
            let text = path.to_string_lossy().into_owned();
            let kind = entry.file_type().map_err(io_at(&path))?;
            if kind.is_dir() {
                // Descend only where matches can be: inside the prefix, or on the way to it.
                if text.starts_with(prefix) || prefix.starts_with(&format!("{text}/")) {
                    stack.push(path);
                }
            } else if text.starts_with(prefix) && !entry.file_name().to_string_lossy().ends_with(".partial") {
                let size = entry.metadata().map_err(io_at(&path))?.len();
                found.push(ObjectInfo {
                    uri: format!("file://{text}"),
                    key: text,
                    size,
                });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> S3Endpoint {
        S3Endpoint {
            endpoint_url: url.into(),
            region: "us-east-1".into(),
            access_key_id: "AKIA".into(),
            secret_access_key: "secret".into(),
            path_style: true,
        }
    }

    #[test]
    fn buckets_route_exact_then_wildcard_then_embedded() {
        let blobs = Blobs::new(BlobConfig {
            embedded: endpoint("http://kiln"),
            external: vec![
                ("*".into(), endpoint("http://any")),
                ("data".into(), endpoint("http://data")),
            ],
        });
        assert_eq!(blobs.endpoint_for("data").endpoint_url, "http://data");
        assert_eq!(blobs.endpoint_for("other").endpoint_url, "http://any");
        let blobs = Blobs::new(BlobConfig {
            embedded: endpoint("http://kiln"),
            external: vec![("data".into(), endpoint("http://data"))],
        });
        assert_eq!(blobs.endpoint_for("other").endpoint_url, "http://kiln");
    }

    #[test]
    fn gathered_chunks_land_at_their_offset_in_order() {
        // More chunks than one pwritev takes, of uneven sizes (some empty), after a prefix that
        // must stay untouched.
        let chunks: Vec<Bytes> = (0..1500u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i as usize * 7) % 300]))
            .collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(100 + expected.len() as u64).expect("size");
        write_all_at_vectored(&file, &chunks, 100).expect("write");
        let got = std::fs::read(&path).expect("read");
        assert!(got[..100].iter().all(|&b| b == 0));
        assert_eq!(got[100..], expected[..]);
    }

    #[tokio::test]
    async fn local_files_list_by_string_prefix_and_round_trip() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().to_string_lossy().into_owned();
        let blobs = Blobs::new(BlobConfig {
            embedded: endpoint("http://kiln"),
            external: vec![],
        });
        blobs
            .put_bytes(&format!("file://{root}/train/a.csv"), Bytes::from_static(b"1,2"))
            .await
            .expect("put");
        blobs
            .put_bytes(&format!("file://{root}/train/sub/b.csv"), Bytes::from_static(b"3"))
            .await
            .expect("put");
        blobs
            .put_bytes(&format!("file://{root}/training.csv"), Bytes::from_static(b"4"))
            .await
            .expect("put");
        let keys = |v: Vec<ObjectInfo>| v.into_iter().map(|o| o.key.replace(&root, "")).collect::<Vec<_>>();
        assert_eq!(
            keys(blobs.list(&format!("file://{root}/train")).await.expect("list")),
            ["/train/a.csv", "/train/sub/b.csv", "/training.csv"]
        );
        assert_eq!(
            keys(blobs.list(&format!("file://{root}/train/")).await.expect("list")),
            ["/train/a.csv", "/train/sub/b.csv"]
        );
        assert!(
            blobs
                .list(&format!("file://{root}/none/"))
                .await
                .expect("list")
                .is_empty()
        );
        let out = dir.path().join("out/copy.csv");
        assert_eq!(
            blobs
                .download(&format!("file://{root}/train/a.csv"), &out)
                .await
                .expect("download"),
            3
        );
        assert_eq!(std::fs::read(&out).expect("read"), b"1,2");
        let staged = blobs
            .download_prefix(&format!("file://{root}/train/"), &dir.path().join("staged"))
            .await
            .expect("download prefix");
        assert_eq!(staged.len(), 2);
        assert!(dir.path().join("staged/sub/b.csv").is_file());
        let missing = blobs
            .download_prefix(&format!("file://{root}/nothing/"), dir.path())
            .await;
        assert_eq!(
            missing.expect_err("empty").to_string(),
            format!("no objects under file://{root}/nothing/")
        );
        blobs
            .delete(&format!("file://{root}/train/a.csv"))
            .await
            .expect("delete");
        blobs
            .delete(&format!("file://{root}/train/a.csv"))
            .await
            .expect("delete again");
        assert!(matches!(
            blobs.get_bytes(&format!("file://{root}/train/a.csv")).await,
            Err(BlobError::NotFound { .. })
        ));
    }
}
