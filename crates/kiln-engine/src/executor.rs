//! The executor seam: what puts a job's hosts somewhere to run. An executor launches a whole job
//! (one `kiln agent` per host) and answers with an opaque handle, which the engine stores and later
//! hands back to ask which hosts are gone, to kill them and to clean up, in batches where that
//! saves round trips (a cluster is asked about many jobs at once). Capacity comes from the executor.
//!
//! `local` runs agents as child processes of this machine; a cluster executor (Slurm) submits one
//! allocation per job. Every executor starts the same agent, which reports to the control plane over
//! HTTP, so the engine treats them all alike.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::capacity::Resources;

/// One host of a job to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// `algo-N`.
    pub host: String,
    pub instance_type: String,
    /// What the instance type asks for, where kiln knows it.
    pub resources: Option<Resources>,
}

/// A whole job to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLaunch {
    /// Control plane URL the agents report to.
    pub server: String,
    pub account: String,
    pub job: String,
    /// The training job's ARN (a cluster shows it with its own job).
    pub arn: String,
    pub hosts: Vec<HostSpec>,
    /// The agents' bearer token (also tells a relaunch of the same placement from another job).
    pub token: String,
    /// Hosts' trees go under `<work_dir>/<account>/<placement>/<job>/<host>/` ([`launch_subdir`]).
    pub work_dir: PathBuf,
    /// `MaxRuntimeInSeconds` (a cluster may bound the allocation by it).
    pub max_runtime_seconds: i64,
    /// A managed spot job: a cluster may preempt or requeue its allocation, which kiln takes as a
    /// spot interruption (other jobs' allocations are not requeueable: kiln owns their retries).
    pub spot: bool,
    /// `KeepAlivePeriodInSeconds` (0 without a warm pool): a cluster keeps the allocation that long
    /// after the job for a job reusing its warm pool.
    pub keep_alive_seconds: i64,
}

/// What an executor knows of one launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchState {
    /// Why the hosts have not started yet, if they wait in the executor's own queue (a cluster's
    /// pending reason: `Priority`, `Resources`, ...). Shown in the job's `Starting` message.
    pub waiting: Option<String>,
    /// Hosts that no longer run, each with what is known of why (e.g. the node that failed).
    pub gone: Vec<(String, String)>,
    /// The cluster took the allocation back (preempted or requeued it), in words: a spot job's
    /// interruption; for other jobs its hosts are lost, a platform failure.
    pub preempted: Option<String>,
}

/// "2 x ml.m5.large + 1 x ml.g5.xlarge", instance types in the order hosts first name them.
pub fn describe_hosts(hosts: &[HostSpec]) -> String {
    describe_types(hosts.iter().map(|h| h.instance_type.as_str()))
}

/// [`describe_hosts`] over instance types, one per host.
pub fn describe_types<'a>(types: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in types {
        match counts.iter_mut().find(|(x, _)| *x == t) {
            Some(c) => c.1 += 1,
            None => counts.push((t, 1)),
        }
    }
    counts
        .iter()
        .map(|(t, n)| format!("{n} x {t}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Puts jobs' hosts somewhere to run.
#[async_trait]
pub trait Executor: Send + Sync {
    /// A short name for messages (`local`, `none`).
    fn name(&self) -> &str;
    /// Whether it runs anything at all (if not, jobs wait in `Starting`).
    fn runs_jobs(&self) -> bool {
        true
    }
    /// What it can run at once.
    async fn capacity(&self) -> Option<Resources>;
    /// Whether a job with these hosts could ever run here, were everything free; if not, the
    /// message of the `ResourceLimitExceeded` that refuses it at create time. By default the sum
    /// of what the hosts need is compared with [`Executor::capacity`] (a cluster checks node by
    /// node instead). A host of unknown size, or unknown capacity, is given the benefit of the doubt.
    async fn fits(&self, hosts: &[HostSpec]) -> Result<(), String> {
        let Some(capacity) = self.capacity().await else {
            return Ok(());
        };
        let mut need = Resources::ZERO;
        for h in hosts {
            match h.resources {
                Some(r) => need = need.plus(r),
                None => return Ok(()),
            }
        }
        if capacity.holds(&need) {
            return Ok(());
        }
        Err(format!(
            "The training job needs {} but this kiln's executor ({}) can never provide that: it needs {}. \
             Use a smaller instance type or count, or raise [capacity] in kiln.toml.",
            describe_hosts(hosts),
            self.name(),
            capacity.shortfall(&need)
        ))
    }
    /// What a host of `instance_type` gets to use here (its `SM_NUM_CPUS` and `SM_NUM_GPUS`): the
    /// instance type's sizes by default; a cluster says what it allocates.
    fn host_resources(&self, instance_type: &str) -> Option<Resources> {
        crate::capacity::instance_resources(instance_type)
    }
    /// Whether it queues jobs itself (a cluster's scheduler): then kiln hands every job over at once
    /// and shows the executor's pending reason, instead of holding jobs until its own count of free
    /// capacity has room.
    fn queues(&self) -> bool {
        false
    }
    /// Starts every host of `job` and returns the handle that finds them again. Launching the same
    /// placement again (same job and token) while its hosts run returns them instead of starting
    /// more, so a launch interrupted by a crash can be redone. On error nothing of the job runs.
    async fn launch(&self, job: &JobLaunch) -> Result<String, String>;
    /// For each handle (in order), what became of the launch: waiting in a queue, hosts gone.
    async fn poll(&self, handles: &[&str]) -> Vec<LaunchState>;
    /// Kills every host of a launch (the last resort: agents normally stop on a directive).
    async fn kill(&self, handle: &str);
    /// Frees what the hosts left behind (it may finish in the background, once the agents are
    /// done with their files); `keep_trees` keeps their files for inspection.
    async fn cleanup(&self, handle: &str, keep_trees: bool);
    /// Whether a warm pool keeps its launch's allocation (a cluster's job), so that a job reusing
    /// the pool runs its hosts there ([`Executor::launch_in`]) instead of queueing for new ones.
    /// Executors that start hosts at once keep only the pool's cache and reserved capacity.
    fn holds_pools(&self) -> bool {
        false
    }
    /// Starts every host of `job` in the allocation still held by `pool`, the launch of the job
    /// whose warm pool `job` took over; the handle of the new launch. An error (the allocation is
    /// gone, or cannot be kept long enough) leaves nothing started: the engine launches anew.
    async fn launch_in(&self, pool: &str, job: &JobLaunch) -> Result<String, String> {
        let _ = (pool, job);
        Err(format!(
            "the {} executor does not keep warm pools' allocations",
            self.name()
        ))
    }
    /// What frees an ended launch whose allocation a warm pool keeps for the next job: its hosts'
    /// files, not the allocation ([`Executor::cleanup`] by default).
    async fn cleanup_retained(&self, handle: &str, keep_trees: bool) {
        self.cleanup(handle, keep_trees).await
    }
    /// The allocation a launch runs in (a cluster's job id), which a kept allocation names when it
    /// asks for the next job of its warm pool.
    fn allocation(&self, handle: &str) -> Option<String> {
        let _ = handle;
        None
    }
}

/// Where one launch's trees live under the work directory: `<account>/<placement>` (a fingerprint
/// of the agents' token, new for every placement). Jobs of two accounts with the same name, a job
/// deleted and created again under its name, and the attempts of one job never share a tree, nor
/// does one's delayed cleanup reach another's.
pub fn launch_subdir(job: &JobLaunch) -> PathBuf {
    placement_subdir(&job.account, &job.token)
}

/// [`launch_subdir`] of the placement of `account` with agent token `token`.
pub fn placement_subdir(account: &str, token: &str) -> PathBuf {
    PathBuf::from(account).join(fingerprint(token))
}

/// One agent started by the local executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LocalHost {
    host: String,
    /// The host's directory, `<work_dir>/<account>/<placement>/<job>/<host>`.
    dir: PathBuf,
    pid: u32,
    /// Process start time in clock ticks since boot (`/proc/<pid>/stat` field 22), which tells a
    /// reused pid from the original process.
    start_ticks: u64,
}

/// The local executor's handle: its agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LocalHandle {
    hosts: Vec<LocalHost>,
}

/// Runs agents as local processes: `<kiln> agent ...`, each in its own process group so that a
/// restart of the control plane does not take running jobs down.
pub struct LocalExecutor {
    /// The `kiln` binary to run.
    pub kiln_bin: PathBuf,
    /// What this machine runs at once (`[capacity]`).
    pub capacity: Resources,
}

/// A process's process group and start time in clock ticks since boot (`/proc/<pid>/stat` fields
/// 5 and 22).
fn group_and_start(pid: u32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the closing parenthesis are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn start_ticks(pid: u32) -> Option<u64> {
    group_and_start(pid).map(|(_, ticks)| ticks)
}

fn alive(pid: u32, ticks: u64) -> bool {
    start_ticks(pid).is_some_and(|t| ticks == 0 || t == ticks)
}

/// A short fingerprint of the agents' token, kept beside the pid: a relaunch reuses an agent only
/// if it serves the same placement.
fn fingerprint(token: &str) -> String {
    let h = token.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{h:016x}")
}

/// The agent recorded in `dir/agent.pid` if it is alive and serves `token`.
fn running_agent(dir: &Path, token: &str) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(dir.join("agent.pid")).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let ticks: u64 = parts.next()?.parse().ok()?;
    let print = parts.next()?;
    (print == fingerprint(token) && alive(pid, ticks)).then_some((pid, ticks))
}

fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    use nix::sys::signal::killpg;
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Kills what remains of the process group of the algorithm that the agent of host directory `dir`
/// recorded (`algorithm.pid`: group id and its leader's start time): what a dead agent left behind.
/// Only processes of that group started no earlier than its leader are signalled, so a group id
/// reused later is left alone.
fn kill_algorithm(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("algorithm.pid")) else {
        return;
    };
    let mut parts = text.split_whitespace();
    let (Some(Ok(pgid)), Some(Ok(since))) = (parts.next().map(str::parse::<i32>), parts.next().map(str::parse::<u64>))
    else {
        return;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((group, started)) = group_and_start(pid)
            && group == pgid
            && started >= since
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn parse_handle(handle: &str) -> Option<LocalHandle> {
    serde_json::from_str(handle).ok()
}

impl LocalExecutor {
    async fn launch_host(&self, job: &JobLaunch, host: &HostSpec) -> Result<LocalHost, String> {
        let base = job.work_dir.join(launch_subdir(job));
        let dir = base.join(&job.job).join(&host.host);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if let Some((pid, start_ticks)) = running_agent(&dir, &job.token) {
            return Ok(LocalHost {
                host: host.host.clone(),
                dir,
                pid,
                start_ticks,
            });
        }
        let log_path = dir.join("agent.log");
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
                &job.server,
                "--account",
                &job.account,
                "--job",
                &job.job,
                "--host",
                &host.host,
            ])
            .arg("--work-dir")
            .arg(&base)
            .env("KILN_AGENT_TOKEN", &job.token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.kiln_bin.display()))?;
        let pid = child.id().ok_or("the agent exited at once")?;
        let ticks = start_ticks(pid).unwrap_or(0);
        // Whole or absent, never half-written: a relaunch reads it to find this agent.
        let pid_file = dir.join("agent.pid");
        let partial = dir.join("agent.pid.partial");
        if std::fs::write(&partial, format!("{pid} {ticks} {}\n", fingerprint(&job.token))).is_ok() {
            let _ = std::fs::rename(&partial, &pid_file);
        }
        // Reap the child when it exits so it does not linger as a zombie; the engine learns how the
        // host ended from the agent's own report.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        Ok(LocalHost {
            host: host.host.clone(),
            dir,
            pid,
            start_ticks: ticks,
        })
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        "local"
    }

    async fn capacity(&self) -> Option<Resources> {
        Some(self.capacity)
    }

    async fn launch(&self, job: &JobLaunch) -> Result<String, String> {
        let mut started = Vec::new();
        for host in &job.hosts {
            match self.launch_host(job, host).await {
                Ok(h) => started.push(h),
                Err(e) => {
                    // Nothing of a failed launch keeps running.
                    for h in &started {
                        signal_group(h.pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    return Err(format!("{}: {e}", host.host));
                }
            }
        }
        serde_json::to_string(&LocalHandle { hosts: started }).map_err(|e| e.to_string())
    }

    async fn poll(&self, handles: &[&str]) -> Vec<LaunchState> {
        handles
            .iter()
            .map(|handle| LaunchState {
                waiting: None,
                gone: match parse_handle(handle) {
                    Some(h) => h
                        .hosts
                        .iter()
                        .filter(|a| !alive(a.pid, a.start_ticks))
                        .map(|a| {
                            // Whatever the dead agent's algorithm left running goes with it.
                            kill_algorithm(&a.dir);
                            (
                                a.host.clone(),
                                format!("its agent exited (its log: {})", a.dir.join("agent.log").display()),
                            )
                        })
                        .collect(),
                    None => Vec::new(),
                },
                preempted: None,
            })
            .collect()
    }

    async fn kill(&self, handle: &str) {
        let Some(h) = parse_handle(handle) else {
            return;
        };
        for a in h.hosts.iter().filter(|a| alive(a.pid, a.start_ticks)) {
            // The agent leads its own process group. SIGTERM first: the agent then stops its
            // algorithm (which runs in a group of its own); SIGKILL whatever is left a bit later.
            signal_group(a.pid, nix::sys::signal::Signal::SIGTERM);
            let (pid, ticks) = (a.pid, a.start_ticks);
            let dir = a.dir.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                if alive(pid, ticks) {
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
                kill_algorithm(&dir);
            });
        }
    }

    async fn cleanup(&self, handle: &str, keep_trees: bool) {
        let Some(h) = parse_handle(handle) else {
            return;
        };
        if keep_trees {
            return;
        }
        // The agent reports before it exits; give it a moment to finish with its tree. The host's
        // agent.log stays for reference.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            for a in h.hosts {
                let _ = tokio::fs::remove_dir_all(a.dir.join("opt")).await;
            }
        });
    }
}

/// An executor that runs nothing: jobs wait in `Starting` (for API-only use and tests). Jobs are
/// still checked against the capacity it would have.
#[derive(Default)]
pub struct NoExecutor {
    pub capacity: Option<Resources>,
}

#[async_trait]
impl Executor for NoExecutor {
    fn name(&self) -> &str {
        "none"
    }
    fn runs_jobs(&self) -> bool {
        false
    }
    async fn capacity(&self) -> Option<Resources> {
        self.capacity
    }
    async fn launch(&self, _: &JobLaunch) -> Result<String, String> {
        Err("no executor is configured".into())
    }
    async fn poll(&self, handles: &[&str]) -> Vec<LaunchState> {
        vec![LaunchState::default(); handles.len()]
    }
    async fn kill(&self, _: &str) {}
    async fn cleanup(&self, _: &str, _: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_names_its_placement() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let ticks = start_ticks(me).unwrap();
        std::fs::write(
            dir.path().join("agent.pid"),
            format!("{me} {ticks} {}", fingerprint("t1")),
        )
        .unwrap();
        assert_eq!(running_agent(dir.path(), "t1"), Some((me, ticks)));
        // Another placement's token, or a pid reused by another process, is not this agent.
        assert_eq!(running_agent(dir.path(), "t2"), None);
        std::fs::write(
            dir.path().join("agent.pid"),
            format!("{me} {} {}", ticks + 1, fingerprint("t1")),
        )
        .unwrap();
        assert_eq!(running_agent(dir.path(), "t1"), None);
    }
}
