//! Test harness for fencelock's integration tests: real `redis-server` processes with the
//! module loaded, one (or two) per test, each on its own port and in its own temp dir.
//!
//! Only std and the `redis` crate are used.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{ConnectionLike, RedisError, Value};

/// A lease long enough never to end during a test (10 minutes).
pub const LONG_TTL: i64 = 600_000;
/// The largest ttl the contract allows: 2^40 ms.
pub const MAX_TTL: i64 = 1 << 40;
/// The contract's text for a bad ttl.
pub const BAD_TTL: &str = "ERR ttl must be an integer between 1 and 1099511627776";
pub const EMPTY_OWNER: &str = "ERR owner must not be empty";
pub const BAD_TOKEN: &str = "ERR token must be a positive integer";
pub const SYNTAX: &str = "ERR syntax error";

/// The wall-clock part of a token issued at `wall_ms`: `(wall_ms - 2025-01-01) << 12`
/// (the module's token clock; tokens stay below 2^53 until 2094).
pub fn token_wall_part(wall_ms: i64) -> i64 {
    (wall_ms - 1_735_689_600_000).max(0) << 12
}

/// Tokens must survive a round trip through a double (Lua, JavaScript).
pub const TOKEN_EXACT_IN_DOUBLE: i64 = 1 << 53;

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

/// The module under test: `$FENCELOCK_MODULE`, else `target/release/libfencelock.so`.
pub fn module_path() -> PathBuf {
    let path = match std::env::var_os("FENCELOCK_MODULE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libfencelock.so"),
    };
    if !path.is_file() {
        panic!(
            "fencelock module not found at {}: run `make build` first \
             (or `cargo build --release`), or set FENCELOCK_MODULE",
            path.display()
        );
    }
    path
}

/// The server under test: `$REDIS_SERVER` (`make compat` sets it), else Debian's
/// `/usr/bin/redis-server`, else `redis-server` on the PATH. Every test starts its servers
/// from this binary.
pub fn redis_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/bin/redis-server");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("redis-server")
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn fresh_dir() -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "fencelock-test-{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        nanos
    ));
    fs::create_dir_all(&dir).expect("create the server's temp dir");
    dir
}

/// Ports are taken below the kernel's ephemeral range (32768+), so that client sockets of
/// parallel tests never sit on a port we want to (re)bind. Each call hands out a
/// different candidate; a candidate that cannot be bound right now is skipped.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = (std::process::id() * 131) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = (LOW + (base + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Fall back on the kernel's choice.
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// Polls `cond` every few ms until it holds; panics with `what` after `timeout`.
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
// Server
// ---------------------------------------------------------------------------------------

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    config: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// A server with the harness's default config.
    pub fn new() -> Server {
        Server::start(&[])
    }

    /// A server with extra config lines (`"appendonly yes"`, `"replicaof 127.0.0.1 6379"`, ...),
    /// given after the defaults so they override them.
    pub fn start(config: &[&str]) -> Server {
        let module = module_path();
        let dir = fresh_dir();
        let config: Vec<String> = config.iter().map(|s| s.to_string()).collect();
        let mut last_err = String::new();
        for _attempt in 0..20 {
            let port = free_port();
            match spawn_and_wait(&module, port, &dir, &config) {
                Ok(child) => return Server { port, dir, config, child: Some(child) },
                Err(e) => {
                    let bind_problem = e.contains("Address already in use")
                        || e.contains("Could not create server TCP listening socket")
                        || e.contains("not our server");
                    if !bind_problem {
                        let _ = fs::remove_dir_all(&dir);
                        panic!("redis-server failed to start: {e}");
                    }
                    last_err = e;
                    let _ = fs::remove_file(dir.join("redis.log"));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("could not start redis-server on a free port: {last_err}");
    }

    /// A replica of `master`, with extra config lines.
    pub fn start_replica_of(master: &Server, config: &[&str]) -> Server {
        let replicaof = format!("replicaof 127.0.0.1 {}", master.port);
        let mut all: Vec<&str> = config.to_vec();
        all.push(&replicaof);
        Server::start(&all)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A fresh RESP2 connection with generous read/write timeouts (a hang fails the test
    /// instead of stalling the suite).
    pub fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A fresh RESP3 connection.
    pub fn conn_resp3(&self) -> redis::Connection {
        connect(&format!("{}?protocol=resp3", self.url()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Prints the tail of the server log to stderr (cargo test shows it for failing tests).
    pub fn dump_log(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "----- redis.log of server on port {} ({}) -----\n{}\n----- end of log -----",
            self.port,
            self.dir.display(),
            tail.join("\n")
        );
    }

    /// Panics (with the log) if the process has exited on its own.
    pub fn assert_alive(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.dump_log();
                self.child = None;
                panic!("redis-server on port {} died: {status}", self.port);
            }
        }
    }

    /// Graceful stop: `SHUTDOWN NOSAVE` (the AOF, if on, is flushed), waiting for the exit.
    pub fn stop(&mut self) {
        self.assert_alive();
        if let Ok(mut c) = try_connect(&self.url()) {
            let _: Result<Value, _> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
        }
        self.wait_exit(Duration::from_secs(20));
    }

    /// `kill -9`: no chance to flush or save anything.
    pub fn kill9(&mut self) {
        self.assert_alive();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port, dir and config (so it loads its RDB/AOF),
    /// waiting until it answers `PING` (i.e. loading is done).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running server");
        let module = module_path();
        let mut last_err = String::new();
        // The port is ours, but give a just-exited process's socket a moment to be freed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match spawn_and_wait(&module, self.port, &self.dir, &self.config) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => {
                    if !(e.contains("Address already in use") || e.contains("not our server")) {
                        self.dump_log();
                        panic!("redis-server failed to restart: {e}");
                    }
                    last_err = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.dump_log();
        panic!("redis-server could not restart on port {}: {last_err}", self.port);
    }

    /// Graceful stop, then start again.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn wait_exit(&mut self, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        self.dump_log();
                        panic!("redis-server on port {} did not shut down in {timeout:?}", self.port);
                    }
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut died = None;
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                died = Some(status);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if panicking || died.is_some() {
            self.dump_log();
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(status) = died {
            if !panicking {
                panic!("redis-server on port {} died during the test: {status}", self.port);
            }
        }
    }
}

fn spawn_and_wait(module: &Path, port: u16, dir: &Path, config: &[String]) -> Result<Child, String> {
    let logfile = dir.join("redis.log");
    let stderr = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(redis_server_bin());
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--loadmodule")
        .arg(module)
        .args(["--enable-debug-command", "yes"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--protected-mode", "no"])
        .args(["--daemonize", "no"])
        .arg("--logfile")
        .arg(&logfile);
    for line in config {
        let mut words = line.split_whitespace();
        let name = words.next().expect("empty config line");
        cmd.arg(format!("--{name}"));
        cmd.args(words);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(stderr));
    let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {}: {e}", redis_server_bin().display()))?;

    let url = format!("redis://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&logfile).unwrap_or_default();
            let err = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(format!("redis-server exited ({status}) on port {port}:\n{log}\n{err}"));
        }
        if let Ok(mut c) = try_connect(&url) {
            let pong: Result<String, _> = redis::cmd("PING").query(&mut c);
            if let Ok(p) = pong {
                if p == "PONG" {
                    // Make sure it is our process that answered, not another test's.
                    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap_or_default();
                    let pid = parse_info(&info).get("process_id").cloned().unwrap_or_default();
                    if pid == child.id().to_string() {
                        return Ok(child);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("not our server answered on port {port}"));
                }
            }
            // LOADING or similar: keep waiting.
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(&logfile).unwrap_or_default();
            return Err(format!("redis-server on port {port} did not answer PING in time:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn try_connect(url: &str) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(30)))?;
    con.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(con)
}

fn connect(url: &str) -> redis::Connection {
    try_connect(url).unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
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
pub fn raw(con: &mut redis::Connection, args: &[&[u8]]) -> Value {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(*a);
    }
    con.req_command(&cmd).unwrap_or_else(|e| panic!("I/O error on {:?}: {e}", show_args(args)))
}

/// Like `raw` but for string arguments.
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

/// Runs a command that must answer an integer.
#[track_caller]
pub fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    let v = ok(con, args);
    match v {
        Value::Int(i) => i,
        other => panic!("{:?} should answer an integer, got {other:?}", args.join(" ")),
    }
}

// ---------------------------------------------------------------------------------------
// Commands of the module
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

/// Parses field/value pairs (a flat array under RESP2, a map under RESP3) into a map.
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

/// Turns a `LOCK.INFO` reply into a `LockInfo` (None for nil), checking its shape.
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
    Some(LockInfo { owner, token: num("token"), ttl: num("ttl"), holds: num("holds"), waiters: num("waiters") })
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

#[track_caller]
pub fn fence_next(con: &mut redis::Connection, key: &str) -> i64 {
    let t = int(con, &["FENCE.NEXT", key]);
    assert!(t > 0, "FENCE.NEXT must answer a positive token, got {t}");
    t
}

/// `FENCE.CHECK`: `Ok(1)` or `Err(error text)`.
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

// ---------------------------------------------------------------------------------------
// INFO and replication
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

/// Waits until no AOF rewrite is running or scheduled, and checks the last one succeeded.
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
pub fn await_bgsave(con: &mut redis::Connection) {
    wait_until(Duration::from_secs(20), "the BGSAVE finished", || {
        info(con, "persistence").get("rdb_bgsave_in_progress").map(String::as_str) == Some("0")
    });
    let i = info(con, "persistence");
    assert_eq!(i.get("rdb_last_bgsave_status").map(String::as_str), Some("ok"), "BGSAVE failed: {i:?}");
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
            last = format!(
                "link {:?}, master offset {m_off:?}, replica offset {r_off:?}",
                ri.get("master_link_status")
            );
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
