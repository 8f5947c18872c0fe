//! The store contract, written once and run against every implementation: SQLite (in memory and a
//! file) and PostgreSQL (a fresh database per test on `KILN_TEST_DATABASE_URL`).

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_api::agent::{DoneReport, Phase};
use kiln_api::shapes::{MetricData, SecondaryStatusTransition, WarmPoolStatus};
use kiln_api::status::{
    SecondaryStatus, StopReason, TrainingJobStatus, TuningJobStatus, TuningStrategy, WarmPoolResourceStatus,
};
use kiln_store::logs::{BatchStart, EventPos, EventRange, FilterQuery, NewEvent, StreamQuery, StreamSelector};
use kiln_store::testing::{PgTestDb, pg_test_db};
use kiln_store::{
    Cursor, CursorValue, CustomMetricPoint, CustomSeries, Db, HostRecord, JobQuery, JobSort, LineSource, LogStore,
    MetricPoint, RunRecord, SqlLogStore, SqlStore, Store, StoreError, TagRow, TrainingJobRow, TuningJobRow,
};

/// One store under test, and what keeps its database alive.
struct Subject {
    store: Arc<dyn Store>,
    logs: Arc<dyn LogStore>,
    _pg: Option<PgTestDb>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_memory() -> Option<Subject> {
    Some(Subject {
        store: Arc::new(SqlStore::in_memory().await.unwrap()),
        logs: Arc::new(SqlLogStore::in_memory().await.unwrap()),
        _pg: None,
        _dir: None,
    })
}

async fn sqlite_file() -> Option<Subject> {
    let dir = tempfile::tempdir().unwrap();
    Some(Subject {
        store: Arc::new(SqlStore::open(&dir.path().join("kiln.db")).await.unwrap()),
        logs: Arc::new(SqlLogStore::open(&dir.path().join("logs.db")).await.unwrap()),
        _pg: None,
        _dir: Some(dir),
    })
}

async fn postgres() -> Option<Subject> {
    let pg = pg_test_db().await?;
    let pool = Db::postgres_pool(&pg.url, 8).await.unwrap();
    Some(Subject {
        store: Arc::new(SqlStore::on(Db::Postgres(pool.clone())).await.unwrap()),
        logs: Arc::new(SqlLogStore::on(Db::Postgres(pool)).await.unwrap()),
        _pg: Some(pg),
        _dir: None,
    })
}

/// Runs each listed test against every implementation.
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite_memory { $(#[tokio::test] async fn $test() { if let Some(s) = super::sqlite_memory().await { super::$test(&s).await } })* }
        mod sqlite_file { $(#[tokio::test] async fn $test() { if let Some(s) = super::sqlite_file().await { super::$test(&s).await } })* }
        mod postgres { $(#[tokio::test] async fn $test() { if let Some(s) = super::postgres().await { super::$test(&s).await } })* }
    };
}

store_suite!(
    create_get_update_delete,
    optimistic_versions,
    typed_columns_round_trip,
    keyset_pages_cover_every_job_once,
    list_filters,
    active_jobs_and_credentials,
    jobs_to_clean,
    tuning_jobs_and_children,
    tags,
    metric_points,
    metric_series_and_custom_points,
    log_groups_streams_events,
    log_filters_across_streams,
    agent_batches_are_stored_once,
);

fn job(account: &str, name: &str, t: f64) -> TrainingJobRow {
    TrainingJobRow {
        account: account.into(),
        name: name.into(),
        arn: format!(
            "arn:aws:sagemaker:us-east-1:{account}:training-job/{}",
            name.to_lowercase()
        ),
        status: TrainingJobStatus::InProgress,
        secondary_status: SecondaryStatus::Starting,
        creation_time: t,
        last_modified_time: t,
        training_start_time: None,
        training_end_time: None,
        failure_reason: None,
        stop_reason: None,
        model_artifacts: None,
        training_time_in_seconds: None,
        billable_time_in_seconds: None,
        warm_pool: None,
        tuning_job_arn: None,
        transitions: vec![SecondaryStatusTransition {
            status: SecondaryStatus::Starting,
            start_time: t,
            end_time: None,
            status_message: "Starting the training job".into(),
        }],
        final_metrics: Vec::new(),
        spec: serde_json::from_value(serde_json::json!({
            "TrainingJobName": name, "RoleArn": "arn:aws:iam::123456789012:role/R",
            "AlgorithmSpecification": {"TrainingImage": "kiln/noop", "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60}
        }))
        .unwrap(),
        run: RunRecord::default(),
        version: 0,
    }
}

fn tuning(account: &str, name: &str, t: f64) -> TuningJobRow {
    TuningJobRow {
        account: account.into(),
        name: name.into(),
        arn: format!(
            "arn:aws:sagemaker:us-east-1:{account}:hyper-parameter-tuning-job/{}",
            name.to_lowercase()
        ),
        status: TuningJobStatus::InProgress,
        strategy: TuningStrategy::Random,
        creation_time: t,
        last_modified_time: t,
        end_time: None,
        failure_reason: None,
        completing: None,
        convergence_detected_time: None,
        launched: 0,
        early_stopped: Vec::new(),
        judged: BTreeMap::new(),
        spec: Default::default(),
        version: 0,
    }
}

fn tag(k: &str, v: &str) -> TagRow {
    TagRow {
        key: k.into(),
        value: v.into(),
    }
}

async fn create_get_update_delete(s: &Subject) {
    let st = &s.store;
    let j = job("111111111111", "Job-A", 1.0);
    st.insert_training_job(&j, &[tag("k", "v")]).await.unwrap();
    // Names are unique case-insensitively within an account, and only there.
    assert!(matches!(
        st.insert_training_job(&job("111111111111", "job-a", 2.0), &[]).await,
        Err(StoreError::AlreadyExists)
    ));
    st.insert_training_job(&job("222222222222", "job-a", 2.0), &[])
        .await
        .unwrap();
    let mut got = st.get_training_job("111111111111", "JOB-a").await.unwrap().unwrap();
    assert_eq!(got, j);
    got.status = TrainingJobStatus::Stopping;
    got.secondary_status = SecondaryStatus::Stopping;
    got.version = st.update_training_job(&got).await.unwrap();
    assert_eq!(got.version, 1);
    assert_eq!(
        st.get_training_job("111111111111", "job-a").await.unwrap().unwrap(),
        got
    );
    assert_eq!(st.list_tags("111111111111", &j.arn, None, 50).await.unwrap().len(), 1);
    st.add_metric_points(
        "111111111111",
        "job-a",
        &[MetricPoint {
            metric: "m".into(),
            value: 1.0,
            timestamp: 1.0,
        }],
        None,
    )
    .await
    .unwrap();
    st.delete_training_job("111111111111", "job-a").await.unwrap();
    assert!(st.get_training_job("111111111111", "job-a").await.unwrap().is_none());
    assert!(st.list_tags("111111111111", &j.arn, None, 50).await.unwrap().is_empty());
    assert!(
        st.metric_points("111111111111", "job-a", None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        st.delete_training_job("111111111111", "job-a").await,
        Err(StoreError::NotFound)
    ));
    assert!(st.get_training_job("222222222222", "job-a").await.unwrap().is_some());
    // An update of a deleted row is NotFound, not a conflict.
    assert!(matches!(st.update_training_job(&got).await, Err(StoreError::NotFound)));
}

async fn optimistic_versions(s: &Subject) {
    let st = &s.store;
    st.insert_training_job(&job("111111111111", "j", 1.0), &[])
        .await
        .unwrap();
    let a = st.get_training_job("111111111111", "j").await.unwrap().unwrap();
    let b = a.clone();
    let mut a2 = a.clone();
    a2.failure_reason = Some("first".into());
    a2.version = st.update_training_job(&a2).await.unwrap();
    // The second writer read version 0: refused, and nothing of it is written.
    let mut b2 = b.clone();
    b2.failure_reason = Some("second".into());
    assert!(matches!(st.update_training_job(&b2).await, Err(StoreError::Conflict)));
    let now = st.get_training_job("111111111111", "j").await.unwrap().unwrap();
    assert_eq!(now.failure_reason.as_deref(), Some("first"));
    // Concurrent writers of one version: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (st, mut row) = (s.store.clone(), now.clone());
        tasks.push(tokio::spawn(async move {
            row.model_artifacts = Some(format!("w{i}"));
            st.update_training_job(&row).await.is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    let t = tuning("111111111111", "t", 1.0);
    st.insert_tuning_job(&t, &[]).await.unwrap();
    let mut t1 = st.get_tuning_job("111111111111", "t").await.unwrap().unwrap();
    t1.launched = 3;
    t1.version = st.update_tuning_job(&t1).await.unwrap();
    let mut stale = t1.clone();
    stale.version = 0;
    assert!(matches!(st.update_tuning_job(&stale).await, Err(StoreError::Conflict)));
}

async fn typed_columns_round_trip(s: &Subject) {
    let st = &s.store;
    let mut j = job("111111111111", "typed", 1.5);
    st.insert_training_job(&j, &[]).await.unwrap();
    j.status = TrainingJobStatus::Stopped;
    j.secondary_status = SecondaryStatus::MaxRuntimeExceeded;
    j.training_start_time = Some(2.25);
    j.training_end_time = Some(9.75);
    j.failure_reason = Some("AlgorithmError: ünïcode ✓ 'quotes' \"and\" %_".into());
    j.stop_reason = Some(StopReason::MaxRuntimeExceeded);
    j.model_artifacts = Some("s3://b/o/typed/output/model.tar.gz".into());
    j.training_time_in_seconds = Some(8);
    j.billable_time_in_seconds = Some(7);
    j.warm_pool = Some(WarmPoolStatus {
        status: WarmPoolResourceStatus::Available,
        resource_retained_billable_time_in_seconds: Some(3),
        reused_by_job: None,
    });
    j.tuning_job_arn = Some("arn:aws:sagemaker:us-east-1:111111111111:hyper-parameter-tuning-job/t".into());
    j.final_metrics = vec![MetricData {
        metric_name: "validation:auc".into(),
        value: 0.875,
        timestamp: 3.0,
    }];
    j.run = RunRecord {
        hosts: vec![HostRecord {
            host: "algo-1".into(),
            log_stream: "typed/algo-1-1".into(),
            phase: Some(Phase::Training),
            done: Some(DoneReport {
                exit_code: Some(0),
                failure_reason: None,
                model_artifacts: None,
            }),
        }],
        agent_token: Some("tok".into()),
        access_key: Some(("KJOBX".into(), "secret".into())),
        launch: Some("{\"pids\":[1]}".into()),
        failing: None,
        killed_at: Some(4.5),
        cleaned: true,
        retries_used: 2,
        interrupting: Some("Interrupted".into()),
        ran_seconds: Some(12.5),
        warm_pool_id: Some("wp-1".into()),
        warm_pool_since: Some(6.25),
        pool_launch: Some("{\"slurm_job_id\":7}".into()),
        rules: vec![kiln_store::RuleRecord {
            profiler: true,
            evaluation: kiln_api::shapes::RuleEvaluation {
                rule_configuration_name: "ProfilerReport".into(),
                rule_evaluation_job_arn: "arn:aws:sagemaker:us-east-1:111111111111:processing-job/typed-pr-1".into(),
                rule_evaluation_status: kiln_api::status::RuleEvaluationStatus::IssuesFound,
                status_details: Some("why".into()),
                last_modified_time: 7.5,
            },
        }],
    };
    j.version = st.update_training_job(&j).await.unwrap();
    assert_eq!(st.get_training_job("111111111111", "typed").await.unwrap().unwrap(), j);
    let mut q = JobQuery::all("111111111111", 10);
    q.warm_pool_status = Some("Available".into());
    assert_eq!(st.list_training_jobs(&q).await.unwrap().len(), 1);
    q.warm_pool_status = Some("Terminated".into());
    assert!(st.list_training_jobs(&q).await.unwrap().is_empty());
}

async fn keyset_pages_cover_every_job_once(s: &Subject) {
    let st = &s.store;
    for i in 0..23 {
        // Equal creation times in pairs exercise the name tie-break.
        let mut j = job("111111111111", &format!("j{i:02}"), f64::from(i / 2));
        if i % 3 == 0 {
            j.status = TrainingJobStatus::Completed;
        }
        st.insert_training_job(&j, &[]).await.unwrap();
    }
    for (sort, descending) in [
        (JobSort::CreationTime, true),
        (JobSort::CreationTime, false),
        (JobSort::Name, false),
        (JobSort::Name, true),
        (JobSort::Status, true),
    ] {
        let mut q = JobQuery::all("111111111111", 5);
        q.sort = sort;
        q.descending = descending;
        let mut seen = Vec::new();
        loop {
            let page = st.list_training_jobs(&q).await.unwrap();
            let Some(last) = page.last() else { break };
            q.after = Some(Cursor {
                value: match sort {
                    JobSort::Name => CursorValue::Text(last.name.to_lowercase()),
                    JobSort::CreationTime => CursorValue::Number(last.creation_time),
                    JobSort::Status => CursorValue::Text(last.status.as_str().into()),
                },
                name_key: last.name.to_lowercase(),
            });
            seen.extend(page.into_iter().map(|j| j.name));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((sorted.len(), seen.len()), (23, 23), "{sort:?} {descending}");
        if sort == JobSort::Name && !descending {
            assert_eq!(seen, sorted);
        }
    }
    // The same for tuning jobs.
    for i in 0..7 {
        st.insert_tuning_job(&tuning("111111111111", &format!("t{i}"), f64::from(i)), &[])
            .await
            .unwrap();
    }
    let mut q = JobQuery::all("111111111111", 3);
    let mut seen = Vec::new();
    loop {
        let page = st.list_tuning_jobs(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        q.after = Some(Cursor {
            value: CursorValue::Number(last.creation_time),
            name_key: last.name.to_lowercase(),
        });
        seen.extend(page.into_iter().map(|j| j.name));
    }
    assert_eq!(seen, ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]);
}

async fn list_filters(s: &Subject) {
    let st = &s.store;
    for (i, name) in ["alpha", "beta", "gamma_1", "gamma%2", "delta"].iter().enumerate() {
        let mut j = job("111111111111", name, i as f64 * 10.0);
        j.last_modified_time = 100.0 + i as f64;
        if i == 1 {
            j.status = TrainingJobStatus::Failed;
        }
        st.insert_training_job(&j, &[]).await.unwrap();
    }
    st.insert_training_job(&job("222222222222", "alpha-other", 5.0), &[])
        .await
        .unwrap();
    let names = |rows: Vec<TrainingJobRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
    let mut q = JobQuery::all("111111111111", 10);
    q.name_contains = Some("AMM".into());
    assert_eq!(names(st.list_training_jobs(&q).await.unwrap()), ["gamma%2", "gamma_1"]);
    // LIKE's wildcards are literal.
    q.name_contains = Some("a_1".into());
    assert_eq!(names(st.list_training_jobs(&q).await.unwrap()), ["gamma_1"]);
    q.name_contains = Some("%".into());
    assert_eq!(names(st.list_training_jobs(&q).await.unwrap()), ["gamma%2"]);
    let mut q = JobQuery::all("111111111111", 10);
    q.status_equals = Some("Failed".into());
    assert_eq!(names(st.list_training_jobs(&q).await.unwrap()), ["beta"]);
    let mut q = JobQuery::all("111111111111", 10);
    q.creation_after = Some(5.0);
    q.creation_before = Some(35.0);
    assert_eq!(
        names(st.list_training_jobs(&q).await.unwrap()),
        ["gamma%2", "gamma_1", "beta"]
    );
    let mut q = JobQuery::all("111111111111", 10);
    q.modified_after = Some(102.5);
    assert_eq!(names(st.list_training_jobs(&q).await.unwrap()), ["delta", "gamma%2"]);
    assert_eq!(
        st.list_training_jobs(&JobQuery::all("222222222222", 10))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn active_jobs_and_credentials(s: &Subject) {
    let st = &s.store;
    let mut a = job("111111111111", "a", 1.0);
    a.run.access_key = Some(("KJOBA".into(), "secret-a".into()));
    st.insert_training_job(&a, &[]).await.unwrap();
    let mut b = job("222222222222", "b", 2.0);
    b.status = TrainingJobStatus::Stopping;
    b.run.access_key = Some(("KJOBB".into(), "secret-b".into()));
    st.insert_training_job(&b, &[]).await.unwrap();
    let mut c = job("111111111111", "c", 3.0);
    c.status = TrainingJobStatus::Completed;
    c.run.access_key = Some(("KJOBC".into(), "secret-c".into()));
    st.insert_training_job(&c, &[]).await.unwrap();
    let active = st
        .training_jobs_with_status(&[TrainingJobStatus::InProgress, TrainingJobStatus::Stopping])
        .await
        .unwrap();
    assert_eq!(active.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(st.training_jobs_with_status(&[]).await.unwrap().is_empty());
    // Warm pools, across accounts.
    use kiln_api::shapes::WarmPoolStatus;
    use kiln_api::status::WarmPoolResourceStatus as Pool;
    let pool = |status| WarmPoolStatus {
        status,
        resource_retained_billable_time_in_seconds: None,
        reused_by_job: None,
    };
    let mut d = job("222222222222", "d", 4.0);
    d.status = TrainingJobStatus::Completed;
    d.warm_pool = Some(pool(Pool::Available));
    st.insert_training_job(&d, &[]).await.unwrap();
    let mut e = job("111111111111", "e", 5.0);
    e.status = TrainingJobStatus::Completed;
    e.warm_pool = Some(pool(Pool::Reused));
    st.insert_training_job(&e, &[]).await.unwrap();
    let available = st.training_jobs_with_warm_pool(Pool::Available).await.unwrap();
    assert_eq!(available.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["d"]);
    assert_eq!(available[0].warm_pool, d.warm_pool);
    assert!(st.training_jobs_with_warm_pool(Pool::InUse).await.unwrap().is_empty());
    assert_eq!(
        st.job_credentials("KJOBA").await.unwrap(),
        Some(("secret-a".into(), "111111111111".into()))
    );
    assert_eq!(
        st.job_credentials("KJOBB").await.unwrap(),
        Some(("secret-b".into(), "222222222222".into()))
    );
    // An ended job's key no longer works, nor does an unknown one.
    assert_eq!(st.job_credentials("KJOBC").await.unwrap(), None);
    assert_eq!(st.job_credentials("KJOBZ").await.unwrap(), None);
}

async fn jobs_to_clean(s: &Subject) {
    let st = &s.store;
    let host = HostRecord {
        host: "algo-1".into(),
        log_stream: "x/algo-1-1".into(),
        phase: None,
        done: None,
    };
    for (name, status, hosts, cleaned) in [
        ("ended-dirty", TrainingJobStatus::Completed, true, false),
        ("ended-clean", TrainingJobStatus::Failed, true, true),
        ("never-placed", TrainingJobStatus::Stopped, false, false),
        ("running", TrainingJobStatus::InProgress, true, false),
    ] {
        let mut j = job("111111111111", name, 1.0);
        j.status = status;
        if hosts {
            j.run.hosts = vec![host.clone()];
        }
        j.run.cleaned = cleaned;
        st.insert_training_job(&j, &[]).await.unwrap();
    }
    let dirty = st.training_jobs_to_clean().await.unwrap();
    assert_eq!(
        dirty.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["ended-dirty"]
    );
}

async fn tuning_jobs_and_children(s: &Subject) {
    let st = &s.store;
    let mut t = tuning("111111111111", "Tune", 1.0);
    t.judged.insert("Tune-001-aaaaaaaa".into(), 3);
    t.early_stopped.push("Tune-001-aaaaaaaa".into());
    st.insert_tuning_job(&t, &[tag("team", "ml")]).await.unwrap();
    assert!(matches!(
        st.insert_tuning_job(&tuning("111111111111", "tune", 2.0), &[]).await,
        Err(StoreError::AlreadyExists)
    ));
    // A tuning job and a training job may share a name: they are different resources.
    st.insert_training_job(&job("111111111111", "tune", 1.0), &[])
        .await
        .unwrap();
    let got = st.get_tuning_job("111111111111", "TUNE").await.unwrap().unwrap();
    assert_eq!(got, t);
    for i in 0..5 {
        let mut c = job("111111111111", &format!("Tune-{i:03}-x"), 2.0 + f64::from(i));
        c.tuning_job_arn = Some(t.arn.clone());
        st.insert_training_job(&c, &[]).await.unwrap();
    }
    let mut q = JobQuery::all("111111111111", 100);
    q.tuning_job_arn = Some(t.arn.clone());
    q.sort = JobSort::Name;
    q.descending = false;
    let children = st.list_training_jobs(&q).await.unwrap();
    assert_eq!(children.len(), 5);
    assert_eq!(children[0].name, "Tune-000-x");
    let mut done = got.clone();
    done.status = TuningJobStatus::Completed;
    done.end_time = Some(9.0);
    done.completing = Some("every training job ran".into());
    done.version = st.update_tuning_job(&done).await.unwrap();
    assert_eq!(st.get_tuning_job("111111111111", "tune").await.unwrap().unwrap(), done);
    assert!(
        st.tuning_jobs_with_status(&[TuningJobStatus::InProgress])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        st.tuning_jobs_with_status(&[TuningJobStatus::Completed])
            .await
            .unwrap()
            .len(),
        1
    );
    let mut q = JobQuery::all("111111111111", 10);
    q.status_equals = Some("Completed".into());
    assert_eq!(st.list_tuning_jobs(&q).await.unwrap().len(), 1);
    st.delete_tuning_job("111111111111", "tune").await.unwrap();
    assert!(st.get_tuning_job("111111111111", "tune").await.unwrap().is_none());
    assert!(st.list_tags("111111111111", &t.arn, None, 10).await.unwrap().is_empty());
    // Its children stay.
    let mut q = JobQuery::all("111111111111", 100);
    q.tuning_job_arn = Some(t.arn.clone());
    assert_eq!(st.list_training_jobs(&q).await.unwrap().len(), 5);
}

async fn tags(s: &Subject) {
    let st = &s.store;
    let arn = "arn:aws:sagemaker:us-east-1:111111111111:training-job/J";
    st.put_tags("111111111111", arn, &[tag("b", "1"), tag("a", "2"), tag("c", "3")])
        .await
        .unwrap();
    st.put_tags("111111111111", arn, &[tag("b", "overwritten")])
        .await
        .unwrap();
    // ARNs match case-insensitively; accounts do not see each other's tags.
    let all = st
        .list_tags("111111111111", &arn.to_lowercase(), None, 10)
        .await
        .unwrap();
    assert_eq!(all, [tag("a", "2"), tag("b", "overwritten"), tag("c", "3")]);
    assert!(st.list_tags("222222222222", arn, None, 10).await.unwrap().is_empty());
    assert_eq!(
        st.list_tags("111111111111", arn, Some("a"), 1).await.unwrap(),
        [tag("b", "overwritten")]
    );
    st.delete_tags("111111111111", arn, &["a".into(), "zz".into()])
        .await
        .unwrap();
    assert_eq!(st.list_tags("111111111111", arn, None, 10).await.unwrap().len(), 2);
    // Every tag of an account at once (Search), by lower-cased ARN.
    let other = "arn:aws:sagemaker:us-east-1:111111111111:training-job/k";
    st.put_tags("111111111111", other, &[tag("x", "9")]).await.unwrap();
    st.put_tags("222222222222", other, &[tag("y", "8")]).await.unwrap();
    let key = arn.to_lowercase();
    assert_eq!(
        st.account_tags("111111111111").await.unwrap(),
        [
            (key.clone(), tag("b", "overwritten")),
            (key, tag("c", "3")),
            (other.to_string(), tag("x", "9"))
        ]
    );
}

async fn metric_points(s: &Subject) {
    let st = &s.store;
    let batch = |start: usize, n: usize| -> Vec<MetricPoint> {
        (start..start + n)
            .map(|i| MetricPoint {
                metric: if i % 2 == 0 { "loss".into() } else { "acc".into() },
                value: i as f64 / 4.0,
                timestamp: i as f64,
            })
            .collect()
    };
    st.add_metric_points("111111111111", "Job", &batch(0, 150), None)
        .await
        .unwrap();
    st.add_metric_points("111111111111", "job", &batch(150, 3), None)
        .await
        .unwrap();
    st.add_metric_points("111111111111", "job", &[], None).await.unwrap();
    let all = st.metric_points("111111111111", "JOB", None).await.unwrap();
    assert_eq!(all, batch(0, 153));
    let loss = st.metric_points("111111111111", "job", Some("loss")).await.unwrap();
    assert_eq!(loss.len(), 77);
    assert!(loss.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    assert!(st.metric_points("222222222222", "job", None).await.unwrap().is_empty());

    // Points read from an agent's numbered lines are added once per (sender, line, metric):
    // a batch sent again, and one overlapping it, add only what is new.
    let lines: Vec<i64> = (0..4).collect();
    let from = |sender| LineSource { sender, lines: &lines };
    let points = batch(0, 4);
    st.add_metric_points("111111111111", "lined", &points, Some(from("agent-a")))
        .await
        .unwrap();
    st.add_metric_points("111111111111", "lined", &points, Some(from("agent-a")))
        .await
        .unwrap();
    let overlapping = [points[3].clone(), batch(4, 1)[0].clone()];
    let at = [3, 4];
    st.add_metric_points(
        "111111111111",
        "lined",
        &overlapping,
        Some(LineSource {
            sender: "agent-a",
            lines: &at,
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        st.metric_points("111111111111", "lined", None).await.unwrap(),
        batch(0, 5)
    );
    // Another agent process (a new attempt) numbers its lines from 0 again: all of them count.
    st.add_metric_points("111111111111", "lined", &points, Some(from("agent-b")))
        .await
        .unwrap();
    assert_eq!(st.metric_points("111111111111", "lined", None).await.unwrap().len(), 9);
}

async fn metric_series_and_custom_points(s: &Subject) {
    let st = &s.store;
    st.insert_training_job(&job("111111111111", "My-Job", 1.0), &[])
        .await
        .unwrap();
    st.insert_training_job(&job("111111111111", "Quiet", 2.0), &[])
        .await
        .unwrap();
    let point = |metric: &str, t: f64| MetricPoint {
        metric: metric.into(),
        value: t,
        timestamp: t,
    };
    st.add_metric_points(
        "111111111111",
        "my-job",
        &[point("loss", 1.0), point("acc", 2.0), point("loss", 3.0)],
        None,
    )
    .await
    .unwrap();
    // Series carry the job's name as created; a job without points has none; accounts are apart.
    assert_eq!(
        st.metric_series("111111111111").await.unwrap(),
        vec![
            ("My-Job".to_string(), "acc".to_string()),
            ("My-Job".to_string(), "loss".to_string())
        ]
    );
    assert!(st.metric_series("222222222222").await.unwrap().is_empty());

    let custom = |ns: &str, metric: &str, dims: &str, value: f64, timestamp: f64| CustomMetricPoint {
        namespace: ns.into(),
        metric: metric.into(),
        dims: dims.into(),
        value,
        timestamp,
    };
    st.put_custom_metric_points(
        "111111111111",
        &[
            custom("App", "m", "[]", 1.0, 10.0),
            custom("App", "m", "[]", 2.0, 5.0),
            custom("App", "m", r#"[["a","b"]]"#, 3.0, 7.0),
            custom("Other", "n", "[]", 4.0, 8.0),
        ],
    )
    .await
    .unwrap();
    st.put_custom_metric_points("111111111111", &[]).await.unwrap();
    st.put_custom_metric_points("222222222222", &[custom("App", "z", "[]", 5.0, 1.0)])
        .await
        .unwrap();
    let series = st.custom_metric_series("111111111111").await.unwrap();
    let mut names: Vec<(&str, &str, &str)> = series
        .iter()
        .map(|s| (s.namespace.as_str(), s.metric.as_str(), s.dims.as_str()))
        .collect();
    // The database's collation orders the dimensions' text; the engine sorts the series itself.
    names.sort();
    assert_eq!(
        names,
        vec![("App", "m", r#"[["a","b"]]"#), ("App", "m", "[]"), ("Other", "n", "[]")]
    );
    let plain = CustomSeries {
        namespace: "App".into(),
        metric: "m".into(),
        dims: "[]".into(),
    };
    assert_eq!(
        st.custom_metric_points("111111111111", &plain, 0.0, 100.0)
            .await
            .unwrap(),
        vec![(5.0, 2.0), (10.0, 1.0)]
    );
    // The range is [start, end).
    assert_eq!(
        st.custom_metric_points("111111111111", &plain, 5.0, 10.0)
            .await
            .unwrap(),
        vec![(5.0, 2.0)]
    );
    assert!(
        st.custom_metric_points("222222222222", &plain, 0.0, 100.0)
            .await
            .unwrap()
            .is_empty()
    );
    // Many points go in chunks.
    let many: Vec<CustomMetricPoint> = (0..250)
        .map(|i| custom("Bulk", "b", "[]", i as f64, i as f64))
        .collect();
    st.put_custom_metric_points("111111111111", &many).await.unwrap();
    let bulk = CustomSeries {
        namespace: "Bulk".into(),
        metric: "b".into(),
        dims: "[]".into(),
    };
    assert_eq!(
        st.custom_metric_points("111111111111", &bulk, 0.0, 1e9)
            .await
            .unwrap()
            .len(),
        250
    );
    // Expiry deletes every account's points older than the cut, and nothing else.
    assert_eq!(st.expire_custom_metric_points(100.0).await.unwrap(), 105);
    assert_eq!(
        st.custom_metric_points("111111111111", &bulk, 0.0, 1e9)
            .await
            .unwrap()
            .len(),
        150
    );
    assert!(
        st.custom_metric_points("111111111111", &plain, 0.0, 100.0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(st.expire_custom_metric_points(100.0).await.unwrap(), 0);
}

async fn log_groups_streams_events(s: &Subject) {
    let l = &s.logs;
    l.create_group("a", "/aws/sagemaker/TrainingJobs", 1).await.unwrap();
    l.create_group("a", "/other", 2).await.unwrap();
    l.create_group("b", "/aws/sagemaker/TrainingJobs", 3).await.unwrap();
    assert!(matches!(
        l.create_group("a", "/other", 4).await,
        Err(StoreError::AlreadyExists)
    ));
    let groups = l.list_groups("a", "/aws", None, 10).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert!(l.group_exists("a", "/other").await.unwrap());
    assert!(!l.group_exists("a", "/none").await.unwrap());
    let g = "/aws/sagemaker/TrainingJobs";
    l.create_stream("a", g, "job/algo-1-1", 5).await.unwrap();
    l.create_stream("a", g, "job/algo-2-1", 5).await.unwrap();
    assert!(matches!(
        l.create_stream("a", "/none", "s", 5).await,
        Err(StoreError::NotFound)
    ));
    let events: Vec<NewEvent> = (0..1000)
        .map(|i| NewEvent {
            timestamp: 100 + i / 3,
            message: format!("line {i} ✓"),
        })
        .collect();
    l.put_events("a", g, "job/algo-1-1", &events, 7).await.unwrap();
    assert!(matches!(
        l.put_events("a", g, "nope", &events[..1], 7).await,
        Err(StoreError::NotFound)
    ));
    let st = l.get_stream("a", g, "job/algo-1-1").await.unwrap().unwrap();
    assert_eq!((st.first_event_time, st.last_event_time), (Some(100), Some(433)));
    assert_eq!(st.last_ingestion_time, Some(7));
    assert!(st.stored_bytes > 0);
    assert_eq!(
        l.list_groups("a", "/aws", None, 10).await.unwrap()[0].stored_bytes,
        st.stored_bytes
    );
    // Forward pages return every event once, in order.
    let mut from = None;
    let mut seen = Vec::new();
    loop {
        let range = EventRange {
            start: None,
            end: None,
            from,
            forward: true,
            limit: 77,
        };
        let page = l.get_events("a", g, "job/algo-1-1", &range).await.unwrap();
        let Some(last) = page.last() else { break };
        from = Some(EventPos {
            timestamp: last.timestamp,
            seq: last.seq,
        });
        seen.extend(page.into_iter().map(|e| e.message));
    }
    assert_eq!(seen, events.iter().map(|e| e.message.clone()).collect::<Vec<_>>());
    // The tail, ascending.
    let range = EventRange {
        start: None,
        end: None,
        from: None,
        forward: false,
        limit: 2,
    };
    let tail = l.get_events("a", g, "job/algo-1-1", &range).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["line 998 ✓", "line 999 ✓"]
    );
    let q = StreamQuery {
        prefix: "job/algo-".into(),
        limit: 10,
        ..Default::default()
    };
    let streams = l.list_streams("a", g, &q).await.unwrap();
    assert_eq!(streams.len(), 2);
    let q = StreamQuery {
        by_last_event: true,
        descending: true,
        limit: 1,
        ..Default::default()
    };
    assert_eq!(l.list_streams("a", g, &q).await.unwrap()[0].name, "job/algo-1-1");
    assert!(l.get_stream("b", g, "job/algo-1-1").await.unwrap().is_none());
}

async fn log_filters_across_streams(s: &Subject) {
    let l = &s.logs;
    let g = "/g";
    l.create_group("a", g, 1).await.unwrap();
    for s in ["x/1", "x/2", "y/1"] {
        l.create_stream("a", g, s, 1).await.unwrap();
        let ev: Vec<NewEvent> = (0..10)
            .map(|i| NewEvent {
                timestamp: i * 10 + i64::from(s.as_bytes()[2] - b'0'),
                message: format!("{s} {i}"),
            })
            .collect();
        l.put_events("a", g, s, &ev, 2).await.unwrap();
    }
    let q = |streams, after| FilterQuery {
        streams,
        start: Some(10),
        end: Some(50),
        after,
        limit: 100,
    };
    let prefix = l
        .filter_events("a", g, &q(StreamSelector::Prefix("x/".into()), None))
        .await
        .unwrap();
    assert_eq!(prefix.len(), 8);
    assert!(
        prefix
            .windows(2)
            .all(|w| (w[0].timestamp, w[0].seq) < (w[1].timestamp, w[1].seq))
    );
    let named = l
        .filter_events("a", g, &q(StreamSelector::Names(vec!["y/1".into()]), None))
        .await
        .unwrap();
    assert_eq!(named.len(), 4);
    let all = l.filter_events("a", g, &q(StreamSelector::All, None)).await.unwrap();
    assert_eq!(all.len(), 12);
    let after = EventPos {
        timestamp: all[5].timestamp,
        seq: all[5].seq,
    };
    let rest = l
        .filter_events("a", g, &q(StreamSelector::All, Some(after)))
        .await
        .unwrap();
    assert_eq!(rest, all[6..].to_vec());
    assert!(
        l.filter_events("a", g, &q(StreamSelector::Names(vec![]), None))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn agent_batches_are_stored_once(s: &Subject) {
    let l = &s.logs;
    let g = "/aws/sagemaker/TrainingJobs";
    l.create_group("a", g, 1).await.unwrap();
    l.create_stream("a", g, "job/algo-1-1", 1).await.unwrap();
    let events = |from: i64, n: i64| -> Vec<NewEvent> {
        (from..from + n)
            .map(|i| NewEvent {
                timestamp: 100 + i,
                message: format!("line {i}"),
            })
            .collect()
    };
    let start = |sender, first| BatchStart { sender, first };
    let put = |st: BatchStart<'static>, ev: Vec<NewEvent>| async move {
        l.put_batch("a", g, "job/algo-1-1", st, &ev, 5).await.unwrap()
    };
    assert_eq!(put(start("agent-1", 0), events(0, 3)).await, 0);
    // Re-sent after a lost reply: nothing stored again.
    assert_eq!(put(start("agent-1", 0), events(0, 3)).await, 3);
    // Overlapping: only the new lines.
    assert_eq!(put(start("agent-1", 2), events(2, 3)).await, 1);
    // Another agent (a relaunched one) numbers from 0 again: stored.
    assert_eq!(put(start("agent-2", 0), events(5, 2)).await, 0);
    assert!(matches!(
        l.put_batch("a", g, "nope", start("agent-1", 0), &events(0, 1), 5).await,
        Err(StoreError::NotFound)
    ));
    let range = EventRange {
        start: None,
        end: None,
        from: None,
        forward: true,
        limit: 100,
    };
    let got: Vec<String> = l
        .get_events("a", g, "job/algo-1-1", &range)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_eq!(got, (0..7).map(|i| format!("line {i}")).collect::<Vec<_>>());
    let st = l.get_stream("a", g, "job/algo-1-1").await.unwrap().unwrap();
    assert_eq!((st.first_event_time, st.last_event_time), (Some(100), Some(106)));
    assert_eq!(
        st.stored_bytes,
        (0..7).map(|i| format!("line {i}").len() as i64 + 26).sum::<i64>()
    );
}
