//! Validation of request bodies against the AWS service models.
//!
//! The member names, lengths, ranges, patterns and enums come from botocore's service models
//! (`model/*.json`, extracted by `model/extract.py`), so a violation is reported with the same
//! member path and constraint text the real service uses:
//! `1 validation error detected: Value 'a_b' at 'trainingJobName' failed to satisfy constraint: ...`.
//! Wrong JSON types are a `SerializationException`, as they are on the real service.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::error::AwsError;

/// One service's input shapes.
pub struct ServiceModel {
    operations: HashMap<String, Option<String>>,
    shapes: HashMap<String, Shape>,
}

enum Shape {
    Structure {
        members: Vec<(String, String)>,
        required: Vec<String>,
    },
    List {
        member: String,
        min: Option<u64>,
        max: Option<u64>,
    },
    Map {
        key: String,
        value: String,
        min: Option<u64>,
        max: Option<u64>,
    },
    String {
        min: Option<u64>,
        max: Option<u64>,
        pattern: Option<Pattern>,
        values: Option<Vec<String>>,
    },
    Integer {
        min: Option<f64>,
        max: Option<f64>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
    Timestamp,
    Blob,
    /// A shape kind kiln does not validate (documents, unions it never receives).
    Any,
}

struct Pattern {
    source: String,
    regex: Option<fancy_regex::Regex>,
}

#[derive(Deserialize)]
struct RawModel {
    operations: HashMap<String, Option<String>>,
    shapes: HashMap<String, RawShape>,
}

#[derive(Deserialize)]
struct RawShape {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    required: Vec<String>,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    values: Option<Vec<String>>,
    #[serde(default)]
    members: serde_json::Map<String, Value>,
    member: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

/// Java regular expressions as the AWS models write them, made acceptable to `fancy_regex`.
fn translate_java_pattern(p: &str) -> String {
    p.replace("\\p{Alnum}", "a-zA-Z0-9")
}

impl ServiceModel {
    fn parse(json: &str) -> Result<Self, String> {
        let raw: RawModel = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut shapes = HashMap::with_capacity(raw.shapes.len());
        for (name, s) in raw.shapes {
            let len = |v: Option<f64>| v.map(|x| x as u64);
            let shape = match s.kind.as_str() {
                "structure" => Shape::Structure {
                    members: s
                        .members
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect(),
                    required: s.required,
                },
                "list" => Shape::List {
                    member: s.member.unwrap_or_default(),
                    min: len(s.min),
                    max: len(s.max),
                },
                "map" => Shape::Map {
                    key: s.key.unwrap_or_default(),
                    value: s.value.unwrap_or_default(),
                    min: len(s.min),
                    max: len(s.max),
                },
                "string" => Shape::String {
                    min: len(s.min),
                    max: len(s.max),
                    pattern: s.pattern.map(|p| {
                        let anchored = format!("^(?:{})$", translate_java_pattern(&p));
                        Pattern {
                            regex: fancy_regex::Regex::new(&anchored).ok(),
                            source: p,
                        }
                    }),
                    values: s.values,
                },
                "integer" | "long" => Shape::Integer { min: s.min, max: s.max },
                "double" | "float" => Shape::Float { min: s.min, max: s.max },
                "boolean" => Shape::Boolean,
                "timestamp" => Shape::Timestamp,
                "blob" => Shape::Blob,
                _ => Shape::Any,
            };
            shapes.insert(name, shape);
        }
        Ok(Self {
            operations: raw.operations,
            shapes,
        })
    }

    /// Whether the service has this operation.
    pub fn has_operation(&self, op: &str) -> bool {
        self.operations.contains_key(op)
    }

    /// Checks a request body for `op`: types first (`SerializationException`), then every
    /// constraint (`ValidationException` listing all violations).
    pub fn validate(&self, op: &str, body: &Value) -> Result<(), AwsError> {
        let Some(Some(input)) = self.operations.get(op) else {
            return Ok(());
        };
        if !body.is_object() {
            return Err(AwsError::serialization("The request body must be a JSON object."));
        }
        let mut v = Validator {
            model: self,
            violations: Vec::new(),
        };
        v.check(input, body, "")?;
        match v.violations.len() {
            0 => Ok(()),
            1 => Err(AwsError::validation(format!(
                "1 validation error detected: {}",
                v.violations[0]
            ))),
            n => Err(AwsError::validation(format!(
                "{n} validation errors detected: {}",
                v.violations.join("; ")
            ))),
        }
    }

    /// Names of every pattern that `fancy_regex` could not compile (for tests).
    pub fn uncompiled_patterns(&self) -> Vec<String> {
        self.shapes
            .values()
            .filter_map(|s| match s {
                Shape::String { pattern: Some(p), .. } if p.regex.is_none() => Some(p.source.clone()),
                _ => None,
            })
            .collect()
    }
}

struct Validator<'m> {
    model: &'m ServiceModel,
    violations: Vec<String>,
}

/// `TrainingJobName` → `trainingJobName`, the member path style of the service's messages.
fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() {
        member.to_string()
    } else {
        format!("{path}.{member}")
    }
}

/// How the service prints a value inside `Value '...'`: strings raw, lists Java-style.
fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(display).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}={}", display(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Validator<'_> {
    fn violation(&mut self, value: &str, path: &str, constraint: impl AsRef<str>) {
        self.violations.push(format!(
            "Value '{value}' at '{path}' failed to satisfy constraint: {}",
            constraint.as_ref()
        ));
    }

    fn wrong_type(path: &str, expected: &str, v: &Value) -> AwsError {
        let at = if path.is_empty() {
            "the request body".to_string()
        } else {
            format!("'{path}'")
        };
        AwsError::serialization(format!("Expected {expected} at {at}, found {}.", type_name(v)))
    }

    fn length(&mut self, shown: &str, path: &str, len: u64, min: Option<u64>, max: Option<u64>) {
        if let Some(max) = max
            && len > max
        {
            self.violation(
                shown,
                path,
                format!("Member must have length less than or equal to {max}"),
            );
        }
        if let Some(min) = min
            && len < min
        {
            self.violation(
                shown,
                path,
                format!("Member must have length greater than or equal to {min}"),
            );
        }
    }

    fn check(&mut self, shape: &str, v: &Value, path: &str) -> Result<(), AwsError> {
        let Some(s) = self.model.shapes.get(shape) else {
            return Ok(());
        };
        match s {
            Shape::Structure { members, required } => {
                let Value::Object(obj) = v else {
                    return Err(Self::wrong_type(path, "an object", v));
                };
                for (name, member_shape) in members {
                    let child = join(path, &lower_camel(name));
                    match obj.get(name) {
                        None | Some(Value::Null) => {
                            if required.contains(name) {
                                self.violations.push(format!(
                                    "Value null at '{child}' failed to satisfy constraint: Member must not be null"
                                ));
                            }
                        }
                        Some(val) => self.check(member_shape, val, &child)?,
                    }
                }
            }
            Shape::List { member, min, max } => {
                let Value::Array(items) = v else {
                    return Err(Self::wrong_type(path, "a list", v));
                };
                self.length(&display(v), path, items.len() as u64, *min, *max);
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        continue;
                    }
                    self.check(member, item, &format!("{path}.{}.member", i + 1))?;
                }
            }
            Shape::Map { key, value, min, max } => {
                let Value::Object(obj) = v else {
                    return Err(Self::wrong_type(path, "a map", v));
                };
                self.length(&display(v), path, obj.len() as u64, *min, *max);
                // The service reports map entries as one violation of the whole map.
                let mut key_errors = Validator {
                    model: self.model,
                    violations: Vec::new(),
                };
                let mut value_errors = Validator {
                    model: self.model,
                    violations: Vec::new(),
                };
                for (k, val) in obj {
                    key_errors.check(key, &Value::String(k.clone()), "k")?;
                    if !val.is_null() {
                        value_errors.check(value, val, "v")?;
                    }
                }
                let shown = display(v);
                for (kind, errs) in [("keys", key_errors.violations), ("value", value_errors.violations)] {
                    let mut constraints: Vec<String> = errs
                        .iter()
                        .filter_map(|e| e.split("failed to satisfy constraint: ").nth(1))
                        .map(String::from)
                        .collect();
                    constraints.dedup();
                    if !constraints.is_empty() {
                        self.violation(
                            &shown,
                            path,
                            format!("Map {kind} must satisfy constraint: [{}]", constraints.join(", ")),
                        );
                    }
                }
            }
            Shape::String {
                min,
                max,
                pattern,
                values,
            } => {
                let Value::String(text) = v else {
                    return Err(Self::wrong_type(path, "a string", v));
                };
                if let Some(values) = values {
                    if !values.iter().any(|e| e == text) {
                        self.violation(
                            text,
                            path,
                            format!("Member must satisfy enum value set: [{}]", values.join(", ")),
                        );
                    }
                    return Ok(());
                }
                self.length(text, path, text.chars().count() as u64, *min, *max);
                if let Some(p) = pattern
                    && let Some(re) = &p.regex
                    && !re.is_match(text).unwrap_or(true)
                {
                    let shown = if p.source.starts_with('^') {
                        p.source.clone()
                    } else {
                        format!("^{}", p.source)
                    };
                    self.violation(
                        text,
                        path,
                        format!("Member must satisfy regular expression pattern: {shown}"),
                    );
                }
            }
            Shape::Integer { min, max } => {
                let Some(n) = v.as_i64().map(|n| n as f64).or_else(|| v.as_u64().map(|n| n as f64)) else {
                    return Err(Self::wrong_type(path, "an integer", v));
                };
                self.range(v, path, n, *min, *max);
            }
            Shape::Float { min, max } => {
                let Some(n) = v.as_f64() else {
                    return Err(Self::wrong_type(path, "a number", v));
                };
                self.range(v, path, n, *min, *max);
            }
            Shape::Boolean => {
                if !v.is_boolean() {
                    return Err(Self::wrong_type(path, "a boolean", v));
                }
            }
            Shape::Timestamp => {
                let ok = v.is_number() || v.as_str().is_some_and(|s| s.parse::<f64>().is_ok());
                if !ok {
                    return Err(Self::wrong_type(path, "a timestamp in epoch seconds", v));
                }
            }
            Shape::Blob => {
                if !v.is_string() {
                    return Err(Self::wrong_type(path, "a base64 string", v));
                }
            }
            Shape::Any => {}
        }
        Ok(())
    }

    fn range(&mut self, v: &Value, path: &str, n: f64, min: Option<f64>, max: Option<f64>) {
        let fmt = |x: f64| {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                x.to_string()
            }
        };
        if let Some(max) = max
            && n > max
        {
            self.violation(
                &display(v),
                path,
                format!("Member must have value less than or equal to {}", fmt(max)),
            );
        }
        if let Some(min) = min
            && n < min
        {
            self.violation(
                &display(v),
                path,
                format!("Member must have value greater than or equal to {}", fmt(min)),
            );
        }
    }
}

fn load(json: &str) -> ServiceModel {
    // The models are compiled in and checked by the tests below; a parse failure is a build defect.
    ServiceModel::parse(json).unwrap_or_else(|e| panic!("embedded AWS service model is invalid: {e}"))
}

static SAGEMAKER: LazyLock<ServiceModel> = LazyLock::new(|| load(include_str!("../model/sagemaker.json")));
static LOGS: LazyLock<ServiceModel> = LazyLock::new(|| load(include_str!("../model/logs.json")));

/// The SageMaker model (operations kiln serves).
pub fn sagemaker() -> &'static ServiceModel {
    &SAGEMAKER
}

/// The CloudWatch Logs model (operations kiln serves).
pub fn logs() -> &'static ServiceModel {
    &LOGS
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn models_load_and_every_pattern_compiles() {
        assert!(sagemaker().has_operation("CreateTrainingJob"));
        assert!(logs().has_operation("GetLogEvents"));
        assert_eq!(sagemaker().uncompiled_patterns(), Vec::<String>::new());
        assert_eq!(logs().uncompiled_patterns(), Vec::<String>::new());
    }

    #[test]
    fn bad_name_reports_pattern_like_the_service() {
        let err = sagemaker()
            .validate("DescribeTrainingJob", &json!({"TrainingJobName": "a_b"}))
            .unwrap_err();
        assert_eq!(err.code, "ValidationException");
        assert_eq!(
            err.message,
            "1 validation error detected: Value 'a_b' at 'trainingJobName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
        );
    }

    #[test]
    fn missing_required_and_several_violations_are_counted() {
        let err = sagemaker()
            .validate(
                "CreateTrainingJob",
                &json!({"TrainingJobName": "ok", "OutputDataConfig": {}}),
            )
            .unwrap_err();
        assert!(
            err.message.starts_with("2 validation errors detected: "),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("Value null at 'roleArn' failed to satisfy constraint: Member must not be null")
        );
        assert!(err.message.contains("at 'outputDataConfig.s3OutputPath'"));
    }

    #[test]
    fn list_members_use_the_one_based_member_path() {
        let body = json!({"TrainingJobName": "j", "RoleArn": "arn:aws:iam::123456789012:role/r",
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "InputDataConfig": [{"ChannelName": "bad name!", "DataSource": {}}]});
        let err = sagemaker().validate("CreateTrainingJob", &body).unwrap_err();
        assert!(
            err.message.contains("at 'inputDataConfig.1.member.channelName'"),
            "{}",
            err.message
        );
    }

    #[test]
    fn ranges_and_enums() {
        let err = sagemaker()
            .validate("ListTrainingJobs", &json!({"MaxResults": 0, "SortBy": "Size"}))
            .unwrap_err();
        assert!(err.message.contains("Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"), "{}", err.message);
        assert!(
            err.message
                .contains("Member must satisfy enum value set: [Name, CreationTime, Status]"),
            "{}",
            err.message
        );
    }

    #[test]
    fn wrong_types_are_serialization_errors() {
        let err = sagemaker()
            .validate("DescribeTrainingJob", &json!({"TrainingJobName": 5}))
            .unwrap_err();
        assert_eq!(err.code, "SerializationException");
        let err = sagemaker()
            .validate("ListTrainingJobs", &json!({"MaxResults": "5"}))
            .unwrap_err();
        assert_eq!(err.code, "SerializationException");
        let err = sagemaker().validate("ListTrainingJobs", &json!([1])).unwrap_err();
        assert_eq!(err.code, "SerializationException");
    }

    #[test]
    fn map_entries_are_checked() {
        let long = "x".repeat(2501);
        let body = json!({"TrainingJobName": "j", "RoleArn": "arn:aws:iam::123456789012:role/r",
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"}, "HyperParameters": {"a": long}});
        let err = sagemaker().validate("CreateTrainingJob", &body).unwrap_err();
        assert!(err.message.contains("at 'hyperParameters' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 2500]"), "{}", err.message);
    }
}
