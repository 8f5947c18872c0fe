//! The control plane's logic: what each SageMaker operation does to kiln's state, the training-job
//! state machine, and (as the engine grows) scheduling, executors and reconciliation. It takes
//! typed, protocol-validated requests from `kiln-server` and answers with response bodies or
//! SageMaker's errors; it never sees HTTP, and it is the only writer of the store.

pub mod capacity;
pub mod catalog;
pub mod executor;
pub mod job;
mod logs;
pub mod metrics;
pub mod runner;
pub mod runtime;
pub mod status;
mod tags;
mod token;
mod training;
mod tuning;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_api::AwsError;
use kiln_store::{LogStore, Store, StoreError};

pub use async_trait::async_trait;
pub use executor::{Executor, LocalExecutor, NoExecutor};
pub use job::{JobState, TrainingJob};
pub use runner::RunnerConfig;
pub use status::{JobStatus, Secondary};

/// Who is calling: the account of the access key and the region of the signature's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub region: String,
}

/// The engine: one per server.
pub struct Engine {
    store: Arc<dyn Store>,
    logs: Arc<dyn LogStore>,
    known_groups: logs::KnownGroups,
    runner: RunnerConfig,
    executor: Arc<dyn Executor>,
    wake: tokio::sync::Notify,
    /// Temporary S3 credentials of running jobs: access key id → (secret, account).
    job_keys: Mutex<HashMap<String, (String, String)>>,
    /// Compiled metric definitions of jobs that are reporting logs.
    matchers: Mutex<HashMap<(String, String), Arc<metrics::MetricMatcher>>>,
    /// Where input prefixes are checked for objects at create time.
    catalog: Arc<dyn catalog::ObjectCatalog>,
}

impl Engine {
    /// An engine over a store.
    pub fn new(store: Arc<dyn Store>, logs: Arc<dyn LogStore>) -> Self {
        Self::with_executor(store, logs, Arc::new(NoExecutor), RunnerConfig::default())
    }

    /// An engine that runs jobs on `executor`.
    pub fn with_executor(
        store: Arc<dyn Store>,
        logs: Arc<dyn LogStore>,
        executor: Arc<dyn Executor>,
        runner: RunnerConfig,
    ) -> Self {
        Self {
            store,
            logs,
            known_groups: Default::default(),
            runner,
            executor,
            wake: tokio::sync::Notify::new(),
            job_keys: Mutex::new(HashMap::new()),
            matchers: Mutex::new(HashMap::new()),
            catalog: Arc::new(catalog::NoCatalog),
        }
    }

    /// Checks input prefixes against `catalog` when jobs are created.
    pub fn with_catalog(mut self, catalog: Arc<dyn catalog::ObjectCatalog>) -> Self {
        self.catalog = catalog;
        self
    }

    /// The store (read access for the server's health checks and tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Epoch seconds with millisecond precision, as SageMaker reports times.
pub fn now() -> f64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    t as f64 / 1000.0
}

pub(crate) fn store_err(e: StoreError) -> AwsError {
    match e {
        StoreError::Database(msg) => AwsError::internal(format!("The metadata store failed: {msg}")),
        other => AwsError::internal(format!("The metadata store failed: {other}")),
    }
}
