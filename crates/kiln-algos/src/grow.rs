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
//! Work is cut into fixed-size row pieces, independent of the thread count, and partial results
//! are combined in piece order, so a tree is bit-identical for a given seed whatever the number
//! of threads.

use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::binning::{BinnedMatrix, SLOTS_PER_FEATURE};
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

/// Exact integer sums of quantized gradients and hessians.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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

    /// Quantizes every row's gradient pair into `out`.
    pub fn quantize(grads: &[GradPair], out: &mut Vec<i64>) -> Quant {
        let levels = LEVELS as f32;
        let (gmax, hmax) = grads
            .par_chunks(PIECE)
            .map(|c| {
                c.iter()
                    .fold((0f32, 0f32), |(a, b), gp| (a.max(gp.g.abs()), b.max(gp.h)))
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        let g_scale = if gmax > 0.0 {
            f64::from(gmax) / LEVELS as f64
        } else {
            1.0
        };
        let h_scale = if hmax > 0.0 {
            f64::from(hmax) / LEVELS as f64
        } else {
            1.0
        };
        // Round to nearest: with 65535 levels the error is below 1e-5 of the largest gradient,
        // far under what moves a split, and the loop stays branch-free and vectorizable
        // (`round()` would be a libm call on baseline x86_64; truncating a value shifted to be
        // positive rounds the same way).
        const SHIFT: f32 = 65_536.5;
        let (inv_g, inv_h) = ((1.0 / g_scale) as f32, (1.0 / h_scale) as f32);
        out.resize(grads.len(), 0);
        out.par_chunks_mut(PIECE)
            .zip(grads.par_chunks(PIECE))
            .for_each(|(o, gs)| {
                for (o, gp) in o.iter_mut().zip(gs) {
                    let g = ((gp.g * inv_g).clamp(-levels, levels) + SHIFT) as i32 - 65_536;
                    let h = ((gp.h * inv_h).clamp(0.0, levels) + 0.5) as i32;
                    *o = Quant::pack(g, h as u32);
                }
            });
        Quant { g_scale, h_scale }
    }
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
    let total = q.decode(sum);
    let parent_gain = p.gain(total.g, total.h);
    let mut best: Option<Split> = None;
    let cuts = data.cuts();
    let mcw = p.min_child_weight;
    for &f in features {
        let nb = cuts.n_value_bins(f);
        if nb < 2 {
            continue;
        }
        let off = data.offsets()[f];
        let h = &hist[off..off + nb + 1];
        let miss = h[nb];
        let try_missing_left = data.has_missing(f) && miss.h > 0;
        let mut acc = Wide::default();
        for (b, &e) in h[..nb - 1].iter().enumerate() {
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
            if try_missing_left {
                consider(acc.add(miss), true);
            }
        }
    }
    best
}

/// A node waiting to be split.
struct Node {
    nid: usize,
    depth: usize,
    start: usize,
    end: usize,
    sum: Wide,
    hist: Option<Vec<Wide>>,
    split: Option<Split>,
}

/// Grows trees for one data set; keeps its buffers between trees.
pub struct Grower<'a> {
    data: &'a BinnedMatrix,
    p: &'a GrowParams,
    rows: Vec<u32>,
    packed: Vec<i64>,
    quant: Quant,
    missing_code: Vec<u8>,
    scratch: Vec<u32>,
}

/// A grown tree and, for every leaf, the range of the row buffer holding its rows.
pub struct Grown {
    /// The tree (leaf values already shrunk by eta).
    pub tree: RegTree,
    /// (leaf id, start, end) into [`Grower::rows`].
    pub leaves: Vec<(usize, usize, usize)>,
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
            packed: Vec::new(),
            quant: Quant {
                g_scale: 1.0,
                h_scale: 1.0,
            },
            missing_code,
            scratch: Vec::new(),
        }
    }

    /// The row buffer; leaf ranges of the last [`Grown`] index into it.
    pub fn rows(&self) -> &[u32] {
        &self.rows
    }

    /// Missing code per feature.
    pub fn missing_codes(&self) -> &[u8] {
        &self.missing_code
    }

    /// Grows one tree on the rows in `active` (None = all rows) using `features` (by-tree
    /// column sample, ascending).
    pub fn grow(&mut self, grads: &[GradPair], active: Option<&[u32]>, features: &[usize], rng: &mut Rng) -> Grown {
        self.rows.clear();
        match active {
            Some(a) => self.rows.extend_from_slice(a),
            None => self.rows.extend(0..self.data.n_rows() as u32),
        }
        let n = self.rows.len();
        self.quant = time(Phase::Quantize, || Quant::quantize(grads, &mut self.packed));
        let sum = self.sum_packed(0, n);
        let p = self.p;
        let mut tree = RegTree::new_root(0.0, 0.0);
        let mut ranges = vec![(0usize, n)];
        let root = Node {
            nid: 0,
            depth: 0,
            start: 0,
            end: n,
            sum,
            hist: None,
            split: None,
        };
        if self.can_split(&root) {
            if p.lossguide {
                self.grow_lossguide(root, features, rng, &mut tree, &mut ranges);
            } else {
                self.grow_depthwise(root, features, rng, &mut tree, &mut ranges);
            }
        }
        let leaves: Vec<(usize, usize, usize)> = (0..tree.n_nodes())
            .filter(|&i| tree.is_leaf(i))
            .map(|i| (i, ranges[i].0, ranges[i].1))
            .collect();
        time(Phase::Leaves, || self.finalize(&mut tree, &leaves, grads));
        Grown { tree, leaves }
    }

    /// Sets leaf values, weights and covers from exact gradient sums of each leaf's rows.
    fn finalize(&self, tree: &mut RegTree, leaves: &[(usize, usize, usize)], grads: &[GradPair]) {
        let p = self.p;
        let rows = &self.rows;
        let sums: Vec<Entry> = leaves
            .par_iter()
            .map(|&(_, s, e)| {
                // Two accumulators halve the chain of dependent f64 adds.
                let (mut a, mut b) = (Entry::default(), Entry::default());
                let leaf_rows = &rows[s..e];
                let mut pairs = leaf_rows.chunks_exact(2);
                for pair in &mut pairs {
                    let (x, y) = (grads[pair[0] as usize], grads[pair[1] as usize]);
                    a.g += f64::from(x.g);
                    a.h += f64::from(x.h);
                    b.g += f64::from(y.g);
                    b.h += f64::from(y.h);
                }
                for &r in pairs.remainder() {
                    let x = grads[r as usize];
                    a.g += f64::from(x.g);
                    a.h += f64::from(x.h);
                }
                a.add(b);
                a
            })
            .collect();
        let mut node_sum = vec![Entry::default(); tree.n_nodes()];
        for (&(leaf, _, _), s) in leaves.iter().zip(&sums) {
            node_sum[leaf] = *s;
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

    fn can_split(&self, n: &Node) -> bool {
        (self.p.max_depth == 0 || n.depth < self.p.max_depth)
            && n.end - n.start >= 2
            && self.quant.decode(n.sum).h >= 2.0 * self.p.min_child_weight
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

    fn children(node: &Node, mid: usize, l: usize, r: usize, s: &Split) -> (Node, Node) {
        let left = Node {
            nid: l,
            depth: node.depth + 1,
            start: node.start,
            end: mid,
            sum: s.left,
            hist: None,
            split: None,
        };
        let right = Node {
            nid: r,
            depth: node.depth + 1,
            start: mid,
            end: node.end,
            sum: s.right,
            hist: None,
            split: None,
        };
        (left, right)
    }

    fn grow_depthwise(
        &mut self,
        mut root: Node,
        features: &[usize],
        rng: &mut Rng,
        tree: &mut RegTree,
        ranges: &mut Vec<(usize, usize)>,
    ) {
        let p = self.p;
        root.hist = self.build_hists(&[(0, root.end)]).pop();
        let mut level = vec![root];
        let mut n_leaves = 1;
        while !level.is_empty() {
            let level_feats = self.sample(features, p.colsample_bylevel, rng);
            let node_feats: Vec<Vec<usize>> = level
                .iter()
                .map(|_| self.sample(&level_feats, p.colsample_bynode, rng))
                .collect();
            let (data, q) = (self.data, self.quant);
            time(Phase::Splits, || {
                level.par_iter_mut().zip(node_feats.par_iter()).for_each(|(n, feats)| {
                    if let Some(h) = &n.hist {
                        n.split = best_split(data, p, &q, h, n.sum, feats);
                    }
                })
            });
            // Expand the best splits first so a leaf limit keeps the most useful ones.
            let gain = |i: usize| level[i].split.map_or(0.0, |s| s.loss_chg);
            let mut order: Vec<usize> = (0..level.len())
                .filter(|&i| level[i].split.is_some_and(|s| self.valid(&s)))
                .collect();
            order.sort_by(|&a, &b| gain(b).total_cmp(&gain(a)).then(a.cmp(&b)));
            if p.max_leaves > 0 {
                order.truncate(p.max_leaves.saturating_sub(n_leaves));
            }
            order.sort_unstable();
            if order.is_empty() {
                break;
            }
            let jobs: Vec<(usize, usize, Split)> = order
                .iter()
                .filter_map(|&i| level[i].split.map(|s| (level[i].start, level[i].end, s)))
                .collect();
            let mids = self.partition(&jobs);
            let mut next = Vec::new();
            let mut to_build = Vec::new();
            for (&i, mid) in order.iter().zip(mids) {
                let node = &mut level[i];
                let Some(s) = node.split else { continue };
                let (l, r) = self.apply_split(tree, node, &s);
                n_leaves += 1;
                ranges.resize(tree.n_nodes(), (0, 0));
                ranges[l] = (node.start, mid);
                ranges[r] = (mid, node.end);
                let (left, right) = Self::children(node, mid, l, r, &s);
                if self.can_split(&left) || self.can_split(&right) {
                    let small_is_left = mid - node.start <= node.end - mid;
                    let small = if small_is_left {
                        (left.start, left.end)
                    } else {
                        (right.start, right.end)
                    };
                    to_build.push((next.len(), small_is_left, small, node.hist.take()));
                }
                next.push(left);
                next.push(right);
            }
            let small_ranges: Vec<(usize, usize)> = to_build.iter().map(|t| t.2).collect();
            let built = self.build_hists(&small_ranges);
            for ((pos, small_is_left, _, parent), small_hist) in to_build.into_iter().zip(built) {
                let Some(parent) = parent else { continue };
                let (lh, rh) = sibling_hists(parent, small_hist, small_is_left);
                next[pos].hist = Some(lh);
                next[pos + 1].hist = Some(rh);
            }
            for n in &mut next {
                if !self.can_split(n) {
                    n.hist = None;
                }
            }
            level = next;
        }
    }

    fn grow_lossguide(
        &mut self,
        mut root: Node,
        features: &[usize],
        rng: &mut Rng,
        tree: &mut RegTree,
        ranges: &mut Vec<(usize, usize)>,
    ) {
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
        root.hist = self.build_hists(&[(0, root.end)]).pop();
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
        let mut n_leaves = 1;
        while let Some(Cand(_, _, mut node)) = heap.pop() {
            let Some(s) = node.split else { continue };
            if !self.valid(&s) {
                continue;
            }
            if p.max_leaves > 0 && n_leaves >= p.max_leaves {
                break;
            }
            let mid = self.partition(&[(node.start, node.end, s)])[0];
            let (l, r) = self.apply_split(tree, &node, &s);
            n_leaves += 1;
            ranges.resize(tree.n_nodes(), (0, 0));
            ranges[l] = (node.start, mid);
            ranges[r] = (mid, node.end);
            let (mut left, mut right) = Self::children(&node, mid, l, r, &s);
            let (cl, cr) = (self.can_split(&left), self.can_split(&right));
            if !(cl || cr) {
                continue;
            }
            let small_is_left = mid - node.start <= node.end - mid;
            let small = if small_is_left {
                (left.start, left.end)
            } else {
                (right.start, right.end)
            };
            let (Some(small_hist), Some(parent)) = (self.build_hists(&[small]).pop(), node.hist.take()) else {
                continue;
            };
            let (lh, rh) = sibling_hists(parent, small_hist, small_is_left);
            for (child, h, ok) in [(&mut left, lh, cl), (&mut right, rh, cr)] {
                if ok {
                    let f = feats_for(child.depth, rng, self);
                    child.split = best_split(self.data, p, &self.quant, &h, child.sum, &f);
                    child.hist = Some(h);
                }
            }
            for child in [left, right] {
                if child.split.is_some_and(|s| self.valid(&s)) {
                    stamp += 1;
                    let g = child.split.map_or(0.0, |s| s.loss_chg);
                    heap.push(Cand(g, std::cmp::Reverse(stamp), child));
                }
            }
        }
    }

    fn apply_split(&self, tree: &mut RegTree, node: &Node, s: &Split) -> (usize, usize) {
        let p = self.p;
        let q = self.quant;
        let leaf = |w: Wide| {
            let e = q.decode(w);
            ((p.eta * p.weight(e.g, e.h)) as f32, e.h as f32)
        };
        let total = q.decode(node.sum);
        tree.split(
            node.nid,
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
        let packed = &self.packed;
        self.rows[start..end]
            .par_chunks(PIECE)
            .map(|rows| Quant::unpack(rows.iter().fold(0i64, |a, &r| a.wrapping_add(packed[r as usize]))))
            .reduce(Wide::default, Wide::add)
    }

    /// Histograms of the given row ranges (one per range).
    fn build_hists(&self, jobs: &[(usize, usize)]) -> Vec<Vec<Wide>> {
        time(Phase::Histograms, || self.build_hists_inner(jobs))
    }

    fn build_hists_inner(&self, jobs: &[(usize, usize)]) -> Vec<Vec<Wide>> {
        let pieces: Vec<(usize, usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, &(s, e))| (s..e).step_by(PIECE).map(move |ps| (j, ps, (ps + PIECE).min(e))))
            .collect();
        let data = self.data;
        let rows = &self.rows;
        let packed = &self.packed;
        let len = data.hist_len();
        // Integer sums are exact, so combining pieces in any order gives the same histogram.
        let partials: Vec<(usize, Vec<[i64; SLOTS_PER_FEATURE]>)> = pieces
            .par_iter()
            .map(|&(j, s, e)| {
                let mut h = vec![[0i64; SLOTS_PER_FEATURE]; data.n_features()];
                accumulate(&mut h, data, packed, &rows[s..e]);
                (j, h)
            })
            .collect();
        let mut out: Vec<Vec<Wide>> = vec![Vec::new(); jobs.len()];
        for (j, h) in partials {
            let acc = &mut out[j];
            if acc.is_empty() {
                acc.extend(h.iter().flatten().map(|&s| Quant::unpack(s)));
            } else {
                for (a, &b) in acc.iter_mut().zip(h.iter().flatten()) {
                    *a = a.add(Quant::unpack(b));
                }
            }
        }
        for h in &mut out {
            if h.is_empty() {
                h.resize(len, Wide::default());
            }
        }
        out
    }

    /// Stable in-place partition of each (start, end, split) range; returns each split point.
    fn partition(&mut self, jobs: &[(usize, usize, Split)]) -> Vec<usize> {
        time(Phase::Partition, || self.partition_inner(jobs))
    }

    fn partition_inner(&mut self, jobs: &[(usize, usize, Split)]) -> Vec<usize> {
        // Pieces in row-buffer order, so disjoint slices can be carved off front to back.
        let mut pieces: Vec<(usize, usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, &(s, e, _))| (s..e).step_by(PIECE).map(move |ps| (j, ps, (ps + PIECE).min(e))))
            .collect();
        pieces.sort_unstable_by_key(|p| p.1);
        let n = self.rows.len();
        self.scratch.resize(n, 0);
        let (data, missing) = (self.data, &self.missing_code);
        let mut bufs = Vec::with_capacity(pieces.len());
        let (mut rest_rows, mut rest_scratch, mut at) = (&mut self.rows[..], &mut self.scratch[..], 0);
        for &(_, s, e) in &pieces {
            let (pr, tail_r) = rest_rows[s - at..].split_at_mut(e - s);
            let (ps, tail_s) = rest_scratch[s - at..].split_at_mut(e - s);
            bufs.push((pr, ps));
            (rest_rows, rest_scratch, at) = (tail_r, tail_s, e);
        }
        // Lefts are compacted in place (the write index never passes the read index), rights go
        // to the scratch buffer. Every row is written to both places and one cursor advances:
        // no branch to mispredict on the coin-flip left/right decision.
        let counts: Vec<usize> = pieces
            .par_iter()
            .zip(bufs.into_par_iter())
            .map(|(&(j, _, _), (piece, right))| {
                let sp = jobs[j].2;
                let col = data.column(sp.feature);
                let (bin, miss, dl) = (sp.bin, missing[sp.feature], sp.default_left);
                let (mut nl, mut nr) = (0, 0);
                // Decide a block of rows first, then move them: the cursors depend on every
                // decision, so deciding inside the moving loop would serialise the column loads
                // (one cache latency per row) instead of overlapping them.
                let mut flags = [false; 256];
                for start in (0..piece.len()).step_by(flags.len()) {
                    let end = (start + flags.len()).min(piece.len());
                    for (f, &r) in flags.iter_mut().zip(&piece[start..end]) {
                        let c = col[r as usize];
                        *f = (c <= bin) | ((c == miss) & dl);
                    }
                    for (i, &left) in (start..end).zip(&flags) {
                        let r = piece[i];
                        piece[nl] = r;
                        right[nr] = r;
                        nl += usize::from(left);
                        nr += usize::from(!left);
                    }
                }
                nl
            })
            .collect();
        // Per node: move each piece's lefts down to follow the previous ones (destinations never
        // pass their sources), then append every piece's rights after all the lefts.
        let mut mids = vec![0; jobs.len()];
        let mut k = 0;
        while k < pieces.len() {
            let j = pieces[k].0;
            let first = k;
            while k < pieces.len() && pieces[k].0 == j {
                k += 1;
            }
            let mut dest = jobs[j].0;
            for q in first..k {
                let s = pieces[q].1;
                if dest != s {
                    self.rows.copy_within(s..s + counts[q], dest);
                }
                dest += counts[q];
            }
            mids[j] = dest;
            for q in first..k {
                let (_, s, e) = pieces[q];
                let nr = e - s - counts[q];
                self.rows[dest..dest + nr].copy_from_slice(&self.scratch[s..s + nr]);
                dest += nr;
            }
        }
        mids
    }
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

/// The histogram kernel: for each row, add its packed gradient to the slot of each feature's
/// code.
#[inline(never)]
fn accumulate(hist: &mut [[i64; SLOTS_PER_FEATURE]], data: &BinnedMatrix, packed: &[i64], rows: &[u32]) {
    let nf = data.n_features();
    let codes = data.codes();
    // A node's rows are ascending (the root is 0..n and partitioning is stable), so a range
    // whose ends are len - 1 apart is contiguous: stream it without the index and prefetches.
    if let (Some(&first), Some(&last)) = (rows.first(), rows.last())
        && (last - first) as usize + 1 == rows.len()
        && nf > 0
    {
        let (a, b) = (first as usize, last as usize + 1);
        for (row, &v) in codes[a * nf..b * nf].chunks_exact(nf).zip(&packed[a..b]) {
            for (h, &c) in hist.iter_mut().zip(row) {
                h[usize::from(c)] = h[usize::from(c)].wrapping_add(v);
            }
        }
        return;
    }
    for (i, &r) in rows.iter().enumerate() {
        if let Some(&ahead) = rows.get(i + PREFETCH_ROWS) {
            let a = ahead as usize;
            prefetch(codes.as_ptr().wrapping_add(a * nf));
            prefetch(codes.as_ptr().wrapping_add(a * nf + nf - 1));
            prefetch(packed.as_ptr().wrapping_add(a).cast());
        }
        let r = r as usize;
        let v = packed[r];
        for (h, &c) in hist.iter_mut().zip(&codes[r * nf..r * nf + nf]) {
            h[usize::from(c)] = h[usize::from(c)].wrapping_add(v);
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
                let slot = b.offsets()[f] + b.row(r as usize)[f] as usize;
                h[slot] = h[slot].add(Quant::unpack(packed[r as usize]));
            }
        }
        h
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
        let grads: Vec<GradPair> = (0..100_000)
            .map(|i| GradPair {
                g: ((i % 11) as f32 - 5.0) / 4.0,
                h: 0.25 + (i % 3) as f32,
            })
            .collect();
        let p = params();
        let mut g = Grower::new(&b, &p);
        g.rows = (0..100_000).collect();
        g.quant = Quant::quantize(&grads, &mut g.packed);
        let all = g.build_hists(&[(0, 100_000)]).pop().unwrap();
        assert_eq!(all, naive_hist(&b, &g.packed, &g.rows));
        // Partition on feature 0 at bin 2, then parent - left must equal the right child's.
        let split = Split {
            loss_chg: 1.0,
            feature: 0,
            bin: 2,
            default_left: false,
            left: Wide::default(),
            right: Wide::default(),
        };
        let mid = g.partition(&[(0, 100_000, split)])[0];
        assert!(g.rows[..mid].iter().all(|&r| b.row(r as usize)[0] <= 2));
        assert!(g.rows[mid..].iter().all(|&r| b.row(r as usize)[0] > 2));
        assert!(g.rows[..mid].windows(2).all(|w| w[0] < w[1]), "partition is stable");
        let left = g.build_hists(&[(0, mid)]).pop().unwrap();
        let right_naive = naive_hist(&b, &g.packed, &g.rows[mid..]);
        let (l2, r2) = sibling_hists(all.clone(), left.clone(), true);
        assert_eq!(l2, left);
        assert_eq!(r2, right_naive);
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
    fn multi_node_partition_matches_naive_stable_partition() {
        let rows: Vec<Vec<f32>> = (0..150_000)
            .map(|i| vec![((i * 7919) % 101) as f32, (i % 3) as f32])
            .collect();
        let b = binned(&rows);
        let p = params();
        let mut g = Grower::new(&b, &p);
        g.rows = (0..150_000).rev().collect();
        let split = |feature, bin| Split {
            loss_chg: 1.0,
            feature,
            bin,
            default_left: false,
            left: Wide::default(),
            right: Wide::default(),
        };
        // Three nodes (the middle one left alone), pieces of several sizes including empty sides.
        let jobs = [
            (0, 70_000, split(0, 50)),
            (80_000, 120_000, split(1, 5)),
            (120_000, 150_000, split(0, 0)),
        ];
        let before = g.rows.clone();
        let mids = g.partition(&jobs);
        for (&(s, e, sp), &mid) in jobs.iter().zip(&mids) {
            let goes_left = |r: &u32| b.row(*r as usize)[sp.feature] <= sp.bin;
            let want: Vec<u32> = before[s..e]
                .iter()
                .filter(|r| goes_left(r))
                .chain(before[s..e].iter().filter(|r| !goes_left(r)))
                .copied()
                .collect();
            assert_eq!(&g.rows[s..e], &want[..]);
            assert_eq!(mid - s, before[s..e].iter().filter(|r| goes_left(r)).count());
        }
        assert_eq!(&g.rows[70_000..80_000], &before[70_000..80_000]);
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
            for &t in vals.iter().skip(1) {
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
        #[test]
        fn best_split_matches_exhaustive_search(
            data in proptest::collection::vec((proptest::option::of(0u8..20), 0u8..20, -5i8..5, 1u8..4), 4..80),
            lambda in 0.0f64..2.0, alpha in 0.0f64..1.0, mds in proptest::sample::select(vec![0.0, 0.5]),
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
        let t = g.grow(&grads, None, &feats, &mut Rng::new(0));
        assert!(t.tree.max_depth() <= 3);
        let covered: usize = t.leaves.iter().map(|l| l.2 - l.1).sum();
        assert_eq!(covered, 2000);
        let mut p2 = params();
        p2.lossguide = true;
        p2.max_depth = 0;
        p2.max_leaves = 5;
        let mut g = Grower::new(&b, &p2);
        let t = g.grow(&grads, None, &feats, &mut Rng::new(0));
        assert_eq!(t.tree.n_leaves(), 5);
        // Leaf ranges route the same rows as the tree does on codes.
        for &(leaf, s, e) in &t.leaves {
            for &r in &g.rows()[s..e] {
                assert_eq!(t.tree.leaf_for_codes(b.row(r as usize), g.missing_codes()), leaf);
            }
        }
    }
}
