//! `FENCE.*`: fences that any Redis data can sit behind.

use crate::ffi::{self, Args};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use redis_module::{Context, NextArg, RedisString, RedisValue};

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
        name: c"fence.call",
        entry: command!(call),
        flags: c"write getkeys-api",
        acl: "write slow",
        arity: -4,
        access: Access::Call,
        summary: c"Runs one command behind the fence: only if the token passes FENCE.CHECK, with the command's own reply",
        complexity: c"O(1) plus the command's own",
        args: &[Arg::Key, Arg::Integer(c"token"), Arg::Text(c"command"), Arg::Rest(c"arg")],
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
    check_token(ctx, &key, token)?;
    Ok(RedisValue::Integer(1))
}

/// Checks `token` against the fence at `key` (recording it as the highest when newer),
/// counting a refusal for `INFO`: what `FENCE.CHECK` and `FENCE.CALL` both do.
fn check_token(ctx: &Context, key: &RedisString, token: i64) -> Result<()> {
    let checked = store::update(ctx, key, |f: &mut Fence, _| Ok(f.check(token)?));
    if let Err(Error::Stale(_)) = checked {
        stats::stale_refused();
    }
    checked
}

/// What `FENCE.CALL` knows of a command it may run, from `COMMAND INFO` (cached: a
/// command's declaration does not change while the server runs).
#[derive(Clone, Copy)]
struct Inner {
    arity: i64,
    /// Blocking, a transaction or script command, admin, pub/sub.
    refused: bool,
    /// Has subcommands: what matters is `name|subcommand`'s.
    container: bool,
}

static INNER: LazyLock<Mutex<HashMap<Vec<u8>, Inner>>> = LazyLock::new(Default::default);

/// `COMMAND INFO` of `name` (lower case), cached; None for an unknown command.
fn inner(ctx: &Context, name: &[u8]) -> Option<Inner> {
    if let Some(known) = INNER.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
        return Some(*known);
    }
    let (arity, flags, container) = ffi::command_info(ctx, name)?;
    let refused = name == b"fence.call" || flags.iter().any(|f| matches!(f.as_str(), "blocking" | "noscript" | "admin" | "pubsub"));
    let inner = Inner { arity, refused, container };
    INNER.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_vec(), inner);
    Some(inner)
}

/// The command in `argv` (name first) as `FENCE.CALL` may run it: `Ok(true)` to run it
/// behind the fence, `Ok(false)` when Redis itself would refuse it (unknown, unknown
/// subcommand, wrong arity: its answer is Redis's, and the fence is not touched).
fn check_inner(ctx: &Context, argv: &[*mut redis_module::raw::RedisModuleString]) -> Result<bool> {
    let word = |i: usize| RedisString::new(None, argv[i]).as_slice().to_ascii_lowercase();
    let name = word(0);
    let Some(mut info) = inner(ctx, &name) else { return Ok(false) };
    if info.container && !info.refused && argv.len() > 1 {
        let mut full = name.clone();
        full.push(b'|');
        full.extend(word(1));
        let Some(sub) = inner(ctx, &full) else { return Ok(false) };
        info = sub;
    }
    if info.refused {
        return Err(Error::CannotRun(RedisString::new(None, argv[0]).to_string_lossy()));
    }
    let given = argv.len() as i64;
    Ok(if info.arity >= 0 { given == info.arity } else { given >= -info.arity })
}

/// `FENCE.CALL fence-key token command [arg ...]`
fn call(ctx: &Context, args: Args) -> Result<RedisValue> {
    let argv = args.raw().to_vec();
    if ffi::is_keys_position_request(ctx) {
        ffi::key_at_pos(ctx, 1, (redis_module::raw::REDISMODULE_CMD_KEY_RW | redis_module::raw::REDISMODULE_CMD_KEY_UPDATE) as i32);
        if argv.len() > 3 {
            for (pos, flags) in ffi::command_keys(ctx, &argv[3..]) {
                ffi::key_at_pos(ctx, pos + 3, flags);
            }
        }
        return Ok(RedisValue::NoReply);
    }
    let mut args = args::take(args, 3, usize::MAX - 3)?;
    let key = args.next_arg()?;
    let token = args::token(&args.next_arg()?)?;
    let inner = &argv[3..];
    if check_inner(ctx, inner)? {
        check_token(ctx, &key, token)?;
    }
    match ffi::call_as_caller(ctx, inner) {
        Some(reply) => {
            reply.forward(ctx);
            Ok(RedisValue::NoReply)
        }
        // A name Redis cannot even look up (a NUL byte in it): unknown, as Redis says.
        None => Err(Error::Redis(redis_module::RedisError::String(unknown_command(inner)))),
    }
}

/// Redis's error for an unknown command, for a name RM_Call cannot take.
fn unknown_command(argv: &[*mut redis_module::raw::RedisModuleString]) -> String {
    let text = |p| {
        let s = RedisString::new(None, p).to_string_lossy();
        s.split('\0').next().unwrap_or("").chars().take(128).collect::<String>()
    };
    let args: String = argv[1..].iter().map(|a| format!("'{}' ", text(*a))).collect::<String>().chars().take(128).collect();
    format!("ERR unknown command '{}', with args beginning with: {args}", text(argv[0]))
}

/// `FENCE.CURRENT key`
fn current(ctx: &Context, args: Args) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<Fence>(&FENCE_TYPE).map_err(|_| Error::WrongType)?;
    Ok(RedisValue::Integer(stored.map_or(0, |f| f.highest)))
}
