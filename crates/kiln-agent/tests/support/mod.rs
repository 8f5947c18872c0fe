//! The agent against a fake control plane started in the test: a tiny axum server that hands out
//! an `Assignment`, records every call, answers with directives, and can play dead (503).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use kiln_agent::{AgentArgs, Timing};
use kiln_api::agent::{Assignment, InstanceGroupHosts, Runtime, S3Access, host_path};
use serde_json::{Value, json};

pub const TOKEN: &str = "job-token";
pub const ACCOUNT: &str = "123456789012";

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    pub kind: String,
    pub body: Value,
    pub at: Instant,
}

pub struct Fake {
    pub assignment: Mutex<Value>,
    pub calls: Mutex<Vec<Call>>,
    /// Answer 503 to everything.
    pub down: AtomicBool,
    /// Directive `stop` on status, logs and heartbeat.
    pub stop: AtomicBool,
    pub job: String,
    pub host: String,
}

impl Fake {
    pub fn new(assignment: &Assignment) -> Arc<Fake> {
        Arc::new(Fake {
            assignment: Mutex::new(serde_json::to_value(assignment).unwrap()),
            calls: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            job: assignment.job_name.clone(),
            host: assignment.host.clone(),
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn calls_of(&self, kind: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.kind == kind).collect()
    }

    /// Every log line received, in order.
    pub fn log_lines(&self) -> Vec<(i64, String)> {
        self.calls_of("logs")
            .iter()
            .flat_map(|c| {
                c.body["lines"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|l| (l[0].as_i64().unwrap(), l[1].as_str().unwrap().to_string()))
            })
            .collect()
    }

    pub fn phases(&self) -> Vec<String> {
        self.calls_of("status")
            .iter()
            .map(|c| c.body["phase"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    pub fn done(&self) -> Option<Value> {
        self.calls_of("done").last().map(|c| c.body.clone())
    }

    /// Serves on `listener` until the test ends.
    pub fn serve(self: &Arc<Fake>, listener: tokio::net::TcpListener) {
        let app = Router::new().fallback(handle).with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
}

async fn handle(
    State(f): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if f.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "restarting".into());
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return (StatusCode::UNAUTHORIZED, "bad token".into());
    }
    let base = host_path(ACCOUNT, &f.job, &f.host);
    let Some(kind) = uri.path().strip_prefix(&format!("{base}/")) else {
        return (StatusCode::NOT_FOUND, format!("no such path {}", uri.path()));
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
        }
    };
    f.calls.lock().unwrap().push(Call {
        kind: kind.to_string(),
        body,
        at: Instant::now(),
    });
    let directive = || {
        let action = if f.stop.load(Ordering::SeqCst) {
            "stop"
        } else {
            "continue"
        };
        json!({ "action": action }).to_string()
    };
    match (method, kind) {
        (Method::GET, "assignment") => (StatusCode::OK, f.assignment.lock().unwrap().to_string()),
        (Method::POST, "status" | "logs" | "heartbeat") => (StatusCode::OK, directive()),
        (Method::POST, "done") => (StatusCode::OK, "{}".into()),
        _ => (StatusCode::NOT_FOUND, "unknown call".into()),
    }
}

/// An assignment for `job`/`algo-1` with `runtime` and the given spec.
pub fn assignment(job: &str, runtime: Runtime, spec: Value, cache: &Path) -> Assignment {
    Assignment {
        account: ACCOUNT.into(),
        region: "us-east-1".into(),
        job_name: job.into(),
        job_arn: format!("arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{job}"),
        host: "algo-1".into(),
        hosts: vec!["algo-1".into()],
        current_group: "homogeneousCluster".into(),
        instance_type: "ml.m5.large".into(),
        instance_groups: vec![InstanceGroupHosts {
            instance_group_name: "homogeneousCluster".into(),
            instance_type: "ml.m5.large".into(),
            hosts: vec!["algo-1".into()],
        }],
        num_cpus: 2,
        num_gpus: 0,
        spec,
        runtime,
        log_stream: format!("{job}/algo-1-1700000000"),
        s3: S3Access {
            endpoint_url: "http://127.0.0.1:1".into(),
            region: "us-east-1".into(),
            access_key_id: "AKIAJOB".into(),
            secret_access_key: "job-secret".into(),
            path_style: true,
        },
        external_s3: vec![],
        output_prefix: format!("file:///nonexistent/{job}/output"),
        uploads_artifacts: false,
        stop_grace_seconds: 1,
        cache_dir: cache.display().to_string(),
        sandbox: false,
        host_addresses: Default::default(),
        environments: Vec::new(),
        registries: Vec::new(),
        warm_pool_cache: None,
        memory_bytes: None,
    }
}

/// A minimal stored `CreateTrainingJob` request.
pub fn spec(job: &str, hyperparameters: Value) -> Value {
    json!({
        "TrainingJobName": job,
        "RoleArn": format!("arn:aws:iam::{ACCOUNT}:role/r"),
        "AlgorithmSpecification": {"TrainingImage": "kiln/test", "TrainingInputMode": "File"},
        "HyperParameters": hyperparameters,
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "Environment": {"MY_SETTING": "on"},
    })
}

pub fn timing() -> Timing {
    Timing {
        assignment_retry_for: Duration::from_secs(20),
        final_retry_for: Duration::from_secs(30),
        echo_logs: false,
        ..Timing::default()
    }
}

/// A fake control plane on a fresh port.
pub async fn start(a: &Assignment) -> (Arc<Fake>, String) {
    let fake = Fake::new(a);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    fake.serve(listener);
    (fake, url)
}

pub fn args(server: &str, job: &str, work: &Path) -> AgentArgs {
    AgentArgs {
        server: server.into(),
        account: ACCOUNT.into(),
        job: job.into(),
        host: "algo-1".into(),
        work_dir: work.to_path_buf(),
        token: TOKEN.into(),
        host_addresses: Default::default(),
    }
}

/// Runs the agent to its end (at most a minute).
pub async fn run_agent(args: AgentArgs, timing: Timing) -> i32 {
    tokio::time::timeout(Duration::from_secs(60), kiln_agent::run_with(args, timing))
        .await
        .expect("the agent did not finish within a minute")
        .expect("the agent failed")
}

/// Writes `files` into a new directory under `parent`.
pub fn source_dir(parent: &Path, files: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join("src");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}
