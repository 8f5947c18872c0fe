//! SageMaker's built-in K-Means (`kmeans` images): mini-batch passes over the data with
//! `k * extra_center_factor` centers, then a local Lloyd on those centers (weighted by how many
//! rows each absorbed) that reduces them to `k`. The model is `model/kmeans-model.json`
//! (`docs/builtins.md` documents it); `kiln algo kmeans predict` assigns rows to their closest
//! center.
//!
//! Hot loop: assigning a row is `k'` squared distances, computed as `|c|^2 - 2 x.c` (the row's
//! own norm does not change the argmin) over row blocks in parallel, each thread summing its
//! rows into per-center accumulators that are added at the end of the batch.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::container::{ChannelConfig, JobError, JobPaths, MODEL_CHANNEL, thread_count};
use crate::dense_input::{self, Want, read_predict_data};
use crate::protobuf::DenseRows;
use crate::registry::{Algorithm, ChannelSpec, PredictArgs, read_prior_model, train_on_one_host};
use crate::rng::Rng;

/// The model file in `model/` (and so at the root of model.tar.gz).
pub const MODEL_FILE: &str = "kmeans-model.json";

const USAGE: &str = "\
usage: kiln algo kmeans train [--ml-root DIR]
       kiln algo kmeans predict --model FILE|DIR --data PATH [--content-type TYPE]
                                [--output FILE] [--nthread N]

train    runs the SageMaker K-Means container contract under DIR (default /opt/ml): channels
         'train' (required) and 'test', application/x-recordio-protobuf (the default) or
         text/csv without a label column; hyperparameters k and feature_dim are required.
         Writes model/kmeans-model.json and prints '#quality_metric: host=H, test msd <loss>=V'.
predict  prints 'closest_cluster,distance_to_cluster' per row (Euclidean distance). --model is
         kmeans-model.json or the directory holding it; TYPE defaults to text/csv
         (application/x-recordio-protobuf for .rec/.pbr files).";

/// How the first centers are chosen (`init_method`, `local_lloyd_init_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Rows (or centers) drawn uniformly.
    Random,
    /// k-means++: each next pick with probability proportional to its squared distance.
    KMeansPlusPlus,
}

/// An evaluation metric on the `test` channel (`eval_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalMetric {
    /// Mean squared distance to the closest center.
    Msd,
    /// Sum of squared distances to the closest center.
    Ssd,
}

impl EvalMetric {
    fn name(self) -> &'static str {
        match self {
            EvalMetric::Msd => "msd",
            EvalMetric::Ssd => "ssd",
        }
    }
}

/// K-Means hyperparameters, checked: names, defaults and ranges as SageMaker documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansParams {
    /// `k`: the number of clusters (required, >= 1).
    pub k: usize,
    /// `feature_dim`: columns per row (required, >= 1).
    pub feature_dim: usize,
    /// `mini_batch_size` (default 5000).
    pub mini_batch_size: usize,
    /// `epochs`: passes over the training data (default 1).
    pub epochs: usize,
    /// `init_method` (default random).
    pub init_method: Init,
    /// `extra_center_factor`: `None` is `auto`.
    pub extra_center_factor: Option<usize>,
    /// `local_lloyd_max_iter` (default 300).
    pub local_lloyd_max_iter: usize,
    /// `local_lloyd_tol` (default 0.0001, in [0, 1]).
    pub local_lloyd_tol: f64,
    /// `local_lloyd_init_method` (default kmeans++).
    pub local_lloyd_init_method: Init,
    /// `local_lloyd_num_trials`: `None` is `auto`.
    pub local_lloyd_num_trials: Option<usize>,
    /// `half_life_time_size`: rows after which a center's past weighs half (0: no decay).
    pub half_life_time_size: usize,
    /// `eval_metrics` (default `["msd"]`).
    pub eval_metrics: Vec<EvalMetric>,
}

/// The factor `auto` stands for: enough spare centers that a random start rarely leaves a
/// cluster without one, few enough that a pass costs a small multiple of Lloyd's.
const AUTO_EXTRA_CENTER_FACTOR: usize = 4;
/// The trials `auto` stands for (each is a local Lloyd on the few extra centers: cheap).
const AUTO_LLOYD_TRIALS: usize = 10;

/// Hyperparameters the SDK or the platform send that K-Means accepts and ignores.
const IGNORED: &[&str] = &["force_dense", "_tuning_objective_metric", "_kfold", "_num_kfold"];

fn bad(name: &str, value: &str, what: &str) -> JobError {
    JobError::User(format!("Hyperparameter '{name}': value '{value}' {what}"))
}

fn int_at_least(
    hp: &BTreeMap<String, String>,
    name: &str,
    min: usize,
    default: Option<usize>,
) -> Result<usize, JobError> {
    let Some(raw) = hp.get(name) else {
        return default.ok_or_else(|| {
            JobError::User(format!(
                "Hyperparameter '{name}' is required by K-Means: set it (an integer >= {min})"
            ))
        });
    };
    let v = raw.trim().trim_matches('"');
    let n: usize = v
        .parse()
        .map_err(|_| bad(name, raw, &format!("is not an integer >= {min}")))?;
    if n < min {
        return Err(bad(
            name,
            raw,
            &format!("is out of range: it must be an integer >= {min}"),
        ));
    }
    Ok(n)
}

fn auto_or_int(hp: &BTreeMap<String, String>, name: &str) -> Result<Option<usize>, JobError> {
    match hp.get(name).map(|v| v.trim().trim_matches('"')) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("auto") => Ok(None),
        Some(_) => int_at_least(hp, name, 1, None).map(Some),
    }
}

fn init(hp: &BTreeMap<String, String>, name: &str, default: Init) -> Result<Init, JobError> {
    match hp.get(name).map(|v| v.trim().trim_matches('"')) {
        None => Ok(default),
        Some("random") => Ok(Init::Random),
        Some("kmeans++") => Ok(Init::KMeansPlusPlus),
        Some(other) => Err(bad(name, other, "is not one of: random, kmeans++")),
    }
}

impl KMeansParams {
    /// Parses `hyperparameters.json`'s map.
    pub fn from_hyperparameters(hp: &BTreeMap<String, String>) -> Result<Self, JobError> {
        const KNOWN: &[&str] = &[
            "k",
            "feature_dim",
            "mini_batch_size",
            "epochs",
            "init_method",
            "extra_center_factor",
            "local_lloyd_max_iter",
            "local_lloyd_tol",
            "local_lloyd_init_method",
            "local_lloyd_num_trials",
            "half_life_time_size",
            "eval_metrics",
        ];
        for name in hp.keys() {
            if !KNOWN.contains(&name.as_str()) && !IGNORED.contains(&name.as_str()) && !name.starts_with("sagemaker_") {
                return Err(JobError::User(format!(
                    "Hyperparameter '{name}' is not a K-Means hyperparameter; known: {}",
                    KNOWN.join(", ")
                )));
            }
        }
        let tol = match hp.get("local_lloyd_tol") {
            None => 1e-4,
            Some(raw) => {
                let t: f64 = raw
                    .trim()
                    .trim_matches('"')
                    .parse()
                    .map_err(|_| bad("local_lloyd_tol", raw, "is not a number in [0, 1]"))?;
                if !(0.0..=1.0).contains(&t) {
                    return Err(bad("local_lloyd_tol", raw, "is out of range [0, 1]"));
                }
                t
            }
        };
        Ok(Self {
            k: int_at_least(hp, "k", 1, None)?,
            feature_dim: int_at_least(hp, "feature_dim", 1, None)?,
            mini_batch_size: int_at_least(hp, "mini_batch_size", 1, Some(5000))?,
            epochs: int_at_least(hp, "epochs", 1, Some(1))?,
            init_method: init(hp, "init_method", Init::Random)?,
            extra_center_factor: auto_or_int(hp, "extra_center_factor")?,
            local_lloyd_max_iter: int_at_least(hp, "local_lloyd_max_iter", 1, Some(300))?,
            local_lloyd_tol: tol,
            local_lloyd_init_method: init(hp, "local_lloyd_init_method", Init::KMeansPlusPlus)?,
            local_lloyd_num_trials: auto_or_int(hp, "local_lloyd_num_trials")?,
            half_life_time_size: int_at_least(hp, "half_life_time_size", 0, Some(0))?,
            eval_metrics: match hp.get("eval_metrics") {
                None => vec![EvalMetric::Msd],
                Some(raw) => parse_eval_metrics(raw)?,
            },
        })
    }
}

/// `eval_metrics` as the SDK sends it (`["msd", "ssd"]`, JSON) or written by hand (`msd,ssd`).
fn parse_eval_metrics(raw: &str) -> Result<Vec<EvalMetric>, JobError> {
    let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
    let mut out = Vec::new();
    for item in inner.split(',') {
        let name = item.trim().trim_matches(|c| c == '"' || c == '\'');
        let m = match name {
            "msd" => EvalMetric::Msd,
            "ssd" => EvalMetric::Ssd,
            _ => return Err(bad("eval_metrics", raw, "must be a list of \"msd\" and/or \"ssd\"")),
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// A trained model: `k` centers of `feature_dim` values.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KMeansModel {
    /// Always `"kmeans"`.
    pub algorithm: String,
    /// Format version (1).
    pub version: u32,
    /// Columns per row.
    pub feature_dim: usize,
    /// The centers, one array of `feature_dim` numbers each.
    pub centers: Vec<Vec<f32>>,
    /// How many training rows each center is closest to: the weight a warm start (a `model`
    /// channel) gives the center's running mean. Absent in models written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f64>,
}

impl KMeansModel {
    fn flat(&self) -> Vec<f32> {
        self.centers.iter().flatten().copied().collect()
    }
}

/// Row-major `n x d` data borrowed as rows.
#[derive(Clone, Copy)]
struct Rows<'a> {
    values: &'a [f32],
    d: usize,
}

impl<'a> Rows<'a> {
    fn len(&self) -> usize {
        self.values.len() / self.d
    }

    fn row(&self, i: usize) -> &'a [f32] {
        &self.values[i * self.d..(i + 1) * self.d]
    }

    fn range(&self, start: usize, end: usize) -> Rows<'a> {
        Rows {
            values: &self.values[start * self.d..end * self.d],
            d: self.d,
        }
    }
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four partial sums: lets the compiler vectorize without reassociating one sum.
    let mut s = [0f32; 4];
    let (ca, ra) = a.split_at(a.len() / 4 * 4);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(4).zip(cb.chunks_exact(4)) {
        for j in 0..4 {
            s[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// The closest center to `x` and the squared distance, given `norms[c] = |c|^2`.
fn closest(x: &[f32], centers: &[f32], norms: &[f32], d: usize) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (c, (center, &norm)) in centers.chunks_exact(d).zip(norms).enumerate() {
        let v = norm - 2.0 * dot(x, center);
        if v < best.1 {
            best = (c, v);
        }
    }
    // Recompute exactly: the expanded form loses precision far from the origin.
    (best.0, sq_dist(x, &centers[best.0 * d..(best.0 + 1) * d]))
}

fn norms(centers: &[f32], d: usize) -> Vec<f32> {
    centers.chunks_exact(d).map(|c| dot(c, c)).collect()
}

/// Per-center sums of one batch's rows.
struct Accum {
    sums: Vec<f64>,
    counts: Vec<u64>,
    sse: f64,
}

impl Accum {
    fn new(k: usize, d: usize) -> Self {
        Self {
            sums: vec![0.0; k * d],
            counts: vec![0; k],
            sse: 0.0,
        }
    }

    fn merge(mut self, o: Accum) -> Accum {
        for (a, b) in self.sums.iter_mut().zip(&o.sums) {
            *a += b;
        }
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sse += o.sse;
        self
    }
}

/// Rows per parallel task.
const BLOCK: usize = 1024;

/// Assigns every row to its closest center, in parallel; sums them per center.
fn assign(rows: Rows<'_>, centers: &[f32]) -> Accum {
    let (d, k) = (rows.d, centers.len() / rows.d);
    let norms = norms(centers, d);
    let n = rows.len();
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .fold(
            || Accum::new(k, d),
            |mut acc, b| {
                for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                    let x = rows.row(i);
                    let (c, dist) = closest(x, centers, &norms, d);
                    acc.counts[c] += 1;
                    acc.sse += f64::from(dist);
                    for (s, &v) in acc.sums[c * d..(c + 1) * d].iter_mut().zip(x) {
                        *s += f64::from(v);
                    }
                }
                acc
            },
        )
        .reduce(|| Accum::new(k, d), Accum::merge)
}

/// Sum of squared distances of every row to its closest center.
fn ssd(rows: Rows<'_>, centers: &[f32]) -> f64 {
    assign(rows, centers).sse
}

/// Picks `k` of `points` (rows of `d`, with `weights`) as starting centers.
fn seed(points: Rows<'_>, weights: &[f64], k: usize, how: Init, rng: &mut Rng) -> Vec<f32> {
    let n = points.len();
    let d = points.d;
    let mut out = Vec::with_capacity(k * d);
    let pick = |rng: &mut Rng, w: &[f64]| -> usize {
        let total: f64 = w.iter().sum();
        if total <= 0.0 {
            return rng.below(n);
        }
        let mut t = rng.next_f64() * total;
        for (i, &x) in w.iter().enumerate() {
            if t < x {
                return i;
            }
            t -= x;
        }
        w.iter().rposition(|&x| x > 0.0).unwrap_or(n - 1)
    };
    match how {
        Init::Random => {
            let mut w = weights.to_vec();
            for _ in 0..k.min(n) {
                let i = pick(rng, &w);
                w[i] = 0.0;
                out.extend_from_slice(points.row(i));
            }
        }
        Init::KMeansPlusPlus => {
            let first = pick(rng, weights);
            out.extend_from_slice(points.row(first));
            let mut dist: Vec<f64> = (0..n)
                .map(|i| f64::from(sq_dist(points.row(i), points.row(first))))
                .collect();
            for _ in 1..k.min(n) {
                let w: Vec<f64> = dist.iter().zip(weights).map(|(a, b)| a * b).collect();
                let i = pick(rng, &w);
                let c = points.row(i).to_vec();
                for (j, dj) in dist.iter_mut().enumerate() {
                    *dj = dj.min(f64::from(sq_dist(points.row(j), &c)));
                }
                out.extend_from_slice(&c);
            }
        }
    }
    out
}

/// Weighted Lloyd on `points` from `centers`: until the weighted SSD improves by less than
/// `tol` (relative) or `max_iter` rounds. Returns the centers and their weighted SSD.
fn lloyd(points: Rows<'_>, weights: &[f64], mut centers: Vec<f32>, max_iter: usize, tol: f64) -> (Vec<f32>, f64) {
    let d = points.d;
    let k = centers.len() / d;
    let mut prev = f64::INFINITY;
    let mut cost = f64::INFINITY;
    for _ in 0..max_iter {
        let nrm = norms(&centers, d);
        let mut sums = vec![0f64; k * d];
        let mut w = vec![0f64; k];
        cost = 0.0;
        for (i, &wi) in weights.iter().enumerate() {
            let x = points.row(i);
            let (c, dist) = closest(x, &centers, &nrm, d);
            cost += wi * f64::from(dist);
            w[c] += wi;
            for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(x) {
                *s += wi * f64::from(v);
            }
        }
        for c in 0..k {
            if w[c] > 0.0 {
                for j in 0..d {
                    centers[c * d + j] = (sums[c * d + j] / w[c]) as f32;
                }
            }
        }
        if prev.is_finite() && prev - cost <= tol * prev {
            break;
        }
        prev = cost;
    }
    (centers, cost)
}

/// Where a warm-started fit begins: an earlier model's `k` centers, each weighing the rows it
/// stood for, so that the mini-batch passes continue its running means.
pub struct WarmStart<'a> {
    /// `k * feature_dim` values.
    pub centers: &'a [f32],
    /// One weight per center.
    pub weights: &'a [f64],
}

/// Trains on `train` (row-major, `p.feature_dim` columns): mini-batch passes with the extra
/// centers, then the local Lloyd down to `k`. With `warm`, the prior centers are the first `k`
/// of the extra centers (the others seeded as usual) and the first local Lloyd trial starts from
/// where they moved, so the result is at least as good, on the weighted centers, as continuing
/// the prior model alone.
pub fn fit(
    train: &[f32],
    p: &KMeansParams,
    seed_value: u64,
    warm: Option<WarmStart<'_>>,
    log: Option<&mut (dyn Write + Send)>,
) -> Vec<f32> {
    let rows = Rows {
        values: train,
        d: p.feature_dim,
    };
    let n = rows.len();
    let d = p.feature_dim;
    let mut rng = Rng::new(seed_value);
    let extra = (p.k * p.extra_center_factor.unwrap_or(AUTO_EXTRA_CENTER_FACTOR)).min(n);
    // The extra centers start from a uniform sample of one mini-batch's size (all rows, for a
    // small channel), drawn from the whole channel so that sorted data still seeds every part.
    let sample_n = p.mini_batch_size.max(extra).min(n);
    let sample: Vec<f32> = if sample_n == n {
        train.to_vec()
    } else {
        (0..sample_n)
            .flat_map(|_| rows.row(rng.below(n)).iter().copied())
            .collect()
    };
    let sample_rows = Rows { values: &sample, d };
    let (mut centers, mut weight) = match &warm {
        Some(w) => {
            let fresh = seed(
                sample_rows,
                &vec![1.0; sample_n],
                extra.saturating_sub(p.k),
                p.init_method,
                &mut rng,
            );
            let mut weight = w.weights.to_vec();
            weight.resize(fresh.len() / d + p.k, 0.0);
            ([w.centers, &fresh].concat(), weight)
        }
        None => {
            let c = seed(sample_rows, &vec![1.0; sample_n], extra, p.init_method, &mut rng);
            let n = c.len() / d;
            (c, vec![0f64; n])
        }
    };
    let kx = centers.len() / d;
    let mut log = log;
    let decay = |batch: usize| {
        if p.half_life_time_size == 0 {
            1.0
        } else {
            0.5f64.powf(batch as f64 / p.half_life_time_size as f64)
        }
    };
    for epoch in 0..p.epochs {
        let mut sse = 0.0;
        let mut start = 0;
        while start < n {
            let end = (start + p.mini_batch_size).min(n);
            let acc = assign(rows.range(start, end), &centers);
            sse += acc.sse;
            let f = decay(end - start);
            for c in 0..kx {
                weight[c] *= f;
                let m = acc.counts[c] as f64;
                if m == 0.0 {
                    continue;
                }
                weight[c] += m;
                // The center moves to the running (decayed) mean of what it absorbed.
                let eta = m / weight[c];
                for j in 0..d {
                    let mean = acc.sums[c * d + j] / m;
                    let v = f64::from(centers[c * d + j]);
                    centers[c * d + j] = (v + eta * (mean - v)) as f32;
                }
            }
            start = end;
        }
        if let Some(l) = log.as_deref_mut() {
            let _ = writeln!(
                l,
                "#progress_metric: host=algo-1, completed {:.0} % of epochs",
                100.0 * (epoch + 1) as f64 / p.epochs as f64
            );
            let _ = writeln!(
                l,
                "#quality_metric: host=algo-1, epoch={epoch}, train msd <loss>={}",
                sse / n as f64
            );
        }
    }
    reduce(&centers, &weight, p, &mut rng, rows, warm.is_some())
}

/// The local Lloyd: reduces the extra centers (weighted by the rows they absorbed) to `k`,
/// keeping the best of `local_lloyd_num_trials` starts.
/// With `warm`, the first `k` centers are a prior model's (always live: their weight starts
/// above 0 and only decays) and the first trial starts from them.
fn reduce(centers: &[f32], weight: &[f64], p: &KMeansParams, rng: &mut Rng, rows: Rows<'_>, warm: bool) -> Vec<f32> {
    let d = p.feature_dim;
    // Centers that absorbed nothing carry no information.
    let live: Vec<usize> = (0..weight.len()).filter(|&c| weight[c] > 0.0).collect();
    let pts: Vec<f32> = live
        .iter()
        .flat_map(|&c| centers[c * d..(c + 1) * d].iter().copied())
        .collect();
    let w: Vec<f64> = live.iter().map(|&c| weight[c]).collect();
    let points = Rows { values: &pts, d };
    if live.len() <= p.k {
        // Fewer live centers than clusters: keep them all and fill up with rows.
        let mut out = pts.clone();
        while out.len() < p.k * d {
            out.extend_from_slice(rows.row(rng.below(rows.len())));
        }
        return out;
    }
    let trials = p.local_lloyd_num_trials.unwrap_or(AUTO_LLOYD_TRIALS);
    let mut best: Option<(Vec<f32>, f64)> = None;
    for trial in 0..trials {
        let start = if warm && trial == 0 {
            pts[..p.k * d].to_vec()
        } else {
            seed(points, &w, p.k, p.local_lloyd_init_method, rng)
        };
        let (c, cost) = lloyd(points, &w, start, p.local_lloyd_max_iter, p.local_lloyd_tol);
        if best.as_ref().is_none_or(|b| cost < b.1) {
            best = Some((c, cost));
        }
    }
    best.map_or(pts, |b| b.0)
}

/// A channel's rows: RecordIO-protobuf or CSV (no label column), from files or a Pipe FIFO.
fn read_channel(paths: &JobPaths, name: &str, cfg: &ChannelConfig, feature_dim: usize) -> Result<DenseRows, JobError> {
    let want = Want {
        algorithm: "K-Means",
        label: false,
    };
    dense_input::read_channel(paths, name, cfg, Some(feature_dim), want)
}

/// SageMaker's built-in K-Means.
pub struct KMeans;

/// The registry entry.
pub static KMEANS: KMeans = KMeans;

impl Algorithm for KMeans {
    fn name(&self) -> &'static str {
        "kmeans"
    }

    fn images(&self) -> &'static [&'static str] {
        &["kmeans", "kiln/kmeans"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[ChannelSpec::TRAIN, ChannelSpec::TEST, ChannelSpec::MODEL]
    }

    fn content_types(&self) -> &'static [&'static str] {
        dense_input::CONTENT_TYPES
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        KMeansParams::from_hyperparameters(hp).map(|_| ())
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = ["msd", "ssd"]
            .iter()
            .map(|m| {
                (
                    format!("test:{m}"),
                    format!("#quality_metric: host=\\S+, test {m} <loss>=(\\S+)"),
                )
            })
            .collect();
        out.push((
            "train:msd".into(),
            "#quality_metric: host=\\S+, epoch=\\S+, train msd <loss>=(\\S+)".into(),
        ));
        out.push((
            "train:progress".into(),
            "#progress_metric: host=\\S+, completed (\\S+) %".into(),
        ));
        out
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        matches!(metric, "test:msd" | "test:ssd" | "train:msd").then_some(false)
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
            "K-Means",
            paths,
            env,
            KMeansParams::from_hyperparameters,
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
    p: &KMeansParams,
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
    check_width("train", &train, p)?;
    if p.k > train.n_rows() {
        return Err(JobError::User(format!(
            "Hyperparameter 'k' is {} but channel 'train' has only {} rows; k must be at most the number of rows",
            p.k,
            train.n_rows()
        )));
    }
    let _ = writeln!(
        err,
        "kiln kmeans: train {} rows x {} features; k {}, {} extra centers, {} epochs, mini_batch_size {}; {} threads (read in {:.3}s)",
        train.n_rows(),
        p.feature_dim,
        p.k,
        p.k * p.extra_center_factor.unwrap_or(AUTO_EXTRA_CENTER_FACTOR),
        p.epochs,
        p.mini_batch_size,
        threads,
        started.elapsed().as_secs_f64()
    );
    let prior = match channels.get(MODEL_CHANNEL) {
        Some(_) => {
            let (text, shown) = read_prior_model(&paths.channel_dir(MODEL_CHANNEL), MODEL_FILE, "K-Means")?;
            let m = parse_model(&text, &shown)?;
            check_prior(&m, p)?;
            let _ = writeln!(
                err,
                "kiln kmeans: starting from the {} centers of channel 'model'",
                m.centers.len()
            );
            Some(m)
        }
        None => None,
    };
    let prior_weights = prior.as_ref().map(|m| prior_weights(m, p, train.n_rows()));
    let prior_centers = prior.as_ref().map(KMeansModel::flat);
    let warm_rows = prior_centers.as_deref().zip(prior_weights.as_deref());
    let warm = warm_rows.map(|(centers, weights)| WarmStart { centers, weights });
    let mut log = Vec::new();
    let fit_start = std::time::Instant::now();
    let centers = fit(&train.values, p, 0x6b6d_6561_6e73, warm, Some(&mut log));
    let fit_s = fit_start.elapsed().as_secs_f64();
    // The log is written with this host's name, as each SageMaker host prints its own.
    let text = String::from_utf8_lossy(&log).replace("host=algo-1", &format!("host={host}"));
    let _ = out.write_all(text.as_bytes());
    let rows = Rows {
        values: &train.values,
        d: p.feature_dim,
    };
    let final_assignment = assign(rows, &centers);
    let train_ssd = final_assignment.sse;
    let _ = writeln!(
        err,
        "kiln kmeans: fit in {fit_s:.3}s; train msd {} (final centers)",
        train_ssd / train.n_rows() as f64
    );
    if let Some(cfg) = channels.get("test") {
        let test = read_channel(paths, "test", cfg, p.feature_dim)?;
        check_width("test", &test, p)?;
        let s = ssd(
            Rows {
                values: &test.values,
                d: p.feature_dim,
            },
            &centers,
        );
        for m in &p.eval_metrics {
            let v = match m {
                EvalMetric::Msd => s / test.n_rows() as f64,
                EvalMetric::Ssd => s,
            };
            let _ = writeln!(out, "#quality_metric: host={host}, test {} <loss>={v}", m.name());
        }
    }
    let model = KMeansModel {
        algorithm: "kmeans".into(),
        version: 1,
        feature_dim: p.feature_dim,
        centers: centers.chunks_exact(p.feature_dim).map(<[f32]>::to_vec).collect(),
        weights: final_weights(&final_assignment.counts, &centers, warm_rows),
    };
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let path = paths.model_dir.join(MODEL_FILE);
    let json =
        serde_json::to_string(&model).map_err(|e| JobError::Internal(format!("could not encode the model: {e}")))?;
    std::fs::write(&path, json).map_err(|e| JobError::Internal(format!("could not write {}: {e}", path.display())))
}

fn check_width(name: &str, rows: &DenseRows, p: &KMeansParams) -> Result<(), JobError> {
    if rows.n_cols != p.feature_dim {
        return Err(JobError::User(format!(
            "channel '{name}' has {} features per row but hyperparameter 'feature_dim' is {}; set \
             feature_dim to the number of columns",
            rows.n_cols, p.feature_dim
        )));
    }
    Ok(())
}

/// Reads a model: `kmeans-model.json`, or a directory holding it.
pub fn load_model(path: &Path) -> Result<KMeansModel, JobError> {
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
fn parse_model(text: &str, shown: &str) -> Result<KMeansModel, JobError> {
    let m: KMeansModel =
        serde_json::from_str(text).map_err(|e| JobError::User(format!("{shown} is not a kiln K-Means model: {e}")))?;
    let weights_ok = m.weights.is_empty()
        || (m.weights.len() == m.centers.len() && m.weights.iter().all(|w| w.is_finite() && *w >= 0.0));
    if m.algorithm != "kmeans"
        || m.centers.iter().any(|c| c.len() != m.feature_dim)
        || m.centers.is_empty()
        || !weights_ok
    {
        return Err(JobError::User(format!(
            "{shown} is not a kiln K-Means model (algorithm '{}', {} centers of feature_dim {}, {} weights)",
            m.algorithm,
            m.centers.len(),
            m.feature_dim,
            m.weights.len()
        )));
    }
    Ok(m)
}

/// Fails unless `prior` (a `model` channel's) can start this job: same `k`, same `feature_dim`.
fn check_prior(prior: &KMeansModel, p: &KMeansParams) -> Result<(), JobError> {
    let mismatch = |what: &str, old: usize, new: usize| {
        Err(JobError::User(format!(
            "channel 'model': the model has {what} {old} but this job has {what} {new}; incremental \
             training needs the same {what}"
        )))
    };
    if prior.feature_dim != p.feature_dim {
        return mismatch("feature_dim", prior.feature_dim, p.feature_dim);
    }
    if prior.centers.len() != p.k {
        return mismatch("k", prior.centers.len(), p.k);
    }
    Ok(())
}

/// The rows each final center stands for, what a later warm start continues from: this job's
/// rows closest to it, plus the weight of the prior centers (if any) closest to it.
fn final_weights(counts: &[u64], centers: &[f32], prior: Option<(&[f32], &[f64])>) -> Vec<f64> {
    let mut w: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    if let Some((pc, pw)) = prior {
        let d = centers.len() / counts.len();
        let nrm = norms(centers, d);
        for (x, &weight) in pc.chunks_exact(d).zip(pw) {
            w[closest(x, centers, &nrm, d).0] += weight;
        }
    }
    w
}

/// The weight each prior center starts with: the rows it stood for (at least 1, so that it stays
/// a live center); for a model without weights, one mini-batch's rows shared equally.
fn prior_weights(prior: &KMeansModel, p: &KMeansParams, n: usize) -> Vec<f64> {
    if prior.weights.len() == prior.centers.len() {
        prior.weights.iter().map(|w| w.max(1.0)).collect()
    } else {
        let each = (p.mini_batch_size.min(n) as f64 / p.k as f64).max(1.0);
        vec![each; prior.centers.len()]
    }
}

/// For each row: its closest center and the Euclidean distance to it.
pub fn predict(model: &KMeansModel, rows: &[f32]) -> Vec<(usize, f32)> {
    let d = model.feature_dim;
    let centers = model.flat();
    let nrm = norms(&centers, d);
    rows.par_chunks(d)
        .map(|x| {
            let (c, dist) = closest(x, &centers, &nrm, d);
            (c, dist.sqrt())
        })
        .collect()
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let PredictArgs {
        model,
        data,
        content_type: ct,
        output,
        nthread,
        ..
    } = PredictArgs::parse(args, USAGE, false)?;
    let model = load_model(&model)?;
    let rows = read_predict_data(&data, ct.as_deref(), model.feature_dim, "K-Means", false)?.values;
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let preds = pool.install(|| predict(&model, &rows));
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for (c, dist) in &preds {
            writeln!(w, "{c},{dist}")?;
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

    #[test]
    fn hyperparameters_defaults_and_errors() {
        let p = KMeansParams::from_hyperparameters(&hp(&[("k", "3"), ("feature_dim", "2"), ("force_dense", "True")]))
            .unwrap();
        assert_eq!(
            (p.k, p.mini_batch_size, p.epochs, p.local_lloyd_max_iter),
            (3, 5000, 1, 300)
        );
        assert_eq!(
            (p.init_method, p.local_lloyd_init_method),
            (Init::Random, Init::KMeansPlusPlus)
        );
        assert_eq!(p.eval_metrics, vec![EvalMetric::Msd]);
        let p = KMeansParams::from_hyperparameters(&hp(&[
            ("k", "3"),
            ("feature_dim", "2"),
            ("eval_metrics", "[\"msd\", \"ssd\"]"),
            ("extra_center_factor", "auto"),
            ("init_method", "kmeans++"),
        ]))
        .unwrap();
        assert_eq!(p.eval_metrics, vec![EvalMetric::Msd, EvalMetric::Ssd]);
        assert_eq!(p.extra_center_factor, None);
        let err = |pairs: &[(&str, &str)]| KMeansParams::from_hyperparameters(&hp(pairs)).unwrap_err().to_string();
        assert_eq!(
            err(&[("feature_dim", "2")]),
            "Hyperparameter 'k' is required by K-Means: set it (an integer >= 1)"
        );
        assert_eq!(
            err(&[("k", "0"), ("feature_dim", "2")]),
            "Hyperparameter 'k': value '0' is out of range: it must be an integer >= 1"
        );
        assert!(err(&[("k", "2"), ("feature_dim", "2"), ("local_lloyd_tol", "2")]).contains("out of range [0, 1]"));
        assert!(err(&[("k", "2"), ("feature_dim", "2"), ("init_method", "nope")]).contains("random, kmeans++"));
        assert!(err(&[("k", "2"), ("feature_dim", "2"), ("eval_metrics", "[\"mse\"]")]).contains("msd"));
        assert!(err(&[("k", "2"), ("feature_dim", "2"), ("kk", "1")]).contains("'kk' is not a K-Means"));
    }

    /// Blobs around known centers, shuffled.
    fn blobs(centers: &[[f32; 2]], per: usize, spread: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut rows: Vec<[f32; 2]> = Vec::new();
        for c in centers {
            for _ in 0..per {
                let u = |rng: &mut Rng| (rng.next_f64() as f32 - 0.5) * 2.0 * spread;
                rows.push([c[0] + u(&mut rng), c[1] + u(&mut rng)]);
            }
        }
        for i in (1..rows.len()).rev() {
            let j = rng.below(i + 1);
            rows.swap(i, j);
        }
        rows.into_iter().flatten().collect()
    }

    #[test]
    fn finds_known_centers() {
        let truth = [[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]];
        let data = blobs(&truth, 500, 1.0, 7);
        for init in [Init::Random, Init::KMeansPlusPlus] {
            let p = KMeansParams {
                init_method: init,
                mini_batch_size: 300,
                epochs: 2,
                ..KMeansParams::from_hyperparameters(&hp(&[("k", "4"), ("feature_dim", "2")])).unwrap()
            };
            let centers = fit(&data, &p, 1, None, None);
            assert_eq!(centers.len(), 8);
            for t in &truth {
                let near = centers.chunks(2).map(|c| sq_dist(c, t)).fold(f32::INFINITY, f32::min);
                assert!(near < 0.05, "{init:?}: no center near {t:?}: {centers:?}");
            }
        }
    }

    #[test]
    fn warm_start_continues_the_prior_centers() {
        let truth = [[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]];
        let data = blobs(&truth, 500, 1.0, 3);
        let p = KMeansParams {
            mini_batch_size: 200,
            extra_center_factor: Some(1),
            local_lloyd_num_trials: Some(1),
            ..KMeansParams::from_hyperparameters(&hp(&[("k", "4"), ("feature_dim", "2")])).unwrap()
        };
        // Slightly off centers, in an order a cold start would not reproduce: each moves onto its
        // own blob and keeps its index.
        let prior: Vec<f32> = truth.iter().flat_map(|t| [t[0] + 0.7, t[1] - 0.6]).collect();
        let weights = [50.0; 4];
        let warm = WarmStart {
            centers: &prior,
            weights: &weights,
        };
        let centers = fit(&data, &p, 9, Some(warm), None);
        for (c, t) in centers.chunks(2).zip(&truth) {
            assert!(sq_dist(c, t) < 0.05, "center {c:?} did not stay on {t:?}: {centers:?}");
        }
        // The new model's weights: this job's rows plus the prior's weight, per center.
        let rows = Rows { values: &data, d: 2 };
        let w = final_weights(&assign(rows, &centers).counts, &centers, Some((&prior, &weights)));
        assert_eq!(w, vec![550.0; 4]);
    }

    #[test]
    fn a_prior_model_must_match() {
        let p = KMeansParams::from_hyperparameters(&hp(&[("k", "2"), ("feature_dim", "3")])).unwrap();
        let model = |k: usize, d: usize| KMeansModel {
            algorithm: "kmeans".into(),
            version: 1,
            feature_dim: d,
            centers: vec![vec![0.0; d]; k],
            weights: vec![],
        };
        assert!(check_prior(&model(2, 3), &p).is_ok());
        let e = check_prior(&model(3, 3), &p).unwrap_err().to_string();
        assert!(e.contains("the model has k 3 but this job has k 2"), "{e}");
        let e = check_prior(&model(2, 4), &p).unwrap_err().to_string();
        assert!(e.contains("feature_dim 4") && e.contains("feature_dim 3"), "{e}");
        let e = parse_model(
            r#"{"algorithm":"kmeans","version":1,"feature_dim":1,"centers":[[1.0]],"weights":[1.0,2.0]}"#,
            "m",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a kiln K-Means model"), "{e}");
        // Models written before weights existed still load; each center then weighs a share of
        // one mini-batch.
        let old = parse_model(
            r#"{"algorithm":"kmeans","version":1,"feature_dim":3,"centers":[[0,0,0],[1,1,1]]}"#,
            "m",
        )
        .unwrap();
        assert_eq!(prior_weights(&old, &p, 10_000), vec![2500.0; 2]);
    }

    #[test]
    fn matches_a_naive_lloyd_on_weighted_points() {
        // Weighted Lloyd from fixed starts equals the textbook computation.
        let pts = [0.0f32, 0.0, 1.0, 0.0, 10.0, 0.0, 12.0, 0.0];
        let w = [1.0, 3.0, 1.0, 1.0];
        let rows = Rows { values: &pts, d: 2 };
        let (c, cost) = lloyd(rows, &w, vec![0.0, 0.0, 10.0, 0.0], 10, 0.0);
        assert_eq!(c, vec![0.75, 0.0, 11.0, 0.0]);
        let expect = 0.75f64 * 0.75 + 3.0 * 0.25 * 0.25 + 1.0 + 1.0;
        assert!((cost - expect).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn predict_assigns_closest() {
        let m = KMeansModel {
            algorithm: "kmeans".into(),
            version: 1,
            feature_dim: 2,
            centers: vec![vec![0.0, 0.0], vec![3.0, 4.0]],
            weights: vec![],
        };
        let got = predict(&m, &[0.1, 0.0, 3.0, 8.0]);
        assert_eq!(got[0].0, 0);
        assert!((got[0].1 - 0.1).abs() < 1e-6);
        assert_eq!(got[1], (1, 4.0));
    }
}
