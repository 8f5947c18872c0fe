//! The built-in XGBoost as a registry entry: its images, channels, content types, metric
//! definitions and `kiln algo xgboost train|predict`.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::booster::Booster;
use crate::container::{JobError, JobPaths, run_train, thread_count};
use crate::metric;
use crate::params::XgbConfig;
use crate::reader::{ContentType, ReadOptions, read_dir, read_file};
use crate::registry::{Algorithm, ChannelSpec, PredictArgs};

pub(crate) const USAGE: &str = "\
usage: kiln algo xgboost train [--ml-root DIR]
       kiln algo xgboost predict --model FILE --data PATH [--content-type TYPE]
                                 [--output FILE] [--has-label] [--nthread N]

train    runs the SageMaker XGBoost container contract under DIR (default /opt/ml):
         reads input/config/{hyperparameters,inputdataconfig}.json and input/data/<channel>/,
         prints one metric line per round, writes model/xgboost-model (xgboost JSON), and on
         failure writes output/failure and exits 1 (user error) or 2 (internal error).
         SM_INPUT_CONFIG_DIR, SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION, SM_MODEL_DIR,
         SM_OUTPUT_DIR and SM_NUM_CPUS override the defaults.
predict  prints one prediction per row (multi:softprob: comma-separated class probabilities).
         CSV rows hold features only unless --has-label (label first); libsvm rows always
         start with a label, which is ignored. TYPE defaults to text/csv (text/libsvm for
         .libsvm/.svm files).";

/// SageMaker's built-in XGBoost.
pub struct Xgboost;

/// The registry entry.
pub static XGBOOST: Xgboost = Xgboost;

impl Algorithm for Xgboost {
    fn name(&self) -> &'static str {
        "xgboost"
    }

    fn images(&self) -> &'static [&'static str] {
        &["sagemaker-xgboost", "xgboost", "kiln/xgboost"]
    }

    fn channels(&self) -> &'static [ChannelSpec] {
        &[ChannelSpec::TRAIN, ChannelSpec::VALIDATION, ChannelSpec::MODEL]
    }

    fn content_types(&self) -> &'static [&'static str] {
        &["text/libsvm", "text/csv", "text/x-libsvm", "libsvm", "csv"]
    }

    fn check_hyperparameters(&self, hp: &BTreeMap<String, String>) -> Result<(), JobError> {
        XgbConfig::from_hyperparameters(hp).map(|_| ()).map_err(JobError::from)
    }

    fn metric_definitions(&self) -> Vec<(String, String)> {
        metric_definitions()
    }

    fn objective_is_maximize(&self, metric: &str) -> Option<bool> {
        objective_is_maximize(metric)
    }

    fn usage(&self) -> &'static str {
        USAGE
    }

    fn train(
        &self,
        paths: &JobPaths,
        env: &dyn Fn(&str) -> Option<String>,
        out: &mut (dyn Write + Send),
        err: &mut (dyn Write + Send),
    ) -> Result<(), JobError> {
        run_train(paths, env, out, err)
    }

    fn predict(&self, args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
        predict_cmd(args, out)
    }
}

/// Metrics the XGBoost built-in can print, by the base name used in metric definitions: every
/// metric `eval_metric` accepts.
const XGBOOST_PRINTABLE: &[&str] = metric::METRIC_NAMES;

/// The (Name, Regex) metric definitions the service injects for a built-in algorithm:
/// `train:<m>` and `validation:<m>` for every metric the trainer can print, matching log lines
/// after the platform escapes TAB as `#011`. Empty for unknown algorithms.
///
/// Metrics printed with a parameter (`tweedie-nloglik@1.5`, `error@0.7`) are matched by
/// `tweedie-nloglik` / `error` with an optional `@...` suffix.
fn metric_definitions() -> Vec<(String, String)> {
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
fn objective_is_maximize(metric: &str) -> Option<bool> {
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

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let PredictArgs {
        model,
        data,
        content_type: ct,
        output,
        nthread,
        has_label,
    } = PredictArgs::parse(args, USAGE, true)?;
    let text = std::fs::read_to_string(&model)
        .map_err(|e| JobError::User(format!("could not read model {}: {e}", model.display())))?;
    let booster = Booster::from_xgboost_json(&text).map_err(|e| JobError::User(format!("{}: {e}", model.display())))?;
    let content_type = match ct.as_deref() {
        Some(c) => ContentType::parse(Some(c)).map_err(|e| JobError::User(e.to_string()))?,
        None if has_ext(&data, &["libsvm", "svm"]) => ContentType::Libsvm,
        None => ContentType::Csv,
    };
    let env = |k: &str| std::env::var(k).ok();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(thread_count(nthread, &env))
        .build()
        .map_err(|e| JobError::Internal(format!("could not start threads: {e}")))?;
    let preds = pool.install(|| -> Result<Vec<f32>, JobError> {
        let opts = ReadOptions {
            has_label: has_label || content_type == ContentType::Libsvm,
            csv_weights: false,
            min_features: if content_type == ContentType::Libsvm {
                booster.num_feature
            } else {
                0
            },
        };
        let ds = if data.is_dir() {
            read_dir(&data, content_type, &opts)
        } else {
            read_file(&data, content_type, &opts)
        }
        .map_err(|e| JobError::User(format!("{}: {e}", data.display())))?;
        let found = ds.features.n_cols();
        if found != booster.num_feature {
            let hint = if content_type == ContentType::Csv && !has_label && found == booster.num_feature + 1 {
                "; if the first column is the label, pass --has-label"
            } else {
                ""
            };
            return Err(JobError::User(format!(
                "{}: the data has {found} feature columns but the model was trained on {}{hint}",
                data.display(),
                booster.num_feature
            )));
        }
        Ok(booster.predict(&ds.features))
    })?;
    let k = booster.n_outputs();
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, w);
        for row in preds.chunks(k) {
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    w.write_all(b",")?;
                }
                write!(w, "{v}")?;
            }
            w.write_all(b"\n")?;
        }
        w.flush()
    };
    match output {
        Some(path) => {
            let mut f = std::fs::File::create(&path)
                .map_err(|e| JobError::User(format!("could not create {}: {e}", path.display())))?;
            write(&mut f)
        }
        None => write(out),
    }
    .map_err(|e| JobError::Internal(format!("could not write predictions: {e}")))
}

fn has_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Metric, builtin_metric_definitions};

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
        assert!(builtin_metric_definitions("nope").is_empty());
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
