//! The random command generator of the bad-input suites (`chaos_random_commands`,
//! `chaos_valgrind`): a seeded generator of commands of ours (every command, the internal
//! `FENCELOCK.*` ones too, names in mixed case, arity 0 to 8, arguments that are empty,
//! binary, 1 MiB long, numbers at and around every limit, malformed numbers, `WAIT`
//! tokens, keys of other types and of each of our types), plus a few generic Redis
//! commands on lock keys (DEL, RENAME, MOVE, PEXPIRE, COPY, DUMP, DEBUG DIGEST-VALUE,
//! DEBUG RELOAD, FLUSHDB ...). [`Chaos`] sends each as raw RESP followed by `PING`: exactly
//! one reply and then `PONG` must come back, with nothing after; the same commands also
//! run in random MULTI/EXEC blocks and inside `EVAL`, and a phase of random blocking
//! acquires with tiny `WAIT` timeouts, `CLIENT UNBLOCK`, `CLIENT KILL` and disconnects.
//! The checks of what a reply may be ([`check_reply`], [`check_lock_info`],
//! [`check_rw_info`], [`check_sem_info`]) are shared with the corrupt-payload suites.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;

use crate::support::cmd::now_ms;
use crate::support::locks::{token_wall_part, MAX_TTL};
use crate::support::resp::{encode, esc, esc_str, show, Raw, Reply};
use crate::support::seed::{self, repro_env, Dice};
use crate::support::server::{crash_report, stderr_in, tail, Server};

/// A raw connection to `port` that knows its client id; replies within `timeout`.
pub fn open_conn(port: u16, timeout: Duration) -> Result<Raw, String> {
    let mut c = Raw::connect(port, timeout).map_err(|e| format!("cannot connect to port {port}: {e}"))?;
    c.client_id().map_err(|e| format!("CLIENT ID on port {port}: {e}"))?;
    Ok(c)
}

/// What the server wrote to stderr (a Rust panic message lands there), from the
/// `stderr.log` next to `log`.
pub fn stderr_of(log: &Path) -> String {
    stderr_in(log.parent().unwrap_or(Path::new(".")))
}

// =======================================================================================
// Replies that make sense
// =======================================================================================

/// Tokens from the module's clock stay below 2^53 until 2094 (README).
pub const TOKEN_LIMIT: i64 = 1 << 53;

pub fn get<'a>(m: &'a BTreeMap<String, Reply>, f: &str) -> Result<&'a Reply, String> {
    m.get(f).ok_or_else(|| format!("field {f} missing"))
}

pub fn get_int(m: &BTreeMap<String, Reply>, f: &str) -> Result<i64, String> {
    let v = get(m, f)?;
    v.int().ok_or_else(|| format!("field {f} is not an integer: {}", v.brief()))
}

/// An INFO reply's `waiters`: not negative.
fn check_waiters(m: &BTreeMap<String, Reply>) -> Result<i64, String> {
    let waiters = get_int(m, "waiters")?;
    if waiters < 0 {
        return Err(format!("negative waiters {waiters}"));
    }
    Ok(waiters)
}

/// A hold's `token` (positive, below 2^53), `ttl` (within the contract's 2^40 ms) and
/// `holds` (at least one); `what` names it in the messages (`""` or `"holder "`).
fn check_hold(m: &BTreeMap<String, Reply>, what: &str) -> Result<(), String> {
    let token = get_int(m, "token")?;
    if !(1..TOKEN_LIMIT).contains(&token) {
        return Err(format!("{what}token {token} outside 1..2^53"));
    }
    let ttl = get_int(m, "ttl")?;
    if !(0..=MAX_TTL).contains(&ttl) {
        return Err(format!("{what}ttl {ttl} outside 0..=2^40"));
    }
    let holds = get_int(m, "holds")?;
    if holds < 1 {
        return Err(format!("{what}holds {holds} < 1"));
    }
    Ok(())
}

/// A holder's `owner` in a holders array: a string, not empty.
fn check_holder_owner(hm: &BTreeMap<String, Reply>) -> Result<Vec<u8>, String> {
    let owner = get(hm, "owner")?.bytes().ok_or("holder owner is not a string")?;
    if owner.is_empty() {
        return Err("holder with an empty owner".into());
    }
    Ok(owner)
}

/// `LOCK.INFO`: nil, or a holder with a positive token below 2^53, a ttl within the
/// contract's 2^40 ms, at least one hold; or no holder and at least one waiter.
pub fn check_lock_info(r: &Reply) -> Result<(), String> {
    if *r == Reply::Nil {
        return Ok(());
    }
    let m = r.fields()?;
    let waiters = check_waiters(&m)?;
    match get(&m, "owner")? {
        Reply::Nil => {
            let holds = get_int(&m, "holds")?;
            if holds != 0 || waiters == 0 {
                return Err(format!("free lock with holds {holds} and waiters {waiters}"));
            }
        }
        owner => {
            let owner = owner.bytes().ok_or_else(|| format!("owner is {}", owner.brief()))?;
            if owner.is_empty() {
                return Err("empty owner".into());
            }
            check_hold(&m, "")?;
        }
    }
    Ok(())
}

/// `RWLOCK.INFO`: nil, or holders that respect the lock's rules: at most one writer,
/// and readers beside a writer only as its own downgrade.
pub fn check_rw_info(r: &Reply) -> Result<(), String> {
    if *r == Reply::Nil {
        return Ok(());
    }
    let m = r.fields()?;
    let waiters = check_waiters(&m)?;
    let mode = get(&m, "mode")?.bytes().ok_or("mode is not a string")?;
    let Reply::Array(holders) = get(&m, "holders")? else { return Err("holders is not an array".into()) };
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for h in holders {
        let hm = h.fields()?;
        let owner = check_holder_owner(&hm)?;
        check_hold(&hm, "holder ")?;
        match get(&hm, "mode")?.bytes().as_deref() {
            Some(b"write") => writers.push(owner),
            Some(b"read") => readers.push(owner),
            other => return Err(format!("holder mode {other:?}")),
        }
    }
    if writers.len() > 1 {
        return Err(format!(
            "{} writers hold at once: {}",
            writers.len(),
            writers.iter().map(|w| esc(w)).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(w) = writers.first() {
        if let Some(r) = readers.iter().find(|r| *r != w) {
            return Err(format!("reader {} holds beside writer {}", esc(r), esc(w)));
        }
    }
    let expected: &[u8] = if !writers.is_empty() {
        b"write"
    } else if !readers.is_empty() {
        b"read"
    } else {
        b"none"
    };
    if mode != expected {
        return Err(format!("mode {} but holders say {}", esc(&mode), esc(expected)));
    }
    if holders.is_empty() && waiters == 0 {
        return Err("no holders and no waiters, but not nil".into());
    }
    Ok(())
}

/// `SEM.INFO`: nil, or exactly the fields `limit` (1 to 2^31), `available`, `holders`,
/// `waiters`, holders that respect the semaphore's rules (each with 1 to `limit` permits,
/// one entry per owner, together at most `limit`), `available` the permits they leave,
/// and at least one holder or one waiter.
pub fn check_sem_info(r: &Reply) -> Result<(), String> {
    if *r == Reply::Nil {
        return Ok(());
    }
    let m = r.fields()?;
    let names: Vec<&str> = m.keys().map(String::as_str).collect();
    if names != ["available", "holders", "limit", "waiters"] {
        return Err(format!("fields {names:?}"));
    }
    let limit = get_int(&m, "limit")?;
    if !(1..=1i64 << 31).contains(&limit) {
        return Err(format!("limit {limit} outside 1..=2^31"));
    }
    let waiters = check_waiters(&m)?;
    let Reply::Array(holders) = get(&m, "holders")? else { return Err("holders is not an array".into()) };
    let mut owners: Vec<Vec<u8>> = Vec::new();
    let mut held = 0i64;
    for h in holders {
        let hm = h.fields()?;
        let names: Vec<&str> = hm.keys().map(String::as_str).collect();
        if names != ["holds", "owner", "permits", "token", "ttl"] {
            return Err(format!("holder fields {names:?}"));
        }
        let owner = check_holder_owner(&hm)?;
        if owners.contains(&owner) {
            return Err(format!("owner {} holds twice", esc(&owner)));
        }
        owners.push(owner);
        let permits = get_int(&hm, "permits")?;
        if !(1..=limit).contains(&permits) {
            return Err(format!("holder permits {permits} outside 1..={limit}"));
        }
        held += permits;
        check_hold(&hm, "holder ")?;
    }
    if held > limit {
        return Err(format!("holders hold {held} permits of a limit of {limit}"));
    }
    let available = get_int(&m, "available")?;
    if available != limit - held {
        return Err(format!("available {available}, but the holders leave {}", limit - held));
    }
    if holders.is_empty() && waiters == 0 {
        return Err("no holders and no waiters, but not nil".into());
    }
    Ok(())
}

/// The owners that hold a lock, from a `LOCK.INFO`, `RWLOCK.INFO` or `SEM.INFO` reply.
pub fn holder_owners(info: &Reply) -> Vec<Vec<u8>> {
    let Ok(m) = info.fields() else { return Vec::new() };
    if let Some(owner) = m.get("owner") {
        return owner.bytes().into_iter().collect();
    }
    match m.get("holders") {
        Some(Reply::Array(hs)) => {
            hs.iter().filter_map(|h| h.fields().ok().and_then(|hm| hm.get("owner").and_then(Reply::bytes))).collect()
        }
        _ => Vec::new(),
    }
}

/// The error text of a panic caught at the module's command boundary.
pub fn is_internal_error(e: &str) -> bool {
    let l = e.to_ascii_lowercase();
    l.contains("internal error") || l.contains("panic")
}

/// Checks one reply to one command of ours (`upper` is its name in capitals).
/// `other_type_key` says the key argument holds a string, list, hash or zset. `lua`: the
/// reply went through a script, where numbers are doubles (a fence may legally record a
/// token beyond 2^53, e.g. i64::MAX by FENCE.CHECK, which Lua cannot carry exactly).
pub fn check_reply(upper: &str, r: &Reply, other_type_key: bool, lua: bool) -> Result<(), String> {
    if let Some(e) = r.errors().into_iter().find(|e| is_internal_error(e)) {
        return Err(format!("the module answered an internal error (a caught panic?): {}", esc_str(e)));
    }
    if upper.starts_with("FENCELOCK.") {
        return match r {
            Reply::Err(_) => Ok(()),
            other => Err(format!("internal command {upper} was run for an ordinary client: {}", other.brief())),
        };
    }
    if let Reply::Err(e) = r {
        // FENCE.CALL answers an unknown inner command as Redis would.
        if e.to_ascii_lowercase().contains("unknown command") && upper != "FENCE.CALL" {
            return Err(format!("command of ours unknown: {e}"));
        }
        // Lock grants take tokens from the server's clock, which only their own grants
        // (and tokens loaded from disk or a master) may raise: it never runs out.
        if matches!(upper, "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK" | "SEM.ACQUIRE") && e.contains("exhausted") {
            return Err(format!("{upper} could not be granted: {e} (something pushed the server-wide token floor to the end of the token space)"));
        }
        // A semaphore's limit is 1 to 2^31: an error that names another was never stated.
        if let Some(n) = e.strip_prefix("ERR limit mismatch: semaphore has limit ") {
            // Inside a script Redis appends " script: <sha>, on @user_script:1.".
            let n = n.split_whitespace().next().unwrap_or("");
            if !n.parse::<i64>().is_ok_and(|n| (1..=1i64 << 31).contains(&n)) {
                return Err(format!("{upper} named a limit the contract does not allow: {e}"));
            }
        }
        return Ok(());
    }
    if other_type_key {
        return Err(format!("{upper} on a key of another type answered {} instead of an error", r.brief()));
    }
    let bad = || Err(format!("{upper} answered {}", r.brief()));
    match upper {
        "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK" | "SEM.ACQUIRE" => match r {
            Reply::Nil => Ok(()),
            Reply::Int(t) if (1..TOKEN_LIMIT).contains(t) => Ok(()),
            _ => bad(),
        },
        "LOCK.RELEASE" | "LOCK.EXTEND" | "RWLOCK.RUNLOCK" | "RWLOCK.WUNLOCK" | "RWLOCK.EXTEND" | "SEM.RELEASE"
        | "SEM.EXTEND" => match r {
            Reply::Int(0 | 1) => Ok(()),
            _ => bad(),
        },
        "LOCK.INFO" => check_lock_info(r).map_err(|e| format!("LOCK.INFO answered {}: {e}", r.brief())),
        "RWLOCK.INFO" => check_rw_info(r).map_err(|e| format!("RWLOCK.INFO answered {}: {e}", r.brief())),
        "SEM.INFO" => check_sem_info(r).map_err(|e| format!("SEM.INFO answered {}: {e}", r.brief())),
        "FENCE.NEXT" | "FENCE.CURRENT" if lua => match r {
            Reply::Int(_) => Ok(()),
            _ => bad(),
        },
        "FENCE.NEXT" => match r {
            Reply::Int(t) if *t > 0 => Ok(()),
            _ => bad(),
        },
        "FENCE.CHECK" => match r {
            Reply::Int(1) => Ok(()),
            _ => bad(),
        },
        "FENCE.CURRENT" => match r {
            Reply::Int(t) if *t >= 0 => Ok(()),
            _ => bad(),
        },
        _ => Ok(()),
    }
}

// =======================================================================================
// The generator
// =======================================================================================

pub const OURS: [&str; 24] = [
    "LOCK.ACQUIRE",
    "LOCK.RELEASE",
    "LOCK.EXTEND",
    "LOCK.INFO",
    "RWLOCK.RLOCK",
    "RWLOCK.WLOCK",
    "RWLOCK.RUNLOCK",
    "RWLOCK.WUNLOCK",
    "RWLOCK.EXTEND",
    "RWLOCK.INFO",
    "FENCE.NEXT",
    "FENCE.CHECK",
    "FENCE.CURRENT",
    "FENCELOCK.MUTEX",
    "FENCELOCK.RWHOLD",
    "FENCELOCK.RWDROP",
    "FENCELOCK.FENCE",
    "SEM.ACQUIRE",
    "SEM.RELEASE",
    "SEM.EXTEND",
    "SEM.INFO",
    "FENCELOCK.SEMHOLD",
    "FENCELOCK.SEMDROP",
    "FENCE.CALL",
];

/// Commands `FENCE.CALL` runs behind its fence in the random input: reads of any key,
/// writes only to keys of their own (the other-type keys must stay), commands it must
/// refuse, commands of ours, and nonsense.
fn inner_command(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let own = |rng: &mut StdRng| format!("chaos:called:{}", rng.below(4)).into_bytes();
    let words = |w: &[&str]| w.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
    match rng.below(14) {
        0 => vec![b"GET".to_vec(), arg_key(rng)],
        1 => vec![b"TYPE".to_vec(), arg_key(rng)],
        2 => vec![b"SET".to_vec(), own(rng), arg_any(rng)],
        3 => vec![b"INCR".to_vec(), own(rng)],
        4 => vec![b"LPUSH".to_vec(), own(rng), arg_any(rng), arg_any(rng)],
        5 => vec![b"DEL".to_vec(), own(rng)],
        6 => words(&["BLPOP", "chaos:called:0", "0"]),
        7 => words(&["MULTI"]),
        8 => words(&["EVAL", "return 1", "0"]),
        9 => words(&["CONFIG", "SET", "maxmemory", "0"]),
        10 => {
            let mut nested = vec![b"FENCE.CALL".to_vec(), arg_key(rng), arg_number(rng)];
            nested.extend(words(&["GET", "chaos:called:0"]));
            nested
        }
        11 => {
            let mut cmd = gen_ours(rng);
            if cmd.first().is_some_and(|n| n.eq_ignore_ascii_case(b"FENCE.CALL")) {
                cmd.truncate(1);
            }
            cmd
        }
        12 => vec![arg_any(rng)],
        _ => Vec::new(),
    }
}

/// Keys of other types, created first and kept in db 0 (nothing the generator sends
/// may remove them, and they are made again after a flush).
pub const OTHER_KEYS: [&str; 4] = ["chaos:str", "chaos:list", "chaos:hash", "chaos:zset"];
/// Keys our commands create and destroy at will.
pub const LOCK_KEYS: [&str; 10] = [
    "chaos:m1",
    "chaos:m2",
    "chaos:rw1",
    "chaos:rw2",
    "chaos:f1",
    "chaos:f2",
    "chaos:s1",
    "chaos:s2",
    "chaos:new",
    "chaos:{tag}x",
];
pub const OWNERS: [&str; 3] = ["alice", "bob", "carol"];
pub const NUMBERS: [&str; 41] = [
    "0",
    "-1",
    "1",
    "2",
    "3",
    "5",
    "10",
    "50",
    "100",
    "1000",
    "60000",
    "1099511627775",
    "1099511627776",
    "1099511627777", // 2^40 - 1, 2^40, 2^40 + 1
    "9007199254740991",
    "9007199254740992",
    "9007199254740993", // around 2^53
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775806", // i64 limits
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e3",
    "+5",
    " 5",
    "5 ",
    "05",
    "-0",
    "0x10",
    "3.5",
    "1.0",
    "inf",
    "-inf",
    "nan",
    "",
    "\u{0}5",
    "5\u{0}",
    "-",
];
pub const WAIT_WORDS: [&str; 7] = ["WAIT", "wait", "Wait", "WAITS", "WAI", "WAIT ", "NOWAIT"];
pub const COUNT_WORDS: [&str; 6] = ["COUNT", "count", "Count", "COUNTS", "COUN", "PERMITS"];
/// Semaphore limits: the one the generator's semaphores mostly state, others, and the
/// contract's bounds (1 to 2^31) and beyond.
pub const LIMITS: [&str; 10] = ["3", "1", "2", "4", "2147483648", "2147483647", "2147483649", "0", "-1", "4294967296"];
pub const MODES: [&str; 7] = ["read", "write", "READ", "Write", "none", "", "reader"];
pub const BINARY: &[u8] = b"\x00\xff\x00bin\r\n\xff\xfe\x80";

pub fn huge() -> &'static [u8] {
    static HUGE: OnceLock<Vec<u8>> = OnceLock::new();
    HUGE.get_or_init(|| vec![b'x'; 1 << 20])
}

pub fn mixed_case(rng: &mut StdRng, name: &str) -> Vec<u8> {
    name.bytes()
        .map(|c| {
            if rng.chance(35) {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            } else {
                c
            }
        })
        .collect()
}

pub fn arg_number(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(10) {
        0 => rng.range(-3, 400).to_string().into_bytes(),
        1 => (token_wall_part(now_ms()) + rng.range(-5, 5)).to_string().into_bytes(),
        2 => (now_ms() + rng.range(-100_000, 100_000)).to_string().into_bytes(),
        _ => rng.pick(&NUMBERS).as_bytes().to_vec(),
    }
}

pub fn arg_key(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(20) {
        0..=14 => rng.pick(&LOCK_KEYS).as_bytes().to_vec(),
        15..=17 => rng.pick(&OTHER_KEYS).as_bytes().to_vec(),
        18 => Vec::new(),
        _ => {
            if rng.chance(10) {
                huge().to_vec()
            } else {
                [b"chaos:".as_slice(), BINARY].concat()
            }
        }
    }
}

pub fn arg_owner(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(20) {
        0..=15 => rng.pick(&OWNERS).as_bytes().to_vec(),
        16 => Vec::new(),
        17 => BINARY.to_vec(),
        18 => {
            if rng.chance(20) {
                huge().to_vec()
            } else {
                vec![b'o'; 300]
            }
        }
        _ => arg_number(rng),
    }
}

pub fn arg_ttl(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(20) {
        0..=12 => rng.range(1, 300).to_string().into_bytes(),
        13..=15 => "600000".into(),
        _ => arg_number(rng),
    }
}

pub fn arg_limit(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(20) {
        0..=13 => b"3".to_vec(),
        14..=18 => rng.pick(&LIMITS).as_bytes().to_vec(),
        _ => arg_number(rng),
    }
}

pub fn arg_permits(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(20) {
        0..=15 => rng.pick(&["1", "1", "2", "3", "4", "0"]).as_bytes().to_vec(),
        _ => arg_number(rng),
    }
}

/// Anything at all.
pub fn arg_any(rng: &mut StdRng) -> Vec<u8> {
    match rng.below(200) {
        0 => huge().to_vec(),
        1..=40 => arg_key(rng),
        41..=70 => arg_owner(rng),
        71..=140 => arg_number(rng),
        141..=150 => rng.pick(&WAIT_WORDS).as_bytes().to_vec(),
        151..=155 => rng.pick(&COUNT_WORDS).as_bytes().to_vec(),
        156..=165 => rng.pick(&MODES).as_bytes().to_vec(),
        166..=175 => Vec::new(),
        176..=185 => BINARY.to_vec(),
        _ => {
            let n = rng.below(12);
            (0..n).map(|_| rng.next_u64() as u8).collect()
        }
    }
}

/// One command of ours: often in the right shape with one thing wrong (or nothing),
/// otherwise any arity from 0 to 8 with arguments from anywhere.
pub fn gen_ours(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let name = *rng.pick(&OURS);
    let mut cmd = vec![mixed_case(rng, name)];
    if rng.chance(25) {
        let n = rng.below(9);
        cmd.extend((0..n).map(|_| arg_any(rng)));
        return cmd;
    }
    #[derive(Clone, Copy)]
    enum Slot {
        Key,
        Owner,
        Ttl,
        Num,
        Mode,
        Limit,
    }
    use Slot::*;
    let slots: &[Slot] = match name {
        "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK" | "LOCK.EXTEND" | "RWLOCK.EXTEND" => &[Key, Owner, Ttl],
        "LOCK.RELEASE" | "RWLOCK.RUNLOCK" | "RWLOCK.WUNLOCK" => &[Key, Owner],
        "FENCE.CHECK" | "FENCE.CALL" => &[Key, Num],
        "FENCELOCK.MUTEX" => &[Key, Owner, Num, Num, Num],
        "FENCELOCK.RWHOLD" => &[Key, Mode, Owner, Num, Num, Num],
        "FENCELOCK.RWDROP" => &[Key, Mode, Owner],
        "FENCELOCK.FENCE" => &[Key, Num, Num],
        "SEM.ACQUIRE" => &[Key, Owner, Limit, Ttl],
        "SEM.RELEASE" => &[Key, Owner],
        "SEM.EXTEND" => &[Key, Owner, Ttl],
        "FENCELOCK.SEMHOLD" => &[Key, Limit, Owner, Num, Num, Num, Num],
        "FENCELOCK.SEMDROP" => &[Key, Owner],
        _ => &[Key],
    };
    for slot in slots {
        let arg = if rng.chance(95) {
            match slot {
                Key => arg_key(rng),
                Owner => arg_owner(rng),
                Ttl => arg_ttl(rng),
                Num => arg_number(rng),
                Mode => rng.pick(&MODES).as_bytes().to_vec(),
                Limit => arg_limit(rng),
            }
        } else {
            arg_any(rng)
        };
        cmd.push(arg);
    }
    if name == "FENCE.CALL" {
        cmd.extend(inner_command(rng));
    }
    if matches!(name, "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK") && rng.chance(45) {
        let word = if rng.chance(80) { rng.pick(&WAIT_WORDS[..3]) } else { rng.pick(&WAIT_WORDS) };
        cmd.push(word.as_bytes().to_vec());
        if rng.chance(92) {
            cmd.push(if rng.chance(60) {
                rng.pick(&["0", "1", "2", "5", "20", "100", "1000"]).as_bytes().to_vec()
            } else {
                arg_number(rng)
            });
        }
    }
    if name == "SEM.ACQUIRE" {
        // `[COUNT permits] [WAIT timeout]` in either order, now and then one twice or a
        // word that is not an option.
        let mut options: Vec<Vec<Vec<u8>>> = Vec::new();
        if rng.chance(55) {
            let word = if rng.chance(85) { rng.pick(&COUNT_WORDS[..3]) } else { rng.pick(&COUNT_WORDS) };
            options.push(vec![word.as_bytes().to_vec(), arg_permits(rng)]);
        }
        if rng.chance(45) {
            let word = if rng.chance(85) { rng.pick(&WAIT_WORDS[..3]) } else { rng.pick(&WAIT_WORDS) };
            let timeout = if rng.chance(60) {
                rng.pick(&["0", "1", "2", "5", "20", "100", "1000"]).as_bytes().to_vec()
            } else {
                arg_number(rng)
            };
            options.push(vec![word.as_bytes().to_vec(), timeout]);
        }
        if options.len() == 2 && rng.chance(50) {
            options.swap(0, 1);
        }
        if !options.is_empty() && rng.chance(6) {
            let again = options[rng.below(options.len())].clone();
            options.push(again);
        }
        for option in options {
            // Now and then the value is missing.
            let take = if rng.chance(4) { 1 } else { 2 };
            cmd.extend(option.into_iter().take(take));
        }
    }
    if rng.chance(12) {
        if rng.chance(50) && cmd.len() > 1 {
            let i = 1 + rng.below(cmd.len() - 1);
            cmd.remove(i);
        } else {
            cmd.push(arg_any(rng));
        }
    }
    cmd
}

/// A generic Redis command on lock keys: it drives the types' callbacks (digest, memory,
/// copy, unlink, RDB) and Redis's own removals (DEL, RENAME, MOVE, PEXPIRE, FLUSHDB).
pub fn gen_generic(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let k = rng.pick(&LOCK_KEYS).to_string();
    let k2 = rng.pick(&LOCK_KEYS).to_string();
    let ms = rng.range(1, 50).to_string();
    let words: Vec<String> = match rng.below(26) {
        0 => vec!["TYPE".into(), k],
        1 => vec!["EXISTS".into(), k],
        2 | 3 => vec!["DEL".into(), k],
        4 => vec!["UNLINK".into(), k],
        5 => vec!["DEBUG".into(), "DIGEST-VALUE".into(), k],
        6 => vec!["MEMORY".into(), "USAGE".into(), k],
        7 => vec!["OBJECT".into(), "ENCODING".into(), k],
        8 => vec!["DUMP".into(), k],
        9 => vec!["COPY".into(), k, k2],
        10 => vec!["COPY".into(), k, k2, "REPLACE".into()],
        11 => vec!["RENAME".into(), k, k2],
        12 => vec!["RENAMENX".into(), k, k2],
        13 => vec!["PEXPIRE".into(), k, ms],
        14 => vec!["PERSIST".into(), k],
        15 => vec!["PTTL".into(), k],
        16 => vec!["MOVE".into(), k, "1".into()],
        17 => vec!["SELECT".into(), rng.pick(&["0", "1"]).to_string()],
        18 => vec!["DEBUG".into(), "DIGEST".into()],
        19 => {
            if rng.chance(15) {
                vec!["DEBUG".into(), "RELOAD".into()]
            } else {
                vec!["DBSIZE".into()]
            }
        }
        20 => {
            if rng.chance(10) {
                vec!["FLUSHDB".into()]
            } else {
                vec!["RANDOMKEY".into()]
            }
        }
        21 => vec![
            "SCAN".into(),
            "0".into(),
            "TYPE".into(),
            rng.pick(&["lockmutex", "lockrwlck", "lockfence", "locksemph"]).to_string(),
        ],
        22 => vec!["GETRANGE".into(), k, "0".into(), "1".into()],
        23 => vec!["SORT".into(), k],
        24 => vec!["OBJECT".into(), "FREQ".into(), k],
        _ => vec!["EXPIRETIME".into(), k],
    };
    words.into_iter().map(String::into_bytes).collect()
}

/// Timeouts, scaled for a server under valgrind.
#[derive(Clone, Copy)]
pub struct Timing {
    /// After this long without a reply, ask whether the client is blocked.
    pub probe_after: Duration,
    /// A reply that takes longer is a hang.
    pub hang: Duration,
    /// Extra time a server may take beyond a WAIT timeout or a lease.
    pub slack: Duration,
}

impl Timing {
    pub fn native() -> Timing {
        Timing { probe_after: Duration::from_millis(100), hang: Duration::from_secs(20), slack: Duration::from_secs(5) }
    }

    pub fn valgrind() -> Timing {
        Timing {
            probe_after: Duration::from_millis(1500),
            hang: Duration::from_secs(180),
            slack: Duration::from_secs(60),
        }
    }
}

#[derive(Default, Debug)]
pub struct Stats {
    pub commands: usize,
    pub errors: usize,
    pub nils: usize,
    pub ints: usize,
    pub other: usize,
    pub unblocked: usize,
    pub multi: usize,
    pub exec_aborted: usize,
    pub scripts: usize,
    pub blocking_sent: usize,
    pub blocking_granted: usize,
    pub blocking_nil: usize,
    pub disconnects: usize,
    pub kills: usize,
}

pub const SCRIPT_CALL: &str = "return redis.call(unpack(ARGV))";
pub const SCRIPT_PCALL: &str = "return redis.pcall(unpack(ARGV))";
pub const SCRIPT_SEQUENCE: &str = "local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + j] end
  i = i + n + 1
  out[#out + 1] = redis.pcall(unpack(cmd))
end
return out";

pub struct Chaos {
    /// The test target, for the replay line.
    test: &'static str,
    rng: StdRng,
    seed: u64,
    port: u16,
    log: PathBuf,
    t: Timing,
    conn: Raw,
    ctl: Raw,
    db: i64,
    phase: &'static str,
    step: usize,
    history: VecDeque<String>,
    pub stats: Stats,
}

impl Chaos {
    /// A run against `server` for the test target `test` (named in the replay line).
    pub fn new(test: &'static str, server: &Server, seed: u64, stream: &str, t: Timing) -> Chaos {
        let port = server.port;
        let conn = open_conn(port, t.hang).unwrap_or_else(|e| panic!("{e}"));
        let ctl = open_conn(port, t.hang).unwrap_or_else(|e| panic!("{e}"));
        Chaos {
            test,
            rng: seed::rng(seed, stream),
            seed,
            port,
            log: server.log_path(),
            t,
            conn,
            ctl,
            db: 0,
            phase: "setup",
            step: 0,
            history: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn fail(&self, msg: impl std::fmt::Display) -> ! {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let crashed = crash_report(&log);
        let headline = if crashed.is_some() { "THE SERVER CRASHED. " } else { "" };
        let tail = stderr_of(&self.log) + &crashed.unwrap_or_else(|| tail(&log, 40));
        let test = self.test;
        let history: Vec<String> = self.history.iter().cloned().collect();
        panic!(
            "{headline}{}\n  seed {} (replay: CHAOS_SEED={}{} cargo test --release --test {test}), phase {}, step {}\n  \
             last commands (oldest first; <N bytes of 'x'> is the 1 MiB argument):\n    {}\n  server log tail:\n{}",
            msg,
            self.seed,
            self.seed,
            repro_env(),
            self.phase,
            self.step,
            history.join("\n    "),
            tail
        );
    }

    pub fn note(&mut self, what: String) {
        if self.history.len() == 12 {
            self.history.pop_front();
        }
        self.history.push_back(what);
    }

    pub fn ctl_call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        match self.ctl.call(args, self.t.hang) {
            Ok(r) => r,
            Err(e) => {
                let shown: Vec<Vec<u8>> = args.iter().map(|a| a.as_ref().to_vec()).collect();
                self.fail(format!("control connection: {} failed: {e}", show(&shown)))
            }
        }
    }

    /// The other-type keys, made again (db 0).
    pub fn recreate_others(&mut self) {
        for k in OTHER_KEYS {
            self.ctl_call(&["DEL", k]);
        }
        self.ctl_call(&["SET", "chaos:str", "v"]);
        self.ctl_call(&["RPUSH", "chaos:list", "a", "b"]);
        self.ctl_call(&["HSET", "chaos:hash", "f", "v"]);
        self.ctl_call(&["ZADD", "chaos:zset", "1", "m"]);
    }

    /// The server still ends leases by itself: a 1 ms lease goes, with its key.
    pub fn leases_still_end(&mut self) {
        let owner = format!("live{}", self.step);
        let r = self.ctl_call(&["LOCK.ACQUIRE", "chaos:live", &owner, "1"]);
        if !matches!(r, Reply::Int(_)) {
            self.fail(format!("LOCK.ACQUIRE chaos:live {owner} 1 answered {}", r.brief()));
        }
        let deadline = Instant::now() + self.t.slack;
        while self.ctl_call(&["EXISTS", "chaos:live"]) != Reply::Int(0) {
            if Instant::now() > deadline {
                let info = self.ctl_call(&["LOCK.INFO", "chaos:live"]);
                self.fail(format!(
                    "leases stopped ending: a 1 ms lease still has its key after {:?} (LOCK.INFO {})",
                    self.t.slack,
                    info.brief()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn setup(&mut self) {
        self.recreate_others();
        let long = "600000";
        let mut f1 = 0;
        for cmd in [
            vec!["LOCK.ACQUIRE", "chaos:m1", "alice", long],
            vec!["LOCK.ACQUIRE", "chaos:m1", "alice", long],
            vec!["RWLOCK.RLOCK", "chaos:rw1", "bob", long],
            vec!["RWLOCK.RLOCK", "chaos:rw1", "carol", long],
            vec!["RWLOCK.WLOCK", "chaos:rw2", "carol", long],
            vec!["RWLOCK.RLOCK", "chaos:rw2", "carol", long],
            vec!["FENCE.NEXT", "chaos:f1"],
            vec!["FENCE.CHECK", "chaos:f2", "5"],
            vec!["SEM.ACQUIRE", "chaos:s1", "alice", "3", long, "COUNT", "2"],
            vec!["SEM.ACQUIRE", "chaos:s1", "bob", "3", long],
            vec!["SEM.ACQUIRE", "chaos:s1", "bob", "3", long],
        ] {
            let r = self.ctl_call(&cmd);
            match r {
                Reply::Int(t) if cmd[0] == "FENCE.NEXT" => f1 = t,
                Reply::Int(_) => {}
                _ => self.fail(format!("setup: {cmd:?} answered {}", r.brief())),
            }
        }
        // The internal commands, with well-formed arguments, are refused here, in MULTI
        // and in scripts, and change nothing.
        let deadline = (now_ms() + 600_000).to_string();
        let token = (token_wall_part(now_ms()) + 1_000_000).to_string();
        let internals: Vec<Vec<&str>> = vec![
            vec!["FENCELOCK.MUTEX", "chaos:int", "mallory", &token, &deadline, "1"],
            vec!["FENCELOCK.RWHOLD", "chaos:int", "write", "mallory", &token, &deadline, "1"],
            vec!["FENCELOCK.RWDROP", "chaos:rw1", "read", "bob"],
            vec!["FENCELOCK.FENCE", "chaos:f1", "9223372036854775806", "9223372036854775806"],
            vec!["FENCELOCK.MUTEX", "chaos:m1", "mallory", &token, &deadline, "1"],
            vec!["FENCELOCK.SEMHOLD", "chaos:int", "3", "mallory", "1", &token, &deadline, "1"],
            vec!["FENCELOCK.SEMHOLD", "chaos:s1", "3", "mallory", "1", &token, &deadline, "1"],
            vec!["FENCELOCK.SEMDROP", "chaos:s1", "alice"],
        ];
        for cmd in &internals {
            let r = self.ctl_call(cmd);
            if !matches!(r, Reply::Err(_)) {
                self.fail(format!("{cmd:?} from an ordinary client answered {}", r.brief()));
            }
            let mut script = vec!["EVAL", SCRIPT_PCALL, "0"];
            script.extend(cmd.iter().copied());
            let r = self.ctl_call(&script);
            if !matches!(r, Reply::Err(_)) {
                self.fail(format!("{cmd:?} inside EVAL answered {}", r.brief()));
            }
            self.ctl_call(&["MULTI"]);
            self.ctl_call(cmd);
            match self.ctl_call(&["EXEC"]) {
                Reply::Array(items) if items.len() == 1 && matches!(items[0], Reply::Err(_)) => {}
                other => self.fail(format!("{cmd:?} inside MULTI/EXEC answered {}", other.brief())),
            }
        }
        for (cmd, want) in [
            (vec!["EXISTS", "chaos:int"], Reply::Int(0)),
            (vec!["FENCE.CURRENT", "chaos:f1"], Reply::Int(f1)),
            (vec!["LOCK.RELEASE", "chaos:m1", "mallory"], Reply::Int(0)),
            (vec!["RWLOCK.RUNLOCK", "chaos:rw1", "bob"], Reply::Int(1)),
            (vec!["SEM.RELEASE", "chaos:s1", "mallory"], Reply::Int(0)),
            (vec!["SEM.RELEASE", "chaos:s1", "bob"], Reply::Int(1)),
            (vec!["SEM.RELEASE", "chaos:s1", "alice"], Reply::Int(1)),
            (vec!["SEM.ACQUIRE", "chaos:s1", "carol", "3", long, "COUNT", "3"], Reply::Nil),
        ] {
            let r = self.ctl_call(&cmd);
            if r != want {
                self.fail(format!(
                    "after the refused internal commands, {cmd:?} answered {}: they changed state",
                    r.brief()
                ));
            }
        }
    }

    pub fn other_type_key(&self, cmd: &[Vec<u8>]) -> bool {
        self.db == 0 && cmd.get(1).is_some_and(|k| OTHER_KEYS.iter().any(|o| o.as_bytes() == k.as_slice()))
    }

    pub fn check(&mut self, cmd: &[Vec<u8>], r: &Reply, context: &str) {
        self.check_in(cmd, r, context, false)
    }

    pub fn check_in(&mut self, cmd: &[Vec<u8>], r: &Reply, context: &str, lua: bool) {
        self.stats.commands += 1;
        match r {
            Reply::Err(_) => self.stats.errors += 1,
            Reply::Nil => self.stats.nils += 1,
            Reply::Int(_) => self.stats.ints += 1,
            _ => self.stats.other += 1,
        }
        let upper = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
        if !OURS.contains(&upper.as_str()) {
            if let Some(e) = r.errors().into_iter().find(|e| is_internal_error(e)) {
                self.fail(format!("{context}: {} answered an internal error: {e}", show(cmd)));
            }
            return;
        }
        if let Err(e) = check_reply(&upper, r, self.other_type_key(cmd), lua) {
            self.fail(format!("{context}: {}\n  command: {}", e, show(cmd)));
        }
    }

    pub fn is_blocked(&mut self, id: i64) -> bool {
        let r = self.ctl_call(&["CLIENT", "LIST", "ID", &id.to_string()]);
        let text = r.bytes().unwrap_or_default();
        String::from_utf8_lossy(&text)
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("flags="))
            .is_some_and(|flags| flags.contains('b'))
    }

    /// Sends one command and PING; returns the command's reply. A command that blocks
    /// (a WAIT on a busy lock) is released with CLIENT UNBLOCK, which must answer it.
    pub fn exchange(&mut self, cmd: &[Vec<u8>]) -> Reply {
        self.note(format!("[db {}] {}", self.db, show(cmd)));
        let mut bytes = encode(cmd);
        bytes.extend(encode(&["PING"]));
        if let Err(e) = self.conn.send_bytes(&bytes) {
            self.fail(format!("{e}\n  command: {}", show(cmd)));
        }
        let start = Instant::now();
        let mut unblocked = false;
        let reply = loop {
            let slice = if unblocked { self.t.hang } else { self.t.probe_after };
            match self.conn.read_within(slice) {
                Ok(Some(r)) => break r,
                Ok(None) if start.elapsed() >= self.t.hang => {
                    self.fail(format!("no reply after {:?}\n  command: {}", start.elapsed(), show(cmd)))
                }
                Ok(None) if !unblocked => {
                    if self.is_blocked(self.conn.id()) {
                        // TIMEOUT, the contract's mode (answers nil). Not ERROR: Redis 7.0
                        // answers -UNBLOCKED even to a client whose grant is already queued
                        // for delivery (a second reply; see `unblock_races_a_grant`).
                        self.ctl_call(&["CLIENT", "UNBLOCK", &self.conn.id().to_string(), "TIMEOUT"]);
                        self.note("(CLIENT UNBLOCK TIMEOUT)".into());
                        self.stats.unblocked += 1;
                        unblocked = true;
                    }
                }
                Ok(None) => {}
                Err(e) => self.fail(format!("{e}\n  command: {}", show(cmd))),
            }
        };
        if let Err(e) = self.conn.expect_pong(self.t.hang) {
            self.fail(format!("{e}\n  first reply: {}\n  command: {}", reply.brief(), show(cmd)));
        }
        reply
    }

    pub fn after_generic(&mut self, cmd: &[Vec<u8>], r: &Reply) {
        let upper = String::from_utf8_lossy(&cmd[0]).to_ascii_uppercase();
        if upper == "SELECT" && *r == Reply::Simple("OK".into()) {
            self.db = String::from_utf8_lossy(&cmd[1]).parse().unwrap_or(0);
        }
        if upper == "FLUSHDB" && self.db == 0 {
            self.recreate_others();
        }
        // Valkey 8.1 leaves the client that ran DEBUG RELOAD on the database of the last
        // key it loaded, once a module subscribes to keyspace events (a server bug, fixed
        // in Valkey 9; see the README): this client goes back to the one it means to use.
        if upper == "DEBUG" && cmd.get(1).is_some_and(|c| c.eq_ignore_ascii_case(b"RELOAD")) {
            let select: Vec<Vec<u8>> = vec![b"SELECT".to_vec(), self.db.to_string().into_bytes()];
            let r = self.exchange(&select);
            if r != Reply::Simple("OK".into()) {
                self.fail(format!("SELECT {} after DEBUG RELOAD answered {}", self.db, r.brief()));
            }
        }
    }

    pub fn run_plain(&mut self, n: usize) {
        self.phase = "plain commands";
        for i in 0..n {
            self.step = i;
            if i % 400 == 399 {
                let proto = if self.rng.chance(50) { "3" } else { "2" };
                let cmd: Vec<Vec<u8>> = vec![b"HELLO".to_vec(), proto.into()];
                let r = self.exchange(&cmd);
                if !matches!(r, Reply::Map(_) | Reply::Array(_)) {
                    self.fail(format!("HELLO {proto} answered {}", r.brief()));
                }
            }
            if i % 500 == 250 {
                self.recreate_others();
                self.leases_still_end();
            }
            let generic = self.rng.chance(8);
            let cmd = if generic { gen_generic(&mut self.rng) } else { gen_ours(&mut self.rng) };
            let r = self.exchange(&cmd);
            self.check(&cmd, &r, "plain");
            if generic {
                self.after_generic(&cmd, &r);
            }
        }
    }

    /// MULTI, 1 to 6 commands, EXEC, PING, all in one write.
    pub fn run_multi(&mut self, n: usize) {
        self.phase = "MULTI/EXEC";
        for i in 0..n {
            self.step = i;
            let count = 1 + self.rng.below(6);
            let cmds: Vec<Vec<Vec<u8>>> = (0..count).map(|_| gen_ours(&mut self.rng)).collect();
            self.note(format!(
                "[db {}] MULTI; {}; EXEC",
                self.db,
                cmds.iter().map(|c| show(c)).collect::<Vec<_>>().join("; ")
            ));
            let mut bytes = encode(&["MULTI"]);
            for c in &cmds {
                bytes.extend(encode(c));
            }
            bytes.extend(encode(&["EXEC"]));
            bytes.extend(encode(&["PING"]));
            if let Err(e) = self.conn.send_bytes(&bytes) {
                self.fail(e);
            }
            let read = |chaos: &mut Chaos, what: &str| -> Reply {
                match chaos.conn.read_within(chaos.t.hang) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let blocked = chaos.is_blocked(chaos.conn.id());
                        chaos.fail(format!(
                            "no reply to {what} within {:?} (client blocked: {blocked}; WAIT must be ignored in MULTI)",
                            chaos.t.hang
                        ))
                    }
                    Err(e) => chaos.fail(format!("{what}: {e}")),
                }
            };
            let ok = read(self, "MULTI");
            if ok != Reply::Simple("OK".into()) {
                self.fail(format!("MULTI answered {}", ok.brief()));
            }
            let mut queue_error = false;
            for c in &cmds {
                match read(self, "a queued command") {
                    Reply::Simple(s) if s == "QUEUED" => {}
                    Reply::Err(_) => queue_error = true,
                    other => self.fail(format!("queuing {} answered {}", show(c), other.brief())),
                }
            }
            let exec = read(self, "EXEC");
            self.stats.multi += 1;
            match (&exec, queue_error) {
                (Reply::Err(e), true) if e.starts_with("EXECABORT") => self.stats.exec_aborted += 1,
                (Reply::Array(items), false) if items.len() == cmds.len() => {
                    for (c, r) in cmds.iter().zip(items) {
                        self.check(c, r, "inside MULTI/EXEC");
                    }
                }
                _ => self.fail(format!(
                    "EXEC of {} commands (queue error: {queue_error}) answered {}",
                    cmds.len(),
                    exec.brief()
                )),
            }
            if let Err(e) = self.conn.expect_pong(self.t.hang) {
                self.fail(format!("after EXEC: {e}"));
            }
        }
    }

    /// Commands inside EVAL: one `redis.call`, one `redis.pcall`, or a sequence.
    pub fn run_eval(&mut self, n: usize) {
        self.phase = "EVAL";
        for i in 0..n {
            self.step = i;
            self.stats.scripts += 1;
            match self.rng.below(3) {
                k @ (0 | 1) => {
                    let inner = gen_ours(&mut self.rng);
                    let mut cmd: Vec<Vec<u8>> =
                        vec![b"EVAL".to_vec(), [SCRIPT_CALL, SCRIPT_PCALL][k].into(), b"0".to_vec()];
                    cmd.extend(inner.iter().cloned());
                    let r = self.exchange(&cmd);
                    let upper = String::from_utf8_lossy(&inner[0]).to_ascii_uppercase();
                    if let Err(e) = check_reply(&upper, &r, self.other_type_key(&inner), true) {
                        self.fail(format!("inside EVAL: {e}\n  command: {}", show(&cmd)));
                    }
                    self.stats.commands += 1;
                }
                _ => {
                    let count = 1 + self.rng.below(4);
                    let inners: Vec<Vec<Vec<u8>>> = (0..count).map(|_| gen_ours(&mut self.rng)).collect();
                    let mut cmd: Vec<Vec<u8>> = vec![b"EVAL".to_vec(), SCRIPT_SEQUENCE.into(), b"0".to_vec()];
                    for c in &inners {
                        cmd.push(c.len().to_string().into_bytes());
                        cmd.extend(c.iter().cloned());
                    }
                    let r = self.exchange(&cmd);
                    match &r {
                        Reply::Array(items) if items.len() == inners.len() => {
                            for (c, r) in inners.iter().zip(items) {
                                self.check_in(c, r, "inside an EVAL sequence", true);
                            }
                        }
                        other => self.fail(format!(
                            "EVAL sequence of {} commands answered {}\n  command: {}",
                            inners.len(),
                            other.brief(),
                            show(&cmd)
                        )),
                    }
                }
            }
        }
    }

    /// Random blocking acquires with tiny WAIT timeouts on a handful of keys, releases,
    /// CLIENT UNBLOCK, CLIENT KILL and disconnects, from several connections at once.
    /// A release that grants a waiter, and CLIENT UNBLOCK of that waiter, in one event
    /// loop turn (one write on one connection): the waiter gets exactly one reply, and
    /// holds the lock exactly when that reply is its token.
    pub fn unblock_races_a_grant(&mut self) {
        self.phase = "CLIENT UNBLOCK racing a grant";
        // (acquire, what goes before its ttl, release, info, key): a semaphore of one permit.
        for (acquire, limit, release, info, key) in [
            ("LOCK.ACQUIRE", &[][..], "LOCK.RELEASE", "LOCK.INFO", "chaos:race:m"),
            ("RWLOCK.WLOCK", &[], "RWLOCK.WUNLOCK", "RWLOCK.INFO", "chaos:race:rw"),
            ("SEM.ACQUIRE", &["1"], "SEM.RELEASE", "SEM.INFO", "chaos:race:s"),
        ] {
            let mut first = vec![acquire, key, "A"];
            first.extend_from_slice(limit);
            first.push("600000");
            let r = self.ctl_call(&first);
            if !matches!(r, Reply::Int(_)) {
                self.fail(format!("{first:?} answered {}", r.brief()));
            }
            let mut w = open_conn(self.port, self.t.hang).unwrap_or_else(|e| self.fail(e));
            let mut cmd = vec![acquire, key, "W"];
            cmd.extend_from_slice(limit);
            cmd.extend(["600000", "WAIT", "0"]);
            w.send(&cmd).unwrap_or_else(|e| self.fail(e));
            let deadline = Instant::now() + self.t.slack;
            while !self.is_blocked(w.id()) {
                if Instant::now() > deadline {
                    self.fail(format!("{cmd:?} did not block"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let id = w.id().to_string();
            let mut both = encode(&[release, key, "A"]);
            both.extend(encode(&["CLIENT", "UNBLOCK", &id, "TIMEOUT"]));
            self.ctl.send_bytes(&both).unwrap_or_else(|e| self.fail(e));
            for what in ["release", "CLIENT UNBLOCK"] {
                match self.ctl.read_within(self.t.hang) {
                    Ok(Some(Reply::Int(_))) => {}
                    other => self.fail(format!("{what} answered {other:?}")),
                }
            }
            let r = w
                .read_within(self.t.hang)
                .unwrap_or_else(|e| self.fail(e))
                .unwrap_or_else(|| self.fail(format!("{cmd:?} got no reply")));
            w.send(&["PING"]).unwrap_or_else(|e| self.fail(e));
            if let Err(e) = w.expect_pong(self.t.hang) {
                self.fail(format!("{cmd:?}, granted and unblocked in one turn, answered {} and then: {e}", r.brief()));
            }
            let state = self.ctl_call(&[info, key]);
            let holds = holder_owners(&state).iter().any(|o| o == b"W");
            match r {
                Reply::Int(_) if holds => {}
                Reply::Nil if !holds => {}
                other => self.fail(format!("{cmd:?} answered {} but {info} says {}", other.brief(), state.brief())),
            }
            self.ctl_call(&["DEL", key]);
        }
    }

    pub fn run_blocking(&mut self, duration: Duration) {
        self.unblock_races_a_grant();
        self.phase = "blocking";
        struct Waiter {
            conn: Raw,
            pending: Option<(String, Instant, i64, bool)>,
        }
        const MUTEXES: [&str; 2] = ["chaos:bm1", "chaos:bm2"];
        const RWS: [&str; 2] = ["chaos:brw1", "chaos:brw2"];
        const SEMS: [&str; 2] = ["chaos:bs1", "chaos:bs2"];
        const BOWNERS: [&str; 4] = ["o1", "o2", "o3", "o4"];
        let open = |chaos: &Chaos| open_conn(chaos.port, chaos.t.hang).unwrap_or_else(|e| chaos.fail(e));
        let mut waiters: Vec<Waiter> = (0..6).map(|_| Waiter { conn: open(self), pending: None }).collect();
        let end = Instant::now() + duration;
        let mut step = 0;
        while Instant::now() < end {
            step += 1;
            self.step = step;
            let i = self.rng.below(waiters.len());
            match waiters[i].pending.clone() {
                None => {
                    let roll = self.rng.below(100);
                    let owner = *self.rng.pick(&BOWNERS);
                    // 0: mutex, 1: read-write lock, 2: semaphore (limit 3).
                    let family = self.rng.below(3);
                    let sem = family == 2;
                    let mut key = *self.rng.pick([&MUTEXES, &RWS, &SEMS][family]);
                    if self.rng.chance(4) {
                        key = *self.rng.pick(&[MUTEXES[0], RWS[0], SEMS[0], "chaos:str"]);
                    }
                    let ttl = self.rng.range(5, 300).to_string();
                    if roll < 55 {
                        let name = match family {
                            0 => "LOCK.ACQUIRE",
                            1 => *self.rng.pick(&["RWLOCK.RLOCK", "RWLOCK.WLOCK"]),
                            _ => "SEM.ACQUIRE",
                        };
                        let timeout: i64 = *self.rng.pick(&[0, 0, 1, 1, 2, 5, 10, 30, 100, 300]);
                        let mut cmd = vec![name.to_string(), key.to_string(), owner.to_string()];
                        if sem {
                            cmd.push("3".into());
                        }
                        cmd.push(ttl);
                        if sem && self.rng.chance(70) {
                            cmd.push("COUNT".into());
                            cmd.push(self.rng.pick(&["1", "1", "2", "3"]).to_string());
                        }
                        let waits = self.rng.chance(90);
                        if waits {
                            cmd.push("WAIT".into());
                            cmd.push(timeout.to_string());
                        }
                        let desc = cmd.join(" ");
                        self.note(format!("[waiter {i}] {desc}"));
                        if let Err(e) = waiters[i].conn.send(&cmd) {
                            self.fail(e);
                        }
                        self.stats.blocking_sent += 1;
                        waiters[i].pending = Some((desc, Instant::now(), if waits { timeout } else { 1 }, false));
                    } else {
                        let cmd: Vec<String> = match roll {
                            55..=74 => {
                                let name = match family {
                                    0 => "LOCK.RELEASE",
                                    1 => *self.rng.pick(&["RWLOCK.RUNLOCK", "RWLOCK.WUNLOCK"]),
                                    _ => "SEM.RELEASE",
                                };
                                vec![name.into(), key.into(), owner.into()]
                            }
                            75..=84 => vec![["LOCK.INFO", "RWLOCK.INFO", "SEM.INFO"][family].into(), key.into()],
                            85..=94 => vec![
                                ["LOCK.EXTEND", "RWLOCK.EXTEND", "SEM.EXTEND"][family].into(),
                                key.into(),
                                owner.into(),
                                ttl,
                            ],
                            _ => {
                                self.note(format!("[waiter {i}] reconnect"));
                                waiters[i].conn = open(self);
                                continue;
                            }
                        };
                        self.note(format!("[waiter {i}] {}", cmd.join(" ")));
                        let r = waiters[i]
                            .conn
                            .call_then_ping(&cmd, self.t.hang)
                            .unwrap_or_else(|e| self.fail(format!("{e}\n  command: {cmd:?}")));
                        let cmd: Vec<Vec<u8>> = cmd.into_iter().map(String::into_bytes).collect();
                        self.check(&cmd, &r, "blocking phase");
                    }
                }
                Some((desc, sent, timeout, unblocked)) => match self.rng.below(100) {
                    0..=59 => match waiters[i].conn.read_within(Duration::from_millis(1)) {
                        Ok(Some(r)) => {
                            match &r {
                                Reply::Int(t) if (1..TOKEN_LIMIT).contains(t) => self.stats.blocking_granted += 1,
                                Reply::Nil => self.stats.blocking_nil += 1,
                                Reply::Err(e) if e.starts_with("WRONGTYPE") => {}
                                Reply::Err(e) if e.starts_with("UNBLOCKED") && unblocked => {}
                                // Its owner holds other permits (granted to another of its
                                // waiters, or taken directly): the contract's error.
                                Reply::Err(e) if desc.starts_with("SEM.ACQUIRE") && e.starts_with("ERR owner holds ") => {}
                                other => self.fail(format!("waiter {i}: {desc} answered {}", other.brief())),
                            }
                            self.stats.commands += 1;
                            let check =
                                waiters[i].conn.send(&["PING"]).and_then(|_| waiters[i].conn.expect_pong(self.t.hang));
                            if let Err(e) = check {
                                self.fail(format!("waiter {i} after {desc} answered {}: {e}", r.brief()));
                            }
                            waiters[i].pending = None;
                        }
                        Ok(None) => {
                            let limit = Duration::from_millis(timeout.max(0) as u64) + self.t.slack;
                            if timeout > 0 && sent.elapsed() > limit {
                                self.fail(format!(
                                    "waiter {i}: {desc} has no reply after {:?} (WAIT {timeout} ms)",
                                    sent.elapsed()
                                ));
                            }
                            if unblocked && sent.elapsed() > self.t.slack * 2 {
                                self.fail(format!(
                                    "waiter {i}: {desc} has no reply {:?} after CLIENT UNBLOCK",
                                    sent.elapsed()
                                ));
                            }
                        }
                        Err(e) => self.fail(format!("waiter {i}: {desc}: {e}")),
                    },
                    60..=69 => {
                        self.note(format!("[waiter {i}] disconnect while waiting"));
                        self.stats.disconnects += 1;
                        waiters[i].conn = open(self);
                        waiters[i].pending = None;
                    }
                    70..=75 if !unblocked => {
                        let how = "TIMEOUT"; // (not ERROR: see `exchange`)
                        let id = waiters[i].conn.id().to_string();
                        let r = self.ctl_call(&["CLIENT", "UNBLOCK", &id, how]);
                        self.note(format!("[ctl] CLIENT UNBLOCK waiter {i} {how} -> {}", r.brief()));
                        if r == Reply::Int(1) {
                            self.stats.unblocked += 1;
                            waiters[i].pending = Some((desc, Instant::now(), timeout, true));
                        }
                    }
                    76..=79 => {
                        let id = waiters[i].conn.id().to_string();
                        let r = self.ctl_call(&["CLIENT", "KILL", "ID", &id]);
                        self.note(format!("[ctl] CLIENT KILL waiter {i} -> {}", r.brief()));
                        self.stats.kills += 1;
                        waiters[i].conn = open(self);
                        waiters[i].pending = None;
                    }
                    _ => {}
                },
            }
            if self.rng.chance(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Every waiter still queued must be answered once the (short) leases run out.
        self.phase = "blocking: draining";
        let drain_end = Instant::now() + Duration::from_secs(10) + self.t.slack;
        for (i, w) in waiters.iter_mut().enumerate() {
            if let Some((desc, sent, _, unblocked)) = w.pending.take() {
                let left = drain_end.saturating_duration_since(Instant::now());
                match w.conn.read_within(left) {
                    Ok(Some(Reply::Int(_) | Reply::Nil)) => {}
                    Ok(Some(Reply::Err(e)))
                        if e.starts_with("WRONGTYPE")
                            || (unblocked && e.starts_with("UNBLOCKED"))
                            || (desc.starts_with("SEM.ACQUIRE") && e.starts_with("ERR owner holds ")) => {}
                    Ok(Some(other)) => self.fail(format!("waiter {i}: {desc} answered {}", other.brief())),
                    Ok(None) => {
                        let mut info = Vec::new();
                        for k in MUTEXES.iter().chain(&RWS).chain(&SEMS) {
                            if let Some((cmd, r)) = self.lock_state(k) {
                                info.push(format!("{cmd} {k} = {}", r.brief()));
                            }
                        }
                        self.fail(format!(
                            "waiter {i}: {desc} (sent {:?} ago) was never answered although every lease is short and nobody renews\n  {}",
                            sent.elapsed(),
                            info.join("\n  ")
                        ))
                    }
                    Err(e) => self.fail(format!("waiter {i}: {desc}: {e}")),
                }
            }
        }
        drop(waiters);
        self.expect_no_blocked_clients();
        for k in MUTEXES.iter().chain(&RWS).chain(&SEMS) {
            if let Some((cmd, r)) = self.lock_state(k) {
                let checked = match cmd {
                    "LOCK.INFO" => check_lock_info(&r),
                    "RWLOCK.INFO" => check_rw_info(&r),
                    _ => check_sem_info(&r),
                };
                if let Err(e) = checked {
                    self.fail(format!("{cmd} {k} answered {}: {e}", r.brief()));
                }
            }
        }
        // Waiter queues are empty once every client is gone.
        let deadline = Instant::now() + self.t.slack;
        loop {
            let mut waiting = Vec::new();
            for k in MUTEXES.iter().chain(&RWS).chain(&SEMS) {
                if let Some((cmd, r)) = self.lock_state(k) {
                    let w = r.fields().ok().and_then(|m| get_int(&m, "waiters").ok()).unwrap_or(0);
                    if w != 0 {
                        waiting.push(format!("{cmd} {k}: {}", r.brief()));
                    }
                }
            }
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                self.fail(format!("waiters left in the queues after every client went: {waiting:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The INFO of whatever lock `key` holds now (the blocking phase sometimes puts a
    /// mutex where read-write locks usually are, and the other way round), db 0.
    pub fn lock_state(&mut self, key: &str) -> Option<(&'static str, Reply)> {
        let ty = self.ctl_call(&["TYPE", key]);
        let cmd = match ty.bytes().as_deref() {
            Some(b"lockmutex") | Some(b"none") => "LOCK.INFO",
            Some(b"lockrwlck") => "RWLOCK.INFO",
            Some(b"locksemph") => "SEM.INFO",
            _ => return None,
        };
        Some((cmd, self.ctl_call(&[cmd, key])))
    }

    pub fn expect_no_blocked_clients(&mut self) {
        let deadline = Instant::now() + self.t.slack;
        loop {
            let r = self.ctl_call(&["INFO", "clients"]);
            let text = String::from_utf8_lossy(&r.bytes().unwrap_or_default()).into_owned();
            let blocked = text.lines().find_map(|l| l.trim().strip_prefix("blocked_clients:")).map(str::to_string);
            if blocked.as_deref() == Some("0") {
                return;
            }
            if Instant::now() > deadline {
                self.fail(format!("INFO clients still says blocked_clients:{blocked:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The end: the server answers, nobody is blocked, and the log shows no caught panic.
    pub fn finish(&mut self) {
        self.phase = "finish";
        let r = self.exchange(&[b"PING".to_vec()]);
        if !r.is_pong() {
            self.fail(format!("final PING answered {}", r.brief()));
        }
        if !self.ctl_call(&["PING"]).is_pong() {
            self.fail("final PING on the control connection failed");
        }
        self.expect_no_blocked_clients();
        self.leases_still_end();
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("panicked") || l.contains("crashed by signal") || l.contains("ASSERTION FAILED"))
        {
            self.fail(format!("the server log reports: {line}"));
        }
        // A panic caught at the command boundary still prints its message to stderr.
        let stderr = stderr_of(&self.log);
        if stderr.contains("panicked at") {
            self.fail(format!("the module panicked (caught or not):\n{stderr}"));
        }
    }
}
