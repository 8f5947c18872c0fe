//! SageMaker's built-in Linear Learner (`linear-learner` images): `num_models` linear models
//! trained side by side by mini-batch SGD/Adam/RMSProp on normalized data, each with its own
//! learning rate and regularization; every epoch each is evaluated on `validation` (else
//! `train`), the best (model, epoch) is kept and training stops early when the selection
//! criterion stops improving. A binary classifier's threshold is then chosen by
//! `binary_classifier_model_selection_criteria`. The model is `model/linear-learner-model.json`
//! with the weights in the original feature space (`docs/builtins.md` documents it); `kiln algo
//! linear-learner predict` scores rows with it.
//!
//! Speed: the training rows are normalized and shuffled once into one row-major `f32` copy; the
//! models are split into one group per thread, and each group walks the mini-batches once per
//! epoch, updating all its models on a batch while it is in cache. Single-output models
//! (binary, regressor) train eight at a time in a [`tile`] of interleaved weights: one FMA per
//! feature and row advances all eight dot products, and one more their gradient sums.
//! Multi-output (multiclass) models take two passes over the batch per output (the dot
//! products, then the gradient `axpy`). The per-epoch threshold search bins scores in a
//! histogram (one pass); only the final model's threshold is found exactly, with one (parallel)
//! sort.
//!
//! A regressor with squared loss (and no `l1` or explicit learning rate) skips SGD: the normal
//! equations are accumulated in one pass and solved exactly per candidate `wd`
//! ([`solves_exactly`]).

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::container::{ChannelConfig, JobError, JobPaths, MODEL_CHANNEL, thread_count};
use crate::dense_input::{self, Want, read_predict_data};
use crate::linalg::Gram;
use crate::protobuf::DenseRows;
use crate::registry::{Algorithm, ChannelSpec, PredictArgs, read_prior_model, train_on_one_host};
use crate::rng::Rng;

mod tile;

/// The model file in `model/` (and so at the root of model.tar.gz).
pub const MODEL_FILE: &str = "linear-learner-model.json";

const USAGE: &str = "\
usage: kiln algo linear-learner train [--ml-root DIR]
       kiln algo linear-learner predict --model FILE|DIR --data PATH [--content-type TYPE]
                                        [--has-label] [--output FILE] [--nthread N]

train    runs the SageMaker Linear Learner container contract under DIR (default /opt/ml):
         channels 'train' (required), 'validation' and 'test', application/x-recordio-protobuf
         (the default; the label in the record's label map) or text/csv (label first);
         hyperparameter predictor_type is required (binary_classifier, multiclass_classifier,
         regressor). Writes model/linear-learner-model.json and prints SageMaker's
         '#quality_metric: ...' lines.
predict  prints per row 'predicted_label,score' (binary_classifier), 'predicted_label,score_0,...'
         (multiclass_classifier) or 'score' (regressor). --model is linear-learner-model.json
         or the directory holding it; TYPE defaults to text/csv (application/x-recordio-protobuf
         for .rec/.pbr files); --has-label: CSV rows start with a label column to skip.";

/// What the model predicts (`predictor_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictorType {
    /// Labels 0 and 1; a score and a threshold.
    Binary,
    /// Labels 0..num_classes-1; one score per class.
    Multiclass,
    /// A real number.
    Regressor,
}

impl PredictorType {
    fn name(self) -> &'static str {
        match self {
            PredictorType::Binary => "binary_classifier",
            PredictorType::Multiclass => "multiclass_classifier",
            PredictorType::Regressor => "regressor",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "binary_classifier" => Some(PredictorType::Binary),
            "multiclass_classifier" => Some(PredictorType::Multiclass),
            "regressor" => Some(PredictorType::Regressor),
            _ => None,
        }
    }
}

/// The training loss (`loss`), with its parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Binary cross-entropy on the logit.
    Logistic,
    /// `max(0, margin - s z)` with `s = 2y - 1`.
    Hinge(f32),
    /// Multiclass cross-entropy on the softmax.
    Softmax,
    /// `(z - y)^2`.
    Squared,
    /// `|z - y|`.
    Absolute,
    /// Huber with `huber_delta`.
    Huber(f32),
    /// `max(|z - y| - eps, 0)^2`.
    EpsSquared(f32),
    /// `max(|z - y| - eps, 0)`.
    EpsAbsolute(f32),
    /// Pinball loss at `quantile`.
    Quantile(f32),
}

impl Loss {
    /// The SageMaker name of the `loss` hyperparameter value.
    fn name(self) -> &'static str {
        match self {
            Loss::Logistic => "logistic",
            Loss::Hinge(_) => "hinge_loss",
            Loss::Softmax => "softmax_loss",
            Loss::Squared => "squared_loss",
            Loss::Absolute => "absolute_loss",
            Loss::Huber(_) => "huber_loss",
            Loss::EpsSquared(_) => "eps_insensitive_squared_loss",
            Loss::EpsAbsolute(_) => "eps_insensitive_absolute_loss",
            Loss::Quantile(_) => "quantile_loss",
        }
    }

    /// The name in the `<channel> <name> <loss>=` log lines (the metric regexes match `\S+_objective`).
    fn objective_name(self) -> &'static str {
        match self {
            Loss::Logistic => "binary_classification_cross_entropy_objective",
            Loss::Hinge(_) => "binary_classification_hinge_loss_objective",
            Loss::Softmax => "multiclass_cross_entropy_objective",
            Loss::Squared => "square_loss_objective",
            Loss::Absolute => "absolute_loss_objective",
            Loss::Huber(_) => "huber_loss_objective",
            Loss::EpsSquared(_) => "eps_insensitive_squared_loss_objective",
            Loss::EpsAbsolute(_) => "eps_insensitive_absolute_loss_objective",
            Loss::Quantile(_) => "quantile_loss_objective",
        }
    }

    /// Loss and its derivative in `z` for one output (every loss but softmax).
    #[inline]
    fn value_grad(self, z: f32, y: f32) -> (f32, f32) {
        match self {
            Loss::Logistic => {
                let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
                (softplus - y * z, sigmoid(z) - y)
            }
            Loss::Hinge(margin) => {
                let s = 2.0 * y - 1.0;
                let m = margin - s * z;
                if m > 0.0 { (m, -s) } else { (0.0, 0.0) }
            }
            Loss::Softmax => (0.0, 0.0),
            Loss::Squared => {
                let r = z - y;
                (r * r, 2.0 * r)
            }
            Loss::Absolute => {
                let r = z - y;
                (r.abs(), r.signum())
            }
            Loss::Huber(delta) => {
                let r = z - y;
                if r.abs() <= delta {
                    (0.5 * r * r, r)
                } else {
                    (delta * (r.abs() - 0.5 * delta), delta * r.signum())
                }
            }
            Loss::EpsSquared(eps) => {
                let r = z - y;
                let e = (r.abs() - eps).max(0.0);
                (e * e, 2.0 * e * r.signum())
            }
            Loss::EpsAbsolute(eps) => {
                let r = z - y;
                if r.abs() > eps {
                    (r.abs() - eps, r.signum())
                } else {
                    (0.0, 0.0)
                }
            }
            Loss::Quantile(q) => {
                let r = y - z;
                if r >= 0.0 {
                    (q * r, -q)
                } else {
                    ((q - 1.0) * r, 1.0 - q)
                }
            }
        }
    }
}

/// `optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimizer {
    /// SGD with `momentum`.
    Sgd,
    /// Adam with `beta_1`, `beta_2`.
    Adam,
    /// RMSProp (decay `beta_2`).
    RmsProp,
}

/// `binary_classifier_model_selection_criteria`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// Accuracy at the best threshold.
    Accuracy,
    /// F-beta at the best threshold.
    FBeta,
    /// Precision at the threshold whose recall is at least `target_recall`.
    PrecisionAtTargetRecall,
    /// Recall at the threshold whose precision is at least `target_precision`.
    RecallAtTargetPrecision,
    /// The objective loss (threshold 0.5 on the probability, 0 on a hinge score).
    LossFunction,
}

impl Criterion {
    fn name(self) -> &'static str {
        match self {
            Criterion::Accuracy => "accuracy",
            Criterion::FBeta => "f_beta",
            Criterion::PrecisionAtTargetRecall => "precision_at_target_recall",
            Criterion::RecallAtTargetPrecision => "recall_at_target_precision",
            Criterion::LossFunction => "loss_function",
        }
    }
}

/// How positive examples are weighted (`positive_example_weight_mult`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PositiveWeight {
    /// A fixed multiplier.
    Value(f32),
    /// Negatives / positives, so both classes weigh the same (`balanced`; kiln's `auto` too).
    Balanced,
}

/// Linear Learner hyperparameters, checked: names, defaults and ranges as SageMaker documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearParams {
    /// `predictor_type` (required).
    pub predictor_type: PredictorType,
    /// `feature_dim`: `None` is `auto` (the data's width).
    pub feature_dim: Option<usize>,
    /// `num_classes` (multiclass: required, 3..=1,000,000; else 1 or 2 outputs).
    pub num_classes: usize,
    /// `epochs` (15).
    pub epochs: usize,
    /// `mini_batch_size` (1000).
    pub mini_batch_size: usize,
    /// `num_models`: `None` is `auto` ([`AUTO_NUM_MODELS`]; 1 in a tuning job).
    pub num_models: Option<usize>,
    /// `learning_rate`: `None` is `auto`.
    pub learning_rate: Option<f32>,
    /// `l1`: `None` is `auto`.
    pub l1: Option<f32>,
    /// `wd`: `None` is `auto`.
    pub wd: Option<f32>,
    /// `optimizer` (`auto` is adam).
    pub optimizer: Optimizer,
    /// `loss` (`auto`: logistic, softmax_loss or squared_loss by predictor type).
    pub loss: Loss,
    /// `momentum` (sgd; `auto` 0.9).
    pub momentum: f32,
    /// `beta_1` (`auto` 0.9).
    pub beta_1: f32,
    /// `beta_2` (`auto` 0.999).
    pub beta_2: f32,
    /// `bias_lr_mult` (`auto` 1).
    pub bias_lr_mult: f32,
    /// `bias_wd_mult` (`auto` 0: the bias is not regularized).
    pub bias_wd_mult: f32,
    /// `use_bias` (true).
    pub use_bias: bool,
    /// `normalize_data` (true).
    pub normalize_data: bool,
    /// `unbias_data` (`auto`: `use_bias`).
    pub unbias_data: bool,
    /// `normalize_label` (`auto`: regressors only; ignored for classifiers).
    pub normalize_label: bool,
    /// `unbias_label` (`auto`: regressors with `use_bias`).
    pub unbias_label: bool,
    /// `num_point_for_scaler` (10000).
    pub num_point_for_scaler: usize,
    /// `early_stopping_patience` (3).
    pub early_stopping_patience: usize,
    /// `early_stopping_tolerance` (0.001).
    pub early_stopping_tolerance: f64,
    /// `binary_classifier_model_selection_criteria` (accuracy).
    pub criterion: Criterion,
    /// `target_recall` (0.8).
    pub target_recall: f64,
    /// `target_precision` (0.8).
    pub target_precision: f64,
    /// `f_beta` (1.0).
    pub f_beta: f64,
    /// `positive_example_weight_mult` (1.0).
    pub positive_weight: PositiveWeight,
    /// `balance_multiclass_weights` (false).
    pub balance_multiclass_weights: bool,
    /// `accuracy_top_k` (3).
    pub accuracy_top_k: usize,
    /// `num_calibration_samples`: `None` is `auto` (every row of the selection channel).
    pub num_calibration_samples: Option<usize>,
    /// `init_method` normal (else uniform).
    pub init_normal: bool,
    /// `init_scale` (0.07).
    pub init_scale: f32,
    /// `init_sigma` (0.01).
    pub init_sigma: f32,
    /// `init_bias`: `None` starts the bias at the label's prior (kiln's choice; SageMaker: 0).
    pub init_bias: Option<f32>,
    /// `use_lr_scheduler` (true).
    pub use_lr_scheduler: bool,
    /// `lr_scheduler_step`: `None` is `auto` (a tenth of an epoch's batches).
    pub lr_scheduler_step: Option<usize>,
    /// `lr_scheduler_factor` (`auto` 0.99).
    pub lr_scheduler_factor: f32,
    /// `lr_scheduler_minimum_lr` (`auto` 1e-5).
    pub lr_scheduler_minimum_lr: f32,
}

/// Models trained side by side when `num_models` is `auto`. SageMaker trains 32 on its
/// instances; on a shared CPU 8 cover the learning-rate x weight-decay grid below at a quarter
/// of the cost.
pub const AUTO_NUM_MODELS: usize = 8;

/// The `auto` learning rate (on normalized features): Adam and RMSProp `0.1 / sqrt(batches per
/// epoch)` in [0.005, 0.1], so that a small data set (few steps an epoch) still converges in its
/// epochs and a large one takes small, quiet steps; SGD ten times that.
fn auto_learning_rate(o: Optimizer, batches: usize) -> f32 {
    let adaptive = (0.1 / (batches.max(1) as f32).sqrt()).clamp(0.005, 0.1);
    match o {
        Optimizer::Adam | Optimizer::RmsProp => adaptive,
        Optimizer::Sgd => 10.0 * adaptive,
    }
}

/// Multipliers of the base learning rate, one per model (cycled).
const LR_SPREAD: [f32; 4] = [1.0, 3.0, 0.3, 10.0];
/// `wd` of each group of four models when `wd` is `auto`; with a given `wd`, multipliers of it.
const WD_AUTO: [f32; 4] = [0.0, 1e-4, 1e-3, 1e-2];
const WD_SPREAD: [f32; 4] = [1.0, 0.1, 10.0, 0.01];

/// Hyperparameters the SDK or the platform send that Linear Learner accepts and ignores.
const IGNORED: &[&str] = &["force_dense", "_tuning_objective_metric", "_kfold", "_num_kfold"];

const KNOWN: &[&str] = &[
    "predictor_type",
    "feature_dim",
    "num_classes",
    "epochs",
    "mini_batch_size",
    "num_models",
    "learning_rate",
    "l1",
    "wd",
    "optimizer",
    "loss",
    "momentum",
    "beta_1",
    "beta_2",
    "bias_lr_mult",
    "bias_wd_mult",
    "use_bias",
    "normalize_data",
    "unbias_data",
    "normalize_label",
    "unbias_label",
    "num_point_for_scaler",
    "early_stopping_patience",
    "early_stopping_tolerance",
    "binary_classifier_model_selection_criteria",
    "target_recall",
    "target_precision",
    "f_beta",
    "positive_example_weight_mult",
    "balance_multiclass_weights",
    "accuracy_top_k",
    "num_calibration_samples",
    "init_method",
    "init_scale",
    "init_sigma",
    "init_bias",
    "use_lr_scheduler",
    "lr_scheduler_step",
    "lr_scheduler_factor",
    "lr_scheduler_minimum_lr",
    "huber_delta",
    "loss_insensitivity",
    "margin",
    "quantile",
];

fn bad(name: &str, value: &str, what: &str) -> JobError {
    JobError::User(format!("Hyperparameter '{name}': value '{value}' {what}"))
}

/// The hyperparameter map with SageMaker's value spellings undone (quotes, case of keywords).
struct Hp<'a>(&'a BTreeMap<String, String>);

impl Hp<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim().trim_matches('"'))
    }

    /// `None` when absent or `auto`.
    fn given(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.eq_ignore_ascii_case("auto"))
    }

    fn int(&self, name: &str, min: usize, max: usize, default: usize) -> Result<usize, JobError> {
        match self.given(name) {
            None => Ok(default),
            Some(v) => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(name, v, &format!("is not an integer >= {min}")))?;
                if n < min || n > max {
                    let range = if max == usize::MAX {
                        format!(">= {min}")
                    } else {
                        format!("in [{min}, {max}]")
                    };
                    return Err(bad(name, v, &format!("is out of range: it must be an integer {range}")));
                }
                Ok(n)
            }
        }
    }

    fn auto_int(&self, name: &str, min: usize) -> Result<Option<usize>, JobError> {
        match self.given(name) {
            None => Ok(None),
            Some(_) => self.int(name, min, usize::MAX, 0).map(Some),
        }
    }

    /// A float in `[lo, hi]` (`lo_open`: `lo` itself excluded); `None` when absent or `auto`.
    fn float(&self, name: &str, lo: f64, lo_open: bool, hi: f64) -> Result<Option<f64>, JobError> {
        let Some(v) = self.given(name) else {
            return Ok(None);
        };
        let range = match (lo_open, hi.is_finite()) {
            (true, true) => format!("in ({lo}, {hi}]"),
            (false, true) => format!("in [{lo}, {hi}]"),
            (true, false) => format!("> {lo}"),
            (false, false) => format!(">= {lo}"),
        };
        let x: f64 = v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| bad(name, v, &format!("is not a number {range}")))?;
        if x < lo || (lo_open && x == lo) || x > hi {
            return Err(bad(name, v, &format!("is out of range: it must be a number {range}")));
        }
        Ok(Some(x))
    }

    /// `true`/`false` (any case), `auto` → `None`.
    fn boolean(&self, name: &str) -> Result<Option<bool>, JobError> {
        match self.given(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(v) => Err(bad(name, v, "is not one of: true, false")),
        }
    }
}

impl LinearParams {
    /// Parses `hyperparameters.json`'s map.
    pub fn from_hyperparameters(hp: &BTreeMap<String, String>) -> Result<Self, JobError> {
        for name in hp.keys() {
            if !KNOWN.contains(&name.as_str()) && !IGNORED.contains(&name.as_str()) && !name.starts_with("sagemaker_") {
                return Err(JobError::User(format!(
                    "Hyperparameter '{name}' is not a Linear Learner hyperparameter; known: {}",
                    KNOWN.join(", ")
                )));
            }
        }
        let h = Hp(hp);
        let predictor_type = match h.get("predictor_type") {
            None => {
                return Err(JobError::User(
                    "Hyperparameter 'predictor_type' is required by Linear Learner: set it to \
                     binary_classifier, multiclass_classifier or regressor"
                        .into(),
                ));
            }
            Some(v) => PredictorType::parse(v).ok_or_else(|| {
                bad(
                    "predictor_type",
                    v,
                    "is not one of: binary_classifier, multiclass_classifier, regressor",
                )
            })?,
        };
        let num_classes = match predictor_type {
            PredictorType::Multiclass => {
                if h.given("num_classes").is_none() {
                    return Err(JobError::User(
                        "Hyperparameter 'num_classes' is required when predictor_type is \
                         multiclass_classifier: set it to the number of classes (3 to 1000000)"
                            .into(),
                    ));
                }
                h.int("num_classes", 3, 1_000_000, 3)?
            }
            PredictorType::Binary => 2,
            PredictorType::Regressor => 1,
        };
        let feature_dim = h.auto_int("feature_dim", 1)?;
        let optimizer = match h.given("optimizer") {
            None | Some("adam") => Optimizer::Adam,
            Some("sgd") => Optimizer::Sgd,
            Some("rmsprop") => Optimizer::RmsProp,
            Some(v) => return Err(bad("optimizer", v, "is not one of: auto, adam, sgd, rmsprop")),
        };
        let positive = |name: &str, default: f64| -> Result<f32, JobError> {
            Ok(h.float(name, 0.0, true, f64::INFINITY)?.unwrap_or(default) as f32)
        };
        let loss = parse_loss(
            &h,
            predictor_type,
            positive("margin", 1.0)?,
            positive("huber_delta", 1.0)?,
            positive("loss_insensitivity", 0.01)?,
            h.float("quantile", 0.0, true, 1.0)?.unwrap_or(0.5) as f32,
        )?;
        let criterion = match h.given("binary_classifier_model_selection_criteria") {
            None | Some("accuracy") => Criterion::Accuracy,
            Some("f_beta") => Criterion::FBeta,
            Some("precision_at_target_recall") => Criterion::PrecisionAtTargetRecall,
            Some("recall_at_target_precision") => Criterion::RecallAtTargetPrecision,
            Some("loss_function") => Criterion::LossFunction,
            Some(v) => {
                return Err(bad(
                    "binary_classifier_model_selection_criteria",
                    v,
                    "is not one of: accuracy, f_beta, precision_at_target_recall, \
                     recall_at_target_precision, loss_function",
                ));
            }
        };
        let positive_weight = match h.get("positive_example_weight_mult") {
            None => PositiveWeight::Value(1.0),
            Some(v) if v.eq_ignore_ascii_case("balanced") || v.eq_ignore_ascii_case("auto") => PositiveWeight::Balanced,
            Some(_) => PositiveWeight::Value(
                h.float("positive_example_weight_mult", 0.0, true, f64::INFINITY)?
                    .unwrap_or(1.0) as f32,
            ),
        };
        let use_bias = h.boolean("use_bias")?.unwrap_or(true);
        let regressor = predictor_type == PredictorType::Regressor;
        let init_normal = match h.given("init_method") {
            None | Some("uniform") => false,
            Some("normal") => true,
            Some(v) => return Err(bad("init_method", v, "is not one of: uniform, normal")),
        };
        let tuning = hp.contains_key("_tuning_objective_metric");
        Ok(Self {
            predictor_type,
            feature_dim,
            num_classes,
            epochs: h.int("epochs", 1, usize::MAX, 15)?,
            mini_batch_size: h.int("mini_batch_size", 1, usize::MAX, 1000)?,
            // SageMaker turns its internal tuning off in a tuning job: one model.
            num_models: if tuning { Some(1) } else { h.auto_int("num_models", 1)? },
            learning_rate: h.float("learning_rate", 0.0, true, f64::INFINITY)?.map(|x| x as f32),
            l1: h.float("l1", 0.0, false, f64::INFINITY)?.map(|x| x as f32),
            wd: h.float("wd", 0.0, false, f64::INFINITY)?.map(|x| x as f32),
            optimizer,
            loss,
            momentum: h.float("momentum", 0.0, false, 1.0)?.unwrap_or(0.9) as f32,
            beta_1: h.float("beta_1", 0.0, false, 1.0)?.unwrap_or(0.9) as f32,
            beta_2: h.float("beta_2", 0.0, false, 1.0)?.unwrap_or(0.999) as f32,
            bias_lr_mult: positive("bias_lr_mult", 1.0)?,
            bias_wd_mult: h.float("bias_wd_mult", 0.0, false, f64::INFINITY)?.unwrap_or(0.0) as f32,
            use_bias,
            normalize_data: h.boolean("normalize_data")?.unwrap_or(true),
            unbias_data: h.boolean("unbias_data")?.unwrap_or(use_bias),
            normalize_label: regressor && h.boolean("normalize_label")?.unwrap_or(true),
            unbias_label: regressor && h.boolean("unbias_label")?.unwrap_or(use_bias) && use_bias,
            num_point_for_scaler: h.int("num_point_for_scaler", 1, usize::MAX, 10_000)?,
            early_stopping_patience: h.int("early_stopping_patience", 1, usize::MAX, 3)?,
            early_stopping_tolerance: h
                .float("early_stopping_tolerance", 0.0, true, f64::INFINITY)?
                .unwrap_or(0.001),
            criterion,
            target_recall: h.float("target_recall", 0.0, false, 1.0)?.unwrap_or(0.8),
            target_precision: h.float("target_precision", 0.0, false, 1.0)?.unwrap_or(0.8),
            f_beta: h.float("f_beta", 0.0, true, f64::INFINITY)?.unwrap_or(1.0),
            positive_weight,
            balance_multiclass_weights: h.boolean("balance_multiclass_weights")?.unwrap_or(false),
            accuracy_top_k: h.int("accuracy_top_k", 1, usize::MAX, 3)?,
            num_calibration_samples: h.auto_int("num_calibration_samples", 1)?,
            init_normal,
            init_scale: positive("init_scale", 0.07)?,
            init_sigma: positive("init_sigma", 0.01)?,
            init_bias: h
                .float("init_bias", f64::NEG_INFINITY, false, f64::INFINITY)?
                .map(|x| x as f32),
            use_lr_scheduler: h.boolean("use_lr_scheduler")?.unwrap_or(true),
            lr_scheduler_step: h.auto_int("lr_scheduler_step", 1)?,
            lr_scheduler_factor: h.float("lr_scheduler_factor", 0.0, true, 1.0)?.unwrap_or(0.99) as f32,
            lr_scheduler_minimum_lr: h
                .float("lr_scheduler_minimum_lr", 0.0, true, f64::INFINITY)?
                .unwrap_or(1e-5) as f32,
        })
    }

    /// Outputs of the linear map: one per class for multiclass, else one.
    fn outputs(&self) -> usize {
        if self.predictor_type == PredictorType::Multiclass {
            self.num_classes
        } else {
            1
        }
    }
}

fn parse_loss(h: &Hp<'_>, pt: PredictorType, margin: f32, delta: f32, eps: f32, q: f32) -> Result<Loss, JobError> {
    let v = h.given("loss");
    let loss = match v {
        None => match pt {
            PredictorType::Binary => Loss::Logistic,
            PredictorType::Multiclass => Loss::Softmax,
            PredictorType::Regressor => Loss::Squared,
        },
        Some("logistic") => Loss::Logistic,
        Some("hinge_loss") => Loss::Hinge(margin),
        Some("softmax_loss") => Loss::Softmax,
        Some("squared_loss") => Loss::Squared,
        Some("absolute_loss") => Loss::Absolute,
        Some("huber_loss") => Loss::Huber(delta),
        Some("eps_insensitive_squared_loss") => Loss::EpsSquared(eps),
        Some("eps_insensitive_absolute_loss") => Loss::EpsAbsolute(eps),
        Some("quantile_loss") => Loss::Quantile(q),
        Some(other) => {
            return Err(bad(
                "loss",
                other,
                "is not one of: auto, logistic, hinge_loss, softmax_loss, squared_loss, absolute_loss, \
                 huber_loss, eps_insensitive_squared_loss, eps_insensitive_absolute_loss, quantile_loss",
            ));
        }
    };
    let fits = match pt {
        PredictorType::Binary => matches!(loss, Loss::Logistic | Loss::Hinge(_)),
        PredictorType::Multiclass => matches!(loss, Loss::Softmax),
        PredictorType::Regressor => !matches!(loss, Loss::Logistic | Loss::Hinge(_) | Loss::Softmax),
    };
    if !fits {
        let allowed = match pt {
            PredictorType::Binary => "auto, logistic, hinge_loss",
            PredictorType::Multiclass => "auto, softmax_loss",
            PredictorType::Regressor => {
                "auto, squared_loss, absolute_loss, huber_loss, eps_insensitive_squared_loss, \
                 eps_insensitive_absolute_loss, quantile_loss"
            }
        };
        return Err(JobError::User(format!(
            "Hyperparameter 'loss': value '{}' does not apply to predictor_type {}; use one of: {allowed}",
            loss.name(),
            pt.name()
        )));
    }
    Ok(loss)
}

// ---------------------------------------------------------------------------------------------
// Kernels

#[inline]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Dot product with eight partial sums, so that the compiler vectorizes it.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let (x, y): (&[f32; 8], &[f32; 8]) = (x.try_into().unwrap_or(&[0.0; 8]), y.try_into().unwrap_or(&[0.0; 8]));
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += a * x`.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Row-major rows with their labels.
#[derive(Clone, Copy)]
struct Data<'a> {
    x: &'a [f32],
    y: &'a [f32],
    d: usize,
}

impl<'a> Data<'a> {
    fn len(&self) -> usize {
        self.y.len()
    }

    fn row(&self, i: usize) -> &'a [f32] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    fn range(&self, start: usize, end: usize) -> Data<'a> {
        Data {
            x: &self.x[start * self.d..end * self.d],
            y: &self.y[start..end],
            d: self.d,
        }
    }
}

/// Writes the `k` outputs of row `x` into `z`.
#[inline(always)]
fn forward(w: &[f32], b: &[f32], x: &[f32], z: &mut [f32]) {
    let d = x.len();
    for (c, zc) in z.iter_mut().enumerate() {
        *zc = dot(&w[c * d..(c + 1) * d], x) + b[c];
    }
}

/// Softmax in place; returns log-sum-exp of the inputs.
#[inline(always)]
fn softmax(z: &mut [f32]) -> f32 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in z.iter_mut() {
        *v = fast_exp(*v - m);
        s += *v;
    }
    let inv = 1.0 / s;
    for v in z.iter_mut() {
        *v *= inv;
    }
    m + fast_ln(s)
}

/// `e^x`, branch-free so that loops of it vectorize (libm's `expf` is a call per value): the
/// input is clamped to [-87, 88], split as `n ln2 + r` with |r| <= ln2/2, and `e^r` is a degree-6
/// Taylor polynomial (relative error below 2e-7), scaled by `2^n` through the exponent bits.
/// `n` is rounded by adding `1.5 * 2^23`, which leaves it in the low mantissa bits: integer
/// operations only (a float-to-int cast, saturating in Rust, keeps the loop scalar).
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // The low bits of t are n + 0x40_0000 (|n| < 2^22): n + 127 shifted into the exponent.
    let e = t.to_bits().wrapping_sub(0x4b40_0000).wrapping_add(127) << 23;
    p * f32::from_bits(e)
}

/// `ln x` for normal positive `x`, branch-free: `x = m 2^e` with `m` in [sqrt(1/2), sqrt(2)),
/// `ln m = 2 atanh(s)`, `s = (m - 1) / (m + 1)`, |s| <= 0.172, by its series to `s^9`
/// (relative error below 1e-7).
#[inline(always)]
fn fast_ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i32::from(big);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))));
    e as f32 * std::f32::consts::LN_2 + series
}

/// The logistic loss `ln(1 + e^t)` with `t = -s z`, `s = 2y - 1`, and `sigmoid(t)` (the
/// gradient in `z` is `-s sigmoid(t)`), without overflow for any `z`.
#[inline(always)]
fn logistic(z: f32, y: f32) -> (f32, f32) {
    let s = 2.0 * y - 1.0;
    let t = -s * z;
    let u = fast_exp(-t.abs());
    let inv = 1.0 / (1.0 + u);
    let sig = if t >= 0.0 { inv } else { u * inv };
    (t.max(0.0) + fast_ln(1.0 + u), sig)
}

/// Rows per block of a mini-batch: a block's rows stay in L1 between the forward pass, the
/// loss and the gradient pass.
const BLOCK: usize = 64;

/// Replaces each `z[i]` by the second value of `f(z[i], y[i])` (for up to `N` values) and
/// returns the sums of the first in eight lanes: lane `l` sums the values at `l`, `l + 8`, ...
/// A plain map into a buffer, summed afterwards: a running sum in the loop is a strict
/// floating-point reduction, which keeps the compiler from vectorizing `f` (mostly `exp` and
/// `ln`). With rows of eight interleaved models ([`tile`]) a lane is one model's sum.
#[inline(always)]
fn map_lanes<const N: usize>(z: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> [f32; 8] {
    let mut losses = [0f32; N];
    let n = z.len().min(y.len()).min(N);
    for ((zi, &yi), li) in z[..n].iter_mut().zip(&y[..n]).zip(&mut losses[..n]) {
        let (l, g) = f(*zi, yi);
        *li = l;
        *zi = g;
    }
    let mut acc = [0f32; 8];
    for c in losses.chunks_exact(8) {
        for j in 0..8 {
            acc[j] += c[j];
        }
    }
    acc
}

/// The sum of [`map_lanes`]' eight lanes.
#[inline(always)]
fn lanes_sum(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// Turns outputs `z` (up to `N`) into weighted loss gradients in place; returns the loss sums
/// in eight lanes ([`map_lanes`]). `cw` weighs labels 0 and 1.
#[inline(always)]
fn grads_lanes<const N: usize>(loss: Loss, z: &mut [f32], y: &[f32], cw: [f32; 2]) -> [f32; 8] {
    let weight = |y: f32| cw[0] + y * (cw[1] - cw[0]);
    match loss {
        Loss::Logistic => map_lanes::<N>(z, y, |z, y| {
            let (l, sig) = logistic(z, y);
            (l, -(2.0 * y - 1.0) * sig * weight(y))
        }),
        Loss::Squared => map_lanes::<N>(z, y, |z, y| {
            let r = z - y;
            (r * r, 2.0 * r * weight(y))
        }),
        other => map_lanes::<N>(z, y, |z, y| {
            let (l, g) = other.value_grad(z, y);
            (l, g * if y > 0.5 { cw[1] } else { cw[0] })
        }),
    }
}

/// The loss sum of a block's outputs (one per row); `z` is overwritten.
#[inline(always)]
fn loss_block(loss: Loss, z: &mut [f32], y: &[f32]) -> f32 {
    lanes_sum(match loss {
        Loss::Logistic => map_lanes::<BLOCK>(z, y, |z, y| (logistic(z, y).0, 0.0)),
        other => map_lanes::<BLOCK>(z, y, |z, y| (other.value_grad(z, y).0, 0.0)),
    })
}

/// The histogram bucket of a binary raw output: 1024 buckets of 1/64 over z in [-8, 8).
#[inline(always)]
fn bucket(z: f32) -> usize {
    (((z + 8.0) * 64.0).max(0.0) as usize).min(HIST_BINS - 1)
}

/// The raw output at the lower edge of bucket `b`.
fn bucket_edge(b: usize) -> f64 {
    b as f64 / 64.0 - 8.0
}

// ---------------------------------------------------------------------------------------------
// Training

/// Settings shared by every model of a job.
struct Setup<'a> {
    p: &'a LinearParams,
    k: usize,
    d: usize,
    /// Weight of an example of label 1 (binary) or of each class (multiclass).
    class_weight: Vec<f32>,
    /// Learning-rate decay: every `step` updates multiply by `factor`.
    lr_step: usize,
}

/// One of the models trained side by side: its parameters and optimizer state.
#[derive(Clone)]
struct Model {
    w: Vec<f32>,
    b: Vec<f32>,
    lr: f32,
    wd: f32,
    l1: f32,
    m_w: Vec<f32>,
    v_w: Vec<f32>,
    m_b: Vec<f32>,
    v_b: Vec<f32>,
    t: u64,
    /// The epoch's training loss sum and rows (the `train` objective line).
    epoch_loss: f64,
    epoch_rows: usize,
    /// The epoch's outputs before each step, bucketed by label (binary, no validation channel).
    hist_pos: Vec<u32>,
    hist_neg: Vec<u32>,
    /// Scratch: a block's outputs and the gradient.
    z: Vec<f32>,
    g_w: Vec<f32>,
    g_b: Vec<f32>,
}

impl Model {
    fn new(s: &Setup<'_>, lr: f32, wd: f32, l1: f32, bias: &[f32], rng: &mut Rng) -> Model {
        let n = s.k * s.d;
        let w = (0..n)
            .map(|_| {
                if s.p.init_normal {
                    // Box-Muller.
                    let u1 = rng.next_f64().max(1e-300);
                    let u2 = rng.next_f64();
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * s.p.init_sigma
                } else {
                    (rng.next_f64() as f32 * 2.0 - 1.0) * s.p.init_scale
                }
            })
            .collect();
        Model {
            w,
            b: bias.to_vec(),
            lr,
            wd,
            l1,
            m_w: vec![0.0; n],
            v_w: vec![0.0; n],
            m_b: vec![0.0; s.k],
            v_b: vec![0.0; s.k],
            t: 0,
            epoch_loss: 0.0,
            epoch_rows: 0,
            hist_pos: vec![0; HIST_BINS],
            hist_neg: vec![0; HIST_BINS],
            z: Vec::new(),
            g_w: vec![0.0; n],
            g_b: vec![0.0; s.k],
        }
    }

    /// One mini-batch step of a multi-output (multiclass) model; single-output models train
    /// eight at a time in a [`tile`].
    #[inline(always)]
    fn step(&mut self, s: &Setup<'_>, batch: Data<'_>) {
        let (k, d, n) = (s.k, s.d, batch.len());
        self.g_w.fill(0.0);
        self.g_b.fill(0.0);
        self.z.resize(BLOCK * k, 0.0);
        let mut loss_sum = 0.0f64;
        for start in (0..n).step_by(BLOCK) {
            let block = batch.range(start, (start + BLOCK).min(n));
            let rows = block.len();
            let z = &mut self.z[..rows * k];
            for i in 0..rows {
                forward(&self.w, &self.b, block.row(i), &mut z[i * k..(i + 1) * k]);
            }
            for (i, &yi) in block.y.iter().enumerate() {
                let zr = &mut z[i * k..(i + 1) * k];
                let cls = yi as usize;
                let lse = softmax(zr);
                loss_sum += f64::from(lse - (fast_ln(zr[cls].max(1e-30)) + lse));
                let wgt = s.class_weight[cls];
                zr[cls] -= 1.0;
                for v in zr.iter_mut() {
                    *v *= wgt;
                }
            }
            for i in 0..rows {
                let x = block.row(i);
                for c in 0..k {
                    let g = z[i * k + c];
                    axpy(g, x, &mut self.g_w[c * d..(c + 1) * d]);
                    self.g_b[c] += g;
                }
            }
        }
        self.epoch_loss += loss_sum;
        self.epoch_rows += n;
        let inv = 1.0 / n as f32;
        self.t += 1;
        let lr = scheduled_lr(s, self.lr, self.t);
        let rule = Rule::new(s.p, lr, self.wd, inv, self.t);
        for (((w, &g), m), v) in self.w.iter_mut().zip(&self.g_w).zip(&mut self.m_w).zip(&mut self.v_w) {
            rule.apply(s.p, w, g, m, v);
        }
        if self.l1 > 0.0 {
            let t = lr * self.l1;
            for w in &mut self.w {
                *w = shrink(*w, t);
            }
        }
        if s.p.use_bias {
            let rule = Rule::new(s.p, lr * s.p.bias_lr_mult, self.wd * s.p.bias_wd_mult, inv, self.t);
            for (((w, &g), m), v) in self.b.iter_mut().zip(&self.g_b).zip(&mut self.m_b).zip(&mut self.v_b) {
                rule.apply(s.p, w, g, m, v);
            }
        }
    }
}

/// One model's optimizer settings for one step: the step's learning rate (after the
/// scheduler), weight decay, and the gradient's scale (one over the batch's rows).
#[derive(Debug, Clone, Copy, Default)]
struct Rule {
    lr: f32,
    wd: f32,
    inv: f32,
    /// Adam's bias-corrected step size at this step.
    adam_step: f32,
}

impl Rule {
    fn new(p: &LinearParams, lr: f32, wd: f32, inv: f32, t: u64) -> Rule {
        let (b1, b2) = (p.beta_1, p.beta_2);
        let c1 = 1.0 - b1.powi(t.min(1 << 20) as i32);
        let c2 = 1.0 - b2.powi(t.min(1 << 20) as i32);
        Rule {
            lr,
            wd,
            inv,
            adam_step: lr * c2.sqrt() / c1.max(1e-12),
        }
    }

    /// Updates one weight `w` (with its optimizer state `m`, `v`) from its summed gradient `g`
    /// (scaled by `inv`) plus `wd * w`.
    #[inline(always)]
    fn apply(self, p: &LinearParams, w: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        let gi = g * self.inv + self.wd * *w;
        match p.optimizer {
            Optimizer::Adam => {
                let (b1, b2) = (p.beta_1, p.beta_2);
                *m = b1 * *m + (1.0 - b1) * gi;
                *v = b2 * *v + (1.0 - b2) * gi * gi;
                *w -= self.adam_step * *m / (v.sqrt() + 1e-8);
            }
            Optimizer::RmsProp => {
                let b2 = p.beta_2;
                *v = b2 * *v + (1.0 - b2) * gi * gi;
                *w -= self.lr * gi / (v.sqrt() + 1e-8);
            }
            Optimizer::Sgd => {
                *m = p.momentum * *m + gi;
                *w -= self.lr * *m;
            }
        }
    }
}

/// The learning rate of a model whose base rate is `base` at its step `t`.
fn scheduled_lr(s: &Setup<'_>, base: f32, t: u64) -> f32 {
    if !s.p.use_lr_scheduler {
        return base;
    }
    let decays = (t / s.lr_step as u64) as i32;
    (base * s.p.lr_scheduler_factor.powi(decays)).max(s.p.lr_scheduler_minimum_lr.min(base))
}

/// Soft-thresholding by `t`, the proximal step of an `l1` penalty: it keeps exact zeros.
#[inline(always)]
fn shrink(w: f32, t: f32) -> f32 {
    w.signum() * (w.abs() - t).max(0.0)
}

/// How labels map into the space the models are trained in (regressors: normalized).
#[derive(Debug, Clone, Copy)]
struct LabelScale {
    mean: f32,
    std: f32,
}

impl LabelScale {
    fn to_model(self, y: f32) -> f32 {
        (y - self.mean) / self.std
    }

    fn to_label(self, z: f32) -> f32 {
        z * self.std + self.mean
    }
}

/// The metrics of one model on one channel.
#[derive(Debug, Clone, Default)]
struct Eval {
    /// Mean objective loss (regressors: in the label's units).
    loss: f64,
    /// The selection criterion, larger is better (the negated loss for losses).
    criterion: f64,
}

/// Buckets of the per-epoch threshold search.
const HIST_BINS: usize = 1024;

/// Evaluates `m` on `data` (the validation channel) for model selection: the loss and the criterion.
#[inline(always)]
fn evaluate_plain(s: &Setup<'_>, ls: LabelScale, m: &Model, data: Data<'_>) -> Eval {
    let k = s.k;
    let binary = s.p.predictor_type == PredictorType::Binary;
    let mut z = vec![0f32; BLOCK * k];
    let mut loss = 0f64;
    let mut pos = vec![0u32; if binary { HIST_BINS } else { 0 }];
    let mut neg = pos.clone();
    for start in (0..data.len()).step_by(BLOCK) {
        let block = data.range(start, (start + BLOCK).min(data.len()));
        let rows = block.len();
        let z = &mut z[..rows * k];
        for i in 0..rows {
            forward(&m.w, &m.b, block.row(i), &mut z[i * k..(i + 1) * k]);
        }
        match s.p.predictor_type {
            PredictorType::Multiclass => {
                for (i, &yi) in block.y.iter().enumerate() {
                    let zr = &mut z[i * k..(i + 1) * k];
                    let lse = softmax(zr);
                    loss += f64::from(lse - (fast_ln(zr[yi as usize].max(1e-30)) + lse));
                }
            }
            PredictorType::Binary => {
                for (&zi, &yi) in z.iter().zip(block.y) {
                    let h = if yi > 0.5 { &mut pos } else { &mut neg };
                    h[bucket(zi)] += 1;
                }
                loss += f64::from(loss_block(s.p.loss, z, block.y));
            }
            PredictorType::Regressor => {
                for zi in z.iter_mut() {
                    *zi = ls.to_label(*zi);
                }
                loss += f64::from(loss_block(s.p.loss, z, block.y));
            }
        }
    }
    let loss = loss / data.len().max(1) as f64;
    Eval {
        loss,
        criterion: criterion(s.p, loss, &pos, &neg),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn evaluate_avx2(s: &Setup<'_>, ls: LabelScale, m: &Model, data: Data<'_>) -> Eval {
    evaluate_plain(s, ls, m, data)
}

fn evaluate(s: &Setup<'_>, ls: LabelScale, m: &Model, data: Data<'_>) -> Eval {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { evaluate_avx2(s, ls, m, data) };
    }
    evaluate_plain(s, ls, m, data)
}

/// The selection criterion (larger is better): a binary classifier's at the best cut of its
/// output histogram, else the negated loss.
fn criterion(p: &LinearParams, loss: f64, pos: &[u32], neg: &[u32]) -> f64 {
    if p.predictor_type != PredictorType::Binary || p.criterion == Criterion::LossFunction {
        return -loss;
    }
    // Cuts from the top bucket down: rows at or above the cut are positive.
    let cuts = (0..HIST_BINS).rev().scan((0u64, 0u64), |acc, b| {
        acc.0 += u64::from(pos[b]);
        acc.1 += u64::from(neg[b]);
        Some((bucket_edge(b), acc.0, acc.1))
    });
    let total = |h: &[u32]| h.iter().map(|&c| u64::from(c)).sum::<u64>();
    best_cut(p, cuts, total(pos), total(neg)).0
}

/// Trains every multi-output model of `group` one epoch over `data`, a mini-batch at a time.
#[inline(always)]
fn epoch_plain(s: &Setup<'_>, group: &mut [Model], data: Data<'_>) {
    let n = data.len();
    for start in (0..n).step_by(s.p.mini_batch_size) {
        let batch = data.range(start, (start + s.p.mini_batch_size).min(n));
        for m in group.iter_mut() {
            m.step(s, batch);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn epoch_avx2(s: &Setup<'_>, group: &mut [Model], data: Data<'_>) {
    epoch_plain(s, group, data);
}

/// Trains every model of `group` one epoch over `data`: single-output models (binary,
/// regressor) in tiles of [`tile::LANES`], multi-output ones one by one. With `hist`, a binary
/// model's outputs before each step also go into its histogram (the selection criterion when
/// there is no validation channel).
fn run_epoch(s: &Setup<'_>, group: &mut [Model], data: Data<'_>, hist: bool) {
    if s.k == 1 {
        for models in group.chunks_mut(tile::LANES) {
            tile::epoch(s, models, data, hist);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { epoch_avx2(s, group, data) };
    }
    epoch_plain(s, group, data);
}

fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// Counts at one threshold.
#[derive(Debug, Clone, Copy, Default)]
struct Confusion {
    tp: f64,
    fp: f64,
    p: f64,
    n: f64,
}

impl Confusion {
    fn accuracy(&self) -> f64 {
        (self.tp + (self.n - self.fp)) / (self.p + self.n).max(1.0)
    }
    fn precision(&self) -> f64 {
        if self.tp + self.fp > 0.0 {
            self.tp / (self.tp + self.fp)
        } else {
            0.0
        }
    }
    fn recall(&self) -> f64 {
        if self.p > 0.0 { self.tp / self.p } else { 0.0 }
    }
    fn f_beta(&self, beta: f64) -> f64 {
        let (pr, rc) = (self.precision(), self.recall());
        let b2 = beta * beta;
        if pr + rc > 0.0 {
            (1.0 + b2) * pr * rc / (b2 * pr + rc)
        } else {
            0.0
        }
    }
}

/// The best threshold of the criterion over `cuts` (threshold, true positives and false
/// positives at or above it, thresholds decreasing): (criterion value, threshold).
fn best_cut(p: &LinearParams, cuts: impl Iterator<Item = (f64, u64, u64)>, pos: u64, neg: u64) -> (f64, f64) {
    let mut best = (f64::NEG_INFINITY, 1.0);
    // Fallback for recall_at_target_precision when no cut reaches the target: the most precise.
    let mut most_precise = (f64::NEG_INFINITY, 1.0);
    let (pt, nt) = (pos as f64, neg as f64);
    let all_negative = Confusion {
        tp: 0.0,
        fp: 0.0,
        p: pt,
        n: nt,
    };
    if p.criterion == Criterion::Accuracy {
        best = (all_negative.accuracy(), f64::INFINITY);
    }
    for (thr, tp, fp) in cuts {
        let c = Confusion {
            tp: tp as f64,
            fp: fp as f64,
            p: pt,
            n: nt,
        };
        let v = match p.criterion {
            Criterion::Accuracy | Criterion::LossFunction => c.accuracy(),
            Criterion::FBeta => c.f_beta(p.f_beta),
            Criterion::PrecisionAtTargetRecall => {
                if c.recall() >= p.target_recall {
                    c.precision()
                } else {
                    f64::NEG_INFINITY
                }
            }
            Criterion::RecallAtTargetPrecision => {
                if c.precision() > most_precise.0 {
                    most_precise = (c.precision(), thr);
                }
                if c.precision() >= p.target_precision {
                    c.recall()
                } else {
                    f64::NEG_INFINITY
                }
            }
        };
        if v > best.0 {
            best = (v, thr);
        }
    }
    if best.0 == f64::NEG_INFINITY {
        return (0.0, most_precise.1);
    }
    best
}

/// The exact best threshold of scores `(score, label)` by the criterion (one sort).
fn exact_threshold(p: &LinearParams, mut scored: Vec<(f32, bool)>) -> f64 {
    // Ties are grouped below, so their order (which the parallel sort does not fix) is moot.
    scored.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let pos = scored.iter().filter(|s| s.1).count() as u64;
    let neg = scored.len() as u64 - pos;
    let mut cuts = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut i = 0;
    while i < scored.len() {
        // Tied scores fall on the same side of any threshold.
        let v = scored[i].0;
        while i < scored.len() && scored[i].0 == v {
            if scored[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        cuts.push((f64::from(v), tp, fp));
    }
    best_cut(p, cuts.into_iter(), pos, neg).1
}

/// Training rows normalized and shuffled, plus the statistics to undo it.
struct Prepared {
    x: Vec<f32>,
    y: Vec<f32>,
    mean: Vec<f32>,
    scale: Vec<f32>,
    label: LabelScale,
}

/// Feature means and scales from up to `num_point_for_scaler` rows (every feature kept as is
/// when normalization is off).
fn scaler(p: &LinearParams, rows: &DenseRows, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, LabelScale) {
    let d = rows.n_cols;
    let n = rows.n_rows();
    let sample: Vec<usize> = if n <= p.num_point_for_scaler {
        (0..n).collect()
    } else {
        (0..p.num_point_for_scaler).map(|_| rng.below(n)).collect()
    };
    let m = sample.len().max(1) as f64;
    let mut sum = vec![0f64; d];
    let mut sq = vec![0f64; d];
    let (mut ys, mut ysq) = (0f64, 0f64);
    for &i in &sample {
        for (j, &v) in rows.values[i * d..(i + 1) * d].iter().enumerate() {
            sum[j] += f64::from(v);
            sq[j] += f64::from(v) * f64::from(v);
        }
        ys += f64::from(rows.labels[i]);
        ysq += f64::from(rows.labels[i]).powi(2);
    }
    let mut mean = vec![0f32; d];
    let mut scale = vec![1f32; d];
    if p.normalize_data {
        for j in 0..d {
            let mu = sum[j] / m;
            let var = (sq[j] / m - mu * mu).max(0.0);
            if p.unbias_data {
                mean[j] = mu as f32;
            }
            // Without unbiasing the scale is the root mean square, so that x/scale has unit second moment.
            let s = if p.unbias_data { var.sqrt() } else { (sq[j] / m).sqrt() };
            scale[j] = if s > 1e-12 { s as f32 } else { 1.0 };
        }
    }
    let ymu = ys / m;
    let ystd = (ysq / m - ymu * ymu).max(0.0).sqrt();
    let label = LabelScale {
        mean: if p.unbias_label { ymu as f32 } else { 0.0 },
        std: if p.normalize_label && ystd > 1e-12 {
            ystd as f32
        } else {
            1.0
        },
    };
    (mean, scale, label)
}

/// Normalizes `rows` into a new row-major copy, in the order `order`.
fn normalize(rows: &DenseRows, order: Option<&[usize]>, mean: &[f32], scale: &[f32]) -> Vec<f32> {
    let d = rows.n_cols;
    let n = rows.n_rows();
    let inv: Vec<f32> = scale.iter().map(|s| 1.0 / s).collect();
    let mut out = vec![0f32; n * d];
    out.par_chunks_mut(d.max(1) * 1024)
        .enumerate()
        .for_each(|(blk, chunk)| {
            for (r, dst) in chunk.chunks_exact_mut(d).enumerate() {
                let i = blk * 1024 + r;
                let src = order.map_or(i, |o| o[i]);
                for (j, (o, &v)) in dst.iter_mut().zip(&rows.values[src * d..(src + 1) * d]).enumerate() {
                    *o = (v - mean[j]) * inv[j];
                }
            }
        });
    out
}

fn prepare(p: &LinearParams, rows: &DenseRows, rng: &mut Rng) -> Prepared {
    let (mean, scale, label) = scaler(p, rows, rng);
    let n = rows.n_rows();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let x = normalize(rows, Some(&order), &mean, &scale);
    let y = order.iter().map(|&i| rows.labels[i]).collect();
    Prepared {
        x,
        y,
        mean,
        scale,
        label,
    }
}

/// The chosen model: the weights in the normalized space and where they came from.
struct Chosen {
    model: Model,
    index: usize,
    epoch: usize,
    value: f64,
}

/// What [`fit`] returns: the model in the original feature space plus training facts.
pub struct Fitted {
    /// The model file's content.
    pub model: LinearModel,
    /// Epochs run (early stopping may end before `epochs`).
    pub epochs_run: usize,
    /// Which of the models won, and at which epoch.
    pub best_model: usize,
    /// The epoch (0-based) of the kept weights.
    pub best_epoch: usize,
    /// Solved exactly ([`solves_exactly`]) rather than by epochs of SGD.
    pub exact: bool,
}

/// Trains on `train` (and selects on `validation` when given); `log` gets the per-epoch lines.
pub fn fit(
    p: &LinearParams,
    train: &DenseRows,
    validation: Option<&DenseRows>,
    threads: usize,
    seed: u64,
    host: &str,
    log: &mut dyn Write,
) -> Fitted {
    fit_from(p, train, validation, None, threads, seed, host, log)
}

/// [`fit`], every model starting from `prior` (incremental training; checked by
/// [`check_prior`]) when given. A regressor [`solves_exactly`] needs no starting point: its
/// answer is the minimizer, wherever SGD would have started.
#[allow(clippy::too_many_arguments)]
pub fn fit_from(
    p: &LinearParams,
    train: &DenseRows,
    validation: Option<&DenseRows>,
    prior: Option<&LinearModel>,
    threads: usize,
    seed: u64,
    host: &str,
    log: &mut dyn Write,
) -> Fitted {
    if solves_exactly(p, train.n_cols) {
        return fit_exact(p, train, validation, threads, seed, host, log);
    }
    let mut rng = Rng::new(seed);
    let d = train.n_cols;
    let k = p.outputs();
    let prep = prepare(p, train, &mut rng);
    let ls = prep.label;
    // Labels in the space the models learn.
    let y_model: Vec<f32> = if p.predictor_type == PredictorType::Regressor {
        prep.y.iter().map(|&y| ls.to_model(y)).collect()
    } else {
        prep.y.clone()
    };
    let val_x = validation.map(|v| normalize(v, None, &prep.mean, &prep.scale));
    let train_data = Data {
        x: &prep.x,
        y: &y_model,
        d,
    };
    // Selection data: labels in original units (evaluate() converts regressor outputs).
    // Selection data (labels in their own units: evaluate() converts a regressor's outputs);
    // without a validation channel the models are judged on their training epoch.
    let select = match (validation, &val_x) {
        (Some(v), Some(x)) => Some(Data { x, y: &v.labels, d }),
        _ => None,
    };
    let hist = select.is_none() && p.predictor_type == PredictorType::Binary && p.criterion != Criterion::LossFunction;
    let n = train.n_rows();
    // Class weights and the starting bias (the label's prior, unless init_bias is given).
    let (class_weight, prior_bias) = match p.predictor_type {
        PredictorType::Binary => {
            let pos = prep.y.iter().filter(|&&y| y > 0.5).count().max(1) as f32;
            let neg = (n as f32 - pos).max(1.0);
            let wp = match p.positive_weight {
                PositiveWeight::Value(v) => v,
                PositiveWeight::Balanced => neg / pos,
            };
            let prior = if matches!(p.loss, Loss::Logistic) {
                (pos * wp / neg).ln()
            } else {
                0.0
            };
            (vec![1.0, wp], vec![prior])
        }
        PredictorType::Multiclass => {
            let mut counts = vec![0f32; k];
            for &y in &prep.y {
                counts[y as usize] += 1.0;
            }
            let w: Vec<f32> = if p.balance_multiclass_weights {
                counts.iter().map(|&c| n as f32 / (k as f32 * c.max(1.0))).collect()
            } else {
                vec![1.0; k]
            };
            let prior = counts.iter().zip(&w).map(|(&c, &wc)| (c.max(0.5) * wc).ln()).collect();
            (w, prior)
        }
        PredictorType::Regressor => {
            let mean = y_model.iter().map(|&y| f64::from(y)).sum::<f64>() / n.max(1) as f64;
            (vec![1.0, 1.0], vec![mean as f32])
        }
    };
    let bias: Vec<f32> = match (p.use_bias, p.init_bias) {
        (false, _) => vec![0.0; k],
        (true, Some(b)) => vec![b; k],
        (true, None) => prior_bias,
    };
    let batches = n.div_ceil(p.mini_batch_size);
    let setup = Setup {
        p,
        k,
        d,
        class_weight,
        lr_step: p.lr_scheduler_step.unwrap_or((batches / 10).max(1)),
    };
    let num_models = p.num_models.unwrap_or(AUTO_NUM_MODELS);
    let base_lr = p
        .learning_rate
        .unwrap_or_else(|| auto_learning_rate(p.optimizer, batches));
    let mut models: Vec<Model> = (0..num_models)
        .map(|i| {
            let lr = base_lr * LR_SPREAD[i % 4];
            let wd = match p.wd {
                Some(wd) => wd * WD_SPREAD[(i / 4) % 4],
                None => WD_AUTO[(i / 4) % 4],
            };
            let l1 = match p.l1 {
                Some(l1) => l1 * WD_SPREAD[(i / 4) % 4],
                None => 0.0,
            };
            let mut m = Model::new(&setup, lr, wd, l1, &bias, &mut rng);
            if let Some(prior) = prior {
                to_normalized_space(prior, &prep, &mut m);
            }
            m
        })
        .collect();
    let groups = threads.clamp(1, num_models);
    let per_group = num_models.div_ceil(groups);
    let obj = p.loss.objective_name();
    let mut best: Option<Chosen> = None;
    // The value early stopping compares against, and epochs since it last improved enough.
    let mut reference = f64::NEG_INFINITY;
    let mut stale = 0;
    let mut epochs_run = 0;
    for epoch in 0..p.epochs {
        let evals: Vec<Eval> = models
            .par_chunks_mut(per_group)
            .flat_map_iter(|group| {
                run_epoch(&setup, group, train_data, hist);
                group
                    .iter()
                    .map(|m| match select {
                        Some(v) => evaluate(&setup, ls, m, v),
                        // No validation channel: the epoch's own outputs, before each step.
                        None => {
                            let loss = train_loss(p, ls, m);
                            Eval {
                                loss,
                                criterion: criterion(p, loss, &m.hist_pos, &m.hist_neg),
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        epochs_run = epoch + 1;
        let (ei, e) = evals
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.criterion.total_cmp(&b.1.criterion))
            .map(|(i, e)| (i, e.clone()))
            .unwrap_or_default();
        let train_loss = train_loss(p, ls, &models[ei]);
        let _ = writeln!(
            log,
            "#quality_metric: host={host}, epoch={epoch}, train {obj} <loss>={train_loss}"
        );
        if validation.is_some() {
            let _ = writeln!(
                log,
                "#quality_metric: host={host}, epoch={epoch}, validation {obj} <loss>={}",
                e.loss
            );
        }
        let crit = if p.predictor_type == PredictorType::Binary {
            p.criterion.name()
        } else {
            "loss_function"
        };
        let shown = if crit == "loss_function" {
            -e.criterion
        } else {
            e.criterion
        };
        let _ = writeln!(
            log,
            "#early_stopping_criteria_metric: host={host}, epoch={epoch}, criteria={crit}, value={shown}"
        );
        for m in &mut models {
            m.epoch_loss = 0.0;
            m.epoch_rows = 0;
            m.hist_pos.fill(0);
            m.hist_neg.fill(0);
        }
        if best.as_ref().is_none_or(|b| e.criterion > b.value) {
            best = Some(Chosen {
                model: models[ei].clone(),
                index: ei,
                epoch,
                value: e.criterion,
            });
        }
        let _ = writeln!(
            log,
            "#progress_metric: host={host}, completed {:.0} % of epochs",
            100.0 * (epoch + 1) as f64 / p.epochs as f64
        );
        // Relative improvement over the reference; the first epoch always sets it.
        let improved = !reference.is_finite()
            || (e.criterion - reference) > p.early_stopping_tolerance * reference.abs().max(1e-12);
        if improved {
            reference = reference.max(e.criterion);
            stale = 0;
        } else {
            stale += 1;
            if stale >= p.early_stopping_patience {
                let _ = writeln!(
                    log,
                    "kiln linear-learner: early stopping at epoch {epoch}: no relative improvement of \
                     {crit} above {} for {stale} epochs",
                    p.early_stopping_tolerance
                );
                break;
            }
        }
    }
    let chosen = best.expect("at least one epoch ran");
    let mut model = to_original_space(p, &chosen.model, &prep);
    if p.predictor_type == PredictorType::Binary {
        model.threshold = Some(final_threshold(p, &model, validation.unwrap_or(train)));
    }
    Fitted {
        model,
        epochs_run,
        best_model: chosen.index,
        best_epoch: chosen.epoch,
        exact: false,
    }
}

// ---------------------------------------------------------------------------------------------
// The regressor's exact path

/// Widest data the exact regressor takes: its Gram matrix costs `n d^2 / 2` multiply-adds
/// (about `d / 200` times the SGD path's eight models over six epochs, at the kernel's higher
/// speed) and `d^2` f64 per thread; wider data goes to SGD.
pub const EXACT_MAX_DIM: usize = 1024;

/// Whether [`fit_from`] solves the regressor exactly: squared loss (`auto` for a regressor)
/// has a closed-form minimizer, the normal equations, when nothing else asks for SGD: no `l1`
/// (not smooth), no explicit `learning_rate` (a user who sets one asks for SGD's steps), and a
/// width whose `d x d` Gram matrix is cheap ([`EXACT_MAX_DIM`]).
pub fn solves_exactly(p: &LinearParams, d: usize) -> bool {
    p.predictor_type == PredictorType::Regressor
        && p.loss == Loss::Squared
        && p.l1.is_none_or(|l1| l1 == 0.0)
        && p.learning_rate.is_none()
        && d <= EXACT_MAX_DIM
}

/// `[x', 1, y']` (normalized features, the intercept's column, the label in model units) summed
/// as `X^T X` over every training row, `(d + 2) x (d + 2)`: in one parallel pass, one
/// accumulator per thread.
fn normal_equations(rows: &DenseRows, mean: &[f32], scale: &[f32], ls: LabelScale, threads: usize) -> Vec<f64> {
    let d = rows.n_cols;
    let n = rows.n_rows();
    let inv: Vec<f32> = scale.iter().map(|s| 1.0 / s).collect();
    let parts = threads.clamp(1, n.max(1));
    let per = n.div_ceil(parts).max(1);
    (0..parts)
        .into_par_iter()
        .map(|t| {
            let mut g = Gram::new(d + 2);
            for i in t * per..((t + 1) * per).min(n) {
                let x = &rows.values[i * d..(i + 1) * d];
                g.push(|dst| {
                    for (j, (o, &v)) in dst[..d].iter_mut().zip(x).enumerate() {
                        *o = (v - mean[j]) * inv[j];
                    }
                    dst[d] = 1.0;
                    dst[d + 1] = ls.to_model(rows.labels[i]);
                });
            }
            g
        })
        .reduce(|| Gram::new(d + 2), Gram::merge)
        .finish()
}

/// Solves `a x = b` for the symmetric positive definite `m x m` matrix `a` (row-major) by
/// Cholesky. Pivots below `tiny` (a constant feature, whose normalized column is all zeros)
/// give that unknown 0 rather than dividing by nothing.
fn cholesky_solve(a: &[f64], m: usize, b: &[f64], tiny: f64) -> Vec<f64> {
    let mut l = vec![0f64; m * m];
    for i in 0..m {
        for j in 0..=i {
            let s = a[i * m + j] - (0..j).map(|k| l[i * m + k] * l[j * m + k]).sum::<f64>();
            if i == j {
                l[i * m + i] = if s > tiny { s.sqrt() } else { 0.0 };
            } else if l[j * m + j] > 0.0 {
                l[i * m + j] = s / l[j * m + j];
            }
        }
    }
    // L z = b, then L^T x = z; a zero pivot's unknown stays 0.
    let mut z = vec![0f64; m];
    for i in 0..m {
        if l[i * m + i] > 0.0 {
            z[i] = (b[i] - (0..i).map(|k| l[i * m + k] * z[k]).sum::<f64>()) / l[i * m + i];
        }
    }
    let mut x = vec![0f64; m];
    for i in (0..m).rev() {
        if l[i * m + i] > 0.0 {
            x[i] = (z[i] - (i + 1..m).map(|k| l[k * m + i] * x[k]).sum::<f64>()) / l[i * m + i];
        }
    }
    x
}

/// The exact minimizer of the SGD path's objective for one `wd`, in the normalized space:
/// `(1/n) sum (w.x' + b - y')^2 + (wd/2) |w|^2 + (wd bias_wd_mult / 2) b^2`, whose gradient is
/// zero where `(A + (n/2) R) theta = X^T y'` with `A` the Gram matrix of `[x', 1]` and `R` the
/// diagonal of weight decays. Returns `(w, b)`.
fn exact_solution(p: &LinearParams, g: &[f64], d: usize, wd: f32) -> (Vec<f32>, f32) {
    let m = if p.use_bias { d + 1 } else { d };
    let w_ = d + 2;
    let n = g[d * w_ + d];
    let mut a = vec![0f64; m * m];
    let mut rhs = vec![0f64; m];
    for i in 0..m {
        for j in 0..m {
            a[i * m + j] = g[i * w_ + j];
        }
        rhs[i] = g[i * w_ + d + 1];
        let decay = if i < d { wd } else { wd * p.bias_wd_mult };
        a[i * m + i] += 0.5 * n * f64::from(decay);
    }
    let biggest = (0..m).map(|i| a[i * m + i]).fold(0f64, f64::max);
    let theta = cholesky_solve(&a, m, &rhs, 1e-12 * biggest.max(f64::MIN_POSITIVE));
    let w = theta[..d].iter().map(|&v| v as f32).collect();
    (w, if p.use_bias { theta[d] as f32 } else { 0.0 })
}

/// The mean squared residual in model units of `(w, b)` on the rows summed in `g`:
/// `(theta^T A theta - 2 theta^T X^T y' + y'^T y') / n`.
fn exact_train_loss(g: &[f64], d: usize, w: &[f32], b: f32) -> f64 {
    let w_ = d + 2;
    let theta: Vec<f64> = w.iter().map(|&v| f64::from(v)).chain([f64::from(b)]).collect();
    let n = g[d * w_ + d].max(1.0);
    let mut quad = 0.0;
    let mut lin = 0.0;
    for i in 0..=d {
        quad += theta[i] * (0..=d).map(|j| g[i * w_ + j] * theta[j]).sum::<f64>();
        lin += theta[i] * g[i * w_ + d + 1];
    }
    ((quad - 2.0 * lin + g[(d + 1) * w_ + d + 1]) / n).max(0.0)
}

/// The regressor's exact path ([`solves_exactly`]): the normal equations accumulated in one
/// pass, one Cholesky solve per distinct `wd` of the `num_models` candidates (their learning
/// rates do not matter to an exact solve), the best kept on `validation` (else `train`) as the
/// SGD path does. A prior model (incremental training) is checked by the caller but is no
/// starting point here: the minimizer is the same from anywhere.
fn fit_exact(
    p: &LinearParams,
    train: &DenseRows,
    validation: Option<&DenseRows>,
    threads: usize,
    seed: u64,
    host: &str,
    log: &mut dyn Write,
) -> Fitted {
    let mut rng = Rng::new(seed);
    let d = train.n_cols;
    let (mean, scale, label) = scaler(p, train, &mut rng);
    let g = normal_equations(train, &mean, &scale, label, threads);
    let setup = Setup {
        p,
        k: 1,
        d,
        class_weight: vec![1.0, 1.0],
        lr_step: 1,
    };
    let val_x = validation.map(|v| normalize(v, None, &mean, &scale));
    let num_models = p.num_models.unwrap_or(AUTO_NUM_MODELS).max(1);
    let mut solved: Vec<(u32, Model, Eval)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    for i in 0..num_models {
        let wd = match p.wd {
            Some(wd) => wd * WD_SPREAD[(i / 4) % 4],
            None => WD_AUTO[(i / 4) % 4],
        };
        let at = match solved.iter().position(|s| s.0 == wd.to_bits()) {
            Some(at) => at,
            None => {
                let (w, b) = exact_solution(p, &g, d, wd);
                let mut m = Model::new(&setup, 0.0, wd, 0.0, &[b], &mut rng);
                m.w = w;
                let eval = match (validation, &val_x) {
                    (Some(v), Some(x)) => evaluate(&setup, label, &m, Data { x, y: &v.labels, d }),
                    _ => {
                        let loss = exact_train_loss(&g, d, &m.w, m.b[0]) * f64::from(label.std).powi(2);
                        Eval { loss, criterion: -loss }
                    }
                };
                solved.push((wd.to_bits(), m, eval));
                solved.len() - 1
            }
        };
        if best.is_none_or(|(_, b)| solved[at].2.criterion > solved[b].2.criterion) {
            best = Some((i, at));
        }
    }
    let (index, at) = best.expect("num_models is at least 1");
    let (_, m, e) = &solved[at];
    let obj = p.loss.objective_name();
    let train_loss = exact_train_loss(&g, d, &m.w, m.b[0]) * f64::from(label.std).powi(2);
    let _ = writeln!(
        log,
        "#quality_metric: host={host}, epoch=0, train {obj} <loss>={train_loss}"
    );
    if validation.is_some() {
        let _ = writeln!(
            log,
            "#quality_metric: host={host}, epoch=0, validation {obj} <loss>={}",
            e.loss
        );
    }
    let _ = writeln!(
        log,
        "#early_stopping_criteria_metric: host={host}, epoch=0, criteria=loss_function, value={}",
        -e.criterion
    );
    let _ = writeln!(log, "#progress_metric: host={host}, completed 100 % of epochs");
    let prep = Prepared {
        x: Vec::new(),
        y: Vec::new(),
        mean,
        scale,
        label,
    };
    Fitted {
        model: to_original_space(p, m, &prep),
        epochs_run: 0,
        best_model: index,
        best_epoch: 0,
        exact: true,
    }
}

/// The mean training loss of `m`'s epoch so far, in the label's units for regressors.
fn train_loss(p: &LinearParams, ls: LabelScale, m: &Model) -> f64 {
    let loss = m.epoch_loss / m.epoch_rows.max(1) as f64;
    match (p.predictor_type, p.loss) {
        (PredictorType::Regressor, Loss::Squared | Loss::EpsSquared(_)) => loss * f64::from(ls.std * ls.std),
        (PredictorType::Regressor, _) => loss * f64::from(ls.std),
        _ => loss,
    }
}

/// The inverse of [`to_original_space`]: `prior`'s weights in the space this job's models learn
/// in (`w_j s_j / ys`, `(b + sum w_j m_j - ym) / ys`).
fn to_normalized_space(prior: &LinearModel, prep: &Prepared, m: &mut Model) {
    let d = prep.mean.len();
    let (ys, ym) = (f64::from(prep.label.std), f64::from(prep.label.mean));
    for (c, (w, &b)) in prior.weights.iter().zip(&prior.bias).enumerate() {
        let shift: f64 = w
            .iter()
            .zip(&prep.mean)
            .map(|(&wj, &mj)| f64::from(wj) * f64::from(mj))
            .sum();
        for ((dst, &wj), &sj) in m.w[c * d..(c + 1) * d].iter_mut().zip(w).zip(&prep.scale) {
            *dst = (f64::from(wj) * f64::from(sj) / ys) as f32;
        }
        m.b[c] = ((f64::from(b) + shift - ym) / ys) as f32;
    }
}

/// Fails unless `prior` (a `model` channel's) can be trained further by this job on data of
/// `d` columns.
pub fn check_prior(prior: &LinearModel, p: &LinearParams, d: usize) -> Result<(), JobError> {
    let mismatch = |what: &str, old: String, new: String| {
        Err(JobError::User(format!(
            "channel 'model': the model was trained with {what} {old} but this job has {what} {new}; \
             incremental training needs the same {what}"
        )))
    };
    if prior.predictor_type != p.predictor_type.name() {
        return mismatch(
            "predictor_type",
            prior.predictor_type.clone(),
            p.predictor_type.name().into(),
        );
    }
    if prior.feature_dim != d {
        return mismatch("feature_dim", prior.feature_dim.to_string(), d.to_string());
    }
    if prior.num_classes != p.num_classes {
        return mismatch("num_classes", prior.num_classes.to_string(), p.num_classes.to_string());
    }
    Ok(())
}

/// The model of a `model` channel: `linear-learner-model.json`, or the model.tar.gz of an earlier
/// job holding it.
fn read_prior(dir: &Path) -> Result<LinearModel, JobError> {
    let (text, shown) = read_prior_model(dir, MODEL_FILE, "Linear Learner")?;
    parse_model(&text, &shown)
}

/// Folds the normalization into the weights: `w'_j = w_j / s_j`, `b' = b - sum w'_j m_j`, and
/// a regressor's label scale into both.
fn to_original_space(p: &LinearParams, m: &Model, prep: &Prepared) -> LinearModel {
    let d = prep.mean.len();
    let k = p.outputs();
    let mut weights = Vec::with_capacity(k);
    let mut bias = Vec::with_capacity(k);
    let (ys, ym) = (prep.label.std, prep.label.mean);
    for c in 0..k {
        let w: Vec<f32> = (0..d).map(|j| m.w[c * d + j] / prep.scale[j] * ys).collect();
        let shift: f64 = (0..d).map(|j| f64::from(w[j]) * f64::from(prep.mean[j])).sum();
        bias.push((f64::from(m.b[c]) * f64::from(ys) + f64::from(ym) - shift) as f32);
        weights.push(w);
    }
    LinearModel {
        algorithm: "linear-learner".into(),
        version: 1,
        predictor_type: p.predictor_type.name().into(),
        loss: p.loss.name().into(),
        feature_dim: d,
        num_classes: p.num_classes,
        weights,
        bias,
        threshold: None,
    }
}

/// The binary threshold chosen exactly on (up to `num_calibration_samples` rows of) `rows`.
fn final_threshold(p: &LinearParams, model: &LinearModel, rows: &DenseRows) -> f64 {
    if p.criterion == Criterion::LossFunction {
        return default_threshold(model);
    }
    let n = p
        .num_calibration_samples
        .map_or(rows.n_rows(), |c| c.min(rows.n_rows()));
    let scored: Vec<(f32, bool)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let x = &rows.values[i * rows.n_cols..(i + 1) * rows.n_cols];
            (model.binary_score(x), rows.labels[i] > 0.5)
        })
        .collect();
    let t = exact_threshold(p, scored);
    if t.is_finite() { t } else { f64::from(f32::MAX) }
}

fn default_threshold(model: &LinearModel) -> f64 {
    if model.loss == "hinge_loss" { 0.0 } else { 0.5 }
}

// ---------------------------------------------------------------------------------------------
// Model file, prediction, final metrics

/// A trained model, in the original feature space.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearModel {
    /// Always `"linear-learner"`.
    pub algorithm: String,
    /// Format version (1).
    pub version: u32,
    /// `binary_classifier`, `multiclass_classifier` or `regressor`.
    pub predictor_type: String,
    /// The training loss (`logistic`, `hinge_loss`, `softmax_loss`, `squared_loss`, ...).
    pub loss: String,
    /// Columns per row.
    pub feature_dim: usize,
    /// Classes (2 for binary, 1 for a regressor).
    pub num_classes: usize,
    /// One array of `feature_dim` weights per output (one output unless multiclass).
    pub weights: Vec<Vec<f32>>,
    /// One bias per output.
    pub bias: Vec<f32>,
    /// Binary classifiers: rows whose score is at least this are labelled 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl LinearModel {
    /// The scores of row `x`: a probability (logistic), a margin (hinge), per-class
    /// probabilities (multiclass) or the prediction (regressor).
    /// A binary classifier's score, `score(x)[0]` without allocating.
    fn binary_score(&self, x: &[f32]) -> f32 {
        let z = dot(&self.weights[0], x) + self.bias[0];
        if self.loss == "hinge_loss" { z } else { sigmoid(z) }
    }

    pub fn score(&self, x: &[f32]) -> Vec<f32> {
        let mut z: Vec<f32> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| dot(w, x) + b)
            .collect();
        match self.predictor_type.as_str() {
            "binary_classifier" if self.loss != "hinge_loss" => z[0] = sigmoid(z[0]),
            "multiclass_classifier" => {
                softmax(&mut z);
            }
            _ => {}
        }
        z
    }

    /// The predicted label of scores `s`.
    pub fn label(&self, s: &[f32]) -> f32 {
        match self.predictor_type.as_str() {
            "binary_classifier" => {
                let t = self.threshold.unwrap_or_else(|| default_threshold(self));
                f32::from(u8::from(f64::from(s[0]) >= t))
            }
            "multiclass_classifier" => argmax(s) as f32,
            _ => s[0],
        }
    }
}

/// The final model's metrics on one channel, as `(name, value, is_loss)` in SageMaker's order.
fn channel_metrics(p: &LinearParams, model: &LinearModel, rows: &DenseRows) -> Vec<(String, f64, bool)> {
    let d = rows.n_cols;
    let scores: Vec<Vec<f32>> = rows.values.par_chunks(d).map(|x| model.score(x)).collect();
    let n = rows.n_rows().max(1) as f64;
    let y = &rows.labels;
    let mut out = Vec::new();
    let obj = p.loss.objective_name().to_string();
    match p.predictor_type {
        PredictorType::Binary => {
            // The objective on the raw output: undo the sigmoid of a logistic score.
            let loss: f64 = scores
                .iter()
                .zip(y)
                .map(|(s, &yi)| {
                    let z = if p.loss == Loss::Logistic {
                        let q = s[0].clamp(1e-7, 1.0 - 1e-7);
                        (q / (1.0 - q)).ln()
                    } else {
                        s[0]
                    };
                    f64::from(p.loss.value_grad(z, yi).0)
                })
                .sum();
            out.push((obj, loss / n, true));
            let t = model.threshold.unwrap_or_else(|| default_threshold(model));
            let mut c = Confusion::default();
            for (s, &yi) in scores.iter().zip(y) {
                let positive = yi > 0.5;
                let predicted = f64::from(s[0]) >= t;
                c.p += f64::from(u8::from(positive));
                c.n += f64::from(u8::from(!positive));
                c.tp += f64::from(u8::from(positive && predicted));
                c.fp += f64::from(u8::from(!positive && predicted));
            }
            out.push(("binary_classification_accuracy".into(), c.accuracy(), false));
            out.push((format!("binary_f_{:.3}", p.f_beta), c.f_beta(p.f_beta), false));
            out.push(("precision".into(), c.precision(), false));
            out.push(("recall".into(), c.recall(), false));
            out.push(("roc_auc_score".into(), roc_auc(&scores, y), false));
        }
        PredictorType::Multiclass => {
            let k = p.num_classes;
            let (mut loss, mut correct, mut topk, mut dcg) = (0f64, 0usize, 0usize, 0f64);
            let mut tp = vec![0f64; k];
            let mut predicted = vec![0f64; k];
            let mut actual = vec![0f64; k];
            for (s, &yi) in scores.iter().zip(y) {
                let cls = yi as usize;
                loss -= f64::from(s[cls].max(1e-30)).ln();
                let arg = argmax(s);
                correct += usize::from(arg == cls);
                // 1-based rank of the true class.
                let rank = 1 + s.iter().filter(|&&v| v > s[cls]).count();
                topk += usize::from(rank <= p.accuracy_top_k);
                dcg += 1.0 / ((rank + 1) as f64).log2();
                tp[arg] += f64::from(u8::from(arg == cls));
                predicted[arg] += 1.0;
                actual[cls] += 1.0;
            }
            let macro_avg = |f: &dyn Fn(usize) -> f64| (0..k).map(f).sum::<f64>() / k as f64;
            let prec = |c: usize| if predicted[c] > 0.0 { tp[c] / predicted[c] } else { 0.0 };
            let rec = |c: usize| if actual[c] > 0.0 { tp[c] / actual[c] } else { 0.0 };
            let b2 = p.f_beta * p.f_beta;
            let fb = |c: usize| {
                let (pr, rc) = (prec(c), rec(c));
                if pr + rc > 0.0 {
                    (1.0 + b2) * pr * rc / (b2 * pr + rc)
                } else {
                    0.0
                }
            };
            out.push((obj, loss / n, true));
            out.push(("multiclass_accuracy".into(), correct as f64 / n, false));
            out.push((
                format!("multiclass_top_k_accuracy_{}", p.accuracy_top_k),
                topk as f64 / n,
                false,
            ));
            out.push(("dcg".into(), dcg / n, false));
            out.push(("macro_recall".into(), macro_avg(&rec), false));
            out.push(("macro_precision".into(), macro_avg(&prec), false));
            out.push((format!("macro_f_{:.3}", p.f_beta), macro_avg(&fb), false));
        }
        PredictorType::Regressor => {
            let (mut loss, mut se, mut ae) = (0f64, 0f64, 0f64);
            for (s, &yi) in scores.iter().zip(y) {
                loss += f64::from(p.loss.value_grad(s[0], yi).0);
                let r = f64::from(s[0]) - f64::from(yi);
                se += r * r;
                ae += r.abs();
            }
            out.push((obj, loss / n, true));
            out.push(("mse".into(), se / n, true));
            out.push(("absolute_loss".into(), ae / n, true));
        }
    }
    out
}

/// Area under the ROC curve of a binary classifier's scores (ties counted half).
fn roc_auc(scores: &[Vec<f32>], y: &[f32]) -> f64 {
    let mut s: Vec<(f32, bool)> = scores.iter().zip(y).map(|(s, &yi)| (s[0], yi > 0.5)).collect();
    s.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let pos = s.iter().filter(|v| v.1).count() as f64;
    let neg = s.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    // Sum of the positives' (average) ranks.
    let (mut rank_sum, mut i) = (0f64, 0);
    while i < s.len() {
        let mut j = i;
        while j < s.len() && s[j].0 == s[i].0 {
            j += 1;
        }
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg * s[i..j].iter().filter(|v| v.1).count() as f64;
        i = j;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

// ---------------------------------------------------------------------------------------------
// The container contract

/// Checks the labels of a channel for the predictor type.
fn check_labels(name: &str, rows: &DenseRows, p: &LinearParams) -> Result<(), JobError> {
    for (i, &y) in rows.labels.iter().enumerate() {
        let ok = match p.predictor_type {
            PredictorType::Binary => y == 0.0 || y == 1.0,
            PredictorType::Multiclass => y >= 0.0 && y.fract() == 0.0 && (y as usize) < p.num_classes,
            PredictorType::Regressor => y.is_finite(),
        };
        if !ok {
            let want = match p.predictor_type {
                PredictorType::Binary => "binary_classifier labels must be 0 or 1".to_string(),
                PredictorType::Multiclass => format!(
                    "multiclass_classifier labels must be integers from 0 to num_classes - 1 = {}",
                    p.num_classes - 1
                ),
                PredictorType::Regressor => "regressor labels must be finite numbers".to_string(),
            };
            let shown = if y.is_nan() {
                "missing".to_string()
            } else {
                format!("{y}")
            };
            return Err(JobError::User(format!(
                "channel '{name}': row {} has label {shown}; {want}",
                i + 1
            )));
        }
    }
    Ok(())
}

/// A channel's rows and labels: RecordIO-protobuf (label in the record) or CSV (label first),
/// from files or a Pipe FIFO; `feature_dim` `None` (auto) takes the width of the first row.
fn read_channel(
    paths: &JobPaths,
    name: &str,
    cfg: &ChannelConfig,
    feature_dim: Option<usize>,
) -> Result<DenseRows, JobError> {
    let want = Want {
        algorithm: "Linear Learner",
        label: true,
    };
    dense_input::read_channel(paths, name, cfg, feature_dim, want)
}

fn check_width(name: &str, rows: &DenseRows, d: usize) -> Result<(), JobError> {
    if rows.n_cols != d {
        return Err(JobError::User(format!(
            "channel '{name}' has {} features per row but {} are expected (feature_dim, or the \
             width of channel 'train'); every channel needs the same columns",
            rows.n_cols, d
        )));
    }
    Ok(())
}

/// SageMaker's built-in Linear Learner.
pub struct LinearLearner;

/// The registry entry.
pub static LINEAR_LEARNER: LinearLearner = LinearLearner;

/// Metrics SageMaker defines for Linear Learner, by kind: (name, is a loss).
const CHANNEL_METRICS: &[(&str, bool)] = &[
    ("binary_classification_accuracy", false),
    ("binary_f_beta", false),
    ("precision", false),
    ("recall", false),
    ("roc_auc_score", false),
    ("mse", true),
    ("absolute_loss", true),
    ("multiclass_accuracy", false),
    ("multiclass_top_k_accuracy", false),
    ("macro_precision", false),
    ("macro_recall", false),
    ("macro_f_beta", false),
    ("dcg", false),
];

impl Algorithm for LinearLearner {
    fn name(&self) -> &'static str {
        "linear-learner"
    }

    fn images(&self) -> &'static [&'static str] {
        &["linear-learner", "kiln/linear-learner"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[
            ChannelSpec::TRAIN,
            ChannelSpec::VALIDATION,
            ChannelSpec::TEST,
            ChannelSpec::MODEL,
        ]
    }

    fn content_types(&self) -> &'static [&'static str] {
        dense_input::CONTENT_TYPES
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        LinearParams::from_hyperparameters(hp).map(|_| ())
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        let q = "#quality_metric: host=\\S+,";
        let mut out = vec![(
            "train:progress".to_string(),
            "#progress_metric: host=\\S+, completed (\\S+) %".to_string(),
        )];
        for ch in ["train", "validation", "test"] {
            // Per epoch (train, validation) and after training (every channel); test has no epochs.
            if ch != "test" {
                out.push((
                    format!("{ch}:objective_loss"),
                    format!("{q} epoch=\\S+, {ch} \\S+_objective <loss>=(\\S+)"),
                ));
            }
            let final_name = if ch == "test" {
                "test:objective_loss".to_string()
            } else {
                format!("{ch}:objective_loss:final")
            };
            out.push((final_name, format!("{q} {ch} \\S+_objective <loss>=(\\S+)")));
            for (m, is_loss) in CHANNEL_METRICS {
                // SageMaker defines the train channel's binary and regression metrics only.
                let binary_or_regression = !m.starts_with("multiclass") && !m.starts_with("macro") && *m != "dcg";
                if ch == "train" && (!binary_or_regression || *m == "roc_auc_score") {
                    continue;
                }
                let kind = if *is_loss { "loss" } else { "score" };
                // `binary_f_1.000`, `macro_f_1.000`, `multiclass_top_k_accuracy_3` carry a parameter.
                let shown = match *m {
                    "binary_f_beta" => "binary_f_\\S+",
                    "macro_f_beta" => "macro_f_\\S+",
                    "multiclass_top_k_accuracy" => "multiclass_top_k_accuracy_\\S+",
                    other => other,
                };
                out.push((format!("{ch}:{m}"), format!("{q} {ch} {shown} <{kind}>=(\\S+)")));
            }
        }
        out
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        let (ch, name) = metric.split_once(':')?;
        if !matches!(ch, "train" | "validation" | "test") {
            return None;
        }
        match name {
            "objective_loss" | "objective_loss:final" => Some(false),
            _ => CHANNEL_METRICS
                .iter()
                .find(|(m, _)| *m == name)
                .map(|(_, is_loss)| !is_loss),
        }
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
            "Linear Learner",
            paths,
            env,
            LinearParams::from_hyperparameters,
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
    p: &LinearParams,
    host: &str,
    threads: usize,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let train_cfg = channels
        .get("train")
        .ok_or_else(|| JobError::User("channel 'train' is required".into()))?;
    let train = read_channel(paths, "train", train_cfg, p.feature_dim)?;
    let d = train.n_cols;
    if let Some(fd) = p.feature_dim
        && fd != d
    {
        return Err(JobError::User(format!(
            "channel 'train' has {d} features per row but hyperparameter 'feature_dim' is {fd}; set \
             feature_dim to the number of feature columns (or auto)"
        )));
    }
    // An incompatible model channel is the first thing to fix: say so before the data's details.
    let prior = match channels.get(MODEL_CHANNEL) {
        Some(_) => {
            let m = read_prior(&paths.channel_dir(MODEL_CHANNEL))?;
            check_prior(&m, p, d)?;
            let start = if solves_exactly(p, d) {
                "checked the model of channel 'model'; squared loss is solved exactly, so the result is the \
                 same minimizer with or without it"
            } else {
                "starting from the model of channel 'model'"
            };
            let _ = writeln!(err, "kiln linear-learner: {start}");
            Some(m)
        }
        None => None,
    };
    check_labels("train", &train, p)?;
    let mut others = BTreeMap::new();
    for name in ["validation", "test"] {
        if let Some(cfg) = channels.get(name) {
            let rows = read_channel(paths, name, cfg, Some(d))?;
            check_width(name, &rows, d)?;
            check_labels(name, &rows, p)?;
            others.insert(name, rows);
        }
    }
    let num_models = p.num_models.unwrap_or(AUTO_NUM_MODELS);
    let _ = writeln!(
        err,
        "kiln linear-learner: train {} rows x {d} features{}{}; {} {} models, loss {}, optimizer {:?}, {} epochs, \
         mini_batch_size {}; {threads} threads (read in {:.3}s)",
        train.n_rows(),
        others
            .get("validation")
            .map_or(String::new(), |v| format!(", validation {} rows", v.n_rows())),
        others
            .get("test")
            .map_or(String::new(), |v| format!(", test {} rows", v.n_rows())),
        p.predictor_type.name(),
        num_models,
        p.loss.name(),
        p.optimizer,
        p.epochs,
        p.mini_batch_size,
        started.elapsed().as_secs_f64()
    );
    let fit_start = std::time::Instant::now();
    let mut log = Vec::new();
    let fitted = fit_from(
        p,
        &train,
        others.get("validation"),
        prior.as_ref(),
        threads,
        0x6c69_6e65_6172,
        host,
        &mut log,
    );
    let fit_s = fit_start.elapsed().as_secs_f64();
    let _ = out.write_all(&log);
    if fitted.exact {
        let _ = writeln!(
            err,
            "kiln linear-learner: fit in {fit_s:.3}s; solved exactly (normal equations, squared loss); kept model {}",
            fitted.best_model
        );
    } else {
        let _ = writeln!(
            err,
            "kiln linear-learner: fit in {fit_s:.3}s; {} epochs; kept model {} of epoch {}{}",
            fitted.epochs_run,
            fitted.best_model,
            fitted.best_epoch,
            fitted
                .model
                .threshold
                .map_or(String::new(), |t| format!(", threshold {t}"))
        );
    }
    let model = fitted.model;
    // The final model on each channel, as SageMaker reports it after training.
    for (name, rows) in std::iter::once(("train", &train)).chain(others.iter().map(|(n, r)| (*n, r))) {
        for (metric, value, is_loss) in channel_metrics(p, &model, rows) {
            let kind = if is_loss { "loss" } else { "score" };
            let _ = writeln!(out, "#quality_metric: host={host}, {name} {metric} <{kind}>={value}");
            if name == "test" {
                let _ = writeln!(out, "#test_score ({host}) : ('{metric}', {value})");
            }
        }
    }
    let _ = writeln!(
        err,
        "kiln linear-learner: done in {:.3}s",
        started.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let path = paths.model_dir.join(MODEL_FILE);
    let json =
        serde_json::to_string(&model).map_err(|e| JobError::Internal(format!("could not encode the model: {e}")))?;
    std::fs::write(&path, json).map_err(|e| JobError::Internal(format!("could not write {}: {e}", path.display())))
}

/// Reads a model: `linear-learner-model.json`, or a directory holding it.
pub fn load_model(path: &Path) -> Result<LinearModel, JobError> {
    let file: PathBuf = if path.is_dir() {
        path.join(MODEL_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| JobError::User(format!("could not read model {}: {e}", file.display())))?;
    parse_model(&text, &file.display().to_string())
}

/// A model file's text, checked; `shown` names it in errors.
fn parse_model(text: &str, shown: &str) -> Result<LinearModel, JobError> {
    let m: LinearModel = serde_json::from_str(text)
        .map_err(|e| JobError::User(format!("{shown} is not a kiln Linear Learner model: {e}")))?;
    let outputs = if m.predictor_type == "multiclass_classifier" {
        m.num_classes
    } else {
        1
    };
    if m.algorithm != "linear-learner"
        || PredictorType::parse(&m.predictor_type).is_none()
        || m.weights.len() != outputs
        || m.bias.len() != outputs
        || m.weights.iter().any(|w| w.len() != m.feature_dim)
    {
        return Err(JobError::User(format!(
            "{shown} is not a kiln Linear Learner model (algorithm '{}', predictor_type '{}', {} weight arrays of \
             feature_dim {})",
            m.algorithm,
            m.predictor_type,
            m.weights.len(),
            m.feature_dim
        )));
    }
    Ok(m)
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let PredictArgs {
        model,
        data,
        content_type: ct,
        output,
        nthread,
        has_label,
    } = PredictArgs::parse(args, USAGE, true)?;
    let model = load_model(&model)?;
    let rows = read_predict_data(&data, ct.as_deref(), model.feature_dim, "Linear Learner", has_label)?.values;
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let scores: Vec<Vec<f32>> = pool.install(|| rows.par_chunks(model.feature_dim).map(|x| model.score(x)).collect());
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for s in &scores {
            match model.predictor_type.as_str() {
                "regressor" => writeln!(w, "{}", s[0])?,
                "binary_classifier" => writeln!(w, "{},{}", model.label(s), s[0])?,
                _ => {
                    write!(w, "{}", model.label(s))?;
                    for v in s {
                        write!(w, ",{v}")?;
                    }
                    writeln!(w)?;
                }
            }
        }
        w.flush()
    };
    match output {
        Some(path) => {
            let mut f = std::fs::File::create(&path)
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

    fn params(pairs: &[(&str, &str)]) -> LinearParams {
        LinearParams::from_hyperparameters(&hp(pairs)).unwrap()
    }

    #[test]
    fn hyperparameters_defaults_and_errors() {
        let p = params(&[("predictor_type", "binary_classifier"), ("feature_dim", "4")]);
        assert_eq!((p.epochs, p.mini_batch_size, p.early_stopping_patience), (15, 1000, 3));
        assert_eq!(
            (p.loss, p.optimizer, p.criterion),
            (Loss::Logistic, Optimizer::Adam, Criterion::Accuracy)
        );
        assert_eq!((p.num_models, p.feature_dim, p.use_bias), (None, Some(4), true));
        assert!(!p.normalize_label && p.normalize_data && p.unbias_data);
        let p = params(&[
            ("predictor_type", "regressor"),
            ("use_bias", "False"),
            ("num_models", "auto"),
        ]);
        assert_eq!((p.loss, p.feature_dim), (Loss::Squared, None));
        assert!(p.normalize_label && !p.unbias_label && !p.unbias_data);
        let p = params(&[
            ("predictor_type", "multiclass_classifier"),
            ("num_classes", "5"),
            ("_tuning_objective_metric", "validation:objective_loss"),
        ]);
        assert_eq!((p.loss, p.num_classes, p.num_models), (Loss::Softmax, 5, Some(1)));
        let p = params(&[
            ("predictor_type", "binary_classifier"),
            ("positive_example_weight_mult", "balanced"),
            ("loss", "hinge_loss"),
            ("margin", "2"),
        ]);
        assert_eq!(
            (p.positive_weight, p.loss),
            (PositiveWeight::Balanced, Loss::Hinge(2.0))
        );

        let err = |pairs: &[(&str, &str)]| LinearParams::from_hyperparameters(&hp(pairs)).unwrap_err().to_string();
        assert!(err(&[("feature_dim", "2")]).starts_with("Hyperparameter 'predictor_type' is required"));
        assert!(err(&[("predictor_type", "classifier")]).contains("is not one of: binary_classifier"));
        assert!(err(&[("predictor_type", "multiclass_classifier")]).contains("'num_classes' is required"));
        assert_eq!(
            err(&[("predictor_type", "multiclass_classifier"), ("num_classes", "2")]),
            "Hyperparameter 'num_classes': value '2' is out of range: it must be an integer in [3, 1000000]"
        );
        assert_eq!(
            err(&[("predictor_type", "regressor"), ("epochs", "0")]),
            "Hyperparameter 'epochs': value '0' is out of range: it must be an integer >= 1"
        );
        assert!(err(&[("predictor_type", "regressor"), ("learning_rate", "-1")]).contains("must be a number > 0"));
        assert!(err(&[("predictor_type", "regressor"), ("wd", "x")]).contains("is not a number >= 0"));
        assert!(err(&[("predictor_type", "regressor"), ("target_recall", "1.5")]).contains("in [0, 1]"));
        assert!(
            err(&[("predictor_type", "regressor"), ("loss", "logistic")])
                .contains("does not apply to predictor_type regressor")
        );
        assert!(err(&[("predictor_type", "binary_classifier"), ("optimizer", "lbfgs")]).contains("auto, adam, sgd"));
        assert!(err(&[("predictor_type", "binary_classifier"), ("use_bias", "yes")]).contains("true, false"));
        assert!(
            err(&[
                ("predictor_type", "binary_classifier"),
                ("binary_classifier_model_selection_criteria", "auc")
            ])
            .contains("f_beta")
        );
        assert!(
            err(&[("predictor_type", "binary_classifier"), ("alpha", "1")]).contains("'alpha' is not a Linear Learner")
        );
    }

    /// `n` rows of `d` features, uniform in [-1, 1] then scaled and shifted per column (so that
    /// normalization matters), and `w . x + b` for them.
    fn linear_data(n: usize, w: &[f32], b: f32, seed: u64) -> (DenseRows, Vec<f32>) {
        let d = w.len();
        let mut rng = Rng::new(seed);
        let mut rows = DenseRows::new(d);
        let mut z = Vec::with_capacity(n);
        for _ in 0..n {
            let x: Vec<f32> = (0..d)
                .map(|j| (rng.next_f64() as f32 * 2.0 - 1.0) * (1.0 + j as f32) + j as f32)
                .collect();
            z.push(dot(w, &x) + b);
            rows.values.extend(x);
            rows.labels.push(0.0);
        }
        (rows, z)
    }

    #[test]
    fn regressor_recovers_known_weights() {
        let w = [2.0f32, -1.0, 0.5, 3.0];
        let (mut rows, z) = linear_data(20_000, &w, 1.5, 1);
        rows.labels = z;
        let p = params(&[
            ("predictor_type", "regressor"),
            ("epochs", "30"),
            ("mini_batch_size", "200"),
            ("wd", "0"),
        ]);
        let f = fit(&p, &rows, None, 2, 7, "algo-1", &mut Vec::new());
        for (got, want) in f.model.weights[0].iter().zip(&w) {
            assert!((got - want).abs() < 0.02, "{:?} vs {w:?}", f.model.weights);
        }
        assert!((f.model.bias[0] - 1.5).abs() < 0.05, "{:?}", f.model.bias);
        let mse = channel_metrics(&p, &f.model, &rows)
            .iter()
            .find(|m| m.0 == "mse")
            .unwrap()
            .1;
        assert!(mse < 1e-3, "{mse}");
    }

    /// Cases solved by hand: noiseless `y = 2x + 1` gives back exactly its weight and bias;
    /// with `wd` and no bias, `w = sum xy / (sum x^2 + n wd / 2)`.
    #[test]
    fn exact_regressor_matches_hand_solved_cases() {
        let mut rows = DenseRows::new(1);
        for x in [0.0f32, 1.0, 2.0, 3.0] {
            rows.values.push(x);
            rows.labels.push(2.0 * x + 1.0);
        }
        let p = params(&[("predictor_type", "regressor"), ("wd", "0"), ("num_models", "1")]);
        assert!(solves_exactly(&p, 1));
        let f = fit(&p, &rows, None, 2, 3, "algo-1", &mut Vec::new());
        assert!(f.exact);
        assert!((f.model.weights[0][0] - 2.0).abs() < 1e-5, "{:?}", f.model);
        assert!((f.model.bias[0] - 1.0).abs() < 1e-5, "{:?}", f.model);
        // Eight candidates (wd 0 and 1e-4) selected on a validation channel: the unregularized
        // one fits noiseless data best, and the log has the one epoch's lines.
        let p8 = params(&[("predictor_type", "regressor")]);
        let mut log = Vec::new();
        let f = fit(&p8, &rows, Some(&rows), 2, 3, "algo-1", &mut log);
        assert!(f.exact && f.best_model < 4, "model {}", f.best_model);
        assert!((f.model.weights[0][0] - 2.0).abs() < 1e-4, "{:?}", f.model);
        let log = String::from_utf8(log).unwrap();
        assert!(
            log.contains("epoch=0, validation square_loss_objective <loss>="),
            "{log}"
        );
        assert!(log.contains("criteria=loss_function"), "{log}");

        let mut rows = DenseRows::new(1);
        for (x, y) in [(1.0f32, 1.0f32), (2.0, 3.0), (3.0, 2.0)] {
            rows.values.push(x);
            rows.labels.push(y);
        }
        let p = params(&[
            ("predictor_type", "regressor"),
            ("wd", "2"),
            ("num_models", "1"),
            ("use_bias", "false"),
            ("normalize_data", "false"),
            ("normalize_label", "false"),
        ]);
        let f = fit(&p, &rows, None, 1, 3, "algo-1", &mut Vec::new());
        assert!((f.model.weights[0][0] - 13.0 / 17.0).abs() < 1e-6, "{:?}", f.model);
        assert_eq!(f.model.bias[0], 0.0);
    }

    /// The exact path's objective (the SGD path's own: mean squared residual plus `wd/2 |w|^2`)
    /// is at most what SGD reaches on the same data, and only squared loss without `l1` or an
    /// explicit learning rate takes it.
    #[test]
    fn exact_regressor_objective_is_at_most_sgds() {
        // Features in [-1, 1] (no normalization, so the objective is the one in these units).
        let w = [2.0f32, -1.0, 0.5, 3.0, 0.0];
        let mut rng = Rng::new(8);
        let mut rows = DenseRows::new(w.len());
        for _ in 0..4_000 {
            let x: Vec<f32> = w.iter().map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
            rows.labels
                .push(dot(&w, &x) + 1.5 + (rng.next_f64() as f32 - 0.5) * 4.0);
            rows.values.extend(x);
        }
        let plain = [
            ("predictor_type", "regressor"),
            ("wd", "0.01"),
            ("num_models", "1"),
            ("normalize_data", "false"),
            ("normalize_label", "false"),
            ("unbias_label", "false"),
            ("epochs", "30"),
            ("mini_batch_size", "100"),
        ];
        let objective = |m: &LinearModel| {
            let d = w.len();
            let sq: f64 = rows
                .values
                .chunks_exact(d)
                .zip(&rows.labels)
                .map(|(x, &y)| f64::from(dot(&m.weights[0], x) + m.bias[0] - y).powi(2))
                .sum();
            let reg: f64 = m.weights[0].iter().map(|&v| f64::from(v).powi(2)).sum();
            sq / rows.n_rows() as f64 + 0.005 * reg
        };
        let exact = fit(&params(&plain), &rows, None, 2, 3, "algo-1", &mut Vec::new());
        assert!(exact.exact);
        let mut with_lr = plain.to_vec();
        with_lr.push(("learning_rate", "0.01"));
        let sgd = fit(&params(&with_lr), &rows, None, 2, 3, "algo-1", &mut Vec::new());
        assert!(!sgd.exact);
        let (oe, os) = (objective(&exact.model), objective(&sgd.model));
        assert!(oe <= os * (1.0 + 1e-6), "exact {oe} vs sgd {os}");
        assert!(os < oe * 1.2, "SGD should get close: exact {oe} vs sgd {os}");
        for extra in [("l1", "0.01"), ("loss", "absolute_loss"), ("learning_rate", "0.1")] {
            let mut hp = plain.to_vec();
            hp.push(extra);
            assert!(!solves_exactly(&params(&hp), 5), "{extra:?}");
        }
        assert!(!solves_exactly(&params(&plain), EXACT_MAX_DIM + 1));
    }

    #[test]
    fn warm_start_continues_from_the_prior_model() {
        let w = [2.0f32, -1.0, 0.5, 3.0];
        let (mut rows, z) = linear_data(5_000, &w, 1.5, 4);
        rows.labels = z;
        let p = params(&[
            ("predictor_type", "regressor"),
            ("epochs", "20"),
            ("mini_batch_size", "100"),
        ]);
        let first = fit(&p, &rows, None, 2, 1, "algo-1", &mut Vec::new()).model;
        // A step too small to move: the warm-started model is the prior, through both transforms.
        let tiny = LinearParams {
            epochs: 1,
            learning_rate: Some(1e-9),
            num_models: Some(1),
            ..p.clone()
        };
        let again = fit_from(&tiny, &rows, None, Some(&first), 1, 9, "algo-1", &mut Vec::new()).model;
        for (a, b) in again.weights[0].iter().zip(&first.weights[0]) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {:?}", again.weights, first.weights);
        }
        assert!((again.bias[0] - first.bias[0]).abs() < 1e-3);
        // Without the prior the same step leaves a model far from it.
        let cold = fit(&tiny, &rows, None, 1, 9, "algo-1", &mut Vec::new()).model;
        assert!((cold.weights[0][3] - first.weights[0][3]).abs() > 0.5);
        let wrong = params(&[("predictor_type", "binary_classifier")]);
        let e = check_prior(&first, &wrong, 4).unwrap_err().to_string();
        assert!(
            e.contains("predictor_type regressor but this job has predictor_type binary_classifier"),
            "{e}"
        );
        assert!(
            check_prior(&first, &p, 5)
                .unwrap_err()
                .to_string()
                .contains("feature_dim 4")
        );
    }

    #[test]
    fn learns_a_separable_binary_problem_and_its_threshold() {
        let w = [1.0f32, -2.0, 0.0, 0.5, 1.0];
        let (mut rows, z) = linear_data(10_000, &w, -3.0, 2);
        rows.labels = z.iter().map(|&v| f32::from(u8::from(v > 0.0))).collect();
        let mut log = Vec::new();
        let p = params(&[("predictor_type", "binary_classifier"), ("epochs", "10")]);
        let f = fit(&p, &rows, None, 2, 3, "algo-1", &mut log);
        let m = channel_metrics(&p, &f.model, &rows);
        let acc = m.iter().find(|m| m.0 == "binary_classification_accuracy").unwrap().1;
        assert!(acc > 0.99, "{m:?}");
        assert!(m.iter().find(|m| m.0 == "roc_auc_score").unwrap().1 > 0.999);
        let t = f.model.threshold.unwrap();
        assert!((0.0..=1.0).contains(&t), "{t}");
        let text = String::from_utf8(log).unwrap();
        assert!(
            text.contains(
                "#quality_metric: host=algo-1, epoch=0, train binary_classification_cross_entropy_objective <loss>="
            ),
            "{text}"
        );
        // The model file predicts as the metrics say.
        let x = &rows.values[..5];
        let s = f.model.score(x);
        assert_eq!(f.model.label(&s), rows.labels[0]);
        assert_eq!(f.model.binary_score(x), s[0]);
    }

    /// Models train in tiles of eight lanes whose grouping follows the thread count; a model's
    /// arithmetic must not depend on its lane or its tile mates, so every thread count gives
    /// the same bits (including tiles of 3 and a part-filled second tile with 12 models).
    #[test]
    fn binary_models_do_not_depend_on_the_thread_count() {
        let w = [1.0f32, -2.0, 0.0, 0.5, 1.0, 0.3, -0.7, 2.0, 0.1, -1.0, 0.4];
        let (mut rows, z) = linear_data(3_000, &w, 0.5, 11);
        rows.labels = z.iter().map(|&v| f32::from(u8::from(v > 0.0))).collect();
        for num_models in ["8", "12"] {
            let p = params(&[
                ("predictor_type", "binary_classifier"),
                ("epochs", "4"),
                ("mini_batch_size", "100"),
                ("num_models", num_models),
                ("l1", "0.001"),
            ]);
            let one = fit(&p, &rows, None, 1, 5, "algo-1", &mut Vec::new());
            for threads in [2, 3, 5] {
                let other = fit(&p, &rows, None, threads, 5, "algo-1", &mut Vec::new());
                assert_eq!(other.model, one.model, "{num_models} models on {threads} threads");
                assert_eq!((other.best_model, other.best_epoch), (one.best_model, one.best_epoch));
            }
        }
    }

    #[test]
    fn multiclass_learns_three_regions() {
        let mut rng = Rng::new(5);
        let mut rows = DenseRows::new(2);
        for _ in 0..6000 {
            let c = rng.below(3);
            let center = [[0.0f32, 4.0], [4.0, -4.0], [-4.0, -4.0]][c];
            rows.values.push(center[0] + rng.next_f64() as f32 - 0.5);
            rows.values.push(center[1] + rng.next_f64() as f32 - 0.5);
            rows.labels.push(c as f32);
        }
        let p = params(&[
            ("predictor_type", "multiclass_classifier"),
            ("num_classes", "3"),
            ("epochs", "5"),
        ]);
        let f = fit(&p, &rows, Some(&rows), 2, 1, "algo-1", &mut Vec::new());
        let m = channel_metrics(&p, &f.model, &rows);
        assert_eq!(m.iter().find(|m| m.0 == "multiclass_accuracy").unwrap().1, 1.0, "{m:?}");
        assert_eq!(m.iter().find(|m| m.0 == "dcg").unwrap().1, 1.0);
    }

    #[test]
    fn fast_math_matches_std() {
        use std::f32::consts::{FRAC_1_SQRT_2, SQRT_2};
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (fast_exp(x), x.exp());
            assert!(((got - want) / want).abs() < 5e-7, "exp({x}) = {got}, not {want}");
            x += 0.0137;
        }
        for &x in &[
            1e-30f32,
            1e-5,
            0.3,
            FRAC_1_SQRT_2.next_down(),
            FRAC_1_SQRT_2.next_up(),
            1.0,
            SQRT_2.next_down(),
            SQRT_2,
            SQRT_2.next_up(),
            2.0,
            10.0,
            12345.678,
            3e38,
        ] {
            let (got, want) = (fast_ln(x), x.ln());
            assert!(
                (got - want).abs() < 2e-7 * want.abs().max(1.0),
                "ln({x}) = {got}, not {want}"
            );
        }
        for &(z, y) in &[
            (0.0f32, 1.0f32),
            (3.0, 0.0),
            (-3.0, 0.0),
            (100.0, 0.0),
            (-100.0, 1.0),
            (100.0, 1.0),
        ] {
            let (l, g) = Loss::Logistic.value_grad(z, y);
            let (fl, sig) = logistic(z, y);
            assert!((fl - l).abs() < 1e-5 * l.max(1.0), "loss({z}, {y}) = {fl}, not {l}");
            assert!((-(2.0 * y - 1.0) * sig - g).abs() < 1e-6, "grad({z}, {y})");
        }
    }

    #[test]
    fn thresholds_follow_the_criterion() {
        // Scores 0.9, 0.8 positive; 0.7 negative; 0.6 positive; 0.1 negative.
        let scored = vec![(0.9, true), (0.8, true), (0.7, false), (0.6, true), (0.1, false)];
        let mut p = params(&[("predictor_type", "binary_classifier")]);
        assert_eq!(exact_threshold(&p, scored.clone()), 0.8f32 as f64);
        p.criterion = Criterion::PrecisionAtTargetRecall;
        p.target_recall = 1.0;
        assert_eq!(exact_threshold(&p, scored.clone()), 0.6f32 as f64);
        p.criterion = Criterion::RecallAtTargetPrecision;
        p.target_precision = 0.7;
        assert_eq!(exact_threshold(&p, scored), 0.6f32 as f64);
    }

    #[test]
    fn metric_definitions_match_the_lines_and_directions() {
        let defs = LINEAR_LEARNER.metric_definitions();
        // The service injects at most 40 (SageMaker's limit); SageMaker's own list has 37.
        assert_eq!(defs.len(), 38);
        let names: Vec<&str> = defs.iter().map(|d| d.0.as_str()).collect();
        assert!(names.iter().all(|n| names.iter().filter(|m| *m == n).count() == 1));
        for n in [
            "validation:objective_loss",
            "test:objective_loss",
            "test:binary_classification_accuracy",
            "test:binary_f_beta",
            "test:precision",
            "test:recall",
            "test:mse",
            "test:absolute_loss",
            "test:multiclass_accuracy",
            "train:objective_loss",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let maximize = |m: &str| LINEAR_LEARNER.objective_is_maximize(m);
        assert_eq!(maximize("validation:objective_loss"), Some(false));
        assert_eq!(maximize("test:mse"), Some(false));
        assert_eq!(maximize("validation:binary_f_beta"), Some(true));
        assert_eq!(maximize("test:binary_classification_accuracy"), Some(true));
        assert_eq!(maximize("test:recall"), Some(true));
        assert_eq!(maximize("test:msd"), None);
    }

    #[test]
    fn model_file_round_trips_and_checks_its_shape() {
        let dir = std::env::temp_dir().join(format!("kiln-ll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = LinearModel {
            algorithm: "linear-learner".into(),
            version: 1,
            predictor_type: "binary_classifier".into(),
            loss: "logistic".into(),
            feature_dim: 2,
            num_classes: 2,
            weights: vec![vec![1.0, -1.0]],
            bias: vec![0.0],
            threshold: Some(0.7),
        };
        std::fs::write(dir.join(MODEL_FILE), serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(load_model(&dir).unwrap(), m);
        // sigmoid(1) = 0.73 >= 0.7; sigmoid(0.5) = 0.62 < 0.7.
        assert_eq!(m.label(&m.score(&[1.0, 0.0])), 1.0);
        assert_eq!(m.label(&m.score(&[0.5, 0.0])), 0.0);
        let bad = LinearModel {
            weights: vec![vec![1.0]],
            ..m
        };
        std::fs::write(dir.join(MODEL_FILE), serde_json::to_string(&bad).unwrap()).unwrap();
        assert!(
            load_model(&dir)
                .unwrap_err()
                .to_string()
                .contains("not a kiln Linear Learner model")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
