//! The SageMaker container contract for the built-in XGBoost: config and channel directories,
//! the model artifact, the failure file and exit codes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::binning::{BinnedMatrix, sketch_step, values_keys};
use crate::booster::{Booster, TrainError, TrainOptions, train_binned};
use crate::checkpoint::Checkpoints;
use crate::collective::{Collective, CommConfig};
use crate::data::Dataset;
use crate::distributed::{agree_cuts, agree_missing, check_same_model, select_dataset, share};
use crate::params::{ParamError, XgbConfig, XgbParams};
use crate::reader::{ContentType, DataError, ReadOptions, list_files, read_dir};
use crate::stream::{Sketch, input_bytes, scan_csv, scan_csv_part};

/// The training channel, binned.
struct TrainData {
    matrix: BinnedMatrix,
    n_features: usize,
    labels: Vec<f32>,
    weights: Option<Vec<f32>>,
}

/// The model file name the XGBoost container writes.
pub const MODEL_FILE: &str = "xgboost-model";

/// The channel of an incremental training job: a model (an earlier job's `xgboost-model` or
/// its `model.tar.gz`) that the job trains `num_round` more rounds on top of.
pub const MODEL_CHANNEL: &str = "model";

/// Paths of one job's `/opt/ml` tree (environment variables override the defaults).
#[derive(Debug, Clone)]
pub struct JobPaths {
    /// The root (`/opt/ml` in a container).
    pub root: PathBuf,
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
        for c in ["train", "validation", "test"] {
            if let Some(p) = env(&format!("SM_CHANNEL_{}", c.to_ascii_uppercase())) {
                channel_env.insert(c.to_string(), PathBuf::from(p));
            }
        }
        Self {
            root: root.to_path_buf(),
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

/// The root of the `/opt/ml` tree as the algorithm sees it inside a container.
const CONTAINER_ROOT: &str = "/opt/ml";

/// `checkpointconfig.json`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckpointConfig {
    local_path: Option<String>,
}

/// The checkpoint directory, when `checkpointconfig.json` exists: its `LocalPath` (default
/// `/opt/ml/checkpoints`). A path under `/opt/ml` is taken under `paths.root` (the same place
/// in a container; with `--ml-root DIR` the tree's own `checkpoints/`), a relative one from
/// the root, any other absolute path as it is.
pub fn checkpoint_dir(paths: &JobPaths) -> Result<Option<PathBuf>, JobError> {
    let Some(cfg) = read_json::<CheckpointConfig>(&paths.config_dir.join("checkpointconfig.json"))? else {
        return Ok(None);
    };
    let local = cfg
        .local_path
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("{CONTAINER_ROOT}/checkpoints"));
    let under_root = local
        .strip_prefix(CONTAINER_ROOT)
        .filter(|r| r.is_empty() || r.starts_with('/'));
    Ok(Some(match under_root {
        Some(rel) => paths.root.join(rel.trim_start_matches('/')),
        None => paths.root.join(&local), // absolute paths replace the root
    }))
}

/// The checkpoint to resume from: algo-1's newest (sent to every host, so all resume from the
/// same model), as (round, model).
fn resume_point(ckpt: &Checkpoints, comm: Option<&Collective>) -> Result<Option<(usize, Booster)>, JobError> {
    let root = comm.is_none_or(Collective::is_root);
    let mine = if root {
        ckpt.latest().map_err(JobError::Internal)?
    } else {
        None
    };
    let latest = match comm {
        Some(c) => {
            let bytes = mine.map_or_else(Vec::new, |(r, text)| {
                let mut b = (r as u64).to_le_bytes().to_vec();
                b.extend(text.into_bytes());
                b
            });
            let got = c.broadcast(bytes).map_err(|e| JobError::Internal(e.to_string()))?;
            if got.len() < 8 {
                None
            } else {
                let round = u64::from_le_bytes(got[..8].try_into().unwrap_or_default()) as usize;
                let text = String::from_utf8(got[8..].to_vec()).map_err(|_| {
                    JobError::User(format!("checkpoint {} is not UTF-8 text", ckpt.path(round).display()))
                })?;
                Some((round, text))
            }
        }
        None => mine,
    };
    latest
        .map(|(round, text)| {
            Booster::from_xgboost_json(&text).map(|b| (round, b)).map_err(|e| {
                JobError::User(format!(
                    "checkpoint {} is not an XGBoost model kiln can read ({e}); remove it from the \
                     checkpoint S3 URI to start over",
                    ckpt.path(round).display()
                ))
            })
        })
        .transpose()
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
            TrainError::Log(_) | TrainError::Collective(_) | TrainError::Checkpoint(_) => {
                JobError::Internal(e.to_string())
            }
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
    crate::prof::mark("start");
    let hp = read_hyperparameters(&paths.config_dir)?;
    let channels = read_channels(paths)?;
    crate::registry::check_channels(&crate::xgboost::XGBOOST, channels.keys())?;
    for (name, cfg) in &channels {
        if let Some(mode) = &cfg.training_input_mode
            && !matches!(mode.as_str(), "File" | "FastFile")
            && !(mode == "Pipe" && name != MODEL_CHANNEL)
        {
            return Err(JobError::User(format!(
                "channel '{name}': TrainingInputMode '{mode}' is not supported by kiln's \
                 built-in XGBoost for this channel; use File or FastFile"
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
    let comm = match read_resource_config(&paths.config_dir)? {
        Some(rc) if rc.hosts.len() > 1 => {
            let cfg = CommConfig::from_env(&rc.hosts, &rc.current_host, env).map_err(JobError::User)?;
            let _ = writeln!(
                err,
                "kiln xgboost: distributed training: {} of {} hosts; {} listens on port {}",
                rc.current_host,
                rc.hosts.len(),
                cfg.hosts[0],
                cfg.port
            );
            let c = Collective::connect(&cfg)?;
            crate::prof::mark("hosts connected");
            Some(c)
        }
        _ => None,
    };
    let result = pool.install(|| train_job(paths, &channels, train_cfg, &params, threads, comm.as_ref(), out, err));
    if let (Err(e), Some(c)) = (&result, &comm) {
        // The other hosts are waiting on this one: tell them why it stops.
        c.abort(&e.to_string());
    }
    result
}

/// `resourceconfig.json`: this host and every host of the job.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ResourceConfig {
    /// This host (`algo-K`).
    pub current_host: String,
    /// Every host, in rank order.
    pub hosts: Vec<String>,
}

/// `resourceconfig.json`, if present.
pub fn read_resource_config(config_dir: &Path) -> Result<Option<ResourceConfig>, JobError> {
    read_json(&config_dir.join("resourceconfig.json"))
}

/// Whether every host sees the same objects of a channel (`FullyReplicated`, the default), so
/// that each takes its share of the rows, rather than its own (`ShardedByS3Key`).
fn replicated(cfg: &ChannelConfig) -> bool {
    cfg.s3_distribution_type.as_deref() != Some("ShardedByS3Key")
}

fn is_pipe(cfg: &ChannelConfig) -> bool {
    cfg.training_input_mode.as_deref() == Some("Pipe")
}

/// A data channel's rows: its files (File, FastFile), or in Pipe mode its FIFO `<name>_0` read
/// to the end (the channel's objects back to back; text/csv, application/x-parquet and
/// application/x-recordio-protobuf, the formats SageMaker's XGBoost takes in Pipe mode).
fn read_channel_data(
    paths: &JobPaths,
    name: &str,
    cfg: &ChannelConfig,
    ct: ContentType,
    opts: &ReadOptions,
) -> Result<Dataset, JobError> {
    if !is_pipe(cfg) {
        return read_dir(&paths.channel_dir(name), ct, opts).map_err(|e| data_error(name, e));
    }
    if ct == ContentType::Libsvm {
        return Err(JobError::User(format!(
            "channel '{name}': Pipe mode takes text/csv, application/x-parquet or \
             application/x-recordio-protobuf (as SageMaker's XGBoost), not libsvm; set the \
             channel's ContentType, or use File mode for libsvm"
        )));
    }
    let fifo = paths.data_dir.join(format!("{name}_0"));
    let mut bytes = Vec::new();
    std::fs::File::open(&fifo)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .map_err(|e| JobError::User(format!("channel '{name}': could not read {}: {e}", fifo.display())))?;
    crate::reader::parse_bytes(&bytes, ct, opts).map_err(|e| data_error(name, e))
}

/// Reads the channels, trains (with the other hosts of `comm`) and writes the model.
#[allow(clippy::too_many_arguments)]
fn train_job(
    paths: &JobPaths,
    channels: &BTreeMap<String, ChannelConfig>,
    train_cfg: &ChannelConfig,
    params: &XgbParams,
    threads: usize,
    comm: Option<&Collective>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), JobError> {
    let ct = |name: &str, cfg: &ChannelConfig| {
        ContentType::parse(cfg.content_type.as_deref()).map_err(|e| JobError::User(format!("channel '{name}': {e}")))
    };
    let train_ct = ct("train", train_cfg)?;
    let opts = ReadOptions {
        has_label: true,
        csv_weights: params.csv_weights,
        min_features: 0,
    };
    // Cut points: this host's own, or agreed by every host.
    let choose_cuts = |sketch: Sketch<'_>| match comm {
        Some(c) => agree_cuts(c, &sketch, params.max_bin, replicated(train_cfg)),
        None => Ok(sketch.cuts(params.max_bin)),
    };
    let train_dir = paths.channel_dir("train");
    let files = if is_pipe(train_cfg) {
        Vec::new()
    } else {
        list_files(&train_dir).map_err(|e| data_error("train", e))?
    };
    // CSV files go straight into bins (no float matrix); gzip, libsvm, the other formats and a
    // Pipe mode stream take the float path.
    let streamable = train_ct == ContentType::Csv
        && !is_pipe(train_cfg)
        && !files.iter().any(|f| f.extension().is_some_and(|e| e == "gz"));
    let mut train = if streamable {
        let scan = match comm {
            // A part of the rows: sampled at the step of all hosts' rows (their bytes tell it
            // before the rows are counted), not at the denser step of this part's.
            Some(c) if !replicated(train_cfg) => {
                let mut bytes = [input_bytes(&files) as i64];
                c.sum_i64(&mut bytes)?;
                let scan = scan_csv_part(&files, &opts, bytes[0] as u64).map_err(|e| data_error("train", e))?;
                let mut rows = [scan.n_rows() as i64];
                c.sum_i64(&mut rows)?;
                scan.sample_at_most(sketch_step(rows[0] as usize))
                    .map_err(|e| data_error("train", e))?
            }
            _ => scan_csv(&files, &opts).map_err(|e| data_error("train", e))?,
        };
        crate::prof::mark("training rows sampled");
        let cuts = choose_cuts(scan.sketch())?;
        crate::prof::mark("cuts chosen");
        let d = scan.bin(cuts).map_err(|e| data_error("train", e))?;
        TrainData {
            n_features: d.matrix.n_features(),
            matrix: d.matrix,
            labels: d.labels,
            weights: d.weights,
        }
    } else {
        let ds = read_channel_data(paths, "train", train_cfg, train_ct, &opts)?;
        let keys = values_keys(&ds.features, &ds.labels);
        let cuts = choose_cuts(Sketch {
            step: 1,
            rows: &ds.features,
            keys: &keys,
            weights: ds.weights.as_deref(),
            n_rows: ds.n_rows(),
        })?;
        TrainData {
            n_features: ds.features.n_cols(),
            matrix: BinnedMatrix::new(&ds.features, cuts),
            labels: ds.labels,
            weights: ds.weights,
        }
    };
    crate::prof::mark("training rows binned");
    if let Some(c) = comm {
        if replicated(train_cfg) {
            // Every host read every row: keep this host's share.
            let keep = share(train.labels.len(), c.rank(), c.size());
            train.matrix = train.matrix.select_rows(&keep);
            train.labels = keep.iter().map(|&r| train.labels[r as usize]).collect();
            train.weights = train.weights.map(|w| keep.iter().map(|&r| w[r as usize]).collect());
        }
        if train.labels.is_empty() {
            return Err(JobError::User(format!(
                "channel 'train': {} has no rows to train on (fewer rows or files than hosts)",
                c.host(c.rank())
            )));
        }
        agree_missing(c, &mut train.matrix)?;
    }
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
            let v = read_channel_data(paths, "validation", cfg, vct, &vopts)?;
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
    // A replicated validation channel: every host read every row; each evaluates its share
    // (as training rows are shared), and the hosts compute the metrics together. With fewer
    // rows than hosts, each evaluates all of them alone.
    let valid_replicated = channels.get("validation").is_some_and(replicated);
    let valid_whole = match (comm, &valid) {
        (Some(c), Some(v)) if valid_replicated && v.n_rows() >= c.size() => false,
        _ => valid_replicated,
    };
    let valid = match (comm, valid) {
        (Some(c), Some(v)) if valid_replicated && !valid_whole => {
            Some(select_dataset(&v, &share(v.n_rows(), c.rank(), c.size())))
        }
        (_, v) => v,
    };
    crate::prof::mark("validation rows read");
    let _ = writeln!(
        err,
        "kiln xgboost: train {} rows x {} features{}; objective {}; {} rounds; {} threads{}",
        train.labels.len(),
        train.n_features,
        valid
            .as_ref()
            .map_or(String::new(), |v| format!(", validation {} rows", v.n_rows())),
        params.objective.name(),
        params.num_round,
        threads,
        comm.map_or(String::new(), |c| format!(" (this host's part; {} hosts)", c.size()))
    );
    if params.early_stopping_rounds.is_some() && valid.is_none() {
        let _ = writeln!(
            err,
            "kiln xgboost: warning: early_stopping_rounds needs a 'validation' channel; \
             training all {} rounds",
            params.num_round
        );
    }
    // Distributed, every host computes the metrics (together) but only algo-1 prints them.
    let mut quiet = std::io::sink();
    let root = comm.is_none_or(Collective::is_root);
    // Incremental training: `num_round` more rounds on top of the model channel's model.
    let prior = if channels.contains_key(MODEL_CHANNEL) {
        Some(read_model_channel(&paths.channel_dir(MODEL_CHANNEL))?)
    } else {
        None
    };
    let prior_rounds = match &prior {
        Some(m) => {
            check_model_fits(m, params, train.n_features)?;
            let rounds = m.trees.len() / m.objective.n_groups().max(1);
            let _ = writeln!(
                err,
                "kiln xgboost: continuing the model of channel 'model' ({rounds} rounds): {} more",
                params.num_round
            );
            rounds
        }
        None => 0,
    };
    let continued = params.after_rounds(prior_rounds);
    let params = &continued;
    // Checkpoints: every host resumes from algo-1's newest; only algo-1 writes them. A
    // checkpoint is newer than the model channel's model (it was trained on top of it).
    let checkpoints = checkpoint_dir(paths)?.map(Checkpoints::new);
    let resume = match &checkpoints {
        Some(c) => resume_point(c, comm)?,
        None => None,
    };
    if let Some((round, b)) = &resume {
        let done = b.trees.len() / b.objective.n_groups().max(1);
        let _ = if done < params.num_round {
            writeln!(
                err,
                "Resuming from checkpoint {}{round} (round {done} of {})",
                crate::checkpoint::PREFIX,
                params.num_round
            )
        } else {
            writeln!(
                err,
                "Resuming from checkpoint {}{round}: it has {done} rounds, num_round is {}; \
                 nothing more to train",
                crate::checkpoint::PREFIX,
                params.num_round
            )
        };
    }
    let resume = resume.or_else(|| prior.map(|m| (prior_rounds, m)));
    let log: &mut (dyn Write + Send) = if root { out } else { &mut quiet };
    let booster = train_binned(
        params,
        &train.matrix,
        &train.labels,
        train.weights.as_deref(),
        valid.as_ref(),
        TrainOptions {
            eval_train: true,
            log: Some(log),
            comm,
            resume: resume.as_ref().map(|r| &r.1),
            round_offset: prior_rounds,
            checkpoints: checkpoints.as_ref().filter(|_| root),
            valid_whole,
        },
    )?;
    if let Some((it, score)) = booster.best {
        let _ = writeln!(
            err,
            "kiln xgboost: early stopping: best iteration {it} (score {score:.5}); the model \
             keeps rounds 0..={it}"
        );
    }
    let json = booster.to_xgboost_json_string();
    if let Some(c) = comm {
        check_same_model(c, &json)?;
    }
    if !root {
        let _ = writeln!(
            err,
            "kiln xgboost: done; {} writes the model",
            comm.map_or("", |c| c.host(0))
        );
        return Ok(());
    }
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let model_path = paths.model_dir.join(MODEL_FILE);
    std::fs::write(&model_path, json)
        .map_err(|e| JobError::Internal(format!("could not write {}: {e}", model_path.display())))?;
    Ok(())
}

/// The model in the `model` channel's directory: its `xgboost-model` file, else its one file,
/// either a model or a gzipped tar archive (the `model.tar.gz` a training job uploads) holding
/// `xgboost-model`.
fn read_model_channel(dir: &Path) -> Result<Booster, JobError> {
    let files = channel_files(dir)
        .map_err(|e| JobError::User(format!("channel 'model': could not list {}: {e}", dir.display())))?;
    let path = match files.iter().find(|f| f.file_name().is_some_and(|n| n == MODEL_FILE)) {
        Some(f) => f.clone(),
        None if files.len() == 1 => files[0].clone(),
        None => {
            return Err(JobError::User(format!(
                "channel 'model' holds {} files and none is named {MODEL_FILE}; give it one \
                 model: an earlier job's model.tar.gz or its {MODEL_FILE} file",
                files.len()
            )));
        }
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| JobError::User(format!("channel 'model': could not read {}: {e}", path.display())))?;
    let (bytes, name) = if bytes.starts_with(&[0x1f, 0x8b]) {
        (
            model_from_tar_gz(&bytes, &path)?,
            format!("{}:{MODEL_FILE}", path.display()),
        )
    } else {
        (bytes, path.display().to_string())
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        JobError::User(format!(
            "channel 'model': {name} is not an XGBoost JSON model (binary or pickled models are \
             not supported by kiln; save the model with Booster.save_model('xgboost-model.json'))"
        ))
    })?;
    Booster::from_xgboost_json(&text).map_err(|e| {
        JobError::User(format!(
            "channel 'model': {name} is not an XGBoost model kiln can read ({e})"
        ))
    })
}

/// Regular files under `dir`, at any depth, sorted.
fn channel_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `xgboost-model` entry of a gzipped tar archive.
fn model_from_tar_gz(bytes: &[u8], path: &Path) -> Result<Vec<u8>, JobError> {
    let bad = |e: std::io::Error| {
        JobError::User(format!(
            "channel 'model': {} is not a readable tar.gz archive ({e})",
            path.display()
        ))
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let is_model = entry.path().map_err(bad)?.file_name().is_some_and(|n| n == MODEL_FILE);
        if is_model && entry.header().entry_type().is_file() {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out).map_err(bad)?;
            return Ok(out);
        }
    }
    Err(JobError::User(format!(
        "channel 'model': the archive {} has no {MODEL_FILE} file; give the model.tar.gz of an \
         XGBoost training job",
        path.display()
    )))
}

/// Fails unless `model` can be trained further with `params` on data of `n_features` columns.
fn check_model_fits(model: &Booster, params: &XgbParams, n_features: usize) -> Result<(), JobError> {
    let mismatch = |what: &str, old: String, new: String| {
        Err(JobError::User(format!(
            "channel 'model': the model was trained with {what} {old} but this job has {what} \
             {new}; incremental training needs the same {what}"
        )))
    };
    if model.objective.name() != params.objective.name() {
        return mismatch(
            "objective",
            model.objective.name().into(),
            params.objective.name().into(),
        );
    }
    if model.objective.n_groups() != params.objective.n_groups() {
        return mismatch(
            "num_class",
            model.objective.n_groups().to_string(),
            params.objective.n_groups().to_string(),
        );
    }
    if model.num_feature != n_features {
        return mismatch(
            "feature count",
            model.num_feature.to_string(),
            format!("{n_features} (in channel 'train')"),
        );
    }
    Ok(())
}

/// Writes the failure reason where SageMaker looks for it.
pub fn write_failure(paths: &JobPaths, message: &str) {
    let _ = std::fs::create_dir_all(&paths.output_dir);
    let _ = std::fs::write(paths.output_dir.join("failure"), message);
}
