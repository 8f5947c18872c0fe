//! The SQLite implementation: one file under the data directory, WAL, `synchronous=FULL` so a
//! commit is on disk before the API answers.

use std::path::Path;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use crate::{CursorValue, JobQuery, JobSort, MetricPoint, Store, StoreError, StoreResult, TagRow, TrainingJobRow};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A [`Store`] in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const JOB_COLUMNS: &str = "account, name, arn, status, secondary_status, creation_time, last_modified_time, \
     training_end_time, warm_pool_status, tuning_job_arn, spec, state, version";

fn job_from_row(r: &SqliteRow) -> Result<TrainingJobRow, sqlx::Error> {
    Ok(TrainingJobRow {
        account: r.try_get("account")?,
        name: r.try_get("name")?,
        arn: r.try_get("arn")?,
        status: r.try_get("status")?,
        secondary_status: r.try_get("secondary_status")?,
        creation_time: r.try_get("creation_time")?,
        last_modified_time: r.try_get("last_modified_time")?,
        training_end_time: r.try_get("training_end_time")?,
        warm_pool_status: r.try_get("warm_pool_status")?,
        tuning_job_arn: r.try_get("tuning_job_arn")?,
        spec: r.try_get("spec")?,
        state: r.try_get("state")?,
        version: r.try_get("version")?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            pool: crate::open_sqlite(Some(path), true, &MIGRATIONS).await?,
        })
    }

    /// An in-memory database (tests).
    pub async fn in_memory() -> StoreResult<Self> {
        Ok(Self {
            pool: crate::open_sqlite(None, true, &MIGRATIONS).await?,
        })
    }
}

const TRAINING: &str = "training_jobs";
const TUNING: &str = "tuning_jobs";

// Training and tuning jobs share one row shape and one SQL text, by table.
impl SqliteStore {
    async fn insert_row(&self, table: &str, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (account, name_key, name, arn, status, secondary_status, creation_time, \
             last_modified_time, training_end_time, warm_pool_status, tuning_job_arn, spec, state, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )))
        .bind(&job.account)
        .bind(job.name.to_lowercase())
        .bind(&job.name)
        .bind(&job.arn)
        .bind(&job.status)
        .bind(&job.secondary_status)
        .bind(job.creation_time)
        .bind(job.last_modified_time)
        .bind(job.training_end_time)
        .bind(&job.warm_pool_status)
        .bind(&job.tuning_job_arn)
        .bind(&job.spec)
        .bind(&job.state)
        .bind(job.version)
        .execute(&mut *tx)
        .await?;
        for t in tags {
            upsert_tag(&mut tx, &job.account, &job.arn, t).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_row(&self, table: &str, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM {table} WHERE account = $1 AND name_key = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(account)
            .bind(name.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_from_row).transpose()?)
    }

    async fn update_row(&self, table: &str, job: &TrainingJobRow) -> StoreResult<i64> {
        let next = job.version + 1;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE {table} SET status = $1, secondary_status = $2, last_modified_time = $3, \
             training_end_time = $4, warm_pool_status = $5, tuning_job_arn = $6, spec = $7, state = $8, version = $9 \
             WHERE account = $10 AND name_key = $11 AND version = $12"
        )))
        .bind(&job.status)
        .bind(&job.secondary_status)
        .bind(job.last_modified_time)
        .bind(job.training_end_time)
        .bind(&job.warm_pool_status)
        .bind(&job.tuning_job_arn)
        .bind(&job.spec)
        .bind(&job.state)
        .bind(next)
        .bind(&job.account)
        .bind(job.name.to_lowercase())
        .bind(job.version)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(next);
        }
        match self.get_row(table, &job.account, &job.name).await? {
            Some(_) => Err(StoreError::Conflict),
            None => Err(StoreError::NotFound),
        }
    }

    async fn delete_row(&self, table: &str, account: &str, name: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let arn: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT arn FROM {table} WHERE account = $1 AND name_key = $2"
        )))
        .bind(account)
        .bind(name.to_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(arn) = arn else {
            return Err(StoreError::NotFound);
        };
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE account = $1 AND name_key = $2"
        )))
        .bind(account)
        .bind(name.to_lowercase())
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
                .bind(name.to_lowercase())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_rows(&self, table: &str, q: &JobQuery) -> StoreResult<Vec<TrainingJobRow>> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM {table} WHERE account = $1");
        let mut binds: Vec<Bind> = vec![Bind::Text(q.account.clone())];
        let mut push = |sql: &mut String, clause: &str, b: Bind| {
            binds.push(b);
            sql.push_str(&clause.replace("$?", &format!("${}", binds.len())));
        };
        if let Some(s) = &q.name_contains {
            push(
                &mut sql,
                " AND name_key LIKE $?",
                Bind::Text(format!("%{}%", s.to_lowercase())),
            );
        }
        if let Some(s) = &q.status_equals {
            push(&mut sql, " AND status = $?", Bind::Text(s.clone()));
        }
        if let Some(s) = &q.warm_pool_status {
            push(&mut sql, " AND warm_pool_status = $?", Bind::Text(s.clone()));
        }
        if let Some(s) = &q.tuning_job_arn {
            push(&mut sql, " AND tuning_job_arn = $?", Bind::Text(s.clone()));
        }
        if let Some(t) = q.creation_after {
            push(&mut sql, " AND creation_time > $?", Bind::Num(t));
        }
        if let Some(t) = q.creation_before {
            push(&mut sql, " AND creation_time < $?", Bind::Num(t));
        }
        if let Some(t) = q.modified_after {
            push(&mut sql, " AND last_modified_time > $?", Bind::Num(t));
        }
        if let Some(t) = q.modified_before {
            push(&mut sql, " AND last_modified_time < $?", Bind::Num(t));
        }
        let column = match q.sort {
            JobSort::Name => "name_key",
            JobSort::CreationTime => "creation_time",
            JobSort::Status => "status",
        };
        let (cmp, order) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        if let Some(c) = &q.after {
            let v = match &c.value {
                CursorValue::Text(s) => Bind::Text(s.clone()),
                CursorValue::Number(n) => Bind::Num(*n),
            };
            binds.push(v);
            let vi = binds.len();
            binds.push(Bind::Text(c.name_key.clone()));
            let ni = binds.len();
            if q.sort == JobSort::Name {
                sql.push_str(&format!(" AND name_key {cmp} ${ni}"));
            } else {
                sql.push_str(&format!(
                    " AND ({column} {cmp} ${vi} OR ({column} = ${vi} AND name_key {cmp} ${ni}))"
                ));
            }
        }
        sql.push_str(&format!(
            " ORDER BY {column} {order}, name_key {order} LIMIT {}",
            q.limit
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::Text(s) => query.bind(s),
                Bind::Num(n) => query.bind(n),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(job_from_row).collect::<Result<_, _>>()?)
    }

    async fn rows_with_status(&self, table: &str, statuses: &[&str]) -> StoreResult<Vec<TrainingJobRow>> {
        let mut out = Vec::new();
        for status in statuses {
            let sql = format!("SELECT {JOB_COLUMNS} FROM {table} WHERE status = $1 ORDER BY creation_time");
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(*status)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                out.push(job_from_row(r)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_training_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()> {
        self.insert_row(TRAINING, job, tags).await
    }

    async fn get_training_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>> {
        self.get_row(TRAINING, account, name).await
    }

    async fn update_training_job(&self, job: &TrainingJobRow) -> StoreResult<i64> {
        self.update_row(TRAINING, job).await
    }

    async fn delete_training_job(&self, account: &str, name: &str) -> StoreResult<()> {
        self.delete_row(TRAINING, account, name).await
    }

    async fn list_training_jobs(&self, q: &JobQuery) -> StoreResult<Vec<TrainingJobRow>> {
        self.list_rows(TRAINING, q).await
    }

    async fn training_jobs_with_status(&self, statuses: &[&str]) -> StoreResult<Vec<TrainingJobRow>> {
        self.rows_with_status(TRAINING, statuses).await
    }

    async fn insert_tuning_job(&self, job: &TrainingJobRow, tags: &[TagRow]) -> StoreResult<()> {
        self.insert_row(TUNING, job, tags).await
    }

    async fn get_tuning_job(&self, account: &str, name: &str) -> StoreResult<Option<TrainingJobRow>> {
        self.get_row(TUNING, account, name).await
    }

    async fn update_tuning_job(&self, job: &TrainingJobRow) -> StoreResult<i64> {
        self.update_row(TUNING, job).await
    }

    async fn delete_tuning_job(&self, account: &str, name: &str) -> StoreResult<()> {
        self.delete_row(TUNING, account, name).await
    }

    async fn list_tuning_jobs(&self, q: &JobQuery) -> StoreResult<Vec<TrainingJobRow>> {
        self.list_rows(TUNING, q).await
    }

    async fn tuning_jobs_with_status(&self, statuses: &[&str]) -> StoreResult<Vec<TrainingJobRow>> {
        self.rows_with_status(TUNING, statuses).await
    }

    async fn add_metric_points(&self, account: &str, job: &str, points: &[MetricPoint]) -> StoreResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        let key = job.to_lowercase();
        let mut tx = self.pool.begin().await?;
        let next: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM metric_points WHERE account = $1 AND name_key = $2")
                .bind(account)
                .bind(&key)
                .fetch_one(&mut *tx)
                .await?;
        for (i, p) in points.iter().enumerate() {
            sqlx::query(
                "INSERT INTO metric_points (account, name_key, metric, value, ts, seq) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(account)
            .bind(&key)
            .bind(&p.metric)
            .bind(p.value)
            .bind(p.timestamp)
            .bind(next + 1 + i as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn metric_points(&self, account: &str, job: &str, metric: Option<&str>) -> StoreResult<Vec<MetricPoint>> {
        let rows = sqlx::query(
            "SELECT metric, value, ts FROM metric_points WHERE account = $1 AND name_key = $2 \
             AND ($3 = '' OR metric = $3) ORDER BY seq",
        )
        .bind(account)
        .bind(job.to_lowercase())
        .bind(metric.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MetricPoint {
                    metric: r.try_get("metric")?,
                    value: r.try_get("value")?,
                    timestamp: r.try_get("ts")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn put_tags(&self, account: &str, resource_arn: &str, tags: &[TagRow]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for t in tags {
            upsert_tag(&mut tx, account, resource_arn, t).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_tags(
        &self,
        account: &str,
        resource_arn: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<TagRow>> {
        let rows = sqlx::query(
            "SELECT tag_key, tag_value FROM tags WHERE account = $1 AND resource_key = $2 AND tag_key > $3 \
             ORDER BY tag_key LIMIT $4",
        )
        .bind(account)
        .bind(resource_arn.to_lowercase())
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagRow {
                    key: r.try_get("tag_key")?,
                    value: r.try_get("tag_value")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn delete_tags(&self, account: &str, resource_arn: &str, keys: &[String]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for k in keys {
            sqlx::query("DELETE FROM tags WHERE account = $1 AND resource_key = $2 AND tag_key = $3")
                .bind(account)
                .bind(resource_arn.to_lowercase())
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

enum Bind {
    Text(String),
    Num(f64),
}

async fn upsert_tag(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    account: &str,
    resource_arn: &str,
    t: &TagRow,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tags (account, resource_key, tag_key, tag_value) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account, resource_key, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
    )
    .bind(account)
    .bind(resource_arn.to_lowercase())
    .bind(&t.key)
    .bind(&t.value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cursor;

    fn job(account: &str, name: &str, t: f64) -> TrainingJobRow {
        TrainingJobRow {
            account: account.into(),
            name: name.into(),
            arn: format!("arn:aws:sagemaker:us-east-1:{account}:training-job/{name}"),
            status: "InProgress".into(),
            secondary_status: "Starting".into(),
            creation_time: t,
            last_modified_time: t,
            training_end_time: None,
            warm_pool_status: None,
            tuning_job_arn: None,
            spec: "{}".into(),
            state: "{}".into(),
            version: 0,
        }
    }

    #[tokio::test]
    async fn insert_get_update_delete() {
        let s = SqliteStore::in_memory().await.unwrap();
        let j = job("1", "Job-A", 1.0);
        s.insert_training_job(
            &j,
            &[TagRow {
                key: "k".into(),
                value: "v".into(),
            }],
        )
        .await
        .unwrap();
        assert!(matches!(
            s.insert_training_job(&job("1", "job-a", 2.0), &[]).await,
            Err(StoreError::AlreadyExists)
        ));
        s.insert_training_job(&job("2", "job-a", 2.0), &[]).await.unwrap();
        let mut got = s.get_training_job("1", "JOB-a").await.unwrap().unwrap();
        assert_eq!(got.name, "Job-A");
        got.status = "Stopping".into();
        got.version = s.update_training_job(&got).await.unwrap();
        let mut stale = got.clone();
        stale.version -= 1;
        assert!(matches!(s.update_training_job(&stale).await, Err(StoreError::Conflict)));
        assert_eq!(s.list_tags("1", &j.arn, None, 50).await.unwrap().len(), 1);
        s.delete_training_job("1", "job-a").await.unwrap();
        assert!(s.get_training_job("1", "job-a").await.unwrap().is_none());
        assert!(s.list_tags("1", &j.arn, None, 50).await.unwrap().is_empty());
        assert!(s.get_training_job("2", "job-a").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn keyset_pages_cover_every_job_once() {
        let s = SqliteStore::in_memory().await.unwrap();
        for i in 0..23 {
            // Equal creation times in pairs exercise the name tie-break.
            s.insert_training_job(&job("1", &format!("j{i:02}"), f64::from(i / 2)), &[])
                .await
                .unwrap();
        }
        for (sort, descending) in [
            (JobSort::CreationTime, true),
            (JobSort::Name, false),
            (JobSort::Status, true),
        ] {
            let mut q = JobQuery::all("1", 5);
            q.sort = sort;
            q.descending = descending;
            let mut seen = Vec::new();
            loop {
                let page = s.list_training_jobs(&q).await.unwrap();
                let Some(last) = page.last() else { break };
                q.after = Some(Cursor {
                    value: match sort {
                        JobSort::Name => CursorValue::Text(last.name.to_lowercase()),
                        JobSort::CreationTime => CursorValue::Number(last.creation_time),
                        JobSort::Status => CursorValue::Text(last.status.clone()),
                    },
                    name_key: last.name.to_lowercase(),
                });
                seen.extend(page.into_iter().map(|j| j.name));
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 23, "{sort:?}");
            assert_eq!(seen.len(), 23, "{sort:?}");
        }
    }
}
