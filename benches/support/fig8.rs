//! Figure 8: server CPU per request, like with like.
//!
//! Three pairs, each a fencelock command against the native command that does the same
//! job with the same outcome, on exact keys (no random names, so no collisions):
//!
//! - fresh grant: `LOCK.ACQUIRE <new key> <owner> 30000` on keys never used, against a
//!   successful `SET <new key> <owner> NX PX 30000`;
//! - busy acquire: `LOCK.ACQUIRE <held key> <other owner> 30000` on keys someone else
//!   holds, against a failing `SET <held key> <owner> NX PX 30000` (the key exists);
//! - release by the holder: `LOCK.RELEASE <key> <owner>` against the compare-and-delete
//!   `EVALSHA` (if GET == owner then DEL) on keys the owner holds.
//!
//! Each pair runs in three setups, each a fresh server with the module: plain (no
//! persistence, `save ""`), `appendonly yes` with `appendfsync everysec`, and with one
//! replica attached (synced before the first round). Only the master's CPU is measured:
//! the `used_cpu_sys + used_cpu_user` delta of `INFO cpu` over the requests, divided by
//! them; and the request rate. The two sides of a pair alternate within each round on
//! the same server (A B, then B A), and a cell is the median over rounds; the paired
//! ratio (fencelock ÷ native) is taken per round, then its median.
//!
//! Requests go out as pipelines of raw RESP, built before the clock starts, from a few
//! connections; every reply is checked (a token > 0, `+OK`, nil, or `:1`), and the key
//! count after each measurement too: a wrong result stops the benchmark. What a
//! measurement needs (the held keys of the busy and release pairs) is prepared before it
//! and not counted, and every measurement starts from an empty database (`FLUSHALL SYNC`
//! between measurements, not counted).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use crate::clients::CLASSIC_RELEASE;
use crate::report::{info_metric, Cell, Figure, Unit};
use crate::server::{self, Server};
use crate::util::{dbsize, exec, info, load_script, server_cpu, uuid_like, Gate};
use crate::Config;

const TTL: &str = "30000";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    Plain,
    Aof,
    Replica,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::Plain, Setup::Aof, Setup::Replica];

    pub fn id(self) -> &'static str {
        match self {
            Setup::Plain => "8a",
            Setup::Aof => "8b",
            Setup::Replica => "8c",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Aof => "AOF",
            Setup::Replica => "replica",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Setup::Plain => "plain server (no persistence, `save \"\"`)",
            Setup::Aof => "`appendonly yes`, `appendfsync everysec`",
            Setup::Replica => "one replica attached (master's CPU only)",
        }
    }

    fn tag(self) -> char {
        match self {
            Setup::Plain => 'p',
            Setup::Aof => 'a',
            Setup::Replica => 'r',
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    Fresh,
    Busy,
    Release,
}

impl Pair {
    pub const ALL: [Pair; 3] = [Pair::Fresh, Pair::Busy, Pair::Release];

    fn tag(self) -> char {
        match self {
            Pair::Fresh => 'f',
            Pair::Busy => 'b',
            Pair::Release => 'r',
        }
    }

    /// The two rows of this pair: (fencelock's, the native one's).
    pub fn rows(self) -> [&'static str; 2] {
        match self {
            Pair::Fresh => [
                "fresh grant: `LOCK.ACQUIRE <new key> <owner> 30000` → token",
                "fresh grant: `SET <new key> <owner> NX PX 30000` → OK",
            ],
            Pair::Busy => [
                "busy: `LOCK.ACQUIRE <held key> <other owner> 30000` → nil",
                "busy: `SET <existing key> <owner> NX PX 30000` → nil",
            ],
            Pair::Release => [
                "release by the holder: `LOCK.RELEASE <key> <owner>` → 1",
                "release by the holder: `EVALSHA <compare-and-delete> 1 <key> <owner>` → 1",
            ],
        }
    }
}

/// What every reply of a measurement must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Token,
    Ok,
    Nil,
    One,
}

impl Want {
    fn accepts(self, line: &[u8]) -> bool {
        match self {
            Want::Token => {
                line.first() == Some(&b':')
                    && std::str::from_utf8(&line[1..]).ok().and_then(|t| t.parse::<i64>().ok()).is_some_and(|t| t > 0)
            }
            Want::Ok => line == b"+OK",
            Want::Nil => line == b"$-1",
            Want::One => line == b":1",
        }
    }
}

fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads `n` one-line replies from `s` (every reply this figure expects is one line),
/// each of which must be `want`; anything else is a wrong result.
fn read_replies(s: &mut TcpStream, n: usize, want: Want, what: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut have, mut seen) = (0usize, 0usize);
    while seen < n {
        let k = s.read(&mut buf[have..]).unwrap_or_else(|e| panic!("{what}: read: {e}"));
        if k == 0 {
            panic!("{what}: the server closed the connection");
        }
        have += k;
        let mut pos = 0;
        while let Some(end) = buf[pos..have].windows(2).position(|w| w == b"\r\n") {
            let line = &buf[pos..pos + end];
            if seen >= n || !want.accepts(line) {
                panic!(
                    "WRONG RESULT: {what}: reply {} of {n} should be {want:?} but the server answered {:?}",
                    seen + 1,
                    String::from_utf8_lossy(&buf[pos..have.min(pos + 200)])
                );
            }
            seen += 1;
            pos += end + 2;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if have == buf.len() {
            panic!("{what}: a reply longer than {} bytes", buf.len());
        }
    }
}

/// A bare RESP connection, TCP_NODELAY.
fn raw_connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the figure-8 server");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// One setup: the master (and its replica), a control connection, the raw connections
/// the requests go out on, and one owner per connection (and one other owner each, the
/// holder of the busy pair's keys).
struct Bed {
    setup: Setup,
    master: Server,
    replica: Option<Server>,
    con: redis::Connection,
    conns: Vec<TcpStream>,
    owners: Vec<String>,
    holders: Vec<String>,
    cad: String,
}

fn start_bed(cfg: &Config, setup: Setup) -> Bed {
    let master = match setup {
        Setup::Plain => server::start(),
        // No automatic rewrite: no fork lands in a measurement (the bench rewrites the
        // AOF itself between rounds, untimed, to keep the file small).
        Setup::Aof => server::start_with(&["appendonly yes", "appendfsync everysec", "auto-aof-rewrite-percentage 0"]),
        Setup::Replica => server::start_with(&["repl-diskless-sync-delay 0"]),
    };
    let replica = (setup == Setup::Replica).then(|| {
        let r = server::start_replica_of(&master);
        crate::support::await_sync(&master, &r);
        crate::support::await_streaming(&master);
        r
    });
    let mut con = master.conn();
    let p = info(&mut con, "persistence");
    let aof = p.get("aof_enabled").map(String::as_str) == Some("1");
    assert_eq!(aof, setup == Setup::Aof, "figure 8 {}: aof_enabled is {:?}", setup.short(), p.get("aof_enabled"));
    if let Some(r) = &replica {
        let slaves = info(&mut con, "replication").get("connected_slaves").cloned();
        assert_eq!(slaves.as_deref(), Some("1"), "figure 8: the master has connected_slaves {slaves:?}, not 1");
        let link = info(&mut r.conn(), "replication").get("master_link_status").cloned();
        assert_eq!(link.as_deref(), Some("up"), "figure 8: the replica's master_link_status is {link:?}");
    }
    let cad = load_script(&mut con, CLASSIC_RELEASE);
    let conns = (0..cfg.fig8_conns).map(|_| raw_connect(master.port)).collect();
    let owners = (0..cfg.fig8_conns).map(|_| uuid_like()).collect();
    let holders = (0..cfg.fig8_conns).map(|_| uuid_like()).collect();
    Bed { setup, master, replica, con, conns, owners, holders, cad }
}

fn stop_bed(bed: Bed) {
    let Bed { master, replica, con, conns, .. } = bed;
    drop(conns);
    drop(con);
    if let Some(r) = replica {
        server::stop(r);
    }
    server::stop(master);
}

impl Bed {
    /// Until the replica has everything the master sent (`WAIT 1`); nothing without one.
    fn settle(&mut self) {
        if self.replica.is_some() {
            let v = exec(&mut self.con, redis::cmd("WAIT").arg(1).arg(60_000));
            assert!(matches!(v, Value::Int(1)), "figure 8: WAIT 1 60000 answered {v:?}: the replica did not catch up");
        }
    }

    fn flush(&mut self) {
        let v = exec(&mut self.con, redis::cmd("FLUSHALL").arg("SYNC"));
        assert!(matches!(v, Value::Okay), "FLUSHALL SYNC answered {v:?}");
        self.settle();
    }

    /// Sends `cmds[c]` on connection `c` in pipelines of `batch`, all connections at
    /// once, checking every reply; the (start, end) of all of it.
    fn send(&mut self, cmds: &[Vec<Vec<u8>>], batch: usize, want: Want, what: &str) -> (Instant, Instant) {
        let gate = Arc::new(Gate::new(cmds.len()));
        let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .conns
                .iter_mut()
                .zip(cmds)
                .map(|(con, mine)| {
                    let gate = gate.clone();
                    // The pipelines, packed before the clock starts.
                    let packed: Vec<Vec<u8>> = mine.chunks(batch).map(|ch| ch.concat()).collect();
                    let sizes: Vec<usize> = mine.chunks(batch).map(|ch| ch.len()).collect();
                    s.spawn(move || {
                        gate.wait();
                        let start = Instant::now();
                        for (p, n) in packed.iter().zip(&sizes) {
                            con.write_all(p).unwrap_or_else(|e| panic!("{what}: write: {e}"));
                            read_replies(con, *n, want, what);
                        }
                        (start, Instant::now())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a figure-8 client failed")).collect()
        });
        (spans.iter().map(|s| s.0).min().unwrap(), spans.iter().map(|s| s.1).max().unwrap())
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Master CPU per request, µs.
    cpu_us: f64,
    /// Requests per second over all connections.
    rate: f64,
}

/// One measurement of one side of `pair` (`fence`: fencelock's): prepare, measure, check,
/// flush. `round` makes the keys new to this measurement.
fn measure(cfg: &Config, bed: &mut Bed, pair: Pair, fence: bool, round: usize) -> Sample {
    let per = cfg.fig8_requests.div_ceil(cfg.fig8_conns);
    let requests = per * cfg.fig8_conns;
    let (side, stag, ptag) = (if fence { 'L' } else { 'S' }, bed.setup.tag(), pair.tag());
    // One width for every key of the figure: `f8:<setup><round><pair><side>:<conn>:<n>`.
    let key = |c: usize, i: usize| format!("f8:{stag}{round:03}{ptag}{side}:{c:02}:{i:07}");
    let what = format!("figure 8 {} {}", bed.setup.short(), pair.rows()[if fence { 0 } else { 1 }]);
    let build = |f: &dyn Fn(usize, &str, &mut Vec<u8>)| -> Vec<Vec<Vec<u8>>> {
        (0..cfg.fig8_conns)
            .map(|c| {
                (0..per)
                    .map(|i| {
                        let mut out = Vec::with_capacity(96);
                        f(c, &key(c, i), &mut out);
                        out
                    })
                    .collect()
            })
            .collect()
    };
    let (owners, holders, cad) = (bed.owners.clone(), bed.holders.clone(), bed.cad.clone());
    let acquire = |k: &str, owner: &str, out: &mut Vec<u8>| push_command(out, &[b"LOCK.ACQUIRE", k.as_bytes(), owner.as_bytes(), TTL.as_bytes()]);
    let setnx = |k: &str, owner: &str, out: &mut Vec<u8>| {
        push_command(out, &[b"SET", k.as_bytes(), owner.as_bytes(), b"NX", b"PX", TTL.as_bytes()])
    };

    // Prepared, not counted: the keys the busy and release pairs need.
    let prep = match (pair, fence) {
        (Pair::Fresh, _) => None,
        (Pair::Busy, true) => Some((build(&|c, k, o| acquire(k, &holders[c], o)), Want::Token)),
        (Pair::Busy, false) => Some((build(&|c, k, o| setnx(k, &holders[c], o)), Want::Ok)),
        (Pair::Release, true) => Some((build(&|c, k, o| acquire(k, &owners[c], o)), Want::Token)),
        (Pair::Release, false) => Some((build(&|c, k, o| setnx(k, &owners[c], o)), Want::Ok)),
    };
    if let Some((cmds, want)) = prep {
        bed.send(&cmds, cfg.fig8_batch, want, &format!("{what} (preparing)"));
        let size = dbsize(&mut bed.con);
        assert_eq!(size, requests as i64, "WRONG RESULT: {what}: {requests} keys prepared but DBSIZE is {size}");
        bed.settle();
    }
    let (cmds, want) = match (pair, fence) {
        (Pair::Fresh, true) => (build(&|c, k, o| acquire(k, &owners[c], o)), Want::Token),
        (Pair::Fresh, false) => (build(&|c, k, o| setnx(k, &owners[c], o)), Want::Ok),
        (Pair::Busy, true) => (build(&|c, k, o| acquire(k, &owners[c], o)), Want::Nil),
        (Pair::Busy, false) => (build(&|c, k, o| setnx(k, &owners[c], o)), Want::Nil),
        (Pair::Release, true) => {
            (build(&|c, k, o| push_command(o, &[b"LOCK.RELEASE", k.as_bytes(), owners[c].as_bytes()])), Want::One)
        }
        (Pair::Release, false) => (
            build(&|c, k, o| push_command(o, &[b"EVALSHA", cad.as_bytes(), b"1", k.as_bytes(), owners[c].as_bytes()])),
            Want::One,
        ),
    };
    let cpu0 = server_cpu(&mut bed.con);
    let (start, end) = bed.send(&cmds, cfg.fig8_batch, want, &what);
    let cpu1 = server_cpu(&mut bed.con);
    bed.master.assert_alive();
    let size = dbsize(&mut bed.con);
    let expect = if pair == Pair::Release { 0 } else { requests as i64 };
    assert_eq!(size, expect, "WRONG RESULT: {what}: DBSIZE is {size} after {requests} requests, expected {expect}");
    bed.flush();
    Sample { cpu_us: (cpu1 - cpu0) * 1e6 / requests as f64, rate: requests as f64 / (end - start).as_secs_f64() }
}

pub fn run(cfg: &Config) -> Vec<Figure> {
    let mut figures = vec![];
    for setup in Setup::ALL {
        let mut bed = start_bed(cfg, setup);
        // Untimed: the server's allocator and dicts grow to the workload's size once.
        for pair in Pair::ALL {
            for fence in [true, false] {
                measure(cfg, &mut bed, pair, fence, 999);
            }
        }
        // samples[pair][0 = fencelock, 1 = native], one per round.
        let mut samples: Vec<[Vec<Sample>; 2]> = vec![[vec![], vec![]]; Pair::ALL.len()];
        for r in 0..cfg.fig8_rounds {
            for (pi, pair) in Pair::ALL.iter().enumerate() {
                // A B in even rounds, B A in odd ones.
                let order = if r % 2 == 0 { [true, false] } else { [false, true] };
                for fence in order {
                    let s = measure(cfg, &mut bed, *pair, fence, r);
                    eprintln!(
                        "  fig {} round {}/{}: {:<78} server CPU {:>6.3} µs/request {:>9.0} requests/s",
                        setup.id(),
                        r + 1,
                        cfg.fig8_rounds,
                        pair.rows()[if fence { 0 } else { 1 }],
                        s.cpu_us,
                        s.rate
                    );
                    samples[pi][if fence { 0 } else { 1 }].push(s);
                }
            }
            if setup == Setup::Aof {
                // Untimed: rewrite the (now empty) data set so the AOF does not grow.
                let v = exec(&mut bed.con, &redis::cmd("BGREWRITEAOF"));
                assert!(!matches!(v, Value::ServerError(_)), "BGREWRITEAOF answered {v:?}");
                crate::support::await_aof_rewrite(&mut bed.con);
            }
        }
        stop_bed(bed);
        figures.push(figure(cfg, setup, &samples));
    }
    figures
}

fn figure(cfg: &Config, setup: Setup, samples: &[[Vec<Sample>; 2]]) -> Figure {
    let mut f = Figure::new(
        setup.id(),
        &format!(
            "Server CPU per request, like with like: {} ({} connections, pipelines of {})",
            setup.title(),
            cfg.fig8_conns,
            cfg.fig8_batch
        ),
        vec![
            info_metric("server CPU per request", Unit::Micros),
            info_metric("requests/s", Unit::Rate),
            info_metric("CPU ÷ native's (paired, median)", Unit::Count),
            info_metric("rate ÷ native's (paired, median)", Unit::Count),
        ],
    );
    f.plain_rows = true;
    let mut per_round = vec![];
    for (pi, pair) in Pair::ALL.iter().enumerate() {
        let [fence, native] = &samples[pi];
        let paired = |x: fn(&Sample) -> f64| -> Cell {
            Cell::median_of(fence.iter().zip(native).map(|(a, b)| x(a) / x(b)).collect())
        };
        let (cpu_ratio, rate_ratio) = (paired(|s| s.cpu_us), paired(|s| s.rate));
        let list = |c: &Cell| c.rounds.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
        per_round.push(format!(
            "{}: CPU {} / rate {}",
            match pair {
                Pair::Fresh => "fresh grant",
                Pair::Busy => "busy",
                Pair::Release => "release",
            },
            list(&cpu_ratio),
            list(&rate_ratio)
        ));
        for (side, rows) in [fence, native].iter().enumerate() {
            let col = |x: fn(&Sample) -> f64| Some(Cell::median_of(rows.iter().map(x).collect()));
            let ratios = if side == 0 { [Some(cpu_ratio.clone()), Some(rate_ratio.clone())] } else { [None, None] };
            let [a, b] = ratios;
            f.row(pair.rows()[side], vec![col(|s| s.cpu_us), col(|s| s.rate), a, b]);
        }
    }
    f.notes.push(format!(
        "Each row sends only the command it names, {} times per round from {} connections in pipelines of {} (built \
         before the clock starts), on exact keys `f8:<setup><round><pair><side>:<connection>:<n>`, all of one width and \
         new to each measurement; owners are 36-character random ids, one per connection, and `<other owner>` another \
         one. Fresh grant: keys that do not exist. Busy: keys held by `<other owner>` through `LOCK.ACQUIRE` (fencelock) \
         or set to its value by `SET ... NX PX 30000` (native). Release: keys the owner took by `LOCK.ACQUIRE` \
         (fencelock) or `SET ... NX PX 30000` (native); the compare-and-delete script is benches/lua/classic_release.lua \
         (`if GET == owner then DEL`). The held keys are prepared before each measured round and not counted; \
         `FLUSHALL SYNC` after every measurement, not counted. Every reply is checked (token > 0, `+OK`, nil, `:1`).",
        cfg.fig8_requests.div_ceil(cfg.fig8_conns) * cfg.fig8_conns,
        cfg.fig8_conns,
        cfg.fig8_batch
    ));
    f.notes.push(format!(
        "Server CPU per request = the master's `used_cpu_sys + used_cpu_user` delta (`INFO cpu`) ÷ requests; requests/s \
         from the first request sent to the last reply read, over all connections. The two rows of a pair alternate on \
         the same server in each of {} rounds (A B, then B A); a cell is the median over rounds; the ratios are \
         fencelock ÷ native taken per round, then their median (below 1 on CPU and above 1 on rate favour fencelock).{}",
        cfg.fig8_rounds,
        match setup {
            Setup::Plain => "",
            Setup::Aof => " `appendonly yes`, `appendfsync everysec`, automatic rewrite off; the bench runs `BGREWRITEAOF` \
                           between rounds, untimed, so no fork lands in a measurement.",
            Setup::Replica => " One replica (a second redis-server with the module, `replicaof` the master) is attached and \
                               fully synced before the first round (`master_link_status:up`, `connected_slaves:1`); \
                               `WAIT 1` after preparing and after flushing, so each measurement starts with the replica \
                               caught up. Only the master's CPU is counted.",
        }
    ));
    f.notes.push(format!("Per-round paired ratios (fencelock ÷ native), in round order: {}.", per_round.join("; ")));
    f
}
