//! A training job as the engine sees it: the stored row, the typed request, and the run's state.
//! Every status change goes through [`TrainingJob::transition`].

use kiln_api::agent::{DoneReport, Phase};
use kiln_api::shapes::{CreateTrainingJobRequest, MetricData, SecondaryStatusTransition, WarmPoolStatus};
use kiln_api::{AwsError, arn};
use kiln_store::TrainingJobRow;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::executor::HostHandle;
use crate::status::{JobStatus, Secondary};

/// One host of a placed job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub host: String,
    /// Where the executor put the agent (absent until it was launched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<HostHandle>,
    pub log_stream: String,
    /// The last phase the host reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// How the host ended, once it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<DoneReport>,
}

impl HostState {
    /// 0 = not started, 1 = downloading, 2 = training, 3 = uploading, 4 = done.
    pub fn rank(&self) -> u8 {
        if self.done.is_some() {
            return 4;
        }
        match self.phase {
            None => 0,
            Some(Phase::Downloading) => 1,
            Some(Phase::Training) => 2,
            Some(Phase::Uploading) => 3,
        }
    }
}

/// What the engine keeps to run a job (never shown by `DescribeTrainingJob`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Hosts, once the job was placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostState>,
    /// Bearer token of the agent API for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// The job's own S3 credentials (access key id, secret), valid while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<(String, String)>,
    /// How a stop ends: `Stopped` or `MaxRuntimeExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The first host failure, while the other hosts are being stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
}

/// What happened to a job since it was created (stored as JSON beside the request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobState {
    pub secondary_status_transitions: Vec<SecondaryStatusTransition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_start_time: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub final_metric_data_list: Vec<MetricData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_artifacts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_time_in_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_time_in_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_status: Option<WarmPoolStatus>,
    /// The engine's bookkeeping of the run.
    #[serde(default)]
    pub run: RunState,
}

/// A training job loaded from the store.
#[derive(Debug, Clone)]
pub struct TrainingJob {
    pub row: TrainingJobRow,
    pub spec: CreateTrainingJobRequest,
    pub state: JobState,
}

impl TrainingJob {
    /// A new job in `InProgress/Starting`.
    pub fn new(account: &str, region: &str, spec: CreateTrainingJobRequest, now: f64) -> Self {
        let name = spec.training_job_name.clone();
        let state = JobState {
            secondary_status_transitions: vec![SecondaryStatusTransition {
                status: Secondary::Starting.as_str().into(),
                start_time: now,
                end_time: None,
                status_message: Secondary::Starting.default_message().into(),
            }],
            ..Default::default()
        };
        let row = TrainingJobRow {
            account: account.to_string(),
            arn: arn::build(region, account, arn::ResourceType::TrainingJob, &name),
            name,
            status: JobStatus::InProgress.as_str().into(),
            secondary_status: Secondary::Starting.as_str().into(),
            creation_time: now,
            last_modified_time: now,
            training_end_time: None,
            warm_pool_status: None,
            tuning_job_arn: None,
            spec: String::new(),
            state: String::new(),
            version: 0,
        };
        Self { row, spec, state }
    }

    /// Parses a stored row.
    pub fn from_row(row: TrainingJobRow) -> Result<Self, AwsError> {
        let spec = serde_json::from_str(&row.spec)
            .map_err(|e| AwsError::internal(format!("stored job '{}' has an unreadable spec: {e}", row.name)))?;
        let state = serde_json::from_str(&row.state)
            .map_err(|e| AwsError::internal(format!("stored job '{}' has an unreadable state: {e}", row.name)))?;
        Ok(Self { row, spec, state })
    }

    /// The row to store, with `spec` and `state` serialised.
    pub fn to_row(&self) -> TrainingJobRow {
        let mut row = self.row.clone();
        row.spec = serde_json::to_string(&self.spec).unwrap_or_default();
        row.state = serde_json::to_string(&self.state).unwrap_or_default();
        row.warm_pool_status = self.state.warm_pool_status.as_ref().map(|w| w.status.clone());
        row
    }

    /// Current primary status.
    pub fn status(&self) -> JobStatus {
        self.row.status.parse().unwrap_or(JobStatus::InProgress)
    }

    /// Current secondary status.
    pub fn secondary(&self) -> Secondary {
        self.row.secondary_status.parse().unwrap_or(Secondary::Starting)
    }

    /// How far the job has come in the normal flow: 0 = starting, 1 = downloading, 2 = training,
    /// 3 = uploading.
    pub fn secondary_rank(&self) -> u8 {
        match self.secondary() {
            Secondary::Downloading => 1,
            Secondary::Training => 2,
            Secondary::Uploading => 3,
            Secondary::Completed => 4,
            _ => 0,
        }
    }

    /// Moves the job to `to` with `message` (or the status's default message). Staying in the same
    /// status only updates the message, as SageMaker does.
    pub fn transition(&mut self, to: Secondary, message: Option<&str>, now: f64) -> Result<(), AwsError> {
        let from = self.secondary();
        let message = message.unwrap_or(to.default_message()).to_string();
        if from == to {
            if let Some(last) = self.state.secondary_status_transitions.last_mut() {
                last.status_message = message;
            }
            self.row.last_modified_time = now;
            return Ok(());
        }
        if !from.can_go_to(to) {
            return Err(AwsError::validation(format!(
                "Training job '{}' cannot go from {from} to {to}.",
                self.row.name
            )));
        }
        if let Some(last) = self.state.secondary_status_transitions.last_mut() {
            last.end_time = Some(now);
        }
        let terminal = to.primary().is_terminal();
        self.state.secondary_status_transitions.push(SecondaryStatusTransition {
            status: to.as_str().into(),
            start_time: now,
            end_time: terminal.then_some(now),
            status_message: message,
        });
        if to == Secondary::Downloading && self.state.training_start_time.is_none() {
            self.state.training_start_time = Some(now);
        }
        self.row.status = to.primary().as_str().into();
        self.row.secondary_status = to.as_str().into();
        self.row.last_modified_time = now;
        if terminal {
            self.row.training_end_time = Some(now);
            if let Some(start) = self.state.training_start_time {
                let secs = ((now - start).round() as i64).max(1);
                self.state.training_time_in_seconds = Some(secs);
                self.state.billable_time_in_seconds.get_or_insert(secs);
            }
        }
        Ok(())
    }

    /// The `DescribeTrainingJob` response.
    pub fn describe(&self) -> Value {
        let mut out = match serde_json::to_value(&self.spec) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        out.remove("Tags");
        let profiling = out
            .get("ProfilerConfig")
            .is_some_and(|p| p.get("DisableProfiler").and_then(Value::as_bool) != Some(true));
        let s = &self.state;
        let mut put = |k: &str, v: Value| {
            out.insert(k.to_string(), v);
        };
        put("TrainingJobArn", json!(self.row.arn));
        put("TrainingJobStatus", json!(self.row.status));
        put("SecondaryStatus", json!(self.row.secondary_status));
        put("CreationTime", json!(self.row.creation_time));
        put("LastModifiedTime", json!(self.row.last_modified_time));
        put("SecondaryStatusTransitions", json!(s.secondary_status_transitions));
        put("ProfilingStatus", json!(if profiling { "Enabled" } else { "Disabled" }));
        if let Some(t) = &self.row.tuning_job_arn {
            put("TuningJobArn", json!(t));
        }
        if let Some(t) = s.training_start_time {
            put("TrainingStartTime", json!(t));
        }
        if let Some(t) = self.row.training_end_time {
            put("TrainingEndTime", json!(t));
        }
        if let Some(r) = &s.failure_reason {
            put("FailureReason", json!(r));
        }
        if let Some(m) = &s.model_artifacts {
            put("ModelArtifacts", json!({ "S3ModelArtifacts": m }));
        }
        if let Some(t) = s.training_time_in_seconds {
            put("TrainingTimeInSeconds", json!(t));
        }
        if let Some(t) = s.billable_time_in_seconds {
            put("BillableTimeInSeconds", json!(t));
        }
        if !s.final_metric_data_list.is_empty() {
            put("FinalMetricDataList", json!(s.final_metric_data_list));
        }
        if let Some(w) = &s.warm_pool_status {
            put("WarmPoolStatus", json!(w));
        }
        Value::Object(out)
    }
}
