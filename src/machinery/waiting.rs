//! Server-side waits: clients blocked on a lock key, granted in arrival order.
//!
//! A waiting acquire blocks with `RedisModule_BlockClientOnKeys` and a ticket holding
//! its `Request`; its id joins the key's queue. When the lock may let someone in (a
//! release, a lease end, the key removed or flushed, a waiter leaving), the key is marked
//! ready and, once the change that caused it is complete (at the end of the command, or
//! in the before-sleep pass for changes outside commands), the module serves the queue
//! itself: the front waiter's request is tried in that context, which propagates the
//! grant like any change, and the client is answered and unblocked directly; then the
//! next, until one must wait. Redis is never asked to retry the clients blocked on the
//! key, which would call every one of them on every handoff: a handoff costs the same
//! with 4 waiters or 256.
//!
//! Blocking on the key still matters: Redis handles the time-out, `CLIENT UNBLOCK`
//! (answered nil) and disconnection (each takes the ticket out of the queue at once, so
//! the front is always a live client) and redirects the client in a cluster as it does
//! for its own blocking commands; should Redis retry the client anyway (something
//! created the key), the ticket's `ready` serves it if it is at the front.
//!
//! Keys that need care outside a command (removed, flushed, a waiter left) are noted
//! here and settled by `events` just before the event loop sleeps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use redis_module::{Context, ContextFlags, RedisError, RedisString, RedisValue};

use crate::machinery::{cluster, config, stats, takeover};
use crate::machinery::kind::Request;
use crate::error::{Error, Result};
use crate::ffi::{self, Blocked, BlockedClient, Db};
use crate::logic::waiters::{WaitQueue, WaiterId};
use crate::logic::{Millis, Token, MAX_TTL_MS};

/// A queued client: what it asked for, and how to answer it from outside its callbacks.
struct Waiter {
    request: Arc<dyn Request>,
    client: BlockedClient,
    answer: Arc<Answer>,
}

/// What became of a waiter: once served (granted or refused), it is out of the queue,
/// and its later ways out (free, disconnection) need not look for it there. A waiter
/// served by the module leaves its reply for its timeout callback, which is how Redis
/// has a client blocked on keys answered when the module unblocks it.
struct Answer {
    /// When the client blocked (for the wait times `INFO` shows).
    since: Instant,
    served: AtomicBool,
    reply: Mutex<Option<std::result::Result<Token, RedisError>>>,
}

impl Answer {
    fn new() -> Answer {
        Answer { since: Instant::now(), served: AtomicBool::new(false), reply: Mutex::new(None) }
    }

    /// The waiter is out of the queue with `outcome`.
    fn served(&self, outcome: &Result<Token>) {
        self.served.store(true, Ordering::Relaxed);
        if outcome.is_ok() {
            stats::waited(self.since.elapsed());
        }
    }
}

type Queue = WaitQueue<Waiter>;

#[derive(Default)]
struct Waiters {
    /// Per database, per key name, looked up by borrowed name without building a key.
    queues: HashMap<Db, HashMap<Box<[u8]>, Queue>>,
    /// Keys to settle before the event loop sleeps.
    noted: Vec<(Db, Box<[u8]>)>,
    /// Keys whose queue to serve once the change in progress is complete.
    ready: Vec<(Db, Box<[u8]>)>,
    /// Keys another cluster node serves now, to look at again (see `cluster`).
    elsewhere: Vec<(Db, Box<[u8]>)>,
    /// When `elsewhere` was last looked at.
    elsewhere_at: Option<Instant>,
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

/// How many clients wait, and on how many keys.
pub fn totals() -> (usize, usize) {
    with(|w| w.queues.values().flat_map(|keys| keys.values()).fold((0, 0), |(c, k), q| (c + q.len(), k + 1)))
}

/// How many clients wait on `key`.
pub fn count(db: Db, key: &[u8]) -> usize {
    with(|w| w.queue(db, key).map_or(0, WaitQueue::len))
}

/// What the first waiter on `key` asked for (its kind is what a removed key must come
/// back as).
pub fn front(db: Db, key: &[u8]) -> Option<Arc<dyn Request>> {
    with(|w| w.queue(db, key).and_then(|q| q.front().map(|(_, waiter)| Arc::clone(&waiter.request))))
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

/// The lock at `key` (in the selected db) may let its waiters in: they are served once
/// the change in progress is complete (`serve_ready`). Called with the key open, so it
/// only marks.
pub fn signal(ctx: &Context, key: &RedisString) {
    let db = ffi::selected_db(ctx);
    with(|w| w.ready.push((db, key.as_slice().into())));
}

/// Whether some key is marked ready.
pub fn any_ready() -> bool {
    with(|w| !w.ready.is_empty())
}

/// Serves the queues of the keys marked ready, each from its front until a waiter must
/// wait: at the end of every command of ours, and in the before-sleep pass. True when it
/// served any key. While Redis asks that nothing be written (a pause), the keys wait in
/// the noted list for the pass after it.
pub fn serve_ready(ctx: &Context) -> bool {
    let mut ready = with(|w| std::mem::take(&mut w.ready));
    if ready.is_empty() {
        return false;
    }
    if ffi::avoid_replica_traffic() {
        with(|w| w.noted.extend(ready));
        return false;
    }
    ready.sort_unstable();
    ready.dedup();
    let home = ffi::selected_db(ctx);
    for (db, key) in ready {
        if ffi::select_db(ctx, db) {
            serve(ctx, db, &key);
        }
    }
    ffi::select_db(ctx, home);
    true
}

/// Grants the waiters on `key` (in the selected db, `db`) from the front, answering each
/// client, until the front one must wait.
fn serve(ctx: &Context, db: Db, key: &[u8]) {
    let name = RedisString::create_from_slice(ctx.ctx, key);
    if !may_grant(ctx, db, &name) {
        return;
    }
    loop {
        let front = with(|w| {
            let (id, waiter) = w.queue(db, key)?.front()?;
            Some((id, Arc::clone(&waiter.request), waiter.client, Arc::clone(&waiter.answer)))
        });
        let Some((id, request, client, answer)) = front else { return };
        let Some(outcome) = try_grant(ctx, &name, id, request.as_ref()) else { return };
        with(|w| w.remove(db, key, id));
        answer.served(&outcome);
        *answer.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome.map_err(Into::into));
        ffi::unblock(client);
    }
}

/// Whether waiters at `key` (in the selected db, `db`) may be granted here now: not
/// during the takeover grace (they are all served when it ends), nor where another
/// cluster node serves the key (it is looked at again later).
fn may_grant(ctx: &Context, db: Db, key: &RedisString) -> bool {
    !takeover::holding_back() && served_here(ctx, db, key)
}

/// Whether this node serves `key` (in the selected db, `db`) now (see `cluster`); if
/// not, the key is put aside and looked at again later.
pub fn served_here(ctx: &Context, db: Db, key: &RedisString) -> bool {
    let here = cluster::serves(ctx, key);
    if !here {
        with(|w| w.elsewhere.push((db, key.as_slice().into())));
    }
    here
}

/// Tries the waiter `id`'s request: `None` while it must wait, else its outcome.
fn try_grant(ctx: &Context, key: &RedisString, id: WaiterId, request: &dyn Request) -> Option<Result<Token>> {
    let tried = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| request.try_grant(ctx, key, Some(id))));
    match tried {
        Ok(Ok(Some(token))) => Some(Ok(token)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(Err(e)),
        Err(_) => Some(Err(Error::Internal("panic while granting a waiter".into()))),
    }
}

/// An acquire: granted now, or (with `WAIT timeout`, where blocking is allowed) the
/// client blocks until it is granted or `timeout` ms pass (0: no limit) and the reply
/// comes later; nil otherwise.
pub fn acquire(ctx: &Context, key: &RedisString, wait: Option<Millis>, request: impl Request) -> Result<RedisValue> {
    if !takeover::holding_back() {
        if let Some(token) = request.try_grant(ctx, key, None)? {
            return Ok(RedisValue::Integer(token));
        }
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
    answer: Arc<Answer>,
}

fn block(ctx: &Context, key: &RedisString, timeout: Millis, request: Arc<dyn Request>) -> Result<RedisValue> {
    let db = ffi::selected_db(ctx);
    if let Some(max) = config::max_waiters() {
        if count(db, key.as_slice()) >= max {
            return Err(Error::TooManyWaiters(max));
        }
    }
    let id = with(|w| {
        w.last_id += 1;
        w.last_id
    });
    // Redis adds the timeout to its clock in a signed 64-bit sum; a timeout beyond any
    // lease (2^40 ms, 35 years) is "without limit" and must not overflow that sum.
    let timeout = if timeout > MAX_TTL_MS { 0 } else { timeout };
    let answer = Arc::new(Answer::new());
    let ticket = Ticket { id, db, key: key.as_slice().into(), request: Arc::clone(&request), answer: Arc::clone(&answer) };
    // Nothing runs between blocking and queueing: both happen in this command.
    let client = ffi::block_on_key(ctx, key, timeout, ticket).map_err(|_| Error::Internal("blocking is not available".into()))?;
    let waiter = Waiter { request, client, answer };
    with(|w| w.queues.entry(db).or_default().entry(key.as_slice().into()).or_default().push(id, waiter));
    Ok(RedisValue::NoReply)
}

impl Ticket {
    /// Takes the ticket out of its queue (if still there) and has its key settled: the
    /// next waiter may be servable now.
    fn leave(&self) {
        // A served ticket left its queue then; looking for it would scan the queue.
        if self.answer.served.load(Ordering::Relaxed) {
            return;
        }
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
        if !may_grant(ctx, self.db, &key) {
            return false;
        }
        let Some(outcome) = try_grant(ctx, &key, self.id, self.request.as_ref()) else { return false };
        with(|w| w.remove(self.db, &self.key, self.id));
        self.answer.served(&outcome);
        let reply = outcome.map(RedisValue::Integer);
        ctx.reply(reply.map_err(Into::into));
        true
    }

    fn timed_out(&self, ctx: &Context) {
        // Served by the module (`serve`): the grant is made, the answer left here.
        if let Some(answer) = self.answer.reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
            ctx.reply(answer.map(RedisValue::Integer));
            return;
        }
        stats::wait_timed_out();
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

/// Notes every key with waiters in `db` (in every database when `None`): FLUSHDB /
/// FLUSHALL, and the end of the takeover grace.
pub fn note_queues(db: Option<Db>) {
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

/// The keys noted since the last call (and those put aside for another cluster node,
/// when due), each once.
pub fn take_noted() -> Vec<(Db, Box<[u8]>)> {
    let mut noted = with(|w| {
        // The keys another node served when last looked at, again once per
        // `cluster::RETRY`: the slot may be back, or their waiters redirected (and gone
        // from their queues).
        if !w.elsewhere.is_empty() && w.elsewhere_at.is_none_or(|at| at.elapsed() >= cluster::RETRY) {
            w.elsewhere_at = Some(Instant::now());
            let elsewhere = std::mem::take(&mut w.elsewhere);
            w.noted.extend(elsewhere);
        }
        std::mem::take(&mut w.noted)
    });
    noted.sort_unstable();
    noted.dedup();
    noted
}
