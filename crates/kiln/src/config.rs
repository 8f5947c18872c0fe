//! Settings of `kiln serve` and of the client commands: flags, then environment, then `kiln.toml`,
//! then defaults.

use std::collections::BTreeMap;
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
    /// `[slurm]`: the Slurm executor (with `[jobs] executor = "slurm"`).
    pub slurm: Option<SlurmSection>,
    /// `[server]`: limits on connections.
    #[serde(default)]
    pub server: ServerSection,
    /// `[spot]`: rehearsing spot interruptions.
    #[serde(default)]
    pub spot: SpotSection,
    /// `[metrics]`: the Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[metrics]` of `kiln.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// When set, `/_kiln/metrics` answers only `Authorization: Bearer <token>` (default: open; it
    /// shows aggregates only).
    pub token: Option<String>,
    /// Days host metrics (`CPUUtilization`, ...) and `PutMetricData` points are kept, as
    /// CloudWatch keeps its finest data 15 days (default 15; 0 keeps them for ever). Training
    /// metrics from the logs stay with their job.
    pub retention_days: Option<f64>,
}

impl MetricsSection {
    /// Default retention of host and `PutMetricData` points.
    pub const DEFAULT_RETENTION_DAYS: f64 = 15.0;

    /// The retention as a duration (`None`: keep for ever); an error for a negative or
    /// non-finite value.
    pub fn retention(&self) -> anyhow::Result<Option<std::time::Duration>> {
        let days = self.retention_days.unwrap_or(Self::DEFAULT_RETENTION_DAYS);
        if !days.is_finite() || days < 0.0 {
            anyhow::bail!("[metrics] retention_days = {days}: give a number of days >= 0 (0 keeps points for ever)");
        }
        Ok((days > 0.0).then(|| std::time::Duration::from_secs_f64(days * 86_400.0)))
    }
}

/// `[spot]` of `kiln.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpotSection {
    /// Random interruptions of training spot jobs, on average this many per job and hour of
    /// training (0, the default: only `kiln jobs interrupt`).
    #[serde(default)]
    pub interruptions_per_hour: f64,
}

/// `[server]` of `kiln.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Most connections open at once (default: half the open-files limit, at most 10,000); at the
    /// cap a new connection displaces the one idle longest.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers; also how long a kept-alive connection
    /// may sit idle (default 30).
    pub header_timeout_seconds: Option<f64>,
}

/// `[jobs]` of `kiln.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// `local` (default) runs jobs as local processes; `slurm` on a Slurm cluster; `none` runs nothing.
    pub executor: Option<String>,
    pub work_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub stop_grace_seconds: Option<u64>,
    /// `auto` (default: bubblewrap where it works), `bwrap` (required), or `none`.
    pub sandbox: Option<String>,
}

/// `[slurm]` of `kiln.toml`: the cluster jobs go to with `[jobs] executor = "slurm"`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    /// slurmrestd, e.g. `http://slurm-head:6820`.
    pub url: Option<String>,
    /// The Slurm user jobs run as (default: the user kiln runs as).
    pub user: Option<String>,
    /// The cluster's HS256 key file: kiln mints short-lived tokens.
    pub jwt_key: Option<PathBuf>,
    /// A token from `scontrol token`, instead of `jwt_key`.
    pub token: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// The `kiln` binary as the nodes see it (default: this binary's path).
    pub kiln_path: Option<PathBuf>,
    /// The hosts' work directory as the nodes see it (default: `[jobs] work_dir`).
    pub work_dir: Option<PathBuf>,
    /// `[slurm.instance_types."ml.m5.large"]`: what an instance type asks of a node.
    #[serde(default)]
    pub instance_types: BTreeMap<String, kiln_engine::slurm::InstanceOverride>,
    /// `[slurm.environment]`: variables every job gets (e.g. PATH with the nodes' Python).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Shell lines the batch script runs before starting the agents (`module load python`).
    pub prologue: Option<String>,
}

/// `kiln serve` flags (and their `KILN_SLURM_*` variables) for the Slurm executor; each one set
/// wins over `[slurm]` in kiln.toml.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SlurmFlags {
    /// slurmrestd URL ([slurm] url).
    #[arg(long = "slurm-url", env = "KILN_SLURM_URL")]
    pub url: Option<String>,
    /// Slurm user jobs run as ([slurm] user).
    #[arg(long = "slurm-user", env = "KILN_SLURM_USER")]
    pub user: Option<String>,
    /// The cluster's JWT key file ([slurm] jwt_key).
    #[arg(long = "slurm-jwt-key", env = "KILN_SLURM_JWT_KEY")]
    pub jwt_key: Option<PathBuf>,
    /// A token from `scontrol token` ([slurm] token).
    #[arg(long = "slurm-token", env = "KILN_SLURM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Partition ([slurm] partition).
    #[arg(long = "slurm-partition", env = "KILN_SLURM_PARTITION")]
    pub partition: Option<String>,
    /// Account ([slurm] account).
    #[arg(long = "slurm-account", env = "KILN_SLURM_ACCOUNT")]
    pub account: Option<String>,
    /// QOS ([slurm] qos).
    #[arg(long = "slurm-qos", env = "KILN_SLURM_QOS")]
    pub qos: Option<String>,
    /// The kiln binary as the nodes see it ([slurm] kiln_path).
    #[arg(long = "slurm-kiln-path", env = "KILN_SLURM_KILN_PATH")]
    pub kiln_path: Option<PathBuf>,
    /// The hosts' work directory as the nodes see it ([slurm] work_dir).
    #[arg(long = "slurm-work-dir", env = "KILN_SLURM_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
}

/// The executors `[jobs] executor` (or `--executor`) may name.
pub const EXECUTORS: &[&str] = &["local", "slurm", "none"];

/// Checks an executor name.
pub fn check_executor(name: &str) -> Result<()> {
    if !EXECUTORS.contains(&name) {
        anyhow::bail!("executor \"{name}\" is not known: use \"local\", \"slurm\" or \"none\"");
    }
    Ok(())
}

/// The Slurm executor's settings: flags over `[slurm]`, then defaults (`user`: the user kiln runs
/// as; `kiln_path`: `kiln_bin`; `work_dir`: the jobs' work directory).
pub fn slurm_settings(
    file: Option<&SlurmSection>,
    flags: &SlurmFlags,
    kiln_bin: &Path,
    jobs_work_dir: &Path,
) -> kiln_engine::slurm::SlurmSettings {
    let file = file.cloned().unwrap_or_default();
    let pick = |flag: &Option<String>, from_file: Option<String>| flag.clone().or(from_file);
    // Either way of authenticating, given as a flag, replaces both of the file's: they exclude
    // each other.
    let (jwt_key, token) = if flags.jwt_key.is_some() || flags.token.is_some() {
        (flags.jwt_key.clone(), flags.token.clone())
    } else {
        (file.jwt_key, file.token)
    };
    kiln_engine::slurm::SlurmSettings {
        url: pick(&flags.url, file.url).unwrap_or_default(),
        user: pick(&flags.user, file.user)
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_default(),
        jwt_key,
        token,
        partition: pick(&flags.partition, file.partition),
        account: pick(&flags.account, file.account),
        qos: pick(&flags.qos, file.qos),
        kiln_path: flags
            .kiln_path
            .clone()
            .or(file.kiln_path)
            .unwrap_or_else(|| kiln_bin.to_path_buf()),
        work_dir: flags
            .work_dir
            .clone()
            .or(file.work_dir)
            .unwrap_or_else(|| jobs_work_dir.to_path_buf()),
        instance_types: file.instance_types,
        environment: file.environment,
        prologue: file.prologue,
    }
}

/// `[capacity]` of `kiln.toml`: what the executor runs at once. What it leaves out keeps its
/// default (`kiln_server::default_capacity`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySection {
    pub vcpus: Option<u32>,
    pub memory_gib: Option<f64>,
    pub gpus: Option<u32>,
    pub neuron_devices: Option<u32>,
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
    pub slurm: Option<SlurmSection>,
    pub server: ServerSection,
    pub spot: SpotSection,
    pub metrics: MetricsSection,
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
    // Relative paths are resolved once, against the directory kiln starts in: agents and job trees
    // use them from elsewhere.
    let data_dir = std::path::absolute(&data_dir)
        .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
    let mut jobs = file.jobs;
    if let Some(w) = &jobs.work_dir {
        jobs.work_dir =
            Some(std::path::absolute(w).with_context(|| format!("cannot resolve [jobs] work_dir {}", w.display()))?);
    }
    let region = file.region.unwrap_or_else(|| "us-east-1".to_string());
    if let Some(e) = &jobs.executor {
        check_executor(e).context("[jobs] executor in kiln.toml")?;
    }
    if let Some(mode) = &jobs.sandbox
        && !["auto", "bwrap", "none"].contains(&mode.as_str())
    {
        anyhow::bail!("[jobs] sandbox = \"{mode}\" is not known: use \"auto\", \"bwrap\" or \"none\"");
    }
    if let Some(t) = file.server.header_timeout_seconds
        && !(t.is_finite() && t > 0.0 && t <= 3600.0)
    {
        anyhow::bail!("[server] header_timeout_seconds = {t} must be between 0 and 3600");
    }
    if file.server.max_connections == Some(0) {
        anyhow::bail!("[server] max_connections must be at least 1");
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
        jobs,
        capacity: file.capacity,
        external_s3: file.external_s3,
        environments: file.environments,
        registries: file.registries,
        slurm: file.slurm,
        server: file.server,
        spot: file.spot,
        metrics: file.metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            r#"
            [jobs]
            executor = "slurm"
            [slurm]
            url = "http://head:6820"
            user = "kiln"
            jwt_key = "/etc/slurm/jwt.key"
            partition = "batch"
            [slurm.instance_types."ml.m5.large"]
            cpus = 1
            [slurm.environment]
            PATH = "/opt/py/bin:/usr/bin"
            "#,
        )
        .unwrap();
        let flags = SlurmFlags {
            partition: Some("gpu".into()),
            token: Some("tok".into()),
            ..SlurmFlags::default()
        };
        let s = slurm_settings(file.slurm.as_ref(), &flags, Path::new("/usr/bin/kiln"), Path::new("/w"));
        assert_eq!((s.url.as_str(), s.user.as_str()), ("http://head:6820", "kiln"));
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        // A token given as a flag replaces the file's key: they exclude each other.
        assert_eq!((s.jwt_key, s.token.as_deref()), (None, Some("tok")));
        assert_eq!(
            (s.kiln_path, s.work_dir),
            (PathBuf::from("/usr/bin/kiln"), PathBuf::from("/w"))
        );
        assert_eq!(s.instance_types["ml.m5.large"].cpus, Some(1));
        assert_eq!(s.environment["PATH"], "/opt/py/bin:/usr/bin");
    }

    #[test]
    fn unknown_slurm_settings_and_executors_are_refused() {
        assert!(toml::from_str::<FileConfig>("[slurm]\nurll = \"x\"\n").is_err());
        assert!(toml::from_str::<FileConfig>("[slurm.instance_types.\"ml.m5.large\"]\ngpus = 1\n").is_err());
        assert!(check_executor("slurm").is_ok());
        let e = check_executor("kubernetes").unwrap_err().to_string();
        assert!(e.contains("\"local\", \"slurm\" or \"none\""), "{e}");
    }

    #[test]
    fn metric_retention_defaults_to_fifteen_days_and_zero_keeps_points() {
        let day = std::time::Duration::from_secs(86_400);
        let parse = |t: &str| toml::from_str::<FileConfig>(t).unwrap().metrics.retention();
        assert_eq!(parse("").unwrap(), Some(day * 15));
        assert_eq!(parse("[metrics]\nretention_days = 0.5\n").unwrap(), Some(day / 2));
        assert_eq!(parse("[metrics]\nretention_days = 0\n").unwrap(), None);
        let e = parse("[metrics]\nretention_days = -1\n").unwrap_err().to_string();
        assert!(e.contains("retention_days = -1"), "{e}");
    }
}
