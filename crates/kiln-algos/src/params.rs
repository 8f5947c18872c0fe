//! XGBoost hyperparameters with SageMaker's names, aliases, ranges and defaults.
//!
//! [`XgbConfig`] is the unchecked form (a plain struct, or parsed from the job's string map);
//! [`XgbConfig::check`] validates it once into [`XgbParams`], the only thing the trainer accepts
//! (linfa's `ParamGuard` pattern), so training never sees a bad value.

use std::collections::BTreeMap;
use std::fmt;

use crate::metric::Metric;
use crate::objective::Objective;

/// A hyperparameter problem; the message names the hyperparameter, the problem and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// Not a hyperparameter of this algorithm.
    #[error(
        "Hyperparameter '{name}' is not recognized by the XGBoost algorithm; remove it or check \
         the spelling (known: {known})"
    )]
    Unknown {
        /// The name given.
        name: String,
        /// Some known names.
        known: String,
    },
    /// Required but missing.
    #[error("Hyperparameter '{name}' is required: {why}")]
    Missing {
        /// The name.
        name: &'static str,
        /// Why / what to set.
        why: String,
    },
    /// Not parseable as the expected type.
    #[error("Hyperparameter '{name}': value '{value}' is not {expected}")]
    Invalid {
        /// The name.
        name: String,
        /// The value given.
        value: String,
        /// What was expected, e.g. "an integer".
        expected: String,
    },
    /// A number outside its range.
    #[error("Hyperparameter '{name}': value '{value}' is out of range {range}")]
    OutOfRange {
        /// The name.
        name: String,
        /// The value given.
        value: String,
        /// The allowed range, e.g. "[0, 1]".
        range: Range,
    },
    /// A value kiln understands but does not support.
    #[error("Hyperparameter '{name}': value '{value}' is not supported: {why}")]
    Unsupported {
        /// The name.
        name: String,
        /// The value given.
        value: String,
        /// Why / what to use instead.
        why: String,
    },
}

/// A numeric range for messages and checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
}

impl Range {
    const fn closed(lo: f64, hi: f64) -> Self {
        Range {
            lo,
            hi,
            lo_open: false,
            hi_open: false,
        }
    }
    const fn at_least(lo: f64) -> Self {
        Range {
            lo,
            hi: f64::INFINITY,
            lo_open: false,
            hi_open: true,
        }
    }
    const fn above(lo: f64) -> Self {
        Range {
            lo,
            hi: f64::INFINITY,
            lo_open: true,
            hi_open: true,
        }
    }
    const fn unit_open_closed() -> Self {
        Range {
            lo: 0.0,
            hi: 1.0,
            lo_open: true,
            hi_open: false,
        }
    }
    const fn open(lo: f64, hi: f64) -> Self {
        Range {
            lo,
            hi,
            lo_open: true,
            hi_open: true,
        }
    }
    fn contains(&self, v: f64) -> bool {
        !v.is_nan()
            && (if self.lo_open { v > self.lo } else { v >= self.lo })
            && (if self.hi_open { v < self.hi } else { v <= self.hi })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hi = if self.hi.is_infinite() {
            "inf".to_string()
        } else {
            self.hi.to_string()
        };
        write!(
            f,
            "{}{}, {}{}",
            if self.lo_open { '(' } else { '[' },
            self.lo,
            hi,
            if self.hi_open { ')' } else { ']' }
        )
    }
}

/// Tree growth strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrowPolicy {
    /// Level by level (`depthwise`, the default).
    #[default]
    Depthwise,
    /// Best loss reduction first (`lossguide`).
    Lossguide,
}

/// Unchecked hyperparameters: build one by hand (start from `Default`) or with
/// [`XgbConfig::from_hyperparameters`], then call [`XgbConfig::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct XgbConfig {
    /// Boosting rounds (required, >= 1).
    pub num_round: usize,
    /// Objective.
    pub objective: Objective,
    /// Learning rate, [0, 1].
    pub eta: f64,
    /// Minimum split loss, >= 0.
    pub gamma: f64,
    /// Maximum depth (0 = none, lossguide only).
    pub max_depth: usize,
    /// Minimum child hessian, >= 0.
    pub min_child_weight: f64,
    /// Leaf weight cap, >= 0 (0 = none).
    pub max_delta_step: f64,
    /// Row subsample ratio, (0, 1].
    pub subsample: f64,
    /// Column sample per tree, (0, 1].
    pub colsample_bytree: f64,
    /// Column sample per level, (0, 1].
    pub colsample_bylevel: f64,
    /// Column sample per node, (0, 1].
    pub colsample_bynode: f64,
    /// L2 regularisation, >= 0.
    pub lambda: f64,
    /// L1 regularisation, >= 0.
    pub alpha: f64,
    /// Weight of positive examples, > 0.
    pub scale_pos_weight: f64,
    /// Initial prediction (None = estimated from the labels).
    pub base_score: Option<f64>,
    /// Maximum bins per feature, [2, 256].
    pub max_bin: usize,
    /// Growth policy.
    pub grow_policy: GrowPolicy,
    /// Maximum leaves (0 = none).
    pub max_leaves: usize,
    /// Random seed.
    pub seed: u64,
    /// Threads (None = caller decides).
    pub nthread: Option<usize>,
    /// Stop after this many rounds without improvement on the validation set.
    pub early_stopping_rounds: Option<usize>,
    /// Metrics to print (empty = the objective's default).
    pub eval_metric: Vec<Metric>,
    /// The tuning objective metric (`validation:auc`): printed and used for early stopping.
    pub tuning_objective_metric: Option<Metric>,
    /// Whether the second CSV column holds instance weights.
    pub csv_weights: bool,
}

impl Default for XgbConfig {
    fn default() -> Self {
        Self {
            num_round: 0,
            objective: Objective::SquaredError,
            eta: 0.3,
            gamma: 0.0,
            max_depth: 6,
            min_child_weight: 1.0,
            max_delta_step: 0.0,
            subsample: 1.0,
            colsample_bytree: 1.0,
            colsample_bylevel: 1.0,
            colsample_bynode: 1.0,
            lambda: 1.0,
            alpha: 0.0,
            scale_pos_weight: 1.0,
            base_score: None,
            max_bin: 256,
            grow_policy: GrowPolicy::Depthwise,
            max_leaves: 0,
            seed: 0,
            nthread: None,
            early_stopping_rounds: None,
            eval_metric: Vec::new(),
            tuning_objective_metric: None,
            csv_weights: false,
        }
    }
}

/// Validated hyperparameters; only [`XgbConfig::check`] makes one. Read fields through `Deref`.
#[derive(Debug, Clone, PartialEq)]
pub struct XgbParams {
    cfg: XgbConfig,
    metrics: Vec<Metric>,
    warnings: Vec<String>,
}

impl std::ops::Deref for XgbParams {
    type Target = XgbConfig;
    fn deref(&self) -> &XgbConfig {
        &self.cfg
    }
}

impl XgbParams {
    /// These parameters with `num_round` counted on top of a model that already has `prior`
    /// rounds (incremental training: the job trains `num_round` more).
    pub fn after_rounds(&self, prior: usize) -> XgbParams {
        let mut p = self.clone();
        p.cfg.num_round += prior;
        p
    }

    /// Metrics printed each round, in order (eval_metric or the default, plus the tuning metric).
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The metric early stopping watches: the tuning metric, else the last printed one.
    pub fn early_stopping_metric(&self) -> Option<Metric> {
        self.cfg
            .tuning_objective_metric
            .or_else(|| self.metrics.last().copied())
    }

    /// Notes about accepted-but-ignored hyperparameters.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// The default metric for an objective (xgboost's `DefaultEvalMetric`).
pub fn default_metric(obj: &Objective) -> Metric {
    match obj {
        Objective::SquaredError | Objective::RegLogistic => Metric::Rmse,
        Objective::AbsoluteError => Metric::Mae,
        Objective::PseudoHuber { .. } => Metric::Mphe,
        Objective::Gamma => Metric::GammaDeviance,
        Objective::Tweedie { rho } => Metric::TweedieNloglik { rho: *rho },
        Objective::Poisson => Metric::PoissonNloglik,
        Objective::BinaryLogistic | Objective::BinaryLogitRaw => Metric::Logloss,
        Objective::BinaryHinge => Metric::Error {
            threshold: 0.5,
            explicit: false,
        },
        Objective::Softmax { .. } => Metric::Merror,
        Objective::Softprob { .. } => Metric::Mlogloss,
    }
}

fn range_err(name: &str, v: impl ToString, range: Range) -> ParamError {
    ParamError::OutOfRange {
        name: name.to_string(),
        value: v.to_string(),
        range,
    }
}

impl XgbConfig {
    /// Validates every field; the error names the first bad hyperparameter and its range.
    pub fn check(self) -> Result<XgbParams, ParamError> {
        self.check_with_warnings(Vec::new())
    }

    fn check_with_warnings(self, warnings: Vec<String>) -> Result<XgbParams, ParamError> {
        let c = &self;
        if c.num_round < 1 {
            return Err(range_err("num_round", c.num_round, Range::at_least(1.0)));
        }
        let floats: [(&str, f64, Range); 12] = [
            ("eta", c.eta, Range::closed(0.0, 1.0)),
            ("gamma", c.gamma, Range::at_least(0.0)),
            ("min_child_weight", c.min_child_weight, Range::at_least(0.0)),
            ("max_delta_step", c.max_delta_step, Range::at_least(0.0)),
            ("subsample", c.subsample, Range::unit_open_closed()),
            ("colsample_bytree", c.colsample_bytree, Range::unit_open_closed()),
            ("colsample_bylevel", c.colsample_bylevel, Range::unit_open_closed()),
            ("colsample_bynode", c.colsample_bynode, Range::unit_open_closed()),
            ("lambda", c.lambda, Range::at_least(0.0)),
            ("alpha", c.alpha, Range::at_least(0.0)),
            ("scale_pos_weight", c.scale_pos_weight, Range::above(0.0)),
            ("max_bin", c.max_bin as f64, Range::closed(2.0, 256.0)),
        ];
        for (name, v, r) in floats {
            if !r.contains(v) {
                return Err(range_err(name, v, r));
            }
        }
        if let Objective::Tweedie { rho } = c.objective
            && !Range::open(1.0, 2.0).contains(f64::from(rho))
        {
            return Err(range_err("tweedie_variance_power", rho, Range::open(1.0, 2.0)));
        }
        if let Objective::PseudoHuber { slope } = c.objective
            && !Range::above(0.0).contains(f64::from(slope))
        {
            return Err(range_err("huber_slope", slope, Range::above(0.0)));
        }
        if let Objective::Softmax { num_class } | Objective::Softprob { num_class } = c.objective
            && num_class < 2
        {
            return Err(range_err("num_class", num_class, Range::at_least(2.0)));
        }
        if let Some(b) = c.base_score {
            let r = match c.objective {
                Objective::BinaryLogistic | Objective::BinaryLogitRaw | Objective::RegLogistic => {
                    Some(Range::open(0.0, 1.0))
                }
                Objective::Gamma | Objective::Tweedie { .. } | Objective::Poisson => Some(Range::above(0.0)),
                _ => None,
            };
            if let Some(r) = r
                && !r.contains(b)
            {
                return Err(ParamError::Unsupported {
                    name: "base_score".into(),
                    value: b.to_string(),
                    why: format!("{} needs base_score in {r}", c.objective.name()),
                });
            }
            if !b.is_finite() {
                return Err(range_err("base_score", b, Range::above(f64::NEG_INFINITY)));
            }
        }
        if c.max_depth == 0 && c.grow_policy == GrowPolicy::Depthwise {
            return Err(ParamError::Unsupported {
                name: "max_depth".into(),
                value: "0".into(),
                why: "an unlimited depth needs grow_policy=lossguide (and usually max_leaves)".into(),
            });
        }
        if c.nthread == Some(0) {
            return Err(range_err("nthread", 0, Range::at_least(1.0)));
        }
        if c.early_stopping_rounds == Some(0) {
            return Err(range_err("early_stopping_rounds", 0, Range::at_least(1.0)));
        }
        let multi = c.objective.is_multiclass();
        let mut metrics = if c.eval_metric.is_empty() {
            vec![default_metric(&c.objective)]
        } else {
            c.eval_metric.clone()
        };
        if let Some(t) = c.tuning_objective_metric
            && !metrics.iter().any(|m| m.name() == t.name())
        {
            metrics.push(t);
        }
        for m in &metrics {
            if m.needs_multiclass() && !multi {
                return Err(ParamError::Unsupported {
                    name: "eval_metric".into(),
                    value: m.name(),
                    why: format!(
                        "it needs a multi:softmax or multi:softprob objective, not {}",
                        c.objective.name()
                    ),
                });
            }
            if multi && matches!(m, Metric::Logloss) {
                return Err(ParamError::Unsupported {
                    name: "eval_metric".into(),
                    value: m.name(),
                    why: "use mlogloss with a multi-class objective".into(),
                });
            }
        }
        Ok(XgbParams {
            cfg: self,
            metrics,
            warnings,
        })
    }

    /// Parses SageMaker's hyperparameter map (string → string; values may be JSON-quoted).
    pub fn from_hyperparameters(map: &BTreeMap<String, String>) -> Result<XgbParams, ParamError> {
        let mut hp = Hp::new(map);
        let mut c = XgbConfig {
            num_round: hp.int("num_round", &[])?.ok_or(ParamError::Missing {
                name: "num_round",
                why: "set the number of boosting rounds, e.g. num_round=100".into(),
            })?,
            ..XgbConfig::default()
        };
        let d = XgbConfig::default();
        c.eta = hp.float("eta", &["learning_rate"])?.unwrap_or(d.eta);
        c.gamma = hp.float("gamma", &["min_split_loss"])?.unwrap_or(d.gamma);
        c.max_depth = hp.int("max_depth", &[])?.unwrap_or(d.max_depth);
        c.min_child_weight = hp.float("min_child_weight", &[])?.unwrap_or(d.min_child_weight);
        c.max_delta_step = hp.float("max_delta_step", &[])?.unwrap_or(d.max_delta_step);
        c.subsample = hp.float("subsample", &[])?.unwrap_or(d.subsample);
        c.colsample_bytree = hp.float("colsample_bytree", &[])?.unwrap_or(1.0);
        c.colsample_bylevel = hp.float("colsample_bylevel", &[])?.unwrap_or(1.0);
        c.colsample_bynode = hp.float("colsample_bynode", &[])?.unwrap_or(1.0);
        c.lambda = hp.float("lambda", &["reg_lambda"])?.unwrap_or(d.lambda);
        c.alpha = hp.float("alpha", &["reg_alpha"])?.unwrap_or(d.alpha);
        c.scale_pos_weight = hp.float("scale_pos_weight", &[])?.unwrap_or(1.0);
        c.base_score = hp.float("base_score", &[])?;
        c.max_bin = hp.int("max_bin", &[])?.unwrap_or(d.max_bin);
        c.max_leaves = hp.int("max_leaves", &["max_leaf_nodes"])?.unwrap_or(0);
        c.seed = hp.int_signed("seed", &["random_state"])?.unwrap_or(0) as u64;
        c.nthread = hp.int("nthread", &["n_jobs"])?;
        c.early_stopping_rounds = hp.int("early_stopping_rounds", &[])?;
        c.csv_weights = hp.flag("csv_weights")?;
        c.grow_policy = match hp.string("grow_policy", &[])?.as_deref() {
            None | Some("depthwise") => GrowPolicy::Depthwise,
            Some("lossguide") => GrowPolicy::Lossguide,
            Some(v) => return Err(hp.invalid("grow_policy", v, "one of: depthwise, lossguide")),
        };
        let rho = hp.float("tweedie_variance_power", &[])?.unwrap_or(1.5);
        let slope = hp.float("huber_slope", &[])?.unwrap_or(1.0);
        let num_class = hp.int("num_class", &[])?;
        let objective = hp
            .string("objective", &[])?
            .unwrap_or_else(|| "reg:squarederror".into());
        let need_class = |name: &'static str| -> Result<usize, ParamError> {
            num_class.ok_or(ParamError::Missing {
                name: "num_class",
                why: format!("objective {name} needs the number of classes, e.g. num_class=3"),
            })
        };
        c.objective = match objective.as_str() {
            "reg:squarederror" | "reg:linear" => Objective::SquaredError,
            "reg:logistic" => Objective::RegLogistic,
            "reg:absoluteerror" => Objective::AbsoluteError,
            "reg:pseudohubererror" => Objective::PseudoHuber { slope: slope as f32 },
            "reg:gamma" => Objective::Gamma,
            "reg:tweedie" => Objective::Tweedie { rho: rho as f32 },
            "count:poisson" => Objective::Poisson,
            "binary:logistic" => Objective::BinaryLogistic,
            "binary:logitraw" => Objective::BinaryLogitRaw,
            "binary:hinge" => Objective::BinaryHinge,
            "multi:softmax" => Objective::Softmax {
                num_class: need_class("multi:softmax")?,
            },
            "multi:softprob" => Objective::Softprob {
                num_class: need_class("multi:softprob")?,
            },
            "rank:pairwise"
            | "rank:ndcg"
            | "rank:map"
            | "reg:squaredlogerror"
            | "survival:aft"
            | "survival:cox"
            | "reg:quantileerror" => {
                return Err(ParamError::Unsupported {
                    name: "objective".into(),
                    value: objective,
                    why: "kiln does not implement this objective yet".into(),
                });
            }
            other => {
                return Err(hp.invalid(
                    "objective",
                    other,
                    "one of: reg:squarederror, reg:linear, reg:logistic, reg:absoluteerror, \
                     reg:pseudohubererror, reg:gamma, reg:tweedie, count:poisson, \
                     binary:logistic, binary:logitraw, binary:hinge, multi:softmax, \
                     multi:softprob",
                ));
            }
        };
        if let Some(list) = hp.string("eval_metric", &[])? {
            for m in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let metric = Metric::parse(m, rho as f32).map_err(|why| ParamError::Unsupported {
                    name: "eval_metric".into(),
                    value: m.into(),
                    why,
                })?;
                c.eval_metric.push(metric);
            }
        }
        if let Some(t) = hp.string("_tuning_objective_metric", &[])? {
            let metric_name = match t.split_once(':') {
                Some(("validation" | "train", m)) => m.to_string(),
                _ => {
                    return Err(hp.invalid(
                        "_tuning_objective_metric",
                        &t,
                        "of the form 'validation:<metric>', e.g. validation:auc",
                    ));
                }
            };
            let metric = Metric::parse(&metric_name, rho as f32).map_err(|why| ParamError::Unsupported {
                name: "_tuning_objective_metric".into(),
                value: t.clone(),
                why,
            })?;
            c.tuning_objective_metric = Some(metric);
        }
        let mut warnings = Vec::new();
        match hp.string("booster", &[])?.as_deref() {
            None | Some("gbtree") => {}
            Some(v) => {
                return Err(ParamError::Unsupported {
                    name: "booster".into(),
                    value: v.into(),
                    why: "kiln implements booster=gbtree only".into(),
                });
            }
        }
        match hp.string("tree_method", &[])?.as_deref() {
            None | Some("auto" | "hist" | "approx" | "exact" | "gpu_hist") => {}
            Some(v) => {
                return Err(hp.invalid(
                    "tree_method",
                    v,
                    "one of: auto, exact, approx, hist, gpu_hist (kiln always uses hist)",
                ));
            }
        }
        if let Some(n) = hp.int("num_parallel_tree", &[])?
            && n != 1
        {
            return Err(ParamError::Unsupported {
                name: "num_parallel_tree".into(),
                value: n.to_string(),
                why: "kiln grows one tree per round and class; use 1".into(),
            });
        }
        for name in IGNORED {
            if let Some(v) = hp.take(name)
                && SEMANTIC_IGNORED.contains(name)
            {
                warnings.push(format!("hyperparameter '{name}'='{v}' is accepted but ignored by kiln"));
            }
        }
        hp.finish()?;
        c.check_with_warnings(warnings)
    }
}

/// Names the container validates that kiln accepts without acting on them.
const IGNORED: &[&str] = &[
    "verbosity",
    "silent",
    "save_model_on_termination",
    "sketch_eps",
    "updater",
    "dsplit",
    "refresh_leaf",
    "process_type",
    "predictor",
    "monotone_constraints",
    "interaction_constraints",
    "sample_type",
    "normalize_type",
    "rate_drop",
    "one_drop",
    "skip_drop",
    "lambda_bias",
    "deterministic_histogram",
    "sampling_method",
    "aft_loss_distribution",
    "aft_loss_distribution_scale",
    "prob_buffer_row",
    "use_dask_gpu_training",
    "_kfold",
    "_num_cv_round",
    "single_precision_histogram",
    "max_cached_hist_node",
    "device",
    "validate_parameters",
    "disable_default_eval_metric",
    "max_cat_to_onehot",
    "enable_categorical",
];

/// Ignored names that would change the model in xgboost (worth a warning).
const SEMANTIC_IGNORED: &[&str] = &[
    "monotone_constraints",
    "interaction_constraints",
    "sampling_method",
    "_kfold",
    "_num_cv_round",
];

/// Every name (including aliases) the parser accepts.
const KNOWN: &[&str] = &[
    "num_round",
    "num_class",
    "objective",
    "eta",
    "learning_rate",
    "gamma",
    "min_split_loss",
    "max_depth",
    "min_child_weight",
    "max_delta_step",
    "subsample",
    "colsample_bytree",
    "colsample_bylevel",
    "colsample_bynode",
    "lambda",
    "reg_lambda",
    "alpha",
    "reg_alpha",
    "scale_pos_weight",
    "base_score",
    "max_bin",
    "grow_policy",
    "max_leaves",
    "seed",
    "nthread",
    "early_stopping_rounds",
    "eval_metric",
    "_tuning_objective_metric",
    "csv_weights",
    "tree_method",
    "booster",
    "num_parallel_tree",
    "tweedie_variance_power",
    "huber_slope",
];

/// Reads values from the map, remembering which keys were used.
struct Hp<'a> {
    map: &'a BTreeMap<String, String>,
    used: std::collections::BTreeSet<&'a str>,
}

impl<'a> Hp<'a> {
    fn new(map: &'a BTreeMap<String, String>) -> Self {
        Self {
            map,
            used: Default::default(),
        }
    }

    fn invalid(&self, name: &str, value: &str, expected: &str) -> ParamError {
        ParamError::Invalid {
            name: name.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// The raw value under `name` or an alias; values the SDK JSON-encoded are unquoted.
    fn raw(&mut self, name: &str, aliases: &[&str]) -> Result<Option<(String, String)>, ParamError> {
        let mut found: Option<(String, String)> = None;
        for n in std::iter::once(&name).chain(aliases) {
            if let Some((k, v)) = self.map.get_key_value(*n) {
                self.used.insert(k.as_str());
                let v = unquote(v);
                if let Some((prev_name, prev)) = &found
                    && *prev != v
                {
                    return Err(ParamError::Invalid {
                        name: name.into(),
                        value: v,
                        expected: format!("consistent with '{prev_name}'='{prev}' (they are aliases; set only one)"),
                    });
                }
                found = Some((k.clone(), v));
            }
        }
        Ok(found)
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.raw(name, &[]).ok().flatten().map(|(_, v)| v)
    }

    fn string(&mut self, name: &str, aliases: &[&str]) -> Result<Option<String>, ParamError> {
        Ok(self.raw(name, aliases)?.map(|(_, v)| v.trim().to_string()))
    }

    fn float(&mut self, name: &str, aliases: &[&str]) -> Result<Option<f64>, ParamError> {
        let Some((key, v)) = self.raw(name, aliases)? else {
            return Ok(None);
        };
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| !x.is_nan())
            .map(Some)
            .ok_or_else(|| self.invalid(&key, &v, "a number"))
    }

    fn int_signed(&mut self, name: &str, aliases: &[&str]) -> Result<Option<i64>, ParamError> {
        let Some((key, v)) = self.raw(name, aliases)? else {
            return Ok(None);
        };
        let t = v.trim();
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Some(i));
        }
        // "10.0" is an integer too (some tools format every number as a float).
        match t.parse::<f64>() {
            Ok(x) if x.fract() == 0.0 && x.abs() < 9e15 => Ok(Some(x as i64)),
            _ => Err(self.invalid(&key, &v, "an integer")),
        }
    }

    fn int(&mut self, name: &str, aliases: &[&str]) -> Result<Option<usize>, ParamError> {
        let key = self.raw(name, aliases)?.map_or_else(|| name.to_string(), |(k, _)| k);
        match self.int_signed(name, aliases)? {
            None => Ok(None),
            Some(i) if i < 0 => Err(range_err(&key, i, Range::at_least(0.0))),
            Some(i) => Ok(Some(i as usize)),
        }
    }

    fn flag(&mut self, name: &str) -> Result<bool, ParamError> {
        match self.string(name, &[])?.as_deref() {
            None | Some("0" | "false" | "False") => Ok(false),
            Some("1" | "true" | "True") => Ok(true),
            Some(v) => Err(self.invalid(name, v, "0 or 1")),
        }
    }

    fn finish(self) -> Result<(), ParamError> {
        for k in self.map.keys() {
            if self.used.contains(k.as_str()) || k.starts_with("sagemaker_") {
                continue;
            }
            return Err(ParamError::Unknown {
                name: k.clone(),
                known: KNOWN.join(", "),
            });
        }
        Ok(())
    }
}

/// Undoes the SageMaker SDK's JSON encoding of string values (`"\"abc\""` → `abc`).
fn unquote(v: &str) -> String {
    let t = v.trim();
    if t.starts_with('"')
        && let Ok(serde_json::Value::String(s)) = serde_json::from_str::<serde_json::Value>(t)
    {
        return s;
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<XgbParams, ParamError> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        XgbConfig::from_hyperparameters(&map)
    }

    #[test]
    fn defaults() {
        let p = parse(&[("num_round", "10")]).unwrap();
        assert_eq!(p.num_round, 10);
        assert_eq!(p.objective, Objective::SquaredError);
        assert_eq!(p.eta, 0.3);
        assert_eq!(p.max_depth, 6);
        assert_eq!(p.lambda, 1.0);
        assert_eq!(p.max_bin, 256);
        assert_eq!(p.metrics(), &[Metric::Rmse]);
        let p = parse(&[("num_round", "1"), ("objective", "binary:logistic")]).unwrap();
        assert_eq!(p.metrics(), &[Metric::Logloss]);
    }

    #[test]
    fn aliases_and_quoting() {
        let p = parse(&[
            ("num_round", "\"5\""),
            ("learning_rate", "0.1"),
            ("reg_lambda", "2"),
            ("reg_alpha", "0.5"),
            ("min_split_loss", "1"),
            ("objective", "\"reg:linear\""),
            ("max_depth", "4.0"),
        ])
        .unwrap();
        assert_eq!(
            (p.num_round, p.eta, p.lambda, p.alpha, p.gamma),
            (5, 0.1, 2.0, 0.5, 1.0)
        );
        assert_eq!(p.objective, Objective::SquaredError);
        assert_eq!(p.max_depth, 4);
        let e = parse(&[("num_round", "5"), ("eta", "0.1"), ("learning_rate", "0.2")]);
        assert!(e.unwrap_err().to_string().contains("aliases"));
    }

    #[test]
    fn range_errors_name_parameter_and_range() {
        let e = parse(&[("num_round", "5"), ("eta", "1.5")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Hyperparameter 'eta': value '1.5' is out of range [0, 1]"
        );
        let e = parse(&[("num_round", "5"), ("subsample", "0")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Hyperparameter 'subsample': value '0' is out of range (0, 1]"
        );
        let e = parse(&[("num_round", "0")]).unwrap_err();
        assert!(e.to_string().contains("'num_round'") && e.to_string().contains("[1, inf)"));
        let e = parse(&[("num_round", "5"), ("max_depth", "-1")]).unwrap_err();
        assert!(e.to_string().contains("'max_depth'"));
        let e = parse(&[("num_round", "5"), ("max_depth", "2.5")]).unwrap_err();
        assert!(e.to_string().contains("not an integer"));
        let e = parse(&[("num_round", "5"), ("lambda", "abc")]).unwrap_err();
        assert!(e.to_string().contains("'abc' is not a number"));
        let e = parse(&[
            ("num_round", "5"),
            ("objective", "reg:tweedie"),
            ("tweedie_variance_power", "2.5"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("(1, 2)"));
    }

    #[test]
    fn required_unknown_and_unsupported() {
        let e = parse(&[]).unwrap_err();
        assert!(e.to_string().contains("'num_round' is required"));
        let e = parse(&[("num_round", "5"), ("etaa", "0.1")]).unwrap_err();
        assert!(e.to_string().starts_with("Hyperparameter 'etaa' is not recognized"));
        let e = parse(&[("num_round", "5"), ("objective", "multi:softmax")]).unwrap_err();
        assert!(e.to_string().contains("num_class"));
        let e = parse(&[("num_round", "5"), ("objective", "foo")]).unwrap_err();
        assert!(e.to_string().contains("'objective'") && e.to_string().contains("binary:logistic"));
        let e = parse(&[("num_round", "5"), ("booster", "dart")]).unwrap_err();
        assert!(e.to_string().contains("gbtree"));
        let e = parse(&[("num_round", "5"), ("eval_metric", "ndcg")]).unwrap_err();
        assert!(e.to_string().contains("'ndcg'"));
        let e = parse(&[("num_round", "5"), ("eval_metric", "mlogloss")]).unwrap_err();
        assert!(e.to_string().contains("multi"));
        let e = parse(&[("num_round", "5"), ("max_depth", "0")]).unwrap_err();
        assert!(e.to_string().contains("lossguide"));
    }

    #[test]
    fn accepted_and_ignored() {
        let p = parse(&[
            ("num_round", "5"),
            ("tree_method", "hist"),
            ("verbosity", "1"),
            ("booster", "gbtree"),
            ("csv_weights", "1"),
            ("save_model_on_termination", "false"),
            ("sagemaker_program", "x"),
            ("monotone_constraints", "(1,0)"),
        ])
        .unwrap();
        assert!(p.csv_weights);
        assert_eq!(p.warnings().len(), 1);
    }

    #[test]
    fn metrics_and_tuning_objective() {
        let p = parse(&[
            ("num_round", "5"),
            ("objective", "binary:logistic"),
            ("eval_metric", "logloss,error@0.6"),
            ("_tuning_objective_metric", "validation:auc"),
        ])
        .unwrap();
        let names: Vec<String> = p.metrics().iter().map(Metric::name).collect();
        assert_eq!(names, ["logloss", "error@0.6", "auc"]);
        assert_eq!(p.early_stopping_metric(), Some(Metric::Auc));
        let p = parse(&[("num_round", "5"), ("eval_metric", "rmse,mae")]).unwrap();
        assert_eq!(p.early_stopping_metric(), Some(Metric::Mae));
        let e = parse(&[("num_round", "5"), ("_tuning_objective_metric", "auc")]).unwrap_err();
        assert!(e.to_string().contains("validation:<metric>"));
        let p = parse(&[("num_round", "5"), ("objective", "multi:softprob"), ("num_class", "3")]).unwrap();
        assert_eq!(p.objective, Objective::Softprob { num_class: 3 });
        assert_eq!(p.metrics(), &[Metric::Mlogloss]);
    }

    #[test]
    fn checked_config_from_struct() {
        let p = XgbConfig {
            num_round: 3,
            eta: 0.1,
            ..XgbConfig::default()
        }
        .check()
        .unwrap();
        assert_eq!(p.eta, 0.1);
        let e = XgbConfig {
            num_round: 3,
            colsample_bynode: 1.5,
            ..XgbConfig::default()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("colsample_bynode"));
    }
}
