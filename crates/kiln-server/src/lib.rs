//! kiln's HTTP front. One listener serves every protocol, routed by request shape:
//! `X-Amz-Target` → AWS JSON 1.1 (SageMaker, CloudWatch Logs); CloudWatch metrics on RPC v2 CBOR,
//! JSON 1.0 or the query protocol (`cloudwatch`); `/_kiln/...` → kiln's own endpoints (health, agent
//! API); everything else → the S3 API. Protocol concerns (SigV4, error envelopes,
//! body limits) live here; what an operation does lives in `kiln-engine`.

mod agent_api;
pub mod aws;
mod body;
pub mod cloudwatch;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use kiln_engine::slurm::SlurmExecutor;
use kiln_engine::{Engine, LocalExecutor, NoExecutor, RunnerConfig};
use kiln_store::{Db, FileLeadership, Leadership, PgLeadership, SqlLogStore, SqlStore};

use crate::keys::Keyring;

/// What `kiln serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://…` to keep all metadata in PostgreSQL (several replicas may share it); `None`
    /// for SQLite files under the data directory.
    pub database_url: Option<String>,
    /// How jobs run: the executor and its settings.
    pub jobs: JobsConfig,
    /// `[server] max_connections` (default: half the open-files limit, at most 10,000).
    pub max_connections: Option<usize>,
    /// `[server] header_timeout_seconds` (default 30): time to send a request's headers, and how
    /// long a kept-alive connection may sit idle.
    pub header_timeout: Option<std::time::Duration>,
    /// `[metrics] token`: the bearer token `/_kiln/metrics` asks for (`None`: open).
    pub metrics_token: Option<String>,
    /// `[metrics] retention_days`: how long host metrics and `PutMetricData` points are kept
    /// (`None`: for ever).
    pub metric_retention: Option<std::time::Duration>,
}

/// Where jobs run.
#[derive(Debug, Clone)]
pub enum ExecutorChoice {
    /// Agents as processes of this machine.
    Local,
    /// Nothing runs: jobs wait in `Starting` (API-only use).
    None,
    /// One Slurm job per training job, through slurmrestd.
    Slurm(Box<kiln_engine::slurm::SlurmSettings>),
}

/// Settings of the job runner.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Where jobs run.
    pub executor: ExecutorChoice,
    /// The `kiln` binary agents are started from.
    pub kiln_bin: PathBuf,
    /// Where hosts' trees go (default `<data-dir>/work`).
    pub work_dir: Option<PathBuf>,
    /// What the executor can run at once (default: 192 vCPUs, 3 TiB, this machine's GPUs).
    pub capacity: Option<kiln_engine::capacity::Resources>,
    /// URL agents reach the control plane at (default `http://<listen>`).
    pub public_url: Option<String>,
    /// SIGTERM → SIGKILL grace period when stopping (default 120 s, as SageMaker).
    pub stop_grace_seconds: u64,
    /// External S3 endpoints by bucket, for jobs' `s3://` URIs outside the embedded store.
    pub external_s3: Vec<kiln_api::agent::ExternalS3>,
    /// Whether hosts run their algorithm in a sandbox (resolved from `[jobs] sandbox`).
    pub sandbox: bool,
    /// `[[environments]]`: images mapped to interpreters.
    pub environments: Vec<kiln_api::agent::EnvironmentRule>,
    /// `[[registries]]`: registries of jobs' own images.
    pub registries: Vec<kiln_api::agent::RegistryRule>,
    /// `[spot] interruptions_per_hour`: random interruptions of training spot jobs (0: none).
    pub spot_interruptions_per_hour: f64,
}

/// Shared state of the server.
pub struct App {
    pub engine: Arc<Engine>,
    /// The access keys of every endpoint (one keyring, so that a removed key stops working everywhere).
    pub keys: Arc<Keyring>,
    /// The embedded S3 endpoint (its store is also the engine's way to create buckets).
    pub s3: kiln_s3::S3Handler,
    /// Counters for `/_kiln/metrics`.
    pub metrics: Arc<metrics::ServerMetrics>,
    /// The bearer token `/_kiln/metrics` asks for, if any.
    pub metrics_token: Option<String>,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
    #[error("cannot open the metadata store: {0}")]
    Store(#[from] kiln_store::StoreError),
    #[error(
        "another `kiln serve` uses the data directory {0} (SQLite serves one process); stop it, or run several replicas on PostgreSQL (--database-url)"
    )]
    DataDirInUse(PathBuf),
    #[error(
        "database URL '{0}' is not supported: use postgres://user:password@host:port/database, or leave it out for SQLite under the data directory"
    )]
    DatabaseUrl(String),
    #[error("the Slurm executor cannot start: {0}")]
    Slurm(#[from] kiln_engine::slurm::SettingsError),
    #[error("cannot open the object store: {0}")]
    Objects(#[from] kiln_s3::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The server before it starts listening: the store is open and the keys are loaded.
pub struct Server {
    app: Arc<App>,
    config: ServerConfig,
    /// Who runs the scheduler and tuner among the replicas sharing a PostgreSQL database; `None`
    /// with SQLite, where this process alone serves the data directory and always leads.
    leadership: Option<Arc<dyn Leadership>>,
    /// With SQLite: the data directory's lock, held while the server lives.
    _data_dir_lock: Option<Box<dyn kiln_store::Lease>>,
    /// A key created on this start (first start of a data directory), to be shown once.
    pub created_key: Option<keys::AccessKey>,
}

impl Server {
    /// Opens the data directory: creates it (private to this user), the first access key, and the
    /// database. A relative data directory is resolved once, here: agents and job trees run
    /// elsewhere and must be given absolute paths.
    pub async fn open(mut config: ServerConfig) -> Result<Self, ServeError> {
        let data_dir_error = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| ServeError::DataDir { path, source }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error(&config.data_dir))?;
        config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(data_dir_error(&config.data_dir))?;
        if let Some(work_dir) = &config.jobs.work_dir
            && work_dir.is_relative()
        {
            config.jobs.work_dir = Some(std::path::absolute(work_dir).map_err(data_dir_error(work_dir))?);
        }
        // Keys, databases and objects of every account live here: no one else may list or read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(data_dir_error(&config.data_dir))?;
        }
        let keys_file = keys::keys_path(&config.data_dir);
        let mut created_key = None;
        if keys::read_keys(&keys_file)?.is_empty() {
            let key = keys::generate_key(None);
            keys::append_key(&keys_file, &key)?;
            created_key = Some(key);
        }
        let mut data_dir_lock = None;
        let (store, logs, objects, leadership): (
            SqlStore,
            SqlLogStore,
            kiln_s3::ObjectStore,
            Option<Arc<dyn Leadership>>,
        ) = match config.database_url.as_deref() {
            None | Some("") => {
                // SQLite files are served by one process: a second server on the same data
                // directory is refused rather than left to race the first.
                let lock = FileLeadership::new(config.data_dir.join("serve.lock"));
                data_dir_lock = Some(
                    lock.try_acquire()
                        .await?
                        .ok_or_else(|| ServeError::DataDirInUse(config.data_dir.clone()))?,
                );
                (
                    SqlStore::open(&config.data_dir.join("kiln.db")).await?,
                    SqlLogStore::open(&config.data_dir.join("logs.db")).await?,
                    kiln_s3::ObjectStore::open(&config.data_dir.join("s3")).await?,
                    None,
                )
            }
            Some(url) if kiln_store::db::backend_of(url) == Some(kiln_store::Backend::Postgres) => {
                let pool = Db::postgres_pool(url, 32).await?;
                let db = Db::Postgres(pool);
                (
                    SqlStore::on(db.clone()).await?,
                    SqlLogStore::on(db.clone()).await?,
                    kiln_s3::ObjectStore::open_on(&config.data_dir.join("s3"), db).await?,
                    Some(Arc::new(PgLeadership::new(url))),
                )
            }
            Some(url) => return Err(ServeError::DatabaseUrl(kiln_store::db::redact(url))),
        };
        let external: Vec<String> = config.jobs.external_s3.iter().map(|e| e.bucket.clone()).collect();
        let catalog = Arc::new(EmbeddedCatalog {
            objects: objects.clone(),
            external,
        });
        let engine = Arc::new(
            build_engine(&config, Arc::new(store), Arc::new(logs))?
                .with_catalog(catalog)
                .with_metric_retention(config.metric_retention),
        );
        let keys = Arc::new(Keyring::load(&keys_file)?);
        let accounts = KeyringAccounts {
            keys: keys.clone(),
            engine: engine.clone(),
        };
        let s3 = kiln_s3::S3Handler::new(objects, Arc::new(accounts));
        let app = App {
            engine,
            keys,
            s3,
            metrics: Arc::new(metrics::ServerMetrics::default()),
            metrics_token: config.metrics_token.clone(),
        };
        Ok(Self {
            app: Arc::new(app),
            config,
            leadership,
            _data_dir_lock: data_dir_lock,
            created_key,
        })
    }

    /// The router (also used by tests in-process).
    pub fn router(&self) -> Router {
        Router::new().fallback(route).with_state(self.app.clone())
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: self.config.listen,
                source,
            })?;
        tracing::info!(target: "kiln::serve", "listening on http://{}", listener.local_addr()?);
        let fd_limit = listener::raise_fd_limit();
        let mut limits = listener::ConnectionLimits::for_fd_limit(fd_limit);
        if let Some(n) = self.config.max_connections {
            limits.max_connections = n.max(1);
        }
        if let Some(t) = self.config.header_timeout {
            limits.header_timeout = t;
        }
        tracing::info!(
            target: "kiln::serve",
            "open files up to {fd_limit}; at most {} connections, {} s to send a request's headers",
            limits.max_connections,
            limits.header_timeout.as_secs_f64()
        );
        let router = self.router();
        // A bug that panics the scheduler must not stop every job from running: restart it.
        let engine = self.app.engine.clone();
        let leadership = self.leadership.clone();
        tokio::spawn(async move {
            loop {
                match tokio::spawn(engine.clone().run_control_loops(leadership.clone())).await {
                    Err(e) if e.is_panic() => {
                        tracing::error!(target: "kiln::serve", "the scheduler panicked; restarting it");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    _ => break,
                }
            }
        });
        listener::serve(listener, router, limits, self.app.metrics.clone(), shutdown).await;
        Ok(())
    }
}

/// Makes every file and directory this process creates from now on private to its user (umask
/// 077): databases, objects, job trees. `kiln serve` calls it before it opens the data directory.
pub fn private_files() {
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// GPUs of this machine (NVIDIA device nodes).
/// What the local executor runs at once without a `[capacity]` table (or for what the table leaves
/// out): as much as the largest instance types ask, so that any job fits; the GPUs this machine has.
pub fn default_capacity() -> kiln_engine::capacity::Resources {
    kiln_engine::capacity::Resources {
        vcpus: 192,
        memory_gib: 3072.0,
        gpus: detect_gpus(),
        neuron_devices: 0,
    }
}

fn detect_gpus() -> u32 {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u32
}

fn build_engine(
    config: &ServerConfig,
    store: Arc<dyn kiln_store::Store>,
    logs: Arc<dyn kiln_store::LogStore>,
) -> Result<Engine, ServeError> {
    let jobs = &config.jobs;
    let machine_cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mut runner = RunnerConfig {
        public_url: jobs
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen)),
        work_dir: jobs.work_dir.clone().unwrap_or_else(|| config.data_dir.join("work")),
        cache_dir: config.data_dir.join("cache"),
        machine_cpus,
        stop_grace_seconds: jobs.stop_grace_seconds,
        external_s3: jobs.external_s3.clone(),
        sandbox: jobs.sandbox,
        environments: jobs.environments.clone(),
        registries: jobs.registries.clone(),
        spot_interruptions_per_hour: jobs.spot_interruptions_per_hour,
    };
    let capacity = jobs.capacity.unwrap_or_else(default_capacity);
    let executor: Arc<dyn kiln_engine::Executor> = match &jobs.executor {
        ExecutorChoice::Local => Arc::new(LocalExecutor {
            kiln_bin: jobs.kiln_bin.clone(),
            capacity,
        }),
        ExecutorChoice::None => Arc::new(NoExecutor {
            capacity: Some(capacity),
        }),
        ExecutorChoice::Slurm(settings) => {
            // Paths the agents use are paths on the nodes: their work directory and caches, and
            // a host's CPUs are what Slurm allocates, not this machine's.
            runner.work_dir = settings.work_dir.clone();
            runner.cache_dir = settings.work_dir.join(".cache");
            runner.machine_cpus = u32::MAX;
            let slurm = Arc::new(SlurmExecutor::new(settings.as_ref().clone())?);
            let check = slurm.clone();
            // An unreachable slurmrestd is no reason not to serve: jobs wait until it answers.
            tokio::spawn(async move {
                match check.check().await {
                    Ok(summary) => tracing::info!(target: "kiln::slurm", "{summary}"),
                    Err(e) => tracing::warn!(
                        target: "kiln::slurm",
                        "{e}; kiln serves anyway, and jobs wait in Starting until slurmrestd answers"
                    ),
                }
            });
            slurm
        }
    };
    Ok(Engine::with_executor(store, logs, executor, runner))
}

async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/_kiln/metrics" {
        return metrics_endpoint(&app, &parts).await;
    }
    if parts.uri.path() == ui::ROOT || parts.uri.path().starts_with("/_kiln/ui/") {
        return ui::handle(app, parts, body).await;
    }
    if parts.uri.path().starts_with("/_kiln/") {
        return agent_api::handle(&app, parts, body).await;
    }
    if let Some(protocol) = cloudwatch::protocol_of(&parts) {
        return cloudwatch::handle(&app, parts, body, protocol).await;
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .map(|v| v.to_str().unwrap_or("").to_string());
    if let Some(target) = target {
        // Authenticated on its headers first; the body is read (at most `aws::MAX_BODY`) only then.
        return aws::handle(&app, parts, body, &target).await;
    }
    // S3: the body streams through unlimited (parts up to 5 GiB); `kiln-s3` verifies SigV4.
    app.s3.handle(Request::from_parts(parts, body)).await.map(Body::new)
}

/// `GET /_kiln/metrics`: the Prometheus exposition, behind `[metrics] token` when one is set.
async fn metrics_endpoint(app: &App, parts: &axum::http::request::Parts) -> Response {
    use axum::http::{StatusCode, header};
    if let Some(token) = &app.metrics_token {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| kiln_api::sigv4::constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "the metrics endpoint needs Authorization: Bearer <[metrics] token>\n",
            )
                .into_response();
        }
    }
    let text = app.metrics.render(&app.engine).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Input checks against the embedded object store (external buckets are not checked).
struct EmbeddedCatalog {
    objects: kiln_s3::ObjectStore,
    /// Bucket patterns served by external S3 (an exact name or `*`).
    external: Vec<String>,
}

#[kiln_engine::async_trait]
impl kiln_engine::catalog::ObjectCatalog for EmbeddedCatalog {
    async fn has_objects(&self, account: &str, bucket: &str, prefix: &str) -> Option<bool> {
        if self.external.iter().any(|p| p == "*" || p == bucket) {
            return None;
        }
        match self.objects.bucket(bucket).await {
            Ok(Some(b)) if b.account == account => {}
            // Another account's bucket, or none: nothing this account can read.
            Ok(_) => return Some(false),
            // The index cannot tell now: let the job find out when it stages its data.
            Err(_) => return None,
        }
        let query = kiln_s3::ListQuery {
            prefix: prefix.to_string(),
            delimiter: None,
            marker: None,
            max_keys: 1,
        };
        Some(
            self.objects
                .list_objects(bucket, query)
                .await
                .is_ok_and(|p| !p.objects.is_empty()),
        )
    }
}

/// The S3 endpoint's view of access keys: the keys file, and the temporary keys of running jobs
/// (agents stage data and upload models with them).
struct KeyringAccounts {
    keys: Arc<Keyring>,
    engine: Arc<Engine>,
}

#[kiln_engine::async_trait]
impl kiln_s3::Accounts for KeyringAccounts {
    async fn lookup(&self, access_key_id: &str) -> Option<(String, String)> {
        match self.keys.get(access_key_id) {
            Some(k) => Some((k.secret_access_key, k.account_id)),
            // A running job's key lives in the store, so it is valid on every replica.
            None => self.engine.job_credentials(access_key_id).await,
        }
    }
}
