//! Growing one tree from binned data and gradients: histograms per node (built for the smaller
//! child only; the sibling is parent minus child), split finding with a learned default
//! direction for missing values, and in-place partitioning of a row-index buffer so every node
//! owns a contiguous range of it.
//!
//! Histograms hold quantized gradients: each row's (g, h) becomes a pair of integers packed into
//! one `i64` (g in the high 32 bits, h >= 0 in the low 32), rounded to 65535 levels of the
//! tree's largest gradient. A piece of at most `PIECE` rows is summed in packed form — one integer add per
//! (row, feature) instead of two `f64` adds, into a histogram half the size — and cannot
//! overflow either half; pieces are then unpacked into `(i64, i64)` node histograms, where
//! parent − child is exact. Leaf values and covers are then recomputed from the exact gradients of each leaf's
//! rows (as LightGBM does with `use_quantized_grad`), so quantization only affects which split
//! wins, not the values a split produces.
//!
//! Leaves are settled (exact sums, each row's leaf) in one pass once the tree is grown, root
//! segment by root segment rather than leaf by leaf (see `Grower::settle_all`).
//!
//! Work is cut into fixed-size row pieces, independent of the thread count, and partial results
//! are combined in piece order, so a tree is bit-identical for a given seed whatever the number
//! of threads. Depth-wise trees are grown node by node (`Grower::grow_async`: a node's job starts
//! when its parent's is done, with no barrier between levels) whenever no leaf limit or
//! per-level/per-node column sampling needs a whole level at once; both ways give the same tree.
//! Low-cardinality features share a byte of each row (`crate::binning::code_groups`), so one add
//! counts several features; their histograms are recovered exactly.
//!
//! Distributed ([`Grower::distributed`]): each host grows the same tree from its own rows. The
//! gradients' quantization scale is the hosts' largest gradient, and every histogram this host
//! builds (the root's, and per split the smaller child's) is summed over the hosts
//! ([`Grower::sum_hists`], one message per level) before any split is searched: as the sums
//! are exact integers, every host finds the same splits, and the sibling (parent − built child)
//! is the same global histogram. Leaves' exact sums are summed too. Decisions only ever read
//! global sums (a node's local row count is ignored), and trees grow level by level (the
//! node-by-node grower would reach the reductions in a different order on each host).

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::binning::{BinnedMatrix, COLUMN_PAD, SLOTS_PER_FEATURE};
use crate::collective::{Collective, CommError};
use crate::objective::GradPair;
use crate::prof::{Phase, time};
use crate::rng::{Rng, n_sampled};
use crate::tree::RegTree;

/// Rows per unit of parallel work (histogram pieces, partition pieces).
const PIECE: usize = 1 << 15;
/// Gains at or below this are treated as zero (xgboost's `kRtEps`).
const RT_EPS: f64 = 1e-6;

/// Tree-growing parameters (already validated).
#[derive(Debug, Clone)]
pub struct GrowParams {
    /// Shrinkage applied to leaf values.
    pub eta: f64,
    /// L2 regularisation.
    pub lambda: f64,
    /// L1 regularisation.
    pub alpha: f64,
    /// Minimum loss reduction to split.
    pub gamma: f64,
    /// Minimum hessian sum per child.
    pub min_child_weight: f64,
    /// Cap on |leaf weight| (0 = none).
    pub max_delta_step: f64,
    /// Depth limit (0 = none).
    pub max_depth: usize,
    /// Leaf limit (0 = none).
    pub max_leaves: usize,
    /// Loss-guided (best-first) growth instead of depth-wise.
    pub lossguide: bool,
    /// Fraction of features per level.
    pub colsample_bylevel: f64,
    /// Fraction of features per node.
    pub colsample_bynode: f64,
}

impl GrowParams {
    #[inline]
    fn thresh_l1(&self, g: f64) -> f64 {
        if g > self.alpha {
            g - self.alpha
        } else if g < -self.alpha {
            g + self.alpha
        } else {
            0.0
        }
    }

    /// Optimal leaf weight before shrinkage.
    pub fn weight(&self, g: f64, h: f64) -> f64 {
        if h < self.min_child_weight || h <= 0.0 {
            return 0.0;
        }
        let w = -self.thresh_l1(g) / (h + self.lambda);
        if self.max_delta_step > 0.0 && w.abs() > self.max_delta_step {
            self.max_delta_step.copysign(w)
        } else {
            w
        }
    }

    /// Leaf weight from exact sums. Unlike [`Self::weight`] it skips the `min_child_weight`
    /// test: the split that made the leaf already passed it on the (quantized) sums, and a
    /// rounding difference must not zero the leaf.
    pub fn leaf_weight(&self, g: f64, h: f64) -> f64 {
        if h <= 0.0 {
            return 0.0;
        }
        let w = -self.thresh_l1(g) / (h + self.lambda);
        if self.max_delta_step > 0.0 && w.abs() > self.max_delta_step {
            self.max_delta_step.copysign(w)
        } else {
            w
        }
    }

    /// Structure score of a node: -2 × the minimal regularised loss.
    #[inline]
    pub fn gain(&self, g: f64, h: f64) -> f64 {
        if h < self.min_child_weight || h <= 0.0 {
            return 0.0;
        }
        if self.max_delta_step == 0.0 {
            let t = self.thresh_l1(g);
            t * t / (h + self.lambda)
        } else {
            let w = self.weight(g, h);
            -(2.0 * g * w + (h + self.lambda) * w * w) - 2.0 * self.alpha * w.abs()
        }
    }
}

/// Sums of gradients and hessians (exact, or decoded from a quantized histogram).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Entry {
    /// Sum of gradients.
    pub g: f64,
    /// Sum of hessians.
    pub h: f64,
}

impl Entry {
    fn add(&mut self, o: Entry) {
        self.g += o.g;
        self.h += o.h;
    }
}

/// Quantization levels: a piece's packed sum stays within i32 (gradient) and u32 (hessian).
const LEVELS: usize = (i32::MAX as usize) / PIECE;

/// Exact integer sums of quantized gradients and hessians (`repr(C)`: a slice of them is a
/// slice of `i64` pairs, summed over the hosts as such).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Wide {
    /// Sum of quantized gradients.
    pub g: i64,
    /// Sum of quantized hessians.
    pub h: i64,
}

impl Wide {
    #[inline]
    fn add(self, o: Wide) -> Wide {
        Wide {
            g: self.g + o.g,
            h: self.h + o.h,
        }
    }
    #[inline]
    fn sub(self, o: Wide) -> Wide {
        Wide {
            g: self.g - o.g,
            h: self.h - o.h,
        }
    }
}

/// Scales of one tree's quantized gradients: real value = integer × scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quant {
    /// Gradient units.
    pub g_scale: f64,
    /// Hessian units.
    pub h_scale: f64,
}

impl Quant {
    /// Packs quantized (g, h) into one `i64`.
    #[inline]
    pub fn pack(g: i32, h: u32) -> i64 {
        (i64::from(g) << 32) + i64::from(h)
    }

    /// Unpacks a packed sum of at most `PIECE` rows.
    #[inline]
    pub fn unpack(s: i64) -> Wide {
        Wide {
            g: s >> 32,
            h: i64::from(s as u32),
        }
    }

    /// Real-valued sums of a wide sum.
    #[inline]
    pub fn decode(&self, w: Wide) -> Entry {
        Entry {
            g: w.g as f64 * self.g_scale,
            h: w.h as f64 * self.h_scale,
        }
    }

    /// Scales for gradients whose largest |g| and h are `gmax` and `hmax`.
    pub fn from_max(gmax: f32, hmax: f32) -> Quant {
        let scale = |m: f32| if m > 0.0 { f64::from(m) / LEVELS as f64 } else { 1.0 };
        Quant {
            g_scale: scale(gmax),
            h_scale: scale(hmax),
        }
    }

    /// The quantizer of one gradient pair.
    #[inline]
    fn packer(&self) -> impl Fn(GradPair) -> i64 + Copy + Sync {
        let levels = LEVELS as f32;
        // Round to nearest: with 65535 levels the error is below 1e-5 of the largest gradient,
        // far under what moves a split, and the loop stays branch-free and vectorizable
        // (`round()` would be a libm call on baseline x86_64; truncating a value shifted to be
        // positive rounds the same way).
        const SHIFT: f32 = 65_536.5;
        let (inv_g, inv_h) = ((1.0 / self.g_scale) as f32, (1.0 / self.h_scale) as f32);
        move |gp: GradPair| {
            // `max`/`min` rather than `clamp`: they drop NaN, so the values stay in range.
            let g = floor_small((gp.g * inv_g).max(-levels).min(levels) + SHIFT) - 65_536;
            let h = floor_small((gp.h * inv_h).max(0.0).min(levels) + 0.5);
            Quant::pack(g, h as u32)
        }
    }

    /// Quantizes `grads` into `out` (as long), with AVX2 when the CPU has it (twice the lanes
    /// of the x86-64 baseline's SSE2).
    pub fn pack_into(&self, grads: &[GradPair], out: &mut [i64]) {
        #[inline(always)]
        fn pack_all(q: &Quant, grads: &[GradPair], out: &mut [i64]) {
            let pack = q.packer();
            for (o, &gp) in out.iter_mut().zip(grads) {
                *o = pack(gp);
            }
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn pack_all_avx2(q: &Quant, grads: &[GradPair], out: &mut [i64]) {
            pack_all(q, grads, out);
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), the one requirement for
            // calling a function compiled with it enabled.
            return unsafe { pack_all_avx2(self, grads, out) };
        }
        pack_all(self, grads, out);
    }

    /// Quantizes every row's gradient pair into `out`.
    pub fn quantize(grads: &[GradPair], out: &mut Vec<i64>) -> Quant {
        let (gmax, hmax) = par_grad_max(grads);
        let q = Quant::from_max(gmax, hmax);
        let pack = q.packer();
        out.resize(grads.len(), 0);
        out.par_chunks_mut(PIECE)
            .zip(grads.par_chunks(PIECE))
            .for_each(|(o, gs)| {
                for (o, &gp) in o.iter_mut().zip(gs) {
                    *o = pack(gp);
                }
            });
        q
    }
}

/// `floor(y)` for `0.5 <= y < 2^22`, exactly, from float arithmetic only: a float-to-int `as`
/// conversion saturates (NaN, overflow), which keeps loops over it from vectorizing.
#[inline(always)]
fn floor_small(y: f32) -> i32 {
    // 1.5 * 2^23: adding it rounds to an integer (to nearest, ties to even) held in the low
    // mantissa bits. `y - 0.5` is exact in this range, and rounding it to nearest is floor(y)
    // except on a tie that went down, which the comparison (exact on these values) corrects.
    const M: f32 = 12_582_912.0;
    let t = (y - 0.5) + M;
    let r = t.to_bits() as i32 - M.to_bits() as i32;
    r + i32::from((t - M) + 1.0 <= y)
}

/// The largest |g| and the largest h of `grads`, as folds of `f32::max` from 0 give them (NaN
/// ignored, negative h counted as 0).
#[inline(always)]
pub fn grad_max(grads: &[GradPair]) -> (f32, f32) {
    // Non-negative floats order like their bit patterns, so the folds are integer maxima, which
    // vectorize; patterns above infinity's (NaN, and any negative h) count as 0.
    const INF: u32 = 0x7f80_0000;
    let (mut g, mut h) = (0u32, 0u32);
    for gp in grads {
        let a = gp.g.to_bits() & 0x7fff_ffff;
        g = g.max(if a > INF { 0 } else { a });
        let b = gp.h.to_bits();
        h = h.max(if b > INF { 0 } else { b });
    }
    (f32::from_bits(g), f32::from_bits(h))
}

/// [`grad_max`] in parallel.
pub fn par_grad_max(grads: &[GradPair]) -> (f32, f32) {
    grads
        .par_chunks(PIECE)
        .map(grad_max)
        .reduce(|| (0.0, 0.0), |a, b| (a.0.max(b.0), a.1.max(b.1)))
}

/// A candidate split of one node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// Loss reduction.
    pub loss_chg: f64,
    /// Feature index.
    pub feature: usize,
    /// Codes `<= bin` go left.
    pub bin: u8,
    /// Missing values go left.
    pub default_left: bool,
    /// Left child sums.
    pub left: Wide,
    /// Right child sums.
    pub right: Wide,
}

/// Best split of a node over `features`, from its histogram. Ties keep the first candidate in
/// (feature, bin, missing-right-before-left) order.
pub fn best_split(
    data: &BinnedMatrix,
    p: &GrowParams,
    q: &Quant,
    hist: &[Wide],
    sum: Wide,
    features: &[usize],
) -> Option<Split> {
    best_split_with(data, p, q, hist, sum, features, true)
}

fn best_split_with(
    data: &BinnedMatrix,
    p: &GrowParams,
    q: &Quant,
    hist: &[Wide],
    sum: Wide,
    features: &[usize],
    allow_plain: bool,
) -> Option<Split> {
    let total = q.decode(sum);
    let parent_gain = p.gain(total.g, total.h);
    let mut best: Option<Split> = None;
    let cuts = data.cuts();
    let mcw = p.min_child_weight;
    for &f in features {
        let nb = cuts.n_value_bins(f);
        if nb == 0 {
            continue;
        }
        let off = data.offsets()[f];
        let h = &hist[off..off + nb + 1];
        let miss = h[nb];
        let try_missing_left = data.has_missing(f) && miss.h > 0;
        if nb < 2 && !try_missing_left {
            continue;
        }
        if allow_plain && !try_missing_left && p.alpha == 0.0 && p.max_delta_step == 0.0 {
            scan_plain(p, q, &h[..nb - 1], sum, parent_gain, f, &mut best);
            continue;
        }
        // With missing values the split after the last value bin is a candidate too: every
        // present value left, the missing ones right (as XGBoost enumerates it). On sparse data
        // (libsvm, sparse RecordIO) a one-hot feature has a single present value, and this is its
        // only split.
        let scanned = if try_missing_left { nb } else { nb - 1 };
        let mut acc = Wide::default();
        for (b, &e) in h[..scanned].iter().enumerate() {
            acc = acc.add(e);
            let mut consider = |left: Wide, default_left: bool| {
                let right = sum.sub(left);
                let (l, r) = (q.decode(left), q.decode(right));
                if l.h < mcw || r.h < mcw {
                    return;
                }
                let chg = p.gain(l.g, l.h) + p.gain(r.g, r.h) - parent_gain;
                if best.is_none_or(|s| chg > s.loss_chg) {
                    best = Some(Split {
                        loss_chg: chg,
                        feature: f,
                        bin: b as u8,
                        default_left,
                        left,
                        right,
                    });
                }
            };
            consider(acc, false);
            if try_missing_left && b + 1 < nb {
                consider(acc.add(miss), true);
            }
        }
    }
    best
}

/// [`best_split`]'s scan of one feature's bins (missing values right) for the plain gain
/// `G² / (H + λ)` (no `alpha`, no `max_delta_step`): the same arithmetic as the general scan in
/// a tighter loop, the left and right gains side by side (one two-lane division).
#[inline(always)]
fn scan_plain(
    p: &GrowParams,
    q: &Quant,
    bins: &[Wide],
    sum: Wide,
    parent_gain: f64,
    f: usize,
    best: &mut Option<Split>,
) {
    let (gs, hs, lam, mcw) = (q.g_scale, q.h_scale, p.lambda, p.min_child_weight);
    let (mut ag, mut ah) = (0i64, 0i64);
    for (b, &e) in bins.iter().enumerate() {
        ag += e.g;
        ah += e.h;
        let g = [ag as f64 * gs, (sum.g - ag) as f64 * gs];
        let h = [ah as f64 * hs, (sum.h - ah) as f64 * hs];
        if h[0] < mcw || h[1] < mcw {
            continue;
        }
        let num = [g[0] * g[0], g[1] * g[1]];
        let den = [h[0] + lam, h[1] + lam];
        let ratio = [num[0] / den[0], num[1] / den[1]];
        let gl = if h[0] > 0.0 { ratio[0] } else { 0.0 };
        let gr = if h[1] > 0.0 { ratio[1] } else { 0.0 };
        let chg = gl + gr - parent_gain;
        if best.is_none_or(|s| chg > s.loss_chg) {
            let left = Wide { g: ag, h: ah };
            *best = Some(Split {
                loss_chg: chg,
                feature: f,
                bin: b as u8,
                default_left: false,
                left,
                right: sum.sub(left),
            });
        }
    }
}

/// A node of the tree being grown. Its rows are runs (`segs`, ascending) of the row buffer:
/// one run per root segment it has rows in, so splitting a node partitions each run in place
/// and never moves rows between runs.
struct Node {
    nid: usize,
    depth: usize,
    segs: Vec<(usize, usize)>,
    n_rows: usize,
    sum: Wide,
    hist: Option<Vec<Wide>>,
    split: Option<Split>,
    /// Its exact sums are already known (a child of a [`Kind::Final`] job).
    done: bool,
}

impl Node {
    fn leaf(nid: usize, depth: usize, sum: Wide) -> Node {
        Node {
            nid,
            depth,
            segs: Vec::new(),
            n_rows: 0,
            sum,
            hist: None,
            split: None,
            done: true,
        }
    }
}

/// A split job's parent histogram, children, and the left child's index in the next level.
type SplitWork = (Option<Vec<Wide>>, Node, Node, usize);

/// What a job does with a node's rows. `Split` jobs run as the tree grows; `Final` and `Leaf`
/// jobs, which only settle rows that no longer move, all run once it is grown
/// ([`Grower::settle_all`]).
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Build its histogram (the root's is built with its gradients' quantization instead).
    #[cfg(test)]
    Hist,
    /// Partition every run by `split` (stable, left rows first) and build the histogram of the
    /// left (`small_left`) or right side.
    Split { split: Split, small_left: bool },
    /// Both children are leaves: exact gradient sums of each side and each row's leaf, without
    /// moving rows.
    Final { split: Split, slots: [u32; 2] },
    /// The node is a leaf: exact gradient sum and each row's leaf.
    Leaf { slot: u32 },
}

struct Job {
    kind: Kind,
    segs: Vec<(usize, usize)>,
}

/// The result of one task (consecutive runs of one job, at most `TASK_ROWS` rows).
struct Part {
    /// Rows going left, per run of the task (`Split`).
    nls: Vec<usize>,
    /// Packed histogram and the number of rows summed in it.
    hist: Option<(Vec<GroupHist>, usize)>,
}

/// Slots of one code group's packed histogram in a task: its `SLOTS_PER_FEATURE` codes, then
/// padding (never written). Without it, groups two apart sit 4096 bytes apart, and a row whose
/// codes in both are equal (common on skewed and low-cardinality features) makes the kernel's
/// read of one wait on its write to the other (the CPU compares the low 12 address bits of loads
/// with pending stores): up to 6 times slower per add on such rows.
const GROUP_STRIDE: usize = SLOTS_PER_FEATURE + 8;

/// One code group's packed histogram in a task.
type GroupHist = [i64; GROUP_STRIDE];

/// Deepest depth-wise trees grown asynchronously: heap ids of their nodes stay small.
const MAX_ASYNC_DEPTH: usize = 20;

/// What the asynchronous grower records, to build the tree when every job is done.
#[derive(Default)]
struct AsyncRecord {
    /// Address of the row buffer's first element.
    base: usize,
    /// Split nodes: (depth, heap id, quantized sums, split).
    splits: Vec<(usize, usize, Wide, Split)>,
    /// The `Final` and `Leaf` jobs, left for [`Grower::settle_all`].
    settle: Vec<Job>,
}

/// What to do when a job is done, with its parts and runs (in run order).
type Then<'s> = Box<dyn FnOnce(&rayon::Scope<'s>, Vec<Part>, Vec<Run<'s>>) + Send + 's>;

/// One job of the asynchronous grower: its tasks' parts and runs as they finish.
struct AsyncJob<'s> {
    done: Vec<Option<(Part, Vec<Run<'s>>)>>,
    left: usize,
    then: Option<Then<'s>>,
}

/// One run of a node's rows: its slice of the row buffer and the matching scratch slice.
type Run<'b> = (&'b mut [u32], &'b mut [u32]);

/// Rows per run of the root (a node keeps at most one run per root segment).
const SEG: usize = PIECE;
/// Most rows in one task; at most `PIECE`, so one packed histogram per task cannot overflow.
/// As large as that allows: each task histogram is cleared, summed and unpacked whole
/// (27 groups: 57 KB), which with 16384-row tasks cost about 8% of the CPU time on 1M rows.
const TASK_ROWS: usize = PIECE;
const _: () = assert!(TASK_ROWS <= PIECE && SEG <= TASK_ROWS);

/// Every row's group codes followed by its packed gradient (an unaligned `i64`, rewritten for
/// each tree): the histogram kernel reads one place per row, not two. Rows of a deep node are
/// scattered, so each row read is a cache miss; a record fetches a row's codes and gradient
/// in one or two cache lines instead of two or three (25-40% less time per add on such rows).
struct Records {
    /// Code groups per row.
    nf: usize,
    /// Bytes per record: `nf + 8`.
    stride: usize,
    bytes: Vec<u8>,
}

impl Records {
    /// Records of `data`'s rows, with zero gradients.
    fn new(data: &BinnedMatrix) -> Self {
        let (nf, n) = (data.n_groups(), data.n_rows());
        let stride = nf + 8;
        let mut bytes = vec![0u8; n * stride];
        if nf > 0 {
            const CHUNK: usize = 4096;
            bytes
                .par_chunks_mut(CHUNK * stride)
                .zip(data.group_codes().par_chunks(CHUNK * nf))
                .for_each(|(out, codes)| {
                    for (rec, row) in out.chunks_exact_mut(stride).zip(codes.chunks_exact(nf)) {
                        rec[..nf].copy_from_slice(row);
                    }
                });
        }
        Self { nf, stride, bytes }
    }

    /// Row `r`'s packed gradient.
    #[inline]
    fn packed(&self, r: usize) -> i64 {
        let at = r * self.stride + self.nf;
        i64::from_ne_bytes(self.bytes[at..at + 8].try_into().expect("eight bytes"))
    }

    /// Sets every row's packed gradient.
    #[cfg(test)]
    fn set_packed(&mut self, packed: &[i64]) {
        let nf = self.nf;
        for (rec, v) in self.bytes.chunks_exact_mut(self.stride).zip(packed) {
            rec[nf..].copy_from_slice(&v.to_ne_bytes());
        }
    }

    /// Every row's packed gradient.
    #[cfg(test)]
    fn all_packed(&self) -> Vec<i64> {
        (0..self.bytes.len() / self.stride).map(|r| self.packed(r)).collect()
    }
}

/// Grows trees for one data set; keeps its buffers between trees.
pub struct Grower<'a> {
    data: &'a BinnedMatrix,
    p: &'a GrowParams,
    rows: Vec<u32>,
    scratch: Vec<u32>,
    /// Every row's group codes and packed gradient, side by side (see [`Records`]).
    records: Records,
    quant: Quant,
    missing_code: Vec<u8>,
    /// Leaf of every row of the last tree (rows it was grown on): its node id, or its heap id
    /// when `heap_nid` is set.
    pos: Vec<AtomicU32>,
    /// When the last tree was grown asynchronously, `pos` holds heap ids (root 0, children of
    /// `h` at `2h + 1` and `2h + 2`) and this maps them to node ids.
    heap_nid: Option<Vec<u32>>,
    /// Grow depth-wise trees node by node as soon as each parent is done, instead of level by
    /// level, when the parameters allow it (see [`Self::grow_async`]).
    pub(crate) asynchronous: bool,
    /// Cleared packed task histograms, reused.
    pool: HistPool,
    /// The other hosts of a distributed job (see [`Self::distributed`]).
    comm: Option<&'a Collective>,
    /// The first failed exchange with them (later ones fail at once; checked after each tree).
    comm_error: Mutex<Option<CommError>>,
}

/// A grown tree.
pub struct Grown {
    /// The tree (leaf values already shrunk by eta).
    pub tree: RegTree,
}

impl<'a> Grower<'a> {
    /// A grower for `data`.
    pub fn new(data: &'a BinnedMatrix, p: &'a GrowParams) -> Self {
        let missing_code = (0..data.n_features())
            .map(|f| data.cuts().n_value_bins(f) as u8)
            .collect();
        Self {
            data,
            p,
            rows: Vec::new(),
            scratch: Vec::new(),
            records: Records::new(data),
            quant: Quant {
                g_scale: 1.0,
                h_scale: 1.0,
            },
            missing_code,
            pos: Vec::new(),
            heap_nid: None,
            asynchronous: !p.lossguide
                && p.max_leaves == 0
                && p.colsample_bylevel >= 1.0
                && p.colsample_bynode >= 1.0
                && (1..=MAX_ASYNC_DEPTH).contains(&p.max_depth),
            pool: Mutex::new(Vec::new()),
            comm: None,
            comm_error: Mutex::new(None),
        }
    }

    /// Grows each tree together with the other hosts of `comm` (a collective of one changes
    /// nothing): see the module documentation.
    pub fn distributed(mut self, comm: &'a Collective) -> Self {
        if comm.size() > 1 {
            self.comm = Some(comm);
            self.asynchronous = false;
        }
        self
    }

    /// Records the first failed exchange with the other hosts.
    fn comm_failed(&self, e: CommError) {
        lock(&self.comm_error).get_or_insert(e);
    }

    /// Sums `hists` over the hosts (one message); alone, nothing to do.
    pub fn sum_hists(&self, hists: &mut [&mut Vec<Wide>]) {
        let Some(comm) = self.comm else { return };
        time(Phase::Allreduce, || {
            let mut flat: Vec<&mut [i64]> = hists
                .iter_mut()
                .map(|h| {
                    // SAFETY: `Wide` is `repr(C)` with two `i64` fields and no padding, so `h.len()`
                    // of them are `2 * h.len()` initialized, aligned `i64`s; the borrow of `h` is
                    // held for the slice's life.
                    unsafe { std::slice::from_raw_parts_mut(h.as_mut_ptr().cast::<i64>(), 2 * h.len()) }
                })
                .collect();
            if let Err(e) = comm.sum_i64_slices(&mut flat) {
                self.comm_failed(e);
            }
        });
    }

    /// Sums the leaves' exact sums over the hosts (every host has the same leaves).
    fn sum_leaves(&self, sums: &mut [(usize, Entry)]) {
        let Some(comm) = self.comm else { return };
        time(Phase::Allreduce, || {
            sums.sort_unstable_by_key(|s| s.0);
            let mut flat: Vec<f64> = sums.iter().flat_map(|s| [s.1.g, s.1.h]).collect();
            if let Err(e) = comm.sum_f64(&mut flat) {
                return self.comm_failed(e);
            }
            for (s, x) in sums.iter_mut().zip(flat.chunks_exact(2)) {
                s.1 = Entry { g: x[0], h: x[1] };
            }
        });
    }

    /// The leaf (node id) row `r` fell in, in the last tree; only meaningful for rows the tree
    /// was grown on.
    #[inline]
    pub fn leaf_of(&self, r: usize) -> usize {
        let p = self.pos[r].load(Ordering::Relaxed);
        match &self.heap_nid {
            Some(map) => map[p as usize] as usize,
            None => p as usize,
        }
    }

    /// Every row's leaf slot in the last tree (only meaningful for rows it was grown on): what
    /// [`Self::slot_values`] is indexed by.
    pub fn leaf_slots(&self) -> &[u32] {
        // SAFETY: `AtomicU32` has the size and bit validity of `u32` and at least its alignment.
        // The slots are only written while a tree grows, inside `grow(&mut self)`; while this
        // shared borrow of the grower lives nothing can be growing, so plain reads cannot race.
        unsafe { std::slice::from_raw_parts(self.pos.as_ptr().cast::<u32>(), self.pos.len()) }
    }

    /// The leaf value of `tree` (the last tree grown) for each slot [`Self::leaf_slots`] can
    /// hold, in a table whose length is a power of two (0 where no leaf has the slot): a slot
    /// masked by `len - 1` indexes it without a bounds check.
    pub fn slot_values(&self, tree: &RegTree) -> Vec<f32> {
        let n = self.heap_nid.as_ref().map_or(tree.n_nodes(), Vec::len);
        let mut table = vec![0.0; n.next_power_of_two()];
        for (slot, v) in table.iter_mut().enumerate().take(n) {
            let nid = self.heap_nid.as_ref().map_or(slot, |map| map[slot] as usize);
            if let Some(&c) = tree.cond.get(nid) {
                *v = c;
            }
        }
        table
    }

    /// Missing code per feature.
    pub fn missing_codes(&self) -> &[u8] {
        &self.missing_code
    }

    /// Grows one tree on the rows in `active` (None = all rows; ascending) using `features`
    /// (by-tree column sample, ascending).
    ///
    /// `maxes` are `grads`' largest |g| and h ([`grad_max`]) when the caller already has them.
    /// Fails only when distributed, if the other hosts cannot be reached.
    pub fn grow(
        &mut self,
        grads: &[GradPair],
        maxes: Option<(f32, f32)>,
        active: Option<&[u32]>,
        features: &[usize],
        rng: &mut Rng,
    ) -> Result<Grown, CommError> {
        self.rows.clear();
        match active {
            Some(a) => {
                // Partitioning relies on every id being a row of the data (`partition_run`).
                assert!(
                    a.iter().all(|&r| (r as usize) < self.data.n_rows()),
                    "active row out of range"
                );
                self.rows.extend_from_slice(a)
            }
            None => self.rows.extend(0..self.data.n_rows() as u32),
        }
        let n = self.rows.len();
        self.heap_nid = None;
        // Every row's gradient is read by id without bounds checks (`final_sums`).
        assert_eq!(grads.len(), self.data.n_rows(), "one gradient per row");
        self.scratch.resize(n, 0);
        if self.pos.len() != self.data.n_rows() {
            self.pos = (0..self.data.n_rows()).map(|_| AtomicU32::new(0)).collect();
        }
        let (mut gmax, mut hmax) = maxes.unwrap_or_else(|| time(Phase::Quantize, || par_grad_max(grads)));
        if let Some(comm) = self.comm {
            // One scale for every host: their quantized sums then add up exactly.
            let mut m = [gmax, hmax];
            time(Phase::Allreduce, || comm.max_f32(&mut m))?;
            [gmax, hmax] = m;
        }
        self.quant = Quant::from_max(gmax, hmax);
        let segs: Vec<(usize, usize)> = (0..n).step_by(SEG).map(|s| (s, (s + SEG).min(n))).collect();
        let mut tree = RegTree::new_root(0.0, 0.0);
        let mut parts = time(Phase::Histograms, || self.root_pass(&segs, grads));
        let mut hist = self.reduce(&mut parts);
        self.sum_hists(&mut [&mut hist]);
        let sum = if self.data.n_features() > 0 {
            let nb = self.data.cuts().n_value_bins(0);
            hist[..=nb].iter().fold(Wide::default(), |a, &b| a.add(b))
        } else {
            let mut s = vec![self.sum_packed(0, n)];
            self.sum_hists(&mut [&mut s]);
            s[0]
        };
        let root = Node {
            nid: 0,
            depth: 0,
            segs,
            n_rows: n,
            sum,
            hist: Some(hist),
            split: None,
            done: false,
        };
        let mut leaf_sums = if self.can_split(&root) {
            if self.p.lossguide {
                self.grow_lossguide(root, features, rng, &mut tree, grads)
            } else if self.asynchronous {
                self.grow_async(root, features, &mut tree, grads)
            } else {
                self.grow_depthwise(root, features, rng, &mut tree, grads)
            }
        } else {
            self.settle_all(&Self::leaf_jobs(vec![root]).collect::<Vec<_>>(), grads)
        };
        self.sum_leaves(&mut leaf_sums);
        if let Some(e) = lock(&self.comm_error).take() {
            return Err(e);
        }
        time(Phase::Leaves, || self.finalize(&mut tree, &leaf_sums));
        Ok(Grown { tree })
    }

    /// The `Leaf` jobs of the leaves whose exact sums are not known yet.
    fn leaf_jobs(leaves: Vec<Node>) -> impl Iterator<Item = Job> {
        leaves.into_iter().filter(|n| !n.done).map(|n| Job {
            kind: Kind::Leaf { slot: n.nid as u32 },
            segs: n.segs,
        })
    }

    /// Sets leaf values, weights and covers from the exact gradient sums of each leaf's rows.
    fn finalize(&self, tree: &mut RegTree, leaf_sums: &[(usize, Entry)]) {
        let p = self.p;
        let mut node_sum = vec![Entry::default(); tree.n_nodes()];
        for &(leaf, s) in leaf_sums {
            node_sum[leaf] = s;
            tree.set_leaf(leaf, (p.eta * p.leaf_weight(s.g, s.h)) as f32);
            tree.sum_hess[leaf] = s.h as f32;
        }
        // Children always have larger ids than their parent.
        for i in (0..tree.n_nodes()).rev() {
            if !tree.is_leaf(i) {
                let (l, r) = (tree.left[i] as usize, tree.right[i] as usize);
                let mut s = node_sum[l];
                s.add(node_sum[r]);
                node_sum[i] = s;
                tree.base_weight[i] = p.weight(s.g, s.h) as f32;
                tree.sum_hess[i] = s.h as f32;
            }
        }
        if tree.n_nodes() == 1 {
            let s = node_sum[0];
            tree.set_leaf(0, (p.eta * p.weight(s.g, s.h)) as f32);
        }
    }

    /// Whether a node at `depth` with sums `sum` may split, rows aside.
    fn may_split(&self, depth: usize, sum: Wide) -> bool {
        (self.p.max_depth == 0 || depth < self.p.max_depth) && self.quant.decode(sum).h >= 2.0 * self.p.min_child_weight
    }

    fn can_split(&self, n: &Node) -> bool {
        // Distributed, a node's rows here are not all its rows; a node of fewer than two rows
        // finds no valid split anyway (one side would be empty: no gain).
        (n.n_rows >= 2 || self.comm.is_some()) && self.may_split(n.depth, n.sum)
    }

    fn valid(&self, s: &Split) -> bool {
        s.loss_chg > RT_EPS && s.loss_chg >= self.p.gamma
    }

    fn sample(&self, features: &[usize], frac: f64, rng: &mut Rng) -> Vec<usize> {
        if frac >= 1.0 {
            features.to_vec()
        } else {
            rng.sample_sorted(features, n_sampled(features.len(), frac))
        }
    }

    /// The job that splits `node` by `s` into tree nodes `l` and `r`, and the two children
    /// (without rows yet; a `Final` job's children are leaves, settled by `settle_all`).
    fn split_job(&self, node: &mut Node, s: Split, l: usize, r: usize) -> (Job, Node, Node) {
        let depth = node.depth + 1;
        let segs = std::mem::take(&mut node.segs);
        if !self.may_split(depth, s.left) && !self.may_split(depth, s.right) {
            let job = Job {
                kind: Kind::Final {
                    split: s,
                    slots: [l as u32, r as u32],
                },
                segs,
            };
            return (job, Node::leaf(l, depth, s.left), Node::leaf(r, depth, s.right));
        }
        // Build the side with less hessian (a proxy for fewer rows); the other is the
        // parent minus it. Either way the histograms are the same exact integers.
        let small_left = s.left.h <= s.right.h;
        let job = Job {
            kind: Kind::Split { split: s, small_left },
            segs,
        };
        let child = |nid, sum| Node {
            done: false,
            ..Node::leaf(nid, depth, sum)
        };
        (job, child(l, s.left), child(r, s.right))
    }

    /// After a `Split` job ran: the children's rows.
    fn child_rows(job: &Job, parts: &[Part], left: &mut Node, right: &mut Node) {
        let nls = parts.iter().flat_map(|p| p.nls.iter().copied());
        for (&(s, e), nl) in job.segs.iter().zip(nls) {
            if nl > 0 {
                left.segs.push((s, s + nl));
            }
            if s + nl < e {
                right.segs.push((s + nl, e));
            }
            left.n_rows += nl;
            right.n_rows += e - s - nl;
        }
    }

    /// After a `Split` job ran and [`Self::child_rows`]: histograms and best splits (over
    /// `feats`) of the children that can split.
    fn child_hists(
        &self,
        job: &Job,
        parts: &mut [Part],
        parent: Option<Vec<Wide>>,
        left: &mut Node,
        right: &mut Node,
        feats: [&[usize]; 2],
    ) {
        if let Some(small) = self.built_hist(parts, left, right) {
            self.child_splits(job, small, parent, left, right, feats);
        }
    }

    /// After a `Split` job ran and [`Self::child_rows`]: the histogram it built (of its
    /// smaller child), unless neither child can split.
    fn built_hist(&self, parts: &mut [Part], left: &Node, right: &Node) -> Option<Vec<Wide>> {
        // Reduced either way: that recycles the task histograms.
        let small = self.reduce(parts);
        (self.can_split(left) || self.can_split(right)).then_some(small)
    }

    /// The children's histograms (the built one, `small`, and parent − small) and their best
    /// splits (over `feats`), for the children that can split.
    fn child_splits(
        &self,
        job: &Job,
        small: Vec<Wide>,
        parent: Option<Vec<Wide>>,
        left: &mut Node,
        right: &mut Node,
        feats: [&[usize]; 2],
    ) {
        let Kind::Split { small_left, .. } = job.kind else {
            unreachable!("child_splits after a non-split job")
        };
        let (cl, cr) = (self.can_split(left), self.can_split(right));
        let (lh, rh) = match parent {
            Some(parent) if (small_left && cr) || (!small_left && cl) => sibling_hists(parent, small, small_left),
            _ if small_left => (small, Vec::new()),
            _ => (Vec::new(), small),
        };
        let (data, p, q) = (self.data, self.p, &self.quant);
        for (child, h, ok, f) in [(left, lh, cl, feats[0]), (right, rh, cr, feats[1])] {
            if ok {
                child.split = best_split(data, p, q, &h, child.sum, f);
                child.hist = Some(h);
            }
        }
    }

    fn grow_depthwise(
        &mut self,
        mut root: Node,
        features: &[usize],
        rng: &mut Rng,
        tree: &mut RegTree,
        grads: &[GradPair],
    ) -> Vec<(usize, Entry)> {
        let p = self.p;
        // The `Final` and `Leaf` jobs, run once the tree is grown (`settle_all`).
        let mut settle = Vec::new();
        let level_feats = self.sample(features, p.colsample_bylevel, rng);
        let feats = self.sample(&level_feats, p.colsample_bynode, rng);
        if let Some(h) = &root.hist {
            root.split = time(Phase::Splits, || {
                best_split(self.data, p, &self.quant, h, root.sum, &feats)
            });
        }
        let mut level = vec![root];
        let mut n_leaves = 1;
        loop {
            // Expand the best splits first so a leaf limit keeps the most useful ones.
            let gain = |i: usize| level[i].split.map_or(0.0, |s| s.loss_chg);
            let mut order: Vec<usize> = (0..level.len())
                .filter(|&i| level[i].split.is_some_and(|s| self.valid(&s)))
                .collect();
            order.sort_by(|&a, &b| gain(b).total_cmp(&gain(a)).then(a.cmp(&b)));
            if p.max_leaves > 0 {
                order.truncate(p.max_leaves.saturating_sub(n_leaves));
            }
            if order.is_empty() {
                break;
            }
            let mut chosen = vec![false; level.len()];
            for &i in &order {
                chosen[i] = true;
            }
            // One pass splits the chosen nodes; the others are leaves now.
            let mut jobs = Vec::new();
            // The next level, with each split job's children filled in when it finishes.
            let mut next: Vec<Option<Node>> = Vec::new();
            // Per split job: the parent's histogram, the two children (rows and histograms
            // still to come) and the left one's index in `next`.
            let mut work: Vec<Mutex<Option<SplitWork>>> = Vec::new();
            let mut leaves = Vec::new();
            for (mut node, chosen) in level.into_iter().zip(chosen) {
                if !chosen {
                    leaves.push(node);
                    continue;
                }
                let s = node.split.expect("chosen nodes have splits");
                let (l, r) = self.apply_split(tree, &node, &s);
                n_leaves += 1;
                let (job, left, right) = self.split_job(&mut node, s, l, r);
                if matches!(job.kind, Kind::Split { .. }) {
                    work.push(Mutex::new(Some((node.hist.take(), left, right, next.len()))));
                    next.extend([None, None]);
                    jobs.push(job);
                } else {
                    next.extend([Some(left), Some(right)]);
                    settle.push(job);
                }
            }
            settle.extend(Self::leaf_jobs(leaves));
            // Features of the next level, drawn in node order before its splits are searched.
            let level_feats = self.sample(features, p.colsample_bylevel, rng);
            let node_feats: Vec<Vec<usize>> = next
                .iter()
                .map(|_| self.sample(&level_feats, p.colsample_bynode, rng))
                .collect();
            // Each split job, once its last task is done, sets its children's rows, histograms
            // (one reduced, one subtracted) and best splits.
            let mut outcomes = time(Phase::Partition, || {
                let (jobs, work, node_feats) = (&jobs, &work, &node_feats);
                self.run_then(jobs, move |this, j, mut parts| {
                    let (parent, mut left, mut right, k) = lock(&work[j]).take().expect("one finish per job");
                    Self::child_rows(&jobs[j], &parts, &mut left, &mut right);
                    if this.comm.is_some() {
                        // Splits wait for the level's histograms summed over the hosts.
                        let small = this.built_hist(&mut parts, &left, &right);
                        return (k, left, right, Some((parent, small)));
                    }
                    this.child_hists(
                        &jobs[j],
                        &mut parts,
                        parent,
                        &mut left,
                        &mut right,
                        [&node_feats[k], &node_feats[k + 1]],
                    );
                    (k, left, right, None)
                })
            });
            if self.comm.is_some() {
                // Results come in job order, the same on every host.
                let mut built: Vec<&mut Vec<Wide>> = outcomes
                    .iter_mut()
                    .filter_map(|o| o.3.as_mut().and_then(|w| w.1.as_mut()))
                    .collect();
                self.sum_hists(&mut built);
                for (j, (k, left, right, waiting)) in outcomes.iter_mut().enumerate() {
                    if let Some((parent, Some(small))) = waiting.take() {
                        let feats = [&node_feats[*k][..], &node_feats[*k + 1][..]];
                        self.child_splits(&jobs[j], small, parent, left, right, feats);
                    }
                }
            }
            for (k, left, right, _) in outcomes {
                next[k] = Some(left);
                next[k + 1] = Some(right);
            }
            let next: Vec<Node> = next.into_iter().map(|n| n.expect("every split finished")).collect();
            level = next;
        }
        settle.extend(Self::leaf_jobs(level));
        time(Phase::Leaves, || self.settle_all(&settle, grads))
    }

    /// Depth-wise growth without level barriers: each node is split (or settled as a leaf) as
    /// soon as its parent's job is done, so both cores stay busy while the slowest nodes of a
    /// level finish. Only for plain depth-wise trees (no leaf limit, which needs a level's
    /// splits ranked together, and no per-level or per-node column sampling, which draws from
    /// the random stream in level order).
    ///
    /// Jobs, tasks and their order of summation are exactly those of [`Self::grow_depthwise`],
    /// and the tree's nodes are numbered as it numbers them (breadth first, by heap id), so the
    /// model is bit-identical; rows record heap ids, mapped to node ids by [`Self::leaf_of`].
    fn grow_async(
        &mut self,
        mut root: Node,
        features: &[usize],
        tree: &mut RegTree,
        grads: &[GradPair],
    ) -> Vec<(usize, Entry)> {
        if let Some(h) = &root.hist {
            root.split = time(Phase::Splits, || {
                best_split(self.data, self.p, &self.quant, h, root.sum, features)
            });
        }
        let (mut rows, mut scratch) = (std::mem::take(&mut self.rows), std::mem::take(&mut self.scratch));
        let segs = std::mem::take(&mut root.segs);
        let mut runs: Vec<Run<'_>> = Vec::with_capacity(segs.len());
        let base = rows.as_ptr() as usize;
        let (mut rest_r, mut rest_s, mut at) = (&mut rows[..], &mut scratch[..], 0);
        for (s, e) in segs {
            let (pr, tail_r) = rest_r[s - at..].split_at_mut(e - s);
            let (ps, tail_s) = rest_s[s - at..].split_at_mut(e - s);
            runs.push((pr, ps));
            (rest_r, rest_s, at) = (tail_r, tail_s, e);
        }
        let out = Mutex::new(AsyncRecord {
            base,
            ..AsyncRecord::default()
        });
        let this = &*self;
        time(Phase::Partition, || {
            rayon::scope(|sc| this.expand(sc, root, runs, features, &out));
        });
        let mut rec = out.into_inner().unwrap_or_else(|e| e.into_inner());
        self.rows = rows;
        self.scratch = scratch;
        let settled = time(Phase::Leaves, || self.settle_all(&rec.settle, grads));
        // Number the nodes as the level-by-level grower does: breadth first, by heap id.
        rec.splits.sort_unstable_by_key(|&(depth, heap, ..)| (depth, heap));
        let end = rec.splits.iter().map(|&(_, h, ..)| 2 * h + 3).max().unwrap_or(1);
        let mut nid = vec![u32::MAX; end];
        nid[0] = 0;
        for &(_, heap, sum, s) in &rec.splits {
            let (l, r) = self.apply_split_at(tree, nid[heap] as usize, sum, &s);
            (nid[2 * heap + 1], nid[2 * heap + 2]) = (l as u32, r as u32);
        }
        let sums = settled.iter().map(|&(heap, e)| (nid[heap] as usize, e)).collect();
        self.heap_nid = Some(nid);
        sums
    }

    /// Splits `node` (its rows are `runs`) or settles it as a leaf, then its children, each as
    /// soon as its job is done.
    fn expand<'s>(
        &'s self,
        sc: &rayon::Scope<'s>,
        mut node: Node,
        runs: Vec<Run<'s>>,
        features: &'s [usize],
        out: &'s Mutex<AsyncRecord>,
    ) {
        let defer = |kind, runs: Vec<Run<'s>>| {
            let mut rec = lock(out);
            let base = rec.base;
            let runs = runs
                .into_iter()
                .map(|(r, _)| {
                    // The run's place in the row buffer.
                    let at = (r.as_ptr() as usize - base) / std::mem::size_of::<u32>();
                    (at, at + r.len())
                })
                .collect();
            rec.settle.push(Job { kind, segs: runs });
        };
        let Some(s) = node.split.filter(|s| self.valid(s)) else {
            if !node.done {
                defer(Kind::Leaf { slot: node.nid as u32 }, runs);
            }
            return;
        };
        let heap = node.nid;
        lock(out).splits.push((node.depth, heap, node.sum, s));
        let (job, mut left, mut right) = self.split_job(&mut node, s, 2 * heap + 1, 2 * heap + 2);
        let kind = job.kind;
        if !matches!(kind, Kind::Split { .. }) {
            defer(kind, runs);
            return;
        }
        let parent = node.hist.take();
        self.spawn_job(
            sc,
            kind,
            runs,
            Box::new(move |sc, mut parts, runs| {
                // The children's runs, as `child_rows` cuts them: each partitioned run splits into
                // its left and right rows, empty sides dropped.
                let nls = parts.iter().flat_map(|p| p.nls.iter().copied());
                let (mut lruns, mut rruns) = (Vec::new(), Vec::new());
                for ((rw, sw), nl) in runs.into_iter().zip(nls) {
                    let ((lr, rr), (ls, rs)) = (rw.split_at_mut(nl), sw.split_at_mut(nl));
                    left.n_rows += lr.len();
                    right.n_rows += rr.len();
                    if !lr.is_empty() {
                        lruns.push((lr, ls));
                    }
                    if !rr.is_empty() {
                        rruns.push((rr, rs));
                    }
                }
                let job = Job { kind, segs: Vec::new() };
                self.child_hists(&job, &mut parts, parent, &mut left, &mut right, [features, features]);
                self.expand(sc, left, lruns, features, out);
                self.expand(sc, right, rruns, features, out);
            }),
        );
    }

    /// Spawns the tasks of one job on `runs` (cut as [`Self::run_then`] cuts them); the task
    /// that completes the job calls `then` with the parts and the runs, in run order.
    fn spawn_job<'s>(&'s self, sc: &rayon::Scope<'s>, kind: Kind, runs: Vec<Run<'s>>, then: Then<'s>) {
        let mut tasks: Vec<Vec<Run<'s>>> = vec![Vec::new()];
        let mut rows = 0;
        for run in runs {
            let len = run.0.len();
            let cur = tasks.last_mut().expect("there is always a task");
            if !cur.is_empty() && rows + len > TASK_ROWS {
                tasks.push(Vec::new());
                rows = 0;
            }
            rows += len;
            tasks.last_mut().expect("there is always a task").push(run);
        }
        let pending = Arc::new(Mutex::new(AsyncJob {
            done: (0..tasks.len()).map(|_| None).collect(),
            left: tasks.len(),
            then: Some(then),
        }));
        for (ti, mut task) in tasks.into_iter().enumerate() {
            let pending = Arc::clone(&pending);
            sc.spawn(move |sc| {
                let part = self.run_task(kind, &mut task);
                let finished = {
                    let mut p = lock(&pending);
                    p.done[ti] = Some((part, task));
                    p.left -= 1;
                    (p.left == 0).then(|| (std::mem::take(&mut p.done), p.then.take()))
                };
                if let Some((done, Some(then))) = finished {
                    let (mut parts, mut runs) = (Vec::new(), Vec::new());
                    for (part, task_runs) in done.into_iter().flatten() {
                        parts.push(part);
                        runs.extend(task_runs);
                    }
                    then(sc, parts, runs);
                }
            });
        }
    }

    fn grow_lossguide(
        &mut self,
        mut root: Node,
        features: &[usize],
        rng: &mut Rng,
        tree: &mut RegTree,
        grads: &[GradPair],
    ) -> Vec<(usize, Entry)> {
        /// Heap entry: best gain first, then earliest pushed.
        struct Cand(f64, std::cmp::Reverse<usize>, Node);
        impl PartialEq for Cand {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == std::cmp::Ordering::Equal
            }
        }
        impl Eq for Cand {}
        impl PartialOrd for Cand {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Cand {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
            }
        }
        let p = self.p;
        let mut level_feats: Vec<Vec<usize>> = Vec::new();
        let mut feats_for = |depth: usize, rng: &mut Rng, this: &Self| -> Vec<usize> {
            while level_feats.len() <= depth {
                level_feats.push(this.sample(features, p.colsample_bylevel, rng));
            }
            this.sample(&level_feats[depth], p.colsample_bynode, rng)
        };
        let f = feats_for(0, rng, self);
        root.split = root
            .hist
            .as_ref()
            .and_then(|h| best_split(self.data, p, &self.quant, h, root.sum, &f));
        let mut heap = BinaryHeap::new();
        let mut stamp = 0;
        heap.push(Cand(
            root.split.map_or(0.0, |s| s.loss_chg),
            std::cmp::Reverse(stamp),
            root,
        ));
        let mut leaves = Vec::new();
        // The `Final` jobs, run with the leaves' once the tree is grown (`settle_all`).
        let mut settle = Vec::new();
        let mut n_leaves = 1;
        while let Some(Cand(_, _, mut node)) = heap.pop() {
            let Some(s) = node.split.filter(|s| self.valid(s)) else {
                leaves.push(node);
                continue;
            };
            if p.max_leaves > 0 && n_leaves >= p.max_leaves {
                leaves.push(node);
                break;
            }
            let (l, r) = self.apply_split(tree, &node, &s);
            n_leaves += 1;
            let (job, mut left, mut right) = self.split_job(&mut node, s, l, r);
            if !matches!(job.kind, Kind::Split { .. }) {
                settle.push(job);
                continue;
            }
            let jobs = [job];
            let mut parts = time(Phase::Partition, || self.run(&jobs));
            // Sample features only for children that can split, in order.
            Self::child_rows(&jobs[0], &parts, &mut left, &mut right);
            let fl = if self.can_split(&left) {
                feats_for(left.depth, rng, self)
            } else {
                Vec::new()
            };
            let fr = if self.can_split(&right) {
                feats_for(right.depth, rng, self)
            } else {
                Vec::new()
            };
            if let Some(mut small) = self.built_hist(&mut parts, &left, &right) {
                self.sum_hists(&mut [&mut small]);
                self.child_splits(&jobs[0], small, node.hist.take(), &mut left, &mut right, [&fl, &fr]);
            }
            for child in [left, right] {
                if child.split.is_some_and(|s| self.valid(&s)) {
                    stamp += 1;
                    let g = child.split.map_or(0.0, |s| s.loss_chg);
                    heap.push(Cand(g, std::cmp::Reverse(stamp), child));
                } else {
                    leaves.push(child);
                }
            }
        }
        leaves.extend(heap.into_iter().map(|c| c.2));
        settle.extend(Self::leaf_jobs(leaves));
        time(Phase::Leaves, || self.settle_all(&settle, grads))
    }

    fn apply_split(&self, tree: &mut RegTree, node: &Node, s: &Split) -> (usize, usize) {
        self.apply_split_at(tree, node.nid, node.sum, s)
    }

    /// Splits tree node `nid` (whose quantized sums are `sum`) by `s`; returns the children.
    fn apply_split_at(&self, tree: &mut RegTree, nid: usize, sum: Wide, s: &Split) -> (usize, usize) {
        let p = self.p;
        let q = self.quant;
        let leaf = |w: Wide| {
            let e = q.decode(w);
            ((p.eta * p.weight(e.g, e.h)) as f32, e.h as f32)
        };
        let total = q.decode(sum);
        tree.split(
            nid,
            s.feature as u32,
            s.bin,
            self.data.cuts().threshold(s.feature, s.bin),
            s.default_left,
            p.weight(total.g, total.h) as f32,
            s.loss_chg as f32,
            [leaf(s.left), leaf(s.right)],
        )
    }

    fn sum_packed(&self, start: usize, end: usize) -> Wide {
        let records = &self.records;
        self.rows[start..end]
            .par_chunks(PIECE)
            .map(|rows| {
                Quant::unpack(
                    rows.iter()
                        .fold(0i64, |a, &r| a.wrapping_add(records.packed(r as usize))),
                )
            })
            .reduce(Wide::default, Wide::add)
    }

    /// Quantizes the gradients of the rows of each root segment and builds its histogram.
    fn root_pass(&mut self, segs: &[(usize, usize)], grads: &[GradPair]) -> Vec<Part> {
        let rows = &self.rows;
        let (nf, stride) = (self.records.nf, self.records.stride);
        // Each segment's rows are ascending and lie in their own range of row ids, so the
        // records can be carved into one slice per segment.
        let mut slices = Vec::with_capacity(segs.len());
        let (mut rest, mut at) = (&mut self.records.bytes[..], 0);
        for &(s, e) in segs {
            let (lo, hi) = (rows[s] as usize, rows[e - 1] as usize + 1);
            let (mine, tail) = rest[(lo - at) * stride..].split_at_mut((hi - lo) * stride);
            slices.push((lo, mine));
            (rest, at) = (tail, hi);
        }
        let (pack, quant, pool) = (self.quant.packer(), self.quant, &self.pool);
        segs.par_iter()
            .zip(slices)
            .map(|(&(s, e), (lo, recs))| {
                let rs = &rows[s..e];
                let mut h = take_hist(pool, nf);
                if recs.len() == rs.len() * stride {
                    // Contiguous rows: quantize into a buffer (a loop that vectorizes), then add
                    // and store each row's value in one pass over the records.
                    let mut vals = vec![0i64; rs.len()];
                    quant.pack_into(&grads[lo..lo + rs.len()], &mut vals);
                    accumulate_fresh(&mut h, recs, nf, &vals);
                } else {
                    for &r in rs {
                        let at = (r as usize - lo) * stride + nf;
                        recs[at..at + 8].copy_from_slice(&pack(grads[r as usize]).to_ne_bytes());
                    }
                    // SAFETY: the segment's rows lie in `lo..lo + recs.len() / stride` (carved
                    // above from the ascending row buffer), and `recs` holds their records.
                    unsafe { accumulate(&mut h, recs, nf, lo, rs) };
                }
                Part {
                    nls: Vec::new(),
                    hist: Some((h, rs.len())),
                }
            })
            .collect()
    }

    /// The node histogram (compact layout) summed from a job's packed task histograms, which go
    /// back to the pool cleared.
    fn reduce(&self, parts: &mut [Part]) -> Vec<Wide> {
        let mut out = vec![Wide::default(); self.data.hist_len()];
        // Packed histograms of at most `PIECE` rows in all are summed packed (they cannot
        // overflow), then unpacked once.
        let mut acc: Option<(Vec<GroupHist>, usize)> = None;
        for (mut h, n) in parts.iter_mut().filter_map(|p| p.hist.take()) {
            if let Some((a, an)) = acc.as_mut()
                && *an + n <= PIECE
            {
                for (g, (af, hf)) in a.iter_mut().zip(h.iter_mut()).enumerate() {
                    let used = ..self.data.groups()[g].slots;
                    for (x, y) in af[used].iter_mut().zip(&mut hf[used]) {
                        *x = x.wrapping_add(std::mem::take(y));
                    }
                }
                *an += n;
                self.give_back(h);
                continue;
            }
            if let Some((a, _)) = acc.replace((h, n)) {
                self.unpack_into(&mut out, a);
            }
        }
        if let Some((a, _)) = acc {
            self.unpack_into(&mut out, a);
        }
        out
    }

    /// Adds a packed histogram (one per code group) to a compact one (one per feature), and
    /// returns it to the pool cleared.
    fn unpack_into(&self, out: &mut [Wide], mut h: Vec<GroupHist>) {
        let offsets = self.data.offsets();
        for (group, hg) in self.data.groups().iter().zip(h.iter_mut()) {
            // Codes never reach `slots`, so the slots above stay zero.
            let used = &mut hg[..group.slots];
            if let [(f, _)] = group.members[..] {
                for (o, x) in out[offsets[f]..].iter_mut().zip(used) {
                    *o = o.add(Quant::unpack(std::mem::take(x)));
                }
                continue;
            }
            // A bundle: each member's histogram sums the joint slots over the other members'
            // codes (slot `j` holds member code `j / stride % size`; walked without divisions).
            // The packed sums cover the same rows as the joint ones, so they cannot overflow
            // either, and are unpacked once.
            for (&(f, stride), &size) in group.members.iter().zip(&group.sizes) {
                let mut member = [0i64; SLOTS_PER_FEATURE];
                for block in used.chunks_exact(stride * size) {
                    for (m, run) in member.iter_mut().zip(block.chunks_exact(stride)) {
                        *m = run.iter().fold(*m, |a, &x| a.wrapping_add(x));
                    }
                }
                for (o, &x) in out[offsets[f]..].iter_mut().zip(&member[..size]) {
                    *o = o.add(Quant::unpack(x));
                }
            }
            used.fill(0);
        }
        self.give_back(h);
    }

    fn give_back(&self, h: Vec<GroupHist>) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(h);
        }
    }

    /// One task of a job of `kind` (the job's index is `job`): `runs` are consecutive runs of
    /// its rows. Shared by the level-synchronous and the asynchronous growers.
    fn run_task(&self, kind: Kind, runs: &mut [Run<'_>]) -> Part {
        let (data, missing, pool) = (self.data, &self.missing_code, &self.pool);
        let (recs, nf) = (&self.records.bytes[..], self.records.nf);
        let mut part = Part {
            nls: Vec::new(),
            hist: None,
        };
        match kind {
            #[cfg(test)]
            Kind::Hist => {
                let mut h = take_hist(pool, data.n_groups());
                let mut n = 0;
                for (r, _) in runs.iter_mut() {
                    // SAFETY: rows of the data; `recs` has every row's record.
                    unsafe { accumulate(&mut h, recs, nf, 0, r) };
                    n += r.len();
                }
                part.hist = Some((h, n));
            }
            Kind::Split { split, small_left } => {
                let (mut h, mut n) = (take_hist(pool, data.n_groups()), 0);
                let (col, miss) = (data.column_padded(split.feature), missing[split.feature]);
                for (r, s) in runs.iter_mut() {
                    // SAFETY: the row buffer holds row ids below `data.n_rows()` (see
                    // `partition_run`), and `col` is a padded column of the data.
                    let nl = unsafe { partition_run(r, s, col, split.bin, miss, split.default_left) };
                    part.nls.push(nl);
                    let small = if small_left { &r[..nl] } else { &r[nl..] };
                    // SAFETY: rows of the data (as above); `recs` has every row's record.
                    unsafe { accumulate(&mut h, recs, nf, 0, small) };
                    n += small.len();
                }
                part.hist = Some((h, n));
            }
            Kind::Final { .. } | Kind::Leaf { .. } => unreachable!("settled once the tree is grown"),
        }
        part
    }

    /// Runs the `Final` and `Leaf` jobs `jobs` (runs of the row buffer) root segment by
    /// root segment instead of job by job, and returns the leaves' exact sums by slot.
    ///
    /// A last-level node's rows are spread over every segment, so a job-by-job pass reaches
    /// each row's gradient, leaf slot and code in memory; segment by segment, the runs of all
    /// jobs in one segment touch one window of `SEG` consecutive row ids, whose gradients,
    /// slots and codes stay in the core's cache once the first run has brought them in.
    /// Each job's sums are added in segment order, whatever the thread count.
    fn settle_all(&self, jobs: &[Job], grads: &[GradPair]) -> Vec<(usize, Entry)> {
        let rows = &self.rows;
        let mut by_seg: Vec<Vec<(usize, &[u32])>> = vec![Vec::new(); rows.len().div_ceil(SEG)];
        for (j, job) in jobs.iter().enumerate() {
            for &(s, e) in &job.segs {
                // Growth keeps a node's runs within root segments (tests may not: a run is
                // then settled with its first row's segment).
                by_seg[s / SEG].push((j, &rows[s..e]));
            }
        }
        let partial: Vec<Vec<(usize, [Entry; 2])>> = by_seg
            .par_iter()
            .map(|items| {
                items
                    .iter()
                    .map(|&(j, run)| (j, self.settle(jobs[j].kind, run, grads)))
                    .collect()
            })
            .collect();
        let mut sums = vec![[Entry::default(); 2]; jobs.len()];
        for (j, s) in partial.into_iter().flatten() {
            sums[j][0].add(s[0]);
            sums[j][1].add(s[1]);
        }
        let mut out = Vec::new();
        for (job, s) in jobs.iter().zip(sums) {
            match job.kind {
                Kind::Leaf { slot } => out.push((slot as usize, s[0])),
                Kind::Final { slots, .. } => out.extend([(slots[0] as usize, s[0]), (slots[1] as usize, s[1])]),
                _ => unreachable!("only final and leaf jobs settle rows"),
            }
        }
        out
    }

    /// The exact sums of the rows `run` of a `Final` (`[left, right]`) or `Leaf` (`[all, _]`)
    /// job, recording each row's leaf in `pos`; rows do not move.
    fn settle(&self, kind: Kind, run: &[u32], grads: &[GradPair]) -> [Entry; 2] {
        let (data, pos, missing) = (self.data, &self.pos[..], &self.missing_code);
        match kind {
            Kind::Final { split, slots } => {
                let (col, miss, bin) = (data.column(split.feature), missing[split.feature], split.bin);
                // SAFETY: the row buffer holds row ids below `data.n_rows()` (see
                // `partition_run`), the length of `col`, of `pos` and (checked in
                // `grow`) of `grads`.
                unsafe {
                    if split.default_left {
                        final_sums(run, grads, pos, col, slots, |c| (c <= bin) | (c == miss))
                    } else {
                        final_sums(run, grads, pos, col, slots, |c| c <= bin)
                    }
                }
            }
            Kind::Leaf { slot } => {
                // Two accumulators halve the chain of dependent f64 adds.
                let (mut a, mut b) = (Entry::default(), Entry::default());
                let mut pairs = run.chunks_exact(2);
                for pair in &mut pairs {
                    let (x, y) = (grads[pair[0] as usize], grads[pair[1] as usize]);
                    a.g += f64::from(x.g);
                    a.h += f64::from(x.h);
                    b.g += f64::from(y.g);
                    b.h += f64::from(y.h);
                    pos[pair[0] as usize].store(slot, Ordering::Relaxed);
                    pos[pair[1] as usize].store(slot, Ordering::Relaxed);
                }
                for &x in pairs.remainder() {
                    a.g += f64::from(grads[x as usize].g);
                    a.h += f64::from(grads[x as usize].h);
                    pos[x as usize].store(slot, Ordering::Relaxed);
                }
                a.add(b);
                [a, Entry::default()]
            }
            _ => unreachable!("only final and leaf jobs settle rows"),
        }
    }

    /// Runs `jobs` in one parallel pass and returns their parts, in (job, run) order.
    fn run(&mut self, jobs: &[Job]) -> Vec<Part> {
        self.run_then(jobs, |_, _, parts| parts).into_iter().flatten().collect()
    }

    /// Runs `jobs` in one parallel pass. Each job's runs are cut into tasks of at most
    /// `TASK_ROWS` rows (consecutive runs, never depending on the thread count). The task that
    /// completes a job calls `finish(self, job, its parts in run order)` right away, inside the
    /// same parallel pass (no second pass, no waiting for the other jobs); returns each job's
    /// result.
    fn run_then<R: Send>(&mut self, jobs: &[Job], finish: impl Fn(&Self, usize, Vec<Part>) -> R + Sync) -> Vec<R> {
        // (job, first run, end run)
        let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let (mut first, mut rows) = (0, 0);
            for (k, &(s, e)) in job.segs.iter().enumerate() {
                if k > first && rows + (e - s) > TASK_ROWS {
                    tasks.push((j, first, k));
                    (first, rows) = (k, 0);
                }
                rows += e - s;
            }
            tasks.push((j, first, job.segs.len()));
        }
        // Carve every run out of the row and scratch buffers (runs are disjoint). The buffers
        // are moved out meanwhile so that `finish` can borrow the grower.
        let (mut rows, mut scratch) = (std::mem::take(&mut self.rows), std::mem::take(&mut self.scratch));
        let mut spans: Vec<(usize, usize, usize)> = tasks
            .iter()
            .enumerate()
            .flat_map(|(t, &(j, a, b))| jobs[j].segs[a..b].iter().map(move |&(s, e)| (s, e, t)))
            .collect();
        spans.sort_unstable_by_key(|s| s.0);
        let mut mine: Vec<Vec<Run<'_>>> = (0..tasks.len()).map(|_| Vec::new()).collect();
        let (mut rest_r, mut rest_s, mut at) = (&mut rows[..], &mut scratch[..], 0);
        for (s, e, t) in spans {
            let (pr, tail_r) = rest_r[s - at..].split_at_mut(e - s);
            let (ps, tail_s) = rest_s[s - at..].split_at_mut(e - s);
            mine[t].push((pr, ps));
            (rest_r, rest_s, at) = (tail_r, tail_s, e);
        }
        // Per job: its tasks' parts as they complete, and how many are still running.
        let mut pending: Vec<(Vec<Option<Part>>, usize)> = Vec::with_capacity(jobs.len());
        let mut index = Vec::with_capacity(tasks.len());
        for &(j, _, _) in &tasks {
            if pending.len() <= j {
                pending.push((Vec::new(), 0));
            }
            index.push(pending[j].0.len());
            pending[j].0.push(None);
            pending[j].1 += 1;
        }
        let pending: Vec<Mutex<(Vec<Option<Part>>, usize)>> = pending.into_iter().map(Mutex::new).collect();
        let results: Vec<Mutex<Option<R>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
        let this = &*self;
        mine.into_par_iter()
            .zip(tasks.par_iter().zip(index))
            .for_each(|(mut runs, (&(j, _, _), ti))| {
                let part = this.run_task(jobs[j].kind, &mut runs);
                let done = {
                    let mut slot = lock(&pending[j]);
                    slot.0[ti] = Some(part);
                    slot.1 -= 1;
                    (slot.1 == 0).then(|| std::mem::take(&mut slot.0))
                };
                if let Some(parts) = done {
                    let parts = parts
                        .into_iter()
                        .map(|p| p.expect("every task stored its part"))
                        .collect();
                    *lock(&results[j]) = Some(finish(this, j, parts));
                }
            });
        self.rows = rows;
        self.scratch = scratch;
        results
            .into_iter()
            .map(|r| {
                r.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every job finished")
            })
            .collect()
    }
}

/// Exact `[left, right]` gradient sums of the rows `run` (split by `left` of their code in
/// `col`), recording each row's leaf (`slots[0]` left, `slots[1]` right) in `pos`.
///
/// # Safety
/// Every row id in `run` is below `grads.len()`, `pos.len()` and `col.len()`.
#[inline(always)]
unsafe fn final_sums(
    run: &[u32],
    grads: &[GradPair],
    pos: &[AtomicU32],
    col: &[u8],
    slots: [u32; 2],
    left: impl Fn(u8) -> bool,
) -> [Entry; 2] {
    // Sums of the left rows and of all rows, each over even and odd positions: four
    // independent chains of f64 adds per sum instead of one.
    let (mut l, mut t) = ([Entry::default(); 2], [Entry::default(); 2]);
    let mut one = |k: usize, r: u32| {
        let r = r as usize;
        debug_assert!(r < grads.len() && r < pos.len() && r < col.len());
        // SAFETY: `r` is below the three lengths: the caller's guarantee. Unchecked, this
        // pass over every row of the last level is about a third faster.
        let (goes_left, gp, p) = unsafe {
            (
                left(*col.get_unchecked(r)),
                *grads.get_unchecked(r),
                pos.get_unchecked(r),
            )
        };
        let (g, h) = (f64::from(gp.g), f64::from(gp.h));
        l[k].g += if goes_left { g } else { 0.0 };
        l[k].h += if goes_left { h } else { 0.0 };
        t[k].g += g;
        t[k].h += h;
        p.store(if goes_left { slots[0] } else { slots[1] }, Ordering::Relaxed);
    };
    let mut pairs = run.chunks_exact(2);
    for pair in &mut pairs {
        one(0, pair[0]);
        one(1, pair[1]);
    }
    for &r in pairs.remainder() {
        one(0, r);
    }
    l[0].add(l[1]);
    t[0].add(t[1]);
    [
        l[0],
        Entry {
            g: t[0].g - l[0].g,
            h: t[0].h - l[0].h,
        },
    ]
}

/// Locks `m`; a panic elsewhere (which rayon re-raises anyway) leaves no broken state here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Zeroed packed task histograms, reused: taking one costs no allocation nor clearing.
type HistPool = Mutex<Vec<Vec<GroupHist>>>;

/// A zeroed packed histogram of `nf` features, from `pool` if it has one.
fn take_hist(pool: &HistPool, nf: usize) -> Vec<GroupHist> {
    let reused = pool.lock().map(|mut p| p.pop()).unwrap_or(None);
    reused.unwrap_or_else(|| vec![[0i64; GROUP_STRIDE]; nf])
}

/// Stable in-place partition of one run (`scratch` is at least as long): rows going left first,
/// in their order, then the rest. Returns the number going left.
///
/// # Safety
/// Every row id `r` in `rows` has `r + COLUMN_PAD < col.len()`: `col` is a column as
/// [`BinnedMatrix::column_padded`] gives it, and the grower's row buffer only ever holds ids
/// below the data's row count ([`Grower::grow`] fills it with checked ids and partitioning only
/// permutes it).
unsafe fn partition_run(rows: &mut [u32], scratch: &mut [u32], col: &[u8], bin: u8, miss: u8, dl: bool) -> usize {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { partition_with(rows, scratch, col, bin, miss, dl, true) }
}

/// [`partition_run`], sixteen rows at a time with AVX-512 when `vector` is set and the CPU has
/// it, then one row at a time for the rest.
///
/// # Safety
/// As [`partition_run`].
unsafe fn partition_with(
    rows: &mut [u32],
    scratch: &mut [u32],
    col: &[u8],
    bin: u8,
    miss: u8,
    dl: bool,
    vector: bool,
) -> usize {
    let scratch = &mut scratch[..rows.len()];
    let mut done = (0, (0, 0));
    #[cfg(target_arch = "x86_64")]
    if vector && std::arch::is_x86_feature_detected!("avx512f") && col.len() <= i32::MAX as usize {
        // SAFETY: the CPU has AVX-512F (checked just above); the rest is the caller's guarantee.
        done = unsafe { partition_avx512(rows, scratch, col, bin, miss, dl) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    let (from, cursors) = done;
    // Missing codes are above every value bin, so they only need a test when they go left.
    // SAFETY: `scratch` is as long as `rows`; the vector steps left `cursors` summing to `from`;
    // the rows are below `col.len()` (the caller's guarantee).
    let (nl, nr) = unsafe {
        if dl {
            partition_rows(rows, scratch, col, from, cursors, |c| (c <= bin) | (c == miss))
        } else {
            partition_rows(rows, scratch, col, from, cursors, |c| c <= bin)
        }
    };
    rows[nl..].copy_from_slice(&scratch[..nr]);
    nl
}

/// Partitions `rows[from..]` (rows before `from` are done: `nl` of them compacted at the front
/// of `rows`, `nr` in `scratch`, `nl + nr == from`) and returns the new `(nl, nr)`.
///
/// # Safety
/// `scratch.len() == rows.len()`, `from <= rows.len()`, `nl + nr == from`, and every row id in
/// `rows[from..]` is below `col.len()`.
#[inline(always)]
unsafe fn partition_rows(
    rows: &mut [u32],
    scratch: &mut [u32],
    col: &[u8],
    from: usize,
    (mut nl, mut nr): (usize, usize),
    left: impl Fn(u8) -> bool,
) -> (usize, usize) {
    debug_assert!(scratch.len() == rows.len() && nl + nr == from && from <= rows.len());
    debug_assert!(rows[from..].iter().all(|&r| (r as usize) < col.len()));
    let (rp, sp) = (rows.as_mut_ptr(), scratch.as_mut_ptr());
    // Lefts are compacted in place (the write index never passes the read index), rights go to
    // the scratch buffer. Every row is written to both and one cursor advances: no branch to
    // mispredict on the coin-flip decision. Without bounds checks, which would sit on the chain
    // of dependent cursor updates, the loop is about 1.4 times faster.
    for i in from..rows.len() {
        // SAFETY: at the top of iteration `i`, `nl + nr == i` (each iteration advances exactly
        // one of them), so `nl <= i < rows.len()` and `nr <= i < scratch.len()`: the reads and
        // writes are in bounds. `r < col.len()` is the caller's guarantee. `rp` and `sp` come
        // from distinct `&mut` slices, and `rows[nl]` is written only after `rows[i]`
        // (`nl <= i`) was read, so no read sees a clobbered value.
        unsafe {
            let r = *rp.add(i);
            let l = left(*col.get_unchecked(r as usize));
            *rp.add(nl) = r;
            *sp.add(nr) = r;
            nl += usize::from(l);
            nr += usize::from(!l);
        }
    }
    (nl, nr)
}

/// The vector steps of [`partition_with`]: sixteen rows at a time with AVX-512, one gather reads
/// their codes, one compare gives the left mask, and two compresses write the lefts in place
/// and the rights to `scratch`. About twice as fast as one row at a time, whose cursor updates
/// form a chain. Returns how many rows it did and the cursors `(nl, nr)` for the rest.
///
/// # Safety
/// As [`partition_run`], and the CPU supports AVX-512F; `col.len() <= i32::MAX`;
/// `scratch.len() == rows.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn partition_avx512(
    rows: &mut [u32],
    scratch: &mut [u32],
    col: &[u8],
    bin: u8,
    miss: u8,
    dl: bool,
) -> (usize, (usize, usize)) {
    use std::arch::x86_64::*;
    let n = rows.len();
    debug_assert_eq!(scratch.len(), n);
    debug_assert!(rows.iter().all(|&r| r as usize + COLUMN_PAD < col.len()));
    let (rp, sp) = (rows.as_mut_ptr(), scratch.as_mut_ptr());
    let (bins, missing, low_byte) = (
        _mm512_set1_epi32(i32::from(bin)),
        _mm512_set1_epi32(i32::from(miss)),
        _mm512_set1_epi32(0xff),
    );
    let (mut i, mut nl, mut nr) = (0, 0, 0);
    while i + 16 <= n {
        // SAFETY: `i + 16 <= n`, so the load reads `rows[i..i + 16]`. The gather reads the 4
        // bytes at `col[r]` for each of those rows: `r + COLUMN_PAD < col.len()` (the caller's
        // guarantee, with `COLUMN_PAD == 3`) keeps them in bounds, and `r < col.len() <=
        // i32::MAX` keeps the signed 32-bit offsets right. `nl + nr == i` holds at the top of
        // each step (it advances both by 16 in all), so the 16-lane stores at `rows[nl..]` and
        // `scratch[nr..]` end at or before `i + 16 <= n`; the one into `rows` only overwrites
        // rows up to `i + 16`, all already loaded.
        unsafe {
            let idx = _mm512_loadu_si512(rp.add(i).cast());
            let codes = _mm512_and_si512(_mm512_i32gather_epi32::<1>(idx, col.as_ptr().cast()), low_byte);
            let mut m = _mm512_cmple_epu32_mask(codes, bins);
            if dl {
                m |= _mm512_cmpeq_epi32_mask(codes, missing);
            }
            _mm512_storeu_si512(rp.add(nl).cast(), _mm512_maskz_compress_epi32(m, idx));
            _mm512_storeu_si512(sp.add(nr).cast(), _mm512_maskz_compress_epi32(!m, idx));
            let k = m.count_ones() as usize;
            nl += k;
            nr += 16 - k;
        }
        i += 16;
    }
    (i, (nl, nr))
}

/// (left, right) histograms from the parent's and the smaller child's: sibling = parent − child,
/// computed in the parent's buffer.
fn sibling_hists(mut parent: Vec<Wide>, small: Vec<Wide>, small_is_left: bool) -> (Vec<Wide>, Vec<Wide>) {
    for (ph, sh) in parent.iter_mut().zip(&small) {
        *ph = ph.sub(*sh);
    }
    if small_is_left {
        (small, parent)
    } else {
        (parent, small)
    }
}

/// How many rows ahead the histogram kernel prefetches. Rows of a deep node are scattered over
/// the matrix, so each row's codes and gradient are a cache miss; out-of-order execution alone
/// overlaps only two or three rows (about 140 µops each).
const PREFETCH_ROWS: usize = 16;

/// The histogram kernel: for each row `r`, add its packed gradient to the slot of each of its
/// group codes, both read from its record (`recs` holds the records of rows `base..`).
///
/// # Safety
/// Every `r` in `rows` has `base <= r` and its record inside `recs`:
/// `(r - base + 1) * (nf + 8) <= recs.len()`, and the record's codes are those of a
/// [`Records`] (below `SLOTS_PER_FEATURE`). (The grower's row buffer only holds rows of the
/// data, checked when it is filled, and the records cover every row, or, in
/// [`Grower::root_pass`], the segment the rows lie in.)
#[inline(never)]
unsafe fn accumulate(hist: &mut [GroupHist], recs: &[u8], nf: usize, base: usize, rows: &[u32]) {
    debug_assert!(
        rows.iter()
            .all(|&r| (r as usize) >= base && (r as usize - base + 1) * (nf + 8) <= recs.len())
    );
    assert!(hist.len() >= nf, "one histogram per code group");
    if nf == 0 {
        return;
    }
    // One copy of the kernel per group count up to 32, where the loop over a row's groups
    // unrolls into one byte load and one add to memory per group, at constant offsets from the
    // histogram: about half the instructions of the loop over a run-time count.
    // SAFETY: the caller's guarantee, passed on; `hist` has `nf` histograms.
    widths!(nf, kernel(hist, recs, nf, base, rows));
}

/// Calls `$kernel::<NF>(args)` with `NF == $nf` for 1 to 32 code groups, `NF == 0` (a run-time
/// count) for more.
macro_rules! widths {
    ($nf:expr, $kernel:ident $args:tt) => {
        widths!(@ $nf, $kernel $args, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
    };
    (@ $nf:expr, $kernel:ident $args:tt, $($w:literal)*) => {
        match $nf {
            $($w => unsafe { $kernel::<$w> $args },)*
            _ => unsafe { $kernel::<0> $args },
        }
    };
}
use widths;

/// [`accumulate`] on contiguous rows whose packed gradients are new: `recs` holds the records
/// of `vals.len()` consecutive rows; each row's value is added to the histograms and stored in
/// its record.
#[inline(never)]
fn accumulate_fresh(hist: &mut [GroupHist], recs: &mut [u8], nf: usize, vals: &[i64]) {
    assert!(
        hist.len() >= nf && recs.len() == vals.len() * (nf + 8),
        "whole records, one histogram per group"
    );
    if nf == 0 {
        return;
    }
    // SAFETY: `hist` has `nf` histograms and `recs` the records of `vals`' rows (checked
    // above), whose codes are below `SLOTS_PER_FEATURE` (they are a `Records`' bytes).
    widths!(nf, kernel_fresh(hist, recs, nf, vals));
}

/// [`accumulate_fresh`] for `NF` code groups (`nf` when `NF == 0`).
///
/// # Safety
/// `hist.len() >= nf`, `recs.len() == vals.len() * (nf + 8)`, and every code in `recs` is
/// below `SLOTS_PER_FEATURE`.
#[inline(always)]
unsafe fn kernel_fresh<const NF: usize>(hist: &mut [GroupHist], recs: &mut [u8], nf: usize, vals: &[i64]) {
    let nf = if NF > 0 { NF } else { nf };
    let h = hist.as_mut_ptr().cast::<i64>();
    for (rec, &v) in recs.chunks_exact_mut(nf + 8).zip(vals) {
        // SAFETY: `rec` is a whole record (the caller's guarantee): `nf` codes below
        // `SLOTS_PER_FEATURE`, then 8 bytes for the value; `h` has `nf` histograms.
        unsafe {
            rec.as_mut_ptr().add(nf).cast::<i64>().write_unaligned(v);
            add_row::<NF>(h, rec.as_ptr(), nf, v);
        }
    }
}

/// [`accumulate`] for `nf` code groups per row, `NF` of them when `NF > 0` (known at compile
/// time), any number otherwise.
///
/// # Safety
/// As [`accumulate`]; also `hist.len() >= nf`.
#[inline(always)]
unsafe fn kernel<const NF: usize>(hist: &mut [GroupHist], recs: &[u8], nf: usize, base: usize, rows: &[u32]) {
    let nf = if NF > 0 { NF } else { nf };
    let stride = nf + 8;
    let h = hist.as_mut_ptr().cast::<i64>();
    /// Adds a record's packed gradient to the slots of its codes. (A function, not a closure: a
    /// closure called from several loops is not always inlined, and a call per row costs about
    /// a tenth of the kernel.)
    ///
    /// # Safety
    /// As [`add_row`], with the packed gradient in the 8 bytes after the codes.
    #[inline(always)]
    unsafe fn add_rec<const NF: usize>(h: *mut i64, rec: *const u8, nf: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { add_row::<NF>(h, rec, nf, rec.add(nf).cast::<i64>().read_unaligned()) }
    }
    // SAFETY (for every call below): `rec` points at a whole record (the caller's guarantee):
    // `nf` codes below `SLOTS_PER_FEATURE`, then the packed gradient; `h` points at `nf`
    // histograms of `GROUP_STRIDE` slots.
    let add_rec = |rec: *const u8| unsafe { add_rec::<NF>(h, rec, nf) };
    // A node's rows are ascending (the root is 0..n and partitioning is stable), so a range
    // whose ends are len - 1 apart is contiguous: stream it without the index and prefetches.
    if let (Some(&first), Some(&last)) = (rows.first(), rows.last())
        && first <= last
        && (last - first) as usize + 1 == rows.len()
    {
        let (a, b) = (first as usize - base, last as usize + 1 - base);
        for rec in recs[a * stride..b * stride].chunks_exact(stride) {
            add_rec(rec.as_ptr());
        }
        return;
    }
    // Unchecked, the kernel is about 5% faster: compares and branches per row come off its
    // loop. `r - base` is a record in `recs` (the caller's guarantee).
    let rec_of = |r: u32| recs.as_ptr().wrapping_add((r as usize).wrapping_sub(base) * stride);
    let split = rows.len().saturating_sub(PREFETCH_ROWS);
    for (&r, &ahead) in rows[..split].iter().zip(&rows[PREFETCH_ROWS.min(rows.len())..]) {
        let a = rec_of(ahead);
        prefetch(a);
        prefetch(a.wrapping_add(stride - 1));
        add_rec(rec_of(r));
    }
    rows[split..].iter().for_each(|&r| add_rec(rec_of(r)));
}

/// Adds `v` to the slot of each of a row's `nf` codes (`NF` of them when `NF > 0`).
///
/// # Safety
/// `row` points at `nf` codes, each below `SLOTS_PER_FEATURE`, and `h` at `nf` histograms of
/// `GROUP_STRIDE` slots.
#[inline(always)]
unsafe fn add_row<const NF: usize>(h: *mut i64, row: *const u8, nf: usize, v: i64) {
    let nf = if NF > 0 { NF } else { nf };
    for g in 0..nf {
        // SAFETY: slot `g * GROUP_STRIDE + code` is inside the `nf` histograms at `h`.
        unsafe {
            let slot = h.add(g * GROUP_STRIDE + usize::from(*row.add(g)));
            *slot = (*slot).wrapping_add(v);
        }
    }
}

/// Asks the CPU to start loading the cache line holding `p`.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is only a hint: it never faults and never reads memory observably,
    // whatever the address, so no pointer validity is required (callers build `p` with
    // `wrapping_add`, which is defined for any offset). Its `sse` target feature is part of the
    // x86_64 baseline, so the instruction always exists. `histogram_and_subtraction` checks
    // the kernel's histograms against a naive count.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binning::BinCuts;
    use crate::data::DenseMatrix;

    fn params() -> GrowParams {
        GrowParams {
            eta: 1.0,
            lambda: 0.0,
            alpha: 0.0,
            gamma: 0.0,
            min_child_weight: 0.0,
            max_delta_step: 0.0,
            max_depth: 6,
            max_leaves: 0,
            lossguide: false,
            colsample_bylevel: 1.0,
            colsample_bynode: 1.0,
        }
    }

    fn binned(rows: &[Vec<f32>]) -> BinnedMatrix {
        let m = DenseMatrix::from_rows(rows).unwrap();
        let cuts = BinCuts::compute(&m, None, 256);
        BinnedMatrix::new(&m, cuts)
    }

    const EXACT: Quant = Quant {
        g_scale: 1.0,
        h_scale: 1.0,
    };

    /// Integer gradients packed exactly (scale 1).
    fn pack_exact(grads: &[GradPair]) -> Vec<i64> {
        grads.iter().map(|g| Quant::pack(g.g as i32, g.h as u32)).collect()
    }

    /// Histogram of a node computed naively, one slot at a time.
    fn naive_hist(b: &BinnedMatrix, packed: &[i64], rows: &[u32]) -> Vec<Wide> {
        let mut h = vec![Wide::default(); b.hist_len()];
        for &r in rows {
            for f in 0..b.n_features() {
                let slot = b.offsets()[f] + b.code(r as usize, f) as usize;
                h[slot] = h[slot].add(Quant::unpack(packed[r as usize]));
            }
        }
        h
    }

    /// A grower over `rows` (in this buffer order) with quantized `grads`.
    fn setup<'a>(b: &'a BinnedMatrix, p: &'a GrowParams, rows: Vec<u32>, grads: &[GradPair]) -> Grower<'a> {
        let mut g = Grower::new(b, p);
        g.scratch = vec![0; rows.len()];
        g.rows = rows;
        g.pos = (0..b.n_rows()).map(|_| AtomicU32::new(u32::MAX)).collect();
        let mut packed = Vec::new();
        g.quant = Quant::quantize(grads, &mut packed);
        g.records.set_packed(&packed);
        g
    }

    fn split(feature: usize, bin: u8, default_left: bool) -> Split {
        Split {
            loss_chg: 1.0,
            feature,
            bin,
            default_left,
            left: Wide::default(),
            right: Wide::default(),
        }
    }

    /// Runs of at most `len` rows covering `start..end`.
    fn runs(start: usize, end: usize, len: usize) -> Vec<(usize, usize)> {
        (start..end).step_by(len).map(|s| (s, (s + len).min(end))).collect()
    }

    /// The kernel has one copy per group count up to 32 and a run-time loop above: each must
    /// count every (row, group) once, on contiguous, dense and sparse rows.
    #[test]
    fn kernel_widths_match_a_naive_count() {
        for nf in [1usize, 2, 7, 13, 28, 32, 33, 40] {
            // Distinct values per feature, too many to share a byte: one group per feature.
            let rows: Vec<Vec<f32>> = (0..3000)
                .map(|i| (0..nf).map(|f| ((i * 7 + f * 37) % 300) as f32).collect())
                .collect();
            let b = binned(&rows);
            assert_eq!(b.n_groups(), nf);
            let grads: Vec<GradPair> = (0..3000)
                .map(|i| GradPair {
                    g: (i % 17) as f32 - 8.0,
                    h: (i % 5) as f32,
                })
                .collect();
            let packed = pack_exact(&grads);
            let mut recs = Records::new(&b);
            recs.set_packed(&packed);
            // Dense rows, sparse ones and a range (streamed without the index).
            let dense: Vec<u32> = (0..3000).filter(|r| r % 3 != 1).collect();
            let sparse: Vec<u32> = (0..3000).filter(|r| r % 7 == 2).collect();
            let contiguous: Vec<u32> = (100..2900).collect();
            for rows in [&dense, &sparse, &contiguous] {
                let mut h = vec![[0i64; GROUP_STRIDE]; nf];
                // SAFETY: rows of the data; `recs` has every row's record.
                unsafe { accumulate(&mut h, &recs.bytes, nf, 0, rows) };
                let p = params();
                let g = Grower::new(&b, &p);
                let mut out = vec![Wide::default(); b.hist_len()];
                g.unpack_into(&mut out, h);
                assert_eq!(out, naive_hist(&b, &packed, rows), "{nf} groups");
            }
            // The root pass's kernel stores each row's new value in its record as it adds it.
            let mut fresh = Records::new(&b);
            let (lo, hi) = (100, 2900);
            let mut h = vec![[0i64; GROUP_STRIDE]; nf];
            let stride = fresh.stride;
            accumulate_fresh(&mut h, &mut fresh.bytes[lo * stride..hi * stride], nf, &packed[lo..hi]);
            let p = params();
            let mut out = vec![Wide::default(); b.hist_len()];
            Grower::new(&b, &p).unpack_into(&mut out, h);
            let range: Vec<u32> = (lo as u32..hi as u32).collect();
            assert_eq!(out, naive_hist(&b, &packed, &range), "{nf} groups, fresh values");
            assert_eq!(fresh.all_packed()[lo..hi], packed[lo..hi]);
            assert!(fresh.all_packed()[..lo].iter().all(|&v| v == 0));
            let codes =
                |r: &Records| -> Vec<u8> { r.bytes.chunks_exact(stride).flat_map(|c| c[..nf].to_vec()).collect() };
            assert_eq!(codes(&fresh), codes(&recs), "codes untouched");
            assert_eq!(codes(&recs), b.group_codes());
        }
    }

    #[test]
    fn histogram_and_subtraction() {
        let rows: Vec<Vec<f32>> = (0..100_000)
            .map(|i| {
                vec![
                    (i % 7) as f32,
                    ((i * 31) % 13) as f32,
                    if i % 5 == 0 { f32::NAN } else { (i % 3) as f32 },
                ]
            })
            .collect();
        let b = binned(&rows);
        // Features 0 and 1 (7 and 13 codes) share a byte; 2 (3 values and missing) can't join.
        assert_eq!(b.n_groups(), 2);
        let grads: Vec<GradPair> = (0..100_000)
            .map(|i| GradPair {
                g: ((i % 11) as f32 - 5.0) / 4.0,
                h: 0.25 + (i % 3) as f32,
            })
            .collect();
        let p = params();
        let mut g = setup(&b, &p, (0..100_000).collect(), &grads);
        let segs = runs(0, 100_000, SEG);
        let hist_job = |segs: &[(usize, usize)]| Job {
            kind: Kind::Hist,
            segs: segs.to_vec(),
        };
        let mut parts = g.run(&[hist_job(&segs)]);
        let all = g.reduce(&mut parts);
        assert_eq!(all, naive_hist(&b, &g.records.all_packed(), &g.rows));
        // Partition on feature 0 at bin 2 building the left histogram; parent - left must
        // equal the right child's.
        let job = Job {
            kind: Kind::Split {
                split: split(0, 2, false),
                small_left: true,
            },
            segs: segs.clone(),
        };
        let mut parts = g.run(std::slice::from_ref(&job));
        let (mut left, mut right) = (Node::leaf(1, 1, Wide::default()), Node::leaf(2, 1, Wide::default()));
        Grower::child_rows(&job, &parts, &mut left, &mut right);
        let gather =
            |segs: &[(usize, usize)]| -> Vec<u32> { segs.iter().flat_map(|&(s, e)| g.rows[s..e].to_vec()).collect() };
        let (lrows, rrows) = (gather(&left.segs), gather(&right.segs));
        assert_eq!(lrows.len(), left.n_rows);
        assert_eq!(lrows.len() + rrows.len(), 100_000);
        assert!(lrows.iter().all(|&r| b.code(r as usize, 0) <= 2));
        assert!(rrows.iter().all(|&r| b.code(r as usize, 0) > 2));
        assert!(lrows.windows(2).all(|w| w[0] < w[1]), "partition is stable");
        assert!(rrows.windows(2).all(|w| w[0] < w[1]), "partition is stable");
        let small = g.reduce(&mut parts);
        assert_eq!(small, naive_hist(&b, &g.records.all_packed(), &lrows));
        let (l2, r2) = sibling_hists(all.clone(), small.clone(), true);
        assert_eq!(l2, small);
        assert_eq!(r2, naive_hist(&b, &g.records.all_packed(), &rrows));
        // The children's runs feed the next pass: a histogram of the right child.
        let mut parts = g.run(&[hist_job(&right.segs)]);
        assert_eq!(g.reduce(&mut parts), r2);
        // Decoded sums track the exact gradient sums closely.
        let exact = grads.iter().fold(Entry::default(), |mut a, gp| {
            a.g += f64::from(gp.g);
            a.h += f64::from(gp.h);
            a
        });
        let total = g.quant.decode(g.sum_packed(0, 100_000));
        assert!(
            (total.g - exact.g).abs() < 1e-3 * 100_000f64.sqrt(),
            "{total:?} {exact:?}"
        );
        assert!(
            (total.h - exact.h).abs() < 1e-3 * 100_000f64.sqrt(),
            "{total:?} {exact:?}"
        );
    }

    #[test]
    fn final_and_leaf_jobs_sum_exactly_and_record_leaves() {
        let rows: Vec<Vec<f32>> = (0..70_000)
            .map(|i| vec![if i % 9 == 0 { f32::NAN } else { (i % 5) as f32 }])
            .collect();
        let b = binned(&rows);
        let grads: Vec<GradPair> = (0..70_000)
            .map(|i| GradPair {
                g: ((i * 7) % 13) as f32 - 6.0,
                h: 1.0 + (i % 2) as f32,
            })
            .collect();
        let p = params();
        let g = setup(&b, &p, (0..70_000).collect(), &grads);
        // Missing goes left: codes <= 1 or missing.
        let jobs = [
            Job {
                kind: Kind::Final {
                    split: split(0, 1, true),
                    slots: [7, 8],
                },
                segs: runs(0, 50_000, 3_000),
            },
            Job {
                kind: Kind::Leaf { slot: 9 },
                segs: runs(50_000, 70_000, 7_000),
            },
        ];
        let sums = g.settle_all(&jobs, &grads);
        let miss = g.missing_codes()[0];
        let mut want = [Entry::default(); 3];
        for (r, gp) in grads.iter().enumerate() {
            let c = b.code(r, 0);
            let (slot, k) = if r >= 50_000 {
                (9, 2)
            } else if c <= 1 || c == miss {
                (7, 0)
            } else {
                (8, 1)
            };
            assert_eq!(g.leaf_of(r), slot, "row {r}");
            want[k].add(Entry {
                g: f64::from(gp.g),
                h: f64::from(gp.h),
            });
        }
        // Integer-valued gradients: every order of f64 adds is exact.
        assert_eq!(sums, vec![(7, want[0]), (8, want[1]), (9, want[2])]);
    }

    #[test]
    fn multi_node_partition_matches_naive_stable_partition() {
        let rows: Vec<Vec<f32>> = (0..150_000)
            .map(|i| vec![((i * 7919) % 101) as f32, (i % 3) as f32])
            .collect();
        let b = binned(&rows);
        let p = params();
        let grads: Vec<GradPair> = (0..150_000)
            .map(|i| GradPair {
                g: (i % 5) as f32,
                h: 1.0,
            })
            .collect();
        let mut g = setup(&b, &p, (0..150_000).rev().collect(), &grads);
        // Three nodes (the middle one left alone) with runs of several sizes, more rows than
        // one task takes, and empty sides.
        let jobs = [
            (runs(0, 70_000, 5_000), split(0, 50, false), false),
            (runs(80_000, 120_000, 40_000), split(1, 5, false), true),
            (runs(120_000, 150_000, 1_000), split(0, 0, true), true),
        ];
        let jobs: Vec<Job> = jobs
            .into_iter()
            .map(|(segs, split, small_left)| Job {
                kind: Kind::Split { split, small_left },
                segs,
            })
            .collect();
        let before = g.rows.clone();
        let per_job = g.run_then(&jobs, |_, _, parts| parts);
        for (job, mut mine) in jobs.iter().zip(per_job) {
            let Kind::Split { split: sp, small_left } = job.kind else {
                unreachable!()
            };
            let goes_left = |r: &u32| b.code(*r as usize, sp.feature) <= sp.bin;
            let (mut left, mut right) = (Node::leaf(1, 1, Wide::default()), Node::leaf(2, 1, Wide::default()));
            Grower::child_rows(job, &mine, &mut left, &mut right);
            for &(s, e) in &job.segs {
                let want: Vec<u32> = before[s..e]
                    .iter()
                    .filter(|r| goes_left(r))
                    .chain(before[s..e].iter().filter(|r| !goes_left(r)))
                    .copied()
                    .collect();
                assert_eq!(&g.rows[s..e], &want[..]);
            }
            let gather = |segs: &[(usize, usize)]| -> Vec<u32> {
                segs.iter().flat_map(|&(s, e)| g.rows[s..e].to_vec()).collect()
            };
            let (lrows, rrows) = (gather(&left.segs), gather(&right.segs));
            assert!(lrows.iter().all(goes_left) && !rrows.iter().any(goes_left));
            assert_eq!(
                lrows.len() + rrows.len(),
                job.segs.iter().map(|s| s.1 - s.0).sum::<usize>()
            );
            let small = if small_left { &lrows } else { &rrows };
            assert_eq!(g.reduce(&mut mine), naive_hist(&b, &g.records.all_packed(), small));
        }
        assert_eq!(&g.rows[70_000..80_000], &before[70_000..80_000]);
    }

    #[test]
    fn floor_small_is_floor() {
        let mut ys: Vec<f32> = (1..400_000).map(|i| i as f32 / 2.0).collect();
        ys.extend((0..100_000).map(|i| 0.5 + i as f32 * 1.2345));
        ys.extend([0.5, 0.75, 1.0, 1.5, 131_071.5, 131_071.0, 4_194_303.5]);
        for y in ys {
            assert_eq!(floor_small(y), y.floor() as i32, "{y}");
        }
        // The quantizer keeps every input, NaN and infinities included, in range.
        let q = Quant::from_max(2.0, 1.0);
        let pack = q.packer();
        let lv = LEVELS as i64;
        for (g, h, want_g, want_h) in [
            (2.0, 1.0, lv, lv),
            (-2.0, 0.0, -lv, 0),
            (f32::INFINITY, f32::INFINITY, lv, lv),
            (f32::NEG_INFINITY, -1.0, -lv, 0),
            (f32::NAN, f32::NAN, -lv, 0),
            (1.0, 0.5, (lv + 1) / 2, (lv + 1) / 2),
        ] {
            let w = Quant::unpack(pack(GradPair { g, h }));
            assert_eq!((w.g, w.h), (want_g, want_h), "{g} {h}");
        }
    }

    #[test]
    fn packing_roundtrips_negative_sums() {
        let vals = [(-5, 3u32), (7, 0), (-2_000_000, 4_000_000), (1, 1)];
        let mut s = 0i64;
        let (mut gs, mut hs) = (0i64, 0u64);
        for (g, h) in vals {
            s = s.wrapping_add(Quant::pack(g, h));
            gs += i64::from(g);
            hs += u64::from(h);
        }
        let e = EXACT.decode(Quant::unpack(s));
        assert_eq!((e.g, e.h), (gs as f64, hs as f64));
        let e = EXACT.decode(Quant::unpack(s).sub(Quant::unpack(Quant::pack(-5, 3))));
        assert_eq!((e.g, e.h), ((gs + 5) as f64, (hs - 3) as f64));
    }

    #[test]
    fn split_learns_missing_direction() {
        // y depends on x<2; missing rows behave like the low group, so they must default left.
        let mut rows = Vec::new();
        let mut grads = Vec::new();
        for i in 0..400 {
            let (x, g) = match i % 4 {
                0 => (1.0, -1.0),
                1 => (f32::NAN, -1.0),
                2 => (3.0, 1.0),
                _ => (4.0, 1.0),
            };
            rows.push(vec![x]);
            grads.push(GradPair { g, h: 1.0 });
        }
        let b = binned(&rows);
        let p = params();
        let all: Vec<u32> = (0..400).collect();
        let packed = pack_exact(&grads);
        let hist = naive_hist(&b, &packed, &all);
        let sum = Wide { g: 0, h: 400 };
        let s = best_split(&b, &p, &EXACT, &hist, sum, &[0]).unwrap();
        assert!(s.default_left);
        assert_eq!(b.cuts().threshold(0, s.bin), 3.0);
        // gain = GL²/HL + GR²/HR - G²/H = 200²/200 + 200²/200 - 0
        assert!((s.loss_chg - 400.0).abs() < 1e-9);
        // Flip: missing behaves like the high group → default right.
        for (i, gp) in grads.iter_mut().enumerate() {
            if i % 4 == 1 {
                gp.g = 1.0;
            }
        }
        let packed = pack_exact(&grads);
        let hist = naive_hist(&b, &packed, &all);
        let sum = Wide { g: 200, h: 400 };
        let s = best_split(&b, &p, &EXACT, &hist, sum, &[0]).unwrap();
        assert!(!s.default_left);
        assert_eq!(b.cuts().threshold(0, s.bin), 3.0);
    }

    #[test]
    fn a_feature_with_one_present_value_splits_present_from_missing() {
        // A one-hot column as libsvm or sparse RecordIO gives it: 1 where set, missing elsewhere.
        let rows: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![if i % 2 == 0 { 1.0 } else { f32::NAN }])
            .collect();
        let grads: Vec<GradPair> = (0..200)
            .map(|i| GradPair {
                g: if i % 2 == 0 { -1.0 } else { 1.0 },
                h: 1.0,
            })
            .collect();
        let b = binned(&rows);
        assert_eq!(b.cuts().n_value_bins(0), 1);
        let all: Vec<u32> = (0..200).collect();
        let packed = pack_exact(&grads);
        let hist = naive_hist(&b, &packed, &all);
        let s = best_split(&b, &params(), &EXACT, &hist, Wide { g: 0, h: 200 }, &[0]).unwrap();
        // Present left, missing right: 100²/100 + 100²/100.
        assert!(!s.default_left);
        assert!((s.loss_chg - 200.0).abs() < 1e-9);
        assert_eq!(b.cuts().threshold(0, s.bin), f32::MAX);
    }

    /// Exhaustive split search on raw values, written without histograms.
    fn naive_best_gain(rows: &[Vec<f32>], grads: &[GradPair], p: &GrowParams) -> f64 {
        let (gt, ht): (f64, f64) = grads
            .iter()
            .fold((0.0, 0.0), |a, g| (a.0 + f64::from(g.g), a.1 + f64::from(g.h)));
        let mut best = f64::NEG_INFINITY;
        for f in 0..rows[0].len() {
            let mut vals: Vec<f32> = rows.iter().map(|r| r[f]).filter(|v| !v.is_nan()).collect();
            vals.sort_by(f32::total_cmp);
            vals.dedup();
            // Present values against missing ones: a threshold above them all.
            let missing = rows.iter().any(|r| r[f].is_nan());
            let above = missing.then_some(f32::INFINITY);
            for &t in vals.iter().skip(1).chain(above.iter()) {
                for miss_left in [false, true] {
                    let (mut gl, mut hl) = (0.0, 0.0);
                    for (r, g) in rows.iter().zip(grads) {
                        let left = if r[f].is_nan() { miss_left } else { r[f] < t };
                        if left {
                            gl += f64::from(g.g);
                            hl += f64::from(g.h);
                        }
                    }
                    let (gr, hr) = (gt - gl, ht - hl);
                    if hl < p.min_child_weight || hr < p.min_child_weight {
                        continue;
                    }
                    best = best.max(p.gain(gl, hl) + p.gain(gr, hr) - p.gain(gt, ht));
                }
            }
        }
        best
    }

    proptest::proptest! {
        /// The unchecked partition loops (AVX-512, when the CPU has it, and one row at a time)
        /// against a naive stable partition.
        #[test]
        fn partition_run_is_a_stable_partition(
            col in proptest::collection::vec(0u8..6, 1..300),
            pick in proptest::collection::vec(proptest::bool::ANY, 300),
            bin in 0u8..6, miss in 0u8..6, dl in proptest::bool::ANY,
        ) {
            let mut rows: Vec<u32> = (0..col.len() as u32).filter(|&r| pick[r as usize]).collect();
            let goes_left = |r: &u32| {
                let c = col[*r as usize];
                c <= bin || (dl && c == miss)
            };
            let want: Vec<u32> = rows.iter().filter(|r| goes_left(r)).chain(rows.iter().filter(|r| !goes_left(r))).copied().collect();
            let want_nl = want.iter().filter(|r| goes_left(r)).count();
            let padded: Vec<u8> = col.iter().copied().chain([7; COLUMN_PAD]).collect();
            let mut scratch = vec![0; rows.len() + 3];
            let mut scalar = rows.clone();
            // SAFETY: `rows` are indices of `col`, which `padded` extends by `COLUMN_PAD` bytes.
            let nl = unsafe { partition_run(&mut rows, &mut scratch, &padded, bin, miss, dl) };
            proptest::prop_assert_eq!(&rows, &want);
            proptest::prop_assert_eq!(nl, want_nl);
            // SAFETY: as above.
            let nl = unsafe { partition_with(&mut scalar, &mut scratch, &padded, bin, miss, dl, false) };
            proptest::prop_assert_eq!(&scalar, &want);
            proptest::prop_assert_eq!(nl, want_nl);
        }
    }

    proptest::proptest! {
        #[test]
        fn best_split_matches_exhaustive_search(
            data in proptest::collection::vec((proptest::option::of(0u8..20), 0u8..20, -5i8..5, 1u8..4), 4..80),
            lambda in 0.0f64..2.0, alpha in proptest::prop_oneof![proptest::strategy::Just(0.0), 0.0f64..1.0],
            mds in proptest::sample::select(vec![0.0, 0.5]),
        ) {
            let rows: Vec<Vec<f32>> = data.iter().map(|d| vec![d.0.map_or(f32::NAN, f32::from), f32::from(d.1)]).collect();
            let grads: Vec<GradPair> = data.iter().map(|d| GradPair { g: f32::from(d.2), h: f32::from(d.3) }).collect();
            let b = binned(&rows);
            let p = GrowParams { lambda, alpha, max_delta_step: mds, min_child_weight: 1.0, ..params() };
            let all: Vec<u32> = (0..rows.len() as u32).collect();
            let packed = pack_exact(&grads);
            let hist = naive_hist(&b, &packed, &all);
            let sum = Quant::unpack(packed.iter().sum::<i64>());
            let want = naive_best_gain(&rows, &grads, &p);
            match best_split(&b, &p, &EXACT, &hist, sum, &[0, 1]) {
                Some(s) => proptest::prop_assert!((s.loss_chg - want).abs() < 1e-9, "{} vs {}", s.loss_chg, want),
                None => proptest::prop_assert!(want == f64::NEG_INFINITY),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_scan_is_the_general_scan(
            data in proptest::collection::vec((0u8..30, 0u8..4, -50i16..50, 0u8..20), 2..300),
            lambda in proptest::prop_oneof![proptest::strategy::Just(0.0), 0.0f64..3.0],
            mcw in proptest::sample::select(vec![0.0, 0.5, 1.0, 3.0]),
            scales in (1e-4f64..1.0, 1e-4f64..1.0),
        ) {
            let rows: Vec<Vec<f32>> = data.iter().map(|d| vec![f32::from(d.0), f32::from(d.1)]).collect();
            let grads: Vec<GradPair> = data.iter().map(|d| GradPair { g: f32::from(d.2), h: f32::from(d.3) }).collect();
            let b = binned(&rows);
            let p = GrowParams { lambda, min_child_weight: mcw, ..params() };
            let q = Quant { g_scale: scales.0, h_scale: scales.1 };
            let all: Vec<u32> = (0..rows.len() as u32).collect();
            let packed = pack_exact(&grads);
            let hist = naive_hist(&b, &packed, &all);
            let sum = Quant::unpack(packed.iter().sum::<i64>());
            let plain = best_split_with(&b, &p, &q, &hist, sum, &[0, 1], true);
            let general = best_split_with(&b, &p, &q, &hist, sum, &[0, 1], false);
            proptest::prop_assert_eq!(plain, general);
        }
    }

    #[test]
    fn gain_and_weight_formulas() {
        let p = GrowParams {
            lambda: 1.0,
            alpha: 0.5,
            ..params()
        };
        // T(G) = G - alpha for G > alpha
        assert!((p.weight(3.0, 4.0) - (-(2.5) / 5.0)).abs() < 1e-12);
        assert!((p.gain(3.0, 4.0) - 2.5 * 2.5 / 5.0).abs() < 1e-12);
        assert_eq!(p.weight(0.3, 4.0), 0.0);
        let p = GrowParams {
            lambda: 1.0,
            max_delta_step: 0.2,
            ..params()
        };
        assert!((p.weight(3.0, 4.0) + 0.2).abs() < 1e-12);
        // gain at the clipped weight: -(2 G w + (H+λ) w²)
        assert!((p.gain(3.0, 4.0) - (-(2.0 * 3.0 * -0.2 + 5.0 * 0.04))).abs() < 1e-12);
        let p = GrowParams {
            min_child_weight: 5.0,
            ..params()
        };
        assert_eq!(p.weight(3.0, 4.0), 0.0);
    }

    #[test]
    fn depthwise_and_lossguide_respect_limits() {
        let rows: Vec<Vec<f32>> = (0..2000).map(|i| vec![(i % 97) as f32, (i % 13) as f32]).collect();
        let b = binned(&rows);
        let grads: Vec<GradPair> = (0..2000)
            .map(|i| GradPair {
                g: (((i % 97) * 7 + (i % 13) * 3) % 11) as f32 - 5.0,
                h: 1.0,
            })
            .collect();
        let mut p = params();
        p.max_depth = 3;
        let feats = [0, 1];
        let mut g = Grower::new(&b, &p);
        let t = g.grow(&grads, None, None, &feats, &mut Rng::new(0)).unwrap();
        assert!(t.tree.max_depth() <= 3);
        // Every row's recorded leaf is the one the tree routes it to.
        for r in 0..2000 {
            assert_eq!(t.tree.leaf_for_codes(|f| b.code(r, f), g.missing_codes()), g.leaf_of(r));
        }
        let mut p2 = params();
        p2.lossguide = true;
        p2.max_depth = 0;
        p2.max_leaves = 5;
        let mut g = Grower::new(&b, &p2);
        let t = g.grow(&grads, None, None, &feats, &mut Rng::new(0)).unwrap();
        assert_eq!(t.tree.n_leaves(), 5);
        for r in 0..2000 {
            assert_eq!(t.tree.leaf_for_codes(|f| b.code(r, f), g.missing_codes()), g.leaf_of(r));
        }
    }
    #[test]
    fn asynchronous_growth_is_bit_identical_to_level_by_level() {
        // Several root segments and tasks per node, missing values, and limits that settle some
        // nodes early (final jobs and leaves above the last level).
        let n = 70_000;
        let rows: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                vec![
                    ((i * 7919) % 211) as f32,
                    (i % 13) as f32,
                    if i % 17 == 0 { f32::NAN } else { ((i * 31) % 5) as f32 },
                    ((i * 104_729) % 1000) as f32 / 10.0,
                ]
            })
            .collect();
        let b = binned(&rows);
        let mut rng = Rng::new(3);
        let grads: Vec<GradPair> = (0..n)
            .map(|i| GradPair {
                g: ((i % 13) as f32 - 6.0) * 0.3 + ((i * 7919) % 211) as f32 / 100.0 + rng.next_f64() as f32 - 0.5,
                h: 0.1 + rng.next_f64() as f32,
            })
            .collect();
        let every_third: Vec<u32> = (0..n as u32).step_by(3).collect();
        let feats = [0, 1, 2, 3];
        for (depth, mcw, gamma) in [(6, 1.0, 0.0), (4, 3000.0, 0.0), (8, 1.0, 40.0), (1, 1.0, 0.0)] {
            let mut p = params();
            (p.max_depth, p.min_child_weight, p.gamma) = (depth, mcw, gamma);
            for active in [None, Some(&every_third[..])] {
                let mut a = Grower::new(&b, &p);
                let mut s = Grower::new(&b, &p);
                assert!(a.asynchronous);
                s.asynchronous = false;
                let ta = a.grow(&grads, None, active, &feats, &mut Rng::new(0)).unwrap();
                let ts = s.grow(&grads, None, active, &feats, &mut Rng::new(0)).unwrap();
                assert!(ts.tree.n_nodes() > 1, "depth {depth}: no split");
                assert_eq!(ta.tree, ts.tree, "depth {depth}, min_child_weight {mcw}, gamma {gamma}");
                let grown: Vec<usize> =
                    active.map_or_else(|| (0..n).collect(), |a| a.iter().map(|&r| r as usize).collect());
                // Both growers' slot tables give each row its leaf's value.
                let (va, vs) = (a.slot_values(&ta.tree), s.slot_values(&ts.tree));
                for r in grown {
                    assert_eq!(a.leaf_of(r), s.leaf_of(r), "row {r}");
                    let leaf = ta.tree.cond[a.leaf_of(r)];
                    assert!(ta.tree.is_leaf(a.leaf_of(r)));
                    assert_eq!(va[a.leaf_slots()[r] as usize].to_bits(), leaf.to_bits(), "row {r}");
                    assert_eq!(vs[s.leaf_slots()[r] as usize].to_bits(), leaf.to_bits(), "row {r}");
                }
            }
        }
    }
}
