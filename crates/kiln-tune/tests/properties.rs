//! Behaviour of the public API: bounds, scaling, grid coverage, determinism, concurrency,
//! Hyperband, warm start.

use std::collections::BTreeSet;

use kiln_tune::{
    Assignment, BayesianConfig, Direction, HyperbandConfig, Param, ParamKind, Scaling, SearchSpace, StrategyConfig,
    Trial, TrialState, Value, WarmStart, WarmStartType, best_trial, grid_point, grid_size, hyperband_should_stop,
    median_should_stop, random_assignment, suggest, suggest_with_warm_start,
};
use proptest::prelude::*;

fn arb_param(i: usize) -> impl Strategy<Value = Param> {
    let name = format!("p{i}");
    let n1 = name.clone();
    let n2 = name.clone();
    prop_oneof![
        (-1000i64..1000, 0i64..2000, 0usize..3).prop_map(move |(lo, w, s)| {
            let scaling = [Scaling::Auto, Scaling::Linear, Scaling::Logarithmic][s];
            let lo = if scaling == Scaling::Logarithmic {
                lo.abs() + 1
            } else {
                lo
            };
            Param::integer(n1.clone(), lo, lo + w, scaling)
        }),
        (-5.0f64..5.0, 0.0f64..6.0, 0usize..4).prop_map(move |(a, w, s)| {
            match [
                Scaling::Auto,
                Scaling::Linear,
                Scaling::Logarithmic,
                Scaling::ReverseLogarithmic,
            ][s]
            {
                Scaling::Logarithmic => {
                    Param::continuous(n2.clone(), 10f64.powf(a), 10f64.powf(a + w), Scaling::Logarithmic)
                }
                Scaling::ReverseLogarithmic => {
                    let lo = (a + 5.0) / 10.0 * 0.9;
                    Param::continuous(n2.clone(), lo, lo + (0.999 - lo) * w / 6.0, Scaling::ReverseLogarithmic)
                }
                sc => Param::continuous(n2.clone(), a, a + w, sc),
            }
        }),
        (1usize..6).prop_map(move |k| Param::categorical(name.clone(), (0..k).map(|j| format!("v{j}")))),
    ]
}

fn arb_space() -> impl Strategy<Value = SearchSpace> {
    (1usize..6).prop_flat_map(|n| (0..n).map(arb_param).collect::<Vec<_>>().prop_map(SearchSpace::new))
}

/// Every value parses with the right type and lies inside its range.
fn assert_valid(space: &SearchSpace, a: &Assignment) {
    assert_eq!(a.len(), space.len());
    let typed = space.parse(a).unwrap_or_else(|e| panic!("{e}: {a:?}"));
    for p in &space.params {
        match (&p.kind, &typed[&p.name]) {
            (ParamKind::Integer { min, max, .. }, Value::Integer(v)) => {
                assert!(min <= v && v <= max);
                assert_eq!(a[&p.name], v.to_string());
            }
            (ParamKind::Continuous { min, max, .. }, Value::Continuous(v)) => {
                assert!(*min <= *v && *v <= *max, "{v} outside [{min}, {max}]");
            }
            (ParamKind::Categorical { values }, Value::Categorical(v)) => {
                assert!(values.contains(v));
            }
            other => panic!("type mismatch {other:?}"),
        }
    }
}

fn objective(space: &SearchSpace, a: &Assignment) -> f64 {
    // A smooth function of the unit-free values, good enough to drive the model.
    space
        .params
        .iter()
        .map(|p| match &p.kind {
            ParamKind::Categorical { values } => values.iter().position(|v| v == &a[&p.name]).unwrap_or(0) as f64 * 0.3,
            ParamKind::Integer { min, max, .. } => {
                let v: f64 = a[&p.name].parse().unwrap();
                let span = (*max - *min).max(1) as f64;
                ((v - *min as f64) / span - 0.3).powi(2)
            }
            ParamKind::Continuous { min, max, .. } => {
                let v: f64 = a[&p.name].parse().unwrap();
                let span = (max - min).max(1e-12);
                ((v - min) / span - 0.6).powi(2)
            }
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_samples_are_inside_bounds_and_typed(space in arb_space(), seed in any::<u64>(), k in 0usize..1000) {
        prop_assume!(space.validate().is_ok());
        let a = suggest(&StrategyConfig::Random, &space, &[], Direction::Minimize, seed, k).unwrap();
        assert_valid(&space, &a);
        prop_assert_eq!(a, random_assignment(&space, seed, k));
    }

    #[test]
    fn bayesian_suggestions_are_valid_and_deterministic(space in arb_space(), seed in any::<u64>(), n in 0usize..14, running in 0usize..3) {
        prop_assume!(space.validate().is_ok());
        let strat = StrategyConfig::Bayesian(BayesianConfig::default());
        let mut history = Vec::new();
        for k in 0..n + running {
            let a = suggest(&strat, &space, &history, Direction::Maximize, seed, k).unwrap();
            assert_valid(&space, &a);
            let y = objective(&space, &a);
            history.push(if k < n { Trial::completed(a, y) } else { Trial::running(a) });
        }
        let k = history.len();
        let a = suggest(&strat, &space, &history, Direction::Maximize, seed, k).unwrap();
        let b = suggest(&strat, &space, &history, Direction::Maximize, seed, k).unwrap();
        assert_valid(&space, &a);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn grid_enumerates_every_combination_once(sizes in prop::collection::vec(1usize..5, 1..5)) {
        let space = SearchSpace::new(
            sizes.iter().enumerate()
                .map(|(i, &k)| Param::categorical(format!("c{i}"), (0..k).map(|j| format!("{i}-{j}"))))
                .collect(),
        );
        let n = grid_size(&space).unwrap();
        prop_assert_eq!(n, sizes.iter().product::<usize>());
        let mut seen = BTreeSet::new();
        for k in 0..n {
            let a = suggest(&StrategyConfig::Grid, &space, &[], Direction::Minimize, 0, k).unwrap();
            assert_valid(&space, &a);
            prop_assert_eq!(&a, &grid_point(&space, k).unwrap());
            prop_assert!(seen.insert(a));
        }
        prop_assert!(suggest(&StrategyConfig::Grid, &space, &[], Direction::Minimize, 0, n).is_err());
    }
}

#[test]
fn only_earlier_trials_shape_a_suggestion() {
    // The engine may re-ask for trial k after a restart, when later trials already exist.
    let space = quadratic_space();
    let strat = StrategyConfig::Bayesian(BayesianConfig::default());
    let mut history = Vec::new();
    for k in 0..12 {
        let a = suggest(&strat, &space, &history, Direction::Minimize, 21, k).unwrap();
        let (x, y) = xy(&a);
        history.push(Trial::completed(a, x * x + y));
    }
    let first = suggest(&strat, &space, &history, Direction::Minimize, 21, 12).unwrap();
    history.push(Trial::running(first.clone()));
    history.push(Trial::completed(first.clone(), -5.0));
    let again = suggest(&strat, &space, &history, Direction::Minimize, 21, 12).unwrap();
    assert_eq!(first, again);
}

#[test]
fn trials_serialise_without_optional_fields() {
    let t: Trial = serde_json::from_str(r#"{"assignment":{"x":"0.5"},"state":"Running"}"#).unwrap();
    assert!(t.is_running() && t.intermediate.is_empty() && t.finish_seq.is_none());
    let done = Trial::completed(Assignment::new(), 1.5);
    let back: Trial = serde_json::from_str(&serde_json::to_string(&done).unwrap()).unwrap();
    assert_eq!(back, done);
}

#[test]
fn scaling_shapes_the_sample_distribution() {
    let space = SearchSpace::new(vec![
        Param::continuous("lr", 1e-4, 1.0, Scaling::Logarithmic),
        Param::continuous("beta", 0.0, 0.999, Scaling::ReverseLogarithmic),
        Param::integer("n", 1, 4, Scaling::Linear),
        Param::continuous("auto", 1e-3, 10.0, Scaling::Auto),
    ]);
    let n = 4000;
    let (mut lr_small, mut beta_high, mut auto_small) = (0, 0, 0);
    let mut counts = [0usize; 4];
    for k in 0..n {
        let a = random_assignment(&space, 42, k);
        let lr: f64 = a["lr"].parse().unwrap();
        let beta: f64 = a["beta"].parse().unwrap();
        let auto: f64 = a["auto"].parse().unwrap();
        let i: usize = a["n"].parse().unwrap();
        lr_small += (lr < 1e-2) as usize;
        beta_high += (beta > 0.99) as usize;
        auto_small += (auto < 0.1) as usize;
        counts[i - 1] += 1;
    }
    let frac = |c: usize| c as f64 / n as f64;
    // Log: half the mass below the geometric middle 1e-2.
    assert!((frac(lr_small) - 0.5).abs() < 0.03, "{}", frac(lr_small));
    // Reverse log on [0, 0.999]: 1 − x is log-uniform on [1e-3, 1], so P(x > 0.99) = 1/3.
    assert!((frac(beta_high) - 1.0 / 3.0).abs() < 0.03, "{}", frac(beta_high));
    // Auto with max/min = 1e4 is logarithmic: P(x < 0.1) = 0.5.
    assert!((frac(auto_small) - 0.5).abs() < 0.03, "{}", frac(auto_small));
    // Integers: every value equally likely, endpoints included.
    for c in counts {
        assert!((frac(c) - 0.25).abs() < 0.03, "{counts:?}");
    }
}

fn quadratic_space() -> SearchSpace {
    SearchSpace::new(vec![
        Param::continuous("x", 0.0, 1.0, Scaling::Linear),
        Param::continuous("y", 0.0, 1.0, Scaling::Linear),
    ])
}

fn xy(a: &Assignment) -> (f64, f64) {
    (a["x"].parse().unwrap(), a["y"].parse().unwrap())
}

#[test]
fn concurrent_bayesian_suggestions_spread_out() {
    let space = quadratic_space();
    let strat = StrategyConfig::Bayesian(BayesianConfig::default());
    let f = |a: &Assignment| {
        let (x, y) = xy(a);
        (x - 0.3).powi(2) + (y - 0.7).powi(2)
    };
    let mut history = Vec::new();
    for k in 0..12 {
        let a = suggest(&strat, &space, &history, Direction::Minimize, 5, k).unwrap();
        let v = f(&a);
        history.push(Trial::completed(a, v));
    }
    for k in 12..16 {
        let a = suggest(&strat, &space, &history, Direction::Minimize, 5, k).unwrap();
        history.push(Trial::running(a));
    }
    let pts: Vec<(f64, f64)> = history[12..].iter().map(|t| xy(&t.assignment)).collect();
    for i in 0..4 {
        for j in 0..i {
            let d = ((pts[i].0 - pts[j].0).powi(2) + (pts[i].1 - pts[j].1).powi(2)).sqrt();
            assert!(d > 1e-3, "proposals {i} and {j} collapsed: {pts:?}");
        }
    }
}

#[test]
fn bayesian_beats_random_on_a_quadratic() {
    let space = quadratic_space();
    let f = |a: &Assignment| {
        let (x, y) = xy(a);
        (x - 0.3).powi(2) + 3.0 * (y - 0.7).powi(2)
    };
    let run = |strat: &StrategyConfig| {
        let mut history = Vec::new();
        for k in 0..25 {
            let a = suggest(strat, &space, &history, Direction::Minimize, 1, k).unwrap();
            let v = f(&a);
            history.push(Trial::completed(a, v));
        }
        let best = best_trial(&history, Direction::Minimize).unwrap();
        history[best].objective().unwrap()
    };
    let bayes = run(&StrategyConfig::Bayesian(BayesianConfig::default()));
    let random = run(&StrategyConfig::Random);
    assert!(bayes < 1e-3, "Bayesian best {bayes}");
    assert!(bayes < random / 10.0, "Bayesian {bayes} vs random {random}");
}

#[test]
fn warm_start_parents_steer_the_first_suggestion() {
    let space = quadratic_space();
    let f = |x: f64, y: f64| (x - 0.8).powi(2) + (y - 0.2).powi(2);
    let parents: Vec<Trial> = (0..30)
        .map(|k| {
            let a = random_assignment(&space, 99, k);
            let (x, y) = xy(&a);
            let mut a = a;
            a.insert("unused".into(), "1".into());
            Trial::completed(a, f(x, y))
        })
        .collect();
    for kind in [
        WarmStartType::IdenticalDataAndAlgorithm,
        WarmStartType::TransferLearning,
    ] {
        let warm = WarmStart {
            kind,
            parent_trials: parents.clone(),
        };
        let a = suggest_with_warm_start(
            &StrategyConfig::Bayesian(BayesianConfig::default()),
            &space,
            &[],
            Some(&warm),
            Direction::Minimize,
            3,
            0,
        )
        .unwrap();
        let (x, y) = xy(&a);
        // A random point scores ~0.4 on average; the model's first pick must be far better.
        assert!(f(x, y) < 0.1, "{kind:?}: first suggestion ({x}, {y})");
    }
}

/// Synthetic learning curves: loss(t) = q + (2 − q)·exp(−t/3), parallel in t so ranks never
/// change; q is the trial's final quality.
fn asha_run(qualities: &[f64]) -> (Vec<Trial>, usize) {
    let config = HyperbandConfig {
        min_resource: 1,
        max_resource: 27,
    };
    let mut history: Vec<Trial> = Vec::new();
    let mut epochs = 0;
    for (k, q) in qualities.iter().enumerate() {
        history.push(Trial::running(Assignment::new()));
        let mut stopped = false;
        for t in 1..=27 {
            let v = q + (2.0 - q) * (-(t as f64) / 3.0).exp();
            history[k].intermediate.push(v);
            epochs += 1;
            if hyperband_should_stop(k, &history, &config, Direction::Minimize) {
                stopped = true;
                break;
            }
        }
        let last = *history[k].intermediate.last().unwrap();
        history[k].state = if stopped {
            TrialState::Stopped { objective: Some(last) }
        } else {
            TrialState::Completed { objective: last }
        };
    }
    (history, epochs)
}

#[test]
fn asha_keeps_the_good_and_stops_the_bad() {
    let config = HyperbandConfig {
        min_resource: 1,
        max_resource: 27,
    };
    // Two Hyperband cycles of 49 trials; qualities are a fixed permutation of 0.00 .. 0.97.
    let n = 98;
    let qualities: Vec<f64> = (0..n).map(|i| ((i * 37) % n) as f64 / 100.0).collect();
    let (history, epochs) = asha_run(&qualities);
    let best = (0..n).min_by(|&a, &b| qualities[a].total_cmp(&qualities[b])).unwrap();
    assert!(matches!(history[best].state, TrialState::Completed { .. }));
    // The budget is a fraction of running everything to the end.
    assert!(epochs * 2 < n * 27, "{epochs} epochs");
    for i in 0..n {
        let bracket = config.bracket_of(i);
        let ran = history[i].intermediate.len();
        match bracket {
            // The aggressive bracket stops a trial of the worse half at its first rung, unless
            // it came among the first few of its bracket.
            0 if i >= 9 && qualities[i] > 0.5 => assert_eq!(ran, 1, "trial {i}"),
            // The last bracket runs everything in full.
            3 => assert_eq!(ran, 27, "trial {i}"),
            // Other brackets never stop before their first rung.
            b => assert!(ran >= [1, 3, 9, 27][b], "trial {i} in bracket {b} ran {ran}"),
        }
    }
}

#[test]
fn hyperband_suggestions_use_the_model_and_are_valid() {
    let space = quadratic_space();
    let config = HyperbandConfig {
        min_resource: 1,
        max_resource: 9,
    };
    let strat = StrategyConfig::Hyperband(config);
    let mut history: Vec<Trial> = Vec::new();
    for k in 0..30 {
        let a = suggest(&strat, &space, &history, Direction::Minimize, 8, k).unwrap();
        assert_valid(&space, &a);
        let (x, y) = xy(&a);
        let q = (x - 0.3).powi(2) + (y - 0.7).powi(2);
        history.push(Trial::running(a));
        for t in 1..=9 {
            history[k].intermediate.push(q + (1.0 - q) * (-(t as f64)).exp());
            if hyperband_should_stop(k, &history, &config, Direction::Minimize) {
                break;
            }
        }
        let last = *history[k].intermediate.last().unwrap();
        history[k].state = if history[k].intermediate.len() == 9 {
            TrialState::Completed { objective: last }
        } else {
            TrialState::Stopped { objective: Some(last) }
        };
    }
    let best = best_trial(&history, Direction::Minimize).unwrap();
    let (x, y) = xy(&history[best].assignment);
    assert!((x - 0.3).powi(2) + (y - 0.7).powi(2) < 0.01, "best ({x}, {y})");
}

#[test]
fn median_rule_never_stops_the_best_curve() {
    let mut history: Vec<Trial> = (0..8)
        .map(|i| Trial {
            intermediate: (1..=10).map(|t| 0.5 + 0.05 * i as f64 - 0.01 * t as f64).collect(),
            ..Trial::completed(Assignment::new(), 0.0)
        })
        .collect();
    history.push(Trial::running(Assignment::new()));
    for t in 1..=10 {
        history[8].intermediate.push(0.45 - 0.01 * t as f64);
        assert!(!median_should_stop(8, &history, Direction::Minimize));
    }
    history[8].intermediate = vec![0.9];
    assert!(median_should_stop(8, &history, Direction::Minimize));
}

#[test]
fn invalid_inputs_give_clear_errors() {
    let bad = SearchSpace::new(vec![Param::continuous("lr", 0.0, 1.0, Scaling::Logarithmic)]);
    let e = suggest(&StrategyConfig::Random, &bad, &[], Direction::Minimize, 0, 0).unwrap_err();
    assert!(e.to_string().contains("'lr'"));
    let numeric = quadratic_space();
    let e = suggest(&StrategyConfig::Grid, &numeric, &[], Direction::Minimize, 0, 0).unwrap_err();
    assert!(e.to_string().contains("CategoricalParameterRanges only"), "{e}");
    let hb = StrategyConfig::Hyperband(HyperbandConfig {
        min_resource: 0,
        max_resource: 10,
    });
    let e = suggest(&hb, &numeric, &[], Direction::Minimize, 0, 0).unwrap_err();
    assert!(e.to_string().contains("MinResource"), "{e}");
}
