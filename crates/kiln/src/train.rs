//! `kiln train`: a front for humans. Uploads local inputs to the embedded store, creates the job
//! through the SageMaker API, and (with `--wait`) shows its progress and log, then the metrics, the
//! model's location and the time it took. Ctrl-C stops the job.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::Client;

/// Arguments of `kiln train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Algorithm image: `xgboost` (the built-in), `noop`, or any image URI SageMaker clients use.
    #[arg(long, default_value = "xgboost")]
    pub image: String,
    /// The `train` channel: a local file or directory (uploaded), or an s3:// URI.
    #[arg(long)]
    pub train: Option<String>,
    /// The `validation` channel: a local file or directory, or an s3:// URI.
    #[arg(long)]
    pub validation: Option<String>,
    /// More channels as NAME=PATH_OR_URI.
    #[arg(long = "channel", value_name = "NAME=PATH")]
    pub channels: Vec<String>,
    /// Content type of the channels (default: from the file extension: .csv → text/csv, .libsvm → text/libsvm).
    #[arg(long)]
    pub content_type: Option<String>,
    /// A hyperparameter, KEY=VALUE (repeatable).
    #[arg(long = "hp", value_name = "KEY=VALUE")]
    pub hyperparameters: Vec<String>,
    /// Script mode: the entry point (e.g. train.py) in --source-dir.
    #[arg(long)]
    pub entry_point: Option<String>,
    /// Script mode: the directory holding the entry point (uploaded as sourcedir.tar.gz).
    #[arg(long)]
    pub source_dir: Option<PathBuf>,
    /// Training job name (default: <image>-<timestamp>).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "ml.m5.large")]
    pub instance_type: String,
    #[arg(long, default_value_t = 1)]
    pub instance_count: u32,
    /// MaxRuntimeInSeconds.
    #[arg(long, default_value_t = 86400)]
    pub max_runtime: u64,
    /// S3OutputPath (default: s3://<your kiln bucket>/output).
    #[arg(long)]
    pub output: Option<String>,
    /// Wait for the job: show its progress and log, then its metrics and model.
    #[arg(long)]
    pub wait: bool,
}

fn image_uri(image: &str) -> String {
    match image {
        "noop" => "kiln/noop".into(),
        other => match kiln_algos::registry::by_name(other) {
            Some(algo) => format!("kiln/{}", algo.name()),
            None => other.to_string(),
        },
    }
}

pub(crate) fn content_type_of(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    let lower = lower.trim_end_matches(".gz");
    if lower.ends_with(".csv") {
        Some("text/csv")
    } else if lower.ends_with(".libsvm") || lower.ends_with(".svm") {
        Some("text/libsvm")
    } else {
        None
    }
}

pub(crate) fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = kiln_api::sigv4::format_amz_date(now as i64);
    format!("{}-{}", &s[0..8], &s[9..15])
}

/// Uploads a local file or directory under `prefix`; s3:// URIs pass through. A progress bar
/// (bytes, rate, time left) shows on a terminal; a line says what went up.
pub(crate) async fn stage(client: &Client, location: &str, prefix: &str) -> Result<String> {
    if location.starts_with("s3://") {
        return Ok(location.to_string());
    }
    let path = Path::new(location);
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read input {location}"))?;
    let files = if meta.is_file() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into());
        vec![(path.to_path_buf(), name)]
    } else {
        let mut files = Vec::new();
        collect_files(path, path, &mut files)?;
        if files.is_empty() {
            bail!("input directory {location} holds no files");
        }
        files
    };
    let total: u64 = files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = upload_bar(total);
    let started = Instant::now();
    let blobs = client.blobs();
    for (abs, rel) in &files {
        blobs
            .upload_with_progress(abs, &format!("{prefix}{rel}"), &|n| bar.inc(n))
            .await
            .with_context(|| format!("cannot upload {}", abs.display()))?;
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "kiln: uploaded {} ({} file{}, {}) in {secs:.1} s ({}/s)",
        location,
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        indicatif::HumanBytes(total),
        indicatif::HumanBytes((total as f64 / secs.max(1e-3)) as u64)
    );
    Ok(prefix.to_string())
}

/// A byte progress bar on stderr (drawn only on a terminal).
pub(crate) fn upload_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "  {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} ({eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect_files(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
            out.push((p, rel));
        }
    }
    Ok(())
}

/// Runs `kiln train`; returns the process exit code.
pub async fn run(client: &Client, args: TrainArgs) -> Result<i32> {
    let image = image_uri(&args.image);
    let short = image
        .rsplit('/')
        .next()
        .unwrap_or("job")
        .split(':')
        .next()
        .unwrap_or("job")
        .to_string();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", short.replace(['.', '_'], "-"), timestamp()));
    let bucket = format!("kiln-{}", client.access_key().to_ascii_lowercase());
    client.ensure_bucket(&bucket).await?;
    let mut channels: Vec<(String, String)> = Vec::new();
    if let Some(t) = &args.train {
        channels.push(("train".into(), t.clone()));
    }
    if let Some(v) = &args.validation {
        channels.push(("validation".into(), v.clone()));
    }
    for c in &args.channels {
        let (n, p) = c
            .split_once('=')
            .with_context(|| format!("--channel {c}: expected NAME=PATH"))?;
        channels.push((n.to_string(), p.to_string()));
    }
    let mut inputs = Vec::new();
    for (channel, location) in &channels {
        let prefix = format!("s3://{bucket}/{name}/input/{channel}/");
        eprintln!("kiln: uploading {channel} from {location}");
        let uri = stage(client, location, &prefix).await?;
        let mut ch = json!({
            "ChannelName": channel,
            "DataSource": { "S3DataSource": { "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated" } },
        });
        if let Some(ct) = args.content_type.as_deref().or_else(|| content_type_of(location)) {
            ch["ContentType"] = json!(ct);
        }
        inputs.push(ch);
    }
    let mut hps = BTreeMap::new();
    for hp in &args.hyperparameters {
        let (k, v) = hp
            .split_once('=')
            .with_context(|| format!("--hp {hp}: expected KEY=VALUE"))?;
        hps.insert(k.to_string(), v.to_string());
    }
    if let Some(entry) = &args.entry_point {
        let dir = args.source_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let tmp = std::env::temp_dir().join(format!("kiln-sourcedir-{}.tar.gz", std::process::id()));
        kiln_blob::pack_tar_gz(&dir, &tmp).with_context(|| format!("cannot pack {}", dir.display()))?;
        let uri = format!("s3://{bucket}/{name}/source/sourcedir.tar.gz");
        client
            .blobs()
            .upload(&tmp, &uri)
            .await
            .context("cannot upload the source bundle")?;
        let _ = std::fs::remove_file(&tmp);
        // Script-mode hyperparameters are JSON strings, as the SageMaker SDK sends them.
        for v in hps.values_mut() {
            if serde_json::from_str::<Value>(v).is_err() {
                *v = json!(v).to_string();
            }
        }
        hps.insert("sagemaker_program".into(), json!(entry).to_string());
        hps.insert("sagemaker_submit_directory".into(), json!(uri).to_string());
    }
    let output = args.output.clone().unwrap_or_else(|| format!("s3://{bucket}/output"));
    let mut req = json!({
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/kiln",
        "AlgorithmSpecification": { "TrainingImage": image, "TrainingInputMode": "File" },
        "HyperParameters": hps,
        "OutputDataConfig": { "S3OutputPath": output },
        "ResourceConfig": { "InstanceType": args.instance_type, "InstanceCount": args.instance_count, "VolumeSizeInGB": 30 },
        "StoppingCondition": { "MaxRuntimeInSeconds": args.max_runtime },
    });
    if !inputs.is_empty() {
        req["InputDataConfig"] = json!(inputs);
    }
    let created = client.sagemaker("CreateTrainingJob", req).await?;
    println!("kiln: created {}", created["TrainingJobArn"].as_str().unwrap_or(&name));
    if !args.wait {
        println!("kiln: follow it with `kiln jobs describe {name}`, or run `kiln train ... --wait` next time");
        return Ok(0);
    }
    watch(client, &name).await
}

/// Shows a job's progress until it ends; Ctrl-C stops it.
pub async fn watch(client: &Client, name: &str) -> Result<i32> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut seen_transitions = 0;
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    let mut stop_sent = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    loop {
        let job = client
            .sagemaker("DescribeTrainingJob", json!({ "TrainingJobName": name }))
            .await?;
        let transitions = job["SecondaryStatusTransitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let hosts = job["ResourceConfig"]["InstanceCount"].as_u64().unwrap_or(1);
        let mut lines = Vec::new();
        for t in transitions.iter().skip(seen_transitions) {
            lines.push(format!(
                "[{:>6.1}s] {}: {}",
                start.elapsed().as_secs_f64(),
                t["Status"].as_str().unwrap_or(""),
                t["StatusMessage"].as_str().unwrap_or("")
            ));
        }
        seen_transitions = transitions.len();
        lines.extend(
            fetch_logs(client, name, hosts > 1, &mut tokens)
                .await
                .unwrap_or_default(),
        );
        if tty {
            eprint!("\r\x1b[K");
        }
        for l in &lines {
            println!("{l}");
        }
        let _ = std::io::stdout().flush();
        let status = job["TrainingJobStatus"].as_str().unwrap_or("").to_string();
        if matches!(status.as_str(), "Completed" | "Failed" | "Stopped") {
            // One more pass for log lines that landed with the final report.
            for l in fetch_logs(client, name, hosts > 1, &mut tokens)
                .await
                .unwrap_or_default()
            {
                println!("{l}");
            }
            return Ok(summarize(&job, start));
        }
        if tty {
            tick += 1;
            eprint!(
                "{} {} / {}  {:.1}s{}",
                spinner[tick % 4],
                status,
                job["SecondaryStatus"].as_str().unwrap_or(""),
                start.elapsed().as_secs_f64(),
                if stop_sent {
                    "  (stopping)"
                } else {
                    "  (Ctrl-C stops the job)"
                }
            );
            let _ = std::io::stderr().flush();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = &mut ctrl_c, if !stop_sent => {
                stop_sent = true;
                if tty { eprint!("\r\x1b[K"); }
                eprintln!("kiln: stopping {name} ...");
                client.sagemaker("StopTrainingJob", json!({ "TrainingJobName": name })).await?;
            }
        }
    }
}

/// New log lines of every stream of the job since `tokens` (updated), host-prefixed when asked.
pub(crate) async fn fetch_logs(
    client: &Client,
    name: &str,
    prefix_host: bool,
    tokens: &mut BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let streams = client
        .logs(
            "DescribeLogStreams",
            json!({ "logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": format!("{name}/") }),
        )
        .await?;
    let mut out = Vec::new();
    for s in streams["logStreams"].as_array().into_iter().flatten() {
        let stream = s["logStreamName"].as_str().unwrap_or_default().to_string();
        loop {
            let mut req = json!({ "logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": stream, "startFromHead": true });
            if let Some(t) = tokens.get(&stream) {
                req["nextToken"] = json!(t);
            }
            let page = client.logs("GetLogEvents", req).await?;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if let Some(t) = page["nextForwardToken"].as_str() {
                tokens.insert(stream.clone(), t.to_string());
            }
            if events.is_empty() {
                break;
            }
            let host = stream
                .split('/')
                .nth(1)
                .and_then(|h| h.rsplit_once('-'))
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            for e in events {
                let msg = e["message"].as_str().unwrap_or("").replace("#011", "\t");
                out.push(if prefix_host { format!("{host}: {msg}") } else { msg });
            }
        }
    }
    Ok(out)
}

fn summarize(job: &Value, start: Instant) -> i32 {
    let status = job["TrainingJobStatus"].as_str().unwrap_or("");
    let name = job["TrainingJobName"].as_str().unwrap_or("");
    println!();
    match status {
        "Completed" => println!("{name}: Completed in {:.1}s", start.elapsed().as_secs_f64()),
        "Failed" => println!(
            "{name}: Failed: {}",
            job["FailureReason"].as_str().unwrap_or("(no reason given)")
        ),
        _ => println!("{name}: {status} ({})", job["SecondaryStatus"].as_str().unwrap_or("")),
    }
    if let Some(t) = job["TrainingTimeInSeconds"].as_i64() {
        println!(
            "  training time: {t} s (billable {} s)",
            job["BillableTimeInSeconds"].as_i64().unwrap_or(t)
        );
    }
    if let Some(metrics) = job["FinalMetricDataList"].as_array()
        && !metrics.is_empty()
    {
        println!("  metrics:");
        for m in metrics {
            println!("    {:<24} {}", m["MetricName"].as_str().unwrap_or(""), m["Value"]);
        }
    }
    if let Some(model) = job["ModelArtifacts"]["S3ModelArtifacts"].as_str() {
        println!("  model: {model}");
        println!("  (download: aws s3 cp {model} .   after `eval \"$(kiln env)\"`)");
    }
    match status {
        "Completed" => 0,
        "Stopped" => 2,
        _ => 1,
    }
}
