//! Access keys: `<data-dir>/keys.toml`, one entry per key, each belonging to an account.
//!
//! The file is the source of truth. kiln creates it with one key on first start; more keys (for
//! more accounts) can be added with `kiln keys create` or by editing the file. The server re-reads
//! the file when it sees an unknown key and the file has changed, so new keys work without a restart.

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

/// The server's view of the keys file.
pub struct Keyring {
    path: PathBuf,
    inner: RwLock<(HashMap<String, AccessKey>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Keyring {
    /// Loads the keys file.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let keys = read_keys(path)?;
        let map = keys.into_iter().map(|k| (k.access_key_id.clone(), k)).collect();
        Ok(Self {
            path: path.into(),
            inner: RwLock::new((map, modified(path))),
        })
    }

    /// The key with this id, re-reading the file if it changed since it was last read.
    pub fn get(&self, access_key_id: &str) -> Option<AccessKey> {
        if let Ok(guard) = self.inner.read()
            && let Some(k) = guard.0.get(access_key_id)
        {
            return Some(k.clone());
        }
        let now_modified = modified(&self.path);
        let stale = self.inner.read().map(|g| g.1 != now_modified).unwrap_or(true);
        if stale && let Ok(keys) = read_keys(&self.path) {
            let map: HashMap<String, AccessKey> = keys.into_iter().map(|k| (k.access_key_id.clone(), k)).collect();
            let found = map.get(access_key_id).cloned();
            if let Ok(mut guard) = self.inner.write() {
                *guard = (map, now_modified);
            }
            return found;
        }
        None
    }

    /// Every key (for the secret lookup of the S3 endpoint).
    pub fn all(&self) -> Vec<AccessKey> {
        self.inner
            .read()
            .map(|g| g.0.values().cloned().collect())
            .unwrap_or_default()
    }
}
