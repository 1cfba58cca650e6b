//! Module configs (`fencelock.*`): listed by `CONFIG GET`, set at load (config file,
//! `loadmodule ... ARGS`, command line) or with `CONFIG SET`, persisted by `CONFIG
//! REWRITE`; a bad value answers an error and changes nothing, and each value bounds
//! what it says.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

fn configs(c: &mut redis::Connection) -> BTreeMap<String, String> {
    let pairs: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("fencelock.*").query(c).expect("CONFIG GET");
    pairs.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
}

fn config_set(c: &mut redis::Connection, name: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query(c)
}

#[test]
fn configs_are_listed_with_their_defaults() {
    let s = Server::new();
    let mut c = s.conn();
    let want: BTreeMap<String, String> = [
        ("fencelock.expiry-slice-us", "1000"),
        ("fencelock.max-ttl", "1099511627776"),
        ("fencelock.max-waiters", "0"),
        ("fencelock.takeover-grace", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(configs(&mut c), want);
}

#[test]
fn bad_values_answer_an_error_and_change_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let before = configs(&mut c);
    for (name, bad) in [
        ("fencelock.max-ttl", "0"),
        ("fencelock.max-ttl", "-5"),
        ("fencelock.max-ttl", "1099511627777"),
        ("fencelock.max-ttl", "ten"),
        ("fencelock.expiry-slice-us", "0"),
        ("fencelock.expiry-slice-us", "1000001"),
        ("fencelock.max-waiters", "-1"),
        ("fencelock.max-waiters", "1.5"),
    ] {
        let e = expect_err(config_set(&mut c, name, bad));
        assert!(e.contains("CONFIG SET failed") && e.contains(name), "CONFIG SET {name} {bad}: {e}");
    }
    assert_eq!(configs(&mut c), before, "a refused value changed a config");
}

#[test]
fn max_ttl_bounds_every_lease_and_the_error_says_so() {
    let s = Server::new();
    let mut c = s.conn();
    assert_eq!(config_set(&mut c, "fencelock.max-ttl", "1000").unwrap(), "OK");
    let too_long: &[&[&str]] = &[
        &["LOCK.ACQUIRE", "l", "alice", "1001"],
        &["RWLOCK.RLOCK", "rw", "alice", "1001"],
        &["RWLOCK.WLOCK", "rw", "alice", "1001"],
        &["SEM.ACQUIRE", "s", "alice", "2", "1001"],
    ];
    for args in too_long {
        let e = value_err(&raws(&mut c, args)).unwrap_or_else(|| panic!("{args:?} was not refused"));
        assert_eq!(e, "ERR ttl must be an integer between 1 and 1000", "{args:?}");
    }
    assert_eq!(dbsize(&mut c), 0, "a refused acquire changed something");
    for (acquire, extend) in [
        (&["LOCK.ACQUIRE", "l", "alice", "1000"][..], &["LOCK.EXTEND", "l", "alice", "1001"][..]),
        (&["RWLOCK.WLOCK", "rw", "alice", "1000"][..], &["RWLOCK.EXTEND", "rw", "alice", "1001"][..]),
        (&["SEM.ACQUIRE", "s", "alice", "2", "1000"][..], &["SEM.EXTEND", "s", "alice", "1001"][..]),
    ] {
        assert!(value_int(&raws(&mut c, acquire)).is_some_and(|t| t > 0), "{acquire:?} at the maximum");
        let e = value_err(&raws(&mut c, extend)).unwrap_or_else(|| panic!("{extend:?} was not refused"));
        assert_eq!(e, "ERR ttl must be an integer between 1 and 1000", "{extend:?}");
    }
    // Back to the default: the contract's bound.
    assert_eq!(config_set(&mut c, "fencelock.max-ttl", "1099511627776").unwrap(), "OK");
    let e = value_err(&raws(&mut c, &["LOCK.ACQUIRE", "other", "alice", "1099511627777"])).unwrap();
    assert_eq!(e, "ERR ttl must be an integer between 1 and 1099511627776");
}

#[test]
fn max_waiters_set_at_load_refuses_one_more_waiter_and_keeps_the_queue() {
    let s = Server::start(&["fencelock.max-waiters 2"]);
    let mut c = s.conn();
    assert_eq!(configs(&mut c)["fencelock.max-waiters"], "2");
    grant(&mut c, "res", "holder", LONG_TTL);
    let mut first = Waiter::lock(&s, "res", "w1", LONG_TTL, 0);
    await_blocked(&mut c, 1);
    let mut second = Waiter::lock(&s, "res", "w2", LONG_TTL, 0);
    await_blocked(&mut c, 2);
    let e = value_err(&raws(&mut c, &["LOCK.ACQUIRE", "res", "w3", "60000", "WAIT", "0"])).expect("a third waiter");
    assert_eq!(e, "ERR too many clients wait on this key (fencelock.max-waiters is 2)");
    // A try without WAIT is not a waiter: the lock is held, nil as always.
    assert_eq!(raws(&mut c, &["LOCK.ACQUIRE", "res", "w3", "60000"]), redis::Value::Nil);
    await_blocked(&mut c, 2);
    assert_eq!(release(&mut c, "res", "holder"), 1);
    let t1 = first.granted();
    assert_eq!(release(&mut c, "res", "w1"), 1);
    assert!(second.granted() > t1);
    // No limit again.
    assert_eq!(config_set(&mut c, "fencelock.max-waiters", "0").unwrap(), "OK");
    let waiters: Vec<_> = (0..4).map(|i| Waiter::lock(&s, "res", &format!("x{i}"), LONG_TTL, 0)).collect();
    await_blocked(&mut c, 4);
    drop(waiters);
}

#[test]
fn leases_end_under_any_expiry_slice() {
    let s = Server::start(&["fencelock.expiry-slice-us 10"]);
    let mut c = s.conn();
    for i in 0..300 {
        grant(&mut c, &format!("short:{i}"), "alice", 50);
    }
    wait_until(Duration::from_secs(10), "300 short leases end with a 10 us expiry slice", || dbsize(&mut c) == 0);
}

#[test]
fn config_rewrite_writes_the_values_set() {
    let dir = support::server::fresh_dir();
    let conf = dir.join("fencelock.conf");
    std::fs::write(&conf, "").expect("an empty config file");
    let s = Options::new().in_dir(dir).config_file(conf.clone()).start();
    let mut c = s.conn();
    assert_eq!(config_set(&mut c, "fencelock.max-waiters", "7").unwrap(), "OK");
    assert_eq!(config_set(&mut c, "fencelock.max-ttl", "5000").unwrap(), "OK");
    ok(&mut c, &["CONFIG", "REWRITE"]);
    let text = std::fs::read_to_string(&conf).expect("the rewritten config file");
    assert!(text.contains("fencelock.max-waiters 7"), "CONFIG REWRITE wrote:\n{text}");
    assert!(text.contains("fencelock.max-ttl 5000"), "CONFIG REWRITE wrote:\n{text}");
}
