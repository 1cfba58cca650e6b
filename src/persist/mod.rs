//! Persistence and replication, one file per lock kind (named like its command file):
//! the Redis data type, its RDB layout, AOF rewrite, digest and memory callbacks, its
//! effect commands, and the `Kind` implementation the shared machinery uses.
//!
//! RDB layouts are at encoding version 1 (`clock::ENCODING_VERSION`); each file states
//! its own. Every token read from disk or from a master raises the token floor, so tokens
//! issued after a restart or a full resync are above every token stored.

pub mod fence;
pub mod lock;
pub mod rwlock;
pub mod sem;

use crate::machinery::clock;
use crate::logic::{tokens, Millis, MAX_TTL_MS};

/// A stored hold could have been made by this module: a token from a clock, a lease no
/// longer than the contract allows from about now, a hold count an i64 can report.
/// Anything else is a corrupt payload (RESTORE of a forged DUMP) and is refused (`None`).
/// A deadline up to 30 days past the longest lease (a master's clock ahead of ours) is
/// brought back to now + 2^40: a lease never grows by being loaded.
pub fn sane_hold(token: i64, deadline: Millis, holds: u64) -> Option<Millis> {
    let now = clock::now_ms();
    let longest = now.saturating_add(MAX_TTL_MS);
    let sane = tokens::plausible(token, now)
        && (0..=longest.saturating_add(30 * 86_400_000)).contains(&deadline)
        && (1..=i64::MAX as u64).contains(&holds);
    sane.then(|| deadline.min(longest))
}
