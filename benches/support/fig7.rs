//! Figure 7: counting semaphores. fencelock's `SEM.*` against a Redisson-style
//! semaphore with expirable permits (benches/lua/sem_*.lua, after Redisson's
//! RPermitExpirableSemaphore: a free-permit count, a sorted set of permit ids by end of
//! lease, expired permits reclaimed by later calls, waiters subscribed to a channel that
//! releases publish on).
//!
//! - 7a, uncontended: several connections, each on its own semaphore, loop
//!   acquire + release (not pipelined).
//! - 7b, contended: N clients on one semaphore of limit L loop acquire (waiting:
//!   fencelock's `WAIT`; the Lua one's pub/sub wake-up and retry), short work, release.
//! - 7c, fairness: one client asks 4 permits at a time while the others ask 1, same
//!   loop: fencelock serves waiters in arrival order, the Lua one whoever retries first
//!   when enough permits are free.
//!
//! Every reply is checked (clients.rs). The permits held, as the clients see them, are
//! counted in the process: added when a grant's reply is read, taken off before the
//! release is sent, so they are never more than the server has granted; more than the
//! limit stops the benchmark. fencelock's tokens must be distinct and follow real time
//! (a grant whose reply was read before another request was sent has the smaller
//! token). After every round the semaphore must be whole again (every permit free, no
//! lease left) and the database empty.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clients::{sem_available, sem_keys, SemClient, SemKind, Scripts};
use crate::report::{fmt_ratio, fmt_value, info_metric, metric, Cell, Figure, Goal, Unit};
use crate::server::Server;
use crate::util::{dbsize, max, micros, percentile, server_cpu, sleep_until, uuid_like, Gate};
use crate::Config;

/// Leases outlast every round: no permit expires in a measurement.
const TTL: u64 = 30_000;
/// Permits of the large request in 7c.
const LARGE: u64 = 4;

/// The permits held as the clients see them; above the limit is a wrong result.
struct Ledger {
    kind: SemKind,
    limit: u64,
    in_use: AtomicU64,
    peak: AtomicU64,
}

impl Ledger {
    fn new(kind: SemKind, limit: u64) -> Ledger {
        Ledger { kind, limit, in_use: AtomicU64::new(0), peak: AtomicU64::new(0) }
    }

    fn take(&self, permits: u64) {
        let n = self.in_use.fetch_add(permits, SeqCst) + permits;
        if n > self.limit {
            panic!(
                "WRONG RESULT: {}: a grant of {permits} permits makes {n} permits held at once, over the limit of {}",
                self.kind.name(),
                self.limit
            );
        }
        self.peak.fetch_max(n, SeqCst);
    }

    fn give(&self, permits: u64) {
        self.in_use.fetch_sub(permits, SeqCst);
    }
}

/// A granted fencelock request as its client saw it.
#[derive(Clone, Copy)]
struct Seen {
    sent: Instant,
    at: Instant,
    token: i64,
}

/// fencelock's tokens: distinct, and a grant read before another request was sent has
/// the smaller token.
fn check_tokens(kind: SemKind, seen: &[Seen]) {
    let mut by_token = seen.to_vec();
    by_token.sort_by_key(|s| s.token);
    for w in by_token.windows(2) {
        if w[0].token == w[1].token {
            panic!("WRONG RESULT: {}: two fresh grants got the same token {}", kind.name(), w[0].token);
        }
    }
    let mut by_read = seen.to_vec();
    by_read.sort_by_key(|s| s.at);
    let mut by_sent = seen.to_vec();
    by_sent.sort_by_key(|s| s.sent);
    let (mut p, mut highest) = (0, i64::MIN);
    for b in &by_sent {
        while p < by_read.len() && by_read[p].at < b.sent {
            highest = highest.max(by_read[p].token);
            p += 1;
        }
        if b.token <= highest {
            panic!(
                "WRONG RESULT: {}: a request sent after a grant with token {highest} was read got the smaller token {}",
                kind.name(),
                b.token
            );
        }
    }
}

/// After a round: every permit free, no lease left, then the keys removed.
fn finish(kind: SemKind, con: &mut redis::Connection, key: &str, limit: u64, scripts: &Scripts) {
    let free = sem_available(kind, con, key, limit, scripts);
    assert_eq!(free, limit as i64, "WRONG RESULT: {}: {free} of {limit} permits free after every client released", kind.name());
    if kind == SemKind::Lua {
        let k = sem_keys(key);
        let leases: i64 = redis::cmd("ZCARD").arg(&k.timeout).query(con).expect("ZCARD");
        assert_eq!(leases, 0, "WRONG RESULT: {}: {leases} leases left after every client released", kind.name());
        let _: i64 = redis::cmd("DEL").arg(&k.count).arg(&k.timeout).query(con).expect("DEL");
    }
}

/// Before measuring: the contender behaves as a semaphore with expirable permits. The
/// limit's worth of permits is granted, one more is refused, a release frees exactly
/// its permits, and a permit whose lease ended comes back without a release. (Only
/// "the lease has ended" is checked against time, never "it has not yet".)
fn self_check(kind: SemKind, server: &Server, scripts: &Scripts, key: &str) {
    let limit = 3;
    let lease = 30;
    let client = |tag: &str, ttl: u64| {
        SemClient::new(kind, &server.url(), server.port, format!("{}:{tag}", uuid_like()), limit, ttl, scripts, false)
    };
    let (mut a, mut b, mut c, mut d) = (client("a", TTL), client("b", TTL), client("c", TTL), client("d", lease));
    let free = |cl: &mut SemClient| sem_available(kind, cl.con(), key, limit, scripts);
    a.setup(key);
    let ga = a.acquire_free(key, 2);
    let gb = b.acquire_free(key, 1);
    assert_eq!(free(&mut c), 0, "WRONG RESULT: {}: 3 of 3 permits held, yet some are free", kind.name());
    assert!(c.try_acquire(key, 1).is_none(), "WRONG RESULT: {}: a 4th permit of 3 was granted", kind.name());
    a.release(key, &ga);
    assert_eq!(free(&mut c), 2, "WRONG RESULT: {}: a release of 2 of 3 held permits did not leave 2 free", kind.name());
    b.release(key, &gb);
    let _lost = d.acquire_free(key, 1);
    std::thread::sleep(Duration::from_millis(lease + 20));
    assert_eq!(free(&mut c), 3, "WRONG RESULT: {}: a permit whose lease ended did not come back", kind.name());
    let gc = c.acquire_free(key, 3);
    c.release(key, &gc);
    finish(kind, c.con(), key, limit, scripts);
}

// ---- 7a: uncontended ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Uncontended {
    pairs: u64,
    secs: f64,
    cpu_s: f64,
}

fn uncontended(cfg: &Config, server: &Server, kind: SemKind, scripts: &Scripts, tag: &str) -> Uncontended {
    let n = cfg.fig7_conns;
    let connected = Arc::new(Gate::new(n + 1));
    let go = Arc::new(Gate::new(n + 1));
    let stop_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let limit = cfg.fig7_limit;
    let handles: Vec<_> = (0..n)
        .map(|t| {
            let (connected, go, stop_at) = (connected.clone(), go.clone(), stop_at.clone());
            let (url, port, scripts, key) = (server.url(), server.port, scripts.clone(), format!("{tag}:{t}"));
            std::thread::spawn(move || -> u64 {
                let mut client = SemClient::new(kind, &url, port, format!("{}:{t}", uuid_like()), limit, TTL, &scripts, false);
                client.setup(&key);
                connected.wait();
                go.wait();
                let stop = stop_at.lock().unwrap().expect("stop time set");
                let mut pairs = 0;
                while Instant::now() < stop {
                    let g = client.acquire_free(&key, 1);
                    client.release(&key, &g);
                    pairs += 1;
                }
                finish(kind, client.con(), &key, limit, &scripts);
                pairs
            })
        })
        .collect();
    let mut con = server.conn();
    connected.wait();
    let cpu0 = server_cpu(&mut con);
    let start = Instant::now();
    *stop_at.lock().unwrap() = Some(start + cfg.fig7_phase);
    go.wait();
    let pairs: u64 = handles.into_iter().map(|h| h.join().expect("a figure-7a client failed")).sum();
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = server_cpu(&mut con);
    let left = dbsize(&mut con);
    assert_eq!(left, 0, "WRONG RESULT: {}: {left} keys left after every semaphore was released", kind.name());
    Uncontended { pairs, secs, cpu_s: cpu1 - cpu0 }
}

// ---- 7b and 7c: waiting --------------------------------------------------------------------

#[derive(Default)]
struct ThreadOut {
    /// Grants read before the round's end.
    grants: u64,
    /// Request start to grant, for the grants in the round.
    waits_us: Vec<f64>,
    /// The longest wait, counting a wait still going at the round's end up to the end.
    longest_us: f64,
    cmds: u64,
    msgs: u64,
    seen: Vec<Seen>,
}

#[derive(Clone, Debug, Default)]
struct Outcome {
    grants: u64,
    large_grants: u64,
    small_grants: u64,
    small_clients: usize,
    waits_us: Vec<f64>,
    large_longest_us: f64,
    cmds: u64,
    msgs: u64,
    cpu_s: f64,
    secs: f64,
    peak: u64,
    served: usize,
}

/// `permits[i]` is what client i asks each time; every client loops acquire, `work`,
/// release on `key` until the round's end.
fn waiting_round(cfg: &Config, server: &Server, kind: SemKind, scripts: &Scripts, key: &str, permits: &[u64], dur: Duration) -> Outcome {
    let n = permits.len();
    let limit = cfg.fig7_limit;
    let work = cfg.fig7_work;
    let ledger = Arc::new(Ledger::new(kind, limit));
    let connected = Arc::new(Gate::new(n + 1));
    let go = Arc::new(Gate::new(n + 1));
    let stop_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut con = server.conn();
    SemClient::new(kind, &server.url(), server.port, uuid_like(), limit, TTL, scripts, false).setup(key);
    let handles: Vec<_> = permits
        .iter()
        .enumerate()
        .map(|(i, &want)| {
            let (ledger, connected, go, stop_at) = (ledger.clone(), connected.clone(), go.clone(), stop_at.clone());
            let (url, port, scripts, key) = (server.url(), server.port, scripts.clone(), key.to_string());
            std::thread::spawn(move || -> ThreadOut {
                let mut client = SemClient::new(kind, &url, port, format!("{}:{i}", uuid_like()), limit, TTL, &scripts, true);
                connected.wait();
                go.wait();
                let stop = stop_at.lock().unwrap().expect("stop time set");
                client.count_until = stop;
                let mut out = ThreadOut::default();
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    let Some(g) = client.acquire(&key, want, stop) else {
                        out.longest_us = out.longest_us.max(micros(stop.saturating_duration_since(t0)));
                        break;
                    };
                    ledger.take(want);
                    out.longest_us = out.longest_us.max(micros(g.at.min(stop).saturating_duration_since(t0)));
                    if g.at < stop {
                        out.grants += 1;
                        out.waits_us.push(micros(g.at - t0));
                    }
                    if let Some(token) = g.token {
                        out.seen.push(Seen { sent: g.sent, at: g.at, token });
                    }
                    std::thread::sleep(work);
                    ledger.give(want);
                    client.release(&key, &g);
                }
                out.cmds = client.cmds;
                out.msgs = client.msgs;
                out
            })
        })
        .collect();
    connected.wait();
    let cpu0 = server_cpu(&mut con);
    let start = Instant::now();
    let stop = start + dur;
    *stop_at.lock().unwrap() = Some(stop);
    go.wait();
    sleep_until(stop);
    let cpu1 = server_cpu(&mut con);
    let secs = start.elapsed().as_secs_f64();
    let outs: Vec<ThreadOut> = handles.into_iter().map(|h| h.join().expect("a figure-7 client failed")).collect();
    check_tokens(kind, &outs.iter().flat_map(|o| o.seen.iter().copied()).collect::<Vec<_>>());
    finish(kind, &mut con, key, limit, scripts);
    let left = dbsize(&mut con);
    assert_eq!(left, 0, "WRONG RESULT: {}: {left} keys left after every client released", kind.name());

    let mut o = Outcome { cpu_s: cpu1 - cpu0, secs, peak: ledger.peak.load(SeqCst), ..Default::default() };
    for (t, &want) in outs.iter().zip(permits) {
        o.grants += t.grants;
        o.cmds += t.cmds;
        o.msgs += t.msgs;
        o.served += (t.grants > 0) as usize;
        o.waits_us.extend(&t.waits_us);
        if want > 1 {
            o.large_grants += t.grants;
            o.large_longest_us = o.large_longest_us.max(t.longest_us);
        } else {
            o.small_grants += t.grants;
            o.small_clients += 1;
        }
    }
    assert!(o.grants > 0, "WRONG RESULT: {}: no grant in a {dur:?} round", kind.name());
    o
}

pub fn run(cfg: &Config, server: &mut Server, scripts: &Scripts) -> Vec<Figure> {
    let kinds = SemKind::ALL;
    for (ci, kind) in kinds.iter().enumerate() {
        self_check(*kind, server, scripts, &format!("f7:check:{ci}"));
    }
    let mut a: Vec<Vec<Uncontended>> = vec![vec![]; kinds.len()];
    let mut b: Vec<Vec<Outcome>> = vec![vec![]; kinds.len()];
    let mut c: Vec<Vec<Outcome>> = vec![vec![]; kinds.len()];
    let contended = vec![1u64; cfg.fig7_clients];
    let mut fair = vec![1u64; cfg.fig7_fair_small + 1];
    fair[0] = LARGE;
    for r in 0..cfg.fig7_rounds {
        let order: Vec<usize> = (0..kinds.len()).map(|k| (k + r) % kinds.len()).collect();
        for &ci in &order {
            let kind = kinds[ci];
            let u = uncontended(cfg, server, kind, scripts, &format!("f7a:{r}:{ci}"));
            server.assert_alive();
            eprintln!(
                "  fig 7a round {}/{}: {:<58} pairs {:>8.0}/s cpu/pair {:>6.1} µs",
                r + 1,
                cfg.fig7_rounds,
                kind.name(),
                u.pairs as f64 / u.secs,
                u.cpu_s * 1e6 / u.pairs.max(1) as f64
            );
            a[ci].push(u);
        }
        for &ci in &order {
            let kind = kinds[ci];
            let o = waiting_round(cfg, server, kind, scripts, &format!("f7b:{r}:{ci}"), &contended, cfg.fig7_round);
            server.assert_alive();
            eprintln!(
                "  fig 7b round {}/{}: {:<58} grants {:>7.0}/s cmds/grant {:>6.2} cpu/grant {:>7.1} µs p50 {:>8.0} µs p99 {:>8.0} µs peak {} served {}",
                r + 1,
                cfg.fig7_rounds,
                kind.name(),
                o.grants as f64 / o.secs,
                o.cmds as f64 / o.grants.max(1) as f64,
                o.cpu_s * 1e6 / o.grants.max(1) as f64,
                percentile(&o.waits_us, 50.0),
                percentile(&o.waits_us, 99.0),
                o.peak,
                o.served
            );
            b[ci].push(o);
        }
        for &ci in &order {
            let kind = kinds[ci];
            let o = waiting_round(cfg, server, kind, scripts, &format!("f7c:{r}:{ci}"), &fair, cfg.fig7_round);
            server.assert_alive();
            eprintln!(
                "  fig 7c round {}/{}: {:<58} large (COUNT {LARGE}) grants {:>5} small grants {:>6} ({:.1} per client) large longest wait {:>8.0} µs",
                r + 1,
                cfg.fig7_rounds,
                kind.name(),
                o.large_grants,
                o.small_grants,
                o.small_grants as f64 / o.small_clients.max(1) as f64,
                o.large_longest_us
            );
            c[ci].push(o);
        }
    }

    let limit = cfg.fig7_limit;
    let mut fa = Figure::new(
        "7a",
        &format!("Semaphore, uncontended: {} connections, each on its own semaphore, acquire + release (not pipelined)", cfg.fig7_conns),
        vec![metric("acquire+release pairs/s", Unit::Rate, true), metric("server CPU per pair", Unit::Micros, false)],
    );
    for (ci, kind) in kinds.iter().enumerate() {
        let us = &a[ci];
        fa.row(
            kind.name(),
            vec![
                Some(Cell::median_of(us.iter().map(|u| u.pairs as f64 / u.secs).collect())),
                Some(Cell::median_of(us.iter().map(|u| u.cpu_s * 1e6 / u.pairs.max(1) as f64).collect())),
            ],
        );
    }
    fa.notes.push(format!(
        "Median of {} rounds of {} ms. Each connection loops one acquire of 1 permit (limit {limit}) and its release, each \
         a round trip; every acquire must be granted and every release must answer released. The Redisson-style semaphore \
         is set up (`trySetPermits`: `SET name {limit} NX`) before the round, not counted; fencelock needs no setup (a free \
         semaphore is no key).",
        cfg.fig7_rounds,
        cfg.fig7_phase.as_millis()
    ));

    let mut fb = Figure::new(
        "7b",
        &format!("Semaphore, contended: {} clients on one semaphore of limit {limit}, acquire (waiting), short work, release", cfg.fig7_clients),
        vec![
            metric("grants/s", Unit::Rate, true),
            metric("commands sent per grant", Unit::Count, false),
            metric("server CPU per grant", Unit::Micros, false),
            metric("p50 wait", Unit::Micros, false),
            metric("p99 wait", Unit::Micros, false),
            info_metric("pub/sub messages per grant", Unit::Count),
            info_metric("peak permits held", Unit::Count),
            info_metric("clients served", Unit::Count),
        ],
    );
    for (ci, kind) in kinds.iter().enumerate() {
        let os = &b[ci];
        let per_grant = |x: fn(&Outcome) -> f64| Cell::median_of(os.iter().map(|o| x(o) / o.grants.max(1) as f64).collect());
        let waits: Vec<f64> = os.iter().flat_map(|o| o.waits_us.iter().copied()).collect();
        fb.row(
            kind.name(),
            vec![
                Some(Cell::median_of(os.iter().map(|o| o.grants as f64 / o.secs).collect())),
                Some(per_grant(|o| o.cmds as f64)),
                Some(per_grant(|o| o.cpu_s * 1e6)),
                Some(Cell::pooled(percentile(&waits, 50.0), waits.len())),
                Some(Cell::pooled(percentile(&waits, 99.0), waits.len())),
                Some(per_grant(|o| o.msgs as f64)),
                Some(Cell::single(max(&os.iter().map(|o| o.peak as f64).collect::<Vec<_>>()))),
                Some(Cell::median_of(os.iter().map(|o| o.served as f64).collect())),
            ],
        );
    }
    fb.notes.push(format!(
        "Median of {} rounds of {} ms; waits pooled over the rounds. Each client loops: acquire 1 permit, sleep {} µs (the \
         work), release. fencelock waits server-side (`WAIT`, served in arrival order); a Redisson-style client tries, and \
         when refused subscribes to the semaphore's channel and retries on every wake-up (messages already received are \
         taken together), one process per client, so every release's message reaches every waiter. Wait: from the \
         acquire's start to the grant's reply. Commands count every try, SUBSCRIBE, UNSUBSCRIBE and release; server CPU \
         is the `INFO cpu` delta over the round. Peak permits held: the most held at once as the clients saw them (the \
         benchmark stops if it ever passes {limit}).",
        cfg.fig7_rounds,
        cfg.fig7_round.as_millis(),
        cfg.fig7_work.as_micros()
    ));

    let mut fc = Figure::new(
        "7c",
        &format!(
            "Semaphore fairness: 1 client asking {LARGE} permits, {} asking 1, limit {limit} (grants per {} ms round)",
            cfg.fig7_fair_small,
            cfg.fig7_round.as_millis()
        ),
        vec![
            metric(&format!("COUNT {LARGE} request granted"), Unit::Count, true),
            info_metric("COUNT 1 grants per small client", Unit::Count),
            metric(&format!("COUNT {LARGE} grants ÷ a small client's"), Unit::Count, true),
            metric("permits granted/s", Unit::Rate, true),
            metric(&format!("COUNT {LARGE} longest wait"), Unit::Micros, false),
        ],
    );
    for (ci, kind) in kinds.iter().enumerate() {
        let os = &c[ci];
        let per_small = |o: &Outcome| o.small_grants as f64 / o.small_clients.max(1) as f64;
        fc.row(
            kind.name(),
            vec![
                Some(Cell::median_of(os.iter().map(|o| o.large_grants as f64).collect())),
                Some(Cell::median_of(os.iter().map(per_small).collect())),
                Some(Cell::median_of(os.iter().map(|o| o.large_grants as f64 / per_small(o).max(f64::MIN_POSITIVE)).collect())),
                Some(Cell::median_of(os.iter().map(|o| (LARGE * o.large_grants + o.small_grants) as f64 / o.secs).collect())),
                Some(Cell::median_of(os.iter().map(|o| o.large_longest_us).collect())),
            ],
        );
    }
    fc.notes.push(format!(
        "Median of {} rounds of {} ms, the same loop as 7b. 1× in the third column: the large request is granted as often \
         as each small client; 0: it starved. Its longest wait counts a wait still going when the round ended (up to the \
         end). fencelock serves waiters in arrival order, so a large request at the head holds back later small ones until \
         {LARGE} permits are free; the Redisson-style semaphore grants whoever retries when enough are free (\"non-fair \
         mode\"), and single permits are taken again as soon as they come back.",
        cfg.fig7_rounds,
        cfg.fig7_round.as_millis()
    ));
    vec![fa, fb, fc]
}

/// The semaphore goals, reported (never asserted).
pub fn goals(figures: &[Figure], cfg: &Config) -> Vec<Goal> {
    let mut out = vec![];
    let find = |id: &str| figures.iter().find(|f| f.id == id);
    let (fence, lua) = (SemKind::Fence.name(), SemKind::Lua.name());
    if let Some(f) = find("7b") {
        let x = f.value(fence, 0) / f.value(lua, 0);
        out.push(Goal {
            goal: format!("contended semaphore grants ≥ 3× the Redisson-style one ({} clients, limit {})", cfg.fig7_clients, cfg.fig7_limit),
            measured: format!(
                "{} ({} vs {}), {} vs {} commands per grant",
                fmt_ratio(x),
                fmt_value(Unit::Rate, f.value(fence, 0)),
                fmt_value(Unit::Rate, f.value(lua, 0)),
                fmt_value(Unit::Count, f.value(fence, 1)),
                fmt_value(Unit::Count, f.value(lua, 1))
            ),
            met: x >= 3.0,
        });
    }
    if let Some(f) = find("7c") {
        let share = f.value(fence, 2);
        out.push(Goal {
            goal: format!("a COUNT {LARGE} request among COUNT 1 requests never starves: granted ≥ 0.5× as often as each small client"),
            measured: format!(
                "{} (Redisson-style: {})",
                fmt_ratio(share),
                fmt_ratio(f.value(lua, 2))
            ),
            met: share >= 0.5,
        });
    }
    out
}
