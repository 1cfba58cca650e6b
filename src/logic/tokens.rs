//! The token clock: where every fencing token comes from.
//!
//! A token is `max(floor + 1, (wall_ms - EPOCH) << 12)`, where `floor` is the highest
//! token this server has issued or learnt of (from its RDB, its AOF, or its master's
//! stream).
//!
//! - The floor alone keeps tokens from ever repeating or going back while the process
//!   lives, across every key, so a lock deleted (`DEL`, `FLUSHALL`, release) and taken
//!   again under the same name still gets a larger token.
//! - The floor is persisted (RDB aux data, and every stored token raises it on load), so
//!   a restart continues above it.
//! - The wall-clock part is what a plain counter lacks: a replica that missed its
//!   master's last grants and is promoted later than those grants (by more than the
//!   clock skew) issues a wall part above anything the old master issued, because one
//!   server never issues 4,096 tokens within a millisecond (Redis serves ~200 commands
//!   per millisecond).
//! - Counting from 2025 with 12 bits per millisecond keeps tokens below 2^53 until 2094,
//!   so they survive a round trip through a double: Lua scripts inside Redis and
//!   JavaScript clients see the exact token, and `FENCE.CHECK` compares what was issued.

use super::{Millis, Token};

/// The token space is exhausted: the next token would not fit in an i64. Only reachable
/// when a client recorded a token near `i64::MAX` with `FENCE.CHECK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokensExhausted;

#[derive(Debug, Default, Clone)]
pub struct TokenClock {
    floor: Token,
}

/// 2025-01-01T00:00:00Z: the wall-clock part counts from here.
pub const EPOCH_MS: Millis = 1_735_689_600_000;
/// Tokens per millisecond of wall clock before the counter runs ahead of it.
pub const SHIFT: u32 = 12;

/// The wall-clock part of a token; clamped so that the shift cannot overflow.
pub fn wall_part(now: Millis) -> Token {
    (now.saturating_sub(EPOCH_MS)).clamp(0, i64::MAX >> SHIFT) << SHIFT
}

/// When `token` was issued, from its wall-clock part: exact to the millisecond for a
/// token the wall clock gave (fewer than 4,096 tokens in its millisecond, as always in
/// practice); later than the truth for one the counter ran ahead to.
pub fn issued_at(token: Token) -> Millis {
    EPOCH_MS.saturating_add(token >> SHIFT)
}

/// How far ahead of the wall clock a token may be and still count as one a clock issued
/// (a master's clock ahead of ours, a clock stepped back since): 30 days.
const PLAUSIBLE_AHEAD_MS: Millis = 30 * 86_400_000;

/// True when `token` could have come from a token clock at about `now`.
pub fn plausible(token: Token, now: Millis) -> bool {
    token > 0 && token <= wall_part(now.saturating_add(PLAUSIBLE_AHEAD_MS))
}

impl TokenClock {
    /// A clock that has issued and seen nothing.
    pub const fn new() -> Self {
        TokenClock { floor: 0 }
    }

    /// The highest token issued or observed so far (0 when none).
    pub fn floor(&self) -> Token {
        self.floor
    }

    /// Learn of a token issued elsewhere (loaded, replicated): later tokens exceed it.
    /// A token far beyond any clock (see `plausible`) is ignored, so a corrupt payload
    /// cannot exhaust the token space of the whole server.
    pub fn observe(&mut self, token: Token, now: Millis) {
        if plausible(token, now) {
            self.floor = self.floor.max(token);
        }
    }

    /// A fresh token, greater than every token issued or observed so far and greater
    /// than `above` (a key's own highest token, which may come from a client).
    ///
    /// When `above` is what carries the token beyond any clock (a client recorded a huge
    /// number with `FENCE.CHECK`), the token is issued for that key but does not become
    /// the server-wide floor: one client must not push every key's tokens towards
    /// `i64::MAX` or past 2^53.
    pub fn issue(&mut self, now: Millis, above: Token) -> Result<Token, TokensExhausted> {
        let own = self.floor.checked_add(1).ok_or(TokensExhausted)?.max(wall_part(now));
        let token = own.max(above.checked_add(1).ok_or(TokensExhausted)?);
        if token == own || plausible(token, now) {
            self.floor = token;
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_790_000_000_000;

    #[test]
    fn tokens_strictly_increase_within_one_millisecond() {
        let mut clock = TokenClock::default();
        let a = clock.issue(NOW, 0).unwrap();
        let b = clock.issue(NOW, 0).unwrap();
        let c = clock.issue(NOW, 0).unwrap();
        assert_eq!(a, wall_part(NOW));
        assert_eq!((b, c), (a + 1, a + 2));
    }

    #[test]
    fn tokens_follow_the_wall_clock_forward() {
        let mut clock = TokenClock::default();
        let a = clock.issue(NOW, 0).unwrap();
        let b = clock.issue(NOW + 5, 0).unwrap();
        assert_eq!(b, wall_part(NOW + 5));
        assert!(b > a);
    }

    #[test]
    fn a_wall_clock_step_back_never_moves_tokens_back() {
        let mut clock = TokenClock::default();
        let a = clock.issue(NOW, 0).unwrap();
        let b = clock.issue(NOW - 60_000, 0).unwrap();
        assert_eq!(b, a + 1);
    }

    #[test]
    fn an_observed_token_raises_the_floor() {
        // A restart or a replica learns of tokens issued by another clock, possibly
        // one running ahead of ours.
        let mut clock = TokenClock::default();
        clock.observe(wall_part(NOW + 10_000), NOW);
        assert_eq!(clock.issue(NOW, 0).unwrap(), wall_part(NOW + 10_000) + 1);
        clock.observe(5, NOW);
        assert_eq!(clock.floor(), wall_part(NOW + 10_000) + 1);
    }

    #[test]
    fn a_promoted_replica_that_missed_grants_issues_larger_tokens() {
        // The old master issued grants the replica never saw; the promotion happens
        // later than those grants, so the wall part alone carries the replica above.
        let mut master = TokenClock::default();
        let mut replica = TokenClock::default();
        let seen = master.issue(NOW, 0).unwrap();
        replica.observe(seen, NOW);
        let mut missed = 0;
        for _ in 0..1000 {
            missed = master.issue(NOW + 1, 0).unwrap();
        }
        let after_promotion = replica.issue(NOW + 2, 0).unwrap();
        assert!(after_promotion > missed);
    }

    #[test]
    fn a_key_above_the_floor_is_respected() {
        let mut clock = TokenClock::default();
        let huge = wall_part(NOW + 1_000_000);
        assert_eq!(clock.issue(NOW, huge).unwrap(), huge + 1);
        assert!(clock.issue(NOW, 0).unwrap() > huge + 1);
    }

    #[test]
    fn the_end_of_the_token_space_is_an_error_not_a_wrap() {
        let mut clock = TokenClock::default();
        assert_eq!(clock.issue(NOW, i64::MAX), Err(TokensExhausted));
        assert_eq!(clock.issue(NOW, i64::MAX - 1).unwrap(), i64::MAX);
    }

    #[test]
    fn a_key_pushed_beyond_any_clock_does_not_drag_the_floor_along() {
        let mut clock = TokenClock::default();
        let normal = clock.issue(NOW, 0).unwrap();
        assert_eq!(clock.issue(NOW, i64::MAX - 1).unwrap(), i64::MAX);
        assert_eq!(clock.issue(NOW, 1 << 60).unwrap(), (1 << 60) + 1);
        let next = clock.issue(NOW, 0).unwrap();
        assert_eq!(next, normal + 1, "other keys go on from the clock");
        clock.observe(i64::MAX, NOW);
        assert_eq!(clock.issue(NOW, 0).unwrap(), next + 1, "an implausible loaded token is ignored");
        // An hour ahead is plausible (a master's clock ahead, a stepped clock): followed.
        let ahead = wall_part(NOW + 3_600_000);
        assert_eq!(clock.issue(NOW, ahead).unwrap(), ahead + 1);
        assert_eq!(clock.issue(NOW, 0).unwrap(), ahead + 2);
    }

    #[test]
    fn tokens_stay_exact_in_a_double_for_decades() {
        let in_2090 = EPOCH_MS + 65 * 365 * 86_400_000;
        let t = TokenClock::default().issue(in_2090, 0).unwrap();
        assert!(t < 1 << 53, "{t}");
        assert_eq!(t as f64 as i64, t);
    }

    #[test]
    fn a_clock_before_the_epoch_still_issues_positive_tokens() {
        let mut clock = TokenClock::default();
        assert_eq!(clock.issue(-5, 0).unwrap(), 1);
    }

    #[test]
    fn a_token_tells_when_it_was_issued() {
        let mut c = TokenClock::new();
        let now = EPOCH_MS + 123_456;
        let t = c.issue(now, 0).unwrap();
        assert_eq!(issued_at(t), now);
        let t2 = c.issue(now, 0).unwrap();
        assert_eq!(issued_at(t2), now, "the next token of the same millisecond");
    }
}
