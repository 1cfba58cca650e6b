//! The module as a guest in someone's server: Redis's own operations around lock keys.
//!
//! - Pauses (`CLIENT PAUSE WRITE` and `ALL`, and the pause inside `FAILOVER`): Redis
//!   forbids writes and propagation while clients are paused, so leases that fall due
//!   then end right after the pause, reads report them over meanwhile, and nothing
//!   crashes with AOF on or a replica attached.
//! - Every way Redis removes a key by itself (expiry set by EXPIRE/PEXPIRE/EXPIREAT,
//!   lazy expiry on access, RESTORE with a TTL, eviction) serves the waiters as `DEL`
//!   does.
//! - A lock that arrives under a new name (RENAME, MOVE, RESTORE) keeps its lease there,
//!   even on a server that has not run any fencelock command yet.

mod support;

use std::time::{Duration, Instant};

use redis::Value;
use support::*;

const MASTER_WITH_AOF: &[&str] = &["appendonly yes", "repl-diskless-sync-delay 0"];

fn ttl_of(c: &mut redis::Connection, key: &str) -> i64 {
    int(c, &["PTTL", key])
}

// ---------------------------------------------------------------------------------------
// Pauses
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum LockKind {
    Mutex,
    RwLock,
}

impl LockKind {
    fn acquire(self, mode_write: bool) -> &'static str {
        match (self, mode_write) {
            (LockKind::Mutex, _) => "LOCK.ACQUIRE",
            (LockKind::RwLock, false) => "RWLOCK.RLOCK",
            (LockKind::RwLock, true) => "RWLOCK.WLOCK",
        }
    }

    fn info(self) -> &'static str {
        match self {
            LockKind::Mutex => "LOCK.INFO",
            LockKind::RwLock => "RWLOCK.INFO",
        }
    }
}

/// CPU time (user + system) a process has used, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<i64>().unwrap() + fields[12].parse::<i64>().unwrap()
}

fn ticks_per_second() -> i64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK is a number")
}

/// Whether `key` reads as held by nobody (it may have waiters).
fn reads_unheld(c: &mut redis::Connection, kind: LockKind, key: &str) -> bool {
    let reply = raws(c, &[kind.info(), key]);
    if reply == Value::Nil {
        return true;
    }
    let fields = pairs(&reply);
    match kind {
        LockKind::Mutex => fields["owner"] == Value::Nil,
        LockKind::RwLock => fields["holders"] == Value::Array(vec![]),
    }
}

/// A lease that falls due while writes are paused: no crash (the lease timer used to
/// propagate during the pause, which Redis asserts against when AOF is on or a replica
/// is attached), no write during the pause (on the master, the replica or the AOF),
/// reads report the lease over, the server does not spin while it waits, and right
/// after the pause the lease ends and the waiter is granted, on the master, the replica
/// and in the AOF alike.
fn lease_ends_after_a_pause(kind: LockKind, pause: &str, with_aof_and_replica: bool) {
    const LEASE: i64 = 300;
    const PAUSE_MS: u64 = 2_000;
    let master = if with_aof_and_replica { Server::start(MASTER_WITH_AOF) } else { Server::new() };
    let replica = with_aof_and_replica.then(|| start_synced_replica(&master));
    let mut m = master.conn();
    // `lp` only ends; `lw` ends and hands over to a waiter (a writer to a reader for
    // the read-write lock: the reader could not share with it). Long leases first, so
    // that setting up cannot outlast them; short ones right before the pause.
    let acquire = kind.acquire(true);
    let t0 = int(&mut m, &[acquire, "lp", "holder", &LONG_TTL.to_string()]);
    let t1 = int(&mut m, &[acquire, "lw", "holder", &LONG_TTL.to_string()]);
    let mut waiter = queue_blocked(&master, &mut m, &[kind.acquire(false), "lw", "waiter", &LONG_TTL.to_string(), "WAIT", "0"], 1);
    if let Some(replica) = &replica {
        await_sync(&master, replica);
    }
    let extend = match kind {
        LockKind::Mutex => "LOCK.EXTEND",
        LockKind::RwLock => "RWLOCK.EXTEND",
    };
    let shortened_at = Instant::now();
    for key in ["lp", "lw"] {
        assert_eq!(int(&mut m, &[extend, key, "holder", &LEASE.to_string()]), 1);
    }
    ok(&mut m, &["CLIENT", "PAUSE", &PAUSE_MS.to_string(), pause]);
    let paused_at = Instant::now();
    assert!(
        shortened_at.elapsed() < Duration::from_millis(LEASE as u64 - 100),
        "pausing took longer than the lease (machine too slow): inconclusive"
    );
    // The leases fall due during the pause: only time can make them.
    let_time_pass(LEASE + 200);
    let mut master = master;
    master.assert_alive();
    // A due lease must not keep the event loop awake while it cannot be ended.
    let cpu_before = cpu_ticks(master.pid());
    let_time_pass(500);
    let spent = cpu_ticks(master.pid()) - cpu_before;
    assert!(spent < ticks_per_second() / 4, "the server spent {spent} clock ticks of CPU in 0.5 s of a pause");
    if pause == "WRITE" {
        // Reads go on: the lease reads as over, but its key stays until the pause ends.
        for key in ["lp", "lw"] {
            assert!(reads_unheld(&mut m, kind, key), "{key} should read as not held during the pause");
            assert!(exists(&mut m, key), "{key} was deleted during a pause");
        }
    }
    if let Some(replica) = &replica {
        let mut r = replica.conn();
        for key in ["lp", "lw"] {
            assert!(exists(&mut r, key), "the end of {key}'s lease reached the replica during the pause");
            assert!(reads_unheld(&mut r, kind, key), "the replica should report {key}'s lease over");
        }
    }
    assert!(waiter.still_blocked(), "the waiter was granted during the pause");
    assert!(
        paused_at.elapsed() < Duration::from_millis(PAUSE_MS - 200),
        "the checks took longer than the pause (machine too slow): inconclusive"
    );

    if pause == "WRITE" {
        ok(&mut m, &["CLIENT", "UNPAUSE"]);
    }
    // With `ALL`, this connection's next command waits for the pause to end.
    let t2 = waiter.granted();
    assert!(t2 > t1 && t1 > t0, "tokens {t0}, {t1}, {t2} do not increase");
    wait_until(Duration::from_secs(5), "the lease of lp ended after the pause", || !exists(&mut m, "lp"));
    master.assert_alive();
    let holder_of_lw = match kind {
        LockKind::Mutex => held(&mut m, "lw").owner_str(),
        LockKind::RwLock => {
            let holders = pairs(&raws(&mut m, &["RWLOCK.INFO", "lw"]));
            format!("{:?}", holders["holders"])
        }
    };
    assert!(holder_of_lw.contains("waiter"), "lw should be held by the waiter: {holder_of_lw}");
    if let Some(replica) = &replica {
        await_sync(&master, replica);
        let mut r = replica.conn();
        assert!(!exists(&mut r, "lp"), "the end of lp's lease did not reach the replica");
        // The AOF has the same history: reloaded from it, the waiter still holds `lw`.
        let before = digest(&mut m);
        ok(&mut m, &["DEBUG", "LOADAOF"]);
        assert_eq!(digest(&mut m), before, "the dataset reloaded from the AOF differs");
    }
}

#[test]
fn pause_write_with_aof_and_replica_mutex() {
    lease_ends_after_a_pause(LockKind::Mutex, "WRITE", true);
}

#[test]
fn pause_all_with_aof_and_replica_mutex() {
    lease_ends_after_a_pause(LockKind::Mutex, "ALL", true);
}

#[test]
fn pause_write_with_aof_and_replica_rwlock() {
    lease_ends_after_a_pause(LockKind::RwLock, "WRITE", true);
}

#[test]
fn pause_all_with_aof_and_replica_rwlock() {
    lease_ends_after_a_pause(LockKind::RwLock, "ALL", true);
}

#[test]
fn pause_write_without_aof_or_replica_deletes_nothing_until_it_ends() {
    lease_ends_after_a_pause(LockKind::Mutex, "WRITE", false);
}

/// `FAILOVER TO` a replica while leases end (the old master pauses writes until the
/// replica has caught up): both servers stay up, the holders survive with their tokens,
/// the leases that were due end on the new master, and its tokens are larger than every
/// token the old master issued.
#[test]
fn failover_to_a_replica_while_leases_end() {
    let mut old = Server::start(MASTER_WITH_AOF);
    let mut new = Server::start_replica_of(&old, &["appendonly yes", "repl-diskless-sync-delay 0"]);
    await_sync(&old, &new);
    await_streaming(&old);
    let mut o = old.conn();
    let mut highest = 0;
    let mut kept = vec![];
    for i in 0..5 {
        let key = format!("kept{i}");
        let t = grant(&mut o, &key, "keeper", LONG_TTL);
        kept.push((key, t));
        highest = highest.max(t);
    }
    // Leases ending over the next 1.5 s, across the failover's pause (it lasts until
    // the replica acknowledges the old master's offset).
    for i in 0..30 {
        let ttl = (50 + 50 * i).to_string();
        highest = highest.max(int(&mut o, &["LOCK.ACQUIRE", &format!("short{i}"), "o", &ttl]));
        highest = highest.max(int(&mut o, &["RWLOCK.RLOCK", &format!("rshort{i}"), "o", &ttl]));
    }
    highest = highest.max(fence_next(&mut o, "fence"));
    // A waiter caught by the failover: granted before it, or told it was unblocked.
    grant(&mut o, "contended", "holder", 400);
    let mut waiter = queue_blocked(&old, &mut o, &["LOCK.ACQUIRE", "contended", "waiter", &LONG_TTL.to_string(), "WAIT", "0"], 1);

    ok(&mut o, &["FAILOVER", "TO", "127.0.0.1", &new.port.to_string()]);
    let mut n = new.conn();
    wait_until(Duration::from_secs(20), "the failover completed", || {
        info(&mut n, "replication").get("role").map(String::as_str) == Some("master")
            && info(&mut o, "replication").get("role").map(String::as_str) == Some("slave")
    });
    old.assert_alive();
    new.assert_alive();
    match waiter.reply() {
        Reply::Int(t) => highest = highest.max(t),
        other => {
            let e = other.err().unwrap_or_else(|| panic!("the waiter answered {other:?}"));
            assert!(e.starts_with("UNBLOCKED"), "the waiter answered {e}");
        }
    }
    wait_until(Duration::from_secs(5), "the old master has no blocked client left", || blocked_clients(&mut o) == 0);

    for (key, token) in &kept {
        let i = held(&mut n, key);
        assert_eq!((i.owner_str(), i.token), ("keeper".to_string(), *token), "{key} on the new master");
    }
    wait_until(Duration::from_secs(10), "every short lease ended on the new master", || {
        (0..30).all(|i| !exists(&mut n, &format!("short{i}")) && !exists(&mut n, &format!("rshort{i}")))
    });
    let fresh = grant(&mut n, "fresh", "o", LONG_TTL);
    assert!(fresh > highest, "token {fresh} from the new master is not above the old master's {highest}");
    assert!(fence_next(&mut n, "fence") > fresh);
    await_sync(&new, &old);
    old.assert_alive();
    new.assert_alive();
}

// ---------------------------------------------------------------------------------------
// Redis removes the key by itself
// ---------------------------------------------------------------------------------------

/// Holder on `key`, a waiter queued, then `remove` makes Redis remove the key: the
/// waiter is granted a larger token and holds a lock that carries no TTL of its own.
#[track_caller]
fn removal_serves_the_waiter(s: &Server, key: &str, remove: impl FnOnce(&mut redis::Connection)) {
    let mut c = s.conn();
    let t0 = grant(&mut c, key, "holder", LONG_TTL);
    let mut w = queue_blocked(s, &mut c, &["LOCK.ACQUIRE", key, "waiter", &LONG_TTL.to_string(), "WAIT", "0"], 1);
    remove(&mut c);
    let t1 = w.granted();
    assert!(t1 > t0, "{key}: token {t1} after the removal is not above {t0}");
    let i = held(&mut c, key);
    assert_eq!((i.owner_str(), i.token, i.waiters), ("waiter".to_string(), t1, 0), "{key}");
    assert_eq!(ttl_of(&mut c, key), -1, "{key}: the new holder's key inherited a TTL");
    assert_eq!(release(&mut c, key, "holder"), 0);
    assert_eq!(release(&mut c, key, "waiter"), 1);
    assert!(!exists(&mut c, key));
}

#[test]
fn a_ttl_set_by_pexpire_expire_or_expireat_serves_the_waiters() {
    let s = Server::new();
    removal_serves_the_waiter(&s, "m-pexpire", |c| assert_eq!(int(c, &["PEXPIRE", "m-pexpire", "50"]), 1));
    removal_serves_the_waiter(&s, "m-expire", |c| assert_eq!(int(c, &["EXPIRE", "m-expire", "1"]), 1));
    removal_serves_the_waiter(&s, "m-expireat", |c| {
        let at = (now_ms() / 1000 + 1).to_string();
        assert_eq!(int(c, &["EXPIREAT", "m-expireat", &at]), 1);
    });
    removal_serves_the_waiter(&s, "m-pexpireat", |c| {
        let at = (now_ms() + 50).to_string();
        assert_eq!(int(c, &["PEXPIREAT", "m-pexpireat", &at]), 1);
    });
}

#[test]
fn lazy_expiry_on_access_serves_the_waiters() {
    let s = Server::new();
    let mut c = s.conn();
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    removal_serves_the_waiter(&s, "lazy", |c| {
        assert_eq!(int(c, &["PEXPIRE", "lazy", "20"]), 1);
        // Past its TTL, the key stays until someone touches it: only time can pass here.
        let_time_pass(40);
        assert_eq!(blocked_clients(c), 1, "the waiter left before anyone touched the expired key");
        assert!(!exists(c, "lazy"), "the key should have expired on access");
    });
}

#[test]
fn restore_with_a_ttl_serves_the_waiters_when_it_expires() {
    let s = Server::new();
    let mut c = s.conn();
    grant(&mut c, "source", "other", LONG_TTL);
    let dump = match raws(&mut c, &["DUMP", "source"]) {
        Value::BulkString(b) => b,
        other => panic!("DUMP answered {other:?}"),
    };
    removal_serves_the_waiter(&s, "restored", |c| {
        let reply = raw(c, &[b"RESTORE", b"restored", b"100", &dump, b"REPLACE"]);
        assert!(value_err(&reply).is_none(), "RESTORE answered {reply:?}");
    });
}

#[test]
fn eviction_serves_the_waiters() {
    let s = Server::start(&["maxmemory-policy allkeys-random"]);
    removal_serves_the_waiter(&s, "evicted", |c| {
        let used: i64 = info(c, "memory")["used_memory"].parse().unwrap();
        ok(c, &["CONFIG", "SET", "maxmemory", &(used + (4 << 20)).to_string()]);
        let value = "x".repeat(16 << 10);
        let mut n = 0;
        // Fill until Redis evicts the lock key (a handoff then brings it back).
        while blocked_clients(c) == 1 {
            assert!(n < 20_000, "the lock key was never evicted");
            ok(c, &["SET", &format!("fill{n}"), &value]);
            n += 1;
        }
        ok(c, &["CONFIG", "SET", "maxmemory", "0"]);
    });
}

#[test]
fn a_read_write_lock_whose_key_expires_serves_its_waiters() {
    let s = Server::new();
    let mut c = s.conn();
    let t0 = int(&mut c, &["RWLOCK.WLOCK", "rw", "writer", &LONG_TTL.to_string()]);
    let mut w = queue_blocked(&s, &mut c, &["RWLOCK.RLOCK", "rw", "reader", &LONG_TTL.to_string(), "WAIT", "0"], 1);
    assert_eq!(int(&mut c, &["PEXPIRE", "rw", "50"]), 1);
    let t1 = w.granted();
    assert!(t1 > t0);
    let info = pairs(&raws(&mut c, &["RWLOCK.INFO", "rw"]));
    assert_eq!(info["mode"], Value::SimpleString("read".into()), "{info:?}");
    assert_eq!(int(&mut c, &["RWLOCK.WUNLOCK", "rw", "writer"]), 0);
    assert_eq!(int(&mut c, &["RWLOCK.RUNLOCK", "rw", "reader"]), 1);
}

// ---------------------------------------------------------------------------------------
// A lock arrives under a new name
// ---------------------------------------------------------------------------------------

#[test]
fn a_renamed_or_moved_lock_keeps_its_lease_under_the_new_name() {
    let s = Server::new();
    let mut c = s.conn();
    grant(&mut c, "before-rename", "o", 300);
    ok(&mut c, &["RENAME", "before-rename", "after-rename"]);
    int(&mut c, &["RWLOCK.RLOCK", "rw-before", "o", "300"]);
    ok(&mut c, &["RENAME", "rw-before", "rw-after"]);
    grant(&mut c, "moved", "o", 300);
    assert_eq!(int(&mut c, &["MOVE", "moved", "1"]), 1);
    wait_until(Duration::from_secs(5), "the renamed locks' leases ended", || {
        !exists(&mut c, "after-rename") && !exists(&mut c, "rw-after")
    });
    ok(&mut c, &["SELECT", "1"]);
    wait_until(Duration::from_secs(5), "the moved lock's lease ended", || !exists(&mut c, "moved"));
}

/// The module subscribes to keyspace events only once it has lock keys: a value of its
/// types restored into a server that never ran one of its commands must be tracked too.
#[test]
fn a_lock_restored_into_a_server_that_never_ran_a_lock_command_keeps_its_lease() {
    let a = Server::new();
    let mut ca = a.conn();
    grant(&mut ca, "lock", "o", 1_000);
    let dump = match raws(&mut ca, &["DUMP", "lock"]) {
        Value::BulkString(b) => b,
        other => panic!("DUMP answered {other:?}"),
    };
    let b = Server::new();
    let mut cb = b.conn();
    let reply = raw(&mut cb, &[b"RESTORE", b"lock", b"0", &dump]);
    assert!(value_err(&reply).is_none(), "RESTORE answered {reply:?}");
    assert!(exists(&mut cb, "lock"));
    wait_until(Duration::from_secs(5), "the restored lock's lease ended without any command", || !exists(&mut cb, "lock"));
}

fn client_db(c: &mut redis::Connection) -> String {
    let info = match raws(c, &["CLIENT", "INFO"]) {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("CLIENT INFO answered {other:?}"),
    };
    info.split_whitespace().find_map(|f| f.strip_prefix("db=")).unwrap_or_else(|| panic!("no db in {info}")).to_string()
}

/// A keyspace subscriber must not move the client that runs `MOVE` to the target database
/// (Valkey 8.1 leaves it there unless the subscriber puts it back).
#[test]
fn move_leaves_the_client_on_its_own_database() {
    let s = Server::new();
    let mut c = s.conn();
    grant(&mut c, "lock", "o", LONG_TTL);
    ok(&mut c, &["SET", "plain", "v"]);
    assert_eq!(int(&mut c, &["MOVE", "plain", "1"]), 1);
    assert_eq!(client_db(&mut c), "0", "MOVE of a plain key moved the client");
    assert_eq!(int(&mut c, &["MOVE", "lock", "1"]), 1);
    assert_eq!(client_db(&mut c), "0", "MOVE of a lock key moved the client");
    ok(&mut c, &["SELECT", "3"]);
    grant(&mut c, "lock3", "o", LONG_TTL);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["MOVE", "lock3", "2"]);
    ok(&mut c, &["EXEC"]);
    assert_eq!(client_db(&mut c), "3", "MOVE inside MULTI moved the client");
    ok(&mut c, &["SELECT", "2"]);
    assert_eq!(held(&mut c, "lock3").owner_str(), "o");
}
