//! FENCE.NEXT, FENCE.CHECK and FENCE.CURRENT, and the fencing guard in EVAL and MULTI.

mod support;

use std::time::Duration;

use support::*;
use redis::Value;

/// The contract's example guard, verbatim.
const GUARD: &str =
    "redis.call('FENCE.CHECK', KEYS[1], ARGV[1]) return redis.call('SET', KEYS[2], ARGV[2])";

fn stale(token: i64, highest: i64) -> String {
    format!("STALE token {token} is older than {highest}")
}

#[test]
fn fence_next_strictly_increases_and_is_recorded_as_current() {
    let s = Server::new();
    let mut c = s.conn();
    let before = now_ms();
    let mut last = 0;
    for _ in 0..200 {
        let t = fence_next(&mut c, "f");
        assert!(t > last, "FENCE.NEXT {t} after {last}");
        assert_eq!(fence_current(&mut c, "f"), t);
        last = t;
    }
    assert!(last >= token_wall_part(before - 60_000), "fence token {last} does not carry the wall clock");
    assert_eq!(key_type(&mut c, "f"), "lockfence");
    assert_eq!(int(&mut c, &["PTTL", "f"]), -1);
    // Pipelined: still strictly increasing.
    let mut p = redis::pipe();
    for _ in 0..1000 {
        p.cmd("FENCE.NEXT").arg("f");
    }
    let ts: Vec<i64> = p.query(&mut c).unwrap();
    for t in ts {
        assert!(t > last, "FENCE.NEXT {t} after {last}");
        last = t;
    }
    assert_eq!(fence_current(&mut c, "f"), last);
}

#[test]
fn fence_keys_are_independent_but_tokens_never_repeat() {
    let s = Server::new();
    let mut c = s.conn();
    let a = fence_next(&mut c, "a");
    let b = fence_next(&mut c, "b");
    assert!(b > a);
    assert_eq!(fence_current(&mut c, "a"), a);
    assert_eq!(fence_current(&mut c, "b"), b);
    // Checking a high token on "b" does not touch "a".
    assert_eq!(fence_check(&mut c, "b", &(b + 1000).to_string()), Ok(1));
    assert_eq!(fence_current(&mut c, "a"), a);
    assert_eq!(fence_check(&mut c, "a", &a.to_string()), Ok(1));
}

#[test]
fn fence_current_is_zero_for_an_unknown_key_and_creates_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(fence_current(&mut c, "nothing"), 0);
    assert!(!exists(&mut c, "nothing"));
    assert_eq!(dbsize(&mut c), 0);
}

#[test]
fn fence_check_accepts_equal_and_higher_tokens_and_records_the_higher() {
    let s = Server::new();
    let mut c = s.conn();
    let t = fence_next(&mut c, "f");
    assert_eq!(fence_check(&mut c, "f", &t.to_string()), Ok(1), "equal token");
    assert_eq!(fence_current(&mut c, "f"), t);
    assert_eq!(fence_check(&mut c, "f", &t.to_string()), Ok(1), "equal token again");
    assert_eq!(fence_check(&mut c, "f", &(t + 5).to_string()), Ok(1), "higher token");
    assert_eq!(fence_current(&mut c, "f"), t + 5);
    // Now t is stale.
    assert_eq!(fence_check(&mut c, "f", &t.to_string()), Err(stale(t, t + 5)));
    // NEXT goes above the recorded token.
    let n = fence_next(&mut c, "f");
    assert!(n > t + 5, "FENCE.NEXT {n} not above checked {}", t + 5);
}

#[test]
fn fence_check_rejects_a_lower_token_with_the_exact_stale_text_and_records_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let old = fence_next(&mut c, "f");
    let new = fence_next(&mut c, "f");
    assert_eq!(fence_check(&mut c, "f", &old.to_string()), Err(stale(old, new)));
    assert_eq!(fence_check(&mut c, "f", "1"), Err(stale(1, new)));
    assert_eq!(fence_current(&mut c, "f"), new);
    // Through the redis crate: an error whose code is STALE.
    let r: redis::RedisResult<i64> = redis::cmd("FENCE.CHECK").arg("f").arg(old).query(&mut c);
    let e = r.expect_err("stale token accepted");
    assert_eq!(e.code(), Some("STALE"), "{e:?}");
    assert_eq!(e.detail(), Some(format!("token {old} is older than {new}").as_str()));
    assert_eq!(fence_current(&mut c, "f"), new);
}

#[test]
fn fence_check_on_an_unknown_key_records_the_token() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(fence_check(&mut c, "f", "5"), Ok(1));
    assert_eq!(fence_current(&mut c, "f"), 5);
    assert_eq!(key_type(&mut c, "f"), "lockfence");
    assert_eq!(fence_check(&mut c, "f", "4"), Err(stale(4, 5)));
    let n = fence_next(&mut c, "f");
    assert!(n > 5);
}

#[test]
fn fence_next_exceeds_a_checked_token_from_the_future() {
    let s = Server::new();
    let mut c = s.conn();
    let far = 1i64 << 62;
    assert_eq!(fence_check(&mut c, "f", &far.to_string()), Ok(1));
    let n = fence_next(&mut c, "f");
    assert!(n > far, "FENCE.NEXT {n} not above recorded {far}");
    assert_eq!(fence_current(&mut c, "f"), n);
}

#[test]
fn fence_check_with_a_bad_token_is_rejected_and_changes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let bad = ["abc", "0", "-3", "1.5", "", " 7", "+7", "07", "9223372036854775808", "-9223372036854775808"];
    for tok in bad {
        assert_eq!(fence_check(&mut c, "unknown", tok), Err(BAD_TOKEN.to_string()), "token {tok:?}");
        assert!(!exists(&mut c, "unknown"), "rejected FENCE.CHECK {tok:?} created the key");
    }
    let t = fence_next(&mut c, "f");
    for tok in bad {
        assert_eq!(fence_check(&mut c, "f", tok), Err(BAD_TOKEN.to_string()), "token {tok:?}");
    }
    assert_eq!(fence_current(&mut c, "f"), t);
    // The largest i64 is a valid token.
    assert_eq!(fence_check(&mut c, "g", "9223372036854775807"), Ok(1));
    assert_eq!(fence_current(&mut c, "g"), i64::MAX);
}

#[test]
fn eval_guard_from_the_contract_applies_a_fresh_write_and_refuses_a_stale_one() {
    let s = Server::new();
    let mut c = s.conn();
    let old = fence_next(&mut c, "{acct}:fence");
    let new = fence_next(&mut c, "{acct}:fence");
    let w = raws(&mut c, &["EVAL", GUARD, "2", "{acct}:fence", "{acct}:balance", &new.to_string(), "100"]);
    assert_eq!(w, Value::Okay, "fresh token's write");
    assert_eq!(ok(&mut c, &["GET", "{acct}:balance"]), Value::BulkString(b"100".to_vec()));
    // The stale token's SET is not applied, and the script answers the STALE error.
    let w = raws(&mut c, &["EVAL", GUARD, "2", "{acct}:fence", "{acct}:balance", &old.to_string(), "200"]);
    let e = value_err(&w).unwrap_or_else(|| panic!("stale write answered {w:?}"));
    assert!(
        e.starts_with(&stale(old, new)),
        "stale write answered {e:?}, expected it to start with {:?}",
        stale(old, new)
    );
    assert_eq!(ok(&mut c, &["GET", "{acct}:balance"]), Value::BulkString(b"100".to_vec()), "stale SET applied");
    assert_eq!(fence_current(&mut c, "{acct}:fence"), new);
    // Equal token passes again.
    let w = raws(&mut c, &["EVAL", GUARD, "2", "{acct}:fence", "{acct}:balance", &new.to_string(), "300"]);
    assert_eq!(w, Value::Okay);
    assert_eq!(ok(&mut c, &["GET", "{acct}:balance"]), Value::BulkString(b"300".to_vec()));
}

#[test]
fn stale_lock_holder_write_is_refused_by_the_eval_guard() {
    // The scenario fencing exists for: alice's lease ends while she is paused, bob takes the
    // lock and writes; alice's late write carries her older token and is refused.
    let s = Server::new();
    let mut c = s.conn();
    let alice = grant(&mut c, "{acct}:lock", "alice", 100);
    let mut o = s.conn();
    wait_until(Duration::from_secs(5), "alice's lease ended", || dbsize(&mut o) == 0);
    let bob = grant(&mut c, "{acct}:lock", "bob", LONG_TTL);
    assert!(bob > alice);
    let w = raws(&mut c, &["EVAL", GUARD, "2", "{acct}:fence", "{acct}:balance", &bob.to_string(), "bob"]);
    assert_eq!(w, Value::Okay);
    let w = raws(&mut c, &["EVAL", GUARD, "2", "{acct}:fence", "{acct}:balance", &alice.to_string(), "alice"]);
    let e = value_err(&w).unwrap_or_else(|| panic!("alice's stale write answered {w:?}"));
    assert!(e.starts_with(&stale(alice, bob)), "{e:?}");
    assert_eq!(ok(&mut c, &["GET", "{acct}:balance"]), Value::BulkString(b"bob".to_vec()));
}

#[test]
fn fence_check_inside_multi_records_and_rejects_like_outside() {
    let s = Server::new();
    let mut c = s.conn();
    let old = fence_next(&mut c, "f");
    let new = fence_next(&mut c, "f");
    // Fresh token in a transaction with a write.
    ok(&mut c, &["MULTI"]);
    assert_eq!(raws(&mut c, &["FENCE.CHECK", "f", &new.to_string()]), Value::SimpleString("QUEUED".into()));
    raws(&mut c, &["SET", "data", "fresh"]);
    raws(&mut c, &["FENCE.CURRENT", "f"]);
    let v = raws(&mut c, &["EXEC"]);
    let Value::Array(items) = v else { panic!("EXEC answered {v:?}") };
    assert_eq!(items[0], Value::Int(1));
    assert_eq!(items[1], Value::Okay);
    assert_eq!(items[2], Value::Int(new));
    // A stale token in a transaction answers STALE there and records nothing.
    ok(&mut c, &["MULTI"]);
    raws(&mut c, &["FENCE.CHECK", "f", &old.to_string()]);
    raws(&mut c, &["FENCE.CURRENT", "f"]);
    let v = raws(&mut c, &["EXEC"]);
    let Value::Array(items) = v else { panic!("EXEC answered {v:?}") };
    assert_eq!(value_err(&items[0]), Some(stale(old, new)), "{items:?}");
    assert_eq!(items[1], Value::Int(new));
    // A higher token and NEXT inside one transaction.
    ok(&mut c, &["MULTI"]);
    raws(&mut c, &["FENCE.CHECK", "f", &(new + 10).to_string()]);
    raws(&mut c, &["FENCE.NEXT", "f"]);
    let v = raws(&mut c, &["EXEC"]);
    let Value::Array(items) = v else { panic!("EXEC answered {v:?}") };
    assert_eq!(items[0], Value::Int(1));
    let n = value_int(&items[1]).expect("FENCE.NEXT token");
    assert!(n > new + 10);
    assert_eq!(fence_current(&mut c, "f"), n);
}

#[test]
fn fence_tokens_increase_after_del_and_flushall() {
    let s = Server::new();
    let mut c = s.conn();
    let a = fence_next(&mut c, "f");
    assert_eq!(int(&mut c, &["DEL", "f"]), 1);
    assert_eq!(fence_current(&mut c, "f"), 0);
    let b = fence_next(&mut c, "f");
    assert!(b > a, "FENCE.NEXT {b} after DEL not above {a}");
    ok(&mut c, &["FLUSHALL"]);
    let d = fence_next(&mut c, "f");
    assert!(d > b, "FENCE.NEXT {d} after FLUSHALL not above {b}");
}

/// Tokens stay below 2^53, so a script that holds one in a Lua number (a double) and
/// hands it back to FENCE.CHECK passes the exact token, and two tokens never collapse
/// into one value.
#[test]
fn tokens_survive_a_round_trip_through_lua_numbers() {
    let s = Server::new();
    let mut c = s.conn();
    let script = "local a = redis.call('FENCE.NEXT', KEYS[1]) \
                  local b = redis.call('FENCE.NEXT', KEYS[1]) \
                  redis.call('FENCE.CHECK', KEYS[1], b) \
                  return {a, b}";
    let v: Vec<i64> = redis::cmd("EVAL").arg(script).arg(1).arg("f").query(&mut c).unwrap();
    assert!(v[1] > v[0], "two tokens collapsed in Lua: {v:?}");
    assert_eq!(fence_current(&mut c, "f"), v[1], "FENCE.CHECK got a rounded token");
    let lock: i64 = redis::cmd("EVAL")
        .arg("return redis.call('LOCK.ACQUIRE', KEYS[1], 'me', 60000)")
        .arg(1)
        .arg("l")
        .query(&mut c)
        .unwrap();
    assert_eq!(Some(lock), lock_info(&mut c, "l").map(|i| i.token), "a script saw a rounded lock token");
}
