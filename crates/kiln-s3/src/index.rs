//! The object index: one SQLite file (WAL, `synchronous=FULL`) mapping buckets and keys to blob
//! files. Committing a row is what makes an object visible; every function here is one transaction.
//! Keys are stored as BLOBs so that SQLite orders them bytewise, as S3 lists them.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::Error;
use crate::listing::{ListEntry, ListPage, ListQuery, Lister};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

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

fn db(e: sqlx::Error) -> Error {
    Error::Index(e.to_string())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

fn key_of(row: &SqliteRow) -> Result<String, Error> {
    let bytes: Vec<u8> = row.try_get("key").map_err(db)?;
    String::from_utf8(bytes).map_err(|_| Error::Corrupt("a key in the index is not UTF-8".into()))
}

fn segments_of(text: &str) -> Result<Vec<Segment>, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("unreadable segment list: {e}")))
}

fn segments_json(segments: &[Segment]) -> String {
    serde_json::to_string(segments).unwrap_or_else(|_| "[]".into())
}

fn object_from_row(row: &SqliteRow) -> Result<ObjectRow, Error> {
    let segments: String = row.try_get("segments").map_err(db)?;
    Ok(ObjectRow {
        bucket: row.try_get("bucket").map_err(db)?,
        key: key_of(row)?,
        size: row.try_get::<i64, _>("size").map_err(db)?.max(0) as u64,
        etag: row.try_get("etag").map_err(db)?,
        last_modified: row.try_get("last_modified").map_err(db)?,
        meta: row.try_get("meta").map_err(db)?,
        segments: segments_of(&segments)?,
    })
}

fn upload_from_row(row: &SqliteRow) -> Result<UploadRow, Error> {
    Ok(UploadRow {
        upload_id: row.try_get("upload_id").map_err(db)?,
        bucket: row.try_get("bucket").map_err(db)?,
        key: key_of(row)?,
        initiated: row.try_get("initiated").map_err(db)?,
        meta: row.try_get("meta").map_err(db)?,
    })
}

fn part_from_row(row: &SqliteRow) -> Result<PartRow, Error> {
    Ok(PartRow {
        part_number: row.try_get("part_number").map_err(db)?,
        blob: row.try_get("blob").map_err(db)?,
        size: row.try_get::<i64, _>("size").map_err(db)?.max(0) as u64,
        md5: row.try_get("md5").map_err(db)?,
        last_modified: row.try_get("last_modified").map_err(db)?,
    })
}

const OBJECT_COLUMNS: &str = "bucket, key, size, etag, last_modified, meta, segments";

/// The index.
#[derive(Clone)]
pub(crate) struct Index {
    pool: SqlitePool,
}

impl Index {
    /// Opens (creating if needed) the index file and applies migrations.
    /// Write transactions start with `BEGIN IMMEDIATE`: they read before they write, and a deferred
    /// transaction that must upgrade its lock under contention fails instead of waiting.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(db)?;
        MIGRATIONS
            .run(&pool)
            .await
            .map_err(|e| Error::Index(format!("migration failed: {e}")))?;
        Ok(Self { pool })
    }

    pub async fn buckets(&self) -> Result<Vec<BucketRow>, Error> {
        let rows = sqlx::query("SELECT name, account, region, created FROM buckets")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(BucketRow {
                    name: r.try_get("name").map_err(db)?,
                    account: r.try_get("account").map_err(db)?,
                    region: r.try_get("region").map_err(db)?,
                    created: r.try_get("created").map_err(db)?,
                })
            })
            .collect()
    }

    /// Inserts a bucket; `Ok(false)` if the name is taken.
    pub async fn insert_bucket(&self, b: &BucketRow) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO buckets (name, account, region, created) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&b.name)
        .bind(&b.account)
        .bind(&b.region)
        .bind(b.created)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes an empty bucket and its unfinished uploads; returns the blobs of their parts.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<Vec<String>, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let exists = sqlx::query("SELECT 1 FROM buckets WHERE name = $1")
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
        let blobs: Vec<String> = sqlx::query_scalar(
            "SELECT p.blob FROM parts p JOIN uploads u ON u.upload_id = p.upload_id WHERE u.bucket = $1",
        )
        .bind(bucket)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE bucket = $1)")
            .bind(bucket)
            .execute(&mut *tx)
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
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(blobs)
    }

    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRow>, Error> {
        let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bucket)
            .bind(key.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(object_from_row).transpose()
    }

    /// Makes an object visible, replacing any object of the same key; returns the replaced blobs.
    pub async fn put_object(&self, o: &ObjectRow) -> Result<Vec<String>, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let old = old_segments(&mut tx, &o.bucket, &o.key).await?;
        upsert_object(&mut tx, o).await?;
        tx.commit().await.map_err(db)?;
        Ok(old)
    }

    /// Removes an object; returns its blobs (none if there was no such object).
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<Vec<String>, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let old = old_segments(&mut tx, bucket, key).await?;
        sqlx::query("DELETE FROM objects WHERE bucket = $1 AND key = $2")
            .bind(bucket)
            .bind(key.as_bytes())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(old)
    }

    /// One page of a listing.
    pub async fn list(&self, bucket: &str, query: ListQuery) -> Result<ListPage, Error> {
        let mut lister = Lister::new(query);
        let limit = lister.batch_size();
        while let Some(after) = lister.next_fetch() {
            let rows = sqlx::query(
                "SELECT key, size, etag, last_modified FROM objects \
                 WHERE bucket = $1 AND key > $2 AND key >= $3 AND key < $4 ORDER BY key LIMIT $5",
            )
            .bind(bucket)
            .bind(after)
            .bind(lister.prefix())
            .bind(lister.upper())
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let batch = rows
                .iter()
                .map(|r| {
                    Ok(ListEntry {
                        key: key_of(r)?,
                        size: r.try_get::<i64, _>("size").map_err(db)?.max(0) as u64,
                        etag: r.try_get("etag").map_err(db)?,
                        last_modified: r.try_get("last_modified").map_err(db)?,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            lister.feed(batch, limit);
        }
        Ok(lister.finish())
    }

    pub async fn insert_upload(&self, u: &UploadRow) -> Result<(), Error> {
        sqlx::query("INSERT INTO uploads (upload_id, bucket, key, initiated, meta) VALUES ($1, $2, $3, $4, $5)")
            .bind(&u.upload_id)
            .bind(&u.bucket)
            .bind(u.key.as_bytes())
            .bind(u.initiated)
            .bind(&u.meta)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    Error::NoSuchBucket(u.bucket.clone())
                } else {
                    db(e)
                }
            })?;
        Ok(())
    }

    pub async fn get_upload(&self, upload_id: &str) -> Result<Option<UploadRow>, Error> {
        let row = sqlx::query("SELECT upload_id, bucket, key, initiated, meta FROM uploads WHERE upload_id = $1")
            .bind(upload_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(upload_from_row).transpose()
    }

    /// Stores a part, replacing an earlier upload of the same number; returns the replaced blob.
    pub async fn put_part(&self, upload_id: &str, p: &PartRow) -> Result<Option<String>, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let old: Option<String> =
            sqlx::query_scalar("SELECT blob FROM parts WHERE upload_id = $1 AND part_number = $2")
                .bind(upload_id)
                .bind(p.part_number)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        sqlx::query(
            "INSERT INTO parts (upload_id, part_number, blob, size, md5, last_modified) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (upload_id, part_number) DO UPDATE SET blob = excluded.blob, size = excluded.size, \
             md5 = excluded.md5, last_modified = excluded.last_modified",
        )
        .bind(upload_id)
        .bind(p.part_number)
        .bind(&p.blob)
        .bind(p.size as i64)
        .bind(&p.md5)
        .bind(p.last_modified)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                Error::NoSuchUpload(upload_id.into())
            } else {
                db(e)
            }
        })?;
        tx.commit().await.map_err(db)?;
        Ok(old)
    }

    /// Parts after `marker`, in order, at most `limit`.
    pub async fn list_parts(&self, upload_id: &str, marker: i32, limit: usize) -> Result<Vec<PartRow>, Error> {
        let rows = sqlx::query(
            "SELECT part_number, blob, size, md5, last_modified FROM parts \
             WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3",
        )
        .bind(upload_id)
        .bind(marker)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(part_from_row).collect()
    }

    /// Completes an upload in one transaction: `assemble` turns the stored parts into the object
    /// (or refuses), the object replaces any object of its key, and the upload is gone.
    pub async fn complete_upload<F>(&self, upload_id: &str, assemble: F) -> Result<Completed, Error>
    where
        F: FnOnce(&UploadRow, Vec<PartRow>) -> Result<(ObjectRow, Vec<String>), Error>,
    {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let upload = sqlx::query("SELECT upload_id, bucket, key, initiated, meta FROM uploads WHERE upload_id = $1")
            .bind(upload_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .as_ref()
            .map(upload_from_row)
            .transpose()?
            .ok_or_else(|| Error::NoSuchUpload(upload_id.into()))?;
        let parts = sqlx::query(
            "SELECT part_number, blob, size, md5, last_modified FROM parts WHERE upload_id = $1 ORDER BY part_number",
        )
        .bind(upload_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        .iter()
        .map(part_from_row)
        .collect::<Result<Vec<_>, Error>>()?;
        let (object, mut retired) = assemble(&upload, parts)?;
        retired.extend(old_segments(&mut tx, &object.bucket, &object.key).await?);
        upsert_object(&mut tx, &object).await?;
        delete_upload_rows(&mut tx, upload_id).await?;
        tx.commit().await.map_err(db)?;
        Ok(Completed { object, retired })
    }

    /// Forgets an upload; returns the blobs of its parts.
    pub async fn abort_upload(&self, upload_id: &str) -> Result<Vec<String>, Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let exists = sqlx::query("SELECT 1 FROM uploads WHERE upload_id = $1")
            .bind(upload_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(Error::NoSuchUpload(upload_id.into()));
        }
        let blobs: Vec<String> = sqlx::query_scalar("SELECT blob FROM parts WHERE upload_id = $1")
            .bind(upload_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        delete_upload_rows(&mut tx, upload_id).await?;
        tx.commit().await.map_err(db)?;
        Ok(blobs)
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
        let rows = sqlx::query(
            "SELECT upload_id, bucket, key, initiated, meta FROM uploads \
             WHERE bucket = $1 AND key >= $2 AND key < $3 AND (key > $4 OR (key = $4 AND upload_id > $5)) \
             ORDER BY key, upload_id LIMIT $6",
        )
        .bind(bucket)
        .bind(prefix.as_bytes())
        .bind(upper)
        .bind(key_marker.as_bytes())
        .bind(upload_id_marker)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(upload_from_row).collect()
    }

    /// Every blob the index refers to (for the clean-up of files a crash left behind).
    pub async fn referenced_blobs(&self) -> Result<HashSet<String>, Error> {
        let mut all = HashSet::new();
        let segments: Vec<String> = sqlx::query_scalar("SELECT segments FROM objects")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        for s in segments {
            all.extend(segments_of(&s)?.into_iter().map(|Segment(id, _)| id));
        }
        let parts: Vec<String> = sqlx::query_scalar("SELECT blob FROM parts")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        all.extend(parts);
        Ok(all)
    }
}

async fn old_segments(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    bucket: &str,
    key: &str,
) -> Result<Vec<String>, Error> {
    let old: Option<String> = sqlx::query_scalar("SELECT segments FROM objects WHERE bucket = $1 AND key = $2")
        .bind(bucket)
        .bind(key.as_bytes())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    Ok(match old {
        Some(s) => segments_of(&s)?.into_iter().map(|Segment(id, _)| id).collect(),
        None => Vec::new(),
    })
}

async fn upsert_object(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, o: &ObjectRow) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO objects (bucket, key, size, etag, last_modified, meta, segments) VALUES ($1, $2, $3, $4, $5, $6, $7) \
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
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            Error::NoSuchBucket(o.bucket.clone())
        } else {
            db(e)
        }
    })?;
    Ok(())
}

async fn delete_upload_rows(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, upload_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM parts WHERE upload_id = $1")
        .bind(upload_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    sqlx::query("DELETE FROM uploads WHERE upload_id = $1")
        .bind(upload_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn index() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = Index::open(&dir.path().join("index.db")).await.expect("open index");
        index
            .insert_bucket(&BucketRow {
                name: "b".into(),
                account: "111111111111".into(),
                region: None,
                created: 0,
            })
            .await
            .expect("bucket");
        (dir, index)
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

    fn q(prefix: &str, delimiter: Option<&str>, marker: Option<&str>, max_keys: usize) -> ListQuery {
        ListQuery {
            prefix: prefix.into(),
            delimiter: delimiter.map(Into::into),
            marker: marker.map(Into::into),
            max_keys,
        }
    }

    #[tokio::test]
    async fn lists_2500_keys_in_byte_order_across_pages() {
        let (_dir, index) = index().await;
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
            ["..", "a", "é", "\u{FF61}", "\u{10000}"]
        );
    }

    #[tokio::test]
    async fn replacing_and_deleting_return_the_old_blobs() {
        let (_dir, index) = index().await;
        assert!(index.put_object(&object("k")).await.expect("put").is_empty());
        let mut again = object("k");
        again.segments = vec![Segment("new".into(), 1)];
        assert_eq!(index.put_object(&again).await.expect("put"), ["blob-k"]);
        assert_eq!(index.delete_object("b", "k").await.expect("delete"), ["new"]);
        assert!(index.delete_object("b", "k").await.expect("delete").is_empty());
        assert!(index.get_object("b", "k").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn objects_need_their_bucket_and_buckets_must_be_empty_to_go() {
        let (_dir, index) = index().await;
        let mut o = object("k");
        o.bucket = "nope".into();
        assert!(matches!(index.put_object(&o).await, Err(Error::NoSuchBucket(_))));
        index.put_object(&object("k")).await.expect("put");
        assert!(matches!(index.delete_bucket("b").await, Err(Error::BucketNotEmpty(_))));
        index.delete_object("b", "k").await.expect("delete");
        index
            .insert_upload(&UploadRow {
                upload_id: "u".into(),
                bucket: "b".into(),
                key: "k".into(),
                initiated: 0,
                meta: "{}".into(),
            })
            .await
            .expect("upload");
        let part = PartRow {
            part_number: 1,
            blob: "p1".into(),
            size: 1,
            md5: "m".into(),
            last_modified: 0,
        };
        assert_eq!(index.put_part("u", &part).await.expect("part"), None);
        assert_eq!(index.delete_bucket("b").await.expect("delete bucket"), ["p1"]);
        assert!(matches!(index.put_part("u", &part).await, Err(Error::NoSuchUpload(_))));
        assert!(matches!(index.delete_bucket("b").await, Err(Error::NoSuchBucket(_))));
    }
}
