//! The control plane's logic: what each SageMaker operation does to kiln's state, the training- and
//! tuning-job state machines, the scheduler that places jobs on an executor, the tuner, and the
//! gateway the hosts' agents report to. It takes typed, protocol-validated requests from
//! `kiln-server` and answers with typed responses or SageMaker's errors; it never sees HTTP, and it is
//! the only writer of the store.
//!
//! One room per file:
//! - `training/machine.rs`, `tuning/machine.rs`, `tuning/plan.rs`: the pure state machines and the
//!   tuner's policy (no I/O, no clock);
//! - `apply.rs`: the loop around the training machine (commit, then perform effects);
//! - `training/api.rs`, `tuning/api.rs`, `tags.rs`, `logs.rs`: the API operations;
//! - `scheduler.rs`: placement, limits, lost hosts, cleanup; `tuning/tuner.rs`: the tuner's passes;
//!   `leader.rs`: which replica runs them;
//! - `agents.rs`: the agent gateway; `executor.rs`: the executor seam and the local executor;
//!   `slurm/`: the Slurm executor (slurmrestd).

pub mod agents;
mod apply;
pub mod capacity;
pub mod catalog;
pub mod cloudwatch;
pub mod executor;
pub mod leader;
mod logs;
pub mod metrics;
pub mod pools;
pub mod rules;
pub mod runtime;
pub mod scheduler;
mod search;
pub mod slurm;
mod tags;
mod token;
pub mod training;
pub mod tuning;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_api::AwsError;
use kiln_api::agent::ExternalS3;
use kiln_store::{LogStore, Store, StoreError};

pub use async_trait::async_trait;
pub use executor::{Executor, LocalExecutor, NoExecutor};
pub use kiln_store::{TrainingJobRow, TuningJobRow};

/// Who is calling: the account of the access key and the region of the signature's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub region: String,
}

/// How jobs run on this control plane.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// URL agents use to reach the control plane (and its S3 endpoint): this server, or a load
    /// balancer in front of several replicas.
    pub public_url: String,
    /// Hosts' trees live under `<work_dir>/<account>/<placement>/<job>/<host>/`.
    pub work_dir: PathBuf,
    /// Shared caches of the hosts of this machine (virtualenvs).
    pub cache_dir: PathBuf,
    /// CPUs of this machine: a host gets at most this many (`SM_NUM_CPUS`).
    pub machine_cpus: u32,
    /// SIGTERM → SIGKILL grace period when a job is stopped.
    pub stop_grace_seconds: u64,
    /// External S3 endpoints by bucket, passed to agents.
    pub external_s3: Vec<ExternalS3>,
    /// Whether hosts run their algorithm in a sandbox.
    pub sandbox: bool,
    /// `[[environments]]`: images mapped to interpreters, passed to agents.
    pub environments: Vec<kiln_api::agent::EnvironmentRule>,
    /// `[[registries]]`: how agents reach the registries of jobs' own images.
    pub registries: Vec<kiln_api::agent::RegistryRule>,
    /// Random interruptions of training spot jobs, per job and hour of training (0: none).
    pub spot_interruptions_per_hour: f64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            work_dir: std::env::temp_dir().join("kiln-work"),
            cache_dir: std::env::temp_dir().join("kiln-cache"),
            machine_cpus: 1,
            stop_grace_seconds: 120,
            external_s3: Vec::new(),
            sandbox: false,
            environments: Vec::new(),
            registries: Vec::new(),
            spot_interruptions_per_hour: 0.0,
        }
    }
}

/// The engine: one per server process.
pub struct Engine {
    store: Arc<dyn Store>,
    logs: Arc<dyn LogStore>,
    known_groups: logs::KnownGroups,
    runner: RunnerConfig,
    executor: Arc<dyn Executor>,
    wake: tokio::sync::Notify,
    /// Compiled metric definitions of jobs that are reporting logs.
    matchers: Mutex<HashMap<(String, String), Arc<metrics::MetricMatcher>>>,
    /// Jobs whose launch this process is performing (a recovery pass must not launch them again).
    launching: Mutex<HashSet<(String, String)>>,
    /// When the spot interruption injector last considered each job (account, lower-case name).
    spot_checked: Mutex<std::collections::HashMap<(String, String), f64>>,
    /// Where input prefixes are checked for objects at create time.
    catalog: Arc<dyn catalog::ObjectCatalog>,
    /// Job keys found in the store lately (an S3 request looks its key up twice, and agents make
    /// many): key id → (when found, secret, account). Kept briefly so an ended job's key stops
    /// working within [`JOB_KEY_TTL`].
    job_keys: Mutex<HashMap<String, (Instant, String, String)>>,
    /// Log lines agents sent that were stored (for `/_kiln/metrics`).
    log_lines: std::sync::atomic::AtomicU64,
    /// When the rules of each running job were last evaluated (account, lower-case name).
    rules_checked: Mutex<HashMap<(String, String), Instant>>,
    /// How long host and `PutMetricData` points are kept (`None`: for ever).
    metric_retention: Option<Duration>,
    /// When this process last deleted points older than the retention.
    metrics_expired: Mutex<Option<Instant>>,
}

/// How often the leader deletes metric points older than the retention.
pub const EXPIRE_METRICS_EVERY: Duration = Duration::from_secs(3600);

/// How long a job key found in the store is trusted without asking again.
const JOB_KEY_TTL: Duration = Duration::from_secs(2);

impl Engine {
    /// An engine over a store, running no jobs.
    pub fn new(store: Arc<dyn Store>, logs: Arc<dyn LogStore>) -> Self {
        Self::with_executor(store, logs, Arc::new(NoExecutor::default()), RunnerConfig::default())
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
            matchers: Mutex::new(HashMap::new()),
            launching: Mutex::new(HashSet::new()),
            spot_checked: Mutex::new(std::collections::HashMap::new()),
            catalog: Arc::new(catalog::NoCatalog),
            job_keys: Mutex::new(HashMap::new()),
            log_lines: std::sync::atomic::AtomicU64::new(0),
            rules_checked: Mutex::new(HashMap::new()),
            metric_retention: None,
            metrics_expired: Mutex::new(None),
        }
    }

    /// Keeps host metrics and `PutMetricData` points for `retention` (`None`: for ever); the
    /// leader deletes older ones every [`EXPIRE_METRICS_EVERY`].
    pub fn with_metric_retention(mut self, retention: Option<Duration>) -> Self {
        self.metric_retention = retention;
        self
    }

    /// Deletes host and `PutMetricData` points older than the retention, at most every
    /// [`EXPIRE_METRICS_EVERY`] (and at once when this process starts leading).
    pub(crate) async fn expire_metrics(&self) {
        let Some(retention) = self.metric_retention else {
            return;
        };
        let due = self.metrics_expired.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|t| t.elapsed() >= EXPIRE_METRICS_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        });
        if !due {
            return;
        }
        let before = now() - retention.as_secs_f64();
        match self.store.expire_custom_metric_points(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                target: "kiln::metrics",
                "deleted {n} metric points older than the retention ({} days)",
                retention.as_secs_f64() / 86_400.0
            ),
            Err(e) => tracing::warn!(target: "kiln::metrics", "deleting expired metric points: {e}"),
        }
    }

    /// Checks input prefixes against `catalog` when jobs are created.
    pub fn with_catalog(mut self, catalog: Arc<dyn catalog::ObjectCatalog>) -> Self {
        self.catalog = catalog;
        self
    }

    /// How many log lines agents sent that were stored, since this process started.
    pub fn log_lines_ingested(&self) -> u64 {
        self.log_lines.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store (read access for the server's health checks and tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Wakes the scheduler and tuner (a job was created or stopped, capacity was freed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The secret and account of a running job's temporary access key (its scripts' S3 and API
    /// calls), from the store: valid on every replica, and no longer once the job ends.
    pub async fn job_credentials(&self, access_key_id: &str) -> Option<(String, String)> {
        if !access_key_id.starts_with("KJOB") {
            return None;
        }
        if let Ok(cache) = self.job_keys.lock()
            && let Some((at, secret, account)) = cache.get(access_key_id)
            && at.elapsed() < JOB_KEY_TTL
        {
            return Some((secret.clone(), account.clone()));
        }
        match self.store.job_credentials(access_key_id).await {
            Ok(Some((secret, account))) => {
                if let Ok(mut cache) = self.job_keys.lock() {
                    cache.retain(|_, (at, _, _)| at.elapsed() < JOB_KEY_TTL);
                    cache.insert(
                        access_key_id.to_string(),
                        (Instant::now(), secret.clone(), account.clone()),
                    );
                }
                Some((secret, account))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(target: "kiln::engine", "looking up job key {access_key_id}: {e}");
                None
            }
        }
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
    AwsError::internal(format!("The metadata store failed: {e}"))
}

/// "Requested resource not found." (the service's words for a missing job).
pub(crate) const NOT_FOUND: &str = "Requested resource not found.";

/// A random token of `len` characters from `alphabet`.
pub(crate) fn random_token(len: usize, alphabet: &[u8]) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}
