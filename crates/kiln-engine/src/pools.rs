//! Warm pools that keep their allocation. On an executor that [holds pools](Executor::holds_pools)
//! (a cluster), the allocation of a job with `KeepAlivePeriodInSeconds` outlives the job: once the
//! job's hosts have exited, the allocation asks what to run next (`PoolNext`) with the ended job's
//! agent token, and keeps asking while the pool is `Available`. A job that reuses the pool is
//! launched into that allocation ([`Executor::launch_in`]), and the allocation's next question is
//! answered with that job, whose token then asks for what follows. Expiry, `UpdateTrainingJob` to
//! 0, or a next job launched elsewhere end the allocation.
//!
//! The question is also the allocation's word that the job's hosts have exited: hosts that never
//! reported are lost after [`REPORT_GRACE`], as when a cluster's job ends.

use std::time::{Duration, Instant};

use kiln_api::agent::PoolNext;
use kiln_api::status::WarmPoolResourceStatus;
use kiln_api::{ApiResult, AwsError};
use kiln_store::TrainingJobRow;

use crate::Engine;
use crate::executor::{Executor, placement_subdir};
use crate::training::machine::{Event, keep_alive};

/// How long hosts whose processes have exited may take to have their last report land before
/// they are called lost.
pub const REPORT_GRACE: Duration = Duration::from_secs(8);
/// How often a held question looks at the pool again.
const LOOK_EVERY: Duration = Duration::from_millis(500);

impl Engine {
    /// `GET .../pool/next`: what the allocation `allocation`, whose hosts of job `name` have
    /// exited, runs next. Held up to `hold` while the answer is [`PoolNext::Wait`].
    pub async fn agent_pool_next(
        &self,
        account: &str,
        name: &str,
        token: &str,
        allocation: &str,
        hold: Duration,
    ) -> ApiResult<PoolNext> {
        let asked = Instant::now();
        loop {
            let job = self.pool_job(account, name, token).await?;
            if !job.status.is_terminal() && asked.elapsed() >= REPORT_GRACE {
                self.lose_silent_hosts(&job, allocation).await;
            }
            let answer = self.pool_answer(&job, allocation).await?;
            if answer != PoolNext::Wait || asked.elapsed() >= hold {
                return Ok(answer);
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// The job a pool question names, if the token is its agents' token. Unlike the hosts' calls,
    /// this one is taken after the job has ended: while its warm pool lasts, its allocation asks.
    async fn pool_job(&self, account: &str, name: &str, token: &str) -> ApiResult<TrainingJobRow> {
        let denied = || AwsError::new(403, "AccessDenied", format!("invalid agent token for {name}"));
        let job = self.load_job(account, name).await?.ok_or_else(denied)?;
        let expected = job.run.agent_token.as_deref().unwrap_or_default();
        if expected.is_empty() || !crate::agents::constant_time_eq(expected.as_bytes(), token.as_bytes()) {
            return Err(denied());
        }
        Ok(job)
    }

    async fn pool_answer(&self, job: &TrainingJobRow, allocation: &str) -> ApiResult<PoolNext> {
        let end = |reason: String| Ok(PoolNext::End { reason });
        if !job.status.is_terminal() {
            // Its hosts have exited; the job's end is being recorded.
            return Ok(PoolNext::Wait);
        }
        let Some(pool) = &job.warm_pool else {
            return end(format!("training job {} kept no warm pool", job.name));
        };
        match pool.status {
            WarmPoolResourceStatus::Available => Ok(PoolNext::Wait),
            WarmPoolResourceStatus::Reused => {
                let Some(by) = pool.reused_by_job.as_deref() else {
                    return end(format!("the warm pool of {} was reused by no named job", job.name));
                };
                let Some(next) = self.load_job(&job.account, by).await? else {
                    return end(format!("training job {by}, which reused the warm pool, is gone"));
                };
                Ok(next_in_allocation(self.executor.as_ref(), job, &next, allocation))
            }
            other => end(format!("the warm pool of {} is {}", job.name, other.as_str())),
        }
    }

    /// Calls the hosts of `job` that never reported lost: the allocation says they have exited.
    async fn lose_silent_hosts(&self, job: &TrainingJobRow, allocation: &str) {
        for h in job.run.hosts.iter().filter(|h| h.done.is_none()) {
            let reason = format!(
                "InternalServerError: the agent of {} stopped without reporting how the host ended (its step in allocation {allocation} ended).",
                h.host
            );
            let event = Event::HostsLost {
                hosts: vec![h.host.clone()],
                reason,
            };
            if let Err(e) = self.apply(&job.account, &job.name, event).await {
                tracing::warn!(target: "kiln::engine", "training job {}: {}", job.name, e.message);
            }
        }
    }
}

/// What an allocation that ran `job` runs next, now that `next` reused `job`'s warm pool: `next`,
/// if it was launched into this allocation; nothing yet while its launch is being made.
fn next_in_allocation(
    executor: &dyn Executor,
    job: &TrainingJobRow,
    next: &TrainingJobRow,
    allocation: &str,
) -> PoolNext {
    let end = |reason: String| PoolNext::End { reason };
    if next.status.is_terminal() {
        return end(format!(
            "training job {} ended before its hosts started here",
            next.name
        ));
    }
    if next.run.pool_launch.is_none() || next.run.pool_launch != job.run.launch {
        return end(format!("training job {} does not run in this allocation", next.name));
    }
    let Some(launch) = next.run.launch.as_deref() else {
        return PoolNext::Wait;
    };
    if executor.allocation(launch).as_deref() != Some(allocation) {
        return end(format!("training job {} was launched in another allocation", next.name));
    }
    let token = next.run.agent_token.clone().unwrap_or_default();
    PoolNext::Run {
        job: next.name.clone(),
        placement: placement_subdir(&next.account, &token).display().to_string(),
        token,
        keep_alive_seconds: keep_alive(&next.spec),
    }
}
