//! Replication and the AOF: every state change leaves the master as an effect command
//! that sets the exact resulting state (the chosen token, the absolute deadline), never
//! as the request that produced it, so replicas and AOF replays reach the same state
//! whatever their clocks say.
//!
//! Each kind defines its effect commands (name, arguments, what applying one does) once,
//! as `Command`s in its persistence file; the same entry is registered, replicated and
//! written to a rewritten AOF. A lock that became free leaves as `DEL key`, whatever its
//! kind. Effect commands are internal: only a master's stream or AOF loading may run
//! them, so no client can set a token by hand.

use std::ffi::CStr;

use redis_module::{Context, ContextFlags, RedisString};

use crate::args;
use crate::machinery::commands::Command;
use crate::error::{Error, Result};
use crate::ffi::{self, AofOut};

/// One argument of an effect: bytes, or an integer written as Redis would.
pub enum Arg<'a> {
    Bytes(&'a [u8]),
    Int(i64),
}

/// Formats the arguments of an effect into byte strings without allocating.
fn with_bytes<R>(args: &[Arg], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut digits = [[0u8; 20]; ffi::MAX_EFFECT_ARGS];
    let mut lens = [0usize; ffi::MAX_EFFECT_ARGS];
    for (i, arg) in args.iter().enumerate() {
        if let Arg::Int(v) = arg {
            lens[i] = format_i64(*v, &mut digits[i]);
        }
    }
    let mut bytes: [&[u8]; ffi::MAX_EFFECT_ARGS] = [&[]; ffi::MAX_EFFECT_ARGS];
    for (i, arg) in args.iter().enumerate() {
        bytes[i] = match arg {
            Arg::Bytes(b) => b,
            Arg::Int(_) => &digits[i][20 - lens[i]..],
        };
    }
    f(&bytes[..args.len()])
}

/// Writes `v` right-aligned into `buf`; returns its length.
fn format_i64(v: i64, buf: &mut [u8; 20]) -> usize {
    let mut n = v.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    buf.len() - at
}

/// Propagates `effect key args...`.
pub fn emit(ctx: &Context, effect: &Command, key: &RedisString, args: &[Arg]) {
    with_bytes(args, |bytes| ffi::replicate(ctx, effect.name, key, bytes));
}

/// Writes `effect key args...` into a rewritten AOF.
pub fn emit_aof(out: &mut AofOut, effect: &Command, args: &[Arg]) {
    with_bytes(args, |bytes| ffi::emit_aof(out, effect.name, bytes));
}

/// Propagates `DEL key`: the lock is free (a free lock has no key on replicas and in
/// the AOF).
pub fn emit_del(ctx: &Context, key: &RedisString) {
    with_bytes(&[], |bytes| ffi::replicate(ctx, c"DEL", key, bytes));
}

/// Refuses an effect command from anyone but a master's stream or AOF loading.
pub fn require_internal(ctx: &Context, name: &CStr) -> Result<()> {
    if ctx.get_flags().intersects(ContextFlags::REPLICATED | ContextFlags::LOADING) {
        return Ok(());
    }
    Err(Error::InternalOnly(name.to_string_lossy().to_uppercase()))
}

/// An integer argument of an effect: any malformed one is a syntax error.
pub fn int(arg: &RedisString) -> Result<i64> {
    args::parse_i64(arg.as_slice()).ok_or(Error::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_as_redis_parses_them() {
        for v in [0, 7, -7, 1 << 40, i64::MAX, i64::MIN] {
            let mut buf = [0u8; 20];
            let len = format_i64(v, &mut buf);
            assert_eq!(&buf[20 - len..], v.to_string().as_bytes());
        }
    }
}
