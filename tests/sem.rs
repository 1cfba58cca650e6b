//! The counting semaphore: SEM.ACQUIRE, SEM.RELEASE, SEM.EXTEND and SEM.INFO against the
//! contract (permits up to the limit, each holder with its own token and lease, the
//! stated limit, reentry, arrival order where a large request blocks later small ones,
//! several waiters granted in one pass, handoffs by release, lease end, DEL, UNLINK,
//! FLUSHALL and an expired key), tokens, errors, WRONGTYPE, MULTI/EVAL and a replica.
//! (Durability and replication of the state are in `durability.rs` and `replication.rs`,
//! with the other lock kinds; bad input in the `chaos_*` suites.)
//!
//! Blocking acquires run on their own connection (`support::Waiter`); that a waiter is
//! queued is awaited through `SEM.INFO`'s `waiters` (or `INFO clients` where nobody may
//! touch the key), never with a fixed sleep.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use support::*;

/// `SEM.ACQUIRE key ...`: the raw reply.
fn sem(c: &mut redis::Connection, args: &[&str]) -> Value {
    let mut cmd = vec!["SEM.ACQUIRE"];
    cmd.extend_from_slice(args);
    raws(c, &cmd)
}

/// The token of a raw acquire reply that must be a grant.
#[track_caller]
fn token_of(v: &Value, what: &str) -> i64 {
    match v {
        Value::Int(t) if *t > 0 => *t,
        other => panic!("{what}: expected a token, got {other:?}"),
    }
}

/// The state of a semaphore did not change: same limit, available permits, holders,
/// permits, tokens, holds and waiters; no lease got longer (or much shorter).
#[track_caller]
fn assert_unchanged(before: &Option<SemInfo>, after: &Option<SemInfo>, what: &str) {
    match (before, after) {
        (None, None) => {}
        (Some(b), Some(a)) => {
            assert_eq!((a.limit, a.available, a.waiters), (b.limit, b.available, b.waiters), "{what}: {a:?} was {b:?}");
            assert_eq!(a.who(), b.who(), "{what}: holders changed");
            for h in &b.holders {
                let n = a.holder(&String::from_utf8_lossy(&h.owner));
                assert_eq!((n.permits, n.token, n.holds), (h.permits, h.token, h.holds), "{what}: {n:?} was {h:?}");
                assert!(n.ttl <= h.ttl, "{what}: lease of {n:?} got longer (was {})", h.ttl);
                assert!(n.ttl > h.ttl - 30_000, "{what}: lease of {n:?} shortened (was {})", h.ttl);
            }
        }
        (b, a) => panic!("{what}: state changed from {b:?} to {a:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Permits, holders, tokens
// ---------------------------------------------------------------------------------------

#[test]
fn permits_are_granted_up_to_the_limit_each_holder_with_its_own_token_and_lease() {
    let s = Server::new();
    let mut c = s.conn();
    let ta = sem_grant(&mut c, "sem", "a", 5, 2, 100_000);
    let tb = sem_grant(&mut c, "sem", "b", 5, 1, 300_000);
    // Without COUNT: one permit.
    let tc = token_of(&sem(&mut c, &["sem", "c", "5", &LONG_TTL.to_string()]), "SEM.ACQUIRE without COUNT");
    assert!(ta < tb && tb < tc, "tokens {ta}, {tb}, {tc} do not increase");
    assert_eq!(key_type(&mut c, "sem"), "locksemph");
    assert_eq!(pttl(&mut c, "sem"), -1, "the leases must not be a Redis TTL");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.limit, i.available, i.waiters), (5, 1, 0), "{i:?}");
    assert_eq!(i.who(), owners(&["a", "b", "c"]));
    for (owner, permits, token, ttl) in [("a", 2, ta, 100_000), ("b", 1, tb, 300_000), ("c", 1, tc, LONG_TTL)] {
        let h = i.holder(owner);
        assert_eq!((h.permits, h.token, h.holds), (permits, token, 1), "{owner}");
        assert!(h.ttl <= ttl && h.ttl > ttl - 10_000, "{owner}: ttl {} for a lease of {ttl}", h.ttl);
    }
    // One permit is left: two are refused, one is granted, then none is left.
    assert_eq!(sem_acquire(&mut c, "sem", "d", 5, 2, LONG_TTL), None);
    let td = sem_grant(&mut c, "sem", "d", 5, 1, LONG_TTL);
    assert!(td > tc);
    assert_eq!(sem_acquire(&mut c, "sem", "e", 5, 1, LONG_TTL), None);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.available, i.waiters, i.who()), (0, 0, owners(&["a", "b", "c", "d"])));
    assert_eq!(sem_release(&mut c, "sem", "e"), 0, "a refused acquire holds nothing");
    // A release gives back that holder's permits, and only those.
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.available, i.who()), (2, owners(&["b", "c", "d"])));
    for (owner, token) in [("b", tb), ("c", tc), ("d", td)] {
        assert_eq!((i.holder(owner).token, i.holder(owner).holds), (token, 1), "{owner}");
    }
    let te = sem_grant(&mut c, "sem", "e", 5, 2, LONG_TTL);
    assert!(te > td);
    assert_eq!(sem_held(&mut c, "sem").available, 0);
    // The largest limit, all of it held by one owner.
    let tbig = sem_grant(&mut c, "big", "all", MAX_LIMIT, MAX_LIMIT, LONG_TTL);
    let i = sem_held(&mut c, "big");
    assert_eq!((i.limit, i.available, i.holder("all").permits, i.holder("all").token), (MAX_LIMIT, 0, MAX_LIMIT, tbig));
    assert_eq!(sem_acquire(&mut c, "big", "x", MAX_LIMIT, 1, LONG_TTL), None);
    assert_eq!(sem_release(&mut c, "big", "all"), 1);
    assert!(!exists(&mut c, "big"));
}

#[test]
fn each_holders_lease_ends_on_its_own() {
    let s = Server::new();
    let mut c = s.conn();
    let tlong = sem_grant(&mut c, "sem", "long", 3, 1, LONG_TTL);
    sem_grant(&mut c, "sem", "short", 3, 2, 300);
    assert_eq!(sem_acquire(&mut c, "sem", "x", 3, 2, LONG_TTL), None);
    // The server ends the short lease by itself: its key's value changes with nobody
    // running a command of ours on it.
    let d0 = digest_value(&mut c, "sem");
    wait_until(PATIENCE, "the short lease ended", || digest_value(&mut c, "sem") != d0);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available), (owners(&["long"]), 2));
    assert_eq!((i.holder("long").token, i.holder("long").holds), (tlong, 1));
    assert!(i.holder("long").ttl > LONG_TTL - 10_000);
    assert_eq!(sem_release(&mut c, "sem", "short"), 0, "a lease that ended holds nothing");
    // Its permits are free for anyone.
    let tx = sem_grant(&mut c, "sem", "x", 3, 2, LONG_TTL);
    assert!(tx > tlong);
}

#[test]
fn tokens_strictly_increase_across_release_expiry_del_flush_and_a_new_semaphore() {
    let s = Server::new();
    let mut c = s.conn();
    let mut last = 0;
    let mut fresh = |c: &mut redis::Connection, owner: &str, limit: i64, permits: i64, ttl: i64, what: &str| {
        let t = sem_grant(c, "sem", owner, limit, permits, ttl);
        assert!(t > last, "{what}: token {t} not above {last}");
        last = t;
        t
    };
    fresh(&mut c, "a", 3, 1, LONG_TTL, "first grant");
    fresh(&mut c, "b", 3, 2, LONG_TTL, "second holder");
    // Released to free: no key; a new semaphore under the name, with another limit.
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    assert_eq!(sem_release(&mut c, "sem", "b"), 1);
    assert!(!exists(&mut c, "sem"));
    fresh(&mut c, "a", 7, 7, LONG_TTL, "after release, limit 7");
    assert_eq!(sem_held(&mut c, "sem").limit, 7);
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    // Lease end, by the server, nobody touching the key.
    fresh(&mut c, "d", 7, 3, 100, "short lease");
    wait_until(PATIENCE, "the lease ended and the key went", || !exists(&mut c, "sem"));
    fresh(&mut c, "e", 2, 1, LONG_TTL, "after lease end");
    // Every way the key goes.
    for gone in [&["DEL", "sem"][..], &["UNLINK", "sem"], &["FLUSHALL"], &["FLUSHALL", "ASYNC"], &["FLUSHDB"]] {
        ok(&mut c, gone);
        assert!(!exists(&mut c, "sem"), "{gone:?}");
        fresh(&mut c, "f", 4, 2, LONG_TTL, &format!("after {gone:?}"));
    }
    // Many grants in one pipeline (the same millisecond): still strictly increasing.
    let mut p = redis::pipe();
    for i in 0..100 {
        p.cmd("SEM.ACQUIRE").arg("many").arg(format!("o{i}")).arg(100).arg(LONG_TTL);
    }
    let tokens: Vec<i64> = p.query(&mut c).expect("pipelined grants");
    for pair in tokens.windows(2) {
        assert!(pair[1] > pair[0], "tokens in one pipeline do not increase: {} then {}", pair[0], pair[1]);
    }
    let i = sem_held(&mut c, "many");
    assert_eq!((i.holders.len(), i.available), (100, 0));
}

#[test]
fn reentry_with_the_same_permits_keeps_the_token_adds_a_hold_and_resets_the_lease() {
    let s = Server::new();
    let mut c = s.conn();
    let t = sem_grant(&mut c, "sem", "a", 4, 2, 100_000);
    let tb = sem_grant(&mut c, "sem", "b", 4, 1, LONG_TTL);
    assert_eq!(sem_acquire(&mut c, "sem", "a", 4, 2, 500_000), Some(t));
    let i = sem_held(&mut c, "sem");
    let h = i.holder("a");
    assert_eq!((h.token, h.holds, h.permits, i.available), (t, 2, 2, 1), "reentry takes no more permits: {i:?}");
    assert!(h.ttl > 100_000 && h.ttl <= 500_000, "lease not reset to 500000: {}", h.ttl);
    // Reset, not max: a shorter ttl shortens the lease.
    assert_eq!(sem_acquire(&mut c, "sem", "a", 4, 2, 50_000), Some(t));
    let h = sem_held(&mut c, "sem").holder("a").clone();
    assert_eq!((h.token, h.holds), (t, 3));
    assert!(h.ttl <= 50_000, "lease not reset to 50000: {}", h.ttl);
    // Other permits: an error that names the permits held, and nothing changes.
    let before = sem_info(&mut c, "sem");
    let ttl = LONG_TTL.to_string();
    for extra in [&["COUNT", "1"][..], &["COUNT", "3"], &[], &["COUNT", "4"], &["COUNT", "1", "WAIT", "0"], &["WAIT", "0", "COUNT", "3"]]
    {
        let mut args = vec!["sem", "a", "4", &ttl];
        args.extend_from_slice(extra);
        let started = Instant::now();
        assert_eq!(value_err(&sem(&mut c, &args)), Some(owner_holds(2)), "{args:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{args:?} blocked");
    }
    assert_unchanged(&before, &sem_info(&mut c, "sem"), "reentry with other permits");
    // Reentry is granted even while others wait.
    sem_grant(&mut c, "sem", "c", 4, 1, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "w", 4, 2, LONG_TTL, 0, 1);
    assert_eq!(sem_acquire(&mut c, "sem", "a", 4, 2, LONG_TTL), Some(t), "reentry while another waits");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.holder("a").holds, i.available, i.waiters), (4, 0, 1));
    assert!(i.holder("a").ttl > LONG_TTL - 10_000);
    w.assert_still_blocked();
    // Holds count down; the permits come back only at zero, and then the waiter gets them.
    for left in [3, 2, 1] {
        assert_eq!(sem_release(&mut c, "sem", "a"), 1);
        let i = sem_held(&mut c, "sem");
        assert_eq!((i.holder("a").holds, i.holder("a").token, i.available, i.waiters), (left, t, 0, 1));
        w.assert_still_blocked();
    }
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    let tw = w.granted();
    assert!(tw > tb, "token {tw} of the waiter not above {tb}");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["b", "c", "w"]), 0, 0));
    assert_eq!(sem_release(&mut c, "sem", "a"), 0);
    assert_eq!(blocked_clients(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// The limit and the permits
// ---------------------------------------------------------------------------------------

#[test]
fn another_limit_is_refused_while_held_or_waited_on_and_a_free_name_takes_any_limit() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    let ta = sem_grant(&mut c, "sem", "a", 3, 1, LONG_TTL);
    let before = sem_info(&mut c, "sem");
    let ttl = LONG_TTL.to_string();
    for (owner, limit, extra) in [
        ("b", "4", &[][..]),
        ("b", "2", &[]),
        ("b", "1", &["COUNT", "1"]),
        ("b", "2147483648", &[]),
        ("b", "4", &["WAIT", "0"]),
        ("b", "4", &["COUNT", "2", "WAIT", "100"]),
        // The holder itself.
        ("a", "4", &[]),
        ("a", "2", &["COUNT", "1"]),
    ] {
        let mut args = vec!["sem", owner, limit, &ttl];
        args.extend_from_slice(extra);
        let started = Instant::now();
        assert_eq!(value_err(&sem(&mut c, &args)), Some(limit_mismatch(3)), "{args:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{args:?} blocked");
    }
    assert_unchanged(&before, &sem_info(&mut c, "sem"), "acquires with another limit");
    assert_eq!(blocked_clients(&mut c), 0);
    // While others wait and nobody holds (in between, in one transaction).
    sem_grant(&mut c, "sem", "b", 3, 2, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "w", 3, 3, LONG_TTL, 0, 1);
    ok(&mut c, &["MULTI"]);
    for args in [
        &["SEM.RELEASE", "sem", "a"][..],
        &["SEM.RELEASE", "sem", "b"],
        &["SEM.INFO", "sem"],
        &["SEM.ACQUIRE", "sem", "x", "4", "600000"],
        &["SEM.ACQUIRE", "sem", "x", "3", "600000"],
    ] {
        ok(&mut c, args);
    }
    let Value::Array(items) = raws(&mut c, &["EXEC"]) else { panic!("EXEC") };
    assert_eq!(&items[..2], &[Value::Int(1), Value::Int(1)], "{items:?}");
    let mid = parse_sem_info(&items[2]).expect("SEM.INFO of a free semaphore with a waiter is not nil");
    assert_eq!((mid.limit, mid.available, mid.holders.len(), mid.waiters), (3, 3, 0, 1), "{mid:?}");
    assert_eq!(value_err(&items[3]), Some(limit_mismatch(3)), "another limit while a client waits: {items:?}");
    assert_eq!(items[4], Value::Nil, "a newcomer took permits freed for a waiter: {items:?}");
    let tw = w.granted();
    assert!(tw > ta);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.limit, i.who(), i.available), (3, owners(&["w"]), 0));
    // Free again, the name takes any limit: a free semaphore leaves no key.
    assert_eq!(sem_release(&mut c, "sem", "w"), 1);
    assert!(!exists(&mut c, "sem"));
    let t10 = sem_grant(&mut c, "sem", "c", 10, 10, LONG_TTL);
    assert!(t10 > tw);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.limit, i.available), (10, 0));
    assert_eq!(value_err(&sem(&mut c, &["sem", "d", "3", "1000"])), Some(limit_mismatch(10)));
    assert_eq!(sem_release(&mut c, "sem", "c"), 1);
    assert!(sem_grant(&mut c, "sem", "d", 1, 1, LONG_TTL) > t10);
    assert_eq!(sem_held(&mut c, "sem").limit, 1);
}

#[test]
fn permits_above_the_limit_are_refused_and_change_nothing() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    let ttl = LONG_TTL.to_string();
    let over = (MAX_LIMIT + 1).to_string();
    let max = MAX_LIMIT.to_string();
    for (limit, count) in [("3", "4"), ("1", "2"), ("3", "100"), (max.as_str(), over.as_str())] {
        for extra in [&[][..], &["WAIT", "0"]] {
            let mut args = vec!["free", "x", limit, &ttl, "COUNT", count];
            args.extend_from_slice(extra);
            assert_eq!(value_err(&sem(&mut c, &args)), Some(PERMITS_EXCEED.to_string()), "{args:?}");
        }
    }
    assert!(!exists(&mut c, "free"), "a refused acquire created the key");
    // On a held semaphore.
    let t = sem_grant(&mut c, "sem", "a", 3, 1, LONG_TTL);
    let before = sem_info(&mut c, "sem");
    for count in ["4", "100", max.as_str()] {
        for extra in [&[][..], &["WAIT", "0"]] {
            let mut args = vec!["sem", "x", "3", &ttl, "COUNT", count];
            args.extend_from_slice(extra);
            let started = Instant::now();
            assert_eq!(value_err(&sem(&mut c, &args)), Some(PERMITS_EXCEED.to_string()), "{args:?}");
            assert!(started.elapsed() < Duration::from_secs(2), "{args:?} blocked");
        }
        // The holder asking for more than the limit: an error either way.
        let e = value_err(&sem(&mut c, &["sem", "a", "3", &ttl, "COUNT", count])).expect("an error");
        assert!(e == PERMITS_EXCEED || e == owner_holds(1), "holder asking {count} of 3 answered {e}");
    }
    assert_unchanged(&before, &sem_info(&mut c, "sem"), "acquires of more permits than the limit");
    assert_eq!(blocked_clients(&mut c), 0);
    // All of the limit is fine.
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    assert!(sem_grant(&mut c, "sem", "x", 3, 3, LONG_TTL) > t);
}

const BAD_TTLS: [&str; 10] =
    ["0", "-1", "1099511627777", "abc", "", "1.5", " 5", "9223372036854775808", "-9223372036854775808", "1e3"];
const BAD_LIMITS: [&str; 13] =
    ["0", "-1", "2147483649", "4294967296", "abc", "", "1.5", " 3", "3 ", "03", "1e3", "9223372036854775808", "-2147483648"];
const BAD_COUNTS: [&str; 8] = ["0", "-1", "abc", "", "1.5", "01", "9223372036854775808", "-9223372036854775808"];

#[test]
fn bad_arguments_answer_errors_and_change_nothing() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    sem_grant(&mut c, "held", "h", 3, 2, 100_000);
    let before = sem_info(&mut c, "held");
    let targets = [("free", "x"), ("held", "h"), ("held", "x")];
    // Options that must not hide an error in front of them.
    let tails: [&[&str]; 4] = [&[], &["WAIT", "0"], &["COUNT", "1"], &["COUNT", "1", "WAIT", "0"]];
    for limit in BAD_LIMITS {
        for (key, owner) in targets {
            for tail in tails {
                let mut args = vec!["SEM.ACQUIRE", key, owner, limit, "1000"];
                args.extend_from_slice(tail);
                assert_err_at_once(&mut c, &args, Some(BAD_LIMIT));
            }
        }
    }
    for count in BAD_COUNTS {
        for (key, owner) in targets {
            assert_err_at_once(&mut c, &["SEM.ACQUIRE", key, owner, "3", "1000", "COUNT", count], Some(BAD_PERMITS));
            assert_err_at_once(&mut c, &["SEM.ACQUIRE", key, owner, "3", "1000", "COUNT", count, "WAIT", "0"], Some(BAD_PERMITS));
            assert_err_at_once(&mut c, &["SEM.ACQUIRE", key, owner, "3", "1000", "WAIT", "0", "COUNT", count], Some(BAD_PERMITS));
        }
    }
    for ttl in BAD_TTLS {
        for (key, owner) in targets {
            for tail in tails {
                let mut args = vec!["SEM.ACQUIRE", key, owner, "3", ttl];
                args.extend_from_slice(tail);
                assert_err_at_once(&mut c, &args, Some(BAD_TTL));
            }
        }
        for (key, owner) in [("free", "x"), ("held", "h")] {
            assert_err_at_once(&mut c, &["SEM.EXTEND", key, owner, ttl], Some(BAD_TTL));
        }
    }
    // Empty owner.
    for key in ["free", "held"] {
        for tail in tails {
            let mut args = vec!["SEM.ACQUIRE", key, "", "3", "1000"];
            args.extend_from_slice(tail);
            assert_err_at_once(&mut c, &args, Some(EMPTY_OWNER));
        }
    }
    for args in [&["SEM.RELEASE", "held", ""][..], &["SEM.EXTEND", "held", "", "1000"]] {
        // The error, or 0 (nobody can hold as ""), but never a change.
        let v = raws(&mut c, args);
        match value_err(&v) {
            Some(e) => assert_eq!(e, EMPTY_OWNER, "{args:?}"),
            None => assert_eq!(v, Value::Int(0), "{args:?}"),
        }
    }
    // Unknown, malformed and repeated options: a syntax error.
    for (key, owner) in targets {
        for extra in [
            &["FOO"][..],
            &["FOO", "1"],
            &["NX"],
            &["WAITX", "10"],
            &["COUNTS", "1"],
            &["1000"],
            &["WAIT"],
            &["COUNT"],
            &["COUNT", "1", "WAIT"],
            &["WAIT", "10", "COUNT"],
            &["COUNT", "1", "COUNT", "1"],
            &["count", "1", "COUNT", "2"],
            &["WAIT", "0", "WAIT", "0"],
            &["WAIT", "0", "wait", "10"],
            &["COUNT", "1", "FOO", "1"],
            &["FOO", "1", "COUNT", "1"],
        ] {
            let mut args = vec!["SEM.ACQUIRE", key, owner, "3", "1000"];
            args.extend_from_slice(extra);
            assert_err_at_once(&mut c, &args, Some(SYNTAX));
        }
        // More words than the syntax has room for: a syntax or arity error (the contract
        // names neither), never a change and never a wait.
        for extra in [&["COUNT", "1", "WAIT", "0", "FOO"][..], &["WAIT", "0", "COUNT", "1", "WAIT", "0"]] {
            let mut args = vec!["SEM.ACQUIRE", key, owner, "3", "1000"];
            args.extend_from_slice(extra);
            assert_err_at_once(&mut c, &args, None);
        }
        // A bad WAIT timeout: an error (the contract leaves its text open), no blocking.
        for timeout in ["-1", "abc", "1.5", ""] {
            assert_err_at_once(&mut c, &["SEM.ACQUIRE", key, owner, "3", "1000", "WAIT", timeout], None);
            assert_err_at_once(&mut c, &["SEM.ACQUIRE", key, owner, "3", "1000", "COUNT", "1", "WAIT", timeout], None);
        }
    }
    // Arity: Redis's standard error, naming the command.
    let arity: &[&[&str]] = &[
        &["SEM.ACQUIRE"],
        &["SEM.ACQUIRE", "held"],
        &["SEM.ACQUIRE", "held", "h"],
        &["SEM.ACQUIRE", "held", "h", "3"],
        &["SEM.RELEASE"],
        &["SEM.RELEASE", "held"],
        &["SEM.RELEASE", "held", "h", "extra"],
        &["SEM.EXTEND"],
        &["SEM.EXTEND", "held"],
        &["SEM.EXTEND", "held", "h"],
        &["SEM.EXTEND", "held", "h", "1000", "extra"],
        &["SEM.INFO"],
        &["SEM.INFO", "held", "extra"],
    ];
    for args in arity {
        let e = err(&mut c, args);
        let name = args[0].to_lowercase();
        assert_eq!(e, format!("ERR wrong number of arguments for '{name}' command"), "{args:?}");
    }
    // Options are case-insensitive and go in any order (well-formed calls for contrast).
    for extra in [&["count", "1", "wait", "0"][..], &["Wait", "0", "Count", "1"]] {
        let mut args = vec!["SEM.ACQUIRE", "held", "h", "3", "100000"];
        args.extend_from_slice(extra);
        let e = err(&mut c, &args);
        assert_eq!(e, owner_holds(2), "{args:?}: the holder of 2 permits asking 1");
    }
    // Nothing changed.
    assert_unchanged(&before, &sem_info(&mut c, "held"), "after bad arguments");
    assert!(!exists(&mut c, "free"), "a rejected command created the key");
    assert_eq!(dbsize(&mut c), 1);
    assert_eq!(blocked_clients(&mut c), 0);
    assert_eq!(sem_release(&mut c, "held", "h"), 1);
    assert_eq!(sem_release(&mut c, "held", "h"), 0);
    assert_eq!(dbsize(&mut c), 0);
}

#[test]
fn wrongtype_both_ways_changes_nothing_and_never_blocks() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    let tm = grant(&mut c, "mutex", "alice", LONG_TTL);
    let tr = rgrant(&mut c, "rw", "alice", LONG_TTL);
    let f = fence_next(&mut c, "fence");
    ok(&mut c, &["SET", "str", "value"]);
    let ts = sem_grant(&mut c, "sem", "alice", 3, 3, LONG_TTL);
    assert_eq!(key_type(&mut c, "sem"), "locksemph");
    let mut cases: Vec<Vec<&str>> = vec![];
    for k in ["mutex", "rw", "fence", "str"] {
        cases.push(vec!["SEM.ACQUIRE", k, "bob", "3", "1000"]);
        cases.push(vec!["SEM.ACQUIRE", k, "bob", "3", "1000", "WAIT", "0"]);
        cases.push(vec!["SEM.ACQUIRE", k, "alice", "3", "1000", "COUNT", "2", "WAIT", "0"]);
        cases.push(vec!["SEM.RELEASE", k, "alice"]);
        cases.push(vec!["SEM.EXTEND", k, "alice", "1000"]);
        cases.push(vec!["SEM.INFO", k]);
    }
    for cmd in [
        &["LOCK.ACQUIRE", "sem", "bob", "1000"][..],
        &["LOCK.ACQUIRE", "sem", "bob", "1000", "WAIT", "0"],
        &["LOCK.ACQUIRE", "sem", "alice", "1000"],
        &["LOCK.RELEASE", "sem", "alice"],
        &["LOCK.EXTEND", "sem", "alice", "1000"],
        &["LOCK.INFO", "sem"],
        &["RWLOCK.RLOCK", "sem", "bob", "1000"],
        &["RWLOCK.WLOCK", "sem", "bob", "1000", "WAIT", "0"],
        &["RWLOCK.RUNLOCK", "sem", "alice"],
        &["RWLOCK.WUNLOCK", "sem", "alice"],
        &["RWLOCK.EXTEND", "sem", "alice", "1000"],
        &["RWLOCK.INFO", "sem"],
        &["FENCE.NEXT", "sem"],
        &["FENCE.CHECK", "sem", "1"],
        &["FENCE.CURRENT", "sem"],
        &["GET", "sem"],
        &["LPUSH", "sem", "x"],
    ] {
        cases.push(cmd.to_vec());
    }
    for args in &cases {
        let e = assert_err_at_once(&mut c, args, None);
        assert!(e.starts_with("WRONGTYPE"), "{args:?} answered {e:?}");
    }
    assert_eq!(blocked_clients(&mut c), 0);
    assert_eq!(key_type(&mut c, "sem"), "locksemph");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["alice"]), 0, 0));
    assert_eq!((i.holder("alice").token, i.holder("alice").holds, i.holder("alice").permits), (ts, 1, 3));
    let m = held(&mut c, "mutex");
    assert_eq!((m.owner_str(), m.token, m.holds), ("alice".to_string(), tm, 1));
    let r = rw_held(&mut c, "rw");
    assert_eq!((r.who(), r.holder("alice", "read").token, r.holder("alice", "read").holds), (who(&[("alice", "read")]), tr, 1));
    assert_eq!(fence_current(&mut c, "fence"), f);
    assert_eq!(ok(&mut c, &["GET", "str"]), Value::BulkString(b"value".to_vec()));
    assert_eq!(dbsize(&mut c), 5);
}

// ---------------------------------------------------------------------------------------
// SEM.RELEASE, SEM.EXTEND
// ---------------------------------------------------------------------------------------

#[test]
fn release_and_extend_answer_1_for_a_holder_and_0_for_anyone_else() {
    let s = Server::new();
    let mut c = s.conn();
    // A name nobody holds: 0, and no key.
    assert_eq!(sem_release(&mut c, "sem", "a"), 0);
    assert_eq!(sem_extend(&mut c, "sem", "a", LONG_TTL), 0);
    assert!(!exists(&mut c, "sem"), "SEM.RELEASE or SEM.EXTEND of a free name created its key");
    let t = sem_grant(&mut c, "sem", "a", 3, 2, 100_000);
    assert_eq!(sem_release(&mut c, "sem", "b"), 0);
    assert_eq!(sem_extend(&mut c, "sem", "b", LONG_TTL), 0);
    assert!(sem_held(&mut c, "sem").get("b").is_none(), "SEM.EXTEND made a holder");
    // Extend: a fresh lease of ttl from now, longer or shorter; nothing else changes.
    assert_eq!(sem_extend(&mut c, "sem", "a", 200_000), 1);
    let i = sem_held(&mut c, "sem");
    let h = i.holder("a");
    assert_eq!((h.token, h.holds, h.permits, i.available), (t, 1, 2, 1));
    assert!(h.ttl > 190_000 && h.ttl <= 200_000, "ttl {} after SEM.EXTEND 200000", h.ttl);
    assert_eq!(sem_extend(&mut c, "sem", "a", 5_000), 1);
    let h = sem_held(&mut c, "sem").holder("a").clone();
    assert!(h.ttl <= 5_000, "ttl {} after SEM.EXTEND 5000 (reset, not max)", h.ttl);
    assert_eq!((h.token, h.holds), (t, 1));
    // A lease cut short ends by itself; then neither release nor extend finds a holder.
    assert_eq!(sem_extend(&mut c, "sem", "a", 1), 1);
    wait_until(PATIENCE, "the shortened lease ended and the key went", || !exists(&mut c, "sem"));
    assert_eq!(sem_release(&mut c, "sem", "a"), 0);
    assert_eq!(sem_extend(&mut c, "sem", "a", LONG_TTL), 0);
    assert!(!exists(&mut c, "sem"));
    assert!(sem_grant(&mut c, "sem", "b", 3, 3, LONG_TTL) > t);
}

// ---------------------------------------------------------------------------------------
// SEM.INFO
// ---------------------------------------------------------------------------------------

#[test]
fn info_reports_limit_available_holders_and_waiters_and_is_a_map_under_resp3() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(raws(&mut c, &["SEM.INFO", "free"]), Value::Nil);
    assert_eq!(dbsize(&mut c), 0, "SEM.INFO created a key");
    let t = sem_grant(&mut c, "sem", "worker-1:4242", 5, 2, 30_000);
    let v = raws(&mut c, &["SEM.INFO", "sem"]);
    let m = pairs(&v);
    assert_eq!(field_names(&m), ["available", "holders", "limit", "waiters"], "SEM.INFO fields: {v:?}");
    assert_eq!((m["limit"].clone(), m["available"].clone(), m["waiters"].clone()), (Value::Int(5), Value::Int(3), Value::Int(0)));
    let Value::Array(hs) = &m["holders"] else { panic!("holders is not an array: {v:?}") };
    assert_eq!(hs.len(), 1);
    let h = pairs(&hs[0]);
    assert_eq!(field_names(&h), ["holds", "owner", "permits", "token", "ttl"], "holder fields: {v:?}");
    assert_eq!(h["owner"], Value::BulkString(b"worker-1:4242".to_vec()));
    assert_eq!((h["permits"].clone(), h["token"].clone(), h["holds"].clone()), (Value::Int(2), Value::Int(t), Value::Int(1)));
    let ttl = value_int(&h["ttl"]).expect("ttl integer");
    assert!(ttl > 20_000 && ttl <= 30_000, "ttl {ttl} not in (20000, 30000]");
    let_time_pass(30);
    let later = sem_held(&mut c, "sem").holder("worker-1:4242").ttl;
    assert!(later < ttl && later > 0, "ttl did not count down: {ttl} then {later}");
    // Waiters are counted.
    sem_grant(&mut c, "sem", "other", 5, 3, LONG_TTL);
    let w = queue_sem(&s, &mut c, "sem", "w", 5, 1, LONG_TTL, 0, 1);
    let w2 = queue_sem(&s, &mut c, "sem", "w2", 5, 4, LONG_TTL, 0, 2);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.limit, i.available, i.waiters, i.who()), (5, 0, 2, owners(&["other", "worker-1:4242"])));
    w.close();
    w2.close();
    await_sem_waiters(&mut c, "sem", 0);
    // A binary owner is kept exactly.
    let owner: &[u8] = b"\x00own\xff\r\ner \x00";
    let tb = value_int(&raw(&mut c, &[b"SEM.ACQUIRE", b"bin", owner, b"2", b"600000"])).expect("granted");
    let i = parse_sem_info(&raw(&mut c, &[b"SEM.INFO", b"bin"])).unwrap();
    assert_eq!(i.holders.len(), 1);
    assert_eq!((i.holders[0].owner.as_slice(), i.holders[0].token, i.holders[0].permits), (owner, tb, 1));
    assert_eq!(raw(&mut c, &[b"SEM.RELEASE", b"bin", b"\x00own"]), Value::Int(0));
    assert_eq!(raw(&mut c, &[b"SEM.RELEASE", b"bin", owner]), Value::Int(1));
    assert_eq!(raws(&mut c, &["SEM.INFO", "bin"]), Value::Nil);
    // RESP3: maps, inside too.
    let mut c3 = s.conn_resp3();
    let t3 = sem_grant(&mut c3, "s3", "alice", 4, 3, LONG_TTL);
    let v = raws(&mut c3, &["SEM.INFO", "s3"]);
    assert_info_maps(&v, "SEM.INFO");
    let i = parse_sem_info(&v).unwrap();
    assert_eq!((i.limit, i.available, i.waiters, i.who()), (4, 1, 0, owners(&["alice"])));
    assert_eq!((i.holder("alice").token, i.holder("alice").permits), (t3, 3));
    assert_eq!(raws(&mut c3, &["SEM.INFO", "free"]), Value::Nil);
}

#[test]
fn info_reports_a_lease_past_its_deadline_as_over_before_the_server_ends_it() {
    let s = Server::new();
    let mut c = s.conn();
    let tlong = sem_grant(&mut c, "sem", "long", 3, 1, LONG_TTL);
    sem_grant(&mut c, "sem", "short", 3, 2, 400);
    // The short deadline is at most 400 ms after this.
    let deadline = now_ms() + 400;
    // Paused for writes, the server ends no lease (it could not propagate the end)...
    ok(&mut c, &["CLIENT", "PAUSE", "10000", "WRITE"]);
    let d0 = digest_value(&mut c, "sem");
    wait_until(PATIENCE, "the short deadline passed", || now_ms() > deadline + 50);
    // ...but reads report the lease as over, its permits free.
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.holder("long").token), (owners(&["long"]), 2, tlong), "{i:?}");
    assert_eq!(digest_value(&mut c, "sem"), d0, "the server ended a lease while paused for writes");
    ok(&mut c, &["CLIENT", "UNPAUSE"]);
    wait_until(PATIENCE, "the server ended the lease after the pause", || digest_value(&mut c, "sem") != d0);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available), (owners(&["long"]), 2));
    assert_eq!(sem_release(&mut c, "sem", "short"), 0);
}

// ---------------------------------------------------------------------------------------
// Waiting: time-outs, arrival order, several at once, leaving the queue
// ---------------------------------------------------------------------------------------

#[test]
fn wait_timeout_answers_nil_after_the_timeout_and_the_waiter_leaves_the_queue() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = sem_grant(&mut c, "sem", "holder", 2, 2, LONG_TTL);
    let mut short = queue_sem(&s, &mut c, "sem", "short", 2, 1, LONG_TTL, 300, 1);
    let mut long = queue_sem(&s, &mut c, "sem", "long", 2, 1, LONG_TTL, 20_000, 2);
    assert_eq!(short.reply(), Reply::Nil, "a timed-out SEM.ACQUIRE answers nil");
    let took = short.sent.elapsed();
    assert!(took >= Duration::from_millis(295), "timed out after {took:?}, before its 300 ms");
    assert!(took < Duration::from_secs(5), "took {took:?} to time out after 300 ms");
    // Gone from the queue already when it answered.
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.waiters), (owners(&["holder"]), 1));
    assert_eq!(blocked_clients(&mut c), 1);
    long.assert_still_blocked();
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    let t = long.granted();
    assert!(t > t0);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["long"]), 1, 0));
    assert!(short.raw.nothing_received(), "the timed-out waiter got a second reply");
    assert_eq!(sem_release(&mut c, "sem", "short"), 0);
    // The only waiter times out: a later release leaves nothing behind.
    sem_grant(&mut c, "sem", "other", 2, 1, LONG_TTL);
    let mut only = queue_sem(&s, &mut c, "sem", "only", 2, 1, LONG_TTL, 100, 1);
    assert_eq!(only.reply(), Reply::Nil);
    assert!(only.sent.elapsed() >= Duration::from_millis(95));
    assert_eq!(sem_held(&mut c, "sem").waiters, 0);
    assert_eq!(sem_release(&mut c, "sem", "long"), 1);
    assert_eq!(sem_release(&mut c, "sem", "other"), 1);
    assert!(!exists(&mut c, "sem"));
    assert_eq!(sem_info(&mut c, "sem").map(|i| i.waiters), None);
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn wait_0_waits_without_limit_until_permits_free() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = sem_grant(&mut c, "sem", "holder", 3, 3, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "patient", 3, 2, LONG_TTL, 0, 1);
    // Longer than any "small default" a WAIT 0 might be mistaken for.
    let_time_pass(1_500);
    w.assert_still_blocked();
    assert_eq!(sem_held(&mut c, "sem").waiters, 1);
    assert_eq!(blocked_clients(&mut c), 1);
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    let t = w.granted();
    assert!(t > t0);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters, i.holder("patient").token), (owners(&["patient"]), 1, 0, t));
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn a_waiter_that_wants_more_than_is_free_blocks_later_arrivals_so_it_never_starves() {
    let s = Server::new();
    let mut c = s.conn();
    for h in ["h1", "h2", "h3"] {
        sem_grant(&mut c, "sem", h, 4, 1, LONG_TTL);
    }
    // One permit is free; the first waiter wants two.
    let mut big = queue_sem(&s, &mut c, "sem", "big", 4, 2, LONG_TTL, 0, 1);
    // A later request for the one free permit waits behind it, with WAIT...
    let mut small = queue_sem(&s, &mut c, "sem", "small", 4, 1, LONG_TTL, 0, 2);
    // ...and without WAIT it is refused.
    assert_eq!(sem_acquire(&mut c, "sem", "newcomer", 4, 1, LONG_TTL), None, "a newcomer overtook a waiter");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.available, i.waiters, i.who()), (1, 2, owners(&["h1", "h2", "h3"])));
    // Two free: the big one gets them, the small one (now nothing free) waits on.
    assert_eq!(sem_release(&mut c, "sem", "h1"), 1);
    let tb = big.granted();
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.available, i.waiters, i.who()), (0, 1, owners(&["big", "h2", "h3"])));
    assert_eq!((i.holder("big").permits, i.holder("big").token), (2, tb));
    small.assert_still_blocked();
    assert_eq!(sem_release(&mut c, "sem", "h2"), 1);
    let ts = small.granted();
    assert!(ts > tb);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.available, i.waiters, i.who()), (0, 0, owners(&["big", "h3", "small"])));
    for o in ["big", "h3", "small"] {
        assert_eq!(sem_release(&mut c, "sem", o), 1);
    }
    assert!(!exists(&mut c, "sem"));

    // A request for the whole limit, with small ones arriving behind it while the
    // holders leave one by one: the small ones never get the permits it waits for.
    for h in ["h1", "h2", "h3"] {
        sem_grant(&mut c, "all", h, 3, 1, LONG_TTL);
    }
    let mut whole = queue_sem(&s, &mut c, "all", "whole", 3, 3, LONG_TTL, 0, 1);
    let mut smalls = vec![];
    for (n, h) in ["h1", "h2"].iter().enumerate() {
        smalls.push(queue_sem(&s, &mut c, "all", &format!("s{n}"), 3, 1, LONG_TTL, 0, 2 + n as i64));
        assert_eq!(sem_release(&mut c, "all", h), 1);
        assert_eq!(sem_acquire(&mut c, "all", "newcomer", 3, 1, LONG_TTL), None);
        let i = sem_held(&mut c, "all");
        assert_eq!((i.available, i.waiters), (n as i64 + 1, 2 + n as i64), "{i:?}");
        whole.assert_still_blocked();
        for w in &smalls {
            w.assert_still_blocked();
        }
    }
    assert_eq!(sem_release(&mut c, "all", "h3"), 1);
    let tw = whole.granted();
    let i = sem_held(&mut c, "all");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["whole"]), 0, 2));
    // When it leaves, the small ones behind it are granted together, in arrival order.
    assert_eq!(sem_release(&mut c, "all", "whole"), 1);
    let t0 = smalls[0].granted();
    let t1 = smalls[1].granted();
    assert!(tw < t0 && t0 < t1, "tokens {tw}, {t0}, {t1} do not follow arrival order");
    let i = sem_held(&mut c, "all");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["s0", "s1"]), 1, 0));
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn several_waiters_are_granted_in_one_pass_when_permits_allow() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = sem_grant(&mut c, "sem", "holder", 5, 5, LONG_TTL);
    let mut ws: Vec<Waiter> = [("w1", 2), ("w2", 1), ("w3", 2), ("w4", 1)]
        .iter()
        .enumerate()
        .map(|(n, (owner, permits))| queue_sem(&s, &mut c, "sem", owner, 5, *permits, LONG_TTL, 0, n as i64 + 1))
        .collect();
    assert_eq!(blocked_clients(&mut c), 4);
    // One release frees five permits: the first three waiters (2 + 1 + 2) are granted
    // in that same turn, with tokens in arrival order; the fourth finds none left.
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["w1", "w2", "w3"]), 0, 1), "right after the release");
    let mut last = t0;
    for w in &mut ws[..3] {
        let t = w.granted();
        assert!(t > last, "{}: token {t} not above {last}", w.owner);
        assert_eq!(i.holder(&w.owner).token, t);
        last = t;
    }
    ws[3].assert_still_blocked();
    assert_eq!(sem_release(&mut c, "sem", "w2"), 1);
    let t4 = ws[3].granted();
    assert!(t4 > last);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["w1", "w3", "w4"]), 0, 0));
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn waiters_that_disconnect_are_killed_or_unblocked_leave_the_queue() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = sem_grant(&mut c, "sem", "holder", 2, 2, LONG_TTL);
    let gone = queue_sem(&s, &mut c, "sem", "gone", 2, 1, LONG_TTL, 0, 1);
    let mut killed = queue_sem(&s, &mut c, "sem", "killed", 2, 1, LONG_TTL, 0, 2);
    let mut unblocked = queue_sem(&s, &mut c, "sem", "unblocked", 2, 1, LONG_TTL, 0, 3);
    let mut live = queue_sem(&s, &mut c, "sem", "live", 2, 1, LONG_TTL, 0, 4);
    let mut last = queue_sem(&s, &mut c, "sem", "last", 2, 2, LONG_TTL, 0, 5);
    gone.close();
    assert_eq!(int(&mut c, &["CLIENT", "KILL", "ID", &killed.id.to_string()]), 1);
    killed.assert_disconnected();
    assert_eq!(int(&mut c, &["CLIENT", "UNBLOCK", &unblocked.id.to_string()]), 1);
    assert_eq!(unblocked.reply(), Reply::Nil, "CLIENT UNBLOCK answers nil");
    await_sem_waiters(&mut c, "sem", 2);
    assert_eq!(sem_held(&mut c, "sem").who(), owners(&["holder"]));
    // The release goes to the live waiter; the one behind it wants more than is left.
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    let t = live.granted();
    assert!(t > t0);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["live"]), 1, 1), "the permits went to a waiter that left?");
    last.assert_still_blocked();
    assert_eq!(sem_release(&mut c, "sem", "live"), 1);
    let t2 = last.granted();
    assert!(t2 > t);
    for o in ["gone", "killed", "unblocked"] {
        assert_eq!(sem_release(&mut c, "sem", o), 0, "{o} left the queue but holds");
    }
    assert!(unblocked.raw.nothing_received(), "the unblocked waiter got a second reply");
    assert_eq!(sem_release(&mut c, "sem", "last"), 1);
    assert!(!exists(&mut c, "sem"));

    // A large waiter at the head that leaves, whichever way, lets the smaller ones
    // behind it in at once.
    for how in ["timeout", "unblock", "kill", "disconnect"] {
        let key = format!("head-{how}");
        sem_grant(&mut c, &key, "h", 3, 2, LONG_TTL);
        let wait = if how == "timeout" { 300 } else { 0 };
        let mut big = queue_sem(&s, &mut c, &key, "big", 3, 2, LONG_TTL, wait, 1);
        let mut small = queue_sem(&s, &mut c, &key, "small", 3, 1, LONG_TTL, 0, 2);
        match how {
            "timeout" => assert_eq!(big.reply(), Reply::Nil),
            "unblock" => {
                assert_eq!(int(&mut c, &["CLIENT", "UNBLOCK", &big.id.to_string()]), 1);
                assert_eq!(big.reply(), Reply::Nil);
            }
            "kill" => {
                assert_eq!(int(&mut c, &["CLIENT", "KILL", "ID", &big.id.to_string()]), 1);
                big.assert_disconnected();
            }
            _ => big.close(),
        }
        let ts = small.granted();
        let i = sem_held(&mut c, &key);
        assert_eq!((i.who(), i.available, i.waiters), (owners(&["h", "small"]), 0, 0), "{how}");
        assert_eq!(i.holder("small").token, ts);
    }
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn wait_inside_multi_and_scripts_is_a_single_try_that_never_blocks() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = sem_grant(&mut c, "sem", "holder", 2, 2, LONG_TTL);
    // A short read timeout: a transaction or script that blocks fails fast.
    let mut r = Raw::connect(s.port, Duration::from_secs(8)).expect("connect");
    for wait in ["5000", "0"] {
        let items = r.exec_at_once(
            &[
                &["SEM.ACQUIRE", "sem", "bob", "2", "600000", "WAIT", wait],
                &["SEM.ACQUIRE", "free", "bob", "2", "600000", "WAIT", wait, "COUNT", "2"],
            ],
            &format!("EXEC with WAIT {wait}"),
        );
        assert_eq!(items[0], Reply::Nil, "WAIT {wait} in MULTI on a full semaphore");
        assert!(matches!(items[1], Reply::Int(t) if t > t0), "WAIT {wait} in MULTI on a free semaphore: {:?}", items[1]);
        assert_eq!(sem_release(&mut c, "free", "bob"), 1);

        let script = "return redis.call('SEM.ACQUIRE', KEYS[1], ARGV[1], '2', ARGV[2], 'COUNT', '1', 'WAIT', ARGV[3])";
        let v = r.cmd_at_once(&["EVAL", script, "1", "sem", "bob", "600000", wait], &format!("EVAL with WAIT {wait}"));
        assert_eq!(v, Reply::Nil, "EVAL with WAIT {wait} on a full semaphore");
        let v = r.cmd(&["EVAL", script, "1", "free", "bob", "600000", wait]).unwrap();
        assert!(matches!(v, Reply::Int(_)), "EVAL with WAIT {wait} on a free semaphore answered {v:?}");
        assert_eq!(sem_release(&mut c, "free", "bob"), 1);
    }
    // Functions are scripts too.
    let lib = "#!lua name=flsem\nredis.register_function('semacq', function(keys, args) \
               return redis.call('SEM.ACQUIRE', keys[1], args[1], '2', args[2], 'WAIT', args[3]) end)";
    assert_eq!(r.cmd(&["FUNCTION", "LOAD", lib]).unwrap(), Reply::Bulk(b"flsem".to_vec()));
    assert_eq!(r.cmd_at_once(&["FCALL", "semacq", "1", "sem", "bob", "600000", "0"], "FCALL with WAIT 0"), Reply::Nil);
    // Nothing was queued behind the holder: the release leaves nothing.
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.waiters), (owners(&["holder"]), 0));
    assert_eq!(blocked_clients(&mut c), 0);
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    assert!(!exists(&mut c, "sem"));
    assert_eq!(sem_info(&mut c, "sem").map(|i| i.waiters), None);
}

#[test]
fn a_newcomer_cannot_take_permits_freed_for_a_waiter() {
    let s = Server::new();
    let mut c = s.conn();
    sem_grant(&mut c, "sem", "holder", 2, 2, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "waiter", 2, 2, LONG_TTL, 20_000, 1);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SEM.RELEASE", "sem", "holder"]);
    ok(&mut c, &["SEM.ACQUIRE", "sem", "thief", "2", "600000"]);
    ok(&mut c, &["SEM.ACQUIRE", "sem", "thief2", "2", "600000", "COUNT", "2", "WAIT", "1000"]);
    let Value::Array(items) = raws(&mut c, &["EXEC"]) else { panic!("EXEC") };
    assert_eq!(items, vec![Value::Int(1), Value::Nil, Value::Nil], "a newcomer took permits freed for a waiter");
    let t = w.granted();
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.holder("waiter").token, i.waiters), (owners(&["waiter"]), t, 0));
    // The same from a script.
    let mut w2 = queue_sem(&s, &mut c, "sem", "waiter2", 2, 1, LONG_TTL, 20_000, 1);
    let v = raws(
        &mut c,
        &[
            "EVAL",
            "redis.call('SEM.RELEASE', KEYS[1], 'waiter') return redis.call('SEM.ACQUIRE', KEYS[1], 'thief', '2', '600000')",
            "1",
            "sem",
        ],
    );
    assert_eq!(v, Value::Nil, "a script took permits freed for a waiter");
    let t2 = w2.granted();
    assert!(t2 > t);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["waiter2"]), 1, 0));
    assert_eq!(blocked_clients(&mut c), 0);
}

/// Found by this suite (see the report): inside one transaction or script, after `DEL`
/// of a semaphore that clients wait on, a newcomer stating the waiters' limit is told
/// `limit mismatch: semaphore has limit 0` (not a limit the contract allows) instead of
/// nil, and `SEM.INFO` answers nil although a client waits.
#[test]
fn a_newcomer_after_del_of_a_waited_on_semaphore_in_one_transaction_waits_its_turn() {
    let s = Server::new();
    let mut c = s.conn();
    sem_grant(&mut c, "sem", "holder", 3, 3, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "waiter", 3, 1, LONG_TTL, 20_000, 1);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["DEL", "sem"]);
    ok(&mut c, &["SEM.INFO", "sem"]);
    ok(&mut c, &["SEM.ACQUIRE", "sem", "thief", "3", "600000"]);
    ok(&mut c, &["SEM.ACQUIRE", "sem", "thief", "5", "600000"]);
    let Value::Array(items) = raws(&mut c, &["EXEC"]) else { panic!("EXEC") };
    assert_eq!(items[0], Value::Int(1));
    assert_ne!(items[1], Value::Nil, "SEM.INFO is nil while a client waits: {items:?}");
    assert_eq!(sem_info_waiters(&items[1]), Some(1), "{items:?}");
    assert_eq!(items[2], Value::Nil, "a newcomer stating the waiters' limit: {items:?}");
    assert_eq!(value_err(&items[3]), Some(limit_mismatch(3)), "another limit than the waiters': {items:?}");
    let t = w.granted();
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.holder("waiter").token, i.limit), (owners(&["waiter"]), t, 3));
}

/// The same bug without a transaction: a waited-on semaphore whose key expired (a TTL
/// someone set) before Redis's active expiry got to it is removed by the newcomer's own
/// lookup, and the newcomer is told `limit mismatch: semaphore has limit 0`.
#[test]
fn a_newcomer_on_a_waited_on_semaphore_whose_key_expired_waits_its_turn() {
    let s = Server::new();
    let mut c = s.conn();
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    sem_grant(&mut c, "sem", "holder", 3, 3, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "waiter", 3, 1, LONG_TTL, 20_000, 1);
    assert_eq!(int(&mut c, &["PEXPIRE", "sem", "50"]), 1);
    // The key's TTL must have passed (nothing of ours to await: Redis's expiry is off).
    let_time_pass(100);
    assert_eq!(sem(&mut c, &["sem", "thief", "3", "600000"]), Value::Nil, "a newcomer stating the waiters' limit");
    let t = w.granted();
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.holder("waiter").token, i.limit), (owners(&["waiter"]), t, 3));
}

/// `waiters` of a SEM.INFO reply, whatever its other fields say.
fn sem_info_waiters(v: &Value) -> Option<i64> {
    match v {
        Value::Nil => None,
        v => pairs(v).get("waiters").and_then(value_int),
    }
}

// ---------------------------------------------------------------------------------------
// Handoff
// ---------------------------------------------------------------------------------------

#[test]
fn handoff_by_release_grants_a_fresh_token_and_a_lease_counted_from_the_grant() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = sem_grant(&mut c, "sem", "holder", 2, 2, LONG_TTL);
    // Reentrant holds must all be released first.
    assert_eq!(sem_acquire(&mut c, "sem", "holder", 2, 2, LONG_TTL), Some(t0));
    let mut w = queue_sem(&s, &mut c, "sem", "waiter", 2, 2, 3_000, 20_000, 1);
    // Waiting longer than a third of its own ttl: a lease counted from the block (not
    // the grant) would show at most 2000 ms left.
    let_time_pass(1_000);
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    w.assert_still_blocked();
    assert_eq!(sem_held(&mut c, "sem").who(), owners(&["holder"]));
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    let i = sem_held(&mut c, "sem");
    let t = w.granted();
    let h = i.holder("waiter");
    assert_eq!((h.token, h.holds, h.permits, i.waiters, i.who()), (t, 1, 2, 0, owners(&["waiter"])));
    assert!(t > t0, "token {t} of the waiter is not above {t0}");
    assert!(h.ttl > 2_500 && h.ttl <= 3_000, "lease of the granted waiter is not counted from the grant: ttl {}", h.ttl);
    // The waiter holds like any holder.
    assert_eq!(sem_acquire(&mut c, "sem", "waiter", 2, 2, 3_000), Some(t));
    assert_eq!(sem_release(&mut c, "sem", "waiter"), 1);
    assert_eq!(sem_release(&mut c, "sem", "waiter"), 1);
    assert!(!exists(&mut c, "sem"));
    assert_eq!(blocked_clients(&mut c), 0);
}

/// A holder with a short lease and waiters; no client touches the key until they
/// answer (queueing is awaited through `INFO clients`).
fn handoff_by_lease_end(active_expire: bool) {
    let (s, mut c) = server_with_active_expire(active_expire);
    const LEASE: i64 = 400;
    let granted_at = Instant::now();
    let t0 = sem_grant(&mut c, "sem", "holder", 3, 3, LEASE);
    let mut w1 = Waiter::sem(&s, "sem", "w1", 3, 2, LONG_TTL, 20_000);
    await_blocked(&mut c, 1);
    let mut w2 = Waiter::sem(&s, "sem", "w2", 3, 1, LONG_TTL, 20_000);
    await_blocked(&mut c, 2);
    let t1 = w1.granted();
    let t2 = w2.granted();
    assert_handed_over_at_lease_end(granted_at, LEASE, "the permits");
    assert!(t0 < t1 && t1 < t2, "tokens {t0}, {t1}, {t2} after lease end");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["w1", "w2"]), 0, 0));
    assert!(i.holder("w1").ttl > LONG_TTL - 10_000, "{i:?}");
    assert_eq!(sem_release(&mut c, "sem", "holder"), 0, "the old holder has nothing to release");
    assert_eq!(blocked_clients(&mut c), 0);

    // A chain: each short lease ends and hands over to the next, by the server alone.
    let key = "chain";
    let c0 = sem_grant(&mut c, key, "c0", 2, 2, 500);
    let mut c1 = Waiter::sem(&s, key, "c1", 2, 2, 200, 20_000);
    await_blocked(&mut c, 1);
    let mut c2 = Waiter::sem(&s, key, "c2", 2, 1, LONG_TTL, 20_000);
    await_blocked(&mut c, 2);
    let mut c3 = Waiter::sem(&s, key, "c3", 2, 1, LONG_TTL, 20_000);
    await_blocked(&mut c, 3);
    let t1 = c1.granted();
    let t2 = c2.granted();
    let t3 = c3.granted();
    assert!(c0 < t1 && t1 < t2 && t2 < t3, "tokens {c0}, {t1}, {t2}, {t3} do not increase along the chain");
    let i = sem_held(&mut c, key);
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["c2", "c3"]), 0, 0));
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn handoff_by_lease_end_without_any_client_touching_the_key() {
    handoff_by_lease_end(true);
}

#[test]
fn handoff_by_lease_end_with_active_expire_off() {
    handoff_by_lease_end(false);
}

#[test]
fn handoff_by_del_unlink_flushall_and_an_expired_key() {
    let s = Server::new();
    let mut c = s.conn();
    for del in ["DEL", "UNLINK"] {
        let key = format!("sem-{del}");
        let t0 = sem_grant(&mut c, &key, "holder", 2, 2, LONG_TTL);
        let mut w1 = queue_sem(&s, &mut c, &key, "w1", 2, 2, LONG_TTL, 20_000, 1);
        let mut w2 = queue_sem(&s, &mut c, &key, "w2", 2, 1, LONG_TTL, 20_000, 2);
        assert_eq!(int(&mut c, &[del, &key]), 1);
        let t1 = w1.granted();
        assert!(t1 > t0, "{del}: token {t1} after deleting the key is not above {t0}");
        let i = sem_held(&mut c, &key);
        assert_eq!((i.who(), i.limit, i.available, i.waiters), (owners(&["w1"]), 2, 0, 1), "{del}");
        assert_eq!(key_type(&mut c, &key), "locksemph");
        w2.assert_still_blocked();
        assert_eq!(int(&mut c, &[del, &key]), 1);
        let t2 = w2.granted();
        assert!(t2 > t1, "{del}: token {t2} is not above {t1}");
        let i = sem_held(&mut c, &key);
        assert_eq!((i.who(), i.available, i.waiters), (owners(&["w2"]), 1, 0), "{del}");
        for o in ["holder", "w1"] {
            assert_eq!(sem_release(&mut c, &key, o), 0, "{del}: {o} holds nothing any more");
        }
        assert_eq!(sem_release(&mut c, &key, "w2"), 1);
        assert!(!exists(&mut c, &key));
    }
    for flush in [&["FLUSHALL"][..], &["FLUSHALL", "ASYNC"], &["FLUSHALL", "SYNC"], &["FLUSHDB"]] {
        let t0 = sem_grant(&mut c, "sem", "holder", 3, 3, LONG_TTL);
        let mut w1 = queue_sem(&s, &mut c, "sem", "w1", 3, 2, LONG_TTL, 20_000, 1);
        let mut w2 = queue_sem(&s, &mut c, "sem", "w2", 3, 1, LONG_TTL, 20_000, 2);
        ok(&mut c, flush);
        let t1 = w1.granted();
        let t2 = w2.granted();
        assert!(t0 < t1 && t1 < t2, "{flush:?}: tokens {t0}, {t1}, {t2}");
        let i = sem_held(&mut c, "sem");
        assert_eq!((i.who(), i.available, i.waiters), (owners(&["w1", "w2"]), 0, 0), "{flush:?}");
        assert_eq!(dbsize(&mut c), 1, "{flush:?}");
        ok(&mut c, &["DEL", "sem"]);
    }
    // A TTL someone set with PEXPIRE ends the key: the waiter is granted, on a key of
    // its own without that TTL.
    let t0 = sem_grant(&mut c, "sem", "holder", 2, 2, LONG_TTL);
    let mut w = queue_sem(&s, &mut c, "sem", "w", 2, 1, LONG_TTL, 20_000, 1);
    assert_eq!(int(&mut c, &["PEXPIRE", "sem", "100"]), 1);
    let t = w.granted();
    assert!(t > t0, "token {t} after the key expired is not above {t0}");
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["w"]), 1, 0));
    assert_eq!(pttl(&mut c, "sem"), -1, "the granted waiter's key kept the expired key's TTL");
    assert_eq!(sem_release(&mut c, "sem", "holder"), 0);
    assert_eq!(blocked_clients(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// No key left behind
// ---------------------------------------------------------------------------------------

#[test]
fn a_free_semaphore_with_no_waiters_leaves_no_key() {
    let s = Server::new();
    let mut c = s.conn();
    // Released, ended, or refused: a thousand one-off names use no key.
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SEM.ACQUIRE").arg(format!("one-off:{i}")).arg("o").arg(3).arg(LONG_TTL).arg("COUNT").arg(1 + i % 3);
        p.cmd("SEM.RELEASE").arg(format!("one-off:{i}")).arg("o");
    }
    let replies: Vec<i64> = p.query(&mut c).expect("pipelined grants and releases");
    assert!(replies.chunks(2).all(|r| r[0] > 0 && r[1] == 1), "grants and releases: {:?}", &replies[..6]);
    assert_eq!(dbsize(&mut c), 0, "released semaphores left keys behind");
    for i in 0..100 {
        sem_grant(&mut c, &format!("short:{i}"), "o", 2, 1, 1 + i % 20);
    }
    wait_until(PATIENCE, "the short leases ended and their keys went", || dbsize(&mut c) == 0);
    // A waiter that left, then the release: no key.
    sem_grant(&mut c, "sem", "holder", 1, 1, LONG_TTL);
    let w = queue_sem(&s, &mut c, "sem", "w", 1, 1, LONG_TTL, 0, 1);
    w.close();
    await_sem_waiters(&mut c, "sem", 0);
    assert_eq!(sem_release(&mut c, "sem", "holder"), 1);
    assert!(!exists(&mut c, "sem"), "a free semaphore whose only waiter left kept its key");
    // A waiter that left, then the lease end: no key.
    sem_grant(&mut c, "sem", "holder", 1, 1, 1_000);
    let w = Waiter::sem(&s, "sem", "w", 1, 1, LONG_TTL, 0);
    await_blocked(&mut c, 1);
    w.close();
    await_blocked(&mut c, 0);
    wait_until(PATIENCE, "the lease ended", || sem_info(&mut c, "sem").is_none());
    wait_until(PATIENCE, "the key of the ended lease went", || !exists(&mut c, "sem"));
    assert_eq!(dbsize(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// The internal effects
// ---------------------------------------------------------------------------------------

#[test]
fn the_internal_effects_are_refused_from_clients_and_change_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let t = sem_grant(&mut c, "sem", "alice", 3, 1, LONG_TTL);
    let before = sem_info(&mut c, "sem");
    let deadline = (now_ms() + LONG_TTL).to_string();
    let far = t + (1 << 40);
    let token = far.to_string();
    let calls: Vec<Vec<&str>> = vec![
        vec!["FENCELOCK.SEMHOLD", "sem", "3", "mallory", "2", &token, &deadline, "1"],
        vec!["FENCELOCK.SEMHOLD", "new", "5", "mallory", "1", &token, &deadline, "1"],
        vec!["FENCELOCK.SEMHOLD", "sem", "3", "alice", "3", &token, &deadline, "9"],
        vec!["FENCELOCK.SEMDROP", "sem", "alice"],
    ];
    for call in &calls {
        let e = err(&mut c, call);
        assert!(e.starts_with("ERR"), "{call:?} from a client answered {e}");
        let mut script = vec!["EVAL", "return redis.pcall(unpack(ARGV))", "0"];
        script.extend(call.iter().copied());
        assert!(value_err(&raws(&mut c, &script)).is_some(), "{call:?} inside EVAL was not refused");
        ok(&mut c, &["MULTI"]);
        raws(&mut c, call);
        let exec = raws(&mut c, &["EXEC"]);
        let refused = match &exec {
            Value::Array(items) => items.len() == 1 && value_err(&items[0]).is_some(),
            other => value_err(other).is_some(),
        };
        assert!(refused, "{call:?} inside MULTI answered {exec:?}");
    }
    assert_unchanged(&before, &sem_info(&mut c, "sem"), "after the refused effects");
    assert!(!exists(&mut c, "new"));
    // The token clock was not pushed by the refused effects either.
    let next = sem_grant(&mut c, "sem", "bob", 3, 1, LONG_TTL);
    assert!(next > t && next < far, "token {next} after refused effects carrying {token}");
}

// ---------------------------------------------------------------------------------------
// Replication, DEBUG RELOAD
// ---------------------------------------------------------------------------------------

/// The holders of a semaphore as the replica reports them equal the master's.
#[track_caller]
fn assert_replica_has(m: &mut redis::Connection, r: &mut redis::Connection, key: &str, what: &str) {
    let on_m = sem_info(m, key);
    let on_r = sem_info(r, key);
    match (&on_m, &on_r) {
        (None, None) => assert!(!exists(r, key), "{what}: {key} free on the master but a key on the replica"),
        (Some(a), Some(b)) => {
            assert_eq!((b.limit, b.available, b.who()), (a.limit, a.available, a.who()), "{what}: {key} on the replica");
            for h in &a.holders {
                let o = b.holder(&String::from_utf8_lossy(&h.owner));
                assert_eq!((o.permits, o.token, o.holds), (h.permits, h.token, h.holds), "{what}: {key} on the replica");
                assert!(o.ttl <= h.ttl + 1_000 && o.ttl > h.ttl - 20_000, "{what}: ttl {} on the replica, {} on the master", o.ttl, h.ttl);
            }
        }
        _ => panic!("{what}: {key} is {on_m:?} on the master, {on_r:?} on the replica"),
    }
}

#[test]
fn grants_and_handoffs_reach_the_replica() {
    let m = Server::start(&["repl-diskless-sync-delay 0"]);
    let r = start_synced_replica(&m);
    let mut mc = m.conn();
    let mut rc = r.conn();
    let mut tokens = vec![];
    // Several holders, reentry, an extend.
    tokens.push(sem_grant(&mut mc, "sem", "a", 4, 2, LONG_TTL));
    assert_eq!(sem_acquire(&mut mc, "sem", "a", 4, 2, 2 * LONG_TTL), Some(tokens[0]));
    tokens.push(sem_grant(&mut mc, "sem", "b", 4, 1, LONG_TTL));
    tokens.push(sem_grant(&mut mc, "sem", "c", 4, 1, LONG_TTL));
    assert_eq!(sem_extend(&mut mc, "sem", "b", 3 * LONG_TTL), 1);
    await_sync(&m, &r);
    assert_replica_has(&mut mc, &mut rc, "sem", "grants");
    let i = sem_held(&mut rc, "sem");
    assert_eq!((i.who(), i.available, i.holder("a").holds), (owners(&["a", "b", "c"]), 0, 2));
    // Handoff by release, to two waiters at once; a release that lets nobody in.
    let mut w1 = queue_sem(&m, &mut mc, "sem", "w1", 4, 1, LONG_TTL, 20_000, 1);
    let mut w2 = queue_sem(&m, &mut mc, "sem", "w2", 4, 1, LONG_TTL, 20_000, 2);
    let mut w3 = queue_sem(&m, &mut mc, "sem", "w3", 4, 2, LONG_TTL, 20_000, 3);
    assert_eq!(sem_release(&mut mc, "sem", "a"), 1);
    assert_eq!(sem_release(&mut mc, "sem", "a"), 1);
    tokens.push(w1.granted());
    tokens.push(w2.granted());
    assert_eq!(sem_release(&mut mc, "sem", "c"), 1);
    w3.assert_still_blocked();
    await_sync(&m, &r);
    assert_replica_has(&mut mc, &mut rc, "sem", "handoff by release");
    let i = sem_held(&mut rc, "sem");
    assert_eq!((i.who(), i.available), (owners(&["b", "w1", "w2"]), 1));
    // Handoff by lease end.
    tokens.push(sem_grant(&mut mc, "lease", "holder", 2, 2, 300));
    let mut lw = Waiter::sem(&m, "lease", "lw", 2, 1, LONG_TTL, 20_000);
    wait_until(PATIENCE, "lw blocks", || blocked_clients(&mut mc) == 2);
    tokens.push(lw.granted());
    await_sync(&m, &r);
    assert_replica_has(&mut mc, &mut rc, "lease", "handoff by lease end");
    assert_eq!(sem_held(&mut rc, "lease").who(), owners(&["lw"]));
    // Handoff by DEL.
    assert_eq!(int(&mut mc, &["DEL", "sem"]), 1);
    tokens.push(w3.granted());
    await_sync(&m, &r);
    assert_replica_has(&mut mc, &mut rc, "sem", "handoff by DEL");
    assert_eq!(sem_held(&mut rc, "sem").who(), owners(&["w3"]));
    // Released to free: the key goes on the replica too.
    assert_eq!(sem_release(&mut mc, "lease", "lw"), 1);
    await_sync(&m, &r);
    assert!(!exists(&mut rc, "lease"));
    assert_eq!(digest(&mut mc), digest(&mut rc));
    assert_eq!(blocked_clients(&mut mc), 0);
    // The promoted replica goes on with larger tokens.
    let max = *tokens.iter().max().unwrap();
    promote(&mut rc);
    assert_eq!(sem_acquire(&mut rc, "sem", "x", 4, 4, LONG_TTL), None, "w3 still holds two permits");
    assert_eq!(sem_release(&mut rc, "sem", "w3"), 1);
    let n = sem_grant(&mut rc, "sem", "x", 4, 4, LONG_TTL);
    assert!(n > max, "token {n} of the promoted replica not above {max}");
}

#[test]
fn waiters_and_holders_survive_debug_reload() {
    let s = Server::new();
    let mut c = s.conn();
    let ta = sem_grant(&mut c, "sem", "a", 3, 2, LONG_TTL);
    assert_eq!(sem_acquire(&mut c, "sem", "a", 3, 2, LONG_TTL), Some(ta));
    let tb = sem_grant(&mut c, "sem", "b", 3, 1, 500_000);
    let mut w1 = queue_sem(&s, &mut c, "sem", "w1", 3, 2, LONG_TTL, 0, 1);
    let mut w2 = queue_sem(&s, &mut c, "sem", "w2", 3, 1, LONG_TTL, 0, 2);
    let before = sem_info(&mut c, "sem");
    ok(&mut c, &["DEBUG", "RELOAD"]);
    assert_unchanged(&before, &sem_info(&mut c, "sem"), "DEBUG RELOAD");
    w1.assert_still_blocked();
    w2.assert_still_blocked();
    assert_eq!(blocked_clients(&mut c), 2);
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    w1.assert_still_blocked();
    assert_eq!(sem_release(&mut c, "sem", "a"), 1);
    let t1 = w1.granted();
    assert!(t1 > tb);
    w2.assert_still_blocked();
    assert_eq!(sem_release(&mut c, "sem", "b"), 1);
    let t2 = w2.granted();
    assert!(t2 > t1);
    let i = sem_held(&mut c, "sem");
    assert_eq!((i.who(), i.available, i.waiters), (owners(&["w1", "w2"]), 0, 0));
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

#[test]
fn contending_threads_never_hold_more_than_the_limit() {
    let s = Server::new();
    const LIMIT: i64 = 3;
    const THREADS: usize = 10;
    const ROUNDS: usize = 10;
    let in_use = Arc::new(AtomicI64::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let granted = tokens.clone();
    contend(&s, THREADS, ROUNDS, move |con, n, owner| {
        let permits = 1 + (n as i64 % 2);
        let v = raws(con, &["SEM.ACQUIRE", "sem", owner, &LIMIT.to_string(), "600000", "COUNT", &permits.to_string(), "WAIT", "0"]);
        let Value::Int(t) = v else { panic!("{owner}: WAIT 0 answered {v:?}") };
        let now = in_use.fetch_add(permits, Ordering::SeqCst) + permits;
        assert!(now <= LIMIT, "{owner} was granted {permits} while {} were in use", now - permits);
        let i = sem_held(con, "sem");
        assert_eq!((i.holder(owner).token, i.holder(owner).permits), (t, permits));
        granted.lock().unwrap().push(t);
        in_use.fetch_sub(permits, Ordering::SeqCst);
        assert_eq!(sem_release(con, "sem", owner), 1);
    });
    let mut tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), THREADS * ROUNDS);
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), THREADS * ROUNDS, "a token was issued twice");
    let mut c = s.conn();
    assert!(!exists(&mut c, "sem"));
    assert_eq!(blocked_clients(&mut c), 0);
}
