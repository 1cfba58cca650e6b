//! Chaos workload 3, blocked clients, for every kind that blocks (mounted by
//! `chaos_blocked.rs` and `chaos_sem_blocked.rs` with
//! `#[path = "support/blocked_chaos.rs"] mod blocked_chaos;`, beside `mod history;`).
//!
//! [`run`]: waiters block on one key (`LOCK.ACQUIRE ... WAIT <ms>`, or `SEM.ACQUIRE ...
//! COUNT 1|2|3 WAIT <ms>`; see [`Kind`]), each acquire under a fresh owner name, over and
//! over. Holders release after a short section or let their lease end, while a chaos
//! thread `CLIENT KILL`s waiters (and sometimes holders), `CLIENT UNBLOCK`s waiters,
//! `DEL`s the key and runs `FLUSHALL`; a monitor samples the key's `INFO` all along (each
//! test parses it into its own [`Sample`]). Every acquire and release, `DEL` and `FLUSHALL`
//! is recorded for the history checker.
//!
//! [`judge`]: the rules every kind is judged by (each test adds its own): every live waiter
//! was granted or answered nil within its timeout plus [`SLACK`] (a nil only after the
//! full timeout, or after a `CLIENT UNBLOCK` that said it unblocked it); a waiter killed
//! while blocked was never granted (its owner never shows among the holders); a client
//! killed while not blocked holds no longer than its lease; only a kill loses an answer
//! and nothing answers an error; the key is never seen free with waiters for long.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{self, Event, Op, Recorder, Res};
use crate::support::chaos::{self, since_epoch, Stop};
use crate::support::cmd::{info, wait_until};
use crate::support::resp::{Raw, Reply};
use crate::support::server::Server;

/// How late past its timeout a waiter's answer may come on a loaded 2-core machine.
pub const SLACK: Duration = Duration::from_millis(2_500);

/// What the waiters block on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A mutex: `LOCK.ACQUIRE key owner ttl WAIT <300..3000 ms>`.
    Lock,
    /// A semaphore of `limit` permits: `SEM.ACQUIRE key owner limit ttl COUNT 1|2|3 WAIT
    /// <200..2000 ms>`.
    Sem { limit: u64 },
}

impl Kind {
    /// The `INFO` command the monitor samples.
    pub fn info_cmd(self) -> &'static str {
        match self {
            Kind::Lock => "LOCK.INFO",
            Kind::Sem { .. } => "SEM.INFO",
        }
    }

    /// What the messages call the key.
    fn noun(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Sem { .. } => "semaphore",
        }
    }

    /// What the messages call one of the key's holders.
    fn holder_word(self) -> &'static str {
        match self {
            Kind::Lock => "owner",
            Kind::Sem { .. } => "holder",
        }
    }

    /// The longest `WAIT` a waiter sends.
    fn max_wait(self) -> Duration {
        match self {
            Kind::Lock => Duration::from_secs(3),
            Kind::Sem { .. } => Duration::from_secs(2),
        }
    }

    /// One acquire's (permits, WAIT, ttl in ms), drawn from `rng` in this order.
    fn draw(self, rng: &mut StdRng) -> (u64, Duration, u64) {
        let permits: u64 = match self {
            Kind::Lock => 1,
            Kind::Sem { .. } => match rng.gen_range(0..10) {
                0..=4 => 1,
                5..=7 => 2,
                _ => 3,
            },
        };
        let wait = match self {
            Kind::Lock => Duration::from_millis(rng.gen_range(300..3_000)),
            Kind::Sem { .. } => Duration::from_millis(rng.gen_range(200..2_000)),
        };
        let ttl: u64 = rng.gen_range(20..250);
        (permits, wait, ttl)
    }

    /// The acquire, as recorded and as sent.
    fn acquire(self, key: &str, owner: &str, permits: u64, wait: Duration, ttl: u64) -> (Op, Vec<String>) {
        let (wait, ttl) = (wait.as_millis().to_string(), ttl.to_string());
        match self {
            Kind::Lock => (Op::Acquire, ["LOCK.ACQUIRE", key, owner, &ttl, "WAIT", &wait].map(String::from).to_vec()),
            Kind::Sem { limit } => {
                let (limit_s, permits_s) = (limit.to_string(), permits.to_string());
                let args = ["SEM.ACQUIRE", key, owner, &limit_s, &ttl, "COUNT", &permits_s, "WAIT", &wait];
                (Op::sem(limit, permits), args.map(String::from).to_vec())
            }
        }
    }

    fn is_acquire(self, op: Op) -> bool {
        match self {
            Kind::Lock => op == Op::Acquire,
            Kind::Sem { .. } => matches!(op, Op::SemAcquire { .. }),
        }
    }

    /// The release, as recorded, and its command.
    fn release(self) -> (Op, &'static str) {
        match self {
            Kind::Lock => (Op::Release, "LOCK.RELEASE"),
            Kind::Sem { .. } => (Op::SemRelease, "SEM.RELEASE"),
        }
    }

    /// An attempt's client for messages, with its COUNT where there is one.
    fn client(self, a: &Attempt) -> String {
        match self {
            Kind::Lock => format!("client {}", a.client_id),
            Kind::Sem { .. } => format!("client {}, COUNT {}", a.client_id, a.permits),
        }
    }
}

/// One run: its key and kind, how many waiters, how long, how often the chaos thread
/// runs `FLUSHALL`.
#[derive(Clone, Copy)]
pub struct Workload {
    pub kind: Kind,
    pub key: &'static str,
    pub waiters: usize,
    pub run: Duration,
    /// The chaos thread's roll (0..100) below which, from 80, it runs `FLUSHALL`: 0..35
    /// `CLIENT KILL`, 35..60 `CLIENT UNBLOCK`, 60..80 `DEL`, then `FLUSHALL`, then quiet.
    pub flushall_below: u32,
}

/// What the chaos thread may know of each waiter: its connection id and the owner of the
/// acquire it is sending or blocked in (set before the acquire is sent).
#[derive(Clone, Default)]
struct Slot {
    id: i64,
    owner: String,
}

/// One acquire as its waiter saw it (beyond the history event).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub owner: String,
    pub client_id: i64,
    /// Its COUNT (1 for a mutex).
    pub permits: u64,
    pub wait: Duration,
    pub ttl: u64,
    pub invoke: Duration,
    pub complete: Duration,
    pub res: Res,
    /// The socket read timed out: the server never answered.
    pub hung: bool,
}

/// A `CLIENT KILL` or `CLIENT UNBLOCK` of the chaos thread.
#[derive(Debug, Clone)]
pub struct ChaosAct {
    /// `kill` or `unblock`.
    pub what: &'static str,
    pub client_id: i64,
    /// The waiter's owner at the time.
    pub owner: String,
    pub invoke: Duration,
    pub complete: Duration,
    /// Kill: the target was blocked when killed (atomically, in one MULTI). Unblock: the
    /// server said it unblocked it.
    pub hit: bool,
}

/// One `INFO` of the key, as each test keeps it; what the shared rules read of it.
pub trait Sample: Send + 'static {
    /// The sample of a reply to the kind's `INFO` (panics on a malformed one).
    fn parse(invoke: Duration, complete: Duration, r: &Reply) -> Self;
    /// When it was asked and answered.
    fn window(&self) -> (Duration, Duration);
    /// The owners that hold the key.
    fn holders(&self) -> Vec<&str>;
    fn waiters(&self) -> i64;
}

/// What every thread of a run shares.
#[derive(Clone)]
struct Shared {
    w: Workload,
    port: u16,
    rec: Recorder,
    slots: Arc<Mutex<Vec<Slot>>>,
    stop: Stop,
    seed: u64,
}

fn waiter(shared: Shared, i: usize) -> Vec<Attempt> {
    let Shared { w, port, rec, slots, stop, seed } = shared;
    let mut rng = StdRng::seed_from_u64(seed ^ ((i as u64 + 7) * 0x2545_f491));
    let mut attempts = vec![];
    let mut generation = 0;
    'connections: while !stop.stopped() {
        generation += 1;
        let mut raw = match Raw::connect(port, w.kind.max_wait() + SLACK) {
            Ok(r) => r,
            Err(e) => panic!("waiter {i} cannot connect: {e}"),
        };
        let id = match raw.client_id() {
            Ok(id) => id,
            Err(_) => continue, // killed before it began
        };
        let mut n = 0;
        while !stop.stopped() {
            n += 1;
            let owner = format!("w{i}.{generation}.{n}");
            let (permits, wait, ttl) = w.kind.draw(&mut rng);
            slots.lock().unwrap()[i] = Slot { id, owner: owner.clone() };
            let (op, args) = w.kind.acquire(w.key, &owner, permits, wait, ttl);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut hung = false;
            let res = rec.record(op, w.key, &owner, ttl, || match raw.cmd(&args) {
                Ok(Reply::Int(t)) => Res::Granted(t),
                Ok(Reply::Nil) => Res::Refused,
                Ok(Reply::Err(e)) => Res::Error(e),
                Ok(other) => Res::Error(format!("unexpected {other:?}")),
                Err(e) => {
                    hung = matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
                    Res::Unknown
                }
            });
            attempts.push(Attempt {
                owner: owner.clone(),
                client_id: id,
                permits,
                wait,
                ttl,
                // Filled in from the history (owners are unique per acquire).
                invoke: Duration::ZERO,
                complete: Duration::ZERO,
                res: res.clone(),
                hung,
            });
            match res {
                Res::Granted(_) => {
                    thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
                    if rng.gen_bool(0.6) {
                        let (op, release) = w.kind.release();
                        let r = rec.record(op, w.key, &owner, 0, || match raw.cmd(&[release, w.key, &owner]) {
                            Ok(Reply::Int(1)) => Res::Ok,
                            Ok(Reply::Int(0)) => Res::NotHeld,
                            Ok(Reply::Err(e)) => Res::Error(e),
                            Ok(other) => Res::Error(format!("unexpected {other:?}")),
                            Err(_) => Res::Unknown,
                        });
                        if r == Res::Unknown {
                            continue 'connections;
                        }
                    }
                    // Otherwise the lease ends by itself.
                }
                Res::Unknown => continue 'connections, // killed (or hung: reported later)
                _ => {}
            }
        }
    }
    attempts
}

fn chaos_thread(shared: Shared) -> Vec<ChaosAct> {
    let Shared { w, port, rec, slots, stop, seed } = shared;
    let key = w.key;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4a0_5000);
    let mut c = Raw::connect(port, Duration::from_secs(20)).expect("chaos connection");
    let mut acts = vec![];
    while !stop.stopped() {
        thread::sleep(Duration::from_millis(rng.gen_range(3..30)));
        // Hold the registry while acting on a waiter: it cannot send its next acquire
        // (under a new owner) meanwhile, so the owner we name is the one it blocks in.
        let registry = slots.lock().unwrap();
        let slot = registry[rng.gen_range(0..registry.len())].clone();
        let roll = rng.gen_range(0..100);
        if roll >= 60 {
            drop(registry);
        }
        if roll < 35 {
            if slot.id == 0 {
                continue;
            }
            // Kill, and know atomically whether it was blocked right then.
            let invoke = since_epoch();
            let id = slot.id.to_string();
            c.send(&["MULTI"]).unwrap();
            c.send(&["CLIENT", "LIST", "ID", &id]).unwrap();
            c.send(&["CLIENT", "KILL", "ID", &id]).unwrap();
            c.send(&["EXEC"]).unwrap();
            for _ in 0..3 {
                c.read().unwrap();
            }
            let exec = c.read().unwrap();
            let complete = since_epoch();
            let (line, killed) = match &exec {
                Reply::Array(v) if v.len() == 2 => (v[0].text(), v[1].int() == Some(1)),
                other => panic!("MULTI CLIENT LIST/KILL answered {other:?}"),
            };
            if killed {
                let flags = line.split_whitespace().find_map(|kv| kv.strip_prefix("flags=")).unwrap_or("");
                let blocked = flags.contains('b');
                acts.push(ChaosAct {
                    what: "kill",
                    client_id: slot.id,
                    owner: slot.owner,
                    invoke,
                    complete,
                    hit: blocked,
                });
            }
        } else if roll < 60 {
            if slot.id == 0 {
                continue;
            }
            let invoke = since_epoch();
            let r = c.cmd(&["CLIENT", "UNBLOCK", &slot.id.to_string()]).unwrap();
            let complete = since_epoch();
            acts.push(ChaosAct {
                what: "unblock",
                client_id: slot.id,
                owner: slot.owner,
                invoke,
                complete,
                hit: r == Reply::Int(1),
            });
        } else if roll < 80 {
            let r = rec.record(Op::Del, key, "", 0, || match c.cmd(&["DEL", key]).unwrap() {
                Reply::Int(_) => Res::Ok,
                other => Res::Error(format!("{other:?}")),
            });
            assert_eq!(r, Res::Ok);
        } else if roll < w.flushall_below {
            let r = rec.record(Op::FlushAll, "", "", 0, || match c.cmd(&["FLUSHALL"]).unwrap() {
                Reply::Simple(_) => Res::Ok,
                other => Res::Error(format!("{other:?}")),
            });
            assert_eq!(r, Res::Ok);
        }
        // Otherwise: a quiet moment, holders release or let their leases end.
    }
    acts
}

fn monitor<S: Sample>(shared: Shared) -> Vec<S> {
    let Shared { w, port, stop, .. } = shared;
    let cmd = w.kind.info_cmd();
    let mut c = Raw::connect(port, Duration::from_secs(20)).expect("monitor connection");
    let mut samples = vec![];
    while !stop.stopped() {
        let invoke = since_epoch();
        let r = c.cmd(&[cmd, w.key]).expect(cmd);
        let complete = since_epoch();
        samples.push(S::parse(invoke, complete, &r));
        thread::sleep(Duration::from_millis(2));
    }
    samples
}

/// What one run saw: the chaos thread's acts, every waiter's attempts (with the times of
/// their history events), the monitor's samples, the history.
pub struct Outcome<S> {
    pub acts: Vec<ChaosAct>,
    pub attempts: Vec<Attempt>,
    pub samples: Vec<S>,
    pub events: Vec<Event>,
}

/// Runs the workload on `s`: the monitor and the waiters first, the chaos thread once most
/// waiters are blocked; until `w.run` has passed.
pub fn run<S: Sample>(s: &Server, w: Workload, seed: u64) -> Outcome<S> {
    let shared = Shared {
        w,
        port: s.port,
        rec: Recorder::with_base(chaos::epoch()),
        slots: Arc::new(Mutex::new(vec![Slot::default(); w.waiters])),
        stop: Stop::after(w.run),
        seed,
    };
    let started = Instant::now();

    let mon = {
        let shared = shared.clone();
        thread::spawn(move || monitor::<S>(shared))
    };
    let waiters: Vec<_> = (0..w.waiters)
        .map(|i| {
            let shared = shared.clone();
            thread::spawn(move || waiter(shared, i))
        })
        .collect();
    // Let the queue fill before the chaos starts.
    {
        let mut c = s.conn();
        wait_until(Duration::from_secs(20), "most waiters are blocked", || {
            info(&mut c, "clients").get("blocked_clients").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
                >= w.waiters / 2
        });
    }
    let chaos = {
        let shared = shared.clone();
        thread::spawn(move || chaos_thread(shared))
    };
    let acts = chaos.join().expect("chaos thread panicked");
    let mut attempts: Vec<Attempt> = vec![];
    for t in waiters {
        attempts.extend(t.join().expect("a waiter panicked"));
    }
    let samples = mon.join().expect("monitor panicked");
    eprintln!("ran for {:?}", started.elapsed());

    let events = shared.rec.events();
    // The history's own times for each attempt.
    let times: HashMap<&str, (Duration, Duration)> =
        events.iter().filter(|e| w.kind.is_acquire(e.op)).map(|e| (e.owner.as_str(), (e.invoke, e.complete))).collect();
    for a in &mut attempts {
        (a.invoke, a.complete) = times[a.owner.as_str()];
    }
    Outcome { acts, attempts, samples, events }
}

/// The run's counts, for its stats line and its checks that the chaos did what it claims.
pub struct Tally {
    pub attempts: usize,
    pub grants: usize,
    pub nils: usize,
    /// Waiters a `CLIENT UNBLOCK` said it unblocked.
    pub unblocked: usize,
    pub kills_blocked: usize,
    pub kills_not_blocked: usize,
    pub dels: usize,
    pub flushes: usize,
    pub samples: usize,
}

impl<S> Outcome<S> {
    /// Each `DEL`/`FLUSHALL` as (invoke, complete, what).
    pub fn removals(&self) -> Vec<(Duration, Duration, &'static str)> {
        self.events
            .iter()
            .filter_map(|e| match e.op {
                Op::Del => Some((e.invoke, e.complete, "DEL")),
                Op::FlushAll => Some((e.invoke, e.complete, "FLUSHALL")),
                _ => None,
            })
            .collect()
    }

    /// The history checker's report, when it finds anything.
    pub fn history_failures(&self) -> Option<String> {
        let violations = history::check(&self.events);
        (!violations.is_empty()).then(|| history::render(&self.events, &violations, 10))
    }

    pub fn tally(&self) -> Tally {
        let count = |what: &str, hit: bool| self.acts.iter().filter(|a| a.what == what && a.hit == hit).count();
        Tally {
            attempts: self.attempts.len(),
            grants: self.attempts.iter().filter(|a| matches!(a.res, Res::Granted(_))).count(),
            nils: self.attempts.iter().filter(|a| a.res == Res::Refused).count(),
            unblocked: unblocked(&self.acts).len(),
            kills_blocked: count("kill", true),
            kills_not_blocked: count("kill", false),
            dels: self.events.iter().filter(|e| e.op == Op::Del).count(),
            flushes: self.events.iter().filter(|e| e.op == Op::FlushAll).count(),
            samples: self.samples.len(),
        }
    }

    /// Panics with the failures (and the server's log) if there are any; `stats` is the
    /// run's stats line.
    pub fn assert_no_failures(&self, s: &Server, failures: &[String], stats: &str) {
        if !failures.is_empty() {
            s.dump_log();
            panic!("{} failure(s) ({stats}):\n{}", failures.len(), failures[..failures.len().min(20)].join("\n"));
        }
    }

    /// The chaos did what it claims: kills of blocked waiters, unblocks, `DEL`s, a
    /// `FLUSHALL`, and a waiter that timed out by itself.
    pub fn assert_chaos_happened(&self, stats: &str) {
        let t = self.tally();
        assert!(t.kills_blocked >= 5 && t.unblocked > 0 && t.dels >= 5 && t.flushes >= 1, "{stats}");
        let unblocked = unblocked(&self.acts);
        assert!(
            self.attempts.iter().any(|a| a.res == Res::Refused && !unblocked.contains(a.owner.as_str())),
            "no waiter timed out: {stats}"
        );
    }
}

/// The owners a `CLIENT UNBLOCK` said it unblocked.
fn unblocked(acts: &[ChaosAct]) -> HashSet<&str> {
    acts.iter().filter(|a| a.what == "unblock" && a.hit).map(|a| a.owner.as_str()).collect()
}

/// Nothing stays blocked: `blocked_clients` goes back to 0.
pub fn await_no_blocked_clients(s: &Server) {
    let mut c = s.conn();
    wait_until(Duration::from_secs(15), "blocked_clients is back to 0", || {
        info(&mut c, "clients").get("blocked_clients").map(String::as_str) == Some("0")
    });
}

/// The rules every kind is judged by; one line per failure. `removals`: each
/// `DEL`/`FLUSHALL` as (invoke, complete, what), named beside an error answer.
pub fn judge<S: Sample>(
    kind: Kind,
    attempts: &[Attempt],
    acts: &[ChaosAct],
    samples: &[S],
    removals: &[(Duration, Duration, &str)],
) -> Vec<String> {
    let ms = Duration::from_millis;
    let (info_cmd, holder) = (kind.info_cmd(), kind.holder_word());
    let mut failures: Vec<String> = vec![];

    // 1. Nothing hung: every answer came within the timeout plus slack.
    for a in attempts {
        let took = a.complete.saturating_sub(a.invoke);
        if a.hung || took > a.wait + SLACK {
            failures.push(format!(
                "waiter {} ({}) hung: WAIT {:?}, answered {:?} after {took:?}",
                a.owner,
                kind.client(a),
                a.wait,
                a.res
            ));
        }
    }

    // 2. A nil came after the full timeout, or from a CLIENT UNBLOCK that unblocked it.
    let unblocked = unblocked(acts);
    for a in attempts {
        if a.res == Res::Refused && !unblocked.contains(a.owner.as_str()) {
            let took = a.complete.saturating_sub(a.invoke);
            if took + Duration::from_millis(2) < a.wait {
                failures.push(format!("waiter {} answered nil after {took:?}, before its WAIT {:?}", a.owner, a.wait));
            }
        }
    }
    for owner in &unblocked {
        match attempts.iter().find(|a| a.owner == *owner) {
            Some(a) if a.res == Res::Refused => {}
            Some(a) => {
                failures.push(format!("waiter {owner} was unblocked (CLIENT UNBLOCK said 1) yet answered {:?}", a.res))
            }
            None => failures.push(format!("unblocked waiter {owner} has no recorded acquire")),
        }
    }

    // 3. A waiter killed while blocked was never granted: its owner never holds.
    let killed_blocked: HashSet<&str> =
        acts.iter().filter(|a| a.what == "kill" && a.hit).map(|a| a.owner.as_str()).collect();
    for smp in samples {
        let (invoke, complete) = smp.window();
        for o in smp.holders() {
            if killed_blocked.contains(o) {
                let kill = acts.iter().find(|a| a.what == "kill" && a.owner == o).unwrap();
                failures.push(format!(
                    "{info_cmd} at [{invoke:?}, {complete:?}] shows {holder} {o}, whose client {} was killed while blocked at [{:?}, {:?}]",
                    kill.client_id, kill.invoke, kill.complete
                ));
            }
        }
    }
    // A client killed while not blocked may have held: it keeps its hold only until its
    // lease ends (nobody can release it), and is never granted anything after.
    for kill in acts.iter().filter(|a| a.what == "kill" && !a.hit) {
        let Some(a) = attempts.iter().find(|a| a.owner == kill.owner) else { continue };
        let lease_end = a.complete + Duration::from_millis(a.ttl + 50);
        for smp in samples.iter().filter(|s| s.holders().contains(&a.owner.as_str())) {
            let invoke = smp.window().0;
            if invoke > lease_end.max(kill.complete) {
                failures.push(format!(
                    "{info_cmd} at {invoke:?} shows {holder} {}, killed at {:?}, past its lease (granted by {:?}, ttl {} ms)",
                    a.owner, kill.complete, a.complete, a.ttl
                ));
            }
        }
    }
    for a in attempts {
        if killed_blocked.contains(a.owner.as_str()) && matches!(a.res, Res::Granted(_)) {
            failures.push(format!("waiter {} was killed while blocked yet got a token: {:?}", a.owner, a.res));
        }
    }
    // Only a kill loses an answer: every other waiter got a token or nil.
    let killed_ids: HashSet<i64> = acts.iter().filter(|a| a.what == "kill").map(|a| a.client_id).collect();
    for a in attempts {
        if a.res == Res::Unknown && !a.hung && !killed_ids.contains(&a.client_id) {
            failures
                .push(format!("waiter {} (client {}) lost its connection without being killed", a.owner, a.client_id));
        }
        if let Res::Error(e) = &a.res {
            // With what removed the key meanwhile, and who else was acted on, for a replay.
            let near = |from: Duration, to: Duration| to + ms(20) >= a.invoke && from <= a.complete;
            let context: Vec<String> = acts
                .iter()
                .filter(|c| near(c.invoke, c.complete))
                .map(|c| format!("{} {} at [{:?}, {:?}]", c.what, c.owner, c.invoke, c.complete))
                .chain(removals.iter().filter(|r| near(r.0, r.1)).map(|r| format!("{} at [{:?}, {:?}]", r.2, r.0, r.1)))
                .collect();
            let count = match kind {
                Kind::Lock => String::new(),
                Kind::Sem { .. } => format!("COUNT {}, ", a.permits),
            };
            failures.push(format!(
                "waiter {} ({count}WAIT {:?}, sent at {:?}) answered an error after {:?}: {e}; meanwhile: {}",
                a.owner,
                a.wait,
                a.invoke,
                a.complete.saturating_sub(a.invoke),
                if context.is_empty() { "nothing".to_string() } else { context.join(", ") }
            ));
        }
    }

    // 4. Waiters on a free key are served at once: never seen with no holder and waiters
    //    for long (consecutive samples over 250 ms).
    let mut since: Option<Duration> = None;
    for smp in samples {
        let (invoke, complete) = smp.window();
        if smp.holders().is_empty() && smp.waiters() > 0 {
            let t0 = *since.get_or_insert(invoke);
            if complete.saturating_sub(t0) > Duration::from_millis(250) {
                failures.push(format!(
                    "the {} stayed free with {} waiters from {t0:?} to {complete:?}",
                    kind.noun(),
                    smp.waiters()
                ));
                since = None;
            }
        } else {
            since = None;
        }
    }
    failures
}
