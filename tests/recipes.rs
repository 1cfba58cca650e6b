//! The README's recipes, each as it is written there: a fenced work queue whose holder,
//! paused past its lease, can neither push nor ack; a fenced counter; one global order of
//! holders by token; a read-write lock guarding a cache rebuild.

mod support;

use redis::Value;
use support::*;

fn call(c: &mut redis::Connection, args: &[&str]) -> Value {
    raws(c, args)
}

fn stale(v: &Value) -> bool {
    value_err(v).is_some_and(|e| e.starts_with("STALE"))
}

/// Waits until `owner`'s lease on `lock` is over (the server ended it).
fn lease_over(c: &mut redis::Connection, lock: &str) {
    wait_until(std::time::Duration::from_secs(5), "the lease ends", || raws(c, &["LOCK.INFO", lock]) == Value::Nil);
}

#[test]
fn a_fenced_work_queue_refuses_a_holder_paused_past_its_lease() {
    let s = Server::new();
    let mut a = s.conn();
    let mut b = s.conn();
    // The consumer lock, its fence and the queue share a hash tag.
    let old = value_int(&call(&mut a, &["LOCK.ACQUIRE", "{q}:lock", "worker-a", "100"])).unwrap();
    assert_eq!(call(&mut a, &["FENCE.CALL", "{q}:fence", &old.to_string(), "LPUSH", "{q}:jobs", "job-1"]), Value::Int(1));
    // worker-a pauses (GC, VM stall) past its lease; worker-b takes over.
    lease_over(&mut b, "{q}:lock");
    let new = value_int(&call(&mut b, &["LOCK.ACQUIRE", "{q}:lock", "worker-b", "60000"])).unwrap();
    assert!(new > old);
    assert_eq!(call(&mut b, &["FENCE.CALL", "{q}:fence", &new.to_string(), "LPUSH", "{q}:jobs", "job-2"]), Value::Int(2));
    // worker-a wakes up and tries to push and to ack with its old token: both refused.
    assert!(stale(&call(&mut a, &["FENCE.CALL", "{q}:fence", &old.to_string(), "LPUSH", "{q}:jobs", "late"])));
    assert!(stale(&call(&mut a, &["FENCE.CALL", "{q}:fence", &old.to_string(), "LREM", "{q}:jobs", "1", "job-1"])));
    let jobs: Vec<String> = redis::cmd("LRANGE").arg("{q}:jobs").arg(0).arg(-1).query(&mut b).unwrap();
    assert_eq!(jobs, ["job-2", "job-1"], "the late push and ack changed nothing");
    // worker-b acks.
    assert_eq!(call(&mut b, &["FENCE.CALL", "{q}:fence", &new.to_string(), "LREM", "{q}:jobs", "1", "job-1"]), Value::Int(1));
}

#[test]
fn a_fenced_counter_counts_only_current_holders() {
    let s = Server::new();
    let mut c = s.conn();
    let t1 = value_int(&call(&mut c, &["FENCE.NEXT", "{c}:fence"])).unwrap();
    let t2 = value_int(&call(&mut c, &["FENCE.NEXT", "{c}:fence"])).unwrap();
    assert_eq!(call(&mut c, &["FENCE.CALL", "{c}:fence", &t2.to_string(), "INCRBY", "{c}:count", "5"]), Value::Int(5));
    assert!(stale(&call(&mut c, &["FENCE.CALL", "{c}:fence", &t1.to_string(), "INCRBY", "{c}:count", "5"])));
    assert_eq!(value_text(&call(&mut c, &["GET", "{c}:count"])).as_deref(), Some("5"));
}

#[test]
fn tokens_as_scores_give_one_global_order_of_holders() {
    let s = Server::new();
    let mut c = s.conn();
    let mut order = vec![];
    for owner in ["a", "b", "c", "d"] {
        let t = value_int(&call(&mut c, &["LOCK.ACQUIRE", "{o}:lock", owner, "60000"])).unwrap();
        let ts = t.to_string();
        assert_eq!(call(&mut c, &["FENCE.CALL", "{o}:fence", &ts, "ZADD", "{o}:log", &ts, owner]), Value::Int(1));
        order.push(owner.to_string());
        assert_eq!(value_int(&call(&mut c, &["LOCK.RELEASE", "{o}:lock", owner])), Some(1));
    }
    let log: Vec<String> = redis::cmd("ZRANGE").arg("{o}:log").arg(0).arg(-1).query(&mut c).unwrap();
    assert_eq!(log, order, "the log orders holders as they held the lock");
}

#[test]
fn a_read_write_lock_guards_a_cache_rebuild() {
    let s = Server::new();
    let mut w = s.conn();
    let mut r = s.conn();
    // The writer rebuilds under the write lock, writing through the fence of its token.
    let t = value_int(&call(&mut w, &["RWLOCK.WLOCK", "{cache}:lock", "rebuilder", "60000"])).unwrap();
    assert_eq!(call(&mut r, &["RWLOCK.RLOCK", "{cache}:lock", "reader", "60000"]), Value::Nil, "readers wait out a rebuild");
    assert_eq!(call(&mut w, &["FENCE.CALL", "{cache}:fence", &t.to_string(), "HSET", "{cache}:data", "v", "2"]), Value::Int(1));
    assert_eq!(value_int(&call(&mut w, &["RWLOCK.WUNLOCK", "{cache}:lock", "rebuilder"])), Some(1));
    assert!(value_int(&call(&mut r, &["RWLOCK.RLOCK", "{cache}:lock", "reader", "60000"])).is_some(), "readers read after it");
    assert_eq!(value_text(&call(&mut r, &["HGET", "{cache}:data", "v"])).as_deref(), Some("2"));
    // A rebuild by a writer whose turn passed is refused at the data.
    assert!(stale(&call(&mut w, &["FENCE.CALL", "{cache}:fence", &(t - 1).to_string(), "HSET", "{cache}:data", "v", "1"])));
}

/// Runs the README's SQLite recipe (`examples/recipes/fenced_sqlite.py`) for one write.
fn sqlite_write(db: &std::path::Path, token: i64, value: &str) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipes/fenced_sqlite.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(db)
        .arg("account-1")
        .arg(token.to_string())
        .arg(value)
        .output()
        .expect("python3 runs (make test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_fenced_external_resource_refuses_a_holder_paused_past_its_lease() {
    let s = Server::new();
    let mut a = s.conn();
    let mut b = s.conn();
    let db = s.dir.join("resource.sqlite");
    let old = value_int(&call(&mut a, &["LOCK.ACQUIRE", "account-1:lock", "worker-a", "100"])).unwrap();
    assert_eq!(sqlite_write(&db, old, "from a"), "accepted");
    lease_over(&mut b, "account-1:lock");
    let new = value_int(&call(&mut b, &["LOCK.ACQUIRE", "account-1:lock", "worker-b", "60000"])).unwrap();
    assert_eq!(sqlite_write(&db, new, "from b"), "accepted");
    assert_eq!(sqlite_write(&db, old, "late from a"), format!("stale {new}"));
}
