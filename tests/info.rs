//! `INFO fencelock`: the module's section, in `INFO fencelock`, `INFO modules` and `INFO
//! everything`, and every field following what happened: grants, handoffs (after a
//! release and after `DEL` with waiters), releases, extends, lease ends, wait
//! time-outs, stale fence checks, hold times, keys per kind (through `DEBUG RELOAD` too)
//! and a replica, which grants nothing itself.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

/// Every field, in the order Redis lists them.
const FIELDS: &[&str] = &[
    "mutexes",
    "rwlocks",
    "semaphores",
    "fences",
    "waiting_clients",
    "keys_with_waiters",
    "grants",
    "handoffs",
    "releases",
    "extends",
    "leases_expired",
    "wait_timeouts",
    "stale_refusals",
    "tokens_issued",
    "token_floor",
    "expiry_index_keys",
    "expiry_lag_ms",
    "wait_us_p50",
    "wait_us_p99",
    "wait_us_max",
    "hold_ms_p50",
    "hold_ms_p99",
    "hold_ms_max",
    "takeover_grace_left_ms",
    "cluster_floors_received",
];

/// The `fencelock_*` fields of `INFO section`, without the prefix, in order.
fn section(c: &mut redis::Connection, section: &str) -> Vec<(String, i64)> {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix("fencelock_"))
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("INFO line {l:?}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("INFO fencelock_{k} is not an integer: {v}")))
        })
        .collect()
}

fn stats(c: &mut redis::Connection) -> BTreeMap<String, i64> {
    section(c, "fencelock").into_iter().collect()
}

/// What changed between two readings, for the fields that changed.
fn delta(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    after.iter().filter(|(k, v)| before[*k] != **v).map(|(k, v)| (k.clone(), v - before[k])).collect()
}

fn expect(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn the_section_shows_in_info_fencelock_modules_and_everything() {
    let s = Server::new();
    let mut c = s.conn();
    let names = |list: Vec<(String, i64)>| list.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    for which in ["fencelock", "modules", "everything"] {
        assert_eq!(names(section(&mut c, which)), FIELDS, "INFO {which}");
    }
    assert!(section(&mut c, "default").is_empty(), "INFO (default) lists module sections only on request");
    let start = stats(&mut c);
    for f in FIELDS.iter().filter(|f| **f != "token_floor") {
        assert_eq!(start[*f], 0, "{f} on a fresh server");
    }
}

#[test]
fn counters_follow_grants_a_handoff_releases_and_extends() {
    let s = Server::new();
    let mut c = s.conn();
    let before = stats(&mut c);
    let t = grant(&mut c, "res", "holder", LONG_TTL);
    let after_grant = stats(&mut c);
    assert_eq!(delta(&before, &after_grant), expect(&[("mutexes", 1), ("grants", 1), ("tokens_issued", 1), ("expiry_index_keys", 1), ("token_floor", after_grant["token_floor"] - before["token_floor"])]));
    assert_eq!(after_grant["token_floor"], t);
    // A re-entry is not a grant.
    grant(&mut c, "res", "holder", LONG_TTL);
    assert_eq!(delta(&after_grant, &stats(&mut c)), expect(&[]));
    let mut w = Waiter::lock(&s, "res", "waiter", LONG_TTL, 0);
    await_blocked(&mut c, 1);
    let waiting = stats(&mut c);
    assert_eq!((waiting["waiting_clients"], waiting["keys_with_waiters"]), (1, 1));
    assert_eq!(release(&mut c, "res", "holder"), 1);
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t2 = w.granted();
    let after = stats(&mut c);
    let d = delta(&waiting, &after);
    assert_eq!((d["grants"], d["handoffs"], d["releases"], d["tokens_issued"]), (1, 1, 2, 1), "{d:?}");
    assert_eq!((after["waiting_clients"], after["keys_with_waiters"], after["mutexes"]), (0, 0, 1));
    assert_eq!(after["token_floor"], t2);
    assert!(after["wait_us_max"] > 0 && after["wait_us_p50"] > 0 && after["wait_us_p99"] <= after["wait_us_max"], "{after:?}");
    assert_eq!(value_int(&raws(&mut c, &["LOCK.EXTEND", "res", "waiter", "90000"])), Some(1));
    assert_eq!(value_int(&raws(&mut c, &["LOCK.EXTEND", "res", "nobody", "90000"])), Some(0));
    assert_eq!(release(&mut c, "res", "nobody"), 0);
    let d = delta(&after, &stats(&mut c));
    assert_eq!(d, expect(&[("extends", 1)]), "only the extend that held counts");
    assert_eq!(release(&mut c, "res", "waiter"), 1);
    let end = stats(&mut c);
    assert_eq!((end["mutexes"], end["releases"] - after["releases"]), (0, 1));
}

#[test]
fn lease_ends_time_outs_stale_checks_and_del_with_waiters_count() {
    let s = Server::new();
    let mut c = s.conn();
    let before = stats(&mut c);
    grant(&mut c, "short", "alice", 50);
    wait_until(Duration::from_secs(5), "the lease ends", || dbsize(&mut c) == 0);
    let after = stats(&mut c);
    let d = delta(&before, &after);
    assert_eq!(d.get("leases_expired"), Some(&1), "{d:?}");
    assert!((50..5_000).contains(&after["hold_ms_max"]), "a 50 ms lease held to its end: {after:?}");

    grant(&mut c, "held", "alice", LONG_TTL);
    let before = stats(&mut c);
    assert_eq!(raws(&mut c, &["LOCK.ACQUIRE", "held", "bob", "1000", "WAIT", "30"]), redis::Value::Nil);
    let d = delta(&before, &stats(&mut c));
    assert_eq!(d.get("wait_timeouts"), Some(&1), "{d:?}");

    let mut w = Waiter::lock(&s, "held", "carol", LONG_TTL, 0);
    await_blocked(&mut c, 1);
    let before = stats(&mut c);
    ok(&mut c, &["DEL", "held"]);
    w.granted();
    let d = delta(&before, &stats(&mut c));
    assert_eq!((d.get("handoffs"), d.get("grants")), (Some(&1), Some(&1)), "{d:?}");

    let t = value_int(&raws(&mut c, &["FENCE.NEXT", "f"])).unwrap();
    let before = stats(&mut c);
    assert!(value_err(&raws(&mut c, &["FENCE.CHECK", "f", &(t - 1).to_string()])).is_some_and(|e| e.starts_with("STALE")));
    assert_eq!(value_int(&raws(&mut c, &["FENCE.CHECK", "f", &t.to_string()])), Some(1));
    assert_eq!(delta(&before, &stats(&mut c)), expect(&[("stale_refusals", 1)]));
}

#[test]
fn releases_record_how_long_each_hold_lasted() {
    let s = Server::new();
    let mut c = s.conn();
    grant(&mut c, "m", "a", LONG_TTL);
    grant(&mut c, "m", "a", LONG_TTL);
    raws(&mut c, &["RWLOCK.RLOCK", "rw", "a", "60000"]);
    raws(&mut c, &["SEM.ACQUIRE", "s", "a", "2", "60000"]);
    let_time_pass(40);
    assert_eq!(release(&mut c, "m", "a"), 1);
    assert_eq!(stats(&mut c)["hold_ms_max"], 0, "a release that keeps a hold records nothing");
    assert_eq!(release(&mut c, "m", "a"), 1);
    let one = stats(&mut c)["hold_ms_max"];
    assert!((40..5_000).contains(&one), "the mutex held 40 ms or more: {one}");
    raws(&mut c, &["RWLOCK.RUNLOCK", "rw", "a"]);
    raws(&mut c, &["SEM.RELEASE", "s", "a"]);
    let all = stats(&mut c);
    assert!(all["hold_ms_p50"] >= 40 && all["hold_ms_p99"] <= all["hold_ms_max"], "{all:?}");
}

#[test]
fn keys_per_kind_follow_creation_deletion_and_reload() {
    let s = Server::new();
    let mut c = s.conn();
    grant(&mut c, "m1", "a", LONG_TTL);
    grant(&mut c, "m2", "a", LONG_TTL);
    raws(&mut c, &["RWLOCK.RLOCK", "rw", "a", "60000"]);
    raws(&mut c, &["SEM.ACQUIRE", "s", "a", "3", "60000"]);
    raws(&mut c, &["FENCE.NEXT", "f"]);
    let kinds = |c: &mut redis::Connection| {
        let s = stats(c);
        (s["mutexes"], s["rwlocks"], s["semaphores"], s["fences"])
    };
    assert_eq!(kinds(&mut c), (2, 1, 1, 1));
    // Values are freed when Redis frees them, which a server may do in the background
    // (lazyfree; Valkey 9.1 frees the reloaded dataset's old values so), so the counts
    // are awaited.
    ok(&mut c, &["DEBUG", "RELOAD"]);
    wait_until(Duration::from_secs(5), "the counts after DEBUG RELOAD", || kinds(&mut c) == (2, 1, 1, 1));
    ok(&mut c, &["DEL", "m1", "f"]);
    assert_eq!(release(&mut c, "m2", "a"), 1);
    wait_until(Duration::from_secs(5), "DEL and a release free their keys", || kinds(&mut c) == (0, 1, 1, 0));
    ok(&mut c, &["FLUSHALL"]);
    wait_until(Duration::from_secs(5), "FLUSHALL frees every key", || kinds(&mut c) == (0, 0, 0, 0));
}

#[test]
fn a_replica_counts_its_keys_and_grants_nothing() {
    let master = Server::start(&["repl-diskless-sync-delay 0"]);
    let mut m = master.conn();
    grant(&mut m, "before", "a", LONG_TTL);
    let replica = start_synced_replica(&master);
    grant(&mut m, "after", "a", LONG_TTL);
    raws(&mut m, &["FENCE.NEXT", "f"]);
    await_sync(&master, &replica);
    let mut r = replica.conn();
    let rs = stats(&mut r);
    assert_eq!((rs["mutexes"], rs["fences"]), (2, 1), "{rs:?}");
    assert_eq!((rs["grants"], rs["tokens_issued"]), (0, 0), "a replica applies effects, it grants nothing: {rs:?}");
    assert_eq!(rs["token_floor"], stats(&mut m)["token_floor"], "the replica learns the master's tokens");
}
