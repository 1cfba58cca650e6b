//! Server-side waits: clients blocked on a lock, granted in arrival order.
//!
//! A waiting acquire blocks with `RedisModule_BlockClientOnKeys` and a ticket; its id
//! joins the key's `WaitQueue`. When the lock frees (release, lease end, key deleted or
//! flushed), the key is signalled ready and Redis retries the blocked clients in the
//! order they blocked; only the ticket at the front of our queue may take the lock, in
//! its own reply callback, which propagates the grant like any command.
//!
//! Redis handles the time-out, `CLIENT UNBLOCK` (our time-out callback answers nil) and
//! disconnection (our disconnect callback); each takes the ticket out of the queue at
//! once, so the front is always a live client.
//!
//! Redis 7.0 retries clients blocked on a key only while the key exists, so a lock with
//! waiters keeps its key even when free. Keys that need that kind of care outside a
//! command (deleted, flushed, a waiter left) are noted and settled just before the
//! event loop sleeps, which is still before Redis serves blocked clients and writes any
//! reply: a waiter is granted in the same turn as the release that freed the lock.

use std::collections::HashMap;
use std::os::raw::{c_int, c_void};

use redis_module::key::RedisKeyWritable;
use redis_module::native_types::RedisType;
use redis_module::{raw, Context, RedisString, RedisValue};

use crate::error::{Error, Result};
use crate::expiry::selected_db;
use crate::{expiry, lock, rwlock};
use crate::logic::deadlines::Db;
use crate::logic::rwlock::Mode;
use crate::logic::waiters::{WaitQueue, WaiterId};
use crate::logic::{Millis, MAX_TTL_MS};
use crate::state;

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    Mutex,
    Rw(Mode),
}

#[derive(Default)]
pub struct Waiters {
    /// Per database, per key name. Looked up on every retry of every blocked client, so
    /// by borrowed name, without building a key.
    queues: HashMap<Db, HashMap<Box<[u8]>, WaitQueue<WaitFor>>>,
    /// Keys to settle before the event loop sleeps.
    attention: Vec<(Db, Box<[u8]>)>,
    last_id: WaiterId,
}

impl Waiters {
    fn queue(&self, db: Db, key: &[u8]) -> Option<&WaitQueue<WaitFor>> {
        self.queues.get(&db)?.get(key)
    }

    fn push(&mut self, db: Db, key: &[u8], id: WaiterId, what: WaitFor) {
        self.queues.entry(db).or_default().entry(key.into()).or_default().push(id, what);
    }

    fn remove(&mut self, db: Db, key: &[u8], id: WaiterId) -> bool {
        let Some(keys) = self.queues.get_mut(&db) else { return false };
        let Some(queue) = keys.get_mut(key) else { return false };
        let removed = queue.remove(id);
        if queue.is_empty() {
            keys.remove(key);
            if keys.is_empty() {
                self.queues.remove(&db);
            }
        }
        removed
    }

    /// Every key with waiters in `db`, or in every database.
    fn keys_in(&self, db: Option<Db>) -> impl Iterator<Item = (Db, Box<[u8]>)> + '_ {
        self.queues
            .iter()
            .filter(move |(d, _)| db.is_none_or(|db| **d == db))
            .flat_map(|(d, keys)| keys.keys().map(move |k| (*d, k.clone())))
    }
}

/// The ticket a blocked client carries: who it is and what it asked for.
struct Ticket {
    id: WaiterId,
    db: Db,
    key: Box<[u8]>,
    owner: Vec<u8>,
    ttl: Millis,
    what: WaitFor,
}

/// What the first waiter on a key waits for: tells which kind of lock a deleted key
/// must come back as.
pub fn front(db: Db, key: &[u8]) -> Option<WaitFor> {
    state::with(|g| g.waiters.queue(db, key).and_then(|q| q.front().map(|(_, what)| *what)))
}

pub fn count(db: Db, key: &[u8]) -> usize {
    state::with(|g| g.waiters.queue(db, key).map_or(0, WaitQueue::len))
}

/// True when `waiter` (or, for a newcomer, anyone) is queued ahead on the key.
pub fn others_first(db: Db, key: &[u8], waiter: Option<WaiterId>) -> bool {
    state::with(|g| match (g.waiters.queue(db, key), waiter) {
        (None, _) => false,
        (Some(q), None) => !q.is_empty(),
        (Some(q), Some(id)) => !q.is_front(id),
    })
}

/// Whether this command may block: not inside MULTI/EXEC or a script.
pub fn can_block(ctx: &Context) -> bool {
    let flags = unsafe { raw::RedisModule_GetContextFlags.map_or(0, |f| f(ctx.ctx)) } as u32;
    let deny = raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING | raw::REDISMODULE_CTX_FLAGS_MULTI | raw::REDISMODULE_CTX_FLAGS_LUA;
    flags & deny == 0
}

pub fn signal_ready(ctx: &Context, key: &RedisString) {
    unsafe {
        if let Some(signal) = raw::RedisModule_SignalKeyAsReady {
            signal(ctx.ctx, key.inner);
        }
    }
}

/// A lock nobody holds keeps its key only while clients wait on it (Redis 7.0 retries
/// blocked clients only on existing keys), and then the front waiter is served at once;
/// otherwise it leaves no key. `empty` makes the value for a key that is not there yet.
/// Returns true when it deleted the key.
pub fn leave_unheld<T>(
    ctx: &Context,
    handle: &RedisKeyWritable,
    key: &RedisString,
    existed: bool,
    lock_type: &RedisType,
    empty: fn() -> T,
) -> Result<bool> {
    if count(selected_db(ctx), key.as_slice()) > 0 {
        if !existed {
            handle.set_value(lock_type, empty())?;
        }
        signal_ready(ctx, key);
        Ok(false)
    } else if existed {
        handle.delete()?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Notes a key to settle before the event loop sleeps.
fn note(db: Db, key: &[u8]) {
    state::with(|g| g.waiters.attention.push((db, key.into())));
}

/// Blocks the calling client until it is granted what it waits for at `key`, or
/// `timeout` ms pass (0: no limit). The reply comes later, from a callback.
pub fn block(ctx: &Context, key: &RedisString, owner: &[u8], ttl: Millis, timeout: Millis, what: WaitFor) -> Result<RedisValue> {
    let db = selected_db(ctx);
    let id = state::with(|g| {
        g.waiters.last_id += 1;
        let id = g.waiters.last_id;
        g.waiters.push(db, key.as_slice(), id, what);
        id
    });
    // Redis adds the timeout to its clock in a signed 64-bit sum; a timeout beyond any
    // lease (2^40 ms, 35 years) is "without limit" and must not overflow that sum.
    let timeout = if timeout > MAX_TTL_MS { 0 } else { timeout };
    let ticket = Box::new(Ticket { id, db, key: key.as_slice().into(), owner: owner.to_vec(), ttl, what });
    let mut keys = [key.inner];
    unsafe {
        let (Some(block_on_keys), Some(on_disconnect)) =
            (raw::RedisModule_BlockClientOnKeys, raw::RedisModule_SetDisconnectCallback)
        else {
            state::with(|g| g.waiters.remove(db, key.as_slice(), id));
            return Err(Error::Internal("blocking is not available".into()));
        };
        let bc = block_on_keys(
            ctx.ctx,
            Some(on_ready),
            Some(on_timeout),
            Some(free_ticket),
            timeout,
            keys.as_mut_ptr(),
            1,
            Box::into_raw(ticket).cast(),
        );
        on_disconnect(bc, Some(on_disconnected));
    }
    Ok(RedisValue::NoReply)
}

unsafe fn ticket<'a>(ctx: *mut raw::RedisModuleCtx) -> Option<&'a Ticket> {
    raw::RedisModule_GetBlockedClientPrivateData
        .and_then(|get| get(ctx).cast::<Ticket>().as_ref())
}

/// Takes a ticket out of its queue (if still there) and has its key settled.
fn leave(ticket: &Ticket) {
    if state::with(|g| g.waiters.remove(ticket.db, &ticket.key, ticket.id)) {
        note(ticket.db, &ticket.key);
    }
}

/// The key was signalled ready: grant the lock if this ticket is at the front and the
/// lock is free. `REDISMODULE_ERR` keeps the client blocked.
unsafe extern "C" fn on_ready(ctx: *mut raw::RedisModuleCtx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    let Some(ticket) = ticket(ctx) else { return raw::REDISMODULE_ERR as c_int };
    // A grant propagates, which Redis forbids while clients are paused for writes: the
    // key is served again after the pause.
    if expiry::paused() {
        note(ticket.db, &ticket.key);
        return raw::REDISMODULE_ERR as c_int;
    }
    if !state::with(|g| g.waiters.queue(ticket.db, &ticket.key).is_some_and(|q| q.is_front(ticket.id))) {
        return raw::REDISMODULE_ERR as c_int;
    }
    let ctx = Context::new(ctx);
    let key = RedisString::create_from_slice(ctx.ctx, &ticket.key);
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match ticket.what {
            WaitFor::Mutex => lock::acquire_as_waiter(&ctx, &key, &ticket.owner, ticket.ttl, ticket.id),
            WaitFor::Rw(mode) => rwlock::acquire_as_waiter(&ctx, &key, &ticket.owner, ticket.ttl, mode, ticket.id),
        }
    }));
    let reply = match served {
        Ok(Ok(Some(token))) => Ok(RedisValue::Integer(token)),
        Ok(Ok(None)) => return raw::REDISMODULE_ERR as c_int,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Internal("panic while granting a waiter".into())),
    };
    state::with(|g| g.waiters.remove(ticket.db, &ticket.key, ticket.id));
    ctx.reply(reply.map_err(Into::into));
    raw::REDISMODULE_OK as c_int
}

/// Time-out, and `CLIENT UNBLOCK`: answer nil, as the contract says.
unsafe extern "C" fn on_timeout(ctx: *mut raw::RedisModuleCtx, _argv: *mut *mut raw::RedisModuleString, _argc: c_int) -> c_int {
    if let Some(ticket) = ticket(ctx) {
        leave(ticket);
    }
    Context::new(ctx).reply(Ok(RedisValue::Null));
    raw::REDISMODULE_OK as c_int
}

unsafe extern "C" fn on_disconnected(ctx: *mut raw::RedisModuleCtx, _bc: *mut raw::RedisModuleBlockedClient) {
    if let Some(ticket) = ticket(ctx) {
        leave(ticket);
    }
}

unsafe extern "C" fn free_ticket(_ctx: *mut raw::RedisModuleCtx, privdata: *mut c_void) {
    if privdata.is_null() {
        return;
    }
    let ticket = Box::from_raw(privdata.cast::<Ticket>());
    // Normally gone already (granted, timed out, disconnected); this is the backstop.
    leave(&ticket);
}

// ---- keys that need care outside a command ----------------------------------------

/// A lock key left its name by any of Redis's ways (DEL, UNLINK, expiry of a TTL someone
/// set, lazy expiry on access, eviction, overwrite, RENAME or MOVE away): its waiters
/// still wait on the name and are served as after a release.
pub fn on_key_removed(db: Db, key: &[u8]) {
    if count(db, key) > 0 {
        note(db, key);
    }
}

/// FLUSHDB / FLUSHALL: every key with waiters in the flushed databases.
pub fn on_flush(db: Option<Db>) {
    state::with(|g| {
        let flushed: Vec<_> = g.waiters.keys_in(db).collect();
        g.waiters.attention.extend(flushed);
    });
}

/// Just before the event loop sleeps (not during a pause: settling writes and
/// propagates, so the keys stay noted until it ends): settle every noted key.
pub fn settle_noted(ctx: &Context) {
    let mut noted = state::with(|g| std::mem::take(&mut g.waiters.attention));
    if noted.is_empty() {
        return;
    }
    noted.sort_unstable();
    noted.dedup();
    let now = state::now_ms();
    let home = selected_db(ctx);
    for (db, key) in noted {
        if unsafe { raw::RedisModule_SelectDb.is_some_and(|f| f(ctx.ctx, db) == raw::REDISMODULE_OK as i32) } {
            expiry::settle(ctx, &RedisString::create_from_slice(ctx.ctx, &key), now);
        }
    }
    unsafe {
        if let Some(select) = raw::RedisModule_SelectDb {
            select(ctx.ctx, home);
        }
    }
}
