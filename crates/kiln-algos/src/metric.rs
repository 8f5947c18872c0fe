//! Evaluation metrics with xgboost's names and definitions (plus the SageMaker container's
//! `r2`, `accuracy`, `f1` and `mse`). All are weighted by instance weights.

use rayon::prelude::*;

use crate::collective::{Collective, CommError, decode, encode};
use crate::rank::{Before, RankScratch, Ranked, rank_rows, sample_quantile_keys};

/// A per-row loss: (the row's predictions, its label) → loss.
type RowLoss<'a> = &'a (dyn Fn(&[f32], f64) -> f64 + Sync);

/// Weighted sums `(Σ w·loss, Σ w)` of a per-row loss.
fn loss_sums(preds: &[f32], k: usize, labels: &[f32], weights: Option<&[f32]>, f: RowLoss<'_>) -> (f64, f64) {
    let w = |i: usize| f64::from(weights.map_or(1.0, |w| w[i]));
    (0..labels.len())
        .into_par_iter()
        .with_min_len(4096)
        .map(|i| {
            let wi = w(i);
            (wi * f(&preds[i * k..(i + 1) * k], f64::from(labels[i])), wi)
        })
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The weighted sums `(Σ w·loss, Σ w)` of a per-row loss of one output per row, as
/// [`loss_sums`] gives them but with the loss inlined into the loop (no call per row): the
/// metrics most often printed every round (`logloss`, `error`). Pieces of rows are summed in
/// order, the same whatever the thread count.
fn weighted_sums(
    preds: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    f: impl Fn(f32, f64) -> f64 + Sync,
) -> (f64, f64) {
    const PIECE: usize = 1 << 14;
    let sums: Vec<(f64, f64)> = labels
        .par_chunks(PIECE)
        .enumerate()
        .map(|(c, ys)| {
            let rows = c * PIECE..c * PIECE + ys.len();
            let ps = &preds[rows.clone()];
            match weights {
                None => (
                    ps.iter().zip(ys).map(|(&p, &y)| f(p, f64::from(y))).sum(),
                    ys.len() as f64,
                ),
                Some(w) => ps
                    .iter()
                    .zip(ys)
                    .zip(&w[rows])
                    .fold((0.0, 0.0), |(s, sw), ((&p, &y), &w)| {
                        let w = f64::from(w);
                        (s + w * f(p, f64::from(y)), sw + w)
                    }),
            }
        })
        .collect();
    sums.iter().fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// The weighted mean of [`weighted_sums`].
fn weighted_mean(preds: &[f32], labels: &[f32], weights: Option<&[f32]>, f: impl Fn(f32, f64) -> f64 + Sync) -> f64 {
    ratio(weighted_sums(preds, labels, weights, f))
}

/// `s / sw`, NaN without weight.
fn ratio((s, sw): (f64, f64)) -> f64 {
    if sw > 0.0 { s / sw } else { f64::NAN }
}

/// Clamp of predicted probabilities in `logloss`.
const LOGLOSS_EPS: f64 = 1e-16;

/// Binary negative log-likelihood of one row.
#[inline]
fn logloss_row(p: f32, y: f64) -> f64 {
    let p = f64::from(p).clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS);
    // One logarithm for a 0/1 label: the same value as the general formula (the other term
    // is a zero), at half the cost.
    if y == 1.0 {
        -p.ln()
    } else if y == 0.0 {
        -(1.0 - p).ln()
    } else {
        -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
    }
}

/// Binary error of one row at threshold `t`.
#[inline]
fn error_row(p: f32, y: f64, t: f64) -> f64 {
    f64::from((f64::from(p) > t) != (y > 0.5))
}

/// An evaluation metric (`eval_metric` entry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Root mean squared error.
    Rmse,
    /// Root mean squared log error.
    Rmsle,
    /// Mean squared error (container metric).
    Mse,
    /// Mean absolute error.
    Mae,
    /// Mean absolute percentage error.
    Mape,
    /// Mean pseudo-Huber error (slope 1).
    Mphe,
    /// Binary negative log-likelihood.
    Logloss,
    /// Binary error rate at a threshold (0.5 for `error`).
    Error {
        /// Predictions above this count as positive.
        threshold: f32,
        /// Whether the name carries `@t`.
        explicit: bool,
    },
    /// Area under the ROC curve.
    Auc,
    /// Area under the precision-recall curve.
    Aucpr,
    /// Multi-class error rate.
    Merror,
    /// Multi-class negative log-likelihood.
    Mlogloss,
    /// Poisson negative log-likelihood.
    PoissonNloglik,
    /// Gamma negative log-likelihood.
    GammaNloglik,
    /// Gamma deviance.
    GammaDeviance,
    /// Tweedie negative log-likelihood at variance power rho.
    TweedieNloglik {
        /// Variance power.
        rho: f32,
    },
    /// Coefficient of determination (container metric, maximize).
    R2,
    /// Accuracy (container metric, maximize).
    Accuracy,
    /// F1 score: binary, or macro-averaged over classes (container metric, maximize).
    F1,
}

/// Every metric name `eval_metric` accepts (without `@` parameters).
pub const METRIC_NAMES: &[&str] = &[
    "rmse",
    "rmsle",
    "mse",
    "mae",
    "mape",
    "mphe",
    "logloss",
    "error",
    "auc",
    "aucpr",
    "merror",
    "mlogloss",
    "poisson-nloglik",
    "gamma-nloglik",
    "gamma-deviance",
    "tweedie-nloglik",
    "r2",
    "accuracy",
    "f1",
];

/// Metrics where larger is better (SageMaker container's `XGB_MAXIMIZE_METRICS`).
pub const MAXIMIZE: &[&str] = &[
    "accuracy",
    "auc",
    "aucpr",
    "balanced_accuracy",
    "f1",
    "f1_binary",
    "f1_macro",
    "map",
    "ndcg",
    "precision",
    "r2",
    "recall",
    "precision_macro",
    "precision_micro",
    "recall_macro",
    "recall_micro",
];

/// Metrics where smaller is better (SageMaker container's `XGB_MINIMIZE_METRICS`).
pub const MINIMIZE: &[&str] = &[
    "aft-nloglik",
    "cox-nloglik",
    "error",
    "gamma-deviance",
    "gamma-nloglik",
    "interval-regression-accuracy",
    "logloss",
    "mae",
    "mape",
    "merror",
    "mlogloss",
    "mphe",
    "mse",
    "poisson-nloglik",
    "rmse",
    "rmsle",
    "tweedie-nloglik",
];

impl Metric {
    /// Parses an `eval_metric` entry such as `auc`, `error@0.7` or `tweedie-nloglik@1.5`.
    /// `tweedie_rho` is the objective's variance power (used when no `@` is given).
    pub fn parse(s: &str, tweedie_rho: f32) -> Result<Self, String> {
        let s = s.trim();
        let (name, arg) = match s.split_once('@') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let arg_f = |a: &str| {
            a.parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("'{a}' after '@' in '{s}' is not a number"))
        };
        let m = match (name, arg) {
            ("rmse", None) => Metric::Rmse,
            ("rmsle", None) => Metric::Rmsle,
            ("mse", None) => Metric::Mse,
            ("mae", None) => Metric::Mae,
            ("mape", None) => Metric::Mape,
            ("mphe", None) => Metric::Mphe,
            ("logloss", None) => Metric::Logloss,
            ("error", None) => Metric::Error {
                threshold: 0.5,
                explicit: false,
            },
            ("error", Some(a)) => Metric::Error {
                threshold: arg_f(a)?,
                explicit: true,
            },
            ("auc", None) => Metric::Auc,
            ("aucpr", None) => Metric::Aucpr,
            ("merror", None) => Metric::Merror,
            ("mlogloss", None) => Metric::Mlogloss,
            ("poisson-nloglik", None) => Metric::PoissonNloglik,
            ("gamma-nloglik", None) => Metric::GammaNloglik,
            ("gamma-deviance", None) => Metric::GammaDeviance,
            ("tweedie-nloglik", None) => Metric::TweedieNloglik { rho: tweedie_rho },
            ("tweedie-nloglik", Some(a)) => Metric::TweedieNloglik { rho: arg_f(a)? },
            ("r2", None) => Metric::R2,
            ("accuracy", None) => Metric::Accuracy,
            ("f1", None) => Metric::F1,
            _ => {
                return Err(format!(
                    "'{s}' is not a supported metric; supported: {}, error@<t>, \
                     tweedie-nloglik@<rho>",
                    METRIC_NAMES.join(", ")
                ));
            }
        };
        Ok(m)
    }

    /// The name printed in log lines (`error@0.7`, `tweedie-nloglik@1.5`, ...).
    pub fn name(&self) -> String {
        match self {
            Metric::Rmse => "rmse".into(),
            Metric::Rmsle => "rmsle".into(),
            Metric::Mse => "mse".into(),
            Metric::Mae => "mae".into(),
            Metric::Mape => "mape".into(),
            Metric::Mphe => "mphe".into(),
            Metric::Logloss => "logloss".into(),
            Metric::Error { threshold, explicit } => {
                if *explicit {
                    format!("error@{threshold}")
                } else {
                    "error".into()
                }
            }
            Metric::Auc => "auc".into(),
            Metric::Aucpr => "aucpr".into(),
            Metric::Merror => "merror".into(),
            Metric::Mlogloss => "mlogloss".into(),
            Metric::PoissonNloglik => "poisson-nloglik".into(),
            Metric::GammaNloglik => "gamma-nloglik".into(),
            Metric::GammaDeviance => "gamma-deviance".into(),
            Metric::TweedieNloglik { rho } => format!("tweedie-nloglik@{rho}"),
            Metric::R2 => "r2".into(),
            Metric::Accuracy => "accuracy".into(),
            Metric::F1 => "f1".into(),
        }
    }

    /// The name without any `@` parameter (what metric definitions and tuning use).
    pub fn base_name(&self) -> String {
        let n = self.name();
        n.split('@').next().unwrap_or(&n).to_string()
    }

    /// Whether larger values are better.
    pub fn maximize(&self) -> bool {
        matches!(
            self,
            Metric::Auc | Metric::Aucpr | Metric::R2 | Metric::Accuracy | Metric::F1
        )
    }

    /// Whether the metric needs class probabilities of a multi-class objective.
    pub fn needs_multiclass(&self) -> bool {
        matches!(self, Metric::Merror | Metric::Mlogloss)
    }

    /// Evaluates on predictions as xgboost's `EvalTransform` produces them: one value per row, or
    /// `k` class probabilities per row when `k > 1`.
    pub fn eval(&self, preds: &[f32], k: usize, labels: &[f32], weights: Option<&[f32]>) -> f64 {
        self.eval_reusing(preds, k, labels, weights, &mut RankScratch::default())
    }

    /// [`Self::eval`] with the buffers of an earlier evaluation (the training loop keeps one
    /// per data set, so that evaluating every round allocates nothing).
    pub fn eval_reusing(
        &self,
        preds: &[f32],
        k: usize,
        labels: &[f32],
        weights: Option<&[f32]>,
        scratch: &mut RankScratch,
    ) -> f64 {
        if labels.is_empty() {
            return f64::NAN;
        }
        match *self {
            Metric::Logloss if k == 1 => return weighted_mean(preds, labels, weights, logloss_row),
            Metric::Error { threshold, .. } if k == 1 => {
                let t = f64::from(threshold);
                return weighted_mean(preds, labels, weights, |p, y| error_row(p, y, t));
            }
            _ => {}
        }
        self.eval_with(preds, k, labels, weights, scratch, &mut |f| {
            let (s, sw) = loss_sums(preds, k, labels, weights, f);
            if sw > 0.0 { s / sw } else { f64::NAN }
        })
    }

    /// [`Self::eval`] over a data set split across the hosts of `comm`: each host passes its
    /// rows, and every host gets the metric of all of them (the same bits everywhere). One
    /// metric of one set of [`eval_all_global`], which says how.
    pub fn eval_global(
        &self,
        preds: &[f32],
        k: usize,
        labels: &[f32],
        weights: Option<&[f32]>,
        scratch: &mut RankScratch,
        comm: &Collective,
    ) -> Result<f64, CommError> {
        let mut set = [EvalData {
            preds,
            k,
            labels,
            weights,
            scratch,
        }];
        Ok(eval_all_global(std::slice::from_ref(self), &mut set, comm)?[0][0])
    }

    /// How the metric is computed over several hosts' rows.
    fn global(&self, k: usize) -> Global {
        match *self {
            Metric::Auc | Metric::Aucpr if k == 1 => Global::Ranked {
                roc: *self == Metric::Auc,
            },
            Metric::Auc | Metric::Aucpr | Metric::F1 | Metric::R2 => Global::Other,
            _ => Global::Mean,
        }
    }

    /// This host's weighted sums `(Σ w·loss, Σ w)` of a [`Global::Mean`] metric.
    fn local_sums(&self, preds: &[f32], k: usize, labels: &[f32], weights: Option<&[f32]>) -> (f64, f64) {
        match *self {
            Metric::Logloss if k == 1 => weighted_sums(preds, labels, weights, logloss_row),
            Metric::Error { threshold, .. } if k == 1 => {
                let t = f64::from(threshold);
                weighted_sums(preds, labels, weights, |p, y| error_row(p, y, t))
            }
            _ => {
                let mut sums = (0.0, 0.0);
                self.eval_with(preds, k, labels, weights, &mut RankScratch::default(), &mut |f| {
                    sums = loss_sums(preds, k, labels, weights, f);
                    f64::NAN
                });
                sums
            }
        }
    }

    /// The value of a [`Global::Mean`] metric whose mean has the weighted sums `sums`.
    fn of_sums(&self, k: usize, sums: (f64, f64)) -> f64 {
        self.eval_with(&[], k, &[], None, &mut RankScratch::default(), &mut |_| ratio(sums))
    }

    /// A [`Global::Other`] metric over every host's rows: `f1` and multi-class areas gather
    /// every row at algo-1; `r2` sums each of its means over the hosts in turn.
    fn eval_other_global(
        &self,
        preds: &[f32],
        k: usize,
        labels: &[f32],
        weights: Option<&[f32]>,
        comm: &Collective,
    ) -> Result<f64, CommError> {
        if matches!(self, Metric::Auc | Metric::Aucpr | Metric::F1) {
            return gathered_eval(self, preds, k, labels, weights, comm);
        }
        let mut failed = None;
        let v = self.eval_with(preds, k, labels, weights, &mut RankScratch::default(), &mut |f| {
            let (s, sw) = loss_sums(preds, k, labels, weights, f);
            let mut x = [s, sw];
            if let Err(e) = comm.sum_f64(&mut x) {
                failed.get_or_insert(e);
            }
            ratio((x[0], x[1]))
        });
        failed.map_or(Ok(v), Err)
    }

    /// The metric, with `mean(loss)` the weighted mean of a per-row loss over the data set.
    fn eval_with(
        &self,
        preds: &[f32],
        k: usize,
        labels: &[f32],
        weights: Option<&[f32]>,
        scratch: &mut RankScratch,
        mean: &mut dyn FnMut(RowLoss<'_>) -> f64,
    ) -> f64 {
        const EPS: f64 = 1e-16;
        match *self {
            Metric::Rmse => mean(&|p, y| (f64::from(p[0]) - y).powi(2)).sqrt(),
            Metric::Mse => mean(&|p, y| (f64::from(p[0]) - y).powi(2)),
            Metric::Rmsle => mean(&|p, y| ((f64::from(p[0]) + 1.0).ln() - (y + 1.0).ln()).powi(2)).sqrt(),
            Metric::Mae => mean(&|p, y| (f64::from(p[0]) - y).abs()),
            Metric::Mape => mean(&|p, y| ((y - f64::from(p[0])) / y).abs()),
            Metric::Mphe => mean(&|p, y| {
                let z = f64::from(p[0]) - y;
                (1.0 + z * z).sqrt() - 1.0
            }),
            Metric::Logloss => mean(&|p, y| logloss_row(p[0], y)),
            Metric::Error { threshold, .. } => {
                let t = f64::from(threshold);
                if k > 1 {
                    return mean(&|p, y| f64::from(argmax(p) as f64 != y));
                }
                mean(&|p, y| error_row(p[0], y, t))
            }
            Metric::Merror => mean(&|p, y| f64::from(argmax(p) as f64 != y)),
            Metric::Mlogloss => mean(&|p, y| {
                let c = y as usize;
                -f64::from(p.get(c).copied().unwrap_or(0.0)).clamp(EPS, 1.0).ln()
            }),
            Metric::Accuracy => {
                if k > 1 {
                    mean(&|p, y| f64::from(argmax(p) as f64 == y))
                } else {
                    mean(&|p, y| f64::from((f64::from(p[0]) > 0.5) == (y > 0.5)))
                }
            }
            Metric::PoissonNloglik => mean(&|p, y| {
                let p = f64::from(p[0]).max(EPS);
                ln_gamma(y + 1.0) + p - p.ln() * y
            }),
            Metric::GammaNloglik => mean(&|p, y| {
                let p = f64::from(p[0]).max(EPS);
                y / p + p.ln()
            }),
            Metric::GammaDeviance => {
                2.0 * mean(&|p, y| {
                    let t = (y + EPS) / (f64::from(p[0]) + EPS);
                    t - t.ln() - 1.0
                })
            }
            Metric::TweedieNloglik { rho } => {
                let rho = f64::from(rho);
                mean(&|p, y| {
                    let p = f64::from(p[0]).max(EPS);
                    let a = y * ((1.0 - rho) * p.ln()).exp() / (1.0 - rho);
                    let b = ((2.0 - rho) * p.ln()).exp() / (2.0 - rho);
                    -a + b
                })
            }
            Metric::R2 => {
                let ybar = mean(&|_, y| y);
                let ss_res = mean(&|p, y| (y - f64::from(p[0])).powi(2));
                let ss_tot = mean(&|_, y| (y - ybar).powi(2));
                if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN }
            }
            Metric::F1 => f1(preds, k, labels, weights),
            Metric::Auc => {
                if k > 1 {
                    one_vs_rest(preds, k, labels, weights, auc)
                } else {
                    ranked_area_local(true, preds, labels, weights, |y| y > 0.5, scratch)
                }
            }
            Metric::Aucpr => {
                if k > 1 {
                    one_vs_rest(preds, k, labels, weights, aucpr)
                } else {
                    ranked_area_local(false, preds, labels, weights, |y| y > 0.5, scratch)
                }
            }
        }
    }
}

fn argmax(p: &[f32]) -> usize {
    crate::objective::argmax(p)
}

type BinaryAreaFn = fn(&[f32], &[f32], Option<&[f32]>, fn(f32) -> bool) -> f64;

/// Class-prevalence-weighted mean of per-class one-vs-rest areas.
fn one_vs_rest(preds: &[f32], k: usize, labels: &[f32], weights: Option<&[f32]>, area: BinaryAreaFn) -> f64 {
    let n = labels.len();
    let (mut total, mut wsum) = (0.0, 0.0);
    for c in 0..k {
        let scores: Vec<f32> = (0..n).map(|i| preds[i * k + c]).collect();
        let bin_labels: Vec<f32> = labels
            .iter()
            .map(|&y| if y as usize == c { 1.0 } else { 0.0 })
            .collect();
        let prevalence: f64 = (0..n)
            .filter(|&i| bin_labels[i] == 1.0)
            .map(|i| f64::from(weights.map_or(1.0, |w| w[i])))
            .sum();
        if prevalence == 0.0 {
            continue;
        }
        let a = area(&scores, &bin_labels, weights, |y| y > 0.5);
        if a.is_finite() {
            total += a * prevalence;
            wsum += prevalence;
        }
    }
    if wsum > 0.0 { total / wsum } else { f64::NAN }
}

/// [`Metric::eval`] of every host's rows, evaluated at algo-1 and broadcast.
fn gathered_eval(
    m: &Metric,
    preds: &[f32],
    k: usize,
    labels: &[f32],
    weights: Option<&[f32]>,
    comm: &Collective,
) -> Result<f64, CommError> {
    let mut mine = encode(&[labels.len() as u64]);
    mine.extend(encode(preds));
    mine.extend(encode(labels));
    mine.extend(encode(
        &weights.map_or_else(|| vec![1.0f32; labels.len()], <[f32]>::to_vec),
    ));
    let value = match comm.gather(mine)? {
        Some(all) => {
            let (mut p, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for b in all {
                let n = decode::<u64>(&b[..8])[0] as usize;
                let (bp, rest) = b[8..].split_at(4 * n * k);
                let (by, bw) = rest.split_at(4 * n);
                p.extend(decode::<f32>(bp));
                y.extend(decode::<f32>(by));
                w.extend(decode::<f32>(bw));
            }
            m.eval(&p, k, &y, Some(&w))
        }
        None => 0.0,
    };
    Ok(decode::<f64>(&comm.broadcast(encode(&[value]))?)[0])
}

/// How a metric is computed over several hosts' rows ([`eval_all_global`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    /// A function of one weighted mean: the hosts' sums of its numerator and denominator.
    Mean,
    /// A binary ROC (`roc`) or precision-recall area: the distributed ranking.
    Ranked { roc: bool },
    /// Anything else, on its own ([`Metric::eval_other_global`]).
    Other,
}

/// A data set's predictions, predictions per row, labels and weights.
type SetView<'a> = (&'a [f32], usize, &'a [f32], Option<&'a [f32]>);

/// One data set of a distributed evaluation: this host's rows (predictions as
/// [`Metric::eval`] takes them, `k` per row), and the set's buffers kept from round to round.
pub struct EvalData<'a> {
    /// This host's predictions.
    pub preds: &'a [f32],
    /// Predictions per row.
    pub k: usize,
    /// This host's labels.
    pub labels: &'a [f32],
    /// This host's weights.
    pub weights: Option<&'a [f32]>,
    /// The set's ranking buffers (and, distributed, the hosts' splitters of its ranking).
    pub scratch: &'a mut RankScratch,
}

/// Every metric of `metrics` on every set of `sets`, each over the rows of all the hosts of
/// `comm` (`[set][metric]`, the same bits on every host), with the exchanges of all of them
/// made together: one all-to-all and one sum per call, whatever the number of sets and
/// metrics (a second sum when a precision-recall area is asked for; the first evaluation of a
/// ranked set adds one to agree on its splitters).
///
/// - Means (`logloss`, `error`, `rmse`, ...): the sums of each host's numerator and
///   denominator.
/// - Binary `auc` and `aucpr`, exact, with the work shared out as a distributed sort does it:
///   splitters (placed from a grid of keys over every host's range in the previous round, from
///   a sample of each host's scores in the first) cut the score range into one range per host;
///   each host cuts its rows into those ranges in one pass, unsorted, and sends range r to host
///   r (4 bytes a row, 8 with weights), which sorts its range once, with the other hosts' rows
///   in it: exactly the sorted rows one host would have in that range. The ROC area of a
///   range that starts below positive weight `P` is the area folded from zero plus `P` times
///   the range's negative weight, so each host's range needs nothing from the others before
///   the sum; a precision-recall area does (its precision depends on what came before), hence
///   its second sum. The result is one host's area of the union: the same groups, summed in
///   the same order within a range (only the split into ranges, and so the last bits, differ).
///   The splitters only balance the work; any give the exact area.
/// - `r2`, `f1` and multi-class areas: on their own, after the others (see
///   [`Metric::eval_other_global`]).
pub fn eval_all_global(
    metrics: &[Metric],
    sets: &mut [EvalData<'_>],
    comm: &Collective,
) -> Result<Vec<Vec<f64>>, CommError> {
    if comm.size() == 1 {
        return Ok(sets
            .iter_mut()
            .map(|d| {
                metrics
                    .iter()
                    .map(|m| m.eval_reusing(d.preds, d.k, d.labels, d.weights, d.scratch))
                    .collect()
            })
            .collect());
    }
    let (n, me, n_sets) = (comm.size(), comm.rank(), sets.len());
    let plan: Vec<Vec<Global>> = sets
        .iter()
        .map(|d| metrics.iter().map(|m| m.global(d.k)).collect())
        .collect();
    let ranked: Vec<bool> = plan
        .iter()
        .map(|p| p.iter().any(|g| matches!(g, Global::Ranked { .. })))
        .collect();
    let wants = |s: usize, roc: bool| plan[s].contains(&Global::Ranked { roc });
    let views: Vec<SetView<'_>> = sets.iter().map(|d| (d.preds, d.k, d.labels, d.weights)).collect();

    // This host's sums of the means.
    let mut sums: Vec<f64> = Vec::new();
    for (s, &(p, k, y, w)) in views.iter().enumerate() {
        for (m, _) in metrics.iter().zip(&plan[s]).filter(|x| *x.1 == Global::Mean) {
            let (a, b) = m.local_sums(p, k, y, w);
            sums.extend([a, b]);
        }
    }

    // The ranked sets: cut into one range per host (at splitters agreed in the round before,
    // or from a sample of each host's scores the first time), exchanged, each range sorted.
    let mut splitters: Vec<Option<Vec<u32>>> = sets.iter_mut().map(|d| d.scratch.splitters.take()).collect();
    let first: Vec<usize> = (0..n_sets).filter(|&s| ranked[s] && splitters[s].is_none()).collect();
    if !first.is_empty() {
        let mut q = vec![0.0; n * first.len()];
        for (slot, &s) in q.chunks_exact_mut(n).zip(&first) {
            put_keys(slot, sample_quantile_keys(views[s].0, n).as_deref());
        }
        comm.sum_f64(&mut q)?;
        for (slot, &s) in q.chunks_exact(n).zip(&first) {
            splitters[s] = Some(splitters_of(slot));
        }
    }
    let mut outgoing = vec![Vec::new(); n];
    for (s, d) in sets.iter_mut().enumerate().filter(|(s, _)| ranked[*s]) {
        let cuts = splitters[s].get_or_insert_with(|| vec![0; n - 1]);
        let parts = d.scratch.cut(d.preds, d.labels, d.weights, |y| y > 0.5, cuts, me);
        for (out, part) in outgoing.iter_mut().zip(parts) {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(&part);
        }
    }
    let incoming = if ranked.contains(&true) {
        comm.all_to_all(outgoing)?
    } else {
        Vec::new()
    };
    let mut at = vec![0usize; incoming.len()];
    let mut mine: Vec<Option<Ranked<'_>>> = Vec::with_capacity(n_sets);
    for (s, d) in sets.iter_mut().enumerate() {
        if !ranked[s] {
            mine.push(None);
            continue;
        }
        let unreadable =
            |why: String| CommError::Setup(format!("{} cannot read the hosts' rankings: {why}", comm.host(me)));
        let parts = incoming
            .iter()
            .zip(at.iter_mut())
            .map(|(b, at)| next_frame(b, at))
            .collect::<Option<Vec<&[u8]>>>()
            .ok_or_else(|| unreadable("a part is cut short".into()))?;
        let others: Vec<&[u8]> = parts
            .iter()
            .enumerate()
            .filter(|(r, _)| *r != me)
            .map(|x| *x.1)
            .collect();
        let m = d.scratch.sort_range(&others).map_err(unreadable)?;
        // This host's range: its weights, rows and ROC area from zero; a grid of its keys.
        let (p, ng) = m.totals();
        let roc_from_zero = if wants(s, true) {
            m.plain_roc_area().unwrap_or_else(|| {
                m.fold(Before::NONE, |b| Area::after(true, b), |a, p, n| a.add(p, n))
                    .iter()
                    .map(|a| a.area)
                    .sum()
            })
        } else {
            0.0
        };
        let base = sums.len();
        sums.resize(base + (4 + GRID) * n, 0.0);
        sums[base + 4 * me..base + 4 * me + 4].copy_from_slice(&[p, ng, m.len() as f64, roc_from_zero]);
        let grid = base + 4 * n + GRID * me;
        for (x, k) in sums[grid..grid + GRID].iter_mut().zip(m.grid_keys(GRID)) {
            *x = f64::from(k);
        }
        mine.push(Some(m));
    }
    comm.sum_f64(&mut sums)?;

    let mut out = vec![vec![f64::NAN; metrics.len()]; n_sets];
    let mut sums = sums.as_slice();
    for (s, &(_, k, ..)) in views.iter().enumerate() {
        for (j, m) in metrics.iter().enumerate().filter(|x| plan[s][x.0] == Global::Mean) {
            out[s][j] = m.of_sums(k, (sums[0], sums[1]));
            sums = &sums[2..];
        }
    }
    // Per ranked set: each host's range (positive weight, negative weight, rows, ROC area from
    // zero), and the next round's splitters.
    let mut pr_areas = Vec::new();
    let mut ranges: Vec<(usize, &[f64], Before)> = Vec::new();
    for s in (0..n_sets).filter(|&s| ranked[s]) {
        let (block, rest) = sums.split_at((4 + GRID) * n);
        sums = rest;
        let (block, grids) = block.split_at(4 * n);
        if let Some(next) = splitters_of_grids(block, grids, n) {
            splitters[s] = Some(next);
        }
        let mut before = Before::NONE;
        let mut all = Before::NONE;
        let mut roc_area = 0.0;
        for (r, t) in block.chunks_exact(4).enumerate() {
            if r == me {
                before = all;
            }
            roc_area += t[3] + all.pos * t[1];
            all = Before {
                pos: all.pos + t[0],
                neg: all.neg + t[1],
                any: all.any || t[2] > 0.0,
            };
        }
        if wants(s, true) {
            let area = Area {
                roc: true,
                tp: all.pos,
                fp: all.neg,
                area: roc_area,
                prev_prec: f64::NAN,
            };
            set_where(&mut out[s], metrics, Metric::Auc, area.value());
        }
        if wants(s, false) {
            let m = mine[s].as_ref().expect("this host's range");
            let mine: f64 = m
                .fold(before, |b| Area::after(false, b), |a, p, n| a.add(p, n))
                .iter()
                .map(|a| a.area)
                .sum();
            let base = pr_areas.len();
            pr_areas.resize(base + n, 0.0);
            pr_areas[base + me] = mine;
        }
        ranges.push((s, block, all));
    }
    if !pr_areas.is_empty() {
        comm.sum_f64(&mut pr_areas)?;
        let mut areas = pr_areas.chunks_exact(n);
        for &(s, _, all) in ranges.iter().filter(|r| wants(r.0, false)) {
            let area = Area {
                roc: false,
                tp: all.pos,
                fp: all.neg,
                area: areas.next().expect("one block per set").iter().sum(),
                prev_prec: f64::NAN,
            };
            set_where(&mut out[s], metrics, Metric::Aucpr, area.value());
        }
    }
    drop(mine);
    for (d, sp) in sets.iter_mut().zip(splitters) {
        d.scratch.splitters = sp;
    }
    for (s, &(p, k, y, w)) in views.iter().enumerate() {
        for (j, m) in metrics.iter().enumerate().filter(|x| plan[s][x.0] == Global::Other) {
            out[s][j] = m.eval_other_global(p, k, y, w, comm)?;
        }
    }
    Ok(out)
}

/// Sets the values of `metric` in `values` (one per metric of `metrics`) to `value`.
fn set_where(values: &mut [f64], metrics: &[Metric], metric: Metric, value: f64) {
    for (v, _) in values.iter_mut().zip(metrics).filter(|x| *x.1 == metric) {
        *v = value;
    }
}

/// A host's quantile keys (`n - 1` of them) and 1, or zeros without rows, in `slot` (`n`
/// long), to be summed over the hosts.
fn put_keys(slot: &mut [f64], keys: Option<&[u32]>) {
    if let Some(keys) = keys {
        let (last, rest) = slot.split_last_mut().expect("n > 0");
        for (x, &k) in rest.iter_mut().zip(keys) {
            *x = f64::from(k);
        }
        *last = 1.0;
    }
}

/// Splitters from summed [`put_keys`] slots: the mean of the hosts' keys.
fn splitters_of(slot: &[f64]) -> Vec<u32> {
    let (&count, sums) = slot.split_last().expect("n > 0");
    sums.iter().map(|&s| (s / count.max(1.0)) as u32).collect()
}

/// Keys per host's range in the sum from which the hosts place the next round's splitters.
const GRID: usize = 64;

/// The next round's splitters from each host's range (`totals`: 4 values per host, the third
/// its rows) and the [`GRID`] keys over it (`grids`): the key nearest below each `i/n` of all
/// the rows. None without rows.
fn splitters_of_grids(totals: &[f64], grids: &[f64], n: usize) -> Option<Vec<u32>> {
    let lens: Vec<usize> = totals.chunks_exact(4).map(|t| t[2] as usize).collect();
    let total: usize = lens.iter().sum();
    if total == 0 {
        return None;
    }
    Some(
        (1..n)
            .map(|i| {
                let mut at = i * total / n;
                let mut r = 0;
                while at >= lens[r] {
                    at -= lens[r];
                    r += 1;
                }
                grids[r * GRID + at * GRID / lens[r]] as u32
            })
            .collect(),
    )
}

/// The next `u64`-length-prefixed frame of `b` at `*at`, moving `at` past it.
fn next_frame<'b>(b: &'b [u8], at: &mut usize) -> Option<&'b [u8]> {
    let len = u64::from_le_bytes(b.get(*at..*at + 8)?.try_into().ok()?) as usize;
    let frame = b.get(*at + 8..(*at + 8).checked_add(len)?)?;
    *at += 8 + len;
    Some(frame)
}

/// The ROC or precision-recall area of groups of tied rows fed by descending score.
#[derive(Clone, Copy)]
///
/// ROC: trapezoids between groups, over the total positive times negative weight. PR:
/// trapezoids between groups, starting at recall 0 with the first group's precision; the
/// recall steps are divided by the total positive weight at the end, which is the sum of
/// the groups' positive weights in group order, so no pass ahead is needed.
struct Area {
    roc: bool,
    tp: f64,
    fp: f64,
    area: f64,
    prev_prec: f64,
}

impl Area {
    #[cfg(test)]
    fn new(roc: bool) -> Self {
        Self {
            roc,
            tp: 0.0,
            fp: 0.0,
            area: 0.0,
            prev_prec: f64::NAN,
        }
    }

    /// The area of the groups that follow those summed up by `before`.
    fn after(roc: bool, before: Before) -> Self {
        let prev_prec = match before {
            Before { any: false, .. } => f64::NAN,
            Before { pos, neg, .. } if pos + neg > 0.0 => pos / (pos + neg),
            _ => 1.0,
        };
        Self {
            roc,
            tp: before.pos,
            fp: before.neg,
            area: 0.0,
            prev_prec,
        }
    }

    /// The next group (lower score than all before): its positive and negative weight.
    #[inline]
    fn add(&mut self, pos: f64, neg: f64) {
        let (tp0, fp0) = (self.tp, self.fp);
        self.tp += pos;
        self.fp += neg;
        if self.roc {
            self.area += (self.fp - fp0) * (self.tp + tp0) / 2.0;
        } else {
            let prec = if self.tp + self.fp > 0.0 {
                self.tp / (self.tp + self.fp)
            } else {
                1.0
            };
            let p0 = if self.prev_prec.is_nan() { prec } else { self.prev_prec };
            self.area += (self.tp - tp0) * (prec + p0) / 2.0;
            self.prev_prec = prec;
        }
    }

    /// The area; NaN without positives (or, for ROC, without negatives).
    fn value(&self) -> f64 {
        if self.tp == 0.0 || (self.roc && self.fp == 0.0) {
            return f64::NAN;
        }
        if self.roc {
            self.area / (self.tp * self.fp)
        } else {
            self.area / self.tp
        }
    }
}

/// ROC or precision-recall area from (score, positive weight, negative weight) by descending
/// distinct score, as [`auc`] and [`aucpr`] compute it (the tests' reference).
#[cfg(test)]
fn area_of_groups(roc: bool, groups: &[(f32, f64, f64)]) -> f64 {
    let mut a = Area::new(roc);
    for &(_, pos, neg) in groups {
        a.add(pos, neg);
    }
    a.value()
}

/// ROC (`roc`) or precision-recall area of one host's rows, ranking them in `scratch`.
fn ranked_area_local(
    roc: bool,
    scores: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    pos: impl Fn(f32) -> bool + Sync + Copy,
    scratch: &mut RankScratch,
) -> f64 {
    let m = rank_rows(scores, labels, weights, pos, scratch);
    if roc && let Some(area) = m.plain_roc_area() {
        let (tp, fp) = m.totals();
        return Area {
            roc,
            tp,
            fp,
            area,
            prev_prec: f64::NAN,
        }
        .value();
    }
    area_of_parts(&m.fold(Before::NONE, |b| Area::after(roc, b), |a, p, n| a.add(p, n)))
}

/// The area of consecutive parts of the ranking: the last part ends with the totals, and the
/// areas of the parts add up.
fn area_of_parts(parts: &[Area]) -> f64 {
    match parts.split_last() {
        Some((last, rest)) => Area {
            area: rest.iter().map(|a| a.area).sum::<f64>() + last.area,
            ..*last
        }
        .value(),
        None => f64::NAN,
    }
}

/// Weighted ROC AUC; tied scores form one trapezoid.
pub fn auc(scores: &[f32], labels: &[f32], weights: Option<&[f32]>, pos: fn(f32) -> bool) -> f64 {
    ranked_area_local(true, scores, labels, weights, pos, &mut RankScratch::default())
}

/// Weighted area under the precision-recall curve (trapezoids between tied-score groups,
/// starting at recall 0 with the first group's precision).
pub fn aucpr(scores: &[f32], labels: &[f32], weights: Option<&[f32]>, pos: fn(f32) -> bool) -> f64 {
    ranked_area_local(false, scores, labels, weights, pos, &mut RankScratch::default())
}

/// F1 at threshold 0.5 for one output, macro-averaged over classes for `k > 1`.
fn f1(preds: &[f32], k: usize, labels: &[f32], weights: Option<&[f32]>) -> f64 {
    let n = labels.len();
    let predicted = |i: usize| -> usize {
        if k > 1 {
            argmax(&preds[i * k..(i + 1) * k])
        } else {
            usize::from(preds[i] > 0.5)
        }
    };
    let classes = if k > 1 { k } else { 2 };
    let mut tp = vec![0.0f64; classes];
    let mut fp = vec![0.0f64; classes];
    let mut fneg = vec![0.0f64; classes];
    for i in 0..n {
        let w = f64::from(weights.map_or(1.0, |w| w[i]));
        let y = if k > 1 {
            labels[i] as usize
        } else {
            usize::from(labels[i] > 0.5)
        };
        let p = predicted(i);
        if p == y {
            tp[y] += w;
        } else {
            fp[p] += w;
            if y < classes {
                fneg[y] += w;
            }
        }
    }
    let score = |c: usize| {
        let d = 2.0 * tp[c] + fp[c] + fneg[c];
        if d > 0.0 { 2.0 * tp[c] / d } else { 0.0 }
    };
    if k > 1 {
        (0..classes).map(score).sum::<f64>() / classes as f64
    } else {
        score(1)
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, &g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(m: &str, p: &[f32], y: &[f32]) -> f64 {
        Metric::parse(m, 1.5).unwrap().eval(p, 1, y, None)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + b.abs())
    }

    #[test]
    fn regression_metrics_by_hand() {
        let p = [1.0, 2.0, 4.0];
        let y = [1.0, 3.0, 2.0];
        assert!(close(ev("rmse", &p, &y), (5.0f64 / 3.0).sqrt()));
        assert!(close(ev("mse", &p, &y), 5.0 / 3.0));
        assert!(close(ev("mae", &p, &y), 1.0));
        assert!(close(ev("mape", &p, &y), (0.0 + 1.0 / 3.0 + 1.0) / 3.0));
        let rmsle =
            (((2f64.ln() - 2f64.ln()).powi(2) + (3f64.ln() - 4f64.ln()).powi(2) + (5f64.ln() - 3f64.ln()).powi(2))
                / 3.0)
                .sqrt();
        assert!(close(ev("rmsle", &p, &y), rmsle));
        // r2 = 1 - SS_res/SS_tot; mean y = 2, SS_tot = 2, SS_res = 5
        assert!(close(ev("r2", &p, &y), 1.0 - 5.0 / 2.0));
        let mphe = ((1.0f64 + 1.0).sqrt() - 1.0 + (1.0f64 + 4.0).sqrt() - 1.0) / 3.0;
        assert!(close(ev("mphe", &p, &y), mphe));
    }

    #[test]
    fn weighted_mean() {
        let m = Metric::Mae;
        let v = m.eval(&[0.0, 0.0], 1, &[1.0, 3.0], Some(&[3.0, 1.0]));
        assert!(close(v, (3.0 + 3.0) / 4.0));
    }

    #[test]
    fn binary_metrics_by_hand() {
        let p = [0.9, 0.2, 0.6, 0.4];
        let y = [1.0, 0.0, 0.0, 1.0];
        let ll = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.4f64.ln()) / 4.0;
        assert!((ev("logloss", &p, &y) - ll).abs() < 1e-6);
        assert!(close(ev("error", &p, &y), 0.5));
        assert!(close(ev("error@0.7", &p, &y), 0.25));
        assert!(close(ev("accuracy", &p, &y), 0.5));
        // positives 0.9, 0.4; negatives 0.6, 0.2: pairs won = (0.9>0.6, 0.9>0.2, 0.4>0.2) = 3/4
        assert!(close(ev("auc", &p, &y), 0.75));
        // precision/recall: tp=1,fp=1,fn=1 → f1 = 2/(2+1+1) = 0.5
        assert!(close(ev("f1", &p, &y), 0.5));
        assert_eq!(Metric::parse("error@0.7", 1.5).unwrap().name(), "error@0.7");
    }

    #[test]
    fn count_metrics_by_hand() {
        let p = [2.0f32, 0.5];
        let y = [3.0f32, 0.0];
        // poisson: lgamma(y+1) + p - y ln p
        let want = ((6f64.ln() + 2.0 - 3.0 * 2f64.ln()) + (0.0 + 0.5)) / 2.0;
        assert!((ev("poisson-nloglik", &p, &y) - want).abs() < 1e-6);
        let y2 = [3.0f32, 1.0];
        let want = ((3.0 / 2.0 + 2f64.ln()) + (1.0 / 0.5 + 0.5f64.ln())) / 2.0;
        assert!((ev("gamma-nloglik", &p, &y2) - want).abs() < 1e-6);
        let tw = |p: f64, y: f64| -y * p.powf(-0.5) / -0.5 + p.powf(0.5) / 0.5;
        let want = (tw(2.0, 3.0) + tw(0.5, 1.0)) / 2.0;
        assert!((ev("tweedie-nloglik@1.5", &p, &y2) - want).abs() < 1e-6);
        let gd = |p: f64, y: f64| y / p - (y / p).ln() - 1.0;
        let want = 2.0 * (gd(2.0, 3.0) + gd(0.5, 1.0)) / 2.0;
        assert!((ev("gamma-deviance", &p, &y2) - want).abs() < 1e-6);
    }

    #[test]
    fn multiclass_metrics_by_hand() {
        let p = [0.7, 0.2, 0.1, 0.1, 0.3, 0.6];
        let y = [0.0, 1.0];
        let m = Metric::parse("mlogloss", 1.5).unwrap();
        assert!((m.eval(&p, 3, &y, None) - (-(0.7f64.ln() + 0.3f64.ln()) / 2.0)).abs() < 1e-6);
        let m = Metric::parse("merror", 1.5).unwrap();
        assert!(close(m.eval(&p, 3, &y, None), 0.5));
        let m = Metric::parse("accuracy", 1.5).unwrap();
        assert!(close(m.eval(&p, 3, &y, None), 0.5));
    }

    #[test]
    fn ln_gamma_values() {
        assert!(ln_gamma(1.0).abs() < 1e-12);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn parse_errors_name_the_metric() {
        let e = Metric::parse("ndcg", 1.5).unwrap_err();
        assert!(e.contains("'ndcg'") && e.contains("auc"));
        assert!(Metric::parse("error@x", 1.5).is_err());
    }

    fn naive_auc(s: &[f32], y: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..s.len() {
            for j in 0..s.len() {
                if y[i] > 0.5 && y[j] <= 0.5 {
                    den += 1.0;
                    if s[i] > s[j] {
                        num += 1.0;
                    } else if s[i] == s[j] {
                        num += 0.5;
                    }
                }
            }
        }
        num / den
    }

    /// Average precision with the same trapezoid rule, computed from scratch per threshold.
    fn naive_aucpr(s: &[f32], y: &[f32]) -> f64 {
        let mut th: Vec<f32> = s.to_vec();
        th.sort_by(|a, b| b.total_cmp(a));
        th.dedup();
        let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
        let (mut area, mut pr, mut pp) = (0.0, 0.0, f64::NAN);
        for t in th {
            let tp = (0..s.len()).filter(|&i| s[i] >= t && y[i] > 0.5).count() as f64;
            let all = (0..s.len()).filter(|&i| s[i] >= t).count() as f64;
            let (r, p) = (tp / pos, tp / all);
            let p0 = if pp.is_nan() { p } else { pp };
            area += (r - pr) * (p + p0) / 2.0;
            pr = r;
            pp = p;
        }
        area
    }

    /// Weighted ROC AUC by its definition: over (positive, negative) pairs, weight w_i * w_j,
    /// won when the positive scores higher, half when tied.
    fn naive_weighted_auc(s: &[f32], y: &[f32], w: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for i in (0..s.len()).filter(|&i| y[i] > 0.5) {
            for j in (0..s.len()).filter(|&j| y[j] <= 0.5) {
                let ww = f64::from(w[i]) * f64::from(w[j]);
                den += ww;
                if s[i] > s[j] {
                    num += ww;
                } else if s[i] == s[j] {
                    num += ww / 2.0;
                }
            }
        }
        num / den
    }

    /// Weighted precision-recall area with [`aucpr`]'s trapezoids, from scratch per threshold.
    fn naive_weighted_aucpr(s: &[f32], y: &[f32], w: &[f32]) -> f64 {
        let mut th: Vec<f32> = s.to_vec();
        th.sort_by(|a, b| b.total_cmp(a));
        th.dedup();
        let sum =
            |keep: &dyn Fn(usize) -> bool| -> f64 { (0..s.len()).filter(|&i| keep(i)).map(|i| f64::from(w[i])).sum() };
        let pos = sum(&|i| y[i] > 0.5);
        let (mut area, mut pr, mut pp) = (0.0, 0.0, f64::NAN);
        for t in th {
            let tp = sum(&|i| s[i] >= t && y[i] > 0.5);
            let all = sum(&|i| s[i] >= t);
            let (r, p) = (tp / pos, if all > 0.0 { tp / all } else { 1.0 });
            let p0 = if pp.is_nan() { p } else { pp };
            area += (r - pr) * (p + p0) / 2.0;
            pr = r;
            pp = p;
        }
        area
    }

    #[test]
    fn inlined_means_equal_the_general_path() {
        // logloss and error take a loop of their own (`weighted_mean`); the general per-row
        // path (`loss_sums`, which distributed training uses) must give the same values.
        let n = 100_000;
        let mut x = 3u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        let p: Vec<f32> = (0..n).map(|_| (next() % 10_001) as f32 / 10_000.0).collect();
        // 0/1 labels and a few fractional ones (the general logloss formula).
        let y: Vec<f32> = (0..n)
            .map(|i| if i % 97 == 0 { 0.25 } else { (next() % 2) as f32 })
            .collect();
        let w: Vec<f32> = (0..n).map(|_| (next() % 100) as f32 / 7.0).collect();
        for weights in [None, Some(&w[..])] {
            for (fast, row) in [
                (
                    Metric::Logloss.eval(&p, 1, &y, weights),
                    &logloss_row as &(dyn Fn(f32, f64) -> f64 + Sync),
                ),
                (
                    Metric::parse("error@0.3", 1.5).unwrap().eval(&p, 1, &y, weights),
                    &|p, y| error_row(p, y, 0.3f32.into()),
                ),
            ] {
                let (s, sw) = loss_sums(&p, 1, &y, weights, &|p: &[f32], y| row(p[0], y));
                assert!((fast - s / sw).abs() < 1e-12, "{fast} {}", s / sw);
            }
        }
    }

    #[test]
    fn areas_of_flights_like_sizes_match_a_comparison_sort() {
        // 300k probabilities with ties, weighted and not: the fast ranking (sorted on several
        // threads, buffers reused) against the groups of a comparison sort.
        let n = 300_000;
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        let s: Vec<f32> = (0..n)
            .map(|_| 1.0 / (1.0 + (-((next() % 50_000) as f32) / 9000.0).exp()))
            .collect();
        let y: Vec<f32> = (0..n)
            .map(|i| f32::from(u8::from(next() % 100 < 30 + (i % 40) as u32)))
            .collect();
        let w: Vec<f32> = (0..n).map(|_| (next() % 997) as f32 / 13.0).collect();
        let mut scratch = RankScratch::default();
        for weights in [None, Some(&w[..])] {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
            let mut groups: Vec<(f32, f64, f64)> = Vec::new();
            for i in idx {
                let wi = f64::from(weights.map_or(1.0, |w| w[i]));
                let (p, q) = if y[i] > 0.5 { (wi, 0.0) } else { (0.0, wi) };
                match groups.last_mut() {
                    Some(g) if g.0 == s[i] => {
                        g.1 += p;
                        g.2 += q;
                    }
                    _ => groups.push((s[i], p, q)),
                }
            }
            for (m, roc) in [(Metric::Auc, true), (Metric::Aucpr, false)] {
                let fast = m.eval_reusing(&s, 1, &y, weights, &mut scratch);
                let want = area_of_groups(roc, &groups);
                assert!((fast - want).abs() < 1e-12, "{m:?} {fast} {want}");
            }
        }
    }

    /// `auc` and `aucpr` of rows split over hosts (`cuts`) equal one host's of all the rows.
    fn check_distributed_areas(s: &[f32], y: &[f32], w: &[f32], cuts: &[usize]) {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(s.len());
        for weights in [None, Some(w)] {
            for m in [Metric::Auc, Metric::Aucpr, Metric::Logloss] {
                let want = m.eval(s, 1, y, weights);
                let got = crate::collective::tests::run_hosts(bounds.len() - 1, |c| {
                    let (a, b) = (bounds[c.rank()], bounds[c.rank() + 1]);
                    let w = weights.map(|w| &w[a..b]);
                    m.eval_global(&s[a..b], 1, &y[a..b], w, &mut RankScratch::default(), c)
                        .unwrap()
                });
                for g in got {
                    assert!(
                        (g - want).abs() <= 1e-12 || (g.is_nan() && want.is_nan()),
                        "{m:?} {cuts:?} weighted {}: {g} vs {want}",
                        weights.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn splitters_fall_at_equal_shares_of_all_hosts_rows() {
        // Three hosts' ranges of 100, 0 and 300 rows; grid keys r·100000 + j·1000 (ascending
        // within each range, and across ranges in host order).
        let totals = [0.0, 0.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 300.0, 0.0];
        let mut grids = vec![0.0; 3 * GRID];
        for r in 0..3 {
            for j in 0..GRID {
                grids[r * GRID + j] = (r * 100_000 + j * 1000) as f64;
            }
        }
        // Row 400/3 = 133 is row 33 of host 2's range (grid 33·64/300 = 7); row 266 its 166th
        // (grid 35).
        assert_eq!(splitters_of_grids(&totals, &grids, 3), Some(vec![207_000, 235_000]));
        assert_eq!(splitters_of_grids(&[0.0; 12], &grids, 3), None);
    }

    #[test]
    fn distributed_areas_equal_one_hosts_area_of_the_union() {
        let mut x = 5u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        // Probabilities with many ties (within and across hosts), a label rate that drifts
        // with the row (hosts' parts differ), fractional weights; ranges big enough to be
        // folded in two parts each.
        let n = 150_000;
        let s: Vec<f32> = (0..n).map(|_| (next() % 20_000) as f32 / 20_000.0).collect();
        let y: Vec<f32> = (0..n)
            .map(|i| f32::from(u8::from(s[i] > 0.7 || next() % 100 < 20 + (i * 60 / n) as u32)))
            .collect();
        let w: Vec<f32> = (0..n).map(|_| (next() % 997) as f32 / 13.0).collect();
        check_distributed_areas(&s, &y, &w, &[70_000]);
        check_distributed_areas(&s, &y, &w, &[20_000, 100_000]);
        // Small parts: a host with one row, a host with only positives, all scores tied.
        let (s, y, w) = (&s[..40], &y[..40], &w[..40]);
        check_distributed_areas(s, y, w, &[1, 20]);
        let tied = vec![0.25f32; 9];
        let labels = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
        check_distributed_areas(&tied, &labels, &w[..9], &[2, 5]);
        check_distributed_areas(&s[..6], &[1.0; 6], &w[..6], &[3]);
    }

    #[test]
    fn all_metrics_of_all_sets_at_once_equal_one_hosts_values() {
        let mut x = 11u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        // Two sets of different sizes (the second weighted), three rounds whose scores move
        // (each round cut at the splitters the hosts agreed in the round before), metrics of
        // every kind, one of them twice.
        let sizes = [60_000, 9_000];
        let base: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| (0..n).map(|_| (next() % 5000) as f32 / 5000.0).collect())
            .collect();
        let labels: Vec<Vec<f32>> = base
            .iter()
            .map(|s| {
                s.iter()
                    .map(|&p| f32::from(u8::from(p > 0.6 || next() % 4 == 0)))
                    .collect()
            })
            .collect();
        let weights: Vec<f32> = (0..sizes[1]).map(|_| (next() % 97) as f32 / 7.0).collect();
        let scores =
            |set: usize, round: usize| -> Vec<f32> { base[set].iter().map(|&p| p.powi(round as i32 + 1)).collect() };
        let metrics = [
            Metric::Auc,
            Metric::Logloss,
            Metric::Aucpr,
            Metric::R2,
            Metric::Rmse,
            Metric::Auc,
        ];
        let hosts = 3;
        let part = |n: usize, r: usize| n * r / hosts..n * (r + 1) / hosts;
        let got = crate::collective::tests::run_hosts(hosts, |c| {
            let mut scratch = [RankScratch::default(), RankScratch::default()];
            (0..3)
                .map(|round| {
                    let (sa, sb) = (scores(0, round), scores(1, round));
                    let (ra, rb) = (part(sizes[0], c.rank()), part(sizes[1], c.rank()));
                    let [xa, xb] = &mut scratch;
                    let mut sets = [
                        EvalData {
                            preds: &sa[ra.clone()],
                            k: 1,
                            labels: &labels[0][ra],
                            weights: None,
                            scratch: xa,
                        },
                        EvalData {
                            preds: &sb[rb.clone()],
                            k: 1,
                            labels: &labels[1][rb.clone()],
                            weights: Some(&weights[rb]),
                            scratch: xb,
                        },
                    ];
                    eval_all_global(&metrics, &mut sets, c).unwrap()
                })
                .collect::<Vec<_>>()
        });
        for round in 0..3 {
            for set in 0..2 {
                let w = (set == 1).then_some(&weights[..]);
                for (j, m) in metrics.iter().enumerate() {
                    let want = m.eval(&scores(set, round), 1, &labels[set], w);
                    for host in &got {
                        let g = host[round][set][j];
                        assert!(
                            (g - want).abs() <= 1e-12,
                            "round {round} set {set} {m:?}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn weighted_areas_match_their_definitions(
            v in proptest::collection::vec((0u8..12, 0u8..2, 1u16..1000), 2..80),
        ) {
            // Probabilities with ties, fractional weights.
            let s: Vec<f32> = v.iter().map(|x| f32::from(x.0) / 11.0).collect();
            let y: Vec<f32> = v.iter().map(|x| f32::from(x.1)).collect();
            let w: Vec<f32> = v.iter().map(|x| f32::from(x.2) / 37.0).collect();
            prop_assume!(y.iter().any(|&t| t > 0.5) && y.iter().any(|&t| t < 0.5));
            let mut scratch = RankScratch::default();
            let auc_w = Metric::Auc.eval_reusing(&s, 1, &y, Some(&w), &mut scratch);
            prop_assert!((auc_w - naive_weighted_auc(&s, &y, &w)).abs() < 1e-12);
            let pr_w = Metric::Aucpr.eval_reusing(&s, 1, &y, Some(&w), &mut scratch);
            prop_assert!((pr_w - naive_weighted_aucpr(&s, &y, &w)).abs() < 1e-12);
            // The same scratch then unweighted: as a fresh evaluation.
            let ones = vec![1.0; s.len()];
            let auc = Metric::Auc.eval_reusing(&s, 1, &y, None, &mut scratch);
            prop_assert!((auc - naive_weighted_auc(&s, &y, &ones)).abs() < 1e-12);
            prop_assert_eq!(auc, Metric::Auc.eval(&s, 1, &y, None));
        }

        #[test]
        fn auc_matches_pairwise_count(v in proptest::collection::vec((0u8..10, 0u8..2), 2..60)) {
            let s: Vec<f32> = v.iter().map(|x| f32::from(x.0)).collect();
            let y: Vec<f32> = v.iter().map(|x| f32::from(x.1)).collect();
            prop_assume!(y.iter().any(|&t| t > 0.5) && y.iter().any(|&t| t < 0.5));
            prop_assert!((auc(&s, &y, None, |t| t > 0.5) - naive_auc(&s, &y)).abs() < 1e-12);
            prop_assert!((aucpr(&s, &y, None, |t| t > 0.5) - naive_aucpr(&s, &y)).abs() < 1e-12);
        }

        #[test]
        fn integer_weights_equal_repetition(v in proptest::collection::vec((0u8..10, 0u8..2, 1u8..4), 2..40)) {
            let s: Vec<f32> = v.iter().map(|x| f32::from(x.0)).collect();
            let y: Vec<f32> = v.iter().map(|x| f32::from(x.1)).collect();
            let w: Vec<f32> = v.iter().map(|x| f32::from(x.2)).collect();
            prop_assume!(y.iter().any(|&t| t > 0.5) && y.iter().any(|&t| t < 0.5));
            let (mut s2, mut y2) = (Vec::new(), Vec::new());
            for x in &v { for _ in 0..x.2 { s2.push(f32::from(x.0)); y2.push(f32::from(x.1)); } }
            prop_assert!((auc(&s, &y, Some(&w), |t| t > 0.5) - naive_auc(&s2, &y2)).abs() < 1e-12);
            let p: Vec<f32> = s.iter().map(|x| x / 10.0).collect();
            let p2: Vec<f32> = s2.iter().map(|x| x / 10.0).collect();
            for m in ["logloss", "rmse", "error"] {
                let m = Metric::parse(m, 1.5).unwrap();
                prop_assert!((m.eval(&p, 1, &y, Some(&w)) - m.eval(&p2, 1, &y2, None)).abs() < 1e-9);
            }
        }
    }
}
