//! Hyperband as asynchronous successive halving (ASHA), and its model-based suggestions.
//!
//! Rungs sit at `min_resource · 3^k` epochs below `max_resource`. When a running trial reports
//! the value of a rung epoch, it goes on only if its value there is among the best ⌊n/3⌋ (at
//! least 1) of the n trials of its bracket that have reached that rung so far, itself included.
//! Decisions are final in the ASHA sense: a trial is judged once per rung, when it gets there,
//! so the engine never throws away epochs a trial has already spent above that rung.
//!
//! Brackets (Hyperband's hedge against misleading early rungs): bracket b skips the first b
//! rungs, the last bracket never stops anything. Trials are dealt to brackets by trial index in
//! Hyperband's order, most aggressive bracket first, with the classic bracket sizes; for
//! min 1 / max 27 epochs a cycle is 27 trials judged from epoch 1, 12 from epoch 3, 6 from
//! epoch 9 and 4 run in full. On crossing learning curves this gave the model many more
//! full-length results than a single bracket (see `bench/hpo/README.md`).
//!
//! Suggestions are model-based in the BOHB manner: the Bayesian machinery is fitted on the
//! values at the highest budget (rung epoch, or `max_resource` for completed trials) that at
//! least [`default_initial`] trials have reached, quasi-random while no budget has that many,
//! and every [`RANDOM_EVERY`]-th suggestion is random.

use serde::{Deserialize, Serialize};

use crate::bayes::{Observations, default_initial, propose};
use crate::error::TuneError;
use crate::history::{Direction, Trial, TrialState};
use crate::rng::{Rng, Stream};
use crate::sampling::random_point;
use crate::space::SearchSpace;

/// Reduction factor η: a third of the trials at a rung go on to the next.
pub const REDUCTION_FACTOR: usize = 3;
/// Every this many Hyperband suggestions, one is purely random.
pub const RANDOM_EVERY: usize = 3;
/// Upper limit on `MaxResource` (SageMaker's limit on inferred epochs).
pub const MAX_RESOURCE_LIMIT: u32 = 20_000;

/// `HyperbandStrategyConfig`: resources are epochs (intermediate objective values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HyperbandConfig {
    /// Epochs before the first stopping decision.
    pub min_resource: u32,
    /// Epochs of a trial that is never stopped.
    pub max_resource: u32,
}

impl HyperbandConfig {
    /// Checks 1 ≤ MinResource ≤ MaxResource ≤ 20000.
    pub fn validate(&self) -> Result<(), TuneError> {
        let bad = |problem: String| TuneError::InvalidStrategy {
            strategy: "Hyperband",
            problem,
        };
        if self.min_resource < 1 {
            return Err(bad("MinResource must be at least 1".into()));
        }
        if self.max_resource < self.min_resource {
            return Err(bad(format!(
                "MaxResource ({}) must not be smaller than MinResource ({})",
                self.max_resource, self.min_resource
            )));
        }
        if self.max_resource > MAX_RESOURCE_LIMIT {
            return Err(bad(format!(
                "MaxResource ({}) exceeds the limit of {MAX_RESOURCE_LIMIT} epochs",
                self.max_resource
            )));
        }
        Ok(())
    }

    /// Epoch counts at which trials are judged: min_resource · 3^k < max_resource.
    pub fn rungs(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let max = self.max_resource as usize;
        let mut r = self.min_resource.max(1) as usize;
        while r < max {
            out.push(r);
            r = r.saturating_mul(REDUCTION_FACTOR);
        }
        out
    }

    /// Bracket of trial `trial_index`: bracket b skips the first b rungs (the last bracket runs
    /// every trial to `max_resource`). As in the original Hyperband, trials fill the brackets in
    /// turn from the most aggressive one, with the classic bracket sizes ⌈(s_max+1)/(s+1)·η^s⌉,
    /// and the cycle repeats; so early trials explore widely and later cycles give the model
    /// more full-length results.
    pub fn bracket_of(&self, trial_index: usize) -> usize {
        let sizes = self.bracket_sizes();
        let cycle: usize = sizes.iter().sum();
        let mut pos = trial_index % cycle.max(1);
        for (b, n) in sizes.iter().enumerate() {
            if pos < *n {
                return b;
            }
            pos -= n;
        }
        0
    }

    /// Trials per bracket in one Hyperband cycle, most aggressive bracket first.
    pub fn bracket_sizes(&self) -> Vec<usize> {
        let s_max = self.rungs().len();
        (0..=s_max)
            .map(|b| {
                let s = (s_max - b) as u32;
                let n = (s_max + 1) * REDUCTION_FACTOR.pow(s);
                n.div_ceil(s as usize + 1)
            })
            .collect()
    }

    /// Rungs at which trials of `bracket` are judged.
    pub fn bracket_rungs(&self, bracket: usize) -> Vec<usize> {
        self.rungs().into_iter().skip(bracket).collect()
    }
}

/// The value a trial has at `epochs` epochs, as a loss; `None` if it has not got that far.
/// A completed trial's final objective stands for its value at `max_resource`.
fn value_at(t: &Trial, epochs: usize, config: &HyperbandConfig, direction: Direction) -> Option<f64> {
    let v = match t.intermediate.get(epochs.wrapping_sub(1)) {
        Some(v) => Some(*v),
        None if epochs == config.max_resource as usize => match t.state {
            TrialState::Completed { objective } => Some(objective),
            _ => None,
        },
        None => None,
    };
    v.filter(|v| v.is_finite()).map(|v| direction.to_loss(v))
}

/// Whether running trial `trial_index` should be stopped now; call it each time the trial reports
/// a new intermediate value. The decision is taken when its epoch count equals one of its
/// bracket's rungs: stop unless it is in the top third of its bracket's trials at that rung
/// (see the module docs). If several values arrive at once, call it once per value with the
/// values appended one by one, or rungs in between are skipped. Returns false for trials that are not running, out-of-range indices or an
/// invalid configuration. A non-finite value at a rung stops the trial.
pub fn hyperband_should_stop(
    trial_index: usize,
    history: &[Trial],
    config: &HyperbandConfig,
    direction: Direction,
) -> bool {
    let Some(trial) = history.get(trial_index) else {
        return false;
    };
    if !trial.is_running() || config.validate().is_err() {
        return false;
    }
    let epochs = trial.intermediate.len();
    let bracket = config.bracket_of(trial_index);
    if !config.bracket_rungs(bracket).contains(&epochs) {
        return false;
    }
    let Some(mine) = value_at(trial, epochs, config, direction) else {
        return true;
    };
    let rivals: Vec<f64> = history
        .iter()
        .enumerate()
        .filter(|(j, _)| config.bracket_of(*j) == bracket)
        .filter_map(|(_, t)| value_at(t, epochs, config, direction))
        .collect();
    let keep = (rivals.len() / REDUCTION_FACTOR).max(1);
    let better = rivals.iter().filter(|&&v| v < mine).count();
    better >= keep
}

/// Model-based suggestion for the next Hyperband trial (see the module docs).
pub(crate) fn suggest_hyperband(
    space: &SearchSpace,
    history: &[Trial],
    parents: &[(Vec<f64>, f64, f64)],
    config: &HyperbandConfig,
    direction: Direction,
    seed: u64,
    trial_index: usize,
) -> Vec<f64> {
    let n_min = default_initial(space.len());
    let mut levels = config.rungs();
    levels.push(config.max_resource as usize);
    // BOHB's random fraction: every third trial is an independent sample, so a model misled
    // by low-budget values (curves that cross) cannot starve the rest of the space.
    if trial_index % RANDOM_EVERY == RANDOM_EVERY - 1 {
        let mut rng = Rng::for_trial(seed, trial_index, Stream::Sample);
        return random_point(space, &mut rng);
    }
    let encoded: Vec<Option<Vec<f64>>> = history.iter().map(|t| space.encode(&t.assignment)).collect();
    // Highest budget with enough observations; parents count as full-budget results.
    let mut chosen: Option<Observations> = None;
    for &level in levels.iter().rev() {
        let mut obs = Observations::default();
        for (t, u) in history.iter().zip(&encoded) {
            let Some(u) = u else { continue };
            if let Some(v) = value_at(t, level, config, direction) {
                obs.x.push(u.clone());
                obs.loss.push(v);
                obs.extra_noise.push(0.0);
            } else if t.is_running() {
                obs.pending.push(u.clone());
            } else if matches!(t.state, TrialState::Failed) {
                obs.failed.push(u.clone());
            }
        }
        if level == config.max_resource as usize {
            for (u, v, noise) in parents {
                obs.x.push(u.clone());
                obs.loss.push(direction.to_loss(*v));
                obs.extra_noise.push(*noise);
            }
        }
        if obs.loss.len() >= n_min {
            chosen = Some(obs);
            break;
        }
    }
    let obs = chosen.unwrap_or_default();
    propose(space, &obs, n_min, seed, trial_index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Assignment;

    fn running(curve: &[f64]) -> Trial {
        Trial {
            intermediate: curve.to_vec(),
            ..Trial::running(Assignment::new())
        }
    }

    #[test]
    fn rungs_are_powers_of_three_below_max() {
        let c = HyperbandConfig {
            min_resource: 1,
            max_resource: 27,
        };
        assert_eq!(c.rungs(), vec![1, 3, 9]);
        assert_eq!(c.bracket_sizes(), vec![27, 12, 6, 4]);
        assert_eq!(c.bracket_of(0), 0);
        assert_eq!(c.bracket_of(27), 1);
        assert_eq!(c.bracket_of(48), 3);
        assert_eq!(c.bracket_of(49), 0);
        assert_eq!(c.bracket_rungs(1), vec![3, 9]);
        let c = HyperbandConfig {
            min_resource: 2,
            max_resource: 20,
        };
        assert_eq!(c.rungs(), vec![2, 6, 18]);
        assert!(
            HyperbandConfig {
                min_resource: 5,
                max_resource: 3
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn first_trial_at_a_rung_goes_on_and_worse_ones_stop() {
        let c = HyperbandConfig {
            min_resource: 1,
            max_resource: 9,
        };
        let mut h = vec![running(&[0.5])];
        assert!(!hyperband_should_stop(0, &h, &c, Direction::Minimize));
        h.push(running(&[0.7]));
        assert!(hyperband_should_stop(1, &h, &c, Direction::Minimize));
        assert!(!hyperband_should_stop(1, &h, &c, Direction::Maximize));
        // Not at a rung: no decision.
        h.push(running(&[0.9, 0.8]));
        assert!(!hyperband_should_stop(2, &h, &c, Direction::Minimize));
        // A finished trial is never stopped.
        h[1].state = TrialState::Completed { objective: 0.7 };
        assert!(!hyperband_should_stop(1, &h, &c, Direction::Minimize));
        assert!(!hyperband_should_stop(9, &h, &c, Direction::Minimize));
    }
}
