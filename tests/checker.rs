//! Tests of the history checker (`tests/support/history.rs`) on hand-built histories:
//! each planted violation must be reported (and nothing else), clean histories (reentry,
//! extend, lease ends, waits, indeterminate operations) must not be flagged. Then
//! randomized histories of a model lock that is correct by construction: clean as they
//! are, and caught once a single fault is planted into them.

#[path = "support/history.rs"]
mod history;
mod support;

use history::*;
use history::{Op::*, Res::*, ViolationKind as V};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[track_caller]
fn clean(h: &[Event]) {
    let v = check(h);
    assert!(v.is_empty(), "expected a clean history:\n{}", render(h, &v, 10));
}

/// Exactly one violation, of kind `k`.
#[track_caller]
fn exactly(h: &[Event], k: V) {
    let v = check(h);
    assert!(
        v.len() == 1 && v[0].kind == k,
        "expected exactly one {k:?}, got:\n{}",
        render(h, &v, 10)
    );
    // The report names events that exist and reads as text.
    assert!(!v[0].what.is_empty());
    assert!(v[0].events.iter().all(|&i| i < h.len()));
}

const T: u64 = 1000; // a ttl that never ends in these histories

// ---------------------------------------------------------------------------------------
// Clean histories
// ---------------------------------------------------------------------------------------

#[test]
fn clean_handoffs_with_increasing_tokens() {
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Acquire, "k", "b", T, 2, 3, Refused),
        ev(Release, "k", "a", 0, 4, 5, Ok),
        ev(Acquire, "k", "b", T, 5, 6, Granted(11)),
        ev(Release, "k", "b", 0, 7, 8, Ok),
        ev(Release, "k", "b", 0, 9, 10, NotHeld),
        ev(Acquire, "k", "c", T, 11, 12, Granted(12)),
        ev(Release, "k", "c", 0, 13, 14, Ok),
    ]);
}

#[test]
fn clean_intervals_that_only_touch_are_not_an_overlap() {
    // a's release is invoked at 20; b's grant is answered at 20.
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Acquire, "k", "b", T, 2, 20, Granted(11)),
        ev(Release, "k", "a", 0, 20, 25, Ok),
        ev(Release, "k", "b", 0, 30, 31, Ok),
    ]);
}

#[test]
fn clean_reentry_counts_holds_and_keeps_the_token() {
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Acquire, "k", "a", T, 5, 6, Granted(10)),
        ev(Release, "k", "a", 0, 7, 8, Ok),
        ev(Acquire, "k", "b", T, 8, 9, Refused),
        ev(Release, "k", "a", 0, 9, 10, Ok),
        ev(Acquire, "k", "b", T, 11, 12, Granted(11)),
        ev(Release, "k", "b", 0, 13, 14, Ok),
        ev(Release, "k", "a", 0, 15, 16, NotHeld),
    ]);
}

#[test]
fn clean_reentry_with_a_shorter_lease_shortens_the_hold() {
    // a reacquires with ttl 10 at 50: its lease ends near 60, b gets it at 70.
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Acquire, "k", "a", 10, 50, 51, Granted(10)),
        ev(Acquire, "k", "b", T, 65, 70, Granted(11)),
    ]);
}

#[test]
fn clean_extend_keeps_the_hold_alive() {
    clean(&[
        ev(Acquire, "k", "a", 100, 0, 1, Granted(10)),
        ev(Extend, "k", "a", 100, 90, 91, Ok),
        ev(Acquire, "k", "b", 100, 150, 151, Refused),
        ev(Release, "k", "a", 0, 180, 181, Ok),
        ev(Acquire, "k", "b", 100, 182, 183, Granted(11)),
        ev(Extend, "k", "a", 100, 184, 185, NotHeld),
    ]);
}

#[test]
fn clean_lease_end_then_a_waiter_is_granted_late() {
    // a's lease (50 ms) ends by itself; b waited, its reply comes late.
    clean(&[
        ev(Acquire, "k", "a", 50, 0, 1, Granted(10)),
        ev(Acquire, "k", "b", 50, 10, 70, Granted(11)),
        ev(Release, "k", "a", 0, 60, 61, NotHeld),
        ev(Extend, "k", "a", 50, 62, 63, NotHeld),
        ev(Release, "k", "b", 0, 80, 81, Ok),
    ]);
}

#[test]
fn clean_release_acknowledged_just_before_the_lease_could_end() {
    // The lease is 100 ms from a grant somewhere in [0, 40]: a release at [130, 139]
    // may still have been in time.
    clean(&[
        ev(Acquire, "k", "a", 100, 0, 40, Granted(10)),
        ev(Release, "k", "a", 0, 130, 139, Ok),
    ]);
}

#[test]
fn clean_del_and_flushall_end_holds() {
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Del, "k", "", 0, 5, 6, Ok),
        ev(Acquire, "k", "b", T, 7, 8, Granted(11)),
        ev(Release, "k", "a", 0, 9, 10, NotHeld),
        ev(FlushAll, "", "", 0, 11, 12, Ok),
        ev(Acquire, "k", "c", T, 13, 14, Granted(12)),
        ev(Release, "k", "b", 0, 15, 16, NotHeld),
    ]);
}

#[test]
fn clean_concurrent_grants_may_come_back_in_either_token_order() {
    // Overlapping in time, so either may have been granted first.
    clean(&[
        ev(RLock, "rw", "r1", T, 0, 10, Granted(12)),
        ev(RLock, "rw", "r2", T, 1, 9, Granted(11)),
        ev(Acquire, "m", "a", 10, 0, 30, Granted(21)),
        ev(Acquire, "m", "b", 10, 1, 9, Granted(20)),
    ]);
}

#[test]
fn clean_indeterminate_acquire_is_neither_a_hold_nor_flagged() {
    // a's acquire timed out: it may or may not have been granted (and its token is never
    // seen), so b's grant is no overlap and a's later release may be acknowledged.
    clean(&[
        ev(Acquire, "k", "a", T, 0, 100, Unknown),
        ev(Acquire, "k", "b", T, 200, 201, Granted(11)),
        ev(Release, "k", "b", 0, 202, 203, Ok),
        ev(Release, "k", "a", 0, 300, 301, Ok),
        ev(Extend, "k", "a", T, 302, 303, Ok),
    ]);
}

#[test]
fn clean_indeterminate_release_and_extend() {
    // a's release was lost: it may have freed the lock at once (b got it) ...
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Release, "k", "a", 0, 5, 50, Unknown),
        ev(Acquire, "k", "b", T, 10, 11, Granted(11)),
        ev(Release, "k", "b", 0, 12, 13, Ok),
    ]);
    // ... and an extend that was lost may have shortened the lease.
    clean(&[
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Extend, "k", "a", 5, 5, 50, Unknown),
        ev(Acquire, "k", "b", T, 20, 21, Granted(11)),
    ]);
}

#[test]
fn clean_read_write_lock_sharing_downgrade_and_upgrade() {
    clean(&[
        // Readers share.
        ev(RLock, "rw", "r1", T, 0, 1, Granted(10)),
        ev(RLock, "rw", "r2", T, 2, 3, Granted(11)),
        ev(WLock, "rw", "w", T, 4, 5, Refused),
        ev(RwExtend, "rw", "r1", T, 5, 6, Ok),
        ev(RUnlock, "rw", "r1", 0, 6, 7, Ok),
        ev(RUnlock, "rw", "r2", 0, 8, 9, Ok),
        // The writer waited and got it after both left.
        ev(WLock, "rw", "w", T, 4, 10, Granted(12)),
        // Downgrade: the writer takes the read lock at once, with a new token.
        ev(RLock, "rw", "w", T, 11, 12, Granted(13)),
        ev(RwExtend, "rw", "w", T, 12, 13, Ok),
        ev(WUnlock, "rw", "w", 0, 13, 14, Ok),
        ev(RLock, "rw", "r1", T, 15, 16, Granted(14)),
        ev(RUnlock, "rw", "w", 0, 17, 18, Ok),
        // Upgrade: r1 is now the sole reader.
        ev(WLock, "rw", "r1", T, 19, 20, Granted(15)),
        ev(WLock, "rw", "r1", T, 21, 22, Granted(15)),
        ev(WUnlock, "rw", "r1", 0, 23, 24, Ok),
        ev(WUnlock, "rw", "r1", 0, 25, 26, Ok),
        ev(RUnlock, "rw", "r1", 0, 27, 28, Ok),
        ev(WUnlock, "rw", "r1", 0, 29, 30, NotHeld),
    ]);
}

#[test]
fn clean_fenced_writes_never_go_down() {
    clean(&[
        fence_ev("res", "a", 10, 0, 1, Ok),
        fence_ev("res", "a", 10, 2, 3, Ok),
        fence_ev("res", "b", 12, 4, 5, Ok),
        fence_ev("res", "a", 10, 6, 7, Error("STALE token 10 is older than 12".into())),
        // Concurrent writes may be accepted in either order.
        fence_ev("res", "c", 14, 8, 20, Ok),
        fence_ev("res", "d", 13, 9, 19, Ok),
    ]);
    assert!(check_fence_log("res", &[10, 10, 12, 14, 20]).is_empty());
    assert!(check_fence_log("res", &[]).is_empty());
}

// ---------------------------------------------------------------------------------------
// Planted violations
// ---------------------------------------------------------------------------------------

#[test]
fn planted_overlap_of_two_mutex_holders() {
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(Acquire, "k", "b", T, 10, 11, Granted(11)),
            ev(Release, "k", "a", 0, 20, 21, Ok),
            ev(Release, "k", "b", 0, 30, 31, Ok),
        ],
        V::Overlap,
    );
}

#[test]
fn planted_overlap_after_a_lease_that_surely_had_not_ended() {
    // a's lease of 100 ms started no earlier than 0: b's grant answered at 50 overlaps.
    exactly(
        &[
            ev(Acquire, "k", "a", 100, 0, 1, Granted(10)),
            ev(Acquire, "k", "b", 100, 40, 50, Granted(11)),
        ],
        V::Overlap,
    );
    // The same with the lease extended: without the extend this would be clean.
    let h = [
        ev(Acquire, "k", "a", 100, 0, 1, Granted(10)),
        ev(Extend, "k", "a", 100, 80, 81, Ok),
        ev(Acquire, "k", "b", 100, 130, 150, Granted(11)),
    ];
    exactly(&h, V::Overlap);
    clean(&[h[0].clone(), h[2].clone()]);
}

#[test]
fn planted_overlap_with_an_indeterminate_grant_whose_token_shows_up_later() {
    // a's first acquire timed out but was granted: its reentry reveals token 10.
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 100, Unknown),
            ev(Acquire, "k", "a", T, 150, 151, Granted(10)),
            ev(Acquire, "k", "b", T, 152, 153, Granted(11)),
        ],
        V::Overlap,
    );
}

#[test]
fn planted_write_overlapping_a_read_hold() {
    exactly(
        &[
            ev(RLock, "rw", "r1", T, 0, 1, Granted(10)),
            ev(RLock, "rw", "r2", T, 2, 3, Granted(11)),
            ev(RUnlock, "rw", "r2", 0, 4, 5, Ok),
            ev(WLock, "rw", "w", T, 6, 7, Granted(12)),
            ev(WUnlock, "rw", "w", 0, 10, 11, Ok),
            ev(RUnlock, "rw", "r1", 0, 12, 13, Ok),
        ],
        V::RwOverlap,
    );
}

#[test]
fn planted_two_writers_at_once() {
    exactly(
        &[
            ev(WLock, "rw", "w1", T, 0, 1, Granted(10)),
            ev(WLock, "rw", "w2", T, 2, 3, Granted(11)),
        ],
        V::RwOverlap,
    );
}

#[test]
fn planted_repeated_token_to_another_owner() {
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(Release, "k", "a", 0, 2, 3, Ok),
            ev(Acquire, "k", "b", T, 4, 5, Granted(10)),
            ev(Release, "k", "b", 0, 6, 7, Ok),
        ],
        V::RepeatedToken,
    );
}

#[test]
fn planted_repeated_token_to_the_same_owner_after_its_hold_ended() {
    // Released to zero, then granted the same token again: not a reentry.
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(Release, "k", "a", 0, 2, 3, Ok),
            ev(Acquire, "k", "a", T, 4, 5, Granted(10)),
        ],
        V::RepeatedToken,
    );
    // Lease surely over (ends by 1 + 10 ms), then the same token again.
    exactly(
        &[
            ev(Acquire, "k", "a", 10, 0, 1, Granted(10)),
            ev(Acquire, "k", "a", 10, 100, 101, Granted(10)),
        ],
        V::RepeatedToken,
    );
}

#[test]
fn planted_token_order_inversion() {
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(20)),
            ev(Release, "k", "a", 0, 2, 3, Ok),
            ev(Acquire, "k", "b", T, 4, 5, Granted(15)),
            ev(Release, "k", "b", 0, 6, 7, Ok),
        ],
        V::TokenOrder,
    );
    // Also across modes of a read-write lock.
    exactly(
        &[
            ev(RLock, "rw", "r", T, 0, 1, Granted(20)),
            ev(RLock, "rw", "s", T, 4, 5, Granted(15)),
        ],
        V::TokenOrder,
    );
}

#[test]
fn planted_release_by_a_non_holder() {
    // Released twice: the second release came after the hold ended.
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(Release, "k", "a", 0, 2, 3, Ok),
            ev(Release, "k", "a", 0, 4, 5, Ok),
        ],
        V::NonHolderAck,
    );
    // Never held at all.
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(Release, "k", "b", 0, 2, 3, Ok),
        ],
        V::NonHolderAck,
    );
    // A read unlock by a writer.
    exactly(
        &[
            ev(WLock, "rw", "w", T, 0, 1, Granted(10)),
            ev(RUnlock, "rw", "w", 0, 2, 3, Ok),
        ],
        V::NonHolderAck,
    );
}

#[test]
fn planted_extend_after_the_lease_surely_ended() {
    // The lease ended by 1 + 100 ms (+ clock slack); the extend at 200 was acknowledged.
    exactly(
        &[
            ev(Acquire, "k", "a", 100, 0, 1, Granted(10)),
            ev(Extend, "k", "a", 100, 200, 201, Ok),
        ],
        V::NonHolderAck,
    );
    // An extend that shortened the lease: the old, longer lease no longer counts.
    let h = [
        ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
        ev(Extend, "k", "a", 10, 5, 6, Ok),
        ev(Release, "k", "a", 0, 100, 101, Ok),
    ];
    exactly(&h, V::NonHolderAck);
    clean(&[h[0].clone(), h[1].clone(), ev(Release, "k", "a", 0, 15, 16, Ok)]);
    // An extend of a read-write lock by an owner that released everything.
    exactly(
        &[
            ev(RLock, "rw", "r", T, 0, 1, Granted(10)),
            ev(RUnlock, "rw", "r", 0, 2, 3, Ok),
            ev(RwExtend, "rw", "r", T, 4, 5, Ok),
        ],
        V::NonHolderAck,
    );
}

#[test]
fn planted_stale_fenced_write() {
    exactly(
        &[
            fence_ev("res", "a", 20, 0, 1, Ok),
            fence_ev("res", "b", 15, 2, 3, Ok),
        ],
        V::StaleFencedWrite,
    );
    let v = check_fence_log("res", &[10, 12, 12, 11, 13]);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].kind, V::StaleFencedWrite);
    assert!(v[0].what.contains("token 11"), "{}", v[0].what);
}

#[test]
fn a_recorder_times_operations_on_one_clock() {
    let rec = Recorder::new();
    let r2 = rec.clone();
    let t = std::thread::spawn(move || r2.record(Acquire, "k", "a", 100, || Granted(7)));
    assert_eq!(t.join().unwrap(), Granted(7));
    rec.record(Release, "k", "a", 0, || Ok);
    rec.record_fence("res", "a", 7, || Ok);
    let h = rec.events();
    assert_eq!(h.len(), 3);
    assert!(h.iter().all(|e| e.invoke <= e.complete));
    assert!(h[0].complete <= h[1].invoke);
    assert_eq!(h[2].token, 7);
    clean(&h);
}

// ---------------------------------------------------------------------------------------
// Randomized: histories of a model lock that is correct by construction
// ---------------------------------------------------------------------------------------

/// A discrete-time model of one server and `clients` sequential clients on one mutex
/// (`rw == false`) or read-write lock: each operation is applied at a random instant
/// between its invoke and its complete, with random lease lengths, reentries, extends,
/// releases, lease ends and the odd lost reply.
fn model_history(seed: u64, rw: bool, sensible: bool, clients: usize, steps: u64) -> Vec<Event> {
    #[derive(Clone, Copy, PartialEq)]
    enum M {
        X,
        R,
        W,
    }
    struct Hold {
        owner: usize,
        mode: M,
        token: i64,
        deadline: u64,
        holds: u32,
    }
    struct Flight {
        ev: Event,
        apply: u64,
        done: u64,
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut holds: Vec<Hold> = Vec::new();
    let mut next_token = 100i64;
    let mut flights: Vec<Option<Flight>> = (0..clients).map(|_| None).collect();
    let mut idle_until = vec![0u64; clients];
    let mut gone = vec![false; clients];
    let mut belief = vec![[0i64; 3]; clients];
    let mut out = Vec::new();
    let key = if rw { "rw" } else { "m" };
    for now in 0..steps {
        // Server: leases end, then the operations due now, in client order.
        holds.retain(|h| h.deadline > now);
        for c in 0..clients {
            let f = match &mut flights[c] {
                Some(f) if f.apply == now => f,
                _ => continue,
            };
            let owner = c;
            let mine = |holds: &Vec<Hold>, m: M| holds.iter().position(|h| h.owner == owner && h.mode == m);
            let ttl = f.ev.ttl_ms;
            f.ev.res = match f.ev.op {
                Acquire | RLock | WLock => {
                    let m = match f.ev.op {
                        Acquire => M::X,
                        RLock => M::R,
                        _ => M::W,
                    };
                    if let Some(p) = mine(&holds, m) {
                        holds[p].holds += 1;
                        holds[p].deadline = now + ttl;
                        Granted(holds[p].token)
                    } else {
                        let free = holds.iter().all(|h| match m {
                            M::X => false,
                            M::R => h.mode == M::R || h.owner == owner,
                            M::W => h.owner == owner && h.mode == M::R,
                        });
                        if free {
                            next_token += rng.gen_range(1..3);
                            holds.push(Hold { owner, mode: m, token: next_token, deadline: now + ttl, holds: 1 });
                            Granted(next_token)
                        } else {
                            Refused
                        }
                    }
                }
                Release | RUnlock | WUnlock => {
                    let m = match f.ev.op {
                        Release => M::X,
                        RUnlock => M::R,
                        _ => M::W,
                    };
                    match mine(&holds, m) {
                        Some(p) => {
                            holds[p].holds -= 1;
                            if holds[p].holds == 0 {
                                holds.remove(p);
                            }
                            Ok
                        }
                        None => NotHeld,
                    }
                }
                Extend | RwExtend => {
                    let mut any = false;
                    for h in holds.iter_mut().filter(|h| h.owner == owner) {
                        h.deadline = now + ttl;
                        any = true;
                    }
                    if any {
                        Ok
                    } else {
                        NotHeld
                    }
                }
                _ => unreachable!(),
            };
        }
        // Clients: collect replies, then maybe start a new operation.
        for c in 0..clients {
            if let Some(f) = &flights[c] {
                if f.done == now {
                    let mut f = flights[c].take().unwrap();
                    f.ev.complete = std::time::Duration::from_millis(now);
                    if rng.gen_ratio(1, 200) {
                        // The reply is lost: indeterminate. A sensible client goes on
                        // (so its operations are no longer sequential), others stop.
                        f.ev.res = Unknown;
                        gone[c] = !sensible;
                    }
                    let slot = match f.ev.op {
                        Acquire | Release => 0,
                        RLock | RUnlock => 1,
                        _ => 2,
                    };
                    match (f.ev.op, &f.ev.res) {
                        (Acquire | RLock | WLock, Granted(_)) => belief[c][slot] += 1,
                        (Release | RUnlock | WUnlock, Ok) => belief[c][slot] -= 1,
                        (Release | RUnlock | WUnlock, NotHeld) => belief[c][slot] = 0,
                        (Extend | RwExtend, NotHeld) => belief[c] = [0; 3],
                        _ => {}
                    }
                    out.push(f.ev);
                    idle_until[c] = now + rng.gen_range(0..3);
                }
            }
            if gone[c] || flights[c].is_some() || idle_until[c] > now {
                continue;
            }
            // Mostly sensible clients (release what they hold, acquire otherwise), with
            // the odd reentry, extend and release of what they do not hold.
            let holding = |m: Op| {
                let slot = match m {
                    Acquire => 0,
                    RLock => 1,
                    _ => 2,
                };
                belief[c][slot] > 0
            };
            let op = if !sensible {
                if rw {
                    [RLock, RLock, WLock, RUnlock, WUnlock, RwExtend][rng.gen_range(0..6)]
                } else {
                    [Acquire, Acquire, Release, Release, Extend][rng.gen_range(0..5)]
                }
            } else if rw {
                let (r, w) = (holding(RLock), holding(WLock));
                match rng.gen_range(0..10) {
                    0 => RwExtend,
                    1 => RLock,
                    2 => WLock,
                    _ if w => WUnlock,
                    _ if r => RUnlock,
                    3..=6 => RLock,
                    _ => WLock,
                }
            } else {
                let x = holding(Acquire);
                match rng.gen_range(0..10) {
                    0 => Extend,
                    1 => Acquire,
                    2 => Release,
                    _ if x => Release,
                    _ => Acquire,
                }
            };
            let ttl = match op {
                Acquire | RLock | WLock | Extend | RwExtend => rng.gen_range(3..40),
                _ => 0,
            };
            let apply = now + 1 + rng.gen_range(0..3);
            let done = apply + rng.gen_range(0..3);
            let e = ev(op, key, &format!("c{c}"), ttl, now, now, Refused);
            flights[c] = Some(Flight { ev: e, apply, done });
        }
    }
    // Operations still in flight at the end never answered: indeterminate.
    for f in flights.into_iter().flatten() {
        let mut e = f.ev;
        e.res = Unknown;
        e.complete = std::time::Duration::from_millis(steps);
        out.push(e);
    }
    out
}

/// Model histories per variant: `CHECKER_SEEDS`, else 300 under `CHAOS_FULL=1`, else 40.
fn seeds() -> u64 {
    let full = support::chaos::full();
    std::env::var("CHECKER_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if full { 300 } else { 40 })
}

#[test]
fn randomized_histories_of_a_correct_lock_are_clean() {
    let seeds: u64 = seeds();
    for seed in 0..seeds {
        for (rw, sensible) in [(false, true), (true, true), (false, false), (true, false)] {
            let h = model_history(seed, rw, sensible, 6, 1500);
            let grants = h.iter().filter(|e| matches!(e.res, Granted(_))).count();
            assert!(grants > 30, "the model should grant often ({grants})");
            let v = check(&h);
            assert!(v.is_empty(), "seed {seed} rw {rw} sensible {sensible}:\n{}", render(&h, &v, 5));
        }
    }
}

#[test]
fn randomized_histories_with_one_planted_fault_are_caught() {
    let mut caught = [0usize; 4];
    let seeds: u64 = seeds();
    for seed in 0..seeds * 2 {
        let h = model_history(seed / 2, false, seed % 2 == 0, 6, 1500);
        let grants: Vec<usize> = (0..h.len()).filter(|&i| matches!(h[i].res, Granted(_))).collect();
        let acks: Vec<usize> = (0..h.len())
            .filter(|&i| matches!(h[i].op, Release | Extend) && h[i].res == NotHeld && h[i].complete > h[i].invoke)
            .collect();

        // 1. An intruder granted the lock right after someone's grant, while that hold
        //    surely lasted (its lease long enough, its owner silent meanwhile).
        let ms = std::time::Duration::from_millis;
        let max_token = grants.iter().map(|&i| if let Granted(t) = h[i].res { t } else { 0 }).max().unwrap();
        let victim = grants.iter().cloned().find(|&g| {
            // An owner with an indeterminate operation is checked more coarsely.
            if h.iter().any(|e| e.owner == h[g].owner && e.res == Unknown) {
                return false;
            }
            let next = h.iter().filter(|e| e.owner == h[g].owner && e.invoke > h[g].invoke).map(|e| e.invoke).min();
            h[g].invoke + ms(h[g].ttl_ms) > h[g].complete + ms(6) && next.map_or(true, |n| n > h[g].complete + ms(4))
        });
        if let Some(g) = victim {
            let mut bad = h.clone();
            bad.push(ev(Acquire, "m", "intruder", 100, 0, 0, Granted(max_token + 1000)));
            let n = bad.len() - 1;
            bad[n].invoke = h[g].complete + ms(1);
            bad[n].complete = h[g].complete + ms(2);
            let v = check(&bad);
            assert!(
                v.iter().any(|v| v.kind == V::Overlap),
                "seed {seed}: planted double grant not caught:\n{}\n#{g} {}\n#{n} {}",
                render(&bad, &v, 5),
                bad[g],
                bad[n]
            );
            caught[0] += 1;
        }

        // 2. A grant given a token already used by someone else.
        let g = grants[grants.len() / 2];
        let other = grants.iter().cloned().find(|&x| h[x].owner != h[g].owner).unwrap();
        let mut bad = h.clone();
        bad[g].res = h[other].res.clone();
        assert!(
            check(&bad).iter().any(|v| v.kind == V::RepeatedToken),
            "seed {seed}: planted repeated token not caught"
        );
        caught[1] += 1;

        // 3. A late fresh grant with a token below an early one.
        let (first, last) = (grants[0], *grants.last().unwrap());
        if h[first].complete < h[last].invoke && h[first].owner != h[last].owner {
            let mut bad = h.clone();
            if let Granted(t) = h[first].res {
                // Keep it distinct from every token and below the first one.
                bad[last].res = Granted(t - 1);
                // Only a fresh grant counts: skip it if `last` was a reentry.
                let reentry = grants.iter().any(|&x| x != last && h[x].res == h[last].res);
                // An earlier indeterminate acquire may have been its real start.
                let unknown = h.iter().any(|e| e.owner == h[last].owner && e.res == Unknown);
                if !reentry && !unknown {
                    assert!(
                        check(&bad).iter().any(|v| v.kind == V::TokenOrder),
                        "seed {seed}: planted token inversion not caught"
                    );
                    caught[2] += 1;
                }
            }
        }

        // 4. A release or extend that answered 0 (the owner held nothing) made to answer 1.
        if let Some(&i) = acks.iter().find(|&&i| {
            // Its owner held nothing since long before: no grant for it within 60 ms.
            !h.iter().any(|g| {
                g.owner == h[i].owner
                    && matches!(g.res, Granted(_) | Unknown | Ok)
                    && g.invoke <= h[i].complete
                    && g.complete + std::time::Duration::from_millis(60) > h[i].invoke
            })
        }) {
            let mut bad = h.clone();
            bad[i].res = Ok;
            assert!(
                check(&bad).iter().any(|v| v.kind == V::NonHolderAck),
                "seed {seed}: planted non-holder ack not caught at #{i} {}",
                bad[i]
            );
            caught[3] += 1;
        }
    }
    assert!(caught.iter().all(|&n| n >= 5), "too few faults could be planted: {caught:?}");
}
