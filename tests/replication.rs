//! Replicas: full sync, streaming, lease end reaching the replica, FLUSHALL, resync,
//! promotion, and the read/write split of the commands.
//!
//! Each test runs for every lock kind (`kinds::KINDS`, `tests/support/kinds.rs`: mutex,
//! read-write lock, fences, semaphores) on one master and its replica; a new kind joins every test with
//! its `LockKind` impl.

#[path = "support/kinds.rs"]
mod kinds;
mod support;

use std::time::Duration;

use kinds::*;
use support::*;

/// A master that starts a full sync at once (the default waits 5 s for more replicas).
const MASTER: &[&str] = &["repl-diskless-sync-delay 0"];

/// Time let pass before a full sync, so that a deadline recomputed from a relative ttl
/// would show.
const PASS_MS: i64 = 300;

#[test]
fn full_sync_brings_locks_and_fences_to_a_new_replica() {
    let master = Server::start(MASTER);
    let mut m = master.conn();
    let tokens = build_all(&mut m);
    let before = snapshot(&mut m);
    let_time_pass(PASS_MS);
    let replica = start_synced_replica(&master);
    let mut r = replica.conn();
    assert_replica_same_all(&mut m, &mut r, "full sync");
    assert_same_state(&before, &snapshot(&mut r), PASS_MS, "full sync (replica vs master before): deadline moved?");
    assert_eq!(digest(&mut r), digest(&mut m), "DEBUG DIGEST after full sync");
    // Tokens the master issues now are larger than all before, and reach the replica.
    assert_fresh_tokens_larger_all(&mut m, &tokens, "after a full sync");
    await_sync(&master, &replica);
    assert_replica_same_all(&mut m, &mut r, "fresh grants after a full sync");
}

#[test]
fn streamed_changes_reach_the_replica_as_the_same_state() {
    let master = Server::start(MASTER);
    let mut m = master.conn();
    let mut tokens = build_all(&mut m);
    let replica = start_synced_replica(&master);
    let mut r = replica.conn();
    let mut streamed = vec![];
    for kind in KINDS {
        for key in kind.stream(&master, &replica, &mut m, &mut tokens) {
            streamed.push((*kind, key));
        }
    }
    await_sync(&master, &replica);
    for (kind, key) in &streamed {
        assert_replica_same(*kind, &mut m, &mut r, key, "streamed");
    }
    assert_replica_same_all(&mut m, &mut r, "streamed");
    assert_eq!(dbsize(&mut r), dbsize(&mut m));
    // New tokens on new keys of every kind are larger than everything before, and
    // replicate.
    let mut last = tokens.iter().copied().max().unwrap();
    for kind in KINDS {
        let key = kind.key("after-stream");
        let n = kind.grant(&mut m, &key, "zed", LONG_TTL);
        assert!(n > last, "{}: token {n} after streaming not above {last}", kind.name());
        last = n;
    }
    await_sync(&master, &replica);
    for kind in KINDS {
        assert_replica_same(*kind, &mut m, &mut r, &kind.key("after-stream"), "fresh grants after streaming");
    }
}

#[test]
fn replica_serves_reads_and_refuses_writes() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let granted: Vec<(&dyn LockKind, String, i64)> = KINDS
        .iter()
        .map(|k| {
            let key = k.key("a");
            let t = k.grant(&mut m, &key, "alice", LONG_TTL);
            (*k, key, t)
        })
        .collect();
    await_sync(&master, &replica);
    let mut r = replica.conn();
    for (k, key, t) in &granted {
        let st = k.state(&mut r, key).unwrap_or_else(|| panic!("{key} missing on the replica"));
        assert_eq!(st.token_of("alice"), Some(*t), "{key} on the replica");
    }
    for (k, key, _) in &granted {
        for args in k.writes(key, "alice", &k.key("new")) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let e = err(&mut r, &args);
            assert!(e.starts_with("READONLY"), "{args:?} on a replica answered {e:?}");
        }
    }
    for (k, key, t) in &granted {
        let st = k.state(&mut r, key).unwrap_or_else(|| panic!("{key} missing on the replica"));
        assert_eq!(st.token_of("alice"), Some(*t), "{key} on the replica after refused writes");
        if k.has_holds() {
            assert_eq!(st.holds_of("alice"), Some(1), "{key} on the replica after refused writes");
        }
        assert!(!exists(&mut r, &k.key("new")), "a refused write created {}", k.key("new"));
        assert_replica_same(*k, &mut m, &mut r, key, "after refused writes");
    }
    assert_eq!(digest(&mut r), digest(&mut m));
}

#[test]
fn lease_end_on_the_master_reaches_the_replica() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    let mut short = vec![];
    for k in leased_kinds() {
        k.grant(&mut m, &k.key("keep"), "alice", LONG_TTL);
        let t = k.grant(&mut m, &k.key("short"), "bob", 150);
        short.push((k, t));
    }
    // The replica has them (possibly already over by the time we look). Await the ends on
    // the replica with an observer that does not touch the keys.
    let keep = short.len() as i64;
    wait_until(Duration::from_secs(10), &format!("the lease ends reached the replica (DBSIZE {keep})"), || {
        dbsize(&mut r) == keep
    });
    for (k, _) in &short {
        assert!(!exists(&mut r, &k.key("short")));
        assert!(!exists(&mut m, &k.key("short")));
        assert!(exists(&mut r, &k.key("keep")));
    }
    await_sync(&master, &replica);
    // A new grant is larger, and replicates.
    let mut fresh = vec![];
    for (k, t) in &short {
        let n = k.grant(&mut m, &k.key("short"), "carol", LONG_TTL);
        assert!(n > *t, "{}: token {n} after lease end not above {t}", k.name());
        fresh.push((*k, n));
    }
    await_sync(&master, &replica);
    for (k, n) in &fresh {
        assert_replica_same(*k, &mut m, &mut r, &k.key("short"), "after the lease end");
        assert_eq!(k.state(&mut r, &k.key("short")).unwrap().token_of("carol"), Some(*n));
    }
}

#[test]
fn flushall_on_the_master_then_acquire_gives_a_larger_token_everywhere() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    let mut last = 0;
    for k in KINDS {
        last = last.max(k.grant(&mut m, &k.key("a"), "alice", LONG_TTL));
    }
    await_sync(&master, &replica);
    ok(&mut m, &["FLUSHALL"]);
    await_sync(&master, &replica);
    assert_eq!(dbsize(&mut r), 0);
    let mut fresh = vec![];
    for k in KINDS {
        let n = k.grant(&mut m, &k.key("a"), "alice", LONG_TTL);
        assert!(n > last, "{}: token {n} after FLUSHALL not above {last}", k.name());
        last = n;
        fresh.push((*k, n));
    }
    await_sync(&master, &replica);
    for (k, n) in &fresh {
        assert_replica_same(*k, &mut m, &mut r, &k.key("a"), "after FLUSHALL");
        assert_eq!(k.state(&mut r, &k.key("a")).unwrap().token_of("alice"), Some(*n));
    }
}

#[test]
fn replica_resync_after_restart_keeps_tokens_increasing() {
    // Full resync of a replica that already had data: its state is replaced by the
    // master's, and tokens issued after (on the master) are still larger.
    let master = Server::start(MASTER);
    let mut replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut last = 0;
    for k in KINDS {
        let t1 = k.grant(&mut m, &k.key("a"), "alice", LONG_TTL);
        assert!(t1 > last);
        last = t1;
    }
    await_sync(&master, &replica);
    replica.kill9();
    let mut b = vec![];
    for k in KINDS {
        let t2 = k.grant(&mut m, &k.key("b"), "bob", LONG_TTL);
        assert!(t2 > last);
        last = t2;
        b.push((*k, t2));
        if k.has_holds() {
            assert_eq!(k.release(&mut m, &k.key("a"), "alice"), Some(1));
        }
    }
    replica.start_again();
    await_sync(&master, &replica);
    let mut r = replica.conn();
    for (k, t2) in &b {
        if k.has_holds() {
            assert_eq!(k.state(&mut r, &k.key("a")), None, "{}: released while the replica was down", k.name());
        }
        assert_replica_same(*k, &mut m, &mut r, &k.key("b"), "after a resync");
        assert_eq!(k.state(&mut r, &k.key("b")).unwrap().token_of("bob"), Some(*t2));
    }
    for k in KINDS {
        let n = k.grant(&mut m, &k.key("a"), "carol", LONG_TTL);
        assert!(n > last, "{}: token {n} not above {last}", k.name());
        last = n;
    }
}

#[test]
fn promoted_replica_issues_tokens_larger_than_every_master_token() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut max = 0;
    let mut held_tokens = vec![];
    for k in KINDS {
        for i in 0..20 {
            max = max.max(k.grant(&mut m, &k.key(&format!("k{i}")), "alice", LONG_TTL));
        }
        if k.has_holds() {
            let t = k.grant(&mut m, &k.key("held"), "alice", LONG_TTL);
            assert_eq!(k.reenter(&mut m, &k.key("held"), "alice", LONG_TTL), Some(t));
            max = max.max(t);
            held_tokens.push((*k, t));
        }
    }
    await_sync(&master, &replica);
    let mut r = replica.conn();
    promote(&mut r);
    // The promoted server keeps the holders...
    for (k, t) in &held_tokens {
        let key = k.key("held");
        let st = k.state(&mut r, &key).unwrap_or_else(|| panic!("{key} lost by the promotion"));
        assert_eq!((st.token_of("alice"), st.holds_of("alice")), (Some(*t), Some(2)), "{key} after the promotion");
        assert_eq!(k.try_grant(&mut r, &key, "bob", LONG_TTL), None, "{key}: another owner on the promoted server");
        assert_eq!(k.reenter(&mut r, &key, "alice", LONG_TTL), Some(*t), "{key}: reentrant on the promoted server");
    }
    // ...and issues larger tokens on every kind of key.
    let mut last = max;
    for k in KINDS {
        let n1 = k.grant(&mut r, &k.key("fresh"), "bob", LONG_TTL);
        assert!(n1 > last, "{}: token {n1} from the promoted replica not above {last} (the master's {max})", k.name());
        last = n1;
        if k.has_holds() {
            for _ in 0..3 {
                assert_eq!(k.release(&mut r, &k.key("held"), "alice"), Some(1));
            }
            let n2 = k.grant(&mut r, &k.key("held"), "bob", LONG_TTL);
            assert!(n2 > last);
            assert_eq!(k.release(&mut r, &k.key("k0"), "alice"), Some(1));
            let n3 = k.grant(&mut r, &k.key("k0"), "bob", LONG_TTL);
            assert!(n3 > n2);
            last = n3;
        } else {
            // On a key the old master used.
            let n2 = k.grant(&mut r, &k.key("k0"), "bob", LONG_TTL);
            assert!(n2 > last, "{}: token {n2} on an old key not above {last}", k.name());
            last = n2;
        }
    }
    // Leases end on the promoted server by themselves.
    for k in leased_kinds() {
        k.grant(&mut r, &k.key("short"), "eve", 100);
    }
    wait_until(Duration::from_secs(5), "the leases ended on the promoted server", || {
        leased_kinds().all(|k| !exists(&mut r, &k.key("short")))
    });
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
    let seen: Vec<(&dyn LockKind, i64)> =
        KINDS.iter().map(|k| (*k, k.grant(&mut m, &k.key("k"), "alice", LONG_TTL))).collect();
    await_sync(&master, &replica);
    // Point the replica at a dead port: it keeps its data and hears nothing more.
    ok(&mut r, &["REPLICAOF", "127.0.0.1", &dead_port().to_string()]);
    wait_until(Duration::from_secs(5), "the replica lost its master link", || {
        info(&mut r, "replication").get("master_link_status").map(String::as_str) != Some("up")
    });
    let mut missed = vec![];
    for (k, t) in &seen {
        let key = k.key("k");
        if k.has_holds() {
            assert_eq!(k.release(&mut m, &key, "alice"), Some(1));
        }
        let mut last = 0;
        for i in 0..50 {
            let owner = format!("o{i}");
            last = k.grant(&mut m, &key, &owner, LONG_TTL);
            if k.has_holds() {
                assert_eq!(k.release(&mut m, &key, &owner), Some(1));
            }
        }
        assert!(last > *t);
        missed.push(last);
    }
    // The promotion happens later than the last grant (same clock: skew 0).
    let_time_pass(2);
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    for ((k, t), missed) in seen.iter().zip(&missed) {
        let key = k.key("k");
        let st = k.state(&mut r, &key).unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(st.token_of("alice"), Some(*t), "{key}: the replica never saw the later grants");
        if k.has_holds() {
            assert_eq!(k.release(&mut r, &key, "alice"), Some(1));
        }
        let n = k.grant(&mut r, &key, "bob", LONG_TTL);
        assert!(
            n > *missed,
            "{}: the promoted replica issued {n}, not above the old master's unseen {missed}",
            k.name()
        );
    }
}

#[test]
fn replica_never_ends_a_lease_itself_but_reports_it_over() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    // Grant on the master, sync, then cut the replica off before the leases end.
    let granted: Vec<(&dyn LockKind, i64)> =
        leased_kinds().map(|k| (k, k.grant(&mut m, &k.key("k"), "alice", 1_500))).collect();
    await_sync(&master, &replica);
    ok(&mut r, &["REPLICAOF", "127.0.0.1", &dead_port().to_string()]);
    for (k, _) in &granted {
        assert!(exists(&mut r, &k.key("k")), "the replica lost the lease before it was cut off (machine too slow?)");
    }
    // The replica reports the leases over once their deadlines have passed...
    wait_until(Duration::from_secs(5), "the replica reports the past-deadline leases as over", || {
        granted.iter().all(|(k, _)| k.state(&mut r, &k.key("k")).is_none())
    });
    // ...but does not delete the keys itself: that is the master's effect to send.
    assert_eq!(dbsize(&mut r), granted.len() as i64, "a replica ended a lease on its own");
    // Promoted, it is a master now: the leases that are over go away.
    ok(&mut r, &["REPLICAOF", "NO", "ONE"]);
    wait_until(Duration::from_secs(5), "the promoted replica ended the expired leases", || dbsize(&mut r) == 0);
    for (k, t) in &granted {
        let n = k.grant(&mut r, &k.key("k"), "bob", LONG_TTL);
        assert!(n > *t);
    }
}

#[test]
fn a_replica_reports_a_lease_past_its_deadline_as_over() {
    let master = Server::start(MASTER);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    let t_long = rgrant(&mut m, "rw", "long", LONG_TTL);
    // Right after a diskless full sync, Redis 7.0 holds the stream back until the
    // replica's first REPLCONF ACK (up to 1 s): wait for that before the timed part.
    await_sync(&master, &replica);
    rgrant(&mut m, "rw", "short", 1_500);
    // The short deadline is at most 1500 ms after this.
    let deadline = now_ms() + 1_500;
    wait_until(PATIENCE, "both readers reached the replica", || {
        rw_info(&mut r, "rw").is_some_and(|i| i.holders.len() == 2)
    });
    assert!(now_ms() < deadline - 1_000, "the replica took too long to see the short lease");
    // The master is kept busy past the short deadline, so it cannot send the lease's end;
    // the replica reports the lease as over all the same.
    let sleep_ms = deadline + 700 - now_ms();
    let mut sleeper = Waiter::start(&master, &["DEBUG", "SLEEP", &format!("{:.3}", sleep_ms as f64 / 1000.0)]);
    wait_until(PATIENCE, "the short deadline passed", || now_ms() > deadline + 100);
    let i = rw_held(&mut r, "rw");
    sleeper.assert_still_blocked();
    assert_eq!(i.who(), who(&[("long", "read")]), "a replica reports a lease past its deadline as over");
    assert_eq!(i.holder("long", "read").token, t_long);
    assert_eq!(sleeper.reply(), Reply::ok());
    await_sync(&master, &replica);
    assert_eq!(rw_held(&mut r, "rw").who(), who(&[("long", "read")]));
    assert_eq!(rw_held(&mut m, "rw").who(), who(&[("long", "read")]));
}

/// Changes of every kind on keys tagged `tag`: a grant, a re-entry and a release (to free)
/// of another grant. Returns the keys that stay held.
fn change_all(m: &mut redis::Connection, tag: &str) -> Vec<(&'static dyn LockKind, String)> {
    let mut held = vec![];
    for kind in KINDS {
        let key = kind.key(&format!("{tag}-held"));
        kind.grant(m, &key, "alice", LONG_TTL);
        kind.reenter(m, &key, "alice", 2 * LONG_TTL);
        let freed = kind.key(&format!("{tag}-freed"));
        kind.grant(m, &freed, "bob", LONG_TTL);
        kind.release(m, &freed, "bob");
        held.push((*kind, key));
    }
    held
}

fn stat(c: &mut redis::Connection, section: &str, field: &str) -> i64 {
    info(c, section).get(field).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

#[track_caller]
fn assert_same_keys(m: &mut redis::Connection, r: &mut redis::Connection, keys: &[(&'static dyn LockKind, String)], what: &str) {
    for (kind, key) in keys {
        assert_replica_same(*kind, m, r, key, what);
    }
    assert_eq!(digest(r), digest(m), "DEBUG DIGEST {what}");
}

/// A master builds no effect while nothing can read it (no replica, no backlog, no AOF).
/// A replica that attaches later misses nothing; one that loses its link continues with
/// a partial resync carrying every change made meanwhile; and once the backlog is freed
/// (no replica for `repl-backlog-ttl`), a new replica again misses nothing.
#[test]
fn late_replicas_and_partial_resyncs_miss_no_change() {
    let master = Server::start(MASTER);
    let mut m = master.conn();
    build_all(&mut m);
    let mut keys = change_all(&mut m, "alone");
    let mut replica = start_synced_replica(&master);
    let mut r = replica.conn();
    assert_same_keys(&mut m, &mut r, &keys, "after a full sync of changes nobody streamed");
    assert_replica_same_all(&mut m, &mut r, "after a full sync of changes nobody streamed");

    keys.extend(change_all(&mut m, "streamed"));
    await_sync(&master, &replica);
    assert_same_keys(&mut m, &mut r, &keys, "streamed");

    // The link breaks; the replica comes back with a partial resync from the backlog.
    let (partial, full) = (stat(&mut m, "stats", "sync_partial_ok"), stat(&mut m, "stats", "sync_full"));
    ok(&mut m, &["CLIENT", "KILL", "TYPE", "replica"]);
    keys.extend(change_all(&mut m, "resync"));
    await_sync(&master, &replica);
    assert_eq!(stat(&mut m, "stats", "sync_partial_ok"), partial + 1, "the replica came back with a partial resync");
    assert_eq!(stat(&mut m, "stats", "sync_full"), full, "no full sync");
    assert_same_keys(&mut m, &mut r, &keys, "after a partial resync");

    // No replica for a second: the master frees its backlog, and nothing reads effects.
    replica.kill9();
    ok(&mut m, &["CONFIG", "SET", "repl-backlog-ttl", "1"]);
    wait_until(Duration::from_secs(20), "the master frees its backlog", || {
        stat(&mut m, "replication", "repl_backlog_active") == 0
    });
    // The module looks for a stream at most once a second.
    let_time_pass(1_100);
    keys.extend(change_all(&mut m, "freed"));
    let replica = start_synced_replica(&master);
    let mut r = replica.conn();
    assert_same_keys(&mut m, &mut r, &keys, "a new replica after the backlog was freed");
    keys.extend(change_all(&mut m, "new"));
    await_sync(&master, &replica);
    assert_same_keys(&mut m, &mut r, &keys, "streamed to the new replica");
}
