//! kiln's metadata store: training jobs, tags (and, as the engine grows, tuning jobs, log indexes
//! and metrics) behind one [`Store`] trait, with a SQLite implementation. The SQL is portable so that
//! a PostgreSQL implementation can share it. Every write is committed durably before it returns.
//! This crate knows rows, not HTTP and not the job state machine: the engine decides what to write.

pub mod logs;
mod sqlite;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

/// Opens a SQLite file in WAL mode (`path`), or an in-memory database (`None`), and migrates it.
/// `durable` commits with `synchronous=FULL` (on disk before the commit returns); otherwise
/// `NORMAL` (a commit survives a crash of the process, not of the machine).
pub(crate) async fn open_sqlite(path: Option<&Path>, durable: bool, migrator: &Migrator) -> StoreResult<SqlitePool> {
    let err = |e: sqlx::Error| StoreError::Database(e.to_string());
    let pool = match path {
        Some(path) => {
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                .map_err(err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(if durable {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?
        }
        None => {
            let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(err)?;
            SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?
        }
    };
    migrator
        .run(&pool)
        .await
        .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
    Ok(pool)
}

use async_trait::async_trait;

pub use logs::{LogStore, SqliteLogStore};
pub use sqlite::SqliteStore;

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

/// One training job as stored. `spec` and `state` are JSON owned by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingJobRow {
    pub account: String,
    pub name: String,
    pub arn: String,
    pub status: String,
    pub secondary_status: String,
    pub creation_time: f64,
    pub last_modified_time: f64,
    pub training_end_time: Option<f64>,
    pub warm_pool_status: Option<String>,
    pub tuning_job_arn: Option<String>,
    pub spec: String,
    pub state: String,
    /// Incremented by every update; updates name the version they read.
    pub version: i64,
}

/// Sort keys of `ListTrainingJobs`.
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

/// kiln's metadata persistence.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts a new job and its tags in one transaction; `AlreadyExists` if the name is taken
    /// (case-insensitively) in the account.
    async fn insert_training_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()>;
    /// Reads one job by name (case-insensitive).
    async fn get_training_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>>;
    /// Writes a job whose `version` is the one read; `Conflict` if it changed meanwhile. Returns the
    /// new version.
    async fn update_training_job(&self, job: &TrainingJobRow) -> StoreResult<i64>;
    /// Deletes a job and its tags.
    async fn delete_training_job(&self, account: &str, name: &str) -> StoreResult<()>;
    /// One page of jobs.
    async fn list_training_jobs(&self, query: &JobQuery) -> StoreResult<Vec<TrainingJobRow>>;
    /// Jobs in any of `statuses`, across accounts (for the scheduler and reconciler).
    async fn training_jobs_with_status(&self, statuses: &[&str]) -> StoreResult<Vec<TrainingJobRow>>;

    /// Inserts a tuning job (same row shape as a training job; `secondary_status` is unused) and its tags.
    async fn insert_tuning_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()>;
    /// Reads a tuning job by name (case-insensitive).
    async fn get_tuning_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>>;
    /// Writes a tuning job whose `version` is the one read.
    async fn update_tuning_job(&self, job: &TrainingJobRow) -> StoreResult<i64>;
    /// Deletes a tuning job record and its tags (its training jobs stay).
    async fn delete_tuning_job(&self, account: &str, name: &str) -> StoreResult<()>;
    /// One page of tuning jobs.
    async fn list_tuning_jobs(&self, query: &JobQuery) -> StoreResult<Vec<TrainingJobRow>>;
    /// Tuning jobs in any of `statuses`, across accounts.
    async fn tuning_jobs_with_status(&self, statuses: &[&str]) -> StoreResult<Vec<TrainingJobRow>>;

    /// Appends metric points of a job (in log order).
    async fn add_metric_points(&self, account: &str, job: &str, points: &[MetricPoint]) -> StoreResult<()>;
    /// Metric points of a job in log order, of one metric or all.
    async fn metric_points(&self, account: &str, job: &str, metric: Option<&str>) -> StoreResult<Vec<MetricPoint>>;

    /// Adds or overwrites tags of a resource (its ARN).
    async fn put_tags(&self, account: &str, resource_arn: &str, tags: &[TagRow]) -> StoreResult<()>;
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
