//! The read-write lock: RWLOCK.RLOCK, RWLOCK.WLOCK, RWLOCK.RUNLOCK, RWLOCK.WUNLOCK,
//! RWLOCK.EXTEND and RWLOCK.INFO against the contract (shared reads, exclusive writes,
//! writer preference, readers granted together, downgrade, upgrade, per-holder leases),
//! tokens, errors, WRONGTYPE and MULTI/EVAL. (Durability and replication of the state
//! are in `durability.rs` and `replication.rs`, with the other lock kinds.)
//!
//! Blocking acquires run on their own connection (`support::Waiter`); that a waiter is
//! queued is awaited through `RWLOCK.INFO`'s `waiters`, never with a fixed sleep.

mod support;

use std::time::{Duration, Instant};

use redis::Value;
use support::*;

// ---------------------------------------------------------------------------------------
// Shared reads, exclusive writes
// ---------------------------------------------------------------------------------------

#[test]
fn readers_share_the_lock_each_with_its_own_token_lease_and_holds() {
    let s = Server::new();
    let mut c = s.conn();
    let t1 = rgrant(&mut c, "rw", "r1", 100_000);
    let t2 = rgrant(&mut c, "rw", "r2", 300_000);
    let t3 = rgrant(&mut c, "rw", "r3", LONG_TTL);
    assert!(t1 < t2 && t2 < t3, "tokens {t1}, {t2}, {t3} do not increase");
    assert_eq!(key_type(&mut c, "rw"), "lockrwlck");
    assert_eq!(int(&mut c, &["PTTL", "rw"]), -1, "the leases must not be a Redis TTL");
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "read");
    assert_eq!(i.waiters, 0);
    assert_eq!(i.who(), who(&[("r1", "read"), ("r2", "read"), ("r3", "read")]));
    for (owner, token, ttl) in [("r1", t1, 100_000), ("r2", t2, 300_000), ("r3", t3, LONG_TTL)] {
        let h = i.holder(owner, "read");
        assert_eq!((h.token, h.holds), (token, 1), "{owner}");
        assert!(h.ttl <= ttl && h.ttl > ttl - 10_000, "{owner}: ttl {} for a lease of {ttl}", h.ttl);
    }
    // Reentry: same token, one more hold, a fresh lease (reset, not max).
    assert_eq!(rlock(&mut c, "rw", "r1", 500_000), Some(t1));
    let h = rw_held(&mut c, "rw").holder("r1", "read").clone();
    assert_eq!((h.token, h.holds), (t1, 2));
    assert!(h.ttl > 100_000 && h.ttl <= 500_000, "lease not reset to 500000: {}", h.ttl);
    assert_eq!(rlock(&mut c, "rw", "r1", 50_000), Some(t1));
    let h = rw_held(&mut c, "rw").holder("r1", "read").clone();
    assert_eq!((h.token, h.holds), (t1, 3));
    assert!(h.ttl <= 50_000, "lease not reset to 50000: {}", h.ttl);
    // Readers hold: a writer is refused and nothing changes.
    assert_eq!(wlock(&mut c, "rw", "w", LONG_TTL), None);
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.who(), who(&[("r1", "read"), ("r2", "read"), ("r3", "read")]));
    assert_eq!(i.waiters, 0);
    // Unlocks count down per holder; the wrong mode or owner answers 0.
    assert_eq!(wunlock(&mut c, "rw", "r2"), 0, "r2 holds read, not write");
    assert_eq!(runlock(&mut c, "rw", "nobody"), 0);
    for left in [2, 1] {
        assert_eq!(runlock(&mut c, "rw", "r1"), 1);
        assert_eq!(rw_held(&mut c, "rw").holder("r1", "read").holds, left);
    }
    assert_eq!(runlock(&mut c, "rw", "r1"), 1);
    assert!(rw_held(&mut c, "rw").get("r1", "read").is_none());
    assert_eq!(runlock(&mut c, "rw", "r1"), 0);
    assert_eq!(runlock(&mut c, "rw", "r2"), 1);
    assert_eq!(rw_held(&mut c, "rw").who(), who(&[("r3", "read")]));
    assert_eq!(runlock(&mut c, "rw", "r3"), 1);
    // Free: no key, INFO nil.
    assert!(!exists(&mut c, "rw"));
    assert_eq!(dbsize(&mut c), 0);
    assert!(rw_info(&mut c, "rw").is_none());
    assert_eq!(runlock(&mut c, "rw", "r3"), 0);
    assert!(!exists(&mut c, "rw"));
}

#[test]
fn a_writer_holds_alone() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "w", 100_000);
    assert_eq!(key_type(&mut c, "rw"), "lockrwlck");
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "write");
    assert_eq!(i.who(), who(&[("w", "write")]));
    assert_eq!((i.holder("w", "write").token, i.holder("w", "write").holds), (tw, 1));
    // Nobody else reads or writes.
    assert_eq!(rlock(&mut c, "rw", "r", LONG_TTL), None);
    assert_eq!(wlock(&mut c, "rw", "x", LONG_TTL), None);
    assert_eq!(runlock(&mut c, "rw", "w"), 0, "w holds write, not read");
    assert_eq!(wunlock(&mut c, "rw", "x"), 0);
    assert_eq!(rwextend(&mut c, "rw", "x", LONG_TTL), 0);
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.who(), who(&[("w", "write")]));
    assert_eq!((i.holder("w", "write").token, i.holder("w", "write").holds), (tw, 1));
    assert!(i.holder("w", "write").ttl <= 100_000);
    // Reentry.
    assert_eq!(wlock(&mut c, "rw", "w", 200_000), Some(tw));
    let h = rw_held(&mut c, "rw").holder("w", "write").clone();
    assert_eq!((h.token, h.holds), (tw, 2));
    assert!(h.ttl > 100_000 && h.ttl <= 200_000, "lease not reset to 200000: {}", h.ttl);
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    assert_eq!(rw_held(&mut c, "rw").holder("w", "write").holds, 1);
    assert_eq!(rlock(&mut c, "rw", "r", LONG_TTL), None, "still written by w");
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    assert!(!exists(&mut c, "rw"));
    assert_eq!(wunlock(&mut c, "rw", "w"), 0);
    // Now a reader gets it, and the writer is refused.
    let tr = rgrant(&mut c, "rw", "r", LONG_TTL);
    assert!(tr > tw);
    assert_eq!(wlock(&mut c, "rw", "w", LONG_TTL), None);
}

// ---------------------------------------------------------------------------------------
// Waiting: writer preference, arrival order, readers granted together
// ---------------------------------------------------------------------------------------

#[test]
fn a_waiting_writer_stops_new_readers() {
    let s = Server::new();
    let mut c = s.conn();
    let t1 = rgrant(&mut c, "rw", "r1", LONG_TTL);
    let mut w = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "w", LONG_TTL, 0).queued_rw(&mut c, 1);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("r1", "read")]), 1));
    // A reader arriving after the queued writer: nil without WAIT ...
    assert_eq!(rlock(&mut c, "rw", "r2", LONG_TTL), None, "a reader overtook a waiting writer");
    // ... and blocked with WAIT.
    let mut r2 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r2", LONG_TTL, 0).queued_rw(&mut c, 2);
    assert_eq!(rw_held(&mut c, "rw").who(), who(&[("r1", "read")]));
    // Reentry of the current reader is granted even though others wait.
    assert_eq!(rlock(&mut c, "rw", "r1", LONG_TTL), Some(t1));
    assert_eq!(rw_held(&mut c, "rw").holder("r1", "read").holds, 2);
    w.assert_still_blocked();
    r2.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "r1"), 1);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.who(), i.waiters), (who(&[("r1", "read")]), 2), "r1 still holds once");
    w.assert_still_blocked();
    // The last read hold goes: the writer is granted, the later reader is not.
    assert_eq!(runlock(&mut c, "rw", "r1"), 1);
    let tw = w.granted();
    assert!(tw > t1, "writer token {tw} not above {t1}");
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("w", "write")]), 1));
    assert_eq!(i.holder("w", "write").token, tw);
    r2.assert_still_blocked();
    assert_eq!(rlock(&mut c, "rw", "r3", LONG_TTL), None);
    // The writer leaves: now the reader gets it.
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    let tr2 = r2.granted();
    assert!(tr2 > tw, "reader token {tr2} not above the writer's {tw}");
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("r2", "read")]), 0));
    assert_eq!(i.holder("r2", "read").token, tr2);
}

#[test]
fn a_writer_whose_wait_times_out_answers_nil_and_stops_blocking_readers() {
    let s = Server::new();
    let mut c = s.conn();
    let t1 = rgrant(&mut c, "rw", "r1", LONG_TTL);
    let started = Instant::now();
    let mut w = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "w", LONG_TTL, 1_000).queued_rw(&mut c, 1);
    assert_eq!(rlock(&mut c, "rw", "r2", LONG_TTL), None, "a reader overtook a waiting writer");
    assert_eq!(w.reply(), Reply::Nil, "a timed-out WLOCK answers nil");
    assert!(started.elapsed() >= Duration::from_millis(900), "WAIT 1000 gave up after {:?}", started.elapsed());
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.who(), i.waiters), (who(&[("r1", "read")]), 0));
    assert_eq!(i.holder("r1", "read").token, t1);
    let t2 = rgrant(&mut c, "rw", "r2", LONG_TTL);
    assert!(t2 > t1);
    assert_eq!(rw_held(&mut c, "rw").who(), who(&[("r1", "read"), ("r2", "read")]));
}

#[test]
fn readers_behind_a_waiting_writer_that_gives_up_are_granted() {
    let s = Server::new();
    let mut c = s.conn();
    let t1 = rgrant(&mut c, "rw", "r1", LONG_TTL);
    // The writer's WAIT times out: the reader behind it joins r1 at once.
    let mut w = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "w", LONG_TTL, 800).queued_rw(&mut c, 1);
    let mut r2 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r2", LONG_TTL, 0).queued_rw(&mut c, 2);
    r2.assert_still_blocked();
    assert_eq!(w.reply(), Reply::Nil);
    let t2 = r2.granted();
    assert!(t2 > t1);
    // CLIENT UNBLOCK of the writer: nil for it (as BLPOP), the reader behind it is let in.
    let mut w = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "w", LONG_TTL, 0).queued_rw(&mut c, 1);
    let mut r3 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r3", LONG_TTL, 0).queued_rw(&mut c, 2);
    assert_eq!(int(&mut c, &["CLIENT", "UNBLOCK", &w.id.to_string()]), 1);
    assert_eq!(w.reply(), Reply::Nil, "an unblocked WLOCK answers nil");
    let t3 = r3.granted();
    assert!(t3 > t2);
    // The writer's connection goes away: same.
    let mut w = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "w", LONG_TTL, 0).queued_rw(&mut c, 1);
    let mut r4 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r4", LONG_TTL, 0).queued_rw(&mut c, 2);
    assert_eq!(int(&mut c, &["CLIENT", "KILL", "ID", &w.id.to_string()]), 1);
    w.assert_disconnected();
    let t4 = r4.granted();
    assert!(t4 > t3);
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.who(), who(&[("r1", "read"), ("r2", "read"), ("r3", "read"), ("r4", "read")]));
    assert_eq!(i.waiters, 0);
    assert!(i.get("w", "write").is_none());
}

#[test]
fn deleting_a_held_lock_lets_its_waiters_in() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "w", LONG_TTL);
    let (mut r, mut x) = queue_reader_then_writer(&s, &mut c);
    assert_eq!(int(&mut c, &["DEL", "rw"]), 1);
    // The lock is free: the reader at the head gets it, the writer behind it waits.
    let tr = r.granted();
    assert!(tr > tw, "token {tr} after DEL not above {tw}");
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("r", "read")]), 1));
    assert_eq!(key_type(&mut c, "rw"), "lockrwlck");
    x.assert_still_blocked();
    // FLUSHALL: the same for the writer.
    ok(&mut c, &["FLUSHALL"]);
    let tx = x.granted();
    assert!(tx > tr, "token {tx} after FLUSHALL not above {tr}");
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("x", "write")]), 0));
    assert_eq!(wunlock(&mut c, "rw", "w"), 0);
}

#[test]
fn readers_queued_behind_a_writer_are_granted_together_when_it_leaves() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "w", LONG_TTL);
    // Queue, in this order: reader, reader, writer, reader.
    let mut r1 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r1", LONG_TTL, 0).queued_rw(&mut c, 1);
    let mut r2 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r2", LONG_TTL, 0).queued_rw(&mut c, 2);
    let mut w2 = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "w2", LONG_TTL, 0).queued_rw(&mut c, 3);
    let mut r3 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r3", LONG_TTL, 0).queued_rw(&mut c, 4);
    for x in [&r1, &r2, &w2, &r3] {
        x.assert_still_blocked();
    }
    // One WUNLOCK: both readers at the head are granted.
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    let t1 = r1.granted();
    let t2 = r2.granted();
    assert!(t1 > tw && t2 > tw, "reader tokens {t1}, {t2} not above the writer's {tw}");
    assert_ne!(t1, t2);
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "read");
    assert_eq!(i.who(), who(&[("r1", "read"), ("r2", "read")]), "both queued readers hold after one WUNLOCK");
    assert_eq!(i.holder("r1", "read").token, t1);
    assert_eq!(i.holder("r2", "read").token, t2);
    assert_eq!(i.waiters, 2, "the writer and the reader behind it still wait");
    w2.assert_still_blocked();
    r3.assert_still_blocked();
    // The next writer waits for both readers; the reader behind it waits for it.
    assert_eq!(runlock(&mut c, "rw", "r1"), 1);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.who(), i.waiters), (who(&[("r2", "read")]), 2));
    w2.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "r2"), 1);
    let tw2 = w2.granted();
    assert!(tw2 > t1 && tw2 > t2);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("w2", "write")]), 1));
    r3.assert_still_blocked();
    assert_eq!(wunlock(&mut c, "rw", "w2"), 1);
    let t3 = r3.granted();
    assert!(t3 > tw2);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("r3", "read")]), 0));
}

// ---------------------------------------------------------------------------------------
// Downgrade, upgrade, extend
// ---------------------------------------------------------------------------------------

#[test]
fn downgrade_is_granted_at_once_and_the_owner_holds_both_modes_until_wunlock() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "a", LONG_TTL);
    // Waiters queued: a reader, then a writer.
    let (mut r, mut x) = queue_reader_then_writer(&s, &mut c);
    // The writer takes the read lock at once, with a new token, though others wait.
    let ta = rlock(&mut c, "rw", "a", 300_000).expect("downgrade granted at once");
    assert!(ta > tw, "downgrade token {ta} not above the write token {tw}");
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "write", "the writer still holds the write lock");
    assert_eq!(i.who(), who(&[("a", "read"), ("a", "write")]));
    assert_eq!((i.holder("a", "write").token, i.holder("a", "write").holds), (tw, 1));
    assert_eq!((i.holder("a", "read").token, i.holder("a", "read").holds), (ta, 1));
    assert!(i.holder("a", "read").ttl <= 300_000, "the read hold has its own lease");
    assert_eq!(i.waiters, 2);
    assert_eq!(rlock(&mut c, "rw", "other", LONG_TTL), None, "still written by a");
    r.assert_still_blocked();
    x.assert_still_blocked();
    // Reentry of the read hold by the downgraded owner.
    assert_eq!(rlock(&mut c, "rw", "a", 300_000), Some(ta));
    assert_eq!(runlock(&mut c, "rw", "a"), 1);
    // The write hold goes: a reads, the queued reader joins it, the writer waits.
    assert_eq!(wunlock(&mut c, "rw", "a"), 1);
    let tr = r.granted();
    assert!(tr > ta);
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "read");
    assert_eq!(i.who(), who(&[("a", "read"), ("r", "read")]));
    assert_eq!(i.holder("a", "read").token, ta);
    assert_eq!(i.waiters, 1);
    x.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "a"), 1);
    x.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "r"), 1);
    let tx = x.granted();
    assert!(tx > tr);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("x", "write")]), 0));
}

#[test]
fn sole_reader_upgrades_at_once_and_waits_while_another_reader_holds() {
    let s = Server::new();
    let mut c = s.conn();
    let ta = rgrant(&mut c, "rw", "a", LONG_TTL);
    // Sole reader: granted at once, new token, both modes held.
    let tu = wlock(&mut c, "rw", "a", LONG_TTL).expect("upgrade of the sole reader granted at once");
    assert!(tu > ta);
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "write");
    assert_eq!(i.who(), who(&[("a", "read"), ("a", "write")]));
    assert_eq!(i.holder("a", "read").token, ta);
    assert_eq!(i.holder("a", "write").token, tu);
    assert_eq!(rlock(&mut c, "rw", "b", LONG_TTL), None, "a writes");
    assert_eq!(wunlock(&mut c, "rw", "a"), 1);
    assert_eq!(rw_held(&mut c, "rw").who(), who(&[("a", "read")]));
    // Another reader joins: the upgrade without WAIT is nil and changes nothing ...
    let tb = rgrant(&mut c, "rw", "b", LONG_TTL);
    assert_eq!(wlock(&mut c, "rw", "a", LONG_TTL), None, "upgrade while b reads");
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("a", "read"), ("b", "read")]), 0));
    // ... and with WAIT it waits like any writer, blocking later readers.
    let mut up = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "a", LONG_TTL, 0).queued_rw(&mut c, 1);
    assert_eq!(rlock(&mut c, "rw", "c", LONG_TTL), None, "a reader overtook the waiting upgrade");
    up.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "b"), 1);
    let tu2 = up.granted();
    assert!(tu2 > tb, "upgrade token {tu2} not above {tb}");
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.waiters), ("write", 0));
    assert_eq!(i.who(), who(&[("a", "read"), ("a", "write")]));
    assert_eq!(i.holder("a", "read").token, ta);
    assert_eq!(i.holder("a", "write").token, tu2);
    assert_eq!(rlock(&mut c, "rw", "c", LONG_TTL), None);
}

#[test]
fn sole_reader_upgrade_is_granted_even_while_a_writer_waits() {
    let s = Server::new();
    let mut c = s.conn();
    let ta = rgrant(&mut c, "rw", "a", LONG_TTL);
    let mut x = Waiter::acquire(&s, "RWLOCK.WLOCK", "rw", "x", LONG_TTL, 0).queued_rw(&mut c, 1);
    let tu = wlock(&mut c, "rw", "a", LONG_TTL).expect("the only reader's upgrade is granted");
    assert!(tu > ta);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("a", "read"), ("a", "write")]), 1));
    x.assert_still_blocked();
    assert_eq!(wunlock(&mut c, "rw", "a"), 1);
    x.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "a"), 1);
    let tx = x.granted();
    assert!(tx > tu);
    assert_eq!(rw_held(&mut c, "rw").who(), who(&[("x", "write")]));
}

#[test]
fn extend_gives_every_hold_of_the_owner_the_new_lease() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "a", 100_000);
    let tr = rlock(&mut c, "rw", "a", 50_000).expect("downgrade");
    assert_eq!(rwextend(&mut c, "rw", "a", 400_000), 1);
    let i = rw_held(&mut c, "rw");
    for (mode, token) in [("write", tw), ("read", tr)] {
        let h = i.holder("a", mode);
        assert_eq!((h.token, h.holds), (token, 1), "extend is not a re-acquire ({mode})");
        assert!(h.ttl > 300_000 && h.ttl <= 400_000, "{mode} hold not extended to 400000: {}", h.ttl);
    }
    // Shorter: reset, not max.
    assert_eq!(rwextend(&mut c, "rw", "a", 20_000), 1);
    let i = rw_held(&mut c, "rw");
    for mode in ["write", "read"] {
        let h = i.holder("a", mode);
        assert!(h.ttl <= 20_000, "{mode} hold not reset to 20000: {}", h.ttl);
    }
    // Others: 0, nothing changes.
    assert_eq!(rwextend(&mut c, "rw", "b", 900_000), 0);
    let j = rw_held(&mut c, "rw");
    assert_eq!(j.who(), who(&[("a", "read"), ("a", "write")]));
    assert!(j.holders.iter().all(|h| h.ttl <= 20_000));
    // Free key: 0, no key appears.
    assert_eq!(rwextend(&mut c, "free", "a", 1000), 0);
    assert!(!exists(&mut c, "free"));
    assert_eq!(dbsize(&mut c), 1);
}

// ---------------------------------------------------------------------------------------
// Leases end by themselves
// ---------------------------------------------------------------------------------------

#[test]
fn each_holders_lease_ends_by_itself_without_any_client_touching_the_key() {
    let s = Server::new();
    let mut c = s.conn();
    // An observer that never looks the key up: DBSIZE and DEBUG DIGEST walk the keyspace
    // without touching keys.
    let mut o = s.conn();
    let t_short = rgrant(&mut c, "rw", "short", 300);
    let t_long = rgrant(&mut c, "rw", "long", 1_500);
    let d0 = digest(&mut o);
    // The short lease ends on the server: the stored state changes with nobody touching it.
    wait_until(PATIENCE, "the stored state changed when the 300 ms lease ended", || digest(&mut o) != d0);
    assert_eq!(dbsize(&mut o), 1, "the long holder keeps the key");
    let i = rw_held(&mut c, "rw");
    assert_eq!(i.mode, "read");
    assert_eq!(i.who(), who(&[("long", "read")]), "only the short lease ended");
    assert_eq!((i.holder("long", "read").token, i.holder("long", "read").holds), (t_long, 1));
    assert_eq!(runlock(&mut c, "rw", "short"), 0, "runlock after the lease ended");
    assert_eq!(rwextend(&mut c, "rw", "short", LONG_TTL), 0, "extend after the lease ended");
    assert_eq!(rw_held(&mut c, "rw").who(), who(&[("long", "read")]));
    // Then the long one ends, and the key goes, again with nobody touching it.
    wait_until(PATIENCE, "the 1500 ms lease ended by itself (DBSIZE 0)", || dbsize(&mut o) == 0);
    assert!(!exists(&mut c, "rw"));
    assert!(rw_info(&mut c, "rw").is_none());
    assert_eq!(runlock(&mut c, "rw", "long"), 0);
    assert!(!exists(&mut c, "rw"));
    let t = rgrant(&mut c, "rw", "next", LONG_TTL);
    assert!(t > t_long && t > t_short, "token {t} after lease end not above {t_long}");
}

#[test]
fn a_lease_that_ends_hands_the_lock_to_the_waiters() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "w", 700);
    let mut r1 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r1", LONG_TTL, 0).queued_rw(&mut c, 1);
    let mut r2 = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r2", LONG_TTL, 0).queued_rw(&mut c, 2);
    // Nobody touches the key: the writer's lease end alone grants both readers.
    let t1 = r1.granted();
    let t2 = r2.granted();
    assert!(t1 > tw && t2 > tw);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("r1", "read"), ("r2", "read")]), 0));
    assert_eq!(wunlock(&mut c, "rw", "w"), 0, "the writer's lease is over");
}

#[test]
fn a_downgraded_owners_write_lease_ends_by_itself_and_its_read_hold_stays() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "a", 600);
    let ta = rlock(&mut c, "rw", "a", LONG_TTL).expect("downgrade");
    let mut r = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "r", LONG_TTL, 0).queued_rw(&mut c, 1);
    // Nobody touches the key: the write hold's end lets the queued reader join a's read.
    let tr = r.granted();
    assert!(tr > ta && ta > tw);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("read", who(&[("a", "read"), ("r", "read")]), 0));
    assert_eq!(i.holder("a", "read").token, ta);
    assert_eq!(wunlock(&mut c, "rw", "a"), 0, "the write lease is over");
    assert_eq!(runlock(&mut c, "rw", "a"), 1, "the read hold is not");
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

#[test]
fn tokens_strictly_increase_across_fresh_grants() {
    let s = Server::new();
    let mut c = s.conn();
    let mut o = s.conn();
    let mut last = 0i64;
    let mut fresh = |t: i64, what: &str| {
        assert!(t > last, "{what}: token {t} not above the previous fresh grant {last}");
        last = t;
    };
    let ta = rgrant(&mut c, "rw", "a", LONG_TTL);
    fresh(ta, "first reader");
    let tb = rgrant(&mut c, "rw", "b", LONG_TTL);
    fresh(tb, "second reader");
    assert_eq!(rlock(&mut c, "rw", "a", LONG_TTL), Some(ta), "reentry returns the held token");
    assert_eq!(runlock(&mut c, "rw", "a"), 1);
    assert_eq!(runlock(&mut c, "rw", "a"), 1);
    assert_eq!(runlock(&mut c, "rw", "b"), 1);
    assert!(!exists(&mut c, "rw"));
    fresh(wgrant(&mut c, "rw", "w", LONG_TTL), "writer after release");
    fresh(rgrant(&mut c, "rw", "w", LONG_TTL), "downgrade");
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    fresh(wgrant(&mut c, "rw", "w", LONG_TTL), "upgrade");
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    assert_eq!(runlock(&mut c, "rw", "w"), 1);
    // A grant to a waiter.
    fresh(wgrant(&mut c, "rw", "w", LONG_TTL), "writer");
    let mut q = Waiter::acquire(&s, "RWLOCK.RLOCK", "rw", "q", LONG_TTL, 0).queued_rw(&mut c, 1);
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    fresh(q.granted(), "waiter");
    assert_eq!(runlock(&mut c, "rw", "q"), 1);
    // After a lease end.
    fresh(rgrant(&mut c, "rw", "brief", 30), "short lease");
    wait_until(PATIENCE, "the 30 ms lease ended", || dbsize(&mut o) == 0);
    fresh(wgrant(&mut c, "rw", "w", LONG_TTL), "after lease end");
    // After DEL, UNLINK, FLUSHALL.
    assert_eq!(int(&mut c, &["DEL", "rw"]), 1);
    assert!(rw_info(&mut c, "rw").is_none());
    fresh(wgrant(&mut c, "rw", "w", LONG_TTL), "after DEL");
    assert_eq!(rw_held(&mut c, "rw").holder("w", "write").holds, 1, "DEL then WLOCK is a fresh grant");
    assert_eq!(int(&mut c, &["UNLINK", "rw"]), 1);
    fresh(rgrant(&mut c, "rw", "r", LONG_TTL), "after UNLINK");
    ok(&mut c, &["FLUSHALL"]);
    fresh(rgrant(&mut c, "rw", "r", LONG_TTL), "after FLUSHALL");
    // The same name as a mutex, then as a rwlock again: one key, one increasing sequence.
    assert_eq!(int(&mut c, &["DEL", "rw"]), 1);
    fresh(grant(&mut c, "rw", "m", LONG_TTL), "mutex under the same name");
    assert_eq!(int(&mut c, &["DEL", "rw"]), 1);
    fresh(wgrant(&mut c, "rw", "w", LONG_TTL), "rwlock after the mutex");
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    // Many fresh grants, pipelined, alternating modes.
    let mut p = redis::pipe();
    for i in 0..500 {
        let (lock, unlock) = if i % 3 == 0 { ("RWLOCK.WLOCK", "RWLOCK.WUNLOCK") } else { ("RWLOCK.RLOCK", "RWLOCK.RUNLOCK") };
        let owner = format!("o{i}");
        p.cmd(lock).arg("rw").arg(&owner).arg(LONG_TTL);
        p.cmd(unlock).arg("rw").arg(&owner);
    }
    let replies: Vec<i64> = p.query(&mut c).expect("pipelined lock/unlock");
    for (i, pair) in replies.chunks(2).enumerate() {
        fresh(pair[0], &format!("pipelined grant {i}"));
        assert_eq!(pair[1], 1, "unlock of a just-granted hold");
    }
    assert_eq!(dbsize(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// Wrong types and bad arguments
// ---------------------------------------------------------------------------------------

#[test]
fn wrongtype_both_ways_changes_nothing_and_never_blocks() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    let tm = grant(&mut c, "mutex", "alice", LONG_TTL);
    assert_eq!(key_type(&mut c, "mutex"), "lockmutex");
    let tr = rgrant(&mut c, "rw", "reader", LONG_TTL);
    assert_eq!(key_type(&mut c, "rw"), "lockrwlck");
    let f = fence_next(&mut c, "fence");
    ok(&mut c, &["SET", "str", "value"]);
    let mut cases: Vec<Vec<&str>> = vec![];
    for k in ["mutex", "fence", "str"] {
        cases.push(vec!["RWLOCK.RLOCK", k, "bob", "1000"]);
        cases.push(vec!["RWLOCK.RLOCK", k, "bob", "1000", "WAIT", "0"]);
        cases.push(vec!["RWLOCK.WLOCK", k, "bob", "1000"]);
        cases.push(vec!["RWLOCK.WLOCK", k, "bob", "1000", "WAIT", "0"]);
        cases.push(vec!["RWLOCK.WLOCK", k, "alice", "1000"]);
        cases.push(vec!["RWLOCK.RUNLOCK", k, "alice"]);
        cases.push(vec!["RWLOCK.WUNLOCK", k, "alice"]);
        cases.push(vec!["RWLOCK.EXTEND", k, "alice", "1000"]);
        cases.push(vec!["RWLOCK.INFO", k]);
    }
    cases.push(vec!["LOCK.ACQUIRE", "rw", "bob", "1000"]);
    cases.push(vec!["LOCK.ACQUIRE", "rw", "bob", "1000", "WAIT", "0"]);
    cases.push(vec!["LOCK.ACQUIRE", "rw", "reader", "1000"]);
    cases.push(vec!["LOCK.RELEASE", "rw", "reader"]);
    cases.push(vec!["LOCK.EXTEND", "rw", "reader", "1000"]);
    cases.push(vec!["LOCK.INFO", "rw"]);
    cases.push(vec!["FENCE.NEXT", "rw"]);
    cases.push(vec!["FENCE.CHECK", "rw", "1"]);
    cases.push(vec!["FENCE.CURRENT", "rw"]);
    cases.push(vec!["GET", "rw"]);
    cases.push(vec!["LPUSH", "rw", "x"]);
    for args in &cases {
        let e = assert_err_at_once(&mut c, args, None);
        assert!(e.starts_with("WRONGTYPE"), "{args:?} answered {e:?}");
    }
    assert_eq!(key_type(&mut c, "mutex"), "lockmutex");
    assert_eq!(key_type(&mut c, "rw"), "lockrwlck");
    let m = held(&mut c, "mutex");
    assert_eq!((m.owner.as_deref(), m.token, m.holds, m.waiters), (Some(&b"alice"[..]), tm, 1, 0));
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.who(), i.waiters), (who(&[("reader", "read")]), 0));
    assert_eq!((i.holder("reader", "read").token, i.holder("reader", "read").holds), (tr, 1));
    assert_eq!(fence_current(&mut c, "fence"), f);
    assert_eq!(ok(&mut c, &["GET", "str"]), Value::BulkString(b"value".to_vec()));
    assert_eq!(dbsize(&mut c), 4);
}

const BAD_TTLS: [&str; 10] =
    ["0", "-1", "1099511627777", "abc", "", "1.5", " 5", "9223372036854775808", "-9223372036854775808", "1e3"];

#[track_caller]
fn assert_unchanged(
    before: &Option<Holds>,
    after: &Option<Holds>,
    what: &str,
) {
    match (before, after) {
        (None, None) => {}
        (Some(b), Some(a)) => {
            let bk: Vec<_> = b.keys().collect();
            let ak: Vec<_> = a.keys().collect();
            assert_eq!(ak, bk, "{what}: holders changed");
            for (k, (token, holds, ttl)) in b {
                let (t2, h2, ttl2) = a[k];
                assert_eq!((t2, h2), (*token, *holds), "{what}: token/holds of {k:?} changed");
                assert!(ttl2 <= *ttl, "{what}: lease of {k:?} got longer ({ttl} -> {ttl2})");
                assert!(ttl2 > ttl - 30_000, "{what}: lease of {k:?} shortened ({ttl} -> {ttl2})");
            }
        }
        (b, a) => panic!("{what}: state changed from {b:?} to {a:?}"),
    }
}

#[test]
fn bad_arguments_answer_errors_and_change_nothing() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    rgrant(&mut c, "rd", "r1", 100_000);
    wgrant(&mut c, "wr", "w1", 100_000);
    let before_rd = state_of(&mut c, "rd");
    let before_wr = state_of(&mut c, "wr");
    // ttl, on acquires (free key, holder's reentry, another owner) and on extend.
    for ttl in BAD_TTLS {
        for cmd in ["RWLOCK.RLOCK", "RWLOCK.WLOCK"] {
            for (key, owner) in [("free", "x"), ("rd", "r1"), ("rd", "x"), ("wr", "w1"), ("wr", "x")] {
                assert_err_at_once(&mut c, &[cmd, key, owner, ttl], Some(BAD_TTL));
                assert_err_at_once(&mut c, &[cmd, key, owner, ttl, "WAIT", "0"], Some(BAD_TTL));
            }
        }
        for (key, owner) in [("free", "x"), ("rd", "r1"), ("wr", "w1")] {
            assert_err_at_once(&mut c, &["RWLOCK.EXTEND", key, owner, ttl], Some(BAD_TTL));
        }
    }
    // Empty owner.
    for cmd in ["RWLOCK.RLOCK", "RWLOCK.WLOCK"] {
        for key in ["free", "rd", "wr"] {
            assert_err_at_once(&mut c, &[cmd, key, "", "1000"], Some(EMPTY_OWNER));
            assert_err_at_once(&mut c, &[cmd, key, "", "1000", "WAIT", "0"], Some(EMPTY_OWNER));
        }
    }
    for args in [
        &["RWLOCK.RUNLOCK", "rd", ""][..],
        &["RWLOCK.WUNLOCK", "wr", ""],
        &["RWLOCK.EXTEND", "rd", "", "1000"],
        &["RWLOCK.EXTEND", "wr", "", "1000"],
    ] {
        // The error, or 0 (nobody can hold as ""), but never a change.
        let v = raws(&mut c, args);
        match value_err(&v) {
            Some(e) => assert_eq!(e, EMPTY_OWNER, "{args:?}"),
            None => assert_eq!(v, Value::Int(0), "{args:?}"),
        }
    }
    // Unknown or malformed options.
    for cmd in ["RWLOCK.RLOCK", "RWLOCK.WLOCK"] {
        for (key, owner) in [("free", "x"), ("rd", "r1"), ("rd", "x"), ("wr", "w1"), ("wr", "x")] {
            for extra in [&["FOO"][..], &["NX"], &["WAITX", "10"], &["1000"], &["WAIT"]] {
                let mut args = vec![cmd, key, owner, "1000"];
                args.extend_from_slice(extra);
                assert_err_at_once(&mut c, &args, Some(SYNTAX));
            }
            // More words than the syntax has room for: a syntax or arity error (the
            // contract names neither), never a change and never a wait.
            for extra in [&["WAIT", "10", "FOO"][..], &["WAIT", "0", "WAIT", "0"]] {
                let mut args = vec![cmd, key, owner, "1000"];
                args.extend_from_slice(extra);
                assert_err_at_once(&mut c, &args, None);
            }
            // A bad WAIT timeout: an error (the contract leaves its text open), no blocking.
            for timeout in ["-1", "abc", "1.5", ""] {
                assert_err_at_once(&mut c, &[cmd, key, owner, "1000", "WAIT", timeout], None);
            }
        }
    }
    // Arity: Redis's standard error, naming the command.
    let arity: &[&[&str]] = &[
        &["RWLOCK.RLOCK"],
        &["RWLOCK.RLOCK", "rd"],
        &["RWLOCK.RLOCK", "rd", "r1"],
        &["RWLOCK.WLOCK"],
        &["RWLOCK.WLOCK", "wr"],
        &["RWLOCK.WLOCK", "wr", "w1"],
        &["RWLOCK.RUNLOCK"],
        &["RWLOCK.RUNLOCK", "rd"],
        &["RWLOCK.RUNLOCK", "rd", "r1", "extra"],
        &["RWLOCK.WUNLOCK"],
        &["RWLOCK.WUNLOCK", "wr"],
        &["RWLOCK.WUNLOCK", "wr", "w1", "extra"],
        &["RWLOCK.EXTEND"],
        &["RWLOCK.EXTEND", "rd"],
        &["RWLOCK.EXTEND", "rd", "r1"],
        &["RWLOCK.INFO"],
        &["RWLOCK.INFO", "rd", "extra"],
    ];
    for args in arity {
        let e = err(&mut c, args);
        let name = args[0].to_lowercase();
        assert!(
            e.starts_with("ERR wrong number of arguments") && e.to_lowercase().contains(&name),
            "{args:?} answered {e:?}, expected Redis's arity error naming '{name}'"
        );
    }
    // Too many for EXTEND: some error, no change.
    assert_err_at_once(&mut c, &["RWLOCK.EXTEND", "rd", "r1", "1000", "extra"], None);
    assert_err_at_once(&mut c, &["RWLOCK.EXTEND", "wr", "w1", "1000", "extra"], None);
    // Nothing changed.
    assert_unchanged(&before_rd, &state_of(&mut c, "rd"), "read lock after bad arguments");
    assert_unchanged(&before_wr, &state_of(&mut c, "wr"), "write lock after bad arguments");
    assert!(!exists(&mut c, "free"), "a rejected command created the key");
    assert_eq!(dbsize(&mut c), 2);
    // And the locks still work as before: r1 holds once, w1 holds once.
    assert_eq!(runlock(&mut c, "rd", "r1"), 1);
    assert_eq!(runlock(&mut c, "rd", "r1"), 0);
    assert_eq!(wunlock(&mut c, "wr", "w1"), 1);
    assert_eq!(wunlock(&mut c, "wr", "w1"), 0);
    assert_eq!(dbsize(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// MULTI / EVAL
// ---------------------------------------------------------------------------------------

#[test]
fn multi_and_eval_never_block() {
    let s = Server::new();
    let mut c = quick_conn(&s);
    let ta = wgrant(&mut c, "rw", "alice", LONG_TTL);
    let started = Instant::now();
    ok(&mut c, &["MULTI"]);
    for args in [
        &["RWLOCK.RLOCK", "rw", "bob", "600000", "WAIT", "0"][..],
        &["RWLOCK.WLOCK", "rw", "bob", "600000", "WAIT", "0"],
        &["RWLOCK.WLOCK", "rw", "bob", "600000", "WAIT", "3000"],
        &["RWLOCK.WLOCK", "rw", "alice", "600000", "WAIT", "0"],
        &["RWLOCK.RLOCK", "rw", "alice", "600000", "WAIT", "0"],
        &["RWLOCK.RLOCK", "free", "bob", "600000", "WAIT", "0"],
    ] {
        ok(&mut c, args);
    }
    let v = raws(&mut c, &["EXEC"]);
    assert!(started.elapsed() < Duration::from_secs(2), "MULTI/EXEC blocked for {:?}", started.elapsed());
    let Value::Array(items) = v else { panic!("EXEC answered {v:?}") };
    assert_eq!(items.len(), 6, "{items:?}");
    assert_eq!(items[0], Value::Nil, "RLOCK ... WAIT 0 in MULTI on a written lock: {items:?}");
    assert_eq!(items[1], Value::Nil, "WLOCK ... WAIT 0 in MULTI on a written lock: {items:?}");
    assert_eq!(items[2], Value::Nil, "WLOCK ... WAIT 3000 in MULTI on a written lock: {items:?}");
    assert_eq!(items[3], Value::Int(ta), "reentry in MULTI: {items:?}");
    let tdown = value_int(&items[4]).unwrap_or_else(|| panic!("downgrade in MULTI: {items:?}"));
    assert!(tdown > ta);
    let tfree = value_int(&items[5]).unwrap_or_else(|| panic!("RLOCK of a free key in MULTI: {items:?}"));
    assert!(tfree > tdown);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.who(), i.waiters), (who(&[("alice", "read"), ("alice", "write")]), 0));
    assert_eq!(i.holder("alice", "write").holds, 2);
    assert_eq!(rw_held(&mut c, "free").who(), who(&[("bob", "read")]));
    // Scripts: a single try too.
    for (cmd, timeout) in [("RWLOCK.RLOCK", "0"), ("RWLOCK.WLOCK", "0"), ("RWLOCK.RLOCK", "3000"), ("RWLOCK.WLOCK", "3000")] {
        let started = Instant::now();
        let v = raws(
            &mut c,
            &[
                "EVAL",
                "return redis.call(ARGV[1], KEYS[1], ARGV[2], ARGV[3], 'WAIT', ARGV[4])",
                "1",
                "rw",
                cmd,
                "bob",
                "600000",
                timeout,
            ],
        );
        assert!(started.elapsed() < Duration::from_secs(2), "EVAL {cmd} WAIT {timeout} blocked for {:?}", started.elapsed());
        assert_eq!(v, Value::Nil, "EVAL {cmd} ... WAIT {timeout} on a written lock");
    }
    // A grant from a script (Lua rounds big integers: check the token through INFO).
    let v = raws(
        &mut c,
        &["EVAL", "return redis.call('RWLOCK.WLOCK', KEYS[1], ARGV[1], ARGV[2], 'WAIT', '0')", "1", "lua", "carol", "600000"],
    );
    assert!(value_int(&v).is_some(), "WLOCK from a script answered {v:?}");
    let l = rw_held(&mut c, "lua");
    assert_eq!(l.who(), who(&[("carol", "write")]));
    assert!(l.holder("carol", "write").token > tfree);
    assert_eq!(waiters_of(&mut c, "rw"), 0);
    assert!(rw_held(&mut c, "rw").get("bob", "read").is_none());
}

// ---------------------------------------------------------------------------------------
// RWLOCK.INFO shape
// ---------------------------------------------------------------------------------------

#[test]
fn info_reports_mode_holders_and_waiters_and_is_a_map_under_resp3() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(raws(&mut c, &["RWLOCK.INFO", "free"]), Value::Nil);
    assert_eq!(dbsize(&mut c), 0, "RWLOCK.INFO created a key");
    let t = rgrant(&mut c, "rw", "worker-1:4242", 30_000);
    let v = raws(&mut c, &["RWLOCK.INFO", "rw"]);
    let m = pairs(&v);
    assert_eq!(field_names(&m), ["holders", "mode", "waiters"], "RWLOCK.INFO fields: {v:?}");
    assert_eq!(value_text(&m["mode"]).as_deref(), Some("read"));
    assert_eq!(m["waiters"], Value::Int(0));
    let Value::Array(hs) = &m["holders"] else { panic!("holders is not an array: {v:?}") };
    assert_eq!(hs.len(), 1);
    let h = pairs(&hs[0]);
    assert_eq!(field_names(&h), ["holds", "mode", "owner", "token", "ttl"], "holder fields: {v:?}");
    assert_eq!(h["owner"], Value::BulkString(b"worker-1:4242".to_vec()));
    assert_eq!(value_text(&h["mode"]).as_deref(), Some("read"));
    assert_eq!(h["token"], Value::Int(t));
    assert_eq!(h["holds"], Value::Int(1));
    let ttl = value_int(&h["ttl"]).expect("ttl integer");
    assert!(ttl > 20_000 && ttl <= 30_000, "ttl {ttl} not in (20000, 30000]");
    let_time_pass(30);
    let later = rw_held(&mut c, "rw").holder("worker-1:4242", "read").ttl;
    assert!(later < ttl && later > 0, "ttl did not count down: {ttl} then {later}");
    // A binary owner is kept exactly.
    let owner: &[u8] = b"\x00own\xff\r\ner \x00";
    let v = raw(&mut c, &[b"RWLOCK.WLOCK", b"bin", owner, b"600000"]);
    let tb = value_int(&v).expect("granted");
    let i = parse_rw_info(&raw(&mut c, &[b"RWLOCK.INFO", b"bin"])).unwrap();
    assert_eq!(i.holders.len(), 1);
    assert_eq!((i.holders[0].owner.as_slice(), i.holders[0].token), (owner, tb));
    assert_eq!(raw(&mut c, &[b"RWLOCK.WUNLOCK", b"bin", b"\x00own"]), Value::Int(0));
    assert_eq!(raw(&mut c, &[b"RWLOCK.WUNLOCK", b"bin", owner]), Value::Int(1));
    // RESP3: maps, inside too.
    let mut c3 = s.conn_resp3();
    let tw = wgrant(&mut c3, "w3", "alice", LONG_TTL);
    let v = raws(&mut c3, &["RWLOCK.INFO", "w3"]);
    assert_info_maps(&v, "RWLOCK.INFO");
    let i = parse_rw_info(&v).unwrap();
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("alice", "write")]), 0));
    assert_eq!(i.holder("alice", "write").token, tw);
    assert_eq!(raws(&mut c3, &["RWLOCK.INFO", "free"]), Value::Nil);
}
