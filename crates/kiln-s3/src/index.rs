//! The object index: the rows that map buckets and keys to blob files, in SQLite (a file in the
//! store's directory) or PostgreSQL (one database shared by every `kiln serve` replica of a data
//! directory). Committing a row is what makes an object visible; every function here is one
//! transaction. Keys are stored as BLOB (SQLite) or BYTEA (PostgreSQL), so that both order them
//! bytewise, as S3 lists them. Both databases run the same SQL texts (`kiln_store::with_db!`); they
//! differ only in how a write transaction keeps what it read from changing ([`Locking`]).

use std::collections::HashSet;
use std::path::Path;

use kiln_store::db::{Db, Get, Migrations};
use kiln_store::with_db;
use s3s::crypto::{Checksum as _, Md5};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, SqliteConnection};

use crate::Error;
use crate::listing::{ListEntry, ListPage, ListQuery, Lister};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The index's tables, for SQLite and for a PostgreSQL database shared with kiln's other components.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &SQLITE,
    postgres: &POSTGRES,
    postgres_table: "_kiln_s3_migrations",
};

/// One blob file of an object, and how many bytes of the object it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Segment(pub String, pub u64);

/// A bucket as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketRow {
    pub name: String,
    pub account: String,
    pub region: Option<String>,
    pub created: i64,
}

/// An object as the index keeps it.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRow {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: i64,
    pub meta: String,
    pub segments: Vec<Segment>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub(crate) struct UploadRow {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiated: i64,
    pub meta: String,
}

/// A stored part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRow {
    pub part_number: i32,
    pub blob: String,
    pub size: u64,
    pub md5: String,
    pub last_modified: i64,
}

/// What completing an upload did: the object now visible, and blobs nothing refers to any more.
pub(crate) struct Completed {
    pub object: ObjectRow,
    pub retired: Vec<String>,
}

/// How a write transaction keeps what it read true until it commits. Writers read before they
/// write (the blobs a replaced object leaves behind are retired by whoever replaced it, exactly
/// once), so two writers of the same thing must not both read the state before either wrote.
///
/// SQLite has one writer at a time, across processes too: a write transaction begins `IMMEDIATE`,
/// taking the database's write lock before its first read, and needs nothing else.
///
/// PostgreSQL runs writers concurrently in READ COMMITTED, where each statement sees what committed
/// before it started. A writer locks what its decision rests on, always in the order bucket, upload,
/// object key, so that waits never form a cycle:
/// - the bucket's row `FOR KEY SHARE` by writers of its objects (they do not exclude each other),
///   `FOR UPDATE` by the deletion of the bucket, which then excludes them all;
/// - an upload's row `FOR UPDATE` by whoever writes a part of it, completes or aborts it (and by the
///   deletion of its bucket): a writer that waited reads the upload again, finds it gone, and fails;
/// - an object key by a transaction-scoped advisory lock on a hash of bucket and key, because the
///   row of a key that is being created does not exist yet and cannot be locked.
///
/// The lock statements double as existence checks on both databases.
struct Locking {
    begin: &'static str,
    /// `$1` = bucket: one row if the bucket exists; writers of its objects and uploads.
    bucket_for_writers: &'static str,
    /// `$1` = bucket: one row if the bucket exists; its deletion.
    bucket_for_delete: &'static str,
    /// `$1` = bucket: the ids of its uploads.
    uploads_of_bucket: &'static str,
    /// `$1` = upload id: the upload, if it exists.
    upload: &'static str,
    /// `$1`, `$2`: [`OBJECT_KEY_LOCKS`] and [`key_hash`].
    object_key: Option<&'static str>,
}

static SQLITE_LOCKING: Locking = Locking {
    begin: "BEGIN IMMEDIATE",
    bucket_for_writers: "SELECT 1 FROM buckets WHERE name = $1",
    bucket_for_delete: "SELECT 1 FROM buckets WHERE name = $1",
    uploads_of_bucket: "SELECT upload_id FROM uploads WHERE bucket = $1",
    upload: "SELECT upload_id, bucket, key, initiated, meta FROM uploads WHERE upload_id = $1",
    object_key: None,
};

static POSTGRES_LOCKING: Locking = Locking {
    begin: "BEGIN",
    bucket_for_writers: "SELECT 1 FROM buckets WHERE name = $1 FOR KEY SHARE",
    bucket_for_delete: "SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE",
    uploads_of_bucket: "SELECT upload_id FROM uploads WHERE bucket = $1 ORDER BY upload_id FOR UPDATE",
    upload: "SELECT upload_id, bucket, key, initiated, meta FROM uploads WHERE upload_id = $1 FOR UPDATE",
    object_key: Some("SELECT pg_advisory_xact_lock($1, $2)"),
};

/// The first key of kiln-s3's two-key advisory locks on object keys ("ks3k"). Two-key locks do not
/// overlap with the one-key locks of kiln's leader election.
const OBJECT_KEY_LOCKS: i32 = 0x6b73_336b;

/// The second key of the advisory lock on `bucket`/`key`: 32 bits of an MD5, the same in every
/// process and every version. Two keys that share it only wait for each other.
fn key_hash(bucket: &str, key: &str) -> i32 {
    let mut md5 = Md5::new();
    md5.update(bucket.as_bytes());
    md5.update(&[0]);
    md5.update(key.as_bytes());
    let d = md5.finalize();
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn db(e: sqlx::Error) -> Error {
    Error::Index(e.to_string())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

fn key_of(r: &impl Get) -> Result<String, Error> {
    String::from_utf8(r.bytes("key").map_err(db)?).map_err(|_| Error::Corrupt("a key in the index is not UTF-8".into()))
}

fn size_of(r: &impl Get) -> Result<u64, Error> {
    Ok(r.int("size").map_err(db)?.max(0) as u64)
}

fn segments_of(text: &str) -> Result<Vec<Segment>, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("unreadable segment list: {e}")))
}

fn blob_ids(segments: &str) -> Result<Vec<String>, Error> {
    Ok(segments_of(segments)?.into_iter().map(|Segment(id, _)| id).collect())
}

fn segments_json(segments: &[Segment]) -> String {
    serde_json::to_string(segments).unwrap_or_else(|_| "[]".into())
}

fn bucket_from_row(r: &impl Get) -> Result<BucketRow, Error> {
    Ok(BucketRow {
        name: r.text("name").map_err(db)?,
        account: r.text("account").map_err(db)?,
        region: r.opt_text("region").map_err(db)?,
        created: r.int("created").map_err(db)?,
    })
}

fn object_from_row(r: &impl Get) -> Result<ObjectRow, Error> {
    Ok(ObjectRow {
        bucket: r.text("bucket").map_err(db)?,
        key: key_of(r)?,
        size: size_of(r)?,
        etag: r.text("etag").map_err(db)?,
        last_modified: r.int("last_modified").map_err(db)?,
        meta: r.text("meta").map_err(db)?,
        segments: segments_of(&r.text("segments").map_err(db)?)?,
    })
}

fn upload_from_row(r: &impl Get) -> Result<UploadRow, Error> {
    Ok(UploadRow {
        upload_id: r.text("upload_id").map_err(db)?,
        bucket: r.text("bucket").map_err(db)?,
        key: key_of(r)?,
        initiated: r.int("initiated").map_err(db)?,
        meta: r.text("meta").map_err(db)?,
    })
}

fn part_from_row(r: &impl Get) -> Result<PartRow, Error> {
    let n = r.int("part_number").map_err(db)?;
    Ok(PartRow {
        part_number: i32::try_from(n).map_err(|_| Error::Corrupt(format!("part number {n} is out of range")))?,
        blob: r.text("blob").map_err(db)?,
        size: size_of(r)?,
        md5: r.text("md5").map_err(db)?,
        last_modified: r.int("last_modified").map_err(db)?,
    })
}

const OBJECT_COLUMNS: &str = "bucket, key, size, etag, last_modified, meta, segments";

/// Statements that several write transactions share, on either database's connection.
trait Steps {
    /// Holds `bucket`/`key` against other writers until commit (nothing to do on SQLite).
    async fn lock_object_key(&mut self, locking: &Locking, bucket: &str, key: &str) -> Result<(), Error>;
    /// Writes an object over any object of its key; returns the replaced blobs. The key must be
    /// locked.
    async fn replace_object(&mut self, o: &ObjectRow) -> Result<Vec<String>, Error>;
}

macro_rules! impl_steps {
    ($conn:ty) => {
        impl Steps for $conn {
            async fn lock_object_key(&mut self, locking: &Locking, bucket: &str, key: &str) -> Result<(), Error> {
                if let Some(sql) = locking.object_key {
                    sqlx::query(sql)
                        .bind(OBJECT_KEY_LOCKS)
                        .bind(key_hash(bucket, key))
                        .execute(&mut *self)
                        .await
                        .map_err(db)?;
                }
                Ok(())
            }

            async fn replace_object(&mut self, o: &ObjectRow) -> Result<Vec<String>, Error> {
                let old: Option<String> =
                    sqlx::query_scalar("SELECT segments FROM objects WHERE bucket = $1 AND key = $2")
                        .bind(&o.bucket)
                        .bind(o.key.as_bytes())
                        .fetch_optional(&mut *self)
                        .await
                        .map_err(db)?;
                sqlx::query(
                    "INSERT INTO objects (bucket, key, size, etag, last_modified, meta, segments) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (bucket, key) DO UPDATE SET size = excluded.size, etag = excluded.etag, \
                     last_modified = excluded.last_modified, meta = excluded.meta, segments = excluded.segments",
                )
                .bind(&o.bucket)
                .bind(o.key.as_bytes())
                .bind(o.size as i64)
                .bind(&o.etag)
                .bind(o.last_modified)
                .bind(&o.meta)
                .bind(segments_json(&o.segments))
                .execute(&mut *self)
                .await
                .map_err(|e| {
                    if is_foreign_key_violation(&e) {
                        Error::NoSuchBucket(o.bucket.clone())
                    } else {
                        db(e)
                    }
                })?;
                old.as_deref().map(blob_ids).transpose().map(Option::unwrap_or_default)
            }
        }
    };
}

impl_steps!(SqliteConnection);
impl_steps!(PgConnection);

/// The index.
#[derive(Clone)]
pub(crate) struct Index {
    db: Db,
    locking: &'static Locking,
}

impl Index {
    /// Opens (creating if needed) an index file and applies migrations. Commits are on disk before
    /// they return (`synchronous=FULL`): an object that was acknowledged survives a power loss.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let db = Db::open_sqlite(Some(path), true, &MIGRATIONS)
            .await
            .map_err(|e| Error::Index(e.to_string()))?;
        Ok(Self::with(db))
    }

    /// The index in a database already connected: PostgreSQL (its tables are migrated here) or a
    /// SQLite database opened with [`MIGRATIONS`].
    pub async fn on(db: Db) -> Result<Self, Error> {
        db.migrate_postgres(&MIGRATIONS)
            .await
            .map_err(|e| Error::Index(e.to_string()))?;
        Ok(Self::with(db))
    }

    fn with(db: Db) -> Self {
        let locking = match &db {
            Db::Sqlite(_) => &SQLITE_LOCKING,
            Db::Postgres(_) => &POSTGRES_LOCKING,
        };
        Self { db, locking }
    }

    /// One bucket.
    pub async fn bucket(&self, name: &str) -> Result<Option<BucketRow>, Error> {
        with_db!(&self.db, pool => {
            let row = sqlx::query("SELECT name, account, region, created FROM buckets WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            row.as_ref().map(bucket_from_row).transpose()
        })
    }

    /// The buckets of an account, by name.
    pub async fn buckets_of(&self, account: &str) -> Result<Vec<BucketRow>, Error> {
        let mut buckets = with_db!(&self.db, pool => {
            let rows = sqlx::query("SELECT name, account, region, created FROM buckets WHERE account = $1")
                .bind(account)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            rows.iter().map(bucket_from_row).collect::<Result<Vec<_>, Error>>()?
        });
        // Bytewise, whatever the database's collation.
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(buckets)
    }

    /// Inserts a bucket; `Ok(false)` if the name is taken.
    pub async fn insert_bucket(&self, b: &BucketRow) -> Result<bool, Error> {
        with_db!(&self.db, pool => {
            let done = sqlx::query(
                "INSERT INTO buckets (name, account, region, created) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(&b.name)
            .bind(&b.account)
            .bind(&b.region)
            .bind(b.created)
            .execute(pool)
            .await
            .map_err(db)?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Deletes an empty bucket and its unfinished uploads; returns the blobs of their parts.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<Vec<String>, Error> {
        let locking = self.locking;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_with(locking.begin).await.map_err(db)?;
            let exists = sqlx::query(locking.bucket_for_delete)
                .bind(bucket)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if exists.is_none() {
                return Err(Error::NoSuchBucket(bucket.into()));
            }
            let any = sqlx::query("SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1")
                .bind(bucket)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if any.is_some() {
                return Err(Error::BucketNotEmpty(bucket.into()));
            }
            // Waits for the part writers, completions and aborts of these uploads in flight.
            sqlx::query(locking.uploads_of_bucket)
                .bind(bucket)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let blobs: Vec<String> = sqlx::query_scalar(
                "DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE bucket = $1) \
                 RETURNING blob",
            )
            .bind(bucket)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("DELETE FROM uploads WHERE bucket = $1")
                .bind(bucket)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM buckets WHERE name = $1")
                .bind(bucket)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_foreign_key_violation(&e) {
                        Error::BucketNotEmpty(bucket.into())
                    } else {
                        db(e)
                    }
                })?;
            tx.commit().await.map_err(db)?;
            Ok(blobs)
        })
    }

    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRow>, Error> {
        let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2");
        with_db!(&self.db, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(bucket)
                .bind(key.as_bytes())
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            row.as_ref().map(object_from_row).transpose()
        })
    }

    /// Makes an object visible, replacing any object of the same key; returns the replaced blobs.
    pub async fn put_object(&self, o: &ObjectRow) -> Result<Vec<String>, Error> {
        let locking = self.locking;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_with(locking.begin).await.map_err(db)?;
            let exists = sqlx::query(locking.bucket_for_writers)
                .bind(&o.bucket)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if exists.is_none() {
                return Err(Error::NoSuchBucket(o.bucket.clone()));
            }
            tx.lock_object_key(locking, &o.bucket, &o.key).await?;
            let old = tx.replace_object(o).await?;
            tx.commit().await.map_err(db)?;
            Ok(old)
        })
    }

    /// Removes an object; returns its blobs (none if there was no such object).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<Vec<String>, Error> {
        let locking = self.locking;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_with(locking.begin).await.map_err(db)?;
            tx.lock_object_key(locking, bucket, key).await?;
            let old: Option<String> =
                sqlx::query_scalar("DELETE FROM objects WHERE bucket = $1 AND key = $2 RETURNING segments")
                    .bind(bucket)
                    .bind(key.as_bytes())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            tx.commit().await.map_err(db)?;
            old.as_deref().map(blob_ids).transpose().map(Option::unwrap_or_default)
        })
    }

    /// One page of a listing.
    pub async fn list(&self, bucket: &str, query: ListQuery) -> Result<ListPage, Error> {
        let mut lister = Lister::new(query);
        let limit = lister.batch_size();
        while let Some(after) = lister.next_fetch() {
            let batch = with_db!(&self.db, pool => {
                let rows = sqlx::query(
                    "SELECT key, size, etag, last_modified FROM objects \
                     WHERE bucket = $1 AND key > $2 AND key >= $3 AND key < $4 ORDER BY key LIMIT $5",
                )
                .bind(bucket)
                .bind(after)
                .bind(lister.prefix())
                .bind(lister.upper())
                .bind(limit as i64)
                .fetch_all(pool)
                .await
                .map_err(db)?;
                rows.iter()
                    .map(|r| {
                        Ok(ListEntry {
                            key: key_of(r)?,
                            size: size_of(r)?,
                            etag: r.text("etag").map_err(db)?,
                            last_modified: r.int("last_modified").map_err(db)?,
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?
            });
            lister.feed(batch, limit);
        }
        Ok(lister.finish())
    }

    pub async fn insert_upload(&self, u: &UploadRow) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query("INSERT INTO uploads (upload_id, bucket, key, initiated, meta) VALUES ($1, $2, $3, $4, $5)")
                .bind(&u.upload_id)
                .bind(&u.bucket)
                .bind(u.key.as_bytes())
                .bind(u.initiated)
                .bind(&u.meta)
                .execute(pool)
                .await
                .map_err(|e| {
                    if is_foreign_key_violation(&e) {
                        Error::NoSuchBucket(u.bucket.clone())
                    } else {
                        db(e)
                    }
                })?;
        });
        Ok(())
    }

    pub async fn get_upload(&self, upload_id: &str) -> Result<Option<UploadRow>, Error> {
        with_db!(&self.db, pool => {
            let row = sqlx::query("SELECT upload_id, bucket, key, initiated, meta FROM uploads WHERE upload_id = $1")
                .bind(upload_id)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
            row.as_ref().map(upload_from_row).transpose()
        })
    }

    /// Stores a part, replacing an earlier upload of the same number; returns the replaced blob.
    pub async fn put_part(&self, upload_id: &str, p: &PartRow) -> Result<Option<String>, Error> {
        let locking = self.locking;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_with(locking.begin).await.map_err(db)?;
            let upload = sqlx::query(locking.upload)
                .bind(upload_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if upload.is_none() {
                return Err(Error::NoSuchUpload(upload_id.into()));
            }
            let old: Option<String> =
                sqlx::query_scalar("SELECT blob FROM parts WHERE upload_id = $1 AND part_number = $2")
                    .bind(upload_id)
                    .bind(i64::from(p.part_number))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            sqlx::query(
                "INSERT INTO parts (upload_id, part_number, blob, size, md5, last_modified) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET blob = excluded.blob, size = excluded.size, \
                 md5 = excluded.md5, last_modified = excluded.last_modified",
            )
            .bind(upload_id)
            .bind(i64::from(p.part_number))
            .bind(&p.blob)
            .bind(p.size as i64)
            .bind(&p.md5)
            .bind(p.last_modified)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(old)
        })
    }

    /// Parts after `marker`, in order, at most `limit`.
    pub async fn list_parts(&self, upload_id: &str, marker: i32, limit: usize) -> Result<Vec<PartRow>, Error> {
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT part_number, blob, size, md5, last_modified FROM parts \
                 WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
            )
            .bind(upload_id)
            .bind(i64::from(marker))
            .bind(limit as i64)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            rows.iter().map(part_from_row).collect()
        })
    }

    /// Completes an upload of `bucket` in one transaction: `assemble` turns the stored parts into
    /// the object (or refuses), the object replaces any object of its key, and the upload is gone.
    /// Of concurrent completions of one upload, one succeeds and the others find no upload.
    pub async fn complete_upload<F>(&self, bucket: &str, upload_id: &str, assemble: F) -> Result<Completed, Error>
    where
        F: FnOnce(&UploadRow, Vec<PartRow>) -> Result<(ObjectRow, Vec<String>), Error>,
    {
        let locking = self.locking;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_with(locking.begin).await.map_err(db)?;
            let exists = sqlx::query(locking.bucket_for_writers)
                .bind(bucket)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if exists.is_none() {
                return Err(Error::NoSuchBucket(bucket.into()));
            }
            let upload = sqlx::query(locking.upload)
                .bind(upload_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .as_ref()
                .map(upload_from_row)
                .transpose()?
                .filter(|u| u.bucket == bucket)
                .ok_or_else(|| Error::NoSuchUpload(upload_id.into()))?;
            let parts = sqlx::query(
                "SELECT part_number, blob, size, md5, last_modified FROM parts WHERE upload_id = $1 \
                 ORDER BY part_number",
            )
            .bind(upload_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(part_from_row)
            .collect::<Result<Vec<_>, Error>>()?;
            let (object, mut retired) = assemble(&upload, parts)?;
            if object.bucket != bucket {
                return Err(Error::NoSuchUpload(upload_id.into()));
            }
            tx.lock_object_key(locking, &object.bucket, &object.key).await?;
            retired.extend(tx.replace_object(&object).await?);
            sqlx::query("DELETE FROM parts WHERE upload_id = $1")
                .bind(upload_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM uploads WHERE upload_id = $1")
                .bind(upload_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(Completed { object, retired })
        })
    }

    /// Forgets an upload; returns the blobs of its parts.
    pub async fn abort_upload(&self, upload_id: &str) -> Result<Vec<String>, Error> {
        let locking = self.locking;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_with(locking.begin).await.map_err(db)?;
            let upload = sqlx::query(locking.upload)
                .bind(upload_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if upload.is_none() {
                return Err(Error::NoSuchUpload(upload_id.into()));
            }
            let blobs: Vec<String> = sqlx::query_scalar("DELETE FROM parts WHERE upload_id = $1 RETURNING blob")
                .bind(upload_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("DELETE FROM uploads WHERE upload_id = $1")
                .bind(upload_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(blobs)
        })
    }

    /// Uploads of a bucket under `prefix`, ordered by key then upload id, after the markers.
    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        limit: usize,
    ) -> Result<Vec<UploadRow>, Error> {
        let upper = crate::listing::prefix_upper_bound(prefix.as_bytes());
        with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT upload_id, bucket, key, initiated, meta FROM uploads \
                 WHERE bucket = $1 AND key >= $2 AND key < $3 AND (key > $4 OR (key = $4 AND upload_id > $5)) \
                 ORDER BY key, upload_id LIMIT $6",
            )
            .bind(bucket)
            .bind(prefix.as_bytes())
            .bind(&upper)
            .bind(key_marker.as_bytes())
            .bind(upload_id_marker)
            .bind(limit as i64)
            .fetch_all(pool)
            .await
            .map_err(db)?;
            rows.iter().map(upload_from_row).collect()
        })
    }

    /// Every blob the index refers to (for the clean-up of files a crash left behind). One
    /// statement, so one snapshot: a completion that moves blobs from parts to an object between
    /// two reads cannot hide them.
    pub async fn referenced_blobs(&self) -> Result<HashSet<String>, Error> {
        let rows = with_db!(&self.db, pool => {
            let rows = sqlx::query(
                "SELECT CAST(1 AS BIGINT) AS is_object, segments AS refs FROM objects \
                 UNION ALL SELECT CAST(0 AS BIGINT), blob FROM parts",
            )
            .fetch_all(pool)
            .await
            .map_err(db)?;
            rows.iter()
                .map(|r| Ok((r.int("is_object")? == 1, r.text("refs")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(db)?
        });
        let mut all = HashSet::new();
        for (is_object, refs) in rows {
            if is_object {
                all.extend(blob_ids(&refs)?);
            } else {
                all.insert(refs);
            }
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::testing::{Place, on_each_database};

    on_each_database!(
        lists_2500_keys_in_byte_order_across_pages,
        replacing_and_deleting_return_the_old_blobs,
        objects_need_their_bucket_and_buckets_must_be_empty_to_go,
        references_cover_objects_and_parts,
        concurrent_writers_of_one_key_retire_each_blob_once,
        concurrent_completions_of_one_upload_let_one_win,
        parts_written_during_a_completion_are_used_or_refused,
        deleting_a_bucket_races_its_writers_without_deadlock,
    );

    async fn index(place: &Place) -> Index {
        let index = place.index().await;
        index
            .insert_bucket(&BucketRow {
                name: "b".into(),
                account: "111111111111".into(),
                region: None,
                created: 0,
            })
            .await
            .expect("bucket");
        index
    }

    fn object(key: &str) -> ObjectRow {
        ObjectRow {
            bucket: "b".into(),
            key: key.into(),
            size: 1,
            etag: "e".into(),
            last_modified: 0,
            meta: "{}".into(),
            segments: vec![Segment(format!("blob-{key}"), 1)],
        }
    }

    fn upload(id: &str, key: &str) -> UploadRow {
        UploadRow {
            upload_id: id.into(),
            bucket: "b".into(),
            key: key.into(),
            initiated: 0,
            meta: "{}".into(),
        }
    }

    fn part(n: i32, blob: &str) -> PartRow {
        PartRow {
            part_number: n,
            blob: blob.into(),
            size: 1,
            md5: "m".into(),
            last_modified: 0,
        }
    }

    /// Assembles every stored part, in order, into the object of the upload's key.
    fn all_parts(upload: &UploadRow, parts: Vec<PartRow>) -> Result<(ObjectRow, Vec<String>), Error> {
        let mut o = object(&upload.key);
        o.segments = parts.into_iter().map(|p| Segment(p.blob, p.size)).collect();
        Ok((o, Vec::new()))
    }

    #[test]
    fn object_key_locks_are_the_same_in_every_version() {
        // Replicas of different versions during a rolling upgrade must lock the same keys.
        assert_eq!(key_hash("b", "k"), 1_848_796_187); // MD5("b\0k")
        assert_ne!(key_hash("b", "k"), key_hash("bk", ""));
    }

    fn q(prefix: &str, delimiter: Option<&str>, marker: Option<&str>, max_keys: usize) -> ListQuery {
        ListQuery {
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            marker: marker.map(Into::into),
            max_keys,
        }
    }

    /// Each blob in `written` is in `live` or in `retired`, exactly once in all.
    fn assert_accounted(written: &[String], live: &[String], retired: &[String]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for id in live.iter().chain(retired) {
            *seen.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id).collect();
        assert!(
            twice.is_empty(),
            "retired more than once or retired while live: {twice:?}"
        );
        let leaked: Vec<_> = written.iter().filter(|id| !seen.contains_key(id.as_str())).collect();
        assert!(leaked.is_empty(), "neither live nor retired (leaked): {leaked:?}");
        assert_eq!(seen.len(), written.len(), "accounted for blobs that were never written");
    }

    async fn lists_2500_keys_in_byte_order_across_pages(place: &Place) {
        let index = index(place).await;
        let mut keys: Vec<String> = (0..2500)
            .map(|i| format!("data/{:04}/part", i % 50) + &i.to_string())
            .collect();
        keys.extend([
            "a".into(),
            "a/b".into(),
            "\u{FF61}".into(),
            "\u{10000}".into(),
            "..".into(),
            "é".into(),
            "Z".into(),
            "a b".into(),
        ]);
        for k in &keys {
            index.put_object(&object(k)).await.expect("put");
        }
        keys.sort();
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let page = index
                .list("b", q("", None, marker.as_deref(), 1000))
                .await
                .expect("list");
            seen.extend(page.objects.iter().map(|e| e.key.clone()));
            if !page.truncated {
                break;
            }
            marker = page.next_marker;
        }
        assert_eq!(seen, keys);

        let page = index.list("b", q("data/", Some("/"), None, 1000)).await.expect("list");
        assert_eq!(page.common_prefixes.len(), 50);
        assert!(page.objects.is_empty() && !page.truncated);
        let page = index.list("b", q("data/", Some("/"), None, 20)).await.expect("list");
        assert_eq!(page.common_prefixes.len(), 20);
        assert_eq!(page.next_marker.as_deref(), Some("data/0019/"));
        let page = index
            .list("b", q("data/", Some("/"), Some("data/0019/"), 1000))
            .await
            .expect("list");
        assert_eq!(page.common_prefixes.first().map(String::as_str), Some("data/0020/"));
        assert_eq!(page.common_prefixes.len(), 30);

        let page = index.list("b", q("", Some("/"), None, 1000)).await.expect("list");
        assert_eq!(page.common_prefixes, ["a/", "data/"]);
        assert_eq!(
            page.objects.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["..", "Z", "a", "a b", "é", "\u{FF61}", "\u{10000}"]
        );
    }

    async fn replacing_and_deleting_return_the_old_blobs(place: &Place) {
        let index = index(place).await;
        assert!(index.put_object(&object("k")).await.expect("put").is_empty());
        let mut again = object("k");
        again.segments = vec![Segment("new".into(), 1)];
        again.size = 5_000_000_000;
        assert_eq!(index.put_object(&again).await.expect("put"), ["blob-k"]);
        let stored = index.get_object("b", "k").await.expect("get").expect("an object");
        assert_eq!((stored.size, stored.segments), (5_000_000_000, again.segments.clone()));
        assert_eq!(index.delete_object("b", "k").await.expect("delete"), ["new"]);
        assert!(index.delete_object("b", "k").await.expect("delete").is_empty());
        assert!(index.get_object("b", "k").await.expect("get").is_none());
    }

    async fn objects_need_their_bucket_and_buckets_must_be_empty_to_go(place: &Place) {
        let index = index(place).await;
        let mut o = object("k");
        o.bucket = "nope".into();
        assert!(matches!(index.put_object(&o).await, Err(Error::NoSuchBucket(_))));
        let mut u = upload("u0", "k");
        u.bucket = "nope".into();
        assert!(matches!(index.insert_upload(&u).await, Err(Error::NoSuchBucket(_))));
        index.put_object(&object("k")).await.expect("put");
        assert!(matches!(index.delete_bucket("b").await, Err(Error::BucketNotEmpty(_))));
        index.delete_object("b", "k").await.expect("delete");
        index.insert_upload(&upload("u", "k")).await.expect("upload");
        assert_eq!(index.put_part("u", &part(1, "p1")).await.expect("part"), None);
        assert_eq!(
            index.put_part("u", &part(1, "p1b")).await.expect("part"),
            Some("p1".into())
        );
        assert_eq!(index.delete_bucket("b").await.expect("delete bucket"), ["p1b"]);
        assert!(matches!(
            index.put_part("u", &part(1, "p1")).await,
            Err(Error::NoSuchUpload(_))
        ));
        assert!(matches!(index.delete_bucket("b").await, Err(Error::NoSuchBucket(_))));
        assert!(index.bucket("b").await.expect("bucket").is_none());
    }

    async fn references_cover_objects_and_parts(place: &Place) {
        let index = index(place).await;
        let mut o = object("k");
        o.segments = vec![Segment("s1".into(), 1), Segment("s2".into(), 1)];
        index.put_object(&o).await.expect("put");
        index.insert_upload(&upload("u", "k2")).await.expect("upload");
        index.put_part("u", &part(1, "p1")).await.expect("part");
        index.put_part("u", &part(2, "p2")).await.expect("part");
        let refs = index.referenced_blobs().await.expect("refs");
        let expected: HashSet<String> = ["s1", "s2", "p1", "p2"].map(String::from).into();
        assert_eq!(refs, expected);
        let parts = index.list_parts("u", 1, 10).await.expect("parts");
        assert_eq!(parts, [part(2, "p2")]);
        let uploads = index.list_uploads("b", "k", "", "", 10).await.expect("uploads");
        assert_eq!(uploads.iter().map(|u| u.upload_id.as_str()).collect::<Vec<_>>(), ["u"]);
    }

    /// Two replicas (each with its own pool) race puts and deletes of one key: every blob ends up
    /// live or retired by exactly one of them. Without locking the key on PostgreSQL, two writers
    /// read the same old object: one of the new blobs is never retired, the old one twice.
    async fn concurrent_writers_of_one_key_retire_each_blob_once(place: &Place) {
        let replicas = [Arc::new(index(place).await), Arc::new(place.index().await)];
        let mut tasks = Vec::new();
        for writer in 0..6 {
            let index = replicas[writer % 2].clone();
            tasks.push(tokio::spawn(async move {
                let (mut written, mut retired) = (Vec::new(), Vec::new());
                for i in 0..40 {
                    if writer == 0 && i % 4 == 3 {
                        retired.extend(index.delete_object("b", "k").await.expect("delete"));
                        continue;
                    }
                    let mut o = object("k");
                    o.segments = vec![Segment(format!("w{writer}-{i}"), 1)];
                    written.push(o.segments[0].0.clone());
                    retired.extend(index.put_object(&o).await.expect("put"));
                }
                (written, retired)
            }));
        }
        let (mut written, mut retired) = (Vec::new(), Vec::new());
        for t in tasks {
            let (w, r) = t.await.expect("task");
            written.extend(w);
            retired.extend(r);
        }
        let live: Vec<String> = replicas[1]
            .get_object("b", "k")
            .await
            .expect("get")
            .map(|o| o.segments.into_iter().map(|Segment(id, _)| id).collect())
            .unwrap_or_default();
        assert_accounted(&written, &live, &retired);
    }

    /// Two replicas complete one upload at once: one wins, the other finds no upload; the parts
    /// the winner left out and the object it replaced are retired once, by the winner.
    async fn concurrent_completions_of_one_upload_let_one_win(place: &Place) {
        let replicas = [Arc::new(index(place).await), Arc::new(place.index().await)];
        for round in 0..10 {
            let id = format!("u{round}");
            replicas[0].insert_upload(&upload(&id, "k")).await.expect("upload");
            for n in 1..=3 {
                replicas[n % 2]
                    .put_part(&id, &part(n as i32, &format!("{id}-p{n}")))
                    .await
                    .expect("part");
            }
            let attempts = replicas.iter().cloned().map(|index| {
                let id = id.clone();
                tokio::spawn(async move {
                    index
                        .complete_upload("b", &id, |upload, parts| {
                            // Parts 1 and 2 make the object; part 3 is left out.
                            let (mut o, _) = all_parts(upload, parts.clone())?;
                            o.segments.truncate(2);
                            Ok((o, parts[2..].iter().map(|p| p.blob.clone()).collect()))
                        })
                        .await
                })
            });
            let mut outcomes = Vec::new();
            for a in attempts.collect::<Vec<_>>() {
                outcomes.push(a.await.expect("task"));
            }
            let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: exactly one completion succeeds");
            assert!(
                outcomes.iter().any(|o| matches!(o, Err(Error::NoSuchUpload(_)))),
                "round {round}: the other finds no upload"
            );
            let mut expected = vec![format!("{id}-p3")];
            if round > 0 {
                expected.extend([format!("u{}-p1", round - 1), format!("u{}-p2", round - 1)]);
            }
            let mut retired = won[0].retired.clone();
            retired.sort();
            expected.sort();
            assert_eq!(retired, expected, "round {round}");
        }
        assert!(replicas[0].get_upload("u9").await.expect("get").is_none());
        assert!(replicas[1].list_parts("u9", 0, 10).await.expect("parts").is_empty());
    }

    /// Parts written on one replica while another completes the upload: each part is either in
    /// the object, replaced (and returned), or refused because the upload is gone; none is lost.
    async fn parts_written_during_a_completion_are_used_or_refused(place: &Place) {
        let replicas = [Arc::new(index(place).await), Arc::new(place.index().await)];
        for round in 0..5 {
            let id = format!("u{round}");
            replicas[0].insert_upload(&upload(&id, &id)).await.expect("upload");
            let writer = {
                let index = replicas[0].clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let (mut written, mut retired) = (Vec::new(), Vec::new());
                    for i in 0..30 {
                        let blob = format!("{id}-{i}");
                        match index.put_part(&id, &part(i % 3 + 1, &blob)).await {
                            Ok(old) => {
                                written.push(blob);
                                retired.extend(old);
                            }
                            Err(Error::NoSuchUpload(_)) => break,
                            Err(e) => panic!("put part: {e}"),
                        }
                    }
                    (written, retired)
                })
            };
            // Complete once a part exists (an upload without parts cannot be completed).
            let completed = loop {
                let attempt = replicas[1].complete_upload("b", &id, |upload, parts| {
                    if parts.is_empty() {
                        return Err(Error::InvalidPart("no parts yet".into()));
                    }
                    all_parts(upload, parts)
                });
                match attempt.await {
                    Ok(c) => break c,
                    Err(Error::InvalidPart(_)) => tokio::task::yield_now().await,
                    Err(e) => panic!("complete: {e}"),
                }
            };
            let (written, mut retired) = writer.await.expect("task");
            retired.extend(completed.retired);
            let live: Vec<String> = completed.object.segments.into_iter().map(|Segment(id, _)| id).collect();
            assert_accounted(&written, &live, &retired);
        }
    }

    /// A bucket is deleted on one replica while the other completes an upload in it, writes a part
    /// and puts an object. Each call succeeds or fails as S3 would (never with a database error,
    /// as a deadlock would be on PostgreSQL), and every blob a call accepted is live or retired.
    async fn deleting_a_bucket_races_its_writers_without_deadlock(place: &Place) {
        let replicas = [Arc::new(index(place).await), Arc::new(place.index().await)];
        for round in 0..10 {
            let bucket = format!("d{round}");
            let row = BucketRow {
                name: bucket.clone(),
                account: "111111111111".into(),
                region: None,
                created: 0,
            };
            assert!(replicas[0].insert_bucket(&row).await.expect("bucket"));
            let id = format!("u{round}");
            let mut u = upload(&id, "k");
            u.bucket = bucket.clone();
            replicas[0].insert_upload(&u).await.expect("upload");
            let p1 = format!("{id}-p1");
            replicas[1].put_part(&id, &part(1, &p1)).await.expect("part");

            let (r0, r1) = (replicas[0].clone(), replicas[1].clone());
            let (b, i) = (bucket.clone(), id.clone());
            let complete = tokio::spawn(async move {
                r0.complete_upload(&b, &i, |upload, parts| {
                    let (mut o, unused) = all_parts(upload, parts)?;
                    o.bucket = upload.bucket.clone();
                    Ok((o, unused))
                })
                .await
            });
            let delete = {
                let (r1, b) = (r1.clone(), bucket.clone());
                tokio::spawn(async move { r1.delete_bucket(&b).await })
            };
            let p2 = format!("{id}-p2");
            let put_part = {
                let (r0, i, p2) = (replicas[0].clone(), id.clone(), p2.clone());
                tokio::spawn(async move { r0.put_part(&i, &part(2, &p2)).await })
            };
            let mut o = object("other");
            o.bucket = bucket.clone();
            let put_object = tokio::spawn(async move { r1.put_object(&o).await });

            let acceptable = |e: &Error| {
                matches!(
                    e,
                    Error::NoSuchBucket(_) | Error::NoSuchUpload(_) | Error::BucketNotEmpty(_)
                )
            };
            let (mut written, mut retired) = (vec![p1], Vec::new());
            match complete.await.expect("task") {
                Ok(c) => retired.extend(c.retired),
                Err(e) => assert!(acceptable(&e), "round {round}: complete: {e}"),
            }
            match delete.await.expect("task") {
                Ok(blobs) => retired.extend(blobs),
                Err(e) => assert!(acceptable(&e), "round {round}: delete bucket: {e}"),
            }
            match put_part.await.expect("task") {
                Ok(old) => {
                    written.push(p2);
                    retired.extend(old);
                }
                Err(e) => assert!(acceptable(&e), "round {round}: put part: {e}"),
            }
            match put_object.await.expect("task") {
                Ok(old) => {
                    written.push("blob-other".into());
                    retired.extend(old);
                }
                Err(e) => assert!(acceptable(&e), "round {round}: put object: {e}"),
            }
            let refs = replicas[0].referenced_blobs().await.expect("refs");
            let live: Vec<String> = written.iter().filter(|id| refs.contains(*id)).cloned().collect();
            assert_accounted(&written, &live, &retired);
            // Whatever won, nothing is left that refers to a deleted bucket.
            if replicas[1].bucket(&bucket).await.expect("bucket").is_none() {
                assert!(replicas[1].get_upload(&id).await.expect("upload").is_none());
                assert!(replicas[1].get_object(&bucket, "other").await.expect("get").is_none());
            }
        }
    }
}
