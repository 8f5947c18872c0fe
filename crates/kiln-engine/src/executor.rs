//! Executors place one `kiln agent` per host of a job. The local executor runs agents as child
//! processes of this machine; a cluster executor (Slurm) submits them to a scheduler.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One host of a job to start.
#[derive(Debug, Clone)]
pub struct HostLaunch {
    /// Control plane URL the agent reports to.
    pub server: String,
    pub account: String,
    pub job: String,
    pub host: String,
    pub token: String,
    pub work_dir: PathBuf,
}

/// How to find a placed host again, also after a restart of the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHandle {
    pub pid: u32,
    /// Process start time in clock ticks since boot (`/proc/<pid>/stat` field 22), which tells a
    /// reused pid from the original process.
    pub start_ticks: u64,
    /// Where the agent's own output goes.
    pub agent_log: String,
}

/// Places agents on hosts.
#[async_trait]
pub trait Executor: Send + Sync {
    /// A short name for messages (`local`, `none`).
    fn name(&self) -> &str;
    /// Whether this executor runs anything at all.
    fn runs_jobs(&self) -> bool {
        true
    }
    /// Starts the agent of one host.
    async fn launch(&self, launch: &HostLaunch) -> Result<HostHandle, String>;
    /// Whether the agent is still running.
    fn alive(&self, handle: &HostHandle) -> bool;
    /// Kills the agent and its algorithm (the last resort; agents normally stop on a directive).
    fn kill(&self, handle: &HostHandle);
    /// Frees what the hosts of an ended job left on disk (their `opt/ml` trees with staged data).
    fn cleanup(&self, _work_dir: &Path, _job: &str, _hosts: &[String]) {}
}

/// Runs agents as local processes: `<kiln> agent ...`, each in its own process group so that a
/// restart of the control plane does not take running jobs down.
pub struct LocalExecutor {
    /// The `kiln` binary to run.
    pub kiln_bin: PathBuf,
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the closing parenthesis are fixed.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        "local"
    }

    async fn launch(&self, l: &HostLaunch) -> Result<HostHandle, String> {
        let host_dir = l.work_dir.join(&l.job).join(&l.host);
        std::fs::create_dir_all(&host_dir).map_err(|e| format!("cannot create {}: {e}", host_dir.display()))?;
        let log_path = host_dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut cmd = tokio::process::Command::new(&self.kiln_bin);
        cmd.arg("agent")
            .args([
                "--server",
                &l.server,
                "--account",
                &l.account,
                "--job",
                &l.job,
                "--host",
                &l.host,
            ])
            .arg("--work-dir")
            .arg(&l.work_dir)
            .env("KILN_AGENT_TOKEN", &l.token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.kiln_bin.display()))?;
        let pid = child.id().ok_or("the agent exited at once")?;
        // Reap the child when it exits so it does not linger as a zombie; the engine learns how the
        // host ended from the agent's own report.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        Ok(HostHandle {
            pid,
            start_ticks: start_ticks(pid).unwrap_or(0),
            agent_log: log_path.display().to_string(),
        })
    }

    fn alive(&self, h: &HostHandle) -> bool {
        match start_ticks(h.pid) {
            Some(t) => h.start_ticks == 0 || t == h.start_ticks,
            None => false,
        }
    }

    fn cleanup(&self, work_dir: &Path, job: &str, hosts: &[String]) {
        let dirs: Vec<PathBuf> = hosts.iter().map(|h| work_dir.join(job).join(h).join("opt")).collect();
        // The agent reports before it exits; give it a moment to finish with its tree. The host's
        // agent.log stays for reference.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            for d in dirs {
                let _ = tokio::fs::remove_dir_all(&d).await;
            }
        });
    }

    fn kill(&self, h: &HostHandle) {
        if self.alive(h) {
            // The agent leads its own process group. SIGTERM first: the agent then stops its
            // algorithm (which runs in a group of its own); SIGKILL whatever is left a bit later.
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            if let Ok(pid) = i32::try_from(h.pid) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                });
            }
        }
    }
}

/// An executor that runs nothing: jobs wait in `Starting` (for API-only use and tests).
pub struct NoExecutor;

#[async_trait]
impl Executor for NoExecutor {
    fn name(&self) -> &str {
        "none"
    }
    fn runs_jobs(&self) -> bool {
        false
    }
    async fn launch(&self, _: &HostLaunch) -> Result<HostHandle, String> {
        Err("no executor is configured".into())
    }
    fn alive(&self, _: &HostHandle) -> bool {
        false
    }
    fn kill(&self, _: &HostHandle) {}
}
