//! SageMaker's built-in Factorization Machines (`factorization-machines` images): a
//! `binary_classifier` or `regressor` whose score is
//! `w0 + Σ_i w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j`, every pairwise interaction weighted by the
//! dot product of two `num_factors`-wide factor vectors. The model is
//! `model/factorization-machines-model.json` (`w0`, `w`, `V`; `docs/builtins.md` documents it);
//! `kiln algo factorization-machines predict` scores rows with it.
//!
//! Data: SageMaker's Factorization Machines trains on `application/x-recordio-protobuf` only
//! (the SDK's `record_set()` or `write_spmatrix_to_sparse_tensor`); CSV is refused as SageMaker
//! refuses it. Rows stay sparse in memory (CSR: row offsets, `u32` columns, `f32` values), as FM
//! data is typically one-hot with 1e5 columns and about ten non-zeros a row.
//!
//! Training: mini-batches of `mini_batch_size` shuffled rows, the pairwise term in O(k·nnz) as
//! `0.5 Σ_f [(Σ_i v_if x_i)^2 − Σ_i v_if^2 x_i^2]`, and Adam (SageMaker's FM runs MXNet optimizers;
//! `eps`, `clip_gradient` and `rescale_grad` are Adam's parameters here) with one learning rate and
//! weight decay per term (bias, linear, factors). Updates are lazy: only the features a batch
//! touches move, as MXNet's sparse Adam does. Each batch runs in two parallel phases: the rows'
//! predictions (and their factor sums), then the gradient and update of each touched feature,
//! one task owning each feature's row of parameters and Adam moments (no lock, no hogwild race,
//! and the same model for any number of threads).

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::container::{ChannelConfig, JobError, JobPaths, thread_count};
use crate::dense_input::{for_each_file, for_each_source, is_recordio};
use crate::hparams::Hp;
use crate::protobuf::{FormatError, RecordReader, decode_record};
use crate::reader::list_files;
use crate::registry::{Algorithm, ChannelSpec, PredictArgs, train_on_one_host};
use crate::rng::Rng;

/// The model file in `model/` (and so at the root of model.tar.gz).
pub const MODEL_FILE: &str = "factorization-machines-model.json";

/// RecordIO-protobuf, the only training format of SageMaker's Factorization Machines.
const RECORDIO: &str = "application/x-recordio-protobuf";

const ALGORITHM: &str = "Factorization Machines";

const USAGE: &str = "\
usage: kiln algo factorization-machines train [--ml-root DIR]
       kiln algo factorization-machines predict --model FILE|DIR --data PATH [--content-type TYPE]
                                                [--has-label] [--output FILE] [--nthread N]

train    runs the SageMaker Factorization Machines container contract under DIR (default
         /opt/ml): channels 'train' (required) and 'test', application/x-recordio-protobuf only
         (sparse or dense records, the label in the record's label map); hyperparameters
         feature_dim, num_factors and predictor_type (binary_classifier, regressor) are required.
         Writes model/factorization-machines-model.json and prints SageMaker's
         '#quality_metric: ...' lines.
predict  prints per row 'predicted_label,score' (binary_classifier; the label is score >= 0.5)
         or 'score' (regressor). --model is factorization-machines-model.json or the directory
         holding it; TYPE defaults to application/x-recordio-protobuf for .rec/.pbr/.recordio
         files, else text/csv (dense rows; --has-label: the first column is a label to skip).";

/// What the model predicts (`predictor_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predictor {
    /// Labels 0 and 1; the score is the probability of 1.
    Binary,
    /// A real number.
    Regressor,
}

impl Predictor {
    fn name(self) -> &'static str {
        match self {
            Predictor::Binary => "binary_classifier",
            Predictor::Regressor => "regressor",
        }
    }
}

/// How one term's parameters start (`*_init_method` and its `_sigma`, `_scale` or `_value`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
    /// Uniform in `[-scale, scale]`.
    Uniform(f32),
    /// This value.
    Constant(f32),
}

impl Init {
    fn draw(self, rng: &mut Rng) -> f32 {
        match self {
            Init::Normal(sigma) => {
                let u = rng.next_f64().max(1e-300);
                let g = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos();
                sigma * g as f32
            }
            Init::Uniform(scale) => scale * (2.0 * rng.next_f64() as f32 - 1.0),
            Init::Constant(v) => v,
        }
    }
}

/// One term's (bias, linear, factors) optimizer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    /// `*_lr`.
    pub lr: f32,
    /// `*_wd`: L2 weight decay added to the gradient.
    pub wd: f32,
    /// `*_init_*`.
    pub init: Init,
}

/// Factorization Machines hyperparameters, checked: names, defaults and ranges as SageMaker
/// documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct FmParams {
    /// `feature_dim` (required).
    pub feature_dim: usize,
    /// `num_factors` (required).
    pub num_factors: usize,
    /// `predictor_type` (required).
    pub predictor: Predictor,
    /// `epochs` (default 1).
    pub epochs: usize,
    /// `mini_batch_size` (default 1000).
    pub mini_batch_size: usize,
    /// `bias_*` (lr 0.1, wd 0.01, normal 0.01).
    pub bias: Term,
    /// `linear_*` (lr 0.001, wd 0.001, normal 0.01).
    pub linear: Term,
    /// `factors_*` (lr 0.0001, wd 0.00001, normal 0.001).
    pub factors: Term,
    /// `clip_gradient`: gradients clipped to `[-c, c]` when set and positive.
    pub clip_gradient: Option<f32>,
    /// `eps` (default 1e-8): Adam's denominator term.
    pub eps: f32,
    /// `rescale_grad` (default `1 / mini_batch_size`): the summed batch gradient is multiplied by it.
    pub rescale_grad: f32,
}

/// Every hyperparameter name SageMaker's Factorization Machines accepts.
const KNOWN: &[&str] = &[
    "feature_dim",
    "num_factors",
    "predictor_type",
    "epochs",
    "mini_batch_size",
    "clip_gradient",
    "eps",
    "rescale_grad",
    "bias_lr",
    "linear_lr",
    "factors_lr",
    "bias_wd",
    "linear_wd",
    "factors_wd",
    "bias_init_method",
    "bias_init_scale",
    "bias_init_sigma",
    "bias_init_value",
    "linear_init_method",
    "linear_init_scale",
    "linear_init_sigma",
    "linear_init_value",
    "factors_init_method",
    "factors_init_scale",
    "factors_init_sigma",
    "factors_init_value",
];

/// Parameters (and Adam moments) kiln keeps in memory at most: `feature_dim × (num_factors + 1)`.
const MAX_PARAMETERS: usize = 1 << 29;

/// A float hyperparameter: `default` when absent; `non_negative` as SageMaker's ranges say.
fn float(hp: &Hp<'_>, name: &str, default: Option<f32>, non_negative: bool) -> Result<Option<f32>, JobError> {
    let Some(v) = hp.raw(name) else {
        return Ok(default);
    };
    let x = v
        .parse::<f32>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| JobError::User(format!("Hyperparameter '{name}': value '{v}' is not a number")))?;
    if non_negative && x < 0.0 {
        return Err(JobError::User(format!(
            "Hyperparameter '{name}': value '{v}' is out of range: it must be a non-negative number"
        )));
    }
    Ok(Some(x))
}

/// Reads `{term}_lr`, `{term}_wd` and `{term}_init_*`.
fn term(hp: &Hp<'_>, term: &str, lr: f32, wd: f32, sigma: f32) -> Result<Term, JobError> {
    let name = |s: &str| format!("{term}_{s}");
    let method = hp.choice(&name("init_method"), &["normal", "uniform", "constant"], Some(0))?;
    // SageMaker documents no default scale or value: the uniform scale defaults to the normal's
    // sigma and the constant to 0.
    let init = match method {
        0 => Init::Normal(float(hp, &name("init_sigma"), Some(sigma), true)?.unwrap_or(sigma)),
        1 => Init::Uniform(float(hp, &name("init_scale"), Some(sigma), true)?.unwrap_or(sigma)),
        _ => Init::Constant(float(hp, &name("init_value"), Some(0.0), false)?.unwrap_or(0.0)),
    };
    Ok(Term {
        lr: float(hp, &name("lr"), Some(lr), true)?.unwrap_or(lr),
        wd: float(hp, &name("wd"), Some(wd), true)?.unwrap_or(wd),
        init,
    })
}

impl FmParams {
    /// Parses `hyperparameters.json`'s map.
    pub fn from_hyperparameters(map: &BTreeMap<String, String>) -> Result<Self, JobError> {
        let hp = Hp {
            map,
            algorithm: ALGORITHM,
        };
        hp.only(KNOWN)?;
        let feature_dim = hp.count("feature_dim", 1, None)?;
        let num_factors = hp.count("num_factors", 1, None)?;
        let predictor = match hp.choice("predictor_type", &["binary_classifier", "regressor"], None)? {
            0 => Predictor::Binary,
            _ => Predictor::Regressor,
        };
        if u32::try_from(feature_dim).is_err()
            || feature_dim.saturating_mul(num_factors.saturating_add(1)) > MAX_PARAMETERS
        {
            return Err(JobError::User(format!(
                "feature_dim {feature_dim} x (num_factors {num_factors} + 1) parameters are more than kiln's \
                 Factorization Machines keeps in memory ({MAX_PARAMETERS}); lower num_factors or hash the features \
                 into fewer columns"
            )));
        }
        let mini_batch_size = hp.count("mini_batch_size", 1, Some(1000))?;
        let eps = float(&hp, "eps", Some(1e-8), true)?.unwrap_or(1e-8);
        let rescale_default = 1.0 / mini_batch_size as f32;
        Ok(Self {
            feature_dim,
            num_factors,
            predictor,
            epochs: hp.count("epochs", 1, Some(1))?,
            mini_batch_size,
            bias: term(&hp, "bias", 0.1, 0.01, 0.01)?,
            linear: term(&hp, "linear", 0.001, 0.001, 0.01)?,
            factors: term(&hp, "factors", 0.0001, 0.00001, 0.001)?,
            clip_gradient: float(&hp, "clip_gradient", None, false)?.filter(|c| *c > 0.0),
            eps,
            rescale_grad: float(&hp, "rescale_grad", Some(rescale_default), false)?.unwrap_or(rescale_default),
        })
    }
}

/// Rows kept sparse (CSR), with one label per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseRows {
    /// Columns per row (`feature_dim`).
    pub n_cols: usize,
    /// Row `r`'s entries are `offsets[r]..offsets[r + 1]`; starts with 0.
    pub offsets: Vec<usize>,
    /// Column of each entry.
    pub cols: Vec<u32>,
    /// Value of each entry.
    pub vals: Vec<f32>,
    /// `label["values"][0]` per row, NaN when a record has none.
    pub labels: Vec<f32>,
}

impl SparseRows {
    /// No rows, `n_cols` wide.
    pub fn new(n_cols: usize) -> Self {
        Self {
            n_cols,
            offsets: vec![0],
            ..Self::default()
        }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Row `r`'s columns and values.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.offsets[r], self.offsets[r + 1]);
        (&self.cols[a..b], &self.vals[a..b])
    }

    /// Appends a dense row (its zeros left out) with its label.
    pub fn push_dense(&mut self, values: &[f32], label: f32) {
        for (j, &v) in values.iter().enumerate() {
            if v != 0.0 {
                self.cols.push(j as u32);
                self.vals.push(v);
            }
        }
        self.offsets.push(self.cols.len());
        self.labels.push(label);
    }
}

/// Reads every record of `input` (named `name` in errors) into `rows`: a sparse record's keys
/// and values as they are, a dense record's non-zeros; every record `rows.n_cols` wide.
pub fn read_sparse<R: Read>(input: R, name: &str, rows: &mut SparseRows) -> Result<(), FormatError> {
    let mut reader = RecordReader::new(input, name);
    let mut payload = Vec::new();
    loop {
        let at = reader.offset();
        if !reader.next_into(&mut payload)? {
            return Ok(());
        }
        let fail = |what: String| FormatError {
            source_name: name.to_string(),
            record: reader.record_index(),
            offset: at,
            what,
        };
        let rec = decode_record(&payload).map_err(|e| fail(format!("not a valid aialgs.data.Record protobuf: {e}")))?;
        let f = rec
            .features
            .ok_or_else(|| fail("the record has no features[\"values\"] tensor".into()))?;
        let label = rec.label.and_then(|l| l.values.first().copied()).unwrap_or(f32::NAN);
        if f.keys.is_empty() {
            if f.values.len() != rows.n_cols {
                return Err(fail(format!(
                    "the record has {} features, expected {} (feature_dim); set feature_dim to the data's width",
                    f.values.len(),
                    rows.n_cols
                )));
            }
            rows.push_dense(&f.values, label);
            continue;
        }
        let width = f.shape.first().copied().ok_or_else(|| {
            fail(
                "a sparse tensor (with keys) has no shape; write it with write_spmatrix_to_sparse_tensor(), which \
                  records the row width"
                    .into(),
            )
        })?;
        if width != rows.n_cols as u64 {
            return Err(fail(format!(
                "the record has {width} features, expected {} (feature_dim); set feature_dim to the data's width",
                rows.n_cols
            )));
        }
        if f.keys.len() != f.values.len() {
            return Err(fail(format!(
                "a sparse tensor has {} keys but {} values",
                f.keys.len(),
                f.values.len()
            )));
        }
        for (&k, &v) in f.keys.iter().zip(&f.values) {
            if k >= width {
                return Err(fail(format!("sparse key {k} is outside the row's width {width}")));
            }
            rows.cols.push(k as u32);
            rows.vals.push(v);
        }
        rows.offsets.push(rows.cols.len());
        rows.labels.push(label);
    }
}

/// Reads channel `name`: RecordIO-protobuf from its files or its Pipe-mode FIFO, labelled rows of
/// `p.feature_dim` columns (binary labels 0 or 1).
pub fn read_channel(paths: &JobPaths, name: &str, cfg: &ChannelConfig, p: &FmParams) -> Result<SparseRows, JobError> {
    let user = |m: String| JobError::User(format!("channel '{name}': {m}"));
    let ct = cfg.content_type.as_deref().unwrap_or(RECORDIO);
    if !is_recordio(ct) {
        return Err(user(format!(
            "ContentType '{ct}' is not supported: SageMaker's Factorization Machines trains on \
             application/x-recordio-protobuf only (sparse data makes CSV a poor fit); write the data with the SDK's \
             record_set() or write_spmatrix_to_sparse_tensor()"
        )));
    }
    let mut rows = SparseRows::new(p.feature_dim);
    for_each_source(paths, name, cfg, |r, shown| {
        read_sparse(r, shown, &mut rows).map_err(|e| e.to_string())
    })
    .map_err(user)?;
    check_rows(&rows, Some(p.predictor)).map_err(user)?;
    Ok(rows)
}

/// Rows, values and (when `labels` names the predictor) labels, checked.
fn check_rows(rows: &SparseRows, labels: Option<Predictor>) -> Result<(), String> {
    if rows.n_rows() == 0 {
        return Err("it has no rows; upload data written by record_set() or write_spmatrix_to_sparse_tensor()".into());
    }
    if let Some(i) = rows.vals.iter().position(|v| !v.is_finite()) {
        let r = rows.offsets.partition_point(|&o| o <= i);
        return Err(format!("row {r} has a non-finite feature value"));
    }
    let Some(predictor) = labels else {
        return Ok(());
    };
    for (r, &l) in rows.labels.iter().enumerate() {
        if !l.is_finite() {
            return Err(format!(
                "row {} has no label; Factorization Machines needs a label per row (label[\"values\"], as \
                 record_set(labels=...) writes it)",
                r + 1
            ));
        }
        if predictor == Predictor::Binary && l != 0.0 && l != 1.0 {
            return Err(format!(
                "row {} has label {l}; binary_classifier labels must be 0 or 1",
                r + 1
            ));
        }
    }
    Ok(())
}

/// The score of one row: `w0 + Σ w_i x_i + 0.5 Σ_f [(Σ_i v_if x_i)^2 − Σ_i v_if^2 x_i^2]`, in
/// O(k·nnz). `table` holds feature `i`'s `[w_i, v_i1..v_ik]` at `i * stride`; `sums` (k wide)
/// gets `Σ_i v_if x_i`, which the factors' gradient needs.
fn score(table: &[f32], stride: usize, w0: f32, cols: &[u32], vals: &[f32], sums: &mut [f32]) -> f32 {
    sums.fill(0.0);
    let k = sums.len();
    let mut linear = 0f32;
    // The squares add up in LANES independent sums (a single running sum would chain every
    // addition and keep the loop from vectorizing).
    let mut squares = [0f32; LANES];
    for (&c, &x) in cols.iter().zip(vals) {
        let at = c as usize * stride;
        let (w, v) = (table[at], &table[at + 1..at + 1 + k]);
        linear += w * x;
        let mut s_chunks = sums.chunks_exact_mut(LANES);
        let mut v_chunks = v.chunks_exact(LANES);
        for (s, v) in (&mut s_chunks).zip(&mut v_chunks) {
            for j in 0..LANES {
                let t = v[j] * x;
                s[j] += t;
                squares[j] += t * t;
            }
        }
        for ((s, &vf), sq) in s_chunks
            .into_remainder()
            .iter_mut()
            .zip(v_chunks.remainder())
            .zip(&mut squares)
        {
            let t = vf * x;
            *s += t;
            *sq += t * t;
        }
    }
    let pairs: f32 = sums.iter().map(|s| s * s).sum::<f32>() - squares.iter().sum::<f32>();
    w0 + linear + 0.5 * pairs
}

/// Independent partial sums in [`score`]'s inner loop: two SSE (one AVX) registers of `f32`.
const LANES: usize = 8;

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// A trained model in memory: the bias and each feature's `[w_i, v_i1..v_ik]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fm {
    /// `predictor_type`.
    pub predictor: Predictor,
    /// `num_factors`.
    pub k: usize,
    /// The bias.
    pub w0: f32,
    /// `feature_dim × (k + 1)`.
    pub table: Vec<f32>,
}

impl Fm {
    /// Each row's score: the probability of label 1 (binary) or the predicted value (regressor).
    pub fn predict(&self, rows: &SparseRows) -> Vec<f32> {
        let k = self.k;
        (0..rows.n_rows())
            .into_par_iter()
            .with_min_len(256)
            .map_init(
                || vec![0f32; k],
                |sums, r| {
                    let (c, v) = rows.row(r);
                    let z = score(&self.table, k + 1, self.w0, c, v, sums);
                    match self.predictor {
                        Predictor::Binary => sigmoid(z),
                        Predictor::Regressor => z,
                    }
                },
            )
            .collect()
    }

    /// The file format: `w` and `V` split out of the table.
    pub fn to_model(&self) -> FmModel {
        let rows = self.table.chunks_exact(self.k + 1);
        FmModel {
            algorithm: "factorization-machines".into(),
            version: 1,
            predictor_type: self.predictor.name().into(),
            feature_dim: self.table.len() / (self.k + 1),
            num_factors: self.k,
            w0: self.w0,
            w: rows.clone().map(|r| r[0]).collect(),
            v: rows.map(|r| r[1..].to_vec()).collect(),
        }
    }
}

/// `factorization-machines-model.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FmModel {
    /// Always `"factorization-machines"`.
    pub algorithm: String,
    /// Format version (1).
    pub version: u32,
    /// `binary_classifier` or `regressor`.
    pub predictor_type: String,
    /// Columns per row.
    pub feature_dim: usize,
    /// Factors per feature.
    pub num_factors: usize,
    /// The bias.
    pub w0: f32,
    /// One linear weight per feature.
    pub w: Vec<f32>,
    /// `feature_dim` rows of `num_factors` factors.
    #[serde(rename = "V")]
    pub v: Vec<Vec<f32>>,
}

/// Metrics over rows, as SageMaker names them.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    n: f64,
    squared_error: f64,
    correct: f64,
    log_loss: f64,
    tp: f64,
    fp: f64,
    fneg: f64,
}

impl Tally {
    fn add(&mut self, predictor: Predictor, score: f32, label: f32) {
        self.n += 1.0;
        let (s, y) = (f64::from(score), f64::from(label));
        match predictor {
            Predictor::Regressor => self.squared_error += (s - y).powi(2),
            Predictor::Binary => {
                let p = s.clamp(1e-12, 1.0 - 1e-12);
                self.log_loss -= y * p.ln() + (1.0 - y) * (1.0 - p).ln();
                let predicted = s >= 0.5;
                match (predicted, y == 1.0) {
                    (true, true) => self.tp += 1.0,
                    (true, false) => self.fp += 1.0,
                    (false, true) => self.fneg += 1.0,
                    (false, false) => {}
                }
                if predicted == (y == 1.0) {
                    self.correct += 1.0;
                }
            }
        }
    }

    /// `(metric as printed, value, is_loss)`.
    fn metrics(&self, predictor: Predictor) -> Vec<(&'static str, f64, bool)> {
        let n = self.n.max(1.0);
        match predictor {
            Predictor::Regressor => vec![("rmse", (self.squared_error / n).sqrt(), true)],
            Predictor::Binary => {
                let f1_den = 2.0 * self.tp + self.fp + self.fneg;
                let f1 = if f1_den > 0.0 { 2.0 * self.tp / f1_den } else { 0.0 };
                vec![
                    ("binary_classification_accuracy", self.correct / n, false),
                    ("binary_classification_cross_entropy", self.log_loss / n, true),
                    ("binary_f_1.000", f1, false),
                ]
            }
        }
    }
}

/// One entry of a mini-batch, for the per-feature update: its column, the batch row and the value.
#[derive(Clone, Copy)]
struct Entry {
    col: u32,
    row: u32,
    x: f32,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;

/// Adam's settings for one step of one term.
#[derive(Clone, Copy)]
struct Step {
    /// `lr · sqrt(1 − β2^t) / (1 − β1^t)`: the bias-corrected learning rate.
    lr: f32,
    wd: f32,
}

/// The optimizer shared by every update of a batch.
struct Adam {
    eps: f32,
    rescale: f32,
    clip: Option<f32>,
}

impl Adam {
    /// Adam updates of `theta` (with its moments `m`, `v`) from the summed gradients `g`, which
    /// it rescales and clips in place. Written over slices so that the compiler vectorizes it
    /// (the square roots and divisions are most of a feature's update).
    fn update(&self, s: Step, theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &mut [f32]) {
        let clip = self.clip.unwrap_or(f32::INFINITY);
        for g in g.iter_mut() {
            *g = (*g * self.rescale).clamp(-clip, clip);
        }
        for (((t, m), v), &g) in theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g.iter()) {
            let g = g + s.wd * *t;
            *m = BETA1 * *m + (1.0 - BETA1) * g;
            *v = BETA2 * *v + (1.0 - BETA2) * g * g;
            *t -= s.lr * *m / (v.sqrt() + self.eps);
        }
    }
}

/// Trains on `rows` (labels checked) from a start drawn with `seed`; `epoch_done(epoch, train
/// metrics)` is called after each epoch with the metrics of the epoch's predictions (each
/// made before its batch's update, as SageMaker reports its running train metrics).
pub fn fit(
    rows: &SparseRows,
    p: &FmParams,
    seed: u64,
    epoch_done: &mut dyn FnMut(usize, Vec<(&'static str, f64, bool)>),
) -> Fm {
    let (d, k) = (p.feature_dim, p.num_factors);
    // Training table: feature i's row is [w_i, v_i1..v_ik | m of those | v of those], so a
    // feature's parameters and Adam moments sit together for its update.
    let width = k + 1;
    let stride = 3 * width;
    let mut table = vec![0f32; d * stride];
    // Each feature's start from its own stream: drawn in parallel, the same for any thread count.
    table
        .par_chunks_mut(stride)
        .with_min_len(256)
        .enumerate()
        .for_each(|(i, row)| {
            let mut rng = Rng::for_round(seed, i + 1);
            row[0] = p.linear.init.draw(&mut rng);
            for v in &mut row[1..width] {
                *v = p.factors.init.draw(&mut rng);
            }
        });
    let mut rng = Rng::for_round(seed, 0);
    let mut w0 = p.bias.init.draw(&mut rng);
    let (mut m0, mut v0) = (0f32, 0f32);
    let adam = Adam {
        eps: p.eps,
        rescale: p.rescale_grad,
        clip: p.clip_gradient,
    };
    let n = rows.n_rows();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut sums = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut t = 0i32;
    for epoch in 0..p.epochs {
        // Fisher-Yates with the job's seed: the same order for any number of threads.
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut tally = Tally::default();
        for batch in order.chunks(p.mini_batch_size) {
            t += 1;
            let corr = (1.0 - BETA2.powi(t)).sqrt() / (1.0 - BETA1.powi(t));
            let step = |term: &Term| Step {
                lr: term.lr * corr,
                wd: term.wd,
            };
            // Phase 1: each row's score, loss gradient and factor sums.
            sums.resize(batch.len() * k, 0f32);
            let table_ref = &table;
            let grads: Vec<(f32, f32)> = batch
                .par_iter()
                .zip(sums.par_chunks_mut(k.max(1)))
                .with_min_len(64)
                .map(|(&r, s)| {
                    let (c, v) = rows.row(r as usize);
                    let z = score(table_ref, stride, w0, c, v, &mut s[..k]);
                    let y = rows.labels[r as usize];
                    match p.predictor {
                        Predictor::Binary => {
                            let prob = sigmoid(z);
                            (prob, prob - y)
                        }
                        Predictor::Regressor => (z, z - y),
                    }
                })
                .collect();
            for (&(s, _), &r) in grads.iter().zip(batch) {
                tally.add(p.predictor, s, rows.labels[r as usize]);
            }
            // Phase 2: the bias, then every touched feature by the one task that owns its row.
            let g0: f32 = grads.iter().map(|g| g.1).sum();
            adam.update(
                step(&p.bias),
                std::slice::from_mut(&mut w0),
                std::slice::from_mut(&mut m0),
                std::slice::from_mut(&mut v0),
                &mut [g0],
            );
            entries.clear();
            for (b, &r) in batch.iter().enumerate() {
                let (c, v) = rows.row(r as usize);
                entries.extend(c.iter().zip(v).map(|(&col, &x)| Entry { col, row: b as u32, x }));
            }
            entries.sort_unstable_by_key(|e| e.col);
            let work = split_rows(&mut table, stride, &entries);
            let (lin, fac) = (step(&p.linear), step(&p.factors));
            let sums = &sums;
            let grads = &grads;
            work.into_par_iter().with_min_len(16).for_each_init(
                || vec![0f32; width],
                |g, (row, group)| {
                    g.fill(0.0);
                    let (params, rest) = row.split_at_mut(width);
                    let (m, v) = rest.split_at_mut(width);
                    let (g_lin, g_fac) = g.split_at_mut(1);
                    for e in group {
                        let dz = grads[e.row as usize].1;
                        let s = &sums[e.row as usize * k..(e.row as usize + 1) * k];
                        g_lin[0] += dz * e.x;
                        let (a, b) = (dz * e.x, dz * e.x * e.x);
                        for ((gf, &sf), &vf) in g_fac.iter_mut().zip(s).zip(&params[1..]) {
                            *gf += a * sf - b * vf;
                        }
                    }
                    adam.update(lin, &mut params[..1], &mut m[..1], &mut v[..1], g_lin);
                    adam.update(fac, &mut params[1..], &mut m[1..], &mut v[1..], g_fac);
                },
            );
        }
        epoch_done(epoch, tally.metrics(p.predictor));
    }
    Fm {
        predictor: p.predictor,
        k,
        w0,
        table: table
            .chunks_exact(stride)
            .flat_map(|r| r[..width].iter().copied())
            .collect(),
    }
}

/// Splits `table` (rows of `stride`) into the rows of the columns in `entries` (sorted by
/// column), each with its entries: disjoint `&mut` rows that tasks update in parallel.
fn split_rows<'t, 'e>(table: &'t mut [f32], stride: usize, entries: &'e [Entry]) -> Vec<(&'t mut [f32], &'e [Entry])> {
    let mut out = Vec::new();
    let mut rest = table;
    let mut rest_start = 0usize;
    let mut i = 0;
    while i < entries.len() {
        let col = entries[i].col as usize;
        // Groups are short (a feature appears in few rows of a batch): a scan, not a search.
        let mut end = i + 1;
        while end < entries.len() && entries[end].col as usize == col {
            end += 1;
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut((col - rest_start) * stride);
        let (row, tail) = tail.split_at_mut(stride);
        out.push((row, &entries[i..end]));
        rest = tail;
        rest_start = col + 1;
        i = end;
    }
    out
}

/// SageMaker's built-in Factorization Machines.
pub struct FactorizationMachines;

/// The registry entry.
pub static FACTORIZATION_MACHINES: FactorizationMachines = FactorizationMachines;

/// `(metric, printed as, is_loss)` of the binary classifier and the regressor.
const METRICS: &[(&str, &str, bool)] = &[
    (
        "binary_classification_accuracy",
        "binary_classification_accuracy",
        false,
    ),
    (
        "binary_classification_cross_entropy",
        "binary_classification_cross_entropy",
        true,
    ),
    ("binary_f_beta", "binary_f_\\S+", false),
    ("rmse", "rmse", true),
];

impl Algorithm for FactorizationMachines {
    fn name(&self) -> &'static str {
        "factorization-machines"
    }

    fn images(&self) -> &'static [&'static str] {
        &["factorization-machines", "kiln/factorization-machines"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[ChannelSpec::TRAIN, ChannelSpec::TEST]
    }

    fn content_types(&self) -> &'static [&'static str] {
        &[RECORDIO, "recordio-protobuf"]
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        FmParams::from_hyperparameters(hp).map(|_| ())
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        let q = "#quality_metric: host=\\S+,";
        let mut out = vec![(
            "train:progress".to_string(),
            "#progress_metric: host=\\S+, completed (\\S+) %".to_string(),
        )];
        for (name, shown, is_loss) in METRICS {
            let kind = if *is_loss { "loss" } else { "score" };
            out.push((
                format!("train:{name}"),
                format!("{q} epoch=\\S+, train {shown} <{kind}>=(\\S+)"),
            ));
            out.push((format!("test:{name}"), format!("{q} test {shown} <{kind}>=(\\S+)")));
        }
        out
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        let (ch, name) = metric.split_once(':')?;
        if !matches!(ch, "train" | "test") {
            return None;
        }
        METRICS.iter().find(|m| m.0 == name).map(|m| !m.2)
    }

    fn usage(&self) -> &'static str {
        USAGE
    }

    fn train(
        &self,
        paths: &JobPaths,
        env: &dyn Fn(&str) -> Option<String>,
        out: &mut (dyn Write + Send),
        err: &mut (dyn Write + Send),
    ) -> Result<(), JobError> {
        train_on_one_host(
            self,
            ALGORITHM,
            paths,
            env,
            FmParams::from_hyperparameters,
            |channels, p, host, threads| train_job(paths, channels, p, host, threads, out, err),
        )
    }

    fn predict(&self, args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
        predict_cmd(args, out)
    }
}

fn train_job(
    paths: &JobPaths,
    channels: &BTreeMap<String, ChannelConfig>,
    p: &FmParams,
    host: &str,
    threads: usize,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let cfg = channels
        .get("train")
        .ok_or_else(|| JobError::User("channel 'train' is required".into()))?;
    let train = read_channel(paths, "train", cfg, p)?;
    let test = channels
        .get("test")
        .map(|cfg| read_channel(paths, "test", cfg, p))
        .transpose()?;
    let _ = writeln!(
        err,
        "kiln factorization-machines: train {} rows x {} features ({} non-zeros); {} factors; {} epochs of batches \
         of {}; {} threads; read in {:.3}s",
        train.n_rows(),
        p.feature_dim,
        train.cols.len(),
        p.num_factors,
        p.epochs,
        p.mini_batch_size,
        threads,
        started.elapsed().as_secs_f64()
    );
    let fit_start = std::time::Instant::now();
    let fm = fit(&train, p, 0x666d, &mut |epoch, metrics| {
        for (metric, value, is_loss) in metrics {
            let kind = if is_loss { "loss" } else { "score" };
            let _ = writeln!(
                out,
                "#quality_metric: host={host}, epoch={epoch}, train {metric} <{kind}>={value}"
            );
        }
        let _ = writeln!(
            out,
            "#progress_metric: host={host}, completed {} % of epochs",
            (epoch + 1) * 100 / p.epochs
        );
    });
    let _ = writeln!(
        err,
        "kiln factorization-machines: fit in {:.3}s",
        fit_start.elapsed().as_secs_f64()
    );
    if let Some(test) = &test {
        let mut tally = Tally::default();
        for (s, &y) in fm.predict(test).iter().zip(&test.labels) {
            tally.add(p.predictor, *s, y);
        }
        let metrics = tally.metrics(p.predictor);
        for (metric, value, _) in &metrics {
            let _ = writeln!(out, "#test_score ({host}) : ('{metric}', {value})");
        }
        for (metric, value, is_loss) in &metrics {
            let kind = if *is_loss { "loss" } else { "score" };
            let _ = writeln!(out, "#quality_metric: host={host}, test {metric} <{kind}>={value}");
        }
    }
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let path = paths.model_dir.join(MODEL_FILE);
    let json = serde_json::to_string(&fm.to_model())
        .map_err(|e| JobError::Internal(format!("could not encode the model: {e}")))?;
    std::fs::write(&path, json).map_err(|e| JobError::Internal(format!("could not write {}: {e}", path.display())))
}

/// Reads a model: `factorization-machines-model.json`, or a directory holding it.
pub fn load_model(path: &Path) -> Result<Fm, JobError> {
    let file: PathBuf = if path.is_dir() {
        path.join(MODEL_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| JobError::User(format!("could not read model {}: {e}", file.display())))?;
    let not_fm = |why: String| {
        JobError::User(format!(
            "{} is not a kiln Factorization Machines model: {why}",
            file.display()
        ))
    };
    let m: FmModel = serde_json::from_str(&text).map_err(|e| not_fm(e.to_string()))?;
    let predictor = match m.predictor_type.as_str() {
        "binary_classifier" => Predictor::Binary,
        "regressor" => Predictor::Regressor,
        other => return Err(not_fm(format!("predictor_type '{other}'"))),
    };
    if m.algorithm != "factorization-machines"
        || m.feature_dim == 0
        || m.w.len() != m.feature_dim
        || m.v.len() != m.feature_dim
        || m.v.iter().any(|r| r.len() != m.num_factors)
    {
        return Err(not_fm(format!(
            "algorithm '{}', feature_dim {}, {} linear weights, {} factor rows of num_factors {}",
            m.algorithm,
            m.feature_dim,
            m.w.len(),
            m.v.len(),
            m.num_factors
        )));
    }
    let table =
        m.w.iter()
            .zip(&m.v)
            .flat_map(|(w, v)| std::iter::once(*w).chain(v.iter().copied()))
            .collect();
    Ok(Fm {
        predictor,
        k: m.num_factors,
        w0: m.w0,
        table,
    })
}

/// The rows of `kiln algo factorization-machines predict`'s data.
fn read_predict_rows(a: &PredictArgs, feature_dim: usize) -> Result<SparseRows, JobError> {
    let recordio = match a.content_type.as_deref() {
        Some(c) => is_recordio(c),
        None => a
            .data
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "rec" | "pbr" | "recordio")),
    };
    if !recordio {
        let dense = crate::dense_input::read_predict_data(
            &a.data,
            a.content_type.as_deref(),
            feature_dim,
            ALGORITHM,
            a.has_label,
        )?;
        let mut rows = SparseRows::new(feature_dim);
        for r in dense.values.chunks_exact(feature_dim) {
            rows.push_dense(r, f32::NAN);
        }
        return Ok(rows);
    }
    let shown = a.data.display().to_string();
    let user = |m: String| JobError::User(format!("{shown}: {m}"));
    let files = if a.data.is_dir() {
        list_files(&a.data).map_err(|e| user(e.to_string()))?
    } else {
        vec![a.data.clone()]
    };
    let mut rows = SparseRows::new(feature_dim);
    for_each_file(&a.data, &files, |r, shown| {
        read_sparse(r, shown, &mut rows).map_err(|e| e.to_string())
    })
    .map_err(user)?;
    check_rows(&rows, None).map_err(user)?;
    Ok(rows)
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let a = PredictArgs::parse(args, USAGE, true)?;
    let fm = load_model(&a.model)?;
    let rows = read_predict_rows(&a, fm.table.len() / (fm.k + 1))?;
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(a.nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let scores = pool.install(|| fm.predict(&rows));
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for s in &scores {
            match fm.predictor {
                Predictor::Binary => writeln!(w, "{},{s}", u8::from(*s >= 0.5))?,
                Predictor::Regressor => writeln!(w, "{s}")?,
            }
        }
        w.flush()
    };
    match &a.output {
        Some(path) => {
            let mut f = std::fs::File::create(path)
                .map_err(|e| JobError::User(format!("could not create {}: {e}", path.display())))?;
            write(&mut f)
        }
        None => write(out),
    }
    .map_err(|e| JobError::Internal(format!("could not write predictions: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const BASE: &[(&str, &str)] = &[
        ("feature_dim", "20"),
        ("num_factors", "4"),
        ("predictor_type", "binary_classifier"),
    ];

    fn with(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m = hp(BASE);
        m.extend(hp(extra));
        m
    }

    #[test]
    fn hyperparameters_defaults_and_errors() {
        let p = FmParams::from_hyperparameters(&hp(BASE)).unwrap();
        assert_eq!((p.feature_dim, p.num_factors, p.predictor), (20, 4, Predictor::Binary));
        assert_eq!((p.epochs, p.mini_batch_size, p.eps), (1, 1000, 1e-8));
        assert_eq!(p.rescale_grad, 1.0 / 1000.0);
        assert_eq!((p.bias.lr, p.linear.lr, p.factors.lr), (0.1, 0.001, 0.0001));
        assert_eq!((p.bias.wd, p.linear.wd, p.factors.wd), (0.01, 0.001, 0.00001));
        assert_eq!(
            (p.bias.init, p.linear.init, p.factors.init),
            (Init::Normal(0.01), Init::Normal(0.01), Init::Normal(0.001))
        );
        assert_eq!(p.clip_gradient, None);
        let p = FmParams::from_hyperparameters(&with(&[
            ("factors_init_method", "uniform"),
            ("factors_init_scale", "0.5"),
            ("bias_init_method", "constant"),
            ("bias_init_value", "-2"),
            ("clip_gradient", "3"),
            ("epochs", "5.0"),
        ]))
        .unwrap();
        assert_eq!(
            (p.factors.init, p.bias.init),
            (Init::Uniform(0.5), Init::Constant(-2.0))
        );
        assert_eq!((p.clip_gradient, p.epochs), (Some(3.0), 5));
        let err = |m: BTreeMap<String, String>| FmParams::from_hyperparameters(&m).unwrap_err().to_string();
        assert_eq!(
            err(hp(&[("feature_dim", "20"), ("num_factors", "4")])),
            "Hyperparameter 'predictor_type' is required by Factorization Machines: set it to one of: \
             binary_classifier, regressor"
        );
        assert!(
            err(hp(&[("feature_dim", "20"), ("predictor_type", "regressor")])).contains("'num_factors' is required")
        );
        assert!(err(with(&[("predictor_type", "multiclass_classifier")])).contains("binary_classifier, regressor"));
        assert_eq!(
            err(with(&[("linear_lr", "-0.1")])),
            "Hyperparameter 'linear_lr': value '-0.1' is out of range: it must be a non-negative number"
        );
        assert!(err(with(&[("factors_wd", "abc")])).contains("'factors_wd': value 'abc' is not a number"));
        assert!(err(with(&[("bias_init_method", "xavier")])).contains("not one of: normal, uniform, constant"));
        assert!(err(with(&[("num_factors", "0")])).contains("integer >= 1"));
        assert!(err(with(&[("learning_rate", "0.1")])).contains("'learning_rate' is not a Factorization Machines"));
        assert!(err(with(&[("feature_dim", "10000000"), ("num_factors", "1000")])).contains("lower num_factors"));
    }

    /// The score by its definition: every pair i < j, O(k·d²).
    fn naive(fm: &Fm, x: &[f32]) -> f32 {
        let k = fm.k;
        let row = |i: usize| &fm.table[i * (k + 1)..(i + 1) * (k + 1)];
        let mut z = fm.w0;
        for i in 0..x.len() {
            z += row(i)[0] * x[i];
            for j in i + 1..x.len() {
                let dot: f32 = row(i)[1..].iter().zip(&row(j)[1..]).map(|(a, b)| a * b).sum();
                z += dot * x[i] * x[j];
            }
        }
        z
    }

    #[test]
    fn the_linear_time_score_equals_the_pairwise_definition() {
        let (d, k) = (12, 5);
        let mut rng = Rng::new(7);
        let fm = Fm {
            predictor: Predictor::Regressor,
            k,
            w0: 0.3,
            table: (0..d * (k + 1)).map(|_| Init::Normal(1.0).draw(&mut rng)).collect(),
        };
        let mut rows = SparseRows::new(d);
        let mut dense = Vec::new();
        for r in 0..50 {
            let x: Vec<f32> = (0..d)
                .map(|j| {
                    if (r + j) % 3 == 0 {
                        Init::Normal(2.0).draw(&mut rng)
                    } else {
                        0.0
                    }
                })
                .collect();
            rows.push_dense(&x, 0.0);
            dense.push(x);
        }
        for (s, x) in fm.predict(&rows).iter().zip(&dense) {
            let want = naive(&fm, x);
            assert!((s - want).abs() <= 1e-4 * want.abs().max(1.0), "{s} vs {want}");
        }
    }

    /// Rows one-hot in two blocks of `m` categories (a, then b): `2m` columns, two non-zeros.
    /// The label depends on the pair only: binary `(a + b)` even, or a regressor's `u_a u_b` (a
    /// rank-one interaction with zero mean per category, which no linear model can fit).
    fn pairs(n: usize, m: usize, predictor: Predictor, seed: u64) -> SparseRows {
        let mut rng = Rng::new(seed);
        let u: Vec<f32> = (0..m).map(|i| if i % 2 == 0 { 1.5 } else { -1.5 }).collect();
        let mut rows = SparseRows::new(2 * m);
        for _ in 0..n {
            let (a, b) = (rng.below(m), rng.below(m));
            rows.cols.extend([a as u32, (m + b) as u32]);
            rows.vals.extend([1.0, 1.0]);
            rows.offsets.push(rows.cols.len());
            rows.labels.push(match predictor {
                Predictor::Binary => f32::from((a + b) % 2 == 0),
                Predictor::Regressor => u[a] * u[b] + 0.1 * Init::Normal(1.0).draw(&mut rng),
            });
        }
        rows
    }

    fn evaluate(fm: &Fm, rows: &SparseRows) -> f64 {
        let mut t = Tally::default();
        for (s, &y) in fm.predict(rows).iter().zip(&rows.labels) {
            t.add(fm.predictor, *s, y);
        }
        t.metrics(fm.predictor)[0].1
    }

    fn train(extra: &[(&str, &str)], rows: &SparseRows) -> Fm {
        let mut m = hp(&[
            ("feature_dim", "20"),
            ("num_factors", "4"),
            ("epochs", "20"),
            ("mini_batch_size", "50"),
            ("linear_lr", "0.05"),
            ("factors_lr", "0.05"),
            ("factors_init_sigma", "0.1"),
        ]);
        m.extend(hp(extra));
        let p = FmParams::from_hyperparameters(&m).unwrap();
        fit(rows, &p, 11, &mut |_, _| {})
    }

    #[test]
    fn learns_pairwise_interactions_a_linear_model_cannot() {
        let train_rows = pairs(4000, 10, Predictor::Binary, 1);
        let test_rows = pairs(1000, 10, Predictor::Binary, 2);
        let fm = train(&[("predictor_type", "binary_classifier")], &train_rows);
        let fm_acc = evaluate(&fm, &test_rows);
        // The same job with the factors frozen at 0: a linear model.
        let linear = train(
            &[
                ("predictor_type", "binary_classifier"),
                ("factors_lr", "0"),
                ("factors_init_method", "constant"),
            ],
            &train_rows,
        );
        let linear_acc = evaluate(&linear, &test_rows);
        assert!(fm_acc > 0.98, "FM accuracy {fm_acc}");
        assert!(linear_acc < 0.6, "linear accuracy {linear_acc}");

        let train_rows = pairs(4000, 10, Predictor::Regressor, 3);
        let test_rows = pairs(1000, 10, Predictor::Regressor, 4);
        let fm = train(&[("predictor_type", "regressor")], &train_rows);
        let linear = train(
            &[
                ("predictor_type", "regressor"),
                ("factors_lr", "0"),
                ("factors_init_method", "constant"),
            ],
            &train_rows,
        );
        let (fm_rmse, linear_rmse) = (evaluate(&fm, &test_rows), evaluate(&linear, &test_rows));
        // The noise's standard deviation is 0.1; the interaction's is 2.25.
        assert!(fm_rmse < 0.2, "FM rmse {fm_rmse}");
        assert!(linear_rmse > 2.0, "linear rmse {linear_rmse}");
    }

    #[test]
    fn the_model_does_not_depend_on_the_thread_count_and_round_trips() {
        let rows = pairs(2000, 10, Predictor::Binary, 5);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| train(&[("predictor_type", "binary_classifier"), ("epochs", "2")], &rows))
        };
        let one = run(1);
        assert_eq!(one, run(3));
        let dir = std::env::temp_dir().join(format!("kiln-fm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MODEL_FILE), serde_json::to_string(&one.to_model()).unwrap()).unwrap();
        assert_eq!(load_model(&dir).unwrap(), one);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_sdk_sparse_writer_output_sparse() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sparse-f32-labels.rec");
        let mut rows = SparseRows::new(4);
        read_sparse(std::fs::File::open(&path).unwrap(), "sparse", &mut rows).unwrap();
        assert_eq!(rows.n_rows(), 3);
        assert_eq!(rows.row(0), (&[0u32, 1, 3][..], &[1.5f32, -2.0, 3.25][..]));
        assert_eq!(rows.labels, [0.0, 1.0, 2.0]);
        let e = check_rows(&rows, Some(Predictor::Binary)).unwrap_err();
        assert!(e.contains("row 3 has label 2"), "{e}");
        let e = read_sparse(std::fs::File::open(&path).unwrap(), "sparse", &mut SparseRows::new(5)).unwrap_err();
        assert!(e.what.contains("has 4 features, expected 5 (feature_dim)"), "{e}");
    }

    #[test]
    fn metric_definitions_name_every_printed_metric() {
        let defs = FACTORIZATION_MACHINES.metric_definitions();
        let find = |n: &str| defs.iter().find(|d| d.0 == n).map(|d| d.1.clone()).unwrap();
        let re = find("test:binary_f_beta");
        assert_eq!(re, "#quality_metric: host=\\S+, test binary_f_\\S+ <score>=(\\S+)");
        assert_eq!(find("test:rmse"), "#quality_metric: host=\\S+, test rmse <loss>=(\\S+)");
        assert_eq!(FACTORIZATION_MACHINES.objective_is_maximize("test:rmse"), Some(false));
        assert_eq!(
            FACTORIZATION_MACHINES.objective_is_maximize("test:binary_classification_accuracy"),
            Some(true)
        );
        assert_eq!(
            FACTORIZATION_MACHINES.objective_is_maximize("test:binary_classification_cross_entropy"),
            Some(false)
        );
        assert_eq!(FACTORIZATION_MACHINES.objective_is_maximize("validation:rmse"), None);
    }
}
