//! The command table: every command the module registers, declared the way Redis
//! declares its own (arity, flags, key specs, ACL categories, and the docs that `COMMAND
//! DOCS`, `HELP` and redis-cli hints show).
//!
//! Commands are registered here rather than in `redis_module!`'s list because that list
//! cannot give arity, key specs or docs, and its ACL-category slot makes the module fail
//! to load on Redis 7.0. Newer APIs are used only when the server offers them:
//! `RedisModule_SetCommandInfo` (7.0), `RedisModule_SetCommandACLCategories` (7.2) and
//! `RedisModule_AddACLCategory` (7.4, Valkey 8.0) are null function pointers on servers
//! that lack them, and the module then loads without what they would add.

use std::ffi::{c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use redis_module::{raw, Context, RedisString, RedisValue};

use crate::error::{Error, Result};
use crate::{effects, fence, keyspace, lock, rwlock};

type Handler = fn(&Context, Vec<RedisString>) -> Result<RedisValue>;
type RawHandler = unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// The ACL category every fencelock command joins where the server can add one.
const CATEGORY: &CStr = c"fencelock";

/// The version named in `since`: the crate's.
const SINCE: &CStr = c"0.1.0";

/// How a command treats its key (the key spec flags of `COMMAND INFO`).
#[derive(Clone, Copy)]
enum Access {
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
        }) as u64
    }
}

/// One argument as `COMMAND DOCS` shows it. The key is always the first argument.
#[derive(Clone, Copy)]
enum Arg {
    Key,
    Text(&'static CStr),
    Integer(&'static CStr),
    /// `WAIT timeout`: an optional integer behind a token.
    Wait,
}

struct Command {
    name: &'static CStr,
    handler: RawHandler,
    /// Redis command flags, as `RedisModule_CreateCommand` takes them.
    flags: &'static CStr,
    /// ACL categories a native command of this behaviour has (7.2+).
    acl: &'static str,
    arity: c_int,
    access: Access,
    summary: &'static CStr,
    complexity: &'static CStr,
    args: &'static [Arg],
}

/// Runs a command handler so that a panic answers an error instead of taking the
/// server down with it.
fn guarded(ctx: &Context, args: Vec<RedisString>, handler: Handler) -> redis_module::RedisResult {
    keyspace::subscribe_once();
    match catch_unwind(AssertUnwindSafe(|| handler(ctx, args))) {
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

/// The C entry point Redis calls for `$handler`.
macro_rules! entry {
    ($handler:path) => {{
        unsafe extern "C" fn call(
            ctx: *mut raw::RedisModuleCtx,
            argv: *mut *mut raw::RedisModuleString,
            argc: c_int,
        ) -> c_int {
            let context = Context::new(ctx);
            let args = redis_module::decode_args(ctx, argv, argc);
            context.reply(guarded(&context, args, $handler)) as c_int
        }
        call as RawHandler
    }};
}

const ACQUIRE_ARGS: &[Arg] = &[Arg::Key, Arg::Text(c"owner"), Arg::Integer(c"ttl"), Arg::Wait];
const RELEASE_ARGS: &[Arg] = &[Arg::Key, Arg::Text(c"owner")];
const EXTEND_ARGS: &[Arg] = &[Arg::Key, Arg::Text(c"owner"), Arg::Integer(c"ttl")];
const KEY_ONLY: &[Arg] = &[Arg::Key];

/// A blocking acquire: the flags and categories of BLPOP's kind, plus deny-oom since it
/// creates the key.
const ACQUIRE_FLAGS: &CStr = c"write deny-oom blocking";
const ACQUIRE_ACL: &str = "write slow blocking";

fn table() -> Vec<Command> {
    vec![
        Command {
            name: c"lock.acquire",
            handler: entry!(lock::acquire),
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
            handler: entry!(lock::release),
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
            handler: entry!(lock::extend),
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
            handler: entry!(lock::info),
            flags: c"readonly fast",
            acl: "read fast",
            arity: 2,
            access: Access::Read,
            summary: c"Returns the holder, token, lease left, hold count and waiters of a mutex",
            complexity: c"O(1)",
            args: KEY_ONLY,
        },
        Command {
            name: c"rwlock.rlock",
            handler: entry!(rwlock::rlock),
            flags: ACQUIRE_FLAGS,
            acl: ACQUIRE_ACL,
            arity: -4,
            access: Access::Update,
            summary: c"Acquires a read lock for an owner with a lease, optionally waiting server-side; returns its fencing token",
            complexity: c"O(log N) where N is the number of holders",
            args: ACQUIRE_ARGS,
        },
        Command {
            name: c"rwlock.wlock",
            handler: entry!(rwlock::wlock),
            flags: ACQUIRE_FLAGS,
            acl: ACQUIRE_ACL,
            arity: -4,
            access: Access::Update,
            summary: c"Acquires the write lock for an owner with a lease, optionally waiting server-side; returns its fencing token",
            complexity: c"O(log N) where N is the number of holders",
            args: ACQUIRE_ARGS,
        },
        Command {
            name: c"rwlock.runlock",
            handler: entry!(rwlock::runlock),
            flags: c"write fast",
            acl: "write fast",
            arity: 3,
            access: Access::Delete,
            summary: c"Releases one read hold of the owner; waiters are granted at once",
            complexity: c"O(log N) where N is the number of holders",
            args: RELEASE_ARGS,
        },
        Command {
            name: c"rwlock.wunlock",
            handler: entry!(rwlock::wunlock),
            flags: c"write fast",
            acl: "write fast",
            arity: 3,
            access: Access::Delete,
            summary: c"Releases one write hold of the owner; waiters are granted at once",
            complexity: c"O(log N) where N is the number of holders",
            args: RELEASE_ARGS,
        },
        Command {
            name: c"rwlock.extend",
            handler: entry!(rwlock::extend),
            flags: c"write fast",
            acl: "write fast",
            arity: 4,
            access: Access::Modify,
            summary: c"Resets the lease of every hold of the owner to ttl from now",
            complexity: c"O(log N) where N is the number of holders",
            args: EXTEND_ARGS,
        },
        Command {
            name: c"rwlock.info",
            handler: entry!(rwlock::info),
            flags: c"readonly",
            acl: "read slow",
            arity: 2,
            access: Access::Read,
            summary: c"Returns the mode, holders and waiters of a read-write lock",
            complexity: c"O(N) where N is the number of holders",
            args: KEY_ONLY,
        },
        Command {
            name: c"fence.next",
            handler: entry!(fence::next),
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
            handler: entry!(fence::check),
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
            handler: entry!(fence::current),
            flags: c"readonly fast",
            acl: "read fast",
            arity: 2,
            access: Access::Read,
            summary: c"Returns the highest token recorded for the key, 0 when none",
            complexity: c"O(1)",
            args: KEY_ONLY,
        },
        // Replication effects: only a master's stream and AOF loading may send them. No
        // deny-oom: a replica must apply whatever its master did.
        Command {
            name: c"fencelock.mutex",
            handler: entry!(effects::mutex_effect),
            flags: c"write",
            acl: "write slow",
            arity: 6,
            access: Access::Overwrite,
            summary: c"Internal: sets a mutex to a replicated state",
            complexity: c"O(1)",
            args: &[Arg::Key, Arg::Text(c"owner"), Arg::Integer(c"token"), Arg::Integer(c"deadline"), Arg::Integer(c"holds")],
        },
        Command {
            name: c"fencelock.fence",
            handler: entry!(effects::fence_effect),
            flags: c"write",
            acl: "write slow",
            arity: 4,
            access: Access::Overwrite,
            summary: c"Internal: sets a fence to a replicated state",
            complexity: c"O(1)",
            args: &[Arg::Key, Arg::Integer(c"highest"), Arg::Integer(c"issued")],
        },
        Command {
            name: c"fencelock.rwhold",
            handler: entry!(effects::rw_hold_effect),
            flags: c"write",
            acl: "write slow",
            arity: 7,
            access: Access::Overwrite,
            summary: c"Internal: sets one hold of a read-write lock to a replicated state",
            complexity: c"O(log N) where N is the number of holders",
            args: &[
                Arg::Key,
                Arg::Text(c"mode"),
                Arg::Text(c"owner"),
                Arg::Integer(c"token"),
                Arg::Integer(c"deadline"),
                Arg::Integer(c"holds"),
            ],
        },
        Command {
            name: c"fencelock.rwdrop",
            handler: entry!(effects::rw_drop_effect),
            flags: c"write",
            acl: "write slow",
            arity: 4,
            access: Access::Delete,
            summary: c"Internal: removes one hold of a read-write lock",
            complexity: c"O(log N) where N is the number of holders",
            args: &[Arg::Key, Arg::Text(c"mode"), Arg::Text(c"owner")],
        },
    ]
}

/// Registers every command. Fails (and the module does not load) only when Redis refuses
/// a command or its declaration; a server that lacks an optional API gets the command
/// without what that API would add.
pub fn register(ctx: &Context) -> Result<(), String> {
    let own_category = add_category(ctx);
    for command in table() {
        let name = command.name.to_string_lossy();
        let created = unsafe {
            let create = raw::RedisModule_CreateCommand.ok_or("RedisModule_CreateCommand is missing")?;
            // The key positions given here are replaced by the key spec below where the
            // server takes one.
            create(ctx.ctx, command.name.as_ptr(), Some(command.handler), command.flags.as_ptr(), 1, 1, 1)
        };
        if created != raw::REDISMODULE_OK as c_int {
            return Err(format!("could not create command {name}"));
        }
        let handle = unsafe {
            match raw::RedisModule_GetCommand {
                Some(get) => get(ctx.ctx, command.name.as_ptr()),
                None => ptr::null_mut(),
            }
        };
        if handle.is_null() {
            continue;
        }
        if !set_info(handle, &command) {
            return Err(format!("the server refused the declaration of {name} (see the lines above)"));
        }
        set_categories(handle, &command, own_category).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// Adds the `fencelock` ACL category where the server can (Redis 7.4+, Valkey 8.0+).
fn add_category(ctx: &Context) -> bool {
    unsafe {
        match raw::RedisModule_AddACLCategory {
            Some(add) => add(ctx.ctx, CATEGORY.as_ptr()) == raw::REDISMODULE_OK as c_int,
            None => false,
        }
    }
}

fn set_categories(handle: *mut raw::RedisModuleCommand, command: &Command, own_category: bool) -> Result<(), &'static str> {
    let Some(set) = (unsafe { raw::RedisModule_SetCommandACLCategories }) else {
        return Ok(());
    };
    let mut categories = command.acl.to_string();
    if own_category {
        categories.push(' ');
        categories.push_str(&CATEGORY.to_string_lossy());
    }
    let categories = std::ffi::CString::new(categories).map_err(|_| "bad category list")?;
    if unsafe { set(handle, categories.as_ptr()) } != raw::REDISMODULE_OK as c_int {
        return Err("the server refused its ACL categories");
    }
    Ok(())
}

/// `RedisModule_SetCommandInfo` steps through the arrays by the sizes given here, so they
/// are the sizes of the structs as this build declares them.
static INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

fn doc_arg(name: &'static CStr, type_: raw::RedisModuleCommandArgType) -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name: name.as_ptr(),
        type_,
        key_spec_index: -1,
        token: ptr::null(),
        summary: ptr::null(),
        since: ptr::null(),
        flags: 0,
        deprecated_since: ptr::null(),
        subargs: ptr::null_mut(),
        display_text: ptr::null(),
    }
}

/// Arity, key spec and docs. Redis copies everything it is given, so the arrays need to
/// live only through the call.
fn set_info(handle: *mut raw::RedisModuleCommand, command: &Command) -> bool {
    let Some(set_info) = (unsafe { raw::RedisModule_SetCommandInfo }) else {
        return true;
    };
    let mut args: Vec<raw::RedisModuleCommandArg> = command
        .args
        .iter()
        .map(|arg| match *arg {
            Arg::Key => raw::RedisModuleCommandArg {
                key_spec_index: 0,
                ..doc_arg(c"key", raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY)
            },
            Arg::Text(name) => doc_arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING),
            Arg::Integer(name) => doc_arg(name, raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER),
            Arg::Wait => raw::RedisModuleCommandArg {
                token: c"WAIT".as_ptr(),
                flags: raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int,
                ..doc_arg(c"timeout", raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER)
            },
        })
        .collect();
    // Both arrays end with a zeroed entry.
    args.push(unsafe { std::mem::zeroed() });
    let mut key_specs = [
        raw::RedisModuleCommandKeySpec {
            notes: ptr::null(),
            flags: command.access.key_spec_flags(),
            begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
            bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
            },
            find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
            fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 { lastkey: 0, keystep: 1, limit: 0 },
            },
        },
        unsafe { std::mem::zeroed() },
    ];
    let info = raw::RedisModuleCommandInfo {
        version: &INFO_VERSION,
        summary: command.summary.as_ptr(),
        complexity: command.complexity.as_ptr(),
        since: SINCE.as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity: command.arity,
        key_specs: key_specs.as_mut_ptr(),
        args: args.as_mut_ptr(),
    };
    unsafe { set_info(handle, &info) == raw::REDISMODULE_OK as c_int }
}
