//! Applying layer archives to a root filesystem, as Docker and containerd do without a chroot.
//!
//! Every path in a layer is resolved inside the rootfs as if the rootfs were `/`: `..` components
//! in entry names are refused, symlinks among an entry's parent directories are followed but
//! re-rooted at the rootfs (an absolute target `/etc` means `<rootfs>/etc`, `..` stops at the
//! rootfs), and the entry's own name is never followed (it is removed and written anew). Symlinks
//! are stored as written, absolute targets included; they only matter to the process that later
//! runs inside the rootfs. The rootfs is private to one build while it is written, so resolving by
//! path cannot race with anyone.
//!
//! Whiteouts (OCI image spec, "Representing Changes"): an entry `dir/.wh.name` deletes `dir/name`
//! of the layers below, `dir/.wh..wh..opq` hides everything the layers below put in `dir`. Entries
//! are written with their modes, except setuid/setgid bits, which are dropped: nobody should gain
//! privileges from a file an image put on the host's disk. Owners are not kept (an unprivileged
//! process cannot set them; the sandbox maps the user), nor are extended attributes. Device nodes
//! and FIFOs are skipped: an unprivileged process cannot create the former, and a sandbox
//! provides its own `/dev`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;
use tar::EntryType;

use crate::zstd::ZstdFrames;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnpackError {
    /// The layer tries to write outside the rootfs, or is otherwise unusable; the image is refused.
    #[error("entry '{path}' {reason}")]
    Unsafe { path: String, reason: String },
    #[error("entry '{path}': {source}")]
    Io { path: String, source: io::Error },
    #[error("the layer is not a valid tar archive: {0}")]
    Archive(io::Error),
}

/// What one layer held, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub skipped: u64,
}

/// Opens a layer blob for reading as tar, decompressing by its magic bytes (a registry's media
/// type is checked before download; the bytes decide here, which also copes with mislabelled layers).
pub(crate) fn open_layer(file: File) -> Result<Box<dyn Read + Send>, UnpackError> {
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(UnpackError::Archive)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(ZstdFrames::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// One step of a path being resolved inside the rootfs.
enum Step {
    Root,
    Up,
    Name(OsString),
}

/// Applies layers, bottom first, to one rootfs; [`Unpacker::finish`] then sets directory modes.
pub(crate) struct Unpacker {
    root: PathBuf,
    /// Final mode and mtime of every directory a layer listed. Directories stay owner-writable while
    /// layers are applied (a later layer may write into a read-only one) and get these at the end.
    dirs: HashMap<PathBuf, (u32, Option<SystemTime>)>,
}

const SYMLINK_LIMIT: usize = 40;

impl Unpacker {
    /// An unpacker writing into `root`, an existing empty directory.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            dirs: HashMap::new(),
        }
    }

    /// Applies one uncompressed tar layer.
    pub fn apply(&mut self, layer: impl Read) -> Result<LayerStats, UnpackError> {
        let mut archive = tar::Archive::new(layer);
        let mut stats = LayerStats::default();
        // Paths this layer has written so far: an opaque marker hides everything else in its directory.
        let mut written: HashSet<PathBuf> = HashSet::new();
        for entry in archive.entries().map_err(UnpackError::Archive)? {
            let mut entry = entry.map_err(UnpackError::Archive)?;
            let name = entry.path().map_err(UnpackError::Archive)?.into_owned();
            let shown = name.display().to_string();
            let names = normalise(&name).map_err(|reason| UnpackError::Unsafe {
                path: shown.clone(),
                reason,
            })?;
            let Some((last, parents)) = names.split_last() else {
                continue; // the rootfs itself ("./")
            };
            stats.entries += 1;

            if let Some(hidden) = last.to_str().and_then(|n| n.strip_prefix(".wh.")) {
                stats.whiteouts += 1;
                if hidden == ".wh..opq" {
                    let dir = self.resolve_creating(parents, &shown)?;
                    self.clear_lower(&dir, &written, &shown)?;
                    record(&mut written, &self.root, &dir);
                } else if !hidden.starts_with(".wh.")
                    && !hidden.is_empty()
                    && let Some(dir) = self.resolve(parents, false, &shown)?
                {
                    self.remove(&dir.join(hidden), &shown)?;
                }
                // Other `.wh..wh.*` names are AUFS bookkeeping with no meaning here.
                continue;
            }

            let header = entry.header();
            let mode = header.mode().map_err(UnpackError::Archive)?;
            let mtime = header
                .mtime()
                .ok()
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            let kind = header.entry_type();
            let path = self.resolve_creating(parents, &shown)?.join(last);
            let io = |source| UnpackError::Io {
                path: shown.clone(),
                source,
            };
            match kind {
                EntryType::Directory => self.write_dir(&path, mode, mtime).map_err(io)?,
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    self.replace(&path, false).map_err(io)?;
                    write_file(&path, &mut entry, mode, mtime).map_err(io)?;
                }
                EntryType::Symlink => {
                    let target = entry.link_name().map_err(UnpackError::Archive)?;
                    let Some(target) = target.filter(|t| !t.as_os_str().is_empty()) else {
                        let reason = "is a symlink without a target".into();
                        return Err(UnpackError::Unsafe {
                            path: shown.clone(),
                            reason,
                        });
                    };
                    self.replace(&path, false).map_err(io)?;
                    std::os::unix::fs::symlink(&target, &path).map_err(io)?;
                }
                EntryType::Link => {
                    let target = entry.link_name().map_err(UnpackError::Archive)?.map(|t| t.into_owned());
                    let source = self.link_source(target.as_deref(), &shown)?;
                    if source != path {
                        self.replace(&path, false).map_err(io)?;
                        fs::hard_link(&source, &path).map_err(io)?;
                    }
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    tracing::debug!(entry = %shown, "skipping a device node or FIFO");
                    stats.skipped += 1;
                    continue;
                }
                other => {
                    tracing::debug!(entry = %shown, kind = ?other, "skipping an entry of an unknown type");
                    stats.skipped += 1;
                    continue;
                }
            }
            record(&mut written, &self.root, &path);
        }
        Ok(stats)
    }

    /// Gives the directories the layers listed their final modes and times, deepest first (setting
    /// a child's attributes does not touch its parent's mtime, but writing into it would).
    pub fn finish(self) -> Result<(), UnpackError> {
        let mut dirs: Vec<_> = self.dirs.into_iter().collect();
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, (mode, mtime)) in dirs {
            let io = |source| UnpackError::Io {
                path: path.display().to_string(),
                source,
            };
            // A later layer may have replaced the directory; only a real directory gets its mode.
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                _ => continue,
            }
            if let Some(mtime) = mtime {
                File::open(&path).and_then(|dir| dir.set_modified(mtime)).map_err(io)?;
            }
            fs::set_permissions(&path, Permissions::from_mode(mode & 0o7777)).map_err(io)?;
        }
        Ok(())
    }

    /// The host path of the directory `names` inside the rootfs, creating missing directories.
    fn resolve_creating(&self, names: &[OsString], shown: &str) -> Result<PathBuf, UnpackError> {
        // `resolve` with `create` only returns `None` for a missing directory it was not allowed to create.
        self.resolve(names, true, shown)?.ok_or_else(|| UnpackError::Unsafe {
            path: shown.to_owned(),
            reason: "has a parent directory that could not be created".into(),
        })
    }

    /// The host path of the directory `names` inside the rootfs, following symlinks as if the rootfs
    /// were `/`; `None` if a component is missing and `create` is false.
    fn resolve(&self, names: &[OsString], create: bool, shown: &str) -> Result<Option<PathBuf>, UnpackError> {
        let mut resolved = self.root.clone();
        let mut depth = 0usize;
        let mut pending: VecDeque<Step> = names.iter().cloned().map(Step::Name).collect();
        let mut links = 0;
        let io = |source| UnpackError::Io {
            path: shown.to_owned(),
            source,
        };
        while let Some(step) = pending.pop_front() {
            let name = match step {
                Step::Root => {
                    resolved = self.root.clone();
                    depth = 0;
                    continue;
                }
                Step::Up => {
                    // `..` from the rootfs is the rootfs, as `/..` is `/`.
                    if depth > 0 {
                        resolved.pop();
                        depth -= 1;
                    }
                    continue;
                }
                Step::Name(name) => name,
            };
            let path = resolved.join(&name);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > SYMLINK_LIMIT {
                        return Err(UnpackError::Unsafe {
                            path: shown.to_owned(),
                            reason: "has too many levels of symbolic links in its parents".into(),
                        });
                    }
                    let target = fs::read_link(&path).map_err(io)?;
                    for step in target.components().rev() {
                        match step {
                            Component::RootDir | Component::Prefix(_) => pending.push_front(Step::Root),
                            Component::ParentDir => pending.push_front(Step::Up),
                            Component::Normal(n) => pending.push_front(Step::Name(n.to_owned())),
                            Component::CurDir => {}
                        }
                    }
                }
                Ok(meta) if meta.is_dir() => {
                    resolved = path;
                    depth += 1;
                }
                Ok(_) => {
                    return Err(UnpackError::Unsafe {
                        path: shown.to_owned(),
                        reason: format!(
                            "needs '{}' to be a directory, but an earlier entry made it a file",
                            name.display()
                        ),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&path).map_err(io)?;
                    fs::set_permissions(&path, Permissions::from_mode(0o755)).map_err(io)?;
                    resolved = path;
                    depth += 1;
                }
                Err(e) => return Err(io(e)),
            }
        }
        Ok(Some(resolved))
    }

    /// The existing file a hard link entry points at; it must be inside the rootfs and not a directory.
    fn link_source(&self, target: Option<&Path>, shown: &str) -> Result<PathBuf, UnpackError> {
        let unsafe_link = |reason: String| UnpackError::Unsafe {
            path: shown.to_owned(),
            reason,
        };
        let Some(target) = target else {
            return Err(unsafe_link("is a hard link without a target".into()));
        };
        let names = normalise(target).map_err(|reason| unsafe_link(format!("is a hard link whose target {reason}")))?;
        let Some((last, parents)) = names.split_last() else {
            return Err(unsafe_link("is a hard link to the root directory".into()));
        };
        let missing = || {
            unsafe_link(format!(
                "is a hard link to '{}', which no earlier entry wrote",
                target.display()
            ))
        };
        let source = self.resolve(parents, false, shown)?.ok_or_else(missing)?.join(last);
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_dir() => Err(unsafe_link(format!(
                "is a hard link to the directory '{}'",
                target.display()
            ))),
            Ok(_) => Ok(source),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
            Err(e) => Err(UnpackError::Io {
                path: shown.to_owned(),
                source: e,
            }),
        }
    }

    fn write_dir(&mut self, path: &Path, mode: u32, mtime: Option<SystemTime>) -> io::Result<()> {
        let is_dir = self.replace(path, true)?;
        if !is_dir {
            fs::create_dir(path)?;
        }
        fs::set_permissions(path, Permissions::from_mode((mode & 0o7777) | 0o700))?;
        self.dirs.insert(path.to_owned(), (mode, mtime));
        Ok(())
    }

    /// Clears the way for a new entry at `path`: removes whatever is there, except a directory
    /// when a directory is coming (its contents merge). Returns whether a directory was kept.
    fn replace(&mut self, path: &Path, keep_dir: bool) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() && keep_dir => Ok(true),
            Ok(meta) => {
                remove_entry(path, meta.is_dir())?;
                self.forget(path);
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `path` (a whiteout), whatever it is; a symlink is deleted, not followed.
    fn remove(&mut self, path: &Path, shown: &str) -> Result<(), UnpackError> {
        self.replace(path, false).map(|_| ()).map_err(|source| UnpackError::Io {
            path: shown.to_owned(),
            source,
        })
    }

    /// Removes from `dir` everything this layer has not written (the opaque marker's meaning).
    fn clear_lower(&mut self, dir: &Path, written: &HashSet<PathBuf>, shown: &str) -> Result<(), UnpackError> {
        let io = |source| UnpackError::Io {
            path: shown.to_owned(),
            source,
        };
        for child in fs::read_dir(dir).map_err(io)? {
            let child = child.map_err(io)?;
            let path = child.path();
            let file_type = child.file_type().map_err(io)?;
            if written.contains(&path) {
                if file_type.is_dir() {
                    self.clear_lower(&path, written, shown)?;
                }
            } else {
                remove_entry(&path, file_type.is_dir()).map_err(io)?;
                self.forget(&path);
            }
        }
        Ok(())
    }

    fn forget(&mut self, removed: &Path) {
        if !self.dirs.is_empty() {
            self.dirs.retain(|dir, _| !dir.starts_with(removed));
        }
    }
}

fn write_file(path: &Path, content: &mut impl Read, mode: u32, mtime: Option<SystemTime>) -> io::Result<()> {
    // create_new: O_EXCL never follows a symlink that might have appeared at `path`.
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    io::copy(content, &mut file)?;
    if let Some(mtime) = mtime {
        file.set_modified(mtime)?;
    }
    // Without setuid/setgid (see the module documentation).
    file.set_permissions(Permissions::from_mode(mode & 0o1777))
}

fn remove_entry(path: &Path, is_dir: bool) -> io::Result<()> {
    // std's remove_dir_all does not follow symlinks inside the tree.
    if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Marks `path` and its parents up to the rootfs as written by the current layer.
fn record(written: &mut HashSet<PathBuf>, root: &Path, path: &Path) {
    let mut current = Some(path);
    while let Some(p) = current {
        if p == root || !written.insert(p.to_owned()) {
            break;
        }
        current = p.parent();
    }
}

/// The components of an entry name relative to the rootfs: a leading `/` and `.` are dropped
/// (Docker does the same), `..` is refused.
fn normalise(name: &Path) -> Result<Vec<OsString>, String> {
    let mut names = Vec::new();
    for component in name.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err("contains '..', which could reach outside the image".into()),
            Component::Normal(n) => names.push(n.to_owned()),
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A layer built entry by entry; names are written raw, bypassing the tar crate's own checks,
    /// so that tests can build the hostile archives a registry might serve.
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }

        fn entry(mut self, name: &str, kind: EntryType, mode: u32, link: &str, content: &[u8]) -> Self {
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_size(content.len() as u64);
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            self.0
                .append(&header, content)
                .unwrap_or_else(|e| panic!("building a test layer: {e}"));
            self
        }

        fn file(self, name: &str, mode: u32, content: &str) -> Self {
            self.entry(name, EntryType::Regular, mode, "", content.as_bytes())
        }

        fn dir(self, name: &str, mode: u32) -> Self {
            self.entry(name, EntryType::Directory, mode, "", b"")
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.entry(name, EntryType::Symlink, 0o777, target, b"")
        }

        fn hardlink(self, name: &str, target: &str) -> Self {
            self.entry(name, EntryType::Link, 0o644, target, b"")
        }

        fn bytes(self) -> Vec<u8> {
            self.0
                .into_inner()
                .unwrap_or_else(|e| panic!("finishing a test layer: {e}"))
        }
    }

    struct Rootfs {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Rootfs {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let root = dir.path().join("rootfs");
            fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir: {e}"));
            Self { _dir: dir, root }
        }

        /// Applies the layers in order, then finishes.
        fn unpack(&self, layers: Vec<Layer>) -> Result<Vec<LayerStats>, UnpackError> {
            let mut unpacker = Unpacker::new(self.root.clone());
            let stats = layers
                .into_iter()
                .map(|l| unpacker.apply(&l.bytes()[..]))
                .collect::<Result<Vec<_>, _>>()?;
            unpacker.finish()?;
            Ok(stats)
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn exists(&self, rel: &str) -> bool {
            fs::symlink_metadata(self.path(rel)).is_ok()
        }

        fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
        }

        fn mode(&self, rel: &str) -> u32 {
            fs::symlink_metadata(self.path(rel))
                .map(|m| m.mode() & 0o7777)
                .unwrap_or_else(|e| panic!("{rel}: {e}"))
        }

        /// Every path under the rootfs, relative, sorted.
        fn listing(&self) -> Vec<String> {
            fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
                for child in fs::read_dir(dir).into_iter().flatten().flatten() {
                    let path = child.path();
                    out.push(
                        path.strip_prefix(root)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                    );
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&path, root, out);
                    }
                }
            }
            let mut out = Vec::new();
            walk(&self.root, &self.root, &mut out);
            out.sort();
            out
        }
    }

    fn unsafe_reason(result: Result<Vec<LayerStats>, UnpackError>) -> String {
        match result {
            Err(UnpackError::Unsafe { path, reason }) => format!("{path}: {reason}"),
            other => panic!("expected the layer to be refused, got {other:?}"),
        }
    }

    #[test]
    fn files_directories_and_modes() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        let layer = Layer::new()
            .dir("bin", 0o755)
            .file("bin/tool", 0o755, "#!/bin/sh\n")
            .file("etc/secret", 0o640, "s")
            .file("bin/su", 0o4755, "setuid")
            .dir("ro", 0o555)
            .file("ro/inside", 0o444, "written after its read-only directory")
            .dir("tmp", 0o1777);
        rootfs.unpack(vec![layer])?;
        assert_eq!(rootfs.mode("bin/tool"), 0o755);
        assert_eq!(rootfs.mode("etc/secret"), 0o640);
        assert_eq!(rootfs.mode("etc"), 0o755, "an implied parent directory is 0755");
        assert_eq!(rootfs.mode("bin/su"), 0o755, "setuid is dropped");
        assert_eq!(rootfs.mode("ro"), 0o555);
        assert_eq!(rootfs.mode("tmp"), 0o1777);
        assert_eq!(rootfs.read("ro/inside"), "written after its read-only directory");
        let mtime = fs::metadata(rootfs.path("bin/tool"))
            .map(|m| m.mtime())
            .unwrap_or_default();
        assert_eq!(
            mtime, 1_700_000_000,
            "file times are kept (Python compares them with its .pyc files)"
        );
        assert_eq!(
            fs::metadata(rootfs.path("ro")).map(|m| m.mtime()).unwrap_or_default(),
            1_700_000_000
        );
        // Leave the tree removable for the temporary directory's clean-up.
        fs::set_permissions(rootfs.path("ro"), Permissions::from_mode(0o755)).map_err(UnpackError::Archive)?;
        Ok(())
    }

    #[test]
    fn whiteouts_delete_lower_layers_entries() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        let lower = Layer::new()
            .file("etc/a", 0o644, "a")
            .file("etc/b", 0o644, "b")
            .dir("d", 0o755)
            .file("d/x", 0o644, "x")
            .symlink("link", "/etc/b");
        let upper = Layer::new()
            .file("etc/.wh.a", 0o644, "")
            .file(".wh.d", 0o644, "")
            .file(".wh.link", 0o644, "");
        let stats = rootfs.unpack(vec![lower, upper])?;
        assert_eq!(stats[1].whiteouts, 3);
        assert_eq!(rootfs.listing(), vec!["etc", "etc/b"]);
        Ok(())
    }

    #[test]
    fn a_whiteout_of_something_missing_is_harmless() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        rootfs.unpack(vec![Layer::new().file("nowhere/.wh.x", 0o644, "").file(
            "etc/.wh.nothing",
            0o644,
            "",
        )])?;
        assert!(
            rootfs.listing().is_empty(),
            "nothing to delete, nothing created: {:?}",
            rootfs.listing()
        );
        Ok(())
    }

    #[test]
    fn opaque_directories_hide_lower_layers_whatever_the_order() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        let lower = Layer::new()
            .file("opt/data/old", 0o644, "old")
            .file("opt/data/sub/old2", 0o644, "old2")
            .file("opt/other", 0o644, "kept");
        let upper = Layer::new()
            .file("opt/data/new", 0o644, "before the marker")
            .file("opt/data/sub/keep", 0o644, "keep")
            .file("opt/data/.wh..wh..opq", 0o644, "")
            .file("opt/data/later", 0o644, "after the marker");
        rootfs.unpack(vec![lower, upper])?;
        assert_eq!(
            rootfs.listing(),
            vec![
                "opt",
                "opt/data",
                "opt/data/later",
                "opt/data/new",
                "opt/data/sub",
                "opt/data/sub/keep",
                "opt/other"
            ]
        );
        Ok(())
    }

    #[test]
    fn hard_links_share_the_file_inside_the_rootfs() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        let layer = Layer::new()
            .file("bin/busybox", 0o755, "binary")
            .hardlink("bin/sh", "bin/busybox")
            .hardlink(
                "usr/bin/env",
                "/bin/busybox", // an absolute link name is relative to the rootfs
            );
        rootfs.unpack(vec![layer])?;
        let inode = |rel: &str| fs::metadata(rootfs.path(rel)).map(|m| m.ino()).unwrap_or_default();
        assert_eq!(inode("bin/sh"), inode("bin/busybox"));
        assert_eq!(inode("usr/bin/env"), inode("bin/busybox"));
        assert_eq!(rootfs.read("bin/sh"), "binary");
        Ok(())
    }

    #[test]
    fn hard_links_cannot_reach_outside_or_link_directories() {
        let outside = Layer::new().hardlink("passwd", "../../../../etc/passwd");
        assert!(unsafe_reason(Rootfs::new().unpack(vec![outside])).contains("'..'"));
        let missing = Layer::new().hardlink("x", "not/there");
        assert!(unsafe_reason(Rootfs::new().unpack(vec![missing])).contains("which no earlier entry wrote"));
        let dir = Layer::new().dir("d", 0o755).hardlink("x", "d");
        assert!(unsafe_reason(Rootfs::new().unpack(vec![dir])).contains("directory"));
        // A hard link whose target path runs through a symlink pointing outside stays inside.
        let host = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let secret = host.path().join("secret");
        fs::write(&secret, "host file").unwrap_or_else(|e| panic!("{e}"));
        let through = Layer::new()
            .symlink("out", &host.path().display().to_string())
            .hardlink("stolen", "out/secret");
        assert!(unsafe_reason(Rootfs::new().unpack(vec![through])).contains("no earlier entry wrote"));
    }

    #[test]
    fn entry_names_with_dotdot_are_refused_and_absolute_names_stay_inside() -> Result<(), UnpackError> {
        assert!(unsafe_reason(Rootfs::new().unpack(vec![Layer::new().file("../evil", 0o644, "x")])).contains("'..'"));
        assert!(
            unsafe_reason(Rootfs::new().unpack(vec![Layer::new().file("a/../../evil", 0o644, "x")])).contains("..")
        );
        let rootfs = Rootfs::new();
        rootfs.unpack(vec![Layer::new().file("/abs/file", 0o644, "inside").file(
            "./dot/file",
            0o644,
            "too",
        )])?;
        assert_eq!(rootfs.read("abs/file"), "inside");
        assert_eq!(rootfs.read("dot/file"), "too");
        Ok(())
    }

    #[test]
    fn symlinks_are_kept_as_written_and_resolved_inside_the_rootfs() -> Result<(), UnpackError> {
        let host = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let host_dir = host.path().display().to_string();
        let rootfs = Rootfs::new();
        let lower = Layer::new()
            .symlink("lib", "/usr/lib") // absolute, as in usr-merged distributions
            .symlink("up", "../../../../..")
            .symlink("host", &host_dir);
        let upper = Layer::new()
            .file("lib/x.so", 0o644, "library")
            .file("up/escaped", 0o644, "stays inside")
            .file("host/planted", 0o644, "stays inside too");
        rootfs.unpack(vec![lower, upper])?;
        assert_eq!(fs::read_link(rootfs.path("lib")).ok(), Some(PathBuf::from("/usr/lib")));
        assert_eq!(rootfs.read("usr/lib/x.so"), "library");
        assert_eq!(rootfs.read("escaped"), "stays inside");
        assert_eq!(
            rootfs.read(&format!("{}/planted", host_dir.trim_start_matches('/'))),
            "stays inside too"
        );
        assert!(
            !host.path().join("planted").exists(),
            "nothing is written through a symlink to the host"
        );
        Ok(())
    }

    #[test]
    fn an_entry_replaces_a_symlink_instead_of_writing_through_it() -> Result<(), UnpackError> {
        let host = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = host.path().join("passwd");
        fs::write(&target, "host's").unwrap_or_else(|e| panic!("{e}"));
        let rootfs = Rootfs::new();
        let lower = Layer::new().symlink("etc/passwd", &target.display().to_string());
        let upper = Layer::new().file("etc/passwd", 0o644, "image's");
        rootfs.unpack(vec![lower, upper])?;
        assert_eq!(rootfs.read("etc/passwd"), "image's");
        assert_eq!(fs::read_to_string(&target).ok().as_deref(), Some("host's"));
        Ok(())
    }

    #[test]
    fn symlink_loops_and_files_as_directories_are_refused() {
        let looped = Layer::new().symlink("loop", "loop").file("loop/x", 0o644, "");
        assert!(unsafe_reason(Rootfs::new().unpack(vec![looped])).contains("too many levels"));
        let file_parent = Layer::new().file("f", 0o644, "").file("f/x", 0o644, "");
        assert!(unsafe_reason(Rootfs::new().unpack(vec![file_parent])).contains("'f' to be a directory"));
    }

    #[test]
    fn replacements_between_kinds() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        let lower = Layer::new()
            .file("was-dir/x", 0o644, "x")
            .file("was-file", 0o644, "f")
            .dir("both", 0o700);
        let upper = Layer::new()
            .file("was-dir", 0o644, "now a file")
            .file("was-file/y", 0o644, "now a dir")
            .dir("both", 0o750)
            .file("both/z", 0o644, "merged");
        // `was-file/y` needs `was-file` as a directory without an entry replacing it first: refused.
        assert!(unsafe_reason(rootfs.unpack(vec![lower, upper])).contains("'was-file' to be a directory"));

        let rootfs = Rootfs::new();
        let lower = Layer::new()
            .file("was-dir/x", 0o644, "x")
            .file("was-file", 0o644, "f")
            .file("both/old", 0o644, "");
        let upper = Layer::new()
            .file("was-dir", 0o644, "now a file")
            .dir("was-file", 0o755)
            .file("was-file/y", 0o644, "now a dir")
            .dir("both", 0o750);
        rootfs.unpack(vec![lower, upper])?;
        assert_eq!(rootfs.read("was-dir"), "now a file");
        assert_eq!(rootfs.read("was-file/y"), "now a dir");
        assert!(rootfs.exists("both/old"), "a directory over a directory merges");
        assert_eq!(rootfs.mode("both"), 0o750);
        Ok(())
    }

    #[test]
    fn devices_and_fifos_are_skipped() -> Result<(), UnpackError> {
        let rootfs = Rootfs::new();
        let layer = Layer::new()
            .entry("dev/null", EntryType::Char, 0o666, "", b"")
            .entry("dev/sda", EntryType::Block, 0o660, "", b"")
            .entry("run/fifo", EntryType::Fifo, 0o600, "", b"")
            .file("ok", 0o644, "");
        let stats = rootfs.unpack(vec![layer])?;
        assert_eq!(stats[0].skipped, 3);
        assert!(!rootfs.exists("dev/null") && !rootfs.exists("run/fifo"));
        assert!(rootfs.exists("ok"));
        Ok(())
    }

    #[test]
    fn layers_open_compressed_or_not() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let tar = Layer::new().file("hello", 0o644, "world").bytes();
        let plain = dir.path().join("plain");
        fs::write(&plain, &tar)?;
        let gzipped = dir.path().join("gz");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&gzipped)?, flate2::Compression::fast());
        io::Write::write_all(&mut encoder, &tar)?;
        encoder.finish()?;
        for blob in [plain, gzipped] {
            let rootfs = Rootfs::new();
            let mut unpacker = Unpacker::new(rootfs.root.clone());
            unpacker.apply(open_layer(File::open(&blob)?)?)?;
            assert_eq!(rootfs.read("hello"), "world");
        }
        let garbage = dir.path().join("garbage");
        fs::write(
            &garbage,
            b"this is not a tar archive at all, but long enough to look at",
        )?;
        let rootfs = Rootfs::new();
        let result = Unpacker::new(rootfs.root.clone()).apply(open_layer(File::open(&garbage)?)?);
        assert!(matches!(result, Err(UnpackError::Archive(_))), "{result:?}");
        Ok(())
    }
}
