//! SageMaker's built-in PCA (`pca` images): the top `num_components` principal components of
//! the `train` channel. `regular` mode accumulates the covariance matrix in one pass (the
//! register-tiled [`Gram`] kernel: f32 products within a block, f64 across blocks) and takes
//! its eigenvectors; `randomized` mode finds the components' subspace with a randomized range
//! finder (Halko, Martinsson and Tropp) of `num_components + extra_components` columns and a
//! few power iterations, streaming over the rows without forming the `d x d` matrix unless
//! that matrix is the cheaper way to apply `X^T X` (narrow data). The model is
//! `model/pca-model.json` (`docs/builtins.md` documents it); `kiln algo pca predict` prints each
//! row's projection.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::container::{ChannelConfig, JobError, JobPaths, thread_count};
use crate::dense_input::{CONTENT_TYPES, Want, read_channel, read_predict_data};
use crate::hparams::Hp;
use crate::linalg::{Gram, dots, dots_t, orthonormalize, sym_eigen, transpose};
use crate::registry::{Algorithm, ChannelSpec, PredictArgs, train_on_one_host};
use crate::rng::Rng;

/// The model file in `model/` (and so at the root of model.tar.gz).
pub const MODEL_FILE: &str = "pca-model.json";

const WANT: Want = Want {
    algorithm: "PCA",
    label: false,
};

const USAGE: &str = "\
usage: kiln algo pca train [--ml-root DIR]
       kiln algo pca predict --model FILE|DIR --data PATH [--content-type TYPE]
                             [--output FILE] [--nthread N]

train    runs the SageMaker PCA container contract under DIR (default /opt/ml): channels
         'train' (required) and 'test', application/x-recordio-protobuf (the default) or
         text/csv without a label column; hyperparameters feature_dim, mini_batch_size and
         num_components are required. Writes model/pca-model.json and prints
         '#quality_metric: host=H, train explained_variance_ratio <score>=V' (and test).
predict  prints each row's projection on the components, comma-separated (the row minus the
         training mean when subtract_mean). --model is pca-model.json or the directory holding
         it; TYPE defaults to text/csv (application/x-recordio-protobuf for .rec/.pbr files).";

/// `algorithm_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The covariance matrix and its eigenvectors.
    Regular,
    /// A randomized range finder with power iterations.
    Randomized,
}

/// PCA hyperparameters, checked: names, defaults and ranges as SageMaker documents them.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaParams {
    /// `feature_dim` (required).
    pub feature_dim: usize,
    /// `mini_batch_size` (required; kiln's blocks are its own size, see `BLOCK`).
    pub mini_batch_size: usize,
    /// `num_components` (required, at most `feature_dim`).
    pub num_components: usize,
    /// `algorithm_mode` (default regular).
    pub mode: Mode,
    /// `subtract_mean` (default true).
    pub subtract_mean: bool,
    /// `extra_components`: `None` is -1, `max(10, num_components)`; randomized mode only.
    pub extra_components: Option<usize>,
}

impl PcaParams {
    /// Parses `hyperparameters.json`'s map.
    pub fn from_hyperparameters(map: &BTreeMap<String, String>) -> Result<Self, JobError> {
        let hp = Hp { map, algorithm: "PCA" };
        hp.only(&[
            "feature_dim",
            "mini_batch_size",
            "num_components",
            "algorithm_mode",
            "subtract_mean",
            "extra_components",
        ])?;
        let feature_dim = hp.count("feature_dim", 1, None)?;
        let mini_batch_size = hp.count("mini_batch_size", 1, None)?;
        let num_components = hp.count("num_components", 1, None)?;
        if num_components > feature_dim {
            return Err(JobError::User(format!(
                "Hyperparameter 'num_components' is {num_components} but 'feature_dim' is {feature_dim}: PCA finds at most \
                 feature_dim components; lower num_components"
            )));
        }
        let mode =
            [Mode::Regular, Mode::Randomized][hp.choice("algorithm_mode", &["regular", "randomized"], Some(0))?];
        let extra = hp.int_at_least("extra_components", -1, Some(-1))?;
        Ok(Self {
            feature_dim,
            mini_batch_size,
            num_components,
            mode,
            subtract_mean: hp.boolean("subtract_mean", true)?,
            extra_components: usize::try_from(extra).ok(),
        })
    }

    /// Columns of the randomized range finder: `num_components + extra_components`, at most
    /// `feature_dim`.
    pub fn sketch_width(&self) -> usize {
        let extra = self.extra_components.unwrap_or(self.num_components.max(10));
        (self.num_components + extra).min(self.feature_dim)
    }
}

/// A trained model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PcaModel {
    /// Always `"pca"`.
    pub algorithm: String,
    /// Format version (1).
    pub version: u32,
    /// Columns per row.
    pub feature_dim: usize,
    /// Components kept.
    pub num_components: usize,
    /// The mode that found them.
    pub algorithm_mode: Mode,
    /// Whether rows are centered on `mean` before projecting.
    pub subtract_mean: bool,
    /// Training rows.
    pub n_rows: usize,
    /// The training mean (zeros when not `subtract_mean`).
    pub mean: Vec<f32>,
    /// The components, largest variance first, unit length, `feature_dim` values each.
    pub components: Vec<Vec<f32>>,
    /// Singular values of the (centered) training matrix, one per component.
    pub singular_values: Vec<f64>,
    /// Variance along each component (`singular_value^2 / (n_rows - 1)`).
    pub explained_variance: Vec<f64>,
    /// Each component's share of the total variance.
    pub explained_variance_ratio: Vec<f64>,
}

/// Rows per parallel task: a block and its transpose stay in L2 for feature_dim in the hundreds.
const BLOCK: usize = 256;
/// Power iterations of randomized mode after the first range pass.
const POWER_ITERS: usize = 2;

/// The column means, in f64.
fn column_mean(x: &[f32], d: usize) -> Vec<f64> {
    let n = x.len() / d;
    let sum = x
        .par_chunks(BLOCK * d)
        .fold(
            || vec![0f64; d],
            |mut acc, block| {
                for row in block.chunks_exact(d) {
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += f64::from(v);
                    }
                }
                acc
            },
        )
        .reduce(|| vec![0f64; d], add_into);
    sum.into_iter().map(|s| s / n.max(1) as f64).collect()
}

fn add_into(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    for (x, y) in a.iter_mut().zip(&b) {
        *x += y;
    }
    a
}

/// A block's rows minus `shift`, into `out`.
fn centered(block: &[f32], shift: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        block
            .chunks_exact(shift.len())
            .flat_map(|r| r.iter().zip(shift).map(|(v, m)| v - m)),
    );
}

/// Rows whose mean is the shift of [`centered_gram`].
const SHIFT_ROWS: usize = 1024;

/// The column means (zeros without `subtract_mean`) and `sum_i (x_i - mean)^T (x_i - mean)`
/// (`d x d`) in one pass over the rows. Each row goes into a [`Gram`] minus a shift `s` (the
/// mean of the first rows: close to the mean, so the f32 products lose nothing to
/// cancellation) with a column of ones after it, whose entries sum the shifted rows; the mean
/// is then `s + sum (x_i - s) / n` and the exact centering a rank-one correction,
/// `- n (mean - s)^T (mean - s)`.
fn centered_gram(x: &[f32], d: usize, subtract_mean: bool) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d;
    let shift: Vec<f32> = if subtract_mean {
        column_mean(&x[..n.min(SHIFT_ROWS) * d], d)
            .iter()
            .map(|&m| m as f32)
            .collect()
    } else {
        vec![0.0; d]
    };
    let w = d + 1;
    let g = x
        .par_chunks(BLOCK * d)
        .fold(
            || Gram::new(w),
            |mut g, block| {
                for row in block.chunks_exact(d) {
                    g.push(|dst| {
                        for ((o, &v), &m) in dst.iter_mut().zip(row).zip(&shift) {
                            *o = v - m;
                        }
                        dst[d] = 1.0;
                    });
                }
                g
            },
        )
        .reduce(|| Gram::new(w), Gram::merge)
        .finish();
    let nf = n as f64;
    let delta: Vec<f64> = if subtract_mean {
        (0..d).map(|j| g[j * w + d] / nf).collect()
    } else {
        vec![0.0; d]
    };
    let mut out = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            out[i * d + j] = g[i * w + j] - nf * delta[i] * delta[j];
        }
    }
    let mean = shift.iter().zip(&delta).map(|(&s, &dm)| f64::from(s) + dm).collect();
    (mean, out)
}

/// One pass of randomized mode over `x` (centered on `shift`) with the `l x d` basis `z`:
/// `W = X^T X z^T` (`l x d`, vector-major), `T = (X z^T)^T (X z^T)` (`l x l`), and the sum of
/// squares of the centered rows.
fn sketch_pass(x: &[f32], d: usize, shift: &[f32], z: &[f32]) -> (Vec<f64>, Vec<f64>, f64) {
    let l = z.len() / d;
    // The basis transposed once (`d x l`): both products below then read their right-hand
    // side row-major, as the transposed-panel kernel wants, and no block is transposed.
    let mut zt = Vec::new();
    transpose(z, l, d, &mut zt);
    let zero = || (vec![0f64; l * d], vec![0f64; l * l], 0f64);
    x.par_chunks(BLOCK * d)
        .fold(zero, |(mut w, mut tt, mut ss), block| {
            let r = block.len() / d;
            let mut c = Vec::new();
            centered(block, shift, &mut c);
            ss += c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
            // Y = C Z^T (r x l), then W += Y^T C (l x d) and T += Y^T Y (l x l).
            let mut y = vec![0f32; r * l];
            dots_t(&c, &zt, d, l, &mut y);
            let mut yt = Vec::new();
            transpose(&y, r, l, &mut yt);
            let mut wb = vec![0f32; l * d];
            dots_t(&yt, &c, r, d, &mut wb);
            let mut tb = vec![0f32; l * l];
            dots_t(&yt, &y, r, l, &mut tb);
            for (a, &v) in w.iter_mut().zip(&wb) {
                *a += f64::from(v);
            }
            for (a, &v) in tt.iter_mut().zip(&tb) {
                *a += f64::from(v);
            }
            (w, tt, ss)
        })
        .reduce(zero, |a, b| (add_into(a.0, b.0), add_into(a.1, b.1), a.2 + b.2))
}

/// Whether randomized mode should form the `d x d` Gram matrix once (one pass of `n d^2 / 2`
/// multiply-adds by the fast kernel) and run its power iterations on it, rather than stream
/// over the rows for each of its `POWER_ITERS + 2` passes (about `2 n d l` each): the same
/// products `X^T X z`, so the same result, cheaper while `d` is under about `16 l` (and the
/// matrix small).
fn gram_is_cheaper(d: usize, l: usize) -> bool {
    d <= 16 * l && d <= 4096
}

/// `G z_j` for each of the `l` vectors `z_j` (vector-major) and the symmetric `d x d` `g`.
fn gram_times(g: &[f64], d: usize, z: &[f64]) -> Vec<f64> {
    let mut out = vec![0f64; z.len()];
    for (o, v) in out.chunks_exact_mut(d).zip(z.chunks_exact(d)) {
        for (oi, row) in o.iter_mut().zip(g.chunks_exact(d)) {
            *oi = row.iter().zip(v).map(|(a, b)| a * b).sum();
        }
    }
    out
}

/// Standard normal draws (Box-Muller).
fn gaussian(rng: &mut Rng) -> f64 {
    let u = rng.next_f64().max(1e-300);
    let v = rng.next_f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Flips a component so that its largest-magnitude entry is positive: one answer per subspace,
/// whichever way the solver converged.
fn fix_sign(v: &mut [f64]) {
    let big = v
        .iter()
        .copied()
        .fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
    if big < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

/// Trains on `x` (row-major, `p.feature_dim` columns).
pub fn fit(x: &[f32], p: &PcaParams, seed: u64) -> Result<PcaModel, JobError> {
    let d = p.feature_dim;
    let n = x.len() / d;
    if n < 2 {
        return Err(JobError::User(format!(
            "channel 'train' has {n} row; PCA needs at least 2 rows to measure variance"
        )));
    }
    // Regular mode finds the mean in its one pass over the rows; randomized mode first.
    let l = p.sketch_width().max(p.num_components);
    let (mean, gram) = if p.mode == Mode::Regular || gram_is_cheaper(d, l) {
        let (mean, g) = centered_gram(x, d, p.subtract_mean);
        (mean, Some(g))
    } else if p.subtract_mean {
        (column_mean(x, d), None)
    } else {
        (vec![0.0; d], None)
    };
    let shift: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let denom = (n - 1) as f64;
    let k = p.num_components;
    // (variances, components vector-major, total variance)
    let (vals, vecs, total) = match (p.mode, gram) {
        (Mode::Regular, Some(g)) => {
            let total = (0..d).map(|i| g[i * d + i]).sum::<f64>() / denom;
            let cov: Vec<f64> = g.iter().map(|v| v / denom).collect();
            let (vals, vecs) = sym_eigen(&cov, d);
            (vals[..k].to_vec(), vecs[..k * d].to_vec(), total)
        }
        (_, gram) => {
            let mut rng = Rng::new(seed);
            let mut basis: Vec<f64> = (0..l * d).map(|_| gaussian(&mut rng)).collect();
            orthonormalize(&mut basis, d, l);
            // The range pass, then power iterations: each applies X^T X to the basis, from
            // the Gram matrix when it was formed, else in a pass over the rows.
            for _ in 0..=POWER_ITERS {
                basis = match &gram {
                    Some(g) => gram_times(g, d, &basis),
                    None => {
                        let z: Vec<f32> = basis.iter().map(|&v| v as f32).collect();
                        sketch_pass(x, d, &shift, &z).0
                    }
                };
                orthonormalize(&mut basis, d, l);
            }
            // Rayleigh-Ritz on the final basis: the l x l covariance in its coordinates.
            let (t, ss) = match &gram {
                Some(g) => {
                    let gb = gram_times(g, d, &basis);
                    let mut t = vec![0f64; l * l];
                    for i in 0..l {
                        for j in 0..l {
                            t[i * l + j] = basis[i * d..(i + 1) * d]
                                .iter()
                                .zip(&gb[j * d..(j + 1) * d])
                                .map(|(a, b)| a * b)
                                .sum();
                        }
                    }
                    (t, (0..d).map(|i| g[i * d + i]).sum::<f64>())
                }
                None => {
                    let z: Vec<f32> = basis.iter().map(|&v| v as f32).collect();
                    let (_, t, ss) = sketch_pass(x, d, &shift, &z);
                    (t, ss)
                }
            };
            let total = ss / denom;
            let small: Vec<f64> = t.iter().map(|v| v / denom).collect();
            let (vals, u) = sym_eigen(&small, l);
            let mut vecs = vec![0f64; k * d];
            for c in 0..k {
                for j in 0..l {
                    let coef = u[c * l + j];
                    for (o, b) in vecs[c * d..(c + 1) * d].iter_mut().zip(&basis[j * d..(j + 1) * d]) {
                        *o += coef * b;
                    }
                }
            }
            (vals[..k].to_vec(), vecs, total)
        }
    };
    let mut components = Vec::with_capacity(k);
    for c in 0..k {
        let mut v = vecs[c * d..(c + 1) * d].to_vec();
        fix_sign(&mut v);
        components.push(v.iter().map(|&x| x as f32).collect());
    }
    let explained_variance: Vec<f64> = vals.iter().map(|v| v.max(0.0)).collect();
    Ok(PcaModel {
        algorithm: "pca".into(),
        version: 1,
        feature_dim: d,
        num_components: k,
        algorithm_mode: p.mode,
        subtract_mean: p.subtract_mean,
        n_rows: n,
        mean: shift,
        singular_values: explained_variance.iter().map(|v| (v * denom).sqrt()).collect(),
        explained_variance_ratio: explained_variance
            .iter()
            .map(|v| if total > 0.0 { v / total } else { 0.0 })
            .collect(),
        explained_variance,
        components,
    })
}

/// Each row's projection on the components, `num_components` values per row.
pub fn project(model: &PcaModel, x: &[f32]) -> Vec<f32> {
    let d = model.feature_dim;
    let k = model.num_components;
    let comps: Vec<f32> = model.components.iter().flatten().copied().collect();
    let mut out = vec![0f32; x.len() / d * k];
    out.par_chunks_mut(BLOCK * k)
        .zip(x.par_chunks(BLOCK * d))
        .for_each_init(Vec::new, |c, (o, block)| {
            centered(block, &model.mean, c);
            dots(c, &comps, d, o);
        });
    out
}

/// The share of `x`'s variance (around the model's mean) its projection keeps:
/// `sum |proj|^2 / sum |x - mean|^2`.
pub fn captured_variance(model: &PcaModel, x: &[f32]) -> f64 {
    let proj = project(model, x);
    let kept: f64 = proj.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let total: f64 = x
        .chunks_exact(model.feature_dim)
        .flat_map(|r| r.iter().zip(&model.mean).map(|(v, m)| f64::from(v - m).powi(2)))
        .sum();
    if total > 0.0 { kept / total } else { 0.0 }
}

/// SageMaker's built-in PCA.
pub struct Pca;

/// The registry entry.
pub static PCA: Pca = Pca;

impl Algorithm for Pca {
    fn name(&self) -> &'static str {
        "pca"
    }

    fn images(&self) -> &'static [&'static str] {
        &["pca", "kiln/pca"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[ChannelSpec::TRAIN, ChannelSpec::TEST]
    }

    fn content_types(&self) -> &'static [&'static str] {
        CONTENT_TYPES
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        PcaParams::from_hyperparameters(hp).map(|_| ())
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        ["train", "test"]
            .iter()
            .map(|c| {
                (
                    format!("{c}:explained_variance_ratio"),
                    format!("#quality_metric: host=\\S+, {c} explained_variance_ratio <score>=(\\S+)"),
                )
            })
            .collect()
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        matches!(
            metric,
            "train:explained_variance_ratio" | "test:explained_variance_ratio"
        )
        .then_some(true)
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
            "PCA",
            paths,
            env,
            PcaParams::from_hyperparameters,
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
    p: &PcaParams,
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
    let _ = writeln!(
        err,
        "kiln pca: train {} rows x {} features; {} components, {:?} mode{}, subtract_mean {}; {} threads (read in {:.3}s)",
        train.n_rows(),
        p.feature_dim,
        p.num_components,
        p.mode,
        if p.mode == Mode::Randomized {
            format!(" ({} sketch columns, {POWER_ITERS} power iterations)", p.sketch_width())
        } else {
            String::new()
        },
        p.subtract_mean,
        threads,
        started.elapsed().as_secs_f64()
    );
    let fit_start = std::time::Instant::now();
    let model = fit(&train.values, p, 0x0070_6361)?;
    let ratio: f64 = model.explained_variance_ratio.iter().sum();
    let _ = writeln!(err, "kiln pca: fit in {:.3}s", fit_start.elapsed().as_secs_f64());
    let _ = writeln!(
        out,
        "#quality_metric: host={host}, train explained_variance_ratio <score>={ratio}"
    );
    if let Some(cfg) = channels.get("test") {
        let test = read_channel(paths, "test", cfg, Some(p.feature_dim), WANT)?;
        let v = captured_variance(&model, &test.values);
        let _ = writeln!(
            out,
            "#quality_metric: host={host}, test explained_variance_ratio <score>={v}"
        );
    }
    std::fs::create_dir_all(&paths.model_dir)
        .map_err(|e| JobError::Internal(format!("could not create {}: {e}", paths.model_dir.display())))?;
    let path = paths.model_dir.join(MODEL_FILE);
    let json =
        serde_json::to_string(&model).map_err(|e| JobError::Internal(format!("could not encode the model: {e}")))?;
    std::fs::write(&path, json).map_err(|e| JobError::Internal(format!("could not write {}: {e}", path.display())))
}

/// Reads a model: `pca-model.json`, or a directory holding it.
pub fn load_model(path: &Path) -> Result<PcaModel, JobError> {
    let file: PathBuf = if path.is_dir() {
        path.join(MODEL_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| JobError::User(format!("could not read model {}: {e}", file.display())))?;
    let m: PcaModel = serde_json::from_str(&text)
        .map_err(|e| JobError::User(format!("{} is not a kiln PCA model: {e}", file.display())))?;
    if m.algorithm != "pca"
        || m.mean.len() != m.feature_dim
        || m.components.len() != m.num_components
        || m.components.iter().any(|c| c.len() != m.feature_dim)
    {
        return Err(JobError::User(format!(
            "{} is not a kiln PCA model (algorithm '{}', {} components of feature_dim {})",
            file.display(),
            m.algorithm,
            m.components.len(),
            m.feature_dim
        )));
    }
    Ok(m)
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let a = PredictArgs::parse(args, USAGE, false)?;
    let model = load_model(&a.model)?;
    let rows = read_predict_data(&a.data, a.content_type.as_deref(), model.feature_dim, "PCA", false)?;
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(a.nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let proj = pool.install(|| project(&model, &rows.values));
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for row in proj.chunks_exact(model.num_components) {
            let mut first = true;
            for v in row {
                if !first {
                    w.write_all(b",")?;
                }
                first = false;
                write!(w, "{v}")?;
            }
            w.write_all(b"\n")?;
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
    .map_err(|e| JobError::Internal(format!("could not write projections: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn hyperparameters_defaults_and_errors() {
        let base = [
            ("feature_dim", "5"),
            ("mini_batch_size", "100"),
            ("num_components", "2"),
        ];
        let p = PcaParams::from_hyperparameters(&hp(&base)).unwrap();
        assert_eq!(
            (p.mode, p.subtract_mean, p.extra_components),
            (Mode::Regular, true, None)
        );
        assert_eq!(p.sketch_width(), 5);
        let mut more = base.to_vec();
        more.extend([
            ("algorithm_mode", "randomized"),
            ("extra_components", "1"),
            ("subtract_mean", "False"),
        ]);
        let p = PcaParams::from_hyperparameters(&hp(&more)).unwrap();
        assert_eq!(
            (p.mode, p.subtract_mean, p.sketch_width()),
            (Mode::Randomized, false, 3)
        );
        let err = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            all.extend_from_slice(extra);
            PcaParams::from_hyperparameters(&hp(&all)).unwrap_err().to_string()
        };
        assert!(err(&[("num_components", "6")]).contains("at most feature_dim"));
        assert!(err(&[("algorithm_mode", "fast")]).contains("regular, randomized"));
        assert!(err(&[("extra_components", "-2")]).contains("integer >= -1"));
        assert!(err(&[("subtract_mean", "yes")]).contains("true, false"));
        assert!(err(&[("num_component", "2")]).contains("'num_component' is not a PCA"));
        assert_eq!(
            PcaParams::from_hyperparameters(&hp(&[("feature_dim", "5"), ("num_components", "2")]))
                .unwrap_err()
                .to_string(),
            "Hyperparameter 'mini_batch_size' is required by PCA: set it (an integer >= 1)"
        );
    }

    /// Rows `mean + sum_c z_c * scale_c * axis_c + noise` for orthonormal axes.
    fn planted(n: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f64>>) {
        let d = 6;
        let mut axes = vec![
            vec![1.0, 2.0, 0.0, -1.0, 0.5, 0.0],
            vec![0.0, 1.0, 1.0, 1.0, 0.0, -2.0],
            vec![3.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        ];
        let mut flat: Vec<f64> = axes.iter().flatten().copied().collect();
        orthonormalize(&mut flat, d, 3);
        for (c, a) in axes.iter_mut().enumerate() {
            *a = flat[c * d..(c + 1) * d].to_vec();
        }
        let scales = [10.0, 4.0, 2.0];
        let mean = [100.0, -50.0, 3.0, 0.0, 7.0, 1.0];
        let mut rng = Rng::new(seed);
        let mut x = Vec::with_capacity(n * d);
        for _ in 0..n {
            let z: Vec<f64> = scales.iter().map(|s| s * gaussian(&mut rng)).collect();
            for j in 0..d {
                let v = mean[j] + (0..3).map(|c| z[c] * axes[c][j]).sum::<f64>() + 0.1 * gaussian(&mut rng);
                x.push(v as f32);
            }
        }
        (x, axes)
    }

    #[test]
    fn both_modes_recover_planted_components() {
        let (x, axes) = planted(20_000, 5);
        for mode in ["regular", "randomized"] {
            let p = PcaParams::from_hyperparameters(&hp(&[
                ("feature_dim", "6"),
                ("mini_batch_size", "500"),
                ("num_components", "3"),
                ("algorithm_mode", mode),
                ("extra_components", "1"),
            ]))
            .unwrap();
            let m = fit(&x, &p, 1).unwrap();
            for (c, axis) in axes.iter().enumerate() {
                let cos: f64 = m.components[c].iter().zip(axis).map(|(&a, b)| f64::from(a) * b).sum();
                assert!(cos.abs() > 0.999, "{mode}: component {c}: cos {cos}");
            }
            // Variances 100, 16, 4 (+ noise 0.01 each).
            for (v, want) in m.explained_variance.iter().zip([100.0, 16.0, 4.0]) {
                assert!((v / want - 1.0).abs() < 0.05, "{mode}: {:?}", m.explained_variance);
            }
            let total: f64 = m.explained_variance_ratio.iter().sum();
            assert!(total > 0.99 && total <= 1.0 + 1e-9, "{mode}: {total}");
            assert!((m.mean[0] - 100.0).abs() < 0.5);
            // Projection: row minus mean, dotted with each component.
            let proj = project(&m, &x[..6]);
            for c in 0..3 {
                let want: f32 = (0..6).map(|j| (x[j] - m.mean[j]) * m.components[c][j]).sum();
                assert!((proj[c] - want).abs() < 1e-3, "{proj:?}");
            }
            assert!(captured_variance(&m, &x) > 0.99);
        }
    }

    /// Randomized mode both ways: streaming passes over the rows when `d` is large against the
    /// sketch (70 features, 2 columns), the Gram matrix otherwise (16 columns); both agree with
    /// regular mode on the planted direction and its variance.
    #[test]
    fn randomized_streams_or_uses_the_gram_matrix_alike() {
        let d = 70;
        let axis: Vec<f64> = (0..d).map(|j| ((j % 7) as f64 - 3.0) / 10.0).collect();
        let norm = axis.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mut rng = Rng::new(4);
        let mut x = Vec::new();
        for _ in 0..5_000 {
            let z = 5.0 * gaussian(&mut rng);
            x.extend((0..d).map(|j| (2.0 + z * axis[j] / norm + 0.1 * gaussian(&mut rng)) as f32));
        }
        assert!(!gram_is_cheaper(d, 2) && gram_is_cheaper(d, 16));
        let mut variances = Vec::new();
        for (mode, extra) in [("regular", "-1"), ("randomized", "1"), ("randomized", "15")] {
            let p = PcaParams::from_hyperparameters(&hp(&[
                ("feature_dim", "70"),
                ("mini_batch_size", "500"),
                ("num_components", "1"),
                ("algorithm_mode", mode),
                ("extra_components", extra),
            ]))
            .unwrap();
            let m = fit(&x, &p, 1).unwrap();
            let cos: f64 = m.components[0]
                .iter()
                .zip(&axis)
                .map(|(&a, b)| f64::from(a) * b / norm)
                .sum();
            assert!(cos.abs() > 0.999, "{mode} {extra}: cos {cos}");
            variances.push(m.explained_variance[0]);
        }
        assert!((variances[0] / 25.0 - 1.0).abs() < 0.1, "{variances:?}");
        for v in &variances[1..] {
            assert!((v / variances[0] - 1.0).abs() < 1e-3, "{variances:?}");
        }
    }

    #[test]
    fn without_subtract_mean_the_mean_is_the_first_direction() {
        let (x, _) = planted(2000, 9);
        let p = PcaParams::from_hyperparameters(&hp(&[
            ("feature_dim", "6"),
            ("mini_batch_size", "10"),
            ("num_components", "1"),
            ("subtract_mean", "false"),
        ]))
        .unwrap();
        let m = fit(&x, &p, 1).unwrap();
        assert!(m.mean.iter().all(|&v| v == 0.0));
        let mean = [100.0f64, -50.0, 3.0, 0.0, 7.0, 1.0];
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        let cos: f64 = m.components[0]
            .iter()
            .zip(mean)
            .map(|(&a, b)| f64::from(a) * b / norm)
            .sum();
        assert!(cos.abs() > 0.99, "{cos}");
    }

    #[test]
    fn one_row_is_an_error() {
        let p = PcaParams::from_hyperparameters(&hp(&[
            ("feature_dim", "2"),
            ("mini_batch_size", "1"),
            ("num_components", "1"),
        ]))
        .unwrap();
        assert!(
            fit(&[1.0, 2.0], &p, 1)
                .unwrap_err()
                .to_string()
                .contains("at least 2 rows")
        );
    }
}
