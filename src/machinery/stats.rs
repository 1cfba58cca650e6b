//! What `INFO fencelock` shows: keys of each kind, counters since start, and the wait
//! times of served waiters, all in fixed memory. Plain atomics, read without a lock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::ffi::InfoField;
use crate::logic::tokens::issued_at;
use crate::logic::{Millis, Token};

/// Live values of each kind (keys, including a vacant key kept for its waiters).
pub static MUTEXES: AtomicI64 = AtomicI64::new(0);
pub static RWLOCKS: AtomicI64 = AtomicI64::new(0);
pub static SEMAPHORES: AtomicI64 = AtomicI64::new(0);
pub static FENCES: AtomicI64 = AtomicI64::new(0);

static GRANTS: AtomicU64 = AtomicU64::new(0);
static HANDOFFS: AtomicU64 = AtomicU64::new(0);
static RELEASES: AtomicU64 = AtomicU64::new(0);
static EXTENDS: AtomicU64 = AtomicU64::new(0);
static LEASES_EXPIRED: AtomicU64 = AtomicU64::new(0);
static WAIT_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static STALE_REFUSALS: AtomicU64 = AtomicU64::new(0);
static TOKENS_ISSUED: AtomicU64 = AtomicU64::new(0);

/// A fresh grant (a new token); `handoff` when it went to a client that waited.
pub fn granted(handoff: bool) {
    GRANTS.fetch_add(1, Relaxed);
    TOKENS_ISSUED.fetch_add(1, Relaxed);
    if handoff {
        HANDOFFS.fetch_add(1, Relaxed);
    }
}

/// A token from `FENCE.NEXT`.
pub fn fence_token() {
    TOKENS_ISSUED.fetch_add(1, Relaxed);
}

pub fn released() {
    RELEASES.fetch_add(1, Relaxed);
}

pub fn extended() {
    EXTENDS.fetch_add(1, Relaxed);
}

/// The server ended a key's lease(s) that ran out (by its timer, or in the command that
/// found them over).
pub fn lease_expired() {
    LEASES_EXPIRED.fetch_add(1, Relaxed);
}

pub fn wait_timed_out() {
    WAIT_TIMEOUTS.fetch_add(1, Relaxed);
}

pub fn stale_refused() {
    STALE_REFUSALS.fetch_add(1, Relaxed);
}

/// A hold granted with `token` ended (released, or its lease ran out) at `now`.
pub fn held(token: Token, now: Millis) {
    HOLDS_MS.record((now - issued_at(token)).max(0) as u64);
}

/// A waiter was served after waiting `waited`.
pub fn waited(waited: Duration) {
    WAITS.record(waited.as_micros().min(u64::MAX as u128) as u64);
}

/// Wait times in microseconds: a count per power-of-two bucket, and the largest.
pub struct Histogram {
    buckets: [AtomicU64; 64],
    max: AtomicU64,
}

static WAITS: Histogram = Histogram::new();
/// Hold times in milliseconds.
static HOLDS_MS: Histogram = Histogram::new();

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { buckets: [const { AtomicU64::new(0) }; 64], max: AtomicU64::new(0) }
    }

    pub fn record(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Relaxed);
        self.max.fetch_max(value, Relaxed);
    }

    /// The `q`-quantile (0 < q <= 1), as the upper bound of its bucket (at most the
    /// largest value seen); 0 when nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(i).min(self.max());
            }
        }
        self.max()
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }
}

/// Bucket 0 holds 0; bucket i holds [2^(i-1), 2^i).
fn bucket_of(value: u64) -> usize {
    (64 - value.leading_zeros() as usize).min(63)
}

fn upper_bound(bucket: usize) -> u64 {
    match bucket {
        0 => 0,
        63 => u64::MAX,
        i => (1u64 << i) - 1,
    }
}

/// The fields of `INFO fencelock`, given what only the caller can read (the waiting
/// queues, the expiry index, the token clock).
pub fn fields(waiting_clients: usize, keys_with_waiters: usize, expiry_index_keys: usize, expiry_lag_ms: i64, token_floor: i64) -> Vec<InfoField> {
    use InfoField::*;
    vec![
        Int(c"mutexes", MUTEXES.load(Relaxed)),
        Int(c"rwlocks", RWLOCKS.load(Relaxed)),
        Int(c"semaphores", SEMAPHORES.load(Relaxed)),
        Int(c"fences", FENCES.load(Relaxed)),
        Uint(c"waiting_clients", waiting_clients as u64),
        Uint(c"keys_with_waiters", keys_with_waiters as u64),
        Uint(c"grants", GRANTS.load(Relaxed)),
        Uint(c"handoffs", HANDOFFS.load(Relaxed)),
        Uint(c"releases", RELEASES.load(Relaxed)),
        Uint(c"extends", EXTENDS.load(Relaxed)),
        Uint(c"leases_expired", LEASES_EXPIRED.load(Relaxed)),
        Uint(c"wait_timeouts", WAIT_TIMEOUTS.load(Relaxed)),
        Uint(c"stale_refusals", STALE_REFUSALS.load(Relaxed)),
        Uint(c"tokens_issued", TOKENS_ISSUED.load(Relaxed)),
        Int(c"token_floor", token_floor),
        Uint(c"expiry_index_keys", expiry_index_keys as u64),
        Int(c"expiry_lag_ms", expiry_lag_ms),
        Uint(c"wait_us_p50", WAITS.quantile(0.5)),
        Uint(c"wait_us_p99", WAITS.quantile(0.99)),
        Uint(c"wait_us_max", WAITS.max()),
        Uint(c"hold_ms_p50", HOLDS_MS.quantile(0.5)),
        Uint(c"hold_ms_p99", HOLDS_MS.quantile(0.99)),
        Uint(c"hold_ms_max", HOLDS_MS.max()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds_capped_by_the_largest_value() {
        let h = Histogram::new();
        assert_eq!((h.quantile(0.5), h.max()), (0, 0));
        for v in [1, 2, 3, 100, 1000] {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 3, "the third of five values is in [2, 4)");
        assert_eq!(h.quantile(0.99), 1000, "capped by the largest");
        assert_eq!(h.max(), 1000);
        h.record(0);
        assert_eq!(h.quantile(0.01), 0);
    }
}
