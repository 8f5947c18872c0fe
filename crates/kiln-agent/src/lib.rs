//! `kiln agent`: the runtime on a compute host. It fetches its assignment from the control plane,
//! builds the host's `/opt/ml` tree, stages the input channels, runs the algorithm (a built-in,
//! the user's script, or a command), streams its output lines and heartbeats back, uploads the
//! model, and reports how it ended. It talks to the control plane over HTTP only and never touches
//! the database; it keeps training while the control plane is away and reports when it is back.

use std::path::PathBuf;

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
}

/// Why an agent could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Other(String),
}

/// Runs the host's part of the job to the end. Returns the process exit code the agent should use.
pub async fn run(args: AgentArgs) -> Result<i32, AgentError> {
    Err(AgentError::Other(format!(
        "kiln agent is not implemented yet (job {}, host {})",
        args.job, args.host
    )))
}
