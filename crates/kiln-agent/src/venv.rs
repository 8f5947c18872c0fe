//! Python environments for script mode, shared by the jobs of a machine under `<cache_dir>/envs/`:
//! the pinned environment of a framework image (see `environments`), with the job's
//! `requirements.txt` layered on top, or a virtualenv over an interpreter the operator chose.
//!
//! An environment cannot be moved once built (installers write its absolute path into the scripts
//! they install), so instead of building elsewhere and renaming, a build happens in place under an
//! exclusive lock (`<name>.lock`) and is marked usable by a `.kiln-ready` file written last. A job
//! that finds the marker uses the environment without locking; one that finds a directory without
//! the marker (a build that crashed) removes it and builds again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::launch::{self, Exit, Finished, Spawn, stop_requested};
use crate::logs::LogSink;

const READY: &str = ".kiln-ready";

/// How getting an environment went.
pub enum Outcome {
    Ready(PathBuf),
    /// A build step failed (the toolkit's `InstallRequirementsError`).
    Failed {
        exit: Exit,
        stderr_tail: Vec<String>,
        command: String,
    },
    Stopped,
}

/// The cache key of some bytes (a requirements file, an environment's description): SHA-256 hex.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where builds run and what they may see.
pub trait Runner: Sync {
    /// `spawn` as it must run (in the job's sandbox, with `read_only` and `read_write` shown besides
    /// what the sandbox always shows; or unchanged where there is no sandbox).
    fn wrap(&self, spawn: Spawn, read_only: &[PathBuf], read_write: &[PathBuf]) -> Result<Spawn, String>;
}

/// Runs spawns as they are (the `kiln environments` command, and hosts without a sandbox).
pub struct Direct;

impl Runner for Direct {
    fn wrap(&self, spawn: Spawn, _: &[PathBuf], _: &[PathBuf]) -> Result<Spawn, String> {
        Ok(spawn)
    }
}

/// One build: the environment's directory name under `<cache_dir>/envs/`, the steps that create
/// it there, and what the steps must see read-only (interpreters).
pub struct Build {
    pub name: String,
    /// What the log says is being built.
    pub what: String,
    pub steps: Vec<Spawn>,
    pub read_only: Vec<PathBuf>,
    /// More writable directories the steps need (an installer's download cache).
    pub read_write: Vec<PathBuf>,
}

/// The directory of `name` under the cache (not built).
pub fn env_dir(cache_dir: &Path, name: &str) -> PathBuf {
    cache_dir.join("envs").join(name)
}

/// Returns the environment `build.name`, running `build.steps` first if the cache does not have it.
pub async fn ensure(
    build: Build,
    cache_dir: &Path,
    sink: &LogSink,
    stop: &watch::Receiver<bool>,
    grace: Duration,
    runner: &dyn Runner,
) -> Result<Outcome, String> {
    let envs = cache_dir.join("envs");
    std::fs::create_dir_all(&envs).map_err(|e| {
        format!(
            "cannot create the environment cache {}: {e}; check the cache directory's permissions",
            envs.display()
        )
    })?;
    let dir = envs.join(&build.name);
    if dir.join(READY).is_file() {
        sink.line(format!(
            "[kiln agent] {}: using the cached environment {}",
            build.what,
            dir.display()
        ));
        return Ok(Outcome::Ready(dir));
    }

    let lock_path = envs.join(format!("{}.lock", build.name));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let mut stop_wait = stop.clone();
    let mut said_waiting = false;
    let mut pending = file;
    // Held until this function returns; another job's build finishing releases it.
    let _lock = loop {
        match Flock::lock(pending, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => break lock,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                pending = f;
                if !said_waiting {
                    sink.line(format!(
                        "[kiln agent] {}: another job is building the same environment; waiting for it",
                        build.what
                    ));
                    said_waiting = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {},
                    () = stop_requested(&mut stop_wait) => return Ok(Outcome::Stopped),
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
                "cannot remove the unfinished environment {}: {e}; remove it by hand",
                dir.display()
            )
        })?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    sink.line(format!(
        "[kiln agent] {}: building the environment {}",
        build.what,
        dir.display()
    ));
    let started = std::time::Instant::now();
    let mut writable = vec![dir.clone()];
    for extra in &build.read_write {
        std::fs::create_dir_all(extra).map_err(|e| format!("cannot create {}: {e}", extra.display()))?;
        writable.push(extra.clone());
    }
    for step in build.steps {
        let command = step.display();
        let step = runner.wrap(step, &build.read_only, &writable)?;
        let mut stop = stop.clone();
        let result = launch::run(&step, sink, &mut stop, grace).await;
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
    std::fs::write(dir.join(READY), &build.name)
        .map_err(|e| format!("cannot mark the environment {} ready: {e}", dir.display()))?;
    sink.line(format!(
        "[kiln agent] {}: environment built in {:.1} s",
        build.what,
        started.elapsed().as_secs_f64()
    ));
    Ok(Outcome::Ready(dir))
}

/// Whether `dir` holds a finished environment.
pub fn is_ready(dir: &Path) -> bool {
    dir.join(READY).is_file()
}

/// The environment variables a build step runs with: the job's, plus quiet installers.
pub fn build_env(env: &BTreeMap<String, String>, cache_dir: &Path) -> BTreeMap<String, String> {
    let mut e = env.clone();
    e.insert("PIP_DISABLE_PIP_VERSION_CHECK".into(), "1".into());
    e.insert("UV_CACHE_DIR".into(), cache_dir.join("uv").display().to_string());
    // uv would fetch Python builds from GitHub; kiln uses the interpreters the machine has.
    e.insert("UV_PYTHON_DOWNLOADS".into(), "never".into());
    e.insert("UV_NO_PROGRESS".into(), "1".into());
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            content_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
