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
