//! `RWLOCK.*`: the read-write lock commands. Parse, call the pure lock, reply, propagate
//! the holds that changed.

use std::collections::BTreeMap;

use redis_module::{redisvalue::RedisValueKey, Context, NextArg, RedisString, RedisValue};

use crate::args::{self, Shape};
use crate::blocking::{self, WaitFor};
use crate::effects;
use crate::error::{Error, Result};
use crate::expiry::{self, selected_db};
use crate::logic::rwlock::{Acquire, Mode, Release, RwLock};
use crate::logic::waiters::WaiterId;
use crate::logic::{Millis, Token};
use crate::state::{self, now_ms};
use crate::types::RWLOCK_TYPE;

/// Runs `op` on the lock at `key` (an empty one when the key is absent), then stores,
/// propagates and tracks the holds that changed, even when `op` failed part-way.
fn update<R>(ctx: &Context, key: &RedisString, op: impl FnOnce(&mut RwLock, Millis) -> Result<R>) -> Result<R> {
    let now = now_ms();
    let handle = ctx.open_key_writable(key);
    let stored = handle.get_value::<RwLock>(&RWLOCK_TYPE).map_err(|_| Error::WrongType)?;
    let existed = stored.is_some();
    let mut fresh = RwLock::default();
    let lock = stored.unwrap_or(&mut fresh);
    let old_earliest = lock.earliest_deadline();
    let result = op(lock, now);
    let changes = lock.take_changes();
    if changes.is_empty() {
        return result;
    }
    effects::replicate_rw_changes(ctx, key, lock, &changes);
    let new_earliest = lock.earliest_deadline();
    // Only a hold that went can let a waiter in (the front one checks for itself). A
    // grant never does: signalling on grants would have Redis walk every blocked client
    // again after each reader granted in a pass.
    let dropped = changes.iter().any(|(mode, owner)| lock.get(*mode, owner).is_none());
    if lock.is_empty() {
        blocking::leave_unheld(ctx, &handle, key, existed, &RWLOCK_TYPE, RwLock::default)?;
    } else {
        if !existed {
            handle.set_value(&RWLOCK_TYPE, fresh)?;
        }
        if dropped && blocking::count(selected_db(ctx), key.as_slice()) > 0 {
            blocking::signal_ready(ctx, key);
        }
    }
    expiry::track(ctx, key, old_earliest, new_earliest);
    result
}

/// Brings a key up to date outside of any command (see `lock::settle`).
pub fn settle(ctx: &Context, key: &RedisString, now: Millis) {
    let handle = ctx.open_key_writable(key);
    let Ok(stored) = handle.get_value::<RwLock>(&RWLOCK_TYPE) else { return };
    let existed = stored.is_some();
    let mut dropped_any = false;
    if let Some(lock) = stored {
        let old_earliest = lock.earliest_deadline();
        lock.end_over(now);
        let changes = lock.take_changes();
        dropped_any = !changes.is_empty();
        effects::replicate_rw_changes(ctx, key, lock, &changes);
        expiry::track(ctx, key, old_earliest, lock.earliest_deadline());
        if !lock.is_empty() {
            if blocking::count(selected_db(ctx), key.as_slice()) > 0 {
                blocking::signal_ready(ctx, key);
            }
            return;
        }
    }
    // The last propagated drop deletes the key on replicas; an empty lock loaded from a
    // snapshot had nothing to drop, so its deletion is propagated here.
    if let Ok(true) = blocking::leave_unheld(ctx, &handle, key, existed, &RWLOCK_TYPE, RwLock::default) {
        if !dropped_any {
            effects::replicate_del(ctx, key);
        }
    }
}

fn acquire(ctx: &Context, args: Vec<RedisString>, mode: Mode) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::Acquire)?;
    let (key, owner, ttl) = (&call.key, call.owner(), call.ttl);

    let db = selected_db(ctx);
    let outcome = update(ctx, key, |lock, now| {
        let others_first = blocking::others_first(db, key.as_slice(), None);
        state::with(|g| lock.acquire(mode, owner, ttl, now, &mut g.tokens, others_first)).map_err(Error::from)
    })?;
    match (outcome, call.wait) {
        (Acquire::Granted(token) | Acquire::Reentered(token), _) => Ok(RedisValue::Integer(token)),
        (Acquire::Busy, Some(timeout)) if blocking::can_block(ctx) => {
            blocking::block(ctx, key, owner, ttl, timeout, WaitFor::Rw(mode))
        }
        (Acquire::Busy, _) => Ok(RedisValue::Null),
    }
}

/// The acquire of a blocked waiter: `None` while it cannot be granted.
pub fn acquire_as_waiter(ctx: &Context, key: &RedisString, owner: &[u8], ttl: Millis, mode: Mode, waiter: WaiterId) -> Result<Option<Token>> {
    let db = selected_db(ctx);
    let outcome = update(ctx, key, |lock, now| {
        let others_first = blocking::others_first(db, key.as_slice(), Some(waiter));
        state::with(|g| lock.acquire(mode, owner, ttl, now, &mut g.tokens, others_first)).map_err(Error::from)
    })?;
    Ok(match outcome {
        Acquire::Granted(token) | Acquire::Reentered(token) => Some(token),
        Acquire::Busy => None,
    })
}

/// `RWLOCK.RLOCK key owner ttl [WAIT timeout]`
pub fn rlock(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    acquire(ctx, args, Mode::Read)
}

/// `RWLOCK.WLOCK key owner ttl [WAIT timeout]`
pub fn wlock(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    acquire(ctx, args, Mode::Write)
}

fn unlock(ctx: &Context, args: Vec<RedisString>, mode: Mode) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwner)?;
    let released = update(ctx, &call.key, |lock, now| Ok(lock.release(mode, call.owner(), now)))?;
    Ok(RedisValue::Integer((released != Release::NotHeld) as i64))
}

/// `RWLOCK.RUNLOCK key owner`
pub fn runlock(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    unlock(ctx, args, Mode::Read)
}

/// `RWLOCK.WUNLOCK key owner`
pub fn wunlock(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    unlock(ctx, args, Mode::Write)
}

/// `RWLOCK.EXTEND key owner ttl`
pub fn extend(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwnerTtl)?;
    let extended = update(ctx, &call.key, |lock, now| Ok(lock.extend(call.owner(), call.ttl, now)))?;
    Ok(RedisValue::Integer(extended as i64))
}

/// `RWLOCK.INFO key`: reads only; leases past their deadline are reported as over.
pub fn info(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<RwLock>(&RWLOCK_TYPE).map_err(|_| Error::WrongType)?;
    let now = now_ms();
    let waiters = blocking::count(selected_db(ctx), key.as_slice()) as i64;
    let live: Vec<_> = stored.map(|lock| lock.live(now).collect()).unwrap_or_default();
    if live.is_empty() && waiters == 0 {
        return Ok(RedisValue::Null);
    }
    let field = |name: &str| RedisValueKey::String(name.to_string());
    let holders = live
        .iter()
        .map(|((mode, owner), hold)| {
            let mut h = BTreeMap::new();
            h.insert(field("owner"), RedisValue::StringBuffer(owner.clone()));
            h.insert(field("mode"), RedisValue::SimpleStringStatic(mode.name()));
            h.insert(field("token"), RedisValue::Integer(hold.token));
            h.insert(field("ttl"), RedisValue::Integer(hold.ttl_left(now)));
            h.insert(field("holds"), RedisValue::Integer(hold.holds as i64));
            RedisValue::OrderedMap(h)
        })
        .collect();
    let mode = live.first().map_or("none", |((mode, _), _)| mode.name());
    let mut reply = BTreeMap::new();
    reply.insert(field("mode"), RedisValue::SimpleStringStatic(mode));
    reply.insert(field("holders"), RedisValue::Array(holders));
    reply.insert(field("waiters"), RedisValue::Integer(waiters));
    Ok(RedisValue::OrderedMap(reply))
}
