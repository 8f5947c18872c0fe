//! Warm start: trials of parent tuning jobs as extra observations for the model.

use serde::{Deserialize, Serialize};

use crate::history::Trial;
use crate::space::{Assignment, SearchSpace};

/// SageMaker `WarmStartType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WarmStartType {
    /// Same data and algorithm: parent objectives are as good as the child's own.
    IdenticalDataAndAlgorithm,
    /// Different data, algorithm or ranges: parent objectives are hints, trusted less.
    TransferLearning,
}

/// The parents of a warm-started tuning job, as the engine hands them over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmStart {
    /// How far the parents' results carry over.
    pub kind: WarmStartType,
    /// Every trial of every parent job (only those with an objective are used).
    pub parent_trials: Vec<Trial>,
}

/// Extra observation-noise variance (standardised units) for TransferLearning parents: their
/// results shape the model where the child has no data, and yield where it has.
pub(crate) const TRANSFER_EXTRA_NOISE: f64 = 0.1;
/// Further extra noise per parameter that had to be imputed.
pub(crate) const IMPUTED_EXTRA_NOISE: f64 = 0.05;

/// Projects a parent's assignment onto `space`, returning it in unit coordinates together with
/// the number of imputed parameters, or `None` if the trial cannot be used.
///
/// The rule, per parameter of the child's space:
/// - present, of the right type and inside the child's range: kept;
/// - present but outside the range, or a categorical value the child does not list: the whole
///   trial is dropped, because clamping it to the boundary would credit the boundary with a
///   result measured elsewhere;
/// - missing (the parent did not tune it): imputed at the middle of the range (in scaled
///   coordinates), and the trial's observation noise is raised.
///
/// Parameters the parent tuned that the child does not have are ignored.
pub(crate) fn project(space: &SearchSpace, a: &Assignment) -> Option<(Vec<f64>, usize)> {
    let mut u = Vec::with_capacity(space.len());
    let mut imputed = 0;
    for p in &space.params {
        match a.get(&p.name) {
            Some(raw) => {
                let v = p.parse_value(raw).ok()?;
                u.push(p.unit_of(&v)?);
            }
            None => {
                imputed += 1;
                u.push(p.snap(0.5));
            }
        }
    }
    Some((u, imputed))
}

/// The assignment a parent trial contributes to the child's model after projection (see the
/// rule on [`project`]), or `None` if it is dropped.
pub fn project_assignment(space: &SearchSpace, assignment: &Assignment) -> Option<Assignment> {
    project(space, assignment).map(|(u, _)| space.decode(&u))
}

/// Parent observations as (unit point, objective, extra noise).
pub(crate) fn parent_observations(space: &SearchSpace, warm: &WarmStart) -> Vec<(Vec<f64>, f64, f64)> {
    warm.parent_trials
        .iter()
        .filter_map(|t| {
            let v = t.objective()?;
            let (u, imputed) = project(space, &t.assignment)?;
            let noise = match warm.kind {
                WarmStartType::IdenticalDataAndAlgorithm => 0.0,
                WarmStartType::TransferLearning => TRANSFER_EXTRA_NOISE,
            } + IMPUTED_EXTRA_NOISE * imputed as f64;
            Some((u, v, noise))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Param, Scaling};

    fn space() -> SearchSpace {
        SearchSpace::new(vec![
            Param::continuous("lr", 1e-4, 1e-1, Scaling::Logarithmic),
            Param::integer("depth", 2, 10, Scaling::Linear),
            Param::categorical("opt", ["sgd", "adam"]),
        ])
    }

    fn a(pairs: &[(&str, &str)]) -> Assignment {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn in_range_values_are_kept_and_extras_ignored() {
        let p = project_assignment(
            &space(),
            &a(&[("lr", "0.01"), ("depth", "4"), ("opt", "adam"), ("momentum", "0.9")]),
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert!((p["lr"].parse::<f64>().unwrap() - 0.01).abs() < 1e-12);
        assert_eq!((p["depth"].as_str(), p["opt"].as_str()), ("4", "adam"));
    }

    #[test]
    fn missing_parameters_are_imputed_at_the_scaled_middle() {
        let p = project_assignment(&space(), &a(&[("lr", "0.01"), ("opt", "sgd")])).unwrap();
        assert_eq!(p["depth"], "6");
        let p = project_assignment(&space(), &a(&[("depth", "3"), ("opt", "sgd")])).unwrap();
        // Middle of [1e-4, 1e-1] on a log scale is ~3.16e-3.
        let lr: f64 = p["lr"].parse().unwrap();
        assert!((lr - 10f64.powf(-2.5)).abs() < 1e-9, "{lr}");
    }

    #[test]
    fn out_of_range_or_unknown_values_drop_the_trial() {
        let s = space();
        assert!(project_assignment(&s, &a(&[("lr", "0.5"), ("depth", "4"), ("opt", "sgd")])).is_none());
        assert!(project_assignment(&s, &a(&[("lr", "0.01"), ("depth", "4"), ("opt", "rmsprop")])).is_none());
        assert!(project_assignment(&s, &a(&[("lr", "abc"), ("depth", "4"), ("opt", "sgd")])).is_none());
    }

    #[test]
    fn transfer_learning_trusts_parents_less() {
        let s = space();
        let trials = vec![
            Trial::completed(a(&[("lr", "0.01"), ("depth", "4"), ("opt", "sgd")]), 0.5),
            Trial::completed(a(&[("lr", "0.01"), ("opt", "sgd")]), 0.4),
            Trial::running(a(&[("lr", "0.01"), ("depth", "4"), ("opt", "sgd")])),
        ];
        let same = parent_observations(
            &s,
            &WarmStart {
                kind: WarmStartType::IdenticalDataAndAlgorithm,
                parent_trials: trials.clone(),
            },
        );
        assert_eq!(same.len(), 2);
        assert_eq!(same[0].2, 0.0);
        let tl = parent_observations(
            &s,
            &WarmStart {
                kind: WarmStartType::TransferLearning,
                parent_trials: trials,
            },
        );
        assert_eq!(tl[0].2, TRANSFER_EXTRA_NOISE);
        assert_eq!(tl[1].2, TRANSFER_EXTRA_NOISE + IMPUTED_EXTRA_NOISE);
    }
}
