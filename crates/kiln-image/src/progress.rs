//! Pull progress, reported to a callback so that a job's log can show the pull as it happens.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;

/// One step of a pull. `Display` gives a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The reference resolved to this image manifest, which is not in the cache yet.
    Resolved {
        manifest: Digest,
        layers: usize,
        bytes: u64,
    },
    /// Bytes of layer `index` (1-based, of `count`) downloaded so far: reported when its download
    /// starts, at most once per MiB, and at the end, once verified. A layer already in the cache is
    /// reported once, with `cached` and `done == total`.
    Layer {
        index: usize,
        count: usize,
        digest: Digest,
        done: u64,
        total: u64,
        cached: bool,
    },
    /// Layer `index` is being applied to the rootfs.
    Unpacking { index: usize, count: usize, digest: Digest },
    /// The image is ready; `from_cache` when nothing had to be downloaded or unpacked.
    Ready {
        manifest: Digest,
        rootfs: PathBuf,
        from_cache: bool,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Resolved {
                manifest,
                layers,
                bytes,
            } => {
                write!(f, "pulling image {manifest}: {layers} layers, {}", Size(*bytes))
            }
            Progress::Layer {
                index,
                count,
                digest,
                cached: true,
                ..
            } => {
                write!(f, "layer {index}/{count} {}: already downloaded", digest.short())
            }
            Progress::Layer {
                index,
                count,
                digest,
                done,
                total,
                ..
            } => {
                write!(
                    f,
                    "layer {index}/{count} {}: {} of {}",
                    digest.short(),
                    Size(*done),
                    Size(*total)
                )
            }
            Progress::Unpacking { index, count, digest } => {
                write!(f, "unpacking layer {index}/{count} {}", digest.short())
            }
            Progress::Ready {
                manifest,
                from_cache: true,
                ..
            } => write!(f, "image {manifest} found in the cache"),
            Progress::Ready { manifest, .. } => write!(f, "image {manifest} pulled and unpacked"),
        }
    }
}

/// Bytes as `docker pull` shows them (decimal units).
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
        if self.0 < 1000 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1000.0;
        let mut unit = 0;
        while value >= 1000.0 && unit + 1 < UNITS.len() {
            value /= 1000.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines() {
        let digest = Digest::of(b"layer");
        let short = digest.short().to_owned();
        let line = Progress::Layer {
            index: 1,
            count: 2,
            digest: digest.clone(),
            done: 1_500_000,
            total: 2_000_000,
            cached: false,
        };
        assert_eq!(line.to_string(), format!("layer 1/2 {short}: 1.5 MB of 2.0 MB"));
        let cached = Progress::Layer {
            index: 2,
            count: 2,
            digest: digest.clone(),
            done: 5,
            total: 5,
            cached: true,
        };
        assert_eq!(cached.to_string(), format!("layer 2/2 {short}: already downloaded"));
        let resolved = Progress::Resolved {
            manifest: digest.clone(),
            layers: 2,
            bytes: 999,
        };
        assert_eq!(resolved.to_string(), format!("pulling image {digest}: 2 layers, 999 B"));
        assert_eq!(Size(3_200_000_000).to_string(), "3.2 GB");
    }
}
