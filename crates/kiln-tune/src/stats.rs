//! Normal distribution helpers and the (log) expected-improvement kernel.
//!
//! `std` has no `erf`, so `erfc` is computed here: a positive-term series below x = 2 and a
//! continued fraction above, both accurate to ~1e-14 relative, which is all EI needs.

use std::f64::consts::PI;

const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// Complementary error function.
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n (2x^2)^n x / (1*3*...*(2n+1)): no cancellation.
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - 2.0 / PI.sqrt() * (-x2).exp() * sum
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), modified Lentz.
        let tiny = 1e-300;
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for n in 1..500 {
            let a = n as f64 / 2.0;
            d = x + a * d;
            if d.abs() < tiny {
                d = tiny;
            }
            d = 1.0 / d;
            c = x + a / c;
            if c.abs() < tiny {
                c = tiny;
            }
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x * x).exp() / (PI.sqrt() * f)
    }
}

/// Standard normal density.
pub(crate) fn norm_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * PI).sqrt()
}

/// Standard normal distribution function.
pub(crate) fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / SQRT_2)
}

/// ln(φ(z) + zΦ(z)), the log of expected improvement for unit σ, stable for very negative z
/// (where EI underflows but its ordering still guides the search).
pub(crate) fn log_h(z: f64) -> f64 {
    if z > -20.0 {
        let h = norm_pdf(z) + z * norm_cdf(z);
        if h > 0.0 {
            return h.ln();
        }
    }
    // Asymptotic expansion of the Mills ratio: h(z) ≈ φ(z)/z² (1 − 3/z² + 15/z⁴ − 105/z⁶).
    let z2 = z * z;
    let series = 1.0 - 3.0 / z2 + 15.0 / (z2 * z2) - 105.0 / (z2 * z2 * z2);
    -0.5 * z2 - 0.5 * (2.0 * PI).ln() - z2.ln() + series.max(1e-300).ln()
}

/// Expected improvement below `best` of a normal N(mu, sigma²) (for minimisation).
#[cfg(test)]
pub(crate) fn expected_improvement(mu: f64, sigma: f64, best: f64) -> f64 {
    if sigma <= 0.0 {
        return (best - mu).max(0.0);
    }
    let z = (best - mu) / sigma;
    sigma * (norm_pdf(z) + z * norm_cdf(z))
}

/// ln of [`expected_improvement`], finite wherever sigma > 0.
pub(crate) fn log_expected_improvement(mu: f64, sigma: f64, best: f64) -> f64 {
    if sigma <= 1e-300 {
        let ei = (best - mu).max(0.0);
        return if ei > 0.0 { ei.ln() } else { f64::NEG_INFINITY };
    }
    sigma.ln() + log_h((best - mu) / sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_known_values() {
        let cases = [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (1.999, 0.004_698_443_348_629_488),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_034_8e-12),
            (-1.0, 1.842_700_792_949_715),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(((got - want) / want).abs() < 1e-9, "erfc({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn log_h_is_continuous_across_branches() {
        let a = log_h(-19.999_999);
        let b = log_h(-20.000_001);
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        // Large positive z: h(z) ≈ z.
        assert!((log_h(10.0) - 10f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn ei_matches_log_ei() {
        for &(mu, s, b) in &[(0.0, 1.0, 0.5), (1.0, 0.3, 0.0), (-2.0, 2.0, -1.0)] {
            let ei: f64 = expected_improvement(mu, s, b);
            assert!((ei.ln() - log_expected_improvement(mu, s, b)).abs() < 1e-9);
        }
    }
}
