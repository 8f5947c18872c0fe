//! Hyperparameter tuning jobs (reference §3.8–§3.12, §11): the state machine and the tuner's
//! policy (pure), the API operations, and the tuner's passes. Strategies come from `kiln-tune`.
//!
//! Rules kiln chooses where SageMaker does not document one:
//! - Child names are `<tuning>-<NNN>-<8 hex>`, the hex a hash of the tuning job's name and the
//!   child's index: re-launching after a restart or a change of leader finds the child already
//!   there, so nothing is duplicated or lost.
//! - With several `TrainingJobDefinitions`, children take the definitions in turn.
//! - A tuning job *fails* when its first five finished children (or all of them, if it launches
//!   fewer) failed without an objective value; the reason quotes the first child's failure.
//! - A completion criterion (target reached, not improving, convergence, MaxRuntimeInSeconds)
//!   stops launching, stops the running children, and the job ends `Completed`.

mod api;
pub mod machine;
pub mod plan;
mod tuner;

use std::collections::BTreeMap;

use kiln_api::responses::{
    FinalObjectiveMetric, ObjectiveStatus, ObjectiveStatusCounters, TrainingJobStatusCounters, TuningChildSummary,
};
use kiln_api::shapes::{CreateTrainingJobRequest, Tag};
use kiln_api::status::{TrainingJobStatus, TuningStrategy};
use kiln_api::tuning::{NumericRange, ParameterRanges, TrainingJobDefinition, TuningObjective};
use kiln_api::{ApiResult, AwsError};
use kiln_store::{TrainingJobRow, TuningJobRow};
use kiln_tune::{
    BayesianConfig, Direction, HyperbandConfig, Param, Scaling, SearchSpace, StrategyConfig, Trial, TrialState,
};
use serde_json::{Value, json};

/// Names of static hyperparameters SageMaker reads `MaxResource` from for Hyperband.
const EPOCH_KEYS: &[&str] = &["epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs"];

/// The training-job definitions of a tuning job, in order.
pub fn definitions(job: &TuningJobRow) -> Vec<&TrainingJobDefinition> {
    match (&job.spec.training_job_definition, &job.spec.training_job_definitions) {
        (Some(d), _) => vec![d],
        (None, Some(ds)) => ds.iter().collect(),
        _ => Vec::new(),
    }
}

/// The objective of a definition (its own, or the tuning job's).
pub fn objective_of(job: &TuningJobRow, def: &TrainingJobDefinition) -> Option<TuningObjective> {
    def.tuning_objective
        .clone()
        .or_else(|| job.spec.hyper_parameter_tuning_job_config.objective.clone())
}

/// The tuned ranges of a definition (its own, or the tuning job's).
pub fn ranges_of(job: &TuningJobRow, def: &TrainingJobDefinition) -> ParameterRanges {
    def.hyper_parameter_ranges
        .clone()
        .or_else(|| job.spec.hyper_parameter_tuning_job_config.parameter_ranges.clone())
        .unwrap_or_default()
}

/// `MaxNumberOfTrainingJobs`.
pub fn max_jobs(job: &TuningJobRow) -> usize {
    job.spec
        .hyper_parameter_tuning_job_config
        .resource_limits
        .max_number_of_training_jobs
        .unwrap_or(1)
        .max(1) as usize
}

/// `MaxParallelTrainingJobs`.
pub fn max_parallel(job: &TuningJobRow) -> usize {
    job.spec
        .hyper_parameter_tuning_job_config
        .resource_limits
        .max_parallel_training_jobs
        .max(1) as usize
}

/// The strategies' seed: `RandomSeed`, or a hash of the name (so a restart suggests the same).
pub fn seed(job: &TuningJobRow) -> u64 {
    match job.spec.hyper_parameter_tuning_job_config.random_seed {
        Some(s) => s as u64,
        None => fnv(job.name.to_lowercase().as_bytes()),
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Which way an objective improves.
pub fn direction(obj: &TuningObjective) -> Direction {
    if obj.kind == "Maximize" {
        Direction::Maximize
    } else {
        Direction::Minimize
    }
}

fn scaling(s: &Option<String>) -> Scaling {
    match s.as_deref() {
        Some("Linear") => Scaling::Linear,
        Some("Logarithmic") => Scaling::Logarithmic,
        Some("ReverseLogarithmic") => Scaling::ReverseLogarithmic,
        _ => Scaling::Auto,
    }
}

fn parse_bound<T: std::str::FromStr>(r: &NumericRange, which: &str, v: &str, kind: &str) -> ApiResult<T> {
    v.trim().parse().map_err(|_| {
        AwsError::validation(format!(
            "The {which} '{v}' of hyperparameter range '{}' is not a valid {kind}.",
            r.name
        ))
    })
}

/// The search space of a definition's ranges.
pub fn search_space(ranges: &ParameterRanges) -> ApiResult<SearchSpace> {
    let mut params = Vec::new();
    for r in &ranges.integer_parameter_ranges {
        let min: i64 = parse_bound(r, "MinValue", &r.min_value, "integer")?;
        let max: i64 = parse_bound(r, "MaxValue", &r.max_value, "integer")?;
        params.push(Param::integer(&r.name, min, max, scaling(&r.scaling_type)));
    }
    for r in &ranges.continuous_parameter_ranges {
        let min: f64 = parse_bound(r, "MinValue", &r.min_value, "number")?;
        let max: f64 = parse_bound(r, "MaxValue", &r.max_value, "number")?;
        params.push(Param::continuous(&r.name, min, max, scaling(&r.scaling_type)));
    }
    for r in &ranges.categorical_parameter_ranges {
        params.push(Param::categorical(&r.name, r.values.clone()));
    }
    let space = SearchSpace::new(params);
    space.validate().map_err(|e| AwsError::validation(e.to_string()))?;
    Ok(space)
}

/// The strategy a definition is tuned with.
pub fn strategy_of(
    job_config: &kiln_api::tuning::TuningJobConfig,
    def: &TrainingJobDefinition,
) -> ApiResult<StrategyConfig> {
    Ok(match job_config.strategy {
        TuningStrategy::Random => StrategyConfig::Random,
        TuningStrategy::Grid => StrategyConfig::Grid,
        TuningStrategy::Hyperband => {
            let hb = job_config
                .strategy_config
                .as_ref()
                .and_then(|s| s.hyperband_strategy_config.clone())
                .unwrap_or_default();
            let statics = def.static_hyper_parameters.clone().unwrap_or_default();
            let inferred = EPOCH_KEYS
                .iter()
                .find_map(|k| statics.get(*k))
                .and_then(|v| v.trim_matches('"').parse::<i64>().ok());
            let max = hb.max_resource.or(inferred).ok_or_else(|| {
                AwsError::validation(
                    "Hyperband needs a MaxResource: set HyperbandStrategyConfig.MaxResource, or a static \
                     hyperparameter epochs (or numepochs, n-epochs, n_epochs, num_epochs).",
                )
            })?;
            StrategyConfig::Hyperband(HyperbandConfig {
                min_resource: hb.min_resource.unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32,
                max_resource: max.clamp(1, i64::from(u32::MAX)) as u32,
            })
        }
        TuningStrategy::Bayesian => StrategyConfig::Bayesian(BayesianConfig::default()),
    })
}

/// `<tuning>-<NNN>-<8 hex>`.
pub fn child_name(tuning: &str, index: usize) -> String {
    // splitmix64's finaliser spreads FNV's similar outputs for similar inputs over all 32 bits.
    let mut h = fnv(format!("{}#{index}", tuning.to_lowercase()).as_bytes());
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
    h ^= h >> 31;
    format!("{tuning}-{:03}-{:08x}", index + 1, h as u32)
}

/// The index of a child named by [`child_name`].
pub fn child_index(tuning: &str, child: &str) -> Option<usize> {
    let rest = child.get(tuning.len() + 1..)?;
    let (n, _) = rest.split_once('-')?;
    n.parse::<usize>().ok()?.checked_sub(1)
}

/// The `CreateTrainingJob` request of a child: the definition, the static hyperparameters, the
/// tuned values, and the tuning job's tags.
pub fn child_request(
    name: &str,
    def: &TrainingJobDefinition,
    tuned: BTreeMap<String, String>,
    tags: Option<Vec<Tag>>,
) -> ApiResult<CreateTrainingJobRequest> {
    let mut v = serde_json::Map::new();
    for (k, val) in &def.extra {
        v.insert(k.clone(), val.clone());
    }
    let alg = &def.algorithm_specification;
    let mut spec = json!({ "TrainingInputMode": alg.training_input_mode });
    if let Some(i) = &alg.training_image {
        spec["TrainingImage"] = json!(i);
    }
    if let Some(a) = &alg.algorithm_name {
        spec["AlgorithmName"] = json!(a);
    }
    if let Some(m) = &alg.metric_definitions {
        spec["MetricDefinitions"] = json!(m);
    }
    v.insert("AlgorithmSpecification".into(), spec);
    if !v.contains_key("ResourceConfig")
        && let Some(rc) = &def.hyper_parameter_tuning_resource_config
    {
        let mut r = serde_json::Map::new();
        for k in ["InstanceType", "InstanceCount", "VolumeSizeInGB", "VolumeKmsKeyId"] {
            if let Some(x) = rc.get(k) {
                r.insert(k.into(), x.clone());
            }
        }
        if let Some(first) = rc
            .get("InstanceConfigs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            for k in ["InstanceType", "InstanceCount", "VolumeSizeInGB"] {
                if let Some(x) = first.get(k) {
                    r.insert(k.into(), x.clone());
                }
            }
        }
        v.insert("ResourceConfig".into(), Value::Object(r));
    }
    let mut hps = def.static_hyper_parameters.clone().unwrap_or_default();
    hps.extend(tuned);
    v.insert("HyperParameters".into(), json!(hps));
    v.insert("TrainingJobName".into(), json!(name));
    if let Some(t) = tags
        && !t.is_empty()
    {
        v.insert("Tags".into(), json!(t));
    }
    serde_json::from_value(Value::Object(v))
        .map_err(|e| AwsError::validation(format!("The training job definition cannot make a training job: {e}")))
}

/// One child as the tuner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub index: usize,
    pub job: TrainingJobRow,
    /// The values of the tuned hyperparameters.
    pub tuned: BTreeMap<String, String>,
    /// The last value of the objective metric, if any.
    pub objective: Option<f64>,
}

/// A child as a trial of the strategies' history.
pub fn trial_of(c: &Child, intermediate: Vec<f64>) -> Trial {
    let state = match c.job.status {
        TrainingJobStatus::InProgress | TrainingJobStatus::Stopping | TrainingJobStatus::Deleting => {
            TrialState::Running
        }
        TrainingJobStatus::Completed => match c.objective {
            Some(o) => TrialState::Completed { objective: o },
            None => TrialState::Failed,
        },
        TrainingJobStatus::Failed => TrialState::Failed,
        TrainingJobStatus::Stopped => TrialState::Stopped { objective: c.objective },
    };
    Trial {
        assignment: c.tuned.clone(),
        state,
        intermediate,
        finish_seq: c.job.training_end_time.map(|t| (t * 1000.0) as u64),
    }
}

fn objective_status(c: &Child) -> ObjectiveStatus {
    match c.job.status {
        TrainingJobStatus::InProgress | TrainingJobStatus::Stopping | TrainingJobStatus::Deleting => {
            ObjectiveStatus::Pending
        }
        _ if c.objective.is_some() => ObjectiveStatus::Succeeded,
        _ => ObjectiveStatus::Failed,
    }
}

/// `TrainingJobStatusCounters` and `ObjectiveStatusCounters` of a tuning job's children.
pub fn counters(children: &[Child]) -> (TrainingJobStatusCounters, ObjectiveStatusCounters) {
    let mut t = TrainingJobStatusCounters::default();
    let mut o = ObjectiveStatusCounters::default();
    for c in children {
        match c.job.status {
            TrainingJobStatus::Completed => t.completed += 1,
            TrainingJobStatus::Stopped => t.stopped += 1,
            TrainingJobStatus::Failed => {
                let reason = c.job.failure_reason.as_deref().unwrap_or("");
                if reason.starts_with("InternalServerError") || reason.starts_with("CapacityError") {
                    t.retryable_error += 1
                } else {
                    t.non_retryable_error += 1
                }
            }
            _ => t.in_progress += 1,
        }
        match objective_status(c) {
            ObjectiveStatus::Succeeded => o.succeeded += 1,
            ObjectiveStatus::Pending => o.pending += 1,
            ObjectiveStatus::Failed => o.failed += 1,
        }
    }
    (t, o)
}

/// The direction of the tuning job's (first definition's) objective.
fn job_direction(job: &TuningJobRow) -> Option<Direction> {
    definitions(job)
        .first()
        .and_then(|d| objective_of(job, d))
        .map(|o| direction(&o))
}

/// The finished child with the best objective.
pub fn best_child<'a>(job: &TuningJobRow, children: &'a [Child]) -> Option<&'a Child> {
    let dir = job_direction(job)?;
    children
        .iter()
        .filter(|c| c.objective.is_some() && c.job.status.is_terminal())
        .reduce(|a, b| {
            if dir.better(b.objective.unwrap_or(0.0), a.objective.unwrap_or(0.0)) {
                b
            } else {
                a
            }
        })
}

/// `NumberOfTrainingJobsObjectiveNotImproving`.
pub fn not_improving(job: &TuningJobRow, children: &[Child]) -> usize {
    let Some(dir) = job_direction(job) else {
        return 0;
    };
    let history: Vec<Trial> = children.iter().map(|c| trial_of(c, Vec::new())).collect();
    kiln_tune::not_improving_count(&history, dir)
}

/// `HyperParameterTrainingJobSummary` of a child.
pub fn summary(tuning: &TuningJobRow, c: &Child) -> TuningChildSummary {
    let defs = definitions(tuning);
    let def = defs.get(c.index % defs.len().max(1)).copied();
    let metric = match (c.objective, def.and_then(|d| objective_of(tuning, d))) {
        (Some(value), Some(obj)) => Some(FinalObjectiveMetric {
            kind: obj.kind,
            metric_name: obj.metric_name,
            value,
        }),
        _ => None,
    };
    TuningChildSummary {
        training_job_definition_name: def.and_then(|d| d.definition_name.clone()),
        training_job_name: c.job.name.clone(),
        training_job_arn: c.job.arn.clone(),
        tuning_job_name: tuning.name.clone(),
        creation_time: c.job.creation_time,
        training_start_time: c.job.training_start_time,
        training_end_time: c.job.training_end_time,
        training_job_status: c.job.status,
        tuned_hyper_parameters: c.tuned.clone(),
        failure_reason: c.job.failure_reason.clone(),
        final_hyper_parameter_tuning_job_objective_metric: metric,
        objective_status: objective_status(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_are_stable_and_parse_back() {
        let a = child_name("xgb-tune", 0);
        assert_eq!(a, child_name("xgb-tune", 0));
        assert!(a.starts_with("xgb-tune-001-") && a.len() == "xgb-tune-001-".len() + 8);
        assert_eq!(child_index("xgb-tune", &a), Some(0));
        assert_eq!(child_index("xgb-tune", &child_name("xgb-tune", 41)), Some(41));
        assert_ne!(child_name("xgb-tune", 1), child_name("XGB-tune2", 1));
        assert!(child_name(&"t".repeat(32), 749).len() <= 63);
    }

    #[test]
    fn ranges_become_a_search_space() {
        let r = ParameterRanges {
            integer_parameter_ranges: vec![NumericRange {
                name: "max_depth".into(),
                min_value: "2".into(),
                max_value: "8".into(),
                scaling_type: None,
            }],
            continuous_parameter_ranges: vec![NumericRange {
                name: "eta".into(),
                min_value: "0.01".into(),
                max_value: "0.5".into(),
                scaling_type: Some("Logarithmic".into()),
            }],
            categorical_parameter_ranges: vec![],
            auto_parameters: None,
        };
        assert_eq!(search_space(&r).unwrap().len(), 2);
        let mut bad = r.clone();
        bad.continuous_parameter_ranges[0].min_value = "-1".into();
        assert!(search_space(&bad).unwrap_err().message.contains("eta"));
        bad.continuous_parameter_ranges[0].min_value = "x".into();
        assert!(search_space(&bad).unwrap_err().message.contains("not a valid number"));
    }
}
