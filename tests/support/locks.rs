//! The module's commands through the `redis` crate: `LOCK.*`, `RWLOCK.*`, `FENCE.*`, `SEM.*`, their
//! replies parsed and checked against the contract's shapes, and the contract's texts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::Value;

use super::cmd::{exists, int, pairs, raw, raws, value_bytes, value_err, value_int, value_text, wait_until};
use super::server::Server;

/// A lease long enough never to end during a test (10 minutes).
pub const LONG_TTL: i64 = 600_000;
/// The largest ttl the contract allows: 2^40 ms.
pub const MAX_TTL: i64 = 1 << 40;
/// The contract's text for a bad ttl.
pub const BAD_TTL: &str = "ERR ttl must be an integer between 1 and 1099511627776";
pub const EMPTY_OWNER: &str = "ERR owner must not be empty";
pub const BAD_TOKEN: &str = "ERR token must be a positive integer";
pub const SYNTAX: &str = "ERR syntax error";

/// How long any awaited effect may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Tokens must survive a round trip through a double (Lua, JavaScript).
pub const TOKEN_EXACT_IN_DOUBLE: i64 = 1 << 53;

/// The wall-clock part of a token issued at `wall_ms`: `(wall_ms - 2025-01-01) << 12`
/// (the module's token clock; tokens stay below 2^53 until 2094).
pub fn token_wall_part(wall_ms: i64) -> i64 {
    (wall_ms - 1_735_689_600_000).max(0) << 12
}

// ---------------------------------------------------------------------------------------
// Mutex
// ---------------------------------------------------------------------------------------

/// `LOCK.ACQUIRE`: `Some(token)` when granted, `None` for nil. Panics on an error reply.
#[track_caller]
pub fn acquire(con: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
    acquire_b(con, key.as_bytes(), owner.as_bytes(), ttl)
}

#[track_caller]
pub fn acquire_b(con: &mut redis::Connection, key: &[u8], owner: &[u8], ttl: i64) -> Option<i64> {
    let ttl = ttl.to_string();
    let v = raw(con, &[b"LOCK.ACQUIRE", key, owner, ttl.as_bytes()]);
    match v {
        Value::Nil => None,
        Value::Int(t) => {
            assert!(t > 0, "token must be positive, got {t}");
            Some(t)
        }
        other => panic!(
            "LOCK.ACQUIRE {} {} {ttl} answered {other:?}, expected an integer or nil",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(owner)
        ),
    }
}

/// `LOCK.ACQUIRE` that must be granted.
#[track_caller]
pub fn grant(con: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
    acquire(con, key, owner, ttl).unwrap_or_else(|| panic!("LOCK.ACQUIRE {key} {owner} {ttl} was not granted"))
}

#[track_caller]
pub fn release(con: &mut redis::Connection, key: &str, owner: &str) -> i64 {
    int(con, &["LOCK.RELEASE", key, owner])
}

#[track_caller]
pub fn extend(con: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
    int(con, &["LOCK.EXTEND", key, owner, &ttl.to_string()])
}

#[derive(Debug, Clone, PartialEq)]
pub struct LockInfo {
    pub owner: Option<Vec<u8>>,
    pub token: i64,
    pub ttl: i64,
    pub holds: i64,
    pub waiters: i64,
}

impl LockInfo {
    pub fn owner_str(&self) -> String {
        String::from_utf8_lossy(self.owner.as_deref().unwrap_or(b"<nil>")).into_owned()
    }
}

/// Turns a `LOCK.INFO` reply into a `LockInfo` (None for nil), checking its shape.
#[track_caller]
pub fn parse_lock_info(v: &Value) -> Option<LockInfo> {
    if let Value::Nil = v {
        return None;
    }
    if let Some(e) = value_err(v) {
        panic!("LOCK.INFO answered an error: {e}");
    }
    let m = pairs(v);
    for f in ["owner", "token", "ttl", "holds", "waiters"] {
        assert!(m.contains_key(f), "LOCK.INFO lacks field {f}: {v:?}");
    }
    let num = |f: &str| value_int(&m[f]).unwrap_or_else(|| panic!("LOCK.INFO field {f} is not an integer: {v:?}"));
    let owner = match &m["owner"] {
        Value::Nil => None,
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        other => panic!("LOCK.INFO owner should be a string or nil, got {other:?}"),
    };
    // A free lock with waiters has no holder: its token and ttl are nil (read as 0 here).
    let (token, ttl) = match owner {
        Some(_) => (num("token"), num("ttl")),
        None => {
            assert!(m["token"] == Value::Nil && m["ttl"] == Value::Nil, "LOCK.INFO of a free lock: {v:?}");
            (0, 0)
        }
    };
    Some(LockInfo { owner, token, ttl, holds: num("holds"), waiters: num("waiters") })
}

#[track_caller]
pub fn lock_info(con: &mut redis::Connection, key: &str) -> Option<LockInfo> {
    lock_info_b(con, key.as_bytes())
}

#[track_caller]
pub fn lock_info_b(con: &mut redis::Connection, key: &[u8]) -> Option<LockInfo> {
    let v = raw(con, &[b"LOCK.INFO", key]);
    parse_lock_info(&v)
}

/// `LOCK.INFO` of a lock that must be held.
#[track_caller]
pub fn held(con: &mut redis::Connection, key: &str) -> LockInfo {
    lock_info(con, key).unwrap_or_else(|| panic!("LOCK.INFO {key} is nil, expected a held lock"))
}

/// The lock is held by `owner` with `token`, one hold and `waiters` waiters.
#[track_caller]
pub fn assert_holder(c: &mut redis::Connection, key: &str, owner: &str, token: i64, waiters: i64) {
    let i = held(c, key);
    assert_eq!(i.owner_str(), owner, "holder of {key}: {i:?}");
    assert_eq!(i.token, token, "token of {key}: {i:?}");
    assert_eq!(i.holds, 1, "holds of {key}: {i:?}");
    assert_eq!(i.waiters, waiters, "waiters of {key}: {i:?}");
}

/// The lock is free, nobody waits and its key is gone.
#[track_caller]
pub fn assert_gone(c: &mut redis::Connection, key: &str) {
    assert_eq!(lock_info(c, key), None, "{key} should be free with no waiters");
    assert!(!exists(c, key), "a free lock nobody waits for left its key {key} behind");
}

// ---------------------------------------------------------------------------------------
// Fences
// ---------------------------------------------------------------------------------------

#[track_caller]
pub fn fence_next(con: &mut redis::Connection, key: &str) -> i64 {
    let t = int(con, &["FENCE.NEXT", key]);
    assert!(t > 0, "FENCE.NEXT must answer a positive token, got {t}");
    t
}

/// `FENCE.CHECK`: `Ok(1)` or `Err(error text)`.
#[track_caller]
pub fn fence_check(con: &mut redis::Connection, key: &str, token: &str) -> Result<i64, String> {
    let v = raws(con, &["FENCE.CHECK", key, token]);
    if let Some(e) = value_err(&v) {
        return Err(e);
    }
    match v {
        Value::Int(i) => Ok(i),
        other => panic!("FENCE.CHECK {key} {token} answered {other:?}"),
    }
}

#[track_caller]
pub fn fence_current(con: &mut redis::Connection, key: &str) -> i64 {
    int(con, &["FENCE.CURRENT", key])
}

// ---------------------------------------------------------------------------------------
// Read-write lock
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub owner: Vec<u8>,
    pub mode: String,
    pub token: i64,
    pub ttl: i64,
    pub holds: i64,
}

#[derive(Debug, Clone)]
pub struct RwInfo {
    pub mode: String,
    pub holders: Vec<Holder>,
    pub waiters: i64,
}

impl RwInfo {
    pub fn get(&self, owner: &str, mode: &str) -> Option<&Holder> {
        self.holders.iter().find(|h| h.owner == owner.as_bytes() && h.mode == mode)
    }

    #[track_caller]
    pub fn holder(&self, owner: &str, mode: &str) -> &Holder {
        self.get(owner, mode).unwrap_or_else(|| panic!("no {mode} holder {owner:?} in {self:?}"))
    }

    /// `(owner, mode)` of every holder, sorted.
    pub fn who(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> =
            self.holders.iter().map(|h| (String::from_utf8_lossy(&h.owner).into_owned(), h.mode.clone())).collect();
        v.sort();
        v
    }
}

/// `(owner, mode)` pairs, sorted, to compare with [`RwInfo::who`].
pub fn who(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list.iter().map(|(o, m)| (o.to_string(), m.to_string())).collect();
    v.sort();
    v
}

/// Parses a `RWLOCK.INFO` reply (None for nil), checking its shape against the contract.
#[track_caller]
pub fn parse_rw_info(v: &Value) -> Option<RwInfo> {
    if let Value::Nil = v {
        return None;
    }
    if let Some(e) = value_err(v) {
        panic!("RWLOCK.INFO answered an error: {e}");
    }
    let m = pairs(v);
    for f in ["mode", "holders", "waiters"] {
        assert!(m.contains_key(f), "RWLOCK.INFO lacks field {f}: {v:?}");
    }
    let mode = value_text(&m["mode"]).unwrap_or_else(|| panic!("RWLOCK.INFO mode is not a string: {v:?}"));
    assert!(["read", "write", "none"].contains(&mode.as_str()), "RWLOCK.INFO mode {mode:?}");
    let waiters = value_int(&m["waiters"]).unwrap_or_else(|| panic!("RWLOCK.INFO waiters not an integer: {v:?}"));
    let Value::Array(entries) = &m["holders"] else { panic!("RWLOCK.INFO holders is not an array: {v:?}") };
    let mut holders = vec![];
    for e in entries {
        let h = pairs(e);
        for f in ["owner", "mode", "token", "ttl", "holds"] {
            assert!(h.contains_key(f), "RWLOCK.INFO holder lacks field {f}: {e:?}");
        }
        let num = |f: &str| value_int(&h[f]).unwrap_or_else(|| panic!("holder field {f} not an integer: {e:?}"));
        let holder = Holder {
            owner: value_bytes(&h["owner"]).unwrap_or_else(|| panic!("holder owner not a string: {e:?}")),
            mode: value_text(&h["mode"]).unwrap_or_else(|| panic!("holder mode not a string: {e:?}")),
            token: num("token"),
            ttl: num("ttl"),
            holds: num("holds"),
        };
        assert!(holder.mode == "read" || holder.mode == "write", "holder mode {:?} in {v:?}", holder.mode);
        assert!(holder.token > 0, "holder token must be positive: {e:?}");
        assert!(holder.holds >= 1, "holder with holds < 1: {e:?}");
        assert!(holder.ttl > 0, "a live holder with ttl <= 0: {e:?}");
        holders.push(holder);
    }
    // The reported mode agrees with the holders.
    let has = |m: &str| holders.iter().any(|h| h.mode == m);
    let expected_mode = if has("write") {
        "write"
    } else if has("read") {
        "read"
    } else {
        "none"
    };
    assert_eq!(mode, expected_mode, "RWLOCK.INFO mode does not match its holders: {v:?}");
    if has("write") {
        let writers = holders.iter().filter(|h| h.mode == "write").count();
        assert_eq!(writers, 1, "more than one writer: {v:?}");
        let w = holders.iter().find(|h| h.mode == "write").unwrap().owner.clone();
        assert!(holders.iter().all(|h| h.owner == w), "a writer holds while another owner reads: {v:?}");
    }
    Some(RwInfo { mode, holders, waiters })
}

#[track_caller]
pub fn rw_info(c: &mut redis::Connection, key: &str) -> Option<RwInfo> {
    parse_rw_info(&raws(c, &["RWLOCK.INFO", key]))
}

#[track_caller]
pub fn rw_held(c: &mut redis::Connection, key: &str) -> RwInfo {
    rw_info(c, key).unwrap_or_else(|| panic!("RWLOCK.INFO {key} is nil, expected a held lock"))
}

/// Waiters were granted as a lease of `lease` ms, granted at `granted_at`, ended: not
/// before, and not long after; `what` was handed over (`the lock`, `the permits`).
#[track_caller]
pub fn assert_handed_over_at_lease_end(granted_at: Instant, lease: i64, what: &str) {
    let took = granted_at.elapsed();
    assert!(took >= Duration::from_millis(lease as u64 - 5), "granted after {took:?}, before the {lease} ms lease ended");
    assert!(took < Duration::from_secs(5), "lease end took {took:?} to hand {what} over");
}

/// `cmd`'s reply `v` under RESP3 (`RWLOCK.INFO`, `SEM.INFO`): a map, and so is each of
/// its holders.
#[track_caller]
pub fn assert_info_maps(v: &Value, cmd: &str) {
    assert!(matches!(v, Value::Map(_)), "{cmd} under RESP3 should be a map, got {v:?}");
    let m = pairs(v);
    let Value::Array(hs) = &m["holders"] else { panic!("holders is not an array: {v:?}") };
    assert!(matches!(hs[0], Value::Map(_)), "a holder under RESP3 should be a map, got {:?}", hs[0]);
}

#[track_caller]
pub fn waiters_of(c: &mut redis::Connection, key: &str) -> i64 {
    rw_info(c, key).map_or(0, |i| i.waiters)
}

/// Waits until `n` clients wait on the read-write lock `key`.
#[track_caller]
pub fn await_waiters(c: &mut redis::Connection, key: &str, n: i64) {
    wait_until(PATIENCE, &format!("{n} clients wait on {key}"), || waiters_of(c, key) == n);
}

/// Waits until `n` clients wait on the mutex `key` (`LOCK.INFO`).
pub fn await_lock_waiters(c: &mut redis::Connection, key: &str, n: i64) {
    wait_until(PATIENCE, &format!("{n} clients wait on {key}"), || lock_info(c, key).map_or(0, |i| i.waiters) == n);
}

/// `cmd key owner ttl` of an acquire: `Some(token)` or `None` for nil.
#[track_caller]
pub fn acq(c: &mut redis::Connection, cmd: &str, key: &str, owner: &str, ttl: i64) -> Option<i64> {
    let ttl_s = ttl.to_string();
    match raws(c, &[cmd, key, owner, &ttl_s]) {
        Value::Nil => None,
        Value::Int(t) => {
            assert!(t > 0, "{cmd} answered a non-positive token {t}");
            Some(t)
        }
        other => panic!("{cmd} {key} {owner} {ttl} answered {other:?}, expected an integer or nil"),
    }
}

#[track_caller]
pub fn rlock(c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
    acq(c, "RWLOCK.RLOCK", key, owner, ttl)
}

#[track_caller]
pub fn wlock(c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
    acq(c, "RWLOCK.WLOCK", key, owner, ttl)
}

#[track_caller]
pub fn rgrant(c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
    rlock(c, key, owner, ttl).unwrap_or_else(|| panic!("RWLOCK.RLOCK {key} {owner} {ttl} was not granted"))
}

#[track_caller]
pub fn wgrant(c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
    wlock(c, key, owner, ttl).unwrap_or_else(|| panic!("RWLOCK.WLOCK {key} {owner} {ttl} was not granted"))
}

#[track_caller]
pub fn runlock(c: &mut redis::Connection, key: &str, owner: &str) -> i64 {
    int(c, &["RWLOCK.RUNLOCK", key, owner])
}

#[track_caller]
pub fn wunlock(c: &mut redis::Connection, key: &str, owner: &str) -> i64 {
    int(c, &["RWLOCK.WUNLOCK", key, owner])
}

#[track_caller]
pub fn rwextend(c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
    int(c, &["RWLOCK.EXTEND", key, owner, &ttl.to_string()])
}

/// (owner, mode) -> (token, holds, ttl) of every live holder of one read-write lock.
pub type Holds = BTreeMap<(Vec<u8>, String), (i64, i64, i64)>;

/// Holders, tokens and hold counts of the read-write lock `key`, with ttls (which may
/// only go down); nobody may wait on it.
#[track_caller]
pub fn state_of(c: &mut redis::Connection, key: &str) -> Option<Holds> {
    rw_info(c, key).map(|i| {
        assert_eq!(i.waiters, 0, "{key}: unexpected waiters");
        i.holders.into_iter().map(|h| ((h.owner, h.mode), (h.token, h.holds, h.ttl))).collect()
    })
}

/// A connection that fails fast (5 s) if a command that must not block blocks.
pub fn quick_conn(s: &Server) -> redis::Connection {
    let c = s.conn();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

// ---------------------------------------------------------------------------------------
// Semaphore
// ---------------------------------------------------------------------------------------

/// The largest limit the contract allows: 2^31.
pub const MAX_LIMIT: i64 = 1 << 31;
/// The contract's texts for the semaphore's own errors.
pub const BAD_LIMIT: &str = "ERR limit must be an integer between 1 and 2147483648";
pub const BAD_PERMITS: &str = "ERR permits must be a positive integer";
pub const PERMITS_EXCEED: &str = "ERR permits exceed the limit";

/// `-ERR limit mismatch: semaphore has limit <n>`.
pub fn limit_mismatch(limit: i64) -> String {
    format!("ERR limit mismatch: semaphore has limit {limit}")
}

/// `-ERR owner holds <n> permits`.
pub fn owner_holds(permits: i64) -> String {
    format!("ERR owner holds {permits} permits")
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemHolder {
    pub owner: Vec<u8>,
    pub permits: i64,
    pub token: i64,
    pub ttl: i64,
    pub holds: i64,
}

#[derive(Debug, Clone)]
pub struct SemInfo {
    pub limit: i64,
    pub available: i64,
    pub holders: Vec<SemHolder>,
    pub waiters: i64,
}

impl SemInfo {
    pub fn get(&self, owner: &str) -> Option<&SemHolder> {
        self.holders.iter().find(|h| h.owner == owner.as_bytes())
    }

    #[track_caller]
    pub fn holder(&self, owner: &str) -> &SemHolder {
        self.get(owner).unwrap_or_else(|| panic!("no holder {owner:?} in {self:?}"))
    }

    /// The owners that hold, sorted.
    pub fn who(&self) -> Vec<String> {
        let mut v: Vec<String> = self.holders.iter().map(|h| String::from_utf8_lossy(&h.owner).into_owned()).collect();
        v.sort();
        v
    }

    /// The permits the holders hold together.
    pub fn held(&self) -> i64 {
        self.holders.iter().map(|h| h.permits).sum()
    }
}

/// Owner names, sorted, to compare with [`SemInfo::who`].
pub fn owners(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|o| o.to_string()).collect();
    v.sort();
    v
}

/// Parses a `SEM.INFO` reply (None for nil), checking its shape against the contract:
/// exactly the fields `limit`, `available`, `holders`, `waiters`; each holder exactly
/// `owner`, `permits`, `token`, `ttl`, `holds`; holders that fit in the limit, and
/// `available` the permits they leave.
#[track_caller]
pub fn parse_sem_info(v: &Value) -> Option<SemInfo> {
    if let Value::Nil = v {
        return None;
    }
    if let Some(e) = value_err(v) {
        panic!("SEM.INFO answered an error: {e}");
    }
    let m = pairs(v);
    let mut fields: Vec<&str> = m.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["available", "holders", "limit", "waiters"], "SEM.INFO fields: {v:?}");
    let num = |f: &str| value_int(&m[f]).unwrap_or_else(|| panic!("SEM.INFO field {f} is not an integer: {v:?}"));
    let (limit, available, waiters) = (num("limit"), num("available"), num("waiters"));
    assert!((1..=MAX_LIMIT).contains(&limit), "SEM.INFO limit {limit} outside 1..=2^31: {v:?}");
    assert!(waiters >= 0, "SEM.INFO waiters {waiters}: {v:?}");
    let Value::Array(entries) = &m["holders"] else { panic!("SEM.INFO holders is not an array: {v:?}") };
    let mut holders: Vec<SemHolder> = vec![];
    for e in entries {
        let h = pairs(e);
        let mut hf: Vec<&str> = h.keys().map(String::as_str).collect();
        hf.sort();
        assert_eq!(hf, ["holds", "owner", "permits", "token", "ttl"], "SEM.INFO holder fields: {e:?}");
        let num = |f: &str| value_int(&h[f]).unwrap_or_else(|| panic!("holder field {f} not an integer: {e:?}"));
        let holder = SemHolder {
            owner: value_bytes(&h["owner"]).unwrap_or_else(|| panic!("holder owner not a string: {e:?}")),
            permits: num("permits"),
            token: num("token"),
            ttl: num("ttl"),
            holds: num("holds"),
        };
        assert!(!holder.owner.is_empty(), "a holder with an empty owner: {v:?}");
        assert!((1..=limit).contains(&holder.permits), "holder permits outside 1..=limit: {v:?}");
        assert!(holder.token > 0, "holder token must be positive: {e:?}");
        assert!(holder.holds >= 1, "holder with holds < 1: {e:?}");
        assert!(holder.ttl > 0, "a live holder with ttl <= 0: {e:?}");
        assert!(holders.iter().all(|o| o.owner != holder.owner), "an owner twice among the holders: {v:?}");
        holders.push(holder);
    }
    let info = SemInfo { limit, available, holders, waiters };
    assert!(info.held() <= limit, "holders hold {} permits of a limit of {limit}: {v:?}", info.held());
    assert_eq!(available, limit - info.held(), "SEM.INFO available is not limit - permits held: {v:?}");
    assert!(!info.holders.is_empty() || waiters > 0, "SEM.INFO not nil with no holder and no waiter: {v:?}");
    Some(info)
}

#[track_caller]
pub fn sem_info(c: &mut redis::Connection, key: &str) -> Option<SemInfo> {
    parse_sem_info(&raws(c, &["SEM.INFO", key]))
}

/// `SEM.INFO` of a semaphore that must be held or waited on.
#[track_caller]
pub fn sem_held(c: &mut redis::Connection, key: &str) -> SemInfo {
    sem_info(c, key).unwrap_or_else(|| panic!("SEM.INFO {key} is nil, expected a held semaphore"))
}

#[track_caller]
pub fn sem_waiters(c: &mut redis::Connection, key: &str) -> i64 {
    sem_info(c, key).map_or(0, |i| i.waiters)
}

/// Waits until `n` clients wait on the semaphore `key`.
#[track_caller]
pub fn await_sem_waiters(c: &mut redis::Connection, key: &str, n: i64) {
    wait_until(PATIENCE, &format!("{n} clients wait on {key}"), || sem_waiters(c, key) == n);
}

/// `SEM.ACQUIRE key owner limit ttl COUNT permits`: `Some(token)` or `None` for nil.
/// Panics on an error reply.
#[track_caller]
pub fn sem_acquire(c: &mut redis::Connection, key: &str, owner: &str, limit: i64, permits: i64, ttl: i64) -> Option<i64> {
    let (limit_s, permits_s, ttl_s) = (limit.to_string(), permits.to_string(), ttl.to_string());
    match raws(c, &["SEM.ACQUIRE", key, owner, &limit_s, &ttl_s, "COUNT", &permits_s]) {
        Value::Nil => None,
        Value::Int(t) => {
            assert!(t > 0, "SEM.ACQUIRE answered a non-positive token {t}");
            Some(t)
        }
        other => panic!(
            "SEM.ACQUIRE {key} {owner} {limit} {ttl} COUNT {permits} answered {other:?}, expected an integer or nil"
        ),
    }
}

/// `SEM.ACQUIRE ... COUNT permits` that must be granted.
#[track_caller]
pub fn sem_grant(c: &mut redis::Connection, key: &str, owner: &str, limit: i64, permits: i64, ttl: i64) -> i64 {
    sem_acquire(c, key, owner, limit, permits, ttl)
        .unwrap_or_else(|| panic!("SEM.ACQUIRE {key} {owner} {limit} {ttl} COUNT {permits} was not granted"))
}

#[track_caller]
pub fn sem_release(c: &mut redis::Connection, key: &str, owner: &str) -> i64 {
    int(c, &["SEM.RELEASE", key, owner])
}

#[track_caller]
pub fn sem_extend(c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
    int(c, &["SEM.EXTEND", key, owner, &ttl.to_string()])
}
