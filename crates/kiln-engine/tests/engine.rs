//! The engine around its state machines, on a real (in-memory SQLite) store: the agent gateway, the
//! scheduler's passes, and the rule that effects run once per committed change even when writes
//! lose races and are retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_api::agent::{Action, DoneReport, LogBatch, Phase, StatusReport};
use kiln_api::shapes::TrainingJobNameRequest;
use kiln_api::status::{SecondaryStatus, TrainingJobStatus};
use kiln_engine::capacity::Resources;
use kiln_engine::executor::{Executor, JobLaunch, LaunchState};
use kiln_engine::{Caller, Engine, RunnerConfig};
use kiln_store::{
    CustomMetricPoint, CustomSeries, JobQuery, LineSource, MetricPoint, SqlLogStore, SqlStore, Store, StoreError,
    StoreResult, TagRow, TrainingJobRow, TuningJobRow,
};

/// A store that, while armed, answers a job's update with a conflict after another writer changed
/// the row in between, as a concurrent request would.
struct Racing {
    inner: SqlStore,
    conflicts_left: AtomicUsize,
    /// Metric writes that fail (as a busy database would) before the next one succeeds.
    metric_failures_left: AtomicUsize,
}

#[async_trait]
impl Store for Racing {
    async fn insert_training_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()> {
        self.inner.insert_training_job(job, tags).await
    }
    async fn get_training_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>> {
        self.inner.get_training_job(account, name).await
    }
    async fn update_training_job(&self, job: &TrainingJobRow) -> StoreResult<i64> {
        if self
            .conflicts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // Another writer gets there first with a change of its own.
            let mut other = self.inner.get_training_job(&job.account, &job.name).await?.unwrap();
            other.last_modified_time += 0.001;
            self.inner.update_training_job(&other).await?;
            return Err(StoreError::Conflict);
        }
        self.inner.update_training_job(job).await
    }
    async fn delete_training_job(&self, account: &str, name: &str) -> StoreResult<()> {
        self.inner.delete_training_job(account, name).await
    }
    async fn list_training_jobs(&self, query: &JobQuery) -> StoreResult<Vec<TrainingJobRow>> {
        self.inner.list_training_jobs(query).await
    }
    async fn training_jobs_with_status(&self, s: &[TrainingJobStatus]) -> StoreResult<Vec<TrainingJobRow>> {
        self.inner.training_jobs_with_status(s).await
    }
    async fn training_jobs_with_warm_pool(
        &self,
        s: kiln_api::status::WarmPoolResourceStatus,
    ) -> StoreResult<Vec<TrainingJobRow>> {
        self.inner.training_jobs_with_warm_pool(s).await
    }
    async fn count_training_jobs(&self) -> StoreResult<Vec<(TrainingJobStatus, i64)>> {
        self.inner.count_training_jobs().await
    }
    async fn training_jobs_to_clean(&self) -> StoreResult<Vec<TrainingJobRow>> {
        self.inner.training_jobs_to_clean().await
    }
    async fn job_credentials(&self, id: &str) -> StoreResult<Option<(String, String)>> {
        self.inner.job_credentials(id).await
    }
    async fn insert_tuning_job(&self, job: &TuningJobRow, tags: &[TagRow]) -> StoreResult<()> {
        self.inner.insert_tuning_job(job, tags).await
    }
    async fn get_tuning_job(&self, account: &str, name: &str) -> StoreResult<Option<TuningJobRow>> {
        self.inner.get_tuning_job(account, name).await
    }
    async fn update_tuning_job(&self, job: &TuningJobRow) -> StoreResult<i64> {
        self.inner.update_tuning_job(job).await
    }
    async fn delete_tuning_job(&self, account: &str, name: &str) -> StoreResult<()> {
        self.inner.delete_tuning_job(account, name).await
    }
    async fn list_tuning_jobs(&self, query: &JobQuery) -> StoreResult<Vec<TuningJobRow>> {
        self.inner.list_tuning_jobs(query).await
    }
    async fn tuning_jobs_with_status(&self, s: &[kiln_api::status::TuningJobStatus]) -> StoreResult<Vec<TuningJobRow>> {
        self.inner.tuning_jobs_with_status(s).await
    }
    async fn add_metric_points(
        &self,
        account: &str,
        job: &str,
        points: &[MetricPoint],
        source: Option<LineSource<'_>>,
    ) -> StoreResult<()> {
        if self
            .metric_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Database("database is locked".into()));
        }
        self.inner.add_metric_points(account, job, points, source).await
    }
    async fn metric_points(&self, account: &str, job: &str, metric: Option<&str>) -> StoreResult<Vec<MetricPoint>> {
        self.inner.metric_points(account, job, metric).await
    }
    async fn metric_series(&self, account: &str) -> StoreResult<Vec<(String, String)>> {
        self.inner.metric_series(account).await
    }
    async fn put_custom_metric_points(&self, account: &str, points: &[CustomMetricPoint]) -> StoreResult<()> {
        self.inner.put_custom_metric_points(account, points).await
    }
    async fn custom_metric_series(&self, account: &str) -> StoreResult<Vec<CustomSeries>> {
        self.inner.custom_metric_series(account).await
    }
    async fn expire_custom_metric_points(&self, before: f64) -> StoreResult<u64> {
        self.inner.expire_custom_metric_points(before).await
    }
    async fn custom_metric_points(
        &self,
        account: &str,
        series: &CustomSeries,
        start: f64,
        end: f64,
    ) -> StoreResult<Vec<(f64, f64)>> {
        self.inner.custom_metric_points(account, series, start, end).await
    }
    async fn put_tags(&self, account: &str, arn: &str, tags: &[TagRow]) -> StoreResult<()> {
        self.inner.put_tags(account, arn, tags).await
    }
    async fn account_tags(&self, account: &str) -> StoreResult<Vec<(String, TagRow)>> {
        self.inner.account_tags(account).await
    }
    async fn list_tags(&self, account: &str, arn: &str, after: Option<&str>, limit: u32) -> StoreResult<Vec<TagRow>> {
        self.inner.list_tags(account, arn, after, limit).await
    }
    async fn delete_tags(&self, account: &str, arn: &str, keys: &[String]) -> StoreResult<()> {
        self.inner.delete_tags(account, arn, keys).await
    }
}

/// An executor that starts nothing and counts what it is asked; its hosts never go away.
#[derive(Default)]
struct Counting {
    launches: AtomicUsize,
    kills: AtomicUsize,
    cleanups: AtomicUsize,
    launched: Mutex<Vec<JobLaunch>>,
    /// What `poll` says of every launch.
    waiting: Mutex<Option<String>>,
    /// Hosts `poll` says are gone, with why.
    gone: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Executor for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    async fn capacity(&self) -> Option<Resources> {
        Some(Resources {
            vcpus: 4,
            memory_gib: 16.0,
            gpus: 0,
            neuron_devices: 0,
        })
    }
    async fn launch(&self, job: &JobLaunch) -> Result<String, String> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        self.launched.lock().unwrap().push(job.clone());
        Ok(format!("handle-of-{}", job.job))
    }
    async fn poll(&self, handles: &[&str]) -> Vec<LaunchState> {
        let waiting = self.waiting.lock().unwrap().clone();
        let gone = self.gone.lock().unwrap().clone();
        vec![
            LaunchState {
                waiting,
                gone,
                preempted: None
            };
            handles.len()
        ]
    }
    async fn kill(&self, _: &str) {
        self.kills.fetch_add(1, Ordering::SeqCst);
    }
    async fn cleanup(&self, _: &str, _: bool) {
        self.cleanups.fetch_add(1, Ordering::SeqCst);
    }
}

fn caller() -> Caller {
    Caller {
        account: "123456789012".into(),
        region: "us-east-1".into(),
    }
}

async fn setup(conflicts: usize) -> (Arc<Engine>, Arc<Racing>, Arc<Counting>) {
    let store = Arc::new(Racing {
        inner: SqlStore::in_memory().await.unwrap(),
        conflicts_left: AtomicUsize::new(0),
        metric_failures_left: AtomicUsize::new(0),
    });
    let logs = Arc::new(SqlLogStore::in_memory().await.unwrap());
    let executor = Arc::new(Counting::default());
    let engine = Arc::new(Engine::with_executor(
        store.clone(),
        logs,
        executor.clone(),
        RunnerConfig::default(),
    ));
    store.conflicts_left.store(conflicts, Ordering::SeqCst);
    (engine, store, executor)
}

async fn create(engine: &Engine, name: &str, hosts: usize, instance_type: &str) {
    let req = serde_json::json!({
        "TrainingJobName": name, "RoleArn": "arn:aws:iam::123456789012:role/R",
        "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": hosts, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60}
    });
    engine
        .create_training_job(&caller(), serde_json::from_value(req).unwrap())
        .await
        .unwrap();
}

async fn job(engine: &Engine, name: &str) -> TrainingJobRow {
    engine.load_job("123456789012", name).await.unwrap().unwrap()
}

fn token(j: &TrainingJobRow) -> String {
    j.run.agent_token.clone().unwrap()
}

fn statuses(j: &TrainingJobRow) -> Vec<SecondaryStatus> {
    j.transitions.iter().map(|t| t.status).collect()
}

#[tokio::test]
async fn effects_run_once_per_committed_change_however_often_writes_are_retried() {
    let (engine, store, executor) = setup(0).await;
    create(&engine, "j", 2, "ml.m5.large").await;
    // Placement loses its race three times before it commits: the hosts are launched once.
    store.conflicts_left.store(3, Ordering::SeqCst);
    engine.tick().await.unwrap();
    assert_eq!(store.conflicts_left.load(Ordering::SeqCst), 0, "the conflicts were hit");
    assert_eq!(executor.launches.load(Ordering::SeqCst), 1);
    let j = job(&engine, "j").await;
    assert_eq!(j.run.launch.as_deref(), Some("handle-of-j"));
    assert_eq!(j.run.hosts.len(), 2);
    // Another pass launches nothing more.
    engine.tick().await.unwrap();
    assert_eq!(executor.launches.load(Ordering::SeqCst), 1);
    // The last host's report ends the job; that commit loses two races: one clean-up, one end.
    let t = token(&j);
    let ok = DoneReport {
        exit_code: Some(0),
        failure_reason: None,
        model_artifacts: None,
    };
    engine
        .agent_done("123456789012", "j", "algo-1", &t, ok.clone())
        .await
        .unwrap();
    store.conflicts_left.store(2, Ordering::SeqCst);
    engine.agent_done("123456789012", "j", "algo-2", &t, ok).await.unwrap();
    assert_eq!(executor.cleanups.load(Ordering::SeqCst), 1);
    let j = job(&engine, "j").await;
    assert_eq!(j.status, TrainingJobStatus::Completed);
    assert!(j.run.cleaned);
    engine.tick().await.unwrap();
    assert_eq!(
        executor.cleanups.load(Ordering::SeqCst),
        1,
        "a cleaned job is not cleaned again"
    );
    assert_eq!(executor.kills.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_launch_lost_to_a_crash_is_redone_and_a_missed_clean_up_is_done_later() {
    let (engine, store, executor) = setup(0).await;
    create(&engine, "j", 1, "ml.m5.large").await;
    // Placement committed, then the process died before launching: as the store shows it.
    let mut j = job(&engine, "j").await;
    j.run.hosts = vec![kiln_store::HostRecord {
        host: "algo-1".into(),
        log_stream: "j/algo-1-1".into(),
        phase: None,
        done: None,
    }];
    j.run.agent_token = Some("t".into());
    j.run.access_key = Some(("KJOBAAAA".into(), "s".into()));
    store.inner.update_training_job(&j).await.unwrap();
    engine.tick().await.unwrap();
    assert_eq!(executor.launches.load(Ordering::SeqCst), 1);
    assert!(job(&engine, "j").await.run.launch.is_some());
    // The job ended but its clean-up never ran (a crash after the commit): the next pass does it.
    let mut j = job(&engine, "j").await;
    j.status = TrainingJobStatus::Completed;
    j.secondary_status = SecondaryStatus::Completed;
    store.inner.update_training_job(&j).await.unwrap();
    engine.tick().await.unwrap();
    assert_eq!(executor.cleanups.load(Ordering::SeqCst), 1);
    assert!(job(&engine, "j").await.run.cleaned);
}

#[tokio::test]
async fn one_bad_job_does_not_stop_the_pass() {
    let (engine, store, executor) = setup(0).await;
    create(&engine, "a-bad", 1, "ml.m5.large").await;
    create(&engine, "b-good", 1, "ml.m5.large").await;
    // The first job's framework image names no script: it fails with a reason; the second runs.
    let mut bad = job(&engine, "a-bad").await;
    bad.spec.algorithm_specification.as_mut().unwrap().training_image =
        Some("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310".into());
    store.inner.update_training_job(&bad).await.unwrap();
    engine.tick().await.unwrap();
    let bad = job(&engine, "a-bad").await;
    assert_eq!(bad.status, TrainingJobStatus::Failed);
    assert!(bad.failure_reason.unwrap().starts_with("ClientError: cannot run image"));
    assert_eq!(executor.launches.load(Ordering::SeqCst), 1);
    assert!(job(&engine, "b-good").await.run.launch.is_some());
}

#[tokio::test]
async fn jobs_wait_for_capacity_and_run_when_it_frees() {
    let (engine, _, executor) = setup(0).await;
    // Capacity is 4 vCPUs: one ml.m5.xlarge (4) at a time.
    create(&engine, "a", 1, "ml.m5.xlarge").await;
    create(&engine, "b", 1, "ml.m5.xlarge").await;
    engine.tick().await.unwrap();
    assert_eq!(executor.launches.load(Ordering::SeqCst), 1);
    let b = job(&engine, "b").await;
    assert!(
        b.transitions[0].status_message.starts_with("Waiting for capacity"),
        "{:?}",
        b.transitions
    );
    let a = job(&engine, "a").await;
    engine
        .stop_training_job(
            &caller(),
            TrainingJobNameRequest {
                training_job_name: "a".into(),
            },
        )
        .await
        .unwrap();
    let none = DoneReport {
        exit_code: None,
        failure_reason: None,
        model_artifacts: None,
    };
    engine
        .agent_done("123456789012", "a", "algo-1", &token(&a), none)
        .await
        .unwrap();
    engine.tick().await.unwrap();
    assert_eq!(executor.launches.load(Ordering::SeqCst), 2);
    // A job that can never fit is refused at create time.
    let req = serde_json::json!({
        "TrainingJobName": "huge", "RoleArn": "arn:aws:iam::123456789012:role/R",
        "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": "ml.m5.4xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60}
    });
    let e = engine
        .create_training_job(&caller(), serde_json::from_value(req).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceLimitExceeded");
}

#[tokio::test]
async fn hosts_reports_fold_into_the_normal_flow() {
    let (engine, store, _) = setup(0).await;
    create(&engine, "j", 2, "ml.m5.large").await;
    engine.tick().await.unwrap();
    let t = token(&job(&engine, "j").await);
    let report = |p| StatusReport {
        phase: p,
        message: None,
    };
    let acct = "123456789012";
    engine
        .agent_status(acct, "j", "algo-1", &t, report(Phase::Downloading))
        .await
        .unwrap();
    engine
        .agent_status(acct, "j", "algo-1", &t, report(Phase::Training))
        .await
        .unwrap();
    // The job is as far as its slowest host.
    assert_eq!(job(&engine, "j").await.secondary_status, SecondaryStatus::Starting);
    engine
        .agent_status(acct, "j", "algo-2", &t, report(Phase::Training))
        .await
        .unwrap();
    let j = job(&engine, "j").await;
    assert_eq!(
        statuses(&j),
        [
            SecondaryStatus::Starting,
            SecondaryStatus::Downloading,
            SecondaryStatus::Training
        ]
    );
    let lines = LogBatch {
        lines: vec![(1000, "loss=0.5".into()), (2000, "loss=0.25".into())],
        sender: Some("agent-1".into()),
        seq: Some(0),
    };
    // The lines are stored, then the metric write fails: the agent is told to send it again.
    store.metric_failures_left.store(1, Ordering::SeqCst);
    engine
        .agent_logs(acct, "j", "algo-1", &t, lines.clone())
        .await
        .unwrap_err();
    let d = engine.agent_logs(acct, "j", "algo-1", &t, lines.clone()).await.unwrap();
    assert_eq!(d.action, Action::Continue);
    // The same batch again (its reply was lost): stored once, its metrics counted once; a batch
    // overlapping it stores only its new line.
    engine.agent_logs(acct, "j", "algo-1", &t, lines).await.unwrap();
    let overlapping = LogBatch {
        lines: vec![(2000, "loss=0.25".into()), (3000, "loss=0.125".into())],
        sender: Some("agent-1".into()),
        seq: Some(1),
    };
    engine.agent_logs(acct, "j", "algo-1", &t, overlapping).await.unwrap();
    let points = engine.store().metric_points(acct, "j", None).await.unwrap();
    assert_eq!(points.iter().map(|p| p.value).collect::<Vec<_>>(), [0.5, 0.25, 0.125]);
    // A report cannot point the job's model anywhere but its own output.
    for elsewhere in [
        "s3://other/evil.tar.gz",
        "s3://b/o/j/output/../../k/output/model.tar.gz",
    ] {
        let forged = DoneReport {
            exit_code: Some(0),
            failure_reason: None,
            model_artifacts: Some(elsewhere.into()),
        };
        let e = engine.agent_done(acct, "j", "algo-1", &t, forged).await.unwrap_err();
        assert_eq!(e.code, "ValidationException", "{elsewhere}: {}", e.message);
    }
    let done = DoneReport {
        exit_code: Some(0),
        failure_reason: None,
        model_artifacts: Some("s3://b/o/j/output/model.tar.gz".into()),
    };
    engine.agent_done(acct, "j", "algo-1", &t, done.clone()).await.unwrap();
    let no_model = DoneReport {
        model_artifacts: None,
        ..done.clone()
    };
    engine.agent_done(acct, "j", "algo-2", &t, no_model).await.unwrap();
    let j = job(&engine, "j").await;
    assert_eq!(
        statuses(&j),
        [
            SecondaryStatus::Starting,
            SecondaryStatus::Downloading,
            SecondaryStatus::Training,
            SecondaryStatus::Uploading,
            SecondaryStatus::Completed
        ]
    );
    assert_eq!(j.model_artifacts.as_deref(), Some("s3://b/o/j/output/model.tar.gz"));
    assert_eq!((j.final_metrics[0].value, j.final_metrics[0].timestamp), (0.125, 3.0));
    assert_eq!(engine.store().metric_points(acct, "j", None).await.unwrap().len(), 3);
    // The ended job's agent token is no longer valid.
    let e = engine
        .agent_heartbeat(acct, "j", "algo-1", &t, Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied", "{}", e.message);
    // Except for the final report a host had recorded, sent again after its answer was lost: it
    // is answered as received, and changes nothing.
    engine.agent_authorize(acct, "j", "algo-1", &t, "done").await.unwrap();
    engine.agent_done(acct, "j", "algo-1", &t, done.clone()).await.unwrap();
    assert_eq!(job(&engine, "j").await, j);
    let other = DoneReport {
        exit_code: Some(1),
        failure_reason: Some("AlgorithmError: late".into()),
        model_artifacts: None,
    };
    let e = engine.agent_done(acct, "j", "algo-1", &t, other).await.unwrap_err();
    assert_eq!(e.code, "AccessDenied", "{}", e.message);
    let e = engine.agent_done(acct, "j", "algo-1", "wrong", done).await.unwrap_err();
    assert_eq!(e.code, "AccessDenied", "{}", e.message);
    let e = engine
        .agent_authorize(acct, "j", "algo-1", &t, "logs")
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied", "{}", e.message);
}

#[tokio::test]
async fn agents_need_their_token_and_a_stop_waits_for_the_hosts() {
    let (engine, _, _) = setup(0).await;
    create(&engine, "j", 1, "ml.m5.large").await;
    engine.tick().await.unwrap();
    let j = job(&engine, "j").await;
    let acct = "123456789012";
    let e = engine
        .agent_heartbeat(acct, "j", "algo-1", "wrong", Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");
    let e = engine
        .agent_heartbeat(acct, "j", "algo-7", &token(&j), Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationException");
    // The job's S3 key works while it runs, and stops working once it ends.
    let (key, secret) = j.run.access_key.clone().unwrap();
    assert_eq!(engine.job_credentials(&key).await, Some((secret, acct.to_string())));
    let name = || TrainingJobNameRequest {
        training_job_name: "j".into(),
    };
    engine.stop_training_job(&caller(), name()).await.unwrap();
    assert_eq!(job(&engine, "j").await.status, TrainingJobStatus::Stopping);
    let d = engine
        .agent_heartbeat(acct, "j", "algo-1", &token(&j), Default::default())
        .await
        .unwrap();
    assert_eq!(d.action, Action::Stop);
    let done = DoneReport {
        exit_code: None,
        failure_reason: None,
        model_artifacts: Some("s3://b/o/j/output/model.tar.gz".into()),
    };
    engine.agent_done(acct, "j", "algo-1", &token(&j), done).await.unwrap();
    let j = job(&engine, "j").await;
    assert_eq!(
        (j.status, j.secondary_status),
        (TrainingJobStatus::Stopped, SecondaryStatus::Stopped)
    );
    assert!(j.model_artifacts.is_some());
    assert_eq!(engine.store().job_credentials(&key).await.unwrap(), None);
    let e = engine.stop_training_job(&caller(), name()).await.unwrap_err();
    assert_eq!(e.code, "ValidationException");
}

#[tokio::test]
async fn a_launch_waiting_in_the_executors_queue_says_why() {
    let (engine, _, executor) = setup(0).await;
    create(&engine, "j", 1, "ml.m5.large").await;
    *executor.waiting.lock().unwrap() = Some("Resources".into());
    engine.tick().await.unwrap();
    engine.tick().await.unwrap();
    let j = job(&engine, "j").await;
    assert_eq!(j.secondary_status, SecondaryStatus::Starting);
    assert_eq!(
        j.transitions.last().unwrap().status_message,
        "Waiting for the cluster to start the hosts: Resources"
    );
    // Once the hosts start, their reports move the job on.
    *executor.waiting.lock().unwrap() = None;
    let report = StatusReport {
        phase: Phase::Downloading,
        message: None,
    };
    engine
        .agent_status("123456789012", "j", "algo-1", &token(&j), report)
        .await
        .unwrap();
    assert_eq!(job(&engine, "j").await.secondary_status, SecondaryStatus::Downloading);
}

#[tokio::test]
async fn a_job_stopped_while_the_executors_queue_holds_it_ends_at_once() {
    let (engine, _, executor) = setup(0).await;
    create(&engine, "j", 1, "ml.m5.large").await;
    *executor.waiting.lock().unwrap() = Some("Priority".into());
    engine.tick().await.unwrap();
    let name = TrainingJobNameRequest {
        training_job_name: "j".into(),
    };
    engine.stop_training_job(&caller(), name).await.unwrap();
    engine.tick().await.unwrap();
    let j = job(&engine, "j").await;
    assert_eq!(
        (j.status, j.secondary_status),
        (TrainingJobStatus::Stopped, SecondaryStatus::Stopped)
    );
    // Its place in the queue is given up, not left to start later.
    assert_eq!(executor.kills.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failure_reported_after_the_executor_ended_the_hosts_takes_the_executors_reason() {
    let (engine, _, executor) = setup(0).await;
    create(&engine, "j", 2, "ml.m5.large").await;
    engine.tick().await.unwrap();
    let j = job(&engine, "j").await;
    let acct = "123456789012";
    let interrupted = |host: &str| DoneReport {
        exit_code: None,
        failure_reason: Some(format!(
            "InternalServerError: the kiln agent of {host} received SIGTERM"
        )),
        model_artifacts: None,
    };
    // The executor has ended the launch (a node failed): the agents saw only a signal.
    *executor.gone.lock().unwrap() = vec![
        ("algo-1".into(), "node2, where algo-2 ran, is DOWN".into()),
        ("algo-2".into(), "node2, where algo-2 ran, is DOWN".into()),
    ];
    for host in ["algo-1", "algo-2"] {
        engine
            .agent_done(acct, "j", host, &token(&j), interrupted(host))
            .await
            .unwrap();
    }
    let j = job(&engine, "j").await;
    assert_eq!(j.status, TrainingJobStatus::Failed);
    assert_eq!(
        j.failure_reason.as_deref(),
        Some(
            "InternalServerError: the counting executor ended algo-1 before it finished: node2, where algo-2 ran, is DOWN."
        )
    );
}

#[tokio::test]
async fn a_failure_while_the_executor_still_runs_the_hosts_keeps_its_reason() {
    let (engine, _, _) = setup(0).await;
    create(&engine, "j", 1, "ml.m5.large").await;
    engine.tick().await.unwrap();
    let j = job(&engine, "j").await;
    let failed = DoneReport {
        exit_code: Some(3),
        failure_reason: Some("AlgorithmError: boom".into()),
        model_artifacts: None,
    };
    engine
        .agent_done("123456789012", "j", "algo-1", &token(&j), failed)
        .await
        .unwrap();
    assert_eq!(
        job(&engine, "j").await.failure_reason.as_deref(),
        Some("AlgorithmError: boom")
    );
}
