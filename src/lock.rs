//! `LOCK.*`: the mutex. Parse, call the pure mutex through the store, reply.

use std::collections::BTreeMap;

use redis_module::{redisvalue::RedisValueKey, Context, NextArg, RedisString, RedisValue};

use crate::args::{self, Shape};
use crate::command;
use crate::machinery::clock::{self, now_ms};
use crate::machinery::commands::{Access, Command, ACQUIRE_ACL, ACQUIRE_ARGS, ACQUIRE_FLAGS, EXTEND_ARGS, KEY_ONLY, RELEASE_ARGS};
use crate::machinery::kind::{KindOps, Request};
use crate::machinery::announce::{self, Events};
use crate::machinery::{stats, store, waiting};
use crate::error::{Error, Result};
use crate::ffi::{self, Args};
use crate::logic::mutex::{Acquire, Mutex, Release};
use crate::logic::waiters::WaiterId;
use crate::logic::owner::Owner;
use crate::logic::{Millis, Token};
use crate::persist::lock::{KIND, MUTEX_TYPE};

pub const COMMANDS: &[Command] = &[
    Command {
        name: c"lock.acquire",
        entry: command!(acquire),
        flags: ACQUIRE_FLAGS,
        acl: ACQUIRE_ACL,
        arity: -4,
        access: Access::Update,
        summary: c"Acquires a mutex for an owner with a lease, optionally waiting server-side; returns its fencing token",
        complexity: c"O(1)",
        args: ACQUIRE_ARGS,
    },
    Command {
        name: c"lock.release",
        entry: command!(release),
        flags: c"write fast",
        acl: "write fast",
        arity: 3,
        access: Access::Delete,
        summary: c"Releases one hold of a mutex; the next waiter is granted at once",
        complexity: c"O(1)",
        args: RELEASE_ARGS,
    },
    Command {
        name: c"lock.extend",
        entry: command!(extend),
        flags: c"write fast",
        acl: "write fast",
        arity: 4,
        access: Access::Modify,
        summary: c"Resets the lease of a mutex held by the owner to ttl from now",
        complexity: c"O(1)",
        args: EXTEND_ARGS,
    },
    Command {
        name: c"lock.info",
        entry: command!(info),
        flags: c"readonly fast",
        acl: "read fast",
        arity: 2,
        access: Access::Read,
        summary: c"Returns the holder, token, lease left, hold count and waiters of a mutex",
        complexity: c"O(1)",
        args: KEY_ONLY,
    },
];

/// The keyspace events of this kind.
const EVENTS: Events = Events { acquire: c"lock.acquire", handoff: c"lock.handoff", release: c"lock.release" };

/// An acquire of the mutex by `owner`, for a lease of `ttl` ms.
struct AcquireMutex {
    /// Inline for usual owners: a refused acquire allocates nothing.
    owner: Owner,
    ttl: Millis,
}

impl Request for AcquireMutex {
    fn kind(&self) -> &'static dyn KindOps {
        &KIND
    }

    fn try_grant(&self, ctx: &Context, key: &RedisString, waiter: Option<WaiterId>) -> Result<Option<Token>> {
        let others_first = waiting::others_first(ctx, key, waiter);
        let outcome = store::update(ctx, key, |m: &mut Mutex, now| {
            clock::with_tokens(|tokens| m.acquire(&self.owner, self.ttl, now, tokens, others_first)).map_err(Error::from)
        })?;
        Ok(match outcome {
            Acquire::Granted(token) | Acquire::Reentered(token) => {
                announce::granted(ctx, key, &EVENTS, waiter, matches!(outcome, Acquire::Granted(_)));
                Some(token)
            }
            Acquire::Busy => None,
        })
    }
}

/// `LOCK.ACQUIRE key owner ttl [WAIT timeout]`
fn acquire(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::Acquire)?;
    let request = AcquireMutex { owner: Owner::new(call.owner()), ttl: call.ttl };
    waiting::acquire(ctx, &call.key, call.wait, request)
}

/// `LOCK.RELEASE key owner`
fn release(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwner)?;
    let released = store::update(ctx, &call.key, |m: &mut Mutex, now| {
        let token = m.holder(now).filter(|h| *h.owner == *call.owner()).map(|h| h.token);
        let released = m.release(call.owner(), now);
        if released != Release::NotHeld {
            let ended = token.filter(|_| released == Release::Freed);
            announce::released(ctx, &call.key, &EVENTS, ended, now);
        }
        Ok(released)
    })?;
    Ok(RedisValue::Integer((released != Release::NotHeld) as i64))
}

/// `LOCK.EXTEND key owner ttl`
fn extend(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwnerTtl)?;
    let extended = store::update(ctx, &call.key, |m: &mut Mutex, now| Ok(m.extend(call.owner(), call.ttl, now)))?;
    if extended {
        stats::extended();
    }
    Ok(RedisValue::Integer(extended as i64))
}

/// `LOCK.INFO key`: reads only, so a replica answers it too, reporting a lease past its
/// deadline as over even before the master's effect arrives.
fn info(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<Mutex>(&MUTEX_TYPE).map_err(|_| Error::WrongType)?;
    let now = now_ms();
    let waiters = waiting::count(ffi::selected_db(ctx), key.as_slice()) as i64;
    let holder = stored.and_then(|m| m.holder(now));
    if holder.is_none() && waiters == 0 {
        return Ok(RedisValue::Null);
    }
    let field = |name: &str| RedisValueKey::String(name.to_string());
    let mut reply = BTreeMap::new();
    reply.insert(field("owner"), holder.map_or(RedisValue::Null, |h| RedisValue::StringBuffer(h.owner.to_vec())));
    reply.insert(field("token"), holder.map_or(RedisValue::Null, |h| RedisValue::Integer(h.token)));
    reply.insert(field("ttl"), holder.map_or(RedisValue::Null, |h| RedisValue::Integer(h.ttl_left(now))));
    reply.insert(field("holds"), RedisValue::Integer(holder.map_or(0, |h| h.holds as i64)));
    reply.insert(field("waiters"), RedisValue::Integer(waiters));
    Ok(RedisValue::OrderedMap(reply))
}
