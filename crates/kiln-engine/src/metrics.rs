//! `MetricDefinitions`: Python-style regular expressions searched in every (escaped) log line; the
//! first capture group is the value.

use kiln_api::shapes::{MetricData, MetricDefinition};

/// Backtracking steps one definition may take on one line. Python-style features (lookaround,
/// backreferences) backtrack, and a hostile pattern such as `(?=a)((?:a|a)+)(?=z)` would take
/// seconds a line at fancy-regex's default of a million steps; past this bound the line simply
/// does not match. Patterns without such features run in linear time and never count.
const BACKTRACK_LIMIT: usize = 20_000;

/// Bytes of a line the definitions are searched in (metric lines are short; a megabyte-long line
/// is not searched 40 times in full).
const SCANNED_BYTES: usize = 16 * 1024;

fn compile(regex: &str) -> Result<fancy_regex::Regex, String> {
    fancy_regex::RegexBuilder::new(regex)
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// Compiled metric definitions of one job.
pub struct MetricMatcher {
    defs: Vec<(String, fancy_regex::Regex)>,
}

/// Checks that every regex compiles; the error names the definition.
pub fn validate(defs: &[MetricDefinition]) -> Result<(), String> {
    for (i, d) in defs.iter().enumerate() {
        if let Err(e) = compile(&d.regex) {
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
                .filter_map(|d| Some((d.name.clone(), compile(&d.regex).ok()?)))
                .collect(),
        }
    }

    /// Whether there is anything to match.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The `(metric, value)` pairs one line yields.
    pub fn scan(&self, line: &str) -> Vec<(String, f64)> {
        let mut end = line.len().min(SCANNED_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = &line[..end];
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
    fn hostile_patterns_give_up_instead_of_running_for_seconds() {
        let hostile = r"(?=a)((?:a|a)+)(?=z)";
        let line = "a".repeat(40);
        // Bounded: the search stops at the backtrack limit (fancy-regex's default, a million
        // steps, is what made a line cost 0.75 s with 40 such definitions).
        assert!(matches!(
            compile(hostile).unwrap().captures(&line),
            Err(fancy_regex::Error::RuntimeError(
                fancy_regex::RuntimeError::BacktrackLimitExceeded
            ))
        ));
        let defs: Vec<MetricDefinition> = (0..40).map(|i| def(&format!("m{i}"), hostile)).collect();
        assert!(MetricMatcher::new(&defs).scan(&line).is_empty());
        // Ordinary definitions still match, also at the end of a long line within the scanned part.
        let m = MetricMatcher::new(&[def("loss", r"loss=([0-9.]+)")]);
        assert_eq!(
            m.scan(&format!("{} loss=0.5", "x".repeat(1000))),
            vec![("loss".into(), 0.5)]
        );
        assert!(m.scan(&format!("{} loss=0.5", "é".repeat(SCANNED_BYTES))).is_empty());
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
