//! xgboost's JSON model format: written so that xgboost 1.7, 2.x and 3.x load it and predict
//! the same values (see docs/gbdt-notes.md §2), and read back (ours or xgboost's own files).

use serde_json::{Value, json};

use crate::booster::Booster;
use crate::objective::{Objective, POISSON_MAX_DELTA_STEP};
use crate::tree::RegTree;

/// Why a model file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not JSON.
    #[error("the model is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an xgboost gbtree model kiln can use.
    #[error("the model is not an xgboost JSON gbtree model kiln can read: {0}")]
    Format(String),
}

/// `base_score` as xgboost <= 3.0 writes it: one plain number (e.g. `4.56E-1`). Versions before
/// 3.1 silently misread the bracketed vector form, so single values are never bracketed.
fn scalar_string(v: f32) -> String {
    format!("{v:E}")
}

fn tree_json(t: &RegTree, id: usize, num_feature: usize) -> Value {
    // Leaves store their value in split_conditions; their split_indices/default_left are unused.
    json!({
        "id": id,
        "tree_param": {
            "num_deleted": "0",
            "num_feature": num_feature.to_string(),
            "num_nodes": t.n_nodes().to_string(),
            "size_leaf_vector": "1",
        },
        "left_children": t.left,
        "right_children": t.right,
        "parents": t.parent,
        "split_indices": t.feature,
        "split_conditions": t.cond,
        "split_type": vec![0u8; t.n_nodes()],
        "default_left": t.default_left.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>(),
        "base_weights": t.base_weight,
        "loss_changes": t.loss_change,
        "sum_hessian": t.sum_hess,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
    })
}

fn objective_json(obj: &Objective) -> Value {
    match *obj {
        Objective::Softmax { num_class } | Objective::Softprob { num_class } => json!({
            "name": obj.name(),
            "softmax_multiclass_param": {"num_class": num_class.to_string()},
        }),
        Objective::Tweedie { rho } => json!({
            "name": obj.name(),
            "tweedie_regression_param": {"tweedie_variance_power": rho.to_string()},
        }),
        Objective::Poisson => json!({
            "name": obj.name(),
            "poisson_regression_param": {"max_delta_step": POISSON_MAX_DELTA_STEP.to_string()},
        }),
        Objective::PseudoHuber { slope } => json!({
            "name": obj.name(),
            "pseudo_huber_param": {"huber_slope": slope.to_string()},
        }),
        Objective::AbsoluteError | Objective::BinaryHinge => json!({"name": obj.name()}),
        _ => json!({
            "name": obj.name(),
            "reg_loss_param": {"scale_pos_weight": "1"},
        }),
    }
}

impl Booster {
    /// The model as xgboost JSON.
    pub fn to_xgboost_json(&self) -> Value {
        let k = self.objective.n_groups();
        let mut attributes = serde_json::Map::new();
        if let Some((it, score)) = self.best {
            attributes.insert("best_iteration".into(), json!(it.to_string()));
            attributes.insert("best_score".into(), json!(score.to_string()));
        }
        let n_rounds = self.trees.len() / k.max(1);
        json!({
            "version": [2, 1, 0],
            "learner": {
                "attributes": attributes,
                "feature_names": [],
                "feature_types": [],
                "learner_model_param": {
                    "base_score": scalar_string(self.base_score),
                    "boost_from_average": "1",
                    "num_class": if k > 1 { k.to_string() } else { "0".to_string() },
                    "num_feature": self.num_feature.to_string(),
                    "num_target": "1",
                },
                "objective": objective_json(&self.objective),
                "gradient_booster": {
                    "name": "gbtree",
                    "model": {
                        "gbtree_model_param": {
                            "num_parallel_tree": "1",
                            "num_trees": self.trees.len().to_string(),
                        },
                        "iteration_indptr": (0..=n_rounds).map(|i| i * k).collect::<Vec<_>>(),
                        "tree_info": self.tree_info,
                        "trees": self.trees.iter().enumerate()
                            .map(|(i, t)| tree_json(t, i, self.num_feature))
                            .collect::<Vec<_>>(),
                    }
                }
            }
        })
    }

    /// Serialised xgboost JSON text.
    pub fn to_xgboost_json_string(&self) -> String {
        self.to_xgboost_json().to_string()
    }

    /// Reads an xgboost JSON model (kiln's or xgboost's own).
    pub fn from_xgboost_json(text: &str) -> Result<Booster, ModelError> {
        let v: Value = serde_json::from_str(text)?;
        let fmt = |s: &str| ModelError::Format(s.to_string());
        let learner = v.get("learner").ok_or_else(|| fmt("no 'learner'"))?;
        let lmp = learner
            .get("learner_model_param")
            .ok_or_else(|| fmt("no 'learner_model_param'"))?;
        let num_feature = str_usize(lmp.get("num_feature")).ok_or_else(|| fmt("num_feature"))?;
        let num_class = str_usize(lmp.get("num_class")).unwrap_or(0);
        let base_raw = lmp
            .get("base_score")
            .and_then(Value::as_str)
            .ok_or_else(|| fmt("base_score"))?;
        let base_vals: Vec<f32> = base_raw
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| fmt("base_score is not a number"))?;
        let obj_v = learner.get("objective").ok_or_else(|| fmt("objective"))?;
        let name = obj_v
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| fmt("objective.name"))?;
        let param = |section: &str, key: &str| {
            obj_v
                .get(section)
                .and_then(|s| s.get(key))
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<f32>().ok())
        };
        let objective = match name {
            "reg:squarederror" | "reg:linear" => Objective::SquaredError,
            "reg:logistic" => Objective::RegLogistic,
            "reg:absoluteerror" => Objective::AbsoluteError,
            "reg:pseudohubererror" => Objective::PseudoHuber {
                slope: param("pseudo_huber_param", "huber_slope").unwrap_or(1.0),
            },
            "reg:gamma" => Objective::Gamma,
            "reg:tweedie" => Objective::Tweedie {
                rho: param("tweedie_regression_param", "tweedie_variance_power").unwrap_or(1.5),
            },
            "count:poisson" => Objective::Poisson,
            "binary:logistic" => Objective::BinaryLogistic,
            "binary:logitraw" => Objective::BinaryLogitRaw,
            "binary:hinge" => Objective::BinaryHinge,
            "multi:softmax" => Objective::Softmax {
                num_class: num_class.max(2),
            },
            "multi:softprob" => Objective::Softprob {
                num_class: num_class.max(2),
            },
            other => return Err(ModelError::Format(format!("objective '{other}'"))),
        };
        let gb = learner.get("gradient_booster").ok_or_else(|| fmt("gradient_booster"))?;
        if gb.get("name").and_then(Value::as_str) != Some("gbtree") {
            return Err(fmt("only gbtree boosters are supported"));
        }
        let model = gb.get("model").ok_or_else(|| fmt("gradient_booster.model"))?;
        let tree_info: Vec<usize> = model
            .get("tree_info")
            .and_then(Value::as_array)
            .ok_or_else(|| fmt("tree_info"))?
            .iter()
            .map(|x| x.as_u64().map(|x| x as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| fmt("tree_info"))?;
        let trees_v = model
            .get("trees")
            .and_then(Value::as_array)
            .ok_or_else(|| fmt("trees"))?;
        let mut trees = Vec::with_capacity(trees_v.len());
        for t in trees_v {
            trees.push(read_tree(t).ok_or_else(|| fmt("a tree is malformed"))?);
        }
        if trees.len() != tree_info.len() {
            return Err(fmt("tree_info and trees differ in length"));
        }
        let k = objective.n_groups();
        if tree_info.iter().any(|&g| g >= k) {
            return Err(fmt("tree_info names an output group the objective lacks"));
        }
        let (base_score, base_margin_vec) = if base_vals.len() == k && k > 1 {
            (0.5, Some(base_vals))
        } else {
            (*base_vals.first().ok_or_else(|| fmt("base_score"))?, None)
        };
        let best = learner.get("attributes").and_then(|a| {
            let it = a.get("best_iteration")?.as_str()?.parse().ok()?;
            let sc = a.get("best_score")?.as_str()?.parse().ok()?;
            Some((it, sc))
        });
        Ok(Booster {
            objective,
            base_score,
            base_margin_vec,
            num_feature,
            trees,
            tree_info,
            best,
        })
    }
}

fn str_usize(v: Option<&Value>) -> Option<usize> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().map(|x| x as usize),
        _ => None,
    }
}

fn read_tree(t: &Value) -> Option<RegTree> {
    let ints = |k: &str| -> Option<Vec<i32>> {
        t.get(k)?
            .as_array()?
            .iter()
            .map(|x| x.as_i64().map(|x| x as i32))
            .collect()
    };
    let floats = |k: &str| -> Option<Vec<f32>> {
        t.get(k)?
            .as_array()?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect()
    };
    let left = ints("left_children")?;
    let n = left.len();
    let right = ints("right_children")?;
    let feature: Vec<u32> = ints("split_indices")?.into_iter().map(|x| x as u32).collect();
    let cond = floats("split_conditions")?;
    let default_left: Vec<bool> = t
        .get("default_left")?
        .as_array()?
        .iter()
        .map(|x| x.as_bool().or_else(|| x.as_i64().map(|i| i != 0)))
        .collect::<Option<_>>()?;
    let parent = ints("parents").unwrap_or_else(|| vec![i32::MAX; n]);
    let base_weight = floats("base_weights").unwrap_or_else(|| vec![0.0; n]);
    let loss_change = floats("loss_changes").unwrap_or_else(|| vec![0.0; n]);
    let sum_hess = floats("sum_hessian").unwrap_or_else(|| vec![0.0; n]);
    if [right.len(), feature.len(), cond.len(), default_left.len()]
        .iter()
        .any(|&l| l != n)
        || n == 0
    {
        return None;
    }
    // Child ids must point forward inside the tree so traversal always ends.
    for i in 0..n {
        let (l, r) = (left[i], right[i]);
        if l >= 0 && (l as usize >= n || r < 0 || r as usize >= n || l as usize <= i || r as usize <= i) {
            return None;
        }
    }
    Some(RegTree {
        left,
        right,
        parent,
        feature,
        cond,
        default_left,
        base_weight,
        loss_change,
        sum_hess,
        split_bin: vec![0; n],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DenseMatrix;

    const EXAMPLES: &[&str] = &[
        include_str!("../testdata/binary_minimal.json"),
        include_str!("../testdata/reg_minimal.json"),
        include_str!("../testdata/multi_minimal.json"),
    ];

    #[test]
    fn reads_xgboost_examples_and_roundtrips() {
        for text in EXAMPLES {
            let b = Booster::from_xgboost_json(text).unwrap();
            let x = DenseMatrix::new(
                3,
                5,
                vec![
                    0.1,
                    -1.0,
                    f32::NAN,
                    2.0,
                    0.0,
                    1.0,
                    0.5,
                    0.3,
                    -0.2,
                    1.0,
                    -0.7,
                    0.0,
                    0.0,
                    0.0,
                    f32::NAN,
                ],
            )
            .unwrap();
            let p = b.predict(&x);
            let b2 = Booster::from_xgboost_json(&b.to_xgboost_json_string()).unwrap();
            if b.base_margin_vec.is_none() {
                assert_eq!(b2.predict(&x), p);
            }
            assert_eq!(b2.trees.len(), b.trees.len());
        }
    }

    #[test]
    fn base_score_is_a_plain_number_string() {
        assert_eq!(scalar_string(0.456), "4.56E-1");
        assert_eq!(scalar_string(0.5), "5E-1");
        let b = Booster::from_xgboost_json(EXAMPLES[0]).unwrap();
        let v = b.to_xgboost_json();
        let s = v["learner"]["learner_model_param"]["base_score"].as_str().unwrap();
        assert!(!s.starts_with('['));
    }

    #[test]
    fn rejects_malformed_models() {
        assert!(Booster::from_xgboost_json("{").is_err());
        assert!(Booster::from_xgboost_json("{}").is_err());
        let mut v: Value = serde_json::from_str(EXAMPLES[0]).unwrap();
        v["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"][0] = json!(0);
        assert!(Booster::from_xgboost_json(&v.to_string()).is_err());
    }
}
