//! The training-job state machine: `step(job, event, now) -> (job', effects)`, pure.
//!
//! The job is the stored row ([`TrainingJobRow`]); events come from the API, the scheduler and the
//! hosts' agents; effects are what must happen outside the store once the new row is committed
//! (launch the hosts, kill them, free what they left behind, wake the scheduler). The loop around
//! `step` (`Engine::apply`) commits first and performs effects after, so an effect runs once per
//! committed change however often a write is retried; and every effect can be redone after a crash
//! because the committed row says it is due (see `pending` in the scheduler).
//!
//! Secondary statuses and the events that move between them (reference §4–§5):
//!
//! | from | event | to | effects |
//! |---|---|---|---|
//! | Starting | `Waiting` | Starting (message) | |
//! | Starting | `Unrunnable` | Failed | `Ended` |
//! | Starting | `Placed` | Starting ("Preparing the instances") | `Launch` |
//! | Starting | `Launched` | Starting | |
//! | Starting | `Queued` (the executor's queue holds the hosts) | Starting (message) | |
//! | Starting…Uploading | `LaunchFailed`, `HostsLost`, `HostDone` (failure) | Failed once every host ended; until then the others are told to stop | `Kill` (launch failure), `Ended`, `Cleanup` |
//! | Starting…Uploading | `HostPhase` | the slowest host's phase: Downloading → Training → Uploading | |
//! | Uploading | `HostDone` (all, success) | Completed | `Ended`, `Cleanup` |
//! | InProgress | `Stop`, `RuntimeExceeded` | Stopping (Stopped at once if no host was placed) | `Wake` |
//! | Stopping | `HostDone`, `HostsLost` (all) | Stopped / MaxRuntimeExceeded (by stop reason) | `Ended`, `Cleanup` |
//! | Stopping | `StopOverdue` | Stopping | `Kill` |
//! | ended | `Cleaned` | (same) | |
//! | any | `Metrics` | (same; FinalMetricDataList) | |
//! | any | `RulesEvaluated` | (same; rules still `InProgress` take their verdict) | |
//! | any | `Update` | (same; warm pool, profiler) | `DropPool` (keep-alive 0) |
//! | ended (pool Available) | `PoolReused`, `PoolExpired` | (same; pool Reused / Terminated) | `DropPool` (expired) |
//!
//! Anything else is refused: `Stop` of an ended job is an error for the caller; a host report that
//! comes late (a host already done, a job already ended) changes nothing.

use kiln_api::agent::{DoneReport, Phase};
use kiln_api::shapes::{SecondaryStatusTransition, UpdateTrainingJobRequest, WarmPoolStatus};
use kiln_api::status::{RuleEvaluationStatus, SecondaryStatus, StopReason, TrainingJobStatus, WarmPoolResourceStatus};
use kiln_store::{HostRecord, MetricPoint, TrainingJobRow};

use crate::metrics::fold_final;

/// What happened to a training job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `StopTrainingJob`, or the tuner stopping a child.
    Stop,
    /// The scheduler cannot place the job yet; the message says why.
    Waiting { message: String },
    /// The job can never run here (e.g. its image maps to nothing kiln runs): a `ClientError`.
    Unrunnable { reason: String },
    /// The scheduler placed the job: its hosts, the agents' token and the job's S3 key.
    Placed {
        hosts: Vec<HostRecord>,
        agent_token: String,
        access_key: (String, String),
        /// The warm pool the hosts belong to (a job with `KeepAlivePeriodInSeconds`): a new pool's
        /// id, or the id of the pool taken over from `reused_from`.
        warm_pool: Option<String>,
        /// The ended job whose `Available` warm pool these hosts are.
        reused_from: Option<String>,
        /// That job's launch, where the executor keeps a pool's allocation
        /// ([`crate::executor::Executor::holds_pools`]): the hosts start in it.
        pool_launch: Option<String>,
    },
    /// The executor started every host (or queued them); `handle` finds them again.
    Launched { handle: String },
    /// The executor holds the launched hosts in its queue; the message says why.
    Queued { message: String },
    /// The executor could not start the job.
    LaunchFailed { reason: String },
    /// A host reported the phase it is in, and perhaps a message.
    HostPhase {
        host: String,
        phase: Phase,
        message: Option<String>,
    },
    /// A host reported how its part ended.
    HostDone { host: String, report: DoneReport },
    /// The executor no longer runs these hosts, and they never reported.
    HostsLost { hosts: Vec<String>, reason: String },
    /// `MaxRuntimeInSeconds` passed.
    RuntimeExceeded { limit: i64 },
    /// The hosts ignored a stop for longer than the grace period.
    StopOverdue,
    /// Metric values the job's log lines carried.
    Metrics { points: Vec<MetricPoint> },
    /// The executor freed what the hosts left behind.
    Cleaned,
    /// `UpdateTrainingJob`.
    Update(UpdateTrainingJobRequest),
    /// A spot interruption (`kiln jobs interrupt`): stop the hosts, then start a new attempt.
    Interrupt { reason: String },
    /// `MaxWaitTimeInSeconds` (managed spot) passed.
    WaitExceeded { limit: i64 },
    /// The job's `Available` warm pool was taken over by the job `by`.
    PoolReused { by: String },
    /// The job's `Available` warm pool was kept `KeepAlivePeriodInSeconds`: released.
    PoolExpired,
    /// Debugger/Profiler rules reached a verdict: (configuration name, status, details). Only
    /// rules still `InProgress` change.
    RulesEvaluated {
        updates: Vec<(String, RuleEvaluationStatus, Option<String>)>,
    },
}

/// What must happen outside the store after a change is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start every host through the executor, then report `Launched` or `LaunchFailed`.
    Launch,
    /// Ask the executor to kill the hosts.
    Kill,
    /// Free what the hosts left behind (failed jobs keep their trees for inspection), then report
    /// `Cleaned`.
    Cleanup,
    /// Run the scheduler soon (capacity freed, or a job to place).
    Wake,
    /// The job ended: drop what is cached for it; its tuning job has news.
    Ended,
    /// A failed attempt's launch, left behind by a restart: kill what may remain of it and free
    /// it (its trees are kept for inspection).
    Retire(String),
    /// A warm pool was released: delete its cache.
    DropPool(String),
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The outcome of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub job: TrainingJobRow,
    pub effects: Vec<Effect>,
}

/// Whether the machine allows `from → to` (reference §5 flows).
pub fn allowed(from: SecondaryStatus, to: SecondaryStatus) -> bool {
    use SecondaryStatus::*;
    if from.primary().is_terminal() {
        return false;
    }
    match (from, to) {
        (Stopping, Stopped | MaxRuntimeExceeded | MaxWaitTimeExceeded | Failed | Uploading) => true,
        (Stopping, _) => false,
        // Any running phase can be stopped, fail, or be interrupted (spot) / restarted (retry).
        (_, Stopping | Failed | Interrupted | Restarting) => true,
        (Starting | Pending | Restarting | Interrupted, Starting | Pending | Downloading) => true,
        (Downloading, Training) => true,
        (Training, Uploading) => true,
        (Uploading, Completed) => true,
        (Updating, Training | Completed) => true,
        (Training, Updating) => true,
        _ => false,
    }
}

/// A new job in `InProgress/Starting`.
pub fn starting_transition(now: f64) -> SecondaryStatusTransition {
    SecondaryStatusTransition {
        status: SecondaryStatus::Starting,
        start_time: now,
        end_time: None,
        status_message: SecondaryStatus::Starting.default_message().into(),
    }
}

/// Moves the job to `to` with `message` (or the status's default message). Staying in the same
/// status only updates the message, as SageMaker does.
fn transition(job: &mut TrainingJobRow, to: SecondaryStatus, message: Option<&str>, now: f64) -> Result<(), Refused> {
    let from = job.secondary_status;
    let message = message.unwrap_or(to.default_message()).to_string();
    if from == to {
        if let Some(last) = job.transitions.last_mut()
            && last.status_message != message
        {
            last.status_message = message;
            job.last_modified_time = now;
        }
        return Ok(());
    }
    if !allowed(from, to) {
        return Err(Refused(format!(
            "Training job '{}' cannot go from {from} to {to}.",
            job.name
        )));
    }
    if let Some(last) = job.transitions.last_mut() {
        last.end_time = Some(now);
    }
    let terminal = to.primary().is_terminal();
    job.transitions.push(SecondaryStatusTransition {
        status: to,
        start_time: now,
        end_time: terminal.then_some(now),
        status_message: message,
    });
    if to == SecondaryStatus::Downloading && job.training_start_time.is_none() {
        job.training_start_time = Some(now);
    }
    job.status = to.primary();
    job.secondary_status = to;
    job.last_modified_time = now;
    if terminal {
        job.training_end_time = Some(now);
        job.stop_reason = None;
        if let Some(start) = job.training_start_time {
            let secs = ((now - start).round() as i64).max(1);
            job.training_time_in_seconds = Some(secs);
            // A spot job is billed for the time its attempts ran, not the time it waited or was
            // interrupted (so the SDK shows the savings).
            let billable = if job.spec.enable_managed_spot_training == Some(true) {
                let ran = job.run.ran_seconds.unwrap_or(0.0) + attempt_seconds(job, now);
                (ran.round() as i64).clamp(1, secs)
            } else {
                secs
            };
            job.billable_time_in_seconds.get_or_insert(billable);
        }
    }
    Ok(())
}

/// How far a host has come: 0 = not started, 1 = downloading, 2 = training, 3 = uploading, 4 = done.
fn host_rank(h: &HostRecord) -> u8 {
    if h.done.is_some() {
        return 4;
    }
    h.phase.map_or(0, phase_rank)
}

fn phase_rank(p: Phase) -> u8 {
    match p {
        Phase::Downloading => 1,
        Phase::Training => 2,
        Phase::Uploading => 3,
    }
}

fn secondary_rank(s: SecondaryStatus) -> u8 {
    match s {
        SecondaryStatus::Downloading => 1,
        SecondaryStatus::Training => 2,
        SecondaryStatus::Uploading => 3,
        SecondaryStatus::Completed => 4,
        _ => 0,
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A job's `KeepAlivePeriodInSeconds` (0 without one).
pub fn keep_alive(spec: &kiln_api::shapes::CreateTrainingJobRequest) -> i64 {
    spec.resource_config
        .as_ref()
        .and_then(|r| r.keep_alive_period_in_seconds)
        .unwrap_or(0)
}

/// Whether an ended job keeps its hosts as a warm pool (reference §10): after completing, after a
/// stop, or after the algorithm's or the job's own error; not after a platform failure.
fn keeps_pool(job: &TrainingJobRow) -> bool {
    keep_alive(&job.spec) > 0
        && match job.status {
            TrainingJobStatus::Completed | TrainingJobStatus::Stopped => true,
            TrainingJobStatus::Failed => !job
                .failure_reason
                .as_deref()
                .unwrap_or_default()
                .starts_with("InternalServerError"),
            _ => false,
        }
}

/// Seconds the job's warm pool has been retained by `now` (`ResourceRetainedBillableTimeInSeconds`).
fn retained_seconds(job: &TrainingJobRow, now: f64) -> i64 {
    let before = job
        .warm_pool
        .as_ref()
        .and_then(|w| w.resource_retained_billable_time_in_seconds)
        .unwrap_or(0);
    let current = job.run.warm_pool_since.map_or(0.0, |since| (now - since).max(0.0));
    before + current.round() as i64
}

/// `WarmPoolStatus` as `DescribeTrainingJob` shows it at `now` (an `Available` pool's retained time
/// counts up).
pub fn warm_pool_at(job: &TrainingJobRow, now: f64) -> Option<WarmPoolStatus> {
    let mut w = job.warm_pool.clone()?;
    if w.status == WarmPoolResourceStatus::Available {
        w.resource_retained_billable_time_in_seconds = Some(retained_seconds(job, now));
    }
    Some(w)
}

/// Ends the job's retention of its warm pool in `status` (`Reused` or `Terminated`).
fn release_pool(job: &mut TrainingJobRow, status: WarmPoolResourceStatus, by: Option<&str>, now: f64) {
    let retained = retained_seconds(job, now);
    job.warm_pool = Some(WarmPoolStatus {
        status,
        resource_retained_billable_time_in_seconds: Some(retained),
        reused_by_job: by.map(str::to_string),
    });
    job.run.warm_pool_id = None;
    job.run.warm_pool_since = None;
    job.last_modified_time = now;
}

/// What ending a job brings about: its warm pool retained (`Available`) or released.
fn ended(job: &mut TrainingJobRow, now: f64) -> Vec<Effect> {
    let mut effects = vec![Effect::Ended, Effect::Wake];
    // A stopped job's rules stop with it, as do those of a job that never trained; the others
    // get their last evaluation after the `Ended` effect.
    let why = if job.status == TrainingJobStatus::Stopped {
        Some("the training job was stopped before the rule found an issue")
    } else if job.run.hosts.is_empty() {
        Some("the training job ended before it trained")
    } else {
        None
    };
    if let Some(why) = why {
        for r in &mut job.run.rules {
            let e = &mut r.evaluation;
            if e.rule_evaluation_status == RuleEvaluationStatus::InProgress {
                e.rule_evaluation_status = RuleEvaluationStatus::Stopped;
                e.status_details = Some(why.to_string());
                e.last_modified_time = now;
            }
        }
    }
    if let Some(id) = job.run.warm_pool_id.clone() {
        if keeps_pool(job) {
            job.warm_pool = Some(WarmPoolStatus {
                status: WarmPoolResourceStatus::Available,
                resource_retained_billable_time_in_seconds: Some(0),
                reused_by_job: None,
            });
            job.run.warm_pool_since = Some(now);
            if let Some(last) = job.transitions.last_mut() {
                last.status_message = "Resource retained for reuse".into();
            }
        } else {
            release_pool(job, WarmPoolResourceStatus::Terminated, None, now);
            effects.push(Effect::DropPool(id));
        }
    }
    if !job.run.hosts.is_empty() && !job.run.cleaned {
        effects.push(Effect::Cleanup);
    }
    effects
}

/// Folds the hosts' reports into the job's status, after any change to the hosts.
fn fold(job: &mut TrainingJobRow, now: f64, effects: &mut Vec<Effect>) -> Result<(), Refused> {
    let hosts = &job.run.hosts;
    if hosts.is_empty() {
        return Ok(());
    }
    let all_done = hosts.iter().all(|h| h.done.is_some());
    // With several hosts, a reason that does not say which host failed gets it appended.
    let multi = hosts.len() > 1;
    let first_failure = hosts
        .iter()
        .filter_map(|h| {
            let reason = h.done.as_ref().and_then(|d| d.failure_reason.clone())?;
            Some(if multi && !reason.contains(h.host.as_str()) {
                format!("{reason} (host {})", h.host)
            } else {
                reason
            })
        })
        .next();
    let artifacts = hosts
        .iter()
        .filter_map(|h| h.done.as_ref().and_then(|d| d.model_artifacts.clone()))
        .next();
    let uploading = hosts
        .iter()
        .any(|h| h.phase == Some(Phase::Uploading) && h.done.is_none());
    let rank = hosts.iter().map(host_rank).min().unwrap_or(0);
    match job.status {
        TrainingJobStatus::Stopping => {
            if all_done {
                if let Some(a) = artifacts {
                    job.model_artifacts = Some(a);
                }
                let end = job.stop_reason.unwrap_or(StopReason::Requested).end_status();
                transition(job, end, None, now)?;
                effects.extend(ended(job, now));
            } else if uploading {
                transition(
                    job,
                    SecondaryStatus::Stopping,
                    Some("Stopping the training job: uploading the model"),
                    now,
                )?;
            }
        }
        TrainingJobStatus::InProgress if job.run.interrupting.is_some() => {
            // The hosts are stopping for a spot interruption: once all ended, a new attempt.
            if !all_done {
                return Ok(());
            }
            new_attempt(job, now, effects);
        }
        TrainingJobStatus::InProgress => {
            if let Some(reason) = first_failure {
                if all_done && retryable(job, &reason) {
                    restart(job, &reason, now, effects)?;
                } else if all_done {
                    job.failure_reason = Some(truncate(&reason, 1024));
                    transition(job, SecondaryStatus::Failed, None, now)?;
                    effects.extend(ended(job, now));
                } else if job.run.failing.is_none() {
                    // The other hosts are told to stop (their directive) and end the job when done.
                    job.run.failing = Some(reason);
                    job.last_modified_time = now;
                }
                return Ok(());
            }
            let steps = [
                (1, SecondaryStatus::Downloading),
                (2, SecondaryStatus::Training),
                (3, SecondaryStatus::Uploading),
            ];
            for (r, status) in steps {
                if rank >= r && secondary_rank(job.secondary_status) < r {
                    transition(job, status, None, now)?;
                }
            }
            if all_done {
                job.model_artifacts = artifacts;
                transition(job, SecondaryStatus::Completed, None, now)?;
                effects.extend(ended(job, now));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether `RetryStrategy` restarts the job after this failure: a platform failure (the
/// `InternalServerError`s of lost agents, hosts the executor ended, launches that failed), never
/// the algorithm's own error or the job's setup, while attempts remain.
fn retryable(job: &TrainingJobRow, reason: &str) -> bool {
    let max = job
        .spec
        .retry_strategy
        .as_ref()
        .map_or(0, |r| r.maximum_retry_attempts.max(0));
    reason.starts_with("InternalServerError") && i64::from(job.run.retries_used) < max
}

/// A new attempt after a platform failure: `Restarting`, the failed attempt's hosts retired, the
/// job unplaced so that the scheduler places it again (new hosts, token and key; checkpoints are
/// restored by the new hosts).
fn restart(job: &mut TrainingJobRow, reason: &str, now: f64, effects: &mut Vec<Effect>) -> Result<(), Refused> {
    job.run.retries_used += 1;
    let max = job.spec.retry_strategy.as_ref().map_or(0, |r| r.maximum_retry_attempts);
    let message = truncate(
        &format!(
            "Restarting the training job after a platform failure (retry {} of {max}): {reason}",
            job.run.retries_used
        ),
        1024,
    );
    transition(job, SecondaryStatus::Restarting, Some(&message), now)?;
    new_attempt(job, now, effects);
    Ok(())
}

/// Ends the current attempt: its running time counted, its launch retired, the job unplaced so
/// that the scheduler places it again.
fn new_attempt(job: &mut TrainingJobRow, now: f64, effects: &mut Vec<Effect>) {
    job.run.ran_seconds = Some(job.run.ran_seconds.unwrap_or(0.0) + attempt_seconds(job, now));
    if let Some(handle) = job.run.launch.take() {
        effects.push(Effect::Retire(handle));
    }
    job.run.hosts.clear();
    job.run.agent_token = None;
    job.run.access_key = None;
    job.run.failing = None;
    job.run.killed_at = None;
    job.run.cleaned = false;
    job.run.interrupting = None;
    job.last_modified_time = now;
    effects.push(Effect::Wake);
}

/// How long the current attempt has run: from its last `Downloading` to `now` (0 if it never
/// began downloading).
fn attempt_seconds(job: &TrainingJobRow, now: f64) -> f64 {
    let begun = job
        .transitions
        .iter()
        .rev()
        .skip_while(|t| matches!(t.status, SecondaryStatus::Restarting | SecondaryStatus::Interrupted))
        .take_while(|t| !matches!(t.status, SecondaryStatus::Restarting | SecondaryStatus::Interrupted))
        .filter(|t| t.status == SecondaryStatus::Downloading)
        .map(|t| t.start_time)
        .last();
    begun.map_or(0.0, |b| (now - b).max(0.0))
}

/// Marks hosts ended with `report`; returns whether any host changed.
fn end_hosts(job: &mut TrainingJobRow, hosts: &[String], report: &DoneReport) -> bool {
    let mut changed = false;
    for h in job.run.hosts.iter_mut() {
        if hosts.contains(&h.host) && h.done.is_none() {
            h.done = Some(report.clone());
            changed = true;
        }
    }
    changed
}

/// Applies `event` to `job` at `now`.
pub fn step(job: &TrainingJobRow, event: &Event, now: f64) -> Result<Step, Refused> {
    let mut job = job.clone();
    let mut effects = Vec::new();
    let status = job.status;
    let placed = !job.run.hosts.is_empty();
    match event {
        Event::Stop => match status {
            TrainingJobStatus::InProgress => {
                job.stop_reason = Some(StopReason::Requested);
                transition(&mut job, SecondaryStatus::Stopping, None, now)?;
                if placed {
                    effects.push(Effect::Wake);
                } else {
                    // With no host placed there is nothing to wait for.
                    transition(&mut job, SecondaryStatus::Stopped, None, now)?;
                    effects.extend(ended(&mut job, now));
                }
            }
            // Stopping twice is harmless, as on the real service.
            TrainingJobStatus::Stopping => {}
            s => {
                return Err(Refused(format!(
                    "The training job '{}' is {s}; only an InProgress job can be stopped.",
                    job.name
                )));
            }
        },
        Event::RuntimeExceeded { limit } => {
            if status == TrainingJobStatus::InProgress {
                job.stop_reason = Some(StopReason::MaxRuntimeExceeded);
                let msg = format!("Stopping the training job: it ran longer than MaxRuntimeInSeconds ({limit} s)");
                transition(&mut job, SecondaryStatus::Stopping, Some(&msg), now)?;
                if placed {
                    effects.push(Effect::Wake);
                } else {
                    transition(&mut job, SecondaryStatus::MaxRuntimeExceeded, None, now)?;
                    effects.extend(ended(&mut job, now));
                }
            }
        }
        Event::Waiting { message } => {
            if status == TrainingJobStatus::InProgress && !placed && job.secondary_status == SecondaryStatus::Starting {
                transition(&mut job, SecondaryStatus::Starting, Some(message), now)?;
            }
        }
        Event::Unrunnable { reason } => {
            if status == TrainingJobStatus::InProgress && !placed {
                job.failure_reason = Some(truncate(reason, 1024));
                transition(&mut job, SecondaryStatus::Failed, None, now)?;
                effects.extend(ended(&mut job, now));
            }
        }
        Event::Placed {
            hosts,
            agent_token,
            access_key,
            warm_pool,
            reused_from,
            pool_launch,
        } => {
            if status != TrainingJobStatus::InProgress {
                return Err(Refused(format!("Training job '{}' is {status}: not placed.", job.name)));
            }
            if placed {
                return Err(Refused(format!("Training job '{}' is already placed.", job.name)));
            }
            job.run.hosts = hosts.clone();
            job.run.agent_token = Some(agent_token.clone());
            job.run.access_key = Some(access_key.clone());
            job.run.launch = None;
            job.run.pool_launch = pool_launch.clone();
            if let Some(id) = warm_pool
                && job.run.warm_pool_id.is_none()
            {
                job.run.warm_pool_id = Some(id.clone());
                job.warm_pool = Some(WarmPoolStatus {
                    status: WarmPoolResourceStatus::InUse,
                    resource_retained_billable_time_in_seconds: None,
                    reused_by_job: None,
                });
            }
            let message = match reused_from {
                Some(from) => {
                    format!("Preparing the instances for training (reusing the warm pool of training job {from})")
                }
                None => "Preparing the instances for training".to_string(),
            };
            transition(&mut job, SecondaryStatus::Starting, Some(&message), now)?;
            job.last_modified_time = now;
            effects.push(Effect::Launch);
        }
        Event::Launched { handle } => {
            if placed && job.run.launch.is_none() {
                job.run.launch = Some(handle.clone());
                job.last_modified_time = now;
                if !status.is_active() || job.run.failing.is_some() {
                    // Stopped or failing while the executor was starting the hosts.
                    effects.push(Effect::Kill);
                }
            } else if job.run.launch.as_deref() != Some(handle) {
                // A second launch of the same job (a recovery racing the first): not ours to keep.
                return Err(Refused(format!("Training job '{}' was launched already.", job.name)));
            }
        }
        Event::Queued { message } => {
            if status == TrainingJobStatus::InProgress && placed && job.secondary_status == SecondaryStatus::Starting {
                transition(&mut job, SecondaryStatus::Starting, Some(message), now)?;
            }
        }
        Event::LaunchFailed { reason } => {
            if placed && status.is_active() {
                let report = DoneReport {
                    exit_code: None,
                    failure_reason: Some(format!("InternalServerError: could not start the hosts: {reason}")),
                    model_artifacts: None,
                };
                let hosts: Vec<String> = job.run.hosts.iter().map(|h| h.host.clone()).collect();
                if end_hosts(&mut job, &hosts, &report) {
                    job.last_modified_time = now;
                    fold(&mut job, now, &mut effects)?;
                }
            }
        }
        Event::HostPhase { host, phase, message } => {
            let mut changed = false;
            if let Some(h) = job.run.hosts.iter_mut().find(|h| &h.host == host)
                && h.done.is_none()
                && h.phase.is_none_or(|p| phase_rank(p) < phase_rank(*phase))
            {
                h.phase = Some(*phase);
                changed = true;
            }
            if changed {
                job.last_modified_time = now;
                fold(&mut job, now, &mut effects)?;
            }
            if let Some(msg) = message
                && job.status == TrainingJobStatus::InProgress
                && job.run.interrupting.is_none()
            {
                let s = job.secondary_status;
                transition(&mut job, s, Some(msg), now)?;
            }
        }
        Event::HostDone { host, report } => {
            if end_hosts(&mut job, std::slice::from_ref(host), report) {
                job.last_modified_time = now;
                fold(&mut job, now, &mut effects)?;
            }
        }
        Event::HostsLost { hosts, reason } => {
            let report = DoneReport {
                exit_code: None,
                failure_reason: Some(reason.clone()),
                model_artifacts: None,
            };
            if status.is_active() && end_hosts(&mut job, hosts, &report) {
                job.last_modified_time = now;
                fold(&mut job, now, &mut effects)?;
            }
        }
        Event::Interrupt { reason } => {
            if status != TrainingJobStatus::InProgress {
                return Err(Refused(format!(
                    "The training job '{}' is {status}; only an InProgress job can be interrupted.",
                    job.name
                )));
            }
            if job.spec.enable_managed_spot_training != Some(true) {
                return Err(Refused(format!(
                    "The training job '{}' is not a managed spot job (EnableManagedSpotTraining): only spot jobs are interrupted.",
                    job.name
                )));
            }
            if job.run.interrupting.is_none() {
                transition(&mut job, SecondaryStatus::Interrupted, Some(reason), now)?;
                if placed && job.run.hosts.iter().any(|h| h.done.is_none()) {
                    // The hosts are told to stop; the new attempt starts once they have.
                    job.run.interrupting = Some(reason.clone());
                    effects.push(Effect::Wake);
                } else {
                    new_attempt(&mut job, now, &mut effects);
                }
            }
        }
        Event::WaitExceeded { limit } => {
            if status == TrainingJobStatus::InProgress {
                job.stop_reason = Some(StopReason::MaxWaitTimeExceeded);
                let msg = format!("Stopping the training job: it waited longer than MaxWaitTimeInSeconds ({limit} s)");
                transition(&mut job, SecondaryStatus::Stopping, Some(&msg), now)?;
                if placed {
                    effects.push(Effect::Wake);
                } else {
                    transition(&mut job, SecondaryStatus::MaxWaitTimeExceeded, None, now)?;
                    effects.extend(ended(&mut job, now));
                }
            }
        }
        Event::StopOverdue => {
            if placed && status.is_active() {
                job.run.killed_at = Some(now);
                effects.push(Effect::Kill);
            }
        }
        Event::Metrics { points } => {
            let before = job.final_metrics.clone();
            for p in points {
                fold_final(&mut job.final_metrics, &p.metric, p.value, p.timestamp);
            }
            if job.final_metrics != before {
                job.last_modified_time = now;
            }
        }
        Event::RulesEvaluated { updates } => {
            for (name, to, details) in updates {
                let Some(r) = job
                    .run
                    .rules
                    .iter_mut()
                    .find(|r| &r.evaluation.rule_configuration_name == name)
                else {
                    continue;
                };
                let e = &mut r.evaluation;
                if e.rule_evaluation_status == RuleEvaluationStatus::InProgress && *to != e.rule_evaluation_status {
                    e.rule_evaluation_status = *to;
                    e.status_details = details.clone();
                    e.last_modified_time = now;
                    job.last_modified_time = now;
                }
            }
        }
        Event::Cleaned => {
            if !job.run.cleaned {
                job.run.cleaned = true;
            }
        }
        Event::Update(req) => update(&mut job, req, now, &mut effects)?,
        Event::PoolReused { by } => {
            let pool = job.warm_pool.as_ref().map(|w| w.status);
            if pool != Some(WarmPoolResourceStatus::Available) || !status.is_terminal() {
                return Err(Refused(format!(
                    "The warm pool of training job '{}' is {}; only an Available warm pool can be reused.",
                    job.name,
                    pool.map_or("not retained", |p| p.as_str())
                )));
            }
            release_pool(&mut job, WarmPoolResourceStatus::Reused, Some(by), now);
            if let Some(last) = job.transitions.last_mut() {
                last.status_message = format!("Resource reused by training job: {by}");
            }
        }
        Event::PoolExpired => {
            if job.warm_pool.as_ref().map(|w| w.status) == Some(WarmPoolResourceStatus::Available) {
                if let Some(id) = job.run.warm_pool_id.clone() {
                    effects.push(Effect::DropPool(id));
                }
                release_pool(&mut job, WarmPoolResourceStatus::Terminated, None, now);
            }
        }
    }
    Ok(Step { job, effects })
}

/// `UpdateTrainingJob`: warm-pool retention and profiler settings.
fn update(
    job: &mut TrainingJobRow,
    req: &UpdateTrainingJobRequest,
    now: f64,
    effects: &mut Vec<Effect>,
) -> Result<(), Refused> {
    if let Some(rc) = &req.resource_config {
        let configured = job
            .spec
            .resource_config
            .as_ref()
            .and_then(|r| r.keep_alive_period_in_seconds)
            .is_some_and(|k| k > 0);
        if !configured {
            return Err(Refused(format!(
                "The training job '{}' was not created with a warm pool (ResourceConfig.KeepAlivePeriodInSeconds), so its retention cannot be updated.",
                job.name
            )));
        }
        let pool = job.warm_pool.as_ref().map(|w| w.status);
        if job.status.is_terminal() && pool != Some(WarmPoolResourceStatus::Available) {
            return Err(Refused(format!(
                "The warm pool of training job '{}' is {}; only an Available warm pool can be updated.",
                job.name,
                pool.map_or("not retained", |p| p.as_str())
            )));
        }
        if let Some(r) = job.spec.resource_config.as_mut() {
            r.keep_alive_period_in_seconds = Some(rc.keep_alive_period_in_seconds);
        }
        if pool == Some(WarmPoolResourceStatus::Available) {
            if rc.keep_alive_period_in_seconds == 0 {
                // Released at once.
                if let Some(id) = job.run.warm_pool_id.clone() {
                    effects.push(Effect::DropPool(id));
                }
                release_pool(job, WarmPoolResourceStatus::Terminated, None, now);
            } else {
                // A new retention period from now, the time retained so far kept.
                let retained = retained_seconds(job, now);
                if let Some(w) = job.warm_pool.as_mut() {
                    w.resource_retained_billable_time_in_seconds = Some(retained);
                }
                job.run.warm_pool_since = Some(now);
            }
        }
    }
    if let Some(serde_json::Value::Array(added)) = &req.profiler_rule_configurations {
        // Rules are added to the job's, each name once; they are evaluated from now on.
        let mut list = match job.spec.extra.get("ProfilerRuleConfigurations") {
            Some(serde_json::Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        let name = |r: &serde_json::Value| {
            r.get("RuleConfigurationName")
                .and_then(|n| n.as_str())
                .map(str::to_string)
        };
        for rule in added {
            if !list.iter().any(|r| name(r) == name(rule)) {
                list.push(rule.clone());
            }
        }
        job.spec
            .extra
            .insert("ProfilerRuleConfigurations".into(), serde_json::Value::Array(list));
        if !job.status.is_terminal() {
            for rule in crate::rules::configured(&job.spec.extra, "ProfilerRuleConfigurations") {
                if !job
                    .run
                    .rules
                    .iter()
                    .any(|r| r.profiler && r.evaluation.rule_configuration_name == rule.name)
                {
                    let record = crate::rules::new_record(&job.arn, &job.name, &rule, now);
                    job.run.rules.push(record);
                }
            }
        }
    }
    for (key, value) in [
        ("ProfilerConfig", &req.profiler_config),
        ("RemoteDebugConfig", &req.remote_debug_config),
    ] {
        if let Some(v) = value {
            job.spec.extra.insert(key.into(), v.clone());
        }
    }
    job.last_modified_time = now;
    Ok(())
}

/// What the host's agent should do next: stop when the job is stopping, ended or failing.
pub fn should_stop(job: &TrainingJobRow) -> bool {
    job.status != TrainingJobStatus::InProgress || job.run.failing.is_some() || job.run.interrupting.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use SecondaryStatus::*;
    use kiln_api::shapes::CreateTrainingJobRequest;
    use proptest::prelude::*;

    fn spec() -> CreateTrainingJobRequest {
        serde_json::from_value(serde_json::json!({
            "TrainingJobName": "j", "RoleArn": "arn:aws:iam::123456789012:role/R",
            "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 1,
                               "KeepAlivePeriodInSeconds": 60},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60}
        }))
        .unwrap()
    }

    fn job() -> TrainingJobRow {
        crate::training::api::new_job("123456789012", "us-east-1", spec(), 1.0)
    }

    fn host(name: &str) -> HostRecord {
        HostRecord {
            host: name.into(),
            log_stream: format!("j/{name}-1"),
            phase: None,
            done: None,
        }
    }

    fn placed() -> Event {
        Event::Placed {
            hosts: vec![host("algo-1"), host("algo-2")],
            agent_token: "tok".into(),
            access_key: ("KJOBX".into(), "secret".into()),
            warm_pool: None,
            reused_from: None,
            pool_launch: None,
        }
    }

    fn ok() -> DoneReport {
        DoneReport {
            exit_code: Some(0),
            failure_reason: None,
            model_artifacts: None,
        }
    }

    /// Applies events in turn; returns the job and every effect, in order.
    fn run(mut j: TrainingJobRow, events: &[Event]) -> (TrainingJobRow, Vec<Effect>) {
        let mut all = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let s = step(&j, e, 10.0 + i as f64).unwrap_or_else(|r| panic!("{e:?} refused: {}", r.0));
            j = s.job;
            all.extend(s.effects);
        }
        (j, all)
    }

    fn statuses(j: &TrainingJobRow) -> Vec<SecondaryStatus> {
        j.transitions.iter().map(|t| t.status).collect()
    }

    fn phase(h: &str, p: Phase) -> Event {
        Event::HostPhase {
            host: h.into(),
            phase: p,
            message: None,
        }
    }

    fn done(h: &str, report: DoneReport) -> Event {
        Event::HostDone { host: h.into(), report }
    }

    #[test]
    fn every_transition_allowed_and_every_other_refused() {
        let expected: &[(SecondaryStatus, &[SecondaryStatus])] = &[
            (
                Starting,
                &[
                    Starting,
                    Pending,
                    Downloading,
                    Stopping,
                    Failed,
                    Interrupted,
                    Restarting,
                ],
            ),
            (
                Pending,
                &[
                    Starting,
                    Pending,
                    Downloading,
                    Stopping,
                    Failed,
                    Interrupted,
                    Restarting,
                ],
            ),
            (Downloading, &[Training, Stopping, Failed, Interrupted, Restarting]),
            (
                Training,
                &[Uploading, Updating, Stopping, Failed, Interrupted, Restarting],
            ),
            (Uploading, &[Completed, Stopping, Failed, Interrupted, Restarting]),
            (
                Stopping,
                &[Stopped, MaxRuntimeExceeded, MaxWaitTimeExceeded, Failed, Uploading],
            ),
            (
                Interrupted,
                &[
                    Starting,
                    Pending,
                    Downloading,
                    Stopping,
                    Failed,
                    Interrupted,
                    Restarting,
                ],
            ),
            (
                Restarting,
                &[
                    Starting,
                    Pending,
                    Downloading,
                    Stopping,
                    Failed,
                    Interrupted,
                    Restarting,
                ],
            ),
            (
                Updating,
                &[Training, Completed, Stopping, Failed, Interrupted, Restarting],
            ),
            (Stopped, &[]),
            (MaxRuntimeExceeded, &[]),
            (MaxWaitTimeExceeded, &[]),
            (Completed, &[]),
            (Failed, &[]),
        ];
        assert_eq!(expected.len(), SecondaryStatus::ALL.len());
        for (from, tos) in expected {
            for to in SecondaryStatus::ALL {
                assert_eq!(allowed(*from, *to), tos.contains(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_normal_flow_follows_the_slowest_host() {
        let (j, effects) = run(job(), &[placed()]);
        assert_eq!(effects, [Effect::Launch]);
        assert_eq!(
            j.transitions.last().unwrap().status_message,
            "Preparing the instances for training"
        );
        let (j, _) = run(j, &[Event::Launched { handle: "h".into() }]);
        let (j, effects) = run(
            j,
            &[
                phase("algo-1", Phase::Downloading),
                phase("algo-1", Phase::Training),
                // A phase reported twice or out of order changes nothing.
                phase("algo-1", Phase::Downloading),
            ],
        );
        assert!(effects.is_empty());
        assert_eq!(j.secondary_status, Starting);
        let (j, _) = run(j, &[phase("algo-2", Phase::Training)]);
        assert_eq!(statuses(&j), [Starting, Downloading, Training]);
        assert!(j.training_start_time.is_some());
        let with_model = DoneReport {
            model_artifacts: Some("s3://b/o/j/output/model.tar.gz".into()),
            ..ok()
        };
        let (j, effects) = run(j, &[done("algo-1", with_model)]);
        assert!(effects.is_empty());
        let (j, effects) = run(j, &[done("algo-2", ok())]);
        assert_eq!(statuses(&j), [Starting, Downloading, Training, Uploading, Completed]);
        assert_eq!(effects, [Effect::Ended, Effect::Wake, Effect::Cleanup]);
        assert_eq!(j.status, TrainingJobStatus::Completed);
        assert_eq!(j.model_artifacts.as_deref(), Some("s3://b/o/j/output/model.tar.gz"));
        assert!(j.training_end_time.is_some() && j.training_time_in_seconds.is_some());
        assert!(j.transitions.last().unwrap().end_time.is_some());
        // Reports that come late change nothing.
        let (late, effects) = run(j.clone(), &[done("algo-2", ok()), phase("algo-1", Phase::Uploading)]);
        assert_eq!((late, effects), (j.clone(), vec![]));
        let (cleaned, _) = run(j, &[Event::Cleaned]);
        assert!(cleaned.run.cleaned);
    }

    fn with_rules() -> TrainingJobRow {
        let mut spec = spec();
        spec.extra.insert(
            "DebugRuleConfigurations".into(),
            serde_json::json!([
                {"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluatorImage": "i"},
                {"RuleConfigurationName": "Overfit", "RuleEvaluatorImage": "i"}
            ]),
        );
        crate::training::api::new_job("123456789012", "us-east-1", spec, 1.0)
    }

    fn rule_statuses(j: &TrainingJobRow) -> Vec<RuleEvaluationStatus> {
        j.run
            .rules
            .iter()
            .map(|r| r.evaluation.rule_evaluation_status)
            .collect()
    }

    #[test]
    fn rules_take_one_verdict_and_stop_with_the_job() {
        use RuleEvaluationStatus::*;
        let j = with_rules();
        assert_eq!(rule_statuses(&j), [InProgress, InProgress]);
        let fired = Event::RulesEvaluated {
            updates: vec![("LossNotDecreasing".into(), IssuesFound, Some("why".into()))],
        };
        let (j, effects) = run(j, &[fired]);
        assert!(effects.is_empty());
        assert_eq!(rule_statuses(&j), [IssuesFound, InProgress]);
        assert_eq!(j.run.rules[0].evaluation.status_details.as_deref(), Some("why"));
        // A verdict is final: a later one for the same rule changes nothing.
        let again = Event::RulesEvaluated {
            updates: vec![("LossNotDecreasing".into(), NoIssuesFound, None)],
        };
        let (j, _) = run(j, &[again]);
        assert_eq!(rule_statuses(&j), [IssuesFound, InProgress]);
        // Stopping a placed job stops the rules still in progress once it is Stopped.
        let (j, _) = run(j, &[placed(), Event::Launched { handle: "h".into() }, Event::Stop]);
        assert_eq!(rule_statuses(&j), [IssuesFound, InProgress]);
        let (j, _) = run(j, &[done("algo-1", ok()), done("algo-2", ok())]);
        assert_eq!(j.status, TrainingJobStatus::Stopped);
        assert_eq!(rule_statuses(&j), [IssuesFound, Stopped]);
        // A job that never trained: its rules stop at once.
        let (j, _) = run(with_rules(), &[Event::Stop]);
        assert_eq!(rule_statuses(&j), [Stopped, Stopped]);
    }

    #[test]
    fn updates_add_profiler_rules_once() {
        let add = |names: &[&str]| {
            let mut req: UpdateTrainingJobRequest =
                serde_json::from_value(serde_json::json!({"TrainingJobName": "j"})).unwrap();
            req.profiler_rule_configurations = Some(serde_json::json!(
                names
                    .iter()
                    .map(
                        |n| serde_json::json!({"RuleConfigurationName": n, "RuleEvaluatorImage": "i",
                                           "RuleParameters": {"rule_to_invoke": "ProfilerReport"}})
                    )
                    .collect::<Vec<_>>()
            ));
            Event::Update(req)
        };
        let (j, _) = run(
            with_rules(),
            &[add(&["ProfilerReport"]), add(&["ProfilerReport", "CPU"])],
        );
        let names: Vec<(bool, &str)> = j
            .run
            .rules
            .iter()
            .map(|r| (r.profiler, r.evaluation.rule_configuration_name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (false, "LossNotDecreasing"),
                (false, "Overfit"),
                (true, "ProfilerReport"),
                (true, "CPU")
            ]
        );
        assert_eq!(j.spec.extra["ProfilerRuleConfigurations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_failed_host_stops_the_others_then_fails_the_job() {
        let (j, _) = run(job(), &[placed(), Event::Launched { handle: "h".into() }]);
        assert!(!should_stop(&j));
        let failed = DoneReport {
            exit_code: Some(1),
            failure_reason: Some("AlgorithmError: boom".into()),
            model_artifacts: None,
        };
        let (j, effects) = run(j, &[done("algo-2", failed)]);
        assert!(effects.is_empty());
        assert_eq!(j.status, TrainingJobStatus::InProgress);
        assert!(should_stop(&j), "the other host is told to stop");
        let stopped = DoneReport {
            exit_code: None,
            ..ok()
        };
        let (j, effects) = run(j, &[done("algo-1", stopped)]);
        assert_eq!(j.status, TrainingJobStatus::Failed);
        assert_eq!(j.failure_reason.as_deref(), Some("AlgorithmError: boom (host algo-2)"));
        assert!(effects.contains(&Effect::Ended));
    }

    #[test]
    fn stops_end_by_their_reason() {
        // Not placed: Stopped at once.
        let (j, effects) = run(job(), &[Event::Stop]);
        assert_eq!(statuses(&j), [Starting, Stopping, Stopped]);
        assert_eq!(effects, [Effect::Ended, Effect::Wake]);
        assert!(j.stop_reason.is_none());
        // Placed: Stopping until every host ended; the model uploaded meanwhile is kept.
        let (j, effects) = run(job(), &[placed(), Event::Launched { handle: "h".into() }, Event::Stop]);
        assert_eq!(effects, [Effect::Launch, Effect::Wake]);
        assert!(should_stop(&j));
        let (j, effects) = run(j.clone(), &[Event::Stop]);
        assert!(effects.is_empty(), "stopping twice is harmless");
        let with_model = DoneReport {
            model_artifacts: Some("s3://m".into()),
            ..ok()
        };
        let (j, _) = run(j, &[done("algo-1", with_model), done("algo-2", ok())]);
        assert_eq!((j.status, j.secondary_status), (TrainingJobStatus::Stopped, Stopped));
        assert_eq!(j.model_artifacts.as_deref(), Some("s3://m"));
        // MaxRuntimeInSeconds.
        let (j, _) = run(
            job(),
            &[
                placed(),
                Event::RuntimeExceeded { limit: 60 },
                done("algo-1", ok()),
                done("algo-2", ok()),
            ],
        );
        assert_eq!(j.secondary_status, MaxRuntimeExceeded);
        let stopping = j.transitions.iter().find(|t| t.status == Stopping).unwrap();
        assert!(stopping.status_message.contains("MaxRuntimeInSeconds (60 s)"));
        // An ended job cannot be stopped.
        assert!(
            step(&j, &Event::Stop, 99.0)
                .unwrap_err()
                .0
                .contains("only an InProgress job")
        );
    }

    #[test]
    fn placement_and_launch_outcomes() {
        let (j, _) = run(job(), &[placed()]);
        assert!(step(&j, &placed(), 5.0).unwrap_err().0.contains("already placed"));
        // The same launch recorded twice is one launch; another launch of the job is refused.
        let (j, _) = run(j, &[Event::Launched { handle: "h1".into() }]);
        assert_eq!(step(&j, &Event::Launched { handle: "h1".into() }, 5.0).unwrap().job, j);
        assert!(step(&j, &Event::Launched { handle: "h2".into() }, 5.0).is_err());
        // A launch that failed fails the job with InternalServerError.
        let (j, effects) = run(
            job(),
            &[
                placed(),
                Event::LaunchFailed {
                    reason: "no binary".into(),
                },
            ],
        );
        assert_eq!(j.status, TrainingJobStatus::Failed);
        assert!(
            j.failure_reason
                .unwrap()
                .starts_with("InternalServerError: could not start the hosts: no binary")
        );
        assert!(effects.contains(&Effect::Ended));
        // Stopped while launching: the launch is recorded, and the hosts are told to stop when they
        // first call in.
        let (j, effects) = run(job(), &[placed(), Event::Stop, Event::Launched { handle: "h".into() }]);
        assert_eq!(effects, [Effect::Launch, Effect::Wake]);
        assert!(j.run.launch.is_some() && should_stop(&j));
        // An unrunnable job fails before placement; waiting only changes the message.
        let (j, _) = run(
            job(),
            &[Event::Waiting {
                message: "Waiting for capacity".into(),
            }],
        );
        assert_eq!((j.secondary_status, j.transitions.len()), (Starting, 1));
        assert_eq!(j.transitions[0].status_message, "Waiting for capacity");
        let (j, _) = run(
            j,
            &[Event::Unrunnable {
                reason: "ClientError: no".into(),
            }],
        );
        assert_eq!(j.status, TrainingJobStatus::Failed);
    }

    #[test]
    fn lost_hosts_and_overdue_stops() {
        let (j, _) = run(
            job(),
            &[
                placed(),
                Event::Launched { handle: "h".into() },
                phase("algo-1", Phase::Training),
            ],
        );
        let lost = Event::HostsLost {
            hosts: vec!["algo-1".into(), "algo-2".into()],
            reason: "InternalServerError: lost".into(),
        };
        let (failed, effects) = run(j.clone(), std::slice::from_ref(&lost));
        assert_eq!(failed.status, TrainingJobStatus::Failed);
        assert!(effects.contains(&Effect::Ended));
        let (stopping, _) = run(j, &[Event::Stop]);
        let (j, effects) = run(stopping.clone(), &[Event::StopOverdue]);
        assert_eq!(effects, [Effect::Kill]);
        assert!(j.run.killed_at.is_some());
        let (j, _) = run(stopping, &[lost]);
        assert_eq!(j.secondary_status, Stopped);
    }

    #[test]
    fn platform_failures_restart_while_retries_remain_and_algorithm_errors_never() {
        let mut retrying = job();
        retrying.spec.retry_strategy = Some(kiln_api::shapes::RetryStrategy {
            maximum_retry_attempts: 1,
        });
        let lost = Event::HostsLost {
            hosts: vec!["algo-1".into(), "algo-2".into()],
            reason: "InternalServerError: the agent of algo-1 stopped without reporting".into(),
        };
        let attempt = [
            placed(),
            Event::Launched { handle: "h1".into() },
            phase("algo-1", Phase::Training),
            phase("algo-2", Phase::Training),
        ];
        let (j, _) = run(retrying.clone(), &attempt);
        let (j, effects) = run(j, std::slice::from_ref(&lost));
        assert_eq!(
            (j.status, j.secondary_status),
            (TrainingJobStatus::InProgress, Restarting)
        );
        assert_eq!(effects, [Effect::Retire("h1".into()), Effect::Wake]);
        assert!(j.run.hosts.is_empty() && j.run.launch.is_none() && j.run.agent_token.is_none());
        assert_eq!(j.run.retries_used, 1);
        let msg = &j.transitions.last().unwrap().status_message;
        assert!(msg.contains("retry 1 of 1") && msg.contains("algo-1"), "{msg}");
        // The second attempt is placed again from Restarting; its failure is the last one allowed.
        let (j, _) = run(j, &attempt);
        assert_eq!(j.secondary_status, Training);
        let (j, effects) = run(j, &[lost]);
        assert_eq!(j.status, TrainingJobStatus::Failed);
        assert!(j.failure_reason.as_deref().unwrap().contains("algo-1"));
        assert!(effects.contains(&Effect::Ended));
        let statuses: Vec<_> = j.transitions.iter().map(|t| t.status).collect();
        assert_eq!(
            statuses,
            [
                Starting,
                Downloading,
                Training,
                Restarting,
                Starting,
                Downloading,
                Training,
                Failed
            ]
        );
        // The algorithm's own failure is not retried.
        let (j, _) = run(retrying, &attempt);
        let done = |host: &str| Event::HostDone {
            host: host.into(),
            report: DoneReport {
                exit_code: Some(1),
                failure_reason: Some("AlgorithmError: boom".into()),
                model_artifacts: None,
            },
        };
        let (j, _) = run(j, &[done("algo-1"), done("algo-2")]);
        assert_eq!(j.status, TrainingJobStatus::Failed);
    }

    #[test]
    fn metrics_and_updates() {
        let point = |v: f64, t: f64| MetricPoint {
            metric: "loss".into(),
            value: v,
            timestamp: t,
        };
        let (j, effects) = run(
            job(),
            &[Event::Metrics {
                points: vec![point(0.5, 1.0), point(0.25, 2.0)],
            }],
        );
        assert!(effects.is_empty());
        assert_eq!(j.final_metrics[0].value, 0.25);
        let update = UpdateTrainingJobRequest {
            training_job_name: "j".into(),
            resource_config: Some(kiln_api::shapes::ResourceConfigForUpdate {
                keep_alive_period_in_seconds: 120,
            }),
            profiler_config: None,
            profiler_rule_configurations: None,
            remote_debug_config: None,
        };
        let (j, _) = run(j, &[Event::Update(update.clone())]);
        assert_eq!(
            j.spec.resource_config.as_ref().unwrap().keep_alive_period_in_seconds,
            Some(120)
        );
        let mut without_pool = job();
        without_pool
            .spec
            .resource_config
            .as_mut()
            .unwrap()
            .keep_alive_period_in_seconds = None;
        assert!(
            step(&without_pool, &Event::Update(update), 3.0)
                .unwrap_err()
                .0
                .contains("warm pool")
        );
    }

    #[test]
    fn a_warm_pool_is_retained_reused_and_released() {
        use WarmPoolResourceStatus as Pool;
        let pooled = || Event::Placed {
            hosts: vec![host("algo-1"), host("algo-2")],
            agent_token: "tok".into(),
            access_key: ("KJOBX".into(), "secret".into()),
            warm_pool: Some("wp-1".into()),
            reused_from: None,
            pool_launch: None,
        };
        let (j, _) = run(job(), &[pooled()]);
        assert_eq!(j.warm_pool.as_ref().map(|w| w.status), Some(Pool::InUse));
        assert_eq!(j.run.warm_pool_id.as_deref(), Some("wp-1"));
        // Completed: the pool is retained, counting its time from the end.
        let (j, effects) = run(j, &[done("algo-1", ok()), done("algo-2", ok())]);
        assert_eq!(j.status, TrainingJobStatus::Completed);
        assert_eq!(j.warm_pool.as_ref().map(|w| w.status), Some(Pool::Available));
        assert_eq!(
            j.transitions.last().unwrap().status_message,
            "Resource retained for reuse"
        );
        assert!(!effects.iter().any(|e| matches!(e, Effect::DropPool(_))));
        let since = j.run.warm_pool_since.unwrap();
        assert_eq!(
            warm_pool_at(&j, since + 7.2)
                .unwrap()
                .resource_retained_billable_time_in_seconds,
            Some(7)
        );
        // Taken over by another job: Reused, the pool (and its cache) gone with it.
        let s = step(&j, &Event::PoolReused { by: "next".into() }, since + 30.0).unwrap();
        let w = s.job.warm_pool.clone().unwrap();
        assert_eq!((w.status, w.reused_by_job.as_deref()), (Pool::Reused, Some("next")));
        assert_eq!(w.resource_retained_billable_time_in_seconds, Some(30));
        assert_eq!(s.job.run.warm_pool_id, None);
        assert!(
            s.effects.is_empty(),
            "the cache goes on with the next job: {:?}",
            s.effects
        );
        assert_eq!(
            s.job.transitions.last().unwrap().status_message,
            "Resource reused by training job: next"
        );
        assert!(step(&s.job, &Event::PoolReused { by: "third".into() }, since + 31.0).is_err());
        // Expired: Terminated, its cache dropped.
        let s = step(&j, &Event::PoolExpired, since + 60.0).unwrap();
        assert_eq!(s.job.warm_pool.as_ref().map(|w| w.status), Some(Pool::Terminated));
        assert_eq!(s.effects, vec![Effect::DropPool("wp-1".into())]);
        // UpdateTrainingJob: a new keep-alive restarts the retention; 0 releases the pool.
        let update = |k| {
            Event::Update(UpdateTrainingJobRequest {
                training_job_name: "j".into(),
                resource_config: Some(kiln_api::shapes::ResourceConfigForUpdate {
                    keep_alive_period_in_seconds: k,
                }),
                profiler_config: None,
                profiler_rule_configurations: None,
                remote_debug_config: None,
            })
        };
        let s = step(&j, &update(300), since + 20.0).unwrap();
        assert_eq!(s.job.run.warm_pool_since, Some(since + 20.0));
        assert_eq!(
            warm_pool_at(&s.job, since + 25.0)
                .unwrap()
                .resource_retained_billable_time_in_seconds,
            Some(25)
        );
        let s = step(&s.job, &update(0), since + 40.0).unwrap();
        assert_eq!(s.job.warm_pool.as_ref().map(|w| w.status), Some(Pool::Terminated));
        assert_eq!(s.effects, vec![Effect::DropPool("wp-1".into())]);
        assert!(
            step(&s.job, &update(60), since + 41.0).is_err(),
            "a terminated pool cannot be updated"
        );
        // A platform failure keeps no pool; the algorithm's own error does.
        let lost = Event::HostsLost {
            hosts: vec!["algo-1".into(), "algo-2".into()],
            reason: "InternalServerError: the agent died".into(),
        };
        let (f, effects) = run(job(), &[pooled(), lost]);
        assert_eq!(f.warm_pool.as_ref().map(|w| w.status), Some(Pool::Terminated));
        assert!(effects.contains(&Effect::DropPool("wp-1".into())));
        let error = DoneReport {
            exit_code: Some(1),
            failure_reason: Some("AlgorithmError: exit 1".into()),
            model_artifacts: None,
        };
        let (f, _) = run(job(), &[pooled(), done("algo-1", error.clone()), done("algo-2", error)]);
        assert_eq!(f.status, TrainingJobStatus::Failed);
        assert_eq!(f.warm_pool.as_ref().map(|w| w.status), Some(Pool::Available));
    }

    fn any_event() -> impl Strategy<Value = Event> {
        let host = prop_oneof![
            Just("algo-1".to_string()),
            Just("algo-2".to_string()),
            Just("algo-9".to_string())
        ];
        let report =
            (proptest::option::of(0i32..3), any::<bool>(), any::<bool>()).prop_map(|(code, fail, model)| DoneReport {
                exit_code: code,
                failure_reason: fail.then(|| "AlgorithmError: x".into()),
                model_artifacts: model.then(|| "s3://m".into()),
            });
        let phase = prop_oneof![Just(Phase::Downloading), Just(Phase::Training), Just(Phase::Uploading)];
        prop_oneof![
            Just(Event::Stop),
            Just(placed()),
            Just(Event::Launched { handle: "h".into() }),
            Just(Event::LaunchFailed { reason: "x".into() }),
            Just(Event::StopOverdue),
            Just(Event::Cleaned),
            Just(Event::RuntimeExceeded { limit: 5 }),
            Just(Event::Waiting { message: "w".into() }),
            Just(Event::Queued { message: "q".into() }),
            Just(Event::Unrunnable {
                reason: "ClientError: u".into()
            }),
            (host.clone(), phase).prop_map(|(h, p)| Event::HostPhase {
                host: h,
                phase: p,
                message: None
            }),
            (host.clone(), report).prop_map(|(h, r)| Event::HostDone { host: h, report: r }),
            host.prop_map(|h| Event::HostsLost {
                hosts: vec![h],
                reason: "InternalServerError: lost".into()
            }),
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: the status matches the last transition, times only
        /// grow, an ended job stays ended, and a job ends (and launches) at most once.
        #[test]
        fn any_sequence_keeps_the_invariants(events in proptest::collection::vec(any_event(), 0..40)) {
            let mut j = job();
            let (mut ended, mut launches) = (0, 0);
            for (i, e) in events.iter().enumerate() {
                let was_terminal = j.status.is_terminal();
                let before = j.clone();
                match step(&j, e, 10.0 + i as f64) {
                    Ok(s) => {
                        ended += s.effects.iter().filter(|x| **x == Effect::Ended).count();
                        launches += s.effects.iter().filter(|x| **x == Effect::Launch).count();
                        j = s.job;
                    }
                    Err(_) => prop_assert_eq!(&j, &before),
                }
                let last = j.transitions.last().unwrap();
                prop_assert_eq!(last.status, j.secondary_status);
                prop_assert_eq!(j.secondary_status.primary(), j.status);
                prop_assert!(j.transitions.windows(2).all(|w| w[0].start_time <= w[1].start_time));
                prop_assert!(j.transitions.windows(2).all(|w| allowed(w[0].status, w[1].status)));
                if was_terminal {
                    prop_assert_eq!(j.status, before.status);
                    prop_assert_eq!(&j.transitions, &before.transitions);
                }
                if j.status.is_terminal() {
                    prop_assert!(j.training_end_time.is_some() && last.end_time.is_some());
                }
            }
            prop_assert!(ended <= 1);
            prop_assert!(launches <= 1);
            prop_assert_eq!(ended == 1, j.status.is_terminal());
        }
    }
}
