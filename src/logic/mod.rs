//! The lock logic, free of Redis: state machines and the token clock.
//!
//! Everything here takes the current time as an argument, so unit tests drive it
//! with a fake clock and no server. The Redis glue only parses, calls into this, replies
//! and propagates the resulting state.

pub mod deadlines;
pub mod fence;
pub mod mutex;
pub mod owner;
pub mod rwlock;
pub mod semaphore;
pub mod tokens;
pub mod waiters;

/// Milliseconds since the Unix epoch, on the server's wall clock.
pub type Millis = i64;

/// A fencing token: positive, fits in a signed 64-bit integer.
pub type Token = i64;

/// The longest lease the contract allows: 2^40 ms (about 35 years).
pub const MAX_TTL_MS: i64 = 1 << 40;

/// The largest hold count: what a reply, an effect and the RDB can carry (an i64). A
/// reentry at it keeps it there rather than wrap.
pub const MAX_HOLDS: u64 = i64::MAX as u64;

/// One more hold.
pub fn one_more(holds: u64) -> u64 {
    holds.saturating_add(1).min(MAX_HOLDS)
}
