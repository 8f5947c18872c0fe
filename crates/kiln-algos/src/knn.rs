//! SageMaker's built-in k-NN (`knn` images): keeps a uniform sample of `sample_size` training
//! rows (optionally reduced to `dimension_reduction_target` dimensions by a random sign
//! projection or a fast Johnson-Lindenstrauss transform) in an index, and predicts a row's label
//! from its `k` nearest indexed rows: the most frequent label (classifier) or their mean
//! (regressor). The index is exact (`faiss.Flat`: every row compared) or inverted lists
//! (`faiss.IVFFlat`: a k-means coarse quantizer, a few nearest lists scanned). The model is
//! `model/knn-model.bin` (`docs/builtins.md` documents it); `kiln algo knn predict` prints
//! each row's predicted label.
//!
//! Hot loop: a block of queries against a block of indexed rows is one call of the blocked
//! dot kernel (`|x|^2 - 2 q.x` ranks rows as the squared distance does), each query keeping
//! its `k` best in a small sorted buffer; query blocks run in parallel.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::container::{ChannelConfig, JobError, JobPaths, thread_count};
use crate::dense_input::{CONTENT_TYPES, Want, read_channel, read_predict_data};
use crate::hparams::Hp;
use crate::linalg::{dot, dots, dots_t};
use crate::registry::{Algorithm, ChannelSpec, PredictArgs, train_on_one_host};
use crate::rng::Rng;

/// The model file in `model/` (and so at the root of model.tar.gz).
pub const MODEL_FILE: &str = "knn-model.bin";

/// The model file's first bytes.
const MAGIC: &[u8; 8] = b"KILNKNN1";

const USAGE: &str = "\
usage: kiln algo knn train [--ml-root DIR]
       kiln algo knn predict --model FILE|DIR --data PATH [--content-type TYPE]
                             [--output FILE] [--nthread N]

train    runs the SageMaker k-NN container contract under DIR (default /opt/ml): channels
         'train' (required) and 'test', application/x-recordio-protobuf (the default; the
         label in label[\"values\"]) or text/csv with the label in the first column;
         hyperparameters feature_dim, k, predictor_type and sample_size are required. Writes
         model/knn-model.bin and prints '#quality_metric: host=H, test accuracy <score>=V'
         (classifier) or 'test mse <loss>=V' (regressor).
predict  prints each row's predicted label. The data has no label column. --model is
         knn-model.bin or the directory holding it; TYPE defaults to text/csv
         (application/x-recordio-protobuf for .rec/.pbr files).";

/// `predictor_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Predictor {
    /// The most frequent label of the neighbors.
    Classifier,
    /// The mean label of the neighbors.
    Regressor,
}

/// `dimension_reduction_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reduction {
    /// No reduction.
    None,
    /// A dense random matrix of `±1/sqrt(target)`.
    Sign,
    /// The fast Johnson-Lindenstrauss transform: random signs, a Walsh-Hadamard transform and
    /// `target` sampled coordinates.
    Fjlt,
}

/// `index_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IndexType {
    /// `faiss.Flat`: exact search.
    #[serde(rename = "faiss.Flat")]
    Flat,
    /// `faiss.IVFFlat`: inverted lists around k-means centroids.
    #[serde(rename = "faiss.IVFFlat")]
    IvfFlat,
    /// `faiss.IVFPQ`: kiln builds an IVFFlat index (exact distances in the probed lists, no
    /// product quantization).
    #[serde(rename = "faiss.IVFPQ")]
    IvfPq,
}

/// `index_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IndexMetric {
    /// Euclidean distance.
    L2,
    /// Largest inner product first.
    #[serde(rename = "INNER_PRODUCT")]
    InnerProduct,
    /// Largest cosine similarity first.
    #[serde(rename = "COSINE")]
    Cosine,
}

/// The values SageMaker accepts for `faiss_index_pq_m`.
const PQ_M: &[usize] = &[1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96];

/// k-NN hyperparameters, checked: names, defaults and ranges as SageMaker documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnParams {
    /// `feature_dim` (required).
    pub feature_dim: usize,
    /// `k` (required).
    pub k: usize,
    /// `predictor_type` (required).
    pub predictor: Predictor,
    /// `sample_size` (required): rows kept from the training data.
    pub sample_size: usize,
    /// `dimension_reduction_type` (default: none).
    pub reduction: Reduction,
    /// `dimension_reduction_target` (required with a reduction; < feature_dim).
    pub reduction_target: Option<usize>,
    /// `index_type` (default faiss.Flat).
    pub index_type: IndexType,
    /// `index_metric` (default L2).
    pub metric: IndexMetric,
    /// `faiss_index_ivf_nlists`: `None` is `auto`, `sqrt(sample_size)`.
    pub nlists: Option<usize>,
    /// `faiss_index_pq_m` (IVFPQ; checked, not used).
    pub pq_m: Option<usize>,
    /// `mini_batch_size` (default 5000; checked, kiln reads the channel at once).
    pub mini_batch_size: usize,
}

impl KnnParams {
    /// Parses `hyperparameters.json`'s map.
    pub fn from_hyperparameters(map: &BTreeMap<String, String>) -> Result<Self, JobError> {
        let hp = Hp { map, algorithm: "k-NN" };
        hp.only(&[
            "feature_dim",
            "k",
            "predictor_type",
            "sample_size",
            "dimension_reduction_type",
            "dimension_reduction_target",
            "index_type",
            "index_metric",
            "faiss_index_ivf_nlists",
            "faiss_index_pq_m",
            "mini_batch_size",
        ])?;
        let feature_dim = hp.count("feature_dim", 1, None)?;
        let k = hp.count("k", 1, None)?;
        let predictor = [Predictor::Classifier, Predictor::Regressor]
            [hp.choice("predictor_type", &["classifier", "regressor"], None)?];
        let sample_size = hp.count("sample_size", 1, None)?;
        let reduction = match hp.raw("dimension_reduction_type") {
            None | Some("None" | "none" | "") => Reduction::None,
            Some(_) => {
                [Reduction::Sign, Reduction::Fjlt][hp.choice("dimension_reduction_type", &["sign", "fjlt"], None)?]
            }
        };
        let reduction_target = match (reduction, hp.raw("dimension_reduction_target")) {
            (Reduction::None, None) => None,
            (Reduction::None, Some(_)) => {
                return Err(JobError::User(
                    "Hyperparameter 'dimension_reduction_target' is set but 'dimension_reduction_type' is not: set \
                     dimension_reduction_type to sign or fjlt, or remove the target"
                        .into(),
                ));
            }
            (_, None) => {
                return Err(JobError::User(
                    "Hyperparameter 'dimension_reduction_target' is required when 'dimension_reduction_type' is set: \
                     set it to an integer between 1 and feature_dim - 1"
                        .into(),
                ));
            }
            (_, Some(_)) => {
                let t = hp.count("dimension_reduction_target", 1, None)?;
                if t >= feature_dim {
                    return Err(JobError::User(format!(
                        "Hyperparameter 'dimension_reduction_target': value '{t}' is out of range: it must be less \
                         than feature_dim ({feature_dim})"
                    )));
                }
                Some(t)
            }
        };
        let index_type = [IndexType::Flat, IndexType::IvfFlat, IndexType::IvfPq]
            [hp.choice("index_type", &["faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ"], Some(0))?];
        let metric = [IndexMetric::L2, IndexMetric::InnerProduct, IndexMetric::Cosine]
            [hp.choice("index_metric", &["L2", "INNER_PRODUCT", "COSINE"], Some(0))?];
        if index_type == IndexType::IvfPq && metric != IndexMetric::L2 {
            return Err(JobError::User(format!(
                "Hyperparameter 'index_metric' is {metric:?} but index_type faiss.IVFPQ supports only L2: use L2, or \
                 index_type faiss.Flat or faiss.IVFFlat"
            )));
        }
        let pq_m = match hp.raw("faiss_index_pq_m") {
            None => None,
            Some(v) => {
                let m = hp.count("faiss_index_pq_m", 1, None)?;
                if !PQ_M.contains(&m) {
                    return Err(JobError::User(format!(
                        "Hyperparameter 'faiss_index_pq_m': value '{v}' is not one of: {}",
                        PQ_M.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
                    )));
                }
                Some(m)
            }
        };
        Ok(Self {
            feature_dim,
            k,
            predictor,
            sample_size,
            reduction,
            reduction_target,
            index_type,
            metric,
            nlists: hp.auto_or_count("faiss_index_ivf_nlists")?,
            pq_m,
            mini_batch_size: hp.count("mini_batch_size", 1, Some(5000))?,
        })
    }
}

/// The map from input rows to indexed vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Rows as they are.
    Identity,
    /// `x -> x M` for a `feature_dim x target` matrix (row-major).
    Dense { target: usize, matrix: Vec<f32> },
    /// Pad to `signs.len()` (a power of two), multiply by `signs`, Walsh-Hadamard transform,
    /// keep coordinates `keep`, scale by `1/sqrt(keep.len())`.
    Fjlt { signs: Vec<f32>, keep: Vec<u32> },
}

impl Transform {
    fn new(p: &KnnParams, rng: &mut Rng) -> Transform {
        let d = p.feature_dim;
        match (p.reduction, p.reduction_target) {
            (Reduction::Sign, Some(t)) => {
                let s = 1.0 / (t as f32).sqrt();
                let matrix = (0..d * t)
                    .map(|_| if rng.next_u64() & 1 == 0 { s } else { -s })
                    .collect();
                Transform::Dense { target: t, matrix }
            }
            (Reduction::Fjlt, Some(t)) => {
                let padded = d.next_power_of_two();
                let signs = (0..padded)
                    .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
                    .collect();
                let all: Vec<usize> = (0..padded).collect();
                let keep = rng.sample_sorted(&all, t).into_iter().map(|i| i as u32).collect();
                Transform::Fjlt { signs, keep }
            }
            _ => Transform::Identity,
        }
    }

    /// Output dimension for `feature_dim` inputs.
    fn dim(&self, d: usize) -> usize {
        match self {
            Transform::Identity => d,
            Transform::Dense { target, .. } => *target,
            Transform::Fjlt { keep, .. } => keep.len(),
        }
    }

    /// Transforms rows of `d` values.
    fn apply(&self, x: &[f32], d: usize) -> Vec<f32> {
        let t = self.dim(d);
        let mut out = vec![0f32; x.len() / d * t];
        match self {
            Transform::Identity => out.copy_from_slice(x),
            Transform::Dense { matrix, .. } => {
                // x M: the dot kernel against M's columns.
                let mut cols = Vec::new();
                crate::linalg::transpose(matrix, d, t, &mut cols);
                out.par_chunks_mut(256 * t)
                    .zip(x.par_chunks(256 * d))
                    .for_each(|(o, rows)| dots(rows, &cols, d, o));
            }
            Transform::Fjlt { signs, keep } => {
                let scale = 1.0 / (keep.len() as f32).sqrt();
                out.par_chunks_mut(t).zip(x.par_chunks(d)).for_each_init(
                    || vec![0f32; signs.len()],
                    |buf, (o, row)| {
                        buf.iter_mut().for_each(|v| *v = 0.0);
                        for (b, (v, s)) in buf.iter_mut().zip(row.iter().zip(signs)) {
                            *b = v * s;
                        }
                        walsh_hadamard(buf);
                        for (o, &i) in o.iter_mut().zip(keep) {
                            *o = buf[i as usize] * scale;
                        }
                    },
                );
            }
        }
        out
    }
}

/// The orthonormal Walsh-Hadamard transform in place (`v.len()` a power of two): norms kept.
fn walsh_hadamard(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    v.iter_mut().for_each(|x| *x *= s);
}

/// What the model file's header holds (JSON); the arrays follow it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KnnHeader {
    /// Always `"knn"`.
    pub algorithm: String,
    /// Format version (1).
    pub version: u32,
    /// Columns of an input row.
    pub feature_dim: usize,
    /// Columns of an indexed vector (after the reduction).
    pub dim: usize,
    /// Neighbors voted on.
    pub k: usize,
    /// `classifier` or `regressor`.
    pub predictor_type: Predictor,
    /// The index's kind as the job asked for it.
    pub index_type: IndexType,
    /// The distance.
    pub index_metric: IndexMetric,
    /// The reduction.
    pub dimension_reduction_type: Reduction,
    /// Indexed rows.
    pub n_rows: usize,
    /// Inverted lists (0: exact index).
    pub nlists: usize,
    /// Lists scanned per query.
    pub nprobe: usize,
    /// FJLT only: the kept coordinates of the padded transform.
    pub fjlt_keep: Vec<u32>,
}

/// A trained model: the indexed vectors (grouped by list for an IVF index), their labels,
/// and what turns a row into a query.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnModel {
    /// The header.
    pub header: KnnHeader,
    /// The reduction.
    pub transform: Transform,
    /// `n_rows x dim`, row-major.
    pub vectors: Vec<f32>,
    /// One per vector.
    pub labels: Vec<f32>,
    /// `nlists x dim` coarse centroids.
    pub centroids: Vec<f32>,
    /// `nlists + 1` offsets into `vectors`: list `c` is rows `offsets[c]..offsets[c + 1]`.
    pub offsets: Vec<u32>,
}

/// Queries per parallel task.
const QUERY_BLOCK: usize = 64;
/// Indexed rows per kernel call.
const ROW_BLOCK: usize = 256;

/// The `k` smallest scores seen, sorted ascending.
struct TopK {
    k: usize,
    scores: Vec<f32>,
    ids: Vec<u32>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            scores: Vec::with_capacity(k + 1),
            ids: Vec::with_capacity(k + 1),
        }
    }

    /// Offers rows `first..` whose dot products with the query are `ips` (overwritten by
    /// their scores `norm - f * ip`): the scores are computed in one vectorizable pass, and only
    /// the few that beat the current k-th best are inserted.
    #[inline(always)]
    fn scan(&mut self, ips: &mut [f32], norms: &[f32], f: f32, first: usize) {
        for (s, &n) in ips.iter_mut().zip(norms) {
            *s = n - f * *s;
        }
        let mut worst = self.worst();
        for (c, chunk) in ips.chunks(16).enumerate() {
            // Most chunks hold no row good enough: a branch-free count skips them.
            if chunk.iter().map(|&s| u32::from(s < worst)).sum::<u32>() == 0 {
                continue;
            }
            for (j, &s) in chunk.iter().enumerate() {
                if s < worst {
                    self.push(s, (first + c * 16 + j) as u32);
                    worst = self.worst();
                }
            }
        }
    }

    /// The score a row must beat to enter.
    #[inline]
    fn worst(&self) -> f32 {
        if self.scores.len() < self.k {
            f32::INFINITY
        } else {
            self.scores[self.k - 1]
        }
    }

    #[inline]
    fn push(&mut self, score: f32, id: u32) {
        if self.scores.len() == self.k && score >= self.scores[self.k - 1] {
            return;
        }
        let at = self.scores.partition_point(|&s| s <= score);
        self.scores.insert(at, score);
        self.ids.insert(at, id);
        if self.scores.len() > self.k {
            self.scores.pop();
            self.ids.pop();
        }
    }
}

/// [`TopK::scan`] for each query of a block: row `q` of `ips` (`norms.len()` wide) is query
/// `q`'s dot products with rows `first..`.
#[inline(always)]
fn scan_all_plain(tops: &mut [TopK], ips: &mut [f32], norms: &[f32], f: f32, first: usize) {
    for (top, row) in tops.iter_mut().zip(ips.chunks_exact_mut(norms.len())) {
        top.scan(row, norms, f, first);
    }
}

/// [`scan_all_plain`] compiled for AVX2: the score pass and the chunk counts in 8-lane
/// registers rather than the baseline's 4, a third of the exact search's time before.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scan_all_avx2(tops: &mut [TopK], ips: &mut [f32], norms: &[f32], f: f32, first: usize) {
    scan_all_plain(tops, ips, norms, f, first)
}

fn scan_all(tops: &mut [TopK], ips: &mut [f32], norms: &[f32], f: f32, first: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { scan_all_avx2(tops, ips, norms, f, first) };
    }
    scan_all_plain(tops, ips, norms, f, first)
}

/// Norms used by the score: `|x|^2` for L2 (the score is `|x|^2 - 2 q.x`), none for inner
/// products (the score is `-q.x`).
fn score_norms(vectors: &[f32], dim: usize, metric: IndexMetric) -> Vec<f32> {
    match metric {
        IndexMetric::L2 => vectors.par_chunks(dim).map(|v| dot(v, v)).collect(),
        _ => vec![0.0; vectors.len() / dim],
    }
}

fn ip_factor(metric: IndexMetric) -> f32 {
    if metric == IndexMetric::L2 { 2.0 } else { 1.0 }
}

/// Exact search: the ids of the `k` best rows of `vectors` for every query, best first.
pub fn search_flat(queries: &[f32], vectors: &[f32], dim: usize, k: usize, metric: IndexMetric) -> Vec<Vec<u32>> {
    let norms = score_norms(vectors, dim, metric);
    let f = ip_factor(metric);
    let n = vectors.len() / dim;
    // The indexed rows transposed block by block (`dim x ROW_BLOCK` each), once for all queries.
    let panels: Vec<Vec<f32>> = vectors
        .par_chunks(ROW_BLOCK * dim)
        .map(|block| {
            let mut t = Vec::new();
            crate::linalg::transpose(block, block.len() / dim, dim, &mut t);
            t
        })
        .collect();
    queries
        .par_chunks(QUERY_BLOCK * dim)
        .flat_map_iter(|qb| {
            let m = qb.len() / dim;
            let mut tops: Vec<TopK> = (0..m).map(|_| TopK::new(k)).collect();
            let mut out = vec![0f32; m * ROW_BLOCK];
            for start in (0..n).step_by(ROW_BLOCK) {
                let end = (start + ROW_BLOCK).min(n);
                let p = end - start;
                dots_t(qb, &panels[start / ROW_BLOCK], dim, p, &mut out[..m * p]);
                scan_all(&mut tops, &mut out[..m * p], &norms[start..end], f, start);
            }
            tops.into_iter().map(|t| t.ids)
        })
        .collect()
}

/// Rows per list the coarse quantizer trains on (faiss asks for at least 39): more rows place
/// the centroids no better for probing, and cost a full pass each iteration.
const QUANTIZER_ROWS_PER_LIST: usize = 64;
/// Lloyd iterations of the coarse quantizer (faiss' default).
const QUANTIZER_ITERS: usize = 10;

/// Lloyd's k-means from `nlists` distinct rows, on a sample of `x`: the coarse quantizer.
fn coarse_centroids(x: &[f32], dim: usize, nlists: usize, rng: &mut Rng) -> Vec<f32> {
    let all: Vec<usize> = (0..x.len() / dim).collect();
    let train: Vec<f32> = rng
        .sample_sorted(&all, nlists * QUANTIZER_ROWS_PER_LIST)
        .into_iter()
        .flat_map(|i| x[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    let x = &train[..];
    let n = x.len() / dim;
    let all: Vec<usize> = (0..n).collect();
    let mut cent: Vec<f32> = rng
        .sample_sorted(&all, nlists)
        .into_iter()
        .flat_map(|i| x[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    for _ in 0..QUANTIZER_ITERS {
        let assign: Vec<u32> = search_flat(x, &cent, dim, 1, IndexMetric::L2)
            .into_iter()
            .map(|v| v[0])
            .collect();
        let mut sums = vec![0f64; nlists * dim];
        let mut counts = vec![0usize; nlists];
        for (i, &c) in assign.iter().enumerate() {
            counts[c as usize] += 1;
            for (s, &v) in sums[c as usize * dim..(c as usize + 1) * dim]
                .iter_mut()
                .zip(&x[i * dim..(i + 1) * dim])
            {
                *s += f64::from(v);
            }
        }
        for c in 0..nlists {
            if counts[c] > 0 {
                for j in 0..dim {
                    cent[c * dim + j] = (sums[c * dim + j] / counts[c] as f64) as f32;
                }
            } else {
                // An empty list takes a random row: no centroid is wasted.
                let r = rng.below(n);
                cent[c * dim..(c + 1) * dim].copy_from_slice(&x[r * dim..(r + 1) * dim]);
            }
        }
    }
    cent
}

impl KnnModel {
    /// The ids of each query row's `k` nearest indexed rows, best first.
    pub fn neighbors(&self, rows: &[f32]) -> Vec<Vec<u32>> {
        let h = &self.header;
        let mut q = self.transform.apply(rows, h.feature_dim);
        if h.index_metric == IndexMetric::Cosine {
            normalize(&mut q, h.dim);
        }
        if h.nlists == 0 {
            return search_flat(&q, &self.vectors, h.dim, h.k, h.index_metric);
        }
        let lists = search_flat(&q, &self.centroids, h.dim, h.nprobe, IndexMetric::L2);
        let norms = score_norms(&self.vectors, h.dim, h.index_metric);
        let f = ip_factor(h.index_metric);
        q.par_chunks(h.dim)
            .zip(lists.par_iter())
            .map_init(Vec::new, |out, (qv, probe)| {
                let mut top = TopK::new(h.k);
                for &c in probe {
                    let (a, b) = (self.offsets[c as usize] as usize, self.offsets[c as usize + 1] as usize);
                    if a == b {
                        continue;
                    }
                    out.resize(b - a, 0.0);
                    dots(qv, &self.vectors[a * h.dim..b * h.dim], h.dim, out);
                    top.scan(out, &norms[a..b], f, a);
                }
                top.ids
            })
            .collect()
    }

    /// Each row's predicted label.
    pub fn predict(&self, rows: &[f32]) -> Vec<f32> {
        let nb = self.neighbors(rows);
        nb.par_iter()
            .map(|ids| {
                let labels = ids.iter().map(|&i| self.labels[i as usize]);
                match self.header.predictor_type {
                    Predictor::Regressor => {
                        let (s, c) = labels.fold((0f64, 0usize), |(s, c), l| (s + f64::from(l), c + 1));
                        (s / c.max(1) as f64) as f32
                    }
                    Predictor::Classifier => vote(labels),
                }
            })
            .collect()
    }
}

/// The most frequent label; a tie goes to the label of the nearest neighbor among the tied.
fn vote(labels: impl Iterator<Item = f32>) -> f32 {
    let mut counts: Vec<(f32, usize)> = Vec::new();
    for l in labels {
        match counts.iter_mut().find(|(v, _)| v.to_bits() == l.to_bits()) {
            Some((_, c)) => *c += 1,
            None => counts.push((l, 1)),
        }
    }
    // `counts` is in order of first appearance (nearest first): the first maximum wins.
    let best = counts.iter().map(|c| c.1).max().unwrap_or(0);
    counts.iter().find(|c| c.1 == best).map_or(f32::NAN, |c| c.0)
}

fn normalize(x: &mut [f32], dim: usize) {
    x.par_chunks_mut(dim).for_each(|v| {
        let n = dot(v, v).sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
    });
}

/// Lists probed per query: `sqrt(nlists)` (faiss' default of 1 loses too many neighbors for
/// a classifier); at least 1, at most `nlists`.
fn nprobe_for(nlists: usize) -> usize {
    ((nlists as f64).sqrt().ceil() as usize).clamp(1, nlists.max(1))
}

/// Builds the model from training rows and labels.
pub fn fit(x: &[f32], labels: &[f32], p: &KnnParams, seed: u64) -> Result<KnnModel, JobError> {
    let d = p.feature_dim;
    let n = labels.len();
    let mut rng = Rng::new(seed);
    let chosen: Vec<usize> = if p.sample_size >= n {
        (0..n).collect()
    } else {
        rng.sample_sorted(&(0..n).collect::<Vec<_>>(), p.sample_size)
    };
    if p.k > chosen.len() {
        return Err(JobError::User(format!(
            "Hyperparameter 'k' is {} but the index holds only {} rows (sample_size {}, {n} training rows); k must be \
             at most that",
            p.k,
            chosen.len(),
            p.sample_size
        )));
    }
    let sample: Vec<f32> = chosen
        .iter()
        .flat_map(|&i| x[i * d..(i + 1) * d].iter().copied())
        .collect();
    let mut labels: Vec<f32> = chosen.iter().map(|&i| labels[i]).collect();
    let transform = Transform::new(p, &mut rng);
    let dim = transform.dim(d);
    let mut vectors = transform.apply(&sample, d);
    if p.metric == IndexMetric::Cosine {
        normalize(&mut vectors, dim);
    }
    let rows = labels.len();
    let (nlists, centroids, offsets) = if p.index_type == IndexType::Flat {
        (0, Vec::new(), vec![0, rows as u32])
    } else {
        let nlists = p
            .nlists
            .unwrap_or_else(|| (rows as f64).sqrt().round() as usize)
            .clamp(1, rows);
        let cent = coarse_centroids(&vectors, dim, nlists, &mut rng);
        let assign: Vec<u32> = search_flat(&vectors, &cent, dim, 1, IndexMetric::L2)
            .into_iter()
            .map(|v| v[0])
            .collect();
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by_key(|&i| assign[i]);
        let mut offsets = vec![0u32; nlists + 1];
        for &a in &assign {
            offsets[a as usize + 1] += 1;
        }
        for c in 0..nlists {
            offsets[c + 1] += offsets[c];
        }
        vectors = order
            .iter()
            .flat_map(|&i| vectors[i * dim..(i + 1) * dim].to_vec())
            .collect();
        labels = order.iter().map(|&i| labels[i]).collect();
        (nlists, cent, offsets)
    };
    let fjlt_keep = match &transform {
        Transform::Fjlt { keep, .. } => keep.clone(),
        _ => Vec::new(),
    };
    Ok(KnnModel {
        header: KnnHeader {
            algorithm: "knn".into(),
            version: 1,
            feature_dim: d,
            dim,
            k: p.k,
            predictor_type: p.predictor,
            index_type: p.index_type,
            index_metric: p.metric,
            dimension_reduction_type: p.reduction,
            n_rows: rows,
            nlists,
            nprobe: nprobe_for(nlists),
            fjlt_keep,
        },
        transform,
        vectors,
        labels,
        centroids,
        offsets,
    })
}

fn put_f32s(out: &mut Vec<u8>, v: &[f32]) {
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// The model file: `KILNKNN1`, a little-endian `u32` header length, the JSON header, then
/// little-endian arrays: the transform (`feature_dim x dim` f32 for sign, `padded` f32 signs
/// for fjlt, nothing otherwise), vectors (`n_rows x dim` f32), labels (`n_rows` f32),
/// centroids (`nlists x dim` f32), offsets (`nlists + 1` u32).
pub fn encode(m: &KnnModel) -> Result<Vec<u8>, JobError> {
    let header =
        serde_json::to_vec(&m.header).map_err(|e| JobError::Internal(format!("could not encode the model: {e}")))?;
    let mut out = Vec::with_capacity(16 + header.len() + 4 * (m.vectors.len() + m.labels.len() + m.centroids.len()));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    match &m.transform {
        Transform::Identity => {}
        Transform::Dense { matrix, .. } => put_f32s(&mut out, matrix),
        Transform::Fjlt { signs, .. } => {
            out.extend_from_slice(&(signs.len() as u32).to_le_bytes());
            put_f32s(&mut out, signs);
        }
    }
    put_f32s(&mut out, &m.vectors);
    put_f32s(&mut out, &m.labels);
    put_f32s(&mut out, &m.centroids);
    for o in &m.offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    Ok(out)
}

/// Reads what [`encode`] wrote; `shown` names the file in errors.
pub fn decode(bytes: &[u8], shown: &str) -> Result<KnnModel, JobError> {
    let bad = |what: &str| JobError::User(format!("{shown} is not a kiln k-NN model: {what}"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], JobError> {
        let s = bytes.get(at..at + n).ok_or_else(|| bad("it is truncated"))?;
        at += n;
        Ok(s)
    };
    if take(8)? != MAGIC {
        return Err(bad("it does not start with KILNKNN1"));
    }
    let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let hlen = u32_of(take(4)?) as usize;
    let header: KnnHeader =
        serde_json::from_slice(take(hlen)?).map_err(|e| bad(&format!("its header is not valid: {e}")))?;
    if header.algorithm != "knn" || header.k == 0 || header.dim == 0 || header.k > header.n_rows {
        return Err(bad("its header does not describe a k-NN index"));
    }
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (d, dim) = (header.feature_dim, header.dim);
    let transform = match header.dimension_reduction_type {
        Reduction::None => Transform::Identity,
        Reduction::Sign => Transform::Dense {
            target: dim,
            matrix: f32s(take(d * dim * 4)?),
        },
        Reduction::Fjlt => {
            let padded = u32_of(take(4)?) as usize;
            if padded < d || header.fjlt_keep.iter().any(|&i| i as usize >= padded) || header.fjlt_keep.len() != dim {
                return Err(bad("its FJLT does not fit its dimensions"));
            }
            Transform::Fjlt {
                signs: f32s(take(padded * 4)?),
                keep: header.fjlt_keep.clone(),
            }
        }
    };
    let vectors = f32s(take(header.n_rows * dim * 4)?);
    let labels = f32s(take(header.n_rows * 4)?);
    let centroids = f32s(take(header.nlists * dim * 4)?);
    let offsets: Vec<u32> = take((header.nlists.max(1) + 1) * 4)?
        .chunks_exact(4)
        .map(u32_of)
        .collect();
    if offsets.last().copied() != Some(header.n_rows as u32) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(bad("its inverted lists do not cover its rows"));
    }
    Ok(KnnModel {
        header,
        transform,
        vectors,
        labels,
        centroids,
        offsets,
    })
}

/// Reads a model: `knn-model.bin`, or a directory holding it.
pub fn load_model(path: &Path) -> Result<KnnModel, JobError> {
    let file: PathBuf = if path.is_dir() {
        path.join(MODEL_FILE)
    } else {
        path.to_path_buf()
    };
    let bytes =
        std::fs::read(&file).map_err(|e| JobError::User(format!("could not read model {}: {e}", file.display())))?;
    decode(&bytes, &file.display().to_string())
}

/// SageMaker's built-in k-NN.
pub struct Knn;

/// The registry entry.
pub static KNN: Knn = Knn;

impl Algorithm for Knn {
    fn name(&self) -> &'static str {
        "knn"
    }

    fn images(&self) -> &'static [&'static str] {
        &["knn", "kiln/knn"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[ChannelSpec::TRAIN, ChannelSpec::TEST]
    }

    fn content_types(&self) -> &'static [&'static str] {
        CONTENT_TYPES
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        KnnParams::from_hyperparameters(hp).map(|_| ())
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        vec![
            (
                "test:accuracy".into(),
                "#quality_metric: host=\\S+, test accuracy <score>=(\\S+)".into(),
            ),
            (
                "test:mse".into(),
                "#quality_metric: host=\\S+, test mse <loss>=(\\S+)".into(),
            ),
        ]
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        match metric {
            "test:accuracy" => Some(true),
            "test:mse" => Some(false),
            _ => None,
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
            "k-NN",
            paths,
            env,
            KnnParams::from_hyperparameters,
            |channels, p, host, threads| train_job(paths, channels, p, host, threads, out, err),
        )
    }

    fn predict(&self, args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
        predict_cmd(args, out)
    }
}

const WANT: Want = Want {
    algorithm: "k-NN",
    label: true,
};

fn train_job(
    paths: &JobPaths,
    channels: &BTreeMap<String, ChannelConfig>,
    p: &KnnParams,
    host: &str,
    threads: usize,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let train_cfg = channels
        .get("train")
        .ok_or_else(|| JobError::User("channel 'train' is required".into()))?;
    let train = read_channel(paths, "train", train_cfg, Some(p.feature_dim), WANT)?;
    let fit_start = std::time::Instant::now();
    let model = fit(&train.values, &train.labels, p, 0x006b_6e6e)?;
    let h = &model.header;
    let _ = writeln!(
        err,
        "kiln knn: train {} rows x {} features (read in {:.3}s); index {} rows x {} dims, {:?}{}, {:?}; k {}; {} threads; \
         built in {:.3}s",
        train.n_rows(),
        p.feature_dim,
        fit_start.duration_since(started).as_secs_f64(),
        h.n_rows,
        h.dim,
        p.index_type,
        if h.nlists > 0 {
            format!(" ({} lists, {} probed)", h.nlists, h.nprobe)
        } else {
            String::new()
        },
        p.metric,
        p.k,
        threads,
        fit_start.elapsed().as_secs_f64()
    );
    if let Some(cfg) = channels.get("test") {
        let test = read_channel(paths, "test", cfg, Some(p.feature_dim), WANT)?;
        let t = std::time::Instant::now();
        let pred = model.predict(&test.values);
        let _ = writeln!(
            err,
            "kiln knn: test {} rows predicted in {:.3}s",
            test.n_rows(),
            t.elapsed().as_secs_f64()
        );
        let n = pred.len().max(1) as f64;
        match p.predictor {
            Predictor::Classifier => {
                let right = pred
                    .iter()
                    .zip(&test.labels)
                    .filter(|(a, b)| a.to_bits() == b.to_bits())
                    .count();
                let _ = writeln!(
                    out,
                    "#quality_metric: host={host}, test accuracy <score>={}",
                    right as f64 / n
                );
            }
            Predictor::Regressor => {
                let se: f64 = pred
                    .iter()
                    .zip(&test.labels)
                    .map(|(a, b)| f64::from(a - b).powi(2))
                    .sum();
                let _ = writeln!(out, "#quality_metric: host={host}, test mse <loss>={}", se / n);
            }
        }
    }
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let path = paths.model_dir.join(MODEL_FILE);
    std::fs::write(&path, encode(&model)?)
        .map_err(|e| JobError::Internal(format!("could not write {}: {e}", path.display())))
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let a = PredictArgs::parse(args, USAGE, false)?;
    let model = load_model(&a.model)?;
    let rows = read_predict_data(
        &a.data,
        a.content_type.as_deref(),
        model.header.feature_dim,
        "k-NN",
        false,
    )?;
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(a.nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let pred = pool.install(|| model.predict(&rows.values));
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for v in &pred {
            writeln!(w, "{v}")?;
        }
        w.flush()
    };
    match a.output {
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

    const BASE: [(&str, &str); 4] = [
        ("feature_dim", "8"),
        ("k", "5"),
        ("predictor_type", "classifier"),
        ("sample_size", "100000"),
    ];

    fn params(extra: &[(&str, &str)]) -> Result<KnnParams, JobError> {
        let mut all = BASE.to_vec();
        all.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        all.extend_from_slice(extra);
        KnnParams::from_hyperparameters(&hp(&all))
    }

    #[test]
    fn hyperparameters_defaults_and_errors() {
        let p = params(&[]).unwrap();
        assert_eq!(
            (p.index_type, p.metric, p.reduction, p.nlists, p.mini_batch_size),
            (IndexType::Flat, IndexMetric::L2, Reduction::None, None, 5000)
        );
        let err = |extra: &[(&str, &str)]| params(extra).unwrap_err().to_string();
        assert!(err(&[("predictor_type", "ranker")]).contains("classifier, regressor"));
        assert!(err(&[("dimension_reduction_type", "sign")]).contains("'dimension_reduction_target' is required"));
        assert!(
            err(&[
                ("dimension_reduction_type", "sign"),
                ("dimension_reduction_target", "8")
            ])
            .contains("less than feature_dim")
        );
        assert!(
            err(&[("dimension_reduction_type", "pca"), ("dimension_reduction_target", "2")]).contains("sign, fjlt")
        );
        assert!(err(&[("dimension_reduction_target", "2")]).contains("'dimension_reduction_type' is not"));
        assert!(err(&[("index_type", "faiss.HNSW")]).contains("faiss.Flat, faiss.IVFFlat, faiss.IVFPQ"));
        assert!(err(&[("index_type", "faiss.IVFPQ"), ("index_metric", "COSINE")]).contains("supports only L2"));
        assert!(err(&[("faiss_index_pq_m", "5")]).contains("not one of: 1, 2, 3, 4, 8"));
        assert!(err(&[("k", "0")]).contains("integer >= 1"));
        let no_size = KnnParams::from_hyperparameters(&hp(&BASE[..3]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            no_size,
            "Hyperparameter 'sample_size' is required by k-NN: set it (an integer >= 1)"
        );
        let p = params(&[
            ("dimension_reduction_type", "fjlt"),
            ("dimension_reduction_target", "4"),
            ("faiss_index_ivf_nlists", "auto"),
        ])
        .unwrap();
        assert_eq!((p.reduction, p.reduction_target), (Reduction::Fjlt, Some(4)));
    }

    /// Gaussian blobs (sd 1) around `classes` random centers in `d` dims, label = blob.
    fn blobs(n: usize, d: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let g = |rng: &mut Rng| {
            let u = rng.next_f64().max(1e-300);
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos()) as f32
        };
        let mut crng = Rng::new(99);
        let centers: Vec<f32> = (0..classes * d).map(|_| 6.0 * g(&mut crng)).collect();
        let mut x = Vec::with_capacity(n * d);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            for j in 0..d {
                x.push(centers[c * d + j] + g(&mut rng));
            }
            y.push(c as f32);
        }
        (x, y)
    }

    fn naive(q: &[f32], x: &[f32], d: usize, k: usize) -> Vec<u32> {
        let mut all: Vec<(f32, u32)> = x
            .chunks(d)
            .enumerate()
            .map(|(i, r)| (r.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), i as u32))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        all[..k].iter().map(|a| a.1).collect()
    }

    #[test]
    fn flat_search_is_exact() {
        let d = 13;
        let (x, _) = blobs(1500, d, 4, 1);
        let (q, _) = blobs(70, d, 4, 2);
        let got = search_flat(&q, &x, d, 7, IndexMetric::L2);
        for (i, ids) in got.iter().enumerate() {
            let want = naive(&q[i * d..(i + 1) * d], &x, d, 7);
            // Same set (ties in f32 may swap order).
            let (mut a, mut b) = (ids.clone(), want.clone());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "query {i}");
        }
    }

    #[test]
    fn ivf_recall_is_high_and_classifier_accurate() {
        let d = 16;
        let (x, y) = blobs(20_000, d, 10, 3);
        let (q, qy) = blobs(500, d, 10, 4);
        let p = params(&[("feature_dim", "16"), ("k", "10"), ("index_type", "faiss.IVFFlat")]).unwrap();
        let m = fit(&x, &y, &p, 7).unwrap();
        assert_eq!(m.header.nlists, 141);
        let approx = m.neighbors(&q);
        let exact = search_flat(&q, &m.vectors, d, 10, IndexMetric::L2);
        let hits: usize = approx
            .iter()
            .zip(&exact)
            .map(|(a, e)| a.iter().filter(|i| e.contains(i)).count())
            .sum();
        let recall = hits as f64 / (10 * q.len() / d) as f64;
        assert!(recall > 0.9, "recall {recall}");
        let pred = m.predict(&q);
        let acc = pred.iter().zip(&qy).filter(|(a, b)| a == b).count() as f64 / qy.len() as f64;
        assert!(acc > 0.97, "accuracy {acc}");
        // Round trip through the file format.
        let back = decode(&encode(&m).unwrap(), "m").unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn reductions_keep_neighbors_and_round_trip() {
        let d = 40;
        let (x, y) = blobs(4000, d, 5, 5);
        let (q, qy) = blobs(200, d, 5, 6);
        for red in ["sign", "fjlt"] {
            let p = params(&[
                ("feature_dim", "40"),
                ("dimension_reduction_type", red),
                ("dimension_reduction_target", "12"),
                ("index_metric", "COSINE"),
                ("sample_size", "3000"),
            ])
            .unwrap();
            let m = fit(&x, &y, &p, 11).unwrap();
            assert_eq!((m.header.dim, m.header.n_rows), (12, 3000));
            let pred = m.predict(&q);
            let acc = pred.iter().zip(&qy).filter(|(a, b)| a == b).count() as f64 / qy.len() as f64;
            assert!(acc > 0.95, "{red}: accuracy {acc}");
            let back = decode(&encode(&m).unwrap(), "m").unwrap();
            assert_eq!(back.predict(&q), pred, "{red}");
        }
    }

    #[test]
    fn regressor_averages_and_votes_break_ties_by_nearest() {
        let x = [0.0f32, 1.0, 2.0, 10.0];
        let y = [1.0f32, 2.0, 6.0, 100.0];
        let p = KnnParams {
            predictor: Predictor::Regressor,
            k: 3,
            ..params(&[("feature_dim", "1")]).unwrap()
        };
        let m = fit(&x, &y, &p, 1).unwrap();
        assert_eq!(m.predict(&[0.5]), vec![3.0]);
        assert_eq!(vote([2.0, 1.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(vote([3.0, 1.0, 1.0].into_iter()), 1.0);
        let e = fit(&x, &y, &KnnParams { k: 5, ..p }, 1).unwrap_err().to_string();
        assert!(e.contains("holds only 4 rows"), "{e}");
        assert!(
            decode(b"KILNKNN1\x05\0\0\0{}", "f")
                .unwrap_err()
                .to_string()
                .contains("not a kiln k-NN model")
        );
    }

    #[test]
    fn walsh_hadamard_keeps_norms() {
        let mut v = [1.0f32, 2.0, 3.0, 4.0, 0.0, -1.0, 0.5, 2.0];
        let before: f32 = v.iter().map(|x| x * x).sum();
        walsh_hadamard(&mut v);
        let after: f32 = v.iter().map(|x| x * x).sum();
        assert!((before - after).abs() < 1e-4);
    }
}
