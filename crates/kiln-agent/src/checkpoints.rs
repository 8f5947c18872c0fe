//! Checkpoints (`CheckpointConfig{S3Uri, LocalPath}`, reference §9): the S3 prefix restored into the
//! local directory before the algorithm starts, the directory mirrored to the prefix while it runs
//! (a file is uploaded once it is settled: unchanged since the previous scan, or last written at
//! least [`SETTLED_AFTER`] ago; again whenever it changes; a file deleted locally is deleted from the
//! prefix), and a last full sync when the algorithm has ended. The age rule matters for algorithms
//! that checkpoint faster than the scan and keep only the newest few files (the built-in XGBoost
//! writes one file a round and keeps five): waiting for a second scan would upload none of them.
//! Every host of a job syncs into the same prefix, as on SageMaker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::staging::Objects;

/// How often the directory is scanned while the algorithm runs.
pub const SCAN_EVERY: Duration = Duration::from_millis(500);

/// A file last written this long ago is taken as complete without waiting for another scan.
pub const SETTLED_AFTER: Duration = Duration::from_millis(200);

/// `s3://b/p` and `s3://b/p/` both name the folder `s3://b/p/`.
fn folder(uri: &str) -> String {
    format!("{}/", uri.trim_end_matches('/'))
}

/// Downloads every object under `uri` into `local` (keys relative to the prefix). Returns how many.
pub async fn restore<O: Objects>(o: &O, uri: &str, local: &Path) -> Result<usize, String> {
    let prefix = folder(uri);
    let mut n = 0;
    for object in o.list(&prefix).await? {
        let Some(rel) = object.strip_prefix(&prefix) else {
            continue;
        };
        if rel.is_empty() || rel.ends_with('/') {
            continue;
        }
        crate::tree::safe_relative(rel).map_err(|e| {
            format!(
                "checkpoint object {object} cannot be restored under {}: {e}",
                local.display()
            )
        })?;
        let dest = local.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        o.download(&object, &dest)
            .await
            .map_err(|e| format!("cannot restore checkpoint {object}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

/// What a file looked like: size and modification time.
type Seen = (u64, Option<SystemTime>);

/// Every regular file under `dir`, by `/`-separated relative path.
fn scan(dir: &Path) -> BTreeMap<String, (PathBuf, Seen)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && let Ok(rel) = path.strip_prefix(dir)
            {
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.insert(rel, (path, (meta.len(), meta.modified().ok())));
            }
        }
    }
    out
}

/// The mirror of one checkpoint directory: what was uploaded, and what the last scan saw.
pub struct Mirror {
    uri: String,
    local: PathBuf,
    uploaded: BTreeMap<String, Seen>,
    last_scan: BTreeMap<String, Seen>,
}

impl Mirror {
    /// A mirror of `local` to `uri`, which holds what was just restored (not uploaded again).
    pub fn new(uri: &str, local: &Path) -> Mirror {
        let seen: BTreeMap<String, Seen> = scan(local).into_iter().map(|(k, (_, s))| (k, s)).collect();
        Mirror {
            uri: folder(uri),
            local: local.to_path_buf(),
            uploaded: seen.clone(),
            last_scan: seen,
        }
    }

    /// One pass: uploads files that changed since they were uploaded and (unless `all`) have not
    /// changed since the previous pass; deletes objects of files that are gone. Returns the
    /// number of objects written or deleted.
    pub async fn sync<O: Objects>(&mut self, o: &O, all: bool) -> Result<usize, String> {
        let now = scan(&self.local);
        let clock = SystemTime::now();
        let mut n = 0;
        for (rel, (path, seen)) in &now {
            let old = seen
                .1
                .and_then(|m| clock.duration_since(m).ok())
                .is_some_and(|age| age >= SETTLED_AFTER);
            let settled = all || old || self.last_scan.get(rel) == Some(seen);
            if settled && self.uploaded.get(rel) != Some(seen) {
                let uri = format!("{}{rel}", self.uri);
                if let Err(e) = o.upload(path, &uri).await {
                    if !path.exists() {
                        // Deleted by the algorithm since the scan (an older checkpoint it rotated
                        // out): nothing to upload, and the next pass mirrors the deletion.
                        continue;
                    }
                    return Err(format!("cannot upload checkpoint {uri}: {e}"));
                }
                self.uploaded.insert(rel.clone(), *seen);
                n += 1;
            }
        }
        let gone: Vec<String> = self
            .uploaded
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for rel in gone {
            let uri = format!("{}{rel}", self.uri);
            o.delete(&uri)
                .await
                .map_err(|e| format!("cannot delete checkpoint {uri}: {e}"))?;
            self.uploaded.remove(&rel);
            n += 1;
        }
        self.last_scan = now.into_iter().map(|(k, (_, s))| (k, s)).collect();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Objects in memory, by URI, recording writes.
    #[derive(Default)]
    struct Store(Mutex<BTreeMap<String, Vec<u8>>>);

    impl Objects for Store {
        async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect())
        }
        async fn download(&self, uri: &str, dest: &Path) -> Result<(), String> {
            let b = self.0.lock().unwrap().get(uri).cloned().ok_or("NoSuchKey")?;
            std::fs::write(dest, b).map_err(|e| e.to_string())
        }
        async fn get_bytes(&self, uri: &str) -> Result<Vec<u8>, String> {
            self.0
                .lock()
                .unwrap()
                .get(uri)
                .cloned()
                .ok_or_else(|| "NoSuchKey".into())
        }
        async fn upload(&self, src: &Path, uri: &str) -> Result<(), String> {
            let b = std::fs::read(src).map_err(|e| e.to_string())?;
            self.0.lock().unwrap().insert(uri.to_string(), b);
            Ok(())
        }
        async fn delete(&self, uri: &str) -> Result<(), String> {
            self.0.lock().unwrap().remove(uri);
            Ok(())
        }
    }

    fn get(s: &Store, uri: &str) -> Option<String> {
        s.0.lock()
            .unwrap()
            .get(uri)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    #[tokio::test]
    async fn files_upload_once_settled_changes_follow_and_deletions_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::default();
        let mut m = Mirror::new("s3://b/ck", dir.path());
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/epoch-1"), "one").unwrap();
        // Seen for the first time: not settled yet.
        assert_eq!(m.sync(&store, false).await.unwrap(), 0);
        assert_eq!(m.sync(&store, false).await.unwrap(), 1);
        assert_eq!(get(&store, "s3://b/ck/sub/epoch-1").as_deref(), Some("one"));
        assert_eq!(m.sync(&store, false).await.unwrap(), 0, "unchanged: not uploaded again");
        std::fs::write(dir.path().join("sub/epoch-1"), "one, rewritten").unwrap();
        std::fs::write(dir.path().join("last"), "x").unwrap();
        // The final sync takes everything at once.
        assert_eq!(m.sync(&store, true).await.unwrap(), 2);
        assert_eq!(get(&store, "s3://b/ck/sub/epoch-1").as_deref(), Some("one, rewritten"));
        std::fs::remove_file(dir.path().join("last")).unwrap();
        assert_eq!(m.sync(&store, false).await.unwrap(), 1);
        assert_eq!(get(&store, "s3://b/ck/last"), None);
    }

    #[tokio::test]
    async fn files_written_a_while_ago_upload_on_first_sight_and_vanished_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::default();
        let mut m = Mirror::new("s3://b/ck", dir.path());
        // Checkpoints rotated faster than the scan: each is seen once, already complete.
        for round in 0..3 {
            let path = dir.path().join(format!("xgboost-checkpoint.{round}"));
            std::fs::write(&path, format!("round {round}")).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::now() - SETTLED_AFTER * 2).unwrap();
        }
        std::fs::write(dir.path().join("being-written"), "partial").unwrap();
        assert_eq!(m.sync(&store, false).await.unwrap(), 3);
        assert_eq!(
            get(&store, "s3://b/ck/xgboost-checkpoint.2").as_deref(),
            Some("round 2")
        );
        assert_eq!(
            get(&store, "s3://b/ck/being-written"),
            None,
            "written just now: not settled"
        );

        /// A store whose upload finds the file gone, as when the algorithm deletes it mid-pass.
        struct Vanishing<'a>(&'a Store);
        impl Objects for Vanishing<'_> {
            async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
                self.0.list(prefix).await
            }
            async fn download(&self, uri: &str, dest: &Path) -> Result<(), String> {
                self.0.download(uri, dest).await
            }
            async fn get_bytes(&self, uri: &str) -> Result<Vec<u8>, String> {
                self.0.get_bytes(uri).await
            }
            async fn upload(&self, src: &Path, uri: &str) -> Result<(), String> {
                std::fs::remove_file(src).map_err(|e| e.to_string())?;
                self.0.upload(src, uri).await
            }
            async fn delete(&self, uri: &str) -> Result<(), String> {
                self.0.delete(uri).await
            }
        }
        assert_eq!(m.sync(&Vanishing(&store), true).await.unwrap(), 0);
        assert_eq!(get(&store, "s3://b/ck/being-written"), None);
    }

    #[tokio::test]
    async fn restore_brings_the_prefix_back_and_is_not_uploaded_again() {
        let store = Store::default();
        store
            .0
            .lock()
            .unwrap()
            .insert("s3://b/ck/a/epoch-3".into(), b"3".to_vec());
        store
            .0
            .lock()
            .unwrap()
            .insert("s3://b/ck2/other".into(), b"no".to_vec());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(restore(&store, "s3://b/ck/", dir.path()).await.unwrap(), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("a/epoch-3")).unwrap(), "3");
        assert!(!dir.path().join("other").exists());
        let mut m = Mirror::new("s3://b/ck", dir.path());
        assert_eq!(m.sync(&store, true).await.unwrap(), 0);
        store
            .0
            .lock()
            .unwrap()
            .insert("s3://b/ck/../escape".into(), b"x".to_vec());
        let e = restore(&store, "s3://b/ck", dir.path()).await.unwrap_err();
        assert!(e.contains("s3://b/ck/../escape"), "{e}");
    }
}
