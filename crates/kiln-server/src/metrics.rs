//! Prometheus text exposition at `/_kiln/metrics`: the API's requests (by service, operation and
//! status, with latency histograms), S3 bytes in and out, agent calls, log lines ingested, and at
//! each scrape the jobs by status, the active ones by instance type, the queue and warm pools.
//! Aggregates only, no job names or keys, so it may be scraped without an access key; `[metrics]
//! token` requires `Authorization: Bearer <token>`. Operations are labels only when they look like
//! operation names and while there are fewer than [`MAX_SERIES`] of them, so a client inventing
//! `X-Amz-Target`s cannot grow the exposition without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_api::status::{SecondaryStatus, TrainingJobStatus, WarmPoolResourceStatus};
use kiln_engine::Engine;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Most (service, operation) series kept; later ones are counted as operation `other`.
pub const MAX_SERIES: usize = 500;

/// What a request was, for the labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestKind {
    /// `sagemaker`, `logs`, `cloudwatch`, `s3`, `agent` or `kiln`.
    pub service: &'static str,
    /// The operation (`CreateTrainingJob`), the S3 method, or the agent call (`heartbeat`).
    pub operation: String,
}

impl RequestKind {
    /// Classifies a request by its `X-Amz-Target`, path and method.
    pub fn of<B>(req: &hyper::Request<B>) -> Self {
        let path = req.uri().path();
        let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok());
        let (service, operation) = if let Some(t) = target {
            let (prefix, op) = t.split_once('.').unwrap_or((t, ""));
            let service = match prefix {
                "SageMaker" => "sagemaker",
                p if p.starts_with("Logs_") => "logs",
                p if p.starts_with("GraniteService") => "cloudwatch",
                _ => "other",
            };
            (service, op.to_string())
        } else if let Some(rest) = path.strip_prefix("/service/GraniteServiceVersion20100801/operation/") {
            ("cloudwatch", rest.to_string())
        } else if path.starts_with("/_kiln/agent/") {
            ("agent", path.rsplit('/').next().unwrap_or("").to_string())
        } else if path.starts_with("/_kiln/") {
            ("kiln", path.trim_start_matches("/_kiln/").to_string())
        } else {
            ("s3", req.method().as_str().to_string())
        };
        let plain = !operation.is_empty()
            && operation.len() <= 64
            && operation
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        Self {
            service,
            operation: if plain { operation } else { "other".into() },
        }
    }
}

#[derive(Default)]
struct Series {
    /// Requests by response status.
    by_status: BTreeMap<u16, u64>,
    /// Cumulative counts per bucket of [`BUCKETS`].
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's counters.
#[derive(Default)]
pub struct ServerMetrics {
    series: Mutex<BTreeMap<RequestKind, Series>>,
    s3_bytes_in: AtomicU64,
    s3_bytes_out: AtomicU64,
}

impl ServerMetrics {
    /// Counts one answered request.
    pub fn record(&self, kind: RequestKind, status: u16, took: Duration) {
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let kind = if series.len() >= MAX_SERIES && !series.contains_key(&kind) {
            RequestKind {
                service: kind.service,
                operation: "other".into(),
            }
        } else {
            kind
        };
        let s = series.entry(kind).or_default();
        *s.by_status.entry(status).or_default() += 1;
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
        s.count += 1;
        s.sum += secs;
    }

    /// Counts bytes of S3 request bodies received.
    pub fn s3_received(&self, n: u64) {
        self.s3_bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes of S3 response bodies sent.
    pub fn s3_sent(&self, n: u64) {
        self.s3_bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The exposition, with the jobs' gauges read from the engine now.
    pub async fn render(&self, engine: &Engine) -> String {
        let mut out = String::new();
        self.render_requests(&mut out);
        family(
            &mut out,
            "kiln_s3_received_bytes_total",
            "counter",
            "Bytes of S3 request bodies received.",
        );
        let _ = writeln!(
            out,
            "kiln_s3_received_bytes_total {}",
            self.s3_bytes_in.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "kiln_s3_sent_bytes_total",
            "counter",
            "Bytes of S3 response bodies sent.",
        );
        let _ = writeln!(
            out,
            "kiln_s3_sent_bytes_total {}",
            self.s3_bytes_out.load(Ordering::Relaxed)
        );
        family(
            &mut out,
            "kiln_log_lines_ingested_total",
            "counter",
            "Log lines agents sent that were stored.",
        );
        let _ = writeln!(out, "kiln_log_lines_ingested_total {}", engine.log_lines_ingested());
        render_jobs(&mut out, engine).await;
        out
    }

    fn render_requests(&self, out: &mut String) {
        let Ok(series) = self.series.lock() else {
            return;
        };
        family(
            out,
            "kiln_api_requests_total",
            "counter",
            "Requests answered, by service, operation and HTTP status.",
        );
        for (k, s) in series.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "kiln_api_requests_total{{service=\"{}\",operation=\"{}\",status=\"{status}\"}} {n}",
                    k.service, k.operation
                );
            }
        }
        family(
            out,
            "kiln_api_request_duration_seconds",
            "histogram",
            "Time to answer a request (to its response's headers).",
        );
        for (k, s) in series.iter() {
            let labels = format!("service=\"{}\",operation=\"{}\"", k.service, k.operation);
            for (le, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "kiln_api_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "kiln_api_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "kiln_api_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "kiln_api_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Gauges of the jobs: by status (all accounts), the active ones by secondary status and instance
/// type, the queue (placed nowhere yet) and its longest wait, warm pools by status.
async fn render_jobs(out: &mut String, engine: &Engine) {
    let Ok(counts) = engine.store().count_training_jobs().await else {
        return;
    };
    family(out, "kiln_training_jobs", "gauge", "Training jobs by status.");
    for status in TrainingJobStatus::ALL {
        let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "kiln_training_jobs{{status=\"{}\"}} {n}", status.as_str());
    }
    let active = engine
        .store()
        .training_jobs_with_status(&[TrainingJobStatus::InProgress, TrainingJobStatus::Stopping])
        .await
        .unwrap_or_default();
    let mut by_kind: BTreeMap<(&'static str, String), u64> = BTreeMap::new();
    let (mut queued, mut oldest) = (0u64, 0.0f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for job in &active {
        let instance_type = job
            .spec
            .resource_config
            .as_ref()
            .and_then(|r| r.instance_type.clone())
            .unwrap_or_else(|| "heterogeneous".into());
        *by_kind
            .entry((job.secondary_status.as_str(), instance_type))
            .or_default() += 1;
        if job.secondary_status == SecondaryStatus::Starting && job.run.hosts.is_empty() {
            queued += 1;
            oldest = oldest.max(now - job.creation_time);
        }
    }
    family(
        out,
        "kiln_training_jobs_active",
        "gauge",
        "Training jobs in progress or stopping, by secondary status and instance type.",
    );
    for ((secondary, instance_type), n) in &by_kind {
        let _ = writeln!(
            out,
            "kiln_training_jobs_active{{secondary_status=\"{secondary}\",instance_type=\"{instance_type}\"}} {n}"
        );
    }
    family(out, "kiln_queue_length", "gauge", "Training jobs waiting to be placed.");
    let _ = writeln!(out, "kiln_queue_length {queued}");
    family(
        out,
        "kiln_queue_oldest_wait_seconds",
        "gauge",
        "How long the longest-waiting job in the queue has waited.",
    );
    let _ = writeln!(out, "kiln_queue_oldest_wait_seconds {oldest:.3}");
    let available = engine
        .store()
        .training_jobs_with_warm_pool(WarmPoolResourceStatus::Available)
        .await
        .map_or(0, |j| j.len());
    family(out, "kiln_warm_pools_available", "gauge", "Warm pools kept for reuse.");
    let _ = writeln!(out, "kiln_warm_pools_available {available}");
}
