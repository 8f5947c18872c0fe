//! Hyperparameter checks shared by the built-ins that came after K-Means (PCA, k-NN): each
//! reads one value of `hyperparameters.json`'s map and says, on error, which hyperparameter,
//! which value and what it must be.

use std::collections::BTreeMap;

use crate::container::JobError;

/// A map of hyperparameters and the algorithm they are for (named in messages).
pub struct Hp<'a> {
    /// The job's hyperparameters.
    pub map: &'a BTreeMap<String, String>,
    /// `PCA`, `k-NN`.
    pub algorithm: &'static str,
}

/// Names the SDK or the platform send that every built-in accepts and ignores.
const IGNORED: &[&str] = &["force_dense", "_tuning_objective_metric", "_kfold", "_num_kfold"];

fn bad(name: &str, value: &str, what: &str) -> JobError {
    JobError::User(format!("Hyperparameter '{name}': value '{value}' {what}"))
}

impl Hp<'_> {
    /// Fails on a name that is not in `known` (nor sent by the SDK or the platform).
    pub fn only(&self, known: &[&str]) -> Result<(), JobError> {
        for name in self.map.keys() {
            if !known.contains(&name.as_str()) && !IGNORED.contains(&name.as_str()) && !name.starts_with("sagemaker_") {
                return Err(JobError::User(format!(
                    "Hyperparameter '{name}' is not a {} hyperparameter; known: {}",
                    self.algorithm,
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The value of `name`, unquoted (the SDK may send JSON strings).
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(|v| v.trim().trim_matches('"'))
    }

    /// An integer >= `min`: required when `default` is `None`.
    pub fn int_at_least(&self, name: &str, min: i64, default: Option<i64>) -> Result<i64, JobError> {
        let Some(v) = self.raw(name) else {
            return default.ok_or_else(|| {
                JobError::User(format!(
                    "Hyperparameter '{name}' is required by {}: set it (an integer >= {min})",
                    self.algorithm
                ))
            });
        };
        // The SDK writes integers of float-typed fields as `10.0`.
        let n = v
            .parse::<i64>()
            .ok()
            .or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| bad(name, v, &format!("is not an integer >= {min}")))?;
        if n < min {
            return Err(bad(
                name,
                v,
                &format!("is out of range: it must be an integer >= {min}"),
            ));
        }
        Ok(n)
    }

    /// A positive count (`usize`, >= `min`).
    pub fn count(&self, name: &str, min: usize, default: Option<usize>) -> Result<usize, JobError> {
        self.int_at_least(name, min as i64, default.map(|d| d as i64))
            .map(|n| n as usize)
    }

    /// `auto` (`None`) or an integer >= 1.
    pub fn auto_or_count(&self, name: &str) -> Result<Option<usize>, JobError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("auto") => Ok(None),
            Some(_) => self.count(name, 1, None).map(Some),
        }
    }

    /// `true`/`false` (any case, as the SDK writes Python's `True`).
    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, JobError> {
        match self.raw(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(bad(name, v, "is not one of: true, false")),
        }
    }

    /// One of `choices` (exact spelling, as SageMaker checks them): its index.
    pub fn choice(&self, name: &str, choices: &[&str], default: Option<usize>) -> Result<usize, JobError> {
        let Some(v) = self.raw(name) else {
            return default.ok_or_else(|| {
                JobError::User(format!(
                    "Hyperparameter '{name}' is required by {}: set it to one of: {}",
                    self.algorithm,
                    choices.join(", ")
                ))
            });
        };
        choices
            .iter()
            .position(|c| *c == v)
            .ok_or_else(|| bad(name, v, &format!("is not one of: {}", choices.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_errors() {
        let map: BTreeMap<String, String> = [("a", "3"), ("b", "10.0"), ("c", "True"), ("d", "x"), ("e", "\"auto\"")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let hp = Hp {
            map: &map,
            algorithm: "PCA",
        };
        assert_eq!(hp.count("a", 1, None).unwrap(), 3);
        assert_eq!(hp.count("b", 1, None).unwrap(), 10);
        assert!(hp.boolean("c", false).unwrap());
        assert_eq!(hp.auto_or_count("e").unwrap(), None);
        assert_eq!(
            hp.count("z", 1, None).unwrap_err().to_string(),
            "Hyperparameter 'z' is required by PCA: set it (an integer >= 1)"
        );
        assert_eq!(
            hp.count("a", 4, None).unwrap_err().to_string(),
            "Hyperparameter 'a': value '3' is out of range: it must be an integer >= 4"
        );
        assert_eq!(
            hp.choice("d", &["p", "q"], Some(0)).unwrap_err().to_string(),
            "Hyperparameter 'd': value 'x' is not one of: p, q"
        );
        assert!(
            hp.only(&["a", "b", "c", "d"])
                .unwrap_err()
                .to_string()
                .contains("'e' is not a PCA")
        );
    }
}
