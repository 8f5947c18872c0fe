//! [`Objects`] for a job: `s3://` on kiln's embedded store or an external S3, `file://` on this
//! host.
//!
//! Interim: only `file://` is served here until `kiln-blob` lands; then this becomes a thin
//! adapter over it.

use std::path::{Path, PathBuf};

use kiln_api::agent::Assignment;

use crate::staging::Objects;

/// The objects a job may reach.
pub struct BlobObjects {}

impl BlobObjects {
    pub fn new(_a: &Assignment) -> Result<BlobObjects, String> {
        Ok(BlobObjects {})
    }
}

fn local_path(uri: &str) -> Result<PathBuf, String> {
    match uri.strip_prefix("file://") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        Some(_) => Err(format!("'{uri}' is not an absolute file:// URI (use file:///path)")),
        None => Err(format!(
            "'{uri}': only file:// URIs can be read by this build of the agent (s3:// access comes with kiln-blob)"
        )),
    }
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&p, out),
            Ok(_) if p.is_file() => out.push(p),
            _ => {}
        }
    }
}

impl Objects for BlobObjects {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let path = local_path(prefix)?;
        let text = path.display().to_string();
        // The deepest directory the raw prefix lies in.
        let base = match text.rfind('/') {
            Some(0) => PathBuf::from("/"),
            Some(i) => PathBuf::from(&text[..i]),
            None => PathBuf::from("/"),
        };
        let mut files = Vec::new();
        walk_files(&base, &mut files);
        let mut uris: Vec<String> = files
            .into_iter()
            .map(|p| p.display().to_string())
            .filter(|p| p.starts_with(&text))
            .map(|p| format!("file://{p}"))
            .collect();
        uris.sort();
        Ok(uris)
    }

    async fn download(&self, uri: &str, dest: &Path) -> Result<(), String> {
        let src = local_path(uri)?;
        std::fs::copy(&src, dest)
            .map(|_| ())
            .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dest.display()))
    }

    async fn get_bytes(&self, uri: &str) -> Result<Vec<u8>, String> {
        let src = local_path(uri)?;
        std::fs::read(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))
    }

    async fn upload(&self, src: &Path, uri: &str) -> Result<(), String> {
        let dest = local_path(uri)?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::copy(src, &dest)
            .map(|_| ())
            .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dest.display()))
    }
}
