//! Figure 6: the module's cost on commands that are not its own.
//!
//! A module that subscribes to keyspace events is called on every event of the classes
//! it asked for, whoever caused it: the generic `expire` event of every `SET key val PX
//! ms` any client sends reaches it. fencelock subscribes only once one of its commands
//! has run (or one of its values was loaded), so this figure measures native workloads
//! on three servers started side by side:
//!
//! - (a) no module loaded (the baseline),
//! - (b) the module loaded but never used,
//! - (c) the module loaded after one `LOCK.ACQUIRE` ran (its subscription active, one
//!   lock held).
//!
//! Workloads: `SET key:<n> value PX 60000` of fresh keys (db 1, flushed before every
//! measurement) and `GET key:<n>` of existing keys (db 0, loaded once), each from a few
//! connections sending pipelines of raw RESP (cheap for the client on a small machine).
//! Per measurement: the server's CPU (`INFO cpu` used_cpu_sys + used_cpu_user, delta)
//! divided by the requests, and the request rate. The servers alternate in short rounds
//! (a b c, b c a, c a b, ...), so drift on a noisy machine hits all three alike, and
//! several sets of the three servers take the rounds in turn, so what sticks to one
//! process (Redis's random hash seed: whether `SET` shares a bucket of the command table
//! moves its cost by a few percent) does not bias one row; a cell is the median over
//! rounds. Every reply is checked byte for byte.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;

use crate::report::{metric, Cell, Figure, Unit};
use crate::server::{self, Server};
use crate::util::{connect, dbsize, exec, server_cpu, Gate};
use crate::Config;

/// The rows, in order; the first is the baseline.
pub const CASES: [&str; 3] = [
    "(a) no module",
    "(b) module loaded, never used",
    "(c) module loaded and in use (after one LOCK.ACQUIRE)",
];

/// The lease of the fresh keys of the `SET` workload.
const SET_PX_MS: u64 = 60_000;
const SET_DB: u32 = 1;
const GET_DB: u32 = 0;
const VALUE: &str = "value";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    SetPx,
    Get,
}

impl Workload {
    const ALL: [Workload; 2] = [Workload::SetPx, Workload::Get];

    fn name(self) -> &'static str {
        match self {
            Workload::SetPx => "SET key value PX 60000",
            Workload::Get => "GET key",
        }
    }

    fn db(self) -> u32 {
        match self {
            Workload::SetPx => SET_DB,
            Workload::Get => GET_DB,
        }
    }

    /// The one reply every request of this workload must get.
    fn reply(self) -> Vec<u8> {
        match self {
            Workload::SetPx => b"+OK\r\n".to_vec(),
            Workload::Get => format!("${}\r\n{VALUE}\r\n", VALUE.len()).into_bytes(),
        }
    }
}

fn push_bulk(out: &mut Vec<u8>, arg: &[u8]) {
    let _ = write!(out, "${}\r\n", arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        push_bulk(out, a);
    }
}

/// A bare RESP connection to database `db`, TCP_NODELAY.
fn raw_connect(port: u16, db: u32) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the figure-6 server");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    if db != 0 {
        let mut out = vec![];
        push_command(&mut out, &[b"SELECT", db.to_string().as_bytes()]);
        roundtrip(&mut s, &out, b"+OK\r\n", 1, "SELECT");
    }
    s
}

/// Sends `out` (n requests) and reads n copies of `expect`, checking every byte; a
/// different reply is a wrong result.
fn roundtrip(s: &mut TcpStream, out: &[u8], expect: &[u8], n: usize, what: &str) {
    s.write_all(out).unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let total = n * expect.len();
    let mut buf = [0u8; 64 * 1024];
    let mut pos = 0;
    while pos < total {
        let room = (total - pos).min(buf.len());
        let k = s.read(&mut buf[..room]).unwrap_or_else(|e| panic!("{what}: read: {e}"));
        if k == 0 {
            panic!("{what}: the server closed the connection");
        }
        for (i, b) in buf[..k].iter().enumerate() {
            if *b != expect[(pos + i) % expect.len()] {
                let from = i.saturating_sub((pos + i) % expect.len());
                let got = String::from_utf8_lossy(&buf[from..k.min(from + 200)]).into_owned();
                panic!(
                    "WRONG RESULT: {what}: reply {} of {n} should be {:?} but the server answered {got:?}",
                    (pos + i) / expect.len() + 1,
                    String::from_utf8_lossy(expect)
                );
            }
        }
        pos += k;
    }
}

/// One of the three servers, with control connections to both databases.
struct Case {
    server: Server,
    db0: redis::Connection,
    db1: redis::Connection,
}

fn module_listed(con: &mut redis::Connection) -> bool {
    let v: Value = exec(con, &redis::cmd("MODULE").arg("LIST").clone());
    format!("{v:?}").contains("fencelock")
}

/// Loads `key:0` .. `key:{n-1}` = "value" (no lease) into db 0 for the `GET` workload.
fn load_get_keys(port: u16, n: usize, batch: usize) {
    let mut s = raw_connect(port, GET_DB);
    let mut out = Vec::with_capacity(batch * 48);
    let mut i = 0;
    while i < n {
        let j = (i + batch).min(n);
        out.clear();
        for k in i..j {
            push_command(&mut out, &[b"SET", format!("key:{k}").as_bytes(), VALUE.as_bytes()]);
        }
        roundtrip(&mut s, &out, b"+OK\r\n", j - i, "loading the GET keys");
        i = j;
    }
}

fn start_case(cfg: &Config, which: usize) -> Case {
    let server = if which == 0 { server::start_plain() } else { server::start() };
    let mut db0 = server.conn();
    let db1 = connect(&format!("redis://127.0.0.1:{}/{SET_DB}", server.port));
    let listed = module_listed(&mut db0);
    assert_eq!(listed, which != 0, "{}: MODULE LIST {} fencelock", CASES[which], if listed { "lists" } else { "does not list" });
    if which == 2 {
        // One lock command: the module subscribes to keyspace events from here on.
        let cmd = redis::cmd("LOCK.ACQUIRE").arg("bench:warm").arg("o").arg(600_000).clone();
        let v = exec(&mut db0, &cmd);
        assert!(matches!(v, Value::Int(t) if t > 0), "WRONG RESULT: LOCK.ACQUIRE bench:warm o 600000 answered {v:?}");
    }
    load_get_keys(server.port, cfg.fig6_get_keys, cfg.fig6_batch);
    let want = cfg.fig6_get_keys as i64 + if which == 2 { 1 } else { 0 };
    let size = dbsize(&mut db0);
    assert_eq!(size, want, "WRONG RESULT: {}: DBSIZE of db 0 is {size}, expected {want}", CASES[which]);
    Case { server, db0, db1 }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Server CPU per request, µs.
    cpu_us: f64,
    /// Requests per second over all connections.
    rate: f64,
}

/// (start, end) of one connection's requests.
type Span = (Instant, Instant);

/// One measurement: `cfg.fig6_requests` requests of `w` from `cfg.fig6_conns`
/// connections. `seed` picks the `GET` keys, the same for every server in a round.
fn measure(cfg: &Config, case: &mut Case, w: Workload, seed: u64) -> Sample {
    if w == Workload::SetPx {
        let _: () = redis::cmd("FLUSHDB").arg("SYNC").query(&mut case.db1).expect("FLUSHDB");
    }
    let conns = cfg.fig6_conns;
    let per = cfg.fig6_requests.div_ceil(conns);
    let requests = per * conns;
    let (batch, nkeys, port) = (cfg.fig6_batch, cfg.fig6_get_keys, case.server.port);
    let connected = Arc::new(Gate::new(conns + 1));
    let go = Arc::new(Gate::new(conns + 1));
    let expect = w.reply();
    let (cpu0, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|t| {
                let (connected, go, expect) = (connected.clone(), go.clone(), &expect);
                s.spawn(move || -> (Span, TcpStream) {
                    let mut con = raw_connect(port, w.db());
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(t as u64));
                    let px = SET_PX_MS.to_string();
                    let mut out = Vec::with_capacity(batch * 64);
                    let mut key = String::with_capacity(24);
                    connected.wait();
                    go.wait();
                    let start = Instant::now();
                    let mut i = 0;
                    while i < per {
                        let j = (i + batch).min(per);
                        out.clear();
                        for k in i..j {
                            key.clear();
                            match w {
                                Workload::SetPx => {
                                    let _ = std::fmt::Write::write_fmt(&mut key, format_args!("key:{}", t * per + k));
                                    push_command(&mut out, &[b"SET", key.as_bytes(), VALUE.as_bytes(), b"PX", px.as_bytes()]);
                                }
                                Workload::Get => {
                                    let _ = std::fmt::Write::write_fmt(&mut key, format_args!("key:{}", rng.gen_range(0..nkeys)));
                                    push_command(&mut out, &[b"GET", key.as_bytes()]);
                                }
                            }
                        }
                        roundtrip(&mut con, &out, expect, j - i, w.name());
                        i = j;
                    }
                    // The connection closes after the CPU is read, outside the measurement.
                    ((start, Instant::now()), con)
                })
            })
            .collect();
        connected.wait();
        let cpu0 = server_cpu(&mut case.db0);
        go.wait();
        let results: Vec<(Span, TcpStream)> =
            handles.into_iter().map(|h| h.join().expect("a figure-6 client failed")).collect();
        (cpu0, results)
    });
    let cpu1 = server_cpu(&mut case.db0);
    let start = results.iter().map(|r| r.0 .0).min().unwrap();
    let end = results.iter().map(|r| r.0 .1).max().unwrap();
    drop(results);
    case.server.assert_alive();
    if w == Workload::SetPx {
        let size = dbsize(&mut case.db1);
        assert_eq!(size, requests as i64, "WRONG RESULT: {requests} fresh keys SET but DBSIZE of db {SET_DB} is {size}");
    }
    Sample { cpu_us: (cpu1 - cpu0) * 1e6 / requests as f64, rate: requests as f64 / (end - start).as_secs_f64() }
}

pub fn run(cfg: &Config) -> Vec<Figure> {
    // `fig6_sets` sets of the three servers, used in turn, round by round: what stays
    // with one process (Redis's random hash seed, memory layout) is spread over the
    // rounds instead of biasing one row, and the rounds stay short.
    let mut sets: Vec<Vec<Case>> =
        (0..cfg.fig6_sets).map(|_| (0..CASES.len()).map(|i| start_case(cfg, i)).collect()).collect();
    // Untimed: every server's allocator grows to the workload's size once.
    for case in sets.iter_mut().flatten() {
        measure(cfg, case, Workload::SetPx, u64::MAX);
    }
    // samples[workload][case] = one per round
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![vec![]; CASES.len()]; Workload::ALL.len()];
    for r in 0..cfg.fig6_rounds {
        let cases = &mut sets[r % cfg.fig6_sets];
        for (wi, w) in Workload::ALL.iter().enumerate() {
            for k in 0..CASES.len() {
                let ci = (k + r) % CASES.len();
                let s = measure(cfg, &mut cases[ci], *w, r as u64);
                eprintln!(
                    "  fig 6 round {}/{}: {:<24} {:<55} server CPU {:>6.3} µs/request  {:>9.0} requests/s",
                    r + 1,
                    cfg.fig6_rounds,
                    w.name(),
                    CASES[ci],
                    s.cpu_us,
                    s.rate
                );
                samples[wi][ci].push(s);
            }
        }
    }
    for cases in sets {
        // The lock of case (c) is still held (and only there): the module kept its state.
        let mut cases = cases;
        let held: Vec<bool> = cases
            .iter_mut()
            .map(|c| matches!(exec(&mut c.db0, &redis::cmd("EXISTS").arg("bench:warm").clone()), Value::Int(1)))
            .collect();
        assert_eq!(held, vec![false, false, true], "WRONG RESULT: bench:warm should exist only on server (c)");
        for case in cases {
            server::stop(case.server);
        }
    }

    let mut f = Figure::versus_baseline(
        "6",
        &format!("Cost on other commands: native workloads with and without the module ({} connections, pipelined)", cfg.fig6_conns),
        vec![
            metric("`SET key value PX 60000`: server CPU per request", Unit::Micros, false),
            metric("`SET ... PX` rate", Unit::Rate, true),
            metric("`GET key`: server CPU per request", Unit::Micros, false),
            metric("`GET` rate", Unit::Rate, true),
        ],
    );
    for (ci, name) in CASES.iter().enumerate() {
        let col = |wi: usize, pick: fn(&Sample) -> f64| Some(Cell::median_of(samples[wi][ci].iter().map(pick).collect()));
        f.row(name, vec![col(0, |s| s.cpu_us), col(0, |s| s.rate), col(1, |s| s.cpu_us), col(1, |s| s.rate)]);
    }
    f.notes.push(format!(
        "Three servers started side by side: (a) without the module, (b) with it loaded and no command of it ever run, (c) with \
         it loaded and `LOCK.ACQUIRE bench:warm o 600000` run once (the module's keyspace subscription active, one lock held). \
         {} sets of the three are started and used in turn, round by round; a cell is the median of {} rounds, in each of \
         which every server of the set takes {} requests of each workload from {} connections in pipelines of {}, the servers \
         in rotating order (a b c, b c a, c a b, ...). Every server first takes one untimed round of `SET`.",
        cfg.fig6_sets, cfg.fig6_rounds, cfg.fig6_requests, cfg.fig6_conns, cfg.fig6_batch
    ));
    f.notes.push(format!(
        "`SET key:<n> value PX 60000`: fresh keys (db {SET_DB}, flushed before every measurement); each raises a generic \
         `expire` keyspace event, which a subscribed module is called for. `GET key:<n>`: random keys of {} existing ones \
         (db {GET_DB}), no keyspace event: a control.",
        cfg.fig6_get_keys
    ));
    f.notes.push(
        "Server CPU per request = (used_cpu_sys + used_cpu_user) delta from `INFO cpu` ÷ requests: steadier than the rate on a \
         small shared machine, where the clients compete with the server for the cores."
            .into(),
    );
    vec![f]
}
