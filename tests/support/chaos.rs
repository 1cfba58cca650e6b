//! Shared pieces of the chaos tests (std only):
//!
//! * [`full`] / [`scale`]: `CHAOS_FULL=1` (`make chaos`) runs full size, otherwise a
//!   short version (`make test`).
//! * [`epoch`]: one monotonic `Instant` shared by every recording thread of the test
//!   binary; [`since_epoch`] is "now" on that clock.
//! * [`Stop`]: a shared stop flag with a deadline, so every workload is bounded in time.
//!
//! Workload clients use [`super::resp::Raw`], which never panics (a time-out or a closed
//! socket is an `Err`: an indeterminate result for the history); seeds come from
//! [`super::seed`].

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// True under `CHAOS_FULL=1` (`make chaos`): run every workload at full size.
pub fn full() -> bool {
    matches!(std::env::var("CHAOS_FULL").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// `short` normally, `full` under `CHAOS_FULL=1`.
pub fn scale<T>(short: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        short
    }
}

/// The one time base of the test binary's histories.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, as a `Duration` since [`epoch`].
pub fn since_epoch() -> Duration {
    epoch().elapsed()
}

// ---------------------------------------------------------------------------------------
// Bounded workloads
// ---------------------------------------------------------------------------------------

/// A stop flag shared by a workload's threads, also raised by a hard deadline.
#[derive(Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    deadline: Instant,
}

impl Stop {
    /// Stops by itself `limit` from now.
    pub fn after(limit: Duration) -> Stop {
        Stop { flag: Arc::new(AtomicBool::new(false)), deadline: Instant::now() + limit }
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}
