//! Channels, source bundles, virtualenvs and artifacts end to end, with `file://` objects.

mod support;

use std::path::{Path, PathBuf};

use kiln_api::agent::{Assignment, Runtime};
use serde_json::{Value, json};
use support::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn tar_names(tgz: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar").arg("tvzf").arg(tgz).output().unwrap();
    assert!(out.status.success(), "tar tvzf {}", tgz.display());
    // Regular files only (`-rw-r--r-- user/group size date time name`): whether directories get
    // entries of their own is the archiver's business.
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
        .collect();
    names.sort();
    names
}

fn channel(name: &str, kind: &str, uri: &str) -> Value {
    json!({"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": kind, "S3Uri": uri}}})
}

fn root(work: &Path, job: &str, host: &str) -> PathBuf {
    work.join(job).join(host).join("opt/ml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_are_staged_and_artifacts_uploaded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    write(&d.join("train/part-0.csv"), "1,2\n");
    write(&d.join("train/sub/part-1.csv"), "3,4\n");
    std::fs::create_dir_all(d.join("train/empty-folder")).unwrap();
    write(&d.join("train2/not-mine.csv"), "x\n");
    write(&d.join("validation.csv"), "5,6\n");
    write(&d.join("validation.csv.bak"), "old\n");
    write(&d.join("shared/a.csv"), "a\n");
    write(&d.join("shared/b/c.csv"), "c\n");
    let manifest = d.join("manifest.json");
    write(
        &manifest,
        &json!([{"prefix": format!("file://{}/shared/", d.display())}, "a.csv", "b/c.csv"]).to_string(),
    );
    let job = "staged-job";
    let mut s = spec(job, json!({}));
    s["InputDataConfig"] = json!([
        channel("train", "S3Prefix", &format!("file://{}/train/", d.display())),
        channel(
            "validation",
            "S3Prefix",
            &format!("file://{}/validation.csv", d.display())
        ),
        channel("listed", "ManifestFile", &format!("file://{}", manifest.display())),
        channel("raw", "S3Prefix", &format!("file://{}/tra", d.display())),
    ]);
    s["InputDataConfig"][0]["ContentType"] = json!("text/csv");
    let out = tmp.path().join("out");
    let script = "mkdir -p model/sub && echo weights > model/xgboost-model && echo x > model/sub/extra \
                  && echo report > output/data/report.txt && find input/data -type f | sort";
    let mut a = assignment(
        job,
        Runtime::Command {
            entrypoint: vec!["/bin/sh".into(), "-c".into(), script.into()],
            arguments: vec![],
        },
        s,
        tmp.path(),
    );
    a.uploads_artifacts = true;
    a.output_prefix = format!("file://{}/{job}/output", out.display());
    let (fake, url) = start(&a).await;
    let work = tmp.path().join("work");
    assert_eq!(run_agent(args(&url, job, &work), timing()).await, 0);

    let data = root(&work, job, "algo-1").join("input/data");
    assert_eq!(
        files(&data),
        vec![
            "listed/a.csv",
            "listed/b/c.csv",
            "raw/in/part-0.csv",
            "raw/in/sub/part-1.csv",
            "raw/in2/not-mine.csv",
            "train/part-0.csv",
            "train/sub/part-1.csv",
            "validation/validation.csv",
        ]
    );
    let idc: Value = serde_json::from_str(
        &std::fs::read_to_string(root(&work, job, "algo-1").join("input/config/inputdataconfig.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(idc["train"]["ContentType"], "text/csv");
    assert_eq!(idc["validation"]["TrainingInputMode"], "File");
    let logged: Vec<String> = fake.log_lines().into_iter().map(|(_, l)| l).collect();
    assert!(
        logged.contains(&"input/data/train/sub/part-1.csv".to_string()),
        "{logged:?}"
    );

    let model = out.join(job).join("output/model.tar.gz");
    assert_eq!(
        fake.done(),
        Some(json!({"exit_code": 0, "failure_reason": null, "model_artifacts": format!("file://{}", model.display())}))
    );
    assert_eq!(tar_names(&model), vec!["sub/extra", "xgboost-model"]);
    assert_eq!(
        tar_names(&out.join(job).join("output/output.tar.gz")),
        vec!["report.txt"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sharded_channels_split_by_key_across_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    for i in 0..5 {
        write(&d.join(format!("shards/part-{i}.csv")), &format!("{i}\n"));
    }
    let job = "sharded";
    let mut s = spec(job, json!({}));
    let mut ch = channel("train", "S3Prefix", &format!("file://{}/shards/", d.display()));
    ch["DataSource"]["S3DataSource"]["S3DataDistributionType"] = json!("ShardedByS3Key");
    s["InputDataConfig"] = json!([ch]);
    let work = tmp.path().join("work");
    let mut got = Vec::new();
    for host in ["algo-1", "algo-2"] {
        let mut a: Assignment = assignment(job, Runtime::Noop, s.clone(), tmp.path());
        a.host = host.into();
        a.hosts = vec!["algo-1".into(), "algo-2".into()];
        a.instance_groups[0].hosts = a.hosts.clone();
        let (fake, url) = start(&a).await;
        let mut args = args(&url, job, &work);
        args.host = host.into();
        assert_eq!(run_agent(args, timing()).await, 0);
        assert_eq!(fake.done().unwrap()["failure_reason"], Value::Null);
        got.push(files(&root(&work, job, host).join("input/data/train")));
        let idc: Value = serde_json::from_str(
            &std::fs::read_to_string(root(&work, job, host).join("input/config/inputdataconfig.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(idc["train"]["S3DistributionType"], "ShardedByS3Key");
    }
    assert_eq!(got[0], vec!["part-0.csv", "part-2.csv", "part-4.csv"]);
    assert_eq!(got[1], vec!["part-1.csv", "part-3.csv"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staging_problems_end_the_host_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "empty-prefix",
            channel(
                "train",
                "S3Prefix",
                &format!("file://{}/nothing/", tmp.path().display()),
            ),
            "ClientError: channel 'train' is empty: no objects under file://",
        ),
        (
            "no-manifest",
            channel(
                "train",
                "ManifestFile",
                &format!("file://{}/missing.json", tmp.path().display()),
            ),
            "ClientError: channel 'train': cannot read the manifest file file://",
        ),
        (
            "bad-uri",
            channel("train", "S3Prefix", "ftp://host/data/"),
            "ClientError: channel 'train': cannot list ftp://host/data/: invalid object URI",
        ),
    ];
    write(&tmp.path().join("d/x.csv"), "1\n");
    for (job, ch, want) in cases {
        let mut s = spec(job, json!({}));
        s["InputDataConfig"] = json!([ch]);
        let a = assignment(
            job,
            Runtime::Command {
                entrypoint: vec!["/bin/sh".into(), "-c".into(), "echo should-not-run".into()],
                arguments: vec![],
            },
            s,
            tmp.path(),
        );
        let (fake, url) = start(&a).await;
        assert_eq!(run_agent(args(&url, job, &tmp.path().join("work")), timing()).await, 0);
        let done = fake.done().unwrap();
        let reason = done["failure_reason"].as_str().unwrap();
        assert!(reason.starts_with(want), "{job}: {reason}");
        assert_eq!(done["exit_code"], Value::Null);
        assert_eq!(fake.phases(), vec!["Downloading"], "{job}");
        assert!(!fake.log_lines().iter().any(|(_, l)| l == "should-not-run"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uncompressed_models_are_uploaded_file_by_file() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "no-compression";
    let mut s = spec(job, json!({}));
    s["OutputDataConfig"]["CompressionType"] = json!("NONE");
    let out = tmp.path().join("out");
    let mut a = assignment(
        job,
        Runtime::Command {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            arguments: vec!["mkdir -p model/a && echo 1 > model/a/w.bin && echo 2 > model/top".into()],
        },
        s,
        tmp.path(),
    );
    a.uploads_artifacts = true;
    a.output_prefix = format!("file://{}/{job}/output", out.display());
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    let prefix = out.join(job).join("output");
    assert_eq!(
        fake.done().unwrap()["model_artifacts"],
        json!(format!("file://{}/model", prefix.display()))
    );
    assert_eq!(files(&prefix.join("model")), vec!["a/w.bin", "top"]);
    assert!(prefix.join("output.tar.gz").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_algorithm_uploads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let job = "failed-no-upload";
    let out = tmp.path().join("out");
    let mut a = assignment(
        job,
        Runtime::Command {
            entrypoint: vec!["/bin/sh".into(), "-c".into(), "echo w > model/m; exit 1".into()],
            arguments: vec![],
        },
        spec(job, json!({})),
        tmp.path(),
    );
    a.uploads_artifacts = true;
    a.output_prefix = format!("file://{}/{job}/output", out.display());
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    assert_eq!(fake.done().unwrap()["model_artifacts"], Value::Null);
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_bundles_and_cached_virtualenvs() {
    let tmp = tempfile::tempdir().unwrap();
    // A sourcedir.tar.gz as the SDK builds it: files at the root.
    let src = source_dir(
        tmp.path(),
        &[
            (
                "train.py",
                "import sys, numpy, helper\nprint('prefix', sys.prefix)\nprint('numpy', numpy.__version__)\nprint(helper.VALUE)\n",
            ),
            ("helper.py", "VALUE = 'helper imported'\n"),
            ("requirements.txt", "numpy\n"),
        ],
    );
    let bundle = tmp.path().join("sourcedir.tar.gz");
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&bundle)
        .arg("-C")
        .arg(&src)
        .args(["train.py", "helper.py", "requirements.txt"])
        .status()
        .unwrap();
    assert!(st.success());
    let cache = tmp.path().join("cache");
    let mut prefixes = Vec::new();
    for job in ["venv-1", "venv-2"] {
        let hps = json!({
            "sagemaker_program": "\"train.py\"",
            "sagemaker_submit_directory": format!("\"file://{}\"", bundle.display()),
        });
        let a = assignment(
            job,
            Runtime::Script {
                framework: "sklearn".into(),
            },
            spec(job, hps),
            &cache,
        );
        let (fake, url) = start(&a).await;
        assert_eq!(run_agent(args(&url, job, &tmp.path().join("work")), timing()).await, 0);
        let lines: Vec<String> = fake.log_lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(fake.done().unwrap()["failure_reason"], Value::Null, "{lines:#?}");
        assert!(lines.contains(&"helper imported".to_string()), "{lines:#?}");
        let prefix = lines
            .iter()
            .find_map(|l| l.strip_prefix("prefix "))
            .unwrap()
            .to_string();
        prefixes.push(prefix);
        if job == "venv-2" {
            assert!(
                lines.iter().any(|l| l.contains("using the cached environment")),
                "{lines:#?}"
            );
        }
    }
    let venvs: Vec<PathBuf> = std::fs::read_dir(cache.join("envs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(venvs.len(), 1);
    assert!(venvs[0].join(".kiln-ready").is_file());
    assert_eq!(prefixes[0], venvs[0].display().to_string());
    assert_eq!(prefixes[0], prefixes[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_requirements_fail_like_the_toolkit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_dir(
        tmp.path(),
        &[
            ("train.py", "print('never')\n"),
            ("requirements.txt", "-r does-not-exist.txt\n"),
        ],
    );
    let job = "bad-reqs";
    let hps = json!({
        "sagemaker_program": "\"train.py\"",
        "sagemaker_submit_directory": format!("\"{}\"", src.display()),
    });
    let a = assignment(
        job,
        Runtime::Script {
            framework: "sklearn".into(),
        },
        spec(job, hps),
        &tmp.path().join("cache"),
    );
    let (fake, url) = start(&a).await;
    run_agent(args(&url, job, &tmp.path().join("work")), timing()).await;
    let done = fake.done().unwrap();
    let reason = done["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("AlgorithmError: InstallRequirementsError:\nExitCode "),
        "{reason}"
    );
    assert!(
        reason.contains("pip install") && reason.contains(" -r ") && reason.contains("requirements.txt"),
        "{reason}"
    );
    assert_eq!(done["exit_code"], 1);
    assert!(!fake.log_lines().iter().any(|(_, l)| l == "never"));
    // The broken build left nothing behind that a later job would take for a finished venv.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("cache/envs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipe_mode_streams_epochs_through_fifos() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    write(&d.join("p/a.csv"), "1,2\n");
    write(&d.join("p/b.csv"), "3,4\n");
    let src = source_dir(
        tmp.path(),
        &[(
            "train.py",
            "import os, stat\n\
             data = os.environ['SM_INPUT_DATA_DIR']\n\
             for epoch in range(3):\n\
             \x20   path = os.path.join(data, f'train_{epoch}')\n\
             \x20   assert stat.S_ISFIFO(os.stat(path).st_mode), path\n\
             \x20   with open(path) as f:\n\
             \x20       print(f'epoch {epoch}:', f.read().replace(chr(10), ' ').strip())\n\
             print('channel dir exists:', os.path.isdir(os.environ['SM_CHANNEL_TRAIN']))\n",
        )],
    );
    let job = "pipe-job";
    let mut s = spec(
        job,
        json!({"sagemaker_program": "\"train.py\"", "sagemaker_submit_directory": format!("\"{}\"", src.display())}),
    );
    let mut ch = channel("train", "S3Prefix", &format!("file://{}/p/", d.display()));
    ch["InputMode"] = json!("Pipe");
    s["InputDataConfig"] = json!([ch]);
    let a = assignment(
        job,
        Runtime::Script {
            framework: "pytorch".into(),
        },
        s,
        tmp.path(),
    );
    let (fake, url) = start(&a).await;
    let work = tmp.path().join("work");
    assert_eq!(run_agent(args(&url, job, &work), timing()).await, 0);
    let lines: Vec<String> = fake.log_lines().into_iter().map(|(_, l)| l).collect();
    assert_eq!(fake.done().unwrap()["failure_reason"], Value::Null, "{lines:#?}");
    for e in 0..3 {
        assert!(lines.contains(&format!("epoch {e}: 1,2 3,4")), "{lines:#?}");
    }
    assert!(lines.contains(&"channel dir exists: False".to_string()), "{lines:#?}");
    let idc: Value = serde_json::from_str(
        &std::fs::read_to_string(root(&work, job, "algo-1").join("input/config/inputdataconfig.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(idc["train"]["TrainingInputMode"], "Pipe");
    // The FIFOs are gone once the algorithm has ended.
    assert_eq!(
        files(&root(&work, job, "algo-1").join("input/data")),
        Vec::<String>::new()
    );
}
