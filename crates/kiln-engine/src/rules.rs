//! SageMaker Debugger and Profiler rules, evaluated by kiln on what it records of a job: the
//! metric series its `MetricDefinitions` read from the logs, the hosts' `CPUUtilization`, and the
//! time of the last log line. kiln has no tensor hook, so a rule reads metrics where SageMaker's
//! reads tensors: a loss rule reads the metric its `metric_name` parameter names, else the first
//! metric definition whose name matches `tensor_regex`, else the first whose name contains `loss`;
//! a "step" is one point of that metric. Rules that need tensors (gradients, weights, activations)
//! end in `Error` and say so.
//!
//! A rule is `InProgress` while the job runs and turns `IssuesFound` as soon as its condition is
//! met (as SageMaker's rule jobs end when they fire). When the job ends, the rules still in
//! progress are evaluated once more on everything recorded: `IssuesFound`, `NoIssuesFound`, or
//! `Error` when what the rule reads was never printed. A stopped job's rules end `Stopped`.
//! `StalledTrainingRule` with `stop_training_on_fire` stops the job.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kiln_api::shapes::{CreateTrainingJobRequest, RuleEvaluation};
use kiln_api::status::{RuleEvaluationStatus, TrainingJobStatus};
use kiln_store::{CustomSeries, MetricPoint, RuleRecord, TrainingJobRow};
use serde_json::Value;

use crate::Engine;
use crate::training::machine::Event;

/// How often the rules of one running job are evaluated.
const EVALUATE_EVERY: Duration = Duration::from_secs(2);

/// A rule kiln knows, by the name SageMaker gives it (`rule_to_invoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LossNotDecreasing,
    Overfit,
    Overtraining,
    StalledTraining,
    LowGpuUtilization,
    CpuBottleneck,
    ProfilerReport,
}

impl Kind {
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "LossNotDecreasing" => Kind::LossNotDecreasing,
            "Overfit" => Kind::Overfit,
            "Overtraining" => Kind::Overtraining,
            "StalledTrainingRule" => Kind::StalledTraining,
            "LowGPUUtilization" => Kind::LowGpuUtilization,
            "CPUBottleneck" => Kind::CpuBottleneck,
            "ProfilerReport" => Kind::ProfilerReport,
            _ => return None,
        })
    }
}

/// The rules kiln evaluates, for messages.
pub const KNOWN: &str = "LossNotDecreasing, Overfit, Overtraining, StalledTrainingRule, LowGPUUtilization, \
                         CPUBottleneck, ProfilerReport";

/// One rule configuration of a job, as requested.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `RuleConfigurationName`.
    pub name: String,
    /// `rule_to_invoke` (else the configuration name up to its first `-`).
    pub invoke: String,
    pub params: BTreeMap<String, String>,
    pub profiler: bool,
}

impl Rule {
    fn kind(&self) -> Option<Kind> {
        Kind::from_name(&self.invoke)
    }

    /// A numeric parameter, its default when absent; an unreadable one is the rule's error.
    fn num(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.params.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("RuleParameters {key}='{v}' is not a non-negative number")),
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.params
            .get(key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
    }
}

/// The rule configurations of a request's `member` (`DebugRuleConfigurations`,
/// `ProfilerRuleConfigurations`), as validated at create time.
pub fn configured(extra: &kiln_api::shapes::Extra, member: &str) -> Vec<Rule> {
    let profiler = member.starts_with("Profiler");
    let Some(Value::Array(list)) = extra.get(member) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|r| {
            let name = r.get("RuleConfigurationName")?.as_str()?.to_string();
            let params: BTreeMap<String, String> = r
                .get("RuleParameters")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let invoke = params
                .get("rule_to_invoke")
                .cloned()
                .unwrap_or_else(|| name.split('-').next().unwrap_or(&name).to_string());
            Some(Rule {
                name,
                invoke,
                params,
                profiler,
            })
        })
        .collect()
}

/// Every rule of a job's request, Debugger ones first.
pub fn rules_of(spec: &CreateTrainingJobRequest) -> Vec<Rule> {
    let mut rules = configured(&spec.extra, "DebugRuleConfigurations");
    rules.extend(configured(&spec.extra, "ProfilerRuleConfigurations"));
    rules
}

/// The evaluation record of a new rule: `InProgress`, with the ARN of the processing job that
/// SageMaker would run it in (`<job>-<rule>-<8 hex digits>`, the digits a hash of both).
pub fn new_record(job_arn: &str, job_name: &str, rule: &Rule, now: f64) -> RuleRecord {
    let prefix = job_arn.split_once(":training-job/").map_or(job_arn, |(p, _)| p);
    let slug: String = rule
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    let hash = fnv(&format!("{job_arn}\n{}", rule.name)) as u32;
    let base: String = format!("{}-{}", truncate(job_name, 26), truncate(&slug, 26));
    RuleRecord {
        profiler: rule.profiler,
        evaluation: RuleEvaluation {
            rule_configuration_name: rule.name.clone(),
            rule_evaluation_job_arn: format!("{prefix}:processing-job/{}-{hash:08x}", base.to_lowercase()),
            rule_evaluation_status: RuleEvaluationStatus::InProgress,
            status_details: None,
            last_modified_time: now,
        },
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a job has recorded that rules read.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The metric names of `MetricDefinitions`, in order.
    pub definitions: Vec<String>,
    /// Each metric's values in log order.
    pub series: HashMap<String, Vec<f64>>,
    /// Each host's CPU utilization samples, in percent of the host's cores (0 to 100).
    pub cpu: Vec<Vec<f64>>,
    /// Whether any host reported GPU utilization (kiln's agents do not).
    pub gpus: bool,
    /// When the job last showed progress (its last log line, else the start of `Training`);
    /// `None` before training started.
    pub last_activity: Option<f64>,
    pub now: f64,
    /// Whether the job ended (a last evaluation).
    pub ended: bool,
}

/// A rule's verdict on what was observed so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not decided: the job runs on.
    Pending,
    /// The job ended and the condition was never met (details optional).
    Clear(Option<String>),
    /// The condition is met.
    Fired(String),
    /// The rule cannot be evaluated here.
    Error(String),
}

/// The verdict of `rule` on `seen`. A condition not met yet is `Pending` while the job runs and
/// `Clear` once it ended.
pub fn evaluate(rule: &Rule, seen: &Observed) -> Verdict {
    let Some(kind) = rule.kind() else {
        return Verdict::Error(format!(
            "kiln does not evaluate the rule '{}': it evaluates {KNOWN} on the job's metrics and host \
             metrics (rules that read tensors, and custom rule images, need a Debugger hook kiln does \
             not have)",
            rule.invoke
        ));
    };
    let verdict = match kind {
        Kind::LossNotDecreasing => loss_not_decreasing(rule, seen),
        Kind::Overfit => overfit(rule, seen),
        Kind::Overtraining => overtraining(rule, seen),
        Kind::StalledTraining => stalled(rule, seen),
        Kind::LowGpuUtilization => low_gpu(seen),
        Kind::CpuBottleneck | Kind::ProfilerReport => cpu_bottleneck(rule),
    };
    match verdict {
        Ok(Some(why)) => Verdict::Fired(format!(
            "RuleEvaluationConditionMet: Evaluation of the rule {} resulted in the condition being met: {why}",
            rule.invoke
        )),
        Ok(None) if seen.ended => Verdict::Clear(None),
        Ok(None) => Verdict::Pending,
        Err(e) => Verdict::Error(e),
    }
}

/// The metric a loss rule reads. `role` narrows the default choice (`train`, `validation`):
/// the first `loss` metric whose name also says the role.
fn loss_metric(rule: &Rule, seen: &Observed, param: &str, role: Option<&str>) -> Result<String, String> {
    if let Some(name) = rule.params.get(param) {
        return Ok(name.clone());
    }
    if role.is_none()
        && let Some(re) = rule.params.get("tensor_regex")
    {
        let re = fancy_regex::Regex::new(re).map_err(|e| format!("RuleParameters tensor_regex: {e}"))?;
        return seen
            .definitions
            .iter()
            .find(|d| re.is_match(d).unwrap_or(false))
            .cloned()
            .ok_or_else(|| format!("no metric definition matches tensor_regex '{}'", re.as_str()));
    }
    let losses = seen.definitions.iter().filter(|d| d.to_lowercase().contains("loss"));
    let says = |d: &str, words: &[&str]| words.iter().any(|w| d.to_lowercase().contains(w));
    let found = match role {
        Some("train") => losses.clone().find(|d| says(d, &["train"])),
        Some(_) => losses.clone().find(|d| says(d, &["val", "eval", "test"])),
        None => {
            let mode = rule.params.get("mode").map(|m| m.to_uppercase());
            match mode.as_deref() {
                Some("TRAIN") => losses.clone().find(|d| says(d, &["train"])),
                Some("EVAL") => losses.clone().find(|d| says(d, &["val", "eval", "test"])),
                _ => None,
            }
            .or_else(|| losses.clone().next())
        }
    };
    found.cloned().ok_or_else(|| {
        let what = match role {
            Some("train") => "a training loss (a name with 'loss' and 'train')",
            Some(_) => "a validation loss (a name with 'loss' and 'val', 'eval' or 'test')",
            None => "a loss (a name with 'loss')",
        };
        format!(
            "the job has no metric definition for {what}; name the metric with RuleParameters {param} \
             (its metric definitions: {})",
            if seen.definitions.is_empty() {
                "none".to_string()
            } else {
                seen.definitions.join(", ")
            }
        )
    })
}

/// The values of `metric`; at the end of the job, none is the rule's error.
fn values<'a>(seen: &'a Observed, metric: &str) -> Result<&'a [f64], String> {
    match seen.series.get(metric) {
        Some(v) if !v.is_empty() => Ok(v),
        _ if seen.ended => Err(format!(
            "the job printed no value of the metric '{metric}' (check its MetricDefinitions regex)"
        )),
        _ => Ok(&[]),
    }
}

/// A non-negative whole number of steps.
fn steps(rule: &Rule, key: &str, default: usize) -> Result<usize, String> {
    Ok(rule.num(key, default as f64)?.floor() as usize)
}

/// `LossNotDecreasing`: every `num_steps` steps the loss must have fallen by at least
/// `diff_percent` percent of its value `num_steps` steps earlier; a rise of more than
/// `increase_threshold_percent` percent is reported as such.
fn loss_not_decreasing(rule: &Rule, seen: &Observed) -> Result<Option<String>, String> {
    let metric = loss_metric(rule, seen, "metric_name", None)?;
    let v = values(seen, &metric)?;
    let every = steps(rule, "num_steps", 10)?.max(1);
    let diff = rule.num("diff_percent", 0.1)?;
    let rise = rule.num("increase_threshold_percent", 5.0)?;
    let mut base = 0;
    while base + every < v.len() {
        let (was, now) = (v[base], v[base + every]);
        let at = base + every;
        if now > was + was.abs() * rise / 100.0 {
            return Ok(Some(format!(
                "{metric} rose from {was} at step {base} to {now} at step {at}, more than increase_threshold_percent={rise}"
            )));
        }
        if was - now < was.abs() * diff / 100.0 {
            return Ok(Some(format!(
                "{metric} fell less than diff_percent={diff}% in num_steps={every} steps: {was} at step {base}, {now} at step {at}"
            )));
        }
        base = at;
    }
    Ok(None)
}

/// `Overfit`: from `start_step` on, (validation loss - training loss) / training loss stays above
/// `ratio_threshold` for `patience` consecutive steps.
fn overfit(rule: &Rule, seen: &Observed) -> Result<Option<String>, String> {
    let train = loss_metric(rule, seen, "training_metric", Some("train"))?;
    let valid = loss_metric(rule, seen, "validation_metric", Some("validation"))?;
    let (t, v) = (values(seen, &train)?, values(seen, &valid)?);
    let start = steps(rule, "start_step", 0)?;
    let patience = steps(rule, "patience", 1)?.max(1);
    let threshold = rule.num("ratio_threshold", 0.1)?;
    let mut run = 0;
    for step in start..t.len().min(v.len()) {
        let ratio = (v[step] - t[step]) / t[step].abs().max(f64::MIN_POSITIVE);
        run = if ratio > threshold { run + 1 } else { 0 };
        if run >= patience {
            return Ok(Some(format!(
                "at step {step} {valid}={} is {:.1}% above {train}={} (ratio_threshold={threshold}) for {run} steps",
                v[step],
                ratio * 100.0,
                t[step]
            )));
        }
    }
    Ok(None)
}

/// `Overtraining`: the training loss has not improved by more than `delta` for `patience_train`
/// steps, or the validation loss for `patience_validation` steps.
fn overtraining(rule: &Rule, seen: &Observed) -> Result<Option<String>, String> {
    let delta = rule.num("delta", 0.01)?;
    let checks = [
        ("training_metric", "train", steps(rule, "patience_train", 5)?),
        (
            "validation_metric",
            "validation",
            steps(rule, "patience_validation", 10)?,
        ),
    ];
    for (param, role, patience) in checks {
        let metric = loss_metric(rule, seen, param, Some(role))?;
        let v = values(seen, &metric)?;
        let Some(&first) = v.first() else { continue };
        let (mut best, mut since) = (first, 0);
        for (step, &x) in v.iter().enumerate().skip(1) {
            if best - x > delta {
                best = x;
                since = 0;
            } else {
                since += 1;
            }
            if patience > 0 && since >= patience {
                return Ok(Some(format!(
                    "{metric} has not improved by more than delta={delta} for {since} steps (best {best}, step {step})"
                )));
            }
        }
    }
    Ok(None)
}

/// `StalledTrainingRule`: no log line for `threshold` seconds while the job trains.
fn stalled(rule: &Rule, seen: &Observed) -> Result<Option<String>, String> {
    let threshold = rule.num("threshold", 1800.0)?;
    if seen.ended {
        return Ok(None);
    }
    Ok(seen.last_activity.and_then(|last| {
        let quiet = seen.now - last;
        (quiet > threshold)
            .then(|| format!("the job printed nothing for {quiet:.0} s, more than threshold={threshold} s"))
    }))
}

/// `LowGPUUtilization`: kiln's hosts report no GPU counters, so there is nothing to find.
fn low_gpu(seen: &Observed) -> Result<Option<String>, String> {
    if !seen.gpus && seen.ended {
        return Err(
            "the job's hosts report no GPU utilization (kiln's agents read no GPU counters): nothing to evaluate"
                .into(),
        );
    }
    Ok(None)
}

/// `CPUBottleneck`: after `patience` samples, the CPU above `cpu_threshold` percent while the GPU
/// is below `gpu_threshold` in more than `threshold` percent of the samples. Without GPUs nothing
/// waits on the CPU, so it never fires; the details say how busy the CPU was.
/// `ProfilerReport` runs the profiler rules kiln evaluates with their defaults (so it finds
/// nothing either) and ends with the same summary of the hosts' CPU use.
fn cpu_bottleneck(rule: &Rule) -> Result<Option<String>, String> {
    rule.num("threshold", 50.0)?;
    rule.num("cpu_threshold", 90.0)?;
    rule.num("gpu_threshold", 10.0)?;
    steps(rule, "patience", 1000)?;
    Ok(None)
}

/// The summary `ProfilerReport` and `CPUBottleneck` end with.
pub fn cpu_summary(seen: &Observed) -> String {
    let mut all: Vec<f64> = seen.cpu.iter().flatten().copied().collect();
    if all.is_empty() {
        return "no host metrics were recorded".into();
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    format!(
        "CPU utilization of the {} host(s) over {} samples (percent of each host's vCPUs): p50 {:.0}%, \
         p95 {:.0}%, max {:.0}%; no GPUs, so no CPU bottleneck starves one",
        seen.cpu.len(),
        all.len(),
        pct(0.5),
        pct(0.95),
        all[all.len() - 1]
    )
}

/// What a rule's record becomes after `verdict`: `None` while it stays `InProgress`.
fn outcome(rule: &Rule, verdict: Verdict, seen: &Observed) -> Option<(RuleEvaluationStatus, Option<String>)> {
    let profiler_kind = matches!(rule.kind(), Some(Kind::CpuBottleneck | Kind::ProfilerReport));
    match verdict {
        Verdict::Pending => None,
        Verdict::Fired(d) => Some((RuleEvaluationStatus::IssuesFound, Some(d))),
        Verdict::Clear(d) => Some((
            RuleEvaluationStatus::NoIssuesFound,
            d.or_else(|| profiler_kind.then(|| cpu_summary(seen))),
        )),
        Verdict::Error(d) => Some((RuleEvaluationStatus::Error, Some(d))),
    }
}

/// The changes `RulesEvaluated` makes: for each rule still `InProgress`, its new status.
pub fn judge(job: &TrainingJobRow, seen: &Observed) -> Vec<(String, RuleEvaluationStatus, Option<String>)> {
    let rules = rules_of(&job.spec);
    job.run
        .rules
        .iter()
        .filter(|r| r.evaluation.rule_evaluation_status == RuleEvaluationStatus::InProgress)
        .filter_map(|r| {
            let rule = rules
                .iter()
                .find(|c| c.name == r.evaluation.rule_configuration_name && c.profiler == r.profiler)?;
            let (status, details) = outcome(rule, evaluate(rule, seen), seen)?;
            Some((rule.name.clone(), status, details))
        })
        .collect()
}

/// Whether a fired rule asks for the job to stop (`StalledTrainingRule` with
/// `stop_training_on_fire`).
pub fn stops_job(job: &TrainingJobRow, name: &str) -> bool {
    rules_of(&job.spec)
        .iter()
        .any(|r| r.name == name && r.kind() == Some(Kind::StalledTraining) && r.flag("stop_training_on_fire"))
}

/// Whether any of the job's rules is still being evaluated.
pub fn pending(job: &TrainingJobRow) -> bool {
    job.run
        .rules
        .iter()
        .any(|r| r.evaluation.rule_evaluation_status == RuleEvaluationStatus::InProgress)
}

/// The cores of an instance type, for CPU percentages (1 when unknown).
fn cores_of(spec: &CreateTrainingJobRequest) -> f64 {
    spec.resource_config
        .as_ref()
        .and_then(|rc| rc.instance_type.as_deref())
        .and_then(crate::capacity::instance_resources)
        .map_or(1.0, |r| f64::from(r.vcpus.max(1)))
}

impl Engine {
    /// Evaluates the rules of running jobs, each at most every [`EVALUATE_EVERY`].
    pub(crate) async fn watch_rules(&self, jobs: &[TrainingJobRow]) {
        for job in jobs {
            if job.status != TrainingJobStatus::InProgress || !pending(job) {
                continue;
            }
            let key = (job.account.clone(), job.name.to_lowercase());
            let due = self.rules_checked.lock().is_ok_and(|mut seen| {
                let now = Instant::now();
                match seen.get(&key) {
                    Some(t) if now.duration_since(*t) < EVALUATE_EVERY => false,
                    _ => {
                        seen.insert(key.clone(), now);
                        true
                    }
                }
            });
            if due {
                self.evaluate_rules(job, false).await;
            }
        }
    }

    /// The last evaluation of an ended job's rules still in progress.
    pub(crate) async fn finish_rules(&self, job: &TrainingJobRow) {
        if let Ok(mut seen) = self.rules_checked.lock() {
            seen.remove(&(job.account.clone(), job.name.to_lowercase()));
        }
        if pending(job) {
            self.evaluate_rules(job, true).await;
        }
    }

    async fn evaluate_rules(&self, job: &TrainingJobRow, ended: bool) {
        let seen = match self.observe(job, ended).await {
            Ok(seen) => seen,
            Err(e) => {
                tracing::warn!(target: "kiln::rules", "reading what the rules of {} need: {e}", job.name);
                return;
            }
        };
        let updates = judge(job, &seen);
        if updates.is_empty() {
            return;
        }
        let stop = updates
            .iter()
            .any(|(name, status, _)| *status == RuleEvaluationStatus::IssuesFound && stops_job(job, name));
        for (name, status, _) in &updates {
            tracing::info!(target: "kiln::rules", "training job {}: rule {name} {status}", job.name);
        }
        // Committed without effects: a verdict has none, and this runs inside the `Ended` effect.
        if let Err(e) = self
            .commit(&job.account, &job.name, &Event::RulesEvaluated { updates })
            .await
        {
            tracing::warn!(target: "kiln::rules", "recording the rules of {}: {}", job.name, e.message);
            return;
        }
        if stop && !ended {
            tracing::info!(target: "kiln::rules", "training job {}: stopped by StalledTrainingRule", job.name);
            // Boxed: stopping performs effects, which may end the job and evaluate its rules.
            if let Err(e) = Box::pin(self.apply(&job.account, &job.name, Event::Stop)).await {
                tracing::warn!(target: "kiln::rules", "stopping {}: {}", job.name, e.message);
            }
        }
    }

    /// What the rules of `job` read, from the store.
    async fn observe(&self, job: &TrainingJobRow, ended: bool) -> Result<Observed, String> {
        let points: Vec<MetricPoint> = self
            .store
            .metric_points(&job.account, &job.name, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut series: HashMap<String, Vec<f64>> = HashMap::new();
        for p in points {
            series.entry(p.metric).or_default().push(p.value);
        }
        let definitions = job
            .spec
            .algorithm_specification
            .as_ref()
            .and_then(|a| a.metric_definitions.as_ref())
            .map(|defs| defs.iter().map(|d| d.name.clone()).collect())
            .unwrap_or_default();
        let needs_hosts = job
            .run
            .rules
            .iter()
            .any(|r| r.profiler && r.evaluation.rule_evaluation_status == RuleEvaluationStatus::InProgress);
        let mut cpu = Vec::new();
        if needs_hosts {
            let cores = cores_of(&job.spec);
            for host in &job.run.hosts {
                let dims = serde_json::to_string(&[(
                    kiln_api::cloudwatch::HOST_DIMENSION,
                    format!("{}/{}", job.name, host.host),
                )])
                .unwrap_or_default();
                let series = CustomSeries {
                    namespace: kiln_api::cloudwatch::TRAINING_NAMESPACE.to_string(),
                    metric: "CPUUtilization".into(),
                    dims,
                };
                let points = self
                    .store
                    .custom_metric_points(&job.account, &series, 0.0, f64::MAX)
                    .await
                    .map_err(|e| e.to_string())?;
                cpu.push(points.into_iter().map(|(_, v)| (v / cores).min(100.0)).collect());
            }
        }
        let training_since = job
            .transitions
            .iter()
            .find(|t| t.status == kiln_api::status::SecondaryStatus::Training)
            .map(|t| t.start_time);
        let mut last_activity = None;
        if training_since.is_some() {
            let last_line = self.last_log_line(&job.account, &job.name).await;
            last_activity = match (training_since, last_line) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Observed {
            definitions,
            series,
            cpu,
            gpus: false,
            last_activity,
            now: crate::now(),
            ended,
        })
    }
}

impl Engine {
    /// When the job's hosts last sent a log line (epoch seconds), from their streams' last
    /// ingestion times.
    async fn last_log_line(&self, account: &str, job: &str) -> Option<f64> {
        let query = kiln_store::logs::StreamQuery {
            prefix: format!("{job}/"),
            by_last_event: false,
            descending: false,
            after: None,
            limit: 1000,
        };
        let streams = self
            .logs()
            .list_streams(account, kiln_api::logs::TRAINING_LOG_GROUP, &query)
            .await
            .ok()?;
        streams
            .iter()
            .filter_map(|s| s.last_ingestion_time)
            .max()
            .map(|ms| ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(invoke: &str, params: &[(&str, &str)]) -> Rule {
        Rule {
            name: invoke.to_string(),
            invoke: invoke.to_string(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            profiler: false,
        }
    }

    fn seen(defs: &[&str], series: &[(&str, &[f64])], ended: bool) -> Observed {
        Observed {
            definitions: defs.iter().map(|d| d.to_string()).collect(),
            series: series.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
            ended,
            now: 100.0,
            ..Observed::default()
        }
    }

    #[test]
    fn loss_not_decreasing_fires_on_a_rising_or_flat_loss_and_not_on_a_falling_one() {
        let r = rule("LossNotDecreasing", &[("num_steps", "3")]);
        let falling = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let rising = [1.0, 0.9, 0.8, 0.7, 0.8, 0.9, 1.0];
        let flat = [1.0, 0.9, 0.8, 0.7, 0.7, 0.7, 0.7];
        let defs = ["acc", "train:loss"];
        assert_eq!(
            evaluate(&r, &seen(&defs, &[("train:loss", &falling)], false)),
            Verdict::Pending
        );
        assert_eq!(
            evaluate(&r, &seen(&defs, &[("train:loss", &falling)], true)),
            Verdict::Clear(None)
        );
        let Verdict::Fired(why) = evaluate(&r, &seen(&defs, &[("train:loss", &rising)], false)) else {
            panic!("a rising loss must fire");
        };
        assert!(
            why.starts_with("RuleEvaluationConditionMet: Evaluation of the rule LossNotDecreasing"),
            "{why}"
        );
        assert!(
            why.contains("train:loss rose from 0.7 at step 3 to 1 at step 6"),
            "{why}"
        );
        let Verdict::Fired(why) = evaluate(&r, &seen(&defs, &[("train:loss", &flat)], true)) else {
            panic!("a flat loss must fire");
        };
        assert!(why.contains("fell less than diff_percent=0.1%"), "{why}");
        // The metric named by metric_name, or matched by tensor_regex, wins over the default.
        let named = rule("LossNotDecreasing", &[("num_steps", "3"), ("metric_name", "other")]);
        let s = seen(
            &["train:loss", "other"],
            &[("train:loss", &falling), ("other", &rising)],
            true,
        );
        assert!(matches!(evaluate(&named, &s), Verdict::Fired(_)));
        let matched = rule("LossNotDecreasing", &[("num_steps", "3"), ("tensor_regex", "^oth")]);
        assert!(matches!(evaluate(&matched, &s), Verdict::Fired(_)));
    }

    #[test]
    fn a_rule_without_its_metric_errs_at_the_end_with_what_to_do() {
        let r = rule("LossNotDecreasing", &[]);
        let Verdict::Error(e) = evaluate(&r, &seen(&["acc"], &[], false)) else {
            panic!("a job with no loss metric cannot be evaluated");
        };
        assert!(
            e.contains("no metric definition for a loss") && e.contains("metric_name"),
            "{e}"
        );
        let Verdict::Error(e) = evaluate(&r, &seen(&["loss"], &[], true)) else {
            panic!("no points at the end is an error");
        };
        assert!(e.contains("printed no value of the metric 'loss'"), "{e}");
        let Verdict::Error(e) = evaluate(&rule("VanishingGradient", &[]), &seen(&[], &[], false)) else {
            panic!("an unknown rule is an error");
        };
        assert!(e.contains("kiln does not evaluate the rule 'VanishingGradient'"), "{e}");
        let Verdict::Error(e) = evaluate(
            &rule("LossNotDecreasing", &[("num_steps", "x")]),
            &seen(&["loss"], &[], false),
        ) else {
            panic!("a bad parameter is an error");
        };
        assert!(e.contains("num_steps='x'"), "{e}");
    }

    #[test]
    fn overfit_and_overtraining_compare_training_and_validation_losses() {
        let defs = ["train:loss", "validation:loss"];
        let train = [1.0, 0.8, 0.6, 0.4, 0.3];
        let close = [1.05, 0.85, 0.65, 0.44, 0.32];
        let apart = [1.05, 0.85, 0.7, 0.6, 0.6];
        let of = rule("Overfit", &[("patience", "2")]);
        assert_eq!(
            evaluate(
                &of,
                &seen(&defs, &[("train:loss", &train), ("validation:loss", &close)], true)
            ),
            Verdict::Clear(None)
        );
        let Verdict::Fired(why) = evaluate(
            &of,
            &seen(&defs, &[("train:loss", &train), ("validation:loss", &apart)], false),
        ) else {
            panic!("validation loss 50% above training loss must fire");
        };
        assert!(why.contains("at step 3 validation:loss=0.6"), "{why}");
        let ot = rule("Overtraining", &[("patience_validation", "2")]);
        assert_eq!(
            evaluate(
                &ot,
                &seen(&defs, &[("train:loss", &train), ("validation:loss", &close)], true)
            ),
            Verdict::Clear(None)
        );
        let stalls = [1.05, 0.85, 0.845, 0.85, 0.85];
        let Verdict::Fired(why) = evaluate(
            &ot,
            &seen(&defs, &[("train:loss", &train), ("validation:loss", &stalls)], false),
        ) else {
            panic!("a validation loss flat for 2 steps must fire");
        };
        assert!(why.contains("validation:loss has not improved"), "{why}");
    }

    #[test]
    fn stalled_training_fires_after_its_threshold_of_silence_and_only_while_running() {
        let r = rule(
            "StalledTrainingRule",
            &[("threshold", "10"), ("stop_training_on_fire", "True")],
        );
        let mut s = seen(&[], &[], false);
        assert_eq!(evaluate(&r, &s), Verdict::Pending, "not training yet");
        s.last_activity = Some(95.0);
        assert_eq!(evaluate(&r, &s), Verdict::Pending);
        s.last_activity = Some(80.0);
        assert!(matches!(evaluate(&r, &s), Verdict::Fired(w) if w.contains("printed nothing for 20 s")));
        s.ended = true;
        assert_eq!(evaluate(&r, &s), Verdict::Clear(None));
    }

    #[test]
    fn profiler_rules_end_with_the_cpu_summary() {
        let mut r = rule("ProfilerReport", &[]);
        r.profiler = true;
        let mut s = seen(&[], &[], true);
        s.cpu = vec![vec![10.0, 50.0, 90.0], vec![5.0]];
        let (status, details) = outcome(&r, evaluate(&r, &s), &s).unwrap();
        assert_eq!(status, RuleEvaluationStatus::NoIssuesFound);
        let details = details.unwrap();
        assert!(
            details.contains("2 host(s) over 4 samples") && details.contains("max 90%"),
            "{details}"
        );
        let gpu = rule("LowGPUUtilization", &[]);
        assert!(matches!(evaluate(&gpu, &s), Verdict::Error(e) if e.contains("no GPU utilization")));
    }

    #[test]
    fn configurations_are_read_from_the_request_with_arns_per_rule() {
        let extra: kiln_api::shapes::Extra = serde_json::from_value(serde_json::json!({
            "DebugRuleConfigurations": [
                {"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluatorImage": "i",
                 "RuleParameters": {"rule_to_invoke": "LossNotDecreasing", "num_steps": "3"}},
                {"RuleConfigurationName": "Overfit-1", "RuleEvaluatorImage": "i"}
            ]
        }))
        .unwrap();
        let rules = configured(&extra, "DebugRuleConfigurations");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            (rules[0].invoke.as_str(), rules[0].params["num_steps"].as_str()),
            ("LossNotDecreasing", "3")
        );
        assert_eq!(rules[1].invoke, "Overfit");
        let arn = "arn:aws:sagemaker:us-east-1:123456789012:training-job/my-job";
        let a = new_record(arn, "my-job", &rules[0], 1.0);
        let b = new_record(arn, "my-job", &rules[1], 1.0);
        assert!(
            a.evaluation
                .rule_evaluation_job_arn
                .starts_with("arn:aws:sagemaker:us-east-1:123456789012:processing-job/my-job-lossnotdecreasing-"),
            "{}",
            a.evaluation.rule_evaluation_job_arn
        );
        assert_ne!(
            a.evaluation.rule_evaluation_job_arn,
            b.evaluation.rule_evaluation_job_arn
        );
        assert_eq!(a, new_record(arn, "my-job", &rules[0], 1.0), "the ARN is stable");
    }
}
