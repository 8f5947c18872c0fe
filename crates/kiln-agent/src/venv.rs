//! Virtualenvs for script-mode `requirements.txt`, shared by the jobs of a machine under
//! `<cache_dir>/venvs/<sha256 of requirements.txt>`.
//!
//! A virtualenv cannot be moved once built (pip writes its absolute path into the scripts it
//! installs), so instead of building elsewhere and renaming, a build happens in place under an
//! exclusive lock (`<hash>.lock`) and is marked usable by a `.kiln-ready` file written last. A job
//! that finds the marker uses the venv without locking; one that finds a directory without the
//! marker (a build that crashed) removes it and builds again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::host::Jail;
use crate::launch::{self, Exit, Finished, Spawn, stop_requested};
use crate::session::Session;

const READY: &str = ".kiln-ready";

/// How getting the virtualenv went.
pub enum Outcome {
    Ready(PathBuf),
    /// Creating the venv or `pip install` failed (the toolkit's `InstallRequirementsError`).
    Failed {
        exit: Exit,
        stderr_tail: Vec<String>,
        command: String,
    },
    Stopped,
}

/// The cache key of a requirements file: the SHA-256 of its bytes, in hex.
pub fn requirements_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The virtualenv for `requirements`, built if the cache does not have it yet.
pub(crate) async fn ensure(
    requirements: &Path,
    cache_dir: &Path,
    code_dir: &Path,
    env: &BTreeMap<String, String>,
    s: &Session,
    grace: Duration,
    jail: &Jail<'_>,
) -> Result<Outcome, String> {
    let bytes = std::fs::read(requirements).map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    let hash = requirements_hash(&bytes);
    let venvs = cache_dir.join("venvs");
    std::fs::create_dir_all(&venvs).map_err(|e| {
        format!(
            "cannot create the virtualenv cache {}: {e}; check the cache directory's permissions",
            venvs.display()
        )
    })?;
    let dir = venvs.join(&hash);
    if dir.join(READY).is_file() {
        s.sink.line(format!(
            "[kiln agent] requirements.txt: using the cached virtualenv {}",
            dir.display()
        ));
        return Ok(Outcome::Ready(dir));
    }

    let lock_path = venvs.join(format!("{hash}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let mut stop = s.stop_rx();
    let mut said_waiting = false;
    let mut pending = file;
    // Held until this function returns; another job's build finishing releases it.
    let _lock = loop {
        match Flock::lock(pending, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => break lock,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                pending = f;
                if !said_waiting {
                    s.sink.line(
                        "[kiln agent] requirements.txt: another job is building the same virtualenv; waiting for it",
                    );
                    said_waiting = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {},
                    () = stop_requested(&mut stop) => return Ok(Outcome::Stopped),
                }
            }
            Err((_, e)) => return Err(format!("cannot lock {}: {e}", lock_path.display())),
        }
    };
    if dir.join(READY).is_file() {
        return Ok(Outcome::Ready(dir));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| {
            format!(
                "cannot remove the unfinished virtualenv {}: {e}; remove it by hand",
                dir.display()
            )
        })?;
    }

    s.sink.line(format!(
        "[kiln agent] requirements.txt: building a virtualenv in {}",
        dir.display()
    ));
    let mut pip_env = env.clone();
    pip_env.insert("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into());
    // The build runs the requirements' own code (setup scripts), so it runs where the job does:
    // in the sandbox, with only the virtualenv writable besides the tree.
    let (python, shown) = if jail.sandboxed() {
        let found = crate::sandbox::locate_python("python3", env)?;
        (found.executable.display().to_string(), found.prefixes)
    } else {
        ("python3".to_string(), Vec::new())
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let code_dir = jail.tree.seen(code_dir);
    let steps = [
        Spawn {
            program: python,
            args: vec![
                "-m".into(),
                "venv".into(),
                "--system-site-packages".into(),
                dir.display().to_string(),
            ],
            cwd: code_dir.clone(),
            env: pip_env.clone(),
        },
        Spawn {
            program: dir.join("bin/python").display().to_string(),
            args: vec![
                "-m".into(),
                "pip".into(),
                "install".into(),
                "-r".into(),
                "requirements.txt".into(),
            ],
            cwd: code_dir,
            env: pip_env,
        },
    ];
    for step in steps {
        let command = step.display();
        let step = jail
            .wrap(step, &shown, std::slice::from_ref(&dir))
            .map_err(|e| format!("the virtualenv: {e}"))?;
        let mut stop = s.stop_rx();
        let result = launch::run(&step, &s.sink, &mut stop, grace).await;
        let failed = match result {
            Ok(Finished { stopped: true, .. }) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Ok(Outcome::Stopped);
            }
            Ok(Finished { exit, .. }) if exit.success() => None,
            Ok(Finished { exit, stderr_tail, .. }) => Some((exit, stderr_tail)),
            Err(e) => Some((Exit::Code(127), vec![e.0])),
        };
        if let Some((exit, stderr_tail)) = failed {
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(Outcome::Failed {
                exit,
                stderr_tail,
                command,
            });
        }
    }
    std::fs::write(dir.join(READY), &hash)
        .map_err(|e| format!("cannot mark the virtualenv {} ready: {e}", dir.display()))?;
    Ok(Outcome::Ready(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            requirements_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
