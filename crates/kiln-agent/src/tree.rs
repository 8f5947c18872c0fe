//! The host's `/opt/ml` tree (reference §6.3) under `<work_dir>/<job>/<host>/opt/ml`, the
//! configuration files the container contract promises (`hyperparameters.json`,
//! `inputdataconfig.json`, `resourceconfig.json`, `checkpointconfig.json`), and the checks that keep
//! names and object keys from escaping the tree.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use kiln_api::agent::Assignment;
use kiln_api::shapes::{Channel, CreateTrainingJobRequest};
use serde_json::{Map, Value, json};

/// Paths of one host's tree.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `<work_dir>/<job>/<host>`: everything of this host lives below it.
    pub host_dir: PathBuf,
    /// `<host_dir>/opt/ml`.
    pub root: PathBuf,
    /// Where the algorithm sees the tree: `/opt/ml` in a sandbox, `root` without one.
    pub seen_root: PathBuf,
}

/// The container path the tree stands for.
pub const CONTAINER_ROOT: &str = "/opt/ml";

impl Tree {
    /// The tree of `host` of `job` under `work_dir`; both names are checked to be plain path
    /// segments.
    pub fn new(work_dir: &Path, job: &str, host: &str) -> Result<Tree, String> {
        check_segment("job name", job)?;
        check_segment("host name", host)?;
        let host_dir = work_dir.join(job).join(host);
        let root = host_dir.join("opt").join("ml");
        Ok(Tree {
            host_dir,
            seen_root: root.clone(),
            root,
        })
    }

    /// The same tree as a sandboxed algorithm sees it: mounted at `/opt/ml`.
    pub fn mounted(mut self) -> Tree {
        self.seen_root = PathBuf::from(CONTAINER_ROOT);
        self
    }

    /// A path of this tree as the algorithm sees it (paths outside the tree are unchanged).
    pub fn seen(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => self.seen_root.clone(),
            Ok(rel) => self.seen_root.join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    /// [`Tree::seen`] as text (the environment carries paths as strings).
    pub fn seen_str(&self, path: &Path) -> String {
        self.seen(path).to_string_lossy().into_owned()
    }

    pub fn input_dir(&self) -> PathBuf {
        self.root.join("input")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("input/config")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("input/data")
    }
    /// `input/data/<channel>` (the name must have passed [`check_channel_name`]).
    pub fn channel_dir(&self, channel: &str) -> PathBuf {
        self.data_dir().join(channel)
    }
    pub fn model_dir(&self) -> PathBuf {
        self.root.join("model")
    }
    pub fn output_dir(&self) -> PathBuf {
        self.root.join("output")
    }
    pub fn output_data_dir(&self) -> PathBuf {
        self.root.join("output/data")
    }
    pub fn intermediate_dir(&self) -> PathBuf {
        self.root.join("output/intermediate")
    }
    pub fn failure_file(&self) -> PathBuf {
        self.root.join("output/failure")
    }
    pub fn success_file(&self) -> PathBuf {
        self.root.join("output/success")
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn code_dir(&self) -> PathBuf {
        self.root.join("code")
    }

    /// Where a container path (`/opt/ml/...` or any absolute path, e.g. a checkpoint
    /// `LocalPath`) lives in this tree: `/opt/ml/x` → `<root>/x`, `/x` → `<root>/x`.
    pub fn host_path(&self, container_path: &str) -> Result<PathBuf, String> {
        let rel = container_path
            .strip_prefix(CONTAINER_ROOT)
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .unwrap_or(container_path);
        let rel =
            safe_relative(rel).map_err(|e| format!("path '{container_path}' cannot be placed in the job tree: {e}"))?;
        Ok(self.root.join(rel))
    }

    /// Creates a fresh tree: whatever an earlier start of this host left is removed first, so
    /// every start sees what a new container would.
    pub fn create(&self) -> Result<(), String> {
        if self.host_dir.join("opt").exists() {
            std::fs::remove_dir_all(self.host_dir.join("opt")).map_err(|e| {
                format!(
                    "cannot clear the previous tree {}: {e}; remove it by hand or choose another work directory",
                    self.root.display()
                )
            })?;
        }
        for dir in [
            self.config_dir(),
            self.data_dir(),
            self.model_dir(),
            self.output_data_dir(),
            self.intermediate_dir(),
            self.checkpoints_dir(),
            self.code_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| {
                format!(
                    "cannot create {}: {e}; check that the work directory is writable and has space",
                    dir.display()
                )
            })?;
        }
        Ok(())
    }
}

/// A name used as a single path segment: non-empty, not `.`/`..`, no `/` or NUL.
fn check_segment(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "{what} '{name}' cannot be used as a directory name (it must be a plain name without '/', '.' or '..')"
        ));
    }
    Ok(())
}

/// A channel name as SageMaker allows it (`[A-Za-z0-9.\-_]+`, at most 64 characters), which is
/// also a safe directory name.
pub fn check_channel_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "channel name '{name}' is not valid: use 1-64 characters from A-Z, a-z, 0-9, '.', '-', '_' (not '.' or '..')"
        ))
    }
}

/// A relative path taken from an object key or manifest entry, refused if it could leave the
/// directory it is joined to. Empty and `.` segments collapse; `..` is refused.
pub fn safe_relative(rel: &str) -> Result<PathBuf, String> {
    if rel.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    let mut out = PathBuf::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("it contains a '..' segment".into()),
            p => out.push(p),
        }
    }
    // Belt and braces: whatever `PathBuf` made of it must be plain names only.
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err("it is not a plain relative path".into());
    }
    if out.as_os_str().is_empty() {
        return Err("it names no file".into());
    }
    Ok(out)
}

/// The input mode of a channel: its own `InputMode`, else the job's `TrainingInputMode`.
pub fn channel_input_mode(spec: &CreateTrainingJobRequest, channel: &Channel) -> String {
    channel
        .input_mode
        .clone()
        .or_else(|| {
            spec.algorithm_specification
                .as_ref()
                .map(|a| a.training_input_mode.clone())
                .filter(|m| !m.is_empty())
        })
        .unwrap_or_else(|| "File".into())
}

/// The distribution type `inputdataconfig.json` reports for a channel.
pub fn channel_distribution(channel: &Channel) -> String {
    channel
        .data_source
        .s3_data_source
        .as_ref()
        .and_then(|s| s.s3_data_distribution_type.clone())
        .unwrap_or_else(|| "FullyReplicated".into())
}

/// Whether this host receives `channel` (`InstanceGroupNames` restricts a channel to the hosts of
/// those instance groups).
pub fn channel_on_host(channel: &Channel, assignment: &Assignment) -> bool {
    match channel
        .data_source
        .s3_data_source
        .as_ref()
        .and_then(|s| s.instance_group_names.as_ref())
    {
        Some(groups) if !groups.is_empty() => groups.contains(&assignment.current_group),
        _ => true,
    }
}

/// `inputdataconfig.json` for the channels this host receives.
pub fn input_data_config(spec: &CreateTrainingJobRequest, channels: &[&Channel]) -> Value {
    let mut out = Map::new();
    for ch in channels {
        let mut entry = Map::new();
        if let Some(ct) = &ch.content_type {
            entry.insert("ContentType".into(), json!(ct));
        }
        entry.insert("TrainingInputMode".into(), json!(channel_input_mode(spec, ch)));
        entry.insert("S3DistributionType".into(), json!(channel_distribution(ch)));
        entry.insert(
            "RecordWrapperType".into(),
            json!(ch.record_wrapper_type.as_deref().unwrap_or("None")),
        );
        out.insert(ch.channel_name.clone(), Value::Object(entry));
    }
    Value::Object(out)
}

/// Hosts sorted as SageMaker sorts them (lexicographically).
pub fn sorted_hosts(assignment: &Assignment) -> Vec<String> {
    let mut hosts = assignment.hosts.clone();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// `resourceconfig.json` of this host.
pub fn resource_config(assignment: &Assignment) -> Value {
    let groups: Vec<Value> = assignment
        .instance_groups
        .iter()
        .map(|g| {
            json!({
                "instance_group_name": g.instance_group_name,
                "instance_type": g.instance_type,
                "hosts": g.hosts,
            })
        })
        .collect();
    json!({
        "current_host": assignment.host,
        "current_instance_type": assignment.instance_type,
        "current_group_name": assignment.current_group,
        "hosts": sorted_hosts(assignment),
        "instance_groups": groups,
        "network_interface_name": "eth0",
    })
}

/// `checkpointconfig.json`, when the job has a `CheckpointConfig`: `LocalPath` as this host sees
/// it (the default `/opt/ml/checkpoints` is the tree's `checkpoints/`).
pub fn checkpoint_config(spec: &CreateTrainingJobRequest, tree: &Tree) -> Result<Option<(Value, PathBuf)>, String> {
    let Some(cfg) = &spec.checkpoint_config else {
        return Ok(None);
    };
    let local = match cfg.local_path.as_deref() {
        Some(p) if !p.is_empty() => tree.host_path(p)?,
        _ => tree.checkpoints_dir(),
    };
    Ok(Some((
        // As the algorithm sees it (in the sandbox, under /opt/ml).
        json!({"LocalPath": tree.seen_str(&local), "S3Uri": cfg.s3_uri}),
        local,
    )))
}

/// Writes the configuration files into `input/config/`.
pub fn write_configs(
    tree: &Tree,
    hyperparameters: &BTreeMap<String, String>,
    input_data_config: &Value,
    resource_config: &Value,
    checkpoint_config: Option<&Value>,
) -> Result<(), String> {
    let mut files = vec![
        ("hyperparameters.json", json!(hyperparameters)),
        ("inputdataconfig.json", input_data_config.clone()),
        ("resourceconfig.json", resource_config.clone()),
    ];
    if let Some(c) = checkpoint_config {
        files.push(("checkpointconfig.json", c.clone()));
    }
    for (name, value) in files {
        let path = tree.config_dir().join(name);
        let text = serde_json::to_string(&value).map_err(|e| format!("cannot encode {name}: {e}"))?;
        std::fs::write(&path, text).map_err(|e| {
            format!(
                "cannot write {}: {e}; check that the work directory is writable and has space",
                path.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_api::agent::{InstanceGroupHosts, Runtime, S3Access};
    use kiln_api::shapes::{AlgorithmSpecification, DataSource, S3DataSource};

    pub fn assignment() -> Assignment {
        Assignment {
            account: "123456789012".into(),
            region: "us-east-1".into(),
            job_name: "job".into(),
            job_arn: "arn:aws:sagemaker:us-east-1:123456789012:training-job/job".into(),
            host: "algo-1".into(),
            hosts: vec!["algo-2".into(), "algo-1".into()],
            current_group: "homogeneousCluster".into(),
            instance_type: "ml.m5.xlarge".into(),
            instance_groups: vec![InstanceGroupHosts {
                instance_group_name: "homogeneousCluster".into(),
                instance_type: "ml.m5.xlarge".into(),
                hosts: vec!["algo-1".into(), "algo-2".into()],
            }],
            num_cpus: 4,
            num_gpus: 0,
            spec: Value::Null,
            runtime: Runtime::Noop,
            log_stream: "job/algo-1-1700000000".into(),
            s3: S3Access {
                endpoint_url: "http://127.0.0.1:8080".into(),
                region: "us-east-1".into(),
                access_key_id: "AK".into(),
                secret_access_key: "SK".into(),
                path_style: true,
            },
            external_s3: vec![],
            output_prefix: "s3://bucket/out/job/output".into(),
            uploads_artifacts: true,
            stop_grace_seconds: 5,
            cache_dir: "/tmp/cache".into(),
            sandbox: false,
            host_addresses: Default::default(),
            environments: Vec::new(),
            registries: Vec::new(),
            warm_pool_cache: None,
            memory_bytes: None,
        }
    }

    fn channel(name: &str, uri: &str) -> Channel {
        Channel {
            channel_name: name.into(),
            data_source: DataSource {
                s3_data_source: Some(S3DataSource {
                    s3_data_type: "S3Prefix".into(),
                    s3_uri: uri.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn input_data_config_as_the_contract_says() {
        let spec = CreateTrainingJobRequest {
            algorithm_specification: Some(AlgorithmSpecification {
                training_input_mode: "File".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut train = channel("train", "s3://b/train/");
        train.content_type = Some("text/csv".into());
        let mut validation = channel("validation", "s3://b/validation/");
        validation.input_mode = Some("Pipe".into());
        if let Some(s3) = validation.data_source.s3_data_source.as_mut() {
            s3.s3_data_distribution_type = Some("ShardedByS3Key".into());
        }
        validation.record_wrapper_type = Some("RecordIO".into());
        let v = input_data_config(&spec, &[&train, &validation]);
        assert_eq!(
            v,
            json!({
                "train": {"ContentType": "text/csv", "TrainingInputMode": "File",
                          "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
                "validation": {"TrainingInputMode": "Pipe", "S3DistributionType": "ShardedByS3Key",
                               "RecordWrapperType": "RecordIO"}
            })
        );
    }

    #[test]
    fn resource_config_as_the_contract_says() {
        let a = assignment();
        assert_eq!(
            resource_config(&a),
            json!({
                "current_host": "algo-1", "current_instance_type": "ml.m5.xlarge",
                "current_group_name": "homogeneousCluster", "hosts": ["algo-1", "algo-2"],
                "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                     "instance_type": "ml.m5.xlarge", "hosts": ["algo-1", "algo-2"]}],
                "network_interface_name": "eth0"
            })
        );
    }

    #[test]
    fn hosts_sort_lexicographically() {
        let mut a = assignment();
        a.hosts = vec!["algo-10".into(), "algo-2".into(), "algo-1".into()];
        assert_eq!(sorted_hosts(&a), vec!["algo-1", "algo-10", "algo-2"]);
    }

    #[test]
    fn names_and_keys_cannot_escape() {
        assert!(Tree::new(Path::new("/w"), "..", "algo-1").is_err());
        assert!(Tree::new(Path::new("/w"), "job", "a/b").is_err());
        assert!(Tree::new(Path::new("/w"), "job", "").is_err());
        let t = Tree::new(Path::new("/w"), "job", "algo-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.root, Path::new("/w/job/algo-1/opt/ml"));
        assert!(check_channel_name("train").is_ok());
        assert!(check_channel_name("train-1.v_2").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_channel_name(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_relative("a//b/./c.csv"), Ok(PathBuf::from("a/b/c.csv")));
        assert!(safe_relative("a/../../etc/passwd").is_err());
        assert!(safe_relative("..").is_err());
        assert!(safe_relative("").is_err());
        assert!(safe_relative("/").is_err());
        assert_eq!(
            t.host_path("/opt/ml/checkpoints"),
            Ok(PathBuf::from("/w/job/algo-1/opt/ml/checkpoints"))
        );
        assert_eq!(
            t.host_path("/data/ckpt"),
            Ok(PathBuf::from("/w/job/algo-1/opt/ml/data/ckpt"))
        );
        assert!(t.host_path("/opt/ml/../../x").is_err());
    }

    #[test]
    fn instance_group_names_restrict_channels() {
        let a = assignment();
        let mut ch = channel("train", "s3://b/p");
        assert!(channel_on_host(&ch, &a));
        if let Some(s3) = ch.data_source.s3_data_source.as_mut() {
            s3.instance_group_names = Some(vec!["other".into()]);
        }
        assert!(!channel_on_host(&ch, &a));
    }
}
