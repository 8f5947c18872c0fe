//! The trial history the engine hands to every function, and the completion rules over it.

use serde::{Deserialize, Serialize};

use crate::space::Assignment;

/// Whether larger or smaller objective values are better (`HyperParameterTuningJobObjective.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Larger is better.
    Maximize,
    /// Smaller is better.
    Minimize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }

    /// The value as a loss (smaller is better), which is how the models see objectives.
    pub fn to_loss(self, v: f64) -> f64 {
        match self {
            Direction::Maximize => -v,
            Direction::Minimize => v,
        }
    }
}

/// Where a training job of the tuning job stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrialState {
    /// Launched and not finished; its assignment is pending for the model.
    Running,
    /// Finished and reported its final objective.
    Completed {
        /// The final objective metric value.
        objective: f64,
    },
    /// Failed, or finished without emitting the objective metric.
    Failed,
    /// Stopped early (early stopping, Hyperband or the user), with its last objective if any.
    Stopped {
        /// The last objective value the job emitted, if any.
        objective: Option<f64>,
    },
}

/// One training job of the tuning job, as far as the strategies are concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The tuned hyperparameters the job was launched with.
    pub assignment: Assignment,
    /// Its state.
    pub state: TrialState,
    /// Objective values the job printed per epoch, in order (index 0 = epoch 1).
    #[serde(default)]
    pub intermediate: Vec<f64>,
    /// Order in which the job finished (any increasing number, e.g. end time in ms); `None` when
    /// unknown, in which case history order stands in for completion order.
    #[serde(default)]
    pub finish_seq: Option<u64>,
}

impl Trial {
    /// A running trial without intermediate values.
    pub fn running(assignment: Assignment) -> Self {
        Trial {
            assignment,
            state: TrialState::Running,
            intermediate: Vec::new(),
            finish_seq: None,
        }
    }

    /// A completed trial with its final objective.
    pub fn completed(assignment: Assignment, objective: f64) -> Self {
        Trial {
            assignment,
            state: TrialState::Completed { objective },
            intermediate: Vec::new(),
            finish_seq: None,
        }
    }

    /// The final objective the trial counts with: completed trials, and stopped trials that
    /// emitted one (SageMaker reports their last value as the final metric). Non-finite values
    /// are treated as missing.
    pub fn objective(&self) -> Option<f64> {
        let v = match self.state {
            TrialState::Completed { objective } => Some(objective),
            TrialState::Stopped { objective } => objective,
            TrialState::Running | TrialState::Failed => None,
        };
        v.filter(|v| v.is_finite())
    }

    /// Whether the trial is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, TrialState::Running)
    }
}

/// Index of the best trial with an objective (see [`Trial::objective`]); ties go to the earlier
/// trial. `None` when no trial has an objective yet.
pub fn best_trial(history: &[Trial], direction: Direction) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, t) in history.iter().enumerate() {
        if let Some(v) = t.objective() {
            match best {
                Some((_, b)) if !direction.better(v, b) => {}
                _ => best = Some((i, v)),
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Whether some trial reached `target` (≥ for Maximize, ≤ for Minimize):
/// `TuningJobCompletionCriteria.TargetObjectiveMetricValue`.
pub fn target_reached(history: &[Trial], direction: Direction, target: f64) -> bool {
    history.iter().filter_map(Trial::objective).any(|v| match direction {
        Direction::Maximize => v >= target,
        Direction::Minimize => v <= target,
    })
}

/// Objectives of finished trials in completion order (`finish_seq`, then history order).
fn objectives_in_completion_order(history: &[Trial]) -> Vec<f64> {
    let mut done: Vec<(Option<u64>, usize, f64)> = history
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.objective().map(|v| (t.finish_seq, i, v)))
        .collect();
    // Trials without a sequence number sort by history position among themselves; a trial
    // with one is placed by its number. Mixing both is unusual and only needs to be stable.
    done.sort_by_key(|&(seq, i, _)| (seq.unwrap_or(i as u64), i));
    done.into_iter().map(|(_, _, v)| v).collect()
}

/// Whether `v` improves on `best` by at least `rel` of |best| (strictly better in any case).
fn improves(direction: Direction, v: f64, best: f64, rel: f64) -> bool {
    let gain = direction.to_loss(best) - direction.to_loss(v);
    gain > 0.0 && gain >= rel * best.abs()
}

/// SageMaker's `BestObjectiveNotImproving` counter: the number of most recent trials with an
/// objective (in completion order) that did not improve on the best objective before them by at
/// least 1% of its magnitude. The first trial with an objective always counts as an improvement;
/// failed trials and trials without an objective are not counted. The engine completes the
/// tuning job when this reaches `MaxNumberOfTrainingJobsNotImproving`.
pub fn not_improving_count(history: &[Trial], direction: Direction) -> usize {
    let mut best: Option<f64> = None;
    let mut count = 0;
    for v in objectives_in_completion_order(history) {
        match best {
            Some(b) if !improves(direction, v, b, 0.01) => {
                count += 1;
                if direction.better(v, b) {
                    best = Some(v);
                }
            }
            _ => {
                best = Some(v);
                count = 0;
            }
        }
    }
    count
}

/// Minimum number of trials with an objective before convergence can be declared.
pub const CONVERGENCE_MIN_TRIALS: usize = 20;

/// kiln's `ConvergenceDetected` rule: at least [`CONVERGENCE_MIN_TRIALS`] trials have an
/// objective, and over the most recent half of them (at least 10, in completion order) the best
/// objective improved by less than 0.1% of the spread (max − min) of all objectives seen.
///
/// Measuring against the spread rather than |best| keeps the rule meaningful for objectives near
/// zero and independent of units; "half the trials" lets long jobs search longer before giving up.
pub fn convergence_detected(history: &[Trial], direction: Direction) -> bool {
    let vals = objectives_in_completion_order(history);
    let n = vals.len();
    if n < CONVERGENCE_MIN_TRIALS {
        return false;
    }
    let window = (n / 2).max(10);
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let spread = hi - lo;
    if spread <= 0.0 {
        // Every trial scored the same: nothing left to find.
        return true;
    }
    let best_of = |xs: &[f64]| xs.iter().map(|&v| direction.to_loss(v)).fold(f64::INFINITY, f64::min);
    let before = best_of(&vals[..n - window]);
    let after = best_of(&vals);
    before - after < 1e-3 * spread
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(v: f64) -> Trial {
        Trial::completed(Assignment::new(), v)
    }

    #[test]
    fn best_trial_respects_direction_and_ties() {
        let h = vec![
            done(3.0),
            Trial::running(Assignment::new()),
            done(1.0),
            done(1.0),
            Trial {
                state: TrialState::Failed,
                ..done(0.0)
            },
        ];
        assert_eq!(best_trial(&h, Direction::Minimize), Some(2));
        assert_eq!(best_trial(&h, Direction::Maximize), Some(0));
        assert_eq!(best_trial(&[], Direction::Maximize), None);
        assert!(target_reached(&h, Direction::Minimize, 1.0));
        assert!(!target_reached(&h, Direction::Maximize, 3.5));
    }

    #[test]
    fn not_improving_counts_one_percent_rule() {
        let h: Vec<Trial> = [10.0, 9.95, 9.0, 8.99, 8.95, 20.0].into_iter().map(done).collect();
        // 9.95 is < 1% better than 10 (count 1); 9.0 resets; 8.99 and 8.95 (< 1% each vs 9.0
        // and 8.99) count, as does 20.
        assert_eq!(not_improving_count(&h, Direction::Minimize), 3);
        assert_eq!(not_improving_count(&h, Direction::Maximize), 0);
        assert_eq!(not_improving_count(&[], Direction::Maximize), 0);
    }

    #[test]
    fn not_improving_uses_completion_order() {
        let mut a = done(1.0);
        a.finish_seq = Some(20);
        let mut b = done(5.0);
        b.finish_seq = Some(10);
        // Completion order is b (5.0) then a (1.0): an improvement when minimising.
        assert_eq!(not_improving_count(&[a, b], Direction::Minimize), 0);
    }

    #[test]
    fn convergence_needs_enough_trials_and_a_plateau() {
        let improving: Vec<Trial> = (0..30).map(|i| done(100.0 - i as f64)).collect();
        assert!(!convergence_detected(&improving, Direction::Minimize));
        let mut plateau: Vec<Trial> = (0..10).map(|i| done(100.0 - 5.0 * i as f64)).collect();
        plateau.extend((0..20).map(|i| done(60.0 + i as f64)));
        assert!(convergence_detected(&plateau, Direction::Minimize));
        assert!(!convergence_detected(&plateau[..15], Direction::Minimize));
    }
}
