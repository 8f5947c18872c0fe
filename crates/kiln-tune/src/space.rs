//! Search spaces as SageMaker defines them, and the map between assignments and the unit cube.
//!
//! Every strategy works on a *unit point*: one coordinate in [0, 1] per parameter, obtained by
//! applying the parameter's scaling. A categorical parameter with k values owns the interval
//! [i/k, (i+1)/k) for value i. `snap` turns any unit point into the canonical coordinates of the
//! assignment it decodes to, so models see exactly what the training job will run.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::TuneError;

/// Hyperparameter values as sent to the training job: name → string.
pub type Assignment = BTreeMap<String, String>;

/// Most tunable hyperparameters SageMaker accepts in one tuning job.
pub const MAX_PARAMS: usize = 30;
/// Most values a categorical range may list.
pub const MAX_CATEGORICAL_VALUES: usize = 30;
/// Integer bounds must be exactly representable as `f64` (2^53), since strategies work in floats.
pub const MAX_INTEGER_MAGNITUDE: i64 = 1 << 53;
/// `Auto` picks logarithmic scaling when min > 0 and max/min reaches this ratio.
pub const AUTO_LOG_RATIO: f64 = 100.0;

/// How a numeric range is searched (SageMaker `ScalingType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scaling {
    /// Logarithmic when min > 0 and max/min ≥ [`AUTO_LOG_RATIO`], linear otherwise.
    #[default]
    Auto,
    /// Uniform in the value.
    Linear,
    /// Uniform in ln(value); needs min > 0.
    Logarithmic,
    /// Uniform in ln(1 − value), dense near 1; continuous only, needs 0 ≤ min and max < 1.
    ReverseLogarithmic,
}

/// The type and range of one hyperparameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParamKind {
    /// `IntegerParameterRanges` entry; both bounds inclusive.
    Integer {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
        /// How the range is searched.
        scaling: Scaling,
    },
    /// `ContinuousParameterRanges` entry; both bounds inclusive.
    Continuous {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// How the range is searched.
        scaling: Scaling,
    },
    /// `CategoricalParameterRanges` entry; values are sent verbatim.
    Categorical {
        /// The allowed values, in the order given.
        values: Vec<String>,
    },
}

/// One tunable hyperparameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// The hyperparameter name, as the training job sees it.
    pub name: String,
    /// Its type and range.
    pub kind: ParamKind,
}

impl Param {
    /// An integer range.
    pub fn integer(name: impl Into<String>, min: i64, max: i64, scaling: Scaling) -> Self {
        Param {
            name: name.into(),
            kind: ParamKind::Integer { min, max, scaling },
        }
    }

    /// A continuous range.
    pub fn continuous(name: impl Into<String>, min: f64, max: f64, scaling: Scaling) -> Self {
        Param {
            name: name.into(),
            kind: ParamKind::Continuous { min, max, scaling },
        }
    }

    /// A categorical range.
    pub fn categorical<S: Into<String>>(name: impl Into<String>, values: impl IntoIterator<Item = S>) -> Self {
        Param {
            name: name.into(),
            kind: ParamKind::Categorical {
                values: values.into_iter().map(Into::into).collect(),
            },
        }
    }

    /// Checks this range against SageMaker's rules.
    pub fn validate(&self) -> Result<(), TuneError> {
        let bad = |problem: String| TuneError::InvalidParam {
            name: self.name.clone(),
            problem,
        };
        if self.name.is_empty() {
            return Err(TuneError::InvalidSpace(
                "a hyperparameter range has an empty Name; give every range a name".into(),
            ));
        }
        match &self.kind {
            ParamKind::Integer { min, max, scaling } => {
                if min > max {
                    return Err(bad(format!(
                        "MinValue ({min}) is greater than MaxValue ({max}); swap them"
                    )));
                }
                if min.abs() > MAX_INTEGER_MAGNITUDE || max.abs() > MAX_INTEGER_MAGNITUDE {
                    return Err(bad(format!(
                        "integer bounds must lie within ±{MAX_INTEGER_MAGNITUDE} (2^53)"
                    )));
                }
                match scaling {
                    Scaling::Logarithmic if *min <= 0 => Err(bad(format!(
                        "Logarithmic scaling needs MinValue > 0, got {min}; raise MinValue or use Linear"
                    ))),
                    Scaling::ReverseLogarithmic => Err(bad(
                        "ReverseLogarithmic scaling is supported for continuous ranges only; use Linear or Logarithmic"
                            .into(),
                    )),
                    _ => Ok(()),
                }
            }
            ParamKind::Continuous { min, max, scaling } => {
                if !min.is_finite() || !max.is_finite() {
                    return Err(bad(format!(
                        "MinValue ({min}) and MaxValue ({max}) must be finite numbers"
                    )));
                }
                if min > max {
                    return Err(bad(format!(
                        "MinValue ({min}) is greater than MaxValue ({max}); swap them"
                    )));
                }
                match scaling {
                    Scaling::Logarithmic if *min <= 0.0 => Err(bad(format!(
                        "Logarithmic scaling needs MinValue > 0, got {min}; raise MinValue or use Linear"
                    ))),
                    Scaling::ReverseLogarithmic if *min < 0.0 || *max >= 1.0 => Err(bad(format!(
                        "ReverseLogarithmic scaling needs 0 <= MinValue and MaxValue < 1, got [{min}, {max}]"
                    ))),
                    _ => Ok(()),
                }
            }
            ParamKind::Categorical { values } => {
                if values.is_empty() || values.len() > MAX_CATEGORICAL_VALUES {
                    return Err(bad(format!(
                        "a categorical range needs 1 to {MAX_CATEGORICAL_VALUES} Values, got {}",
                        values.len()
                    )));
                }
                let mut seen = BTreeSet::new();
                for v in values {
                    if !seen.insert(v.as_str()) {
                        return Err(bad(format!(
                            "value '{v}' is listed more than once; list each value once"
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// The scaling actually used: `Auto` resolved, categorical ranges have none.
    pub fn effective_scaling(&self) -> Option<Scaling> {
        let auto = |lo: f64, hi: f64| {
            if lo > 0.0 && hi / lo >= AUTO_LOG_RATIO {
                Scaling::Logarithmic
            } else {
                Scaling::Linear
            }
        };
        match &self.kind {
            ParamKind::Integer { min, max, scaling } => Some(match scaling {
                Scaling::Auto => auto(*min as f64, *max as f64),
                s => *s,
            }),
            ParamKind::Continuous { min, max, scaling } => Some(match scaling {
                Scaling::Auto => auto(*min, *max),
                s => *s,
            }),
            ParamKind::Categorical { .. } => None,
        }
    }

    /// Number of categorical values, or `None` for numeric parameters.
    pub(crate) fn n_categories(&self) -> Option<usize> {
        match &self.kind {
            ParamKind::Categorical { values } => Some(values.len()),
            _ => None,
        }
    }

    /// Numeric range in the warped coordinate t(v), widened by half a step for integers so that
    /// every integer owns an equal share of the unit interval.
    fn warped_range(&self) -> Option<(f64, f64, Scaling)> {
        let scaling = self.effective_scaling()?;
        let (lo, hi) = match &self.kind {
            ParamKind::Integer { min, max, .. } => (*min as f64 - 0.5, *max as f64 + 0.5),
            ParamKind::Continuous { min, max, .. } => (*min, *max),
            ParamKind::Categorical { .. } => return None,
        };
        Some((warp(lo, scaling), warp(hi, scaling), scaling))
    }

    /// Unit coordinate of a numeric value (not clamped).
    fn to_unit(&self, v: f64) -> f64 {
        match self.warped_range() {
            Some((a, b, s)) if b > a => (warp(v, s) - a) / (b - a),
            _ => 0.5,
        }
    }

    /// Numeric value of a unit coordinate, clamped to the range and rounded for integers.
    fn value_at_unit(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0);
        let Some((a, b, s)) = self.warped_range() else {
            return 0.0;
        };
        let v = unwarp(a + u * (b - a), s);
        match &self.kind {
            ParamKind::Integer { min, max, .. } => v.round().clamp(*min as f64, *max as f64),
            ParamKind::Continuous { min, max, .. } => v.clamp(*min, *max),
            ParamKind::Categorical { .. } => 0.0,
        }
    }

    /// The canonical unit coordinate of whatever `u` decodes to.
    pub(crate) fn snap(&self, u: f64) -> f64 {
        match &self.kind {
            ParamKind::Categorical { values } => {
                let k = values.len();
                (category_of(u, k) as f64 + 0.5) / k as f64
            }
            _ => self.to_unit(self.value_at_unit(u)).clamp(0.0, 1.0),
        }
    }

    /// The string sent to the training job for unit coordinate `u`.
    pub(crate) fn format(&self, u: f64) -> String {
        match &self.kind {
            ParamKind::Integer { .. } => format!("{}", self.value_at_unit(u) as i64),
            ParamKind::Continuous { .. } => format_float(self.value_at_unit(u)),
            ParamKind::Categorical { values } => {
                let i = category_of(u, values.len());
                values.get(i).cloned().unwrap_or_default()
            }
        }
    }

    /// Reads a value as this parameter's type, without range checks.
    pub fn parse_value(&self, raw: &str) -> Result<Value, TuneError> {
        let bad = |problem: &str| TuneError::InvalidValue {
            name: self.name.clone(),
            value: raw.to_string(),
            problem: problem.to_string(),
        };
        let s = raw.trim();
        match &self.kind {
            ParamKind::Integer { .. } => {
                if let Ok(i) = s.parse::<i64>() {
                    return Ok(Value::Integer(i));
                }
                // Accept "3.0": parents of a warm start may have tuned the parameter as continuous.
                match s.parse::<f64>() {
                    Ok(f) if f.is_finite() && f.fract() == 0.0 => Ok(Value::Integer(f as i64)),
                    _ => Err(bad("is not an integer")),
                }
            }
            ParamKind::Continuous { .. } => match s.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Continuous(f)),
                _ => Err(bad("is not a finite number")),
            },
            ParamKind::Categorical { values } => {
                if values.iter().any(|v| v == raw) {
                    Ok(Value::Categorical(raw.to_string()))
                } else {
                    Err(bad("is not one of the categorical values"))
                }
            }
        }
    }

    /// Unit coordinate of a typed value, or `None` when it lies outside the range.
    pub(crate) fn unit_of(&self, value: &Value) -> Option<f64> {
        match (&self.kind, value) {
            (ParamKind::Integer { min, max, .. }, Value::Integer(i)) => {
                (min..=max).contains(&i).then(|| self.to_unit(*i as f64))
            }
            (ParamKind::Continuous { min, max, .. }, Value::Continuous(f)) => {
                (*min..=*max).contains(f).then(|| self.to_unit(*f))
            }
            (ParamKind::Continuous { min, max, .. }, Value::Integer(i)) => {
                let f = *i as f64;
                (*min..=*max).contains(&f).then(|| self.to_unit(f))
            }
            (ParamKind::Categorical { values }, Value::Categorical(s)) => values
                .iter()
                .position(|v| v == s)
                .map(|i| (i as f64 + 0.5) / values.len() as f64),
            _ => None,
        }
    }
}

/// Index of the categorical value owning unit coordinate `u`.
pub(crate) fn category_of(u: f64, k: usize) -> usize {
    if k == 0 {
        return 0;
    }
    ((u.clamp(0.0, 1.0) * k as f64) as usize).min(k - 1)
}

fn warp(v: f64, s: Scaling) -> f64 {
    match s {
        Scaling::Logarithmic => v.ln(),
        Scaling::ReverseLogarithmic => -(1.0 - v).ln(),
        Scaling::Auto | Scaling::Linear => v,
    }
}

fn unwarp(t: f64, s: Scaling) -> f64 {
    match s {
        Scaling::Logarithmic => t.exp(),
        Scaling::ReverseLogarithmic => 1.0 - (-t).exp(),
        Scaling::Auto | Scaling::Linear => t,
    }
}

/// Shortest decimal string that reads back as the same `f64` (never exponent notation).
pub fn format_float(v: f64) -> String {
    format!("{v}")
}

/// A typed hyperparameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// From an integer range.
    Integer(i64),
    /// From a continuous range.
    Continuous(f64),
    /// From a categorical range.
    Categorical(String),
}

/// The hyperparameter ranges of a tuning job, in the order given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SearchSpace {
    /// The ranges; order matters for Grid enumeration.
    pub params: Vec<Param>,
}

impl SearchSpace {
    /// A space from its ranges.
    pub fn new(params: Vec<Param>) -> Self {
        SearchSpace { params }
    }

    /// Checks every range and the space as a whole; the first problem found is returned.
    pub fn validate(&self) -> Result<(), TuneError> {
        if self.params.is_empty() {
            return Err(TuneError::InvalidSpace(
                "no hyperparameter ranges were given; add at least one Integer, Continuous or \
                 Categorical range"
                    .into(),
            ));
        }
        if self.params.len() > MAX_PARAMS {
            return Err(TuneError::InvalidSpace(format!(
                "{} ranges were given; at most {MAX_PARAMS} hyperparameters can be tuned",
                self.params.len()
            )));
        }
        let mut names = BTreeSet::new();
        for p in &self.params {
            p.validate()?;
            if !names.insert(p.name.as_str()) {
                return Err(TuneError::InvalidSpace(format!(
                    "hyperparameter '{}' has more than one range; give each name one range",
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// Number of parameters (= dimension of unit points).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the space has no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Canonical form of a unit point.
    pub(crate) fn snap(&self, u: &[f64]) -> Vec<f64> {
        self.params.iter().zip(u).map(|(p, &x)| p.snap(x)).collect()
    }

    /// The assignment a unit point stands for.
    pub(crate) fn decode(&self, u: &[f64]) -> Assignment {
        self.params
            .iter()
            .zip(u)
            .map(|(p, &x)| (p.name.clone(), p.format(x)))
            .collect()
    }

    /// Typed values of an assignment; every parameter must be present, typed and in range.
    pub fn parse(&self, a: &Assignment) -> Result<BTreeMap<String, Value>, TuneError> {
        let mut out = BTreeMap::new();
        for p in &self.params {
            let raw = a.get(&p.name).ok_or_else(|| TuneError::InvalidValue {
                name: p.name.clone(),
                value: String::new(),
                problem: "is missing from the assignment".into(),
            })?;
            let v = p.parse_value(raw)?;
            if p.unit_of(&v).is_none() {
                return Err(TuneError::InvalidValue {
                    name: p.name.clone(),
                    value: raw.clone(),
                    problem: "is outside the range".into(),
                });
            }
            out.insert(p.name.clone(), v);
        }
        Ok(out)
    }

    /// Unit point of an assignment, or `None` if a parameter is missing, mistyped or out of range.
    pub(crate) fn encode(&self, a: &Assignment) -> Option<Vec<f64>> {
        self.params
            .iter()
            .map(|p| {
                let v = p.parse_value(a.get(&p.name)?).ok()?;
                p.unit_of(&v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_scaling_rule() {
        let p = Param::continuous("lr", 1e-4, 1.0, Scaling::Auto);
        assert_eq!(p.effective_scaling(), Some(Scaling::Logarithmic));
        let p = Param::continuous("m", 0.1, 0.9, Scaling::Auto);
        assert_eq!(p.effective_scaling(), Some(Scaling::Linear));
        let p = Param::continuous("z", 0.0, 100.0, Scaling::Auto);
        assert_eq!(p.effective_scaling(), Some(Scaling::Linear));
        let p = Param::integer("n", 1, 1000, Scaling::Auto);
        assert_eq!(p.effective_scaling(), Some(Scaling::Logarithmic));
    }

    #[test]
    fn round_trip_integer_and_float() {
        let p = Param::integer("n", 3, 9, Scaling::Linear);
        for v in 3..=9 {
            let u = p.to_unit(v as f64);
            assert_eq!(p.format(u), v.to_string());
        }
        let p = Param::continuous("x", 0.001, 0.999, Scaling::ReverseLogarithmic);
        let u = p.to_unit(0.99);
        assert!((p.value_at_unit(u) - 0.99).abs() < 1e-12);
    }

    #[test]
    fn integers_share_the_unit_interval_equally() {
        let p = Param::integer("n", 0, 3, Scaling::Linear);
        let mut counts = [0; 4];
        for i in 0..4000 {
            let u = (i as f64 + 0.5) / 4000.0;
            counts[p.value_at_unit(u) as usize] += 1;
        }
        assert_eq!(counts, [1000; 4]);
    }

    #[test]
    fn validation_messages_name_parameter_and_rule() {
        let e = Param::continuous("lr", 0.0, 1.0, Scaling::Logarithmic)
            .validate()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "hyperparameter range 'lr': Logarithmic scaling needs MinValue > 0, got 0; raise \
             MinValue or use Linear"
        );
        let e = Param::integer("depth", 1, 10, Scaling::ReverseLogarithmic)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("'depth'"));
        assert!(e.to_string().contains("continuous ranges only"));
        let e = Param::continuous("beta", 0.5, 1.0, Scaling::ReverseLogarithmic)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("MaxValue < 1"));
        let e = Param::integer("n", 5, 1, Scaling::Linear).validate().unwrap_err();
        assert!(e.to_string().contains("MinValue (5) is greater than MaxValue (1)"));
        let e = Param::categorical("opt", ["sgd", "adam", "sgd"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("'sgd' is listed more than once"));
        let e = Param::categorical("opt", Vec::<String>::new()).validate().unwrap_err();
        assert!(e.to_string().contains("1 to 30 Values"));
        let e = Param::continuous("x", f64::NAN, 1.0, Scaling::Linear)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("finite"));

        let dup = SearchSpace::new(vec![
            Param::integer("a", 1, 2, Scaling::Auto),
            Param::categorical("a", ["x"]),
        ]);
        assert!(
            dup.validate()
                .unwrap_err()
                .to_string()
                .contains("'a' has more than one range")
        );
        assert!(SearchSpace::default().validate().is_err());
        let many = SearchSpace::new(
            (0..31)
                .map(|i| Param::integer(format!("p{i}"), 0, 1, Scaling::Auto))
                .collect(),
        );
        assert!(many.validate().unwrap_err().to_string().contains("at most 30"));
    }

    #[test]
    fn parse_checks_type_and_range() {
        let s = SearchSpace::new(vec![
            Param::integer("n", 1, 10, Scaling::Auto),
            Param::continuous("x", 0.0, 1.0, Scaling::Auto),
            Param::categorical("c", ["a", "b"]),
        ]);
        let mut a = Assignment::new();
        a.insert("n".into(), "4".into());
        a.insert("x".into(), "0.25".into());
        a.insert("c".into(), "b".into());
        let v = s.parse(&a).unwrap();
        assert_eq!(v["n"], Value::Integer(4));
        assert_eq!(v["x"], Value::Continuous(0.25));
        assert_eq!(v["c"], Value::Categorical("b".into()));
        a.insert("n".into(), "11".into());
        assert!(s.parse(&a).unwrap_err().to_string().contains("outside the range"));
        a.insert("n".into(), "x".into());
        assert!(s.parse(&a).unwrap_err().to_string().contains("not an integer"));
    }
}
