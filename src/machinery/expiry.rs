//! The expiry index (every lease deadline, with the key it belongs to) and the one
//! module timer armed for the earliest deadline.
//!
//! The timer only wakes the event loop: Redis runs its before-sleep hook right after
//! timers fire, and `events` ends the due leases there and arms the timer again (as it
//! does on every pass that finds a deadline passed, which also follows a wall clock that
//! stepped forward: module timers run on the monotonic clock, deadlines on the wall
//! clock). Only a master ends
//! leases; replicas keep the index (they may be promoted) and arm no timer.
//!
//! An entry that falls due is always checked against the key it names, so a stale one
//! is harmless.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis_module::{Context, ContextFlags, RedisModuleTimerID};

use crate::machinery::clock::now_ms;
use crate::ffi::{self, Db};
use crate::logic::deadlines::Deadlines;
use crate::logic::Millis;

#[derive(Default)]
struct Expiry {
    deadlines: Deadlines,
    /// The timer, and the deadline it is armed for.
    timer: Option<(RedisModuleTimerID, Millis)>,
}

/// Never held across a call into Redis (see `machinery`).
static EXPIRY: LazyLock<Mutex<Expiry>> = LazyLock::new(Default::default);

fn with<R>(f: impl FnOnce(&mut Expiry) -> R) -> R {
    f(&mut EXPIRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// `key` (in the selected db) moved its deadline from `old` to `new`.
pub fn track(ctx: &Context, key: &[u8], old: Option<Millis>, new: Option<Millis>) {
    if old == new {
        return;
    }
    let db = ffi::selected_db(ctx);
    if with(|e| e.deadlines.replace(db, key, old, new)) && new.is_some() {
        arm(ctx);
    }
}

/// A key that arrived under a name the index may not know: track `deadline`.
pub fn arrived(ctx: &Context, key: &[u8], deadline: Millis) {
    let db = ffi::selected_db(ctx);
    with(|e| e.deadlines.insert(deadline, db, key));
    arm(ctx);
}

/// Redis removed the key: its lease no longer needs the timer.
pub fn untrack(db: Db, key: &[u8], deadline: Millis) {
    with(|e| e.deadlines.remove(deadline, db, key));
}

/// Whether a pass of the event loop has work here: some deadline has passed, or there
/// are deadlines and no timer (it fired, possibly for a lease that went meanwhile, and
/// must be armed again for the earliest one).
pub fn wants_attention(now: Millis) -> bool {
    with(|e| e.deadlines.earliest().is_some_and(|earliest| earliest <= now || e.timer.is_none()))
}

/// Up to `limit` keys whose deadline has passed, out of the index.
pub fn take_due(now: Millis, limit: usize) -> Vec<(Db, Box<[u8]>)> {
    with(|e| e.deadlines.take_due(now, limit))
}

/// The index's size, and how late its earliest deadline is at `now` (0 when not due).
pub fn status(now: Millis) -> (usize, Millis) {
    with(|e| (e.deadlines.len(), e.deadlines.earliest().map_or(0, |d| (now - d).max(0))))
}

/// FLUSHDB / FLUSHALL (`None`: every database).
pub fn clear(db: Option<Db>) {
    with(|e| e.deadlines.clear(db));
}

pub fn swap_dbs(a: Db, b: Db) {
    with(|e| e.deadlines.swap_dbs(a, b));
}

fn is_master(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::MASTER)
}

/// Arms the timer for the earliest deadline, unless it already fires by then.
pub fn arm(ctx: &Context) {
    // Called on every grant: decide from our own state first, ask Redis for the role
    // only when a timer would actually be (re)armed.
    let stale = with(|e| {
        let earliest = e.deadlines.earliest()?;
        match e.timer {
            Some((_, at)) if at <= earliest => None,
            _ => Some((e.timer, earliest)),
        }
    });
    let Some((previous, earliest)) = stale else { return };
    if !is_master(ctx) {
        return;
    }
    if let Some((id, _)) = previous {
        let _ = ctx.stop_timer::<()>(id);
    }
    let delay = earliest.saturating_sub(now_ms()).max(0) as u64;
    // Firing only wakes the event loop; the before-sleep hook does the work.
    let id = ctx.create_timer(Duration::from_millis(delay), |_: &Context, ()| with(|e| e.timer = None), ());
    with(|e| e.timer = Some((id, earliest)));
}

/// Has the event loop go round once more at once instead of sleeping. Servers from 7.2
/// serve clients blocked on keys before the module's before-sleep hook runs, so what the
/// hook signalled would wait for the loop's next wake-up (up to 1000/hz ms) without it.
pub fn wake(ctx: &Context) {
    ctx.create_timer(Duration::ZERO, |_: &Context, ()| {}, ());
}

/// The role changed: a promoted replica starts ending the leases it learnt of, a demoted
/// master stops.
pub fn rearm(ctx: &Context) {
    if let Some((id, _)) = with(|e| e.timer.take()) {
        let _ = ctx.stop_timer::<()>(id);
    }
    arm(ctx);
}
