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
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

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
    if !read(ctx) {
        return count_unread(ctx);
    }
    with_bytes(args, |bytes| ffi::replicate(ctx, effect.name, key, bytes));
}

/// Writes `effect key args...` into a rewritten AOF.
pub fn emit_aof(out: &mut AofOut, effect: &Command, args: &[Arg]) {
    with_bytes(args, |bytes| ffi::emit_aof(out, effect.name, bytes));
}

/// Propagates `DEL key`: the lock is free (a free lock has no key on replicas and in
/// the AOF).
pub fn emit_del(ctx: &Context, key: &RedisString) {
    if !read(ctx) {
        return count_unread(ctx);
    }
    with_bytes(&[], |bytes| ffi::replicate(ctx, c"DEL", key, bytes));
}

// ---- whether anyone reads an effect ------------------------------------------------------
//
// Redis hands an effect to the AOF when it is on, and to the replication stream when
// this master has a backlog or replicas; otherwise it drops it. Building one costs more
// than the rest of a grant (the command looked up by name, an object per argument), so
// an effect nobody can read is not built. Two rules keep that exact:
// - It must never be skipped when Redis would keep it. The AOF is asked on every effect
//   (a context flag); a stream is assumed from any event after which one may exist (a
//   fork: a replica's full sync, with the backlog made just before or just after it; a
//   role change; loading, which makes a backlog on newer servers; a replica coming or
//   going) and forgotten only when INFO shows none, looked at from the event loop. A
//   backlog made by a replica's SYNC before its fork only holds writes its snapshot
//   has, and a backlog that is freed takes a new replication id, so no replica can ask
//   for what was skipped.
// - The change still counts for the save points (`save 60 1000`): `RM_Replicate` adds
//   one to Redis's change counter, and `RM_ReplicateVerbatim` adds the same one while
//   Redis drops what it would propagate (the original command) for the same reason
//   the effect was skipped. Inside MULTI/EXEC or a script the effect is always built:
//   a later command of the same transaction may turn the AOF on before Redis, on some
//   servers, decides what to propagate.

/// A replication stream may exist (see above). Set at load: the module may be loaded
/// into a server that has one.
static STREAM_MAY_EXIST: AtomicBool = AtomicBool::new(true);
/// When `look_for_stream` last looked (server ms).
static LAST_LOOK: AtomicI64 = AtomicI64::new(0);

/// How often the event loop looks whether a stream that may exist still does.
const LOOK_EVERY_MS: i64 = 1000;

/// Whether Redis keeps an effect emitted now.
fn read(ctx: &Context) -> bool {
    STREAM_MAY_EXIST.load(Relaxed) || ctx.get_flags().intersects(ContextFlags::AOF | ContextFlags::MULTI | ContextFlags::LUA)
}

/// Counts an unread effect as a change, as building it would have.
fn count_unread(ctx: &Context) {
    ctx.replicate_verbatim();
}

/// An event after which a replication stream may exist.
pub fn stream_may_exist() {
    STREAM_MAY_EXIST.store(true, Relaxed);
}

/// From the event loop: looks (at most every `LOOK_EVERY_MS`) whether a stream that may
/// exist does; a master with neither backlog nor replicas has none.
pub fn look_for_stream(ctx: &Context, now: i64) {
    if !STREAM_MAY_EXIST.load(Relaxed) || now - LAST_LOOK.load(Relaxed) < LOOK_EVERY_MS {
        return;
    }
    LAST_LOOK.store(now, Relaxed);
    if !ffi::replication_stream_exists(ctx) {
        STREAM_MAY_EXIST.store(false, Relaxed);
    }
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
