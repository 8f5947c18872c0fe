//! Single-output models (binary classifiers, SGD regressors) trained eight at a time: a tile
//! holds up to [`LANES`] models' parameters interleaved feature-major (`w[j * LANES + m]` is
//! feature `j` of model `m`, so a feature's eight weights are one AVX register). For a row, one
//! broadcast of `x_j` and one FMA advance all eight models' dot products (`d` FMAs for eight
//! outputs instead of `8 d` multiply-adds and eight horizontal sums), the loss and its gradient
//! run over rows x models as one flat vectorized map, and the gradient `g_j += x_j r` (`r`: the
//! row's eight residuals) is again one FMA per feature.
//!
//! Each lane's arithmetic is its own (no operation mixes lanes), so a model's result depends
//! neither on its lane nor on which models share its tile, and so not on the thread count that
//! decides the grouping. Without AVX2 and FMA the same loops run portably (multiply then add:
//! the results differ from the FMA ones in the last bits, as machines may).

use super::{BLOCK, Data, Model, Rule, Setup, bucket, grads_lanes, scheduled_lr, shrink};

/// Models per tile: one AVX register of `f32`.
pub(super) const LANES: usize = 8;

/// Proof that the CPU has AVX2 and FMA: only [`Simd::detect`] makes one.
#[derive(Clone, Copy)]
struct Simd(());

impl Simd {
    fn detect() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Some(Simd(()));
        }
        None
    }
}

/// Up to [`LANES`] models' parameters, optimizer state and scratch, interleaved by lane.
/// Unused lanes hold zeros with a zero learning rate, so they stay zero.
struct Tile {
    /// Models in use (the first lanes).
    used: usize,
    d: usize,
    /// `d x LANES`: weights, Adam/momentum first and second moments, the batch's gradient sum.
    w: Vec<f32>,
    m_w: Vec<f32>,
    v_w: Vec<f32>,
    g_w: Vec<f32>,
    b: [f32; LANES],
    m_b: [f32; LANES],
    v_b: [f32; LANES],
    g_b: [f32; LANES],
    /// A block's outputs, then gradients, `BLOCK x LANES`; and its labels repeated per lane.
    z: Vec<f32>,
    y: Vec<f32>,
}

impl Tile {
    fn pack(models: &[Model], d: usize) -> Tile {
        let mut t = Tile {
            used: models.len(),
            d,
            w: vec![0.0; d * LANES],
            m_w: vec![0.0; d * LANES],
            v_w: vec![0.0; d * LANES],
            g_w: vec![0.0; d * LANES],
            b: [0.0; LANES],
            m_b: [0.0; LANES],
            v_b: [0.0; LANES],
            g_b: [0.0; LANES],
            z: vec![0.0; BLOCK * LANES],
            y: vec![0.0; BLOCK * LANES],
        };
        for (l, m) in models.iter().enumerate() {
            for j in 0..d {
                t.w[j * LANES + l] = m.w[j];
                t.m_w[j * LANES + l] = m.m_w[j];
                t.v_w[j * LANES + l] = m.v_w[j];
            }
            (t.b[l], t.m_b[l], t.v_b[l]) = (m.b[0], m.m_b[0], m.v_b[0]);
        }
        t
    }

    fn unpack(&self, models: &mut [Model]) {
        for (l, m) in models.iter_mut().enumerate() {
            for j in 0..self.d {
                m.w[j] = self.w[j * LANES + l];
                m.m_w[j] = self.m_w[j * LANES + l];
                m.v_w[j] = self.v_w[j * LANES + l];
            }
            (m.b[0], m.m_b[0], m.v_b[0]) = (self.b[l], self.m_b[l], self.v_b[l]);
        }
    }
}

/// Trains `models` (single-output, at most [`LANES`]) one epoch over `data`; with `hist`,
/// each model's outputs before each step go into its histogram.
pub(super) fn epoch(s: &Setup<'_>, models: &mut [Model], data: Data<'_>, hist: bool) {
    debug_assert!(s.k == 1 && models.len() <= LANES);
    let simd = Simd::detect();
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = simd {
        // SAFETY: a `Simd` exists only when the CPU has AVX2 and FMA, the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { epoch_avx2(s, models, data, hist, simd) };
    }
    epoch_with(s, models, data, hist, simd);
}

/// [`epoch_with`] compiled for AVX2, so that the loss map and the updates vectorize 8 wide too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn epoch_avx2(s: &Setup<'_>, models: &mut [Model], data: Data<'_>, hist: bool, simd: Simd) {
    epoch_with(s, models, data, hist, Some(simd));
}

#[inline(always)]
fn epoch_with(s: &Setup<'_>, models: &mut [Model], data: Data<'_>, hist: bool, simd: Option<Simd>) {
    let mut tile = Tile::pack(models, s.d);
    let n = data.len();
    for start in (0..n).step_by(s.p.mini_batch_size) {
        let batch = data.range(start, (start + s.p.mini_batch_size).min(n));
        step(s, &mut tile, models, batch, hist, simd);
    }
    tile.unpack(models);
}

/// One mini-batch step of every model of the tile.
#[inline(always)]
fn step(s: &Setup<'_>, t: &mut Tile, models: &mut [Model], batch: Data<'_>, hist: bool, simd: Option<Simd>) {
    let (d, n) = (s.d, batch.len());
    t.g_w.fill(0.0);
    t.g_b = [0.0; LANES];
    let cw = [s.class_weight[0], s.class_weight[1 % s.class_weight.len()]];
    let mut loss = [0f64; LANES];
    for start in (0..n).step_by(BLOCK) {
        let block = batch.range(start, (start + BLOCK).min(n));
        let rows = block.len();
        let (z, y) = (&mut t.z[..rows * LANES], &mut t.y[..rows * LANES]);
        forward(simd, &t.w, &t.b, block.x, d, z);
        if hist {
            for (zr, &yr) in z.chunks_exact(LANES).zip(block.y) {
                for (m, &zl) in models.iter_mut().zip(zr) {
                    let h = if yr > 0.5 { &mut m.hist_pos } else { &mut m.hist_neg };
                    h[bucket(zl)] += 1;
                }
            }
        }
        for (yr, &label) in y.chunks_exact_mut(LANES).zip(block.y) {
            yr.fill(label);
        }
        let sums = grads_lanes::<{ BLOCK * LANES }>(s.p.loss, z, y, cw);
        for (acc, v) in loss.iter_mut().zip(sums) {
            *acc += f64::from(v);
        }
        backward(simd, block.x, d, z, &mut t.g_w);
        for zr in z.chunks_exact(LANES) {
            for (gb, &zl) in t.g_b.iter_mut().zip(zr) {
                *gb += zl;
            }
        }
    }
    update(s, t, models, n, &loss);
}

/// Each model's optimizer step from the tile's gradient sums over `n` rows; `loss` (the
/// batch's loss sums) goes to the models' epoch totals.
#[inline(always)]
fn update(s: &Setup<'_>, t: &mut Tile, models: &mut [Model], n: usize, loss: &[f64; LANES]) {
    let p = s.p;
    let inv = 1.0 / n as f32;
    let (mut rules, mut bias_rules, mut l1) = ([Rule::default(); LANES], [Rule::default(); LANES], [0f32; LANES]);
    for (l, m) in models.iter_mut().enumerate() {
        m.epoch_loss += loss[l];
        m.epoch_rows += n;
        m.t += 1;
        let lr = scheduled_lr(s, m.lr, m.t);
        rules[l] = Rule::new(p, lr, m.wd, inv, m.t);
        bias_rules[l] = Rule::new(p, lr * p.bias_lr_mult, m.wd * p.bias_wd_mult, inv, m.t);
        l1[l] = lr * m.l1;
    }
    for j in 0..t.d {
        let at = j * LANES;
        let (w, g) = (&mut t.w[at..at + LANES], &t.g_w[at..at + LANES]);
        let (m, v) = (&mut t.m_w[at..at + LANES], &mut t.v_w[at..at + LANES]);
        for l in 0..LANES {
            rules[l].apply(p, &mut w[l], g[l], &mut m[l], &mut v[l]);
        }
    }
    if models.iter().any(|m| m.l1 > 0.0) {
        for w in t.w.chunks_exact_mut(LANES) {
            for l in 0..LANES {
                w[l] = shrink(w[l], l1[l]);
            }
        }
    }
    if p.use_bias {
        for (l, rule) in bias_rules.iter().enumerate().take(t.used) {
            rule.apply(p, &mut t.b[l], t.g_b[l], &mut t.m_b[l], &mut t.v_b[l]);
        }
    }
}

/// `z[r * LANES + l] = b[l] + x_r . w[.., l]` for the rows `x_r` of `x` (`d` values each).
#[inline(always)]
fn forward(simd: Option<Simd>, w: &[f32], b: &[f32; LANES], x: &[f32], d: usize, z: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd.is_some() {
        // SAFETY: a `Simd` exists only when the CPU has AVX2 and FMA.
        return unsafe { forward_avx2(w, b, x, d, z) };
    }
    let _ = simd;
    for (xr, zr) in x.chunks_exact(d).zip(z.chunks_exact_mut(LANES)) {
        let mut acc = *b;
        for (wj, &xj) in w.chunks_exact(LANES).zip(xr) {
            for l in 0..LANES {
                acc[l] += xj * wj[l];
            }
        }
        zr.copy_from_slice(&acc);
    }
}

/// `g[j * LANES + l] += sum_r x_rj z[r * LANES + l]`, rows in order.
#[inline(always)]
fn backward(simd: Option<Simd>, x: &[f32], d: usize, z: &[f32], g: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd.is_some() {
        // SAFETY: a `Simd` exists only when the CPU has AVX2 and FMA.
        return unsafe { backward_avx2(x, d, z, g) };
    }
    let _ = simd;
    for (xr, zr) in x.chunks_exact(d).zip(z.chunks_exact(LANES)) {
        for (gj, &xj) in g.chunks_exact_mut(LANES).zip(xr) {
            for l in 0..LANES {
                gj[l] += xj * zr[l];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::LANES;

    #[inline(always)]
    pub(super) fn load(s: &[f32]) -> __m256 {
        let lanes: &[f32; LANES] = s.first_chunk().expect("a full lane group");
        // SAFETY: `lanes` holds 8 f32; unaligned loads are allowed.
        unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
    }

    #[inline(always)]
    pub(super) fn store(s: &mut [f32], v: __m256) {
        let lanes: &mut [f32; LANES] = s.first_chunk_mut().expect("a full lane group");
        // SAFETY: `lanes` holds 8 f32; unaligned stores are allowed.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) }
    }
}

/// [`forward`] with four rows at a time: four independent FMA chains hide the FMA latency,
/// and each weight load feeds four of them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2(w: &[f32], b: &[f32; LANES], x: &[f32], d: usize, z: &mut [f32]) {
    use avx2::{load, store};
    use std::arch::x86_64::*;
    let bias = load(b);
    let mut rows = x.chunks_exact(4 * d);
    let mut out = z.chunks_exact_mut(4 * LANES);
    for (xs, zs) in (&mut rows).zip(&mut out) {
        let (x0, rest) = xs.split_at(d);
        let (x1, rest) = rest.split_at(d);
        let (x2, x3) = rest.split_at(d);
        let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
        for ((((wj, &v0), &v1), &v2), &v3) in w.chunks_exact(LANES).zip(x0).zip(x1).zip(x2).zip(x3) {
            let wj = load(wj);
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(v0), wj, a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(v1), wj, a1);
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(v2), wj, a2);
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(v3), wj, a3);
        }
        for (r, a) in [a0, a1, a2, a3].into_iter().enumerate() {
            store(&mut zs[r * LANES..], a);
        }
    }
    for (xr, zr) in rows
        .remainder()
        .chunks_exact(d)
        .zip(out.into_remainder().chunks_exact_mut(LANES))
    {
        let mut a = bias;
        for (wj, &v) in w.chunks_exact(LANES).zip(xr) {
            a = _mm256_fmadd_ps(_mm256_set1_ps(v), load(wj), a);
        }
        store(zr, a);
    }
}

/// [`backward`] a few features at a time: their gradient sums stay in registers over the
/// block's rows, each row's residuals loaded once for all of them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_avx2(x: &[f32], d: usize, z: &[f32], g: &mut [f32]) {
    let mut j = 0;
    while j + 8 <= d {
        backward_cols::<8>(x, d, j, z, g);
        j += 8;
    }
    if j + 4 <= d {
        backward_cols::<4>(x, d, j, z, g);
        j += 4;
    }
    if j + 2 <= d {
        backward_cols::<2>(x, d, j, z, g);
        j += 2;
    }
    if j < d {
        backward_cols::<1>(x, d, j, z, g);
    }
}

/// [`backward`] for the `J` features from `j0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn backward_cols<const J: usize>(x: &[f32], d: usize, j0: usize, z: &[f32], g: &mut [f32]) {
    use avx2::{load, store};
    use std::arch::x86_64::*;
    let g = &mut g[j0 * LANES..(j0 + J) * LANES];
    let mut acc: [__m256; J] = std::array::from_fn(|c| load(&g[c * LANES..]));
    for (xr, zr) in x.chunks_exact(d).zip(z.chunks_exact(LANES)) {
        let zr = load(zr);
        let xs: &[f32; J] = xr[j0..].first_chunk().expect("J features from j0");
        for c in 0..J {
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(xs[c]), zr, acc[c]);
        }
    }
    for (c, a) in acc.into_iter().enumerate() {
        store(&mut g[c * LANES..], a);
    }
}
