//! The mutex commands: every reply and error of the contract for LOCK.ACQUIRE, LOCK.RELEASE,
//! LOCK.EXTEND and LOCK.INFO, leases ending by themselves, and token monotonicity across
//! release, lease end, DEL/UNLINK and FLUSHALL.

mod support;

use std::time::Duration;

use support::*;
use redis::Value;

// ---------------------------------------------------------------------------------------
// Grants
// ---------------------------------------------------------------------------------------

#[test]
fn acquire_grants_a_positive_token_and_a_lockmutex_key_without_redis_ttl() {
    let s = Server::new();
    let mut c = s.conn();
    let before = now_ms();
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    assert!(t > 0);
    // Tokens mix in the wall clock (rule 2), never below the clock of a minute ago, and
    // stay exact in a double.
    assert!(t >= token_wall_part(before - 60_000), "token {t} does not carry the wall clock ({before} ms)");
    assert!(t < TOKEN_EXACT_IN_DOUBLE, "token {t} is not exact in a double");
    assert!(exists(&mut c, "res"));
    assert_eq!(key_type(&mut c, "res"), "lockmutex");
    assert_eq!(int(&mut c, &["PTTL", "res"]), -1, "the lease must not be a Redis TTL");
    let i = held(&mut c, "res");
    assert_eq!(i.owner.as_deref(), Some(&b"alice"[..]));
    assert_eq!(i.token, t);
    assert_eq!(i.holds, 1);
    assert_eq!(i.waiters, 0);
    assert!(i.ttl > 0 && i.ttl <= LONG_TTL, "ttl {} not in (0, {LONG_TTL}]", i.ttl);
    assert!(i.ttl > LONG_TTL - 10_000, "ttl {} far below the lease just granted", i.ttl);
}

#[test]
fn acquire_by_another_owner_while_held_answers_nil_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    let before = held(&mut c, "res");
    assert_eq!(acquire(&mut c, "res", "bob", LONG_TTL), None);
    assert_eq!(acquire(&mut c, "res", "bob", 5), None);
    let after = held(&mut c, "res");
    assert_eq!(after.owner, before.owner);
    assert_eq!(after.token, t);
    assert_eq!(after.holds, 1);
    assert!(after.ttl <= before.ttl);
    // bob can neither release nor extend it.
    assert_eq!(release(&mut c, "res", "bob"), 0);
    assert_eq!(extend(&mut c, "res", "bob", LONG_TTL), 0);
    assert_eq!(held(&mut c, "res").holds, 1);
}

#[test]
fn reentrant_acquire_returns_the_same_token_raises_holds_and_resets_the_lease() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "alice", 100_000);
    // Reset to a longer lease.
    assert_eq!(acquire(&mut c, "res", "alice", 500_000), Some(t));
    let i = held(&mut c, "res");
    assert_eq!((i.token, i.holds), (t, 2));
    assert!(i.ttl > 100_000 && i.ttl <= 500_000, "lease not reset to 500000: ttl {}", i.ttl);
    // Reset to a shorter lease: reset, not max.
    assert_eq!(acquire(&mut c, "res", "alice", 50_000), Some(t));
    let i = held(&mut c, "res");
    assert_eq!((i.token, i.holds), (t, 3));
    assert!(i.ttl > 0 && i.ttl <= 50_000, "lease not reset to 50000: ttl {}", i.ttl);
    assert_eq!(i.owner.as_deref(), Some(&b"alice"[..]));
}

#[test]
fn reentrant_acquire_keeps_the_lease_alive_past_its_first_deadline() {
    let s = Server::new();
    let mut c = s.conn();
    // "a" would end first, but its holder re-acquires it with a long lease; "b" ends later
    // than "a" would have. Once "b" is gone, "a" must still be held.
    let t = grant(&mut c, "a", "alice", 150);
    assert_eq!(acquire(&mut c, "a", "alice", LONG_TTL), Some(t));
    grant(&mut c, "b", "bob", 400);
    let mut o = s.conn();
    wait_until(Duration::from_secs(10), "lease of b ended", || dbsize(&mut o) == 1);
    let i = held(&mut c, "a");
    assert_eq!((i.token, i.holds), (t, 2));
}

// ---------------------------------------------------------------------------------------
// Release
// ---------------------------------------------------------------------------------------

#[test]
fn release_by_a_non_holder_answers_0_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    // Never held: 0, and no key appears.
    assert_eq!(release(&mut c, "free", "alice"), 0);
    assert!(!exists(&mut c, "free"));
    assert_eq!(dbsize(&mut c), 0);
    // Held by another.
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    grant(&mut c, "res", "alice", LONG_TTL);
    assert_eq!(release(&mut c, "res", "bob"), 0);
    assert_eq!(release(&mut c, "res", "ALICE"), 0, "owners are compared exactly");
    assert_eq!(release(&mut c, "res", "alic"), 0);
    let i = held(&mut c, "res");
    assert_eq!((i.owner.as_deref(), i.token, i.holds), (Some(&b"alice"[..]), t, 2));
}

#[test]
fn release_by_the_holder_counts_holds_down_to_free_and_deletes_the_key() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    grant(&mut c, "res", "alice", LONG_TTL);
    grant(&mut c, "res", "alice", LONG_TTL);
    assert_eq!(held(&mut c, "res").holds, 3);
    assert_eq!(release(&mut c, "res", "alice"), 1);
    let i = held(&mut c, "res");
    assert_eq!((i.token, i.holds), (t, 2));
    assert_eq!(release(&mut c, "res", "alice"), 1);
    assert_eq!(held(&mut c, "res").holds, 1);
    // Still held by alice: bob gets nil.
    assert_eq!(acquire(&mut c, "res", "bob", LONG_TTL), None);
    assert_eq!(release(&mut c, "res", "alice"), 1);
    // Free: no key, INFO nil, a second release answers 0.
    assert!(!exists(&mut c, "res"));
    assert_eq!(dbsize(&mut c), 0);
    assert_eq!(lock_info(&mut c, "res"), None);
    assert_eq!(release(&mut c, "res", "alice"), 0);
    assert!(!exists(&mut c, "res"));
}

#[test]
fn token_increases_after_release() {
    let s = Server::new();
    let mut c = s.conn();
    let mut last = 0;
    for i in 0..50 {
        let owner = if i % 2 == 0 { "alice" } else { "bob" };
        let t = grant(&mut c, "res", owner, LONG_TTL);
        assert!(t > last, "token {t} after release is not above {last}");
        assert_eq!(release(&mut c, "res", owner), 1);
        last = t;
    }
}

// ---------------------------------------------------------------------------------------
// Extend
// ---------------------------------------------------------------------------------------

#[test]
fn extend_by_the_holder_resets_the_lease_and_by_others_answers_0() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "alice", 100_000);
    assert_eq!(extend(&mut c, "res", "alice", 500_000), 1);
    let i = held(&mut c, "res");
    assert!(i.ttl > 100_000 && i.ttl <= 500_000, "not extended to 500000: ttl {}", i.ttl);
    assert_eq!((i.token, i.holds), (t, 1), "extend is not a re-acquire");
    // Shorter: reset, not max.
    assert_eq!(extend(&mut c, "res", "alice", 20_000), 1);
    let i = held(&mut c, "res");
    assert!(i.ttl > 0 && i.ttl <= 20_000, "not reset to 20000: ttl {}", i.ttl);
    // Others: 0, and nothing changes.
    assert_eq!(extend(&mut c, "res", "bob", 900_000), 0);
    let j = held(&mut c, "res");
    assert!(j.ttl <= i.ttl);
    assert_eq!((j.owner.as_deref(), j.token, j.holds), (Some(&b"alice"[..]), t, 1));
    // A free lock: 0, and no key appears.
    assert_eq!(extend(&mut c, "free", "alice", 1000), 0);
    assert!(!exists(&mut c, "free"));
    assert_eq!(dbsize(&mut c), 1);
}

#[test]
fn extended_lease_outlives_its_original_deadline() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "a", "alice", 150);
    assert_eq!(extend(&mut c, "a", "alice", LONG_TTL), 1);
    grant(&mut c, "b", "bob", 400);
    let mut o = s.conn();
    wait_until(Duration::from_secs(10), "lease of b ended", || dbsize(&mut o) == 1);
    let i = held(&mut c, "a");
    assert_eq!((i.token, i.holds), (t, 1));
    assert_eq!(release(&mut c, "a", "alice"), 1);
}

#[test]
fn extend_to_a_short_ttl_ends_the_lease_early() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "a", "alice", LONG_TTL);
    assert_eq!(extend(&mut c, "a", "alice", 50), 1);
    let mut o = s.conn();
    wait_until(Duration::from_secs(10), "shortened lease ended", || dbsize(&mut o) == 0);
    assert_eq!(lock_info(&mut c, "a"), None);
    assert_eq!(extend(&mut c, "a", "alice", LONG_TTL), 0, "extend after the lease ended");
    assert_eq!(release(&mut c, "a", "alice"), 0, "release after the lease ended");
    assert!(grant(&mut c, "a", "bob", LONG_TTL) > t);
}

// ---------------------------------------------------------------------------------------
// Info
// ---------------------------------------------------------------------------------------

#[test]
fn info_is_nil_for_a_free_lock_and_creates_no_key() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(raws(&mut c, &["LOCK.INFO", "nothing"]), Value::Nil);
    assert_eq!(dbsize(&mut c), 0);
}

#[test]
fn info_reports_owner_token_ttl_holds_and_waiters() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "worker-1:4242", 30_000);
    let raw_reply = raws(&mut c, &["LOCK.INFO", "res"]);
    let m = pairs(&raw_reply);
    assert_eq!(field_names(&m), ["holds", "owner", "token", "ttl", "waiters"], "LOCK.INFO fields: {raw_reply:?}");
    assert_eq!(m["owner"], Value::BulkString(b"worker-1:4242".to_vec()));
    assert_eq!(m["token"], Value::Int(t));
    assert_eq!(m["holds"], Value::Int(1));
    assert_eq!(m["waiters"], Value::Int(0));
    let ttl = value_int(&m["ttl"]).expect("ttl integer");
    assert!(ttl > 20_000 && ttl <= 30_000, "ttl {ttl} not in (20000, 30000]");
    // ttl counts down.
    let_time_pass(30);
    let later = held(&mut c, "res").ttl;
    assert!(later < ttl, "ttl did not count down: {ttl} then {later}");
    assert!(later > 0);
}

#[test]
fn info_is_a_map_under_resp3() {
    let s = Server::new();
    let mut c = s.conn_resp3();
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    let v = raws(&mut c, &["LOCK.INFO", "res"]);
    assert!(matches!(v, Value::Map(_)), "LOCK.INFO under RESP3 should be a map, got {v:?}");
    let i = parse_lock_info(&v).unwrap();
    assert_eq!((i.owner.as_deref(), i.token, i.holds, i.waiters), (Some(&b"alice"[..]), t, 1, 0));
    assert_eq!(raws(&mut c, &["LOCK.INFO", "free"]), Value::Nil);
}

#[test]
fn ttl_bounds_one_and_two_to_the_40_are_accepted() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "max", "alice", MAX_TTL);
    let i = held(&mut c, "max");
    assert!(i.ttl > MAX_TTL - 60_000 && i.ttl <= MAX_TTL, "ttl {} for a 2^40 lease", i.ttl);
    assert_eq!(extend(&mut c, "max", "alice", MAX_TTL), 1);
    assert_eq!(acquire(&mut c, "max", "alice", MAX_TTL), Some(t));
    // ttl 1: granted, and over almost at once.
    let t1 = grant(&mut c, "one", "alice", 1);
    assert!(t1 > t);
    let mut o = s.conn();
    wait_until(Duration::from_secs(10), "1 ms lease ended", || dbsize(&mut o) == 1);
    assert_eq!(lock_info(&mut c, "one"), None);
}

#[test]
fn binary_owner_is_kept_exactly() {
    let s = Server::new();
    let mut c = s.conn();
    let owner: &[u8] = b"\x00own\xff\r\ner \x00";
    let t = acquire_b(&mut c, b"bin\x00key", owner, LONG_TTL).expect("granted");
    let i = lock_info_b(&mut c, b"bin\x00key").expect("held");
    assert_eq!(i.owner.as_deref(), Some(owner));
    assert_eq!(i.token, t);
    // A prefix of the owner is another owner.
    assert_eq!(raw(&mut c, &[b"LOCK.RELEASE", b"bin\x00key", b"\x00own"]), Value::Int(0));
    assert_eq!(acquire_b(&mut c, b"bin\x00key", owner, LONG_TTL), Some(t));
    assert_eq!(raw(&mut c, &[b"LOCK.RELEASE", b"bin\x00key", owner]), Value::Int(1));
    assert_eq!(raw(&mut c, &[b"LOCK.RELEASE", b"bin\x00key", owner]), Value::Int(1));
    assert_eq!(dbsize(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// Errors: each changes nothing
// ---------------------------------------------------------------------------------------

const BAD_TTLS: [&str; 10] =
    ["0", "-1", "1099511627777", "abc", "", "1.5", " 5", "9223372036854775808", "-9223372036854775808", "1e3"];

#[test]
fn bad_ttl_on_acquire_is_rejected_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    for ttl in BAD_TTLS {
        assert_eq!(err(&mut c, &["LOCK.ACQUIRE", "free", "alice", ttl]), BAD_TTL, "ttl {ttl:?}");
        assert!(!exists(&mut c, "free"), "a rejected acquire (ttl {ttl:?}) created the key");
    }
    let t = grant(&mut c, "res", "alice", 100_000);
    let before = held(&mut c, "res");
    for ttl in BAD_TTLS {
        // Reentrant with a bad ttl: no extra hold, no lease change.
        assert_eq!(err(&mut c, &["LOCK.ACQUIRE", "res", "alice", ttl]), BAD_TTL, "ttl {ttl:?}");
        assert_eq!(err(&mut c, &["LOCK.ACQUIRE", "res", "bob", ttl]), BAD_TTL, "ttl {ttl:?}");
    }
    let after = held(&mut c, "res");
    assert_eq!((after.owner, after.token, after.holds), (before.owner, t, 1));
    assert!(after.ttl <= before.ttl);
    assert_eq!(dbsize(&mut c), 1);
}

#[test]
fn bad_ttl_on_extend_is_rejected_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "alice", 100_000);
    let before = held(&mut c, "res");
    for ttl in BAD_TTLS {
        assert_eq!(err(&mut c, &["LOCK.EXTEND", "res", "alice", ttl]), BAD_TTL, "ttl {ttl:?}");
    }
    let after = held(&mut c, "res");
    assert_eq!((after.token, after.holds), (t, 1));
    assert!(after.ttl <= before.ttl, "a rejected extend changed the lease");
    assert!(after.ttl > 90_000);
    // On a free lock too, and no key appears.
    assert_eq!(err(&mut c, &["LOCK.EXTEND", "free", "alice", "0"]), BAD_TTL);
    assert!(!exists(&mut c, "free"));
}

#[test]
fn empty_owner_is_rejected_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(err(&mut c, &["LOCK.ACQUIRE", "free", "", "1000"]), EMPTY_OWNER);
    assert!(!exists(&mut c, "free"));
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    assert_eq!(err(&mut c, &["LOCK.ACQUIRE", "res", "", "1000"]), EMPTY_OWNER);
    // RELEASE/EXTEND with an empty owner: the error, or 0 (nobody can hold as ""), but
    // never a change.
    for args in [&["LOCK.RELEASE", "res", ""][..], &["LOCK.EXTEND", "res", "", "1000"][..]] {
        let v = raws(&mut c, args);
        match value_err(&v) {
            Some(e) => assert_eq!(e, EMPTY_OWNER, "{args:?}"),
            None => assert_eq!(v, Value::Int(0), "{args:?}"),
        }
    }
    let i = held(&mut c, "res");
    assert_eq!((i.owner.as_deref(), i.token, i.holds), (Some(&b"alice"[..]), t, 1));
    assert!(i.ttl > LONG_TTL - 60_000);
}

#[test]
fn unknown_trailing_option_is_a_syntax_error_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    for extra in [&["FOO"][..], &["NX"], &["WAITX", "10"], &["1000"]] {
        let mut args = vec!["LOCK.ACQUIRE", "free", "alice", "1000"];
        args.extend_from_slice(extra);
        assert_eq!(err(&mut c, &args), SYNTAX, "{args:?}");
        assert!(!exists(&mut c, "free"), "{args:?} created the key");
    }
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    assert_eq!(err(&mut c, &["LOCK.ACQUIRE", "res", "alice", "1000", "FOO"]), SYNTAX);
    let i = held(&mut c, "res");
    assert_eq!((i.token, i.holds), (t, 1));
    assert!(i.ttl > LONG_TTL - 60_000, "a rejected re-acquire reset the lease");
}

#[test]
fn wrong_number_of_arguments_is_the_standard_arity_error() {
    let s = Server::new();
    let mut c = s.conn();
    let t = grant(&mut c, "res", "alice", LONG_TTL);
    let cases: &[&[&str]] = &[
        &["LOCK.ACQUIRE"],
        &["LOCK.ACQUIRE", "res"],
        &["LOCK.ACQUIRE", "res", "alice"],
        &["LOCK.RELEASE"],
        &["LOCK.RELEASE", "res"],
        &["LOCK.RELEASE", "res", "alice", "extra"],
        &["LOCK.EXTEND"],
        &["LOCK.EXTEND", "res"],
        &["LOCK.EXTEND", "res", "alice"],
        &["LOCK.INFO"],
        &["LOCK.INFO", "res", "extra"],
        &["FENCE.NEXT"],
        &["FENCE.NEXT", "f", "extra"],
        &["FENCE.CHECK"],
        &["FENCE.CHECK", "f"],
        &["FENCE.CHECK", "f", "1", "extra"],
        &["FENCE.CURRENT"],
        &["FENCE.CURRENT", "f", "extra"],
    ];
    for args in cases {
        let e = err(&mut c, args);
        let name = args[0].to_lowercase();
        assert!(
            e.starts_with("ERR wrong number of arguments") && e.to_lowercase().contains(&name),
            "{args:?} answered {e:?}, expected Redis's arity error naming '{name}'"
        );
    }
    // Too many for EXTEND: some error, no change.
    let v = raws(&mut c, &["LOCK.EXTEND", "res", "alice", "1000", "extra"]);
    assert!(value_err(&v).is_some(), "LOCK.EXTEND with a 4th argument answered {v:?}");
    let i = held(&mut c, "res");
    assert_eq!((i.owner.as_deref(), i.token, i.holds), (Some(&b"alice"[..]), t, 1));
    assert!(i.ttl > LONG_TTL - 60_000);
    assert_eq!(dbsize(&mut c), 1, "an arity error created a key");
}

#[test]
fn lock_commands_on_a_string_key_answer_wrongtype_and_change_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    ok(&mut c, &["SET", "str", "value"]);
    let cases: &[&[&str]] = &[
        &["LOCK.ACQUIRE", "str", "alice", "1000"],
        &["LOCK.RELEASE", "str", "alice"],
        &["LOCK.EXTEND", "str", "alice", "1000"],
        &["LOCK.INFO", "str"],
        &["FENCE.NEXT", "str"],
        &["FENCE.CHECK", "str", "5"],
        &["FENCE.CURRENT", "str"],
    ];
    for args in cases {
        let e = err(&mut c, args);
        assert!(e.starts_with("WRONGTYPE"), "{args:?} answered {e:?}");
    }
    assert_eq!(ok(&mut c, &["GET", "str"]), Value::BulkString(b"value".to_vec()));
    assert_eq!(int(&mut c, &["PTTL", "str"]), -1);
    assert_eq!(dbsize(&mut c), 1);
}

#[test]
fn lock_and_fence_keys_refuse_each_others_commands_with_wrongtype() {
    let s = Server::new();
    let mut c = s.conn();
    let f = fence_next(&mut c, "fence");
    assert_eq!(key_type(&mut c, "fence"), "lockfence");
    let t = grant(&mut c, "mutex", "alice", LONG_TTL);
    for args in [
        &["LOCK.ACQUIRE", "fence", "alice", "1000"][..],
        &["LOCK.RELEASE", "fence", "alice"],
        &["LOCK.EXTEND", "fence", "alice", "1000"],
        &["LOCK.INFO", "fence"],
        &["FENCE.NEXT", "mutex"],
        &["FENCE.CHECK", "mutex", "1"],
        &["FENCE.CURRENT", "mutex"],
        &["GET", "mutex"],
        &["LPUSH", "fence", "x"],
    ] {
        let e = err(&mut c, args);
        assert!(e.starts_with("WRONGTYPE"), "{args:?} answered {e:?}");
    }
    assert_eq!(fence_current(&mut c, "fence"), f);
    assert_eq!(key_type(&mut c, "fence"), "lockfence");
    let i = held(&mut c, "mutex");
    assert_eq!((i.owner.as_deref(), i.token, i.holds), (Some(&b"alice"[..]), t, 1));
    assert_eq!(key_type(&mut c, "mutex"), "lockmutex");
}

// ---------------------------------------------------------------------------------------
// Lease end, with nobody touching the key
// ---------------------------------------------------------------------------------------

fn lease_ends_by_itself(active_expire: bool) {
    let (s, mut c) = server_with_active_expire(active_expire);
    let t = grant(&mut c, "res", "alice", 100);
    assert_eq!(dbsize(&mut c), 1);
    // An observer that never touches the key: DBSIZE does not look keys up.
    let mut observer = s.conn();
    wait_until(Duration::from_secs(5), "the 100 ms lease ended by itself (DBSIZE 0)", || {
        dbsize(&mut observer) == 0
    });
    assert!(!exists(&mut c, "res"));
    assert_eq!(lock_info(&mut c, "res"), None);
    assert_eq!(release(&mut c, "res", "alice"), 0, "release after the lease ended");
    assert_eq!(extend(&mut c, "res", "alice", LONG_TTL), 0, "extend after the lease ended");
    assert!(!exists(&mut c, "res"));
    let t2 = grant(&mut c, "res", "bob", LONG_TTL);
    assert!(t2 > t, "token {t2} after lease end is not above {t}");
    // The expired-keys counter is Redis's; the lease end is the module's own, so what we
    // check is only that the key is gone and the next grant is fresh.
    assert_eq!(held(&mut c, "res").holds, 1);
}

#[test]
fn lease_ends_without_any_client_touching_the_key() {
    lease_ends_by_itself(true);
}

#[test]
fn lease_ends_without_any_client_touching_the_key_with_active_expire_off() {
    lease_ends_by_itself(false);
}

#[test]
fn many_short_leases_end_and_leave_no_keys() {
    let s = Server::new();
    let mut c = s.conn();
    let mut p = redis::pipe();
    for i in 0..5_000 {
        p.cmd("LOCK.ACQUIRE").arg(format!("short:{i}")).arg("o").arg(50 + (i % 100));
    }
    let tokens: Vec<Option<i64>> = p.query(&mut c).expect("pipelined acquires");
    assert!(tokens.iter().all(|t| t.is_some()), "every fresh acquire is granted");
    let mut o = s.conn();
    wait_until(Duration::from_secs(10), "5000 short leases ended (DBSIZE 0)", || dbsize(&mut o) == 0);
}

// ---------------------------------------------------------------------------------------
// Tokens across DEL / UNLINK / FLUSHALL
// ---------------------------------------------------------------------------------------

#[test]
fn token_increases_after_del_unlink_and_flushall() {
    let s = Server::new();
    let mut c = s.conn();
    let t1 = grant(&mut c, "res", "alice", LONG_TTL);
    assert_eq!(int(&mut c, &["DEL", "res"]), 1);
    assert_eq!(lock_info(&mut c, "res"), None);
    let t2 = grant(&mut c, "res", "alice", LONG_TTL);
    assert!(t2 > t1, "token {t2} after DEL is not above {t1}");
    assert_eq!(held(&mut c, "res").holds, 1, "DEL then acquire is a fresh grant");
    assert_eq!(int(&mut c, &["UNLINK", "res"]), 1);
    let t3 = grant(&mut c, "res", "alice", LONG_TTL);
    assert!(t3 > t2, "token {t3} after UNLINK is not above {t2}");
    let f1 = fence_next(&mut c, "fence");
    assert!(f1 > t3);
    ok(&mut c, &["FLUSHALL"]);
    assert_eq!(dbsize(&mut c), 0);
    let t4 = grant(&mut c, "res", "alice", LONG_TTL);
    assert!(t4 > f1, "token {t4} after FLUSHALL is not above {f1}");
    assert_eq!(fence_current(&mut c, "fence"), 0);
    let f2 = fence_next(&mut c, "fence");
    assert!(f2 > t4, "fence token {f2} after FLUSHALL is not above {t4}");
    ok(&mut c, &["FLUSHALL", "ASYNC"]);
    let t5 = grant(&mut c, "res", "alice", LONG_TTL);
    assert!(t5 > f2, "token {t5} after FLUSHALL ASYNC is not above {f2}");
}

#[test]
fn twenty_thousand_acquire_release_pairs_leave_no_keys() {
    let s = Server::new();
    let mut c = s.conn();
    let mut last = 0i64;
    for batch in 0..20 {
        let mut p = redis::pipe();
        for i in 0..1000 {
            let key = format!("one-off:{batch}:{i}");
            p.cmd("LOCK.ACQUIRE").arg(&key).arg("owner").arg(LONG_TTL);
            p.cmd("LOCK.RELEASE").arg(&key).arg("owner");
        }
        let replies: Vec<i64> = p.query(&mut c).expect("pipelined acquire/release");
        for pair in replies.chunks(2) {
            assert!(pair[0] > last, "tokens must strictly increase: {} after {last}", pair[0]);
            last = pair[0];
            assert_eq!(pair[1], 1, "release of a just-granted lock");
        }
    }
    assert_eq!(dbsize(&mut c), 0, "released one-off locks left keys behind");
    let ks = info(&mut c, "keyspace");
    assert!(ks.get("db0").is_none(), "keyspace not empty: {ks:?}");
}

#[test]
fn acquire_inside_multi_and_lua_is_a_single_try() {
    let s = Server::new();
    let mut c = s.conn();
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["LOCK.ACQUIRE", "res", "alice", "600000"]);
    ok(&mut c, &["LOCK.ACQUIRE", "res", "alice", "600000"]);
    ok(&mut c, &["LOCK.ACQUIRE", "res", "bob", "600000"]);
    let v = raws(&mut c, &["EXEC"]);
    let Value::Array(items) = v else { panic!("EXEC answered {v:?}") };
    let t = value_int(&items[0]).expect("token");
    assert_eq!(items[1], Value::Int(t));
    assert_eq!(items[2], Value::Nil);
    assert_eq!(held(&mut c, "res").holds, 2);
    let v = raws(
        &mut c,
        &["EVAL", "return redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], ARGV[2])", "1", "res", "bob", "1000"],
    );
    assert_eq!(v, Value::Nil, "acquire from a script on a held lock");
    let v = raws(
        &mut c,
        &["EVAL", "return redis.call('LOCK.ACQUIRE', KEYS[1], ARGV[1], ARGV[2])", "1", "other", "bob", "1000"],
    );
    assert!(value_int(&v).is_some(), "acquire from a script answered {v:?}");
    let i = held(&mut c, "other");
    assert_eq!(value_int(&v), Some(i.token), "the script saw a rounded token");
    assert_eq!((i.owner.as_deref(), i.holds), (Some(&b"bob"[..]), 1));
    assert!(i.token > t, "token {} from a script not above {t} from MULTI", i.token);
}
