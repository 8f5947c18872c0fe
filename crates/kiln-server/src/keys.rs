//! Access keys: `<data-dir>/keys.toml`, one entry per key, each belonging to an account.
//!
//! The file is the source of truth. kiln creates it with one key on first start; more keys (for
//! more accounts) can be added with `kiln keys create` or by editing the file, and removed with
//! `kiln keys delete` or by editing it. The server keeps one [`Keyring`] for every endpoint
//! (SageMaker, Logs, S3) and checks the file's identity (inode, size, modification time) on every
//! lookup, so an added key works and a removed key stops working on the next request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// One access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<AccessKey>,
}

/// Errors reading or writing the keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid keys file: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The keys file's path in a data directory.
pub fn keys_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys.toml")
}

/// Reads every key of the file (an absent file has none).
pub fn read_keys(path: &Path) -> Result<Vec<AccessKey>, KeysError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(KeysError::Read {
                path: path.into(),
                source,
            });
        }
    };
    let file: KeysFile = toml::from_str(&text).map_err(|e| KeysError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    for k in &file.keys {
        if k.account_id.len() != 12 || !k.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KeysError::Parse {
                path: path.into(),
                message: format!(
                    "account_id '{}' of key {} must be 12 digits",
                    k.account_id, k.access_key_id
                ),
            });
        }
    }
    Ok(file.keys)
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// A fresh key for `account` (a random 12-digit account when `None`).
pub fn generate_key(account: Option<&str>) -> AccessKey {
    AccessKey {
        access_key_id: format!("AKIA{}", random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
        secret_access_key: random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", 40),
        account_id: account.map(str::to_string).unwrap_or_else(|| {
            let mut rng = rand::rng();
            format!("{}{}", rng.random_range(1..10), random_string(b"0123456789", 11))
        }),
    }
}

/// Appends a key to the file, creating it (mode 0600) if needed.
pub fn append_key(path: &Path, key: &AccessKey) -> Result<(), KeysError> {
    let mut keys = read_keys(path)?;
    keys.push(key.clone());
    write_keys(path, keys)
}

/// Removes the key `access_key_id` from the file; `false` if it had no such key.
pub fn delete_key(path: &Path, access_key_id: &str) -> Result<bool, KeysError> {
    let mut keys = read_keys(path)?;
    let before = keys.len();
    keys.retain(|k| k.access_key_id != access_key_id);
    if keys.len() == before {
        return Ok(false);
    }
    write_keys(path, keys)?;
    Ok(true)
}

/// Replaces the file's keys, atomically (a reader sees the old file or the new one), mode 0600.
fn write_keys(path: &Path, keys: Vec<AccessKey>) -> Result<(), KeysError> {
    let text = toml::to_string(&KeysFile { keys }).map_err(|e| KeysError::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension("toml.tmp");
    let write = |p: &Path| -> std::io::Result<()> {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(p)?;
        f.write_all(b"# kiln access keys: each key belongs to an account (12 digits).\n")?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write(&tmp).map_err(|source| KeysError::Write {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| KeysError::Write {
        path: path.into(),
        source,
    })
}

/// The server's view of the keys file: one for every endpoint, so that a key removed from the
/// file stops working everywhere at once.
pub struct Keyring {
    path: PathBuf,
    inner: RwLock<Loaded>,
}

struct Loaded {
    keys: HashMap<String, AccessKey>,
    stamp: Option<FileStamp>,
}

/// What tells one version of the keys file from another: an atomic rewrite changes the inode, an
/// edit in place the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

fn index(keys: Vec<AccessKey>) -> HashMap<String, AccessKey> {
    keys.into_iter().map(|k| (k.access_key_id.clone(), k)).collect()
}

impl Keyring {
    /// Loads the keys file.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let stamp = stamp(path);
        let keys = index(read_keys(path)?);
        Ok(Self {
            path: path.into(),
            inner: RwLock::new(Loaded { keys, stamp }),
        })
    }

    /// Re-reads the file if it is not the version last read. A file that cannot be parsed (an
    /// edit in progress) keeps the previous keys; a file that is gone has none.
    fn refresh(&self) {
        let now = stamp(&self.path);
        if self.inner.read().map(|g| g.stamp == now).unwrap_or(false) {
            return;
        }
        match read_keys(&self.path) {
            Ok(keys) => {
                if let Ok(mut guard) = self.inner.write() {
                    *guard = Loaded {
                        keys: index(keys),
                        stamp: now,
                    };
                }
            }
            Err(e) => tracing::warn!(target: "kiln::keys", "{e}; the keys read before stay in use"),
        }
    }

    /// The key with this id as the file has it now.
    pub fn get(&self, access_key_id: &str) -> Option<AccessKey> {
        self.refresh();
        self.inner.read().ok()?.keys.get(access_key_id).cloned()
    }

    /// Every key.
    pub fn all(&self) -> Vec<AccessKey> {
        self.refresh();
        self.inner
            .read()
            .map(|g| g.keys.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_and_added_keys_take_effect_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = keys_path(dir.path());
        let a = generate_key(None);
        append_key(&path, &a).unwrap();
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.get(&a.access_key_id), Some(a.clone()));
        let b = generate_key(Some(&a.account_id));
        append_key(&path, &b).unwrap();
        assert_eq!(ring.get(&b.access_key_id), Some(b.clone()));
        assert!(delete_key(&path, &a.access_key_id).unwrap());
        assert!(!delete_key(&path, &a.access_key_id).unwrap());
        // The removed key is gone although it was answered from memory a moment ago.
        assert_eq!(ring.get(&a.access_key_id), None);
        assert_eq!(ring.get(&b.access_key_id), Some(b));
        std::fs::remove_file(&path).unwrap();
        assert!(ring.all().is_empty());
    }
}
