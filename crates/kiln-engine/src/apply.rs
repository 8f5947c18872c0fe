//! The loop around the training-job state machine: read the job, `step` it, commit the new row if
//! it changed (re-reading and stepping again when another writer got there first), then perform the
//! effects of the change that was committed. Effects therefore run once per committed change and
//! never for a change that lost its race; each is idempotent, and the scheduler redoes any that a
//! crash interrupted (the row says what is due).

use kiln_api::{ApiResult, AwsError};
use kiln_store::{StoreError, TrainingJobRow};

use crate::executor::JobLaunch;
use crate::training::machine::{self, Effect, Event};
use crate::{Engine, NOT_FOUND, now, store_err};

/// How often a change is retried against concurrent writers before the caller is told to retry.
const MAX_ATTEMPTS: usize = 50;

impl Engine {
    /// Loads a job of `account`.
    pub async fn load_job(&self, account: &str, name: &str) -> ApiResult<Option<TrainingJobRow>> {
        self.store.get_training_job(account, name).await.map_err(store_err)
    }

    /// Applies `event` to the job and performs the effects of the committed change. Returns the
    /// job as committed. A refused event is a `ValidationException` with the machine's reason.
    pub async fn apply(&self, account: &str, name: &str, event: Event) -> ApiResult<TrainingJobRow> {
        let (job, effects) = self.commit(account, name, &event).await?;
        self.perform(&job, effects).await;
        Ok(job)
    }

    /// Steps and commits, without performing effects: the committed row and its effects.
    pub(crate) async fn commit(
        &self,
        account: &str,
        name: &str,
        event: &Event,
    ) -> ApiResult<(TrainingJobRow, Vec<Effect>)> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(job) = self.load_job(account, name).await? else {
                return Err(AwsError::resource_not_found(NOT_FOUND));
            };
            let step = machine::step(&job, event, now()).map_err(|r| AwsError::validation(r.0))?;
            if step.job == job {
                return Ok((job, Vec::new()));
            }
            let mut next = step.job;
            match self.store.update_training_job(&next).await {
                Ok(version) => {
                    next.version = version;
                    return Ok((next, step.effects));
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(AwsError::resource_not_found(NOT_FOUND)),
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::new(
            400,
            "ThrottlingException",
            "The job is being updated concurrently; retry the request.",
        ))
    }

    /// Performs effects of a committed change, in order.
    pub(crate) async fn perform(&self, job: &TrainingJobRow, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Launch => self.launch(job).await,
                Effect::Kill => {
                    if let Some(handle) = &job.run.launch {
                        self.executor.kill(handle).await;
                    }
                }
                Effect::Cleanup => self.cleanup(job).await,
                Effect::Retire(handle) => {
                    self.executor.kill(&handle).await;
                    self.executor.cleanup(&handle, true).await;
                }
                Effect::Wake => self.wake(),
                Effect::DropPool(id) => self.drop_pool(&job.account, &id).await,
                Effect::Ended => {
                    let key = (job.account.clone(), job.name.to_lowercase());
                    if let Ok(mut cache) = self.matchers.lock() {
                        cache.remove(&key);
                    }
                    if let Ok(mut seen) = self.spot_checked.lock() {
                        seen.remove(&key);
                    }
                    self.finish_rules(job).await;
                }
            }
        }
    }

    /// Launches the hosts of a placed job and records the outcome. At most one launch of a job runs
    /// in this process; the executor makes a repeated launch of one placement harmless.
    pub(crate) async fn launch(&self, job: &TrainingJobRow) {
        let key = (job.account.clone(), job.name.to_lowercase());
        let first = self
            .launching
            .lock()
            .map(|mut l| l.insert(key.clone()))
            .unwrap_or(false);
        if !first {
            return;
        }
        let hosts = crate::scheduler::host_specs(&job.spec);
        let launch = JobLaunch {
            server: self.runner.public_url.clone(),
            account: job.account.clone(),
            job: job.name.clone(),
            arn: job.arn.clone(),
            hosts,
            token: job.run.agent_token.clone().unwrap_or_default(),
            work_dir: self.runner.work_dir.clone(),
            max_runtime_seconds: crate::scheduler::max_runtime(job),
            spot: job.spec.enable_managed_spot_training == Some(true),
            keep_alive_seconds: crate::training::machine::keep_alive(&job.spec),
        };
        let mut launched = None;
        if let Some(pool) = &job.run.pool_launch {
            // The warm pool's allocation is still held: the hosts start there, skipping the queue.
            match self.executor.launch_in(pool, &launch).await {
                Ok(handle) => launched = Some(Ok(handle)),
                Err(reason) => tracing::warn!(
                    target: "kiln::engine",
                    "training job {}: the warm pool's allocation cannot take it ({reason}); launching anew",
                    job.name
                ),
            }
        }
        let launched = match launched {
            Some(l) => l,
            None => self.executor.launch(&launch).await,
        };
        let event = match launched {
            Ok(handle) => Event::Launched { handle },
            Err(reason) => Event::LaunchFailed { reason },
        };
        let result = self.commit(&job.account, &job.name, &event).await;
        if let Ok(mut l) = self.launching.lock() {
            l.remove(&key);
        }
        match result {
            // Boxed: performing effects may launch again (a recursion of async functions).
            Ok((committed, effects)) => Box::pin(self.perform(&committed, effects)).await,
            Err(e) => {
                tracing::warn!(target: "kiln::engine", "recording the launch of {}: {}", job.name, e.message);
                // The row did not take this launch (another launch won): do not leave it running.
                if let Event::Launched { handle } = &event
                    && e.code == "ValidationException"
                {
                    self.executor.kill(handle).await;
                }
            }
        }
    }

    /// Where a warm pool's cache lives: `<cache_dir>/warmpools/<account>/<pool id>/<host>`.
    pub(crate) fn pool_dir(&self, account: &str, id: &str) -> std::path::PathBuf {
        self.runner.cache_dir.join("warmpools").join(account).join(id)
    }

    /// Deletes a released warm pool's cache.
    pub(crate) async fn drop_pool(&self, account: &str, id: &str) {
        let dir = self.pool_dir(account, id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(target: "kiln::engine", "deleting the warm pool cache {}: {e}", dir.display());
        }
    }

    /// Frees what an ended job's hosts left behind, then records it.
    pub(crate) async fn cleanup(&self, job: &TrainingJobRow) {
        // Rules whose last evaluation a crash interrupted get it now.
        self.finish_rules(job).await;
        if let Some(handle) = &job.run.launch {
            let keep_trees = job.status == kiln_api::status::TrainingJobStatus::Failed;
            let pool = job.warm_pool.as_ref().map(|w| w.status);
            if pool == Some(kiln_api::status::WarmPoolResourceStatus::Available) && self.executor.holds_pools() {
                self.executor.cleanup_retained(handle, keep_trees).await;
            } else {
                self.executor.cleanup(handle, keep_trees).await;
            }
        }
        if let Err(e) = self.commit(&job.account, &job.name, &Event::Cleaned).await
            && e.code != "ResourceNotFound"
        {
            tracing::warn!(target: "kiln::engine", "recording the cleanup of {}: {}", job.name, e.message);
        }
    }
}
