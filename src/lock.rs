//! `LOCK.*`: the mutex commands. Parse, call the pure mutex, reply, propagate.

use std::collections::BTreeMap;

use redis_module::{redisvalue::RedisValueKey, Context, NextArg, RedisString, RedisValue};

use crate::args;
use crate::effects;
use crate::error::{Error, Result};
use crate::expiry;
use crate::logic::mutex::{Acquire, Mutex, Release};
use crate::logic::Millis;
use crate::state::{self, now_ms};
use crate::types::MUTEX_TYPE;

/// Runs `op` on the mutex at `key` (a free one when the key is absent), then settles
/// the key: a held lock is stored and propagated as its exact state, a free one leaves
/// no key and propagates `DEL`. Nothing is written or propagated when `op` changed
/// nothing.
fn update<R>(ctx: &Context, key: &RedisString, op: impl FnOnce(&mut Mutex, Millis) -> Result<R>) -> Result<R> {
    let now = now_ms();
    let handle = ctx.open_key_writable(key);
    let stored = handle.get_value::<Mutex>(&MUTEX_TYPE).map_err(|_| Error::WrongType)?;
    let existed = stored.is_some();
    let mut fresh = Mutex::default();
    let mutex = match stored {
        Some(m) => m,
        None => &mut fresh,
    };
    let before = mutex.clone();
    let result = op(mutex, now)?;
    if *mutex == before {
        return Ok(result);
    }
    let (old_deadline, new_deadline) = (before.deadline(), mutex.deadline());
    if mutex.stored_holder().is_some() {
        effects::replicate_mutex(ctx, key, Some(mutex));
        if !existed {
            handle.set_value(&MUTEX_TYPE, fresh)?;
        }
    } else {
        effects::replicate_mutex(ctx, key, None);
        if existed {
            handle.delete()?;
        }
    }
    expiry::track(ctx, key, old_deadline, new_deadline);
    Ok(result)
}

/// `LOCK.ACQUIRE key owner ttl [WAIT timeout]`
pub fn acquire(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 3, 2)?;
    let key = args.next_arg()?;
    let owner_arg = args.next_arg()?;
    let owner = args::owner(&owner_arg)?;
    let ttl = args::ttl(&args.next_arg()?)?;
    // Blocking arrives with the waiter queue; until then WAIT is validated and the
    // acquire is a single try, as the contract has it inside MULTI and scripts.
    let _wait = args::wait_option(&mut args)?;

    let outcome = update(ctx, &key, |m, now| {
        state::with(|g| m.acquire(owner, ttl, now, &mut g.tokens, false)).map_err(Error::from)
    })?;
    Ok(match outcome {
        Acquire::Granted(token) | Acquire::Reentered(token) => RedisValue::Integer(token),
        Acquire::Busy => RedisValue::Null,
    })
}

/// `LOCK.RELEASE key owner`
pub fn release(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 2, 0)?;
    let key = args.next_arg()?;
    let owner_arg = args.next_arg()?;
    let owner = args::owner(&owner_arg)?;
    let released = update(ctx, &key, |m, now| Ok(m.release(owner, now)))?;
    Ok(RedisValue::Integer((released != Release::NotHeld) as i64))
}

/// `LOCK.EXTEND key owner ttl`
pub fn extend(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 3, 0)?;
    let key = args.next_arg()?;
    let owner_arg = args.next_arg()?;
    let owner = args::owner(&owner_arg)?;
    let ttl = args::ttl(&args.next_arg()?)?;
    let extended = update(ctx, &key, |m, now| Ok(m.extend(owner, ttl, now)))?;
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
    let waiters = 0;
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
