//! A regression tree in xgboost's array layout: node `i`'s fields live at index `i` of each array.

/// One regression tree. Leaf `i` has `left[i] == -1` and value `cond[i]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegTree {
    /// Left child id, -1 for leaves.
    pub left: Vec<i32>,
    /// Right child id, -1 for leaves.
    pub right: Vec<i32>,
    /// Parent id (`i32::MAX` for the root, as xgboost writes it).
    pub parent: Vec<i32>,
    /// Split feature (0 for leaves).
    pub feature: Vec<u32>,
    /// Split threshold (`x < cond` goes left), or the leaf value for leaves.
    pub cond: Vec<f32>,
    /// Where missing values go.
    pub default_left: Vec<bool>,
    /// Node weight before shrinkage (internal) / leaf value (leaves).
    pub base_weight: Vec<f32>,
    /// Split gain (0 for leaves).
    pub loss_change: Vec<f32>,
    /// Sum of hessians of the node's rows (cover).
    pub sum_hess: Vec<f32>,
    /// Training-time split bin ("code <= bin goes left"); not part of the model file.
    pub split_bin: Vec<u8>,
}

impl RegTree {
    /// A tree with a single (root) leaf of the given value.
    pub fn new_root(value: f32, sum_hess: f32) -> Self {
        let mut t = RegTree::default();
        t.push(i32::MAX, value, sum_hess);
        t
    }

    fn push(&mut self, parent: i32, value: f32, sum_hess: f32) -> usize {
        self.left.push(-1);
        self.right.push(-1);
        self.parent.push(parent);
        self.feature.push(0);
        self.cond.push(value);
        self.default_left.push(false);
        self.base_weight.push(value);
        self.loss_change.push(0.0);
        self.sum_hess.push(sum_hess);
        self.split_bin.push(0);
        self.left.len() - 1
    }

    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.left.len()
    }

    /// Whether node `i` is a leaf.
    pub fn is_leaf(&self, i: usize) -> bool {
        self.left[i] < 0
    }

    /// Turns leaf `nid` into a split and returns (left id, right id).
    #[allow(clippy::too_many_arguments)]
    pub fn split(
        &mut self,
        nid: usize,
        feature: u32,
        bin: u8,
        threshold: f32,
        default_left: bool,
        base_weight: f32,
        loss_change: f32,
        children: [(f32, f32); 2],
    ) -> (usize, usize) {
        let l = self.push(nid as i32, children[0].0, children[0].1);
        let r = self.push(nid as i32, children[1].0, children[1].1);
        self.left[nid] = l as i32;
        self.right[nid] = r as i32;
        self.feature[nid] = feature;
        self.cond[nid] = threshold;
        self.split_bin[nid] = bin;
        self.default_left[nid] = default_left;
        self.base_weight[nid] = base_weight;
        self.loss_change[nid] = loss_change;
        (l, r)
    }

    /// Sets a leaf's value (and its base weight, which xgboost keeps equal for leaves).
    pub fn set_leaf(&mut self, nid: usize, value: f32) {
        self.cond[nid] = value;
        self.base_weight[nid] = value;
    }

    /// Leaf reached by a raw feature row (NaN = missing).
    #[inline]
    pub fn leaf_for(&self, x: &[f32]) -> usize {
        let mut i = 0;
        while self.left[i] >= 0 {
            let v = x.get(self.feature[i] as usize).copied().unwrap_or(f32::NAN);
            i = if v.is_nan() {
                if self.default_left[i] {
                    self.left[i]
                } else {
                    self.right[i]
                }
            } else if v < self.cond[i] {
                self.left[i]
            } else {
                self.right[i]
            } as usize;
        }
        i
    }

    /// Leaf reached by a row whose feature `f` has bin code `code(f)` (`missing[f]` is its missing
    /// code).
    #[inline]
    pub fn leaf_for_codes(&self, code: impl Fn(usize) -> u8, missing: &[u8]) -> usize {
        let mut i = 0;
        while self.left[i] >= 0 {
            let f = self.feature[i] as usize;
            let c = code(f);
            i = if c == missing[f] {
                if self.default_left[i] {
                    self.left[i]
                } else {
                    self.right[i]
                }
            } else if c <= self.split_bin[i] {
                self.left[i]
            } else {
                self.right[i]
            } as usize;
        }
        i
    }

    /// Depth of the deepest leaf (root = 0).
    pub fn max_depth(&self) -> usize {
        fn d(t: &RegTree, i: usize) -> usize {
            if t.is_leaf(i) {
                0
            } else {
                1 + d(t, t.left[i] as usize).max(d(t, t.right[i] as usize))
            }
        }
        d(self, 0)
    }

    /// Number of leaves.
    pub fn n_leaves(&self) -> usize {
        (0..self.n_nodes()).filter(|&i| self.is_leaf(i)).count()
    }
}
