//! The one raw RESP client, for protocol work the `redis` crate cannot do: send a command
//! now and read its reply later, tell without blocking whether a reply has come, read
//! exactly one reply at a time (and see a second one), close the socket at any moment.
//! Speaks RESP2 and the RESP3 types (maps, sets, pushes, nulls, doubles, booleans, big
//! numbers, verbatim strings, blob errors, attributes). Every call answers `io::Result`:
//! a time-out is an `Err` of kind `TimedOut`, a closed socket one of kind `UnexpectedEof`.
//! Ordinary calls go through the `redis` crate.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...` (and RESP3 blob errors).
    Err(String),
    Int(i64),
    /// Bulk strings (and RESP3 verbatim strings, with their `txt:` prefix).
    Bulk(Vec<u8>),
    /// Null bulk, null array, RESP3 null.
    Nil,
    /// Arrays, RESP3 sets and pushes.
    Array(Vec<Reply>),
    /// RESP3 maps.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 double, boolean, big number: not used by our commands.
    Other(String),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }

    pub fn is_pong(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "PONG")
    }

    /// An integer, also from a string that holds one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Reply::Simple(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of a string reply.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => Some(b.clone()),
            Reply::Simple(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// Text for messages and simple comparisons (lossy for binary strings).
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) | Reply::Err(s) | Reply::Other(s) => s.clone(),
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(i) => i.to_string(),
            Reply::Nil => "(nil)".into(),
            Reply::Array(_) | Reply::Map(_) => self.brief(),
        }
    }

    /// The error text, if this is an error.
    pub fn err(&self) -> Option<&str> {
        match self {
            Reply::Err(e) => Some(e),
            _ => None,
        }
    }

    /// A short rendering for messages (a 1 MiB bulk is not printed whole).
    pub fn brief(&self) -> String {
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

    /// Every error text in this reply, nested ones (EXEC, scripts) included.
    pub fn errors(&self) -> Vec<&str> {
        match self {
            Reply::Err(e) => vec![e.as_str()],
            Reply::Array(items) => items.iter().flat_map(Reply::errors).collect(),
            Reply::Map(kvs) => kvs.iter().flat_map(|(k, v)| k.errors().into_iter().chain(v.errors())).collect(),
            _ => vec![],
        }
    }

    /// Field/value pairs (a flat array under RESP2, a map under RESP3) by name; an error
    /// for anything else, a field name that is not a string, or a field twice.
    pub fn fields(&self) -> Result<BTreeMap<String, Reply>, String> {
        let pairs: Vec<(Reply, Reply)> = match self {
            Reply::Array(items) if items.len() % 2 == 0 => {
                items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
            }
            Reply::Map(kvs) => kvs.clone(),
            other => return Err(format!("field/value pairs expected, got {}", other.brief())),
        };
        let mut out = BTreeMap::new();
        for (k, v) in pairs {
            let k = k.bytes().ok_or_else(|| format!("field name expected, got {}", k.brief()))?;
            let k = String::from_utf8_lossy(&k).into_owned();
            if out.insert(k.clone(), v).is_some() {
                return Err(format!("field {k} twice"));
            }
        }
        Ok(out)
    }

    /// One field of field/value pairs (`LOCK.INFO`, ...), if there.
    pub fn field(&self, name: &str) -> Option<Reply> {
        self.fields().ok()?.remove(name)
    }

    /// For a pub/sub frame: its kind (`message`, `subscribe`, `unsubscribe`, ...).
    pub fn push_kind(&self) -> Option<String> {
        match self {
            Reply::Array(items) => items.first()?.bytes().map(|b| String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        }
    }
}

pub fn esc_str(s: &str) -> String {
    if s.len() > 300 {
        format!("{}...", &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)])
    } else {
        s.to_string()
    }
}

/// Renders bytes exactly (as a quoted string with \xNN escapes), except that long runs
/// are summarised: `<1048576 bytes of 'x'>`.
pub fn esc(b: &[u8]) -> String {
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

/// A command for messages.
pub fn show<A: AsRef<[u8]>>(cmd: &[A]) -> String {
    cmd.iter().map(|a| esc(a.as_ref())).collect::<Vec<_>>().join(" ")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// One command as a RESP array of bulk strings.
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
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

/// Parses one reply at `pos`: `Ok(None)` while it is incomplete, `Err` on a protocol error.
pub fn parse(buf: &[u8], pos: usize) -> Result<Option<(Reply, usize)>, String> {
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

// ---------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------

pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    read_timeout: Duration,
    id: i64,
}

fn timed_out(t: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("no reply within {t:?}"))
}

impl Raw {
    /// Connects to `127.0.0.1:port`; replies must come within `read_timeout` (writes get
    /// at least 10 s).
    pub fn connect(port: u16, read_timeout: Duration) -> io::Result<Raw> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(read_timeout.max(Duration::from_secs(10))))?;
        Ok(Raw { stream, buf: Vec::new(), chunk: vec![0; 64 * 1024], read_timeout, id: 0 })
    }

    /// How long `read` and `cmd` wait for a reply.
    pub fn set_read_timeout(&mut self, t: Duration) {
        self.read_timeout = t;
    }

    /// Runs `args`, whose reply must come at once (within 2.5 s: nothing blocks); `what`
    /// names it in the failure.
    #[track_caller]
    pub fn cmd_at_once(&mut self, args: &[&str], what: &str) -> Reply {
        let start = Instant::now();
        let v = self.cmd(args).unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_millis(2_500), "{what} took {took:?}: it blocked");
        v
    }

    /// Runs `cmds` in one MULTI (each answered QUEUED); the EXEC must answer at once, an
    /// array: its items.
    #[track_caller]
    pub fn exec_at_once(&mut self, cmds: &[&[&str]], what: &str) -> Vec<Reply> {
        assert_eq!(self.cmd(&["MULTI"]).unwrap(), Reply::ok());
        for args in cmds {
            assert_eq!(self.cmd(args).unwrap(), Reply::Simple("QUEUED".into()), "{args:?} in MULTI");
        }
        match self.cmd_at_once(&["EXEC"], what) {
            Reply::Array(items) => items,
            v => panic!("EXEC answered {v:?}"),
        }
    }

    /// Sends one command.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        self.send_bytes(&encode(args))
    }

    /// Sends bytes as they are (several commands in one write, broken protocol, ...).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One reply, or `Ok(None)` when none is complete within `timeout` (what has arrived
    /// stays buffered: a reply is never cut in half).
    pub fn read_within(&mut self, timeout: Duration) -> io::Result<Option<Reply>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((r, used)) = parse(&self.buf, 0).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                self.buf.drain(..used);
                return Ok(Some(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_micros(100))))?;
            match self.stream.read(&mut self.chunk) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server")),
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One reply within `timeout`; a time-out is an error.
    pub fn read_timeout(&mut self, timeout: Duration) -> io::Result<Reply> {
        self.read_within(timeout)?.ok_or_else(|| timed_out(timeout))
    }

    /// One reply within the connection's read time-out.
    pub fn read(&mut self) -> io::Result<Reply> {
        self.read_timeout(self.read_timeout)
    }

    /// Sends one command and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Sends one command and reads its reply within `timeout`.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A], timeout: Duration) -> io::Result<Reply> {
        self.send(args)?;
        self.read_timeout(timeout)
    }

    /// `CLIENT ID` of this connection (asked once, then remembered).
    pub fn client_id(&mut self) -> io::Result<i64> {
        if self.id == 0 {
            self.id = self
                .cmd(&["CLIENT", "ID"])?
                .int()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "CLIENT ID"))?;
        }
        Ok(self.id)
    }

    /// The `CLIENT ID` taken by [`client_id`](Raw::client_id) (0 before).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// One field of `INFO section`, e.g. `info_field("clients", "blocked_clients")`.
    pub fn info_field(&mut self, section: &str, field: &str) -> io::Result<Option<String>> {
        let text = self.cmd(&["INFO", section])?.text();
        Ok(text
            .lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .find(|(k, _)| *k == field)
            .map(|(_, v)| v.to_string()))
    }

    /// True when no reply (and no close) has arrived yet; never blocks.
    pub fn nothing_received(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let r = self.stream.peek(&mut b);
        let _ = self.stream.set_nonblocking(false);
        matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Nothing more to read: no buffered bytes and none waiting on the socket; an error
    /// that says what came instead.
    pub fn quiet(&mut self) -> io::Result<()> {
        let extra = |b: &[u8]| {
            io::Error::new(io::ErrorKind::InvalidData, format!("unexpected extra bytes after the replies: {}", esc(b)))
        };
        if !self.buf.is_empty() {
            return Err(extra(&self.buf[..self.buf.len().min(200)]));
        }
        self.stream.set_nonblocking(true)?;
        let mut one = [0u8; 256];
        let peeked = self.stream.peek(&mut one);
        self.stream.set_nonblocking(false)?;
        match peeked {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server")),
            Ok(n) => Err(extra(&one[..n])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `cmd` and `PING` together; returns the command's one reply after checking
    /// that `PONG` follows it and nothing else does.
    pub fn call_then_ping<A: AsRef<[u8]>>(&mut self, cmd: &[A], timeout: Duration) -> io::Result<Reply> {
        let mut bytes = encode(cmd);
        bytes.extend(encode(&["PING"]));
        self.send_bytes(&bytes)?;
        let r = self.read_timeout(timeout)?;
        self.expect_pong(timeout)?;
        Ok(r)
    }

    /// The next reply is `PONG`, and nothing follows it.
    pub fn expect_pong(&mut self, timeout: Duration) -> io::Result<()> {
        match self.read_within(timeout)? {
            Some(p) if p.is_pong() => self.quiet(),
            Some(other) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected PONG after the reply, got a second reply {}", other.brief()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no PONG within {timeout:?} after the reply (the command answered twice, or PING was swallowed)"
                ),
            )),
        }
    }

    /// Closes the socket (the server sees a disconnect).
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
