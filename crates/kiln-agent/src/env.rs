//! The algorithm's environment: the job's `Environment`, `TRAINING_JOB_NAME`/`ARN`, S3 access for
//! user code, and the `SM_*` set that sagemaker-training-toolkit's `Environment.to_env_vars()`
//! exports (reference §6.5), with every path pointing into this host's tree. Hyperparameters are
//! split and decoded as the toolkit does, and become `--key value` arguments the same way.

use std::collections::BTreeMap;

use kiln_api::agent::Assignment;
use kiln_api::shapes::CreateTrainingJobRequest;
use serde_json::Value;

use crate::pyjson::{self, PyValue};
use crate::tree::{Tree, sorted_hosts};

/// Hyperparameters the SDK reserves (toolkit `params.SAGEMAKER_HYPERPARAMETERS`); together with
/// every other `sagemaker_*` key they are not passed to the user's script.
const RESERVED: &[&str] = &[
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
];

/// Framework parameters that turn on distribution for the current instance group (toolkit
/// `get_distribution_instance_groups_from_resource_config`).
const DISTRIBUTION_FLAGS: &[&str] = &[
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
];

/// `SM_MASTER_PORT`, as the SDK's drivers and the PyTorch toolkit use it.
const MASTER_PORT: &str = "7777";

/// The toolkit's `logging.INFO`.
const DEFAULT_LOG_LEVEL: i64 = 20;

/// A hyperparameter value as the toolkit reads it: JSON when it parses, else the raw string.
pub fn decode_hp(raw: &str) -> PyValue {
    pyjson::loads(raw).unwrap_or_else(|| PyValue::Str(raw.to_string()))
}

/// Hyperparameters split as the toolkit splits them.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// What the user's script gets (`SM_HPS`, `SM_HP_*`, arguments).
    pub user: BTreeMap<String, PyValue>,
    /// Every reserved or `sagemaker_*` key.
    pub sagemaker: BTreeMap<String, PyValue>,
}

impl Params {
    pub fn new(hyperparameters: &BTreeMap<String, String>) -> Params {
        let mut p = Params::default();
        for (k, raw) in hyperparameters {
            let v = decode_hp(raw);
            if RESERVED.contains(&k.as_str()) || k.starts_with("sagemaker_") {
                p.sagemaker.insert(k.clone(), v);
            } else {
                p.user.insert(k.clone(), v);
            }
        }
        p
    }

    /// `sagemaker_*` keys that are not reserved (`SM_FRAMEWORK_PARAMS`).
    pub fn framework(&self) -> Vec<(String, PyValue)> {
        self.sagemaker
            .iter()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn sm_str(&self, key: &str) -> Option<String> {
        self.sagemaker.get(key).map(pyjson::to_str)
    }

    /// `sagemaker_program`: the entry point.
    pub fn program(&self) -> Option<String> {
        self.sm_str("sagemaker_program").filter(|p| !p.is_empty())
    }

    /// `sagemaker_submit_directory`: where the source bundle is.
    pub fn submit_directory(&self) -> Option<String> {
        self.sm_str("sagemaker_submit_directory").filter(|p| !p.is_empty())
    }

    /// The user's hyperparameters as command-line arguments.
    pub fn user_args(&self) -> Vec<String> {
        cmd_args(&self.user)
    }
}

/// The toolkit's `mapping.to_cmd_args`: keys sorted, `--key` (`-k` for one character), values by
/// Python's `str()` (dicts as `k=v,k2=v2` sorted by key, `None` as empty).
pub fn cmd_args(hps: &BTreeMap<String, PyValue>) -> Vec<String> {
    let mut out = Vec::with_capacity(hps.len() * 2);
    for (k, v) in hps {
        out.push(match k.chars().count() {
            0 => String::new(),
            1 => format!("-{k}"),
            _ => format!("--{k}"),
        });
        out.push(match v {
            PyValue::None => String::new(),
            PyValue::Dict(items) => {
                let mut items: Vec<&(String, PyValue)> = items.iter().collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                items
                    .iter()
                    .map(|(k, v)| format!("{k}={}", pyjson::to_str(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            other => pyjson::to_str(other),
        });
    }
    out
}

/// The toolkit's `mapping.to_env_vars` value format: strings as they are, `None` as empty,
/// anything else as compact sorted ASCII JSON.
fn env_value(v: &PyValue) -> String {
    match v {
        PyValue::Str(s) => s.clone(),
        PyValue::None => String::new(),
        other => pyjson::dumps(other),
    }
}

/// Everything the `SM_*` variables are computed from.
pub struct Context<'a> {
    pub assignment: &'a Assignment,
    pub spec: &'a CreateTrainingJobRequest,
    pub tree: &'a Tree,
    /// The `inputdataconfig.json` of this host (its keys are the channels this host has).
    pub input_data_config: &'a Value,
    pub resource_config: &'a Value,
    pub params: &'a Params,
}

impl Context<'_> {
    fn job_env(&self, key: &str) -> Option<&String> {
        self.spec.environment.as_ref().and_then(|e| e.get(key))
    }
}

/// The `SM_*` variables, as `Environment.to_env_vars()` of toolkit 5.x exports them plus what the
/// SDK's ModelTrainer driver adds (`SM_INPUT_DATA_DIR`, `SM_OUTPUT_FAILURE`, `SM_MASTER_ADDR`,
/// `SM_MASTER_PORT`, `SM_HOST_COUNT`, `SM_CURRENT_HOST_RANK`).
pub fn sm_vars(ctx: &Context) -> BTreeMap<String, String> {
    let a = ctx.assignment;
    let t = ctx.tree;
    let p = ctx.params;
    let hosts = sorted_hosts(a);
    let channels: Vec<String> = match ctx.input_data_config {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let channel_dirs: Vec<(String, PyValue)> = channels
        .iter()
        .map(|c| (c.clone(), PyValue::str(t.seen_str(&t.channel_dir(c)))))
        .collect();

    let groups = &a.instance_groups;
    let group_names: Vec<String> = groups.iter().map(|g| g.instance_group_name.clone()).collect();
    let current_group_hosts: Vec<String> = groups
        .iter()
        .find(|g| g.instance_group_name == a.current_group)
        .map(|g| g.hosts.clone())
        .unwrap_or_default();
    let resource_config = PyValue::from(ctx.resource_config);
    let groups_dict = PyValue::Dict(
        match resource_config.get("instance_groups") {
            Some(PyValue::List(items)) => items.clone(),
            _ => Vec::new(),
        }
        .into_iter()
        .filter_map(|g| match g.get("instance_group_name") {
            Some(PyValue::Str(name)) => Some((name.clone(), g.clone())),
            _ => None,
        })
        .collect(),
    );

    let framework = p.framework();
    let fw = |k: &str| framework.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let distribution_groups = match fw("sagemaker_distribution_instance_groups") {
        Some(v) => v.clone(),
        None => {
            let on = DISTRIBUTION_FLAGS.iter().any(|f| fw(f).is_some_and(PyValue::truthy));
            PyValue::str_list(if on { vec![a.current_group.clone()] } else { vec![] })
        }
    };
    let distribution_hosts: Vec<String> = match &distribution_groups {
        PyValue::List(names) => groups
            .iter()
            .filter(|g| {
                names
                    .iter()
                    .any(|n| matches!(n, PyValue::Str(s) if *s == g.instance_group_name))
            })
            .flat_map(|g| g.hosts.clone())
            .collect(),
        _ => Vec::new(),
    };
    let master = distribution_hosts
        .first()
        .or(hosts.first())
        .cloned()
        .unwrap_or_else(|| a.host.clone());

    let entry_point = p.sagemaker.get("sagemaker_program").cloned();
    let module_name = {
        // The toolkit takes `str()` of the program (so "None" without one) and drops ".py".
        let s = entry_point
            .as_ref()
            .map(pyjson::to_str)
            .unwrap_or_else(|| "None".into());
        s.strip_suffix(".py").map(str::to_string).unwrap_or(s)
    };
    let module_dir = p
        .sagemaker
        .get("sagemaker_submit_directory")
        .map(pyjson::to_str)
        .unwrap_or_else(|| t.seen_str(&t.code_dir()));
    let log_level = p
        .sagemaker
        .get("sagemaker_container_log_level")
        .cloned()
        .unwrap_or(PyValue::int(DEFAULT_LOG_LEVEL));
    let framework_module = ctx
        .job_env("SAGEMAKER_TRAINING_MODULE")
        .map(|m| PyValue::str(m.clone()))
        .unwrap_or(PyValue::None);
    let is_modelparallel = match ctx.job_env("SM_HP_MP_PARAMETERS") {
        Some(v) if v.is_empty() => PyValue::str(""),
        Some(v) => PyValue::Bool(v != "{}"),
        None => PyValue::None,
    };
    let user_args = p.user_args();
    let hps = PyValue::Dict(p.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let input_data_config = PyValue::from(ctx.input_data_config);
    let s = |v: String| PyValue::Str(v);

    let training_env = PyValue::Dict(vec![
        (
            "additional_framework_parameters".into(),
            PyValue::Dict(framework.clone()),
        ),
        ("channel_input_dirs".into(), PyValue::Dict(channel_dirs.clone())),
        ("current_host".into(), s(a.host.clone())),
        ("current_instance_group".into(), s(a.current_group.clone())),
        (
            "current_instance_group_hosts".into(),
            PyValue::str_list(current_group_hosts.clone()),
        ),
        ("current_instance_type".into(), s(a.instance_type.clone())),
        (
            "distribution_hosts".into(),
            PyValue::str_list(distribution_hosts.clone()),
        ),
        ("distribution_instance_groups".into(), distribution_groups.clone()),
        ("framework_module".into(), framework_module.clone()),
        ("hosts".into(), PyValue::str_list(hosts.clone())),
        ("hyperparameters".into(), hps.clone()),
        ("input_config_dir".into(), s(t.seen_str(&t.config_dir()))),
        ("input_data_config".into(), input_data_config.clone()),
        ("input_dir".into(), s(t.seen_str(&t.input_dir()))),
        ("instance_groups".into(), PyValue::str_list(group_names.clone())),
        ("instance_groups_dict".into(), groups_dict.clone()),
        ("is_hetero".into(), PyValue::Bool(group_names.len() > 1)),
        ("is_master".into(), PyValue::Bool(a.host == master)),
        ("is_modelparallel_enabled".into(), is_modelparallel),
        ("is_smddpmprun_installed".into(), PyValue::Bool(false)),
        ("is_smddprun_installed".into(), PyValue::Bool(false)),
        ("job_name".into(), s(a.job_name.clone())),
        ("log_level".into(), log_level.clone()),
        ("master_hostname".into(), s(master.clone())),
        ("model_dir".into(), s(t.seen_str(&t.model_dir()))),
        ("module_dir".into(), s(module_dir.clone())),
        ("module_name".into(), s(module_name.clone())),
        ("network_interface_name".into(), s("eth0".into())),
        ("num_cpus".into(), PyValue::int(a.num_cpus.into())),
        ("num_gpus".into(), PyValue::int(a.num_gpus.into())),
        ("num_neurons".into(), PyValue::int(0)),
        ("output_data_dir".into(), s(t.seen_str(&t.output_data_dir()))),
        ("output_dir".into(), s(t.seen_str(&t.output_dir()))),
        ("output_intermediate_dir".into(), s(t.seen_str(&t.intermediate_dir()))),
        ("resource_config".into(), resource_config.clone()),
        ("topology".into(), PyValue::List(Vec::new())),
        ("user_entry_point".into(), entry_point.clone().unwrap_or(PyValue::None)),
    ]);

    let mut vars: Vec<(String, PyValue)> = vec![
        ("hosts".into(), PyValue::str_list(hosts.clone())),
        ("network_interface_name".into(), s("eth0".into())),
        ("hps".into(), hps),
        ("user_entry_point".into(), entry_point.unwrap_or(PyValue::None)),
        ("framework_params".into(), PyValue::Dict(framework)),
        ("resource_config".into(), resource_config),
        ("input_data_config".into(), input_data_config),
        ("output_data_dir".into(), s(t.seen_str(&t.output_data_dir()))),
        ("channels".into(), PyValue::str_list(channels.clone())),
        ("current_host".into(), s(a.host.clone())),
        ("current_instance_type".into(), s(a.instance_type.clone())),
        ("current_instance_group".into(), s(a.current_group.clone())),
        (
            "current_instance_group_hosts".into(),
            PyValue::str_list(current_group_hosts),
        ),
        ("instance_groups".into(), PyValue::str_list(group_names.clone())),
        ("instance_groups_dict".into(), groups_dict),
        ("distribution_instance_groups".into(), distribution_groups),
        ("is_hetero".into(), PyValue::Bool(group_names.len() > 1)),
        ("module_name".into(), s(module_name)),
        ("log_level".into(), log_level),
        ("framework_module".into(), framework_module),
        ("input_dir".into(), s(t.seen_str(&t.input_dir()))),
        ("input_config_dir".into(), s(t.seen_str(&t.config_dir()))),
        ("output_dir".into(), s(t.seen_str(&t.output_dir()))),
        ("num_cpus".into(), PyValue::int(a.num_cpus.into())),
        ("num_gpus".into(), PyValue::int(a.num_gpus.into())),
        ("num_neurons".into(), PyValue::int(0)),
        ("model_dir".into(), s(t.seen_str(&t.model_dir()))),
        ("module_dir".into(), s(module_dir)),
        ("training_env".into(), training_env),
        ("user_args".into(), PyValue::str_list(user_args)),
        ("output_intermediate_dir".into(), s(t.seen_str(&t.intermediate_dir()))),
        // What the SDK's ModelTrainer driver adds.
        ("input_data_dir".into(), s(t.seen_str(&t.data_dir()))),
        ("output_failure".into(), s(t.seen_str(&t.failure_file()))),
        ("master_addr".into(), s(master)),
        ("master_port".into(), s(MASTER_PORT.into())),
        ("host_count".into(), PyValue::int(hosts.len() as i64)),
        (
            "current_host_rank".into(),
            PyValue::int(hosts.iter().position(|h| *h == a.host).unwrap_or(0) as i64),
        ),
    ];
    for (name, dir) in channel_dirs {
        vars.push((format!("channel_{name}"), dir));
    }
    for (k, v) in &p.user {
        vars.push((format!("hp_{k}"), v.clone()));
    }
    vars.into_iter()
        .map(|(k, v)| (format!("SM_{}", k.to_uppercase()), env_value(&v)))
        .collect()
}

/// Whether a variable of the agent's own environment may reach the algorithm. The agent's
/// credentials and settings (`AWS_*`, `KILN_*`) never do: the job gets its own.
pub fn inheritable(key: &str) -> bool {
    !(key.starts_with("AWS_") || key.starts_with("KILN_") || key.starts_with("SM_") || key == "S3_ENDPOINT_URL")
}

/// The algorithm's complete environment: the agent's own (minus [`inheritable`] exclusions), S3
/// access for user code, the job's `Environment`, then what the platform sets (which wins).
pub fn process_env(ctx: &Context, inherited: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let a = ctx.assignment;
    let mut env: BTreeMap<String, String> = inherited.into_iter().filter(|(k, _)| inheritable(k)).collect();
    let region = a.region.clone();
    for (k, v) in [
        ("AWS_ENDPOINT_URL", a.s3.endpoint_url.clone()),
        ("S3_ENDPOINT_URL", a.s3.endpoint_url.clone()),
        ("AWS_ACCESS_KEY_ID", a.s3.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", a.s3.secret_access_key.clone()),
        ("AWS_REGION", region.clone()),
        ("AWS_DEFAULT_REGION", region.clone()),
        // Without this, Python block-buffers a piped stdout and log lines arrive late.
        ("PYTHONUNBUFFERED", "1".into()),
    ] {
        env.insert(k.into(), v);
    }
    if let Some(job_env) = &ctx.spec.environment {
        for (k, v) in job_env {
            env.insert(k.clone(), v.clone());
        }
    }
    let code = ctx.tree.seen_str(&ctx.tree.code_dir());
    let python_path = match env.get("PYTHONPATH").filter(|p| !p.is_empty()) {
        Some(rest) => format!("{code}:{rest}"),
        None => code,
    };
    let p = ctx.params;
    let sm_region = p
        .sagemaker
        .get("sagemaker_region")
        .map(pyjson::to_str)
        .unwrap_or(region);
    let sm_job = p
        .sagemaker
        .get("sagemaker_job_name")
        .map(pyjson::to_str)
        .unwrap_or_else(|| a.job_name.clone());
    for (k, v) in [
        ("TRAINING_JOB_NAME", a.job_name.clone()),
        ("TRAINING_JOB_ARN", a.job_arn.clone()),
        ("CURRENT_HOST", a.host.clone()),
        ("SAGEMAKER_JOB_NAME", sm_job),
        ("SAGEMAKER_REGION", sm_region),
        ("PYTHONPATH", python_path),
    ] {
        env.insert(k.into(), v);
    }
    env.extend(sm_vars(ctx));
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{input_data_config, resource_config};
    use kiln_api::agent::{InstanceGroupHosts, Runtime, S3Access};
    use kiln_api::shapes::{Channel, DataSource, S3DataSource};
    use serde_json::json;
    use std::path::Path;

    fn hps(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn cmd_args_like_the_toolkit() {
        // The SDK JSON-quotes every value; the toolkit decodes and sorts them.
        let p = Params::new(&hps(&[
            ("lr", "0.01"),
            ("epochs", "10"),
            ("batch-size", "\"64\""),
            ("b", "true"),
            ("opts", r#"{"z": 1, "a": "x"}"#),
            ("list", "[1, \"a\"]"),
            ("none", "null"),
            ("raw", "not json"),
            ("sagemaker_program", "\"train.py\""),
            ("sagemaker_submit_directory", "\"s3://b/k/sourcedir.tar.gz\""),
            ("sagemaker_mpi_enabled", "true"),
            ("_tuning_objective_metric", "\"loss\""),
            ("default_user_module_name", "\"x\""),
        ]));
        assert_eq!(
            p.user_args(),
            vec![
                "-b",
                "True",
                "--batch-size",
                "64",
                "--epochs",
                "10",
                "--list",
                "[1, 'a']",
                "--lr",
                "0.01",
                "--none",
                "",
                "--opts",
                "a=x,z=1",
                "--raw",
                "not json"
            ]
        );
        assert_eq!(p.program().as_deref(), Some("train.py"));
        assert_eq!(p.submit_directory().as_deref(), Some("s3://b/k/sourcedir.tar.gz"));
        assert_eq!(
            p.framework(),
            vec![("sagemaker_mpi_enabled".to_string(), PyValue::Bool(true))]
        );
    }

    fn assignment() -> Assignment {
        Assignment {
            account: "123456789012".into(),
            region: "us-west-2".into(),
            job_name: "my-job".into(),
            job_arn: "arn:aws:sagemaker:us-west-2:123456789012:training-job/my-job".into(),
            host: "algo-2".into(),
            hosts: vec!["algo-1".into(), "algo-2".into()],
            current_group: "homogeneousCluster".into(),
            instance_type: "ml.m5.xlarge".into(),
            instance_groups: vec![InstanceGroupHosts {
                instance_group_name: "homogeneousCluster".into(),
                instance_type: "ml.m5.xlarge".into(),
                hosts: vec!["algo-1".into(), "algo-2".into()],
            }],
            num_cpus: 2,
            num_gpus: 0,
            spec: Value::Null,
            runtime: Runtime::Script {
                framework: "pytorch".into(),
            },
            log_stream: "my-job/algo-2-1".into(),
            s3: S3Access {
                endpoint_url: "http://127.0.0.1:9000".into(),
                region: "us-west-2".into(),
                access_key_id: "AKJOB".into(),
                secret_access_key: "SKJOB".into(),
                path_style: true,
            },
            external_s3: vec![],
            output_prefix: "s3://b/out/my-job/output".into(),
            uploads_artifacts: false,
            stop_grace_seconds: 2,
            cache_dir: "/tmp/c".into(),
            sandbox: false,
            host_addresses: Default::default(),
            environments: Vec::new(),
            registries: Vec::new(),
            warm_pool_cache: None,
            memory_bytes: None,
        }
    }

    #[test]
    fn sm_vars_like_the_toolkit() {
        let a = assignment();
        let mut env_map = BTreeMap::new();
        env_map.insert("MY_VAR".to_string(), "1".to_string());
        env_map.insert("AWS_REGION".to_string(), "eu-west-1".to_string());
        let spec = CreateTrainingJobRequest {
            environment: Some(env_map),
            ..Default::default()
        };
        let tree = Tree::new(Path::new("/w"), "my-job", "algo-2").unwrap();
        let train = Channel {
            channel_name: "train".into(),
            content_type: Some("text/csv".into()),
            data_source: DataSource {
                s3_data_source: Some(S3DataSource {
                    s3_data_type: "S3Prefix".into(),
                    s3_uri: "s3://b/t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let idc = input_data_config(&spec, &[&train]);
        let rc = resource_config(&a);
        let params = Params::new(&hps(&[
            ("batch-size", "\"64\""),
            ("epochs", "10"),
            ("lr", "0.01"),
            ("sagemaker_program", "\"train.py\""),
            ("sagemaker_submit_directory", "\"s3://b/src/sourcedir.tar.gz\""),
            ("sagemaker_region", "\"us-west-2\""),
            ("sagemaker_job_name", "\"my-job\""),
            ("sagemaker_torch_distributed_enabled", "true"),
        ]));
        let ctx = Context {
            assignment: &a,
            spec: &spec,
            tree: &tree,
            input_data_config: &idc,
            resource_config: &rc,
            params: &params,
        };
        let inherited = vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "agent-secret".to_string()),
            ("KILN_AGENT_TOKEN".to_string(), "token".to_string()),
            ("PYTHONPATH".to_string(), "/lib/py".to_string()),
        ];
        let env = process_env(&ctx, inherited);
        let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("<unset>");
        let root = "/w/my-job/algo-2/opt/ml";
        assert_eq!(get("SM_HPS"), r#"{"batch-size":"64","epochs":10,"lr":0.01}"#);
        assert_eq!(get("SM_HP_BATCH-SIZE"), "64");
        assert_eq!(get("SM_HP_EPOCHS"), "10");
        assert_eq!(get("SM_HP_LR"), "0.01");
        assert_eq!(
            get("SM_USER_ARGS"),
            r#"["--batch-size","64","--epochs","10","--lr","0.01"]"#
        );
        assert_eq!(get("SM_USER_ENTRY_POINT"), "train.py");
        assert_eq!(get("SM_MODULE_NAME"), "train");
        assert_eq!(get("SM_MODULE_DIR"), "s3://b/src/sourcedir.tar.gz");
        assert_eq!(
            get("SM_FRAMEWORK_PARAMS"),
            r#"{"sagemaker_torch_distributed_enabled":true}"#
        );
        assert_eq!(get("SM_FRAMEWORK_MODULE"), "");
        assert_eq!(get("SM_CHANNELS"), r#"["train"]"#);
        assert_eq!(get("SM_CHANNEL_TRAIN"), format!("{root}/input/data/train"));
        assert_eq!(get("SM_MODEL_DIR"), format!("{root}/model"));
        assert_eq!(get("SM_INPUT_DIR"), format!("{root}/input"));
        assert_eq!(get("SM_INPUT_CONFIG_DIR"), format!("{root}/input/config"));
        assert_eq!(get("SM_INPUT_DATA_DIR"), format!("{root}/input/data"));
        assert_eq!(get("SM_OUTPUT_DIR"), format!("{root}/output"));
        assert_eq!(get("SM_OUTPUT_DATA_DIR"), format!("{root}/output/data"));
        assert_eq!(get("SM_OUTPUT_INTERMEDIATE_DIR"), format!("{root}/output/intermediate"));
        assert_eq!(get("SM_OUTPUT_FAILURE"), format!("{root}/output/failure"));
        assert_eq!(get("SM_HOSTS"), r#"["algo-1","algo-2"]"#);
        assert_eq!(get("SM_CURRENT_HOST"), "algo-2");
        assert_eq!(get("SM_CURRENT_HOST_RANK"), "1");
        assert_eq!(get("SM_HOST_COUNT"), "2");
        assert_eq!(get("SM_MASTER_ADDR"), "algo-1");
        assert_eq!(get("SM_MASTER_PORT"), "7777");
        assert_eq!(get("SM_CURRENT_INSTANCE_TYPE"), "ml.m5.xlarge");
        assert_eq!(get("SM_CURRENT_INSTANCE_GROUP"), "homogeneousCluster");
        assert_eq!(get("SM_CURRENT_INSTANCE_GROUP_HOSTS"), r#"["algo-1","algo-2"]"#);
        assert_eq!(get("SM_INSTANCE_GROUPS"), r#"["homogeneousCluster"]"#);
        assert_eq!(
            get("SM_INSTANCE_GROUPS_DICT"),
            r#"{"homogeneousCluster":{"hosts":["algo-1","algo-2"],"instance_group_name":"homogeneousCluster","instance_type":"ml.m5.xlarge"}}"#
        );
        assert_eq!(get("SM_DISTRIBUTION_INSTANCE_GROUPS"), "[]");
        assert_eq!(get("SM_IS_HETERO"), "false");
        assert_eq!(get("SM_NETWORK_INTERFACE_NAME"), "eth0");
        assert_eq!(get("SM_NUM_CPUS"), "2");
        assert_eq!(get("SM_NUM_GPUS"), "0");
        assert_eq!(get("SM_NUM_NEURONS"), "0");
        assert_eq!(get("SM_LOG_LEVEL"), "20");
        assert_eq!(
            get("SM_INPUT_DATA_CONFIG"),
            r#"{"train":{"ContentType":"text/csv","RecordWrapperType":"None","S3DistributionType":"FullyReplicated","TrainingInputMode":"File"}}"#
        );
        assert_eq!(
            get("SM_RESOURCE_CONFIG"),
            r#"{"current_group_name":"homogeneousCluster","current_host":"algo-2","current_instance_type":"ml.m5.xlarge","hosts":["algo-1","algo-2"],"instance_groups":[{"hosts":["algo-1","algo-2"],"instance_group_name":"homogeneousCluster","instance_type":"ml.m5.xlarge"}],"network_interface_name":"eth0"}"#
        );
        let training_env: serde_json::Value = serde_json::from_str(get("SM_TRAINING_ENV")).unwrap();
        assert_eq!(
            training_env["hyperparameters"],
            json!({"batch-size": "64", "epochs": 10, "lr": 0.01})
        );
        assert_eq!(training_env["is_master"], json!(false));
        assert_eq!(training_env["master_hostname"], json!("algo-1"));
        assert_eq!(training_env["job_name"], json!("my-job"));
        assert_eq!(training_env["topology"], json!([]));
        assert_eq!(
            training_env["channel_input_dirs"]["train"],
            json!(format!("{root}/input/data/train"))
        );
        assert_eq!(training_env.as_object().map(|o| o.len()), Some(37));

        assert_eq!(get("TRAINING_JOB_NAME"), "my-job");
        assert_eq!(get("TRAINING_JOB_ARN"), a.job_arn);
        assert_eq!(get("CURRENT_HOST"), "algo-2");
        assert_eq!(get("SAGEMAKER_JOB_NAME"), "my-job");
        assert_eq!(get("SAGEMAKER_REGION"), "us-west-2");
        assert_eq!(get("AWS_REGION"), "eu-west-1", "the job's Environment wins");
        assert_eq!(get("AWS_DEFAULT_REGION"), "us-west-2");
        assert_eq!(get("AWS_ENDPOINT_URL"), "http://127.0.0.1:9000");
        assert_eq!(get("S3_ENDPOINT_URL"), "http://127.0.0.1:9000");
        assert_eq!(get("AWS_ACCESS_KEY_ID"), "AKJOB");
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), "SKJOB", "never the agent's own");
        assert_eq!(get("KILN_AGENT_TOKEN"), "<unset>");
        assert_eq!(get("MY_VAR"), "1");
        assert_eq!(get("PATH"), "/usr/bin");
        assert_eq!(get("PYTHONPATH"), format!("{root}/code:/lib/py"));
    }

    #[test]
    fn distribution_flags_pick_the_master() {
        let a = assignment();
        let spec = CreateTrainingJobRequest::default();
        let tree = Tree::new(Path::new("/w"), "my-job", "algo-2").unwrap();
        let idc = json!({});
        let rc = resource_config(&a);
        let params = Params::new(&hps(&[("sagemaker_mpi_enabled", "true")]));
        let ctx = Context {
            assignment: &a,
            spec: &spec,
            tree: &tree,
            input_data_config: &idc,
            resource_config: &rc,
            params: &params,
        };
        let env = sm_vars(&ctx);
        assert_eq!(
            env.get("SM_DISTRIBUTION_INSTANCE_GROUPS").map(String::as_str),
            Some(r#"["homogeneousCluster"]"#)
        );
        assert_eq!(env.get("SM_MODULE_NAME").map(String::as_str), Some("None"));
        assert_eq!(env.get("SM_USER_ENTRY_POINT").map(String::as_str), Some(""));
        assert_eq!(env.get("SM_CHANNELS").map(String::as_str), Some("[]"));
    }
}
