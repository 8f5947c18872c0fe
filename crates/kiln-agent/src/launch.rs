//! Running the algorithm: a child process in its own process group, its stdout and stderr cut into
//! lines for the log stream, and the stop sequence (SIGTERM to the group, SIGKILL after the grace
//! period). When the main process ends, whatever it left running in its group is killed, as a
//! container's end would.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use crate::logs::{LineSplitter, LogSink, now_ms};

/// How long the output pipes may stay open, with nothing more coming, after the process group is
/// gone (a grandchild that left the group may hold them). Output still arriving is read to its end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Stderr lines kept for the toolkit's `ErrorMessage`.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// Where the process group of the algorithm now running is recorded (`<pgid> <start ticks>`), for
/// the executor to kill it should this agent die first (set once by the agent; see
/// [`record_groups_in`]).
static GROUP_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The process now running the algorithm (0 when none), whose tree the host metrics sample.
static RUNNING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The process now running the algorithm, if one runs.
pub fn running() -> Option<i32> {
    Some(RUNNING.load(std::sync::atomic::Ordering::Relaxed)).filter(|p| *p > 0)
}

/// Records every process group this agent starts in `path` (the host's `algorithm.pid`).
pub fn record_groups_in(path: PathBuf) {
    let _ = GROUP_FILE.set(path);
}

/// Process start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    stat.rsplit_once(')')
        .and_then(|(_, after)| after.split_whitespace().nth(19))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// A process to run.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment (nothing else is inherited).
    pub env: BTreeMap<String, String>,
}

impl Spawn {
    /// The command line, for messages.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The exit code, if it exited rather than being killed.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(c),
            Exit::Signal(_) => None,
        }
    }

    /// Python's `Popen.returncode`: the code, or minus the signal number.
    pub fn returncode(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => -s,
        }
    }
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub exit: Exit,
    /// Whether it ended because a stop was requested.
    pub stopped: bool,
    /// The last lines it wrote to stderr.
    pub stderr_tail: Vec<String>,
}

/// Why a process could not be run at all.
#[derive(Debug, Clone)]
pub struct SpawnError(pub String);

/// Resolves once a stop has been requested (never, if the requester is gone).
pub async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    // ESRCH (the group is already gone) is the expected answer once everything has exited.
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// The processes of group `pgid` with their command names, from `/proc`.
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let pgrp = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(pgid) {
            out.push((pid, comm));
        }
    }
    out
}

/// Asks the algorithm to stop: SIGTERM to its process group, except bubblewrap's own processes,
/// which would die of it at once and take the sandbox down with them (SIGKILL) before the
/// algorithm's handler had its grace period.
fn terminate_group(pgid: i32) {
    let members = group_members(pgid);
    let targets: Vec<i32> = members
        .iter()
        .filter(|(_, comm)| comm != "bwrap")
        .map(|(pid, _)| *pid)
        .collect();
    if members.iter().all(|(_, comm)| comm != "bwrap") {
        signal_group(pgid, Signal::SIGTERM);
        return;
    }
    for pid in targets {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Runs `spawn` to its end, its output lines into `sink`; on a stop request, SIGTERM to its process
/// group, then SIGKILL after `grace`.
pub async fn run(
    spawn: &Spawn,
    sink: &LogSink,
    stop: &mut watch::Receiver<bool>,
    grace: Duration,
) -> Result<Finished, SpawnError> {
    let mut cmd = tokio::process::Command::new(&spawn.program);
    cmd.args(&spawn.args)
        .current_dir(&spawn.cwd)
        .env_clear()
        .envs(&spawn.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // The algorithm dies with its agent (a SIGKILLed agent must not leave it training while the job
    // is failed and its capacity given away); what it started in its group is killed by the
    // executor from the group recorded below.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        SpawnError(format!(
            "cannot start `{}` in {}: {e}",
            spawn.display(),
            spawn.cwd.display()
        ))
    })?;
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return Err(SpawnError(format!(
            "`{}` exited before it could be watched",
            spawn.display()
        )));
    };
    if let Some(path) = GROUP_FILE.get() {
        let _ = std::fs::write(path, format!("{pgid} {}\n", start_ticks(pgid)));
    }
    RUNNING.store(pgid, std::sync::atomic::Ordering::Relaxed);
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    // Bytes the readers have taken from the pipes, to tell a slow drain from a held pipe.
    let read = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, sink.clone(), None, read.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, sink.clone(), Some(tail.clone()), read.clone())));
    }

    let mut stopped = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = stop_requested(stop) => {
            stopped = true;
            terminate_group(pgid);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pgid, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // Whatever the main process left behind in its group ends with it.
    signal_group(pgid, Signal::SIGKILL);
    RUNNING.store(0, std::sync::atomic::Ordering::Relaxed);
    if !drain(readers, &read).await {
        sink.line(format!(
            "[kiln agent] stopped reading the output of `{}` {}s after it ended: a process that left \
             its process group still holds it open",
            spawn.display(),
            DRAIN_TIMEOUT.as_secs()
        ));
    }
    let exit = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        },
        Err(e) => {
            sink.line(format!("[kiln agent] lost track of `{}`: {e}", spawn.display()));
            Exit::Code(-1)
        }
    };
    let stderr_tail = tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
    Ok(Finished {
        exit,
        stopped,
        stderr_tail,
    })
}

/// Waits for the output readers to reach the end of their pipes, for as long as output keeps
/// coming and then [`DRAIN_TIMEOUT`] more; aborts the rest. Whether every reader ended.
async fn drain(mut readers: Vec<tokio::task::JoinHandle<()>>, read: &AtomicU64) -> bool {
    const STEP: Duration = Duration::from_millis(250);
    let mut seen = read.load(Ordering::Relaxed);
    let mut quiet = Duration::ZERO;
    for i in 0..readers.len() {
        loop {
            if tokio::time::timeout(STEP, &mut readers[i]).await.is_ok() {
                break;
            }
            let now = read.load(Ordering::Relaxed);
            quiet = if now == seen { quiet + STEP } else { Duration::ZERO };
            seen = now;
            if quiet >= DRAIN_TIMEOUT {
                readers[i..].iter().for_each(|r| r.abort());
                return false;
            }
        }
    }
    true
}

/// Copies one output stream into the sink line by line, counting the bytes in `read`.
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    sink: LogSink,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    read: Arc<AtomicU64>,
) {
    let mut split = LineSplitter::new();
    let mut buf = vec![0u8; 64 * 1024];
    let emit = |line: String| {
        if let Some(tail) = &tail
            && let Ok(mut t) = tail.lock()
        {
            t.push_back(line.chars().take(STDERR_TAIL_BYTES).collect());
            while t.len() > STDERR_TAIL_LINES
                || (t.len() > 1 && t.iter().map(String::len).sum::<usize>() > STDERR_TAIL_BYTES)
            {
                t.pop_front();
            }
        }
        sink.push(now_ms(), line);
    };
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                read.fetch_add(n as u64, Ordering::Relaxed);
                split.push(&buf[..n]).into_iter().for_each(&emit);
            }
        }
    }
    if let Some(line) = split.finish() {
        emit(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Spawn {
        Spawn {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]),
        }
    }

    /// Runs a main process that starts `escaped` in a session (and group) of its own, waits until
    /// it is there (or the group's SIGKILL at the main process's end would take it too), and
    /// ends printing `main-done`.
    async fn run_leaving(name: &str, escaped: &str) -> (Finished, Vec<String>, Duration) {
        let ready = std::env::temp_dir().join(format!("kiln-launch-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let ready = ready.display();
        run_sh(&format!(
            "setsid sh -c 'touch {ready}; {escaped}' & while [ ! -e {ready} ]; do sleep 0.05; done; rm -f {ready}; echo main-done"
        ))
        .await
    }

    async fn run_sh(script: &str) -> (Finished, Vec<String>, Duration) {
        let sink = LogSink::new(1 << 30, false);
        let (_tx, mut stop) = watch::channel(false);
        let started = std::time::Instant::now();
        let f = run(&sh(script), &sink, &mut stop, Duration::from_secs(5))
            .await
            .unwrap();
        let took = started.elapsed();
        let lines = sink
            .take(100_000, 1 << 30)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        (f, lines, took)
    }

    #[tokio::test]
    async fn output_still_coming_after_the_exit_is_read_to_its_end() {
        // The main process ends at once; a process that left its group writes for 7 s more, past
        // the drain's 5 s of quiet, and every line of it arrives.
        let (f, lines, _) = run_leaving("writer", "for i in 1 2 3 4 5 6 7; do echo late-$i; sleep 1; done").await;
        assert!(f.exit.success());
        assert!(lines.contains(&"main-done".to_string()), "{lines:?}");
        for i in 1..=7 {
            assert!(lines.contains(&format!("late-{i}")), "late-{i} missing: {lines:?}");
        }
        assert!(!lines.iter().any(|l| l.contains("stopped reading")), "{lines:?}");
    }

    #[tokio::test]
    async fn a_pipe_held_open_in_silence_is_let_go_and_said_so() {
        let (f, lines, took) = run_leaving("holder", "exec sleep 8").await;
        assert!(f.exit.success());
        assert!(took < Duration::from_secs(15), "took {took:?}");
        assert_eq!(lines[0], "main-done");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("stopped reading the output") && l.contains("still holds it open")),
            "{lines:?}"
        );
    }
}
