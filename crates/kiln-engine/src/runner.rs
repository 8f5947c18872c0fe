//! Running training jobs: the scheduler that places jobs on the executor, the agent API that hosts
//! report to, and the folding of the hosts' reports into the job's status (reference §4–§5).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_api::agent::{
    Action, Assignment, Directive, DoneReport, ExternalS3, InstanceGroupHosts, LogBatch, Phase, Runtime, S3Access,
    StatusReport,
};
use kiln_api::{ApiResult, AwsError};
use kiln_store::MetricPoint;

use crate::capacity::{Resources, job_needs};
use crate::executor::HostLaunch;
use crate::job::{HostState, TrainingJob};
use crate::metrics::{MetricMatcher, fold_final};
use crate::status::{JobStatus, Secondary};
use crate::{Engine, now, runtime, store_err};

/// How jobs run on this control plane.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// URL agents use to reach the control plane (and its S3 endpoint).
    pub public_url: String,
    /// Hosts' trees live under `<work_dir>/<job>/<host>/`.
    pub work_dir: PathBuf,
    /// Shared caches of the hosts of this machine (virtualenvs).
    pub cache_dir: PathBuf,
    /// What the executor can run at once.
    pub capacity: Resources,
    /// CPUs of this machine: a host gets at most this many (`SM_NUM_CPUS`).
    pub machine_cpus: u32,
    /// SIGTERM → SIGKILL grace period when a job is stopped.
    pub stop_grace_seconds: u64,
    /// External S3 endpoints by bucket, passed to agents.
    pub external_s3: Vec<ExternalS3>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            work_dir: std::env::temp_dir().join("kiln-work"),
            cache_dir: std::env::temp_dir().join("kiln-cache"),
            capacity: Resources {
                vcpus: 192,
                memory_gib: 3072.0,
                gpus: 0,
                neuron_devices: 0,
            },
            machine_cpus: 1,
            stop_grace_seconds: 120,
            external_s3: Vec::new(),
        }
    }
}

fn random_token(len: usize, alphabet: &[u8]) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        if getrandom(&mut buf).is_err() {
            // Fall back to time-seeded bytes; tokens are still unique per job.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
            }
        }
        for b in buf {
            if out.len() == len {
                break;
            }
            out.push(alphabet[b as usize % alphabet.len()] as char);
        }
    }
    out
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn host_names(job: &TrainingJob) -> Vec<(String, String, String)> {
    // (host, instance type, group) with the global algo-N numbering.
    let mut out = Vec::new();
    let rc = job.spec.resource_config.clone().unwrap_or_default();
    match &rc.instance_groups {
        Some(groups) if !groups.is_empty() => {
            for g in groups {
                for _ in 0..g.instance_count.max(0) {
                    out.push((
                        format!("algo-{}", out.len() + 1),
                        g.instance_type.clone(),
                        g.instance_group_name.clone(),
                    ));
                }
            }
        }
        _ => {
            let t = rc.instance_type.clone().unwrap_or_default();
            for i in 0..rc.instance_count.unwrap_or(1).max(1) {
                out.push((format!("algo-{}", i + 1), t.clone(), "homogeneousCluster".into()));
            }
        }
    }
    out
}

/// What a job needs from the executor.
pub fn needs_of(job: &TrainingJob) -> Option<Resources> {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for (_, t, _) in host_names(job) {
        *counts.entry(t).or_default() += 1;
    }
    job_needs(&counts.into_iter().collect::<Vec<_>>())
}

fn directive(job: &TrainingJob) -> Directive {
    let stop = job.status() != JobStatus::InProgress || job.state.run.failing.is_some();
    Directive {
        action: if stop { Action::Stop } else { Action::Continue },
    }
}

impl Engine {
    /// Checks that a job could ever run here; `ResourceLimitExceeded` if it never fits.
    pub(crate) fn check_fits(&self, job: &TrainingJob) -> ApiResult<()> {
        let Some(need) = needs_of(job) else {
            return Ok(());
        };
        if !self.runner.capacity.holds(&need) {
            return Err(AwsError::resource_limit_exceeded(format!(
                "The training job needs {} but this kiln's executor ({}) can never provide that: it needs {}. \
                 Use a smaller instance type or count, or raise [capacity] in kiln.toml.",
                describe_hosts(job),
                self.executor.name(),
                self.runner.capacity.shortfall(&need)
            )));
        }
        Ok(())
    }

    /// Wakes the scheduler (a job was created or stopped).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The scheduler: places waiting jobs, enforces `MaxRuntimeInSeconds`, notices dead agents.
    /// Runs until the process ends.
    pub async fn run_scheduler(self: Arc<Self>) {
        self.restore_credentials().await;
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(target: "kiln::engine", "scheduler pass failed: {}", e.message);
            }
            if let Err(e) = self.tune_tick().await {
                tracing::warn!(target: "kiln::engine", "tuner pass failed: {}", e.message);
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
        }
    }

    /// Re-registers the S3 credentials of running jobs (after a restart).
    async fn restore_credentials(&self) {
        let Ok(rows) = self.store.training_jobs_with_status(&["InProgress", "Stopping"]).await else {
            return;
        };
        for row in rows {
            if let Ok(job) = TrainingJob::from_row(row)
                && let Some((id, secret)) = job.state.run.access_key.clone()
                && let Ok(mut keys) = self.job_keys.lock()
            {
                keys.insert(id, (secret, job.row.account.clone()));
            }
        }
    }

    /// The secret and account of a job's temporary access key.
    pub fn job_credentials(&self, access_key_id: &str) -> Option<(String, String)> {
        self.job_keys.lock().ok()?.get(access_key_id).cloned()
    }

    /// One scheduling pass.
    pub async fn tick(&self) -> ApiResult<()> {
        let rows = self
            .store
            .training_jobs_with_status(&["InProgress", "Stopping"])
            .await
            .map_err(store_err)?;
        let jobs: Vec<TrainingJob> = rows.into_iter().filter_map(|r| TrainingJob::from_row(r).ok()).collect();
        let mut used = Resources::ZERO;
        for job in &jobs {
            if !job.state.run.hosts.is_empty()
                && job.state.run.hosts.iter().any(|h| h.done.is_none())
                && let Some(n) = needs_of(job)
            {
                used = used.plus(n);
            }
        }
        let t = now();
        for job in jobs {
            let (account, name) = (job.row.account.clone(), job.row.name.clone());
            if job.state.run.hosts.is_empty() {
                if job.status() == JobStatus::InProgress {
                    self.try_place(job, &mut used).await?;
                }
                continue;
            }
            // Enforce MaxRuntimeInSeconds, measured from TrainingStartTime.
            let limit = job
                .spec
                .stopping_condition
                .as_ref()
                .and_then(|s| s.max_runtime_in_seconds)
                .unwrap_or(86400);
            if job.status() == JobStatus::InProgress
                && job.state.training_start_time.is_some_and(|s| t - s > limit as f64)
            {
                self.update_job(&account, &name, |j| {
                    if j.status() == JobStatus::InProgress {
                        j.state.run.stop_reason = Some(Secondary::MaxRuntimeExceeded.as_str().into());
                        j.transition(
                            Secondary::Stopping,
                            Some(&format!(
                                "Stopping the training job: it ran longer than MaxRuntimeInSeconds ({limit} s)"
                            )),
                            t,
                        )?;
                    }
                    Ok(())
                })
                .await?;
            }
            // Hosts that ignore a stop for much longer than the grace period are killed.
            let stopping_since = job
                .state
                .secondary_status_transitions
                .iter()
                .rev()
                .find(|tr| tr.status == "Stopping")
                .map(|tr| tr.start_time);
            if job.status() == JobStatus::Stopping
                && stopping_since.is_some_and(|s| t - s > (self.runner.stop_grace_seconds + 60) as f64)
            {
                for h in job.state.run.hosts.iter().filter(|h| h.done.is_none()) {
                    if let Some(handle) = &h.handle {
                        self.executor.kill(handle);
                    }
                }
            }
            // Hosts whose agent died without reporting.
            let dead: Vec<String> = job
                .state
                .run
                .hosts
                .iter()
                .filter(|h| h.done.is_none() && h.handle.as_ref().is_some_and(|hd| !self.executor.alive(hd)))
                .map(|h| h.host.clone())
                .collect();
            if !dead.is_empty() {
                // Give a report that is in flight a moment to land before calling the host lost.
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.update_job(&account, &name, |j| {
                    for h in j.state.run.hosts.iter_mut() {
                        if dead.contains(&h.host) && h.done.is_none() {
                            let log = h.handle.as_ref().map(|x| x.agent_log.clone()).unwrap_or_default();
                            h.done = Some(DoneReport {
                                exit_code: None,
                                failure_reason: Some(format!(
                                    "InternalServerError: the agent of {} stopped without reporting how the host ended (its log: {log}).",
                                    h.host
                                )),
                                model_artifacts: None,
                            });
                        }
                    }
                    self.fold(j, now())
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn try_place(&self, job: TrainingJob, used: &mut Resources) -> ApiResult<()> {
        let (account, name) = (job.row.account.clone(), job.row.name.clone());
        let t = now();
        if !self.executor.runs_jobs() {
            let msg = "Waiting: no executor is configured on this kiln (executor = \"none\"), so jobs are not run";
            return self.set_starting_message(&account, &name, msg).await;
        }
        let runtime = match runtime::resolve(&job.spec) {
            Ok(r) => r,
            Err(reason) => {
                self.update_job(&account, &name, |j| {
                    if j.status() == JobStatus::InProgress && j.state.run.hosts.is_empty() {
                        j.state.failure_reason = Some(truncate(&reason, 1024));
                        j.transition(Secondary::Failed, None, t)?;
                    }
                    Ok(())
                })
                .await?;
                return Ok(());
            }
        };
        let _ = runtime;
        let need = needs_of(&job).unwrap_or(Resources::ZERO);
        let free = Resources {
            vcpus: self.runner.capacity.vcpus.saturating_sub(used.vcpus),
            memory_gib: (self.runner.capacity.memory_gib - used.memory_gib).max(0.0),
            gpus: self.runner.capacity.gpus.saturating_sub(used.gpus),
            neuron_devices: self.runner.capacity.neuron_devices.saturating_sub(used.neuron_devices),
        };
        if !free.holds(&need) {
            let msg = format!(
                "Waiting for capacity: the job needs {} ({} free of {} vCPUs, {} of {} GPUs)",
                describe_hosts(&job),
                free.vcpus,
                self.runner.capacity.vcpus,
                free.gpus,
                self.runner.capacity.gpus
            );
            return self.set_starting_message(&account, &name, &msg).await;
        }
        // Record the placement first, then launch: a host the store does not know could never report.
        let token = random_token(40, b"abcdefghijklmnopqrstuvwxyz0123456789");
        let key_id = format!("KJOB{}", random_token(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"));
        let secret = random_token(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
        let epoch = t as i64;
        let placed = self
            .update_job(&account, &name, |j| {
                if j.status() != JobStatus::InProgress || !j.state.run.hosts.is_empty() {
                    return Err(AwsError::conflict("already placed"));
                }
                j.state.run.hosts = host_names(j)
                    .into_iter()
                    .map(|(host, _, _)| HostState {
                        log_stream: format!("{}/{host}-{epoch}", j.row.name),
                        host,
                        handle: None,
                        phase: None,
                        done: None,
                    })
                    .collect();
                j.state.run.agent_token = Some(token.clone());
                j.state.run.access_key = Some((key_id.clone(), secret.clone()));
                j.transition(Secondary::Starting, Some("Preparing the instances for training"), t)
            })
            .await;
        let job = match placed {
            Ok(j) => j,
            Err(e) if e.code == "ConflictException" => return Ok(()),
            Err(e) => return Err(e),
        };
        *used = used.plus(need);
        if let Ok(mut keys) = self.job_keys.lock() {
            keys.insert(key_id, (secret, account.clone()));
        }
        let mut handles = Vec::new();
        for h in &job.state.run.hosts {
            let launch = HostLaunch {
                server: self.runner.public_url.clone(),
                account: account.clone(),
                job: name.clone(),
                host: h.host.clone(),
                token: token.clone(),
                work_dir: self.runner.work_dir.clone(),
            };
            handles.push((h.host.clone(), self.executor.launch(&launch).await));
        }
        self.update_job(&account, &name, |j| {
            for (host, result) in &handles {
                if let Some(h) = j.state.run.hosts.iter_mut().find(|h| &h.host == host) {
                    match result {
                        Ok(handle) => h.handle = Some(handle.clone()),
                        Err(e) => {
                            h.done = Some(DoneReport {
                                exit_code: None,
                                failure_reason: Some(format!(
                                    "InternalServerError: could not start the agent of {host}: {e}"
                                )),
                                model_artifacts: None,
                            })
                        }
                    }
                }
            }
            self.fold(j, now())
        })
        .await?;
        Ok(())
    }

    async fn set_starting_message(&self, account: &str, name: &str, msg: &str) -> ApiResult<()> {
        let current = self.load_job(account, name).await?;
        if current
            .as_ref()
            .and_then(|j| j.state.secondary_status_transitions.last())
            .is_some_and(|l| l.status_message == msg)
        {
            return Ok(());
        }
        self.update_job(account, name, |j| {
            if j.secondary() == Secondary::Starting {
                j.transition(Secondary::Starting, Some(msg), now())?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Folds the hosts' reports into the job's status. Called after every change to the hosts.
    pub(crate) fn fold(&self, job: &mut TrainingJob, t: f64) -> ApiResult<()> {
        let hosts = &job.state.run.hosts;
        if hosts.is_empty() {
            return Ok(());
        }
        let all_done = hosts.iter().all(|h| h.done.is_some());
        let first_failure = hosts
            .iter()
            .filter_map(|h| h.done.as_ref().and_then(|d| d.failure_reason.clone()))
            .next();
        let artifacts = hosts
            .iter()
            .filter_map(|h| h.done.as_ref().and_then(|d| d.model_artifacts.clone()))
            .next();
        match job.status() {
            JobStatus::Stopping => {
                if all_done {
                    if let Some(a) = artifacts {
                        job.state.model_artifacts = Some(a);
                    }
                    let end = match job.state.run.stop_reason.as_deref() {
                        Some("MaxRuntimeExceeded") => Secondary::MaxRuntimeExceeded,
                        _ => Secondary::Stopped,
                    };
                    job.transition(end, None, t)?;
                    self.forget_credentials(job);
                } else if hosts.iter().any(|h| h.phase == Some(Phase::Uploading)) {
                    job.transition(
                        Secondary::Stopping,
                        Some("Stopping the training job: uploading the model"),
                        t,
                    )?;
                }
            }
            JobStatus::InProgress => {
                if let Some(reason) = first_failure {
                    if all_done {
                        job.state.failure_reason = Some(truncate(&reason, 1024));
                        job.transition(Secondary::Failed, None, t)?;
                        self.forget_credentials(job);
                    } else {
                        job.state.run.failing = Some(reason);
                    }
                    return Ok(());
                }
                let rank = hosts.iter().map(HostState::rank).min().unwrap_or(0);
                let steps = [
                    (1, Secondary::Downloading),
                    (2, Secondary::Training),
                    (3, Secondary::Uploading),
                ];
                for (r, status) in steps {
                    if rank >= r && job.secondary_rank() < r {
                        job.transition(status, None, t)?;
                    }
                }
                if all_done {
                    job.state.model_artifacts = artifacts;
                    job.transition(Secondary::Completed, None, t)?;
                    self.forget_credentials(job);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A job ended: its temporary key stops working, and (unless it failed, when the tree helps
    /// to find out why) the executor frees the hosts' trees.
    fn forget_credentials(&self, job: &TrainingJob) {
        if let Some((id, _)) = &job.state.run.access_key
            && let Ok(mut keys) = self.job_keys.lock()
        {
            keys.remove(id);
        }
        if job.status() != JobStatus::Failed {
            let hosts: Vec<String> = job.state.run.hosts.iter().map(|h| h.host.clone()).collect();
            self.executor.cleanup(&self.runner.work_dir, &job.row.name, &hosts);
        }
    }

    /// Loads a job for an agent call, checking its token.
    async fn agent_job(&self, account: &str, name: &str, host: &str, token: &str) -> ApiResult<TrainingJob> {
        let denied = || AwsError::new(403, "AccessDenied", format!("invalid agent token for {name}/{host}"));
        let job = self.load_job(account, name).await?.ok_or_else(denied)?;
        let expected = job.state.run.agent_token.as_deref().unwrap_or_default();
        if expected.is_empty() || !constant_time_eq(expected.as_bytes(), token.as_bytes()) {
            return Err(denied());
        }
        if !job.state.run.hosts.iter().any(|h| h.host == host) {
            return Err(AwsError::validation(format!("job {name} has no host {host}")));
        }
        Ok(job)
    }

    /// `GET .../assignment`.
    pub async fn agent_assignment(&self, account: &str, name: &str, host: &str, token: &str) -> ApiResult<Assignment> {
        let job = self.agent_job(account, name, host, token).await?;
        let runtime = runtime::resolve(&job.spec).unwrap_or(Runtime::Noop);
        let hosts = host_names(&job);
        let (_, itype, group) = hosts.iter().find(|(h, _, _)| h == host).cloned().unwrap_or_default();
        let mut groups: Vec<InstanceGroupHosts> = Vec::new();
        for (h, t, g) in &hosts {
            match groups.iter_mut().find(|x| &x.instance_group_name == g) {
                Some(x) => x.hosts.push(h.clone()),
                None => groups.push(InstanceGroupHosts {
                    instance_group_name: g.clone(),
                    instance_type: t.clone(),
                    hosts: vec![h.clone()],
                }),
            }
        }
        let res = crate::capacity::instance_resources(&itype);
        let (key_id, secret) = job.state.run.access_key.clone().unwrap_or_default();
        let log_stream = job
            .state
            .run
            .hosts
            .iter()
            .find(|h| h.host == host)
            .map(|h| h.log_stream.clone())
            .unwrap_or_default();
        let region = job.row.arn.split(':').nth(3).unwrap_or("us-east-1").to_string();
        let output = job
            .spec
            .output_data_config
            .s3_output_path
            .trim_end_matches('/')
            .to_string();
        let mut sorted: Vec<String> = hosts.iter().map(|(h, _, _)| h.clone()).collect();
        sorted.sort();
        Ok(Assignment {
            account: account.to_string(),
            region: region.clone(),
            job_name: job.row.name.clone(),
            job_arn: job.row.arn.clone(),
            host: host.to_string(),
            hosts: sorted,
            current_group: group,
            instance_type: itype,
            instance_groups: groups,
            num_cpus: res.map(|r| r.vcpus).unwrap_or(1).min(self.runner.machine_cpus).max(1),
            num_gpus: res.map(|r| r.gpus).unwrap_or(0).min(self.runner.capacity.gpus),
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
            output_prefix: format!("{output}/{}/output", job.row.name),
            uploads_artifacts: host == "algo-1",
            stop_grace_seconds: self.runner.stop_grace_seconds,
            cache_dir: self.runner.cache_dir.display().to_string(),
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
        let job = self
            .update_job(account, name, |j| {
                if let Some(h) = j.state.run.hosts.iter_mut().find(|h| h.host == host)
                    && h.done.is_none()
                    && h.phase.is_none_or(|p| phase_rank(p) <= phase_rank(report.phase))
                {
                    h.phase = Some(report.phase);
                }
                self.fold(j, now())?;
                if let Some(msg) = &report.message
                    && j.status() == JobStatus::InProgress
                {
                    let s = j.secondary();
                    j.transition(s, Some(msg), now())?;
                }
                Ok(())
            })
            .await?;
        Ok(directive(&job))
    }

    /// `POST .../heartbeat`.
    pub async fn agent_heartbeat(&self, account: &str, name: &str, host: &str, token: &str) -> ApiResult<Directive> {
        let job = self.agent_job(account, name, host, token).await?;
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
            .state
            .run
            .hosts
            .iter()
            .find(|h| h.host == host)
            .map(|h| h.log_stream.clone())
            .unwrap_or_default();
        self.append_job_log(account, &stream, &batch.lines).await?;
        let matcher = self.matcher(&job);
        if matcher.is_empty() {
            return Ok(directive(&job));
        }
        let mut points = Vec::new();
        for (ts, line) in &batch.lines {
            let escaped = kiln_api::logs::escape_control_chars(line);
            for (metric, value) in matcher.scan(&escaped) {
                points.push(MetricPoint {
                    metric,
                    value,
                    timestamp: *ts as f64 / 1000.0,
                });
            }
        }
        if points.is_empty() {
            return Ok(directive(&job));
        }
        self.store
            .add_metric_points(account, name, &points)
            .await
            .map_err(store_err)?;
        let job = self
            .update_job(account, name, |j| {
                for p in &points {
                    fold_final(&mut j.state.final_metric_data_list, &p.metric, p.value, p.timestamp);
                }
                j.row.last_modified_time = now();
                Ok(())
            })
            .await?;
        Ok(directive(&job))
    }

    fn matcher(&self, job: &TrainingJob) -> Arc<MetricMatcher> {
        let key = (job.row.account.clone(), job.row.name.to_lowercase());
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
        self.agent_job(account, name, host, token).await?;
        self.update_job(account, name, |j| {
            if let Some(h) = j.state.run.hosts.iter_mut().find(|h| h.host == host)
                && h.done.is_none()
            {
                h.done = Some(report.clone());
            }
            self.fold(j, now())
        })
        .await?;
        if let Ok(mut cache) = self.matchers.lock() {
            cache.remove(&(account.to_string(), name.to_lowercase()));
        }
        Ok(())
    }
}

fn phase_rank(p: Phase) -> u8 {
    match p {
        Phase::Downloading => 1,
        Phase::Training => 2,
        Phase::Uploading => 3,
    }
}

fn describe_hosts(job: &TrainingJob) -> String {
    let hosts = host_names(job);
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (_, t, _) in hosts {
        match counts.iter_mut().find(|(x, _)| *x == t) {
            Some(c) => c.1 += 1,
            None => counts.push((t, 1)),
        }
    }
    counts
        .iter()
        .map(|(t, n)| format!("{n} x {t}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Caller;
    use kiln_store::{SqliteLogStore, SqliteStore};
    use serde_json::json;

    async fn engine_with_placed_job(hosts: usize) -> (Engine, Caller) {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let logs = Arc::new(SqliteLogStore::in_memory().await.unwrap());
        let engine = Engine::new(store, logs);
        let caller = Caller {
            account: "123456789012".into(),
            region: "us-east-1".into(),
        };
        let req = json!({
            "TrainingJobName": "j", "RoleArn": "arn:aws:iam::123456789012:role/R",
            "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]},
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": hosts, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60}
        });
        engine
            .create_training_job(&caller, serde_json::from_value(req).unwrap())
            .await
            .unwrap();
        // Place the job by hand, as try_place does, without an executor.
        engine
            .update_job(&caller.account, "j", |j| {
                j.state.run.hosts = (1..=hosts)
                    .map(|i| HostState {
                        host: format!("algo-{i}"),
                        handle: None,
                        log_stream: format!("j/algo-{i}-1"),
                        phase: None,
                        done: None,
                    })
                    .collect();
                j.state.run.agent_token = Some("t".into());
                Ok(())
            })
            .await
            .unwrap();
        (engine, caller)
    }

    fn statuses(job: &TrainingJob) -> Vec<String> {
        job.state
            .secondary_status_transitions
            .iter()
            .map(|t| t.status.clone())
            .collect()
    }

    #[tokio::test]
    async fn hosts_reports_fold_into_the_normal_flow() {
        let (e, c) = engine_with_placed_job(2).await;
        let report = |p| StatusReport {
            phase: p,
            message: None,
        };
        e.agent_status(&c.account, "j", "algo-1", "t", report(Phase::Downloading))
            .await
            .unwrap();
        e.agent_status(&c.account, "j", "algo-1", "t", report(Phase::Training))
            .await
            .unwrap();
        // The job is as far as its slowest host.
        let job = e.load_job(&c.account, "j").await.unwrap().unwrap();
        assert_eq!(job.secondary(), Secondary::Starting);
        e.agent_status(&c.account, "j", "algo-2", "t", report(Phase::Training))
            .await
            .unwrap();
        let job = e.load_job(&c.account, "j").await.unwrap().unwrap();
        assert_eq!(statuses(&job), ["Starting", "Downloading", "Training"]);
        assert!(job.state.training_start_time.is_some());
        let d = e
            .agent_logs(
                &c.account,
                "j",
                "algo-1",
                "t",
                LogBatch {
                    lines: vec![(1000, "loss=0.5".into()), (2000, "loss=0.25".into())],
                },
            )
            .await
            .unwrap();
        assert_eq!(d.action, Action::Continue);
        let done = DoneReport {
            exit_code: Some(0),
            failure_reason: None,
            model_artifacts: Some("s3://b/o/j/output/model.tar.gz".into()),
        };
        e.agent_done(&c.account, "j", "algo-1", "t", done.clone())
            .await
            .unwrap();
        e.agent_done(
            &c.account,
            "j",
            "algo-2",
            "t",
            DoneReport {
                model_artifacts: None,
                ..done
            },
        )
        .await
        .unwrap();
        let job = e.load_job(&c.account, "j").await.unwrap().unwrap();
        assert_eq!(
            statuses(&job),
            ["Starting", "Downloading", "Training", "Uploading", "Completed"]
        );
        assert_eq!(
            job.state.model_artifacts.as_deref(),
            Some("s3://b/o/j/output/model.tar.gz")
        );
        assert_eq!(job.state.final_metric_data_list[0].value, 0.25);
        assert_eq!(job.state.final_metric_data_list[0].timestamp, 2.0);
    }

    #[tokio::test]
    async fn one_failed_host_stops_the_others_then_fails_the_job() {
        let (e, c) = engine_with_placed_job(2).await;
        let failed = DoneReport {
            exit_code: Some(1),
            failure_reason: Some("AlgorithmError: boom".into()),
            model_artifacts: None,
        };
        e.agent_done(&c.account, "j", "algo-2", "t", failed).await.unwrap();
        let d = e.agent_heartbeat(&c.account, "j", "algo-1", "t").await.unwrap();
        assert_eq!(d.action, Action::Stop);
        assert_eq!(
            e.load_job(&c.account, "j").await.unwrap().unwrap().status(),
            JobStatus::InProgress
        );
        e.agent_done(
            &c.account,
            "j",
            "algo-1",
            "t",
            DoneReport {
                exit_code: None,
                failure_reason: None,
                model_artifacts: None,
            },
        )
        .await
        .unwrap();
        let job = e.load_job(&c.account, "j").await.unwrap().unwrap();
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(job.state.failure_reason.as_deref(), Some("AlgorithmError: boom"));
    }

    #[tokio::test]
    async fn stop_waits_for_hosts_and_a_wrong_token_is_refused() {
        let (e, c) = engine_with_placed_job(1).await;
        assert_eq!(
            e.agent_heartbeat(&c.account, "j", "algo-1", "wrong")
                .await
                .unwrap_err()
                .code,
            "AccessDenied"
        );
        e.stop_training_job(
            &c,
            kiln_api::shapes::TrainingJobNameRequest {
                training_job_name: "j".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            e.load_job(&c.account, "j").await.unwrap().unwrap().status(),
            JobStatus::Stopping
        );
        assert_eq!(
            e.agent_heartbeat(&c.account, "j", "algo-1", "t").await.unwrap().action,
            Action::Stop
        );
        let done = DoneReport {
            exit_code: None,
            failure_reason: None,
            model_artifacts: Some("s3://b/o/j/output/model.tar.gz".into()),
        };
        e.agent_done(&c.account, "j", "algo-1", "t", done).await.unwrap();
        let job = e.load_job(&c.account, "j").await.unwrap().unwrap();
        assert_eq!(
            (job.status(), job.secondary()),
            (JobStatus::Stopped, Secondary::Stopped)
        );
        assert!(job.state.model_artifacts.is_some());
    }
}
