//! SageMaker tuning-job operations: create (with the rules the model cannot express), describe,
//! list, list children, stop (an event of the tuning job's state machine) and delete.

use std::collections::BTreeMap;

use kiln_api::arn::{self, ResourceType};
use kiln_api::responses::{
    ConsumedResources, DescribeTuningJobResponse, Empty, ListTuningChildrenResponse, ListTuningJobsResponse,
    TuningChildSummary, TuningJobArnResponse, TuningJobCompletionDetails, TuningJobSummary,
};
use kiln_api::shapes::{MetricDefinition, timestamp_value};
use kiln_api::status::{EarlyStoppingType, TuningJobStatus, TuningStrategy};
use kiln_api::tuning::{
    CreateTuningJobRequest, ListTuningChildrenRequest, ListTuningJobsRequest, ParameterRanges, TrainingJobDefinition,
    TuningJobNameRequest,
};
use kiln_api::{ApiResult, AwsError, validate};
use kiln_store::{JobQuery, JobSort, StoreError, TuningJobRow};
use serde_json::Value;

use super::machine::Event;

/// Most training jobs one tuning job launches (`MaxNumberOfTrainingJobs`; AWS's default quota is 500).
const MAX_TRAINING_JOBS: i64 = 10_000;
/// Most training jobs one tuning job runs at once (`MaxParallelTrainingJobs`; AWS's quota is 100).
const MAX_PARALLEL_TRAINING_JOBS: i64 = 1_000;
use super::{
    Child, best_child, child_request, counters, definitions, direction, not_improving, objective_of, search_space,
    strategy_of, summary,
};
use crate::training::api::tag_rows;
use crate::{Caller, Engine, NOT_FOUND, now, runtime, store_err, token};

impl Engine {
    /// `CreateHyperParameterTuningJob`.
    pub async fn create_tuning_job(
        &self,
        caller: &Caller,
        mut req: CreateTuningJobRequest,
    ) -> ApiResult<TuningJobArnResponse> {
        self.check_tuning_request(caller, &mut req).await?;
        let t = now();
        let name = req.hyper_parameter_tuning_job_name.clone();
        let arn = arn::build(&caller.region, &caller.account, ResourceType::TuningJob, &name);
        let tags = tag_rows(&req.tags);
        let job = TuningJobRow {
            account: caller.account.clone(),
            name,
            arn: arn.clone(),
            status: TuningJobStatus::InProgress,
            strategy: req.hyper_parameter_tuning_job_config.strategy,
            creation_time: t,
            last_modified_time: t,
            end_time: None,
            failure_reason: None,
            completing: None,
            convergence_detected_time: None,
            launched: 0,
            early_stopped: Vec::new(),
            judged: BTreeMap::new(),
            spec: req,
            version: 0,
        };
        match self.store.insert_tuning_job(&job, &tags).await {
            Ok(()) => {
                self.wake();
                Ok(TuningJobArnResponse {
                    hyper_parameter_tuning_job_arn: arn,
                })
            }
            Err(StoreError::AlreadyExists) => Err(AwsError::resource_in_use(format!(
                "Hyperparameter tuning job names must be unique within an AWS account and region, and a tuning job with this name already exists ({arn})"
            ))),
            Err(e) => Err(store_err(e)),
        }
    }

    /// The rules of `CreateHyperParameterTuningJob` beyond the model, and the defaults the service
    /// fills in (`_tuning_objective_metric`, the three range lists, `MaxNumberOfTrainingJobs` for Grid).
    async fn check_tuning_request(&self, caller: &Caller, req: &mut CreateTuningJobRequest) -> ApiResult<()> {
        let v = |m: String| Err(AwsError::validation(m));
        match (&req.training_job_definition, &req.training_job_definitions) {
            (Some(_), Some(_)) => {
                return v("Specify either TrainingJobDefinition or TrainingJobDefinitions, not both.".into());
            }
            (None, None) => return v("Either TrainingJobDefinition or TrainingJobDefinitions is required.".into()),
            (None, Some(ds)) if ds.is_empty() => {
                return v("TrainingJobDefinitions must hold 1 to 10 definitions.".into());
            }
            _ => {}
        }
        let cfg = &mut req.hyper_parameter_tuning_job_config;
        let early = *cfg
            .training_job_early_stopping_type
            .get_or_insert(EarlyStoppingType::Off);
        if cfg.strategy == TuningStrategy::Hyperband && early != EarlyStoppingType::Off {
            return v(
                "TrainingJobEarlyStoppingType must be Off with the Hyperband strategy, which stops jobs itself.".into(),
            );
        }
        if cfg.strategy != TuningStrategy::Grid && cfg.resource_limits.max_number_of_training_jobs.is_none() {
            return v(format!(
                "ResourceLimits.MaxNumberOfTrainingJobs is required with the {} strategy.",
                cfg.strategy
            ));
        }
        // Bounded before use (a count of 2^63-1 is accepted by the model's ranges).
        let limits = &cfg.resource_limits;
        if let Some(n) = limits.max_number_of_training_jobs.filter(|n| *n > MAX_TRAINING_JOBS) {
            return Err(AwsError::resource_limit_exceeded(format!(
                "ResourceLimits.MaxNumberOfTrainingJobs is {n}; a tuning job on this kiln launches at most {MAX_TRAINING_JOBS} training jobs."
            )));
        }
        if limits.max_parallel_training_jobs > MAX_PARALLEL_TRAINING_JOBS {
            return Err(AwsError::resource_limit_exceeded(format!(
                "ResourceLimits.MaxParallelTrainingJobs is {}; a tuning job on this kiln runs at most {MAX_PARALLEL_TRAINING_JOBS} training jobs at once.",
                limits.max_parallel_training_jobs
            )));
        }
        if cfg
            .strategy_config
            .as_ref()
            .and_then(|s| s.hyperband_strategy_config.as_ref())
            .is_some()
            && cfg.strategy != TuningStrategy::Hyperband
        {
            return v("HyperbandStrategyConfig can only be given with the Hyperband strategy.".into());
        }
        let config = cfg.clone();
        let shared_objective = cfg.objective.clone();
        let strategy = cfg.strategy;
        let grid_default = cfg.resource_limits.max_number_of_training_jobs;
        let config_ranges = cfg.parameter_ranges.clone();
        let defs: Vec<&mut TrainingJobDefinition> =
            match (&mut req.training_job_definition, &mut req.training_job_definitions) {
                (Some(d), _) => vec![d],
                (None, Some(ds)) => ds.iter_mut().collect(),
                _ => Vec::new(),
            };
        let multi = defs.len() > 1;
        let mut grid_total = 0usize;
        let mut names = std::collections::HashSet::new();
        for (i, def) in defs.into_iter().enumerate() {
            if multi {
                let name = def.definition_name.clone().unwrap_or_default();
                if name.is_empty() || !names.insert(name.clone()) {
                    return v(format!("TrainingJobDefinitions[{i}] needs a unique DefinitionName."));
                }
            }
            let objective = def.tuning_objective.clone().or_else(|| shared_objective.clone()).ok_or_else(|| {
                AwsError::validation(
                    "A HyperParameterTuningJobObjective is required (in HyperParameterTuningJobConfig, or as TuningObjective of each definition).",
                )
            })?;
            let ranges = def
                .hyper_parameter_ranges
                .clone()
                .or_else(|| config_ranges.clone())
                .unwrap_or_default();
            let space = search_space(&ranges)?;
            if space.is_empty() && strategy != TuningStrategy::Grid {
                return v("ParameterRanges must name at least one hyperparameter to tune.".into());
            }
            let statics = def.static_hyper_parameters.get_or_insert_with(BTreeMap::new);
            for n in ranges.names() {
                if statics.contains_key(n) {
                    return v(format!(
                        "Hyperparameter '{n}' is both tuned and given in StaticHyperParameters; remove it from one."
                    ));
                }
            }
            statics.insert("_tuning_objective_metric".into(), objective.metric_name.clone());
            // The child's request must be valid: check a sample child now rather than fail later.
            let sample = child_request("validation-sample", def, BTreeMap::new(), None)?;
            // Clients read ResourceConfig back from the definition (the SDK's attach() does), also
            // when the request gave HyperParameterTuningResourceConfig instead.
            if !def.extra.contains_key("ResourceConfig")
                && let Some(rc) = &sample.resource_config
            {
                let mut rc = rc.clone();
                rc.volume_size_in_gb.get_or_insert(30);
                def.extra
                    .insert("ResourceConfig".into(), serde_json::to_value(&rc).unwrap_or_default());
            }
            validate::check_training_job(&sample)?;
            if let Some(algo) = runtime::builtin_algorithm(&sample) {
                let defs = def
                    .algorithm_specification
                    .metric_definitions
                    .get_or_insert_with(Vec::new);
                for (name, regex) in algo.metric_definitions() {
                    if !defs.iter().any(|d| d.name == name) && defs.len() < 40 {
                        defs.push(MetricDefinition { name, regex });
                    }
                }
            } else {
                def.algorithm_specification
                    .metric_definitions
                    .get_or_insert_with(Vec::new);
            }
            let known = def
                .algorithm_specification
                .metric_definitions
                .iter()
                .flatten()
                .any(|d| d.name == objective.metric_name);
            if !known {
                return v(format!(
                    "The objective metric '{}' is not one of the MetricDefinitions of the training job definition; add a MetricDefinition with that Name and a Regex that captures its value.",
                    objective.metric_name
                ));
            }
            if let Some(defs) = &def.algorithm_specification.metric_definitions {
                crate::metrics::validate(defs).map_err(AwsError::validation)?;
            }
            let strategy_cfg = strategy_of(&config, def)?;
            strategy_cfg
                .validate(&space)
                .map_err(|e| AwsError::validation(e.to_string()))?;
            if strategy == TuningStrategy::Grid {
                grid_total += kiln_tune::grid_size(&space).map_err(|e| AwsError::validation(e.to_string()))?;
            }
            self.check_fits(&sample).await?;
        }
        let cfg = &mut req.hyper_parameter_tuning_job_config;
        if strategy == TuningStrategy::Grid {
            if grid_total as u64 > MAX_TRAINING_JOBS as u64 {
                return Err(AwsError::resource_limit_exceeded(format!(
                    "The grid has {grid_total} points; a tuning job on this kiln launches at most {MAX_TRAINING_JOBS} training jobs."
                )));
            }
            match grid_default {
                Some(n) if n as usize != grid_total => {
                    return v(format!(
                        "For the Grid strategy MaxNumberOfTrainingJobs must equal the number of grid points ({grid_total}), or be left out; it is {n}."
                    ));
                }
                _ => cfg.resource_limits.max_number_of_training_jobs = Some(grid_total as i64),
            }
        }
        if cfg.parameter_ranges.is_none() && req.training_job_definition.is_some() {
            cfg.parameter_ranges = Some(ParameterRanges::default());
        }
        if let Some(ws) = &req.warm_start_config {
            for p in &ws.parent_hyper_parameter_tuning_jobs {
                let Some(parent) = self
                    .load_tuning(&caller.account, &p.hyper_parameter_tuning_job_name)
                    .await?
                else {
                    return v(format!(
                        "Warm start parent tuning job '{}' does not exist.",
                        p.hyper_parameter_tuning_job_name
                    ));
                };
                if !parent.status.is_terminal() {
                    return v(format!(
                        "Warm start parent tuning job '{}' is {}; parents must have finished.",
                        parent.name, parent.status
                    ));
                }
            }
        }
        Ok(())
    }

    /// `DescribeHyperParameterTuningJob`.
    pub async fn describe_tuning_job(
        &self,
        caller: &Caller,
        req: TuningJobNameRequest,
    ) -> ApiResult<DescribeTuningJobResponse> {
        let job = self
            .load_tuning(&caller.account, &req.hyper_parameter_tuning_job_name)
            .await?
            .ok_or_else(|| AwsError::resource_not_found(NOT_FOUND))?;
        self.describe_tuning_row(&caller.account, &job).await
    }

    /// The `DescribeHyperParameterTuningJob` answer of a loaded tuning job (also `Search`'s record).
    pub(crate) async fn describe_tuning_row(
        &self,
        account: &str,
        job: &TuningJobRow,
    ) -> ApiResult<DescribeTuningJobResponse> {
        let children = self.children(job).await?;
        let (training, objective) = counters(&children);
        let mut overall_best = None;
        if let Some(ws) = &job.spec.warm_start_config
            && ws.warm_start_type == "IdenticalDataAndAlgorithm"
        {
            let mut all: Vec<(TuningJobRow, Child)> = Vec::new();
            for p in &ws.parent_hyper_parameter_tuning_jobs {
                if let Some(parent) = self.load_tuning(account, &p.hyper_parameter_tuning_job_name).await? {
                    for c in self.children(&parent).await? {
                        all.push((parent.clone(), c));
                    }
                }
            }
            all.extend(children.iter().map(|c| (job.clone(), c.clone())));
            let dir = definitions(job)
                .first()
                .and_then(|d| objective_of(job, d))
                .map(|o| direction(&o));
            if let Some(dir) = dir {
                let best = all.iter().filter(|(_, c)| c.objective.is_some()).reduce(|a, b| {
                    if dir.better(b.1.objective.unwrap_or(0.0), a.1.objective.unwrap_or(0.0)) {
                        b
                    } else {
                        a
                    }
                });
                overall_best = best.map(|(owner, c)| summary(owner, c));
            }
        }
        let end = job.end_time.unwrap_or_else(now);
        let mut request = job.spec.clone();
        request.tags = None;
        Ok(DescribeTuningJobResponse {
            request,
            hyper_parameter_tuning_job_arn: job.arn.clone(),
            hyper_parameter_tuning_job_status: job.status,
            creation_time: job.creation_time,
            last_modified_time: job.last_modified_time,
            hyper_parameter_tuning_end_time: job.end_time,
            training_job_status_counters: training,
            objective_status_counters: objective,
            best_training_job: best_child(job, &children).map(|c| summary(job, c)),
            overall_best_training_job: overall_best,
            failure_reason: job.failure_reason.clone(),
            tuning_job_completion_details: TuningJobCompletionDetails {
                number_of_training_jobs_objective_not_improving: not_improving(job, &children) as i64,
                convergence_detected_time: job.convergence_detected_time,
            },
            consumed_resources: ConsumedResources {
                runtime_in_seconds: (end - job.creation_time).max(0.0) as i64,
            },
        })
    }

    /// `ListHyperParameterTuningJobs`.
    pub async fn list_tuning_jobs(
        &self,
        caller: &Caller,
        req: ListTuningJobsRequest,
    ) -> ApiResult<ListTuningJobsResponse> {
        const OP: &str = "ListHyperParameterTuningJobs";
        let limit = req.max_results.unwrap_or(10).clamp(1, 100) as u32;
        let sort = match req.sort_by.as_deref() {
            Some("Status") => JobSort::Status,
            Some("CreationTime") => JobSort::CreationTime,
            _ => JobSort::Name,
        };
        let descending = req.sort_order.as_deref() == Some("Descending");
        let after = req
            .next_token
            .as_deref()
            .map(|t| token::decode_job_cursor(OP, t))
            .transpose()?;
        let ts = |v: &Option<Value>| v.as_ref().and_then(timestamp_value);
        let mut q = JobQuery::all(&caller.account, limit + 1);
        q.name_contains = req.name_contains.clone();
        q.status_equals = req.status_equals.clone();
        q.creation_after = ts(&req.creation_time_after);
        q.creation_before = ts(&req.creation_time_before);
        q.modified_after = ts(&req.last_modified_time_after);
        q.modified_before = ts(&req.last_modified_time_before);
        q.sort = sort;
        q.descending = descending;
        q.after = after;
        let mut rows = self.store.list_tuning_jobs(&q).await.map_err(store_err)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut summaries = Vec::new();
        for job in &rows {
            let children = self.children(job).await?;
            let (training, objective) = counters(&children);
            summaries.push(TuningJobSummary {
                hyper_parameter_tuning_job_name: job.name.clone(),
                hyper_parameter_tuning_job_arn: job.arn.clone(),
                hyper_parameter_tuning_job_status: job.status,
                strategy: job.strategy,
                creation_time: job.creation_time,
                hyper_parameter_tuning_end_time: job.end_time,
                last_modified_time: job.last_modified_time,
                training_job_status_counters: training,
                objective_status_counters: objective,
                resource_limits: job.spec.hyper_parameter_tuning_job_config.resource_limits.clone(),
            });
        }
        let next_token = if more {
            rows.last()
                .map(|last| token::encode_job_cursor(OP, sort, &last.name, last.creation_time, last.status.as_str()))
        } else {
            None
        };
        Ok(ListTuningJobsResponse {
            hyper_parameter_tuning_job_summaries: summaries,
            next_token,
        })
    }

    /// `ListTrainingJobsForHyperParameterTuningJob`.
    pub async fn list_tuning_children(
        &self,
        caller: &Caller,
        req: ListTuningChildrenRequest,
    ) -> ApiResult<ListTuningChildrenResponse> {
        const OP: &str = "ListTrainingJobsForHyperParameterTuningJob";
        let job = self
            .load_tuning(&caller.account, &req.hyper_parameter_tuning_job_name)
            .await?
            .ok_or_else(|| AwsError::resource_not_found(NOT_FOUND))?;
        let mut children = self.children(&job).await?;
        if let Some(s) = &req.status_equals {
            children.retain(|c| c.job.status.as_str() == s);
        }
        let descending = req.sort_order.as_deref() == Some("Descending");
        match req.sort_by.as_deref() {
            Some("CreationTime") => children.sort_by(|a, b| a.job.creation_time.total_cmp(&b.job.creation_time)),
            Some("Status") => children.sort_by_key(|c| c.job.status.as_str()),
            Some("FinalObjectiveMetricValue") => {
                children.retain(|c| c.objective.is_some());
                children.sort_by(|a, b| a.objective.unwrap_or(0.0).total_cmp(&b.objective.unwrap_or(0.0)));
            }
            _ => children.sort_by_key(|c| c.job.name.to_lowercase()),
        }
        if descending {
            children.reverse();
        }
        let start: usize = match &req.next_token {
            Some(t) => token::decode(OP, t)?,
            None => 0,
        };
        let limit = req.max_results.unwrap_or(10).clamp(1, 100) as usize;
        let page: Vec<TuningChildSummary> = children
            .iter()
            .skip(start)
            .take(limit)
            .map(|c| summary(&job, c))
            .collect();
        Ok(ListTuningChildrenResponse {
            training_job_summaries: page,
            next_token: (start + limit < children.len()).then(|| token::encode(OP, start + limit)),
        })
    }

    /// `StopHyperParameterTuningJob`: `Stopping` and its running children stopped; it ends
    /// `Stopped` once they have.
    pub async fn stop_tuning_job(&self, caller: &Caller, req: TuningJobNameRequest) -> ApiResult<Empty> {
        self.apply_tuning(&caller.account, &req.hyper_parameter_tuning_job_name, Event::Stop)
            .await?;
        self.wake();
        Ok(Empty {})
    }

    /// `DeleteHyperParameterTuningJob`: removes the tuning job's record; its training jobs stay.
    pub async fn delete_tuning_job(&self, caller: &Caller, req: TuningJobNameRequest) -> ApiResult<Empty> {
        let Some(job) = self
            .load_tuning(&caller.account, &req.hyper_parameter_tuning_job_name)
            .await?
        else {
            return Err(AwsError::resource_not_found(NOT_FOUND));
        };
        if job.status.is_active() {
            return Err(AwsError::validation(format!(
                "The tuning job '{}' is {}; stop it and wait for it to end before deleting it.",
                job.name, job.status
            )));
        }
        match self.store.delete_tuning_job(&caller.account, &job.name).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(Empty {}),
            Err(e) => Err(store_err(e)),
        }
    }

    /// The ARN of a tuning job of the account, if it exists (for tags).
    pub(crate) async fn tuning_arn(&self, account: &str, name: &str) -> ApiResult<Option<String>> {
        Ok(self.load_tuning(account, name).await?.map(|j| j.arn))
    }
}
