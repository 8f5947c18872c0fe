//! The little dense linear algebra PCA and k-NN need, written here rather than pulled in as a
//! crate: a blocked dot-product kernel (all dots between the rows of two row-major blocks, the
//! inner loop of a Gram matrix, a projection and a distance table), a symmetric eigensolver
//! (cyclic Jacobi: small matrices, eigenvectors accurate to the last bits) and Gram-Schmidt.

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
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { dots_t_avx2(a, bt, d, p, out) };
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
/// `a` and eight FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dots_t_avx2(a: &[f32], bt: &[f32], d: usize, p: usize, out: &mut [f32]) {
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
    let wide = p / 16 * 16;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        let mut j = 0;
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
/// of the symmetric `n x n` row-major matrix `a`, by cyclic Jacobi rotations until the
/// off-diagonal mass is negligible.
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- A P (columns p, q), then A <- P^T A (rows p, q), V <- V P.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let vals = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vecs = Vec::with_capacity(n * n);
    for &i in &order {
        vecs.extend((0..n).map(|k| v[k * n + i]));
    }
    (vals, vecs)
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
        for (m, p, d) in [(1, 1, 1), (5, 7, 3), (4, 8, 16), (9, 13, 37), (6, 35, 5), (8, 32, 9)] {
            let a: Vec<f32> = (0..m * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let b: Vec<f32> = (0..p * d).map(|_| rng.next_f64() as f32 - 0.5).collect();
            let mut out = vec![0f32; m * p];
            dots(&a, &b, d, &mut out);
            let mut bt = Vec::new();
            transpose(&b, p, d, &mut bt);
            let (mut out_t, mut out_p) = (vec![0f32; m * p], vec![0f32; m * p]);
            dots_t(&a, &bt, d, p, &mut out_t);
            dots_t_portable(&a, &bt, d, p, &mut out_p);
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
