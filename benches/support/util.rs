//! Small helpers: connections, replies, INFO, statistics, a bare pub/sub connection.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::{ConnectionLike, Value};

/// A sync connection with generous timeouts: a hang fails the benchmark instead of
/// stalling it.
pub fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("bad url {url}: {e}"));
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    con.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    con
}

/// Sends one command; an I/O error is fatal.
pub fn exec(con: &mut redis::Connection, cmd: &redis::Cmd) -> Value {
    con.req_command(cmd).unwrap_or_else(|e| panic!("I/O error on {:?}: {e}", show(cmd)))
}

/// Sends `cmds` as one pipeline and returns every reply (errors as `Value::ServerError`).
pub fn exec_pipeline(con: &mut redis::Connection, cmds: &[redis::Cmd]) -> Vec<Value> {
    let mut packed = Vec::with_capacity(cmds.len() * 64);
    for c in cmds {
        packed.extend_from_slice(&c.get_packed_command());
    }
    let replies = con
        .req_packed_commands(&packed, 0, cmds.len())
        .unwrap_or_else(|e| panic!("I/O error on a pipeline of {} commands: {e}", cmds.len()));
    assert_eq!(replies.len(), cmds.len(), "pipeline answered {} replies for {} commands", replies.len(), cmds.len());
    replies
}

pub fn show(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Arg::Cursor => "<cursor>".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    parse_info(&text)
}

/// Server CPU (user + sys) in seconds so far.
pub fn server_cpu(con: &mut redis::Connection) -> f64 {
    let i = info(con, "cpu");
    let f = |k: &str| i.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("INFO cpu lacks {k}"));
    f("used_cpu_sys") + f("used_cpu_user")
}

pub fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).expect("DBSIZE")
}

pub fn load_script(con: &mut redis::Connection, src: &str) -> String {
    redis::cmd("SCRIPT").arg("LOAD").arg(src).query(con).expect("SCRIPT LOAD")
}

/// A random id like a UUID (36 characters), for owner names.
pub fn uuid_like() -> String {
    let mut r = rand::thread_rng();
    let h: u128 = r.gen();
    let s = format!("{h:032x}");
    format!("{}-{}-{}-{}-{}", &s[0..8], &s[8..12], &s[12..16], &s[16..20], &s[20..32])
}

pub fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---- statistics ---------------------------------------------------------------------

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NAN, f64::max)
}

// ---- a bare RESP2 connection for pub/sub ----------------------------------------------

/// A RESP2 reply as read off the wire.
#[derive(Debug, Clone)]
#[allow(dead_code)] // the fields show in panic messages
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// For a pub/sub frame: its kind ("message", "subscribe", "unsubscribe", ...).
    pub fn push_kind(&self) -> Option<String> {
        match self {
            Resp::Array(Some(items)) => match items.first() {
                Some(Resp::Bulk(Some(b))) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The subscriber side of a client: redis-rs's sync pub/sub cannot wait for a message
/// with a time limit without losing its place, so this speaks RESP2 itself. TCP_NODELAY.
pub struct SubConn {
    write: TcpStream,
    read: BufReader<TcpStream>,
}

impl SubConn {
    pub fn connect(port: u16) -> SubConn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect the subscriber");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let read = BufReader::new(s.try_clone().unwrap());
        SubConn { write: s, read }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        let mut buf = Vec::with_capacity(64);
        write!(buf, "*{}\r\n", args.len()).unwrap();
        for a in args {
            write!(buf, "${}\r\n", a.len()).unwrap();
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.write.write_all(&buf).expect("write to the subscriber connection");
    }

    /// The next frame, or None if none starts within `timeout`. Only the wait for the
    /// first byte is bounded, so a frame is never cut in half.
    pub fn read_within(&mut self, timeout: Duration) -> Option<Resp> {
        if self.read.buffer().is_empty() {
            let t = timeout.max(Duration::from_micros(100));
            self.read.get_ref().set_read_timeout(Some(t)).unwrap();
            let got = self.read.fill_buf().map(|b| !b.is_empty());
            self.read.get_ref().set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            match got {
                Ok(true) => {}
                Ok(false) => panic!("subscriber connection closed by the server"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => return None,
                Err(e) => panic!("subscriber connection: {e}"),
            }
        }
        Some(self.read_frame())
    }

    pub fn read_frame(&mut self) -> Resp {
        parse(&mut self.read).expect("read a frame from the subscriber connection")
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.ends_with("\r\n") {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse(r: &mut impl BufRead) -> io::Result<Resp> {
    let line = read_line(r)?;
    let (tag, rest) = line.split_at(1);
    let num = || rest.parse::<i64>().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()));
    Ok(match tag {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(num()?),
        "$" => {
            let n = num()?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut b = vec![0u8; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
        }
        "*" => {
            let n = num()?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(parse(r)?);
                }
                Resp::Array(Some(items))
            }
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"))),
    })
}

// ---- a barrier that cannot hang the benchmark ---------------------------------------------

/// Like `std::sync::Barrier`, but a party that never arrives (its thread panicked)
/// fails the benchmark after a minute instead of hanging it.
pub struct Gate {
    parties: usize,
    state: std::sync::Mutex<(usize, u64)>,
    cv: std::sync::Condvar,
}

impl Gate {
    pub fn new(parties: usize) -> Gate {
        Gate { parties, state: std::sync::Mutex::new((0, 0)), cv: std::sync::Condvar::new() }
    }

    pub fn wait(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let generation = g.1;
        g.0 += 1;
        if g.0 == self.parties {
            g.0 = 0;
            g.1 += 1;
            self.cv.notify_all();
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while g.1 == generation {
            let now = Instant::now();
            if now >= deadline {
                panic!("{} of {} threads did not reach a rendezvous within 60 s (one of them failed?)", self.parties - g.0, self.parties);
            }
            g = self.cv.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}
