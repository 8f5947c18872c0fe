//! `TrainingJobEarlyStoppingType = Auto`: SageMaker's median stopping rule.

use serde::{Deserialize, Serialize};

use crate::history::{Direction, Trial, TrialState};

/// Thresholds of the median rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedianRule {
    /// Completed trials that must have reached the epoch before any trial is stopped there.
    pub min_completed: usize,
    /// Epochs a trial runs before it can be stopped.
    pub min_epochs: usize,
}

impl Default for MedianRule {
    /// Five completed trials (as Optuna's `MedianPruner` startup count, so the median is not one
    /// lucky run) and one epoch.
    fn default() -> Self {
        MedianRule {
            min_completed: 5,
            min_epochs: 1,
        }
    }
}

/// [`median_should_stop_with`] under [`MedianRule::default`].
pub fn median_should_stop(trial_index: usize, history: &[Trial], direction: Direction) -> bool {
    median_should_stop_with(&MedianRule::default(), trial_index, history, direction)
}

/// Whether running trial `trial_index` should be stopped after its latest epoch t: its best
/// objective over epochs 1..=t is strictly worse than the median, over *completed* trials with at
/// least t epochs, of their running averages over epochs 1..=t. Trials stopped early are left out
/// of the median (they would drag it towards the trials being judged). Out-of-range indices and
/// trials that are not running give false; a non-finite latest value stops the trial.
pub fn median_should_stop_with(rule: &MedianRule, trial_index: usize, history: &[Trial], direction: Direction) -> bool {
    let Some(trial) = history.get(trial_index) else {
        return false;
    };
    let t = trial.intermediate.len();
    if !trial.is_running() || t == 0 || t < rule.min_epochs {
        return false;
    }
    if trial.intermediate.last().is_some_and(|v| !v.is_finite()) {
        return true;
    }
    let best = trial
        .intermediate
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| direction.to_loss(v))
        .fold(f64::INFINITY, f64::min);
    let mut averages: Vec<f64> = history
        .iter()
        .enumerate()
        .filter(|(j, o)| {
            *j != trial_index && matches!(o.state, TrialState::Completed { .. }) && o.intermediate.len() >= t
        })
        .filter_map(|(_, o)| {
            let vals = &o.intermediate[..t];
            vals.iter()
                .all(|v| v.is_finite())
                .then(|| vals.iter().map(|&v| direction.to_loss(v)).sum::<f64>() / t as f64)
        })
        .collect();
    if averages.len() < rule.min_completed.max(1) {
        return false;
    }
    averages.sort_by(f64::total_cmp);
    let n = averages.len();
    let median = if n % 2 == 1 {
        averages[n / 2]
    } else {
        0.5 * (averages[n / 2 - 1] + averages[n / 2])
    };
    best > median
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Assignment;

    fn curve(state: TrialState, vals: &[f64]) -> Trial {
        Trial {
            assignment: Assignment::new(),
            state,
            intermediate: vals.to_vec(),
            finish_seq: None,
        }
    }

    fn completed(vals: &[f64]) -> Trial {
        curve(
            TrialState::Completed {
                objective: *vals.last().unwrap_or(&0.0),
            },
            vals,
        )
    }

    #[test]
    fn stops_only_below_the_median_of_running_averages() {
        // Accuracies (maximise): completed runs average 0.5, 0.6, 0.7, 0.8, 0.9 over 2 epochs.
        let mut h: Vec<Trial> = [0.5, 0.6, 0.7, 0.8, 0.9]
            .iter()
            .map(|&a| completed(&[a, a, a]))
            .collect();
        h.push(curve(TrialState::Running, &[0.3, 0.65]));
        assert!(h.len() == 6);
        // Best so far 0.65 < median 0.7 of running averages at epoch 2: stop.
        assert!(median_should_stop(5, &h, Direction::Maximize));
        h[5].intermediate = vec![0.3, 0.75];
        assert!(!median_should_stop(5, &h, Direction::Maximize));
        // As a loss (minimise) 0.3 is the best of all: keep.
        assert!(!median_should_stop(5, &h, Direction::Minimize));
    }

    #[test]
    fn needs_enough_completed_trials_at_that_epoch() {
        let mut h: Vec<Trial> = [0.5, 0.6, 0.7, 0.8].iter().map(|&a| completed(&[a, a])).collect();
        h.push(curve(TrialState::Running, &[0.1]));
        assert!(!median_should_stop(4, &h, Direction::Maximize));
        // Stopped trials do not count towards the median.
        h.push(curve(TrialState::Stopped { objective: Some(0.9) }, &[0.9, 0.9]));
        assert!(!median_should_stop(4, &h, Direction::Maximize));
        h.push(completed(&[0.9, 0.9]));
        assert!(median_should_stop(4, &h, Direction::Maximize));
        // Completed trials shorter than the epoch being judged do not count either.
        h[4].intermediate = vec![0.1, 0.1, 0.1];
        assert!(!median_should_stop(4, &h, Direction::Maximize));
    }
}
