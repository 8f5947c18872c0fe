//! Blob files: the bytes of objects and parts, named by random ids, never by keys.
//!
//! A blob is written to `tmp/<id>`, fsync'd, renamed to `blobs/<id[..2]>/<id>` and its directory
//! fsync'd; only then does the index refer to it. Blobs are immutable once published. A blob the
//! index no longer refers to is retired: deleted after a grace period and once no reader holds it,
//! so a GET that looked an object up just before it was replaced still reads the old bytes.
//!
//! Several processes may share the directory (`kiln serve` replicas on one PostgreSQL index). Pins
//! are per process, so a read opens every file it needs before it streams the first byte: a blob
//! that another process unlinks after the grace period stays readable through the open file. And a
//! file that nothing refers to may be another process's upload between publishing and indexing,
//! so clean-ups only remove such files once they are [`LEFTOVER_AGE`] old.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::Error;
use crate::index::Segment;
use crate::md5::Md5Stream;

/// How long a retired blob stays on disk at least, while the disk has room.
const GRACE: Duration = Duration::from_secs(30);
/// Free space below which retired blobs are deleted at once (no grace period): a full disk must
/// be freed by `DeleteObject` now, not in 30 s. The larger of this and 1% of the disk.
const LOW_SPACE: u64 = 256 << 20;
/// How old an unreferenced blob or temporary file must be before a clean-up removes it: younger,
/// it may belong to an upload in flight in another process.
pub(crate) const LEFTOVER_AGE: Duration = Duration::from_secs(3600);
/// The size of the chunks reads are streamed in.
const READ_CHUNK: usize = 1 << 20;
/// How many received bytes are written to a blob file at once.
const WRITE_BATCH: usize = 1 << 20;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A blob that has been written and published.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub id: String,
    pub size: u64,
    pub md5: [u8; 16],
}

enum Msg {
    Data(Bytes),
    Done,
}

#[derive(Default)]
struct Retirement {
    pins: HashMap<String, usize>,
    retired: Vec<(String, Instant)>,
    /// Every blob ever retired, in order (tests check that each is retired once).
    #[cfg(test)]
    log: Vec<String>,
}

/// The blob directory.
pub(crate) struct Blobs {
    blobs: PathBuf,
    tmp: PathBuf,
    retirement: Mutex<Retirement>,
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// When a file or its name last changed: the inode change time, which writing, renaming and hard
/// linking all update. The modification time would not do: a duplicated blob is a new link to an
/// old inode, and keeps its source's.
fn changed_at(meta: &std::fs::Metadata) -> SystemTime {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let secs = u64::try_from(meta.ctime()).unwrap_or(0);
        let nanos = u32::try_from(meta.ctime_nsec()).unwrap_or(0).min(999_999_999);
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }
    #[cfg(not(unix))]
    {
        meta.modified().unwrap_or_else(|_| SystemTime::now())
    }
}

/// Whether the file at `path` has not changed for `age` (always, for an age of zero).
fn unchanged_for(path: &Path, age: Duration) -> bool {
    if age.is_zero() {
        return true;
    }
    std::fs::symlink_metadata(path).is_ok_and(|meta| {
        SystemTime::now()
            .duration_since(changed_at(&meta))
            .is_ok_and(|d| d >= age)
    })
}

impl Blobs {
    /// Opens the directory, creating its layout, and removes the temporary files a crash left
    /// behind that have not changed for `leftover_age` (zero when this process is the directory's
    /// only user; [`LEFTOVER_AGE`] when replicas share it: younger files may be uploads in flight
    /// in another process).
    pub fn open(root: &Path, leftover_age: Duration) -> Result<Self, Error> {
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(io_err(format!("cannot create {}", tmp.display())))?;
        for b in 0..=255u8 {
            let d = blobs.join(format!("{b:02x}"));
            std::fs::create_dir_all(&d).map_err(io_err(format!("cannot create {}", d.display())))?;
        }
        let entries = std::fs::read_dir(&tmp).map_err(io_err(format!("cannot read {}", tmp.display())))?;
        for entry in entries.flatten() {
            if unchanged_for(&entry.path(), leftover_age) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        fsync_dir(root).map_err(io_err(format!("cannot sync {}", root.display())))?;
        fsync_dir(&blobs).map_err(io_err(format!("cannot sync {}", blobs.display())))?;
        Ok(Self {
            blobs,
            tmp,
            retirement: Mutex::default(),
        })
    }

    fn dir_of(&self, id: &str) -> PathBuf {
        self.blobs.join(id.get(..2).unwrap_or("00"))
    }

    /// The file of a blob.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir_of(id).join(id)
    }

    /// Deletes every blob file not in `keep` that has not changed for `min_age` (files a crash left
    /// between publishing and indexing). `keep` must have been read before the directory is: a blob
    /// indexed since is younger than `min_age`.
    pub fn remove_unreferenced(&self, keep: &HashSet<String>, min_age: Duration) -> Result<usize, Error> {
        let mut removed = 0;
        for b in 0..=255u8 {
            let dir = self.blobs.join(format!("{b:02x}"));
            let entries = std::fs::read_dir(&dir).map_err(io_err(format!("cannot read {}", dir.display())))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !keep.contains(name.to_string_lossy().as_ref())
                    && unchanged_for(&entry.path(), min_age)
                    && std::fs::remove_file(entry.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Streams `body` into a new blob and publishes it. Nothing is published if the body fails.
    pub async fn write<S, E>(&self, mut body: S) -> Result<Written, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<s3s::StdError>,
    {
        let id = new_id();
        let tmp = self.tmp.join(&id);
        let (tx, rx) = mpsc::channel::<Msg>(16);
        let writer = {
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || write_file(&tmp, rx))
        };
        let mut body_error = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(Msg::Data(chunk)).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_error = Some(e.into());
                    break;
                }
            }
        }
        if body_error.is_none() {
            let _ = tx.send(Msg::Done).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::Io {
                context: "the blob writer stopped".into(),
                source: io::Error::other(e.to_string()),
            })
            .and_then(|r| r.map_err(io_err(format!("cannot write {}", tmp.display()))));
        let written = match (body_error, written) {
            (None, Ok(Some((size, md5)))) => Written { id, size, md5 },
            (Some(e), _) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Body(e));
            }
            (None, Ok(None)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Body("the request body ended early".into()));
            }
            (None, Err(e)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dir = self.dir_of(&written.id);
        let dst = dir.join(&written.id);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::rename(&tmp, &dst)?;
            fsync_dir(&dir)
        })
        .await
        .map_err(|e| Error::Io {
            context: "the blob publisher stopped".into(),
            source: io::Error::other(e.to_string()),
        })?
        .map_err(io_err("cannot publish a blob"))?;
        Ok(written)
    }

    /// A new blob with the same bytes as `id` (a hard link, or a copy where links are refused).
    pub async fn duplicate(&self, id: &str) -> Result<String, Error> {
        let new = new_id();
        let src = self.path(id);
        let dir = self.dir_of(&new);
        let dst = dir.join(&new);
        let tmp = self.tmp.join(&new);
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &tmp)?;
                File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &dst)?;
            }
            fsync_dir(&dir)
        })
        .await
        .map_err(|e| Error::Io {
            context: "the blob copier stopped".into(),
            source: io::Error::other(e.to_string()),
        })?
        .map_err(io_err(format!("cannot copy blob {id}")))?;
        Ok(new)
    }

    /// Removes a blob now (one that was never indexed).
    pub fn remove_now(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Marks blobs the index no longer refers to for deletion.
    pub fn retire(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        if let Ok(mut r) = self.retirement.lock() {
            let now = Instant::now();
            #[cfg(test)]
            r.log.extend(ids.iter().cloned());
            r.retired.extend(ids.into_iter().map(|id| (id, now)));
        }
        self.sweep();
    }

    /// Whether the disk of the blob directory is nearly full.
    fn disk_low(&self) -> bool {
        match nix::sys::statvfs::statvfs(&self.blobs) {
            Ok(s) => {
                let unit = s.fragment_size().max(1);
                let free = s.blocks_available() * unit;
                let total = s.blocks() * unit;
                free < LOW_SPACE.max(total / 100)
            }
            Err(_) => false,
        }
    }

    /// Deletes retired blobs whose grace period is over (or at once while the disk is nearly
    /// full) and that no reader in this process holds.
    pub fn sweep(&self) {
        let grace = if self.disk_low() { Duration::ZERO } else { GRACE };
        let due: Vec<String> = match self.retirement.lock() {
            Ok(mut r) => {
                let now = Instant::now();
                let Retirement { pins, retired, .. } = &mut *r;
                let mut due = Vec::new();
                retired.retain(|(id, at)| {
                    if now.duration_since(*at) >= grace && !pins.contains_key(id) {
                        due.push(id.clone());
                        false
                    } else {
                        true
                    }
                });
                due
            }
            Err(_) => return,
        };
        for id in due {
            self.remove_now(&id);
        }
    }

    /// Holds blobs against deletion until the returned guard is dropped.
    pub fn pin(self: &Arc<Self>, ids: &[String]) -> BlobPin {
        if let Ok(mut r) = self.retirement.lock() {
            for id in ids {
                *r.pins.entry(id.clone()).or_default() += 1;
            }
        }
        BlobPin {
            blobs: self.clone(),
            ids: ids.to_vec(),
        }
    }

    /// Every blob this process retired, in order (tests).
    #[cfg(test)]
    pub fn retired_log(&self) -> Vec<String> {
        self.retirement.lock().map(|r| r.log.clone()).unwrap_or_default()
    }

    /// Streams `range` (byte offsets within the concatenated segments) of an object. The files are
    /// opened before the first byte is sent, so the read completes even if another process
    /// deletes them meanwhile.
    pub fn read(self: &Arc<Self>, segments: &[Segment], range: std::ops::Range<u64>) -> BlobStream {
        let ids: Vec<String> = segments.iter().map(|Segment(id, _)| id.clone()).collect();
        let pin = self.pin(&ids);
        let mut pieces = Vec::new();
        let mut offset = 0u64;
        for Segment(id, size) in segments {
            let (start, end) = (offset, offset + size);
            offset = end;
            if end <= range.start || start >= range.end {
                continue;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            pieces.push((self.path(id), from, to - from));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let _pin = pin;
            read_pieces(pieces, &tx);
        });
        BlobStream { rx }
    }
}

/// Keeps blobs from being deleted while it lives.
pub(crate) struct BlobPin {
    blobs: Arc<Blobs>,
    ids: Vec<String>,
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        if let Ok(mut r) = self.blobs.retirement.lock() {
            for id in &self.ids {
                if let Some(n) = r.pins.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        r.pins.remove(id);
                    }
                }
            }
        }
    }
}

fn write_file(path: &Path, mut rx: mpsc::Receiver<Msg>) -> io::Result<Option<(u64, [u8; 16])>> {
    let mut file = File::create_new(path)?;
    let mut md5 = Md5Stream::new();
    let mut size = 0u64;
    // Chunks are written in batches with writev: few syscalls, and no copy into a buffer.
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0;
    // Bytes written and not yet handed to the disk.
    let mut unflushed = 0;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunk) => {
                md5.update(&chunk);
                size += chunk.len() as u64;
                pending_len += chunk.len();
                pending.push(chunk);
                if pending_len >= WRITE_BATCH || pending.len() >= MAX_SLICES {
                    write_all_vectored(&mut file, &mut pending)?;
                    unflushed += pending_len as u64;
                    pending_len = 0;
                    if unflushed >= WRITEBACK_STEP {
                        start_writeback(&file, size - unflushed, unflushed);
                        unflushed = 0;
                    }
                }
            }
            Msg::Done => {
                write_all_vectored(&mut file, &mut pending)?;
                // The size is all the metadata a read needs, and fdatasync makes it durable too.
                file.sync_data()?;
                return Ok(Some((size, md5.finalize())));
            }
        }
    }
    Ok(None)
}

/// How many written bytes are handed to the disk at a time while a blob is written.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts writing `len` bytes of `file` from `offset` to the disk, without waiting for them. The
/// kernel would otherwise hold them until the fsync at the end of the blob, which then waits for
/// all of them: started early, the disk writes while the rest of the body arrives. Durability
/// still comes from that fsync only. Elsewhere than on Linux this does nothing.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range takes integers only, and the descriptor stays open while `file`
        // is borrowed. A failure (an old kernel, a file system without it) only leaves the work to
        // the fsync, so its result is ignored.
        let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// The most slices one `writev` takes here (Linux allows 1024).
const MAX_SLICES: usize = 512;

fn write_all_vectored(file: &mut File, chunks: &mut Vec<Bytes>) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = chunks.iter().map(|c| io::IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = file.write_vectored(rest)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "the disk accepted no bytes"));
        }
        io::IoSlice::advance_slices(&mut rest, n);
    }
    drop(slices);
    chunks.clear();
    Ok(())
}

fn read_pieces(pieces: Vec<(PathBuf, u64, u64)>, tx: &mpsc::Sender<io::Result<Bytes>>) {
    let mut files = Vec::with_capacity(pieces.len());
    for (path, from, len) in pieces {
        match File::open(&path) {
            Ok(file) => files.push((file, path, from, len)),
            Err(e) => {
                tracing::error!(target: "kiln::s3", "cannot open blob {}: {e}", path.display());
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
    for (file, path, from, len) in files {
        let result = (|| -> io::Result<()> {
            let mut file = file.take(0);
            file.get_mut().seek(SeekFrom::Start(from))?;
            let mut left = len;
            while left > 0 {
                let n = left.min(READ_CHUNK as u64) as usize;
                // Read into fresh capacity: `read_to_end` does not zero it first.
                let mut buf = Vec::with_capacity(n);
                file.set_limit(n as u64);
                file.read_to_end(&mut buf)?;
                if buf.len() != n {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob is shorter than indexed",
                    ));
                }
                left -= n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"));
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!(target: "kiln::s3", "cannot read blob {}: {e}", path.display());
                let _ = tx.blocking_send(Err(e));
            }
            return;
        }
    }
}

/// The bytes of an object, read by a blocking thread ahead of the consumer.
pub struct BlobStream {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Stream for BlobStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::crypto::{Checksum as _, Md5};

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, io::Error>> + Unpin {
        futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
    }

    async fn collect(s: BlobStream) -> Vec<u8> {
        let parts: Vec<io::Result<Bytes>> = s.collect().await;
        parts.into_iter().flat_map(|p| p.expect("read").to_vec()).collect()
    }

    #[tokio::test]
    async fn written_blobs_read_back_by_range_across_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = Arc::new(Blobs::open(dir.path(), LEFTOVER_AGE).expect("open"));
        let a = blobs.write(chunks(&[b"hello ", b"wor"])).await.expect("write a");
        let b = blobs.write(chunks(&[b"ld!"])).await.expect("write b");
        assert_eq!(a.size, 9);
        assert_eq!(b.md5, Md5::checksum(b"ld!"));
        let segments = vec![Segment(a.id.clone(), a.size), Segment(b.id.clone(), b.size)];
        assert_eq!(collect(blobs.read(&segments, 0..12)).await, b"hello world!");
        assert_eq!(collect(blobs.read(&segments, 4..10)).await, b"o worl");
        assert_eq!(collect(blobs.read(&segments, 9..12)).await, b"ld!");
        assert!(collect(blobs.read(&segments, 12..12)).await.is_empty());
        assert!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").next().is_none());
    }

    #[tokio::test]
    async fn a_failed_body_publishes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = Blobs::open(dir.path(), LEFTOVER_AGE).expect("open");
        let body = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(io::Error::other("connection reset")),
        ]);
        assert!(matches!(blobs.write(body).await, Err(Error::Body(_))));
        let removed = blobs
            .remove_unreferenced(&HashSet::new(), Duration::ZERO)
            .expect("scan");
        assert_eq!(removed, 0, "nothing was published");
        assert!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").next().is_none());
    }

    #[tokio::test]
    async fn a_read_in_progress_survives_its_files_being_deleted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = Arc::new(Blobs::open(dir.path(), LEFTOVER_AGE).expect("open"));
        // More chunks than the stream buffers: the reader is still in the first file when the
        // files go.
        let first = vec![b'1'; 8 * READ_CHUNK];
        let a = blobs
            .write(futures::stream::iter([Ok::<_, io::Error>(Bytes::from(first.clone()))]))
            .await
            .expect("write a");
        let b = blobs.write(chunks(&[b"second"])).await.expect("write b");
        let segments = vec![Segment(a.id.clone(), a.size), Segment(b.id.clone(), b.size)];
        let mut stream = blobs.read(&segments, 0..a.size + b.size);
        let head = stream.next().await.expect("a chunk").expect("read");
        // What another process does once the grace period is over: it cannot see this one's pins.
        std::fs::remove_file(blobs.path(&a.id)).expect("unlink a");
        std::fs::remove_file(blobs.path(&b.id)).expect("unlink b");
        let mut all = head.to_vec();
        all.extend(collect(stream).await);
        assert_eq!(all.len(), first.len() + 6);
        assert!(all.ends_with(b"1second"));
    }

    #[tokio::test]
    async fn clean_ups_leave_young_files_to_the_process_that_wrote_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = Blobs::open(dir.path(), LEFTOVER_AGE).expect("open");
        let w = blobs.write(chunks(&[b"old bytes"])).await.expect("write");
        // An old blob, duplicated just now for a copy that is not indexed yet: the new link has
        // the old modification time, but it changed just now.
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(blobs.path(&w.id))
            .and_then(|f| f.set_modified(two_hours_ago))
            .expect("age the blob");
        let copy = blobs.duplicate(&w.id).await.expect("duplicate");
        let in_flight = dir.path().join("tmp").join(new_id());
        std::fs::write(&in_flight, b"partial upload").expect("tmp file");

        assert_eq!(
            blobs.remove_unreferenced(&HashSet::new(), LEFTOVER_AGE).expect("scan"),
            0
        );
        assert!(blobs.path(&copy).exists() && blobs.path(&w.id).exists());
        drop(Blobs::open(dir.path(), LEFTOVER_AGE).expect("reopen"));
        assert!(in_flight.exists(), "another process's upload in progress must survive");

        assert_eq!(
            blobs
                .remove_unreferenced(&HashSet::new(), Duration::ZERO)
                .expect("scan"),
            2
        );
    }

    #[tokio::test]
    async fn retired_blobs_wait_for_readers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = Arc::new(Blobs::open(dir.path(), LEFTOVER_AGE).expect("open"));
        let w = blobs.write(chunks(&[b"x"])).await.expect("write");
        let pin = blobs.pin(std::slice::from_ref(&w.id));
        if let Ok(mut r) = blobs.retirement.lock() {
            r.retired.push((w.id.clone(), Instant::now() - GRACE));
        }
        blobs.sweep();
        assert!(blobs.path(&w.id).exists(), "a pinned blob must survive");
        drop(pin);
        blobs.sweep();
        assert!(!blobs.path(&w.id).exists(), "an unpinned retired blob goes");
    }
}
