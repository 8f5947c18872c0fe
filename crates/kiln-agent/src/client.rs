//! The agent's side of the `/_kiln/agent/` protocol (`kiln_api::agent`): one HTTP call per method,
//! and the retry loops for the calls that must get through. A call that fails to connect, times
//! out or gets a 5xx is "unreachable" and worth retrying; a 4xx is a refusal that retrying does not
//! fix.

use std::time::{Duration, Instant};

use kiln_api::agent::{Assignment, Directive, DoneReport, Heartbeat, LogBatch, StatusReport};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call did not get an answer the agent can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer, or a 5xx: the control plane may be restarting.
    Unreachable(String),
    /// A 4xx, or an answer that is not what the protocol says.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) | CallError::Refused(m) => f.write_str(m),
        }
    }
}

/// Delays between retries: 100 ms doubling up to `max`.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// The control plane as one host sees it.
#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    /// `{server}{host_path}`.
    base: String,
    token: String,
}

impl ControlPlane {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`) and the host's API path.
    pub fn new(server: &str, host_path: &str, token: &str, timeout: Duration) -> Result<ControlPlane, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("cannot set up an HTTP client: {e}"))?;
        Ok(ControlPlane {
            http,
            base: format!("{}{}", server.trim_end_matches('/'), host_path),
            token: token.to_string(),
        })
    }

    /// The URL of one call, for messages.
    pub fn url(&self, call: &str) -> String {
        format!("{}/{call}", self.base)
    }

    async fn answer<R: DeserializeOwned>(
        &self,
        call: &str,
        result: reqwest::Result<reqwest::Response>,
    ) -> Result<R, CallError> {
        let url = self.url(call);
        let resp = result.map_err(|e| CallError::Unreachable(format!("{url}: {e}")))?;
        let status = resp.status();
        // A 5xx or 429 did not take the call: it is sent again (what a 4xx refuses is not).
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let body = resp.text().await.unwrap_or_default();
            return Err(CallError::Unreachable(format!("{url}: {status}: {}", body.trim())));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(CallError::Refused(format!("{url}: {status}: {}", body.trim())));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(format!("{url}: reading the answer: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Refused(format!(
                "{url}: the answer is not what the agent protocol says ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }

    async fn post<B: Serialize, R: DeserializeOwned>(&self, call: &str, body: &B) -> Result<R, CallError> {
        let result = self
            .http
            .post(self.url(call))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await;
        self.answer(call, result).await
    }

    /// `GET <base>/<call>?<query>`, once.
    pub async fn get<R: DeserializeOwned>(&self, call: &str, query: &str) -> Result<R, CallError> {
        let url = if query.is_empty() {
            self.url(call)
        } else {
            format!("{}?{query}", self.url(call))
        };
        let result = self.http.get(url).bearer_auth(&self.token).send().await;
        self.answer(call, result).await
    }

    /// `GET .../assignment`, once.
    pub async fn assignment_once(&self) -> Result<Assignment, CallError> {
        let result = self
            .http
            .get(self.url("assignment"))
            .bearer_auth(&self.token)
            .send()
            .await;
        self.answer("assignment", result).await
    }

    /// `GET .../assignment`, retried while the control plane is unreachable, for up to `retry_for`.
    pub async fn assignment(&self, retry_for: Duration) -> Result<Assignment, String> {
        let deadline = Instant::now() + retry_for;
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            match self.assignment_once().await {
                Ok(a) => return Ok(a),
                Err(CallError::Refused(m)) => {
                    return Err(format!(
                        "the control plane refused to hand out this host's assignment ({m}); check the --account, --job, --host and token the agent was started with"
                    ));
                }
                Err(CallError::Unreachable(m)) => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "the control plane did not answer within {}s ({m}); check that `kiln serve` is running and reachable at the --server URL",
                            retry_for.as_secs()
                        ));
                    }
                    eprintln!("kiln agent: waiting for the control plane: {m}");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// `POST .../status`, once.
    pub async fn status(&self, report: &StatusReport) -> Result<Directive, CallError> {
        self.post("status", report).await
    }

    /// `POST .../logs`, once.
    pub async fn logs(&self, batch: &LogBatch) -> Result<Directive, CallError> {
        self.post("logs", batch).await
    }

    /// `POST .../heartbeat`, once.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<Directive, CallError> {
        self.post("heartbeat", beat).await
    }

    /// `POST .../done`, retried while the control plane is unreachable, for up to `retry_for`.
    pub async fn done(&self, report: &DoneReport, retry_for: Duration) -> Result<(), String> {
        let deadline = Instant::now() + retry_for;
        let mut backoff = Backoff::new(Duration::from_secs(5));
        loop {
            match self.post::<_, serde_json::Value>("done", report).await {
                Ok(_) => return Ok(()),
                Err(CallError::Refused(m)) => {
                    return Err(format!("the control plane refused the final report: {m}"));
                }
                Err(CallError::Unreachable(m)) => {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "could not deliver the final report within {}s: {m}",
                            retry_for.as_secs()
                        ));
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}
