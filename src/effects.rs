//! Replication and AOF: every state change leaves the master as an effect that sets the
//! exact resulting state (the chosen token, the absolute deadline), never as the request
//! that produced it, so replicas and AOF replays reach the same state whatever their
//! clocks say.
//!
//! - `FENCELOCK.MUTEX key owner token deadline holds`: the mutex is held exactly so.
//! - `FENCELOCK.FENCE key highest issued`: the fence records exactly so.
//! - `FENCELOCK.RWHOLD key mode owner token deadline holds`: one hold of a read-write
//!   lock is exactly so (only the holds that changed are sent, however many readers).
//! - `FENCELOCK.RWDROP key mode owner`: that hold is gone; the key goes with the last one.
//! - `DEL key`: the lock is free (a free lock has no key on replicas and in the AOF).
//!
//! The `FENCELOCK.*` commands are internal: only a master's stream or AOF loading may
//! run them, so no client can set a token by hand.

use std::ffi::CStr;

use redis_module::{raw, Context, RedisString, RedisValue};

use crate::args;
use crate::error::{Error, Result};
use crate::expiry;
use crate::logic::fence::Fence;
use crate::logic::mutex::{Holder, Mutex};
use crate::logic::rwlock::{Hold, HolderKey, Mode, RwLock};
use crate::state::{self, now_ms};
use crate::types::{FENCE_TYPE, MUTEX_TYPE, RWLOCK_TYPE};

pub const MUTEX_EFFECT: &str = "FENCELOCK.MUTEX";
pub const FENCE_EFFECT: &str = "FENCELOCK.FENCE";
pub const RW_HOLD_EFFECT: &str = "FENCELOCK.RWHOLD";
pub const RW_DROP_EFFECT: &str = "FENCELOCK.RWDROP";

/// Replication runs on every grant, so effects are handed to Redis with typed formats
/// (`s` key, `b` buffer, `l` integer) rather than built as strings here.
macro_rules! replicate {
    ($ctx:expr, $cmd:expr, $fmt:expr $(, $arg:expr)* $(,)?) => {
        unsafe {
            if let Some(replicate) = raw::RedisModule_Replicate {
                replicate($ctx.ctx, $cmd.as_ptr(), $fmt.as_ptr() $(, $arg)*);
            }
        }
    };
}

const MUTEX_EFFECT_C: &CStr = c"FENCELOCK.MUTEX";
const FENCE_EFFECT_C: &CStr = c"FENCELOCK.FENCE";
const RW_HOLD_EFFECT_C: &CStr = c"FENCELOCK.RWHOLD";
const RW_DROP_EFFECT_C: &CStr = c"FENCELOCK.RWDROP";

/// Propagates `DEL key`: the lock is free.
pub fn replicate_del(ctx: &Context, key: &RedisString) {
    replicate!(ctx, c"DEL", c"s", key.inner);
}

/// Propagates the state a mutex key was left in.
pub fn replicate_mutex(ctx: &Context, key: &RedisString, mutex: Option<&Mutex>) {
    match mutex.and_then(Mutex::stored_holder) {
        Some(h) => replicate!(
            ctx, MUTEX_EFFECT_C, c"sblll",
            key.inner, h.owner.as_ptr(), h.owner.len(), h.token, h.deadline, h.holds as i64,
        ),
        None => replicate_del(ctx, key),
    }
}

pub fn replicate_fence(ctx: &Context, key: &RedisString, fence: &Fence) {
    replicate!(ctx, FENCE_EFFECT_C, c"sll", key.inner, fence.highest, fence.issued);
}

/// Propagates the holds of a read-write lock that `changes` names, as they now are.
pub fn replicate_rw_changes(ctx: &Context, key: &RedisString, lock: &RwLock, changes: &[HolderKey]) {
    for (mode, owner) in changes {
        let name = mode.name();
        match lock.get(*mode, owner) {
            Some(h) => replicate!(
                ctx, RW_HOLD_EFFECT_C, c"sbblll",
                key.inner, name.as_ptr(), name.len(), owner.as_ptr(), owner.len(),
                h.token, h.deadline, h.holds as i64,
            ),
            None => replicate!(
                ctx, RW_DROP_EFFECT_C, c"sbb",
                key.inner, name.as_ptr(), name.len(), owner.as_ptr(), owner.len(),
            ),
        }
    }
}

fn require_internal(ctx: &Context, cmd: &'static str) -> Result<()> {
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) } as u32;
    let allowed = raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING;
    if flags & allowed == 0 {
        return Err(Error::InternalOnly(cmd));
    }
    Ok(())
}

fn internal_i64(arg: &RedisString) -> Result<i64> {
    args::parse_i64(arg.as_slice()).ok_or(Error::Syntax)
}

/// `FENCELOCK.MUTEX key owner token deadline holds`
pub fn mutex_effect(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    require_internal(ctx, MUTEX_EFFECT)?;
    let mut args = args::take(args, 5, 0)?;
    let key = args.next().ok_or(Error::WrongArity)?;
    let owner = args::owner(&args.next().ok_or(Error::WrongArity)?)?.to_vec();
    let token = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    let deadline = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    let holds = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    if token <= 0 || holds <= 0 {
        return Err(Error::Syntax);
    }

    let handle = ctx.open_key_writable(&key);
    let old = handle.get_value::<Mutex>(&MUTEX_TYPE).map_err(|_| Error::WrongType)?;
    let old_deadline = old.as_ref().and_then(|m| m.deadline());
    let holder = Holder { owner, token, deadline, holds: holds as u64 };
    match old {
        Some(m) => *m = Mutex::with_holder(holder),
        None => handle.set_value(&MUTEX_TYPE, Mutex::with_holder(holder))?,
    }
    state::with(|g| g.tokens.observe(token, now_ms()));
    expiry::track(ctx, &key, old_deadline, Some(deadline));
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// `FENCELOCK.FENCE key highest issued`
pub fn fence_effect(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    require_internal(ctx, FENCE_EFFECT)?;
    let mut args = args::take(args, 3, 0)?;
    let key = args.next().ok_or(Error::WrongArity)?;
    let highest = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    let issued = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    if highest < 0 || issued < 0 || issued > highest {
        return Err(Error::Syntax);
    }
    let handle = ctx.open_key_writable(&key);
    let fence = Fence { highest, issued };
    match handle.get_value::<Fence>(&FENCE_TYPE).map_err(|_| Error::WrongType)? {
        Some(f) => *f = fence,
        None => handle.set_value(&FENCE_TYPE, fence)?,
    }
    state::with(|g| g.tokens.observe(issued, now_ms()));
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

fn internal_mode(arg: &RedisString) -> Result<Mode> {
    Mode::parse(arg.as_slice()).ok_or(Error::Syntax)
}

/// `FENCELOCK.RWHOLD key mode owner token deadline holds`
pub fn rw_hold_effect(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    require_internal(ctx, RW_HOLD_EFFECT)?;
    let mut args = args::take(args, 6, 0)?;
    let key = args.next().ok_or(Error::WrongArity)?;
    let mode = internal_mode(&args.next().ok_or(Error::WrongArity)?)?;
    let owner = args::owner(&args.next().ok_or(Error::WrongArity)?)?.to_vec();
    let token = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    let deadline = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    let holds = internal_i64(&args.next().ok_or(Error::WrongArity)?)?;
    if token <= 0 || holds <= 0 {
        return Err(Error::Syntax);
    }
    let handle = ctx.open_key_writable(&key);
    let stored = handle.get_value::<RwLock>(&RWLOCK_TYPE).map_err(|_| Error::WrongType)?;
    let old_earliest = stored.as_ref().and_then(|l| l.earliest_deadline());
    let hold = Some(Hold { token, deadline, holds: holds as u64 });
    let new_earliest = match stored {
        Some(lock) => {
            lock.set(mode, &owner, hold);
            lock.take_changes();
            lock.earliest_deadline()
        }
        None => {
            let mut lock = RwLock::default();
            lock.set(mode, &owner, hold);
            lock.take_changes();
            let earliest = lock.earliest_deadline();
            handle.set_value(&RWLOCK_TYPE, lock)?;
            earliest
        }
    };
    state::with(|g| g.tokens.observe(token, now_ms()));
    expiry::track(ctx, &key, old_earliest, new_earliest);
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// `FENCELOCK.RWDROP key mode owner`
pub fn rw_drop_effect(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    require_internal(ctx, RW_DROP_EFFECT)?;
    let mut args = args::take(args, 3, 0)?;
    let key = args.next().ok_or(Error::WrongArity)?;
    let mode = internal_mode(&args.next().ok_or(Error::WrongArity)?)?;
    let owner = args.next().ok_or(Error::WrongArity)?;
    let handle = ctx.open_key_writable(&key);
    if let Some(lock) = handle.get_value::<RwLock>(&RWLOCK_TYPE).map_err(|_| Error::WrongType)? {
        let old_earliest = lock.earliest_deadline();
        lock.set(mode, owner.as_slice(), None);
        lock.take_changes();
        let new_earliest = lock.earliest_deadline();
        if lock.is_empty() {
            handle.delete()?;
        }
        expiry::track(ctx, &key, old_earliest, new_earliest);
    }
    ctx.replicate_verbatim();
    Ok(RedisValue::SimpleStringStatic("OK"))
}
