//! A fence: the highest token a resource has accepted.
//!
//! `highest` is what `FENCE.CHECK` compares against; it may come from `FENCE.NEXT` or
//! from any client's `FENCE.CHECK`. `issued` is the highest token this key issued
//! itself, the only one that may raise the server-wide token floor: a client must not
//! be able to push every key's tokens towards `i64::MAX` by checking a huge number.

use super::tokens::{TokenClock, TokensExhausted};
use super::{Millis, Token};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fence {
    pub highest: Token,
    pub issued: Token,
    /// Whether it changed since `take_changed`, for the glue to store and propagate.
    changed: bool,
}

/// The token offered to `FENCE.CHECK` is older than the fence's highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    pub token: Token,
    pub highest: Token,
}

impl Fence {
    /// A fence in exactly the given state, as loaded or replicated.
    pub fn new(highest: Token, issued: Token) -> Self {
        Fence { highest, issued, changed: false }
    }

    /// Sets the exact state (replication), recording a change.
    pub fn set(&mut self, highest: Token, issued: Token) {
        *self = Fence { highest, issued, changed: true };
    }

    /// Whether it changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// A fresh token above every token this key has seen; recorded as the highest.
    pub fn next(&mut self, now: Millis, clock: &mut TokenClock) -> Result<Token, TokensExhausted> {
        let token = clock.issue(now, self.highest)?;
        self.highest = token;
        self.issued = token;
        self.changed = true;
        Ok(token)
    }

    /// Accepts `token` when it is at least the highest seen, and records it.
    pub fn check(&mut self, token: Token) -> Result<(), Stale> {
        if token < self.highest {
            return Err(Stale { token, highest: self.highest });
        }
        if token > self.highest {
            self.highest = token;
            self.changed = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_790_000_000_000;

    #[test]
    fn next_always_grows() {
        let (mut f, mut clock) = (Fence::default(), TokenClock::default());
        let a = f.next(T0, &mut clock).unwrap();
        let b = f.next(T0, &mut clock).unwrap();
        assert!(b > a);
        assert_eq!((f.highest, f.issued), (b, b));
    }

    #[test]
    fn check_accepts_equal_and_newer_and_rejects_older() {
        let mut f = Fence::default();
        assert_eq!(f.check(10), Ok(()));
        assert_eq!(f.check(10), Ok(()));
        assert_eq!(f.check(9), Err(Stale { token: 9, highest: 10 }));
        assert_eq!(f.highest, 10, "a stale check records nothing");
        assert_eq!(f.check(11), Ok(()));
        assert_eq!(f.highest, 11);
    }

    #[test]
    fn next_goes_above_a_checked_token_without_raising_the_global_floor_by_it() {
        let (mut f, mut clock) = (Fence::default(), TokenClock::default());
        let far = crate::logic::tokens::wall_part(T0 + 1_000_000);
        f.check(far).unwrap();
        assert_eq!(clock.floor(), 0);
        assert_eq!(f.next(T0, &mut clock).unwrap(), far + 1);
    }

    #[test]
    fn a_token_issued_for_a_lock_passes_a_fresh_fence_and_an_older_one_does_not() {
        let (mut f, mut clock) = (Fence::default(), TokenClock::default());
        let old = clock.issue(T0, 0).unwrap();
        let new = clock.issue(T0 + 1, 0).unwrap();
        f.check(new).unwrap();
        assert_eq!(f.check(old), Err(Stale { token: old, highest: new }));
    }
}
