//! Hyperparameter tuning jobs: the API operations and the tuner that launches, early-stops and
//! judges child training jobs (reference §3.8–§3.12, §11). Strategies come from `kiln-tune`.
//!
//! Rules kiln chooses where SageMaker does not document one:
//! - Child names are `<tuning>-<NNN>-<8 hex>`, the hex a hash of the tuning job's name and the
//!   child's index: re-launching after a restart finds the child already there, so nothing is
//!   duplicated or lost.
//! - With several `TrainingJobDefinitions`, children take the definitions in turn.
//! - A tuning job *fails* when its first five finished children (or all of them, if it launches
//!   fewer) failed without an objective value; the reason quotes the first child's failure.
//! - A completion criterion (target reached, not improving, convergence, MaxRuntimeInSeconds)
//!   stops launching, stops the running children, and the job ends `Completed`.

use std::collections::BTreeMap;

use kiln_api::arn::{self, ResourceType};
use kiln_api::shapes::{CreateTrainingJobRequest, MetricDefinition, Tag, timestamp_value};
use kiln_api::tuning::{
    CreateTuningJobRequest, ListTuningChildrenRequest, ListTuningJobsRequest, NumericRange, ParameterRanges,
    TrainingJobDefinition, TuningJobConfig, TuningJobNameRequest, TuningObjective,
};
use kiln_api::{ApiResult, AwsError, validate};
use kiln_store::{Cursor, CursorValue, JobQuery, JobSort, StoreError, TagRow, TrainingJobRow};
use kiln_tune::{
    BayesianConfig, Direction, HyperbandConfig, Param, Scaling, SearchSpace, StrategyConfig, Trial, TrialState,
    WarmStart, WarmStartType,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::job::TrainingJob;
use crate::status::JobStatus;
use crate::{Caller, Engine, now, runtime, store_err, token};

const NOT_FOUND: &str = "Requested resource not found.";
/// Names of static hyperparameters SageMaker reads `MaxResource` from for Hyperband.
const EPOCH_KEYS: &[&str] = &["epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs"];
const FAIL_AFTER: usize = 5;

/// What the tuner keeps besides the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TuningState {
    /// Children created so far (the next child's index).
    pub launched: usize,
    /// Set when a completion criterion fired: launching stops and running children are stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence_detected_time: Option<f64>,
    /// Children this tuner stopped early (they end `Stopped`, their objective still counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub early_stopped: Vec<String>,
    /// Intermediate values already judged by the early-stopping rule, per child.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub judged: BTreeMap<String, usize>,
}

/// A tuning job loaded from the store.
#[derive(Debug, Clone)]
pub struct TuningJob {
    pub row: TrainingJobRow,
    pub spec: CreateTuningJobRequest,
    pub state: TuningState,
}

impl TuningJob {
    fn from_row(row: TrainingJobRow) -> ApiResult<Self> {
        let spec = serde_json::from_str(&row.spec)
            .map_err(|e| AwsError::internal(format!("stored tuning job '{}' is unreadable: {e}", row.name)))?;
        let state = serde_json::from_str(&row.state)
            .map_err(|e| AwsError::internal(format!("stored tuning job '{}' is unreadable: {e}", row.name)))?;
        Ok(Self { row, spec, state })
    }

    fn to_row(&self) -> TrainingJobRow {
        let mut row = self.row.clone();
        row.spec = serde_json::to_string(&self.spec).unwrap_or_default();
        row.state = serde_json::to_string(&self.state).unwrap_or_default();
        row
    }

    fn status(&self) -> &str {
        &self.row.status
    }

    fn definitions(&self) -> Vec<&TrainingJobDefinition> {
        match (&self.spec.training_job_definition, &self.spec.training_job_definitions) {
            (Some(d), _) => vec![d],
            (None, Some(ds)) => ds.iter().collect(),
            _ => Vec::new(),
        }
    }

    fn objective_of(&self, def: &TrainingJobDefinition) -> Option<TuningObjective> {
        def.tuning_objective
            .clone()
            .or_else(|| self.spec.hyper_parameter_tuning_job_config.objective.clone())
    }

    fn ranges_of(&self, def: &TrainingJobDefinition) -> ParameterRanges {
        def.hyper_parameter_ranges
            .clone()
            .or_else(|| self.spec.hyper_parameter_tuning_job_config.parameter_ranges.clone())
            .unwrap_or_default()
    }

    fn max_jobs(&self) -> usize {
        self.spec
            .hyper_parameter_tuning_job_config
            .resource_limits
            .max_number_of_training_jobs
            .unwrap_or(1)
            .max(1) as usize
    }

    fn max_parallel(&self) -> usize {
        self.spec
            .hyper_parameter_tuning_job_config
            .resource_limits
            .max_parallel_training_jobs
            .max(1) as usize
    }

    fn seed(&self) -> u64 {
        match self.spec.hyper_parameter_tuning_job_config.random_seed {
            Some(s) => s as u64,
            None => fnv(self.row.name.to_lowercase().as_bytes()),
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn direction(obj: &TuningObjective) -> Direction {
    if obj.kind == "Maximize" {
        Direction::Maximize
    } else {
        Direction::Minimize
    }
}

fn scaling(s: &Option<String>) -> Scaling {
    match s.as_deref() {
        Some("Linear") => Scaling::Linear,
        Some("Logarithmic") => Scaling::Logarithmic,
        Some("ReverseLogarithmic") => Scaling::ReverseLogarithmic,
        _ => Scaling::Auto,
    }
}

fn parse_bound<T: std::str::FromStr>(r: &NumericRange, which: &str, v: &str, kind: &str) -> ApiResult<T> {
    v.trim().parse().map_err(|_| {
        AwsError::validation(format!(
            "The {which} '{v}' of hyperparameter range '{}' is not a valid {kind}.",
            r.name
        ))
    })
}

/// The search space of a definition's ranges.
pub fn search_space(ranges: &ParameterRanges) -> ApiResult<SearchSpace> {
    let mut params = Vec::new();
    for r in &ranges.integer_parameter_ranges {
        let min: i64 = parse_bound(r, "MinValue", &r.min_value, "integer")?;
        let max: i64 = parse_bound(r, "MaxValue", &r.max_value, "integer")?;
        params.push(Param::integer(&r.name, min, max, scaling(&r.scaling_type)));
    }
    for r in &ranges.continuous_parameter_ranges {
        let min: f64 = parse_bound(r, "MinValue", &r.min_value, "number")?;
        let max: f64 = parse_bound(r, "MaxValue", &r.max_value, "number")?;
        params.push(Param::continuous(&r.name, min, max, scaling(&r.scaling_type)));
    }
    for r in &ranges.categorical_parameter_ranges {
        params.push(Param::categorical(&r.name, r.values.clone()));
    }
    let space = SearchSpace::new(params);
    space.validate().map_err(|e| AwsError::validation(e.to_string()))?;
    Ok(space)
}

fn strategy_of(cfg: &TuningJobConfig, def: &TrainingJobDefinition) -> ApiResult<StrategyConfig> {
    Ok(match cfg.strategy.as_str() {
        "Random" => StrategyConfig::Random,
        "Grid" => StrategyConfig::Grid,
        "Hyperband" => {
            let hb = cfg
                .strategy_config
                .as_ref()
                .and_then(|s| s.hyperband_strategy_config.clone())
                .unwrap_or_default();
            let statics = def.static_hyper_parameters.clone().unwrap_or_default();
            let inferred = EPOCH_KEYS
                .iter()
                .find_map(|k| statics.get(*k))
                .and_then(|v| v.trim_matches('"').parse::<i64>().ok());
            let max = hb.max_resource.or(inferred).ok_or_else(|| {
                AwsError::validation(
                    "Hyperband needs a MaxResource: set HyperbandStrategyConfig.MaxResource, or a static \
                     hyperparameter epochs (or numepochs, n-epochs, n_epochs, num_epochs).",
                )
            })?;
            StrategyConfig::Hyperband(HyperbandConfig {
                min_resource: hb.min_resource.unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32,
                max_resource: max.clamp(1, i64::from(u32::MAX)) as u32,
            })
        }
        _ => StrategyConfig::Bayesian(BayesianConfig::default()),
    })
}

/// `<tuning>-<NNN>-<8 hex>`.
pub fn child_name(tuning: &str, index: usize) -> String {
    // splitmix64's finaliser spreads FNV's similar outputs for similar inputs over all 32 bits.
    let mut h = fnv(format!("{}#{index}", tuning.to_lowercase()).as_bytes());
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d049bb133111eb);
    h ^= h >> 31;
    format!("{tuning}-{:03}-{:08x}", index + 1, h as u32)
}

fn child_index(tuning: &str, child: &str) -> Option<usize> {
    let rest = child.get(tuning.len() + 1..)?;
    let (n, _) = rest.split_once('-')?;
    n.parse::<usize>().ok()?.checked_sub(1)
}

/// One child as the tuner sees it.
struct Child {
    index: usize,
    job: TrainingJob,
    tuned: BTreeMap<String, String>,
    objective: Option<f64>,
}

impl Engine {
    async fn load_tuning(&self, account: &str, name: &str) -> ApiResult<Option<TuningJob>> {
        match self.store.get_tuning_job(account, name).await.map_err(store_err)? {
            Some(row) => Ok(Some(TuningJob::from_row(row)?)),
            None => Ok(None),
        }
    }

    async fn update_tuning<F>(&self, account: &str, name: &str, mut change: F) -> ApiResult<TuningJob>
    where
        F: FnMut(&mut TuningJob) -> ApiResult<()>,
    {
        for _ in 0..20 {
            let Some(mut job) = self.load_tuning(account, name).await? else {
                return Err(AwsError::resource_not_found(NOT_FOUND));
            };
            change(&mut job)?;
            match self.store.update_tuning_job(&job.to_row()).await {
                Ok(v) => {
                    job.row.version = v;
                    return Ok(job);
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(AwsError::resource_not_found(NOT_FOUND)),
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(AwsError::new(
            400,
            "ThrottlingException",
            "The tuning job is being updated concurrently; retry.",
        ))
    }

    /// `CreateHyperParameterTuningJob`.
    pub async fn create_tuning_job(&self, caller: &Caller, mut req: CreateTuningJobRequest) -> ApiResult<Value> {
        self.check_tuning_request(caller, &mut req).await?;
        let t = now();
        let name = req.hyper_parameter_tuning_job_name.clone();
        let arn = arn::build(&caller.region, &caller.account, ResourceType::TuningJob, &name);
        let tags: Vec<TagRow> = req
            .tags
            .iter()
            .flatten()
            .map(|t| TagRow {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect();
        let job = TuningJob {
            row: TrainingJobRow {
                account: caller.account.clone(),
                name: name.clone(),
                arn: arn.clone(),
                status: "InProgress".into(),
                secondary_status: String::new(),
                creation_time: t,
                last_modified_time: t,
                training_end_time: None,
                warm_pool_status: None,
                tuning_job_arn: None,
                spec: String::new(),
                state: String::new(),
                version: 0,
            },
            spec: req,
            state: TuningState::default(),
        };
        match self.store.insert_tuning_job(&job.to_row(), &tags).await {
            Ok(()) => {
                self.wake();
                Ok(json!({ "HyperParameterTuningJobArn": arn }))
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
        let early = cfg
            .training_job_early_stopping_type
            .get_or_insert_with(|| "Off".into())
            .clone();
        if cfg.strategy == "Hyperband" && early != "Off" {
            return v(
                "TrainingJobEarlyStoppingType must be Off with the Hyperband strategy, which stops jobs itself.".into(),
            );
        }
        if cfg.strategy != "Grid" && cfg.resource_limits.max_number_of_training_jobs.is_none() {
            return v(format!(
                "ResourceLimits.MaxNumberOfTrainingJobs is required with the {} strategy.",
                cfg.strategy
            ));
        }
        if cfg
            .strategy_config
            .as_ref()
            .and_then(|s| s.hyperband_strategy_config.as_ref())
            .is_some()
            && cfg.strategy != "Hyperband"
        {
            return v("HyperbandStrategyConfig can only be given with the Hyperband strategy.".into());
        }
        let config = cfg.clone();
        let shared_objective = cfg.objective.clone();
        let strategy = cfg.strategy.clone();
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
            if space.is_empty() && strategy != "Grid" {
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
            if runtime::is_builtin_xgboost(&sample) {
                let defs = def
                    .algorithm_specification
                    .metric_definitions
                    .get_or_insert_with(Vec::new);
                for (name, regex) in kiln_algos::builtin_metric_definitions("xgboost") {
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
            if strategy == "Grid" {
                grid_total += kiln_tune::grid_size(&space).map_err(|e| AwsError::validation(e.to_string()))?;
            }
            self.check_fits(&TrainingJob::new(&caller.account, &caller.region, sample, now()))?;
        }
        let cfg = &mut req.hyper_parameter_tuning_job_config;
        if strategy == "Grid" {
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
                if !matches!(parent.status(), "Completed" | "Stopped" | "Failed") {
                    return v(format!(
                        "Warm start parent tuning job '{}' is {}; parents must have finished.",
                        parent.row.name,
                        parent.status()
                    ));
                }
            }
        }
        Ok(())
    }

    /// `DescribeHyperParameterTuningJob`.
    pub async fn describe_tuning_job(&self, caller: &Caller, req: TuningJobNameRequest) -> ApiResult<Value> {
        let job = self
            .load_tuning(&caller.account, &req.hyper_parameter_tuning_job_name)
            .await?
            .ok_or_else(|| AwsError::resource_not_found(NOT_FOUND))?;
        let children = self.children(&job).await?;
        let mut out = match serde_json::to_value(&job.spec) {
            Ok(Value::Object(m)) => m,
            _ => Default::default(),
        };
        out.remove("Tags");
        out.insert("HyperParameterTuningJobArn".into(), json!(job.row.arn));
        out.insert("HyperParameterTuningJobStatus".into(), json!(job.row.status));
        out.insert("CreationTime".into(), json!(job.row.creation_time));
        out.insert("LastModifiedTime".into(), json!(job.row.last_modified_time));
        if let Some(t) = job.row.training_end_time {
            out.insert("HyperParameterTuningEndTime".into(), json!(t));
        }
        let (training, objective) = counters(&children);
        out.insert("TrainingJobStatusCounters".into(), training);
        out.insert("ObjectiveStatusCounters".into(), objective);
        if let Some(best) = best_child(&job, &children) {
            out.insert("BestTrainingJob".into(), self.summary(&job, best));
        }
        if let Some(ws) = &job.spec.warm_start_config
            && ws.warm_start_type == "IdenticalDataAndAlgorithm"
        {
            let mut all: Vec<(TuningJob, Child)> = Vec::new();
            for p in &ws.parent_hyper_parameter_tuning_jobs {
                if let Some(parent) = self
                    .load_tuning(&caller.account, &p.hyper_parameter_tuning_job_name)
                    .await?
                {
                    for c in self.children(&parent).await? {
                        all.push((parent.clone(), c));
                    }
                }
            }
            for c in children.iter() {
                all.push((
                    job.clone(),
                    Child {
                        index: c.index,
                        job: c.job.clone(),
                        tuned: c.tuned.clone(),
                        objective: c.objective,
                    },
                ));
            }
            let dir = job
                .definitions()
                .first()
                .and_then(|d| job.objective_of(d))
                .map(|o| direction(&o));
            if let Some(dir) = dir {
                let best = all.iter().filter(|(_, c)| c.objective.is_some()).reduce(|a, b| {
                    if dir.better(b.1.objective.unwrap_or(0.0), a.1.objective.unwrap_or(0.0)) {
                        b
                    } else {
                        a
                    }
                });
                if let Some((owner, c)) = best {
                    out.insert("OverallBestTrainingJob".into(), self.summary(owner, c));
                }
            }
        }
        if let Some(r) = &job.state.failure_reason {
            out.insert("FailureReason".into(), json!(r));
        }
        let mut details = json!({ "NumberOfTrainingJobsObjectiveNotImproving": not_improving(&job, &children) });
        if let Some(t) = job.state.convergence_detected_time {
            details["ConvergenceDetectedTime"] = json!(t);
        }
        out.insert("TuningJobCompletionDetails".into(), details);
        let end = job.row.training_end_time.unwrap_or_else(now);
        out.insert(
            "ConsumedResources".into(),
            json!({ "RuntimeInSeconds": (end - job.row.creation_time).max(0.0) as i64 }),
        );
        Ok(Value::Object(out))
    }

    fn summary(&self, tuning: &TuningJob, c: &Child) -> Value {
        let defs = tuning.definitions();
        let def = defs.get(c.index % defs.len().max(1)).copied();
        let mut v = json!({
            "TrainingJobName": c.job.row.name,
            "TrainingJobArn": c.job.row.arn,
            "TuningJobName": tuning.row.name,
            "CreationTime": c.job.row.creation_time,
            "TrainingJobStatus": c.job.row.status,
            "TunedHyperParameters": c.tuned,
            "ObjectiveStatus": objective_status(c),
        });
        if let Some(d) = def.and_then(|d| d.definition_name.clone()) {
            v["TrainingJobDefinitionName"] = json!(d);
        }
        if let Some(t) = c.job.state.training_start_time {
            v["TrainingStartTime"] = json!(t);
        }
        if let Some(t) = c.job.row.training_end_time {
            v["TrainingEndTime"] = json!(t);
        }
        if let Some(r) = &c.job.state.failure_reason {
            v["FailureReason"] = json!(r);
        }
        if let (Some(value), Some(obj)) = (c.objective, def.and_then(|d| tuning.objective_of(d))) {
            v["FinalHyperParameterTuningJobObjectiveMetric"] =
                json!({ "Type": obj.kind, "MetricName": obj.metric_name, "Value": value });
        }
        v
    }

    /// The children of a tuning job, in launch order.
    async fn children(&self, job: &TuningJob) -> ApiResult<Vec<Child>> {
        let mut q = JobQuery::all(&job.row.account, 100);
        q.tuning_job_arn = Some(job.row.arn.clone());
        q.sort = JobSort::Name;
        q.descending = false;
        let mut rows = Vec::new();
        loop {
            let page = self.store.list_training_jobs(&q).await.map_err(store_err)?;
            let Some(last) = page.last() else { break };
            q.after = Some(Cursor {
                value: CursorValue::Text(last.name.to_lowercase()),
                name_key: last.name.to_lowercase(),
            });
            let full = page.len() == 100;
            rows.extend(page);
            if !full {
                break;
            }
        }
        let defs = job.definitions();
        let mut out = Vec::new();
        for row in rows {
            let Some(index) = child_index(&job.row.name, &row.name) else {
                continue;
            };
            let child = TrainingJob::from_row(row)?;
            let def = defs.get(index % defs.len().max(1)).copied();
            let tuned_names: Vec<String> = def
                .map(|d| job.ranges_of(d).names().iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let hps = child.spec.hyper_parameters.clone().unwrap_or_default();
            let tuned = hps.into_iter().filter(|(k, _)| tuned_names.contains(k)).collect();
            let metric = def.and_then(|d| job.objective_of(d)).map(|o| o.metric_name);
            let objective = metric.and_then(|m| {
                child
                    .state
                    .final_metric_data_list
                    .iter()
                    .find(|x| x.metric_name == m)
                    .map(|x| x.value)
            });
            out.push(Child {
                index,
                job: child,
                tuned,
                objective,
            });
        }
        out.sort_by_key(|c| c.index);
        Ok(out)
    }

    /// `ListHyperParameterTuningJobs`.
    pub async fn list_tuning_jobs(&self, caller: &Caller, req: ListTuningJobsRequest) -> ApiResult<Value> {
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
        for row in &rows {
            let job = TuningJob::from_row(row.clone())?;
            let children = self.children(&job).await?;
            let (training, objective) = counters(&children);
            let mut s = json!({
                "HyperParameterTuningJobName": job.row.name,
                "HyperParameterTuningJobArn": job.row.arn,
                "HyperParameterTuningJobStatus": job.row.status,
                "Strategy": job.spec.hyper_parameter_tuning_job_config.strategy,
                "CreationTime": job.row.creation_time,
                "LastModifiedTime": job.row.last_modified_time,
                "TrainingJobStatusCounters": training,
                "ObjectiveStatusCounters": objective,
                "ResourceLimits": job.spec.hyper_parameter_tuning_job_config.resource_limits,
            });
            if let Some(t) = job.row.training_end_time {
                s["HyperParameterTuningEndTime"] = json!(t);
            }
            summaries.push(s);
        }
        let mut out = json!({ "HyperParameterTuningJobSummaries": summaries });
        if more && let Some(last) = rows.last() {
            out["NextToken"] = json!(token::encode_job_cursor(OP, sort, last));
        }
        Ok(out)
    }

    /// `ListTrainingJobsForHyperParameterTuningJob`.
    pub async fn list_tuning_children(&self, caller: &Caller, req: ListTuningChildrenRequest) -> ApiResult<Value> {
        const OP: &str = "ListTrainingJobsForHyperParameterTuningJob";
        let job = self
            .load_tuning(&caller.account, &req.hyper_parameter_tuning_job_name)
            .await?
            .ok_or_else(|| AwsError::resource_not_found(NOT_FOUND))?;
        let mut children = self.children(&job).await?;
        if let Some(s) = &req.status_equals {
            children.retain(|c| &c.job.row.status == s);
        }
        let descending = req.sort_order.as_deref() == Some("Descending");
        match req.sort_by.as_deref() {
            Some("CreationTime") => {
                children.sort_by(|a, b| a.job.row.creation_time.total_cmp(&b.job.row.creation_time))
            }
            Some("Status") => children.sort_by_key(|c| c.job.row.status.clone()),
            Some("FinalObjectiveMetricValue") => {
                children.retain(|c| c.objective.is_some());
                children.sort_by(|a, b| a.objective.unwrap_or(0.0).total_cmp(&b.objective.unwrap_or(0.0)));
            }
            _ => children.sort_by_key(|c| c.job.row.name.to_lowercase()),
        }
        if descending {
            children.reverse();
        }
        let start: usize = match &req.next_token {
            Some(t) => token::decode(OP, t)?,
            None => 0,
        };
        let limit = req.max_results.unwrap_or(10).clamp(1, 100) as usize;
        let page: Vec<Value> = children
            .iter()
            .skip(start)
            .take(limit)
            .map(|c| self.summary(&job, c))
            .collect();
        let mut out = json!({ "TrainingJobSummaries": page });
        if start + limit < children.len() {
            out["NextToken"] = json!(token::encode(OP, start + limit));
        }
        Ok(out)
    }

    /// `StopHyperParameterTuningJob`.
    pub async fn stop_tuning_job(&self, caller: &Caller, req: TuningJobNameRequest) -> ApiResult<Value> {
        let t = now();
        self.update_tuning(&caller.account, &req.hyper_parameter_tuning_job_name, |j| {
            match j.status() {
                "InProgress" => {
                    j.row.status = "Stopping".into();
                    j.row.last_modified_time = t;
                    Ok(())
                }
                "Stopping" => Ok(()),
                s => Err(AwsError::validation(format!(
                    "The tuning job '{}' is {s}; only an InProgress tuning job can be stopped.",
                    j.row.name
                ))),
            }
        })
        .await?;
        self.wake();
        Ok(json!({}))
    }

    /// `DeleteHyperParameterTuningJob`: removes the tuning job's record; its training jobs stay.
    pub async fn delete_tuning_job(&self, caller: &Caller, req: TuningJobNameRequest) -> ApiResult<Value> {
        let Some(job) = self
            .load_tuning(&caller.account, &req.hyper_parameter_tuning_job_name)
            .await?
        else {
            return Err(AwsError::resource_not_found(NOT_FOUND));
        };
        if matches!(job.status(), "InProgress" | "Stopping") {
            return Err(AwsError::validation(format!(
                "The tuning job '{}' is {}; stop it and wait for it to end before deleting it.",
                job.row.name,
                job.status()
            )));
        }
        match self.store.delete_tuning_job(&caller.account, &job.row.name).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(json!({})),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Whether a tuning job of the account exists (for tags); returns its ARN.
    pub(crate) async fn tuning_arn(&self, account: &str, name: &str) -> ApiResult<Option<String>> {
        Ok(self.load_tuning(account, name).await?.map(|j| j.row.arn))
    }

    /// One pass of the tuner over every active tuning job.
    pub async fn tune_tick(&self) -> ApiResult<()> {
        let rows = self
            .store
            .tuning_jobs_with_status(&["InProgress", "Stopping"])
            .await
            .map_err(store_err)?;
        for row in rows {
            let (account, name) = (row.account.clone(), row.name.clone());
            if let Err(e) = self.tune_one(&account, &name).await {
                tracing::warn!(target: "kiln::tuner", "tuning job {name}: {}", e.message);
            }
        }
        Ok(())
    }

    async fn tune_one(&self, account: &str, name: &str) -> ApiResult<()> {
        let Some(job) = self.load_tuning(account, name).await? else {
            return Ok(());
        };
        let children = self.children(&job).await?;
        let running: Vec<&Child> = children.iter().filter(|c| !c.job.status().is_terminal()).collect();
        let t = now();
        let caller = Caller {
            account: account.to_string(),
            region: job.row.arn.split(':').nth(3).unwrap_or("us-east-1").to_string(),
        };

        if job.status() == "Stopping" || job.state.completing.is_some() || job.state.failure_reason.is_some() {
            for c in &running {
                if c.job.status() == JobStatus::InProgress {
                    self.stop_child(&caller, &c.job.row.name).await;
                }
            }
            if running.is_empty() {
                let end = if job.status() == "Stopping" {
                    "Stopped"
                } else if job.state.failure_reason.is_some() {
                    "Failed"
                } else {
                    "Completed"
                };
                self.finish_tuning(account, name, end, t).await?;
            }
            return Ok(());
        }

        let defs = job.definitions();
        if defs.is_empty() {
            return Ok(());
        }
        // Per definition: its space, strategy, direction and history.
        struct Def {
            space: SearchSpace,
            strategy: StrategyConfig,
            direction: Direction,
            metric: String,
            history: Vec<Trial>,
            indices: Vec<usize>,
        }
        let mut per_def: Vec<Def> = Vec::new();
        for d in &defs {
            let obj = job.objective_of(d).unwrap_or(TuningObjective {
                kind: "Minimize".into(),
                metric_name: String::new(),
            });
            per_def.push(Def {
                space: search_space(&job.ranges_of(d))?,
                strategy: strategy_of(&job.spec.hyper_parameter_tuning_job_config, d)?,
                direction: direction(&obj),
                metric: obj.metric_name,
                history: Vec::new(),
                indices: Vec::new(),
            });
        }
        let ndefs = per_def.len();
        for c in &children {
            let d = &mut per_def[c.index % ndefs];
            let intermediate = if matches!(d.strategy, StrategyConfig::Hyperband(_))
                || job
                    .spec
                    .hyper_parameter_tuning_job_config
                    .training_job_early_stopping_type
                    .as_deref()
                    == Some("Auto")
            {
                self.store
                    .metric_points(account, &c.job.row.name, Some(&d.metric))
                    .await
                    .map_err(store_err)?
                    .into_iter()
                    .map(|p| p.value)
                    .collect()
            } else {
                Vec::new()
            };
            d.history.push(trial_of(c, intermediate));
            d.indices.push(c.index);
        }

        // Early stopping: judge each new intermediate value of running children, one at a time.
        let auto = job
            .spec
            .hyper_parameter_tuning_job_config
            .training_job_early_stopping_type
            .as_deref()
            == Some("Auto");
        let mut judged = job.state.judged.clone();
        let mut to_stop = Vec::new();
        for d in &per_def {
            let hb = match d.strategy {
                StrategyConfig::Hyperband(h) => Some(h),
                _ => None,
            };
            if hb.is_none() && !auto {
                continue;
            }
            for (pos, trial) in d.history.iter().enumerate() {
                if !trial.is_running() {
                    continue;
                }
                let child = &children
                    .iter()
                    .find(|c| c.index == d.indices[pos])
                    .map(|c| c.job.row.name.clone())
                    .unwrap_or_default();
                let seen = judged.get(child).copied().unwrap_or(0);
                for k in (seen + 1)..=trial.intermediate.len() {
                    let mut view = d.history.clone();
                    view[pos].intermediate.truncate(k);
                    let stop = match hb {
                        Some(h) => kiln_tune::hyperband_should_stop(pos, &view, &h, d.direction),
                        None => kiln_tune::median_should_stop(pos, &view, d.direction),
                    };
                    judged.insert(child.clone(), k);
                    if stop {
                        to_stop.push(child.clone());
                        break;
                    }
                }
            }
        }
        if judged != job.state.judged || !to_stop.is_empty() {
            let stops = to_stop.clone();
            self.update_tuning(account, name, |j| {
                j.state.judged = judged.clone();
                for s in &stops {
                    if !j.state.early_stopped.contains(s) {
                        j.state.early_stopped.push(s.clone());
                    }
                }
                Ok(())
            })
            .await?;
            for s in &to_stop {
                self.stop_child(&caller, s).await;
            }
        }

        // Completion and failure.
        let finished: Vec<&Child> = children.iter().filter(|c| c.job.status().is_terminal()).collect();
        let cfg = &job.spec.hyper_parameter_tuning_job_config;
        let mut completing: Option<String> = None;
        let mut convergence_time = None;
        if finished.len() >= FAIL_AFTER.min(job.max_jobs())
            && finished.iter().all(|c| c.objective.is_none())
            && !finished.is_empty()
        {
            let first = finished.iter().min_by_key(|c| c.index).map(|c| {
                c.job
                    .state
                    .failure_reason
                    .clone()
                    .unwrap_or_else(|| format!("{} emitted no objective metric", c.job.row.name))
            });
            let reason = format!(
                "The first {} training jobs failed without an objective value. First failure: {}",
                finished.len(),
                first.unwrap_or_default()
            );
            self.update_tuning(account, name, |j| {
                j.state.failure_reason = Some(reason.chars().take(1024).collect());
                Ok(())
            })
            .await?;
            return Ok(());
        }
        for d in &per_def {
            if let Some(cc) = &cfg.completion_criteria {
                if let Some(target) = cc.target_objective_metric_value
                    && kiln_tune::target_reached(&d.history, d.direction, target)
                {
                    completing = Some(format!("the objective reached TargetObjectiveMetricValue {target}"));
                }
                if let Some(n) = cc
                    .best_objective_not_improving
                    .as_ref()
                    .and_then(|b| b.max_number_of_training_jobs_not_improving)
                    && kiln_tune::not_improving_count(&d.history, d.direction) >= n.max(1) as usize
                {
                    completing = Some(format!("{n} training jobs in a row did not improve the best objective"));
                }
                if cc
                    .convergence_detected
                    .as_ref()
                    .and_then(|c| c.complete_on_convergence.as_deref())
                    == Some("Enabled")
                    && kiln_tune::convergence_detected(&d.history, d.direction)
                {
                    completing = Some("the objective converged".into());
                    convergence_time = Some(t);
                }
            }
        }
        if let Some(limit) = cfg.resource_limits.max_runtime_in_seconds
            && t - job.row.creation_time > limit as f64
        {
            completing = Some(format!("MaxRuntimeInSeconds ({limit} s) was reached"));
        }
        if job.state.launched >= job.max_jobs() && running.is_empty() {
            completing = Some("every training job ran".into());
        }
        if let Some(reason) = completing {
            self.update_tuning(account, name, |j| {
                j.state.completing = Some(reason.clone());
                if convergence_time.is_some() {
                    j.state.convergence_detected_time = convergence_time;
                }
                Ok(())
            })
            .await?;
            self.wake();
            return Ok(());
        }

        // Launch while there is room.
        let mut launched = job.state.launched;
        let mut in_flight = running.len();
        let warm = self.warm_start(&job).await?;
        while in_flight < job.max_parallel() && launched < job.max_jobs() {
            let def_i = launched % ndefs;
            let d = &per_def[def_i];
            let pos = d.history.len();
            let seed = job.seed() ^ (def_i as u64).wrapping_mul(0x9e3779b97f4a7c15);
            let suggestion = kiln_tune::suggest_with_warm_start(
                &d.strategy,
                &d.space,
                &d.history,
                warm.as_ref(),
                d.direction,
                seed,
                pos,
            );
            let assignment = match suggestion {
                Ok(a) => a,
                Err(kiln_tune::TuneError::GridExhausted { .. }) => break,
                Err(e) => return Err(AwsError::internal(format!("tuning strategy failed: {e}"))),
            };
            let child = child_name(&job.row.name, launched);
            let tags: Vec<Tag> = self
                .store
                .list_tags(account, &job.row.arn, None, 1000)
                .await
                .map_err(store_err)?
                .into_iter()
                .map(|t| Tag {
                    key: t.key,
                    value: t.value,
                })
                .collect();
            let req = child_request(&child, defs[def_i], assignment.clone(), Some(tags))?;
            match self.create_child(&caller, req, &job.row.arn).await {
                Ok(()) | Err(StoreError::AlreadyExists) => {}
                Err(e) => return Err(store_err(e)),
            }
            per_def[def_i].history.push(Trial::running(assignment));
            launched += 1;
            in_flight += 1;
            let n = launched;
            self.update_tuning(account, name, |j| {
                j.state.launched = j.state.launched.max(n);
                j.row.last_modified_time = now();
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    async fn warm_start(&self, job: &TuningJob) -> ApiResult<Option<WarmStart>> {
        let Some(ws) = &job.spec.warm_start_config else {
            return Ok(None);
        };
        let mut trials = Vec::new();
        for p in &ws.parent_hyper_parameter_tuning_jobs {
            if let Some(parent) = self
                .load_tuning(&job.row.account, &p.hyper_parameter_tuning_job_name)
                .await?
            {
                for c in self.children(&parent).await? {
                    trials.push(trial_of(&c, Vec::new()));
                }
            }
        }
        let kind = if ws.warm_start_type == "TransferLearning" {
            WarmStartType::TransferLearning
        } else {
            WarmStartType::IdenticalDataAndAlgorithm
        };
        Ok(Some(WarmStart {
            kind,
            parent_trials: trials,
        }))
    }

    async fn create_child(
        &self,
        caller: &Caller,
        mut req: CreateTrainingJobRequest,
        tuning_arn: &str,
    ) -> Result<(), StoreError> {
        validate::fill_defaults(&mut req);
        let tags: Vec<TagRow> = req
            .tags
            .iter()
            .flatten()
            .map(|t| TagRow {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect();
        let mut job = TrainingJob::new(&caller.account, &caller.region, req, now());
        job.row.tuning_job_arn = Some(tuning_arn.to_string());
        self.store.insert_training_job(&job.to_row(), &tags).await?;
        self.wake();
        Ok(())
    }

    async fn stop_child(&self, caller: &Caller, name: &str) {
        let req = kiln_api::shapes::TrainingJobNameRequest {
            training_job_name: name.to_string(),
        };
        if let Err(e) = self.stop_training_job(caller, req).await
            && e.code != "ValidationException"
        {
            tracing::warn!(target: "kiln::tuner", "could not stop {name}: {}", e.message);
        }
    }

    async fn finish_tuning(&self, account: &str, name: &str, status: &str, t: f64) -> ApiResult<()> {
        self.update_tuning(account, name, |j| {
            if matches!(j.status(), "InProgress" | "Stopping") {
                j.row.status = status.to_string();
                j.row.training_end_time = Some(t);
                j.row.last_modified_time = t;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
}

/// The `CreateTrainingJob` request of a child: the definition, the static hyperparameters, the
/// tuned values, and the tuning job's tags.
fn child_request(
    name: &str,
    def: &TrainingJobDefinition,
    tuned: BTreeMap<String, String>,
    tags: Option<Vec<Tag>>,
) -> ApiResult<CreateTrainingJobRequest> {
    let mut v = serde_json::Map::new();
    for (k, val) in &def.extra {
        v.insert(k.clone(), val.clone());
    }
    let alg = &def.algorithm_specification;
    let mut spec = json!({ "TrainingInputMode": alg.training_input_mode });
    if let Some(i) = &alg.training_image {
        spec["TrainingImage"] = json!(i);
    }
    if let Some(a) = &alg.algorithm_name {
        spec["AlgorithmName"] = json!(a);
    }
    if let Some(m) = &alg.metric_definitions {
        spec["MetricDefinitions"] = json!(m);
    }
    v.insert("AlgorithmSpecification".into(), spec);
    if !v.contains_key("ResourceConfig")
        && let Some(rc) = &def.hyper_parameter_tuning_resource_config
    {
        let mut r = serde_json::Map::new();
        for k in ["InstanceType", "InstanceCount", "VolumeSizeInGB", "VolumeKmsKeyId"] {
            if let Some(x) = rc.get(k) {
                r.insert(k.into(), x.clone());
            }
        }
        if let Some(first) = rc
            .get("InstanceConfigs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            for k in ["InstanceType", "InstanceCount", "VolumeSizeInGB"] {
                if let Some(x) = first.get(k) {
                    r.insert(k.into(), x.clone());
                }
            }
        }
        v.insert("ResourceConfig".into(), Value::Object(r));
    }
    let mut hps = def.static_hyper_parameters.clone().unwrap_or_default();
    hps.extend(tuned);
    v.insert("HyperParameters".into(), json!(hps));
    v.insert("TrainingJobName".into(), json!(name));
    if let Some(t) = tags
        && !t.is_empty()
    {
        v.insert("Tags".into(), json!(t));
    }
    serde_json::from_value(Value::Object(v))
        .map_err(|e| AwsError::validation(format!("The training job definition cannot make a training job: {e}")))
}

fn trial_of(c: &Child, intermediate: Vec<f64>) -> Trial {
    let state = match c.job.status() {
        JobStatus::InProgress | JobStatus::Stopping | JobStatus::Deleting => TrialState::Running,
        JobStatus::Completed => match c.objective {
            Some(o) => TrialState::Completed { objective: o },
            None => TrialState::Failed,
        },
        JobStatus::Failed => TrialState::Failed,
        JobStatus::Stopped => TrialState::Stopped { objective: c.objective },
    };
    Trial {
        assignment: c.tuned.clone(),
        state,
        intermediate,
        finish_seq: c.job.row.training_end_time.map(|t| (t * 1000.0) as u64),
    }
}

fn objective_status(c: &Child) -> &'static str {
    match c.job.status() {
        JobStatus::InProgress | JobStatus::Stopping | JobStatus::Deleting => "Pending",
        _ if c.objective.is_some() => "Succeeded",
        _ => "Failed",
    }
}

fn counters(children: &[Child]) -> (Value, Value) {
    let (mut completed, mut in_progress, mut retryable, mut non_retryable, mut stopped) = (0, 0, 0, 0, 0);
    let (mut succeeded, mut pending, mut failed) = (0, 0, 0);
    for c in children {
        match c.job.status() {
            JobStatus::Completed => completed += 1,
            JobStatus::Stopped => stopped += 1,
            JobStatus::Failed => {
                let reason = c.job.state.failure_reason.as_deref().unwrap_or("");
                if reason.starts_with("InternalServerError") || reason.starts_with("CapacityError") {
                    retryable += 1
                } else {
                    non_retryable += 1
                }
            }
            _ => in_progress += 1,
        }
        match objective_status(c) {
            "Succeeded" => succeeded += 1,
            "Pending" => pending += 1,
            _ => failed += 1,
        }
    }
    (
        json!({ "Completed": completed, "InProgress": in_progress, "RetryableError": retryable,
                "NonRetryableError": non_retryable, "Stopped": stopped }),
        json!({ "Succeeded": succeeded, "Pending": pending, "Failed": failed }),
    )
}

fn best_child<'a>(job: &TuningJob, children: &'a [Child]) -> Option<&'a Child> {
    let defs = job.definitions();
    let dir = defs.first().and_then(|d| job.objective_of(d)).map(|o| direction(&o))?;
    children
        .iter()
        .filter(|c| c.objective.is_some() && c.job.status().is_terminal())
        .reduce(|a, b| {
            if dir.better(b.objective.unwrap_or(0.0), a.objective.unwrap_or(0.0)) {
                b
            } else {
                a
            }
        })
}

fn not_improving(job: &TuningJob, children: &[Child]) -> usize {
    let defs = job.definitions();
    let Some(dir) = defs.first().and_then(|d| job.objective_of(d)).map(|o| direction(&o)) else {
        return 0;
    };
    let history: Vec<Trial> = children.iter().map(|c| trial_of(c, Vec::new())).collect();
    kiln_tune::not_improving_count(&history, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_are_stable_and_parse_back() {
        let a = child_name("xgb-tune", 0);
        assert_eq!(a, child_name("xgb-tune", 0));
        assert!(a.starts_with("xgb-tune-001-") && a.len() == "xgb-tune-001-".len() + 8);
        assert_eq!(child_index("xgb-tune", &a), Some(0));
        assert_eq!(child_index("xgb-tune", &child_name("xgb-tune", 41)), Some(41));
        assert_ne!(child_name("xgb-tune", 1), child_name("XGB-tune2", 1));
        assert!(child_name(&"t".repeat(32), 749).len() <= 63);
    }

    #[test]
    fn ranges_become_a_search_space() {
        let r = ParameterRanges {
            integer_parameter_ranges: vec![NumericRange {
                name: "max_depth".into(),
                min_value: "2".into(),
                max_value: "8".into(),
                scaling_type: None,
            }],
            continuous_parameter_ranges: vec![NumericRange {
                name: "eta".into(),
                min_value: "0.01".into(),
                max_value: "0.5".into(),
                scaling_type: Some("Logarithmic".into()),
            }],
            categorical_parameter_ranges: vec![],
            auto_parameters: None,
        };
        assert_eq!(search_space(&r).unwrap().len(), 2);
        let mut bad = r.clone();
        bad.continuous_parameter_ranges[0].min_value = "-1".into();
        assert!(search_space(&bad).unwrap_err().message.contains("eta"));
        bad.continuous_parameter_ranges[0].min_value = "x".into();
        assert!(search_space(&bad).unwrap_err().message.contains("not a valid number"));
    }
}
