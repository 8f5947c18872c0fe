//! Log ingest and tail throughput of a running `kiln serve`: SigV4-signed `PutLogEvents` of
//! 10,000-line batches from concurrent writers (one stream each), then `GetLogEvents` pages read
//! back. Used by `scripts/bench-logs.sh`.
//!
//!     bench_logs <endpoint> <access-key> <secret> [lines] [writers]

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[path = "common/mod.rs"]
mod common;

use common::Target;
use serde_json::{Value, json};

async fn call(t: &Target, op: &str, body: &Value) -> Result<Value, String> {
    let bytes = t
        .call(
            "logs",
            &format!("Logs_20140328.{op}"),
            serde_json::to_vec(body).map_err(|e| e.to_string())?,
        )
        .await?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_logs <endpoint> <access-key> <secret> [lines] [writers]");
        std::process::exit(2);
    }
    let lines: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(400_000);
    let writers: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(4);
    let t = Arc::new(Target::new(&args[1], &args[2], &args[3]));
    let group = "/aws/sagemaker/TrainingJobs";
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for w in 0..writers {
        let stream = format!("bench-{stamp}/algo-{}-1", w + 1);
        if let Err(e) = call(
            &t,
            "CreateLogStream",
            &json!({ "logGroupName": group, "logStreamName": stream }),
        )
        .await
        {
            eprintln!("CreateLogStream failed: {e}");
            std::process::exit(1);
        }
    }
    let per_writer = lines / writers;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("bench-{stamp}/algo-{}-1", w + 1);
            let mut sent = 0;
            while sent < per_writer {
                let n = (per_writer - sent).min(10_000);
                let events: Vec<Value> = (0..n)
                    .map(|i| json!({ "timestamp": stamp + (sent + i) as i64, "message": format!("[{}]#011train-rmse:{:.5}#011validation-rmse:{:.5}", sent + i, 1.0 / (sent + i + 1) as f64, 1.5 / (sent + i + 1) as f64) }))
                    .collect();
                if let Err(e) = call(&t, "PutLogEvents", &json!({ "logGroupName": group, "logStreamName": stream, "logEvents": events })).await {
                    eprintln!("PutLogEvents failed: {e}");
                    std::process::exit(1);
                }
                sent += n;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let ingest = (per_writer * writers) as f64 / start.elapsed().as_secs_f64();
    // Read one stream back from the head, page by page, as the SageMaker SDK does.
    let stream = format!("bench-{stamp}/algo-1-1");
    let start = Instant::now();
    let mut token: Option<String> = None;
    let mut read = 0usize;
    loop {
        let mut req = json!({ "logGroupName": group, "logStreamName": stream, "startFromHead": true });
        if let Some(tk) = &token {
            req["nextToken"] = json!(tk);
        }
        let page = match call(&t, "GetLogEvents", &req).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("GetLogEvents failed: {e}");
                std::process::exit(1);
            }
        };
        let n = page["events"].as_array().map_or(0, Vec::len);
        if n == 0 {
            break;
        }
        read += n;
        token = page["nextForwardToken"].as_str().map(str::to_string);
    }
    let read_rate = read as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let tail = call(
        &t,
        "GetLogEvents",
        &json!({ "logGroupName": group, "logStreamName": stream, "limit": 100 }),
    )
    .await;
    let tail_ms = start.elapsed().as_secs_f64() * 1000.0;
    let tail_ok = tail.map(|v| v["events"].as_array().map_or(0, Vec::len)).unwrap_or(0);
    println!(
        "log ingest: {ingest:8.0} lines/s  ({} lines, {writers} writers, PutLogEvents batches of 10,000, SigV4)",
        per_writer * writers
    );
    println!("log read:   {read_rate:8.0} lines/s  ({read} lines of one stream via GetLogEvents pages)");
    println!("log tail:   {tail_ms:8.1} ms     (last {tail_ok} lines of a {per_writer}-line stream)");
}
