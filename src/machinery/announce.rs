//! What every lock kind reports of a grant or a release: the counters `INFO fencelock`
//! shows and the keyspace event (`<kind>.acquire`, `.handoff`, `.release`), the same way
//! for every kind.

use std::ffi::CStr;

use redis_module::{Context, RedisString};

use crate::ffi;
use crate::logic::waiters::WaiterId;
use crate::logic::{Millis, Token};
use crate::machinery::stats;

/// The keyspace events of one kind.
pub struct Events {
    pub acquire: &'static CStr,
    pub handoff: &'static CStr,
    pub release: &'static CStr,
}

/// A grant at `key`: `fresh` with a new token (else a re-entry); `waiter` when it went to
/// a client that waited.
pub fn granted(ctx: &Context, key: &RedisString, events: &Events, waiter: Option<WaiterId>, fresh: bool) {
    if fresh {
        stats::granted(waiter.is_some());
    }
    let event = if fresh && waiter.is_some() { events.handoff } else { events.acquire };
    ffi::notify(ctx, true, event, key);
}

/// A release at `key` that gave back a hold; `ended` is the token of the hold it ended
/// (its last), for the hold times. Called before the store may delete the key, so the
/// event goes out before `del`, in the order Redis's own commands use.
pub fn released(ctx: &Context, key: &RedisString, events: &Events, ended: Option<Token>, now: Millis) {
    if let Some(token) = ended {
        stats::held(token, now);
    }
    stats::released();
    ffi::notify(ctx, true, events.release, key);
}
