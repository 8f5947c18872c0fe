//! SageMaker training-job operations: each parses nothing (the server did), checks what the model
//! cannot, and either reads the store or applies one event to the job's state machine.

use kiln_api::responses::{
    DescribeTrainingJobResponse, Empty, ListTrainingJobsResponse, ModelArtifacts, TrainingJobArnResponse,
};
use kiln_api::shapes::{
    CreateTrainingJobRequest, ListTrainingJobsRequest, TrainingJobNameRequest, TrainingJobSummary,
    UpdateTrainingJobRequest, timestamp_value,
};
use kiln_api::status::{SecondaryStatus, TrainingJobStatus, WarmPoolResourceStatus};
use kiln_api::{ApiResult, AwsError, arn, validate};
use kiln_store::{JobQuery, JobSort, RunRecord, StoreError, TagRow, TrainingJobRow};
use serde_json::Value;

use crate::training::machine::{Event, starting_transition};
use crate::{Caller, Engine, NOT_FOUND, catalog, metrics, now, runtime, store_err, token};

/// Built-in images come with their metric definitions, as on SageMaker (reference §13.1): the
/// service adds them to `AlgorithmSpecification.MetricDefinitions` unless the request names them.
pub(crate) fn inject_builtin_metrics(req: &mut CreateTrainingJobRequest) {
    let Some(algo) = runtime::builtin_algorithm(req) else {
        return;
    };
    let Some(spec) = req.algorithm_specification.as_mut() else {
        return;
    };
    let defs = spec.metric_definitions.get_or_insert_with(Vec::new);
    for (name, regex) in algo.metric_definitions() {
        if !defs.iter().any(|d| d.name == name) && defs.len() < 40 {
            defs.push(kiln_api::shapes::MetricDefinition { name, regex });
        }
    }
}

/// A new job in `InProgress/Starting`.
pub(crate) fn new_job(account: &str, region: &str, spec: CreateTrainingJobRequest, t: f64) -> TrainingJobRow {
    let name = spec.training_job_name.clone();
    let arn = arn::build(region, account, arn::ResourceType::TrainingJob, &name);
    let rules = crate::rules::rules_of(&spec)
        .iter()
        .map(|r| crate::rules::new_record(&arn, &name, r, t))
        .collect();
    TrainingJobRow {
        account: account.to_string(),
        arn,
        name,
        status: TrainingJobStatus::InProgress,
        secondary_status: SecondaryStatus::Starting,
        creation_time: t,
        last_modified_time: t,
        training_start_time: None,
        training_end_time: None,
        failure_reason: None,
        stop_reason: None,
        model_artifacts: None,
        training_time_in_seconds: None,
        billable_time_in_seconds: None,
        warm_pool: None,
        tuning_job_arn: None,
        transitions: vec![starting_transition(t)],
        final_metrics: Vec::new(),
        spec,
        run: RunRecord {
            rules,
            ..RunRecord::default()
        },
        version: 0,
    }
}

/// The tags of a request, as stored.
pub(crate) fn tag_rows(tags: &Option<Vec<kiln_api::shapes::Tag>>) -> Vec<TagRow> {
    tags.iter()
        .flatten()
        .map(|t| TagRow {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

/// The evaluation statuses of a job's Profiler (or Debugger) rules.
fn rule_statuses(job: &TrainingJobRow, profiler: bool) -> Vec<kiln_api::shapes::RuleEvaluation> {
    job.run
        .rules
        .iter()
        .filter(|r| r.profiler == profiler)
        .map(|r| r.evaluation.clone())
        .collect()
}

/// `DescribeTrainingJob`'s view of a stored job.
pub fn describe(job: &TrainingJobRow) -> DescribeTrainingJobResponse {
    let mut request = job.spec.clone();
    request.tags = None;
    let profiling = request
        .extra
        .get("ProfilerConfig")
        .is_some_and(|p| p.get("DisableProfiler").and_then(Value::as_bool) != Some(true));
    DescribeTrainingJobResponse {
        request,
        training_job_arn: job.arn.clone(),
        training_job_status: job.status,
        secondary_status: job.secondary_status,
        creation_time: job.creation_time,
        last_modified_time: job.last_modified_time,
        secondary_status_transitions: job.transitions.clone(),
        profiling_status: if profiling { "Enabled" } else { "Disabled" },
        tuning_job_arn: job.tuning_job_arn.clone(),
        training_start_time: job.training_start_time,
        training_end_time: job.training_end_time,
        failure_reason: job.failure_reason.clone(),
        model_artifacts: job
            .model_artifacts
            .clone()
            .map(|m| ModelArtifacts { s3_model_artifacts: m }),
        training_time_in_seconds: job.training_time_in_seconds,
        billable_time_in_seconds: job.billable_time_in_seconds,
        final_metric_data_list: job.final_metrics.clone(),
        warm_pool_status: crate::training::machine::warm_pool_at(job, crate::now()),
        debug_rule_evaluation_statuses: rule_statuses(job, false),
        profiler_rule_evaluation_statuses: rule_statuses(job, true),
    }
}

impl Engine {
    /// `CreateTrainingJob`.
    pub async fn create_training_job(
        &self,
        caller: &Caller,
        mut req: CreateTrainingJobRequest,
    ) -> ApiResult<TrainingJobArnResponse> {
        validate::check_training_job(&req)?;
        validate::fill_defaults(&mut req);
        if let Some(spec) = req.algorithm_specification.as_ref()
            && let Some(defs) = &spec.metric_definitions
        {
            metrics::validate(defs).map_err(AwsError::validation)?;
        }
        inject_builtin_metrics(&mut req);
        let tags = tag_rows(&req.tags);
        self.check_fits(&req).await?;
        self.check_inputs(caller, &req).await?;
        let job = new_job(&caller.account, &caller.region, req, now());
        match self.store.insert_training_job(&job, &tags).await {
            Ok(()) => {
                self.wake();
                Ok(TrainingJobArnResponse {
                    training_job_arn: job.arn,
                })
            }
            Err(StoreError::AlreadyExists) => {
                let existing = self
                    .load_job(&caller.account, &job.name)
                    .await?
                    .map(|j| j.arn)
                    .unwrap_or_else(|| job.arn.clone());
                Err(AwsError::resource_in_use(format!(
                    "Training job names must be unique within an AWS account and region, and a training job with this name already exists ({existing})"
                )))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    /// Refuses input channels whose S3 prefix holds no object, as SageMaker does at create time.
    async fn check_inputs(&self, caller: &Caller, req: &CreateTrainingJobRequest) -> ApiResult<()> {
        for ch in req.input_data_config.iter().flatten() {
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
                    s3.s3_uri, caller.region, req.role_arn
                )));
            }
        }
        Ok(())
    }

    /// `DescribeTrainingJob`. An unknown name is a `ValidationException`, as on the real service.
    pub async fn describe_training_job(
        &self,
        caller: &Caller,
        req: TrainingJobNameRequest,
    ) -> ApiResult<DescribeTrainingJobResponse> {
        match self.load_job(&caller.account, &req.training_job_name).await? {
            Some(job) => Ok(describe(&job)),
            None => Err(AwsError::validation(NOT_FOUND)),
        }
    }

    /// `ListTrainingJobs`: every filter, keyset pagination, newest first by default.
    pub async fn list_training_jobs(
        &self,
        caller: &Caller,
        req: ListTrainingJobsRequest,
    ) -> ApiResult<ListTrainingJobsResponse> {
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
        let next_token = if more {
            rows.last()
                .map(|last| token::encode_job_cursor(OP, sort, &last.name, last.creation_time, last.status.as_str()))
        } else {
            None
        };
        Ok(ListTrainingJobsResponse {
            training_job_summaries: rows
                .into_iter()
                .map(|r| TrainingJobSummary {
                    warm_pool_status: crate::training::machine::warm_pool_at(&r, crate::now()),
                    training_job_name: r.name,
                    training_job_arn: r.arn,
                    creation_time: r.creation_time,
                    training_end_time: r.training_end_time,
                    last_modified_time: r.last_modified_time,
                    training_job_status: r.status,
                    secondary_status: r.secondary_status,
                })
                .collect(),
            next_token,
        })
    }

    /// `StopTrainingJob`: `Stopping`, then the hosts stop and the job ends `Stopped`. A job that has
    /// no hosts placed yet goes straight to `Stopped`.
    pub async fn stop_training_job(&self, caller: &Caller, req: TrainingJobNameRequest) -> ApiResult<Empty> {
        self.apply(&caller.account, &req.training_job_name, Event::Stop).await?;
        Ok(Empty {})
    }

    /// kiln's `InterruptTrainingJob` (no SageMaker operation): a spot interruption of a managed spot
    /// job, as when AWS reclaims the capacity: the hosts stop (`Interrupted`), then a new attempt
    /// starts from its checkpoints.
    pub async fn interrupt_training_job(&self, caller: &Caller, req: TrainingJobNameRequest) -> ApiResult<Empty> {
        let reason = "Training job interrupted: the spot capacity was reclaimed (kiln jobs interrupt)".to_string();
        self.apply(&caller.account, &req.training_job_name, Event::Interrupt { reason })
            .await?;
        Ok(Empty {})
    }

    /// `DeleteTrainingJob`: only ended jobs that hold no available warm pool.
    pub async fn delete_training_job(&self, caller: &Caller, req: TrainingJobNameRequest) -> ApiResult<Empty> {
        let Some(job) = self.load_job(&caller.account, &req.training_job_name).await? else {
            return Err(AwsError::resource_not_found(NOT_FOUND));
        };
        if !job.status.is_terminal() {
            return Err(AwsError::resource_in_use(format!(
                "The training job '{}' is {}; only Completed, Failed or Stopped jobs can be deleted.",
                job.name, job.status
            )));
        }
        if job
            .warm_pool
            .as_ref()
            .is_some_and(|w| w.status == WarmPoolResourceStatus::Available)
        {
            return Err(AwsError::resource_in_use(format!(
                "The training job '{}' holds an Available warm pool; release it with UpdateTrainingJob \
                 (KeepAlivePeriodInSeconds=0) before deleting the job.",
                job.name
            )));
        }
        match self.store.delete_training_job(&caller.account, &job.name).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(Empty {}),
            Err(e) => Err(store_err(e)),
        }
    }

    /// `UpdateTrainingJob`: warm-pool retention and profiler settings.
    pub async fn update_training_job(
        &self,
        caller: &Caller,
        req: UpdateTrainingJobRequest,
    ) -> ApiResult<TrainingJobArnResponse> {
        if req.resource_config.is_none()
            && req.profiler_config.is_none()
            && req.profiler_rule_configurations.is_none()
            && req.remote_debug_config.is_none()
        {
            return Err(AwsError::validation(
                "UpdateTrainingJob needs at least one of ResourceConfig, ProfilerConfig, ProfilerRuleConfigurations or RemoteDebugConfig.",
            ));
        }
        if let Some(rules) = &req.profiler_rule_configurations {
            let errors = kiln_api::validate::rule_configuration_errors("ProfilerRuleConfigurations", rules);
            if !errors.is_empty() {
                return Err(AwsError::validation(errors.join(" ")));
            }
        }
        let name = req.training_job_name.clone();
        let job = self.apply(&caller.account, &name, Event::Update(req)).await?;
        Ok(TrainingJobArnResponse {
            training_job_arn: job.arn,
        })
    }
}
