//! What the machinery knows of a lock kind, and nothing more.
//!
//! A kind is its pure state machine (in `logic`), a command file that parses, calls it
//! through `store` and replies, and a persistence file that implements `Kind` (and
//! `ffi::TypeValue`) for the state machine. The machinery handles every kind alike
//! through this trait; a blocked acquire through `Request`; keys of unknown kind through
//! the registry of `KindOps`, filled once at load.

use std::any::Any;
use std::ffi::CStr;
use std::sync::OnceLock;

use redis_module::key::RedisKey;
use redis_module::native_types::RedisType;
use redis_module::{Context, RedisString};

use crate::error::Result;
use crate::ffi::TypeValue;
use crate::logic::waiters::WaiterId;
use crate::logic::{Millis, Token};

/// A lock kind's state, as stored in its key.
pub trait Kind: Default + TypeValue + 'static {
    /// What an operation changed, as the kind records it.
    type Changes: Changes;

    /// The Redis data type whose values are this kind.
    fn data_type() -> &'static RedisType;

    /// The keyspace event fired when the server ends a lease that ran out (the holder's
    /// lost-lock notification), e.g. `lock.expired`.
    const EXPIRED_EVENT: &'static CStr;

    /// The value a missing key reads as while `front` (the first client waiting on it)
    /// waits: what it is revived as for them, and what a newcomer meets.
    fn vacant_for(_front: &dyn Request) -> Self {
        Self::default()
    }

    /// The deadline of the lease that ends first: what the expiry index tracks.
    fn next_deadline(&self) -> Option<Millis>;

    /// Ends every lease that is over at `now`.
    fn end_over(&mut self, now: Millis);

    /// The tokens of the holds whose lease is over at `now` (for the hold times `INFO`
    /// shows); called only when some lease is over.
    fn over_holds(&self, _now: Millis) -> Vec<Token> {
        Vec::new()
    }

    /// Nobody holds it: its key stays only while clients wait on it.
    fn is_vacant(&self) -> bool;

    /// The changes since the last call.
    fn take_changes(&mut self) -> Self::Changes;

    /// Propagates `changes` to replicas and the AOF as effects that set exact state.
    fn replicate(&self, changes: &Self::Changes, ctx: &Context, key: &RedisString);
}

pub trait Changes {
    /// Anything changed.
    fn any(&self) -> bool;
    /// A hold went, which may let a waiter in.
    fn released(&self) -> bool;
}

/// The changes of a kind with many holders: the holders whose hold changed (each once),
/// and whether any of them went.
pub struct HolderChanges<H> {
    pub holders: Vec<H>,
    released: bool,
}

impl<H> HolderChanges<H> {
    /// `gone` tells whether a changed holder holds nothing now.
    pub fn new(holders: Vec<H>, gone: impl Fn(&H) -> bool) -> Self {
        let released = holders.iter().any(gone);
        HolderChanges { holders, released }
    }
}

impl<H> Changes for HolderChanges<H> {
    fn any(&self) -> bool {
        !self.holders.is_empty()
    }

    fn released(&self) -> bool {
        self.released
    }
}

/// A kind with its type erased, for keys whose kind is known only at run time (a key
/// that fell due, one that arrived by RENAME, one whose waiters must be served).
pub trait KindOps: Sync {
    fn data_type(&self) -> &'static RedisType;

    /// Whether `key` holds a value of this kind.
    fn holds(&self, key: &RedisKey) -> bool;

    /// The lease deadline to track for a key of this kind (0 for a vacant one, so that
    /// it is settled at once).
    fn deadline_of(&self, key: &RedisKey) -> Millis;

    /// Brings the key (of this kind, or missing while clients of this kind wait on it)
    /// up to date: ends leases that are over, serves waiters, removes a vacant key.
    fn settle(&self, ctx: &Context, key: &RedisString, now: Millis);
}

/// Whether two handles name the same kind.
pub fn same(a: &dyn KindOps, b: &dyn KindOps) -> bool {
    std::ptr::eq(a.data_type(), b.data_type())
}

/// An acquire that waits: what it needs to be retried when its key is signalled. The
/// waiting queue keeps it, so a kind may look at what its waiters asked for (`Any`: a
/// semaphore whose key is gone learns its waiters' limit so).
pub trait Request: Any + Send + Sync {
    fn kind(&self) -> &'static dyn KindOps;

    /// Tries to grant; `None` while it must wait. `waiter` is the caller's place in the
    /// queue, `None` for a newcomer (who must let every queued client go first).
    fn try_grant(&self, ctx: &Context, key: &RedisString, waiter: Option<WaiterId>) -> Result<Option<Token>>;
}

static KINDS: OnceLock<Vec<&'static dyn KindOps>> = OnceLock::new();

/// Registers every kind, once, at load.
pub fn register(kinds: Vec<&'static dyn KindOps>) {
    let _ = KINDS.set(kinds);
}

/// The kind of the value at `key`: `Ok(None)` for no key, `Err(())` for a key of a type
/// that is not a lock kind.
pub fn kind_of(key: &RedisKey) -> Result<Option<&'static dyn KindOps>, ()> {
    if key.key_type() == redis_module::raw::KeyType::Empty {
        return Ok(None);
    }
    KINDS.get().into_iter().flatten().find(|k| k.holds(key)).copied().map(Some).ok_or(())
}
