//! Chaos workload 3: blocked clients. 100 waiters block on one key with
//! `LOCK.ACQUIRE ... WAIT <a few seconds>` (each acquire under a fresh owner name), over
//! and over. Holders release after a short section or let their lease end, while a chaos
//! thread `CLIENT KILL`s waiters (and sometimes holders), `CLIENT UNBLOCK`s waiters, `DEL`s
//! the key and runs `FLUSHALL`; a monitor samples `LOCK.INFO` all along.
//!
//! Then: every live waiter was granted or answered nil within its timeout plus slack (a
//! nil only after the full timeout, or after a `CLIENT UNBLOCK` that said it unblocked
//! it); a waiter killed while blocked was never granted (its owner never shows in
//! `LOCK.INFO`); a free lock with waiters never stays ungranted; `blocked_clients` ends at
//! 0; the history checker finds nothing.
//!
//! Short by default (`make test`); `CHAOS_FULL=1` runs it for a minute.

#[path = "support/history.rs"]
mod history;
mod support;

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::chaos::{self, scale, since_epoch, Stop};
use support::*;
use history::{Op, Recorder, Res};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEY: &str = "blocked-chaos";
const WAITERS: usize = 100;
/// How late past its timeout a waiter's answer may come on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(2_500);

/// What the chaos thread may know of each waiter: its connection id and the owner of the
/// acquire it is sending or blocked in (set before the acquire is sent).
#[derive(Clone, Default)]
struct Slot {
    id: i64,
    owner: String,
}

/// One acquire as its waiter saw it (beyond the history event).
#[derive(Debug, Clone)]
struct Attempt {
    owner: String,
    client_id: i64,
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
    /// The waiter's owner at the time (kill/unblock).
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
    owner: Option<String>,
    waiters: i64,
}

fn waiter(
    i: usize,
    port: u16,
    rec: Recorder,
    slots: Arc<Mutex<Vec<Slot>>>,
    stop: Stop,
    seed: u64,
) -> Vec<Attempt> {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 7) * 0x2545_f491);
    let mut attempts = vec![];
    let mut generation = 0;
    'connections: while !stop.stopped() {
        generation += 1;
        let mut raw = match Raw::connect(port, Duration::from_secs(3) + SLACK) {
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
            let wait = Duration::from_millis(rng.gen_range(300..3_000));
            let ttl: u64 = rng.gen_range(20..250);
            slots.lock().unwrap()[i] = Slot { id, owner: owner.clone() };
            let wait_s = wait.as_millis().to_string();
            let ttl_s = ttl.to_string();
            let mut hung = false;
            let res = rec.record(Op::Acquire, KEY, &owner, ttl, || {
                match raw.cmd(&["LOCK.ACQUIRE", KEY, &owner, &ttl_s, "WAIT", &wait_s]) {
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
                        let r = rec.record(Op::Release, KEY, &owner, 0, || match raw.cmd(&["LOCK.RELEASE", KEY, &owner]) {
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
        let slot = registry[rng.gen_range(0..WAITERS)].clone();
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
        } else if roll < 86 {
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

fn monitor(port: u16, stop: Stop) -> Vec<Sample> {
    let mut c = Raw::connect(port, Duration::from_secs(20)).expect("monitor connection");
    let mut samples = vec![];
    while !stop.stopped() {
        let invoke = since_epoch();
        let r = c.cmd(&["LOCK.INFO", KEY]).expect("LOCK.INFO");
        let complete = since_epoch();
        let (owner, waiters) = match &r {
            Reply::Nil => (None, 0),
            Reply::Array(_) => (
                match r.field("owner") {
                    Some(Reply::Bulk(o)) => Some(String::from_utf8_lossy(&o).into_owned()),
                    _ => None,
                },
                r.field("waiters").and_then(|w| w.int()).expect("LOCK.INFO waiters"),
            ),
            other => panic!("LOCK.INFO answered {other:?}"),
        };
        samples.push(Sample { invoke, complete, owner, waiters });
        thread::sleep(Duration::from_millis(2));
    }
    samples
}

#[test]
fn blocked_client_chaos_100_waiters_kills_unblocks_del_flushall() {
    let seed = support::seed::seed("blocked_client_chaos_100_waiters_kills_unblocks_del_flushall");
    let mut s = Server::new();
    let rec = Recorder::with_base(chaos::epoch());
    let slots = Arc::new(Mutex::new(vec![Slot::default(); WAITERS]));
    let run = Duration::from_secs(scale(5, 60));
    let stop = Stop::after(run);
    let started = std::time::Instant::now();

    let mon = {
        let stop = stop.clone();
        let port = s.port;
        thread::spawn(move || monitor(port, stop))
    };
    let waiters: Vec<_> = (0..WAITERS)
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
            info(&mut c, "clients").get("blocked_clients").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0) >= WAITERS / 2
        });
    }
    let chaos = {
        let (rec, slots, stop) = (rec.clone(), slots.clone(), stop.clone());
        let port = s.port;
        thread::spawn(move || chaos_thread(port, rec, slots, stop, seed))
    };
    let acts = chaos.join().expect("chaos thread panicked");
    let mut attempts: Vec<Attempt> = vec![];
    for w in waiters {
        attempts.extend(w.join().expect("a waiter panicked"));
    }
    let samples = mon.join().expect("monitor panicked");
    eprintln!("ran for {:?}", started.elapsed());

    let events = rec.events();
    // The history's own invoke times for each attempt.
    let times: HashMap<&str, (Duration, Duration)> =
        events.iter().filter(|e| e.op == Op::Acquire).map(|e| (e.owner.as_str(), (e.invoke, e.complete))).collect();
    for a in &mut attempts {
        (a.invoke, a.complete) = times[a.owner.as_str()];
    }
    let mut failures: Vec<String> = vec![];

    // 1. Nothing hung: every answer came within the timeout plus slack.
    for a in &attempts {
        let took = a.complete.saturating_sub(a.invoke);
        if a.hung || took > a.wait + SLACK {
            failures.push(format!("waiter {} (client {}) hung: WAIT {:?}, answered {:?} after {took:?}", a.owner, a.client_id, a.wait, a.res));
        }
    }

    // 2. A nil came after the full timeout, or from a CLIENT UNBLOCK that unblocked it.
    let unblocked: HashSet<&str> = acts.iter().filter(|a| a.what == "unblock" && a.hit).map(|a| a.owner.as_str()).collect();
    for a in &attempts {
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

    // 3. A waiter killed while blocked was never granted: its owner never held the lock.
    let killed_blocked: HashSet<&str> = acts.iter().filter(|a| a.what == "kill" && a.hit).map(|a| a.owner.as_str()).collect();
    for smp in &samples {
        if let Some(o) = &smp.owner {
            if killed_blocked.contains(o.as_str()) {
                let kill = acts.iter().find(|a| a.what == "kill" && a.owner == *o).unwrap();
                failures.push(format!(
                    "LOCK.INFO at [{:?}, {:?}] shows owner {o}, whose client {} was killed while blocked at [{:?}, {:?}]",
                    smp.invoke, smp.complete, kill.client_id, kill.invoke, kill.complete
                ));
            }
        }
    }
    // A client killed while not blocked may have held the lock: it keeps it only until
    // its lease ends (nobody can release it), and is never granted anything after.
    for kill in acts.iter().filter(|a| a.what == "kill" && !a.hit) {
        let Some(a) = attempts.iter().find(|a| a.owner == kill.owner) else { continue };
        let lease_end = a.complete + Duration::from_millis(a.ttl + 50);
        for smp in samples.iter().filter(|s| s.owner.as_deref() == Some(a.owner.as_str())) {
            if smp.invoke > lease_end.max(kill.complete) {
                failures.push(format!(
                    "LOCK.INFO at {:?} shows owner {}, killed at {:?}, past its lease (granted by {:?}, ttl {} ms)",
                    smp.invoke, a.owner, kill.complete, a.complete, a.ttl
                ));
            }
        }
    }
    // Only a kill loses an answer: every other waiter got a token or nil.
    let killed_ids: HashSet<i64> = acts.iter().filter(|a| a.what == "kill").map(|a| a.client_id).collect();
    for a in &attempts {
        if a.res == Res::Unknown && !a.hung && !killed_ids.contains(&a.client_id) {
            failures.push(format!("waiter {} (client {}) lost its connection without being killed", a.owner, a.client_id));
        }
        if let Res::Error(e) = &a.res {
            failures.push(format!("waiter {} answered an error: {e}", a.owner));
        }
    }
    for a in &attempts {
        if killed_blocked.contains(a.owner.as_str()) && matches!(a.res, Res::Granted(_)) {
            failures.push(format!("waiter {} was killed while blocked yet got a token: {:?}", a.owner, a.res));
        }
    }

    // 4. A free lock with waiters is granted at once: never seen free-with-waiters for
    //    long (consecutive samples over 250 ms).
    let mut since: Option<Duration> = None;
    for smp in &samples {
        if smp.owner.is_none() && smp.waiters > 0 {
            let t0 = *since.get_or_insert(smp.invoke);
            if smp.complete.saturating_sub(t0) > Duration::from_millis(250) {
                failures.push(format!("the lock stayed free with {} waiters from {t0:?} to {:?}", smp.waiters, smp.complete));
                since = None;
            }
        } else {
            since = None;
        }
    }

    // 5. Nothing stays blocked, nobody waits.
    let mut c = s.conn();
    wait_until(Duration::from_secs(15), "blocked_clients is back to 0", || {
        info(&mut c, "clients").get("blocked_clients").map(String::as_str) == Some("0")
    });
    if let Some(i) = lock_info(&mut c, KEY) {
        assert_eq!(i.waiters, 0, "waiters left on the lock: {i:?}");
    }

    // 6. The history is clean.
    let violations = history::check(&events);
    if !violations.is_empty() {
        failures.push(history::render(&events, &violations, 10));
    }

    let count = |what: &str, hit: bool| acts.iter().filter(|a| a.what == what && a.hit == hit).count();
    let grants = attempts.iter().filter(|a| matches!(a.res, Res::Granted(_))).count();
    let nils = attempts.iter().filter(|a| a.res == Res::Refused).count();
    let dels = events.iter().filter(|e| e.op == Op::Del).count();
    let flushes = events.iter().filter(|e| e.op == Op::FlushAll).count();
    let stats = format!(
        "{} acquires: {grants} granted, {nils} nil ({} unblocked); kills: {} blocked, {} not blocked; {dels} DEL, {flushes} FLUSHALL; {} LOCK.INFO samples",
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
    assert!(grants >= 20 && nils >= 20, "{stats}");
    assert!(count("kill", true) >= 5 && !unblocked.is_empty() && dels >= 5 && flushes >= 1, "{stats}");
    assert!(
        attempts.iter().any(|a| a.res == Res::Refused && !unblocked.contains(a.owner.as_str())),
        "no waiter timed out: {stats}"
    );
    s.assert_alive();
}
