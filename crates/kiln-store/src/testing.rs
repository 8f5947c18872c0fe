//! For tests of code that runs on both databases: a fresh PostgreSQL database per test on the
//! server named by `KILN_TEST_DATABASE_URL` (`scripts/pg.sh start` runs one), dropped when the
//! guard goes. Without the variable, PostgreSQL tests are skipped with a note, unless
//! `KILN_REQUIRE_POSTGRES=1` (as in `scripts/test.sh`), when they fail.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A database created for one test; dropped (with `FORCE`) when this goes out of scope.
pub struct PgTestDb {
    /// The URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Creates a new empty database on the test server, or `None` if there is no test server and none
/// is required.
pub async fn pg_test_db() -> Option<PgTestDb> {
    let Ok(admin_url) = std::env::var("KILN_TEST_DATABASE_URL") else {
        if std::env::var("KILN_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("KILN_REQUIRE_POSTGRES=1 but KILN_TEST_DATABASE_URL is not set (run scripts/pg.sh start)");
        }
        eprintln!("KILN_TEST_DATABASE_URL is not set: skipping the PostgreSQL half of this test");
        return None;
    };
    let name = format!(
        "kiln_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to KILN_TEST_DATABASE_URL: {e}"));
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = admin.close().await;
    let url = match admin_url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("KILN_TEST_DATABASE_URL must end with /<database>"),
    };
    Some(PgTestDb { url, admin_url, name })
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside or outside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
