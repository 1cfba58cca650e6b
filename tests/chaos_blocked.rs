//! Chaos workload 3: blocked clients. 100 waiters block on one key with
//! `LOCK.ACQUIRE ... WAIT <a few seconds>` (each acquire under a fresh owner name), over
//! and over. Holders release after a short section or let their lease end, while a chaos
//! thread `CLIENT KILL`s waiters (and sometimes holders), `CLIENT UNBLOCK`s waiters, `DEL`s
//! the key and runs `FLUSHALL`; a monitor samples `LOCK.INFO` all along. (The workload and
//! the rules every kind shares: `support/blocked_chaos.rs`.)
//!
//! Then: every live waiter was granted or answered nil within its timeout plus slack (a
//! nil only after the full timeout, or after a `CLIENT UNBLOCK` that said it unblocked
//! it); a waiter killed while blocked was never granted (its owner never shows in
//! `LOCK.INFO`); a free lock with waiters never stays ungranted; `blocked_clients` ends at
//! 0; the history checker finds nothing.
//!
//! Short by default (`make test`); `CHAOS_FULL=1` runs it for a minute.

#[path = "support/blocked_chaos.rs"]
mod blocked_chaos;
#[path = "support/history.rs"]
mod history;
mod support;

use std::time::Duration;

use blocked_chaos::{Kind, Workload};
use support::chaos::scale;
use support::*;

const KEY: &str = "blocked-chaos";
const WAITERS: usize = 100;

/// One `LOCK.INFO` of the key.
#[derive(Debug, Clone)]
struct Sample {
    invoke: Duration,
    complete: Duration,
    owner: Option<String>,
    waiters: i64,
}

impl blocked_chaos::Sample for Sample {
    fn parse(invoke: Duration, complete: Duration, r: &Reply) -> Sample {
        let (owner, waiters) = match r {
            Reply::Nil => (None, 0),
            Reply::Array(_) => (
                match r.field("owner") {
                    Some(Reply::Bulk(o)) => Some(String::from_utf8_lossy(&o).into_owned()),
                    _ => None,
                },
                r.field("waiters").and_then(|w| w.int()).expect("LOCK.INFO waiters"),
            ),
            other => panic!("LOCK.INFO answered {other:?}"),
        };
        Sample { invoke, complete, owner, waiters }
    }

    fn window(&self) -> (Duration, Duration) {
        (self.invoke, self.complete)
    }

    fn holders(&self) -> Vec<&str> {
        self.owner.iter().map(String::as_str).collect()
    }

    fn waiters(&self) -> i64 {
        self.waiters
    }
}

#[test]
fn blocked_client_chaos_100_waiters_kills_unblocks_del_flushall() {
    let seed = support::seed::seed("blocked_client_chaos_100_waiters_kills_unblocks_del_flushall");
    let mut s = Server::new();
    let w = Workload { kind: Kind::Lock, key: KEY, waiters: WAITERS, run: Duration::from_secs(scale(5, 60)), flushall_below: 86 };
    let out = blocked_chaos::run::<Sample>(&s, w, seed);

    // 1.-4. Nothing hung; a nil only after the timeout or an unblock; a waiter killed while
    //       blocked was never granted; a free lock with waiters is granted at once.
    let mut failures = blocked_chaos::judge(w.kind, &out.attempts, &out.acts, &out.samples, &out.removals());

    // 5. Nothing stays blocked, nobody waits.
    blocked_chaos::await_no_blocked_clients(&s);
    let mut c = s.conn();
    if let Some(i) = lock_info(&mut c, KEY) {
        assert_eq!(i.waiters, 0, "waiters left on the lock: {i:?}");
    }

    // 6. The history is clean.
    failures.extend(out.history_failures());

    let t = out.tally();
    let stats = format!(
        "{} acquires: {} granted, {} nil ({} unblocked); kills: {} blocked, {} not blocked; {} DEL, {} FLUSHALL; {} LOCK.INFO samples",
        t.attempts, t.grants, t.nils, t.unblocked, t.kills_blocked, t.kills_not_blocked, t.dels, t.flushes, t.samples
    );
    eprintln!("{stats}");
    out.assert_no_failures(&s, &failures, &stats);
    // The chaos did what it claims.
    assert!(t.grants >= 20 && t.nils >= 20, "{stats}");
    out.assert_chaos_happened(&stats);
    s.assert_alive();
}
