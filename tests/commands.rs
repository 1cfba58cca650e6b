//! The module's commands are declared like native Redis commands: exact arity (refused by
//! Redis itself, also at MULTI queue time), key specs that say which commands only read
//! (so `%R~` read-only key permissions work), the `blocking` and `deny-oom` flags (and
//! what deny-oom does under maxmemory), `COMMAND DOCS` and redis-cli `HELP`, and ACL
//! categories as far as the server under test can have them.
//!
//! Every test runs against the server `REDIS_SERVER` names (Debian's 7.0 by default) and
//! asserts what that kind of server must show: Redis 7.0 has no API for ACL categories,
//! Redis 7.2 has categories but cannot add its own, Redis 7.4+ and Valkey 8.0+ add the
//! `fencelock` category. Anything older than 7.0 or unknown fails.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use support::*;
use redis::Value;

// ---------------------------------------------------------------------------------------
// What each command must declare (src/commands.rs, matching native commands)
// ---------------------------------------------------------------------------------------

struct Spec {
    name: &'static str,
    /// Public commands (the internal FENCELOCK.* replication effects are not).
    public: bool,
    arity: i64,
    /// Command flags as `COMMAND INFO` shows them.
    flags: &'static [&'static str],
    /// ACL categories (without `@`), on servers that can set them (7.2+).
    acl: &'static [&'static str],
    /// Key spec flags as `COMMAND INFO` shows them.
    key_flags: &'static [&'static str],
    /// `COMMAND DOCS` arguments in order: (name, type); the options are checked apart.
    args: &'static [(&'static str, &'static str)],
    /// The tokens of the optional arguments that end the command, in order (`WAIT` of
    /// `WAIT timeout` for the acquires; `COUNT` then `WAIT` for SEM.ACQUIRE).
    options: &'static [&'static str],
    /// A well-formed call (arguments after the name) on key `k`.
    example: &'static [&'static str],
}

const ACQUIRE_FLAGS: &[&str] = &["write", "denyoom", "module", "blocking"];
const ACQUIRE_ACL: &[&str] = &["write", "slow", "blocking"];
const WRITE_FAST: &[&str] = &["write", "module", "fast"];
const ACQUIRE_ARGS: &[(&str, &str)] =
    &[("key", "key"), ("owner", "string"), ("ttl", "integer"), ("timeout", "integer")];
const RELEASE_ARGS: &[(&str, &str)] = &[("key", "key"), ("owner", "string")];
const EXTEND_ARGS: &[(&str, &str)] = &[("key", "key"), ("owner", "string"), ("ttl", "integer")];
const KEY_ONLY: &[(&str, &str)] = &[("key", "key")];
/// Key spec flags: RW+access+update (creates/reads/changes), RW+delete, RW+update, RO+access.
const KS_UPDATE: &[&str] = &["RW", "access", "update"];
const KS_DELETE: &[&str] = &["RW", "delete"];
const KS_MODIFY: &[&str] = &["RW", "update"];
const KS_READ: &[&str] = &["RO", "access"];
const KS_OVERWRITE: &[&str] = &["OW", "update"];

fn specs() -> Vec<Spec> {
    let acquire = |name| Spec {
        name,
        public: true,
        arity: -4,
        flags: ACQUIRE_FLAGS,
        acl: ACQUIRE_ACL,
        key_flags: KS_UPDATE,
        args: ACQUIRE_ARGS,
        options: &["WAIT"],
        example: &["k", "o", "1000"],
    };
    let release = |name| Spec {
        name,
        public: true,
        arity: 3,
        flags: WRITE_FAST,
        acl: &["write", "fast"],
        key_flags: KS_DELETE,
        args: RELEASE_ARGS,
        options: &[],
        example: &["k", "o"],
    };
    let extend = |name| Spec {
        name,
        public: true,
        arity: 4,
        flags: WRITE_FAST,
        acl: &["write", "fast"],
        key_flags: KS_MODIFY,
        args: EXTEND_ARGS,
        options: &[],
        example: &["k", "o", "1000"],
    };
    let read = |name, flags: &'static [&'static str], acl: &'static [&'static str]| Spec {
        name,
        public: true,
        arity: 2,
        flags,
        acl,
        key_flags: KS_READ,
        args: KEY_ONLY,
        options: &[],
        example: &["k"],
    };
    let internal = |name, arity, key_flags, args: &'static [(&'static str, &'static str)], example| Spec {
        name,
        public: false,
        arity,
        flags: &["write", "module"],
        acl: &["write", "slow"],
        key_flags,
        args,
        options: &[],
        example,
    };
    vec![
        acquire("lock.acquire"),
        release("lock.release"),
        extend("lock.extend"),
        read("lock.info", &["readonly", "module", "fast"], &["read", "fast"]),
        acquire("rwlock.rlock"),
        acquire("rwlock.wlock"),
        release("rwlock.runlock"),
        release("rwlock.wunlock"),
        extend("rwlock.extend"),
        read("rwlock.info", &["readonly", "module"], &["read", "slow"]),
        Spec {
            name: "fence.next",
            public: true,
            arity: 2,
            flags: &["write", "denyoom", "module", "fast"],
            acl: &["write", "fast"],
            key_flags: KS_UPDATE,
            args: KEY_ONLY,
            options: &[],
            example: &["k"],
        },
        Spec {
            name: "fence.check",
            public: true,
            arity: 3,
            flags: &["write", "denyoom", "module", "fast"],
            acl: &["write", "fast"],
            key_flags: KS_UPDATE,
            args: &[("key", "key"), ("token", "integer")],
            options: &[],
            example: &["k", "5"],
        },
        read("fence.current", &["readonly", "module", "fast"], &["read", "fast"]),
        Spec {
            name: "sem.acquire",
            public: true,
            arity: -5,
            flags: ACQUIRE_FLAGS,
            acl: ACQUIRE_ACL,
            key_flags: KS_UPDATE,
            args: &[
                ("key", "key"),
                ("owner", "string"),
                ("limit", "integer"),
                ("ttl", "integer"),
                ("permits", "integer"),
                ("timeout", "integer"),
            ],
            options: &["COUNT", "WAIT"],
            example: &["k", "o", "3", "1000"],
        },
        release("sem.release"),
        extend("sem.extend"),
        read("sem.info", &["readonly", "module"], &["read", "slow"]),
        internal(
            "fencelock.mutex",
            6,
            KS_OVERWRITE,
            &[("key", "key"), ("owner", "string"), ("token", "integer"), ("deadline", "integer"), ("holds", "integer")],
            &["k", "o", "5", "99999999999999", "1"],
        ),
        internal(
            "fencelock.fence",
            4,
            KS_OVERWRITE,
            &[("key", "key"), ("highest", "integer"), ("issued", "integer")],
            &["k", "5", "5"],
        ),
        internal(
            "fencelock.rwhold",
            7,
            KS_OVERWRITE,
            &[
                ("key", "key"),
                ("mode", "string"),
                ("owner", "string"),
                ("token", "integer"),
                ("deadline", "integer"),
                ("holds", "integer"),
            ],
            &["k", "read", "o", "5", "99999999999999", "1"],
        ),
        internal(
            "fencelock.rwdrop",
            4,
            KS_DELETE,
            &[("key", "key"), ("mode", "string"), ("owner", "string")],
            &["k", "read", "o"],
        ),
        internal(
            "fencelock.semhold",
            8,
            KS_OVERWRITE,
            &[
                ("key", "key"),
                ("limit", "integer"),
                ("owner", "string"),
                ("permits", "integer"),
                ("token", "integer"),
                ("deadline", "integer"),
                ("holds", "integer"),
            ],
            &["k", "3", "o", "1", "5", "99999999999999", "1"],
        ),
        internal("fencelock.semdrop", 3, KS_DELETE, &[("key", "key"), ("owner", "string")], &["k", "o"]),
    ]
}

fn public_specs() -> Vec<Spec> {
    specs().into_iter().filter(|s| s.public).collect()
}

/// The public commands that write (everything but the three reads).
fn public_writes() -> Vec<Spec> {
    public_specs().into_iter().filter(|s| s.key_flags != KS_READ).collect()
}

fn public_reads() -> Vec<Spec> {
    public_specs().into_iter().filter(|s| s.key_flags == KS_READ).collect()
}

/// `name` followed by `args`, as one command line.
fn line<'a>(name: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![name];
    v.extend_from_slice(args);
    v
}

/// Calls of `spec` with a wrong number of arguments (total words, name included): one too
/// few, and for a fixed arity one too many.
fn wrong_arity_calls(spec: &Spec) -> Vec<Vec<&'static str>> {
    let mut calls = Vec::new();
    let min = spec.arity.unsigned_abs() as usize;
    // One word short: the name and the first min-2 arguments of the example.
    calls.push(line(spec.name, &spec.example[..min - 2]));
    if spec.arity > 0 {
        let mut long = line(spec.name, spec.example);
        long.push("extra");
        calls.push(long);
    } else if min > 2 {
        // The name and the key only.
        calls.push(line(spec.name, &spec.example[..1]));
    }
    calls
}

fn arity_error(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

// ---------------------------------------------------------------------------------------
// Reply helpers
// ---------------------------------------------------------------------------------------

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => panic!("a string was expected, got {other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        other => panic!("an array was expected, got {other:?}"),
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    items(v).iter().map(text).collect()
}

fn as_int(v: &Value) -> i64 {
    value_int(v).unwrap_or_else(|| panic!("an integer was expected, got {v:?}"))
}

fn owned(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn set_of(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// One entry of `COMMAND INFO`.
#[derive(Debug)]
struct CmdInfo {
    arity: i64,
    flags: BTreeSet<String>,
    categories: BTreeSet<String>,
    key_specs: Vec<HashMap<String, Value>>,
}

fn parse_cmd_info(entry: &Value) -> CmdInfo {
    let e = items(entry);
    assert!(e.len() >= 7, "COMMAND INFO entry too short: {entry:?}");
    CmdInfo {
        arity: as_int(&e[1]),
        flags: strings(&e[2]),
        categories: strings(&e[6]),
        key_specs: e.get(8).map(|ks| items(ks).iter().map(pairs).collect()).unwrap_or_default(),
    }
}

#[track_caller]
fn command_info(con: &mut redis::Connection, name: &str) -> CmdInfo {
    let v = ok(con, &["COMMAND", "INFO", name]);
    let all = items(&v);
    assert_eq!(all.len(), 1, "COMMAND INFO {name}: {v:?}");
    assert!(all[0] != Value::Nil, "COMMAND INFO {name} is nil: the command is not registered");
    parse_cmd_info(&all[0])
}

/// The commands the module registered (`COMMAND LIST FILTERBY MODULE fencelock`).
fn module_commands(con: &mut redis::Connection) -> BTreeSet<String> {
    let names = strings(&ok(con, &["COMMAND", "LIST", "FILTERBY", "MODULE", "fencelock"]));
    for s in specs() {
        assert!(names.contains(s.name), "the module did not register {}: it has {names:?}", s.name);
    }
    names
}

/// A fresh connection authenticated as `user` (password `pass`).
#[track_caller]
fn conn_as(server: &Server, user: &str, pass: &str) -> redis::Connection {
    let mut c = server.conn();
    match raws(&mut c, &["AUTH", user, pass]) {
        Value::Okay => {}
        other => panic!("AUTH {user} answered {other:?}"),
    }
    c
}

/// Runs `args` and expects a NOPERM refusal; returns its text.
#[track_caller]
fn noperm(con: &mut redis::Connection, args: &[&str]) -> String {
    let e = err(con, args);
    assert!(e.starts_with("NOPERM"), "{:?} should be refused with NOPERM, got {e}", args.join(" "));
    e
}

/// Runs `args` and expects anything but an error (in particular no NOPERM).
#[track_caller]
fn allowed(con: &mut redis::Connection, args: &[&str]) -> Value {
    ok(con, args)
}

// ---------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Product {
    Redis,
    Valkey,
}

/// What the server under test can do with ACL categories for module commands.
#[derive(Debug)]
struct Kind {
    desc: String,
    /// `RedisModule_SetCommandACLCategories` exists (Redis 7.2+, Valkey).
    categories: bool,
    /// `RedisModule_AddACLCategory` exists (Redis 7.4+, Valkey 8.0+).
    own_category: bool,
    /// Whether `ACL CAT <category>` lists module commands: Redis up to 7.4.1 and Valkey
    /// up to 8.0.1 skip them (their acl.c has `if (cmd->flags & CMD_MODULE) continue;`,
    /// removed by redis#13489 for 8.0 and valkey#1140 for 8.1). `None`: versions in
    /// between that were not checked; either every command of ours or none is listed.
    acl_cat_lists_modules: Option<bool>,
}

fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or_else(|_| panic!("bad version {v:?}")));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn server_kind(con: &mut redis::Connection) -> Kind {
    let i = info(con, "server");
    let valkey = i.get("server_name").map(String::as_str) == Some("valkey") || i.contains_key("valkey_version");
    let (product, version) = if valkey {
        let v = i
            .get("valkey_version")
            .or_else(|| i.get("redis_version"))
            .unwrap_or_else(|| panic!("Valkey without a version in INFO server: {i:?}"));
        (Product::Valkey, parse_version(v))
    } else if let Some(v) = i.get("redis_version") {
        (Product::Redis, parse_version(v))
    } else {
        panic!("unsupported server: INFO server names neither Redis nor Valkey: {i:?}");
    };
    let desc = format!("{product:?} {}.{}.{} ({})", version.0, version.1, version.2, redis_server_bin().display());
    let kind = |categories, own_category, acl_cat_lists_modules| Kind {
        desc: desc.clone(),
        categories,
        own_category,
        acl_cat_lists_modules,
    };
    match (product, version) {
        (Product::Redis, v) if v < (7, 0, 0) => panic!("unsupported server {desc}: fencelock needs Redis 7.0 or later"),
        (Product::Redis, (7, 0, _)) => kind(false, false, Some(false)),
        // 7.1.x are the 7.2 release candidates; 7.3.x the 7.4 ones.
        (Product::Redis, (7, 1..=2, _)) => kind(true, false, Some(false)),
        (Product::Redis, (7, 3, _)) => kind(true, true, None),
        (Product::Redis, v) if v <= (7, 4, 1) => kind(true, true, Some(false)),
        (Product::Redis, (7, _, _)) => kind(true, true, None),
        (Product::Redis, _) => kind(true, true, Some(true)),
        // Valkey 7.2 is Redis 7.2.4 under another name.
        (Product::Valkey, v) if v < (7, 2, 0) => panic!("unsupported server {desc}"),
        (Product::Valkey, (7, _, _)) => kind(true, false, Some(false)),
        (Product::Valkey, v) if v <= (8, 0, 1) => kind(true, true, Some(false)),
        (Product::Valkey, (8, 0, _)) => kind(true, true, None),
        (Product::Valkey, _) => kind(true, true, Some(true)),
    }
}

// ---------------------------------------------------------------------------------------
// 1. Arity
// ---------------------------------------------------------------------------------------

/// `COMMAND INFO` shows each command's exact arity (not -1 for everything).
#[test]
fn command_info_shows_exact_arity() {
    let server = Server::new();
    let mut c = server.conn();
    let mut wrong = Vec::new();
    for s in specs() {
        let got = command_info(&mut c, s.name).arity;
        if got != s.arity {
            wrong.push(format!("{}: arity {got}, expected {}", s.name, s.arity));
        }
    }
    assert!(wrong.is_empty(), "wrong arities in COMMAND INFO:\n{}", wrong.join("\n"));
}

/// The `INFO commandstats` counters of `name`: (calls, rejected_calls, failed_calls).
fn command_stats(con: &mut redis::Connection, name: &str) -> (i64, i64, i64) {
    let stats = info(con, "commandstats");
    let Some(line) = stats.get(&format!("cmdstat_{name}")) else {
        return (0, 0, 0);
    };
    let field = |f: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{f}=")))
            .unwrap_or_else(|| panic!("cmdstat_{name} lacks {f}: {line}"))
            .parse::<i64>()
            .unwrap()
    };
    (field("calls"), field("rejected_calls"), field("failed_calls"))
}

/// A call with the wrong number of arguments is refused by Redis itself, before the
/// command runs (INFO commandstats counts it as rejected, not as a call), with Redis's
/// own error text, and changes nothing.
#[test]
fn wrong_arity_answers_the_redis_error_and_changes_nothing() {
    let server = Server::new();
    let mut c = server.conn();
    for s in public_specs() {
        let mut refused = 0;
        for call in wrong_arity_calls(&s) {
            refused += 2;
            let e = err(&mut c, &call);
            assert_eq!(e, arity_error(s.name), "{:?}", call.join(" "));
            // Also in upper case, as clients send it.
            let upper = s.name.to_uppercase();
            let mut call_upper = call.clone();
            call_upper[0] = &upper;
            assert_eq!(err(&mut c, &call_upper), arity_error(s.name), "{:?}", call_upper.join(" "));
        }
        assert_eq!(
            command_stats(&mut c, s.name),
            (0, refused, 0),
            "{}: (calls, rejected_calls, failed_calls) after {refused} calls of wrong arity: the server must \
             reject them before the command runs",
            s.name
        );
    }
    assert_eq!(dbsize(&mut c), 0, "a refused call created a key");
}

/// Inside MULTI a wrong arity is refused when queued, so EXEC aborts the whole
/// transaction: nothing queued with it runs.
#[test]
fn wrong_arity_in_multi_aborts_the_transaction() {
    let server = Server::new();
    let mut c = server.conn();
    for s in public_specs() {
        for call in wrong_arity_calls(&s) {
            let what = call.join(" ");
            assert_eq!(raws(&mut c, &["MULTI"]), Value::Okay);
            let queued = raws(&mut c, &call);
            assert_eq!(
                value_err(&queued).as_deref(),
                Some(arity_error(s.name).as_str()),
                "MULTI; {what}: must be refused at queue time, got {queued:?}"
            );
            assert_eq!(raws(&mut c, &["SET", "a", "1"]), Value::SimpleString("QUEUED".into()));
            let exec = raws(&mut c, &["EXEC"]);
            let e = value_err(&exec).unwrap_or_else(|| panic!("MULTI; {what}; SET a 1; EXEC ran: {exec:?}"));
            assert!(e.starts_with("EXECABORT"), "MULTI; {what}; SET a 1; EXEC answered {e}");
            assert!(!exists(&mut c, "a"), "MULTI; {what}; SET a 1; EXEC applied SET a 1");
            assert!(!exists(&mut c, "k"), "MULTI; {what}; SET a 1; EXEC created k");
        }
    }
    // The connection is not left inside a transaction.
    assert_eq!(dbsize(&mut c), 0);
}

// ---------------------------------------------------------------------------------------
// 2. Key specs and key permissions
// ---------------------------------------------------------------------------------------

/// Each command has one key spec: the key at index 1, with flags that say whether the
/// command only reads it (RO) or writes it (RW, OW for the replication effects).
#[test]
fn key_specs_say_which_commands_only_read() {
    let server = Server::new();
    let mut c = server.conn();
    let mut wrong = Vec::new();
    for s in specs() {
        let info = command_info(&mut c, s.name);
        assert_eq!(info.key_specs.len(), 1, "{}: exactly one key spec expected: {info:?}", s.name);
        let ks = &info.key_specs[0];
        let flags = strings(&ks["flags"]);
        if flags != set_of(s.key_flags) {
            wrong.push(format!("{}: key spec flags {flags:?}, expected {:?}", s.name, s.key_flags));
        }
        let bs = items(&ks["begin_search"]);
        assert_eq!(text(&bs[1]), "index", "{}: begin_search {bs:?}", s.name);
        assert_eq!(as_int(&pairs(&bs[3])["index"]), 1, "{}: begin_search {bs:?}", s.name);
        let fk = items(&ks["find_keys"]);
        assert_eq!(text(&fk[1]), "range", "{}: find_keys {fk:?}", s.name);
        let range = pairs(&fk[3]);
        assert_eq!(
            (as_int(&range["lastkey"]), as_int(&range["keystep"]), as_int(&range["limit"])),
            (0, 1, 0),
            "{}: find_keys {fk:?}",
            s.name
        );
    }
    assert!(wrong.is_empty(), "wrong key specs:\n{}", wrong.join("\n"));
}

/// `COMMAND GETKEYS` finds the key (also with WAIT), and checks the arity like Redis does.
#[test]
fn command_getkeys_finds_the_key_and_checks_arity() {
    let server = Server::new();
    let mut c = server.conn();
    let keys = ok(&mut c, &["COMMAND", "GETKEYS", "LOCK.ACQUIRE", "k", "o", "1", "WAIT", "5"]);
    assert_eq!(items(&keys).iter().map(text).collect::<Vec<_>>(), vec!["k"]);
    for s in specs() {
        let mut call = vec!["COMMAND", "GETKEYS"];
        call.extend(line(s.name, s.example));
        let keys = ok(&mut c, &call);
        assert_eq!(items(&keys).iter().map(text).collect::<Vec<_>>(), vec!["k"], "{}", call.join(" "));
        // (COMMAND GETKEYS itself needs at least one argument after the name.)
        for bad in wrong_arity_calls(&s).into_iter().filter(|call| call.len() > 1) {
            let mut call = vec!["COMMAND", "GETKEYS"];
            call.extend(bad);
            let e = err(&mut c, &call);
            assert!(e.contains("Invalid number of arguments"), "{}: {e}", call.join(" "));
        }
    }
}

/// A user with read-only key permission (`%R~*`) may run the read commands and gets
/// NOPERM (for the key) for every command that writes, which then changes nothing.
#[test]
fn read_only_key_permission_allows_reads_and_refuses_writes() {
    let server = Server::new();
    let mut admin = server.conn();
    // Something to read.
    let token = grant(&mut admin, "k", "holder", LONG_TTL);
    ok(&mut admin, &["RWLOCK.RLOCK", "rw", "reader", &LONG_TTL.to_string()]);
    let fence = fence_next(&mut admin, "f");
    let sem_token = sem_grant(&mut admin, "sem", "holder", 3, 2, LONG_TTL);
    let before = digest(&mut admin);
    ok(&mut admin, &["ACL", "SETUSER", "ro", "on", "nopass", "%R~*", "+@all"]);
    let mut ro = conn_as(&server, "ro", "any");

    let info = parse_lock_info(&allowed(&mut ro, &["LOCK.INFO", "k"])).expect("LOCK.INFO k is nil");
    assert_eq!((info.owner_str(), info.token), ("holder".to_string(), token));
    assert_eq!(allowed(&mut ro, &["LOCK.INFO", "free"]), Value::Nil);
    let rw = pairs(&allowed(&mut ro, &["RWLOCK.INFO", "rw"]));
    assert_eq!(text(&rw["mode"]), "read");
    assert_eq!(allowed(&mut ro, &["FENCE.CURRENT", "f"]), Value::Int(fence));
    assert_eq!(allowed(&mut ro, &["FENCE.CURRENT", "none"]), Value::Int(0));
    let sem = parse_sem_info(&allowed(&mut ro, &["SEM.INFO", "sem"])).expect("SEM.INFO sem is nil");
    assert_eq!((sem.who(), sem.holder("holder").token, sem.available), (owners(&["holder"]), sem_token, 1));
    assert_eq!(allowed(&mut ro, &["SEM.INFO", "free"]), Value::Nil);

    let ttl = LONG_TTL.to_string();
    let max = i64::MAX.to_string();
    let writes: Vec<Vec<&str>> = vec![
        vec!["LOCK.ACQUIRE", "new", "o", &ttl],
        vec!["LOCK.ACQUIRE", "new", "o", &ttl, "WAIT", "10"],
        vec!["LOCK.ACQUIRE", "k", "holder", &ttl],
        vec!["LOCK.RELEASE", "k", "holder"],
        vec!["LOCK.EXTEND", "k", "holder", &ttl],
        vec!["RWLOCK.RLOCK", "rw2", "o", &ttl],
        vec!["RWLOCK.WLOCK", "rw2", "o", &ttl],
        vec!["RWLOCK.RUNLOCK", "rw", "reader"],
        vec!["RWLOCK.WUNLOCK", "rw", "reader"],
        vec!["RWLOCK.EXTEND", "rw", "reader", &ttl],
        vec!["FENCE.NEXT", "f"],
        vec!["FENCE.NEXT", "f2"],
        vec!["FENCE.CHECK", "f", &max],
        vec!["FENCE.CHECK", "f2", "5"],
        vec!["FENCELOCK.MUTEX", "k", "x", "1", "1", "1"],
        vec!["FENCELOCK.FENCE", "f", "1", "1"],
        vec!["FENCELOCK.RWHOLD", "rw", "read", "x", "1", "1", "1"],
        vec!["FENCELOCK.RWDROP", "rw", "read", "reader"],
        vec!["SEM.ACQUIRE", "new", "o", "3", &ttl],
        vec!["SEM.ACQUIRE", "new", "o", "3", &ttl, "COUNT", "1", "WAIT", "10"],
        vec!["SEM.ACQUIRE", "sem", "holder", "3", &ttl, "COUNT", "2"],
        vec!["SEM.RELEASE", "sem", "holder"],
        vec!["SEM.EXTEND", "sem", "holder", &ttl],
        vec!["FENCELOCK.SEMHOLD", "sem", "3", "x", "1", "1", "1", "1"],
        vec!["FENCELOCK.SEMDROP", "sem", "holder"],
    ];
    for call in &writes {
        let e = noperm(&mut ro, call);
        assert!(e.to_lowercase().contains("key"), "{:?}: the refusal should be about the key: {e}", call.join(" "));
    }
    // Nothing changed, and the reads still run on the same connection.
    assert_eq!(held(&mut ro, "k").holds, 1);
    assert_eq!(sem_held(&mut ro, "sem").holder("holder").holds, 1);
    assert_eq!(digest(&mut admin), before, "a refused write changed the data");
    assert_eq!(dbsize(&mut admin), 4);
}

// ---------------------------------------------------------------------------------------
// 3. Flags, deny-oom
// ---------------------------------------------------------------------------------------

/// `COMMAND INFO` flags are those of the native command of the same behaviour: the
/// acquires `blocking` (like BLPOP) and `denyoom`, FENCE.NEXT/CHECK `denyoom`, the
/// releases and extends neither, the reads `readonly`.
#[test]
fn command_flags_match_native_commands() {
    let server = Server::new();
    let mut c = server.conn();
    let mut wrong = Vec::new();
    for s in specs() {
        let flags = command_info(&mut c, s.name).flags;
        if flags != set_of(s.flags) {
            wrong.push(format!("{}: flags {flags:?}, expected {:?}", s.name, s.flags));
        }
    }
    assert!(wrong.is_empty(), "wrong command flags:\n{}", wrong.join("\n"));
    // The ones the task names, spelled out.
    for name in ["lock.acquire", "rwlock.rlock", "rwlock.wlock", "sem.acquire"] {
        assert!(command_info(&mut c, name).flags.contains("blocking"), "{name} lacks blocking");
    }
    for name in ["lock.acquire", "rwlock.rlock", "rwlock.wlock", "sem.acquire", "fence.next", "fence.check"] {
        assert!(command_info(&mut c, name).flags.contains("denyoom"), "{name} lacks denyoom");
    }
}

/// Over maxmemory (noeviction) every command that can create a key answers -OOM and
/// creates nothing; releases, extends and reads still work, as for native commands.
#[test]
fn over_maxmemory_creating_commands_answer_oom_and_the_rest_work() {
    let server = Server::start(&["maxmemory-policy noeviction"]);
    let mut c = server.conn();
    let ttl = LONG_TTL.to_string();
    let token = grant(&mut c, "m", "o", LONG_TTL);
    grant(&mut c, "m", "o", LONG_TTL); // two holds
    ok(&mut c, &["RWLOCK.RLOCK", "rw", "r1", &ttl]);
    ok(&mut c, &["RWLOCK.RLOCK", "rw", "r2", &ttl]);
    let fence = fence_next(&mut c, "f");
    let ts = sem_grant(&mut c, "sem", "a", 3, 1, LONG_TTL);
    sem_grant(&mut c, "sem", "b", 3, 1, LONG_TTL);
    let used: i64 = info(&mut c, "memory")["used_memory"].parse().unwrap();
    assert!(used > 1, "used_memory {used}");
    let keys_before = dbsize(&mut c);

    ok(&mut c, &["CONFIG", "SET", "maxmemory", "1"]);
    let oom = |c: &mut redis::Connection, call: &[&str]| {
        let e = err(c, call);
        assert!(e.starts_with("OOM "), "{:?} over maxmemory should answer -OOM, got {e}", call.join(" "));
    };
    oom(&mut c, &["FENCE.CHECK", "newfence", "5"]);
    oom(&mut c, &["FENCE.NEXT", "newfence2"]);
    oom(&mut c, &["LOCK.ACQUIRE", "newlock", "o", &ttl]);
    oom(&mut c, &["LOCK.ACQUIRE", "newlock", "o", &ttl, "WAIT", "100"]);
    oom(&mut c, &["RWLOCK.RLOCK", "newrw", "o", &ttl]);
    oom(&mut c, &["RWLOCK.WLOCK", "newrw", "o", &ttl]);
    oom(&mut c, &["SEM.ACQUIRE", "newsem", "o", "3", &ttl]);
    oom(&mut c, &["SEM.ACQUIRE", "newsem", "o", "3", &ttl, "COUNT", "2", "WAIT", "100"]);
    // A free permit of an existing semaphore is refused too (deny-oom, like SET).
    oom(&mut c, &["SEM.ACQUIRE", "sem", "c", "3", &ttl]);
    // deny-oom refuses on an existing key too, like SET.
    oom(&mut c, &["FENCE.CHECK", "f", &(fence + 1).to_string()]);
    for k in ["newfence", "newfence2", "newlock", "newrw", "newsem"] {
        assert!(!exists(&mut c, k), "{k} was created over maxmemory");
    }
    assert_eq!(dbsize(&mut c), keys_before);
    assert_eq!(fence_current(&mut c, "f"), fence, "a refused FENCE.CHECK recorded its token");

    // What frees or keeps memory still runs.
    assert_eq!(extend(&mut c, "m", "o", LONG_TTL), 1);
    assert_eq!(release(&mut c, "m", "o"), 1);
    let m = held(&mut c, "m");
    assert_eq!((m.token, m.holds), (token, 1));
    assert_eq!(int(&mut c, &["RWLOCK.EXTEND", "rw", "r1", &ttl]), 1);
    assert_eq!(int(&mut c, &["RWLOCK.RUNLOCK", "rw", "r2"]), 1);
    assert_eq!(int(&mut c, &["RWLOCK.WUNLOCK", "rw", "r1"]), 0);
    let rw = pairs(&ok(&mut c, &["RWLOCK.INFO", "rw"]));
    assert_eq!(items(&rw["holders"]).len(), 1);
    assert_eq!(fence_current(&mut c, "f"), fence);
    assert_eq!(sem_extend(&mut c, "sem", "a", LONG_TTL), 1);
    assert_eq!(sem_release(&mut c, "sem", "b"), 1);
    let s = sem_held(&mut c, "sem");
    assert_eq!((s.who(), s.holder("a").token, s.available), (owners(&["a"]), ts, 2));
    assert_eq!(release(&mut c, "m", "o"), 1);
    assert!(!exists(&mut c, "m"), "the released lock kept its key");
    assert_eq!(lock_info(&mut c, "m"), None);

    ok(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
    // The refusals were about memory: the same calls work now.
    assert_eq!(fence_check(&mut c, "newfence", "5"), Ok(1));
    grant(&mut c, "newlock", "o", LONG_TTL);
    sem_grant(&mut c, "newsem", "o", 3, 2, LONG_TTL);
}

// ---------------------------------------------------------------------------------------
// 4. Docs
// ---------------------------------------------------------------------------------------

/// `COMMAND DOCS` of the command `name`, as field/value pairs.
fn docs(con: &mut redis::Connection, name: &str) -> HashMap<String, Value> {
    let v = ok(con, &["COMMAND", "DOCS", name]);
    let top = pairs(&v);
    let entry = top.get(name).unwrap_or_else(|| panic!("COMMAND DOCS {name} has no entry: {v:?}"));
    pairs(entry)
}

/// Every public command has a summary, since, complexity, the module's name and its
/// arguments in order (LOCK.ACQUIRE: key, owner, ttl, optional `WAIT timeout`); every
/// command of the module has at least a summary and complexity.
#[test]
fn command_docs_describe_every_command() {
    let server = Server::new();
    let mut c = server.conn();
    for s in specs() {
        let d = docs(&mut c, s.name);
        let field = |f: &str| d.get(f).map(text).unwrap_or_else(|| panic!("COMMAND DOCS {} lacks {f}: {d:?}", s.name));
        let summary = field("summary");
        assert!(summary.len() > 10 && summary != "(null)", "{}: summary {summary:?}", s.name);
        assert!(!field("since").is_empty(), "{}: empty since", s.name);
        assert!(field("complexity").starts_with("O("), "{}: complexity {:?}", s.name, field("complexity"));
        assert_eq!(field("group"), "module", "{}", s.name);
        assert_eq!(field("module"), "fencelock", "{}", s.name);

        let args: Vec<HashMap<String, Value>> = d
            .get("arguments")
            .map(|a| items(a).iter().map(pairs).collect())
            .unwrap_or_else(|| panic!("COMMAND DOCS {} has no arguments: {d:?}", s.name));
        let got: Vec<(String, String)> = args.iter().map(|a| (text(&a["name"]), text(&a["type"]))).collect();
        let want: Vec<(String, String)> = s.args.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        assert_eq!(got, want, "{}: arguments", s.name);
        assert_eq!(as_int(&args[0]["key_spec_index"]), 0, "{}: the key argument names key spec 0", s.name);
        let first_option = args.len() - s.options.len();
        for (i, a) in args.iter().enumerate() {
            let flags = a.get("flags").map(strings).unwrap_or_default();
            if i >= first_option {
                let token = s.options[i - first_option];
                assert_eq!(a.get("token").map(text).as_deref(), Some(token), "{}: {token} token", s.name);
                assert_eq!(flags, set_of(&["optional"]), "{}: {token} flags", s.name);
            } else {
                assert!(a.get("token").is_none(), "{}: argument {i} has a token: {a:?}", s.name);
                assert!(flags.is_empty(), "{}: argument {i} has flags {flags:?}", s.name);
            }
        }
    }
    // Whatever else the module registers is documented too.
    for name in module_commands(&mut c) {
        let d = docs(&mut c, &name);
        for f in ["summary", "complexity", "since"] {
            let v = d.get(f).map(text).unwrap_or_default();
            assert!(!v.is_empty(), "COMMAND DOCS {name} lacks {f}: {d:?}");
        }
    }
}

/// The redis-cli next to the server: `$REDIS_CLI`, else `redis-cli` on the PATH.
fn redis_cli() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_string())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if ch != '\r' {
            out.push(ch);
        }
    }
    out
}

/// `redis-cli HELP <command>` shows each public command's synopsis and summary (taken
/// from the server's COMMAND DOCS), not `(null)`.
#[test]
fn redis_cli_help_shows_the_summary() {
    let server = Server::new();
    let mut c = server.conn();
    let cli = redis_cli();
    for s in public_specs() {
        let upper = s.name.to_uppercase();
        let out = Command::new(&cli)
            .args(["-p", &server.port.to_string(), "HELP", &upper])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cli} (set REDIS_CLI to the redis-cli next to the server): {e}"));
        assert!(out.status.success(), "{cli} HELP {upper} failed: {out:?}");
        let shown = strip_ansi(&String::from_utf8_lossy(&out.stdout));
        assert!(!shown.contains("(null)"), "{cli} HELP {upper} shows (null):\n{shown}");
        assert!(shown.contains(&upper), "{cli} HELP {upper} does not name the command:\n{shown}");
        let summary = docs(&mut c, s.name).get("summary").map(text).unwrap_or_default();
        assert!(!summary.is_empty(), "COMMAND DOCS {} has no summary; {cli} shows:\n{shown}", s.name);
        assert!(
            shown.contains(&format!("summary: {summary}")),
            "{cli} HELP {upper} lacks the summary {summary:?}:\n{shown}"
        );
    }
    let out = Command::new(&cli).args(["-p", &server.port.to_string(), "HELP", "LOCK.ACQUIRE"]).output().unwrap();
    let shown = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    assert!(shown.contains("LOCK.ACQUIRE key owner ttl [WAIT timeout]"), "{cli} HELP LOCK.ACQUIRE synopsis:\n{shown}");
    let out = Command::new(&cli).args(["-p", &server.port.to_string(), "HELP", "SEM.ACQUIRE"]).output().unwrap();
    let shown = strip_ansi(&String::from_utf8_lossy(&out.stdout));
    assert!(
        shown.contains("SEM.ACQUIRE key owner limit ttl [COUNT permits] [WAIT timeout]"),
        "{cli} HELP SEM.ACQUIRE synopsis:\n{shown}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. ACL categories, per server kind
// ---------------------------------------------------------------------------------------

/// Commands whose declarations are checked in their own suite (several key specs, a
/// getkeys callback: tests/fence_call.rs), with their ACL categories for the checks here.
const OTHER_COMMANDS: &[(&str, &[&str])] = &[("fence.call", &["write", "slow"])];

/// Every command of `cat`: the spec table's and `OTHER_COMMANDS`'.
fn in_category(kind: &Kind, cat: &str) -> BTreeSet<String> {
    let from_specs = specs().into_iter().filter(|s| expected_categories(kind, s).contains(&format!("@{cat}"))).map(|s| s.name.to_string());
    let others = OTHER_COMMANDS.iter().filter(|(_, acl)| kind.categories && acl.contains(&cat)).map(|(n, _)| n.to_string());
    from_specs.chain(others).collect()
}

/// The categories `COMMAND INFO` must show for `spec` on a server of `kind`.
fn expected_categories(kind: &Kind, spec: &Spec) -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    if kind.categories {
        want.extend(spec.acl.iter().map(|c| format!("@{c}")));
        if kind.own_category {
            want.insert("@fencelock".to_string());
        }
    }
    want
}

/// `COMMAND INFO` shows the categories the server kind can hold: none on Redis 7.0; the
/// native ones (write/read, fast/slow, blocking) on 7.2; plus `@fencelock` on 7.4+ and
/// Valkey 8.0+. `COMMAND LIST FILTERBY ACLCAT` agrees.
#[test]
fn acl_categories_in_command_info_follow_the_server_kind() {
    let server = Server::new();
    let mut c = server.conn();
    let kind = server_kind(&mut c);
    eprintln!("server under test: {kind:?}");
    let mut wrong = Vec::new();
    for s in specs() {
        let got = command_info(&mut c, s.name).categories;
        let want = expected_categories(&kind, &s);
        if got != want {
            wrong.push(format!("{}: categories {got:?}, expected {want:?}", s.name));
        }
    }
    assert!(wrong.is_empty(), "{}: wrong ACL categories:\n{}", kind.desc, wrong.join("\n"));

    let ours = module_commands(&mut c);
    let mut cats: Vec<&str> = vec!["write", "read", "fast", "slow", "blocking"];
    if kind.own_category {
        cats.push("fencelock");
    }
    for cat in cats {
        let listed: BTreeSet<String> = strings(&ok(&mut c, &["COMMAND", "LIST", "FILTERBY", "ACLCAT", cat]))
            .intersection(&ours)
            .cloned()
            .collect();
        let want = in_category(&kind, cat);
        // A command added later than this table joins @fencelock too.
        let want = if cat == "fencelock" { ours.clone() } else { want };
        assert_eq!(listed, want, "{}: COMMAND LIST FILTERBY ACLCAT {cat}", kind.desc);
    }
}

/// Checks `ACL CAT <cat>` against the module commands that must be in it, as far as the
/// server lists module commands there at all.
fn check_acl_cat(
    con: &mut redis::Connection,
    kind: &Kind,
    ours: &BTreeSet<String>,
    cat: &str,
    want: &BTreeSet<String>,
) {
    let listed: BTreeSet<String> = strings(&ok(con, &["ACL", "CAT", cat])).intersection(ours).cloned().collect();
    match kind.acl_cat_lists_modules {
        Some(true) => assert_eq!(&listed, want, "{}: ACL CAT {cat}", kind.desc),
        _ => {
            assert!(
                listed.is_empty() || &listed == want,
                "{}: ACL CAT {cat} lists {listed:?}, expected all of {want:?} or (servers that skip module \
                 commands there) none",
                kind.desc
            );
            if listed.is_empty() {
                eprintln!("{}: ACL CAT {cat} lists no module command (server limitation)", kind.desc);
            }
        }
    }
}

/// ACL rules by category work for our commands as for native ones: `-@write` refuses
/// every write of ours and lets the reads run; `+@read` alone allows the reads only;
/// `ACL CAT blocking` has the acquires. On Redis 7.0, which cannot put module commands
/// in categories, the README's rule that names the writes explicitly does the job (it is
/// checked on every server).
#[test]
fn acl_rules_by_category_follow_the_server_kind() {
    let server = Server::new();
    let mut admin = server.conn();
    let kind = server_kind(&mut admin);
    eprintln!("server under test: {kind:?}");
    grant(&mut admin, "held", "o", LONG_TTL);
    let ttl = LONG_TTL.to_string();
    let write_calls: Vec<Vec<String>> = public_writes().iter().map(|s| owned(&line(s.name, s.example))).collect();
    let read_calls: Vec<Vec<String>> = public_reads().iter().map(|s| owned(&line(s.name, s.example))).collect();

    // The README's rule for 7.0, on every server.
    let mut rule = vec!["ACL", "SETUSER", "readme", "on", ">p", "~*", "+@all", "-@write"];
    let removals: Vec<String> = public_writes().iter().map(|s| format!("-{}", s.name)).collect();
    rule.extend(removals.iter().map(String::as_str));
    assert_eq!(public_writes().len(), 13);
    ok(&mut admin, &rule);
    let mut u = conn_as(&server, "readme", "p");
    for call in &write_calls {
        let e = noperm(&mut u, &as_strs(call));
        assert!(e.contains(&format!("'{}'", call[0])), "{}: {e}", call.join(" "));
    }
    for call in &read_calls {
        allowed(&mut u, &as_strs(call));
    }
    assert_eq!(held(&mut u, "held").holds, 1);
    allowed(&mut u, &["GET", "x"]);
    noperm(&mut u, &["SET", "x", "1"]);

    let ours = module_commands(&mut admin);
    if !kind.categories {
        // Redis 7.0: no categories for module commands, so `-@write` alone leaves them
        // runnable; that is why the README names them.
        ok(&mut admin, &["ACL", "SETUSER", "nowrite", "on", ">p", "~*", "+@all", "-@write"]);
        let mut u = conn_as(&server, "nowrite", "p");
        noperm(&mut u, &["SET", "x", "1"]);
        assert!(
            acquire(&mut u, "k7", "o", LONG_TTL).is_some(),
            "{}: -@write should not cover module commands",
            kind.desc
        );
        check_acl_cat(&mut admin, &kind, &ours, "blocking", &BTreeSet::new());
        check_acl_cat(&mut admin, &kind, &ours, "write", &BTreeSet::new());
        return;
    }

    // -@write
    ok(&mut admin, &["ACL", "SETUSER", "nowrite", "on", ">p", "~*", "+@all", "-@write"]);
    let mut u = conn_as(&server, "nowrite", "p");
    for call in &write_calls {
        let e = noperm(&mut u, &as_strs(call));
        assert!(e.contains(&format!("'{}'", call[0])), "{}: {}: {e}", kind.desc, call.join(" "));
    }
    noperm(&mut u, &["LOCK.ACQUIRE", "held", "o", &ttl, "WAIT", "10"]);
    for call in &read_calls {
        allowed(&mut u, &as_strs(call));
    }
    assert_eq!(held(&mut u, "held").owner_str(), "o");

    // +@read alone
    ok(&mut admin, &["ACL", "SETUSER", "reader", "on", ">p", "~*", "+@read"]);
    let mut u = conn_as(&server, "reader", "p");
    for call in &read_calls {
        allowed(&mut u, &as_strs(call));
    }
    for call in &write_calls {
        noperm(&mut u, &as_strs(call));
    }

    // +@blocking alone: exactly the four acquires of ours.
    ok(&mut admin, &["ACL", "SETUSER", "blocker", "on", ">p", "~*", "+@blocking"]);
    for s in specs() {
        let mut call = vec!["ACL", "DRYRUN", "blocker"];
        call.extend(line(s.name, s.example));
        let v = ok(&mut admin, &call);
        assert_eq!(v == Value::Okay, s.acl.contains(&"blocking"), "{}: {}: {v:?}", kind.desc, call.join(" "));
    }

    let blocking = set_of(&["lock.acquire", "rwlock.rlock", "rwlock.wlock", "sem.acquire"]);
    check_acl_cat(&mut admin, &kind, &ours, "blocking", &blocking);
    for cat in ["write", "read", "fast", "slow"] {
        check_acl_cat(&mut admin, &kind, &ours, cat, &in_category(&kind, cat));
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// All ACL DRYRUN calls of every command the server has, with enough arguments for its
/// arity: (command name, arguments).
fn every_command_call(con: &mut redis::Connection) -> Vec<(String, Vec<String>)> {
    fn add(entry: &Value, out: &mut Vec<(String, Vec<String>)>) {
        let e = items(entry);
        let name = text(&e[0]).to_lowercase();
        let arity = as_int(&e[1]);
        let subs = e.get(9).map(|s| items(s).to_vec()).unwrap_or_default();
        if !subs.is_empty() {
            for sub in &subs {
                add(sub, out);
            }
            return;
        }
        let words: Vec<String> = name.split('|').map(str::to_string).collect();
        let mut args = words.clone();
        while (args.len() as i64) < arity.abs() {
            args.push("x".into());
        }
        out.push((name, args));
    }
    let all = ok(con, &["COMMAND"]);
    let mut out = Vec::new();
    for entry in items(&all) {
        add(entry, &mut out);
    }
    out
}

/// Redis 7.4+ and Valkey 8.0+: the module's own `fencelock` category is listed by `ACL
/// CAT`, holds every command of the module, and `+@fencelock` on an otherwise empty user
/// allows exactly the module's commands. Servers that cannot add a category (7.0, 7.2)
/// must not know it.
#[test]
fn fencelock_category_holds_exactly_the_module_commands() {
    let server = Server::new();
    let mut admin = server.conn();
    let kind = server_kind(&mut admin);
    eprintln!("server under test: {kind:?}");
    let categories = strings(&ok(&mut admin, &["ACL", "CAT"]));
    if !kind.own_category {
        assert!(!categories.contains("fencelock"), "{}: ACL CAT lists fencelock: {categories:?}", kind.desc);
        let e = err(&mut admin, &["ACL", "SETUSER", "fl", "on", "nopass", "~*", "+@fencelock"]);
        assert!(e.starts_with("ERR"), "{}: +@fencelock should be unknown: {e}", kind.desc);
        eprintln!("{}: no fencelock category (the server cannot add one)", kind.desc);
        return;
    }
    assert!(categories.contains("fencelock"), "{}: ACL CAT lacks fencelock: {categories:?}", kind.desc);
    let ours = module_commands(&mut admin);
    check_acl_cat(&mut admin, &kind, &ours, "fencelock", &ours);
    // ACL CAT fencelock has nothing but ours.
    let listed = strings(&ok(&mut admin, &["ACL", "CAT", "fencelock"]));
    assert!(listed.is_subset(&ours), "{}: ACL CAT fencelock lists {listed:?}", kind.desc);

    // `fl` has +@fencelock and nothing else; `empty` has no commands at all (commands
    // that need no authentication, AUTH, HELLO, QUIT, RESET, pass for both).
    ok(&mut admin, &["ACL", "SETUSER", "fl", "on", "nopass", "~*", "+@fencelock"]);
    ok(&mut admin, &["ACL", "SETUSER", "empty", "on", "nopass", "~*"]);
    let dryrun = |admin: &mut redis::Connection, user: &str, args: &[String]| -> Result<bool, String> {
        let mut call = vec!["ACL", "DRYRUN", user];
        call.extend(as_strs(args));
        match raws(admin, &call) {
            Value::Okay => Ok(true),
            Value::BulkString(_) => Ok(false),
            other => Err(format!("{}: {other:?}", call.join(" "))),
        }
    };
    let mut wrong = Vec::new();
    let mut unchecked = Vec::new();
    let mut natives_checked = 0;
    let mut allowed_ours = BTreeSet::new();
    for (name, args) in every_command_call(&mut admin) {
        // Our commands with a well-formed example; the others padded to their arity.
        let args: Vec<String> = match specs().into_iter().find(|s| s.name == name) {
            Some(s) => owned(&line(s.name, s.example)),
            None => args,
        };
        let is_ours = ours.contains(&name);
        match (dryrun(&mut admin, "fl", &args), dryrun(&mut admin, "empty", &args)) {
            (Ok(fl), Ok(empty)) => {
                if is_ours {
                    if fl {
                        allowed_ours.insert(name.clone());
                    }
                    if empty {
                        wrong.push(format!("{name} is allowed to a user without commands"));
                    }
                } else {
                    natives_checked += 1;
                    if fl != empty {
                        wrong.push(format!("+@fencelock changes whether native {name} is allowed ({empty} -> {fl})"));
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) if is_ours => panic!("{}: {e}", kind.desc),
            (Err(e), _) | (_, Err(e)) => unchecked.push(e),
        }
    }
    eprintln!(
        "{}: ACL DRYRUN checked {natives_checked} native commands; could not check {}: {unchecked:?}",
        kind.desc,
        unchecked.len()
    );
    assert!(wrong.is_empty(), "{}:\n{}", kind.desc, wrong.join("\n"));
    assert_eq!(allowed_ours, ours, "{}: the module's commands +@fencelock allows", kind.desc);
    assert!(
        natives_checked >= 150 && unchecked.len() <= 5,
        "{}: only {natives_checked} native commands checked; could not check:\n{}",
        kind.desc,
        unchecked.join("\n")
    );

    // And for real, on an authenticated connection.
    let mut u = conn_as(&server, "fl", "any");
    let token = grant(&mut u, "k", "o", LONG_TTL);
    assert_eq!(held(&mut u, "k").token, token);
    ok(&mut u, &["RWLOCK.RLOCK", "rw", "o", "1000"]);
    fence_next(&mut u, "f");
    let st = sem_grant(&mut u, "s", "o", 3, 2, LONG_TTL);
    assert_eq!(sem_held(&mut u, "s").holder("o").token, st);
    assert_eq!(sem_release(&mut u, "s", "o"), 1);
    assert_eq!(release(&mut u, "k", "o"), 1);
    noperm(&mut u, &["GET", "k"]);
    noperm(&mut u, &["SET", "k", "1"]);
    noperm(&mut u, &["DEL", "rw"]);
}
