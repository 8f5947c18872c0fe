//! SageMaker `Search`: its request, and its `SearchExpression` checked once into an [`Expr`] that
//! is then evaluated over each resource as a JSON document (the record `Search` returns: the
//! `Describe*` answer, with `Tags` as a map from key to value while searching).
//!
//! A property name is a path into that document: `TrainingJobName`, `ResourceConfig.InstanceType`,
//! `HyperParameters.eta`, `Tags.team`. Lists are looked through (`InputDataConfig.ChannelName`
//! matches when any channel's name does), and a map key that holds dots (`Tags.a.b`) is found whole.
//! Comparisons are numeric when both sides are numbers (hyperparameters are strings holding
//! numbers; times are epoch seconds, and a filter may give them as numbers or RFC 3339), and
//! otherwise compare text.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::Value;

use crate::{ApiResult, AwsError};

/// How deep `SubExpressions` may nest.
const MAX_DEPTH: usize = 5;

/// `SearchRequest`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SearchRequest {
    pub resource: String,
    pub search_expression: Option<SearchExpression>,
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    /// Accepted and ignored: an account only ever sees its own resources.
    pub cross_account_filter_option: Option<String>,
    /// Accepted and ignored.
    pub visibility_conditions: Option<Value>,
}

/// `SearchExpression`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SearchExpression {
    pub filters: Option<Vec<Filter>>,
    pub nested_filters: Option<Vec<NestedFilters>>,
    pub sub_expressions: Option<Vec<SearchExpression>>,
    pub operator: Option<String>,
}

/// `Filter`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Filter {
    pub name: String,
    pub operator: Option<String>,
    pub value: Option<String>,
}

/// `NestedFilters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NestedFilters {
    pub nested_property_name: String,
    pub filters: Vec<Filter>,
}

/// The resources kiln searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    TrainingJob,
    HyperParameterTuningJob,
}

/// The searchable top-level properties of a training job (botocore's `TrainingJob` shape).
const TRAINING_JOB_PROPERTIES: &[&str] = &[
    "TrainingJobName",
    "TrainingJobArn",
    "TuningJobArn",
    "LabelingJobArn",
    "AutoMLJobArn",
    "ModelArtifacts",
    "TrainingJobStatus",
    "SecondaryStatus",
    "FailureReason",
    "HyperParameters",
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "WarmPoolStatus",
    "VpcConfig",
    "StoppingCondition",
    "CreationTime",
    "TrainingStartTime",
    "TrainingEndTime",
    "LastModifiedTime",
    "SecondaryStatusTransitions",
    "FinalMetricDataList",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "TrainingTimeInSeconds",
    "BillableTimeInSeconds",
    "DebugHookConfig",
    "ExperimentConfig",
    "DebugRuleConfigurations",
    "TensorBoardOutputConfig",
    "DebugRuleEvaluationStatuses",
    "OutputModelPackageArn",
    "ModelPackageConfig",
    "ProfilerConfig",
    "Environment",
    "RetryStrategy",
    "Tags",
];

/// The searchable top-level properties of a tuning job (botocore's
/// `HyperParameterTuningJobSearchEntity` shape).
const TUNING_JOB_PROPERTIES: &[&str] = &[
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobArn",
    "HyperParameterTuningJobConfig",
    "TrainingJobDefinition",
    "TrainingJobDefinitions",
    "HyperParameterTuningJobStatus",
    "CreationTime",
    "HyperParameterTuningEndTime",
    "LastModifiedTime",
    "TrainingJobStatusCounters",
    "ObjectiveStatusCounters",
    "BestTrainingJob",
    "OverallBestTrainingJob",
    "WarmStartConfig",
    "FailureReason",
    "TuningJobCompletionDetails",
    "ConsumedResources",
    "Tags",
];

impl Resource {
    /// The `Resource` of a request; kiln searches training and tuning jobs only.
    pub fn parse(name: &str) -> ApiResult<Resource> {
        match name {
            "TrainingJob" => Ok(Resource::TrainingJob),
            "HyperParameterTuningJob" => Ok(Resource::HyperParameterTuningJob),
            other => Err(AwsError::validation(format!(
                "kiln does not search {other} resources; Resource must be TrainingJob or HyperParameterTuningJob."
            ))),
        }
    }

    /// The key of a `SearchRecord` holding this resource.
    pub fn record_key(self) -> &'static str {
        match self {
            Resource::TrainingJob => "TrainingJob",
            Resource::HyperParameterTuningJob => "HyperParameterTuningJob",
        }
    }

    /// The searchable top-level properties (members of the record's shape).
    pub fn properties(self) -> &'static [&'static str] {
        match self {
            Resource::TrainingJob => TRAINING_JOB_PROPERTIES,
            Resource::HyperParameterTuningJob => TUNING_JOB_PROPERTIES,
        }
    }

    /// Checks that `name` is a property of this resource (its first segment names a member).
    pub fn check_property(self, name: &str) -> ApiResult<()> {
        let top = name.split('.').next().unwrap_or_default();
        if self.properties().contains(&top) {
            return Ok(());
        }
        Err(AwsError::validation(format!(
            "{name} is not a searchable property of {}: a property is a path below one of {}.",
            self.record_key(),
            self.properties().join(", ")
        )))
    }
}

/// A filter's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanOrEqualTo,
    LessThan,
    LessThanOrEqualTo,
    Contains,
    Exists,
    NotExists,
    In,
}

impl Op {
    fn parse(name: Option<&str>) -> ApiResult<Op> {
        Ok(match name.unwrap_or("Equals") {
            "Equals" => Op::Equals,
            "NotEquals" => Op::NotEquals,
            "GreaterThan" => Op::GreaterThan,
            "GreaterThanOrEqualTo" => Op::GreaterThanOrEqualTo,
            "LessThan" => Op::LessThan,
            "LessThanOrEqualTo" => Op::LessThanOrEqualTo,
            "Contains" => Op::Contains,
            "Exists" => Op::Exists,
            "NotExists" => Op::NotExists,
            "In" => Op::In,
            other => {
                return Err(AwsError::validation(format!(
                    "Invalid Operator {other}: one of Equals, NotEquals, GreaterThan, GreaterThanOrEqualTo, LessThan, \
                     LessThanOrEqualTo, Contains, Exists, NotExists, In."
                )));
            }
        })
    }
}

/// One checked filter: a property path, an operator and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub name: String,
    pub op: Op,
    pub value: String,
}

/// A checked search expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Every part holds (`Operator: And`, the default; no parts: everything matches).
    All(Vec<Expr>),
    /// Some part holds (`Operator: Or`).
    Any(Vec<Expr>),
    Test(Test),
    /// Some element of the list at `list` passes every test (their names relative to it).
    Nested {
        list: String,
        tests: Vec<Test>,
    },
}

fn test(resource: Resource, f: &Filter) -> ApiResult<Test> {
    resource.check_property(&f.name)?;
    let op = Op::parse(f.operator.as_deref())?;
    let value = match (op, &f.value) {
        (Op::Exists | Op::NotExists, _) => String::new(),
        (_, Some(v)) => v.clone(),
        (_, None) => {
            return Err(AwsError::validation(format!(
                "The filter on {} with operator {op:?} needs a Value.",
                f.name
            )));
        }
    };
    Ok(Test {
        name: f.name.clone(),
        op,
        value,
    })
}

/// Checks a request's expression against `resource` once.
pub fn compile(resource: Resource, expr: &SearchExpression) -> ApiResult<Expr> {
    compile_at(resource, expr, 1)
}

fn compile_at(resource: Resource, expr: &SearchExpression, depth: usize) -> ApiResult<Expr> {
    if depth > MAX_DEPTH {
        return Err(AwsError::validation(format!(
            "SubExpressions nest more than {MAX_DEPTH} levels deep."
        )));
    }
    let mut parts = Vec::new();
    for f in expr.filters.iter().flatten() {
        parts.push(Expr::Test(test(resource, f)?));
    }
    for n in expr.nested_filters.iter().flatten() {
        resource.check_property(&n.nested_property_name)?;
        let prefix = format!("{}.", n.nested_property_name);
        if n.filters.is_empty() {
            return Err(AwsError::validation(format!(
                "The NestedFilters on {} have no Filters.",
                n.nested_property_name
            )));
        }
        let mut tests = Vec::new();
        for f in &n.filters {
            let mut t = test(resource, f)?;
            let Some(rest) = t.name.strip_prefix(&prefix) else {
                return Err(AwsError::validation(format!(
                    "The nested filter {} must name a property of {} ({prefix}<name>).",
                    f.name, n.nested_property_name
                )));
            };
            t.name = rest.to_string();
            tests.push(t);
        }
        parts.push(Expr::Nested {
            list: n.nested_property_name.clone(),
            tests,
        });
    }
    for sub in expr.sub_expressions.iter().flatten() {
        parts.push(compile_at(resource, sub, depth + 1)?);
    }
    match expr.operator.as_deref() {
        None | Some("And") => Ok(Expr::All(parts)),
        Some("Or") => Ok(Expr::Any(parts)),
        Some(other) => Err(AwsError::validation(format!(
            "Invalid Operator {other} of a SearchExpression: And or Or."
        ))),
    }
}

impl Expr {
    /// Whether the resource `doc` matches.
    pub fn matches(&self, doc: &Value) -> bool {
        match self {
            Expr::All(parts) => parts.iter().all(|p| p.matches(doc)),
            Expr::Any(parts) => parts.iter().any(|p| p.matches(doc)),
            Expr::Test(t) => t.holds(doc),
            Expr::Nested { list, tests } => lookup(doc, list)
                .into_iter()
                .any(|item| tests.iter().all(|t| t.holds(item))),
        }
    }

    /// Whether any property this expression reads starts with `top` (e.g. `Tags`).
    pub fn reads(&self, top: &str) -> bool {
        let under = |name: &str| name == top || name.starts_with(&format!("{top}."));
        match self {
            Expr::All(parts) | Expr::Any(parts) => parts.iter().any(|p| p.reads(top)),
            Expr::Test(t) => under(&t.name),
            Expr::Nested { list, .. } => under(list),
        }
    }

    /// The filters every match must pass (those of the top level when it is an `And`), for
    /// narrowing the candidates before evaluating.
    pub fn required_tests(&self) -> Vec<&Test> {
        match self {
            Expr::All(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Expr::Test(t) => Some(t),
                    _ => None,
                })
                .collect(),
            Expr::Test(t) => vec![t],
            _ => Vec::new(),
        }
    }
}

impl Test {
    fn holds(&self, doc: &Value) -> bool {
        let found = lookup(doc, &self.name);
        match self.op {
            Op::Exists => !found.is_empty(),
            Op::NotExists => found.is_empty(),
            // A property that is absent is not equal to anything.
            Op::NotEquals => !found.iter().any(|v| compare(v, &self.value) == Some(Ordering::Equal)),
            Op::Equals => found.iter().any(|v| compare(v, &self.value) == Some(Ordering::Equal)),
            Op::GreaterThan => found.iter().any(|v| compare(v, &self.value) == Some(Ordering::Greater)),
            Op::GreaterThanOrEqualTo => found
                .iter()
                .any(|v| matches!(compare(v, &self.value), Some(Ordering::Greater | Ordering::Equal))),
            Op::LessThan => found.iter().any(|v| compare(v, &self.value) == Some(Ordering::Less)),
            Op::LessThanOrEqualTo => found
                .iter()
                .any(|v| matches!(compare(v, &self.value), Some(Ordering::Less | Ordering::Equal))),
            Op::Contains => found.iter().any(|v| text(v).is_some_and(|t| t.contains(&self.value))),
            Op::In => found.iter().any(|v| {
                self.value
                    .split(',')
                    .any(|w| compare(v, w.trim()) == Some(Ordering::Equal))
            }),
        }
    }
}

/// The values at `path` in `doc`: lists are looked through, and a map key holding dots is found
/// whole (keys are tried from one segment up).
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let segs: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    walk(doc, &segs, &mut out);
    out
}

fn walk<'a>(v: &'a Value, segs: &[&str], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| walk(i, segs, out)),
        Value::Null => {}
        _ if segs.is_empty() => out.push(v),
        Value::Object(map) => {
            for n in 1..=segs.len() {
                if let Some(child) = map.get(&segs[..n].join(".")) {
                    walk(child, &segs[n..], out);
                    return;
                }
            }
        }
        _ => {}
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A filter value as a number: a number, or an RFC 3339 time (epoch seconds).
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    s.parse::<f64>().ok().filter(|n| n.is_finite()).or_else(|| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
    })
}

/// How a document's value compares with a filter's: as numbers when both are, else as text
/// (`None` for values that have neither form).
pub fn compare(v: &Value, want: &str) -> Option<Ordering> {
    match v {
        Value::Number(n) => {
            let a = n.as_f64()?;
            number(want).and_then(|b| a.partial_cmp(&b))
        }
        Value::String(s) => match (s.trim().parse::<f64>(), want.trim().parse::<f64>()) {
            (Ok(a), Ok(b)) => a.partial_cmp(&b),
            _ => Some(s.as_str().cmp(want)),
        },
        Value::Bool(b) => Some(b.to_string().as_str().cmp(want)),
        _ => None,
    }
}

/// The order of two documents' sort values (the first value at the `SortBy` path); documents
/// without one go last whatever the direction, which the caller applies to `Some` pairs only.
pub fn sort_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => match (x, y) {
            (Value::Number(p), Value::Number(q)) => p.as_f64().unwrap_or(0.0).total_cmp(&q.as_f64().unwrap_or(0.0)),
            _ => text(y)
                .and_then(|t| compare(x, &t))
                .unwrap_or_else(|| text(x).cmp(&text(y))),
        },
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job() -> Value {
        json!({
            "TrainingJobName": "xgb-a",
            "TrainingJobStatus": "Completed",
            "CreationTime": 1_700_000_000.0,
            "HyperParameters": {"eta": "0.3", "max_depth": "6", "sagemaker.x": "y"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2},
            "InputDataConfig": [{"ChannelName": "train"}, {"ChannelName": "validation"}],
            "FinalMetricDataList": [
                {"MetricName": "validation:auc", "Value": 0.91},
                {"MetricName": "train:auc", "Value": 0.99}
            ],
            "EnableManagedSpotTraining": false,
            "Tags": {"team": "ml", "a.b": "dotted"}
        })
    }

    fn filter(name: &str, op: &str, value: Option<&str>) -> Filter {
        Filter {
            name: name.into(),
            operator: Some(op.into()),
            value: value.map(String::from),
        }
    }

    fn one(f: Filter) -> bool {
        let e = SearchExpression {
            filters: Some(vec![f]),
            ..Default::default()
        };
        compile(Resource::TrainingJob, &e).unwrap().matches(&job())
    }

    #[test]
    fn each_operator() {
        assert!(one(filter("TrainingJobName", "Equals", Some("xgb-a"))));
        assert!(!one(filter("TrainingJobName", "Equals", Some("xgb"))));
        assert!(one(filter("TrainingJobStatus", "NotEquals", Some("Failed"))));
        assert!(
            one(filter("FailureReason", "NotEquals", Some("x"))),
            "absent is not equal"
        );
        assert!(
            one(filter("HyperParameters.eta", "GreaterThan", Some("0.25"))),
            "numbers, not text"
        );
        assert!(!one(filter("HyperParameters.max_depth", "GreaterThan", Some("10"))));
        assert!(one(filter(
            "HyperParameters.max_depth",
            "GreaterThanOrEqualTo",
            Some("6")
        )));
        assert!(one(filter("HyperParameters.eta", "LessThan", Some("1"))));
        assert!(one(filter(
            "ResourceConfig.InstanceCount",
            "LessThanOrEqualTo",
            Some("2")
        )));
        assert!(one(filter("TrainingJobName", "Contains", Some("gb-"))));
        assert!(!one(filter("TrainingJobName", "Contains", Some("GB"))));
        assert!(one(filter("Tags.team", "Exists", None)));
        assert!(one(filter("Tags.owner", "NotExists", None)));
        assert!(one(filter("TrainingJobStatus", "In", Some("Failed, Completed"))));
        assert!(!one(filter("TrainingJobStatus", "In", Some("Failed,Stopped"))));
        assert!(one(filter("EnableManagedSpotTraining", "Equals", Some("false"))));
    }

    #[test]
    fn paths_times_lists_and_dotted_keys() {
        assert!(one(filter("CreationTime", "GreaterThan", Some("2023-11-14T00:00:00Z"))));
        assert!(one(filter("CreationTime", "LessThan", Some("1700000001"))));
        assert!(one(filter("InputDataConfig.ChannelName", "Equals", Some("validation"))));
        assert!(one(filter("Tags.a.b", "Equals", Some("dotted"))));
        assert!(one(filter("HyperParameters.sagemaker.x", "Equals", Some("y"))));
    }

    #[test]
    fn nested_filters_need_one_element_to_pass_all() {
        let nested = |name: &str, value: &str| SearchExpression {
            nested_filters: Some(vec![NestedFilters {
                nested_property_name: "FinalMetricDataList".into(),
                filters: vec![
                    filter("FinalMetricDataList.MetricName", "Equals", Some(name)),
                    filter("FinalMetricDataList.Value", "GreaterThan", Some(value)),
                ],
            }]),
            ..Default::default()
        };
        let m = |e: SearchExpression| compile(Resource::TrainingJob, &e).unwrap().matches(&job());
        assert!(m(nested("validation:auc", "0.9")));
        // train:auc is above 0.95, but validation:auc is the one named.
        assert!(!m(nested("validation:auc", "0.95")));
    }

    #[test]
    fn and_or_and_sub_expressions() {
        let e = SearchExpression {
            operator: Some("Or".into()),
            filters: Some(vec![filter("TrainingJobStatus", "Equals", Some("Failed"))]),
            sub_expressions: Some(vec![SearchExpression {
                filters: Some(vec![
                    filter("Tags.team", "Equals", Some("ml")),
                    filter("HyperParameters.eta", "Equals", Some("0.3")),
                ]),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let x = compile(Resource::TrainingJob, &e).unwrap();
        assert!(x.matches(&job()));
        assert!(x.reads("Tags") && !x.reads("Tag"));
        assert!(
            compile(Resource::TrainingJob, &SearchExpression::default())
                .unwrap()
                .matches(&job())
        );
    }

    #[test]
    fn bad_input_is_a_validation_error() {
        let bad = |f: Filter| {
            let e = SearchExpression {
                filters: Some(vec![f]),
                ..Default::default()
            };
            compile(Resource::TrainingJob, &e).unwrap_err().code
        };
        assert_eq!(bad(filter("Nope", "Equals", Some("x"))), "ValidationException");
        assert_eq!(bad(filter("TrainingJobName", "Like", Some("x"))), "ValidationException");
        assert_eq!(bad(filter("TrainingJobName", "Equals", None)), "ValidationException");
        assert!(Resource::parse("Endpoint").is_err());
        let mut deep = SearchExpression::default();
        for _ in 0..MAX_DEPTH {
            deep = SearchExpression {
                sub_expressions: Some(vec![deep]),
                ..Default::default()
            };
        }
        assert!(compile(Resource::TrainingJob, &deep).is_err());
    }

    #[test]
    fn sort_values_missing_last() {
        let (a, b) = (json!(2.0), json!("10"));
        assert_eq!(sort_order(Some(&a), Some(&b)), Ordering::Less);
        assert_eq!(sort_order(None, Some(&a)), Ordering::Greater);
        assert_eq!(sort_order(Some(&json!("abc")), Some(&json!("abd"))), Ordering::Less);
    }
}
