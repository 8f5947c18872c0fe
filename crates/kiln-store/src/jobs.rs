//! [`Store`] in SQL: training and tuning jobs, tags and metric points, on SQLite or PostgreSQL with
//! the same statements. Scalars the engine filters or reads on their own are columns; lists
//! (transitions, final metrics, hosts) and the request are JSON documents in text columns.

use std::path::Path;

use async_trait::async_trait;
use kiln_api::status::{TrainingJobStatus, TuningJobStatus, WarmPoolResourceStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::AssertSqlSafe;

use crate::db::{BeginWrite, Bind, Db, Get, Migrations, Sql};
use crate::{
    CursorValue, CustomMetricPoint, CustomSeries, JobQuery, JobSort, LineSource, MetricPoint, Store, StoreError,
    StoreResult, TagRow, TrainingJobRow, TuningJobRow, fetch_sql, with_db,
};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The job tables' migrations.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
    postgres_table: "_kiln_jobs_migrations",
};

/// A [`Store`] on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    db: Db,
}

const TRAINING_COLUMNS: &str = "account, name, arn, status, secondary_status, creation_time, last_modified_time, \
     training_start_time, training_end_time, failure_reason, stop_reason, model_artifacts, training_time_in_seconds, \
     billable_time_in_seconds, warm_pool, tuning_job_arn, spec, transitions, final_metrics, run, version";

const TUNING_COLUMNS: &str = "account, name, arn, status, strategy, creation_time, last_modified_time, end_time, \
     failure_reason, completing, convergence_detected_time, launched, early_stopped, judged, spec, version";

fn json<T: Serialize>(value: &T) -> String {
    // The row types serialise infallibly (strings, numbers, maps with string keys).
    serde_json::to_string(value).unwrap_or_default()
}

fn parse_json<T: DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn parse_enum<T: std::str::FromStr<Err = kiln_api::status::UnknownValue>>(text: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|e: kiln_api::status::UnknownValue| StoreError::Corrupt(e.to_string()))
}

fn training_from_row(r: &impl Get) -> StoreResult<TrainingJobRow> {
    let name = r.text("name")?;
    let what = |col: &str| format!("training job '{name}' column {col}");
    Ok(TrainingJobRow {
        account: r.text("account")?,
        arn: r.text("arn")?,
        status: parse_enum(&r.text("status")?)?,
        secondary_status: parse_enum(&r.text("secondary_status")?)?,
        creation_time: r.real("creation_time")?,
        last_modified_time: r.real("last_modified_time")?,
        training_start_time: r.opt_real("training_start_time")?,
        training_end_time: r.opt_real("training_end_time")?,
        failure_reason: r.opt_text("failure_reason")?,
        stop_reason: r.opt_text("stop_reason")?.map(|s| parse_enum(&s)).transpose()?,
        model_artifacts: r.opt_text("model_artifacts")?,
        training_time_in_seconds: r.opt_int("training_time_in_seconds")?,
        billable_time_in_seconds: r.opt_int("billable_time_in_seconds")?,
        warm_pool: r
            .opt_text("warm_pool")?
            .map(|t| parse_json(&t, &what("warm_pool")))
            .transpose()?,
        tuning_job_arn: r.opt_text("tuning_job_arn")?,
        spec: parse_json(&r.text("spec")?, &what("spec"))?,
        transitions: parse_json(&r.text("transitions")?, &what("transitions"))?,
        final_metrics: parse_json(&r.text("final_metrics")?, &what("final_metrics"))?,
        run: parse_json(&r.text("run")?, &what("run"))?,
        version: r.int("version")?,
        name,
    })
}

fn tuning_from_row(r: &impl Get) -> StoreResult<TuningJobRow> {
    let name = r.text("name")?;
    let what = |col: &str| format!("tuning job '{name}' column {col}");
    Ok(TuningJobRow {
        account: r.text("account")?,
        arn: r.text("arn")?,
        status: parse_enum(&r.text("status")?)?,
        strategy: parse_enum(&r.text("strategy")?)?,
        creation_time: r.real("creation_time")?,
        last_modified_time: r.real("last_modified_time")?,
        end_time: r.opt_real("end_time")?,
        failure_reason: r.opt_text("failure_reason")?,
        completing: r.opt_text("completing")?,
        convergence_detected_time: r.opt_real("convergence_detected_time")?,
        launched: r.int("launched")?,
        early_stopped: parse_json(&r.text("early_stopped")?, &what("early_stopped"))?,
        judged: parse_json(&r.text("judged")?, &what("judged"))?,
        spec: parse_json(&r.text("spec")?, &what("spec"))?,
        version: r.int("version")?,
        name,
    })
}

/// The values of a training job's columns, in the order of [`TRAINING_WRITE`].
struct TrainingValues {
    status: &'static str,
    secondary_status: &'static str,
    last_modified_time: f64,
    training_start_time: Option<f64>,
    training_end_time: Option<f64>,
    failure_reason: Option<String>,
    stop_reason: Option<&'static str>,
    model_artifacts: Option<String>,
    training_time_in_seconds: Option<i64>,
    billable_time_in_seconds: Option<i64>,
    warm_pool_status: Option<&'static str>,
    warm_pool: Option<String>,
    tuning_job_arn: Option<String>,
    access_key_id: Option<String>,
    unclean: i64,
    spec: String,
    transitions: String,
    final_metrics: String,
    run: String,
}

impl TrainingValues {
    fn of(j: &TrainingJobRow) -> Self {
        Self {
            status: j.status.as_str(),
            secondary_status: j.secondary_status.as_str(),
            last_modified_time: j.last_modified_time,
            training_start_time: j.training_start_time,
            training_end_time: j.training_end_time,
            failure_reason: j.failure_reason.clone(),
            stop_reason: j.stop_reason.map(|s| s.as_str()),
            model_artifacts: j.model_artifacts.clone(),
            training_time_in_seconds: j.training_time_in_seconds,
            billable_time_in_seconds: j.billable_time_in_seconds,
            warm_pool_status: j.warm_pool.as_ref().map(|w| w.status.as_str()),
            warm_pool: j.warm_pool.as_ref().map(json),
            tuning_job_arn: j.tuning_job_arn.clone(),
            access_key_id: j.run.access_key.as_ref().map(|(id, _)| id.clone()),
            unclean: i64::from(j.status.is_terminal() && !j.run.hosts.is_empty() && !j.run.cleaned),
            spec: json(&j.spec),
            transitions: json(&j.transitions),
            final_metrics: json(&j.final_metrics),
            run: json(&j.run),
        }
    }
}

/// Binds [`TrainingValues`] in order onto a query.
macro_rules! bind_training {
    ($q:expr, $v:expr) => {
        $q.bind($v.status)
            .bind($v.secondary_status)
            .bind($v.last_modified_time)
            .bind($v.training_start_time)
            .bind($v.training_end_time)
            .bind($v.failure_reason)
            .bind($v.stop_reason)
            .bind($v.model_artifacts)
            .bind($v.training_time_in_seconds)
            .bind($v.billable_time_in_seconds)
            .bind($v.warm_pool_status)
            .bind($v.warm_pool)
            .bind($v.tuning_job_arn)
            .bind($v.access_key_id)
            .bind($v.unclean)
            .bind($v.spec)
            .bind($v.transitions)
            .bind($v.final_metrics)
            .bind($v.run)
    };
}

/// Columns of [`TrainingValues`], `$1 … $19`.
const TRAINING_WRITE: &str = "status, secondary_status, last_modified_time, training_start_time, training_end_time, \
     failure_reason, stop_reason, model_artifacts, training_time_in_seconds, billable_time_in_seconds, \
     warm_pool_status, warm_pool, tuning_job_arn, access_key_id, unclean, spec, transitions, final_metrics, run";

struct TuningValues {
    status: &'static str,
    strategy: &'static str,
    last_modified_time: f64,
    end_time: Option<f64>,
    failure_reason: Option<String>,
    completing: Option<String>,
    convergence_detected_time: Option<f64>,
    launched: i64,
    early_stopped: String,
    judged: String,
    spec: String,
}

impl TuningValues {
    fn of(j: &TuningJobRow) -> Self {
        Self {
            status: j.status.as_str(),
            strategy: j.strategy.as_str(),
            last_modified_time: j.last_modified_time,
            end_time: j.end_time,
            failure_reason: j.failure_reason.clone(),
            completing: j.completing.clone(),
            convergence_detected_time: j.convergence_detected_time,
            launched: j.launched,
            early_stopped: json(&j.early_stopped),
            judged: json(&j.judged),
            spec: json(&j.spec),
        }
    }
}

macro_rules! bind_tuning {
    ($q:expr, $v:expr) => {
        $q.bind($v.status)
            .bind($v.strategy)
            .bind($v.last_modified_time)
            .bind($v.end_time)
            .bind($v.failure_reason)
            .bind($v.completing)
            .bind($v.convergence_detected_time)
            .bind($v.launched)
            .bind($v.early_stopped)
            .bind($v.judged)
            .bind($v.spec)
    };
}

/// Columns of [`TuningValues`], `$1 … $11`.
const TUNING_WRITE: &str = "status, strategy, last_modified_time, end_time, failure_reason, completing, \
     convergence_detected_time, launched, early_stopped, judged, spec";

/// `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `col = $from, …` for the columns of a write list.
fn assignments(columns: &str, from: usize) -> String {
    columns
        .split(',')
        .enumerate()
        .map(|(i, c)| format!("{} = ${}", c.trim(), from + i))
        .collect::<Vec<_>>()
        .join(", ")
}

const TRAINING: &str = "training_jobs";
const TUNING: &str = "tuning_jobs";

impl SqlStore {
    /// Opens (creating if needed) a SQLite file and applies migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open_sqlite(Some(path), true, &MIGRATIONS).await?,
        })
    }

    /// An in-memory SQLite database (tests).
    pub async fn in_memory() -> StoreResult<Self> {
        Ok(Self {
            db: Db::open_sqlite(None, true, &MIGRATIONS).await?,
        })
    }

    /// The store on a database already connected; applies the job tables' migrations (PostgreSQL;
    /// a SQLite pool must have been opened with [`MIGRATIONS`]).
    pub async fn on(db: Db) -> StoreResult<Self> {
        db.migrate_postgres(&MIGRATIONS).await?;
        Ok(Self { db })
    }

    /// The migrations of the job tables.
    pub fn migrations() -> &'static Migrations {
        &MIGRATIONS
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn version_conflict(&self, table: &str, account: &str, name: &str) -> StoreError {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE account = $1 AND name_key = $2");
        let found: Result<i64, sqlx::Error> = with_db!(&self.db, pool => {
            sqlx::query_scalar(AssertSqlSafe(sql))
                .bind(account)
                .bind(name.to_lowercase())
                .fetch_one(pool)
                .await
        });
        match found {
            Ok(0) => StoreError::NotFound,
            Ok(_) => StoreError::Conflict,
            Err(e) => e.into(),
        }
    }

    async fn delete_row(&self, table: &str, account: &str, name: &str) -> StoreResult<()> {
        let key = name.to_lowercase();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let arn: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT arn FROM {table} WHERE account = $1 AND name_key = $2"
            )))
            .bind(account)
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(arn) = arn else {
                return Err(StoreError::NotFound);
            };
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE account = $1 AND name_key = $2")))
                .bind(account)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM tags WHERE account = $1 AND resource_key = $2")
                .bind(account)
                .bind(arn.to_lowercase())
                .execute(&mut *tx)
                .await?;
            if table == TRAINING {
                sqlx::query("DELETE FROM metric_points WHERE account = $1 AND name_key = $2")
                    .bind(account)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The query of a listing (filters, keyset cursor, order, limit).
    fn list_sql(table: &str, columns: &str, q: &JobQuery) -> Sql {
        let mut sql = Sql::new(
            &format!("SELECT {columns} FROM {table} WHERE account = $1"),
            vec![Bind::Text(q.account.clone())],
        );
        if let Some(s) = &q.name_contains {
            // LIKE's wildcards in the name are matched literally.
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            sql.push(
                " AND name_key LIKE $? ESCAPE '\\'",
                vec![Bind::Text(format!("%{escaped}%"))],
            );
        }
        if let Some(s) = &q.status_equals {
            sql.push(" AND status = $?", vec![Bind::Text(s.clone())]);
        }
        if let Some(s) = &q.warm_pool_status {
            sql.push(" AND warm_pool_status = $?", vec![Bind::Text(s.clone())]);
        }
        if let Some(s) = &q.tuning_job_arn {
            sql.push(" AND tuning_job_arn = $?", vec![Bind::Text(s.clone())]);
        }
        for (t, clause) in [
            (q.creation_after, " AND creation_time > $?"),
            (q.creation_before, " AND creation_time < $?"),
            (q.modified_after, " AND last_modified_time > $?"),
            (q.modified_before, " AND last_modified_time < $?"),
        ] {
            if let Some(t) = t {
                sql.push(clause, vec![Bind::Real(t)]);
            }
        }
        let column = match q.sort {
            JobSort::Name => "name_key",
            JobSort::CreationTime => "creation_time",
            JobSort::Status => "status",
        };
        let (cmp, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(c) = &q.after {
            if q.sort == JobSort::Name {
                sql.push(&format!(" AND name_key {cmp} $?"), vec![Bind::Text(c.name_key.clone())]);
            } else {
                let v = match &c.value {
                    CursorValue::Text(s) => Bind::Text(s.clone()),
                    CursorValue::Number(n) => Bind::Real(*n),
                };
                sql.push(
                    &format!(" AND ({column} {cmp} $? OR ({column} = $? AND name_key {cmp} $?))"),
                    vec![v.clone(), v, Bind::Text(c.name_key.clone())],
                );
            }
        }
        sql.push(
            &format!(" ORDER BY {column} {order}, name_key {order} LIMIT {}", q.limit),
            vec![],
        );
        sql
    }

    fn status_sql(table: &str, columns: &str, statuses: &[&str]) -> Sql {
        let mut sql = Sql::new(&format!("SELECT {columns} FROM {table} WHERE status IN ("), vec![]);
        let marks = vec!["$?"; statuses.len()].join(", ");
        sql.push(&marks, statuses.iter().map(|s| Bind::Text(s.to_string())).collect());
        sql.push(") ORDER BY creation_time, account, name_key", vec![]);
        sql
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn insert_training_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()> {
        let v = TrainingValues::of(job);
        let sql = format!(
            "INSERT INTO {TRAINING} ({TRAINING_WRITE}, account, name_key, name, arn, creation_time, version) \
             VALUES ({})",
            placeholders(1, 25)
        );
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            bind_training!(sqlx::query(AssertSqlSafe(sql)), v)
                .bind(&job.account)
                .bind(job.name.to_lowercase())
                .bind(&job.name)
                .bind(&job.arn)
                .bind(job.creation_time)
                .bind(job.version)
                .execute(&mut *tx)
                .await?;
            for t in tags {
                sqlx::query(UPSERT_TAG)
                    .bind(&job.account)
                    .bind(job.arn.to_lowercase())
                    .bind(&t.key)
                    .bind(&t.value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn get_training_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>> {
        let sql = format!("SELECT {TRAINING_COLUMNS} FROM {TRAINING} WHERE account = $1 AND name_key = $2");
        with_db!(&self.db, pool => {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(account)
                .bind(name.to_lowercase())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(training_from_row).transpose()
        })
    }

    async fn update_training_job(&self, job: &TrainingJobRow) -> StoreResult<i64> {
        let v = TrainingValues::of(job);
        let next = job.version + 1;
        let sql = format!(
            "UPDATE {TRAINING} SET {}, version = $20 WHERE account = $21 AND name_key = $22 AND version = $23",
            assignments(TRAINING_WRITE, 1)
        );
        let done = with_db!(&self.db, pool => {
            bind_training!(sqlx::query(AssertSqlSafe(sql)), v)
                .bind(next)
                .bind(&job.account)
                .bind(job.name.to_lowercase())
                .bind(job.version)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 1 {
            return Ok(next);
        }
        Err(self.version_conflict(TRAINING, &job.account, &job.name).await)
    }

    async fn delete_training_job(&self, account: &str, name: &str) -> StoreResult<()> {
        self.delete_row(TRAINING, account, name).await
    }

    async fn list_training_jobs(&self, q: &JobQuery) -> StoreResult<Vec<TrainingJobRow>> {
        let sql = Self::list_sql(TRAINING, TRAINING_COLUMNS, q);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter().map(training_from_row).collect()
        })
    }

    async fn training_jobs_with_status(&self, statuses: &[TrainingJobStatus]) -> StoreResult<Vec<TrainingJobRow>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let sql = Self::status_sql(TRAINING, TRAINING_COLUMNS, &names);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter().map(training_from_row).collect()
        })
    }

    async fn count_training_jobs(&self) -> StoreResult<Vec<(TrainingJobStatus, i64)>> {
        let sql = format!("SELECT status, CAST(COUNT(*) AS BIGINT) AS n FROM {TRAINING} GROUP BY status");
        with_db!(&self.db, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
            let mut out = Vec::new();
            for r in &rows {
                let name = Get::text(r, "status")?;
                let status: TrainingJobStatus = name
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("training job status '{name}'")))?;
                out.push((status, Get::int(r, "n")?));
            }
            Ok(out)
        })
    }

    async fn training_jobs_with_warm_pool(&self, status: WarmPoolResourceStatus) -> StoreResult<Vec<TrainingJobRow>> {
        let sql = format!(
            "SELECT {TRAINING_COLUMNS} FROM {TRAINING} WHERE warm_pool_status = $1 ORDER BY creation_time, account, name_key"
        );
        with_db!(&self.db, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql)).bind(status.as_str()).fetch_all(pool).await?;
            rows.iter().map(training_from_row).collect()
        })
    }

    async fn training_jobs_to_clean(&self) -> StoreResult<Vec<TrainingJobRow>> {
        let sql = format!("SELECT {TRAINING_COLUMNS} FROM {TRAINING} WHERE unclean = 1 ORDER BY last_modified_time");
        with_db!(&self.db, pool => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter().map(training_from_row).collect()
        })
    }

    async fn job_credentials(&self, access_key_id: &str) -> StoreResult<Option<(String, String)>> {
        let sql = "SELECT account, run FROM training_jobs WHERE access_key_id = $1 \
                   AND status IN ('InProgress', 'Stopping')";
        let found: Option<(String, String)> = with_db!(&self.db, pool => {
            let row = sqlx::query(sql).bind(access_key_id).fetch_optional(pool).await?;
            row.map(|r| Ok::<_, sqlx::Error>((Get::text(&r, "account")?, Get::text(&r, "run")?)))
                .transpose()?
        });
        let Some((account, run)) = found else {
            return Ok(None);
        };
        let run: crate::RunRecord = parse_json(&run, "run of a job with an access key")?;
        Ok(run
            .access_key
            .filter(|(id, _)| id == access_key_id)
            .map(|(_, secret)| (secret, account)))
    }

    async fn insert_tuning_job(&self, job: &TuningJobRow, tags: &[TagRow]) -> StoreResult<()> {
        let v = TuningValues::of(job);
        let sql = format!(
            "INSERT INTO {TUNING} ({TUNING_WRITE}, account, name_key, name, arn, creation_time, version) VALUES ({})",
            placeholders(1, 17)
        );
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            bind_tuning!(sqlx::query(AssertSqlSafe(sql)), v)
                .bind(&job.account)
                .bind(job.name.to_lowercase())
                .bind(&job.name)
                .bind(&job.arn)
                .bind(job.creation_time)
                .bind(job.version)
                .execute(&mut *tx)
                .await?;
            for t in tags {
                sqlx::query(UPSERT_TAG)
                    .bind(&job.account)
                    .bind(job.arn.to_lowercase())
                    .bind(&t.key)
                    .bind(&t.value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn get_tuning_job(&self, account: &str, name: &str) -> StoreResult<Option<TuningJobRow>> {
        let sql = format!("SELECT {TUNING_COLUMNS} FROM {TUNING} WHERE account = $1 AND name_key = $2");
        with_db!(&self.db, pool => {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(account)
                .bind(name.to_lowercase())
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(tuning_from_row).transpose()
        })
    }

    async fn update_tuning_job(&self, job: &TuningJobRow) -> StoreResult<i64> {
        let v = TuningValues::of(job);
        let next = job.version + 1;
        let sql = format!(
            "UPDATE {TUNING} SET {}, version = $12 WHERE account = $13 AND name_key = $14 AND version = $15",
            assignments(TUNING_WRITE, 1)
        );
        let done = with_db!(&self.db, pool => {
            bind_tuning!(sqlx::query(AssertSqlSafe(sql)), v)
                .bind(next)
                .bind(&job.account)
                .bind(job.name.to_lowercase())
                .bind(job.version)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 1 {
            return Ok(next);
        }
        Err(self.version_conflict(TUNING, &job.account, &job.name).await)
    }

    async fn delete_tuning_job(&self, account: &str, name: &str) -> StoreResult<()> {
        self.delete_row(TUNING, account, name).await
    }

    async fn list_tuning_jobs(&self, q: &JobQuery) -> StoreResult<Vec<TuningJobRow>> {
        let mut q = q.clone();
        // Tuning jobs have no warm pools and no parent.
        q.warm_pool_status = None;
        q.tuning_job_arn = None;
        let sql = Self::list_sql(TUNING, TUNING_COLUMNS, &q);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter().map(tuning_from_row).collect()
        })
    }

    async fn tuning_jobs_with_status(&self, statuses: &[TuningJobStatus]) -> StoreResult<Vec<TuningJobRow>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let sql = Self::status_sql(TUNING, TUNING_COLUMNS, &names);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter().map(tuning_from_row).collect()
        })
    }

    async fn add_metric_points(
        &self,
        account: &str,
        job: &str,
        points: &[MetricPoint],
        source: Option<LineSource<'_>>,
    ) -> StoreResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        let key = job.to_lowercase();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let next: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM metric_points WHERE account = $1 AND name_key = $2",
            )
            .bind(account)
            .bind(&key)
            .fetch_one(&mut *tx)
            .await?;
            // Multi-row inserts: 100 points (800 parameters) per statement. A point of a line
            // already stored meets the unique index on (account, name_key, sender, line, metric)
            // and is skipped; points without a source have NULL lines, which never conflict.
            for (c, chunk) in points.chunks(100).enumerate() {
                let values: Vec<String> = (0..chunk.len()).map(|i| format!("({})", placeholders(i * 8 + 1, 8))).collect();
                let text = format!(
                    "INSERT INTO metric_points (account, name_key, metric, value, ts, seq, sender, line) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    values.join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(text));
                for (i, p) in chunk.iter().enumerate() {
                    let n = c * 100 + i;
                    q = q
                        .bind(account)
                        .bind(&key)
                        .bind(&p.metric)
                        .bind(p.value)
                        .bind(p.timestamp)
                        .bind(next + 1 + n as i64)
                        .bind(source.map(|s| s.sender))
                        .bind(source.and_then(|s| s.lines.get(n).copied()));
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn metric_points(&self, account: &str, job: &str, metric: Option<&str>) -> StoreResult<Vec<MetricPoint>> {
        let mut sql = Sql::new(
            "SELECT metric, value, ts FROM metric_points WHERE account = $1 AND name_key = $2",
            vec![Bind::Text(account.into()), Bind::Text(job.to_lowercase())],
        );
        if let Some(m) = metric {
            sql.push(" AND metric = $?", vec![Bind::Text(m.into())]);
        }
        sql.push(" ORDER BY seq", vec![]);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter()
                .map(|r| {
                    Ok(MetricPoint {
                        metric: Get::text(r, "metric")?,
                        value: Get::real(r, "value")?,
                        timestamp: Get::real(r, "ts")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn metric_series(&self, account: &str) -> StoreResult<Vec<(String, String)>> {
        let sql = Sql::new(
            "SELECT DISTINCT j.name AS name, m.metric AS metric FROM metric_points m \
             JOIN training_jobs j ON j.account = m.account AND j.name_key = m.name_key \
             WHERE m.account = $1 ORDER BY name, metric",
            vec![Bind::Text(account.into())],
        );
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter()
                .map(|r| Ok((Get::text(r, "name")?, Get::text(r, "metric")?)))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn put_custom_metric_points(&self, account: &str, points: &[CustomMetricPoint]) -> StoreResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            for chunk in points.chunks(100) {
                let values: Vec<String> = (0..chunk.len()).map(|i| format!("({})", placeholders(i * 6 + 1, 6))).collect();
                let text = format!(
                    "INSERT INTO custom_metric_points (account, namespace, metric, dims, value, ts) VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(text));
                for p in chunk {
                    q = q
                        .bind(account)
                        .bind(&p.namespace)
                        .bind(&p.metric)
                        .bind(&p.dims)
                        .bind(p.value)
                        .bind(p.timestamp);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn expire_custom_metric_points(&self, before: f64) -> StoreResult<u64> {
        let gone = with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM custom_metric_points WHERE ts < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(gone)
    }

    async fn custom_metric_series(&self, account: &str) -> StoreResult<Vec<CustomSeries>> {
        let sql = Sql::new(
            "SELECT DISTINCT namespace, metric, dims FROM custom_metric_points WHERE account = $1 \
             ORDER BY namespace, metric, dims",
            vec![Bind::Text(account.into())],
        );
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter()
                .map(|r| {
                    Ok(CustomSeries {
                        namespace: Get::text(r, "namespace")?,
                        metric: Get::text(r, "metric")?,
                        dims: Get::text(r, "dims")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn custom_metric_points(
        &self,
        account: &str,
        series: &CustomSeries,
        start: f64,
        end: f64,
    ) -> StoreResult<Vec<(f64, f64)>> {
        let sql = Sql::new(
            "SELECT ts, value FROM custom_metric_points WHERE account = $1 AND namespace = $2 AND metric = $3 \
             AND dims = $4 AND ts >= $5 AND ts < $6 ORDER BY ts",
            vec![
                Bind::Text(account.into()),
                Bind::Text(series.namespace.clone()),
                Bind::Text(series.metric.clone()),
                Bind::Text(series.dims.clone()),
                Bind::Real(start),
                Bind::Real(end),
            ],
        );
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter()
                .map(|r| Ok((Get::real(r, "ts")?, Get::real(r, "value")?)))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn put_tags(&self, account: &str, resource_arn: &str, tags: &[TagRow]) -> StoreResult<()> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            for t in tags {
                sqlx::query(UPSERT_TAG)
                    .bind(account)
                    .bind(resource_arn.to_lowercase())
                    .bind(&t.key)
                    .bind(&t.value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn account_tags(&self, account: &str) -> StoreResult<Vec<(String, TagRow)>> {
        let sql = "SELECT resource_key, tag_key, tag_value FROM tags WHERE account = $1 ORDER BY resource_key, tag_key";
        with_db!(&self.db, pool => {
            let rows = sqlx::query(sql).bind(account).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        Get::text(r, "resource_key")?,
                        TagRow {
                            key: Get::text(r, "tag_key")?,
                            value: Get::text(r, "tag_value")?,
                        },
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn list_tags(
        &self,
        account: &str,
        resource_arn: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<TagRow>> {
        let sql = "SELECT tag_key, tag_value FROM tags WHERE account = $1 AND resource_key = $2 AND tag_key > $3 \
                   ORDER BY tag_key LIMIT $4";
        with_db!(&self.db, pool => {
            let rows = sqlx::query(sql)
                .bind(account)
                .bind(resource_arn.to_lowercase())
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(TagRow {
                        key: Get::text(r, "tag_key")?,
                        value: Get::text(r, "tag_value")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn delete_tags(&self, account: &str, resource_arn: &str, keys: &[String]) -> StoreResult<()> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            for k in keys {
                sqlx::query("DELETE FROM tags WHERE account = $1 AND resource_key = $2 AND tag_key = $3")
                    .bind(account)
                    .bind(resource_arn.to_lowercase())
                    .bind(k)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

const UPSERT_TAG: &str = "INSERT INTO tags (account, resource_key, tag_key, tag_value) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (account, resource_key, tag_key) DO UPDATE SET tag_value = excluded.tag_value";

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::status::{SecondaryStatus, StopReason, TuningStrategy};
    use sqlx::Connection;

    /// A database written by the version before typed rows (migrations 0001-0003) opens with its
    /// jobs carried over.
    #[tokio::test]
    async fn rows_of_the_json_era_are_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.db");
        let old = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(SQLITE.migrations[..3].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        old.run(&mut conn).await.unwrap();
        let spec = r#"{"TrainingJobName":"Old","RoleArn":"arn:aws:iam::123456789012:role/R","OutputDataConfig":{"S3OutputPath":"s3://b/o"}}"#;
        let state = r#"{"SecondaryStatusTransitions":[{"Status":"Starting","StartTime":1.0,"StatusMessage":"s"},
            {"Status":"Stopping","StartTime":2.0,"StatusMessage":"t"}],"FailureReason":"why","TrainingStartTime":1.5,
            "FinalMetricDataList":[{"MetricName":"m","Value":0.5,"Timestamp":2.0}],
            "Run":{"hosts":[{"host":"algo-1","handle":{"pid":1,"start_ticks":2,"agent_log":"x"},"log_stream":"Old/algo-1-1","phase":"Training"}],
                   "agent_token":"tok","access_key":["KJOBOLD","sec"],"stop_reason":"MaxRuntimeExceeded"}}"#;
        sqlx::query(
            "INSERT INTO training_jobs VALUES ('123456789012','old','Old','arn:t','Stopping','Stopping',1.0,2.0,NULL,NULL,NULL,$1,$2,4)",
        )
        .bind(spec)
        .bind(state)
        .execute(&mut conn)
        .await
        .unwrap();
        let tspec = r#"{"HyperParameterTuningJobName":"T","HyperParameterTuningJobConfig":{"Strategy":"Random","ResourceLimits":{"MaxParallelTrainingJobs":1}}}"#;
        let tstate = r#"{"launched":3,"early_stopped":["T-001-x"],"judged":{"T-001-x":2},"completing":"done"}"#;
        sqlx::query(
            "INSERT INTO tuning_jobs VALUES ('123456789012','t','T','arn:h','InProgress','',1.0,2.0,NULL,NULL,NULL,$1,$2,7)",
        )
        .bind(tspec)
        .bind(tstate)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();

        let store = SqlStore::open(&path).await.unwrap();
        let j = store.get_training_job("123456789012", "old").await.unwrap().unwrap();
        assert_eq!(j.secondary_status, SecondaryStatus::Stopping);
        assert_eq!(j.stop_reason, Some(StopReason::MaxRuntimeExceeded));
        assert_eq!(j.failure_reason.as_deref(), Some("why"));
        assert_eq!(j.training_start_time, Some(1.5));
        assert_eq!(j.transitions.len(), 2);
        assert_eq!(j.final_metrics[0].value, 0.5);
        assert_eq!(j.run.hosts[0].phase, Some(kiln_api::agent::Phase::Training));
        assert_eq!(j.version, 4);
        assert_eq!(
            store.job_credentials("KJOBOLD").await.unwrap(),
            Some(("sec".into(), "123456789012".into()))
        );
        let t = store.get_tuning_job("123456789012", "t").await.unwrap().unwrap();
        assert_eq!(t.strategy, TuningStrategy::Random);
        assert_eq!((t.launched, t.completing.as_deref()), (3, Some("done")));
        assert_eq!(t.judged.get("T-001-x"), Some(&2));
        assert_eq!(t.version, 7);
    }
}
