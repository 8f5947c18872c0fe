//! Test fixtures: one test body run on each database, and replicas of one store.

use kiln_store::Backend;
use kiln_store::db::Db;
use kiln_store::testing::{PgTestDb, pg_test_db};
use tempfile::TempDir;

use crate::ObjectStore;
use crate::index::{Index, MIGRATIONS};

/// Where a test keeps a store: a directory and, on PostgreSQL, a database of its own; both are
/// removed when this is dropped.
pub(crate) struct Place {
    pub dir: TempDir,
    pg: Option<PgTestDb>,
}

impl Place {
    /// A new place on `backend`; `None` for PostgreSQL when no test server is configured.
    pub async fn new(backend: Backend) -> Option<Place> {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(pg_test_db().await?),
        };
        Some(Place {
            dir: tempfile::tempdir().expect("temp dir"),
            pg,
        })
    }

    /// A new connection pool to the place's database, as one replica of a store would have.
    pub async fn db(&self) -> Db {
        match &self.pg {
            None => Db::open_sqlite(Some(&self.dir.path().join("index.db")), true, &MIGRATIONS)
                .await
                .expect("open the SQLite index"),
            Some(pg) => Db::Postgres(Db::postgres_pool(&pg.url, 8).await.expect("connect to PostgreSQL")),
        }
    }

    /// An index on a pool of its own.
    pub async fn index(&self) -> Index {
        Index::on(self.db().await).await.expect("open the index")
    }

    /// A store on a pool of its own: another replica each time it is called (on SQLite, as
    /// `kiln serve` opens it).
    pub async fn store(&self) -> ObjectStore {
        match &self.pg {
            None => ObjectStore::open(self.dir.path()).await.expect("open the store"),
            Some(_) => ObjectStore::open_on(self.dir.path(), self.db().await)
                .await
                .expect("open the store"),
        }
    }
}

/// Runs each named `async fn(&Place)` of the enclosing module as two tests, `sqlite::<name>` and
/// `postgres::<name>`; the second passes without running when no PostgreSQL test server is
/// configured (`KILN_TEST_DATABASE_URL`, see `scripts/pg.sh`).
macro_rules! on_each_database {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let place = $crate::testing::Place::new(kiln_store::Backend::Sqlite).await.expect("SQLite");
                    super::$test(&place).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(place) = $crate::testing::Place::new(kiln_store::Backend::Postgres).await {
                        super::$test(&place).await;
                    }
                }
            )*
        }
    };
}

pub(crate) use on_each_database;
