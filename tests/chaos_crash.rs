//! Chaos: `kill -9` of the server at random moments under load, with `appendonly yes`
//! and `appendfsync always`, then a restart from the AOF.
//!
//! Load threads work on keys of their own (mutexes, read locks, write locks, reentrant
//! holds and releases, fences, short leases that end by themselves) and keep a model of
//! what the server acknowledged. After every restart each thread checks its model
//! against the server before doing anything else: every acknowledged grant is there with
//! the same owner, token and hold count, every acknowledged release stays released, fences
//! keep their highest token. The one operation in flight at the kill is indeterminate:
//! either outcome is accepted, nothing else.
//!
//! Tokens never go back: per key they strictly increase, and every token issued by a
//! restarted server is larger than every token acknowledged by the servers before it.
//! A fence is checked with a token an hour ahead of the wall clock and then issues from
//! it, so the server's token floor runs ahead of the clock: after that, only the floor
//! persisted in the AOF (not the clock) keeps tokens from going back.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::Rng;
use support::chaos::scale;
use support::fault_kit::*;
use support::seed;
use support::*;
use redis::{RedisResult, Value};

const SLOTS: usize = 24;
const CHURN_KEYS: usize = 4;
const MAX_HOLDS: i64 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Mutex,
    Read,
    Write,
}

impl Kind {
    fn acquire(self) -> &'static str {
        match self {
            Kind::Mutex => "LOCK.ACQUIRE",
            Kind::Read => "RWLOCK.RLOCK",
            Kind::Write => "RWLOCK.WLOCK",
        }
    }
    fn release(self) -> &'static str {
        match self {
            Kind::Mutex => "LOCK.RELEASE",
            Kind::Read => "RWLOCK.RUNLOCK",
            Kind::Write => "RWLOCK.WUNLOCK",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum St {
    Free,
    Held { token: i64, holds: i64 },
}

/// What the operation in flight at a kill would have made of a slot.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// A fresh grant, token unknown.
    Fresh,
    To(St),
}

struct Slot {
    key: String,
    kind: Kind,
    st: St,
    last_token: i64,
    pending: Option<Pending>,
}

struct Shared {
    port: u16,
    seed: u64,
    stop: AtomicBool,
    /// The pid of the server that is up, 0 while it is down.
    current_pid: AtomicU32,
    acked_ops: AtomicU64,
    /// Per thread: the pid of the last server it verified its model against.
    verified: Vec<AtomicU32>,
}

/// Everything one thread ends with: its model, and each issued token it learnt of, with
/// the pid of the server that issued it.
struct Outcome {
    owner: String,
    slots: Vec<Slot>,
    fence_next: (String, i64),
    fence_checked: (String, i64),
    tokens: Vec<(u32, i64)>,
    verifications: u64,
    indeterminate: u64,
}

fn connect(shared: &Shared) -> Option<(redis::Connection, u32)> {
    let want = shared.current_pid.load(Ordering::SeqCst);
    if want == 0 {
        return None;
    }
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", shared.port)).ok()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    con.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    let text: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    let pid: u32 = parse_info(&text).get("process_id")?.parse().ok()?;
    // Only the server the test started (another process may sit on the port meanwhile).
    (pid == want).then_some((con, pid))
}

/// The holder entry of `owner` on a lock, as (token, holds, ttl); None when it holds nothing.
fn observe(con: &mut redis::Connection, kind: Kind, key: &str, owner: &str) -> RedisResult<Option<(i64, i64, i64)>> {
    let num = |v: &Value| value_int(v).unwrap_or_else(|| panic!("not an integer: {v:?}"));
    match kind {
        Kind::Mutex => {
            let v: Value = redis::cmd("LOCK.INFO").arg(key).query(con)?;
            Ok(parse_lock_info(&v).map(|i| {
                assert_eq!(i.owner_str(), owner, "{key} is held by someone else: {i:?}");
                (i.token, i.holds, i.ttl)
            }))
        }
        Kind::Read | Kind::Write => {
            let v: Value = redis::cmd("RWLOCK.INFO").arg(key).query(con)?;
            if v == Value::Nil {
                return Ok(None);
            }
            let m = pairs(&v);
            let Some(Value::Array(holders)) = m.get("holders") else { panic!("RWLOCK.INFO {key}: {v:?}") };
            assert!(holders.len() <= 1, "{key} has holders nobody took: {v:?}");
            let Some(h) = holders.first() else { return Ok(None) };
            let h = pairs(h);
            let mode = if kind == Kind::Read { "read" } else { "write" };
            assert_eq!(h["owner"], Value::BulkString(owner.as_bytes().to_vec()), "{key}: {v:?}");
            assert!(
                matches!(&h["mode"], Value::BulkString(b) if b == mode.as_bytes())
                    || matches!(&h["mode"], Value::SimpleString(s) if s == mode),
                "{key} held in another mode: {v:?}"
            );
            Ok(Some((num(&h["token"]), num(&h["holds"]), num(&h["ttl"]))))
        }
    }
}

struct Worker {
    id: usize,
    owner: String,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    churn: Vec<(String, i64)>,
    /// FENCE.NEXT key, the highest token acknowledged, and whether a call was in flight.
    f: (String, i64, bool),
    /// The key checked far ahead of the clock; its highest acknowledged; in flight.
    fc: (String, i64, bool),
    tokens: Vec<(u32, i64)>,
    verifications: u64,
    indeterminate: u64,
}

impl Worker {
    fn new(id: usize, shared: Arc<Shared>) -> Worker {
        let kinds = [Kind::Mutex, Kind::Mutex, Kind::Read, Kind::Write];
        Worker {
            id,
            owner: format!("owner-{id}"),
            shared,
            slots: (0..SLOTS)
                .map(|n| Slot {
                    key: format!("c{id}:s{n}"),
                    kind: kinds[n % kinds.len()],
                    st: St::Free,
                    last_token: 0,
                    pending: None,
                })
                .collect(),
            churn: (0..CHURN_KEYS).map(|n| (format!("c{id}:x{n}"), 0)).collect(),
            f: (format!("c{id}:f"), 0, false),
            fc: (format!("c{id}:fc"), 0, false),
            tokens: vec![],
            verifications: 0,
            indeterminate: 0,
        }
    }

    /// Checks the model against the server (just restarted) and settles what was in flight.
    fn verify(&mut self, con: &mut redis::Connection, pid: u32, prev_pid: u32) -> RedisResult<()> {
        for s in &mut self.slots {
            let seen = observe(con, s.kind, &s.key, &self.owner)?;
            let now = match seen {
                None => St::Free,
                Some((token, holds, ttl)) => {
                    assert!(ttl > 0 && ttl <= LONG_TTL, "{}: lease {ttl} ms after restart", s.key);
                    St::Held { token, holds }
                }
            };
            let fits = |want: St| want == now;
            let ok = fits(s.st)
                || match s.pending {
                    Some(Pending::To(st)) => fits(st),
                    Some(Pending::Fresh) => matches!(now, St::Held { token, holds: 1 } if token > s.last_token),
                    None => false,
                };
            assert!(
                ok,
                "after a restart (server pid {pid}, before it {prev_pid}): {} ({:?}) is {now:?}; \
                 acknowledged state {:?}, in flight at the kill {:?}",
                s.key, s.kind, s.st, s.pending
            );
            if let (Some(Pending::Fresh), St::Held { token, .. }) = (s.pending, now) {
                if token > s.last_token {
                    // The grant in flight happened: the dead server issued this token.
                    s.last_token = token;
                    self.tokens.push((prev_pid, token));
                }
            }
            s.st = now;
            s.pending = None;
        }
        let cur: i64 = redis::cmd("FENCE.CURRENT").arg(&self.f.0).query(con)?;
        assert!(
            cur == self.f.1 || (self.f.2 && cur > self.f.1),
            "{}: FENCE.CURRENT {cur} after restart, acknowledged {}",
            self.f.0,
            self.f.1
        );
        if cur > self.f.1 {
            self.tokens.push((prev_pid, cur));
        }
        self.f.1 = cur;
        self.f.2 = false;
        let cur: i64 = redis::cmd("FENCE.CURRENT").arg(&self.fc.0).query(con)?;
        assert!(
            cur == self.fc.1 || (self.fc.2 && cur > self.fc.1),
            "{}: FENCE.CURRENT {cur} after restart, acknowledged {}",
            self.fc.0,
            self.fc.1
        );
        self.fc.1 = cur;
        self.fc.2 = false;
        self.verifications += 1;
        self.shared.verified[self.id].store(pid, Ordering::SeqCst);
        Ok(())
    }

    /// One random operation; Err only for a dead or loading server.
    fn step(&mut self, con: &mut redis::Connection, pid: u32, rng: &mut impl Rng) -> RedisResult<()> {
        let roll = rng.gen_range(0..100);
        if roll < 60 {
            let n = rng.gen_range(0..SLOTS);
            let s = &mut self.slots[n];
            let ttl = LONG_TTL.to_string();
            match s.st {
                St::Free => {
                    s.pending = Some(Pending::Fresh);
                    let r: Option<i64> =
                        redis::cmd(s.kind.acquire()).arg(&s.key).arg(&self.owner).arg(&ttl).query(con)?;
                    let t = r.unwrap_or_else(|| {
                        panic!("{} {} not granted although nobody else uses it", s.kind.acquire(), s.key)
                    });
                    assert!(t > s.last_token, "{}: token {t} after {}", s.key, s.last_token);
                    s.st = St::Held { token: t, holds: 1 };
                    s.last_token = t;
                    self.tokens.push((pid, t));
                }
                St::Held { token, holds } if holds < MAX_HOLDS && rng.gen_bool(0.4) => {
                    s.pending = Some(Pending::To(St::Held { token, holds: holds + 1 }));
                    let r: Option<i64> =
                        redis::cmd(s.kind.acquire()).arg(&s.key).arg(&self.owner).arg(&ttl).query(con)?;
                    assert_eq!(
                        r,
                        Some(token),
                        "{}: a reentrant {} must give the held token back",
                        s.key,
                        s.kind.acquire()
                    );
                    s.st = St::Held { token, holds: holds + 1 };
                }
                St::Held { token, holds } => {
                    let after = if holds == 1 { St::Free } else { St::Held { token, holds: holds - 1 } };
                    s.pending = Some(Pending::To(after));
                    let r: i64 = redis::cmd(s.kind.release()).arg(&s.key).arg(&self.owner).query(con)?;
                    assert_eq!(r, 1, "{}: {} of a held lock", s.key, s.kind.release());
                    s.st = after;
                }
            }
            s.pending = None;
        } else if roll < 75 {
            // Short leases that the server ends by itself (DELs in the AOF).
            let n = rng.gen_range(0..CHURN_KEYS);
            let (key, last) = &mut self.churn[n];
            let ttl = rng.gen_range(5..60);
            // A new owner each time: nil while the last lease runs, never a reentry.
            let owner = format!("{}:{}", self.owner, rng.gen::<u64>());
            let r: Option<i64> = redis::cmd("LOCK.ACQUIRE").arg(&*key).arg(owner).arg(ttl).query(con)?;
            if let Some(t) = r {
                assert!(t > *last, "{key}: token {t} after {last}");
                *last = t;
                self.tokens.push((pid, t));
            }
        } else if roll < 90 {
            self.f.2 = true;
            let t: i64 = redis::cmd("FENCE.NEXT").arg(&self.f.0).query(con)?;
            assert!(t > self.f.1, "{}: FENCE.NEXT {t} after {}", self.f.0, self.f.1);
            self.f = (self.f.0.clone(), t, false);
            self.tokens.push((pid, t));
        } else {
            self.fc.2 = true;
            if self.fc.1 == 0 || rng.gen_bool(0.5) {
                // A client's token from far ahead of the clock (an hour at the start).
                let v = if self.fc.1 == 0 {
                    token_wall_part(now_ms() + 3_600_000)
                } else {
                    self.fc.1 + rng.gen_range(1..1000)
                };
                let r: RedisResult<i64> = redis::cmd("FENCE.CHECK").arg(&self.fc.0).arg(v).query(con);
                match r {
                    Ok(1) => self.fc.1 = v,
                    Err(e) if is_transient(&e) => return Err(e),
                    other => panic!("FENCE.CHECK {} {v} (highest {}) answered {other:?}", self.fc.0, self.fc.1),
                }
            } else {
                let t: i64 = redis::cmd("FENCE.NEXT").arg(&self.fc.0).query(con)?;
                assert!(t > self.fc.1, "{}: FENCE.NEXT {t} after {}", self.fc.0, self.fc.1);
                self.fc.1 = t;
                self.tokens.push((pid, t));
            }
            self.fc.2 = false;
        }
        self.shared.acked_ops.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn run(mut self) -> Outcome {
        let mut rng = seed::rng(self.shared.seed, &format!("load thread {}", self.id));
        let mut con: Option<(redis::Connection, u32)> = None;
        let mut prev_pid = 0;
        let give_up = Instant::now() + Duration::from_secs(900);
        while !self.shared.stop.load(Ordering::SeqCst) {
            assert!(Instant::now() < give_up, "load thread {} ran too long", self.id);
            let Some((c, pid)) = con.as_mut() else {
                match connect(&self.shared) {
                    Some((mut c, pid)) => match self.verify(&mut c, pid, prev_pid) {
                        Ok(()) => {
                            prev_pid = pid;
                            con = Some((c, pid));
                        }
                        Err(e) => assert!(is_transient(&e), "verification: {e}"),
                    },
                    None => std::thread::sleep(Duration::from_millis(2)),
                }
                continue;
            };
            if let Err(e) = self.step(c, *pid, &mut rng) {
                assert!(is_transient(&e), "load thread {}: {e}", self.id);
                self.indeterminate += 1;
                con = None;
            }
        }
        // Whatever was in flight when a stop came stays pending: the final check allows it.
        Outcome {
            owner: self.owner,
            slots: self.slots,
            fence_next: (self.f.0, self.f.1),
            fence_checked: (self.fc.0, self.fc.1),
            tokens: self.tokens,
            verifications: self.verifications,
            indeterminate: self.indeterminate,
        }
    }
}

fn await_or_thread_died(
    handles: &[JoinHandle<Outcome>],
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) {
    wait_until(timeout, what, || {
        assert!(!handles.iter().any(|h| h.is_finished()), "a load thread stopped early (see its panic below)");
        cond()
    });
}

#[test]
fn kill9_under_load_loses_no_acknowledged_grant_and_tokens_never_go_back() {
    let started = Instant::now();
    let kills: usize = scale(3, 20);
    let threads: usize = scale(3, 4);
    let max_run_ms: u64 = scale(800, 2500);
    let min_ops_per_life: u64 = 50;

    let seed = seed::seed("kill9_under_load_loses_no_acknowledged_grant_and_tokens_never_go_back");
    let mut server = Server::start(&["appendonly yes", "appendfsync always"]);
    let shared = Arc::new(Shared {
        port: server.port,
        seed,
        stop: AtomicBool::new(false),
        current_pid: AtomicU32::new(server.pid()),
        acked_ops: AtomicU64::new(0),
        verified: (0..threads).map(|_| AtomicU32::new(0)).collect(),
    });
    let handles: Vec<JoinHandle<Outcome>> = (0..threads)
        .map(|i| {
            let w = Worker::new(i, shared.clone());
            std::thread::Builder::new().name(format!("load-{i}")).spawn(move || w.run()).unwrap()
        })
        .collect();

    let mut rng = seed::rng(seed, "kills");
    let mut lives = vec![server.pid()];
    let mut rewrites = 0;
    for _ in 0..kills {
        // Under load: every thread has checked its model against this server and the
        // threads have done some work on it.
        let pid = server.pid();
        let ops0 = shared.acked_ops.load(Ordering::SeqCst);
        await_or_thread_died(
            &handles,
            Duration::from_secs(60),
            "the load threads verified and worked on the new server",
            || {
                shared.verified.iter().all(|v| v.load(Ordering::SeqCst) == pid)
                    && shared.acked_ops.load(Ordering::SeqCst) >= ops0 + min_ops_per_life
            },
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..max_run_ms)));
        if rng.gen_bool(0.3) {
            // Kill while an AOF rewrite may be running, or just after one.
            let v = raws(&mut server.conn(), &["BGREWRITEAOF"]);
            if let Some(e) = value_err(&v) {
                assert!(e.contains("already in progress"), "BGREWRITEAOF: {e}");
            }
            rewrites += 1;
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
        }
        shared.current_pid.store(0, Ordering::SeqCst);
        server.kill9();
        server.start_again();
        lives.push(server.pid());
        shared.current_pid.store(server.pid(), Ordering::SeqCst);
    }
    let pid = server.pid();
    await_or_thread_died(&handles, Duration::from_secs(60), "the load threads verified the last server", || {
        shared.verified.iter().all(|v| v.load(Ordering::SeqCst) == pid)
    });
    shared.stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Outcome> = handles.into_iter().map(|h| h.join().expect("a load thread failed")).collect();

    // One more crash with no load: the final models must be there exactly (give or take
    // the one call each thread had in flight when told to stop).
    server.kill9();
    server.start_again();
    lives.push(server.pid());
    let mut c = server.conn();
    for o in &outcomes {
        for s in &o.slots {
            let seen = observe(&mut c, s.kind, &s.key, &o.owner).unwrap();
            let now = seen.map_or(St::Free, |(token, holds, _)| St::Held { token, holds });
            let ok = now == s.st
                || match s.pending {
                    Some(Pending::To(st)) => st == now,
                    Some(Pending::Fresh) => matches!(now, St::Held { token, holds: 1 } if token > s.last_token),
                    None => false,
                };
            assert!(ok, "final restart: {} is {now:?}, acknowledged {:?}, in flight {:?}", s.key, s.st, s.pending);
        }
        assert!(fence_current(&mut c, &o.fence_next.0) >= o.fence_next.1, "{} lost its highest token", o.fence_next.0);
        assert!(
            fence_current(&mut c, &o.fence_checked.0) >= o.fence_checked.1,
            "{} lost its highest token",
            o.fence_checked.0
        );
    }

    // Tokens never go back: everything a restarted server issues is above everything
    // acknowledged by the servers before it, also on the keys whose tokens run ahead of
    // the clock.
    let mut all: Vec<(usize, i64)> = vec![];
    for o in &outcomes {
        for &(pid, t) in &o.tokens {
            let life = lives.iter().position(|&p| p == pid).expect("a token from an unknown server");
            all.push((life, t));
        }
    }
    let mut max_before = 0i64;
    for life in 0..lives.len() {
        let these: Vec<i64> = all.iter().filter(|(l, _)| *l == life).map(|(_, t)| *t).collect();
        if let Some(&min) = these.iter().min() {
            assert!(
                min > max_before,
                "server life {life} (after {life} kills) issued token {min}, not above {max_before} issued before"
            );
        }
        max_before = max_before.max(these.iter().copied().max().unwrap_or(0));
    }
    // And on every key of the final server.
    for o in &outcomes {
        let t = fence_next(&mut c, &o.fence_checked.0);
        assert!(
            t > o.fence_checked.1 && t > max_before,
            "{}: FENCE.NEXT {t} after the last restart",
            o.fence_checked.0
        );
        for s in o.slots.iter().filter(|s| s.st == St::Free && s.pending.is_none()) {
            let t: i64 = redis::cmd(s.kind.acquire()).arg(&s.key).arg("late").arg(1000).query(&mut c).unwrap();
            assert!(t > s.last_token && t > max_before, "{}: token {t} after the last restart", s.key);
        }
    }

    let verifications: u64 = outcomes.iter().map(|o| o.verifications).sum();
    let indeterminate: u64 = outcomes.iter().map(|o| o.indeterminate).sum();
    eprintln!(
        "crash loop: {kills} kills ({rewrites} around an AOF rewrite), {} acknowledged ops, {} tokens, \
         {verifications} model checks, {indeterminate} calls cut by a kill, {:?}",
        shared.acked_ops.load(Ordering::SeqCst),
        all.len(),
        started.elapsed()
    );
    assert!(indeterminate > 0, "no kill ever cut a call in flight: the kills did not hit the load");
}
