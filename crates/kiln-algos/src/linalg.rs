//! The little dense linear algebra PCA and k-NN need, written here rather than pulled in as a
//! crate: a blocked dot-product kernel (all dots between the rows of two row-major blocks, the
//! inner loop of a projection and a distance table), a register-tiled Gram matrix kernel, a
//! symmetric eigensolver (Householder + QL) and Gram-Schmidt.

/// Lanes per partial sum: one AVX register of f32, two SSE registers.
const LANES: usize = 8;

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    // `mul_add` is one instruction with FMA and a slow libm call without it.
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let n = a.len() / LANES * LANES;
    for (x, y) in a[..n].chunks_exact(LANES).zip(b[..n].chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in a[n..].iter().zip(&b[n..]) {
        s = madd::<FMA>(*x, *y, s);
    }
    s
}

/// `out[i * p + j] = a_i . b_j` for rows of `d` values; a 2 x 4 register tile of 8-lane sums
/// so that each loaded lane feeds several products.
#[inline(always)]
fn dots_kernel<const FMA: bool>(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
    let m = a.len() / d;
    let p = b.len() / d;
    let full = d / LANES * LANES;
    let mut i = 0;
    while i + 2 <= m {
        let (a0, a1) = (&a[i * d..(i + 1) * d], &a[(i + 1) * d..(i + 2) * d]);
        let mut j = 0;
        while j + 4 <= p {
            let bs = [
                &b[j * d..(j + 1) * d],
                &b[(j + 1) * d..(j + 2) * d],
                &b[(j + 2) * d..(j + 3) * d],
                &b[(j + 3) * d..(j + 4) * d],
            ];
            let mut acc = [[[0f32; LANES]; 4]; 2];
            let mut t = 0;
            while t < full {
                let x0 = &a0[t..t + LANES];
                let x1 = &a1[t..t + LANES];
                for (c, bc) in bs.iter().enumerate() {
                    let y = &bc[t..t + LANES];
                    for l in 0..LANES {
                        acc[0][c][l] = madd::<FMA>(x0[l], y[l], acc[0][c][l]);
                        acc[1][c][l] = madd::<FMA>(x1[l], y[l], acc[1][c][l]);
                    }
                }
                t += LANES;
            }
            for (r, ar) in [a0, a1].iter().enumerate() {
                for (c, bc) in bs.iter().enumerate() {
                    let mut s: f32 = acc[r][c].iter().sum();
                    for u in full..d {
                        s = madd::<FMA>(ar[u], bc[u], s);
                    }
                    out[(i + r) * p + j + c] = s;
                }
            }
            j += 4;
        }
        for jj in j..p {
            let bj = &b[jj * d..(jj + 1) * d];
            out[i * p + jj] = dot_lanes::<FMA>(a0, bj);
            out[(i + 1) * p + jj] = dot_lanes::<FMA>(a1, bj);
        }
        i += 2;
    }
    for ii in i..m {
        let ai = &a[ii * d..(ii + 1) * d];
        for jj in 0..p {
            out[ii * p + jj] = dot_lanes::<FMA>(ai, &b[jj * d..(jj + 1) * d]);
        }
    }
}

/// The AVX2 + FMA kernel: the same 2 x 4 tile as [`dots_kernel`], its eight 8-lane sums held
/// in registers explicitly (written with plain arrays, the compiler kept them on the stack and
/// ran scalar code at a twentieth of this speed).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dots_avx2(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> __m256 {
        let lanes = &s[at..at + LANES];
        // SAFETY: `lanes` holds 8 f32 (bounds-checked just above); unaligned loads are allowed.
        unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
    }
    let hsum = |v: __m256| -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    };
    let m = a.len() / d;
    let p = b.len() / d;
    let full = d / LANES * LANES;
    let mut i = 0;
    while i + 2 <= m {
        let (a0, a1) = (&a[i * d..(i + 1) * d], &a[(i + 1) * d..(i + 2) * d]);
        let mut j = 0;
        while j + 4 <= p {
            let b0 = &b[j * d..(j + 1) * d];
            let b1 = &b[(j + 1) * d..(j + 2) * d];
            let b2 = &b[(j + 2) * d..(j + 3) * d];
            let b3 = &b[(j + 3) * d..(j + 4) * d];
            let z = _mm256_setzero_ps();
            let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
            let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
            let mut t = 0;
            while t < full {
                let (x0, x1) = (load(a0, t), load(a1, t));
                let y = load(b0, t);
                c00 = _mm256_fmadd_ps(x0, y, c00);
                c10 = _mm256_fmadd_ps(x1, y, c10);
                let y = load(b1, t);
                c01 = _mm256_fmadd_ps(x0, y, c01);
                c11 = _mm256_fmadd_ps(x1, y, c11);
                let y = load(b2, t);
                c02 = _mm256_fmadd_ps(x0, y, c02);
                c12 = _mm256_fmadd_ps(x1, y, c12);
                let y = load(b3, t);
                c03 = _mm256_fmadd_ps(x0, y, c03);
                c13 = _mm256_fmadd_ps(x1, y, c13);
                t += LANES;
            }
            let sums = [[c00, c01, c02, c03], [c10, c11, c12, c13]];
            for (r, ar) in [a0, a1].iter().enumerate() {
                for (c, bc) in [b0, b1, b2, b3].iter().enumerate() {
                    let mut s = hsum(sums[r][c]);
                    for u in full..d {
                        s = ar[u].mul_add(bc[u], s);
                    }
                    out[(i + r) * p + j + c] = s;
                }
            }
            j += 4;
        }
        for jj in j..p {
            let bj = &b[jj * d..(jj + 1) * d];
            out[i * p + jj] = dot_lanes::<true>(a0, bj);
            out[(i + 1) * p + jj] = dot_lanes::<true>(a1, bj);
        }
        i += 2;
    }
    for ii in i..m {
        let ai = &a[ii * d..(ii + 1) * d];
        for jj in 0..p {
            out[ii * p + jj] = dot_lanes::<true>(ai, &b[jj * d..(jj + 1) * d]);
        }
    }
}

/// All dot products between the rows of `a` (`m x d`, row-major) and the rows of `b`
/// (`p x d`): `out[i * p + j] = a_i . b_j` (`out` holds `m * p`).
pub fn dots(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
    debug_assert!(d > 0 && a.len().is_multiple_of(d) && b.len().is_multiple_of(d));
    debug_assert_eq!(out.len(), a.len() / d * (b.len() / d));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { dots_avx2(a, b, d, out) };
    }
    dots_kernel::<false>(a, b, d, out);
}

/// `out[i * p + j] = a_i . b_j` with `b` given transposed: `bt` is `d x p` row-major (column `j`
/// of `bt` is `b_j`). Vectorized across `b`'s rows rather than along `d`, so short rows cost no
/// horizontal sums: the layout for many queries against a block of indexed rows.
pub fn dots_t(a: &[f32], bt: &[f32], d: usize, p: usize, out: &mut [f32]) {
    debug_assert!(d > 0 && a.len().is_multiple_of(d) && bt.len() == d * p);
    debug_assert_eq!(out.len(), a.len() / d * p);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let mut done = 0;
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            done = unsafe { dots_t_avx512(a, bt, d, p, out) };
        }
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { dots_t_avx2(a, bt, d, p, done, out) };
    }
    dots_t_portable(a, bt, d, p, out);
}

/// Row by row, `out_i += a_it * bt_t` over `t`: a loop the compiler vectorizes as it is.
fn dots_t_portable(a: &[f32], bt: &[f32], d: usize, p: usize, out: &mut [f32]) {
    for (ai, oi) in a.chunks_exact(d).zip(out.chunks_exact_mut(p)) {
        oi.iter_mut().for_each(|o| *o = 0.0);
        for (&x, row) in ai.iter().zip(bt.chunks_exact(p)) {
            for (o, &y) in oi.iter_mut().zip(row) {
                *o += x * y;
            }
        }
    }
}

/// A 4 x 16 register tile (eight 8-lane sums): per `t`, two loads of `bt`, four broadcasts of
/// `a` and eight FMAs. Columns `from..p` only (the AVX-512 kernel may have done the others).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dots_t_avx2(a: &[f32], bt: &[f32], d: usize, p: usize, from: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    #[inline(always)]
    fn load(s: &[f32], at: usize) -> __m256 {
        let lanes = &s[at..at + LANES];
        // SAFETY: `lanes` holds 8 f32 (bounds-checked just above); unaligned loads are allowed.
        unsafe { _mm256_loadu_ps(lanes.as_ptr()) }
    }
    #[inline(always)]
    fn store(s: &mut [f32], at: usize, v: __m256) {
        let lanes = &mut s[at..at + LANES];
        // SAFETY: `lanes` holds 8 f32 (bounds-checked just above); unaligned stores are allowed.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) }
    }
    let m = a.len() / d;
    let wide = from + (p - from) / 16 * 16;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        let mut j = from;
        while j < wide {
            let z = _mm256_setzero_ps();
            let mut acc = [[z; 2]; 4];
            if rows == 4 {
                let (mut c00, mut c01, mut c10, mut c11) = (z, z, z, z);
                let (mut c20, mut c21, mut c30, mut c31) = (z, z, z, z);
                for t in 0..d {
                    let (y0, y1) = (load(bt, t * p + j), load(bt, t * p + j + LANES));
                    let x = _mm256_set1_ps(a[i * d + t]);
                    c00 = _mm256_fmadd_ps(x, y0, c00);
                    c01 = _mm256_fmadd_ps(x, y1, c01);
                    let x = _mm256_set1_ps(a[(i + 1) * d + t]);
                    c10 = _mm256_fmadd_ps(x, y0, c10);
                    c11 = _mm256_fmadd_ps(x, y1, c11);
                    let x = _mm256_set1_ps(a[(i + 2) * d + t]);
                    c20 = _mm256_fmadd_ps(x, y0, c20);
                    c21 = _mm256_fmadd_ps(x, y1, c21);
                    let x = _mm256_set1_ps(a[(i + 3) * d + t]);
                    c30 = _mm256_fmadd_ps(x, y0, c30);
                    c31 = _mm256_fmadd_ps(x, y1, c31);
                }
                acc = [[c00, c01], [c10, c11], [c20, c21], [c30, c31]];
            } else {
                for (r, pair) in acc.iter_mut().enumerate().take(rows) {
                    let (mut c0, mut c1) = (z, z);
                    for t in 0..d {
                        let x = _mm256_set1_ps(a[(i + r) * d + t]);
                        c0 = _mm256_fmadd_ps(x, load(bt, t * p + j), c0);
                        c1 = _mm256_fmadd_ps(x, load(bt, t * p + j + LANES), c1);
                    }
                    *pair = [c0, c1];
                }
            }
            for (r, pair) in acc.iter().enumerate().take(rows) {
                store(out, (i + r) * p + j, pair[0]);
                store(out, (i + r) * p + j + LANES, pair[1]);
            }
            j += 16;
        }
        for r in 0..rows {
            for jj in wide..p {
                let mut s = 0f32;
                for t in 0..d {
                    s = a[(i + r) * d + t].mul_add(bt[t * p + jj], s);
                }
                out[(i + r) * p + jj] = s;
            }
        }
        i += rows;
    }
}

/// The AVX-512 kernel of [`dots_t`] for columns `0..p / 32 * 32` (the count it returns): an
/// 8 x 32 register tile (sixteen 16-lane sums of the 32 registers), per `t` two loads of `bt`,
/// eight broadcasts of `a` and sixteen FMAs, twice the work per instruction of the AVX2 tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dots_t_avx512(a: &[f32], bt: &[f32], d: usize, p: usize, out: &mut [f32]) -> usize {
    let m = a.len() / d;
    let wide = p / 32 * 32;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(8);
        for j in (0..wide).step_by(32) {
            match rows {
                8 => tile_avx512::<8>(a, bt, d, p, i, j, out),
                7 => tile_avx512::<7>(a, bt, d, p, i, j, out),
                6 => tile_avx512::<6>(a, bt, d, p, i, j, out),
                5 => tile_avx512::<5>(a, bt, d, p, i, j, out),
                4 => tile_avx512::<4>(a, bt, d, p, i, j, out),
                3 => tile_avx512::<3>(a, bt, d, p, i, j, out),
                2 => tile_avx512::<2>(a, bt, d, p, i, j, out),
                _ => tile_avx512::<1>(a, bt, d, p, i, j, out),
            }
        }
        i += rows;
    }
    wide
}

/// One `R x 32` tile of [`dots_t_avx512`]: rows `i..i + R` of `a`, columns `j..j + 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn tile_avx512<const R: usize>(a: &[f32], bt: &[f32], d: usize, p: usize, i: usize, j: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    // Every access below is within these bounds, checked once here rather than per load.
    assert!((i + R) * d <= a.len() && (d - 1) * p + j + 32 <= bt.len() && (i + R - 1) * p + j + 32 <= out.len());
    let z = _mm512_setzero_ps();
    let mut c = [[z; 2]; R];
    // SAFETY: the assertion above bounds every offset: `a` rows `i..i + R` (`d` each), `bt`
    // rows `0..d` at columns `j..j + 32`, `out` rows `i..i + R` at the same columns.
    unsafe {
        let ap = a.as_ptr().add(i * d);
        let bp = bt.as_ptr().add(j);
        for t in 0..d {
            let y0 = _mm512_loadu_ps(bp.add(t * p));
            let y1 = _mm512_loadu_ps(bp.add(t * p + 16));
            for (r, pair) in c.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ap.add(r * d + t));
                pair[0] = _mm512_fmadd_ps(x, y0, pair[0]);
                pair[1] = _mm512_fmadd_ps(x, y1, pair[1]);
            }
        }
        let op = out.as_mut_ptr().add(i * p + j);
        for (r, pair) in c.iter().enumerate() {
            _mm512_storeu_ps(op.add(r * p), pair[0]);
            _mm512_storeu_ps(op.add(r * p + 16), pair[1]);
        }
    }
}

/// Rows a [`Gram`] gathers before its kernel runs: the block (at most 256 rows of a few hundred
/// padded columns) stays in L2, and f32 sums of 256 products lose nothing the f64 total keeps.
const GRAM_ROWS: usize = 256;
/// Columns of the Gram kernel's tile (two 8-lane registers); rows are padded to a multiple.
const GRAM_COLS: usize = 16;
/// Rows of the Gram kernel's tile: 6 x 16 is twelve accumulators, two loads and one broadcast,
/// 15 of the 16 AVX registers, and twelve FMAs for eight loads (FMA-bound, not load-bound).
const GRAM_TILE: usize = 6;

/// `X^T X` of rows pushed one at a time, in f64: rows gather into a zero-padded block of
/// [`GRAM_ROWS`]; a full block goes through a register-tiled kernel (f32 products summed over
/// the block, then added into f64), upper triangle only. Each rayon task keeps its own and
/// [`Gram::merge`] adds them: the `d x d` covariance of PCA and the normal equations of the
/// Linear Learner regressor.
#[derive(Clone)]
pub struct Gram {
    d: usize,
    /// Padded row stride: `d` rounded up to [`GRAM_COLS`].
    dp: usize,
    rows: usize,
    block: Vec<f32>,
    /// `dp x dp` row-major; entries `(i, j)` with `j >= i` hold the sums (some below too).
    acc: Vec<f64>,
}

impl Gram {
    /// An empty accumulator for rows of `d` values.
    pub fn new(d: usize) -> Gram {
        let dp = d.div_ceil(GRAM_COLS).max(1) * GRAM_COLS;
        Gram {
            d,
            dp,
            rows: 0,
            block: vec![0.0; GRAM_ROWS * dp],
            acc: vec![0.0; dp * dp],
        }
    }

    /// Adds one row, written by `fill` into the `d` values it is given.
    #[inline]
    pub fn push(&mut self, fill: impl FnOnce(&mut [f32])) {
        let at = self.rows * self.dp;
        fill(&mut self.block[at..at + self.d]);
        self.rows += 1;
        if self.rows == GRAM_ROWS {
            self.flush();
        }
    }

    /// Runs the kernel on the gathered rows.
    fn flush(&mut self) {
        if self.rows > 0 {
            gram_block(&self.block[..self.rows * self.dp], self.d, self.dp, &mut self.acc);
            self.rows = 0;
        }
    }

    /// The sum of both accumulators (rayon's reduce).
    pub fn merge(mut self, mut other: Gram) -> Gram {
        self.flush();
        other.flush();
        for (a, b) in self.acc.iter_mut().zip(&other.acc) {
            *a += b;
        }
        self
    }

    /// The full symmetric `d x d` matrix, row-major.
    pub fn finish(mut self) -> Vec<f64> {
        self.flush();
        let (d, dp) = (self.d, self.dp);
        let mut g = vec![0f64; d * d];
        for i in 0..d {
            for j in i..d {
                let v = self.acc[i * dp + j];
                g[i * d + j] = v;
                g[j * d + i] = v;
            }
        }
        g
    }
}

/// Adds `sum_t x_t^T x_t` over the rows of `x` (`dp` floats each, the first `d` used, the rest
/// zero) into the upper triangle of `acc` (`dp x dp`).
fn gram_block(x: &[f32], d: usize, dp: usize, acc: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { gram_block_avx2(x, d, dp, acc) };
    }
    gram_block_portable(x, d, dp, acc);
}

/// Row by row, `acc_i += x_ti * x_t[i..]` in f32 over the block, then into f64.
fn gram_block_portable(x: &[f32], d: usize, dp: usize, acc: &mut [f64]) {
    let mut sums = vec![0f32; dp];
    for i in 0..d {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for row in x.chunks_exact(dp) {
            let xi = row[i];
            for (s, &v) in sums[i..].iter_mut().zip(&row[i..]) {
                *s += xi * v;
            }
        }
        for (a, &s) in acc[i * dp + i..(i + 1) * dp].iter_mut().zip(&sums[i..]) {
            *a += f64::from(s);
        }
    }
}

/// The AVX2 + FMA kernel: for each 6-row band `i0..i0 + 6` of the result and each 16-column
/// chunk at or right of the diagonal, twelve 8-lane sums over the block's rows, each row giving
/// six broadcasts of `x_t[i]` and two loads of `x_t[j..j + 16]` (all within row `t`: no
/// transpose, no packing), then widened into f64 and added to `acc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gram_block_avx2(x: &[f32], d: usize, dp: usize, acc: &mut [f64]) {
    let mut i0 = 0;
    while i0 < d {
        let rows = (d - i0).min(GRAM_TILE);
        let mut j0 = i0 / GRAM_COLS * GRAM_COLS;
        while j0 < dp {
            match rows {
                6 => gram_tile::<6>(x, dp, i0, j0, acc),
                5 => gram_tile::<5>(x, dp, i0, j0, acc),
                4 => gram_tile::<4>(x, dp, i0, j0, acc),
                3 => gram_tile::<3>(x, dp, i0, j0, acc),
                2 => gram_tile::<2>(x, dp, i0, j0, acc),
                _ => gram_tile::<1>(x, dp, i0, j0, acc),
            }
            j0 += GRAM_COLS;
        }
        i0 += rows;
    }
}

/// One `R x 16` tile of [`gram_block_avx2`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn gram_tile<const R: usize>(x: &[f32], dp: usize, i0: usize, j0: usize, acc: &mut [f64]) {
    use std::arch::x86_64::*;
    let z = _mm256_setzero_ps();
    let mut c = [[z; 2]; R];
    for row in x.chunks_exact(dp) {
        let cols = &row[j0..j0 + GRAM_COLS];
        // SAFETY: `cols` holds 16 f32 (bounds-checked just above); unaligned loads are allowed.
        let (y0, y1) = unsafe { (_mm256_loadu_ps(cols.as_ptr()), _mm256_loadu_ps(cols.as_ptr().add(8))) };
        let xs = &row[i0..i0 + R];
        for r in 0..R {
            let v = _mm256_set1_ps(xs[r]);
            c[r][0] = _mm256_fmadd_ps(v, y0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(v, y1, c[r][1]);
        }
    }
    for (r, pair) in c.iter().enumerate() {
        let out = &mut acc[(i0 + r) * dp + j0..(i0 + r) * dp + j0 + GRAM_COLS];
        for (h, &v) in pair.iter().enumerate() {
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
            let dst = &mut out[h * 8..h * 8 + 8];
            // SAFETY: `dst` holds 8 f64 (bounds-checked just above); unaligned access is allowed.
            unsafe {
                let p = dst.as_mut_ptr();
                _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), lo));
                _mm256_storeu_pd(p.add(4), _mm256_add_pd(_mm256_loadu_pd(p.add(4)), hi));
            }
        }
    }
}

/// One dot product (8 partial sums).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes::<false>(a, b)
}

/// Transposes `rows x cols` row-major `src` into `cols x rows` row-major `dst`.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut Vec<f32>) {
    dst.clear();
    dst.resize(rows * cols, 0.0);
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Eigenvalues (descending) and eigenvectors (`vecs[i * n..(i + 1) * n]` belongs to `vals[i]`)
/// of the symmetric `n x n` row-major matrix `a`: Householder reduction to tridiagonal form,
/// then the implicit QL iteration with Wilkinson shifts (EISPACK's tred2 and tql2, as in
/// JAMA). `O(n^3)` with a small constant: a few milliseconds at `n = 100`, where the cyclic
/// Jacobi sweeps this replaced took tens, a third of a PCA fit.
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    // `v` ends up holding the eigenvectors as columns; `d` the eigenvalues.
    let mut v = a.to_vec();
    let mut d = vec![0f64; n];
    let mut e = vec![0f64; n];
    tridiagonalize(&mut v, n, &mut d, &mut e);
    tridiagonal_ql(&mut v, n, &mut d, &mut e);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let vals = order.iter().map(|&i| d[i]).collect();
    let mut vecs = Vec::with_capacity(n * n);
    for &i in &order {
        vecs.extend((0..n).map(|k| v[k * n + i]));
    }
    (vals, vecs)
}

/// Householder reduction of the symmetric `v` (`n x n`, row-major) to tridiagonal form: on
/// return `d` is the diagonal, `e[1..]` the subdiagonal and `v` the orthogonal transform.
fn tridiagonalize(v: &mut [f64], n: usize, d: &mut [f64], e: &mut [f64]) {
    d.copy_from_slice(&v[(n - 1) * n..n * n]);
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
                v[j * n + i] = 0.0;
            }
        } else {
            // The Householder vector of row i, scaled.
            for x in &mut d[..i] {
                *x /= scale;
                h += *x * *x;
            }
            let f = d[i - 1];
            let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].iter_mut().for_each(|x| *x = 0.0);
            // Apply the similarity transform to the remaining columns.
            for j in 0..i {
                let f = d[j];
                v[j * n + i] = f;
                let mut g = e[j] + v[j * n + j] * f;
                for k in j + 1..i {
                    g += v[k * n + j] * d[k];
                    e[k] += v[k * n + j] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[k * n + j] -= f * e[k] + g * d[k];
                }
                d[j] = v[(i - 1) * n + j];
                v[i * n + j] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[(n - 1) * n + i] = v[i * n + i];
        v[i * n + i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[k * n + i + 1] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[k * n + i + 1] * v[k * n + j]).sum();
                for k in 0..=i {
                    v[k * n + j] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[k * n + i + 1] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[(n - 1) * n + j];
        v[(n - 1) * n + j] = 0.0;
    }
    v[(n - 1) * n + n - 1] = 1.0;
    e[0] = 0.0;
}

/// The implicit QL iteration on the tridiagonal (`d`, `e`) from [`tridiagonalize`], rotating
/// the columns of `v` along: on return `d` holds the eigenvalues and `v`'s columns their
/// eigenvectors.
fn tridiagonal_ql(v: &mut [f64], n: usize, d: &mut [f64], e: &mut [f64]) {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1 = 0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        // The first negligible subdiagonal element at or after l (e[n - 1] is zero).
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            // A bound on the iterations: QL converges in two or three per eigenvalue.
            for _ in 0..60 {
                // The Wilkinson shift.
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for x in &mut d[l + 2..n] {
                    *x -= h;
                }
                f += h;
                // The implicit QL sweep from m up to l.
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for k in 0..n {
                        let (vi, vi1) = (v[k * n + i], v[k * n + i + 1]);
                        v[k * n + i + 1] = s * vi + c * vi1;
                        v[k * n + i] = c * vi - s * vi1;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// Orthonormalizes the `l` vectors of length `d` in `vecs` (vector-major) in place by modified
/// Gram-Schmidt, twice (one pass loses orthogonality when the vectors are nearly dependent, as
/// they are after power iterations). A vector that vanishes is replaced by a unit axis vector
/// orthogonal to the others.
pub fn orthonormalize(vecs: &mut [f64], d: usize, l: usize) {
    for _ in 0..2 {
        for i in 0..l {
            let (done, rest) = vecs.split_at_mut(i * d);
            let vi = &mut rest[..d];
            for j in 0..i {
                let vj = &done[j * d..(j + 1) * d];
                let proj: f64 = vi.iter().zip(vj).map(|(x, y)| x * y).sum();
                for (x, y) in vi.iter_mut().zip(vj) {
                    *x -= proj * y;
                }
            }
            let norm = vi.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-300 {
                for x in vi.iter_mut() {
                    *x /= norm;
                }
            } else {
                vi.iter_mut().for_each(|x| *x = 0.0);
                vi[i % d] = 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn dots_match_naive() {
        let mut rng = Rng::new(3);
        for (m, p, d) in [
            (1, 1, 1),
            (5, 7, 3),
            (4, 8, 16),
            (9, 13, 37),
            (6, 35, 5),
            (8, 32, 9),
            (11, 93, 37),
            (17, 64, 5),
            (3, 70, 1),
        ] {
            let a: Vec<f32> = (0..m * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let b: Vec<f32> = (0..p * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut out = vec![0f32; m * p];
            dots(&a, &b, d, &mut out);
            let mut bt = Vec::new();
            transpose(&b, p, d, &mut bt);
            let (mut out_t, mut out_p) = (vec![0f32; m * p], vec![0f32; m * p]);
            dots_t(&a, &bt, d, p, &mut out_t);
            dots_t_portable(&a, &bt, d, p, &mut out_p);
            // The AVX2 kernel alone too (dots_t gives it only the AVX-512 kernel's tail here).
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                let mut out_2 = vec![0f32; m * p];
                // SAFETY: AVX2 and FMA are supported (checked just above).
                unsafe { dots_t_avx2(&a, &bt, d, p, 0, &mut out_2) };
                for (x, y) in out_2.iter().zip(&out_p) {
                    assert!((x - y).abs() < 1e-5, "{m}x{p}x{d} avx2");
                }
            }
            for i in 0..m {
                for j in 0..p {
                    let want: f32 = (0..d).map(|t| a[i * d + t] * b[j * d + t]).sum();
                    for got in [out[i * p + j], out_t[i * p + j], out_p[i * p + j]] {
                        assert!((got - want).abs() < 1e-5, "{m}x{p}x{d} ({i},{j})");
                    }
                }
            }
        }
    }

    /// Both kernels against the naive f64 sum, on widths that are not multiples of the tile
    /// (6 x 16) and row counts around the 256-row block, split over two merged accumulators.
    #[test]
    fn gram_matches_naive() {
        let mut rng = Rng::new(5);
        for (n, d) in [
            (1, 1),
            (3, 5),
            (255, 17),
            (256, 16),
            (257, 37),
            (700, 100),
            (513, 6),
            (40, 33),
        ] {
            let x: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 * 4.0 - 1.0).collect();
            let mut want = vec![0f64; d * d];
            for row in x.chunks_exact(d) {
                for i in 0..d {
                    for j in 0..d {
                        want[i * d + j] += f64::from(row[i]) * f64::from(row[j]);
                    }
                }
            }
            let (mut a, mut b) = (Gram::new(d), Gram::new(d));
            for (t, row) in x.chunks_exact(d).enumerate() {
                let g = if t % 3 == 0 { &mut a } else { &mut b };
                g.push(|dst| dst.copy_from_slice(row));
            }
            let got = a.merge(b).finish();
            let dp = d.div_ceil(GRAM_COLS) * GRAM_COLS;
            let mut padded = vec![0f32; n * dp];
            for (dst, row) in padded.chunks_exact_mut(dp).zip(x.chunks_exact(d)) {
                dst[..d].copy_from_slice(row);
            }
            let mut portable = vec![0f64; dp * dp];
            for block in padded.chunks(GRAM_ROWS * dp) {
                gram_block_portable(block, d, dp, &mut portable);
            }
            for i in 0..d {
                for j in 0..d {
                    let w = want[i * d + j];
                    let tol = 1e-5 * (1.0 + w.abs());
                    assert!(
                        (got[i * d + j] - w).abs() < tol,
                        "{n}x{d} ({i},{j}): {} vs {w}",
                        got[i * d + j]
                    );
                    let p = portable[i.min(j) * dp + i.max(j)];
                    assert!((p - w).abs() < tol, "portable {n}x{d} ({i},{j}): {p} vs {w}");
                }
            }
        }
    }

    #[test]
    fn eigen_of_a_known_matrix() {
        // Q diag(5, 2, 1) Q^T for a rotation Q: eigenvalues back, eigenvectors Q's columns.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let lam = [5.0, 2.0, 1.0];
        let mut a = [0f64; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| q[i * 3 + k] * lam[k] * q[j * 3 + k]).sum();
            }
        }
        let (vals, vecs) = sym_eigen(&a, 3);
        for (v, l) in vals.iter().zip(lam) {
            assert!((v - l).abs() < 1e-12, "{vals:?}");
        }
        for k in 0..3 {
            let col: Vec<f64> = (0..3).map(|i| q[i * 3 + k]).collect();
            let cos: f64 = vecs[k * 3..k * 3 + 3].iter().zip(&col).map(|(x, y)| x * y).sum();
            assert!((cos.abs() - 1.0).abs() < 1e-12, "{k}: {vecs:?}");
        }
    }

    /// A random symmetric matrix: `A v = lambda v` for every pair, the vectors orthonormal,
    /// the values descending and summing to the trace.
    #[test]
    fn eigen_of_random_symmetric_matrices() {
        let mut rng = Rng::new(9);
        for n in [1, 2, 5, 37, 100] {
            let mut a = vec![0f64; n * n];
            for i in 0..n {
                for j in i..n {
                    let x = rng.next_f64() * 2.0 - 1.0;
                    a[i * n + j] = x;
                    a[j * n + i] = x;
                }
            }
            // A repeated eigenvalue too: zero one row and column.
            if n > 2 {
                for k in 0..n {
                    a[n + k] = 0.0;
                    a[k * n + 1] = 0.0;
                }
            }
            let (vals, vecs) = sym_eigen(&a, n);
            let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
            assert!((vals.iter().sum::<f64>() - trace).abs() < 1e-9, "{n}");
            assert!(vals.windows(2).all(|w| w[0] >= w[1]), "{vals:?}");
            for (i, &lam) in vals.iter().enumerate() {
                let v = &vecs[i * n..(i + 1) * n];
                for r in 0..n {
                    let av: f64 = (0..n).map(|k| a[r * n + k] * v[k]).sum();
                    assert!((av - lam * v[r]).abs() < 1e-10, "{n}: pair {i} row {r}");
                }
                for j in 0..n {
                    let dot: f64 = v.iter().zip(&vecs[j * n..(j + 1) * n]).map(|(x, y)| x * y).sum();
                    assert!(
                        (dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10,
                        "{n}: {i}.{j} = {dot}"
                    );
                }
            }
        }
    }

    #[test]
    fn gram_schmidt_gives_orthonormal_vectors() {
        let mut v = vec![1.0, 1.0, 0.0, 1.0, 1.0 + 1e-9, 0.0, 0.0, 0.0, 0.0];
        orthonormalize(&mut v, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                let d: f64 = (0..3).map(|k| v[i * 3 + k] * v[j * 3 + k]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "{v:?}");
            }
        }
    }
}
