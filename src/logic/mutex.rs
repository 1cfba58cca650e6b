//! The mutex: one holder at a time, reentrant, with a lease.
//!
//! A lease is over once `now >= deadline`. An over lease counts as free in every
//! operation, whether or not the server has ended it yet, so a late timer can never
//! extend a lease.

use super::owner::Owner;
use super::tokens::{TokenClock, TokensExhausted};
use super::{Millis, Token};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub owner: Owner,
    pub token: Token,
    /// Absolute, on the master's wall clock: saved, loaded and replicated as is.
    pub deadline: Millis,
    /// Reentrant hold count, at least 1.
    pub holds: u64,
}

impl Holder {
    pub fn ttl_left(&self, now: Millis) -> Millis {
        (self.deadline - now).max(0)
    }

    fn is_live(&self, now: Millis) -> bool {
        now < self.deadline
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutex {
    holder: Option<Holder>,
    /// What changed since `take_changes`, for the glue to store and propagate.
    changes: Changes,
}

/// What an operation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The holder, its lease or its hold count changed.
    pub changed: bool,
    /// A holder went (released to zero, or its lease ended): a waiter may get in.
    pub released: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// A fresh grant with a new token.
    Granted(Token),
    /// The owner already held it: hold count up, lease reset, same token.
    Reentered(Token),
    /// Held by someone else, or others wait ahead of this caller.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The caller did not hold the lock (never, someone else, or lease over).
    NotHeld,
    /// One hold fewer; the caller still holds the lock.
    StillHeld,
    /// The last hold is gone: the lock is free.
    Freed,
}

impl Mutex {
    /// A mutex in exactly the given state, as loaded or replicated.
    pub fn with_holder(holder: Holder) -> Self {
        Mutex { holder: Some(holder), changes: Changes::default() }
    }

    /// The changes since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    fn changed(&mut self) {
        self.changes.changed = true;
    }

    fn freed(&mut self) {
        self.holder = None;
        self.changes = Changes { changed: true, released: true };
    }

    /// The holder whose lease is not over at `now`.
    pub fn holder(&self, now: Millis) -> Option<&Holder> {
        self.holder.as_ref().filter(|h| h.is_live(now))
    }

    /// The stored holder, even one whose lease is over but not yet ended.
    pub fn stored_holder(&self) -> Option<&Holder> {
        self.holder.as_ref()
    }

    /// The deadline the expiry index must know about.
    pub fn deadline(&self) -> Option<Millis> {
        self.holder.as_ref().map(|h| h.deadline)
    }

    /// Ends the lease if it is over. True when it did.
    pub fn end_if_over(&mut self, now: Millis) -> bool {
        if self.holder.as_ref().is_some_and(|h| !h.is_live(now)) {
            self.freed();
            return true;
        }
        false
    }

    /// Acquire for `owner` with a lease of `ttl` ms. `others_first` says that waiters
    /// queued earlier must be served before a newcomer could take a free lock.
    pub fn acquire(
        &mut self,
        owner: &[u8],
        ttl: Millis,
        now: Millis,
        clock: &mut TokenClock,
        others_first: bool,
    ) -> Result<Acquire, TokensExhausted> {
        self.end_if_over(now);
        match &mut self.holder {
            Some(h) if *h.owner == *owner => {
                h.holds = super::one_more(h.holds);
                h.deadline = now + ttl;
                let token = h.token;
                self.changed();
                Ok(Acquire::Reentered(token))
            }
            Some(_) => Ok(Acquire::Busy),
            None if others_first => Ok(Acquire::Busy),
            None => {
                let token = clock.issue(now, 0)?;
                self.holder = Some(Holder {
                    owner: Owner::new(owner),
                    token,
                    deadline: now + ttl,
                    holds: 1,
                });
                self.changed();
                Ok(Acquire::Granted(token))
            }
        }
    }

    pub fn release(&mut self, owner: &[u8], now: Millis) -> Release {
        self.end_if_over(now);
        match &mut self.holder {
            Some(h) if *h.owner == *owner => {
                if h.holds > 1 {
                    h.holds -= 1;
                    self.changed();
                    Release::StillHeld
                } else {
                    self.freed();
                    Release::Freed
                }
            }
            _ => Release::NotHeld,
        }
    }

    /// Resets the lease of `owner` to `now + ttl`. False when `owner` does not hold it.
    pub fn extend(&mut self, owner: &[u8], ttl: Millis, now: Millis) -> bool {
        self.end_if_over(now);
        match &mut self.holder {
            Some(h) if *h.owner == *owner => {
                h.deadline = now + ttl;
                self.changed();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_790_000_000_000;

    fn granted(r: Result<Acquire, TokensExhausted>) -> Token {
        match r.unwrap() {
            Acquire::Granted(t) => t,
            other => panic!("expected a fresh grant, got {other:?}"),
        }
    }

    #[test]
    fn a_free_lock_is_granted_with_a_lease() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        let t = granted(m.acquire(b"a", 100, T0, &mut clock, false));
        let h = m.holder(T0).unwrap();
        assert_eq!((&*h.owner, h.token, h.deadline, h.holds), (&b"a"[..], t, T0 + 100, 1));
        assert_eq!(h.ttl_left(T0 + 30), 70);
    }

    #[test]
    fn another_owner_is_refused_while_the_lease_lasts() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        granted(m.acquire(b"a", 100, T0, &mut clock, false));
        assert_eq!(m.acquire(b"b", 100, T0 + 99, &mut clock, false), Ok(Acquire::Busy));
        assert_eq!(&*m.holder(T0 + 99).unwrap().owner, b"a");
    }

    #[test]
    fn reentry_keeps_the_token_counts_holds_and_resets_the_lease() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        let t = granted(m.acquire(b"a", 100, T0, &mut clock, false));
        assert_eq!(m.acquire(b"a", 500, T0 + 50, &mut clock, false), Ok(Acquire::Reentered(t)));
        let h = m.holder(T0 + 50).unwrap();
        assert_eq!((h.holds, h.deadline), (2, T0 + 550));
        // A shorter ttl shortens the lease: reset, not max.
        m.acquire(b"a", 10, T0 + 60, &mut clock, false).unwrap();
        assert_eq!(m.holder(T0 + 60).unwrap().deadline, T0 + 70);
    }

    #[test]
    fn release_counts_down_holds_and_frees_at_zero() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        granted(m.acquire(b"a", 100, T0, &mut clock, false));
        m.acquire(b"a", 100, T0, &mut clock, false).unwrap();
        assert_eq!(m.release(b"a", T0 + 1), Release::StillHeld);
        assert_eq!(m.release(b"a", T0 + 2), Release::Freed);
        assert_eq!(m.holder(T0 + 2), None);
        assert_eq!(m.release(b"a", T0 + 3), Release::NotHeld);
    }

    #[test]
    fn only_the_owner_releases_or_extends() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        granted(m.acquire(b"a", 100, T0, &mut clock, false));
        assert_eq!(m.release(b"b", T0), Release::NotHeld);
        assert!(!m.extend(b"b", 1000, T0));
        assert_eq!(m.holder(T0).unwrap().deadline, T0 + 100);
        assert!(m.extend(b"a", 1000, T0 + 10));
        assert_eq!(m.holder(T0).unwrap().deadline, T0 + 1010);
    }

    #[test]
    fn the_lease_ends_at_its_deadline_exactly() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        granted(m.acquire(b"a", 100, T0, &mut clock, false));
        assert!(m.holder(T0 + 99).is_some());
        assert!(m.holder(T0 + 100).is_none());
        assert!(!m.end_if_over(T0 + 99));
        assert!(m.end_if_over(T0 + 100));
        assert_eq!(m.stored_holder(), None);
    }

    #[test]
    fn an_over_lease_cannot_be_released_extended_or_reentered() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        let t = granted(m.acquire(b"a", 100, T0, &mut clock, false));
        assert_eq!(m.release(b"a", T0 + 100), Release::NotHeld);

        granted(m.acquire(b"a", 100, T0 + 200, &mut clock, false));
        assert!(!m.extend(b"a", 100, T0 + 300));

        // Coming back after the lease ended is a fresh grant with a larger token.
        let t2 = granted(m.acquire(b"a", 100, T0 + 400, &mut clock, false));
        assert!(t2 > t);
    }

    #[test]
    fn a_free_lock_goes_to_earlier_waiters_first() {
        let (mut m, mut clock) = (Mutex::default(), TokenClock::default());
        assert_eq!(m.acquire(b"a", 100, T0, &mut clock, true), Ok(Acquire::Busy));
        assert_eq!(m.holder(T0), None);
        assert_eq!(clock.floor(), 0, "a refused acquire issues no token");
    }

    #[test]
    fn tokens_grow_across_release_expiry_and_new_locks_under_the_same_name() {
        let mut clock = TokenClock::default();
        let mut last = 0;
        let mut now = T0;
        for round in 0..50 {
            // A new Mutex stands for the key deleted and created again.
            let mut m = if round % 3 == 0 { Mutex::default() } else { Mutex::with_holder(Holder {
                owner: Owner::new(b"old"), token: last, deadline: now, holds: 1 }) };
            let t = granted(m.acquire(b"a", 10, now, &mut clock, false));
            assert!(t > last, "round {round}: {t} <= {last}");
            last = t;
            if round % 2 == 0 {
                assert_eq!(m.release(b"a", now), Release::Freed);
            } else {
                now += 10; // lease ends
            }
            // The wall clock steps back now and then.
            now = if round % 7 == 0 { now - 1_000 } else { now + 1 };
        }
    }
}
