//! State survives DEBUG RELOAD, DEBUG LOADAOF, SAVE + restart, BGSAVE + restart,
//! BGREWRITEAOF + restart (with and without the RDB preamble) and kill -9 with `appendfsync
//! always`: holders, tokens, hold counts and absolute lease deadlines unchanged; tokens
//! issued afterwards are larger.
//!
//! Each test builds the state of every lock kind (`kinds::KINDS`, `tests/support/kinds.rs`:
//! mutex, read-write lock, fences, semaphores) on one server, with a plain string beside them, and asks
//! each kind for its checks; a new kind joins every test with its `LockKind` impl.

#[path = "support/kinds.rs"]
mod kinds;
mod support;

use std::time::Duration;

use kinds::*;
use redis::Value;
use support::*;

/// How long we let pass between reading the state and reloading it: a lease recomputed as
/// "now + ttl" at load time would come back longer than the ttl read before, by about this.
const PASS_MS: i64 = 300;

#[test]
fn debug_reload_keeps_holders_tokens_holds_and_deadlines() {
    let s = Server::new();
    let mut c = s.conn();
    let mut tokens = build_all(&mut c);
    let shorts = start_shorts(&mut c, 2_500);
    tokens.extend(shorts.iter().map(|(_, s)| s.token));
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    assert_shorts_kept(&mut c, &shorts, PASS_MS, true, "DEBUG RELOAD");
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "DEBUG RELOAD");
    assert_neighbours_all(&mut c, "DEBUG RELOAD");
    // The short leases still end by themselves.
    assert_shorts_end(&mut s.conn(), &shorts, "after DEBUG RELOAD");
    assert_fresh_tokens_larger_all(&mut c, &tokens, "DEBUG RELOAD");
    // And once more, with the new state.
    let before = snapshot(&mut c);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, 0, "second DEBUG RELOAD");
}

#[test]
fn debug_loadaof_keeps_holders_tokens_holds_and_deadlines() {
    let s = Server::start(&["appendonly yes", "appendfsync always"]);
    let mut c = s.conn();
    let tokens = build_all(&mut c);
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    ok(&mut c, &["DEBUG", "LOADAOF"]);
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "DEBUG LOADAOF");
    assert_neighbours_all(&mut c, "DEBUG LOADAOF");
    assert_fresh_tokens_larger_all(&mut c, &tokens, "DEBUG LOADAOF");
}

#[test]
fn save_and_restart_keep_state_and_a_lease_over_while_down_stays_over() {
    let mut s = Server::new();
    let mut c = s.conn();
    let tokens = build_all(&mut c);
    // Per leased kind, a lease that ends while the server is down.
    let gone: Vec<(&dyn LockKind, String, i64)> = leased_kinds()
        .map(|k| {
            let key = k.key("gone");
            let t = k.grant(&mut c, &key, "hank", 1_000);
            (k, key, t)
        })
        .collect();
    ok(&mut c, &["SAVE"]);
    // Still held after SAVE returned, so the RDB has them, with their deadlines.
    for (k, key, t) in &gone {
        let st = k.state(&mut c, key).unwrap_or_else(|| panic!("{key} ended before SAVE (machine too slow?)"));
        assert_eq!(st.token_of("hank"), Some(*t), "{key} ended before SAVE (machine too slow?)");
    }
    // The snapshot without them: they end while the server is down.
    let mut o = s.conn();
    wait_until(Duration::from_secs(5), "the short leases ended", || {
        gone.iter().all(|(_, key, _)| !exists(&mut o, key))
    });
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    drop((c, o));
    s.restart();
    let mut c = s.conn();
    // They are in the RDB with a deadline in the past: over at once.
    for (k, key, _) in &gone {
        assert_eq!(k.state(&mut c, key), None, "{key}: a lease that ended while the server was down");
    }
    wait_until(Duration::from_secs(5), "the leases over while down were removed after load", || {
        gone.iter().all(|(_, key, _)| !exists(&mut c, key))
    });
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "SAVE + restart");
    assert_neighbours_all(&mut c, "SAVE + restart");
    assert_fresh_tokens_larger_all(&mut c, &tokens, "SAVE + restart");
    for (k, key, t) in &gone {
        let n = k.grant(&mut c, key, "ian", LONG_TTL);
        assert!(n > *t, "{key}: token {n} after a lease over while down not above {t}");
    }
}

#[test]
fn bgsave_and_restart_keep_state() {
    let mut s = Server::new();
    let mut c = s.conn();
    let tokens = build_all(&mut c);
    ok(&mut c, &["BGSAVE"]);
    await_bgsave(&mut c);
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    drop(c);
    s.restart();
    let mut c = s.conn();
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "BGSAVE + restart");
    assert_neighbours_all(&mut c, "BGSAVE + restart");
    assert_fresh_tokens_larger_all(&mut c, &tokens, "BGSAVE + restart");
}

fn bgrewriteaof_then_restart(preamble: bool) {
    let cfg = if preamble { "aof-use-rdb-preamble yes" } else { "aof-use-rdb-preamble no" };
    let what = format!("BGREWRITEAOF ({cfg}) + restart");
    let mut s = Server::start(&["appendonly yes", cfg]);
    let mut c = s.conn();
    let mut tokens = build_all(&mut c);
    ok(&mut c, &["BGREWRITEAOF"]);
    await_aof_rewrite(&mut c);
    let bases = aof_base_files(&s);
    let ext = if preamble { ".base.rdb" } else { ".base.aof" };
    assert!(bases.iter().any(|n| n.ends_with(ext)), "expected a {ext} file after the rewrite, found {bases:?}");
    // Changes after the rewrite go to the incremental file.
    for kind in KINDS {
        kind.change_after_rewrite(&mut c, &mut tokens);
    }
    let shorts = start_shorts(&mut c, 3_000);
    tokens.extend(shorts.iter().map(|(_, s)| s.token));
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    drop(c);
    s.restart();
    let mut c = s.conn();
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, &what);
    assert_neighbours_all(&mut c, &what);
    assert_shorts_kept(&mut c, &shorts, PASS_MS, false, &what);
    assert_shorts_end(&mut s.conn(), &shorts, &what);
    // DEBUG LOADAOF replays the same.
    let before = snapshot(&mut c);
    ok(&mut c, &["DEBUG", "LOADAOF"]);
    assert_same_state(&before, &snapshot(&mut c), 0, &format!("{what}, DEBUG LOADAOF"));
    assert_fresh_tokens_larger_all(&mut c, &tokens, &what);
    // A second restart replays the new tail too.
    let before = snapshot(&mut c);
    drop(c);
    s.restart();
    let mut c = s.conn();
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, 0, &format!("{what}, twice"));
}

#[test]
fn bgrewriteaof_with_rdb_preamble_then_restart_keeps_state() {
    bgrewriteaof_then_restart(true);
}

#[test]
fn bgrewriteaof_without_rdb_preamble_then_restart_keeps_state() {
    bgrewriteaof_then_restart(false);
}

#[test]
fn debug_reload_with_waiters_keeps_them_waiting_in_order() {
    let s = Server::new();
    let mut c = s.conn();
    let tw = wgrant(&mut c, "rw", "w", LONG_TTL);
    let (mut r, mut x) = queue_reader_then_writer(&s, &mut c);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    // Still written by w, both still wait.
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.mode.as_str(), i.who(), i.waiters), ("write", who(&[("w", "write")]), 2));
    assert_eq!(i.holder("w", "write").token, tw);
    r.assert_still_blocked();
    x.assert_still_blocked();
    assert_eq!(wunlock(&mut c, "rw", "w"), 1);
    let tr = r.granted();
    assert!(tr > tw);
    let i = rw_held(&mut c, "rw");
    assert_eq!((i.who(), i.waiters), (who(&[("r", "read")]), 1));
    x.assert_still_blocked();
    assert_eq!(runlock(&mut c, "rw", "r"), 1);
    assert!(x.granted() > tr);
}

#[test]
fn kill9_with_appendfsync_always_keeps_every_acknowledged_grant() {
    let mut s = Server::start(&["appendonly yes", "appendfsync always"]);
    let mut c = s.conn();
    // expected[i] = Some((owner, token, holds)) or None (released)
    let mut expected: Vec<Option<(String, i64, i64)>> = vec![];
    let mut all_tokens = vec![];
    for i in 0..200 {
        let key = format!("lock:{i}");
        let owner = format!("owner-{i}");
        let t = grant(&mut c, &key, &owner, LONG_TTL + i);
        all_tokens.push(t);
        let mut holds = 1;
        if i % 3 == 0 {
            assert_eq!(acquire(&mut c, &key, &owner, LONG_TTL), Some(t));
            holds += 1;
        }
        if i % 7 == 0 {
            assert_eq!(release(&mut c, &key, &owner), 1);
            holds -= 1;
        }
        if i % 5 == 0 {
            for _ in 0..holds {
                assert_eq!(release(&mut c, &key, &owner), 1);
            }
            holds = 0;
        }
        if i % 11 == 0 {
            assert_eq!(extend(&mut c, &key, &owner, 2 * LONG_TTL), if holds > 0 { 1 } else { 0 });
        }
        expected.push(if holds > 0 { Some((owner, t, holds)) } else { None });
    }
    let mut fences = vec![];
    for i in 0..20 {
        let f = format!("fence:{i}");
        let mut t = 0;
        for _ in 0..=i % 4 {
            t = fence_next(&mut c, &f);
            all_tokens.push(t);
        }
        fences.push((f, t));
    }
    let ttls: Vec<Option<i64>> = (0..200).map(|i| lock_info(&mut c, &format!("lock:{i}")).map(|x| x.ttl)).collect();
    let held_count = expected.iter().filter(|e| e.is_some()).count() as i64;
    assert_eq!(dbsize(&mut c), held_count + 20);
    let digest_before = digest(&mut c);
    let_time_pass(PASS_MS);
    drop(c);
    s.kill9();
    s.start_again();
    let mut c = s.conn();
    for (i, e) in expected.iter().enumerate() {
        let key = format!("lock:{i}");
        let got = lock_info(&mut c, &key);
        match (e, got) {
            (None, None) => assert!(!exists(&mut c, &key), "{key} released but its key is back"),
            (Some((owner, token, holds)), Some(g)) => {
                assert_eq!(g.owner.as_deref(), Some(owner.as_bytes()), "{key} owner after kill -9");
                assert_eq!(g.token, *token, "{key} token after kill -9");
                assert_eq!(g.holds, *holds, "{key} holds after kill -9");
                let before = ttls[i].unwrap();
                assert!(g.ttl <= before - PASS_MS, "{key}: lease longer after AOF replay: {} vs {before}", g.ttl);
            }
            (e, g) => panic!("{key}: expected {e:?} after kill -9, got {g:?}"),
        }
    }
    for (f, t) in &fences {
        assert_eq!(fence_current(&mut c, f), *t, "{f} after kill -9");
    }
    assert_eq!(dbsize(&mut c), held_count + 20);
    assert_eq!(digest(&mut c), digest_before, "DEBUG DIGEST after kill -9 and AOF replay");
    // Fresh tokens are larger than everything issued before the crash.
    let max = *all_tokens.iter().max().unwrap();
    let mut last = max;
    for (i, e) in expected.iter().enumerate() {
        if e.is_none() {
            let t = grant(&mut c, &format!("lock:{i}"), "after-crash", LONG_TTL);
            assert!(t > last, "token {t} after kill -9 not above {last}");
            last = t;
        }
    }
    for (f, _) in &fences {
        let t = fence_next(&mut c, f);
        assert!(t > last, "FENCE.NEXT {t} after kill -9 not above {last}");
        last = t;
    }
}

#[test]
fn lock_keys_show_in_object_memory_usage_and_digest_value() {
    let s = Server::new();
    let mut c = s.conn();
    for kind in KINDS {
        let (a, b) = (kind.key("a"), kind.key("b"));
        kind.grant(&mut c, &a, "alice", LONG_TTL);
        kind.grant(&mut c, &b, "alice", LONG_TTL);
        let v = raws(&mut c, &["OBJECT", "ENCODING", &a]);
        assert!(value_err(&v).is_none(), "OBJECT ENCODING {a}: {v:?}");
        let m = int(&mut c, &["MEMORY", "USAGE", &a]);
        assert!(m > 0, "MEMORY USAGE {a} = {m}");
        let da = digest_value(&mut c, &a);
        let db = digest_value(&mut c, &b);
        assert_ne!(da, "0".repeat(40), "{} key has an empty value digest", kind.name());
        assert_ne!(da, db, "{} keys with different tokens have the same value digest", kind.name());
        // The digest follows the value: a re-acquire changes the hold count (a fence's
        // next token, its highest).
        if kind.reenter(&mut c, &a, "alice", LONG_TTL).is_none() {
            kind.grant(&mut c, &a, "alice", LONG_TTL);
        }
        assert_ne!(digest_value(&mut c, &a), da, "{} value digest ignores a change of its value", kind.name());
    }
    assert_eq!(ok(&mut c, &["DBSIZE"]), Value::Int(2 * KINDS.len() as i64));
}

/// Turned on at run time, the AOF starts from a rewrite of the keyspace and then takes
/// every effect: effects built before (when nothing read them) were not needed, those
/// after must all be there. DEBUG LOADAOF replays it.
#[test]
fn aof_turned_on_at_run_time_misses_no_change() {
    let s = Server::start(&["appendonly no", "appendfsync always"]);
    let mut c = s.conn();
    let mut tokens = build_all(&mut c);
    ok(&mut c, &["CONFIG", "SET", "appendonly", "yes"]);
    wait_until(Duration::from_secs(20), "the AOF rewrite that turns the AOF on", || {
        let i = info(&mut c, "persistence");
        i.get("aof_enabled").map(String::as_str) == Some("1")
            && i.get("aof_rewrite_in_progress").map(String::as_str) == Some("0")
            && i.get("aof_rewrite_scheduled").map(String::as_str) == Some("0")
    });
    for kind in KINDS {
        let key = kind.key("after-aof");
        tokens.push(kind.grant(&mut c, &key, "alice", LONG_TTL));
        kind.reenter(&mut c, &key, "alice", 2 * LONG_TTL);
        let freed = kind.key("freed-after-aof");
        tokens.push(kind.grant(&mut c, &freed, "bob", LONG_TTL));
        kind.release(&mut c, &freed, "bob");
    }
    let before = snapshot(&mut c);
    let digest_before = digest(&mut c);
    // A replay that recomputed a lease from its ttl would end it later than before.
    let_time_pass(PASS_MS);
    ok(&mut c, &["DEBUG", "LOADAOF"]);
    assert_same_state(&before, &snapshot(&mut c), PASS_MS, "DEBUG LOADAOF of an AOF turned on at run time");
    assert_eq!(digest(&mut c), digest_before, "DEBUG DIGEST after DEBUG LOADAOF");
    assert_fresh_tokens_larger_all(&mut c, &tokens, "DEBUG LOADAOF of an AOF turned on at run time");
}

/// Every change counts once toward the save points (`save <seconds> <changes>`), as a
/// native write does, whether or not anything reads the effects: Redis counts them in
/// `rdb_changes_since_last_save`.
#[test]
fn every_change_counts_toward_the_save_points() {
    for config in [&["appendonly no"][..], &["appendonly yes"][..]] {
        let s = Server::start(config);
        let mut c = s.conn();
        let changes = |c: &mut redis::Connection| -> i64 {
            info(c, "persistence")["rdb_changes_since_last_save"].parse().unwrap()
        };
        let step = |c: &mut redis::Connection, args: &[&str], counted: i64| {
            let before = changes(c);
            raws(c, args);
            assert_eq!(changes(c) - before, counted, "{config:?}: changes counted for {args:?}");
        };
        step(&mut c, &["LOCK.ACQUIRE", "l", "alice", "60000"], 1);
        step(&mut c, &["LOCK.ACQUIRE", "l", "alice", "60000"], 1);
        step(&mut c, &["LOCK.ACQUIRE", "l", "bob", "60000"], 0);
        step(&mut c, &["LOCK.EXTEND", "l", "alice", "90000"], 1);
        step(&mut c, &["LOCK.RELEASE", "l", "alice"], 1);
        step(&mut c, &["LOCK.RELEASE", "l", "alice"], 1);
        step(&mut c, &["LOCK.RELEASE", "l", "alice"], 0);
        step(&mut c, &["RWLOCK.RLOCK", "rw", "alice", "60000"], 1);
        step(&mut c, &["RWLOCK.RUNLOCK", "rw", "alice"], 1);
        step(&mut c, &["SEM.ACQUIRE", "s", "alice", "2", "60000"], 1);
        step(&mut c, &["SEM.RELEASE", "s", "alice"], 1);
        step(&mut c, &["FENCE.NEXT", "f"], 1);
    }
}
