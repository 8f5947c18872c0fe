//! Learning objectives: gradients and hessians, intercepts, and output transforms, following
//! xgboost's definitions so a model file means the same thing in both.

use rayon::prelude::*;

/// A gradient/hessian pair for one row (and one output group).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GradPair {
    /// First derivative of the loss w.r.t. the margin, times the instance weight.
    pub g: f32,
    /// Second derivative, times the instance weight.
    pub h: f32,
}

/// A training objective (`objective` hyperparameter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// `reg:squarederror` (alias `reg:linear`).
    SquaredError,
    /// `reg:logistic`.
    RegLogistic,
    /// `reg:absoluteerror`.
    AbsoluteError,
    /// `reg:pseudohubererror` with `huber_slope`.
    PseudoHuber {
        /// Huber slope (delta).
        slope: f32,
    },
    /// `reg:gamma`.
    Gamma,
    /// `reg:tweedie` with `tweedie_variance_power`.
    Tweedie {
        /// Variance power rho in (1, 2).
        rho: f32,
    },
    /// `count:poisson` (its hessian uses xgboost's fixed `max_delta_step` of 0.7).
    Poisson,
    /// `binary:logistic`.
    BinaryLogistic,
    /// `binary:logitraw`.
    BinaryLogitRaw,
    /// `binary:hinge`.
    BinaryHinge,
    /// `multi:softmax`.
    Softmax {
        /// Number of classes.
        num_class: usize,
    },
    /// `multi:softprob`.
    Softprob {
        /// Number of classes.
        num_class: usize,
    },
}

/// The `b` with `logit(b) == b` (to f32 precision): a logitraw intercept every xgboost version
/// reads the same way.
pub const LOGITRAW_BASE_SCORE: f32 = 0.659_046_05;

/// xgboost's `max_delta_step` inside the Poisson objective (not the tree parameter).
pub const POISSON_MAX_DELTA_STEP: f32 = 0.7;

impl Objective {
    /// The name xgboost writes into model files.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::SquaredError => "reg:squarederror",
            Objective::RegLogistic => "reg:logistic",
            Objective::AbsoluteError => "reg:absoluteerror",
            Objective::PseudoHuber { .. } => "reg:pseudohubererror",
            Objective::Gamma => "reg:gamma",
            Objective::Tweedie { .. } => "reg:tweedie",
            Objective::Poisson => "count:poisson",
            Objective::BinaryLogistic => "binary:logistic",
            Objective::BinaryLogitRaw => "binary:logitraw",
            Objective::BinaryHinge => "binary:hinge",
            Objective::Softmax { .. } => "multi:softmax",
            Objective::Softprob { .. } => "multi:softprob",
        }
    }

    /// Number of output groups (trees per round).
    pub fn n_groups(&self) -> usize {
        match self {
            Objective::Softmax { num_class } | Objective::Softprob { num_class } => *num_class,
            _ => 1,
        }
    }

    /// Whether this is a multi-class objective.
    pub fn is_multiclass(&self) -> bool {
        self.n_groups() > 1
    }

    /// Whether labels must be 0/1-like classes.
    pub fn is_binary(&self) -> bool {
        matches!(
            self,
            Objective::BinaryLogistic | Objective::BinaryLogitRaw | Objective::BinaryHinge
        )
    }

    /// Checks one label; returns the reason it is invalid.
    pub fn check_label(&self, y: f32) -> Result<(), String> {
        match self {
            Objective::RegLogistic | Objective::BinaryLogistic | Objective::BinaryLogitRaw
                if !(0.0..=1.0).contains(&y) =>
            {
                Err("must be in [0, 1]".into())
            }
            Objective::BinaryHinge if !(0.0..=1.0).contains(&y) => Err("must be 0 or 1".into()),
            Objective::Gamma if y <= 0.0 => Err("must be > 0 for reg:gamma".into()),
            Objective::Tweedie { .. } | Objective::Poisson if y < 0.0 => {
                Err(format!("must be >= 0 for {}", self.name()))
            }
            Objective::Softmax { num_class } | Objective::Softprob { num_class }
                if y < 0.0 || y.fract() != 0.0 || y as usize >= *num_class =>
            {
                Err(format!(
                    "must be an integer class index in [0, {}) (num_class = {num_class})",
                    num_class
                ))
            }
            _ => Ok(()),
        }
    }

    /// Intercept in "probability" space (what `base_score` holds) estimated from the labels, as
    /// xgboost >= 2 does when `base_score` is not set: the weighted mean for mean-type losses,
    /// the weighted median for L1.
    pub fn default_base_score(&self, labels: &[f32], weights: Option<&[f32]>) -> f32 {
        match self {
            Objective::Softmax { .. } | Objective::Softprob { .. } => 0.5,
            Objective::BinaryHinge => 0.0,
            // xgboost 3.x reads a logitraw base_score as a margin, older versions as a
            // probability; at the fixed point of logit(b) = b both readings agree.
            Objective::BinaryLogitRaw => LOGITRAW_BASE_SCORE,
            Objective::AbsoluteError | Objective::PseudoHuber { .. } => weighted_median(labels, weights),
            _ => {
                let (s, sw) = self.label_mean_sums(labels, weights).unwrap_or((0.0, 0.0));
                self.base_score_of_mean(s, sw)
            }
        }
    }

    /// `(Σ w·y, Σ w)` when the default `base_score` is the labels' mean (else None); sums of
    /// several parts of the data give the `base_score` of all of it ([`Self::base_score_of_mean`]).
    pub fn label_mean_sums(&self, labels: &[f32], weights: Option<&[f32]>) -> Option<(f64, f64)> {
        if matches!(
            self,
            Objective::Softmax { .. }
                | Objective::Softprob { .. }
                | Objective::BinaryHinge
                | Objective::BinaryLogitRaw
                | Objective::AbsoluteError
                | Objective::PseudoHuber { .. }
        ) {
            return None;
        }
        let (mut s, mut sw) = (0.0f64, 0.0f64);
        for (i, &y) in labels.iter().enumerate() {
            let w = f64::from(weights.map_or(1.0, |w| w[i]));
            s += w * f64::from(y);
            sw += w;
        }
        Some((s, sw))
    }

    /// The default `base_score` from the labels' [`Self::label_mean_sums`].
    pub fn base_score_of_mean(&self, s: f64, sw: f64) -> f32 {
        let mean = if sw > 0.0 { (s / sw) as f32 } else { 0.5 };
        match self {
            // Keep the logit finite when every label is the same class.
            Objective::BinaryLogistic | Objective::BinaryLogitRaw | Objective::RegLogistic => {
                mean.clamp(1e-6, 1.0 - 1e-6)
            }
            Objective::Gamma | Objective::Tweedie { .. } | Objective::Poisson => mean.max(1e-6),
            _ => mean,
        }
    }

    /// `base_score` → margin (xgboost's `ProbToMargin`).
    pub fn prob_to_margin(&self, base_score: f32) -> f32 {
        match self {
            Objective::BinaryLogistic | Objective::RegLogistic => -(1.0 / base_score - 1.0).ln(),
            Objective::Gamma | Objective::Tweedie { .. } | Objective::Poisson => base_score.ln(),
            _ => base_score,
        }
    }

    /// Gradients for all rows. `margins` and `out` are row-major `n × n_groups`.
    pub fn gradients(
        &self,
        margins: &[f32],
        labels: &[f32],
        weights: Option<&[f32]>,
        scale_pos_weight: f32,
        out: &mut [GradPair],
    ) {
        let k = self.n_groups();
        const BLOCK: usize = 8192;
        out.par_chunks_mut(BLOCK * k)
            .zip(margins.par_chunks(BLOCK * k))
            .enumerate()
            .for_each(|(b, (out, m))| {
                let rows = b * BLOCK..b * BLOCK + m.len() / k;
                let ws = weights.map(|w| &w[rows.clone()]);
                self.gradients_block(m, &labels[rows], ws, scale_pos_weight, out);
            });
    }

    /// Gradients for a block of rows: `m` and `out` are row-major `rows × n_groups`, `ys` (and
    /// `ws`) one per row. (Always inlined, so a caller compiled for wider vectors gets them.)
    #[inline(always)]
    pub fn gradients_block(
        &self,
        m: &[f32],
        ys: &[f32],
        ws: Option<&[f32]>,
        scale_pos_weight: f32,
        out: &mut [GradPair],
    ) {
        if matches!(
            self,
            Objective::BinaryLogistic | Objective::BinaryLogitRaw | Objective::RegLogistic
        ) {
            // The common case gets a branch-free loop the compiler vectorizes (with an exp that
            // is plain arithmetic instead of a libm call).
            logistic_block(m, ys, ws, scale_pos_weight, out);
            return;
        }
        let k = self.n_groups();
        for (i, &y) in ys.iter().enumerate() {
            let w = ws.map_or(1.0, |w| w[i]);
            self.row_gradient(
                &m[i * k..(i + 1) * k],
                y,
                w,
                scale_pos_weight,
                &mut out[i * k..(i + 1) * k],
            );
        }
    }

    /// Gradient of one row (`m` and `out` have `n_groups` entries).
    #[inline]
    pub fn row_gradient(&self, m: &[f32], y: f32, w: f32, spw: f32, out: &mut [GradPair]) {
        let p = m[0];
        let gp = |g: f32, h: f32| GradPair { g: g * w, h: h * w };
        out[0] = match *self {
            Objective::SquaredError => gp(p - y, 1.0),
            Objective::RegLogistic | Objective::BinaryLogistic | Objective::BinaryLogitRaw => {
                let s = sigmoid(p);
                let w = if y == 1.0 { w * spw } else { w };
                GradPair {
                    g: (s - y) * w,
                    h: (s * (1.0 - s)).max(1e-16) * w,
                }
            }
            Objective::AbsoluteError => {
                let d = p - y;
                gp(
                    if d > 0.0 {
                        1.0
                    } else if d < 0.0 {
                        -1.0
                    } else {
                        0.0
                    },
                    1.0,
                )
            }
            Objective::PseudoHuber { slope } => {
                let z = p - y;
                let s2 = slope * slope;
                let scale = (1.0 + z * z / s2).sqrt();
                gp(z / scale, s2 / ((s2 + z * z) * scale))
            }
            Objective::Gamma => {
                let e = (-p).exp();
                gp(1.0 - y * e, y * e)
            }
            Objective::Tweedie { rho } => {
                let a = ((1.0 - rho) * p).exp();
                let b = ((2.0 - rho) * p).exp();
                gp(-y * a + b, -y * (1.0 - rho) * a + (2.0 - rho) * b)
            }
            Objective::Poisson => gp(p.exp() - y, (p + POISSON_MAX_DELTA_STEP).exp()),
            Objective::BinaryHinge => {
                let yy = 2.0 * y - 1.0;
                if p * yy < 1.0 {
                    gp(-yy, 1.0)
                } else {
                    gp(0.0, f32::MIN_POSITIVE)
                }
            }
            Objective::Softmax { num_class } | Objective::Softprob { num_class } => {
                let mut probs = [0f32; 64];
                let mut heap;
                let probs: &mut [f32] = if num_class <= 64 {
                    &mut probs[..num_class]
                } else {
                    heap = vec![0f32; num_class];
                    &mut heap
                };
                softmax(m, probs);
                let label = y as usize;
                for c in 0..num_class {
                    let pc = probs[c];
                    let t = if c == label { 1.0 } else { 0.0 };
                    out[c] = gp(pc - t, (2.0 * pc * (1.0 - pc)).max(1e-16));
                }
                return;
            }
        };
    }

    /// Margins → predictions (`out` has `n_outputs` entries per row, see [`Self::n_outputs`]).
    pub fn transform(&self, margins: &[f32], out: &mut Vec<f32>) {
        out.clear();
        match *self {
            Objective::Softprob { num_class } => {
                out.resize(margins.len(), 0.0);
                out.par_chunks_mut(num_class)
                    .zip(margins.par_chunks(num_class))
                    .for_each(|(o, m)| softmax(m, o));
            }
            Objective::Softmax { num_class } => {
                out.extend(margins.chunks(num_class).map(|m| argmax(m) as f32));
            }
            Objective::RegLogistic | Objective::BinaryLogistic => {
                const BLOCK: usize = 1 << 14;
                out.resize(margins.len(), 0.0);
                out.par_chunks_mut(BLOCK)
                    .zip(margins.par_chunks(BLOCK))
                    .for_each(|(o, m)| sigmoid_block(m, o));
            }
            _ => {
                out.par_extend(margins.par_iter().with_min_len(1 << 14).map(|&m| self.transform_one(m)));
            }
        }
    }

    /// Predictions that metrics see (xgboost's `EvalTransform`): class probabilities for
    /// `multi:softmax` too.
    pub fn eval_transform(&self, margins: &[f32], out: &mut Vec<f32>) {
        match *self {
            Objective::Softmax { num_class } => Objective::Softprob { num_class }.transform(margins, out),
            _ => self.transform(margins, out),
        }
    }

    /// Predicted values per row in `transform`'s output.
    pub fn n_outputs(&self) -> usize {
        match self {
            Objective::Softprob { num_class } => *num_class,
            _ => 1,
        }
    }

    #[inline]
    fn transform_one(&self, m: f32) -> f32 {
        match self {
            Objective::RegLogistic | Objective::BinaryLogistic => sigmoid(m),
            Objective::Gamma | Objective::Tweedie { .. } | Objective::Poisson => m.exp(),
            Objective::BinaryHinge => {
                if m > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            _ => m,
        }
    }
}

/// Logistic gradients for a block of rows (see [`Objective::gradients`]).
#[inline(always)]
fn logistic_block(m: &[f32], ys: &[f32], ws: Option<&[f32]>, spw: f32, out: &mut [GradPair]) {
    let one = |i: usize, w: f32| {
        let p = 1.0 / (1.0 + fast_exp(-m[i]));
        let y = ys[i];
        let w = if y == 1.0 { w * spw } else { w };
        GradPair {
            g: (p - y) * w,
            h: (p * (1.0 - p)).max(1e-16) * w,
        }
    };
    match ws {
        None => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = one(i, 1.0);
            }
        }
        Some(ws) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = one(i, ws[i]);
            }
        }
    }
}

/// `e^x` in `f32` within about 2 ulp, from arithmetic only so loops over it vectorize:
/// `x = k ln2 + r` with `|r| <= ln2/2`, a degree-7 Taylor polynomial for `e^r`, and `2^k` built
/// from its exponent bits. Inputs are clamped to [-87, 88] (results stay normal and finite).
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^k from the bits of the rounding sum, whose low mantissa bits hold k: a float-to-int `as`
    // conversion (saturating) would keep the loop from vectorizing.
    let kb = (x * LOG2E + ROUND).to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((kb + 127) as u32) << 23);
    p * scale
}

/// Logistic function as xgboost computes it in `f32`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// [`sigmoid`] of each margin into `out` (as long), the same bits: with AVX2 and FMA, four at
/// a time by the algorithm of glibc's `expf` (see [`exp4`]; about twice as fast as a libm
/// call per row, which metrics evaluated every round pay on every row).
fn sigmoid_block(margins: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above), the one requirement for
        // calling a function compiled with them enabled.
        return unsafe { sigmoid_block_avx2(margins, out) };
    }
    for (o, &m) in out.iter_mut().zip(margins) {
        *o = sigmoid(m);
    }
}

/// 2^(i/32) for `i` in `0..32` as `f64` bits, less `i << 47` (the part of the exponent that
/// [`exp4`] adds back from the rounded quotient): the table of glibc's `expf`.
#[cfg(target_arch = "x86_64")]
const EXP2_32THS: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `e^x` of four floats with `|x| < 87`, as glibc's `expf` (2.28 and later) computes it: in `f64`, `x·32/ln 2 =
/// k + r` (`k` rounded to the nearest integer, `|r| <= 1/2`), `e^x = 2^(k/32) · 2^(r/32)` with
/// the first factor from [`EXP2_32THS`] and the exponent bits of `k / 32`, the second a cubic
/// in `r`, and one rounding to `f32` at the end. The bits match libm's `expf` on every input
/// tried (the tests compare millions); the final rounding absorbs the last `f64` bits, so the
/// fused multiply-adds change nothing.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp4(x: std::arch::x86_64::__m128) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    const N: f64 = 32.0;
    let inv_ln2_n = _mm256_set1_pd(std::f64::consts::LOG2_E * N);
    // 1.5 * 2^52: adding it rounds to an integer, left in the low mantissa bits.
    let shift = _mm256_set1_pd(6_755_399_441_055_744.0);
    let c0 = _mm256_set1_pd(f64::from_bits(0x3fac_6af8_4b91_2394) / (N * N * N));
    let c1 = _mm256_set1_pd(f64::from_bits(0x3fce_bfce_50fa_c4f3) / (N * N));
    let c2 = _mm256_set1_pd(f64::from_bits(0x3fe6_2e42_ff0c_52d6) / N);
    let xd = _mm256_cvtps_pd(x);
    let z = _mm256_mul_pd(inv_ln2_n, xd);
    let k = _mm256_add_pd(z, shift);
    let ki = _mm256_castpd_si256(k);
    let r = _mm256_sub_pd(z, _mm256_sub_pd(k, shift));
    let slot = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    // SAFETY: every index is below 32, the table's length; AVX2 is enabled.
    let t = unsafe { _mm256_i64gather_epi64::<8>(EXP2_32THS.as_ptr().cast(), slot) };
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let p = _mm256_fmadd_pd(c0, r, c1);
    let y = _mm256_fmadd_pd(c2, r, _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(p, _mm256_mul_pd(r, r), y);
    _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
}

/// [`sigmoid_block`] with AVX2 and FMA: four margins at a time, those beyond ±87 (where
/// `expf` leaves the normal range) and the last few by [`sigmoid`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_block_avx2(margins: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let one = _mm_set1_ps(1.0);
    let mut outs = out.chunks_exact_mut(4);
    let mut ins = margins.chunks_exact(4);
    for (o, m) in (&mut outs).zip(&mut ins) {
        // Without a short cut, so that the four tests are one vector compare.
        let in_range = m.iter().fold(true, |a, &x| a & (x.abs() < 87.0));
        if in_range {
            // SAFETY: `m` and `o` hold four floats each (unaligned loads and stores).
            let x = unsafe { _mm_loadu_ps(m.as_ptr()) };
            let e = exp4(_mm_xor_ps(x, _mm_set1_ps(-0.0)));
            // SAFETY: as above.
            unsafe { _mm_storeu_ps(o.as_mut_ptr(), _mm_div_ps(one, _mm_add_ps(one, e))) };
        } else {
            for (o, &x) in o.iter_mut().zip(m) {
                *o = sigmoid(x);
            }
        }
    }
    for (o, &x) in outs.into_remainder().iter_mut().zip(ins.remainder()) {
        *o = sigmoid(x);
    }
}

/// Numerically stable softmax of `m` into `out`.
pub fn softmax(m: &[f32], out: &mut [f32]) {
    let mx = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &x) in out.iter_mut().zip(m) {
        *o = (x - mx).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(m: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in m.iter().enumerate() {
        if x > m[best] {
            best = i;
        }
    }
    best
}

/// Weighted median (lower median on ties of weight), as used for L1 intercepts and leaves.
pub fn weighted_median(vals: &[f32], weights: Option<&[f32]>) -> f32 {
    weighted_quantile(
        vals.iter()
            .enumerate()
            .map(|(i, &v)| (v, weights.map_or(1.0, |w| w[i])))
            .collect(),
        0.5,
    )
}

/// Weighted quantile of (value, weight) pairs; 0 for empty input.
pub fn weighted_quantile(mut pairs: Vec<(f32, f32)>, alpha: f64) -> f32 {
    pairs.retain(|p| p.1 > 0.0 && !p.0.is_nan());
    if pairs.is_empty() {
        return 0.0;
    }
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pairs.iter().map(|p| f64::from(p.1)).sum();
    let target = alpha * total;
    let mut acc = 0.0;
    for (i, &(v, w)) in pairs.iter().enumerate() {
        acc += f64::from(w);
        if acc >= target {
            // Interpolate when the target falls exactly on a boundary, like numpy's median.
            if (acc - target).abs() < 1e-9 * total.max(1.0) && i + 1 < pairs.len() {
                return (v + pairs[i + 1].0) / 2.0;
            }
            return v;
        }
    }
    pairs[pairs.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grad(obj: Objective, m: f32, y: f32) -> GradPair {
        let mut out = [GradPair::default()];
        obj.row_gradient(&[m], y, 1.0, 1.0, &mut out);
        out[0]
    }

    /// Central finite differences of a loss written independently of the gradient code.
    fn numeric(loss: impl Fn(f64) -> f64, m: f64) -> (f64, f64) {
        let e = 1e-4;
        let g = (loss(m + e) - loss(m - e)) / (2.0 * e);
        let h = (loss(m + e) - 2.0 * loss(m) + loss(m - e)) / (e * e);
        (g, h)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn gradients_match_finite_differences_of_the_loss() {
        type Case = (Objective, Box<dyn Fn(f64, f64) -> f64>, Vec<(f32, f32)>);
        let cases: Vec<Case> = vec![
            (
                Objective::SquaredError,
                Box::new(|m: f64, y: f64| 0.5 * (m - y).powi(2)),
                vec![(0.3, 1.5), (-2.0, 0.0)],
            ),
            (
                Objective::BinaryLogistic,
                Box::new(|m: f64, y: f64| {
                    let p = 1.0 / (1.0 + (-m).exp());
                    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
                }),
                vec![(0.3, 1.0), (-1.2, 0.0), (2.0, 0.0)],
            ),
            (
                Objective::PseudoHuber { slope: 1.0 },
                Box::new(|m: f64, y: f64| (1.0 + (m - y).powi(2)).sqrt() - 1.0),
                vec![(0.3, 1.5), (2.0, -1.0)],
            ),
            (
                Objective::Gamma,
                // negative log-likelihood with log link, up to terms free of m
                Box::new(|m: f64, y: f64| y * (-m).exp() + m),
                vec![(0.3, 1.5), (-1.0, 0.2)],
            ),
            (
                Objective::Tweedie { rho: 1.5 },
                Box::new(|m: f64, y: f64| {
                    -y * ((1.0 - 1.5) * m).exp() / (1.0 - 1.5) + ((2.0 - 1.5) * m).exp() / (2.0 - 1.5)
                }),
                vec![(0.3, 1.5), (-1.0, 0.0)],
            ),
        ];
        for (obj, loss, points) in cases {
            for (m, y) in points {
                let (g, h) = numeric(|x| loss(x, f64::from(y)), f64::from(m));
                let got = grad(obj, m, y);
                assert!(close(f64::from(got.g), g, 1e-3), "{obj:?} g {} vs {g}", got.g);
                assert!(close(f64::from(got.h), h, 1e-2), "{obj:?} h {} vs {h}", got.h);
            }
        }
    }

    #[test]
    fn poisson_hinge_absolute_by_hand() {
        let g = grad(Objective::Poisson, 0.5, 2.0);
        assert!(close(f64::from(g.g), 0.5f64.exp() - 2.0, 1e-6));
        assert!(close(f64::from(g.h), 1.2f64.exp(), 1e-6));
        assert_eq!(grad(Objective::BinaryHinge, 0.5, 1.0), GradPair { g: -1.0, h: 1.0 });
        assert_eq!(grad(Objective::BinaryHinge, 0.5, 0.0), GradPair { g: 1.0, h: 1.0 });
        assert_eq!(grad(Objective::BinaryHinge, 2.0, 1.0).g, 0.0);
        assert_eq!(grad(Objective::AbsoluteError, 2.0, 1.0), GradPair { g: 1.0, h: 1.0 });
        assert_eq!(grad(Objective::AbsoluteError, 0.0, 1.0), GradPair { g: -1.0, h: 1.0 });
        // logitraw and reg:logistic share binary:logistic's gradient
        assert_eq!(
            grad(Objective::BinaryLogitRaw, 0.7, 1.0),
            grad(Objective::BinaryLogistic, 0.7, 1.0)
        );
        assert_eq!(
            grad(Objective::RegLogistic, 0.7, 0.3),
            grad(Objective::BinaryLogistic, 0.7, 0.3)
        );
    }

    #[test]
    fn softmax_gradient_by_hand() {
        let obj = Objective::Softprob { num_class: 3 };
        let mut out = [GradPair::default(); 3];
        obj.row_gradient(&[1.0, 2.0, 0.5], 1.0, 2.0, 1.0, &mut out);
        let e = [1.0f64.exp(), 2.0f64.exp(), 0.5f64.exp()];
        let s: f64 = e.iter().sum();
        for c in 0..3 {
            let p = e[c] / s;
            let t = if c == 1 { 1.0 } else { 0.0 };
            assert!(close(f64::from(out[c].g), 2.0 * (p - t), 1e-6));
            assert!(close(f64::from(out[c].h), 2.0 * 2.0 * p * (1.0 - p), 1e-6));
        }
    }

    #[test]
    fn weights_and_scale_pos_weight_scale_gradients() {
        let mut out = [GradPair::default()];
        Objective::BinaryLogistic.row_gradient(&[0.0], 1.0, 2.0, 3.0, &mut out);
        assert_eq!(
            out[0],
            GradPair {
                g: -0.5 * 6.0,
                h: 0.25 * 6.0
            }
        );
        Objective::BinaryLogistic.row_gradient(&[0.0], 0.0, 2.0, 3.0, &mut out);
        assert_eq!(
            out[0],
            GradPair {
                g: 0.5 * 2.0,
                h: 0.25 * 2.0
            }
        );
    }

    #[test]
    fn intercepts_and_transforms() {
        let y = [0.0, 1.0, 1.0, 1.0];
        let b = Objective::BinaryLogistic.default_base_score(&y, None);
        assert!((b - 0.75).abs() < 1e-6);
        assert!((Objective::BinaryLogistic.prob_to_margin(b) - 3f32.ln()).abs() < 1e-5);
        assert_eq!(Objective::AbsoluteError.default_base_score(&[1.0, 5.0, 2.0], None), 2.0);
        assert_eq!(Objective::Poisson.prob_to_margin(1.0), 0.0);
        let mut out = Vec::new();
        Objective::Softmax { num_class: 3 }.transform(&[0.1, 0.5, 0.2, 3.0, 1.0, 2.0], &mut out);
        assert_eq!(out, vec![1.0, 0.0]);
        Objective::Softprob { num_class: 2 }.transform(&[0.0, 0.0], &mut out);
        assert_eq!(out, vec![0.5, 0.5]);
        Objective::Gamma.transform(&[0.0], &mut out);
        assert_eq!(out, vec![1.0]);
    }

    #[test]
    fn the_vectorized_sigmoid_is_sigmoid_bit_for_bit() {
        // Every margin of a fine grid over [-100, 100] (both sides of the ±87 cut-over), random
        // bit patterns, and the special values, in slices of every remainder length.
        let mut m: Vec<f32> = (-1_000_000..=1_000_000).map(|i| i as f32 * 1e-4).collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        m.extend((0..500_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f32::from_bits(x as u32)
        }));
        m.extend([
            0.0,
            -0.0,
            86.99999,
            87.0,
            -87.0,
            88.72283,
            -103.97,
            -104.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let want: Vec<u32> = m.iter().map(|&v| sigmoid(v).to_bits()).collect();
        for skip in 0..4 {
            let mut out = vec![0.0; m.len() - skip];
            sigmoid_block(&m[skip..], &mut out);
            for (i, (o, w)) in out.iter().zip(&want[skip..]).enumerate() {
                let same = o.to_bits() == *w || (o.is_nan() && f32::from_bits(*w).is_nan());
                assert!(same, "margin {}: {o} vs {}", m[skip + i], f32::from_bits(*w));
            }
        }
        let mut out = Vec::new();
        Objective::BinaryLogistic.transform(&m, &mut out);
        assert!(out.iter().zip(&want).all(|(o, w)| o.to_bits() == *w || o.is_nan()));
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (a, b) = (fast_exp(x), x.exp());
            assert!(((a - b) / b).abs() < 4.0 * f32::EPSILON, "{x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(-1000.0) > 0.0 && fast_exp(1000.0).is_finite());
    }

    #[test]
    fn vectorized_logistic_matches_row_gradient() {
        let m: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 50.0).collect();
        let y: Vec<f32> = (0..1000).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let w: Vec<f32> = (0..1000).map(|i| 0.5 + (i % 4) as f32).collect();
        let mut fast = vec![GradPair::default(); 1000];
        Objective::BinaryLogistic.gradients(&m, &y, Some(&w), 2.0, &mut fast);
        for i in 0..1000 {
            let mut one = [GradPair::default()];
            Objective::BinaryLogistic.row_gradient(&m[i..=i], y[i], w[i], 2.0, &mut one);
            assert!((fast[i].g - one[0].g).abs() < 1e-5 * (1.0 + one[0].g.abs()), "{i}");
            assert!((fast[i].h - one[0].h).abs() < 1e-5 * (1.0 + one[0].h.abs()), "{i}");
        }
    }

    #[test]
    fn weighted_median_examples() {
        assert_eq!(weighted_median(&[3.0, 1.0, 2.0], None), 2.0);
        assert_eq!(weighted_median(&[1.0, 2.0, 3.0, 4.0], None), 2.5);
        assert_eq!(weighted_median(&[1.0, 2.0, 3.0], Some(&[1.0, 1.0, 5.0])), 3.0);
    }
}
