//! The clocks: the server's wall clock, on which leases end, and the token clock that
//! every fencing token comes from (see `logic::tokens`).
//!
//! The token clock is one per server. Its floor is saved as RDB aux data of the mutex
//! type (`TokenFloor`) and raised by every token loaded or replicated.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ffi::{self, AuxData, RdbIn, RdbOut};
use crate::logic::tokens::TokenClock;
use crate::logic::{Millis, Token};

/// Never held across a call into Redis (see `machinery`).
static TOKENS: Mutex<TokenClock> = Mutex::new(TokenClock::new());

/// Milliseconds since the Unix epoch on the server's own clock (the clock of key TTLs),
/// so that module and server never disagree: not even when a test fakes the server's
/// clock and the server loads modules with `RTLD_DEEPBIND` (Valkey 8.1+), which keeps the
/// fake from the module's own libc calls.
pub fn now_ms() -> Millis {
    ffi::server_ms().unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
    })
}

/// Runs `f` with the token clock. `f` must not call Redis.
pub fn with_tokens<R>(f: impl FnOnce(&mut TokenClock) -> R) -> R {
    f(&mut TOKENS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// A token issued elsewhere (loaded, replicated): later tokens exceed it.
pub fn observe(token: Token) {
    let now = now_ms();
    with_tokens(|t| t.observe(token, now));
}

/// The token floor, as RDB aux data.
pub struct TokenFloor;

/// The encoding version of the aux data (and of every data type's RDB layout).
pub const ENCODING_VERSION: i32 = 1;

impl AuxData for TokenFloor {
    fn save(out: &mut RdbOut) {
        out.signed(with_tokens(|t| t.floor()));
    }

    fn load(input: &mut RdbIn, encver: i32) -> bool {
        if encver != ENCODING_VERSION {
            return false;
        }
        input.signed().map(observe).is_some()
    }
}
