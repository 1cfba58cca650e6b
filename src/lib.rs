//! fencelock: native distributed locks for Redis.
//!
//! Layers, each using only those below it:
//! - `logic`: the lock state machines and the token clock, free of Redis.
//! - `ffi`: every raw call into the server, each with its reason.
//! - `machinery`: the machinery every lock kind plugs into (store, waiting, expiry,
//!   effects, the command table, server and keyspace events), which knows kinds only
//!   through the `machinery::kind::Kind` trait.
//! - `persist`: per kind, its data type, persistence, effects and `Kind` implementation.
//! - the command files, one per command family: `lock` (LOCK.*), `rwlock` (RWLOCK.*),
//!   `fence` (FENCE.*), `sem` (SEM.*): parse, call the logic through the store, reply.
//!
//! This file only registers the kinds and their commands.

mod args;
mod machinery;
mod error;
mod fence;
mod ffi;
mod lock;
pub mod logic;
mod persist;
mod rwlock;
mod sem;

use redis_module::{redis_module, Context, RedisString, Status};

use crate::machinery::commands::Command;
use crate::machinery::kind::KindOps;
use crate::persist::fence::FENCE_TYPE;
use crate::persist::lock::MUTEX_TYPE;
use crate::persist::rwlock::RWLOCK_TYPE;
use crate::persist::sem::SEM_TYPE;

/// Every lock kind.
fn kinds() -> Vec<&'static dyn KindOps> {
    vec![&persist::lock::KIND, &persist::rwlock::KIND, &persist::fence::KIND, &persist::sem::KIND]
}

/// Every command: the public ones, then the kinds' internal effects.
fn commands() -> impl Iterator<Item = &'static Command> {
    let effects: &[&Command] = &[
        &persist::lock::EFFECT,
        &persist::rwlock::HOLD_EFFECT,
        &persist::rwlock::DROP_EFFECT,
        &persist::fence::EFFECT,
        &persist::sem::HOLD_EFFECT,
        &persist::sem::DROP_EFFECT,
    ];
    let public = [lock::COMMANDS, rwlock::COMMANDS, fence::COMMANDS, sem::COMMANDS];
    public.into_iter().flatten().chain(effects.iter().copied())
}

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    // Short or corrupt RDB payloads (RESTORE of a bad DUMP) then fail the load instead
    // of aborting the server.
    ctx.set_module_options(redis_module::raw::ModuleOptions::HANDLE_IO_ERRORS);
    machinery::kind::register(kinds());
    if let Err(e) = machinery::config::register(ctx) {
        ctx.log_warning(&format!("fencelock: {e}"));
        return Status::Err;
    }
    if let Err(e) = machinery::commands::register(ctx, commands()) {
        ctx.log_warning(&format!("fencelock: {e}"));
        return Status::Err;
    }
    if !machinery::cluster::init(ctx) {
        ctx.log_warning("fencelock: could not register for cluster-bus messages");
        return Status::Err;
    }
    machinery::takeover::begin(ctx, false);
    if !machinery::events::init(ctx) {
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

// Commands are registered by `init`, which declares them fully.
redis_module! {
    name: "fencelock",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [MUTEX_TYPE, RWLOCK_TYPE, FENCE_TYPE, SEM_TYPE],
    init: init,
}
