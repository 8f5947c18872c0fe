//! The agent gateway: what the hosts' `kiln agent` processes call (`kiln_api::agent`). Each call
//! checks the job's bearer token, turns the report into an event of the job's state machine, and
//! answers with a directive (continue, or stop).

use std::sync::Arc;

use kiln_api::agent::{
    Action, Assignment, Directive, DoneReport, HOST_METRICS, Heartbeat, HostSample, InstanceGroupHosts, LogBatch,
    Runtime, S3Access, StatusReport,
};
use kiln_api::cloudwatch::{HOST_DIMENSION, TRAINING_NAMESPACE};
use kiln_api::{ApiResult, AwsError};
use kiln_store::{CustomMetricPoint, LineSource, MetricPoint, TrainingJobRow};

use kiln_store::logs::BatchStart;

use crate::metrics::MetricMatcher;
use crate::scheduler::host_layout;
use crate::training::machine::{Event, should_stop};
use crate::{Engine, runtime, store_err};

fn directive(job: &TrainingJobRow) -> Directive {
    Directive {
        action: if job.run.interrupting.is_some() {
            Action::Interrupt
        } else if should_stop(job) {
            Action::Stop
        } else {
            Action::Continue
        },
    }
}

/// Most samples one heartbeat may carry (an agent that was cut off for a while sends what it
/// kept, which it bounds lower).
const MAX_HEARTBEAT_SAMPLES: usize = 1000;

/// A heartbeat's host samples as SageMaker publishes them: namespace `/aws/sagemaker/TrainingJobs`,
/// dimension `Host=<job>/<host>`, one point per metric per sample. They are kept with the points
/// of `PutMetricData` (which refuses that namespace, so nothing else writes there).
fn host_metric_points(job: &str, host: &str, samples: &[HostSample]) -> ApiResult<Vec<CustomMetricPoint>> {
    if samples.len() > MAX_HEARTBEAT_SAMPLES {
        return Err(AwsError::validation(format!(
            "a heartbeat carries {} host samples; at most {MAX_HEARTBEAT_SAMPLES}",
            samples.len()
        )));
    }
    let dims = serde_json::to_string(&[(HOST_DIMENSION, format!("{job}/{host}"))]).unwrap_or_default();
    let mut points = Vec::new();
    for s in samples {
        for (metric, value) in &s.values {
            if !HOST_METRICS.contains(&metric.as_str()) || !value.is_finite() {
                return Err(AwsError::validation(format!(
                    "host metric {metric}={value} is not one of {HOST_METRICS:?} with a finite value"
                )));
            }
            points.push(CustomMetricPoint {
                namespace: TRAINING_NAMESPACE.to_string(),
                metric: metric.clone(),
                dims: dims.clone(),
                value: *value,
                timestamp: s.timestamp_ms as f64 / 1000.0,
            });
        }
    }
    Ok(points)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Engine {
    /// Loads a job for an agent call, checking its token and host.
    async fn agent_job(&self, account: &str, name: &str, host: &str, token: &str) -> ApiResult<TrainingJobRow> {
        self.agent_job_when_ended(account, name, host, token, WhenEnded::Refuse)
            .await
    }

    /// [`Engine::agent_job`], with what to do if the job has ended.
    async fn agent_job_when_ended(
        &self,
        account: &str,
        name: &str,
        host: &str,
        token: &str,
        ended: WhenEnded<'_>,
    ) -> ApiResult<TrainingJobRow> {
        let denied = || AwsError::new(403, "AccessDenied", format!("invalid agent token for {name}/{host}"));
        let job = self.load_job(account, name).await?.ok_or_else(denied)?;
        let expected = job.run.agent_token.as_deref().unwrap_or_default();
        if expected.is_empty() || !constant_time_eq(expected.as_bytes(), token.as_bytes()) {
            return Err(denied());
        }
        if !job.run.hosts.iter().any(|h| h.host == host) {
            return Err(AwsError::validation(format!("job {name} has no host {host}")));
        }
        // The token dies with the job: an ended job takes no more reports (its hosts reported
        // before it ended; whoever kept the token cannot change it afterwards), bar the same
        // final report sent again after its answer was lost.
        let let_through = match ended {
            WhenEnded::Refuse => false,
            WhenEnded::Allow => true,
            WhenEnded::IfRecorded(report) => recorded_done(&job, host) == Some(report),
        };
        if job.status.is_terminal() && !let_through {
            return Err(AwsError::new(
                403,
                "AccessDenied",
                format!("the training job {name} has ended: its agent token is no longer valid"),
            ));
        }
        Ok(job)
    }

    /// Checks an agent call's token and host without acting on it: the server does this before it
    /// reads the call's body. A final report (`done`) to an ended job is let through to
    /// [`Engine::agent_done`], which alone can tell whether it was recorded.
    pub async fn agent_authorize(
        &self,
        account: &str,
        name: &str,
        host: &str,
        token: &str,
        call: &str,
    ) -> ApiResult<()> {
        let ended = if call == "done" {
            WhenEnded::Allow
        } else {
            WhenEnded::Refuse
        };
        self.agent_job_when_ended(account, name, host, token, ended)
            .await
            .map(|_| ())
    }

    /// `GET .../assignment`: everything the host needs to run its part.
    pub async fn agent_assignment(&self, account: &str, name: &str, host: &str, token: &str) -> ApiResult<Assignment> {
        let job = self.agent_job(account, name, host, token).await?;
        let runtime = runtime::resolve(&job.spec).unwrap_or(Runtime::Noop);
        let layout = host_layout(&job.spec);
        let this = layout.iter().find(|h| h.host == host).cloned();
        let mut groups: Vec<InstanceGroupHosts> = Vec::new();
        for h in &layout {
            match groups.iter_mut().find(|x| x.instance_group_name == h.group) {
                Some(x) => x.hosts.push(h.host.clone()),
                None => groups.push(InstanceGroupHosts {
                    instance_group_name: h.group.clone(),
                    instance_type: h.instance_type.clone(),
                    hosts: vec![h.host.clone()],
                }),
            }
        }
        let itype = this.as_ref().map(|h| h.instance_type.clone()).unwrap_or_default();
        let res = self.executor.host_resources(&itype);
        let machine_gpus = self.executor.capacity().await.map_or(0, |c| c.gpus);
        let (key_id, secret) = job.run.access_key.clone().unwrap_or_default();
        let log_stream = job
            .run
            .hosts
            .iter()
            .find(|h| h.host == host)
            .map(|h| h.log_stream.clone())
            .unwrap_or_default();
        let region = job.arn.split(':').nth(3).unwrap_or("us-east-1").to_string();
        let output = job
            .spec
            .output_data_config
            .s3_output_path
            .trim_end_matches('/')
            .to_string();
        let mut hosts: Vec<String> = layout.iter().map(|h| h.host.clone()).collect();
        hosts.sort();
        Ok(Assignment {
            account: account.to_string(),
            region: region.clone(),
            job_name: job.name.clone(),
            job_arn: job.arn.clone(),
            host: host.to_string(),
            hosts,
            current_group: this.map(|h| h.group).unwrap_or_default(),
            instance_type: itype,
            instance_groups: groups,
            num_cpus: res.map_or(1, |r| r.vcpus).min(self.runner.machine_cpus).max(1),
            num_gpus: res.map_or(0, |r| r.gpus).min(machine_gpus),
            spec: serde_json::to_value(&job.spec).unwrap_or_default(),
            runtime,
            log_stream,
            s3: S3Access {
                endpoint_url: self.runner.public_url.clone(),
                region,
                access_key_id: key_id,
                secret_access_key: secret,
                path_style: true,
            },
            external_s3: self.runner.external_s3.clone(),
            output_prefix: format!("{output}/{}/output", job.name),
            uploads_artifacts: host == "algo-1",
            stop_grace_seconds: self.runner.stop_grace_seconds,
            cache_dir: self.runner.cache_dir.display().to_string(),
            sandbox: self.runner.sandbox,
            // The local executor runs every host on this machine (127.0.0.1, the default).
            host_addresses: Default::default(),
            environments: self.runner.environments.clone(),
            registries: self.runner.registries.clone(),
            warm_pool_cache: job
                .run
                .warm_pool_id
                .as_ref()
                .map(|id| self.pool_dir(account, id).join(host).display().to_string()),
            memory_bytes: res.map(|r| (r.memory_gib * 1024.0 * 1024.0 * 1024.0) as u64),
        })
    }

    /// `POST .../status`.
    pub async fn agent_status(
        &self,
        account: &str,
        name: &str,
        host: &str,
        token: &str,
        report: StatusReport,
    ) -> ApiResult<Directive> {
        self.agent_job(account, name, host, token).await?;
        let event = Event::HostPhase {
            host: host.to_string(),
            phase: report.phase,
            message: report.message,
        };
        let job = self.apply(account, name, event).await?;
        Ok(directive(&job))
    }

    /// `POST .../heartbeat`: stores the host metrics it carries (see [`host_metric_points`]).
    pub async fn agent_heartbeat(
        &self,
        account: &str,
        name: &str,
        host: &str,
        token: &str,
        beat: Heartbeat,
    ) -> ApiResult<Directive> {
        let job = self.agent_job(account, name, host, token).await?;
        let points = host_metric_points(&job.name, host, &beat.host_metrics)?;
        self.store
            .put_custom_metric_points(account, &points)
            .await
            .map_err(store_err)?;
        Ok(directive(&job))
    }

    /// `POST .../logs`: stores the lines and the metric values they carry.
    pub async fn agent_logs(
        &self,
        account: &str,
        name: &str,
        host: &str,
        token: &str,
        batch: LogBatch,
    ) -> ApiResult<Directive> {
        let job = self.agent_job(account, name, host, token).await?;
        let stream = job
            .run
            .hosts
            .iter()
            .find(|h| h.host == host)
            .map(|h| h.log_stream.clone())
            .unwrap_or_default();
        let start = match (&batch.sender, batch.seq) {
            (Some(sender), Some(first)) => Some(BatchStart {
                sender,
                first: i64::try_from(first).unwrap_or(i64::MAX),
            }),
            _ => None,
        };
        let skipped = self.append_job_log(account, &stream, &batch.lines, start).await?;
        self.log_lines.fetch_add(
            batch.lines.len().saturating_sub(skipped) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let matcher = self.matcher(&job);
        if matcher.is_empty() {
            return Ok(directive(&job));
        }
        // Every line's metrics, a re-sent batch's included: the store adds a numbered line's points
        // once, so a batch whose lines were stored but whose points were not (the database failed
        // in between, and the agent sent it again) still gets them.
        let mut points = Vec::new();
        let mut lines = Vec::new();
        for (i, (ts, line)) in batch.lines.iter().enumerate() {
            let escaped = kiln_api::logs::escape_control_chars(line);
            for (metric, value) in matcher.scan(&escaped) {
                points.push(MetricPoint {
                    metric,
                    value,
                    timestamp: *ts as f64 / 1000.0,
                });
                lines.push(start.as_ref().map_or(0, |s| s.first.saturating_add(i as i64)));
            }
        }
        if points.is_empty() {
            return Ok(directive(&job));
        }
        let source = start.as_ref().map(|s| LineSource {
            sender: s.sender,
            lines: &lines,
        });
        self.store
            .add_metric_points(account, name, &points, source)
            .await
            .map_err(store_err)?;
        let job = self.apply(account, name, Event::Metrics { points }).await?;
        Ok(directive(&job))
    }

    fn matcher(&self, job: &TrainingJobRow) -> Arc<MetricMatcher> {
        let key = (job.account.clone(), job.name.to_lowercase());
        if let Ok(cache) = self.matchers.lock()
            && let Some(m) = cache.get(&key)
        {
            return m.clone();
        }
        let defs = job
            .spec
            .algorithm_specification
            .as_ref()
            .and_then(|a| a.metric_definitions.clone())
            .unwrap_or_default();
        let m = Arc::new(MetricMatcher::new(&defs));
        if let Ok(mut cache) = self.matchers.lock() {
            cache.insert(key, m.clone());
        }
        m
    }

    /// `POST .../done`.
    pub async fn agent_done(
        &self,
        account: &str,
        name: &str,
        host: &str,
        token: &str,
        report: DoneReport,
    ) -> ApiResult<()> {
        let job = self
            .agent_job_when_ended(account, name, host, token, WhenEnded::IfRecorded(&report))
            .await?;
        if job.status.is_terminal() {
            // This host's report, recorded before the job ended; its answer was lost.
            return Ok(());
        }
        // The model can only be where this job's artifacts go: `<S3OutputPath>/<job>/output/…`.
        if let Some(uri) = &report.model_artifacts {
            let prefix = format!(
                "{}/{}/output/",
                job.spec.output_data_config.s3_output_path.trim_end_matches('/'),
                job.name
            );
            if !uri.starts_with(&prefix) || uri.contains("/../") {
                return Err(AwsError::validation(format!(
                    "job {name} host {host}: model artifacts {uri} are not under the job's output {prefix}"
                )));
            }
        }
        let report = self.explain_failure(&job, host, report).await;
        let event = Event::HostDone {
            host: host.to_string(),
            report,
        };
        self.apply(account, name, event).await?;
        Ok(())
    }

    /// A host that reports a failure after its executor ended the launch (a node failed, the
    /// allocation was cancelled or ran out of time) saw only a signal; the executor knows the
    /// cause and the node, so its account is the reason the job fails with.
    async fn explain_failure(&self, job: &TrainingJobRow, host: &str, mut report: DoneReport) -> DoneReport {
        if report.failure_reason.is_none() || job.status != kiln_api::status::TrainingJobStatus::InProgress {
            return report;
        }
        let Some(handle) = job.run.launch.as_deref() else {
            return report;
        };
        let states = self.executor.poll(&[handle]).await;
        if let Some(taken) = states.first().and_then(|s| s.preempted.as_deref()) {
            // The host was killed because the cluster took the allocation back: a spot job's
            // interruption comes first, so that this end starts a new attempt.
            self.capacity_taken_back(job, taken).await;
        }
        if let Some((_, detail)) = states.first().and_then(|s| s.gone.iter().find(|(h, _)| h == host)) {
            report.failure_reason = Some(format!(
                "InternalServerError: the {} executor ended {host} before it finished: {detail}.",
                self.executor.name()
            ));
        }
        report
    }
}

/// What an agent call may do once its job has ended.
enum WhenEnded<'a> {
    /// Nothing: the token died with the job.
    Refuse,
    /// Go on to the call, which decides.
    Allow,
    /// Be answered as received: this is the final report the host had recorded, sent again
    /// because its answer was lost (the server stopped after committing it).
    IfRecorded(&'a DoneReport),
}

/// The final report `host` of `job` had recorded, if any.
fn recorded_done<'a>(job: &'a TrainingJobRow, host: &str) -> Option<&'a DoneReport> {
    job.run
        .hosts
        .iter()
        .find(|h| h.host == host)
        .and_then(|h| h.done.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: i64, pairs: &[(&str, f64)]) -> HostSample {
        HostSample {
            timestamp_ms: ms,
            values: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn host_samples_become_points_of_the_host_dimension() {
        let samples = [
            sample(1_500, &[("CPUUtilization", 150.0), ("MemoryUtilization", 2.5)]),
            sample(6_500, &[("CPUUtilization", 90.0)]),
        ];
        let points = host_metric_points("job", "algo-2", &samples).unwrap();
        assert_eq!(points.len(), 3);
        assert!(
            points
                .iter()
                .all(|p| p.namespace == TRAINING_NAMESPACE && p.dims == r#"[["Host","job/algo-2"]]"#)
        );
        assert_eq!(
            (points[0].metric.as_str(), points[0].value, points[0].timestamp),
            ("CPUUtilization", 150.0, 1.5)
        );
        assert_eq!(points[2].timestamp, 6.5);
    }

    #[test]
    fn unknown_or_non_finite_host_metrics_are_refused() {
        assert!(host_metric_points("j", "algo-1", &[sample(0, &[("Loss", 1.0)])]).is_err());
        assert!(host_metric_points("j", "algo-1", &[sample(0, &[("CPUUtilization", f64::NAN)])]).is_err());
        let many = vec![sample(0, &[]); MAX_HEARTBEAT_SAMPLES + 1];
        assert!(host_metric_points("j", "algo-1", &many).is_err());
    }
}
