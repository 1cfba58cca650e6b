//! Server-side waits: clients blocked on a lock key, granted in arrival order.
//!
//! A waiting acquire blocks with `RedisModule_BlockClientOnKeys` and a ticket holding
//! its `Request`; its id joins the key's queue. When the lock frees (release, lease end,
//! the key removed or flushed), the key is signalled ready and Redis retries the blocked
//! clients in the order they blocked; only the ticket at the front of our queue may take
//! the lock, in its own callback, which propagates the grant like any command.
//!
//! Redis handles the time-out, `CLIENT UNBLOCK` (answered nil) and disconnection; each
//! takes the ticket out of the queue at once, so the front is always a live client.
//!
//! Redis 7.0 retries clients blocked on a key only while the key exists, so a lock with
//! waiters keeps its key even when free (`store`). Keys that need care outside a command
//! (removed, flushed, a waiter left) are noted here and settled by `events` just before
//! the event loop sleeps, which is still before Redis serves blocked clients and writes
//! any reply: a waiter is granted in the same turn as the change that freed the lock.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use redis_module::{Context, ContextFlags, RedisString, RedisValue};

use crate::machinery::kind::Request;
use crate::error::{Error, Result};
use crate::ffi::{self, Blocked, Db};
use crate::logic::waiters::{WaitQueue, WaiterId};
use crate::logic::{Millis, MAX_TTL_MS};

type Queue = WaitQueue<Arc<dyn Request>>;

#[derive(Default)]
struct Waiters {
    /// Per database, per key name. Looked up on every retry of every blocked client, so
    /// by borrowed name, without building a key.
    queues: HashMap<Db, HashMap<Box<[u8]>, Queue>>,
    /// Keys to settle before the event loop sleeps.
    noted: Vec<(Db, Box<[u8]>)>,
    last_id: WaiterId,
}

/// Never held across a call into Redis (see `machinery`).
static WAITERS: LazyLock<Mutex<Waiters>> = LazyLock::new(Default::default);

fn with<R>(f: impl FnOnce(&mut Waiters) -> R) -> R {
    f(&mut WAITERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

impl Waiters {
    fn queue(&self, db: Db, key: &[u8]) -> Option<&Queue> {
        self.queues.get(&db)?.get(key)
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
}

/// How many clients wait on `key`.
pub fn count(db: Db, key: &[u8]) -> usize {
    with(|w| w.queue(db, key).map_or(0, WaitQueue::len))
}

/// What the first waiter on `key` asked for (its kind is what a removed key must come
/// back as).
pub fn front(db: Db, key: &[u8]) -> Option<Arc<dyn Request>> {
    with(|w| w.queue(db, key).and_then(|q| q.front().map(|(_, request)| Arc::clone(request))))
}

/// True when someone queued ahead of `waiter` (or, for a newcomer, anyone) waits on the
/// key: they must be served first.
pub fn others_first(ctx: &Context, key: &RedisString, waiter: Option<WaiterId>) -> bool {
    let db = ffi::selected_db(ctx);
    with(|w| match (w.queue(db, key.as_slice()), waiter) {
        (None, _) => false,
        (Some(q), None) => !q.is_empty(),
        (Some(q), Some(id)) => !q.is_front(id),
    })
}

/// Tells Redis to retry the clients blocked on `key`.
pub fn signal(ctx: &Context, key: &RedisString) {
    ffi::signal_key_ready(ctx, key);
}

/// An acquire: granted now, or (with `WAIT timeout`, where blocking is allowed) the
/// client blocks until it is granted or `timeout` ms pass (0: no limit) and the reply
/// comes later; nil otherwise.
pub fn acquire(ctx: &Context, key: &RedisString, wait: Option<Millis>, request: impl Request) -> Result<RedisValue> {
    if let Some(token) = request.try_grant(ctx, key, None)? {
        return Ok(RedisValue::Integer(token));
    }
    match wait {
        // Inside MULTI/EXEC or a script the acquire is a single try.
        Some(timeout) if !ctx.get_flags().intersects(ContextFlags::DENY_BLOCKING | ContextFlags::MULTI | ContextFlags::LUA) => {
            block(ctx, key, timeout, Arc::new(request))
        }
        _ => Ok(RedisValue::Null),
    }
}

/// The ticket a blocked client carries: who it is and what it asked for.
struct Ticket {
    id: WaiterId,
    db: Db,
    key: Box<[u8]>,
    request: Arc<dyn Request>,
}

fn block(ctx: &Context, key: &RedisString, timeout: Millis, request: Arc<dyn Request>) -> Result<RedisValue> {
    let db = ffi::selected_db(ctx);
    let id = with(|w| {
        w.last_id += 1;
        let id = w.last_id;
        w.queues.entry(db).or_default().entry(key.as_slice().into()).or_default().push(id, Arc::clone(&request));
        id
    });
    // Redis adds the timeout to its clock in a signed 64-bit sum; a timeout beyond any
    // lease (2^40 ms, 35 years) is "without limit" and must not overflow that sum.
    let timeout = if timeout > MAX_TTL_MS { 0 } else { timeout };
    let ticket = Ticket { id, db, key: key.as_slice().into(), request };
    match ffi::block_on_key(ctx, key, timeout, ticket) {
        Ok(()) => Ok(RedisValue::NoReply),
        Err(ticket) => {
            with(|w| w.remove(db, &ticket.key, id));
            Err(Error::Internal("blocking is not available".into()))
        }
    }
}

impl Ticket {
    /// Takes the ticket out of its queue (if still there) and has its key settled: the
    /// next waiter may be servable now.
    fn leave(&self) {
        if with(|w| w.remove(self.db, &self.key, self.id)) {
            note(self.db, &self.key);
        }
    }
}

impl Blocked for Ticket {
    fn ready(&self, ctx: &Context) -> bool {
        // A grant propagates, which Redis forbids while clients are paused for writes:
        // the key is served again after the pause.
        if ffi::avoid_replica_traffic() {
            note(self.db, &self.key);
            return false;
        }
        if !with(|w| w.queue(self.db, &self.key).is_some_and(|q| q.is_front(self.id))) {
            return false;
        }
        let key = RedisString::create_from_slice(ctx.ctx, &self.key);
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.request.try_grant(ctx, &key, Some(self.id))));
        let reply = match served {
            Ok(Ok(Some(token))) => Ok(RedisValue::Integer(token)),
            Ok(Ok(None)) => return false,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Internal("panic while granting a waiter".into())),
        };
        with(|w| w.remove(self.db, &self.key, self.id));
        ctx.reply(reply.map_err(Into::into));
        true
    }

    fn timed_out(&self, ctx: &Context) {
        self.leave();
        ctx.reply(Ok(RedisValue::Null));
    }

    fn disconnected(&self) {
        self.leave();
    }

    fn freed(self) {
        // Normally gone already (granted, timed out, disconnected): the backstop.
        self.leave();
    }
}

// ---- keys that need care outside a command ----------------------------------------

fn note(db: Db, key: &[u8]) {
    with(|w| w.noted.push((db, key.into())));
}

/// A lock key left its name by any of Redis's ways (DEL, UNLINK, expiry of a TTL someone
/// set, expiry on access, eviction, overwrite, RENAME or MOVE away): its waiters still
/// wait on the name and are served as after a release.
pub fn on_key_removed(db: Db, key: &[u8]) {
    if count(db, key) > 0 {
        note(db, key);
    }
}

/// FLUSHDB / FLUSHALL: every key with waiters in the flushed databases.
pub fn on_flush(db: Option<Db>) {
    with(|w| {
        let flushed: Vec<_> = w
            .queues
            .iter()
            .filter(|(d, _)| db.is_none_or(|db| **d == db))
            .flat_map(|(d, keys)| keys.keys().map(move |k| (*d, k.clone())))
            .collect();
        w.noted.extend(flushed);
    });
}

/// The keys noted since the last call, each once.
pub fn take_noted() -> Vec<(Db, Box<[u8]>)> {
    let mut noted = with(|w| std::mem::take(&mut w.noted));
    noted.sort_unstable();
    noted.dedup();
    noted
}
