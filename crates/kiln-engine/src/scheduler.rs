//! The scheduler's pass over active training jobs: place waiting jobs when the executor has room,
//! enforce `MaxRuntimeInSeconds`, kill hosts that ignore a stop, notice hosts whose agent died
//! without reporting, and redo effects that a crash interrupted (a launch never recorded, hosts never
//! cleaned up). Each job is handled on its own: an error with one job is logged and the pass goes on.

use std::collections::HashMap;
use std::time::Duration;

use kiln_api::shapes::CreateTrainingJobRequest;
use kiln_api::status::{SecondaryStatus, TrainingJobStatus, WarmPoolResourceStatus};
use kiln_api::{ApiResult, AwsError};
use kiln_store::{HostRecord, TrainingJobRow};

use crate::capacity::{Resources, job_needs};
use crate::executor::HostSpec;
use crate::training::machine::{Event, keep_alive};
use crate::{Engine, now, random_token, runtime, store_err};

/// Most hosts a job placement lists (validation refuses more).
const MAX_HOSTS: usize = 1000;

/// One host of a job's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSlot {
    /// `algo-N`, numbered across instance groups.
    pub host: String,
    pub instance_type: String,
    /// The instance group (`homogeneousCluster` without groups).
    pub group: String,
}

/// The hosts a job asks for, `algo-1 … algo-N` across its instance groups.
pub fn host_layout(spec: &CreateTrainingJobRequest) -> Vec<HostSlot> {
    let mut out = Vec::new();
    let rc = spec.resource_config.clone().unwrap_or_default();
    match &rc.instance_groups {
        Some(groups) if !groups.is_empty() => {
            for g in groups {
                for _ in 0..g.instance_count.clamp(0, MAX_HOSTS as i64) {
                    if out.len() == MAX_HOSTS {
                        break;
                    }
                    out.push(HostSlot {
                        host: format!("algo-{}", out.len() + 1),
                        instance_type: g.instance_type.clone(),
                        group: g.instance_group_name.clone(),
                    });
                }
            }
        }
        _ => {
            let t = rc.instance_type.clone().unwrap_or_default();
            for i in 0..rc.instance_count.unwrap_or(1).clamp(1, MAX_HOSTS as i64) {
                out.push(HostSlot {
                    host: format!("algo-{}", i + 1),
                    instance_type: t.clone(),
                    group: "homogeneousCluster".into(),
                });
            }
        }
    }
    out
}

/// What a job needs from the executor (`None` if an instance type is unknown).
pub fn needs_of(spec: &CreateTrainingJobRequest) -> Option<Resources> {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for h in host_layout(spec) {
        *counts.entry(h.instance_type).or_default() += 1;
    }
    job_needs(&counts.into_iter().collect::<Vec<_>>())
}

/// Whether a job with `spec` may take over the warm pool of a job with `pool` (reference §10: the
/// same role, instance type and count, volume size and key, VPC, encryption and isolation).
pub fn pool_matches(pool: &CreateTrainingJobRequest, spec: &CreateTrainingJobRequest) -> bool {
    let rc = |s: &CreateTrainingJobRequest| {
        let r = s.resource_config.clone().unwrap_or_default();
        (
            r.instance_type,
            r.instance_count.unwrap_or(1),
            r.volume_size_in_gb,
            r.volume_kms_key_id,
        )
    };
    let vpc = |s: &CreateTrainingJobRequest| {
        let list = |key: &str| {
            let mut v: Vec<String> = s
                .vpc_config
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(|x| x.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        (list("SecurityGroupIds"), list("Subnets"))
    };
    let flags = |s: &CreateTrainingJobRequest| {
        (
            s.enable_inter_container_traffic_encryption.unwrap_or(false),
            s.enable_network_isolation.unwrap_or(false),
        )
    };
    pool.role_arn == spec.role_arn && rc(pool) == rc(spec) && vpc(pool) == vpc(spec) && flags(pool) == flags(spec)
}

/// `MaxRuntimeInSeconds` (SageMaker's default: one day).
pub fn max_runtime(job: &TrainingJobRow) -> i64 {
    job.spec
        .stopping_condition
        .as_ref()
        .and_then(|s| s.max_runtime_in_seconds)
        .unwrap_or(86400)
}

/// "2 x ml.m5.large + 1 x ml.g5.xlarge".
pub fn describe_hosts(spec: &CreateTrainingJobRequest) -> String {
    let layout = host_layout(spec);
    crate::executor::describe_types(layout.iter().map(|h| h.instance_type.as_str()))
}

/// The hosts a job asks for, with what their instance types need, as executors take them.
pub fn host_specs(spec: &CreateTrainingJobRequest) -> Vec<HostSpec> {
    host_layout(spec)
        .into_iter()
        .map(|h| HostSpec {
            resources: crate::capacity::instance_resources(&h.instance_type),
            host: h.host,
            instance_type: h.instance_type,
        })
        .collect()
}

/// Whether the job's hosts hold executor resources (placed, some host still running).
fn holds_resources(job: &TrainingJobRow) -> bool {
    !job.run.hosts.is_empty() && job.run.hosts.iter().any(|h| h.done.is_none())
}

impl Engine {
    /// Checks that a job could ever run here; `ResourceLimitExceeded` if it never fits.
    pub(crate) async fn check_fits(&self, spec: &CreateTrainingJobRequest) -> ApiResult<()> {
        self.executor
            .fits(&host_specs(spec))
            .await
            .map_err(AwsError::resource_limit_exceeded)
    }

    /// One scheduling pass over every active training job.
    pub async fn tick(&self) -> ApiResult<()> {
        let jobs = self
            .store
            .training_jobs_with_status(&[TrainingJobStatus::InProgress, TrainingJobStatus::Stopping])
            .await
            .map_err(store_err)?;
        let capacity = self.executor.capacity().await;
        let mut used = Resources::ZERO;
        for job in jobs.iter().filter(|j| holds_resources(j)) {
            if let Some(n) = needs_of(&job.spec) {
                used = used.plus(n);
            }
        }
        let t = now();
        // Warm pools: expired ones released, the others' resources reserved (and offered to the
        // jobs that match them).
        let mut pools = Vec::new();
        match self
            .store
            .training_jobs_with_warm_pool(WarmPoolResourceStatus::Available)
            .await
        {
            Ok(available) => {
                for pool in available {
                    let since = pool.run.warm_pool_since.unwrap_or(pool.last_modified_time);
                    if t - since >= keep_alive(&pool.spec) as f64 {
                        if let Err(e) = self.apply(&pool.account, &pool.name, Event::PoolExpired).await {
                            tracing::warn!(target: "kiln::scheduler", "warm pool of {}: {}", pool.name, e.message);
                        }
                        continue;
                    }
                    if let Some(n) = needs_of(&pool.spec) {
                        used = used.plus(n);
                    }
                    pools.push(pool);
                }
            }
            Err(e) => tracing::warn!(target: "kiln::scheduler", "listing warm pools: {e}"),
        }
        for job in &jobs {
            if let Err(e) = self.schedule_one(job, capacity, &mut used, &mut pools, t).await {
                tracing::warn!(target: "kiln::scheduler", "training job {}: {}", job.name, e.message);
            }
        }
        self.watch_rules(&jobs).await;
        if let Err(e) = self.poll_launches(&jobs).await {
            tracing::warn!(target: "kiln::scheduler", "polling the executor: {}", e.message);
        }
        match self.store.training_jobs_to_clean().await {
            Ok(ended) => {
                for job in &ended {
                    self.cleanup(job).await;
                }
            }
            Err(e) => tracing::warn!(target: "kiln::scheduler", "listing ended jobs: {e}"),
        }
        Ok(())
    }

    async fn schedule_one(
        &self,
        job: &TrainingJobRow,
        capacity: Option<Resources>,
        used: &mut Resources,
        pools: &mut Vec<TrainingJobRow>,
        t: f64,
    ) -> ApiResult<()> {
        let (account, name) = (job.account.as_str(), job.name.as_str());
        // A spot job's MaxWaitTimeInSeconds counts everything since creation: waiting, running and
        // interrupted time.
        if job.status == TrainingJobStatus::InProgress
            && job.spec.enable_managed_spot_training == Some(true)
            && let Some(limit) = job
                .spec
                .stopping_condition
                .as_ref()
                .and_then(|s| s.max_wait_time_in_seconds)
            && t - job.creation_time > limit as f64
        {
            self.apply(account, name, Event::WaitExceeded { limit }).await?;
            return Ok(());
        }
        if job.run.hosts.is_empty() {
            if job.status == TrainingJobStatus::InProgress {
                self.try_place(job, capacity, used, pools, t).await?;
            }
            return Ok(());
        }
        let launching = self
            .launching
            .lock()
            .map(|l| l.contains(&(job.account.clone(), job.name.to_lowercase())))
            .unwrap_or(true);
        if job.run.launch.is_none() && !launching && holds_resources(job) {
            if job.status == TrainingJobStatus::InProgress {
                // Placed, but the launch was never recorded (the leader died launching): launch
                // again; the executor finds agents of this placement that did start.
                self.launch(job).await;
            } else {
                let hosts: Vec<String> = job.run.hosts.iter().map(|h| h.host.clone()).collect();
                let reason = "the job was stopped before its hosts started".to_string();
                self.apply(account, name, Event::HostsLost { hosts, reason }).await?;
            }
            return Ok(());
        }
        self.maybe_interrupt(job, t).await?;
        let limit = max_runtime(job);
        if job.status == TrainingJobStatus::InProgress && job.training_start_time.is_some_and(|s| t - s > limit as f64)
        {
            self.apply(account, name, Event::RuntimeExceeded { limit }).await?;
        }
        // Hosts that ignore a stop for much longer than the grace period are killed (again every
        // 30 s while they last).
        let stopping_since = job
            .transitions
            .iter()
            .rev()
            .find(|tr| tr.status == SecondaryStatus::Stopping)
            .map(|tr| tr.start_time);
        let overdue = stopping_since.is_some_and(|s| t - s > (self.runner.stop_grace_seconds + 60) as f64);
        if job.status == TrainingJobStatus::Stopping && overdue && job.run.killed_at.is_none_or(|k| t - k > 30.0) {
            self.apply(account, name, Event::StopOverdue).await?;
        }
        Ok(())
    }

    /// `[spot] interruptions_per_hour`: interrupts a training spot job at random, as AWS reclaims
    /// spot capacity (a Poisson process per job over the time it trains).
    /// The cluster took a launch's allocation back (`taken` says how): for a spot job in progress,
    /// a spot interruption, so that its hosts' ends (lost, or reported as killed) end the attempt
    /// and a new one starts. Other jobs just lose their hosts (a platform failure).
    pub(crate) async fn capacity_taken_back(&self, job: &TrainingJobRow, taken: &str) {
        if job.status != TrainingJobStatus::InProgress
            || job.spec.enable_managed_spot_training != Some(true)
            || job.run.interrupting.is_some()
        {
            return;
        }
        let reason = format!("Training job interrupted: the cluster took its capacity back ({taken})");
        if let Err(e) = self.apply(&job.account, &job.name, Event::Interrupt { reason }).await {
            tracing::warn!(target: "kiln::scheduler", "training job {}: {}", job.name, e.message);
        }
    }

    async fn maybe_interrupt(&self, job: &TrainingJobRow, t: f64) -> ApiResult<()> {
        let rate = self.runner.spot_interruptions_per_hour;
        if rate <= 0.0
            || job.status != TrainingJobStatus::InProgress
            || job.spec.enable_managed_spot_training != Some(true)
            || job.secondary_status != SecondaryStatus::Training
            || job.run.interrupting.is_some()
        {
            return Ok(());
        }
        // Seconds since this job was last considered (at most a minute: a pause of the scheduler
        // does not turn into a burst).
        let since = {
            let Ok(mut seen) = self.spot_checked.lock() else {
                return Ok(());
            };
            let key = (job.account.clone(), job.name.to_lowercase());
            let last = seen.insert(key, t);
            last.map_or(0.0, |l| (t - l).clamp(0.0, 60.0))
        };
        let p = 1.0 - (-rate * since / 3600.0).exp();
        if rand::random::<f64>() < p {
            let reason = format!(
                "Training job interrupted: the spot capacity was reclaimed (the [spot] interruption injector, {rate} an hour)"
            );
            self.apply(&job.account, &job.name, Event::Interrupt { reason }).await?;
        }
        Ok(())
    }

    async fn try_place(
        &self,
        job: &TrainingJobRow,
        capacity: Option<Resources>,
        used: &mut Resources,
        pools: &mut Vec<TrainingJobRow>,
        t: f64,
    ) -> ApiResult<()> {
        let (account, name) = (job.account.as_str(), job.name.as_str());
        if !self.executor.runs_jobs() {
            let message = format!(
                "Waiting: no executor is configured on this kiln (executor = \"{}\"), so jobs are not run",
                self.executor.name()
            );
            self.apply(account, name, Event::Waiting { message }).await?;
            return Ok(());
        }
        let Some(capacity) = capacity else {
            // A cluster that does not answer: the job starts once it does.
            let message = format!(
                "Waiting: the {} executor cannot be reached (see the server's log); the job starts once it answers",
                self.executor.name()
            );
            self.apply(account, name, Event::Waiting { message }).await?;
            return Ok(());
        };
        if let Err(reason) = runtime::resolve(&job.spec) {
            self.apply(account, name, Event::Unrunnable { reason }).await?;
            return Ok(());
        }
        let need = needs_of(&job.spec).unwrap_or(Resources::ZERO);
        // A job with a keep-alive takes over a matching Available warm pool of its account: its
        // resources are the pool's (already counted as used), its cache the pool's.
        // (pool id, the job that held it, that job's launch)
        let mut reused: Option<(String, String, Option<String>)> = None;
        if keep_alive(&job.spec) > 0 && job.run.warm_pool_id.is_none() {
            while let Some(i) = pools
                .iter()
                .position(|p| p.account == job.account && pool_matches(&p.spec, &job.spec))
            {
                let pool = pools.remove(i);
                let Some(id) = pool.run.warm_pool_id.clone() else {
                    continue;
                };
                let by = job.name.clone();
                // Claimed first: a pool released or taken meanwhile is refused, and the next one tried.
                if self
                    .apply(&pool.account, &pool.name, Event::PoolReused { by })
                    .await
                    .is_ok()
                {
                    reused = Some((id, pool.name.clone(), pool.run.launch.clone()));
                    break;
                }
            }
        }
        let free = capacity.minus(*used);
        // An executor that queues jobs itself gets them at once and reports why they wait.
        if reused.is_none() && !self.executor.queues() && !free.holds(&need) {
            let message = format!(
                "Waiting for capacity: the job needs {} ({} free of {} vCPUs, {} of {} GPUs)",
                describe_hosts(&job.spec),
                free.vcpus,
                capacity.vcpus,
                free.gpus,
                capacity.gpus
            );
            self.apply(account, name, Event::Waiting { message }).await?;
            return Ok(());
        }
        let warm_pool = match (&reused, &job.run.warm_pool_id) {
            (Some((id, _, _)), _) => Some(id.clone()),
            (None, Some(id)) => Some(id.clone()),
            (None, None) if keep_alive(&job.spec) > 0 => Some(format!(
                "wp-{}",
                random_token(16, b"abcdefghijklmnopqrstuvwxyz0123456789")
            )),
            (None, None) => None,
        };
        let epoch = t as i64;
        let hosts = host_layout(&job.spec)
            .into_iter()
            .map(|h| HostRecord {
                log_stream: format!("{}/{}-{epoch}", job.name, h.host),
                host: h.host,
                phase: None,
                done: None,
            })
            .collect();
        let event = Event::Placed {
            hosts,
            agent_token: random_token(40, b"abcdefghijklmnopqrstuvwxyz0123456789"),
            access_key: (
                format!("KJOB{}", random_token(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
                random_token(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
            ),
            warm_pool,
            reused_from: reused.as_ref().map(|(_, from, _)| from.clone()),
            pool_launch: reused
                .as_ref()
                .and_then(|(_, _, launch)| launch.clone())
                .filter(|_| self.executor.holds_pools()),
        };
        // Committed first, launched after (the `Launch` effect): a host the store does not know
        // could never report.
        match self.apply(account, name, event).await {
            Ok(_) => {
                if reused.is_none() {
                    *used = used.plus(need);
                }
                Ok(())
            }
            Err(e) => {
                if let Some((id, _, _)) = &reused {
                    // The pool was claimed for a job that could not take it: nothing holds it now.
                    self.drop_pool(account, id).await;
                }
                // Placed or stopped meanwhile (another pass, an API call): nothing to do.
                if e.code == "ValidationException" {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Asks the executor about every launch at once: a launch waiting in the executor's queue shows
    /// why in its job's message; hosts the executor no longer runs and that never reported become
    /// lost (their job fails or, when stopping, ends).
    async fn poll_launches(&self, jobs: &[TrainingJobRow]) -> ApiResult<()> {
        let launched: Vec<&TrainingJobRow> = jobs
            .iter()
            .filter(|j| j.run.launch.is_some() && holds_resources(j))
            .collect();
        if launched.is_empty() {
            return Ok(());
        }
        let handles: Vec<&str> = launched.iter().filter_map(|j| j.run.launch.as_deref()).collect();
        let states = self.executor.poll(&handles).await;
        let mut lost: Vec<(&TrainingJobRow, Vec<(String, String)>)> = Vec::new();
        for (job, state) in launched.into_iter().zip(states) {
            if job.status == TrainingJobStatus::Stopping
                && state.waiting.is_some()
                && let Some(handle) = &job.run.launch
            {
                // Stopped while the executor's queue still holds it: nothing ran, nothing to wait for.
                self.executor.kill(handle).await;
                let hosts: Vec<String> = job.run.hosts.iter().map(|h| h.host.clone()).collect();
                let reason = "the job was stopped before its hosts started".to_string();
                if let Err(e) = self
                    .apply(&job.account, &job.name, Event::HostsLost { hosts, reason })
                    .await
                {
                    tracing::warn!(target: "kiln::scheduler", "training job {}: {}", job.name, e.message);
                }
                continue;
            }
            if let Some(reason) = state.waiting {
                let message = format!("Waiting for the cluster to start the hosts: {reason}");
                if let Err(e) = self.apply(&job.account, &job.name, Event::Queued { message }).await {
                    tracing::warn!(target: "kiln::scheduler", "training job {}: {}", job.name, e.message);
                }
            }
            if let Some(taken) = &state.preempted {
                self.capacity_taken_back(job, taken).await;
            }
            let silent: Vec<(String, String)> = state
                .gone
                .into_iter()
                .filter(|(h, _)| job.run.hosts.iter().any(|x| &x.host == h && x.done.is_none()))
                .collect();
            if !silent.is_empty() {
                lost.push((job, silent));
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        // Give a report that is in flight a moment to land before calling the host lost (the
        // machine ignores hosts that reported meanwhile).
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (job, hosts) in lost {
            for (host, detail) in hosts {
                let reason = format!(
                    "InternalServerError: the agent of {host} stopped without reporting how the host ended: {detail}."
                );
                let event = Event::HostsLost {
                    hosts: vec![host],
                    reason,
                };
                if let Err(e) = self.apply(&job.account, &job.name, event).await {
                    tracing::warn!(target: "kiln::scheduler", "training job {}: {}", job.name, e.message);
                }
            }
        }
        Ok(())
    }
}
