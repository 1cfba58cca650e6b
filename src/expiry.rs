//! Server-side lease expiry: one module timer armed for the earliest deadline in the
//! expiry index. When it fires, the master ends every lease that is due, deletes the
//! keys of locks left free, and propagates that as effects. Replicas keep the index
//! (they may be promoted) but never end a lease themselves: they wait for the master's
//! effects.
//!
//! Work the module does on its own (the timer, before-sleep) writes and propagates only
//! on a master that Redis does not ask to keep still: while clients are paused for
//! writes (`CLIENT PAUSE`, `FAILOVER`, `CLUSTER FAILOVER`) Redis forbids any propagation
//! (it asserts), so due leases wait, reads report them as over, and the first pass of
//! the event loop after the pause ends them.
//!
//! The index follows keys through Redis's own operations: the types' unlink hook drops
//! entries of removed keys, keyspace notifications add entries for keys that arrive by
//! loading, RENAME, MOVE or RESTORE, and the FLUSHDB and SWAPDB events move whole
//! databases. An entry that falls due is always checked against the key it names, so a
//! stale one is harmless.

use std::os::raw::c_void;
use std::time::{Duration, Instant};

use redis_module::{raw, Context, RedisString};

use crate::blocking::{self, WaitFor};
use crate::logic::deadlines::Db;
use crate::logic::mutex::Mutex;
use crate::logic::rwlock::RwLock;
use crate::types::{kind_of, Kind, RWLOCK_TYPE};
use crate::{lock, rwlock};
use crate::logic::Millis;
use crate::state::{self, now_ms};
use crate::types::MUTEX_TYPE;

/// How long one timer firing may spend ending leases before yielding to the event loop,
/// and how many due keys it takes between looks at the clock.
const EXPIRY_SLICE: Duration = Duration::from_millis(1);
const EXPIRY_BATCH: usize = 32;

pub fn selected_db(ctx: &Context) -> Db {
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

fn select_db(ctx: &Context, db: Db) -> bool {
    unsafe { raw::RedisModule_SelectDb.is_some_and(|f| f(ctx.ctx, db) == raw::REDISMODULE_OK as i32) }
}

fn is_master(ctx: &Context) -> bool {
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) } as u32;
    flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}

/// True while Redis wants no writes and no replication traffic (clients paused for
/// writes, a failover in progress).
pub fn paused() -> bool {
    unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() != 0) }
}

/// Whether work that no client asked for (ending leases, handing a lock over after a
/// removal) may write and propagate now.
fn may_act_alone(ctx: &Context) -> bool {
    is_master(ctx) && !paused()
}

/// Records that `key` (in the selected db) moved its deadline from `old` to `new`, and
/// makes sure the timer will fire for the earliest deadline.
pub fn track(ctx: &Context, key: &RedisString, old: Option<Millis>, new: Option<Millis>) {
    let db = selected_db(ctx);
    state::with(|g| g.deadlines.replace(db, key.as_slice(), old, new));
    if new.is_some() {
        arm(ctx);
    }
}

/// Arms the timer for the earliest deadline, unless it already fires by then.
pub fn arm(ctx: &Context) {
    // Called on every grant: decide from our own state first, ask Redis for the role only
    // when a timer would actually be (re)armed.
    let stale = state::with(|g| {
        let earliest = g.deadlines.earliest()?;
        match g.timer {
            Some((_, at)) if at <= earliest => None,
            _ => Some((g.timer, earliest)),
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
    let id = ctx.create_timer(Duration::from_millis(delay), on_timer, ());
    state::with(|g| g.timer = Some((id, earliest)));
}

fn on_timer(ctx: &Context, _: ()) {
    state::with(|g| g.timer = None);
    // Re-arming during a pause would fire at once, again and again: the event loop's
    // first pass after the pause picks the due leases up instead.
    if paused() {
        return;
    }
    end_due_leases(ctx);
    arm(ctx);
}

/// Ends the leases that are due, on the master. The timer calls it at the earliest
/// deadline; so does every pass of the event loop that finds a deadline passed, which
/// hands a lock over sooner than the millisecond timer can and follows a wall clock that
/// stepped forward (module timers run on the monotonic clock, deadlines on the wall
/// clock).
fn end_due_leases(ctx: &Context) {
    if !may_act_alone(ctx) {
        return;
    }
    let now = now_ms();
    // Work for at most EXPIRY_SLICE, so the server stays responsive when a million
    // leases end in the same second; the rest is for the next pass or timer firing.
    let started = Instant::now();
    while started.elapsed() < EXPIRY_SLICE {
        let due = state::with(|g| g.deadlines.take_due(now, EXPIRY_BATCH));
        if due.is_empty() {
            break;
        }
        for (db, key) in due {
            if select_db(ctx, db) {
                settle(ctx, &RedisString::create_from_slice(ctx.ctx, &key), now);
            }
        }
    }
}

/// Brings a lock key up to date: ends leases that are over, deletes the key of a free
/// lock nobody waits for, and brings back (free) the key of one that clients wait on.
pub fn settle(ctx: &Context, key: &RedisString, now: Millis) {
    let kind = kind_of(&ctx.open_key(key));
    let db = selected_db(ctx);
    match (kind, blocking::front(db, key.as_slice())) {
        (Kind::Mutex, _) | (Kind::Missing, Some(WaitFor::Mutex)) => lock::settle(ctx, key, now),
        (Kind::RwLock, _) | (Kind::Missing, Some(WaitFor::Rw(_))) => rwlock::settle(ctx, key, now),
        // Another type took the name: signalled waiters answer WRONGTYPE and leave.
        (Kind::Fence | Kind::Other, Some(_)) => blocking::signal_ready(ctx, key),
        _ => {}
    }
}

/// A key arrived under a name the index may not know (loaded, renamed, moved, restored):
/// track its lease.
pub fn on_key_arrived(ctx: &Context, key: &[u8]) {
    let name = RedisString::create_from_slice(ctx.ctx, key);
    let handle = ctx.open_key(&name);
    // A free lock stored by a snapshot is given deadline 0, so the timer deletes it.
    let deadline = match kind_of(&handle) {
        Kind::Mutex => handle.get_value::<Mutex>(&MUTEX_TYPE).ok().flatten().and_then(|m| m.deadline()),
        Kind::RwLock => handle.get_value::<RwLock>(&RWLOCK_TYPE).ok().flatten().and_then(|l| l.earliest_deadline()),
        _ => return,
    }
    .unwrap_or(0);
    let db = selected_db(ctx);
    state::with(|g| g.deadlines.insert(deadline, db, key));
    arm(ctx);
}

// ---- server events -------------------------------------------------------------

unsafe extern "C" fn on_role_changed(ctx: *mut raw::RedisModuleCtx, _e: raw::RedisModuleEvent, _sub: u64, _data: *mut c_void) {
    // A promoted replica starts ending the leases it learnt of; a demoted master stops.
    let ctx = Context::new(ctx);
    let armed = state::with(|g| g.timer.take());
    if let Some((id, _)) = armed {
        let _ = ctx.stop_timer::<()>(id);
    }
    arm(&ctx);
}

unsafe extern "C" fn on_flushdb(_ctx: *mut raw::RedisModuleCtx, _e: raw::RedisModuleEvent, sub: u64, data: *mut c_void) {
    if sub != raw::REDISMODULE_SUBEVENT_FLUSHDB_START {
        return;
    }
    let Some(info) = data.cast::<raw::RedisModuleFlushInfo>().as_ref() else { return };
    let db = (info.dbnum >= 0).then_some(info.dbnum);
    state::with(|g| g.deadlines.clear(db));
    blocking::on_flush(db);
}

unsafe extern "C" fn on_swapdb(_ctx: *mut raw::RedisModuleCtx, _e: raw::RedisModuleEvent, _sub: u64, data: *mut c_void) {
    let Some(info) = data.cast::<raw::RedisModuleSwapDbInfo>().as_ref() else { return };
    state::with(|g| g.deadlines.swap_dbs(info.dbnum_first, info.dbnum_second));
}

unsafe extern "C" fn on_loading(ctx: *mut raw::RedisModuleCtx, _e: raw::RedisModuleEvent, sub: u64, _data: *mut c_void) {
    if sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        arm(&Context::new(ctx));
    }
}

unsafe extern "C" fn on_event_loop(ctx: *mut raw::RedisModuleCtx, _e: raw::RedisModuleEvent, sub: u64, _data: *mut c_void) {
    if sub != raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP {
        return;
    }
    // During a pause nothing may be written; arming the timer for a lease already due
    // would only wake the event loop again at once, spinning until the pause ends.
    if paused() {
        return;
    }
    let ctx = Context::new(ctx);
    if state::with(|g| g.deadlines.earliest()).is_some_and(|earliest| earliest <= now_ms()) {
        end_due_leases(&ctx);
        arm(&ctx);
    }
    blocking::settle_noted(&ctx);
}

pub fn subscribe_server_events(ctx: &Context) -> bool {
    type Callback = unsafe extern "C" fn(*mut raw::RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);
    let events: [(u64, Callback); 5] = [
        (raw::REDISMODULE_EVENT_EVENTLOOP, on_event_loop),
        (raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED, on_role_changed),
        (raw::REDISMODULE_EVENT_FLUSHDB, on_flushdb),
        (raw::REDISMODULE_EVENT_SWAPDB, on_swapdb),
        (raw::REDISMODULE_EVENT_LOADING, on_loading),
    ];
    let Some(subscribe) = (unsafe { raw::RedisModule_SubscribeToServerEvent }) else { return false };
    events.into_iter().all(|(id, callback)| {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        unsafe { subscribe(ctx.ctx, event, Some(callback)) == raw::REDISMODULE_OK as i32 }
    })
}
