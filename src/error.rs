//! Every error a fencelock command can answer, in one place.

use std::fmt;

use redis_module::RedisError;

use crate::logic::fence::Stale;
use crate::logic::semaphore::{SemError, MAX_LIMIT};
use crate::logic::tokens::TokensExhausted;

#[derive(Debug)]
pub enum Error {
    WrongArity,
    WrongType,
    Syntax,
    /// The ttl is not an integer from 1 to the configured maximum (`fencelock.max-ttl`).
    BadTtl(i64),
    BadTimeout,
    EmptyOwner,
    BadToken,
    BadLimit,
    BadPermits,
    Stale(Stale),
    /// A semaphore is bound to another limit.
    LimitMismatch(u64),
    PermitsExceedLimit,
    /// The owner holds this many permits of a semaphore, and asked for another number.
    OwnerHolds(u64),
    TokensExhausted,
    /// `fencelock.max-waiters` clients already wait on the key.
    TooManyWaiters(usize),
    /// An internal (effect) command sent by an ordinary client.
    InternalOnly(String),
    /// A command `FENCE.CALL` does not run behind a fence (blocking, transactions,
    /// scripts, admin, pub/sub, itself).
    CannotRun(String),
    /// A panic caught at the command boundary.
    Internal(String),
    Redis(RedisError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WrongArity => write!(f, "ERR wrong number of arguments"),
            Error::WrongType => {
                write!(f, "WRONGTYPE Operation against a key holding the wrong kind of value")
            }
            Error::Syntax => write!(f, "ERR syntax error"),
            Error::BadTtl(max) => write!(f, "ERR ttl must be an integer between 1 and {max}"),
            Error::TooManyWaiters(max) => write!(f, "ERR too many clients wait on this key (fencelock.max-waiters is {max})"),
            Error::BadTimeout => write!(f, "ERR timeout must be a non-negative integer"),
            Error::EmptyOwner => write!(f, "ERR owner must not be empty"),
            Error::BadToken => write!(f, "ERR token must be a positive integer"),
            Error::BadLimit => write!(f, "ERR limit must be an integer between 1 and {MAX_LIMIT}"),
            Error::BadPermits => write!(f, "ERR permits must be a positive integer"),
            Error::LimitMismatch(limit) => write!(f, "ERR limit mismatch: semaphore has limit {limit}"),
            Error::PermitsExceedLimit => write!(f, "ERR permits exceed the limit"),
            Error::OwnerHolds(n) => write!(f, "ERR owner holds {n} permits"),
            Error::Stale(s) => write!(f, "STALE token {} is older than {}", s.token, s.highest),
            Error::TokensExhausted => write!(f, "ERR token space exhausted for this key"),
            Error::CannotRun(name) => write!(f, "ERR FENCE.CALL cannot run {name}"),
            Error::InternalOnly(cmd) => {
                write!(f, "ERR {cmd} is internal: only replication and AOF loading may send it")
            }
            Error::Internal(what) => write!(f, "ERR fencelock internal error: {what}"),
            Error::Redis(e) => write!(f, "{e}"),
        }
    }
}

impl From<Stale> for Error {
    fn from(s: Stale) -> Self {
        Error::Stale(s)
    }
}

impl From<SemError> for Error {
    fn from(e: SemError) -> Self {
        match e {
            SemError::LimitMismatch(limit) => Error::LimitMismatch(limit),
            SemError::PermitsExceedLimit => Error::PermitsExceedLimit,
            SemError::OwnerHolds(n) => Error::OwnerHolds(n),
            SemError::Tokens(_) => Error::TokensExhausted,
        }
    }
}

impl From<TokensExhausted> for Error {
    fn from(_: TokensExhausted) -> Self {
        Error::TokensExhausted
    }
}

impl From<RedisError> for Error {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::WrongArity => Error::WrongArity,
            RedisError::WrongType => Error::WrongType,
            other => Error::Redis(other),
        }
    }
}

impl From<Error> for RedisError {
    fn from(e: Error) -> Self {
        match e {
            // Redis's own text, naming the command.
            Error::WrongArity => RedisError::WrongArity,
            Error::Redis(e) => e,
            other => RedisError::String(other.to_string()),
        }
    }
}
