//! The on-disk cache: blobs and unpacked images, both named by digest, both written beside their
//! final place and renamed into it, so that a reader sees a whole entry or none.
//!
//! ```text
//! <cache>/blobs/sha256/<hex>              manifests, configs and layers as downloaded, verified
//! <cache>/images/sha256/<hex>/rootfs/     the unpacked layers of image manifest <hex>
//! <cache>/images/sha256/<hex>/config.json the image's config blob
//! <cache>/images/sha256/<hex>/manifest.json
//! <cache>/tmp/<pid>.<random>              work in progress of process <pid>
//! ```
//!
//! Two processes pulling one image both build it; the first rename wins and the other discards its
//! copy, so both end with the same complete image. `tmp/` entries of processes that no longer run
//! (a crash, a kill) are removed the next time a cache is opened.

use std::fs::{self, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::digest::Digest;
use crate::error::PullError;

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

/// An image being built in `tmp/`; removed on drop unless installed.
pub(crate) struct Build {
    dir: PathBuf,
    installed: bool,
}

impl Build {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        if !self.installed
            && let Err(e) = remove_tree(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove an unfinished image build");
        }
    }
}

impl Cache {
    /// Opens (creating) the cache at `root` and removes work left behind by dead processes.
    pub fn open(root: PathBuf) -> Result<Self, PullError> {
        let cache = Self { root };
        for dir in [
            cache.root.join("blobs/sha256"),
            cache.root.join("images/sha256"),
            cache.tmp(),
        ] {
            fs::create_dir_all(&dir).map_err(PullError::cache(&dir))?;
        }
        cache.sweep();
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn image_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("images/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// A small blob (manifest, config) from the cache, if there.
    pub fn read_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, PullError> {
        let path = self.blob_path(digest);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PullError::Cache { path, source: e }),
        }
    }

    /// Stores a small blob whose digest the caller has checked.
    pub fn write_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), PullError> {
        let mut file = self.blob_file()?;
        file.write_all(bytes).map_err(PullError::cache(file.path()))?;
        self.commit_blob(file, digest)
    }

    /// A temporary file in the cache for a blob being downloaded.
    pub fn blob_file(&self) -> Result<NamedTempFile, PullError> {
        tempfile::Builder::new()
            .prefix(&self.tmp_prefix())
            .tempfile_in(self.tmp())
            .map_err(PullError::cache(self.tmp()))
    }

    /// Moves a verified blob into place, flushed first so that a blob's name never points at
    /// content that did not reach the disk.
    pub fn commit_blob(&self, file: NamedTempFile, digest: &Digest) -> Result<(), PullError> {
        file.as_file().sync_all().map_err(PullError::cache(file.path()))?;
        let path = self.blob_path(digest);
        file.persist(&path)
            .map_err(|e| PullError::Cache { path, source: e.error })?;
        Ok(())
    }

    /// A fresh build directory with an empty `rootfs/`.
    pub fn build(&self) -> Result<Build, PullError> {
        let dir = tempfile::Builder::new()
            .prefix(&self.tmp_prefix())
            .tempdir_in(self.tmp())
            .map_err(PullError::cache(self.tmp()))?
            .keep();
        let build = Build { dir, installed: false };
        let rootfs = build.rootfs();
        fs::create_dir(&rootfs).map_err(PullError::cache(&rootfs))?;
        fs::set_permissions(&rootfs, Permissions::from_mode(0o755)).map_err(PullError::cache(&rootfs))?;
        Ok(build)
    }

    /// Renames a finished build to `images/sha256/<hex>`. If another process got there first, its
    /// image is kept and this one discarded: both are the same content.
    pub fn install(&self, mut build: Build, digest: &Digest) -> Result<PathBuf, PullError> {
        let target = self.image_dir(digest);
        // tempfile makes the directory 0700; the sandbox may map another user onto it.
        fs::set_permissions(build.dir(), Permissions::from_mode(0o755)).map_err(PullError::cache(build.dir()))?;
        match fs::rename(build.dir(), &target) {
            Ok(()) => {
                build.installed = true;
                Ok(target)
            }
            // rename(2) refuses to replace a non-empty directory: someone else installed it.
            Err(_) if target.join("rootfs").is_dir() => Ok(target),
            Err(e) => Err(PullError::Cache {
                path: target,
                source: e,
            }),
        }
    }

    fn tmp_prefix(&self) -> String {
        format!("{}.", std::process::id())
    }

    /// Removes `tmp/` entries whose process is gone. Best effort: a failure only costs disk space.
    fn sweep(&self) {
        let Ok(entries) = fs::read_dir(self.tmp()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split_once('.'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
            if !alive && let Err(e) = remove_tree(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove stale work in the image cache");
            }
        }
    }
}

/// Removes a directory tree even where the image made directories read-only.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    make_writable(path);
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_writable(dir: &Path) {
    // symlink_metadata: never follow a symlink out of the tree.
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let _ = fs::set_permissions(dir, Permissions::from_mode(0o700));
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&child.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    fn cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = Cache::open(dir.path().join("cache")).unwrap_or_else(|e| panic!("{e}"));
        (dir, cache)
    }

    fn tmp_entries(cache: &Cache) -> usize {
        fs::read_dir(cache.tmp()).map(|d| d.count()).unwrap_or_default()
    }

    #[test]
    fn blobs_are_named_by_digest() -> Result<(), PullError> {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"manifest");
        assert_eq!(cache.read_blob(&digest)?, None);
        cache.write_blob(&digest, b"manifest")?;
        assert!(cache.has_blob(&digest));
        assert_eq!(cache.read_blob(&digest)?.as_deref(), Some(&b"manifest"[..]));
        assert!(
            cache
                .blob_path(&digest)
                .ends_with(format!("blobs/sha256/{}", digest.hex()))
        );
        assert_eq!(tmp_entries(&cache), 0);
        Ok(())
    }

    #[test]
    fn an_unfinished_build_is_never_an_image() -> Result<(), PullError> {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"image");
        {
            let build = cache.build()?;
            fs::write(build.rootfs().join("half"), "written").map_err(PullError::cache(build.dir()))?;
            assert!(!cache.image_dir(&digest).exists());
            // Dropped without install: an error in the middle of a pull.
        }
        assert!(!cache.image_dir(&digest).exists());
        assert_eq!(tmp_entries(&cache), 0, "the build is removed");
        Ok(())
    }

    #[test]
    fn work_of_dead_processes_is_swept_and_of_live_ones_kept() -> Result<(), PullError> {
        let (dir, cache) = cache();
        // A pid that cannot be running: above the kernel's maximum (4194304).
        let dead = cache.tmp().join("4194305.crashed");
        fs::create_dir_all(dead.join("rootfs/ro")).map_err(PullError::cache(&dead))?;
        fs::set_permissions(dead.join("rootfs"), Permissions::from_mode(0o555)).map_err(PullError::cache(&dead))?;
        let live = cache.tmp().join(format!("{}.running", std::process::id()));
        fs::create_dir(&live).map_err(PullError::cache(&live))?;
        let reopened = Cache::open(dir.path().join("cache"))?;
        assert!(
            !dead.exists(),
            "a crashed pull's work is removed, read-only directories and all"
        );
        assert!(live.exists(), "a running pull's work is kept");
        assert_eq!(reopened.root(), cache.root());
        Ok(())
    }

    #[test]
    fn concurrent_builds_of_one_image_end_with_one_complete_copy() -> Result<(), PullError> {
        let (_dir, cache) = cache();
        let digest = Digest::of(b"image");
        let racers = 4;
        let barrier = Arc::new(Barrier::new(racers));
        let handles: Vec<_> = (0..racers)
            .map(|i| {
                let (cache, digest, barrier) = (cache.clone(), digest.clone(), barrier.clone());
                std::thread::spawn(move || -> Result<PathBuf, PullError> {
                    let build = cache.build()?;
                    for n in 0..50 {
                        let file = build.rootfs().join(format!("file{n}"));
                        fs::write(&file, format!("{n}")).map_err(PullError::cache(&file))?;
                    }
                    fs::write(build.dir().join("config.json"), format!("{{\"builder\":{i}}}"))
                        .map_err(PullError::cache(build.dir()))?;
                    barrier.wait();
                    cache.install(build, &digest)
                })
            })
            .collect();
        for handle in handles {
            let installed = handle.join().unwrap_or_else(|_| panic!("a racer panicked"))?;
            assert_eq!(installed, cache.image_dir(&digest));
        }
        let image = cache.image_dir(&digest);
        let files = fs::read_dir(image.join("rootfs"))
            .map(|d| d.count())
            .map_err(PullError::cache(&image))?;
        assert_eq!(files, 50, "the copy that won is complete");
        assert!(image.join("config.json").is_file());
        assert_eq!(tmp_entries(&cache), 0, "the losers' copies are removed");
        Ok(())
    }

    #[test]
    fn remove_tree_handles_read_only_directories() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b"))?;
        fs::write(tree.join("a/b/f"), "x")?;
        std::os::unix::fs::symlink("/", tree.join("a/root"))?;
        fs::set_permissions(tree.join("a/b"), Permissions::from_mode(0o555))?;
        fs::set_permissions(tree.join("a"), Permissions::from_mode(0o555))?;
        remove_tree(&tree)?;
        assert!(!tree.exists());
        remove_tree(&tree)?; // already gone: fine
        Ok(())
    }
}
