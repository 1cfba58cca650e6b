//! Chaos workload 7: a frozen server. Locks are held with short leases and waiters queue
//! behind them (`WAIT`), then the whole server stops (`DEBUG SLEEP`, run in one MULTI
//! with the holders' `LOCK.EXTEND` to a short lease so that every lease surely ends while
//! it sleeps) for longer than several leases. After it wakes:
//!
//! - each lock hands off once per lease: the first waiter is granted after the wake,
//!   each next one a full lease after the previous grant (nobody releases), never two in
//!   a cascade; checked on the clients' clock (answers can't come before the wake plus
//!   whole leases) and on the server's clock (the wall-clock part of the tokens,
//!   `token >> 12` = ms since 2025-01-01, as README "Fencing tokens" documents);
//! - waiters are granted in arrival order with increasing tokens;
//! - the old holder, "paused" across the freeze like a GC pause, finds its lease over: its
//!   fenced write is refused as stale once the next holder wrote, its release answers 0;
//! - `LOCK.INFO`/`RWLOCK.INFO` sampled all along never show a token going back;
//! - the history checker finds no overlapping holds, repeated or out-of-order tokens,
//!   non-holder acknowledgements or stale accepted writes.
//!
//! Short by default (`make test`); `CHAOS_FULL=1` runs more keys, waiters and rounds.

#[path = "support/history.rs"]
mod history;
mod support;

use std::thread;
use std::time::Duration;

use support::chaos::{self, scale, since_epoch, Stop};
use support::*;
use history::{Op, Recorder, Res};

const GUARD: &str = "redis.call('FENCE.CHECK', KEYS[1], ARGV[1]) redis.call('RPUSH', KEYS[2], ARGV[1]) return 1";
/// Client-clock tolerance per lease boundary (the server's clock is in whole ms).
const MS2: Duration = Duration::from_millis(2);

fn grant_res(r: std::io::Result<Reply>) -> Res {
    match r {
        Ok(Reply::Int(t)) => Res::Granted(t),
        Ok(Reply::Nil) => Res::Refused,
        Ok(Reply::Err(e)) => Res::Error(e),
        Ok(other) => Res::Error(format!("unexpected {other:?}")),
        Err(_) => Res::Unknown,
    }
}

fn ack_res(r: std::io::Result<Reply>) -> Res {
    match r {
        Ok(Reply::Int(1)) => Res::Ok,
        Ok(Reply::Int(0)) => Res::NotHeld,
        Ok(Reply::Err(e)) => Res::Error(e),
        Ok(other) => Res::Error(format!("unexpected {other:?}")),
        Err(_) => Res::Unknown,
    }
}

fn fenced_write(raw: &mut Raw, rec: &Recorder, tag: &str, owner: &str, token: i64) -> Res {
    let (fence, log) = (format!("{{{tag}}}:fence"), format!("{{{tag}}}:log"));
    rec.record_fence(&fence, owner, token, || match raw.cmd(&["EVAL", GUARD, "2", &fence, &log, &token.to_string()]) {
        Ok(Reply::Int(1)) => Res::Ok,
        Ok(Reply::Err(e)) => Res::Error(e),
        Ok(other) => Res::Error(format!("unexpected {other:?}")),
        Err(_) => Res::Unknown,
    })
}

/// A waiter's grant as it saw it.
#[derive(Debug, Clone)]
struct Grant {
    key: String,
    owner: String,
    /// Position in its key's queue (0 = first to arrive).
    pos: usize,
    res: Res,
    complete: Duration,
}

/// Starts a waiter thread that blocks in `acquire`, then writes under its token to the
/// key's fenced resource and keeps the lock (its lease ends by itself).
fn spawn_waiter(port: u16, rec: Recorder, args: Vec<String>, key: String, owner: String, pos: usize, tag: String) -> thread::JoinHandle<Grant> {
    thread::spawn(move || {
        let mut raw = Raw::connect(port, Duration::from_secs(60)).expect("waiter connects");
        let op = if args[0] == "LOCK.ACQUIRE" {
            Op::Acquire
        } else if args[0] == "RWLOCK.RLOCK" {
            Op::RLock
        } else {
            Op::WLock
        };
        let ttl: u64 = args[3].parse().unwrap();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let res = rec.record(op, &key, &owner, ttl, || grant_res(raw.cmd(&a)));
        let complete = since_epoch();
        if let Res::Granted(t) = res {
            if op != Op::RLock {
                fenced_write(&mut raw, &rec, &tag, &owner, t);
            }
        }
        Grant { key, owner, pos, res, complete }
    })
}

fn lock_waiters(c: &mut redis::Connection, key: &str, rw: bool) -> i64 {
    let v = raws(c, &[if rw { "RWLOCK.INFO" } else { "LOCK.INFO" }, key]);
    if v == redis::Value::Nil {
        return 0;
    }
    value_int(&pairs(&v)["waiters"]).expect("waiters")
}

/// Samples the tokens shown by `LOCK.INFO` on `keys` until stopped: (key, token) in order.
fn token_monitor(port: u16, keys: Vec<String>, stop: Stop) -> thread::JoinHandle<Vec<(String, i64)>> {
    thread::spawn(move || {
        let mut c = Raw::connect(port, Duration::from_secs(60)).expect("monitor connects");
        let mut seen = vec![];
        while !stop.stopped() {
            for k in &keys {
                let r = c.cmd(&["LOCK.INFO", k]).expect("LOCK.INFO");
                if let Some(t) = r.field("token").and_then(|t| t.int()) {
                    seen.push((k.clone(), t));
                }
            }
            thread::sleep(Duration::from_millis(3));
        }
        seen
    })
}

/// Ms since 2025-01-01 on the server's clock at which `token` was issued (README: a
/// token is `max(floor + 1, (wall_ms - 2025-01-01) << 12)`; at a few grants per ms the
/// clock part is what it is).
fn token_ms(token: i64) -> i64 {
    token >> 12
}

#[test]
fn frozen_server_mutexes_hand_off_once_per_lease_after_wake() {
    let mut s = Server::new();
    let rec = Recorder::with_base(chaos::epoch());
    let keys = scale(3, 24);
    let waiters = scale(4, 6);
    let rounds = scale(1, 4);
    let lease: u64 = scale(150, 250);
    let sleep_ms: u64 = scale(1_200, 2_000);
    assert!(sleep_ms > 3 * lease, "the freeze must be longer than several leases");
    let mut c = s.conn();
    let mut all_tokens: Vec<(String, i64)> = vec![];

    for round in 0..rounds {
        let key_names: Vec<String> = (0..keys).map(|k| format!("frozen{k}")).collect();
        let tag = |k: usize| format!("fz{round}.{k}");
        // Holders take every lock for long, then waiters queue in a known order.
        let mut holders = vec![];
        for (k, key) in key_names.iter().enumerate() {
            let owner = format!("h{round}.{k}");
            let mut raw = Raw::connect(s.port, Duration::from_secs(60)).unwrap();
            let res = rec.record(Op::Acquire, key, &owner, LONG_TTL as u64, || {
                grant_res(raw.cmd(&["LOCK.ACQUIRE", key, &owner, &LONG_TTL.to_string()]))
            });
            let t0 = match res {
                Res::Granted(t) => t,
                other => panic!("holder of {key} not granted: {other:?}"),
            };
            // The holder writes first under its token.
            assert_eq!(fenced_write(&mut raw, &rec, &tag(k), &owner, t0), Res::Ok);
            holders.push((raw, owner, t0));
        }
        let mut handles = vec![];
        for (k, key) in key_names.iter().enumerate() {
            for pos in 0..waiters {
                let owner = format!("w{round}.{k}.{pos}");
                let args = vec!["LOCK.ACQUIRE".into(), key.clone(), owner.clone(), lease.to_string(), "WAIT".into(), "60000".into()];
                handles.push(spawn_waiter(s.port, rec.clone(), args, key.clone(), owner, pos, tag(k)));
                wait_until(Duration::from_secs(10), "the waiter queued", || lock_waiters(&mut c, key, false) == pos as i64 + 1);
            }
        }
        let mon_stop = Stop::after(Duration::from_secs(120));
        let mon = token_monitor(s.port, key_names.clone(), mon_stop.clone());

        // Freeze: every holder's lease becomes 20..50 ms, and the server sleeps at once.
        let mut freezer = Raw::connect(s.port, Duration::from_secs(60)).unwrap();
        let wall_before = now_ms();
        let invoke = since_epoch();
        freezer.send(&["MULTI"]).unwrap();
        for (k, (_, owner, _)) in holders.iter().enumerate() {
            freezer.send(&["LOCK.EXTEND", &key_names[k], owner, &(20 + k % 30).to_string()]).unwrap();
        }
        freezer.send(&["DEBUG", "SLEEP", &format!("{}", sleep_ms as f64 / 1000.0)]).unwrap();
        freezer.send(&["EXEC"]).unwrap();
        for _ in 0..keys + 2 {
            let r = freezer.read().unwrap();
            assert!(!matches!(r, Reply::Err(_)), "MULTI answered {r:?}");
        }
        let exec = freezer.read().unwrap();
        let complete = since_epoch();
        match &exec {
            Reply::Array(v) => {
                assert_eq!(v.len(), keys + 1, "EXEC answered {exec:?}");
                assert!(v[..keys].iter().all(|r| *r == Reply::Int(1)), "a holder's extend failed: {exec:?}");
            }
            other => panic!("EXEC answered {other:?}"),
        }
        for (k, (_, owner, _)) in holders.iter().enumerate() {
            rec.push(history::Event {
                op: Op::Extend,
                key: key_names[k].clone(),
                owner: owner.clone(),
                ttl_ms: 20 + (k % 30) as u64,
                token: 0,
                invoke,
                complete,
                res: Res::Ok,
            });
        }
        // The server began sleeping after `invoke`: nothing was granted before this.
        let woke_after = invoke + Duration::from_millis(sleep_ms);

        // The old holders wake from their "pause": once the next holder has written,
        // their own write is stale and their lease is over.
        for (k, (raw, owner, t0)) in holders.iter_mut().enumerate() {
            let log = format!("{{{}}}:log", tag(k));
            wait_until(Duration::from_secs(20), "the first waiter wrote", || int(&mut c, &["LLEN", &log]) >= 2);
            let w = fenced_write(raw, &rec, &tag(k), owner, *t0);
            assert!(matches!(&w, Res::Error(e) if e.contains("STALE")), "{}: the paused holder's write was not refused: {w:?}", key_names[k]);
            let r = rec.record(Op::Release, &key_names[k], owner, 0, || ack_res(raw.cmd(&["LOCK.RELEASE", &key_names[k], owner])));
            assert_eq!(r, Res::NotHeld, "{}: the paused holder's release after its lease ended", key_names[k]);
        }

        let grants: Vec<Grant> = handles.into_iter().map(|h| h.join().expect("waiter panicked")).collect();
        mon_stop.stop();
        let seen = mon.join().unwrap();
        all_tokens.extend(seen);

        for (k, key) in key_names.iter().enumerate() {
            let mut g: Vec<&Grant> = grants.iter().filter(|g| &g.key == key).collect();
            g.sort_by_key(|g| g.pos);
            let tokens: Vec<i64> = g
                .iter()
                .map(|g| match g.res {
                    Res::Granted(t) => t,
                    ref other => panic!("{key}: waiter {} was not granted: {other:?}", g.owner),
                })
                .collect();
            let t0 = holders[k].2;
            // Arrival order, increasing tokens.
            let mut prev = t0;
            for (i, &t) in tokens.iter().enumerate() {
                assert!(t > prev, "{key}: waiter #{i} got token {t}, not above {prev} (tokens {tokens:?}, holder {t0})");
                prev = t;
            }
            // One grant per lease: waiter #i answered no earlier than the wake plus i
            // whole leases (client clock) ...
            for (i, gr) in g.iter().enumerate() {
                let earliest = woke_after + Duration::from_millis(lease * i as u64);
                assert!(
                    gr.complete + MS2 * (i as u32 + 1) >= earliest,
                    "{key}: waiter #{i} was granted at {:?}, before the wake plus {i} leases ({earliest:?}): \
                     more than one grant per lease",
                    gr.complete
                );
            }
            // ... and on the server's clock: first grant after the sleep, then one lease
            // apart, neither sooner nor (much) later.
            let slept_until = wall_before - 1_735_689_600_000 + sleep_ms as i64;
            assert!(
                token_ms(tokens[0]) >= slept_until - 2,
                "{key}: first grant at server ms {} is before the end of the sleep ({slept_until})",
                token_ms(tokens[0])
            );
            assert!(
                token_ms(tokens[0]) - slept_until < 2_000,
                "{key}: the first grant came {} ms after the wake: the ended lease was not noticed",
                token_ms(tokens[0]) - slept_until
            );
            for w in tokens.windows(2) {
                let gap = token_ms(w[1]) - token_ms(w[0]);
                assert!(
                    gap >= lease as i64 - 1,
                    "{key}: grants {gap} ms apart on the server's clock, a lease is {lease} ms: two grants in one lease (tokens {tokens:?})"
                );
                assert!(gap <= lease as i64 + 2_000, "{key}: the next grant came {gap} ms after the previous (lease {lease} ms)");
            }
            // Waiters' writes all accepted, in token order.
            let log: Vec<i64> = redis::cmd("LRANGE").arg(format!("{{{}}}:log", tag(k))).arg(0).arg(-1).query(&mut c).unwrap();
            let mut expect = vec![t0];
            expect.extend(&tokens);
            assert_eq!(log, expect, "{key}: the fenced resource's writes");
        }
        // Every lease ends by itself: the locks are gone.
        wait_until(Duration::from_secs(10), "every lock's last lease ended", || {
            key_names.iter().all(|k| lock_info(&mut c, k).is_none())
        });
    }

    // Tokens shown by LOCK.INFO never went back on a key.
    let mut last: std::collections::HashMap<&str, i64> = Default::default();
    for (k, t) in &all_tokens {
        let l = last.entry(k.as_str()).or_insert(0);
        assert!(*t >= *l, "LOCK.INFO {k} showed token {t} after {l}");
        *l = *t;
    }
    wait_until(Duration::from_secs(10), "blocked_clients is 0", || {
        info(&mut c, "clients").get("blocked_clients").map(String::as_str) == Some("0")
    });
    history::assert_clean(&rec.events(), "frozen server, mutexes");
    s.assert_alive();
}

#[test]
fn frozen_server_rwlock_hands_off_by_lease_after_wake() {
    // A writer holds; readers r0..r2 wait, then writer w3, then readers r4, r5. After the
    // freeze: r0..r2 together, then w3 a lease later, then r4, r5 together a lease later.
    let mut s = Server::new();
    let rec = Recorder::with_base(chaos::epoch());
    let lease: u64 = 200;
    let sleep_ms: u64 = scale(1_000, 2_000);
    let key = "frozen-rw";
    let mut c = s.conn();
    let mut holder = Raw::connect(s.port, Duration::from_secs(60)).unwrap();
    let t0 = match rec.record(Op::WLock, key, "h", LONG_TTL as u64, || {
        grant_res(holder.cmd(&["RWLOCK.WLOCK", key, "h", &LONG_TTL.to_string()]))
    }) {
        Res::Granted(t) => t,
        other => panic!("writer not granted: {other:?}"),
    };
    let plan = ["RWLOCK.RLOCK", "RWLOCK.RLOCK", "RWLOCK.RLOCK", "RWLOCK.WLOCK", "RWLOCK.RLOCK", "RWLOCK.RLOCK"];
    let mut handles = vec![];
    for (pos, cmd) in plan.iter().enumerate() {
        let owner = format!("{}{pos}", if cmd.ends_with("WLOCK") { "w" } else { "r" });
        let args = vec![cmd.to_string(), key.to_string(), owner.clone(), lease.to_string(), "WAIT".into(), "60000".into()];
        handles.push(spawn_waiter(s.port, rec.clone(), args, key.to_string(), owner, pos, "frw".into()));
        wait_until(Duration::from_secs(10), "the waiter queued", || lock_waiters(&mut c, key, true) == pos as i64 + 1);
    }
    let mut freezer = Raw::connect(s.port, Duration::from_secs(60)).unwrap();
    let wall_before = now_ms();
    let invoke = since_epoch();
    freezer.send(&["MULTI"]).unwrap();
    freezer.send(&["RWLOCK.EXTEND", key, "h", "30"]).unwrap();
    freezer.send(&["DEBUG", "SLEEP", &format!("{}", sleep_ms as f64 / 1000.0)]).unwrap();
    freezer.send(&["EXEC"]).unwrap();
    for _ in 0..3 {
        freezer.read().unwrap();
    }
    let exec = freezer.read().unwrap();
    let complete = since_epoch();
    assert!(matches!(&exec, Reply::Array(v) if v[0] == Reply::Int(1)), "EXEC answered {exec:?}");
    rec.push(history::Event { op: Op::RwExtend, key: key.into(), owner: "h".into(), ttl_ms: 30, token: 0, invoke, complete, res: Res::Ok });
    let woke_after = invoke + Duration::from_millis(sleep_ms);

    let grants: Vec<Grant> = handles.into_iter().map(|h| h.join().expect("waiter panicked")).collect();
    let token = |g: &Grant| match g.res {
        Res::Granted(t) => t,
        ref other => panic!("{} not granted: {other:?}", g.owner),
    };
    let tokens: Vec<i64> = grants.iter().map(token).collect();
    // Groups: readers 0..3 at the wake, writer 3 a lease later, readers 4..6 a lease after.
    let slept_until = wall_before - 1_735_689_600_000 + sleep_ms as i64;
    for i in 0..3 {
        assert!(token_ms(tokens[i]) >= slept_until - 2, "reader {i} granted before the wake");
        assert!(tokens[i] > t0);
        assert!(grants[i].complete + MS2 >= woke_after);
    }
    let first_reader_ms = tokens[..3].iter().map(|&t| token_ms(t)).max().unwrap();
    let w = token_ms(tokens[3]);
    assert!(tokens[3] > tokens[2], "writer token {} not above the readers' {:?}", tokens[3], &tokens[..3]);
    assert!(
        w - first_reader_ms >= lease as i64 - 1,
        "the writer was granted {} ms after the readers, before their {lease} ms leases ended",
        w - first_reader_ms
    );
    assert!(grants[3].complete + MS2 * 2 >= woke_after + Duration::from_millis(lease), "writer answered too early");
    for i in 4..6 {
        assert!(tokens[i] > tokens[3]);
        assert!(token_ms(tokens[i]) - w >= lease as i64 - 1, "reader {i} granted {} ms into the writer's lease", token_ms(tokens[i]) - w);
        assert!(grants[i].complete + MS2 * 3 >= woke_after + Duration::from_millis(2 * lease), "reader {i} answered too early");
    }
    // The old writer is long gone.
    let r = rec.record(Op::WUnlock, key, "h", 0, || ack_res(holder.cmd(&["RWLOCK.WUNLOCK", key, "h"])));
    assert_eq!(r, Res::NotHeld);
    wait_until(Duration::from_secs(10), "the last leases ended", || ok(&mut c, &["RWLOCK.INFO", key]) == redis::Value::Nil);
    wait_until(Duration::from_secs(10), "blocked_clients is 0", || {
        info(&mut c, "clients").get("blocked_clients").map(String::as_str) == Some("0")
    });
    history::assert_clean(&rec.events(), "frozen server, read-write lock");
    s.assert_alive();
}
