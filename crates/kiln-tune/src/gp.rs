//! Gaussian-process regression: Matérn-5/2 kernel with one lengthscale per parameter (ARD),
//! hyperparameters by maximum a posteriori over a few L-BFGS restarts, hand-written Cholesky.
//!
//! Inputs are unit points (see `space`). Numeric coordinates enter the distance as differences;
//! a categorical coordinate contributes 1 when the categories differ and 0 otherwise (a Hamming
//! kernel, equivalent to one-hot encoding with a shared lengthscale).

// Index loops mirror the matrix formulas they implement.
#![allow(clippy::needless_range_loop)]

use crate::rng::Rng;
use crate::space::category_of;

/// sqrt(5), used by the Matérn-5/2 kernel.
const SQRT5: f64 = 2.236_067_977_499_79;

/// Box bounds of the log-hyperparameters (targets are standardised, inputs in [0, 1]).
const LOG_LS_BOUNDS: (f64, f64) = (-4.6, 3.0); // lengthscale 0.01 .. 20
const LOG_SF2_BOUNDS: (f64, f64) = (-3.0, 3.0); // signal variance 0.05 .. 20
const LOG_SN2_BOUNDS: (f64, f64) = (-13.8, 0.0); // noise variance 1e-6 .. 1

/// Kernel hyperparameters in log space.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hyper {
    /// ln lengthscale per input dimension.
    pub log_ls: Vec<f64>,
    /// ln signal variance.
    pub log_sf2: f64,
    /// ln noise variance (added to every point).
    pub log_sn2: f64,
}

impl Hyper {
    fn from_vec(v: &[f64]) -> Self {
        let d = v.len() - 2;
        Hyper {
            log_ls: v[..d].to_vec(),
            log_sf2: v[d],
            log_sn2: v[d + 1],
        }
    }
}

/// Per-dimension difference between two unit points as the kernel sees it.
fn diff(a: f64, b: f64, cat: Option<usize>) -> f64 {
    match cat {
        Some(k) => {
            if category_of(a, k) == category_of(b, k) {
                0.0
            } else {
                1.0
            }
        }
        None => a - b,
    }
}

/// Matérn-5/2 value and the factor g with ∂k/∂ln ℓ_d = g · (Δ_d/ℓ_d)².
fn matern52(r2: f64, sf2: f64) -> (f64, f64) {
    let r = r2.max(0.0).sqrt();
    let e = (-SQRT5 * r).exp();
    let k = sf2 * (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * e;
    let g = sf2 * 5.0 / 3.0 * (1.0 + SQRT5 * r) * e;
    (k, g)
}

/// In-place Cholesky of a symmetric positive-definite n×n row-major matrix (lower triangle is
/// overwritten with L). Returns false if the matrix is not numerically positive definite.
pub(crate) fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s.is_nan() || s <= 0.0 || !s.is_finite() {
            return false;
        }
        let ljj = s.sqrt();
        a[j * n + j] = ljj;
        for i in (j + 1)..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / ljj;
        }
        for i in 0..j {
            a[i * n + j] = 0.0;
        }
    }
    true
}

/// Solves L x = b in place (L lower triangular, row-major).
fn solve_lower(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let mut s = b[i];
        let row = &l[i * n..i * n + i];
        for (k, lik) in row.iter().enumerate() {
            s -= lik * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Solves Lᵀ x = b in place.
fn solve_upper_t(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in (i + 1)..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Training inputs with their pairwise squared differences cached per dimension.
pub(crate) struct Inputs {
    x: Vec<Vec<f64>>,
    cats: Vec<Option<usize>>,
    /// d2[(i*n + j)*d + k] = Δ_k(x_i, x_j)², for the hyperparameter fit.
    d2: Vec<f64>,
}

impl Inputs {
    pub(crate) fn new(x: Vec<Vec<f64>>, cats: Vec<Option<usize>>) -> Self {
        let n = x.len();
        let d = cats.len();
        let mut d2 = vec![0.0; n * n * d];
        for i in 0..n {
            for j in 0..i {
                for k in 0..d {
                    let v = diff(x[i][k], x[j][k], cats[k]);
                    d2[(i * n + j) * d + k] = v * v;
                    d2[(j * n + i) * d + k] = v * v;
                }
            }
        }
        Inputs { x, cats, d2 }
    }

    fn n(&self) -> usize {
        self.x.len()
    }

    fn d(&self) -> usize {
        self.cats.len()
    }
}

/// Gaussian prior on the log-hyperparameters (MAP instead of ML keeps small-data fits sane).
struct Prior {
    ls_mean: f64,
    ls_sd: f64,
    sf2_mean: f64,
    sf2_sd: f64,
    sn2_mean: f64,
    sn2_sd: f64,
}

impl Prior {
    fn for_dims(d: usize) -> Self {
        // Median lengthscale grows like sqrt(d) so that the prior correlation between random
        // points stays comparable across dimensions.
        Prior {
            ls_mean: (0.5f64).ln() + 0.5 * (d.max(1) as f64).ln(),
            ls_sd: 1.5,
            sf2_mean: 0.0,
            sf2_sd: 1.5,
            sn2_mean: (1e-4f64).ln(),
            sn2_sd: 4.0,
        }
    }

    fn mean_vec(&self, d: usize) -> Vec<f64> {
        let mut v = vec![self.ls_mean; d];
        v.push(self.sf2_mean);
        v.push(self.sn2_mean);
        v
    }

    fn sd_vec(&self, d: usize) -> Vec<f64> {
        let mut v = vec![self.ls_sd; d];
        v.push(self.sf2_sd);
        v.push(self.sn2_sd);
        v
    }
}

fn bounds(d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut lo = vec![LOG_LS_BOUNDS.0; d];
    let mut hi = vec![LOG_LS_BOUNDS.1; d];
    lo.push(LOG_SF2_BOUNDS.0);
    hi.push(LOG_SF2_BOUNDS.1);
    lo.push(LOG_SN2_BOUNDS.0);
    hi.push(LOG_SN2_BOUNDS.1);
    (lo, hi)
}

/// Negative log posterior of the hyperparameters `theta` and its gradient (written to `grad`).
fn neg_log_posterior(
    inp: &Inputs,
    y: &[f64],
    extra_noise: &[f64],
    prior_mean: &[f64],
    prior_sd: &[f64],
    theta: &[f64],
    grad: &mut [f64],
) -> f64 {
    let n = inp.n();
    let d = inp.d();
    let inv_ls2: Vec<f64> = theta[..d].iter().map(|l| (-2.0 * l).exp()).collect();
    let sf2 = theta[d].exp();
    let sn2 = theta[d + 1].exp();
    let mut k = vec![0.0; n * n];
    let mut kf = vec![0.0; n * n];
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let base = (i * n + j) * d;
            let r2: f64 = (0..d).map(|c| inp.d2[base + c] * inv_ls2[c]).sum();
            let (kv, gv) = matern52(r2, sf2);
            kf[i * n + j] = kv;
            kf[j * n + i] = kv;
            g[i * n + j] = gv;
            g[j * n + i] = gv;
            k[i * n + j] = kv;
            k[j * n + i] = kv;
        }
        k[i * n + i] += sn2 + extra_noise[i] + 1e-9 * sf2;
    }
    if !cholesky(&mut k, n) {
        grad.iter_mut().for_each(|v| *v = 0.0);
        return f64::INFINITY;
    }
    let l = k;
    let mut alpha = y.to_vec();
    solve_lower(&l, n, &mut alpha);
    let data_fit: f64 = alpha.iter().map(|a| a * a).sum::<f64>();
    solve_upper_t(&l, n, &mut alpha);
    let log_det: f64 = (0..n).map(|i| l[i * n + i].ln()).sum();
    let mut nll = 0.5 * data_fit + log_det + 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();

    // W = K⁻¹ − ααᵀ; ∂nll/∂θ = ½ tr(W ∂K/∂θ).
    let mut w = vec![0.0; n * n];
    let mut col = vec![0.0; n];
    for j in 0..n {
        col.iter_mut().for_each(|v| *v = 0.0);
        col[j] = 1.0;
        solve_lower(&l, n, &mut col);
        solve_upper_t(&l, n, &mut col);
        for i in 0..n {
            w[i * n + j] = col[i] - alpha[i] * alpha[j];
        }
    }
    grad.iter_mut().for_each(|v| *v = 0.0);
    let mut g_sf2 = 0.0;
    let mut tr_w = 0.0;
    for i in 0..n {
        tr_w += w[i * n + i];
        for j in 0..n {
            let wij = w[i * n + j];
            g_sf2 += wij * kf[i * n + j];
            if i != j {
                let f = wij * g[i * n + j];
                let base = (i * n + j) * d;
                for c in 0..d {
                    grad[c] += f * inp.d2[base + c];
                }
            }
        }
    }
    for c in 0..d {
        grad[c] *= 0.5 * inv_ls2[c];
    }
    grad[d] = 0.5 * g_sf2;
    grad[d + 1] = 0.5 * sn2 * tr_w;

    for (i, t) in theta.iter().enumerate() {
        let z = (t - prior_mean[i]) / prior_sd[i];
        nll += 0.5 * z * z;
        grad[i] += z / prior_sd[i];
    }
    nll
}

/// Minimises `f` within a box by projected L-BFGS with backtracking; returns (x, f(x)).
pub(crate) fn minimize_box(
    f: &mut dyn FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    max_iter: usize,
) -> (Vec<f64>, f64) {
    let m = x0.len();
    let clamp = |x: &mut Vec<f64>| {
        for i in 0..m {
            x[i] = x[i].clamp(lo[i], hi[i]);
        }
    };
    let mut x = x0.to_vec();
    clamp(&mut x);
    let mut g = vec![0.0; m];
    let mut fx = f(&x, &mut g);
    if !fx.is_finite() {
        return (x, fx);
    }
    let mut mem: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    for _ in 0..max_iter {
        // Two-loop recursion for d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(mem.len());
        for (s, yv, rho) in mem.iter().rev() {
            let a = rho * dot(s, &q);
            for i in 0..m {
                q[i] -= a * yv[i];
            }
            alphas.push(a);
        }
        let gamma = match mem.last() {
            Some((s, yv, _)) => dot(s, yv) / dot(yv, yv),
            None => {
                let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
                if gmax > 0.0 { 1.0 / gmax } else { 1.0 }
            }
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in mem.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            for i in 0..m {
                q[i] += s[i] * (a - b);
            }
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        // Variables pinned at a bound with the gradient pushing outward do not move.
        for i in 0..m {
            if (x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0) {
                dir[i] = 0.0;
            }
        }
        if dot(&dir, &g) >= 0.0 {
            mem.clear();
            let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let scale = if gmax > 0.0 { 1.0 / gmax } else { 0.0 };
            for i in 0..m {
                dir[i] = if (x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0) {
                    0.0
                } else {
                    -g[i] * scale
                };
            }
            if dot(&dir, &g) >= 0.0 {
                break;
            }
        }
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..25 {
            let mut xn: Vec<f64> = (0..m).map(|i| x[i] + t * dir[i]).collect();
            clamp(&mut xn);
            let mut gn = vec![0.0; m];
            let fnew = f(&xn, &mut gn);
            let step: Vec<f64> = (0..m).map(|i| xn[i] - x[i]).collect();
            if fnew.is_finite() && fnew <= fx + 1e-4 * dot(&g, &step) {
                accepted = Some((xn, gn, fnew, step));
                break;
            }
            t *= 0.5;
        }
        let Some((xn, gn, fnew, s)) = accepted else {
            break;
        };
        let yv: Vec<f64> = (0..m).map(|i| gn[i] - g[i]).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            mem.push((s, yv, 1.0 / sy));
            if mem.len() > 8 {
                mem.remove(0);
            }
        }
        let improvement = fx - fnew;
        x = xn;
        g = gn;
        fx = fnew;
        if improvement < 1e-9 * fx.abs().max(1.0) {
            break;
        }
    }
    (x, fx)
}

/// Fits kernel hyperparameters by MAP over `restarts` L-BFGS runs (the first from the prior
/// median, the rest from prior draws). Returns `None` only if every run failed numerically.
pub(crate) fn fit_hyper(
    inp: &Inputs,
    y: &[f64],
    extra_noise: &[f64],
    restarts: usize,
    max_iter: usize,
    rng: &mut Rng,
) -> Option<Hyper> {
    let d = inp.d();
    let prior = Prior::for_dims(d);
    let pm = prior.mean_vec(d);
    let ps = prior.sd_vec(d);
    let (lo, hi) = bounds(d);
    let mut f = |theta: &[f64], grad: &mut [f64]| neg_log_posterior(inp, y, extra_noise, &pm, &ps, theta, grad);
    let mut best: Option<(Vec<f64>, f64)> = None;
    for r in 0..restarts.max(1) {
        let mut x0 = pm.clone();
        // Start noise low: the data decide whether it must grow.
        x0[d + 1] = (1e-4f64).ln();
        if r > 0 {
            for (i, v) in x0.iter_mut().enumerate().take(d + 1) {
                *v = pm[i] + ps[i] * 0.6 * rng.normal();
            }
        }
        let (x, fx) = minimize_box(&mut f, &x0, &lo, &hi, max_iter);
        if fx.is_finite() && best.as_ref().is_none_or(|(_, b)| fx < *b) {
            best = Some((x, fx));
        }
    }
    best.map(|(x, _)| Hyper::from_vec(&x))
}

/// A GP conditioned on data with fixed hyperparameters.
pub(crate) struct Gp {
    x: Vec<Vec<f64>>,
    cats: Vec<Option<usize>>,
    inv_ls2: Vec<f64>,
    sf2: f64,
    l: Vec<f64>,
    alpha: Vec<f64>,
}

impl Gp {
    /// Conditions on (x, y); `extra_noise[i]` is added to the noise variance of point i.
    pub(crate) fn new(
        x: Vec<Vec<f64>>,
        cats: Vec<Option<usize>>,
        y: &[f64],
        extra_noise: &[f64],
        hyper: &Hyper,
    ) -> Option<Gp> {
        let n = x.len();
        let inv_ls2: Vec<f64> = hyper.log_ls.iter().map(|l| (-2.0 * l).exp()).collect();
        let sf2 = hyper.log_sf2.exp();
        let sn2 = hyper.log_sn2.exp();
        let mut gp = Gp {
            x,
            cats,
            inv_ls2,
            sf2,
            l: Vec::new(),
            alpha: Vec::new(),
        };
        // Retry with growing jitter: fantasies placed on top of observations can make K
        // numerically singular when the fitted noise is tiny.
        for jitter in [1e-9, 1e-7, 1e-5, 1e-3] {
            let mut k = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let v = gp.kernel(&gp.x[i], &gp.x[j]);
                    k[i * n + j] = v;
                    k[j * n + i] = v;
                }
                k[i * n + i] += sn2 + extra_noise.get(i).copied().unwrap_or(0.0) + jitter * sf2;
            }
            if cholesky(&mut k, n) {
                let mut alpha = y.to_vec();
                solve_lower(&k, n, &mut alpha);
                solve_upper_t(&k, n, &mut alpha);
                gp.l = k;
                gp.alpha = alpha;
                return Some(gp);
            }
        }
        None
    }

    fn kernel(&self, a: &[f64], b: &[f64]) -> f64 {
        let mut r2 = 0.0;
        for c in 0..self.cats.len() {
            let v = diff(a[c], b[c], self.cats[c]);
            r2 += v * v * self.inv_ls2[c];
        }
        matern52(r2, self.sf2).0
    }

    /// Posterior mean and variance of the latent function at `q`.
    pub(crate) fn predict(&self, q: &[f64]) -> (f64, f64) {
        let n = self.x.len();
        let mut kv: Vec<f64> = self.x.iter().map(|xi| self.kernel(xi, q)).collect();
        let mu: f64 = kv.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        solve_lower(&self.l, n, &mut kv);
        let var = self.sf2 - kv.iter().map(|v| v * v).sum::<f64>();
        (mu, var.max(1e-12 * self.sf2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<Vec<f64>>, Vec<f64>) {
        let x: Vec<Vec<f64>> = (0..12)
            .map(|i| vec![i as f64 / 11.0, ((i * 7) % 12) as f64 / 11.0])
            .collect();
        let y: Vec<f64> = x.iter().map(|p| (6.0 * p[0]).sin() + 0.5 * p[1] - 0.25).collect();
        (x, y)
    }

    #[test]
    fn cholesky_solves() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let mut l = a.to_vec();
        assert!(cholesky(&mut l, 3));
        let mut b = vec![1.0, 2.0, 3.0];
        solve_lower(&l, 3, &mut b);
        solve_upper_t(&l, 3, &mut b);
        for i in 0..3 {
            let row: f64 = (0..3).map(|j| a[i * 3 + j] * b[j]).sum();
            assert!((row - [1.0, 2.0, 3.0][i]).abs() < 1e-12);
        }
        let mut not_pd = vec![1.0, 2.0, 2.0, 1.0];
        assert!(!cholesky(&mut not_pd, 2));
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = toy();
        let inp = Inputs::new(x, vec![None, None]);
        let extra = vec![0.0; y.len()];
        let prior = Prior::for_dims(2);
        let (pm, ps) = (prior.mean_vec(2), prior.sd_vec(2));
        let theta = vec![-1.0, -0.5, 0.2, -5.0];
        let mut g = vec![0.0; 4];
        neg_log_posterior(&inp, &y, &extra, &pm, &ps, &theta, &mut g);
        for i in 0..4 {
            let h = 1e-5;
            let mut tp = theta.clone();
            tp[i] += h;
            let mut tm = theta.clone();
            tm[i] -= h;
            let mut scratch = vec![0.0; 4];
            let fp = neg_log_posterior(&inp, &y, &extra, &pm, &ps, &tp, &mut scratch);
            let fm = neg_log_posterior(&inp, &y, &extra, &pm, &ps, &tm, &mut scratch);
            let fd = (fp - fm) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-4 * (1.0 + fd.abs()),
                "dim {i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn posterior_interpolates_training_points() {
        let (x, y) = toy();
        let inp = Inputs::new(x.clone(), vec![None, None]);
        let extra = vec![0.0; y.len()];
        let mut rng = Rng::from_seed(3);
        let h = fit_hyper(&inp, &y, &extra, 3, 100, &mut rng).unwrap();
        let gp = Gp::new(x.clone(), vec![None, None], &y, &extra, &h).unwrap();
        for (xi, yi) in x.iter().zip(&y) {
            let (mu, var) = gp.predict(xi);
            assert!((mu - yi).abs() < 0.02, "mu {mu} vs y {yi}");
            assert!(var < 0.01, "variance {var} at a training point");
        }
        // Far from the data the variance is larger than at the data.
        let (_, v_far) = gp.predict(&[3.0, 3.0]);
        assert!(v_far > 0.05, "variance {v_far} far from the data");
    }

    #[test]
    fn lbfgs_finds_quadratic_minimum_inside_box() {
        let mut f = |x: &[f64], g: &mut [f64]| {
            g[0] = 2.0 * (x[0] - 1.0);
            g[1] = 20.0 * (x[1] + 2.0);
            (x[0] - 1.0).powi(2) + 10.0 * (x[1] + 2.0).powi(2)
        };
        let (x, _) = minimize_box(&mut f, &[0.0, 0.0], &[-5.0, -1.0], &[5.0, 5.0], 100);
        assert!((x[0] - 1.0).abs() < 1e-4);
        assert!((x[1] + 1.0).abs() < 1e-12, "pinned at bound, got {}", x[1]);
    }
}
