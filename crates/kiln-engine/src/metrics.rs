//! `MetricDefinitions`: Python-style regular expressions searched in every (escaped) log line; the
//! first capture group is the value.

use kiln_api::shapes::{MetricData, MetricDefinition};

/// Compiled metric definitions of one job.
pub struct MetricMatcher {
    defs: Vec<(String, fancy_regex::Regex)>,
}

/// Checks that every regex compiles; the error names the definition.
pub fn validate(defs: &[MetricDefinition]) -> Result<(), String> {
    for (i, d) in defs.iter().enumerate() {
        if let Err(e) = fancy_regex::Regex::new(&d.regex) {
            return Err(format!(
                "MetricDefinitions[{i}] '{}': Regex '{}' is not a valid regular expression: {e}",
                d.name, d.regex
            ));
        }
    }
    Ok(())
}

/// Parses a number as Python's `float()` does for the forms metric lines use.
pub fn parse_float(text: &str) -> Option<f64> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f64::NAN),
        _ => {}
    }
    t.replace('_', "").parse().ok()
}

impl MetricMatcher {
    /// Compiles the definitions, skipping any that do not compile (they were checked at create time).
    pub fn new(defs: &[MetricDefinition]) -> Self {
        Self {
            defs: defs
                .iter()
                .filter_map(|d| Some((d.name.clone(), fancy_regex::Regex::new(&d.regex).ok()?)))
                .collect(),
        }
    }

    /// Whether there is anything to match.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The `(metric, value)` pairs one line yields.
    pub fn scan(&self, line: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for (name, re) in &self.defs {
            if let Ok(Some(caps)) = re.captures(line) {
                let text = caps.get(1).or_else(|| caps.get(0)).map(|m| m.as_str()).unwrap_or("");
                if let Some(v) = parse_float(text) {
                    out.push((name.clone(), v));
                }
            }
        }
        out
    }
}

/// Folds new points into `FinalMetricDataList`: the last value of each metric.
pub fn fold_final(list: &mut Vec<MetricData>, name: &str, value: f64, timestamp: f64) {
    // JSON has no NaN/Infinity: such values are recorded as points but not reported.
    if !value.is_finite() {
        return;
    }
    match list.iter_mut().find(|m| m.metric_name == name) {
        Some(m) => {
            m.value = value;
            m.timestamp = timestamp;
        }
        None => list.push(MetricData {
            metric_name: name.to_string(),
            value,
            timestamp,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, regex: &str) -> MetricDefinition {
        MetricDefinition {
            name: name.into(),
            regex: regex.into(),
        }
    }

    #[test]
    fn builtin_xgboost_regex_on_escaped_lines() {
        let m = MetricMatcher::new(&[def(
            "validation:auc",
            r".*\[[0-9]+\].*#011validation-auc:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
        )]);
        assert_eq!(
            m.scan("[12]#011train-auc:0.91234#011validation-auc:0.88000"),
            vec![("validation:auc".into(), 0.88)]
        );
        assert!(m.scan("[12]\ttrain-auc:0.9").is_empty());
    }

    #[test]
    fn python_features_and_values() {
        let m = MetricMatcher::new(&[def("loss", r"loss=(?P<v>\S+)"), def("lr", r"lr: (?=\d)(\d+\.\d+)")]);
        assert_eq!(
            m.scan("epoch 1 loss=1e-3 lr: 0.5"),
            vec![("loss".into(), 0.001), ("lr".into(), 0.5)]
        );
        assert_eq!(parse_float(" nan ").map(f64::is_nan), Some(true));
        assert_eq!(parse_float("1_000"), Some(1000.0));
        assert!(validate(&[def("bad", "(unclosed")]).unwrap_err().contains("'bad'"));
    }

    #[test]
    fn final_list_keeps_last_value() {
        let mut l = Vec::new();
        fold_final(&mut l, "a", 1.0, 1.0);
        fold_final(&mut l, "b", 2.0, 1.0);
        fold_final(&mut l, "a", 3.0, 2.0);
        fold_final(&mut l, "a", f64::NAN, 3.0);
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].value, l[0].timestamp), (3.0, 2.0));
    }
}
