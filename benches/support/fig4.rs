//! Figure 4: memory and mass expiry, each on a fresh server.
//!
//! - Memory: 1,000,000 held locks (pipelined in big batches from a few connections);
//!   bytes per lock from the `INFO memory` delta (`used_memory`, and RSS as a check on
//!   memory the allocator does not count).
//! - Expiry: 1,000,000 leases whose deadlines are spread over one second; another
//!   connection pings every ~1 ms from loading's end until `DBSIZE` is 0 and keeps the
//!   worst latency.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Value;

use crate::clients::{OneShot, Scripts};
use crate::report::{info_metric, metric, Cell, Figure, Unit};
use crate::server::{self, Server};
use crate::util::{connect, dbsize, exec, exec_pipeline, info, micros, percentile};
use crate::Config;

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn used_memory(con: &mut redis::Connection) -> (f64, f64) {
    // used_memory_rss is sampled by serverCron every 100 ms.
    std::thread::sleep(Duration::from_millis(250));
    let i = info(con, "memory");
    let f = |k: &str| i.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("INFO memory lacks {k}"));
    (f("used_memory"), f("used_memory_rss"))
}

/// Takes locks `lock:0` .. `lock:{n-1}` from `conns` connections in pipelines of
/// `batch`; `ttl(i)` gives lock i's lease. Returns how long it took.
fn load(cfg: &Config, server: &Server, c: OneShot, scripts: &Scripts, ttl: impl Fn(usize) -> u64 + Sync) -> Duration {
    let n = cfg.fig4_locks;
    let per = n.div_ceil(cfg.fig4_conns);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..cfg.fig4_conns {
            let (url, ttl) = (server.url(), &ttl);
            s.spawn(move || {
                let mut con = connect(&url);
                let owner = format!("{}:{t}", crate::util::uuid_like());
                let (lo, hi) = (t * per, ((t + 1) * per).min(n));
                let mut i = lo;
                while i < hi {
                    let j = (i + cfg.fig4_batch).min(hi);
                    let cmds: Vec<_> = (i..j).map(|k| c.acquire(&format!("lock:{k}"), &owner, ttl(k), scripts)).collect();
                    for (cmd, v) in cmds.iter().zip(exec_pipeline(&mut con, &cmds)) {
                        c.check_acquire(cmd, &v);
                    }
                    i = j;
                }
            });
        }
    });
    start.elapsed()
}

struct Memory {
    used_per_lock: f64,
    rss_per_lock: f64,
    load_rate: f64,
    load_time: Duration,
}

fn memory(cfg: &Config, c: OneShot) -> Memory {
    let mut server = server::start();
    let mut con = server.conn();
    let scripts = Scripts::load(&mut con);
    let (used0, rss0) = used_memory(&mut con);
    let t = load(cfg, &server, c, &scripts, |_| 600_000);
    let (used1, rss1) = used_memory(&mut con);
    let n = cfg.fig4_locks;
    let size = dbsize(&mut con);
    assert_eq!(size, n as i64, "WRONG RESULT: {}: {n} locks taken but DBSIZE is {size}", c.name());
    server.assert_alive();
    server::stop(server);
    Memory {
        used_per_lock: (used1 - used0) / n as f64,
        rss_per_lock: (rss1 - rss0) / n as f64,
        load_rate: n as f64 / t.as_secs_f64(),
        load_time: t,
    }
}

struct Expiry {
    worst_ping: f64,
    p99_ping: f64,
    idle_worst_ping: f64,
    /// From the last deadline to DBSIZE 0; None if it never got there.
    cleanup: Option<f64>,
    /// Leases ended per second, from the first deadline to DBSIZE 0.
    end_rate: Option<f64>,
    pings: usize,
    late_start_ms: i64,
}

fn expiry(cfg: &Config, c: OneShot, load_estimate: Duration) -> Expiry {
    let mut server = server::start();
    let mut con = server.conn();
    let scripts = Scripts::load(&mut con);
    let n = cfg.fig4_locks;
    // The first deadline comes after loading (estimated from the memory run), the last
    // one a second later.
    let first = unix_ms() + (load_estimate.as_millis() as i64) * 3 / 2 + 1000;
    let last = first + 1000;
    load(cfg, &server, c, &scripts, |i| (first + (i as i64 * 1000) / n as i64 - unix_ms()).max(1) as u64);
    let late_start_ms = (unix_ms() - first).max(0);
    let mut pinger = connect(&server.url());
    let ping = redis::cmd("PING");
    let (mut during, mut idle_worst) = (vec![], 0f64);
    let give_up = Instant::now() + Duration::from_millis((last - unix_ms()).max(0) as u64) + cfg.fig4_expiry_limit;
    let mut cleanup = None;
    let mut end_rate = None;
    let mut i = 0u64;
    loop {
        let t0 = Instant::now();
        let v = exec(&mut pinger, &ping);
        let l = micros(t0.elapsed());
        assert!(matches!(v, Value::SimpleString(ref s) if s == "PONG"), "PING answered {v:?}");
        let now = unix_ms();
        if now >= first - 50 {
            during.push(l);
        } else {
            idle_worst = idle_worst.max(l);
        }
        i += 1;
        if i.is_multiple_of(10) || now >= last {
            let before = unix_ms();
            let size = dbsize(&mut pinger);
            if before < first - 2 && size != n as i64 {
                panic!("WRONG RESULT: {}: {} of {n} leases ended before the first deadline", c.name(), n as i64 - size);
            }
            if size == 0 {
                let zero = unix_ms();
                cleanup = Some((zero - last) as f64 * 1000.0);
                end_rate = Some(n as f64 / ((zero - first).max(1) as f64 / 1000.0));
                break;
            }
        }
        if Instant::now() >= give_up {
            break;
        }
        crate::util::sleep_until(t0 + Duration::from_millis(1));
    }
    if c == OneShot::Fence {
        let size = dbsize(&mut con);
        assert_eq!(size, 0, "WRONG RESULT: fencelock: {size} of {n} leases still held {:?} after the last deadline", cfg.fig4_expiry_limit);
        // The lease really is over: another owner gets the lock at once.
        let mut a = redis::cmd("LOCK.ACQUIRE");
        a.arg("lock:0").arg("someone-else").arg(1000);
        let v = exec(&mut con, &a);
        assert!(matches!(v, Value::Int(t) if t > 0), "WRONG RESULT: fencelock: lock:0 not free after its lease ended: {v:?}");
    }
    server.assert_alive();
    server::stop(server);
    Expiry {
        worst_ping: during.iter().cloned().fold(0.0, f64::max),
        p99_ping: percentile(&during, 99.0),
        idle_worst_ping: idle_worst,
        cleanup,
        end_rate,
        pings: during.len(),
        late_start_ms,
    }
}

pub fn run(cfg: &Config) -> Vec<Figure> {
    let mem_kinds = [OneShot::Fence, OneShot::SetNx, OneShot::Reentrant];
    let mut mems = vec![];
    for c in mem_kinds {
        let m = memory(cfg, c);
        eprintln!(
            "  fig 4a: {:<45} {:>7.1} B/lock used_memory, {:>7.1} B/lock RSS, loaded at {:>8.0}/s",
            c.name(),
            m.used_per_lock,
            m.rss_per_lock,
            m.load_rate
        );
        mems.push(m);
    }
    let exp_kinds = [OneShot::Fence, OneShot::SetNx];
    let mut exps = vec![];
    for (k, c) in exp_kinds.iter().enumerate() {
        let e = expiry(cfg, *c, mems[k].load_time);
        eprintln!(
            "  fig 4b: {:<45} worst PING {:>8.0} µs, p99 {:>6.0} µs, idle worst {:>6.0} µs, DBSIZE 0 {:?} µs after the last deadline{}",
            c.name(),
            e.worst_ping,
            e.p99_ping,
            e.idle_worst_ping,
            e.cleanup,
            if e.late_start_ms > 0 { format!(" (loading overran the first deadline by {} ms)", e.late_start_ms) } else { String::new() }
        );
        exps.push(e);
    }

    let n = cfg.fig4_locks;
    let mut a = Figure::new(
        "4a",
        &format!("Memory per held lock ({n} locks held)"),
        vec![
            metric("bytes per lock (used_memory)", Unit::Bytes, false),
            metric("bytes per lock (RSS)", Unit::Bytes, false),
            info_metric("locks taken per second while loading", Unit::Rate),
        ],
    );
    for (k, c) in mem_kinds.iter().enumerate() {
        let m = &mems[k];
        let name = match c {
            OneShot::SetNx => "SET key owner NX PX ttl",
            OneShot::Reentrant => "Redisson-style hash lock (HINCRBY + PEXPIRE)",
            _ => c.name(),
        };
        a.row(
            name,
            vec![Some(Cell::single(m.used_per_lock)), Some(Cell::single(m.rss_per_lock)), Some(Cell::single(m.load_rate))],
        );
    }
    a.notes.push(format!(
        "One run per contender on a fresh server: `INFO memory` before and after taking {n} locks named `lock:<i>` with a \
         38-byte owner (`<uuid>:<n>`) and a 10-minute lease, pipelined {} per batch from {} connections. RSS includes \
         allocator slack and is only a check that no memory hides from `used_memory`.",
        cfg.fig4_batch, cfg.fig4_conns
    ));

    let mut b = Figure::new(
        "4b",
        &format!("{n} leases ending within the same second: PING latency"),
        vec![
            metric("worst PING", Unit::Micros, false),
            metric("p99 PING", Unit::Micros, false),
            metric("last deadline to DBSIZE 0", Unit::Micros, false),
            metric("leases ended per second", Unit::Rate, true),
            info_metric("worst PING before the deadlines", Unit::Micros),
            info_metric("PINGs", Unit::Count),
        ],
    );
    for (k, c) in exp_kinds.iter().enumerate() {
        let e = &exps[k];
        let name = if *c == OneShot::SetNx { "SET key owner NX PX ttl (Redis key expiry)" } else { c.name() };
        b.row(
            name,
            vec![
                Some(Cell::single(e.worst_ping)),
                Some(Cell::single(e.p99_ping)),
                e.cleanup.map(Cell::single),
                e.end_rate.map(Cell::single),
                Some(Cell::single(e.idle_worst_ping)),
                Some(Cell::single(e.pings as f64)),
            ],
        );
    }
    b.notes.push(format!(
        "One run per contender on a fresh server. Deadlines are spread evenly over one second starting after loading; a \
         PING every ~1 ms from 50 ms before the first deadline until `DBSIZE` is 0 (given up {} s after the last deadline: \
         a missing cell). For `SET ... PX` keys Redis's active expiry removes them; fencelock's own timer ends the leases.",
        cfg.fig4_expiry_limit.as_secs()
    ));
    for (k, c) in exp_kinds.iter().enumerate() {
        if exps[k].late_start_ms > 0 {
            b.notes.push(format!(
                "{}: loading ran {} ms past the first deadline, so some leases ended while locks were still being taken.",
                c.name(),
                exps[k].late_start_ms
            ));
        }
    }
    vec![a, b]
}
