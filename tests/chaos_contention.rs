//! Chaos workload 1: contention. 50 clients, each on its own connection and thread,
//! run acquire/release cycles on one mutex (with reentries, extends, fenced writes,
//! blocking and non-blocking acquires), then a mixed reader/writer load on one read-write
//! lock (reentries, extends, upgrades, downgrades, fenced writes by writers), then random
//! COUNTs of one semaphore of 3 permits (reentries, extends, blocking and single-try
//! acquires; a holder of all 3 permits writes to the fenced resource). Each load
//! runs once with leases long enough never to end mid-section, and once with leases so
//! short that some end while the holder is still inside (its release then answers 0, its
//! fenced write may be refused as stale). Every operation is recorded and the history
//! checked offline (`support/history.rs`): no overlapping holds, never more semaphore
//! permits surely held at once than the limit, a reentry keeps its token, no repeated or
//! out-of-order tokens, no acknowledged release/extend by a non-holder, no stale write
//! accepted by the fenced resource.
//!
//! Short by default (`make test`); `CHAOS_FULL=1` runs thousands of cycles per load (and
//! 100 semaphore clients).

#[path = "support/history.rs"]
mod history;
mod support;

use std::io;
use std::thread;
use std::time::Duration;

use support::chaos::{self, scale, Stop};
use support::*;
use history::{Op, Recorder, Res};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Guarded write: the token must pass `FENCE.CHECK`, then the resource (a list, in
/// acceptance order) records it.
const GUARD: &str = "redis.call('FENCE.CHECK', KEYS[1], ARGV[1]) redis.call('RPUSH', KEYS[2], ARGV[1]) return 1";

fn res_grant(r: &io::Result<Reply>) -> Res {
    match r {
        Ok(Reply::Int(t)) => Res::Granted(*t),
        Ok(Reply::Nil) => Res::Refused,
        Ok(Reply::Err(e)) => Res::Error(e.clone()),
        Ok(other) => Res::Error(format!("unexpected reply {other:?}")),
        Err(_) => Res::Unknown,
    }
}

fn res_ack(r: &io::Result<Reply>) -> Res {
    match r {
        Ok(Reply::Int(1)) => Res::Ok,
        Ok(Reply::Int(0)) => Res::NotHeld,
        Ok(Reply::Err(e)) => Res::Error(e.clone()),
        Ok(other) => Res::Error(format!("unexpected reply {other:?}")),
        Err(_) => Res::Unknown,
    }
}

/// One workload client: one connection, one owner name. After an indeterminate result
/// it reconnects under a new owner name, so every owner's operations stay sequential.
struct Client {
    port: u16,
    name: String,
    generation: u32,
    raw: Option<Raw>,
    rec: Recorder,
    read_timeout: Duration,
    unknowns: u32,
    errors: Vec<String>,
}

impl Client {
    fn new(port: u16, name: String, rec: Recorder, read_timeout: Duration) -> Client {
        Client { port, name, generation: 0, raw: None, rec, read_timeout, unknowns: 0, errors: vec![] }
    }

    fn owner(&self) -> String {
        format!("{}.{}", self.name, self.generation)
    }

    fn call(&mut self, args: &[&str]) -> io::Result<Reply> {
        if self.raw.is_none() {
            self.raw = Some(Raw::connect(self.port, self.read_timeout)?);
        }
        let r = self.raw.as_mut().unwrap().cmd(args);
        if r.is_err() {
            if let Some(raw) = self.raw.take() {
                raw.close();
            }
            self.unknowns += 1;
            self.generation += 1;
        }
        r
    }

    /// Records one lock operation; `ttl` 0 for releases.
    fn op(&mut self, op: Op, key: &str, ttl: u64, wait: Option<u64>) -> Res {
        let owner = self.owner();
        let (name, is_grant) = match op {
            Op::Acquire => ("LOCK.ACQUIRE", true),
            Op::Release => ("LOCK.RELEASE", false),
            Op::Extend => ("LOCK.EXTEND", false),
            Op::RLock => ("RWLOCK.RLOCK", true),
            Op::WLock => ("RWLOCK.WLOCK", true),
            Op::RUnlock => ("RWLOCK.RUNLOCK", false),
            Op::WUnlock => ("RWLOCK.WUNLOCK", false),
            Op::RwExtend => ("RWLOCK.EXTEND", false),
            Op::SemAcquire { .. } => ("SEM.ACQUIRE", true),
            Op::SemRelease => ("SEM.RELEASE", false),
            Op::SemExtend => ("SEM.EXTEND", false),
            _ => unreachable!(),
        };
        let ttl_s = ttl.to_string();
        let wait_s = wait.map(|w| w.to_string());
        let (limit_s, permits_s) = match op {
            Op::SemAcquire { limit, permits } => (limit.to_string(), permits.to_string()),
            _ => (String::new(), String::new()),
        };
        let mut args = vec![name, key, owner.as_str()];
        if !limit_s.is_empty() {
            args.push(&limit_s);
        }
        if ttl > 0 {
            args.push(&ttl_s);
        }
        if !permits_s.is_empty() {
            args.push("COUNT");
            args.push(&permits_s);
        }
        if let Some(w) = &wait_s {
            args.push("WAIT");
            args.push(w);
        }
        let rec = self.rec.clone();
        let res = rec.record(op, key, &owner, ttl, || {
            let r = self.call(&args);
            if is_grant {
                res_grant(&r)
            } else {
                res_ack(&r)
            }
        });
        if let Res::Error(e) = &res {
            self.errors.push(format!("{} -> {e}", args.join(" ")));
        }
        res
    }

    /// A write under `token` to the fenced resource `{tag}`; true when accepted.
    fn fenced_write(&mut self, tag: &str, token: i64) -> Res {
        let owner = self.owner();
        let fence = format!("{{{tag}}}:fence");
        let log = format!("{{{tag}}}:log");
        let t = token.to_string();
        let rec = self.rec.clone();
        rec.record_fence(&fence, &owner, token, || match self.call(&["EVAL", GUARD, "2", &fence, &log, &t]) {
            Ok(Reply::Int(1)) => Res::Ok,
            Ok(Reply::Err(e)) => Res::Error(e),
            Ok(other) => Res::Error(format!("unexpected reply {other:?}")),
            Err(_) => Res::Unknown,
        })
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    cycles: u64,
    grants: u64,
    reentries: u64,
    /// Releases/extends of a holder answered 0: its lease had ended.
    expired: u64,
    accepted_writes: u64,
    stale_writes: u64,
    upgrades: u64,
    downgrades: u64,
    unknowns: u64,
    /// Mutex and semaphore: grants that blocked in `WAIT` first (answered after 5 ms or more).
    waited: u64,
    /// Semaphore: grants of the whole limit (the holder alone; it writes to the resource).
    whole: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.cycles += o.cycles;
        self.grants += o.grants;
        self.reentries += o.reentries;
        self.expired += o.expired;
        self.accepted_writes += o.accepted_writes;
        self.stale_writes += o.stale_writes;
        self.upgrades += o.upgrades;
        self.downgrades += o.downgrades;
        self.unknowns += o.unknowns;
        self.waited += o.waited;
        self.whole += o.whole;
    }
}

impl Stats {
    /// Counts a fenced write's answer: accepted, or refused as stale.
    fn count_write(&mut self, res: Res) {
        match res {
            Res::Ok => self.accepted_writes += 1,
            r if stale(&r) => self.stale_writes += 1,
            _ => {}
        }
    }
}

#[derive(Clone, Copy)]
struct Load {
    clients: usize,
    cycles: u64,
    /// Lease range in ms.
    ttl: (u64, u64),
    /// Time spent inside a critical section, in µs.
    hold_us: (u64, u64),
    wait_ms: u64,
    limit: Duration,
}

impl Load {
    /// `cycles` and the time limit are (short, full) as [`scale`] picks them; every client
    /// waits up to 10 s for a grant.
    fn new(clients: usize, cycles: (u64, u64), ttl: (u64, u64), hold_us: (u64, u64)) -> Load {
        Load {
            clients,
            cycles: scale(cycles.0, cycles.1),
            ttl,
            hold_us,
            wait_ms: 10_000,
            limit: Duration::from_secs(scale(60, 240)),
        }
    }
}

fn stale(res: &Res) -> bool {
    matches!(res, Res::Error(e) if e.contains("STALE"))
}

/// One client's part of a load: its client, its random source, its stats, the lock's key
/// and the fenced resource's tag, the load.
struct Cycle<'a> {
    cl: &'a mut Client,
    rng: &'a mut StdRng,
    st: &'a mut Stats,
    key: &'a str,
    tag: &'a str,
    load: Load,
}

impl Cycle<'_> {
    /// A lease from the load's range.
    fn ttl(&mut self) -> u64 {
        self.rng.gen_range(self.load.ttl.0..=self.load.ttl.1)
    }

    /// Mostly a blocking acquire; sometimes a single try, retried after a pause when
    /// refused. The token, or None when not granted.
    fn acquire(&mut self, op: Op, ttl: u64) -> Option<i64> {
        let wait = if self.rng.gen_bool(0.8) { Some(self.load.wait_ms) } else { None };
        let asked = std::time::Instant::now();
        match self.cl.op(op, self.key, ttl, wait) {
            Res::Granted(t) => {
                self.st.grants += 1;
                if wait.is_some() && asked.elapsed() >= Duration::from_millis(5) {
                    self.st.waited += 1;
                }
                Some(t)
            }
            _ => {
                if wait.is_none() {
                    thread::sleep(Duration::from_micros(self.rng.gen_range(200..2_000)));
                }
                None
            }
        }
    }

    /// Sometimes (15%) an extend; a 0 means the lease had ended.
    fn maybe_extend(&mut self, op: Op, ttl: u64) {
        if self.rng.gen_bool(0.15) && self.cl.op(op, self.key, ttl, None) == Res::NotHeld {
            self.st.expired += 1;
        }
    }

    /// A time inside the critical section, from the load's range.
    fn hold(&mut self) {
        let hold = self.rng.gen_range(self.load.hold_us.0..=self.load.hold_us.1);
        if hold > 0 {
            thread::sleep(Duration::from_micros(hold));
        }
    }

    /// A write under `token` to the fenced resource, counted.
    fn write(&mut self, token: i64) {
        let res = self.cl.fenced_write(self.tag, token);
        self.st.count_write(res);
    }

    /// `holds` releases; a 0 means the lease had ended (and nothing is left to release).
    fn release(&mut self, op: Op, holds: u32) {
        for _ in 0..holds {
            if self.cl.op(op, self.key, 0, None) == Res::NotHeld {
                self.st.expired += 1;
                break;
            }
        }
    }
}

/// Runs a load: `load.clients` threads, each with its own client named `{name}{c}` and a
/// random source seeded from `seed` and `salt`, running `cycle` until it has completed
/// `load.cycles` (`cycle` answers whether it completed one) or the time limit.
#[allow(clippy::too_many_arguments)]
fn run_load(
    s: &Server,
    rec: &Recorder,
    key: &str,
    tag: &str,
    load: Load,
    seed: u64,
    salt: u64,
    name: &'static str,
    cycle: impl Fn(&mut Cycle) -> bool + Copy + Send + 'static,
) -> Stats {
    let stop = Stop::after(load.limit);
    let mut handles = vec![];
    for c in 0..load.clients {
        let (rec, stop, key, tag) = (rec.clone(), stop.clone(), key.to_string(), tag.to_string());
        let port = s.port;
        handles.push(thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ ((c as u64 + salt) * 0x9e37_79b9));
            let mut cl = Client::new(port, format!("{name}{c}"), rec, Duration::from_millis(load.wait_ms + 15_000));
            let mut st = Stats::default();
            while st.cycles < load.cycles && !stop.stopped() {
                let mut cy = Cycle { cl: &mut cl, rng: &mut rng, st: &mut st, key: &key, tag: &tag, load };
                if cycle(&mut cy) {
                    st.cycles += 1;
                }
            }
            st.unknowns = cl.unknowns as u64;
            (st, cl.errors)
        }));
    }
    collect(handles)
}

/// Runs the mutex load: `clients` threads, `cycles` each.
fn mutex_load(s: &Server, rec: &Recorder, key: &str, tag: &str, load: Load, seed: u64) -> Stats {
    run_load(s, rec, key, tag, load, seed, 1, "m", |cy| {
        let ttl = cy.ttl();
        let Some(token) = cy.acquire(Op::Acquire, ttl) else { return false };
        let mut holds = 1;
        if cy.rng.gen_bool(0.15) {
            match cy.cl.op(Op::Acquire, cy.key, ttl, None) {
                Res::Granted(t) if t == token => {
                    holds += 1;
                    cy.st.reentries += 1;
                }
                _ => {}
            }
        }
        cy.maybe_extend(Op::Extend, ttl);
        cy.hold();
        if cy.rng.gen_bool(0.7) {
            cy.write(token);
        }
        cy.release(Op::Release, holds);
        true
    })
}

/// Runs the read-write load: mostly readers, some writers, upgrades and downgrades.
fn rw_load(s: &Server, rec: &Recorder, key: &str, tag: &str, load: Load, seed: u64) -> Stats {
    run_load(s, rec, key, tag, load, seed, 101, "rw", |cy| {
        let ttl = cy.ttl();
        let hold = Duration::from_micros(cy.rng.gen_range(cy.load.hold_us.0..=cy.load.hold_us.1));
        if cy.rng.gen_bool(0.2) {
            // Writer: write, maybe downgrade, release.
            let token = match cy.cl.op(Op::WLock, cy.key, ttl, Some(cy.load.wait_ms)) {
                Res::Granted(t) => t,
                _ => return false,
            };
            cy.st.grants += 1;
            cy.write(token);
            thread::sleep(hold);
            let downgrade = cy.rng.gen_bool(0.3) && matches!(cy.cl.op(Op::RLock, cy.key, ttl, None), Res::Granted(_));
            if downgrade {
                cy.st.downgrades += 1;
            }
            cy.release(Op::WUnlock, 1);
            if downgrade {
                thread::sleep(hold);
                cy.release(Op::RUnlock, 1);
            }
        } else {
            // Reader: maybe reenter, extend or try to upgrade.
            let token = match cy.cl.op(Op::RLock, cy.key, ttl, Some(cy.load.wait_ms)) {
                Res::Granted(t) => t,
                _ => return false,
            };
            cy.st.grants += 1;
            let mut holds = 1;
            if cy.rng.gen_bool(0.15) {
                // (A new token when the lease had just ended: the checker judges.)
                if cy.cl.op(Op::RLock, cy.key, ttl, None) == Res::Granted(token) {
                    holds += 1;
                    cy.st.reentries += 1;
                }
            }
            cy.maybe_extend(Op::RwExtend, ttl);
            thread::sleep(hold);
            if cy.rng.gen_bool(0.1) {
                // Upgrade only if sole reader (a single try: two waiting upgraders
                // would wait for each other).
                if let Res::Granted(wt) = cy.cl.op(Op::WLock, cy.key, ttl, None) {
                    cy.st.upgrades += 1;
                    cy.write(wt);
                    cy.release(Op::WUnlock, 1);
                }
            }
            cy.release(Op::RUnlock, holds);
        }
        true
    })
}

/// Runs the semaphore load: `clients` threads take random COUNTs of a semaphore of `limit`
/// (mostly one or two permits, sometimes all of them), blocking or in a single try, with
/// reentries and extends. A holder of the whole limit holds alone, so it writes to the
/// fenced resource with its token: tokens of such holders rise with their grants.
fn sem_load(s: &Server, rec: &Recorder, key: &str, tag: &str, limit: u64, load: Load, seed: u64) -> Stats {
    run_load(s, rec, key, tag, load, seed, 201, "s", move |cy| {
        let ttl = cy.ttl();
        let permits = match cy.rng.gen_range(0..20) {
            0..=9 => 1,
            10..=15 => 2.min(limit),
            16..=17 => cy.rng.gen_range(1..=limit),
            _ => limit,
        };
        let acquire = Op::sem(limit, permits);
        let Some(token) = cy.acquire(acquire, ttl) else { return false };
        let mut holds = 1;
        if cy.rng.gen_bool(0.15) {
            // A reentry: same COUNT, one more hold, same token (the checker judges
            // a new one; a hold that had just ended is granted afresh).
            if let Res::Granted(t) = cy.cl.op(acquire, cy.key, ttl, None) {
                holds += 1;
                cy.st.reentries += u64::from(t == token);
            }
        }
        cy.maybe_extend(Op::SemExtend, ttl);
        cy.hold();
        if permits == limit {
            cy.st.whole += 1;
            cy.write(token);
        }
        cy.release(Op::SemRelease, holds);
        true
    })
}

fn collect(handles: Vec<thread::JoinHandle<(Stats, Vec<String>)>>) -> Stats {
    let mut total = Stats::default();
    let mut errors = vec![];
    for h in handles {
        let (st, errs) = h.join().expect("a workload client panicked");
        total += st;
        errors.extend(errs);
    }
    // Error replies other than a stale fenced write mean a broken command.
    assert!(errors.is_empty(), "error replies: {:?}", &errors[..errors.len().min(10)]);
    total
}

/// The checks common to every load: the history is clean, the fenced resource accepted
/// tokens in non-decreasing order, nothing is left blocked, the server is alive.
fn verify(s: &mut Server, rec: &Recorder, tag: &str, what: &str) {
    let events = rec.events();
    let t = std::time::Instant::now();
    let violations = history::check(&events);
    eprintln!("{what}: {} events checked in {:?}", events.len(), t.elapsed());
    if !violations.is_empty() {
        s.dump_log();
        panic!("{what}: the history checker found violations:\n{}", history::render(&events, &violations, 10));
    }
    let mut c = s.conn();
    let log: Vec<i64> = redis::cmd("LRANGE").arg(format!("{{{tag}}}:log")).arg(0).arg(-1).query(&mut c).unwrap();
    let accepted = events.iter().filter(|e| e.op == Op::FenceWrite && e.res == Res::Ok).count();
    let fence_v = history::check_fence_log(tag, &log);
    assert!(fence_v.is_empty(), "{what}: {}", fence_v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"));
    // Every acknowledged write is in the resource (and only those, plus lost replies).
    let unknown = events.iter().filter(|e| e.op == Op::FenceWrite && e.res == Res::Unknown).count();
    assert!(
        log.len() >= accepted && log.len() <= accepted + unknown,
        "{what}: the resource holds {} writes, {accepted} were acknowledged ({unknown} indeterminate)",
        log.len()
    );
    wait_until(Duration::from_secs(10), "no client is left blocked", || {
        info(&mut c, "clients").get("blocked_clients").map(String::as_str) == Some("0")
    });
    s.assert_alive();
}

/// A test's seed (named after it), its server and its recorder.
fn setup(test: &str) -> (u64, Server, Recorder) {
    (support::seed::seed(test), Server::new(), Recorder::with_base(chaos::epoch()))
}

/// Runs one load and reports its stats and how long it took.
fn timed(what: &str, load: impl FnOnce() -> Stats) -> Stats {
    let t = std::time::Instant::now();
    let st = load();
    eprintln!("{what}: {st:?} in {:?}", t.elapsed());
    st
}

/// Every client ran all its cycles.
#[track_caller]
fn assert_finished(st: &Stats, load: &Load) {
    assert_eq!(st.cycles, load.clients as u64 * load.cycles, "the load did not finish in time: {st:?}");
}

#[test]
fn contention_50_clients_on_one_mutex() {
    let (seed, mut s, rec) = setup("contention_50_clients_on_one_mutex");

    // Leases far longer than any critical section.
    let long = Load::new(50, (30, 200), (2_000, 5_000), (0, 500));
    let st = timed("mutex, long leases", || mutex_load(&s, &rec, "mutex", "mf", long, seed));
    assert_finished(&st, &long);
    assert!(st.grants >= st.cycles && st.reentries > 0 && st.accepted_writes > 0, "{st:?}");
    assert_eq!(st.expired, 0, "a lease of seconds ended inside a critical section of < 1 ms: {st:?}");
    assert_eq!(st.stale_writes, 0, "a holder's fenced write was refused with no lease ended: {st:?}");
    verify(&mut s, &rec, "mf", "mutex, long leases");
    let mut c = s.conn();
    assert!(lock_info(&mut c, "mutex").is_none(), "the mutex should be free and gone at the end");
}

#[test]
fn contention_50_clients_on_one_mutex_with_leases_ending_mid_section() {
    let (seed, mut s, rec) = setup("contention_50_clients_on_one_mutex_with_leases_ending_mid_section");
    // Leases of 3..25 ms and sections of up to 20 ms: some leases end inside.
    let short = Load::new(50, (6, 50), (3, 25), (0, 20_000));
    let st = timed("mutex, short leases", || mutex_load(&s, &rec, "mutex", "mf", short, seed));
    assert_finished(&st, &short);
    assert!(st.expired > 0, "no lease ended inside a critical section, the phase tested nothing: {st:?}");
    verify(&mut s, &rec, "mf", "mutex, short leases");
}

#[test]
fn contention_50_clients_mixed_readers_and_writers() {
    let (seed, mut s, rec) = setup("contention_50_clients_mixed_readers_and_writers");
    let long = Load::new(50, (30, 200), (2_000, 5_000), (0, 1_000));
    let st = timed("rwlock, long leases", || rw_load(&s, &rec, "rw", "rwf", long, seed));
    assert_finished(&st, &long);
    assert!(st.accepted_writes > 0 && st.reentries > 0 && st.downgrades > 0, "{st:?}");
    assert_eq!(st.expired, 0, "a lease of seconds ended inside a short section: {st:?}");
    assert_eq!(st.stale_writes, 0, "{st:?}");
    // Readers shared: at some moment two readers surely held at once.
    let events = rec.events();
    assert!(shared_reads(&events), "no two read holds ever coexisted: the load did not mix");
    verify(&mut s, &rec, "rwf", "rwlock, long leases");
    let mut c = s.conn();
    assert_eq!(ok(&mut c, &["RWLOCK.INFO", "rw"]), redis::Value::Nil, "the read-write lock should be free at the end");

    // Then with leases that end mid-section.
    let short = Load { cycles: scale(6, 50), ttl: (3, 25), hold_us: (0, 15_000), ..long };
    let rec2 = Recorder::with_base(chaos::epoch());
    let st = timed("rwlock, short leases", || rw_load(&s, &rec2, "rw2", "rwf2", short, seed.wrapping_add(1)));
    assert_finished(&st, &short);
    assert!(st.expired > 0, "no lease ended inside a section: {st:?}");
    verify(&mut s, &rec2, "rwf2", "rwlock, short leases");
}

/// The holds of `key` that surely existed, as (start, end, permits): each from its grant's
/// answer (`grant` gives the permits of an acquire op, None for any other op) to its
/// owner's next `release` being sent.
fn sure_holds(events: &[history::Event], key: &str, grant: impl Fn(Op) -> Option<u64>, release: Op) -> Vec<(Duration, Duration, u64)> {
    let mut by_owner: std::collections::HashMap<&str, Vec<&history::Event>> = Default::default();
    for e in events.iter().filter(|e| e.key == key) {
        by_owner.entry(e.owner.as_str()).or_default().push(e);
    }
    let mut holds = vec![];
    for evs in by_owner.values_mut() {
        evs.sort_by_key(|e| e.invoke);
        let mut start = None;
        for e in evs.iter() {
            match (grant(e.op), &e.res) {
                (Some(permits), Res::Granted(_)) if start.is_none() => start = Some((e.complete, permits)),
                _ if e.op == release => {
                    if let Some((st, p)) = start.take() {
                        holds.push((st, e.invoke, p));
                    }
                }
                _ => {}
            }
        }
    }
    holds
}

/// True when two read grants of different owners were both answered before either
/// owner's unlock was sent (so both surely held at once).
fn shared_reads(events: &[history::Event]) -> bool {
    let mut holds = sure_holds(events, "rw", |op| (op == Op::RLock).then_some(1), Op::RUnlock);
    holds.sort();
    holds.windows(2).any(|w| w[1].0 < w[0].1)
}

/// The semaphore load's leases and sizes: 50 clients (100 under `CHAOS_FULL=1`).
fn sem_load_size(cycles: (u64, u64), ttl: (u64, u64), hold_us: (u64, u64)) -> Load {
    Load::new(scale(50, 100), cycles, ttl, hold_us)
}

const SEM_LIMIT: u64 = 3;

#[test]
fn contention_50_clients_on_one_semaphore() {
    let (seed, mut s, rec) = setup("contention_50_clients_on_one_semaphore");
    // Leases far longer than any critical section.
    let long = sem_load_size((30, 200), (2_000, 5_000), (0, 1_000));
    let st = timed("semaphore, long leases", || sem_load(&s, &rec, "sem", "sf", SEM_LIMIT, long, seed));
    verify(&mut s, &rec, "sf", "semaphore, long leases");
    assert_finished(&st, &long);
    assert!(st.grants >= st.cycles && st.reentries > 0 && st.waited > 0 && st.accepted_writes > 0, "{st:?}");
    assert_eq!(st.expired, 0, "a lease of seconds ended inside a critical section of < 1 ms: {st:?}");
    // A holder of every permit holds alone: every token written before its was granted
    // earlier, so smaller.
    assert_eq!(st.stale_writes, 0, "a holder of the whole limit was refused by the fence with no lease ended: {st:?}");
    let events = rec.events();
    let (holders, permits) = sure_sharing(&events, "sem");
    assert!(
        holders >= 2 && permits == SEM_LIMIT,
        "the load never surely filled the semaphore with several holders ({holders} holders, {permits} permits at most)"
    );
    checker_bites(&events, "sem", SEM_LIMIT);
    let mut c = s.conn();
    assert_eq!(ok(&mut c, &["SEM.INFO", "sem"]), redis::Value::Nil, "the semaphore should be free and gone at the end");
}

#[test]
fn contention_50_clients_on_one_semaphore_with_leases_ending_mid_section() {
    let (seed, mut s, rec) = setup("contention_50_clients_on_one_semaphore_with_leases_ending_mid_section");
    // Leases of 3..25 ms and sections of up to 15 ms: some leases end inside.
    let short = sem_load_size((6, 50), (3, 25), (0, 15_000));
    let st = timed("semaphore, short leases", || sem_load(&s, &rec, "sem", "sf", SEM_LIMIT, short, seed));
    verify(&mut s, &rec, "sf", "semaphore, short leases");
    assert_finished(&st, &short);
    assert!(st.expired > 0, "no lease ended inside a critical section, the phase tested nothing: {st:?}");
}

/// The most holders, and the most permits, that surely held `key` at one instant: each
/// hold from its grant's answer to its owner's next release being sent (leases of seconds
/// do not end sooner).
fn sure_sharing(events: &[history::Event], key: &str) -> (usize, u64) {
    let permits_of = |op| match op {
        Op::SemAcquire { permits, .. } => Some(permits),
        _ => None,
    };
    let holds = sure_holds(events, key, permits_of, Op::SemRelease);
    let (mut most_holders, mut most_permits) = (0, 0);
    for &(t, _, _) in &holds {
        let at: Vec<&(Duration, Duration, u64)> = holds.iter().filter(|h| h.0 <= t && t < h.1).collect();
        most_holders = most_holders.max(at.len());
        most_permits = most_permits.max(at.iter().map(|h| h.2).sum());
    }
    (most_holders, most_permits)
}

/// The checker has teeth on this very history: an intruder granted every permit just
/// after a real grant (whose owner did nothing for a while after it) is flagged as
/// over the limit.
fn checker_bites(events: &[history::Event], key: &str, limit: u64) {
    let micros = Duration::from_micros;
    let g = events
        .iter()
        .filter(|g| g.key == key && matches!(g.res, Res::Granted(_)))
        .find(|g| {
            let next = events.iter().filter(|e| e.owner == g.owner && e.invoke >= g.complete).map(|e| e.invoke).min();
            next.is_none_or(|n| n > g.complete + micros(500))
        })
        .expect("a grant whose owner paused after it");
    let mut bad = events.to_vec();
    bad.push(history::Event {
        op: Op::sem(limit, limit),
        key: key.into(),
        owner: "intruder".into(),
        ttl_ms: 10_000,
        token: 0,
        invoke: g.complete,
        complete: g.complete + micros(100),
        res: Res::Granted(i64::MAX),
    });
    let v = history::check(&bad);
    assert!(
        v.iter().any(|v| v.kind == history::ViolationKind::SemOverLimit),
        "a planted grant of the whole limit beside {g} was not caught:\n{}",
        history::render(&bad, &v, 5)
    );
}
