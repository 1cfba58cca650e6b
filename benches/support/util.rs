//! Small helpers: connections, replies, statistics. (`INFO` and `DBSIZE` are the test
//! harness's, `crate::support::cmd`; the raw pub/sub connection is its `Raw`.)

use std::time::{Duration, Instant};

use rand::Rng;
use redis::{ConnectionLike, Value};

pub use crate::support::cmd::{dbsize, info};

/// A sync connection with generous timeouts: a hang fails the benchmark instead of
/// stalling it.
pub fn connect(url: &str) -> redis::Connection {
    crate::support::server::try_connect_with(url, Duration::from_secs(5), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
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

/// Server CPU (user + sys) in seconds so far.
pub fn server_cpu(con: &mut redis::Connection) -> f64 {
    let i = info(con, "cpu");
    let f = |k: &str| i.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("INFO cpu lacks {k}"));
    f("used_cpu_sys") + f("used_cpu_user")
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
