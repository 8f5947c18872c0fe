//! Settings of `kiln serve` and of the client commands: flags, then environment, then `kiln.toml`,
//! then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `kiln.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `postgres://…`: metadata in PostgreSQL (shared by replicas); absent: SQLite in the data dir.
    pub database_url: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub jobs: JobsSection,
    pub capacity: Option<CapacitySection>,
    /// `[[external_s3]]`: buckets that live on another S3 (AWS or any compatible store).
    #[serde(default)]
    pub external_s3: Vec<kiln_api::agent::ExternalS3>,
    /// `[[environments]]`: framework images mapped to interpreters the operator already has.
    #[serde(default)]
    pub environments: Vec<kiln_api::agent::EnvironmentRule>,
    /// `[[registries]]`: credentials, plain HTTP and mirrors for the registries of jobs' images.
    #[serde(default)]
    pub registries: Vec<kiln_api::agent::RegistryRule>,
}

/// `[jobs]` of `kiln.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// `local` (default) runs jobs as local processes; `none` runs nothing.
    pub executor: Option<String>,
    pub work_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub stop_grace_seconds: Option<u64>,
    /// `auto` (default: bubblewrap where it works), `bwrap` (required), or `none`.
    pub sandbox: Option<String>,
}

/// `[capacity]` of `kiln.toml`: what the executor runs at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySection {
    pub vcpus: u32,
    pub memory_gib: f64,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub neuron_devices: u32,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub region: String,
    pub jobs: JobsSection,
    pub capacity: Option<CapacitySection>,
    pub external_s3: Vec<kiln_api::agent::ExternalS3>,
    pub environments: Vec<kiln_api::agent::EnvironmentRule>,
    pub registries: Vec<kiln_api::agent::RegistryRule>,
}

fn home_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".kiln")
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

/// The config file to use: `--config`, else `./kiln.toml`, else `<data-dir>/kiln.toml`.
fn find_file(explicit: Option<&Path>, data_dir: Option<&Path>) -> Result<FileConfig> {
    if let Some(p) = explicit {
        return read_file(p);
    }
    for candidate in [Some(PathBuf::from("kiln.toml")), data_dir.map(|d| d.join("kiln.toml"))]
        .into_iter()
        .flatten()
    {
        if candidate.is_file() {
            return read_file(&candidate);
        }
    }
    Ok(FileConfig::default())
}

/// Combines flags (already merged with their environment variables by clap) with the file.
pub fn resolve(config: Option<&Path>, listen: Option<&str>, data_dir: Option<&Path>) -> Result<Settings> {
    let file = find_file(config, data_dir.or(Some(&home_data_dir())))?;
    let listen_text = listen
        .map(str::to_string)
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = listen_text
        .parse()
        .with_context(|| format!("listen address '{listen_text}' is not HOST:PORT (e.g. {DEFAULT_LISTEN})"))?;
    let data_dir = data_dir
        .map(Path::to_path_buf)
        .or(file.data_dir)
        .unwrap_or_else(home_data_dir);
    let region = file.region.unwrap_or_else(|| "us-east-1".to_string());
    if let Some(e) = &file.jobs.executor
        && e != "local"
        && e != "none"
    {
        anyhow::bail!("[jobs] executor = \"{e}\" is not known: use \"local\" or \"none\"");
    }
    if let Some(mode) = &file.jobs.sandbox
        && !["auto", "bwrap", "none"].contains(&mode.as_str())
    {
        anyhow::bail!("[jobs] sandbox = \"{mode}\" is not known: use \"auto\", \"bwrap\" or \"none\"");
    }
    if let Some(url) = &file.database_url
        && kiln_store::db::backend_of(url) != Some(kiln_store::Backend::Postgres)
    {
        anyhow::bail!(
            "database_url = \"{}\" is not a PostgreSQL URL (postgres://user:password@host:port/db); leave it out for SQLite",
            kiln_store::db::redact(url)
        );
    }
    Ok(Settings {
        listen,
        data_dir,
        database_url: file.database_url,
        region,
        jobs: file.jobs,
        capacity: file.capacity,
        external_s3: file.external_s3,
        environments: file.environments,
        registries: file.registries,
    })
}
