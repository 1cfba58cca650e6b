//! State survives DEBUG RELOAD, DEBUG LOADAOF, SAVE + restart, BGREWRITEAOF + restart (with
//! and without the RDB preamble) and kill -9 with `appendfsync always`: holders, tokens,
//! hold counts and absolute lease deadlines unchanged; tokens issued afterwards are larger.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use common::*;
use redis::Value;

/// How long we let pass between reading the state and reloading it: a lease recomputed as
/// "now + ttl" at load time would come back longer than the ttl read before, by about this.
const PASS_MS: i64 = 300;

/// A varied state: reentrant holds, a binary owner, fence keys, plain keys beside them.
/// Returns every token issued.
fn build_state(c: &mut redis::Connection) -> Vec<i64> {
    let mut tokens = vec![];
    tokens.push(grant(c, "m:single", "alice", LONG_TTL));
    let t = grant(c, "m:reentrant", "bob", LONG_TTL);
    assert_eq!(acquire(c, "m:reentrant", "bob", LONG_TTL), Some(t));
    assert_eq!(acquire(c, "m:reentrant", "bob", 500_000), Some(t));
    tokens.push(t);
    tokens.push(acquire_b(c, b"m:binary", b"\x00host:1\xff", LONG_TTL).unwrap());
    let t = grant(c, "m:released", "carol", LONG_TTL);
    assert_eq!(release(c, "m:released", "carol"), 1);
    tokens.push(t);
    tokens.push(grant(c, "m:maxttl", "dave", MAX_TTL));
    for _ in 0..5 {
        tokens.push(fence_next(c, "f:next"));
    }
    let f = fence_next(c, "f:checked");
    tokens.push(f);
    assert_eq!(fence_check(c, "f:checked", &(f + 7).to_string()), Ok(1));
    ok(c, &["SET", "plain", "v"]);
    tokens
}

const MUTEXES: [&str; 5] = ["m:single", "m:reentrant", "m:binary", "m:released", "m:maxttl"];
const FENCES: [&str; 2] = ["f:next", "f:checked"];

#[derive(Debug)]
struct Snapshot {
    locks: BTreeMap<String, Option<LockInfo>>,
    fences: BTreeMap<String, i64>,
    dbsize: i64,
    digest: String,
}

fn snapshot(c: &mut redis::Connection) -> Snapshot {
    let mut locks = BTreeMap::new();
    for k in MUTEXES {
        let key: &[u8] = if k == "m:binary" { b"m:binary" } else { k.as_bytes() };
        locks.insert(k.to_string(), lock_info_b(c, key));
    }
    let mut fences = BTreeMap::new();
    for f in FENCES {
        fences.insert(f.to_string(), fence_current(c, f));
    }
    Snapshot { locks, fences, dbsize: dbsize(c), digest: digest(c) }
}

/// The state after a reload equals the state before, leases shortened by at least the time
/// that passed in between (`passed` ms).
fn assert_same_state(before: &Snapshot, after: &Snapshot, passed: i64, what: &str) {
    for (k, b) in &before.locks {
        let a = &after.locks[k];
        match (b, a) {
            (None, None) => {}
            (Some(b), Some(a)) => {
                assert_eq!(a.owner, b.owner, "{what}: owner of {k}");
                assert_eq!(a.token, b.token, "{what}: token of {k}");
                assert_eq!(a.holds, b.holds, "{what}: holds of {k}");
                assert_eq!(a.waiters, b.waiters, "{what}: waiters of {k}");
                assert!(
                    a.ttl <= b.ttl - passed,
                    "{what}: lease of {k} got longer by being saved: ttl {} before, {} after {passed} ms",
                    b.ttl,
                    a.ttl
                );
                assert!(a.ttl > 0, "{what}: {k} ttl {}", a.ttl);
            }
            _ => panic!("{what}: {k} was {b:?}, is {a:?}"),
        }
    }
    assert_eq!(after.fences, before.fences, "{what}: fence highest tokens");
    assert_eq!(after.dbsize, before.dbsize, "{what}: DBSIZE");
    assert_eq!(after.digest, before.digest, "{what}: DEBUG DIGEST");
}

/// After a reload: fresh grants on every kind of key are larger than every token before.
fn assert_fresh_tokens_larger(c: &mut redis::Connection, before: &[i64], what: &str) {
    let max = *before.iter().max().unwrap();
    let t = grant(c, "m:released", "erin", LONG_TTL);
    assert!(t > max, "{what}: token {t} on a released name not above {max}");
    let t2 = grant(c, "m:brand-new", "erin", LONG_TTL);
    assert!(t2 > t, "{what}: token {t2} on a new name not above {t}");
    assert_eq!(release(c, "m:single", "alice"), 1, "{what}: holder can release after reload");
    let t3 = grant(c, "m:single", "frank", LONG_TTL);
    assert!(t3 > t2, "{what}: token {t3} after release not above {t2}");
    let f = fence_next(c, "f:next");
    assert!(f > t3, "{what}: FENCE.NEXT {f} not above {t3}");
    let checked = fence_current(c, "f:checked");
    let g = fence_next(c, "f:checked");
    assert!(g > checked && g > max, "{what}: FENCE.NEXT {g} not above {checked} / {max}");
    // The reentrant holder still counts down correctly.
    assert_eq!(release(c, "m:reentrant", "bob"), 1);
    assert_eq!(release(c, "m:reentrant", "bob"), 1);
    assert_eq!(release(c, "m:reentrant", "bob"), 1);
    assert_eq!(release(c, "m:reentrant", "bob"), 0);
    assert!(!exists(c, "m:reentrant"));
}

/// A lease short enough to end during the test, long enough to survive a reload: it is
/// still held right after, and then ends by itself.
fn assert_short_lease_ends_after_reload(s: &Server, before_ttl: i64) {
    let mut c = s.conn();
    if let Some(i) = lock_info(&mut c, "m:soon") {
        assert!(i.ttl <= before_ttl, "short lease got longer: {} > {before_ttl}", i.ttl);
    }
    wait_until(Duration::from_secs(10), "the short lease ended after the reload", || !exists(&mut c, "m:soon"));
}

#[test]
fn debug_reload_keeps_holders_tokens_holds_and_deadlines() {
    let s = Server::new();
    let mut c = s.conn();
    let mut tokens = build_state(&mut c);
    tokens.push(grant(&mut c, "m:soon", "gina", 2_500));
    let soon_ttl = held(&mut c, "m:soon").ttl;
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    ok(&mut c, &["DEBUG", "RELOAD"]);
    let soon = held(&mut c, "m:soon");
    assert!(soon.ttl <= soon_ttl - PASS_MS, "short lease got longer: {} vs {soon_ttl}", soon.ttl);
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "DEBUG RELOAD");
    assert_eq!(key_type(&mut c, "m:single"), "lockmutex");
    assert_eq!(key_type(&mut c, "f:next"), "lockfence");
    assert_eq!(int(&mut c, &["PTTL", "m:single"]), -1);
    assert_eq!(ok(&mut c, &["GET", "plain"]), Value::BulkString(b"v".to_vec()));
    assert_short_lease_ends_after_reload(&s, soon_ttl);
    assert_fresh_tokens_larger(&mut c, &tokens, "DEBUG RELOAD");
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
    let tokens = build_state(&mut c);
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    ok(&mut c, &["DEBUG", "LOADAOF"]);
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "DEBUG LOADAOF");
    assert_fresh_tokens_larger(&mut c, &tokens, "DEBUG LOADAOF");
}

#[test]
fn save_and_restart_keep_state_and_a_lease_over_while_down_stays_over() {
    let mut s = Server::new();
    let mut c = s.conn();
    let tokens = build_state(&mut c);
    let gone = grant(&mut c, "m:gone", "hank", 1_000);
    ok(&mut c, &["SAVE"]);
    // Still held after SAVE returned, so the RDB has it, with its deadline.
    assert_eq!(held(&mut c, "m:gone").token, gone, "m:gone ended before SAVE (machine too slow?)");
    // The snapshot without m:gone, which ends while the server is down.
    let mut o = s.conn();
    wait_until(Duration::from_secs(5), "m:gone ended", || !exists(&mut o, "m:gone"));
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    drop((c, o));
    s.restart();
    let mut c = s.conn();
    // m:gone is in the RDB with a deadline in the past: it must be over at once.
    assert_eq!(lock_info(&mut c, "m:gone"), None, "a lease that ended while the server was down");
    wait_until(Duration::from_secs(5), "m:gone removed after load", || !exists(&mut c, "m:gone"));
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "SAVE + restart");
    assert_fresh_tokens_larger(&mut c, &tokens, "SAVE + restart");
    let t = grant(&mut c, "m:gone", "ian", LONG_TTL);
    assert!(t > gone, "token {t} after a lease over while down not above {gone}");
}

#[test]
fn bgsave_and_restart_keep_state() {
    let mut s = Server::new();
    let mut c = s.conn();
    let tokens = build_state(&mut c);
    ok(&mut c, &["BGSAVE"]);
    await_bgsave(&mut c);
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    drop(c);
    s.restart();
    let mut c = s.conn();
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, "BGSAVE + restart");
    assert_fresh_tokens_larger(&mut c, &tokens, "BGSAVE + restart");
}

fn aof_base_files(s: &Server) -> Vec<String> {
    let dir = s.dir.join("appendonlydir");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".base."))
        .collect();
    names.sort();
    names
}

fn bgrewriteaof_then_restart(preamble: bool) {
    let cfg = if preamble { "aof-use-rdb-preamble yes" } else { "aof-use-rdb-preamble no" };
    let mut s = Server::start(&["appendonly yes", cfg]);
    let mut c = s.conn();
    let mut tokens = build_state(&mut c);
    ok(&mut c, &["BGREWRITEAOF"]);
    await_aof_rewrite(&mut c);
    let bases = aof_base_files(&s);
    let ext = if preamble { ".base.rdb" } else { ".base.aof" };
    assert!(bases.iter().any(|n| n.ends_with(ext)), "expected a {ext} file after the rewrite, found {bases:?}");
    // Changes after the rewrite go to the incremental file.
    tokens.push(grant(&mut c, "m:after-rewrite", "ivan", LONG_TTL));
    assert_eq!(acquire(&mut c, "m:reentrant", "bob", LONG_TTL), Some(tokens[1]));
    assert_eq!(release(&mut c, "m:reentrant", "bob"), 1);
    tokens.push(fence_next(&mut c, "f:next"));
    tokens.push(grant(&mut c, "m:soon", "gina", 3_000));
    let soon_ttl = held(&mut c, "m:soon").ttl;
    let after_rewrite = held(&mut c, "m:after-rewrite");
    let before = snapshot(&mut c);
    let_time_pass(PASS_MS);
    drop(c);
    s.restart();
    let mut c = s.conn();
    let what = format!("BGREWRITEAOF ({cfg}) + restart");
    let a = held(&mut c, "m:after-rewrite");
    assert_eq!((a.owner.as_deref(), a.token, a.holds), (Some(&b"ivan"[..]), after_rewrite.token, 1), "{what}");
    assert!(a.ttl <= after_rewrite.ttl - PASS_MS, "{what}: lease got longer by AOF replay");
    let after = snapshot(&mut c);
    assert_same_state(&before, &after, PASS_MS, &what);
    assert_short_lease_ends_after_reload(&s, soon_ttl);
    assert_fresh_tokens_larger(&mut c, &tokens, &what);
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
    grant(&mut c, "a", "alice", LONG_TTL);
    grant(&mut c, "b", "alice", LONG_TTL);
    fence_next(&mut c, "f");
    for k in ["a", "f"] {
        let v = raws(&mut c, &["OBJECT", "ENCODING", k]);
        assert!(value_err(&v).is_none(), "OBJECT ENCODING {k}: {v:?}");
        let m = int(&mut c, &["MEMORY", "USAGE", k]);
        assert!(m > 0, "MEMORY USAGE {k} = {m}");
    }
    let dv = |c: &mut redis::Connection, k: &str| -> String {
        match ok(c, &["DEBUG", "DIGEST-VALUE", k]) {
            Value::Array(v) => match &v[0] {
                Value::SimpleString(s) => s.clone(),
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("DEBUG DIGEST-VALUE {k}: {other:?}"),
            },
            other => panic!("DEBUG DIGEST-VALUE {k}: {other:?}"),
        }
    };
    let da = dv(&mut c, "a");
    let db = dv(&mut c, "b");
    let df = dv(&mut c, "f");
    assert_ne!(da, "0".repeat(40), "lock key has an empty value digest");
    assert_ne!(df, "0".repeat(40), "fence key has an empty value digest");
    assert_ne!(da, db, "locks with different tokens have the same value digest");
    // The digest follows the value: a re-acquire changes the hold count.
    grant(&mut c, "a", "alice", LONG_TTL);
    assert_ne!(dv(&mut c, "a"), da, "value digest ignores the hold count");
}
