//! The lock logic, free of Redis: state machines and the token clock.
//!
//! Everything here takes the current time as an argument, so unit tests drive it
//! with a fake clock and no server. The Redis glue (`crate::lock`, `crate::fence`, ...)
//! only parses, calls into this, replies and propagates the resulting state.

pub mod deadlines;
pub mod fence;
pub mod mutex;
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
