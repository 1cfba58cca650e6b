//! Module-global state: the token clock, the expiry index and the waiter queues.
//!
//! Only the main thread touches it (commands, timers, type callbacks that Redis calls on
//! the main thread); the mutex makes that safe to state rather than to assume, and is
//! never contended.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use redis_module::RedisModuleTimerID;

use crate::blocking::Waiters;
use crate::logic::deadlines::Deadlines;
use crate::logic::tokens::TokenClock;
use crate::logic::Millis;

pub struct Globals {
    pub tokens: TokenClock,
    pub deadlines: Deadlines,
    /// The one expiry timer, and the deadline it is armed for.
    pub timer: Option<(RedisModuleTimerID, Millis)>,
    pub waiters: Waiters,
}

static GLOBALS: Mutex<Option<Globals>> = Mutex::new(None);

/// The global state, created on first use.
pub fn with<R>(f: impl FnOnce(&mut Globals) -> R) -> R {
    let mut guard: MutexGuard<'_, Option<Globals>> =
        GLOBALS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let globals = guard.get_or_insert_with(|| Globals {
        tokens: TokenClock::default(),
        deadlines: Deadlines::default(),
        timer: None,
        waiters: Waiters::default(),
    });
    f(globals)
}

/// Milliseconds since the Unix epoch on the server's own clock (the clock of key TTLs), so
/// that module and server never disagree: not even when a test fakes the server's clock
/// and the server loads modules with `RTLD_DEEPBIND` (Valkey 8.1+), which keeps the fake
/// from the module's own libc calls.
pub fn now_ms() -> Millis {
    if let Some(server_ms) = unsafe { redis_module::raw::RedisModule_Milliseconds } {
        return unsafe { server_ms() };
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
