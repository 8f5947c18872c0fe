//! Response shapes of the operations kiln serves, named as in the AWS models. The engine returns
//! these; the server serialises them. Members that SageMaker omits when empty are omitted here too.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::shapes::{
    CreateTrainingJobRequest, MetricData, RuleEvaluation, SecondaryStatusTransition, Tag, TrainingJobSummary,
    WarmPoolStatus,
};
use crate::status::{SecondaryStatus, TrainingJobStatus, TuningJobStatus, TuningStrategy};
use crate::tuning::{CreateTuningJobRequest, ResourceLimits};

/// An operation that answers `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Empty {}

/// `CreateTrainingJobResponse`, `UpdateTrainingJobResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrainingJobArnResponse {
    pub training_job_arn: String,
}

/// `ModelArtifacts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelArtifacts {
    #[serde(rename = "S3ModelArtifacts")]
    pub s3_model_artifacts: String,
}

/// `DescribeTrainingJobResponse`: the request as stored (without `Tags`) and what happened since.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeTrainingJobResponse {
    #[serde(flatten)]
    pub request: CreateTrainingJobRequest,
    pub training_job_arn: String,
    pub training_job_status: TrainingJobStatus,
    pub secondary_status: SecondaryStatus,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub secondary_status_transitions: Vec<SecondaryStatusTransition>,
    /// `Enabled` unless the request disabled the profiler.
    pub profiling_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning_job_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_start_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_end_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_artifacts: Option<ModelArtifacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_time_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billable_time_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub final_metric_data_list: Vec<MetricData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_pool_status: Option<WarmPoolStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub debug_rule_evaluation_statuses: Vec<RuleEvaluation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiler_rule_evaluation_statuses: Vec<RuleEvaluation>,
}

/// `ListTrainingJobsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTrainingJobsResponse {
    pub training_job_summaries: Vec<TrainingJobSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `AddTagsOutput`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddTagsResponse {
    pub tags: Vec<Tag>,
}

/// `ListTagsOutput`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagsResponse {
    pub tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `CreateHyperParameterTuningJobResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningJobArnResponse {
    pub hyper_parameter_tuning_job_arn: String,
}

/// `TrainingJobStatusCounters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrainingJobStatusCounters {
    pub completed: i64,
    pub in_progress: i64,
    pub retryable_error: i64,
    pub non_retryable_error: i64,
    pub stopped: i64,
}

/// `ObjectiveStatusCounters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ObjectiveStatusCounters {
    pub succeeded: i64,
    pub pending: i64,
    pub failed: i64,
}

/// `FinalHyperParameterTuningJobObjectiveMetric`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FinalObjectiveMetric {
    #[serde(rename = "Type")]
    pub kind: String,
    pub metric_name: String,
    pub value: f64,
}

/// `ObjectiveStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ObjectiveStatus {
    Succeeded,
    Pending,
    Failed,
}

/// `HyperParameterTrainingJobSummary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningChildSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_job_definition_name: Option<String>,
    pub training_job_name: String,
    pub training_job_arn: String,
    pub tuning_job_name: String,
    pub creation_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_start_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_end_time: Option<f64>,
    pub training_job_status: TrainingJobStatus,
    pub tuned_hyper_parameters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_hyper_parameter_tuning_job_objective_metric: Option<FinalObjectiveMetric>,
    pub objective_status: ObjectiveStatus,
}

/// `TuningJobCompletionDetails`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningJobCompletionDetails {
    pub number_of_training_jobs_objective_not_improving: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convergence_detected_time: Option<f64>,
}

/// `HyperParameterTuningJobConsumedResources`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsumedResources {
    pub runtime_in_seconds: i64,
}

/// `DescribeHyperParameterTuningJobResponse`: the request as stored (without `Tags`) and the tuner's
/// view of its children.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeTuningJobResponse {
    #[serde(flatten)]
    pub request: CreateTuningJobRequest,
    pub hyper_parameter_tuning_job_arn: String,
    pub hyper_parameter_tuning_job_status: TuningJobStatus,
    pub creation_time: f64,
    pub last_modified_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyper_parameter_tuning_end_time: Option<f64>,
    pub training_job_status_counters: TrainingJobStatusCounters,
    pub objective_status_counters: ObjectiveStatusCounters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_training_job: Option<TuningChildSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overall_best_training_job: Option<TuningChildSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub tuning_job_completion_details: TuningJobCompletionDetails,
    pub consumed_resources: ConsumedResources,
}

/// `HyperParameterTuningJobSummary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TuningJobSummary {
    pub hyper_parameter_tuning_job_name: String,
    pub hyper_parameter_tuning_job_arn: String,
    pub hyper_parameter_tuning_job_status: TuningJobStatus,
    pub strategy: TuningStrategy,
    pub creation_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyper_parameter_tuning_end_time: Option<f64>,
    pub last_modified_time: f64,
    pub training_job_status_counters: TrainingJobStatusCounters,
    pub objective_status_counters: ObjectiveStatusCounters,
    pub resource_limits: ResourceLimits,
}

/// `ListHyperParameterTuningJobsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTuningJobsResponse {
    pub hyper_parameter_tuning_job_summaries: Vec<TuningJobSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `ListTrainingJobsForHyperParameterTuningJobResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTuningChildrenResponse {
    pub training_job_summaries: Vec<TuningChildSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `LogGroup` (CloudWatch Logs uses camelCase).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroup {
    pub log_group_name: String,
    pub creation_time: i64,
    pub metric_filter_count: i64,
    pub arn: String,
    pub log_group_arn: String,
    pub stored_bytes: i64,
    pub log_group_class: &'static str,
}

/// `DescribeLogGroupsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogGroupsResponse {
    pub log_groups: Vec<LogGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `LogStream`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStream {
    pub log_stream_name: String,
    pub creation_time: i64,
    pub arn: String,
    pub stored_bytes: i64,
    pub upload_sequence_token: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_event_timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ingestion_time: Option<i64>,
}

/// `DescribeLogStreamsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogStreamsResponse {
    pub log_streams: Vec<LogStream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `OutputLogEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputLogEvent {
    pub timestamp: i64,
    pub message: String,
    pub ingestion_time: i64,
}

/// `GetLogEventsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLogEventsResponse {
    pub events: Vec<OutputLogEvent>,
    pub next_forward_token: String,
    pub next_backward_token: String,
}

/// `FilteredLogEvent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilteredLogEvent {
    pub log_stream_name: String,
    pub timestamp: i64,
    pub message: String,
    pub ingestion_time: i64,
    pub event_id: String,
}

/// `FilterLogEventsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterLogEventsResponse {
    pub events: Vec<FilteredLogEvent>,
    pub searched_log_streams: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `PutLogEventsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PutLogEventsResponse {
    pub next_sequence_token: &'static str,
}
