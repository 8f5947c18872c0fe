//! `kiln_agent::run` end to end against a fake control plane: the tree, the environment a script
//! sees, log batches, heartbeats, stop, failure files, and a control-plane outage.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kiln_api::agent::Runtime;
use serde_json::{Value, json};
use support::*;

fn script_hps(src: &std::path::Path, program: &str, extra: &[(&str, &str)]) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("sagemaker_program".into(), json!(format!("\"{program}\"")));
    m.insert(
        "sagemaker_submit_directory".into(),
        json!(format!("\"file://{}\"", src.display())),
    );
    m.insert("sagemaker_job_name".into(), json!("\"env-job\""));
    m.insert("sagemaker_region".into(), json!("\"us-east-1\""));
    for (k, v) in extra {
        m.insert((*k).into(), json!(v));
    }
    Value::Object(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noop_builds_the_tree_and_reports_every_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "noop-job";
    let mut spec = spec(job, json!({"num_round": "10", "objective": "reg:squarederror"}));
    spec["CheckpointConfig"] = json!({"S3Uri": "s3://bucket/ckpt"});
    let a = assignment(job, Runtime::Noop, spec, tmp.path());
    let (fake, url) = start(&a).await;
    let code = run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    assert_eq!(code, 0);

    let root = tmp.path().join("work").join(job).join("algo-1/opt/ml");
    let read = |p: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(root.join(p)).unwrap()).unwrap() };
    assert_eq!(
        read("input/config/hyperparameters.json"),
        json!({"num_round": "10", "objective": "reg:squarederror"})
    );
    assert_eq!(read("input/config/inputdataconfig.json"), json!({}));
    assert_eq!(read("input/config/resourceconfig.json")["current_host"], "algo-1");
    assert_eq!(
        read("input/config/checkpointconfig.json"),
        json!({"LocalPath": root.join("checkpoints").display().to_string(), "S3Uri": "s3://bucket/ckpt"})
    );
    for d in [
        "input/data",
        "model",
        "output/data",
        "output/intermediate",
        "checkpoints",
        "code",
    ] {
        assert!(root.join(d).is_dir(), "{d} missing");
    }
    assert_eq!(fake.phases(), vec!["Downloading", "Training", "Uploading"]);
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": 0, "failure_reason": null, "model_artifacts": null}))
    );
    let kinds: Vec<String> = fake.calls().iter().map(|c| c.kind.clone()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("assignment"));
    assert_eq!(kinds.last().map(String::as_str), Some("done"));
}

const DUMP_ENV: &str = r#"
import json, os, sys
print("hello from train.py")
print("to stderr", file=sys.stderr)
for i in range(50):
    print(f"line {i}")
with open(os.path.join(os.environ["SM_MODEL_DIR"], "env.json"), "w") as f:
    json.dump({"env": dict(os.environ), "argv": sys.argv, "cwd": os.getcwd()}, f)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_mode_sees_the_toolkit_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "env-job";
    let src = source_dir(tmp.path(), &[("train.py", DUMP_ENV)]);
    let hps = script_hps(
        &src,
        "train.py",
        &[
            ("epochs", "10"),
            ("lr", "0.01"),
            ("batch-size", "\"64\""),
            ("flag", "true"),
        ],
    );
    let a = assignment(
        job,
        Runtime::Script {
            framework: "pytorch".into(),
        },
        spec(job, hps),
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    assert_eq!(run_agent(args(&url, job, &tmp.path().join("work")), timing()).await, 0);
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": 0, "failure_reason": null, "model_artifacts": null}))
    );
    let root = tmp.path().join("work").join(job).join("algo-1/opt/ml");
    assert!(root.join("output/success").is_file());
    assert!(!root.join("output/failure").exists());
    let dump: Value = serde_json::from_str(&std::fs::read_to_string(root.join("model/env.json")).unwrap()).unwrap();
    let env = &dump["env"];
    let r = root.display().to_string();
    assert_eq!(dump["cwd"], json!(format!("{r}/code")));
    assert_eq!(
        dump["argv"],
        json!([
            "train.py",
            "--batch-size",
            "64",
            "--epochs",
            "10",
            "--flag",
            "True",
            "--lr",
            "0.01"
        ])
    );
    assert_eq!(
        env["SM_HPS"],
        r#"{"batch-size":"64","epochs":10,"flag":true,"lr":0.01}"#
    );
    assert_eq!(env["SM_HP_BATCH-SIZE"], "64");
    assert_eq!(env["SM_HP_FLAG"], "true");
    assert_eq!(
        env["SM_USER_ARGS"],
        r#"["--batch-size","64","--epochs","10","--flag","True","--lr","0.01"]"#
    );
    assert_eq!(env["SM_MODEL_DIR"], json!(format!("{r}/model")));
    assert_eq!(env["SM_OUTPUT_DATA_DIR"], json!(format!("{r}/output/data")));
    assert_eq!(env["SM_CHANNELS"], "[]");
    assert_eq!(env["SM_USER_ENTRY_POINT"], "train.py");
    assert_eq!(env["SM_MODULE_NAME"], "train");
    assert_eq!(env["SM_CURRENT_HOST"], "algo-1");
    assert_eq!(env["SM_HOSTS"], r#"["algo-1"]"#);
    assert_eq!(env["SM_NUM_CPUS"], "2");
    assert_eq!(env["TRAINING_JOB_NAME"], job);
    assert_eq!(env["TRAINING_JOB_ARN"], json!(a.job_arn));
    assert_eq!(env["SAGEMAKER_JOB_NAME"], "env-job");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIAJOB");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "job-secret");
    assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:1");
    assert_eq!(env["S3_ENDPOINT_URL"], "http://127.0.0.1:1");
    assert_eq!(env["MY_SETTING"], "on");
    assert!(env["PYTHONPATH"].as_str().unwrap().starts_with(&format!("{r}/code")));
    assert!(env.get("KILN_AGENT_TOKEN").is_none());
    let training_env: Value = serde_json::from_str(env["SM_TRAINING_ENV"].as_str().unwrap()).unwrap();
    assert_eq!(training_env["module_dir"], json!(format!("file://{}", src.display())));

    // Every line arrives once, in order, stdout and stderr merged.
    let lines: Vec<String> = fake.log_lines().into_iter().map(|(_, l)| l).collect();
    assert!(lines.iter().any(|l| l == "hello from train.py"));
    assert!(lines.iter().any(|l| l == "to stderr"));
    let numbered: Vec<&String> = lines.iter().filter(|l| l.starts_with("line ")).collect();
    let want: Vec<String> = (0..50).map(|i| format!("line {i}")).collect();
    assert_eq!(numbered, want.iter().collect::<Vec<_>>());
    assert!(fake.log_lines().iter().all(|(t, _)| *t > 1_600_000_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_use_the_failure_file_or_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "fail-file",
            "echo 'bad hyperparameter: eta' > output/failure; echo detail >> output/failure; exit 3",
            Some(3),
            "AlgorithmError: bad hyperparameter: eta\ndetail",
        ),
        ("fail-code", "exit 4", Some(4), "AlgorithmError: Exit Code: 4"),
        ("fail-signal", "kill -9 $$", None, "AlgorithmError: killed by signal 9"),
    ];
    for (job, script, code, reason) in cases {
        let a = assignment(
            job,
            Runtime::Command {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                arguments: vec![script.into()],
            },
            spec(job, json!({})),
            tmp.path(),
        );
        let (fake, url) = start(&a).await;
        assert_eq!(run_agent(args(&url, job, &tmp.path().join("work")), timing()).await, 0);
        assert_eq!(
            fake.done(),
            Some(json!({"exit_code": code, "failure_reason": reason, "model_artifacts": null})),
            "{job}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_scripts_get_the_toolkits_failure_file() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "script-fails";
    let src = source_dir(
        tmp.path(),
        &[(
            "train.py",
            "import sys\nprint('about to fail')\nraise ValueError('boom')\n",
        )],
    );
    let a = assignment(
        job,
        Runtime::Script {
            framework: "sklearn".into(),
        },
        spec(job, script_hps(&src, "train.py", &[("alpha", "0.5")])),
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    let done = fake.done().unwrap();
    assert_eq!(done["exit_code"], 1);
    let reason = done["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage \""),
        "{reason}"
    );
    assert!(reason.contains("ValueError: boom"), "{reason}");
    assert!(reason.ends_with("train.py --alpha 0.5\""), "{reason}");
    let failure =
        std::fs::read_to_string(tmp.path().join("work").join(job).join("algo-1/opt/ml/output/failure")).unwrap();
    assert!(failure.starts_with("ExecuteUserScriptError:"));

    // A script that writes its own failure file keeps it.
    let job = "script-own-failure";
    let tmp2 = tempfile::tempdir().unwrap();
    let src = source_dir(
        tmp2.path(),
        &[(
            "train.py",
            "import os, sys\nopen(os.environ['SM_OUTPUT_FAILURE'], 'w').write('my own reason')\nsys.exit(2)\n",
        )],
    );
    let a = assignment(
        job,
        Runtime::Script {
            framework: "sklearn".into(),
        },
        spec(job, script_hps(&src, "train.py", &[])),
        tmp2.path(),
    );
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp2.path().join("work")), timing()).await;
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": 2, "failure_reason": "AlgorithmError: my own reason", "model_artifacts": null}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_sends_sigterm_then_sigkill_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "stop-job";
    // Ignores SIGTERM (after saying so), so only SIGKILL ends it.
    let script = "trap 'echo got TERM' TERM; echo started; while true; do sleep 0.1; done";
    let a = assignment(
        job,
        Runtime::Command {
            entrypoint: vec!["/bin/sh".into(), "-c".into(), script.into()],
            arguments: vec![],
        },
        spec(job, json!({})),
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    let agent = tokio::spawn(kiln_agent::run_with(
        args(&url, job, &tmp.path().join("work")),
        timing(),
    ));
    let t0 = Instant::now();
    while !fake.log_lines().iter().any(|(_, l)| l == "started") {
        assert!(t0.elapsed() < Duration::from_secs(20), "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop_at = Instant::now();
    fake.stop.store(true, Ordering::SeqCst);
    let code = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    let done_at = fake.calls_of("done")[0].at;
    // A heartbeat (every second) carries the directive; then 1 s of grace.
    let took = done_at - stop_at;
    assert!(took >= Duration::from_millis(900), "killed too early: {took:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(fake.log_lines().iter().any(|(_, l)| l == "got TERM"));
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": null, "failure_reason": null, "model_artifacts": null}))
    );
    assert!(fake.calls_of("heartbeat").len() >= 2);
    assert_eq!(fake.phases(), vec!["Downloading", "Training", "Uploading"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_script_exits_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "stop-graceful";
    let src = source_dir(
        tmp.path(),
        &[(
            "train.py",
            "import os, signal, sys, time\n\
             def term(*_):\n    open(os.path.join(os.environ['SM_MODEL_DIR'], 'partial'), 'w').write('x')\n    print('saving and leaving')\n    sys.exit(0)\n\
             signal.signal(signal.SIGTERM, term)\nprint('sleeping')\ntime.sleep(60)\n",
        )],
    );
    let a = assignment(
        job,
        Runtime::Script {
            framework: "pytorch".into(),
        },
        spec(job, script_hps(&src, "train.py", &[])),
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    let agent = tokio::spawn(kiln_agent::run_with(
        args(&url, job, &tmp.path().join("work")),
        timing(),
    ));
    let t0 = Instant::now();
    while !fake.log_lines().iter().any(|(_, l)| l == "sleeping") {
        assert!(t0.elapsed() < Duration::from_secs(20), "the script never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": 0, "failure_reason": null, "model_artifacts": null}))
    );
    assert!(fake.log_lines().iter().any(|(_, l)| l == "saving and leaving"));
    assert!(
        tmp.path()
            .join("work")
            .join(job)
            .join("algo-1/opt/ml/model/partial")
            .is_file()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn training_goes_on_while_the_control_plane_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "outage-job";
    // 80 numbered lines over ~4 s.
    let script = "i=0; while [ $i -lt 80 ]; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done";
    let a = assignment(
        job,
        Runtime::Command {
            entrypoint: vec!["/bin/sh".into(), "-c".into(), script.into()],
            arguments: vec![],
        },
        spec(job, json!({})),
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    let agent = tokio::spawn(kiln_agent::run_with(
        args(&url, job, &tmp.path().join("work")),
        timing(),
    ));
    let t0 = Instant::now();
    while !fake.log_lines().iter().any(|(_, l)| l == "tick 5") {
        assert!(t0.elapsed() < Duration::from_secs(20), "no ticks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.down.store(true, Ordering::SeqCst);
    let down_at = Instant::now();
    let seen_before = fake.log_lines().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.log_lines().len(), seen_before, "nothing gets through while down");
    fake.down.store(false, Ordering::SeqCst);
    let up_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let lines = fake.log_lines();
    let ticks: Vec<String> = lines
        .iter()
        .filter(|(_, l)| l.starts_with("tick "))
        .map(|(_, l)| l.clone())
        .collect();
    let want: Vec<String> = (0..80).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, want, "every line once, in order");
    // Lines were produced during the outage (the algorithm kept running) ...
    let now_ms = kiln_agent::logs::now_ms();
    let outage_ms = (
        now_ms - (Instant::now() - down_at).as_millis() as i64,
        now_ms - (Instant::now() - up_at).as_millis() as i64,
    );
    let during = lines
        .iter()
        .filter(|(t, _)| *t > outage_ms.0 + 100 && *t < outage_ms.1 - 100)
        .count();
    assert!(during >= 20, "only {during} lines stamped during the outage");
    // ... and the final report came after the buffered lines.
    let kinds: Vec<String> = fake.calls().iter().map(|c| c.kind.clone()).collect();
    let last_logs = kinds.iter().rposition(|k| k == "logs").unwrap();
    let done = kinds.iter().position(|k| k == "done").unwrap();
    assert!(last_logs < done);
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": 0, "failure_reason": null, "model_artifacts": null}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_waits_for_a_control_plane_that_is_not_up_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "late-cp";
    let a = assignment(job, Runtime::Noop, spec(job, json!({})), tmp.path());
    // Reserve a port, then free it: nothing listens there for the first two seconds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let agent = tokio::spawn(kiln_agent::run_with(
        args(&url, job, &tmp.path().join("work")),
        timing(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!agent.is_finished());
    let fake = Fake::new(&a);
    fake.serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let code = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(fake.phases(), vec!["Downloading", "Training", "Uploading"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_token_ends_the_agent_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "bad-token";
    let a = assignment(job, Runtime::Noop, spec(job, json!({})), tmp.path());
    let (_fake, url) = start(&a).await;
    let mut args = args(&url, job, &tmp.path().join("work"));
    args.token = "wrong".into();
    let err = kiln_agent::run_with(args, timing()).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unusable_setups_end_with_a_client_error() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "bad-channel";
    let mut s = spec(job, json!({}));
    s["InputDataConfig"] = json!([{
        "ChannelName": "../escape",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}
    }]);
    let a = assignment(job, Runtime::Noop, s, tmp.path());
    let (fake, url) = start(&a).await;
    assert_eq!(run_agent(args(&url, job, &tmp.path().join("work")), timing()).await, 0);
    let done = fake.done().unwrap();
    assert_eq!(done["exit_code"], Value::Null);
    let reason = done["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ClientError: channel name '../escape' is not valid"),
        "{reason}"
    );
    assert!(fake.phases().is_empty());

    let job = "no-entry";
    let a = assignment(
        job,
        Runtime::Command {
            entrypoint: vec!["/nonexistent/program".into()],
            arguments: vec![],
        },
        spec(job, json!({})),
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    let reason = fake.done().unwrap()["failure_reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("ClientError: cannot start `/nonexistent/program`"),
        "{reason}"
    );
}

/// With `KILN_TOOLKIT_PYTHON` naming a Python that has `sagemaker-training` installed (e.g. a venv
/// with `pip install sagemaker-training==5.1.4`), compares every `SM_*` variable and the script
/// arguments with what the real toolkit computes from the same tree. Skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environment_matches_the_real_toolkit() {
    let Ok(toolkit_python) = std::env::var("KILN_TOOLKIT_PYTHON") else {
        eprintln!("skipped: set KILN_TOOLKIT_PYTHON to a python with sagemaker-training installed");
        return;
    };
    const COMPARE: &str = r#"
import json, os, sys
os.environ["SAGEMAKER_BASE_DIR"] = os.path.dirname(os.environ["SM_MODEL_DIR"])
ours = dict(os.environ)
from sagemaker_training import environment
env = environment.Environment()
diffs = []
for k, v in sorted(env.to_env_vars().items()):
    if k == "SM_NUM_CPUS":  # the toolkit counts the machine's CPUs; kiln passes the instance's
        continue
    if k == "SM_TRAINING_ENV":
        a, b = json.loads(v), json.loads(ours.get(k, "{}"))
        diffs += [f"training_env.{x}: toolkit={a.get(x)!r} kiln={b.get(x)!r}"
                  for x in sorted(set(a) | set(b)) if x != "num_cpus" and a.get(x, "?") != b.get(x, "?")]
    elif ours.get(k) != v:
        diffs.append(f"{k}: toolkit={v!r} kiln={ours.get(k)!r}")
if env.to_cmd_args() != sys.argv[1:]:
    diffs.append(f"argv: toolkit={env.to_cmd_args()!r} kiln={sys.argv[1:]!r}")
print("DIFFS", json.dumps(diffs))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let job = "toolkit-compare";
    let train = format!(
        "import subprocess, sys\nsys.exit(subprocess.run([{toolkit_python:?}, 'compare.py'] + sys.argv[1:]).returncode)\n"
    );
    let src = source_dir(tmp.path(), &[("train.py", &train), ("compare.py", COMPARE)]);
    std::fs::create_dir_all(tmp.path().join("data/train")).unwrap();
    std::fs::write(tmp.path().join("data/train/a.csv"), "1\n").unwrap();
    let mut s = spec(
        job,
        script_hps(
            &src,
            "train.py",
            &[
                ("epochs", "10"),
                ("lr", "3.5e-7"),
                ("batch-size", "\"64\""),
                ("flag", "true"),
                ("opts", r#"{"b": 2, "a": "x y"}"#),
                ("list", r#"[1, "two", 1e16]"#),
                ("x", "\"ünïcode\""),
                ("none", "null"),
                ("big", "12345678901234567890123"),
                ("sagemaker_container_log_level", "20"),
                ("sagemaker_mpi_enabled", "true"),
                ("_tuning_objective_metric", "\"loss\""),
            ],
        ),
    );
    s["InputDataConfig"] = json!([{
        "ChannelName": "train", "ContentType": "text/csv",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                        "S3Uri": format!("file://{}/data/train/", tmp.path().display())}}
    }]);
    let a = assignment(
        job,
        Runtime::Script {
            framework: "pytorch".into(),
        },
        s,
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    let lines: Vec<String> = fake.log_lines().into_iter().map(|(_, l)| l).collect();
    assert_eq!(fake.done().unwrap()["failure_reason"], Value::Null, "{lines:#?}");
    let diffs = lines
        .iter()
        .find_map(|l| l.strip_prefix("DIFFS "))
        .unwrap_or("<no report>");
    assert_eq!(diffs, "[]", "{lines:#?}");
}
