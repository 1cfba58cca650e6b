//! Fault suite, part 8: bad input.
//!
//! - `random_commands_answer_exactly_once`: a seeded generator of commands of ours (every
//!   command, the internal `FENCELOCK.*` ones too, names in mixed case, arity 0 to 8,
//!   arguments that are empty, binary, 1 MiB long, numbers at and around every limit,
//!   malformed numbers, `WAIT` tokens, keys of other types and of each of our types), plus
//!   a few generic Redis commands on lock keys (DEL, RENAME, MOVE, PEXPIRE, COPY, DUMP,
//!   DEBUG DIGEST-VALUE, DEBUG RELOAD, FLUSHDB ...). Every command goes out as raw RESP
//!   followed by `PING`, and exactly one reply and then `PONG` must come back, with
//!   nothing after. The same commands also run in random MULTI/EXEC blocks and inside
//!   `EVAL` (`redis.call`, `redis.pcall`, and sequences), and a phase of random blocking
//!   acquires with tiny `WAIT` timeouts, `CLIENT UNBLOCK`, `CLIENT KILL` and disconnects.
//!   The server must stay up, answer `PING`, and end with `blocked_clients:0`.
//! - `random_commands_under_valgrind`: the same generator (smaller) and the corrupt-payload
//!   cases that exercise the loaders' error paths, against `redis-server` under
//!   `valgrind --leak-check=full`; after `SHUTDOWN NOSAVE` the log must say
//!   `ERROR SUMMARY: 0 errors`, with no definitely lost block from the module.
//! - `corrupt_dump_payloads_are_refused` (default config) and
//!   `corrupt_dump_payloads_are_refused_with_sanitize_dump_payload`: DUMPs of every type
//!   of ours, truncated at every length, with random byte flips, with flips and the CRC64
//!   trailer recomputed (so they reach the module's loaders), with every field set to
//!   extreme values, plus handcrafted payloads. `RESTORE` must answer an error, or OK with
//!   a key in a state the commands could have produced; never a crash or a hang.
//! - `restored_dump_behaves_like_the_original`: a valid DUMP restored under another name
//!   (and on another server) reports the same state, digests the same, is released and
//!   reentered like the original, and its lease still ends at the original deadline,
//!   handing the lock to a waiter.
//!
//! Sizes: `CHAOS_FULL=1` runs everything at full size (`make chaos`); otherwise a short
//! version runs. `CHAOS_SEED=<n>` replays a run: every test prints its seed.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{module_path, now_ms, redis_server_bin, Server, MAX_TTL};

// =======================================================================================
// Run size and seeds
// =======================================================================================

fn full() -> bool {
    matches!(std::env::var("CHAOS_FULL").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The seed of one test: `CHAOS_SEED`, else fresh. Printed so a failure can be replayed.
fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => parse_seed(&s).unwrap_or_else(|| panic!("CHAOS_SEED={s:?} is not an integer")),
        Err(_) => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40) ^ fnv(test.as_bytes())
        }
    };
    eprintln!("chaos_input::{test}: seed {seed} (replay with CHAOS_SEED={seed}{})", repro_env());
    seed
}

fn repro_env() -> &'static str {
    if full() {
        " CHAOS_FULL=1"
    } else {
        ""
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| (h ^ u64::from(*c)).wrapping_mul(0x100_0000_01b3))
}

/// SplitMix64: small, seedable, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: &str) -> Rng {
        Rng(seed ^ fnv(stream.as_bytes()))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
}

// =======================================================================================
// A raw RESP connection: we write every byte and read exactly one reply at a time
// =======================================================================================

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    /// RESP3 double, boolean, big number: not used by our commands.
    Other(String),
}

impl Reply {
    /// A short rendering for messages (a 1 MiB bulk is not printed whole).
    fn brief(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Err(e) => format!("-{}", esc_str(e)),
            Reply::Int(i) => format!(":{i}"),
            Reply::Bulk(b) => esc(b),
            Reply::Nil => "(nil)".into(),
            Reply::Array(items) => {
                let inner: Vec<String> = items.iter().take(12).map(Reply::brief).collect();
                let more = if items.len() > 12 { format!(", ... {} items", items.len()) } else { String::new() };
                format!("[{}{more}]", inner.join(", "))
            }
            Reply::Map(kvs) => {
                let inner: Vec<String> =
                    kvs.iter().take(12).map(|(k, v)| format!("{}: {}", k.brief(), v.brief())).collect();
                format!("{{{}}}", inner.join(", "))
            }
            Reply::Other(s) => format!("({s})"),
        }
    }

    fn is_pong(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "PONG")
    }

    /// Every error text in this reply, nested ones (EXEC, scripts) included.
    fn errors(&self) -> Vec<&str> {
        match self {
            Reply::Err(e) => vec![e.as_str()],
            Reply::Array(items) => items.iter().flat_map(Reply::errors).collect(),
            Reply::Map(kvs) => kvs.iter().flat_map(|(k, v)| k.errors().into_iter().chain(v.errors())).collect(),
            _ => vec![],
        }
    }
}

fn esc_str(s: &str) -> String {
    if s.len() > 300 {
        format!("{}...", &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)])
    } else {
        s.to_string()
    }
}

/// Renders bytes exactly (as a quoted string with \xNN escapes), except that long runs
/// are summarised: `<1048576 bytes of 'x'>` is the generator's huge argument.
fn esc(b: &[u8]) -> String {
    if b.len() > 64 {
        if b.iter().all(|c| *c == b[0]) {
            return format!("<{} bytes of {:?}>", b.len(), b[0] as char);
        }
        return format!("{}...<{} bytes in all>", esc(&b[..40]), b.len());
    }
    let mut s = String::from("\"");
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

fn show(cmd: &[Vec<u8>]) -> String {
    cmd.iter().map(|a| esc(a)).collect::<Vec<_>>().join(" ")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|p| from + p)
}

/// Parses one reply at `pos`: `Ok(None)` while it is incomplete.
fn parse(buf: &[u8], pos: usize) -> Result<Option<(Reply, usize)>, String> {
    if pos >= buf.len() {
        return Ok(None);
    }
    let Some(end) = find_crlf(buf, pos + 1) else { return Ok(None) };
    let line = &buf[pos + 1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let num = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("protocol error: bad number {}", esc(line)))
    };
    let next = end + 2;
    let kind = buf[pos];
    Ok(Some(match kind {
        b'+' => (Reply::Simple(text()), next),
        b'-' => (Reply::Err(text()), next),
        b':' => (Reply::Int(num()?), next),
        b'_' => (Reply::Nil, next),
        b',' | b'#' | b'(' => (Reply::Other(text()), next),
        b'$' | b'!' | b'=' => {
            let n = num()?;
            if n < 0 {
                (Reply::Nil, next)
            } else {
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                if &buf[next + n..next + n + 2] != b"\r\n" {
                    return Err("protocol error: bulk string not terminated by CRLF".into());
                }
                let data = buf[next..next + n].to_vec();
                let reply = if kind == b'!' {
                    Reply::Err(String::from_utf8_lossy(&data).into_owned())
                } else {
                    Reply::Bulk(data)
                };
                (reply, next + n + 2)
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = num()?;
            if n < 0 {
                (Reply::Nil, next)
            } else {
                let pairs = matches!(kind, b'%' | b'|');
                let count = if pairs { 2 * n as usize } else { n as usize };
                let mut items = Vec::with_capacity(count.min(1024));
                let mut at = next;
                for _ in 0..count {
                    match parse(buf, at)? {
                        Some((r, p)) => {
                            items.push(r);
                            at = p;
                        }
                        None => return Ok(None),
                    }
                }
                if kind == b'|' {
                    // Attributes precede the reply they describe.
                    return parse(buf, at);
                }
                let reply = if pairs {
                    Reply::Map(items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect())
                } else {
                    Reply::Array(items)
                };
                (reply, at)
            }
        }
        other => {
            return Err(format!(
                "protocol error: unexpected type byte {other:#04x} in {}",
                esc(&buf[pos..buf.len().min(pos + 40)])
            ))
        }
    }))
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    id: i64,
}

impl Conn {
    fn open(port: u16, timeout: Duration) -> Result<Conn, String> {
        let addr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to port {port}: {e}"))?;
        stream.set_nodelay(true).ok();
        stream.set_write_timeout(Some(Duration::from_secs(120))).ok();
        let mut c = Conn { stream, buf: Vec::new(), chunk: vec![0; 256 * 1024], id: 0 };
        c.id = match c.call(&["CLIENT", "ID"], timeout)? {
            Reply::Int(i) => i,
            other => return Err(format!("CLIENT ID answered {}", other.brief())),
        };
        Ok(c)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("write failed (server gone?): {e}"))
    }

    /// One reply, or `Ok(None)` when none is complete within `timeout`.
    fn read(&mut self, timeout: Duration) -> Result<Option<Reply>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((r, used)) = parse(&self.buf, 0)? {
                self.buf.drain(..used);
                return Ok(Some(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1)))).ok();
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err("connection closed by the server".into()),
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A], timeout: Duration) -> Result<Reply, String> {
        self.send(&encode(args))?;
        self.read(timeout)?.ok_or_else(|| format!("no reply within {timeout:?}"))
    }

    /// Nothing more to read: no buffered bytes and none waiting on the socket.
    fn quiet(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "unexpected extra bytes after the replies: {}",
                esc(&self.buf[..self.buf.len().min(200)])
            ));
        }
        self.stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut one = [0u8; 256];
        let peeked = self.stream.peek(&mut one);
        self.stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        match peeked {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(n) => Err(format!("unexpected extra bytes after the replies: {}", esc(&one[..n]))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(format!("peek failed: {e}")),
        }
    }

    /// Sends `cmd` and `PING` together; returns the command's one reply after checking
    /// that `PONG` follows it and nothing else does.
    fn call_then_ping<A: AsRef<[u8]>>(&mut self, cmd: &[A], timeout: Duration) -> Result<Reply, String> {
        let mut bytes = encode(cmd);
        bytes.extend(encode(&["PING"]));
        self.send(&bytes)?;
        let r = self.read(timeout)?.ok_or_else(|| format!("no reply within {timeout:?}"))?;
        self.expect_pong(timeout)?;
        Ok(r)
    }

    fn expect_pong(&mut self, timeout: Duration) -> Result<(), String> {
        match self.read(timeout)? {
            Some(p) if p.is_pong() => self.quiet(),
            Some(other) => Err(format!("expected PONG after the reply, got a second reply {}", other.brief())),
            None => Err(format!(
                "no PONG within {timeout:?} after the reply (the command answered twice, or PING was swallowed)"
            )),
        }
    }
}

fn int_of(r: &Reply) -> Option<i64> {
    match r {
        Reply::Int(i) => Some(*i),
        Reply::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Reply::Simple(s) => s.parse().ok(),
        _ => None,
    }
}

fn text_of(r: &Reply) -> Option<Vec<u8>> {
    match r {
        Reply::Bulk(b) => Some(b.clone()),
        Reply::Simple(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

fn field_map(r: &Reply) -> Result<BTreeMap<String, Reply>, String> {
    let pairs: Vec<(Reply, Reply)> = match r {
        Reply::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
        }
        Reply::Map(kvs) => kvs.clone(),
        other => return Err(format!("field/value pairs expected, got {}", other.brief())),
    };
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        let k = text_of(&k).ok_or_else(|| format!("field name expected, got {}", k.brief()))?;
        let k = String::from_utf8_lossy(&k).into_owned();
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("field {k} twice"));
        }
    }
    Ok(out)
}

// =======================================================================================
// Replies that make sense
// =======================================================================================

/// Tokens from the module's clock stay below 2^53 until 2094 (README).
const TOKEN_LIMIT: i64 = 1 << 53;

fn get<'a>(m: &'a BTreeMap<String, Reply>, f: &str) -> Result<&'a Reply, String> {
    m.get(f).ok_or_else(|| format!("field {f} missing"))
}

fn get_int(m: &BTreeMap<String, Reply>, f: &str) -> Result<i64, String> {
    let v = get(m, f)?;
    int_of(v).ok_or_else(|| format!("field {f} is not an integer: {}", v.brief()))
}

/// `LOCK.INFO`: nil, or a holder with a positive token below 2^53, a ttl within the
/// contract's 2^40 ms, at least one hold; or no holder and at least one waiter.
fn check_lock_info(r: &Reply) -> Result<(), String> {
    if *r == Reply::Nil {
        return Ok(());
    }
    let m = field_map(r)?;
    let waiters = get_int(&m, "waiters")?;
    if waiters < 0 {
        return Err(format!("negative waiters {waiters}"));
    }
    match get(&m, "owner")? {
        Reply::Nil => {
            let holds = get_int(&m, "holds")?;
            if holds != 0 || waiters == 0 {
                return Err(format!("free lock with holds {holds} and waiters {waiters}"));
            }
        }
        owner => {
            let owner = text_of(owner).ok_or_else(|| format!("owner is {}", owner.brief()))?;
            if owner.is_empty() {
                return Err("empty owner".into());
            }
            let token = get_int(&m, "token")?;
            if !(1..TOKEN_LIMIT).contains(&token) {
                return Err(format!("token {token} outside 1..2^53"));
            }
            let ttl = get_int(&m, "ttl")?;
            if !(0..=MAX_TTL).contains(&ttl) {
                return Err(format!("ttl {ttl} outside 0..=2^40"));
            }
            let holds = get_int(&m, "holds")?;
            if holds < 1 {
                return Err(format!("holds {holds} < 1"));
            }
        }
    }
    Ok(())
}

/// `RWLOCK.INFO`: nil, or holders that respect the lock's rules: at most one writer,
/// and readers beside a writer only as its own downgrade.
fn check_rw_info(r: &Reply) -> Result<(), String> {
    if *r == Reply::Nil {
        return Ok(());
    }
    let m = field_map(r)?;
    let waiters = get_int(&m, "waiters")?;
    if waiters < 0 {
        return Err(format!("negative waiters {waiters}"));
    }
    let mode = text_of(get(&m, "mode")?).ok_or("mode is not a string")?;
    let Reply::Array(holders) = get(&m, "holders")? else { return Err("holders is not an array".into()) };
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for h in holders {
        let hm = field_map(h)?;
        let owner = text_of(get(&hm, "owner")?).ok_or("holder owner is not a string")?;
        if owner.is_empty() {
            return Err("holder with an empty owner".into());
        }
        let token = get_int(&hm, "token")?;
        if !(1..TOKEN_LIMIT).contains(&token) {
            return Err(format!("holder token {token} outside 1..2^53"));
        }
        let ttl = get_int(&hm, "ttl")?;
        if !(0..=MAX_TTL).contains(&ttl) {
            return Err(format!("holder ttl {ttl} outside 0..=2^40"));
        }
        let holds = get_int(&hm, "holds")?;
        if holds < 1 {
            return Err(format!("holder holds {holds} < 1"));
        }
        match text_of(get(&hm, "mode")?).as_deref() {
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

/// The owners that hold a lock, from a `LOCK.INFO` or `RWLOCK.INFO` reply.
fn holder_owners(info: &Reply) -> Vec<Vec<u8>> {
    let Ok(m) = field_map(info) else { return Vec::new() };
    if let Some(owner) = m.get("owner") {
        return text_of(owner).into_iter().collect();
    }
    match m.get("holders") {
        Some(Reply::Array(hs)) => {
            hs.iter().filter_map(|h| field_map(h).ok().and_then(|hm| hm.get("owner").and_then(text_of))).collect()
        }
        _ => Vec::new(),
    }
}

/// The error text of a panic caught at the module's command boundary.
fn is_internal_error(e: &str) -> bool {
    let l = e.to_ascii_lowercase();
    l.contains("internal error") || l.contains("panic")
}

/// Checks one reply to one command of ours (`upper` is its name in capitals).
/// `other_type_key` says the key argument holds a string, list, hash or zset. `lua`: the
/// reply went through a script, where numbers are doubles (a fence may legally record a
/// token beyond 2^53, e.g. i64::MAX by FENCE.CHECK, which Lua cannot carry exactly).
fn check_reply(upper: &str, r: &Reply, other_type_key: bool, lua: bool) -> Result<(), String> {
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
        if e.to_ascii_lowercase().contains("unknown command") {
            return Err(format!("command of ours unknown: {e}"));
        }
        // Lock grants take tokens from the server's clock, which only their own grants
        // (and tokens loaded from disk or a master) may raise: it never runs out.
        if matches!(upper, "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK") && e.contains("exhausted") {
            return Err(format!("{upper} could not be granted: {e} (something pushed the server-wide token floor to the end of the token space)"));
        }
        return Ok(());
    }
    if other_type_key {
        return Err(format!("{upper} on a key of another type answered {} instead of an error", r.brief()));
    }
    let bad = || Err(format!("{upper} answered {}", r.brief()));
    match upper {
        "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK" => match r {
            Reply::Nil => Ok(()),
            Reply::Int(t) if (1..TOKEN_LIMIT).contains(t) => Ok(()),
            _ => bad(),
        },
        "LOCK.RELEASE" | "LOCK.EXTEND" | "RWLOCK.RUNLOCK" | "RWLOCK.WUNLOCK" | "RWLOCK.EXTEND" => match r {
            Reply::Int(0 | 1) => Ok(()),
            _ => bad(),
        },
        "LOCK.INFO" => check_lock_info(r).map_err(|e| format!("LOCK.INFO answered {}: {e}", r.brief())),
        "RWLOCK.INFO" => check_rw_info(r).map_err(|e| format!("RWLOCK.INFO answered {}: {e}", r.brief())),
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

const OURS: [&str; 17] = [
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
];

/// Keys of other types, created first and kept in db 0 (nothing the generator sends
/// may remove them, and they are made again after a flush).
const OTHER_KEYS: [&str; 4] = ["chaos:str", "chaos:list", "chaos:hash", "chaos:zset"];
/// Keys our commands create and destroy at will.
const LOCK_KEYS: [&str; 8] =
    ["chaos:m1", "chaos:m2", "chaos:rw1", "chaos:rw2", "chaos:f1", "chaos:f2", "chaos:new", "chaos:{tag}x"];
const OWNERS: [&str; 3] = ["alice", "bob", "carol"];
const NUMBERS: [&str; 41] = [
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
const WAIT_WORDS: [&str; 7] = ["WAIT", "wait", "Wait", "WAITS", "WAI", "WAIT ", "NOWAIT"];
const MODES: [&str; 7] = ["read", "write", "READ", "Write", "none", "", "reader"];
const BINARY: &[u8] = b"\x00\xff\x00bin\r\n\xff\xfe\x80";

fn huge() -> &'static [u8] {
    static HUGE: OnceLock<Vec<u8>> = OnceLock::new();
    HUGE.get_or_init(|| vec![b'x'; 1 << 20])
}

/// The wall-clock part of a token issued at `ms` (the module's token clock).
fn wall_part(ms: i64) -> i64 {
    (ms - 1_735_689_600_000).max(0) << 12
}

fn mixed_case(rng: &mut Rng, name: &str) -> Vec<u8> {
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

fn arg_number(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => rng.range(-3, 400).to_string().into_bytes(),
        1 => (wall_part(now_ms()) + rng.range(-5, 5)).to_string().into_bytes(),
        2 => (now_ms() + rng.range(-100_000, 100_000)).to_string().into_bytes(),
        _ => rng.pick(&NUMBERS).as_bytes().to_vec(),
    }
}

fn arg_key(rng: &mut Rng) -> Vec<u8> {
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

fn arg_owner(rng: &mut Rng) -> Vec<u8> {
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

fn arg_ttl(rng: &mut Rng) -> Vec<u8> {
    match rng.below(20) {
        0..=12 => rng.range(1, 300).to_string().into_bytes(),
        13..=15 => "600000".into(),
        _ => arg_number(rng),
    }
}

/// Anything at all.
fn arg_any(rng: &mut Rng) -> Vec<u8> {
    match rng.below(200) {
        0 => huge().to_vec(),
        1..=40 => arg_key(rng),
        41..=70 => arg_owner(rng),
        71..=140 => arg_number(rng),
        141..=155 => rng.pick(&WAIT_WORDS).as_bytes().to_vec(),
        156..=165 => rng.pick(&MODES).as_bytes().to_vec(),
        166..=175 => Vec::new(),
        176..=185 => BINARY.to_vec(),
        _ => {
            let n = rng.below(12);
            (0..n).map(|_| rng.next() as u8).collect()
        }
    }
}

/// One command of ours: often in the right shape with one thing wrong (or nothing),
/// otherwise any arity from 0 to 8 with arguments from anywhere.
fn gen_ours(rng: &mut Rng) -> Vec<Vec<u8>> {
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
    }
    use Slot::*;
    let slots: &[Slot] = match name {
        "LOCK.ACQUIRE" | "RWLOCK.RLOCK" | "RWLOCK.WLOCK" | "LOCK.EXTEND" | "RWLOCK.EXTEND" => &[Key, Owner, Ttl],
        "LOCK.RELEASE" | "RWLOCK.RUNLOCK" | "RWLOCK.WUNLOCK" => &[Key, Owner],
        "FENCE.CHECK" => &[Key, Num],
        "FENCELOCK.MUTEX" => &[Key, Owner, Num, Num, Num],
        "FENCELOCK.RWHOLD" => &[Key, Mode, Owner, Num, Num, Num],
        "FENCELOCK.RWDROP" => &[Key, Mode, Owner],
        "FENCELOCK.FENCE" => &[Key, Num, Num],
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
            }
        } else {
            arg_any(rng)
        };
        cmd.push(arg);
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
fn gen_generic(rng: &mut Rng) -> Vec<Vec<u8>> {
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
            rng.pick(&["lockmutex", "lockrwlck", "lockfence"]).to_string(),
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
struct Timing {
    /// After this long without a reply, ask whether the client is blocked.
    probe_after: Duration,
    /// A reply that takes longer is a hang.
    hang: Duration,
    /// Extra time a server may take beyond a WAIT timeout or a lease.
    slack: Duration,
}

impl Timing {
    fn native() -> Timing {
        Timing { probe_after: Duration::from_millis(100), hang: Duration::from_secs(20), slack: Duration::from_secs(5) }
    }

    fn valgrind() -> Timing {
        Timing {
            probe_after: Duration::from_millis(1500),
            hang: Duration::from_secs(180),
            slack: Duration::from_secs(60),
        }
    }
}

#[derive(Default, Debug)]
struct Stats {
    commands: usize,
    errors: usize,
    nils: usize,
    ints: usize,
    other: usize,
    unblocked: usize,
    multi: usize,
    exec_aborted: usize,
    scripts: usize,
    blocking_sent: usize,
    blocking_granted: usize,
    blocking_nil: usize,
    disconnects: usize,
    kills: usize,
}

const SCRIPT_CALL: &str = "return redis.call(unpack(ARGV))";
const SCRIPT_PCALL: &str = "return redis.pcall(unpack(ARGV))";
const SCRIPT_SEQUENCE: &str = "local out = {}
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + j] end
  i = i + n + 1
  out[#out + 1] = redis.pcall(unpack(cmd))
end
return out";

struct Chaos {
    rng: Rng,
    seed: u64,
    port: u16,
    log: PathBuf,
    t: Timing,
    conn: Conn,
    ctl: Conn,
    db: i64,
    phase: &'static str,
    step: usize,
    history: VecDeque<String>,
    stats: Stats,
}

impl Chaos {
    fn new(port: u16, seed: u64, stream: &str, log: PathBuf, t: Timing) -> Chaos {
        let conn = Conn::open(port, t.hang).unwrap_or_else(|e| panic!("{e}"));
        let ctl = Conn::open(port, t.hang).unwrap_or_else(|e| panic!("{e}"));
        Chaos {
            rng: Rng::new(seed, stream),
            seed,
            port,
            log,
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

    fn fail(&self, msg: impl AsRef<str>) -> ! {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let crashed = crash_report(&log);
        let headline = if crashed.is_some() { "THE SERVER CRASHED. " } else { "" };
        let tail = stderr_of(&self.log) + &crashed.unwrap_or_else(|| tail(&log, 40));
        let history: Vec<String> = self.history.iter().cloned().collect();
        panic!(
            "{headline}{}\n  seed {} (replay: CHAOS_SEED={}{} cargo test --release --test chaos_input), phase {}, step {}\n  \
             last commands (oldest first; <N bytes of 'x'> is the 1 MiB argument):\n    {}\n  server log tail:\n{}",
            msg.as_ref(),
            self.seed,
            self.seed,
            repro_env(),
            self.phase,
            self.step,
            history.join("\n    "),
            tail
        );
    }

    fn note(&mut self, what: String) {
        if self.history.len() == 12 {
            self.history.pop_front();
        }
        self.history.push_back(what);
    }

    fn ctl_call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        match self.ctl.call(args, self.t.hang) {
            Ok(r) => r,
            Err(e) => {
                let shown: Vec<Vec<u8>> = args.iter().map(|a| a.as_ref().to_vec()).collect();
                self.fail(format!("control connection: {} failed: {e}", show(&shown)))
            }
        }
    }

    /// The other-type keys, made again (db 0).
    fn recreate_others(&mut self) {
        for k in OTHER_KEYS {
            self.ctl_call(&["DEL", k]);
        }
        self.ctl_call(&["SET", "chaos:str", "v"]);
        self.ctl_call(&["RPUSH", "chaos:list", "a", "b"]);
        self.ctl_call(&["HSET", "chaos:hash", "f", "v"]);
        self.ctl_call(&["ZADD", "chaos:zset", "1", "m"]);
    }

    /// The server still ends leases by itself: a 1 ms lease goes, with its key.
    fn leases_still_end(&mut self) {
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

    fn setup(&mut self) {
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
        let token = (wall_part(now_ms()) + 1_000_000).to_string();
        let internals: Vec<Vec<&str>> = vec![
            vec!["FENCELOCK.MUTEX", "chaos:int", "mallory", &token, &deadline, "1"],
            vec!["FENCELOCK.RWHOLD", "chaos:int", "write", "mallory", &token, &deadline, "1"],
            vec!["FENCELOCK.RWDROP", "chaos:rw1", "read", "bob"],
            vec!["FENCELOCK.FENCE", "chaos:f1", "9223372036854775806", "9223372036854775806"],
            vec!["FENCELOCK.MUTEX", "chaos:m1", "mallory", &token, &deadline, "1"],
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

    fn other_type_key(&self, cmd: &[Vec<u8>]) -> bool {
        self.db == 0 && cmd.get(1).is_some_and(|k| OTHER_KEYS.iter().any(|o| o.as_bytes() == k.as_slice()))
    }

    fn check(&mut self, cmd: &[Vec<u8>], r: &Reply, context: &str) {
        self.check_in(cmd, r, context, false)
    }

    fn check_in(&mut self, cmd: &[Vec<u8>], r: &Reply, context: &str, lua: bool) {
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

    fn is_blocked(&mut self, id: i64) -> bool {
        let r = self.ctl_call(&["CLIENT", "LIST", "ID", &id.to_string()]);
        let text = text_of(&r).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("flags="))
            .is_some_and(|flags| flags.contains('b'))
    }

    /// Sends one command and PING; returns the command's reply. A command that blocks
    /// (a WAIT on a busy lock) is released with CLIENT UNBLOCK, which must answer it.
    fn exchange(&mut self, cmd: &[Vec<u8>]) -> Reply {
        self.note(format!("[db {}] {}", self.db, show(cmd)));
        let mut bytes = encode(cmd);
        bytes.extend(encode(&["PING"]));
        if let Err(e) = self.conn.send(&bytes) {
            self.fail(format!("{e}\n  command: {}", show(cmd)));
        }
        let start = Instant::now();
        let mut unblocked = false;
        let reply = loop {
            let slice = if unblocked { self.t.hang } else { self.t.probe_after };
            match self.conn.read(slice) {
                Ok(Some(r)) => break r,
                Ok(None) if start.elapsed() >= self.t.hang => {
                    self.fail(format!("no reply after {:?}\n  command: {}", start.elapsed(), show(cmd)))
                }
                Ok(None) if !unblocked => {
                    if self.is_blocked(self.conn.id) {
                        // TIMEOUT, the contract's mode (answers nil). Not ERROR: Redis 7.0
                        // answers -UNBLOCKED even to a client whose grant is already queued
                        // for delivery (a second reply; see `unblock_races_a_grant`).
                        self.ctl_call(&["CLIENT", "UNBLOCK", &self.conn.id.to_string(), "TIMEOUT"]);
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

    fn after_generic(&mut self, cmd: &[Vec<u8>], r: &Reply) {
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

    fn run_plain(&mut self, n: usize) {
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
    fn run_multi(&mut self, n: usize) {
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
            if let Err(e) = self.conn.send(&bytes) {
                self.fail(e);
            }
            let read = |chaos: &mut Chaos, what: &str| -> Reply {
                match chaos.conn.read(chaos.t.hang) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        let blocked = chaos.is_blocked(chaos.conn.id);
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
    fn run_eval(&mut self, n: usize) {
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
    fn unblock_races_a_grant(&mut self) {
        self.phase = "CLIENT UNBLOCK racing a grant";
        for (acquire, release, info, key) in [
            ("LOCK.ACQUIRE", "LOCK.RELEASE", "LOCK.INFO", "chaos:race:m"),
            ("RWLOCK.WLOCK", "RWLOCK.WUNLOCK", "RWLOCK.INFO", "chaos:race:rw"),
        ] {
            let r = self.ctl_call(&[acquire, key, "A", "600000"]);
            if !matches!(r, Reply::Int(_)) {
                self.fail(format!("{acquire} {key} A answered {}", r.brief()));
            }
            let mut w = Conn::open(self.port, self.t.hang).unwrap_or_else(|e| self.fail(e));
            let cmd = [acquire, key, "W", "600000", "WAIT", "0"];
            w.send(&encode(&cmd)).unwrap_or_else(|e| self.fail(e));
            let deadline = Instant::now() + self.t.slack;
            while !self.is_blocked(w.id) {
                if Instant::now() > deadline {
                    self.fail(format!("{cmd:?} did not block"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let id = w.id.to_string();
            let mut both = encode(&[release, key, "A"]);
            both.extend(encode(&["CLIENT", "UNBLOCK", &id, "TIMEOUT"]));
            self.ctl.send(&both).unwrap_or_else(|e| self.fail(e));
            for what in ["release", "CLIENT UNBLOCK"] {
                match self.ctl.read(self.t.hang) {
                    Ok(Some(Reply::Int(_))) => {}
                    other => self.fail(format!("{what} answered {other:?}")),
                }
            }
            let r = w
                .read(self.t.hang)
                .unwrap_or_else(|e| self.fail(e))
                .unwrap_or_else(|| self.fail(format!("{cmd:?} got no reply")));
            w.send(&encode(&["PING"])).unwrap_or_else(|e| self.fail(e));
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

    fn run_blocking(&mut self, duration: Duration) {
        self.unblock_races_a_grant();
        self.phase = "blocking";
        struct Waiter {
            conn: Conn,
            pending: Option<(String, Instant, i64, bool)>,
        }
        const MUTEXES: [&str; 2] = ["chaos:bm1", "chaos:bm2"];
        const RWS: [&str; 2] = ["chaos:brw1", "chaos:brw2"];
        const BOWNERS: [&str; 4] = ["o1", "o2", "o3", "o4"];
        let open = |chaos: &Chaos| Conn::open(chaos.port, chaos.t.hang).unwrap_or_else(|e| chaos.fail(e));
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
                    let rw = self.rng.chance(50);
                    let mut key = if rw { *self.rng.pick(&RWS) } else { *self.rng.pick(&MUTEXES) };
                    if self.rng.chance(4) {
                        key = *self.rng.pick(&[MUTEXES[0], RWS[0], "chaos:str"]);
                    }
                    let ttl = self.rng.range(5, 300).to_string();
                    if roll < 55 {
                        let name = if rw { *self.rng.pick(&["RWLOCK.RLOCK", "RWLOCK.WLOCK"]) } else { "LOCK.ACQUIRE" };
                        let timeout: i64 = *self.rng.pick(&[0, 0, 1, 1, 2, 5, 10, 30, 100, 300]);
                        let mut cmd = vec![name.to_string(), key.to_string(), owner.to_string(), ttl];
                        let waits = self.rng.chance(90);
                        if waits {
                            cmd.push("WAIT".into());
                            cmd.push(timeout.to_string());
                        }
                        let desc = cmd.join(" ");
                        self.note(format!("[waiter {i}] {desc}"));
                        if let Err(e) = waiters[i].conn.send(&encode(&cmd)) {
                            self.fail(e);
                        }
                        self.stats.blocking_sent += 1;
                        waiters[i].pending = Some((desc, Instant::now(), if waits { timeout } else { 1 }, false));
                    } else {
                        let cmd: Vec<String> = match roll {
                            55..=74 => {
                                let name = if rw {
                                    *self.rng.pick(&["RWLOCK.RUNLOCK", "RWLOCK.WUNLOCK"])
                                } else {
                                    "LOCK.RELEASE"
                                };
                                vec![name.into(), key.into(), owner.into()]
                            }
                            75..=84 => vec![if rw { "RWLOCK.INFO" } else { "LOCK.INFO" }.into(), key.into()],
                            85..=94 => vec![
                                if rw { "RWLOCK.EXTEND" } else { "LOCK.EXTEND" }.into(),
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
                    0..=59 => match waiters[i].conn.read(Duration::from_millis(1)) {
                        Ok(Some(r)) => {
                            match &r {
                                Reply::Int(t) if (1..TOKEN_LIMIT).contains(t) => self.stats.blocking_granted += 1,
                                Reply::Nil => self.stats.blocking_nil += 1,
                                Reply::Err(e) if e.starts_with("WRONGTYPE") => {}
                                Reply::Err(e) if e.starts_with("UNBLOCKED") && unblocked => {}
                                other => self.fail(format!("waiter {i}: {desc} answered {}", other.brief())),
                            }
                            self.stats.commands += 1;
                            let check = waiters[i]
                                .conn
                                .send(&encode(&["PING"]))
                                .and_then(|_| waiters[i].conn.expect_pong(self.t.hang));
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
                        let id = waiters[i].conn.id.to_string();
                        let r = self.ctl_call(&["CLIENT", "UNBLOCK", &id, how]);
                        self.note(format!("[ctl] CLIENT UNBLOCK waiter {i} {how} -> {}", r.brief()));
                        if r == Reply::Int(1) {
                            self.stats.unblocked += 1;
                            waiters[i].pending = Some((desc, Instant::now(), timeout, true));
                        }
                    }
                    76..=79 => {
                        let id = waiters[i].conn.id.to_string();
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
                match w.conn.read(left) {
                    Ok(Some(Reply::Int(_) | Reply::Nil)) => {}
                    Ok(Some(Reply::Err(e)))
                        if e.starts_with("WRONGTYPE") || (unblocked && e.starts_with("UNBLOCKED")) => {}
                    Ok(Some(other)) => self.fail(format!("waiter {i}: {desc} answered {}", other.brief())),
                    Ok(None) => {
                        let mut info = Vec::new();
                        for k in MUTEXES.iter().chain(&RWS) {
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
        for k in MUTEXES.iter().chain(&RWS) {
            if let Some((cmd, r)) = self.lock_state(k) {
                let checked = if cmd == "LOCK.INFO" { check_lock_info(&r) } else { check_rw_info(&r) };
                if let Err(e) = checked {
                    self.fail(format!("{cmd} {k} answered {}: {e}", r.brief()));
                }
            }
        }
        // Waiter queues are empty once every client is gone.
        let deadline = Instant::now() + self.t.slack;
        loop {
            let mut waiting = Vec::new();
            for k in MUTEXES.iter().chain(&RWS) {
                if let Some((cmd, r)) = self.lock_state(k) {
                    let w = field_map(&r).ok().and_then(|m| get_int(&m, "waiters").ok()).unwrap_or(0);
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
    fn lock_state(&mut self, key: &str) -> Option<(&'static str, Reply)> {
        let ty = self.ctl_call(&["TYPE", key]);
        let cmd = match text_of(&ty).as_deref() {
            Some(b"lockmutex") | Some(b"none") => "LOCK.INFO",
            Some(b"lockrwlck") => "RWLOCK.INFO",
            _ => return None,
        };
        Some((cmd, self.ctl_call(&[cmd, key])))
    }

    fn expect_no_blocked_clients(&mut self) {
        let deadline = Instant::now() + self.t.slack;
        loop {
            let r = self.ctl_call(&["INFO", "clients"]);
            let text = String::from_utf8_lossy(&text_of(&r).unwrap_or_default()).into_owned();
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
    fn finish(&mut self) {
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

/// What the server wrote to stderr (a Rust panic message lands there), from the
/// `stderr.log` next to `redis.log`.
fn stderr_of(log: &Path) -> String {
    let text = log.parent().map(|d| fs::read_to_string(d.join("stderr.log")).unwrap_or_default()).unwrap_or_default();
    if text.trim().is_empty() {
        String::new()
    } else {
        // From the first panic message on, if any.
        let from = text.find("panicked at").and_then(|i| text[..i].rfind('\n').map(|j| j + 1)).unwrap_or(0);
        let lines: Vec<&str> = text[from..].lines().collect();
        let shown =
            if lines.len() > 40 { [&lines[..25], &["  ..."], &lines[lines.len() - 8..]].concat() } else { lines };
        format!("server stderr:\n{}\n", shown.join("\n"))
    }
}

/// The start of Redis's crash report (what crashed, and the stack), if the log has one.
fn crash_report(log: &str) -> Option<String> {
    let start = log.find("REDIS BUG REPORT START")?;
    let start = log[..start].rfind('\n').map_or(0, |i| i + 1);
    let from = log[..start].lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let report: Vec<&str> = log[start..].lines().take_while(|l| !l.contains("------ INFO OUTPUT")).take(90).collect();
    Some(format!("(server crashed)\n{from}\n{}", report.join("\n")))
}

fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

// =======================================================================================
// Test: random commands, one reply each
// =======================================================================================

#[test]
fn random_commands_answer_exactly_once() {
    let seed = test_seed("random_commands_answer_exactly_once");
    let big = full();
    let mut server = Server::start(&[]);
    let started = Instant::now();
    let mut chaos = Chaos::new(server.port, seed, "plain", server.dir.join("redis.log"), Timing::native());
    chaos.setup();
    chaos.run_plain(if big { 60_000 } else { 4_000 });
    chaos.run_multi(if big { 3_000 } else { 300 });
    chaos.run_eval(if big { 3_000 } else { 300 });
    chaos.run_blocking(if big { Duration::from_secs(30) } else { Duration::from_secs(3) });
    chaos.finish();
    if !alive(server.pid()) {
        chaos.fail("the server process is gone");
    }
    server.assert_alive();
    eprintln!("random_commands_answer_exactly_once: {:?} in {:?}", chaos.stats, started.elapsed());
}

// =======================================================================================
// CRC64 (Jones, as Redis computes it for DUMP) and RDB encoding of module values
// =======================================================================================

/// Redis's crc64: Jones polynomial 0xad93d23594c935a9, reflected in and out, init 0,
/// no final xor. Bitwise, which is plenty for payloads of a few hundred bytes.
fn crc64(data: &[u8]) -> u64 {
    const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5; // 0xad93d23594c935a9 bit-reversed
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY_REFLECTED } else { crc >> 1 };
        }
    }
    crc
}

#[test]
fn crc64_matches_redis_test_vector() {
    // Redis's own check in crc64.c.
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

/// Appends the CRC64 of `body` (payload and RDB version), little-endian, as DUMP does.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&crc64(body).to_le_bytes());
    out
}

fn rdb_len(out: &mut Vec<u8>, v: u64) {
    if v < 64 {
        out.push(v as u8);
    } else if v < 16384 {
        out.push(0x40 | (v >> 8) as u8);
        out.push(v as u8);
    } else if v <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// One value a module saved: `RedisModule_SaveUnsigned`/`SaveSigned` (opcode 2, a
/// length-encoded u64) or `SaveStringBuffer` (opcode 5, an RDB string).
#[derive(Debug, Clone, PartialEq)]
enum Field {
    U(u64),
    S(Vec<u8>),
}

fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Field::U(v) => {
                out.push(2);
                rdb_len(&mut out, *v);
            }
            Field::S(s) => {
                out.push(5);
                rdb_len(&mut out, s.len() as u64);
                out.extend_from_slice(s);
            }
        }
    }
    out
}

fn read_len(b: &[u8], at: &mut usize) -> Option<(u64, bool)> {
    let first = *b.get(*at)?;
    *at += 1;
    Some(match first >> 6 {
        0 => (u64::from(first & 0x3f), false),
        1 => {
            let second = *b.get(*at)?;
            *at += 1;
            ((u64::from(first & 0x3f) << 8) | u64::from(second), false)
        }
        2 if first == 0x80 => {
            let v = u32::from_be_bytes(b.get(*at..*at + 4)?.try_into().ok()?);
            *at += 4;
            (u64::from(v), false)
        }
        2 if first == 0x81 => {
            let v = u64::from_be_bytes(b.get(*at..*at + 8)?.try_into().ok()?);
            *at += 8;
            (v, false)
        }
        3 => (u64::from(first & 0x3f), true),
        _ => return None,
    })
}

/// A DUMP of one of our keys, taken apart: RDB type, module id (type id and encoding
/// version), the saved fields, RDB version.
#[derive(Debug, Clone)]
struct Dump {
    name: &'static str,
    raw: Vec<u8>,
    module_id: u64,
    fields: Vec<Field>,
    version: [u8; 2],
}

impl Dump {
    fn parse(name: &'static str, raw: &[u8]) -> Dump {
        assert!(raw.len() > 12, "{name}: DUMP too short: {}", hex(raw));
        let (body, crc) = raw.split_at(raw.len() - 8);
        assert_eq!(
            crc64(body).to_le_bytes(),
            crc,
            "{name}: our CRC64 differs from the one Redis put in DUMP {}: the test's crc64 is wrong",
            hex(raw)
        );
        let version = [body[body.len() - 2], body[body.len() - 1]];
        let payload = &body[..body.len() - 2];
        assert_eq!(payload[0], 7, "{name}: RDB type {} is not RDB_TYPE_MODULE_2 (7)", payload[0]);
        let mut at = 1;
        let (module_id, _) = read_len(payload, &mut at).expect("module id");
        let mut fields = Vec::new();
        loop {
            let op = payload[at];
            at += 1;
            match op {
                0 => break,
                2 => fields.push(Field::U(read_len(payload, &mut at).expect("unsigned").0)),
                5 => {
                    let (len, encoded) = read_len(payload, &mut at).expect("string length");
                    assert!(!encoded, "{name}: our owners are saved plain, got an encoded string in {}", hex(raw));
                    fields.push(Field::S(payload[at..at + len as usize].to_vec()));
                    at += len as usize;
                }
                other => panic!("{name}: unexpected module opcode {other} in {}", hex(raw)),
            }
        }
        assert_eq!(at, payload.len(), "{name}: bytes after the EOF opcode in {}", hex(raw));
        let d = Dump { name, raw: raw.to_vec(), module_id, fields, version };
        assert_eq!(
            d.build(7, module_id, &d.fields, true),
            d.raw,
            "{name}: re-encoding the parsed DUMP does not give it back"
        );
        d
    }

    /// The payload of `fields` under `module_id`, sealed with a correct CRC.
    fn build(&self, rdb_type: u8, module_id: u64, fields: &[Field], eof: bool) -> Vec<u8> {
        self.build_raw(rdb_type, module_id, &encode_fields(fields), eof)
    }

    fn build_raw(&self, rdb_type: u8, module_id: u64, body: &[u8], eof: bool) -> Vec<u8> {
        let mut out = vec![rdb_type];
        rdb_len(&mut out, module_id);
        out.extend_from_slice(body);
        if eof {
            out.push(0);
        }
        out.extend_from_slice(&self.version);
        seal(&out)
    }

    /// Everything but the CRC (payload and RDB version).
    fn body(&self) -> &[u8] {
        &self.raw[..self.raw.len() - 8]
    }
}

// =======================================================================================
// Corrupt payloads
// =======================================================================================

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Error, or OK with a sane key.
    Any,
    /// The CRC is wrong: Redis must refuse.
    Refused,
    /// A valid payload (checks the test's own encoder).
    Accepted,
}

struct Case {
    label: String,
    bytes: Vec<u8>,
    expect: Expect,
}

fn case(label: String, bytes: Vec<u8>, expect: Expect) -> Case {
    Case { label, bytes, expect }
}

const INTERESTING_U64: [u64; 16] = [
    0,
    1,
    2,
    63,
    64,
    16383,
    16384,
    u32::MAX as u64,
    1 << 40,
    (1 << 41) + 7,
    1 << 53,
    (1 << 53) + 1,
    1 << 62,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX, // -1 as signed
];

/// Structured corruptions of one DUMP: each field set to extreme values, removed,
/// doubled, or replaced by the other kind; all with a valid CRC, so they reach the
/// module's loader.
fn field_cases(d: &Dump) -> Vec<Case> {
    let mut out = Vec::new();
    let now = now_ms();
    for (i, f) in d.fields.iter().enumerate() {
        let mut with = |label: String, v: Field| {
            let mut fields = d.fields.clone();
            fields[i] = v;
            out.push(case(
                format!("{}: field {i} {label}", d.name),
                d.build(7, d.module_id, &fields, true),
                Expect::Any,
            ));
        };
        match f {
            Field::U(_) => {
                for v in INTERESTING_U64 {
                    with(format!("= {v} ({} signed)", v as i64), Field::U(v));
                }
                for (what, v) in [
                    ("now - 1 (a past deadline)", now - 1),
                    ("now + 2^40 + 60000 (beyond the longest lease)", now + MAX_TTL + 60_000),
                    ("a token from one hour ahead", wall_part(now + 3_600_000)),
                ] {
                    with(format!("= {v} ({what})"), Field::U(v as u64));
                }
                with("as a string \"5\"".into(), Field::S(b"5".to_vec()));
            }
            Field::S(_) => {
                for (what, v) in [
                    ("empty", Vec::new()),
                    ("NUL", vec![0]),
                    ("binary", BINARY.to_vec()),
                    ("300 bytes", vec![b'o'; 300]),
                ] {
                    with(format!("= {what}"), Field::S(v));
                }
                with("as an unsigned 7".into(), Field::U(7));
            }
        }
        let mut fields = d.fields.clone();
        fields.remove(i);
        out.push(case(format!("{}: field {i} removed", d.name), d.build(7, d.module_id, &fields, true), Expect::Any));
        let mut fields = d.fields.clone();
        fields.insert(i, d.fields[i].clone());
        out.push(case(format!("{}: field {i} doubled", d.name), d.build(7, d.module_id, &fields, true), Expect::Any));
    }
    out
}

/// Byte-level corruptions of one DUMP.
fn byte_cases(d: &Dump, rng: &mut Rng, big: bool) -> Vec<Case> {
    let raw = &d.raw;
    let body = d.body();
    let mut out = Vec::new();
    // Truncated at every length: the CRC no longer matches.
    for n in 0..raw.len() {
        out.push(case(format!("{}: truncated to {n} bytes", d.name), raw[..n].to_vec(), Expect::Refused));
    }
    // Truncated payload with the version and a recomputed CRC: the loader reads past the end.
    let payload = &body[..body.len() - 2];
    for n in 0..payload.len() {
        let mut b = payload[..n].to_vec();
        b.extend_from_slice(&d.version);
        out.push(case(format!("{}: payload truncated to {n} bytes, CRC recomputed", d.name), seal(&b), Expect::Any));
    }
    // Random flips, CRC left alone.
    for _ in 0..if big { 400 } else { 40 } {
        let mut b = raw.clone();
        let at = rng.below(b.len());
        b[at] ^= 1 + rng.below(255) as u8;
        out.push(case(format!("{}: byte {at} flipped to {:#04x}, CRC not fixed", d.name, b[at]), b, Expect::Refused));
    }
    // Bit flips with the CRC recomputed: every bit at full size, a sample otherwise.
    let mut flips: Vec<(usize, u8)> = (0..body.len()).flat_map(|i| (0..8).map(move |bit| (i, 1u8 << bit))).collect();
    if !big {
        for k in 0..flips.len() {
            let j = k + rng.below(flips.len() - k);
            flips.swap(k, j);
        }
        flips.truncate(90);
    }
    for (at, mask) in flips {
        let mut b = body.to_vec();
        b[at] ^= mask;
        out.push(case(format!("{}: byte {at} ^= {mask:#04x}, CRC recomputed", d.name), seal(&b), Expect::Any));
    }
    // Bytes set to values that mean something in RDB encodings, CRC recomputed.
    let specials = [0x00u8, 0xff, 0x7f, 0x80, 0x81, 0x40, 0xc0, 0xc3, 0x02, 0x05, 0x01];
    let mut sets: Vec<(usize, u8)> = (0..body.len()).flat_map(|i| specials.iter().map(move |v| (i, *v))).collect();
    if !big {
        for k in 0..sets.len() {
            let j = k + rng.below(sets.len() - k);
            sets.swap(k, j);
        }
        sets.truncate(60);
    }
    for (at, v) in sets {
        if body[at] == v {
            continue;
        }
        let mut b = body.to_vec();
        b[at] = v;
        out.push(case(format!("{}: byte {at} = {v:#04x}, CRC recomputed", d.name), seal(&b), Expect::Any));
    }
    // Several random bytes, inserted bytes, CRC recomputed.
    for _ in 0..if big { 600 } else { 40 } {
        let mut b = body.to_vec();
        let label = if rng.chance(50) {
            for _ in 0..2 + rng.below(3) {
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
            }
            "2-4 random bytes"
        } else {
            let at = rng.below(b.len() - 2);
            let n = 1 + rng.below(8);
            for _ in 0..n {
                b.insert(at, rng.next() as u8);
            }
            "random bytes inserted"
        };
        out.push(case(format!("{}: {label} ({}), CRC recomputed", d.name, hex(&b)), seal(&b), Expect::Any));
    }
    out
}

/// Handcrafted payloads: valid CRC, nonsense inside.
fn handcrafted_cases(m: &Dump, rw: &Dump, f: &Dump) -> Vec<Case> {
    use Field::{S, U};
    let now = now_ms();
    let token = wall_part(now) as u64;
    let later = (now + 600_000) as u64;
    let mut out = Vec::new();
    let mut add = |label: &str, d: &Dump, fields: Vec<Field>, expect: Expect| {
        out.push(case(format!("handcrafted {}: {label}", d.name), d.build(7, d.module_id, &fields, true), expect));
    };
    let hold = |mode: u64, owner: &str, token: u64, deadline: u64, holds: u64| {
        vec![U(mode), S(owner.into()), U(token), U(deadline), U(holds)]
    };
    // Mutex: owner, token, deadline, holds.
    add("a valid lock (encoder check)", m, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Accepted);
    add("empty owner", m, vec![S(vec![]), U(token), U(later), U(1)], Expect::Any);
    add("negative token", m, vec![S(b"x".to_vec()), U(-5i64 as u64), U(later), U(1)], Expect::Any);
    add("token 0", m, vec![S(b"x".to_vec()), U(0), U(later), U(1)], Expect::Any);
    add("zero holds", m, vec![S(b"x".to_vec()), U(token), U(later), U(0)], Expect::Any);
    add("holds 2^63", m, vec![S(b"x".to_vec()), U(token), U(later), U(1 << 63)], Expect::Any);
    add("deadline in the past", m, vec![S(b"x".to_vec()), U(token), U(1), U(1)], Expect::Any);
    add("no fields", m, vec![], Expect::Any);
    add("only the owner", m, vec![S(b"x".to_vec())], Expect::Any);
    add("a fifth field", m, vec![S(b"x".to_vec()), U(token), U(later), U(1), U(1)], Expect::Any);
    // Read-write lock: count, then (mode, owner, token, deadline, holds) per hold.
    let two = |a: Vec<Field>, b: Vec<Field>| [vec![U(2)], a, b].concat();
    add("a valid reader (encoder check)", rw, [vec![U(1)], hold(1, "r", token, later, 1)].concat(), Expect::Accepted);
    add(
        "downgrade: writer and reader of one owner",
        rw,
        two(hold(0, "w", token, later, 1), hold(1, "w", token + 1, later, 1)),
        Expect::Any,
    );
    add("two writers", rw, two(hold(0, "w1", token, later, 1), hold(0, "w2", token + 1, later, 1)), Expect::Any);
    add(
        "a writer and another owner's read hold",
        rw,
        two(hold(0, "w", token, later, 1), hold(1, "r", token + 1, later, 1)),
        Expect::Any,
    );
    add("count 0", rw, vec![U(0)], Expect::Any);
    add("count 3 with 1 hold", rw, [vec![U(3)], hold(1, "r", token, later, 1)].concat(), Expect::Any);
    add(
        "count 1 with 2 holds",
        rw,
        [vec![U(1)], hold(1, "r", token, later, 1), hold(1, "s", token, later, 1)].concat(),
        Expect::Any,
    );
    add("count 2^62", rw, [vec![U(1 << 62)], hold(1, "r", token, later, 1)].concat(), Expect::Any);
    add("mode 2", rw, [vec![U(1)], hold(2, "r", token, later, 1)].concat(), Expect::Any);
    add("mode -1", rw, [vec![U(1)], hold(u64::MAX, "r", token, later, 1)].concat(), Expect::Any);
    add("empty owner", rw, [vec![U(1)], hold(1, "", token, later, 1)].concat(), Expect::Any);
    add("negative token", rw, [vec![U(1)], hold(1, "r", -3i64 as u64, later, 1)].concat(), Expect::Any);
    add("zero holds", rw, [vec![U(1)], hold(1, "r", token, later, 0)].concat(), Expect::Any);
    add("holds 2^63", rw, [vec![U(1)], hold(1, "r", token, later, 1 << 63)].concat(), Expect::Any);
    add(
        "the same reader twice",
        rw,
        two(hold(1, "r", token, later, 1), hold(1, "r", token + 1, later, 1)),
        Expect::Any,
    );
    add("one reader's lease over", rw, two(hold(1, "r", token, 5, 1), hold(1, "s", token + 1, later, 1)), Expect::Any);
    // Fence: highest, issued.
    add("a valid fence (encoder check)", f, vec![U(token + 10), U(token)], Expect::Accepted);
    add("issued above highest", f, vec![U(5), U(6)], Expect::Any);
    add("negative highest", f, vec![U(-1i64 as u64), U(0)], Expect::Any);
    add("zero and zero", f, vec![U(0), U(0)], Expect::Any);
    add("highest i64::MAX, issued 0 (FENCE.CHECK can record that)", f, vec![U(i64::MAX as u64), U(0)], Expect::Any);
    add("issued i64::MAX", f, vec![U(i64::MAX as u64), U(i64::MAX as u64)], Expect::Any);
    add("a third field", f, vec![U(5), U(5), U(5)], Expect::Any);
    add("a string instead of highest", f, vec![S(b"5".to_vec()), U(5)], Expect::Any);
    // One type's fields under another type's id.
    add("fence fields under the mutex id", m, vec![U(5), U(5)], Expect::Any);
    add("mutex fields under the fence id", f, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Any);
    add("mutex fields under the rwlock id", rw, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Any);
    // Encoding versions, module ids, RDB types, RDB versions, framing.
    for d in [m, rw, f] {
        for encver in [0u64, 2, 1023] {
            let id = (d.module_id & !1023) | encver;
            out.push(case(
                format!("handcrafted {}: encoding version {encver}", d.name),
                d.build(7, id, &d.fields, true),
                Expect::Any,
            ));
        }
        out.push(case(
            format!("handcrafted {}: unknown module type id", d.name),
            d.build(7, 0x1234_5678_9abc_d401, &d.fields, true),
            Expect::Any,
        ));
        for t in [0u8, 6, 2, 100] {
            out.push(case(
                format!("handcrafted {}: RDB type {t}", d.name),
                d.build(t, d.module_id, &d.fields, true),
                Expect::Any,
            ));
        }
        out.push(case(
            format!("handcrafted {}: no EOF opcode", d.name),
            d.build(7, d.module_id, &d.fields, false),
            Expect::Any,
        ));
        let mut body = encode_fields(&d.fields);
        body.extend_from_slice(&[0, 0xde, 0xad]);
        out.push(case(
            format!("handcrafted {}: bytes after EOF", d.name),
            d.build_raw(7, d.module_id, &body, false),
            Expect::Any,
        ));
        let mut newer = d.body().to_vec();
        let n = newer.len();
        newer[n - 2..].copy_from_slice(&[0xff, 0xff]);
        out.push(case(format!("handcrafted {}: RDB version 65535", d.name), seal(&newer), Expect::Any));
        // Opcodes Redis knows but our loaders never ask for (float, double, signed).
        for op in [1u8, 3, 4, 9] {
            let mut body = vec![op, 0x01];
            body.extend(encode_fields(&d.fields));
            out.push(case(
                format!("handcrafted {}: opcode {op} first", d.name),
                d.build_raw(7, d.module_id, &body, true),
                Expect::Any,
            ));
        }
        // A string whose length claims far more than there is (the allocation fails or the read does).
        for claim in [1u64 << 20, 1 << 31, 1 << 62] {
            let mut body = vec![5];
            rdb_len(&mut body, claim);
            body.extend_from_slice(b"abc");
            out.push(case(
                format!("handcrafted {}: string of claimed length {claim}", d.name),
                d.build_raw(7, d.module_id, &body, true),
                Expect::Any,
            ));
        }
        // LZF-compressed and integer-encoded strings where an owner is expected.
        let mut body = vec![5, 0xc3];
        rdb_len(&mut body, 4);
        rdb_len(&mut body, 100);
        body.extend_from_slice(&[0x1f, 0xff, 0xff, 0xff]);
        out.push(case(
            format!("handcrafted {}: corrupt LZF string", d.name),
            d.build_raw(7, d.module_id, &body, true),
            Expect::Any,
        ));
    }
    let mut body = vec![5, 0xc0, 42];
    body.extend(encode_fields(&[U(token), U(later), U(1)]));
    out.push(case(
        "handcrafted lockmutex: integer-encoded owner 42".into(),
        m.build_raw(7, m.module_id, &body, true),
        Expect::Any,
    ));
    out
}

/// A server to RESTORE into, that a case may hang, crash or poison.
trait Target {
    fn port(&self) -> u16;
    fn log_tail(&self) -> String;
    fn is_alive(&self) -> bool;
    /// Replaces the server with a fresh one; false when that is not possible.
    fn restart(&mut self) -> bool;
}

struct Harnessed {
    server: Option<Server>,
    config: Vec<String>,
}

impl Harnessed {
    fn start(config: &[&str]) -> Harnessed {
        Harnessed { server: Some(Server::start(config)), config: config.iter().map(|s| s.to_string()).collect() }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("server")
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Target for Harnessed {
    fn port(&self) -> u16 {
        self.server().port
    }

    fn log_tail(&self) -> String {
        let log = self.server().log();
        stderr_of(&self.server().dir.join("redis.log")) + &crash_report(&log).unwrap_or_else(|| tail(&log, 30))
    }

    fn is_alive(&self) -> bool {
        alive(self.server().pid())
    }

    fn restart(&mut self) -> bool {
        if let Some(old) = self.server.take() {
            // Dropping a server that died panics (the harness reports it): expected here.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        }
        let config: Vec<&str> = self.config.iter().map(String::as_str).collect();
        self.server = Some(Server::start(&config));
        true
    }
}

struct Failure {
    category: String,
    label: String,
    detail: String,
    payload: Vec<u8>,
    log: String,
}

/// Feeds cases to `RESTORE chaos:dst 0 <payload> REPLACE` and judges the outcome.
struct Restorer<'a> {
    target: &'a mut dyn Target,
    conn: Conn,
    t: Timing,
    /// Judge the state of accepted keys (off under valgrind: memory only there).
    judge: bool,
    reload_percent: u32,
    rng: Rng,
    last_probe: i64,
    failures: Vec<Failure>,
    max_failures: usize,
    cases: usize,
    accepted: usize,
}

const DST: &str = "chaos:dst";

impl<'a> Restorer<'a> {
    fn new(target: &'a mut dyn Target, t: Timing, judge: bool, rng: Rng) -> Restorer<'a> {
        let conn = Conn::open(target.port(), t.hang).unwrap_or_else(|e| panic!("{e}"));
        Restorer {
            target,
            conn,
            t,
            judge,
            reload_percent: 10,
            rng,
            last_probe: 0,
            failures: Vec::new(),
            max_failures: std::env::var("CHAOS_MAX_FAILURES").ok().and_then(|v| v.parse().ok()).unwrap_or(if full() {
                40
            } else {
                15
            }),
            cases: 0,
            accepted: 0,
        }
    }

    fn done(&self) -> bool {
        self.failures.len() >= self.max_failures
    }

    /// One command, one reply, within the hang limit; a dead server is "crash".
    fn q<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, String> {
        let shown = || args.iter().map(|a| esc(a.as_ref())).collect::<Vec<_>>().join(" ");
        match self.conn.call(args, self.t.hang) {
            Ok(r) => {
                if let Some(e) = r.errors().into_iter().find(|e| is_internal_error(e)) {
                    return Err(format!("panic: {} answered an internal error: {e}", shown()));
                }
                Ok(r)
            }
            Err(e) => Err(self.classify(&format!("{} failed: {e}", shown()))),
        }
    }

    fn classify(&self, what: &str) -> String {
        if !self.target.is_alive() {
            format!("crash: the server died: {what}")
        } else if what.contains("no reply") {
            format!("hang: the server stopped answering: {what}")
        } else {
            format!("connection: {what}")
        }
    }

    fn run(&mut self, c: &Case) {
        if self.done() {
            return;
        }
        self.cases += 1;
        match self.try_case(c) {
            Ok(accepted) => self.accepted += accepted as usize,
            Err(detail) => {
                let category = detail.split(':').next().unwrap_or("").to_string();
                let log = self.target.log_tail();
                self.failures.push(Failure { category, label: c.label.clone(), detail, payload: c.bytes.clone(), log });
                if !self.target.restart() {
                    panic!("{}", self.report());
                }
                self.conn = Conn::open(self.target.port(), self.t.hang).unwrap_or_else(|e| panic!("{e}"));
                self.last_probe = 0;
            }
        }
    }

    fn try_case(&mut self, c: &Case) -> Result<bool, String> {
        let cmd: [&[u8]; 5] = [b"RESTORE", DST.as_bytes(), b"0", &c.bytes, b"REPLACE"];
        let r = self.conn.call_then_ping(&cmd, self.t.hang).map_err(|e| self.classify(&format!("RESTORE: {e}")))?;
        let accepted = match &r {
            Reply::Err(e) if is_internal_error(e) => return Err(format!("panic: RESTORE answered {e}")),
            Reply::Err(e) if c.expect == Expect::Accepted => {
                return Err(format!("harness: a valid payload was refused: {e}"))
            }
            Reply::Err(_) => false,
            Reply::Simple(s) if s == "OK" => {
                if c.expect == Expect::Refused {
                    return Err("accepted bad CRC: RESTORE took a payload whose checksum is wrong".into());
                }
                true
            }
            other => return Err(format!("unexpected reply: RESTORE answered {}", other.brief())),
        };
        if accepted {
            self.sanity()?;
            if self.judge {
                self.leases_still_end()?;
            }
        }
        // The server's token clock must still work, and stay below 2^53.
        let probe = self.q(&["FENCE.NEXT", "chaos:probe"])?;
        match probe {
            Reply::Int(t) if t > self.last_probe && (t < TOKEN_LIMIT || !self.judge) => self.last_probe = t,
            other => {
                return Err(format!(
                    "token clock poisoned: after this payload was {}, FENCE.NEXT on an unrelated key answered {} (previous {})",
                    if accepted { "accepted" } else { "refused" },
                    other.brief(),
                    self.last_probe
                ))
            }
        }
        if self.rng.chance(20) {
            match self.q(&["LOCK.ACQUIRE", "chaos:probe:m", "p", "100000"])? {
                Reply::Int(t) if t > 0 && (t < TOKEN_LIMIT || !self.judge) => {}
                other => {
                    return Err(format!(
                        "token clock poisoned: LOCK.ACQUIRE on an unrelated key answered {}",
                        other.brief()
                    ))
                }
            }
            self.q(&["LOCK.RELEASE", "chaos:probe:m", "p"])?;
        }
        self.conn.quiet().map_err(|e| format!("reply count: {e}"))?;
        Ok(accepted)
    }

    /// The restored key is in a state our commands could have produced.
    fn sanity(&mut self) -> Result<(), String> {
        let ty = self.q(&["TYPE", DST])?;
        let ty = String::from_utf8_lossy(&text_of(&ty).unwrap_or_default()).into_owned();
        match ty.as_str() {
            "lockmutex" => {
                let info = self.q(&["LOCK.INFO", DST])?;
                if self.judge {
                    check_lock_info(&info)
                        .map_err(|e| format!("insane state: LOCK.INFO answered {}: {e}", info.brief()))?;
                }
                if info == Reply::Nil {
                    self.must_vanish()?;
                } else {
                    // The holder can take it again and release it.
                    let m = field_map(&info).map_err(|e| format!("insane state: {e}"))?;
                    let owner = text_of(get(&m, "owner")?).unwrap_or_default();
                    let token = get_int(&m, "token").unwrap_or(0);
                    let again = self.q(&[b"LOCK.ACQUIRE".as_slice(), DST.as_bytes(), &owner, b"100000"])?;
                    if self.judge && again != Reply::Int(token) && again != Reply::Nil {
                        return Err(format!(
                            "insane state: the holder re-acquiring got {} instead of its token {token}",
                            again.brief()
                        ));
                    }
                    self.q(&[b"LOCK.RELEASE".as_slice(), DST.as_bytes(), &owner])?;
                }
            }
            "lockrwlck" => {
                let info = self.q(&["RWLOCK.INFO", DST])?;
                if self.judge {
                    check_rw_info(&info)
                        .map_err(|e| format!("insane state: RWLOCK.INFO answered {}: {e}", info.brief()))?;
                }
                if info == Reply::Nil {
                    self.must_vanish()?;
                } else {
                    let r = self.q(&["RWLOCK.RLOCK", DST, "chaos:newreader", "100000"])?;
                    if !matches!(r, Reply::Int(_) | Reply::Nil | Reply::Err(_)) {
                        return Err(format!("insane state: RWLOCK.RLOCK answered {}", r.brief()));
                    }
                    self.q(&["RWLOCK.RUNLOCK", DST, "chaos:newreader"])?;
                }
            }
            "lockfence" => {
                let current = self.q(&["FENCE.CURRENT", DST])?;
                let Reply::Int(current) = current else {
                    return Err(format!("insane state: FENCE.CURRENT answered {}", current.brief()));
                };
                if self.judge && current < 0 {
                    return Err(format!("insane state: FENCE.CURRENT answered {current}"));
                }
                match self.q(&["FENCE.NEXT", DST])? {
                    Reply::Int(t) if t > current => {}
                    Reply::Err(e) if e.contains("exhausted") && current > i64::MAX - (1 << 20) => {}
                    other if self.judge => {
                        return Err(format!(
                            "insane state: FENCE.NEXT after FENCE.CURRENT {current} answered {}",
                            other.brief()
                        ))
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        self.q(&["DEBUG", "DIGEST-VALUE", DST])?;
        self.q(&["MEMORY", "USAGE", DST])?;
        if self.rng.chance(self.reload_percent) {
            let r = self.q(&["DEBUG", "RELOAD"])?;
            if r != Reply::Simple("OK".into()) {
                return Err(format!("reload: an accepted payload does not survive DEBUG RELOAD: {}", r.brief()));
            }
        }
        self.q(&["DEL", DST])?;
        Ok(())
    }

    /// The server still ends leases by itself: a 1 ms lease on another key goes.
    fn leases_still_end(&mut self) -> Result<(), String> {
        match self.q(&["LOCK.ACQUIRE", "chaos:probe:lease", "p", "1"])? {
            Reply::Int(_) => {}
            Reply::Err(e) if e.contains("exhausted") => {
                return Err(format!("token clock poisoned: LOCK.ACQUIRE of a free unrelated key answered {e}"))
            }
            other => return Err(format!("insane state: LOCK.ACQUIRE of a free key answered {}", other.brief())),
        }
        let deadline = Instant::now() + self.t.slack;
        loop {
            std::thread::sleep(Duration::from_millis(2));
            if self.q(&["EXISTS", "chaos:probe:lease"])? == Reply::Int(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let info = self.q(&["LOCK.INFO", "chaos:probe:lease"])?;
                return Err(format!(
                    "leases stopped ending: after this payload, a 1 ms lease on another key still has its key {:?} later (LOCK.INFO {})",
                    self.t.slack,
                    info.brief()
                ));
            }
        }
    }

    /// A free lock leaves no key behind: the module deletes it soon.
    fn must_vanish(&mut self) -> Result<(), String> {
        if !self.judge {
            return Ok(());
        }
        let deadline = Instant::now() + self.t.slack;
        loop {
            if self.q(&["EXISTS", DST])? == Reply::Int(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Is it this key, or has the server stopped ending leases altogether?
                self.leases_still_end()?;
                return Err("free key left behind: a restored lock with no holder keeps its key".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn report(&self) -> String {
        if let Ok(path) = std::env::var("CHAOS_FAILURES_FILE") {
            let all: Vec<String> =
                self.failures.iter().map(|f| format!("{}\t{}\t{}", f.label, f.detail, hex(&f.payload))).collect();
            let _ = fs::write(path, all.join("\n"));
        }
        let mut by_category: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
        for f in &self.failures {
            by_category.entry(&f.category).or_default().push(f);
        }
        let mut out = format!(
            "{} of {} corrupt payloads went wrong (stopped after {}):\n",
            self.failures.len(),
            self.cases,
            self.max_failures
        );
        for (cat, fs) in by_category {
            out.push_str(&format!("\n=== {cat}: {} case(s)\n", fs.len()));
            for f in fs.iter().take(3) {
                out.push_str(&format!("  - {}\n    {}\n    payload (hex): {}\n", f.label, f.detail, hex(&f.payload)));
            }
            for f in fs.iter().skip(3).take(40) {
                out.push_str(&format!("  - {}\n", f.label));
            }
            if let Some(f) = fs.first() {
                if cat == "crash" || cat == "hang" {
                    out.push_str(&format!("    server log tail:\n{}\n", f.log));
                }
            }
        }
        out
    }
}

/// Creates one key of each type in a rich state and DUMPs it.
fn genuine_dumps(conn: &mut Conn, t: Timing, ttl: i64) -> (Dump, Dump, Dump, Dump) {
    let ttl = ttl.to_string();
    let mut run = |args: &[&str]| conn.call(args, t.hang).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    for args in [
        vec!["LOCK.ACQUIRE", "src:mutex", "alice", &ttl],
        vec!["LOCK.ACQUIRE", "src:mutex", "alice", &ttl],
        vec!["RWLOCK.WLOCK", "src:rw", "writer", &ttl],
        vec!["RWLOCK.RLOCK", "src:rw", "writer", &ttl],
        vec!["RWLOCK.RLOCK", "src:rw", "writer", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r1", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r2", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r2", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r3", &ttl],
        vec!["FENCE.NEXT", "src:fence"],
    ] {
        let r = run(&args);
        assert!(matches!(r, Reply::Int(t) if t > 0), "{args:?} answered {}", r.brief());
    }
    let current = int_of(&run(&["FENCE.CURRENT", "src:fence"])).unwrap();
    let r = run(&["FENCE.CHECK", "src:fence", &(current + 7).to_string()]);
    assert_eq!(r, Reply::Int(1), "FENCE.CHECK");
    let mut dump = |key: &str, name: &'static str| {
        let r = run(&["DUMP", key]);
        let Reply::Bulk(raw) = r else { panic!("DUMP {key} answered {}", r.brief()) };
        Dump::parse(name, &raw)
    };
    let m = dump("src:mutex", "lockmutex");
    let rw = dump("src:rw", "lockrwlck");
    let readers = dump("src:readers", "lockrwlck (3 readers)");
    let f = dump("src:fence", "lockfence");
    assert_eq!(m.fields.len(), 4, "mutex layout (owner, token, deadline, holds): {:?}", m.fields);
    assert_eq!(rw.fields.len(), 1 + 2 * 5, "rwlock layout (count, then 5 fields per hold): {:?}", rw.fields);
    assert_eq!(f.fields.len(), 2, "fence layout (highest, issued): {:?}", f.fields);
    (m, rw, readers, f)
}

fn corrupt_restore_suite(test: &str, config: &[&str]) {
    let seed = test_seed(test);
    let big = full();
    let started = Instant::now();
    let mut target = Harnessed::start(config);
    let t = Timing { hang: Duration::from_secs(10), slack: Duration::from_secs(3), ..Timing::native() };
    let mut setup = Conn::open(target.port(), t.hang).unwrap();
    let (m, rw, readers, f) = genuine_dumps(&mut setup, t, 600_000);
    drop(setup);
    let mut rng = Rng::new(seed, test);
    let mut cases = handcrafted_cases(&m, &rw, &f);
    for d in [&m, &rw, &readers, &f] {
        cases.extend(field_cases(d));
    }
    for d in [&m, &rw, &readers, &f] {
        cases.extend(byte_cases(d, &mut rng, big));
    }
    // The genuine payloads themselves go in first and last: the harness must accept them.
    let genuine: Vec<Case> = [&m, &rw, &readers, &f]
        .iter()
        .map(|d| case(format!("{}: the genuine DUMP", d.name), d.raw.clone(), Expect::Accepted))
        .collect();
    let total = cases.len() + 2 * genuine.len();
    let mut r = Restorer::new(&mut target, t, true, Rng::new(seed, "restorer"));
    r.reload_percent = if big { 25 } else { 10 };
    for c in genuine.iter().chain(&cases).chain(&genuine) {
        r.run(c);
    }
    let (cases_run, accepted) = (r.cases, r.accepted);
    let failed = !r.failures.is_empty();
    let report = r.report();
    drop(r);
    eprintln!("{test}: {cases_run} of {total} payloads restored ({accepted} accepted) in {:?}", started.elapsed());
    if failed {
        panic!("{report}\nseed {seed} (replay: CHAOS_SEED={seed}{}); config {config:?}", repro_env());
    }
    let server = target.server.as_mut().unwrap();
    server.assert_alive();
    let log = server.log();
    assert!(!log.contains("panicked"), "the server log reports a panic:\n{}", tail(&log, 40));
    let stderr = stderr_of(&server.dir.join("redis.log"));
    assert!(!stderr.contains("panicked at"), "the module panicked (caught or not):\n{stderr}");
}

#[test]
fn corrupt_dump_payloads_are_refused() {
    corrupt_restore_suite("corrupt_dump_payloads_are_refused", &[]);
}

#[test]
fn corrupt_dump_payloads_are_refused_with_sanitize_dump_payload() {
    corrupt_restore_suite(
        "corrupt_dump_payloads_are_refused_with_sanitize_dump_payload",
        &["sanitize-dump-payload yes"],
    );
}

// =======================================================================================
// Test: a valid DUMP restored behaves like the original
// =======================================================================================

/// The tokens a DUMP carries, by the layouts in src/types.rs.
fn tokens_of(d: &Dump) -> Vec<i64> {
    let at = |i: usize| match d.fields.get(i) {
        Some(Field::U(v)) => *v as i64,
        other => panic!("{}: field {i} is {other:?}, not a token", d.name),
    };
    if d.name.starts_with("lockmutex") {
        vec![at(1)]
    } else if d.name.starts_with("lockrwlck") {
        (0..at(0) as usize).map(|h| at(1 + 5 * h + 2)).collect()
    } else {
        vec![at(0), at(1)]
    }
}

fn must(conn: &mut Conn, args: &[&str]) -> Reply {
    conn.call(args, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// INFO without the ttl fields (they count down), and the ttls apart.
fn info_parts(r: &Reply) -> (Reply, Vec<i64>) {
    fn strip(r: &Reply, ttls: &mut Vec<i64>) -> Reply {
        match r {
            Reply::Array(items) if items.len() % 2 == 0 && items.chunks(2).all(|kv| text_of(&kv[0]).is_some()) => {
                let mut out = Vec::new();
                for kv in items.chunks(2) {
                    if text_of(&kv[0]).as_deref() == Some(b"ttl") {
                        ttls.push(int_of(&kv[1]).unwrap_or(-1));
                    } else {
                        out.push(kv[0].clone());
                        out.push(strip(&kv[1], ttls));
                    }
                }
                Reply::Array(out)
            }
            Reply::Array(items) => Reply::Array(items.iter().map(|i| strip(i, ttls)).collect()),
            other => other.clone(),
        }
    }
    let mut ttls = Vec::new();
    let stripped = strip(r, &mut ttls);
    (stripped, ttls)
}

fn assert_same_state(conn: &mut Conn, info_cmd: &str, original: &str, restored: &str) {
    let before = Instant::now();
    let a = must(conn, &[info_cmd, original]);
    let b = must(conn, &[info_cmd, restored]);
    let apart = before.elapsed().as_millis() as i64 + 2;
    assert_ne!(a, Reply::Nil, "{info_cmd} {original} is nil");
    let (sa, ta) = info_parts(&a);
    let (sb, tb) = info_parts(&b);
    assert_eq!(sa, sb, "{info_cmd}: restored {} differs from original {}", b.brief(), a.brief());
    assert_eq!(ta.len(), tb.len());
    for (x, y) in ta.iter().zip(&tb) {
        assert!(
            *y <= *x && *x - *y <= apart,
            "{info_cmd}: restored ttl {y} vs original {x} (read {apart} ms apart): the deadline moved"
        );
    }
    let da = must(conn, &["DEBUG", "DIGEST-VALUE", original]);
    let db = must(conn, &["DEBUG", "DIGEST-VALUE", restored]);
    assert_eq!(da, db, "DEBUG DIGEST-VALUE of {restored} differs from {original}");
}

#[test]
fn restored_dump_behaves_like_the_original() {
    let server = Server::start(&[]);
    let other = Server::start(&["sanitize-dump-payload yes"]);
    let t = Timing::native();
    let mut c = Conn::open(server.port, t.hang).unwrap();
    let mut o = Conn::open(other.port, t.hang).unwrap();
    let (m, rw, readers, f) = genuine_dumps(&mut c, t, 600_000);
    for (d, src, info) in
        [(&m, "src:mutex", "LOCK.INFO"), (&rw, "src:rw", "RWLOCK.INFO"), (&readers, "src:readers", "RWLOCK.INFO")]
    {
        let dst = format!("{src}:copy");
        let r = c.call(&[b"RESTORE".as_slice(), dst.as_bytes(), b"0", &d.raw], t.hang).unwrap();
        assert_eq!(r, Reply::Simple("OK".into()), "RESTORE {dst} of the genuine DUMP of {src}");
        assert_same_state(&mut c, info, src, &dst);
        // The same payload on another server (sanitize-dump-payload yes).
        let r = o.call(&[b"RESTORE".as_slice(), src.as_bytes(), b"0", &d.raw], t.hang).unwrap();
        assert_eq!(r, Reply::Simple("OK".into()), "RESTORE {src} on the other server");
        let (a, _) = info_parts(&must(&mut c, &[info, src]));
        let (b, _) = info_parts(&must(&mut o, &[info, src]));
        assert_eq!(a, b, "{info} {src} on the other server differs");
    }
    let r = c.call(&[b"RESTORE".as_slice(), b"src:fence:copy", b"0", &f.raw], t.hang).unwrap();
    assert_eq!(r, Reply::Simple("OK".into()));
    assert_eq!(must(&mut c, &["FENCE.CURRENT", "src:fence"]), must(&mut c, &["FENCE.CURRENT", "src:fence:copy"]));
    let cur = int_of(&must(&mut c, &["FENCE.CURRENT", "src:fence:copy"])).unwrap();
    assert!(matches!(must(&mut c, &["FENCE.NEXT", "src:fence:copy"]), Reply::Int(t) if t > cur));
    assert_eq!(
        must(&mut c, &["FENCE.CHECK", "src:fence:copy", &(cur - 1).to_string()]).errors().len(),
        1,
        "an older token must be STALE on the restored fence"
    );

    // The restored mutex works like the original: others are refused, the holder reenters
    // with its token, and three releases free it (two holds restored, one taken).
    let token = int_of(&field_map(&must(&mut c, &["LOCK.INFO", "src:mutex:copy"])).unwrap()["token"]).unwrap();
    assert_eq!(must(&mut c, &["LOCK.ACQUIRE", "src:mutex:copy", "bob", "1000"]), Reply::Nil);
    assert_eq!(must(&mut c, &["LOCK.ACQUIRE", "src:mutex:copy", "alice", "600000"]), Reply::Int(token));
    for _ in 0..3 {
        assert_eq!(must(&mut c, &["LOCK.RELEASE", "src:mutex:copy", "alice"]), Reply::Int(1));
    }
    assert_eq!(must(&mut c, &["LOCK.INFO", "src:mutex:copy"]), Reply::Nil);
    assert_eq!(must(&mut c, &["EXISTS", "src:mutex:copy"]), Reply::Int(0), "a released restored lock leaves no key");
    // The restored rwlock: the writer's holds are there, another writer waits.
    assert_eq!(must(&mut c, &["RWLOCK.WLOCK", "src:rw:copy", "other", "1000"]), Reply::Nil);
    assert_eq!(must(&mut c, &["RWLOCK.RUNLOCK", "src:rw:copy", "writer"]), Reply::Int(1));
    assert_eq!(must(&mut c, &["RWLOCK.RUNLOCK", "src:rw:copy", "writer"]), Reply::Int(1));
    assert_eq!(must(&mut c, &["RWLOCK.WUNLOCK", "src:rw:copy", "writer"]), Reply::Int(1));
    assert_eq!(must(&mut c, &["RWLOCK.INFO", "src:rw:copy"]), Reply::Nil);

    // A restored token from the future (a clock ahead, still below 2^53) raises the
    // server's token floor: the next token on any key is above it.
    let ahead = wall_part(now_ms() + 3_600_000);
    let mut fields = m.fields.clone();
    fields[1] = Field::U(ahead as u64);
    let payload = m.build(7, m.module_id, &fields, true);
    let r = o.call(&[b"RESTORE".as_slice(), b"ahead", b"0", &payload], t.hang).unwrap();
    assert_eq!(r, Reply::Simple("OK".into()), "RESTORE of a mutex with a token one hour ahead");
    let next = int_of(&must(&mut o, &["FENCE.NEXT", "unrelated"])).unwrap();
    assert!(
        next > ahead,
        "FENCE.NEXT gave {next} after restoring token {ahead}: RESTORE did not raise the token floor"
    );

    // Leases of restored keys still end at the original deadline, and hand the lock on.
    let lease = 1500;
    let t0 = now_ms();
    let (sm, srw, _, _) = {
        for k in ["src:mutex", "src:rw", "src:readers", "src:fence"] {
            must(&mut c, &["DEL", k]);
        }
        genuine_dumps(&mut c, t, lease)
    };
    let t1 = now_ms();
    for k in ["src:mutex", "src:rw", "src:readers", "src:fence"] {
        must(&mut c, &["DEL", k]);
    }
    for (d, key) in [(&sm, "short:mutex"), (&srw, "short:rw")] {
        let r = c.call(&[b"RESTORE".as_slice(), key.as_bytes(), b"0", &d.raw], t.hang).unwrap();
        assert_eq!(r, Reply::Simple("OK".into()));
    }
    let mut waiter = Conn::open(server.port, t.hang).unwrap();
    waiter.send(&encode(&["LOCK.ACQUIRE", "short:mutex", "bob", "5000", "WAIT", "10000"])).unwrap();
    let mut rwaiter = Conn::open(server.port, t.hang).unwrap();
    rwaiter.send(&encode(&["RWLOCK.WLOCK", "short:rw", "bob", "5000", "WAIT", "10000"])).unwrap();
    for (w, key, old) in [(&mut waiter, "short:mutex", &sm), (&mut rwaiter, "short:rw", &srw)] {
        let r = w.read(Duration::from_secs(8)).unwrap();
        let at = now_ms();
        let Some(Reply::Int(tok)) = r else {
            panic!("the waiter on restored {key} got {r:?} instead of the lock when its lease ended")
        };
        assert!(
            at >= t0 + lease - 2,
            "the restored lease of {key} ended at +{} ms, before its deadline (+{lease})",
            at - t0
        );
        assert!(at <= t1 + lease + 2000, "the restored lease of {key} ended {} ms late", at - t1 - lease);
        let old_max = tokens_of(old).into_iter().max().unwrap_or(0);
        assert!(tok > old_max, "the waiter on {key} got token {tok}, not above the restored {old_max}");
    }
    drop(waiter);
    drop(rwaiter);
    assert!(alive(server.pid()) && alive(other.pid()));
}

// =======================================================================================
// Test: the generator and the loaders' error paths under valgrind
// =======================================================================================

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(bin)).find(|p| p.is_file())
}

fn suppressions() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/valgrind.supp");
    p.is_file().then_some(p)
}

/// Whether valgrind can check `server` (and how we know). Its `malloc` must be libc's (a
/// `MALLOC=libc` build) or a shared library (Debian's packages link libjemalloc.so.2):
/// source builds link jemalloc in under prefixed names, so valgrind sees almost no
/// allocations and its leak check would pass without looking. And the server must run
/// under valgrind at all: Debian's Valkey 8.0 frees with jemalloc's `sdallocx`, which
/// valgrind does not replace, and dies at start-up. (`make compat` applies the same rule
/// to skip this test, and says so.)
fn valgrind_can_check(valgrind: &Path, server: &Path) -> Result<String, String> {
    let version = Command::new(server)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", server.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let malloc = version.split_whitespace().find_map(|w| w.strip_prefix("malloc=")).unwrap_or("unknown");
    let ldd =
        Command::new("ldd").arg(server).output().map_err(|e| format!("cannot run ldd {}: {e}", server.display()))?;
    let how = if malloc == "libc" {
        "malloc=libc".to_string()
    } else if String::from_utf8_lossy(&ldd.stdout).contains("libjemalloc.so") {
        format!("malloc={malloc} from a shared libjemalloc.so")
    } else {
        return Err(format!(
            "{} uses malloc={malloc} linked into the binary (not libc, no libjemalloc.so in ldd), so valgrind \
             cannot see its allocations or leaks",
            server.display()
        ));
    };
    let run = Command::new(valgrind)
        .args(["-q", "--error-exitcode=99"])
        .arg(server)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        return Err(format!(
            "{} ({how}) does not run under valgrind: `valgrind {} --version` ended with {}\n{}",
            server.display(),
            server.display(),
            run.status,
            tail(&err, 12)
        ));
    }
    Ok(how)
}

static VG_SEQ: AtomicU32 = AtomicU32::new(0);

/// `redis-server` with the module, under valgrind.
struct VgServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl VgServer {
    fn start() -> VgServer {
        let valgrind = which("valgrind").unwrap_or_else(|| {
            panic!("valgrind is not installed: `make deps` installs it (or `apt-get install -y valgrind`)")
        });
        let module = module_path();
        let mut redis = redis_server_bin();
        if redis.components().count() == 1 {
            redis = which(&redis.to_string_lossy()).unwrap_or(redis);
        }
        if let Err(why) = valgrind_can_check(&valgrind, &redis) {
            panic!(
                "the valgrind test cannot run on this server: {why}. Run it against Debian's \
                 redis-server (the default) or a server built with MALLOC=libc (REDIS_SERVER=...; \
                 `scripts/servers.sh build valkey-9.1-libc` builds one)"
            );
        }
        let n = VG_SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("fencelock-chaos-vg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut last = String::new();
        for attempt in 0..10u32 {
            // Ports below the ones the harness hands out (20000+) and below the kernel's
            // ephemeral range.
            let port = (12_000 + (std::process::id() * 7 + attempt * 131 + n * 17) % 7_000) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let mut cmd = Command::new(&valgrind);
            cmd.arg("--error-exitcode=99")
                .arg("--leak-check=full")
                .arg("--errors-for-leak-kinds=definite")
                .arg("--track-origins=no")
                .arg(format!("--log-file={}/vg.%p.log", dir.display()));
            if let Some(supp) = suppressions() {
                cmd.arg(format!("--suppressions={}", supp.display()));
            }
            cmd.arg(&redis)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&dir)
                .arg("--loadmodule")
                .arg(&module)
                .args([
                    "--enable-debug-command",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ])
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(fs::File::create(dir.join("stderr.log")).unwrap()));
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn valgrind: {e}"));
            let pid = child.id();
            let mut vg = VgServer { child: Some(child), port, dir: dir.clone() };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = vg.child.as_mut().unwrap().try_wait() {
                    vg.child = None;
                    last = format!(
                        "exited {status}:\n{}",
                        tail(&fs::read_to_string(dir.join("redis.log")).unwrap_or_default(), 20)
                    );
                    break;
                }
                if let Ok(mut c) = Conn::open(port, Duration::from_secs(30)) {
                    if let Ok(Reply::Bulk(info)) = c.call(&["INFO", "server"], Duration::from_secs(30)) {
                        if String::from_utf8_lossy(&info).contains(&format!("process_id:{pid}")) {
                            return vg;
                        }
                        last = "another server answered on the port".into();
                        drop(vg);
                        break;
                    }
                }
                if Instant::now() > deadline {
                    panic!(
                        "redis-server under valgrind did not answer PING within 60 s; log:\n{}",
                        tail(&fs::read_to_string(dir.join("redis.log")).unwrap_or_default(), 30)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !last.contains("Address already in use") && !last.contains("another server") {
                break;
            }
        }
        panic!("redis-server under valgrind did not start: {last}");
    }

    /// `SHUTDOWN NOSAVE`, so that valgrind's leak check runs; returns the exit status.
    fn shutdown(&mut self) -> ExitStatus {
        if let Ok(mut c) = Conn::open(self.port, Duration::from_secs(60)) {
            let _ = c.call(&["SHUTDOWN", "NOSAVE"], Duration::from_secs(60));
        }
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server under valgrind did not exit within 300 s of SHUTDOWN NOSAVE");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> Vec<(PathBuf, String)> {
        let mut out: Vec<(PathBuf, String)> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("vg.") && n.ends_with(".log"))
                    })
                    .map(|p| {
                        let text = fs::read_to_string(&p).unwrap_or_default();
                        (p, text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Target for VgServer {
    fn port(&self) -> u16 {
        self.port
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        stderr_of(&self.dir.join("redis.log")) + &crash_report(&log).unwrap_or_else(|| tail(&log, 30))
    }

    fn is_alive(&self) -> bool {
        self.child.as_ref().is_some_and(|c| alive(c.id()))
    }

    fn restart(&mut self) -> bool {
        false
    }
}

impl Drop for VgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("valgrind logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The blocks of a valgrind log (runs of non-empty `==pid==` lines).
fn vg_blocks(log: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in log.lines() {
        let body = line.split_once("== ").map_or("", |(_, b)| b).trim_end();
        if body.is_empty() {
            if !cur.is_empty() {
                blocks.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        blocks.push(cur.join("\n"));
    }
    blocks
}

const VG_ERROR_KINDS: [&str; 12] = [
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "Conditional jump",
    "Use of uninitialised",
    "Syscall param",
    "Source and destination overlap",
    "are definitely lost",
    "Argument 'size' of function",
    "Invalid alignment",
    "Process terminating",
];

fn mentions_module(block: &str) -> bool {
    block.contains("libfencelock") || block.contains("fencelock::")
}

#[test]
fn random_commands_under_valgrind() {
    let seed = test_seed("random_commands_under_valgrind");
    let big = full();
    let started = Instant::now();
    let mut vg = VgServer::start();
    eprintln!("random_commands_under_valgrind: server up after {:?}", started.elapsed());
    let t = Timing::valgrind();
    let log = vg.dir.join("redis.log");
    let mut chaos = Chaos::new(vg.port, seed, "valgrind", log, t);
    chaos.setup();
    chaos.run_plain(if big { 8_000 } else { 300 });
    chaos.run_multi(if big { 800 } else { 30 });
    chaos.run_eval(if big { 800 } else { 30 });
    chaos.run_blocking(if big { Duration::from_secs(30) } else { Duration::from_secs(3) });
    chaos.finish();
    let stats = format!("{:?}", chaos.stats);
    drop(chaos);
    eprintln!("random_commands_under_valgrind: generator done after {:?}", started.elapsed());

    // The loaders' error paths: every truncation point (CRC recomputed) of every type,
    // the handcrafted payloads and the field corruptions. Here only memory, crashes,
    // hangs and reply counts count; the state of accepted keys is judged by the native
    // suites, which restore the same payloads.
    let mut rng = Rng::new(seed, "valgrind restore");
    let (cases, judged) = {
        let mut setup = Conn::open(vg.port, t.hang).unwrap();
        let (m, rw, readers, f) = genuine_dumps(&mut setup, t, 600_000);
        let mut cases = handcrafted_cases(&m, &rw, &f);
        for d in [&m, &rw, &readers, &f] {
            cases.extend(field_cases(d));
            let body = d.body();
            let payload = &body[..body.len() - 2];
            for n in 0..payload.len() {
                let mut b = payload[..n].to_vec();
                b.extend_from_slice(&d.version);
                cases.push(case(
                    format!("{}: payload truncated to {n} bytes, CRC recomputed", d.name),
                    seal(&b),
                    Expect::Any,
                ));
            }
            cases.push(case(format!("{}: the genuine DUMP", d.name), d.raw.clone(), Expect::Accepted));
        }
        if !big {
            // A seeded sample keeps the short run short.
            for k in 0..cases.len() {
                let j = k + rng.below(cases.len() - k);
                cases.swap(k, j);
            }
            cases.truncate(150);
        }
        (cases, big)
    };
    let mut r = Restorer::new(&mut vg, t, false, Rng::new(seed, "valgrind restorer"));
    r.reload_percent = if judged { 5 } else { 3 };
    r.max_failures = 1;
    for c in &cases {
        r.run(c);
    }
    let restored = (r.cases, r.accepted);
    drop(r);
    eprintln!(
        "random_commands_under_valgrind: {} payloads restored ({} accepted) after {:?}",
        restored.0,
        restored.1,
        started.elapsed()
    );

    let status = vg.shutdown();
    eprintln!("random_commands_under_valgrind: valgrind exited ({status}) after {:?}", started.elapsed());
    let logs = vg.logs();
    assert!(!logs.is_empty(), "no valgrind log in {}", vg.dir.display());
    let mut problems = Vec::new();
    let mut saw_heap = false;
    for (path, text) in &logs {
        let summary = text.lines().rev().find_map(|l| l.split_once("ERROR SUMMARY: ").map(|(_, s)| s.to_string()));
        let Some(summary) = summary else {
            problems.push(format!(
                "{}: no ERROR SUMMARY (valgrind did not finish?)\n{}",
                path.display(),
                tail(text, 30)
            ));
            continue;
        };
        if let Some(allocs) = text.lines().find_map(|l| l.split_once("total heap usage: ").map(|(_, s)| s.to_string()))
        {
            let n: u64 = allocs.split_whitespace().next().unwrap_or("0").replace(',', "").parse().unwrap_or(0);
            saw_heap |= n > 10_000;
        }
        let blocks = vg_blocks(text);
        let errors: Vec<&String> = blocks.iter().filter(|b| VG_ERROR_KINDS.iter().any(|k| b.contains(k))).collect();
        let ours: Vec<&&String> = errors.iter().filter(|b| mentions_module(b)).collect();
        let definite_ours = ours.iter().filter(|b| b.contains("definitely lost")).count();
        if !summary.starts_with("0 errors") || definite_ours > 0 {
            let mut shown: Vec<&String> = ours.iter().map(|b| **b).collect();
            shown.extend(errors.iter().filter(|b| !mentions_module(b)).copied());
            problems.push(format!(
                "{}: ERROR SUMMARY: {summary}; {} error block(s), {} from the module ({definite_ours} definitely lost)\n{}",
                path.display(),
                errors.len(),
                ours.len(),
                shown.iter().take(6).map(|b| b.as_str()).collect::<Vec<_>>().join("\n\n")
            ));
        }
    }
    assert!(
        saw_heap,
        "valgrind saw fewer than 10000 allocations: it does not track the server's allocator, so it cannot see leaks"
    );
    assert!(
        problems.is_empty(),
        "valgrind found problems (seed {seed}; replay: CHAOS_SEED={seed}{}):\n{}",
        repro_env(),
        problems.join("\n\n")
    );
    assert_eq!(status.code(), Some(0), "valgrind exited with {status} (99: errors)");
    eprintln!("random_commands_under_valgrind: {stats}; clean in {:?}", started.elapsed());
}
