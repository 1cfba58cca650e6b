//! The module's configs, registered with Redis so that `CONFIG GET/SET/REWRITE`, the
//! config file and `MODULE LOADEX ... CONFIG` work on them as on Redis's own. Each is
//! named `fencelock.<name>`; Redis checks the range and answers a bad value with an
//! error, changing nothing.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use redis_module::Context;

use crate::ffi::{self, NumericConfig};
use crate::logic::MAX_TTL_MS;

/// The longest lease an acquire or extend may ask for, in ms.
static MAX_TTL: AtomicI64 = AtomicI64::new(MAX_TTL_MS);
/// How long one event-loop pass may spend ending due leases, in microseconds.
static EXPIRY_SLICE_US: AtomicI64 = AtomicI64::new(1000);
/// How many clients may wait on one key; 0: no limit.
static MAX_WAITERS: AtomicI64 = AtomicI64::new(0);
/// How long a server that may have lost grants (just promoted, or started from data that
/// may miss the last ones) grants nothing, in ms; 0: no grace.
static TAKEOVER_GRACE: AtomicI64 = AtomicI64::new(0);

const CONFIGS: &[NumericConfig] = &[
    NumericConfig { name: c"max-ttl", value: &MAX_TTL, default: MAX_TTL_MS, min: 1, max: MAX_TTL_MS },
    NumericConfig { name: c"expiry-slice-us", value: &EXPIRY_SLICE_US, default: 1000, min: 10, max: 1_000_000 },
    NumericConfig { name: c"max-waiters", value: &MAX_WAITERS, default: 0, min: 0, max: i32::MAX as i64 },
    NumericConfig { name: c"takeover-grace", value: &TAKEOVER_GRACE, default: 0, min: 0, max: MAX_TTL_MS },
];

/// Registers every config and applies the values given at load (config file, `ARGS`
/// of `loadmodule`, `MODULE LOADEX ... CONFIG`).
pub fn register(ctx: &Context) -> Result<(), String> {
    for config in CONFIGS {
        ffi::register_numeric_config(ctx, config)?;
    }
    ffi::load_configs(ctx)
}

pub fn max_ttl() -> i64 {
    MAX_TTL.load(Relaxed)
}

pub fn expiry_slice() -> std::time::Duration {
    std::time::Duration::from_micros(EXPIRY_SLICE_US.load(Relaxed) as u64)
}

/// `None`: no limit.
pub fn max_waiters() -> Option<usize> {
    Some(MAX_WAITERS.load(Relaxed) as usize).filter(|n| *n > 0)
}

pub fn takeover_grace() -> std::time::Duration {
    std::time::Duration::from_millis(TAKEOVER_GRACE.load(Relaxed) as u64)
}
