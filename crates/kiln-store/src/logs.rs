//! Log storage for the CloudWatch Logs API: groups, streams and events, in a SQLite file of their
//! own or in the PostgreSQL database beside the jobs. Events are ordered by `(timestamp, seq)`,
//! where `seq` is the ingestion order.

use std::path::Path;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use crate::db::{BeginWrite, Bind, Db, Get, Migrations, Sql};
use crate::{StoreError, StoreResult, fetch_sql, with_db};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite-logs");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres-logs");

/// The log tables' migrations.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
    postgres_table: "_kiln_logs_migrations",
};

/// A log group.
#[derive(Debug, Clone, PartialEq)]
pub struct LogGroupRow {
    pub name: String,
    pub creation_time: i64,
    pub stored_bytes: i64,
}

/// A log stream with its event-time summary.
#[derive(Debug, Clone, PartialEq)]
pub struct LogStreamRow {
    pub name: String,
    pub creation_time: i64,
    pub first_event_time: Option<i64>,
    pub last_event_time: Option<i64>,
    pub last_ingestion_time: Option<i64>,
    pub stored_bytes: i64,
}

/// An event to store: milliseconds since the epoch and one line of text.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub timestamp: i64,
    pub message: String,
}

/// Where an agent's batch of lines starts in what that agent sent to the stream: its own id (one
/// per agent process) and how many lines it sent before the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStart<'a> {
    pub sender: &'a str,
    pub first: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEventRow {
    pub seq: i64,
    pub stream: String,
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: String,
}

/// A position in a stream's or group's event order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPos {
    pub timestamp: i64,
    pub seq: i64,
}

/// Which events of one stream to read.
#[derive(Debug, Clone)]
pub struct EventRange {
    /// Inclusive lower bound on the timestamp.
    pub start: Option<i64>,
    /// Exclusive upper bound on the timestamp.
    pub end: Option<i64>,
    /// Only events after this position (forward) or before it (backward).
    pub from: Option<EventPos>,
    /// Read forward from the start (or `from`); otherwise read the last events before the end.
    pub forward: bool,
    pub limit: u32,
}

/// A page of streams: by name (after `after`, with `prefix`) or by last event time (`after` is
/// `"<time>:<name>"`).
#[derive(Debug, Clone, Default)]
pub struct StreamQuery {
    pub prefix: String,
    pub by_last_event: bool,
    pub descending: bool,
    pub after: Option<String>,
    pub limit: u32,
}

/// A group-wide read of events.
#[derive(Debug, Clone)]
pub struct FilterQuery {
    pub streams: StreamSelector,
    /// Inclusive lower bound on the timestamp.
    pub start: Option<i64>,
    /// Exclusive upper bound on the timestamp.
    pub end: Option<i64>,
    pub after: Option<EventPos>,
    pub limit: u32,
}

/// Which streams a group-wide read covers.
#[derive(Debug, Clone)]
pub enum StreamSelector {
    All,
    Names(Vec<String>),
    Prefix(String),
}

/// Storage behind the Logs API.
#[async_trait]
pub trait LogStore: Send + Sync {
    /// Creates a group; `AlreadyExists` if it does.
    async fn create_group(&self, account: &str, group: &str, now: i64) -> StoreResult<()>;
    /// Groups whose name starts with `prefix`, in name order after `after`.
    async fn list_groups(
        &self,
        account: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LogGroupRow>>;
    /// Whether a group exists.
    async fn group_exists(&self, account: &str, group: &str) -> StoreResult<bool>;
    /// Creates a stream; `AlreadyExists` if it does, `NotFound` without the group.
    async fn create_stream(&self, account: &str, group: &str, stream: &str, now: i64) -> StoreResult<()>;
    /// One stream.
    async fn get_stream(&self, account: &str, group: &str, stream: &str) -> StoreResult<Option<LogStreamRow>>;
    /// One page of a group's streams.
    async fn list_streams(&self, account: &str, group: &str, q: &StreamQuery) -> StoreResult<Vec<LogStreamRow>>;
    /// Appends events to an existing stream in one transaction.
    async fn put_events(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        events: &[NewEvent],
        now: i64,
    ) -> StoreResult<()>;
    /// Appends an agent's batch exactly once: a batch re-sent after its reply was lost (the server
    /// died after committing, the reply timed out) finds its lines stored and they are skipped.
    /// Returns how many of the batch's leading lines were skipped.
    async fn put_batch(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        start: BatchStart<'_>,
        events: &[NewEvent],
        now: i64,
    ) -> StoreResult<usize>;
    /// Events of one stream, always returned in ascending order.
    async fn get_events(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        range: &EventRange,
    ) -> StoreResult<Vec<LogEventRow>>;
    /// Events of several streams of a group, interleaved in ascending order.
    async fn filter_events(&self, account: &str, group: &str, q: &FilterQuery) -> StoreResult<Vec<LogEventRow>>;
}

/// [`LogStore`] in SQL. On SQLite, commits use `synchronous=NORMAL`: in WAL mode a committed event
/// survives a crash of the process (only an OS crash can lose the last commits), which keeps ingest
/// fast; on PostgreSQL every commit is durable.
#[derive(Clone)]
pub struct SqlLogStore {
    db: Db,
}

impl SqlLogStore {
    /// Opens (creating if needed) the log database file.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open_sqlite(Some(path), false, &MIGRATIONS).await?,
        })
    }

    /// An in-memory log store (tests).
    pub async fn in_memory() -> StoreResult<Self> {
        Ok(Self {
            db: Db::open_sqlite(None, false, &MIGRATIONS).await?,
        })
    }

    /// The log store on a database already connected (PostgreSQL: applies the log tables' migrations).
    pub async fn on(db: Db) -> StoreResult<Self> {
        db.migrate_postgres(&MIGRATIONS).await?;
        Ok(Self { db })
    }
}

fn stream_from_row(r: &impl Get) -> Result<LogStreamRow, sqlx::Error> {
    Ok(LogStreamRow {
        name: r.text("name")?,
        creation_time: r.int("creation_time")?,
        first_event_time: r.opt_int("first_event_time")?,
        last_event_time: r.opt_int("last_event_time")?,
        last_ingestion_time: r.opt_int("last_ingestion_time")?,
        stored_bytes: r.int("stored_bytes")?,
    })
}

fn event_from_row(r: &impl Get) -> Result<LogEventRow, sqlx::Error> {
    Ok(LogEventRow {
        seq: r.int("seq")?,
        stream: r.text("stream")?,
        timestamp: r.int("ts")?,
        ingestion_time: r.int("ingestion_time")?,
        message: r.text("message")?,
    })
}

/// Text equal to `$N`'s prefix of the column, portable (no `starts_with` in SQLite, no `substr` of an
/// untyped parameter in PostgreSQL).
fn prefix_clause(column: &str) -> String {
    format!(" AND substr({column}, 1, length(CAST($? AS TEXT))) = CAST($? AS TEXT)")
}

const EVENT_COLUMNS: &str = "seq, stream, ts, ingestion_time, message";

impl SqlLogStore {
    /// Appends events in one transaction; with `start`, skips the leading lines of a batch that the
    /// same sender already stored. Returns how many were skipped.
    async fn put(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        start: Option<BatchStart<'_>>,
        events: &[NewEvent],
        now: i64,
    ) -> StoreResult<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut skip = 0usize;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            // The stream's row first: it exists or the call fails, and concurrent writers of one
            // stream queue on its row lock (PostgreSQL) instead of deadlocking later.
            let row = sqlx::query(
                "UPDATE log_streams SET last_ingestion_time = $1 \
                 WHERE account = $2 AND group_name = $3 AND name = $4 \
                 RETURNING agent_sender, agent_next_seq",
            )
            .bind(now)
            .bind(account)
            .bind(group)
            .bind(stream)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound);
            };
            if let Some(start) = start {
                let sender = Get::opt_text(&row, "agent_sender")?;
                let next = Get::opt_int(&row, "agent_next_seq")?;
                let len = events.len() as i64;
                let mut new_next = start.first.saturating_add(len);
                if sender.as_deref() == Some(start.sender)
                    && let Some(next) = next
                {
                    skip = next.saturating_sub(start.first).clamp(0, len) as usize;
                    new_next = new_next.max(next);
                }
                sqlx::query(
                    "UPDATE log_streams SET agent_sender = $1, agent_next_seq = $2 \
                     WHERE account = $3 AND group_name = $4 AND name = $5",
                )
                .bind(start.sender)
                .bind(new_next)
                .bind(account)
                .bind(group)
                .bind(stream)
                .execute(&mut *tx)
                .await?;
            }
            let fresh = &events[skip..];
            if !fresh.is_empty() {
                let first = fresh.iter().map(|e| e.timestamp).min().unwrap_or(now);
                let last = fresh.iter().map(|e| e.timestamp).max().unwrap_or(now);
                let bytes: i64 = fresh.iter().map(|e| e.message.len() as i64 + 26).sum();
                sqlx::query(
                    "UPDATE log_streams SET \
                     first_event_time = CASE WHEN first_event_time IS NULL OR first_event_time > $1 THEN $1 ELSE first_event_time END, \
                     last_event_time = CASE WHEN last_event_time IS NULL OR last_event_time < $2 THEN $2 ELSE last_event_time END, \
                     stored_bytes = stored_bytes + $3 \
                     WHERE account = $4 AND group_name = $5 AND name = $6",
                )
                .bind(first)
                .bind(last)
                .bind(bytes)
                .bind(account)
                .bind(group)
                .bind(stream)
                .execute(&mut *tx)
                .await?;
            }
            // Multi-row inserts: 100 events (600 parameters) per statement.
            for chunk in events[skip..].chunks(100) {
                let mut text = String::from(
                    "INSERT INTO log_events (account, group_name, stream, ts, ingestion_time, message) VALUES ",
                );
                for i in 0..chunk.len() {
                    let b = i * 6;
                    if i > 0 {
                        text.push(',');
                    }
                    text.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6
                    ));
                }
                let mut q = sqlx::query(AssertSqlSafe(text));
                for e in chunk {
                    q = q
                        .bind(account)
                        .bind(group)
                        .bind(stream)
                        .bind(e.timestamp)
                        .bind(now)
                        .bind(&e.message);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(skip)
    }
}

#[async_trait]
impl LogStore for SqlLogStore {
    async fn create_group(&self, account: &str, group: &str, now: i64) -> StoreResult<()> {
        with_db!(&self.db, pool => {
            sqlx::query("INSERT INTO log_groups (account, name, creation_time) VALUES ($1, $2, $3)")
                .bind(account)
                .bind(group)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn list_groups(
        &self,
        account: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LogGroupRow>> {
        let mut sql = Sql::new(
            "SELECT g.name, g.creation_time, \
               (SELECT CAST(COALESCE(SUM(s.stored_bytes), 0) AS BIGINT) FROM log_streams s \
                WHERE s.account = g.account AND s.group_name = g.name) AS bytes \
             FROM log_groups g WHERE g.account = $1 AND g.name > $2",
            vec![Bind::Text(account.into()), Bind::Text(after.unwrap_or("").into())],
        );
        if !prefix.is_empty() {
            sql.push(
                &prefix_clause("g.name"),
                vec![Bind::Text(prefix.into()), Bind::Text(prefix.into())],
            );
        }
        sql.push(&format!(" ORDER BY g.name LIMIT {limit}"), vec![]);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter()
                .map(|r| {
                    Ok(LogGroupRow {
                        name: r.text("name")?,
                        creation_time: r.int("creation_time")?,
                        stored_bytes: r.int("bytes")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    async fn group_exists(&self, account: &str, group: &str) -> StoreResult<bool> {
        let n: i64 = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM log_groups WHERE account = $1 AND name = $2")
                .bind(account)
                .bind(group)
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }

    async fn create_stream(&self, account: &str, group: &str, stream: &str, now: i64) -> StoreResult<()> {
        if !self.group_exists(account, group).await? {
            return Err(StoreError::NotFound);
        }
        with_db!(&self.db, pool => {
            sqlx::query("INSERT INTO log_streams (account, group_name, name, creation_time) VALUES ($1, $2, $3, $4)")
                .bind(account)
                .bind(group)
                .bind(stream)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn get_stream(&self, account: &str, group: &str, stream: &str) -> StoreResult<Option<LogStreamRow>> {
        with_db!(&self.db, pool => {
            let row = sqlx::query(
                "SELECT name, creation_time, first_event_time, last_event_time, last_ingestion_time, stored_bytes \
                 FROM log_streams WHERE account = $1 AND group_name = $2 AND name = $3",
            )
            .bind(account)
            .bind(group)
            .bind(stream)
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(stream_from_row).transpose()?)
        })
    }

    async fn list_streams(&self, account: &str, group: &str, q: &StreamQuery) -> StoreResult<Vec<LogStreamRow>> {
        let (prefix, by_last_event, descending, after, limit) = (
            q.prefix.as_str(),
            q.by_last_event,
            q.descending,
            q.after.as_deref(),
            q.limit,
        );
        let mut sql = Sql::new(
            "SELECT name, creation_time, first_event_time, last_event_time, last_ingestion_time, stored_bytes \
             FROM log_streams WHERE account = $1 AND group_name = $2",
            vec![Bind::Text(account.into()), Bind::Text(group.into())],
        );
        if !prefix.is_empty() {
            sql.push(
                &prefix_clause("name"),
                vec![Bind::Text(prefix.into()), Bind::Text(prefix.into())],
            );
        }
        let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
        if by_last_event {
            // Streams without events sort as time 0.
            if let Some((t, name)) = after.and_then(|a| a.split_once(':')) {
                let t: i64 = t.parse().unwrap_or(0);
                sql.push(
                    &format!(" AND (COALESCE(last_event_time, 0) {cmp} $? OR (COALESCE(last_event_time, 0) = $? AND name {cmp} $?))"),
                    vec![Bind::Int(t), Bind::Int(t), Bind::Text(name.into())],
                );
            }
            sql.push(
                &format!(" ORDER BY COALESCE(last_event_time, 0) {order}, name {order} LIMIT {limit}"),
                vec![],
            );
        } else {
            if let Some(a) = after {
                sql.push(&format!(" AND name {cmp} $?"), vec![Bind::Text(a.into())]);
            }
            sql.push(&format!(" ORDER BY name {order} LIMIT {limit}"), vec![]);
        }
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            Ok(rows.iter().map(stream_from_row).collect::<Result<_, _>>()?)
        })
    }

    async fn put_events(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        events: &[NewEvent],
        now: i64,
    ) -> StoreResult<()> {
        self.put(account, group, stream, None, events, now).await.map(|_| ())
    }

    async fn put_batch(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        start: BatchStart<'_>,
        events: &[NewEvent],
        now: i64,
    ) -> StoreResult<usize> {
        self.put(account, group, stream, Some(start), events, now).await
    }

    async fn get_events(
        &self,
        account: &str,
        group: &str,
        stream: &str,
        range: &EventRange,
    ) -> StoreResult<Vec<LogEventRow>> {
        let mut sql = Sql::new(
            &format!("SELECT {EVENT_COLUMNS} FROM log_events WHERE account = $1 AND group_name = $2 AND stream = $3"),
            vec![
                Bind::Text(account.into()),
                Bind::Text(group.into()),
                Bind::Text(stream.into()),
            ],
        );
        if let Some(s) = range.start {
            sql.push(" AND ts >= $?", vec![Bind::Int(s)]);
        }
        if let Some(e) = range.end {
            sql.push(" AND ts < $?", vec![Bind::Int(e)]);
        }
        let cmp = if range.forward { ">" } else { "<" };
        if let Some(p) = range.from {
            sql.push(
                &format!(" AND (ts {cmp} $? OR (ts = $? AND seq {cmp} $?))"),
                vec![Bind::Int(p.timestamp), Bind::Int(p.timestamp), Bind::Int(p.seq)],
            );
        }
        let order = if range.forward { "ASC" } else { "DESC" };
        sql.push(
            &format!(" ORDER BY ts {order}, seq {order} LIMIT {}", range.limit),
            vec![],
        );
        let mut events: Vec<LogEventRow> = with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            rows.iter().map(event_from_row).collect::<Result<_, _>>()?
        });
        if !range.forward {
            events.reverse();
        }
        Ok(events)
    }

    async fn filter_events(&self, account: &str, group: &str, q: &FilterQuery) -> StoreResult<Vec<LogEventRow>> {
        let (streams, start, end, after, limit) = (&q.streams, q.start, q.end, q.after, q.limit);
        let mut sql = Sql::new(
            &format!("SELECT {EVENT_COLUMNS} FROM log_events WHERE account = $1 AND group_name = $2"),
            vec![Bind::Text(account.into()), Bind::Text(group.into())],
        );
        match streams {
            StreamSelector::All => {}
            StreamSelector::Prefix(p) => sql.push(
                &prefix_clause("stream"),
                vec![Bind::Text(p.clone()), Bind::Text(p.clone())],
            ),
            StreamSelector::Names(names) => {
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let marks = vec!["$?"; names.len()].join(", ");
                sql.push(
                    &format!(" AND stream IN ({marks})"),
                    names.iter().map(|n| Bind::Text(n.clone())).collect(),
                );
            }
        }
        if let Some(s) = start {
            sql.push(" AND ts >= $?", vec![Bind::Int(s)]);
        }
        if let Some(e) = end {
            sql.push(" AND ts < $?", vec![Bind::Int(e)]);
        }
        if let Some(p) = after {
            sql.push(
                " AND (ts > $? OR (ts = $? AND seq > $?))",
                vec![Bind::Int(p.timestamp), Bind::Int(p.timestamp), Bind::Int(p.seq)],
            );
        }
        sql.push(&format!(" ORDER BY ts, seq LIMIT {limit}"), vec![]);
        with_db!(&self.db, pool => {
            let rows = fetch_sql!(pool, sql)?;
            Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with(n: i64) -> SqlLogStore {
        let s = SqlLogStore::in_memory().await.unwrap();
        s.create_group("a", "g", 0).await.unwrap();
        s.create_stream("a", "g", "s1", 0).await.unwrap();
        s.create_stream("a", "g", "s2", 0).await.unwrap();
        let ev: Vec<NewEvent> = (0..n)
            .map(|i| NewEvent {
                timestamp: i / 3,
                message: format!("m{i}"),
            })
            .collect();
        s.put_events("a", "g", "s1", &ev, 5).await.unwrap();
        s
    }

    #[tokio::test]
    async fn forward_paging_returns_every_event_once_in_order() {
        let s = store_with(1000).await;
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
            let page = s.get_events("a", "g", "s1", &range).await.unwrap();
            let Some(last) = page.last() else { break };
            from = Some(EventPos {
                timestamp: last.timestamp,
                seq: last.seq,
            });
            seen.extend(page.into_iter().map(|e| e.message));
        }
        assert_eq!(seen, (0..1000).map(|i| format!("m{i}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn tail_reads_the_last_events_ascending() {
        let s = store_with(100).await;
        let range = EventRange {
            start: None,
            end: None,
            from: None,
            forward: false,
            limit: 3,
        };
        let page = s.get_events("a", "g", "s1", &range).await.unwrap();
        assert_eq!(
            page.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            ["m97", "m98", "m99"]
        );
        let st = s.get_stream("a", "g", "s1").await.unwrap().unwrap();
        assert_eq!((st.first_event_time, st.last_event_time), (Some(0), Some(33)));
    }

    #[tokio::test]
    async fn streams_list_and_missing_stream() {
        let s = store_with(10).await;
        let q = StreamQuery {
            limit: 10,
            ..Default::default()
        };
        let all = s.list_streams("a", "g", &q).await.unwrap();
        assert_eq!(all.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["s1", "s2"]);
        let q = StreamQuery {
            by_last_event: true,
            descending: true,
            limit: 10,
            ..Default::default()
        };
        let by_time = s.list_streams("a", "g", &q).await.unwrap();
        assert_eq!(by_time[0].name, "s1");
        let ev = [NewEvent {
            timestamp: 1,
            message: "x".into(),
        }];
        assert!(matches!(
            s.put_events("a", "g", "nope", &ev, 1).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.create_stream("a", "missing", "x", 1).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.create_stream("a", "g", "s1", 1).await,
            Err(StoreError::AlreadyExists)
        ));
    }
}
