//! Blocking acquires: `LOCK.ACQUIRE key owner ttl WAIT timeout`.
//!
//! Arrival-order (FIFO) grants, time-outs, `WAIT 0`, handoff on release, lease end, DEL,
//! UNLINK and flushes, waiters that disconnect, are killed or unblocked, the single try
//! inside MULTI/EXEC and scripts, propagation of grants to replicas and the AOF, DEBUG
//! RELOAD, `blocked_clients` accounting, and a scale smoke test.
//!
//! Each waiter is its own connection (`support::Waiter`, on the raw RESP client) that
//! sends its acquire and reads the reply later, and tells without blocking whether a
//! reply has come. So no test needs a thread per waiter, and a waiter can be closed at
//! any time.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use support::*;

// ---------------------------------------------------------------------------------------
// Arrival order
// ---------------------------------------------------------------------------------------

#[test]
fn waiters_are_granted_in_arrival_order_with_increasing_tokens() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut ws: Vec<Waiter> = (0..5).map(|i| queue(&s, &mut c, "res", &format!("w{i}"), LONG_TTL, 20_000, i + 1)).collect();
    assert_eq!(blocked_clients(&mut c), 5);
    // While held, a free-standing acquire is refused and the waiters stay.
    assert_eq!(acquire(&mut c, "res", "other", LONG_TTL), None);
    assert_holder(&mut c, "res", "holder", t0, 5);

    let mut last = t0;
    let mut prev = "holder".to_string();
    for i in 0..5 {
        assert_eq!(release(&mut c, "res", &prev), 1, "release by {prev}");
        // Granted at once, before any other command is served: no polling.
        let info = held(&mut c, "res");
        assert_eq!(info.owner_str(), ws[i].owner, "after {prev} released, the next in arrival order holds it");
        let t = ws[i].granted();
        assert_eq!(info.token, t, "LOCK.INFO token is the token the waiter got");
        assert!(t > last, "token {t} of {} is not above {last}", ws[i].owner);
        assert_eq!((info.holds, info.waiters), (1, 4 - i as i64));
        for later in &ws[i + 1..] {
            later.assert_still_blocked();
        }
        last = t;
        prev = ws[i].owner.clone();
    }
    assert_eq!(release(&mut c, "res", "w4"), 1);
    assert_gone(&mut c, "res");
    assert_eq!(blocked_clients(&mut c), 0);
    drop(ws.drain(..));
}

#[test]
fn a_newcomer_cannot_jump_the_queue_when_the_lock_frees() {
    let s = Server::new();
    let mut c = s.conn();
    grant(&mut c, "res", "holder", LONG_TTL);
    let mut w = queue(&s, &mut c, "res", "waiter", LONG_TTL, 20_000, 1);
    // Release and a newcomer's acquire in one transaction: the lock is free with a
    // waiter in between, and LOCK.INFO shows owner nil then.
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["LOCK.RELEASE", "res", "holder"]);
    ok(&mut c, &["LOCK.INFO", "res"]);
    ok(&mut c, &["LOCK.ACQUIRE", "res", "thief", "600000"]);
    ok(&mut c, &["LOCK.ACQUIRE", "res", "thief2", "600000", "WAIT", "1000"]);
    let v = raws(&mut c, &["EXEC"]);
    let Value::Array(items) = v else { panic!("EXEC answered {v:?}") };
    assert_eq!(items[0], Value::Int(1));
    // (The contract fixes only owner nil and waiters here, so the common parser, which
    // wants an integer token, is not used.)
    assert_ne!(items[1], Value::Nil, "LOCK.INFO of a free lock with a waiter is not nil");
    let mid = pairs(&items[1]);
    assert_eq!(mid.get("owner"), Some(&Value::Nil), "a free lock with waiters answers owner nil: {mid:?}");
    assert_eq!(mid.get("waiters").and_then(value_int), Some(1), "{mid:?}");
    assert_eq!(items[2], Value::Nil, "a newcomer took a freed lock ahead of its waiter");
    assert_eq!(items[3], Value::Nil, "a newcomer (WAIT in MULTI) took a freed lock ahead of its waiter");
    let t = w.granted();
    assert_holder(&mut c, "res", "waiter", t, 0);

    // The same from a script.
    let mut w2 = queue(&s, &mut c, "res", "waiter2", LONG_TTL, 20_000, 1);
    let v = raws(
        &mut c,
        &[
            "EVAL",
            "redis.call('LOCK.RELEASE', KEYS[1], 'waiter') return redis.call('LOCK.ACQUIRE', KEYS[1], 'thief', '600000')",
            "1",
            "res",
        ],
    );
    assert_eq!(v, Value::Nil, "a script took a freed lock ahead of its waiter");
    let t2 = w2.granted();
    assert!(t2 > t);
    assert_holder(&mut c, "res", "waiter2", t2, 0);
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn wait_on_a_free_or_own_lock_answers_at_once_and_bad_timeouts_are_errors() {
    let s = Server::new();
    let mut c = s.conn();
    let t = match raws(&mut c, &["LOCK.ACQUIRE", "res", "alice", "600000", "WAIT", "0"]) {
        Value::Int(t) => t,
        other => panic!("WAIT on a free lock answered {other:?}"),
    };
    assert_eq!(raws(&mut c, &["LOCK.ACQUIRE", "res", "alice", "600000", "WAIT", "0"]), Value::Int(t), "reentrant");
    assert_eq!(raws(&mut c, &["LOCK.ACQUIRE", "res", "alice", "600000", "wait", "5000"]), Value::Int(t), "wait is case-insensitive");
    assert_eq!(held(&mut c, "res").holds, 3);
    for bad in [&["WAIT", "-1"][..], &["WAIT", "abc"], &["WAIT", "1.5"], &["WAIT"], &["WAIT", "10", "extra"]] {
        let mut args = vec!["LOCK.ACQUIRE", "res", "bob", "600000"];
        args.extend_from_slice(bad);
        let e = err(&mut c, &args);
        assert!(e.starts_with("ERR"), "{args:?} answered {e}");
    }
    let i = held(&mut c, "res");
    assert_eq!((i.owner_str(), i.token, i.holds, i.waiters), ("alice".into(), t, 3, 0));
    assert_eq!(blocked_clients(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// Time-outs and WAIT 0
// ---------------------------------------------------------------------------------------

#[test]
fn timeout_answers_nil_after_the_timeout_and_the_waiter_leaves_the_queue() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut short = queue(&s, &mut c, "res", "short", LONG_TTL, 300, 1);
    let mut long = queue(&s, &mut c, "res", "long", LONG_TTL, 20_000, 2);
    assert_eq!(short.reply(), Reply::Nil, "a timed-out acquire answers nil");
    let took = short.sent.elapsed();
    assert!(took >= Duration::from_millis(295), "timed out after {took:?}, before its 300 ms");
    assert!(took < Duration::from_secs(5), "took {took:?} to time out after 300 ms");
    // Gone from the queue already when it answered.
    assert_holder(&mut c, "res", "holder", t0, 1);
    assert_eq!(blocked_clients(&mut c), 1);
    long.assert_still_blocked();
    // The next release skips it.
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t = long.granted();
    assert!(t > t0);
    assert_holder(&mut c, "res", "long", t, 0);
    assert!(short.raw.nothing_received(), "the timed-out waiter got a second reply");

    // The only waiter times out: a later release leaves nothing behind.
    let mut only = queue(&s, &mut c, "res", "only", LONG_TTL, 100, 1);
    assert_eq!(only.reply(), Reply::Nil);
    assert!(only.sent.elapsed() >= Duration::from_millis(95));
    assert_holder(&mut c, "res", "long", t, 0);
    assert_eq!(release(&mut c, "res", "long"), 1);
    assert_gone(&mut c, "res");
    assert_eq!(dbsize(&mut c), 0);
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn wait_0_waits_without_limit_until_released() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut w = queue(&s, &mut c, "res", "patient", LONG_TTL, 0, 1);
    // Longer than any "small default" a WAIT 0 might be mistaken for.
    let_time_pass(1_500);
    w.assert_still_blocked();
    assert_holder(&mut c, "res", "holder", t0, 1);
    assert_eq!(blocked_clients(&mut c), 1);
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t = w.granted();
    assert!(t > t0);
    assert_holder(&mut c, "res", "patient", t, 0);
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn a_huge_wait_timeout_does_not_time_out_at_once() {
    // The contract: block until granted or the timeout passes. A timeout of 2^63-1 ms
    // has not passed a moment later; a module may refuse it as out of range (an error,
    // as BLPOP does), but must not answer nil at once as if it had passed.
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    for (i, wait) in ["9223372036854775807", "4611686018427387904"].into_iter().enumerate() {
        let owner = format!("huge{i}");
        let mut raw = s.raw();
        raw.send(&["LOCK.ACQUIRE", "res", &owner, "600000", "WAIT", wait]).expect("send");
        // Let the server process it, and a time-out fire if one were due.
        let_time_pass(300);
        if raw.nothing_received() {
            assert_eq!(lock_info(&mut c, "res").unwrap().waiters, 1, "WAIT {wait}");
            raw.close();
            await_blocked(&mut c, 0);
        } else {
            match raw.read().expect("a reply") {
                Reply::Err(e) => assert!(e.starts_with("ERR"), "WAIT {wait} answered {e}"),
                other => panic!("LOCK.ACQUIRE ... WAIT {wait} on a held lock answered {other:?} within 300 ms"),
            }
        }
    }
    assert_holder(&mut c, "res", "holder", t0, 0);
}

// ---------------------------------------------------------------------------------------
// Handoff
// ---------------------------------------------------------------------------------------

#[test]
fn handoff_by_release_grants_a_fresh_token_and_a_lease_counted_from_the_grant() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    // Reentrant holds must all be released first.
    assert_eq!(acquire(&mut c, "res", "holder", LONG_TTL), Some(t0));
    let mut w = queue(&s, &mut c, "res", "waiter", 3_000, 20_000, 1);
    // Waiting longer than a third of its own ttl: a lease counted from the block (not
    // the grant) would show at most 2000 ms left.
    let_time_pass(1_000);
    assert_eq!(release(&mut c, "res", "holder"), 1);
    w.assert_still_blocked();
    assert_eq!(held(&mut c, "res").owner_str(), "holder");
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let i = held(&mut c, "res");
    let t = w.granted();
    assert_eq!((i.owner_str(), i.token, i.holds, i.waiters), ("waiter".into(), t, 1, 0));
    assert!(t > t0, "token {t} of the waiter is not above {t0}");
    assert!(i.ttl > 2_500 && i.ttl <= 3_000, "lease of the granted waiter is not counted from the grant: ttl {}", i.ttl);
    // The waiter holds it like any holder.
    assert_eq!(acquire(&mut c, "res", "waiter", 3_000), Some(t));
    assert_eq!(release(&mut c, "res", "waiter"), 1);
    assert_eq!(release(&mut c, "res", "waiter"), 1);
    assert_gone(&mut c, "res");
    assert_eq!(blocked_clients(&mut c), 0);
}

/// Holder with a short lease, one waiter; no client touches the key until the waiter
/// answers (the waiter's queueing is awaited through `INFO clients`).
fn handoff_by_lease_end(active_expire: bool) {
    let (s, mut c) = server_with_active_expire(active_expire);
    const LEASE: i64 = 400;
    let granted_at = Instant::now();
    let t0 = grant(&mut c, "res", "holder", LEASE);
    let mut w = Waiter::lock(&s, "res", "waiter", LONG_TTL, 20_000);
    await_blocked(&mut c, 1);
    let t = w.granted();
    assert_handed_over_at_lease_end(granted_at, LEASE, "the lock");
    assert!(t > t0, "token {t} after lease end is not above {t0}");
    let i = held(&mut c, "res");
    assert_eq!((i.owner_str(), i.token, i.holds, i.waiters), ("waiter".into(), t, 1, 0));
    assert!(i.ttl > LONG_TTL - 10_000, "ttl {}", i.ttl);
    // The old holder has nothing to release.
    assert_eq!(release(&mut c, "res", "holder"), 0);
    assert_eq!(blocked_clients(&mut c), 0);

    // A chain: each waiter's own short lease ends and hands over to the next, by the
    // server's timer alone.
    let key = "chain";
    let t1 = grant(&mut c, key, "c0", 200);
    let mut w1 = Waiter::lock(&s, key, "c1", 200, 20_000);
    await_blocked(&mut c, 1);
    let mut w2 = Waiter::lock(&s, key, "c2", LONG_TTL, 20_000);
    await_blocked(&mut c, 2);
    let t2 = w1.granted();
    let t3 = w2.granted();
    assert!(t1 < t2 && t2 < t3, "tokens {t1}, {t2}, {t3} do not increase along the chain");
    assert_holder(&mut c, key, "c2", t3, 0);
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
fn handoff_by_del_and_unlink_of_the_key() {
    let s = Server::new();
    let mut c = s.conn();
    for del in ["DEL", "UNLINK"] {
        let key = format!("res-{del}");
        let t0 = grant(&mut c, &key, "holder", LONG_TTL);
        let mut w1 = queue(&s, &mut c, &key, "w1", LONG_TTL, 20_000, 1);
        let mut w2 = queue(&s, &mut c, &key, "w2", LONG_TTL, 20_000, 2);
        assert_eq!(int(&mut c, &[del, &key]), 1);
        let t1 = w1.granted();
        assert!(t1 > t0, "{del}: token {t1} after deleting the key is not above {t0}");
        assert_holder(&mut c, &key, "w1", t1, 1);
        assert_eq!(key_type(&mut c, &key), "lockmutex");
        w2.assert_still_blocked();
        // Again, with the first waiter as the holder.
        assert_eq!(int(&mut c, &[del, &key]), 1);
        let t2 = w2.granted();
        assert!(t2 > t1, "{del}: token {t2} is not above {t1}");
        assert_holder(&mut c, &key, "w2", t2, 0);
        // The old holders hold nothing.
        assert_eq!(release(&mut c, &key, "holder"), 0);
        assert_eq!(release(&mut c, &key, "w1"), 0);
        assert_eq!(release(&mut c, &key, "w2"), 1);
        assert_gone(&mut c, &key);
    }
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn handoff_by_flushall_and_flushdb() {
    let s = Server::new();
    let mut c = s.conn();
    for flush in [&["FLUSHALL"][..], &["FLUSHALL", "ASYNC"], &["FLUSHALL", "SYNC"]] {
        let t0 = grant(&mut c, "res", "holder", LONG_TTL);
        let mut w = queue(&s, &mut c, "res", "waiter", LONG_TTL, 20_000, 1);
        ok(&mut c, flush);
        let t = w.granted();
        assert!(t > t0, "{flush:?}: token {t} after the flush is not above {t0}");
        assert_holder(&mut c, "res", "waiter", t, 0);
        assert_eq!(dbsize(&mut c), 1, "{flush:?}");
        assert_eq!(release(&mut c, "res", "waiter"), 1);
        assert_gone(&mut c, "res");
    }

    // Databases: the same name waited on in db 0 and db 2. FLUSHDB in db 2 hands over
    // only there; FLUSHALL then hands over in db 0.
    let mut c2 = s.conn();
    ok(&mut c2, &["SELECT", "2"]);
    let a0 = grant(&mut c, "res", "h0", LONG_TTL);
    let b0 = grant(&mut c2, "res", "h2", LONG_TTL);
    let mut wa = queue_in(&s, &mut c, 0, "res", "w0", LONG_TTL, 20_000, 1);
    let mut wb = queue_in(&s, &mut c2, 2, "res", "w2", LONG_TTL, 20_000, 1);
    ok(&mut c2, &["FLUSHDB"]);
    let b1 = wb.granted();
    assert!(b1 > b0);
    assert_holder(&mut c2, "res", "w2", b1, 0);
    wa.assert_still_blocked();
    assert_holder(&mut c, "res", "h0", a0, 1);
    assert_eq!(blocked_clients(&mut c), 1);
    ok(&mut c, &["FLUSHALL"]);
    let a1 = wa.granted();
    assert!(a1 > a0);
    assert_holder(&mut c, "res", "w0", a1, 0);
    // FLUSHALL also freed db 2's lock (no waiters there): gone.
    assert_gone(&mut c2, "res");
    assert_eq!(blocked_clients(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// Waiters that leave
// ---------------------------------------------------------------------------------------

#[test]
fn disconnected_and_killed_waiters_are_skipped() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let gone = queue(&s, &mut c, "res", "gone", LONG_TTL, 0, 1);
    let mut killed = queue(&s, &mut c, "res", "killed", LONG_TTL, 0, 2);
    let mut live = queue(&s, &mut c, "res", "live", LONG_TTL, 20_000, 3);
    let mut last = queue(&s, &mut c, "res", "last", LONG_TTL, 20_000, 4);
    assert_eq!(blocked_clients(&mut c), 4);

    gone.raw.close();
    wait_until(Duration::from_secs(10), "the closed waiter left the queue", || {
        lock_info(&mut c, "res").unwrap().waiters == 3
    });
    assert_eq!(int(&mut c, &["CLIENT", "KILL", "ID", &killed.id.to_string()]), 1);
    assert_eq!(lock_info(&mut c, "res").unwrap().waiters, 2, "a killed waiter stays in the queue");
    assert!(killed.try_reply().is_err(), "a killed waiter got a reply");
    await_blocked(&mut c, 2);
    assert_holder(&mut c, "res", "holder", t0, 2);

    assert_eq!(release(&mut c, "res", "holder"), 1);
    let i = held(&mut c, "res");
    assert_eq!(i.owner_str(), "live", "the lock went to a waiter that left: {i:?}");
    let t = live.granted();
    assert!(t > t0);
    assert_holder(&mut c, "res", "live", t, 1);
    last.assert_still_blocked();
    assert_eq!(release(&mut c, "res", "live"), 1);
    let t2 = last.granted();
    assert!(t2 > t);
    assert_holder(&mut c, "res", "last", t2, 0);
    // Neither leaver ever held it.
    assert_eq!(release(&mut c, "res", "gone"), 0);
    assert_eq!(release(&mut c, "res", "killed"), 0);
    assert_eq!(blocked_clients(&mut c), 0);

    // The only waiters leave: release and lease end then leave no key behind.
    let only = queue(&s, &mut c, "res", "only", LONG_TTL, 0, 1);
    let killed2 = queue(&s, &mut c, "res", "killed2", LONG_TTL, 0, 2);
    only.raw.close();
    assert_eq!(int(&mut c, &["CLIENT", "KILL", "ID", &killed2.id.to_string()]), 1);
    wait_until(Duration::from_secs(10), "both waiters left the queue", || {
        lock_info(&mut c, "res").unwrap().waiters == 0
    });
    assert_eq!(release(&mut c, "res", "last"), 1);
    assert_gone(&mut c, "res");

    let t3 = grant(&mut c, "res2", "holder", 300);
    let w = Waiter::lock(&s, "res2", "w", LONG_TTL, 0);
    await_blocked(&mut c, 1);
    w.raw.close();
    await_blocked(&mut c, 0);
    wait_until(Duration::from_secs(10), "the lease of res2 ended", || lock_info(&mut c, "res2").is_none());
    assert!(!exists(&mut c, "res2"), "an ended lock whose only waiter left kept its key");
    assert_eq!(dbsize(&mut c), 0);
    // And the name still works, with a larger token.
    assert!(grant(&mut c, "res2", "next", LONG_TTL) > t3);
    drop(killed);
}

#[test]
fn client_unblock_answers_nil_and_the_waiter_leaves_the_queue() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut first = queue(&s, &mut c, "res", "first", LONG_TTL, 0, 1);
    let mut second = queue(&s, &mut c, "res", "second", LONG_TTL, 20_000, 2);
    assert_eq!(int(&mut c, &["CLIENT", "UNBLOCK", &first.id.to_string()]), 1);
    assert_eq!(first.reply(), Reply::Nil, "CLIENT UNBLOCK (TIMEOUT) answers nil");
    assert_holder(&mut c, "res", "holder", t0, 1);
    assert_eq!(blocked_clients(&mut c), 1);
    // The unblocked client is a normal client again.
    assert_eq!(first.raw.cmd(&["PING"]).expect("PING"), Reply::Simple("PONG".into()));
    // Unblocking it again does nothing.
    assert_eq!(int(&mut c, &["CLIENT", "UNBLOCK", &first.id.to_string()]), 0);

    // ERROR mode: an error reply, and it leaves the queue too.
    let mut third = queue(&s, &mut c, "res", "third", LONG_TTL, 0, 2);
    assert_eq!(int(&mut c, &["CLIENT", "UNBLOCK", &third.id.to_string(), "ERROR"]), 1);
    match third.reply() {
        Reply::Err(e) => assert!(e.starts_with("UNBLOCKED"), "CLIENT UNBLOCK ERROR answered {e}"),
        other => panic!("CLIENT UNBLOCK ERROR: the waiter answered {other:?}"),
    }
    assert_holder(&mut c, "res", "holder", t0, 1);

    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t = second.granted();
    assert_holder(&mut c, "res", "second", t, 0);
    assert!(first.raw.nothing_received() && third.raw.nothing_received(), "an unblocked waiter got a second reply");
    assert_eq!(release(&mut c, "res", "first"), 0);
    assert_eq!(release(&mut c, "res", "third"), 0);
    assert_eq!(release(&mut c, "res", "second"), 1);
    assert_gone(&mut c, "res");
    assert_eq!(blocked_clients(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// MULTI/EXEC and scripts: a single try
// ---------------------------------------------------------------------------------------

#[test]
fn wait_inside_multi_and_scripts_is_a_single_try_that_never_blocks() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    // A short read timeout: a transaction or script that blocks fails fast.
    let mut r = Raw::connect(s.port, Duration::from_secs(8)).expect("connect");
    for wait in ["5000", "0"] {
        let items = r.exec_at_once(
            &[&["LOCK.ACQUIRE", "res", "bob", "600000", "WAIT", wait], &["LOCK.ACQUIRE", "free", "bob", "600000", "WAIT", wait]],
            &format!("EXEC with WAIT {wait}"),
        );
        assert_eq!(items[0], Reply::Nil, "WAIT {wait} in MULTI on a held lock");
        assert!(matches!(items[1], Reply::Int(t) if t > t0), "WAIT {wait} in MULTI on a free lock: {:?}", items[1]);
        assert_eq!(release(&mut c, "free", "bob"), 1);

        let script = "return redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], ARGV[2], 'WAIT', ARGV[3])";
        let v = r.cmd_at_once(&["EVAL", script, "1", "res", "bob", "600000", wait], &format!("EVAL with WAIT {wait}"));
        assert_eq!(v, Reply::Nil, "EVAL with WAIT {wait} on a held lock");
        let v = r.cmd(&["EVAL", script, "1", "free", "bob", "600000", wait]).unwrap();
        assert!(matches!(v, Reply::Int(_)), "EVAL with WAIT {wait} on a free lock answered {v:?}");
        assert_eq!(release(&mut c, "free", "bob"), 1);
    }
    // Functions are scripts too.
    let lib = "#!lua name=fl\nredis.register_function('acq', function(keys, args) \
               return redis.call('LOCK.ACQUIRE', keys[1], args[1], args[2], 'WAIT', args[3]) end)";
    assert_eq!(r.cmd(&["FUNCTION", "LOAD", lib]).unwrap(), Reply::Bulk(b"fl".to_vec()));
    assert_eq!(r.cmd_at_once(&["FCALL", "acq", "1", "res", "bob", "600000", "0"], "FCALL with WAIT 0"), Reply::Nil);

    assert_holder(&mut c, "res", "holder", t0, 0);
    assert_eq!(blocked_clients(&mut c), 0);
    // Nothing was queued behind the holder: the release leaves nothing.
    assert_eq!(release(&mut c, "res", "holder"), 1);
    assert_gone(&mut c, "res");
}

// ---------------------------------------------------------------------------------------
// Replication, AOF, DEBUG RELOAD
// ---------------------------------------------------------------------------------------

#[test]
fn handoff_reaches_the_replica() {
    let m = Server::start(&["repl-diskless-sync-delay 0"]);
    let r = Server::start_replica_of(&m, &[]);
    await_sync(&m, &r);
    let mut mc = m.conn();
    let mut rc = r.conn();

    // By release.
    let t0 = grant(&mut mc, "res", "holder", LONG_TTL);
    let mut w = queue(&m, &mut mc, "res", "waiter", LONG_TTL, 20_000, 1);
    assert_eq!(release(&mut mc, "res", "holder"), 1);
    let t = w.granted();
    assert!(t > t0);
    await_sync(&m, &r);
    let i = held(&mut rc, "res");
    assert_eq!((i.owner_str(), i.token, i.holds), ("waiter".into(), t, 1), "replica after a handoff by release");

    // By lease end.
    let l0 = grant(&mut mc, "lease", "holder", 300);
    let mut lw = Waiter::lock(&m, "lease", "lw", LONG_TTL, 20_000);
    await_blocked(&mut mc, 1);
    let l = lw.granted();
    assert!(l > l0);
    await_sync(&m, &r);
    let i = held(&mut rc, "lease");
    assert_eq!((i.owner_str(), i.token, i.holds), ("lw".into(), l, 1), "replica after a handoff by lease end");

    // By DEL.
    let mut dw = queue(&m, &mut mc, "res", "dw", LONG_TTL, 20_000, 1);
    assert_eq!(int(&mut mc, &["DEL", "res"]), 1);
    let d = dw.granted();
    assert!(d > t);
    await_sync(&m, &r);
    let i = held(&mut rc, "res");
    assert_eq!((i.owner_str(), i.token, i.holds), ("dw".into(), d, 1), "replica after a handoff by DEL");

    // The tokens a promoted replica issues are above the grants it saw.
    assert_eq!(digest(&mut mc), digest(&mut rc));
    assert_eq!(blocked_clients(&mut mc), 0);
    ok(&mut rc, &["REPLICAOF", "NO", "ONE"]);
    assert_eq!(release(&mut rc, "res", "dw"), 1);
    assert!(grant(&mut rc, "res", "after", LONG_TTL) > d);
}

#[test]
fn a_granted_waiter_survives_debug_reload_and_aof_reload() {
    let s = Server::start(&["appendonly yes", "appendfsync always"]);
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut w = queue(&s, &mut c, "res", "waiter", LONG_TTL, 20_000, 1);
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t = w.granted();
    assert!(t > t0);
    let before = held(&mut c, "res");

    ok(&mut c, &["DEBUG", "RELOAD"]);
    let i = held(&mut c, "res");
    assert_eq!((i.owner_str(), i.token, i.holds, i.waiters), ("waiter".into(), t, 1, 0), "after DEBUG RELOAD");
    assert!(i.ttl <= before.ttl, "lease grew across DEBUG RELOAD: {} > {}", i.ttl, before.ttl);

    ok(&mut c, &["DEBUG", "LOADAOF"]);
    let i = held(&mut c, "res");
    assert_eq!((i.owner_str(), i.token, i.holds, i.waiters), ("waiter".into(), t, 1, 0), "after DEBUG LOADAOF");
    assert!(i.ttl <= before.ttl, "lease grew across DEBUG LOADAOF: {} > {}", i.ttl, before.ttl);

    // The grant still behaves like one: reentrant with the same token, releasable.
    assert_eq!(acquire(&mut c, "res", "waiter", LONG_TTL), Some(t));
    assert_eq!(release(&mut c, "res", "waiter"), 1);
    assert_eq!(release(&mut c, "res", "waiter"), 1);
    assert_gone(&mut c, "res");
    assert!(grant(&mut c, "res", "next", LONG_TTL) > t);
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn a_waiter_still_blocked_across_debug_reload_is_granted_afterwards() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut w = queue(&s, &mut c, "res", "waiter", LONG_TTL, 0, 1);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    w.assert_still_blocked();
    assert_holder(&mut c, "res", "holder", t0, 1);
    assert_eq!(blocked_clients(&mut c), 1);
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t = w.granted();
    assert!(t > t0);
    assert_holder(&mut c, "res", "waiter", t, 0);
    assert_eq!(blocked_clients(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// Concurrency and scale
// ---------------------------------------------------------------------------------------

#[test]
fn contending_threads_get_mutual_exclusion_and_increasing_tokens() {
    let s = Server::new();
    const THREADS: usize = 16;
    const ROUNDS: usize = 10;
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let granted = tokens.clone();
    contend(&s, THREADS, ROUNDS, move |con, _, owner| {
        let v = raws(con, &["LOCK.ACQUIRE", "res", owner, "600000", "WAIT", "0"]);
        let Value::Int(t) = v else { panic!("{owner}: WAIT 0 answered {v:?}") };
        assert!(!inside.swap(true, Ordering::SeqCst), "{owner} was granted while another held the lock");
        let i = held(con, "res");
        assert_eq!((i.owner_str(), i.token), (owner.to_string(), t));
        granted.lock().unwrap().push(t);
        inside.store(false, Ordering::SeqCst);
        assert_eq!(release(con, "res", owner), 1);
    });
    let tokens = tokens.lock().unwrap();
    assert_eq!(tokens.len(), THREADS * ROUNDS);
    for pair in tokens.windows(2) {
        assert!(pair[1] > pair[0], "tokens in grant order do not increase: {} then {}", pair[0], pair[1]);
    }
    let mut c = s.conn();
    assert_gone(&mut c, "res");
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn scale_200_waiters_on_one_lock_are_granted_in_arrival_order() {
    let s = Server::new();
    let mut c = s.conn();
    const N: usize = 200;
    let t0 = grant(&mut c, "res", "holder", LONG_TTL);
    let mut ws: Vec<Waiter> = Vec::with_capacity(N);
    for i in 0..N {
        ws.push(queue(&s, &mut c, "res", &format!("w{i}"), LONG_TTL, 60_000, i as i64 + 1));
    }
    assert_eq!(blocked_clients(&mut c), N as i64);
    let mut last = t0;
    let mut prev = "holder".to_string();
    for (i, w) in ws.iter_mut().enumerate() {
        assert_eq!(release(&mut c, "res", &prev), 1, "release by {prev}");
        let info = held(&mut c, "res");
        assert_eq!(info.owner_str(), w.owner, "grant {i} went out of arrival order");
        assert_eq!(info.waiters, (N - i - 1) as i64);
        let t = w.granted();
        assert_eq!(info.token, t);
        assert!(t > last, "token {t} of {} not above {last}", w.owner);
        last = t;
        prev = w.owner.clone();
    }
    assert_eq!(release(&mut c, "res", &prev), 1);
    assert_gone(&mut c, "res");
    assert_eq!(blocked_clients(&mut c), 0);
}

#[test]
fn scale_500_locks_each_with_a_waiter_hand_off_by_lease_end() {
    let s = Server::new();
    let mut c = s.conn();
    const N: usize = 500;
    let key = |i: usize| format!("lock:{i}");
    let mut p = redis::pipe();
    for i in 0..N {
        p.cmd("LOCK.ACQUIRE").arg(key(i)).arg(format!("h{i}")).arg(LONG_TTL);
    }
    let holder_tokens: Vec<i64> = p.query(&mut c).expect("pipelined grants");
    let mut ws: Vec<Waiter> = (0..N).map(|i| Waiter::lock(&s, &key(i), &format!("w{i}"), LONG_TTL, 60_000)).collect();
    await_blocked(&mut c, N as i64);
    // Cut every holder's lease short; nobody releases.
    let mut p = redis::pipe();
    for i in 0..N {
        p.cmd("LOCK.EXTEND").arg(key(i)).arg(format!("h{i}")).arg(1 + (i % 50));
    }
    let extended: Vec<i64> = p.query(&mut c).expect("pipelined extends");
    assert!(extended.iter().all(|&e| e == 1), "LOCK.EXTEND by the holders: {extended:?}");
    for (i, w) in ws.iter_mut().enumerate() {
        let t = w.granted();
        assert!(t > holder_tokens[i], "{}: token {t} not above {}", key(i), holder_tokens[i]);
    }
    let mut p = redis::pipe();
    for i in 0..N {
        p.cmd("LOCK.INFO").arg(key(i));
    }
    let infos: Vec<Value> = p.query(&mut c).expect("pipelined LOCK.INFO");
    for (i, v) in infos.iter().enumerate() {
        let info = parse_lock_info(v).unwrap_or_else(|| panic!("{} is free after its handoff", key(i)));
        assert_eq!(info.owner_str(), format!("w{i}"));
        assert_eq!((info.holds, info.waiters), (1, 0));
    }
    assert_eq!(dbsize(&mut c), N as i64);
    assert_eq!(blocked_clients(&mut c), 0);
}
