//! Hyperparameter-tuning strategies for kiln's SageMaker-compatible tuning jobs: which
//! hyperparameters the next training job should run with (Random, Grid, Bayesian, Hyperband),
//! whether a running job should be stopped early (Hyperband's successive halving, the median
//! rule of `TrainingJobEarlyStoppingType = Auto`), and when a tuning job is done (best job, the
//! not-improving counter, convergence). Every function is pure: a function of the search space,
//! the trial history and a seed, with no I/O, clock or global random state, so an engine that
//! restarts and asks again gets the same answer.
//!
//! It is not the tuning-job engine: launching and stopping training jobs, parsing metrics out of
//! logs, persisting trials, enforcing `ResourceLimits`, and turning API shapes into a
//! [`SearchSpace`] all live elsewhere.
//!
//! Typical use by an engine: validate once with [`SearchSpace::validate`] and
//! [`StrategyConfig::validate`]; for each free slot call [`suggest`] with the next trial index;
//! after each new intermediate value call [`hyperband_should_stop`] or [`median_should_stop`];
//! after each finished trial consult [`best_trial`], [`not_improving_count`],
//! [`convergence_detected`] and [`target_reached`].
//!
//! ```
//! use kiln_tune::*;
//!
//! let space = SearchSpace::new(vec![
//!     Param::continuous("eta", 1e-3, 0.5, Scaling::Logarithmic),
//!     Param::integer("max_depth", 2, 10, Scaling::Auto),
//!     Param::categorical("booster", ["gbtree", "dart"]),
//! ]);
//! let strategy = StrategyConfig::Bayesian(BayesianConfig::default());
//! space.validate()?;
//! strategy.validate(&space)?;
//!
//! let mut history: Vec<Trial> = Vec::new();
//! for k in 0..3 {
//!     let hp = suggest(&strategy, &space, &history, Direction::Maximize, 42, k)?;
//!     history.push(Trial::running(hp)); // launch the training job with these values
//! }
//! history[1].intermediate.push(0.71); // job 1 printed its epoch-1 accuracy
//! let stop = median_should_stop(1, &history, Direction::Maximize);
//! assert!(!stop); // no completed jobs yet to compare with
//! history[0].state = TrialState::Completed { objective: 0.83 };
//! assert_eq!(best_trial(&history, Direction::Maximize), Some(0));
//! # Ok::<(), TuneError>(())
//! ```

#![warn(missing_docs)]

mod bayes;
mod error;
mod gp;
mod history;
mod hyperband;
mod median;
mod rng;
mod sampling;
mod space;
mod stats;
mod warm;

use serde::{Deserialize, Serialize};

pub use bayes::{BayesianConfig, default_initial};
pub use error::TuneError;
pub use history::{
    CONVERGENCE_MIN_TRIALS, Direction, Trial, TrialState, best_trial, convergence_detected, not_improving_count,
    target_reached,
};
pub use hyperband::{HyperbandConfig, MAX_RESOURCE_LIMIT, RANDOM_EVERY, REDUCTION_FACTOR, hyperband_should_stop};
pub use median::{MedianRule, median_should_stop, median_should_stop_with};
pub use sampling::{grid_point, grid_size, random_assignment};
pub use space::{
    AUTO_LOG_RATIO, Assignment, MAX_CATEGORICAL_VALUES, MAX_INTEGER_MAGNITUDE, MAX_PARAMS, Param, ParamKind, Scaling,
    SearchSpace, Value, format_float,
};
pub use warm::{WarmStart, WarmStartType, project_assignment};

use bayes::Observations;

/// The tuning strategy of a job (`HyperParameterTuningJobConfig.Strategy` and its config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StrategyConfig {
    /// Independent samples; history and warm start are ignored.
    Random,
    /// Every combination of the categorical values once; history and warm start are ignored.
    Grid,
    /// Gaussian-process model with expected improvement.
    Bayesian(BayesianConfig),
    /// Asynchronous successive halving with model-based suggestions.
    Hyperband(HyperbandConfig),
}

impl StrategyConfig {
    /// Checks that the strategy can run on `space` (Grid: categorical only; Hyperband: resources).
    pub fn validate(&self, space: &SearchSpace) -> Result<(), TuneError> {
        match self {
            StrategyConfig::Random | StrategyConfig::Bayesian(_) => Ok(()),
            StrategyConfig::Grid => grid_size(space).map(|_| ()),
            StrategyConfig::Hyperband(c) => c.validate(),
        }
    }
}

/// The hyperparameters for trial `trial_index` (0-based), without warm start.
///
/// See [`suggest_with_warm_start`].
pub fn suggest(
    strategy: &StrategyConfig,
    space: &SearchSpace,
    history: &[Trial],
    direction: Direction,
    seed: u64,
    trial_index: usize,
) -> Result<Assignment, TuneError> {
    suggest_with_warm_start(strategy, space, history, None, direction, seed, trial_index)
}

/// The hyperparameters for trial `trial_index` (0-based) of a tuning job.
///
/// `history` holds the job's trials in launch order with their current states; only
/// `history[..trial_index]` is read, so the answer is a function of (space, those trials, warm
/// start, direction, seed, trial index) and asking again after a restart gives the same result.
/// Running trials are taken into account (Bayesian and Hyperband spread concurrent suggestions),
/// so the engine may ask for several trials before any finishes. Grid returns
/// [`TuneError::GridExhausted`] past the last grid point. Warm start feeds the model of Bayesian
/// and Hyperband; Random and Grid ignore it.
pub fn suggest_with_warm_start(
    strategy: &StrategyConfig,
    space: &SearchSpace,
    history: &[Trial],
    warm_start: Option<&WarmStart>,
    direction: Direction,
    seed: u64,
    trial_index: usize,
) -> Result<Assignment, TuneError> {
    space.validate()?;
    strategy.validate(space)?;
    let history = &history[..trial_index.min(history.len())];
    let parents = warm_start
        .map(|w| warm::parent_observations(space, w))
        .unwrap_or_default();
    let point = match strategy {
        StrategyConfig::Random => return Ok(random_assignment(space, seed, trial_index)),
        StrategyConfig::Grid => return grid_point(space, trial_index),
        StrategyConfig::Bayesian(config) => {
            let obs = observations(space, history, &parents, direction);
            let n_init = config.n_initial.unwrap_or_else(|| default_initial(space.len()));
            bayes::propose(space, &obs, n_init, seed, trial_index)
        }
        StrategyConfig::Hyperband(config) => {
            hyperband::suggest_hyperband(space, history, &parents, config, direction, seed, trial_index)
        }
    };
    Ok(space.decode(&point))
}

/// Model inputs from the history: finished trials with an objective are observations, running
/// ones pending, failed ones failures. Trials whose assignment does not fit the space (e.g. the
/// engine changed it) are skipped.
fn observations(
    space: &SearchSpace,
    history: &[Trial],
    parents: &[(Vec<f64>, f64, f64)],
    direction: Direction,
) -> Observations {
    let mut obs = Observations::default();
    for t in history {
        let Some(u) = space.encode(&t.assignment) else {
            continue;
        };
        match (&t.state, t.objective()) {
            (_, Some(v)) => {
                obs.x.push(u);
                obs.loss.push(direction.to_loss(v));
                obs.extra_noise.push(0.0);
            }
            (TrialState::Running, None) => obs.pending.push(u),
            // A job that "completed" with a NaN or infinite objective failed as far as the
            // model is concerned.
            (TrialState::Failed | TrialState::Completed { .. }, None) => obs.failed.push(u),
            _ => {}
        }
    }
    for (u, v, noise) in parents {
        obs.x.push(u.clone());
        obs.loss.push(direction.to_loss(*v));
        obs.extra_noise.push(*noise);
    }
    obs
}
