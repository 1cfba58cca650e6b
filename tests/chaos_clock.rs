//! Chaos: the server's wall clock steps forward and back under load (libfaketime).
//!
//! redis-server runs with `LD_PRELOAD=libfaketime.so.1`, reading its offset from a file
//! the test rewrites (`+600s`, `-600s`, ...), with `FAKETIME_NO_CACHE=1` so a step takes
//! effect at once and `FAKETIME_DONT_FAKE_MONOTONIC=1` so only the wall clock steps (NTP
//! stepping the clock, a VM restored from a snapshot).
//!
//! (How the server runs under libfaketime, and the shim that keeps it from deadlocking at
//! start-up: `support::faketime`.) Load threads take and release
//! mutexes, read-write locks and fences on shared keys while the clock jumps, and the
//! server is also killed with `kill -9` and restarted (AOF, `appendfsync always`) while
//! its clock is behind the tokens it already issued.
//!
//! Asserted (fencing token rule 1): on every key, a grant acknowledged before another
//! grant was asked for has the smaller token, across every step forward and back and
//! every restart; `FENCE.NEXT` likewise.
//!
//! Observed and printed, not asserted beyond the contract ("the lease ends at now + ttl
//! on the server's clock"): what a step does to leases that are held and to clients
//! waiting with `WAIT`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use support::chaos::{full, scale};
use support::fault_kit::*;
use support::{faketime, seed};
use support::*;

// ---------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------

const MUTEXES: usize = 6;
const RWLOCKS: usize = 3;
const FENCES: usize = 2;

struct Shared {
    port: u16,
    seed: u64,
    stop: AtomicBool,
    /// The server that is up (0 while down): threads talk only to it.
    current_pid: AtomicU32,
    ops: AtomicU64,
}

fn connect(shared: &Shared) -> Option<redis::Connection> {
    let want = shared.current_pid.load(Ordering::SeqCst);
    if want == 0 {
        return None;
    }
    let c = redis::Client::open(format!("redis://127.0.0.1:{}/", shared.port)).ok()?;
    let mut con = c.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let text: String = redis::cmd("INFO").arg("server").query(&mut con).ok()?;
    let pid: u32 = parse_info(&text).get("process_id")?.parse().ok()?;
    (pid == want).then_some(con)
}

/// Takes and releases locks on shared keys (short leases, no WAIT) and draws fence
/// tokens until told to stop, reconnecting across restarts. Returns every fresh grant.
fn load(shared: Arc<Shared>, id: usize) -> Vec<Grant> {
    let owner = format!("t{id}");
    let mut rng = seed::rng(shared.seed, &owner);
    let mut grants = vec![];
    // Keys this thread may hold: released before it acquires them again, so every
    // acquire is a fresh grant (never a reentry). An acquire cut by a kill may have
    // been granted: it goes here too.
    let mut held: Vec<(String, &'static str)> = vec![];
    let mut con: Option<redis::Connection> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(c) = con.as_mut() else {
            con = connect(&shared);
            if con.is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
            continue;
        };
        if !held.is_empty() && rng.gen_bool(0.5) {
            let i = rng.gen_range(0..held.len());
            let r: redis::RedisResult<i64> = redis::cmd(held[i].1).arg(&held[i].0).arg(&owner).query(c);
            match r {
                Ok(_) => {
                    held.swap_remove(i);
                }
                Err(e) if is_transient(&e) => con = None,
                Err(e) => panic!("{} {}: {e}", held[i].1, held[i].0),
            }
            continue;
        }
        let roll = rng.gen_range(0..10);
        let (key, acquire, release) = match roll {
            0..=4 => (format!("m{}", rng.gen_range(0..MUTEXES)), "LOCK.ACQUIRE", "LOCK.RELEASE"),
            5 | 6 => (format!("r{}", rng.gen_range(0..RWLOCKS)), "RWLOCK.RLOCK", "RWLOCK.RUNLOCK"),
            7 => (format!("r{}", rng.gen_range(0..RWLOCKS)), "RWLOCK.WLOCK", "RWLOCK.WUNLOCK"),
            _ => (format!("f{}", rng.gen_range(0..FENCES)), "FENCE.NEXT", ""),
        };
        if held.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let invoked = Instant::now();
        let r: redis::RedisResult<Option<i64>> = if release.is_empty() {
            redis::cmd(acquire).arg(&key).query(c)
        } else {
            redis::cmd(acquire).arg(&key).arg(&owner).arg(rng.gen_range(20..400)).query(c)
        };
        match r {
            Ok(Some(t)) => {
                grants.push(Grant {
                    key: key.clone(),
                    invoked,
                    completed: Instant::now(),
                    token: t,
                    what: format!("{acquire} by {owner}"),
                });
                if !release.is_empty() {
                    held.push((key, release));
                }
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {
                shared.ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_transient(&e) => {
                if !release.is_empty() {
                    held.push((key, release));
                }
                con = None;
            }
            Err(e) => panic!("{acquire} {key} {owner}: {e}"),
        }
    }
    grants
}

// ---------------------------------------------------------------------------------------
// What a step does to leases (printed for the README; the handoff to a waiter is asserted)
// ---------------------------------------------------------------------------------------

/// A client blocked in `LOCK.ACQUIRE key waiter 10000 WAIT <timeout>`: its answer and
/// when it came (read by a thread of its own, so that each answer's time is its own).
fn blocked_acquire(server: &Server, key: &'static str, timeout: i64) -> std::thread::JoinHandle<(Option<i64>, Instant)> {
    let mut w = Waiter::start(server, &["LOCK.ACQUIRE", key, "waiter", "10000", "WAIT", &timeout.to_string()]);
    w.raw.set_read_timeout(Duration::from_secs(60));
    std::thread::spawn(move || {
        let r = match w.reply() {
            Reply::Int(t) => Some(t),
            Reply::Nil => None,
            other => panic!("`{}` answered {other:?}", w.what),
        };
        (r, Instant::now())
    })
}

fn observe_leases(server: &Server) {
    let mut c = server.conn();
    faketime::step(server, 0);

    // Forward: three 3 s leases; one with no waiter, one with a client in WAIT 20000,
    // one with a client in WAIT 0. Then the clock jumps an hour ahead.
    let lease = 3_000;
    for k in ["obs:free", "obs:wait", "obs:wait0"] {
        assert!(acquire(&mut c, k, "holder", lease).is_some());
    }
    let granted_at = Instant::now();
    let w20 = blocked_acquire(server, "obs:wait", 20_000);
    let w0 = blocked_acquire(server, "obs:wait0", 0);
    wait_until(Duration::from_secs(5), "the waiters are queued", || {
        lock_info(&mut c, "obs:wait").is_some_and(|i| i.waiters == 1)
            && lock_info(&mut c, "obs:wait0").is_some_and(|i| i.waiters == 1)
    });
    faketime::step(server, 3600);
    let stepped_at = Instant::now();
    let info_after = lock_info(&mut c, "obs:free");
    let other = acquire(&mut c, "obs:free", "other", 10_000);
    let (r20, t20) = w20.join().unwrap();
    let (r0, t0) = w0.join().unwrap();
    let since = |t: Instant| {
        format!(
            "{} ms after the step, {} ms after the grant",
            (t - stepped_at).as_millis(),
            (t - granted_at).as_millis()
        )
    };
    eprintln!(
        "clock +1 h, {lease} ms leases granted {} ms before the step: LOCK.INFO at once: {info_after:?}; \
         another owner's LOCK.ACQUIRE at once: {other:?}; the client in WAIT 20000 got {r20:?} {}; \
         the client in WAIT 0 got {r0:?} {}",
        (stepped_at - granted_at).as_millis(),
        since(t20),
        since(t0)
    );

    // The lease is over once the clock jumped: the waiter with no time limit must be
    // served then, not when the lease would have ended on the monotonic clock (3 s).
    assert!(r0.is_some(), "the WAIT 0 client was not granted after the step");
    assert!(
        t0 - stepped_at < Duration::from_millis(lease as u64 / 2),
        "the WAIT 0 client was granted {} after the step, as late as the unstepped lease",
        since(t0)
    );

    // Back: a 1 s lease, the clock goes 10 min back.
    faketime::step(server, 0);
    assert!(acquire(&mut c, "obs:back", "holder", 1_000).is_some());
    faketime::step(server, -600);
    let info_back = lock_info(&mut c, "obs:back");
    let_time_pass(1_500); // the fault: time passing
    let still = lock_info(&mut c, "obs:back");
    let other = acquire(&mut c, "obs:back", "other", 1_000);
    eprintln!(
        "clock -10 min: LOCK.INFO of a 1 s lease just after the step: ttl {:?}; 1.5 s later: {:?}; another owner's \
         LOCK.ACQUIRE then: {other:?}",
        info_back.map(|i| i.ttl),
        still.map(|i| (i.owner_str(), i.ttl))
    );
    faketime::step(server, 0);
}

#[test]
fn tokens_never_go_back_when_the_wall_clock_steps() {
    let seed = seed::seed("tokens_never_go_back_when_the_wall_clock_steps");
    let started = Instant::now();
    let threads = 3;
    let mut server = faketime::start(&["appendonly yes", "appendfsync always"]);
    // First, on a server with no other lease (another lease's timer would end these too).
    observe_leases(&server);
    ok(&mut server.conn(), &["FLUSHALL"]);
    let shared = Arc::new(Shared {
        port: server.port,
        seed,
        stop: AtomicBool::new(false),
        current_pid: AtomicU32::new(server.pid()),
        ops: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || load(s, i))
        })
        .collect();

    // The schedule: offsets in seconds, and restarts (`None`) while the clock is behind
    // the tokens already issued.
    let schedule: Vec<Option<i64>> = if full() {
        let offsets = [-3600, -600, -60, -5, 0, 5, 60, 600, 3600];
        let mut rng = seed::rng(seed, "schedule");
        let mut s = vec![];
        let mut last = 0;
        for _ in 0..100 {
            let next = **offsets.iter().filter(|&&o| o != last).collect::<Vec<_>>().choose(&mut rng).unwrap();
            s.push(Some(next));
            last = next;
            if next < 0 && rng.gen_bool(0.3) {
                s.push(None);
            }
        }
        s
    } else {
        vec![Some(600), Some(-600), None, Some(0), Some(3600), Some(-60), None, Some(0)]
    };
    let hold = Duration::from_millis(scale(400, 700));
    let mut steps = 0;
    let mut restarts = 0;
    let mut rng = seed::rng(seed, "holds");
    for what in &schedule {
        let ops0 = shared.ops.load(Ordering::SeqCst);
        match what {
            Some(offset) => {
                faketime::step(&server, *offset);
                steps += 1;
            }
            None => {
                shared.current_pid.store(0, Ordering::SeqCst);
                server.kill9();
                server.start_again();
                shared.current_pid.store(server.pid(), Ordering::SeqCst);
                restarts += 1;
            }
        }
        // Load on the new clock: some work done, then a while longer.
        wait_until(Duration::from_secs(30), "the load goes on after a step", || {
            assert!(!handles.iter().any(|h| h.is_finished()), "a load thread stopped early");
            shared.ops.load(Ordering::SeqCst) >= ops0 + 20
        });
        std::thread::sleep(hold.mul_f64(rng.gen_range(0.5..1.5)));
    }
    shared.stop.store(true, Ordering::SeqCst);
    let grants: Vec<Grant> = handles.into_iter().flat_map(|h| h.join().expect("a load thread failed")).collect();

    let bad = check_token_order(&grants);
    assert!(
        bad.is_empty(),
        "tokens went back across clock steps ({} cases):\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );

    // Once more, on every key, after everything: above all that was issued on it.
    let mut c = server.conn();
    let mut late = vec![];
    for key in (0..MUTEXES).map(|n| format!("m{n}")) {
        let invoked = Instant::now();
        if let Some(t) = acquire(&mut c, &key, "late", 1_000) {
            late.push(Grant {
                key,
                invoked,
                completed: Instant::now(),
                token: t,
                what: "the last LOCK.ACQUIRE".into(),
            });
        }
    }
    for key in (0..FENCES).map(|n| format!("f{n}")) {
        let invoked = Instant::now();
        let t = fence_next(&mut c, &key);
        late.push(Grant { key, invoked, completed: Instant::now(), token: t, what: "the last FENCE.NEXT".into() });
    }
    let mut everything = grants.clone();
    everything.extend(late);
    let bad = check_token_order(&everything);
    assert!(bad.is_empty(), "tokens went back:\n{}", bad.join("\n"));

    eprintln!(
        "clock steps: {steps} steps, {restarts} restarts with the clock behind, {} grants, {:?}",
        grants.len(),
        started.elapsed()
    );
}
