//! `SEM.*`: the counting semaphore. Parse, call the pure semaphore through the store,
//! reply.

use std::collections::BTreeMap;

use redis_module::{redisvalue::RedisValueKey, Context, NextArg, RedisString, RedisValue};

use crate::args::{self, Shape};
use crate::command;
use crate::error::{Error, Result};
use crate::ffi::{self, Args};
use crate::logic::semaphore::{Acquire, Ask, Release, Semaphore};
use crate::logic::waiters::WaiterId;
use crate::logic::Token;
use crate::machinery::clock::{self, now_ms};
use crate::machinery::commands::{Access, Arg, Command, ACQUIRE_ACL, ACQUIRE_FLAGS, EXTEND_ARGS, KEY_ONLY, RELEASE_ARGS};
use crate::machinery::kind::{KindOps, Request};
use crate::machinery::announce::{self, Events};
use crate::machinery::{stats, store, waiting};
use crate::persist::sem::{KIND, SEM_TYPE};

const HOLDERS: &std::ffi::CStr = c"O(log N) where N is the number of holders";

pub const COMMANDS: &[Command] = &[
    Command {
        name: c"sem.acquire",
        entry: command!(acquire),
        flags: ACQUIRE_FLAGS,
        acl: ACQUIRE_ACL,
        arity: -5,
        access: Access::Update,
        summary: c"Takes permits of a counting semaphore for an owner with a lease, optionally waiting server-side; returns its fencing token",
        complexity: HOLDERS,
        args: &[
            Arg::Key,
            Arg::Text(c"owner"),
            Arg::Integer(c"limit"),
            Arg::Integer(c"ttl"),
            Arg::Option(c"COUNT", c"permits"),
            Arg::Option(c"WAIT", c"timeout"),
        ],
    },
    Command {
        name: c"sem.release",
        entry: command!(release),
        flags: c"write fast",
        acl: "write fast",
        arity: 3,
        access: Access::Delete,
        summary: c"Releases one hold of the owner; at zero its permits return and waiters are granted at once",
        complexity: HOLDERS,
        args: RELEASE_ARGS,
    },
    Command {
        name: c"sem.extend",
        entry: command!(extend),
        flags: c"write fast",
        acl: "write fast",
        arity: 4,
        access: Access::Modify,
        summary: c"Resets the lease of the owner's permits to ttl from now",
        complexity: HOLDERS,
        args: EXTEND_ARGS,
    },
    Command {
        name: c"sem.info",
        entry: command!(info),
        flags: c"readonly",
        acl: "read slow",
        arity: 2,
        access: Access::Read,
        summary: c"Returns the limit, available permits, holders and waiters of a semaphore",
        complexity: c"O(N) where N is the number of holders",
        args: KEY_ONLY,
    },
];

/// The keyspace events of this kind.
const EVENTS: Events = Events { acquire: c"sem.acquire", handoff: c"sem.handoff", release: c"sem.release" };

impl Request for Ask {
    fn kind(&self) -> &'static dyn KindOps {
        &KIND
    }

    fn try_grant(&self, ctx: &Context, key: &RedisString, waiter: Option<WaiterId>) -> Result<Option<Token>> {
        let others_first = waiting::others_first(ctx, key, waiter);
        let outcome = store::update(ctx, key, |sem: &mut Semaphore, now| {
            clock::with_tokens(|tokens| sem.acquire(&self.owner, self.limit, self.permits, self.ttl, now, tokens, others_first))
                .map_err(Error::from)
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

/// `SEM.ACQUIRE key owner limit ttl [COUNT permits] [WAIT timeout]`
fn acquire(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::sem_acquire(args)?;
    let request = Ask { owner: call.owner().to_vec(), limit: call.limit, permits: call.permits, ttl: call.ttl };
    waiting::acquire(ctx, &call.key, call.wait, request)
}

/// `SEM.RELEASE key owner`
fn release(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwner)?;
    let released = store::update(ctx, &call.key, |sem: &mut Semaphore, now| {
        let token = sem.stored().find(|(o, h)| *o == call.owner() && h.deadline > now).map(|(_, h)| h.token);
        let released = sem.release(call.owner(), now);
        if released != Release::NotHeld {
            let ended = token.filter(|_| released == Release::Dropped);
            announce::released(ctx, &call.key, &EVENTS, ended, now);
        }
        Ok(released)
    })?;
    Ok(RedisValue::Integer((released != Release::NotHeld) as i64))
}

/// `SEM.EXTEND key owner ttl`
fn extend(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwnerTtl)?;
    let extended = store::update(ctx, &call.key, |sem: &mut Semaphore, now| Ok(sem.extend(call.owner(), call.ttl, now)))?;
    if extended {
        stats::extended();
    }
    Ok(RedisValue::Integer(extended as i64))
}

/// `SEM.INFO key`: reads only; leases past their deadline are reported as over.
fn info(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<Semaphore>(&SEM_TYPE).map_err(|_| Error::WrongType)?;
    let now = now_ms();
    let waiters = waiting::count(ffi::selected_db(ctx), key.as_slice()) as i64;
    // A key removed while clients wait on it reads as a vacant semaphore of their limit.
    let vacant;
    let sem = match stored {
        Some(sem) => sem,
        None if waiters > 0 => {
            vacant = store::vacant::<Semaphore>(ctx, &key);
            &vacant
        }
        None => return Ok(RedisValue::Null),
    };
    if waiters == 0 && sem.live(now).next().is_none() {
        return Ok(RedisValue::Null);
    }
    let field = |name: &str| RedisValueKey::String(name.to_string());
    let holders = sem
        .live(now)
        .map(|(owner, hold)| {
            let mut h = BTreeMap::new();
            h.insert(field("owner"), RedisValue::StringBuffer(owner.to_vec()));
            h.insert(field("permits"), RedisValue::Integer(hold.permits as i64));
            h.insert(field("token"), RedisValue::Integer(hold.token));
            h.insert(field("ttl"), RedisValue::Integer(hold.ttl_left(now)));
            h.insert(field("holds"), RedisValue::Integer(hold.holds as i64));
            RedisValue::OrderedMap(h)
        })
        .collect();
    let mut reply = BTreeMap::new();
    reply.insert(field("limit"), RedisValue::Integer(sem.limit() as i64));
    reply.insert(field("available"), RedisValue::Integer(sem.available(now) as i64));
    reply.insert(field("holders"), RedisValue::Array(holders));
    reply.insert(field("waiters"), RedisValue::Integer(waiters));
    Ok(RedisValue::OrderedMap(reply))
}
