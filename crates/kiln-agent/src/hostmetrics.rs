//! Host metrics as SageMaker publishes them for a training host (`CPUUtilization`,
//! `MemoryUtilization`, `DiskUtilization`), measured on what the job runs rather than on the whole
//! machine, which other jobs share: the algorithm's process and its descendants (and whatever
//! stays in its process group), read from `/proc`.
//!
//! - CPU: the tree's `utime + stime` since the previous sample over the wall time between them,
//!   in percent of one core (so up to 100 × cores, as CloudWatch shows it). A process seen for the
//!   first time counts all its time (it started after the previous sample, or was not yet in the
//!   tree); one that ended between two samples loses its last interval.
//! - Memory: the tree's resident set over the host's memory (the instance type's, or the
//!   machine's when that is smaller).
//! - Disk: the used share of the file system that holds the job's directory, as `df` shows it.
//!
//! No GPU metrics: kiln does not read GPU counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use kiln_api::agent::HostSample;

/// Clock ticks per second of `/proc/<pid>/stat` times, when `sysconf` does not say.
const DEFAULT_TICKS: u64 = 100;
/// Page size of `/proc/<pid>/stat`'s resident set, when `sysconf` does not say.
const DEFAULT_PAGE: u64 = 4096;

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    /// Start time in ticks since boot: with the pid, it names the process (pids are reused).
    start: u64,
    /// `utime + stime`, in ticks.
    cpu: u64,
    /// Resident set, in pages.
    rss: u64,
}

/// Parses `/proc/<pid>/stat` (`pid (comm) state ppid pgrp ...`; comm may hold spaces and
/// parentheses, so fields are counted after its last `)`).
fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    let (_, after) = stat.rsplit_once(')')?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
    Some(Proc {
        pid,
        ppid: i32::try_from(num(1)?).ok()?,
        pgrp: i32::try_from(num(2)?).ok()?,
        cpu: u64::try_from(num(11)?).ok()? + u64::try_from(num(12)?).ok()?,
        start: u64::try_from(num(19)?).ok()?,
        rss: u64::try_from(num(21)?.max(0)).ok()?,
    })
}

fn read_procs() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            parse_stat(pid, &stat)
        })
        .collect()
}

/// The processes of `root`'s tree: itself, its descendants, and its process group.
fn tree_of(root: i32, procs: &[Proc]) -> Vec<&Proc> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut descendants: HashSet<i32> = HashSet::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if descendants.insert(pid)
            && let Some(kids) = children.get(&pid)
        {
            todo.extend(kids);
        }
    }
    procs
        .iter()
        .filter(|p| p.pgrp == root || descendants.contains(&p.pid))
        .collect()
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The used share of the file system holding `dir`, in percent (`df`'s: used over used + what
/// unprivileged users may still take).
fn disk_percent(dir: &std::path::Path) -> Option<f64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    let used = s.blocks().saturating_sub(s.blocks_free()) as f64;
    let total = used + s.blocks_available() as f64;
    (total > 0.0).then(|| 100.0 * used / total)
}

fn sysconf(var: nix::unistd::SysconfVar, default: u64) -> u64 {
    match nix::unistd::sysconf(var) {
        Ok(Some(v)) if v > 0 => v as u64,
        _ => default,
    }
}

/// CPU ticks by process (pid, start time).
type CpuTimes = HashMap<(i32, u64), u64>;

/// One reading: the root it was of, when, and its processes' CPU ticks.
struct Reading {
    root: i32,
    at: Instant,
    cpu: CpuTimes,
}

/// Samples one host's metrics; keeps the previous sample's CPU times for the next one's deltas.
pub struct Sampler {
    /// The job's directory on this host, for `DiskUtilization`.
    dir: PathBuf,
    memory_bytes: u64,
    ticks: u64,
    page: u64,
    last: Option<Reading>,
}

impl Sampler {
    /// A sampler for a host whose job lives in `dir`, with `memory_bytes` of memory (its instance
    /// type's; the machine's when absent or smaller).
    pub fn new(dir: PathBuf, memory_bytes: Option<u64>) -> Sampler {
        let machine = machine_memory();
        let memory_bytes = match (memory_bytes, machine) {
            (Some(a), Some(m)) => a.min(m),
            (a, m) => a.or(m).unwrap_or(0),
        };
        Sampler {
            dir,
            memory_bytes,
            ticks: sysconf(nix::unistd::SysconfVar::CLK_TCK, DEFAULT_TICKS),
            page: sysconf(nix::unistd::SysconfVar::PAGE_SIZE, DEFAULT_PAGE),
            last: None,
        }
    }

    /// Samples the tree of `root`. The first call for a root only takes the CPU baseline (a rate
    /// needs two readings) and answers `None`.
    pub fn sample(&mut self, root: i32) -> Option<HostSample> {
        let now = Instant::now();
        let procs = read_procs();
        let tree = tree_of(root, &procs);
        let times: CpuTimes = tree.iter().map(|p| ((p.pid, p.start), p.cpu)).collect();
        let previous = self.last.replace(Reading {
            root,
            at: now,
            cpu: times.clone(),
        })?;
        if previous.root != root {
            return None;
        }
        let prev = previous.cpu;
        let wall = now.duration_since(previous.at).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        let ticks: u64 = times
            .iter()
            .map(|(k, cpu)| cpu.saturating_sub(prev.get(k).copied().unwrap_or(0)))
            .sum();
        let mut values = BTreeMap::new();
        values.insert(
            "CPUUtilization".to_string(),
            100.0 * ticks as f64 / self.ticks as f64 / wall,
        );
        if self.memory_bytes > 0 {
            let rss: u64 = tree.iter().map(|p| p.rss * self.page).sum();
            values.insert(
                "MemoryUtilization".to_string(),
                100.0 * rss as f64 / self.memory_bytes as f64,
            );
        }
        if let Some(d) = disk_percent(&self.dir) {
            values.insert("DiskUtilization".to_string(), d);
        }
        Some(HostSample {
            timestamp_ms: crate::logs::now_ms(),
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgrp: i32) -> Proc {
        Proc {
            pid,
            ppid,
            pgrp,
            start: 1,
            cpu: 0,
            rss: 0,
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_command() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 1 0 98765 1000 25 \
                    18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let got = parse_stat(4242, stat).unwrap();
        assert_eq!(
            got,
            Proc {
                pid: 4242,
                ppid: 1,
                pgrp: 4242,
                start: 98765,
                cpu: 10,
                rss: 25
            }
        );
        assert_eq!(parse_stat(1, "1 (x) S 0"), None);
    }

    #[test]
    fn the_tree_is_descendants_and_the_group() {
        let procs = [
            p(10, 1, 10),
            p(11, 10, 10),
            p(12, 11, 12), // left the group, still a descendant
            p(13, 1, 10),  // reparented, still in the group
            p(20, 1, 20),  // someone else
        ];
        let mut pids: Vec<i32> = tree_of(10, &procs).iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![10, 11, 12, 13]);
    }

    #[test]
    fn a_busy_process_shows_cpu_and_memory() {
        let dir = std::env::temp_dir();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let root = i32::try_from(child.id()).unwrap();
        let mut s = Sampler::new(dir, None);
        assert!(s.sample(root).is_none(), "the first sample is the baseline");
        std::thread::sleep(std::time::Duration::from_millis(700));
        let got = s.sample(root);
        let _ = child.kill();
        let _ = child.wait();
        let got = got.unwrap();
        let cpu = got.values["CPUUtilization"];
        assert!(cpu > 5.0 && cpu < 150.0, "a spinning shell uses up to one core: {cpu}");
        assert!(got.values["MemoryUtilization"] > 0.0);
        let disk = got.values["DiskUtilization"];
        assert!((0.0..=100.0).contains(&disk), "{disk}");
    }
}
