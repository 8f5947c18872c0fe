//! `kiln pool-next`: run by a cluster allocation that a warm pool keeps (the Slurm executor's batch
//! script), once the hosts of a job have exited: asks the control plane what to run next
//! (`kiln_api::agent::PoolNext`) until it has an answer. The allocation then starts the next job's
//! agents, or ends.

use std::time::{Duration, Instant};

use kiln_api::agent::PoolNext;

use crate::client::{Backoff, CallError, ControlPlane};

/// Longer than the server holds the question.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past the keep-alive the allocation waits for a control plane that does not answer.
const UNREACHABLE_SLACK: Duration = Duration::from_secs(60);

/// The next job to run in the allocation, or `None` when the allocation should end (the reason
/// is printed on standard error).
pub struct Next {
    pub job: String,
    pub placement: String,
    pub token: String,
    pub keep_alive_seconds: i64,
}

/// Asks until the control plane says what comes next. While it does not answer at all, asks for
/// up to the pool's keep-alive and a minute: a pool cannot outlive that without it.
pub async fn next(
    server: &str,
    account: &str,
    job: &str,
    token: &str,
    allocation: &str,
    keep_alive: Duration,
) -> Result<Option<Next>, String> {
    let path = format!("/_kiln/agent/v1/jobs/{account}/{job}");
    let cp = ControlPlane::new(server, &path, token, CALL_TIMEOUT)?;
    let query = format!("allocation={allocation}");
    let mut answered = Instant::now();
    let mut backoff = Backoff::new(Duration::from_secs(5));
    loop {
        match cp.get::<PoolNext>("pool/next", &query).await {
            Ok(PoolNext::Wait) => {
                answered = Instant::now();
                backoff = Backoff::new(Duration::from_secs(5));
            }
            Ok(PoolNext::Run {
                job,
                placement,
                token,
                keep_alive_seconds,
            }) => {
                return Ok(Some(Next {
                    job,
                    placement,
                    token,
                    keep_alive_seconds,
                }));
            }
            Ok(PoolNext::End { reason }) => {
                eprintln!("kiln pool-next: the allocation ends: {reason}");
                return Ok(None);
            }
            Err(CallError::Refused(m)) => {
                eprintln!("kiln pool-next: the allocation ends: the control plane refused: {m}");
                return Ok(None);
            }
            Err(CallError::Unreachable(m)) => {
                if answered.elapsed() >= keep_alive + UNREACHABLE_SLACK {
                    return Err(format!(
                        "the control plane has not answered for {} s ({m}); the warm pool's allocation ends",
                        answered.elapsed().as_secs()
                    ));
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The answer as the batch script reads it: job, placement, token and keep-alive, a line each.
/// Names, placements and tokens are kiln's own (no newlines).
pub fn lines(n: &Next) -> String {
    format!("{}\n{}\n{}\n{}\n", n.job, n.placement, n.token, n.keep_alive_seconds)
}
