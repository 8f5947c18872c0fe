//! Leader election among `kiln serve` processes that share a database: a PostgreSQL advisory lock
//! held by one session (released by the server when that session ends, e.g. when its process is
//! killed), or, for SQLite on one machine, an exclusive lock on a file beside the database
//! (released by the kernel when the process exits).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::{Leadership, StoreError, StoreResult, db};

/// Held by the leader; dropping it gives leadership up.
#[async_trait]
pub trait Lease: Send {
    /// Whether the lease still holds. A lease that does not hold must be dropped: another process
    /// may already lead.
    async fn holds(&mut self) -> bool;
}

/// The advisory lock key kiln's leader holds ("kiln" in ASCII).
const LOCK_KEY: i64 = 0x6b69_6c6e;

/// Leadership by `pg_try_advisory_lock` on a session of its own.
pub struct PgLeadership {
    url: String,
}

impl PgLeadership {
    /// Leadership among the processes that use the database at `url`.
    pub fn new(url: &str) -> Self {
        Self { url: url.to_string() }
    }
}

struct PgLease {
    conn: PgConnection,
}

#[async_trait]
impl Leadership for PgLeadership {
    async fn try_acquire(&self) -> StoreResult<Option<Box<dyn Lease>>> {
        let opts = PgConnectOptions::from_str(&self.url)
            .map_err(|e| StoreError::Database(format!("'{}' is not a PostgreSQL URL: {e}", db::redact(&self.url))))?;
        let mut conn = PgConnection::connect_with(&opts).await?;
        let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if !won {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgLease { conn })))
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn holds(&mut self) -> bool {
        // The lock lives as long as this session: a session that still answers still holds it.
        let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut self.conn);
        matches!(tokio::time::timeout(Duration::from_secs(5), ping).await, Ok(Ok(1)))
    }
}

/// Leadership by an exclusive lock on a file (processes of one machine, e.g. sharing a SQLite file).
pub struct FileLeadership {
    path: PathBuf,
}

impl FileLeadership {
    /// Leadership among the processes that lock `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

struct FileLease {
    _file: std::fs::File,
}

#[async_trait]
impl Leadership for FileLeadership {
    async fn try_acquire(&self) -> StoreResult<Option<Box<dyn Lease>>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", self.path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLease { _file: file }))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Database(format!(
                "cannot lock {}: {e}",
                self.path.display()
            ))),
        }
    }
}

#[async_trait]
impl Lease for FileLease {
    async fn holds(&mut self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_file_lease_at_a_time() {
        let dir = std::env::temp_dir().join(format!("kiln-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = FileLeadership::new(dir.join("leader.lock"));
        let first = l.try_acquire().await.unwrap();
        assert!(first.is_some());
        assert!(l.try_acquire().await.unwrap().is_none());
        drop(first);
        assert!(l.try_acquire().await.unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}
