//! The tuner's policy as a pure function: given a tuning job, its children (with their objective
//! and, where early stopping needs them, their intermediate values), the warm-start history and the
//! time, `plan` says what to do next. The tuner (`tuner.rs`) gathers the inputs and carries the
//! actions out.
//!
//! In order: a job winding down stops its running children and finishes once none runs; otherwise
//! early stopping judges each new intermediate value of running children; too many failures fail
//! the job; a completion criterion completes it; and children are launched while there is room.

use std::collections::BTreeMap;

use kiln_api::shapes::{CreateTrainingJobRequest, Tag};
use kiln_api::status::{EarlyStoppingType, TrainingJobStatus};
use kiln_api::tuning::TuningObjective;
use kiln_store::TuningJobRow;
use kiln_tune::{Direction, SearchSpace, StrategyConfig, Trial, WarmStart};

use super::machine::{Event, winding_down};
use super::{
    Child, child_name, child_request, definitions, direction, max_jobs, max_parallel, objective_of, ranges_of,
};
use super::{search_space, seed, strategy_of, trial_of};

/// A tuning job whose first this many finished children all failed without an objective fails.
const FAIL_AFTER: usize = 5;

/// Something the tuner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum TunerAction {
    /// Record a change of the tuning job (its state machine's event).
    Record(Event),
    /// Stop a running child.
    StopChild { name: String },
    /// Create the child with this index.
    Launch {
        index: usize,
        request: Box<CreateTrainingJobRequest>,
    },
}

/// What the tuner knows when it plans.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub job: &'a TuningJobRow,
    /// Children in index order.
    pub children: &'a [Child],
    /// Intermediate objective values of children, by name (only where early stopping or Hyperband
    /// needs them).
    pub intermediate: &'a BTreeMap<String, Vec<f64>>,
    /// The warm-start parents' trials.
    pub warm: Option<&'a WarmStart>,
    /// The tuning job's tags, which its children carry.
    pub tags: &'a [Tag],
    pub now: f64,
}

/// Whether the plan needs intermediate values (early stopping or Hyperband).
pub fn needs_intermediate(job: &TuningJobRow) -> bool {
    let cfg = &job.spec.hyper_parameter_tuning_job_config;
    cfg.training_job_early_stopping_type == Some(EarlyStoppingType::Auto)
        || cfg.strategy == kiln_api::status::TuningStrategy::Hyperband
}

/// Per definition: its space, strategy, direction and history.
struct Def {
    space: SearchSpace,
    strategy: StrategyConfig,
    direction: Direction,
    history: Vec<Trial>,
    /// The child index of each history entry.
    indices: Vec<usize>,
}

/// What to do next for `view.job`. An error is a fault of the job's definitions (reported, the job
/// is left as it is).
pub fn plan(view: &View) -> Result<Vec<TunerAction>, String> {
    let job = view.job;
    let mut actions = Vec::new();
    let running: Vec<&Child> = view.children.iter().filter(|c| !c.job.status.is_terminal()).collect();

    if winding_down(job) {
        for c in &running {
            if c.job.status == TrainingJobStatus::InProgress {
                actions.push(TunerAction::StopChild {
                    name: c.job.name.clone(),
                });
            }
        }
        if running.is_empty() {
            actions.push(TunerAction::Record(Event::Finish));
        }
        return Ok(actions);
    }

    let defs = definitions(job);
    if defs.is_empty() {
        return Ok(actions);
    }
    let cfg = &job.spec.hyper_parameter_tuning_job_config;
    let mut per_def: Vec<Def> = Vec::new();
    for d in &defs {
        let obj = objective_of(job, d).unwrap_or(TuningObjective {
            kind: "Minimize".into(),
            metric_name: String::new(),
        });
        per_def.push(Def {
            space: search_space(&ranges_of(job, d)).map_err(|e| e.message)?,
            strategy: strategy_of(cfg, d).map_err(|e| e.message)?,
            direction: direction(&obj),
            history: Vec::new(),
            indices: Vec::new(),
        });
    }
    let ndefs = per_def.len();
    for c in view.children {
        let d = &mut per_def[c.index % ndefs];
        let intermediate = view.intermediate.get(&c.job.name).cloned().unwrap_or_default();
        d.history.push(trial_of(c, intermediate));
        d.indices.push(c.index);
    }

    // Early stopping: judge each new intermediate value of running children, one at a time.
    let auto = cfg.training_job_early_stopping_type == Some(EarlyStoppingType::Auto);
    let mut judged = BTreeMap::new();
    let mut early = Vec::new();
    for d in &per_def {
        let hb = match d.strategy {
            StrategyConfig::Hyperband(h) => Some(h),
            _ => None,
        };
        if hb.is_none() && !auto {
            continue;
        }
        for (pos, trial) in d.history.iter().enumerate() {
            if !trial.is_running() {
                continue;
            }
            let Some(child) = view.children.iter().find(|c| c.index == d.indices[pos]) else {
                continue;
            };
            let name = &child.job.name;
            let seen = job.judged.get(name).copied().unwrap_or(0);
            for k in (seen + 1)..=trial.intermediate.len() {
                let mut history = d.history.clone();
                history[pos].intermediate.truncate(k);
                let stop = match hb {
                    Some(h) => kiln_tune::hyperband_should_stop(pos, &history, &h, d.direction),
                    None => kiln_tune::median_should_stop(pos, &history, d.direction),
                };
                judged.insert(name.clone(), k);
                if stop {
                    early.push(name.clone());
                    break;
                }
            }
        }
    }
    if !judged.is_empty() {
        for name in &early {
            actions.push(TunerAction::StopChild { name: name.clone() });
        }
        actions.push(TunerAction::Record(Event::Judged {
            judged,
            early_stopped: early,
        }));
    }

    // Failure: the first finished children all failed without an objective.
    let finished: Vec<&Child> = view.children.iter().filter(|c| c.job.status.is_terminal()).collect();
    if !finished.is_empty()
        && finished.len() >= FAIL_AFTER.min(max_jobs(job))
        && finished.iter().all(|c| c.objective.is_none())
    {
        let first = finished.iter().min_by_key(|c| c.index).map(|c| {
            c.job
                .failure_reason
                .clone()
                .unwrap_or_else(|| format!("{} emitted no objective metric", c.job.name))
        });
        let reason = format!(
            "The first {} training jobs failed without an objective value. First failure: {}",
            finished.len(),
            first.unwrap_or_default()
        );
        actions.push(TunerAction::Record(Event::Fail { reason }));
        return Ok(actions);
    }

    // Completion criteria.
    let mut completing: Option<String> = None;
    let mut convergence_time = None;
    for d in &per_def {
        if let Some(cc) = &cfg.completion_criteria {
            if let Some(target) = cc.target_objective_metric_value
                && kiln_tune::target_reached(&d.history, d.direction, target)
            {
                completing = Some(format!("the objective reached TargetObjectiveMetricValue {target}"));
            }
            if let Some(n) = cc
                .best_objective_not_improving
                .as_ref()
                .and_then(|b| b.max_number_of_training_jobs_not_improving)
                && kiln_tune::not_improving_count(&d.history, d.direction) >= n.max(1) as usize
            {
                completing = Some(format!("{n} training jobs in a row did not improve the best objective"));
            }
            if cc
                .convergence_detected
                .as_ref()
                .and_then(|c| c.complete_on_convergence.as_deref())
                == Some("Enabled")
                && kiln_tune::convergence_detected(&d.history, d.direction)
            {
                completing = Some("the objective converged".into());
                convergence_time = Some(view.now);
            }
        }
    }
    if let Some(limit) = cfg.resource_limits.max_runtime_in_seconds
        && view.now - job.creation_time > limit as f64
    {
        completing = Some(format!("MaxRuntimeInSeconds ({limit} s) was reached"));
    }
    // Children that exist count as launched even if the count was not recorded (a crash between
    // creating a child and recording it).
    let mut launched = (job.launched.max(0) as usize).max(view.children.iter().map(|c| c.index + 1).max().unwrap_or(0));
    if launched >= max_jobs(job) && running.is_empty() {
        completing = Some("every training job ran".into());
    }
    if let Some(reason) = completing {
        actions.push(TunerAction::Record(Event::Complete {
            reason,
            convergence_time,
        }));
        return Ok(actions);
    }

    // Launch while there is room.
    let mut in_flight = running.len();
    while in_flight < max_parallel(job) && launched < max_jobs(job) {
        let def_i = launched % ndefs;
        let d = &per_def[def_i];
        let pos = d.history.len();
        let seed = seed(job) ^ (def_i as u64).wrapping_mul(0x9e3779b97f4a7c15);
        let suggestion =
            kiln_tune::suggest_with_warm_start(&d.strategy, &d.space, &d.history, view.warm, d.direction, seed, pos);
        let assignment = match suggestion {
            Ok(a) => a,
            Err(kiln_tune::TuneError::GridExhausted { .. }) => break,
            Err(e) => return Err(format!("tuning strategy failed: {e}")),
        };
        let name = child_name(&job.name, launched);
        let tags = (!view.tags.is_empty()).then(|| view.tags.to_vec());
        let request = child_request(&name, defs[def_i], assignment.clone(), tags).map_err(|e| e.message)?;
        actions.push(TunerAction::Launch {
            index: launched,
            request: Box::new(request),
        });
        per_def[def_i].history.push(Trial::running(assignment));
        per_def[def_i].indices.push(launched);
        launched += 1;
        in_flight += 1;
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::shapes::MetricData;
    use kiln_api::status::{SecondaryStatus, TuningJobStatus};
    use kiln_store::{RunRecord, TrainingJobRow};

    fn tuning(config: serde_json::Value) -> TuningJobRow {
        let spec = serde_json::json!({
            "HyperParameterTuningJobName": "t",
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": {
                "StaticHyperParameters": {"epochs": "9"},
                "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File",
                    "MetricDefinitions": [{"Name": "score", "Regex": "score=([0-9.]+)"}]},
                "RoleArn": "arn:aws:iam::123456789012:role/R",
                "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
                "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
                "StoppingCondition": {"MaxRuntimeInSeconds": 60}
            }
        });
        TuningJobRow {
            account: "123456789012".into(),
            name: "t".into(),
            arn: "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/t".into(),
            status: TuningJobStatus::InProgress,
            strategy: kiln_api::status::TuningStrategy::Random,
            creation_time: 0.0,
            last_modified_time: 0.0,
            end_time: None,
            failure_reason: None,
            completing: None,
            convergence_detected_time: None,
            launched: 0,
            early_stopped: Vec::new(),
            judged: BTreeMap::new(),
            spec: serde_json::from_value(spec).unwrap(),
            version: 0,
        }
    }

    fn config(max_jobs: i64, parallel: i64) -> serde_json::Value {
        serde_json::json!({
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs, "MaxParallelTrainingJobs": parallel},
            "ParameterRanges": {"ContinuousParameterRanges": [
                {"Name": "x", "MinValue": "0.0", "MaxValue": "1.0", "ScalingType": "Linear"}]},
            "RandomSeed": 7
        })
    }

    /// A child with index `i`, status `s` and objective `o` (tuned x = `x`).
    fn child(i: usize, s: TrainingJobStatus, o: Option<f64>, x: f64) -> Child {
        let name = child_name("t", i);
        let mut spec: kiln_api::shapes::CreateTrainingJobRequest = serde_json::from_value(serde_json::json!({
            "TrainingJobName": name, "RoleArn": "r", "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "HyperParameters": {"x": x.to_string()}
        }))
        .unwrap();
        spec.training_job_name = name.clone();
        let secondary = match s {
            TrainingJobStatus::Completed => SecondaryStatus::Completed,
            TrainingJobStatus::Failed => SecondaryStatus::Failed,
            TrainingJobStatus::Stopped => SecondaryStatus::Stopped,
            _ => SecondaryStatus::Training,
        };
        Child {
            index: i,
            job: TrainingJobRow {
                account: "123456789012".into(),
                name: name.clone(),
                arn: format!("arn:{name}"),
                status: s,
                secondary_status: secondary,
                creation_time: i as f64,
                last_modified_time: i as f64,
                training_start_time: Some(i as f64),
                training_end_time: s.is_terminal().then_some(i as f64 + 10.0),
                failure_reason: (s == TrainingJobStatus::Failed).then(|| "AlgorithmError: bad".into()),
                stop_reason: None,
                model_artifacts: None,
                training_time_in_seconds: None,
                billable_time_in_seconds: None,
                warm_pool: None,
                tuning_job_arn: None,
                transitions: Vec::new(),
                final_metrics: o
                    .map(|v| MetricData {
                        metric_name: "score".into(),
                        value: v,
                        timestamp: 1.0,
                    })
                    .into_iter()
                    .collect(),
                spec,
                run: RunRecord::default(),
                version: 0,
            },
            tuned: BTreeMap::from([("x".to_string(), x.to_string())]),
            objective: o,
        }
    }

    fn plan_of(job: &TuningJobRow, children: &[Child], intermediate: &BTreeMap<String, Vec<f64>>) -> Vec<TunerAction> {
        plan(&View {
            job,
            children,
            intermediate,
            warm: None,
            tags: &[],
            now: 100.0,
        })
        .unwrap()
    }

    fn launches(actions: &[TunerAction]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                TunerAction::Launch { index, .. } => Some(*index),
                _ => None,
            })
            .collect()
    }

    const NONE: &BTreeMap<String, Vec<f64>> = &BTreeMap::new();

    #[test]
    fn launches_fill_the_parallel_slots_with_named_children() {
        let job = tuning(config(5, 2));
        let actions = plan_of(&job, &[], NONE);
        assert_eq!(launches(&actions), [0, 1]);
        let TunerAction::Launch { request, .. } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(request.training_job_name, child_name("t", 0));
        let hps = request.hyper_parameters.as_ref().unwrap();
        assert_eq!(hps["epochs"], "9");
        assert!(hps.contains_key("x"));
        // The same inputs plan the same children (a new leader re-plans identically).
        assert_eq!(plan_of(&job, &[], NONE), actions);
        // One running: one slot left, after the highest existing index even if the count lagged.
        let running = [
            child(0, TrainingJobStatus::Completed, Some(0.3), 0.3),
            child(1, TrainingJobStatus::InProgress, None, 0.6),
        ];
        assert_eq!(launches(&plan_of(&job, &running, NONE)), [2]);
    }

    #[test]
    fn all_children_ran_completes_and_winding_down_stops_then_finishes() {
        let mut job = tuning(config(2, 2));
        job.launched = 2;
        let done = [
            child(0, TrainingJobStatus::Completed, Some(0.3), 0.3),
            child(1, TrainingJobStatus::Completed, Some(0.5), 0.5),
        ];
        let actions = plan_of(&job, &done, NONE);
        assert_eq!(
            actions,
            [TunerAction::Record(Event::Complete {
                reason: "every training job ran".into(),
                convergence_time: None
            })]
        );
        job.completing = Some("every training job ran".into());
        let running = [
            child(0, TrainingJobStatus::Completed, Some(0.3), 0.3),
            child(1, TrainingJobStatus::InProgress, None, 0.5),
        ];
        assert_eq!(
            plan_of(&job, &running, NONE),
            [TunerAction::StopChild {
                name: child_name("t", 1)
            }]
        );
        assert_eq!(plan_of(&job, &done, NONE), [TunerAction::Record(Event::Finish)]);
    }

    #[test]
    fn five_failures_without_an_objective_fail_the_job() {
        let job = tuning(config(20, 5));
        let failed: Vec<Child> = (0..5).map(|i| child(i, TrainingJobStatus::Failed, None, 0.1)).collect();
        let actions = plan_of(&job, &failed, NONE);
        let [TunerAction::Record(Event::Fail { reason })] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert!(reason.starts_with(
            "The first 5 training jobs failed without an objective value. First failure: AlgorithmError: bad"
        ));
        // Four are not enough, and one success among them saves the job.
        let four = plan_of(&job, &failed[..4], NONE);
        assert!(
            !four
                .iter()
                .any(|a| matches!(a, TunerAction::Record(Event::Fail { .. })))
        );
        assert_eq!(launches(&four), [4, 5, 6, 7, 8]);
        let mut mixed = failed.clone();
        mixed[2] = child(2, TrainingJobStatus::Completed, Some(0.5), 0.5);
        assert!(
            !plan_of(&job, &mixed, NONE)
                .iter()
                .any(|a| matches!(a, TunerAction::Record(Event::Fail { .. })))
        );
    }

    #[test]
    fn a_target_reached_completes() {
        let mut cfg = config(20, 1);
        cfg["TuningJobCompletionCriteria"] = serde_json::json!({"TargetObjectiveMetricValue": 0.9});
        let job = tuning(cfg);
        let below = [child(0, TrainingJobStatus::Completed, Some(0.5), 0.5)];
        assert_eq!(launches(&plan_of(&job, &below, NONE)), [1]);
        let reached = [child(0, TrainingJobStatus::Completed, Some(0.95), 0.95)];
        assert!(matches!(
            plan_of(&job, &reached, NONE).as_slice(),
            [TunerAction::Record(Event::Complete { reason, .. })] if reason.contains("TargetObjectiveMetricValue 0.9")
        ));
    }

    #[test]
    fn early_stopping_judges_new_values_and_stops_the_weak() {
        let mut cfg = config(10, 3);
        cfg["TrainingJobEarlyStoppingType"] = "Auto".into();
        let mut job = tuning(cfg);
        // Five finished children (the median rule's minimum) and a weak one running.
        let mut children: Vec<Child> = (0..5)
            .map(|i| child(i, TrainingJobStatus::Completed, Some(0.8 + i as f64 / 100.0), 0.8))
            .collect();
        children.push(child(5, TrainingJobStatus::InProgress, None, 0.05));
        let mut curves = BTreeMap::new();
        for c in &children[..5] {
            curves.insert(c.job.name.clone(), vec![0.5, 0.7, 0.8, 0.9]);
        }
        curves.insert(children[5].job.name.clone(), vec![0.01, 0.02, 0.03]);
        let actions = plan_of(&job, &children, &curves);
        let weak = child_name("t", 5);
        assert!(
            actions.contains(&TunerAction::StopChild { name: weak.clone() }),
            "{actions:?}"
        );
        let judged = actions.iter().find_map(|a| match a {
            TunerAction::Record(Event::Judged { judged, early_stopped }) => {
                Some((judged.clone(), early_stopped.clone()))
            }
            _ => None,
        });
        let (judged, early) = judged.unwrap();
        assert_eq!(early, std::slice::from_ref(&weak));
        assert!(judged[&weak] <= 3);
        // Values already judged are not judged again.
        job.judged.insert(weak.clone(), 3);
        let again = plan_of(&job, &children, &curves);
        assert!(!again.iter().any(|a| matches!(
            a,
            TunerAction::StopChild { .. } | TunerAction::Record(Event::Judged { .. })
        )));
    }

    #[test]
    fn a_grid_stops_launching_when_exhausted() {
        let job = tuning(serde_json::json!({
            "Strategy": "Grid",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "score"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 10},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "x", "Values": ["a", "b", "c"]}]}
        }));
        let actions = plan_of(&job, &[], NONE);
        assert_eq!(launches(&actions), [0, 1, 2]);
        let values: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                TunerAction::Launch { request, .. } => request.hyper_parameters.as_ref().map(|h| h["x"].clone()),
                _ => None,
            })
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"]);
    }
}
