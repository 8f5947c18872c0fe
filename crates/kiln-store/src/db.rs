//! A connection pool to SQLite or PostgreSQL, and the means to run one SQL text on either.
//!
//! kiln writes portable SQL (`$N` placeholders, `ON CONFLICT`, no engine-specific functions) and
//! runs it through [`with_db!`], which expands the same code once per backend, so each arm is
//! type-checked against its own driver. Schemas differ only where the engines do (identity columns,
//! `WITHOUT ROWID`), in one migration folder per database.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use crate::{StoreError, StoreResult};

/// A pool of connections to one database.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Transactions that write. SQLite's plain `BEGIN` starts a read transaction that is upgraded at
/// its first write; if another connection writes in between, the upgrade fails at once with
/// `SQLITE_BUSY` (or `SQLITE_BUSY_SNAPSHOT`), whatever the busy timeout, and under load requests
/// failed with "database is locked". `BEGIN IMMEDIATE` takes the write lock first, waiting for
/// it up to the busy timeout. PostgreSQL's `BEGIN` has no such failure.
pub trait BeginWrite {
    type Database: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$db` is, so one SQL text and
/// one piece of code serve both. The body is compiled once per backend.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// How a PostgreSQL URL is recognised.
pub fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else {
        None
    }
}

/// Hides the password of a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// One set of migrations with its SQLite and PostgreSQL variants.
pub struct Migrations {
    /// Migrations of the SQLite file.
    pub sqlite: &'static Migrator,
    /// Migrations in a PostgreSQL database shared with the other components.
    pub postgres: &'static Migrator,
    /// The PostgreSQL table that records which of `postgres` ran (one per component, since their
    /// version numbers overlap).
    pub postgres_table: &'static str,
}

impl Db {
    /// Opens a SQLite file in WAL mode (`path`), or an in-memory database (`None`), and migrates it.
    /// `durable` commits with `synchronous=FULL` (on disk before the commit returns); otherwise
    /// `NORMAL` (a commit survives a crash of the process, not of the machine).
    pub async fn open_sqlite(path: Option<&Path>, durable: bool, migrations: &Migrations) -> StoreResult<Db> {
        let err = |e: sqlx::Error| StoreError::Database(e.to_string());
        let pool = match path {
            Some(path) => {
                let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                    .map_err(err)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(if durable {
                        SqliteSynchronous::Full
                    } else {
                        SqliteSynchronous::Normal
                    })
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?
            }
            None => {
                let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(err)?;
                SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?
            }
        };
        migrations
            .sqlite
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        Ok(Db::Sqlite(pool))
    }

    /// Connects to a PostgreSQL database (`postgres://user:password@host:port/db`) and applies the
    /// migrations that have not run there yet (several replicas may start at once: the migrator
    /// holds a lock while it works).
    pub async fn connect_postgres(url: &str, max_connections: u32, migrations: &Migrations) -> StoreResult<Db> {
        let pool = Self::postgres_pool(url, max_connections).await?;
        let db = Db::Postgres(pool);
        db.migrate_postgres(migrations).await?;
        Ok(db)
    }

    /// A PostgreSQL pool without migrations (to share one pool among several components, each
    /// migrating its own tables with [`Db::migrate_postgres`]).
    pub async fn postgres_pool(url: &str, max_connections: u32) -> StoreResult<PgPool> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("'{}' is not a PostgreSQL URL: {e}", redact(url))))?;
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Database(format!("cannot connect to {}: {e}", redact(url))))
    }

    /// Applies `migrations` to a PostgreSQL database (a no-op on SQLite, migrated when opened).
    pub async fn migrate_postgres(&self, migrations: &Migrations) -> StoreResult<()> {
        let Db::Postgres(pool) = self else {
            return Ok(());
        };
        let migrator = Migrator {
            migrations: migrations.postgres.migrations.clone(),
            table_name: Cow::Borrowed(migrations.postgres_table),
            ..Migrator::DEFAULT
        };
        migrator
            .run(pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one statement without parameters (tests and maintenance).
    pub async fn execute(&self, sql: &'static str) -> StoreResult<()> {
        with_db!(self, pool => {
            sqlx::query(sql.into_sql_str()).execute(pool).await?;
        });
        Ok(())
    }
}

/// Typed reads of a result row, the same for both backends.
pub trait Get {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn real(&self, column: &str) -> Result<f64, sqlx::Error>;
    fn opt_real(&self, column: &str) -> Result<Option<f64>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
}

macro_rules! impl_get {
    ($row:ty) => {
        impl Get for $row {
            fn text(&self, c: &str) -> Result<String, sqlx::Error> {
                self.try_get(c)
            }
            fn opt_text(&self, c: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(c)
            }
            fn real(&self, c: &str) -> Result<f64, sqlx::Error> {
                self.try_get(c)
            }
            fn opt_real(&self, c: &str) -> Result<Option<f64>, sqlx::Error> {
                self.try_get(c)
            }
            fn int(&self, c: &str) -> Result<i64, sqlx::Error> {
                self.try_get(c)
            }
            fn opt_int(&self, c: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(c)
            }
            fn bytes(&self, c: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(c)
            }
        }
    };
}

impl_get!(SqliteRow);
impl_get!(PgRow);

/// A value bound to a `$N` placeholder of a query built at run time.
#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
}

/// A query text with `$N` placeholders numbered as clauses are appended.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    /// A query whose text already uses `$1 … $n` for `first`.
    pub fn new(text: &str, first: Vec<Bind>) -> Self {
        Self {
            text: text.to_string(),
            binds: first,
        }
    }

    /// Appends `clause`, replacing each `$?` by the next placeholder number for `values` in order.
    pub fn push(&mut self, clause: &str, values: Vec<Bind>) {
        let mut c = clause.to_string();
        for v in values {
            self.binds.push(v);
            c = c.replacen("$?", &format!("${}", self.binds.len()), 1);
        }
        self.text.push_str(&c);
    }
}

/// Binds a run-time query's values and fetches every row (one expansion per backend).
#[macro_export]
macro_rules! fetch_sql {
    ($executor:expr, $sql:expr) => {{
        let sql: $crate::db::Sql = $sql;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.text));
        for b in sql.binds {
            q = match b {
                $crate::db::Bind::Text(s) => q.bind(s),
                $crate::db::Bind::Int(i) => q.bind(i),
                $crate::db::Bind::Real(r) => q.bind(r),
            };
        }
        q.fetch_all($executor).await
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(backend_of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("sqlite:///tmp/x.db"), Some(Backend::Sqlite));
        assert_eq!(backend_of("mysql://h/db"), None);
        assert_eq!(
            redact("postgres://kiln:s3cret@db:5432/kiln"),
            "postgres://kiln:***@db:5432/kiln"
        );
        assert_eq!(redact("postgres://kiln@db/kiln"), "postgres://kiln@db/kiln");
    }

    #[test]
    fn placeholders_number_in_order() {
        let mut s = Sql::new("SELECT 1 WHERE a = $1", vec![Bind::Int(1)]);
        s.push(" AND b = $? AND c = $?", vec![Bind::Int(2), Bind::Int(3)]);
        assert_eq!(s.text, "SELECT 1 WHERE a = $1 AND b = $2 AND c = $3");
    }
}
