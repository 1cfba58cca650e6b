//! fencelock: native distributed locks for Redis.
//!
//! `logic` holds the lock state machines and the token clock, free of Redis. The rest
//! is glue: the command table (`commands`), one file per command family (`lock`,
//! `rwlock`, `fence`), the data types and their persistence (`types`), replication
//! effects (`effects`), lease expiry (`expiry`), server-side waits (`blocking`) and the
//! keyspace subscription (`keyspace`).

mod args;
mod blocking;
mod commands;
mod effects;
mod error;
mod expiry;
mod fence;
mod keyspace;
mod lock;
mod rwlock;
pub mod logic;
mod state;
mod types;

use redis_module::{raw, redis_module, Context, RedisString, Status};

use crate::types::{FENCE_TYPE, MUTEX_TYPE, RWLOCK_TYPE};

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    unsafe {
        // Short or corrupt RDB payloads (RESTORE of a bad DUMP) then fail the load
        // instead of aborting the server.
        if let Some(set_options) = raw::RedisModule_SetModuleOptions {
            set_options(ctx.ctx, raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS as i32);
        }
    }
    keyspace::init(ctx);
    if let Err(e) = commands::register(ctx) {
        ctx.log_warning(&format!("fencelock: {e}"));
        return Status::Err;
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

// Commands are registered by `commands::register` (from `init`), which declares them fully.
redis_module! {
    name: "fencelock",
    version: 1,
    allocator: (Allocator, ALLOCATOR),
    data_types: [MUTEX_TYPE, RWLOCK_TYPE, FENCE_TYPE],
    init: init,
}
