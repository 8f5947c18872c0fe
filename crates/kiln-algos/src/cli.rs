//! `kiln algo ...`: the command-line entry point the kiln binary forwards to.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::booster::Booster;
use crate::container::{JobError, JobPaths, run_train, thread_count, write_failure};
use crate::reader::{ContentType, ReadOptions, read_dir, read_file};

const USAGE: &str = "\
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
    match args.as_slice() {
        [] | ["-h" | "--help" | "help", ..] | ["xgboost"] | ["xgboost", "-h" | "--help"] => {
            let _ = writeln!(out, "{USAGE}");
            0
        }
        ["xgboost", "train", rest @ ..] => train_cmd(rest, env, out, err),
        ["xgboost", "predict", rest @ ..] => match predict_cmd(rest, out) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "kiln algo xgboost predict: {e}");
                e.exit_code()
            }
        },
        [algo, ..] if *algo != "xgboost" => {
            let _ = writeln!(
                err,
                "kiln algo: unknown algorithm '{algo}'; available: xgboost\n{USAGE}"
            );
            1
        }
        _ => {
            let _ = writeln!(err, "kiln algo: unknown command\n{USAGE}");
            1
        }
    }
}

fn train_cmd(
    args: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let mut root = PathBuf::from("/opt/ml");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--ml-root" => match it.next() {
                Some(v) => root = PathBuf::from(v),
                None => {
                    let _ = writeln!(err, "kiln algo xgboost train: --ml-root needs a directory");
                    return 1;
                }
            },
            other => match other.strip_prefix("--ml-root=") {
                Some(v) => root = PathBuf::from(v),
                None => {
                    let _ = writeln!(err, "kiln algo xgboost train: unexpected argument '{other}'\n{USAGE}");
                    return 1;
                }
            },
        }
    }
    let paths = JobPaths::new(&root, env);
    // A bug must still leave a failure reason and the internal-error exit code, not just a
    // panic message on stderr.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_train(&paths, env, out, err)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(JobError::Internal(format!(
                "internal error in kiln's XGBoost: {what}; please report it with the job's hyperparameters"
            )))
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            let msg = e.to_string();
            write_failure(&paths, &msg);
            let _ = writeln!(err, "kiln xgboost: error: {msg}");
            e.exit_code()
        }
    }
}

fn predict_cmd(args: &[&str], out: &mut (dyn Write + Send)) -> Result<(), JobError> {
    let usage = |m: &str| JobError::User(format!("{m}\n{USAGE}"));
    let (mut model, mut data, mut ct, mut output) = (None, None, None, None);
    let mut has_label = false;
    let mut nthread = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v)),
            _ => (*a, None),
        };
        let mut value = || {
            inline
                .or_else(|| it.next().copied())
                .ok_or_else(|| usage(&format!("{key} needs a value")))
        };
        match key {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--data" => data = Some(PathBuf::from(value()?)),
            "--content-type" => ct = Some(value()?.to_string()),
            "--output" => output = Some(PathBuf::from(value()?)),
            "--nthread" => {
                let v = value()?;
                nthread = Some(
                    v.parse::<usize>()
                        .map_err(|_| usage(&format!("--nthread '{v}' is not a number")))?,
                );
            }
            "--has-label" => has_label = true,
            other => return Err(usage(&format!("unexpected argument '{other}'"))),
        }
    }
    let model = model.ok_or_else(|| usage("--model is required"))?;
    let data = data.ok_or_else(|| usage("--data is required"))?;
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
