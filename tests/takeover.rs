//! The takeover grace (`fencelock.takeover-grace`): a server that may have lost grants
//! grants nothing until every lease it may not know of has ended.
//!
//! The failover that loses a grant: a replica stopped (SIGSTOP) while its master grants,
//! the master killed (`kill -9`) with the grant still in its output buffer, the replica
//! resumed and promoted. Its first grant of the lock, checked by the history checker
//! against the lost one: without a grace they overlap (two holders, which is what the
//! grace is for); with a grace of at least the lease, they do not.

#[path = "support/history.rs"]
mod history;
mod support;

use history::{check, Op, Recorder, Res};
use std::time::Duration;

use support::fault_kit::{cut_off_replica, sigcont};
use support::*;

/// The lease of the grant the failover loses.
const LEASE_MS: i64 = 1500;

/// Runs the failover that loses a grant with `grace_ms` on the replica; returns the
/// history (the lost grant, then the promoted server's grant of the same lock).
fn failover_losing_a_grant(grace_ms: i64) -> Vec<history::Event> {
    let grace = format!("fencelock.takeover-grace {grace_ms}");
    // A master drops a replica whose output buffer passes 4 MB (a stalled replica).
    let mut master = Server::start(&["client-output-buffer-limit replica 4mb 4mb 0"]);
    let mut replica = Server::start_replica_of(&master, &[&grace]);
    await_sync(&master, &replica);
    await_streaming(&master);
    let mut m = master.conn();
    // Known to both: a grant and its release, so the replica has the lock's history.
    let t0 = acquire(&mut m, "job", "earlier", LONG_TTL).unwrap();
    assert_eq!(release(&mut m, "job", "earlier"), 1);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();

    // The replica stops and is cut off: the next grant cannot reach it.
    cut_off_replica(&mut m, replica.pid());
    let rec = Recorder::new();
    let lost = rec.record(Op::Acquire, "job", "first", LEASE_MS as u64, || match acquire(&mut m, "job", "first", LEASE_MS) {
        Some(t) => Res::Granted(t),
        None => Res::Refused,
    });
    assert!(matches!(lost, Res::Granted(t) if t > t0), "the master grants: {lost:?}");
    master.kill9();
    sigcont(replica.pid());
    let mut r = replica.conn();
    wait_until(Duration::from_secs(20), "the replica saw its master go", || {
        info(&mut r, "replication").get("master_link_status").map(String::as_str) == Some("down")
    });
    assert!(lock_info(&mut r, "job").is_none(), "the replica missed the grant (the fault happened)");
    promote(&mut r);
    let second = rec.record(Op::Acquire, "job", "second", LEASE_MS as u64, || {
        let v = raws(&mut r, &["LOCK.ACQUIRE", "job", "second", &LEASE_MS.to_string(), "WAIT", "20000"]);
        value_int(&v).map_or(Res::Refused, Res::Granted)
    });
    assert!(matches!(second, Res::Granted(_)), "the promoted server grants in the end: {second:?}");
    replica.stop();
    rec.events()
}

#[test]
fn without_a_grace_a_promoted_replica_grants_a_lock_whose_grant_it_never_saw() {
    let events = failover_losing_a_grant(0);
    let violations = check(&events);
    assert!(
        !violations.is_empty(),
        "without a grace the two grants overlap (the failure the grace is for):\n{}",
        history::render(&events, &violations, 10)
    );
}

#[test]
fn with_a_grace_of_the_lease_the_lost_grant_ends_before_the_next() {
    let events = failover_losing_a_grant(LEASE_MS + 500);
    history::assert_clean(&events, "a failover that lost a grant, with a takeover grace");
}

/// During the grace: a plain acquire answers nil and changes nothing, a waiting one waits
/// and is served when it ends, extends and releases of held locks work; `INFO` shows the
/// time left.
#[test]
fn during_the_grace_only_waiting_acquires_get_in_and_only_when_it_ends() {
    let master = Server::new();
    let replica = Server::start_replica_of(&master, &["fencelock.takeover-grace 4000"]);
    await_sync(&master, &replica);
    await_streaming(&master);
    let mut m = master.conn();
    let held = acquire(&mut m, "held", "holder", LONG_TTL).unwrap();
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut m).unwrap();

    let mut r = replica.conn();
    promote(&mut r);
    let left = |r: &mut redis::Connection| module_stat(r, "takeover_grace_left_ms");
    assert!(left(&mut r) > 0, "the grace began at the promotion");
    let mut waiter = Waiter::lock(&replica, "free", "waiter", LONG_TTL, 30_000);
    await_lock_waiters(&mut r, "free", 1);
    assert_eq!(acquire(&mut r, "other", "plain", LONG_TTL), None, "a plain acquire answers nil");
    assert!(!exists(&mut r, "other"), "and leaves nothing behind");
    assert_eq!(int(&mut r, &["LOCK.EXTEND", "held", "holder", "60000"]), 1, "the holder extends");
    assert!(left(&mut r) > 0, "all of the above happened during the grace");
    assert_eq!(lock_info(&mut r, "free").map_or(0, |i| i.waiters), 1, "the waiter still waits");

    let token = waiter.granted();
    assert_eq!(left(&mut r), 0, "the waiter was served when the grace ended");
    assert!(token > held, "its token is above the last one the old master issued");
    assert_eq!(release(&mut r, "held", "holder"), 1, "the holder releases");
}

/// A restart that may have lost grants (no AOF fsynced always) has the grace too; one
/// with `appendfsync always` has none.
#[test]
fn a_start_from_data_that_may_miss_grants_has_the_grace_and_one_fsynced_always_has_not() {
    let mut lossy = Server::start(&["fencelock.takeover-grace 60000", "appendonly yes", "appendfsync everysec"]);
    let mut c = lossy.conn();
    assert!(module_stat(&mut c, "takeover_grace_left_ms") > 0);
    assert_eq!(acquire(&mut c, "k", "a", LONG_TTL), None, "no grant during the grace");
    lossy.stop();

    let mut safe = Server::start(&["fencelock.takeover-grace 60000", "appendonly yes", "appendfsync always"]);
    let mut c = safe.conn();
    assert_eq!(module_stat(&mut c, "takeover_grace_left_ms"), 0);
    assert!(acquire(&mut c, "k", "a", LONG_TTL).is_some(), "nothing acknowledged can be lost: no grace");
    safe.stop();
}
