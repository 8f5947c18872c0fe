//! Which replica runs the scheduler, tuner and reconciler. Every `kiln serve` answers the API; one,
//! the holder of the store's leadership lease (a PostgreSQL advisory lock, or a file lock beside a
//! SQLite database), runs the control loops. When it dies its lease goes with it, and another
//! replica, trying every second, takes over. Nothing the loops need lives only in the leader's
//! memory: the store holds every job's state, so the new leader picks up where the old one stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_store::{Leadership, Lease};

use crate::Engine;

/// How often a follower tries to become the leader.
const TRY_EVERY: Duration = Duration::from_secs(1);
/// The longest a leader sleeps between passes (a wake-up comes sooner).
const PASS_EVERY: Duration = Duration::from_millis(500);

/// Whether this process leads (for health answers and logs).
static LEADING: AtomicBool = AtomicBool::new(false);

/// Whether this process currently runs the control loops.
pub fn is_leader() -> bool {
    LEADING.load(Ordering::Relaxed)
}

impl Engine {
    /// Runs the control loops until the process ends: always (`leadership` = `None`, one process on
    /// its own data), or while this process holds the leadership lease.
    pub async fn run_control_loops(self: Arc<Self>, leadership: Option<Arc<dyn Leadership>>) {
        let Some(leadership) = leadership else {
            LEADING.store(true, Ordering::Relaxed);
            loop {
                self.pass().await;
            }
        };
        loop {
            match leadership.try_acquire().await {
                Ok(Some(lease)) => {
                    tracing::info!(target: "kiln::leader", "this replica now runs the scheduler and tuner");
                    LEADING.store(true, Ordering::Relaxed);
                    self.lead(lease).await;
                    LEADING.store(false, Ordering::Relaxed);
                    tracing::warn!(target: "kiln::leader", "this replica lost the leadership lease");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(target: "kiln::leader", "cannot try the leadership lease: {e}"),
            }
            tokio::time::sleep(TRY_EVERY).await;
        }
    }

    async fn lead(&self, mut lease: Box<dyn Lease>) {
        while lease.holds().await {
            self.pass().await;
        }
    }

    /// One pass of the scheduler and the tuner, then a wait for a wake-up or the next tick.
    async fn pass(&self) {
        if let Err(e) = self.tick().await {
            tracing::warn!(target: "kiln::scheduler", "scheduler pass failed: {}", e.message);
        }
        if let Err(e) = self.tune_tick().await {
            tracing::warn!(target: "kiln::tuner", "tuner pass failed: {}", e.message);
        }
        self.expire_metrics().await;
        let _ = tokio::time::timeout(PASS_EVERY, self.wake.notified()).await;
    }
}
