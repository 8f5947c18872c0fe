//! SageMaker training-job operations.

use kiln_api::shapes::{
    CreateTrainingJobRequest, ListTrainingJobsRequest, TrainingJobNameRequest, TrainingJobSummary,
    UpdateTrainingJobRequest, timestamp_value,
};
use kiln_api::{ApiResult, AwsError, validate};
use kiln_store::{JobQuery, JobSort, StoreError, TagRow};
use serde_json::{Value, json};

use crate::job::TrainingJob;
use crate::status::{JobStatus, Secondary};
use crate::{Caller, Engine, catalog, metrics, now, runtime, store_err, token};

/// Built-in images come with their metric definitions, as on SageMaker (reference §13.1): the
/// service adds them to `AlgorithmSpecification.MetricDefinitions` unless the request names them.
fn inject_builtin_metrics(req: &mut CreateTrainingJobRequest) {
    if !runtime::is_builtin_xgboost(req) {
        return;
    }
    let Some(spec) = req.algorithm_specification.as_mut() else {
        return;
    };
    let defs = spec.metric_definitions.get_or_insert_with(Vec::new);
    for (name, regex) in kiln_algos::builtin_metric_definitions("xgboost") {
        if !defs.iter().any(|d| d.name == name) && defs.len() < 40 {
            defs.push(kiln_api::shapes::MetricDefinition { name, regex });
        }
    }
}

const NOT_FOUND: &str = "Requested resource not found.";

impl Engine {
    /// Loads a job of the caller's account.
    pub async fn load_job(&self, account: &str, name: &str) -> ApiResult<Option<TrainingJob>> {
        match self.store.get_training_job(account, name).await.map_err(store_err)? {
            Some(row) => Ok(Some(TrainingJob::from_row(row)?)),
            None => Ok(None),
        }
    }

    /// Writes a job back; `Conflict` surfaces as `StoreError::Conflict` for the caller to retry.
    pub async fn save_job(&self, job: &mut TrainingJob) -> Result<(), StoreError> {
        job.row.version = self.store.update_training_job(&job.to_row()).await?;
        Ok(())
    }

    /// Reads, changes and writes a job, retrying when another writer got there first.
    pub async fn update_job<F>(&self, account: &str, name: &str, mut change: F) -> ApiResult<TrainingJob>
    where
        F: FnMut(&mut TrainingJob) -> ApiResult<()>,
    {
        for _ in 0..20 {
            let Some(mut job) = self.load_job(account, name).await? else {
                return Err(AwsError::resource_not_found(NOT_FOUND));
            };
            change(&mut job)?;
            match self.save_job(&mut job).await {
                Ok(()) => return Ok(job),
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

    /// `CreateTrainingJob`.
    pub async fn create_training_job(&self, caller: &Caller, mut req: CreateTrainingJobRequest) -> ApiResult<Value> {
        validate::check_training_job(&req)?;
        validate::fill_defaults(&mut req);
        if let Some(spec) = req.algorithm_specification.as_ref()
            && let Some(defs) = &spec.metric_definitions
        {
            metrics::validate(defs).map_err(AwsError::validation)?;
        }
        inject_builtin_metrics(&mut req);
        let tags: Vec<TagRow> = req
            .tags
            .iter()
            .flatten()
            .map(|t| TagRow {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect();
        let job = TrainingJob::new(&caller.account, &caller.region, req, now());
        self.check_fits(&job)?;
        self.check_inputs(caller, &job).await?;
        match self.store.insert_training_job(&job.to_row(), &tags).await {
            Ok(()) => {
                self.wake();
                Ok(json!({ "TrainingJobArn": job.row.arn }))
            }
            Err(StoreError::AlreadyExists) => {
                let existing = self
                    .load_job(&caller.account, &job.row.name)
                    .await?
                    .map(|j| j.row.arn)
                    .unwrap_or_else(|| job.row.arn.clone());
                Err(AwsError::resource_in_use(format!(
                    "Training job names must be unique within an AWS account and region, and a training job with this name already exists ({existing})"
                )))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// Refuses input channels whose S3 prefix holds no object, as SageMaker does at create time.
    async fn check_inputs(&self, caller: &Caller, job: &TrainingJob) -> ApiResult<()> {
        for ch in job.spec.input_data_config.iter().flatten() {
            let Some(s3) = &ch.data_source.s3_data_source else {
                continue;
            };
            let Some((bucket, prefix)) = catalog::split_s3_uri(&s3.s3_uri) else {
                continue;
            };
            if self.catalog.has_objects(&caller.account, bucket, prefix).await == Some(false) {
                return Err(AwsError::validation(format!(
                    "No S3 objects found under S3 URL \"{}\" given in input data source. Please ensure that the bucket \
                     exists in the selected region ({}), that objects exist under that S3 prefix, and that the role \
                     \"{}\" has \"s3:ListBucket\" permissions on bucket \"{bucket}\".",
                    s3.s3_uri, caller.region, job.spec.role_arn
                )));
            }
        }
        Ok(())
    }

    /// `DescribeTrainingJob`. An unknown name is a `ValidationException`, as on the real service.
    pub async fn describe_training_job(&self, caller: &Caller, req: TrainingJobNameRequest) -> ApiResult<Value> {
        match self.load_job(&caller.account, &req.training_job_name).await? {
            Some(job) => Ok(job.describe()),
            None => Err(AwsError::validation(NOT_FOUND)),
        }
    }

    /// `ListTrainingJobs`: every filter, keyset pagination, newest first by default.
    pub async fn list_training_jobs(&self, caller: &Caller, req: ListTrainingJobsRequest) -> ApiResult<Value> {
        const OP: &str = "ListTrainingJobs";
        let limit = req.max_results.unwrap_or(10).clamp(1, 100) as u32;
        let sort = match req.sort_by.as_deref() {
            Some("Name") => JobSort::Name,
            Some("Status") => JobSort::Status,
            _ => JobSort::CreationTime,
        };
        let descending = req.sort_order.as_deref() != Some("Ascending");
        let after = req
            .next_token
            .as_deref()
            .map(|t| token::decode_job_cursor(OP, t))
            .transpose()?;
        let ts = |v: &Option<Value>| v.as_ref().and_then(timestamp_value);
        let query = JobQuery {
            account: caller.account.clone(),
            name_contains: req.name_contains.clone(),
            status_equals: req.status_equals.clone(),
            creation_after: ts(&req.creation_time_after),
            creation_before: ts(&req.creation_time_before),
            modified_after: ts(&req.last_modified_time_after),
            modified_before: ts(&req.last_modified_time_before),
            warm_pool_status: req.warm_pool_status_equals.clone(),
            tuning_job_arn: None,
            sort,
            descending,
            after,
            // One extra row tells whether another page exists.
            limit: limit + 1,
        };
        let mut rows = self.store.list_training_jobs(&query).await.map_err(store_err)?;
        if req.training_plan_arn_equals.is_some() {
            // kiln has no training plans: nothing matches a plan filter.
            rows.clear();
        }
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut out = json!({
            "TrainingJobSummaries": rows.iter().map(|r| {
                let warm_pool = TrainingJob::from_row(r.clone()).ok().and_then(|j| j.state.warm_pool_status);
                TrainingJobSummary {
                    training_job_name: r.name.clone(),
                    training_job_arn: r.arn.clone(),
                    creation_time: r.creation_time,
                    training_end_time: r.training_end_time,
                    last_modified_time: r.last_modified_time,
                    training_job_status: r.status.clone(),
                    secondary_status: r.secondary_status.clone(),
                    warm_pool_status: warm_pool,
                }
            }).collect::<Vec<_>>()
        });
        if more && let Some(last) = rows.last() {
            out["NextToken"] = json!(token::encode_job_cursor(OP, sort, last));
        }
        Ok(out)
    }

    /// `StopTrainingJob`: `Stopping`, then the runner stops the hosts and the job ends `Stopped`.
    /// A job that has no running hosts yet goes straight to `Stopped`.
    pub async fn stop_training_job(&self, caller: &Caller, req: TrainingJobNameRequest) -> ApiResult<Value> {
        let t = now();
        self.update_job(&caller.account, &req.training_job_name, |job| match job.status() {
            JobStatus::InProgress => {
                job.transition(Secondary::Stopping, None, t)?;
                job.state.run.stop_reason = Some(Secondary::Stopped.as_str().into());
                // With no host placed there is nothing to wait for.
                if job.state.run.hosts.is_empty() {
                    job.transition(Secondary::Stopped, None, t)?;
                }
                Ok(())
            }
            // Stopping twice is harmless, as on the real service.
            JobStatus::Stopping => Ok(()),
            s => Err(AwsError::validation(format!(
                "The training job '{}' is {s}; only an InProgress job can be stopped.",
                job.row.name
            ))),
        })
        .await?;
        self.wake();
        Ok(json!({}))
    }

    /// `DeleteTrainingJob`: only ended jobs that hold no available warm pool.
    pub async fn delete_training_job(&self, caller: &Caller, req: TrainingJobNameRequest) -> ApiResult<Value> {
        let Some(job) = self.load_job(&caller.account, &req.training_job_name).await? else {
            return Err(AwsError::resource_not_found(NOT_FOUND));
        };
        if !job.status().is_terminal() {
            return Err(AwsError::resource_in_use(format!(
                "The training job '{}' is {}; only Completed, Failed or Stopped jobs can be deleted.",
                job.row.name,
                job.status()
            )));
        }
        if job
            .state
            .warm_pool_status
            .as_ref()
            .is_some_and(|w| w.status == "Available")
        {
            return Err(AwsError::resource_in_use(format!(
                "The training job '{}' holds an Available warm pool; release it with UpdateTrainingJob \
                 (KeepAlivePeriodInSeconds=0) before deleting the job.",
                job.row.name
            )));
        }
        match self.store.delete_training_job(&caller.account, &job.row.name).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(json!({})),
            Err(e) => Err(store_err(e)),
        }
    }

    /// `UpdateTrainingJob`: warm-pool retention and profiler settings.
    pub async fn update_training_job(&self, caller: &Caller, req: UpdateTrainingJobRequest) -> ApiResult<Value> {
        if req.resource_config.is_none()
            && req.profiler_config.is_none()
            && req.profiler_rule_configurations.is_none()
            && req.remote_debug_config.is_none()
        {
            return Err(AwsError::validation(
                "UpdateTrainingJob needs at least one of ResourceConfig, ProfilerConfig, ProfilerRuleConfigurations or RemoteDebugConfig.",
            ));
        }
        let t = now();
        let job = self
            .update_job(&caller.account, &req.training_job_name, |job| {
                if let Some(rc) = &req.resource_config {
                    let configured = job
                        .spec
                        .resource_config
                        .as_ref()
                        .and_then(|r| r.keep_alive_period_in_seconds)
                        .is_some_and(|k| k > 0);
                    if !configured {
                        return Err(AwsError::validation(format!(
                            "The training job '{}' was not created with a warm pool (ResourceConfig.KeepAlivePeriodInSeconds), so its retention cannot be updated.",
                            job.row.name
                        )));
                    }
                    let pool = job.state.warm_pool_status.as_ref().map(|w| w.status.as_str());
                    if job.status().is_terminal() && pool != Some("Available") {
                        return Err(AwsError::validation(format!(
                            "The warm pool of training job '{}' is {}; only an Available warm pool can be updated.",
                            job.row.name,
                            pool.unwrap_or("not retained")
                        )));
                    }
                    if let Some(r) = job.spec.resource_config.as_mut() {
                        r.keep_alive_period_in_seconds = Some(rc.keep_alive_period_in_seconds);
                    }
                    if rc.keep_alive_period_in_seconds == 0
                        && let Some(w) = job.state.warm_pool_status.as_mut()
                    {
                        w.status = "Terminated".into();
                    }
                }
                if let Some(p) = &req.profiler_config {
                    job.spec.extra.insert("ProfilerConfig".into(), p.clone());
                }
                if let Some(p) = &req.profiler_rule_configurations {
                    job.spec.extra.insert("ProfilerRuleConfigurations".into(), p.clone());
                }
                if let Some(p) = &req.remote_debug_config {
                    job.spec.extra.insert("RemoteDebugConfig".into(), p.clone());
                }
                job.row.last_modified_time = t;
                Ok(())
            })
            .await?;
        Ok(json!({ "TrainingJobArn": job.row.arn }))
    }
}
