//! `LOCK.*`: the mutex commands. Parse, call the pure mutex, reply, propagate.

use std::collections::BTreeMap;

use redis_module::{redisvalue::RedisValueKey, Context, NextArg, RedisString, RedisValue};

use crate::args::{self, Shape};
use crate::blocking::{self, WaitFor};
use crate::effects;
use crate::error::{Error, Result};
use crate::expiry::{self, selected_db};
use crate::logic::mutex::{Acquire, Mutex, Release};
use crate::logic::waiters::WaiterId;
use crate::logic::{Millis, Token};
use crate::state::{self, now_ms};
use crate::types::MUTEX_TYPE;

/// Runs `op` on the mutex at `key` (a free one when the key is absent), then stores,
/// propagates and tracks whatever changed. Nothing is written or propagated when `op`
/// changed nothing.
fn update<R>(ctx: &Context, key: &RedisString, op: impl FnOnce(&mut Mutex, Millis) -> Result<R>) -> Result<R> {
    let now = now_ms();
    let handle = ctx.open_key_writable(key);
    let stored = handle.get_value::<Mutex>(&MUTEX_TYPE).map_err(|_| Error::WrongType)?;
    let existed = stored.is_some();
    let mut fresh = Mutex::default();
    let mutex = stored.unwrap_or(&mut fresh);
    let before = mutex.clone();
    // Even a failed op may have ended an over lease: that change is stored all the same.
    let result = op(mutex, now);
    if *mutex == before {
        return result;
    }
    let (old_deadline, new_deadline) = (before.deadline(), mutex.deadline());
    if mutex.stored_holder().is_some() {
        effects::replicate_mutex(ctx, key, Some(mutex));
        if !existed {
            handle.set_value(&MUTEX_TYPE, fresh)?;
        }
    } else {
        effects::replicate_mutex(ctx, key, None);
        blocking::leave_unheld(ctx, &handle, key, existed, &MUTEX_TYPE, Mutex::default)?;
    }
    expiry::track(ctx, key, old_deadline, new_deadline);
    result
}

/// Brings a key up to date outside of any command (expiry timer, before-sleep): ends an
/// over lease, revives the key of a lock that clients wait on, removes the key of a
/// free lock nobody waits for.
pub fn settle(ctx: &Context, key: &RedisString, now: Millis) {
    let handle = ctx.open_key_writable(key);
    let Ok(stored) = handle.get_value::<Mutex>(&MUTEX_TYPE) else { return };
    let existed = stored.is_some();
    let mut ended = false;
    if let Some(mutex) = stored {
        let deadline = mutex.deadline();
        ended = mutex.end_if_over(now);
        if ended {
            effects::replicate_mutex(ctx, key, None);
        }
        if mutex.stored_holder().is_some() {
            // Still held: make sure its deadline is tracked (an entry may have been stale).
            expiry::track(ctx, key, None, mutex.deadline());
            return;
        }
        expiry::track(ctx, key, deadline, None);
    }
    // A free key from a snapshot had no DEL propagated yet; one that just ended did.
    if let Ok(true) = blocking::leave_unheld(ctx, &handle, key, existed, &MUTEX_TYPE, Mutex::default) {
        if !ended {
            effects::replicate_mutex(ctx, key, None);
        }
    }
}

/// `LOCK.ACQUIRE key owner ttl [WAIT timeout]`
pub fn acquire(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::Acquire)?;
    let (key, owner, ttl) = (&call.key, call.owner(), call.ttl);

    let db = selected_db(ctx);
    let outcome = update(ctx, key, |m, now| {
        let others_first = blocking::others_first(db, key.as_slice(), None);
        state::with(|g| m.acquire(owner, ttl, now, &mut g.tokens, others_first)).map_err(Error::from)
    })?;
    match (outcome, call.wait) {
        (Acquire::Granted(token) | Acquire::Reentered(token), _) => Ok(RedisValue::Integer(token)),
        (Acquire::Busy, Some(timeout)) if blocking::can_block(ctx) => {
            blocking::block(ctx, key, owner, ttl, timeout, WaitFor::Mutex)
        }
        (Acquire::Busy, _) => Ok(RedisValue::Null),
    }
}

/// The acquire of a blocked waiter, retried when its key is signalled: `None` while
/// the lock is not free for it.
pub fn acquire_as_waiter(ctx: &Context, key: &RedisString, owner: &[u8], ttl: Millis, waiter: WaiterId) -> Result<Option<Token>> {
    let db = selected_db(ctx);
    let outcome = update(ctx, key, |m, now| {
        let others_first = blocking::others_first(db, key.as_slice(), Some(waiter));
        state::with(|g| m.acquire(owner, ttl, now, &mut g.tokens, others_first)).map_err(Error::from)
    })?;
    Ok(match outcome {
        Acquire::Granted(token) | Acquire::Reentered(token) => Some(token),
        Acquire::Busy => None,
    })
}

/// `LOCK.RELEASE key owner`
pub fn release(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwner)?;
    let released = update(ctx, &call.key, |m, now| Ok(m.release(call.owner(), now)))?;
    Ok(RedisValue::Integer((released != Release::NotHeld) as i64))
}

/// `LOCK.EXTEND key owner ttl`
pub fn extend(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwnerTtl)?;
    let extended = update(ctx, &call.key, |m, now| Ok(m.extend(call.owner(), call.ttl, now)))?;
    Ok(RedisValue::Integer(extended as i64))
}

/// `LOCK.INFO key`: reads only, so a replica answers it too, reporting a lease past its
/// deadline as over even before the master's effect arrives.
pub fn info(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<Mutex>(&MUTEX_TYPE).map_err(|_| Error::WrongType)?;
    let now = now_ms();
    let waiters = blocking::count(selected_db(ctx), key.as_slice()) as i64;
    let holder = stored.and_then(|m| m.holder(now));
    if holder.is_none() && waiters == 0 {
        return Ok(RedisValue::Null);
    }
    let field = |name: &str| RedisValueKey::String(name.to_string());
    let mut reply = BTreeMap::new();
    reply.insert(field("owner"), holder.map_or(RedisValue::Null, |h| RedisValue::StringBuffer(h.owner.clone())));
    reply.insert(field("token"), holder.map_or(RedisValue::Null, |h| RedisValue::Integer(h.token)));
    reply.insert(field("ttl"), holder.map_or(RedisValue::Null, |h| RedisValue::Integer(h.ttl_left(now))));
    reply.insert(field("holds"), RedisValue::Integer(holder.map_or(0, |h| h.holds as i64)));
    reply.insert(field("waiters"), RedisValue::Integer(waiters));
    Ok(RedisValue::OrderedMap(reply))
}
