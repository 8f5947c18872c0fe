//! The tuning-job state machine: `step(job, event, now) -> (job', effects)`, pure.
//!
//! | status | event | becomes | effects |
//! |---|---|---|---|
//! | InProgress | `Stop` | Stopping | `StopChildren` |
//! | InProgress | `Complete` | InProgress, winding down (`completing` set; no more launches) | `StopChildren` |
//! | InProgress | `Fail` | InProgress, winding down (`failure_reason` set) | `StopChildren` |
//! | InProgress | `Judged` | InProgress (early-stopping bookkeeping) | |
//! | InProgress | `Launched` | InProgress (`launched` raised, never lowered) | |
//! | InProgress, Stopping | `Finish` | Stopped if stopping, else Failed if failing, else Completed | `Wake` |
//! | Stopping | `Stop` | Stopping | |
//! | ended | `Stop` | refused | |
//!
//! Other events on a job that is winding down or ended change nothing: the tuner's view may lag a
//! committed change by one pass.

use std::collections::BTreeMap;

use kiln_api::status::TuningJobStatus;
use kiln_store::TuningJobRow;

/// What happened to a tuning job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `StopHyperParameterTuningJob`.
    Stop,
    /// Early stopping judged children's intermediate values; `early_stopped` were stopped for it.
    Judged {
        judged: BTreeMap<String, usize>,
        early_stopped: Vec<String>,
    },
    /// Children up to `count` exist.
    Launched { count: i64 },
    /// A completion criterion fired.
    Complete {
        reason: String,
        convergence_time: Option<f64>,
    },
    /// Too many children failed without an objective.
    Fail { reason: String },
    /// Every child of a winding-down job ended.
    Finish,
}

/// What must happen outside the store after a change is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Stop the children that still run.
    StopChildren,
    /// Run the tuner (and scheduler) soon.
    Wake,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Whether the tuner should launch no more children and wait for the running ones to end.
pub fn winding_down(job: &TuningJobRow) -> bool {
    job.status == TuningJobStatus::Stopping || job.completing.is_some() || job.failure_reason.is_some()
}

/// Applies `event` to `job` at `now`.
pub fn step(job: &TuningJobRow, event: &Event, now: f64) -> Result<(TuningJobRow, Vec<Effect>), Refused> {
    let mut job = job.clone();
    let mut effects = Vec::new();
    let active = job.status == TuningJobStatus::InProgress && !winding_down(&job);
    match event {
        Event::Stop => match job.status {
            TuningJobStatus::InProgress => {
                job.status = TuningJobStatus::Stopping;
                job.last_modified_time = now;
                effects.push(Effect::StopChildren);
            }
            TuningJobStatus::Stopping => {}
            s => {
                return Err(Refused(format!(
                    "The tuning job '{}' is {s}; only an InProgress tuning job can be stopped.",
                    job.name
                )));
            }
        },
        Event::Judged { judged, early_stopped } => {
            if job.status.is_active() {
                for (child, n) in judged {
                    let seen = job.judged.entry(child.clone()).or_insert(0);
                    *seen = (*seen).max(*n);
                }
                for s in early_stopped {
                    if !job.early_stopped.contains(s) {
                        job.early_stopped.push(s.clone());
                    }
                }
            }
        }
        Event::Launched { count } => {
            if job.status.is_active() && *count > job.launched {
                job.launched = *count;
                job.last_modified_time = now;
            }
        }
        Event::Complete {
            reason,
            convergence_time,
        } => {
            if active {
                job.completing = Some(reason.clone());
                if convergence_time.is_some() {
                    job.convergence_detected_time = *convergence_time;
                }
                job.last_modified_time = now;
                effects.push(Effect::StopChildren);
            }
        }
        Event::Fail { reason } => {
            if active {
                job.failure_reason = Some(reason.chars().take(1024).collect());
                job.last_modified_time = now;
                effects.push(Effect::StopChildren);
            }
        }
        Event::Finish => {
            if job.status.is_active() && winding_down(&job) {
                job.status = if job.status == TuningJobStatus::Stopping {
                    TuningJobStatus::Stopped
                } else if job.failure_reason.is_some() {
                    TuningJobStatus::Failed
                } else {
                    TuningJobStatus::Completed
                };
                job.end_time = Some(now);
                job.last_modified_time = now;
                effects.push(Effect::Wake);
            }
        }
    }
    Ok((job, effects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::status::TuningStrategy;

    fn job() -> TuningJobRow {
        TuningJobRow {
            account: "1".into(),
            name: "t".into(),
            arn: "arn:t".into(),
            status: TuningJobStatus::InProgress,
            strategy: TuningStrategy::Random,
            creation_time: 1.0,
            last_modified_time: 1.0,
            end_time: None,
            failure_reason: None,
            completing: None,
            convergence_detected_time: None,
            launched: 0,
            early_stopped: Vec::new(),
            judged: BTreeMap::new(),
            spec: Default::default(),
            version: 0,
        }
    }

    fn run(mut j: TuningJobRow, events: &[Event]) -> (TuningJobRow, Vec<Effect>) {
        let mut all = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let (next, effects) = step(&j, e, 10.0 + i as f64).unwrap();
            j = next;
            all.extend(effects);
        }
        (j, all)
    }

    #[test]
    fn stop_winds_down_then_ends_stopped() {
        let (j, effects) = run(job(), &[Event::Stop, Event::Stop]);
        assert_eq!(
            (j.status, effects.as_slice()),
            (TuningJobStatus::Stopping, &[Effect::StopChildren][..])
        );
        // No launches are recorded while winding down; completion does not override a stop.
        let (j, effects) = run(
            j,
            &[
                Event::Launched { count: 3 },
                Event::Complete {
                    reason: "r".into(),
                    convergence_time: None,
                },
            ],
        );
        assert!(effects.is_empty());
        assert_eq!(j.launched, 3);
        assert!(j.completing.is_none());
        let (j, effects) = run(j, &[Event::Finish]);
        assert_eq!(
            (j.status, effects.as_slice()),
            (TuningJobStatus::Stopped, &[Effect::Wake][..])
        );
        assert!(j.end_time.is_some());
        assert!(
            step(&j, &Event::Stop, 20.0)
                .unwrap_err()
                .0
                .contains("only an InProgress")
        );
        // Nothing moves an ended job.
        for e in [
            Event::Finish,
            Event::Launched { count: 9 },
            Event::Fail { reason: "x".into() },
        ] {
            assert_eq!(step(&j, &e, 30.0).unwrap().0, j);
        }
    }

    #[test]
    fn complete_and_fail_end_once_the_children_have() {
        // Finish before winding down does nothing.
        assert_eq!(step(&job(), &Event::Finish, 2.0).unwrap().0, job());
        let (j, effects) = run(
            job(),
            &[Event::Complete {
                reason: "every training job ran".into(),
                convergence_time: Some(5.0),
            }],
        );
        assert_eq!(effects, [Effect::StopChildren]);
        assert_eq!(j.convergence_detected_time, Some(5.0));
        // The first criterion wins: a later failure does not replace it.
        let (j, effects) = run(j, &[Event::Fail { reason: "late".into() }, Event::Finish]);
        assert_eq!(effects, [Effect::Wake]);
        assert_eq!((j.status, j.failure_reason), (TuningJobStatus::Completed, None));
        let (j, _) = run(
            job(),
            &[
                Event::Fail {
                    reason: "x".repeat(2000),
                },
                Event::Finish,
            ],
        );
        assert_eq!(j.status, TuningJobStatus::Failed);
        assert_eq!(j.failure_reason.unwrap().len(), 1024);
    }

    #[test]
    fn judgements_and_launch_counts_only_grow() {
        let judged = |n| Event::Judged {
            judged: BTreeMap::from([("c1".to_string(), n)]),
            early_stopped: vec!["c1".into()],
        };
        let (j, _) = run(
            job(),
            &[
                judged(3),
                judged(2),
                Event::Launched { count: 4 },
                Event::Launched { count: 2 },
            ],
        );
        assert_eq!(j.judged["c1"], 3);
        assert_eq!(j.early_stopped, ["c1"]);
        assert_eq!(j.launched, 4);
    }
}
