//! The Redis data types and their persistence callbacks: RDB, AOF rewrite, digest,
//! memory usage, free, and the key-removal hook that keeps the expiry index tidy.
//!
//! RDB layouts (encoding version 1):
//! - `lockmutex`: owner (buffer), token (signed), deadline ms (signed), holds (unsigned).
//!   An empty owner means a free lock (only saved when a snapshot catches a lock that
//!   was freed while waiters were being served).
//! - `lockrwlck`: hold count (unsigned), then per hold: mode (unsigned, 0 write, 1 read),
//!   owner (buffer), token (signed), deadline ms (signed), holds (unsigned).
//! - `lockfence`: highest (signed), issued (signed).
//! - aux data (before keys): the token floor (signed).
//!
//! Every token read from disk or from a master raises the token floor, so tokens issued
//! after a restart or a full resync are above every token stored.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::ptr;

use redis_module::{raw, native_types::RedisType, RedisString};

use crate::{blocking, effects, keyspace};
use crate::logic::fence::Fence;
use crate::logic::mutex::{Holder, Mutex};
use crate::logic::rwlock::{Hold, Mode, RwLock};
use crate::state;

const ENCODING_VERSION: i32 = 1;
/// The type-methods layout Redis 7.0 knows (it reads no further).
const TYPE_METHOD_VERSION: u64 = 4;

pub static MUTEX_TYPE: RedisType = RedisType::new(
    "lockmutex",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: TYPE_METHOD_VERSION,
        rdb_load: Some(mutex_rdb_load),
        rdb_save: Some(mutex_rdb_save),
        aof_rewrite: Some(mutex_aof_rewrite),
        mem_usage: Some(mutex_mem_usage),
        digest: Some(mutex_digest),
        free: Some(free_boxed::<Mutex>),
        aux_load: Some(floor_aux_load),
        aux_save: Some(floor_aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: Some(mutex_unlink),
        copy2: None,
        aux_save2: None,
    },
);

pub static RWLOCK_TYPE: RedisType = RedisType::new(
    "lockrwlck",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: TYPE_METHOD_VERSION,
        rdb_load: Some(rwlock_rdb_load),
        rdb_save: Some(rwlock_rdb_save),
        aof_rewrite: Some(rwlock_aof_rewrite),
        mem_usage: Some(rwlock_mem_usage),
        digest: Some(rwlock_digest),
        free: Some(free_boxed::<RwLock>),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: Some(rwlock_unlink),
        copy2: None,
        aux_save2: None,
    },
);

pub static FENCE_TYPE: RedisType = RedisType::new(
    "lockfence",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: TYPE_METHOD_VERSION,
        rdb_load: Some(fence_rdb_load),
        rdb_save: Some(fence_rdb_save),
        aof_rewrite: Some(fence_aof_rewrite),
        mem_usage: Some(fence_mem_usage),
        digest: Some(fence_digest),
        free: Some(free_boxed::<Fence>),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    },
);

// ---- shared ----------------------------------------------------------------------

unsafe extern "C" fn free_boxed<T>(value: *mut c_void) {
    if !value.is_null() {
        drop(Box::from_raw(value.cast::<T>()));
    }
}

unsafe fn value_ref<'a, T>(value: *const c_void) -> Option<&'a T> {
    value.cast::<T>().as_ref()
}

/// A value loaded from RDB (a restart, a full sync, RESTORE, a slot migration): the key
/// it lands under must be tracked, which takes the keyspace subscription.
fn boxed<T>(value: T) -> *mut c_void {
    keyspace::subscribe_once();
    Box::into_raw(Box::new(value)).cast()
}

/// Writes one command into a rewritten AOF. `args` follow the key.
unsafe fn emit_aof(aof: *mut raw::RedisModuleIO, cmd: &str, key: *mut raw::RedisModuleString, args: &[&[u8]]) {
    let Some(emit) = raw::RedisModule_EmitAOF else { return };
    let cmd = CString::new(cmd).expect("command names have no NUL");
    // EmitAOF is variadic with a fixed format; our effects have 2 to 5 arguments.
    let a: Vec<(*const u8, usize)> = args.iter().map(|s| (s.as_ptr(), s.len())).collect();
    match a.as_slice() {
        [a0, a1] => emit(aof, cmd.as_ptr(), c"sbb".as_ptr(), key, a0.0, a0.1, a1.0, a1.1),
        [a0, a1, a2, a3] => emit(
            aof, cmd.as_ptr(), c"sbbbb".as_ptr(), key,
            a0.0, a0.1, a1.0, a1.1, a2.0, a2.1, a3.0, a3.1,
        ),
        [a0, a1, a2, a3, a4] => emit(
            aof, cmd.as_ptr(), c"sbbbbb".as_ptr(), key,
            a0.0, a0.1, a1.0, a1.1, a2.0, a2.1, a3.0, a3.1, a4.0, a4.1,
        ),
        _ => unreachable!("no effect has {} arguments", args.len()),
    };
}

unsafe fn digest_i64(md: *mut raw::RedisModuleDigest, v: i64) {
    if let Some(add) = raw::RedisModule_DigestAddLongLong {
        add(md, v);
    }
}

unsafe fn digest_bytes(md: *mut raw::RedisModuleDigest, b: &[u8]) {
    if let Some(add) = raw::RedisModule_DigestAddStringBuffer {
        add(md, b.as_ptr().cast_mut().cast(), b.len());
    }
}

unsafe fn digest_end(md: *mut raw::RedisModuleDigest) {
    if let Some(end) = raw::RedisModule_DigestEndSequence {
        end(md);
    }
}

/// A stored hold could have been made by this module: a token from a clock, a lease no
/// longer than the contract allows from about now, a hold count an i64 can report.
/// Anything else is a corrupt payload (RESTORE of a forged DUMP) and is refused (`None`).
/// A deadline up to 30 days past the longest lease (a master's clock ahead of ours) is
/// brought back to now + 2^40: a lease never grows by being loaded.
fn sane_hold(token: i64, deadline: i64, holds: u64) -> Option<i64> {
    let now = state::now_ms();
    let longest = now.saturating_add(crate::logic::MAX_TTL_MS);
    let sane = crate::logic::tokens::plausible(token, now)
        && (0..=longest.saturating_add(30 * 86_400_000)).contains(&deadline)
        && (1..=i64::MAX as u64).contains(&holds);
    sane.then(|| deadline.min(longest))
}

// ---- token floor (aux) -----------------------------------------------------------

unsafe extern "C" fn floor_aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    raw::save_signed(rdb, state::with(|g| g.tokens.floor()));
}

unsafe extern "C" fn floor_aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    if encver != ENCODING_VERSION {
        return raw::REDISMODULE_ERR as c_int;
    }
    match raw::load_signed(rdb) {
        Ok(floor) => {
            state::with(|g| g.tokens.observe(floor, state::now_ms()));
            raw::REDISMODULE_OK as c_int
        }
        Err(_) => raw::REDISMODULE_ERR as c_int,
    }
}

// ---- mutex -----------------------------------------------------------------------

unsafe extern "C" fn mutex_rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(m) = value_ref::<Mutex>(value) else { return };
    match m.stored_holder() {
        Some(h) => {
            raw::save_slice(rdb, &h.owner);
            raw::save_signed(rdb, h.token);
            raw::save_signed(rdb, h.deadline);
            raw::save_unsigned(rdb, h.holds);
        }
        None => {
            raw::save_slice(rdb, b"");
            raw::save_signed(rdb, 0);
            raw::save_signed(rdb, 0);
            raw::save_unsigned(rdb, 0);
        }
    }
}

unsafe extern "C" fn mutex_rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver != ENCODING_VERSION {
        return ptr::null_mut();
    }
    let load = || -> Result<Option<Mutex>, redis_module::error::Error> {
        let owner = raw::load_string_buffer(rdb)?.as_ref().to_vec();
        let token = raw::load_signed(rdb)?;
        let deadline = raw::load_signed(rdb)?;
        let holds = raw::load_unsigned(rdb)?;
        if owner.is_empty() && token == 0 && holds == 0 {
            return Ok(Some(Mutex::default()));
        }
        let Some(deadline) = sane_hold(token, deadline, holds).filter(|_| !owner.is_empty()) else {
            return Ok(None);
        };
        state::with(|g| g.tokens.observe(token, state::now_ms()));
        Ok(Some(Mutex::with_holder(Holder { owner, token, deadline, holds })))
    };
    match load() {
        Ok(Some(m)) => boxed(m),
        _ => ptr::null_mut(),
    }
}

unsafe extern "C" fn mutex_aof_rewrite(aof: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, value: *mut c_void) {
    let Some(h) = value_ref::<Mutex>(value).and_then(Mutex::stored_holder) else { return };
    let [token, deadline, holds] = [h.token.to_string(), h.deadline.to_string(), h.holds.to_string()];
    emit_aof(aof, effects::MUTEX_EFFECT, key, &[&h.owner, token.as_bytes(), deadline.as_bytes(), holds.as_bytes()]);
}

unsafe extern "C" fn mutex_mem_usage(value: *const c_void) -> usize {
    let owner = value_ref::<Mutex>(value).and_then(Mutex::stored_holder).map_or(0, |h| h.owner.capacity());
    std::mem::size_of::<Mutex>() + owner
}

unsafe extern "C" fn mutex_digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(m) = value_ref::<Mutex>(value) else { return };
    if let Some(h) = m.stored_holder() {
        digest_bytes(md, &h.owner);
        digest_i64(md, h.token);
        digest_i64(md, h.deadline);
        digest_i64(md, h.holds as i64);
    }
    digest_end(md);
}

/// Redis removes a key (DEL, UNLINK, expiry, eviction, overwrite, RENAME's source,
/// MOVE): its lease no longer needs the timer, and whoever waits on the name is served.
/// Every removal passes here, so no keyspace event is needed for any of them.
unsafe fn on_unlink(ctx: *mut raw::RedisModuleKeyOptCtx, deadline: Option<crate::logic::Millis>) {
    let (Some(name), Some(db)) = (raw::RedisModule_GetKeyNameFromOptCtx, raw::RedisModule_GetDbIdFromOptCtx) else {
        return;
    };
    let key = RedisString::string_as_slice(name(ctx));
    let db = db(ctx);
    if let Some(deadline) = deadline {
        state::with(|g| g.deadlines.remove(deadline, db, key));
    }
    blocking::on_key_removed(db, key);
}

unsafe extern "C" fn mutex_unlink(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    on_unlink(ctx, value_ref::<Mutex>(value).and_then(Mutex::deadline));
}

// ---- read-write lock ------------------------------------------------------------

fn mode_code(mode: Mode) -> u64 {
    match mode {
        Mode::Write => 0,
        Mode::Read => 1,
    }
}

unsafe extern "C" fn rwlock_rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(lock) = value_ref::<RwLock>(value) else { return };
    raw::save_unsigned(rdb, lock.len() as u64);
    for ((mode, owner), hold) in lock.stored() {
        raw::save_unsigned(rdb, mode_code(*mode));
        raw::save_slice(rdb, owner);
        raw::save_signed(rdb, hold.token);
        raw::save_signed(rdb, hold.deadline);
        raw::save_unsigned(rdb, hold.holds);
    }
}

unsafe extern "C" fn rwlock_rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver != ENCODING_VERSION {
        return ptr::null_mut();
    }
    let load = || -> Result<Option<RwLock>, redis_module::error::Error> {
        let mut lock = RwLock::default();
        let count = raw::load_unsigned(rdb)?;
        let mut highest = 0;
        for _ in 0..count {
            let mode = match raw::load_unsigned(rdb)? {
                0 => Mode::Write,
                1 => Mode::Read,
                _ => return Ok(None),
            };
            let owner = raw::load_string_buffer(rdb)?.as_ref().to_vec();
            let token = raw::load_signed(rdb)?;
            let deadline = raw::load_signed(rdb)?;
            let holds = raw::load_unsigned(rdb)?;
            let sane = sane_hold(token, deadline, holds).filter(|_| !owner.is_empty() && lock.get(mode, &owner).is_none());
            let Some(deadline) = sane else {
                return Ok(None);
            };
            highest = highest.max(token);
            lock.set(mode, &owner, Some(Hold { token, deadline, holds }));
        }
        lock.take_changes();
        if !lock.exclusive() {
            return Ok(None);
        }
        state::with(|g| g.tokens.observe(highest, state::now_ms()));
        Ok(Some(lock))
    };
    match load() {
        Ok(Some(lock)) => boxed(lock),
        _ => ptr::null_mut(),
    }
}

unsafe extern "C" fn rwlock_aof_rewrite(aof: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, value: *mut c_void) {
    let Some(lock) = value_ref::<RwLock>(value) else { return };
    for ((mode, owner), h) in lock.stored() {
        let [token, deadline, holds] = [h.token.to_string(), h.deadline.to_string(), h.holds.to_string()];
        emit_aof(
            aof,
            effects::RW_HOLD_EFFECT,
            key,
            &[mode.name().as_bytes(), owner, token.as_bytes(), deadline.as_bytes(), holds.as_bytes()],
        );
    }
}

unsafe extern "C" fn rwlock_mem_usage(value: *const c_void) -> usize {
    // Each hold is stored twice (by holder and by deadline), with tree overhead.
    let per_hold = |owner: &[u8]| 2 * owner.len() + 96;
    let holds = value_ref::<RwLock>(value).map_or(0, |l| l.stored().map(|((_, o), _)| per_hold(o)).sum());
    std::mem::size_of::<RwLock>() + holds
}

unsafe extern "C" fn rwlock_digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(lock) = value_ref::<RwLock>(value) else { return };
    for ((mode, owner), h) in lock.stored() {
        digest_i64(md, mode_code(*mode) as i64);
        digest_bytes(md, owner);
        digest_i64(md, h.token);
        digest_i64(md, h.deadline);
        digest_i64(md, h.holds as i64);
    }
    digest_end(md);
}

unsafe extern "C" fn rwlock_unlink(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    on_unlink(ctx, value_ref::<RwLock>(value).and_then(RwLock::earliest_deadline));
}

// ---- fence -----------------------------------------------------------------------

unsafe extern "C" fn fence_rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(f) = value_ref::<Fence>(value) else { return };
    raw::save_signed(rdb, f.highest);
    raw::save_signed(rdb, f.issued);
}

unsafe extern "C" fn fence_rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver != ENCODING_VERSION {
        return ptr::null_mut();
    }
    let load = || -> Result<Fence, redis_module::error::Error> {
        let highest = raw::load_signed(rdb)?;
        let issued = raw::load_signed(rdb)?;
        Ok(Fence { highest, issued })
    };
    match load() {
        Ok(f) if f.highest >= 0 && f.issued >= 0 && f.issued <= f.highest => {
            state::with(|g| g.tokens.observe(f.issued, state::now_ms()));
            boxed(f)
        }
        _ => ptr::null_mut(),
    }
}

unsafe extern "C" fn fence_aof_rewrite(aof: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, value: *mut c_void) {
    let Some(f) = value_ref::<Fence>(value) else { return };
    let [highest, issued] = [f.highest.to_string(), f.issued.to_string()];
    emit_aof(aof, effects::FENCE_EFFECT, key, &[highest.as_bytes(), issued.as_bytes()]);
}

unsafe extern "C" fn fence_mem_usage(_value: *const c_void) -> usize {
    std::mem::size_of::<Fence>()
}

unsafe extern "C" fn fence_digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(f) = value_ref::<Fence>(value) else { return };
    digest_i64(md, f.highest);
    digest_i64(md, f.issued);
    digest_end(md);
}

// ---- which of our types a key holds ------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Mutex,
    RwLock,
    Fence,
    Other,
}

pub fn kind_of(key: &redis_module::key::RedisKey) -> Kind {
    // `get_value` errs exactly when the key holds another type.
    if key.key_type() == raw::KeyType::Empty {
        Kind::Missing
    } else if key.get_value::<Mutex>(&MUTEX_TYPE).is_ok() {
        Kind::Mutex
    } else if key.get_value::<RwLock>(&RWLOCK_TYPE).is_ok() {
        Kind::RwLock
    } else if key.get_value::<Fence>(&FENCE_TYPE).is_ok() {
        Kind::Fence
    } else {
        Kind::Other
    }
}
