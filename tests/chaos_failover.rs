//! Chaos: failover to a replica that fell behind (fencing token rule 2).
//!
//! A master grants under load to a streaming replica. The replica is stopped with
//! SIGSTOP; the master fills the replication link (so that what follows stays in the
//! master's own output buffer) and grants on, on keys the replica knows and keys it does
//! not. The master is killed with `kill -9`, taking those grants with it. The replica is
//! resumed, drains what reached it, sees its master gone and is promoted with
//! `REPLICAOF NO ONE`, later than the old master's last grant (same machine: skew 0).
//! Every token it then issues, on old keys and new, for mutexes, read-write locks and
//! fences, must be larger than every token the old master issued. In a full run the
//! promoted server becomes the master of a new replica and the whole thing repeats.

#[path = "support/history.rs"]
mod history;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use support::chaos::scale;
use support::fault_kit::*;
use history::{Op, Recorder, Res};
use support::seed;
use support::*;

const MUTEXES: usize = 12;
const RWLOCKS: usize = 6;
const FENCES: usize = 4;
/// Every server of the chain: full syncs start at once, and a master drops a replica
/// whose output buffer passes 4 MB (a stalled replica).
const CONFIG: &[&str] = &["repl-diskless-sync-delay 0", "client-output-buffer-limit replica 4mb 4mb 0"];

fn mutex_key(n: usize) -> String {
    format!("m{n}")
}
fn rw_key(n: usize) -> String {
    format!("r{n}")
}
fn fence_key(n: usize) -> String {
    format!("f{n}")
}

/// Grants on `port` until `stop`: mutexes, read and write locks (short leases, often
/// released), fences. Returns every fresh grant; lock calls also go to `rec` (the history
/// checker looks at the master's mutual exclusion and token order under this load).
fn load(port: u16, owner: String, stop: Arc<AtomicBool>, rec: Recorder, seed: u64) -> Vec<Grant> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rng = seed::rng(seed, &owner);
    let mut grants = vec![];
    // What this thread holds (so it never re-enters: every acquire is a fresh grant).
    let mut held: Vec<(String, Op)> = vec![];
    while !stop.load(Ordering::SeqCst) {
        if !held.is_empty() && rng.gen_bool(0.5) {
            let (key, op) = held.swap_remove(rng.gen_range(0..held.len()));
            let cmd = match op {
                Op::Release => "LOCK.RELEASE",
                Op::RUnlock => "RWLOCK.RUNLOCK",
                _ => "RWLOCK.WUNLOCK",
            };
            // 0 when the lease already ended: fine.
            rec.record(op, &key, &owner, 0, || match redis::cmd(cmd).arg(&key).arg(&owner).query::<i64>(&mut con) {
                Ok(1) => Res::Ok,
                Ok(0) => Res::NotHeld,
                other => panic!("{cmd} {key} {owner}: {other:?}"),
            });
            continue;
        }
        let roll = rng.gen_range(0..10);
        let (key, cmd, op, release) = if roll < 5 {
            (mutex_key(rng.gen_range(0..MUTEXES)), "LOCK.ACQUIRE", Op::Acquire, Op::Release)
        } else if roll < 7 {
            (rw_key(rng.gen_range(0..RWLOCKS)), "RWLOCK.RLOCK", Op::RLock, Op::RUnlock)
        } else if roll < 8 {
            (rw_key(rng.gen_range(0..RWLOCKS)), "RWLOCK.WLOCK", Op::WLock, Op::WUnlock)
        } else {
            (fence_key(rng.gen_range(0..FENCES)), "FENCE.NEXT", Op::FenceWrite, Op::FenceWrite)
        };
        if held.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let invoked = Instant::now();
        let token: Option<i64> = if cmd == "FENCE.NEXT" {
            Some(redis::cmd(cmd).arg(&key).query(&mut con).unwrap())
        } else {
            let ttl: u64 = rng.gen_range(100..1500);
            let r = rec.record(op, &key, &owner, ttl, || {
                match redis::cmd(cmd).arg(&key).arg(&owner).arg(ttl).query::<Option<i64>>(&mut con) {
                    Ok(Some(t)) => Res::Granted(t),
                    Ok(None) => Res::Refused,
                    Err(e) => panic!("{cmd} {key} {owner}: {e}"),
                }
            });
            match r {
                Res::Granted(t) => Some(t),
                _ => None,
            }
        };
        if let Some(t) = token {
            grants.push(Grant {
                key: key.clone(),
                invoked,
                completed: Instant::now(),
                token: t,
                what: format!("{cmd} by {owner}"),
            });
            if release != Op::FenceWrite {
                held.push((key, release));
            }
        }
    }
    grants
}

/// `threads` load threads for `how_long`; their owners are `<tag>-<n>`, used only here.
fn run_load(port: u16, tag: &str, threads: usize, how_long: Duration, rec: &Recorder, seed: u64) -> Vec<Grant> {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let stop = stop.clone();
            let owner = format!("{tag}-{i}");
            let rec = rec.clone();
            std::thread::spawn(move || load(port, owner, stop, rec, seed))
        })
        .collect();
    std::thread::sleep(how_long);
    stop.store(true, Ordering::SeqCst);
    handles.into_iter().flat_map(|h| h.join().expect("a load thread failed")).collect()
}

#[test]
fn promoted_replica_that_fell_behind_issues_tokens_above_the_dead_masters() {
    let seed = seed::seed("promoted_replica_that_fell_behind_issues_tokens_above_the_dead_masters");
    let started = Instant::now();
    let rounds: usize = scale(1, 5);
    let threads: usize = 3;
    let live_load = Duration::from_millis(scale(300, 1000));
    let cut_off_load = Duration::from_millis(scale(1000, 3000));

    let mut master = Server::start(CONFIG);
    let mut all_old: Vec<Grant> = vec![];
    let mut highest_issued = 0i64;
    for round in 0..rounds {
        let replica = Server::start_replica_of(&master, CONFIG);
        await_sync(&master, &replica);
        await_streaming(&master);
        let mut m = master.conn();
        let mut r = replica.conn();

        // Grants that reach the replica.
        let rec = Recorder::new();
        let mut grants = run_load(master.port, &format!("live{round}"), threads, live_load, &rec, seed);
        await_sync(&master, &replica);

        // The replica stops. The master fills the link until the stalled replica's output
        // buffer passes its limit and the master drops it, as it would in production:
        // nothing granted from then on can reach the replica. Then it grants on.
        let filled = cut_off_replica(&mut m, replica.pid());
        let missed = run_load(master.port, &format!("cut{round}"), threads, cut_off_load, &rec, seed);
        let mut last_fences = [0i64; FENCES];
        for g in &missed {
            if let Some(n) = g.key.strip_prefix('f') {
                let n: usize = n.parse().unwrap();
                last_fences[n] = last_fences[n].max(g.token);
            }
        }
        grants.extend(missed.iter().cloned());
        history::assert_clean(&rec.events(), &format!("round {round}: the master's lock history"));
        let order = check_token_order(&grants);
        assert!(order.is_empty(), "tokens out of order on the master:\n{}", order.join("\n"));
        let master_max = grants.iter().map(|g| g.token).max().unwrap();
        assert!(master_max > highest_issued, "the master issued nothing above the previous round's tokens");
        highest_issued = master_max;

        // The master dies with its last grants; the replica wakes up to a dead link.
        master.kill9();
        let killed_at = now_ms();
        sigcont(replica.pid());
        wait_until(Duration::from_secs(20), "the replica saw its master go", || {
            info(&mut r, "replication").get("master_link_status").map(String::as_str) == Some("down")
        });
        // The fault really happened: the replica missed the master's last fence tokens.
        for (n, &last) in last_fences.iter().enumerate() {
            if last > 0 {
                let seen = fence_current(&mut r, &fence_key(n));
                assert!(seen < last, "the replica has f{n} at {seen}: it did not miss the master's last token {last}");
            }
        }
        // Promotion, later than the old master's last grant (skew 0 on one machine).
        wait_until(Duration::from_secs(5), "2 ms passed since the kill", || now_ms() > killed_at + 2);
        ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
        for i in 0..filled {
            ok(&mut r, &["DEL", &format!("filler:{i}")]);
        }

        // Every token of the promoted server, on every old key and on new ones, is above
        // everything the old master issued.
        let mut new_tokens = vec![];
        let owner = format!("new-{round}");
        for n in 0..MUTEXES + 2 {
            let k = mutex_key(n);
            let t = int(&mut r, &["LOCK.ACQUIRE", &k, &owner, "60000", "WAIT", "10000"]);
            new_tokens.push((k.clone(), t));
            ok(&mut r, &["LOCK.RELEASE", &k, &owner]);
        }
        for n in 0..RWLOCKS + 1 {
            let k = rw_key(n);
            let t = int(&mut r, &["RWLOCK.WLOCK", &k, &owner, "60000", "WAIT", "10000"]);
            new_tokens.push((k.clone(), t));
            let t = int(&mut r, &["RWLOCK.RLOCK", &k, &owner, "60000"]);
            new_tokens.push((k.clone(), t));
            ok(&mut r, &["RWLOCK.RUNLOCK", &k, &owner]);
            ok(&mut r, &["RWLOCK.WUNLOCK", &k, &owner]);
        }
        for n in 0..FENCES + 1 {
            let k = fence_key(n);
            new_tokens.push((k.clone(), fence_next(&mut r, &k)));
        }
        for (k, t) in &new_tokens {
            assert!(
                *t > master_max,
                "round {round}: the promoted replica issued {t} on {k}, not above the old master's {master_max}"
            );
        }
        highest_issued = highest_issued.max(new_tokens.iter().map(|(_, t)| *t).max().unwrap());
        eprintln!(
            "failover round {round}: {} grants before the stop, {} the replica missed (after {} MB of filler), \
             old master's highest {master_max}, promoted replica's lowest new {}",
            grants.len() - missed.len(),
            missed.len(),
            filled,
            new_tokens.iter().map(|(_, t)| *t).min().unwrap()
        );
        all_old.extend(grants);
        // The promoted replica is the next round's master.
        drop(m);
        drop(r);
        master = replica;
    }
    eprintln!("failover: {rounds} rounds, {} grants by old masters, {:?}", all_old.len(), started.elapsed());
}
