//! Argument parsing shared by the commands, in the redismodule-rs style:
//! `let mut args = args.into_iter().skip(1); let key = args.next_arg()?; ... args.done()?`.

use crate::ffi::Args;
use redis_module::{NextArg, RedisString};

use crate::error::{Error, Result};
use crate::logic::semaphore::MAX_LIMIT;
use crate::logic::{Millis, Token};
use crate::machinery::config;

/// Parses a decimal i64 the way Redis's `string2ll` does: no sign but `-`, no spaces,
/// no leading zeros, no overflow.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    // Accumulated negative, so that i64::MIN parses without overflow.
    let mut value: i64 = 0;
    for d in digits {
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if bytes[0] == b'-' {
        Some(value)
    } else {
        value.checked_neg()
    }
}

pub fn owner(arg: &RedisString) -> Result<&[u8]> {
    match arg.as_slice() {
        [] => Err(Error::EmptyOwner),
        owner => Ok(owner),
    }
}

/// A lease: 1 ms to the configured maximum (`fencelock.max-ttl`, at most 2^40).
pub fn ttl(arg: &RedisString) -> Result<Millis> {
    let max = config::max_ttl();
    parse_i64(arg.as_slice()).filter(|t| (1..=max).contains(t)).ok_or(Error::BadTtl(max))
}

/// A semaphore's `limit`: 1 to 2^31.
pub fn limit(arg: &RedisString) -> Result<u64> {
    parse_i64(arg.as_slice())
        .and_then(|l| u64::try_from(l).ok())
        .filter(|l| (1..=MAX_LIMIT).contains(l))
        .ok_or(Error::BadLimit)
}

/// `COUNT permits`: at least 1.
pub fn permits(arg: &RedisString) -> Result<u64> {
    parse_i64(arg.as_slice()).filter(|p| *p > 0).map(|p| p as u64).ok_or(Error::BadPermits)
}

pub fn token(arg: &RedisString) -> Result<Token> {
    parse_i64(arg.as_slice()).filter(|t| *t > 0).ok_or(Error::BadToken)
}

/// The optional `WAIT timeout` of the acquire commands: `None` without it,
/// `Some(0)` for "without limit".
pub fn wait_option(args: &mut impl Iterator<Item = RedisString>) -> Result<Option<Millis>> {
    let Some(option) = args.next() else {
        return Ok(None);
    };
    if !option.as_slice().eq_ignore_ascii_case(b"WAIT") {
        return Err(Error::Syntax);
    }
    let timeout = self::timeout(&args.next().ok_or(Error::Syntax)?)?;
    if args.next().is_some() {
        return Err(Error::Syntax);
    }
    Ok(Some(timeout))
}

/// The `timeout` of `WAIT timeout`, in ms: 0 is "without limit".
fn timeout(arg: &RedisString) -> Result<Millis> {
    parse_i64(arg.as_slice()).filter(|t| *t >= 0).ok_or(Error::BadTimeout)
}

/// The arguments after the command name, with arity checked by Redis's rules
/// (`exact` arguments, or up to `extra` optional ones after them).
pub fn take(args: Args, exact: usize, extra: usize) -> Result<std::iter::Skip<Args>> {
    let given = args.len().saturating_sub(1);
    if given < exact || given > exact + extra {
        return Err(Error::WrongArity);
    }
    Ok(args.into_iter().skip(1))
}

/// The arguments every lock command takes: `key owner`, then `ttl` and `[WAIT timeout]`
/// for the commands whose shape has them.
pub struct LockCall {
    pub key: RedisString,
    owner: RedisString,
    /// 0 for `Shape::KeyOwner`.
    pub ttl: Millis,
    pub wait: Option<Millis>,
}

impl LockCall {
    /// Checked non-empty when parsed.
    pub fn owner(&self) -> &[u8] {
        self.owner.as_slice()
    }
}

pub enum Shape {
    /// `key owner` (release, unlock)
    KeyOwner,
    /// `key owner ttl` (extend)
    KeyOwnerTtl,
    /// `key owner ttl [WAIT timeout]` (acquire)
    Acquire,
}

/// Parses a lock command's arguments, checking arity, then owner, ttl and WAIT in order.
pub fn lock_call(args: Args, shape: Shape) -> Result<LockCall> {
    let (exact, extra) = match shape {
        Shape::KeyOwner => (2, 0),
        Shape::KeyOwnerTtl => (3, 0),
        Shape::Acquire => (3, 2),
    };
    let mut args = take(args, exact, extra)?;
    let key = args.next_arg()?;
    let owner = args.next_arg()?;
    self::owner(&owner)?;
    let ttl = match shape {
        Shape::KeyOwner => 0,
        Shape::KeyOwnerTtl | Shape::Acquire => self::ttl(&args.next_arg()?)?,
    };
    let wait = wait_option(&mut args)?;
    Ok(LockCall { key, owner, ttl, wait })
}

/// `SEM.ACQUIRE key owner limit ttl [COUNT permits] [WAIT timeout]`, the options in
/// any order, each at most once.
pub struct SemAcquire {
    pub key: RedisString,
    owner: RedisString,
    pub limit: u64,
    pub ttl: Millis,
    pub permits: u64,
    pub wait: Option<Millis>,
}

impl SemAcquire {
    /// Checked non-empty when parsed.
    pub fn owner(&self) -> &[u8] {
        self.owner.as_slice()
    }
}

pub fn sem_acquire(args: Args) -> Result<SemAcquire> {
    let mut args = take(args, 4, 4)?;
    let key = args.next_arg()?;
    let owner = args.next_arg()?;
    self::owner(&owner)?;
    let limit = self::limit(&args.next_arg()?)?;
    let ttl = self::ttl(&args.next_arg()?)?;
    let (mut permits, mut wait) = (None, None);
    while let Some(option) = args.next() {
        let value = args.next().ok_or(Error::Syntax)?;
        let option = option.as_slice();
        if option.eq_ignore_ascii_case(b"COUNT") && permits.is_none() {
            permits = Some(self::permits(&value)?);
        } else if option.eq_ignore_ascii_case(b"WAIT") && wait.is_none() {
            wait = Some(timeout(&value)?);
        } else {
            return Err(Error::Syntax);
        }
    }
    Ok(SemAcquire { key, owner, limit, ttl, permits: permits.unwrap_or(1), wait })
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"1099511627776"), Some(1 << 40));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1e3", b"9223372036854775808", b"-9223372036854775809", b"\xff"] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }
}
