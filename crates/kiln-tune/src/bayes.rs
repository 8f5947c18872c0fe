//! The Bayesian strategy: GP surrogate + expected improvement, with kriging-believer fantasies
//! for trials that are still running.
//!
//! Pipeline for one suggestion:
//! 1. Losses (objectives turned into "smaller is better") are shifted and Box–Cox transformed
//!    with λ ∈ [0, 1] chosen by maximum likelihood, then standardised. Heavy-tailed objectives
//!    (losses spanning orders of magnitude) end up on a log-like scale the GP can model.
//! 2. Kernel hyperparameters are fitted (MAP) on the finished trials only.
//! 3. Running trials are added as fantasies at the posterior mean (kriging believer): the mean
//!    does not move, the variance at and around them collapses, so concurrent suggestions spread
//!    out. Failed trials are added at the worst observed value (constant liar) so the search
//!    does not keep proposing configurations that crash.
//! 4. log EI is maximised over random and perturbed-incumbent candidates, then refined by a
//!    compass search; integers and categories are snapped before every evaluation, so the
//!    acquisition is evaluated at configurations that can actually run.

use serde::{Deserialize, Serialize};

use crate::gp::{Gp, Inputs, fit_hyper};
use crate::rng::{Rng, Stream};
use crate::sampling::{quasi_random_point, random_point};
use crate::space::SearchSpace;
use crate::stats::log_expected_improvement;

/// Settings of the Bayesian strategy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BayesianConfig {
    /// Trials with an objective (own plus warm-start parents) needed before the GP is used;
    /// until then suggestions come from a quasi-random design. `None`: [`default_initial`].
    pub n_initial: Option<usize>,
}

/// Default size of the quasi-random initial design for a space with `d` parameters.
pub fn default_initial(d: usize) -> usize {
    (d + 3).clamp(5, 10)
}

/// Inputs to one model-based proposal, in unit coordinates.
#[derive(Debug, Default, Clone)]
pub(crate) struct Observations {
    /// Points with a known loss.
    pub x: Vec<Vec<f64>>,
    /// Their losses (smaller is better), raw.
    pub loss: Vec<f64>,
    /// Extra noise variance per point, in units of the standardised transformed loss.
    pub extra_noise: Vec<f64>,
    /// Points being evaluated right now.
    pub pending: Vec<Vec<f64>>,
    /// Points whose evaluation failed.
    pub failed: Vec<Vec<f64>>,
}

/// Shifted Box–Cox transform with maximum-likelihood λ ∈ {0, 0.1, …, 1}, then standardised.
pub(crate) fn transform_losses(loss: &[f64]) -> Vec<f64> {
    let n = loss.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sorted = loss.to_vec();
    sorted.sort_by(f64::total_cmp);
    let min = sorted[0];
    let median = sorted[n / 2];
    let max = sorted[n - 1];
    let scale = if median > min { median - min } else { max - min };
    if scale.is_nan() || scale <= 0.0 {
        return vec![0.0; n];
    }
    // The offset keeps the best point from becoming an outlier at ln(0).
    let w: Vec<f64> = loss.iter().map(|v| (v - min) / scale + 0.1).collect();
    let sum_log_w: f64 = w.iter().map(|v| v.ln()).sum();
    let boxcox = |lambda: f64| -> Vec<f64> {
        w.iter()
            .map(|&v| {
                if lambda.abs() < 1e-9 {
                    v.ln()
                } else {
                    (v.powf(lambda) - 1.0) / lambda
                }
            })
            .collect()
    };
    let mut best: Option<(f64, Vec<f64>)> = None;
    for step in 0..=10 {
        let lambda = step as f64 / 10.0;
        let z = boxcox(lambda);
        let var = variance(&z);
        if var.is_nan() || var <= 0.0 {
            continue;
        }
        let ll = -0.5 * n as f64 * var.ln() + (lambda - 1.0) * sum_log_w;
        if best.as_ref().is_none_or(|(b, _)| ll > *b) {
            best = Some((ll, z));
        }
    }
    let z = best.map(|(_, z)| z).unwrap_or_else(|| w.clone());
    standardise(&z)
}

fn variance(z: &[f64]) -> f64 {
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n
}

fn standardise(z: &[f64]) -> Vec<f64> {
    let n = z.len() as f64;
    let mean = z.iter().sum::<f64>() / n;
    let sd = variance(z).sqrt();
    if sd.is_nan() || sd <= 0.0 {
        return vec![0.0; z.len()];
    }
    z.iter().map(|v| (v - mean) / sd).collect()
}

/// A GP ready for acquisition: conditioned on observations and fantasies.
pub(crate) struct Model {
    pub gp: Gp,
    /// Best (lowest) posterior mean over observed and pending points: the EI incumbent.
    pub incumbent: f64,
}

/// Fits the surrogate; `None` when there is nothing to learn (constant losses) or the fit fails.
pub(crate) fn fit_model(space: &SearchSpace, obs: &Observations, seed: u64, trial_index: usize) -> Option<Model> {
    let cats: Vec<Option<usize>> = space.params.iter().map(|p| p.n_categories()).collect();
    let y_full = transform_losses(&obs.loss);
    if y_full.iter().all(|v| *v == 0.0) {
        return None;
    }
    let pick = |idx: &[usize]| -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
        (
            idx.iter().map(|&i| obs.x[i].clone()).collect(),
            idx.iter().map(|&i| y_full[i]).collect(),
            idx.iter().map(|&i| obs.extra_noise[i]).collect(),
        )
    };
    let mut rng = Rng::for_trial(seed, trial_index, Stream::GpFit);
    let (fx, fy, fnoise) = pick(&subset(&obs.loss, MAX_FIT_POINTS));
    let inputs = Inputs::new(fx, cats.clone());
    let hyper = fit_hyper(&inputs, &fy, &fnoise, 3, 60, &mut rng)?;
    let (x, y, noise) = pick(&subset(&obs.loss, MAX_GP_POINTS));
    let n_obs = x.len();
    let base = Gp::new(x.clone(), cats.clone(), &y, &noise, &hyper)?;

    let mut x_all = x;
    let mut y_all = y;
    let mut noise_all = noise;
    for p in &obs.pending {
        x_all.push(p.clone());
        y_all.push(base.predict(p).0);
        noise_all.push(0.0);
    }
    let worst = y_full.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for p in &obs.failed {
        x_all.push(p.clone());
        y_all.push(worst);
        noise_all.push(0.0);
    }
    let gp = if x_all.len() > n_obs {
        Gp::new(x_all.clone(), cats, &y_all, &noise_all, &hyper)?
    } else {
        base
    };
    let incumbent = x_all[..n_obs]
        .iter()
        .chain(&obs.pending)
        .map(|p| gp.predict(p).0)
        .fold(f64::INFINITY, f64::min);
    Some(Model { gp, incumbent })
}

/// Most observations used to fit kernel hyperparameters (cost grows with the cube).
pub(crate) const MAX_FIT_POINTS: usize = 100;
/// Most observations the GP is conditioned on.
pub(crate) const MAX_GP_POINTS: usize = 250;

/// Indices of at most `max` observations: all of them if few enough, else the best half of the
/// allowance by loss plus the most recent of the rest, because the model matters most near the
/// incumbent and where the search currently is. Returned in history order.
pub(crate) fn subset(loss: &[f64], max: usize) -> Vec<usize> {
    let n = loss.len();
    if n <= max {
        return (0..n).collect();
    }
    let mut by_loss: Vec<usize> = (0..n).collect();
    by_loss.sort_by(|&a, &b| loss[a].total_cmp(&loss[b]));
    let mut keep = vec![false; n];
    for &i in by_loss.iter().take(max / 2) {
        keep[i] = true;
    }
    let mut left = max - max / 2;
    for i in (0..n).rev() {
        if left == 0 {
            break;
        }
        if !keep[i] {
            keep[i] = true;
            left -= 1;
        }
    }
    (0..n).filter(|&i| keep[i]).collect()
}

impl Model {
    /// log EI at a (snapped) unit point.
    pub(crate) fn log_ei(&self, x: &[f64]) -> f64 {
        let (mu, var) = self.gp.predict(x);
        log_expected_improvement(mu, var.sqrt(), self.incumbent)
    }
}

/// Maximises log EI: random candidates plus perturbations of the best observed points, then a
/// compass search from the most promising few.
pub(crate) fn maximize_acquisition(space: &SearchSpace, model: &Model, obs: &Observations, rng: &mut Rng) -> Vec<f64> {
    let d = space.len();
    let cats: Vec<Option<usize>> = space.params.iter().map(|p| p.n_categories()).collect();
    let mut cands: Vec<Vec<f64>> = (0..1000).map(|_| random_point(space, rng)).collect();

    let mut order: Vec<usize> = (0..obs.loss.len()).collect();
    order.sort_by(|&a, &b| obs.loss[a].total_cmp(&obs.loss[b]));
    let p_mutate = (2.0 / d as f64).clamp(0.2, 1.0);
    for &i in order.iter().take(5) {
        for _ in 0..100 {
            let sigma = [0.01, 0.05, 0.2][rng.below(3)];
            let mut u = obs.x[i].clone();
            let mut changed = false;
            for (j, uj) in u.iter_mut().enumerate() {
                if rng.uniform() < p_mutate {
                    changed = true;
                    *uj = match cats[j] {
                        Some(_) => rng.uniform(),
                        None => (*uj + sigma * rng.normal()).clamp(0.0, 1.0),
                    };
                }
            }
            if !changed {
                let j = rng.below(d);
                u[j] = match cats[j] {
                    Some(_) => rng.uniform(),
                    None => (u[j] + sigma * rng.normal()).clamp(0.0, 1.0),
                };
            }
            cands.push(space.snap(&u));
        }
    }

    let mut scored: Vec<(f64, Vec<f64>)> = cands.into_iter().map(|c| (model.log_ei(&c), c)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut starts: Vec<(f64, Vec<f64>)> = Vec::new();
    for (v, c) in scored {
        if starts.len() >= 5 {
            break;
        }
        if !starts.iter().any(|(_, s)| s == &c) {
            starts.push((v, c));
        }
    }
    let mut best: Option<(f64, Vec<f64>)> = None;
    for (v, c) in starts {
        let (v, c) = compass_search(space, model, &cats, c, v);
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, c));
        }
    }
    match best {
        Some((_, c)) => c,
        None => random_point(space, rng),
    }
}

/// Coordinate-wise pattern search on log EI with step halving; categorical coordinates try
/// every other category.
fn compass_search(
    space: &SearchSpace,
    model: &Model,
    cats: &[Option<usize>],
    mut x: Vec<f64>,
    mut fx: f64,
) -> (f64, Vec<f64>) {
    let d = x.len();
    let mut step = 0.05;
    let mut evals = 0;
    let budget = 60 * d + 60;
    while step > 1e-4 && evals < budget {
        let mut improved = false;
        for j in 0..d {
            let trials: Vec<f64> = match cats[j] {
                Some(k) => (0..k).map(|c| (c as f64 + 0.5) / k as f64).collect(),
                None => vec![x[j] + step, x[j] - step],
            };
            for t in trials {
                if !(0.0..=1.0).contains(&t) || t == x[j] {
                    continue;
                }
                let mut y = x.clone();
                y[j] = t;
                let y = space.snap(&y);
                if y == x {
                    continue;
                }
                evals += 1;
                let fy = model.log_ei(&y);
                if fy > fx {
                    x = y;
                    fx = fy;
                    improved = true;
                    break;
                }
            }
        }
        if !improved {
            step *= 0.5;
        }
    }
    (fx, x)
}

/// One Bayesian proposal: quasi-random while fewer than `n_initial` observations exist (or the
/// model cannot be fitted), model-based afterwards.
pub(crate) fn propose(
    space: &SearchSpace,
    obs: &Observations,
    n_initial: usize,
    seed: u64,
    trial_index: usize,
) -> Vec<f64> {
    if obs.loss.len() < n_initial.max(2) {
        return quasi_random_point(space, seed, trial_index);
    }
    let mut rng = Rng::for_trial(seed, trial_index, Stream::Acquisition);
    match fit_model(space, obs, seed, trial_index) {
        Some(model) => maximize_acquisition(space, &model, obs, &mut rng),
        None => random_point(space, &mut rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_is_monotone_and_standardised() {
        let loss = [1.0, 1e3, 3.0, 10.0, 1e5, 2.0, 50.0];
        let z = transform_losses(&loss);
        for i in 0..loss.len() {
            for j in 0..loss.len() {
                if loss[i] < loss[j] {
                    assert!(z[i] < z[j]);
                }
            }
        }
        let mean: f64 = z.iter().sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 1e-9);
        assert!((variance(&z) - 1.0).abs() < 1e-9);
        assert_eq!(transform_losses(&[2.0, 2.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn subset_keeps_best_and_recent() {
        let loss: Vec<f64> = (0..10)
            .map(|i| [5.0, 0.1, 7.0, 0.2, 9.0, 8.0, 6.0, 4.0, 3.0, 2.0][i])
            .collect();
        assert_eq!(subset(&loss, 20), (0..10).collect::<Vec<_>>());
        // Best two (indices 1, 3) and the two most recent others (8, 9).
        assert_eq!(subset(&loss, 4), vec![1, 3, 8, 9]);
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::space::{Param, Scaling};
    use crate::stats::expected_improvement;

    fn fixture() -> (SearchSpace, Observations) {
        let space = SearchSpace::new(vec![
            Param::continuous("a", 0.0, 1.0, Scaling::Linear),
            Param::continuous("b", 0.0, 1.0, Scaling::Linear),
        ]);
        let mut obs = Observations::default();
        for i in 0..15 {
            let u = crate::sampling::quasi_random_point(&space, 11, i);
            obs.loss
                .push((u[0] - 0.3).powi(2) + (u[1] - 0.6).powi(2) + 0.1 * (9.0 * u[0]).sin());
            obs.x.push(u);
            obs.extra_noise.push(0.0);
        }
        (space, obs)
    }

    #[test]
    fn ei_is_non_negative_and_vanishes_at_observations() {
        let (space, obs) = fixture();
        let model = fit_model(&space, &obs, 1, 15).unwrap();
        let mut rng = Rng::from_seed(9);
        let mut max_ei: f64 = 0.0;
        for _ in 0..500 {
            let x = random_point(&space, &mut rng);
            let (mu, var) = model.gp.predict(&x);
            let ei = expected_improvement(mu, var.sqrt(), model.incumbent);
            assert!(ei >= 0.0);
            assert!((model.log_ei(&x).exp() - ei).abs() <= 1e-9 + 1e-6 * ei);
            max_ei = max_ei.max(ei);
        }
        for x in &obs.x {
            let ei = model.log_ei(x).exp();
            assert!(
                ei < 1e-2 && ei < 0.1 * max_ei,
                "EI {ei} at an observed point (max {max_ei})"
            );
        }
    }

    #[test]
    fn pending_points_get_no_improvement_and_push_proposals_away() {
        let (space, mut obs) = fixture();
        let mut rng = Rng::from_seed(4);
        let model = fit_model(&space, &obs, 1, 15).unwrap();
        let first = maximize_acquisition(&space, &model, &obs, &mut rng);
        let before = model.log_ei(&first).exp();
        obs.pending.push(first.clone());
        let model = fit_model(&space, &obs, 1, 16).unwrap();
        let after = model.log_ei(&first).exp();
        assert!(after < 0.05 * before, "EI at the pending point: {before} -> {after}");
        let second = maximize_acquisition(&space, &model, &obs, &mut rng);
        let dist = ((first[0] - second[0]).powi(2) + (first[1] - second[1]).powi(2)).sqrt();
        assert!(
            dist > 1e-3,
            "second proposal {second:?} on top of the pending {first:?}"
        );
    }
}
