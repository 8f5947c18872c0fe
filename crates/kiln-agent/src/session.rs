//! What runs beside the host's work from the assignment to the final report: heartbeats, phase
//! reports (delivered in order, retried until the control plane takes them), the log shipper, and
//! the stop switch that directives and the agent's own SIGTERM/SIGINT flip. None of it blocks the
//! algorithm: while the control plane is away, reports and log lines wait and are retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_api::agent::{Action, Directive, DoneReport, Heartbeat, HostSample, LogBatch, Phase, StatusReport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Timing;
use crate::client::{Backoff, CallError, ControlPlane};
use crate::hostmetrics::Sampler;
use crate::logs::LogSink;

/// The most lines in one `POST .../logs`.
pub const MAX_BATCH_LINES: usize = 1000;
/// About the most bytes of line text in one `POST .../logs` (a single longer line still goes).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The background side of one host's run.
pub struct Session {
    pub cp: ControlPlane,
    pub sink: LogSink,
    stop_tx: watch::Sender<bool>,
    status_tx: Option<mpsc::UnboundedSender<StatusReport>>,
    /// The stop came from a signal to the agent, not from the control plane.
    signalled: Arc<AtomicBool>,
    timing: Timing,
    tasks: Vec<JoinHandle<()>>,
    reporter: Option<JoinHandle<()>>,
    shipper: Option<JoinHandle<()>>,
}

/// Whether the control plane stopped this host for a spot interruption (one agent per process).
static SPOT_INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn apply(d: &Directive, stop: &watch::Sender<bool>) {
    if d.action == Action::Interrupt {
        SPOT_INTERRUPTED.store(true, Ordering::SeqCst);
    }
    if matches!(d.action, Action::Stop | Action::Interrupt) && !*stop.borrow() {
        eprintln!("kiln agent: the control plane asks to stop the job ({:?})", d.action);
        stop.send_replace(true);
    }
}

/// Whether the host was stopped for a spot interruption: no model is uploaded.
pub fn spot_interrupted() -> bool {
    SPOT_INTERRUPTED.load(Ordering::SeqCst)
}

impl Session {
    /// Starts heartbeats, the phase reporter, the log shipper and the signal watch.
    pub fn start(cp: ControlPlane, timing: Timing) -> Session {
        let sink = LogSink::new(timing.log_buffer_bytes, timing.echo_logs);
        let (stop_tx, _) = watch::channel(false);
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();

        let (hb_cp, hb_stop, every) = (cp.clone(), stop_tx.clone(), timing.heartbeat_every);
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Ok(d) = hb_cp.heartbeat(&Heartbeat::default()).await {
                    apply(&d, &hb_stop);
                }
            }
        }));

        let sig_stop = stop_tx.clone();
        let signalled = Arc::new(AtomicBool::new(false));
        let sig_flag = signalled.clone();
        tasks.push(tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                eprintln!("kiln agent: cannot watch SIGTERM/SIGINT; stop the job through the API");
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            eprintln!("kiln agent: stopping the algorithm on a signal");
            if !*sig_stop.borrow() {
                sig_flag.store(true, Ordering::SeqCst);
            }
            sig_stop.send_replace(true);
        }));

        let reporter = tokio::spawn(report_phases(cp.clone(), status_rx, stop_tx.clone()));
        let shipper = tokio::spawn(ship_logs(
            cp.clone(),
            sink.clone(),
            stop_tx.clone(),
            timing.log_flush_every,
        ));
        Session {
            cp,
            sink,
            stop_tx,
            status_tx: Some(status_tx),
            signalled,
            timing,
            tasks,
            reporter: Some(reporter),
            shipper: Some(shipper),
        }
    }

    /// Samples the host's metrics while the algorithm runs (the first sample a second after it
    /// starts, then every `host_metrics_every`) and sends them with extra heartbeats.
    pub fn sample_host(&mut self, sampler: Sampler) {
        let (cp, stop, every) = (self.cp.clone(), self.stop_tx.clone(), self.timing.host_metrics_every);
        self.tasks.push(tokio::spawn(sample_host(cp, sampler, stop, every)));
    }

    /// A receiver that sees the stop switch.
    pub fn stop_rx(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    /// Whether a stop has been requested.
    pub fn stopping(&self) -> bool {
        *self.stop_tx.borrow()
    }

    /// Why the host was interrupted, when the stop came from a signal to the agent (the machine
    /// shutting down, an operator) rather than from the control plane: the job did not finish and
    /// must not look stopped on purpose.
    pub fn interrupted(&self, host: &str) -> Option<String> {
        self.signalled.load(Ordering::SeqCst).then(|| {
            format!(
                "InternalServerError: the kiln agent of {host} received SIGTERM or SIGINT and stopped the algorithm before it finished; start the job again"
            )
        })
    }

    /// Queues a phase report (delivered in order, in the background).
    pub fn status(&self, phase: Phase, message: &str) {
        if let Some(tx) = &self.status_tx {
            let _ = tx.send(StatusReport {
                phase,
                message: Some(message.to_string()),
            });
        }
    }

    /// Delivers what is still queued (phase reports, log lines), then the final report.
    pub async fn finish(mut self, report: DoneReport) -> Result<(), String> {
        self.sink.close();
        self.status_tx = None;
        let limit = self.timing.final_retry_for;
        let started = Instant::now();
        for task in [self.reporter.take(), self.shipper.take()].into_iter().flatten() {
            let left = limit.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, task).await.is_err() {
                eprintln!(
                    "kiln agent: gave up delivering queued reports and log lines after {}s",
                    limit.as_secs()
                );
            }
        }
        let left = limit.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
        let result = self.cp.done(&report, left).await;
        for t in &self.tasks {
            t.abort();
        }
        result
    }
}

/// Samples kept while the control plane is away (an hour at the default interval); older ones go.
const MAX_PENDING_SAMPLES: usize = 720;

async fn sample_host(cp: ControlPlane, mut sampler: Sampler, stop: watch::Sender<bool>, every: Duration) {
    let mut pending: std::collections::VecDeque<HostSample> = std::collections::VecDeque::new();
    let mut root = None;
    loop {
        let Some(pid) = crate::launch::running() else {
            root = None;
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        // A new process: its baseline now, its first rate a second later (a short job still has
        // points), then one sample per interval.
        let first = root != Some(pid);
        root = Some(pid);
        if let Some(sample) = sampler.sample(pid) {
            if pending.len() == MAX_PENDING_SAMPLES {
                pending.pop_front();
            }
            pending.push_back(sample);
            let beat = Heartbeat {
                host_metrics: pending.iter().cloned().collect(),
            };
            match cp.heartbeat(&beat).await {
                Ok(d) => {
                    pending.clear();
                    apply(&d, &stop);
                }
                Err(CallError::Refused(m)) => {
                    eprintln!("kiln agent: the control plane refused host metrics, which are dropped: {m}");
                    pending.clear();
                }
                Err(CallError::Unreachable(_)) => {}
            }
        }
        tokio::time::sleep(if first {
            Duration::from_secs(1).min(every)
        } else {
            every
        })
        .await;
    }
}

async fn report_phases(cp: ControlPlane, mut rx: mpsc::UnboundedReceiver<StatusReport>, stop: watch::Sender<bool>) {
    while let Some(report) = rx.recv().await {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            match cp.status(&report).await {
                Ok(d) => {
                    apply(&d, &stop);
                    break;
                }
                Err(CallError::Refused(m)) => {
                    eprintln!("kiln agent: phase report {:?} refused: {m}", report.phase);
                    break;
                }
                Err(CallError::Unreachable(_)) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }
}

async fn ship_logs(cp: ControlPlane, sink: LogSink, stop: watch::Sender<bool>, flush_every: Duration) {
    let mut last_send: Option<Instant> = None;
    let mut inflight: Option<LogBatch> = None;
    let mut backoff = Backoff::new(Duration::from_secs(2));
    let mut unreachable_since: Option<Instant> = None;
    // Batches are numbered by line so that one re-sent after a lost reply is stored once.
    let sender = {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        format!("{random:016x}{:08x}", std::process::id())
    };
    let mut sent: u64 = 0;
    loop {
        let batch = match inflight.take() {
            Some(b) => b,
            None => {
                if sink.queued() == 0 {
                    if sink.finished() {
                        return;
                    }
                    sink.wait(Duration::from_secs(1)).await;
                    continue;
                }
                // At most one batch per flush interval, unless a full batch is waiting or the
                // run is over.
                if let Some(t) = last_send {
                    let since = t.elapsed();
                    if since < flush_every && sink.queued() < MAX_BATCH_LINES && !sink.is_closed() {
                        tokio::time::sleep(flush_every - since).await;
                    }
                }
                match sink.take(MAX_BATCH_LINES, MAX_BATCH_BYTES) {
                    Some(lines) => {
                        let seq = sent;
                        sent += lines.len() as u64;
                        LogBatch {
                            lines,
                            sender: Some(sender.clone()),
                            seq: Some(seq),
                        }
                    }
                    None => continue,
                }
            }
        };
        match cp.logs(&batch).await {
            Ok(d) => {
                apply(&d, &stop);
                last_send = Some(Instant::now());
                backoff = Backoff::new(Duration::from_secs(2));
                if let Some(t) = unreachable_since.take() {
                    eprintln!(
                        "kiln agent: control plane back after {:.1}s; sending buffered log lines",
                        t.elapsed().as_secs_f64()
                    );
                }
            }
            Err(CallError::Refused(m)) => {
                eprintln!(
                    "kiln agent: the control plane refused {} log lines, which are dropped: {m}",
                    batch.lines.len()
                );
            }
            Err(CallError::Unreachable(m)) => {
                if unreachable_since.is_none() {
                    eprintln!("kiln agent: cannot send log lines, buffering them: {m}");
                    unreachable_since = Some(Instant::now());
                }
                inflight = Some(batch);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
