//! The floor of a fresh grant in any Redis module, for measuring fencelock against
//! (`scripts/callgrind.sh floor-fresh`, issue 11): `FLOOR.ACQUIRE key owner ttl` opens
//! the key, and when it is empty stores a module value (owner, token, deadline) and
//! replies the token; it replicates nothing, keeps no lease index, serves no waiters.
//! The least a module command that creates a key of its own type can cost, through
//! the same crate and APIs fencelock uses.
//!
//! Built with `cargo build --release --example floor` (target/release/examples/libfloor.so).

use std::ffi::c_void;
use std::sync::atomic::{AtomicI64, Ordering};

use redis_module::native_types::RedisType;
use redis_module::{raw, redis_module, Context, NextArg, RedisError, RedisResult, RedisString, RedisValue};

struct Held {
    _owner: [u8; 48],
    _token: i64,
    _deadline: i64,
}

static TOKENS: AtomicI64 = AtomicI64::new(0);

unsafe extern "C" fn free(value: *mut c_void) {
    drop(Box::from_raw(value.cast::<Held>()));
}

unsafe extern "C" fn rdb_load(_: *mut raw::RedisModuleIO, _: i32) -> *mut c_void {
    std::ptr::null_mut()
}

unsafe extern "C" fn rdb_save(_: *mut raw::RedisModuleIO, _: *mut c_void) {}

unsafe extern "C" fn aof_rewrite(_: *mut raw::RedisModuleIO, _: *mut raw::RedisModuleString, _: *mut c_void) {}

static FLOOR_TYPE: RedisType = RedisType::new(
    "floor-flk",
    0,
    raw::RedisModuleTypeMethods {
        version: 4,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: None,
        digest: None,
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    },
);

fn acquire(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let mut args = args.into_iter().skip(1);
    let (key, owner, ttl) = (args.next_arg()?, args.next_arg()?, args.next_i64()?);
    args.done()?;
    let handle = ctx.open_key_writable(&key);
    if handle.get_value::<Held>(&FLOOR_TYPE)?.is_some() {
        return Ok(RedisValue::Null);
    }
    let mut stored = [0; 48];
    let owner = owner.as_slice();
    let len = owner.len().min(48);
    stored[..len].copy_from_slice(&owner[..len]);
    let token = TOKENS.fetch_add(1, Ordering::Relaxed) + 1;
    handle
        .set_value(&FLOOR_TYPE, Held { _owner: stored, _token: token, _deadline: ttl })
        .map_err(|e| RedisError::String(e.to_string()))?;
    Ok(RedisValue::Integer(token))
}

redis_module! {
    name: "floor",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [FLOOR_TYPE],
    commands: [
        ["floor.acquire", acquire, "write deny-oom", 1, 1, 1, ""],
    ],
}
