//! fencelock: native distributed locks for Redis.
//!
//! `logic` holds the lock state machines and the token clock, free of Redis. The rest
//! is glue: one file per command family (`lock`, `fence`), the data types and their
//! persistence (`types`), replication effects (`effects`), and lease expiry (`expiry`).

mod args;
mod blocking;
mod effects;
mod error;
mod expiry;
mod fence;
mod lock;
mod rwlock;
pub mod logic;
mod state;
mod types;

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, redis_module, Context, RedisResult, RedisString, Status};

use crate::error::Error;
use crate::types::{FENCE_TYPE, MUTEX_TYPE, RWLOCK_TYPE};

/// Runs a command handler so that a panic answers an error instead of taking the
/// server down with it.
fn guarded(ctx: &Context, args: Vec<RedisString>, handler: fn(&Context, Vec<RedisString>) -> error::Result<redis_module::RedisValue>) -> RedisResult {
    match catch_unwind(AssertUnwindSafe(|| handler(ctx, args))) {
        Ok(result) => result.map_err(Into::into),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            ctx.log_warning(&format!("fencelock: command panicked: {what}"));
            Err(Error::Internal(what).into())
        }
    }
}

/// Declares `fn $name(ctx, args)` that runs `$handler` under `guarded`.
macro_rules! guarded_commands {
    ($($name:ident => $handler:path),* $(,)?) => {
        $(fn $name(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
            guarded(ctx, args, $handler)
        })*
    };
}

guarded_commands! {
    lock_acquire => lock::acquire,
    lock_release => lock::release,
    lock_extend => lock::extend,
    lock_info => lock::info,
    rwlock_rlock => rwlock::rlock,
    rwlock_wlock => rwlock::wlock,
    rwlock_runlock => rwlock::runlock,
    rwlock_wunlock => rwlock::wunlock,
    rwlock_extend => rwlock::extend,
    rwlock_info => rwlock::info,
    fence_next => fence::next,
    fence_check => fence::check,
    fence_current => fence::current,
    mutex_effect => effects::mutex_effect,
    fence_effect => effects::fence_effect,
    rw_hold_effect => effects::rw_hold_effect,
    rw_drop_effect => effects::rw_drop_effect,
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    unsafe {
        // Short or corrupt RDB payloads (RESTORE of a bad DUMP) then fail the load
        // instead of aborting the server.
        if let Some(set_options) = raw::RedisModule_SetModuleOptions {
            set_options(ctx.ctx, raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as i32);
        }
    }
    if !expiry::subscribe_server_events(ctx) {
        ctx.log_warning("fencelock: could not subscribe to server events");
        return Status::Err;
    }
    Status::Ok
}

// Unit tests run without Redis, so without its allocator.
#[cfg(not(test))]
type Allocator = redis_module::alloc::RedisAlloc;
#[cfg(not(test))]
const ALLOCATOR: Allocator = redis_module::alloc::RedisAlloc;
#[cfg(test)]
type Allocator = std::alloc::System;
#[cfg(test)]
const ALLOCATOR: Allocator = std::alloc::System;

// On Redis 7.0 the mandatory ACL-category slot must be empty (see the facts notes).
redis_module! {
    name: "fencelock",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [MUTEX_TYPE, RWLOCK_TYPE, FENCE_TYPE],
    init: init,
    commands: [
        ["lock.acquire", lock_acquire, "write deny-oom", 1, 1, 1, ""],
        ["lock.release", lock_release, "write", 1, 1, 1, ""],
        ["lock.extend", lock_extend, "write deny-oom", 1, 1, 1, ""],
        ["lock.info", lock_info, "readonly fast", 1, 1, 1, ""],
        ["rwlock.rlock", rwlock_rlock, "write deny-oom", 1, 1, 1, ""],
        ["rwlock.wlock", rwlock_wlock, "write deny-oom", 1, 1, 1, ""],
        ["rwlock.runlock", rwlock_runlock, "write", 1, 1, 1, ""],
        ["rwlock.wunlock", rwlock_wunlock, "write", 1, 1, 1, ""],
        ["rwlock.extend", rwlock_extend, "write deny-oom", 1, 1, 1, ""],
        ["rwlock.info", rwlock_info, "readonly", 1, 1, 1, ""],
        ["fence.next", fence_next, "write deny-oom fast", 1, 1, 1, ""],
        ["fence.check", fence_check, "write fast", 1, 1, 1, ""],
        ["fence.current", fence_current, "readonly fast", 1, 1, 1, ""],
        ["fencelock.mutex", mutex_effect, "write", 1, 1, 1, ""],
        ["fencelock.fence", fence_effect, "write", 1, 1, 1, ""],
        ["fencelock.rwhold", rw_hold_effect, "write", 1, 1, 1, ""],
        ["fencelock.rwdrop", rw_drop_effect, "write", 1, 1, 1, ""],
    ],
    event_handlers: [
        [@LOADED @GENERIC: expiry::on_keyspace_event],
    ],
}
