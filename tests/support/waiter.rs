//! A client blocked in a command whose reply comes later (an acquire with `WAIT`, a
//! `DEBUG SLEEP`): its own raw connection, no thread, so a test can tell without blocking
//! whether it has answered, read its reply when it comes, kill or unblock it by its
//! client id, or close it at any moment.

#![allow(dead_code)]

use std::io;
use std::time::{Duration, Instant};

use super::cmd::{blocked_clients, wait_until};
use super::locks::{await_waiters, lock_info, sem_info, LONG_TTL};
use super::resp::{Raw, Reply};
use super::server::Server;

pub struct Waiter {
    pub raw: Raw,
    /// Its `CLIENT ID`, taken before it blocked.
    pub id: i64,
    /// The key of its command (its second word).
    pub key: String,
    /// The owner of its acquire (the third word of the command), for messages.
    pub owner: String,
    /// The command it sent.
    pub what: String,
    /// When its command was sent.
    pub sent: Instant,
}

impl Waiter {
    /// Connects (30 s read time-out), takes the client id and sends `args`.
    pub fn start(s: &Server, args: &[&str]) -> Waiter {
        Waiter::start_in(s, 0, args)
    }

    /// The same in database `db`.
    pub fn start_in(s: &Server, db: i64, args: &[&str]) -> Waiter {
        let mut raw = Raw::connect(s.port, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("cannot connect to port {}: {e}", s.port));
        if db != 0 {
            let r = raw.cmd(&["SELECT", &db.to_string()]).expect("SELECT");
            assert!(r.is_ok(), "SELECT {db} answered {r:?}");
        }
        let id = raw.client_id().expect("CLIENT ID");
        let sent = Instant::now();
        raw.send(args).expect("send a command");
        let word = |i: usize| args.get(i).unwrap_or(&"").to_string();
        Waiter { raw, id, key: word(1), owner: word(2), what: args.join(" "), sent }
    }

    /// `cmd key owner ttl WAIT wait` (`LOCK.ACQUIRE`, `RWLOCK.RLOCK`, `RWLOCK.WLOCK`).
    pub fn acquire(s: &Server, cmd: &str, key: &str, owner: &str, ttl: i64, wait: i64) -> Waiter {
        Waiter::start(s, &[cmd, key, owner, &ttl.to_string(), "WAIT", &wait.to_string()])
    }

    /// `LOCK.ACQUIRE key owner ttl WAIT wait`.
    pub fn lock(s: &Server, key: &str, owner: &str, ttl: i64, wait: i64) -> Waiter {
        Waiter::lock_in(s, 0, key, owner, ttl, wait)
    }

    /// `LOCK.ACQUIRE key owner ttl WAIT wait` in database `db`.
    pub fn lock_in(s: &Server, db: i64, key: &str, owner: &str, ttl: i64, wait: i64) -> Waiter {
        Waiter::start_in(s, db, &["LOCK.ACQUIRE", key, owner, &ttl.to_string(), "WAIT", &wait.to_string()])
    }

    /// `SEM.ACQUIRE key owner limit ttl COUNT permits WAIT wait`.
    pub fn sem(s: &Server, key: &str, owner: &str, limit: i64, permits: i64, ttl: i64, wait: i64) -> Waiter {
        let (limit, permits, ttl, wait) = (limit.to_string(), permits.to_string(), ttl.to_string(), wait.to_string());
        Waiter::start(s, &["SEM.ACQUIRE", key, owner, &limit, &ttl, "COUNT", &permits, "WAIT", &wait])
    }

    /// The reply, or the I/O error (a killed client's closed connection, a time-out).
    pub fn try_reply(&mut self) -> io::Result<Reply> {
        self.raw.read()
    }

    /// The reply of its command (blocks until it comes, up to the read time-out).
    #[track_caller]
    pub fn reply(&mut self) -> Reply {
        let what = self.what.clone();
        self.raw.read().unwrap_or_else(|e| panic!("`{what}`: no reply: {e}"))
    }

    /// Its acquire must have been granted: the token.
    #[track_caller]
    pub fn granted(&mut self) -> i64 {
        match self.reply() {
            Reply::Int(t) if t > 0 => t,
            other => panic!("`{}` should have been granted a token, got {other:?}", self.what),
        }
    }

    /// Whether no reply (and no close) has come yet; never blocks.
    pub fn still_blocked(&self) -> bool {
        self.raw.nothing_received()
    }

    #[track_caller]
    pub fn assert_still_blocked(&self) {
        assert!(self.still_blocked(), "`{}` answered, but should still be blocked", self.what);
    }

    /// The connection's end (after `CLIENT KILL`): an I/O error, not a reply.
    #[track_caller]
    pub fn assert_disconnected(&mut self) {
        match self.raw.read() {
            Err(e) if e.kind() != io::ErrorKind::TimedOut => {}
            other => panic!("`{}` should have lost its connection, got {other:?}", self.what),
        }
    }

    /// Closes its connection (the server sees a disconnect).
    pub fn close(self) {
        self.raw.close();
    }

    /// Waits until the read-write lock it waits on counts `expect` waiters, so that
    /// waiters queue in a known order; then returns itself.
    #[track_caller]
    pub fn queued_rw(self, c: &mut redis::Connection, expect: i64) -> Waiter {
        await_waiters(c, &self.key, expect);
        self
    }

    /// Waits until its key counts `expect` waiters by `waiters` (of a connection to its
    /// database), checks it has not answered, then returns itself.
    #[track_caller]
    fn queued(
        self,
        c: &mut redis::Connection,
        expect: i64,
        mut waiters: impl FnMut(&mut redis::Connection, &str) -> Option<i64>,
    ) -> Waiter {
        let key = &self.key;
        wait_until(Duration::from_secs(10), &format!("{} waits on {key} ({expect} waiters)", self.owner), || {
            waiters(c, key) == Some(expect)
        });
        self.assert_still_blocked();
        self
    }
}

/// Starts a `LOCK.ACQUIRE ... WAIT` waiter and waits until the lock counts `expect`
/// waiters, so that waiters queue in a known order.
#[track_caller]
pub fn queue(
    s: &Server,
    c: &mut redis::Connection,
    key: &str,
    owner: &str,
    ttl: i64,
    wait: i64,
    expect: i64,
) -> Waiter {
    queue_in(s, c, 0, key, owner, ttl, wait, expect)
}

/// The same in database `db` (`c` must be on it).
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn queue_in(
    s: &Server,
    c: &mut redis::Connection,
    db: i64,
    key: &str,
    owner: &str,
    ttl: i64,
    wait: i64,
    expect: i64,
) -> Waiter {
    Waiter::lock_in(s, db, key, owner, ttl, wait).queued(c, expect, |c, key| lock_info(c, key).map(|i| i.waiters))
}

/// Starts a waiter sending `args` and waits until the server counts `blocked` blocked
/// clients.
#[track_caller]
pub fn queue_blocked(s: &Server, c: &mut redis::Connection, args: &[&str], blocked: i64) -> Waiter {
    let w = Waiter::start(s, args);
    wait_until(Duration::from_secs(10), &format!("{} blocks", args.join(" ")), || blocked_clients(c) == blocked);
    assert!(w.still_blocked(), "{} answered instead of blocking", args.join(" "));
    w
}

/// Queues, behind the holder of the read-write lock `rw`, a reader `r` and then a writer
/// `x` (leases of [`LONG_TTL`], no time-out).
#[track_caller]
pub fn queue_reader_then_writer(s: &Server, c: &mut redis::Connection) -> (Waiter, Waiter) {
    let r = Waiter::acquire(s, "RWLOCK.RLOCK", "rw", "r", LONG_TTL, 0).queued_rw(c, 1);
    let x = Waiter::acquire(s, "RWLOCK.WLOCK", "rw", "x", LONG_TTL, 0).queued_rw(c, 2);
    (r, x)
}

/// Starts a `SEM.ACQUIRE ... COUNT permits WAIT wait` waiter and waits until the semaphore
/// counts `expect` waiters, so that waiters queue in a known order.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn queue_sem(
    s: &Server,
    c: &mut redis::Connection,
    key: &str,
    owner: &str,
    limit: i64,
    permits: i64,
    ttl: i64,
    wait: i64,
    expect: i64,
) -> Waiter {
    Waiter::sem(s, key, owner, limit, permits, ttl, wait)
        .queued(c, expect, |c, key| sem_info(c, key).map(|i| i.waiters))
}
