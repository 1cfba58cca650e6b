//! `FENCE.*`: fences that any Redis data can sit behind.

use crate::ffi::{self, Args};
use redis_module::{Context, NextArg, RedisValue};

use crate::args;
use crate::command;
use crate::machinery::clock;
use crate::machinery::commands::{Access, Arg, Command, KEY_ONLY};
use crate::machinery::{stats, store};
use crate::error::{Error, Result};
use crate::logic::fence::Fence;
use crate::persist::fence::FENCE_TYPE;

pub const COMMANDS: &[Command] = &[
    Command {
        name: c"fence.next",
        entry: command!(next),
        flags: c"write deny-oom fast",
        acl: "write fast",
        arity: 2,
        access: Access::Update,
        summary: c"Issues a fresh fencing token for the key, greater than every token it has seen",
        complexity: c"O(1)",
        args: KEY_ONLY,
    },
    Command {
        name: c"fence.check",
        entry: command!(check),
        flags: c"write deny-oom fast",
        acl: "write fast",
        arity: 3,
        access: Access::Update,
        summary: c"Records a token if it is at least the highest seen for the key, else answers STALE",
        complexity: c"O(1)",
        args: &[Arg::Key, Arg::Integer(c"token")],
    },
    Command {
        name: c"fence.current",
        entry: command!(current),
        flags: c"readonly fast",
        acl: "read fast",
        arity: 2,
        access: Access::Read,
        summary: c"Returns the highest token recorded for the key, 0 when none",
        complexity: c"O(1)",
        args: KEY_ONLY,
    },
];

/// `FENCE.NEXT key`
fn next(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let token = store::update(ctx, &key, |f: &mut Fence, now| Ok(clock::with_tokens(|tokens| f.next(now, tokens))?))?;
    stats::fence_token();
    ffi::notify(ctx, true, c"fence.next", &key);
    Ok(RedisValue::Integer(token))
}

/// `FENCE.CHECK key token`
fn check(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 2, 0)?;
    let key = args.next_arg()?;
    let token = args::token(&args.next_arg()?)?;
    let checked = store::update(ctx, &key, |f: &mut Fence, _| Ok(f.check(token)?));
    if let Err(Error::Stale(_)) = checked {
        stats::stale_refused();
    }
    checked?;
    Ok(RedisValue::Integer(1))
}

/// `FENCE.CURRENT key`
fn current(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<Fence>(&FENCE_TYPE).map_err(|_| Error::WrongType)?;
    Ok(RedisValue::Integer(stored.map_or(0, |f| f.highest)))
}
