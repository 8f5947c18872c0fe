//! Load generator for the SageMaker API of a running `kiln serve`: SigV4-signed Create and Describe
//! requests from concurrent clients; prints requests per second. Used by `scripts/bench-api.sh`.
//!
//!     bench_api <endpoint> <access-key> <secret> [creates] [describes] [concurrency]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[path = "common/mod.rs"]
mod common;

use common::Target;

async fn run(target: Arc<Target>, total: usize, concurrency: usize, op: &'static str, prefix: String) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, next, prefix) = (target.clone(), next.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let body = if op == "CreateTrainingJob" {
                    format!(
                        r#"{{"TrainingJobName":"{prefix}-{i}","RoleArn":"arn:aws:iam::123456789012:role/R","AlgorithmSpecification":{{"TrainingImage":"kiln/noop","TrainingInputMode":"File"}},"OutputDataConfig":{{"S3OutputPath":"s3://b/o"}},"ResourceConfig":{{"InstanceType":"ml.m5.large","InstanceCount":1,"VolumeSizeInGB":1}},"StoppingCondition":{{"MaxRuntimeInSeconds":60}}}}"#
                    )
                } else {
                    format!(r#"{{"TrainingJobName":"{prefix}-{}"}}"#, i % 500)
                };
                if let Err(e) = target.call("sagemaker", &format!("SageMaker.{op}"), body.into_bytes()).await {
                    eprintln!("{op} failed: {e}");
                    std::process::exit(1);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_api <endpoint> <access-key> <secret> [creates] [describes] [concurrency]");
        std::process::exit(2);
    }
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (creates, describes, concurrency) = (num(4, 2000), num(5, 20000), num(6, 16));
    let target = Arc::new(Target::new(&args[1], &args[2], &args[3]));
    let prefix = format!(
        "bench{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let c = run(
        target.clone(),
        creates,
        concurrency,
        "CreateTrainingJob",
        prefix.clone(),
    )
    .await;
    let d = run(target, describes, concurrency, "DescribeTrainingJob", prefix).await;
    println!(
        "CreateTrainingJob:   {c:8.0} requests/s  ({creates} requests, {concurrency} concurrent, SigV4, durable commit each)"
    );
    println!("DescribeTrainingJob: {d:8.0} requests/s  ({describes} requests, {concurrency} concurrent, SigV4)");
}
