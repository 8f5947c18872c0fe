//! `kiln agent`: the runtime on a compute host. It fetches its assignment from the control plane,
//! builds the host's `/opt/ml` tree, stages the input channels, runs the algorithm (a built-in,
//! the user's script, or a command), streams its output lines and heartbeats back, uploads the
//! model, and reports how it ended. It talks to the control plane over HTTP only and never touches
//! the database; it keeps training while the control plane is away and reports when it is back.
//!
//! It is not where jobs are scheduled or their status decided (that is `kiln-engine`), and it does
//! not speak S3 itself (`kiln-blob` does). Modules by concern: [`client`] (the agent protocol),
//! `session` (heartbeats, phase reports, log shipping, the stop switch), [`hostmetrics`] (CPU,
//! memory and disk of the algorithm's processes), [`tree`] (the `/opt/ml`
//! tree and its config files), [`env`](mod@env) (the `SM_*` environment and script arguments, with
//! [`pyjson`] for the toolkit's exact formatting), [`staging`] (channels, source bundle,
//! artifacts; `blob` adapts `kiln-blob` to it), `host` (one host's run, start to end), [`launch`] (processes and signals), [`logs`] (lines and the bounded buffer),
//! [`pipe`] (Pipe mode FIFOs), [`script`] and `venv` (script mode), [`artifacts`] (failure
//! reasons).

pub mod artifacts;
mod blob;
pub mod checkpoints;
pub mod client;
pub mod distributed;
pub mod env;
pub mod environments;
mod host;
pub mod hostmetrics;
pub mod image;
pub mod launch;
pub mod logs;
pub mod pipe;
pub mod pool;
pub mod pyjson;
pub mod sandbox;
pub mod script;
mod session;
pub mod staging;
pub mod tree;
pub mod venv;

use std::path::PathBuf;
use std::time::Duration;

use kiln_api::agent::host_path;

/// How an agent was started.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// Control plane URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    pub account: String,
    pub job: String,
    pub host: String,
    /// Root under which the host's tree is built: `<work_dir>/<job>/<host>/opt/ml`.
    pub work_dir: PathBuf,
    /// The job's bearer token for the agent API.
    pub token: String,
    /// Where the job's hosts run, as the executor's launch knows it on the node (the Slurm batch
    /// script's allocation); over the assignment's `host_addresses`.
    pub host_addresses: std::collections::BTreeMap<String, String>,
}

/// The agent's clocks and limits. [`Timing::default`] is what `kiln agent` uses.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long to wait for the control plane to hand out the assignment.
    pub assignment_retry_for: Duration,
    /// How long to keep trying to deliver queued log lines and the final report.
    pub final_retry_for: Duration,
    pub heartbeat_every: Duration,
    /// How often the host's metrics are sampled while the algorithm runs.
    pub host_metrics_every: Duration,
    /// At most one log batch per this interval (unless a full batch is waiting).
    pub log_flush_every: Duration,
    /// The log buffer's limit while the control plane is unreachable.
    pub log_buffer_bytes: usize,
    /// Timeout of one HTTP call.
    pub request_timeout: Duration,
    /// Also print every log line on the agent's stdout.
    pub echo_logs: bool,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            assignment_retry_for: Duration::from_secs(60),
            final_retry_for: Duration::from_secs(3600),
            heartbeat_every: Duration::from_secs(1),
            host_metrics_every: Duration::from_secs(5),
            log_flush_every: Duration::from_millis(200),
            log_buffer_bytes: 100 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            echo_logs: true,
        }
    }
}

/// Why an agent could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Other(String),
}

/// Runs the host's part of the job to the end. Returns the process exit code the agent should use:
/// 0 once the control plane has the final report, whatever the algorithm did.
pub async fn run(args: AgentArgs) -> Result<i32, AgentError> {
    // The server makes its own files private (umask 077), which its agents inherit; a job's files
    // get the usual 022 as in a container (so model.tar.gz unpacks readable). The trees stay private:
    // the work directory above them is 0700.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    run_with(args, Timing::default()).await
}

/// [`run`] with explicit clocks and limits (tests shorten them).
pub async fn run_with(args: AgentArgs, timing: Timing) -> Result<i32, AgentError> {
    let path = host_path(&args.account, &args.job, &args.host);
    let cp = client::ControlPlane::new(&args.server, &path, &args.token, timing.request_timeout)
        .map_err(AgentError::Other)?;
    let mut assignment = cp
        .assignment(timing.assignment_retry_for)
        .await
        .map_err(|m| AgentError::Other(format!("job {} host {}: no assignment: {m}", args.job, args.host)))?;
    assignment.host_addresses.extend(args.host_addresses.clone());
    let mut session = session::Session::start(cp, timing);
    session.sample_host(hostmetrics::Sampler::new(
        args.work_dir.clone(),
        assignment.memory_bytes,
    ));
    let report = host::run(&args, &assignment, &session).await;
    match &report.failure_reason {
        Some(r) => eprintln!("kiln agent: host {} failed: {r}", args.host),
        None => eprintln!("kiln agent: host {} finished", args.host),
    }
    session.finish(report).await.map_err(|m| {
        AgentError::Other(format!(
            "job {} host {}: {m}; the control plane will find the host gone and fail it",
            args.job, args.host
        ))
    })?;
    Ok(0)
}
