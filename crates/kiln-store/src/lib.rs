//! kiln's metadata store: training jobs, tuning jobs, tags, metric points and logs behind one
//! contract ([`Store`], [`LogStore`], [`Leadership`]), kept in SQLite (a file under the data
//! directory, the default) or PostgreSQL (by URL, shared by several `kiln serve` replicas).
//!
//! This crate knows typed rows, not HTTP and not the job state machines: the engine decides what
//! to write, the store writes it durably before it returns, and refuses an update whose `version`
//! is not the one stored (optimistic concurrency). Both databases run the same SQL text (see
//! [`db`]); the conformance suite in `tests/conformance.rs` runs against both.

pub mod db;
mod jobs;
mod leader;
pub mod logs;
pub mod testing;

use std::collections::BTreeMap;

use async_trait::async_trait;
use kiln_api::agent::{DoneReport, Phase};
use kiln_api::shapes::{CreateTrainingJobRequest, MetricData, SecondaryStatusTransition, WarmPoolStatus};
use kiln_api::status::{
    SecondaryStatus, StopReason, TrainingJobStatus, TuningJobStatus, TuningStrategy, WarmPoolResourceStatus,
};
use kiln_api::tuning::CreateTuningJobRequest;
use serde::{Deserialize, Serialize};

pub use db::{Backend, Db};
pub use jobs::SqlStore;
pub use leader::{FileLeadership, Lease, PgLeadership};
pub use logs::{LogStore, SqlLogStore};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with this key already exists.
    #[error("already exists")]
    AlreadyExists,
    /// The row changed since it was read (optimistic concurrency); re-read and retry.
    #[error("the row was modified concurrently")]
    Conflict,
    /// No such row.
    #[error("not found")]
    NotFound,
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be read back (a column holds what kiln never writes).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return StoreError::AlreadyExists;
        }
        StoreError::Database(e.to_string())
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// One host of a placed training job, as its reports left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    /// The host's log stream for this attempt: `<job>/algo-N-<epoch>`.
    pub log_stream: String,
    /// The last phase the host reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// How the host ended, once it reported (or was found lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<DoneReport>,
}

/// The engine's bookkeeping of a placed job (never shown by `DescribeTrainingJob`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Hosts, once the job was placed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostRecord>,
    /// Bearer token of the agent API for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// The job's own S3 credentials (access key id, secret), valid while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<(String, String)>,
    /// What the executor returned for the launch: opaque to everyone but the executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    /// The first host failure, while the other hosts are being stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
    /// When the engine last asked the executor to kill the hosts (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_at: Option<f64>,
    /// Whether the executor freed what the hosts left behind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleaned: bool,
    /// How many times `RetryStrategy` restarted the job after a platform failure.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries_used: u32,
    /// A spot interruption in progress: the hosts are being stopped, then a new attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupting: Option<String>,
    /// Seconds the job's attempts ran (Downloading to the end of each attempt), for a spot job's
    /// billable time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_seconds: Option<f64>,
    /// The warm pool the job's hosts belong to (`KeepAlivePeriodInSeconds`): kept from job to job
    /// while the pool is reused; its cache lives under this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_id: Option<String>,
    /// When the warm pool's current retention began (the job's end, or the last
    /// `UpdateTrainingJob` of its keep-alive): it expires `KeepAlivePeriodInSeconds` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_since: Option<f64>,
    /// The launch of the job whose warm pool this placement took over, where the executor keeps a
    /// pool's allocation (a cluster): the hosts run in that allocation instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_launch: Option<String>,
    /// The job's Debugger and Profiler rules and how their evaluation stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleRecord>,
}

/// One rule of `DebugRuleConfigurations` or `ProfilerRuleConfigurations` and its evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// A `ProfilerRuleConfigurations` entry (else a `DebugRuleConfigurations` one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub profiler: bool,
    pub evaluation: kiln_api::shapes::RuleEvaluation,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A training job as stored: the request with the service's defaults, and everything that
/// happened to it since.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingJobRow {
    pub account: String,
    pub name: String,
    pub arn: String,
    pub status: TrainingJobStatus,
    pub secondary_status: SecondaryStatus,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub training_start_time: Option<f64>,
    pub training_end_time: Option<f64>,
    pub failure_reason: Option<String>,
    /// Set while `Stopping`: which status the stop ends in.
    pub stop_reason: Option<StopReason>,
    pub model_artifacts: Option<String>,
    pub training_time_in_seconds: Option<i64>,
    pub billable_time_in_seconds: Option<i64>,
    pub warm_pool: Option<WarmPoolStatus>,
    /// The tuning job that launched this job.
    pub tuning_job_arn: Option<String>,
    pub transitions: Vec<SecondaryStatusTransition>,
    pub final_metrics: Vec<MetricData>,
    pub spec: CreateTrainingJobRequest,
    pub run: RunRecord,
    /// Incremented by every update; an update names the version it read.
    pub version: i64,
}

/// A hyperparameter tuning job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TuningJobRow {
    pub account: String,
    pub name: String,
    pub arn: String,
    pub status: TuningJobStatus,
    pub strategy: TuningStrategy,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub end_time: Option<f64>,
    pub failure_reason: Option<String>,
    /// Why the tuner decided to complete (launching stops, running children are stopped).
    pub completing: Option<String>,
    pub convergence_detected_time: Option<f64>,
    /// Children created so far (the next child's index).
    pub launched: i64,
    /// Children the tuner stopped early (they end `Stopped`; their objective still counts).
    pub early_stopped: Vec<String>,
    /// Intermediate values already judged by early stopping, per child.
    pub judged: BTreeMap<String, usize>,
    pub spec: CreateTuningJobRequest,
    pub version: i64,
}

/// Sort keys of the job listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobSort {
    Name,
    CreationTime,
    Status,
}

/// Where a page starts: the sort value and name of the last row of the previous page.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorValue {
    Text(String),
    Number(f64),
}

/// A keyset cursor for stable pagination while jobs are created.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub value: CursorValue,
    pub name_key: String,
}

/// Filters and order of a job listing.
#[derive(Debug, Clone)]
pub struct JobQuery {
    pub account: String,
    pub name_contains: Option<String>,
    /// A status spelling (training or tuning, by listing).
    pub status_equals: Option<String>,
    pub creation_after: Option<f64>,
    pub creation_before: Option<f64>,
    pub modified_after: Option<f64>,
    pub modified_before: Option<f64>,
    pub warm_pool_status: Option<String>,
    pub tuning_job_arn: Option<String>,
    pub sort: JobSort,
    pub descending: bool,
    pub after: Option<Cursor>,
    pub limit: u32,
}

impl JobQuery {
    /// All jobs of an account, newest first.
    pub fn all(account: &str, limit: u32) -> Self {
        Self {
            account: account.to_string(),
            name_contains: None,
            status_equals: None,
            creation_after: None,
            creation_before: None,
            modified_after: None,
            modified_before: None,
            warm_pool_status: None,
            tuning_job_arn: None,
            sort: JobSort::CreationTime,
            descending: true,
            after: None,
            limit,
        }
    }
}

/// A tag of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub key: String,
    pub value: String,
}

/// A metric value parsed from a job's log.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub metric: String,
    pub value: f64,
    /// Epoch seconds of the log line.
    pub timestamp: f64,
}

/// A point sent with CloudWatch's `PutMetricData`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetricPoint {
    pub namespace: String,
    pub metric: String,
    /// Canonical JSON of the series' dimensions (the caller sorts them).
    pub dims: String,
    pub value: f64,
    /// Epoch seconds.
    pub timestamp: f64,
}

/// A series of points sent with `PutMetricData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomSeries {
    pub namespace: String,
    pub metric: String,
    pub dims: String,
}

/// The agent log lines metric points were read from (see [`Store::add_metric_points`]).
#[derive(Debug, Clone, Copy)]
pub struct LineSource<'a> {
    /// The sending agent (an id fresh in every agent process).
    pub sender: &'a str,
    /// `lines[i]` is the number, in the sender's numbering, of the line `points[i]` was read from
    /// (a point past the end of `lines` is stored without one).
    pub lines: &'a [i64],
}

/// kiln's metadata persistence. Every write is durable when it returns.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts a new job and its tags in one transaction; `AlreadyExists` if the name is taken
    /// (case-insensitively) in the account.
    async fn insert_training_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()>;
    /// Reads one job by name (case-insensitive).
    async fn get_training_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>>;
    /// Writes a job whose `version` is the one read; `Conflict` if it changed meanwhile,
    /// `NotFound` if it is gone. Returns the new version.
    async fn update_training_job(&self, job: &TrainingJobRow) -> StoreResult<i64>;
    /// Deletes a job, its tags and metric points.
    async fn delete_training_job(&self, account: &str, name: &str) -> StoreResult<()>;
    /// One page of jobs.
    async fn list_training_jobs(&self, query: &JobQuery) -> StoreResult<Vec<TrainingJobRow>>;
    /// Jobs in any of `statuses`, across accounts, oldest first (for the scheduler).
    async fn training_jobs_with_status(&self, statuses: &[TrainingJobStatus]) -> StoreResult<Vec<TrainingJobRow>>;
    /// Jobs whose warm pool is in `status`, across accounts, oldest first (for the scheduler).
    async fn training_jobs_with_warm_pool(&self, status: WarmPoolResourceStatus) -> StoreResult<Vec<TrainingJobRow>>;
    /// Ended jobs whose hosts were not cleaned up yet (for the reconciler).
    async fn training_jobs_to_clean(&self) -> StoreResult<Vec<TrainingJobRow>>;
    /// The secret and account of the temporary access key of an active (InProgress or Stopping) job.
    async fn job_credentials(&self, access_key_id: &str) -> StoreResult<Option<(String, String)>>;

    /// Inserts a tuning job and its tags.
    async fn insert_tuning_job(&self, job: &TuningJobRow, tags: &[TagRow]) -> StoreResult<()>;
    /// Reads a tuning job by name (case-insensitive).
    async fn get_tuning_job(&self, account: &str, name: &str) -> StoreResult<Option<TuningJobRow>>;
    /// Writes a tuning job whose `version` is the one read.
    async fn update_tuning_job(&self, job: &TuningJobRow) -> StoreResult<i64>;
    /// Deletes a tuning job record and its tags (its training jobs stay).
    async fn delete_tuning_job(&self, account: &str, name: &str) -> StoreResult<()>;
    /// One page of tuning jobs.
    async fn list_tuning_jobs(&self, query: &JobQuery) -> StoreResult<Vec<TuningJobRow>>;
    /// How many training jobs there are in each status, across accounts (statuses with none left out).
    async fn count_training_jobs(&self) -> StoreResult<Vec<(TrainingJobStatus, i64)>>;
    /// Tuning jobs in any of `statuses`, across accounts, oldest first.
    async fn tuning_jobs_with_status(&self, statuses: &[TuningJobStatus]) -> StoreResult<Vec<TuningJobRow>>;

    /// Appends metric points of a job (in log order). With `source`, a point whose line (sender,
    /// line number, metric) is already stored is not added again: a log batch re-sent after a lost
    /// reply, or after a failure between storing its lines and its points, adds its points once.
    async fn add_metric_points(
        &self,
        account: &str,
        job: &str,
        points: &[MetricPoint],
        source: Option<LineSource<'_>>,
    ) -> StoreResult<()>;
    /// Metric points of a job in log order, of one metric or all.
    async fn metric_points(&self, account: &str, job: &str, metric: Option<&str>) -> StoreResult<Vec<MetricPoint>>;
    /// The account's training-job metric series that have points: (job name as created, metric),
    /// ordered by job name, then metric.
    async fn metric_series(&self, account: &str) -> StoreResult<Vec<(String, String)>>;
    /// Stores points sent with `PutMetricData`.
    async fn put_custom_metric_points(&self, account: &str, points: &[CustomMetricPoint]) -> StoreResult<()>;
    /// Deletes every account's `PutMetricData` and host metric points older than `before` (epoch
    /// seconds); how many went.
    async fn expire_custom_metric_points(&self, before: f64) -> StoreResult<u64>;
    /// The account's `PutMetricData` series, each once (in the database's collation order).
    async fn custom_metric_series(&self, account: &str) -> StoreResult<Vec<CustomSeries>>;
    /// Points of one `PutMetricData` series with `start <= timestamp < end`, as (timestamp, value)
    /// in time order.
    async fn custom_metric_points(
        &self,
        account: &str,
        series: &CustomSeries,
        start: f64,
        end: f64,
    ) -> StoreResult<Vec<(f64, f64)>>;

    /// Adds or overwrites tags of a resource (its ARN).
    async fn put_tags(&self, account: &str, resource_arn: &str, tags: &[TagRow]) -> StoreResult<()>;
    /// Every tag of every resource of an account, as (lower-cased ARN, tag), for searches that
    /// filter on tags (one query instead of one a resource).
    async fn account_tags(&self, account: &str) -> StoreResult<Vec<(String, TagRow)>>;
    /// Tags of a resource in key order, starting after `after`, at most `limit`.
    async fn list_tags(
        &self,
        account: &str,
        resource_arn: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<TagRow>>;
    /// Removes tags by key (absent keys are ignored).
    async fn delete_tags(&self, account: &str, resource_arn: &str, keys: &[String]) -> StoreResult<()>;
}

/// Who runs the scheduler, tuner and reconciler when several `kiln serve` share a database.
#[async_trait]
pub trait Leadership: Send + Sync {
    /// Becomes the leader if nobody is; the lease lasts until it is dropped or lost.
    async fn try_acquire(&self) -> StoreResult<Option<Box<dyn Lease>>>;
}
