//! Pipe input mode, emulated with FIFOs (reference §7): the channel's objects are downloaded
//! outside the tree first; while the algorithm runs, `input/data/<channel>_0` streams their
//! concatenation, and once the reader has read to the end (or closed early) `<channel>_1` appears,
//! and so on, one epoch per FIFO. `Gzip` objects are decompressed and `RecordIO` wraps each object
//! as one record, as SageMaker does.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::Mode;

/// RecordIO's record marker (`u32` little endian).
const RECORDIO_MAGIC: u32 = 0xCED7_230A;
/// RecordIO lengths carry flags in their top 3 bits.
const RECORDIO_MAX_LEN: usize = (1 << 29) - 1;

/// One Pipe channel, staged.
#[derive(Debug, Clone)]
pub struct PipeChannel {
    pub name: String,
    /// Where the FIFOs go (`input/data`).
    pub fifo_dir: PathBuf,
    /// The channel's objects, downloaded, in order.
    pub files: Vec<PathBuf>,
    /// `CompressionType` `Gzip`: decompress while streaming.
    pub gzip: bool,
    /// `RecordWrapperType` `RecordIO`: one record per object.
    pub recordio: bool,
    /// `ShuffleConfig.Seed`: reshuffle the objects every epoch.
    pub shuffle_seed: Option<i64>,
}

impl PipeChannel {
    fn fifo(&self, epoch: u64) -> PathBuf {
        self.fifo_dir.join(format!("{}_{epoch}", self.name))
    }
}

/// The running feeders of a host's Pipe channels.
pub struct Feeders {
    cancel: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn mkfifo(path: &Path) -> Result<(), String> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o644))
        .map_err(|e| format!("cannot create the FIFO {}: {e}", path.display()))
}

/// Creates each channel's `<channel>_0` and starts feeding it.
pub fn start(channels: Vec<PipeChannel>) -> Result<Feeders, String> {
    let cancel = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for ch in channels {
        mkfifo(&ch.fifo(0))?;
        let cancel = cancel.clone();
        let t = std::thread::Builder::new()
            .name(format!("pipe-{}", ch.name))
            .spawn(move || feed(&ch, &cancel))
            .map_err(|e| format!("cannot start the feeder thread: {e}"))?;
        threads.push(t);
    }
    Ok(Feeders { cancel, threads })
}

impl Feeders {
    /// Stops feeding (the algorithm has ended) and removes the FIFOs.
    pub async fn stop(self) {
        self.cancel.store(true, Ordering::SeqCst);
        let _ = tokio::task::spawn_blocking(move || {
            for t in self.threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Opens a FIFO for writing once a reader has it open; `None` if cancelled first.
fn open_writer(path: &Path, cancel: &AtomicBool) -> Result<Option<File>, String> {
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Ok(None);
        }
        // Non-blocking, so the wait for a reader can be cancelled: ENXIO means "no reader yet".
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_NONBLOCK.bits())
            .open(path)
        {
            Ok(f) => {
                fcntl(&f, FcntlArg::F_SETFL(OFlag::empty()))
                    .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
                return Ok(Some(f));
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
        }
    }
}

/// Writes one object to the FIFO. `Ok(false)` when the reader went away.
fn write_object(ch: &PipeChannel, file: &Path, out: &mut File, cancel: &AtomicBool) -> Result<bool, String> {
    let src = File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let mut reader: Box<dyn Read> = if ch.gzip {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(src)))
    } else {
        Box::new(std::io::BufReader::new(src))
    };
    let gone = |e: &std::io::Error| e.kind() == ErrorKind::BrokenPipe;
    if ch.recordio {
        let mut payload = Vec::new();
        reader
            .read_to_end(&mut payload)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        if payload.len() > RECORDIO_MAX_LEN {
            return Err(format!(
                "{} is larger than a RecordIO record can be (512 MiB)",
                file.display()
            ));
        }
        let mut rec = Vec::with_capacity(payload.len() + 12);
        rec.extend_from_slice(&RECORDIO_MAGIC.to_le_bytes());
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&payload);
        rec.resize(rec.len().next_multiple_of(4), 0);
        return match out.write_all(&rec) {
            Ok(()) => Ok(true),
            Err(e) if gone(&e) => Ok(false),
            Err(e) => Err(format!("cannot write to the {} FIFO: {e}", ch.name)),
        };
    }
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        match out.write_all(&buf[..n]) {
            Ok(()) => {}
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(format!("cannot write to the {} FIFO: {e}", ch.name)),
        }
    }
}

fn feed(ch: &PipeChannel, cancel: &AtomicBool) {
    for epoch in 0u64.. {
        let path = ch.fifo(epoch);
        let mut out = match open_writer(&path, cancel) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let _ = std::fs::remove_file(&path);
                return;
            }
            Err(e) => {
                eprintln!("kiln agent: {e}");
                let _ = std::fs::remove_file(&path);
                return;
            }
        };
        let mut order = ch.files.clone();
        if let Some(seed) = ch.shuffle_seed {
            crate::staging::shuffle(&mut order, seed.wrapping_add(epoch as i64));
        }
        for f in &order {
            match write_object(ch, f, &mut out, cancel) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    eprintln!("kiln agent: channel '{}': {e}", ch.name);
                    break;
                }
            }
        }
        // The next epoch's FIFO exists before this one ends, so a reader that has just seen the
        // end of this epoch finds it.
        let next = mkfifo(&ch.fifo(epoch + 1));
        drop(out);
        let _ = std::fs::remove_file(&path);
        if let Err(e) = next {
            eprintln!("kiln agent: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_fifo(path: &Path, limit: Option<usize>) -> Vec<u8> {
        let t0 = std::time::Instant::now();
        while !path.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut f = File::open(path).unwrap();
        let mut out = Vec::new();
        match limit {
            None => {
                f.read_to_end(&mut out).unwrap();
            }
            Some(n) => {
                out.resize(n, 0);
                f.read_exact(&mut out).unwrap();
            }
        }
        out
    }

    fn channel(dir: &Path, files: &[(&str, &[u8])], gzip: bool, recordio: bool) -> PipeChannel {
        let store = dir.join("store");
        std::fs::create_dir_all(&store).unwrap();
        let fifo_dir = dir.join("data");
        std::fs::create_dir_all(&fifo_dir).unwrap();
        let paths = files
            .iter()
            .map(|(name, bytes)| {
                let p = store.join(name);
                std::fs::write(&p, bytes).unwrap();
                p
            })
            .collect();
        PipeChannel {
            name: "train".into(),
            fifo_dir,
            files: paths,
            gzip,
            recordio,
            shuffle_seed: None,
        }
    }

    #[tokio::test]
    async fn epochs_follow_one_another() {
        let tmp = tempfile::tempdir().unwrap();
        let ch = channel(tmp.path(), &[("a", b"hello "), ("b", b"world\n")], false, false);
        let data = ch.fifo_dir.clone();
        let feeders = start(vec![ch]).unwrap();
        let reader = std::thread::spawn(move || {
            let e0 = read_fifo(&data.join("train_0"), None);
            // Closing early ends an epoch too.
            let e1 = read_fifo(&data.join("train_1"), Some(3));
            let e2 = read_fifo(&data.join("train_2"), None);
            (e0, e1, e2)
        });
        let (e0, e1, e2) = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        assert_eq!(e0, b"hello world\n");
        assert_eq!(e1, b"hel");
        assert_eq!(e2, b"hello world\n");
        feeders.stop().await;
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("data")).unwrap().flatten().collect();
        assert!(left.is_empty(), "FIFOs are removed at the end: {left:?}");
    }

    #[tokio::test]
    async fn gzip_and_recordio() {
        let tmp = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"abcde").unwrap();
        let gz = gz.finish().unwrap();
        let ch = channel(tmp.path(), &[("a.gz", &gz)], true, true);
        let data = ch.fifo_dir.clone();
        let feeders = start(vec![ch]).unwrap();
        let got = tokio::task::spawn_blocking(move || read_fifo(&data.join("train_0"), None))
            .await
            .unwrap();
        let mut want = Vec::new();
        want.extend_from_slice(&RECORDIO_MAGIC.to_le_bytes());
        want.extend_from_slice(&5u32.to_le_bytes());
        want.extend_from_slice(b"abcde\0\0\0");
        assert_eq!(got, want);
        feeders.stop().await;
    }

    #[tokio::test]
    async fn stopping_without_a_reader_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let ch = channel(tmp.path(), &[("a", b"x")], false, false);
        let feeders = start(vec![ch]).unwrap();
        tokio::time::timeout(Duration::from_secs(5), feeders.stop())
            .await
            .unwrap();
        assert!(!tmp.path().join("data/train_0").exists());
    }
}
