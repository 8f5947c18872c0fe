//! The SageMaker container contract for the built-in XGBoost: config and channel directories,
//! the model artifact, the failure file and exit codes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::binning::{BinCuts, BinnedMatrix};
use crate::booster::{TrainError, TrainOptions, train_binned};
use crate::params::{ParamError, XgbConfig};
use crate::reader::{ContentType, DataError, ReadOptions, list_files, read_dir};
use crate::stream::read_csv_binned;

/// The training channel, binned.
struct TrainData {
    matrix: BinnedMatrix,
    n_features: usize,
    labels: Vec<f32>,
    weights: Option<Vec<f32>>,
}

/// The model file name the XGBoost container writes.
pub const MODEL_FILE: &str = "xgboost-model";

/// Paths of one job's `/opt/ml` tree (environment variables override the defaults).
#[derive(Debug, Clone)]
pub struct JobPaths {
    /// `input/config`.
    pub config_dir: PathBuf,
    /// `input/data` (channel `c` is `data_dir/c` unless `SM_CHANNEL_<C>` is set).
    pub data_dir: PathBuf,
    /// `model`.
    pub model_dir: PathBuf,
    /// `output`.
    pub output_dir: PathBuf,
    channel_env: BTreeMap<String, PathBuf>,
}

impl JobPaths {
    /// Paths under `root`, overridden by `SM_INPUT_CONFIG_DIR`, `SM_CHANNEL_*`, `SM_MODEL_DIR`,
    /// `SM_OUTPUT_DIR` from `env`.
    pub fn new(root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str, default: PathBuf| env(k).map_or(default, PathBuf::from);
        let mut channel_env = BTreeMap::new();
        for c in ["train", "validation"] {
            if let Some(p) = env(&format!("SM_CHANNEL_{}", c.to_ascii_uppercase())) {
                channel_env.insert(c.to_string(), PathBuf::from(p));
            }
        }
        Self {
            config_dir: get("SM_INPUT_CONFIG_DIR", root.join("input/config")),
            data_dir: root.join("input/data"),
            model_dir: get("SM_MODEL_DIR", root.join("model")),
            output_dir: get("SM_OUTPUT_DIR", root.join("output")),
            channel_env,
        }
    }

    /// Directory of channel `name`.
    pub fn channel_dir(&self, name: &str) -> PathBuf {
        self.channel_env
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.data_dir.join(name))
    }
}

/// Why a job failed, split by whose fault it is (exit code 1 vs 2).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Bad hyperparameters, configuration or data: exit code 1.
    #[error("{0}")]
    User(String),
    /// Anything else: exit code 2.
    #[error("{0}")]
    Internal(String),
}

impl JobError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            JobError::User(_) => 1,
            JobError::Internal(_) => 2,
        }
    }
}

impl From<ParamError> for JobError {
    fn from(e: ParamError) -> Self {
        JobError::User(e.to_string())
    }
}

impl From<TrainError> for JobError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Log(_) => JobError::Internal(e.to_string()),
            other => JobError::User(other.to_string()),
        }
    }
}

/// One entry of `inputdataconfig.json`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChannelConfig {
    /// Content type, if given.
    pub content_type: Option<String>,
    /// File, FastFile or Pipe.
    pub training_input_mode: Option<String>,
    /// FullyReplicated or ShardedByS3Key.
    #[serde(rename = "S3DistributionType")]
    pub s3_distribution_type: Option<String>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, JobError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(JobError::Internal(format!("could not read {}: {e}", path.display())));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        JobError::User(format!(
            "{} is not valid JSON of the expected shape: {e}",
            path.display()
        ))
    })
}

/// Hyperparameters from `hyperparameters.json` (values may be strings, numbers or booleans).
pub fn read_hyperparameters(config_dir: &Path) -> Result<BTreeMap<String, String>, JobError> {
    let path = config_dir.join("hyperparameters.json");
    let raw: Option<BTreeMap<String, serde_json::Value>> = read_json(&path)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, s)
        })
        .collect())
}

/// Channels from `inputdataconfig.json`, or from the channel directories present when the file
/// is absent (a directory laid out by hand).
pub fn read_channels(paths: &JobPaths) -> Result<BTreeMap<String, ChannelConfig>, JobError> {
    let path = paths.config_dir.join("inputdataconfig.json");
    if let Some(cfg) = read_json::<BTreeMap<String, ChannelConfig>>(&path)? {
        return Ok(cfg);
    }
    let mut out = BTreeMap::new();
    for c in ["train", "validation"] {
        if paths.channel_dir(c).is_dir() {
            out.insert(
                c.to_string(),
                ChannelConfig {
                    content_type: None,
                    training_input_mode: Some("File".into()),
                    s3_distribution_type: None,
                },
            );
        }
    }
    Ok(out)
}

/// Number of threads: `nthread`, else `SM_NUM_CPUS`, else all cores.
pub fn thread_count(nthread: Option<usize>, env: &dyn Fn(&str) -> Option<String>) -> usize {
    nthread
        .or_else(|| env("SM_NUM_CPUS").and_then(|v| v.trim().parse().ok()))
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn data_error(channel: &str, e: DataError) -> JobError {
    match e {
        DataError::Io { .. } => JobError::User(format!("channel '{channel}': {e}")),
        DataError::Empty => JobError::User(format!(
            "channel '{channel}' is empty: no data rows in any file under its directory"
        )),
        other => JobError::User(format!("channel '{channel}': {other}")),
    }
}

/// Runs `train` under the contract; `out` gets the per-round lines, `err` the header.
pub fn run_train(
    paths: &JobPaths,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), JobError> {
    let hp = read_hyperparameters(&paths.config_dir)?;
    let channels = read_channels(paths)?;
    for (name, cfg) in &channels {
        if !matches!(name.as_str(), "train" | "validation" | "code") {
            return Err(JobError::User(format!(
                "Extraneous channel found: {name}. The XGBoost algorithm accepts the channels \
                 'train' (required) and 'validation'; remove '{name}'"
            )));
        }
        if let Some(mode) = &cfg.training_input_mode
            && !matches!(mode.as_str(), "File" | "FastFile")
        {
            return Err(JobError::User(format!(
                "channel '{name}': TrainingInputMode '{mode}' is not supported by kiln's \
                 built-in XGBoost; use File or FastFile"
            )));
        }
    }
    let Some(train_cfg) = channels.get("train") else {
        return Err(JobError::User(
            "channel 'train' is required: add a 'train' channel with the training data".into(),
        ));
    };
    let params = XgbConfig::from_hyperparameters(&hp)?;
    for w in params.warnings() {
        let _ = writeln!(err, "kiln xgboost: warning: {w}");
    }
    let threads = thread_count(params.nthread, env);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| JobError::Internal(format!("could not start {threads} threads: {e}")))?;
    pool.install(|| -> Result<(), JobError> {
        let ct = |name: &str, cfg: &ChannelConfig| {
            ContentType::parse(cfg.content_type.as_deref())
                .map_err(|e| JobError::User(format!("channel '{name}': {e}")))
        };
        let train_ct = ct("train", train_cfg)?;
        let opts = ReadOptions {
            has_label: true,
            csv_weights: params.csv_weights,
            min_features: 0,
        };
        let train_dir = paths.channel_dir("train");
        let files = list_files(&train_dir).map_err(|e| data_error("train", e))?;
        // CSV goes straight into bins (no float matrix); gzip and libsvm take the float path.
        let streamable =
            train_ct == ContentType::Csv && !files.iter().any(|f| f.extension().is_some_and(|e| e == "gz"));
        let train = if streamable {
            let d = read_csv_binned(&files, &opts, params.max_bin).map_err(|e| data_error("train", e))?;
            TrainData {
                n_features: d.matrix.n_features(),
                matrix: d.matrix,
                labels: d.labels,
                weights: d.weights,
            }
        } else {
            let ds = read_dir(&train_dir, train_ct, &opts).map_err(|e| data_error("train", e))?;
            let cuts = BinCuts::compute(&ds.features, ds.weights.as_deref(), params.max_bin);
            TrainData {
                n_features: ds.features.n_cols(),
                matrix: BinnedMatrix::new(&ds.features, cuts),
                labels: ds.labels,
                weights: ds.weights,
            }
        };
        let valid = match channels.get("validation") {
            Some(cfg) => {
                let vct = ct("validation", cfg)?;
                // libsvm rows may stop before the last feature; CSV rows must have every column.
                let vopts = ReadOptions {
                    min_features: if vct == ContentType::Libsvm {
                        train.n_features
                    } else {
                        0
                    },
                    ..opts
                };
                let v =
                    read_dir(&paths.channel_dir("validation"), vct, &vopts).map_err(|e| data_error("validation", e))?;
                if v.features.n_cols() != train.n_features {
                    return Err(JobError::User(format!(
                        "channel 'validation': it has {} feature columns but 'train' has {}; \
                         both channels need the same columns",
                        v.features.n_cols(),
                        train.n_features
                    )));
                }
                Some(v)
            }
            None => None,
        };
        let _ = writeln!(
            err,
            "kiln xgboost: train {} rows x {} features{}; objective {}; {} rounds; {} threads",
            train.labels.len(),
            train.n_features,
            valid
                .as_ref()
                .map_or(String::new(), |v| format!(", validation {} rows", v.n_rows())),
            params.objective.name(),
            params.num_round,
            threads
        );
        if params.early_stopping_rounds.is_some() && valid.is_none() {
            let _ = writeln!(
                err,
                "kiln xgboost: warning: early_stopping_rounds needs a 'validation' channel; \
                 training all {} rounds",
                params.num_round
            );
        }
        let booster = train_binned(
            &params,
            &train.matrix,
            &train.labels,
            train.weights.as_deref(),
            valid.as_ref(),
            TrainOptions {
                eval_train: true,
                log: Some(out),
            },
        )?;
        if let Some((it, score)) = booster.best {
            let _ = writeln!(
                err,
                "kiln xgboost: early stopping: best iteration {it} (score {score:.5}); the model \
                 keeps rounds 0..={it}"
            );
        }
        std::fs::create_dir_all(&paths.model_dir)
            .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
        let model_path = paths.model_dir.join(MODEL_FILE);
        std::fs::write(&model_path, booster.to_xgboost_json_string())
            .map_err(|e| JobError::Internal(format!("could not write {}: {e}", model_path.display())))?;
        Ok(())
    })
}

/// Writes the failure reason where SageMaker looks for it.
pub fn write_failure(paths: &JobPaths, message: &str) {
    let _ = std::fs::create_dir_all(&paths.output_dir);
    let _ = std::fs::write(paths.output_dir.join("failure"), message);
}
