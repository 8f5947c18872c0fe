//! Growing one tree from binned data and gradients: histograms per node (built for the smaller
//! child only; the sibling is parent minus child), split finding with a learned default
//! direction for missing values, and in-place partitioning of a row-index buffer so every node
//! owns a contiguous range of it.
//!
//! Work is cut into fixed-size row pieces, independent of the thread count, and partial results
//! are combined in piece order, so a tree is bit-identical for a given seed whatever the number
//! of threads.

use std::collections::BinaryHeap;

use rayon::prelude::*;

use crate::binning::BinnedMatrix;
use crate::objective::GradPair;
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

/// One histogram slot: sums of gradients and hessians.
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
    fn sub(self, o: Entry) -> Entry {
        Entry {
            g: self.g - o.g,
            h: self.h - o.h,
        }
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
    pub left: Entry,
    /// Right child sums.
    pub right: Entry,
}

/// Best split of a node over `features`, from its histogram. Ties keep the first candidate in
/// (feature, bin, missing-right-before-left) order.
pub fn best_split(
    data: &BinnedMatrix,
    p: &GrowParams,
    hist: &[Entry],
    sum: Entry,
    features: &[usize],
) -> Option<Split> {
    let parent_gain = p.gain(sum.g, sum.h);
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
        let try_missing_left = data.has_missing(f) && miss.h > RT_EPS;
        let mut acc = Entry::default();
        for (b, e) in h[..nb - 1].iter().enumerate() {
            acc.add(*e);
            let mut consider = |left: Entry, default_left: bool| {
                let right = sum.sub(left);
                if left.h < mcw || right.h < mcw {
                    return;
                }
                let chg = p.gain(left.g, left.h) + p.gain(right.g, right.h) - parent_gain;
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
                let mut l = acc;
                l.add(miss);
                consider(l, true);
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
    sum: Entry,
    hist: Option<Vec<Entry>>,
    split: Option<Split>,
}

/// Grows trees for one data set; keeps its row buffer between trees.
pub struct Grower<'a> {
    data: &'a BinnedMatrix,
    p: &'a GrowParams,
    rows: Vec<u32>,
    missing_code: Vec<u8>,
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
            missing_code,
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
        let sum = self.sum_rows(grads, 0, n);
        let p = self.p;
        let mut tree = RegTree::new_root((p.eta * p.weight(sum.g, sum.h)) as f32, sum.h as f32);
        tree.base_weight[0] = p.weight(sum.g, sum.h) as f32;
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
                self.grow_lossguide(grads, root, features, rng, &mut tree, &mut ranges);
            } else {
                self.grow_depthwise(grads, root, features, rng, &mut tree, &mut ranges);
            }
        }
        let leaves = (0..tree.n_nodes())
            .filter(|&i| tree.is_leaf(i))
            .map(|i| (i, ranges[i].0, ranges[i].1))
            .collect();
        Grown { tree, leaves }
    }

    fn can_split(&self, n: &Node) -> bool {
        (self.p.max_depth == 0 || n.depth < self.p.max_depth)
            && n.end - n.start >= 2
            && n.sum.h >= 2.0 * self.p.min_child_weight
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

    fn grow_depthwise(
        &mut self,
        grads: &[GradPair],
        mut root: Node,
        features: &[usize],
        rng: &mut Rng,
        tree: &mut RegTree,
        ranges: &mut Vec<(usize, usize)>,
    ) {
        let p = self.p;
        root.hist = self.build_hists(grads, &[(0, root.end)]).pop();
        let mut level = vec![root];
        let mut n_leaves = 1;
        while !level.is_empty() {
            let level_feats = self.sample(features, p.colsample_bylevel, rng);
            let node_feats: Vec<Vec<usize>> = level
                .iter()
                .map(|_| self.sample(&level_feats, p.colsample_bynode, rng))
                .collect();
            let data = self.data;
            level.par_iter_mut().zip(node_feats.par_iter()).for_each(|(n, feats)| {
                if let Some(h) = &n.hist {
                    n.split = best_split(data, p, h, n.sum, feats);
                }
            });
            // Expand the best splits first so a leaf limit keeps the most useful ones.
            let mut order: Vec<usize> = (0..level.len())
                .filter(|&i| level[i].split.is_some_and(|s| self.valid(&s)))
                .collect();
            order.sort_by(|&a, &b| {
                let (sa, sb) = (level[a].split, level[b].split);
                let (ga, gb) = (sa.map_or(0.0, |s| s.loss_chg), sb.map_or(0.0, |s| s.loss_chg));
                gb.total_cmp(&ga).then(a.cmp(&b))
            });
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
                if self.can_split(&left) || self.can_split(&right) {
                    let parent_hist = node.hist.take();
                    let small_is_left = mid - node.start <= node.end - mid;
                    let (small, large) = if small_is_left {
                        ((left.start, left.end), (right.start, right.end))
                    } else {
                        ((right.start, right.end), (left.start, left.end))
                    };
                    let _ = large;
                    to_build.push((next.len(), small_is_left, small, parent_hist));
                }
                next.push(left);
                next.push(right);
            }
            let ranges_to_build: Vec<(usize, usize)> = to_build.iter().map(|t| t.2).collect();
            let built = self.build_hists(grads, &ranges_to_build);
            for ((pos, small_is_left, _, parent), small_hist) in to_build.into_iter().zip(built) {
                let Some(mut parent) = parent else { continue };
                for (ph, sh) in parent.iter_mut().zip(&small_hist) {
                    *ph = ph.sub(*sh);
                }
                let (lh, rh) = if small_is_left {
                    (small_hist, parent)
                } else {
                    (parent, small_hist)
                };
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
        grads: &[GradPair],
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
        root.hist = self.build_hists(grads, &[(0, root.end)]).pop();
        let f = feats_for(0, rng, self);
        root.split = root
            .hist
            .as_ref()
            .and_then(|h| best_split(self.data, p, h, root.sum, &f));
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
            let mut left = Node {
                nid: l,
                depth: node.depth + 1,
                start: node.start,
                end: mid,
                sum: s.left,
                hist: None,
                split: None,
            };
            let mut right = Node {
                nid: r,
                depth: node.depth + 1,
                start: mid,
                end: node.end,
                sum: s.right,
                hist: None,
                split: None,
            };
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
            let Some(small_hist) = self.build_hists(grads, &[small]).pop() else {
                continue;
            };
            let Some(mut parent) = node.hist.take() else {
                continue;
            };
            for (ph, sh) in parent.iter_mut().zip(&small_hist) {
                *ph = ph.sub(*sh);
            }
            let (lh, rh) = if small_is_left {
                (small_hist, parent)
            } else {
                (parent, small_hist)
            };
            for (child, h, ok) in [(&mut left, lh, cl), (&mut right, rh, cr)] {
                if ok {
                    let f = feats_for(child.depth, rng, self);
                    child.split = best_split(self.data, p, &h, child.sum, &f);
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
        let leaf = |e: Entry| ((p.eta * p.weight(e.g, e.h)) as f32, e.h as f32);
        tree.split(
            node.nid,
            s.feature as u32,
            s.bin,
            self.data.cuts().threshold(s.feature, s.bin),
            s.default_left,
            p.weight(node.sum.g, node.sum.h) as f32,
            s.loss_chg as f32,
            [leaf(s.left), leaf(s.right)],
        )
    }

    fn sum_rows(&self, grads: &[GradPair], start: usize, end: usize) -> Entry {
        let parts: Vec<Entry> = self.rows[start..end]
            .par_chunks(PIECE)
            .map(|rows| {
                let mut e = Entry::default();
                for &r in rows {
                    let gp = grads[r as usize];
                    e.g += f64::from(gp.g);
                    e.h += f64::from(gp.h);
                }
                e
            })
            .collect();
        let mut total = Entry::default();
        for e in parts {
            total.add(e);
        }
        total
    }

    /// Histograms of the given row ranges (one per range).
    fn build_hists(&self, grads: &[GradPair], jobs: &[(usize, usize)]) -> Vec<Vec<Entry>> {
        let pieces: Vec<(usize, usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, &(s, e))| (s..e).step_by(PIECE).map(move |ps| (j, ps, (ps + PIECE).min(e))))
            .collect();
        let data = self.data;
        let rows = &self.rows;
        let len = data.hist_len();
        let partials: Vec<(usize, Vec<Entry>)> = pieces
            .par_iter()
            .map(|&(j, s, e)| {
                let mut h = vec![Entry::default(); len];
                accumulate(&mut h, data, grads, &rows[s..e]);
                (j, h)
            })
            .collect();
        let mut out: Vec<Option<Vec<Entry>>> = vec![None; jobs.len()];
        for (j, h) in partials {
            match &mut out[j] {
                None => out[j] = Some(h),
                Some(acc) => {
                    for (a, b) in acc.iter_mut().zip(&h) {
                        a.add(*b);
                    }
                }
            }
        }
        out.into_iter()
            .map(|h| h.unwrap_or_else(|| vec![Entry::default(); len]))
            .collect()
    }

    /// Stable in-place partition of each (start, end, split) range; returns each split point.
    fn partition(&mut self, jobs: &[(usize, usize, Split)]) -> Vec<usize> {
        let pieces: Vec<(usize, usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, &(s, e, _))| (s..e).step_by(PIECE).map(move |ps| (j, ps, (ps + PIECE).min(e))))
            .collect();
        let data = self.data;
        let nf = data.n_features();
        let codes = data.codes();
        let rows = &self.rows;
        let missing = &self.missing_code;
        let parts: Vec<(Vec<u32>, Vec<u32>)> = pieces
            .par_iter()
            .map(|&(j, s, e)| {
                let sp = jobs[j].2;
                let f = sp.feature;
                let (bin, miss, dl) = (sp.bin, missing[f], sp.default_left);
                let mut left = Vec::with_capacity(e - s);
                let mut right = Vec::new();
                for &r in &rows[s..e] {
                    let c = codes[r as usize * nf + f];
                    let go_left = if c == miss { dl } else { c <= bin };
                    if go_left {
                        left.push(r);
                    } else {
                        right.push(r);
                    }
                }
                (left, right)
            })
            .collect();
        let mut mids = Vec::with_capacity(jobs.len());
        let mut k = 0;
        for (j, &(s, _, _)) in jobs.iter().enumerate() {
            let first = k;
            while k < pieces.len() && pieces[k].0 == j {
                k += 1;
            }
            let mut pos = s;
            for (l, _) in &parts[first..k] {
                self.rows[pos..pos + l.len()].copy_from_slice(l);
                pos += l.len();
            }
            mids.push(pos);
            for (_, r) in &parts[first..k] {
                self.rows[pos..pos + r.len()].copy_from_slice(r);
                pos += r.len();
            }
        }
        mids
    }
}

/// The histogram kernel: for each row, add its gradient pair to the slot of each feature's code.
#[inline(never)]
fn accumulate(hist: &mut [Entry], data: &BinnedMatrix, grads: &[GradPair], rows: &[u32]) {
    let nf = data.n_features();
    let codes = data.codes();
    let offsets = data.offsets();
    for &r in rows {
        let r = r as usize;
        let gp = grads[r];
        let (g, h) = (f64::from(gp.g), f64::from(gp.h));
        let row = &codes[r * nf..r * nf + nf];
        for (&c, &off) in row.iter().zip(offsets) {
            let e = &mut hist[off + c as usize];
            e.g += g;
            e.h += h;
        }
    }
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

    /// Histogram of a node computed naively from the raw rows.
    fn naive_hist(b: &BinnedMatrix, grads: &[GradPair], rows: &[u32]) -> Vec<Entry> {
        let mut h = vec![Entry::default(); b.hist_len()];
        for &r in rows {
            for f in 0..b.n_features() {
                let slot = b.offsets()[f] + b.row(r as usize)[f] as usize;
                h[slot].g += f64::from(grads[r as usize].g);
                h[slot].h += f64::from(grads[r as usize].h);
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
        let all = g.build_hists(&grads, &[(0, 100_000)]).pop().unwrap();
        let want = naive_hist(&b, &grads, &g.rows);
        for (a, w) in all.iter().zip(&want) {
            assert!((a.g - w.g).abs() < 1e-6 && (a.h - w.h).abs() < 1e-6);
        }
        // Partition on feature 0 at bin 2, then parent - left must equal the right child's.
        let split = Split {
            loss_chg: 1.0,
            feature: 0,
            bin: 2,
            default_left: false,
            left: Entry::default(),
            right: Entry::default(),
        };
        let mid = g.partition(&[(0, 100_000, split)])[0];
        assert!(g.rows[..mid].iter().all(|&r| b.row(r as usize)[0] <= 2));
        assert!(g.rows[mid..].iter().all(|&r| b.row(r as usize)[0] > 2));
        assert!(g.rows[..mid].windows(2).all(|w| w[0] < w[1]), "partition is stable");
        let left = g.build_hists(&grads, &[(0, mid)]).pop().unwrap();
        let right_naive = naive_hist(&b, &grads, &g.rows[mid..]);
        for i in 0..all.len() {
            let sub = all[i].sub(left[i]);
            assert!((sub.g - right_naive[i].g).abs() < 1e-6);
            assert!((sub.h - right_naive[i].h).abs() < 1e-6);
        }
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
        let hist = naive_hist(&b, &grads, &all);
        let sum = Entry { g: 0.0, h: 400.0 };
        let s = best_split(&b, &p, &hist, sum, &[0]).unwrap();
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
        let hist = naive_hist(&b, &grads, &all);
        let sum = Entry { g: 200.0, h: 400.0 };
        let s = best_split(&b, &p, &hist, sum, &[0]).unwrap();
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
            let hist = naive_hist(&b, &grads, &all);
            let sum = grads.iter().fold(Entry::default(), |mut a, g| { a.g += f64::from(g.g); a.h += f64::from(g.h); a });
            let want = naive_best_gain(&rows, &grads, &p);
            match best_split(&b, &p, &hist, sum, &[0, 1]) {
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
