//! The takeover grace: a server that may have lost grants grants nothing for a while.
//!
//! Replication is asynchronous, and so is an AOF not fsynced `always`: a master that
//! dies right after a grant may take it along, and the replica promoted in its place (or
//! the master restarted from what reached its disk) knows no holder and would grant the
//! same lock again at once, while the first holder still works under its lease. Tokens
//! keep a fenced resource safe then; mutual exclusion itself needs the new master to wait
//! until every lease it may not know of has ended. So for `fencelock.takeover-grace` ms
//! after it is promoted, after it loads its data at start, or after the module loads, a
//! server grants no acquire: plain acquires answer nil, waiting ones wait and are served
//! when the grace ends (extends, releases and reads work as always). With a grace at
//! least the longest lease in use, a lost grant has run out before anyone else is let
//! in. The default is 0 (no grace), as for Redis's own commands.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

use redis_module::Context;

use crate::ffi;
use crate::machinery::config;

/// When the grace ends; None: no grace now.
static UNTIL: Mutex<Option<Instant>> = Mutex::new(None);
/// A fast "no grace" for every acquire.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Grants may have been lost (a promotion, a start or load): the grace begins, unless it
/// is 0 or, for a start, the AOF is fsynced on every write (nothing acknowledged is lost).
pub fn begin(ctx: &Context, after_promotion: bool) {
    let grace = config::takeover_grace();
    if grace.is_zero() || (!after_promotion && nothing_lost_on_restart(ctx)) {
        return;
    }
    *UNTIL.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
    ACTIVE.store(true, Relaxed);
    ctx.log_notice(&format!(
        "fencelock: takeover grace of {} ms: no lock is granted until leases this server may not know of have ended",
        grace.as_millis()
    ));
}

fn nothing_lost_on_restart(ctx: &Context) -> bool {
    ffi::server_config(ctx, c"appendonly").as_deref() == Some("yes")
        && ffi::server_config(ctx, c"appendfsync").as_deref() == Some("always")
}

/// True while the grace holds back grants.
pub fn holding_back() -> bool {
    ACTIVE.load(Relaxed) && !ended()
}

/// True once, on the first call after the grace ended: the caller then serves every
/// waiter the grace held back.
pub fn just_ended() -> bool {
    ACTIVE.load(Relaxed) && ended() && ACTIVE.swap(false, Relaxed)
}

fn ended() -> bool {
    UNTIL.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|until| Instant::now() >= until)
}

/// The ms left of the grace (for `INFO`); 0 when none.
pub fn remaining_ms() -> i64 {
    if !ACTIVE.load(Relaxed) {
        return 0;
    }
    UNTIL.lock().unwrap_or_else(|p| p.into_inner()).map_or(0, |until| {
        until.saturating_duration_since(Instant::now()).as_millis() as i64
    })
}
