//! Script mode as sagemaker-training-toolkit runs it (reference §6.5): the source bundle
//! (`sagemaker_submit_directory`) unpacked into `code/` unless `code/` already has files,
//! `requirements.txt` installed into a virtualenv cached by the file's SHA-256, and the entry point
//! run from `code/` as a Python file, a package module (`setup.py`) or a shell command.

use std::path::{Path, PathBuf};

use crate::tree::safe_relative;

/// How the toolkit runs an entry point (`entry_point_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `code/setup.py` exists: `python -m <module>`.
    Package,
    /// `*.py`: `python <entry>`.
    Python,
    /// Anything else: `/bin/sh -c "./<entry> <args>"`.
    Command,
}

/// The kind of `entry` in `code_dir`.
pub fn entry_kind(code_dir: &Path, entry: &str) -> EntryKind {
    if code_dir.join("setup.py").is_file() {
        EntryKind::Package
    } else if entry.ends_with(".py") {
        EntryKind::Python
    } else {
        EntryKind::Command
    }
}

/// The program and arguments that run `entry` with `args`, using `python` for Python entry
/// points. The entry point must be a relative path inside `code/`.
pub fn entry_command(
    kind: EntryKind,
    entry: &str,
    args: &[String],
    python: &str,
) -> Result<(String, Vec<String>), String> {
    safe_relative(entry).map_err(|e| {
        format!("the entry point sagemaker_program='{entry}' is not a file inside the source directory: {e}")
    })?;
    Ok(match kind {
        EntryKind::Package => {
            // The toolkit strips every ".py" from the name (`str.replace`).
            let module = entry.replace(".py", "");
            let mut a = vec!["-m".to_string(), module];
            a.extend(args.iter().cloned());
            (python.to_string(), a)
        }
        EntryKind::Python => {
            let mut a = vec![entry.to_string()];
            a.extend(args.iter().cloned());
            (python.to_string(), a)
        }
        EntryKind::Command => (
            "/bin/sh".to_string(),
            vec!["-c".to_string(), format!("./{entry} {}", args.join(" "))],
        ),
    })
}

/// Whether a directory is missing or has no entries.
pub fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Copies a directory tree (files, directories, symbolic links as links).
pub fn copy_dir(src: &Path, dst: &Path) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("cannot copy {}: {e}", p.display());
    std::fs::create_dir_all(dst).map_err(|e| err(dst, e))?;
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        for entry in std::fs::read_dir(&from).map_err(|e| err(&from, e))? {
            let entry = entry.map_err(|e| err(&from, e))?;
            let path = entry.path();
            let target = to.join(entry.file_name());
            let ty = entry.file_type().map_err(|e| err(&path, e))?;
            if ty.is_dir() {
                std::fs::create_dir_all(&target).map_err(|e| err(&target, e))?;
                stack.push((path, target));
            } else if ty.is_symlink() {
                let link = std::fs::read_link(&path).map_err(|e| err(&path, e))?;
                std::os::unix::fs::symlink(&link, &target).map_err(|e| err(&target, e))?;
            } else {
                std::fs::copy(&path, &target).map_err(|e| err(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Makes a shell entry point executable, as the toolkit does before running it.
pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mut perms = meta.permissions();
        perms.set_mode(perms.mode() | 0o755);
        let _ = std::fs::set_permissions(path, perms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_like_the_toolkit() {
        let args = vec!["--epochs".to_string(), "3".to_string()];
        assert_eq!(
            entry_command(EntryKind::Python, "train.py", &args, "python3").unwrap(),
            ("python3".into(), vec!["train.py".into(), "--epochs".into(), "3".into()])
        );
        assert_eq!(
            entry_command(EntryKind::Package, "pkg/train.py", &args, "/v/bin/python").unwrap(),
            (
                "/v/bin/python".into(),
                vec!["-m".into(), "pkg/train".into(), "--epochs".into(), "3".into()]
            )
        );
        assert_eq!(
            entry_command(EntryKind::Command, "run.sh", &args, "python3").unwrap(),
            ("/bin/sh".into(), vec!["-c".into(), "./run.sh --epochs 3".into()])
        );
        assert!(entry_command(EntryKind::Python, "../x.py", &args, "python3").is_err());
    }

    #[test]
    fn kinds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(entry_kind(dir.path(), "train.py"), EntryKind::Python);
        assert_eq!(entry_kind(dir.path(), "train.sh"), EntryKind::Command);
        std::fs::write(dir.path().join("setup.py"), "").unwrap();
        assert_eq!(entry_kind(dir.path(), "train.py"), EntryKind::Package);
    }

    #[test]
    fn copies_trees() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("a/b")).unwrap();
        std::fs::write(src.path().join("a/b/c.txt"), "c").unwrap();
        std::fs::write(src.path().join("top.py"), "print(1)").unwrap();
        let out = dst.path().join("code");
        assert!(dir_is_empty(&out));
        copy_dir(src.path(), &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a/b/c.txt")).unwrap(), "c");
        assert!(!dir_is_empty(&out));
    }
}
