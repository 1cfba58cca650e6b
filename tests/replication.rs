//! Replicas: full sync, streaming, lease end reaching the replica, FLUSHALL, promotion,
//! and the read/write split of the commands.

mod common;

use std::time::Duration;

use common::*;

/// A master that starts a full sync at once (the default waits 5 s for more replicas).
const MASTER: &[&str] = &["repl-diskless-sync-delay 0"];

fn same_lock(m: &mut redis::Connection, r: &mut redis::Connection, key: &str) -> LockInfo {
    let mi = held(m, key);
    let ri = lock_info(r, key).unwrap_or_else(|| panic!("{key} is held on the master but LOCK.INFO is nil on the replica"));
    assert_eq!(ri.owner, mi.owner, "owner of {key} on the replica");
    assert_eq!(ri.token, mi.token, "token of {key} on the replica");
    assert_eq!(ri.holds, mi.holds, "holds of {key} on the replica");
    assert!(ri.ttl > 0 && ri.ttl <= mi.ttl + 1000, "ttl of {key}: replica {}, master {}", ri.ttl, mi.ttl);
    mi
}

#[test]
fn full_sync_brings_locks_and_fences_to_a_new_replica() {
    let master = Server::start(MASTER);
    let mut m = master.conn();
    let mut tokens = vec![];
    tokens.push(grant(&mut m, "a", "alice", LONG_TTL));
    let t = grant(&mut m, "b", "bob", LONG_TTL);
    grant(&mut m, "b", "bob", LONG_TTL);
    tokens.push(t);
    tokens.push(fence_next(&mut m, "f"));
    tokens.push(fence_next(&mut m, "f"));
    let released = grant(&mut m, "gone", "carol", LONG_TTL);
    release(&mut m, "gone", "carol");
    tokens.push(released);
    // Let time pass, so a deadline recomputed from a relative ttl would show.
    let a_ttl = held(&mut m, "a").ttl;
    let_time_pass(300);
    let replica = start_synced_replica(&master);
    let mut r = replica.conn();
    let a = same_lock(&mut m, &mut r, "a");
    assert!(lock_info(&mut r, "a").unwrap().ttl <= a_ttl - 300, "deadline moved by the full sync");
    assert_eq!(a.holds, 1);
    assert_eq!(same_lock(&mut m, &mut r, "b").holds, 2);
    assert_eq!(lock_info(&mut r, "gone"), None);
    assert_eq!(fence_current(&mut r, "f"), fence_current(&mut m, "f"));
    assert_eq!(key_type(&mut r, "a"), "lockmutex");
    assert_eq!(key_type(&mut r, "f"), "lockfence");
    assert_eq!(digest(&mut r), digest(&mut m));
    // Tokens the master issues now are larger than all before.
    let max = *tokens.iter().max().unwrap();
    let n = grant(&mut m, "gone", "dave", LONG_TTL);
    assert!(n > max, "token {n} not above {max}");
    let f = fence_next(&mut m, "f");
    assert!(f > n);
    await_sync(&master, &replica);
    same_lock(&mut m, &mut r, "gone");
    assert_eq!(fence_current(&mut r, "f"), f);
}

#[test]
fn streamed_changes_reach_the_replica_as_the_same_state() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    let mut last = 0;
    // Grants, reentrancy, extends, releases, fences.
    for i in 0..30 {
        let key = format!("k{i}");
        let t = grant(&mut m, &key, "alice", LONG_TTL);
        assert!(t > last);
        last = t;
        if i % 2 == 0 {
            assert_eq!(acquire(&mut m, &key, "alice", 2 * LONG_TTL), Some(t));
        }
        if i % 3 == 0 {
            assert_eq!(extend(&mut m, &key, "alice", 3 * LONG_TTL), 1);
        }
        if i % 5 == 0 {
            release(&mut m, &key, "alice");
        }
    }
    for _ in 0..10 {
        last = fence_next(&mut m, "f");
    }
    assert_eq!(fence_check(&mut m, "g", &(last + 3).to_string()), Ok(1));
    await_sync(&master, &replica);
    for i in 0..30 {
        let key = format!("k{i}");
        match lock_info(&mut m, &key) {
            Some(_) => {
                same_lock(&mut m, &mut r, &key);
            }
            None => assert!(!exists(&mut r, &key), "{key} free on the master but present on the replica"),
        }
    }
    assert_eq!(fence_current(&mut r, "f"), last);
    assert_eq!(fence_current(&mut r, "g"), last + 3);
    assert_eq!(dbsize(&mut r), dbsize(&mut m));
    // Release to free on the master: the key goes on the replica too.
    assert_eq!(release(&mut m, "k1", "alice"), 1);
    await_sync(&master, &replica);
    assert!(!exists(&mut r, "k1"));
    // Commands in MULTI and scripts replicate too.
    ok(&mut m, &["MULTI"]);
    raws(&mut m, &["LOCK.ACQUIRE", "tx", "bob", "600000"]);
    raws(&mut m, &["FENCE.NEXT", "f"]);
    raws(&mut m, &["EXEC"]);
    raws(&mut m, &["EVAL", "return redis.call('LOCK.ACQUIRE', KEYS[1], 'carol', '600000')", "1", "lua"]);
    await_sync(&master, &replica);
    same_lock(&mut m, &mut r, "tx");
    same_lock(&mut m, &mut r, "lua");
    assert_eq!(fence_current(&mut r, "f"), fence_current(&mut m, "f"));
    // A new token is larger than everything before.
    let n = grant(&mut m, "k1", "zed", LONG_TTL);
    assert!(n > fence_current(&mut m, "g"));
}

#[test]
fn replica_serves_reads_and_refuses_writes() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let t = grant(&mut m, "a", "alice", LONG_TTL);
    let f = fence_next(&mut m, "f");
    await_sync(&master, &replica);
    let mut r = replica.conn();
    assert_eq!(held(&mut r, "a").token, t);
    assert_eq!(fence_current(&mut r, "f"), f);
    for args in [
        &["LOCK.ACQUIRE", "a", "alice", "1000"][..],
        &["LOCK.ACQUIRE", "new", "bob", "1000"],
        &["LOCK.RELEASE", "a", "alice"],
        &["LOCK.EXTEND", "a", "alice", "1000"],
        &["FENCE.NEXT", "f"],
        &["FENCE.CHECK", "f", &f.to_string()],
    ] {
        let e = err(&mut r, args);
        assert!(e.starts_with("READONLY"), "{args:?} on a replica answered {e:?}");
    }
    let i = held(&mut r, "a");
    assert_eq!((i.token, i.holds), (t, 1));
    assert!(!exists(&mut r, "new"));
    assert_eq!(digest(&mut r), digest(&mut m));
}

#[test]
fn lease_end_on_the_master_reaches_the_replica() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    grant(&mut m, "keep", "alice", LONG_TTL);
    let t = grant(&mut m, "short", "bob", 150);
    // The replica has it (possibly already over by the time we look).
    // Await the end on the replica with an observer that does not touch the key.
    wait_until(Duration::from_secs(10), "the lease end reached the replica (DBSIZE 1)", || dbsize(&mut r) == 1);
    assert!(!exists(&mut r, "short"));
    assert!(!exists(&mut m, "short"));
    assert!(exists(&mut r, "keep"));
    await_sync(&master, &replica);
    // A new grant is larger, and replicates.
    let n = grant(&mut m, "short", "carol", LONG_TTL);
    assert!(n > t, "token {n} after lease end not above {t}");
    await_sync(&master, &replica);
    assert_eq!(same_lock(&mut m, &mut r, "short").token, n);
}

#[test]
fn flushall_on_the_master_then_acquire_gives_a_larger_token_everywhere() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    let t = grant(&mut m, "a", "alice", LONG_TTL);
    let f = fence_next(&mut m, "f");
    await_sync(&master, &replica);
    ok(&mut m, &["FLUSHALL"]);
    await_sync(&master, &replica);
    assert_eq!(dbsize(&mut r), 0);
    let n = grant(&mut m, "a", "alice", LONG_TTL);
    assert!(n > t && n > f, "token {n} after FLUSHALL not above {t}/{f}");
    let g = fence_next(&mut m, "f");
    assert!(g > n);
    await_sync(&master, &replica);
    assert_eq!(same_lock(&mut m, &mut r, "a").token, n);
    assert_eq!(fence_current(&mut r, "f"), g);
}

#[test]
fn replica_resync_after_restart_keeps_tokens_increasing() {
    // Full resync of a replica that already had data: its state is replaced by the
    // master's, and tokens issued after (on the master) are still larger.
    let master = Server::start(MASTER);
    let mut replica = start_synced_replica(&master);
    let mut m = master.conn();
    let t1 = grant(&mut m, "a", "alice", LONG_TTL);
    await_sync(&master, &replica);
    replica.kill9();
    let t2 = grant(&mut m, "b", "bob", LONG_TTL);
    release(&mut m, "a", "alice");
    let f = fence_next(&mut m, "f");
    replica.start_again();
    await_sync(&master, &replica);
    let mut r = replica.conn();
    assert_eq!(lock_info(&mut r, "a"), None);
    assert_eq!(same_lock(&mut m, &mut r, "b").token, t2);
    assert_eq!(fence_current(&mut r, "f"), f);
    let n = grant(&mut m, "a", "carol", LONG_TTL);
    assert!(n > f && f > t2 && t2 > t1);
}

#[test]
fn promoted_replica_issues_tokens_larger_than_every_master_token() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut max = 0;
    for i in 0..20 {
        max = max.max(grant(&mut m, &format!("k{i}"), "alice", LONG_TTL));
    }
    let t = grant(&mut m, "held", "alice", LONG_TTL);
    grant(&mut m, "held", "alice", LONG_TTL);
    max = max.max(t);
    for _ in 0..5 {
        max = max.max(fence_next(&mut m, "f"));
    }
    await_sync(&master, &replica);
    let mut r = replica.conn();
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    wait_until(Duration::from_secs(5), "the replica became a master", || {
        info(&mut r, "replication").get("role").map(String::as_str) == Some("master")
    });
    // The promoted server keeps the holders...
    let i = held(&mut r, "held");
    assert_eq!((i.owner.as_deref(), i.token, i.holds), (Some(&b"alice"[..]), t, 2));
    assert_eq!(acquire(&mut r, "held", "bob", LONG_TTL), None);
    assert_eq!(acquire(&mut r, "held", "alice", LONG_TTL), Some(t), "reentrant on the promoted server");
    // ...and issues larger tokens on every kind of key.
    let n1 = grant(&mut r, "fresh", "bob", LONG_TTL);
    assert!(n1 > max, "token {n1} from the promoted replica not above the master's {max}");
    for _ in 0..3 {
        assert_eq!(release(&mut r, "held", "alice"), 1);
    }
    let n2 = grant(&mut r, "held", "bob", LONG_TTL);
    assert!(n2 > n1);
    assert_eq!(release(&mut r, "k0", "alice"), 1);
    let n3 = grant(&mut r, "k0", "bob", LONG_TTL);
    assert!(n3 > n2);
    let n4 = fence_next(&mut r, "f");
    assert!(n4 > n3);
    // Leases end on the promoted server by themselves.
    grant(&mut r, "short", "eve", 100);
    wait_until(Duration::from_secs(5), "a lease ended on the promoted server", || !exists(&mut r, "short"));
}

#[test]
fn promoted_replica_that_missed_the_last_grants_still_issues_larger_tokens() {
    // Contract rule 2: the replica stops hearing from its master (here: it follows a master
    // that does not exist), the master goes on granting, then the replica is promoted, later
    // than those grants. Its tokens must exceed the ones it never saw.
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    let seen = grant(&mut m, "k", "alice", LONG_TTL);
    await_sync(&master, &replica);
    // Point the replica at a dead port: it keeps its data and hears nothing more.
    let dead = Server::new();
    let dead_port = dead.port;
    drop(dead);
    ok(&mut r, &["REPLICAOF", "127.0.0.1", &dead_port.to_string()]);
    wait_until(Duration::from_secs(5), "the replica lost its master link", || {
        info(&mut r, "replication").get("master_link_status").map(String::as_str) != Some("up")
    });
    let mut missed = 0;
    assert_eq!(release(&mut m, "k", "alice"), 1);
    for i in 0..50 {
        let owner = format!("o{i}");
        missed = grant(&mut m, "k", &owner, LONG_TTL);
        assert_eq!(release(&mut m, "k", &owner), 1);
    }
    let mut f_missed = 0;
    for _ in 0..50 {
        f_missed = fence_next(&mut m, "f");
    }
    assert!(missed > seen);
    // The promotion happens later than the last grant (same clock: skew 0).
    let_time_pass(2);
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(held(&mut r, "k").token, seen, "the replica never saw the later grants");
    assert_eq!(release(&mut r, "k", "alice"), 1);
    let n = grant(&mut r, "k", "bob", LONG_TTL);
    assert!(n > missed, "promoted replica issued {n}, not above the old master's unseen {missed}");
    let g = fence_next(&mut r, "f");
    assert!(g > f_missed, "promoted replica's FENCE.NEXT {g} not above the old master's unseen {f_missed}");
}

#[test]
fn replica_never_ends_a_lease_itself_but_reports_it_over() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    // Grant on the master, sync, then cut the replica off before the lease ends.
    let t = grant(&mut m, "k", "alice", 1_500);
    await_sync(&master, &replica);
    let dead = Server::new();
    let dead_port = dead.port;
    drop(dead);
    ok(&mut r, &["REPLICAOF", "127.0.0.1", &dead_port.to_string()]);
    assert!(exists(&mut r, "k"), "the replica lost the lease before it was cut off (machine too slow?)");
    // The replica reports the lease over once its deadline has passed...
    wait_until(Duration::from_secs(5), "the replica reports the past-deadline lease as over", || {
        lock_info(&mut r, "k").is_none()
    });
    // ...but does not delete the key itself: that is the master's effect to send.
    assert_eq!(dbsize(&mut r), 1, "a replica ended a lease on its own");
    // Promoted, it is a master now: the lease that is over goes away.
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    wait_until(Duration::from_secs(5), "the promoted replica ended the expired lease", || dbsize(&mut r) == 0);
    let n = grant(&mut r, "k", "bob", LONG_TTL);
    assert!(n > t);
}
