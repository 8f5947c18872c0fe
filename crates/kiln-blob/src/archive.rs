//! tar.gz archives as SageMaker uses them: `model.tar.gz` holds the files of `/opt/ml/model` at the
//! archive root; unpacking refuses any entry that would land outside the target directory.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::BlobError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Packs the contents of `dir` (not `dir` itself) into a gzip'd tar at `out`: entries are relative
/// paths such as `xgboost-model` or `sub/file`, in sorted order. Symbolic links are archived as
/// links, never followed: a link to a file outside the directory (`/etc/passwd`, the server's keys)
/// does not bring that file along, and a link to an ancestor does not recurse.
/// Blocking; call from `spawn_blocking` in async code.
pub fn pack_tar_gz(dir: &Path, out: &Path) -> Result<(), BlobError> {
    if !dir.is_dir() {
        return Err(BlobError::Archive {
            path: dir.to_path_buf(),
            message: "not a directory".into(),
        });
    }
    let file = File::create(out).map_err(io(out))?;
    let mut tar = tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::default()));
    tar.follow_symlinks(false);
    append_dir(&mut tar, dir, Path::new(""))?;
    let gz = tar.into_inner().map_err(io(out))?;
    let buf = gz.finish().map_err(io(out))?;
    let file = buf.into_inner().map_err(|e| BlobError::Io {
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(out))
}

fn append_dir<W: std::io::Write>(tar: &mut tar::Builder<W>, dir: &Path, rel: &Path) -> Result<(), BlobError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = rel.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            header.set_mtime(
                meta.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
            );
            tar.append_link(&mut header, &name, &target).map_err(io(&path))?;
        } else if meta.is_dir() {
            tar.append_dir(&name, &path).map_err(io(&path))?;
            append_dir(tar, &path, &name)?;
        } else if meta.is_file() {
            tar.append_path_with_name(&path, &name).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// The path an entry would be unpacked to, if it stays inside the target directory.
fn safe_relative(entry: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in entry.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Unpacks a tar.gz into `dir` (created if needed). Refuses, before writing anything, archives with
/// an entry that is absolute, climbs out with `..`, or is a link pointing outside `dir`.
/// Blocking; call from `spawn_blocking` in async code.
pub fn unpack_tar_gz(file: &Path, dir: &Path) -> Result<(), BlobError> {
    let open = || -> Result<tar::Archive<GzDecoder<BufReader<File>>>, BlobError> {
        let f = File::open(file).map_err(io(file))?;
        Ok(tar::Archive::new(GzDecoder::new(BufReader::new(f))))
    };
    let bad = |message: String| BlobError::Archive {
        path: file.to_path_buf(),
        message,
    };
    // First pass: check every entry, so a refused archive leaves nothing behind.
    let mut archive = open()?;
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let refuse = || BlobError::UnsafeEntry {
            archive: file.to_path_buf(),
            entry: path.display().to_string(),
        };
        let rel = safe_relative(&path).ok_or_else(refuse)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(refuse)?
                .into_owned();
            let resolved = if kind.is_symlink() {
                rel.parent().unwrap_or(Path::new("")).join(&target)
            } else {
                target
            };
            links.push((rel, resolved));
        }
    }
    // Every link's target, resolved within the directory: climbing above it is refused, and so is
    // a target that goes through another link of the archive (`up -> .` then `out -> up/..` stays
    // inside lexically but leaves the directory for real).
    let names: std::collections::HashSet<&Path> = links.iter().map(|(rel, _)| rel.as_path()).collect();
    for (rel, resolved) in &links {
        let refuse = || BlobError::UnsafeEntry {
            archive: file.to_path_buf(),
            entry: rel.display().to_string(),
        };
        let mut at = PathBuf::new();
        let mut parts = resolved.components().peekable();
        while let Some(c) = parts.next() {
            match c {
                Component::Normal(p) => {
                    at.push(p);
                    if parts.peek().is_some() && names.contains(at.as_path()) {
                        return Err(refuse());
                    }
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if !at.pop() {
                        return Err(refuse());
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(refuse()),
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut archive = open()?;
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        // `unpack_in` also refuses paths outside `dir`; it reports them as `false`.
        if !entry
            .unpack_in(dir)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?
        {
            return Err(BlobError::UnsafeEntry {
                archive: file.to_path_buf(),
                entry: path.display().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn raw_tar_gz(out: &Path, build: impl FnOnce(&mut tar::Builder<GzEncoder<File>>)) {
        let f = File::create(out).expect("create");
        let mut b = tar::Builder::new(GzEncoder::new(f, Compression::fast()));
        build(&mut b);
        b.into_inner().expect("tar").finish().expect("gz");
    }

    fn file_entry(b: &mut tar::Builder<GzEncoder<File>>, name: &[u8], data: &[u8]) {
        // Written by hand: tar::Builder refuses `..` names, and these tests need them.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    #[test]
    fn round_trip_puts_files_at_the_archive_root() {
        let dir = tempfile::tempdir().expect("dir");
        let src = dir.path().join("model");
        std::fs::create_dir_all(src.join("sub/empty")).expect("mkdir");
        std::fs::write(src.join("xgboost-model"), b"model bytes").expect("write");
        std::fs::write(src.join("sub/params.json"), b"{}").expect("write");
        let out = dir.path().join("model.tar.gz");
        pack_tar_gz(&src, &out).expect("pack");
        let names: Vec<String> = tar::Archive::new(GzDecoder::new(File::open(&out).expect("open")))
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").display().to_string())
            .collect();
        assert_eq!(names, ["sub", "sub/empty", "sub/params.json", "xgboost-model"]);
        let back = dir.path().join("back");
        unpack_tar_gz(&out, &back).expect("unpack");
        assert_eq!(std::fs::read(back.join("xgboost-model")).expect("read"), b"model bytes");
        assert_eq!(std::fs::read(back.join("sub/params.json")).expect("read"), b"{}");
        assert!(back.join("sub/empty").is_dir());
    }

    #[test]
    fn entries_that_escape_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("target");
        for (i, name) in [&b"../evil"[..], b"ok/../../evil", b"/etc/evil"]
            .into_iter()
            .enumerate()
        {
            let archive = dir.path().join(format!("bad{i}.tar.gz"));
            raw_tar_gz(&archive, |b| {
                file_entry(b, b"fine.txt", b"fine");
                file_entry(b, name, b"evil");
            });
            match unpack_tar_gz(&archive, &target) {
                Err(BlobError::UnsafeEntry { entry, .. }) => assert!(entry.contains("evil"), "{entry}"),
                other => panic!("{} was not refused: {other:?}", String::from_utf8_lossy(name)),
            }
            assert!(
                !target.join("fine.txt").exists(),
                "a refused archive must not be half unpacked"
            );
            assert!(!dir.path().join("evil").exists());
        }
    }

    #[test]
    fn links_are_archived_as_links_never_followed() {
        let dir = tempfile::tempdir().expect("dir");
        let src = dir.path().join("model");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(dir.path().join("secret"), b"server secret").expect("write");
        std::fs::write(src.join("weights"), b"w").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), src.join("leak")).expect("link");
        std::os::unix::fs::symlink(dir.path(), src.join("ancestor")).expect("link");
        let out = dir.path().join("model.tar.gz");
        pack_tar_gz(&src, &out).expect("pack");
        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(GzDecoder::new(File::open(&out).expect("open")));
        for e in archive.entries().expect("entries") {
            let e = e.expect("entry");
            let name = e.path().expect("path").display().to_string();
            let link = e.link_name().expect("link").map(|l| l.display().to_string());
            entries.push((name, e.header().entry_type().is_symlink(), link, e.size()));
        }
        let secret = dir.path().join("secret").display().to_string();
        let ancestor = dir.path().display().to_string();
        assert_eq!(
            entries,
            [
                ("ancestor".to_string(), true, Some(ancestor), 0),
                ("leak".to_string(), true, Some(secret), 0),
                ("weights".to_string(), false, None, 1),
            ]
        );
    }

    #[test]
    fn link_chains_that_leave_the_directory_for_real_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = dir.path().join("chain.tar.gz");
        let link = |b: &mut tar::Builder<GzEncoder<File>>, name: &str, target: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).expect("link");
        };
        raw_tar_gz(&archive, |b| {
            link(b, "up", ".");
            link(b, "out", "up/..");
        });
        let target = dir.path().join("code");
        match unpack_tar_gz(&archive, &target) {
            Err(BlobError::UnsafeEntry { entry, .. }) => assert_eq!(entry, "out"),
            other => panic!("the chain was not refused: {other:?}"),
        }
        assert!(!target.join("up").exists(), "nothing unpacked");
        // A link to a link, going no further, stays allowed.
        let fine = dir.path().join("fine.tar.gz");
        raw_tar_gz(&fine, |b| {
            file_entry(b, b"data.txt", b"d");
            link(b, "a", "data.txt");
            link(b, "b", "a");
        });
        unpack_tar_gz(&fine, &target).expect("unpack");
        assert_eq!(std::fs::read(target.join("b")).expect("read"), b"d");
    }

    #[test]
    fn links_out_of_the_directory_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = dir.path().join("link.tar.gz");
        raw_tar_gz(&archive, |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "escape", "../../etc").expect("link");
        });
        assert!(matches!(
            unpack_tar_gz(&archive, &dir.path().join("t")),
            Err(BlobError::UnsafeEntry { .. })
        ));
        let archive = dir.path().join("inside.tar.gz");
        raw_tar_gz(&archive, |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "sub/latest", "../model-1").expect("link");
            file_entry(b, b"model-1", b"m");
        });
        unpack_tar_gz(&archive, &dir.path().join("t2")).expect("a link inside the directory is fine");
    }

    #[test]
    fn a_corrupt_archive_names_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let archive = dir.path().join("corrupt.tar.gz");
        File::create(&archive)
            .expect("create")
            .write_all(b"not gzip")
            .expect("write");
        let e = unpack_tar_gz(&archive, &dir.path().join("t")).expect_err("refused");
        assert!(e.to_string().contains("corrupt.tar.gz"), "{e}");
    }
}
