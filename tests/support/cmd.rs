//! Commands through the `redis` crate: raw replies, errors, `INFO`, waiting for a
//! condition, persistence and replication in sync.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{ConnectionLike, RedisError, Value};

use super::server::Server;

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// Polls `cond` every few ms until it holds; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// A server and a connection to it, with Redis's active expiry on, or off (`DEBUG
/// SET-ACTIVE-EXPIRE 0`: a lease then ends only by the module's own timer, with nobody
/// looking its key up).
pub fn server_with_active_expire(on: bool) -> (Server, redis::Connection) {
    let s = Server::new();
    let mut c = s.conn();
    if !on {
        ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    }
    (s, c)
}

/// `threads` threads, each on its own connection to `s` with the owner name `t{n}`, run
/// `round(connection, n, owner)` `rounds` times each; returns once every thread is done
/// (a panic in one fails the test).
pub fn contend(
    s: &Server,
    threads: usize,
    rounds: usize,
    round: impl Fn(&mut redis::Connection, usize, &str) + Send + Sync + 'static,
) {
    let round = std::sync::Arc::new(round);
    let handles: Vec<_> = (0..threads)
        .map(|n| {
            let mut con = s.conn();
            let round = round.clone();
            std::thread::spawn(move || {
                let owner = format!("t{n}");
                for _ in 0..rounds {
                    round(&mut con, n, &owner);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a contending thread failed");
    }
}

/// Milliseconds since the Unix epoch on this machine's wall clock (the server's clock too).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Lets `ms` milliseconds of wall-clock time pass. Used only where the passage of time
/// itself is the precondition (e.g. "a lease does not get longer by being saved"), never
/// to wait for an effect.
pub fn let_time_pass(ms: i64) {
    let until = now_ms() + ms;
    wait_until(Duration::from_millis(ms as u64 + 5_000), "wall-clock time passed", || now_ms() > until);
}

// ---------------------------------------------------------------------------------------
// Replies and errors
// ---------------------------------------------------------------------------------------

/// The whole error line as the server sent it, e.g. `ERR syntax error` or
/// `STALE token 5 is older than 7`.
pub fn err_text(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => format!("{e}"),
    }
}

/// Expects an error reply; returns its full text.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(r: redis::RedisResult<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error reply, got {v:?}"),
        Err(e) => {
            assert!(!e.is_io_error(), "I/O error instead of an error reply (server died?): {e}");
            err_text(&e)
        }
    }
}

/// Sends `args` as one command and returns the raw reply (errors, also nested ones in an
/// `EXEC` reply, come back as `Value::ServerError`, not as `Err`).
#[track_caller]
pub fn raw(con: &mut redis::Connection, args: &[&[u8]]) -> Value {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    con.req_command(&cmd).unwrap_or_else(|e| panic!("I/O error on {:?}: {e}", show_args(args)))
}

/// Like `raw` but for string arguments.
#[track_caller]
pub fn raws(con: &mut redis::Connection, args: &[&str]) -> Value {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    raw(con, &bytes)
}

/// The error text of a raw reply, if it is an error.
pub fn value_err(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(match e.details() {
            Some(d) => format!("{} {}", e.code(), d),
            None => e.code().to_string(),
        }),
        _ => None,
    }
}

fn show_args(args: &[&[u8]]) -> String {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

pub fn value_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// The text of a string reply (bulk, simple or verbatim).
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The bytes of a string reply.
pub fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// Runs a command that must succeed; returns the raw reply.
#[track_caller]
pub fn ok(con: &mut redis::Connection, args: &[&str]) -> Value {
    let v = raws(con, args);
    if let Some(e) = value_err(&v) {
        panic!("{:?} answered an error: {e}", args.join(" "));
    }
    v
}

/// Runs a command that must answer an error; returns its text.
#[track_caller]
pub fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    let v = raws(con, args);
    value_err(&v).unwrap_or_else(|| panic!("{:?} should answer an error, got {v:?}", args.join(" ")))
}

/// Runs a command that must answer an error, and at once (within 2 s: it never blocks);
/// with `want`, exactly that error. Returns its text.
#[track_caller]
pub fn assert_err_at_once(con: &mut redis::Connection, args: &[&str], want: Option<&str>) -> String {
    let started = Instant::now();
    let e = err(con, args);
    if let Some(want) = want {
        assert_eq!(e, want, "{args:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{args:?} blocked for {:?}", started.elapsed());
    e
}

/// The names of the fields of `m` (from [`pairs`]), sorted.
pub fn field_names(m: &HashMap<String, Value>) -> Vec<&str> {
    let mut names: Vec<&str> = m.keys().map(String::as_str).collect();
    names.sort();
    names
}

/// Runs a command that must answer an integer.
#[track_caller]
pub fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    let v = ok(con, args);
    match v {
        Value::Int(i) => i,
        other => panic!("{:?} should answer an integer, got {other:?}", args.join(" ")),
    }
}

/// Parses field/value pairs (a flat array under RESP2, a map under RESP3) into a map.
#[track_caller]
pub fn pairs(v: &Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    match v {
        Value::Array(items) => {
            assert!(items.len() % 2 == 0, "field/value pairs expected, got odd-length array {v:?}");
            for kv in items.chunks(2) {
                let k = match &kv[0] {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    other => panic!("field name expected, got {other:?} in {v:?}"),
                };
                assert!(out.insert(k.clone(), kv[1].clone()).is_none(), "field {k} twice in {v:?}");
            }
        }
        Value::Map(items) => {
            for (k, val) in items {
                let k = match k {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    other => panic!("field name expected, got {other:?} in {v:?}"),
                };
                out.insert(k, val.clone());
            }
        }
        other => panic!("field/value pairs expected, got {other:?}"),
    }
    out
}

#[track_caller]
pub fn exists(con: &mut redis::Connection, key: &str) -> bool {
    int(con, &["EXISTS", key]) == 1
}

#[track_caller]
pub fn dbsize(con: &mut redis::Connection) -> i64 {
    int(con, &["DBSIZE"])
}

#[track_caller]
pub fn key_type(con: &mut redis::Connection, key: &str) -> String {
    match ok(con, &["TYPE", key]) {
        Value::SimpleString(s) => s,
        Value::Okay => "OK".into(),
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("TYPE answered {other:?}"),
    }
}

#[track_caller]
pub fn digest(con: &mut redis::Connection) -> String {
    match ok(con, &["DEBUG", "DIGEST"]) {
        Value::SimpleString(s) => s,
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("DEBUG DIGEST answered {other:?}"),
    }
}

/// `DEBUG DIGEST-VALUE key`: the digest of one key's stored value.
#[track_caller]
pub fn digest_value(con: &mut redis::Connection, key: &str) -> String {
    match ok(con, &["DEBUG", "DIGEST-VALUE", key]) {
        Value::Array(v) => match &v[0] {
            Value::SimpleString(s) => s.clone(),
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("DEBUG DIGEST-VALUE {key}: {other:?}"),
        },
        other => panic!("DEBUG DIGEST-VALUE {key}: {other:?}"),
    }
}

/// `PTTL key`.
#[track_caller]
pub fn pttl(con: &mut redis::Connection, key: &str) -> i64 {
    int(con, &["PTTL", key])
}

// ---------------------------------------------------------------------------------------
// INFO
// ---------------------------------------------------------------------------------------

pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
pub fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    parse_info(&text)
}

/// Field `fencelock_<field>` of `INFO fencelock`, as a number.
#[track_caller]
pub fn module_stat(c: &mut redis::Connection, field: &str) -> i64 {
    let i = info(c, "fencelock");
    i.get(&format!("fencelock_{field}")).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("INFO fencelock has no {field}"))
}

/// `blocked_clients` of `INFO clients`.
#[track_caller]
pub fn blocked_clients(c: &mut redis::Connection) -> i64 {
    let i = info(c, "clients");
    i.get("blocked_clients").and_then(|v| v.parse().ok()).expect("INFO clients has blocked_clients")
}

/// `blocked_clients` goes (back) to `n`. Disconnects are noticed asynchronously, so this
/// awaits; a waiter that is never unblocked keeps it above `n` for good.
#[track_caller]
pub fn await_blocked(c: &mut redis::Connection, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = blocked_clients(c);
        if last == n {
            return;
        }
        assert!(Instant::now() < deadline, "blocked_clients stayed at {last}, expected {n}");
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// The server's wall clock (`TIME`), in ms.
#[track_caller]
pub fn server_time_ms(c: &mut redis::Connection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query(c).unwrap();
    s * 1000 + us / 1000
}

// ---------------------------------------------------------------------------------------
// Persistence and replication
// ---------------------------------------------------------------------------------------

/// Waits until no AOF rewrite is running or scheduled, and checks the last one succeeded.
#[track_caller]
pub fn await_aof_rewrite(con: &mut redis::Connection) {
    wait_until(Duration::from_secs(20), "the AOF rewrite finished", || {
        let i = info(con, "persistence");
        i.get("aof_rewrite_in_progress").map(String::as_str) == Some("0")
            && i.get("aof_rewrite_scheduled").map(String::as_str) == Some("0")
    });
    let i = info(con, "persistence");
    assert_eq!(i.get("aof_last_bgrewrite_status").map(String::as_str), Some("ok"), "AOF rewrite failed: {i:?}");
}

/// Waits until no BGSAVE is running, and checks the last one succeeded.
#[track_caller]
pub fn await_bgsave(con: &mut redis::Connection) {
    wait_until(Duration::from_secs(20), "the BGSAVE finished", || {
        info(con, "persistence").get("rdb_bgsave_in_progress").map(String::as_str) == Some("0")
    });
    let i = info(con, "persistence");
    assert_eq!(i.get("rdb_last_bgsave_status").map(String::as_str), Some("ok"), "BGSAVE failed: {i:?}");
}

/// The names of the base files of the AOF (`appendonlydir/*.base.*`), sorted.
pub fn aof_base_files(s: &Server) -> Vec<String> {
    let dir = s.dir.join("appendonlydir");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".base."))
        .collect();
    names.sort();
    names
}

/// Waits until `replica` is linked to `master` and has processed everything the master
/// has sent (equal replication offsets), and both datasets have the same `DEBUG DIGEST`.
pub fn await_sync(master: &Server, replica: &Server) {
    let mut m = master.conn();
    let mut r = replica.conn();
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ri = info(&mut r, "replication");
        let mi = info(&mut m, "replication");
        let up = ri.get("master_link_status").map(String::as_str) == Some("up");
        let m_off = mi.get("master_repl_offset").cloned().unwrap_or_default();
        let r_off = ri.get("slave_repl_offset").cloned().unwrap_or_default();
        if up && !m_off.is_empty() && m_off == r_off {
            let (dm, dr) = (digest(&mut m), digest(&mut r));
            if dm == dr {
                return;
            }
            last = format!("offsets equal ({m_off}) but DEBUG DIGEST differs: master {dm}, replica {dr}");
        } else {
            last =
                format!("link {:?}, master offset {m_off:?}, replica offset {r_off:?}", ri.get("master_link_status"));
        }
        if Instant::now() >= deadline {
            master.dump_log();
            replica.dump_log();
            panic!("replica on port {} never caught up with master on {}: {last}", replica.port, master.port);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts a replica of `master` and waits for its full sync.
pub fn start_synced_replica(master: &Server) -> Server {
    let replica = Server::start_replica_of(master, &[]);
    await_sync(master, &replica);
    await_streaming(master);
    replica
}

/// After a diskless full sync, Redis 7.0 holds the command stream back until the
/// replica's first `REPLCONF ACK` (up to a second later). Waits until the master lists a
/// replica as online with an acknowledged offset equal to its own, so that what the
/// test does next reaches the replica at once.
pub fn await_streaming(master: &Server) {
    let mut m = master.conn();
    wait_until(Duration::from_secs(10), "the master streams to its replica", || {
        let mi = info(&mut m, "replication");
        let own = mi.get("master_repl_offset").cloned().unwrap_or_default();
        mi.get("slave0").is_some_and(|line| {
            line.contains("state=online") && line.split(',').any(|kv| kv == format!("offset={own}"))
        })
    });
}

/// `REPLICAOF NO ONE`, then waits until the server says it is a master.
pub fn promote(r: &mut redis::Connection) {
    ok(r, &["REPLICAOF", "NO", "ONE"]);
    wait_until(Duration::from_secs(5), "the replica became a master", || {
        info(r, "replication").get("role").map(String::as_str) == Some("master")
    });
}

/// A port nothing listens on (a server started and stopped): a replica pointed at it
/// keeps its data and hears nothing more.
pub fn dead_port() -> u16 {
    let dead = Server::new();
    let port = dead.port;
    drop(dead);
    port
}
