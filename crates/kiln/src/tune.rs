//! `kiln tune`: start a hyperparameter tuning job from a JSON or YAML spec (the body of
//! `CreateHyperParameterTuningJob`, as `aws sagemaker create-hyper-parameter-tuning-job
//! --cli-input-json` takes it), upload local data for it, watch its progress (jobs done, best so
//! far), and print the leaderboard. Ctrl-C stops the tuning job.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::client::Client;
use crate::train::{content_type_of, stage, timestamp};

/// Arguments of `kiln tune`.
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// The tuning job spec: JSON or YAML (`.yaml`/`.yml`), the CreateHyperParameterTuningJob request.
    #[arg(long, required_unless_present = "attach")]
    pub spec: Option<PathBuf>,
    /// Watch an existing tuning job instead of starting one.
    #[arg(long, conflicts_with = "spec")]
    pub attach: Option<String>,
    /// Tuning job name (overrides the spec's; default: tune-<timestamp>).
    #[arg(long)]
    pub name: Option<String>,
    /// Upload this local file or directory as the `train` channel of every training job.
    #[arg(long)]
    pub train: Option<String>,
    /// Upload this local file or directory as the `validation` channel.
    #[arg(long)]
    pub validation: Option<String>,
    /// Wait for the tuning job: show its progress and print the leaderboard.
    #[arg(long)]
    pub wait: bool,
}

fn read_spec(path: &PathBuf) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "yaml" || ext == "yml" {
        serde_norway::from_str(&text).with_context(|| format!("{} is not valid YAML", path.display()))
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
    }
}

/// Runs `kiln tune`; returns the exit code.
pub async fn run(client: &Client, args: TuneArgs) -> Result<i32> {
    if let Some(name) = &args.attach {
        return watch(client, name).await;
    }
    let Some(spec_path) = &args.spec else {
        bail!("--spec FILE or --attach NAME is required")
    };
    let mut spec = read_spec(spec_path)?;
    if !spec.is_object() {
        bail!(
            "{} must hold a JSON/YAML object (the CreateHyperParameterTuningJob request)",
            spec_path.display()
        );
    }
    let name = args
        .name
        .clone()
        .or_else(|| spec["HyperParameterTuningJobName"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("tune-{}", timestamp()));
    spec["HyperParameterTuningJobName"] = json!(name);
    let bucket = format!("kiln-{}", client.access_key().to_ascii_lowercase());
    client.ensure_bucket(&bucket).await?;
    let mut channels = Vec::new();
    for (channel, location) in [("train", &args.train), ("validation", &args.validation)] {
        let Some(location) = location else { continue };
        eprintln!("kiln: uploading {channel} from {location}");
        let uri = stage(client, location, &format!("s3://{bucket}/{name}/input/{channel}/")).await?;
        let mut ch = json!({ "ChannelName": channel, "DataSource": { "S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated" } } });
        if let Some(ct) = content_type_of(location) {
            ch["ContentType"] = json!(ct);
        }
        channels.push(ch);
    }
    if spec.get("TrainingJobDefinition").is_none() && spec.get("TrainingJobDefinitions").is_none() {
        spec["TrainingJobDefinition"] = json!({});
    }
    if let Some(def) = spec.get_mut("TrainingJobDefinition").and_then(Value::as_object_mut) {
        if !channels.is_empty() {
            def.insert("InputDataConfig".into(), json!(channels));
        }
        def.entry("RoleArn")
            .or_insert(json!("arn:aws:iam::000000000000:role/kiln"));
        def.entry("OutputDataConfig")
            .or_insert(json!({ "S3OutputPath": format!("s3://{bucket}/output") }));
        def.entry("ResourceConfig")
            .or_insert(json!({ "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30 }));
        def.entry("StoppingCondition")
            .or_insert(json!({ "MaxRuntimeInSeconds": 86400 }));
        def.entry("AlgorithmSpecification")
            .or_insert(json!({ "TrainingImage": "kiln/xgboost", "TrainingInputMode": "File" }));
    }
    let created = client.sagemaker("CreateHyperParameterTuningJob", spec).await?;
    println!(
        "kiln: created {}",
        created["HyperParameterTuningJobArn"].as_str().unwrap_or(&name)
    );
    if !args.wait {
        println!("kiln: watch it with `kiln tune --attach {name}`");
        return Ok(0);
    }
    watch(client, &name).await
}

async fn children(client: &Client, name: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({ "HyperParameterTuningJobName": name, "MaxResults": 100 });
        if let Some(t) = &token {
            req["NextToken"] = json!(t);
        }
        let page = client
            .sagemaker("ListTrainingJobsForHyperParameterTuningJob", req)
            .await?;
        out.extend(page["TrainingJobSummaries"].as_array().cloned().unwrap_or_default());
        token = page["NextToken"].as_str().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Watches a tuning job until it ends; prints the leaderboard.
pub async fn watch(client: &Client, name: &str) -> Result<i32> {
    let start = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last = String::new();
    let mut stop_sent = false;
    loop {
        let d = client
            .sagemaker(
                "DescribeHyperParameterTuningJob",
                json!({ "HyperParameterTuningJobName": name }),
            )
            .await?;
        let c = &d["TrainingJobStatusCounters"];
        let n = |k: &str| c[k].as_i64().unwrap_or(0);
        let max = d["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
            .as_i64()
            .unwrap_or(0);
        let done = n("Completed") + n("Stopped") + n("RetryableError") + n("NonRetryableError");
        let best = &d["BestTrainingJob"];
        let best_text = match best["FinalHyperParameterTuningJobObjectiveMetric"].as_object() {
            Some(m) => format!(
                "best {} = {} ({})",
                m.get("MetricName").and_then(Value::as_str).unwrap_or(""),
                m.get("Value").map(|v| v.to_string()).unwrap_or_default(),
                best["TrainingJobName"].as_str().unwrap_or("")
            ),
            None => "no objective value yet".into(),
        };
        let line = format!(
            "{done}/{max} done ({} completed, {} stopped early, {} failed), {} running; {best_text}",
            n("Completed"),
            n("Stopped"),
            n("RetryableError") + n("NonRetryableError"),
            n("InProgress")
        );
        if line != last {
            println!("[{:>6.1}s] {line}", start.elapsed().as_secs_f64());
            last = line;
        }
        let status = d["HyperParameterTuningJobStatus"].as_str().unwrap_or("");
        if matches!(status, "Completed" | "Failed" | "Stopped") {
            print_leaderboard(&d, &children(client, name).await?);
            if let Some(r) = d["FailureReason"].as_str() {
                println!("{name}: {status}: {r}");
            } else {
                println!("{name}: {status} in {:.1}s", start.elapsed().as_secs_f64());
            }
            return Ok(if status == "Completed" { 0 } else { 1 });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
            _ = &mut ctrl_c, if !stop_sent => {
                stop_sent = true;
                eprintln!("kiln: stopping {name} and its running training jobs ...");
                client.sagemaker("StopHyperParameterTuningJob", json!({ "HyperParameterTuningJobName": name })).await?;
            }
        }
    }
}

fn print_leaderboard(d: &Value, kids: &[Value]) {
    let objective = &d["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"];
    let maximize = objective["Type"].as_str() == Some("Maximize");
    let mut ranked: Vec<&Value> = kids.iter().collect();
    ranked.sort_by(|a, b| {
        let v = |x: &Value| x["FinalHyperParameterTuningJobObjectiveMetric"]["Value"].as_f64();
        match (v(a), v(b)) {
            (Some(x), Some(y)) => {
                if maximize {
                    y.total_cmp(&x)
                } else {
                    x.total_cmp(&y)
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    let metric = objective["MetricName"].as_str().unwrap_or("objective");
    let mut rows = vec![vec![
        "#".to_string(),
        "TRAINING JOB".into(),
        "STATUS".into(),
        metric.to_uppercase(),
        "HYPERPARAMETERS".into(),
    ]];
    for (i, k) in ranked.iter().enumerate() {
        let value = k["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
            .as_f64()
            .map(|v| format!("{v:.5}"))
            .unwrap_or_else(|| "-".into());
        let hps = k["TunedHyperParameters"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        rows.push(vec![
            (i + 1).to_string(),
            k["TrainingJobName"].as_str().unwrap_or("").to_string(),
            k["TrainingJobStatus"].as_str().unwrap_or("").to_string(),
            value,
            hps,
        ]);
    }
    println!();
    crate::print_table(&rows);
    println!();
}
