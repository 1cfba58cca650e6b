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

// ---------------------------------------------------------------------------------------
// Semaphores: clean histories, then planted violations
// ---------------------------------------------------------------------------------------

/// `SEM.ACQUIRE` of `permits` of a semaphore of `limit`.
fn sem(limit: u64, permits: u64) -> Op {
    Op::sem(limit, permits)
}

#[test]
fn clean_semaphore_shares_permits_up_to_the_limit() {
    clean(&[
        // Limit 3: a takes 2, b takes 1, c (1) is refused until a leaves.
        ev(sem(3, 2), "s", "a", T, 0, 1, Granted(10)),
        ev(sem(3, 1), "s", "b", T, 2, 3, Granted(11)),
        ev(sem(3, 1), "s", "c", T, 4, 5, Refused),
        ev(sem(3, 3), "s", "d", T, 4, 5, Refused),
        ev(SemRelease, "s", "a", 0, 6, 7, Ok),
        ev(sem(3, 1), "s", "c", T, 8, 9, Granted(12)),
        ev(sem(3, 1), "s", "e", T, 8, 10, Granted(13)),
        ev(SemExtend, "s", "b", T, 11, 12, Ok),
        ev(SemRelease, "s", "b", 0, 13, 14, Ok),
        ev(SemRelease, "s", "c", 0, 13, 14, Ok),
        ev(SemRelease, "s", "e", 0, 15, 16, Ok),
        // Free: the whole limit in one grant.
        ev(sem(3, 3), "s", "d", T, 17, 18, Granted(14)),
        ev(SemRelease, "s", "d", 0, 19, 20, Ok),
        ev(SemRelease, "s", "d", 0, 21, 22, NotHeld),
        ev(SemExtend, "s", "d", T, 23, 24, NotHeld),
    ]);
}

#[test]
fn clean_semaphore_reentry_keeps_the_token_and_counts_holds() {
    clean(&[
        ev(sem(2, 2), "s", "a", T, 0, 1, Granted(10)),
        ev(sem(2, 2), "s", "a", T, 2, 3, Granted(10)),
        ev(sem(2, 1), "s", "a", T, 4, 5, Error("owner holds 2 permits".into())),
        ev(SemRelease, "s", "a", 0, 6, 7, Ok),
        ev(sem(2, 1), "s", "b", T, 8, 9, Refused),
        ev(SemRelease, "s", "a", 0, 10, 11, Ok),
        ev(sem(2, 1), "s", "b", T, 12, 13, Granted(11)),
        ev(SemRelease, "s", "a", 0, 14, 15, NotHeld),
        // After its hold ended, a fresh grant with a fresh token.
        ev(sem(2, 1), "s", "a", T, 16, 17, Granted(12)),
    ]);
}

#[test]
fn clean_semaphore_waiters_granted_after_releases_and_lease_ends() {
    clean(&[
        // a holds the whole limit with a 50 ms lease; b and c wait.
        ev(sem(2, 2), "s", "a", 50, 0, 1, Granted(10)),
        ev(sem(2, 1), "s", "b", 50, 10, 70, Granted(11)),
        ev(sem(2, 1), "s", "c", 50, 11, 71, Granted(12)),
        ev(SemRelease, "s", "a", 0, 60, 61, NotHeld),
        // d waits for both permits: granted once b and c released.
        ev(sem(2, 2), "s", "d", 50, 72, 90, Granted(13)),
        ev(SemRelease, "s", "b", 0, 80, 81, Ok),
        ev(SemRelease, "s", "c", 0, 82, 89, Ok),
        // e waits and times out.
        ev(sem(2, 1), "s", "e", 50, 91, 120, Refused),
    ]);
}

#[test]
fn clean_semaphore_holds_that_only_touch_or_may_have_ended() {
    // b's grant answered at 20, a's release invoked at 20: not surely at once.
    clean(&[
        ev(sem(1, 1), "s", "a", T, 0, 1, Granted(10)),
        ev(sem(1, 1), "s", "b", T, 2, 20, Granted(11)),
        ev(SemRelease, "s", "a", 0, 20, 25, Ok),
    ]);
    // a's lease of 100 ms may have ended at 100 (granted at 0): c's grant at 105 is fine.
    clean(&[
        ev(sem(2, 1), "s", "a", 100, 0, 40, Granted(10)),
        ev(sem(2, 1), "s", "b", T, 41, 42, Granted(11)),
        ev(sem(2, 1), "s", "c", T, 101, 105, Granted(12)),
        // a's release may still have been in time (its lease may end at 140).
        ev(SemRelease, "s", "a", 0, 130, 139, Ok),
    ]);
    // An extend that shortened the lease.
    clean(&[
        ev(sem(1, 1), "s", "a", T, 0, 1, Granted(10)),
        ev(SemExtend, "s", "a", 10, 5, 6, Ok),
        ev(sem(1, 1), "s", "b", T, 20, 21, Granted(11)),
    ]);
}

#[test]
fn clean_semaphore_limit_changes_only_when_free() {
    clean(&[
        ev(sem(2, 2), "s", "a", T, 0, 1, Granted(10)),
        ev(sem(5, 1), "s", "b", T, 2, 3, Error("limit mismatch: semaphore has limit 2".into())),
        ev(SemRelease, "s", "a", 0, 4, 5, Ok),
        // Free: a new limit binds.
        ev(sem(5, 4), "s", "b", T, 6, 7, Granted(11)),
        ev(sem(5, 1), "s", "c", T, 8, 9, Granted(12)),
        // DEL ends every hold: another limit again.
        ev(Del, "s", "", 0, 10, 11, Ok),
        ev(sem(1, 1), "s", "d", T, 12, 13, Granted(13)),
        ev(FlushAll, "", "", 0, 14, 15, Ok),
        ev(sem(3, 3), "s", "e", T, 16, 17, Granted(14)),
        ev(SemRelease, "s", "b", 0, 18, 19, NotHeld),
    ]);
}

#[test]
fn clean_semaphore_indeterminate_operations() {
    // An acquire that timed out may hold 2 permits, unknown: not counted; its release
    // may be acknowledged.
    clean(&[
        ev(sem(2, 2), "s", "a", T, 0, 100, Unknown),
        ev(sem(2, 2), "s", "b", T, 200, 201, Granted(11)),
        ev(SemRelease, "s", "a", 0, 202, 203, Ok),
        ev(SemExtend, "s", "a", T, 204, 205, Ok),
    ]);
    // A lost release may have freed the permits at once.
    clean(&[
        ev(sem(1, 1), "s", "a", T, 0, 1, Granted(10)),
        ev(SemRelease, "s", "a", 0, 5, 50, Unknown),
        ev(sem(1, 1), "s", "b", T, 10, 11, Granted(11)),
    ]);
    // Concurrent grants may come back in either token order.
    clean(&[
        ev(sem(3, 1), "s", "a", T, 0, 10, Granted(12)),
        ev(sem(3, 1), "s", "b", 10, 1, 9, Granted(11)),
    ]);
}

#[test]
fn planted_semaphore_over_the_limit() {
    // Three holders of one permit each on a semaphore of 2.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(sem(2, 1), "s", "b", T, 2, 3, Granted(11)),
            ev(sem(2, 1), "s", "c", T, 4, 5, Granted(12)),
            ev(SemRelease, "s", "a", 0, 6, 7, Ok),
        ],
        V::SemOverLimit,
    );
    // Two holders whose COUNTs together exceed the limit.
    exactly(
        &[
            ev(sem(3, 2), "s", "a", T, 0, 1, Granted(10)),
            ev(sem(3, 2), "s", "b", T, 2, 3, Granted(11)),
        ],
        V::SemOverLimit,
    );
    // One grant of more permits than the limit.
    exactly(&[ev(sem(2, 3), "s", "a", T, 0, 1, Granted(10))], V::SemOverLimit);
    // A lease that surely had not ended (100 ms from 0 at least): b at 50 is one too many;
    // at 110 it is not.
    let h = [
        ev(sem(1, 1), "s", "a", 100, 0, 1, Granted(10)),
        ev(sem(1, 1), "s", "b", 100, 40, 50, Granted(11)),
    ];
    exactly(&h, V::SemOverLimit);
    clean(&[h[0].clone(), ev(sem(1, 1), "s", "b", 100, 100, 110, Granted(11))]);
    // The same with an extend that kept the lease alive.
    let h = [
        ev(sem(2, 2), "s", "a", 100, 0, 1, Granted(10)),
        ev(SemExtend, "s", "a", 100, 80, 81, Ok),
        ev(sem(2, 1), "s", "b", 100, 130, 150, Granted(11)),
    ];
    exactly(&h, V::SemOverLimit);
    clean(&[h[0].clone(), h[2].clone()]);
    // A reentry also keeps it alive.
    let h = [
        ev(sem(2, 2), "s", "a", 100, 0, 1, Granted(10)),
        ev(sem(2, 2), "s", "a", 100, 80, 81, Granted(10)),
        ev(sem(2, 1), "s", "b", 100, 130, 150, Granted(11)),
    ];
    exactly(&h, V::SemOverLimit);
}

#[test]
fn planted_semaphore_grant_with_another_limit_while_held() {
    // a holds under limit 2; b is granted under limit 3 while a surely holds.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(sem(3, 1), "s", "b", T, 2, 3, Granted(11)),
        ],
        V::SemLimitMismatch,
    );
    // After a released, it is fine.
    clean(&[
        ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
        ev(SemRelease, "s", "a", 0, 2, 3, Ok),
        ev(sem(3, 1), "s", "b", T, 4, 5, Granted(11)),
    ]);
}

#[test]
fn planted_semaphore_repeated_and_out_of_order_tokens() {
    // Two holders with one token.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(sem(2, 1), "s", "b", T, 2, 3, Granted(10)),
        ],
        V::RepeatedToken,
    );
    // The same owner's token again after its hold ended (not a reentry).
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(SemRelease, "s", "a", 0, 2, 3, Ok),
            ev(sem(2, 1), "s", "a", T, 4, 5, Granted(10)),
        ],
        V::RepeatedToken,
    );
    // A fresh grant below a token issued before it was asked for.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(20)),
            ev(sem(2, 1), "s", "b", T, 2, 3, Granted(15)),
        ],
        V::TokenOrder,
    );
    // Also across kinds on one key (after a DEL): tokens never go back.
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(20)),
            ev(Del, "k", "", 0, 2, 3, Ok),
            ev(sem(2, 1), "k", "b", T, 4, 5, Granted(19)),
        ],
        V::TokenOrder,
    );
}

#[test]
fn planted_semaphore_reentry_with_another_token() {
    // (Only that: a's permits are counted once, so not also over the limit.)
    let h = [
        ev(sem(2, 2), "s", "a", T, 0, 1, Granted(10)),
        ev(sem(2, 2), "s", "a", T, 2, 3, Granted(11)),
    ];
    exactly(&h, V::ReentryToken);
    // Once its lease surely ended, a new token is right.
    clean(&[
        ev(sem(3, 1), "s", "a", 10, 0, 1, Granted(10)),
        ev(sem(3, 1), "s", "a", T, 20, 21, Granted(11)),
    ]);
}

#[test]
fn planted_semaphore_release_or_extend_by_a_non_holder() {
    // Released twice.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(SemRelease, "s", "a", 0, 2, 3, Ok),
            ev(SemRelease, "s", "a", 0, 4, 5, Ok),
        ],
        V::NonHolderAck,
    );
    // Never held.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(SemRelease, "s", "b", 0, 2, 3, Ok),
        ],
        V::NonHolderAck,
    );
    // Extended after the lease surely ended; extended after a DEL.
    exactly(
        &[
            ev(sem(2, 1), "s", "a", 100, 0, 1, Granted(10)),
            ev(SemExtend, "s", "a", 100, 200, 201, Ok),
        ],
        V::NonHolderAck,
    );
    exactly(
        &[
            ev(sem(2, 1), "s", "a", T, 0, 1, Granted(10)),
            ev(Del, "s", "", 0, 2, 3, Ok),
            ev(SemExtend, "s", "a", T, 4, 5, Ok),
        ],
        V::NonHolderAck,
    );
    // A mutex's hold does not make a semaphore release right.
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(SemRelease, "k", "a", 0, 2, 3, Ok),
        ],
        V::NonHolderAck,
    );
}

#[test]
fn planted_semaphore_and_another_kind_held_on_one_key() {
    exactly(
        &[
            ev(Acquire, "k", "a", T, 0, 1, Granted(10)),
            ev(sem(5, 1), "k", "b", T, 2, 3, Granted(11)),
        ],
        V::Overlap,
    );
    exactly(
        &[
            ev(sem(5, 1), "k", "a", T, 0, 1, Granted(10)),
            ev(RLock, "k", "a", T, 2, 3, Granted(11)),
        ],
        V::Overlap,
    );
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
            h[g].invoke + ms(h[g].ttl_ms) > h[g].complete + ms(6) && next.is_none_or(|n| n > h[g].complete + ms(4))
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

// ---------------------------------------------------------------------------------------
// Randomized: histories of a model semaphore that is correct by construction
// ---------------------------------------------------------------------------------------

/// A discrete-time model of one server and `clients` clients on one semaphore of `limit`:
/// random COUNTs, reentries, extends, releases, lease ends, `WAIT` acquires served in
/// arrival order (a large request at the head blocks later ones), time-outs, the odd lost
/// reply. Sensible clients keep their limit and COUNT, release what they hold and go on
/// after a lost reply (their operations are then no longer sequential); the others send
/// random operations, sometimes another limit or another COUNT, and stop after a lost reply.
fn sem_model_history(seed: u64, sensible: bool, clients: usize, steps: u64, limit: u64) -> Vec<Event> {
    struct Hold {
        owner: usize,
        permits: u64,
        token: i64,
        deadline: u64,
        holds: u32,
    }
    struct Flight {
        ev: Event,
        apply: u64,
        /// None while it waits in the queue.
        done: Option<u64>,
        wait_until: u64,
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e3a_f0c1);
    let mut holds: Vec<Hold> = Vec::new();
    let mut bound = 0u64;
    let mut queue: std::collections::VecDeque<usize> = Default::default();
    let mut next_token = 100i64;
    let mut flights: Vec<Option<Flight>> = (0..clients).map(|_| None).collect();
    let mut idle_until = vec![0u64; clients];
    let mut gone = vec![false; clients];
    let mut belief = vec![0i64; clients];
    let mut out = Vec::new();
    let key = "s";
    let args = |op: Op| match op {
        SemAcquire { limit, permits } => (limit, permits),
        _ => unreachable!(),
    };
    for now in 0..steps {
        // Server: leases end; the operations due now, in client order; then waiters
        // that time out, and the queue served in order.
        holds.retain(|h| h.deadline > now);
        for c in 0..clients {
            let f = match &mut flights[c] {
                Some(f) if f.apply == now && f.done.is_none() && !queue.contains(&c) => f,
                _ => continue,
            };
            let ttl = f.ev.ttl_ms;
            let mine = holds.iter().position(|h| h.owner == c);
            let (res, wait) = match f.ev.op {
                SemAcquire { limit: l, permits: p } => {
                    let is_bound = !holds.is_empty() || !queue.is_empty();
                    if p > l {
                        (Error("permits exceed the limit".into()), false)
                    } else if is_bound && l != bound {
                        (Error(format!("limit mismatch: semaphore has limit {bound}")), false)
                    } else if let Some(i) = mine {
                        if holds[i].permits != p {
                            (Error(format!("owner holds {} permits", holds[i].permits)), false)
                        } else {
                            holds[i].holds += 1;
                            holds[i].deadline = now + ttl;
                            (Granted(holds[i].token), false)
                        }
                    } else if queue.is_empty() && holds.iter().map(|h| h.permits).sum::<u64>() + p <= l {
                        next_token += rng.gen_range(1..3);
                        bound = l;
                        holds.push(Hold { owner: c, permits: p, token: next_token, deadline: now + ttl, holds: 1 });
                        (Granted(next_token), false)
                    } else if f.wait_until > now {
                        (Refused, true)
                    } else {
                        (Refused, false)
                    }
                }
                SemRelease => match mine {
                    Some(i) => {
                        holds[i].holds -= 1;
                        if holds[i].holds == 0 {
                            holds.remove(i);
                        }
                        (Ok, false)
                    }
                    None => (NotHeld, false),
                },
                SemExtend => match mine {
                    Some(i) => {
                        holds[i].deadline = now + ttl;
                        (Ok, false)
                    }
                    None => (NotHeld, false),
                },
                _ => unreachable!(),
            };
            f.ev.res = res;
            if wait {
                queue.push_back(c);
            } else {
                f.done = Some(now + rng.gen_range(0..3));
            }
        }
        queue.retain(|&c| {
            let f = flights[c].as_mut().unwrap();
            if f.wait_until <= now {
                f.done = Some(now + rng.gen_range(0..3));
                false
            } else {
                true
            }
        });
        while let Some(&c) = queue.front() {
            let f = flights[c].as_mut().unwrap();
            let (_, p) = args(f.ev.op);
            if holds.iter().map(|h| h.permits).sum::<u64>() + p > bound {
                break;
            }
            queue.pop_front();
            next_token += rng.gen_range(1..3);
            holds.push(Hold { owner: c, permits: p, token: next_token, deadline: now + f.ev.ttl_ms, holds: 1 });
            f.ev.res = Granted(next_token);
            f.done = Some(now + rng.gen_range(0..3));
        }
        // Clients: collect replies, then maybe start a new operation.
        for c in 0..clients {
            if matches!(&flights[c], Some(f) if f.done == Some(now)) {
                let mut f = flights[c].take().unwrap();
                f.ev.complete = std::time::Duration::from_millis(now);
                if rng.gen_ratio(1, 200) {
                    f.ev.res = Unknown;
                    gone[c] = !sensible;
                }
                match (f.ev.op, &f.ev.res) {
                    (SemAcquire { .. }, Granted(_)) => belief[c] += 1,
                    (SemRelease, Ok) => belief[c] -= 1,
                    (SemRelease | SemExtend, NotHeld) => belief[c] = 0,
                    _ => {}
                }
                // Sometimes a longer section after a grant.
                let section = matches!(f.ev.res, Granted(_)) && rng.gen_bool(0.3);
                out.push(f.ev);
                idle_until[c] = now + if section { rng.gen_range(5..20) } else { rng.gen_range(0..3) };
            }
            if gone[c] || flights[c].is_some() || idle_until[c] > now {
                continue;
            }
            // Each sensible client keeps one COUNT (a reentry must repeat it).
            let own_permits = 1 + (seed + c as u64) % limit.min(3);
            let op = if !sensible {
                let l = if rng.gen_ratio(1, 10) { limit + 1 } else { limit };
                match rng.gen_range(0..6) {
                    0..=2 => sem(l, rng.gen_range(1..=l)),
                    3 | 4 => SemRelease,
                    _ => SemExtend,
                }
            } else {
                match rng.gen_range(0..10) {
                    0 => SemExtend,
                    1 => sem(limit, own_permits),
                    2 => SemRelease,
                    _ if belief[c] > 0 => SemRelease,
                    _ => sem(limit, own_permits),
                }
            };
            let ttl = match op {
                SemAcquire { .. } | SemExtend => rng.gen_range(3..40),
                _ => 0,
            };
            let apply = now + 1 + rng.gen_range(0..3);
            // Half the acquires wait, up to 30 ms.
            let wait_until = if rng.gen_bool(0.5) { apply + rng.gen_range(1..30) } else { 0 };
            let e = ev(op, key, &format!("c{c}"), ttl, now, now, Refused);
            flights[c] = Some(Flight { ev: e, apply, done: None, wait_until });
        }
    }
    for f in flights.into_iter().flatten() {
        let mut e = f.ev;
        e.res = Unknown;
        e.complete = std::time::Duration::from_millis(steps);
        out.push(e);
    }
    out
}

#[test]
fn randomized_histories_of_a_correct_semaphore_are_clean() {
    let seeds: u64 = seeds();
    for seed in 0..seeds {
        for sensible in [true, false] {
            for limit in [1, 3] {
                let h = sem_model_history(seed, sensible, 8, 1500, limit);
                let grants = h.iter().filter(|e| matches!(e.res, Granted(_))).count();
                assert!(grants > 30, "the model should grant often ({grants})");
                let waited = h.iter().filter(|e| matches!(e.res, Granted(_)) && e.complete > e.invoke + ms(8)).count();
                assert!(waited > 0, "no acquire waited and was granted late");
                let v = check(&h);
                assert!(v.is_empty(), "seed {seed} sensible {sensible} limit {limit}:\n{}", render(&h, &v, 5));
            }
        }
    }
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}

#[test]
fn randomized_semaphore_histories_with_one_planted_fault_are_caught() {
    let mut caught = [0usize; 6];
    let seeds: u64 = seeds();
    for seed in 0..seeds * 2 {
        let limit = 2 + seed % 2;
        let h = sem_model_history(seed / 2, seed % 2 == 0, 8, 1500, limit);
        let grants: Vec<usize> = (0..h.len()).filter(|&i| matches!(h[i].res, Granted(_))).collect();
        let token = |i: usize| if let Granted(t) = h[i].res { t } else { unreachable!() };
        let max_token = grants.iter().map(|&i| token(i)).max().unwrap();
        let exact = |i: usize| !h.iter().any(|e| e.owner == h[i].owner && e.res == Unknown);
        // The owner's next operation after `i`.
        let next = |i: usize| {
            h.iter().enumerate().filter(|(_, e)| e.owner == h[i].owner && e.invoke > h[i].invoke).min_by_key(|(_, e)| e.invoke)
        };
        // A grant whose hold surely lasts a few ms past its reply.
        let lasting = |g: usize| {
            exact(g)
                && h[g].invoke + ms(h[g].ttl_ms) > h[g].complete + ms(6)
                && next(g).is_none_or(|(_, n)| n.invoke > h[g].complete + ms(4))
        };
        let caught_as = |bad: &[Event], k: V, what: &str| {
            let v = check(bad);
            assert!(v.iter().any(|v| v.kind == k), "seed {seed}: planted {what} not caught as {k:?}:\n{}", render(bad, &v, 5));
        };
        let intruder = |g: usize, op: Op| {
            let mut e = ev(op, "s", "intruder", 100, 0, 0, Granted(max_token + 1000));
            e.invoke = h[g].complete + ms(1);
            e.complete = h[g].complete + ms(2);
            e
        };

        // 1. An intruder granted the whole limit while someone surely held permits.
        if let Some(g) = grants.iter().cloned().find(|&g| lasting(g)) {
            let mut bad = h.clone();
            bad.push(intruder(g, sem(limit, limit)));
            caught_as(&bad, V::SemOverLimit, "grant over the limit");
            caught[0] += 1;
            // 2. The same with one permit under another limit.
            let mut bad = h.clone();
            bad.push(intruder(g, sem(limit + 5, 1)));
            caught_as(&bad, V::SemLimitMismatch, "grant under another limit");
            caught[1] += 1;
        }

        // 3. A grant given a token already used by another owner.
        let g = grants[grants.len() / 2];
        let other = grants.iter().cloned().find(|&x| h[x].owner != h[g].owner).unwrap();
        let mut bad = h.clone();
        bad[g].res = h[other].res.clone();
        caught_as(&bad, V::RepeatedToken, "repeated token");
        caught[2] += 1;

        // 4. A late fresh grant with a token below an early one.
        let (first, last) = (grants[0], *grants.last().unwrap());
        let reentry = grants.iter().any(|&x| x != last && h[x].res == h[last].res);
        if h[first].complete < h[last].invoke && h[first].owner != h[last].owner && !reentry && exact(last) {
            let mut bad = h.clone();
            // Below the first one and distinct from every token.
            bad[last].res = Granted(grants.iter().map(|&i| token(i)).min().unwrap() - 1);
            caught_as(&bad, V::TokenOrder, "token inversion");
            caught[3] += 1;
        }

        // 5. A reentry (the owner's previous grant had its token, its hold surely alive)
        //    answered with a fresh token.
        if let Some(&r) = grants.iter().find(|&&r| {
            let prev = h
                .iter()
                .enumerate()
                .filter(|(_, e)| e.owner == h[r].owner && e.invoke < h[r].invoke)
                .max_by_key(|(_, e)| e.invoke);
            lasting(r)
                && matches!(prev, Some((p, e)) if e.res == h[r].res && lasting(p) && e.invoke + ms(e.ttl_ms) > h[r].complete + ms(4))
        }) {
            let mut bad = h.clone();
            bad[r].res = Granted(max_token + 1000);
            caught_as(&bad, V::ReentryToken, "reentry with another token");
            caught[4] += 1;
        }

        // 6. A release or extend that answered 0 long after the owner's last grant made
        //    to answer 1 (a lost acquire or extend of the owner may take effect any time).
        if let Some(i) = (0..h.len()).find(|&i| {
            matches!(h[i].op, SemRelease | SemExtend)
                && h[i].res == NotHeld
                && exact(i)
                && !h.iter().any(|g| {
                    g.owner == h[i].owner
                        && matches!(g.res, Granted(_) | Unknown | Ok)
                        && g.invoke <= h[i].complete
                        && g.complete + ms(60) > h[i].invoke
                })
        }) {
            let mut bad = h.clone();
            bad[i].res = Ok;
            caught_as(&bad, V::NonHolderAck, "non-holder ack");
            caught[5] += 1;
        }
    }
    eprintln!("planted and caught: {caught:?} (over limit, limit mismatch, repeated token, token order, reentry token, non-holder ack)");
    assert!(caught.iter().all(|&n| n >= 5), "too few faults could be planted: {caught:?}");
}
