//! Rules the AWS model cannot express (mutually exclusive members, spot, warm pools, input modes),
//! and the defaults the real service fills into what `DescribeTrainingJob` echoes.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::{ApiResult, AwsError};
use crate::model;
use crate::shapes::CreateTrainingJobRequest;

/// The longest `MaxRuntimeInSeconds` SageMaker documents (28 days).
pub const MAX_RUNTIME_LIMIT: i64 = 28 * 24 * 3600;
/// Most instances one training job may ask for, over all its instance groups. Every count is bounded
/// by this before anything sized by it (host names, capacity sums) is computed.
pub const MAX_INSTANCES: i64 = 1000;
/// `MaxRuntimeInSeconds` when the request has none.
pub const DEFAULT_MAX_RUNTIME: i64 = 86400;

fn null_member(path: &str) -> String {
    format!("Value null at '{path}' failed to satisfy constraint: Member must not be null")
}

fn fail(violations: Vec<String>) -> ApiResult<()> {
    match violations.len() {
        0 => Ok(()),
        1 => Err(AwsError::validation(violations.into_iter().next().unwrap_or_default())),
        _ => Err(AwsError::validation(violations.join(" "))),
    }
}

/// Parses and checks a `CreateTrainingJob` body: model constraints, then the service's extra
/// rules. Returns the typed request with defaults filled in, ready to be stored and echoed.
pub fn create_training_job(body: &Value) -> ApiResult<CreateTrainingJobRequest> {
    model::sagemaker().validate("CreateTrainingJob", body)?;
    let mut req: CreateTrainingJobRequest = serde_json::from_value(body.clone())
        .map_err(|e| AwsError::serialization(format!("Could not read the request body: {e}")))?;
    check_training_job(&req)?;
    fill_defaults(&mut req);
    Ok(req)
}

/// The extra rules of `CreateTrainingJob` (also applied to tuning-job definitions).
pub fn check_training_job(req: &CreateTrainingJobRequest) -> ApiResult<()> {
    let serverless = req.extra.contains_key("ServerlessJobConfig");
    let mut missing = Vec::new();
    if !serverless {
        if req.algorithm_specification.is_none() {
            missing.push(null_member("algorithmSpecification"));
        }
        if req.resource_config.is_none() {
            missing.push(null_member("resourceConfig"));
        }
        if req.stopping_condition.is_none() {
            missing.push(null_member("stoppingCondition"));
        }
    }
    if !missing.is_empty() {
        let n = missing.len();
        let noun = if n == 1 { "error" } else { "errors" };
        return Err(AwsError::validation(format!(
            "{n} validation {noun} detected: {}",
            missing.join("; ")
        )));
    }
    let mut v = Vec::new();
    if let Some(spec) = &req.algorithm_specification {
        match (&spec.training_image, &spec.algorithm_name) {
            (Some(_), Some(_)) => v.push(
                "Both TrainingImage and AlgorithmName are set in AlgorithmSpecification; specify exactly one of them."
                    .to_string(),
            ),
            (None, None) => {
                v.push("AlgorithmSpecification must specify either TrainingImage or AlgorithmName.".to_string())
            }
            _ => {}
        }
    }
    let spot = req.enable_managed_spot_training == Some(true);
    if let Some(rc) = &req.resource_config {
        let groups = rc.instance_groups.as_ref().is_some_and(|g| !g.is_empty());
        let single = rc.instance_type.is_some() || rc.instance_count.is_some();
        if groups && single {
            v.push(
                "InstanceGroups cannot be specified together with InstanceType or InstanceCount in ResourceConfig."
                    .to_string(),
            );
        } else if !groups && (rc.instance_type.is_none() || rc.instance_count.is_none()) {
            v.push("ResourceConfig must specify either InstanceType and InstanceCount, or InstanceGroups.".to_string());
        }
        if let Some(n) = rc.instance_count
            && n > MAX_INSTANCES
        {
            v.push(format!(
                "InstanceCount {n} exceeds the limit of {MAX_INSTANCES} instances per training job."
            ));
        }
        match rc.host_count() {
            Some(n) if n > MAX_INSTANCES && groups => v.push(format!(
                "The instance groups ask for {n} instances in all, more than the limit of {MAX_INSTANCES} per training job."
            )),
            None => v.push(format!(
                "The instance groups ask for more instances than the limit of {MAX_INSTANCES} per training job."
            )),
            Some(n) if n < 1 && (groups || rc.instance_count.is_some()) => v.push(
                "The training job needs at least one instance: InstanceCount must be at least 1.".to_string(),
            ),
            Some(_) => {}
        }
        if let Some(groups) = &rc.instance_groups {
            let mut seen = HashSet::new();
            for g in groups {
                if !(0..=MAX_INSTANCES).contains(&g.instance_count) {
                    v.push(format!(
                        "InstanceCount {} of instance group '{}' must be between 0 and {MAX_INSTANCES}.",
                        g.instance_count, g.instance_group_name
                    ));
                }
                if !seen.insert(g.instance_group_name.as_str()) {
                    v.push(format!(
                        "Instance group name '{}' is used more than once in InstanceGroups.",
                        g.instance_group_name
                    ));
                }
            }
        }
        if rc.keep_alive_period_in_seconds.is_some_and(|k| k > 0) {
            if spot {
                v.push("KeepAlivePeriodInSeconds (warm pools) cannot be used with managed spot training.".to_string());
            }
            if groups {
                v.push("KeepAlivePeriodInSeconds (warm pools) cannot be used with heterogeneous clusters (InstanceGroups).".to_string());
            }
        }
    }
    if let Some(sc) = &req.stopping_condition {
        let runtime = sc.max_runtime_in_seconds.unwrap_or(DEFAULT_MAX_RUNTIME);
        if runtime > MAX_RUNTIME_LIMIT {
            v.push(format!(
                "MaxRuntimeInSeconds {runtime} exceeds the limit of {MAX_RUNTIME_LIMIT} seconds (28 days)."
            ));
        }
        if spot {
            match sc.max_wait_time_in_seconds {
                None => v.push("Invalid MaxWaitTimeInSeconds. It must be present when EnableManagedSpotTraining is true.".to_string()),
                Some(wait) if wait < runtime => v.push(format!(
                    "Invalid MaxWaitTimeInSeconds. It must be greater than or equal to MaxRuntimeInSeconds ({wait} < {runtime})."
                )),
                _ => {}
            }
        } else if sc.max_wait_time_in_seconds.is_some() {
            v.push("MaxWaitTimeInSeconds can only be specified when EnableManagedSpotTraining is true.".to_string());
        }
    }
    let job_mode = req
        .algorithm_specification
        .as_ref()
        .map(|s| s.training_input_mode.as_str())
        .unwrap_or("File");
    let group_names: Option<HashSet<&str>> = req
        .resource_config
        .as_ref()
        .and_then(|rc| rc.instance_groups.as_ref())
        .map(|g| g.iter().map(|g| g.instance_group_name.as_str()).collect());
    let mut channels = HashSet::new();
    for ch in req.input_data_config.iter().flatten() {
        let name = &ch.channel_name;
        if !channels.insert(name.as_str()) {
            v.push(format!(
                "Channel names must be unique: '{name}' appears more than once in InputDataConfig."
            ));
        }
        let mode = ch.input_mode.as_deref().unwrap_or(job_mode);
        let s3 = ch.data_source.s3_data_source.as_ref();
        match (s3, &ch.data_source.file_system_data_source) {
            (None, None) => v.push(format!(
                "Channel '{name}' must specify a DataSource (S3DataSource or FileSystemDataSource)."
            )),
            (Some(_), Some(_)) => v.push(format!(
                "Channel '{name}' must specify only one of S3DataSource and FileSystemDataSource."
            )),
            _ => {}
        }
        if mode == "FastFile" && s3.is_some_and(|s| s.s3_data_type != "S3Prefix") {
            v.push(format!(
                "Channel '{name}': FastFile input mode requires S3DataType S3Prefix."
            ));
        }
        if mode != "Pipe" {
            if ch.compression_type.as_deref().is_some_and(|c| c != "None") {
                v.push(format!(
                    "Channel '{name}': CompressionType {} is only supported in Pipe input mode.",
                    ch.compression_type.as_deref().unwrap_or_default()
                ));
            }
            if ch.record_wrapper_type.as_deref().is_some_and(|c| c != "None") {
                v.push(format!(
                    "Channel '{name}': RecordWrapperType {} is only supported in Pipe input mode.",
                    ch.record_wrapper_type.as_deref().unwrap_or_default()
                ));
            }
        }
        if let Some(s3) = s3 {
            if !(s3.s3_uri.starts_with("s3://") || s3.s3_uri.starts_with("https://")) {
                v.push(format!(
                    "Channel '{name}': S3Uri '{}' must start with s3:// or https://.",
                    s3.s3_uri
                ));
            }
            for g in s3.instance_group_names.iter().flatten() {
                if !group_names.as_ref().is_some_and(|names| names.contains(g.as_str())) {
                    v.push(format!(
                        "Channel '{name}' names instance group '{g}', which is not in ResourceConfig.InstanceGroups."
                    ));
                }
            }
        }
    }
    for member in ["DebugRuleConfigurations", "ProfilerRuleConfigurations"] {
        if let Some(value) = req.extra.get(member) {
            v.extend(rule_configuration_errors(member, value));
        }
    }
    if let Some(tags) = &req.tags {
        let mut keys = HashSet::new();
        for t in tags {
            if !keys.insert(t.key.as_str()) {
                v.push(format!("Tag key '{}' appears more than once.", t.key));
            }
        }
    }
    fail(v)
}

/// At most this many rules in `DebugRuleConfigurations` (and in `ProfilerRuleConfigurations`).
const MAX_RULES: usize = 20;

/// What is wrong with a `DebugRuleConfigurations` or `ProfilerRuleConfigurations` list: each
/// entry needs a unique `RuleConfigurationName` and a `RuleEvaluatorImage`, and its
/// `RuleParameters` are strings.
pub fn rule_configuration_errors(member: &str, value: &serde_json::Value) -> Vec<String> {
    let mut v = Vec::new();
    let Some(list) = value.as_array() else {
        return vec![format!("{member} must be a list of rule configurations.")];
    };
    if list.len() > MAX_RULES {
        v.push(format!("{member} has {} rules; at most {MAX_RULES}.", list.len()));
    }
    let mut names = HashSet::new();
    for (i, rule) in list.iter().enumerate() {
        let at = format!("{member}[{i}]");
        let name = rule.get("RuleConfigurationName").and_then(|n| n.as_str());
        match name {
            Some(n) if (1..=256).contains(&n.len()) => {
                if !names.insert(n.to_string()) {
                    v.push(format!("{at}: RuleConfigurationName '{n}' appears more than once."));
                }
            }
            _ => v.push(format!(
                "{at}: RuleConfigurationName is required (1 to 256 characters)."
            )),
        }
        if rule
            .get("RuleEvaluatorImage")
            .and_then(|i| i.as_str())
            .is_none_or(str::is_empty)
        {
            v.push(format!("{at}: RuleEvaluatorImage is required."));
        }
        match rule.get("RuleParameters") {
            None => {}
            Some(serde_json::Value::Object(params)) => {
                if let Some((k, _)) = params.iter().find(|(_, p)| !p.is_string()) {
                    v.push(format!("{at}: RuleParameters '{k}' must be a string."));
                }
            }
            Some(_) => v.push(format!("{at}: RuleParameters must be a map of strings.")),
        }
    }
    v
}

/// The defaults the real service fills into the echoed request (reference §4).
pub fn fill_defaults(req: &mut CreateTrainingJobRequest) {
    if req.output_data_config.kms_key_id.is_none() {
        req.output_data_config.kms_key_id = Some(String::new());
    }
    if req.output_data_config.compression_type.is_none() {
        req.output_data_config.compression_type = Some("GZIP".into());
    }
    if req.hyper_parameters.is_none() {
        req.hyper_parameters = Some(Default::default());
    }
    if let Some(rc) = &mut req.resource_config
        && rc.volume_size_in_gb.is_none()
    {
        rc.volume_size_in_gb = Some(if rc.instance_groups.is_some() { 0 } else { 30 });
    }
    let sc = req.stopping_condition.get_or_insert_with(Default::default);
    if sc.max_runtime_in_seconds.is_none() {
        sc.max_runtime_in_seconds = Some(DEFAULT_MAX_RUNTIME);
    }
    if let Some(spec) = &mut req.algorithm_specification
        && spec.enable_sage_maker_metrics_time_series.is_none()
    {
        spec.enable_sage_maker_metrics_time_series = Some(false);
    }
    for ch in req.input_data_config.iter_mut().flatten() {
        if let Some(s3) = &mut ch.data_source.s3_data_source
            && s3.s3_data_distribution_type.is_none()
        {
            s3.s3_data_distribution_type = Some("FullyReplicated".into());
        }
        if ch.compression_type.is_none() {
            ch.compression_type = Some("None".into());
        }
        if ch.record_wrapper_type.is_none() {
            ch.record_wrapper_type = Some("None".into());
        }
    }
    for flag in [
        &mut req.enable_network_isolation,
        &mut req.enable_inter_container_traffic_encryption,
        &mut req.enable_managed_spot_training,
    ] {
        if flag.is_none() {
            *flag = Some(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "TrainingJobName": "job-1",
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "AlgorithmSpecification": {"TrainingImage": "kiln/xgboost", "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train/"}}}]
        })
    }

    #[test]
    fn defaults_are_filled() {
        let r = create_training_job(&base()).unwrap();
        assert_eq!(r.output_data_config.kms_key_id.as_deref(), Some(""));
        assert_eq!(r.resource_config.as_ref().unwrap().volume_size_in_gb, Some(30));
        let ch = &r.input_data_config.as_ref().unwrap()[0];
        assert_eq!(ch.compression_type.as_deref(), Some("None"));
        assert_eq!(
            ch.data_source
                .s3_data_source
                .as_ref()
                .unwrap()
                .s3_data_distribution_type
                .as_deref(),
            Some("FullyReplicated")
        );
        assert_eq!(r.enable_managed_spot_training, Some(false));
    }

    #[test]
    fn image_and_algorithm_name_are_exclusive() {
        let mut b = base();
        b["AlgorithmSpecification"]["AlgorithmName"] = json!("xgb");
        let e = create_training_job(&b).unwrap_err();
        assert!(e.message.contains("exactly one"), "{}", e.message);
    }

    #[test]
    fn spot_needs_max_wait_at_least_runtime() {
        let mut b = base();
        b["EnableManagedSpotTraining"] = json!(true);
        assert!(
            create_training_job(&b)
                .unwrap_err()
                .message
                .contains("MaxWaitTimeInSeconds")
        );
        b["StoppingCondition"]["MaxWaitTimeInSeconds"] = json!(100);
        assert!(
            create_training_job(&b)
                .unwrap_err()
                .message
                .contains("greater than or equal")
        );
        b["StoppingCondition"]["MaxWaitTimeInSeconds"] = json!(7200);
        assert!(create_training_job(&b).is_ok());
        b["ResourceConfig"]["KeepAlivePeriodInSeconds"] = json!(60);
        assert!(create_training_job(&b).unwrap_err().message.contains("warm pools"));
    }

    #[test]
    fn instance_groups_exclude_instance_type() {
        let mut b = base();
        b["ResourceConfig"]["InstanceGroups"] =
            json!([{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "g"}]);
        assert!(
            create_training_job(&b)
                .unwrap_err()
                .message
                .contains("InstanceGroups cannot")
        );
    }

    #[test]
    fn instance_counts_are_bounded_without_overflow() {
        let mut b = base();
        b["ResourceConfig"]["InstanceCount"] = json!(100_000_000_000i64);
        let e = create_training_job(&b).unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert!(e.message.contains("limit of 1000"), "{}", e.message);
        b["ResourceConfig"]["InstanceCount"] = json!(MAX_INSTANCES);
        assert!(create_training_job(&b).is_ok());
        let mut b = base();
        let rc = b["ResourceConfig"].as_object_mut().unwrap();
        rc.remove("InstanceType");
        rc.remove("InstanceCount");
        let group =
            |name: &str, n: i64| json!({"InstanceType": "ml.m5.large", "InstanceCount": n, "InstanceGroupName": name});
        for groups in [
            json!([group("a", i64::MAX), group("b", i64::MAX), group("c", 3)]),
            json!([group("a", i64::MAX), group("b", 1)]),
            json!([group("a", 600), group("b", 600)]),
            json!([group("a", -5), group("b", 6)]),
        ] {
            b["ResourceConfig"]["InstanceGroups"] = groups;
            let e = create_training_job(&b).unwrap_err();
            assert_eq!(e.code, "ValidationException", "{}", e.message);
        }
        b["ResourceConfig"]["InstanceGroups"] = json!([group("a", 500), group("b", 500)]);
        assert!(create_training_job(&b).is_ok());
    }

    #[test]
    fn file_mode_rejects_gzip_and_fastfile_needs_prefix() {
        let mut b = base();
        b["InputDataConfig"][0]["CompressionType"] = json!("Gzip");
        assert!(
            create_training_job(&b)
                .unwrap_err()
                .message
                .contains("only supported in Pipe")
        );
        let mut b = base();
        b["InputDataConfig"][0]["InputMode"] = json!("FastFile");
        b["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataType"] = json!("ManifestFile");
        assert!(create_training_job(&b).unwrap_err().message.contains("FastFile"));
    }

    #[test]
    fn missing_algorithm_specification() {
        let mut b = base();
        b.as_object_mut().unwrap().remove("AlgorithmSpecification");
        let e = create_training_job(&b).unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'algorithmSpecification' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn unknown_members_round_trip() {
        let mut b = base();
        b["ExperimentConfig"] = json!({"ExperimentName": "e"});
        let r = create_training_job(&b).unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap()["ExperimentConfig"]["ExperimentName"],
            "e"
        );
    }
}
