//! [`Objects`] for a job over `kiln-blob`: `s3://` on kiln's embedded store (the assignment's
//! endpoint and the job's credentials) or on an external S3 by bucket, `file://` on this host.

use std::path::{Path, PathBuf};

use kiln_api::agent::{Assignment, S3Access};
use kiln_blob::{BlobConfig, Blobs, S3Endpoint};

use crate::staging::Objects;

/// The objects a job may reach.
pub struct BlobObjects {
    blobs: Blobs,
}

fn endpoint(a: &S3Access) -> S3Endpoint {
    S3Endpoint {
        endpoint_url: a.endpoint_url.clone(),
        region: a.region.clone(),
        access_key_id: a.access_key_id.clone(),
        secret_access_key: a.secret_access_key.clone(),
        path_style: a.path_style,
    }
}

impl BlobObjects {
    pub fn new(a: &Assignment) -> BlobObjects {
        BlobObjects {
            blobs: Blobs::new(BlobConfig {
                embedded: endpoint(&a.s3),
                external: a
                    .external_s3
                    .iter()
                    .map(|e| (e.bucket.clone(), endpoint(&e.access)))
                    .collect(),
            }),
        }
    }
}

impl Objects for BlobObjects {
    async fn list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let found = self.blobs.list(prefix).await.map_err(|e| e.to_string())?;
        // Answer in the form the prefix was given in (a bare path lists as paths).
        let as_uri = prefix.starts_with("s3://") || prefix.starts_with("file://");
        Ok(found.into_iter().map(|o| if as_uri { o.uri } else { o.key }).collect())
    }

    async fn download(&self, uri: &str, dest: &Path) -> Result<(), String> {
        self.blobs
            .download(uri, dest)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn get_bytes(&self, uri: &str) -> Result<Vec<u8>, String> {
        self.blobs
            .get_bytes(uri)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }

    async fn upload(&self, src: &Path, uri: &str) -> Result<(), String> {
        self.blobs.upload(src, uri).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn delete(&self, uri: &str) -> Result<(), String> {
        self.blobs.delete(uri).await.map_err(|e| e.to_string())
    }
}

/// Packs the contents of `dir` into a tar.gz at `dest` (files at the archive root).
pub async fn pack_tar_gz(dir: &Path, dest: &Path) -> Result<(), String> {
    let (dir, dest) = (dir.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || kiln_blob::pack_tar_gz(&dir, &dest).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("packing was interrupted: {e}"))?
}

/// Unpacks a tar.gz into `dir`, refusing entries that would land outside it.
pub async fn unpack_tar_gz(archive: &Path, dir: &Path) -> Result<(), String> {
    let (archive, dir) = (archive.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || kiln_blob::unpack_tar_gz(&archive, &dir).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("unpacking was interrupted: {e}"))?
}

/// Every regular file under `dir` with its `/`-separated relative path, sorted.
pub fn files_under(dir: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), String> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            // Symbolic links are not followed (S3 has no links; their targets may be anything of
            // the machine's): only the tree's own files and directories.
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                walk(&path, &child, out)?;
            } else if kind.is_file() {
                out.push((path, child));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    Ok(out)
}
