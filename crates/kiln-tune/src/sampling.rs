//! Random and quasi-random unit points, and the Grid enumeration.

use crate::error::TuneError;
use crate::rng::{Rng, Stream};
use crate::space::{Assignment, ParamKind, SearchSpace};

/// An independent uniform unit point (snapped), i.e. a sample honouring each parameter's scaling.
pub(crate) fn random_point(space: &SearchSpace, rng: &mut Rng) -> Vec<f64> {
    let u: Vec<f64> = (0..space.len()).map(|_| rng.uniform()).collect();
    space.snap(&u)
}

/// The Random strategy: an independent sample that depends on (seed, trial index) only.
pub fn random_assignment(space: &SearchSpace, seed: u64, trial_index: usize) -> Assignment {
    let mut rng = Rng::for_trial(seed, trial_index, Stream::Sample);
    space.decode(&random_point(space, &mut rng))
}

/// Point `index` of a randomly shifted Kronecker (R_d) low-discrepancy sequence.
///
/// Chosen for the initial design because point k can be computed from k alone (the engine asks
/// for trials out of order after restarts) and any prefix covers the cube evenly, which Latin
/// hypercubes only guarantee for a size fixed in advance.
pub(crate) fn quasi_random_point(space: &SearchSpace, seed: u64, index: usize) -> Vec<f64> {
    let d = space.len();
    // phi_d: the positive root of x^(d+1) = x + 1 (golden ratio for d = 1).
    let mut phi: f64 = 2.0;
    for _ in 0..64 {
        phi = (1.0 + phi).powf(1.0 / (d as f64 + 1.0));
    }
    let mut shift_rng = Rng::for_trial(seed, 0, Stream::Design);
    let k = index as f64 + 1.0;
    let u: Vec<f64> = (0..d)
        .map(|j| {
            let alpha = (1.0 / phi.powi(j as i32 + 1)).fract();
            (shift_rng.uniform() + k * alpha).fract()
        })
        .collect();
    space.snap(&u)
}

/// Number of points of the Grid strategy: the product of the categorical value counts.
///
/// Grid needs every range to be categorical (as in SageMaker); otherwise, or if the product
/// overflows, an error says which parameter is the problem.
pub fn grid_size(space: &SearchSpace) -> Result<usize, TuneError> {
    let mut size: usize = 1;
    for p in &space.params {
        match &p.kind {
            ParamKind::Categorical { values } => {
                size = size
                    .checked_mul(values.len())
                    .ok_or_else(|| TuneError::InvalidStrategy {
                        strategy: "Grid",
                        problem: "the grid has more points than can be counted".into(),
                    })?;
            }
            _ => {
                return Err(TuneError::InvalidStrategy {
                    strategy: "Grid",
                    problem: format!(
                        "hyperparameter '{}' is not categorical; Grid search supports \
                         CategoricalParameterRanges only",
                        p.name
                    ),
                });
            }
        }
    }
    Ok(size)
}

/// Grid point `index` (0-based): the cartesian product in declaration order, with the last
/// parameter varying fastest (like nested loops over the ranges as listed).
pub fn grid_point(space: &SearchSpace, index: usize) -> Result<Assignment, TuneError> {
    let size = grid_size(space)?;
    if index >= size {
        return Err(TuneError::GridExhausted { index, size });
    }
    let mut rest = index;
    let mut out = Assignment::new();
    for p in space.params.iter().rev() {
        if let ParamKind::Categorical { values } = &p.kind {
            let k = values.len();
            out.insert(p.name.clone(), values[rest % k].clone());
            rest /= k;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Param, Scaling};

    #[test]
    fn grid_order_is_nested_loops() {
        let s = SearchSpace::new(vec![
            Param::categorical("a", ["x", "y"]),
            Param::categorical("b", ["1", "2", "3"]),
        ]);
        assert_eq!(grid_size(&s).unwrap(), 6);
        let pts: Vec<(String, String)> = (0..6)
            .map(|i| {
                let a = grid_point(&s, i).unwrap();
                (a["a"].clone(), a["b"].clone())
            })
            .collect();
        assert_eq!(pts[0], ("x".into(), "1".into()));
        assert_eq!(pts[1], ("x".into(), "2".into()));
        assert_eq!(pts[3], ("y".into(), "1".into()));
        assert_eq!(
            grid_point(&s, 6).unwrap_err(),
            TuneError::GridExhausted { index: 6, size: 6 }
        );
    }

    #[test]
    fn grid_rejects_numeric_ranges() {
        let s = SearchSpace::new(vec![Param::integer("n", 1, 3, Scaling::Linear)]);
        let e = grid_size(&s).unwrap_err().to_string();
        assert!(e.contains("'n' is not categorical"), "{e}");
    }

    #[test]
    fn quasi_random_prefix_spreads_out() {
        let s = SearchSpace::new(vec![
            Param::continuous("x", 0.0, 1.0, Scaling::Linear),
            Param::continuous("y", 0.0, 1.0, Scaling::Linear),
        ]);
        // Every quadrant gets a point among the first 8.
        let mut quadrants = [0; 4];
        for i in 0..8 {
            let p = quasi_random_point(&s, 5, i);
            quadrants[(p[0] >= 0.5) as usize * 2 + (p[1] >= 0.5) as usize] += 1;
        }
        assert!(quadrants.iter().all(|&c| c >= 1), "{quadrants:?}");
    }
}
