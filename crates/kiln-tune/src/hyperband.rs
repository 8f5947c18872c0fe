//! Hyperband as asynchronous successive halving (ASHA), and its model-based suggestions.
//!
//! Rungs sit at `min_resource · 3^k` epochs below `max_resource`. When a running trial reports
//! the value of a rung epoch, it goes on only if its value there is among the best ⌊n/3⌋ (at
//! least 1) of the n trials that have reached that rung so far, itself included. Decisions are
//! final in the ASHA sense: a trial is judged once per rung, when it gets there, so the
//! engine never loses the epochs a trial has already spent above that rung.
//!
//! Suggestions are model-based in the BOHB manner: the Bayesian machinery is fitted on the
//! values at the highest rung that enough trials have reached (the final objective at
//! `max_resource`), falling back to the quasi-random design while no rung has enough data.

use serde::{Deserialize, Serialize};

use crate::bayes::{Observations, default_initial, propose};
use crate::error::TuneError;
use crate::history::{Direction, Trial, TrialState};
use crate::space::SearchSpace;

/// Reduction factor η: a third of the trials at a rung go on to the next.
pub const REDUCTION_FACTOR: usize = 3;
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
/// a new intermediate value (the decision is taken when its epoch count equals a rung, see the
/// module docs). Returns false for trials that are not running, out-of-range indices or an
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
    if !config.rungs().contains(&epochs) {
        return false;
    }
    let Some(mine) = value_at(trial, epochs, config, direction) else {
        return true;
    };
    let rivals: Vec<f64> = history
        .iter()
        .filter_map(|t| value_at(t, epochs, config, direction))
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
