//! SageMaker's built-in Random Cut Forest (`randomcutforest` images): `num_trees` random cut
//! trees, each on a uniform sample of `num_samples_per_tree` training rows, and an anomaly
//! score per row: high where a random cut separates the row early from the sample's bulk.
//! The model is `model/rcf-model.json` (the trees' samples and the seed that rebuilds the
//! trees; `docs/builtins.md` documents it); `kiln algo randomcutforest predict` prints each
//! row's score.
//!
//! A tree splits a box of points on a dimension chosen with probability proportional to its
//! range, at a uniform cut, down to single points. A row's score in a tree walks the row's path
//! from the leaf up: at each node the probability that a random cut of the node's box grown to
//! hold the row separates the row from the box, the row then being isolated at that depth;
//! the score is the expected `1 / depth` of isolation, scaled by `log2(samples)` so that a
//! typical row scores about 1 and an outlier several times that.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::container::{ChannelConfig, JobError, JobPaths, thread_count};
use crate::dense_input::{CONTENT_TYPES, Want, read_channel, read_predict_data};
use crate::hparams::Hp;
use crate::registry::{Algorithm, ChannelSpec, PredictArgs, train_on_one_host};
use crate::rng::Rng;

/// The model file in `model/` (and so at the root of model.tar.gz).
pub const MODEL_FILE: &str = "rcf-model.json";

const USAGE: &str = "\
usage: kiln algo randomcutforest train [--ml-root DIR]
       kiln algo randomcutforest predict --model FILE|DIR --data PATH [--content-type TYPE]
                                         [--output FILE] [--nthread N]

train    runs the SageMaker Random Cut Forest container contract under DIR (default /opt/ml):
         channels 'train' (required, no label) and 'test' (labelled: 1 anomaly, 0 not),
         application/x-recordio-protobuf (the default) or text/csv; hyperparameter feature_dim
         is required. Writes model/rcf-model.json; with a test channel prints
         '#quality_metric: host=H, test f1 <score>=V' (and accuracy, precision, recall).
predict  prints each row's anomaly score. --model is rcf-model.json or the directory holding
         it; TYPE defaults to text/csv (application/x-recordio-protobuf for .rec/.pbr files).";

/// Random Cut Forest hyperparameters, checked: names, defaults and ranges as SageMaker
/// documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct RcfParams {
    /// `feature_dim` (required, 1..=10000).
    pub feature_dim: usize,
    /// `num_trees` (default 100, 50..=1000).
    pub num_trees: usize,
    /// `num_samples_per_tree` (default 256, 1..=2048).
    pub num_samples_per_tree: usize,
    /// `eval_metrics`: print accuracy / precision, recall and F1 on `test`.
    pub accuracy: bool,
    /// `precision_recall_fscore` in `eval_metrics`.
    pub prf: bool,
}

fn in_range(hp: &Hp<'_>, name: &str, lo: usize, hi: usize, default: Option<usize>) -> Result<usize, JobError> {
    let v = hp.count(name, lo, default)?;
    if v > hi {
        return Err(JobError::User(format!(
            "Hyperparameter '{name}': value '{v}' is out of range: it must be an integer in [{lo}, {hi}]"
        )));
    }
    Ok(v)
}

impl RcfParams {
    /// Parses `hyperparameters.json`'s map.
    pub fn from_hyperparameters(map: &BTreeMap<String, String>) -> Result<Self, JobError> {
        let hp = Hp {
            map,
            algorithm: "Random Cut Forest",
        };
        hp.only(&[
            "feature_dim",
            "num_trees",
            "num_samples_per_tree",
            "eval_metrics",
            "mini_batch_size",
        ])?;
        let (mut accuracy, mut prf) = (true, true);
        if let Some(raw) = hp.map.get("eval_metrics") {
            (accuracy, prf) = (false, false);
            let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
            for item in inner.split(',') {
                match item.trim().trim_matches(|c| c == '"' || c == '\'') {
                    "accuracy" => accuracy = true,
                    "precision_recall_fscore" => prf = true,
                    _ => {
                        return Err(JobError::User(format!(
                            "Hyperparameter 'eval_metrics': value '{raw}' must be a list of \"accuracy\" and/or \
                             \"precision_recall_fscore\""
                        )));
                    }
                }
            }
        }
        Ok(Self {
            feature_dim: in_range(&hp, "feature_dim", 1, 10_000, None)?,
            num_trees: in_range(&hp, "num_trees", 50, 1000, Some(100))?,
            num_samples_per_tree: in_range(&hp, "num_samples_per_tree", 1, 2048, Some(256))?,
            accuracy,
            prf,
        })
    }
}

/// A trained forest: each tree's sample, from which `seed` rebuilds the same tree.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RcfModel {
    /// Always `"randomcutforest"`.
    pub algorithm: String,
    /// Format version (1).
    pub version: u32,
    /// Columns per row.
    pub feature_dim: usize,
    /// Seed of tree `t`'s cuts: `Rng::for_round(seed, t)`.
    pub seed: u64,
    /// Mean of the training rows' scores.
    pub score_mean: f64,
    /// Standard deviation of the training rows' scores.
    pub score_std: f64,
    /// Per tree, its sample: rows of `feature_dim` numbers, flattened.
    pub samples: Vec<Vec<f32>>,
}

impl RcfModel {
    /// The score above which a row is labelled an anomaly: mean + 3 standard deviations of the
    /// training rows' scores.
    pub fn threshold(&self) -> f64 {
        self.score_mean + 3.0 * self.score_std
    }
}

/// One node of a tree: a leaf (`left == u32::MAX`) or a cut. Its bounding box is in the tree's
/// `boxes`.
struct Node {
    /// The box's ranges summed over dimensions.
    range: f32,
    dim: u32,
    cut: f32,
    left: u32,
    right: u32,
    mass: u32,
}

/// A random cut tree over `points` (rows of `d`). Nodes and boxes sit in two flat arrays (a
/// tree of 256 samples is about 40 KB at 8 features, so a block of rows is scored against it
/// from cache).
struct Tree {
    nodes: Vec<Node>,
    /// Node `i`'s box: `boxes[2 d i..2 d i + d]` its minimum, the next `d` values its maximum.
    boxes: Vec<f32>,
    d: usize,
}

impl Tree {
    fn build(points: &[f32], d: usize, rng: &mut Rng) -> Tree {
        let mut tree = Tree {
            nodes: Vec::new(),
            boxes: Vec::new(),
            d,
        };
        let idx: Vec<usize> = (0..points.len() / d).collect();
        tree.grow(points, idx, rng);
        tree
    }

    fn bounds(&self, node: u32) -> (&[f32], &[f32]) {
        let at = 2 * self.d * node as usize;
        (&self.boxes[at..at + self.d], &self.boxes[at + self.d..at + 2 * self.d])
    }

    fn grow(&mut self, points: &[f32], idx: Vec<usize>, rng: &mut Rng) -> u32 {
        let d = self.d;
        let mut lo = points[idx[0] * d..(idx[0] + 1) * d].to_vec();
        let mut hi = lo.clone();
        for &i in &idx[1..] {
            for (j, v) in points[i * d..(i + 1) * d].iter().enumerate() {
                lo[j] = lo[j].min(*v);
                hi[j] = hi[j].max(*v);
            }
        }
        let id = self.nodes.len() as u32;
        let total: f64 = lo.iter().zip(&hi).map(|(a, b)| f64::from(b - a)).sum();
        self.boxes.extend_from_slice(&lo);
        self.boxes.extend_from_slice(&hi);
        self.nodes.push(Node {
            range: total as f32,
            dim: 0,
            cut: 0.0,
            left: u32::MAX,
            right: u32::MAX,
            mass: idx.len() as u32,
        });
        if idx.len() < 2 || total <= 0.0 {
            // One point, or copies of one point: a leaf.
            return id;
        }
        let mut r = rng.next_f64() * total;
        let mut dim = d - 1;
        for j in 0..d {
            let w = f64::from(hi[j] - lo[j]);
            if r < w {
                dim = j;
                break;
            }
            r -= w;
        }
        let (a, b) = (lo[dim], hi[dim]);
        // A cut strictly inside the range splits the points in two non-empty parts.
        let mut cut = a + (rng.next_f64() as f32) * (b - a);
        if cut <= a || cut >= b {
            cut = a + 0.5 * (b - a);
        }
        let (left, right): (Vec<usize>, Vec<usize>) = idx.into_iter().partition(|&i| points[i * d + dim] <= cut);
        let l = self.grow(points, left, rng);
        let rt = self.grow(points, right, rng);
        let n = &mut self.nodes[id as usize];
        n.dim = dim as u32;
        n.cut = cut;
        n.left = l;
        n.right = rt;
        id
    }

    /// The expected `1 / depth` at which a random cut isolates `x` (depth 1 at the root);
    /// `path` is scratch space.
    fn score(&self, x: &[f32], path: &mut Vec<u32>) -> f64 {
        path.clear();
        let mut at = 0u32;
        loop {
            path.push(at);
            let n = &self.nodes[at as usize];
            if n.left == u32::MAX {
                break;
            }
            at = if x[n.dim as usize] <= n.cut { n.left } else { n.right };
        }
        let depth = path.len() as f64;
        let (lo, hi) = self.bounds(at);
        let seen = lo == hi && lo == x;
        // At the leaf: a row equal to the leaf's point(s) is not isolated below it; the mass of
        // copies pushes it deeper, as more cuts would be needed among them.
        let mut s = if seen {
            1.0 / (depth + f64::from(self.nodes[at as usize].mass).log2())
        } else {
            1.0 / (depth + 1.0)
        };
        for (level, &id) in path.iter().enumerate().rev() {
            let (lo, hi) = self.bounds(id);
            // How far `x` lies outside the box, summed over dimensions: 0 (the common case
            // near the root) leaves the score as it is.
            let outside: f32 = lo
                .iter()
                .zip(hi)
                .zip(x)
                .map(|((&l, &h), &v)| (l - v).max(0.0) + (v - h).max(0.0))
                .sum();
            if outside > 0.0 {
                let p = f64::from(outside / (self.nodes[id as usize].range + outside));
                s = p / (level as f64 + 1.0) + (1.0 - p) * s;
            }
        }
        s
    }
}

/// Rows scored together against one tree at a time.
const SCORE_BLOCK: usize = 512;

/// The forest rebuilt from a model.
pub struct Forest {
    trees: Vec<Tree>,
    scale: f64,
}

impl Forest {
    /// Rebuilds every tree from its sample and seed.
    pub fn new(model: &RcfModel) -> Forest {
        let d = model.feature_dim;
        let trees: Vec<Tree> = model
            .samples
            .par_iter()
            .enumerate()
            .map(|(t, s)| Tree::build(s, d, &mut Rng::for_round(model.seed, t)))
            .collect();
        let n = model.samples.iter().map(|s| s.len() / d.max(1)).max().unwrap_or(1);
        Forest {
            trees,
            scale: (n.max(2) as f64).log2(),
        }
    }

    /// Each row's anomaly score: the trees' mean, times `log2(samples per tree)`. Blocks of
    /// rows in parallel, each block tree by tree (a tree stays in cache for the whole block).
    pub fn scores(&self, x: &[f32], d: usize) -> Vec<f64> {
        let mut out = vec![0f64; x.len() / d];
        out.par_chunks_mut(SCORE_BLOCK)
            .zip(x.par_chunks(SCORE_BLOCK * d))
            .for_each(|(o, rows)| {
                let mut path = Vec::with_capacity(64);
                for tree in &self.trees {
                    for (s, row) in o.iter_mut().zip(rows.chunks_exact(d)) {
                        *s += tree.score(row, &mut path);
                    }
                }
                let f = self.scale / self.trees.len() as f64;
                o.iter_mut().for_each(|s| *s *= f);
            });
        out
    }
}

/// Training rows scored for the anomaly threshold's mean and standard deviation.
const STATS_ROWS: usize = 20_000;

/// Trains on `x` (row-major, `p.feature_dim` columns): each tree's sample drawn uniformly
/// without replacement (all rows when there are fewer), and the training rows' score statistics
/// (on a uniform sample of [`STATS_ROWS`] rows for a larger channel).
pub fn fit(x: &[f32], p: &RcfParams, seed: u64) -> RcfModel {
    let d = p.feature_dim;
    let n = x.len() / d;
    let all: Vec<usize> = (0..n).collect();
    let samples: Vec<Vec<f32>> = (0..p.num_trees)
        .map(|t| {
            let mut rng = Rng::for_round(seed ^ 0x5a5a, t);
            rng.sample_sorted(&all, p.num_samples_per_tree)
                .into_iter()
                .flat_map(|i| x[i * d..(i + 1) * d].iter().copied())
                .collect()
        })
        .collect();
    let mut model = RcfModel {
        algorithm: "randomcutforest".into(),
        version: 1,
        feature_dim: d,
        seed,
        score_mean: 0.0,
        score_std: 0.0,
        samples,
    };
    // The threshold's statistics from at most STATS_ROWS rows: their standard error is already
    // far below the spread of the scores, and scoring every row of a large channel would cost
    // more than building the forest.
    let stats: Vec<f32> = if n > STATS_ROWS {
        Rng::new(seed ^ 0x57a7)
            .sample_sorted(&all, STATS_ROWS)
            .into_iter()
            .flat_map(|i| x[i * d..(i + 1) * d].iter().copied())
            .collect()
    } else {
        x.to_vec()
    };
    let scores = Forest::new(&model).scores(&stats, d);
    let m = scores.len().max(1) as f64;
    let mean = scores.iter().sum::<f64>() / m;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / m;
    model.score_mean = mean;
    model.score_std = var.sqrt();
    model
}

/// SageMaker's built-in Random Cut Forest.
pub struct RandomCutForest;

/// The registry entry.
pub static RCF: RandomCutForest = RandomCutForest;

const TEST_METRICS: &[&str] = &["accuracy", "precision", "recall", "f1"];

impl Algorithm for RandomCutForest {
    fn name(&self) -> &'static str {
        "randomcutforest"
    }

    fn images(&self) -> &'static [&'static str] {
        &["randomcutforest", "kiln/randomcutforest"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[ChannelSpec::TRAIN, ChannelSpec::TEST]
    }

    fn content_types(&self) -> &'static [&'static str] {
        CONTENT_TYPES
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        RcfParams::from_hyperparameters(hp).map(|_| ())
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        TEST_METRICS
            .iter()
            .map(|m| {
                (
                    format!("test:{m}"),
                    format!("#quality_metric: host=\\S+, test {m} <score>=(\\S+)"),
                )
            })
            .collect()
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        metric
            .strip_prefix("test:")
            .filter(|m| TEST_METRICS.contains(m))
            .map(|_| true)
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
            "Random Cut Forest",
            paths,
            env,
            RcfParams::from_hyperparameters,
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
    p: &RcfParams,
    host: &str,
    threads: usize,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let want = |label| Want {
        algorithm: "Random Cut Forest",
        label,
    };
    let train_cfg = channels
        .get("train")
        .ok_or_else(|| JobError::User("channel 'train' is required".into()))?;
    let train = read_channel(paths, "train", train_cfg, Some(p.feature_dim), want(false))?;
    let model = fit(&train.values, p, 0x0072_6366);
    let _ = writeln!(
        err,
        "kiln randomcutforest: train {} rows x {} features; {} trees of {} samples; {} threads; score mean {:.4}, \
         sd {:.4}, anomaly threshold {:.4}; {:.3}s",
        train.n_rows(),
        p.feature_dim,
        p.num_trees,
        p.num_samples_per_tree,
        threads,
        model.score_mean,
        model.score_std,
        model.threshold(),
        started.elapsed().as_secs_f64()
    );
    if let Some(cfg) = channels.get("test") {
        let test = read_channel(paths, "test", cfg, Some(p.feature_dim), want(true))?;
        let scores = Forest::new(&model).scores(&test.values, p.feature_dim);
        let th = model.threshold();
        let (mut tp, mut fp, mut tn, mut fneg) = (0f64, 0f64, 0f64, 0f64);
        for (s, &l) in scores.iter().zip(&test.labels) {
            match (*s > th, l != 0.0) {
                (true, true) => tp += 1.0,
                (true, false) => fp += 1.0,
                (false, false) => tn += 1.0,
                (false, true) => fneg += 1.0,
            }
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fneg));
        if p.accuracy {
            let acc = ratio(tp + tn, tp + fp + tn + fneg);
            let _ = writeln!(out, "#quality_metric: host={host}, test accuracy <score>={acc}");
        }
        if p.prf {
            let f1 = ratio(2.0 * precision * recall, precision + recall);
            let _ = writeln!(out, "#quality_metric: host={host}, test precision <score>={precision}");
            let _ = writeln!(out, "#quality_metric: host={host}, test recall <score>={recall}");
            let _ = writeln!(out, "#quality_metric: host={host}, test f1 <score>={f1}");
        }
    }
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let path = paths.model_dir.join(MODEL_FILE);
    let json =
        serde_json::to_string(&model).map_err(|e| JobError::Internal(format!("could not encode the model: {e}")))?;
    std::fs::write(&path, json).map_err(|e| JobError::Internal(format!("could not write {}: {e}", path.display())))
}

/// Reads a model: `rcf-model.json`, or a directory holding it.
pub fn load_model(path: &Path) -> Result<RcfModel, JobError> {
    let file: PathBuf = if path.is_dir() {
        path.join(MODEL_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| JobError::User(format!("could not read model {}: {e}", file.display())))?;
    let m: RcfModel = serde_json::from_str(&text)
        .map_err(|e| JobError::User(format!("{} is not a kiln Random Cut Forest model: {e}", file.display())))?;
    if m.algorithm != "randomcutforest"
        || m.feature_dim == 0
        || m.samples.is_empty()
        || m.samples.iter().any(|s| s.is_empty() || s.len() % m.feature_dim != 0)
    {
        return Err(JobError::User(format!(
            "{} is not a kiln Random Cut Forest model (algorithm '{}', {} trees, feature_dim {})",
            file.display(),
            m.algorithm,
            m.samples.len(),
            m.feature_dim
        )));
    }
    Ok(m)
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let a = PredictArgs::parse(args, USAGE, false)?;
    let model = load_model(&a.model)?;
    let rows = read_predict_data(
        &a.data,
        a.content_type.as_deref(),
        model.feature_dim,
        "Random Cut Forest",
        false,
    )?;
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(a.nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let scores = pool.install(|| Forest::new(&model).scores(&rows.values, model.feature_dim));
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for s in &scores {
            writeln!(w, "{s}")?;
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
    .map_err(|e| JobError::Internal(format!("could not write scores: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn hyperparameters_defaults_and_errors() {
        let p = RcfParams::from_hyperparameters(&hp(&[("feature_dim", "3")])).unwrap();
        assert_eq!(
            (p.num_trees, p.num_samples_per_tree, p.accuracy, p.prf),
            (100, 256, true, true)
        );
        let p =
            RcfParams::from_hyperparameters(&hp(&[("feature_dim", "3"), ("eval_metrics", "[\"accuracy\"]")])).unwrap();
        assert_eq!((p.accuracy, p.prf), (true, false));
        let err = |pairs: &[(&str, &str)]| RcfParams::from_hyperparameters(&hp(pairs)).unwrap_err().to_string();
        assert!(err(&[]).contains("'feature_dim' is required by Random Cut Forest"));
        assert!(err(&[("feature_dim", "3"), ("num_trees", "10")]).contains("integer >= 50"));
        assert!(err(&[("feature_dim", "3"), ("num_samples_per_tree", "4096")]).contains("[1, 2048]"));
        assert!(err(&[("feature_dim", "3"), ("eval_metrics", "[\"auc\"]")]).contains("precision_recall_fscore"));
        assert!(err(&[("feature_dim", "3"), ("trees", "60")]).contains("'trees' is not a Random Cut Forest"));
    }

    /// Gaussian rows in `d` dims with `outliers` rows planted far from the bulk (label 1).
    fn planted(n: usize, outliers: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let mut g = || {
            let u = rng.next_f64().max(1e-300);
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos()) as f32
        };
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let out = i % (n / outliers) == 0;
            for _ in 0..d {
                let v = g();
                x.push(if out { v + 6.0 * v.signum() } else { v });
            }
            y.push(if out { 1.0 } else { 0.0 });
        }
        (x, y)
    }

    fn auc(scores: &[f64], labels: &[f32]) -> f64 {
        let pos: Vec<f64> = scores
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l != 0.0)
            .map(|(s, _)| *s)
            .collect();
        let neg: Vec<f64> = scores
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l == 0.0)
            .map(|(s, _)| *s)
            .collect();
        let wins: f64 = pos
            .iter()
            .map(|p| {
                neg.iter()
                    .map(|n| {
                        if p > n {
                            1.0
                        } else if p == n {
                            0.5
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>()
            })
            .sum();
        wins / (pos.len() * neg.len()) as f64
    }

    #[test]
    fn planted_outliers_score_high() {
        let (x, y) = planted(4000, 40, 4, 1);
        let p = RcfParams::from_hyperparameters(&hp(&[("feature_dim", "4")])).unwrap();
        let m = fit(&x, &p, 3);
        let s = Forest::new(&m).scores(&x, 4);
        let a = auc(&s, &y);
        assert!(a > 0.95, "auc {a}");
        // Typical rows score about 1 (log2(256) over an isolation depth near it).
        assert!(m.score_mean > 0.5 && m.score_mean < 2.0, "{}", m.score_mean);
        // The model rebuilds the same trees.
        let back: RcfModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(Forest::new(&back).scores(&x[..40], 4), s[..10].to_vec());
    }

    #[test]
    fn duplicates_make_a_leaf() {
        let x = vec![1.0f32; 3 * 10];
        let mut rng = Rng::new(1);
        let t = Tree::build(&x, 3, &mut rng);
        assert_eq!(t.nodes.len(), 1);
        let mut path = Vec::new();
        let same = t.score(&[1.0, 1.0, 1.0], &mut path);
        assert!(same > 0.0);
        assert!(t.score(&[5.0, 1.0, 1.0], &mut path) > same);
    }
}
