//! Hyperparameter tuning request shapes, named as in the AWS model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::shapes::{Extra, MetricDefinition, Tag};
use crate::status::{EarlyStoppingType, TuningStrategy};

/// `HyperParameterTuningJobObjective`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningObjective {
    #[serde(rename = "Type")]
    pub kind: String,
    pub metric_name: String,
}

/// `IntegerParameterRange` and `ContinuousParameterRange` (bounds are strings on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NumericRange {
    pub name: String,
    pub min_value: String,
    pub max_value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_type: Option<String>,
}

/// `CategoricalParameterRange`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CategoricalRange {
    pub name: String,
    pub values: Vec<String>,
}

/// `ParameterRanges`; `DescribeHyperParameterTuningJob` always shows the three lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ParameterRanges {
    #[serde(default)]
    pub integer_parameter_ranges: Vec<NumericRange>,
    #[serde(default)]
    pub continuous_parameter_ranges: Vec<NumericRange>,
    #[serde(default)]
    pub categorical_parameter_ranges: Vec<CategoricalRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_parameters: Option<Value>,
}

impl ParameterRanges {
    /// Every tuned parameter name.
    pub fn names(&self) -> Vec<&str> {
        self.integer_parameter_ranges
            .iter()
            .chain(&self.continuous_parameter_ranges)
            .map(|r| r.name.as_str())
            .chain(self.categorical_parameter_ranges.iter().map(|r| r.name.as_str()))
            .collect()
    }
}

/// `ResourceLimits`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_number_of_training_jobs: Option<i64>,
    pub max_parallel_training_jobs: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_runtime_in_seconds: Option<i64>,
}

/// `HyperbandStrategyConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HyperbandStrategyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_resource: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_resource: Option<i64>,
}

/// `HyperParameterTuningJobStrategyConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StrategyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperband_strategy_config: Option<HyperbandStrategyConfig>,
}

/// `BestObjectiveNotImproving`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BestObjectiveNotImproving {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_number_of_training_jobs_not_improving: Option<i64>,
}

/// `ConvergenceDetected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConvergenceDetected {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_on_convergence: Option<String>,
}

/// `TuningJobCompletionCriteria`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompletionCriteria {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_objective_metric_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_objective_not_improving: Option<BestObjectiveNotImproving>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence_detected: Option<ConvergenceDetected>,
}

/// `HyperParameterTuningJobConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningJobConfig {
    pub strategy: TuningStrategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy_config: Option<StrategyConfig>,
    #[serde(rename = "HyperParameterTuningJobObjective", skip_serializing_if = "Option::is_none")]
    pub objective: Option<TuningObjective>,
    pub resource_limits: ResourceLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter_ranges: Option<ParameterRanges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_job_early_stopping_type: Option<EarlyStoppingType>,
    #[serde(rename = "TuningJobCompletionCriteria", skip_serializing_if = "Option::is_none")]
    pub completion_criteria: Option<CompletionCriteria>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_seed: Option<i64>,
}

/// `HyperParameterAlgorithmSpecification`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningAlgorithmSpecification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_image: Option<String>,
    pub training_input_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_definitions: Option<Vec<MetricDefinition>>,
}

/// `HyperParameterTrainingJobDefinition`. Members used as-is for the child jobs stay in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrainingJobDefinition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning_objective: Option<TuningObjective>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyper_parameter_ranges: Option<ParameterRanges>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_hyper_parameters: Option<BTreeMap<String, String>>,
    pub algorithm_specification: TuningAlgorithmSpecification,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyper_parameter_tuning_resource_config: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ParentHyperParameterTuningJob`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ParentTuningJob {
    pub hyper_parameter_tuning_job_name: String,
}

/// `HyperParameterTuningJobWarmStartConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WarmStartConfig {
    pub parent_hyper_parameter_tuning_jobs: Vec<ParentTuningJob>,
    pub warm_start_type: String,
}

/// `CreateHyperParameterTuningJobRequest`, also the stored specification of a tuning job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTuningJobRequest {
    pub hyper_parameter_tuning_job_name: String,
    pub hyper_parameter_tuning_job_config: TuningJobConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_job_definition: Option<TrainingJobDefinition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_job_definitions: Option<Vec<TrainingJobDefinition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_start_config: Option<WarmStartConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autotune: Option<Value>,
}

/// Requests naming one tuning job.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningJobNameRequest {
    pub hyper_parameter_tuning_job_name: String,
}

/// `ListHyperParameterTuningJobsRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTuningJobsRequest {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub name_contains: Option<String>,
    pub creation_time_after: Option<Value>,
    pub creation_time_before: Option<Value>,
    pub last_modified_time_after: Option<Value>,
    pub last_modified_time_before: Option<Value>,
    pub status_equals: Option<String>,
}

/// `ListTrainingJobsForHyperParameterTuningJobRequest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTuningChildrenRequest {
    pub hyper_parameter_tuning_job_name: String,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub status_equals: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
}
