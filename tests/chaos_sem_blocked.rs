//! Chaos workload 3, for semaphores: blocked clients with mixed COUNTs. Waiters block on
//! one semaphore of 3 permits with `SEM.ACQUIRE key owner 3 ttl COUNT 1|2|3 WAIT <ms>`
//! (each acquire under a fresh owner name), over and over. Holders release after a short
//! section or let their lease end, while a chaos thread `CLIENT KILL`s waiters (and
//! sometimes holders), `CLIENT UNBLOCK`s waiters, `DEL`s the key and runs `FLUSHALL`; a
//! monitor samples `SEM.INFO` all along.
//!
//! Then: every live waiter was granted or answered nil within its timeout plus slack (a
//! nil only after the full timeout, or after a `CLIENT UNBLOCK` that said it unblocked
//! it); a waiter killed while blocked was never granted (its owner never shows among the
//! holders); no `SEM.INFO` shows more permits held than the limit, or `available` other
//! than the limit less the permits held; a semaphore with waiters and no holder never
//! stays so; `blocked_clients` ends at 0 and the semaphore ends free and gone; the history
//! checker (which counts the permits surely held at once) finds nothing.
//!
//! (The workload and the rules every kind shares: `support/blocked_chaos.rs`.)
//!
//! Short by default (`make test`, a few seconds); `CHAOS_FULL=1` runs it for a minute.

#[path = "support/blocked_chaos.rs"]
mod blocked_chaos;
#[path = "support/history.rs"]
mod history;
mod support;

use std::time::Duration;

use blocked_chaos::{Attempt, ChaosAct, Kind, Workload};
use history::Res;
use support::chaos::scale;
use support::*;

const KEY: &str = "sem-blocked-chaos";
const LIMIT: u64 = 3;
const KIND: Kind = Kind::Sem { limit: LIMIT };

fn waiters() -> usize {
    scale(60, 100)
}

/// One `SEM.INFO` of the key (all zero and empty for nil).
#[derive(Debug, Clone)]
struct Sample {
    invoke: Duration,
    complete: Duration,
    limit: i64,
    available: i64,
    /// (owner, permits) of each live holder.
    holders: Vec<(String, i64)>,
    waiters: i64,
}

impl Sample {
    fn held(&self) -> i64 {
        self.holders.iter().map(|h| h.1).sum()
    }
}

impl blocked_chaos::Sample for Sample {
    fn parse(invoke: Duration, complete: Duration, r: &Reply) -> Sample {
        match parse_info(r).unwrap_or_else(|e| panic!("SEM.INFO: {e}")) {
            None => Sample { invoke, complete, limit: 0, available: 0, holders: vec![], waiters: 0 },
            Some((limit, available, holders, waiters)) => Sample { invoke, complete, limit, available, holders, waiters },
        }
    }

    fn window(&self) -> (Duration, Duration) {
        (self.invoke, self.complete)
    }

    fn holders(&self) -> Vec<&str> {
        self.holders.iter().map(|h| h.0.as_str()).collect()
    }

    fn waiters(&self) -> i64 {
        self.waiters
    }
}

/// `SEM.INFO`: nil, or (limit, available, holders, waiters).
fn parse_info(r: &Reply) -> Result<Option<(i64, i64, Vec<(String, i64)>, i64)>, String> {
    if *r == Reply::Nil {
        return Ok(None);
    }
    let f = r.fields()?;
    let int = |name: &str| f.get(name).and_then(Reply::int).ok_or_else(|| format!("no integer {name} in {}", r.brief()));
    let holders = match f.get("holders") {
        Some(Reply::Array(hs)) => hs
            .iter()
            .map(|h| {
                let hf = h.fields()?;
                let owner = hf.get("owner").and_then(Reply::bytes).ok_or_else(|| format!("holder without owner: {}", h.brief()))?;
                let permits = hf.get("permits").and_then(Reply::int).ok_or_else(|| format!("holder without permits: {}", h.brief()))?;
                Ok((String::from_utf8_lossy(&owner).into_owned(), permits))
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => return Err(format!("no holders array in {}", r.brief())),
    };
    Ok(Some((int("limit")?, int("available")?, holders, int("waiters")?)))
}

#[test]
fn blocked_client_chaos_on_a_semaphore_mixed_counts_kills_unblocks_del() {
    let seed = support::seed::seed("blocked_client_chaos_on_a_semaphore_mixed_counts_kills_unblocks_del");
    let mut s = Server::new();
    let w = Workload { kind: KIND, key: KEY, waiters: waiters(), run: Duration::from_secs(scale(3, 60)), flushall_below: 84 };
    let out = blocked_chaos::run::<Sample>(&s, w, seed);
    let mut failures = judge(&out.attempts, &out.acts, &out.samples, &out.removals());

    // Nothing stays blocked; every lease ends, nobody waits, nothing is left held.
    blocked_chaos::await_no_blocked_clients(&s);
    let mut c = s.conn();
    wait_until(Duration::from_secs(5), "the semaphore is free and gone once every lease ended", || {
        ok(&mut c, &["SEM.INFO", KEY]) == redis::Value::Nil && !exists(&mut c, KEY)
    });

    // The history is clean: never more permits surely held than the limit, tokens rise.
    failures.extend(out.history_failures());

    let t = out.tally();
    let big_grants = out.attempts.iter().filter(|a| a.permits > 1 && matches!(a.res, Res::Granted(_))).count();
    let shared = out.samples.iter().filter(|s| s.holders.len() >= 2).count();
    let full = out.samples.iter().filter(|s| s.held() == LIMIT as i64 && s.waiters > 0).count();
    let stats = format!(
        "{} acquires: {} granted ({big_grants} of 2 or 3 permits), {} nil ({} unblocked); kills: {} blocked, {} not blocked; \
         {} DEL, {} FLUSHALL; {} SEM.INFO samples, {shared} with several holders, {full} full with waiters",
        t.attempts, t.grants, t.nils, t.unblocked, t.kills_blocked, t.kills_not_blocked, t.dels, t.flushes, t.samples
    );
    eprintln!("{stats}");
    out.assert_no_failures(&s, &failures, &stats);
    // The chaos did what it claims.
    assert!(t.grants >= 20 && big_grants >= 5 && t.nils >= 5 && shared >= 5 && full >= 5, "{stats}");
    out.assert_chaos_happened(&stats);
    s.assert_alive();
}

/// The rules of `blocked_chaos::judge`, and the semaphore's own on every sample; one line
/// per failure. `removals`: each `DEL`/`FLUSHALL` as (invoke, complete, what).
fn judge(attempts: &[Attempt], acts: &[ChaosAct], samples: &[Sample], removals: &[(Duration, Duration, &str)]) -> Vec<String> {
    let mut failures = blocked_chaos::judge(KIND, attempts, acts, samples, removals);
    // Every sample: the limit is the one stated, the permits held fit in it, and
    // `available` is what the holders leave; each holder holds 1 to 3 permits.
    for smp in samples.iter().filter(|s| s.limit != 0 || s.waiters != 0 || !s.holders.is_empty()) {
        let held = smp.held();
        if smp.limit != LIMIT as i64 || held > smp.limit || smp.available != smp.limit - held {
            failures.push(format!(
                "SEM.INFO at [{:?}, {:?}]: limit {}, available {}, holders {:?} ({held} permits held), waiters {}",
                smp.invoke, smp.complete, smp.limit, smp.available, smp.holders, smp.waiters
            ));
        }
        if smp.holders.iter().any(|h| !(1..=LIMIT as i64).contains(&h.1)) {
            failures.push(format!("SEM.INFO at {:?}: a holder with a COUNT out of range: {:?}", smp.invoke, smp.holders));
        }
    }
    failures
}

/// The rules above have teeth: each one flags a planted fault in made-up observations.
#[test]
fn the_blocked_chaos_rules_catch_planted_faults() {
    let ms = Duration::from_millis;
    let attempt = |owner: &str, wait: u64, invoke: u64, complete: u64, res: Res| Attempt {
        owner: owner.into(),
        client_id: 7,
        permits: 2,
        wait: ms(wait),
        ttl: 100,
        invoke: ms(invoke),
        complete: ms(complete),
        res,
        hung: false,
    };
    let sample = |at: u64, available: i64, holders: &[(&str, i64)], waiters: i64| Sample {
        invoke: ms(at),
        complete: ms(at + 1),
        limit: LIMIT as i64,
        available,
        holders: holders.iter().map(|(o, p)| (o.to_string(), *p)).collect(),
        waiters,
    };
    let kill = |owner: &str, hit: bool| ChaosAct { what: "kill", client_id: 9, owner: owner.into(), invoke: ms(50), complete: ms(51), hit };
    let unblock = |owner: &str| ChaosAct { what: "unblock", client_id: 7, owner: owner.into(), invoke: ms(50), complete: ms(51), hit: true };
    let ok_attempts = [attempt("a", 500, 0, 100, Res::Granted(1)), attempt("b", 300, 0, 301, Res::Refused)];
    let ok_samples = [sample(10, 1, &[("a", 2)], 1), sample(20, 3, &[], 0), sample(30, 0, &[("a", 2), ("c", 1)], 2)];
    let clean = judge(&ok_attempts, &[kill("x", true), unblock("b")], &ok_samples, &[]);
    assert!(clean.is_empty(), "{clean:?}");

    let one = |attempts: &[Attempt], acts: &[ChaosAct], samples: &[Sample], what: &str| {
        let f = judge(attempts, acts, samples, &[]);
        assert_eq!(f.len(), 1, "{what}: expected one failure, got {f:?}");
    };
    // A waiter answered long after its WAIT.
    one(&[attempt("a", 500, 0, 500 + 2_600, Res::Refused)], &[], &ok_samples, "hung");
    // A nil before the timeout, not unblocked.
    one(&[attempt("b", 300, 0, 100, Res::Refused)], &[], &ok_samples, "early nil");
    // Unblocked yet granted.
    one(&[attempt("a", 500, 0, 100, Res::Granted(1))], &[unblock("a")], &ok_samples, "unblocked and granted");
    // Killed while blocked, yet a holder.
    one(&ok_attempts[1..], &[kill("w", true)], &[sample(60, 2, &[("w", 1)], 0)], "dead holder");
    // Killed while holding, and still holding long past its lease.
    one(&[attempt("a", 500, 0, 10, Res::Granted(1))], &[kill("a", false)], &[sample(400, 1, &[("a", 2)], 0)], "kept past lease");
    // A connection lost with no kill; an error answer.
    one(&[attempt("a", 500, 0, 10, Res::Unknown)], &[], &ok_samples, "lost connection");
    one(&[attempt("a", 500, 0, 10, Res::Error("ERR limit mismatch: semaphore has limit 0".into()))], &[], &ok_samples, "error");
    // More permits held than the limit; available not what the holders leave.
    one(&ok_attempts, &[], &[sample(10, 0, &[("a", 2), ("c", 2)], 0)], "over the limit");
    one(&ok_attempts, &[], &[sample(10, 2, &[("a", 2)], 0)], "available");
    // Free with waiters for 300 ms.
    let stuck: Vec<Sample> = (0..30).map(|i| sample(100 + 10 * i, 3, &[], 2)).collect();
    one(&ok_attempts, &[], &stuck, "free with waiters");
}
