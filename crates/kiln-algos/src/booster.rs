//! The boosting loop and the trained model.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::binning::{BinCuts, BinnedMatrix};
use crate::checkpoint::Checkpoints;
use crate::collective::{Collective, CommError, decode, encode};
use crate::data::{Dataset, DenseMatrix};
use crate::grow::{GrowParams, Grower, grad_max};
use crate::metric::{EvalData, Metric, eval_all_global};
use crate::objective::{GradPair, Objective, weighted_quantile};
use crate::params::{GrowPolicy, XgbParams};
use crate::prof::{Phase, time};
use crate::rank::RankScratch;
use crate::rng::{Rng, n_sampled};
use crate::tree::{FlatTree, RegTree};

/// A trained gradient-boosted tree ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct Booster {
    /// Objective (decides the output transform).
    pub objective: Objective,
    /// `base_score` in the objective's "probability" space, as xgboost stores it.
    pub base_score: f32,
    /// Per-group intercepts already in margin space (xgboost >= 3.1 multi-class files);
    /// when set it replaces `base_score`.
    pub base_margin_vec: Option<Vec<f32>>,
    /// Number of features the model was trained on.
    pub num_feature: usize,
    /// Trees, round by round, `n_groups` per round.
    pub trees: Vec<RegTree>,
    /// Output group of each tree.
    pub tree_info: Vec<usize>,
    /// Best iteration and score when early stopping ran.
    pub best: Option<(usize, f64)>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A label the objective cannot use.
    #[error("{set} data: row {row}: label {label} is invalid for objective {objective}: {why}")]
    BadLabel {
        /// "train" or "validation".
        set: String,
        /// 1-based row.
        row: usize,
        /// The label.
        label: f32,
        /// Objective name.
        objective: &'static str,
        /// The rule.
        why: String,
    },
    /// The data has no rows or no labels.
    #[error("{set} data: {why}")]
    BadData {
        /// "train" or "validation".
        set: String,
        /// What is wrong.
        why: String,
    },
    /// Writing a log line failed.
    #[error("could not write the training log: {0}")]
    Log(#[from] std::io::Error),
    /// Distributed training lost one of the other hosts.
    #[error("{0}")]
    Collective(#[from] CommError),
    /// The model to resume from does not fit this training (objective, features).
    #[error("cannot resume from the checkpoint: {0}")]
    Resume(String),
    /// A checkpoint could not be written.
    #[error("{0}")]
    Checkpoint(String),
}

/// A data set to evaluate: (name, margins, labels, weights).
type EvalSet<'a> = (&'a str, &'a [f32], &'a [f32], Option<&'a [f32]>);

/// What evaluating a data set each round reuses: its predictions and its rows' ranking.
#[derive(Default)]
struct EvalBuffers {
    preds: Vec<f32>,
    rank: RankScratch,
}

/// One evaluation result: (data set, metric, value).
pub type EvalResult = (String, String, f64);

/// Where per-round lines go and which sets are evaluated.
pub struct TrainOptions<'a> {
    /// Evaluate on the training data each round (the container does).
    pub eval_train: bool,
    /// Destination of `[i]\ttrain-m:v...` lines (flushed each round); None = no evaluation
    /// output (metrics are then only computed when early stopping needs them). Distributed,
    /// every host must pass one or none (the metrics are computed together).
    pub log: Option<&'a mut (dyn Write + Send)>,
    /// The hosts of a distributed job: the data given is this host's part, and every host
    /// returns the same model, trained on all the parts. None (or one host) = train alone.
    pub comm: Option<&'a Collective>,
    /// A model to continue (a checkpoint whose trees are rounds `0..n`): its trees are kept,
    /// the margins recomputed from them, and training goes on from round `n` up to
    /// `num_round`. With identical data and parameters the result is the model an
    /// uninterrupted run trains. Distributed, every host must pass the same model.
    pub resume: Option<&'a Booster>,
    /// Subtracted from the round numbers of the printed lines: the rounds of the model an
    /// incremental job continues, since xgboost numbers a continued training's rounds from 0.
    pub round_offset: usize,
    /// Write `xgboost-checkpoint.<round>` here after every round (distributed: pass it on
    /// algo-1 only).
    pub checkpoints: Option<&'a Checkpoints>,
    /// Distributed: every host was given the whole validation set (a `FullyReplicated`
    /// channel), not a part. Each host then evaluates it alone, exchanging nothing: the hosts
    /// hold the same model and the same rows, so they compute the same bits (the ranking's
    /// parallel split depends only on the data, not on the thread count).
    pub valid_whole: bool,
}

impl Default for TrainOptions<'_> {
    fn default() -> Self {
        Self {
            eval_train: true,
            log: None,
            comm: None,
            resume: None,
            round_offset: 0,
            checkpoints: None,
            valid_whole: false,
        }
    }
}

fn check_labels(obj: &Objective, ds: &Dataset, set: &str) -> Result<(), TrainError> {
    if ds.n_rows() == 0 {
        return Err(TrainError::BadData {
            set: set.into(),
            why: "no rows".into(),
        });
    }
    if ds.labels.len() != ds.n_rows() {
        return Err(TrainError::BadData {
            set: set.into(),
            why: "every row needs a label".into(),
        });
    }
    if let Some(w) = &ds.weights
        && w.len() != ds.n_rows()
    {
        return Err(TrainError::BadData {
            set: set.into(),
            why: "weights and rows differ in number".into(),
        });
    }
    for (i, &y) in ds.labels.iter().enumerate() {
        if let Err(why) = obj.check_label(y) {
            return Err(TrainError::BadLabel {
                set: set.into(),
                row: i + 1,
                label: y,
                objective: obj.name(),
                why,
            });
        }
    }
    Ok(())
}

/// Formats a metric value as xgboost's Python monitor does (`{:.5f}`).
fn fmt5(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:.5}")
    }
}

/// Trains a model. `valid` is the validation channel (used for early stopping).
pub fn train(
    params: &XgbParams,
    train: &Dataset,
    valid: Option<&Dataset>,
    opts: TrainOptions<'_>,
) -> Result<Booster, TrainError> {
    let cuts = BinCuts::compute(&train.features, train.weights.as_deref(), params.max_bin);
    let binned = BinnedMatrix::new(&train.features, cuts);
    train_binned(params, &binned, &train.labels, train.weights.as_deref(), valid, opts)
}

/// Trains from already-binned data (the data can be dropped before training).
pub fn train_binned(
    params: &XgbParams,
    data: &BinnedMatrix,
    labels: &[f32],
    weights: Option<&[f32]>,
    valid: Option<&Dataset>,
    opts: TrainOptions<'_>,
) -> Result<Booster, TrainError> {
    // The boosting loop runs on a thread of the current rayon pool (the global one when called
    // from outside any pool): each of its many parallel steps then starts with this thread
    // already working, instead of handing off to the pool and sleeping until it is done.
    let _spinners = IdleSpinners::start(rayon::current_num_threads().saturating_sub(1));
    rayon::scope(|_| train_in_pool(params, data, labels, weights, valid, opts))
}

/// Threads that keep otherwise idle CPUs busy while a model trains, at the lowest scheduling
/// priority (`SCHED_IDLE`: they run only when nothing else wants the CPU), so that the pool's
/// threads, which sleep between the many short parallel steps of each tree, wake up at once.
///
/// A CPU with nothing to run halts; waking a thread there means bringing the CPU back, which
/// costs microseconds on a bare machine (deep idle states) and, on a virtual machine, the
/// hypervisor scheduling that CPU again: on a busy host, milliseconds, several times per tree
/// (on the 2-CPU development VM two threads once trained flights slower than one). A CPU
/// running a spinner switches to the woken thread right away. OpenMP, which xgboost and
/// LightGBM use, gets the same effect by spinning at its barriers. The spinners loop on
/// `sched_yield` rather than a busy wait: rayon's idle threads yield before they sleep, and a
/// busy-waiting spinner then kept their CPU for up to a scheduler tick (two threads were 20-35%
/// slower than without spinners on flights, 7-27% on 1M rows; yielding spinners match no
/// spinners there). Dropping the value stops
/// and joins the threads. Linux only; elsewhere, and if the priority cannot be set, there are
/// no spinners.
struct IdleSpinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl IdleSpinners {
    fn start(n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .filter_map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name("kiln-idle-spinner".into())
                    .spawn(move || {
                        if lowest_priority() {
                            while !stop.load(Ordering::Relaxed) {
                                // Yield, not spin: a pool thread with nothing to steal yields
                                // too, and a spinner that kept the CPU would then run until
                                // the next scheduler tick while work waited.
                                std::thread::yield_now();
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for IdleSpinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class; whether it succeeded.
fn lowest_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` reads the `sched_param` it is given (a valid local) and
        // changes only the calling thread's (pid 0) policy; SCHED_IDLE needs no privilege.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Gradients of one block of rows (one output group) and their maxima ([`grad_max`]), with
/// AVX2's 8-wide vectors when the CPU has them. The results are bit-identical either way: the
/// same IEEE operations, only more lanes at once (no fused multiply-add).
///
/// `leaves`, when given, are the last tree's leaf slot of each row and the table of their
/// values (a power of two long, see [`Grower::slot_values`]), added to the margins first.
fn gradient_block(
    obj: &Objective,
    m: &mut [f32],
    leaves: Option<(&[u32], &[f32])>,
    ys: &[f32],
    ws: Option<&[f32]>,
    spw: f32,
    out: &mut [GradPair],
) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the one requirement for calling
        // a function compiled with it enabled.
        return unsafe { gradient_block_avx2(obj, m, leaves, ys, ws, spw, out) };
    }
    gradient_block_plain(obj, m, leaves, ys, ws, spw, out)
}

#[inline(always)]
fn gradient_block_plain(
    obj: &Objective,
    m: &mut [f32],
    leaves: Option<(&[u32], &[f32])>,
    ys: &[f32],
    ws: Option<&[f32]>,
    spw: f32,
    out: &mut [GradPair],
) -> (f32, f32) {
    if let Some((slots, table)) = leaves {
        assert!(table.len().is_power_of_two(), "slot table length");
        let mask = table.len() - 1;
        for (m, &s) in m.iter_mut().zip(slots) {
            // SAFETY: `s & mask <= mask < table.len()`.
            *m += unsafe { *table.get_unchecked(s as usize & mask) };
        }
    }
    obj.gradients_block(m, ys, ws, spw, out);
    grad_max(out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gradient_block_avx2(
    obj: &Objective,
    m: &mut [f32],
    leaves: Option<(&[u32], &[f32])>,
    ys: &[f32],
    ws: Option<&[f32]>,
    spw: f32,
    out: &mut [GradPair],
) -> (f32, f32) {
    gradient_block_plain(obj, m, leaves, ys, ws, spw, out)
}

fn train_in_pool(
    params: &XgbParams,
    data: &BinnedMatrix,
    labels: &[f32],
    weights: Option<&[f32]>,
    valid: Option<&Dataset>,
    mut opts: TrainOptions<'_>,
) -> Result<Booster, TrainError> {
    let obj = params.objective;
    let n = data.n_rows();
    let k = obj.n_groups();
    if n == 0 || labels.len() != n {
        return Err(TrainError::BadData {
            set: "train".into(),
            why: if n == 0 {
                "no rows".into()
            } else {
                "every row needs a label".into()
            },
        });
    }
    for (i, &y) in labels.iter().enumerate() {
        if let Err(why) = obj.check_label(y) {
            return Err(TrainError::BadLabel {
                set: "train".into(),
                row: i + 1,
                label: y,
                objective: obj.name(),
                why,
            });
        }
    }
    if let Some(v) = valid {
        check_labels(&obj, v, "validation")?;
    }
    let comm = opts.comm.filter(|c| c.size() > 1);
    if let Some(r) = opts.resume {
        if r.objective.name() != obj.name() || r.objective.n_groups() != k {
            return Err(TrainError::Resume(format!(
                "it was trained with objective {} ({} output groups), this job uses {} ({k})",
                r.objective.name(),
                r.objective.n_groups(),
                obj.name()
            )));
        }
        if r.num_feature != data.n_features() {
            return Err(TrainError::Resume(format!(
                "it was trained on {} features, the data has {}",
                r.num_feature,
                data.n_features()
            )));
        }
        if r.trees.len() % k != 0 || r.base_margin_vec.is_some() {
            return Err(TrainError::Resume(
                "it is not a checkpoint kiln wrote (trees per round, per-group intercepts)".into(),
            ));
        }
    }
    let base_score = match (params.base_score, comm) {
        _ if opts.resume.is_some() => opts.resume.map_or(0.0, |r| r.base_score),
        (Some(b), _) => b as f32,
        (None, None) => obj.default_base_score(labels, weights),
        (None, Some(c)) => global_base_score(&obj, labels, weights, c)?,
    };
    let base_margin = obj.prob_to_margin(base_score);
    let mut margins = vec![base_margin; n * k];
    let mut valid_margins = valid.map(|v| vec![base_margin; v.n_rows() * k]);
    let mut grads = vec![GradPair::default(); n * k];
    let mut group_grads = if k > 1 {
        vec![GradPair::default(); n]
    } else {
        Vec::new()
    };

    let gp = GrowParams {
        eta: params.eta,
        lambda: params.lambda,
        alpha: params.alpha,
        gamma: params.gamma,
        min_child_weight: params.min_child_weight,
        max_delta_step: params.max_delta_step,
        max_depth: params.max_depth,
        max_leaves: params.max_leaves,
        lossguide: params.grow_policy == GrowPolicy::Lossguide,
        colsample_bylevel: params.colsample_bylevel,
        colsample_bynode: params.colsample_bynode,
    };
    let mut grower = Grower::new(data, &gp);
    if let Some(c) = comm {
        grower = grower.distributed(c);
    }
    // Each round draws from streams of its own, determined by (seed, round), so that a resumed
    // run samples what an uninterrupted one does. Distributed, column samples come from `rng`,
    // the same stream on every host, and row samples from a stream of each host's own (its
    // rows are its own).
    let row_seed = comm.map(|c| params.seed ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(c.rank() as u64 + 1));
    let all_features: Vec<usize> = (0..data.n_features()).collect();
    let mut booster = Booster {
        objective: obj,
        base_score,
        base_margin_vec: None,
        num_feature: data.n_features(),
        trees: Vec::new(),
        tree_info: Vec::new(),
        best: None,
    };

    let metrics = params.metrics().to_vec();
    let es_metric = params.early_stopping_metric();
    let es_rounds = params.early_stopping_rounds.filter(|_| valid.is_some());
    let mut best: Option<(usize, f64)> = None;
    let mut start = 0;
    if let Some(r) = opts.resume {
        // The checkpoint's rounds: their trees, and the margins they give every row, summed in
        // f32 tree by tree as training summed them (the same bits).
        let cuts = data.cuts();
        let missing = grower.missing_codes();
        for (t, &g) in r.trees.iter().zip(&r.tree_info) {
            let mut t = t.clone();
            for i in 0..t.n_nodes() {
                if !t.is_leaf(i) {
                    // Split thresholds are cut points: "x < cuts[b]" is "code <= b".
                    let f = t.feature[i] as usize;
                    if f >= cuts.n_features() {
                        return Err(TrainError::Resume(format!("a split uses feature {f}")));
                    }
                    let c = t.cond[i];
                    t.split_bin[i] = cuts.cuts(f).partition_point(|&x| x < c).min(255) as u8;
                }
            }
            let tr = &t;
            margins
                .par_chunks_mut(k)
                .enumerate()
                .for_each(|(row, m)| m[g] += tr.cond[tr.leaf_for_codes(|f| data.code(row, f), missing)]);
            if let (Some(vm), Some(v)) = (valid_margins.as_mut(), valid) {
                const BLOCK: usize = 1024;
                let flat = FlatTree::new(tr);
                vm.par_chunks_mut(BLOCK * k)
                    .enumerate()
                    .for_each(|(b, block)| add_tree(&flat, g, k, &v.features, b * BLOCK, block));
            }
            booster.trees.push(t);
            booster.tree_info.push(g);
        }
        start = r.trees.len() / k;
        // Early stopping carries on from the checkpoint's best round (stored with it).
        best = r.best.filter(|_| es_rounds.is_some());
    }
    let stopped_before = matches!((es_rounds, best), (Some(rounds), Some((b, _))) if start > b + rounds);
    let end = if stopped_before { start } else { params.num_round };
    let mut eval_buffers = [EvalBuffers::default(), EvalBuffers::default()];
    let mut active: Vec<u32> = Vec::new();

    // Training margins are only read for gradients (and a logged train metric), so with one
    // output group the last tree's leaf values are added in the next round's gradient pass.
    let defer_margins = k == 1 && params.subsample >= 1.0 && !(opts.log.is_some() && opts.eval_train);
    let mut pending: Option<usize> = None;
    let spw = params.scale_pos_weight as f32;
    crate::prof::mark("rounds start");
    for round in start..end {
        let mut rng = Rng::for_round(params.seed, round);
        let mut row_rng = row_seed.map(|s| Rng::for_round(s, round));
        let maxes = time(Phase::Gradients, || {
            if k > 1 {
                obj.gradients(&margins, labels, weights, spw, &mut grads);
                return None;
            }
            const BLOCK: usize = 1 << 13;
            let table = pending.take().map(|t| grower.slot_values(&booster.trees[t]));
            let slots = grower.leaf_slots();
            let maxes = margins
                .par_chunks_mut(BLOCK)
                .zip(grads.par_chunks_mut(BLOCK))
                .enumerate()
                .map(|(b, (m, out))| {
                    let rows = b * BLOCK..b * BLOCK + m.len();
                    let leaves = table.as_deref().map(|t| (&slots[rows.clone()], t));
                    gradient_block(
                        &obj,
                        m,
                        leaves,
                        &labels[rows.clone()],
                        weights.map(|w| &w[rows]),
                        spw,
                        out,
                    )
                })
                .reduce(|| (0.0, 0.0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            Some(maxes)
        });
        let sampled = if params.subsample < 1.0 {
            let rows_rng = row_rng.as_mut().unwrap_or(&mut rng);
            active.clear();
            active.extend((0..n as u32).filter(|_| rows_rng.next_f64() < params.subsample));
            if active.is_empty() {
                active.push(rows_rng.below(n) as u32);
            }
            true
        } else {
            false
        };
        let tree_features = if params.colsample_bytree < 1.0 {
            rng.sample_sorted(&all_features, n_sampled(all_features.len(), params.colsample_bytree))
        } else {
            all_features.clone()
        };
        for g in 0..k {
            let gr: &[GradPair] = if k > 1 {
                group_grads
                    .par_iter_mut()
                    .enumerate()
                    .for_each(|(i, out)| *out = grads[i * k + g]);
                &group_grads
            } else {
                &grads
            };
            let grown = grower.grow(gr, maxes, sampled.then_some(&active[..]), &tree_features, &mut rng)?;
            let mut tree = grown.tree;
            if matches!(obj, Objective::AbsoluteError) {
                let rows: Vec<u32> = if sampled {
                    active.clone()
                } else {
                    (0..n as u32).collect()
                };
                refit_l1_leaves(
                    &mut tree,
                    &grower,
                    &rows,
                    &margins,
                    labels,
                    weights,
                    k,
                    g,
                    params.eta as f32,
                    comm,
                )?;
            }
            // Training margins: the grower knows each row's leaf when every row was used.
            time(Phase::Margins, || {
                let t = &tree;
                if defer_margins {
                    pending = Some(booster.trees.len());
                } else if sampled {
                    let missing = grower.missing_codes();
                    margins
                        .par_chunks_mut(k)
                        .enumerate()
                        .for_each(|(r, m)| m[g] += t.cond[t.leaf_for_codes(|f| data.code(r, f), missing)]);
                } else {
                    const BLOCK: usize = 1 << 14;
                    let gr = &grower;
                    margins.par_chunks_mut(BLOCK * k).enumerate().for_each(|(b, m)| {
                        for (i, m) in m.chunks_exact_mut(k).enumerate() {
                            m[g] += t.cond[gr.leaf_of(b * BLOCK + i)];
                        }
                    });
                }
            });
            if let (Some(vm), Some(v)) = (valid_margins.as_mut(), valid) {
                let t = FlatTree::new(&tree);
                const BLOCK: usize = 1024;
                vm.par_chunks_mut(BLOCK * k)
                    .enumerate()
                    .for_each(|(b, block)| add_tree(&t, g, k, &v.features, b * BLOCK, block));
            }
            booster.trees.push(tree);
            booster.tree_info.push(g);
        }

        // Evaluation and logging.
        let eval_start = std::time::Instant::now();
        let mut es_value = None;
        let want_log = opts.log.is_some();
        if want_log || es_rounds.is_some() {
            let mut sets: Vec<EvalSet<'_>> = Vec::new();
            if want_log && opts.eval_train {
                sets.push(("train", &margins, labels, weights));
            }
            if let (Some(vm), Some(v)) = (valid_margins.as_ref(), valid) {
                sets.push(("validation", vm, &v.labels, v.weights.as_deref()));
            }
            let mut to_eval: Vec<Metric> = if want_log {
                metrics.clone()
            } else {
                es_metric.into_iter().collect()
            };
            // Early stopping's metric is computed on validation even when not printed.
            let es_extra = es_metric.filter(|m| es_rounds.is_some() && !to_eval.contains(m));
            let printed = to_eval.len();
            to_eval.extend(es_extra);
            let values: Vec<Vec<f64>> = match comm {
                // Alone, the data sets are evaluated at the same time.
                None => {
                    let eval_set = |&(_, m, y, w): &EvalSet<'_>, buf: &mut EvalBuffers| -> Vec<f64> {
                        obj.eval_transform(m, &mut buf.preds);
                        let kk = if buf.preds.len() == y.len() { 1 } else { k };
                        to_eval
                            .iter()
                            .map(|metric| metric.eval_reusing(&buf.preds, kk, y, w, &mut buf.rank))
                            .collect()
                    };
                    match (&sets[..], &mut eval_buffers[..]) {
                        ([a, b], [ba, bb]) => {
                            let (x, y) = rayon::join(|| eval_set(a, ba), || eval_set(b, bb));
                            vec![x, y]
                        }
                        _ => sets
                            .iter()
                            .zip(eval_buffers.iter_mut())
                            .map(|(set, buf)| eval_set(set, buf))
                            .collect(),
                    }
                }
                Some(c) => {
                    for (&(_, m, ..), buf) in sets.iter().zip(eval_buffers.iter_mut()) {
                        obj.eval_transform(m, &mut buf.preds);
                    }
                    // A validation set every host has whole is evaluated by each alone: the
                    // same rows and model, so the same bits. With early stopping, which must
                    // stop every host in the same round, algo-1's values are broadcast (one
                    // small message) to make sure: some means are summed in an order that
                    // depends on the thread count. Every other set is this host's part,
                    // evaluated together, all exchanges at once.
                    let whole = |name: &str| name == "validation" && opts.valid_whole;
                    let mut together = Vec::new();
                    let mut values = vec![Vec::new(); sets.len()];
                    for (i, (&(name, _, y, w), buf)) in sets.iter().zip(eval_buffers.iter_mut()).enumerate() {
                        let kk = if y.is_empty() || buf.preds.len() != y.len() {
                            k
                        } else {
                            1
                        };
                        if whole(name) {
                            let local: Vec<f64> = to_eval
                                .iter()
                                .map(|metric| metric.eval_reusing(&buf.preds, kk, y, w, &mut buf.rank))
                                .collect();
                            values[i] = if es_rounds.is_some() {
                                decode::<f64>(&c.broadcast(encode(&local))?)
                            } else {
                                local
                            };
                        } else {
                            together.push((
                                i,
                                EvalData {
                                    preds: &buf.preds,
                                    k: kk,
                                    labels: y,
                                    weights: w,
                                    scratch: &mut buf.rank,
                                },
                            ));
                        }
                    }
                    let (at, mut data): (Vec<usize>, Vec<EvalData<'_>>) = together.into_iter().unzip();
                    for (i, v) in at.into_iter().zip(eval_all_global(&to_eval, &mut data, c)?) {
                        values[i] = v;
                    }
                    values
                }
            };
            let mut line = format!("[{}]", round.saturating_sub(opts.round_offset));
            for (&(name, ..), vals) in sets.iter().zip(&values) {
                for (metric, &value) in to_eval.iter().zip(vals).take(printed) {
                    line.push_str(&format!("\t{name}-{}:{}", metric.name(), fmt5(value)));
                }
                if name == "validation" {
                    es_value = es_metric
                        .and_then(|m| to_eval.iter().position(|&x| x == m))
                        .map(|i| vals[i]);
                }
            }
            if let Some(w) = opts.log.as_mut() {
                writeln!(w, "{line}")?;
                w.flush()?;
            }
        }
        crate::prof::add(Phase::Eval, eval_start.elapsed());
        if let (Some(rounds), Some(value), Some(metric)) = (es_rounds, es_value, es_metric) {
            let better = match best {
                None => true,
                Some((_, b)) => {
                    if metric.maximize() {
                        value > b
                    } else {
                        value < b
                    }
                }
            };
            if better && !value.is_nan() {
                best = Some((round, value));
            }
            let best_round = best.map_or(0, |b| b.0);
            if round >= best_round + rounds {
                save_checkpoint(&mut booster, best, round, &opts)?;
                break;
            }
        }
        save_checkpoint(&mut booster, best, round, &opts)?;
    }
    crate::prof::mark("rounds done");
    crate::prof::report();
    if let Some((best_round, score)) = best {
        // Keep the best iteration's trees, like xgboost's EarlyStopping(save_best=True).
        booster.trees.truncate((best_round + 1) * k);
        booster.tree_info.truncate((best_round + 1) * k);
        booster.best = Some((best_round, score));
    }
    Ok(booster)
}

/// Writes round `round`'s checkpoint, if asked: the trees so far and the early-stopping state
/// (best round and score, as the `best_iteration`/`best_score` attributes).
fn save_checkpoint(
    booster: &mut Booster,
    best: Option<(usize, f64)>,
    round: usize,
    opts: &TrainOptions<'_>,
) -> Result<(), TrainError> {
    if let Some(c) = opts.checkpoints {
        booster.best = best;
        time(Phase::Checkpoint, || c.save(booster, round)).map_err(TrainError::Checkpoint)?;
        booster.best = None;
    }
    Ok(())
}

/// The default `base_score` of the labels of every host (see [`Objective::default_base_score`]):
/// from summed means, or for the median objectives from every label, gathered at algo-1.
fn global_base_score(
    obj: &Objective,
    labels: &[f32],
    weights: Option<&[f32]>,
    comm: &Collective,
) -> Result<f32, CommError> {
    match obj {
        Objective::AbsoluteError | Objective::PseudoHuber { .. } => {
            let mut mine = encode(labels);
            mine.extend(encode(
                &weights.map_or_else(|| vec![1.0; labels.len()], <[f32]>::to_vec),
            ));
            let value = match comm.gather(mine)? {
                Some(all) => {
                    let (mut ys, mut ws) = (Vec::new(), Vec::new());
                    for b in all {
                        let (y, w) = b.split_at(b.len() / 2);
                        ys.extend(decode::<f32>(y));
                        ws.extend(decode::<f32>(w));
                    }
                    obj.default_base_score(&ys, Some(&ws))
                }
                None => 0.0,
            };
            Ok(decode::<f32>(&comm.broadcast(encode(&[value]))?)[0])
        }
        _ => match obj.label_mean_sums(labels, weights) {
            Some((s, sw)) => {
                let mut x = [s, sw];
                comm.sum_f64(&mut x)?;
                Ok(obj.base_score_of_mean(x[0], x[1]))
            }
            None => Ok(obj.default_base_score(labels, weights)),
        },
    }
}

/// reg:absoluteerror: replace each leaf by eta × the weighted median of its rows' residuals
/// (xgboost's adaptive leaves for L1). `rows` are the rows the tree was grown on, ascending.
/// Distributed, every host's residuals are gathered at algo-1, which broadcasts the values.
#[allow(clippy::too_many_arguments)]
fn refit_l1_leaves(
    tree: &mut RegTree,
    grower: &Grower<'_>,
    rows: &[u32],
    margins: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    k: usize,
    g: usize,
    eta: f32,
    comm: Option<&Collective>,
) -> Result<(), CommError> {
    let mut per_leaf: Vec<Vec<(f32, f32)>> = vec![Vec::new(); tree.n_nodes()];
    for &r in rows {
        let r = r as usize;
        per_leaf[grower.leaf_of(r)].push((labels[r] - margins[r * k + g], weights.map_or(1.0, |w| w[r])));
    }
    if let Some(c) = comm {
        // (leaf, residual, weight) triples, as f32 (leaf ids are small integers).
        let mine: Vec<f32> = per_leaf
            .iter()
            .enumerate()
            .flat_map(|(leaf, pairs)| pairs.iter().flat_map(move |&(v, w)| [leaf as f32, v, w]))
            .collect();
        let values = match c.gather(encode(&mine))? {
            Some(all) => {
                let mut merged: Vec<Vec<(f32, f32)>> = vec![Vec::new(); tree.n_nodes()];
                for b in all {
                    for t in decode::<f32>(&b).chunks_exact(3) {
                        merged[t[0] as usize].push((t[1], t[2]));
                    }
                }
                merged
                    .into_iter()
                    .map(|pairs| {
                        if pairs.is_empty() {
                            f32::NAN
                        } else {
                            weighted_quantile(pairs, 0.5)
                        }
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let values = decode::<f32>(&c.broadcast(encode(&values))?);
        for (leaf, v) in values.into_iter().enumerate() {
            if tree.is_leaf(leaf) && !v.is_nan() {
                tree.set_leaf(leaf, eta * v);
            }
        }
        return Ok(());
    }
    for (leaf, pairs) in per_leaf.into_iter().enumerate() {
        if tree.is_leaf(leaf) && !pairs.is_empty() {
            tree.set_leaf(leaf, eta * weighted_quantile(pairs, 0.5));
        }
    }
    Ok(())
}

impl Booster {
    /// Margins for every row (`n × n_groups`), accumulated in `f32` tree by tree as xgboost does.
    pub fn predict_margin(&self, x: &DenseMatrix) -> Vec<f32> {
        let k = self.objective.n_groups();
        let base: Vec<f32> = match &self.base_margin_vec {
            Some(v) if v.len() == k => v.clone(),
            _ => vec![self.objective.prob_to_margin(self.base_score); k],
        };
        let mut out = vec![0f32; x.n_rows() * k];
        // Blocks of rows, tree by tree: a tree's nodes stay in cache for the whole block, and
        // each row still adds its trees' values in model order (the same f32 sums).
        const BLOCK: usize = 64;
        let flat: Vec<FlatTree> = self.trees.iter().map(FlatTree::new).collect();
        out.par_chunks_mut(BLOCK * k).enumerate().for_each(|(b, block)| {
            for m in block.chunks_exact_mut(k) {
                m.copy_from_slice(&base);
            }
            for (t, &g) in flat.iter().zip(&self.tree_info) {
                add_tree(t, g, k, x, b * BLOCK, block);
            }
        });
        out
    }

    /// Predictions (probabilities, values, or class indices for multi:softmax); `n_outputs()`
    /// values per row.
    pub fn predict(&self, x: &DenseMatrix) -> Vec<f32> {
        let m = self.predict_margin(x);
        let mut out = Vec::new();
        self.objective.transform(&m, &mut out);
        out
    }

    /// Values per row in [`Self::predict`]'s output.
    pub fn n_outputs(&self) -> usize {
        self.objective.n_outputs()
    }
}

/// Adds tree `t`'s leaf values to group `g` of the margins `block` (`k` per row) of the rows of
/// `x` from `first` on, eight rows' walks at a time.
fn add_tree(t: &FlatTree, g: usize, k: usize, x: &DenseMatrix, first: usize, block: &mut [f32]) {
    let n = block.len() / k;
    let mut i = 0;
    while i + 8 <= n {
        let values = t.values_for(std::array::from_fn::<_, 8, _>(|j| x.row(first + i + j)));
        for (j, v) in values.into_iter().enumerate() {
            block[(i + j) * k + g] += v;
        }
        i += 8;
    }
    for r in i..n {
        block[r * k + g] += t.values_for([x.row(first + r)])[0];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::XgbConfig;

    #[test]
    fn idle_spinners_run_at_idle_priority_and_stop_when_dropped() {
        #[cfg(target_os = "linux")]
        {
            let policy = std::thread::spawn(|| {
                assert!(lowest_priority(), "SCHED_IDLE needs no privilege");
                // SAFETY: queries the calling thread's policy; no pointers.
                unsafe { libc::sched_getscheduler(0) }
            })
            .join()
            .unwrap();
            assert_eq!(policy, libc::SCHED_IDLE);
        }
        let spinners = IdleSpinners::start(2);
        assert_eq!(spinners.threads.len(), 2);
        let stop = Arc::clone(&spinners.stop);
        drop(spinners); // joins: would hang if a spinner ignored the flag
        assert!(stop.load(Ordering::Relaxed));
        assert!(IdleSpinners::start(0).threads.is_empty());
    }

    #[test]
    fn vectorized_gradients_are_bit_identical() {
        let mut rng = Rng::new(7);
        let n = 10_000;
        let m: Vec<f32> = (0..n).map(|_| (rng.next_f64() * 40.0 - 20.0) as f32).collect();
        let ys: Vec<f32> = (0..n).map(|_| f32::from(u8::from(rng.next_f64() < 0.3))).collect();
        let ws: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 3.0).collect();
        // The last tree's leaves: a slot per row and an 8-long table of values.
        let slots: Vec<u32> = (0..n).map(|_| rng.below(5) as u32).collect();
        let table = [0.5f32, -0.25, 1.0, 0.125, -2.0, 0.0, 0.0, 0.0];
        for obj in [Objective::BinaryLogistic, Objective::SquaredError] {
            for w in [None, Some(&ws[..])] {
                for leaves in [None, Some((&slots[..], &table[..]))] {
                    let (mut a, mut b) = (vec![GradPair::default(); n], vec![GradPair::default(); n]);
                    let (mut m_a, mut m_b) = (m.clone(), m.clone());
                    let ma = gradient_block(&obj, &mut m_a, leaves, &ys, w, 1.5, &mut a);
                    let mb = gradient_block_plain(&obj, &mut m_b, leaves, &ys, w, 1.5, &mut b);
                    let bits = |v: &[GradPair]| v.iter().map(|g| (g.g.to_bits(), g.h.to_bits())).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b));
                    assert_eq!((ma.0.to_bits(), ma.1.to_bits()), (mb.0.to_bits(), mb.1.to_bits()));
                    let want: Vec<f32> = match leaves {
                        Some(_) => m.iter().zip(&slots).map(|(&x, &s)| x + table[s as usize]).collect(),
                        None => m.clone(),
                    };
                    assert_eq!(m_a, want);
                    assert_eq!(m_b, want);
                }
            }
        }
    }

    fn synthetic(n: usize, seed: u64) -> Dataset {
        let mut rng = Rng::new(seed);
        let mut vals = Vec::with_capacity(n * 4);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let x: Vec<f32> = (0..4).map(|_| rng.next_f64() as f32 * 4.0 - 2.0).collect();
            let mut row = x.clone();
            if rng.next_f64() < 0.1 {
                row[1] = f32::NAN;
            }
            let z = x[0] * 1.5 - x[1] + 0.5 * x[2] * x[3] + (rng.next_f64() as f32 - 0.5);
            labels.push(if z > 0.0 { 1.0 } else { 0.0 });
            vals.extend(row);
        }
        Dataset {
            features: DenseMatrix::new(n, 4, vals).unwrap(),
            labels,
            weights: None,
        }
    }

    fn params(f: impl FnOnce(&mut XgbConfig)) -> XgbParams {
        let mut c = XgbConfig {
            num_round: 20,
            objective: Objective::BinaryLogistic,
            ..XgbConfig::default()
        };
        f(&mut c);
        c.check().unwrap()
    }

    #[test]
    fn learns_and_predicts_consistently_with_training_margins() {
        let d = synthetic(3000, 1);
        let p = params(|_| {});
        let b = train(&p, &d, None, TrainOptions::default()).unwrap();
        let pred = b.predict(&d.features);
        let auc = Metric::Auc.eval(&pred, 1, &d.labels, None);
        assert!(auc > 0.9, "auc {auc}");
    }

    #[test]
    fn deterministic_for_seed_and_threads() {
        let d = synthetic(5000, 2);
        let p = params(|c| {
            c.subsample = 0.7;
            c.colsample_bytree = 0.75;
            c.colsample_bynode = 0.8;
            c.seed = 42;
        });
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| train(&p, &d, None, TrainOptions::default()).unwrap())
        };
        let a = run(2);
        assert_eq!(a, run(2));
        // Work pieces do not depend on the thread count, so neither does the model.
        assert_eq!(a, run(1));
        let p2 = params(|c| {
            c.subsample = 0.7;
            c.seed = 43;
        });
        let c = train(&p2, &d, None, TrainOptions::default()).unwrap();
        assert_ne!(a.trees, c.trees);
    }

    #[test]
    fn validation_margins_match_predictions() {
        // 2500 rows: blocks of 1024 and walks of 8 both leave a remainder.
        let d = synthetic(3000, 5);
        let v = synthetic(2500, 6);
        let p = params(|c| c.eval_metric = vec![Metric::Logloss, Metric::Rmse]);
        let mut out = Vec::new();
        let opts = TrainOptions {
            eval_train: false,
            log: Some(&mut out),
            comm: None,
            resume: None,
            round_offset: 0,
            checkpoints: None,
            valid_whole: false,
        };
        let b = train(&p, &d, Some(&v), opts).unwrap();
        let text = String::from_utf8(out).unwrap();
        let last = text.lines().last().unwrap();
        let pred = b.predict(&v.features);
        let logloss = Metric::Logloss.eval(&pred, 1, &v.labels, None);
        let rmse = Metric::Rmse.eval(&pred, 1, &v.labels, None);
        assert_eq!(
            last,
            format!("[19]\tvalidation-logloss:{logloss:.5}\tvalidation-rmse:{rmse:.5}")
        );
    }

    #[test]
    fn log_lines_and_early_stopping() {
        let d = synthetic(2000, 3);
        let v = synthetic(500, 4);
        let p = params(|c| {
            c.num_round = 200;
            c.eta = 0.5;
            c.eval_metric = vec![Metric::Logloss, Metric::Auc];
            c.early_stopping_rounds = Some(5);
        });
        let mut out = Vec::new();
        let b = train(
            &p,
            &d,
            Some(&v),
            TrainOptions {
                eval_train: true,
                log: Some(&mut out),
                comm: None,
                resume: None,
                round_offset: 0,
                checkpoints: None,
                valid_whole: false,
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("[0]\ttrain-logloss:"), "{}", lines[0]);
        let fields: Vec<&str> = lines[0].split('\t').collect();
        assert_eq!(fields.len(), 5);
        assert!(fields[2].starts_with("train-auc:") && fields[4].starts_with("validation-auc:"));
        let (best, _) = b.best.unwrap();
        assert!(lines.len() < 200, "early stopping stopped training");
        assert_eq!(lines.len(), best + 1 + 5);
        assert_eq!(b.trees.len(), best + 1);
    }

    #[test]
    fn multiclass_and_regression_objectives_train() {
        let d = synthetic(1500, 5);
        let mut multi = d.clone();
        multi.labels = d
            .features
            .values()
            .chunks(4)
            .map(|r| {
                if r[0] < -0.5 {
                    0.0
                } else if r[0] < 0.7 {
                    1.0
                } else {
                    2.0
                }
            })
            .collect();
        let p = params(|c| c.objective = Objective::Softprob { num_class: 3 });
        let b = train(&p, &multi, None, TrainOptions::default()).unwrap();
        assert_eq!(b.trees.len(), 60);
        let pred = b.predict(&multi.features);
        let err = Metric::Merror.eval(&pred, 3, &multi.labels, None);
        assert!(err < 0.05, "merror {err}");
        let mut reg = d.clone();
        reg.labels = d.features.values().chunks(4).map(|r| 2.0 * r[0] + 1.0).collect();
        for obj in [Objective::SquaredError, Objective::AbsoluteError] {
            let p = params(|c| c.objective = obj);
            let b = train(&p, &reg, None, TrainOptions::default()).unwrap();
            let rmse = Metric::Rmse.eval(&b.predict(&reg.features), 1, &reg.labels, None);
            assert!(rmse < 0.6, "{obj:?} rmse {rmse}");
        }
        // Pseudo-Huber takes huge Newton steps on large residuals (as in xgboost): only check
        // that it beats the constant intercept.
        let p = params(|c| c.objective = Objective::PseudoHuber { slope: 1.0 });
        let b = train(&p, &reg, None, TrainOptions::default()).unwrap();
        let mphe = Metric::Mphe.eval(&b.predict(&reg.features), 1, &reg.labels, None);
        let med = crate::objective::weighted_median(&reg.labels, None);
        let base = Metric::Mphe.eval(&vec![med; reg.n_rows()], 1, &reg.labels, None);
        assert!(mphe < base, "mphe {mphe} vs {base}");
        let mut pos = d.clone();
        pos.labels = d.features.values().chunks(4).map(|r| (r[0] + 2.5).max(0.1)).collect();
        for obj in [Objective::Gamma, Objective::Tweedie { rho: 1.5 }, Objective::Poisson] {
            let p = params(|c| c.objective = obj);
            let b = train(&p, &pos, None, TrainOptions::default()).unwrap();
            let rmse = Metric::Rmse.eval(&b.predict(&pos.features), 1, &pos.labels, None);
            assert!(rmse < 0.6, "{obj:?} rmse {rmse}");
        }
    }

    /// Trains on `d` split over `hosts` threads acting as hosts (rows `i % hosts == rank`,
    /// validation likewise, or whole on every host with `valid_whole`), binned with the cuts of
    /// all of `d`; returns each host's model and log. One host trains alone, without a collective.
    fn train_split_with(
        p: &XgbParams,
        d: &Dataset,
        v: &Dataset,
        hosts: usize,
        valid_whole: bool,
    ) -> Vec<(Booster, String)> {
        use crate::collective::tests::run_hosts;
        use crate::distributed::{agree_missing, select_dataset, share};
        let cuts = BinCuts::compute(&d.features, None, p.max_bin);
        let whole = BinnedMatrix::new(&d.features, cuts);
        let run = |comm: Option<&Collective>| {
            let (rank, size) = comm.map_or((0, 1), |c| (c.rank(), c.size()));
            let keep = share(d.n_rows(), rank, size);
            let mut part = whole.select_rows(&keep);
            if let Some(c) = comm {
                agree_missing(c, &mut part).unwrap();
            }
            let labels: Vec<f32> = keep.iter().map(|&r| d.labels[r as usize]).collect();
            let vpart = if valid_whole {
                v.clone()
            } else {
                select_dataset(v, &share(v.n_rows(), rank, size))
            };
            let mut log = Vec::new();
            let opts = TrainOptions {
                eval_train: true,
                log: Some(&mut log),
                comm,
                resume: None,
                round_offset: 0,
                checkpoints: None,
                valid_whole,
            };
            let b = train_binned(p, &part, &labels, None, Some(&vpart), opts).unwrap();
            (b, String::from_utf8(log).unwrap())
        };
        if hosts == 1 {
            return vec![run(None)];
        }
        // Each host its own threads, as each is its own process (hosts waiting on each other
        // in one shared pool could leave no thread for the last one).
        run_hosts(hosts, |c| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            pool.install(|| run(Some(c)))
        })
    }

    fn train_split(p: &XgbParams, d: &Dataset, v: &Dataset, hosts: usize) -> Vec<(Booster, String)> {
        train_split_with(p, d, v, hosts, false)
    }

    /// The metric values of a log line.
    fn values(line: &str) -> Vec<f64> {
        line.split('\t')
            .skip(1)
            .map(|f| f.rsplit(':').next().unwrap().parse().unwrap())
            .collect()
    }

    /// Same splits (features, bins, directions) and leaf values within float noise.
    fn assert_same_trees(a: &Booster, b: &Booster) {
        assert_eq!(a.trees.len(), b.trees.len());
        assert!((a.base_score - b.base_score).abs() < 1e-6);
        for (ta, tb) in a.trees.iter().zip(&b.trees) {
            assert_eq!(
                (&ta.left, &ta.feature, &ta.split_bin),
                (&tb.left, &tb.feature, &tb.split_bin)
            );
            assert_eq!(ta.default_left, tb.default_left);
            for (x, y) in ta.cond.iter().zip(&tb.cond) {
                assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn hosts_grow_the_trees_one_host_grows_on_all_rows() {
        let d = synthetic(4000, 21);
        let v = synthetic(1000, 22);
        let cases: Vec<XgbParams> = vec![
            params(|c| c.eval_metric = vec![Metric::Auc, Metric::Logloss, Metric::Aucpr, Metric::F1]),
            params(|c| {
                c.grow_policy = GrowPolicy::Lossguide;
                c.max_leaves = 12;
                c.colsample_bylevel = 0.75;
                c.colsample_bynode = 0.75;
                c.eval_metric = vec![Metric::Error {
                    threshold: 0.5,
                    explicit: false,
                }];
            }),
            params(|c| {
                c.objective = Objective::AbsoluteError;
                c.num_round = 8;
                c.eval_metric = vec![Metric::Mae, Metric::R2];
            }),
            params(|c| {
                c.objective = Objective::Softprob { num_class: 2 };
                c.num_round = 5;
                c.eval_metric = vec![Metric::Mlogloss, Metric::Auc];
            }),
        ];
        for p in &cases {
            let alone = &train_split(p, &d, &v, 1)[0];
            let hosts = train_split(p, &d, &v, 2);
            // Every host holds the same model, bit for bit; only algo-1 printed.
            assert_eq!(hosts[0].0, hosts[1].0, "{:?}", p.objective);
            assert!(hosts[1].1.is_empty() || hosts[1].1 == hosts[0].1);
            // It is the model of all rows, and its metrics are those of all rows.
            assert_same_trees(&alone.0, &hosts[0].0);
            let (la, lh): (Vec<&str>, Vec<&str>) = (alone.1.lines().collect(), hosts[0].1.lines().collect());
            assert_eq!(la.len(), lh.len());
            for (a, h) in la.iter().zip(&lh) {
                for (x, y) in values(a).into_iter().zip(values(h)) {
                    assert!((x - y).abs() <= 2e-5, "{a} vs {h}");
                }
            }
        }
    }

    #[test]
    fn hosts_agree_with_row_sampling_and_early_stopping() {
        let d = synthetic(3000, 23);
        let v = synthetic(600, 24);
        let p = params(|c| {
            c.num_round = 100;
            c.eta = 0.6;
            c.subsample = 0.7;
            c.colsample_bytree = 0.75;
            c.early_stopping_rounds = Some(4);
            c.eval_metric = vec![Metric::Auc];
        });
        let hosts = train_split(&p, &d, &v, 3);
        assert!(hosts.iter().all(|h| h.0 == hosts[0].0));
        let (best, score) = hosts[0].0.best.unwrap();
        assert!(best < 95 && score > 0.9, "{best} {score}");
        // The validation set whole on every host (evaluated alone, algo-1's values shared):
        // the same decisions, the same model.
        let whole = train_split_with(&p, &d, &v, 3, true);
        assert!(whole.iter().all(|h| h.0 == hosts[0].0));
        let (x, y) = (
            values(whole[0].1.lines().last().unwrap()),
            values(hosts[0].1.lines().last().unwrap()),
        );
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-12), "{x:?} {y:?}");
    }

    /// `p` with `num_round` rounds.
    fn with_rounds(p: &XgbParams, num_round: usize) -> XgbParams {
        let mut c: XgbConfig = (**p).clone();
        c.num_round = num_round;
        c.check().unwrap()
    }

    /// A fresh, empty directory for a test.
    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-algos-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Trains with a log (train and validation metrics), checkpointing to `ckpt` if given and
    /// resuming from `resume`.
    fn train_logged(
        p: &XgbParams,
        d: &Dataset,
        v: &Dataset,
        ckpt: Option<&Checkpoints>,
        resume: Option<&Booster>,
    ) -> (Booster, Vec<String>) {
        let mut log = Vec::new();
        let opts = TrainOptions {
            eval_train: true,
            log: Some(&mut log),
            comm: None,
            resume,
            round_offset: 0,
            checkpoints: ckpt,
            valid_whole: false,
        };
        let b = train(p, d, Some(v), opts).unwrap();
        (b, String::from_utf8(log).unwrap().lines().map(str::to_string).collect())
    }

    #[test]
    fn checkpoints_keep_the_last_five() {
        let d = synthetic(1000, 31);
        let dir = temp_dir("ckpt-keep");
        let c = Checkpoints::new(&dir);
        let p = params(|c| c.num_round = 20);
        let b = train(
            &p,
            &d,
            None,
            TrainOptions {
                checkpoints: Some(&c),
                valid_whole: false,
                ..TrainOptions::default()
            },
        )
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let want: Vec<String> = (15..20).map(|r| format!("xgboost-checkpoint.{r}")).collect();
        assert_eq!(names, want);
        assert_eq!(c.rounds().unwrap(), vec![15, 16, 17, 18, 19]);
        // The last checkpoint is the model, readable by the model reader.
        let (round, text) = c.latest().unwrap().unwrap();
        assert_eq!(round, 19);
        let last = Booster::from_xgboost_json(&text).unwrap();
        assert_eq!(last.predict(&d.features), b.predict(&d.features));
        let early = Booster::from_xgboost_json(&std::fs::read_to_string(c.path(15)).unwrap()).unwrap();
        assert_eq!(early.trees.len(), 16);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resumed_training_equals_uninterrupted_training() {
        let d = synthetic(3000, 32);
        let v = synthetic(700, 33);
        let cases: Vec<(&str, XgbParams)> = vec![
            ("plain", params(|c| c.eval_metric = vec![Metric::Auc])),
            (
                "sampled",
                params(|c| {
                    c.subsample = 0.7;
                    c.colsample_bytree = 0.75;
                    c.colsample_bynode = 0.8;
                    c.seed = 9;
                    c.eval_metric = vec![Metric::Auc, Metric::Logloss];
                }),
            ),
            (
                "multiclass",
                params(|c| {
                    c.objective = Objective::Softprob { num_class: 2 };
                    c.subsample = 0.8;
                    c.colsample_bylevel = 0.75;
                }),
            ),
        ];
        for (name, p) in cases {
            assert_eq!(p.num_round, 20);
            let (whole, whole_log) = train_logged(&p, &d, &v, None, None);
            // Interrupted after round 7: its checkpoints, the newest being xgboost-checkpoint.7.
            let dir = temp_dir(&format!("ckpt-resume-{name}"));
            let c = Checkpoints::new(&dir);
            let p8 = with_rounds(&p, 8);
            train_logged(&p8, &d, &v, Some(&c), None);
            let (round, text) = c.latest().unwrap().unwrap();
            assert_eq!(round, 7);
            let from = Booster::from_xgboost_json(&text).unwrap();
            let (resumed, log) = train_logged(&p, &d, &v, Some(&c), Some(&from));
            assert_eq!(resumed.trees.len(), whole.trees.len(), "{name}");
            let (a, b) = (whole.predict(&v.features), resumed.predict(&v.features));
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-6, "{name}: max abs diff {diff}");
            // The same bits, in fact, and the round lines carry on from [8].
            assert_eq!(a, b, "{name}");
            assert_eq!(log, whole_log[8..], "{name}");
            assert_eq!(c.rounds().unwrap(), (15..20).collect::<Vec<_>>());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn early_stopping_state_survives_a_resume() {
        let d = synthetic(2000, 34);
        let v = synthetic(500, 35);
        let p = params(|c| {
            c.num_round = 200;
            c.eta = 0.5;
            c.eval_metric = vec![Metric::Logloss];
            c.early_stopping_rounds = Some(5);
        });
        let (whole, whole_log) = train_logged(&p, &d, &v, None, None);
        let (best, _) = whole.best.unwrap();
        assert!(best >= 3, "best round {best}: too early to test a resume after it");
        // Interrupted two rounds after the best one: the checkpoint remembers it.
        let stop = best + 2;
        let dir = temp_dir("ckpt-es");
        let c = Checkpoints::new(&dir);
        let short = with_rounds(&p, stop + 1);
        train_logged(&short, &d, &v, Some(&c), None);
        let from = Booster::from_xgboost_json(&c.latest().unwrap().unwrap().1).unwrap();
        assert_eq!(from.best.map(|b| b.0), Some(best));
        let (resumed, log) = train_logged(&p, &d, &v, Some(&c), Some(&from));
        assert_eq!(resumed.best.map(|b| b.0), Some(best));
        assert_eq!(resumed.trees.len(), whole.trees.len());
        assert_eq!(resumed.predict(&v.features), whole.predict(&v.features));
        assert_eq!(log, whole_log[stop + 1..]);
        // Resuming a run that had already stopped trains nothing more.
        let from = Booster::from_xgboost_json(&c.latest().unwrap().unwrap().1).unwrap();
        let (again, log) = train_logged(&p, &d, &v, None, Some(&from));
        assert!(log.is_empty());
        assert_eq!(again.predict(&v.features), whole.predict(&v.features));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_checkpoint_of_another_model_is_refused() {
        let d = synthetic(500, 36);
        let p = params(|c| c.num_round = 2);
        let b = train(&p, &d, None, TrainOptions::default()).unwrap();
        let reg = params(|c| c.objective = Objective::SquaredError);
        let e = train(
            &reg,
            &d,
            None,
            TrainOptions {
                resume: Some(&b),
                round_offset: 0,
                ..TrainOptions::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot resume") && e.contains("binary:logistic"), "{e}");
    }

    #[test]
    fn bad_labels_are_reported_with_row() {
        let mut d = synthetic(10, 6);
        d.labels[3] = 2.0;
        let p = params(|_| {});
        let e = train(&p, &d, None, TrainOptions::default()).unwrap_err().to_string();
        assert!(e.contains("row 4") && e.contains("[0, 1]"), "{e}");
    }
}
