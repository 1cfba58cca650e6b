//! `RWLOCK.*`: the read-write lock. Parse, call the pure lock through the store, reply.

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
use crate::logic::rwlock::{Acquire, Mode, Release, RwLock};
use crate::logic::waiters::WaiterId;
use crate::logic::owner::Owner;
use crate::logic::{Millis, Token};
use crate::persist::rwlock::{KIND, RWLOCK_TYPE};

const HOLDERS: &std::ffi::CStr = c"O(log N) where N is the number of holders";

pub const COMMANDS: &[Command] = &[
    Command {
        name: c"rwlock.rlock",
        entry: command!(rlock),
        flags: ACQUIRE_FLAGS,
        acl: ACQUIRE_ACL,
        arity: -4,
        access: Access::Update,
        summary: c"Acquires a read lock for an owner with a lease, optionally waiting server-side; returns its fencing token",
        complexity: HOLDERS,
        args: ACQUIRE_ARGS,
    },
    Command {
        name: c"rwlock.wlock",
        entry: command!(wlock),
        flags: ACQUIRE_FLAGS,
        acl: ACQUIRE_ACL,
        arity: -4,
        access: Access::Update,
        summary: c"Acquires the write lock for an owner with a lease, optionally waiting server-side; returns its fencing token",
        complexity: HOLDERS,
        args: ACQUIRE_ARGS,
    },
    Command {
        name: c"rwlock.runlock",
        entry: command!(runlock),
        flags: c"write fast",
        acl: "write fast",
        arity: 3,
        access: Access::Delete,
        summary: c"Releases one read hold of the owner; waiters are granted at once",
        complexity: HOLDERS,
        args: RELEASE_ARGS,
    },
    Command {
        name: c"rwlock.wunlock",
        entry: command!(wunlock),
        flags: c"write fast",
        acl: "write fast",
        arity: 3,
        access: Access::Delete,
        summary: c"Releases one write hold of the owner; waiters are granted at once",
        complexity: HOLDERS,
        args: RELEASE_ARGS,
    },
    Command {
        name: c"rwlock.extend",
        entry: command!(extend),
        flags: c"write fast",
        acl: "write fast",
        arity: 4,
        access: Access::Modify,
        summary: c"Resets the lease of every hold of the owner to ttl from now",
        complexity: HOLDERS,
        args: EXTEND_ARGS,
    },
    Command {
        name: c"rwlock.info",
        entry: command!(info),
        flags: c"readonly",
        acl: "read slow",
        arity: 2,
        access: Access::Read,
        summary: c"Returns the mode, holders and waiters of a read-write lock",
        complexity: c"O(N) where N is the number of holders",
        args: KEY_ONLY,
    },
];

/// The keyspace events of this kind.
const EVENTS: Events = Events { acquire: c"rwlock.acquire", handoff: c"rwlock.handoff", release: c"rwlock.release" };

/// An acquire of the lock in `mode` by `owner`, for a lease of `ttl` ms.
struct AcquireRw {
    mode: Mode,
    /// Inline for usual owners: a refused acquire allocates nothing.
    owner: Owner,
    ttl: Millis,
}

impl Request for AcquireRw {
    fn kind(&self) -> &'static dyn KindOps {
        &KIND
    }

    fn try_grant(&self, ctx: &Context, key: &RedisString, waiter: Option<WaiterId>) -> Result<Option<Token>> {
        let others_first = waiting::others_first(ctx, key, waiter);
        let outcome = store::update(ctx, key, |lock: &mut RwLock, now| {
            clock::with_tokens(|tokens| lock.acquire(self.mode, &self.owner, self.ttl, now, tokens, others_first)).map_err(Error::from)
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

fn acquire(ctx: &Context, args: Args, mode: Mode) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::Acquire)?;
    let request = AcquireRw { mode, owner: Owner::new(call.owner()), ttl: call.ttl };
    waiting::acquire(ctx, &call.key, call.wait, request)
}

/// `RWLOCK.RLOCK key owner ttl [WAIT timeout]`
fn rlock(ctx: &Context, args: Args) -> Result<RedisValue> {
    acquire(ctx, args, Mode::Read)
}

/// `RWLOCK.WLOCK key owner ttl [WAIT timeout]`
fn wlock(ctx: &Context, args: Args) -> Result<RedisValue> {
    acquire(ctx, args, Mode::Write)
}

fn unlock(ctx: &Context, args: Args, mode: Mode) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwner)?;
    let released = store::update(ctx, &call.key, |lock: &mut RwLock, now| {
        let token = lock.stored().find(|((m, o), h)| *m == mode && o.as_slice() == call.owner() && h.deadline > now).map(|(_, h)| h.token);
        let released = lock.release(mode, call.owner(), now);
        if released != Release::NotHeld {
            let ended = token.filter(|_| released == Release::Dropped);
            announce::released(ctx, &call.key, &EVENTS, ended, now);
        }
        Ok(released)
    })?;
    Ok(RedisValue::Integer((released != Release::NotHeld) as i64))
}

/// `RWLOCK.RUNLOCK key owner`
fn runlock(ctx: &Context, args: Args) -> Result<RedisValue> {
    unlock(ctx, args, Mode::Read)
}

/// `RWLOCK.WUNLOCK key owner`
fn wunlock(ctx: &Context, args: Args) -> Result<RedisValue> {
    unlock(ctx, args, Mode::Write)
}

/// `RWLOCK.EXTEND key owner ttl`
fn extend(ctx: &Context, args: Args) -> Result<RedisValue> {
    let call = args::lock_call(args, Shape::KeyOwnerTtl)?;
    let extended = store::update(ctx, &call.key, |lock: &mut RwLock, now| Ok(lock.extend(call.owner(), call.ttl, now)))?;
    if extended {
        stats::extended();
    }
    Ok(RedisValue::Integer(extended as i64))
}

/// `RWLOCK.INFO key`: reads only; leases past their deadline are reported as over.
fn info(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<RwLock>(&RWLOCK_TYPE).map_err(|_| Error::WrongType)?;
    let now = now_ms();
    let waiters = waiting::count(ffi::selected_db(ctx), key.as_slice()) as i64;
    let live: Vec<_> = stored.map(|lock| lock.live(now).collect()).unwrap_or_default();
    if live.is_empty() && waiters == 0 {
        return Ok(RedisValue::Null);
    }
    let field = |name: &str| RedisValueKey::String(name.to_string());
    let holders = live
        .iter()
        .map(|((mode, owner), hold)| {
            let mut h = BTreeMap::new();
            h.insert(field("owner"), RedisValue::StringBuffer(owner.clone()));
            h.insert(field("mode"), RedisValue::SimpleStringStatic(mode.name()));
            h.insert(field("token"), RedisValue::Integer(hold.token));
            h.insert(field("ttl"), RedisValue::Integer(hold.ttl_left(now)));
            h.insert(field("holds"), RedisValue::Integer(hold.holds as i64));
            RedisValue::OrderedMap(h)
        })
        .collect();
    let mode = live.first().map_or("none", |((mode, _), _)| mode.name());
    let mut reply = BTreeMap::new();
    reply.insert(field("mode"), RedisValue::SimpleStringStatic(mode));
    reply.insert(field("holders"), RedisValue::Array(holders));
    reply.insert(field("waiters"), RedisValue::Integer(waiters));
    Ok(RedisValue::OrderedMap(reply))
}
