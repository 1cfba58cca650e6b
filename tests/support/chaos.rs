//! Shared pieces of the chaos tests (std only; no dependency on the harness or on
//! `history.rs`): include with `#[path = "support/chaos.rs"] mod chaos;`.
//!
//! * [`full`] / [`scale`]: `CHAOS_FULL=1` (`make chaos`) runs full size, otherwise a
//!   short version (`make test`).
//! * [`epoch`]: one monotonic `Instant` shared by every recording thread of the test
//!   binary; [`since_epoch`] is "now" on that clock.
//! * [`Raw`]: a small RESP2 client on its own socket that never panics: every call
//!   answers `io::Result`, a time-out or a closed socket is an `Err` (an indeterminate
//!   result for the history). Used for every workload client, one per thread.
//! * [`Stop`]: a shared stop flag with a deadline, so every workload is bounded in time.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// True under `CHAOS_FULL=1` (`make chaos`): run every workload at full size.
pub fn full() -> bool {
    std::env::var("CHAOS_FULL").map(|v| v == "1").unwrap_or(false)
}

/// `short` normally, `full` under `CHAOS_FULL=1`.
pub fn scale<T>(short: T, full_size: T) -> T {
    if full() {
        full_size
    } else {
        short
    }
}

/// The one time base of the test binary's histories.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, as a `Duration` since [`epoch`].
pub fn since_epoch() -> Duration {
    epoch().elapsed()
}

// ---------------------------------------------------------------------------------------
// A raw RESP2 client
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Int(i64),
    Str(Vec<u8>),
    Err(String),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Str(s) => std::str::from_utf8(s).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Reply::Str(s) => String::from_utf8_lossy(s).into_owned(),
            Reply::Err(e) => e.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Nil => "(nil)".into(),
            Reply::Array(a) => format!("{a:?}"),
        }
    }

    /// Field/value pairs of a flat array (`LOCK.INFO`, ...), as (name, value).
    pub fn pairs(&self) -> Vec<(String, Reply)> {
        match self {
            Reply::Array(items) => items.chunks(2).filter(|kv| kv.len() == 2).map(|kv| (kv[0].text(), kv[1].clone())).collect(),
            _ => vec![],
        }
    }

    pub fn field(&self, name: &str) -> Option<Reply> {
        self.pairs().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

pub struct Raw {
    reader: BufReader<TcpStream>,
}

impl Raw {
    /// Connects to `127.0.0.1:port`; replies must come within `read_timeout`.
    pub fn connect(port: u16, read_timeout: Duration) -> io::Result<Raw> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(read_timeout))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Raw { reader: BufReader::new(stream) })
    }

    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(t))
    }

    pub fn send(&mut self, args: &[&str]) -> io::Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        let mut stream: &TcpStream = self.reader.get_ref();
        stream.write_all(&buf)
    }

    pub fn read(&mut self) -> io::Result<Reply> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by the server"));
        }
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad reply line {line:?}")));
        }
        let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        let num = || body.parse::<i64>().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, body.clone()));
        Ok(match line[0] {
            b'+' => Reply::Str(body.as_bytes().to_vec()),
            b'-' => Reply::Err(body.clone()),
            b':' => Reply::Int(num()?),
            b'$' => {
                let len = num()?;
                if len < 0 {
                    Reply::Nil
                } else {
                    let mut data = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(len as usize);
                    Reply::Str(data)
                }
            }
            b'*' => {
                let len = num()?;
                if len < 0 {
                    Reply::Nil
                } else {
                    let mut items = Vec::with_capacity(len as usize);
                    for _ in 0..len {
                        items.push(self.read()?);
                    }
                    Reply::Array(items)
                }
            }
            other => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unknown reply type {other}"))),
        })
    }

    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// `CLIENT ID` of this connection.
    pub fn client_id(&mut self) -> io::Result<i64> {
        self.cmd(&["CLIENT", "ID"])?
            .int()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "CLIENT ID"))
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
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let stream = self.reader.get_ref();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let r = stream.peek(&mut b);
        let _ = stream.set_nonblocking(false);
        matches!(r, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Closes the socket (the server sees a disconnect).
    pub fn close(&self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------
// Bounded workloads
// ---------------------------------------------------------------------------------------

/// A stop flag shared by a workload's threads, also raised by a hard deadline.
#[derive(Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    deadline: Instant,
}

impl Stop {
    /// Stops by itself `limit` from now.
    pub fn after(limit: Duration) -> Stop {
        Stop { flag: Arc::new(AtomicBool::new(false)), deadline: Instant::now() + limit }
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst) || Instant::now() >= self.deadline
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A small deterministic-by-seed random source per thread (seed printed by the tests).
pub fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(s) => s.parse().expect("CHAOS_SEED must be an integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}
