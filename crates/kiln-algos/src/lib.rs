//! kiln's built-in algorithms (XGBoost-compatible gradient-boosted trees first) and the readers for
//! the data formats SageMaker's built-ins accept. It runs inside the SageMaker container contract
//! (`kiln algo <name>`), and knows nothing about the server, the store or the network. It is not
//! a general ML library: it implements what SageMaker's built-in XGBoost offers (hyperparameters,
//! log lines, model file), fast on CPU, and no more.
//!
//! Layout: [`reader`] parses CSV/libsvm; [`binning`] turns features into `u8` bins once;
//! [`grow`] grows one tree from gradient histograms; [`booster`] runs the boosting loop;
//! [`metric`] evaluates each round (the area metrics rank rows with [`rank`]);
//! [`model_json`] reads and writes xgboost's JSON model format; [`params`] validates
//! hyperparameters; [`container`] and [`cli`] implement `kiln algo xgboost train|predict`;
//! [`collective`] connects the hosts of a distributed job so that they train one model.

pub mod binning;
pub mod booster;
pub mod checkpoint;
pub mod cli;
pub mod collective;
pub mod container;
pub mod data;
pub mod distributed;
pub mod grow;
pub mod metric;
pub mod model_json;
pub mod objective;
pub mod params;
pub mod prof;
pub mod protobuf;
pub mod rank;
pub mod reader;
pub mod rng;
pub mod stream;
pub mod tree;

pub use booster::{Booster, TrainError, TrainOptions, train};
pub use data::{Dataset, DenseMatrix};
pub use metric::Metric;
pub use objective::Objective;
pub use params::{GrowPolicy, ParamError, XgbConfig, XgbParams};

/// Metrics the XGBoost built-in can print, by the base name used in metric definitions.
const XGBOOST_PRINTABLE: &[&str] = &[
    "rmse",
    "rmsle",
    "mse",
    "mae",
    "mape",
    "mphe",
    "logloss",
    "error",
    "auc",
    "aucpr",
    "merror",
    "mlogloss",
    "poisson-nloglik",
    "gamma-nloglik",
    "gamma-deviance",
    "tweedie-nloglik",
    "r2",
    "accuracy",
    "f1",
];

/// The (Name, Regex) metric definitions the service injects for a built-in algorithm:
/// `train:<m>` and `validation:<m>` for every metric the trainer can print, matching log lines
/// after the platform escapes TAB as `#011`. Empty for unknown algorithms.
///
/// Metrics printed with a parameter (`tweedie-nloglik@1.5`, `error@0.7`) are matched by
/// `tweedie-nloglik` / `error` with an optional `@...` suffix.
pub fn builtin_metric_definitions(algorithm: &str) -> Vec<(String, String)> {
    if !algorithm.eq_ignore_ascii_case("xgboost") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for set in ["train", "validation"] {
        for m in XGBOOST_PRINTABLE {
            let name = m.replace('-', "\\-");
            let suffix = if matches!(*m, "tweedie-nloglik" | "error") {
                "(?:@[^:]*)?"
            } else {
                ""
            };
            out.push((
                format!("{set}:{m}"),
                format!(".*\\[[0-9]+\\].*#011{set}-{name}{suffix}:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"),
            ));
        }
    }
    out
}

/// Whether a tuning objective metric (`validation:auc`, or a bare `auc`) is maximized; `None` if
/// the XGBoost container does not know the metric.
pub fn objective_is_maximize(metric: &str) -> Option<bool> {
    let name = metric
        .split_once(':')
        .map_or(metric, |(_, m)| m)
        .split('@')
        .next()
        .unwrap_or("");
    if metric::MAXIMIZE.contains(&name) {
        Some(true)
    } else if metric::MINIMIZE.contains(&name) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_definitions_have_both_sets_and_match_log_lines() {
        let defs = builtin_metric_definitions("xgboost");
        assert!(defs.iter().any(|(n, _)| n == "validation:auc"));
        assert!(defs.iter().any(|(n, _)| n == "train:rmse"));
        let (_, re) = defs.iter().find(|(n, _)| n == "validation:auc").unwrap();
        assert_eq!(
            re,
            ".*\\[[0-9]+\\].*#011validation-auc:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"
        );
        assert!(builtin_metric_definitions("kmeans").is_empty());
        assert_eq!(defs.len(), 2 * XGBOOST_PRINTABLE.len());
    }

    #[test]
    fn maximize_table() {
        assert_eq!(objective_is_maximize("validation:auc"), Some(true));
        assert_eq!(objective_is_maximize("validation:rmse"), Some(false));
        assert_eq!(objective_is_maximize("train:f1"), Some(true));
        assert_eq!(objective_is_maximize("logloss"), Some(false));
        assert_eq!(objective_is_maximize("validation:error@0.7"), Some(false));
        assert_eq!(objective_is_maximize("validation:bogus"), None);
        for m in XGBOOST_PRINTABLE {
            assert!(objective_is_maximize(m).is_some(), "{m}");
            let parsed = Metric::parse(m, 1.5).unwrap();
            assert_eq!(parsed.maximize(), objective_is_maximize(m).unwrap(), "{m}");
        }
    }
}
