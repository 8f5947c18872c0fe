//! `kiln algo ...`: the command-line entry point the kiln binary forwards to.

use std::io::Write;
use std::path::PathBuf;

use crate::container::{JobError, JobPaths, write_failure};
use crate::registry::{self, Algorithm};

/// Usage of `kiln algo` itself.
fn usage() -> String {
    let mut u = format!(
        "usage: kiln algo NAME train [--ml-root DIR]\n       kiln algo NAME predict ...\n\nNAME is one of: {}\n",
        registry::names()
    );
    for a in registry::ALGORITHMS {
        u.push('\n');
        u.push_str(a.usage());
        u.push('\n');
    }
    u
}

/// Runs `kiln algo <args>` (`args` excludes `kiln algo`); returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let env = |k: &str| std::env::var(k).ok();
    run_with(args, &env, &mut std::io::stdout(), &mut std::io::stderr())
}

/// [`run`] with injectable environment and output streams (for tests).
pub fn run_with(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (name, rest) = match args.as_slice() {
        [] | ["-h" | "--help" | "help", ..] => {
            let _ = writeln!(out, "{}", usage());
            return 0;
        }
        [name, rest @ ..] => (*name, rest),
    };
    let Some(algo) = registry::by_name(name) else {
        let _ = writeln!(
            err,
            "kiln algo: unknown algorithm '{name}'; available: {}\n{}",
            registry::names(),
            usage()
        );
        return 1;
    };
    match rest {
        [] | ["-h" | "--help"] => {
            let _ = writeln!(out, "{}", algo.usage());
            0
        }
        ["train", rest @ ..] => train_cmd(algo, rest, env, out, err),
        ["predict", rest @ ..] => match algo.predict(rest, out) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "kiln algo {} predict: {e}", algo.name());
                e.exit_code()
            }
        },
        _ => {
            let _ = writeln!(err, "kiln algo: unknown command\n{}", algo.usage());
            1
        }
    }
}

fn train_cmd(
    algo: &dyn Algorithm,
    args: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let name = algo.name();
    let mut root = PathBuf::from("/opt/ml");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--ml-root" => match it.next() {
                Some(v) => root = PathBuf::from(v),
                None => {
                    let _ = writeln!(err, "kiln algo {name} train: --ml-root needs a directory");
                    return 1;
                }
            },
            other => match other.strip_prefix("--ml-root=") {
                Some(v) => root = PathBuf::from(v),
                None => {
                    let _ = writeln!(
                        err,
                        "kiln algo {name} train: unexpected argument '{other}'\n{}",
                        algo.usage()
                    );
                    return 1;
                }
            },
        }
    }
    let paths = JobPaths::new(&root, env);
    // A bug must still leave a failure reason and the internal-error exit code, not just a
    // panic message on stderr.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| algo.train(&paths, env, out, err)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(JobError::Internal(format!(
                "internal error in kiln's {name}: {what}; please report it with the job's hyperparameters"
            )))
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            let msg = e.to_string();
            write_failure(&paths, &msg);
            let _ = writeln!(err, "kiln {name}: error: {msg}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::booster::Booster;
    use std::path::Path;

    fn job(name: &str, hp: &str, channels: &[(&str, &str, Option<&str>)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!("kiln-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("input/config")).unwrap();
        std::fs::write(root.join("input/config/hyperparameters.json"), hp).unwrap();
        let mut cfg = serde_json::Map::new();
        for (c, data, ct) in channels {
            let d = root.join("input/data").join(c);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("part-0"), data).unwrap();
            let mut e = serde_json::json!({"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"});
            if let Some(ct) = ct {
                e["ContentType"] = serde_json::json!(ct);
            }
            cfg.insert(c.to_string(), e);
        }
        std::fs::write(
            root.join("input/config/inputdataconfig.json"),
            serde_json::Value::Object(cfg).to_string(),
        )
        .unwrap();
        root
    }

    fn train(root: &Path) -> (i32, String, String) {
        let args: Vec<String> = ["xgboost", "train", "--ml-root"]
            .iter()
            .map(|s| s.to_string())
            .chain([root.display().to_string()])
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(&args, &|_| None, &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    const DATA: &str = "1,1.0,5\n0,2.0,3\n1,1.5,\n0,3.0,1\n1,0.5,4\n0,2.5,2\n";

    #[test]
    fn trains_and_writes_model_and_round_lines() {
        let root = job(
            "ok",
            r#"{"num_round": "3", "objective": "binary:logistic", "min_child_weight": "0"}"#,
            &[("train", DATA, Some("text/csv")), ("validation", DATA, Some("csv"))],
        );
        let (code, out, err) = train(&root);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with("[2]\ttrain-logloss:") && lines[2].contains("\tvalidation-logloss:"));
        let model = std::fs::read_to_string(root.join("model/xgboost-model")).unwrap();
        assert!(Booster::from_xgboost_json(&model).is_ok());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn user_errors_write_failure_and_exit_1() {
        let root = job(
            "hp",
            r#"{"num_round": "3", "eta": "1.5"}"#,
            &[("train", DATA, Some("text/csv"))],
        );
        let (code, _, _) = train(&root);
        assert_eq!(code, 1);
        let failure = std::fs::read_to_string(root.join("output/failure")).unwrap();
        assert_eq!(failure, "Hyperparameter 'eta': value '1.5' is out of range [0, 1]");
        let root = job(
            "ch",
            r#"{"num_round": "3"}"#,
            &[("train", DATA, Some("text/csv")), ("extra", DATA, None)],
        );
        assert_eq!(train(&root).0, 1);
        let failure = std::fs::read_to_string(root.join("output/failure")).unwrap();
        assert!(failure.starts_with("Extraneous channel found: extra"), "{failure}");
        let root = job(
            "data",
            r#"{"num_round": "3"}"#,
            &[("train", "1,2\n0,x\n", Some("text/csv"))],
        );
        assert_eq!(train(&root).0, 1);
        let failure = std::fs::read_to_string(root.join("output/failure")).unwrap();
        assert!(
            failure.contains("channel 'train'") && failure.contains("line 2"),
            "{failure}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Rows of a noisy regression on 4 features (deterministic).
    fn regression_rows(n: usize) -> String {
        let mut s = String::new();
        for i in 0..n {
            let x: Vec<f64> = (0..4).map(|j| ((i * (7 + 3 * j) + j * 11) % 97) as f64 / 9.7).collect();
            let y = x[0] * 2.0 - x[1] + (x[2] * x[3]).sin() + ((i * 31) % 13) as f64 / 13.0;
            s.push_str(&format!("{y},{},{},{},{}\n", x[0], x[1], x[2], x[3]));
        }
        s
    }

    /// Adds a `model` channel holding `files` (name, bytes) to the job at `root`.
    fn add_model_channel(root: &Path, files: &[(&str, Vec<u8>)]) {
        let d = root.join("input/data/model");
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in files {
            std::fs::write(d.join(name), bytes).unwrap();
        }
        let path = root.join("input/config/inputdataconfig.json");
        let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg["model"] = serde_json::json!({"TrainingInputMode": "File", "ContentType": "application/x-sagemaker-model"});
        std::fs::write(&path, cfg.to_string()).unwrap();
    }

    /// `model.tar.gz` holding `xgboost-model` = `model`, as a training job uploads it.
    fn tar_gz(model: &[u8]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(model.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "xgboost-model", model).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_model_channel_continues_training_as_one_longer_run() {
        let data = regression_rows(600);
        let hp = |rounds: usize| {
            format!(r#"{{"num_round": "{rounds}", "objective": "reg:squarederror", "max_depth": "4"}}"#)
        };
        let whole_root = job("incr-50", &hp(50), &[("train", &data, Some("text/csv"))]);
        assert_eq!(train(&whole_root).0, 0);
        let whole_text = std::fs::read_to_string(whole_root.join("model/xgboost-model")).unwrap();
        let whole = Booster::from_xgboost_json(&whole_text).unwrap();
        let first_root = job("incr-30", &hp(30), &[("train", &data, Some("text/csv"))]);
        assert_eq!(train(&first_root).0, 0);
        let first = std::fs::read(first_root.join("model/xgboost-model")).unwrap();
        let x = crate::reader::read_file(
            &whole_root.join("input/data/train/part-0"),
            crate::reader::ContentType::Csv,
            &crate::reader::ReadOptions {
                has_label: true,
                csv_weights: false,
                min_features: 0,
            },
        )
        .unwrap()
        .features;
        // The model as the extracted file and as the job's model.tar.gz.
        for (name, bytes) in [("xgboost-model", first.clone()), ("model.tar.gz", tar_gz(&first))] {
            let root = job(
                &format!("incr-20-{name}"),
                &hp(20),
                &[("train", &data, Some("text/csv"))],
            );
            add_model_channel(&root, &[(name, bytes)]);
            let (code, out, err) = train(&root);
            assert_eq!(code, 0, "{err}");
            assert!(
                err.contains("continuing the model of channel 'model' (30 rounds): 20 more"),
                "{err}"
            );
            // xgboost numbers a continued training's rounds from 0.
            let rounds: Vec<&str> = out.lines().map(|l| l.split(']').next().unwrap()).collect();
            assert_eq!(rounds, (0..20).map(|r| format!("[{r}")).collect::<Vec<_>>(), "{out}");
            let text = std::fs::read_to_string(root.join("model/xgboost-model")).unwrap();
            let more = Booster::from_xgboost_json(&text).unwrap();
            assert_eq!(more.trees.len(), 50);
            assert_eq!(more.trees, whole.trees, "{name}");
            assert_eq!(more.base_score, whole.base_score);
            assert_eq!(more.objective, whole.objective);
            for (a, b) in more.predict(&x).iter().zip(whole.predict(&x)) {
                assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
            }
            let _ = std::fs::remove_dir_all(&root);
        }
        let _ = std::fs::remove_dir_all(&whole_root);
        let _ = std::fs::remove_dir_all(&first_root);
    }

    #[test]
    fn a_checkpoint_wins_over_the_model_channel() {
        let data = regression_rows(400);
        let hp = |rounds: usize| format!(r#"{{"num_round": "{rounds}", "objective": "reg:squarederror"}}"#);
        let whole_root = job("incr-ck-50", &hp(50), &[("train", &data, Some("text/csv"))]);
        assert_eq!(train(&whole_root).0, 0);
        let whole = std::fs::read_to_string(whole_root.join("model/xgboost-model")).unwrap();
        let first_root = job("incr-ck-30", &hp(30), &[("train", &data, Some("text/csv"))]);
        assert_eq!(train(&first_root).0, 0);
        let first = std::fs::read(first_root.join("model/xgboost-model")).unwrap();
        let root = job("incr-ck-20", &hp(20), &[("train", &data, Some("text/csv"))]);
        add_model_channel(&root, &[("model.tar.gz", tar_gz(&first))]);
        let ckpt = root.join("ckpt");
        std::fs::write(
            root.join("input/config/checkpointconfig.json"),
            serde_json::json!({"LocalPath": ckpt.display().to_string()}).to_string(),
        )
        .unwrap();
        assert_eq!(train(&root).0, 0);
        // Interrupted after the checkpoint of round 45 (46 trees: 30 + 16 of this job's 20).
        for r in 46..50 {
            std::fs::remove_file(ckpt.join(format!("xgboost-checkpoint.{r}"))).unwrap();
        }
        std::fs::remove_dir_all(root.join("model")).unwrap();
        let (code, out, err) = train(&root);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("Resuming from checkpoint xgboost-checkpoint.45"), "{err}");
        let rounds: Vec<&str> = out.lines().map(|l| l.split(']').next().unwrap()).collect();
        assert_eq!(rounds, ["[16", "[17", "[18", "[19"], "{out}");
        let resumed = std::fs::read_to_string(root.join("model/xgboost-model")).unwrap();
        let (a, b) = (
            Booster::from_xgboost_json(&resumed).unwrap(),
            Booster::from_xgboost_json(&whole).unwrap(),
        );
        assert_eq!(a.trees.len(), 50);
        assert_eq!(a.trees, b.trees);
        for d in [root, whole_root, first_root] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// (hyperparameters, the model channel's files, train data, what the failure must say).
    type BadModelCase<'a> = (&'a str, Vec<(&'a str, Vec<u8>)>, &'a str, &'a [&'a str]);

    #[test]
    fn an_incompatible_or_unreadable_model_channel_fails_naming_both_values() {
        let data = regression_rows(200);
        let first = job(
            "incr-bad-a",
            r#"{"num_round": "3", "objective": "binary:logistic"}"#,
            &[("train", &DATA.repeat(20), Some("text/csv"))],
        );
        assert_eq!(train(&first).0, 0);
        let logistic = std::fs::read(first.join("model/xgboost-model")).unwrap();
        let cases: Vec<BadModelCase> = vec![
            (
                r#"{"num_round": "3", "objective": "reg:squarederror"}"#,
                vec![("xgboost-model", logistic.clone())],
                &data,
                &["objective binary:logistic", "objective reg:squarederror"],
            ),
            (
                r#"{"num_round": "3", "objective": "binary:logistic"}"#,
                vec![("model.tar.gz", tar_gz(&logistic))],
                "1,1,2,3,4\n0,2,3,4,5\n",
                &["feature count 2", "feature count 4"],
            ),
            (
                r#"{"num_round": "3"}"#,
                vec![("xgboost-model", b"not a model".to_vec())],
                &data,
                &["channel 'model'", "is not an XGBoost model kiln can read"],
            ),
            (
                r#"{"num_round": "3"}"#,
                vec![("model.tar.gz", vec![0x1f, 0x8b, 0, 1, 2])],
                &data,
                &["channel 'model'", "not a readable tar.gz archive"],
            ),
            (
                r#"{"num_round": "3"}"#,
                vec![("a", b"x".to_vec()), ("b", b"y".to_vec())],
                &data,
                &["channel 'model' holds 2 files"],
            ),
        ];
        for (i, (hp, files, train_data, needles)) in cases.into_iter().enumerate() {
            let root = job(&format!("incr-bad-{i}"), hp, &[("train", train_data, Some("text/csv"))]);
            add_model_channel(&root, &files);
            assert_eq!(train(&root).0, 1, "case {i}");
            let failure = std::fs::read_to_string(root.join("output/failure")).unwrap();
            for n in needles {
                assert!(failure.contains(n), "case {i}: {failure}");
            }
            let _ = std::fs::remove_dir_all(&root);
        }
        let _ = std::fs::remove_dir_all(&first);
    }

    #[test]
    fn usage_errors() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = vec!["nope".to_string()];
        assert_eq!(run_with(&args, &|_| None, &mut out, &mut err), 1);
        let args = vec!["xgboost".to_string(), "predict".to_string()];
        assert_eq!(run_with(&args, &|_| None, &mut out, &mut err), 1);
        assert!(String::from_utf8_lossy(&err).contains("--model is required"));
    }
}
