//! The Slurm executor: a training job becomes one Slurm batch job (a node per host; a
//! heterogeneous job when instance groups ask for different nodes) submitted through slurmrestd,
//! whose batch script `srun`s one `kiln agent` per node. Slurm queues it; kiln shows the pending
//! reason, finds the job again by its handle after a restart (or by the placement's fingerprint in
//! its comment after a crash between submit and record), reads the partition's nodes for capacity
//! and for refusing jobs that could never run, and explains an ended job by the nodes its hosts ran
//! on (kiln's own host-to-node map: after a node failure Slurm's record no longer names it).
//!
//! Rooms: `api` (the REST calls and their version), `jwt` (tokens), `submit` (the request and
//! batch script, pure), `state` (what job records mean, pure), `cluster` (nodes, capacity, fit),
//! `nodelist` (Slurm's compressed node lists).

mod api;
mod cluster;
mod jwt;
mod nodelist;
mod state;
mod submit;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use api::{API_VERSION, Auth};
pub use submit::{InstanceOverride, TIME_LIMIT_MARGIN_MINUTES};

use crate::capacity::Resources;
use crate::executor::{Executor, HostSpec, JobLaunch, LaunchState, describe_hosts};
use api::{ApiError, Client, JobRecord};
use cluster::Cluster;
use state::Phase;

/// How long the partition's nodes are trusted without asking again.
const CLUSTER_TTL: Duration = Duration::from_secs(30);
/// How soon to ask again after slurmrestd could not be reached.
const CLUSTER_RETRY: Duration = Duration::from_secs(3);
/// How long an ended training job's Slurm job may take to end by itself (its agents have
/// reported and are exiting) before kiln cancels it.
const END_GRACE: Duration = Duration::from_secs(15);
/// Tries of a call that could not reach slurmrestd while launching, a second apart.
const LAUNCH_TRIES: usize = 3;

/// Settings of the Slurm executor (`[slurm]` in kiln.toml).
#[derive(Debug, Clone, Default)]
pub struct SlurmSettings {
    /// slurmrestd, e.g. `http://127.0.0.1:6820`.
    pub url: String,
    /// The Slurm user jobs run as (and the `sun` of minted tokens).
    pub user: String,
    /// The cluster's HS256 key file (`AuthAltParameters=jwt_key=...`): kiln mints tokens.
    pub jwt_key: Option<PathBuf>,
    /// A fixed token (`scontrol token`), instead of `jwt_key`.
    pub token: Option<String>,
    /// The partition (default: the cluster's default partition).
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// The `kiln` binary as the nodes see it.
    pub kiln_path: PathBuf,
    /// The hosts' work directory as the nodes see it (it must exist on them).
    pub work_dir: PathBuf,
    /// What instance types ask of Slurm where it differs from their sizes.
    pub instance_types: BTreeMap<String, InstanceOverride>,
    /// Variables every job gets (e.g. a PATH with the nodes' Python).
    pub environment: BTreeMap<String, String>,
    /// Shell lines the batch script runs before starting the agents.
    pub prologue: Option<String>,
}

/// Settings the Slurm executor cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("[slurm] url is not set: give slurmrestd's address, e.g. url = \"http://slurm-head:6820\"")]
    NoUrl,
    #[error("[slurm] url = \"{0}\" is not an http:// or https:// URL (e.g. \"http://slurm-head:6820\")")]
    BadUrl(String),
    #[error("[slurm] user is not set: name the Slurm user jobs run as, e.g. user = \"kiln\"")]
    NoUser,
    #[error(
        "[slurm] needs jwt_key (the cluster's HS256 key file, AuthAltParameters=jwt_key=...) or token (from `scontrol token`)"
    )]
    NoAuth,
    #[error("[slurm] sets both jwt_key and token: keep one")]
    BothAuth,
    #[error("cannot read the Slurm JWT key {path}: {source}; check [slurm] jwt_key and that kiln may read it")]
    KeyUnreadable { path: PathBuf, source: std::io::Error },
    #[error("the Slurm JWT key {0} is empty: point [slurm] jwt_key at the cluster's key file")]
    KeyEmpty(PathBuf),
    #[error("[slurm] {what} must be an absolute path as the nodes see it, got '{path}'")]
    RelativePath { what: &'static str, path: PathBuf },
    #[error("[slurm.instance_types.\"{instance_type}\"]: {problem}")]
    Override { instance_type: String, problem: String },
    #[error("{0}")]
    Client(String),
}

/// The handle of a launch: the Slurm job and what cleaning up needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SlurmHandle {
    slurm_job_id: u64,
    job: String,
    hosts: Vec<String>,
    work_dir: PathBuf,
    /// The launch's directory under `work_dir` ([`crate::executor::launch_subdir`]; empty in
    /// handles of earlier versions, whose trees were directly under it).
    #[serde(default)]
    subdir: PathBuf,
}

impl SlurmHandle {
    fn log_of(&self, host: &str) -> String {
        self.work_dir
            .join(&self.subdir)
            .join(&self.job)
            .join(host)
            .join("agent.log")
            .display()
            .to_string()
    }
}

fn parse_handle(handle: &str) -> Option<SlurmHandle> {
    serde_json::from_str(handle).ok()
}

/// One reading of the partition's nodes: when, and what came of it.
type ClusterRead = (Instant, Result<Arc<Cluster>, String>);

/// Runs training jobs on a Slurm cluster through slurmrestd.
pub struct SlurmExecutor {
    client: Arc<Client>,
    target: submit::Target,
    work_dir: PathBuf,
    instance_types: BTreeMap<String, InstanceOverride>,
    /// The partition's nodes, and when they were read (or the error, when they could not be).
    cluster: Mutex<Option<ClusterRead>>,
    /// The node of each host of a Slurm job, learned while it runs (host `i` on node `i`):
    /// after a node failure Slurm's record stops naming the failed node.
    placements: Mutex<HashMap<u64, Vec<String>>>,
    /// The failed nodes of a Slurm job ending for a node failure, in words, as first seen (a node
    /// may be back in service by the time the job has ended).
    failures: Mutex<HashMap<u64, Vec<String>>>,
    /// Since when slurmrestd has not answered (to warn once per outage, not on every pass).
    unreachable_since: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // The data behind these locks is a cache: what a panicking holder left is still usable.
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SlurmExecutor {
    /// Checks the settings and reads the key; talks to nobody yet ([`SlurmExecutor::check`] does).
    pub fn new(settings: SlurmSettings) -> Result<SlurmExecutor, SettingsError> {
        let url = settings.url.trim();
        if url.is_empty() {
            return Err(SettingsError::NoUrl);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SettingsError::BadUrl(url.to_string()));
        }
        if settings.user.trim().is_empty() {
            return Err(SettingsError::NoUser);
        }
        let auth = match (&settings.jwt_key, &settings.token) {
            (Some(_), Some(_)) => return Err(SettingsError::BothAuth),
            (None, None) => return Err(SettingsError::NoAuth),
            (None, Some(t)) if t.trim().is_empty() => return Err(SettingsError::NoAuth),
            (None, Some(t)) => Auth::Token(t.trim().to_string()),
            (Some(path), None) => {
                let key = std::fs::read(path).map_err(|source| SettingsError::KeyUnreadable {
                    path: path.clone(),
                    source,
                })?;
                if key.is_empty() {
                    return Err(SettingsError::KeyEmpty(path.clone()));
                }
                Auth::Key(key)
            }
        };
        for (what, path) in [("kiln_path", &settings.kiln_path), ("work_dir", &settings.work_dir)] {
            if !path.is_absolute() {
                return Err(SettingsError::RelativePath {
                    what,
                    path: path.clone(),
                });
            }
        }
        for (instance_type, o) in &settings.instance_types {
            let problem = if o.cpus == Some(0) {
                Some("cpus must be at least 1".to_string())
            } else if o.memory_mib == Some(0) {
                Some("memory_mib must be at least 1".to_string())
            } else {
                o.gres.as_deref().and_then(|g| cluster::parse_gres(g).err())
            };
            if let Some(problem) = problem {
                return Err(SettingsError::Override {
                    instance_type: instance_type.clone(),
                    problem,
                });
            }
        }
        let client = Client::new(url, settings.user.trim(), auth).map_err(SettingsError::Client)?;
        Ok(SlurmExecutor {
            client: Arc::new(client),
            target: submit::Target {
                partition: settings.partition.clone(),
                account: settings.account.clone(),
                qos: settings.qos.clone(),
                kiln_path: submit::path_text(&settings.kiln_path),
                work_dir: submit::path_text(&settings.work_dir),
                environment: settings.environment.clone(),
                prologue: settings.prologue.clone(),
            },
            work_dir: settings.work_dir,
            instance_types: settings.instance_types,
            cluster: Mutex::new(None),
            placements: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            unreachable_since: Mutex::new(None),
        })
    }

    /// Asks slurmrestd whether it answers and what the partition has (for the start-up log).
    pub async fn check(&self) -> Result<String, String> {
        if let Auth::Token(t) = self.client.auth() {
            match jwt::expiry(t) {
                Some(exp) if exp - unix_now() < 86_400 => tracing::warn!(
                    target: "kiln::slurm",
                    "the [slurm] token expires in {} s; kiln cannot renew it: use jwt_key, or a token with a longer lifespan",
                    exp - unix_now()
                ),
                _ => {}
            }
        }
        self.client.ping().await.map_err(|e| explain_auth(&e))?;
        let c = self.cluster().await?;
        let cap = c.capacity();
        Ok(format!(
            "slurmrestd {API_VERSION} at {}: partition '{}' with {} nodes ({} CPUs, {:.0} GiB, {} GPUs)",
            self.client.url(),
            c.partition,
            c.nodes.len(),
            cap.vcpus,
            cap.memory_gib,
            cap.gpus
        ))
    }

    /// The partition's nodes, read again when the cached copy is old.
    async fn cluster(&self) -> Result<Arc<Cluster>, String> {
        if let Some((at, cached)) = lock(&self.cluster).as_ref() {
            let ttl = if cached.is_ok() { CLUSTER_TTL } else { CLUSTER_RETRY };
            if at.elapsed() < ttl {
                return cached.clone();
            }
        }
        let read = async {
            let partitions = self.client.partitions().await.map_err(|e| explain_auth(&e))?;
            let nodes = self.client.nodes().await.map_err(|e| explain_auth(&e))?;
            Cluster::from_records(self.target.partition.as_deref(), &partitions, &nodes).map(Arc::new)
        };
        let result = read.await;
        self.note_reachable(&result);
        *lock(&self.cluster) = Some((Instant::now(), result.clone()));
        result
    }

    /// Warns once when slurmrestd stops answering, and says when it is back.
    fn note_reachable<T>(&self, result: &Result<T, String>) {
        let mut since = lock(&self.unreachable_since);
        match (result, since.is_some()) {
            (Err(e), false) => {
                tracing::warn!(target: "kiln::slurm", "{e}; jobs wait until it answers");
                *since = Some(Instant::now());
            }
            (Ok(_), true) => {
                let secs = since.map_or(0, |s| s.elapsed().as_secs());
                tracing::info!(target: "kiln::slurm", "slurmrestd answers again (after {secs} s)");
                *since = None;
            }
            _ => {}
        }
    }

    /// The Slurm job already submitted for this placement, if any (a launch redone after a crash
    /// between submitting and recording the handle).
    async fn find(&self, job: &JobLaunch) -> Result<Option<u64>, ApiError> {
        let jobs = self.client.jobs().await?;
        Ok(jobs
            .iter()
            .filter(|r| r.name == job.job && r.het_job_offset.unwrap_or(0) == 0)
            .filter(|r| submit::serves(r.comment.as_deref(), &job.token))
            .map(|r| r.job_id)
            .max())
    }

    async fn find_or_submit(&self, job: &JobLaunch, body: &serde_json::Value) -> Result<u64, String> {
        let mut last = String::new();
        for attempt in 0..LAUNCH_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self.find(job).await {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => {}
                Err(e @ ApiError::Unreachable { .. }) => {
                    last = e.to_string();
                    continue;
                }
                Err(e) => return Err(explain_auth(&e)),
            }
            match self.client.submit(body).await {
                Ok(id) => return Ok(id),
                // The submission may have arrived: look for it before trying again.
                Err(e @ ApiError::Unreachable { .. }) => last = e.to_string(),
                Err(e) => return Err(format!("Slurm refused the job: {}", explain_auth(&e))),
            }
        }
        Err(last)
    }

    /// The node of each host: kiln's map, learned while the job ran, or else the allocation Slurm
    /// reports (usable only if it names as many nodes as there are hosts).
    fn host_nodes(&self, handle: &SlurmHandle, allocated: &[String]) -> Option<Vec<String>> {
        lock(&self.placements)
            .get(&handle.slurm_job_id)
            .cloned()
            .or_else(|| (allocated.len() == handle.hosts.len()).then(|| allocated.to_vec()))
    }

    /// Records of the jobs of `handles`: one call for one job, one listing for several.
    async fn records(&self, handles: &[Option<SlurmHandle>]) -> Result<Vec<JobRecord>, ApiError> {
        let ids: Vec<u64> = handles.iter().flatten().map(|h| h.slurm_job_id).collect();
        match ids.as_slice() {
            [] => Ok(Vec::new()),
            [id] => match self.client.job(*id).await {
                Err(ApiError::UnknownJob(_)) => Ok(Vec::new()),
                other => other,
            },
            _ => self.client.jobs().await,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// slurmrestd answers a token it cannot verify with a generic error: say what to check.
fn explain_auth(e: &ApiError) -> String {
    match e {
        ApiError::Refused { detail, .. } if detail.contains("Unspecified error") || detail.contains("401") => format!(
            "{e} (this is also how slurmrestd answers credentials it does not accept: check that [slurm] jwt_key is the \
             cluster's key, or token is valid, and that [slurm] user exists)"
        ),
        _ => e.to_string(),
    }
}

#[async_trait]
impl Executor for SlurmExecutor {
    fn name(&self) -> &str {
        "slurm"
    }

    fn queues(&self) -> bool {
        true
    }

    async fn capacity(&self) -> Option<Resources> {
        self.cluster().await.ok().map(|c| c.capacity())
    }

    fn host_resources(&self, instance_type: &str) -> Option<Resources> {
        let host = HostSpec {
            host: String::new(),
            instance_type: instance_type.to_string(),
            resources: crate::capacity::instance_resources(instance_type),
        };
        let r = submit::node_request(&host, &self.instance_types).ok()?;
        Some(r.resources())
    }

    async fn fits(&self, hosts: &[HostSpec]) -> Result<(), String> {
        let never = |why: String| {
            format!(
                "The training job needs {} but this kiln's executor (slurm) can never provide that: {why}.",
                describe_hosts(hosts)
            )
        };
        let mut requests: Vec<(String, cluster::NodeRequest, usize)> = Vec::new();
        for h in hosts {
            let r = submit::node_request(h, &self.instance_types).map_err(never)?;
            match requests.iter_mut().find(|(t, q, _)| *t == h.instance_type && *q == r) {
                Some(e) => e.2 += 1,
                None => requests.push((h.instance_type.clone(), r, 1)),
            }
        }
        // Without the cluster's answer nothing can be said: the job is accepted and waits.
        let Ok(cluster) = self.cluster().await else {
            return Ok(());
        };
        cluster.fits(&requests).map_err(never)
    }

    async fn launch(&self, job: &JobLaunch) -> Result<String, String> {
        let components = submit::components(&job.hosts, &self.instance_types)?;
        let body = submit::submission(job, &self.target, &components);
        let id = self.find_or_submit(job, &body).await?;
        let handle = SlurmHandle {
            slurm_job_id: id,
            job: job.job.clone(),
            hosts: job.hosts.iter().map(|h| h.host.clone()).collect(),
            work_dir: self.work_dir.clone(),
            subdir: crate::executor::launch_subdir(job),
        };
        serde_json::to_string(&handle).map_err(|e| format!("cannot record Slurm job {id}: {e}"))
    }

    async fn poll(&self, handles: &[&str]) -> Vec<LaunchState> {
        let parsed: Vec<Option<SlurmHandle>> = handles.iter().map(|h| parse_handle(h)).collect();
        let records = match self.records(&parsed).await {
            Ok(r) => {
                self.note_reachable::<()>(&Ok(()));
                r
            }
            Err(e) => {
                self.note_reachable::<()>(&Err(explain_auth(&e)));
                return vec![LaunchState::default(); handles.len()];
            }
        };
        let phases: Vec<Option<(SlurmHandle, Option<Phase>)>> = parsed
            .into_iter()
            .map(|h| {
                h.map(|h| {
                    let mine = state::records_of(&records, h.slurm_job_id);
                    let p = state::phase(&mine);
                    (h, p)
                })
            })
            .collect();
        // Node states only matter to explain a job that ended other than by completing.
        let abnormal = phases.iter().flatten().any(|(_, p)| match p {
            Some(Phase::Ended(e)) => e.state != "COMPLETED",
            None => true,
            _ => false,
        });
        let nodes: Vec<cluster::Node> = if abnormal {
            self.client
                .nodes()
                .await
                .map(|n| n.iter().map(cluster::NodeRecord::node).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        phases
            .into_iter()
            .map(|entry| {
                let Some((h, phase)) = entry else {
                    return LaunchState::default();
                };
                match phase {
                    Some(Phase::Queued(reason)) => LaunchState {
                        waiting: Some(reason),
                        ..LaunchState::default()
                    },
                    Some(Phase::Running(nodes)) => {
                        if nodes.len() == h.hosts.len() {
                            lock(&self.placements).insert(h.slurm_job_id, nodes);
                        }
                        LaunchState::default()
                    }
                    Some(Phase::Ended(e)) => {
                        let map = self.host_nodes(&h, &e.allocated);
                        let mut failed = state::failed_nodes(&e, &h.hosts, map.as_deref(), &nodes);
                        let mut known = lock(&self.failures);
                        if failed.is_empty() {
                            failed = known.get(&h.slurm_job_id).cloned().unwrap_or_default();
                        } else {
                            known.insert(h.slurm_job_id, failed.clone());
                        }
                        LaunchState {
                            waiting: None,
                            gone: state::gone_reasons(&e, &h.hosts, map.as_deref(), &failed, |host| h.log_of(host)),
                            preempted: state::preemption(&e),
                        }
                    }
                    None => LaunchState {
                        waiting: None,
                        gone: h
                            .hosts
                            .iter()
                            .map(|host| {
                                (
                                    host.clone(),
                                    format!(
                                        "Slurm no longer knows job {} (it ended longer ago than the cluster keeps jobs, MinJobAge); {host}'s log: {}",
                                        h.slurm_job_id,
                                        h.log_of(host)
                                    ),
                                )
                            })
                            .collect(),
                        preempted: None,
                    },
                }
            })
            .collect()
    }

    async fn kill(&self, handle: &str) {
        let Some(h) = parse_handle(handle) else {
            return;
        };
        match self.client.cancel(h.slurm_job_id).await {
            Ok(()) | Err(ApiError::UnknownJob(_)) => {}
            Err(e) => tracing::warn!(
                target: "kiln::slurm",
                "cancelling Slurm job {} of training job {}: {}",
                h.slurm_job_id,
                h.job,
                explain_auth(&e)
            ),
        }
    }

    fn holds_pools(&self) -> bool {
        true
    }

    async fn launch_in(&self, pool: &str, job: &JobLaunch) -> Result<String, String> {
        let p = parse_handle(pool).ok_or("the warm pool's launch is not a Slurm job")?;
        if p.hosts.len() != job.hosts.len() {
            return Err(format!(
                "Slurm job {} holds {} nodes, the job needs {}",
                p.slurm_job_id,
                p.hosts.len(),
                job.hosts.len()
            ));
        }
        let id = p.slurm_job_id;
        let records = match self.client.job(id).await {
            Ok(r) => state::records_of(&r, id),
            Err(e) => return Err(format!("Slurm job {id}: {}", explain_auth(&e))),
        };
        if !matches!(state::phase(&records), Some(Phase::Running(_))) {
            return Err(format!("Slurm job {id} no longer runs"));
        }
        // Long enough for this job and its own keep-alive after it, counted from now.
        let now = unix_now();
        let needed = now + 60 * submit::launch_time_limit_minutes(job);
        for r in &records {
            let start = r.start_time.filter(|t| *t > 0).unwrap_or(now);
            let limit = r.time_limit.unwrap_or(0) as i64;
            if start + 60 * limit < needed {
                let minutes = ((needed - start + 59) / 60) as u64;
                self.client.set_time_limit(r.job_id, minutes).await.map_err(|e| {
                    format!(
                        "Slurm job {} cannot be given the time limit the job needs ({minutes} min; raising a limit takes a Slurm operator): {}",
                        r.job_id,
                        explain_auth(&e)
                    )
                })?;
            }
        }
        let handle = SlurmHandle {
            slurm_job_id: id,
            job: job.job.clone(),
            hosts: job.hosts.iter().map(|h| h.host.clone()).collect(),
            work_dir: self.work_dir.clone(),
            subdir: crate::executor::launch_subdir(job),
        };
        tracing::info!(target: "kiln::slurm", "training job {} runs in the warm pool's Slurm job {id}", job.job);
        serde_json::to_string(&handle).map_err(|e| format!("cannot record Slurm job {id}: {e}"))
    }

    async fn cleanup_retained(&self, handle: &str, keep_trees: bool) {
        let Some(h) = parse_handle(handle) else {
            return;
        };
        if keep_trees {
            return;
        }
        // The allocation stays for the warm pool; the hosts' files go once their agents are gone.
        tokio::spawn(async move {
            tokio::time::sleep(END_GRACE).await;
            remove_trees(&h, false);
        });
    }

    fn allocation(&self, handle: &str) -> Option<String> {
        parse_handle(handle).map(|h| h.slurm_job_id.to_string())
    }

    async fn cleanup(&self, handle: &str, keep_trees: bool) {
        let Some(h) = parse_handle(handle) else {
            return;
        };
        lock(&self.placements).remove(&h.slurm_job_id);
        lock(&self.failures).remove(&h.slurm_job_id);
        let client = self.client.clone();
        // In the background: the agents' last report (which may be what ended the job) is still
        // being answered, and the Slurm job ends only once they exit.
        tokio::spawn(async move {
            end_slurm_job(&client, &h).await;
            if !keep_trees {
                remove_trees(&h, true);
            }
        });
    }
}

/// Leaves no Slurm job behind: one still queued is cancelled at once, one still running gets
/// [`END_GRACE`] to end by itself (its agents have reported), then is cancelled.
async fn end_slurm_job(client: &Client, h: &SlurmHandle) {
    let started = Instant::now();
    loop {
        let records = match client.job(h.slurm_job_id).await {
            Ok(r) => Some(r),
            Err(ApiError::UnknownJob(_)) => return,
            Err(e) => {
                tracing::warn!(target: "kiln::slurm", "checking that Slurm job {} ended: {}", h.slurm_job_id, explain_auth(&e));
                None
            }
        };
        let queued = match records.as_deref().map(state::phase) {
            Some(Some(Phase::Ended(_)) | None) => return,
            Some(Some(Phase::Queued(_))) => true,
            // Running, or not known for now.
            _ => false,
        };
        if queued || started.elapsed() >= END_GRACE {
            tracing::info!(
                target: "kiln::slurm",
                "cancelling Slurm job {}: training job {} has ended",
                h.slurm_job_id,
                h.job
            );
            match client.cancel(h.slurm_job_id).await {
                Ok(()) | Err(ApiError::UnknownJob(_)) => {}
                Err(e) => {
                    tracing::warn!(target: "kiln::slurm", "cancelling Slurm job {}: {}", h.slurm_job_id, explain_auth(&e))
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Removes the hosts' trees (keeping each `agent.log`) and, with `output`, Slurm's output file,
/// where this machine sees the work directory (the same path on the nodes and here: a shared
/// filesystem, or nodes on this machine).
fn remove_trees(h: &SlurmHandle, output: bool) {
    if !h.work_dir.is_dir() {
        return;
    }
    for host in &h.hosts {
        let opt = h.work_dir.join(&h.subdir).join(&h.job).join(host).join("opt");
        if opt.exists()
            && let Err(e) = std::fs::remove_dir_all(&opt)
        {
            tracing::warn!(target: "kiln::slurm", "removing {}: {e}", opt.display());
        }
    }
    if output {
        let out: &Path = &h.work_dir.join(format!("slurm-{}-{}.out", h.job, h.slurm_job_id));
        let _ = std::fs::remove_file(out);
    }
}
