//! Chaos workload 3, for semaphores: blocked clients with mixed COUNTs. Waiters block on
//! one semaphore of 3 permits with `SEM.ACQUIRE key owner 3 ttl COUNT 1|2|3 WAIT <ms>`
//! (each acquire under a fresh owner name), over and over. Holders release after a short
//! section or let their lease end, while a chaos thread `CLIENT KILL`s waiters (and
//! sometimes holders), `CLIENT UNBLOCK`s waiters, `DEL`s the key and runs `FLUSHALL`; a
//! monitor samples `SEM.INFO` all along.
//!
//! Then: every live waiter was granted or answered nil within its timeout plus slack (a
//! nil only after the full timeout, or after a `CLIENT UNBLOCK` that said it unblocked
//! it); a waiter killed while blocked was never granted (its owner never shows among the
//! holders); no `SEM.INFO` shows more permits held than the limit, or `available` other
//! than the limit less the permits held; a semaphore with waiters and no holder never
//! stays so; `blocked_clients` ends at 0 and the semaphore ends free and gone; the history
//! checker (which counts the permits surely held at once) finds nothing.
//!
//! Short by default (`make test`, a few seconds); `CHAOS_FULL=1` runs it for a minute.

#[path = "support/history.rs"]
mod history;
mod support;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use history::{Op, Recorder, Res};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::chaos::{self, scale, since_epoch, Stop};
use support::*;

const KEY: &str = "sem-blocked-chaos";
const LIMIT: u64 = 3;
/// How late past its timeout a waiter's answer may come on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(2_500);

fn waiters() -> usize {
    scale(60, 100)
}

/// What the chaos thread may know of each waiter: its connection id and the owner of the
/// acquire it is sending or blocked in (set before the acquire is sent).
#[derive(Clone, Default)]
struct Slot {
    id: i64,
    owner: String,
}

/// One acquire as its waiter saw it.
#[derive(Debug, Clone)]
struct Attempt {
    owner: String,
    client_id: i64,
    permits: u64,
    wait: Duration,
    ttl: u64,
    invoke: Duration,
    complete: Duration,
    res: Res,
    /// The socket read timed out: the server never answered.
    hung: bool,
}

#[derive(Debug, Clone)]
struct ChaosAct {
    what: &'static str,
    client_id: i64,
    owner: String,
    invoke: Duration,
    complete: Duration,
    /// Kill: the target was blocked when killed (atomically, in one MULTI). Unblock: the
    /// server said it unblocked it.
    hit: bool,
}

#[derive(Debug, Clone)]
struct Sample {
    invoke: Duration,
    complete: Duration,
    limit: i64,
    available: i64,
    /// (owner, permits) of each live holder.
    holders: Vec<(String, i64)>,
    waiters: i64,
}

impl Sample {
    fn held(&self) -> i64 {
        self.holders.iter().map(|h| h.1).sum()
    }
}

fn waiter(i: usize, port: u16, rec: Recorder, slots: Arc<Mutex<Vec<Slot>>>, stop: Stop, seed: u64) -> Vec<Attempt> {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 7) * 0x2545_f491);
    let mut attempts = vec![];
    let mut generation = 0;
    'connections: while !stop.stopped() {
        generation += 1;
        let mut raw = match Raw::connect(port, Duration::from_secs(2) + SLACK) {
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
            let permits: u64 = match rng.gen_range(0..10) {
                0..=4 => 1,
                5..=7 => 2,
                _ => 3,
            };
            let wait = Duration::from_millis(rng.gen_range(200..2_000));
            let ttl: u64 = rng.gen_range(20..250);
            slots.lock().unwrap()[i] = Slot { id, owner: owner.clone() };
            let (limit_s, permits_s, ttl_s) = (LIMIT.to_string(), permits.to_string(), ttl.to_string());
            let wait_s = wait.as_millis().to_string();
            let mut hung = false;
            let res = rec.record(Op::sem(LIMIT, permits), KEY, &owner, ttl, || {
                match raw.cmd(&["SEM.ACQUIRE", KEY, &owner, &limit_s, &ttl_s, "COUNT", &permits_s, "WAIT", &wait_s]) {
                    Ok(Reply::Int(t)) => Res::Granted(t),
                    Ok(Reply::Nil) => Res::Refused,
                    Ok(Reply::Err(e)) => Res::Error(e),
                    Ok(other) => Res::Error(format!("unexpected {other:?}")),
                    Err(e) => {
                        hung = matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
                        Res::Unknown
                    }
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
                        let r = rec.record(Op::SemRelease, KEY, &owner, 0, || match raw.cmd(&["SEM.RELEASE", KEY, &owner]) {
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

fn chaos_thread(port: u16, rec: Recorder, slots: Arc<Mutex<Vec<Slot>>>, stop: Stop, seed: u64) -> Vec<ChaosAct> {
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
                acts.push(ChaosAct { what: "kill", client_id: slot.id, owner: slot.owner, invoke, complete, hit: blocked });
            }
        } else if roll < 60 {
            if slot.id == 0 {
                continue;
            }
            let invoke = since_epoch();
            let r = c.cmd(&["CLIENT", "UNBLOCK", &slot.id.to_string()]).unwrap();
            let complete = since_epoch();
            acts.push(ChaosAct { what: "unblock", client_id: slot.id, owner: slot.owner, invoke, complete, hit: r == Reply::Int(1) });
        } else if roll < 80 {
            let r = rec.record(Op::Del, KEY, "", 0, || match c.cmd(&["DEL", KEY]).unwrap() {
                Reply::Int(_) => Res::Ok,
                other => Res::Error(format!("{other:?}")),
            });
            assert_eq!(r, Res::Ok);
        } else if roll < 84 {
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

/// `SEM.INFO`: nil, or (limit, available, holders, waiters).
fn parse_info(r: &Reply) -> Result<Option<(i64, i64, Vec<(String, i64)>, i64)>, String> {
    if *r == Reply::Nil {
        return Ok(None);
    }
    let f = r.fields()?;
    let int = |name: &str| f.get(name).and_then(Reply::int).ok_or_else(|| format!("no integer {name} in {}", r.brief()));
    let holders = match f.get("holders") {
        Some(Reply::Array(hs)) => hs
            .iter()
            .map(|h| {
                let hf = h.fields()?;
                let owner = hf.get("owner").and_then(Reply::bytes).ok_or_else(|| format!("holder without owner: {}", h.brief()))?;
                let permits = hf.get("permits").and_then(Reply::int).ok_or_else(|| format!("holder without permits: {}", h.brief()))?;
                Ok((String::from_utf8_lossy(&owner).into_owned(), permits))
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => return Err(format!("no holders array in {}", r.brief())),
    };
    Ok(Some((int("limit")?, int("available")?, holders, int("waiters")?)))
}

fn monitor(port: u16, stop: Stop) -> Vec<Sample> {
    let mut c = Raw::connect(port, Duration::from_secs(20)).expect("monitor connection");
    let mut samples = vec![];
    while !stop.stopped() {
        let invoke = since_epoch();
        let r = c.cmd(&["SEM.INFO", KEY]).expect("SEM.INFO");
        let complete = since_epoch();
        match parse_info(&r).unwrap_or_else(|e| panic!("SEM.INFO: {e}")) {
            None => samples.push(Sample { invoke, complete, limit: 0, available: 0, holders: vec![], waiters: 0 }),
            Some((limit, available, holders, waiters)) => {
                samples.push(Sample { invoke, complete, limit, available, holders, waiters })
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    samples
}

#[test]
fn blocked_client_chaos_on_a_semaphore_mixed_counts_kills_unblocks_del() {
    let seed = support::seed::seed("blocked_client_chaos_on_a_semaphore_mixed_counts_kills_unblocks_del");
    let mut s = Server::new();
    let rec = Recorder::with_base(chaos::epoch());
    let n = waiters();
    let slots = Arc::new(Mutex::new(vec![Slot::default(); n]));
    let run = Duration::from_secs(scale(3, 60));
    let stop = Stop::after(run);
    let started = std::time::Instant::now();

    let mon = {
        let stop = stop.clone();
        let port = s.port;
        thread::spawn(move || monitor(port, stop))
    };
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (rec, slots, stop) = (rec.clone(), slots.clone(), stop.clone());
            let port = s.port;
            thread::spawn(move || waiter(i, port, rec, slots, stop, seed))
        })
        .collect();
    // Let the queue fill before the chaos starts.
    {
        let mut c = s.conn();
        wait_until(Duration::from_secs(20), "most waiters are blocked", || {
            info(&mut c, "clients").get("blocked_clients").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0) >= n / 2
        });
    }
    let chaos = {
        let (rec, slots, stop) = (rec.clone(), slots.clone(), stop.clone());
        let port = s.port;
        thread::spawn(move || chaos_thread(port, rec, slots, stop, seed))
    };
    let acts = chaos.join().expect("chaos thread panicked");
    let mut attempts: Vec<Attempt> = vec![];
    for w in threads {
        attempts.extend(w.join().expect("a waiter panicked"));
    }
    let samples = mon.join().expect("monitor panicked");
    eprintln!("ran for {:?}", started.elapsed());

    let events = rec.events();
    let times: HashMap<&str, (Duration, Duration)> = events
        .iter()
        .filter(|e| matches!(e.op, Op::SemAcquire { .. }))
        .map(|e| (e.owner.as_str(), (e.invoke, e.complete)))
        .collect();
    for a in &mut attempts {
        (a.invoke, a.complete) = times[a.owner.as_str()];
    }
    let removals: Vec<(Duration, Duration, &str)> = events
        .iter()
        .filter_map(|e| match e.op {
            Op::Del => Some((e.invoke, e.complete, "DEL")),
            Op::FlushAll => Some((e.invoke, e.complete, "FLUSHALL")),
            _ => None,
        })
        .collect();
    let mut failures = judge(&attempts, &acts, &samples, &removals);

    // Nothing stays blocked; every lease ends, nobody waits, nothing is left held.
    let mut c = s.conn();
    wait_until(Duration::from_secs(15), "blocked_clients is back to 0", || {
        info(&mut c, "clients").get("blocked_clients").map(String::as_str) == Some("0")
    });
    wait_until(Duration::from_secs(5), "the semaphore is free and gone once every lease ended", || {
        ok(&mut c, &["SEM.INFO", KEY]) == redis::Value::Nil && !exists(&mut c, KEY)
    });

    // The history is clean: never more permits surely held than the limit, tokens rise.
    let violations = history::check(&events);
    if !violations.is_empty() {
        failures.push(history::render(&events, &violations, 10));
    }

    let unblocked: HashSet<&str> = acts.iter().filter(|a| a.what == "unblock" && a.hit).map(|a| a.owner.as_str()).collect();
    let count = |what: &str, hit: bool| acts.iter().filter(|a| a.what == what && a.hit == hit).count();
    let grants = attempts.iter().filter(|a| matches!(a.res, Res::Granted(_))).count();
    let big_grants = attempts.iter().filter(|a| a.permits > 1 && matches!(a.res, Res::Granted(_))).count();
    let nils = attempts.iter().filter(|a| a.res == Res::Refused).count();
    let dels = events.iter().filter(|e| e.op == Op::Del).count();
    let flushes = events.iter().filter(|e| e.op == Op::FlushAll).count();
    let shared = samples.iter().filter(|s| s.holders.len() >= 2).count();
    let full = samples.iter().filter(|s| s.held() == LIMIT as i64 && s.waiters > 0).count();
    let stats = format!(
        "{} acquires: {grants} granted ({big_grants} of 2 or 3 permits), {nils} nil ({} unblocked); kills: {} blocked, {} not blocked; \
         {dels} DEL, {flushes} FLUSHALL; {} SEM.INFO samples, {shared} with several holders, {full} full with waiters",
        attempts.len(),
        unblocked.len(),
        count("kill", true),
        count("kill", false),
        samples.len()
    );
    eprintln!("{stats}");
    if !failures.is_empty() {
        s.dump_log();
        panic!("{} failure(s) ({stats}):\n{}", failures.len(), failures[..failures.len().min(20)].join("\n"));
    }
    // The chaos did what it claims.
    assert!(grants >= 20 && big_grants >= 5 && nils >= 5 && shared >= 5 && full >= 5, "{stats}");
    assert!(count("kill", true) >= 5 && !unblocked.is_empty() && dels >= 5 && flushes >= 1, "{stats}");
    assert!(
        attempts.iter().any(|a| a.res == Res::Refused && !unblocked.contains(a.owner.as_str())),
        "no waiter timed out: {stats}"
    );
    s.assert_alive();
}

/// The per-waiter and per-sample rules; one line per failure.
/// `removals`: each `DEL`/`FLUSHALL` as (invoke, complete, what).
fn judge(attempts: &[Attempt], acts: &[ChaosAct], samples: &[Sample], removals: &[(Duration, Duration, &str)]) -> Vec<String> {
    let ms = Duration::from_millis;
    let mut failures: Vec<String> = vec![];

    // 1. Nothing hung: every answer came within the timeout plus slack.
    for a in attempts {
        let took = a.complete.saturating_sub(a.invoke);
        if a.hung || took > a.wait + SLACK {
            failures.push(format!(
                "waiter {} (client {}, COUNT {}) hung: WAIT {:?}, answered {:?} after {took:?}",
                a.owner, a.client_id, a.permits, a.wait, a.res
            ));
        }
    }

    // 2. A nil came after the full timeout, or from a CLIENT UNBLOCK that unblocked it.
    let unblocked: HashSet<&str> = acts.iter().filter(|a| a.what == "unblock" && a.hit).map(|a| a.owner.as_str()).collect();
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
            Some(a) => failures.push(format!("waiter {owner} was unblocked (CLIENT UNBLOCK said 1) yet answered {:?}", a.res)),
            None => failures.push(format!("unblocked waiter {owner} has no recorded acquire")),
        }
    }

    // 3. A waiter killed while blocked was never granted: its owner never holds.
    let killed_blocked: HashSet<&str> = acts.iter().filter(|a| a.what == "kill" && a.hit).map(|a| a.owner.as_str()).collect();
    for smp in samples {
        for (o, _) in &smp.holders {
            if killed_blocked.contains(o.as_str()) {
                let kill = acts.iter().find(|a| a.what == "kill" && a.owner == *o).unwrap();
                failures.push(format!(
                    "SEM.INFO at [{:?}, {:?}] shows holder {o}, whose client {} was killed while blocked at [{:?}, {:?}]",
                    smp.invoke, smp.complete, kill.client_id, kill.invoke, kill.complete
                ));
            }
        }
    }
    // A client killed while not blocked may have held permits: it keeps them only until
    // its lease ends (nobody can release them).
    for kill in acts.iter().filter(|a| a.what == "kill" && !a.hit) {
        let Some(a) = attempts.iter().find(|a| a.owner == kill.owner) else { continue };
        let lease_end = a.complete + Duration::from_millis(a.ttl + 50);
        for smp in samples.iter().filter(|s| s.holders.iter().any(|h| h.0 == a.owner)) {
            if smp.invoke > lease_end.max(kill.complete) {
                failures.push(format!(
                    "SEM.INFO at {:?} shows holder {}, killed at {:?}, past its lease (granted by {:?}, ttl {} ms)",
                    smp.invoke, a.owner, kill.complete, a.complete, a.ttl
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
            failures.push(format!("waiter {} (client {}) lost its connection without being killed", a.owner, a.client_id));
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
            failures.push(format!(
                "waiter {} (COUNT {}, WAIT {:?}, sent at {:?}) answered an error after {:?}: {e}; meanwhile: {}",
                a.owner,
                a.permits,
                a.wait,
                a.invoke,
                a.complete.saturating_sub(a.invoke),
                if context.is_empty() { "nothing".to_string() } else { context.join(", ") }
            ));
        }
    }

    // 4. Every sample: the limit is the one stated, the permits held fit in it, and
    //    `available` is what the holders leave; each holder holds 1 to 3 permits.
    for smp in samples.iter().filter(|s| s.limit != 0 || s.waiters != 0 || !s.holders.is_empty()) {
        let held = smp.held();
        if smp.limit != LIMIT as i64 || held > smp.limit || smp.available != smp.limit - held {
            failures.push(format!(
                "SEM.INFO at [{:?}, {:?}]: limit {}, available {}, holders {:?} ({held} permits held), waiters {}",
                smp.invoke, smp.complete, smp.limit, smp.available, smp.holders, smp.waiters
            ));
        }
        if smp.holders.iter().any(|h| !(1..=LIMIT as i64).contains(&h.1)) {
            failures.push(format!("SEM.INFO at {:?}: a holder with a COUNT out of range: {:?}", smp.invoke, smp.holders));
        }
    }

    // 5. Waiters with every permit free are served at once: never seen with no holder and
    //    waiters for long (consecutive samples over 250 ms). (Any one waiter's COUNT fits.)
    let mut since: Option<Duration> = None;
    for smp in samples {
        if smp.holders.is_empty() && smp.waiters > 0 {
            let t0 = *since.get_or_insert(smp.invoke);
            if smp.complete.saturating_sub(t0) > Duration::from_millis(250) {
                failures.push(format!("the semaphore stayed free with {} waiters from {t0:?} to {:?}", smp.waiters, smp.complete));
                since = None;
            }
        } else {
            since = None;
        }
    }
    failures
}

/// The rules above have teeth: each one flags a planted fault in made-up observations.
#[test]
fn the_blocked_chaos_rules_catch_planted_faults() {
    let ms = Duration::from_millis;
    let attempt = |owner: &str, wait: u64, invoke: u64, complete: u64, res: Res| Attempt {
        owner: owner.into(),
        client_id: 7,
        permits: 2,
        wait: ms(wait),
        ttl: 100,
        invoke: ms(invoke),
        complete: ms(complete),
        res,
        hung: false,
    };
    let sample = |at: u64, available: i64, holders: &[(&str, i64)], waiters: i64| Sample {
        invoke: ms(at),
        complete: ms(at + 1),
        limit: LIMIT as i64,
        available,
        holders: holders.iter().map(|(o, p)| (o.to_string(), *p)).collect(),
        waiters,
    };
    let kill = |owner: &str, hit: bool| ChaosAct { what: "kill", client_id: 9, owner: owner.into(), invoke: ms(50), complete: ms(51), hit };
    let unblock = |owner: &str| ChaosAct { what: "unblock", client_id: 7, owner: owner.into(), invoke: ms(50), complete: ms(51), hit: true };
    let ok_attempts = [attempt("a", 500, 0, 100, Res::Granted(1)), attempt("b", 300, 0, 301, Res::Refused)];
    let ok_samples = [sample(10, 1, &[("a", 2)], 1), sample(20, 3, &[], 0), sample(30, 0, &[("a", 2), ("c", 1)], 2)];
    let clean = judge(&ok_attempts, &[kill("x", true), unblock("b")], &ok_samples, &[]);
    assert!(clean.is_empty(), "{clean:?}");

    let one = |attempts: &[Attempt], acts: &[ChaosAct], samples: &[Sample], what: &str| {
        let f = judge(attempts, acts, samples, &[]);
        assert_eq!(f.len(), 1, "{what}: expected one failure, got {f:?}");
    };
    // A waiter answered long after its WAIT.
    one(&[attempt("a", 500, 0, 500 + 2_600, Res::Refused)], &[], &ok_samples, "hung");
    // A nil before the timeout, not unblocked.
    one(&[attempt("b", 300, 0, 100, Res::Refused)], &[], &ok_samples, "early nil");
    // Unblocked yet granted.
    one(&[attempt("a", 500, 0, 100, Res::Granted(1))], &[unblock("a")], &ok_samples, "unblocked and granted");
    // Killed while blocked, yet a holder.
    one(&ok_attempts[1..], &[kill("w", true)], &[sample(60, 2, &[("w", 1)], 0)], "dead holder");
    // Killed while holding, and still holding long past its lease.
    one(&[attempt("a", 500, 0, 10, Res::Granted(1))], &[kill("a", false)], &[sample(400, 1, &[("a", 2)], 0)], "kept past lease");
    // A connection lost with no kill; an error answer.
    one(&[attempt("a", 500, 0, 10, Res::Unknown)], &[], &ok_samples, "lost connection");
    one(&[attempt("a", 500, 0, 10, Res::Error("ERR limit mismatch: semaphore has limit 0".into()))], &[], &ok_samples, "error");
    // More permits held than the limit; available not what the holders leave.
    one(&ok_attempts, &[], &[sample(10, 0, &[("a", 2), ("c", 2)], 0)], "over the limit");
    one(&ok_attempts, &[], &[sample(10, 2, &[("a", 2)], 0)], "available");
    // Free with waiters for 300 ms.
    let stuck: Vec<Sample> = (0..30).map(|i| sample(100 + 10 * i, 3, &[], 2)).collect();
    one(&ok_attempts, &[], &stuck, "free with waiters");
}
