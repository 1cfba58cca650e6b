//! Commands declared the way Redis declares its own: arity, flags, key specs, ACL
//! categories, and the docs that `COMMAND DOCS`, `HELP` and redis-cli hints show. Each
//! command file (and each kind's persistence file, for its effect commands) lists its
//! `Command`s; `register` declares them all at load.
//!
//! Newer APIs are used only where the server offers them: `RedisModule_SetCommandInfo`
//! (7.0), `RedisModule_SetCommandACLCategories` (7.2) and `RedisModule_AddACLCategory`
//! (7.4, Valkey 8.0); the module loads without what they would add elsewhere.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context, ContextFlags, RedisValue};

use crate::machinery::{keyspace, waiting};
use crate::error::{Error, Result};
use crate::ffi::{self, Args};

pub type Handler = fn(&Context, Args) -> Result<RedisValue>;

/// The ACL category every fencelock command joins where the server can add one.
const CATEGORY: &CStr = c"fencelock";

/// The version named in `since`: the crate's.
const SINCE: &CStr = c"0.1.0";

/// How a command treats its key (the key spec flags of `COMMAND INFO`).
#[derive(Clone, Copy)]
pub enum Access {
    /// Reads and returns data: LOCK.INFO, FENCE.CURRENT.
    Read,
    /// Reads, changes and returns data, creating the key if needed: the acquires.
    Update,
    /// Changes the key without returning its data: EXTEND.
    Modify,
    /// Changes the key and may delete it: the releases.
    Delete,
    /// Overwrites the key with a given state: the replication effects.
    Overwrite,
    /// Updates the key at 1 (a fence) and runs another command behind it, whose keys
    /// follow from argument 3 on: `FENCE.CALL`. Its keys come from its getkeys callback.
    Call,
}

impl Access {
    fn key_spec_flags(self) -> u64 {
        use raw::*;
        (match self {
            Access::Read => REDISMODULE_CMD_KEY_RO | REDISMODULE_CMD_KEY_ACCESS,
            Access::Update => REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_ACCESS | REDISMODULE_CMD_KEY_UPDATE,
            Access::Modify => REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE,
            Access::Delete => REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE,
            Access::Overwrite => REDISMODULE_CMD_KEY_OW | REDISMODULE_CMD_KEY_UPDATE,
            Access::Call => REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE,
        }) as u64
    }
}

/// One argument as `COMMAND DOCS` shows it. The key is always the first argument.
#[derive(Clone, Copy)]
pub enum Arg {
    Key,
    Text(&'static CStr),
    Integer(&'static CStr),
    /// An optional integer behind a token, such as `WAIT timeout`.
    Option(&'static CStr, &'static CStr),
    /// Any number of strings, none included.
    Rest(&'static CStr),
}

// Argument lists and flags the lock commands share.
pub const ACQUIRE_ARGS: &[Arg] = &[Arg::Key, Arg::Text(c"owner"), Arg::Integer(c"ttl"), Arg::Option(c"WAIT", c"timeout")];
pub const RELEASE_ARGS: &[Arg] = &[Arg::Key, Arg::Text(c"owner")];
pub const EXTEND_ARGS: &[Arg] = &[Arg::Key, Arg::Text(c"owner"), Arg::Integer(c"ttl")];
pub const KEY_ONLY: &[Arg] = &[Arg::Key];

/// A blocking acquire: the flags and ACL categories of BLPOP's kind, plus deny-oom since
/// it creates the key.
pub const ACQUIRE_FLAGS: &CStr = c"write deny-oom blocking";
pub const ACQUIRE_ACL: &str = "write slow blocking";

pub struct Command {
    /// Lower case, as Redis lists commands.
    pub name: &'static CStr,
    /// The C entry point: `command!(handler)`.
    pub entry: ffi::CommandFunc,
    /// Redis command flags, as `RedisModule_CreateCommand` takes them.
    pub flags: &'static CStr,
    /// ACL categories a native command of this behaviour has (7.2+).
    pub acl: &'static str,
    pub arity: c_int,
    pub access: Access,
    pub summary: &'static CStr,
    pub complexity: &'static CStr,
    pub args: &'static [Arg],
}

/// Runs a command handler so that a panic answers an error instead of taking the server
/// down with it; then serves the waiters its change let in, in the same command (so
/// their grants propagate with it, and before the next command runs). Inside MULTI/EXEC
/// or a script they are served after it, in the before-sleep pass, as Redis serves the
/// clients blocked on its own keys after a transaction: the transaction sees the lock
/// free with waiters.
pub fn guarded(ctx: &Context, args: Args, handler: Handler) -> redis_module::RedisResult {
    keyspace::subscribe_once();
    let result = catch_unwind(AssertUnwindSafe(|| handler(ctx, args)));
    if waiting::any_ready() && !ctx.get_flags().intersects(ContextFlags::MULTI | ContextFlags::LUA) {
        waiting::serve_ready(ctx);
    }
    match result {
        Ok(result) => result.map_err(Into::into),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            ctx.log_warning(&format!("fencelock: command panicked: {what}"));
            Err(Error::Internal(what).into())
        }
    }
}

/// The C entry point of a command whose handler is `$handler`, run `guarded`.
#[macro_export]
macro_rules! command {
    ($handler:path) => {{
        fn run(ctx: &redis_module::Context, args: $crate::ffi::Args) -> redis_module::RedisResult {
            $crate::machinery::commands::guarded(ctx, args, $handler)
        }
        $crate::command_entry!(run)
    }};
}

/// Declares every command. Fails (and the module does not load) only when Redis refuses
/// a command or its declaration; a server that lacks an optional API gets the command
/// without what that API would add.
pub fn register<'a>(ctx: &Context, commands: impl IntoIterator<Item = &'a Command>) -> Result<(), String> {
    let own_category = ffi::add_acl_category(ctx, CATEGORY);
    for command in commands {
        let name = command.name.to_string_lossy();
        let handle = ffi::create_command(ctx, command.name, command.entry, command.flags)?;
        let mut args: Vec<raw::RedisModuleCommandArg> = command.args.iter().map(|a| doc_arg(*a)).collect();
        args.push(ffi::arg_end());
        let declared = ffi::set_command_info(
            handle,
            command.arity,
            ffi::KeySpecs { flags: command.access.key_spec_flags(), variable_from: matches!(command.access, Access::Call).then_some(3) },
            command.summary,
            command.complexity,
            SINCE,
            &mut args,
        );
        if !declared {
            return Err(format!("the server refused the declaration of {name} (see the lines above)"));
        }
        let categories = match own_category {
            true => format!("{} {}", command.acl, CATEGORY.to_string_lossy()),
            false => command.acl.to_string(),
        };
        ffi::set_command_categories(handle, &categories).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn doc_arg(arg: Arg) -> raw::RedisModuleCommandArg {
    use raw::*;
    match arg {
        Arg::Key => ffi::command_arg(c"key", RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY, Some(0), None, false),
        Arg::Text(name) => ffi::command_arg(name, RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING, None, None, false),
        Arg::Integer(name) => ffi::command_arg(name, RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER, None, None, false),
        Arg::Option(token, name) => {
            ffi::command_arg(name, RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER, None, Some(token), true)
        }
        Arg::Rest(name) => ffi::command_arg_with(
            name,
            RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            None,
            None,
            (REDISMODULE_CMD_ARG_OPTIONAL | REDISMODULE_CMD_ARG_MULTIPLE) as std::ffi::c_int,
        ),
    }
}
