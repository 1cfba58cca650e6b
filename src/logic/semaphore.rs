//! The counting semaphore: `limit` permits shared by holders, each holder (an owner)
//! with its own number of permits, lease, token and reentrant hold count.
//!
//! Holds are kept by owner and by deadline, so the next lease to end is found without
//! scanning, and a running sum of the permits held answers "is there room?" in O(1)
//! however many owners hold the semaphore.
//!
//! The limit. Every acquire states one, and the contract compares it only while someone
//! holds or waits (a free semaphore leaves no key). So the limit is *bound* while the
//! semaphore has holders, or while others wait (`others_first`: the glue keeps the key,
//! and the limit the waiters agreed to, for them; `with_limit` builds such an empty,
//! bound semaphore). A bound limit must be matched exactly, else `LimitMismatch` and
//! nothing changes. An unbound semaphore (no holders, nobody ahead of the caller) takes
//! the caller's limit when it grants. Waiters therefore always share the bound limit:
//! one can only queue behind holders or other waiters, both of which bind it.
//!
//! The queue of waiters lives outside (see `waiters`). `others_first` says that somebody
//! queued earlier must be served first, so a newcomer waits even when its permits are
//! free: a large request at the front of the queue is never overtaken by small ones.
//!
//! Every change is recorded so the glue can propagate exactly the holds that changed
//! (`take_changes`). The limit is not in that log: it only changes when a grant is made
//! (which is in the log), so the glue sends the limit along with every set of changes.

use std::collections::{BTreeMap, BTreeSet};

use super::tokens::{TokenClock, TokensExhausted};
use super::{Millis, Token};

/// The largest limit the contract allows: 2^31.
pub const MAX_LIMIT: u64 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Fixed for the life of the hold: reentry must ask for the same number.
    pub permits: u64,
    pub token: Token,
    /// Absolute, on the master's wall clock.
    pub deadline: Millis,
    pub holds: u64,
}

impl Hold {
    pub fn ttl_left(&self, now: Millis) -> Millis {
        (self.deadline - now).max(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Granted(Token),
    Reentered(Token),
    /// Not enough permits are free, or others wait ahead of the caller.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    NotHeld,
    StillHeld,
    /// This owner's last hold is gone and its permits are free.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemError {
    /// The semaphore is bound to this other limit.
    LimitMismatch(u64),
    PermitsExceedLimit,
    /// The caller already holds this many permits, and asked for another number.
    OwnerHolds(u64),
    Tokens(TokensExhausted),
}

impl From<TokensExhausted> for SemError {
    fn from(e: TokensExhausted) -> Self {
        SemError::Tokens(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Semaphore {
    limit: u64,
    holds: BTreeMap<Vec<u8>, Hold>,
    by_deadline: BTreeSet<(Millis, Vec<u8>)>,
    /// The permits of every stored hold, over leases included. Wide enough that no set
    /// of loaded holds, however bogus, overflows it before `consistent` rejects them.
    held: u128,
    changes: Vec<Vec<u8>>,
}

/// What an acquire asks for; the glue keeps it while the caller waits, so a semaphore
/// whose key is gone while clients wait on it still knows their limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub owner: Vec<u8>,
    pub limit: u64,
    pub permits: u64,
    pub ttl: Millis,
}

/// Empty and unbound (limit 0): what a missing key reads as. The first grant binds
/// the caller's limit.
impl Default for Semaphore {
    fn default() -> Self {
        Semaphore::with_limit(0)
    }
}

impl Semaphore {
    /// An empty semaphore bound to `limit`: what the glue keeps while clients wait on a
    /// key nobody holds, and what loading starts from.
    pub fn with_limit(limit: u64) -> Self {
        Semaphore {
            limit,
            holds: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            held: 0,
            changes: Vec::new(),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Sets the limit exactly (loading, replication), whatever is held; check the
    /// result with `consistent`.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Sets one owner's hold exactly (loading, replication), or removes it with `None`.
    pub fn set(&mut self, owner: &[u8], hold: Option<Hold>) {
        if let Some(old) = self.holds.remove(owner) {
            self.by_deadline.remove(&(old.deadline, owner.to_vec()));
            self.held -= u128::from(old.permits);
        }
        if let Some(hold) = hold {
            self.by_deadline.insert((hold.deadline, owner.to_vec()));
            self.held += u128::from(hold.permits);
            self.holds.insert(owner.to_vec(), hold);
        }
        self.changes.push(owner.to_vec());
    }

    /// The owners whose hold changed since the last call, each once.
    pub fn take_changes(&mut self) -> Vec<Vec<u8>> {
        let mut changes = std::mem::take(&mut self.changes);
        changes.sort_unstable();
        changes.dedup();
        changes
    }

    pub fn get(&self, owner: &[u8]) -> Option<&Hold> {
        self.holds.get(owner)
    }

    /// Every stored hold, by owner, whether or not its lease is over.
    pub fn stored(&self) -> impl Iterator<Item = (&[u8], &Hold)> {
        self.holds.iter().map(|(o, h)| (o.as_slice(), h))
    }

    /// The holds whose lease is not over at `now`.
    pub fn live(&self, now: Millis) -> impl Iterator<Item = (&[u8], &Hold)> {
        self.stored().filter(move |(_, h)| now < h.deadline)
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    /// The permits not held by a live lease at `now`. A replica never ends leases on
    /// its own, so over leases may still be stored; they count as free.
    pub fn available(&self, now: Millis) -> u64 {
        let over: u128 = self
            .by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, owner)| u128::from(self.holds[owner].permits))
            .sum();
        // A live sum beyond u64 is beyond any limit.
        u64::try_from(self.held - over).map_or(0, |live| self.limit.saturating_sub(live))
    }

    /// The deadline of the lease that ends first.
    pub fn earliest_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Ends every hold whose lease is over. True when any ended.
    pub fn end_over(&mut self, now: Millis) -> bool {
        let mut ended = false;
        while let Some((deadline, owner)) = self.by_deadline.first().cloned() {
            if deadline > now {
                break;
            }
            self.set(&owner, None);
            ended = true;
        }
        ended
    }

    /// The capacity invariant: the limit is one the contract allows, every hold has
    /// 1 to `limit` permits and at least one hold, and together they fit in the limit.
    /// Holds set one by one (loading) are checked with it.
    pub fn consistent(&self) -> bool {
        (1..=MAX_LIMIT).contains(&self.limit)
            && self.held <= u128::from(self.limit)
            && self.holds.values().all(|h| (1..=self.limit).contains(&h.permits) && h.holds >= 1)
    }

    /// Acquire `permits` (at least 1, checked by the caller's parser) for `owner` with a
    /// lease of `ttl` ms, stating `limit`. Checks, in order: `permits > limit` (an
    /// argument error: nothing changes at all); then, after ending over leases, a bound
    /// limit that differs; then reentry; then room and `others_first`.
    // RwLock::acquire's shape plus the contract's two numbers: kept flat so the glue
    // calls every lock type alike.
    #[allow(clippy::too_many_arguments)]
    pub fn acquire(
        &mut self,
        owner: &[u8],
        limit: u64,
        permits: u64,
        ttl: Millis,
        now: Millis,
        clock: &mut TokenClock,
        others_first: bool,
    ) -> Result<Acquire, SemError> {
        if permits > limit {
            return Err(SemError::PermitsExceedLimit);
        }
        self.end_over(now);
        let bound = !self.is_empty() || others_first;
        if bound && limit != self.limit {
            return Err(SemError::LimitMismatch(self.limit));
        }
        if let Some(held) = self.get(owner).copied() {
            if held.permits != permits {
                return Err(SemError::OwnerHolds(held.permits));
            }
            // Reentry is granted whoever waits: refusing it would deadlock the holder.
            let hold = Hold { holds: super::one_more(held.holds), deadline: now + ttl, ..held };
            self.set(owner, Some(hold));
            return Ok(Acquire::Reentered(held.token));
        }
        // Unbound, the semaphore is empty and the caller's limit is all the room there is;
        // bound, the two limits are equal.
        if others_first || self.held + u128::from(permits) > u128::from(limit) {
            return Ok(Acquire::Busy);
        }
        let token = clock.issue(now, 0)?;
        self.limit = limit;
        self.set(owner, Some(Hold { permits, token, deadline: now + ttl, holds: 1 }));
        Ok(Acquire::Granted(token))
    }

    pub fn release(&mut self, owner: &[u8], now: Millis) -> Release {
        self.end_over(now);
        match self.get(owner).copied() {
            None => Release::NotHeld,
            Some(h) if h.holds > 1 => {
                self.set(owner, Some(Hold { holds: h.holds - 1, ..h }));
                Release::StillHeld
            }
            Some(_) => {
                self.set(owner, None);
                Release::Dropped
            }
        }
    }

    /// Gives `owner`'s hold the lease `now + ttl`. False when it holds nothing.
    pub fn extend(&mut self, owner: &[u8], ttl: Millis, now: Millis) -> bool {
        self.end_over(now);
        match self.get(owner).copied() {
            Some(h) => {
                self.set(owner, Some(Hold { deadline: now + ttl, ..h }));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_790_000_000_000;

    fn granted(r: Result<Acquire, SemError>) -> Token {
        match r {
            Ok(Acquire::Granted(t)) => t,
            other => panic!("expected a fresh grant, got {other:?}"),
        }
    }

    fn limit_three() -> (Semaphore, TokenClock) {
        (Semaphore::with_limit(3), TokenClock::default())
    }

    #[test]
    fn permits_are_granted_up_to_the_limit() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        assert_eq!(s.available(T0), 1);
        assert_eq!(s.acquire(b"b", 3, 2, 100, T0, &mut c, false), Ok(Acquire::Busy));
        granted(s.acquire(b"b", 3, 1, 100, T0, &mut c, false));
        assert_eq!(s.available(T0), 0);
        assert_eq!(s.acquire(b"c", 3, 1, 100, T0, &mut c, false), Ok(Acquire::Busy));
        assert!(s.consistent());
    }

    #[test]
    fn each_holder_has_its_own_token_and_lease() {
        let (mut s, mut c) = limit_three();
        let a = granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        let b = granted(s.acquire(b"b", 3, 1, 300, T0, &mut c, false));
        assert!(b > a);
        let h = s.get(b"b").unwrap();
        assert_eq!((h.permits, h.token, h.deadline, h.holds), (1, b, T0 + 300, 1));
        assert_eq!(h.ttl_left(T0 + 50), 250);
        assert_eq!(s.earliest_deadline(), Some(T0 + 100));
    }

    #[test]
    fn an_unbound_semaphore_takes_the_callers_limit() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 5, 4, 100, T0, &mut c, false));
        assert_eq!(s.limit(), 5);
        assert_eq!(s.available(T0), 1);
        // Once the holders are gone (here: their lease), the next caller rebinds it.
        granted(s.acquire(b"b", 2, 2, 100, T0 + 100, &mut c, false));
        assert_eq!(s.limit(), 2);
    }

    #[test]
    fn another_limit_while_held_is_refused_and_changes_nothing() {
        let (mut s, mut c) = limit_three();
        let t = granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        s.take_changes();
        let before = s.clone();
        assert_eq!(s.acquire(b"b", 4, 1, 100, T0, &mut c, false), Err(SemError::LimitMismatch(3)));
        // The holder itself too: a mismatch wins over reentry.
        assert_eq!(s.acquire(b"a", 4, 1, 100, T0, &mut c, false), Err(SemError::LimitMismatch(3)));
        assert_eq!(s, before);
        assert_eq!(c.floor(), t, "no token issued");
    }

    #[test]
    fn leases_that_end_first_unbind_the_limit() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        granted(s.acquire(b"b", 4, 4, 100, T0 + 100, &mut c, false));
        assert!(s.get(b"a").is_none());
        assert_eq!(s.take_changes(), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn a_semaphore_kept_for_waiters_keeps_its_limit() {
        let mut c = TokenClock::default();
        let mut s = Semaphore::with_limit(3);
        assert_eq!(s.acquire(b"b", 4, 1, 100, T0, &mut c, true), Err(SemError::LimitMismatch(3)));
        assert_eq!(s.acquire(b"b", 3, 1, 100, T0, &mut c, true), Ok(Acquire::Busy));
        assert_eq!(s.limit(), 3);
        assert!(s.take_changes().is_empty());
    }

    #[test]
    fn reentry_keeps_the_token_counts_holds_and_resets_the_lease_even_when_others_wait() {
        let (mut s, mut c) = limit_three();
        let t = granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        assert_eq!(s.acquire(b"a", 3, 2, 500, T0 + 50, &mut c, true), Ok(Acquire::Reentered(t)));
        let h = s.get(b"a").unwrap();
        assert_eq!((h.permits, h.holds, h.deadline), (2, 2, T0 + 550));
        assert_eq!(s.available(T0 + 50), 1, "reentry takes no more permits");
        // Reset, not max: a shorter ttl shortens the lease.
        s.acquire(b"a", 3, 2, 10, T0 + 60, &mut c, false).unwrap();
        assert_eq!(s.earliest_deadline(), Some(T0 + 70));
        assert_eq!(c.floor(), t, "reentry issues no token");
    }

    #[test]
    fn reentry_with_other_permits_is_refused() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        let before = s.clone();
        assert_eq!(s.acquire(b"a", 3, 1, 100, T0, &mut c, false), Err(SemError::OwnerHolds(2)));
        assert_eq!(s.acquire(b"a", 3, 3, 100, T0, &mut c, true), Err(SemError::OwnerHolds(2)));
        assert_eq!(s, before);
    }

    #[test]
    fn permits_above_the_limit_are_refused_before_anything_changes() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        s.take_changes();
        let before = s.clone();
        // Not even the over lease ends: it is an argument error.
        assert_eq!(s.acquire(b"b", 3, 4, 100, T0 + 100, &mut c, false), Err(SemError::PermitsExceedLimit));
        assert_eq!(s.acquire(b"a", 9, 10, 100, T0, &mut c, true), Err(SemError::PermitsExceedLimit));
        assert_eq!(s, before);
        // Up to the limit is fine, even on an empty semaphore.
        granted(Semaphore::with_limit(1).acquire(b"b", 7, 7, 100, T0, &mut c, false));
    }

    #[test]
    fn later_arrivals_wait_behind_earlier_waiters() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        let floor = c.floor();
        // A waiter for 2 permits queued first; 1 is free but goes to nobody else.
        assert_eq!(s.acquire(b"big", 3, 2, 100, T0, &mut c, false), Ok(Acquire::Busy));
        assert_eq!(s.acquire(b"small", 3, 1, 100, T0, &mut c, true), Ok(Acquire::Busy));
        assert_eq!(s.release(b"a", T0), Release::Dropped);
        // Still queued behind "big": served in arrival order by the glue.
        assert_eq!(s.acquire(b"small", 3, 1, 100, T0, &mut c, true), Ok(Acquire::Busy));
        assert_eq!(c.floor(), floor, "a refused acquire issues no token");
        let big = granted(s.acquire(b"big", 3, 2, 100, T0, &mut c, false));
        let small = granted(s.acquire(b"small", 3, 1, 100, T0, &mut c, false));
        assert!(small > big);
    }

    #[test]
    fn leases_end_at_their_deadline_and_return_their_permits() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        granted(s.acquire(b"b", 3, 1, 200, T0, &mut c, false));
        assert_eq!(s.available(T0 + 99), 0);
        // Over but not yet ended (a replica): free all the same.
        assert_eq!(s.available(T0 + 100), 2);
        assert_eq!(s.live(T0 + 100).map(|(o, _)| o).collect::<Vec<_>>(), vec![b"b"]);
        assert_eq!(s.stored().count(), 2);
        assert!(!s.end_over(T0 + 99));
        assert!(s.end_over(T0 + 100));
        assert_eq!((s.len(), s.earliest_deadline()), (1, Some(T0 + 200)));
        assert!(s.end_over(T0 + 250));
        assert!(s.is_empty());
        assert_eq!((s.available(T0 + 250), s.earliest_deadline()), (3, None));
    }

    #[test]
    fn an_over_lease_is_not_released_extended_or_reentered() {
        let (mut s, mut c) = limit_three();
        let t = granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        assert_eq!(s.release(b"a", T0 + 100), Release::NotHeld);
        granted(s.acquire(b"a", 3, 1, 100, T0 + 200, &mut c, false));
        assert!(!s.extend(b"a", 100, T0 + 300));
        // Coming back after the lease ended is a fresh grant with a larger token.
        let t2 = granted(s.acquire(b"a", 3, 1, 100, T0 + 400, &mut c, false));
        assert!(t2 > t);
    }

    #[test]
    fn extend_resets_the_lease_of_a_holder_only() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        assert!(!s.extend(b"b", 1000, T0));
        assert!(s.extend(b"a", 1000, T0 + 10));
        assert_eq!(s.get(b"a").unwrap().deadline, T0 + 1010);
        assert_eq!(s.earliest_deadline(), Some(T0 + 1010));
        assert!(s.extend(b"a", 5, T0 + 20));
        assert_eq!(s.earliest_deadline(), Some(T0 + 25));
    }

    #[test]
    fn release_counts_down_holds_and_returns_the_permits_at_zero() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        s.acquire(b"a", 3, 2, 100, T0, &mut c, false).unwrap();
        assert_eq!(s.release(b"b", T0), Release::NotHeld);
        assert_eq!(s.release(b"a", T0), Release::StillHeld);
        assert_eq!(s.available(T0), 1);
        assert_eq!(s.release(b"a", T0), Release::Dropped);
        assert_eq!(s.available(T0), 3);
        assert!(s.is_empty());
        assert_eq!(s.release(b"a", T0), Release::NotHeld);
    }

    #[test]
    fn changes_name_each_touched_owner_once() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"b", 3, 1, 100, T0, &mut c, false));
        s.acquire(b"b", 3, 1, 100, T0, &mut c, false).unwrap();
        granted(s.acquire(b"a", 3, 1, 100, T0, &mut c, false));
        s.extend(b"a", 50, T0);
        assert_eq!(s.take_changes(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(s.take_changes().is_empty());
        // Busy, refused and not-held calls touch nothing.
        s.acquire(b"c", 3, 2, 100, T0, &mut c, false).unwrap();
        s.acquire(b"c", 4, 1, 100, T0, &mut c, false).unwrap_err();
        s.release(b"c", T0);
        assert!(s.take_changes().is_empty());
        // Ending a lease is a change too.
        s.end_over(T0 + 50);
        assert_eq!(s.take_changes(), vec![b"a".to_vec()]);
    }

    #[test]
    fn set_and_stored_round_trip() {
        let (mut s, mut c) = limit_three();
        granted(s.acquire(b"a", 3, 2, 100, T0, &mut c, false));
        s.acquire(b"a", 3, 2, 300, T0, &mut c, false).unwrap();
        granted(s.acquire(b"b", 3, 1, 200, T0, &mut c, false));
        let mut copy = Semaphore::with_limit(s.limit());
        for (owner, hold) in s.stored() {
            copy.set(owner, Some(*hold));
        }
        assert_eq!(copy.take_changes(), vec![b"a".to_vec(), b"b".to_vec()]);
        s.take_changes();
        assert_eq!(copy, s);
        assert!(copy.consistent());
        assert_eq!((copy.available(T0), copy.earliest_deadline()), (0, Some(T0 + 200)));
        // None removes, and the permits come back.
        copy.set(b"a", None);
        assert_eq!((copy.len(), copy.available(T0)), (1, 2));
    }

    #[test]
    fn consistent_rejects_impossible_loaded_state() {
        let hold = |permits, holds| Some(Hold { permits, token: 1, deadline: T0, holds });
        let loaded = |limit, holds: &[(&[u8], Option<Hold>)]| {
            let mut s = Semaphore::with_limit(limit);
            for (owner, hold) in holds {
                s.set(owner, *hold);
            }
            s.consistent()
        };
        assert!(loaded(3, &[]));
        assert!(loaded(3, &[(b"a", hold(2, 1)), (b"b", hold(1, 7))]));
        assert!(loaded(MAX_LIMIT, &[(b"a", hold(MAX_LIMIT, 1))]));
        assert!(!loaded(0, &[]));
        assert!(!loaded(MAX_LIMIT + 1, &[]));
        assert!(!loaded(3, &[(b"a", hold(2, 1)), (b"b", hold(2, 1))]), "over the limit");
        assert!(!loaded(3, &[(b"a", hold(0, 1))]), "no permits");
        assert!(!loaded(3, &[(b"a", hold(4, 1))]), "more than the limit");
        assert!(!loaded(3, &[(b"a", hold(1, 0))]), "no holds");
        assert!(!loaded(3, &[(b"a", hold(u64::MAX, 1)), (b"b", hold(u64::MAX, 1))]), "a sum past u64");
        let mut s = Semaphore::with_limit(3);
        s.set(b"a", hold(3, 1));
        s.set_limit(2);
        assert!(!s.consistent());
    }

    #[test]
    fn running_out_of_tokens_grants_nothing() {
        let mut c = TokenClock::default();
        while c.issue(Millis::MAX, 0).is_ok() {}
        let mut s = Semaphore::with_limit(3);
        assert_eq!(s.acquire(b"a", 5, 1, 100, T0, &mut c, false), Err(SemError::Tokens(TokensExhausted)));
        assert_eq!(s, Semaphore::with_limit(3), "no hold and the limit not taken");
    }

    #[test]
    fn thousands_of_holders_end_by_deadline_order() {
        let mut c = TokenClock::default();
        let mut s = Semaphore::with_limit(10_000);
        for i in 0..5000 {
            granted(s.acquire(format!("h{i}").as_bytes(), 10_000, 2, 1 + (i % 100), T0, &mut c, false));
        }
        assert_eq!((s.available(T0), s.earliest_deadline()), (0, Some(T0 + 1)));
        assert_eq!(s.available(T0 + 50), 2 * 50 * 50);
        s.end_over(T0 + 50);
        assert_eq!(s.len(), 5000 - 50 * 50);
        assert_eq!(s.earliest_deadline(), Some(T0 + 51));
    }
}

/// A model-based test: random operations and clock steps against the state machine
/// plus a FIFO queue served the way the glue serves it, checked against a reference
/// model and the semaphore's invariants after every step.
#[cfg(test)]
mod model {
    use std::collections::{BTreeMap, HashMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    const T0: Millis = 1_790_000_000_000;
    const OWNERS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

    #[derive(Debug, Clone, Copy)]
    struct Want {
        owner: usize,
        limit: u64,
        permits: u64,
        ttl: Millis,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire { want: Want, wait: bool },
        Release(usize),
        Extend { owner: usize, ttl: Millis },
        /// The clock moves; `end` says whether the timer ends the over leases and serves
        /// the waiters. Without it (a late timer) over leases stay stored and waiters
        /// wait on room nobody holds until the next operation: a newcomer then finds
        /// an empty semaphore that is bound all the same.
        Advance { ms: Millis, end: bool },
        /// A queued waiter times out or disconnects.
        Leave(usize),
        /// Save and load, or a full resync: the stored state rebuilt with `set`.
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Mostly one limit, so that grants and waits happen, now and then another.
        let limit = prop_oneof![6 => Just(4u64), 1 => Just(2u64), 1 => Just(5u64)];
        let want = (0..4usize, limit, 1..=5u64, 1..60i64)
            .prop_map(|(owner, limit, permits, ttl)| Want { owner, limit, permits, ttl });
        prop_oneof![
            5 => (want, any::<bool>()).prop_map(|(want, wait)| Op::Acquire { want, wait }),
            3 => (0..4usize).prop_map(Op::Release),
            1 => (0..4usize, 1..60i64).prop_map(|(owner, ttl)| Op::Extend { owner, ttl }),
            2 => (0..40i64, any::<bool>()).prop_map(|(ms, end)| Op::Advance { ms, end }),
            1 => (0..8usize).prop_map(Op::Leave),
            1 => Just(Op::Reload),
        ]
    }

    /// The reference: a plain map of live holds, scanned for every answer.
    #[derive(Debug)]
    struct Model {
        limit: u64,
        /// owner -> (permits, token, holds, deadline)
        holds: HashMap<usize, (u64, Token, u64, Millis)>,
    }

    /// What the reference expects of an acquire; a grant's token is the state machine's
    /// to choose, so it is checked (fresh, increasing) rather than predicted.
    #[derive(Debug, PartialEq)]
    enum Expect {
        Grant,
        Reenter(Token),
        Busy,
        Fail(SemError),
    }

    impl Model {
        fn expire(&mut self, now: Millis) {
            self.holds.retain(|_, h| now < h.3);
        }

        fn held(&self) -> u64 {
            self.holds.values().map(|h| h.0).sum()
        }

        fn expect(&self, w: Want, others_first: bool) -> Expect {
            if w.permits > w.limit {
                return Expect::Fail(SemError::PermitsExceedLimit);
            }
            if (!self.holds.is_empty() || others_first) && w.limit != self.limit {
                return Expect::Fail(SemError::LimitMismatch(self.limit));
            }
            match self.holds.get(&w.owner) {
                Some(h) if h.0 == w.permits => Expect::Reenter(h.1),
                Some(h) => Expect::Fail(SemError::OwnerHolds(h.0)),
                None if others_first || self.held() + w.permits > w.limit => Expect::Busy,
                None => Expect::Grant,
            }
        }
    }

    struct Sim {
        sem: Semaphore,
        clock: TokenClock,
        now: Millis,
        queue: VecDeque<Want>,
        model: Model,
        last_fresh: Token,
    }

    impl Sim {
        /// Runs one acquire on both sides and checks that they agree. Returns whether the
        /// caller is done (granted or refused), as opposed to busy.
        fn acquire(&mut self, w: Want, others_first: bool) -> bool {
            let r = self.sem.acquire(OWNERS[w.owner], w.limit, w.permits, w.ttl, self.now, &mut self.clock, others_first);
            let expected = self.model.expect(w, others_first);
            let deadline = self.now + w.ttl;
            match (r, expected) {
                (Ok(Acquire::Granted(t)), Expect::Grant) => {
                    assert!(t > self.last_fresh, "token {t} not above {}", self.last_fresh);
                    self.last_fresh = t;
                    self.model.limit = w.limit;
                    self.model.holds.insert(w.owner, (w.permits, t, 1, deadline));
                    true
                }
                (Ok(Acquire::Reentered(t)), Expect::Reenter(held)) => {
                    assert_eq!(t, held, "reentry returns the held token");
                    let h = self.model.holds.get_mut(&w.owner).unwrap();
                    h.2 += 1;
                    h.3 = deadline;
                    true
                }
                (Ok(Acquire::Busy), Expect::Busy) => false,
                (Err(e), Expect::Fail(f)) if e == f => true,
                (r, e) => panic!("{w:?} others_first={others_first}: got {r:?}, model expects {e:?}"),
            }
        }

        /// Grants from the front while the front can be granted, as the glue does when
        /// Redis retries blocked clients in order. A waiter refused with an error (its
        /// owner got a hold with other permits meanwhile) is answered and leaves.
        fn serve(&mut self) {
            while let Some(&w) = self.queue.front() {
                if !self.acquire(w, false) {
                    break;
                }
                self.queue.pop_front();
            }
        }

        fn step(&mut self, op: Op) {
            let served = !matches!(op, Op::Advance { end: false, .. });
            let before: BTreeMap<Vec<u8>, Hold> = self.sem.stored().map(|(o, h)| (o.to_vec(), *h)).collect();
            match op {
                Op::Acquire { want, wait } => {
                    let others_first = !self.queue.is_empty();
                    if !self.acquire(want, others_first) && wait {
                        self.queue.push_back(want);
                    }
                }
                Op::Release(owner) => {
                    let r = self.sem.release(OWNERS[owner], self.now);
                    match (r, self.model.holds.get_mut(&owner)) {
                        (Release::NotHeld, None) => {}
                        (Release::StillHeld, Some(h)) if h.2 > 1 => h.2 -= 1,
                        (Release::Dropped, Some(h)) if h.2 == 1 => {
                            self.model.holds.remove(&owner);
                        }
                        (r, h) => panic!("release {r:?} against model {h:?}"),
                    }
                }
                Op::Extend { owner, ttl } => {
                    let r = self.sem.extend(OWNERS[owner], ttl, self.now);
                    let h = self.model.holds.get_mut(&owner);
                    assert_eq!(r, h.is_some());
                    if let Some(h) = h {
                        h.3 = self.now + ttl;
                    }
                }
                Op::Advance { ms, end } => {
                    self.now += ms;
                    if end {
                        self.sem.end_over(self.now);
                    }
                    // Time moves only here, so the model never keeps an over lease.
                    self.model.expire(self.now);
                }
                Op::Leave(i) => {
                    if i < self.queue.len() {
                        self.queue.remove(i);
                    }
                }
                Op::Reload => {
                    let mut loaded = Semaphore::with_limit(self.sem.limit());
                    for (owner, hold) in self.sem.stored() {
                        loaded.set(owner, Some(*hold));
                    }
                    assert!(loaded.consistent());
                    loaded.take_changes();
                    self.sem.take_changes();
                    assert_eq!(loaded, self.sem);
                    self.sem = loaded;
                }
            }
            if served {
                self.serve();
            }
            self.check(&before, served);
        }

        fn check(&mut self, before: &BTreeMap<Vec<u8>, Hold>, served: bool) {
            let now = self.now;
            assert!(self.sem.consistent(), "{:?}", self.sem);
            // Capacity: live holders never hold more than the limit.
            let live: Vec<_> = self.sem.live(now).collect();
            let live_permits: u64 = live.iter().map(|(_, h)| h.permits).sum();
            assert!(live_permits <= self.sem.limit(), "{live:?} over {}", self.sem.limit());
            assert_eq!(self.sem.available(now), self.sem.limit() - live_permits);
            // The semaphore agrees with the model on every live hold and on the limit.
            assert_eq!(live.len(), self.model.holds.len(), "{live:?} vs {:?}", self.model);
            for (owner, (permits, token, holds, deadline)) in &self.model.holds {
                let h = self.sem.get(OWNERS[*owner]).expect("held in the model");
                assert_eq!((h.permits, h.token, h.holds, h.deadline), (*permits, *token, *holds, *deadline));
            }
            assert_eq!(self.sem.limit(), self.model.limit);
            // Waiters all agreed to the bound limit, and once served the front one does
            // not fit: had it fitted, it would have been granted (no lost wake-up).
            assert!(self.queue.iter().all(|w| w.limit == self.sem.limit()), "{:?}", self.queue);
            if let Some(front) = self.queue.front().filter(|_| served) {
                assert!(front.permits > self.sem.available(now), "{front:?} fits");
            }
            // The deadline index agrees with the holds.
            let earliest = self.sem.stored().map(|(_, h)| h.deadline).min();
            assert_eq!(self.sem.earliest_deadline(), earliest);
            let mut indexed: Vec<_> = self.sem.by_deadline.iter().map(|(d, o)| (o.clone(), *d)).collect();
            indexed.sort_unstable();
            let stored: Vec<_> = self.sem.stored().map(|(o, h)| (o.to_vec(), h.deadline)).collect();
            assert_eq!(indexed, stored);
            // Every hold that changed is in the change log, each once.
            let after: BTreeMap<Vec<u8>, Hold> = self.sem.stored().map(|(o, h)| (o.to_vec(), *h)).collect();
            let changes = self.sem.take_changes();
            for owner in before.keys().chain(after.keys()) {
                if before.get(owner) != after.get(owner) {
                    assert!(changes.contains(owner), "{owner:?} changed but not logged: {changes:?}");
                }
            }
            assert!(changes.windows(2).all(|w| w[0] < w[1]), "{changes:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn random_histories_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let mut sim = Sim {
                sem: Semaphore::with_limit(4),
                clock: TokenClock::default(),
                now: T0,
                queue: VecDeque::new(),
                model: Model { limit: 4, holds: HashMap::new() },
                last_fresh: 0,
            };
            for op in ops {
                sim.step(op);
            }
        }
    }
}
