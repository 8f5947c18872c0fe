//! The protocol between the control plane and `kiln agent` (one agent per host of a job), served
//! under `/_kiln/agent/v1/jobs/{account}/{job}/hosts/{host}/...` with `Authorization: Bearer
//! <job token>`. JSON bodies, snake_case. The agent retries every call until the control plane
//! answers (it may be restarting): a 5xx or 429 (a throttled call is answered 503) is sent again,
//! a 4xx is final (an ended job's token is refused with 403). Reports are idempotent: a log
//! batch numbered by line is stored once, and a final report the host had recorded, sent again
//! after its answer was lost, is answered `{}` even once the job has ended.
//!
//! | call | body | answer |
//! |---|---|---|
//! | `GET  .../assignment` | | [`Assignment`] |
//! | `POST .../status` | [`StatusReport`] | [`Directive`] |
//! | `POST .../logs` | [`LogBatch`] | [`Directive`] |
//! | `POST .../heartbeat` | [`Heartbeat`] (`{}` from older agents) | [`Directive`] |
//! | `POST .../done` | [`DoneReport`] | `{}` |

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the agent API lives, relative to the control plane's URL.
pub fn host_path(account: &str, job: &str, host: &str) -> String {
    format!("/_kiln/agent/v1/jobs/{account}/{job}/hosts/{host}")
}

/// An S3 endpoint and the credentials to use there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3Access {
    pub endpoint_url: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`http://host/bucket/key`), as kiln's embedded store needs.
    pub path_style: bool,
}

/// An external S3 for buckets matching `bucket` (an exact name or `*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalS3 {
    pub bucket: String,
    #[serde(flatten)]
    pub access: S3Access,
}

/// What the host runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Runtime {
    /// A built-in algorithm: `kiln algo <algorithm> train`.
    Builtin { algorithm: String },
    /// Script mode (sagemaker-training-toolkit semantics): the `sagemaker_program` entry point from
    /// `sagemaker_submit_directory`. `framework` is informational (pytorch, tensorflow, sklearn, ...).
    Script { framework: String },
    /// `ContainerEntrypoint` + `ContainerArguments` run as a command on the host.
    Command {
        entrypoint: Vec<String>,
        arguments: Vec<String>,
    },
    /// Does nothing and succeeds (measures the platform's own overhead).
    Noop,
    /// The job's own image, pulled from its registry and run in the host's sandbox as SageMaker
    /// runs a container: its entrypoint with the argument `train`, or `ContainerEntrypoint` and
    /// `ContainerArguments` when given.
    Image {
        image: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entrypoint: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arguments: Option<Vec<String>>,
    },
}

/// `[[registries]]` of `kiln.toml`: how to reach the registries of jobs' own images (kiln-image's
/// settings, as the agent receives them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryRule {
    /// A glob over registry hosts (`host[:port]`).
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Plain HTTP (the default for loopback registries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// `host[:port]` of a registry that serves the matching registries' images instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

/// One instance group of `resourceconfig.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceGroupHosts {
    pub instance_group_name: String,
    pub instance_type: String,
    pub hosts: Vec<String>,
}

/// Everything a host needs to run its part of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub account: String,
    pub region: String,
    pub job_name: String,
    pub job_arn: String,
    /// This host, e.g. `algo-1`.
    pub host: String,
    /// Every host of the job, sorted.
    pub hosts: Vec<String>,
    pub current_group: String,
    pub instance_type: String,
    pub instance_groups: Vec<InstanceGroupHosts>,
    /// CPUs and GPUs this host may use (`SM_NUM_CPUS`, `SM_NUM_GPUS`).
    pub num_cpus: u32,
    pub num_gpus: u32,
    /// The stored `CreateTrainingJob` request with the service's defaults filled in.
    pub spec: Value,
    pub runtime: Runtime,
    /// Log stream of this host start: `<job>/algo-N-<epoch seconds>`.
    pub log_stream: String,
    /// Access to kiln's embedded object store, as the job's account.
    pub s3: S3Access,
    /// External S3 endpoints by bucket.
    #[serde(default)]
    pub external_s3: Vec<ExternalS3>,
    /// `<S3OutputPath>/<job>/output` (no trailing slash).
    pub output_prefix: String,
    /// Whether this host uploads `model.tar.gz` and `output.tar.gz` (the first host does).
    pub uploads_artifacts: bool,
    /// Seconds between SIGTERM and SIGKILL when the job is stopped.
    pub stop_grace_seconds: u64,
    /// A directory shared by the jobs of this machine for caches (virtualenvs by requirements hash).
    pub cache_dir: String,
    /// Whether the algorithm runs in a sandbox (bubblewrap): the tree at `/opt/ml`, the system
    /// read-only, private `/tmp`, its own hostname and `/etc/hosts`. The control plane decides
    /// (`[jobs] sandbox`); a host that cannot sandbox then fails rather than run unconfined.
    #[serde(default)]
    pub sandbox: bool,
    /// The address each host of the job runs at, by host name, for the sandbox's `/etc/hosts`
    /// (hosts missing here are taken to run on this machine: 127.0.0.1).
    #[serde(default)]
    pub host_addresses: std::collections::BTreeMap<String, String>,
    /// The operator's `[[environments]]`: images mapped to interpreters they already have.
    #[serde(default)]
    pub environments: Vec<EnvironmentRule>,
    /// The operator's `[[registries]]`, for jobs' own images.
    #[serde(default)]
    pub registries: Vec<RegistryRule>,
    /// This host's directory of the job's warm pool (`KeepAlivePeriodInSeconds`), as the host sees
    /// it: shown at `/opt/ml/sagemaker/warmpoolcache` and kept for the next job reusing the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_pool_cache: Option<String>,
    /// The memory of the host's instance type, in bytes, which `MemoryUtilization` is a percentage
    /// of (the machine's own when absent or larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// `[[environments]]` of `kiln.toml`: script-mode jobs whose image matches `image` (a glob over the
/// whole image URI: `*` any text, `?` one character) run on `python` instead of the image's pinned
/// environment; `system_site_packages` lets a job's `requirements.txt` environment see the
/// interpreter's own packages (e.g. Debian's `python3-torch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRule {
    pub image: String,
    pub python: String,
    #[serde(default)]
    pub system_site_packages: bool,
}

/// Phases a host reports, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Downloading,
    Training,
    Uploading,
}

/// `POST .../status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub phase: Phase,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST .../logs`: `(epoch milliseconds, line)` pairs, raw (the control plane escapes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    pub lines: Vec<(i64, String)>,
    /// The sending agent (one id per agent process) and how many lines it sent to this stream
    /// before this batch: a batch re-sent after a lost reply is stored once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `POST .../heartbeat`. Older agents send `{}`, and older control planes do not read the body:
/// samples sent to one are lost, nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Host metrics sampled since the last heartbeat that carried some, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_metrics: Vec<HostSample>,
}

/// The host metrics SageMaker publishes for a training host (namespace `/aws/sagemaker/TrainingJobs`,
/// dimension `Host=<job>/<host>`), by CloudWatch metric name.
pub const HOST_METRICS: [&str; 5] = [
    "CPUUtilization",
    "MemoryUtilization",
    "DiskUtilization",
    "GPUUtilization",
    "GPUMemoryUtilization",
];

/// One sample of the host's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSample {
    /// When it was taken, epoch milliseconds.
    pub timestamp_ms: i64,
    /// Percent values by metric name (one of [`HOST_METRICS`]); a metric the host cannot measure
    /// is absent.
    pub values: std::collections::BTreeMap<String, f64>,
}

/// What the control plane wants the host to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Continue,
    /// Stop the algorithm (SIGTERM, then SIGKILL after the grace period), upload what exists, report done.
    Stop,
    /// A spot interruption: stop the algorithm as for `Stop` and give the checkpoints their final
    /// sync, but upload no model (the job goes on in a new attempt), then report done.
    Interrupt,
}

/// The answer to status, logs and heartbeat calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directive {
    pub action: Action,
}

/// `POST .../done`: how the host's part ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneReport {
    /// Exit code of the algorithm; `None` if it never ran (staging failed) or was killed by a signal.
    pub exit_code: Option<i32>,
    /// `AlgorithmError: ...` or `ClientError: ...` when the host failed; `None` on success or stop.
    pub failure_reason: Option<String>,
    /// `s3://.../model.tar.gz` once uploaded.
    pub model_artifacts: Option<String>,
}

/// `GET /_kiln/agent/v1/jobs/{account}/{job}/pool/next?allocation=ID`, with the job's agent token:
/// asked by an allocation that a warm pool keeps (a cluster's job, see the Slurm executor) once the
/// job's hosts have exited there: what to run in it next. The server holds the call for a while
/// when it has nothing to say yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PoolNext {
    /// The warm pool is still `Available` (or the job's end is still being recorded): ask again.
    Wait,
    /// Run this job's hosts next, in the same allocation.
    Run {
        job: String,
        /// The placement's directory under the work directory (`<account>/<fingerprint>`).
        placement: String,
        /// The job's agent token (for its agents, and for asking what follows it).
        token: String,
        /// Its `KeepAlivePeriodInSeconds`.
        keep_alive_seconds: i64,
    },
    /// The warm pool was released (expired, terminated, or its next job runs elsewhere): the
    /// allocation ends.
    End { reason: String },
}
