//! Request and response shapes of the SageMaker training API, named as in the AWS model.
//!
//! Every struct keeps the members kiln does not interpret in `extra`, so a request echoes back
//! through `DescribeTrainingJob` unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::status::{SecondaryStatus, TrainingJobStatus, WarmPoolResourceStatus};

/// Members carried through without interpretation.
pub type Extra = Map<String, Value>;

/// `Tag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// `MetricDefinition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricDefinition {
    pub name: String,
    pub regex: String,
}

/// `AlgorithmSpecification`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AlgorithmSpecification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm_name: Option<String>,
    pub training_input_mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_definitions: Option<Vec<MetricDefinition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_sage_maker_metrics_time_series: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_arguments: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `S3DataSource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct S3DataSource {
    #[serde(rename = "S3DataType")]
    pub s3_data_type: String,
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
    #[serde(rename = "S3DataDistributionType", skip_serializing_if = "Option::is_none")]
    pub s3_data_distribution_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribute_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_group_names: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `DataSource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataSource {
    #[serde(rename = "S3DataSource", skip_serializing_if = "Option::is_none")]
    pub s3_data_source: Option<S3DataSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_system_data_source: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `ShuffleConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShuffleConfig {
    pub seed: i64,
}

/// `Channel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Channel {
    pub channel_name: String,
    pub data_source: DataSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_wrapper_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shuffle_config: Option<ShuffleConfig>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `OutputDataConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OutputDataConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(rename = "S3OutputPath")]
    pub s3_output_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression_type: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `InstanceGroup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceGroup {
    pub instance_type: String,
    pub instance_count: i64,
    pub instance_group_name: String,
}

/// `ResourceConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_count: Option<i64>,
    #[serde(rename = "VolumeSizeInGB", skip_serializing_if = "Option::is_none")]
    pub volume_size_in_gb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_period_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_groups: Option<Vec<InstanceGroup>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResourceConfig {
    /// Host count: `InstanceCount`, or the sum over `InstanceGroups`; `None` when the sum does not
    /// fit an `i64` (counts come from the request: validation bounds them with this).
    pub fn host_count(&self) -> Option<i64> {
        match &self.instance_groups {
            Some(groups) if !groups.is_empty() => {
                groups.iter().try_fold(0i64, |sum, g| sum.checked_add(g.instance_count))
            }
            _ => Some(self.instance_count.unwrap_or(0)),
        }
    }
}

/// `StoppingCondition`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoppingCondition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_runtime_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wait_time_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_time_in_seconds: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CheckpointConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckpointConfig {
    #[serde(rename = "S3Uri")]
    pub s3_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
}

/// `RetryStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryStrategy {
    pub maximum_retry_attempts: i64,
}

/// `CreateTrainingJobRequest`, also the stored specification of a job (with defaults filled in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTrainingJobRequest {
    pub training_job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyper_parameters: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm_specification: Option<AlgorithmSpecification>,
    pub role_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_data_config: Option<Vec<Channel>>,
    pub output_data_config: OutputDataConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_config: Option<ResourceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping_condition: Option<StoppingCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_network_isolation: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_inter_container_traffic_encryption: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_managed_spot_training: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_config: Option<CheckpointConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `FinalMetricDataList` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricData {
    pub metric_name: String,
    pub value: f64,
    pub timestamp: f64,
}

/// `SecondaryStatusTransition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecondaryStatusTransition {
    pub status: SecondaryStatus,
    pub start_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<f64>,
    pub status_message: String,
}

/// `WarmPoolStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WarmPoolStatus {
    pub status: WarmPoolResourceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_retained_billable_time_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused_by_job: Option<String>,
}

/// An item of `DebugRuleEvaluationStatuses` / `ProfilerRuleEvaluationStatuses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleEvaluation {
    pub rule_configuration_name: String,
    pub rule_evaluation_job_arn: String,
    pub rule_evaluation_status: crate::status::RuleEvaluationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<String>,
    pub last_modified_time: f64,
}

/// `ListTrainingJobsRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTrainingJobsRequest {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub creation_time_after: Option<Value>,
    pub creation_time_before: Option<Value>,
    pub last_modified_time_after: Option<Value>,
    pub last_modified_time_before: Option<Value>,
    pub name_contains: Option<String>,
    pub status_equals: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub warm_pool_status_equals: Option<String>,
    pub training_plan_arn_equals: Option<String>,
}

/// `TrainingJobSummary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrainingJobSummary {
    pub training_job_name: String,
    pub training_job_arn: String,
    pub creation_time: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_end_time: Option<f64>,
    pub last_modified_time: f64,
    pub training_job_status: TrainingJobStatus,
    pub secondary_status: SecondaryStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_pool_status: Option<WarmPoolStatus>,
}

/// Parses a timestamp member: epoch seconds as a number or a numeric string.
pub fn timestamp_value(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Requests that name one training job: Describe, Stop, Delete.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrainingJobNameRequest {
    pub training_job_name: String,
}

/// `UpdateTrainingJobRequest`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateTrainingJobRequest {
    pub training_job_name: String,
    pub resource_config: Option<ResourceConfigForUpdate>,
    pub profiler_config: Option<Value>,
    pub profiler_rule_configurations: Option<Value>,
    pub remote_debug_config: Option<Value>,
}

/// `ResourceConfigForUpdate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceConfigForUpdate {
    pub keep_alive_period_in_seconds: i64,
}

/// `AddTagsInput`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddTagsRequest {
    pub resource_arn: String,
    pub tags: Vec<Tag>,
}

/// `ListTagsInput`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagsRequest {
    pub resource_arn: String,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

/// `DeleteTagsInput`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteTagsRequest {
    pub resource_arn: String,
    pub tag_keys: Vec<String>,
}
