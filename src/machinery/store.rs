//! The one way a key of any lock kind is read, changed, stored, propagated and settled.
//!
//! The rules, the same for every kind:
//! - An operation runs on the stored value, or on a fresh one when the key is absent.
//! - Whatever it changed is stored and propagated, even when it then failed: an
//!   operation may have ended a lease that was over before it found out it could not
//!   proceed.
//! - A value nobody holds (vacant) keeps its key only while clients wait on it, and then
//!   the first of them is signalled; otherwise the key goes. Replicas and the AOF learn
//!   of a lock that became free as `DEL key`, whatever the kind; of any other change
//!   through the kind's own effects.
//! - The expiry index follows the value's next deadline.

use std::marker::PhantomData;

use redis_module::key::{RedisKey, RedisKeyWritable};
use redis_module::{Context, RedisString};

use crate::machinery::kind::{self, Changes, Kind, KindOps};
use crate::machinery::{clock, effects, expiry, keyspace, stats, waiting};
use crate::error::{Error, Result};
use crate::ffi::{self, Db};
use crate::logic::{Millis, Token};

/// Runs `op` on the value of kind `K` at `key`, then stores, propagates and tracks
/// whatever changed.
pub fn update<K: Kind, R>(ctx: &Context, key: &RedisString, op: impl FnOnce(&mut K, Millis) -> Result<R>) -> Result<R> {
    let now = clock::now_ms();
    let handle = ctx.open_key_writable(key);
    let stored = handle.get_value::<K>(K::data_type()).map_err(|_| Error::WrongType)?;
    let existed = stored.is_some();
    let mut fresh = if existed { K::default() } else { vacant::<K>(ctx, key) };
    let value = stored.unwrap_or(&mut fresh);
    let old_deadline = value.next_deadline();
    let over = if old_deadline.is_some_and(|d| d <= now) { value.over_holds(now) } else { Vec::new() };
    let result = op(value, now);
    let changes = value.take_changes();
    if !changes.any() {
        return result;
    }
    let new_deadline = value.next_deadline();
    if !over.is_empty() && new_deadline != old_deadline {
        stats::lease_expired();
        over.iter().for_each(|t| stats::held(*t, now));
        ffi::notify(ctx, true, K::EXPIRED_EVENT, key);
    }
    if value.is_vacant() {
        if existed {
            effects::emit_del(ctx, key);
        }
        keep_for_waiters::<K>(ctx, &handle, key, existed)?;
    } else {
        value.replicate(&changes, ctx, key);
        if !existed {
            store_new(&handle, fresh)?;
        }
        if changes.released() && waiting::count(ffi::selected_db(ctx), key.as_slice()) > 0 {
            waiting::signal(ctx, key);
        }
    }
    expiry::track(ctx, key.as_slice(), old_deadline, new_deadline);
    result
}

/// Stores a new value at an empty key.
fn store_new<K: Kind>(handle: &RedisKeyWritable, value: K) -> Result<()> {
    handle.set_value(K::data_type(), value)?;
    K::LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// What a missing `key` reads as: vacant, as its first waiter (if any) sees it.
pub fn vacant<K: Kind>(ctx: &Context, key: &RedisString) -> K {
    match waiting::front(ffi::selected_db(ctx), key.as_slice()) {
        Some(front) => K::vacant_for(front.as_ref()),
        None => K::default(),
    }
}

/// Applies a replicated effect (`op` sets exact state) at `key`: stored and tracked like
/// any change, propagated verbatim to this server's own replicas and AOF.
pub fn apply_effect<K: Kind>(ctx: &Context, key: &RedisString, op: impl FnOnce(&mut K)) -> Result<()> {
    let handle = ctx.open_key_writable(key);
    let stored = handle.get_value::<K>(K::data_type()).map_err(|_| Error::WrongType)?;
    let existed = stored.is_some();
    let mut fresh = K::default();
    let value = stored.unwrap_or(&mut fresh);
    let old_deadline = value.next_deadline();
    op(value);
    value.take_changes();
    let new_deadline = value.next_deadline();
    match (value.is_vacant(), existed) {
        (true, true) => {
            handle.delete()?;
        }
        (false, false) => store_new(&handle, fresh)?,
        _ => {}
    }
    expiry::track(ctx, key.as_slice(), old_deadline, new_deadline);
    ctx.replicate_verbatim();
    Ok(())
}

/// A vacant value: its key stays (and its queue is marked ready to serve) only while
/// clients wait on it, so the free lock they wait for stays visible and keeps its kind;
/// otherwise it goes. Returns true when it deleted the key.
fn keep_for_waiters<K: Kind>(ctx: &Context, handle: &RedisKeyWritable, key: &RedisString, existed: bool) -> Result<bool> {
    let db = ffi::selected_db(ctx);
    if waiting::count(db, key.as_slice()) > 0 {
        if !existed {
            // Not in a slot this cluster node no longer serves (its lock moved away).
            if !waiting::served_here(ctx, db, key) {
                return Ok(false);
            }
            store_new(handle, vacant::<K>(ctx, key))?;
        }
        waiting::signal(ctx, key);
        Ok(false)
    } else if existed {
        handle.delete()?;
        // Redis's own deletions fire `del`; a module's do not unless it says so.
        ffi::notify(ctx, false, c"del", key);
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Brings a key of kind `K` up to date outside any command (a deadline passed, the key
/// was removed with clients waiting): ends leases that are over, serves waiters, removes
/// the key of a vacant value nobody waits for, brings back (vacant) the key of one that
/// clients wait on.
fn settle<K: Kind>(ctx: &Context, key: &RedisString, now: Millis) {
    let handle = ctx.open_key_writable(key);
    let Ok(stored) = handle.get_value::<K>(K::data_type()) else { return };
    let existed = stored.is_some();
    let mut just_freed = false;
    if let Some(value) = stored {
        let old_deadline = value.next_deadline();
        let over = value.over_holds(now);
        value.end_over(now);
        let changes = value.take_changes();
        if changes.any() {
            stats::lease_expired();
            over.iter().for_each(|t| stats::held(*t, now));
            ffi::notify(ctx, true, K::EXPIRED_EVENT, key);
        }
        if !value.is_vacant() {
            value.replicate(&changes, ctx, key);
            // Tracked again: the entry that brought us here left the index (or was stale).
            expiry::track(ctx, key.as_slice(), None, value.next_deadline());
            // A settled key's queue may have changed (a waiter left), so whoever is at
            // its front now may get in, held lock or not (readers behind a writer that
            // gave up).
            if waiting::count(ffi::selected_db(ctx), key.as_slice()) > 0 {
                waiting::signal(ctx, key);
            }
            return;
        }
        expiry::track(ctx, key.as_slice(), old_deadline, None);
        if changes.any() {
            effects::emit_del(ctx, key);
            just_freed = true;
        }
    }
    // A vacant value from a snapshot has had no DEL propagated yet.
    if let Ok(true) = keep_for_waiters::<K>(ctx, &handle, key, existed) {
        if !just_freed {
            effects::emit_del(ctx, key);
        }
    }
}

/// Settles `key` (in the selected db), whatever its kind: see `settle`. A key of another
/// type (or kind) than its waiters wait for has them signalled, to answer WRONGTYPE.
pub fn settle_any(ctx: &Context, key: &RedisString, now: Millis) {
    let db = ffi::selected_db(ctx);
    let front = waiting::front(db, key.as_slice()).map(|request| request.kind());
    let found = kind::kind_of(&ctx.open_key(key));
    match (found, front) {
        (Ok(None), Some(front)) => front.settle(ctx, key, now),
        (Ok(None), None) | (Err(()), None) => {}
        (Ok(Some(kind)), front) => {
            kind.settle(ctx, key, now);
            if front.is_some_and(|f| !kind::same(f, kind)) {
                waiting::signal(ctx, key);
            }
        }
        (Err(()), Some(_)) => waiting::signal(ctx, key),
    }
}

/// A key arrived under a name the expiry index may not know (loaded, renamed, moved,
/// restored): track its lease.
pub fn on_arrival(ctx: &Context, key: &[u8]) {
    let name = RedisString::create_from_slice(ctx.ctx, key);
    let handle = ctx.open_key(&name);
    if let Ok(Some(kind)) = kind::kind_of(&handle) {
        expiry::arrived(ctx, key, kind.deadline_of(&handle));
    }
}

/// For each kind's unlink hook: Redis removed the key, so its lease needs no timer, and
/// whoever waits on the name is served.
pub fn on_unlink<K: Kind>(value: &K, db: Db, key: &[u8]) {
    if let Some(deadline) = value.next_deadline() {
        expiry::untrack(db, key, deadline);
    }
    waiting::on_key_removed(db, key);
}

/// For each kind's RDB loader: a value loaded (restart, full sync, RESTORE, slot
/// migration) raises the token floor to its highest token, and the key it lands under
/// must be tracked, which takes the keyspace subscription.
pub fn on_load(highest_token: Token) {
    clock::observe(highest_token);
    keyspace::subscribe_once();
}

/// A registered kind: what the type-erased machinery calls.
pub struct Registered<K>(PhantomData<fn() -> K>);

impl<K> Registered<K> {
    pub const fn new() -> Self {
        Registered(PhantomData)
    }
}

impl<K: Kind> KindOps for Registered<K> {
    fn data_type(&self) -> &'static redis_module::native_types::RedisType {
        K::data_type()
    }

    fn holds(&self, key: &RedisKey) -> bool {
        matches!(key.get_value::<K>(K::data_type()), Ok(Some(_)))
    }

    fn deadline_of(&self, key: &RedisKey) -> Millis {
        key.get_value::<K>(K::data_type()).ok().flatten().and_then(K::next_deadline).unwrap_or(0)
    }

    fn settle(&self, ctx: &Context, key: &RedisString, now: Millis) {
        settle::<K>(ctx, key, now);
    }
}
