//! Wall-clock totals per training phase, printed to stderr when `KILN_PROFILE` is set. Cheap
//! enough to leave on: a few dozen clock reads per tree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Phases timed during training.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Objective gradients.
    Gradients,
    /// Gradient quantization.
    Quantize,
    /// Histogram building.
    Histograms,
    /// Split finding.
    Splits,
    /// Row partitioning.
    Partition,
    /// Exact leaf values.
    Leaves,
    /// Training-margin update.
    Margins,
    /// Metric evaluation.
    Eval,
    /// Waiting for and exchanging data with the other hosts (distributed training).
    Allreduce,
    /// Writing checkpoints.
    Checkpoint,
}

const NAMES: [&str; 10] = [
    "gradients",
    "quantize",
    "histograms",
    "splits",
    "partition",
    "leaves",
    "margins",
    "eval",
    "allreduce",
    "checkpoint",
];

static NANOS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

/// Runs `f`, adding its wall time to `phase`.
#[inline]
pub fn time<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    NANOS[phase as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    out
}

/// Adds an already measured duration to `phase`.
pub fn add(phase: Phase, d: std::time::Duration) {
    NANOS[phase as usize].fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

/// Time spent waiting for another host's next message to start arriving (distributed
/// training), within the phases that exchange data (`allreduce`, `eval`, and the steps before
/// the first round): the share of a host's time that the others' pace decides.
static WAITING: AtomicU64 = AtomicU64::new(0);

/// Adds time spent waiting for another host.
pub fn add_waiting(d: std::time::Duration) {
    WAITING.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}

/// Prints the totals to stderr if `KILN_PROFILE` is set.
pub fn report() {
    if std::env::var_os("KILN_PROFILE").is_none() {
        return;
    }
    let parts: Vec<String> = NAMES
        .iter()
        .zip(&NANOS)
        .map(|(n, v)| format!("{n} {:.3}s", v.load(Ordering::Relaxed) as f64 / 1e9))
        .collect();
    let total: u64 = NANOS.iter().map(|v| v.load(Ordering::Relaxed)).sum();
    eprintln!("kiln profile: {} (sum {:.3}s)", parts.join(", "), total as f64 / 1e9);
    let waiting = WAITING.load(Ordering::Relaxed);
    if waiting > 0 {
        eprintln!(
            "kiln profile: waiting for other hosts {:.3}s (within the phases above and the steps before the first round)",
            waiting as f64 / 1e9
        );
    }
}

/// When the first [`mark`] was made (the job's start).
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// With `KILN_PROFILE` set, prints how long after the first mark (the job's start) the job
/// reached `what`: where the time before the first round goes.
pub fn mark(what: &str) {
    let start = *START.get_or_init(Instant::now);
    if std::env::var_os("KILN_PROFILE").is_some() {
        eprintln!("kiln profile: {what} at {:.3}s", start.elapsed().as_secs_f64());
    }
}
