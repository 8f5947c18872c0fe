//! Local archives: `model.tar.gz`/`output.tar.gz` with the files at the archive root, and
//! unpacking a source bundle without letting entries escape the target directory.

use std::path::{Path, PathBuf};

/// Every regular file under `dir` (following no links), with its `/`-separated relative path,
/// sorted.
pub fn files_under(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = Vec::new();
    walk(dir, "", &mut |path, rel, is_dir| {
        if !is_dir {
            out.push((path.to_path_buf(), rel.to_string()));
        }
        Ok(())
    })?;
    Ok(out)
}

/// Visits `dir` depth-first in name order; `f(path, relative, is_dir)`.
fn walk(dir: &Path, rel: &str, f: &mut dyn FnMut(&Path, &str, bool) -> Result<(), String>) -> Result<(), String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let ty = entry
            .file_type()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if ty.is_dir() {
            f(&path, &child, true)?;
            walk(&path, &child, f)?;
        } else if ty.is_file() || (ty.is_symlink() && path.is_file()) {
            f(&path, &child, false)?;
        }
    }
    Ok(())
}

/// Packs the contents of `dir` (not `dir` itself) into a gzip tar at `dest`.
pub fn pack_tar_gz(dir: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::create(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(true);
    walk(dir, "", &mut |path, rel, is_dir| {
        let r = if is_dir {
            tar.append_dir(format!("{rel}/"), path)
        } else {
            tar.append_path_with_name(path, rel)
        };
        r.map_err(|e| format!("cannot add {} to {}: {e}", path.display(), dest.display()))
    })?;
    let gz = tar
        .into_inner()
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    let mut w = gz
        .finish()
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    std::io::Write::flush(&mut w).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}

/// Unpacks a gzip tar into `dest`; entries that would land outside `dest` are refused by the
/// `tar` crate.
pub fn unpack_tar_gz(archive: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut tar = tar::Archive::new(gz);
    tar.set_preserve_permissions(true);
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    tar.unpack(dest)
        .map_err(|e| format!("cannot unpack {} into {}: {e}", archive.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_files_at_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("model");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("xgboost-model"), "m").unwrap();
        std::fs::write(src.join("sub/extra.bin"), "e").unwrap();
        let tgz = tmp.path().join("model.tar.gz");
        pack_tar_gz(&src, &tgz).unwrap();

        let file = std::fs::File::open(&tgz).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["sub/", "sub/extra.bin", "xgboost-model"]);

        let out = tmp.path().join("out");
        unpack_tar_gz(&tgz, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("xgboost-model")).unwrap(), "m");
        assert_eq!(std::fs::read_to_string(out.join("sub/extra.bin")).unwrap(), "e");
        let files = files_under(&src).unwrap();
        assert_eq!(
            files.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>(),
            vec!["sub/extra.bin", "xgboost-model"]
        );
    }

    #[test]
    fn empty_directories_pack_to_an_empty_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("empty");
        std::fs::create_dir_all(&src).unwrap();
        let tgz = tmp.path().join("o.tar.gz");
        pack_tar_gz(&src, &tgz).unwrap();
        let out = tmp.path().join("out");
        unpack_tar_gz(&tgz, &out).unwrap();
        assert!(out.is_dir());
    }
}
