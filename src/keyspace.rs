//! Keyspace notifications: how a lock key that arrives under a name the expiry index does
//! not know (RENAME, MOVE, RESTORE, loading) gets its lease tracked.
//!
//! Redis calls a module's keyspace subscriber for every event of the classes it asked
//! for, among them the `expire` event of every `SET ... PX` any client sends: a
//! subscription costs the whole server, not only our commands. So the module subscribes
//! only once it has had a lock key (one of its commands ran, or a value of its types was
//! loaded), and the callback is a bare C function that drops the events it does not need
//! before it builds anything. Key removals need no event at all: the types' unlink hook
//! sees every one (DEL, expiry, eviction, overwrite, RENAME's and MOVE's source).

use std::ffi::{c_char, c_int, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

use redis_module::{raw, Context, RedisString};

use crate::expiry;

static SUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// A context of the module's own, for subscribing where Redis hands us none (RDB loading).
static MODULE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// Keeps a detached context of the module, at load time.
pub fn init(ctx: &Context) {
    let detached = unsafe {
        match raw::RedisModule_GetDetachedThreadSafeContext {
            Some(get) => get(ctx.ctx),
            None => ptr::null_mut(),
        }
    };
    MODULE_CTX.store(detached, Ordering::Relaxed);
}

/// Subscribes to the events that bring lock keys in, the first time it is called. Cheap
/// enough for every command.
pub fn subscribe_once() {
    if SUBSCRIBED.load(Ordering::Relaxed) {
        return;
    }
    let ctx = MODULE_CTX.load(Ordering::Relaxed);
    let Some(subscribe) = (unsafe { raw::RedisModule_SubscribeToKeyspaceEvents }) else { return };
    if ctx.is_null() {
        return;
    }
    let classes = (raw::REDISMODULE_NOTIFY_GENERIC | raw::REDISMODULE_NOTIFY_LOADED) as c_int;
    if unsafe { subscribe(ctx, classes, Some(on_event)) } == raw::REDISMODULE_OK as c_int {
        SUBSCRIBED.store(true, Ordering::Relaxed);
    }
}

/// The database a `MOVE` came from, between its `move_from` and `move_to` events.
///
/// Valkey 8.1 hands a subscriber the very client that runs the command and selects the
/// event's database on it without selecting the old one back (fixed in Valkey 9), so
/// after `MOVE key db` the client would be left on `db`. Putting back the database seen
/// at `move_from` undoes that there and changes nothing elsewhere (other servers hand a
/// temporary client). `COPY ... DB db` has only the one event and cannot be undone so.
static MOVED_FROM: AtomicI32 = AtomicI32::new(-1);

unsafe extern "C" fn on_event(
    ctx: *mut raw::RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    if event.is_null() {
        return raw::REDISMODULE_OK as c_int;
    }
    let arrived = || expiry::on_key_arrived(&Context::new(ctx), RedisString::string_as_slice(key));
    match CStr::from_ptr(event).to_bytes() {
        b"loaded" | b"rename_to" | b"restore" => arrived(),
        b"move_from" => {
            let db = raw::RedisModule_GetSelectedDb.map_or(-1, |f| f(ctx));
            MOVED_FROM.store(db, Ordering::Relaxed);
        }
        b"move_to" => {
            arrived();
            let db = MOVED_FROM.swap(-1, Ordering::Relaxed);
            if let (Some(select), true) = (raw::RedisModule_SelectDb, db >= 0) {
                select(ctx, db);
            }
        }
        _ => {}
    }
    raw::REDISMODULE_OK as c_int
}
