//! slurmrestd's REST API, the calls kiln makes: submit, look up and cancel jobs, read partitions
//! and nodes, ping. The API version is [`API_VERSION`]; the request and answer shapes it implies
//! are in `submit.rs` (what is sent) and the `*Record` types (what is read). Every call carries
//! `X-SLURM-USER-NAME` and a JWT (`X-SLURM-USER-TOKEN`), minted here from the cluster's key or
//! given as a fixed token.

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::cluster::{NodeRecord, PartitionRecord};
use super::jwt;

/// The slurmrestd API version kiln speaks: what Debian's Slurm 22.05 serves (and what CI tests).
/// Moving to v0.0.40 or later changes the paths and some shapes; see docs/slurm.md.
pub const API_VERSION: &str = "v0.0.38";

/// How long a minted token is valid; a new one is minted when less than a minute is left.
const TOKEN_LIFETIME_SECONDS: i64 = 600;

/// How slurmrestd knows kiln.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The cluster's HS256 key: kiln mints short-lived tokens.
    Key(Vec<u8>),
    /// A token made by `scontrol token` (it expires; kiln cannot renew it).
    Token(String),
}

/// Slurm's `errors[]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorRecord {
    pub error: Option<String>,
    pub description: Option<String>,
    pub error_number: Option<i64>,
    pub errno: Option<i64>,
    pub source: Option<String>,
}

impl ErrorRecord {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = self.error.as_deref().filter(|e| !e.is_empty()) {
            parts.push(e.to_string());
        }
        if let Some(d) = self.description.as_deref().filter(|d| !d.is_empty()) {
            parts.push(format!("({d})"));
        }
        if parts.is_empty() {
            parts.push(format!("error {}", self.number().unwrap_or(-1)));
        }
        parts.join(" ")
    }

    fn number(&self) -> Option<i64> {
        self.error_number.or(self.errno)
    }
}

/// Slurm's error number for a job id it does not know (`ESLURM_INVALID_JOB_ID`).
const INVALID_JOB_ID: i64 = 2017;

/// Why a call did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// slurmrestd could not be reached, or did not answer in time.
    #[error("slurmrestd at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    /// slurmrestd answered with errors.
    #[error("slurmrestd at {url} answered {path} with: {detail}")]
    Refused { url: String, path: String, detail: String },
    /// The job is not (or no longer) known to Slurm.
    #[error("Slurm does not know job {0}")]
    UnknownJob(u64),
}

/// A connection to slurmrestd.
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    url: String,
    user: String,
    auth: Auth,
    /// The last minted token and its expiry (epoch seconds).
    minted: Mutex<Option<(String, i64)>>,
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<ErrorRecord>,
}

#[derive(Deserialize)]
struct JobsAnswer {
    #[serde(default)]
    jobs: Vec<JobRecord>,
}

#[derive(Deserialize)]
struct NodesAnswer {
    #[serde(default)]
    nodes: Vec<NodeRecord>,
}

#[derive(Deserialize)]
struct PartitionsAnswer {
    #[serde(default)]
    partitions: Vec<PartitionRecord>,
}

#[derive(Deserialize)]
struct SubmitAnswer {
    job_id: Option<u64>,
}

/// slurmrestd's job record (the fields kiln reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JobRecord {
    pub job_id: u64,
    pub name: String,
    pub comment: Option<String>,
    pub job_state: String,
    pub state_reason: Option<String>,
    pub state_description: Option<String>,
    /// The nodes the job holds now, compressed (`node[1-2]`); while a job ends, nodes that are
    /// done (or failed) drop out.
    pub nodes: Option<String>,
    /// The allocation as made (its node list stays whole while the job ends).
    pub job_resources: Option<JobResources>,
    /// Raw wait status of the batch script (`exit 3` is 768).
    pub exit_code: Option<i64>,
    /// The leader's id for a component of a heterogeneous job (0 otherwise).
    pub het_job_id: Option<u64>,
    pub het_job_offset: Option<u64>,
    /// How often Slurm requeued the job (preemption with `PreemptMode=REQUEUE`, `scontrol requeue`).
    pub restart_cnt: Option<u64>,
    /// The time limit in minutes.
    pub time_limit: Option<u64>,
    /// When it started (epoch seconds; 0 or absent while queued).
    pub start_time: Option<i64>,
}

/// slurmrestd's `job_resources` (the field kiln reads).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JobResources {
    pub nodes: Option<String>,
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Client {
    /// A client of slurmrestd at `url` acting as `user`.
    pub fn new(url: &str, user: &str, auth: Auth) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot set up an HTTP client for slurmrestd: {e}"))?;
        Ok(Client {
            http,
            url: url.trim_end_matches('/').to_string(),
            user: user.to_string(),
            auth,
            minted: Mutex::new(None),
        })
    }

    /// How kiln authenticates.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn token(&self) -> String {
        match &self.auth {
            Auth::Token(t) => t.clone(),
            Auth::Key(key) => {
                let now = now_seconds();
                let mut minted = match self.minted.lock() {
                    Ok(m) => m,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if let Some((t, exp)) = minted.as_ref()
                    && exp - now > 60
                {
                    return t.clone();
                }
                let t = jwt::mint(key, &self.user, now, TOKEN_LIFETIME_SECONDS);
                *minted = Some((t.clone(), now + TOKEN_LIFETIME_SECONDS));
                t
            }
        }
    }

    fn path(what: &str) -> String {
        format!("/slurm/{API_VERSION}/{what}")
    }

    /// Sends a request and reads the answer; Slurm's `errors[]` become [`ApiError::Refused`].
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        what: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let path = Self::path(what);
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-SLURM-USER-NAME", &self.user)
            .header("X-SLURM-USER-TOKEN", self.token());
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |detail: String| ApiError::Unreachable {
            url: self.url.clone(),
            detail,
        };
        let refused = |detail: String| ApiError::Refused {
            url: self.url.clone(),
            path: path.clone(),
            detail,
        };
        let resp = req.send().await.map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| unreachable(error_chain(&e)))?;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(refused(format!(
                "HTTP 401 ({}): slurmrestd did not accept kiln's credentials for user '{}'",
                text.trim(),
                self.user
            )));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(refused(format!(
                "HTTP 404: slurmrestd does not serve API {API_VERSION} (start it with -s openapi/{API_VERSION})"
            )));
        }
        let errors = serde_json::from_str::<Errors>(&text)
            .map(|e| e.errors)
            .unwrap_or_default();
        if let Some(e) = errors.first() {
            if e.number() == Some(INVALID_JOB_ID)
                && let Some(id) = what.rsplit('/').next().and_then(|s| s.parse().ok())
            {
                return Err(ApiError::UnknownJob(id));
            }
            let all: Vec<String> = errors.iter().map(ErrorRecord::describe).collect();
            return Err(refused(all.join("; ")));
        }
        if !status.is_success() {
            return Err(refused(format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        serde_json::from_str(&text).map_err(|e| refused(format!("an answer kiln cannot read ({e})")))
    }

    /// Checks that slurmrestd answers and accepts kiln's credentials.
    pub async fn ping(&self) -> Result<(), ApiError> {
        self.call::<serde_json::Value>(reqwest::Method::GET, "ping", None)
            .await
            .map(|_| ())
    }

    /// Every job the controller still knows (running, pending, and ended within `MinJobAge`).
    pub async fn jobs(&self) -> Result<Vec<JobRecord>, ApiError> {
        Ok(self.call::<JobsAnswer>(reqwest::Method::GET, "jobs", None).await?.jobs)
    }

    /// One job (with every component of a heterogeneous job).
    pub async fn job(&self, id: u64) -> Result<Vec<JobRecord>, ApiError> {
        Ok(self
            .call::<JobsAnswer>(reqwest::Method::GET, &format!("job/{id}"), None)
            .await?
            .jobs)
    }

    /// Submits a batch job; its id.
    pub async fn submit(&self, body: &serde_json::Value) -> Result<u64, ApiError> {
        let answer: SubmitAnswer = self.call(reqwest::Method::POST, "job/submit", Some(body)).await?;
        answer.job_id.ok_or_else(|| ApiError::Refused {
            url: self.url.clone(),
            path: Self::path("job/submit"),
            detail: "the answer has no job_id".into(),
        })
    }

    /// Cancels a job (every component): Slurm sends SIGTERM, then SIGKILL after `KillWait`.
    pub async fn cancel(&self, id: u64) -> Result<(), ApiError> {
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &format!("job/{id}"), None)
            .await
            .map(|_| ())
    }

    /// Sets a job's time limit (raising it takes an operator or administrator of the cluster).
    pub async fn set_time_limit(&self, id: u64, minutes: u64) -> Result<(), ApiError> {
        let body = serde_json::json!({ "time_limit": minutes });
        self.call::<serde_json::Value>(reqwest::Method::POST, &format!("job/{id}"), Some(&body))
            .await
            .map(|_| ())
    }

    /// Every node.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, ApiError> {
        Ok(self
            .call::<NodesAnswer>(reqwest::Method::GET, "nodes", None)
            .await?
            .nodes)
    }

    /// Every partition.
    pub async fn partitions(&self) -> Result<Vec<PartitionRecord>, ApiError> {
        Ok(self
            .call::<PartitionsAnswer>(reqwest::Method::GET, "partitions", None)
            .await?
            .partitions)
    }
}

/// An error with its causes (reqwest's top-level message alone rarely says what failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
