//! The one error type of the crate.

use thiserror::Error;

/// Why a search space, a strategy configuration or a request could not be served.
///
/// Messages name the parameter and the rule, because the API layer forwards them to clients as
/// SageMaker `ValidationException`s.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TuneError {
    /// A single parameter range breaks a rule.
    #[error("hyperparameter range '{name}': {problem}")]
    InvalidParam {
        /// The parameter's name as given in the request.
        name: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The search space as a whole breaks a rule (empty, duplicate names, too many ranges).
    #[error("hyperparameter ranges: {0}")]
    InvalidSpace(String),
    /// The strategy cannot be used with this search space or configuration.
    #[error("{strategy} strategy: {problem}")]
    InvalidStrategy {
        /// `Grid`, `Hyperband`, ...
        strategy: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Every point of the grid has been handed out already.
    #[error(
        "Grid strategy: trial index {index} is past the end of the grid ({size} points); \
         stop launching training jobs after {size}"
    )]
    GridExhausted {
        /// The requested trial index (0-based).
        index: usize,
        /// Number of grid points.
        size: usize,
    },
    /// A trial index does not refer to a trial of the history.
    #[error("trial index {index} is out of range: the history holds {len} trials")]
    TrialOutOfRange {
        /// The requested trial index (0-based).
        index: usize,
        /// Length of the history.
        len: usize,
    },
    /// An assignment could not be read against the search space.
    #[error("hyperparameter '{name}': value '{value}' {problem}")]
    InvalidValue {
        /// The parameter's name.
        name: String,
        /// The value as found in the assignment.
        value: String,
        /// Why it does not fit the range.
        problem: String,
    },
}
